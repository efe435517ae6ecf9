"""One declaration per live parameter: the command, the profile, the form, the checks and the
backend's apply table are all derived from `backend.protocol.params.PARAMS`."""

import pytest
from pydantic import ValidationError

from backend.protocol import commands as C
from backend.protocol.params import BY_NAME, LIVE_PARAMS, PARAMS, SAMPLING_PARAMS, param_range
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


def test_one_declaration_reaches_the_command_the_profile_the_form_ctl_and_the_apply_table(tmp_path):
    """A parameter added to the registry alone (in a fresh interpreter) is settable, bounded and
    applied everywhere: nothing else has to be edited."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", REGISTER_ONE_MORE], cwd=root, capture_output=True, text=True, timeout=120,
                         env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(root), "RLC_HOME": str(tmp_path)})
    assert out.returncode == 0 and "REGISTERED-EVERYWHERE" in out.stdout, out.stderr[-3000:]
