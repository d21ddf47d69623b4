"""Alerts end to end on the real broker: a simulated fleet in, alert events out.

The fleet ends "now", so the worker's wall-clock sweep judges it as it stands today:
the accounts that went quiet ~8 days ago and the champions who left ~11 days ago
must be alerted on, whatever weekday the test runs; healthy and weekday-only accounts
must not. A restarted worker remembers its alerts (changelog) and does not re-fire.
"""

from __future__ import annotations

import json
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from config.settings import Settings
from stream.simulate import FleetSpec, build_fleet, generate_events
from stream.topics import TopicNames
from tests.conftest import free_port
from tests.integration.harness import WorkerProcess, read_topic, wait_for
from tests.integration.test_engagement_kafka import publish

pytestmark = pytest.mark.kafka

SILENCE_RULES = {"account-silent", "champion-silent"}


def alert_events(settings: Settings) -> list[dict[str, Any]]:
    topic = TopicNames.from_settings(settings).alerts
    return [json.loads(v) for _, v, _, _ in read_topic(settings.kafka_bootstrap, topic) if v]


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def settled(settings: Settings, quiet_s: float = 4.0) -> list[dict[str, Any]]:
    """Wait until some alerts arrived and no new one for ``quiet_s``."""
    wait_for(lambda: alert_events(settings), 120, "the first alert events", 1)
    seen = len(alert_events(settings))
    while True:
        time.sleep(quiet_s)
        now = len(alert_events(settings))
        if now == seen:
            return alert_events(settings)
        seen = now


def test_fleet_alerts_name_the_quiet_accounts_and_restarts_do_not_refire(
    engine_settings: Settings, tmp_path: Path
) -> None:
    settings = engine_settings.model_copy(update={"sweep_interval_s": 1.0})
    end = datetime.now(UTC).replace(microsecond=0)
    fleet = build_fleet(FleetSpec(accounts=12, seed=7, as_of=end.date()))
    events = list(generate_events(fleet, end - timedelta(days=28), end, seed=7))
    behaviour = {account.account_id: account.behaviour for account in fleet}
    champions = {u.user_id: a.account_id for a in fleet for u in a.users if u.role == "champion"}

    first = WorkerProcess(settings.model_copy(update={"web_port": free_port()}), tmp_path / "w.log")
    first.start()
    try:
        publish(settings, fleet, events)
        alerts = settled(settings)
        metrics = scrape(first.settings.web_port)
    finally:
        assert first.stop() == 0
    # Ops see the same story on /metrics (Prometheus text format).
    assert metrics[("engagewatch_events_total", (("type", "login"),))] == sum(
        1 for e in events if e["type"] == "login"
    )
    fired = sum(v for (name, _), v in metrics.items() if name == "engagewatch_alert_changes_total")
    assert fired == len(alerts)

    # The worker judged the 28 days as they were read (the grid, docs/evaluation.md):
    # the topic holds every episode, closed ones too. What is open now:
    last: dict[str, dict[str, Any]] = {}
    for alert in alerts:  # per fingerprint in topic order (one key, one partition)
        last[alert["fingerprint"]] = alert
    open_now = [a for a in last.values() if a["status"] == "firing"]
    silent = {a["account_id"] for a in open_now if a["rule"] == "account-silent"}
    assert silent == {i for i, b in behaviour.items() if b == "going_quiet"}
    # The same accounts, counted for ops without naming them.
    assert metrics[("engagewatch_silent_accounts", ())] == len(silent)
    tiers = {
        dict(labels)["tier"]: v
        for (name, labels), v in metrics.items()
        if name == "engagewatch_accounts"
    }
    # Every account is scored but those still onboarding (the health rule skips them).
    assert sum(tiers.values()) == sum(1 for a in fleet if a.behaviour != "onboarding")
    # An open health alert means a tier below green.
    unhealthy = {a["account_id"] for a in open_now if a["rule"] == "health-tier"}
    assert tiers["yellow"] + tiers["red"] >= len(unhealthy)
    gone = {a["stakeholder"] for a in open_now if a["rule"] == "champion-silent"}
    leaving = {i for i, b in behaviour.items() if b == "champion_leaving"}
    assert {champions[user] for user in gone} >= leaving
    calm = {i for i, b in behaviour.items() if b in ("healthy", "weekday_only")}
    assert not [a for a in alerts if a["rule"] in SILENCE_RULES and a["account_id"] in calm]
    # Never a second firing while one is open: firing and resolved alternate.
    for fingerprint in last:
        kinds = [a["status"] for a in alerts if a["fingerprint"] == fingerprint and not a["repeat"]]
        assert kinds == ["firing", "resolved"] * (len(kinds) // 2) + ["firing"] * (len(kinds) % 2)
    sample = next(a for a in alerts if a["rule"] == "account-silent")
    assert sample["evidence"]["value"] >= sample["evidence"]["threshold"] >= 3
    assert sample["account"]["name"] and sample["annotations"]["summary"]

    second = WorkerProcess(
        settings.model_copy(update={"web_port": free_port()}), tmp_path / "w.log"
    )
    second.start()
    try:
        time.sleep(6)  # several sweeps over state and alerts rebuilt from the changelogs
        assert len(alert_events(settings)) == len(alerts)
    finally:
        assert second.stop() == 0
