"""Two in-process engines of different models in one process (tests, tools): vLLM keeps the
forward context in a process-wide global, so their forwards must not overlap. Without the
shared lock this fails within seconds ("Forward context is not set", or a KeyError on a layer
name the other model lacks)."""

import threading
import time

import pytest

pytestmark = pytest.mark.integration


def test_two_engines_generating_from_two_threads_do_not_read_each_others_forward_context(tmp_path):
    from backend.engine.base import Sampling
    from backend.engine.local import LocalVLLMEngine
    from backend.engine.options import EngineOptions
    from backend.training.tiny_model import TinyModelSpec, build_model

    engines = [LocalVLLMEngine(str(build_model(tmp_path / f"m{layers}", TinyModelSpec(num_layers=layers))),
                               EngineOptions(max_model_len=64)) for layers in (2, 4)]
    errors: list[str] = []
    done = [0, 0]

    def loop(i):
        t0 = time.monotonic()
        while time.monotonic() - t0 < 8 and not errors:
            try:
                out = engines[i].generate([[5, 6, 7, 8]] * 8, Sampling(n=4, temperature=1.0, max_tokens=16, seed=i))
                assert len(out) == 8 and all(len(g) == 4 for g in out)
                done[i] += 1
            except Exception as exc:  # noqa: BLE001 - the failure is the point
                errors.append(f"engine {i}: {exc!r}"[:300])

    try:
        threads = [threading.Thread(target=loop, args=(i,)) for i in (0, 1)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    finally:
        for e in engines:
            e.shutdown()
    assert not errors, errors
    assert min(done) >= 3, done  # both really generated, interleaved
