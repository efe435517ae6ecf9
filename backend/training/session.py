"""TrainingSession: one GRPO run's live objects (engine, policy, TRL trainer) and the hooks
TRL calls at each stage. The controller owns it and decides when things happen; the
session knows how (generate, score, advantages, update, sync, checkpoint).
"""

from __future__ import annotations

import math
import statistics
import time
from typing import Any

from backend.engine import weight_sync
from backend.engine.canary import Canary, pick_sequences
from backend.engine.base import EngineError, Sampling
from backend.protocol import events as E
from backend.telemetry.alerts import AlertMonitor, Finding
from backend.telemetry.gpu import GpuPoller
from backend.training import checkpoints, factory
from backend.training.rewards import RewardRecorder
from backend.training.trainer import (
    RolloutBatch,
    RolloutFunc,
    StopTraining,
    group_view,
    make_callback,
    make_trainer_class,
    set_learning_rate,
    set_loss_temperature,
)

PROMPTS_CHECKED = 5000  # prompts tokenized at start for the length check (the rest are checked by vLLM)
CANARY_PROMPTS = 8
CANARY_TOKENS = 32


class TrainingSession:
    def __init__(self, controller) -> None:
        self.c = controller
        self.profile = controller.profile
        self.recorder = RewardRecorder(timeout_s=controller.profile.task.reward_timeout_s)
        self.engine = None
        self.trainer = None
        self.model = None
        self.tokenizer = None
        self.gpu: GpuPoller | None = None
        self.max_prompt_tokens = 0
        self.has_ref_model = self.profile.training.beta > 0
        self._batch: RolloutBatch | None = None
        self._synced_step = -1
        self._syncs = 0
        self._step_offset = 0
        self._last_step_end = time.perf_counter()
        self._step_wall: dict[int, float] = {}
        self.canary_seqs: list[list[int]] = []
        self._skipped: dict[int, str] = {}  # step -> why its update was skipped (until its metrics are sent)
        self._sync_pool = None
        self.resume = getattr(controller, "resume", None)  # checkpoints.ResumePoint when resuming
        if self.resume is not None:
            self._step_offset = self.resume.step_offset
        self.checkpoint_root = checkpoints.root_for(self.profile.run.output_dir, controller.run_dir, controller.run_id)

    # ---- setup -------------------------------------------------------------
    def setup(self) -> None:
        import torch

        from backend.engine.factory import make_engine
        from backend.engine.local import resolve_device

        p = self.profile
        import transformers

        transformers.utils.logging.disable_progress_bar()  # "Writing model shards" bars at every checkpoint
        torch.set_num_threads(p.run.num_threads)
        torch.manual_seed(p.run.seed)
        say = lambda msg: self.c.progress("model", msg)  # noqa: E731
        device = resolve_device(p.engine.device)
        dtype = factory.resolve_dtype(p, device)
        model_path, embedded = factory.resolve_model(p, say, dtype)
        self.task = factory.load_task(p, self.recorder)
        self.model_path, self.device, self.dtype = model_path, device, dtype
        # what can be checked before the engine starts (seconds to minutes) is checked now
        from transformers import AutoTokenizer

        encoder = RolloutFunc(None, AutoTokenizer.from_pretrained(model_path), self)
        encoded = [encoder.encode(x) for x in self.task.dataset["prompt"][:PROMPTS_CHECKED]]
        self.max_prompt_tokens = max(len(x) for x in encoded)
        if self.max_prompt_tokens + p.sampling.max_tokens > p.engine.max_model_len:
            raise ValueError(
                f"longest prompt ({self.max_prompt_tokens} tokens) + sampling.max_tokens ({p.sampling.max_tokens}) "
                f"exceeds engine.max_model_len ({p.engine.max_model_len}): raise engine.max_model_len or lower "
                "sampling.max_tokens"
            )

        self.c.progress("engine", f"starting vLLM ({p.engine.backend}, {device}, {dtype}) — first start compiles kernels, ~10-60 s")
        t0 = time.perf_counter()
        self.engine = make_engine(p, model_path, device, dtype)
        self.c.progress("engine", f"engine ready in {time.perf_counter() - t0:.1f} s: {self.engine.info.name}; compiling sampling kernels")
        self.engine.generate([[1, 2]], Sampling(n=2, temperature=1.0, top_p=1.0, top_k=-1, max_tokens=2, seed=0))
        self.engine.prompt_logprobs([[1, 2, 3]])

        self.c.progress("model", "loading the policy into the trainer")
        self.model, self.tokenizer = factory.load_policy(model_path, p.training.policy_dtype, device)
        # canary: the tails of a few real prompts as fixed sequences, its noise floor measured
        # now, while engine and trainer hold the same weights (before warm-up or resume)
        e = p.engine
        self.canary = Canary(pick_sequences(encoded, CANARY_PROMPTS, min(CANARY_TOKENS, e.max_model_len - 1)),
                             tolerance=e.canary_tolerance, noise_factor=e.canary_noise_factor, max_noise=e.canary_max_noise)
        self.canary_seqs = self.canary.sequences
        self.c.progress("engine", self.canary.calibrate(self.engine.prompt_logprobs(self.canary_seqs), self.trainer_logprobs(self.canary_seqs)))
        if self.resume is not None:
            self._load_resume_weights()

        self.c.emit(
            E.RunStarted(
                run_id=self.c.run_id,
                profile=self.c.profile_name,
                profile_data=p.model_dump(mode="json"),
                model=model_path if not embedded else f"embedded tiny Qwen2 ({_count(self.model)/1e3:.0f}k params)",
                task=p.task.name,
                engine=self.engine.info.name,
                reward_functions=self.task.reward_names,
                reward_weights=list(self.task.reward_weights),
                params=dict(self.c.params),
                pid=__import__("os").getpid(),
            )
        )
        self.alerts = AlertMonitor(p.alerts, self.c.emit, self.c.request_pause)
        self.gpu = GpuPoller(self.c.emit, hz=p.telemetry.gpu_poll_hz, remote=getattr(self.engine, "node_stats", None))
        self.gpu.start()

        if embedded and self.task.embedded and p.task.warmup_steps and self.resume is None:
            n = p.task.warmup_steps
            self.c.progress("warmup", f"supervised warm-up: {n} steps on correct examples", 0, n)
            factory.supervised_warmup(
                self.model, self.tokenizer, n, p.task.warmup_learning_rate, p.run.seed,
                lambda i, loss: self.c.progress("warmup", f"warm-up step {i}/{n}, loss {loss:.3f}", i, n),
                correct_fraction=p.task.warmup_correct_fraction,
            )
        self.c.progress("trainer", "building the TRL GRPO trainer")
        self._build_trainer(p.run.max_steps - self._step_offset)
        if self.resume is None:
            self.sync_weights(verify=True, reason="initial")
        else:  # the engine serves the checkpoint's weights before the first resumed step, verified
            r = self.resume
            self.sync_weights(verify=True, reason=f"resumed from {r.path.name} (step {r.step}); checksum equals the checkpoint's")
            self._synced_step = r.step

    def _load_resume_weights(self) -> None:
        """The policy's weights from the checkpoint, checked against the checksum saved with it."""
        from safetensors.torch import load_file

        r = self.resume
        files = sorted(r.path.glob("*.safetensors"))
        if not files:
            raise FileNotFoundError(f"{r.path} holds no *.safetensors weights")
        state: dict = {}
        for f in files:
            state.update(load_file(str(f), device=str(next(self.model.parameters()).device)))
        missing, unexpected = self.model.load_state_dict(state, strict=False)
        tied = {"lm_head.weight"} if getattr(self.model.config, "tie_word_embeddings", False) else set()
        if set(missing) - tied or unexpected:
            raise ValueError(f"{r.path}: weights do not fit the model (missing {sorted(set(missing) - tied)[:3]}, unexpected {unexpected[:3]})")
        fp = weight_sync.fingerprint if r.fingerprint == weight_sync.FINGERPRINT_VERSION else weight_sync.fingerprint_v1
        checksum, _ = fp(weight_sync.state_tensors(self.model))
        if checksum != r.checksum:
            raise ValueError(f"{r.path}: loaded weights have checksum {checksum}, the checkpoint recorded {r.checksum}")
        self.c.progress("model", f"loaded step {r.step} weights from {r.path} (checksum {checksum} verified)")

    def _build_trainer(self, max_steps: int) -> None:
        p = self.profile
        args = factory.grpo_config(p, self.checkpoint_root, self.device, self.task.reward_weights, max_steps)
        cls = make_trainer_class()
        self.trainer = cls(
            model=self.model,
            reward_funcs=self.task.reward_funcs,
            args=args,
            train_dataset=self.task.dataset,
            processing_class=self.tokenizer,
            rollout_func=RolloutFunc(self.engine, self.tokenizer, self),
            callbacks=[make_callback(self)],
        )
        self.trainer.rlc_hooks = self
        from transformers.trainer_callback import PrinterCallback, ProgressCallback

        self.trainer.remove_callback(PrinterCallback)  # the console prints its own lines
        self.trainer.remove_callback(ProgressCallback)
        self.c.trainer = self.trainer

    # ---- the loop ----------------------------------------------------------
    def train(self) -> None:
        while True:
            try:
                self._last_step_end = time.perf_counter()
                if self.resume is not None:  # TRL restores optimizer, scheduler, RNG and skips the data already seen
                    path, self.resume = self.resume.path, None
                    self.trainer.train(resume_from_checkpoint=str(path))
                else:
                    self.trainer.train()
                return
            except StopTraining as stop:
                if not stop.restart:
                    return
            # a new group size: TRL builds G into its sampler, so train() starts again
            done = self.c.step
            remaining = self.profile.run.max_steps - done
            if remaining <= 0:
                return
            self._step_offset = done
            g = self.c.params["num_generations"]
            self.trainer.num_generations = g
            self.trainer.args.num_generations = g
            self.trainer.args.per_device_train_batch_size = self.profile.training.prompts_per_step * g
            self.trainer.args.generation_batch_size = self.profile.training.prompts_per_step * g
            self.trainer._train_batch_size = self.profile.training.prompts_per_step * g
            self.trainer.args.max_steps = remaining
            self.trainer.state.global_step = 0

    @property
    def step_now(self) -> int:
        return self._step_offset + self.trainer.state.global_step

    # hooks called by TRL through RolloutFunc / the trainer subclass / the callback
    def before_rollout(self, trainer) -> tuple[Sampling, float, int, int]:
        t0 = time.perf_counter()
        self.c.boundary()
        # time held at the boundary (paused, or applying an operator's command) is not step time:
        # a pause must not read as a slow step in StepMetrics.times, the charts or the slow_step alert
        self._last_step_end += time.perf_counter() - t0
        if self._pending_restart:
            self._pending_restart = False
            raise StopTraining("group size changed", restart=True)
        sync_s = 0.0
        if self._synced_step != self.step_now:
            verify = self.profile.engine.verify_every > 0 and (self._syncs % self.profile.engine.verify_every == 0)
            try:
                sync_s = self.sync_weights(verify=verify, reason="step")
            except EngineError as exc:  # a Ray replica died between steps: same recovery as mid-rollout
                if not hasattr(self.engine, "restart_dead"):
                    raise
                t0 = time.perf_counter()
                self.recover_engine(exc)
                sync_s = time.perf_counter() - t0
        prm = self.c.params
        every = self.profile.telemetry.logprob_diff_every
        self.measuring_logprobs = bool(every) and (self.step_now + 1) % every == 0
        sampling = Sampling(
            n=prm["num_generations"],
            temperature=prm["temperature"],
            top_p=prm["top_p"],
            top_k=prm["top_k"],
            max_tokens=prm["max_tokens"],
            seed=self.profile.run.seed * 1_000_003 + self.step_now,
            # engine sampling log-probs cost rollout time: asked for where TRL's off-policy mask
            # needs them, and on the steps that measure trainer-engine agreement
            logprobs=self.measuring_logprobs or getattr(trainer.args, "off_policy_mask_threshold", None) is not None,
        )
        self.recorder.reset()
        return sampling, sync_s, self.c.weight_version, self.step_now + 1

    _pending_restart = False
    measuring_logprobs = False

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
            self.c.request_pause(f"engine failure at step {step}; restarting the replica")
        t0 = time.perf_counter()
        self.c.progress("engine", "restarting dead engine replicas")
        restarted = self.engine.restart_dead()
        self.c.progress("engine", f"restarted replica(s) {restarted} in {time.perf_counter() - t0:.1f} s; re-pushing weights")
        self.sync_weights(verify=True, reason=f"after restarting replica(s) {restarted}")
        self.c.boundary()  # paused here until resumed; commands keep working

    def rollout_done(self, batch: RolloutBatch) -> None:
        self._batch = batch

    def scored(self, trainer, advantages: list[float], logprob_gap: tuple[float, float] | None = None) -> None:
        b = self._batch
        if b is None:
            return
        b.advantages = advantages
        b.logprob_gap = logprob_gap
        b.rewards = dict(self.recorder.values)
        failed = dict(self.recorder.failures)
        bad = [n for n, vals in b.rewards.items() if n not in failed and any(v is not None and not math.isfinite(v) for v in vals)]
        if failed:  # raised, hung past its timeout, or returned no list of numbers
            name, why = next(iter(failed.items()))
            self._skip_update = f"reward function {name} {why}" + (f" (and {len(failed) - 1} more)" if len(failed) > 1 else "")
            self.alerts.raise_alert(
                Finding("reward_failed", "critical", f"{self._skip_update} at step {b.step}: this step's update will be skipped",
                        "reward", None, None, "fix the reward function (or its judge), then resume", "alert"),
                b.step,
            )
        elif bad:  # None means "not applicable" in TRL; NaN/Inf is a broken reward: keep it out of the weights
            self._skip_update = f"reward function {bad[0]} returned NaN/Inf"
            self.alerts.raise_alert(
                Finding("non_finite", "critical", f"{self._skip_update} at step {b.step}: this step's update will be skipped",
                        "reward", None, None, "fix the reward function, then resume", "alert"),
                b.step,
            )
        b.score_s = self.recorder.seconds
        names, weights = self.task.reward_names, self.task.reward_weights
        groups = []
        ended: dict[bool, list[float]] = {False: [], True: []}  # truncated? -> totals
        for gi, (prompt, rows) in enumerate(group_view(b, names, weights)):
            totals = [t for r in rows if (t := _clean(r[2])) is not None]  # NaN rewards are alerted above
            for c, _, total, _ in rows:
                if (t := _clean(total)) is not None:
                    ended[c.truncated].append(t)
            groups.append(
                E.SampleGroup(
                    step=b.step,
                    group=gi,
                    prompt=prompt,
                    completions=[
                        E.Completion(
                            text=c.text,
                            rewards={k: _clean(v) for k, v in rw.items()},
                            reward=_clean(total) or 0.0,
                            advantage=_clean(adv) or 0.0,
                            length=len(c.token_ids),
                            truncated=c.truncated,
                        )
                        for c, rw, total, adv in rows
                    ],
                    weight_version=b.weight_version,
                    reward_mean=statistics.fmean(totals) if totals else 0.0,
                    reward_std=statistics.pstdev(totals) if len(totals) > 1 else 0.0,
                )
            )
        b.reward_finished = statistics.fmean(ended[False]) if ended[False] else None
        b.reward_truncated = statistics.fmean(ended[True]) if ended[True] else None
        self.c.emit_many(groups)

    def on_step_end(self, state) -> None:
        now = time.perf_counter()
        self.c.step = self.step_now
        self._step_wall[self.c.step] = now - self._last_step_end
        self._last_step_end = now
        if self._skip_update:  # the weights are still the last good ones: keep them, then pause
            reason, self._skip_update = self._skip_update, None
            self._skipped[self.c.step] = reason
            self.checkpoint("last good state")
            self.c.request_pause(f"{reason} at step {self.c.step}: update skipped, last good state checkpointed")
        elif (every := self.profile.run.checkpoint_every) and self.c.step % every == 0:
            self.checkpoint("scheduled")

    def on_log(self, state, logs: dict[str, Any]) -> None:
        step = self.step_now
        b = self._batch
        total = self._step_wall.pop(step, 0.0)
        gen = b.generate_s if b else 0.0
        score = b.score_s if b else 0.0
        sync = b.sync_s if b else 0.0
        truncated = (
            sum(c.truncated for g in b.groups for c in g) / max(1, b.num_completions) if b else 0.0
        )
        by_fn = {n: v for n in self.task.reward_names if (v := _clean(logs.get(f"rewards/{n}/mean"))) is not None}
        metrics = self.c.emit(
            E.StepMetrics(
                step=step,
                loss=_clean(logs.get("loss")),
                kl=_clean(logs.get("kl")),
                grad_norm=_clean(logs.get("grad_norm")),
                learning_rate=_clean(logs.get("learning_rate")),
                reward_mean=_clean(logs.get("reward")) or 0.0,
                reward_std=_clean(logs.get("reward_std")) or 0.0,
                rewards_by_function=by_fn,
                frac_reward_zero_std=_clean(logs.get("frac_reward_zero_std")) or 0.0,
                truncated_ratio=truncated,
                clip_ratio=_clean(logs.get("clip_ratio/region_mean")),
                entropy=_clean(logs.get("entropy")),
                completion_length_mean=_clean(logs.get("completions/mean_length")) or 0.0,
                logprob_diff_mean=b.logprob_gap[0] if b and b.logprob_gap else None,
                logprob_diff_max=b.logprob_gap[1] if b and b.logprob_gap else None,
                reward_finished=b.reward_finished if b else None,
                reward_truncated=b.reward_truncated if b else None,
                update_skipped=self._skipped.pop(step, ""),
                times=E.StepTimes(
                    generate=gen, score=score, sync=sync, train=max(0.0, total - gen - score - sync), total=total
                ),
                tokens_per_s=(b.generated_tokens / gen) if b and gen > 0 else 0.0,
                samples_per_s=(b.num_completions / total) if b and total > 0 else 0.0,
                weight_version=self.c.weight_version,
            )
        )
        self.alerts.on_metrics(metrics)

    def on_pre_optimizer_step(self, model) -> None:
        """NaN/Inf guard: drop the gradients (so the optimizer skips this update), then pause
        with the last good weights checkpointed."""
        import torch

        bad = [n for n, prm in model.named_parameters() if prm.grad is not None and not torch.isfinite(prm.grad).all()]
        if bad and not self._skip_update:
            self._skip_update = f"non-finite gradients in {len(bad)} tensors (e.g. {bad[0]})"
            self.alerts.raise_alert(
                Finding("non_finite", "critical", f"{self._skip_update}: update skipped", "grad", None, None,
                        "inspect the newest groups and rewards; lower the learning rate; then resume", "alert"),
                self.step_now + 1,
            )
        if self._skip_update:
            for prm in model.parameters():
                prm.grad = None  # AdamW skips parameters without a gradient: no update at all

    _skip_update: str | None = None

    # ---- actions the controller asks for -------------------------------------
    def apply_params(self, changes: dict[str, Any]) -> dict[str, Any]:
        """Apply validated live changes at a step boundary (see APPLY below: one entry per
        parameter of `backend.protocol.params.PARAMS`)."""
        for key, value in changes.items():
            APPLY[key](self, value)
        return dict(changes)

    def sync_weights(self, *, verify: bool, reason: str) -> float:
        """Push the policy's weights into the engine; verify with a greedy canary when asked."""
        t0 = time.perf_counter()
        tensors = weight_sync.state_tensors(self.model, self.dtype)  # float32 master -> the engine's dtype
        checksum, _ = weight_sync.fingerprint(tensors)
        version = self.c.weight_version + 1
        report = self._push_with_deadline(tensors, version, checksum)
        verified, detail = None, ""
        if verify:
            verified, detail = self.verify_canary()
        self.c.weight_version = version
        self._synced_step = self.step_now if self.trainer is not None else -1
        self._syncs += 1
        duration = time.perf_counter() - t0
        if verified is False:
            raise EngineError(f"weight sync v{version} not applied: {detail}")
        self.c.emit(
            E.WeightsSynced(
                version=version,
                step=self.c.step,
                duration_s=duration,
                bytes=report.bytes,
                checksum=checksum,
                verified=bool(verified),
                method=report.method + ("" if verify else " (not canary-checked this time)"),
                detail=f"{reason}; load {report.duration_s * 1000:.1f} ms"
                + (f" ({report.detail})" if report.detail else "") + (f"; {detail}" if detail else ""),
            )
        )
        return duration

    def _push_with_deadline(self, tensors, version: int, checksum: str):
        """A sync past `engine.sync_deadline_s` raises (and alerts) instead of hanging the run."""
        import concurrent.futures

        if self._sync_pool is None:  # one long-lived thread: per-sync threads cost ~100 ms on CUDA
            self._sync_pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="rlc-sync")
        deadline = self.profile.engine.sync_deadline_s
        future = self._sync_pool.submit(self.engine.push_weights, tensors, version, checksum)
        try:
            report = future.result(timeout=deadline)
        except concurrent.futures.TimeoutError:
            self._sync_pool = None  # abandon the stuck thread; a later sync gets a fresh one
            msg = f"weight sync v{version} still running after its {deadline:g} s deadline"
            self.alerts.raise_alert(Finding("sync_deadline", "critical", msg, "sync_s", None, deadline,
                                            "check the engine (backend.log); resume from the last checkpoint", "alert"), self.step_now)
            raise EngineError(msg) from None
        if self.engine.weight_version() != version:
            self.alerts.raise_alert(Finding("engine_stale", "critical",
                                            f"engine reports weight version {self.engine.weight_version()}, trainer pushed {version}",
                                            "weight_version", float(self.engine.weight_version()), float(version),
                                            "resync weights (w)", "pause"), self.step_now)
        return report

    def verify_canary(self) -> tuple[bool, str]:
        """The engine's log-probs of the canary sequences must match the trainer's new weights
        within the calibrated noise (see `backend.engine.canary`).

        Greedy text is a weak check on a flat, barely trained policy (near-ties flip the
        argmax between kernels); per-token log-probs compare every weight's effect.
        """
        verdict = self.canary.judge(self.engine.prompt_logprobs(self.canary_seqs), self.trainer_logprobs(self.canary_seqs))
        return verdict.ok, verdict.detail

    def trainer_logprobs(self, sequences: list[list[int]]) -> list[list[float]]:
        """The trainer model's log-prob of each token of `sequences` given its prefix (from the 2nd on)."""
        import torch

        device = next(self.model.parameters()).device
        was_training = self.model.training
        self.model.eval()
        out = []
        with torch.no_grad():
            for seq in sequences:
                inp = torch.tensor([seq], device=device)
                logits = self.model(input_ids=inp).logits[0, :-1].float()
                out.append(torch.log_softmax(logits, dim=-1).gather(1, inp[0, 1:, None])[:, 0].tolist())
        if was_training:
            self.model.train()
        return out

    def checkpoint(self, reason: str = "on demand") -> None:
        """TRL's full checkpoint (weights, optimizer, scheduler, RNG, data position) + resume metadata."""
        if self.trainer is None:
            return
        t0 = time.perf_counter()
        self.trainer._save_checkpoint(self.trainer.model, trial=None)
        gs = self.trainer.state.global_step
        checksum, _ = weight_sync.fingerprint(weight_sync.state_tensors(self.model))
        point = checkpoints.ResumePoint(
            path=self.checkpoint_root / f"checkpoint-{gs}", step=self.c.step, global_step=gs, step_offset=self._step_offset,
            weight_version=self.c.weight_version, params=dict(self.c.params), checksum=checksum, reason=reason,
            fingerprint=weight_sync.FINGERPRINT_VERSION,
        )
        path = checkpoints.finish(point.path, point, self.profile.run.keep_checkpoints)
        self.c.emit(E.CheckpointSaved(step=self.c.step, path=str(path), duration_s=time.perf_counter() - t0))

    def close(self) -> None:
        if self.gpu is not None:
            self.gpu.stop()
        if self.engine is not None:
            try:
                self.engine.shutdown()
            except Exception:
                pass


