"""Ingest: triage a batch, keep every reject intact, fold once per account per batch."""

from __future__ import annotations

import base64
import itertools
import json
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream import codec
from stream.accounts import Account
from stream.clock import ManualClock
from stream.deadletter import DEAD_LETTER_SCHEMA, DeadLetter, SourcePosition
from stream.engagement import EngagementState, FoldOutcome, StatePolicy, fold_events
from stream.events import EventLimits, EventType, UsageEvent
from stream.ingest import RawMessage, triage_batch
from stream.pipeline import (
    RECORD_FRAMING,
    STATE_TOO_LARGE,
    AccountsPipeline,
    IngestPipeline,
    raw_message,
)

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


_OFFSETS = itertools.count(1)


def message(
    value: bytes | None,
    key: bytes | None = b"acme",
    offset: int | None = None,
    partition: int = 3,
) -> RawMessage:
    """A message as Kafka hands it over: each new one at a later offset (unless given)."""
    at = next(_OFFSETS) if offset is None else offset
    return RawMessage(value, SourcePosition(TOPIC, partition, at, key, 1_795_000_000_000))


def keyed(value: bytes, account_id: str, offset: int) -> RawMessage:
    return message(value, account_id.encode(), offset)


def usage_event(
    event_id: str, event_type: EventType = EventType.LOGIN, occurred_at: datetime = NOW
) -> UsageEvent:
    props = PROPERTIES[event_type.value]
    return UsageEvent(event_id, event_type, "acme", "u-1", "user", occurred_at, props)


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

NOW_S = NOW.timestamp()


def minutes_before_now(minutes: float) -> datetime:
    return NOW - timedelta(minutes=minutes)


def test_fold_counts_per_type() -> None:
    state = EngagementState("acme")
    events = [
        usage_event("e1"),
        usage_event("e2", EventType.SESSION_END),
        usage_event("e3"),
        usage_event("e4", EventType.NPS_RESPONSE),
    ]
    assert fold_events(state, events) == FoldOutcome(counted=4, duplicates=0, late=[])
    assert state.event_counts == {"login": 2, "session_end": 1, "nps_response": 1}
    assert state.total_events == 4
    assert state.recent_ids == {"e1": NOW_S, "e2": NOW_S, "e3": NOW_S, "e4": NOW_S}


def test_duplicate_in_the_same_batch_counts_once() -> None:
    state = EngagementState("acme")
    outcome = fold_events(state, [usage_event("e1"), usage_event("e1"), usage_event("e2")])
    assert outcome == FoldOutcome(counted=2, duplicates=1)
    assert state.event_counts == {"login": 2}
    assert set(state.recent_ids) == {"e1", "e2"}
    bucket = state.days["2026-11-23"]
    assert (bucket.events, bucket.logins) == (2, 2)


def test_duplicate_across_batches_counts_once() -> None:
    state = EngagementState("acme")
    assert fold_events(state, [usage_event("e1")]) == FoldOutcome(counted=1)
    assert fold_events(state, [usage_event("e1"), usage_event("e2")]) == FoldOutcome(1, 1)
    assert fold_events(state, [usage_event("e2")]) == FoldOutcome(counted=0, duplicates=1)
    assert state.event_counts == {"login": 2}


def test_dedup_memory_is_bounded_by_capacity() -> None:
    policy = StatePolicy(dedup_capacity=3)
    state = EngagementState("acme")
    # e1 happened first (10 minutes ago), e4 last (7 minutes ago).
    at = {"e1": minutes_before_now(10), "e2": minutes_before_now(9)}
    at |= {"e3": minutes_before_now(8), "e4": minutes_before_now(7)}
    for event_id, occurred_at in at.items():
        fold_events(state, [usage_event(event_id, occurred_at=occurred_at)], policy)
    assert state.recent_ids == {i: at[i].timestamp() for i in ("e2", "e3", "e4")}

    # e1 fell out of the memory, so a redelivery (still in lateness) counts again; e4 not.
    redelivered_e4 = fold_events(state, [usage_event("e4", occurred_at=at["e4"])], policy)
    assert redelivered_e4 == FoldOutcome(counted=0, duplicates=1)
    redelivered_e1 = fold_events(state, [usage_event("e1", occurred_at=at["e1"])], policy)
    assert redelivered_e1 == FoldOutcome(counted=1, duplicates=0)
    assert state.event_counts == {"login": 5}
    # e1 is still the oldest by event time, so the newest three stay remembered.
    assert set(state.recent_ids) == {"e2", "e3", "e4"}


def test_dedup_keeps_the_newest_ids_by_event_time_not_by_arrival() -> None:
    policy = StatePolicy(dedup_capacity=4)
    state = EngagementState("acme")
    events = [usage_event(f"e{n}", occurred_at=minutes_before_now(10 - n)) for n in range(10)]
    # The newest event arrives first.
    assert fold_events(state, events[::-1], policy) == FoldOutcome(counted=10)
    assert state.recent_ids == {
        f"e{n}": minutes_before_now(10 - n).timestamp() for n in range(6, 10)
    }
    assert fold_events(state, [events[0]], policy) == FoldOutcome(counted=1)
    assert fold_events(state, [events[9]], policy) == FoldOutcome(duplicates=1)
    assert state.event_counts == {"login": 11}


