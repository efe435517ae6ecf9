"""SetParams guardrails answer with a reason (controller logic; the live run covers the rest)."""

from types import SimpleNamespace

from backend.controller import Controller
from backend.protocol import commands as C
from backend.runstore import RunStore
from backend.settings import load_profile


def controller(tmp_path, beta=0.0):
    c = Controller(load_profile(None, training={"beta": beta}), run_id="t", run_dir=tmp_path, profile_name="p",
                   store=RunStore(tmp_path / "e.db"))
    c.state = "running"
    c.session = SimpleNamespace(max_prompt_tokens=2, has_ref_model=beta > 0)
    return c


def test_beta_needs_a_reference_model(tmp_path):
    res = controller(tmp_path).submit(C.SetParams(beta=0.1))
    assert res.status == "rejected" and "reference model" in res.reason
    ok = controller(tmp_path / "b", beta=0.04)
    assert ok.submit(C.SetParams(beta=0.0)).status == "accepted"


def test_max_tokens_must_fit_the_engine_context(tmp_path):
    c = controller(tmp_path)
    res = c.submit(C.SetParams(max_tokens=63))
    assert res.status == "rejected" and "max_model_len=64" in res.reason and "longest prompt (2 tokens)" in res.reason
    assert c.submit(C.SetParams(max_tokens=62)).status == "accepted"


def test_state_guardrails(tmp_path):
    c = controller(tmp_path)
    assert "not paused" in c.submit(C.Resume()).reason
    assert c.submit(C.Pause()).status == "accepted"
    assert "pending" in c.submit(C.Pause()).reason
    c.state = "finished"
    assert c.submit(C.Checkpoint()).reason == "the run is finished"
    starting = controller(tmp_path / "s")
    starting.state = "starting"
    assert "still starting" in starting.submit(C.ResyncWeights()).reason


def test_resume_sent_while_pausing_calls_the_pause_off(tmp_path):
    c = controller(tmp_path)
    assert c.submit(C.Pause()).status == "accepted" and c.state == "pausing"
    assert c.submit(C.Resume()).status == "accepted"
    idled = []
    assert list(c.at_boundary(idle=lambda: idled.append(1), wake=lambda: None)) == []  # both answered by the desk
    assert not idled  # no pause entered
    assert c.state == "running" and not c._pause_requested
    states = [e.state for e in c.store.read(0) if e.kind == "state_changed"]
    assert states[-2:] == ["pausing", "running"]
