"""One declaration per live parameter: the command, the profile, the form, the checks and the
backend's apply table are all derived from `backend.protocol.params.PARAMS`."""

import dataclasses

import pytest
from pydantic import ValidationError

from backend.engine.base import Sampling

from backend.protocol import commands as C
from backend.protocol.params import BY_NAME, ENGINE_PARAMS, LIVE_PARAMS, PARAMS, SAMPLING_PARAMS, engine_sampling, param_range
from backend.settings import LIVE_PARAM_SECTIONS, RunProfile, load_profile
from backend.training.step import APPLY


def test_every_derived_place_has_exactly_the_registry():
    names = [p.name for p in PARAMS]
    assert list(LIVE_PARAMS) == names
    assert set(C.SetParams.model_fields) - {"id", "kind"} == set(names)
    assert set(LIVE_PARAM_SECTIONS) == set(names) and set(APPLY) == set(names)
    assert SAMPLING_PARAMS == {p.name for p in PARAMS if p.section == "sampling"}
    profile = RunProfile()
    assert profile.live_params() == {p.name: p.default for p in PARAMS}
    for p in PARAMS:
        assert p.name in type(getattr(profile, p.section)).model_fields
        assert p.description  # the form's help line


def test_sampling_parameters_fill_the_vllm_field_they_name():
    live = RunProfile().live_params()
    assert ENGINE_PARAMS == tuple(p.name for p in PARAMS if p.applies == "sampling")
    assert engine_sampling(live) == {name: live[name] for name in ENGINE_PARAMS}  # vllm="" : the field of its own name
    renamed = dataclasses.replace(BY_NAME["top_p"], vllm="nucleus")
    assert renamed.engine_field == "nucleus" and dataclasses.replace(renamed, applies="loss").engine_field is None
    assert Sampling.live(live, n=3, seed=1).params == engine_sampling(live)


@pytest.mark.parametrize("p", PARAMS, ids=lambda p: p.name)
def test_the_same_bounds_refuse_the_same_values_in_a_profile_and_a_command(p):
    assert not param_range(p.name).endswith("…")  # every live parameter has an upper bound
    bad = 10**7
    with pytest.raises(ValidationError):
        C.SetParams(**{p.name: bad})
    from backend.settings import ProfileError

    with pytest.raises(ProfileError, match=f"{p.section}.{p.name}"):
        load_profile(None, **{p.section: {p.name: bad}})
    assert C.SetParams(**{p.name: p.default}).changes() == {p.name: p.default}
    assert BY_NAME[p.name] is p


REGISTER_ONE_MORE = r'''
import asyncio, importlib.util, pathlib, sys, types
from types import SimpleNamespace

# the registry with ONE more declaration, nothing else changed anywhere
path = pathlib.Path("backend/protocol/params.py")
src = path.read_text().replace(
    "PARAMS: tuple[LiveParam, ...] = (",
    "Epsilon = Annotated[float, Field(gt=0.0, le=1.0, description='clip range of the policy ratio')]\n"
    "PARAMS: tuple[LiveParam, ...] = (\n    LiveParam('epsilon', Epsilon, 0.2, 'training', 'loss'),", 1)
mod = types.ModuleType("backend.protocol.params")
mod.__file__ = str(path)
sys.modules["backend.protocol.params"] = mod
exec(compile(src, str(path), "exec"), mod.__dict__)

from pydantic import ValidationError
from backend.protocol import commands as C
from backend.settings import load_profile, ProfileError
from backend.training.step import APPLY

assert C.SetParams(epsilon=0.1).changes() == {"epsilon": 0.1}                      # the command
try:
    C.SetParams(epsilon=5.0); raise SystemExit("out-of-range epsilon accepted")
except ValidationError:
    pass
assert load_profile(None, training={"epsilon": 0.3}).live_params()["epsilon"] == 0.3  # the profile section
try:
    load_profile(None, training={"epsilon": 2}); raise SystemExit("profile took epsilon=2")
except ProfileError as exc:
    assert "training.epsilon" in str(exc)
trainer = SimpleNamespace(args=SimpleNamespace())                                    # the apply table
APPLY["epsilon"](SimpleNamespace(session=SimpleNamespace(trainer=trainer), params={}), 0.1)
assert trainer.epsilon == 0.1 and trainer.args.epsilon == 0.1
from console.cli import build_parser                                                   # ctl --help
helptext = next(a for a in build_parser()._subparsers._group_actions[0].choices.items() if a[0] == "ctl")[1].format_help()
assert "epsilon" in helptext and ">0…1" in helptext

from textual.app import App                                                            # the console's form
from console.widgets.param_form import ParamForm

class FormApp(App):
    def compose(self):
        yield ParamForm()

async def main():
    async with FormApp().run_test() as pilot:
        pilot.app.query_one("#param-epsilon")  # raises NoMatches if the form lacks it
asyncio.run(main())
print("REGISTERED-EVERYWHERE")
'''


