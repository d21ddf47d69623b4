"""Alert events on their way to the alerts topic, kept in the account's alert book
until Kafka has acknowledged them.

The book (a changelog-backed table entry) says an alert fires; the alert event is how
the receivers hear of it. Written apart, a delivery that failed (the broker refused
the event, or gave no answer in time) or a worker that stopped between the two would
leave the alert firing in the book and unheard of for good: nothing judges it again.
So the events judged with a book are kept *in* it (``AccountAlerts.unsent``), in the
same table write as the states that caused them, and taken out only once Kafka has
acknowledged them. What is left there is sent again by the next sweep (or with the
account's next alert change), on this worker or on the one that takes its partition
over: at-least-once, and the notifier queues an event it reads twice once
(docs/delivery.md).

**Order.** One :meth:`AlertOutbox.flush` runs at a time, and it sends what each
account's book holds at that moment, oldest first. An event is sent only once every
earlier event of the same alert (fingerprint) in the flush is acknowledged, and an
event that was not stops its account's flush there. A book keeps everything from the
first event not acknowledged, so whatever failed is sent again before anything after
it: on the alerts topic, an alert's events come in the order judged, at worst with
some sent twice.
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
        owns: Callable[[str], bool] = lambda account_id: True,
    ) -> None:
        self._books = books
        self._send = send
        self._on_failure = on_failure
        self._ack_limit_s = ack_limit_s
        self._owns = owns
        """Whether this worker still owns the account (its partition is active here): a
        book handed over is the new owner's to publish and write."""
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
        """Publish what the books of the accounts due hold, and take what Kafka
        acknowledged out of them. A failure is reported to ``on_failure``; the events
        it leaves stay in their books. With nothing due this returns at once; an
        account marked due while a flush sends its events (its book still holds them)
        is flushed after that one, from its book as that one left it (a deletion
        relies on this).

        Every account's events are handed to the producer before any acknowledgement
        is awaited, and the acknowledgements share one deadline (``ack_limit_s``), so a
        flush costs one round trip, and a broker that does not answer holds it (and
        ingest, which flushes after each batch) for that long at most. An event whose
        alert had an earlier one in the flush goes in a later round, once that one is
        acknowledged."""
        if not self._due:
            return Flushed()
        async with self._flushing:
            due, self._due = self._due, {}
            try:
                return await self._publish_due(list(due))
            except BaseException:
                for account_id in due:  # cancelled (or a bug): what is left stays due
                    self._due.setdefault(account_id, None)
                raise

    async def _publish_due(self, due: list[str]) -> Flushed:
        runs = []
        for account_id in due:
            if not self._owns(account_id):
                continue  # handed over: the new owner sends what the book holds
            stored = self._books.get(account_id)
            book = AccountAlerts.from_dict(codec.loads(stored)) if stored else None
            if book is not None and book.unsent:  # else deleted, or settled already
                runs.append(_AccountRun(account_id, list(book.unsent)))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._ack_limit_s
        going = runs
        while going:
            for run in going:
                await run.send_ready(self._send, self._failed)
            unsettled = [ack for run in going for ack in run.unsettled()]
            if unsettled:
                await asyncio.wait(unsettled, timeout=max(0.0, deadline - loop.time()))
            for run in going:
                run.check(self._failed, self._ack_limit_s)
            going = [run for run in going if run.can_go_on()]
            if loop.time() >= deadline:
                break  # what was not sent counts as failed: it stays in its book
        done = Flushed()
        for run in runs:
            published = run.acknowledged()
            done.published += published
            done.failed += len(run.entries) - published
            if published:
                self._settle(run.account_id, run.entries[:published])
        if self._failing and done.published and not done.failed:
            log.info("alert events are published again")
            self._failing = False
        return done

    def _settle(self, account_id: str, published: list[Entry]) -> None:
        """Take published events out of the account's book (read now: it may have
        changed while they were on their way)."""
        stored = self._books.get(account_id)
        if not stored or not self._owns(account_id):
            return  # deleted, or handed over meanwhile (the new owner sends them again)
        book = AccountAlerts.from_dict(codec.loads(stored))
        if book.settle(published):
            self._books[account_id] = codec.dumps(book.to_dict())

    def _failed(self, error: BaseException, key: str) -> None:
        """Report a failed send and log it (once per outage)."""
        self._on_failure(error)
        log.log(
            logging.DEBUG if self._failing else logging.WARNING,
            "alert event %s not published (%s: %s); kept in its account's book with "
            "what follows it, sent again by the next sweep",
            key,
            type(error).__name__,
            error,
        )
        self._failing = True


class _AccountRun:
    """One account's events in one flush: what was handed over, and whether it stopped."""

    def __init__(self, account_id: str, entries: list[Entry]) -> None:
        self.account_id = account_id
        self.entries = entries
        self.acks: list[Any] = []
        """The delivery future of each event handed over so far (``None``: acknowledged)."""
        self.stopped = False
        """An event failed: nothing after it goes in this flush."""
        self._last_of: dict[str, int] = {}
        self._reported: set[int] = set()

    async def send_ready(self, send: Send, failed: Callable[[BaseException, str], None]) -> None:
        """Hand over the next events, up to one whose alert's previous event is not
        acknowledged yet."""
        while not self.stopped and len(self.acks) < len(self.entries):
            key, value = self.entries[len(self.acks)]
            earlier = self._last_of.get(key)
            if earlier is not None and not _succeeded(self.acks[earlier]):
                return  # next round (or stop, once check() finds it failed)
            try:
                ack = await send(key.encode(), value.encode())
            except Exception as error:
                failed(error, key)
                self.stopped = True
                return
            self._last_of[key] = len(self.acks)
            self.acks.append(ack)

    def unsettled(self) -> list[Any]:
        return [ack for ack in self.acks if ack is not None and not ack.done()]

    def check(self, failed: Callable[[BaseException, str], None], limit_s: float) -> None:
        """Stop at the first event that failed (or is past the deadline): report it once."""
        for index, ack in enumerate(self.acks):
            if ack is None or _succeeded(ack):
                continue
            if index not in self._reported:
                self._reported.add(index)
                failed(_failure(ack, limit_s) or RuntimeError("unknown"), self.entries[index][0])
            self.stopped = True
            return

    def can_go_on(self) -> bool:
        return not self.stopped and len(self.acks) < len(self.entries)

    def acknowledged(self) -> int:
        """How many events from the first were acknowledged."""
        count = 0
        for ack in self.acks:
            if ack is not None and not _succeeded(ack):
                break
            count += 1
        return count


def _succeeded(ack: Any) -> bool:
    return ack is None or (ack.done() and not ack.cancelled() and ack.exception() is None)


def _failure(ack: Any, limit_s: float) -> BaseException | None:
    """Why a delivery future did not succeed, or ``None`` if it did."""
    if not ack.done():
        return TimeoutError(f"not acknowledged within {limit_s:.0f} s")
    if ack.cancelled():
        return asyncio.CancelledError("the send was cancelled")
    error = ack.exception()
    return error if isinstance(error, BaseException) else None
