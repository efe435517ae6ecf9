"""Every use of Textual's private internals in rl-console, in one place.

The console relies on a few things Textual does not offer publicly: a hook after a frame is
written (operator input first), installing a mode's screen without showing it, skipping the
style pass on a screen resume, and two fixes to Textual's caches that keep the garbage
collector from freezing the UI under a flood of events. Each is a `Shim` below: what it
touches, the Textual versions it was written for, why, and when it can go.

Nothing here runs on import. `start(app)` (called by `RLConsoleApp.__init__`, i.e. when the
TUI starts) first runs `check()`, which verifies that every private target exists with the
shape the shims expect and otherwise raises `TextualIncompatible` naming Textual and its
installed version (instead of an AttributeError in the middle of a run), then applies the two
process-wide patches. The rest of the console calls the helpers here, never a private name.

Written for Textual 8.2 (tested on 8.2.8); pyproject.toml pins that range.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from textual import events
from textual.app import App
from textual.cache import LRUCache
from textual.screen import Screen
from textual.strip import Strip

#: the Textual versions every shim below was written and tested for (pyproject.toml pins it)
TESTED = ">=8.2.8,<8.3"


class TextualIncompatible(RuntimeError):
    """The installed Textual lacks something a shim in this module needs."""


def textual_version() -> str:
    try:
        return version("textual")
    except PackageNotFoundError:  # pragma: no cover - a vendored copy
        return "unknown"


@dataclass(frozen=True)
class Shim:
    name: str
    targets: tuple[str, ...]  # the private names it touches
    versions: str  # the Textual versions it was written for
    why: str
    remove_when: str
    patches: bool = False  # replaces something process-wide (applied by `start`)


SHIMS: tuple[Shim, ...] = (
    Shim(
        "lru_cache_clear",
        ("LRUCache.clear", "LRUCache._cache"),
        TESTED,
        "LRUCache.clear() drops its dict and head but leaves the doubly linked list of entries "
        "([prev, next, key, value]) intact: every cleared cache becomes one reference cycle, with "
        "every Strip and row it held, that only the cyclic GC can free. Under a flood this was most "
        "of the console's garbage (123k objects in cycles per 5 s) and full collections froze the UI "
        "for up to ~240 ms. The patch unlinks each entry (link.clear()) before clearing.",
        "when Textual's LRUCache.clear unlinks its entries itself (docs/architecture.md, "
        "'Textual workarounds', has the upstream-ready description)",
        patches=True,
    ),
    Shim(
        "lean_strips",
        ("Strip.__init__", "Strip.__slots__"),
        TESTED,
        "every Strip allocates seven FIFOCaches in __init__ (crop, style, divide, filter, line "
        "length, crop-extend, offsets): seven GC-tracked objects per strip, plus the derived strips "
        "they keep alive. Under 2,000 groups/s they were ~40% of the console's tracked objects. The "
        "patched __init__ shares one cache that remembers nothing: a crop or restyle is recomputed "
        "when asked again (measured: key-to-paint p50/p99 98/180 vs 144/261 ms, less CPU).",
        "when Strip allocates its caches lazily (on first use) or no longer per instance",
        patches=True,
    ),
    Shim(
        "frame_written",
        ("App._display", "App._batch_count"),
        TESTED,
        "operator input first (console/app.py): the reader, the data repaint and automatic GC wait "
        "until a frame showing the input's effect is written. Textual has no public 'frame written' "
        "hook; `ShimmedApp._display` calls `frame_written()` after each frame that reached the "
        "terminal (not one swallowed by batch_update).",
        "when Textual offers a public signal after a frame is written",
    ),
    Shim(
        "modes_ahead",
        ("App._screen_stacks", "App._init_mode", "App._exit"),
        TESTED,
        "screens are composed in the background after start-up, so the first key to each is a "
        "switch, not a build (130-200 ms measured under load); Textual only installs a mode's screen "
        "when switching to it.",
        "when Textual can install a mode's screen without switching to it",
    ),
    Shim(
        "screen_resume",
        ("Screen._on_screen_resume", "Screen._css_update_count", "App._css_update_count",
         "ScreenResume.refresh_styles"),
        TESTED,
        "Textual re-applies every CSS rule to every widget on each screen resume (~5 ms, and every "
        "widget's rendered lines are thrown away); needed only when the CSS changed since the screen "
        "last got it. Also ignores the resume a background-composed screen receives while hidden.",
        "when Textual skips the style pass on resume when nothing changed",
    ),
    Shim(
        "frame_text",
        ("Screen._compositor", "App._background_screens"),
        TESTED,
        "tests read what the terminal shows as text (tests/console/conftest.py screen_text).",
        "when Textual's Pilot can export the current frame as text",
    ),
)


# -- the check ----------------------------------------------------------------------------

def _params(func: Callable[..., Any]) -> list[str]:
    return list(inspect.signature(func).parameters)


def problems(app: App | None = None) -> list[str]:
    """What the installed Textual lacks of what the shims need ([] when all is there)."""
    app = app if app is not None else App()
    screen = Screen()
    found: list[str] = []

    def need(ok: Callable[[], bool], what: str) -> None:
        try:
            good = ok()
        except Exception:  # noqa: BLE001 - any failure to find it is the same answer
            good = False
        if not good:
            found.append(what)

    # lru_cache_clear
    need(lambda: callable(_ORIGINAL["LRUCache.clear"]) and "_cache" in LRUCache.__slots__, "LRUCache.clear / LRUCache._cache")
    need(_lru_entries_are_links, "LRUCache entries as [prev, next, key, value] lists")
    # lean_strips: the patched __init__ must set exactly the slots Textual's sets
    need(lambda: _params(_ORIGINAL["Strip.__init__"]) == ["self", "segments", "cell_length"], "Strip.__init__(segments, cell_length)")
    need(lambda: set(Strip.__slots__) == set(_STRIP_SLOTS), f"Strip.__slots__ == {sorted(_STRIP_SLOTS)}")
    # frame_written
    need(lambda: _params(App._display) == ["self", "screen", "renderable"], "App._display(screen, renderable)")
    need(lambda: isinstance(app._batch_count, int), "App._batch_count")
    # modes_ahead
    need(lambda: isinstance(app._screen_stacks, dict), "App._screen_stacks")
    need(lambda: _params(App._init_mode) == ["self", "mode"], "App._init_mode(mode)")
    need(lambda: isinstance(app._exit, bool), "App._exit")
    # screen_resume
    need(lambda: _params(Screen._on_screen_resume) == ["self", "event"], "Screen._on_screen_resume(event)")
    need(lambda: isinstance(screen._css_update_count, int) and isinstance(app._css_update_count, int),
         "Screen._css_update_count / App._css_update_count")
    need(lambda: isinstance(events.ScreenResume().refresh_styles, bool), "ScreenResume.refresh_styles")
    # frame_text
    need(lambda: callable(screen._compositor.render_update), "Screen._compositor.render_update")
    need(lambda: isinstance(App._background_screens, property), "App._background_screens")
    return found


def check(app: App | None = None) -> None:
    """Raise `TextualIncompatible` if the installed Textual lacks a shim's target."""
    missing = problems(app)
    if missing:
        raise TextualIncompatible(
            f"rl-console's console was written for Textual {TESTED} and the installed Textual "
            f"{textual_version()} lacks: {'; '.join(missing)}. Install a tested version: "
            f"pip install 'textual{TESTED}'"
        )


