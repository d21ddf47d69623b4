"""Triage a batch of raw messages: valid events grouped by account, the rest dead.

Pure: the Faust agent turns its batch into :class:`RawMessage` values, calls
:func:`triage_batch`, then publishes the dead letters and folds the accepted events.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from stream.deadletter import DeadLetter, SourcePosition
from stream.events import EventLimits, Rejection, UsageEvent, decode_event

__all__ = ["BatchOutcome", "RawMessage", "triage_batch"]


@dataclass(frozen=True, slots=True)
class RawMessage:
    value: bytes | None
    position: SourcePosition


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


def _decode(message: RawMessage, now: datetime, limits: EventLimits) -> UsageEvent | Rejection:
    if message.value is None:
        return Rejection("invalid_json", "the message has no value (a tombstone?)")
    result = decode_event(message.value, now, limits)
    if isinstance(result, UsageEvent):
        key = message.position.key
        # State is partitioned by the message key: an event keyed by anything but its
        # account would land on another worker's partition and split that account.
        if key is None or key != result.account_id.encode():
            shown = key.decode("utf-8", "replace") if key is not None else "no key"
            return Rejection(
                "key_mismatch",
                f"the message key must be the account_id {result.account_id!r}, got {shown!r}",
            )
    return result
