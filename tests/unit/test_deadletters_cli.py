"""``engagewatch dead-letters``: choosing letters and summarising the topic, without Kafka.

The Kafka side (reading the topic to its end, republishing) runs against a real broker
in tests/integration/test_engagement_kafka.py.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from config.settings import Settings
from stream import codec
from stream.cli import _parser
from stream.deadletter import MAX_KEY_BYTES, MAX_ORIGINAL_BYTES, DeadLetter, SourcePosition
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


def test_a_letter_keeps_at_most_the_first_bytes_of_a_huge_original() -> None:
    """Whole, an 800 KB original made a letter over the 1 MB a topic takes by default;
    its send failed and the reader stopped on it at every start."""
    huge = b'{"padding": "' + b"x" * 800_000 + b'"}'
    source = SourcePosition("ew.events", 0, 7, b"acme", None)
    big = DeadLetter("too_large", "800 KB", huge, source, AT)
    encoded = big.to_json()
    assert len(encoded) < 1_000_000
    back = DeadLetter.from_json(encoded)
    assert back.original == huge[:MAX_ORIGINAL_BYTES]
    assert back.truncated_from == len(huge) and back.is_truncated
    assert codec.loads(encoded)["original_truncated"]["sha256"] == hashlib.sha256(huge).hexdigest()
    small = letter("late")
    assert DeadLetter.from_json(small.to_json()) == small and not small.is_truncated


def test_republishing_leaves_a_truncated_letter_alone(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Its original is only the first bytes: sending those would publish a broken event."""
    from stream import deadletters_cli, publish

    sent: list[bytes] = []

    class Publisher:
        def __init__(self, settings: Settings) -> None:
            self.report = publish.PublishReport()

        def send_event(self, value: bytes, key: bytes | None) -> None:
            sent.append(value)
            self.report.events += 1

        def flush(self) -> None:
            pass

        def close(self) -> None:
            pass

    huge = DeadLetter("too_large", "big", b"x" * (MAX_ORIGINAL_BYTES + 1), letter("x").source, AT)
    whole = letter("late")
    monkeypatch.setattr(publish, "Publisher", Publisher)
    monkeypatch.setattr(
        deadletters_cli, "_values", lambda settings, topic: iter([huge.to_json(), whole.to_json()])
    )
    settings = Settings(topic_prefix="ew", data_dir=str(tmp_path))
    args = _parser().parse_args(["dead-letters", "--republish"])
    out = io.StringIO()
    assert deadletters_cli.run(settings, args, out) == 0
    assert sent == [whole.original]
    assert "left alone: 1 letters that kept only the first" in out.getvalue()


def test_a_letter_keeps_at_most_the_first_bytes_of_a_huge_key() -> None:
    """Found by a review: a 600 KB key, written as the letter's key and again in base64,
    made a letter the topic refused, and the reader stopped on it at every start."""
    key = b"k" * 600_000
    source = SourcePosition("ew.events", 0, 7, key, None)
    big = DeadLetter("key_mismatch", "the key is not the account", b'{"x": 1}', source, AT)
    assert big.kafka_key == key[:MAX_KEY_BYTES] and big.is_truncated
    encoded = big.to_json()
    assert len(encoded) < 20_000
    back = DeadLetter.from_json(encoded)
    assert back.source.key == key[:MAX_KEY_BYTES] and back.key_truncated_from == len(key)
    assert back.is_truncated and back.original == b'{"x": 1}'


def test_a_key_mismatchs_detail_shows_only_the_start_of_a_huge_key() -> None:
    from stream.events import EventLimits, Rejection
    from stream.ingest import RawMessage, _decode

    value = codec.dumps(
        {
            "schema": 1,
            "event_id": "e-1",
            "type": "login",
            "account_id": "acme",
            "user_id": "u",
            "occurred_at": "2026-11-23T04:00:00Z",
        }
    )
    message = RawMessage(value, SourcePosition("ew.events", 0, 1, b"k" * 600_000))
    rejection = _decode(message, AT, EventLimits())
    assert isinstance(rejection, Rejection) and rejection.reason == "key_mismatch"
    assert len(rejection.detail) < 400 and "(600,000 bytes)" in rejection.detail
