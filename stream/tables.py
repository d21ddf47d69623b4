"""Faust tables keyed by ``account_id`` bytes, seen by the core as ``str``-keyed mappings.

Why bytes: a table declared with ``key_type=str`` serialises keys as JSON
(``"acme"`` with quotes), so its changelog would partition ``"acme"`` rather than
``acme`` and an account's state would land on another partition than its events.
With ``key_type=bytes`` the changelog key is exactly the events' key.
"""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping
from typing import Any

from aiokafka.partitioner import murmur2
from faust.types import TP

__all__ = ["AccountKeyed", "ensure_metadata", "key_partition", "owned_items"]


class AccountKeyed(MutableMapping[str, Any]):
    """A ``str``-keyed view of a Faust table whose keys are UTF-8 bytes."""

    def __init__(self, table: Any) -> None:
        self.table = table

    def __getitem__(self, account_id: str) -> Any:
        return self.table[account_id.encode()]

    def get(self, account_id: str, default: Any = None) -> Any:
        return self.table.get(account_id.encode(), default)

    def __setitem__(self, account_id: str, value: Any) -> None:
        self.table[account_id.encode()] = value

    def __delitem__(self, account_id: str) -> None:
        del self.table[account_id.encode()]

    def __iter__(self) -> Iterator[str]:
        return (key.decode() for key in self.table)

    def __len__(self) -> int:
        return len(self.table)


def owned_items(app: Any, table: Any) -> list[tuple[str, Any]]:
    """(account_id, value) of the entries on this worker's *active* partitions.

    A worker's table also holds standby copies of other workers' partitions; a sweep
    or a count over those would act on accounts twice.
    """
    changelog = table.changelog_topic.get_topic_name()
    owned = []
    for key, value in list(table.items()):
        if app.assignor.is_active(TP(changelog, key_partition(key, table.partitions))):
            owned.append((key.decode(), value))
    return owned


def owns_account(app: Any, table: Any, account_id: str) -> bool:
    """Whether the account's partition of ``table`` is active on this worker."""
    changelog = table.changelog_topic.get_topic_name()
    partition = key_partition(account_id.encode(), table.partitions)
    return bool(app.assignor.is_active(TP(changelog, partition)))


def key_partition(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner gives ``key`` (murmur2, as the Java,
    kafka-python and aiokafka clients do), without asking a producer for metadata."""
    hashed: int = murmur2(key)
    return (hashed & 0x7FFFFFFF) % partitions


async def ensure_metadata(app: Any, *tables: Any) -> None:
    """Make the producer learn the changelogs' partitions before writing to them.

    With ``use_partitioner=True`` Faust asks the producer to partition the key at once
    (``eager_partitioning``) without waiting for metadata; a changelog the producer has
    not written to yet is unknown to it and the write fails. Waiting here is free once
    the metadata is known.

    Each changelog is also added to the topics the producer's client tracks: a topic it
    only knows from its first, full metadata fetch is dropped by the next refresh for
    the tracked ones (asking for another changelog starts one), and a write to it then
    fails with ``TypeError: 'NoneType' object is not iterable``.
    """
    producer = app.producer._ensure_producer()  # the aiokafka producer behind Faust's
    for table in tables:
        name = table.changelog_topic.get_topic_name()
        await producer.client.add_topic(name)  # at once when already tracked
        await producer.partitions_for(name)
