"""Ingest: triage a batch, keep every reject intact, fold once per account per batch."""

from __future__ import annotations

import base64
import json
from collections import Counter, deque
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stream import codec
from stream.clock import ManualClock
from stream.deadletter import DEAD_LETTER_SCHEMA, DeadLetter, SourcePosition
from stream.engagement import EngagementState, fold_events
from stream.events import EventLimits, EventType, UsageEvent
from stream.ingest import RawMessage, triage_batch
from stream.pipeline import IngestPipeline, raw_message

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
TOPIC = "engagewatch.events"
PROPERTIES: dict[str, dict[str, Any]] = {
    "login": {},
    "session_end": {"duration_s": 310},
    "feature_used": {"feature": "export_csv"},
    "nps_response": {"score": 9},
    "value_milestone": {"milestone": "first_dashboard"},
    "license_change": {"licenses": 100},
}


def event_json(
    event_id: str,
    account_id: str = "acme",
    event_type: str = "login",
    occurred_at: datetime = NOW - timedelta(hours=1),
) -> bytes:
    obj: dict[str, Any] = {
        "schema": 1,
        "event_id": event_id,
        "type": event_type,
        "account_id": account_id,
        "user_id": "u-1",
        "occurred_at": occurred_at.isoformat().replace("+00:00", "Z"),
        "properties": PROPERTIES[event_type],
    }
    return json.dumps(obj).encode()


def message(
    value: bytes | None,
    key: bytes | None = b"acme",
    offset: int = 0,
    partition: int = 3,
) -> RawMessage:
    return RawMessage(value, SourcePosition(TOPIC, partition, offset, key, 1_795_000_000_000))


def keyed(value: bytes, account_id: str, offset: int) -> RawMessage:
    return message(value, account_id.encode(), offset)


def usage_event(event_id: str, event_type: EventType = EventType.LOGIN) -> UsageEvent:
    return UsageEvent(event_id, event_type, "acme", "u-1", "user", NOW, {})


# --- triage_batch -----------------------------------------------------------------------


def test_accepted_events_are_grouped_by_account_in_arrival_order() -> None:
    batch = [
        keyed(event_json("a1", "acme"), "acme", 0),
        keyed(event_json("g1", "globex"), "globex", 1),
        keyed(event_json("a2", "acme", "session_end"), "acme", 2),
        keyed(event_json("i1", "initech"), "initech", 3),
        keyed(event_json("g2", "globex", "nps_response"), "globex", 4),
        keyed(event_json("a3", "acme"), "acme", 5),
    ]
    outcome = triage_batch(batch, NOW)

    assert outcome.dead == []
    assert list(outcome.accepted) == ["acme", "globex", "initech"]
    ids = {account: [e.event_id for e in events] for account, events in outcome.accepted.items()}
    assert ids == {"acme": ["a1", "a2", "a3"], "globex": ["g1", "g2"], "initech": ["i1"]}
    assert outcome.counts_by_type() == Counter({"login": 4, "session_end": 1, "nps_response": 1})


def test_duplicates_are_kept_by_triage_for_the_fold_to_skip() -> None:
    batch = [keyed(event_json("a1"), "acme", 0), keyed(event_json("a1"), "acme", 1)]
    assert [e.event_id for e in triage_batch(batch, NOW).accepted["acme"]] == ["a1", "a1"]


@pytest.mark.parametrize(
    "key",
    [
        pytest.param(None, id="no-key"),
        pytest.param(b"globex", id="other-account"),
        pytest.param(b"", id="empty-key"),
        pytest.param(b"ACME", id="different-case"),
        pytest.param(b"acme ", id="trailing-space"),
        pytest.param(b"\xff\xfe", id="non-utf8-key"),
    ],
)
def test_key_mismatch(key: bytes | None) -> None:
    raw = event_json("a1", "acme")
    outcome = triage_batch([message(raw, key, offset=41)], NOW)

    assert outcome.accepted == {}
    [letter] = outcome.dead
    assert letter.reason == "key_mismatch"
    assert "acme" in letter.detail
    assert letter.original == raw
    assert letter.source == SourcePosition(TOPIC, 3, 41, key, 1_795_000_000_000)
    assert letter.rejected_at == NOW


def test_non_ascii_account_matches_its_utf8_key() -> None:
    outcome = triage_batch([message(event_json("c1", "café"), "café".encode())], NOW)
    assert [e.account_id for e in outcome.accepted["café"]] == ["café"]


def test_an_invalid_event_keeps_its_own_reason_whatever_the_key() -> None:
    outcome = triage_batch([message(b"{not json", key=b"globex")], NOW)
    assert [letter.reason for letter in outcome.dead] == ["invalid_json"]