def start(app: App) -> None:
    """At TUI start: check every shim's target, then apply the process-wide patches (idempotent)."""
    check(app)
    apply()


def apply() -> None:
    if LRUCache.clear is not _acyclic_clear:
        LRUCache.clear = _acyclic_clear  # type: ignore[method-assign]
    if Strip.__init__ is not _lean_strip_init:
        Strip.__init__ = _lean_strip_init  # type: ignore[method-assign]


def applied() -> dict[str, bool]:
    """Which process-wide patches are in place (for tests and diagnostics)."""
    return {"lru_cache_clear": LRUCache.clear is _acyclic_clear, "lean_strips": Strip.__init__ is _lean_strip_init}


_ORIGINAL: dict[str, Any] = {"LRUCache.clear": LRUCache.clear, "Strip.__init__": Strip.__init__}


# -- shim: lru_cache_clear ------------------------------------------------------------------

def _acyclic_clear(self: LRUCache) -> None:
    for link in self._cache.values():
        link.clear()  # [prev, next, key, value] -> []: no cycle left behind
    _ORIGINAL["LRUCache.clear"](self)


def _lru_entries_are_links() -> bool:
    cache: LRUCache[int, int] = LRUCache(2)
    cache[1] = 1
    link = next(iter(cache._cache.values()))
    return isinstance(link, list) and len(link) == 4


