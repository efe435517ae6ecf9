"""CompareApp: `rl-console compare` on a terminal. One metric at a time (reward total and per
function, KL, completion length, step time) with every run's curve overlaid in its colour on
the shared step axis, the operator commands marked at the first step each affected (and
listed), the profile fields the runs differ in, and a legend (letter, state, live, the
metric's last / min / max per run).

The report is `console.compare.build`'s (the `--json` shape); this only draws it. While a run
is live, a worker thread re-reads what its log gained every REFRESH_S seconds
(`compare.Feed.refresh`: only the new events, never the whole log) and hands the new report
to the UI; the UI never reads a log itself.

Imports only backend.protocol from the backend, like the rest of the console.
"""

from __future__ import annotations

import math
from typing import Any

from rich.style import Style
from rich.table import Table
from rich.text import Text
from textual import work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import ModalScreen
from textual.widget import Widget
from textual.widgets import DataTable, Static
from textual.worker import Worker, WorkerState

from backend.protocol.eventlog import EventLogError
from console import compare, runs
from console.state import chart_windows, window_start
from console.widgets.footer import KeyFooter
from console.widgets.overlay_chart import Curve, Mark, OverlayChart

MARKS_HELP = ("A letter under the plot: that run's operator command took effect at that step (a dim ┊ "
              "marks the column in the plot); ↻: the run resumed from a checkpoint there; +: several "
              "marks in one place. A white dot: the curves of two or more runs meet there. A run's line "
              "breaks where it has no value (KL without beta, a skipped update, after its last step). "
              "Commands after a run's last step sit at the right edge.")


KEYS_HELP = (
    ("← →", "the previous / next metric (reward, each reward function, KL, length, step time)"),
    ("1-9", "that metric of the list"),
    ("[ ]", "a step cursor, one step back / on ({ } ten): the legend reads each run's value at it"),
    ("enter", "on a command: the cursor to the step it took effect"),
    ("esc", "drop the cursor"),
    ("z", "the chart's window: the whole run, the last 200 steps, the last 50 steps"),
    ("r", "re-read the live runs' logs now (they are re-read every few seconds anyway)"),
    ("tab", "the commands list, then the profile diff (↑ ↓ scroll it)"),
    ("?", "this help"),
    ("q", "leave (the runs are not touched)"),
)


def run_color(index: int) -> str:
    return compare.COLORS[index % len(compare.COLORS)]


def fmt(value: Any) -> str:
    return compare._fmt(value)


def number_format(values: list[float]) -> str:
    """One format for a column of numbers: three significant digits of the largest, the same
    decimals for all (0.770 / 0.273, 29.6 / 14.0)."""
    top = max((abs(v) for v in values), default=0.0)
    if top == 0 or top >= 1e5 or top < 1e-4:
        return "{:.3g}"
    return "{:.%df}" % max(0, 2 - math.floor(math.log10(top)))


def span_text(window: int | None, shown: int) -> str:
    return f"last {window} steps" if window is not None else f"all {shown:,} steps"


