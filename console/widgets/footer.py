"""KeyFooter: the active key bindings on one line, as one widget.

Textual's `Footer` recomposes one widget per key on every binding change (every screen
switch and focus change); in this app that was the largest single cost of a screen switch
(profiled: ~40% of it, with style recalculation of the new key widgets), and it leaked
watchers on each recompose (Textualize/textual#6666). This footer renders the same
information as one line of text and repaints only when the line changes. Keys stay
clickable: a click replays the key, so it does what pressing it does.
"""

from __future__ import annotations

from rich.style import Style
from rich.text import Text
from textual.widget import Widget


class KeyFooter(Widget):
    COMPONENT_CLASSES = {"keyfooter--key", "keyfooter--description", "keyfooter--disabled"}
    DEFAULT_CSS = """
    KeyFooter {
        dock: bottom;
        height: 1;
        background: $footer-background;
        color: $footer-description-foreground;
    }
    KeyFooter > .keyfooter--key { color: $footer-key-foreground; background: $footer-key-background; text-style: bold; }
    KeyFooter > .keyfooter--description { color: $footer-description-foreground; }
    KeyFooter > .keyfooter--disabled { color: $text-disabled; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._line = Text()
        self._signature: tuple = ()

    def on_mount(self) -> None:
        self.screen.bindings_updated_signal.subscribe(self, self._bindings_changed)
        self.call_after_refresh(self.update_keys)

    def _bindings_changed(self, screen) -> None:
        if self.is_attached and screen is self.screen:
            self.update_keys()

    def entries(self) -> list[tuple[str, str, str, bool]]:
        """(key, key as shown, description, enabled) for each shown binding, one per action."""
        out: list[tuple[str, str, str, bool]] = []
        seen: set[str] = set()
        palette = None
        for key, (_node, binding, enabled, _tooltip) in self.screen.active_bindings.items():
            if key == self.app.COMMAND_PALETTE_BINDING and self.app.ENABLE_COMMAND_PALETTE:
                palette = (key, self.app.get_key_display(binding), binding.description or "palette", enabled)
                continue
            if not binding.show or binding.action in seen:
                continue
            seen.add(binding.action)
            out.append((key, self.app.get_key_display(binding), binding.description, enabled))
        if palette is not None:
            out.append(palette)
        return out

    def update_keys(self) -> None:
        entries = self.entries()
        signature = tuple(entries)
        if signature == self._signature:
            return  # the common case on focus changes: nothing to repaint
        self._signature = signature
        key_style = self.get_component_rich_style("keyfooter--key")
        desc_style = self.get_component_rich_style("keyfooter--description")
        off_style = self.get_component_rich_style("keyfooter--disabled")
        line = Text(no_wrap=True, overflow="ellipsis", end="")
        for key, shown, description, enabled in entries:
            click = Style.from_meta({"@click": f"app.simulate_key({key!r})"})
            line.append(f" {shown} ", (key_style if enabled else off_style) + click)
            line.append(f"{description} ", (desc_style if enabled else off_style) + click)
        self._line = line
        self.refresh()

    @property
    def plain(self) -> str:
        return self._line.plain

    def render(self) -> Text:
        return self._line

