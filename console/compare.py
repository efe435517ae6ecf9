"""`rl-console compare`: several runs' curves on one step axis, their profiles diffed, their
operator commands marked where they took effect. Read from the runs' event logs (finished or
live) through the protocol's read-only reader; no Textual import.

The pieces are pure: `load` reads one log into a `RunCurves`, `build` aligns several into the
JSON-ready report (`REPORT_VERSION`, documented in docs/protocol.md), and `render_table` /
`render_rich` print that report.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from backend.protocol.eventlog import EventLogMissing, EventLogReader
from console.runs import ENDED as LS_ENDED

REPORT_VERSION = 1

#: the curves every run has, in display order: (key, title, unit)
BASE_METRICS = (
    ("reward", "reward (weighted total)", ""),
    ("kl", "KL", ""),
    ("completion_length", "completion length", "tokens"),
    ("step_time", "step time", "s"),
)
#: each run's colour, by its position (A, B, ...), in the printed view and the interactive one
COLORS = ("cyan", "magenta", "green", "yellow", "blue", "red")
_KINDS = ("run_started", "step_metrics", "command_result", "params_applied", "run_resumed", "state_changed")


class CompareError(ValueError):
    """Runs that cannot be compared (too few, one without steps); the message says which."""


@dataclass
class Command:
    """One operator command, as the log recorded it; `step` is the run's completed steps when it
    was applied (or answered), so it acts from step `step + 1` on."""

    command_id: str
    command: str
    status: str
    step: int
    reason: str = ""
    changed: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"command_id": self.command_id, "command": self.command, "status": self.status, "step": self.step,
                "first_step_affected": self.step + 1, "reason": self.reason, "changed": self.changed}

    def describe(self) -> str:
        what = self.command
        if self.changed:
            what = "set " + " ".join(f"{k}={v}" for k, v in self.changed.items())
        if self.status not in ("applied",):
            what += f" ({self.status}{': ' + self.reason if self.reason else ''})"
        return what


@dataclass
class RunCurves:
    label: str
    path: str
    state: str = ""
    live: bool = False
    profile: str = ""
    model: str = ""
    task: str = ""
    profile_data: dict[str, Any] = field(default_factory=dict)  # as the run first started
    resumed_data: dict[str, Any] = field(default_factory=dict)  # as its newest resume started it (live values carried)
    reward_functions: list[str] = field(default_factory=list)
    steps: dict[int, Any] = field(default_factory=dict)  # step -> its StepMetrics (the newest timeline's)
    commands: list[Command] = field(default_factory=list)
    resumes: list[int] = field(default_factory=list)  # steps a resumed backend continued from
    undecodable: int = 0  # events this version cannot decode (a newer backend's), left out
    # where `update` goes on from: the next event to read, the commands by id, the log's newest state
    next_seq: int = field(default=0, repr=False, compare=False)
    by_id: dict[str, Command] = field(default_factory=dict, repr=False, compare=False)
    last_state: str = field(default="", repr=False, compare=False)

    def values(self, key: str) -> dict[int, float | None]:
        """A curve: step -> value; None where the step has none (KL without beta, a skipped update)."""
        return {s: metric_value(m, key) for s, m in self.steps.items()}


def metric_value(m: Any, key: str) -> float | None:
    if m.update_skipped:  # its rewards measure nothing; charts leave such a step out
        return None if key.startswith("reward") else _base(m, key)
    if key.startswith("reward/"):
        return _finite(m.rewards_by_function.get(key[len("reward/"):]))
    return _base(m, key)


def _base(m: Any, key: str) -> float | None:
    value = {"reward": m.reward_mean, "kl": m.kl, "completion_length": m.completion_length_mean,
             "step_time": m.times.total}.get(key)
    return _finite(value)


def _finite(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def load(label: str, path: str | Path, *, state: str = "", live: bool = False) -> RunCurves:
    """One run's curves and commands from its event log. A resume drops the steps (and the
    commands) of the timeline it replaced: steps after its checkpoint are run again."""
    run = RunCurves(label=label, path=str(path), state=state, live=live)
    update(run, state=state, live=live)
    return run


def update(run: RunCurves, *, state: str = "", live: bool | None = None) -> bool:
    """Read the events appended to `run`'s log since it was loaded or last updated (a live run's
    refresh costs what is new, not the whole log). `state` / `live`: its lifecycle as the
    caller knows it now (state: "" = the log's newest state). Returns whether anything new
    was read or the state changed."""
    before = (run.state, run.live)
    if live is not None:
        run.live = live
    try:
        log = EventLogReader(run.path)
    except EventLogMissing:  # a run that has not written its first event: no steps yet
        run.state = state or "starting"
        return (run.state, run.live) != before
    new = 0
    with log:
        end = log.last_seq() + 1  # first: an event appended while this reads is read next time
        for ev in log.read(from_seq=run.next_seq, to_seq=end, kinds=_KINDS):
            new += 1
            _apply(run, ev)
        run.next_seq = max(run.next_seq, end)
        run.undecodable += log.skipped
    run.state = state or run.last_state or "unknown"
    return bool(new) or (run.state, run.live) != before


def _apply(run: RunCurves, ev: Any) -> None:
    by_id = run.by_id
    if ev.kind == "run_started":
        run.profile, run.model, run.task = ev.profile, ev.model, ev.task
        if not run.profile_data:  # the profile the run was started with; a resume's (which carries the live
            run.profile_data = dict(ev.profile_data)  # values and any --set) is kept apart
        else:
            run.resumed_data = dict(ev.profile_data)
        run.reward_functions = list(ev.reward_functions)
    elif ev.kind == "step_metrics":
        run.steps[ev.step] = ev
    elif ev.kind == "run_resumed":
        run.resumes.append(ev.step)
        run.steps = {s: m for s, m in run.steps.items() if s <= ev.step}
        run.commands = [c for c in run.commands if c.step <= ev.step]
        run.by_id = {c.command_id: c for c in run.commands}
    elif ev.kind == "command_result":
        cmd = by_id.get(ev.command_id)
        if cmd is None:
            cmd = by_id[ev.command_id] = Command(ev.command_id, ev.command, ev.status, ev.step, ev.reason)
            run.commands.append(cmd)
        else:  # accepted -> applied/failed: the newest answer counts
            cmd.status, cmd.step, cmd.reason = ev.status, ev.step, ev.reason
    elif ev.kind == "params_applied":
        cmd = by_id.get(ev.command_id)
        if cmd is not None:
            cmd.changed = dict(ev.changed)
    elif ev.kind == "state_changed":
        run.last_state = ev.state


@dataclass
class Feed:
    """The runs of one comparison, kept up to date: `status[i]()` says where run i stands now
    (its state, whether its backend is alive); None for a log that is not a run of this
    machine (a copied one: its state is the log's, and it is not live)."""

    runs: list[RunCurves]
    status: list[Callable[[], tuple[str, bool]] | None]

    @property
    def live(self) -> bool:
        return any(r.live for r in self.runs)

    def report(self) -> dict[str, Any]:
        return build(self.runs)

    def refresh(self) -> dict[str, Any] | None:
        """Read what the live runs appended since the last look; the new report, or None when
        nothing changed. A run that ended is read one last time, then no more."""
        changed = False
        for run, status in zip(self.runs, self.status):
            if not run.live:
                continue
            state, live = status() if status is not None else ("", False)
            changed |= update(run, state=state, live=live)
        return build(self.runs) if changed else None


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"sampling": {"temperature": 0.9}} -> {"sampling.temperature": 0.9}."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def profile_diff(runs: list[RunCurves]) -> list[dict[str, Any]]:
    """The profile fields whose values differ between the runs, sorted by name. A field a run's
    profile does not have is listed in `absent` (and left out of `values`)."""
    def named(r: RunCurves, data: dict[str, Any]) -> dict[str, Any]:
        f = flatten(data)
        if f.get("task.reward_funcs") == [] and r.reward_functions:  # none listed: the task's built-in ones ran
            f["task.reward_funcs"] = [f"{name} (built in)" for name in r.reward_functions]
        return f

    flat = [named(r, r.profile_data) for r in runs]
    for r, f in zip(runs, flat):
        if r.resumed_data and r.resumes:  # what the newest resume ran with instead: marked, not passed off as the profile
            later = named(r, r.resumed_data)
            for key, value in later.items():
                # of the run section, only the step budget is the operator's choice at a resume
                # (the name, the directory and the like are the run's own bookkeeping)
                if f.get(key, "–") != value and (not key.startswith("run.") or key == "run.max_steps"):
                    f[key] = f"{f.get(key, '–')} → {value} (from the resume at step {r.resumes[-1]})"
    keys = sorted(set().union(*flat))
    diff = []
    for key in keys:
        present = {r.label: f[key] for r, f in zip(runs, flat) if key in f}
        absent = [r.label for r, f in zip(runs, flat) if key not in f]
        distinct = {repr(v) for v in present.values()}
        if absent or len(distinct) > 1:
            diff.append({"key": key, "values": present, "absent": absent})
    return diff


def metric_keys(runs: list[RunCurves]) -> list[str]:
    functions: list[str] = []
    for r in runs:
        functions += [f for f in r.reward_functions if f not in functions]
        for m in r.steps.values():
            functions += [f for f in m.rewards_by_function if f not in functions]
    return ["reward"] + [f"reward/{f}" for f in functions] + [k for k, _, _ in BASE_METRICS[1:]]


#: the states of a run that takes no more steps: `ls`'s, and the log's own "finished"
ENDED = (*LS_ENDED, "finished")


def build(runs: list[RunCurves]) -> dict[str, Any]:
    """The comparison of two or more loaded runs (the `--json` shape)."""
    if len(runs) < 2:
        raise CompareError(f"compare needs at least two runs (got {len(runs)})")
    empty = [r for r in runs if not r.steps]
    if empty:
        ended = [r for r in empty if r.state in ENDED]
        if ended:  # it never will have one
            raise CompareError("; ".join(f"{r.label} ended ({r.state}) before its first step" for r in ended)
                               + ": it has nothing to compare")
        raise CompareError("; ".join(f"{r.label} has no steps yet ({r.state})" for r in empty)
                           + ": compare it once it has finished a step")
    axis = sorted(set().union(*(r.steps for r in runs)))
    metrics: dict[str, dict[str, list[float | None]]] = {}
    for key in metric_keys(runs):
        series = {}
        for r in runs:
            values = r.values(key)
            series[r.label] = [values.get(s) for s in axis]
        metrics[key] = series
    summary = {r.label: {key: _summary([v for v in metrics[key][r.label] if v is not None]) for key in metrics}
               for r in runs}
    return {
        "compare": REPORT_VERSION,
        "steps": axis,
        "runs": [{
            "run": r.label, "path": r.path, "state": r.state, "live": r.live, "profile": r.profile,
            "model": r.model, "task": r.task, "reward_functions": r.reward_functions,
            "steps": sorted(r.steps), "skipped_steps": sorted(s for s, m in r.steps.items() if m.update_skipped),
            "resumed_from": r.resumes, "undecodable_events": r.undecodable,
        } for r in runs],
        "metrics": metrics,
        "summary": summary,
        "profile_diff": profile_diff(runs),
        # per run in the order of the steps they acted at (a command answered at a later
        # boundary than one sent after it, e.g. a pause applied after a rejected one, sorts after it)
        "commands": [{"run": r.label, **c.as_dict()} for r in runs
                     for _, c in sorted(enumerate(r.commands), key=lambda ic: (ic[1].step, ic[0]))],
    }


def _summary(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"first": None, "last": None, "min": None, "max": None, "mean": None}
    return {"first": values[0], "last": values[-1], "min": min(values), "max": max(values),
            "mean": sum(values) / len(values)}


# ---- rendering ---------------------------------------------------------------------------
def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _letters(report: dict[str, Any]) -> dict[str, str]:
    """A short name per run (A, B, ...) for narrow columns."""
    return {r["run"]: chr(ord("A") + i) if i < 26 else f"R{i}" for i, r in enumerate(report["runs"])}


def _title(key: str) -> str:
    if key.startswith("reward/"):
        return f"reward: {key[len('reward/'):]}"
    return next((t + (f" ({u})" if u else "") for k, t, u in BASE_METRICS if k == key), key)


def _marks(report: dict[str, Any]) -> dict[tuple[str, int], list[dict[str, Any]]]:
    """Commands that acted on the run and resumes, keyed by (run, the first step they affected)."""
    marks: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for r in report["runs"]:
        for step in r["resumed_from"]:
            marks.setdefault((r["run"], step + 1), []).append({"resumed_from": step})
    for c in report["commands"]:
        if c["status"] in ("applied", "failed", "accepted") and c["command"] not in UNMARKED:
            marks.setdefault((c["run"], c["first_step_affected"]), []).append(c)
    return marks


#: operator activity that leaves training as it was: listed with the commands, not marked on the curves
UNMARKED = ("try", "checkpoint")


def _command_text(c: dict[str, Any]) -> str:
    if "resumed_from" in c:
        return f"resumed from step {c['resumed_from']}"
    return Command(c["command_id"], c["command"], c["status"], c["step"], c["reason"], c["changed"]).describe()


def render_table(report: dict[str, Any]) -> str:
    """Plain text for pipes and scripts: runs, profile diff, one row per run and step (tab-free,
    space-aligned columns), then the commands."""
    letters = _letters(report)
    lines = ["runs:"]
    for r in report["runs"]:
        span = f"steps {r['steps'][0]}-{r['steps'][-1]}" if r["steps"] else "no steps"
        lines.append(f"  {letters[r['run']]}  {r['run']}  {r['state']}{' (live)' if r['live'] else ''}  {span}  "
                     f"profile: {r['profile'] or '-'}")
        if r.get("undecodable_events"):
            lines.append(f"     {r['undecodable_events']} events of a newer rl-console left out")
    lines.append("")
    diff = report["profile_diff"]
    lines.append("profile diff:" if diff else "profile diff: none (same profile)")
    if diff:
        width = max(len(d["key"]) for d in diff)
        for d in diff:
            vals = "  ".join(f"{letters[r['run']]}={_fmt(d['values'][r['run']]) if r['run'] in d['values'] else '(absent)'}"
                             for r in report["runs"])
            lines.append(f"  {d['key']:<{width}}  {vals}")
    lines.append("")
    keys = list(report["metrics"])
    heads = ["step", "run"] + keys + ["commands"]  # the metrics under their JSON names
    rows = []
    marks = _marks(report)
    has = {r["run"]: set(r["steps"]) for r in report["runs"]}
    for i, step in enumerate(report["steps"]):
        for r in report["runs"]:
            if step not in has[r["run"]]:
                continue
            cmds = "; ".join(_command_text(c) for c in marks.get((r["run"], step), []))
            rows.append([str(step), letters[r["run"]]] + [_fmt(report["metrics"][k][r["run"]][i]) for k in keys] + [cmds])
    widths = [max(len(h), *(len(row[j]) for row in rows)) for j, h in enumerate(heads)]
    for row in [heads] + rows:
        lines.append("  ".join(cell.rjust(widths[j]) if 1 < j < len(heads) - 1 else cell.ljust(widths[j])
                               for j, cell in enumerate(row)).rstrip())
    lines.append("")
    lines.append("commands:" if report["commands"] else "commands: none")
    for c in report["commands"]:
        lines.append(f"  {letters[c['run']]}  after step {c['step']}: {_command_text(c)}  [{c['command_id']}]")
    return "\n".join(lines)


_BARS = "▁▂▃▄▅▆▇█"


def sparkline(values: list[float | None], lo: float, hi: float, width: int) -> str:
    """One character per column on a shared scale; columns average their steps when there are
    more steps than columns; a gap is a space."""
    if not values:
        return ""
    cols = min(width, len(values))
    out = []
    for c in range(cols):
        chunk = [v for v in values[c * len(values) // cols:(c + 1) * len(values) // cols] if v is not None]
        if not chunk:
            out.append(" ")
            continue
        v = sum(chunk) / len(chunk)
        idx = 0 if hi <= lo else round((v - lo) / (hi - lo) * (len(_BARS) - 1))
        out.append(_BARS[max(0, min(len(_BARS) - 1, idx))])
    return "".join(out)


def ruler(axis: list[int], width: int) -> str:
    """Step numbers under a chart of `width` columns, each at its step's first column: every
    step when a step has 3 columns or more, else labels at least 6 columns apart."""
    line = [" "] * (width + 8)
    free = 0
    for i, step in enumerate(axis):
        col, label = i * width // len(axis), str(step)
        if col >= free and col < width:
            line[col:col + len(label)] = label
            free = col + (len(label) + 1 if width // len(axis) >= 3 else max(len(label) + 2, 6))
    return "".join(line).rstrip()


def render_rich(report: dict[str, Any], console: Any) -> None:
    """For a terminal: per metric, each run's sparkline on a shared scale and step axis with its
    commands marked (▲ under the first step they affected), then the profile diff and the
    commands."""
    from rich.table import Table
    from rich.text import Text

    letters = _letters(report)
    color = {r["run"]: COLORS[i % len(COLORS)] for i, r in enumerate(report["runs"])}
    axis = report["steps"]
    room = max(10, console.size.width - 40)
    rep = max(1, min(4, room // len(axis)))  # a short run gets up to 4 columns a step
    width = min(room, len(axis) * rep)
    runs_t = Table(box=None, show_header=False, pad_edge=False)
    for r in report["runs"]:
        span = f"steps {r['steps'][0]}–{r['steps'][-1]}"
        runs_t.add_row(Text(letters[r["run"]], style=f"bold {color[r['run']]}"), r["run"],
                       r["state"] + (" (live)" if r["live"] else ""), span, r["profile"] or "-")
    console.print(Text(f"compare · {len(report['runs'])} runs · steps {axis[0]}–{axis[-1]}", style="bold"))
    console.print(runs_t)
    marks = _marks(report)
    for key, series in report["metrics"].items():
        present = [v for vals in series.values() for v in vals if v is not None]
        if not present:
            console.print(Text(f"\n{_title(key)}: no values", style="dim"))
            continue
        lo, hi = min(present), max(present)
        console.print(Text(f"\n{_title(key)}  [{_fmt(lo)} … {_fmt(hi)}]", style="bold"))
        for r in report["runs"]:
            summ = report["summary"][r["run"]][key]
            line = Text(f" {letters[r['run']]} ", style=f"bold {color[r['run']]}")
            values = [v for v in series[r["run"]] for _ in range(rep)]
            line.append(sparkline(values, lo, hi, width).ljust(width), style=color[r["run"]])
            line.append(f"  last {_fmt(summ['last'])}  min {_fmt(summ['min'])}  max {_fmt(summ['max'])}", style="dim")
            console.print(line)
            ticks = [" "] * width
            for (run, step), acted in marks.items():
                if run != r["run"]:
                    continue
                col = min(width - 1, axis.index(step) * width // len(axis)) if step in axis else width - 1
                if ticks[col] != "▲":  # a command's mark wins over a resume's at the same column
                    ticks[col] = "▲" if any("resumed_from" not in c for c in acted) else "↻"
            if ticks != [" "] * width:
                console.print(Text("   " + "".join(ticks).rstrip(), style=color[r["run"]]))
        console.print(Text("   " + ruler(axis, width), style="dim"))
    diff = Table(title="profile diff", title_justify="left", box=None, header_style="bold")
    diff.add_column("field")
    for r in report["runs"]:
        diff.add_column(letters[r["run"]], style=color[r["run"]])
    for d in report["profile_diff"]:
        diff.add_row(d["key"], *(_fmt(d["values"][r["run"]]) if r["run"] in d["values"] else "(absent)"
                                 for r in report["runs"]))
    console.print()
    console.print(diff if report["profile_diff"] else Text("profile diff: none (same profile)", style="dim"))
    console.print()
    if not report["commands"]:
        console.print(Text("commands: none", style="dim"))
        return
    cmds = Table(title="commands (▲ marks the first step each affected)", title_justify="left", box=None, header_style="bold")
    for col in ("run", "after step", "command", "id"):
        cmds.add_column(col)
    for c in report["commands"]:
        cmds.add_row(Text(letters[c["run"]], style=color[c["run"]]), str(c["step"]), _command_text(c), c["command_id"])
    console.print(cmds)
