"""`HostedEngine`: the whole engine in a child process of its own (engine.core = "own_process").

The child runs `LocalVLLMEngine` exactly as a run runs it in-process (vLLM's front end and its
engine core both there); this object is its client, with the same calls (`RolloutEngine`).

Why a process of its own: with `training.overlap` the next step's rollout generates while the
trainer runs this step's update. Driven from a thread of the trainer's process, vLLM's front end
(per engine step: the requests' bookkeeping, their outputs) takes the trainer's interpreter from
TRL's update, whose Python launches the GPU's work; in a process of its own it takes nothing from
it (`bench/overlap_contention.py`).

Calls go one at a time over a pipe (the engine serves one request at a time anyway). Weights:
on CUDA by CUDA IPC (`weight_sync.share_payload`): a mirror's tensors are mapped in the child at
its first push and kept, each later push of that mirror sends only its id and the child copies
from the mapped tensors; on CPU by value (the tensors pickled), fingerprinted where they arrive.
The child ends when this object shuts it down, when its pipe closes, or when this process dies;
it ignores SIGINT, SIGTERM and SIGHUP sent to the process group (this process handles those).
"""

from __future__ import annotations

import io
import logging
import multiprocessing
import os
import signal
import threading
import time
import uuid
import weakref
from typing import Any

from backend.engine.base import EngineError, EngineInfo, GeneratedCompletion, Sampling, SyncReport
from backend.engine.options import EngineOptions

log = logging.getLogger("backend.engine")

START_TIMEOUT_S = 1800.0  # engine start: minutes on a GPU (compile, CUDA graphs); the child's death ends the wait sooner
SHUTDOWN_TIMEOUT_S = 60.0


