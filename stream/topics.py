"""Topic names and the Kafka admin step that creates them co-partitioned."""

from __future__ import annotations

from dataclasses import dataclass

from config.settings import Settings

__all__ = ["TopicNames", "ensure_topics"]


@dataclass(frozen=True, slots=True)
class TopicNames:
    events: str
    accounts: str
    dead_letters: str
    alerts: str
    alert_dead_letters: str
    """Notifications that could not be delivered, with the receiver and the reason."""

    @classmethod
    def from_settings(cls, settings: Settings) -> TopicNames:
        return cls(
            events=settings.topic("events"),
            accounts=settings.topic("accounts"),
            dead_letters=settings.topic("events.dlq"),
            alerts=settings.topic("alerts"),
            alert_dead_letters=settings.topic("alerts.dlq"),
        )


def ensure_topics(settings: Settings, timeout_s: float = 30.0) -> list[str]:
    """Create any missing engine topic with ``settings.partitions`` partitions.

    Producers call this before their first send: a topic auto-created by the broker
    gets the broker's default partition count, which breaks co-partitioning.
    Returns the names it created.
    """
    from kafka.admin import KafkaAdminClient, NewTopic
    from kafka.errors import TopicAlreadyExistsError

    names = TopicNames.from_settings(settings)
    admin = KafkaAdminClient(
        bootstrap_servers=settings.kafka_bootstrap.split(","),
        client_id=f"{settings.app_id}-admin",
        request_timeout_ms=int(timeout_s * 1000),
    )
    try:
        existing = set(admin.list_topics())
        wanted = [
            NewTopic(
                name,
                num_partitions=settings.partitions,
                replication_factor=settings.replication_factor,
                topic_configs={"cleanup.policy": "compact"} if name == names.accounts else {},
            )
            for name in (
                names.events,
                names.accounts,
                names.dead_letters,
                names.alerts,
                names.alert_dead_letters,
            )
            if name not in existing
        ]
        created = []
        for topic in wanted:
            try:
                admin.create_topics([topic])
                created.append(topic.name)
            except TopicAlreadyExistsError:
                pass  # another producer or worker won the race; fine
        return created
    finally:
        admin.close()
