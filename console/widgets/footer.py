"""KeyFooter: the active key bindings on one line, as one widget.

Textual's `Footer` recomposes one widget per key on every binding change (every screen
switch and focus change); in this app that was the largest single cost of a screen switch
(profiled: ~40% of it, with style recalculation of the new key widgets), and it leaked
watchers on each recompose (Textualize/textual#6666). This footer renders the same
information as one line of text and repaints only when the line changes. Keys stay
clickable: a click replays the key, so it does what pressing it does.

The line is fitted to the width: when the keys do not fit, the space after each description
goes first (the next key's padding still separates them), then the least useful hints drop
(`KEEP`), so `?` help and `q` detach stay down to 40 columns. A control that cannot act now
(the app's `control_blocked(action)` gives the reason) is shown dimmed.
"""

from __future__ import annotations

from rich.style import Style
from rich.text import Text
from textual.widget import Widget
from textual.widgets import Input, TextArea


#: how long a key's hint survives when the line is narrow (higher stays longer; default 50)
KEEP = {
    "help": 100,
    "detach": 95,
    "command_palette": 90,
    "back": 85,
    "leave_form": 85,
    "pause_resume": 80,
    "scrub(-1)": 75,
    "scrub(1)": 75,
    "stop": 38,
    "show('dashboard')": 45,
    "show('samples')": 44,
    "show('params')": 43,
    "show('events')": 42,
    "show('metrics')": 41,
    "resync": 35,
    "checkpoint": 34,
    "filter": 30,
}


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
        self._entries: list[tuple[str, str, str, bool, int]] = []  # (key, shown, description, enabled, keep)
        self._signature: tuple = ()
        self._fitted_width = -1

    def on_mount(self) -> None:
        self.screen.bindings_updated_signal.subscribe(self, self._bindings_changed)
        self.call_after_refresh(self.update_keys)

    def _bindings_changed(self, screen) -> None:
        if self.is_attached and screen is self.screen:
            self.update_keys()

    def entries(self) -> list[tuple[str, str, str, bool]]:
        """(key, key as shown, description, enabled) for each shown binding, one per action."""
        return [entry[:4] for entry in self._collect()]

    def _collect(self) -> list[tuple[str, str, str, bool, int]]:
        out: list[tuple[str, str, str, bool, int]] = []
        seen: set[str] = set()
        palette = None
        blocked = getattr(self.app, "control_blocked", None)
        here = next((f"show({mode!r})" for mode, cls in getattr(self.app, "MODES", {}).items()
                     if isinstance(cls, type) and isinstance(self.screen, cls)), "")
        typing = isinstance(self.screen.focused, (Input, TextArea))  # a printable key types into it: no hint for one
        for key, (_node, binding, enabled, _tooltip) in self.screen.active_bindings.items():
            if key == self.app.COMMAND_PALETTE_BINDING and self.app.ENABLE_COMMAND_PALETTE:
                palette = (key, self.app.get_key_display(binding), binding.description or "palette", enabled,
                           KEEP["command_palette"])
                continue
            shown = self.app.get_key_display(binding)
            if not binding.show or binding.action in seen or binding.action == here or (typing and len(shown) == 1):
                continue  # hidden, a duplicate, the key to the screen it is on, or typed into the input
            seen.add(binding.action)
            if enabled and blocked is not None and blocked(binding.action):
                enabled = False  # it cannot act now: dimmed (pressing it says why)
            describe = getattr(self.app, "binding_description", None)  # e.g. "resume" while paused
            description = describe(binding.action, binding.description) if describe is not None else binding.description
            out.append((key, shown, description, enabled, KEEP.get(binding.action, 50)))
        if palette is not None:
            out.append(palette)
        return out

    def update_keys(self) -> None:
        entries = self._collect()
        signature = tuple(entries)
        if signature == self._signature:
            return  # the common case on focus changes and repaint ticks: nothing to repaint
        self._signature = signature
        self._entries = entries
        self._fitted_width = -1  # fitted in render(), to the width it is drawn at
        self.refresh()

    def _fit(self, width: int) -> Text:
        width = width or 80
        kept = list(self._entries)
        # a description's trailing space goes first (the next key's own padding separates them)
        pad = " " if sum(len(f" {shown} {description} ") for _, shown, description, _, _ in kept) <= width else ""
        cost = sum(len(f" {shown} {description}{pad}") for _, shown, description, _, _ in kept)
        for victim in sorted(kept, key=lambda e: e[4]):
            if cost <= width:
                break
            kept.remove(victim)
            cost -= len(f" {victim[1]} {victim[2]}{pad}")
        key_style = self.get_component_rich_style("keyfooter--key")
        desc_style = self.get_component_rich_style("keyfooter--description")
        off_style = self.get_component_rich_style("keyfooter--disabled")
        line = Text(no_wrap=True, overflow="ellipsis", end="")
        for key, shown, description, enabled, _keep in kept:
            click = Style.from_meta({"@click": f"app.simulate_key({key!r})"})
            line.append(f" {shown} ", (key_style if enabled else off_style) + click)
            line.append(f"{description}{pad}", (desc_style if enabled else off_style) + click)
        return line

    def _fitted(self) -> Text:
        if self._fitted_width != self.size.width:
            self._fitted_width = self.size.width
            self._line = self._fit(self.size.width)
        return self._line

    @property
    def plain(self) -> str:
        return self._fitted().plain

    def render(self) -> Text:
        return self._fitted()

