"""A real run of the embedded default on CPU keeps its memory from step to step: after the
warm-up a step faults in almost no fresh pages (glibc's thresholds fixed by `backend.hostmem`,
TRL's log-prob tile fitted to the vocabulary by `trl_compat.fit_logprob_tile`). Without them the
same run faulted in 1,800 to 7,200 pages a step, 5-16 ms of kernel time in a ~100 ms step."""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest

from backend.protocol.eventlog import EventLogReader
from tests.conftest import backend_env

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads the process's page faults from /proc")


def _minor_faults(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[7])  # minflt: field 10 of proc(5), counted after the command's name


def test_a_cpu_step_of_the_embedded_default_faults_in_almost_no_fresh_pages(rlc_home):
    steps = 60
    run_id = f"hostmem-{time.time_ns()}"
    proc = subprocess.Popen([sys.executable, "-m", "backend", "run", "--headless", "--run-id", run_id,
                             "--max-steps", str(steps), "--set", "run.checkpoint_every=0"],
                            env=backend_env(rlc_home), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    faults: list[int] = []
    said = []
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("step "):
            faults.append(_minor_faults(proc.pid))
        elif "host allocator" in line:
            said.append(line.strip())
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    assert len(faults) == steps
    per_step = [b - a for a, b in zip(faults[20:], faults[21:])]  # past the warm-up: the shapes settle
    assert any("kept for reuse" in s for s in said), f"the run says what it did to the allocator: {said}"
    # measured: median 11-17 a step, a few hundred on the odd step (1,797 with the tile unfitted;
    # 1,800-7,200 with neither). (A run whose completions still change length every step, e.g. with
    # no supervised warm-up, grows its heap for a while longer: that is not a fresh page per step.)
    # A busy machine (another test's process taking memory) can make the kernel reclaim and re-fault
    # pages for a stretch of steps; the run's own allocations cannot be that: some ten steps in a row
    # must be quiet (a regression faults every step)
    quiet = min(statistics.median(per_step[i:i + 10]) for i in range(len(per_step) - 9))
    assert quiet < 300, per_step

    # the host's memory was reported at every step boundary: what the run held and, from the
    # second on, what the step just ended needed beyond that (its activations, the log-prob tile)
    with EventLogReader(rlc_home / "runs" / run_id / "events.db") as log:
        readings = list(log.read(0, kinds=("host_memory",)))
    assert [r.step for r in readings] == list(range(steps)), [r.step for r in readings]
    # (before step 1 the figure is the start-up estimate of the first update: a CPU run always has one)
    assert all(r.step_need_mb is not None for r in readings) and readings[0].last_step_mb is None
    assert all(0 < r.available_mb <= r.total_mb and r.rss_mb > 100 for r in readings)
    needs = [r.step_need_mb for r in readings]
    assert needs[1] is not None, needs
    # then the memory held between steps is reused (the allocator keeps it): a settled step needs
    # little beyond it, which is why the guard watches the growth and what is left
    assert statistics.median(needs[20:]) < 50, needs
