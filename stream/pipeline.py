"""The ingest pipeline for one batch: triage, fold per account, write state once.

Kept apart from Faust so the agent, the benchmark, replay and tests all drive the same
code; tables are any ``MutableMapping`` (a Faust table in the worker, a dict in tests).

Each account's decoded state is kept between batches next to the bytes it was written
as, and used again only while the table still holds exactly those bytes: decoding an
account's state for every batch cost more than folding its events, and the check keeps
the cache right whoever else writes the table (recovery, a rebalance, a test).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Collection, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol, cast

from stream import codec
from stream.accounts import Account, decode_account
from stream.clock import Clock
from stream.deadletter import DeadLetter, SourcePosition
from stream.engagement import EngagementState, FoldOutcome, StatePolicy, fold_records
from stream.events import AccountRecords, EventLimits, Record, Rejection
from stream.ingest import Batch, ConsumerRecord, RawMessage, triage_records

__all__ = [
    "AccountsPipeline",
    "IngestPipeline",
    "IngestTotals",
    "OnDeleted",
    "raw_message",
]

log = logging.getLogger(__name__)

SendDeadLetter = Callable[[DeadLetter], Awaitable[None]]
RecordsFirstWait = Callable[[Collection[int]], Awaitable[object]]
"""Waits until the account records published to these partitions have been read."""

ACCOUNT_DELETED = "account_deleted"
"""The dead-letter reason of events for an account deleted since (a tombstone)."""
STATE_TOO_LARGE = "state_too_large"
"""The dead-letter reason of events whose fold would outgrow ``max_state_bytes``."""
RECORD_FRAMING = 4096
"""Bytes of ``max_state_bytes`` kept for a state record's key (an account id, at most
512 bytes) and Kafka's record and batch headers (under 100 bytes)."""


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


