"""Alert events on their way to the alerts topic, kept in the account's alert book
until Kafka has acknowledged them.

The book (a changelog-backed table entry) says an alert fires; the alert event is how
the receivers hear of it. Written apart, a delivery that failed (the broker refused
the event, or gave no answer in time) or a worker that stopped between the two would
leave the alert firing in the book and unheard of for good: nothing judges it again.
So the events judged with a book are kept *in* it (``AccountAlerts.unsent``), in the
same table write as the states that caused them, and taken out only once Kafka has
acknowledged them. What is left there is sent again the next time the account is
judged (by ingest or by a sweep), on this worker or on the one that takes its
partition over: at-least-once, and the notifier queues an event it reads twice once
(docs/delivery.md).

**Order.** One :meth:`AlertOutbox.flush` runs at a time, and it sends what each
account's book holds at that moment, oldest first. An event is sent only once every
earlier event of the same alert (fingerprint) in the flush is acknowledged, and an
event that was not stops its account's flush there. A book keeps everything from the
first event not acknowledged, so whatever failed is sent again before anything after
it: on the alerts topic, an alert's events come in the order judged, at worst with
one sent twice.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

from alerts.sweep import AccountAlerts
from stream import codec

__all__ = ["ACK_LIMIT_S", "AlertOutbox", "Flushed", "Send"]

log = logging.getLogger(__name__)

Send = Callable[[bytes, bytes], Awaitable["Awaitable[Any] | None"]]
"""Hands one alert event (key, value) to the producer; returns what settles once Kafka
has acknowledged it (an asyncio future), or ``None`` if it already has."""

ACK_LIMIT_S = 60.0
"""Longest a flush waits for an acknowledgement; an event not acknowledged by then is
treated as not delivered (kept, and sent again)."""

Entry = tuple[str, str]
"""An alert event as a book keeps it: (key, value)."""


@dataclass
class Flushed:
    """What one flush did."""

    published: int = 0
    """Events Kafka acknowledged."""
    failed: int = 0
    """Events not known to be published: kept in their books, sent again later."""


class AlertOutbox:
    """Publishes the alert events the books keep, and settles them out of the books."""

    def __init__(
        self,
        books: MutableMapping[str, Any],
        send: Send,
        on_failure: Callable[[BaseException], None] = lambda error: None,
        *,
        ack_limit_s: float = ACK_LIMIT_S,
    ) -> None:
        self._books = books
        self._send = send
        self._on_failure = on_failure
        self._ack_limit_s = ack_limit_s
        self._due: dict[str, None] = {}
        """Accounts whose books hold events to publish, in the order they were queued."""
        self._flushing = asyncio.Lock()
        self._failing = False
        """Whether the last flush left events behind: logged once per outage."""

    def queue(
        self, account_id: str, book: AccountAlerts, events: list[tuple[bytes, bytes]]
    ) -> None:
        """Keep events judged with ``book`` in it, to be published by the next flush (the
        caller writes the book next, before any await)."""
        book.keep_unsent((key.decode(), value.decode()) for key, value in events)
        self.retry(account_id, book)

    def retry(self, account_id: str, book: AccountAlerts) -> int:
        """Have the next flush publish what ``book`` keeps, such as events an earlier
        publish left (it failed, or the worker stopped first). Returns how many."""
        if book.unsent:
            self._due[account_id] = None
        return len(book.unsent)

    @property
    def due(self) -> int:
        """Accounts with events to publish at the next flush."""
        return len(self._due)

    async def flush(self) -> Flushed:
        """Publish what the books of the accounts due hold (after any flush under way),
        and take what Kafka acknowledged out of them. A failure is reported to
        ``on_failure``; the events it leaves stay in their books."""
        async with self._flushing:
            due, self._due = list(self._due), {}
            done = Flushed()
            for account_id in due:
                stored = self._books.get(account_id)
                book = AccountAlerts.from_dict(codec.loads(stored)) if stored else None
                if book is None or not book.unsent:
                    continue  # deleted, or settled by an earlier flush
                entries = list(book.unsent)
                published = await self._publish(entries)
                done.published += published
                done.failed += len(entries) - published
                if published:
                    self._settle(account_id, entries[:published])
            if self._failing and done.published and not done.failed:
                log.info("alert events are published again")
                self._failing = False
            return done

    async def _publish(self, entries: list[Entry]) -> int:
        """Send one account's events in order; returns how many from the first were
        acknowledged. An event waits for the acknowledgement of the one before it of the
        same alert, so it can never land ahead of it."""
        acks: list[Any] = []
        last_of: dict[str, int] = {}
        acknowledged = _Acknowledged(self._ack_limit_s, self._failed)
        for key, value in entries:
            earlier = last_of.get(key)
            if earlier is not None and not await acknowledged(acks[earlier], key):
                break
            try:
                ack = await self._send(key.encode(), value.encode())
            except Exception as error:
                self._failed(error, key)
                break
            last_of[key] = len(acks)
            acks.append(ack)
        published = 0
        for ack, (key, _) in zip(acks, entries, strict=False):
            if not await acknowledged(ack, key):
                break
            published += 1
        return published

    def _settle(self, account_id: str, published: list[Entry]) -> None:
        """Take published events out of the account's book (read now: it may have
        changed while they were on their way)."""
        stored = self._books.get(account_id)
        if not stored:
            return  # deleted meanwhile
        book = AccountAlerts.from_dict(codec.loads(stored))
        if book.settle(published):
            self._books[account_id] = codec.dumps(book.to_dict())

    def _failed(self, error: BaseException, key: str) -> None:
        """Report a failed send and log it (once per outage)."""
        self._on_failure(error)
        log.log(
            logging.DEBUG if self._failing else logging.WARNING,
            "alert event %s not published (%s: %s); kept in its account's book with "
            "what follows it, sent again the next time the account is judged",
            key,
            type(error).__name__,
            error,
        )
        self._failing = True


class _Acknowledged:
    """Waits for delivery futures (up to ``limit_s``); reports each failure once."""

    def __init__(self, limit_s: float, report: Callable[[BaseException, str], None]) -> None:
        self._limit_s = limit_s
        self._report = report
        self._reported: set[int] = set()

    async def __call__(self, ack: Any, key: str) -> bool:
        """Whether Kafka acknowledged the event."""
        if ack is None:
            return True
        if not ack.done():
            await asyncio.wait([ack], timeout=self._limit_s)
        error = _failure(ack, self._limit_s)
        if error is not None and id(ack) not in self._reported:
            self._reported.add(id(ack))
            self._report(error, key)
        return error is None


def _failure(ack: Any, limit_s: float) -> BaseException | None:
    """Why a delivery future did not succeed, or ``None`` if it did."""
    if not ack.done():
        return TimeoutError(f"not acknowledged within {limit_s:.0f} s")
    if ack.cancelled():
        return asyncio.CancelledError("the send was cancelled")
    error = ack.exception()
    return error if isinstance(error, BaseException) else None
