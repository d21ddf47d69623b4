"""Worker metrics: bulk updates from running totals, and no per-account labels.

Also where the Kafka error and per-partition lag figures come from (publisher, bulk
reader), with stand-ins for the broker: the real one is in tests/integration.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka import TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from alerts.lifecycle import AlertState, Change, ChangeKind, Status
from config.settings import Settings
from stream.bulk import ReaderProgress, _backlog
from stream.pipeline import IngestTotals
from stream.publish import Publisher, PublishReport
from stream.telemetry import (
    KAFKA_OPERATIONS,
    NOTIFICATION_OUTCOMES,
    EngineMetrics,
    counting_errors,
)
from stream.topics import TopicNames

NOW = datetime(2026, 11, 23, 12, tzinfo=UTC)


def samples(metrics: EngineMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = metrics.exposition().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_batches_add_only_what_the_totals_gained() -> None:
    metrics = EngineMetrics()
    totals = IngestTotals(valid_by_type=Counter(login=3), dead_by_reason=Counter(late=1))
    totals.newest_event_at = NOW.timestamp()
    metrics.observe_batch(totals, messages=4, seconds=0.01)
    totals.valid_by_type.update(login=2, feature_used=5)
    totals.duplicates = 2
    metrics.observe_batch(totals, messages=9, seconds=0.02)
    seen = samples(metrics)
    assert seen[("engagewatch_events_total", (("type", "login"),))] == 5
    assert seen[("engagewatch_events_total", (("type", "feature_used"),))] == 5
    assert seen[("engagewatch_dead_letters_total", (("reason", "late"),))] == 1
    assert seen[("engagewatch_duplicate_events_total", ())] == 2
    assert seen[("engagewatch_batch_events_count", ())] == 2
    assert seen[("engagewatch_batch_events_sum", ())] == 13
    assert seen[("engagewatch_newest_event_timestamp_seconds", ())] == NOW.timestamp()


def test_sweeps_count_changes_and_open_alerts_without_account_labels() -> None:
    metrics = EngineMetrics()
    firing = AlertState("f1", "account-silent", "acme", Status.FIRING, "critical", starts_at=NOW)
    resolved = AlertState("f2", "usage-drop", "acme", Status.RESOLVED, "warning", ends_at=NOW)
    changes = [Change(ChangeKind.FIRING, firing, NOW), Change(ChangeKind.RESOLVED, resolved, NOW)]
    metrics.observe_sweep(changes, [firing], seconds=0.2, held=False)
    metrics.observe_sweep([], [], seconds=0.0, held=True)
    seen = samples(metrics)
    fired = (("rule", "account-silent"), ("severity", "critical"), ("status", "firing"))
    assert seen[("engagewatch_alert_changes_total", fired)] == 1
    assert (
        seen[("engagewatch_open_alerts", (("rule", "account-silent"), ("severity", "critical")))]
        == 1
    )
    assert seen[("engagewatch_sweeps_held_total", ())] == 1
    labels = {name for (_, pairs) in seen for name, _ in pairs}
    assert not labels & {"account_id", "user_id", "fingerprint"}


def test_notifications_count_outcomes_latency_retries_and_backlog_by_receiver() -> None:
    metrics = EngineMetrics()
    metrics.observe_notification("cs-slack", "delivered", latency_s=2.0)
    metrics.observe_notification("cs-slack", "deferred")
    metrics.observe_notification("cs-slack", "permanent")
    metrics.count_delivery_retry("cs-slack")
    metrics.count_delivery_retry("cs-slack")
    metrics.set_delivery_backlog("cs-slack", 7)
    metrics.set_delivery_backlog("cs-slack", 3)
    seen = samples(metrics)

    def sent(outcome: str) -> float:
        return seen[
            ("engagewatch_notifications_total", (("outcome", outcome), ("receiver", "cs-slack")))
        ]

    assert (sent("delivered"), sent("deferred"), sent("permanent")) == (1, 1, 1)
    # The first sight of a receiver creates every outcome at 0: increase() sees the
    # first failure of a receiver that never failed before.
    assert sent("dead_lettered") == sent("retry") == sent("suppressed") == 0
    receiver = (("receiver", "cs-slack"),)
    assert seen[("engagewatch_notification_latency_seconds_count", receiver)] == 1
    assert seen[("engagewatch_notification_latency_seconds_sum", receiver)] == 2.0
    # Quiet hours defer deliveries by hours: the buckets reach that far.
    hours = (("le", "28800.0"), ("receiver", "cs-slack"))
    assert seen[("engagewatch_notification_latency_seconds_bucket", hours)] == 1
    assert seen[("engagewatch_notification_retries_total", receiver)] == 2
    assert seen[("engagewatch_notifications_pending", receiver)] == 3


def test_an_unknown_notification_outcome_is_refused() -> None:
    with pytest.raises(ValueError, match="bounced"):
        EngineMetrics().observe_notification("cs-slack", "bounced")


def test_declared_receivers_and_known_errors_start_at_zero() -> None:
    metrics = EngineMetrics()
    metrics.declare_receivers(["pager"])
    metrics.declare_redis_operations(["outbox_claim"])
    seen = samples(metrics)
    for outcome in NOTIFICATION_OUTCOMES:
        key = (("outcome", outcome), ("receiver", "pager"))
        assert seen[("engagewatch_notifications_total", key)] == 0
    assert seen[("engagewatch_redis_errors_total", (("operation", "outbox_claim"),))] == 0
    for operation in KAFKA_OPERATIONS:
        assert seen[("engagewatch_kafka_errors_total", (("operation", operation),))] == 0
    metrics.count_kafka_error("commit")
    metrics.count_redis_error("outbox_claim")
    metrics.count_redis_error("ledger_write")
    seen = samples(metrics)
    assert seen[("engagewatch_kafka_errors_total", (("operation", "commit"),))] == 1
    assert seen[("engagewatch_redis_errors_total", (("operation", "outbox_claim"),))] == 1
    assert seen[("engagewatch_redis_errors_total", (("operation", "ledger_write"),))] == 1


def test_partition_gauges_follow_the_partitions_the_reader_holds() -> None:
    metrics = EngineMetrics()
    metrics.observe_partitions({0: 1_000.0, 3: 1_090.0}, {0: 12, 3: 0}, now=1_100.0)
    metrics.observe_partitions({3: 1_090.0, 5: 1_200.0}, {3: 4, 5: 0}, now=1_130.0)
    seen = samples(metrics)
    lag = {
        dict(labels)["partition"]: value
        for (name, labels), value in seen.items()
        if name == "engagewatch_event_time_lag_seconds"
    }
    behind = {
        dict(labels)["partition"]: value
        for (name, labels), value in seen.items()
        if name == "engagewatch_consumer_lag_messages"
    }
    # Partition 0 went to another worker: gone, not frozen. A producer clock ahead of
    # ours (partition 5) shows no lag rather than a negative one.
    assert lag == {"3": 40.0, "5": 0.0}
    assert behind == {"3": 4, "5": 0}


def test_the_reader_progress_is_read_at_every_scrape() -> None:
    progress = ReaderProgress()
    metrics = EngineMetrics(reader=progress)
    assert not [name for (name, _) in samples(metrics) if "partition" in name or "lag" in name]
    progress.newest_by_partition[2] = time.time() - 30
    progress.backlog_by_partition.update({2: 7, 3: 0})
    seen = samples(metrics)
    assert 29 <= seen[("engagewatch_event_time_lag_seconds", (("partition", "2"),))] < 60
    assert seen[("engagewatch_consumer_lag_messages", (("partition", "2"),))] == 7
    assert seen[("engagewatch_consumer_lag_messages", (("partition", "3"),))] == 0
    assert seen[("engagewatch_ingest_backlog_messages", ())] == 7  # not left to the sweep


def test_how_long_the_broker_has_not_answered_is_read_at_every_scrape() -> None:
    """Found by a review: a broker down for 90 s left every error counter at 0 (aiokafka
    logs an unreachable broker and returns nothing), so no alert fired."""
    progress = ReaderProgress()
    metrics = EngineMetrics(reader=progress)
    assert samples(metrics)[("engagewatch_kafka_fetch_age_seconds", ())] == 0  # none owned
    progress.heard_at = time.time() - 90
    assert 89 <= samples(metrics)[("engagewatch_kafka_fetch_age_seconds", ())] < 120
    progress.heard_at = time.time()
    assert samples(metrics)[("engagewatch_kafka_fetch_age_seconds", ())] < 30


async def test_engine_sends_count_kafka_errors_and_still_fail() -> None:
    metrics = EngineMetrics()

    async def refused() -> None:
        raise ConnectionError("no broker")

    async def accepted() -> str:
        return "sent"

    assert await metrics.counting_kafka_errors("send_alert", accepted()) == "sent"
    with pytest.raises(ConnectionError):
        await metrics.counting_kafka_errors("send_alert", refused())
    seen = samples(metrics)
    assert seen[("engagewatch_kafka_errors_total", (("operation", "send_alert"),))] == 1
    assert seen[("engagewatch_kafka_errors_total", (("operation", "send_dead_letter"),))] == 0


def test_health_tiers_are_replaced_whole_and_silent_accounts_set() -> None:
    metrics = EngineMetrics()
    metrics.set_health_tiers({"green": 10, "red": 2, "unscored": 1})
    metrics.set_health_tiers({"green": 11, "yellow": 1})
    metrics.set_silent_accounts(4)
    metrics.set_alert_events_unsent(3)
    seen = samples(metrics)
    tiers = {
        dict(labels)["tier"]: value
        for (name, labels), value in seen.items()
        if name == "engagewatch_accounts"
    }
    # Known tiers stay as a 0 series; a tier no longer reported disappears.
    assert tiers == {"green": 11, "yellow": 1, "red": 0}
    assert seen[("engagewatch_silent_accounts", ())] == 4
    assert seen[("engagewatch_alert_events_unsent", ())] == 3


def test_counting_errors_counts_logs_and_reraises(caplog: pytest.LogCaptureFixture) -> None:
    metrics = EngineMetrics()
    logger = logging.getLogger("test.telemetry")
    with (
        caplog.at_level(logging.WARNING, "test.telemetry"),
        pytest.raises(ConnectionError),
        counting_errors(metrics.count_kafka_error, "kafka", "fetch", logger),
    ):
        raise ConnectionError("broker went away")
    with counting_errors(metrics.count_kafka_error, "kafka", "fetch", logger):
        pass
    assert samples(metrics)[("engagewatch_kafka_errors_total", (("operation", "fetch"),))] == 1
    assert "kafka fetch failed: ConnectionError: broker went away" in caplog.text


class _Future:
    def __init__(self) -> None:
        self.errbacks: list[Callable[[BaseException], None]] = []

    def add_errback(self, fn: Callable[..., None], *args: Any) -> None:
        self.errbacks.append(lambda exc: fn(*args, exc))


class _Producer:
    """kafka-python's producer as far as Publisher uses it: refuses when told to."""

    def __init__(self) -> None:
        self.refuse: Exception | None = None
        self.futures: list[_Future] = []

    def send(self, topic: str, value: bytes, key: bytes | None) -> _Future:
        if self.refuse is not None:
            raise self.refuse
        self.futures.append(_Future())
        return self.futures[-1]

    def flush(self, timeout: float) -> None:
        if self.refuse is not None:
            raise self.refuse