def test_dedup_capacity_cuts_ties_by_id_whatever_the_arrival_order() -> None:
    """Ids of one instant are remembered by id at the capacity's edge, so which of them
    a redelivery finds does not depend on the order they came in."""
    policy = StatePolicy(dedup_capacity=3)
    tied = [usage_event(f"e{n}", occurred_at=minutes_before_now(5)) for n in range(5)]
    older = usage_event("old", occurred_at=minutes_before_now(6))
    for order in (tied, tied[::-1], [tied[2], tied[0], tied[4], tied[1], tied[3]]):
        state = EngagementState("acme")
        assert fold_events(state, [*order, older], policy) == FoldOutcome(counted=6)
        assert set(state.recent_ids) == {"e2", "e3", "e4"}


def test_dedup_memory_read_back_in_any_order_is_put_in_time_order() -> None:
    """A state whose ids are not known to be in order (as read back from JSON, or from
    a version that did not sort them) has all of them sorted, not only the new ones."""
    at = [minutes_before_now(m).timestamp() for m in (3, 9, 6)]
    state = EngagementState("acme", recent_ids={"e3": at[0], "e9": at[1], "e6": at[2]})
    fold_events(state, [usage_event("e1", occurred_at=minutes_before_now(1))])
    assert list(state.recent_ids) == ["e9", "e6", "e3", "e1"]


def test_late_events_are_reported_by_index_and_not_folded() -> None:
    policy = StatePolicy(lateness_s=3_600.0)
    state = EngagementState("acme")
    events = [
        usage_event("e1", occurred_at=NOW),
        usage_event("e2", occurred_at=minutes_before_now(61)),  # late
        usage_event("e3", EventType.FEATURE_USED, minutes_before_now(59)),
        usage_event("e4", occurred_at=minutes_before_now(60)),  # exactly at the bound: in
        usage_event("e5", EventType.NPS_RESPONSE, minutes_before_now(120)),  # late
    ]
    assert fold_events(state, events, policy) == FoldOutcome(counted=3, duplicates=0, late=[1, 4])
    assert state.event_counts == {"login": 2, "feature_used": 1}
    assert set(state.recent_ids) == {"e1", "e3", "e4"}
    assert state.nps_totals == [0, 0, 0]
    assert state.first_seen_at == minutes_before_now(60).timestamp()


def test_ids_older_than_the_lateness_are_forgotten_and_their_redelivery_is_late() -> None:
    policy = StatePolicy(lateness_s=3_600.0)
    state = EngagementState("acme")
    fold_events(state, [usage_event("e1", occurred_at=minutes_before_now(120))], policy)
    fold_events(state, [usage_event("e2", occurred_at=NOW)], policy)
    assert state.recent_ids == {"e2": NOW_S}

    again = fold_events(state, [usage_event("e1", occurred_at=minutes_before_now(120))], policy)
    assert again == FoldOutcome(counted=0, duplicates=0, late=[0])
    assert state.event_counts == {"login": 2}


def test_state_json_round_trip() -> None:
    state = EngagementState("acme", timezone="America/New_York")
    fold_events(state, [usage_event("e1"), usage_event("e2", EventType.FEATURE_USED)])
    back = EngagementState.from_json(state.to_json())
    assert back == state
    # 12:00 UTC is 07:00 in New York, the same calendar day.
    assert back.to_dict() == {
        "v": 1,
        "account_id": "acme",
        "timezone": "America/New_York",
        "days": {"2026-11-23": [2, 1, 0, 0.0, "1", "1", {"export_csv": "1"}, []]},
        "users": {"u-1": [0, "user", NOW_S, NOW_S, -1.0]},  # no role of its own: role_at -1
        "event_counts": {"login": 1, "feature_used": 1},
        "recent_ids": {"e1": NOW_S, "e2": NOW_S},
        "newest_at": NOW_S,
        "firsts": [NOW_S, NOW_S, NOW_S, None],
        "nps_totals": [0, 0, 0],
        "recent_nps": [],
        "license_changes": [],
    }
    # The dedup memory survives the round trip.
    assert fold_events(back, [usage_event("e2"), usage_event("e3")]) == FoldOutcome(1, 1)


