from backend.protocol import events as E
from backend.runstore import RunStore
from backend.training import demo_task


def test_runstore_contiguous_and_durable(tmp_path):
    store = RunStore(tmp_path / "events.db")
    for i in range(50):
        stored = store.append(E.LogLine(message=f"m{i}"))
        assert stored.seq == i
    store.close()
    again = RunStore(tmp_path / "events.db")
    assert again.next_seq == 50
    assert again.append(E.StateChanged(state="running")).seq == 50
    assert again.seqs() == list(range(51))
    tail = list(again.read(45))
    assert [e.seq for e in tail] == [45, 46, 47, 48, 49, 50] and tail[-1].kind == "state_changed"
    assert again.last("log").message == "m49"
    ro = RunStore(tmp_path / "events.db", readonly=True)
    assert len(list(ro.read(0))) == 51


def test_demo_rewards():
    prompts = ["a>", "b>", "c>"]
    assert demo_task.char_match(prompts, ["aaaa", "bbxb", "zzzzzz"]) == [1.0, 0.75, 0.0]
    assert demo_task.clean_stop(prompts, ["aaaa", "bbb", "cccc"], truncated=[False, False, True]) == [1.0, 0.0, 0.0]
    # conversational form, as TRL passes it for chat datasets
    conv = [[{"role": "user", "content": "a>"}]]
    assert demo_task.char_match(conv, [[{"role": "assistant", "content": "aaxa"}]]) == [0.75]


def test_warmup_examples_format_only_by_default():
    ex = demo_task.warmup_examples(200, seed=3)
    assert all(len(answer) == 4 for _, answer in ex)
    correct = sum(answer == p[0] * 4 for p, answer in ex)
    assert correct < 10  # random letters: almost never the right answer
    assert sum(a == p[0] * 4 for p, a in demo_task.warmup_examples(200, seed=3, correct_fraction=1.0)) == 200


def test_socket_path_stays_short_for_deep_data_dirs(monkeypatch, tmp_path):
    from backend.protocol import paths

    monkeypatch.setenv("RLC_HOME", str(tmp_path / ("deep" * 30)))
    rid = paths.new_run_id("demo")
    sock = paths.socket_path(rid)
    assert len(str(sock)) <= paths.MAX_SOCKET_PATH
    assert sock == paths.socket_path(rid)  # both sides compute the same path
    monkeypatch.setenv("RLC_HOME", "/tmp/h")
    assert paths.socket_path(rid) == paths.run_dir(rid) / "control.sock"


def test_append_many_is_contiguous_with_append(tmp_path):
    store = RunStore(tmp_path / "e.db")
    store.append(E.LogLine(message="a"))
    stored = store.append_many([E.LogLine(message=f"b{i}") for i in range(5)])
    assert [e.seq for e in stored] == [1, 2, 3, 4, 5]
    assert store.append(E.LogLine(message="c")).seq == 6
    assert [e.message for e in store.read(0)] == ["a", "b0", "b1", "b2", "b3", "b4", "c"]