def test_the_publisher_counts_refused_and_undelivered_records() -> None:
    metrics = EngineMetrics()
    publisher = Publisher.__new__(Publisher)  # no broker: the producer is a stand-in
    producer = _Producer()
    publisher._producer = producer
    publisher.topics = TopicNames.from_settings(Settings())
    publisher.report = PublishReport()
    publisher._on_error = metrics.count_kafka_error
    publisher.send_event(b"{}", b"acme")
    producer.futures[0].errbacks[0](TimeoutError("delivery timed out"))  # the I/O thread
    producer.refuse = BufferError("buffer full")
    with pytest.raises(BufferError):
        publisher.send_event(b"{}", b"acme")
    with pytest.raises(BufferError):
        publisher.flush()
    assert publisher.report.failed == 2
    seen = samples(metrics)
    assert seen[("engagewatch_kafka_errors_total", (("operation", "send"),))] == 2
    assert seen[("engagewatch_kafka_errors_total", (("operation", "flush"),))] == 1


class _Consumer:
    """The offsets an aiokafka consumer reports, for the per-partition backlog."""

    def __init__(self, ends: dict[int, int], positions: dict[int, int]) -> None:
        self._tps = [TopicPartition("events", p) for p in ends]
        self._ends = ends
        self._positions = positions

    def assignment(self) -> set[TopicPartition]:
        return set(self._tps)

    def highwater(self, tp: TopicPartition) -> int | None:
        return self._ends[tp.partition] if tp.partition != 2 else None

    async def end_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: self._ends[tp.partition] for tp in tps}

    async def position(self, tp: TopicPartition) -> int:
        return self._positions[tp.partition]


