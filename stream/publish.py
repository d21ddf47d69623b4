"""Publishing events and account records to Kafka (kafka-python), for the CLI.

Every record is keyed by its ``account_id`` so it lands on the partition that owns
the account. Lines are sent as they are: validation is the engine's job, and a bad
line must reach the dead-letter topic rather than vanish in a producer.

A failed send or flush is counted (``PublishReport.failed``, and ``on_error`` for a
metric), logged and raised as before; a record the producer gives up on later, in its
own thread, is counted and logged the same way instead of disappearing silently.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from config.settings import Settings
from stream import codec
from stream.topics import TopicNames, ensure_topics

__all__ = ["PublishReport", "Publisher", "read_jsonl"]

log = logging.getLogger(__name__)

LOG_EVERY_FAILURES = 1_000
"""After the first, log one undelivered record in this many (a broker outage fails
them all)."""


@dataclass(slots=True)
class PublishReport:
    events: int = 0
    accounts: int = 0
    failed: int = 0
    """Records the producer refused or gave up delivering."""


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
    """A kafka-python producer that knows the engine's topics; ``on_error`` hears of
    each failed operation (``"send"`` or ``"flush"``), e.g. ``count_kafka_error``."""

    def __init__(self, settings: Settings, on_error: Callable[[str], None] | None = None) -> None:
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
        self._on_error = on_error

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
        self._send(self.topics.events, value, key)
        self.report.events += 1

    def send_account(self, value: bytes, key: bytes | None) -> None:
        self._send(self.topics.accounts, value, key)
        self.report.accounts += 1

    def delete_account(self, account_id: str) -> None:
        """A tombstone on the accounts topic: the engine forgets the account."""
        self._send(self.topics.accounts, None, account_id.encode())
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
        try:
            self._producer.flush(timeout=timeout_s)
        except Exception as exc:
            self._failed("flush", exc)
            raise

    def _send(self, topic: str, value: bytes | None, key: bytes | None) -> None:
        try:
            future = self._producer.send(topic, value=value, key=key)
        except Exception as exc:
            self.report.failed += 1
            self._failed("send", exc)
            raise
        future.add_errback(self._undelivered, topic)

    def _undelivered(self, topic: str, exc: BaseException) -> None:
        """Called from the producer's I/O thread once it gave up on a record."""
        self.report.failed += 1
        if self._on_error is not None:
            self._on_error("send")
        failed = self.report.failed
        if failed == 1 or failed % LOG_EVERY_FAILURES == 0:
            log.warning("%d records undelivered; latest to %s: %r", failed, topic, exc)

    def _failed(self, operation: str, exc: BaseException) -> None:
        if self._on_error is not None:
            self._on_error(operation)
        log.warning("kafka %s failed: %s: %s", operation, type(exc).__name__, exc)

    def close(self) -> None:
        self._producer.close(timeout=30)
