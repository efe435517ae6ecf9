"""Reward functions: loading by import path, and a recording wrapper.

Rewards are pure functions with TRL's signature `(prompts, completions, **kwargs) ->
list[float | None]`. The wrapper keeps TRL's behaviour (same name, same values) and
records the values and the time spent, so the controller can report per-function rewards
per completion and the "score" share of the step time.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import time
from collections.abc import Callable
from typing import Any


class RewardLoadError(ValueError):
    pass


def load_callable(spec: str, what: str = "reward function") -> Callable[..., Any]:
    """`package.module:function` -> the function, with a clear error if it is not there."""
    if ":" not in spec:
        raise RewardLoadError(f"{what} {spec!r} must be written `module:function`")
    mod_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(mod_name)
    except Exception as exc:
        raise RewardLoadError(f"cannot import module {mod_name!r} for {what} {spec!r}: {type(exc).__name__}: {exc}") from None
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise RewardLoadError(f"module {mod_name!r} has no {attr!r} ({what} {spec!r})")
        obj = getattr(obj, part)
    if not callable(obj):
        raise RewardLoadError(f"{what} {spec!r} is not callable")
    return obj


class RewardRecorder:
    """Wraps reward functions; after each scoring pass holds {name: values} and seconds spent."""

    def __init__(self) -> None:
        self.values: dict[str, list[float | None]] = {}
        self.seconds = 0.0

    def reset(self) -> None:
        self.values = {}
        self.seconds = 0.0

    def wrap(self, func: Callable[..., Any]) -> Callable[..., Any]:
        name = getattr(func, "__name__", None) or type(func).__name__
        recorder = self

        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def awrapped(*args, **kwargs):
                t0 = time.perf_counter()
                out = await func(*args, **kwargs)
                recorder.seconds += time.perf_counter() - t0
                recorder.values[name] = [None if v is None else float(v) for v in out]
                return out

            return awrapped

        @functools.wraps(func)
        def wrapped(*args, **kwargs):  # TRL passes everything by keyword; pass it on untouched
            t0 = time.perf_counter()
            out = func(*args, **kwargs)
            recorder.seconds += time.perf_counter() - t0
            recorder.values[name] = [None if v is None else float(v) for v in out]
            return out

        wrapped.__name__ = name
        return wrapped
