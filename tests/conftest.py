import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def rlc_home(tmp_path_factory):
    """One data dir for the session: the tiny model is built once and reused."""
    home = os.environ.get("RLC_TEST_HOME") or str(tmp_path_factory.mktemp("rlc-home"))
    os.environ["RLC_HOME"] = home
    return Path(home)


def backend_env(home: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["RLC_HOME"] = str(home)
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.update(extra)
    return env
