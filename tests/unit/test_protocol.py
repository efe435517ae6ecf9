import json

import pytest
from pydantic import ValidationError

from backend.protocol import (
    MAX_FRAME_BYTES,
    PROTOCOL_VERSION,
    ProtocolError,
    decode_command,
    decode_event,
    encode_command,
    encode_event,
)
from backend.protocol import commands as C
from backend.protocol import events as E

EVENTS = [
    E.Hello(protocol=PROTOCOL_VERSION, run_id="r1", last_seq=3),
    E.RunStarted(run_id="r", profile="p.toml", model="m", task="t", engine="vllm", reward_functions=["a", "b"], params={"temperature": 1.0}),
    E.StateChanged(state="paused", reason="operator", step=4),
    E.Progress(stage="engine", message="starting", current=1, total=3),
    E.SampleGroup(
        step=2, group=0, prompt="a>", weight_version=3, reward_mean=0.5, reward_std=0.1,
        completions=[E.Completion(text="aaaa", rewards={"f": 1.0, "g": None}, reward=1.0, advantage=0.7, length=5, truncated=False)],
    ),
    E.StepMetrics(step=2, loss=0.1, kl=None, reward_mean=0.4, reward_std=0.2, rewards_by_function={"f": 0.4},
                  times=E.StepTimes(generate=0.1, score=0.01, train=0.2, sync=0.01, total=0.32), tokens_per_s=1e4),
    E.GpuStats(available=False, reason="no NVIDIA GPU"),
    E.GpuStats(available=True, gpus=[E.GpuInfo(index=0, name="H100", util_pct=90, mem_used_mb=1, mem_total_mb=2, power_w=300, temperature_c=50)]),
    E.WeightsSynced(version=2, step=1, duration_s=0.02, bytes=100, checksum="abc", verified=True),
    E.ParamsApplied(command_id="x", step=3, changed={"temperature": 0.7}, params={"temperature": 0.7}),
    E.CommandResult(command_id="x", command="pause", status="rejected", reason="already paused"),
    E.CheckpointSaved(step=3, path="/tmp/c", duration_s=0.1),
    E.Alert(rule="zero_std", severity="warning", message="m", value=0.9, threshold=0.5),
    E.LogLine(message="hi"),
    E.ErrorReply(message="bad"),
    E.RunResumed(step=30, checkpoint="/runs/r/checkpoints/step-000030", previous_pid=123, checksum="ab12"),
    E.ControlStatus(role="viewer", holder="rl-console pid 7 (uid 0)", reason="another console controls this run"),
    E.HostMemory(step=3, rss_mb=9089.5, step_need_mb=5210.0, available_mb=14000.25, total_mb=24105.0),
    E.HostMemory(step=0, rss_mb=900.0, available_mb=1800.0, total_mb=2048.0, limit="cgroup"),
    E.PolicyProbe(step=10, weight_version=11, duration_s=0.04, probes=[
        E.ProbeOutput(prompt="What is 2+3?", output="5", rewards={"correct": 1.0, "form": None}, reward=1.0, length=2, truncated=False)]),
    E.TryResult(command_id="t1", step=4, weight_version=5, prompt="hi", params={"temperature": 0.0}, duration_s=0.2,
                completions=[E.Completion(text="hello", rewards={"f": None}, reward=0.0, advantage=0.0, length=2, truncated=True)]),
]
COMMANDS = [C.Subscribe(from_seq=5), C.Subscribe(from_seq=-1, role="view", client="me"), C.Subscribe(take=True), C.Pause(), C.Resume(),
            C.ResyncWeights(), C.SetParams(temperature=0.7, max_tokens=3),
            C.Checkpoint(), C.Stop(checkpoint=False), C.TryPrompt(prompt="What is 2+3?", n=4, temperature=0.0, columns={"answer": "5"})]


def test_every_event_type_is_covered():
    assert {type(e) for e in EVENTS} == set(E.EVENT_TYPES)
    assert {type(c) for c in COMMANDS} == set(C.COMMAND_TYPES)


@pytest.mark.parametrize("event", EVENTS, ids=lambda e: e.kind)
def test_event_round_trip(event):
    frame = encode_event(event)
    assert frame.endswith(b"\n") and json.loads(frame)["v"] == PROTOCOL_VERSION
    assert decode_event(frame) == event


@pytest.mark.parametrize("event", EVENTS, ids=lambda e: e.kind)
def test_fast_encoder_matches_the_strict_one(event):
    # the Rust serializer's frame decodes to the same JSON object as json.dumps's
    from backend.protocol.codec import _encode_strict

    assert json.loads(encode_event(event)) == json.loads(_encode_strict(event))


