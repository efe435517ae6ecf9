"""Which GPU the trainer keeps and which a local Ray cluster gets, on multi-GPU hosts (pure
logic over CUDA_VISIBLE_DEVICES; the real two-GPU run is tests/gpu/test_two_gpu.py)."""

import pytest

from backend.engine.gpus import ALL_GPUS_ENV, pin_trainer_gpu
from backend.settings import RaySection


@pytest.fixture
def env(monkeypatch):
    for k in ("CUDA_VISIBLE_DEVICES", ALL_GPUS_ENV, "CUDA_DEVICE_ORDER"):
        monkeypatch.setenv(k, "")  # records the original value (or its absence): pin_trainer_gpu's
        monkeypatch.delenv(k)      # own writes are undone after the test too
    return monkeypatch


def _engine_gpus(separate: bool):
    pytest.importorskip("ray")
    from backend.engine.ray_cluster import engine_gpu_ids

    return engine_gpu_ids(RaySection(separate_trainer_gpu=separate))


def test_two_or_more_gpus_pin_the_trainer_to_the_first(env):
    import os

    env.setenv("CUDA_VISIBLE_DEVICES", "3,5,6")
    assert pin_trainer_gpu() == ("3", ["5", "6"])
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "3" and os.environ[ALL_GPUS_ENV] == "3,5,6"
    assert os.environ["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
    assert _engine_gpus(separate=True) == ["5", "6"]  # engines never land on the trainer's GPU
    assert _engine_gpus(separate=False) == ["3", "5", "6"]  # or share all of them, if asked


def test_one_gpu_or_none_changes_nothing(env):
    import os

    env.setenv("CUDA_VISIBLE_DEVICES", "2")
    assert pin_trainer_gpu() is None and os.environ["CUDA_VISIBLE_DEVICES"] == "2"
    assert ALL_GPUS_ENV not in os.environ
    assert _engine_gpus(separate=True) is None  # one GPU: Ray's own detection, trainer and engine share it
    env.setenv("CUDA_VISIBLE_DEVICES", "")
    assert pin_trainer_gpu() is None and _engine_gpus(separate=True) is None
