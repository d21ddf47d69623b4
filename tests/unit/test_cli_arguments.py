"""The command line refuses bad arguments and paths with a message, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from stream.cli import main

EVENTS = (
    b'{"schema": 1, "event_id": "e-1", "type": "login", "account_id": "acme",'
    b' "user_id": "u-1", "occurred_at": "2026-11-20T14:30:00Z"}\n'
)


@pytest.fixture
def history(tmp_path: Path) -> Path:
    events = tmp_path / "events.jsonl"
    events.write_bytes(EVENTS)
    return events


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["simulate", "--accounts", "-3"], "--accounts: must be 1 or more"),
        (["simulate", "--seats", "0"], "--seats: must be 1 or more"),
        (["simulate", "--days", "x"], "--days: expected a whole number"),
        (["simulate", "--speed", "0"], "--speed: must be a number above 0"),
        (["replay", "EVENTS", "--out", "OUT", "--step-hours", "0"], "--step-hours: must be"),
        (["replay", "EVENTS", "--out", "OUT", "--step-hours", "-6"], "--step-hours: must be"),
        (["replay", "EVENTS", "--out", "OUT", "--step-hours", "0.001"], "from 1/60"),
        (["replay", "EVENTS", "--out", "OUT", "--jobs", "0"], "--jobs: must be 1 or more"),
    ],
)
def test_bad_arguments_are_usage_errors(
    history: Path, args: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [str(history) if a == "EVENTS" else a for a in args]
    args = [str(history.parent / "out.jsonl") if a == "OUT" else a for a in args]
    with pytest.raises(SystemExit) as exited:
        main(args)
    assert exited.value.code == 2
    assert says in capsys.readouterr().err


def test_paths_that_cannot_be_used_are_named(
    history: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = str(tmp_path / "alerts.jsonl")
    assert main(["replay", str(tmp_path / "missing.jsonl"), "--out", out]) == 2
    assert "missing.jsonl: no such file" in capsys.readouterr().err
    assert main(["replay", str(tmp_path), "--out", out]) == 2
    assert f"{tmp_path}: a directory" in capsys.readouterr().err
    unwritable = tmp_path / "no-such-dir" / "alerts.jsonl"
    assert main(["replay", str(history), "--out", str(unwritable)]) == 2
    assert f"{unwritable}: cannot write: No such file or directory" in capsys.readouterr().err
    beneath_a_file = history / "fleet"
    assert main(["simulate", "--accounts", "1", "--days", "1", "--out", str(beneath_a_file)]) == 2
    assert f"{beneath_a_file}: cannot make the directory" in capsys.readouterr().err


def test_replay_says_which_account_records_it_could_not_use(
    history: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An account record that does not decode is not silently left out: its account is
    judged without its name, time zone and licenses, and the summary says so."""
    accounts = tmp_path / "accounts.jsonl"
    accounts.write_text(
        '{"account_id": "acme", "name": "Acme", "licenses": "40 seats"}\n'
        "\n"
        '{"account_id": "other", "name": "Other", "licenses": 5}\n'
    )
    out = tmp_path / "alerts.jsonl"
    assert main(["replay", str(history), "--accounts", str(accounts), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "account records rejected (1), left out (an account with no valid record" in printed
    assert f"{accounts}:1: bad_type:licenses" in printed
