"""The console must never pull in the training stack (DESIGN.md convention 2)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

HEAVY = ("torch", "vllm", "trl", "ray", "transformers")
ROOT = Path(__file__).resolve().parents[2]


def test_console_app_imports_no_training_stack():
    code = (
        "import json, sys\n"
        "import console.app\n"
        "from console.app import RLConsoleApp\n"
        f"heavy = {HEAVY!r}\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in heavy)\n"
        "print(json.dumps({'loaded': loaded, 'app': RLConsoleApp.__module__}))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["app"] == "console.app"
    assert report["loaded"] == [], f"console.app pulled in: {report['loaded']}"


def test_console_sources_import_only_protocol_from_backend():
    offenders = []
    for path in (ROOT / "console").rglob("*.py"):
        for line in path.read_text().splitlines():
            stripped = line.strip()
            if stripped.startswith(("import backend", "from backend")) and not stripped.startswith(
                ("from backend.protocol", "import backend.protocol")
            ):
                offenders.append(f"{path.relative_to(ROOT)}: {stripped}")
    assert offenders == []
