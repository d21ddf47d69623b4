"""The Grafana dashboard only queries metrics the worker really exports."""

from __future__ import annotations

import json
import re
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

from alerts.lifecycle import AlertState, Change, ChangeKind, Status
from stream.pipeline import IngestTotals
from stream.telemetry import EngineMetrics

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "deploy" / "grafana" / "dashboards" / "engagewatch.json"
NOW = datetime(2026, 11, 23, tzinfo=UTC)


def exported_names() -> set[str]:
    """Every sample name the worker exposes once each metric has a value."""
    metrics = EngineMetrics()
    totals = IngestTotals(
        valid_by_type=Counter(login=1), duplicates=1, dead_by_reason=Counter(late=1)
    )
    metrics.observe_batch(totals, 1, 0.01)
    alert = AlertState("f", "r", "a", Status.FIRING, "warning", starts_at=NOW)
    metrics.observe_sweep([Change(ChangeKind.FIRING, alert, NOW)], [alert], 0.1, held=False)
    metrics.observe_sweep([], [], 0.0, held=True)
    metrics.observe_partitions({0: 1.0}, {0: 0}, now=2.0)
    metrics.observe_notification("r", "delivered", latency_s=1.0)
    metrics.count_delivery_retry("r")
    metrics.set_delivery_backlog("r", 0)
    metrics.count_redis_error("get")
    metrics.watch_rules(["r"])
    metrics.set_health_tiers({"green": 1})
    text = metrics.exposition().decode()
    return set(re.findall(r"^(engagewatch_[a-z_]+)", text, re.MULTILINE))


def test_every_panel_queries_exported_metrics() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    names = exported_names()
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    assert len(dashboard["panels"]) >= 8
    for expr in exprs:
        used = set(re.findall(r"engagewatch_[a-z_]+", expr))
        assert used, expr
        assert used <= names, f"{expr}: {used - names} is not exported"
    assert len({panel["id"] for panel in dashboard["panels"]}) == len(dashboard["panels"])


def test_compose_provisions_the_dashboard() -> None:
    provider = REPO / "deploy" / "grafana" / "provisioning" / "dashboards" / "engagewatch.yml"
    assert "/var/lib/grafana/dashboards" in provider.read_text()
    compose = (REPO / "docker-compose.yml").read_text()
    assert "./deploy/grafana/dashboards:/var/lib/grafana/dashboards" in compose
