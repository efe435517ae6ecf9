"""The training step: the one seam TRL's hooks call.

TRL drives the loop (`GRPOTrainer.train`) and calls in at three places, all of them methods
of one `StepLoop`: the `rollout_func` (`before_rollout`, `rollout_done`), the trainer
subclass's scoring hook (`scored`) and a callback (`on_pre_optimizer_step`, `on_step_end`,
`on_log`). The loop owns the step counter, the weight version and the live parameters, and
calls only down: the controller's desk for the operator's commands (`at_boundary`), the
session for how things are done (sync, canary, checkpoint, the trainer's knobs), the engine
through the session, and the bus for facts. One step, top to bottom:

    before_rollout   boundary (pause here if asked) -> apply commands -> sync -> sampling
    [rollout_func]   generate on the engine                                  (trainer.py)
    [TRL]            score with the reward functions, compute advantages
    scored           join completions + rewards + advantages -> report the groups
    [TRL]            loss, backward (the groups are built and logged on a worker thread meanwhile)
    on_pre_optimizer_step   the groups are logged (wait for the worker);
                            guard: non-finite gradients skip the update
    [TRL]            optimizer step
    on_step_end      guards (skipped update: checkpoint the last good state, pause)
                     -> scheduled checkpoint
    on_log           step metrics -> alert rules

With `training.overlap` the boundary first waits for the rollout generated during the
previous update, takes it if it is still this step's (same prompts and sampling, at most one
version old), and once the step's rollout is in hand starts the next step's on the engine,
behind this step's update (`backend.training.overlap`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from backend.bus import LogUnwritable
from backend.engine.base import EngineError, Sampling
from backend.protocol import commands as C
from backend.protocol import events as E
from backend.protocol.params import ENGINE_PARAMS, PARAMS
from backend.telemetry.alerts import AlertMonitor, Finding
from backend.training import checkpoints, compiletime, overlap, report, trl_compat
from backend.training.rewards import RewardLoadError
from backend.training.trainer import RolloutBatch, StopTraining, set_learning_rate

#: what a reward failure's alert tells the operator: resuming reloads a reward module whose file changed
FIX_AND_RESUME = ("fix the function (resuming reloads its module when the file changed) or {what}, then resume (p)")


YOUNG_GC_THRESHOLD = 50_000


def settle_heap() -> None:
    """Once everything is built: move the ~800k objects of the loaded libraries, the model and
    the engine out of the cyclic garbage collector's reach (`gc.freeze`: they live as long as the
    run) and let it collect young objects every 50,000 allocations instead of 700. A step makes and
    drops tens of thousands of short-lived objects (vLLM's scheduler, TRL's batch, the events);
    nearly all are freed by reference counting before a collection would look at them. On the
    embedded default (CPU) this takes the collector from ~6.5 to ~3-5 ms per step
    (`bench/overhead.py --phases`, "gc per step"). Cyclic garbage is still collected, later."""
    import gc

    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_GC_THRESHOLD, *gc.get_threshold()[1:])


class BehindUpdate:
    """Work of a step's report that needs nothing from the update (the sample groups, the
    signals: pure Python over the scored batch, ~2.5 ms a step on the embedded default), done on
    one worker thread while the training thread is in the backward pass. Jobs are held until
    `release()` (the trainer calls it when the loss is computed, just before backward: torch's
    autograd engine runs the whole backward without the GIL; started earlier, during the loss's
    forward, every op's return would wait for the worker's Python) and run in the order given;
    `wait` releases what is held, returns when all are done and raises the first one's exception
    (e.g. `LogUnwritable`) on the training thread. `inline` runs each job at once on the
    caller's thread (`telemetry.report_behind_update = false`)."""

    def __init__(self, inline: bool = False) -> None:
        self._pool = None if inline else ThreadPoolExecutor(1, thread_name_prefix="rlc-report")
        self._held: list[Callable[[], None]] = []
        self._pending: list[Future] = []

    def submit(self, job: Callable[[], None]) -> None:
        if self._pool is None:
            job()
        else:
            self._held.append(job)

    def release(self) -> None:
        held, self._held = self._held, []
        if self._pool is not None:
            self._pending.extend(self._pool.submit(job) for job in held)

    def wait(self) -> None:
        self.release()
        pending, self._pending = self._pending, []
        error = None
        for future in pending:
            exc = future.exception()
            error = error or exc
        if error is not None:
            raise error

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)


