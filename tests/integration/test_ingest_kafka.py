"""The ingest path on a real broker: exact counts, exact dead letters, clean restarts."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from kafka.consumer import KafkaConsumer
from kafka.producer import KafkaProducer
from kafka.structs import TopicPartition

from config.settings import Settings
from stream.app import events_group
from stream.deadletter import MAX_ORIGINAL_BYTES, DeadLetter
from stream.topics import TopicNames, ensure_topics
from tests.integration.harness import (
    counts_by_type,
    engagement_states,
    read_topic,
    running_worker,
    set_topic_limit,
    wait_for,
)

pytestmark = pytest.mark.kafka

TYPES = [
    "login",
    "session_end",
    "feature_used",
    "nps_response",
    "value_milestone",
    "license_change",
]
ACCOUNTS = [f"acct-{n:02d}" for n in range(40)]
NOW = datetime.now(UTC).replace(microsecond=0)


def valid_event(i: int, prefix: str = "e") -> tuple[bytes, bytes, str]:
    """The i-th valid event: (key, value, type)."""
    kind = TYPES[i % len(TYPES)]
    account = ACCOUNTS[i % len(ACCOUNTS)]
    properties_by_type: dict[str, dict[str, object]] = {
        "login": {},
        "session_end": {"duration_s": 30 + i % 600},
        "feature_used": {"feature": f"f{i % 7}"},
        "nps_response": {"score": i % 11},
        "value_milestone": {"milestone": "first_report"},
        "license_change": {"licenses": 10 + i % 90},
    }
    properties = properties_by_type[kind]
    event: dict[str, object] = {
        "schema": 1,
        "event_id": f"{prefix}-{i}",
        "type": kind,
        "account_id": account,
        "occurred_at": _rfc3339(NOW - timedelta(seconds=i)),
        "properties": properties,
    }
    if kind != "license_change":
        event["user_id"] = f"u-{i % 97}"
        event["role"] = "champion" if i % 5 == 0 else "user"
    return account.encode(), json.dumps(event).encode(), kind


def _rfc3339(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def _mutated(i: int, change: Callable[[dict[str, object]], None]) -> bytes:
    _, value, _ = valid_event(i, prefix="bad")
    event = json.loads(value)
    change(event)
    return json.dumps(event).encode()


def _login_without_user(event: dict[str, object]) -> None:
    event.pop("user_id", None)
    event.update(type="login", properties={})


# Ten ways to be wrong, each with the reason the dead-letter record must carry.
MALFORMED: list[tuple[str, Callable[[int], tuple[bytes | None, bytes]]]] = [
    ("invalid_json", lambda i: (b"acct-01", b'{"schema": 1, "event_id": ')),
    ("not_an_object", lambda i: (b"acct-01", b"[1, 2, 3]")),
    ("too_large", lambda i: (b"acct-01", b'{"pad": "' + b"x" * 70_000 + b'"}')),
    ("missing_field:user_id", lambda i: (b"acct-02", _mutated(i, _login_without_user))),
    ("bad_type:event_id", lambda i: (b"acct-03", _mutated(i, lambda e: e.update(event_id=i)))),
    (
        "bad_value:properties.score",
        lambda i: (
            b"acct-04",
            _mutated(
                i, lambda e: e.update(type="nps_response", user_id="u", properties={"score": 11})
            ),
        ),
    ),
    ("unknown_type", lambda i: (b"acct-05", _mutated(i, lambda e: e.update(type="logout")))),
    (
        "future_timestamp",
        lambda i: (
            b"acct-06",
            _mutated(i, lambda e: e.update(occurred_at=_rfc3339(NOW + timedelta(days=1)))),
        ),
    ),
    (
        "bad_value:occurred_at",
        lambda i: (b"acct-07", _mutated(i, lambda e: e.update(occurred_at="yesterday"))),
    ),
    (
        "key_mismatch",
        lambda i: (b"somebody-else", _mutated(i, lambda e: e.update(account_id="acct-08"))),
    ),
]


def _fix_account_keys(key: bytes | None, value: bytes) -> tuple[bytes | None, bytes]:
    """Malformed-but-parseable events keep their account's key, like a real producer."""
    try:
        account = json.loads(value).get("account_id")
    except (ValueError, AttributeError):
        return key, value
    if isinstance(account, str) and key != b"somebody-else":
        return account.encode(), value
    return key, value


