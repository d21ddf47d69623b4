"""Account records before their events: a new account's state is cut into the local days
of the time zone its record names.

An account's state takes its time zone when its first event is folded, and keeps it
(its day buckets are local days). Records and events come on two topics read by two
consumers: the accounts agent (Faust, in batches held up to a second) and the bulk
event reader. Published first, a record could still be read after its account's first
events (a worker starting on a backlog, a CRM sync just ahead of the product's first
events), and the account was cut into UTC days for good.

So before the first events of an account the worker has no record of are folded,
:class:`RecordsFirst` waits (up to ``timeout_s``) until the accounts agent has read
every record published to that account's partition so far. An account with no record
at all costs one offsets request, and only in the batch that starts its state.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Mapping
from typing import Any, Protocol

from stream.ingest import BatchAbandonedError

__all__ = ["KafkaRecordOffsets", "RecordOffsets", "RecordsFirst"]

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 10.0
POLL_S = 0.05


class RecordOffsets(Protocol):
    """Where the accounts topic's partitions stand in Kafka."""

    async def ends(self, partitions: Collection[int]) -> Mapping[int, int]:
        """The offset the next record published to each partition will get."""

    async def committed(self, partitions: Collection[int]) -> Mapping[int, int]:
        """The next offset the accounts agent's group will read, as committed (records
        before it are in the accounts table, which its changelog restores)."""


class RecordsFirst:
    """Waits until the accounts agent has read the records published so far."""

    def __init__(
        self,
        offsets: RecordOffsets,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        poll_s: float = POLL_S,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        on_wait: Callable[[bool], None] = lambda timed_out: None,
        abandon: Callable[[], bool] = lambda: False,
    ) -> None:
        self._offsets = offsets
        self._abandon = abandon
        """Whether to give up waiting at once (the worker is stopping, or rebalancing):
        the accounts agent is held then, so the records cannot come."""
        self._on_wait = on_wait
        """Told of each wait that had records to wait for: whether it timed out."""
        self._timeout_s = timeout_s
        self._poll_s = poll_s
        self._monotonic = monotonic
        self._sleep = sleep
        self._read: dict[int, int] = {}
        """partition -> the next offset after the last record the agent processed."""
        self.timeouts = 0
        """Waits that ended with records still unread (logged)."""

    def record_read(self, partition: int, offset: int) -> None:
        """The accounts agent processed the record at ``offset`` of ``partition``."""
        if offset >= self._read.get(partition, 0):
            self._read[partition] = offset + 1

    async def wait(self, partitions: Collection[int]) -> set[int]:
        """Return once every record published to ``partitions`` before this call has
        been read; returns the partitions still behind when ``timeout_s`` ran out (their
        accounts are then started without a record, as before). Raises
        :class:`BatchAbandonedError` if told to give up meanwhile (nothing is folded then:
        the batch is read again)."""
        if not partitions:
            return set()
        ends = await self._offsets.ends(partitions)
        behind = self._behind(ends)
        if behind:  # records read before this worker started are the committed ones
            committed = await self._offsets.committed(behind)
            behind = {p for p in behind if committed.get(p, 0) < ends[p]}
        if not behind:
            return set()
        deadline = self._monotonic() + self._timeout_s
        while behind and self._monotonic() < deadline:
            if self._abandon():
                raise BatchAbandonedError(f"account records of partitions {sorted(behind)} unread")
            await self._sleep(self._poll_s)
            behind = self._behind({p: ends[p] for p in behind})
        self._on_wait(bool(behind))
        if behind:
            self.timeouts += 1
            log.warning(
                "account records: partitions %s of the accounts topic still unread after "
                "%.0f s; new accounts there start without their record (UTC days)",
                sorted(behind),
                self._timeout_s,
            )
        return behind

    def _behind(self, ends: Mapping[int, int]) -> set[int]:
        return {p for p, end in ends.items() if self._read.get(p, 0) < end}


class KafkaRecordOffsets:
    """:class:`RecordOffsets` from Kafka: a consumer outside any group for the ends, an
    admin client for the accounts agent's committed offsets; started on first use."""

    def __init__(self, bootstrap: str, topic: str, group_id: str) -> None:
        self._bootstrap = bootstrap.split(",")
        self._topic = topic
        self._group_id = group_id
        self._consumer: Any = None
        self._admin: Any = None
        self._starting = asyncio.Lock()

    async def ends(self, partitions: Collection[int]) -> Mapping[int, int]:
        from aiokafka import TopicPartition

        consumer, _ = await self._clients()
        found = await consumer.end_offsets([TopicPartition(self._topic, p) for p in partitions])
        return {tp.partition: offset for tp, offset in found.items()}

    async def committed(self, partitions: Collection[int]) -> Mapping[int, int]:
        from aiokafka import TopicPartition

        _, admin = await self._clients()
        wanted = [TopicPartition(self._topic, p) for p in partitions]
        found = await admin.list_consumer_group_offsets(self._group_id, partitions=wanted)
        return {tp.partition: meta.offset for tp, meta in found.items() if meta.offset >= 0}

    async def close(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None
        if self._admin is not None:
            await self._admin.close()
            self._admin = None

    async def _clients(self) -> tuple[Any, Any]:
        from aiokafka import AIOKafkaConsumer
        from aiokafka.admin import AIOKafkaAdminClient

        async with self._starting:
            if self._consumer is None:
                consumer = AIOKafkaConsumer(bootstrap_servers=self._bootstrap, group_id=None)
                await consumer.start()
                self._consumer = consumer
            if self._admin is None:
                admin = AIOKafkaAdminClient(bootstrap_servers=self._bootstrap)
                await admin.start()
                self._admin = admin
        return self._consumer, self._admin
