"""On-call payloads: Alertmanager's identity by labels, PagerDuty's by dedup key, and
signed webhooks."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from alerts.events import alert_event
from alerts.lifecycle import Finding, LifecyclePolicy, transition
from alerts.render.common import RenderOptions
from alerts.render.oncall import (
    alertmanager_alerts,
    pagerduty_event,
    verify_webhook,
    webhook_body,
    webhook_headers,
)
from stream.accounts import Account

NOW = datetime(2026, 11, 23, 9, tzinfo=UTC)
OPTIONS = RenderOptions(now=NOW, triage_url="https://ew.example.com")
ACME = Account(
    "acme", "Acme Corp", 1000, segment="enterprise", arr=120000, renewal_date=date(2027, 1, 2)
)
LINK = "https://ew.example.com/triage/account/acme"


def finding(active: bool, value: int, severity: str = "critical") -> Finding:
    return Finding(
        "account-silent",
        "acme",
        active,
        severity,
        evidence={"metric": "missed_working_days", "value": value, "threshold": 4},
        labels={"rule": "account-silent", "account_id": "acme", "segment": "enterprise"},
        annotations={"summary": f"Acme Corp has been silent for {value} working days"},
    )


def episode() -> list[dict[str, Any]]:
    """One alert's events through the real lifecycle: firing, a repeat a day later with
    new evidence, then resolved."""
    policy = LifecyclePolicy(repeat_interval_s=3600)
    events = []
    state = None
    for hours, active, value in ((0, True, 5), (24, True, 6), (48, False, 0)):
        at = NOW + timedelta(hours=hours)
        state, change = transition(state, finding(active, value), at, policy)
        assert change is not None
        events.append(alert_event(change, ACME, at))
    return events


# --- Alertmanager --------------------------------------------------------------------


def test_alertmanager_alerts_carry_identity_labels_and_evidence_annotations() -> None:
    firing = episode()[0]
    [posted] = alertmanager_alerts([firing], OPTIONS)
    assert posted == {
        "labels": {
            "alertname": "account-silent",
            "rule": "account-silent",
            "account_id": "acme",
            "segment": "enterprise",
            "severity": "critical",
            "engagewatch_fingerprint": firing["fingerprint"],
        },
        "annotations": {
            "summary": "Acme Corp has been silent for 5 working days",
            "metric": "missed_working_days",
            "value": "5",
            "threshold": "4",
        },
        "startsAt": "2026-11-23T09:00:00Z",
        "generatorURL": LINK,
    }


def test_labels_are_identical_across_an_episode_so_the_resolution_resolves_it() -> None:
    """Alertmanager knows an alert by its labels: a resolution with other labels would
    leave the firing alert open."""
    firing, repeat, resolved = alertmanager_alerts(episode(), OPTIONS)
    assert firing["labels"] == repeat["labels"] == resolved["labels"]
    assert firing["annotations"]["value"] != repeat["annotations"]["value"]
    assert "endsAt" not in firing and "endsAt" not in repeat
    assert resolved["endsAt"] == "2026-11-25T09:00:00Z"
    assert resolved["startsAt"] == firing["startsAt"]


def test_label_names_are_made_valid_and_values_strings() -> None:
    alert = {
        **episode()[0],
        "stakeholder": "u-9",
        "labels": {"team.name": "cs", "9lives": 9, "tier-x": None, "severity": "spoofed"},
    }
    labels = alertmanager_alerts([alert], RenderOptions(now=NOW))[0]["labels"]
    assert labels["team_name"] == "cs" and labels["_9lives"] == "9"
    assert labels["severity"] == "critical" and labels["stakeholder"] == "u-9"
    assert "tier_x" not in labels  # an empty label is no label


@given(st.dictionaries(st.text(max_size=20), st.text(max_size=20) | st.integers(), max_size=8))
def test_any_event_labels_become_valid_alertmanager_labels(labels: dict[str, Any]) -> None:
    posted = alertmanager_alerts([{**episode()[0], "labels": labels}], OPTIONS)[0]
    for kind in ("labels", "annotations"):
        for name, value in posted[kind].items():
            assert re.fullmatch(r"[a-zA-Z_][a-zA-Z0-9_]*", name)
            assert isinstance(value, str) and value


def test_no_triage_url_no_generator_url() -> None:
    assert "generatorURL" not in alertmanager_alerts(episode()[:1], RenderOptions(now=NOW))[0]


# --- PagerDuty -----------------------------------------------------------------------


def test_a_firing_alert_triggers_with_the_fingerprint_as_dedup_key() -> None:
    firing = episode()[0]
    assert pagerduty_event(firing, OPTIONS, routing_key="R") == {
        "routing_key": "R",
        "event_action": "trigger",
        "dedup_key": firing["fingerprint"],
        "payload": {
            "summary": "Acme Corp has been silent for 5 working days",
            "source": "acme",
            "severity": "critical",
            "timestamp": "2026-11-23T09:00:00Z",
            "component": "account-silent",
            "group": "enterprise",
            "class": "account-silent",
            "custom_details": {"evidence": firing["evidence"], "account": firing["account"]},
        },
        "links": [{"href": LINK, "text": "Open in triage"}],
    }


def test_a_repeat_triggers_again_and_a_resolution_resolves_the_same_key() -> None:
    firing, repeat, resolved = episode()
    again = pagerduty_event(repeat, OPTIONS, routing_key="R")
    assert again["event_action"] == "trigger" and again["dedup_key"] == firing["fingerprint"]
    assert pagerduty_event(resolved, OPTIONS, routing_key="R") == {
        "routing_key": "R",
        "event_action": "resolve",
        "dedup_key": firing["fingerprint"],
    }


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [("critical", "critical"), ("warning", "warning"), ("info", "info"), ("page-me", "warning")],
)
def test_severities_map_onto_pagerdutys_four(ours: str, theirs: str) -> None:
    alert = {**episode()[0], "severity": ours}
    assert pagerduty_event(alert, OPTIONS, routing_key="R")["payload"]["severity"] == theirs


def test_a_long_summary_is_cut_and_a_bare_alert_still_triggers() -> None:
    long = {**episode()[0], "annotations": {"summary": "x" * 5000}}
    summary = pagerduty_event(long, OPTIONS, routing_key="R")["payload"]["summary"]
    assert len(summary) == 1024 and summary.endswith("…")
    bare = {**episode()[0], "annotations": {}, "account": None, "evidence": {}}
    event = pagerduty_event(bare, RenderOptions(now=NOW), routing_key="R")
    assert event["payload"]["summary"] == "acme: account-silent"
    assert "group" not in event["payload"] and "links" not in event


# --- webhooks ------------------------------------------------------------------------


def test_the_webhook_body_is_canonical_json() -> None:
    alerts = [{"b": 1, "a": {"z": "ü", "y": None}}]
    assert (
        webhook_body(alerts) == '{"alerts":[{"a":{"y":null,"z":"ü"},"b":1}],"version":1}'.encode()
    )
    firing = episode()[0]
    assert json.loads(webhook_body([firing])) == {"version": 1, "alerts": [firing]}
    with pytest.raises(ValueError):
        webhook_body([{"value": float("nan")}])


def test_webhooks_are_signed_and_tampering_is_detected() -> None:
    secret, body = b"s3cret", webhook_body(episode())
    headers = webhook_headers(secret, 1_790_000_000, body)
    expected = hmac.new(secret, b"1790000000." + body, hashlib.sha256).hexdigest()
    assert headers == {
        "Content-Type": "application/json",
        "X-Engagewatch-Timestamp": "1790000000",
        "X-Engagewatch-Signature": f"sha256={expected}",
    }
    signature = headers["X-Engagewatch-Signature"]
    assert verify_webhook(secret, 1_790_000_000, body, signature)
    assert not verify_webhook(secret, 1_790_000_000, body.replace(b"acme", b"acmf"), signature)
    assert not verify_webhook(secret, 1_790_000_001, body, signature)
    assert not verify_webhook(b"other", 1_790_000_000, body, signature)
    flipped = signature[:-1] + ("1" if signature.endswith("0") else "0")
    assert not verify_webhook(secret, 1_790_000_000, body, flipped)
    assert not verify_webhook(secret, 1_790_000_000, body, "sha256=ü")