class HostedEngine:
    """`LocalVLLMEngine` in a child process (see the module's doc)."""

    own_process = True

    def __init__(self, model_path: str, options: EngineOptions | None = None) -> None:
        o = self.options = options or EngineOptions(own_process=True)
        ctx = multiprocessing.get_context("spawn")  # never fork a process that may hold CUDA state
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_serve, args=(child, str(model_path), o.model_dump_json(), os.getpid()),
                                 name="rlc-engine", daemon=False)
        self._lock = threading.Lock()
        self._dead: str | None = None
        self._paused = False
        self._version = 0
        self._shared: tuple[object, str] | None = None  # (PushList token, its id in the child) once mapped there
        self.verify_received = o.verify_received
        self._proc.start()
        child.close()
        self._finalizer = weakref.finalize(self, _stop, self._proc, self._conn, self._lock)
        try:
            kind, ready = self._recv("the engine's start", START_TIMEOUT_S)
        except BaseException:  # it died, or this side gave up (a timeout, Ctrl-C): a half-started engine serves no one
            self._proc.kill()
            self._proc.join(10)
            self._finalizer()
            raise
        if kind != "ready":
            self._finalizer()
            raise EngineError(ready)
        info: EngineInfo = ready["info"]
        self.info = EngineInfo(name=info.name.replace("(local, in-process)", "(local, in its own process)"),
                               device=info.device, replicas=info.replicas, extra={**info.extra, "pid": ready["pid"]})
        self.sync_methods: list[str] = ready["sync_methods"]
        self._sync_method: str = ready["sync_method"]
        self.can_pause_engine: bool = ready["can_pause_engine"]
        self.pid: int = ready["pid"]

    # ---- calls ----------------------------------------------------------
    def _recv(self, what: str, timeout_s: float | None) -> tuple[str, Any]:
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while not self._conn.poll(0.5):
            if not self._proc.is_alive():
                raise self._gone(f"during {what}")
            if deadline is not None and time.monotonic() > deadline:
                raise EngineError(f"the engine process did not answer {what} within {timeout_s:.0f} s")
        try:
            return self._conn.recv()
        except (EOFError, OSError) as exc:
            raise self._gone(f"during {what}", exc) from exc

    def _gone(self, when: str, exc: BaseException | None = None) -> EngineError:
        """The child died (its exit code says how: -9 = killed) or closed the pipe."""
        self._proc.join(2.0)
        code = self._proc.exitcode
        self._dead = (f"the engine process exited (code {code}) {when}" if code is not None
                      else f"the engine process closed its pipe {when} ({type(exc).__name__})")
        return EngineError(self._dead)

    def _call(self, method: str, *args: Any) -> Any:
        if self._dead:
            raise EngineError(f"engine is dead: {self._dead}")
        with self._lock:
            try:
                self._conn.send((method, args))
            except (BrokenPipeError, OSError) as exc:
                raise self._gone(f"before {method}", exc) from exc
            kind, value = self._recv(method, None)
        if kind == "ok":
            return value
        message, dead = value
        if dead:
            self._dead = dead
        raise EngineError(message)

    def generate(self, prompt_ids: list[list[int]], sampling: Sampling) -> list[list[GeneratedCompletion]]:
        return self._call("generate", prompt_ids, sampling)

    def greedy(self, prompt_ids: list[list[int]], max_tokens: int) -> list[list[int]]:
        return self._call("greedy", prompt_ids, max_tokens)

    def prompt_logprobs(self, sequences: list[list[int]]) -> list[list[float]]:
        return self._call("prompt_logprobs", sequences)

    @property
    def last_sampling_params(self) -> Any:
        """Exactly what vLLM was last asked for (the first prompt's `SamplingParams`)."""
        return self._call("last_sampling_params")

    @property
    def sync_method(self) -> str:
        return self._sync_method

    @sync_method.setter
    def sync_method(self, method: str) -> None:
        self._sync_method = self._call("set_sync_method", method)

    def collective_rpc(self, fn: Any, args: tuple = ()) -> list[Any]:
        """vLLM's `collective_rpc` in the child (`fn` must pickle by reference: a module-level function)."""
        return self._call("collective_rpc", fn, args)

    # ---- weights --------------------------------------------------------
    def push_weights(self, named_tensors: list[tuple[str, Any]], version: int, checksum: str) -> SyncReport:
        t0 = time.perf_counter()
        nbytes = sum(t.nbytes for _, t in named_tensors)
        if named_tensors and named_tensors[0][1].is_cuda:
            report = self._push_shared(named_tensors, version, checksum, nbytes)
        else:  # CPU: by value; the child fingerprints what arrived
            import torch

            buf = io.BytesIO()
            torch.save([(name, t.detach()) for name, t in named_tensors], buf)
            report = self._call("push_bytes", buf.getvalue(), version, checksum)
        self._version = version
        report.duration_s = time.perf_counter() - t0  # the crossing included
        return report

    def _push_shared(self, named_tensors, version: int, checksum: str, nbytes: int) -> SyncReport:
        """CUDA IPC. A mirror (`PushList`, the same storage every push) is mapped in the child
        once; its later pushes send only its id. The child fingerprints what it mapped at that
        first push (and at every push with verify_received)."""
        import torch

        from backend.engine import weight_sync

        torch.cuda.synchronize()  # the mirror's refresh must be done before another process reads it
        token = getattr(named_tensors, "token", None) if getattr(named_tensors, "stable", False) else None
        if token is not None and self._shared is not None and self._shared[0] is token:
            share_id, payload = self._shared[1], None
        else:
            payload = weight_sync.share_payload(named_tensors)
            share_id = uuid.uuid4().hex if token is not None else ""
        try:
            report = self._call("push_shared", share_id, payload, version, checksum, nbytes,
                                self.verify_received or payload is not None)
            if report is None:  # the child lost the mapping (it cannot, short of a restart): map again
                payload = weight_sync.share_payload(named_tensors)
                report = self._call("push_shared", share_id, payload, version, checksum, nbytes, True)
        finally:
            # the child mapped it even when it then refused the push (a checksum mismatch); were it
            # not mapped after all, the next push's id-only call gets NOT_MAPPED and sends it again
            if token is not None:
                self._shared = (token, share_id)
        return report

    def weight_version(self) -> int:
        return self._version

    # ---- control --------------------------------------------------------
    def pause(self) -> None:
        self._paused = True
        if self.can_pause_engine:
            self._call("pause")

    def resume(self) -> None:
        self._paused = False
        if self.can_pause_engine:
            self._call("resume")

    @property
    def paused(self) -> bool:
        return self._paused

    def health(self) -> str | None:
        if self._dead is None and not self._proc.is_alive():
            self._dead = f"the engine process exited (code {self._proc.exitcode})"
        return self._dead

    def shutdown(self) -> None:
        if self._dead == "shut down":
            return
        self._dead = "shut down"
        self._finalizer()


