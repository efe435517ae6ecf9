"""TrainingSession: how a GRPO run's live objects are built and used (engine, policy, TRL
trainer, canary, checkpoints). It knows how; the step loop (`backend.training.step`) knows
when, and owns the step counter, the weight version and the live parameters, which come in
as arguments. The session never reaches up: it gets the bus to record facts on.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from backend.engine import weight_sync
from backend.engine.canary import Canary, pick_sequences
from backend.engine.base import Sampling
from backend.protocol import events as E
from backend.telemetry.gpu import GpuPoller
from backend.training import checkpoints, factory, trl_compat
from backend.training.data import ROWS_CHECKED
from backend.training.rewards import RewardRecorder
from backend.training.trainer import RolloutFunc, make_callback, make_trainer_class
from backend.training.watchdog import Watchdog

CANARY_PROMPTS = 8
CANARY_TOKENS = 32


class TiedHeadNotice(logging.Filter):
    """Drops transformers' "There were missing keys in the checkpoint model loaded:
    ['lm_head.weight']" on a resume: a model whose head is tied to its embeddings saves no
    head, and the Trainer re-ties it. Harmless, and alarming in backend.log; the resume has
    already checked the loaded weights (a missing untied head stops it, and the checksum of
    every tensor must match the checkpoint's, `_load_resume_weights`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        return not (msg.startswith("There were missing keys in the checkpoint model loaded")
                    and msg.rstrip(". ").endswith("['lm_head.weight']"))


@dataclass
class SyncDone:
    """One push of the policy's weights into the engine."""

    report: Any  # the engine's PushReport (bytes, method, load time, detail)
    checksum: str
    duration_s: float
    engine_version: int  # the version the engine reports after the push
    verified: bool | None  # the canary's verdict; None when not checked this time
    canary: str  # the canary's detail


