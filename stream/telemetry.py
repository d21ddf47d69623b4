"""Prometheus metrics of one worker, served at ``/metrics`` on its web port.

One registry per app (tests build many apps in one process), one prefix
(``engagewatch_``), units in names, and never an account or user id as a label: the
label sets stay small however many accounts there are. Updated in bulk, once per
batch or sweep, never per event.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from alerts.lifecycle import AlertState, Change, ChangeKind
from stream.pipeline import IngestTotals

__all__ = ["EngineMetrics"]

_BATCH_SIZES = (1, 10, 100, 500, 1_000, 2_000, 5_000, 10_000)
_SECONDS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class EngineMetrics:
    """The worker's instruments and the bookkeeping that feeds them."""

    def __init__(self) -> None:
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
        self._seen = IngestTotals()

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
        for change in changes:
            status = "resolved" if change.kind is ChangeKind.RESOLVED else change.kind.value
            self.alert_changes.labels(change.alert.rule, change.alert.severity, status).inc()
        self.open_alerts.clear()
        for alert in open_alerts:
            self.open_alerts.labels(alert.rule, alert.severity).inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
