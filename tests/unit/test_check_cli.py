"""``engagewatch check``: the files a worker would start with, checked without one."""

from __future__ import annotations

from pathlib import Path

import pytest

from stream.cli import main
from tests.conftest import REPO


@pytest.fixture(autouse=True)
def no_configured_files(monkeypatch: pytest.MonkeyPatch) -> None:
    """The shipped defaults, whatever the environment running the tests names."""
    for name in (
        "ENGAGEWATCH_CONFIG",
        "ENGAGEWATCH_RULES_FILE",
        "ENGAGEWATCH_RECEIVERS_FILE",
        "ENGAGEWATCH_API_TOKEN",
        "ENGAGEWATCH_API_TOKEN_FILE",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("ENGAGEWATCH_NOTIFIER_ENABLED", raising=False)


def test_the_shipped_files_are_valid_and_summarised(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "settings: valid"
    assert out[1] == "api token: none (triage writes are refused)"
    assert out[2] == (
        f"rules: {REPO / 'config' / 'rules.yaml'}: 9 rules (silence 2, threshold 1, drop 2, "
        "adoption 1, time_to_value 1, nps 1, health 1)"
    )
    assert out[3] == f"receivers: {REPO / 'config' / 'receivers.yaml'}: 1 receiver (log 1)"


def test_a_token_file_the_worker_could_not_read_fails_the_check(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = tmp_path / "no-such-token"
    monkeypatch.setenv("ENGAGEWATCH_API_TOKEN_FILE", str(missing))
    assert main(["check"]) == 2
    assert f"api_token_file: cannot read {missing}" in capsys.readouterr().err


def test_a_bad_rules_file_is_named_with_its_line_and_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rules = tmp_path / "rules.yaml"
    text = (REPO / "config" / "rules.yaml").read_text()
    assert "gap_multiple: 2" in text
    rules.write_text(text.replace("gap_multiple: 2", "gap_multiple: -2", 1))
    line = text.splitlines().index(next(x for x in text.splitlines() if "gap_multiple: 2" in x))
    assert main(["check", "--rules", str(rules)]) == 2
    err = capsys.readouterr().err
    assert f"{rules}:{line + 1}: rules.0.gap_multiple: Input should be greater than 0" in err


def test_a_bad_receivers_file_is_named_and_another_can_be_checked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    receivers = tmp_path / "receivers.yaml"
    receivers.write_text(
        "receivers:\n  - name: ops\n    type: carrier_pigeon\nroute: {receiver: ops}\n"
    )
    assert main(["check", "--receivers", str(receivers)]) == 2
    err = capsys.readouterr().err
    assert f"{receivers}:2: receivers.0" in err and "expected tags" in err
    receivers.write_text(
        "receivers:\n"
        "  - {name: log, type: log}\n"
        "  - {name: csm, type: email, smtp: {host: 127.0.0.1, port: 25},\n"
        "     from: a@b.c, to: [owner]}\n"
        "route: {receiver: log, routes: [{receiver: csm}]}\n"
    )
    assert main(["check", "--receivers", str(receivers)]) == 0
    assert "2 receivers (log 1, email 1)" in capsys.readouterr().out


def test_receivers_are_not_checked_for_a_worker_without_a_notifier(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ENGAGEWATCH_NOTIFIER_ENABLED", "false")
    assert main(["check"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == (
        "receivers: not checked (notifier_enabled is false)"
    )


def test_rules_reading_further_back_than_the_horizon_fail_the_check(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A drop rule judged on three days running reads 45 days back with today: with the
    default horizon of 44 its oldest day would be pruned as each day's first event
    arrives. The worker refuses to start; the check says so first."""
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        "rules:\n  - name: usage-drop\n    kind: drop\n    metric: active_users\n"
        "    drop: 0.4\n    statistic: median\n    for_days: 3\n"
    )
    assert main(["check", "--rules", str(rules)]) == 2
    assert (
        "horizon_days: 44 days kept, but the rules read today and 44 days back: set it to 45"
        in (capsys.readouterr().err)
    )
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setenv("ENGAGEWATCH_HORIZON_DAYS", "45")
    try:
        assert main(["check", "--rules", str(rules)]) == 0
    finally:
        monkeypatch.undo()
