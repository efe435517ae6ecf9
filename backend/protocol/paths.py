"""Where runs live on disk: the contract between the backend and every client.

A run directory holds `events.db` (the SQLite event log), `control.sock` (the control
socket), `run.json` (id, pid, profile) and `backend.log` (the backend's own output).
"""

from __future__ import annotations

import os
from pathlib import Path


def home() -> Path:
    """The data dir: $RLC_HOME, else $XDG_DATA_HOME/rl-console, else ~/.local/share/rl-console."""
    if env := os.environ.get("RLC_HOME"):
        return Path(env).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "rl-console"


def runs_dir() -> Path:
    return home() / "runs"


def run_dir(run_id: str) -> Path:
    return runs_dir() / run_id


MAX_SOCKET_PATH = 100  # AF_UNIX paths are limited to 107 bytes on Linux (103 on macOS)


def socket_path(run_id: str) -> Path:
    """The run's control socket: in its run dir, or — when that path would be too long for
    AF_UNIX — under a private short dir in the temp dir, named by a hash of the run dir.
    Both sides compute the same path from the run id and $RLC_HOME."""
    path = run_dir(run_id) / "control.sock"
    if len(str(path).encode()) <= MAX_SOCKET_PATH:
        return path
    import hashlib
    import tempfile

    digest = hashlib.sha256(str(run_dir(run_id).resolve()).encode()).hexdigest()[:24]
    return Path(tempfile.gettempdir()) / f"rlc-{os.getuid()}" / f"{digest}.sock"


def db_path(run_id: str) -> Path:
    return run_dir(run_id) / "events.db"


def list_run_ids() -> list[str]:
    """Run ids, oldest first (ids start with a sortable timestamp)."""
    root = runs_dir()
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / "run.json").exists())


def new_run_id(name: str) -> str:
    """Sortable, unique enough for one user: 20261125-104209-235-demo."""
    import time

    safe = "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in name)[:32] or "run"
    now = time.time()
    return time.strftime("%Y%m%d-%H%M%S-", time.localtime(now)) + f"{int(now * 1000) % 1000:03d}-{safe}"


LOCK_NAME = "backend.lock"


class RunLocked(RuntimeError):
    """Another live process hosts this run."""


def lock_run(rdir: Path) -> int:
    """Take the run's lock for this process: one backend per run. The OS drops it when the
    process dies (however it dies), so a crashed run can be resumed at once. Returns the
    open descriptor, which must stay open for the life of the process."""
    import fcntl

    rdir.mkdir(parents=True, exist_ok=True)
    fd = os.open(rdir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        try:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
        finally:
            os.close(fd)
        raise RunLocked(f"run {rdir.name} is already hosted by backend pid {holder}; "
                        f"attach to it with `rl-console attach {rdir.name}`") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def run_locked(rdir: Path) -> bool:
    """True while a live backend holds the run's lock (read-only check; never blocks)."""
    import fcntl

    try:
        fd = os.open(rdir / LOCK_NAME, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


#: a run's checkpoints: `<root>/step-<absolute step, 6 digits>/`, complete once `rlc.json` is written
CHECKPOINT_PREFIX = "step-"
CHECKPOINT_META = "rlc.json"


def checkpoint_root(output_dir: str | None, rdir: Path, run_id: str) -> Path:
    """Where a run's checkpoints live: `run.output_dir/<run id>` if set, else the run's directory."""
    return Path(output_dir).expanduser() / run_id if output_dir else rdir / "checkpoints"


def has_complete_checkpoint(root: Path) -> bool:
    """Whether `root` holds a checkpoint that `run --resume` can continue from (its rlc.json
    written and readable; one cut short by a crash has none)."""
    import json

    for path in root.glob(f"{CHECKPOINT_PREFIX}*"):
        try:
            json.loads((path / CHECKPOINT_META).read_text())
        except (OSError, ValueError):
            continue
        return True
    return False