def test_a_state_stored_before_role_times_reads_its_roles() -> None:
    """Users stored as [slot, role, first_seen, last_seen]: the role came from their
    newest event, so that is when they took it."""
    state = EngagementState("acme")
    fold_events(state, [usage_event("e1")])
    stored = state.to_dict()
    stored["users"] = {"u-1": [0, "champion", NOW_S - 60, NOW_S], "u-2": [1, "user", 0.0, 1.0]}
    back = EngagementState.from_dict(stored)
    assert (back.users["u-1"].role, back.users["u-1"].role_at) == ("champion", NOW_S)
    assert (back.users["u-2"].role, back.users["u-2"].role_at) == ("user", -1.0)


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
    touched = await pipeline.process(
        [
            keyed(event_json("a1", "acme"), "acme", 0),
            keyed(event_json("g1", "globex"), "globex", 1),
            keyed(event_json("a2", "acme", "session_end"), "acme", 2),
            keyed(event_json("a3", "acme", "feature_used"), "acme", 3),
            keyed(event_json("g2", "globex"), "globex", 4),
        ]
    )
    assert touched == ["acme", "globex"]
    assert table.writes == Counter({"acme": 1, "globex": 1})
    assert stored(table, "acme").event_counts == {"login": 1, "session_end": 1, "feature_used": 1}
    assert stored(table, "globex").event_counts == {"login": 2}