def test_tombstone_is_rejected_not_raised() -> None:
    outcome = triage_batch([message(None, offset=7)], NOW)

    assert outcome.accepted == {}
    [letter] = outcome.dead
    assert letter.reason == "invalid_json"
    assert "tombstone" in letter.detail
    assert letter.original == b""
    assert letter.source.offset == 7


def test_mixed_batch_splits_into_accepted_and_dead() -> None:
    batch = [
        message(event_json("a1"), offset=0),
        message(b"\xff\xfe", offset=1),
        message(b"[1, 2]", offset=2),
        message(event_json("a2"), key=b"globex", offset=3),
        message(event_json("a3", occurred_at=NOW + timedelta(hours=1)), offset=4),
        message(None, offset=5),
        message(event_json("a4", event_type="session_end"), offset=6),
    ]
    outcome = triage_batch(batch, NOW)

    assert [e.event_id for e in outcome.accepted["acme"]] == ["a1", "a4"]
    assert [(d.source.offset, d.reason) for d in outcome.dead] == [
        (1, "invalid_json"),
        (2, "not_an_object"),
        (3, "key_mismatch"),
        (4, "future_timestamp"),
        (5, "invalid_json"),
    ]
    assert outcome.dead_by_reason() == Counter(
        {"invalid_json": 2, "not_an_object": 1, "key_mismatch": 1, "future_timestamp": 1}
    )
    assert [d.original for d in outcome.dead] == [batch[i].value or b"" for i in range(1, 6)]


def test_limits_are_applied() -> None:
    raw = event_json("a1")
    outcome = triage_batch([message(raw)], NOW, EventLimits(max_bytes=len(raw) - 1))
    assert [letter.reason for letter in outcome.dead] == ["too_large"]


def test_empty_batch() -> None:
    outcome = triage_batch([], NOW)
    assert outcome.accepted == {}
    assert outcome.dead == []


# --- DeadLetter -------------------------------------------------------------------------

ALL_BYTES = bytes(range(256))


@pytest.mark.parametrize(
    "original",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b'{"schema": 1}', id="json"),
        pytest.param(b"\xff\xfe\x00{\x80", id="non-utf8"),
        pytest.param(ALL_BYTES, id="every-byte"),
        pytest.param("accènt ✓".encode(), id="utf8"),
    ],
)
def test_dead_letter_round_trip_keeps_original_bytes(original: bytes) -> None:
    letter = DeadLetter(
        "invalid_json",
        "unexpected character",
        original,
        SourcePosition(TOPIC, 5, 123_456_789_012, b"acme", 1_795_000_000_123),
        datetime(2026, 11, 23, 12, 0, 1, 250_000, tzinfo=UTC),
    )
    back = DeadLetter.from_json(letter.to_json())
    assert back.original == original
    assert back == letter


def test_dead_letter_round_trip_without_key_or_timestamp() -> None:
    letter = DeadLetter("not_an_object", "got array", b"[]", SourcePosition(TOPIC, 0, 0), NOW)
    assert DeadLetter.from_json(letter.to_json()) == letter


def test_dead_letter_json_layout() -> None:
    letter = DeadLetter(
        "key_mismatch",
        "the key must be the account_id",
        b"\x00\xff",
        SourcePosition(TOPIC, 2, 99, b"globex", 1_795_000_000_000),
        NOW,
    )
    record = codec.loads(letter.to_json())
    assert record == {
        "schema": DEAD_LETTER_SCHEMA,
        "reason": "key_mismatch",
        "detail": "the key must be the account_id",
        "source": {
            "topic": TOPIC,
            "partition": 2,
            "offset": 99,
            "key": "globex",
            "key_b64": base64.b64encode(b"globex").decode("ascii"),
            "timestamp_ms": 1_795_000_000_000,
        },
        "original_b64": base64.b64encode(b"\x00\xff").decode("ascii"),
        "rejected_at": "2026-11-23T12:00:00Z",
    }


@given(st.binary(max_size=4_096))
def test_dead_letter_round_trip_any_bytes(original: bytes) -> None:
    letter = DeadLetter("invalid_json", "x", original, SourcePosition(TOPIC, 1, 2, b"k"), NOW)
    assert DeadLetter.from_json(letter.to_json()).original == original


# --- fold_events / EngagementState ------------------------------------------------------


def test_fold_counts_per_type() -> None:
    state = EngagementState("acme")
    events = [
        usage_event("e1"),
        usage_event("e2", EventType.SESSION_END),
        usage_event("e3"),
        usage_event("e4", EventType.NPS_RESPONSE),
    ]
    assert fold_events(state, events) == 4
    assert state.event_counts == {"login": 2, "session_end": 1, "nps_response": 1}
    assert state.total_events == 4
    assert list(state.recent_event_ids) == ["e1", "e2", "e3", "e4"]


