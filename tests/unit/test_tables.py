"""ensure_metadata: the producer keeps tracking every changelog it was asked about."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from stream.tables import ensure_metadata


class FakeClient:
    """aiokafka's client as ensure_metadata uses it: a refresh asks only for the
    tracked topics, and forgets every other one it knew (as ClusterMetadata does)."""

    def __init__(self, known: set[str]) -> None:
        self.tracked: set[str] = set()
        self.known = set(known)  # learnt from the first, full metadata fetch

    async def add_topic(self, topic: str) -> bool:
        if topic not in self.tracked:
            self.tracked.add(topic)
            self.refresh()
        return True

    def refresh(self) -> None:
        self.known = set(self.tracked)


class FakeProducer:
    def __init__(self, client: FakeClient) -> None:
        self.client = client

    async def partitions_for(self, topic: str) -> set[int]:
        if topic not in self.client.known:  # aiokafka tracks it, then refreshes
            await self.client.add_topic(topic)
        return {0}


def table(name: str) -> Any:
    return SimpleNamespace(changelog_topic=SimpleNamespace(get_topic_name=lambda: name))


def test_a_changelog_known_from_the_first_fetch_survives_a_refresh_for_another() -> None:
    client = FakeClient(known={"engagement-changelog"})
    producer = FakeProducer(client)
    app = SimpleNamespace(producer=SimpleNamespace(_ensure_producer=lambda: producer))

    asyncio.run(ensure_metadata(app, table("engagement-changelog"), table("alerts-changelog")))

    assert client.tracked == {"engagement-changelog", "alerts-changelog"}
    assert "engagement-changelog" in client.known  # a write to it finds its partitions
