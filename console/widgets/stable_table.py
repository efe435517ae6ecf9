"""StableTable: a DataTable that keeps its rendered rows when a style update changes nothing.

Textual sends a style update to every widget of a screen each time the screen is shown
again, and DataTable answers every one by dropping all of its render caches, so each screen
switch re-rendered every visible cell (profiled: the largest cost of switching to the
samples screen). This subclass drops them only when a style the table paints with changed
(theme, focus, hover, its own or a component class's style).
"""

from __future__ import annotations

from textual.widget import Widget
from textual.widgets import DataTable


class StableTable(DataTable):
    _style_signature: tuple | None = None

    def _current_style_signature(self) -> tuple:
        components = tuple(self.get_component_rich_style(name, partial=True) for name in sorted(self.COMPONENT_CLASSES))
        return (self.rich_style, components, self.has_focus, self.hover_style, self.styles.background)

    def notify_style_update(self) -> None:
        Widget.notify_style_update(self)  # the widget's own style caches, always
        try:
            signature = self._current_style_signature()
        except KeyError:  # component styles not resolved yet (before mount): behave as DataTable
            signature = None
        if signature == self._style_signature:
            return
        self._style_signature = signature
        super().notify_style_update()  # DataTable: drop the render caches and repaint
