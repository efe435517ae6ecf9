"""Shared by the GPU tests: the tiny model they load into vLLM."""

import pytest


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from backend.training.tiny_model import TinyModelSpec, build_model

    # head size 64: supported by every CUDA attention backend
    return build_model(tmp_path_factory.mktemp("m") / "tiny", TinyModelSpec(hidden_size=256, num_heads=4, num_kv_heads=2))