def test_duplicate_in_the_same_batch_counts_once() -> None:
    state = EngagementState("acme")
    assert fold_events(state, [usage_event("e1"), usage_event("e1"), usage_event("e2")]) == 2
    assert state.event_counts == {"login": 2}
    assert list(state.recent_event_ids) == ["e1", "e2"]


def test_duplicate_across_batches_counts_once() -> None:
    state = EngagementState("acme")
    assert fold_events(state, [usage_event("e1")]) == 1
    assert fold_events(state, [usage_event("e1"), usage_event("e2")]) == 1
    assert fold_events(state, [usage_event("e2")]) == 0
    assert state.event_counts == {"login": 2}


def test_dedup_memory_is_bounded_by_capacity() -> None:
    state = EngagementState("acme")
    for event_id in ["e1", "e2", "e3", "e4"]:
        fold_events(state, [usage_event(event_id)], dedup_capacity=3)
    assert state.recent_event_ids == deque(["e2", "e3", "e4"])

    # e1 fell out of the window, so a late redelivery counts again; e4 does not.
    assert fold_events(state, [usage_event("e4")], dedup_capacity=3) == 0
    assert fold_events(state, [usage_event("e1")], dedup_capacity=3) == 1
    assert state.event_counts == {"login": 5}
    assert state.recent_event_ids == deque(["e3", "e4", "e1"])


def test_one_large_batch_leaves_only_the_newest_ids() -> None:
    state = EngagementState("acme")
    ids = [f"e{i}" for i in range(10)]
    assert fold_events(state, [usage_event(i) for i in ids], dedup_capacity=4) == 10
    assert list(state.recent_event_ids) == ids[-4:]
    assert fold_events(state, [usage_event("e0")], dedup_capacity=4) == 1
    assert fold_events(state, [usage_event("e9")], dedup_capacity=4) == 0


def test_state_json_round_trip() -> None:
    state = EngagementState("acme")
    fold_events(state, [usage_event("e1"), usage_event("e2", EventType.FEATURE_USED)])
    back = EngagementState.from_json(state.to_json())
    assert back == state
    assert back.to_dict() == {
        "account_id": "acme",
        "event_counts": {"login": 1, "feature_used": 1},
        "recent_event_ids": ["e1", "e2"],
    }
    # The dedup memory survives the round trip.
    assert fold_events(back, [usage_event("e2"), usage_event("e3")]) == 1


def test_empty_state_round_trip() -> None:
    state = EngagementState("globex")
    assert EngagementState.from_json(state.to_json()) == state
    assert state.total_events == 0


# --- IngestPipeline ---------------------------------------------------------------------


