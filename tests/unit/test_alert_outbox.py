"""The alert outbox (stream/alert_outbox.py): an alert event stays in its account's
book until Kafka has acknowledged it, is sent again when it was not, and never lands
ahead of an earlier event of its alert. Kafka's side is an asyncio future per event,
settled by the test as the producer would; the worker against a real broker is in
tests/integration/test_replay_equals_live.py."""

from __future__ import annotations

import asyncio
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from alerts.sweep import AccountAlerts
from stream import codec
from stream.alert_outbox import AlertOutbox

Event = tuple[bytes, bytes]


class Producer:
    """Hands out a delivery future per event. ``hold``: the futures wait for
    :meth:`acknowledge` (else they succeed at once); ``refuse``: that many next sends
    raise."""

    def __init__(self, *, hold: bool = True) -> None:
        self.sent: list[tuple[bytes, asyncio.Future[Any]]] = []
        self.hold = hold
        self.refuse = 0

    async def send(self, key: bytes, value: bytes) -> asyncio.Future[Any]:
        if self.refuse:
            self.refuse -= 1
            raise ConnectionError("no broker")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if not self.hold:
            future.set_result(None)
        self.sent.append((value, future))
        return future

    def acknowledge(self, *failed: bytes) -> None:
        """Settle every future not settled yet: those of ``failed`` values with an error."""
        for value, future in self.sent:
            if not future.done():
                if value in failed:
                    future.set_exception(RuntimeError("MESSAGE_TOO_LARGE"))
                else:
                    future.set_result(None)

    @property
    def values(self) -> list[bytes]:
        """Every event handed over, in order."""
        return [value for value, _ in self.sent]

    @property
    def published(self) -> list[bytes]:
        """The events Kafka took, in the order they landed."""
        return [
            value
            for value, future in self.sent
            if future.done() and not future.cancelled() and future.exception() is None
        ]

    async def in_flight(self) -> None:
        """Return once an event is handed over and waits for its acknowledgement."""
        while not any(not future.done() for _, future in self.sent):
            await asyncio.sleep(0)


def event(name: str) -> Event:
    """An alert event; its key is the alert (the part of ``name`` before a dash)."""
    return name.split("-", maxsplit=1)[0].encode(), codec.dumps({"id": name})


def book_of(books: dict[str, bytes], account_id: str = "acme") -> AccountAlerts:
    return AccountAlerts.from_dict(codec.loads(books[account_id]))


def judge(outbox: AlertOutbox, books: dict[str, bytes], *events: Event) -> None:
    """What the evaluator and the sweep do: queue with the book, then write it."""
    stored = books.get("acme")
    book = AccountAlerts.from_dict(codec.loads(stored) if stored else None)
    outbox.queue("acme", book, list(events))
    books["acme"] = codec.dumps(book.to_dict())


async def flush_under_way(
    *events: Event,
) -> tuple[dict[str, bytes], Producer, AlertOutbox, asyncio.Task[Any]]:
    """The account's ``events`` judged and a flush of them under way, waiting for Kafka."""
    books: dict[str, bytes] = {}
    producer = Producer()
    outbox = AlertOutbox(books, producer.send)
    judge(outbox, books, *events)
    flushing = asyncio.create_task(outbox.flush())
    await producer.in_flight()
    return books, producer, outbox, flushing


async def flush_acknowledged(outbox: AlertOutbox, producer: Producer, *failed: bytes) -> Any:
    """Flush, settling each event as it is handed over (``failed`` ones with an error)."""
    flushing = asyncio.create_task(outbox.flush())
    while not flushing.done():
        await asyncio.sleep(0)
        producer.acknowledge(*failed)
    return await flushing


async def test_an_event_leaves_the_book_once_kafka_acknowledged_it() -> None:
    books: dict[str, bytes] = {}
    producer = Producer()
    outbox = AlertOutbox(books, producer.send)
    judge(outbox, books, event("a-firing"))
    assert book_of(books).unsent == [("a", '{"id":"a-firing"}')]  # written with its book
    flushing = asyncio.create_task(outbox.flush())
    await producer.in_flight()
    assert book_of(books).unsent  # sent, not yet acknowledged: still kept
    producer.acknowledge()
    done = await flushing
    assert (done.published, done.failed) == (1, 0)
    assert "unsent" not in codec.loads(books["acme"])  # as a book with nothing on its way


