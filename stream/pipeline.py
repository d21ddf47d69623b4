"""The ingest pipeline for one batch: triage, fold per account, write state once.

Kept apart from Faust so the agent, the benchmark, replay and tests all drive the same
code; tables are any ``MutableMapping`` (a Faust table in the worker, a dict in tests).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from stream.accounts import Account, decode_account
from stream.clock import Clock
from stream.deadletter import DeadLetter, SourcePosition
from stream.engagement import EngagementState, StatePolicy, fold_events
from stream.events import EventLimits, Rejection, UsageEvent
from stream.ingest import RawMessage, triage_batch

__all__ = ["AccountsPipeline", "IngestPipeline", "IngestTotals", "raw_message"]

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
    messages: int = 0
    valid_by_type: Counter[str] = field(default_factory=Counter)
    duplicates: int = 0
    dead_by_reason: Counter[str] = field(default_factory=Counter)
    busy_s: float = 0.0
    """Time spent inside ``process`` (decode, fold, state writes, dead-letter sends)."""
    newest_event_at: float | None = None
    """Event time (epoch s) of the newest event folded."""


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
        *,
        limits: EventLimits | None = None,
        policy: StatePolicy | None = None,
        accounts: Mapping[str, Any] | None = None,
    ) -> None:
        self._table = table
        self._send_dead_letter = send_dead_letter
        self._clock = clock
        self._limits = limits or EventLimits()
        self._policy = policy or StatePolicy()
        self._accounts = accounts if accounts is not None else {}
        self.totals = IngestTotals()

    async def process(self, messages: Sequence[RawMessage]) -> list[str]:
        """Fold one batch; returns the ids of the accounts whose state changed."""
        started = time.perf_counter()
        now = self._clock.now()
        outcome = triage_batch(messages, now, self._limits)
        dead = list(outcome.dead)
        counted = 0
        touched: list[str] = []
        for account_id, events in outcome.accepted.items():
            state = self._load(account_id)
            folded = fold_events(state, events, self._policy)
            counted += folded.counted
            newest = self.totals.newest_event_at
            if state.newest_at is not None and (newest is None or state.newest_at > newest):
                self.totals.newest_event_at = state.newest_at
            sources = outcome.sources[account_id]
            dead.extend(
                _late_letter(events[i], sources[i], state, self._policy, now) for i in folded.late
            )
            if folded.counted:
                # One assignment per account per batch: each one is a changelog record.
                self._table[account_id] = state.to_json()
                touched.append(account_id)
        for letter in dead:
            await self._send_dead_letter(letter)
        self._count(outcome.counts_by_type(), counted, len(dead) - len(outcome.dead), dead)
        self.totals.messages += len(messages)
        self.totals.busy_s += time.perf_counter() - started
        return touched

    def _load(self, account_id: str) -> EngagementState:
        stored = self._table.get(account_id)
        if stored:
            return EngagementState.from_json(stored)
        account = self._accounts.get(account_id)
        zone = Account.from_json(account).timezone if account else "UTC"
        return EngagementState(account_id, timezone=zone)

    def _count(self, valid: Counter[str], counted: int, late: int, dead: list[DeadLetter]) -> None:
        totals = self.totals
        totals.batches += 1
        totals.valid_by_type.update(valid)
        totals.duplicates += valid.total() - counted - late
        totals.dead_by_reason.update(letter.reason for letter in dead)


def _late_letter(
    event: UsageEvent,
    source: RawMessage,
    state: EngagementState,
    policy: StatePolicy,
    now: datetime,
) -> DeadLetter:
    newest = datetime.fromtimestamp(state.newest_at or 0.0, UTC).isoformat()
    detail = (
        f"occurred_at {event.occurred_at.isoformat()} is more than "
        f"{policy.lateness_s:.0f} s before the account's newest event ({newest})"
    )
    return DeadLetter("late", detail, source.value or b"", source.position, now)


class AccountsPipeline:
    """Keeps the accounts table in step with the compacted accounts topic."""

    def __init__(
        self, table: MutableMapping[str, Any], send_dead_letter: SendDeadLetter, clock: Clock
    ) -> None:
        self._table = table
        self._send_dead_letter = send_dead_letter
        self._clock = clock

    async def process(self, messages: Sequence[RawMessage]) -> None:
        latest: dict[str, bytes | None] = {}
        for message in messages:
            key = message.position.key
            account_id = _utf8(key)
            if account_id is None:
                await self._reject(
                    message, Rejection("key_mismatch", "account records need a UTF-8 key")
                )
            elif message.value is None:
                latest[account_id] = None  # a tombstone: the account is gone
            else:
                result = decode_account(message.value)
                if isinstance(result, Rejection):
                    await self._reject(message, result)
                elif result.account_id.encode() != key:
                    await self._reject(
                        message,
                        Rejection(
                            "key_mismatch", f"key must be the account_id {result.account_id!r}"
                        ),
                    )
                else:
                    latest[result.account_id] = result.to_json()
        for account_id, value in latest.items():  # compacted: only the last one matters
            if value is None:
                self._table.pop(account_id, None)
            else:
                self._table[account_id] = value

    async def _reject(self, message: RawMessage, rejection: Rejection) -> None:
        await self._send_dead_letter(
            DeadLetter(
                rejection.reason,
                rejection.detail,
                message.value or b"",
                message.position,
                self._clock.now(),
            )
        )


def _utf8(key: bytes | None) -> str | None:
    if key is None:
        return None
    try:
        return key.decode()
    except UnicodeDecodeError:
        return None