async def test_pipeline_dead_letters_carry_source_and_exact_bytes(
    pipeline: IngestPipeline, sink: DeadLetterSink, table: CountingTable
) -> None:
    garbage = b"\x00\xff not json \xfe"
    wrong_key = event_json("a9", "acme")
    touched = await pipeline.process(
        [
            RawMessage(garbage, SourcePosition(TOPIC, 6, 1001, b"acme", 1)),
            RawMessage(wrong_key, SourcePosition(TOPIC, 7, 2002, b"globex", 2)),
            RawMessage(None, SourcePosition(TOPIC, 0, 3003, b"acme")),
        ]
    )
    assert touched == []
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
            message(event_json("a4", occurred_at=NOW - timedelta(days=4)), offset=7),
        ]
    )
    totals = pipeline.totals
    assert totals.batches == 2
    assert totals.valid_by_type == Counter({"login": 3, "nps_response": 2})
    assert totals.duplicates == 2
    assert totals.dead_by_reason == Counter(
        {"invalid_json": 1, "not_an_object": 1, "key_mismatch": 1, "late": 1}
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
    assert set(state.recent_ids) == {"a1", "a2"}
    assert pipeline.totals.duplicates == 1


async def test_pipeline_reads_state_already_in_the_table(table: CountingTable) -> None:
    old_at = (NOW - timedelta(hours=1)).timestamp()
    previous = EngagementState(
        "acme", event_counts={"login": 7}, recent_ids={"old": old_at}, newest_at=old_at
    )
    table["acme"] = previous.to_json()
    table.writes.clear()
    pipeline = IngestPipeline(table, DeadLetterSink(), ManualClock(NOW))

    await pipeline.process([message(event_json("old"), offset=0), message(event_json("new"))])

    assert table.writes == Counter({"acme": 1})
    assert stored(table, "acme").event_counts == {"login": 8}
    assert pipeline.totals.duplicates == 1


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


async def test_pipeline_passes_limits_and_policy(
    table: CountingTable, sink: DeadLetterSink
) -> None:
    pipeline = IngestPipeline(
        table,
        sink,
        ManualClock(NOW),
        limits=EventLimits(max_bytes=4096, future_skew=timedelta(hours=2)),
        policy=StatePolicy(dedup_capacity=1),
    )
    await pipeline.process(
        [
            message(event_json("e1", occurred_at=NOW + timedelta(hours=1))),
            message(b" " * 4097),
        ]
    )
    await pipeline.process([message(event_json("e2"))])
    # Only the newest id (e1) is remembered, so e2's redelivery counts again.
    await pipeline.process([message(event_json("e2"))])

    assert [d.reason for d in sink.sent] == ["too_large"]
    state = stored(table, "acme")
    assert state.event_counts == {"login": 3}
    assert list(state.recent_ids) == ["e1"]


# The account's newest event is NOW - 1 h, so with the default 3-day lateness anything
# before 2026-11-20T11:00:00Z is late. Odd spacing and key order: the dead letter must
# carry the bytes exactly as they arrived, not a re-encoding.
LATE_RAW = (
    b'{ "type":"login",  "schema":1, "event_id":"a0", "account_id":"acme",'
    b' "user_id":"u-1", "occurred_at":"2026-11-20T10:59:59Z" }\n'
)


async def test_pipeline_dead_letters_a_late_event_with_its_exact_bytes(
    pipeline: IngestPipeline, sink: DeadLetterSink, table: CountingTable
) -> None:
    touched = await pipeline.process(
        [
            message(event_json("a1"), offset=10),
            keyed(event_json("g1", "globex"), "globex", 11),
            message(event_json("a2", event_type="feature_used"), offset=12),
            message(LATE_RAW, offset=13, partition=4),
            message(event_json("a3", occurred_at=NOW - timedelta(days=3, hours=1)), offset=14),
        ]
    )
    assert touched == ["acme", "globex"]
    [letter] = sink.sent
    assert letter.reason == "late"
    assert letter.original == LATE_RAW
    assert letter.source == SourcePosition(TOPIC, 4, 13, b"acme", 1_795_000_000_000)
    assert letter.rejected_at == NOW
    assert "2026-11-20T10:59:59+00:00" in letter.detail
    assert DeadLetter.from_json(letter.to_json()) == letter

    state = stored(table, "acme")
    assert state.event_counts == {"login": 2, "feature_used": 1}
    assert "a0" not in state.recent_ids
    assert state.first_seen_at == (NOW - timedelta(days=3, hours=1)).timestamp()
    assert table.writes == Counter({"acme": 1, "globex": 1})
    assert pipeline.totals.dead_by_reason == Counter({"late": 1})
    assert pipeline.totals.duplicates == 0


async def test_pipeline_late_event_in_a_later_batch(
    table: CountingTable, sink: DeadLetterSink
) -> None:
    pipeline = IngestPipeline(table, sink, ManualClock(NOW), policy=StatePolicy(lateness_s=60.0))
    await pipeline.process([message(event_json("a1", occurred_at=NOW), offset=0)])
    late = event_json("a2", occurred_at=NOW - timedelta(seconds=61))
    on_time = event_json("a3", occurred_at=NOW - timedelta(seconds=60))
    await pipeline.process([message(late, offset=1), message(on_time, offset=2)])

    assert [(d.reason, d.source.offset, d.original) for d in sink.sent] == [("late", 1, late)]
    assert stored(table, "acme").event_counts == {"login": 2}


async def test_a_new_account_state_takes_the_accounts_time_zone(
    table: CountingTable, sink: DeadLetterSink
) -> None:
    accounts = {"acme": Account("acme", "Acme", 10, timezone="America/New_York").to_json()}
    pipeline = IngestPipeline(table, sink, ManualClock(NOW), accounts=accounts)
    # 03:30 UTC on the 23rd is 22:30 on the 22nd in New York (EST, UTC-5).
    night = datetime(2026, 11, 23, 3, 30, tzinfo=UTC)
    await pipeline.process(
        [
            message(event_json("a1", occurred_at=night), offset=0),
            keyed(event_json("g1", "globex", occurred_at=night), "globex", 1),
        ]
    )
    acme = stored(table, "acme")
    assert acme.timezone == "America/New_York"
    assert list(acme.days) == ["2026-11-22"]
    globex = stored(table, "globex")  # no account record: UTC
    assert globex.timezone == "UTC"
    assert list(globex.days) == ["2026-11-23"]


# --- AccountsPipeline -------------------------------------------------------------------

ACCOUNTS_TOPIC = "engagewatch.accounts"
ACME_RECORD: dict[str, Any] = {
    "account_id": "acme",
    "name": "Acme Corp",
    "licenses": 1000,
    "owner_email": "csm@example.com",
    "slack_channel": "#acme-success",
    "segment": "enterprise",
    "arr": 120000,
    "timezone": "America/New_York",
    "contract_start": "2025-01-01",
    "renewal_date": "2027-01-01",
    "status": "active",
}
ACME = Account(
    "acme",
    "Acme Corp",
    1000,
    owner_email="csm@example.com",
    slack_channel="#acme-success",
    segment="enterprise",
    arr=120000,
    timezone="America/New_York",
    contract_start=date(2025, 1, 1),
    renewal_date=date(2027, 1, 1),
    status="active",
)


def account_json(without: tuple[str, ...] = (), **fields: Any) -> bytes:
    record = {k: v for k, v in ACME_RECORD.items() if k not in without} | fields
    return json.dumps(record).encode()


def account_message(
    value: bytes | None, key: bytes | None = b"acme", offset: int = 0
) -> RawMessage:
    return RawMessage(value, SourcePosition(ACCOUNTS_TOPIC, 1, offset, key, 1_795_000_000_000))


@pytest.fixture
def accounts_table() -> dict[str, bytes]:
    return {}


@pytest.fixture
def accounts_pipeline(accounts_table: dict[str, bytes], sink: DeadLetterSink) -> AccountsPipeline:
    return AccountsPipeline(accounts_table, sink, ManualClock(NOW))


async def test_accounts_valid_record_is_stored(
    accounts_pipeline: AccountsPipeline, accounts_table: dict[str, bytes], sink: DeadLetterSink
) -> None:
    await accounts_pipeline.process([account_message(account_json())])
    assert sink.sent == []
    assert list(accounts_table) == ["acme"]
    assert Account.from_json(accounts_table["acme"]) == ACME
    assert codec.loads(accounts_table["acme"]) == ACME_RECORD


async def test_accounts_tombstone_deletes(
    accounts_pipeline: AccountsPipeline, accounts_table: dict[str, bytes], sink: DeadLetterSink
) -> None:
    accounts_table["acme"] = ACME.to_json()
    accounts_table["globex"] = Account("globex", "Globex", 5).to_json()
    await accounts_pipeline.process(
        [account_message(None, b"acme"), account_message(None, b"never-seen")]
    )
    assert list(accounts_table) == ["globex"]
    assert sink.sent == []


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        pytest.param([account_json(licenses=10), account_json(licenses=20)], 20, id="last-wins"),
        pytest.param([account_json(), None], None, id="record-then-tombstone"),
        pytest.param([None, account_json(licenses=7)], 7, id="tombstone-then-record"),
    ],
)
async def test_accounts_last_record_of_a_key_in_a_batch_wins(
    accounts_pipeline: AccountsPipeline,
    accounts_table: dict[str, bytes],
    values: list[bytes | None],
    expected: int | None,
) -> None:
    accounts_table["acme"] = ACME.to_json()
    await accounts_pipeline.process(
        [account_message(value, offset=n) for n, value in enumerate(values)]
    )
    stored_account = accounts_table.get("acme")
    licenses = Account.from_json(stored_account).licenses if stored_account else None
    assert licenses == expected


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        pytest.param(account_json(without=("licenses",)), "missing_field:licenses", id="licenses"),
        pytest.param(account_json(without=("name",)), "missing_field:name", id="name"),
        pytest.param(account_json(licenses=-1), "bad_value:licenses", id="negative-licenses"),
        pytest.param(account_json(licenses="10"), "bad_type:licenses", id="text-licenses"),
        pytest.param(account_json(licenses=True), "bad_type:licenses", id="bool-licenses"),
        pytest.param(account_json(timezone="Mars/Olympus"), "bad_value:timezone", id="zone"),
        pytest.param(account_json(timezone=5), "bad_type:timezone", id="zone-type"),
        pytest.param(
            account_json(timezone="Europe"),
            "bad_value:timezone",
            id="zone-is-a-directory",
        ),
        pytest.param(
            account_json(timezone="Mars" * 100),
            "bad_value:timezone",
            id="zone-name-too-long",
        ),
        pytest.param(account_json(status="deleted"), "bad_value:status", id="status"),
        pytest.param(
            account_json(contract_start="2025-13-01"), "bad_value:contract_start", id="date"
        ),
        pytest.param(account_json(arr="lots"), "bad_type:arr", id="arr"),
        pytest.param(account_json(account_id=".."), "bad_value:account_id", id="dot-dot-id"),
        # Alerts are mailed to it as is: one address, no list, no header line.
        pytest.param(
            account_json(owner_email="csm@example.com, attacker@evil.example"),
            "bad_value:owner_email",
            id="email-list",
        ),
        pytest.param(
            account_json(owner_email="dana@example.com\nBcc: lee@example.com"),
            "bad_value:owner_email",
            id="email-header-line",
        ),
        pytest.param(
            account_json(owner_email="Dana <d@example.com>"),
            "bad_value:owner_email",
            id="email-name",
        ),
        pytest.param(
            account_json(owner_email="example.com"), "bad_value:owner_email", id="email-no-at"
        ),
        pytest.param(b"{not json", "invalid_json", id="json"),
        pytest.param(b"[1, 2]", "not_an_object", id="array"),
    ],
)
async def test_accounts_bad_record_is_dead_lettered_and_keeps_the_previous(
    accounts_pipeline: AccountsPipeline,
    accounts_table: dict[str, bytes],
    sink: DeadLetterSink,
    raw: bytes,
    reason: str,
) -> None:
    accounts_table["acme"] = ACME.to_json()
    await accounts_pipeline.process([account_message(raw, offset=42)])
    [letter] = sink.sent
    assert letter.reason == reason
    assert letter.original == raw
    assert letter.source == SourcePosition(ACCOUNTS_TOPIC, 1, 42, b"acme", 1_795_000_000_000)
    assert letter.rejected_at == NOW
    assert accounts_table == {"acme": ACME.to_json()}


