"""Waiting until Kafka has acknowledged what a batch wrote, before its offsets commit.

Table writes (state and alert books) reach Kafka through Faust's producer buffer;
dead letters are sent past it, and followed one by one (:meth:`Acknowledgements.track`).
``app.producer.flush()`` is not enough to know they arrived: the buffer's flush gives
up after 0.1 s without a send, and a message its sender has taken off the buffer but
not yet handed to aiokafka is in neither the buffer nor aiokafka's flush. Committing
after such a flush could commit offsets whose state never reached the changelog, and a
crash then would lose those events. :class:`Acknowledgements` follows every message
put into the buffer until its delivery future settles, so a commit can wait for all of
them. Once one failed (or did not settle in time) it refuses every later commit: the
worker stops without committing, and the events are read again (at-least-once).
"""

from __future__ import annotations

import asyncio
from typing import Any

__all__ = ["WAIT_LIMIT_S", "Acknowledgements", "DeliveryFailedError"]

WAIT_LIMIT_S = 60.0
"""Longest a commit waits for acknowledgements (aiokafka gives up on a request well
before: a message still unsettled then will not be)."""


class DeliveryFailedError(Exception):
    """A message the producer buffer took was not delivered (or not known to be)."""


class Acknowledgements:
    """The producer buffer's messages not yet acknowledged, and whether any failed."""

    def __init__(self, limit_s: float = WAIT_LIMIT_S) -> None:
        self._pending: set[asyncio.Future[Any]] = set()
        self._failure: str | None = None
        self._limit_s = limit_s

    def follow(self, buffer: Any, *, threaded: bool = False) -> None:
        """Follow every message put into ``buffer`` (Faust's ``ProducerBuffer``) from now
        on; following twice is following once."""
        if threaded:  # Faust's threaded producer settles copies of the futures it is given
            raise ValueError("producer_threaded is not supported: commits could not wait")
        if getattr(buffer.put, "followed_by", None) is self:
            return
        put = buffer.put

        def put_followed(future: asyncio.Future[Any]) -> None:
            self.track(future)
            put(future)

        put_followed.followed_by = self  # type: ignore[attr-defined]
        buffer.put = put_followed

    def track(self, future: asyncio.Future[Any]) -> None:
        """Follow one more delivery future: a message sent past the buffer (a dead
        letter), whose loss must stop commits as a table write's does."""
        self._pending.add(future)
        future.add_done_callback(self._settled)

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def wait(self) -> None:
        """Return once every message put so far is acknowledged. Raise
        :class:`DeliveryFailedError` if one failed or did not settle within the limit,
        now and on every later call: nothing may be committed after a lost write."""
        if self._pending and self._failure is None:
            _, unsettled = await asyncio.wait(list(self._pending), timeout=self._limit_s)
            if unsettled:
                self._failure = (
                    f"{len(unsettled)} message(s) unacknowledged after {self._limit_s:.0f} s"
                )
        if self._failure is not None:
            raise DeliveryFailedError(self._failure)

    def _settled(self, future: asyncio.Future[Any]) -> None:
        self._pending.discard(future)
        error = None if future.cancelled() else future.exception()  # retrieved: no warning
        if self._failure is not None:
            return  # the first failure is the one reported
        if future.cancelled():
            self._failure = "a message's send was cancelled"
        elif error is not None:
            self._failure = f"a message was not delivered: {error!r}"