def build_mixed_stream(
    valid: int, bad_per_kind: int
) -> tuple[list[tuple[bytes | None, bytes]], Counter[str], Counter[str]]:
    """Valid events with malformed ones spread evenly through them."""
    messages: list[tuple[bytes | None, bytes]] = []
    expected_types: Counter[str] = Counter()
    expected_reasons: Counter[str] = Counter()
    bad = [(reason, make(n)) for n in range(bad_per_kind) for reason, make in MALFORMED]
    every = max(1, valid // max(1, len(bad)))
    for i in range(valid):
        key, value, kind = valid_event(i)
        messages.append((key, value))
        expected_types[kind] += 1
        if i % every == 0 and bad:
            reason, (bad_key, bad_value) = bad.pop()
            messages.append(_fix_account_keys(bad_key, bad_value))
            expected_reasons[reason] += 1
    for reason, (bad_key, bad_value) in bad:
        messages.append(_fix_account_keys(bad_key, bad_value))
        expected_reasons[reason] += 1
    return messages, expected_types, expected_reasons


def produce(
    settings: Settings, messages: list[tuple[bytes | None, bytes]], rate_per_s: float | None = None
) -> None:
    producer = KafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap,
        acks="all",
        linger_ms=10,
        max_request_size=2_000_000,
    )
    topic = TopicNames.from_settings(settings).events
    started = time.monotonic()
    for n, (key, value) in enumerate(messages):
        producer.send(topic, key=key, value=value)
        if rate_per_s is not None and n % 200 == 0:
            ahead = n / rate_per_s - (time.monotonic() - started)
            if ahead > 0:
                producer.flush()
                time.sleep(ahead)
    producer.flush()
    producer.close()


def dead_letters(settings: Settings) -> list[DeadLetter]:
    topic = TopicNames.from_settings(settings).dead_letters
    return [
        DeadLetter.from_json(v)
        for _, v, _, _ in read_topic(settings.kafka_bootstrap, topic)
        if v is not None
    ]


def wait_until_read(settings: Settings, valid: int, letters: int, what: str) -> None:
    """Until ``valid`` events are counted and ``letters`` dead letters written, then a
    little longer: anything counted or dead-lettered twice would show up by then."""

    def read() -> bool:
        totals = counts_by_type(engagement_states(settings.kafka_bootstrap, changelog(settings)))
        return sum(totals.values()) >= valid and len(dead_letters(settings)) >= letters

    wait_for(read, 120, what, every_s=2)
    time.sleep(3)


def changelog(settings: Settings) -> str:
    return f"{settings.app_id}-engagement-changelog"


def test_ten_thousand_events_counted_exactly_and_bad_ones_dead_lettered(
    engine_settings: Settings, tmp_path: Path
) -> None:
    settings = engine_settings
    ensure_topics(settings)
    messages, expected_types, expected_reasons = build_mixed_stream(valid=9_500, bad_per_kind=50)
    assert len(messages) == 10_000 and sum(expected_reasons.values()) == 500
    produce(settings, messages)

    with running_worker(settings, tmp_path / "worker.log") as worker:
        wait_until_read(settings, 9_500, 500, "all 10,000 events to be counted or dead-lettered")
        assert worker.stop() == 0

    totals = counts_by_type(engagement_states(settings.kafka_bootstrap, changelog(settings)))
    assert totals == dict(expected_types)
    letters = dead_letters(settings)
    assert Counter(letter.reason for letter in letters) == expected_reasons
    # Every dead letter carries the exact bytes found at its source position.
    events_topic = TopicNames.from_settings(settings).events
    records = read_topic(settings.kafka_bootstrap, events_topic)
    sent = {(p, o): v for _, v, p, o in records}
    for letter in letters:
        assert letter.source.topic == events_topic
        assert sent[(letter.source.partition, letter.source.offset)] == letter.original
        assert letter.detail
    # Co-partitioning: each account's state sits on the partition of its events.
    event_partition = {key: p for key, _, p, _ in records if key is not None}
    state_records = read_topic(settings.kafka_bootstrap, changelog(settings))
    assert {key for key, _, _, _ in state_records} == {a.encode() for a in ACCOUNTS}
    for key, _, partition, _ in state_records:
        assert key is not None and partition == event_partition[key], key


def test_worker_stopped_mid_stream_resumes_from_committed_offsets(
    engine_settings: Settings, tmp_path: Path
) -> None:
    settings = engine_settings
    ensure_topics(settings)
    messages, expected_types, expected_reasons = build_mixed_stream(valid=12_000, bad_per_kind=30)
    log = tmp_path / "worker.log"
    # The producer keeps writing while the worker is stopped and started again. It holds
    # back the last two thirds until the first worker has read some of the stream, so
    # the stop lands mid-stream, with records in flight, however slowly a loaded
    # machine starts the worker.
    first_part = len(messages) // 3
    release = threading.Event()
    failures: list[Exception] = []

    def produce_in_two_parts() -> None:
        try:
            produce(settings, messages[:first_part], 1_500.0)
            release.wait()
            produce(settings, messages[first_part:], 1_500.0)
        except Exception as error:  # reported by the test, in its own thread
            failures.append(error)

    producer = threading.Thread(target=produce_in_two_parts, daemon=True)
    producer.start()
    try:
        _stop_mid_stream_then_resume(settings, log, release, producer, failures)
    finally:
        release.set()
        producer.join(timeout=90)
    # Dead letters are not deduplicated, so re-read input would show up here twice.
    totals = counts_by_type(engagement_states(settings.kafka_bootstrap, changelog(settings)))
    assert totals == dict(expected_types)
    assert Counter(letter.reason for letter in dead_letters(settings)) == expected_reasons