class StepLoop:
    def __init__(self, profile, bus, desk, session, *, params: dict[str, Any], step: int = 0, weight_version: int = 0,
                 resume: Any = None) -> None:
        self.profile = profile
        self.bus = bus
        self.desk = desk  # backend.controller.Controller: the operator's queued commands, the run's state machine
        self.session = session
        self.params = params  # the live parameters (backend.protocol.params.PARAMS), changed only at boundaries
        self.step = step  # completed optimizer steps, across train() restarts
        self.weight_version = weight_version
        self.resume = resume
        self.step_offset = resume.step_offset if resume is not None else 0  # steps done before this train() call
        self.alerts = AlertMonitor(profile.alerts, bus.emit, desk.request_pause)  # weights: set in start()
        self.measuring_logprobs = False  # this step measures trainer-engine log-prob agreement
        self._synced_step = -1
        self._syncs = 0
        self._batch: RolloutBatch | None = None
        self._joined: Any = None  # the scored batch's rows, until its groups are logged
        self._last_step_end = time.perf_counter()
        self._step_wall: dict[int, float] = {}
        self._compile_clock = compiletime.CompileClock()  # a compiled update's compile time, per step
        self._step_compile: dict[int, float] = {}
        self._skip_update: str | None = None  # why this step's update is dropped (set by a guard)
        self._reward_code_suspect = False  # a reward function failed: reload changed code when resumed
        self._skipped: dict[int, str] = {}  # step -> why its update was skipped (until its metrics are sent)
        self._tries = 0  # playground requests answered by this backend (each its own seed)
        self.skipped_steps: list[int] = []  # every step of this backend whose update was skipped (the end says so)
        self._pending_restart = False
        self._probe_rows: list[Any] | None = None
        self.checkpointed_step = -1  # the step of this process's newest checkpoint
        self._probed_version = -1
        self._signals: report.Signals | None = None
        self.behind = BehindUpdate(inline=not profile.telemetry.report_behind_update)
        self.prefetch: overlap.Prefetcher | None = None  # training.overlap: the next step's rollout, in flight

    # ---- start and the outer loop ----------------------------------------------
    def start(self) -> None:
        """Build everything (the session), then serve the engine the trainer's weights, verified."""
        self.session.on_sync_hang = self.sync_hung
        self.session.setup(self, self.params, max_steps=self.profile.run.max_steps - self.step_offset)
        if self.profile.training.overlap:
            trainer = self.session.trainer
            trl_compat.enable_sampling_correction(trainer)  # the loss corrects for the rollout's older weights
            trainer.rlc_ratio_from_loss = overlap.ratio_from_loss(trainer)  # ... with the ratio from its own forward
            trainer.rlc_lookahead = overlap.Lookahead()  # the next step's prompts, from the trainer's own iterator
            self.prefetch = overlap.Prefetcher(lambda ids, sampling: self.session.engine.generate(ids, sampling))
        task = self.session.task
        self.alerts.weights = dict(zip(task.reward_names, task.reward_weights))
        if self.resume is None:
            self.sync(verify=True, reason="initial")
        else:  # the engine serves the checkpoint's weights before the first resumed step, verified
            r = self.resume
            self.sync(verify=True, reason=f"resumed from {r.path.name} (step {r.step}); checksum equals the checkpoint's")
            self._synced_step = r.step
        self.probe()  # what the policy says before this run's first update
        settle_heap()

    def train(self) -> None:
        """TRL's train(), again after a group-size change (TRL builds G into its sampler)."""
        trainer = self.session.trainer
        try:
            while True:
                try:
                    self._last_step_end = time.perf_counter()
                    if self.resume is not None:  # TRL restores optimizer, scheduler, RNG and skips the data already seen
                        path, self.resume = self.resume.path, None
                        trainer.train(resume_from_checkpoint=str(path))
                    else:
                        trainer.train()
                    return
                except StopTraining as stop:
                    if not stop.restart:
                        return
                if self.prefetch is not None:
                    self.prefetch.drop("the group size changed: train() started again")
                remaining = self.profile.run.max_steps - self.step
                if remaining <= 0:
                    return
                self.step_offset = self.step
                trl_compat.set_group_size(trainer, self.params["num_generations"], self.profile.training.prompts_per_step, remaining,
                                          self.profile.training.micro_batches)
        finally:
            if self.prefetch is not None:
                self.prefetch.close()  # nothing generates once training ends (the engine shuts down next)
            self._drain_behind()

    def _drain_behind(self) -> None:
        """At the end of train(): the last step's groups are in the log before anything after it
        (a worker's failure is raised unless another one is already on its way)."""
        import sys

        unwinding = sys.exc_info()[1] is not None  # (in train()'s `finally`: its exception, if one ends it)
        try:
            self.behind.wait()
        except Exception:
            if not unwinding:
                raise
        finally:
            self.behind.close()

    @property
    def step_now(self) -> int:
        """The step TRL is in (completed steps, counting the restarts before this train() call)."""
        return self.step_offset + self.session.trainer.state.global_step

    # ---- 1. boundary -> apply -> sync -> sampling ---------------------------------
    def before_rollout(self, trainer) -> tuple[Sampling, float, int, int]:
        if self.prefetch is not None:
            self.prefetch.wait()  # this step's rollout, generated behind the last update: the engine is idle after it
        t0 = time.perf_counter()
        self.boundary()
        # time held at the boundary (paused, or applying an operator's command) is not step time:
        # a pause must not read as a slow step in StepMetrics.times, the charts or the slow_step alert
        self._last_step_end += time.perf_counter() - t0
        if self._pending_restart:
            self._pending_restart = False
            raise StopTraining("group size changed", restart=True)
        sync_s = self.catch_up("step")
        if (every := self.profile.telemetry.probe_every) and self.step % every == 0:
            t1 = time.perf_counter()
            self.probe()  # its own cost is in the PolicyProbe event, not in this step's times
            self._last_step_end += time.perf_counter() - t1
        every = self.profile.telemetry.logprob_diff_every
        self.measuring_logprobs = bool(every) and (self.step_now + 1) % every == 0
        sampling = self.sampling(trainer, self.step_now)
        self.session.recorder.reset()
        return sampling, sync_s, self.weight_version, self.step_now + 1

    def catch_up(self, reason: str) -> float:
        """Push the trainer's weights if the engine does not serve them yet (once per step:
        the boundary's push, or an earlier one that a playground request at this boundary
        needed); returns the seconds it took."""
        if self._synced_step == self.step_now:
            return 0.0
        every = self.profile.engine.verify_every
        try:
            return self.sync(verify=every > 0 and self._syncs % every == 0, reason=reason)
        except EngineError as exc:  # a Ray replica died between steps: same recovery as mid-rollout
            if not self.session.can_restart_engine:
                raise
            t1 = time.perf_counter()
            self.recover_engine(exc)
            return time.perf_counter() - t1

    def sampling(self, trainer, done: int) -> Sampling:
        """The rollout of the step after `done` completed steps, from the live parameters."""
        prm = self.params
        trl_needs = self.prefetch is not None or getattr(trainer.args, "off_policy_mask_threshold", None) is not None
        return Sampling.live(
            prm,
            n=prm["num_generations"],
            seed=self.profile.run.seed * 1_000_003 + done,  # each prompt's own seed derives from it
            # engine sampling log-probs cost rollout time: asked for where TRL's off-policy mask or
            # importance-sampling correction (overlap) needs them (every prompt), and on the steps
            # that measure trainer-engine agreement (the first `measure_prompts` prompts)
            logprobs=self.measuring_logprobs or trl_needs,
            logprobs_prompts=None if trl_needs else self.measure_prompts,
        )

    @property
    def measure_prompts(self) -> int:
        """Prompts at the head of a measuring step's batch whose completions the agreement reads."""
        t = self.profile.telemetry
        return max(t.logprob_diff_prompts, t.token_view_groups)

    @property
    def measure_rows(self) -> int | None:
        """Completions at the head of the batch the agreement reads (None: all, where TRL asked
        the engine for every completion's log-probs)."""
        return None if self.prefetch is not None else self.measure_prompts * self.params["num_generations"]

    def boundary(self) -> None:
        """Apply the operator's queued commands; while paused, stay here applying them."""
        engine = self.session.engine
        while True:
            for cmd in self.desk.at_boundary(idle=engine.pause, wake=engine.resume, resume_check=self._resume_check):
                self.apply(cmd)
            if not self._reward_code_suspect or (why := self._reload_reward_code()) is None:
                return
            self.desk.request_pause(why)  # the old functions are still in place: pause again, right here

    def _resume_check(self) -> str | None:
        """While paused, on the operator's Resume: reward code changed on disk meanwhile is taken
        up (after any pause: an operator may pause to fix a function that scores wrongly without
        failing); code that does not load fails the Resume with the reason, and the run stays
        paused. Only after a reward failure is "unchanged on disk" worth saying."""
        return self._reload_reward_code(quiet=not self._reward_code_suspect)

    def _reload_reward_code(self, quiet: bool = False) -> str | None:
        """Take up reward code fixed meanwhile (the modules whose file changed). None when all is
        well; otherwise why the run pauses again."""
        code = self.session.task.code
        self._reward_code_suspect = False
        if code is None:
            return None
        try:
            changed = code.reload_changed()
        except RewardLoadError as exc:
            self._reward_code_suspect = True
            self.alerts.raise_alert(Finding("reward_failed", "critical", f"{exc}; the functions as first imported are kept",
                                            "reward", None, None, "fix the module and resume again (p)", "alert"), self.step)
            return f"reward code not reloaded: {exc}"
        if changed or not quiet:
            self.session.progress("task", f"reloaded reward module{'s' * (len(changed) != 1)} {', '.join(changed)} (changed on disk)"
                                  if changed else "reward modules unchanged on disk: the functions as imported are kept")
        return None

    def apply(self, cmd: Any) -> None:
        try:
            if isinstance(cmd, C.SetParams):
                changed = dict(cmd.changes())
                for key, value in changed.items():
                    APPLY[key](self, value)
                self.params.update(changed)
                self.bus.emit(E.ParamsApplied(command_id=cmd.id, step=self.step, changed=changed, params=dict(self.params)))
            elif isinstance(cmd, C.ResyncWeights):
                if self.prefetch is not None:  # sampled by the engine the operator distrusts
                    self.prefetch.drop("weights resynced at the boundary")
                self.sync(verify=True, reason="resync")
            elif isinstance(cmd, C.Checkpoint):
                self.checkpoint()
            elif isinstance(cmd, C.TryPrompt):
                self.try_prompt(cmd)
            elif isinstance(cmd, C.Stop):
                self.desk.done(cmd)
                raise StopTraining("stop requested")
            self.desk.done(cmd)
        except (StopTraining, LogUnwritable):
            raise
        except Exception as exc:
            self.desk.failed(cmd, f"{type(exc).__name__}: {exc}")

    def sync(self, *, verify: bool, reason: str) -> float:
        """Push the policy's weights into the engine as the next version; verify with the canary when asked."""
        version = self.weight_version + 1
        if self.prefetch is not None:
            self.prefetch.wait()  # never push while a rollout is generating (the engine is one object)
        try:
            done = self.session.push_weights(version, verify=verify)
        except TimeoutError as exc:  # past engine.sync_deadline_s: alert, and fail instead of hanging
            self.alerts.raise_alert(Finding("sync_deadline", "critical", str(exc), "sync_s", None,
                                            self.profile.engine.sync_deadline_s,
                                            "check the engine (backend.log); resume from the last checkpoint", "alert"),
                                    self.step_now)
            raise EngineError(str(exc)) from None
        if done.engine_version != version:
            self.alerts.raise_alert(Finding("engine_stale", "critical",
                                            f"engine reports weight version {done.engine_version}, trainer pushed {version}",
                                            "weight_version", float(done.engine_version), float(version),
                                            "resync weights (w)", "pause"), self.step_now)
        self.weight_version = version
        self._synced_step = self.step_now if self.session.trainer is not None else -1
        self._syncs += 1
        if done.verified is False:
            raise EngineError(f"weight sync v{version} not applied: {done.canary}")
        self.bus.emit(
            E.WeightsSynced(
                version=version,
                step=self.step,
                duration_s=done.duration_s,
                bytes=done.report.bytes,
                checksum=done.checksum,
                verified=bool(done.verified),
                method=done.report.method + ("" if verify else " (not canary-checked this time)"),
                detail=f"{reason}; load {done.report.duration_s * 1000:.1f} ms"
                + (f" ({done.report.detail})" if done.report.detail else "") + (f"; {done.canary}" if done.canary else ""),
            )
        )
        return done.duration_s

    def sync_hung(self, message: str) -> None:
        """From the watchdog's thread: a push hangs in the engine and holds the training thread.
        Say so as a late push would be said, then end the process (nothing can unstick it)."""
        self.alerts.raise_alert(Finding("sync_deadline", "critical", message, "sync_s", None,
                                        self.profile.engine.sync_deadline_s,
                                        "check the engine (backend.log); resume from the last checkpoint", "alert"),
                                self.step_now if self.session.trainer is not None else self.step)
        self.desk.abort(f"engine: {message}", code=3)

    def probe(self) -> None:
        """Greedy outputs of the probe prompts at the engine's current weights (once per version)."""
        if not self.profile.telemetry.probe_every or self.weight_version == self._probed_version:
            return
        if self._probe_rows is None:
            self._probe_rows = self.session.probe_rows()
        if not self._probe_rows:
            return
        from backend.training.probes import run_probe

        self._probed_version = self.weight_version
        t = self.profile.telemetry
        self.bus.emit(run_probe(self.session, self._probe_rows, t.probe_max_tokens or self.params["max_tokens"],
                                step=self.step, weight_version=self.weight_version))

    def final_probe(self) -> None:
        """After the last step: push the final weights (if steps ran since the last push) and
        probe them, so the policy diff ends on what the run ends with."""
        if not self.profile.telemetry.probe_every or self.session.trainer is None or self.step == 0:
            return
        self.catch_up("final weights, for the last policy probe")
        self.probe()

    def try_prompt(self, cmd: Any) -> None:
        """The playground: the operator's prompt on the live engine, between steps."""
        from backend.training.probes import run_try

        t0 = time.perf_counter()
        if self.session.trainer is not None:
            # the engine serves the weights of the last completed step, as the try reports: at
            # a boundary it still holds the previous step's until this step's push, done here
            self.catch_up("step (pushed early for a playground request)")
        params = {**{k: self.params[k] for k in ENGINE_PARAMS}, **cmd.overrides()}
        # each try samples afresh (two tries of one prompt at one step differ where the
        # temperature lets them); reproducible from the run's seed, the step and the try's number
        self._tries += 1
        sampling = Sampling.live(params, n=cmd.n, logprobs=False,
                                 seed=self.profile.run.seed * 1_000_003 + 7919 * (self.step + 1) + 104_729 * self._tries)
        completions, unscored = run_try(self.session, cmd.prompt, sampling, dict(cmd.columns),
                                        conversational=self.session.conversational)
        self.bus.emit(E.TryResult(command_id=cmd.id, step=self.step, weight_version=self.weight_version, prompt=cmd.prompt,
                                  params=params, completions=completions, unscored=unscored,
                                  duration_s=time.perf_counter() - t0))

    def checkpoint(self, reason: str = "on demand") -> None:
        self.session.checkpoint(step=self.step, step_offset=self.step_offset, weight_version=self.weight_version,
                                params=self.params, reason=reason)
        self.checkpointed_step = self.step

    def recover_engine(self, exc: Exception) -> None:
        """A Ray engine replica died mid-run: nothing of this step has been applied yet.
        Alert, restart the dead replicas, re-push and verify the weights, then pause here
        (before this step's update) until the operator resumes — or go on if the profile
        says `ray.auto_resume`."""
        step = self.step_now + 1
        self.alerts.raise_alert(
            Finding("engine_dead", "critical", f"engine failure at step {step}: {exc}", "engine", None, None,
                    "the replica is restarted and re-synced; press p (or ctl resume) to continue", "alert"),
            step,
        )
        if not self.profile.ray.auto_resume:
            self.desk.request_pause(f"engine failure at step {step}; restarting the replica")
        if self.prefetch is not None:
            self.prefetch.drop("the engine was restarted")
        t0 = time.perf_counter()
        self.bus.emit(E.Progress(stage="engine", message="restarting dead engine replicas"))
        restarted = self.session.engine.restart_dead()
        self.bus.emit(E.Progress(stage="engine", message=f"restarted replica(s) {restarted} in {time.perf_counter() - t0:.1f} s; re-pushing weights"))
        self.sync(verify=True, reason=f"after restarting replica(s) {restarted}")
        self.boundary()  # paused here until resumed; commands keep working

    # ---- 2. generated (rollout_func) ------------------------------------------------
    def rollout_done(self, batch: RolloutBatch) -> None:
        self._batch = batch
        # an in-process engine compiles through the same torch (vLLM's own graphs, new batch
        # shapes): what compiled up to here is the boundary's or the engine's, not the update's
        self._compile_clock.lap()

    # ---- overlap: the next step's rollout behind this update (training.overlap) -----------
    def take_prefetched(self, step: int, prompts: list[Any], prompt_ids: list[list[int]],
                        sampling: Sampling) -> tuple[overlap.Rollout | None, str]:
        """The rollout generated during the last update if it is exactly this step's, else
        (None, why) and the step generates its own (never trained on other prompts)."""
        if self.prefetch is None:
            return None, ""
        ahead, why = self.prefetch.take(step, prompts, prompt_ids, sampling, self.weight_version)
        if ahead is None and any(w in why for w in ("differ", "failed", "versions old")):
            self.bus.emit(E.LogLine(level="warning", message=f"overlap: step {step} generated synchronously: {why}"))
        return ahead, why

    def prefetch_next(self, trainer, encode) -> None:
        """Start the next step's rollout on the engine (current weights and live parameters);
        it runs while TRL scores and trains this step, and is waited for at the next boundary."""
        if self.prefetch is None:
            return
        nxt = self.step_now + 2
        if nxt > self.step_offset + trainer.state.max_steps:
            return  # the run ends with this step
        rows = trainer.rlc_lookahead.upcoming()  # the batch the trainer reads next
        sampling = self.sampling(trainer, self.step_now + 1)
        if not rows or len(rows) % sampling.n:
            return  # end of an epoch: the next step generates its own
        prompts = [rows[i]["prompt"] for i in range(0, len(rows), sampling.n)]
        self.prefetch.start(overlap.Rollout(step=nxt, prompts=prompts, prompt_ids=[encode(p) for p in prompts],
                                            sampling=sampling, weight_version=self.weight_version))

    # ---- 3. scored by TRL: report the groups ----------------------------------------
    @property
    def token_rows(self) -> int:
        """Completions at the head of the batch that carry their tokens for the token view."""
        return self.profile.telemetry.token_view_groups * self.params["num_generations"]

    def scored(self, trainer, advantages: list[float], logprob_gap: tuple[float, float, list[list[float]]] | None = None,
               is_clipped: float | None = None, agreement_pending: bool = False) -> None:
        """The batch is scored: record its rewards and advantages and log its groups. With
        `agreement_pending` (a measuring step whose trainer log-probs come from the loss's own
        forward pass) the groups wait for `agreement`, which carries the token view's rows."""
        b = self._batch
        if b is None:
            return
        recorder, task = self.session.recorder, self.session.task
        b.logprob_gap = logprob_gap
        b.is_clipped = is_clipped
        b.staleness = self.weight_version - b.weight_version  # the loss uses the weights synced at this boundary
        b.score_s = recorder.seconds
        rewards, failed = dict(recorder.values), dict(recorder.failures)
        bad = [n for n, vals in rewards.items() if n not in failed and any(v is not None and not math.isfinite(v) for v in vals)]
        if failed:  # raised, hung past its timeout, or returned no list of numbers
            name, why = next(iter(failed.items()))
            self._skip(b.step, "reward_failed", f"reward function {name} {why}" + (f" (and {len(failed) - 1} more)" if len(failed) > 1 else ""),
                       FIX_AND_RESUME.format(what="the judge or service it calls"))
        elif bad:  # None means "not applicable" in TRL; NaN/Inf is a broken reward: keep it out of the weights
            self._skip(b.step, "non_finite", f"reward function {bad[0]} returned NaN/Inf",
                       FIX_AND_RESUME.format(what="the data it reads"))
        joined = report.join_scores(b, rewards, advantages, task.reward_names, task.reward_weights)
        ground_truth = self.profile.task.ground_truth

        def signals() -> None:  # read by on_log, after the worker is waited for
            b.reward_finished, b.reward_truncated = report.reward_by_ending(joined)
            self._signals = report.signals(joined, ground_truth)

        self._signals = None
        self.behind.submit(signals)
        self._joined = joined
        if not agreement_pending:
            self._log_groups()

    def importance(self, clipped: float | None) -> None:
        """The share of the batch TRL's importance-sampling correction masked or truncated, known
        once the loss has seen the whole batch (`overlap.LossImportance`)."""
        if self._batch is not None:
            self._batch.is_clipped = clipped

    def agreement(self, logprob_gap: tuple[float, float, list[list[float]]] | None) -> None:
        """A measuring step's trainer-engine agreement, from the loss's forward pass (None: it
        could not be read, e.g. the loss failed): then its groups are logged."""
        if self._batch is not None and self._joined is not None:
            self._batch.logprob_gap = logprob_gap
            self._log_groups()

    def _log_groups(self) -> None:
        b, joined, self._joined = self._batch, self._joined, None
        if b is None or joined is None:
            return
        # the token view rides on the steps that measure trainer-engine agreement: the engine
        # returns every sampled token's log-prob there anyway, so it costs only the decoding
        token_groups = self.profile.telemetry.token_view_groups if b.logprob_gap else 0
        decode = self.session.decode_token

        def log() -> None:
            groups = report.sample_groups(b, joined, decode=decode, token_groups=token_groups)
            if b.staleness:
                groups = [g.model_copy(update={"staleness": b.staleness}) for g in groups]
            self.bus.emit_many(groups)

        self.behind.submit(log)

    def _skip(self, step: int, rule: str, why: str, suggestion: str) -> None:
        self._skip_update = why
        self._reward_code_suspect = True
        self.alerts.raise_alert(Finding(rule, "critical", f"{why} at step {step}: this step's update will be skipped",
                                        "reward", None, None, suggestion, "alert"), step)

    # ---- 4. guards around TRL's update -----------------------------------------------
    def on_pre_optimizer_step(self, model) -> None:
        """NaN/Inf guard: drop the gradients (so the optimizer skips this update), then pause
        with the last good weights checkpointed."""
        import torch

        self._log_groups()  # a measuring step whose loss gave no log-probs for its rows: its groups, without them
        self.behind.wait()  # the step's groups and signals are logged before its update is applied
        # the total gradient norm (non-finite when any element is NaN/Inf), as the trainer computed
        # it for this step (trl_compat.GRAD_NORM), else one fused norm here: a single check per
        # step; the per-tensor pass that names the tensors runs only when it is not finite
        trainer = self.session.trainer
        norm = getattr(trainer, "rlc_grad_norm", None)
        if norm is not None:
            trainer.rlc_grad_norm = None
            finite = math.isfinite(float(norm))
        else:
            grads = [prm.grad for prm in model.parameters() if prm.grad is not None]
            finite = not grads or bool(torch.isfinite(torch.nn.utils.get_total_norm(grads)))
        bad = [] if finite else [n for n, prm in model.named_parameters()
                                 if prm.grad is not None and not torch.isfinite(prm.grad).all()]
        if bad and not self._skip_update:
            with_grad = sum(1 for prm in model.parameters() if prm.grad is not None)
            if len(bad) == with_grad > 1 and norm is not None:  # clipping by a NaN/Inf norm reached every tensor
                self._skip_update = (f"non-finite gradients (the step's gradient norm is {float(norm)}; clipping by it "
                                     f"made all {with_grad} tensors non-finite, so the first one is not known)")
            else:
                self._skip_update = f"non-finite gradients in {len(bad)} tensors (e.g. {bad[0]})"
            self.alerts.raise_alert(
                Finding("non_finite", "critical", f"{self._skip_update}: update skipped", "grad", None, None,
                        "inspect the newest groups and rewards; lower the learning rate; then resume", "alert"),
                self.step_now + 1,
            )
        if self._skip_update:
            for prm in model.parameters():
                prm.grad = None  # AdamW skips parameters without a gradient: no update at all

    def on_step_end(self, state) -> None:
        now = time.perf_counter()
        self.step = self.step_now
        self._step_wall[self.step] = now - self._last_step_end
        self._step_compile[self.step] = self._compile_clock.lap()
        self._last_step_end = now
        if self._skip_update:  # the weights are still the last good ones: keep them, then pause
            reason, self._skip_update = self._skip_update, None
            self._skipped[self.step] = reason
            self.skipped_steps.append(self.step)
            self.checkpoint(checkpoints.LAST_GOOD)
            self.desk.request_pause(f"{reason} at step {self.step}: update skipped, last good state checkpointed")
        elif (every := self.profile.run.checkpoint_every) and self.step % every == 0:
            self.checkpoint("scheduled")

    # ---- 5. metrics -> alerts ----------------------------------------------------------
    def on_log(self, state, logs: dict[str, Any]) -> None:
        # transformers keeps every logged dict in `state.log_history` and writes all of it into
        # each checkpoint's trainer_state.json: memory and checkpoint time growing with the run
        # (~1 MB at step 1,000). The run's own log holds every step's metrics; keep the newest.
        if len(state.log_history) > LOG_HISTORY_KEPT:
            del state.log_history[:-LOG_HISTORY_KEPT]
        self.behind.wait()  # (done at the optimizer step already, unless TRL skipped it)
        step = self.step_now
        metrics = report.step_metrics(
            step, logs, self._batch, self._step_wall.pop(step, 0.0), self.session.task.reward_names,
            self.weight_version, self._skipped.pop(step, ""), self._signals, compile_s=self._step_compile.pop(step, 0.0),
        )
        metrics = self.bus.emit(metrics.model_copy(update=overlap.metric_fields(
            self._batch, logs, metrics.times, self.prefetch is not None)))
        self.alerts.on_metrics(metrics)


