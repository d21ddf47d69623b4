"""Reading the events topic in bulk, on the partitions Faust gave this worker.

Why not a Faust agent: faust-streaming moves every message through its conductor,
a channel queue, an ``Event`` and a per-message ack; on this project's machines that
costs ~85 us per event, ten times the engine's own work (docs/benchmarks.md). Here an
aiokafka consumer fetches whole batches with ``getmany`` and hands them to the same
:class:`~stream.pipeline.IngestPipeline`. Faust still owns everything else: partition
assignment (through the co-partitioned accounts agent), tables, changelogs, recovery,
standbys and the web server.

The hand-over rules that keep it correct:

* it reads only partitions whose number this worker holds *active* (never standbys),
  and only after Faust's table recovery completed (``on_rebalance_complete``);
* batches are folded as they come; every ``commit_interval_s`` the producer is flushed
  and every table write it took is acknowledged (``stream/acks.py``: state and dead
  letters are in Kafka), and then the offsets are committed; a write that failed stops
  the reader before it commits:
  at-least-once, and events replayed after a crash are caught by the per-account
  event-id memory;
* on revocation and on shutdown it finishes the batch in hand, flushes and commits
  before letting go, so the next owner starts exactly where this one stopped;
* a failed fetch, offset query, flush or commit is counted (``on_kafka_error``) and
  logged, then raised as before.

Offsets live in the consumer group ``<app_id>-events``, which has no members: this
consumer assigns partitions itself and only stores offsets there.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from mode import Service

from stream.acks import Acknowledgements, DeliveryFailedError
from stream.ingest import Batch, BatchAbandonedError
from stream.stall import StallWatch
from stream.telemetry import counting_errors

__all__ = ["ReaderProgress", "bulk_reader_service"]

log = logging.getLogger(__name__)

GC_YOUNG_THRESHOLD = 50_000
"""Allocations between collections of the youngest generation (Python's default: 700)."""

FETCH_MAX_WAIT_MS = 100
"""How long the broker may hold a fetch that finds nothing new (aiokafka's default: 500).
One fetch per broker is in flight at a time, and it asks only for the partitions with
nothing left in hand: when those are caught up, a partition whose fetched records just
ran out waited for that fetch to time out before its own could be sent."""

STALL_POLL_S = 0.2
"""How often a reader held after a stall looks again."""

ProcessBatch = Callable[[Batch], Awaitable[Any]]


@dataclass
class ReaderProgress:
    """How far behind the reader is, for the rule sweep: while a backlog is being read,
    accounts whose events are still in it would look silent."""

    backlog: int | None = None
    """Messages on this worker's partitions not read yet; ``None`` until measured."""
    backlog_by_partition: dict[int, int] = field(default_factory=dict)
    """The same per owned partition (empty until measured)."""
    heard_at: float | None = None
    """When (epoch s) the broker last answered a fetch for the least recently answered of
    the partitions read, or they were assigned if it never has; ``None``: none read.
    aiokafka logs an unreachable broker and returns nothing, raising no error to count:
    this is what shows an outage (``engagewatch_kafka_fetch_age_seconds``)."""
    newest_by_partition: dict[int, float] = field(default_factory=dict)
    """Per owned partition, the Kafka timestamp (epoch s) of the last message read: one
    look per partition and batch, so the lag costs nothing per event."""

    def set_backlog(self, behind: dict[int, int]) -> None:
        self.backlog_by_partition = behind
        self.backlog = sum(behind.values())

    def behind(self, partition: int) -> bool:
        """Whether ``partition`` may hold events not folded yet (unknown counts as yes)."""
        return self.backlog_by_partition.get(partition, 1) > 0


def bulk_reader_service(
    app: Any,
    *,
    bootstrap: str,
    events_topic: str,
    owner_topic: str,
    group_id: str,
    process: ProcessBatch,
    batch_max: int,
    within_s: float,
    commit_interval_s: float = 1.0,
    progress: ReaderProgress | None = None,
    on_kafka_error: Callable[[str], None] = lambda operation: None,
    acknowledgements: Acknowledgements | None = None,
    stall: StallWatch | None = None,
) -> type[Service]:
    """A service class for ``app.service``; ``owner_topic`` decides which partitions
    this worker owns (a co-partitioned topic that a Faust agent subscribes to).
    ``acknowledgements``: what a commit waits for (the producer buffer's messages are
    added to it), for the caller to follow its own sends with. ``stall``: after the
    worker stood still (stream/stall.py), fetched batches are put back and nothing is
    committed until the group has had time to say whose the partitions are."""
    stall_watch = stall if stall is not None else StallWatch(float("inf"), 0.0)
    reader_progress = progress if progress is not None else ReaderProgress()
    acks = acknowledgements if acknowledgements is not None else Acknowledgements()

    def kafka(operation: str) -> AbstractContextManager[None]:
        return counting_errors(on_kafka_error, "kafka", operation, log)

    class BulkEventReader(Service):
        def __post_init__(self) -> None:
            self._lock = asyncio.Lock()
            self._ready = asyncio.Event()
            self._consumer: AIOKafkaConsumer | None = None
            self._pending: dict[TopicPartition, int] = {}
            self._committed_at = 0.0
            self._assigned_at = time.time()
            self._acks = acks

        async def on_start(self) -> None:
            self._acks.follow(app.producer.buffer, threaded=bool(app.conf.producer_threaded))
            self._consumer = AIOKafkaConsumer(
                bootstrap_servers=bootstrap.split(","),
                group_id=group_id,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                max_partition_fetch_bytes=4 * 1024 * 1024,
                fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
            )
            await self._consumer.start()
            app.on_partitions_revoked.connect(self._on_revoked)
            app.on_rebalance_complete.connect(self._on_rebalanced)
            # Started after table recovery: the current assignment is ready to use.
            await self._take_assignment()
            # What the worker built to start (Faust, the app, its tables) lives as long as
            # it does: keep it out of the cyclic GC's full collections, which otherwise walk
            # it again each time batches of records push them (~1.5 us per event measured).
            # A batch makes thousands of short-lived objects: collecting the young every
            # 700 allocations walked the batch in hand over and over (~0.6 us per event).
            gc.freeze()
            gc.set_threshold(GC_YOUNG_THRESHOLD)

        async def on_stop(self) -> None:
            self._ready.clear()
            async with self._lock:  # wait for the batch in hand, then commit it
                if self._consumer is not None:
                    await self._commit_unless_lost(self._consumer)
                    await self._consumer.stop()
                    self._consumer = None

        async def _on_revoked(self, sender: Any, revoked: Any = None, **kwargs: Any) -> None:
            self._ready.clear()
            reader_progress.heard_at = None
            reader_progress.backlog = None
            reader_progress.backlog_by_partition.clear()
            async with self._lock:
                if self._consumer is not None:
                    await self._commit_unless_lost(self._consumer)
                    self._consumer.assign([])

        async def _on_rebalanced(self, sender: Any = None, **kwargs: Any) -> None:
            await self._take_assignment()

        async def _take_assignment(self) -> None:
            owned = sorted(
                tp.partition for tp in app.assignor.assigned_actives() if tp.topic == owner_topic
            )
            tps = [TopicPartition(events_topic, partition) for partition in owned]
            async with self._lock:
                consumer = self._consumer
                if consumer is None:
                    return
                # Where to start is asked before assigning, then set with no await in
                # between: the consumer starts fetching as soon as partitions are
                # assigned, and moving a position after that threw away what it had
                # fetched (up to 4 MB a partition, fetched again while the reader waited).
                starts = {tp: await consumer.committed(tp) for tp in tps}
                fresh = [tp for tp, offset in starts.items() if offset is None]
                if fresh:  # never committed: from the oldest message kept
                    starts.update(await consumer.beginning_offsets(fresh))
                consumer.assign(tps)
                for tp in tps:
                    consumer.seek(tp, starts[tp])
                newest = reader_progress.newest_by_partition
                for partition in set(newest) - set(owned):  # handed to another worker
                    del newest[partition]
            log.info("bulk reader: reading %s partitions %s", events_topic, owned)
            self._assigned_at = time.time()
            reader_progress.heard_at = self._assigned_at if tps else None
            if tps:
                self._ready.set()

        @Service.task
        async def _read(self) -> None:
            while not self.should_stop:
                # mode types the waitable as its own Event; an asyncio.Event works.
                await self.wait_for_stopped(self._ready)  # type: ignore[arg-type]
                if stall_watch.suspect():
                    await self.sleep(STALL_POLL_S)
                    continue
                async with self._lock:
                    if self._ready.is_set() and self._consumer is not None:
                        await self._read_one_batch(self._consumer)

        async def _read_one_batch(self, consumer: AIOKafkaConsumer) -> None:
            with kafka("fetch"):
                fetched = await consumer.getmany(
                    timeout_ms=int(within_s * 1000), max_records=batch_max
                )
            self._note_heard(consumer)
            if stall_watch.suspect():  # stood still in there: maybe no longer ours
                for tp, records in fetched.items():
                    consumer.seek(tp, records[0].offset)  # read again once confirmed
                return
            with kafka("offsets"):
                behind = await _backlog(consumer, fetched)
            if not fetched:
                reader_progress.set_backlog(behind)
                return
            # Read but not folded yet is still behind: the sweep must not judge those
            # accounts by the clock until their events are in their state.
            in_hand = {tp.partition: len(records) for tp, records in fetched.items()}
            reader_progress.set_backlog({p: n + in_hand.get(p, 0) for p, n in behind.items()})
            for tp, records in fetched.items():
                stamp_ms = records[-1].timestamp
                if stamp_ms is not None and stamp_ms > 0:  # -1: the producer set none
                    reader_progress.newest_by_partition[tp.partition] = stamp_ms / 1000
            # The records as aiokafka made them: a wrapper per record cost ~1 us per event.
            try:
                await process([r for records in fetched.values() for r in records])
            except BatchAbandonedError as exc:  # read again by whoever reads these partitions next
                log.info("bulk reader: batch left unread: %s", exc)
                return
            reader_progress.set_backlog(behind)
            for tp, records in fetched.items():
                self._pending[tp] = records[-1].offset + 1
            if time.monotonic() - self._committed_at >= commit_interval_s:
                await self._commit(consumer)

        def _note_heard(self, consumer: AIOKafkaConsumer) -> None:
            """When the broker last answered for every partition read (``heard_at``)."""
            stamps = [consumer.last_poll_timestamp(tp) for tp in consumer.assignment()]
            if stamps:  # a partition never answered counts from its assignment
                seconds = [self._assigned_at if s is None else s / 1000 for s in stamps]
                reader_progress.heard_at = min(seconds)

        async def _commit_unless_lost(self, consumer: AIOKafkaConsumer) -> None:
            """Commit when letting go of partitions, unless a write was lost: then the
            offsets stay where they were and the next owner reads those events again.
            Nor after the worker stood still: the next owner may have committed further
            already, and these offsets would send it back."""
            if stall_watch.suspect():
                log.warning("bulk reader: not committing, the worker just stood still")
                self._pending = {}
                return
            try:
                await self._commit(consumer)
            except DeliveryFailedError as exc:
                log.error(
                    "bulk reader: not committing, a write (table or dead letter) was lost: %s", exc
                )

        async def _commit(self, consumer: AIOKafkaConsumer) -> None:
            """Flush first: an offset is committed only once its effects are in Kafka."""
            self._committed_at = time.monotonic()
            if not self._pending:
                return
            with kafka("flush"):
                await app.producer.flush()
                await self._acks.wait()  # Faust's flush alone can return too soon
            offsets, self._pending = self._pending, {}
            with kafka("commit"):
                await consumer.commit(offsets)

    return BulkEventReader


async def _backlog(
    consumer: AIOKafkaConsumer, fetched: Mapping[TopicPartition, Any]
) -> dict[int, int]:
    """Unread messages behind the end of each assigned partition (after this batch)."""
    assigned = list(consumer.assignment())
    # The high watermark is only known once a fetch returned that partition; an empty
    # partition may never be, so ask the broker for its end instead of waiting forever.
    unknown = [tp for tp in assigned if consumer.highwater(tp) is None]
    ends = await consumer.end_offsets(unknown) if unknown else {}
    behind: dict[int, int] = {}
    for tp in assigned:
        end = consumer.highwater(tp)
        if end is None:
            end = ends[tp]
        records = fetched.get(tp)
        read = records[-1].offset + 1 if records else await consumer.position(tp)
        behind[tp.partition] = max(0, end - read)
    return behind
