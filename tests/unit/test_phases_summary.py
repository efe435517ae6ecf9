"""bench/phases.py --summary: per timed call, its count and median wall and CPU milliseconds,
the first calls (start-up) left out where there are enough."""

import json
import subprocess
import sys

from tests.conftest import ROOT


def test_summary_prints_medians_without_the_start_up_calls(tmp_path):
    calls = {
        # 5 slow start-up calls, then 7 of 10 ms wall / 4 ms CPU and 4 of 30 / 20
        "console boundary": [[0, 1.0, 1.0, 0]] * 5 + [[0, 0.010, 0.004, 0]] * 7 + [[0, 0.030, 0.020, 0]] * 4,
        "generate": [[0, 0.002, 0.001, 8], [0, 0.004, 0.003, 8]],  # too few to drop any
    }
    path = tmp_path / "phases.json"
    path.write_text(json.dumps(calls))
    out = subprocess.run([sys.executable, str(ROOT / "bench/phases.py"), "--summary", str(path)],
                         capture_output=True, text=True, check=True).stdout.splitlines()
    rows = {line[:32].strip(): line[32:].split() for line in out[1:]}
    assert rows["console boundary"] == ["11", "10.00", "4.00"]
    assert rows["generate"] == ["2", "3.00", "2.00"]
