"""The playground's dataset columns (`NAME=VALUE`): one parser, `backend.protocol.commands.parse_columns`,
for the console's form (one typed line) and `rl-console ctl RUN try --column` (one argument each).
Bad input is refused with what is wrong, before anything is sent, and never half-taken."""

import pytest

from backend.protocol.commands import parse_columns


@pytest.mark.parametrize("raw", ["", "   ", []])
def test_nothing_given_is_no_columns(raw):
    assert parse_columns(raw) == {}


def test_a_typed_line_splits_like_a_shell_line():
    assert parse_columns('answer=olleh hint="two words" empty= expr=a=b  spaced=\'x y\'') == {
        "answer": "olleh", "hint": "two words", "empty": "", "expr": "a=b", "spaced": "x y"}


def test_cli_arguments_are_taken_whole():
    """The shell already split them: a value with spaces is one argument, not split again."""
    assert parse_columns(["hint=two words", "answer=5", " name =v", "q=\"quoted\""]) == {
        "hint": "two words", "answer": "5", "name": "v", "q": '"quoted"'}


@pytest.mark.parametrize("raw, error", [
    ("answer", "columns: 'answer' is not NAME=VALUE (a dataset column the reward functions read, e.g. answer=5)"),
    (["answer"], "columns: 'answer' is not NAME=VALUE"),
    ("=5", "columns: '=5' is not NAME=VALUE"),
    ([" =5"], "columns: ' =5' is not NAME=VALUE"),
    ([""], "columns: '' is not NAME=VALUE"),
    ("answer = 5", "columns: 'answer' is not NAME=VALUE"),
    ('answer="olleh', "columns: No closing quotation"),
    ("answer=1 hint=x answer=2", "columns: 'answer' is given twice ('1' and '2'); give each column once"),
    (["answer=1", "answer=1"], "columns: 'answer' is given twice"),
])
def test_bad_input_is_refused_with_what_is_wrong(raw, error):
    with pytest.raises(ValueError) as exc:
        parse_columns(raw)
    assert error in str(exc.value)


def test_the_cli_and_the_console_use_it():
    from backend.protocol import commands
    from console import cli
    from console.screens import playground

    assert playground.parse_columns is commands.parse_columns
    cmd = cli.build_try(["What is 2+3?"], 2, ["temperature=0.5"], ["answer=5", "hint=two words"])
    assert cmd.columns == {"answer": "5", "hint": "two words"} and cmd.n == 2 and cmd.temperature == 0.5
    with pytest.raises(ValueError, match="columns: 'answer' is given twice"):
        cli.build_try(["What is 2+3?"], 1, [], ["answer=5", "answer=6"])
    with pytest.raises(ValueError, match="columns: 'answer' is not NAME=VALUE"):
        cli.build_try(["What is 2+3?"], 1, [], ["answer"])


@pytest.mark.parametrize("action, args, sets, error", [
    ("set", ["temperature=nan"], [], "temperature=nan: 'nan' is not a finite number"),
    ("set", ["top_p=inf"], [], "top_p=inf: 'inf' is not a finite number"),
    ("set", ["temperature=0.7", "temperature=0.9"], [], "'temperature' is given twice"),
    ("try", ["hi"], ["temperature=0.5", "temperature=0.6"], "'temperature' is given twice"),
    ("try", ["hi"], ["temperature=nan"], "'nan' is not a finite number"),
    ("try", [" "], [], "the prompt is empty"),
])
def test_ctl_values_that_would_mislead_are_refused_with_the_real_reason(action, args, sets, error):
    from console import cli

    with pytest.raises(ValueError, match=error):
        if action == "try":
            cli.build_try(args, 1, sets, [])
        else:
            cli.build_command(action, args)


def test_ctl_timeout_must_be_positive_seconds(capsys):
    from console import cli

    with pytest.raises(SystemExit) as exc:
        cli.main(["ctl", "latest", "try", "hi", "--timeout", "-3"])
    assert exc.value.code == 2 and "give a positive number of seconds" in capsys.readouterr().err
