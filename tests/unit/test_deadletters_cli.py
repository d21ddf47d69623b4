"""``engagewatch dead-letters``: choosing letters and summarising the topic, without Kafka.

The Kafka side (reading the topic to its end, republishing) runs against a real broker
in tests/integration/test_engagement_kafka.py.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from stream.cli import _parser
from stream.deadletter import DeadLetter, SourcePosition
from stream.deadletters_cli import Choice, DeadLetterSummary

AT = datetime(2026, 11, 23, 5, 0, tzinfo=UTC)


def letter(
    reason: str, key: bytes | None = b"acme", minutes: int = 0, offset: int = 0
) -> DeadLetter:
    source = SourcePosition("ew.events", 2, offset, key, 1_795_000_000_000)
    return DeadLetter(reason, f"why {reason}", b'{"x": 1}', source, AT + timedelta(minutes=minutes))


def chosen(letters: list[DeadLetter | bytes | None], choice: Choice) -> list[DeadLetter]:
    """The letters handed on for republishing, in topic order."""
    handed: list[DeadLetter] = []
    summary = summary_of(letters, choice, handed.append)
    assert summary.chosen == len(handed)
    return handed


def summary_of(
    letters: list[DeadLetter | bytes | None],
    choice: Choice,
    each: Callable[[DeadLetter], None] | None = None,
    show: int = 0,
) -> DeadLetterSummary:
    values = [item.to_json() if isinstance(item, DeadLetter) else item for item in letters]
    return DeadLetterSummary.of(values, choice, show=show, each=each)


def test_no_filter_chooses_every_letter_and_counts_reasons() -> None:
    letters = [letter("late"), letter("state_too_large"), letter("late", b"globex")]
    summary = summary_of(list(letters), Choice(), show=2)
    assert summary.total == 3
    assert summary.by_reason == {"late": 2, "state_too_large": 1}
    assert summary.shown == letters[:2]  # kept to print: only as many as shown
    assert chosen(list(letters), Choice()) == letters  # read back equal, bytes and position


def test_filters_combine_reason_prefix_account_and_time() -> None:
    letters = [
        letter("bad_value:properties.score", minutes=0),
        letter("bad_value:user_id", b"globex", minutes=10),
        letter("bad_type:role", minutes=20),
        letter("late", minutes=30),
        letter("bad_value:role", None, minutes=40),
    ]
    assert chosen(list(letters), Choice(frozenset({"bad_value:"}))) == [
        letters[0],
        letters[1],
        letters[4],
    ]
    # A reason without the colon is exact: "bad_value" names no letter.
    assert chosen(list(letters), Choice(frozenset({"bad_value"}))) == []
    assert chosen(list(letters), Choice(frozenset({"late", "bad_type:role"}))) == [
        letters[2],
        letters[3],
    ]
    assert chosen(list(letters), Choice(accounts=frozenset({"acme"}))) == [
        letters[0],
        letters[2],
        letters[3],
    ]
    since = Choice(frozenset({"bad_value:"}), since=AT + timedelta(minutes=10))
    assert chosen(list(letters), since) == [letters[1], letters[4]]


def test_records_that_are_not_dead_letters_are_counted_and_never_chosen() -> None:
    records: list[DeadLetter | bytes | None] = [b"not json", None, b'{"schema": 1}', letter("late")]
    summary = summary_of(records, Choice())
    assert (summary.total, summary.unreadable, summary.chosen) == (4, 3, 1)
    assert [item.reason for item in chosen(records, Choice())] == ["late"]


def test_the_report_names_counts_reasons_time_span_and_busiest_keys() -> None:
    letters = [letter("state_too_large", b"bigco", minutes=m) for m in range(3)]
    letters += [letter("late", b"acme", minutes=90)]
    out = io.StringIO()
    summary = summary_of(list(letters), Choice(frozenset({"state_too_large"})), show=1)
    summary.report("ew.events.dlq", out)
    assert out.getvalue().splitlines() == [
        "4 dead letters on ew.events.dlq",
        "           3  state_too_large",
        "           1  late",
        "chosen: 3",
        "  rejected from 2026-11-23T05:00:00+00:00 to 2026-11-23T05:02:00+00:00",
        "  1 keys: bigco 3",
        "2026-11-23T05:00:00+00:00  state_too_large  bigco  ew.events/2@0  why state_too_large",
    ]


def test_the_command_line_takes_repeated_filters_and_refuses_a_time_without_offset(
    capsys: pytest.CaptureFixture[str],
) -> None:
    filters = ["--reason", "late", "--reason", "bad_value:", "--account", "acme"]
    args = _parser().parse_args(
        ["dead-letters", *filters, "--since", "2026-11-23T05:00:00Z", "--show", "5", "--republish"]
    )
    assert (args.reason, args.account, args.show, args.republish) == (
        ["late", "bad_value:"],
        ["acme"],
        5,
        True,
    )
    assert args.since == AT
    with pytest.raises(SystemExit):
        _parser().parse_args(["dead-letters", "--since", "2026-11-23T05:00:00"])
    assert "needs an offset" in capsys.readouterr().err