@pytest.mark.parametrize(
    ("value", "key"),
    [
        pytest.param(account_json(), b"globex", id="other-key"),
        pytest.param(account_json(), b"ACME", id="different-case"),
        pytest.param(account_json(), None, id="no-key"),
        pytest.param(None, None, id="tombstone-without-key"),
    ],
)
async def test_accounts_key_mismatch(
    accounts_pipeline: AccountsPipeline,
    accounts_table: dict[str, bytes],
    sink: DeadLetterSink,
    value: bytes | None,
    key: bytes | None,
) -> None:
    await accounts_pipeline.process([account_message(value, key, offset=9)])
    assert [(d.reason, d.original, d.source.offset) for d in sink.sent] == [
        ("key_mismatch", value or b"", 9)
    ]
    assert accounts_table == {}


async def test_accounts_tombstone_with_a_non_utf8_key_is_dead_lettered(
    accounts_pipeline: AccountsPipeline, accounts_table: dict[str, bytes], sink: DeadLetterSink
) -> None:
    accounts_table["acme"] = ACME.to_json()
    await accounts_pipeline.process([account_message(None, b"\xff\xfe", offset=5)])
    assert [(d.reason, d.original, d.source.key) for d in sink.sent] == [
        ("key_mismatch", b"", b"\xff\xfe")
    ]
    assert accounts_table == {"acme": ACME.to_json()}