async def test_what_kafka_refused_stays_with_what_follows_and_is_sent_again_in_order() -> None:
    books: dict[str, bytes] = {}
    producer = Producer()
    failures: list[BaseException] = []
    outbox = AlertOutbox(books, producer.send, failures.append)
    events = event("a-firing"), event("b-firing"), event("c-firing")
    judge(outbox, books, *events)
    first, second, third = (value for _, value in events)
    done = await flush_acknowledged(outbox, producer, second)
    assert (done.published, done.failed) == (1, 2) and len(failures) == 1
    # The first is settled; the second failed, so the third (published, but behind
    # it) is kept too, and both are sent again, in order.
    assert [v.encode() for _, v in book_of(books).unsent] == [second, third]
    assert outbox.retry("acme", book_of(books)) == 2
    done = await flush_acknowledged(outbox, producer)
    assert producer.values == [first, second, third, second, third]
    assert (done.published, done.failed) == (2, 0) and book_of(books).unsent == []


async def test_a_resolve_judged_while_its_firing_is_refused_never_lands_first() -> None:
    """The sweep's flush is waiting for the firing's acknowledgement when ingest judges
    the resolve; Kafka then refuses the firing. The resolve must not reach the topic
    alone (a receiver would page on the firing sent after it, and never hear the end)."""
    books: dict[str, bytes] = {}
    producer = Producer()
    outbox = AlertOutbox(books, producer.send)
    firing, resolved = event("a-firing"), event("a-resolved")
    judge(outbox, books, firing)
    sweep = asyncio.create_task(outbox.flush())
    await producer.in_flight()
    judge(outbox, books, resolved)  # ingest, meanwhile
    ingest = asyncio.create_task(outbox.flush())
    await asyncio.sleep(0)
    producer.hold = False  # what is sent from now on is taken at once
    producer.acknowledge(firing[1])
    await asyncio.gather(sweep, ingest)
    assert producer.published == [firing[1], resolved[1]] and book_of(books).unsent == []


async def test_an_alerts_next_event_waits_for_the_acknowledgement_of_the_one_before() -> None:
    _, producer, _, flushing = await flush_under_way(
        event("a-firing"), event("b-firing"), event("a-resolved")
    )
    await asyncio.sleep(0.01)
    # Another alert's event may go meanwhile; the same alert's resolve may not.
    assert producer.values == [event("a-firing")[1], event("b-firing")[1]]
    producer.acknowledge(event("a-firing")[1])
    done = await flushing
    assert (done.published, done.failed) == (0, 3)
    assert producer.values == [event("a-firing")[1], event("b-firing")[1]]


async def test_what_a_stopped_worker_left_goes_before_what_is_judged_next() -> None:
    """The book comes back from the changelog with a firing its worker never got
    acknowledged; ingest then judges the resolve before any sweep ran."""
    left = AccountAlerts()
    left.keep_unsent([("a", '{"id":"a-firing"}')])
    books = {"acme": codec.dumps(left.to_dict())}
    producer = Producer(hold=False)
    outbox = AlertOutbox(books, producer.send)  # the next worker: nothing in memory
    judge(outbox, books, event("a-resolved"))
    await outbox.flush()
    assert producer.published == [b'{"id":"a-firing"}', event("a-resolved")[1]]
    assert book_of(books).unsent == []


async def test_a_send_refused_stops_the_accounts_flush_so_nothing_overtakes_it() -> None:
    books: dict[str, bytes] = {}
    producer = Producer(hold=False)
    outbox = AlertOutbox(books, producer.send)
    judge(outbox, books, event("a-firing"), event("b-firing"))
    producer.refuse = 1  # the broker is back for the second: it must wait all the same
    done = await outbox.flush()
    assert (done.published, done.failed) == (0, 2) and producer.sent == []
    assert len(book_of(books).unsent) == 2
    assert outbox.retry("acme", book_of(books)) == 2
    done = await outbox.flush()
    assert done.published == 2 and book_of(books).unsent == []


async def test_an_event_on_its_way_is_not_sent_twice_by_a_flush_behind_it() -> None:
    books, producer, outbox, first = await flush_under_way(event("a-firing"))
    assert outbox.retry("acme", book_of(books)) == 1  # a sweep reads the book meanwhile
    second = asyncio.create_task(outbox.flush())
    await asyncio.sleep(0)
    producer.acknowledge()
    await asyncio.gather(first, second)
    assert producer.values == [event("a-firing")[1]] and outbox.due == 0


