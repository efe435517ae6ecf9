"""The profile's engine knobs reach the real vLLM: a run profile with non-default values goes
through `factory.make_engine` (the path a run takes) in a fresh process, and vLLM's own config
and environment are read back."""

import json
import subprocess
import sys

import pytest

from tests.conftest import backend_env

pytestmark = pytest.mark.integration

SCRIPT = r"""
import json, os, sys
from backend.engine.factory import make_engine
from backend.settings import RunProfile

profile = RunProfile(engine={"max_model_len": 48, "enforce_eager": True, "kv_cache_gb": 2}, run={"seed": 1234})
engine = make_engine(profile, sys.argv[1], "cpu", "float32")
try:
    from backend.engine.base import EngineError, Sampling
    one = Sampling(n=1, temperature=1.0, top_p=1.0, top_k=-1, max_tokens=2, seed=0)
    try:  # a request vLLM refuses (an empty prompt) is an error of that request, not of the engine
        engine.generate([[]], one)
        refused = "not refused"
    except EngineError as exc:
        refused = str(exc)
    health_after = engine.health()
    served_after = len(engine.generate([[1, 2]], one)[0][0].token_ids)
    cfg = engine.llm.llm_engine.vllm_config
    print(json.dumps({
        "options": engine.options.model_dump(),
        "max_model_len": cfg.model_config.max_model_len,
        "enforce_eager": cfg.model_config.enforce_eager,
        "seed": cfg.model_config.seed,
        "dtype": str(cfg.model_config.dtype),
        "prefix_caching": cfg.cache_config.enable_prefix_caching,
        "kv_env": os.environ.get("VLLM_CPU_KVCACHE_SPACE"),
        "cache_env": os.environ.get("VLLM_CACHE_ROOT"),
        "info": engine.info.extra,
        "refused": refused, "health_after": health_after, "served_after": served_after,
    }))
finally:
    engine.shutdown()
"""


def test_profile_engine_knobs_reach_vllm(tmp_path):
    from backend.training.tiny_model import build_model

    model = build_model(tmp_path / "m")
    env = backend_env(tmp_path / "home")
    for k in ("VLLM_CPU_KVCACHE_SPACE", "VLLM_CACHE_ROOT"):
        env.pop(k, None)
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(model)], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["max_model_len"] == 48 and got["info"]["max_model_len"] == 48
    assert got["enforce_eager"] is True
    assert got["seed"] == 1234
    assert got["dtype"] == "torch.float32"
    assert got["prefix_caching"] is False
    assert got["kv_env"] == "2"
    assert got["cache_env"] == str(tmp_path / "home" / "cache" / "vllm")
    assert got["options"]["cache_root"] == str(tmp_path / "home" / "cache")
    assert got["refused"].startswith("vLLM refused the request: VLLMValidationError") and "empty" in got["refused"]
    assert got["health_after"] is None and got["served_after"] >= 1  # the engine still serves
