"""Policy diff: what the policy says, in words, at each weight version (`v`).

The run decodes its fixed probe prompts greedily at the initial weights and every
`telemetry.probe_every` steps (`policy_probe` events). This screen lists the prompts; for the
selected one, its output at each recorded version (newest first) with the per-function
rewards, and a word diff between two versions: `to` is the newest by default (it follows new
probes), `from` the version before it. `[` / `]` move `from`, `{` / `}` move `to`; Enter on a
version compares from it (or to it, when it is newer than `to`). In a replay the same events
come from the log, so the screen shows the run as recorded (its scrub keys work on the other
screens; here `[ ] { }` move the comparison).
"""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Container, Vertical
from textual.widgets import Static

from console.screens.base import LiveScreen
from console.state import RunState, fmt_num, one_line
from console.widgets.probe_list import ProbeList, ProbeRow
from console.widgets.probe_versions import ProbeVersions, VersionRow
from console.widgets.word_diff import ADDED, REMOVED, WordDiff, word_diff


def probe_rows(state: RunState) -> list[ProbeRow]:
    rows = []
    for prompt in state.probe_prompts():
        history = state.probe_history(prompt)  # newest first
        outputs = [o.output for _, o in reversed(history)]
        changes = sum(1 for a, b in zip(outputs, outputs[1:]) if a != b)
        rows.append(ProbeRow(prompt, history[0][1].reward, history[-1][1].reward, changes, len(history)))
    return rows


def version_rows(state: RunState, prompt: str) -> list[VersionRow]:
    history = state.probe_history(prompt)  # newest first
    rows = []
    for i, (probe, out) in enumerate(history):
        older = history[i + 1][1].output if i + 1 < len(history) else None
        rows.append(VersionRow(probe.weight_version, probe.step, out, None if older is None else older != out.output))
    return rows


def empty_message(state: RunState) -> str:
    """Why there is nothing to show yet, and when the first probe is expected."""
    every = state.probe_every
    if every == 0:
        return ("Probes are off for this run (telemetry.probe_every = 0). Set telemetry.probe_every = N in the "
                "profile to decode the probe prompts greedily every N steps.")
    t = state.telemetry
    if t and not t.get("probes") and not t.get("probe_prompts"):
        return "This run has no probe prompts (telemetry.probes = 0 and no telemetry.probe_prompts)."
    if every is None:
        return "No policy probes received (the run does not say telemetry.probe_every: an older backend?)."
    if state.ended:
        return f"This run recorded no policy probes (telemetry.probe_every = {every})."
    if state.step == 0:
        when = "at the initial weights, before the first step"
    else:
        when = f"after step {next_probe_step(state.step, every)}"
    return f"No policy probes yet: the first is expected {when} (telemetry.probe_every = {every})."


