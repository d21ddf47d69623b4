"""Commits wait for every table write the producer buffer took (stream/acks.py)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from stream.acks import Acknowledgements, DeliveryFailedError


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
