"""WordDiff: two outputs of one probe prompt compared word by word (policy diff screen).

`word_diff(old, new)` is pure (difflib over whitespace-separated words): the newer text with
the words it dropped struck through in red and the words it gained underlined in green, and
how many of each. Whitespace is carried with the word before it and is not compared, so a
re-wrapped line is not a change; the layout shown is the newer text's.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.widgets import Static

REMOVED = "bold red strike"
ADDED = "bold green underline"
_WORD = re.compile(r"\s+|\S+\s*")


@dataclass(frozen=True)
class Diff:
    text: Text
    added: int  # words only in the newer text
    removed: int  # words only in the older text

    @property
    def same(self) -> bool:
        return not self.added and not self.removed


def words(text: str) -> list[str]:
    """`text` as words, each with the whitespace after it (leading whitespace its own token)."""
    return _WORD.findall(text)


def word_diff(old: str, new: str) -> Diff:
    a, b = words(old), words(new)
    ka, kb = [w.strip() for w in a], [w.strip() for w in b]
    out = Text()
    added = removed = 0
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, ka, kb, autojunk=False).get_opcodes():
        if op == "equal":
            out.append("".join(b[j1:j2]))
            continue
        if op in ("delete", "replace"):
            gone = [w for w in a[i1:i2] if w.strip()]
            removed += len(gone)
            for w in gone:
                _separate(out)
                out.append(w.rstrip(), style=REMOVED)
                out.append(" ")
        if op in ("insert", "replace"):
            came = b[j1:j2]
            added += sum(1 for w in came if w.strip())
            for w in came:
                core = w.rstrip()
                if core:
                    _separate(out)
                out.append(core, style=ADDED)
                out.append(w[len(core):])
    return Diff(out, added, removed)


def _separate(out: Text) -> None:
    """A word shown after a word must not touch it (the last word of a text has no space after)."""
    if out.plain and not out.plain[-1].isspace():
        out.append(" ")


class WordDiff(VerticalScroll):
    """Passive: the screen calls `show(heading, body)` (body: a diff, or a message)."""

    DEFAULT_CSS = """
    WordDiff {
        height: 1fr;
        padding: 0 1;
        background: $surface;
    }
    WordDiff > #word-diff-heading { height: auto; background: $boost; }
    WordDiff > #word-diff-body { height: auto; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, can_focus=True)
        self._shown: tuple[str, str] = ("", "")
        self.plain = ""  # what it shows, as plain text (tests read it)

    def compose(self) -> ComposeResult:
        yield Static("", id="word-diff-heading")
        yield Static("", id="word-diff-body")

    def show(self, heading: Text, body: Text) -> None:
        key = (heading.markup, body.markup)
        if key == self._shown:
            return
        self._shown = key
        self.plain = heading.plain + "\n" + body.plain
        self.query_one("#word-diff-heading", Static).update(heading)
        self.query_one("#word-diff-body", Static).update(body)
