"""Alert events: what the alerts topic carries (docs/alert-events.md), built from a Change.

Keyed by fingerprint, so every receiver can deduplicate. A ``repeat`` change (a
re-notification of an alert that still holds) is published as ``firing`` again with
its original ``starts_at``, the way Alertmanager expects a firing alert to be re-sent.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from alerts.lifecycle import Change, ChangeKind
from stream.accounts import Account

__all__ = ["ALERT_SCHEMA", "alert_event"]

ALERT_SCHEMA = 1


def alert_event(
    change: Change,
    account: Account | None,
    generated_at: datetime,
    inhibited_by: str | None = None,
) -> dict[str, Any]:
    """The JSON-ready alert event for one change; ``inhibited_by`` names the open
    critical alert that makes this one quiet (receivers hold its delivery)."""
    alert = change.alert
    status = "resolved" if change.kind is ChangeKind.RESOLVED else "firing"
    labels = dict(alert.labels)
    if alert.subject is not None:
        labels.setdefault("stakeholder", alert.subject)
    return {
        "schema": ALERT_SCHEMA,
        "fingerprint": alert.fingerprint,
        "status": status,
        "rule": alert.rule,
        "severity": alert.severity,
        "account_id": alert.account_id,
        "stakeholder": alert.subject,
        "labels": labels,
        "annotations": dict(alert.annotations),
        "evidence": dict(alert.evidence),
        "account": _account_context(account),
        "starts_at": _iso(alert.starts_at),
        "ends_at": _iso(alert.ends_at) if status == "resolved" else None,
        "repeat": change.kind is ChangeKind.REPEAT,
        "inhibited_by": inhibited_by,
        "generated_at": _iso(generated_at),
    }


def _account_context(account: Account | None) -> dict[str, Any] | None:
    """What a message needs to say which account this is, without another lookup."""
    if account is None:
        return None
    return {
        "name": account.name,
        "arr": account.arr,
        "segment": account.segment,
        "owner_email": account.owner_email,
        "slack_channel": account.slack_channel,
        "renewal_date": account.renewal_date.isoformat() if account.renewal_date else None,
        "status": account.status,
    }


def _iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
