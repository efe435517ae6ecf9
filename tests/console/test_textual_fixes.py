"""The console's fixes to Textual internals (console/_textual_fixes.py) keep Textual working."""

from rich.segment import Segment
from rich.style import Style

import console.app  # noqa: F401  - applies the fixes
from console import _textual_fixes


def test_strips_carry_no_caches_and_still_crop_style_and_divide():
    from textual.strip import Strip

    strip = Strip([Segment("hello "), Segment("world", Style(bold=True))])
    for name in ("_crop_cache", "_style_cache", "_divide_cache", "_filter_cache", "_line_length_cache",
                 "_crop_extend_cache", "_offsets_cache"):
        assert getattr(strip, name) is _textual_fixes._NO_CACHE  # no per-strip objects for the GC to walk
    assert strip.crop(2, 8).text == "llo wo" and strip.crop(2, 8).text == "llo wo"  # asked twice: recomputed
    assert [s.text for s in strip.divide([3, 11])] == ["hel", "lo world"]
    assert strip.crop_extend(0, 14, None).cell_length == 14 and strip.extend_cell_length(12).cell_length == 12
    styled = strip.apply_style(Style(italic=True))
    assert all(seg.style and seg.style.italic for seg in styled) and strip.text == "hello world"


def test_cleared_lru_cache_leaves_no_cycle():
    from textual.cache import LRUCache

    cache = LRUCache(8)
    for i in range(8):
        cache[i] = [i]
    links = list(cache._cache.values())
    cache.clear()
    assert len(cache) == 0 and all(link == [] for link in links)  # reference counting frees them
