"""Reward functions: loading by import path, and a recording wrapper.

Rewards are pure functions with TRL's signature `(prompts, completions, **kwargs) ->
list[float | None]`. The wrapper keeps TRL's behaviour (same name, same values) and
records the values and the time spent, so the controller can report per-function rewards
per completion and the "score" share of the step time.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import importlib
import inspect
import math
import os
import sys
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


def declared_range(func: Callable[..., Any], spec: str = "") -> tuple[float, float] | None:
    """The range a reward function declares as `func.reward_range = (low, high)`, or None.
    Only declared ranges are shown (the console marks them on the reward chart); a range is
    never guessed from the values seen."""
    value = getattr(func, "reward_range", None)
    if value is None:
        return None
    name = spec or getattr(func, "__name__", repr(func))
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError):
        raise RewardLoadError(f"reward function {name}: reward_range must be two numbers (low, high), got {value!r}") from None
    if not (math.isfinite(low) and math.isfinite(high) and low <= high):
        raise RewardLoadError(f"reward function {name}: reward_range must be finite with low <= high, got {value!r}")
    return (low, high)


class RewardRecorder:
    """Wraps reward functions; after each scoring pass holds {name: values}, the seconds spent
    and the functions that failed ({name: why}).

    A reward function that raises, hangs past `timeout_s`, or returns something that is not
    one value per completion does not take the run down: its values for this batch become
    NaN, which the session turns into a skipped update, a checkpoint of the last good
    weights, an alert naming the function and the error, and a pause (the operator resumes
    once the judge is back).
    """

    def __init__(self, timeout_s: float | None = None) -> None:
        self.values: dict[str, list[float | None]] = {}
        self.failures: dict[str, str] = {}
        self.seconds = 0.0
        self.timeout_s = timeout_s
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None

    def reset(self) -> None:
        self.values = {}
        self.failures = {}
        self.seconds = 0.0

    def _record(self, name: str, out: Any, n: int) -> list[float | None]:
        """The values to hand TRL: `out` checked, or NaN for every completion with the failure noted."""
        if out is None or isinstance(out, (str, bytes)) or not hasattr(out, "__len__") or len(out) != n:
            got = "None" if out is None else f"{len(out)} values" if hasattr(out, "__len__") else type(out).__name__
            return self._fail(name, f"returned {got} for {n} completions", n)
        text = next((v for v in out if isinstance(v, (str, bytes))), None)
        if text is not None:  # float("1") would pass: a string is a bug in the function, not a score
            return self._fail(name, f"returned a string ({text!r:.40}) where a number belongs", n)
        try:
            values = [None if v is None else float(v) for v in out]
        except (TypeError, ValueError) as exc:
            return self._fail(name, f"returned a non-number ({exc})", n)
        self.values[name] = values
        return values

    def _fail(self, name: str, why: str, n: int) -> list[float]:
        self.failures[name] = why
        self.values[name] = [math.nan] * n
        return [math.nan] * n

    def _run(self, func: Callable[..., Any], kwargs: dict[str, Any], bounded: bool) -> Any:
        if not self.timeout_s or not bounded:
            return func(**kwargs)
        if self._pool is None:
            self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="rlc-reward")
        future = self._pool.submit(func, **kwargs)
        try:
            return future.result(timeout=self.timeout_s)
        except concurrent.futures.TimeoutError:
            self._pool = None  # leave the stuck call behind; the next one gets a fresh thread
            raise TimeoutError(f"gave no answer within task.reward_timeout_s = {self.timeout_s:g} s") from None

    def wrap(self, func: Callable[..., Any], *, bounded: bool = True) -> Callable[..., Any]:
        """`func` recorded; with `bounded` (a user's function) it runs on a thread of its own so
        `timeout_s` can abandon it. The embedded task's functions (`bounded=False`: a few
        string comparisons per completion, no I/O) run inline: the hand-off to a thread and
        back would cost more than they do (~0.5 ms a step)."""
        name = getattr(func, "__name__", None) or type(func).__name__
        recorder = self
        cell = [func]  # replaced in place when the operator's fixed code is reloaded (`reload_changed`)

        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def awrapped(*args, **kwargs):
                n = len(kwargs.get("completions") or [])
                t0 = time.perf_counter()
                try:
                    out = await asyncio.wait_for(cell[0](*args, **kwargs), recorder.timeout_s or None)
                except asyncio.TimeoutError:
                    return recorder._fail(name, f"gave no answer within task.reward_timeout_s = {recorder.timeout_s:g} s", n)
                except Exception as exc:  # noqa: BLE001 - any failure of the user's function
                    return recorder._fail(name, f"raised {type(exc).__name__}: {exc}", n)
                finally:
                    recorder.seconds += time.perf_counter() - t0
                return recorder._record(name, out, n)

            awrapped.rlc_replace = functools.partial(_replace, cell, awrapped)  # type: ignore[attr-defined]
            return awrapped

        @functools.wraps(func)
        def wrapped(**kwargs):  # TRL passes everything by keyword; pass it on untouched
            n = len(kwargs.get("completions") or [])
            t0 = time.perf_counter()
            try:
                out = recorder._run(cell[0], kwargs, bounded)
            except TimeoutError as exc:
                return recorder._fail(name, str(exc), n)
            except Exception as exc:  # noqa: BLE001 - any failure of the user's function
                return recorder._fail(name, f"raised {type(exc).__name__}: {exc}", n)
            finally:
                recorder.seconds += time.perf_counter() - t0
            return recorder._record(name, out, n)

        wrapped.__name__ = name
        wrapped.rlc_replace = functools.partial(_replace, cell, wrapped)  # type: ignore[attr-defined]
        return wrapped


def _replace(cell: list[Any], wrapper: Any, func: Callable[..., Any]) -> None:
    """A wrapper's function swapped for `func`: what it calls, and its `__wrapped__` (the probes
    and the playground score with a fresh recorder around `__wrapped__`)."""
    cell[0] = func
    wrapper.__wrapped__ = func


def _source_mtime(module: Any) -> float | None:
    path = getattr(module, "__file__", None)
    try:
        return os.stat(path).st_mtime_ns if path else None
    except OSError:
        return None


class RewardCode:
    """The user's reward modules as imported, so that code fixed after a reward failure is taken
    up when the operator resumes (`reload_changed`): a module whose source file changed since it
    was imported is re-executed and its functions replace the old ones inside their wrappers
    (TRL keeps calling the same wrapper objects). Unchanged modules are left alone: re-running a
    module can be costly (a judge it loads at import)."""

    def __init__(self, specs: list[str], wrapped: list[Callable[..., Any]]) -> None:
        self.specs, self.wrapped = list(specs), list(wrapped)
        self.mtimes = {mod: _source_mtime(sys.modules.get(mod)) for mod in self._modules()}

    def _modules(self) -> list[str]:
        return list(dict.fromkeys(spec.partition(":")[0] for spec in self.specs))

    def reload_changed(self) -> list[str]:
        """Re-import the modules whose file changed; the names of those reloaded. Raises
        RewardLoadError (naming the module and why) when the changed code does not import or
        lacks a function: the old functions then stay in place."""
        changed = [m for m in self._modules() if m in sys.modules and _source_mtime(sys.modules[m]) != self.mtimes.get(m)]
        if not changed:
            return []
        importlib.invalidate_caches()
        for mod in changed:
            # reload re-executes the new code in the old module's namespace, where a function the
            # new code no longer defines would live on: take the run's names out first, so that
            # only what the new code defines (or imports) is found
            module = sys.modules[mod]
            names = list(dict.fromkeys(spec.partition(":")[2].split(".")[0] for spec in self.specs
                                       if spec.partition(":")[0] == mod))
            saved = {n: module.__dict__.pop(n) for n in names if n in module.__dict__}
            try:
                importlib.reload(module)
            except Exception as exc:  # noqa: BLE001 - the user's code: name it, keep the old functions
                module.__dict__.update(saved)
                raise RewardLoadError(f"module {mod!r} changed but does not import: {type(exc).__name__}: {exc}") from None
            if missing := [n for n in names if n not in module.__dict__]:
                module.__dict__.update({n: saved[n] for n in missing if n in saved})
                raise RewardLoadError(f"module {mod!r} changed but no longer defines {missing[0]!r}, which task.reward_funcs "
                                      f"names ({mod}:{missing[0]}): define it again, or start a new run with other "
                                      "functions")
        fresh = {spec: load_callable(spec) for spec in self.specs if spec.partition(":")[0] in changed}
        for spec, w in zip(self.specs, self.wrapped):
            if spec in fresh:
                w.rlc_replace(fresh[spec])  # type: ignore[attr-defined]
        for mod in changed:
            self.mtimes[mod] = _source_mtime(sys.modules[mod])
        return changed
