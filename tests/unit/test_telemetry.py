"""Worker metrics: bulk updates from running totals, and no per-account labels."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime

from prometheus_client.parser import text_string_to_metric_families

from alerts.lifecycle import AlertState, Change, ChangeKind, Status
from stream.pipeline import IngestTotals
from stream.telemetry import EngineMetrics

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
