"""The token view: one completion's tokens coloured by log-prob (the completion view's token modes).

Modes: "engine" colours each sampled token by the engine's sampling log-prob; "gap" by
|trainer − engine| log-prob where the trainer's were recorded. One token is selected (its
values are shown on the line under the legend). Pure rendering: the completion view paints it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from rich.text import Text

#: (lower bound, style, legend label), best first: a token's value is in the first band it reaches
ENGINE_BANDS: tuple[tuple[float, str, str], ...] = (
    (-0.5, "black on green", "> -0.5"),
    (-1.5, "black on yellow", "-0.5…-1.5"),
    (-3.0, "black on dark_orange", "-1.5…-3"),
    (-math.inf, "white on red", "< -3"),
)
#: |trainer − engine| bands: (upper bound, style, label)
GAP_BANDS: tuple[tuple[float, str, str], ...] = (
    (0.05, "black on green", "< 0.05"),
    (0.2, "black on yellow", "0.05…0.2"),
    (1.0, "black on dark_orange", "0.2…1"),
    (math.inf, "white on red", "≥ 1"),
)
SELECTED = "bold underline reverse"


def engine_style(logprob: float) -> str:
    for bound, style, _ in ENGINE_BANDS:
        if logprob > bound or bound == -math.inf:
            return style
    return ENGINE_BANDS[-1][1]


def gap_style(gap: float) -> str:
    for bound, style, _ in GAP_BANDS:
        if gap < bound:
            return style
    return GAP_BANDS[-1][1]


def shown_token(token: str) -> str:
    """A token as drawn: a newline keeps its line break after a visible ⏎; an empty one is ∅."""
    if token == "":
        return "∅"
    return token.replace("\n", "⏎\n")


def legend(mode: str) -> Text:
    text = Text(no_wrap=True, overflow="ellipsis", end="")
    if mode == "engine":
        text.append("engine sampling log-prob: ", style="bold")
        bands = ENGINE_BANDS
    else:
        text.append("|trainer − engine| log-prob: ", style="bold")
        bands = GAP_BANDS
    for _, style, label in bands:
        text.append(f" {label} ", style=style)
        text.append(" ")
    return text


def token_text(tokens: Sequence[str], engine: Sequence[float], trainer: Sequence[float], mode: str,
               selected: int | None = None) -> Text:
    """The tokens, each styled by its band in `mode` ("engine" or "gap"); `selected` is marked."""
    text = Text()
    for i, token in enumerate(tokens):
        if mode == "gap" and i < len(trainer) and i < len(engine):
            style = gap_style(abs(trainer[i] - engine[i]))
        elif mode == "engine" and i < len(engine):
            style = engine_style(engine[i])
        else:
            style = "dim"
        if i == selected:
            style = f"{style} {SELECTED}"
        text.append(shown_token(token), style=style)
    return text


def token_detail(tokens: Sequence[str], engine: Sequence[float], trainer: Sequence[float], index: int) -> Text:
    """The selected token's values: its text, the engine's log-prob (and probability), the
    trainer's and the difference where recorded."""
    line = Text(no_wrap=True, overflow="ellipsis", end="")
    if not tokens:
        return line
    index = max(0, min(index, len(tokens) - 1))
    line.append(f"token {index + 1}/{len(tokens)} ", style="bold")
    line.append(repr(tokens[index]), style="bold cyan")
    if index < len(engine):
        lp = engine[index]
        line.append(f"  engine {lp:.3f} (p {math.exp(lp):.2f})")
    if index < len(trainer):
        line.append(f"  trainer {trainer[index]:.3f}")
        if index < len(engine):
            line.append(f"  |Δ| {abs(trainer[index] - engine[index]):.3f}", style="bold")
    return line


def least_probable(tokens: Sequence[str], engine: Sequence[float], count: int = 3) -> Text:
    """The `count` least probable sampled tokens (where a completion went improbable)."""
    line = Text(no_wrap=True, overflow="ellipsis", end="")
    low = sorted(range(min(len(tokens), len(engine))), key=lambda i: engine[i])[:count]
    if low:
        line.append("least probable: ", style="dim")
        line.append("  ".join(f"#{i + 1} {tokens[i]!r} {engine[i]:.2f}" for i in low), style="dim")
    return line
