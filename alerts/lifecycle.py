"""The alert lifecycle: one explicit state machine, pure, time as an argument.

A rule evaluated for one account (and one stakeholder, for per-stakeholder rules)
yields a :class:`Finding`: is the condition true now, with which evidence.
:func:`transition` folds a finding into the previous :class:`AlertState` and returns
the new state plus the :class:`Change` worth publishing, if any:

    inactive --active--> pending --held for `for_s`--> firing --inactive--> resolved
        (with ``for_s == 0`` an active finding fires at once)

* never a second ``firing`` while one is open: a held condition only refreshes the
  evidence, and re-notifies as ``repeat`` once per ``repeat_interval_s``;
* ``resolved`` only after ``firing``: a pending condition that clears leaves no trace;
* a resolved alert whose condition returns starts a new episode (new ``starts_at``);
* a person may resolve a firing alert (:func:`resolve_manually`, the triage "resolve"):
  that publishes ``resolved`` at once, and the alert stays resolved while its condition
  still holds; it can fire again only after the condition has cleared at least once
  (otherwise the next sweep would re-fire what the person just closed);
* an alert its rule stops judging (:func:`stand_down`: the account's status exempts it,
  the rule left the rules file, the person no longer holds the role) resolves, saying
  why, rather than staying open with nothing to close it.

Silences, acknowledgements and inhibition do not change this state: evaluation
always runs, and they only decide whether a change is delivered (DOMAIN.md: "evaluate
always, hold only the delivery").
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from functools import lru_cache
from typing import Any

from stream import codec

__all__ = [
    "AlertState",
    "Change",
    "ChangeKind",
    "Finding",
    "LifecyclePolicy",
    "Status",
    "fingerprint",
    "resolve_manually",
    "severity_rank",
    "stand_down",
    "state_from_dict",
    "state_to_dict",
    "transition",
]


ENGINE = "engagewatch"
"""``resolved_by`` of the alerts the engine itself closes without a verdict."""


class Status(StrEnum):
    PENDING = "pending"
    FIRING = "firing"
    RESOLVED = "resolved"


class ChangeKind(StrEnum):
    FIRING = "firing"
    REPEAT = "repeat"
    RESOLVED = "resolved"


@lru_cache(maxsize=65_536)  # asked at every evaluation of every finding
def fingerprint(rule: str, account_id: str, subject: str | None = None) -> str:
    """Stable id of one rule on one account (and one stakeholder): receivers dedup on it."""
    key = codec.dumps([rule, account_id, subject])
    return hashlib.sha256(key).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class Finding:
    """One rule's verdict on one account at one time."""

    rule: str
    account_id: str
    active: bool
    severity: str = "warning"
    subject: str | None = None
    """The stakeholder a per-stakeholder rule is about (``None`` for account rules)."""
    evidence: Mapping[str, Any] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.rule, self.account_id, self.subject)


@dataclass(frozen=True, slots=True)
class LifecyclePolicy:
    for_s: float = 0.0
    """How long a condition must hold before it fires (Prometheus' ``for``)."""
    repeat_interval_s: float = 24 * 3600.0
    """A firing alert is re-notified this often while it holds."""


@dataclass(frozen=True, slots=True)
class AlertState:
    """Where one fingerprint's alert stands; kept durable (changelog-backed) by callers."""

    fingerprint: str
    rule: str
    account_id: str
    status: Status
    severity: str
    subject: str | None = None
    active_since: datetime | None = None
    """When the condition became true in this episode (start of pending)."""
    starts_at: datetime | None = None
    ends_at: datetime | None = None
    last_notified_at: datetime | None = None
    evidence: Mapping[str, Any] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    resolved_by: str | None = None
    """Who resolved it by hand (``None``: it resolved itself, or is not resolved)."""
    held_until_clear: bool = False
    """Resolved by hand while its condition still held: do not fire until it clears."""
    told_severity: str | None = None
    """The highest severity receivers were told in this episode, when that is not
    ``severity`` (it fell since): only a rise above it is told at once."""

    @property
    def is_open(self) -> bool:
        return self.status is Status.FIRING

    @property
    def is_over(self) -> bool:
        """Resolved: neither firing nor pending."""
        return self.status is Status.RESOLVED


