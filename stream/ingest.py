"""Triage a batch of raw messages: valid events grouped by account, the rest dead.

Pure. :func:`triage_batch` gives :class:`UsageEvent` values (replay, tests);
:func:`triage_records` is the ingest hot path: the same decisions, but each valid event
becomes a flat :data:`~stream.events.Record` by a typed decode in C, and only messages
that decode does not take go through the careful path that explains rejections.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from operator import itemgetter
from typing import Protocol

from stream.deadletter import DeadLetter, SourcePosition
from stream.events import (
    KINDS,
    AccountRecords,
    EventLimits,
    Rejection,
    UsageEvent,
    decode_batch,
    decode_event,
    record_of,
)

__all__ = [
    "Batch",
    "BatchOutcome",
    "ConsumerRecord",
    "RawMessage",
    "RecordsOutcome",
    "triage_batch",
    "triage_records",
]


@dataclass(frozen=True, slots=True)
class RawMessage:
    value: bytes | None
    position: SourcePosition


class ConsumerRecord(Protocol):
    """An aiokafka ``ConsumerRecord``, as the bulk reader fetches it: handed over as it
    is, since wrapping each one in a :class:`RawMessage` cost a quarter of the budget."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: int | None
    """Milliseconds since the epoch."""


Batch = Sequence[RawMessage] | Sequence[ConsumerRecord]
"""What the ingest pipeline takes: messages, or the bulk reader's records."""


_SHOWN_KEY_CHARS = 200


class BatchAbandonedError(Exception):
    """Processing gave up on a batch before it changed anything (the worker is stopping
    or its partitions are moving): its offsets are not committed, so whoever reads the
    partitions next reads it again."""


@dataclass(slots=True)
class BatchOutcome:
    """Accepted events by account (in arrival order) and the dead letters."""

    accepted: dict[str, list[UsageEvent]] = field(default_factory=dict)
    sources: dict[str, list[RawMessage]] = field(default_factory=dict)
    """The message each accepted event came from, index for index (for late letters)."""
    dead: list[DeadLetter] = field(default_factory=list)

    def counts_by_type(self) -> Counter[str]:
        return Counter(e.type.value for events in self.accepted.values() for e in events)

    def dead_by_reason(self) -> Counter[str]:
        return Counter(letter.reason for letter in self.dead)


def triage_batch(
    messages: Sequence[RawMessage], now: datetime, limits: EventLimits | None = None
) -> BatchOutcome:
    """Decode every message once; never raises on input."""
    limits = limits or EventLimits()
    outcome = BatchOutcome()
    for message in messages:
        result = _decode(message, now, limits)
        if isinstance(result, Rejection):
            original = message.value if message.value is not None else b""
            outcome.dead.append(
                DeadLetter(result.reason, result.detail, original, message.position, now)
            )
        else:
            outcome.accepted.setdefault(result.account_id, []).append(result)
            outcome.sources.setdefault(result.account_id, []).append(message)
    return outcome


@dataclass(slots=True)
class RecordsOutcome:
    """What :func:`triage_records` found: records by account, and the dead letters."""

    accepted: dict[str, AccountRecords] = field(default_factory=dict)
    """By account in the order of its first accepted message, each in arrival order."""
    dead: list[DeadLetter] = field(default_factory=list)

    def counts_by_type(self) -> Counter[str]:
        codes: Counter[int] = Counter()
        for group in self.accepted.values():
            codes.update(map(_kind_code, group.records))  # counted in C, not per event
        return Counter({KINDS[code].value: n for code, n in codes.items()})


_kind_code = itemgetter(1)


def triage_records(
    values: Sequence[bytes | None],
    keys: Sequence[bytes | None],
    position: Callable[[int], SourcePosition],
    now: datetime,
    limits: EventLimits | None = None,
) -> RecordsOutcome:
    """:func:`triage_batch` on columns, giving records: the same accepted events in the
    same order and the same dead letters. ``position(i)`` is asked only for a reject."""
    limits = limits or EventLimits()
    limit_s = (now + limits.future_skew).timestamp()
    batch = decode_batch(values, keys, limits.max_bytes, limit_s)
    outcome = RecordsOutcome(batch.accounts)
    mixed: set[str] = set()
    for index in batch.careful:
        value = values[index]
        result = _decode_value(value, keys[index], now, limits)
        if isinstance(result, Rejection):
            letter = DeadLetter(result.reason, result.detail, value or b"", position(index), now)
            outcome.dead.append(letter)
            continue
        group = outcome.accepted.get(result.account_id)
        if group is None:
            key = result.account_id.encode()
            group = outcome.accepted[result.account_id] = AccountRecords(key)
        record = record_of(result)
        group.records.append(record)
        group.indexes.append(index)
        mixed.add(result.account_id)
    if mixed:  # the careful path's events go back to their place in arrival order
        for account_id in mixed:
            group = outcome.accepted[account_id]
            order = sorted(range(len(group.indexes)), key=group.indexes.__getitem__)
            group.records = [group.records[i] for i in order]
            group.indexes = [group.indexes[i] for i in order]
        by_first = sorted(outcome.accepted.items(), key=lambda item: item[1].indexes[0])
        outcome.accepted = dict(by_first)
    return outcome


def _decode(message: RawMessage, now: datetime, limits: EventLimits) -> UsageEvent | Rejection:
    return _decode_value(message.value, message.position.key, now, limits)


def _decode_value(
    value: bytes | None, key: bytes | None, now: datetime, limits: EventLimits
) -> UsageEvent | Rejection:
    if value is None:
        return Rejection("invalid_json", "the message has no value (a tombstone?)")
    result = decode_event(value, now, limits)
    # State is partitioned by the message key: an event keyed by anything but its
    # account would land on another worker's partition and split that account.
    if isinstance(result, UsageEvent) and (key is None or key != result.account_id.encode()):
        shown = key.decode("utf-8", "replace") if key is not None else "no key"
        if len(shown) > _SHOWN_KEY_CHARS:  # a letter must stay small enough to send
            shown = f"{shown[:_SHOWN_KEY_CHARS]}... ({len(key or b''):,} bytes)"
        return Rejection(
            "key_mismatch",
            f"the message key must be the account_id {result.account_id!r}, got {shown!r}",
        )
    return result
