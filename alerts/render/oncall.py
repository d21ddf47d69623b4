"""Alert events for on-call tools: Alertmanager, PagerDuty and signed webhooks.

Alertmanager knows an alert only by its label set: a resolution resolves the alert
with exactly the same labels, and a label that differs makes a second alert that never
resolves (it only expires). So labels hold nothing that changes within an episode:
no evidence, no status, no time, nothing rendered relative to "now". Everything that
does change goes into annotations. PagerDuty is simpler: it deduplicates on
``dedup_key``, our fingerprint.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from alerts.render.common import RenderOptions, account_link, clip, headline, transition

__all__ = [
    "WEBHOOK_VERSION",
    "alertmanager_alerts",
    "pagerduty_event",
    "verify_webhook",
    "webhook_body",
    "webhook_headers",
]

WEBHOOK_VERSION = 1
PAGERDUTY_SUMMARY_MAX = 1024

_PAGERDUTY_SEVERITY = {
    "critical": "critical",
    "error": "error",
    "warning": "warning",
    "info": "info",
}
"""Our severities in PagerDuty's four; an unknown one pages as a warning."""


# --- Alertmanager --------------------------------------------------------------------


def alertmanager_alerts(
    alerts: Sequence[Mapping[str, Any]], options: RenderOptions
) -> list[dict[str, Any]]:
    """Postable alerts for Alertmanager's ``POST /api/v2/alerts``.

    ``endsAt`` is set for resolved alerts only. A firing alert without it is taken by
    Alertmanager to end ``resolve_timeout`` after it was last posted, so whoever posts
    these must re-post open alerts more often than that.
    """
    return [_alertmanager_alert(alert, options) for alert in alerts]


def _alertmanager_alert(alert: Mapping[str, Any], options: RenderOptions) -> dict[str, Any]:
    posted: dict[str, Any] = {
        "labels": _labels(alert),
        "annotations": _annotations(alert),
    }
    if alert.get("starts_at"):
        posted["startsAt"] = str(alert["starts_at"])
    if transition(alert) == "resolved" and alert.get("ends_at"):
        posted["endsAt"] = str(alert["ends_at"])
    link = account_link(options, str(alert.get("account_id") or ""))
    if link is not None:
        posted["generatorURL"] = link
    return posted


def _labels(alert: Mapping[str, Any]) -> dict[str, str]:
    """The alert's identity in Alertmanager: the event's labels plus ``alertname``,
    ``account_id``, ``severity``, ``engagewatch_fingerprint`` and ``stakeholder`` (ours
    win a clash), names made valid (``[a-zA-Z_][a-zA-Z0-9_]*``), empty values left out."""
    labels = alert.get("labels")
    own = {
        "alertname": alert.get("rule"),
        "account_id": alert.get("account_id"),
        "severity": alert.get("severity"),
        "engagewatch_fingerprint": alert.get("fingerprint"),
        "stakeholder": alert.get("stakeholder"),
    }
    merged = _named(labels if isinstance(labels, Mapping) else {})
    merged.update(_named(own))
    return {name: value for name, value in merged.items() if value}


def _annotations(alert: Mapping[str, Any]) -> dict[str, str]:
    """The evidence as strings (``value``, ``threshold``, …), then the rule's summary
    and description, which win a clash."""
    evidence = alert.get("evidence")
    annotations = alert.get("annotations")
    merged = _named(evidence if isinstance(evidence, Mapping) else {})
    merged.update(_named(annotations if isinstance(annotations, Mapping) else {}))
    return {name: value for name, value in merged.items() if value}


_INVALID = re.compile(r"[^a-zA-Z0-9_]")


def _named(values: Mapping[str, Any]) -> dict[str, str]:
    """Valid label names and string values, in a fixed order so that two names that
    become the same (``a-b``, ``a.b``) always resolve the same way."""
    named: dict[str, str] = {}
    for key in sorted(values, key=str):
        name = _INVALID.sub("_", str(key))
        if not name or name[0].isdigit():
            name = "_" + name
        named[name] = _as_string(values[key])
    return named