# -- shim: lean_strips ----------------------------------------------------------------------

class _NoCache:
    """Stands in for each of a Strip's seven per-strip FIFOCaches: remembers nothing."""

    __slots__ = ()

    def get(self, key, default=None):
        return default

    def __setitem__(self, key, value) -> None:
        pass

    def clear(self) -> None:
        pass

    def __len__(self) -> int:
        return 0


NO_CACHE = _NoCache()

_STRIP_SLOTS = ("_segments", "_cell_length", "_divide_cache", "_crop_cache", "_style_cache", "_filter_cache",
                "_line_length_cache", "_crop_extend_cache", "_offsets_cache", "_render_cache", "_link_ids", "_cell_count")


def _lean_strip_init(self, segments, cell_length=None) -> None:
    self._segments = list(segments)
    self._cell_length = cell_length
    self._divide_cache = self._crop_cache = self._style_cache = self._filter_cache = NO_CACHE
    self._line_length_cache = self._crop_extend_cache = self._offsets_cache = NO_CACHE
    self._render_cache = None
    self._link_ids = None
    self._cell_count = None


# -- shim: frame_written --------------------------------------------------------------------

class ShimmedApp(App):
    """An App told after each frame that reached the terminal (`frame_written`)."""

    def _display(self, screen: Screen, renderable: Any) -> None:
        # a frame inside batch_update() is not written: Textual writes the batch at its end
        shown = renderable is not None and not self._batch_count
        super()._display(screen, renderable)
        if shown:
            self.frame_written()

    def frame_written(self) -> None:
        """A frame was written to the terminal."""


# -- shim: modes_ahead ----------------------------------------------------------------------

def mode_installed(app: App, mode: str) -> bool:
    """The mode's screen exists (composed), shown or not."""
    return mode in app._screen_stacks


def install_mode(app: App, mode: str) -> Awaitable[Any]:
    """Compose and mount a mode's screen without switching to it (it gets a resume it ignores:
    see `ShimmedScreen`); await the result for the mount."""
    return app._init_mode(mode)


def mode_screen(app: App, mode: str) -> Screen | None:
    """The top screen of an installed mode, shown or not."""
    stack = app._screen_stacks.get(mode)
    return stack[-1] if stack else None


def exiting(app: App) -> bool:
    """`app.exit()` was called."""
    return bool(app._exit)


# -- shim: screen_resume --------------------------------------------------------------------

class ShimmedScreen(Screen):
    """A Screen that skips Textual's style pass on resume unless the CSS changed, ignores the
    resume it gets when installed in the background (`install_mode`), and calls
    `screen_resumed()` when it is really shown."""

    def _on_screen_resume(self, event: events.ScreenResume) -> None:
        # (Textual calls this before Screen._on_screen_resume)
        if self.app.screen is not self:  # installed ahead of time, not shown
            event.prevent_default()  # (Textual's own resume handling runs when it is shown)
            return
        if event.refresh_styles and self._css_update_count == self.app._css_update_count:
            event.refresh_styles = False
        self.screen_resumed()

    def screen_resumed(self) -> None:
        """The screen is being shown (before Textual's own resume handling)."""


# -- shim: frame_text -----------------------------------------------------------------------

def full_frame(app: App) -> Any:
    """The whole current frame as a Rich renderable (what the terminal shows)."""
    return app.screen._compositor.render_update(full=True, screen_stack=app._background_screens)