class Evaluator(Protocol):
    """Judges the rules at the ticks an account's events cross (stream/evaluator.py)."""

    def fold(
        self,
        account_id: str,
        state: EngagementState,
        records: Sequence[Record],
        fold: Callable[[int, int], None],
    ) -> None: ...

    async def flush(self) -> object:
        """Publish the alert events judged so far."""

    def let_go(self, account_id: str) -> None:
        """The pipeline no longer holds this account's state object decoded."""

    def forget_account(self, account_id: str) -> None:
        """The account was deleted: whatever is kept about it goes."""


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
        cached_states: int = 10_000,
        evaluator: Evaluator | None = None,
        max_state_bytes: int | None = None,
        deleted: Mapping[str, Any] | None = None,
        records_first: RecordsFirstWait | None = None,
    ) -> None:
        self._table = table
        self._records_first = records_first
        """Waits for the account records published to some partitions to be read
        (stream/records_first.py): a new account's state takes its record's time zone."""
        self._deleted = deleted if deleted is not None else {}
        """account_id -> when it was deleted: its events are refused until a record for
        it arrives again (AccountsPipeline keeps it)."""
        self._retiring: set[str] = set()
        """Accounts being deleted (:meth:`retire`): their events are refused already."""
        self._send_dead_letter = send_dead_letter
        self._clock = clock
        self._limits = limits or EventLimits()
        self._policy = policy or StatePolicy()
        self._accounts = accounts if accounts is not None else {}
        self._states: dict[str, tuple[bytes, EngagementState]] = {}
        """account_id -> (the bytes in the table, that state decoded), least recent first."""
        self._cached_states = cached_states
        self._evaluator = evaluator
        self._max_state_bytes = max_state_bytes
        self._too_large: Counter[str] = Counter()
        """account_id -> batches refused since the worker started (for sparse logging)."""
        self.totals = IngestTotals()

    async def process(self, messages: Batch) -> list[str]:
        """Fold one batch; returns the ids of the accounts whose state changed."""
        started = time.perf_counter()
        now = self._clock.now()
        values, keys, position = _columns(messages)
        outcome = triage_records(values, keys, position, now, self._limits)
        dead = outcome.dead
        rejected = len(dead)
        counted = 0
        touched: list[str] = []
        if self._records_first is not None:
            new = self._unrecorded_new_accounts(outcome.accepted)
            if new:
                await self._records_first({position(group.indexes[0]).partition for group in new})
        for account_id, group in outcome.accepted.items():
            # Being removed, or deleted: a state with a marker is a removal a worker
            # stopped in, or one waiting for Kafka to take its alert events.
            if account_id in self._retiring or account_id in self._deleted:
                detail = _deleted_detail(account_id, self._deleted.get(account_id))
                dead.extend(
                    DeadLetter(ACCOUNT_DELETED, detail, values[i] or b"", position(i), now)
                    for i in group.indexes
                )
                continue
            state, stored = self._load(account_id)
            records, indexes = _not_taken(group, position, state.read_through)
            if not records:  # all read again after a crash: taken (and counted) before
                self._remember(account_id, stored, state)
                continue
            folded = self._fold(account_id, state, records)
            if folded.counted:
                last = position(indexes[-1])  # a partition's batch is in offset order
                state.read_through = (last.partition, last.offset)
                encoded = state.to_json()
                limit = self._max_state_bytes
                if limit is not None and len(encoded) > limit - RECORD_FRAMING:
                    detail = self._refuse(account_id, len(encoded))
                    dead.extend(
                        DeadLetter(STATE_TOO_LARGE, detail, values[i] or b"", position(i), now)
                        for i in indexes
                    )
                    continue
                # One assignment per account per batch: each one is a changelog record.
                stored = encoded
                self._table[account_id] = stored
                touched.append(account_id)
            counted += folded.counted
            newest = self.totals.newest_event_at
            if state.newest_at is not None and (newest is None or state.newest_at > newest):
                self.totals.newest_event_at = state.newest_at
            for i in folded.late:
                index = indexes[i]
                at = records[i][2]
                source = position(index)
                dead.append(_late_letter(at, values[index], source, state, self._policy, now=now))
            self._remember(account_id, stored, state)
        for letter in dead:
            await self._send_dead_letter(letter)
        if self._evaluator is not None:
            await self._evaluator.flush()
        self._count(outcome.counts_by_type(), counted, len(dead) - rejected, dead)
        self.totals.messages += len(messages)
        self.totals.busy_s += time.perf_counter() - started
        return touched

    def _unrecorded_new_accounts(
        self, accepted: Mapping[str, AccountRecords]
    ) -> list[AccountRecords]:
        """The batch's accounts that have neither a state (their first events) nor a
        record yet: their state is about to take its time zone for good."""
        return [
            group
            for account_id, group in accepted.items()
            if account_id not in self._states
            and account_id not in self._retiring  # refused below: no state to start
            and account_id not in self._deleted
            and not self._table.get(account_id)
            and account_id not in self._accounts
        ]

    def _fold(self, account_id: str, state: EngagementState, records: list[Record]) -> FoldOutcome:
        """Fold the account's records; with an evaluator, judge the ticks they cross on
        the way (stream/evaluator.py)."""
        if self._evaluator is None:
            return fold_records(state, records, self._policy)
        total = FoldOutcome()

        def fold(start: int, end: int) -> None:
            part = fold_records(state, records[start:end], self._policy)
            total.counted += part.counted
            total.duplicates += part.duplicates
            total.late.extend(start + i for i in part.late)

        self._evaluator.fold(account_id, state, records, fold)
        return total

    def _refuse(self, account_id: str, size: int) -> str:
        """The batch would grow the account's state past what the changelog takes: a
        write Kafka refuses stops the worker, on the write and again after every
        restart. Instead the state stays as the table holds it (the folded object is
        dropped, and the evaluator's results on it), and every event of the batch for
        this account goes to the dead letters, to be published again once the limit is
        raised (docs/state.md); the other accounts go on. Returns the letters' detail."""
        self._let_go(account_id)
        self._too_large[account_id] += 1
        refused = self._too_large[account_id]
        detail = (
            f"account {account_id!r}: its state would be {size:,} bytes with this batch, "
            f"past max_state_bytes ({self._max_state_bytes:,} bytes, {RECORD_FRAMING:,} of "
            f"them kept for the record's key and framing); the state stays as it was: raise "
            f"max_state_bytes (docs/state.md) and publish this event again"
        )
        if refused == 1 or refused % 100 == 0:
            log.warning("%s (%d batches refused)", detail, refused)
        return detail

    def current_state(self, account_id: str, *, decode: bool = True) -> EngagementState | None:
        """The account's state as the table holds it now (``None``: no state), as the
        very object the next batch folds into when this pipeline holds it decoded: the
        sweep judges what ingest has folded, with nothing decoded twice. Without
        ``decode``, only a state held decoded is returned. Leaves the cache's order."""
        stored = self._table.get(account_id)
        if not stored:
            return None
        cached = self._states.get(account_id)
        if cached is not None and (cached[0] is stored or cached[0] == stored):
            return cached[1]
        return EngagementState.from_json(stored) if decode else None

    def retire(self, account_ids: Collection[str]) -> None:
        """These accounts are being deleted: from now on their events are refused (as
        they will be once their state is gone), not folded into a state about to go."""
        self._retiring.update(account_ids)

    def forget(self, account_id: str) -> bool:
        """The account was deleted: its state leaves the table (a changelog tombstone)
        and the cache. Returns whether there was one."""
        self._retiring.discard(account_id)
        self._states.pop(account_id, None)
        self._too_large.pop(account_id, None)
        if self._evaluator is not None:
            self._evaluator.forget_account(account_id)
        return self._table.pop(account_id, None) is not None

    def _load(self, account_id: str) -> tuple[EngagementState, bytes | None]:
        """The account's state and the bytes it came from (``None`` for a new one)."""
        stored = self._table.get(account_id)
        cached = self._states.pop(account_id, None)  # back only once written or unchanged
        if stored and cached is not None and (cached[0] is stored or cached[0] == stored):
            return cached[1], stored
        if cached is not None:  # written by someone else meanwhile: decoded afresh
            self._let_go(account_id)
        if stored:
            return EngagementState.from_json(stored), stored
        account = self._accounts.get(account_id)
        zone = Account.from_json(account).timezone if account else "UTC"
        return EngagementState(account_id, timezone=zone), None

    def _remember(self, account_id: str, stored: bytes | None, state: EngagementState) -> None:
        # A new state never written is not kept: the next batch must see the account's
        # time zone as it is then, as before the cache.
        if not stored or self._cached_states <= 0:
            return
        states = self._states
        if len(states) >= self._cached_states:
            oldest = next(iter(states))
            del states[oldest]
            self._let_go(oldest)
        states[account_id] = (stored, state)

    def _let_go(self, account_id: str) -> None:
        """The evaluator's shared results hold the state they were computed on: they go
        with it, so that no more than ``cached_states`` states stay decoded."""
        if self._evaluator is not None:
            self._evaluator.let_go(account_id)

    def _count(
        self, valid: Counter[str], counted: int, valid_dead: int, dead: list[DeadLetter]
    ) -> None:
        """``valid_dead``: valid events sent to the dead letters (late, or refused with
        their account's batch); a valid event is counted, a duplicate, or one of them."""
        totals = self.totals
        totals.batches += 1
        totals.valid_by_type.update(valid)
        totals.duplicates += valid.total() - counted - valid_dead
        totals.dead_by_reason.update(letter.reason for letter in dead)