async def test_accounts_feed_the_time_zone_of_new_engagement_state(
    accounts_pipeline: AccountsPipeline,
    accounts_table: dict[str, bytes],
    table: CountingTable,
    sink: DeadLetterSink,
) -> None:
    await accounts_pipeline.process([account_message(account_json(timezone="Asia/Tokyo"))])
    pipeline = IngestPipeline(table, sink, ManualClock(NOW), accounts=accounts_table)
    # 16:30 UTC on the 22nd is 01:30 on the 23rd in Tokyo (UTC+9).
    await pipeline.process([message(event_json("a1", occurred_at=NOW - timedelta(hours=19.5)))])
    state = stored(table, "acme")
    assert state.timezone == "Asia/Tokyo"
    assert list(state.days) == ["2026-11-23"]
    assert sink.sent == []


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


async def test_pipeline_writes_nothing_for_a_batch_of_redeliveries_only(
    pipeline: IngestPipeline, table: CountingTable
) -> None:
    assert await pipeline.process([message(event_json("a1"), offset=0)]) == ["acme"]
    table.writes.clear()
    # A full redelivery changes no state, so it must cost no changelog record.
    assert await pipeline.process([message(event_json("a1"), offset=0)]) == []
    assert table.writes == Counter()
    assert pipeline.totals.duplicates == 1


# --- the hot path against the careful one -----------------------------------------------


class Reference:
    """The pipeline as it was before the hot path: ``triage_batch`` (careful decode),
    state decoded from the table for every batch, ``fold_events``, one write."""

    def __init__(self, table: dict[str, bytes], accounts: dict[str, bytes]) -> None:
        self.table = table
        self.accounts = accounts
        self.dead: list[DeadLetter] = []

    def process(self, messages: list[RawMessage], policy: StatePolicy) -> list[str]:
        outcome = triage_batch(messages, NOW)
        dead = list(outcome.dead)
        touched = []
        for account_id, events in outcome.accepted.items():
            stored = self.table.get(account_id)
            record = self.accounts.get(account_id)
            zone = Account.from_json(record).timezone if record else "UTC"
            state = (
                EngagementState.from_json(stored) if stored else EngagementState(account_id, zone)
            )
            folded = fold_events(state, events, policy)
            newest = datetime.fromtimestamp(state.newest_at or 0.0, UTC).isoformat()
            for i in folded.late:
                detail = (
                    f"occurred_at {events[i].occurred_at.isoformat()} is more than "
                    f"{policy.lateness_s:.0f} s before the account's newest event ({newest})"
                )
                source = outcome.sources[account_id][i]
                dead.append(DeadLetter("late", detail, source.value or b"", source.position, NOW))
            if folded.counted:
                self.table[account_id] = state.to_json()
                touched.append(account_id)
        self.dead.extend(dead)
        return touched


HOT_ACCOUNTS = ("acme", "globex", "café")


@st.composite
def hot_messages(draw: st.DrawFn, offset: int) -> RawMessage:
    """A message the hot path takes, one only the careful path takes, or a reject."""
    account = draw(st.sampled_from(HOT_ACCOUNTS))
    kind = draw(st.sampled_from(sorted(PROPERTIES)))
    at = NOW - timedelta(seconds=draw(st.integers(-400, 5 * 86_400)))
    event: dict[str, Any] = {
        "schema": 1,
        "event_id": f"{account}-{draw(st.integers(0, 30))}",
        "type": kind,
        "account_id": account,
        "user_id": draw(st.sampled_from(["u-1", "u-2", "ü-3"])),
        "role": draw(st.sampled_from(["user", "champion"])),
        "occurred_at": at.isoformat().replace("+00:00", "Z"),
        "properties": dict(PROPERTIES[kind]),
    }
    change = draw(
        st.sampled_from(["none", "none", "none", "field", "offset", "fraction", "bad", "key"])
    )
    if change == "field":  # valid, but only for the careful path
        event["source"] = "web"
    elif change == "offset":
        event["occurred_at"] = (at + timedelta(hours=5, minutes=30)).isoformat()
    elif change == "fraction":
        event["occurred_at"] = (at + timedelta(microseconds=250_000)).isoformat()
    elif change == "bad":
        event[draw(st.sampled_from(["schema", "user_id", "properties"]))] = "?"
    key = account.encode() if change != "key" else draw(st.sampled_from([None, b"acme"]))
    value = json.dumps(event).encode() if draw(st.integers(0, 20)) else b"{not json"
    return RawMessage(value, SourcePosition(TOPIC, 0, offset, key, 1_795_000_000_000))


@st.composite
def hot_batches(draw: st.DrawFn) -> list[list[RawMessage]]:
    sizes = draw(st.lists(st.integers(0, 25), min_size=1, max_size=4))
    offsets = iter(range(sum(sizes)))
    return [[draw(hot_messages(next(offsets))) for _ in range(size)] for size in sizes]


def decoded(table: dict[str, bytes]) -> dict[str, EngagementState]:
    """The states, compared on what they know (equality leaves out ``read_through``)."""
    return {account: EngagementState.from_json(value) for account, value in table.items()}


