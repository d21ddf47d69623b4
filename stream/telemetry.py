"""Prometheus metrics of one worker, served at ``/metrics`` on its web port.

One registry per app (tests build many apps in one process), one prefix
(``engagewatch_``), units in names, and never an account, user or fingerprint as a
label: the label sets stay small however many accounts there are. Updated in bulk,
once per batch, sweep or scrape, never per event.

Label values that are known and finite (outcomes, tiers, the engine's own Kafka
operations) are created at zero up front, and a receiver's whole set the first time it
is seen: Prometheus' ``increase()`` cannot count the first increment of a series it
has never seen, so the first failure would otherwise go unnoticed by the alerts.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Protocol, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from alerts.evaluate import Context
from alerts.lifecycle import AlertState, Change, ChangeKind
from alerts.rules import Rule
from alerts.sweep import log_failure
from stream.events import KINDS
from stream.pipeline import STATE_TOO_LARGE, IngestTotals

__all__ = [
    "HEALTH_TIERS",
    "KAFKA_OPERATIONS",
    "NOTIFICATION_OUTCOMES",
    "EngineMetrics",
    "PartitionProgress",
    "counting_errors",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

_BATCH_SIZES = (1, 10, 100, 500, 1_000, 2_000, 5_000, 10_000)
_SECONDS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_DELIVERY_SECONDS = (
    0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0,
    1_800.0, 3_600.0, 7_200.0, 14_400.0, 28_800.0, 43_200.0,
)  # fmt: skip
"""Alert generated -> delivered: seconds normally, up to half a day when quiet hours defer."""

NOTIFICATION_OUTCOMES = (
    "delivered",
    "retry",
    "permanent",
    "dead_lettered",
    "suppressed",
    "deferred",
)
HEALTH_TIERS = ("green", "yellow", "red")
KAFKA_OPERATIONS = ("fetch", "offsets", "flush", "commit", "send_alert", "send_dead_letter")
REDIS_OPERATIONS = (
    "enqueue",  # the notifier: queueing alert events,
    "deliver",  # its delivery passes,
    "record",  # recording outcomes
    "index_refresh",  # the sweeper's triage index
    "index_write",
    "forget_accounts",
    "resolve_read",
    "api",  # the triage API
)
"""The Redis operations whose failures the engine counts (created at 0 at start)."""
"""Where the worker itself talks to Kafka (stream/bulk.py and stream/app.py)."""


class PartitionProgress(Protocol):
    """What the bulk reader knows per partition (``stream.bulk.ReaderProgress``)."""

    @property
    def newest_by_partition(self) -> Mapping[int, float]: ...

    @property
    def backlog_by_partition(self) -> Mapping[int, int]: ...

    @property
    def heard_at(self) -> float | None: ...


class EngineMetrics:
    """The worker's instruments and the bookkeeping that feeds them; ``reader``, when
    given, refreshes the per-partition gauges at every scrape."""

    def __init__(self, reader: PartitionProgress | None = None) -> None:
        self._reader = reader
        self.registry = CollectorRegistry()
        r = self.registry
        self.events = Counter(
            "engagewatch_events", "Valid usage events consumed, by type.", ["type"], registry=r
        )
        self.duplicates = Counter(
            "engagewatch_duplicate_events", "Events whose id was already counted.", registry=r
        )
        self.dead_letters = Counter(
            "engagewatch_dead_letters",
            "Messages sent to the dead-letter topic, by reason.",
            ["reason"],
            registry=r,
        )
        self.batch_events = Histogram(
            "engagewatch_batch_events",
            "Messages per ingest batch.",
            buckets=_BATCH_SIZES,
            registry=r,
        )
        self.batch_seconds = Histogram(
            "engagewatch_batch_duration_seconds",
            "Time to triage and fold one batch.",
            buckets=_SECONDS,
            registry=r,
        )
        self.newest_event = Gauge(
            "engagewatch_newest_event_timestamp_seconds",
            "Event time of the newest event this worker folded.",
            registry=r,
        )
        self.backlog = Gauge(
            "engagewatch_ingest_backlog_messages",
            "Unread messages on this worker's event partitions.",
            registry=r,
        )
        self.partition_lag = Gauge(
            "engagewatch_event_time_lag_seconds",
            "Now minus the Kafka timestamp of the last event read, per owned partition.",
            ["partition"],
            registry=r,
        )
        self.consumer_lag = Gauge(
            "engagewatch_consumer_lag_messages",
            "Unread messages per owned event partition.",
            ["partition"],
            registry=r,
        )
        self.fetch_age = Gauge(
            "engagewatch_kafka_fetch_age_seconds",
            "Seconds since the broker last answered a fetch for the least recently "
            "answered of this worker's event partitions (0: none owned).",
            registry=r,
        )
        self.alert_changes = Counter(
            "engagewatch_alert_changes",
            "Alert changes published, by rule, severity and status.",
            ["rule", "severity", "status"],
            registry=r,
        )
        self.open_alerts = Gauge(
            "engagewatch_open_alerts",
            "Firing alerts, by rule and severity.",
            ["rule", "severity"],
            registry=r,
        )
        self.sweep_seconds = Histogram(
            "engagewatch_sweep_duration_seconds",
            "Time to evaluate the rules over this worker's accounts.",
            buckets=_SECONDS,
            registry=r,
        )
        self.sweeps_held = Counter(
            "engagewatch_sweeps_held", "Sweeps skipped because the input was behind.", registry=r
        )
        self.record_waits = Counter(
            "engagewatch_account_record_waits",
            "Waits for the account records published before a new account's first events.",
            ["outcome"],
            registry=r,
        )
        for outcome in ("read", "timed_out"):
            self.record_waits.labels(outcome)
        self.accounts = Gauge(
            "engagewatch_accounts",
            "This worker's accounts, by health tier.",
            ["tier"],
            registry=r,
        )
        self.silent_accounts = Gauge(
            "engagewatch_silent_accounts",
            "This worker's accounts with no recent activity.",
            registry=r,
        )
        self.alert_events_unsent = Gauge(
            "engagewatch_alert_events_unsent",
            "Alert events this worker's books keep that Kafka has not acknowledged yet "
            "(after the last sweep): receivers have not heard of them.",
            registry=r,
        )
        self.notifications = Counter(
            "engagewatch_notifications",
            "Notification attempts and decisions, by receiver and outcome.",
            ["receiver", "outcome"],
            registry=r,
        )
        self.notification_latency = Histogram(
            "engagewatch_notification_latency_seconds",
            "Time from an alert change being generated to its delivery, by receiver.",
            ["receiver"],
            buckets=_DELIVERY_SECONDS,
            registry=r,
        )
        self.notification_retries = Counter(
            "engagewatch_notification_retries",
            "Delivery retries scheduled, by receiver.",
            ["receiver"],
            registry=r,
        )
        self.notifications_pending = Gauge(
            "engagewatch_notifications_pending",
            "Notifications due and not delivered yet (queued or awaiting a retry), by receiver.",
            ["receiver"],
            registry=r,
        )
        self.redis_errors = Counter(
            "engagewatch_redis_errors", "Failed Redis operations.", ["operation"], registry=r
        )
        self.kafka_errors = Counter(
            "engagewatch_kafka_errors", "Failed Kafka operations.", ["operation"], registry=r
        )
        self.rule_failures = Counter(
            "engagewatch_rule_failures",
            "Evaluations of one rule on one account that raised (it judged nothing then).",
            ["rule"],
            registry=r,
        )
        self._rule_failures_seen: dict[str, int] = {}
        for tier in HEALTH_TIERS:
            self.accounts.labels(tier)
        for operation in KAFKA_OPERATIONS:
            self.kafka_errors.labels(operation)
        self.declare_redis_operations(REDIS_OPERATIONS)
        # A worker started while producers are down must still show it reads nothing
        # (EngagewatchNoEvents), and the first state_too_large must alert: both at 0.
        for kind in KINDS:
            self.events.labels(kind.value)
        self.dead_letters.labels(STATE_TOO_LARGE)  # the others vary by field
        self._receivers: set[str] = set()
        self._seen = IngestTotals()

    # --- ingest and sweep --------------------------------------------------------------

    def observe_batch(self, totals: IngestTotals, messages: int, seconds: float) -> None:
        """Count what the pipeline's running totals gained in this batch."""
        for kind, count in (totals.valid_by_type - self._seen.valid_by_type).items():
            self.events.labels(kind).inc(count)
        for reason, count in (totals.dead_by_reason - self._seen.dead_by_reason).items():
            self.dead_letters.labels(reason).inc(count)
        self.duplicates.inc(totals.duplicates - self._seen.duplicates)
        self._seen = IngestTotals(
            valid_by_type=totals.valid_by_type.copy(),
            duplicates=totals.duplicates,
            dead_by_reason=totals.dead_by_reason.copy(),
        )
        self.batch_events.observe(messages)
        self.batch_seconds.observe(seconds)
        if totals.newest_event_at is not None:
            self.newest_event.set(totals.newest_event_at)

    def set_partition_lag(self, partition: int, seconds: float) -> None:
        """A producer clock ahead of ours would make it negative: shown as 0."""
        self.partition_lag.labels(str(partition)).set(max(0.0, seconds))

    def set_consumer_lag(self, partition: int, messages: int) -> None:
        self.consumer_lag.labels(str(partition)).set(messages)

    def observe_partitions(
        self, newest: Mapping[int, float], backlog: Mapping[int, int], now: float
    ) -> None:
        """Replace the per-partition gauges with the partitions the reader holds now.

        Computed at scrape time from the last read timestamps, so a stalled reader shows
        a growing lag instead of the last value it managed to report; partitions handed
        to another worker disappear instead of freezing.
        """
        self.partition_lag.clear()
        self.consumer_lag.clear()
        for partition, newest_at in newest.items():
            self.set_partition_lag(partition, now - newest_at)
        for partition, messages in backlog.items():
            self.set_consumer_lag(partition, messages)

    def observe_sweep(
        self,
        changes: Iterable[Change],
        open_alerts: Iterable[AlertState],
        seconds: float,
        held: bool,
    ) -> None:
        if held:
            self.sweeps_held.inc()
            return
        self.sweep_seconds.observe(seconds)
        self.count_alert_changes(changes)
        self.open_alerts.clear()
        for alert in open_alerts:
            self.open_alerts.labels(alert.rule, alert.severity).inc()

    def count_alert_changes(self, changes: Iterable[Change]) -> None:
        """Alert changes published, whether judged by the sweep or as events arrived."""
        for change in changes:
            status = "resolved" if change.kind is ChangeKind.RESOLVED else change.kind.value
            self.alert_changes.labels(change.alert.rule, change.alert.severity, status).inc()

    def watch_rules(self, names: Iterable[str]) -> None:
        """Create the rules' failure series at zero, so the first failure shows."""
        for name in names:
            self.rule_failures.labels(name)

    def count_rule_failure(self, rule: Rule, context: Context, error: Exception) -> None:
        """Count a rule that raised on an account; log the first failure of each rule
        and then every hundredth (until fixed, it fails again at each of the account's
        evaluations, and maybe on every account)."""
        self.rule_failures.labels(rule.name).inc()
        seen = self._rule_failures_seen.get(rule.name, 0)
        self._rule_failures_seen[rule.name] = seen + 1
        if seen % 100 == 0:
            log_failure(rule, context, error)

    def set_health_tiers(self, counts: Mapping[str, int]) -> None:
        """Replace every tier: a tier missing from ``counts`` has no accounts now."""
        self.accounts.clear()
        for tier in (*HEALTH_TIERS, *sorted(set(counts) - set(HEALTH_TIERS))):
            self.accounts.labels(tier).set(counts.get(tier, 0))

    def set_silent_accounts(self, count: int) -> None:
        self.silent_accounts.set(count)

    def set_alert_events_unsent(self, count: int) -> None:
        self.alert_events_unsent.set(count)

    # --- delivery ------------------------------------------------------------------------

    def declare_receivers(self, receivers: Iterable[str]) -> None:
        """Create every series of these receivers at zero (call at notifier start)."""
        for receiver in receivers:
            if receiver not in self._receivers:
                self._receivers.add(receiver)
                for outcome in NOTIFICATION_OUTCOMES:
                    self.notifications.labels(receiver, outcome)
                self.notification_retries.labels(receiver)

    def observe_notification(
        self, receiver: str, outcome: str, latency_s: float | None = None
    ) -> None:
        """One attempt's or decision's outcome; ``latency_s`` once it is delivered."""
        if outcome not in NOTIFICATION_OUTCOMES:
            raise ValueError(f"unknown notification outcome {outcome!r}")
        self.declare_receivers((receiver,))
        self.notifications.labels(receiver, outcome).inc()
        if latency_s is not None:
            self.notification_latency.labels(receiver).observe(max(0.0, latency_s))

    def count_delivery_retry(self, receiver: str) -> None:
        self.declare_receivers((receiver,))
        self.notification_retries.labels(receiver).inc()

    def set_delivery_backlog(self, receiver: str, pending: int) -> None:
        """Due, or awaiting a retry, and undelivered; not those held for quiet hours or a
        digest. Reported by the worker holding the receiver's lease (the others: 0)."""
        self.declare_receivers((receiver,))
        self.notifications_pending.labels(receiver).set(pending)

    # --- dependencies --------------------------------------------------------------------

    def declare_redis_operations(self, operations: Iterable[str]) -> None:
        """Create these operations' error counters at zero, so the first error alerts."""
        for operation in operations:
            self.redis_errors.labels(operation)

    def count_record_wait(self, timed_out: bool) -> None:
        self.record_waits.labels("timed_out" if timed_out else "read").inc()

    def count_redis_error(self, operation: str) -> None:
        self.redis_errors.labels(operation).inc()

    def count_kafka_error(self, operation: str) -> None:
        self.kafka_errors.labels(operation).inc()

    async def counting_kafka_errors(self, operation: str, call: Awaitable[T]) -> T:
        """``await call``, counting and logging its failure before it propagates."""
        with counting_errors(self.count_kafka_error, "kafka", operation, log):
            return await call

    def exposition(self) -> bytes:
        if self._reader is not None:
            reader = self._reader
            now = time.time()
            self.observe_partitions(reader.newest_by_partition, reader.backlog_by_partition, now)
            # At the scrape, not by the sweep: a sweep stuck on Kafka froze it (a review).
            self.backlog.set(sum(reader.backlog_by_partition.values()))
            heard_at = reader.heard_at
            self.fetch_age.set(0.0 if heard_at is None else max(0.0, now - heard_at))
        return generate_latest(self.registry)


@contextmanager
def counting_errors(
    count: Callable[[str], None], system: str, operation: str, logger: logging.Logger
) -> Iterator[None]:
    """Count (``count(operation)``) and log a failure, then let it propagate unchanged:
    the caller's error handling stays what it was, the failure just becomes visible."""
    try:
        yield
    except Exception as exc:
        count(operation)
        logger.warning("%s %s failed: %s: %s", system, operation, type(exc).__name__, exc)
        raise
