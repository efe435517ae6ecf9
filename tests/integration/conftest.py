"""Real runs that several test files only read: made once per session, on the session's data dir.

Each costs an engine start (~15-25 s on the 2-core CPU box); the tests that read them assert
the same things as when each made its own."""

import subprocess
import sys
import time
from dataclasses import dataclass

import pytest

from backend.protocol import decode_event
from tests.conftest import backend_env

RLC = [sys.executable, "-m", "console.cli"]
SMALL = ["--set", "training.prompts_per_step=2", "--set", "task.warmup_steps=0"]
# the synchronous reference of tests/integration/test_resume.py and test_overlap.py: same seed,
# 9 steps, a checkpoint every 3 (all 9 steps are inside the default 15-step warm-up)
REFERENCE = ["--max-steps", "9", "--set", "run.checkpoint_every=3", "--set", "training.prompts_per_step=4"]


@pytest.fixture(scope="session")
def finished_compare_run(rlc_home) -> str:
    """A short finished run at temperature 0.5 (3 steps), the `B` of the compare tests."""
    out = subprocess.run(RLC + ["run", "--headless", "--max-steps", "3", "--set", "sampling.temperature=0.5"] + SMALL,
                         env=backend_env(rlc_home), capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return next(line.split()[1].rstrip(":") for line in out.stdout.splitlines() if line.startswith("run "))


@dataclass(frozen=True)
class SyncReference:
    args: list[str]  # `backend run` arguments after `--headless --json --run-id ID`
    prompts: dict[int, list[str]]  # step -> the prompts the run trained that step on


@pytest.fixture(scope="session")
def sync_reference(rlc_home) -> SyncReference:
    """An uninterrupted synchronous run of REFERENCE."""
    run_id = f"sync-ref-{str(time.time_ns())[-8:]}"
    ref = subprocess.run([sys.executable, "-m", "backend", "run", "--headless", "--json", "--run-id", run_id, *REFERENCE],
                         env=backend_env(rlc_home), capture_output=True, text=True, timeout=300)
    assert ref.returncode == 0, ref.stderr[-3000:]
    out: dict[int, list[str]] = {}
    for line in ref.stdout.splitlines():
        if line.startswith("{") and (e := decode_event(line)).kind == "sample_group":
            out.setdefault(e.step, []).append(e.prompt)
    assert sorted(out) == list(range(1, 10))
    assert len({tuple(v) for v in out.values()}) == 9, "steps must see different prompts for the check to mean anything"
    return SyncReference(list(REFERENCE), out)