async def test_the_reader_backlog_is_measured_per_partition() -> None:
    consumer = _Consumer(ends={0: 100, 1: 50, 2: 9}, positions={0: 0, 1: 45, 2: 9})
    record = SimpleNamespace(offset=59)
    fetched = {TopicPartition("events", 0): [record]}
    assert await _backlog(consumer, fetched) == {0: 40, 1: 5, 2: 0}


def test_every_metric_passes_promtool_check_metrics() -> None:
    binary = shutil.which("promtool")
    if binary is None:
        pytest.skip("promtool is missing: scripts/dev-stack install (Debian package prometheus)")
    metrics = EngineMetrics()
    metrics.observe_batch(IngestTotals(valid_by_type=Counter(login=3)), 3, 0.01)
    metrics.observe_notification("cs-slack", "delivered", latency_s=1.5)
    metrics.count_delivery_retry("cs-slack")
    metrics.set_delivery_backlog("cs-slack", 1)
    metrics.count_redis_error("outbox_claim")
    metrics.count_kafka_error("fetch")
    metrics.observe_partitions({0: NOW.timestamp()}, {0: 3}, NOW.timestamp() + 5)
    metrics.set_health_tiers({"green": 3})
    metrics.set_silent_accounts(1)
    result = subprocess.run(
        [binary, "check", "metrics"],
        input=metrics.exposition().decode(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    labels = {name for (_, pairs) in samples(metrics) for name, _ in pairs}
    assert not labels & {"account_id", "user_id", "fingerprint"}


@pytest.mark.rule_failures
def test_rule_failures_are_counted_from_zero_and_logged_sparingly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from alerts.evaluate import Context
    from alerts.rules import NpsRule
    from stream.engagement import EngagementState

    metrics = EngineMetrics()
    metrics.watch_rules(["detractor", "usage-drop"])
    failures = ("engagewatch_rule_failures_total", (("rule", "detractor"),))
    assert samples(metrics)[failures] == 0
    rule = NpsRule.model_validate({"name": "detractor", "kind": "nps"})
    context = Context(EngagementState("acme"), None, NOW)
    with caplog.at_level(logging.ERROR, "alerts.sweep"):
        for _ in range(150):
            metrics.count_rule_failure(rule, context, ZeroDivisionError("a bug"))
    seen = samples(metrics)
    assert seen[failures] == 150
    assert seen[("engagewatch_rule_failures_total", (("rule", "usage-drop"),))] == 0
    logged = [r for r in caplog.records if "rule detractor failed on account acme" in r.message]
    assert len(logged) == 2  # the first, and the 101st
    assert logged[0].exc_info is not None


def test_waits_for_account_records_are_counted_from_zero_by_outcome() -> None:
    metrics = EngineMetrics()
    seen = samples(metrics)
    for outcome in ("read", "timed_out"):  # at 0 from the start, so the first one alerts
        assert seen[("engagewatch_account_record_waits_total", (("outcome", outcome),))] == 0
    metrics.count_record_wait(timed_out=False)
    metrics.count_record_wait(timed_out=True)
    metrics.count_record_wait(timed_out=False)
    seen = samples(metrics)
    assert seen[("engagewatch_account_record_waits_total", (("outcome", "read"),))] == 2
    assert seen[("engagewatch_account_record_waits_total", (("outcome", "timed_out"),))] == 1
