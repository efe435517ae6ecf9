"""The code passes the project's linter (ruff, configured in pyproject.toml; installed with the
dev extra), so CI runs it with the suite."""

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_ruff_finds_nothing():
    ruff = Path(sys.executable).with_name("ruff")
    exe = str(ruff) if ruff.exists() else shutil.which("ruff")
    assert exe, "ruff is not installed: install the dev extra (bash scripts/setup.sh --dev)"
    out = subprocess.run([exe, "check", "--output-format", "concise", "."], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]


def test_mypy_passes_on_the_typed_core():
    """The protocol, the bus, the step seam and the desk type-check ([tool.mypy] files)."""
    mypy = Path(sys.executable).with_name("mypy")
    exe = str(mypy) if mypy.exists() else shutil.which("mypy")
    assert exe, "mypy is not installed: install the dev extra (bash scripts/setup.sh --dev)"
    out = subprocess.run([exe], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]


def test_no_two_test_modules_share_a_name():
    """tests/ has no per-directory packages (a `tests/console` package would shadow the real
    `console`), so two test files with one basename stop the collection of the whole suite."""
    names: dict[str, list[str]] = {}
    for f in (ROOT / "tests").rglob("test_*.py"):
        names.setdefault(f.name, []).append(str(f.relative_to(ROOT)))
    assert not {n: fs for n, fs in names.items() if len(fs) > 1}
