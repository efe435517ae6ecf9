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
    return ds


def prompt_text(prompt) -> str:
    """A one-line view of a prompt for the console (plain text or the last user message)."""
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, list) and prompt:
        return str(prompt[-1].get("content", ""))
    return str(prompt)
