"""RLConsoleApp: the Textual console attached to one run through an event source.

One async worker reads events from the source into `RunState` (bounded buffers); the
active screen repaints from that state on a ~5 Hz tick inside `batch_update()`, never per
event. Operator input goes first: from a key's arrival until a frame shows its effect, the
reader, the repaint tick and automatic GC wait (capped; see INPUT_HOLD_MAX_S). Commands go back
through `source.send`; `q` detaches (the run keeps going).

Imports only `backend.protocol`, the standard library, Textual and Rich.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from collections import deque
from collections.abc import Iterable
from functools import partial
from typing import Any

from textual import events, work
from textual.app import ScreenStackError, SystemCommand
from textual.binding import Binding
from textual.css.query import NoMatches
from textual.screen import ModalScreen, Screen

from backend.protocol.commands import Checkpoint, Pause, Resume, ResyncWeights, Stop, Subscribe
from backend.protocol.events import CommandResult, ControlStatus
from backend.protocol.paths import LOCK_NAME, run_dir, run_locked
from console import textual_compat
from console.replay import Timeline
from console.screens.base import LiveScreen
from console.screens.dashboard import DashboardScreen
from console.screens.events import EventsScreen
from console.screens.metrics import MetricsScreen
from console.screens.help import HelpScreen
from console.screens.params import ParamsScreen
from console.screens.playground import PlaygroundScreen
from console.screens.probes import ProbesScreen
from console.screens.prompts import PromptsScreen
from console.screens.alerts import AlertsModal
from console.screens.samples import SamplesScreen
from console.screens.stop import StopModal
from console.state import CHART_WINDOWS, RunState, chart_windows
from console.widgets.status_line import StatusLine
from console.textual_compat import ShimmedApp

#: gen0 threshold for the console process (Python's default is 700). Under a stream of events
#: the console allocates fast, and every 100 young collections is a full one over the whole
#: live graph (~100-200 ms here); 5,000 makes those ~7x rarer. Measured with bench/tui_load.py:
#: key-to-paint p99 under load 356 -> 252 ms, CPU 0.57 -> 0.43 cores, memory still flat.
GC_THRESHOLDS = (5000, 10, 10)


def tune_gc() -> None:
    """For the console's own process (not for library users or tests): fewer, cheaper collections.
    `gc.freeze()` moves what exists at start (modules, classes, widgets' code) out of every
    future collection; objects are still freed by reference counting as usual."""
    import gc

    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)

#: (action, title, help) offered in the command palette
PALETTE = (
    ("pause_resume", "Pause / resume run", "Pause the run at the next step boundary, or resume it"),
    ("resync", "Resync weights", "Push the trainer's weights to the rollout engine now"),
    ("checkpoint", "Checkpoint", "Save a checkpoint at the next step boundary"),
    ("stop", "Stop the run", "Stop at the next step boundary, with or without a checkpoint (asks first)"),
    ("show('dashboard')", "Dashboard", "Reward curve, throughput, GPUs, alerts"),
    ("show('samples')", "Samples", "Sample groups with completions, rewards and advantages"),
    ("show('params')", "Parameters", "View and edit live parameters"),
    ("show('events')", "Events log", "Every event as a one-liner"),
    ("show('metrics')", "Metrics", "Loss, KL, entropy, lengths, zero-std, truncation, Δlogp, speed; step N/max and ETA"),
    ("show('probes')", "Policy diff", "The probe prompts' greedy outputs at each weight version, diffed word by word"),
    ("show('playground')", "Playground", "Try a prompt on the live engine at its current weights, scored by the run's rewards"),
    ("show('prompts')", "Prompts", "Per-prompt learning curves: always / never solved, learning, regressed"),
    ("alerts", "Alerts and their evidence", "Every alert; open the groups that triggered a signal alert"),
    ("filter", "Filter samples", "Search prompts and completions"),
    ("help", "Help: keys", "Every key binding"),
    ("detach", "Detach", "Leave the console; the run keeps going"),
)


class RLConsoleApp(ShimmedApp):
    CSS_PATH = "app.tcss"
    TITLE = "rl-console"
    MODES = {
        "dashboard": DashboardScreen,
        "samples": SamplesScreen,
        "params": ParamsScreen,
        "events": EventsScreen,
        "metrics": MetricsScreen,
        "probes": ProbesScreen,
        "playground": PlaygroundScreen,
        "prompts": PromptsScreen,
        "help": HelpScreen,
    }
    DEFAULT_MODE = "dashboard"
    HORIZONTAL_BREAKPOINTS = [(0, "-tiny"), (60, "-narrow"), (120, "-wide")]
    VERTICAL_BREAKPOINTS = [(0, "-short"), (20, "-tall")]
    REFRESH_HZ = 5.0
    #: the reader works at most this long before letting the UI run
    READ_SLICE_S = 0.01
    #: operator input first: after a key, a click or a scroll, the event reader, the data
    #: repaint tick and automatic garbage collection stand back until the active screen has
    #: painted the input's effect, for at most this long (then the reader gets a whole slice)
    INPUT_HOLD_MAX_S = 0.25
    INPUT_EVENTS = (events.Key, events.MouseDown, events.MouseScrollDown, events.MouseScrollUp)

    BINDINGS = [
        Binding("question_mark", "help", "help", tooltip="every key binding"),
        Binding("p", "pause_resume", "pause", tooltip="pause the run (resume if paused)"),
        Binding("w", "resync", "resync", tooltip="resync weights to the rollout engine"),
        Binding("c", "checkpoint", "ckpt", tooltip="save a checkpoint"),
        Binding("x", "stop", "stop", tooltip="stop the run (asks first: checkpoint or not)"),
        Binding("d", "show('dashboard')", "dash", tooltip="dashboard"),
        Binding("s", "show('samples')", "samples", tooltip="sample groups and completions"),
        Binding("e", "show('params')", "params", tooltip="view / edit live parameters"),
        Binding("l", "show('events')", "log", tooltip="events and alerts log"),
        Binding("m", "show('metrics')", "metrics", tooltip="small multiples of every metric; ETA"),
        Binding("v", "show('probes')", "policy diff", show=False, tooltip="policy diff: probe outputs per weight version"),
        Binding("g", "show('playground')", "playground", show=False, tooltip="playground: try a prompt on the live engine"),
        Binding("r", "show('prompts')", "prompts", show=False, tooltip="prompts: per-prompt reward history and status"),
        Binding("a", "alerts", "alerts", show=False, tooltip="alerts; enter: a signal alert's evidence groups"),
        Binding("slash", "filter", "filter", tooltip="search samples (opens samples, focuses the filter)"),
        Binding("q", "detach", "detach", tooltip="detach: leave the console, the run keeps going"),
        Binding("T", "take_control", "take control", show=False,
                tooltip="take control from the console that holds it"),
        Binding("left_square_bracket", "scrub(-1)", "◀ step", tooltip="replay: one step back"),
        Binding("right_square_bracket", "scrub(1)", "step ▶", tooltip="replay: one step forward"),
        Binding("left_curly_bracket", "scrub(-10)", "-10", show=False, tooltip="replay: ten steps back"),
        Binding("right_curly_bracket", "scrub(10)", "+10", show=False, tooltip="replay: ten steps forward"),
        Binding("less_than_sign", "scrub('start')", "first", show=False, tooltip="replay: the first step"),
        Binding("greater_than_sign", "scrub('end')", "last", show=False, tooltip="replay: the last step"),
    ]

    def __init__(self, source: Any, *, run_id: str = "", read_only: bool = False, replay: bool = False) -> None:
        super().__init__()
        textual_compat.start(self)  # the Textual shims: checked, then applied (never on import)
        self.source = source
        self.read_only_requested = read_only  # attach --read-only
        self._lost_control = False  # it controlled the run and another client took control
        self.replay = replay
        self.state = RunState()
        self.state.run_id = run_id
        # the status line: the last operator-relevant message, and those before it (newest last)
        self.status: tuple[str, str] = ("", "information")  # (message, severity)
        self.status_history: deque[tuple[str, str]] = deque(maxlen=100)  # (severity, message)
        self._previous_mode = "dashboard"
        self.chart_window: int | None = None  # the charts show the last N steps (None: every held step); z cycles
        self._closed = False
        read_range = getattr(source, "read_range", None)
        self.timeline = Timeline(read_range) if replay and read_range is not None else None
        self._replay_loaded = False
        # operator input first (see INPUT_HOLD_MAX_S): inputs posted / handled, in order
        self._inputs_posted = 0  # written by the driver's input thread, read on the UI loop
        self._inputs_handled = 0
        self._inputs_painted = 0
        self._input_at = 0.0
        self._input_painted = asyncio.Event()
        self._holding = False  # the reader stands back for input now
        self._gc_held = False  # automatic GC is off until the input is painted
        self._repaint_after_input = False  # a screen shown by the input wants its data repaint
        self._under_modal: tuple[int, int] = (0, -1)  # (screen, state version) whose header was painted under a dialog

    #: Textual hides every mode switch for 50 ms (`switch_mode` calls `delay_update()`) to mask
    #: screens that are still mounting; ours are mounted once and painted from state, so that
    #: mask was most of the key-to-paint latency of a screen switch (measured ~47 ms of ~66)
    SWITCH_MASK_S = 0.005

    def delay_update(self, delay: float = 0.05) -> None:
        super().delay_update(min(delay, self.SWITCH_MASK_S))

    @property
    def read_only(self) -> bool:
        """Attached --read-only, or another console controls the run (the backend says which)."""
        return self.read_only_requested or self.state.control_role == "viewer"

    # -- lifecycle ----------------------------------------------------------------------
    def wall_now(self) -> float | None:
        """The time now for the header's run clock while a live backend feeds this console (it
        runs on between events: a step can take minutes); None for a replay or a scripted feed,
        whose clock is their events' times."""
        clock = getattr(self.source, "wall_clock", None)
        return clock() if clock is not None and not self.replay else None

    def tick_clock(self) -> None:
        """Once a second: the header's clock moves on though no event came (the rest of the
        screen repaints only on news)."""
        if self.wall_now() is None or not self.state.connected or self.input_busy():
            return
        try:
            screen = self.screen
        except ScreenStackError:
            return
        if isinstance(screen, ModalScreen):  # the clock of the screen beneath a dialog
            screen = self._live_below()
        if isinstance(screen, LiveScreen) and screen.is_mounted:
            with contextlib.suppress(NoMatches):
                screen.show_header(self.state)

    def _live_below(self) -> LiveScreen | None:
        """The live screen beneath the dialog on top (None if there is none)."""
        return next((s for s in reversed(self.screen_stack[:-1]) if isinstance(s, LiveScreen)), None)

    def on_mount(self) -> None:
        self._repaint_timer = self.set_interval(1.0 / self.REFRESH_HZ, self.repaint)
        self._clock_timer = self.set_interval(1.0, self.tick_clock)
        self.read_events()
        self.call_after_refresh(self._compose_modes)

    #: screens composed in the background once the first one is up, so that the first key to
    #: each is a switch, not a build (measured under load: 130-200 ms for a first visit)
    PRECOMPOSE = ("samples", "events", "params")

    async def _compose_modes(self) -> None:
        for mode in self.PRECOMPOSE:
            if textual_compat.mode_installed(self, mode) or textual_compat.exiting(self):
                continue
            await asyncio.sleep(0.05)  # one screen at a time, the UI and the reader run between
            if not textual_compat.mode_installed(self, mode) and not textual_compat.exiting(self):
                await textual_compat.install_mode(self, mode)  # mounted, not shown

    async def on_unmount(self) -> None:
        self._repaint_timer.stop()
        if self._gc_held:  # never leave the process without automatic GC
            self._gc_held = False
            gc.enable()
        await self._close_source()

    async def _close_source(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            await asyncio.wait_for(self.source.close(), 2.0)
        except Exception:  # noqa: BLE001 - the backend may already be gone
            pass

    # -- operator input first --------------------------------------------------------------
    def post_message(self, message: Any) -> bool:
        if isinstance(message, self.INPUT_EVENTS) and not message.is_forwarded:  # from the driver (its thread)
            self._input_at = time.monotonic()
            self._inputs_posted += 1
            if not self._gc_held and gc.isenabled():  # no automatic collection until it is painted
                self._gc_held = True
                gc.disable()
        return super().post_message(message)

    async def on_event(self, event: events.Event) -> None:
        if isinstance(event, self.INPUT_EVENTS) and not event.is_forwarded:
            # counted as it is taken up: its handler runs up to its first await (a screen
            # switch is done by then), so the next frame shows its effect
            self._inputs_handled += 1
        await super().on_event(event)

    def input_busy(self) -> bool:
        """Operator input is not painted yet: data work (reading, the repaint tick, a screen's
        deferred rebuild) waits, for at most INPUT_HOLD_MAX_S after the newest input."""
        return self._inputs_painted < self._inputs_posted and time.monotonic() - self._input_at < self.INPUT_HOLD_MAX_S

    def frame_written(self) -> None:
        # (textual_compat's frame_written shim; tests/console/test_input_priority.py covers it)
        self._inputs_painted = self._inputs_handled  # every handled input's effect is on the terminal
        if not self.input_busy():
            self._input_painted.set()
            self._input_done()

    def _input_done(self) -> None:
        """The operator's input is painted (or its cap passed): data work may go on."""
        if self._gc_held:
            self._gc_held = False
            gc.enable()
        if self._repaint_after_input:
            self._repaint_after_input = False
            self.call_later(self.repaint, True)

    def repaint_when_shown(self) -> None:
        """Bring the active screen up to date once it is on the terminal: after the frame of the
        input that showed it (a key switching screens), else after the next refresh."""
        if self.input_busy():
            self._repaint_after_input = True
        else:
            self.call_after_refresh(self.repaint, True)

    async def _stand_back(self) -> None:
        """Let the input that just arrived be handled and painted before reading on: no reads,
        no data repaints, no automatic GC until then (at most INPUT_HOLD_MAX_S after it)."""
        self._input_painted.clear()
        self._holding = True
        try:
            left = self.INPUT_HOLD_MAX_S - (time.monotonic() - self._input_at)
            await asyncio.wait_for(self._input_painted.wait(), max(left, 0.001))
        except asyncio.TimeoutError:
            pass
        finally:
            self._holding = False

    @work(exclusive=True, group="source", exit_on_error=False)
    async def read_events(self) -> None:
        state = self.state
        try:
            hello = await self.source.connect()
        except Exception as exc:  # noqa: BLE001 - shown to the operator, app stays usable
            if await self._backend_died() and (ended := self._settle_from_disk()):  # it died as we came
                state.on_disconnect(f"could not connect: {exc}", ended=True)
                self.say(f"{ended} (q to leave)", "error" if state.state in ("failed", "crashed") else "information")
                return
            state.on_disconnect(f"could not connect: {exc}")
            self.say(f"could not connect: {exc}", "error")
            return
        state.on_hello(hello)
        reason = ""
        slice_start, may_stand_back = time.monotonic(), True
        try:
            async for event in self.source.events():
                was_role = state.control_role
                state.apply(event)
                if self.timeline is not None:
                    self.timeline.observe(event)
                if isinstance(event, CommandResult) and state.is_ours(event.command_id):
                    self._announce(event)
                elif (isinstance(event, CommandResult) and event.status in ("applied", "failed")
                      and state.live_from is not None and event.seq >= state.live_from):
                    # another console or `ctl` changed the run while this one watches: say what
                    self.say(f"{event.command} {event.status} at step {event.step} (sent by another client)", "information")
                elif isinstance(event, ControlStatus) and not self.read_only_requested:
                    self._announce_control(was_role, event)
                stand_back = may_stand_back and self.input_busy()  # the operator pressed something
                if stand_back or time.monotonic() - slice_start > self.READ_SLICE_S:
                    if stand_back:  # the reader waits until its effect is painted
                        await self._stand_back()
                        # then it reads a whole slice: keys repeating faster than frames never starve it
                        may_stand_back = False
                    else:
                        await asyncio.sleep(0.002)  # a burst (history, flood) must not starve the UI
                        may_stand_back = True
                    slice_start = time.monotonic()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001
            reason = str(exc) or type(exc).__name__
        if self._closed:  # we detached: nothing to report
            return
        if self.replay and not reason:
            self._replay_loaded = True
            state.on_disconnect("end of the run's event log", ended=True)
            ended = self._settle_from_disk()  # how it ended, where the log cannot say (a crash)
            self.say(f"replay: end of the event log{' — ' + ended if ended else ''}", "information")
        elif not reason and state.state in ("finished", "failed"):  # the backend exits once the run ended
            state.on_disconnect(f"the run {state.lifecycle} at step {state.step}; its backend has exited", ended=True)
            self.say(f"the run {state.lifecycle} at step {state.step}; browse it here or with `rl-console replay` "
                       "(q to leave)", "information")
        elif await self._backend_died():  # not a network blip: the process hosting the run is gone
            # its own log says how it ended (a clean stop whose last event did not reach us is no crash)
            ended = self._settle_from_disk()
            if ended and state.state != "crashed":
                state.on_disconnect(f"the run {state.lifecycle} at step {state.step}; its backend has exited", ended=True)
                self.say(f"{ended} (q to leave)", "error" if state.state == "failed" else "information")
            else:
                why = ended or f"the backend died at step {state.step}; resume it with: rl-console run --resume {state.run_id}"
                state.on_disconnect(why, crashed=True)
                self.say(f"crashed: {why} (q to leave)", "error")
        else:
            state.on_disconnect(reason or "the backend closed the connection")
            self.say(f"disconnected: {reason or 'the backend closed the connection'} (q to leave)", "error")

    def _settle_from_disk(self) -> str:
        """Once no backend hosts this machine's run: take how it ended from its log and lock
        (what `rl-console ls` says) into the state, and return that as one sentence ("" when
        it cannot be read here: a remote run, or one still alive)."""
        run_id = self.state.run_id
        if not run_id or "://" in run_id:
            return ""
        from console import runs

        try:
            info = runs.info(run_id)
        except (runs.RunNotFound, OSError):
            return ""
        if info.alive or not info.ended:
            return ""
        self.state.settle(info.state, info.reason, info.next)
        return info.describe()

    async def _backend_died(self) -> bool:
        """True when this machine's run lock says no backend hosts the run any more (the OS
        drops the lock as the process exits, a moment around the socket's close)."""
        run_id = self.state.run_id
        if not run_id or "://" in run_id or not (run_dir(run_id) / LOCK_NAME).exists():
            return False  # a remote run, or one without a lock: we cannot tell
        for _ in range(10):
            if not run_locked(run_dir(run_id)):
                return True
            await asyncio.sleep(0.1)
        return False

    def repaint(self, force: bool = False) -> None:
        """Paint the active screen from state if anything changed (called on the tick)."""
        if (self._gc_held or self._repaint_after_input) and not self.input_busy():
            self._input_done()  # the input's cap passed without a frame
        try:
            screen = self.screen
        except ScreenStackError:  # shutting down
            return
        if isinstance(screen, ModalScreen):  # a dialog over a live screen: the run goes on beneath it
            self._follow_under_modal(screen)
            return
        if not isinstance(screen, LiveScreen) or not screen.is_mounted:
            return
        if not force and (screen.rendered_version == self.state.version or self.input_busy()):
            return  # nothing new, or operator input is being handled: its paint goes first
        try:
            with self.batch_update():
                screen.refresh_view(self.state)
        except NoMatches:  # the screen is still composing or already torn down (exit): next tick
            return
        screen.rendered_version = self.state.version

    def _follow_under_modal(self, modal: ModalScreen) -> None:
        """While a dialog (stop, alerts, the palette, a completion) is open, the screen beneath
        keeps its header current (state, step, clock), and the stop dialog its step: an operator
        deciding must not read a step the run left behind."""
        if self.input_busy():
            return
        below = self._live_below()
        state = self.state
        if below is not None and below.is_mounted and self._under_modal != (id(below), state.version):
            self._under_modal = (id(below), state.version)
            with contextlib.suppress(NoMatches):
                below.show_header(state)
                below.rendered_version = -1  # its body repaints once it is on top again
        if isinstance(modal, StopModal) and modal.is_mounted:
            with contextlib.suppress(NoMatches):
                modal.follow(state.step, state.last_checkpoint.step if state.last_checkpoint is not None else None)

    def cycle_chart_window(self) -> None:
        """z on a chart: the whole run -> the last 200 steps -> the last 50 (those shorter than
        the history held), on the dashboard and the metrics screen alike."""
        held = len(self.state.steps)
        windows = chart_windows(held)
        if len(windows) == 1:
            self.chart_window = None
            smallest = min(w for w in CHART_WINDOWS if w)
            self.say(f"the charts show every step already ({held}); z zooms in once there are more than {smallest}",
                     "information")
        else:
            at = windows.index(self.chart_window) if self.chart_window in windows else 0
            self.chart_window = windows[(at + 1) % len(windows)]
            self.say(f"charts: {'the whole run' if self.chart_window is None else f'the last {self.chart_window} steps'} (z)",
                     "information")
        self.repaint(force=True)

    def action_help_quit(self) -> None:
        """ctrl+c: operators reach for it to leave; say what leaving means here."""
        self.say("ctrl+c does not stop anything here: q detaches (the run keeps going); "
                 "to stop the run: rl-console ctl RUN stop", "information")

    # -- commands -----------------------------------------------------------------------
    def say(self, message: str, severity: str = "information") -> None:
        """Put a message on the status line (one line above the footer, on every screen; it stays
        until the next one). Not a toast: nothing covers the data."""
        self.status = (message, severity)
        self.status_history.append((severity, message))
        try:
            screen = self.screen
        except ScreenStackError:  # not started yet, or shutting down
            return
        for line in screen.query(StatusLine):
            line.show(message, severity)

    def _announce_control(self, was_role: str, status: ControlStatus) -> None:
        if status.role == "controller" and was_role == "viewer":
            if self._lost_control:  # it had control, another client took it, and it came back
                self.say(f"this console controls the run again ({status.reason or 'the other client left'})", "information")
            else:
                self.say("this console now controls the run", "information")
            self._lost_control = False
        elif status.role == "viewer" and was_role != "viewer":
            self._lost_control = was_role == "controller"
            take = "" if self.read_only_requested else "; T: take control"
            self.say(f"read-only: {status.holder or 'another client'} controls this run{take}", "warning")
        elif status.role == "viewer" and status.reason.startswith("attached --read-only"):
            self.say(f"read-only: {status.reason}", "warning")

    def _announce(self, result: CommandResult) -> None:
        if result.status in ("rejected", "failed"):
            self.say(f"{result.command} {result.status}: {result.reason or 'no reason given'}", "error")
        else:
            self.say(f"{result.command} {result.status}", "information")

    #: footer actions that act on the run (through the backend), by the command kind they send
    RUN_CONTROLS = {"pause_resume": "pause", "resync": "resync", "checkpoint": "checkpoint", "stop": "stop"}

    def refusal(self, kind: str) -> tuple[str, str] | None:
        """(severity, why) when a command of this kind cannot act now; None when it can."""
        state = self.state
        if self.replay:
            return "warning", f"replay: {kind} not sent (commands are off while replaying)"
        if state.ended:
            why = f"the run {state.lifecycle} at step {state.step}: {kind} not sent"
            if state.next_step:  # as `rl-console ls` says it: resume only where a checkpoint exists
                why += f"; next: {state.next_step}"
            elif state.lifecycle in ("crashed", "stopped") and state.run_id:
                why += f"; to continue it: rl-console run --resume {state.run_id}"
            elif state.lifecycle == "completed" and state.run_id:
                why += f"; to train further: rl-console run --resume {state.run_id} --max-steps N"
            return "warning", why
        if self.read_only:
            holder = ("" if self.read_only_requested
                      else f" ({state.control_holder or 'another console'} controls the run; T: take control)")
            return "warning", f"read-only: {kind} not sent{holder}"
        if not state.connected:
            return "error", f"{state.connection}: {kind} not sent"
        return None

    def binding_description(self, action: str, description: str) -> str:
        """A key's footer hint as it acts now: `p` resumes a paused run."""
        if action == "pause_resume" and self.state.state in ("paused", "pausing"):
            return "resume"
        return description

    def control_blocked(self, action: str) -> bool:
        """A run control that cannot act now: the footer dims it, the palette leaves it out, and
        pressing it says why instead of sending (see `refusal`)."""
        kind = self.RUN_CONTROLS.get(action)
        return kind is not None and self.refusal(kind) is not None

    def send_command(self, command: Any) -> bool:
        """Send a command unless it cannot act now (then say why on the status line); True if it went out."""
        refused = self.refusal(command.kind)
        if refused is not None:
            self.say(refused[1], refused[0])
            return False
        self.state.record_sent(command)
        self.run_worker(self._send(command), group="send", exit_on_error=False)
        return True

    async def _send(self, command: Any) -> None:
        try:
            await self.source.send(command)
        except Exception as exc:  # noqa: BLE001
            self.state.record_send_failed(command.id, str(exc) or type(exc).__name__)
            self.say(f"{command.kind} not sent: {exc}", "error")

    # -- replay: the step scrubber ---------------------------------------------------------
    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "scrub":
            return self.timeline is not None  # hidden from the footer unless replaying
        return True

    def replay_position(self) -> str:
        if self.timeline is None or not self._replay_loaded:
            return ""
        shown, last = self.timeline.position()
        return f"step {shown}/{last}" + ("" if self.timeline.at is None else " ([ ] to move)")

    def action_scrub(self, move: str | int) -> None:
        tl = self.timeline
        if tl is None:
            return
        if not self._replay_loaded:
            self.say("replay: still loading the event log", "warning")
            return
        target = tl.target(move)
        if target is None:
            self.say("replay: this run recorded no steps", "warning")
            return
        shown, last = tl.position()
        if target == shown and (tl.at is not None or target == last):
            return  # already there (the first/last step)
        state, rebuilt = tl.state_at(target, self.state)
        if rebuilt:
            state.run_id = state.run_id or self.state.run_id
            state.connection, state.connection_detail = self.state.connection, self.state.connection_detail
            self.state = state
            for screen in self._installed_live_screens():
                screen.state_replaced()
        self.repaint(force=True)

    def _installed_live_screens(self) -> list[LiveScreen]:
        screens = (textual_compat.mode_screen(self, mode) for mode in self.MODES)
        return [screen for screen in screens if isinstance(screen, LiveScreen)]

    # -- actions ------------------------------------------------------------------------
    def action_take_control(self) -> None:
        """T: take control from the client that holds it (another console, `ctl`); that one
        turns read-only and gets control back when this console leaves."""
        state = self.state
        if self.replay:
            self.say("replay: there is no run to control", "warning")
        elif self.read_only_requested:
            self.say("attached --read-only: attach again without --read-only to take control", "warning")
        elif state.ended or not state.connected:
            self.say(f"take control: {'the run ' + state.lifecycle if state.ended else state.connection}", "warning")
        elif state.control_role == "controller":
            self.say("this console already controls the run", "information")
        else:
            self.run_worker(self._send(Subscribe(take=True, client=getattr(self.source, "client", ""))),
                            group="send", exit_on_error=False)

    def action_pause_resume(self) -> None:
        self.send_command(Resume() if self.state.state in ("paused", "pausing") else Pause())

    def action_resync(self) -> None:
        self.send_command(ResyncWeights())

    def action_checkpoint(self) -> None:
        self.send_command(Checkpoint())

    def action_stop(self) -> None:
        refused = self.refusal("stop")
        if refused is not None:  # no dialog for what cannot happen
            severity, why = refused
            self.say(why, severity)
            return
        state = self.state
        last = state.last_checkpoint.step if state.last_checkpoint is not None else None
        self.push_screen(StopModal(state.run_id, state.step, last), self._stop_chosen)

    def _stop_chosen(self, checkpoint: bool | None) -> None:
        if checkpoint is None:
            self.say("stop cancelled: the run keeps going")
        elif self.send_command(Stop(checkpoint=checkpoint)):
            self.say("stop sent: " + ("a checkpoint is saved, then the run stops" if checkpoint
                                      else "the run stops at the next step boundary, without a checkpoint"))

    async def action_show(self, mode: str) -> None:
        if self.current_mode != mode and self.current_mode != "help":
            self._previous_mode = self.current_mode
        await self.switch_mode(mode)

    async def action_filter(self) -> None:
        await self.action_show("samples")
        screen = self.screen
        if isinstance(screen, SamplesScreen):
            screen.focus_filter()

    async def open_prompt(self, prompt: str) -> None:
        """The prompts screen on `prompt` (its reward history and groups)."""
        if self.state.prompts.status(prompt) is None:  # dropped past the tracker's bound: stay here
            self.say("this prompt's history is no longer held (the least recently sampled prompts are dropped past "
                     f"{self.state.prompts.max_prompts:,}); rl-console replay has every group", "warning")
            return
        await self.action_show("prompts")
        screen = self.screen
        if isinstance(screen, PromptsScreen):
            screen.show_prompt(prompt)

    def action_alerts(self) -> None:
        active, others = self.state.alerts_for_display()
        self.push_screen(AlertsModal([*active, *others]), self._alert_chosen)

    async def _alert_chosen(self, alert: Any) -> None:
        if alert is None or not alert.evidence:
            return
        await self.action_show("samples")
        screen = self.screen
        if isinstance(screen, SamplesScreen):
            screen.show_evidence(f"[{alert.rule}] step {alert.step}", alert.evidence)

    async def action_help(self) -> None:
        await self.action_show("help")

    def action_back(self) -> None:
        self.switch_mode(self._previous_mode if self._previous_mode != "help" else "dashboard")

    async def action_detach(self) -> None:
        self._repaint_timer.stop()
        await self._close_source()
        self.exit()

    #: Textual's own palette entries that say the console's things less clearly: "Quit" (leaves
    #: the console as "Detach" does; an operator may read it as "stop the run") and "Keys" (a
    #: widget panel; "Help: keys" lists every binding)
    HIDDEN_SYSTEM_COMMANDS = frozenset({"Quit", "Keys"})

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from (c for c in super().get_system_commands(screen) if c.title not in self.HIDDEN_SYSTEM_COMMANDS)
        for action, title, help_text in PALETTE:
            if not self.control_blocked(action):  # a control that cannot act now is not offered
                yield SystemCommand(title, help_text, partial(self.run_action, action))
