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
