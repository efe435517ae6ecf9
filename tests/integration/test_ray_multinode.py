"""Engine replicas on two Ray nodes of a real cluster on this machine (Ray's own multi-node test
facility: a head and a second node, each with its own raylet and object store), placed on
different nodes (`ray.placement = "SPREAD"`). A run trains with every sync verified on every
replica; killing the second node's raylet mid-run raises `engine_dead`, pauses, restarts the
replica on the surviving node, re-syncs it verified, and the run continues when resumed."""

import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from backend.protocol import decode_event
from tests.conftest import backend_env

pytestmark = pytest.mark.integration
RLC = [sys.executable, "-m", "console.cli"]
# what a single-node run emits (tests/integration/test_ray_recovery.py); these must be here too
KINDS = {"run_started", "state_changed", "progress", "sample_group", "step_metrics", "weights_synced"}


def _engine_nodes(cluster) -> dict[str, str]:
    """actor id -> node id of the live EngineActor replicas (from the cluster's GCS)."""
    table = cluster.global_state.actor_table(None)
    return {aid: a["Address"]["NodeID"] for aid, a in table.items()
            if a.get("ActorClassName", "").endswith("EngineActor") and a.get("State") == "ALIVE"}


def test_replicas_on_two_nodes_one_node_lost_restarted_on_the_other(tmp_path, monkeypatch):
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")  # a test cluster; no token written to ~/.ray
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    from ray.cluster_utils import Cluster

    from ray._common.utils import get_ray_address_file

    temp = Path(tempfile.mkdtemp(prefix="rlc-mn-", dir="/tmp"))  # short: Ray's socket paths are length-limited
    # Cluster() writes the head's address to Ray's default temp dir (/tmp/ray), which it does
    # not create while the head uses its own: on a machine that never ran Ray it is not there
    Path(get_ray_address_file(None)).parent.mkdir(parents=True, exist_ok=True)
    # fast failure detection: a dead node is declared dead in ~2 s instead of ~15 s
    system = {"health_check_period_ms": 500, "health_check_failure_threshold": 4, "health_check_timeout_ms": 500}
    cluster = Cluster(initialize_head=True, head_node_args=dict(
        num_cpus=2, include_dashboard=False, temp_dir=str(temp), object_store_memory=300 * 2**20, _system_config=system))
    node_b = cluster.add_node(num_cpus=2, object_store_memory=300 * 2**20)
    head_id, b_id = cluster.head_node.node_id, node_b.node_id
    env = backend_env(tmp_path / "h", RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0")
    proc = subprocess.Popen(
        RLC + ["run", "--headless", "--json", "--max-steps", "100000",
               "--set", "engine.backend=ray", "--set", "engine.replicas=2", "--set", "ray.placement=SPREAD",
               "--set", f"ray.address={cluster.address}", "--set", "engine.verify_every=1",
               "--set", "training.prompts_per_step=4", "--set", "task.warmup_steps=5",
               "--set", "run.checkpoint_every=0"],
        env=env, stdout=subprocess.PIPE, stderr=open(tmp_path / "cli.err", "wb"), text=True)
    events, lock = [], threading.Lock()

    def read():
        for line in proc.stdout:
            with lock:
                events.append(decode_event(line))

    threading.Thread(target=read, daemon=True).start()

    def wait(pred, timeout=240, what=""):
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            with lock:
                for e in events:
                    if pred(e):
                        return e
            if proc.poll() is not None:
                break
            time.sleep(0.1)
        with lock:
            tail = [(e.kind, getattr(e, "reason", "") or getattr(e, "message", "")) for e in events[-8:]]
        raise AssertionError(f"timed out waiting for {what}: {tail}; {(tmp_path / 'cli.err').read_text()[-1500:]}")

    run_id = None
    try:
        started = wait(lambda e: e.kind == "run_started", what="run_started")
        run_id = started.run_id
        assert "ray, 2 replica(s)" in started.engine
        wait(lambda e: e.kind == "step_metrics" and e.step >= 3, what="3 steps")
        placed = _engine_nodes(cluster)
        assert sorted(placed.values()) == sorted([head_id, b_id]), f"replicas not on both nodes: {placed}"
        with lock:
            before = list(events)
        assert KINDS <= {e.kind for e in before}
        syncs = [e for e in before if e.kind == "weights_synced"]
        assert syncs and all(s.verified for s in syncs), [(s.version, s.verified, s.detail) for s in syncs]
        assert all("x 2" in s.method for s in syncs)  # pushed to, and loaded by, both replicas

        t_kill = time.monotonic()
        killed_at = time.time()
        node_b.kill_raylet()  # the second node goes away: its replica's worker dies with its raylet
        alert = wait(lambda e: e.kind == "alert" and e.rule == "engine_dead", what="engine_dead alert", timeout=90)
        assert alert.severity == "critical" and alert.ts - killed_at < 60
        resync = wait(lambda e: e.kind == "weights_synced" and "restarting" in e.detail, what="verified resync", timeout=240)
        assert resync.verified, resync.detail
        print(f"node lost -> engine_dead {alert.ts - killed_at:.1f} s -> verified resync on the surviving node "
              f"{time.monotonic() - t_kill:.1f} s after the kill ({resync.detail})")
        paused = wait(lambda e: e.kind == "state_changed" and e.state == "paused" and e.seq > alert.seq, what="paused")
        assert "engine failure" in paused.reason
        placed = _engine_nodes(cluster)
        assert list(placed.values()) == [head_id] * 2, f"the restarted replica is not on the surviving node: {placed}"
        step_at_pause = paused.step
        time.sleep(1.5)
        with lock:
            assert max(e.step for e in events if e.kind == "step_metrics") == step_at_pause
        out = subprocess.run(RLC + ["ctl", run_id, "resume"], env=env, capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        wait(lambda e: e.kind == "step_metrics" and e.step >= step_at_pause + 2, what="steps after resume")
        with lock:
            after = [e for e in events if e.kind == "weights_synced" and e.seq > resync.seq]
        assert after and all(s.verified and "x 2" in s.method for s in after)
    finally:
        if run_id:
            subprocess.run(RLC + ["ctl", run_id, "stop"], env=env, capture_output=True, timeout=30)
        try:
            proc.wait(timeout=90)
        except subprocess.TimeoutExpired:
            proc.kill()
        cluster.shutdown()
        shutil.rmtree(temp, ignore_errors=True)
    assert proc.returncode == 0
