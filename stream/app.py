"""The Faust application, built by a factory so every test gets its own.

``create_app(settings)`` wires topics, the engagement table and the ingest agent. No
module-level app exists: the CLI builds one from settings and runs a worker.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import faust

from config.settings import Settings
from stream.clock import Clock, SystemClock
from stream.deadletter import DeadLetter
from stream.events import EventLimits
from stream.pipeline import IngestPipeline, raw_message
from stream.topics import TopicNames

__all__ = ["Engine", "create_app"]

log = logging.getLogger(__name__)

ENGAGEMENT_TABLE = "engagement"
STATS_INTERVAL_S = 10.0


@dataclass
class Engine:
    """The app and the parts tests and adapters need to reach."""

    settings: Settings
    app: faust.App
    topics: TopicNames
    events_topic: Any
    dead_letter_topic: Any
    accounts_topic: Any
    alerts_topic: Any
    engagement: Any
    pipeline: IngestPipeline

    @property
    def engagement_changelog(self) -> str:
        return f"{self.settings.app_id}-{ENGAGEMENT_TABLE}-changelog"


def create_app(settings: Settings, clock: Clock | None = None) -> Engine:
    app = faust.App(
        settings.app_id,
        broker=settings.kafka_url,
        store=settings.table_store,
        datadir=settings.data_dir,
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        key_serializer="raw",
        value_serializer="raw",
        consumer_auto_offset_reset="earliest",
        web_host=settings.web_host,
        web_bind=settings.web_host,
        web_port=settings.web_port,
        autodiscover=False,
        producer_acks=-1,
    )
    names = TopicNames.from_settings(settings)
    n = settings.partitions
    events_topic = app.topic(names.events, partitions=n)
    dead_letter_topic = app.topic(names.dead_letters, partitions=n)
    accounts_topic = app.topic(names.accounts, partitions=n, compacting=True)
    alerts_topic = app.topic(names.alerts, partitions=n)
    engagement = app.Table(
        ENGAGEMENT_TABLE,
        partitions=n,
        key_type=str,
        value_type=bytes,
        # Batches mix partitions, so "the current event's partition" is wrong for a
        # table write; partitioning by key (account_id) lands each entry on the same
        # partition number as the account's events.
        use_partitioner=True,
    )

    async def send_dead_letter(letter: DeadLetter) -> None:
        await dead_letter_topic.send(
            key=letter.source.key,
            value=letter.to_json(),
            headers={"reason": letter.reason.encode()},
        )

    limits = EventLimits(
        max_bytes=settings.max_event_bytes,
        future_skew=timedelta(seconds=settings.future_skew_s),
    )
    pipeline = IngestPipeline(engagement, send_dead_letter, clock or SystemClock(), limits)

    @app.agent(events_topic, name="ingest")
    async def ingest(stream: Any) -> None:
        """Decode, dead-letter and fold batches of usage events."""
        async for batch in stream.take_events(
            settings.batch_max_events, within=settings.batch_within_s
        ):
            await pipeline.process([raw_message(event.message) for event in batch])

    @app.timer(STATS_INTERVAL_S)
    async def log_totals() -> None:
        totals = pipeline.totals
        log.info(
            "ingest: %d batches, valid %s, duplicates %d, dead letters %s",
            totals.batches,
            dict(totals.valid_by_type),
            totals.duplicates,
            dict(totals.dead_by_reason),
        )

    return Engine(
        settings=settings,
        app=app,
        topics=names,
        events_topic=events_topic,
        dead_letter_topic=dead_letter_topic,
        accounts_topic=accounts_topic,
        alerts_topic=alerts_topic,
        engagement=engagement,
        pipeline=pipeline,
    )
