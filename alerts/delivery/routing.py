"""Which receivers an alert event goes to: the routing tree walked over its labels."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from alerts.delivery.config import Route

__all__ = ["receivers_for", "routing_labels"]


def routing_labels(event: Mapping[str, Any]) -> dict[str, str]:
    """What routes may match on: the alert's labels, plus its severity, rule, status,
    account and stakeholder, and the account's segment, owner and status."""
    labels = {str(key): str(value) for key, value in (event.get("labels") or {}).items()}
    for key in ("severity", "rule", "status", "account_id", "stakeholder"):
        if event.get(key) is not None:
            labels.setdefault(key, str(event[key]))
    account = event.get("account") or {}
    for key, label in (
        ("segment", "segment"),
        ("owner_email", "owner"),
        ("status", "account_status"),
    ):
        if account.get(key) is not None:
            labels.setdefault(label, str(account[key]))
    return labels


def receivers_for(route: Route, labels: Mapping[str, str]) -> list[str]:
    """Receiver names for ``labels``, in routing order, each at most once."""
    found: list[str] = []
    _walk(route, labels, found)
    return list(dict.fromkeys(found))


def _matches(route: Route, labels: Mapping[str, str]) -> bool:
    if any(labels.get(key) != value for key, value in route.match.items()):
        return False
    return all(pattern.match(labels.get(key, "")) for key, pattern in route.match_re.items())


def _walk(route: Route, labels: Mapping[str, str], found: list[str]) -> None:
    matched_child = False
    for child in route.routes:
        if not _matches(child, labels):
            continue
        matched_child = True
        _walk_matched(child, route, labels, found)
        if not child.continue_:
            break
    if not matched_child and route.receiver is not None:
        found.append(route.receiver)


def _walk_matched(child: Route, parent: Route, labels: Mapping[str, str], found: list[str]) -> None:
    """A child without a receiver of its own inherits its parent's, as in Alertmanager."""
    if child.receiver is None and parent.receiver is not None:
        child = child.model_copy(update={"receiver": parent.receiver})
    _walk(child, labels, found)
