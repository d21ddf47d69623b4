"""Commits wait for every table write the producer buffer took (stream/acks.py), the
accounts agent's too."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from stream.acks import Acknowledgements, DeliveryFailedError
from stream.app import read_records_at_least_once


class Buffer:
    """Like Faust's producer buffer: a sender takes messages off one at a time and
    settles each later (delivery), so the buffer can look empty while one is in flight."""

    def __init__(self) -> None:
        self.taken: list[asyncio.Future[Any]] = []

    def put(self, future: asyncio.Future[Any]) -> None:
        self.taken.append(future)


def followed(limit_s: float = 5.0) -> tuple[Buffer, Acknowledgements]:
    buffer, acks = Buffer(), Acknowledgements(limit_s)
    acks.follow(buffer)
    acks.follow(buffer)  # a restarted reader follows again: still one follower
    return buffer, acks


async def test_waits_until_every_message_put_is_acknowledged() -> None:
    buffer, acks = followed()
    loop = asyncio.get_running_loop()
    futures = [loop.create_future() for _ in range(3)]
    for future in futures:
        buffer.put(future)
    assert buffer.taken == futures and acks.pending == 3
    waiting = asyncio.create_task(acks.wait())
    for future in futures[:2]:
        future.set_result("ok")
    await asyncio.sleep(0.01)
    assert not waiting.done()  # one still on its way: no commit yet
    futures[2].set_result("ok")
    await asyncio.wait_for(waiting, 1)
    assert acks.pending == 0


async def test_after_a_lost_write_no_commit_goes_through_ever() -> None:
    buffer, acks = followed()
    loop = asyncio.get_running_loop()
    lost, fine = loop.create_future(), loop.create_future()
    buffer.put(lost)
    buffer.put(fine)
    lost.set_exception(OSError("broker gone"))
    fine.set_result("ok")
    with pytest.raises(DeliveryFailedError, match="broker gone"):
        await acks.wait()
    later = loop.create_future()
    buffer.put(later)
    later.set_result("ok")
    # The shutdown's or the revocation's commit must not commit the lost batch either.
    with pytest.raises(DeliveryFailedError, match="broker gone"):
        await acks.wait()


async def test_a_write_that_never_settles_stops_the_commit_in_time() -> None:
    buffer, acks = followed(limit_s=0.05)
    buffer.put(asyncio.get_running_loop().create_future())  # its sender died
    with pytest.raises(DeliveryFailedError, match="unacknowledged"):
        await asyncio.wait_for(acks.wait(), 1)


async def test_nothing_put_means_nothing_to_wait_for() -> None:
    _, acks = followed()
    await asyncio.wait_for(acks.wait(), 1)


def test_the_threaded_producer_is_refused() -> None:
    with pytest.raises(ValueError, match="producer_threaded"):
        Acknowledgements().follow(Buffer(), threaded=True)


async def test_a_dead_letter_sent_past_the_buffer_holds_commits_too() -> None:
    """Dead letters go straight to the producer: a commit past a lost one would lose
    the event it stood for, so each is tracked like a table write."""
    _, acks = followed()
    loop = asyncio.get_running_loop()
    letter = loop.create_future()
    acks.track(letter)
    waiting = asyncio.create_task(acks.wait())
    await asyncio.sleep(0.01)
    assert not waiting.done() and acks.pending == 1
    letter.set_exception(OSError("dead-letter topic refused it"))
    with pytest.raises(DeliveryFailedError, match="refused it"):
        await waiting


class RecordStream:
    """Like the Faust stream the accounts agent gets: batches from ``noack_take``, and
    nothing committed but what ``ack`` was called for."""

    def __init__(self, batches: list[list[str]]) -> None:
        self.batches = batches
        self.acked: list[str] = []

    async def noack_take(self, max_: int, within: float) -> Any:
        for batch in self.batches:
            yield batch

    async def ack(self, event: str) -> bool:
        self.acked.append(event)
        return True


async def test_account_records_are_acknowledged_only_once_their_writes_are() -> None:
    buffer, acks = followed()
    stream = RecordStream([["r1", "r2"]])
    write = asyncio.get_running_loop().create_future()

    async def take(batch: Any) -> None:
        buffer.put(write)  # the table write's changelog message

    reading = asyncio.create_task(read_records_at_least_once(stream, take, acks))
    await asyncio.sleep(0.01)
    assert stream.acked == []  # taken, but the changelog does not have it yet
    write.set_result("ok")
    await asyncio.wait_for(reading, 1)
    assert stream.acked == ["r1", "r2"]


async def test_account_records_whose_taking_was_cut_short_are_not_acknowledged() -> None:
    _, acks = followed()
    stream = RecordStream([["r1"], ["r2"]])
    started = asyncio.Event()

    async def take(batch: Any) -> None:
        if batch == ["r2"]:
            started.set()
            await asyncio.Event().wait()  # the worker stops while this batch is taken

    reading = asyncio.create_task(read_records_at_least_once(stream, take, acks))
    await asyncio.wait_for(started.wait(), 1)
    reading.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reading
    assert stream.acked == ["r1"]  # r2 is read again by the next owner


async def test_account_records_whose_write_was_lost_are_not_acknowledged() -> None:
    buffer, acks = followed()
    stream = RecordStream([["r1"]])

    async def take(batch: Any) -> None:
        lost = asyncio.get_running_loop().create_future()
        buffer.put(lost)
        lost.set_exception(OSError("broker gone"))

    with pytest.raises(DeliveryFailedError, match="broker gone"):
        await read_records_at_least_once(stream, take, acks)
    assert stream.acked == []