#: TRL's logged dicts kept in `TrainerState.log_history` (see `StepLoop.on_log`)
LOG_HISTORY_KEPT = 4


# ---- how each live parameter takes effect at a step boundary ------------------------------
# Derived from `backend.protocol.params.PARAMS`: one entry per parameter (a test checks it).

def _next_rollout(loop: StepLoop, value: Any) -> None:
    """Sampling parameters are read from the live params when the next rollout is built."""


def _set_temperature(loop: StepLoop, value: float) -> None:
    trl_compat.set_loss_temperature(loop.session.trainer, value)  # the loss's log-probs follow the sampling temperature


def _set_max_tokens(loop: StepLoop, value: int) -> None:
    loop.session.trainer.max_completion_length = value
    loop.session.trainer.args.max_completion_length = value


def _set_group_size(loop: StepLoop, value: int) -> None:
    if value != loop.params["num_generations"]:
        loop._pending_restart = True  # TRL builds G into its sampler: train() starts again at the boundary


def _set_loss_field(name: str):
    """A loss coefficient TRL reads from the trainer at every step (e.g. beta)."""
    def apply(loop: StepLoop, value: Any) -> None:
        setattr(loop.session.trainer, name, value)
        setattr(loop.session.trainer.args, name, value)
    return apply


def _set_optimizer_field(name: str):
    """An optimizer hyper-parameter: every param group, from the next optimizer step."""
    def apply(loop: StepLoop, value: Any) -> None:
        trainer = loop.session.trainer
        if trainer.optimizer is not None:
            for group in trainer.optimizer.param_groups:
                group[name] = value
        setattr(trainer.args, name, value)
    return apply


def _restart_if_changed(name: str):
    def apply(loop: StepLoop, value: Any) -> None:
        if value != loop.params[name]:
            loop._pending_restart = True
    return apply


#: how a change takes effect, by the parameter's `applies` in the registry ...
BY_APPLIES = {
    "sampling": lambda name: _next_rollout,
    "loss": _set_loss_field,
    "optimizer": _set_optimizer_field,
    "restart": _restart_if_changed,
}
#: ... unless the parameter needs more than that
SPECIAL: dict[str, Any] = {
    "temperature": _set_temperature,
    "max_tokens": _set_max_tokens,
    "num_generations": _set_group_size,
    "learning_rate": lambda loop, value: set_learning_rate(loop.session.trainer, value),  # the scheduler keeps it too
}
APPLY: dict[str, Any] = {p.name: SPECIAL.get(p.name) or BY_APPLIES[p.applies](p.name) for p in PARAMS}
