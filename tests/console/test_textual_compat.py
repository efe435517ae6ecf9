"""console/textual_compat.py: every private Textual target exists in the installed Textual, the
check names Textual and its version when one does not, patches wait for the TUI to start, and
the two cache fixes keep Textual working."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from rich.segment import Segment
from rich.style import Style
from textual import events
from textual.app import App
from textual.screen import Screen

from console import textual_compat

ROOT = Path(__file__).resolve().parents[2]


def _resolve(target: str, app: App, screen: Screen) -> object:
    owner, _, attr = target.partition(".")
    holder = {"App": app, "Screen": screen, "ScreenResume": events.ScreenResume(),
              "LRUCache": textual_compat.LRUCache(2), "Strip": textual_compat.Strip}[owner]
    return getattr(holder, attr)


def test_every_shim_target_exists_in_the_installed_textual():
    assert textual_compat.problems() == []
    app, screen = App(), Screen()
    for shim in textual_compat.SHIMS:
        assert shim.versions == textual_compat.TESTED and shim.why and shim.remove_when
        for target in shim.targets:
            _resolve(target, app, screen)  # AttributeError here = a shim's target is gone


def test_the_pin_is_the_tested_range_and_the_installed_textual_is_in_it():
    from packaging.specifiers import SpecifierSet

    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert f"textual{textual_compat.TESTED}" in deps
    assert textual_compat.textual_version() in SpecifierSet(textual_compat.TESTED)


def test_a_missing_target_is_a_clear_error_naming_textual_and_its_version(monkeypatch):
    monkeypatch.delattr(App, "_init_mode")
    with pytest.raises(textual_compat.TextualIncompatible) as err:
        textual_compat.check()
    message = str(err.value)
    assert f"Textual {textual_compat.textual_version()}" in message and "App._init_mode(mode)" in message
    assert f"pip install 'textual{textual_compat.TESTED}'" in message


def test_a_changed_strip_layout_is_refused(monkeypatch):
    """The lean Strip.__init__ sets Textual's slots by name: a new slot would be unset."""
    monkeypatch.setattr(textual_compat, "_STRIP_SLOTS", textual_compat._STRIP_SLOTS[:-1])
    assert any("Strip.__slots__" in p for p in textual_compat.problems())


def test_importing_console_app_patches_nothing_and_starting_the_app_patches():
    code = (
        "import json\n"
        "import console.app\n"
        "from console import textual_compat\n"
        "before = textual_compat.applied()\n"
        "console.app.RLConsoleApp(object())\n"
        "print(json.dumps({'before': before, 'after': textual_compat.applied()}))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["before"] == {"lru_cache_clear": False, "lean_strips": False}
    assert report["after"] == {"lru_cache_clear": True, "lean_strips": True}


def test_strips_carry_no_caches_and_still_crop_style_and_divide():
    from textual.strip import Strip

    textual_compat.apply()
    strip = Strip([Segment("hello "), Segment("world", Style(bold=True))])
    for name in ("_crop_cache", "_style_cache", "_divide_cache", "_filter_cache", "_line_length_cache",
                 "_crop_extend_cache", "_offsets_cache"):
        assert getattr(strip, name) is textual_compat.NO_CACHE  # no per-strip objects for the GC to walk
    assert strip.crop(2, 8).text == "llo wo" and strip.crop(2, 8).text == "llo wo"  # asked twice: recomputed
    assert [s.text for s in strip.divide([3, 11])] == ["hel", "lo world"]
    assert strip.crop_extend(0, 14, None).cell_length == 14 and strip.extend_cell_length(12).cell_length == 12
    styled = strip.apply_style(Style(italic=True))
    assert all(seg.style and seg.style.italic for seg in styled) and strip.text == "hello world"


def test_cleared_lru_cache_leaves_no_cycle():
    from textual.cache import LRUCache

    textual_compat.apply()
    cache = LRUCache(8)
    for i in range(8):
        cache[i] = [i]
    links = list(cache._cache.values())
    cache.clear()
    assert len(cache) == 0 and all(link == [] for link in links)  # reference counting frees them
    cache[1] = [1]
    assert cache[1] == [1] and len(cache) == 1  # still a working cache after a clear


def test_only_textual_compat_names_textual_privates():
    """Every other console module uses the helpers; a private Textual name elsewhere is a leak."""
    privates = {t.split(".", 1)[1] for shim in textual_compat.SHIMS for t in shim.targets}
    privates -= {"__init__", "clear", "__slots__", "refresh_styles"}  # public names among the targets
    offenders = []
    for path in (ROOT / "console").rglob("*.py"):
        if path.name == "textual_compat.py":
            continue
        text = path.read_text()
        offenders += [f"{path.relative_to(ROOT)}: {name}" for name in privates
                      if re.search(rf"(?<![A-Za-z0-9_]){re.escape(name)}\b", text)]
    assert offenders == []
