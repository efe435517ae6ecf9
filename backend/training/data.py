"""Datasets: a local JSONL/JSON/Parquet file with a `prompt` column, or `module:function`."""

from __future__ import annotations

from pathlib import Path

from backend.training.rewards import RewardLoadError, load_callable


class DatasetError(ValueError):
    pass


def load_dataset_spec(spec: str):
    """Return a `datasets.Dataset` with a `prompt` column (plain text or chat messages)."""
    import datasets

    path = Path(spec).expanduser()
    if path.suffix in (".jsonl", ".json", ".parquet"):
        if not path.is_file():
            raise DatasetError(f"dataset file not found: {path.resolve()}")
        if path.suffix != ".parquet" and not path.read_bytes().strip():
            raise DatasetError(f"dataset file is empty: {path}")
        kind = "parquet" if path.suffix == ".parquet" else "json"
        try:
            ds = datasets.load_dataset(kind, data_files=str(path), split="train")
        except Exception as exc:
            raise DatasetError(f"cannot read dataset {path}: {type(exc).__name__}: {exc}") from None
    elif ":" in spec:
        try:
            ds = load_callable(spec, "dataset function")()
        except RewardLoadError as exc:
            raise DatasetError(str(exc)) from None
        if not isinstance(ds, datasets.Dataset):
            raise DatasetError(f"dataset function {spec!r} returned {type(ds).__name__}, not a datasets.Dataset")
    else:
        raise DatasetError(f"dataset {spec!r}: expected a .jsonl/.json/.parquet file or `module:function`")
    if "prompt" not in ds.column_names:
        raise DatasetError(f"dataset {spec!r} has no `prompt` column (columns: {', '.join(ds.column_names)})")
    if len(ds) == 0:
        raise DatasetError(f"dataset {spec!r} is empty")
    check_prompts(ds["prompt"][:ROWS_CHECKED], spec)
    return ds


#: rows whose prompt is checked at start, here and by the session's length check, which tokenizes
#: them (the rest are checked by vLLM)
ROWS_CHECKED = 5000


def check_prompts(prompts: list, spec: str) -> None:
    """Each prompt is non-empty text or a non-empty list of chat messages ({"role", "content"});
    the first one that is not is named with its row, before anything is built on it."""
    for i, p in enumerate(prompts):
        if isinstance(p, str):
            why = "" if p.strip() else "is empty text"
        elif isinstance(p, list):
            ok = p and all(isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), (str, list)) for m in p)
            why = "" if ok else ("is an empty list of messages" if not p else 'is a list but not of {"role": str, "content": str} messages')
        else:
            why = f"is {type(p).__name__} {str(p)[:40]!r}, not text or chat messages"
        if why:
            raise DatasetError(f"dataset {spec!r}: the prompt of row {i + 1} {why}")


def check_rows(n_rows: int, prompts_per_step: int, spec: str) -> None:
    """A step takes `prompts_per_step` different prompts; with fewer rows TRL's sampler yields no batch
    and the run would end at step 0 as if complete."""
    if n_rows < prompts_per_step:
        raise DatasetError(f"dataset {spec!r} has {n_rows} row{'s' * (n_rows != 1)}; a step takes training.prompts_per_step = "
                           f"{prompts_per_step} different prompts: add rows or lower training.prompts_per_step")


def prompt_text(prompt) -> str:
    """A one-line view of a prompt for the console (plain text or the last user message)."""
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, list) and prompt:
        return str(prompt[-1].get("content", ""))
    return str(prompt)
