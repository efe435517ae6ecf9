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


class Recorder:
    """Events a test's client received, and waiting for one (integration tests of a live run)."""

    def __init__(self):
        self.events = []

    def of(self, kind):
        return [e for e in self.events if e.kind == kind]

    async def wait(self, pred, timeout=180, what="event"):
        import asyncio
        import time

        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            for e in list(self.events):
                if pred(e):
                    return e
            await asyncio.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}; last events: {[e.kind for e in self.events[-10:]]}")

    def result(self, cmd_id, status):
        return lambda e: e.kind == "command_result" and e.command_id == cmd_id and e.status == status


#: test files that read the same session-scoped run (tests/integration/conftest.py) or must not
#: overlap (one local Ray cluster at a time): with `-n 2` each group runs in one worker
GROUPS = {
    "reference": ("test_resume.py", "test_overlap.py", "test_data_dir.py", "test_micro_batches_run.py"),
    "compare": ("test_compare.py", "test_compare_view_live.py"),
    "ray": ("test_ray_engine.py", "test_ray_multinode.py", "test_ray_recovery.py"),
}


#: groups whose tests are marked `serial`: the README's test command runs them after the others, alone
SERIAL = ("ray",)


def pytest_collection_modifyitems(config, items):
    """Under pytest-xdist (`-n 2 --dist loadgroup`, the README's test command): a file's tests
    stay in one worker (its module fixtures are built once), and so do the files of a group
    above; the `serial` ones are left to a run of their own."""
    by_file = {f: g for g, files in GROUPS.items() for f in files}
    for item in items:
        group = by_file.get(item.path.name, str(item.path.relative_to(ROOT)))
        item.add_marker(pytest.mark.xdist_group(group))
        if group in SERIAL:
            item.add_marker(pytest.mark.serial)


# ---- shared by the engine tests: a perturbed copy of a model, and its log-probs as the canary computes them
def hf_logprobs(model, seqs):
    """Per-token log-probs from the second token on, as TrainingSession.verify_canary computes them."""
    import torch

    out = []
    with torch.no_grad():
        for seq in seqs:
            inp = torch.tensor([seq])
            logits = model(input_ids=inp).logits[0, :-1].float()
            out.append(torch.log_softmax(logits, dim=-1).gather(1, inp[0, 1:, None])[:, 0].tolist())
    return out


def perturbed_model(model_dir, seed):
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    return model


def make_run_files(home: Path, run_id: str, *states: tuple[str, str], step: int = 7, lock: bool = True,
                   checkpoint: bool | None = None) -> Path:
    """A run's files as a backend leaves them: its log (one step's metrics, then `states` as
    (state, reason)), run.json, a lock nobody holds, and a complete checkpoint at `step` when it
    trained (`checkpoint=False`: none, as when a run dies before its first)."""
    from backend.protocol import events as E
    from backend.protocol.paths import LOCK_NAME
    from backend.runstore import RunStore, write_run_meta
    from backend.training.checkpoints import META, ResumePoint

    rdir = home / "runs" / run_id
    rdir.mkdir(parents=True)
    if checkpoint if checkpoint is not None else step > 0:
        ck = rdir / "checkpoints" / f"step-{step:06d}"
        ck.mkdir(parents=True)
        (ck / META).write_text(ResumePoint(ck, step, step, 0, step + 1, {}, "x", "scheduled").to_json())
    store = RunStore(rdir / "events.db")
    store.append_many([E.StepMetrics(step=step, reward_mean=0.5, reward_std=0.1)])
    store.append_many([E.StateChanged(state=s, reason=r, step=step) for s, r in states])
    store.close()
    write_run_meta(rdir, run_id=run_id, pid=999_999, profile="p", state=states[-1][0])
    if lock:
        (rdir / LOCK_NAME).write_text("999999\n")  # left by a backend that is gone: not held
    return rdir


def wait_event(events: list, pred, what: str, timeout: float = 180):
    """The first of `events` (a list a bus subscriber appends to) for which `pred` holds, waiting
    up to `timeout` seconds; fails naming `what` and the newest kinds seen."""
    import time

    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        for e in list(events):
            if pred(e):
                return e
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}; last: {[e.kind for e in events[-8:]]}")
