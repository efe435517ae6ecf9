from backend.protocol.events import GpuInfo
from backend.telemetry.gpu import merge_node_stats


def gpu(i, node="trainer-host"):
    return GpuInfo(index=i, name="NVIDIA H100", util_pct=50.0, mem_used_mb=1.0, mem_total_mb=80_000.0, node=node)


def stats(host, replica, *indices):
    return {"replica": replica, "hostname": host, "gpus": [gpu(i, node="x").model_dump() for i in indices], "gpu_reason": ""}


def test_per_node_gpus_from_ray_replicas_are_merged_once_per_physical_gpu():
    local = [gpu(0), gpu(1)]
    # two replicas on node-b both see node-b's two GPUs through NVML; one replica on the trainer's host
    merged = merge_node_stats(local, [stats("node-b", 0, 0, 1), stats("node-b", 1, 0, 1), stats("trainer-host", 2, 0, 1)])
    assert [(g.node, g.index) for g in merged] == [("trainer-host", 0), ("trainer-host", 1), ("node-b", 0), ("node-b", 1)]


def test_cpu_replicas_add_nothing():
    assert merge_node_stats([], [{"replica": 0, "hostname": "h", "gpus": [], "gpu_reason": "no NVIDIA GPU"}]) == []