def _as_string(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


# --- PagerDuty -----------------------------------------------------------------------


def pagerduty_event(
    alert: Mapping[str, Any], options: RenderOptions, *, routing_key: str
) -> dict[str, Any]:
    """An Events API v2 event: ``trigger`` for a firing alert and for a repeat (PagerDuty
    folds it into the open incident by ``dedup_key``), ``resolve`` for a resolution."""
    dedup_key = str(alert.get("fingerprint") or "")
    if transition(alert) == "resolved":
        return {"routing_key": routing_key, "event_action": "resolve", "dedup_key": dedup_key}
    annotations = alert.get("annotations")
    notes = annotations if isinstance(annotations, Mapping) else {}
    account = alert.get("account")
    summary = str(notes.get("summary") or "").strip() or headline(alert)
    payload: dict[str, Any] = {
        "summary": clip(summary, PAGERDUTY_SUMMARY_MAX),
        "source": str(alert.get("account_id") or "engagewatch"),
        "severity": _PAGERDUTY_SEVERITY.get(str(alert.get("severity")).lower(), "warning"),
        "component": str(alert.get("rule") or ""),
        "class": str(alert.get("rule") or ""),
        "custom_details": _details(alert, notes),
    }
    if alert.get("starts_at"):
        payload["timestamp"] = str(alert["starts_at"])
    if isinstance(account, Mapping) and account.get("segment"):
        payload["group"] = str(account["segment"])
    event: dict[str, Any] = {
        "routing_key": routing_key,
        "event_action": "trigger",
        "dedup_key": dedup_key,
        "payload": payload,
    }
    link = account_link(options, str(alert.get("account_id") or ""))
    if link is not None:
        event["links"] = [{"href": link, "text": "Open in triage"}]
    return event


def _details(alert: Mapping[str, Any], notes: Mapping[str, Any]) -> dict[str, Any]:
    """The evidence and the account record as the event has them: raw values, since
    an incident outlives any "3 days ago" written when it opened."""
    details = {
        "description": notes.get("description"),
        "stakeholder": alert.get("stakeholder"),
        "evidence": alert.get("evidence"),
        "account": alert.get("account"),
    }
    return {key: value for key, value in details.items() if value}


# --- signed webhooks -----------------------------------------------------------------


def webhook_body(alerts: Sequence[Mapping[str, Any]]) -> bytes:
    """``{"version": 1, "alerts": [...]}`` as canonical JSON (sorted keys, no spaces,
    UTF-8): the exact bytes that are signed and sent. Raises ``ValueError`` for a
    value JSON cannot carry (NaN) rather than send what receivers cannot parse."""
    document = {"version": WEBHOOK_VERSION, "alerts": [dict(alert) for alert in alerts]}
    text = json.dumps(
        document, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )
    return text.encode("utf-8")


def webhook_headers(secret: bytes, timestamp: int, body: bytes) -> dict[str, str]:
    """Headers that let a receiver check the body came from us, unchanged: an
    HMAC-SHA256 over ``"{timestamp}." + body``. The timestamp is signed too, so a
    receiver that rejects old timestamps also rejects replayed requests."""
    return {
        "Content-Type": "application/json",
        "X-Engagewatch-Timestamp": str(timestamp),
        "X-Engagewatch-Signature": _signature(secret, timestamp, body),
    }


def verify_webhook(secret: bytes, timestamp: int, body: bytes, signature: str) -> bool:
    """Whether ``signature`` is ours for this timestamp and body, compared in constant
    time. How old a timestamp may be is the receiver's call (it has the clock)."""
    expected = _signature(secret, timestamp, body).encode("ascii")
    return hmac.compare_digest(expected, signature.encode("utf-8", "replace"))


def _signature(secret: bytes, timestamp: int, body: bytes) -> str:
    digest = hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"
