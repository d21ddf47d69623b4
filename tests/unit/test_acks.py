"""Commits wait for every table write the producer buffer took (stream/acks.py)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from stream.acks import Acknowledgements, DeliveryFailedError


class SlowBuffer:
    """Like Faust's producer buffer: a sender takes messages off one at a time and
    settles each later (delivery), so the buffer can look empty while one is in flight."""

    def __init__(self) -> None:
        self.taken: list[asyncio.Future[Any]] = []

    def put(self, future: asyncio.Future[Any]) -> None:
        self.taken.append(future)


async def test_waits_until_every_message_put_is_acknowledged() -> None:
    buffer = SlowBuffer()
    acks = Acknowledgements()
    acks.follow(buffer)
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


async def test_a_failed_delivery_stops_the_commit_once() -> None:
    buffer = SlowBuffer()
    acks = Acknowledgements()
    acks.follow(buffer)
    loop = asyncio.get_running_loop()
    lost, fine = loop.create_future(), loop.create_future()
    buffer.put(lost)
    buffer.put(fine)
    lost.set_exception(OSError("broker gone"))
    fine.set_result("ok")
    with pytest.raises(DeliveryFailedError, match="broker gone"):
        await acks.wait()
    await acks.wait()  # reported once; what came after is fine


async def test_nothing_put_means_nothing_to_wait_for() -> None:
    acks = Acknowledgements()
    acks.follow(SlowBuffer())
    await asyncio.wait_for(acks.wait(), 1)
