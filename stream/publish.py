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


def classify(line: bytes) -> tuple[bool, bytes | None]:
    """From one parse of a line: is it an account record (an ``account_id`` and no
    event ``type``), and its ``account_id`` as the message key (``None`` if it has none)."""
    try:
        obj = codec.loads(line)
    except codec.JSONDecodeError:
        return False, None
    if not isinstance(obj, dict):
        return False, None
    account_id = obj.get("account_id")
    key = account_id.encode() if isinstance(account_id, str) else None
    return "account_id" in obj and "type" not in obj, key


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
            is_account, key = classify(line)
            if is_account:
                self.send_account(line, key)
            else:
                self.send_event(line, key)
        return self.report

    def send_event(self, value: bytes, key: bytes | None) -> None:
        self._producer.send(self.topics.events, value=value, key=key)
        self.report.events += 1

    def send_account(self, value: bytes, key: bytes | None) -> None:
        self._producer.send(self.topics.accounts, value=value, key=key)
        self.report.accounts += 1

    def send_json(self, obj: dict[str, Any]) -> None:
        """An event or an account record built in code; keyed by its account_id."""
        line = codec.dumps(obj)
        key = str(obj["account_id"]).encode()
        if "type" in obj:
            self.send_event(line, key)
        else:
            self.send_account(line, key)

    def flush(self, timeout_s: float = 60.0) -> None:
        self._producer.flush(timeout=timeout_s)

    def close(self) -> None:
        self._producer.close(timeout=30)