def _stop(proc: Any, conn: Any, lock: Any) -> None:
    """Ask the child to shut its engine down, then make sure it is gone. A call still in flight
    on another thread (a failure path) is not waited for long: the child is then ended."""
    idle = lock.acquire(timeout=5.0)
    try:
        if idle and proc.is_alive():
            conn.send(("shutdown", ()))
            if conn.poll(SHUTDOWN_TIMEOUT_S):
                conn.recv()
    except (EOFError, OSError):
        pass
    finally:
        if idle:
            lock.release()
    proc.join(10 if idle else 0.1)
    if proc.is_alive():
        log.warning("the engine process (pid %s) did not exit when asked; killing it", proc.pid)
        proc.kill()
        proc.join(10)
    conn.close()


# ---- the child ------------------------------------------------------------
def _watch_parent(parent_pid: int) -> None:
    """End this process when the one that started it is gone (its engine would serve no one)."""
    while True:
        time.sleep(2.0)
        if os.getppid() != parent_pid:
            os._exit(3)


def _serve(conn: Any, model_path: str, options_json: str, parent_pid: int) -> None:
    # the trainer's process decides when this one ends: a Ctrl-C or SIGTERM sent to the whole
    # process group (a terminal, a job scheduler) is the trainer's to handle, with a clean stop at
    # the step boundary that may still need the engine; a closed SSH session (SIGHUP) never stops a run
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    threading.Thread(target=_watch_parent, args=(parent_pid,), daemon=True, name="rlc-engine-parent").start()
    from backend.engine.local import LocalVLLMEngine

    # verify_received: weights pushed by value crossed a process boundary, so the worker checks what
    # arrived (CUDA IPC pushes say per call whether to check: `push_shared`'s `verify`)
    options = EngineOptions.model_validate_json(options_json).model_copy(update={"own_process": False, "verify_received": True})
    try:
        engine = LocalVLLMEngine(model_path, options)
    except BaseException as exc:  # noqa: BLE001 - the parent raises it; this process ends
        conn.send(("error", str(exc) if isinstance(exc, EngineError) else f"{type(exc).__name__}: {exc}"))
        _exit(1)
    conn.send(("ready", {"info": engine.info, "sync_methods": engine.sync_methods, "sync_method": engine.sync_method,
                         "can_pause_engine": engine.can_pause_engine, "pid": os.getpid()}))
    while True:
        try:
            method, args = conn.recv()
        except (EOFError, OSError):  # the parent closed its end: nothing more to serve
            break
        if method == "shutdown":
            engine.shutdown()
            conn.send(("ok", None))
            break
        try:
            value = _HANDLERS[method](engine, *args)
        except BaseException as exc:  # noqa: BLE001 - every failure goes back to the caller
            message = str(exc) if isinstance(exc, EngineError) else f"{type(exc).__name__}: {exc}"
            conn.send(("error", (message, engine.health())))
            continue
        conn.send(("ok", value))
    _exit(0)


def _exit(code: int) -> None:
    """End the child now: vLLM's threads must not keep a finished engine's process alive."""
    import sys

    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001 - a closed stream: nothing to flush
            pass
    os._exit(code)


def _push_bytes(engine: Any, data: bytes, version: int, checksum: str) -> SyncReport:
    import torch

    return engine.push_weights(torch.load(io.BytesIO(data), weights_only=True), version, checksum)


def _set_sync_method(engine: Any, method: str) -> str:
    engine.sync_method = method
    return engine.sync_method


_HANDLERS = {
    "generate": lambda e, ids, sampling: e.generate(ids, sampling),
    "greedy": lambda e, ids, max_tokens: e.greedy(ids, max_tokens),
    "prompt_logprobs": lambda e, seqs: e.prompt_logprobs(seqs),
    "last_sampling_params": lambda e: e.last_sampling_params,
    "set_sync_method": _set_sync_method,
    "collective_rpc": lambda e, fn, args: e.llm.collective_rpc(fn, args=args),
    "push_bytes": _push_bytes,
    "push_shared": lambda e, *args: e.push_shared(*args),
    "pause": lambda e: e.pause(),
    "resume": lambda e: e.resume(),
}
