import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_backend_and_console_resolve_to_this_project():
    """`backend` and `console` are also names of unrelated PyPI projects: make sure a fresh
    interpreter in this venv imports ours (the installed distribution, not a stray one)."""
    code = "import backend, console, console.cli, backend.protocol; print(backend.__file__); print(console.__file__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd="/").stdout.split()
    assert Path(out[0]).resolve() == ROOT / "backend" / "__init__.py"
    assert Path(out[1]).resolve() == ROOT / "console" / "__init__.py"
    from importlib.metadata import distribution

    assert distribution("rl-console").entry_points.select(group="console_scripts")["rl-console"].value == "console.cli:main"
