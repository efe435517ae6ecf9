"""Small fixes to Textual internals this console depends on, applied when the app is imported.

`LRUCache.clear()` drops its dict and head but leaves the circular linked list of entries
intact: every cleared cache (DataTable clears several on each update of its rows, and on
every style update) becomes one big reference cycle that only Python's cyclic garbage
collector can free, together with every cached Strip and row it holds. Under a stream of
events this was most of the console's garbage (measured: 123k objects in cycles per 5 s,
lists/Segments/Text/Strips), and the resulting full collections froze the UI for up to
~240 ms at a time. Unlinking the entries first lets reference counting free them at once.

`Strip`'s seven per-strip caches: see `lean_strips()`.
"""

from __future__ import annotations

from textual.cache import LRUCache

_original_clear = LRUCache.clear


def _acyclic_clear(self: LRUCache) -> None:
    for link in self._cache.values():
        link.clear()  # [prev, next, key, value] -> []: no cycle left behind
    _original_clear(self)


def apply() -> None:
    if LRUCache.clear is not _acyclic_clear:
        LRUCache.clear = _acyclic_clear  # type: ignore[method-assign]
    lean_strips()


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


_NO_CACHE = _NoCache()


def _lean_strip_init(self, segments, cell_length=None) -> None:
    self._segments = list(segments)
    self._cell_length = cell_length
    self._divide_cache = self._crop_cache = self._style_cache = self._filter_cache = _NO_CACHE
    self._line_length_cache = self._crop_extend_cache = self._offsets_cache = _NO_CACHE
    self._render_cache = None
    self._link_ids = None
    self._cell_count = None


def lean_strips() -> None:
    """Every Textual `Strip` carries seven small caches: seven GC-tracked objects, plus the
    derived strips (crops, styled copies) they keep alive, each with seven more. Under a
    2,000 groups/s flood they were ~40% of the console's ~108k tracked objects (39.5k
    FIFOCaches, 5.6k Strips), and every full garbage collection walks them all: the longest
    stalls left in bench/tui_load.py. Without them a strip's crop or restyle is recomputed
    when asked again (a list slice over a few segments): measured, the console used less CPU
    (0.62 vs 0.67 cores), 65k tracked objects, and key-to-paint p50/p99 98/180 vs 144/261 ms."""
    from textual.strip import Strip

    if Strip.__init__ is not _lean_strip_init:
        Strip.__init__ = _lean_strip_init  # type: ignore[method-assign]
