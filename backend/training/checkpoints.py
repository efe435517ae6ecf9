"""Checkpoints a run can resume from.

A checkpoint is TRL/transformers' own (`Trainer._save_checkpoint`: model, optimizer,
scheduler, RNG states, trainer state with the global step, which is also the data
position) saved under `<root>/step-NNNNNN`, plus `rlc.json` with what the console adds:
the absolute step (TRL's global step restarts when the group size changes), the live
parameters, the weight version and the weights' checksum. `rlc.json` is written last,
atomically, so a checkpoint cut short by a crash is never picked for a resume.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from backend.protocol import paths

META = paths.CHECKPOINT_META
PREFIX = paths.CHECKPOINT_PREFIX


@dataclass
class ResumePoint:
    path: Path
    step: int  # completed optimizer steps (absolute, across group-size restarts)
    global_step: int  # TRL's global step inside the current train() call
    step_offset: int  # step - global_step
    weight_version: int
    params: dict[str, Any]
    checksum: str  # fingerprint of the policy weights saved here
    reason: str = ""
    saved_at: float = field(default_factory=time.time)
    previous_pid: int = 0  # set when resuming: the backend process that wrote the log before
    previous_end: str = ""  # set when resuming: how that backend ended, when not cleanly (for the run's log)
    fingerprint: int = 1  # version of weight_sync's checksum that wrote `checksum` (absent = 1)

    def to_json(self) -> str:
        data = asdict(self)
        data["path"] = str(self.path)
        return json.dumps(data, indent=1)

    @classmethod
    def load(cls, path: Path) -> "ResumePoint":
        data = json.loads((path / META).read_text())
        data["path"] = path
        return cls(**data)


def root_for(output_dir: str | None, run_dir: Path, run_id: str) -> Path:
    """Where a run's checkpoints live (`paths.checkpoint_root`: the console reads them there too)."""
    return paths.checkpoint_root(output_dir, run_dir, run_id)


def finish(trainer_dir: Path, point: ResumePoint, keep_scheduled: int) -> Path:
    """Move TRL's `checkpoint-<global step>` to `step-<absolute step>`, write rlc.json, rotate."""
    target = trainer_dir.parent / f"{PREFIX}{point.step:06d}"
    if target.exists() and target != trainer_dir:
        shutil.rmtree(target)
    os.replace(trainer_dir, target)
    point.path = target
    tmp = target / (META + ".tmp")
    tmp.write_text(point.to_json())
    os.replace(tmp, target / META)
    if point.reason == LAST_GOOD:
        _drop_superseded(target.parent, point)
    if keep_scheduled > 0:
        _rotate(target.parent, keep_scheduled)
    return target


LAST_GOOD = "last good state"  # written at a skipped update: the weights and optimizer of the step before


def _drop_superseded(root: Path, newest: ResumePoint) -> None:
    """Skipped updates in a row (a reward function failing again after each fix) each write the
    last good state: the same weights and optimizer, only the data position moved on. Keep the
    newest of those; an older one with the same weights' checksum holds nothing more."""
    for old in complete(root):
        if (old.path != newest.path and old.reason == LAST_GOOD and old.step < newest.step
                and old.fingerprint == newest.fingerprint and old.checksum == newest.checksum):
            shutil.rmtree(old.path, ignore_errors=True)


def _rotate(root: Path, keep: int) -> None:
    """Keep the newest `keep` scheduled checkpoints; on-demand and final ones stay."""
    scheduled = [p for p in complete(root) if p.reason == "scheduled"]
    for old in scheduled[:-keep]:
        shutil.rmtree(old.path, ignore_errors=True)


def complete(root: Path) -> list[ResumePoint]:
    """Every checkpoint under `root` with a readable rlc.json, oldest step first."""
    out = []
    for path in root.glob(f"{PREFIX}*"):
        try:
            out.append(ResumePoint.load(path))
        except (OSError, ValueError, TypeError):
            continue  # cut short by a crash (no rlc.json yet), or not ours
    return sorted(out, key=lambda p: (p.step, p.saved_at))


def latest(root: Path) -> ResumePoint | None:
    points = complete(root)
    return points[-1] if points else None