class CountingTable(dict[str, bytes]):
    """A plain-dict table that counts writes per key (each is a changelog record)."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: Counter[str] = Counter()

    def __setitem__(self, key: str, value: bytes) -> None:
        self.writes[key] += 1
        super().__setitem__(key, value)


class DeadLetterSink:
    def __init__(self) -> None:
        self.sent: list[DeadLetter] = []

    async def __call__(self, letter: DeadLetter) -> None:
        self.sent.append(letter)


@pytest.fixture
def table() -> CountingTable:
    return CountingTable()


@pytest.fixture
def sink() -> DeadLetterSink:
    return DeadLetterSink()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(NOW)


@pytest.fixture
def pipeline(table: CountingTable, sink: DeadLetterSink, clock: ManualClock) -> IngestPipeline:
    return IngestPipeline(table, sink, clock)


def stored(table: CountingTable, account_id: str) -> EngagementState:
    return EngagementState.from_json(table[account_id])


async def test_pipeline_folds_and_writes_each_account_once(
    pipeline: IngestPipeline, table: CountingTable
) -> None:
    await pipeline.process(
        [
            keyed(event_json("a1", "acme"), "acme", 0),
            keyed(event_json("g1", "globex"), "globex", 1),
            keyed(event_json("a2", "acme", "session_end"), "acme", 2),
            keyed(event_json("a3", "acme", "feature_used"), "acme", 3),
            keyed(event_json("g2", "globex"), "globex", 4),
        ]
    )
    assert table.writes == Counter({"acme": 1, "globex": 1})
    assert stored(table, "acme").event_counts == {"login": 1, "session_end": 1, "feature_used": 1}
    assert stored(table, "globex").event_counts == {"login": 2}


async def test_pipeline_dead_letters_carry_source_and_exact_bytes(
    pipeline: IngestPipeline, sink: DeadLetterSink, table: CountingTable
) -> None:
    garbage = b"\x00\xff not json \xfe"
    wrong_key = event_json("a9", "acme")
    await pipeline.process(
        [
            RawMessage(garbage, SourcePosition(TOPIC, 6, 1001, b"acme", 1)),
            RawMessage(wrong_key, SourcePosition(TOPIC, 7, 2002, b"globex", 2)),
            RawMessage(None, SourcePosition(TOPIC, 0, 3003, b"acme")),
        ]
    )
    assert [
        (d.reason, d.source.topic, d.source.partition, d.source.offset, d.original)
        for d in sink.sent
    ] == [
        ("invalid_json", TOPIC, 6, 1001, garbage),
        ("key_mismatch", TOPIC, 7, 2002, wrong_key),
        ("invalid_json", TOPIC, 0, 3003, b""),
    ]
    assert all(d.rejected_at == NOW for d in sink.sent)
    assert dict(table) == {}
    assert table.writes == Counter()


async def test_pipeline_totals(pipeline: IngestPipeline) -> None:
    await pipeline.process(
        [
            message(event_json("a1"), offset=0),
            message(event_json("a1"), offset=1),
            message(event_json("a2", event_type="nps_response"), offset=2),
            message(b"nope", offset=3),
        ]
    )
    await pipeline.process(
        [
            message(event_json("a2", event_type="nps_response"), offset=4),
            message(b"[]", offset=5),
            message(event_json("a3", "acme"), key=None, offset=6),
        ]
    )
    totals = pipeline.totals
    assert totals.batches == 2
    assert totals.valid_by_type == Counter({"login": 2, "nps_response": 2})
    assert totals.duplicates == 2
    assert totals.dead_by_reason == Counter(
        {"invalid_json": 1, "not_an_object": 1, "key_mismatch": 1}
    )


async def test_pipeline_state_persists_across_batches(
    pipeline: IngestPipeline, table: CountingTable
) -> None:
    await pipeline.process([message(event_json("a1"), offset=0)])
    # Redelivery after a crash plus one new event: only the new one counts.
    await pipeline.process(
        [message(event_json("a1"), offset=0), message(event_json("a2"), offset=1)]
    )
    assert table.writes == Counter({"acme": 2})
    state = stored(table, "acme")
    assert state.event_counts == {"login": 2}
    assert list(state.recent_event_ids) == ["a1", "a2"]
    assert pipeline.totals.duplicates == 1


async def test_pipeline_reads_state_already_in_the_table(table: CountingTable) -> None:
    previous = EngagementState("acme", {"login": 7}, deque(["old"]))
    table["acme"] = previous.to_json()
    table.writes.clear()
    pipeline = IngestPipeline(table, DeadLetterSink(), ManualClock(NOW))

    await pipeline.process([message(event_json("old"), offset=0), message(event_json("new"))])

    assert table.writes == Counter({"acme": 1})
    assert stored(table, "acme").event_counts == {"login": 8}


async def test_pipeline_uses_its_clock_for_now(
    pipeline: IngestPipeline, sink: DeadLetterSink, table: CountingTable, clock: ManualClock
) -> None:
    early = event_json("f1", occurred_at=NOW + timedelta(minutes=30))
    await pipeline.process([message(early)])
    assert [d.reason for d in sink.sent] == ["future_timestamp"]
    assert sink.sent[0].rejected_at == NOW

    clock.advance(timedelta(minutes=30))
    await pipeline.process([message(early)])
    assert len(sink.sent) == 1
    assert stored(table, "acme").event_counts == {"login": 1}


async def test_pipeline_passes_limits_and_dedup_capacity(
    table: CountingTable, sink: DeadLetterSink
) -> None:
    pipeline = IngestPipeline(
        table,
        sink,
        ManualClock(NOW),
        limits=EventLimits(max_bytes=4096, future_skew=timedelta(hours=2)),
        dedup_capacity=1,
    )
    await pipeline.process(
        [
            message(event_json("e1", occurred_at=NOW + timedelta(hours=1))),
            message(b" " * 4097),
        ]
    )
    await pipeline.process([message(event_json("e2"))])
    await pipeline.process([message(event_json("e1"))])

    assert [d.reason for d in sink.sent] == ["too_large"]
    state = stored(table, "acme")
    assert state.event_counts == {"login": 3}
    assert list(state.recent_event_ids) == ["e1"]


@dataclass
class FakeKafkaMessage:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: float


def test_raw_message_from_a_kafka_message() -> None:
    raw = raw_message(FakeKafkaMessage(TOPIC, 2, 17, b"acme", b"{}", 1_795_000_000.5))
    assert raw == RawMessage(b"{}", SourcePosition(TOPIC, 2, 17, b"acme", 1_795_000_000_500))


def test_raw_message_without_timestamp() -> None:
    raw = raw_message(FakeKafkaMessage(TOPIC, 0, 0, None, None, 0.0))
    assert raw == RawMessage(None, SourcePosition(TOPIC, 0, 0, None, None))