class TrainingSession:
    def __init__(self, profile, bus, *, run_id: str, run_dir, profile_name: str, resume: Any = None) -> None:
        self.profile = profile
        self.emit = bus.emit
        self.run_id, self.profile_name = run_id, profile_name
        self.resume = resume  # checkpoints.ResumePoint when resuming
        self.recorder = RewardRecorder(timeout_s=profile.task.reward_timeout_s)
        self.task = None
        self.engine = None
        self.trainer = None
        self.model = None
        self.tokenizer = None
        self.canary: Canary | None = None
        self.canary_seqs: list[list[int]] = []
        self.gpu: GpuPoller | None = None
        self.max_prompt_tokens = 0
        self.update_shape = None  # host.UpdateShape of a CPU run (`_estimate_first_update`)
        self.first_update_mb: float | None = None
        self.has_ref_model = profile.training.beta > 0
        self._watchdog: Watchdog | None = None  # engine.sync_deadline_s on the push (made on the training thread)
        self.on_sync_hang: Callable[[str], None] | None = None  # the step loop's report of a hung push (then the process ends)
        self._mirror: weight_sync.Mirror | None = None
        self.encoder: RolloutFunc | None = None
        self.checkpoint_root = checkpoints.root_for(profile.run.output_dir, run_dir, run_id)

    def _estimate_first_update(self) -> None:
        """On CPU, what the first update will take of host memory (`host.update_estimate_mb`),
        said now and kept as the memory guard's figure until a step has been measured: a batch
        of long prompts otherwise meets the kernel's OOM killer in the first step, unannounced."""
        from backend.telemetry import host

        p, cfg = self.profile, getattr(self.model, "config", None)
        if self.device != "cpu" or cfg is None:
            return
        cfg = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
        dims = [getattr(cfg, k, None) for k in ("num_hidden_layers", "hidden_size", "intermediate_size", "num_attention_heads", "vocab_size")]
        if not all(isinstance(d, int) and d > 0 for d in dims):
            return
        u = host.UpdateShape(*dims, params=_count(self.model), sequences=p.training.prompts_per_step * p.sampling.num_generations,
                             prompt_tokens=self.max_prompt_tokens, completion_tokens=p.sampling.max_tokens,
                             passes=p.training.micro_batches)
        self.update_shape, self.first_update_mb = u, host.update_estimate_mb(u)
        r = host.read()
        msg = (f"first update: about {host.fmt_mb(self.first_update_mb)} of host memory ({u.passes} pass"
               f"{'es' * (u.passes != 1)} of {u.per_pass()} sequence{'s' * (u.per_pass() != 1)} × up to "
               f"{u.prompt_tokens + u.completion_tokens} tokens; an estimate from the longest prompt)")
        if r is not None:
            msg += f"; {host.fmt_mb(r.available_mb)} available now"
            if not host.next_step_fits(r.available_mb, self.first_update_mb, p.run.min_free_memory_mb):
                fit = host.passes_that_fit(u, r.available_mb, p.run.min_free_memory_mb)
                msg += (" — it may not fit: " + (f"training.micro_batches = {fit[0]} would need about {host.fmt_mb(fit[1])}"
                                                 if fit else "lower sampling.max_tokens or training.prompts_per_step"))
        self.progress("model", msg)

    def progress(self, stage: str, message: str, current: int = 0, total: int = 0) -> None:
        self.emit(E.Progress(stage=stage, message=message, current=current, total=total))

    # ---- setup -------------------------------------------------------------
    def setup(self, hooks, params: dict[str, Any], *, max_steps: int) -> None:
        """Model, task, engine, policy, canary, warm-up and the TRL trainer, with `hooks` (the
        step loop) as the one object TRL calls. Progress is reported as it goes."""
        import torch

        from backend.engine.factory import make_engine
        from backend.engine.local import resolve_device

        p = self.profile
        import transformers

        transformers.utils.logging.disable_progress_bar()  # "Writing model shards" bars at every checkpoint
        trainer_log = logging.getLogger("transformers.trainer")
        if not any(isinstance(f, TiedHeadNotice) for f in trainer_log.filters):
            trainer_log.addFilter(TiedHeadNotice())
        torch.set_num_threads(p.run.num_threads)
        torch.manual_seed(p.run.seed)
        say = lambda msg: self.progress("model", msg)  # noqa: E731
        if p.run.reuse_host_memory:
            from backend.hostmem import reuse_freed_memory

            say(reuse_freed_memory())
        device = resolve_device(p.engine.device)
        dtype = factory.resolve_dtype(p, device)
        model_path, embedded = factory.resolve_model(p, say, dtype)
        self.task = factory.load_task(p, self.recorder)
        if p.task.ground_truth and p.task.ground_truth not in self.task.reward_names:
            raise ValueError(f"task.ground_truth = {p.task.ground_truth!r} is not one of the run's reward functions "
                             f"({', '.join(self.task.reward_names)}); add it to task.reward_funcs (weight 0 to only watch it)")
        self.model_path, self.device, self.dtype = model_path, device, dtype
        # what can be checked before the engine starts (seconds to minutes) is checked now
        from transformers import AutoTokenizer

        self.encoder = RolloutFunc(None, AutoTokenizer.from_pretrained(model_path), None)
        encoded = [self.encode(x) for x in self.task.dataset["prompt"][:ROWS_CHECKED]]
        self.max_prompt_tokens = max(len(x) for x in encoded)
        if empty := [i for i, ids in enumerate(encoded) if not ids]:
            raise ValueError(
                f"the prompt of dataset row {empty[0]} encodes to no tokens"
                + (f" (and {len(empty) - 1} more row(s))" if len(empty) > 1 else "")
                + ": the model's tokenizer knows none of its characters (vLLM refuses an empty prompt); "
                "drop those rows or use a model whose tokenizer covers them")
        if self.max_prompt_tokens + p.sampling.max_tokens > p.engine.max_model_len:
            row = max(range(len(encoded)), key=lambda i: len(encoded[i]))
            need = self.max_prompt_tokens + p.sampling.max_tokens
            lower = " or lower sampling.max_tokens" if self.max_prompt_tokens < p.engine.max_model_len else ""
            raise ValueError(
                f"longest prompt ({self.max_prompt_tokens} tokens) + sampling.max_tokens ({p.sampling.max_tokens}) "
                f"exceeds engine.max_model_len ({p.engine.max_model_len}): it is dataset row {row}; raise "
                f"engine.max_model_len to at least {need}{lower}, or shorten or drop the longest rows"
            )

        self.progress("engine", f"starting vLLM ({p.engine.backend}, {device}, {dtype}) — first start compiles kernels, ~10-60 s")
        t0 = time.perf_counter()
        self.engine = make_engine(p, model_path, device, dtype)
        self.progress("engine", f"engine ready in {time.perf_counter() - t0:.1f} s: {self.engine.info.name}; compiling sampling kernels")
        self.engine.generate([[1, 2]], Sampling(n=2, temperature=1.0, top_p=1.0, top_k=-1, max_tokens=2, seed=0))
        self.engine.prompt_logprobs([[1, 2, 3]])

        self.progress("model", "loading the policy into the trainer")
        self.model, self.tokenizer = factory.load_policy(model_path, p.training.policy_dtype, device)
        self._estimate_first_update()
        # canary: the tails of a few real prompts as fixed sequences, its noise floor measured
        # now, while engine and trainer hold the same weights (before warm-up or resume)
        e = p.engine
        self.canary = Canary(pick_sequences(encoded, CANARY_PROMPTS, min(CANARY_TOKENS, e.max_model_len - 1)),
                             tolerance=e.canary_tolerance, noise_factor=e.canary_noise_factor, max_noise=e.canary_max_noise)
        self.canary_seqs = self.canary.sequences
        self.progress("engine", self.canary.calibrate(self.engine.prompt_logprobs(self.canary_seqs), self.trainer_logprobs(self.canary_seqs)))
        if self.resume is not None:
            self._load_resume_weights()

        self.emit(
            E.RunStarted(
                run_id=self.run_id,
                profile=self.profile_name,
                profile_data=p.model_dump(mode="json"),
                model=model_path if not embedded else f"embedded tiny Qwen2 ({_count(self.model)/1e3:.0f}k params)",
                task=p.task.name,
                engine=self.engine.info.name,
                reward_functions=self.task.reward_names,
                reward_weights=list(self.task.reward_weights),
                max_prompt_tokens=self.max_prompt_tokens,
                reward_ranges=list(self.task.reward_ranges),
                params=dict(params),
                pid=os.getpid(),
            )
        )
        self.gpu = GpuPoller(self.emit, hz=p.telemetry.gpu_poll_hz, remote=getattr(self.engine, "node_stats", None))
        self.gpu.start()

        if embedded and self.task.embedded and p.task.warmup_steps and self.resume is None:
            n = p.task.warmup_steps
            self.progress("warmup", f"supervised warm-up: {n} steps on correct examples", 0, n)
            factory.supervised_warmup(
                self.model, self.tokenizer, n, p.task.warmup_learning_rate, p.run.seed,
                lambda i, loss: self.progress("warmup", f"warm-up step {i}/{n}, loss {loss:.3f}", i, n),
                correct_fraction=p.task.warmup_correct_fraction,
            )
        self.progress("trainer", "building the TRL GRPO trainer")
        self._build_trainer(hooks, max_steps)

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
        if r.fingerprint not in weight_sync.FINGERPRINTS:
            raise ValueError(f"{r.path}: its checksum is of fingerprint version {r.fingerprint}, which this rl-console does not know; "
                             "resume it with the rl-console that wrote it")
        fp = getattr(weight_sync, weight_sync.FINGERPRINTS[r.fingerprint])
        checksum, _ = fp(weight_sync.state_tensors(self.model))
        if checksum != r.checksum:
            raise ValueError(f"{r.path}: loaded weights have checksum {checksum}, the checkpoint recorded {r.checksum}")
        self.progress("model", f"loaded step {r.step} weights from {r.path} (checksum {checksum} verified)")

    def _build_trainer(self, hooks, max_steps: int) -> None:
        trl_compat.check()  # a TRL without what the hooks need stops here, named, not mid-run
        trl_compat.fit_logprob_tile(self.model.get_output_embeddings().weight.shape[0])
        p = self.profile
        args = factory.grpo_config(p, self.checkpoint_root, self.device, self.task.reward_weights, max_steps)
        cls = make_trainer_class()
        if getattr(args, "torch_compile", False):
            compiled = factory.compile_once_settings()  # before the trainer builds its Accelerator
        self.trainer = cls(
            model=self.model,
            reward_funcs=self.task.reward_funcs,
            args=args,
            train_dataset=self.task.dataset,
            processing_class=self.tokenizer,
            rollout_func=RolloutFunc(self.engine, self.tokenizer, hooks),
            callbacks=[make_callback(hooks)],
        )
        self.trainer.rlc_hooks = hooks
        from transformers.trainer_callback import PrinterCallback, ProgressCallback

        self.trainer.remove_callback(PrinterCallback)  # the console prints its own lines
        self.trainer.remove_callback(ProgressCallback)
        if getattr(args, "torch_compile", False):
            self.progress("trainer", factory.compile_note(compiled, resumed=self.resume is not None))

    # ---- what the step loop asks for -------------------------------------------
    def encode(self, prompt: Any) -> list[int]:
        """Token ids of a prompt as the rollouts encode it (chat template for messages)."""
        return self.encoder.encode(prompt)

    def decode_token(self, token_id: int) -> str:
        return self.tokenizer.decode([token_id])

    @property
    def conversational(self) -> bool:
        """Whether the task's prompts are chat messages (an operator's prompt becomes a user message)."""
        return bool(self.task is not None and len(self.task.dataset) and isinstance(self.task.dataset[0]["prompt"], list))

    def probe_rows(self) -> list[Any]:
        from backend.training.probes import probe_rows

        t = self.profile.telemetry
        return probe_rows(self.task.dataset, t.probes, t.probe_prompts)

    @property
    def can_restart_engine(self) -> bool:
        """Ray engines restart dead replicas; an in-process engine that died takes the run with it."""
        return hasattr(self.engine, "restart_dead")

    def push_weights(self, version: int, *, verify: bool) -> SyncDone:
        """Push the policy's weights into the engine as `version`; check them with the canary when
        asked. A push past `engine.sync_deadline_s` raises TimeoutError instead of hanging."""
        mirror = self._push_mirror()
        if mirror is not None:
            import torch

            torch.cuda.synchronize(self.model.device)  # the update's queued kernels are the update's time, not the sync's
        t0 = time.perf_counter()
        if mirror is not None:
            tensors = mirror.refresh()
            checksum, _ = mirror.fingerprint()
        else:
            tensors = weight_sync.state_tensors(self.model, self.dtype)  # float32 master -> the engine's dtype
            checksum, _ = weight_sync.fingerprint(tensors)
        report = self._push_with_deadline(tensors, version, checksum)
        verified, detail = self.verify_canary() if verify else (None, "")
        return SyncDone(report=report, checksum=checksum, duration_s=time.perf_counter() - t0,
                        engine_version=self.engine.weight_version(), verified=verified, canary=detail)

    def _push_mirror(self):
        """The policy's persistent copy in the engine's dtype (`weight_sync.Mirror`), for a CUDA
        policy pushing into a local engine (in this process, or hosted in its own, which maps the
        mirror once by CUDA IPC), which has copied the tensors when its push returns; None
        otherwise (each push casts into fresh tensors). Rebuilt when a parameter's storage changed."""
        from backend.engine.hosted import HostedEngine
        from backend.engine.local import LocalVLLMEngine

        if not (getattr(self.model, "device", None) is not None and self.model.device.type == "cuda"
                and isinstance(self.engine, (LocalVLLMEngine, HostedEngine))):
            return None
        if self._mirror is None or not self._mirror.valid():
            self._mirror = weight_sync.Mirror(self.model, self.dtype)
        return self._mirror

    def _push_with_deadline(self, tensors, version: int, checksum: str):
        """The push, on this (the training) thread, under `engine.sync_deadline_s`: one that
        returns late raises TimeoutError here; one that hangs is caught by the watchdog, which
        reports it through `on_sync_hang` and ends the process (a hung engine cannot be
        abandoned from inside: it holds the training thread)."""
        deadline = self.profile.engine.sync_deadline_s
        if not deadline:  # no deadline: a hung engine hangs the step
            return self.engine.push_weights(tensors, version, checksum)
        if self._watchdog is None:
            self._watchdog = Watchdog(self._sync_hung)
        t0 = time.monotonic()
        with self._watchdog.guard(deadline, f"weight sync v{version}"):
            report = self.engine.push_weights(tensors, version, checksum)
        took = time.monotonic() - t0
        if took > deadline:
            raise TimeoutError(f"weight sync v{version} took {took:.3g} s, past its {deadline:g} s deadline")
        return report

    def _sync_hung(self, what: str, seconds: float) -> None:
        message = (f"{what} still running after {seconds:.3g} s, past its {self.profile.engine.sync_deadline_s:g} s "
                   "deadline (engine.sync_deadline_s): the engine is stuck")
        if self.on_sync_hang is not None:
            self.on_sync_hang(message)
        else:
            print(f"rl-console: {message}", file=sys.stderr, flush=True)
            os._exit(3)

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

    def checkpoint(self, *, step: int, step_offset: int, weight_version: int, params: dict[str, Any], reason: str) -> None:
        """TRL's full checkpoint (weights, optimizer, scheduler, RNG, data position) + resume metadata."""
        if self.trainer is None:
            return
        t0 = time.perf_counter()
        gs = trl_compat.save_checkpoint(self.trainer)
        checksum, _ = weight_sync.fingerprint(weight_sync.state_tensors(self.model))
        point = checkpoints.ResumePoint(
            path=self.checkpoint_root / f"checkpoint-{gs}", step=step, global_step=gs, step_offset=step_offset,
            weight_version=weight_version, params=dict(params), checksum=checksum, reason=reason,
            fingerprint=weight_sync.FINGERPRINT_VERSION,
        )
        path = checkpoints.finish(point.path, point, self.profile.run.keep_checkpoints)
        self.emit(E.CheckpointSaved(step=step, path=str(path), duration_s=time.perf_counter() - t0))


    def close(self) -> None:
        if self.gpu is not None:
            self.gpu.stop()
        if self._watchdog is not None:
            self._watchdog.stop()
        if self.engine is not None:
            try:
                self.engine.shutdown()
            except Exception:
                pass


def _count(model) -> int:
    return sum(p.numel() for p in model.parameters())
