"""`rl-console replay --help` lists the scrubber's keys, the same the console binds."""

import subprocess
import sys


def test_replay_help_lists_every_scrub_key():
    from console import app

    keys = {"left_square_bracket": "[", "right_square_bracket": "]", "left_curly_bracket": "{",
            "right_curly_bracket": "}", "less_than_sign": "<", "greater_than_sign": ">"}
    bound = [b.key for b in app.RLConsoleApp.BINDINGS if getattr(b, "action", "").startswith("scrub(")]
    assert bound and set(bound) <= set(keys)
    out = subprocess.run([sys.executable, "-m", "console.cli", "replay", "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0
    for key in bound:
        assert f" {keys[key]} " in out.stdout, (key, out.stdout)