def _stop_mid_stream_then_resume(
    settings: Settings,
    log: Path,
    release: threading.Event,
    producer: threading.Thread,
    failures: list[Exception],
) -> None:
    with running_worker(settings, log) as first:
        wait_for(lambda: len(dead_letters(settings)) >= 40, 60, "the first dead letters")
        release.set()  # the rest flows while this worker stops, and while none runs
        assert first.stop() == 0
    counted_at_stop = sum(
        counts_by_type(engagement_states(settings.kafka_bootstrap, changelog(settings))).values()
    )
    committed = _committed_offsets(settings)
    assert 0 < counted_at_stop < 12_000, "the stop must land mid-stream"
    assert committed > 0

    with running_worker(settings, log) as second:
        producer.join(timeout=90)
        assert not producer.is_alive()
        assert not failures, failures

        wait_until_read(settings, 12_000, 300, "the rest of the stream")
        assert second.stop() == 0


def _committed_offsets(settings: Settings) -> int:
    """Sum of the worker group's committed offsets on the events topic."""
    events = TopicNames.from_settings(settings).events
    consumer = KafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=events_group(settings),
        enable_auto_commit=False,
    )
    try:
        partitions = consumer.partitions_for_topic(events) or set()
        return sum(consumer.committed(TopicPartition(events, p)) or 0 for p in partitions)
    finally:
        consumer.close()


def test_dead_letters_kafka_refused_are_sent_again_by_the_next_worker(
    engine_settings: Settings, tmp_path: Path
) -> None:
    """The dead-letter topic refuses every letter (``max.message.bytes`` below any
    letter's size). Committing past a refused letter would lose its event, so the
    worker commits nothing and stops; once the topic takes letters again, the next
    worker reads those events again: every malformed event has its one dead letter,
    every valid one is counted once."""
    settings = engine_settings
    ensure_topics(settings)
    letters_topic = TopicNames.from_settings(settings).dead_letters
    set_topic_limit(settings, letters_topic, 64)
    messages, expected_types, expected_reasons = build_mixed_stream(valid=2_000, bad_per_kind=5)
    produce(settings, messages)
    log = tmp_path / "worker.log"
    with running_worker(settings, log) as first:
        code = first.exited(120)
        assert code is not None and code != 0, "the worker must stop, not go on committing"
    assert dead_letters(settings) == [] and _committed_offsets(settings) == 0

    set_topic_limit(settings, letters_topic, None)
    with running_worker(settings, log) as second:
        wait_until_read(settings, 2_000, 50, "every event counted or dead-lettered")
        assert second.stop() == 0
    totals = counts_by_type(engagement_states(settings.kafka_bootstrap, changelog(settings)))
    assert totals == dict(expected_types)
    assert Counter(letter.reason for letter in dead_letters(settings)) == expected_reasons


def test_an_event_too_big_for_its_dead_letter_whole_does_not_stop_the_reader(
    engine_settings: Settings, tmp_path: Path
) -> None:
    """Found by a review: an 800 KB event (under the events topic's 1 MB, over
    max_event_bytes) made a dead letter of ~1.07 MB in base64, which the dead-letter
    topic refused; the reader commits nothing past a lost letter, so the worker stopped
    on it at every start and its partition was wedged. The letter now keeps the first
    MAX_ORIGINAL_BYTES with the whole's size and SHA-256; the events around it count."""
    settings = engine_settings
    ensure_topics(settings)
    key, big, _ = valid_event(0, prefix="big")
    padded = json.loads(big)
    padded["properties"] = {"padding": "x" * 800_000}
    huge = json.dumps(padded).encode()
    before = [valid_event(i, prefix="before") for i in range(1, 41)]
    after = [valid_event(i, prefix="after") for i in range(1, 41)]
    # And a valid event under a 600 KB key, which the letter wrote twice (found by a
    # second review): its key and its key_b64.
    _, small, _ = valid_event(0, prefix="keyed")
    big_key = b"k" * 600_000
    messages: list[tuple[bytes | None, bytes]] = [(k, v) for k, v, _ in before]
    messages += [(key, huge), (big_key, small), *((k, v) for k, v, _ in after)]
    produce(settings, messages)

    with running_worker(settings, tmp_path / "worker.log") as worker:
        wait_until_read(settings, 80, 2, "the events around the big ones, and their letters")
        assert worker.stop() == 0

    too_large, mismatch = sorted(
        dead_letters(settings), key=lambda letter: letter.reason, reverse=True
    )
    assert too_large.reason == "too_large"
    assert too_large.is_truncated and too_large.truncated_from == len(huge)
    assert too_large.original == huge[:MAX_ORIGINAL_BYTES]
    assert mismatch.reason == "key_mismatch" and mismatch.original == small
    assert mismatch.key_truncated_from == len(big_key) and mismatch.is_truncated
    totals = counts_by_type(engagement_states(settings.kafka_bootstrap, changelog(settings)))
    assert sum(totals.values()) == 80