async def test_a_flush_cancelled_midway_leaves_its_accounts_due() -> None:
    """The worker stops (or the task is cancelled) while acknowledgements are awaited:
    the events are still in the book, and the account still due for the next flush."""
    books, producer, outbox, flushing = await flush_under_way(event("a-firing"))
    flushing.cancel()
    await asyncio.gather(flushing, return_exceptions=True)
    assert outbox.due == 1 and len(book_of(books).unsent) == 1
    producer.hold = False
    assert (await outbox.flush()).published == 1 and book_of(books).unsent == []


async def test_an_event_not_acknowledged_in_time_counts_as_not_published() -> None:
    books: dict[str, bytes] = {}
    producer = Producer()
    failures: list[BaseException] = []
    outbox = AlertOutbox(books, producer.send, failures.append, ack_limit_s=0.01)
    judge(outbox, books, event("a-firing"))
    done = await outbox.flush()
    assert (done.published, done.failed) == (0, 1)
    assert isinstance(failures[0], TimeoutError) and len(book_of(books).unsent) == 1


async def test_settling_reads_the_book_as_it_is_then() -> None:
    """The sweep writes the book while ingest's events are on their way: settling must
    keep what it wrote (its states and its own events), not the book as it was."""
    books, producer, outbox, flushing = await flush_under_way(event("a-firing"))
    judge(outbox, books, event("b-firing"))  # judged meanwhile
    book = book_of(books)
    book.health = {"tier": "red", "value": 0.1}
    books["acme"] = codec.dumps(book.to_dict())
    producer.acknowledge()
    await flushing
    assert book_of(books).health == {"tier": "red", "value": 0.1}
    assert book_of(books).unsent == [("b", '{"id":"b-firing"}')]


async def test_a_book_deleted_meanwhile_is_not_written_again() -> None:
    books, producer, _, flushing = await flush_under_way(event("a-firing"))
    del books["acme"]
    producer.acknowledge()
    assert (await flushing).published == 1 and books == {}


async def test_a_book_handed_over_is_left_to_its_new_owner() -> None:
    """The partition moves to another worker: what its books hold is the new owner's to
    send and settle. Here it moves before the flush, then while one waits for Kafka."""
    books: dict[str, bytes] = {}
    producer = Producer()
    owned = {"acme"}
    outbox = AlertOutbox(books, producer.send, owns=lambda account_id: account_id in owned)
    judge(outbox, books, event("a-firing"))
    owned.clear()
    assert (await outbox.flush()).published == 0 and producer.sent == []
    owned.add("acme")
    assert outbox.retry("acme", book_of(books)) == 1
    flushing = asyncio.create_task(outbox.flush())
    await producer.in_flight()
    owned.clear()  # handed over while Kafka acknowledges
    producer.acknowledge()
    await flushing
    assert len(book_of(books).unsent) == 1  # not written back by a worker that let it go


@given(
    unsent=st.lists(st.sampled_from(["a", "b", "c"]), max_size=6),
    published=st.lists(st.sampled_from(["a", "b", "c"]), max_size=6),
)
def test_settling_drops_the_longest_published_prefix(
    unsent: list[str], published: list[str]
) -> None:
    book = AccountAlerts(unsent=[(k, k) for k in unsent])
    dropped = book.settle((k, k) for k in published)
    left = [k for k, _ in book.unsent]
    assert unsent[len(unsent) - len(left) :] == left  # a suffix: order kept
    head = unsent[: len(unsent) - len(left)]
    assert all(head.count(k) <= published.count(k) for k in head)  # only what went
    if left:  # it stopped at one more than was published
        assert head.count(left[0]) + 1 > published.count(left[0])
    assert dropped == bool(head) and book.changed == bool(head)


def test_a_book_with_nothing_unsent_is_stored_as_before() -> None:
    book = AccountAlerts(evaluated_through=1.0)
    assert set(book.to_dict()) == {"states", "evaluated_through", "health"}
    book.keep_unsent([("fp", "{}")])
    assert AccountAlerts.from_dict(book.to_dict()).unsent == [("fp", "{}")]
    assert "unsent" not in book.to_dict(with_unsent=False)