@dataclass(frozen=True, slots=True)
class Change:
    """A state change worth publishing (healthchecks' "flip")."""

    kind: ChangeKind
    alert: AlertState
    at: datetime


def transition(
    previous: AlertState | None,
    finding: Finding,
    now: datetime,
    policy: LifecyclePolicy | None = None,
) -> tuple[AlertState | None, Change | None]:
    """The new state for ``finding``'s fingerprint and the change to publish, if any.

    ``None`` as a state means "nothing to remember" (inactive, never fired).
    """
    policy = policy or LifecyclePolicy()
    if previous is not None and previous.fingerprint != finding.fingerprint:
        raise ValueError("a finding can only move the alert with its own fingerprint")
    if finding.active:
        return _while_active(previous, finding, now, policy)
    return _while_inactive(previous, finding, now)


def resolve_manually(
    previous: AlertState | None, now: datetime, by: str, reason: str = ""
) -> tuple[AlertState | None, Change | None]:
    """A person resolves an alert: only a firing one changes; anything else is a no-op.

    The change is an ordinary ``resolved`` (receivers close it as usual) whose
    annotations say who resolved it and why.
    """
    if previous is None or previous.status is not Status.FIRING:
        return previous, None
    return _resolved_by(previous, now, by, reason, hold=True)


def stand_down(
    previous: AlertState | None, now: datetime, reason: str, *, hold: bool = False
) -> tuple[AlertState | None, Change | None]:
    """Its rule will judge this alert no more: a firing alert resolves, its annotations
    saying ``resolved_by: engagewatch`` and ``reason``; a pending one is forgotten (it
    never fired); a resolved one stays as it is. Not held unless ``hold``: should the
    rule judge it again and the condition hold, that is a new episode (held: not until
    the condition has cleared once, as after a person's resolve)."""
    if previous is None or previous.status is Status.PENDING:
        return None, None
    if previous.status is Status.RESOLVED:
        return previous, None
    return _resolved_by(previous, now, ENGINE, reason, hold=hold)


def _resolved_by(
    previous: AlertState, now: datetime, by: str, reason: str, *, hold: bool
) -> tuple[AlertState, Change]:
    """A firing alert closed without a verdict: an ordinary ``resolved`` whose
    annotations say who closed it and why."""
    annotations = {**previous.annotations, "resolved_by": by}
    if reason:
        annotations["resolve_reason"] = reason
    resolved = replace(
        previous,
        status=Status.RESOLVED,
        ends_at=now,
        annotations=annotations,
        resolved_by=by,
        held_until_clear=hold,
    )
    return resolved, Change(ChangeKind.RESOLVED, resolved, now)


def _while_active(
    previous: AlertState | None, finding: Finding, now: datetime, policy: LifecyclePolicy
) -> tuple[AlertState, Change | None]:
    if previous is not None and previous.held_until_clear:
        return previous, None  # resolved by hand; the condition has not cleared since
    if previous is None or previous.status is Status.RESOLVED:
        pending = _new_episode(finding, now)
        return _fire_if_due(pending, now, policy)
    if (
        previous.evidence is finding.evidence  # the finding this state was built from
        and previous.labels is finding.labels
        and previous.annotations is finding.annotations
        and previous.severity == finding.severity
    ):
        refreshed = previous
    else:
        told = previous.told_severity or previous.severity
        refreshed = replace(
            previous,
            severity=finding.severity,
            evidence=finding.evidence,
            labels=finding.labels,
            annotations=finding.annotations,
            told_severity=told if severity_rank(told) > severity_rank(finding.severity) else None,
        )
    if refreshed.status is Status.PENDING:
        return _fire_if_due(refreshed, now, policy)
    last = refreshed.last_notified_at or refreshed.starts_at or now
    # A firing alert that grows worse than receivers were told (a health tier from
    # yellow to red) is told at once: routes that page on critical must not wait for
    # the reminder. Once per rise: red, yellow, red again waits for the reminder.
    escalated = severity_rank(refreshed.severity) > severity_rank(
        previous.told_severity or previous.severity
    )
    if escalated or now - last >= timedelta(seconds=policy.repeat_interval_s):
        repeated = replace(refreshed, last_notified_at=now, told_severity=None)
        return repeated, Change(ChangeKind.REPEAT, repeated, now)
    return refreshed, None