def _columns(
    messages: Batch,
) -> tuple[list[bytes | None], list[bytes | None], Callable[[int], SourcePosition]]:
    """Values and keys as lists, and where message ``i`` came from (built only if asked)."""
    if messages and isinstance(messages[0], RawMessage):
        raw = cast(Sequence[RawMessage], messages)
        return [m.value for m in raw], [m.position.key for m in raw], lambda i: raw[i].position
    records = cast(Sequence[ConsumerRecord], messages)

    def position(i: int) -> SourcePosition:
        r = records[i]
        return SourcePosition(r.topic, r.partition, r.offset, r.key, r.timestamp)

    return [r.value for r in records], [r.key for r in records], position


def recreated_marker(marker: Any) -> bytes:
    """``marker``, saying a record for the account was published again while its removal
    was still waiting: the removal drops the marker once it is done."""
    return codec.dumps({**codec.loads(marker), "recreated": True})


def is_recreated(marker: Any) -> bool:
    return bool(marker) and bool(codec.loads(marker).get("recreated"))


def _deleted_detail(account_id: str, marker: Any) -> str:
    found = codec.loads(marker) if marker else {}
    deleted_at = found.get("deleted_at")
    when = datetime.fromtimestamp(deleted_at, UTC).isoformat() if deleted_at else "earlier"
    if found.get("recreated"):
        return (
            f"account {account_id!r} was deleted ({when}) and its record published again, "
            f"but its removal still waits for Kafka to take its alert events: republish "
            f"these once the worker logs it done"
        )
    return (
        f"account {account_id!r} was deleted ({when}): its events are refused until a "
        f"record for it is published again (then republish these)"
    )


