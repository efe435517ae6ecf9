"""A new run's id carries `run.name` where the run sets one (--set, RLC_RUN__NAME, the profile
file: the backend's order, checked against its own loading), else the profile file's name,
else "demo"."""

import argparse

from console.cli import _profile_name


def _args(profile=None, sets=()):
    return argparse.Namespace(profile=profile, set=list(sets))


def test_the_run_name_goes_into_the_id_from_wherever_it_is_set(tmp_path, monkeypatch):
    from backend.settings import load_profile

    monkeypatch.delenv("RLC_RUN__NAME", raising=False)
    assert _profile_name(_args()) == "demo"
    assert _profile_name(_args(sets=["run.name=live"])) == "live"
    plain = tmp_path / "mine.toml"
    plain.write_text("[sampling]\ntemperature = 0.9\n")
    assert _profile_name(_args(str(plain))) == "mine"  # no name in it: the file's
    named = tmp_path / "o7b.toml"
    named.write_text('[run]\nname = "fromfile"\n')
    assert _profile_name(_args(str(named))) == "fromfile"
    assert _profile_name(_args(str(named), ["run.name=renamed"])) == "renamed"
    assert load_profile(str(named)).run.name == "fromfile"  # the backend agrees
    monkeypatch.setenv("RLC_RUN__NAME", "envname")
    assert _profile_name(_args(str(plain))) == "envname"
    assert _profile_name(_args(str(named))) == "envname" == load_profile(str(named)).run.name  # --set, env, file
    assert _profile_name(_args(str(named), ["run.name=renamed"])) == "renamed"
    monkeypatch.delenv("RLC_RUN__NAME")
    broken = tmp_path / "broken.toml"
    broken.write_text("[run\n")
    assert _profile_name(_args(str(broken))) == "broken"  # the backend says what is wrong with it