_SEVERITY_RANK = {"info": 0, "warning": 1, "critical": 2}


def severity_rank(severity: str) -> int:
    """How grave a severity is: info 0, warning 1, critical 2 (anything else 0)."""
    return _SEVERITY_RANK.get(severity, 0)


def _new_episode(finding: Finding, now: datetime) -> AlertState:
    return AlertState(
        fingerprint=finding.fingerprint,
        rule=finding.rule,
        account_id=finding.account_id,
        status=Status.PENDING,
        severity=finding.severity,
        subject=finding.subject,
        active_since=now,
        evidence=finding.evidence,
        labels=finding.labels,
        annotations=finding.annotations,
    )


def _fire_if_due(
    pending: AlertState, now: datetime, policy: LifecyclePolicy
) -> tuple[AlertState, Change | None]:
    since = pending.active_since or now
    if now - since < timedelta(seconds=policy.for_s):
        return pending, None
    firing = replace(
        pending, status=Status.FIRING, starts_at=now, ends_at=None, last_notified_at=now
    )
    return firing, Change(ChangeKind.FIRING, firing, now)


def _while_inactive(
    previous: AlertState | None, finding: Finding, now: datetime
) -> tuple[AlertState | None, Change | None]:
    if previous is None or previous.status is Status.PENDING:
        return None, None  # never fired: nothing to resolve, nothing to keep
    if previous.status is Status.RESOLVED:
        if previous.held_until_clear:  # cleared once: a new episode may fire again
            return replace(previous, held_until_clear=False), None
        return previous, None
    resolved = replace(previous, status=Status.RESOLVED, ends_at=now, evidence=finding.evidence)
    return resolved, Change(ChangeKind.RESOLVED, resolved, now)


def state_to_dict(state: AlertState) -> dict[str, Any]:
    """Plain JSON-ready data, for the changelog-backed alert table.

    The manual-resolve fields are written only when set, so states stored before they
    existed (and the states of alerts nobody resolved by hand) stay byte-identical.
    """
    data: dict[str, Any] = {
        "fingerprint": state.fingerprint,
        "rule": state.rule,
        "account_id": state.account_id,
        "status": state.status.value,
        "severity": state.severity,
        "subject": state.subject,
        "active_since": _ts(state.active_since),
        "starts_at": _ts(state.starts_at),
        "ends_at": _ts(state.ends_at),
        "last_notified_at": _ts(state.last_notified_at),
        "evidence": dict(state.evidence),
        "labels": dict(state.labels),
        "annotations": dict(state.annotations),
    }
    if state.resolved_by is not None:
        data["resolved_by"] = state.resolved_by
    if state.held_until_clear:
        data["held_until_clear"] = True
    if state.told_severity is not None:
        data["told_severity"] = state.told_severity
    return data


def state_from_dict(data: Mapping[str, Any]) -> AlertState:
    return AlertState(
        fingerprint=data["fingerprint"],
        rule=data["rule"],
        account_id=data["account_id"],
        status=Status(data["status"]),
        severity=data["severity"],
        subject=data["subject"],
        active_since=_dt(data["active_since"]),
        starts_at=_dt(data["starts_at"]),
        ends_at=_dt(data["ends_at"]),
        last_notified_at=_dt(data["last_notified_at"]),
        evidence=data["evidence"],
        labels=data["labels"],
        annotations=data["annotations"],
        resolved_by=data.get("resolved_by"),
        held_until_clear=bool(data.get("held_until_clear", False)),
        told_severity=data.get("told_severity"),
    )


def _ts(moment: datetime | None) -> float | None:
    return moment.timestamp() if moment is not None else None


def _dt(epoch: float | None) -> datetime | None:
    return datetime.fromtimestamp(epoch, UTC) if epoch is not None else None
