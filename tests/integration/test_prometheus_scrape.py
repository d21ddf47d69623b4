"""A real Prometheus scrapes a real worker: what ops will see, read back through its API.

The unit tests parse the exposition; this proves the whole path: the worker's
``/metrics`` is scraped by Debian's Prometheus server, the counters add up to exactly
what was produced, the per-partition series name the partitions that hold the events,
the engine's alerting rules load and evaluate without error, and every dashboard
query is accepted by the real PromQL engine.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from config.settings import Settings
from stream.telemetry import KAFKA_OPERATIONS
from stream.topics import TopicNames
from tests.integration.harness import WorkerProcess, read_topic, wait_for
from tests.integration.test_ingest_kafka import produce, valid_event
from tests.servers.prometheus import PrometheusServer, binary, running_prometheus

pytestmark = pytest.mark.kafka

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "deploy" / "prometheus" / "engagewatch-rules.yml"
DASHBOARD = REPO / "deploy" / "grafana" / "dashboards" / "engagewatch.json"
RULE_GROUPS = {"engagewatch-pipeline", "engagewatch-dependencies", "engagewatch-delivery"}
VALID = 120
BROKEN = 3
DEADLINE_S = 60.0


def until(prometheus: PrometheusServer, expr: str, expected: float) -> None:
    """Poll a query until it yields ``expected`` (scrapes land every second)."""
    last: list[float | None] = [None]

    def reached() -> bool:
        last[0] = prometheus.value(expr)
        return last[0] == expected

    try:
        wait_for(reached, DEADLINE_S, f"{expr} == {expected} in Prometheus")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; last value {last[0]}") from None


def rules_evaluated(prometheus: PrometheusServer) -> bool:
    groups = {group["name"]: group for group in prometheus.rule_groups()}
    return set(groups) == RULE_GROUPS and all(
        rule["health"] == "ok" for group in groups.values() for rule in group["rules"]
    )


def test_prometheus_scrapes_the_worker_and_reads_back_what_was_produced(
    engine_settings: Settings, tmp_path: Path
) -> None:
    if binary() is None:
        pytest.skip("no prometheus server: scripts/dev-stack install (Debian package prometheus)")
    settings: Settings = engine_settings
    events = [valid_event(i, prefix="scrape") for i in range(VALID)]
    by_type = Counter(kind for _, _, kind in events)
    broken: list[tuple[bytes | None, bytes]] = [(b"acct-00", b"{not json")] * BROKEN

    worker = WorkerProcess(settings, tmp_path / "worker.log")
    worker.start()
    try:
        produce(settings, [(key, value) for key, value, _ in events] + broken)
        topic = TopicNames.from_settings(settings).events
        holding = {partition for _, _, partition, _ in read_topic(settings.kafka_bootstrap, topic)}
        target = f"127.0.0.1:{settings.web_port}"
        with running_prometheus(tmp_path / "prometheus", [target], [RULES]) as prometheus:
            until(prometheus, "sum(engagewatch_events_total)", VALID)
            for kind, count in by_type.items():
                until(prometheus, f'sum(engagewatch_events_total{{type="{kind}"}})', count)
            until(prometheus, 'sum(engagewatch_dead_letters_total{reason="invalid_json"})', BROKEN)
            # Everything read: no unread message on any of the worker's 4 partitions, and
            # a lag series for exactly the partitions that hold events.
            until(prometheus, "count(engagewatch_consumer_lag_messages)", settings.partitions)
            until(prometheus, "sum(engagewatch_consumer_lag_messages)", 0)
            until(prometheus, "count(engagewatch_event_time_lag_seconds)", len(holding))
            lag = prometheus.query("engagewatch_event_time_lag_seconds")
            assert {series["metric"]["partition"] for series in lag} == {str(p) for p in holding}
            assert all(0 <= float(series["value"][1]) < DEADLINE_S * 3 for series in lag)
            # Error counters exist at zero before the first error (alerts see the first).
            until(prometheus, "count(engagewatch_kafka_errors_total)", len(KAFKA_OPERATIONS))
            assert prometheus.value("sum(engagewatch_kafka_errors_total)") == 0

            [scraped] = prometheus.targets()
            assert scraped["health"] == "up", scraped
            assert scraped["labels"] == {"instance": target, "job": "engagewatch"}
            assert scraped["scrapeUrl"] == f"http://{target}/metrics"

            wait_for(lambda: rules_evaluated(prometheus), DEADLINE_S, "rules evaluated, ok")
            for group in prometheus.rule_groups():
                assert all(not rule.get("lastError") for rule in group["rules"]), group

            panels = json.loads(DASHBOARD.read_text())["panels"]
            for expr in (t["expr"] for panel in panels for t in panel["targets"]):
                prometheus.query(expr)  # raises unless the real PromQL engine accepts it
    finally:
        assert worker.stop() == 0
