"""Small fixes to Textual internals this console depends on, applied when the app is imported.

`LRUCache.clear()` drops its dict and head but leaves the circular linked list of entries
intact: every cleared cache (DataTable clears several on each update of its rows, and on
every style update) becomes one big reference cycle that only Python's cyclic garbage
collector can free, together with every cached Strip and row it holds. Under a stream of
events this was most of the console's garbage (measured: 123k objects in cycles per 5 s,
lists/Segments/Text/Strips), and the resulting full collections froze the UI for up to
~240 ms at a time. Unlinking the entries first lets reference counting free them at once.
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
