"""Checks of a profile's outside references before a run is created: the model directory, the
dataset file, the task's `module:function`s and, for a compiled update, accelerate's compile
variables in the environment. Each would otherwise fail only after the
engine and the policy were built (a minute or more), and leave a failed run behind.

`problems(profile)` returns one line per problem (empty: nothing found); it imports the task's
modules (as the run would) but calls nothing in them and loads no data or weights.
"""

from __future__ import annotations

import re
from pathlib import Path

from backend.settings import RunProfile

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def problems(profile: RunProfile) -> list[str]:
    from backend.training.factory import in_workdir, task_import_path

    out: list[str] = []
    task_import_path(profile)
    wd = profile.run.workdir or "."
    if why := _model_problem(in_workdir(profile, profile.model.source), wd):
        out.append(why)
    t = profile.task
    if t.dataset:
        if why := _dataset_problem(in_workdir(profile, t.dataset), wd):
            out.append(why)
    for spec in t.reward_funcs:
        if why := _callable_problem(spec, "reward function", "task.reward_funcs"):
            out.append(why)
    if profile.trl.get("torch_compile"):
        from backend.training.factory import compile_env_problem

        if why := compile_env_problem():
            out.append(why)
    return out


def report(found: list[str]) -> str:
    """The message for `problems`' findings: its head says where they are (the profile, the
    environment or both) and that nothing was started."""
    from backend.training.factory import COMPILE_ENV

    env = sum(1 for why in found if why.split("=", 1)[0] in COMPILE_ENV)
    head = ("the profile names something that is not there or does not load" if not env
            else "an environment variable has a value that cannot be used" if env == len(found)
            else "the profile and the environment have values that cannot be used")
    return f"rl-console: {head}; nothing was started:\n  " + "\n  ".join(found)


def _model_problem(src: str, wd: str) -> str:
    from backend.training import pretrained

    if src == "embedded" or pretrained.is_packaged(src):
        return ""
    path = Path(src).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            return f"model.source: {path} is a directory but not a model directory (no config.json in it)"
        return ""
    if path.exists():
        return f"model.source: {path} is a file; give the model's directory (with config.json and the weights)"
    if _HUB_ID.match(src) and _in_hub_cache(src):
        return ""
    where = str(path) if path.is_absolute() else f"{src} (looked in {wd})"
    names = ", ".join(sorted(pretrained.PACKAGED))
    return (f"model.source: directory not found: {where}. Give a local model directory, \"embedded\", or a packaged "
            f"model ({names}); a hub id must already be in the local Hugging Face cache (rl-console downloads nothing "
            "from a hub: fetch it first with `hf download ORG/NAME`)")


def _in_hub_cache(repo_id: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)
    except Exception:  # an unusual id or an old huggingface_hub: let the loader say what it thinks
        return True


def _dataset_problem(spec: str, wd: str) -> str:
    path = Path(spec).expanduser()
    if path.suffix in (".jsonl", ".json", ".parquet"):
        if path.is_file():
            return ""
        where = str(path) if path.is_absolute() else f"{spec} (looked in {wd})"
        return f"task.dataset: file not found: {where}"
    if ":" in spec:
        return _callable_problem(spec, "dataset function", "task.dataset")
    return f"task.dataset: {spec!r} is neither a .jsonl/.json/.parquet file nor `module:function`"


def _callable_problem(spec: str, what: str, field: str) -> str:
    from backend.training.rewards import RewardLoadError, load_callable

    try:
        load_callable(spec, what)
    except RewardLoadError as exc:
        return f"{field}: {exc}"
    return ""
