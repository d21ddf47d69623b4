"""The ingest pipeline for one batch: triage, dead-letter, fold, write state once.

Kept apart from Faust so it can be driven by the agent, by a benchmark or by a test
with a plain dict as the table. The only Faust-shaped thing here is the event type
the agent hands in (``event.message`` has topic, partition, offset, key, value).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from stream.clock import Clock
from stream.deadletter import DeadLetter, SourcePosition
from stream.engagement import DEFAULT_DEDUP_CAPACITY, EngagementState, fold_events
from stream.events import EventLimits
from stream.ingest import RawMessage, triage_batch

__all__ = ["IngestPipeline", "IngestTotals", "raw_message"]

log = logging.getLogger(__name__)

SendDeadLetter = Callable[[DeadLetter], Awaitable[None]]


class KafkaMessage(Protocol):
    """The fields of a consumed message the pipeline reads (Faust's ``Message``)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: float


@dataclass(slots=True)
class IngestTotals:
    """Running totals since the worker started, for logs and metrics."""

    batches: int = 0
    valid_by_type: Counter[str] = field(default_factory=Counter)
    duplicates: int = 0
    dead_by_reason: Counter[str] = field(default_factory=Counter)


def raw_message(message: KafkaMessage) -> RawMessage:
    value = message.value
    if isinstance(value, str):  # a value serializer upstream already decoded it
        value = value.encode()
    position = SourcePosition(
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        key=message.key,
        timestamp_ms=int(message.timestamp * 1000) if message.timestamp else None,
    )
    return RawMessage(value, position)


class IngestPipeline:
    """Folds batches into the engagement table; sends the rejects to the dead letters."""

    def __init__(
        self,
        table: MutableMapping[str, Any],
        send_dead_letter: SendDeadLetter,
        clock: Clock,
        limits: EventLimits | None = None,
        dedup_capacity: int = DEFAULT_DEDUP_CAPACITY,
    ) -> None:
        self._table = table
        self._send_dead_letter = send_dead_letter
        self._clock = clock
        self._limits = limits or EventLimits()
        self._dedup_capacity = dedup_capacity
        self.totals = IngestTotals()

    async def process(self, messages: Sequence[RawMessage]) -> None:
        outcome = triage_batch(messages, self._clock.now(), self._limits)
        for letter in outcome.dead:
            await self._send_dead_letter(letter)
        counted = 0
        for account_id, events in outcome.accepted.items():
            stored = self._table.get(account_id)
            state = EngagementState.from_json(stored) if stored else EngagementState(account_id)
            counted += fold_events(state, events, self._dedup_capacity)
            # One assignment per account per batch: each one is a changelog record.
            self._table[account_id] = state.to_json()
        self._count(outcome.counts_by_type(), counted, outcome.dead_by_reason())

    def _count(self, valid: Counter[str], counted: int, dead: Counter[str]) -> None:
        totals = self.totals
        totals.batches += 1
        totals.valid_by_type.update(valid)
        totals.duplicates += valid.total() - counted
        totals.dead_by_reason.update(dead)