def _next_rollout(session: TrainingSession, value: Any) -> None:
    """Sampling parameters are read from the live params when the next rollout is built."""


def _set_temperature(session: TrainingSession, value: float) -> None:
    set_loss_temperature(session.trainer, value)  # the loss's log-probs follow the sampling temperature


def _set_max_tokens(session: TrainingSession, value: int) -> None:
    session.trainer.max_completion_length = value
    session.trainer.args.max_completion_length = value


def _set_group_size(session: TrainingSession, value: int) -> None:
    if value != session.c.params["num_generations"]:
        session._pending_restart = True  # TRL builds G into its sampler: train() starts again at the boundary


def _set_beta(session: TrainingSession, value: float) -> None:
    session.trainer.beta = value
    session.trainer.args.beta = value


#: how each live parameter takes effect at a step boundary (`backend.protocol.params.PARAMS`)
APPLY: dict[str, Any] = {
    "temperature": _set_temperature,
    "top_p": _next_rollout,
    "top_k": _next_rollout,
    "max_tokens": _set_max_tokens,
    "num_generations": _set_group_size,
    "learning_rate": lambda session, value: set_learning_rate(session.trainer, value),
    "beta": _set_beta,
}


def _clean(x: Any) -> float | None:
    if x is None:
        return None
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _count(model) -> int:
    return sum(p.numel() for p in model.parameters())
