"""A new account's first events wait for the account records published before them."""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Mapping
from datetime import UTC, datetime
from typing import Any

import pytest

from stream import codec
from stream.clock import ManualClock
from stream.deadletter import DeadLetter, SourcePosition
from stream.ingest import BatchAbandonedError, RawMessage
from stream.pipeline import IngestPipeline
from stream.records_first import RecordsFirst

NOW = datetime(2026, 11, 21, tzinfo=UTC)


class Offsets:
    """The accounts topic as a dict: where each partition ends, and what the accounts
    agent's group committed."""

    def __init__(self, ends: Mapping[int, int], committed: Mapping[int, int] | None = None):
        self.end = dict(ends)
        self.commit = dict(committed or {})
        self.asked: list[str] = []

    async def ends(self, partitions: Collection[int]) -> Mapping[int, int]:
        self.asked.append("ends")
        return {p: self.end[p] for p in partitions}

    async def committed(self, partitions: Collection[int]) -> Mapping[int, int]:
        self.asked.append("committed")
        return {p: self.commit[p] for p in partitions if p in self.commit}


class Clock:
    """A monotonic clock moved on by the waits themselves."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps = 0

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps += 1
        self.now += seconds
        await asyncio.sleep(0)


WAITS: list[bool] = []
"""What the last barrier told its ``on_wait`` (the worker counts it: timed out or not)."""


def barrier(offsets: Offsets, clock: Clock, timeout_s: float = 1.0) -> RecordsFirst:
    WAITS.clear()
    return RecordsFirst(
        offsets,
        timeout_s=timeout_s,
        poll_s=0.1,
        monotonic=clock.monotonic,
        sleep=clock.sleep,
        on_wait=WAITS.append,
    )


def test_nothing_is_awaited_once_every_record_is_read() -> None:
    clock = Clock()
    first = barrier(Offsets({0: 5, 1: 0}), clock)
    first.record_read(0, 4)
    assert asyncio.run(first.wait({0, 1})) == set()
    assert clock.sleeps == 0 and WAITS == []  # nothing to wait for: not counted


def test_records_committed_before_the_worker_started_count_as_read() -> None:
    offsets = Offsets({0: 5, 1: 3}, committed={0: 5, 1: 2})
    clock = Clock()
    first = barrier(offsets, clock)
    first.record_read(1, 2)  # the one record since the commit
    assert asyncio.run(first.wait({0, 1})) == set()
    assert offsets.asked == ["ends", "committed"] and clock.sleeps == 0


def test_the_wait_ends_when_the_agent_reads_the_last_record() -> None:
    clock = Clock()
    first = barrier(Offsets({0: 3}, committed={0: 1}), clock)

    async def run() -> set[int]:
        waiting = asyncio.ensure_future(first.wait({0}))
        for _ in range(3):
            await asyncio.sleep(0)
        assert not waiting.done()
        first.record_read(0, 1)
        for _ in range(3):
            await asyncio.sleep(0)
        assert not waiting.done()  # offset 2 is still unread
        first.record_read(0, 2)
        return await waiting

    assert asyncio.run(run()) == set()
    assert first.timeouts == 0 and 0 < clock.sleeps < 10 and WAITS == [False]


def test_a_partition_still_behind_after_the_timeout_is_named_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    first = barrier(Offsets({0: 3, 1: 9}, committed={0: 3}), clock, timeout_s=1.0)
    assert asyncio.run(first.wait({0, 1})) == {1}
    assert first.timeouts == 1 and clock.now >= 1.0 and WAITS == [True]
    assert "partitions [1] of the accounts topic still unread" in caplog.text


def test_a_worker_stopping_or_rebalancing_gives_the_batch_up_at_once() -> None:
    """The accounts agent is held then: waiting would only hold the stop up for 10 s
    (found by a review) and end in UTC days. Nothing is folded: the batch is read again."""
    stopping = False
    clock = Clock()
    first = RecordsFirst(
        Offsets({0: 3}, committed={0: 1}),
        timeout_s=10.0,
        poll_s=0.1,
        monotonic=clock.monotonic,
        sleep=clock.sleep,
        abandon=lambda: stopping,
    )

    async def run() -> None:
        nonlocal stopping
        waiting = asyncio.ensure_future(first.wait({0}))
        for _ in range(3):
            await asyncio.sleep(0)
        stopping = True
        await waiting

    with pytest.raises(BatchAbandonedError, match=r"partitions \[0\] unread"):
        asyncio.run(run())
    assert clock.now < 1.0 and first.timeouts == 0


def test_only_the_first_events_of_an_account_without_a_record_wait() -> None:
    """Accounts with a state, or a record, start nothing: no wait; a new one without a
    record waits on its own partition, once (its state is then written)."""
    waited: list[set[int]] = []

    async def wait(partitions: Collection[int]) -> None:
        waited.append(set(partitions))

    letters: list[DeadLetter] = []

    async def dead_letter(letter: DeadLetter) -> None:
        letters.append(letter)

    table: dict[str, Any] = {}
    deleted: dict[str, Any] = {}
    accounts = {"known": codec.dumps({"account_id": "known", "name": "K", "licenses": 1})}
    pipeline = IngestPipeline(
        table, dead_letter, ManualClock(NOW), accounts=accounts, records_first=wait, deleted=deleted
    )

    def login(account: str, partition: int, offset: int) -> RawMessage:
        event = {
            "schema": 1,
            "event_id": f"{account}-{offset}",
            "type": "login",
            "account_id": account,
            "user_id": "u",
            "occurred_at": "2026-11-20T10:00:00Z",
        }
        return RawMessage(
            codec.dumps(event), SourcePosition("events", partition, offset, account.encode())
        )

    asyncio.run(pipeline.process([login("known", 0, 1), login("new", 3, 2)]))
    assert waited == [{3}]
    # A deleted account's events are refused, not waited for (found by a review: every
    # batch with one waited up to a second for the accounts agent).
    deleted["gone"] = codec.dumps({"deleted_at": NOW.timestamp()})
    asyncio.run(pipeline.process([login("gone", 2, 5)]))
    assert waited == [{3}] and [letter.reason for letter in letters] == ["account_deleted"]
    asyncio.run(pipeline.process([login("known", 0, 3), login("new", 3, 4)]))
    assert waited == [{3}]  # "new" has its state now
    assert set(table) == {"known", "new"} and len(letters) == 1
