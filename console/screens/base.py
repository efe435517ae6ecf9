"""LiveScreen: the base of every screen fed from `RunState` on the app's repaint tick."""

from __future__ import annotations

from typing import TYPE_CHECKING

from textual.app import ComposeResult
from textual.containers import Vertical

from console.state import RunState
from console.textual_compat import ShimmedScreen
from console.widgets.footer import KeyFooter
from console.widgets.run_header import RunHeader
from console.widgets.status_line import StatusLine

if TYPE_CHECKING:
    from console.app import RLConsoleApp


class LiveScreen(ShimmedScreen):
    """Subclasses yield their body from `compose_body` and paint it in `refresh_view`."""

    SCREEN_NAME = ""

    def __init__(self) -> None:
        super().__init__()
        self.rendered_version = -1

    @property
    def console_app(self) -> RLConsoleApp:
        return self.app  # type: ignore[return-value]

    def compose(self) -> ComposeResult:
        yield RunHeader(id="run-header")
        yield from self.compose_body()
        with Vertical(id="screen-bottom"):  # docked: the status line, then the keys
            yield StatusLine()
            yield KeyFooter()

    def compose_body(self) -> ComposeResult:
        yield from ()

    def refresh_view(self, state: RunState) -> None:
        app = self.console_app
        self.show_header(state)
        self.query_one(KeyFooter).update_keys()  # a control that can no longer act is dimmed
        self.query_one(StatusLine).show(*app.status)

    def show_header(self, state: RunState) -> None:
        app = self.console_app
        self.query_one(RunHeader).show(state, screen_name=self.SCREEN_NAME, replay=app.replay, read_only=app.read_only,
                                       replay_at=app.replay_position(), now=app.wall_now())

    def state_replaced(self) -> None:
        """The app swapped in a rebuilt RunState (replay scrubbed back): drop view caches."""
        self.rendered_version = -1

    def screen_resumed(self) -> None:
        # Shown (textual_compat skips Textual's style pass unless the CSS changed). Show the
        # screen with a fresh header (cheap) but its body as it was (one frame), then bring the
        # body up to date: the key's effect is on the terminal before that is computed
        LiveScreen.refresh_view(self, self.console_app.state)
        self.console_app.repaint_when_shown()

    def on_resize(self) -> None:
        self.call_after_refresh(self.console_app.repaint, True)