def _not_taken(
    group: AccountRecords,
    position: Callable[[int], SourcePosition],
    taken: tuple[int, int] | None,
) -> tuple[list[Record], list[int]]:
    """The account's records (and their batch indexes) its state has not taken yet.

    After a crash the next reader starts at the last committed offset, which can be a
    whole commit interval behind what the state in the changelog had taken: during a
    catch-up, days of event time. Those events were counted; read again, an old one's
    id may have left the memory with the lateness window, and it was dead-lettered as
    ``late`` (found by a review: 3,061 after five kills). The state says up to which
    offset it has taken its partition (``read_through``), so they are passed over.
    """
    records, indexes = group.records, group.indexes
    if taken is None or not _taken_before(position(indexes[0]), taken):
        return records, indexes  # the usual case: one look per account and batch
    keep = [k for k, index in enumerate(indexes) if not _taken_before(position(index), taken)]
    return [records[k] for k in keep], [indexes[k] for k in keep]


def _taken_before(source: SourcePosition, taken: tuple[int, int]) -> bool:
    """Whether the message at ``source`` is one the state had taken (``read_through``)."""
    return source.partition == taken[0] and source.offset <= taken[1]


def _late_letter(
    at: float,
    value: bytes | None,
    source: SourcePosition,
    state: EngagementState,
    policy: StatePolicy,
    *,
    now: datetime,
) -> DeadLetter:
    occurred = datetime.fromtimestamp(at, UTC).isoformat()
    newest = datetime.fromtimestamp(state.newest_at or 0.0, UTC).isoformat()
    detail = (
        f"occurred_at {occurred} is more than "
        f"{policy.lateness_s:.0f} s before the account's newest event ({newest})"
    )
    return DeadLetter("late", detail, value or b"", source, now)


OnDeleted = Callable[[Mapping[str, bytes | None]], Awaitable[None]]
"""Told of the accounts a batch deleted, with the record each had (``None``: none)."""


async def _nothing_more(deleted: Mapping[str, bytes | None]) -> None:
    return None


class AccountsPipeline:
    """Keeps the accounts table in step with the compacted accounts topic.

    A tombstone leaves a deletion marker, then ``on_deleted`` hears of it (in the
    worker, the account's state and alerts go too: ``Sweeper.remove``), then the
    record is deleted."""

    def __init__(
        self,
        table: MutableMapping[str, Any],
        send_dead_letter: SendDeadLetter,
        clock: Clock,
        on_deleted: OnDeleted = _nothing_more,
        deleted: MutableMapping[str, Any] | None = None,
        *,
        removal_unfinished: Callable[[str], bool] = lambda account_id: False,
    ) -> None:
        self._table = table
        self._send_dead_letter = send_dead_letter
        self._clock = clock
        self._on_deleted = on_deleted
        self._deleted = deleted if deleted is not None else {}
        """account_id -> its deletion marker (``{"deleted_at": epoch s}``), until a record
        for it arrives again."""
        self._removal_unfinished = removal_unfinished
        """Whether the account's removal still waits (its state and alert book kept
        until Kafka takes their alert events): a record published again meanwhile
        must not bring the old state back to life."""

    async def process(self, messages: Sequence[RawMessage]) -> None:
        latest: dict[str, bytes | None] = {}
        tombstoned: set[str] = set()
        for message in messages:
            key = message.position.key
            account_id = _utf8(key)
            if account_id is None:
                await self._reject(
                    message, Rejection("key_mismatch", "account records need a UTF-8 key")
                )
            elif message.value is None:
                latest[account_id] = None  # a tombstone: the account is gone
                tombstoned.add(account_id)
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
        # A tombstone deletes even when a record for the account follows in the batch
        # (deleted, then created again): what was kept of it goes first.
        deleted = {account_id: self._table.get(account_id) for account_id in sorted(tombstoned)}
        if deleted:
            marker = codec.dumps({"deleted_at": self._clock.now().timestamp()})
            for account_id in deleted:
                # Before anything goes: once its state is gone, events that come for it
                # (a backlog read late) must not start it afresh.
                self._deleted[account_id] = marker
            # Told with the records still there: if that fails, the tombstones are read
            # again and the accounts closed again with the same records.
            await self._on_deleted(deleted)
        for account_id, value in latest.items():  # compacted: only the last one matters
            if value is None:
                self._table.pop(account_id, None)
                continue
            self._table[account_id] = value
            kept = self._deleted.get(account_id)
            if kept is None:
                continue
            if self._removal_unfinished(account_id):
                # Its removal finishes first (the sweep tries again), then it lives afresh.
                self._deleted[account_id] = recreated_marker(kept)
            else:
                self._deleted.pop(account_id, None)  # published (again): it lives

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