class MetricList(Widget):
    """The metrics, the shown one highlighted; a click picks one (shown on wide terminals)."""

    DEFAULT_CSS = """
    MetricList {
        width: 32;
        height: 1fr;
        border: round $primary 60%;
        border-title-color: $text;
        padding: 0 1;
    }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.keys: list[str] = []
        self.current = 0
        self.border_title = "metrics ←→"

    def show(self, keys: list[str], current: int) -> None:
        self.keys, self.current = keys, current
        self.refresh()

    def render(self) -> Text:
        width = max(self.size.width, 4)
        lines = []
        for i, key in enumerate(self.keys):
            digit = str(i + 1) if i < 9 else " "
            line = Text(f"{digit} {compare._title(key)}", end="")
            line.truncate(width, overflow="ellipsis", pad=True)
            line.stylize(Style.from_meta({"@click": f"app.pick_metric({i + 1})"}))
            if i == self.current:
                line.stylize("bold reverse")
            lines.append(line)
        return Text("\n", no_wrap=True, end="").join(lines)


class CompareHelp(ModalScreen[None]):
    BINDINGS = [Binding("escape,q,question_mark", "dismiss", "close", tooltip="close this help")]
    DEFAULT_CSS = """
    CompareHelp { align: center middle; }
    CompareHelp > VerticalScroll {
        width: 90%;
        max-width: 110;
        height: 85%;
        border: round $accent;
        border-title-color: $text;
        background: $surface;
        padding: 0 1;
    }
    """

    def compose(self) -> ComposeResult:
        keys = Table(box=None, show_header=False, padding=(0, 2), expand=False)
        keys.add_column(style="bold cyan", no_wrap=True)
        keys.add_column()
        for key, what in KEYS_HELP:
            keys.add_row(key, what)
        with VerticalScroll() as box:
            box.border_title = "compare · keys (esc closes)"
            yield Static(keys)
            yield Static(Text("\n" + MARKS_HELP, style="dim"))


class CompareApp(App[None]):
    TITLE = "rl-console compare"
    ENABLE_COMMAND_PALETTE = False
    #: seconds between two looks at a live run's log
    REFRESH_S = 3.0
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (120, "-wide")]
    #: rows the chart keeps before the commands and the profile diff get any (they get at most
    #: 8 rows, 12 on a terminal of 36 rows or more; under 5 they are left out)
    CHART_MIN_ROWS = 10
    CSS = """
    Screen { layout: vertical; }
    #cmp-head { height: 1; background: $boost; padding: 0 1; text-wrap: nowrap; text-overflow: ellipsis; }
    #cmp-legend { height: auto; padding: 0 1; }
    #cmp-middle { height: 1fr; }
    #cmp-metrics { display: none; }
    Screen.-wide #cmp-metrics { display: block; }
    #cmp-chart { width: 1fr; }
    #cmp-bottom { height: 8; }
    #cmp-bottom DataTable {
        width: 1fr;
        overflow-x: hidden;
        height: 1fr;
        border: round $primary 60%;
        border-title-color: $text;
    }
    #cmp-bottom DataTable:focus { border: round $accent; }
    """
    BINDINGS = [
        Binding("right", "metric(1)", "metric", priority=True, key_display="←→", tooltip="the next metric"),
        Binding("left", "metric(-1)", "metric", show=False, priority=True, tooltip="the previous metric"),
        *(Binding(str(n), f"pick_metric({n})", f"metric {n}", show=False, tooltip=f"metric {n} of the list")
          for n in range(1, 10)),
        Binding("right_square_bracket", "cursor(1)", "step", key_display="[ ]",
                tooltip="a step cursor: the legend reads each run's value there (one step on; { } ten)"),
        Binding("left_square_bracket", "cursor(-1)", "step", show=False, tooltip="the step cursor one step back"),
        Binding("right_curly_bracket", "cursor(10)", "+10", show=False, tooltip="the step cursor ten steps on"),
        Binding("left_curly_bracket", "cursor(-10)", "-10", show=False, tooltip="the step cursor ten steps back"),
        Binding("escape", "cursor(0)", "no cursor", show=False, tooltip="drop the step cursor"),
        Binding("z", "zoom", "zoom", tooltip="the chart's window: the whole run, the last 200 steps, the last 50 steps"),
        Binding("r", "reload", "re-read", show=False, tooltip="re-read the live runs' logs now "
                "(they are re-read every few seconds anyway)"),
        Binding("question_mark", "help", "help", tooltip="keys and how to read the chart"),
        Binding("q", "quit", "quit", tooltip="leave (the runs are not touched)"),
    ]

    def __init__(self, feed: compare.Feed, report: dict[str, Any] | None = None, *, refresh_s: float | None = None) -> None:
        super().__init__()
        self.feed = feed
        self.report = report if report is not None else feed.report()
        self.refresh_s = refresh_s if refresh_s is not None else self.REFRESH_S
        self.metric_index = 0
        self.window_index = 0
        self.error = ""
        self.cursor: int | None = None  # a step the legend reads out
        self.row_steps: dict[str, int] = {}  # commands table row key -> its step
        self.reads = 0  # reports taken from the feed since the start (tests wait on it)
        self._reading = False
        self._tables_sig: tuple = ()

    # ---- layout -------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield Static(id="cmp-head")
        yield Static(id="cmp-legend")
        with Horizontal(id="cmp-middle"):
            yield MetricList(id="cmp-metrics")
            yield OverlayChart(id="cmp-chart")
        with Horizontal(id="cmp-bottom"):
            yield DataTable(id="cmp-commands", cursor_type="row", zebra_stripes=True)
            yield DataTable(id="cmp-diff", cursor_type="row", zebra_stripes=True)
        yield KeyFooter()

    def on_mount(self) -> None:
        self.redraw()
        if self.feed.live:
            self.timer = self.set_interval(self.refresh_s, self.poll)

    # ---- the data -----------------------------------------------------------------------
    def letters(self) -> dict[str, str]:
        return compare._letters(self.report)

    def run_colors(self) -> dict[str, str]:
        return {r["run"]: run_color(i) for i, r in enumerate(self.report["runs"])}

    @property
    def metric_keys(self) -> list[str]:
        return list(self.report["metrics"])

    @property
    def metric(self) -> str:
        keys = self.metric_keys
        self.metric_index = min(self.metric_index, len(keys) - 1)
        return keys[self.metric_index]

    def windows(self) -> list[int | None]:
        return chart_windows(len(self.report["steps"]))

    def window(self) -> int | None:
        windows = self.windows()
        self.window_index %= len(windows)
        return windows[self.window_index]

    def marks(self) -> list[Mark]:
        letters, colors = self.letters(), self.run_colors()
        out = []
        for (run, step), acted in compare._marks(self.report).items():
            resume_only = all("resumed_from" in c for c in acted)
            out.append(Mark(step, "↻" if resume_only else letters[run], colors[run]))
        return out

    # ---- painting -----------------------------------------------------------------------
    def redraw(self) -> None:
        report, key = self.report, self.metric
        axis = report["steps"]
        window = self.window()
        first = window_start(axis, window)
        start = 0 if first is None else next(i for i, s in enumerate(axis) if s >= first)
        letters, colors = self.letters(), self.run_colors()
        curves = [Curve(letters[r["run"]], colors[r["run"]], tuple(report["metrics"][key][r["run"]][start:]))
                  for r in report["runs"]]
        keys = self.metric_keys
        title = f"{compare._title(key)} · {self.metric_index + 1}/{len(keys)} ←→ · {span_text(window, len(axis) - start)} (z)"
        if self.cursor is not None:
            title += f" · ▲ step {self.cursor}"
        self.query_one(OverlayChart).show(axis[start:], curves, self.marks(), title,
                                          subtitle="letter: a command took effect · ↻ resumed · white: curves meet",
                                          empty="no run has a value for this metric (KL: only with training.beta > 0)",
                                          cursor=self.cursor)
        self.query_one(MetricList).show(keys, self.metric_index)
        self.fit_bottom()
        self.query_one("#cmp-head", Static).update(self.head())
        self.query_one("#cmp-legend", Static).update(self.legend(key))
        self.fill_tables()

    def head(self) -> Text:
        report = self.report
        axis = report["steps"]
        text = Text(no_wrap=True, overflow="ellipsis", end="")
        text.append("compare", style="bold")
        text.append(f" · {len(report['runs'])} runs · steps {axis[0]}–{axis[-1]}")
        if self.error:
            text.append(f" · {self.error}", style="bold red")
        live = [self.letters()[r["run"]] for r in report["runs"] if r["live"]]
        if live:
            text.append(f" · live: {' '.join(live)}, re-read every {self.refresh_s:g} s", style="green")
        skipped = [f"{self.letters()[r['run']]}: {r['undecodable_events']}" for r in report["runs"]
                   if r.get("undecodable_events")]
        if skipped:
            text.append(f" · events of a newer rl-console left out ({', '.join(skipped)})", style="yellow")
        return text

    def legend(self, key: str) -> Table:
        wide = self.size.width >= 120
        table = Table(box=None, show_header=True, header_style="dim", pad_edge=False, padding=(0, 1), expand=False)
        table.add_column("", no_wrap=True)
        table.add_column("run", no_wrap=True, overflow="ellipsis", min_width=8, max_width=40 if wide else 26)
        table.add_column("state", no_wrap=True)
        table.add_column("steps", no_wrap=True)
        for col in ("last", "min", "max"):
            table.add_column(col, justify="right", no_wrap=True)
        at = self.report["steps"].index(self.cursor) if self.cursor in self.report["steps"] else None
        if at is not None:
            table.add_column(f"▲{self.cursor}", justify="right", no_wrap=True, style="bold")
        if wide:
            table.add_column("profile", no_wrap=True, overflow="ellipsis", max_width=30)
        letters, colors = self.letters(), self.run_colors()
        numbers = [v for r in self.report["runs"] for k in ("last", "min", "max")
                   if (v := self.report["summary"][r["run"]][key][k]) is not None]
        form = number_format(numbers)
        for r in self.report["runs"]:
            summ = self.report["summary"][r["run"]][key]
            state = Text(r["state"])
            if r["live"]:
                state.append(" ● live", style="bold green")
            steps = f"{r['steps'][0]}–{r['steps'][-1]}" if r["steps"] else "-"
            row: list[Any] = [Text(f"{letters[r['run']]} ━━", style=f"bold {colors[r['run']]}"), r["run"], state, steps,
                              *("-" if summ[k] is None else form.format(summ[k]) for k in ("last", "min", "max"))]
            if at is not None:
                value = self.report["metrics"][key][r["run"]][at]
                row.append("-" if value is None else form.format(value))
            if wide:
                row.append(r["profile"] or "-")
            table.add_row(*row)
        return table

    def fill_tables(self) -> None:
        report = self.report
        # the command column fits its half of the screen and wraps (a rejection's reason is read whole)
        command_w = max(12, self.size.width // 2 - 2 - 1 - (3 + 2) - (4 + 2) - 2)
        sig = (tuple((c["run"], c["command_id"], c["status"], c["step"]) for c in report["commands"]),
               tuple(tuple(r["resumed_from"]) for r in report["runs"]), repr(report["profile_diff"]), command_w)
        if sig == self._tables_sig:
            return
        self._tables_sig = sig
        letters, colors = self.letters(), self.run_colors()
        cmds = self.query_one("#cmp-commands", DataTable)
        cmds.clear(columns=True)
        cmds.add_column("run", width=3)
        cmds.add_column("step", width=4)
        cmds.add_column("command", width=command_w)
        rows = []
        for r in report["runs"]:
            for step in r["resumed_from"]:
                rows.append((step + 1, r["run"], Text(f"resumed from step {step}", style="italic")))
        for c in report["commands"]:
            marked = c["status"] in ("applied", "failed", "accepted") and c["command"] not in compare.UNMARKED
            rows.append((c["first_step_affected"], c["run"],
                         Text(compare._command_text(c), style="" if marked else "dim")))
        order = {r["run"]: i for i, r in enumerate(report["runs"])}
        self.row_steps = {}
        for i, (step, run, what) in enumerate(sorted(rows, key=lambda x: (x[0], order[x[1]]))):
            cmds.add_row(Text(letters[run], style=f"bold {colors[run]}"), str(step), what, key=str(i), height=None)
            self.row_steps[str(i)] = step
        cmds.border_title = f"commands · {len(rows)} · step: the first it affected"
        diff = self.query_one("#cmp-diff", DataTable)
        diff.clear(columns=True)
        diff.add_columns("field", *letters.values())
        for d in report["profile_diff"]:
            cells = [Text(fmt(d["values"][r["run"]]), style=colors[r["run"]]) if r["run"] in d["values"]
                     else Text("(absent)", style="dim") for r in report["runs"]]
            diff.add_row(d["key"], *cells)
        n = len(report["profile_diff"])
        diff.border_title = f"profile diff · {n} field{'s' if n != 1 else ''}" if n else "profile diff · none (same profile)"

    def on_resize(self) -> None:
        self.query_one("#cmp-legend", Static).update(self.legend(self.metric))
        self.fit_bottom()
        self.fill_tables()

    def fit_bottom(self) -> None:
        """The chart first: the commands and the profile diff get what is left above its
        CHART_MIN_ROWS (at most 8 rows, 12 on a tall terminal), none below 5."""
        height = self.size.height
        above = 1 + (len(self.report["runs"]) + 1) + 1  # head, legend (with its header), footer
        rows = min(12 if height >= 36 else 8, height - above - self.CHART_MIN_ROWS)
        bottom = self.query_one("#cmp-bottom")
        bottom.display = rows >= 5
        if rows >= 5:
            bottom.styles.height = rows

    # ---- keys ---------------------------------------------------------------------------
    def action_metric(self, delta: int) -> None:
        self.metric_index = (self.metric_index + delta) % len(self.metric_keys)
        self.redraw()

    def action_pick_metric(self, n: int) -> None:
        if 1 <= n <= len(self.metric_keys):
            self.metric_index = n - 1
            self.redraw()

    def action_cursor(self, delta: int) -> None:
        """Move the step cursor by `delta` steps of the shown window (0: drop it); it starts at
        the window's last step going back, at its first going on."""
        axis = self.report["steps"]
        first = window_start(axis, self.window())
        shown = axis if first is None else [s for s in axis if s >= first]
        if delta == 0 or not shown:
            self.cursor = None
        elif self.cursor not in shown:
            self.cursor = shown[-1] if delta < 0 else shown[0]
        else:
            i = shown.index(self.cursor) + delta
            self.cursor = shown[min(max(i, 0), len(shown) - 1)]
        self.redraw()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        """Enter (or a click) on a command: the cursor to the step it took effect, shown."""
        step = self.row_steps.get(str(event.row_key.value)) if event.data_table.id == "cmp-commands" else None
        if step is None:
            return
        axis = self.report["steps"]
        self.cursor = min(step, axis[-1])
        first = window_start(axis, self.window())
        if first is not None and self.cursor < first:
            self.window_index = 0  # the whole run: the step is before the zoomed window
        self.redraw()

    def action_zoom(self) -> None:
        self.window_index = (self.window_index + 1) % len(self.windows())
        self.redraw()

    def action_reload(self) -> None:
        if self.feed.live:
            self.poll()
        else:
            self.notify("no run is live: the logs are complete", timeout=3)

    def action_help(self) -> None:
        self.push_screen(CompareHelp())

    # ---- live runs ----------------------------------------------------------------------
    def poll(self) -> None:
        if self._reading or not self.feed.live:
            return
        self._reading = True
        self.read_feed()

    @work(thread=True, exclusive=True, group="feed", exit_on_error=False)
    def read_feed(self) -> None:
        """In a thread: only what the live logs gained is read (compare.update)."""
        try:
            report, error = self.feed.refresh(), ""
        except (EventLogError, compare.CompareError, runs.RunNotFound, OSError) as exc:
            report, error = None, str(exc) or type(exc).__name__
        try:
            self.call_from_thread(self.feed_read, report, error)
        except RuntimeError:  # the app is closing
            pass

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        """A read that failed in a way read_feed does not expect: say so, and keep looking."""
        if event.worker.group == "feed" and event.state == WorkerState.ERROR:
            error = event.worker.error
            self.feed_read(None, f"read failed: {type(error).__name__}: {error}")

    def feed_read(self, report: dict[str, Any] | None, error: str) -> None:
        self._reading = False
        changed = report is not None or error != self.error
        if error and error != self.error:
            self.notify(error, title="reading the live logs", severity="error", timeout=8)
        self.error = error
        if report is not None:
            self.report = report
            self.reads += 1
        if changed:
            self.redraw()
        if not self.feed.live and getattr(self, "timer", None) is not None:
            self.timer.stop()  # every run ended: its log is complete
            self.redraw()