def run_fresh(script: str, tmp_path, timeout: int = 120) -> str:
    """`script` in a fresh interpreter at the repository root; its stdout (asserting it exited 0)."""
    import subprocess
    import sys
    from pathlib import Path

    import os

    root = Path(__file__).resolve().parents[2]
    path = os.pathsep.join([str(root), *filter(None, [os.environ.get("PYTHONPATH", "")])])  # (packages staged beside the venv)
    out = subprocess.run([sys.executable, "-c", script], cwd=root, capture_output=True, text=True, timeout=timeout,
                         env={"PATH": "/usr/bin:/bin", "PYTHONPATH": path, "RLC_HOME": str(tmp_path)})
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def test_one_declaration_reaches_the_command_the_profile_the_form_ctl_and_the_apply_table(tmp_path):
    """A parameter added to the registry alone (in a fresh interpreter) is settable, bounded and
    applied everywhere: nothing else has to be edited."""
    assert "REGISTERED-EVERYWHERE" in run_fresh(REGISTER_ONE_MORE, tmp_path)


REGISTER_A_SAMPLING_PARAM = r'''
import cloudpickle, dataclasses, os, pathlib, sys, types
from types import SimpleNamespace

# ONE more declaration: vLLM's min_p, bounded more loosely than vLLM (which takes [0, 1]), so
# that the engine's own rule is the one that refuses 1.5
path = pathlib.Path("backend/protocol/params.py")
src = path.read_text().replace(
    "PARAMS: tuple[LiveParam, ...] = (",
    "MinP = Annotated[float, Field(ge=0.0, le=2.0, description='min-p cut-off')]\n"
    "PARAMS: tuple[LiveParam, ...] = (\n    LiveParam('min_p', MinP, 0.0, 'sampling', 'sampling'),", 1)
mod = types.ModuleType("backend.protocol.params")
mod.__file__ = str(path)
sys.modules["backend.protocol.params"] = mod
exec(compile(src, str(path), "exec"), mod.__dict__)

from backend.controller import Controller
from backend.engine import local
from backend.engine.base import Sampling
from backend.protocol import commands as C
from backend.runstore import RunStore
from backend.settings import load_profile
from backend.training.step import APPLY, StepLoop

profile = load_profile(None, sampling={"min_p": 0.05})
live = {**profile.live_params(), "min_p": 0.1}
# the step's rollout: StepLoop.sampling (the step seam's own code) -> the engine's SamplingParams
loop = SimpleNamespace(params=live, profile=profile, measuring_logprobs=False, prefetch=None, measure_prompts=4)
rollout = StepLoop.sampling(loop, SimpleNamespace(args=SimpleNamespace(off_policy_mask_threshold=None)), 4)
assert rollout.params["min_p"] == 0.1, rollout
sent = local.LocalVLLMEngine.request_params(rollout, 2)           # what generate() passes to vLLM
assert [p.min_p for p in sent] == [0.1, 0.1] and sent[0].n == 8 and sent[0].seed != sent[1].seed, sent
# the Ray engine: a replica's chunk (dataclasses.replace, as RayEngine.generate) through Ray's pickling
chunk = cloudpickle.loads(cloudpickle.dumps(dataclasses.replace(rollout, first_index=1)))
assert local.request_params(chunk, 1)[0].min_p == 0.1 and local.request_params(chunk, 1)[0].seed == sent[1].seed
assert APPLY["min_p"].__name__ == "_next_rollout"                    # the apply table: read at the next rollout

# the controller refuses what the installed vLLM would refuse, with vLLM's own message
home = pathlib.Path(os.environ["RLC_HOME"])
ctl = Controller(profile, run_id="t", run_dir=home, profile_name="p", store=RunStore(home / "e.db"))
ctl.state = "running"
ctl.session = SimpleNamespace(max_prompt_tokens=2, has_ref_model=False, engine=object(), conversational=False,
                              encode=lambda prompt: [1, 2])
assert ctl.params["min_p"] == 0.05
res = ctl.submit(C.SetParams(min_p=1.5))
assert res.status == "rejected" and "the engine refuses it" in res.reason and "min_p must be in [0, 1], got 1.5" in res.reason, res
assert local.sampling_error(Sampling.live({**live, "min_p": 1.5}, n=2, seed=0)) == res.reason
res = ctl.submit(C.TryPrompt(prompt="hi", min_p=1.5))              # the playground's check too
assert res.status == "rejected" and "min_p must be in [0, 1], got 1.5" in res.reason, res
assert ctl.submit(C.SetParams(min_p=0.2)).status == "accepted"
from console.cli import build_try                                    # ctl try --set min_p=...
assert build_try(["hi"], 2, ["min_p=0.3"], []).overrides() == {"min_p": 0.3}
from console.widgets.try_form import SAMPLING                         # the playground form has a field for it
assert "min_p" in SAMPLING, SAMPLING
print("REACHES-THE-ENGINE")
'''


def test_one_sampling_declaration_reaches_the_engines_sampling_params_and_vllms_own_check(tmp_path):
    """A sampling parameter added to the registry alone (vLLM's min_p, in a fresh interpreter)
    is in the SamplingParams the engine sends for the step's rollout (local and Ray chunk), and a
    value vLLM refuses is refused by the controller with vLLM's own message."""
    assert "REACHES-THE-ENGINE" in run_fresh(REGISTER_A_SAMPLING_PARAM, tmp_path, timeout=300)
