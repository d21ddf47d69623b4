"""Test-side tools for the real broker: run a worker process, read topics back."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient
from kafka.consumer import KafkaConsumer
from kafka.structs import TopicPartition

from config.settings import Settings
from stream.engagement import EngagementState

T = TypeVar("T")

READY_LINE = "[^Worker]: Ready"


class WorkerProcess:
    """``engagewatch worker`` as a real child process, configured by environment."""

    def __init__(self, settings: Settings, log_path: Path) -> None:
        self.settings = settings
        self.log_path = log_path
        self._proc: subprocess.Popen[bytes] | None = None

    def env(self) -> dict[str, str]:
        values = self.settings.model_dump(mode="json")
        env = {k: v for k, v in os.environ.items() if not k.startswith("ENGAGEWATCH_")}
        for name, value in values.items():
            if value is None:
                continue  # unset: the worker uses its default
            rendered = ",".join(value) if isinstance(value, list) else str(value)
            env[f"ENGAGEWATCH_{name.upper()}"] = rendered
        return env

    def start(self, ready_timeout_s: float = 90.0) -> None:
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        log = self.log_path.open("ab")
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "stream.cli", "worker"],
            env=self.env(),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        wait_for(
            lambda: READY_LINE in self._log_since(offset) or self._exited(),
            ready_timeout_s,
            f"worker ready (log: {self.log_path})",
        )
        if self._exited():
            raise AssertionError(f"worker exited at start:\n{self._log_since(offset)[-3000:]}")

    def stop(self, timeout_s: float = 60.0) -> int:
        """Graceful stop (SIGTERM): Faust commits offsets and flushes on the way out."""
        assert self._proc is not None
        self._proc.send_signal(signal.SIGTERM)
        try:
            return self._proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
            raise AssertionError(f"worker ignored SIGTERM for {timeout_s} s") from None

    def pause(self) -> None:
        """SIGSTOP: the process stands still, as a paused VM or a frozen container does."""
        assert self._proc is not None
        self._proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGCONT)

    def kill(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()

    def exited(self, timeout_s: float) -> int | None:
        """Wait up to ``timeout_s`` for the worker to exit by itself: its exit code, or
        ``None`` if it still runs."""
        assert self._proc is not None
        try:
            return self._proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            return None

    def _exited(self) -> bool:
        return self._proc is not None and self._proc.poll() is not None

    def _log_since(self, offset: int) -> str:
        with self.log_path.open("rb") as handle:
            handle.seek(offset)
            return handle.read().decode("utf-8", "replace")


@contextmanager
def running_worker(settings: Settings, log_path: Path) -> Iterator[WorkerProcess]:
    worker = WorkerProcess(settings, log_path)
    worker.start()
    try:
        yield worker
    finally:
        worker.kill()


def wait_for(condition: Callable[[], T], timeout_s: float, what: str, every_s: float = 0.5) -> T:
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(every_s)


def read_topic(bootstrap: str, topic: str) -> list[tuple[bytes | None, bytes | None, int, int]]:
    """Every record of a topic as (key, value, partition, offset), from the beginning."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        if not tps:
            return []
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        end = consumer.end_offsets(tps)
        records: list[tuple[bytes | None, bytes | None, int, int]] = []
        while any(consumer.position(tp) < end[tp] for tp in tps):
            for batch in consumer.poll(timeout_ms=1000).values():
                records.extend((r.key, r.value, r.partition, r.offset) for r in batch)
        return records
    finally:
        consumer.close()


def engagement_states(bootstrap: str, changelog: str) -> dict[str, EngagementState]:
    """The table as the changelog holds it: the latest value per account."""
    latest: dict[str, EngagementState] = {}
    for key, value, _, _ in read_topic(bootstrap, changelog):
        assert key is not None
        if value is None:
            latest.pop(key.decode(), None)
        else:
            latest[key.decode()] = EngagementState.from_json(value)
    return latest


def counts_by_type(states: dict[str, EngagementState]) -> dict[str, int]:
    totals: dict[str, int] = {}
    for state in states.values():
        for kind, count in state.event_counts.items():
            totals[kind] = totals.get(kind, 0) + count
    return totals


def set_topic_limit(settings: Settings, topic: str, max_bytes: int | None) -> None:
    """What ``kafka-configs.sh --alter --add-config max.message.bytes=N`` does
    (``None``: ``--delete-config``, back to the broker's default)."""
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    try:
        limit = {"max.message.bytes": None if max_bytes is None else str(max_bytes)}
        resource = [ConfigResource(ConfigResourceType.TOPIC, topic, limit)]
        if max_bytes is None:
            admin.reset_configs(resource)
        else:
            admin.alter_configs(resource)
    finally:
        admin.close()