@settings(max_examples=300, deadline=None)
@given(hot_batches(), st.sampled_from([None, "globex", "acme"]))
async def test_the_pipeline_equals_the_careful_reference(
    batches: list[list[RawMessage]], rewritten: str | None
) -> None:
    policy = StatePolicy(lateness_s=2 * 86_400.0, recent_nps=3)
    accounts = {"acme": Account("acme", "Acme", 10, timezone="Asia/Kolkata").to_json()}
    table: dict[str, bytes] = {}
    expected: dict[str, bytes] = {}
    reference = Reference(expected, accounts)
    sink = DeadLetterSink()
    pipeline = IngestPipeline(table, sink, ManualClock(NOW), policy=policy, accounts=accounts)
    for n, batch in enumerate(batches):
        assert await pipeline.process(batch) == reference.process(batch, policy)
        assert decoded(table) == decoded(expected)
        assert sink.sent == reference.dead
        if rewritten in table and n == 0:
            # Someone else writes the table (a recovery, a rebalance): the pipeline's
            # decoded state must not hide it.
            state = EngagementState.from_json(table[rewritten])
            state.event_counts["login"] = state.event_counts.get("login", 0) + 1000
            table[rewritten] = expected[rewritten] = state.to_json()
    totals = pipeline.totals
    triaged = [triage_batch(batch, NOW) for batch in batches]
    assert totals.valid_by_type == sum((t.counts_by_type() for t in triaged), Counter())
    assert totals.dead_by_reason == Counter(d.reason for d in reference.dead)


async def test_the_pipeline_takes_the_bulk_readers_records(
    pipeline: IngestPipeline, sink: DeadLetterSink, table: CountingTable
) -> None:
    records = [
        FakeConsumerRecord(TOPIC, 2, 7, b"acme", event_json("a1"), 1_795_000_000_000),
        FakeConsumerRecord(TOPIC, 2, 8, b"acme", b"[]", 1_795_000_000_001),
    ]
    assert await pipeline.process(records) == ["acme"]
    assert stored(table, "acme").event_counts == {"login": 1}
    [letter] = sink.sent
    assert letter.source == SourcePosition(TOPIC, 2, 8, b"acme", 1_795_000_000_001)
    assert letter.original == b"[]"


@dataclass
class FakeConsumerRecord:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: int | None


