"""Each playground try samples afresh: two tries of one prompt at one step get different
seeds (and so, at a temperature above 0, their own samples), derived from the run's seed."""

from types import SimpleNamespace

from backend.bus import EventBus
from backend.protocol import commands as C
from backend.runstore import RunStore
from backend.settings import load_profile
from backend.training import probes
from backend.training.step import StepLoop


def test_two_tries_at_one_step_get_their_own_seeds(tmp_path, monkeypatch):
    seen: list[int] = []

    def fake_run_try(session, prompt, sampling, columns, *, conversational):  # the engine call, recorded
        seen.append(sampling.seed)
        return [], {}

    monkeypatch.setattr(probes, "run_try", fake_run_try)
    bus = EventBus(RunStore(tmp_path / "events.db"))
    session = SimpleNamespace(trainer=None, conversational=False)
    profile = load_profile(None)
    params = {"temperature": 1.0, "top_p": 1.0, "top_k": -1, "max_tokens": 6, "num_generations": 8}
    loop = StepLoop(profile, bus, SimpleNamespace(request_pause=lambda why: None), session=session, params=params)
    for _ in range(2):
        loop.try_prompt(C.TryPrompt(prompt="c>", n=2, temperature=1.0))
    assert len(seen) == 2 and seen[0] != seen[1]
    again = StepLoop(profile, bus, SimpleNamespace(request_pause=lambda why: None), session=session, params=params)
    again.try_prompt(C.TryPrompt(prompt="c>", n=2))
    assert seen[2] == seen[0]  # reproducible: the same run seed, step and try number give the same seed
    assert [e.kind for e in bus.store.read(0)] == ["try_result"] * 3