def next_probe_step(step: int, every: int) -> int:
    return (step // every + 1) * every


class ProbesScreen(LiveScreen):
    SCREEN_NAME = "policy diff"
    AUTO_FOCUS = "ProbeList"
    BINDINGS = [
        # the footer shows one key of each pair (the table's title names both)
        Binding("left_square_bracket", "move_from(-1)", "◀ from ]", tooltip="diff: compare from an older version"),
        Binding("right_square_bracket", "move_from(1)", "from ▶", show=False, tooltip="diff: compare from a newer version"),
        Binding("left_curly_bracket", "move_to(-1)", "◀ to }", tooltip="diff: compare to an older version (default: the newest)"),
        Binding("right_curly_bracket", "move_to(1)", "to ▶", show=False,
                tooltip="diff: compare to a newer version (the newest follows new probes)"),
    ]
    DEFAULT_CSS = """
    ProbesScreen #probes-title { height: 1; background: $boost; padding: 0 1; }
    ProbesScreen #probes-body { height: 1fr; layout: vertical; }
    ProbesScreen #probes-left { height: 1fr; }
    ProbesScreen #probe-list { height: auto; max-height: 6; min-height: 2; }
    ProbesScreen #probe-versions { height: 1fr; min-height: 3; border-top: solid $primary 50%; border-title-color: $text-muted; }
    ProbesScreen #probe-diff { height: 1fr; min-height: 4; border-top: solid $primary 50%; }
    ProbesScreen.-wide #probes-body { layout: horizontal; }
    ProbesScreen.-wide #probes-left { width: 1fr; height: 100%; }
    ProbesScreen.-wide #probe-list { max-height: 12; }
    ProbesScreen.-wide #probe-diff { width: 1fr; height: 100%; border-top: none; border-left: solid $primary 50%; }
    """

    #: below this many cells for the output, the versions table leaves out the per-function columns
    MIN_OUTPUT = 20

    def __init__(self) -> None:
        super().__init__()
        self.prompt: str | None = None  # the selected probe prompt
        self.from_version: int | None = None  # None: the version just before `to`
        self.to_version: int | None = None  # None: the newest (follows new probes)

    def compose_body(self) -> ComposeResult:
        yield Static("", id="probes-title")
        with Container(id="probes-body"):
            with Vertical(id="probes-left"):
                yield ProbeList(id="probe-list")
                yield ProbeVersions(id="probe-versions")
            yield WordDiff(id="probe-diff")

    # -- the comparison ---------------------------------------------------------------------
    def versions(self) -> list[int]:
        """The selected prompt's recorded versions, oldest first."""
        if self.prompt is None:
            return []
        return [r.weight_version for r in reversed(version_rows(self.console_app.state, self.prompt))]

    def compared(self) -> tuple[int | None, int | None]:
        """(from, to) versions as shown now (None where there is nothing to compare)."""
        vs = self.versions()
        if not vs:
            return None, None
        to = self.to_version if self.to_version in vs else vs[-1]
        i = vs.index(to)
        older = [v for v in vs[:i]]
        frm = self.from_version if self.from_version in older else (older[-1] if older else None)
        return frm, to

    def action_move_from(self, delta: int) -> None:
        vs = self.versions()
        frm, to = self.compared()
        if frm is None or to is None:
            self.console_app.say("policy diff: only one version recorded for this prompt so far", "warning")
            return
        i = max(0, min(vs.index(frm) + delta, vs.index(to) - 1))
        self.from_version = vs[i]
        self.console_app.repaint(force=True)

    def action_move_to(self, delta: int) -> None:
        vs = self.versions()
        frm, to = self.compared()
        if frm is None or to is None:
            self.console_app.say("policy diff: only one version recorded for this prompt so far", "warning")
            return
        j = max(1, min(vs.index(to) + delta, len(vs) - 1))
        self.to_version = None if j == len(vs) - 1 else vs[j]  # the newest: follow new probes
        if self.from_version is not None and vs.index(frm) >= j:
            self.from_version = None
        self.console_app.repaint(force=True)

    def on_probe_list_selected(self, message: ProbeList.Selected) -> None:
        self.prompt = message.prompt
        self.console_app.repaint(force=True)

    def on_probe_versions_chosen(self, message: ProbeVersions.Chosen) -> None:
        vs = self.versions()
        frm, to = self.compared()
        v = message.weight_version
        if to is None or v not in vs:
            return
        if v < to:
            self.from_version = v
        elif v > to:
            self.to_version = None if v == vs[-1] else v
        self.console_app.repaint(force=True)

    # -- painting -------------------------------------------------------------------------------
    def refresh_view(self, state: RunState) -> None:
        super().refresh_view(state)
        rows = probe_rows(state)
        plist = self.query_one(ProbeList)
        plist.set_rows(rows, max((plist.size.width or self.size.width) - 29, 16))
        self.prompt = plist.selected_prompt
        title = self.query_one("#probes-title", Static)
        diff = self.query_one("#probe-diff")
        table = self.query_one(ProbeVersions)
        if not rows:
            title.update(Text("policy probes: none yet", style="bold"))
            table.set_rows([], state.reward_functions, {}, 8)
            diff.show(Text("policy diff", style="bold"), Text(empty_message(state)))
            return
        every = state.probe_every
        head = Text(no_wrap=True, overflow="ellipsis", end="")
        head.append(f"policy probes: {len(rows)} prompts · {len(state.probes_held())} versions", style="bold")
        if every:
            head.append(f" · every {every} steps")
            if not state.ended:
                head.append(f" · next after step {next_probe_step(state.step, every)}")
        newest = state.probes[-1] if state.probes else None
        if newest is not None and newest.unscored:  # a reward function that gave the newest probe nothing: why
            head.append(" · not scored: " + "; ".join(f"{n} {why}" for n, why in newest.unscored.items()), style="yellow")
        title.update(head)
        vrows = version_rows(state, self.prompt or rows[0].prompt)
        frm, to = self.compared()
        marks = {v: label for v, label in ((frm, "from"), (to, "to")) if v is not None}
        functions = state.reward_functions
        width = (table.size.width or self.size.width) - ProbeVersions.fixed_width(functions)
        if width < self.MIN_OUTPUT and functions:  # narrow: the output first (the diff's heading has the rewards)
            functions = []
            width = (table.size.width or self.size.width) - ProbeVersions.fixed_width(functions)
        table.set_rows(vrows, functions, marks, max(width, 12))
        table.border_title = "[ ] from · { } to · enter: compare with it"
        diff.show(*self._diff_text(vrows, frm, to))

    def _diff_text(self, rows: list[VersionRow], frm: int | None, to: int | None) -> tuple[Text, Text]:
        by_version = {r.weight_version: r for r in rows}
        heading = Text(overflow="ellipsis")
        heading.append("prompt: ", style="bold")
        heading.append(one_line(self.prompt or "", 400), style="italic")
        new = by_version.get(to) if to is not None else None
        if new is None:
            return heading, Text("no output recorded", style="dim")
        heading.append("\n")
        if frm is None:
            heading.append(f"v{new.weight_version} (step {new.step}) · reward {fmt_num(new.output.reward)} · "
                           "the only version recorded so far", style="bold")
            return heading, Text(new.output.output)
        old = by_version[frm]
        d = word_diff(old.output.output, new.output.output)
        heading.append(f"v{old.weight_version} (step {old.step}) → v{new.weight_version} (step {new.step})", style="bold")
        heading.append(f" · reward {fmt_num(old.output.reward)} → {fmt_num(new.output.reward)}")
        for name in sorted(set(old.output.rewards) | set(new.output.rewards)):
            a, b = old.output.rewards.get(name), new.output.rewards.get(name)
            heading.append(f" · {name} {fmt_num(a)} → {fmt_num(b)}" if a != b else f" · {name} {fmt_num(b)}")
        heading.append(" · ")
        if d.same:
            heading.append("same text", style="bold")
        else:
            heading.append(f"-{d.removed}", style=REMOVED.replace(" strike", ""))
            heading.append(" / ")
            heading.append(f"+{d.added}", style=ADDED.replace(" underline", ""))
            heading.append(" words")
        return heading, d.text