NAN_CASES = [
    E.SampleGroup(step=1, group=0, prompt="p", weight_version=0, reward_mean=0.0, reward_std=0.0,  # nested model
                  completions=[E.Completion(text="t", rewards={"f": float("nan")}, reward=0.0, advantage=0.0, length=1, truncated=False)]),
    E.StepMetrics(step=1, reward_mean=float("inf"), reward_std=0.0, tokens_per_s=1.0),
    E.StepMetrics(step=1, reward_mean=0.0, reward_std=0.0, tokens_per_s=1.0,
                  times=E.StepTimes(generate=float("-inf"), score=0.0, train=0.0, sync=0.0, total=0.0)),
    E.GpuStats(available=True, gpus=[E.GpuInfo(index=0, name="g", util_pct=float("nan"), mem_used_mb=1, mem_total_mb=2)]),
]


@pytest.mark.parametrize("event", NAN_CASES, ids=lambda e: e.kind)
def test_non_finite_numbers_are_refused_not_sent_as_null(event):
    with pytest.raises(ValueError, match="JSON compliant"):
        encode_event(event)


def test_texts_that_spell_nan_or_infinity_and_non_ascii_round_trip():
    event = E.SampleGroup(step=1, group=0, prompt="NaN or Infinity? — ünïcode ✓", weight_version=0, reward_mean=0.5,
                          reward_std=0.0, completions=[E.Completion(text="-Infinity", rewards={"f": 1.0}, reward=1.0,
                                                                   advantage=0.0, length=1, truncated=False)])
    assert decode_event(encode_event(event)) == event
    plain = event.model_copy(update={"prompt": "ünïcode ✓"}, deep=True)
    plain = plain.model_copy(update={"completions": [plain.completions[0].model_copy(update={"text": "ok"})]})
    assert decode_event(encode_event(plain)) == plain


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c.kind)
def test_command_round_trip(command):
    assert decode_command(encode_command(command)) == command


def test_models_are_frozen():
    with pytest.raises(ValidationError):
        E.StateChanged(state="running").state = "paused"  # type: ignore[misc]


def test_unknown_kind_rejected_with_clear_error():
    with pytest.raises(ProtocolError, match="bad command.*'explode'"):
        decode_command(json.dumps({"v": PROTOCOL_VERSION, "kind": "explode", "id": "1"}))
    with pytest.raises(ProtocolError, match="bad event"):
        decode_event(json.dumps({"v": PROTOCOL_VERSION, "kind": "nope"}))


def test_wrong_version_rejected():
    with pytest.raises(ProtocolError, match="protocol version 99"):
        decode_command(json.dumps({"v": 99, "kind": "pause", "id": "1"}))
    with pytest.raises(ProtocolError, match="protocol version None"):
        decode_command(json.dumps({"kind": "pause", "id": "1"}))


@pytest.mark.parametrize("frame", [b"{not json", b"[1,2]", b'"x"', b"\xff\xfe"])
def test_malformed_frames(frame):
    with pytest.raises(ProtocolError):
        decode_command(frame)


def test_oversized_frame():
    with pytest.raises(ProtocolError, match="exceeds"):
        decode_command(b'{"v":1,"kind":"pause","id":"' + b"x" * MAX_FRAME_BYTES + b'"}')


def test_out_of_range_set_params_carries_id_for_rejection():
    frame = json.dumps({"v": PROTOCOL_VERSION, "kind": "set_params", "id": "abc", "temperature": 99})
    with pytest.raises(ProtocolError) as info:
        decode_command(frame)
    assert info.value.command_id == "abc" and info.value.kind == "set_params"
    assert "temperature" in str(info.value) and "less than or equal to 2" in str(info.value)


def test_set_params_needs_a_change_and_checks_ranges():
    with pytest.raises(ValidationError, match="at least one"):
        C.SetParams()
    for bad in ({"top_p": 0}, {"num_generations": 1}, {"learning_rate": -1}, {"max_tokens": 0}, {"temperature": 0}):
        with pytest.raises(ValidationError):
            C.SetParams(**bad)
    assert C.SetParams(top_k=-1, beta=0.0).changes() == {"top_k": -1, "beta": 0.0}


def test_protocol_imports_only_stdlib_and_pydantic():
    import subprocess
    import sys

    code = "import sys, backend.protocol; bad = [m for m in ('torch','vllm','trl','ray','transformers','textual') if m in sys.modules]; print(bad)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"