async def test_the_pipeline_reuses_decoded_state_only_while_the_table_holds_it(
    table: CountingTable, sink: DeadLetterSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    pipeline = IngestPipeline(table, sink, ManualClock(NOW))
    decodes = Counter[str]()
    original = EngagementState.from_json

    def counting(data: bytes) -> EngagementState:
        decodes["n"] += 1
        return original(data)

    monkeypatch.setattr(EngagementState, "from_json", staticmethod(counting))
    await pipeline.process([message(event_json("a1"), offset=0)])
    await pipeline.process([message(event_json("a2"), offset=1)])
    assert decodes["n"] == 0  # written by this pipeline: the decoded state is reused

    table["acme"] = EngagementState("acme", event_counts={"login": 41}).to_json()
    await pipeline.process([message(event_json("a3"), offset=2)])
    assert decodes["n"] == 1
    assert original(table["acme"]).event_counts == {"login": 42}


# --- a state past max_state_bytes -------------------------------------------------------

STATE_LIMIT = RECORD_FRAMING + 2_000


def long_id(n: int) -> str:
    return f"bulk-{n:03d}-" + "x" * 100


async def test_a_batch_that_would_outgrow_max_state_bytes_goes_to_the_dead_letters_whole(
    table: CountingTable, sink: DeadLetterSink
) -> None:
    """Kafka refuses a record past the changelog's limit, and a refused write stops the
    worker, again after every restart: the batch's events of that account are dead
    lettered instead (each once, with its bytes and position), its state stays as the
    table holds it, and the other accounts of the batch are folded."""
    pipeline = IngestPipeline(table, sink, ManualClock(NOW), max_state_bytes=STATE_LIMIT)
    await pipeline.process(
        [keyed(event_json("a1"), "acme", 0), keyed(event_json("g1", "globex"), "globex", 1)]
    )
    before = table["acme"]
    assert len(before) < STATE_LIMIT - RECORD_FRAMING - 1_000

    bulk = [keyed(event_json(long_id(n)), "acme", 10 + n) for n in range(40)]
    again = keyed(event_json("a1"), "acme", 50)  # a duplicate: refused with its batch
    late = keyed(event_json("a-late", occurred_at=NOW - timedelta(days=30)), "acme", 51)
    touched = await pipeline.process(
        [*bulk[:20], keyed(event_json("g2", "globex"), "globex", 9), again, late, *bulk[20:]]
    )

    assert touched == ["globex"]
    assert table["acme"] is before and table.writes["acme"] == 1
    assert stored(table, "globex").event_counts == {"login": 2}
    refused = [letter for letter in sink.sent if letter.reason == STATE_TOO_LARGE]
    assert sink.sent == refused
    assert [letter.original for letter in refused] == [
        m.value for m in [*bulk[:20], again, late, *bulk[20:]]
    ]
    assert [letter.source.offset for letter in refused] == [*range(10, 30), 50, 51, *range(30, 50)]
    detail = refused[0].detail
    assert "'acme'" in detail and f"max_state_bytes ({STATE_LIMIT:,} bytes" in detail
    size = int(detail.split("would be ")[1].split(" bytes")[0].replace(",", ""))
    assert size > STATE_LIMIT - RECORD_FRAMING
    assert pipeline.totals.dead_by_reason == Counter({STATE_TOO_LARGE: 42})
    assert pipeline.totals.duplicates == 0  # each valid event: counted, duplicate or dead

    # The next batch folds into the state as the table holds it, not the refused fold.
    await pipeline.process([keyed(event_json("a2"), "acme", 60)])
    assert stored(table, "acme").event_counts == {"login": 2}

    # Nothing is lost: with the limit raised, the dead letters are published again (at
    # new offsets, after the events the state has taken).
    raised = IngestPipeline(table, sink, ManualClock(NOW))
    await raised.process(
        [message(letter.original, letter.source.key, 100 + n) for n, letter in enumerate(refused)]
    )
    assert stored(table, "acme").event_counts == {"login": 42}  # a1 again is a duplicate
    assert raised.totals.dead_by_reason == Counter({"late": 1})


async def test_a_new_account_too_large_for_its_first_write_gets_no_state(
    table: CountingTable, sink: DeadLetterSink
) -> None:
    pipeline = IngestPipeline(table, sink, ManualClock(NOW), max_state_bytes=STATE_LIMIT)
    await pipeline.process([keyed(event_json(long_id(n)), "acme", n) for n in range(40)])
    assert "acme" not in table
    assert pipeline.current_state("acme") is None
    assert Counter(letter.reason for letter in sink.sent) == Counter({STATE_TOO_LARGE: 40})


async def test_a_state_exactly_at_the_limit_is_written(
    table: CountingTable, sink: DeadLetterSink
) -> None:
    """The limit is the record Kafka takes: a state of max_state_bytes less the framing
    kept for key and headers is written, a byte more is not."""
    batch = [keyed(event_json(long_id(n)), "acme", n) for n in range(5)]
    reference = CountingTable()
    await IngestPipeline(reference, DeadLetterSink(), ManualClock(NOW)).process(batch)
    size = len(reference["acme"])

    at_limit = IngestPipeline(table, sink, ManualClock(NOW), max_state_bytes=size + RECORD_FRAMING)
    assert await at_limit.process(batch) == ["acme"]
    assert table["acme"] == reference["acme"] and not sink.sent

    over = CountingTable()
    past = IngestPipeline(over, sink, ManualClock(NOW), max_state_bytes=size + RECORD_FRAMING - 1)
    assert await past.process(batch) == []
    assert "acme" not in over and len(sink.sent) == 5


async def test_events_read_again_after_a_crash_are_duplicates_not_late_letters(
    table: CountingTable, sink: DeadLetterSink
) -> None:
    """Found by a review: a worker killed while catching up left its offsets a commit
    interval (days of event time) behind the state the changelog kept; read again, the
    old events were past the lateness bound, their ids gone from the memory with it,
    and they were dead-lettered as ``late`` (3,061 after five kills), though counted.
    The state says up to which offset it took its partition: those are passed over."""
    policy = StatePolicy(dedup_capacity=1)  # the id memory alone cannot catch them
    old = [
        message(event_json(f"old{n}", occurred_at=NOW - timedelta(days=10)), offset=n)
        for n in range(3)
    ]
    new = [message(event_json(f"new{n}"), offset=10 + n) for n in range(3)]
    first = IngestPipeline(table, sink, ManualClock(NOW), policy=policy)
    await first.process(old)
    await first.process(new)
    assert stored(table, "acme").read_through == (3, 12)

    # The next worker, from the last committed offset (none) and the changelog's state.
    after_crash = IngestPipeline(table, sink, ManualClock(NOW), policy=policy)
    await after_crash.process([*old, *new, message(event_json("fresh"), offset=13)])
    assert sink.sent == []
    assert stored(table, "acme").event_counts == {"login": 7}
    assert after_crash.totals.duplicates == 6
    assert stored(table, "acme").read_through == (3, 13)


async def test_a_state_that_has_not_said_where_it_was_read_to_is_read_as_before(
    table: CountingTable, sink: DeadLetterSink
) -> None:
    """States written before ``read_through`` was kept: duplicates by id, as they were."""
    pipeline = IngestPipeline(table, sink, ManualClock(NOW))
    await pipeline.process([message(event_json("e1"), offset=5)])
    state = stored(table, "acme")
    state.read_through = None
    table["acme"] = state.to_json()
    assert b"read_through" not in table["acme"]
    await pipeline.process(
        [message(event_json("e1"), offset=5), message(event_json("e2"), offset=6)]
    )
    assert stored(table, "acme").event_counts == {"login": 2}
    assert pipeline.totals.duplicates == 1
