"""Waiting until Kafka has acknowledged what a batch wrote, before its offsets commit.

Table writes (state and alert books) reach Kafka through Faust's producer buffer.
``app.producer.flush()`` is not enough to know they arrived: the buffer's flush gives
up after 0.1 s without a send, and a message its sender has taken off the buffer but
not yet handed to aiokafka is in neither the buffer nor aiokafka's flush. Committing
after such a flush could commit offsets whose state never reached the changelog, and a
crash then would lose those events. :class:`Acknowledgements` follows every message
put into the buffer until its delivery future settles, so a commit can wait for all of
them, and refuses to go on if one failed (at-least-once: the events are read again).
"""

from __future__ import annotations

import asyncio
from typing import Any

__all__ = ["Acknowledgements", "DeliveryFailedError"]


class DeliveryFailedError(Exception):
    """A message the producer buffer took was not delivered."""


class Acknowledgements:
    """The producer buffer's messages not yet acknowledged, and any that failed."""

    def __init__(self) -> None:
        self._pending: set[asyncio.Future[Any]] = set()
        self._failed: list[BaseException] = []

    def follow(self, buffer: Any) -> None:
        """Follow every message put into ``buffer`` (Faust's ``ProducerBuffer``) from now on."""
        put = buffer.put

        def put_followed(future: asyncio.Future[Any]) -> None:
            self._pending.add(future)
            future.add_done_callback(self._settled)
            put(future)

        buffer.put = put_followed

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def wait(self) -> None:
        """Return once every message put so far is acknowledged; raise
        :class:`DeliveryFailedError` if any message put since the last call failed."""
        if self._pending:
            await asyncio.wait(list(self._pending))
        if self._failed:
            failed, self._failed = self._failed, []
            raise DeliveryFailedError(
                f"{len(failed)} message(s) not delivered, the first: {failed[0]!r}"
            ) from failed[0]

    def _settled(self, future: asyncio.Future[Any]) -> None:
        self._pending.discard(future)
        if not future.cancelled() and future.exception() is not None:
            self._failed.append(future.exception())  # type: ignore[arg-type]
        elif future.cancelled():
            self._failed.append(asyncio.CancelledError("the send was cancelled"))
