"""Publishing events and account records to Kafka (kafka-python), for the CLI.

Every record is keyed by its ``account_id`` so it lands on the partition that owns
the account. Lines are sent as they are: validation is the engine's job, and a bad
line must reach the dead-letter topic rather than vanish in a producer.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from config.settings import Settings
from stream import codec
from stream.topics import TopicNames, ensure_topics

__all__ = ["PublishReport", "Publisher", "read_jsonl"]


@dataclass(slots=True)
class PublishReport:
    events: int = 0
    accounts: int = 0


def read_jsonl(path: Path) -> Iterator[bytes]:
    """The non-blank lines of a JSONL file, as bytes."""
    with path.open("rb") as handle:
        for line in handle:
            stripped = line.strip()
            if stripped:
                yield stripped


def account_key(line: bytes) -> bytes | None:
    """The ``account_id`` of a JSON line, or ``None`` if the line has none."""
    try:
        obj = codec.loads(line)
    except codec.JSONDecodeError:
        return None
    if isinstance(obj, dict) and isinstance(obj.get("account_id"), str):
        return str(obj["account_id"]).encode()
    return None


def is_account_record(line: bytes) -> bool:
    """Account records have an ``account_id`` and no event ``type``."""
    try:
        obj = codec.loads(line)
    except codec.JSONDecodeError:
        return False
    return isinstance(obj, dict) and "account_id" in obj and "type" not in obj


class Publisher:
    """A kafka-python producer that knows the engine's topics."""

    def __init__(self, settings: Settings) -> None:
        from kafka.producer import KafkaProducer

        ensure_topics(settings)
        self.topics = TopicNames.from_settings(settings)
        self._producer = KafkaProducer(
            bootstrap_servers=settings.kafka_bootstrap.split(","),
            acks="all",
            linger_ms=20,
            batch_size=256 * 1024,
            compression_type=None,
            retries=5,
        )
        self.report = PublishReport()

    def send_lines(self, lines: Iterable[bytes]) -> PublishReport:
        """Route each line to the accounts or events topic by its shape."""
        for line in lines:
            if is_account_record(line):
                self.send_account(line)
            else:
                self.send_event(line)
        return self.report

    def send_event(self, value: bytes, key: bytes | None = None) -> None:
        self._producer.send(self.topics.events, value=value, key=key or account_key(value))
        self.report.events += 1

    def send_account(self, value: bytes) -> None:
        self._producer.send(self.topics.accounts, value=value, key=account_key(value))
        self.report.accounts += 1

    def send_json(self, obj: dict[str, Any]) -> None:
        line = codec.dumps(obj)
        if "type" in obj:
            self.send_event(line, str(obj["account_id"]).encode())
        else:
            self.send_account(line)

    def flush(self, timeout_s: float = 60.0) -> None:
        self._producer.flush(timeout=timeout_s)

    def close(self) -> None:
        self._producer.close(timeout=30)
