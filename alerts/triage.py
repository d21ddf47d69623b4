"""On-call triage, the pure part: who to call first, and what people said about alerts.

* :func:`priority` ranks accounts (docs/triage.md has the formula and why);
* :func:`quiet_for` says how long an account has been quiet against its own habit;
* :func:`account_entry` is the index entry a sweep writes for one account;
* :class:`Silence` (a snooze), :class:`Ack` and :class:`ResolveRequest` are what people
  record; :func:`silence_for` finds the snooze that holds an alert's delivery;
* :func:`silent_accounts` and :func:`open_alerts` are the triage lists with their filters.

Snoozes and acks never change alert states (evaluation always runs): a snooze only
holds delivery and hides the alert from the default lists; an ack is shown, no more.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from itertools import pairwise
from typing import Any

from alerts.evaluate import HISTORY_DAYS, working_weekdays
from alerts.lifecycle import AlertState, severity_rank
from alerts.rules import parse_duration_s
from stream import metrics
from stream.accounts import Account
from stream.engagement import EngagementState

__all__ = [
    "ALERT_STATUSES",
    "HEATMAP_DAYS",
    "Ack",
    "InputError",
    "Quiet",
    "ResolveRequest",
    "Silence",
    "account_entry",
    "alert_entry",
    "iso",
    "open_alerts",
    "parse_time",
    "priority",
    "quiet_for",
    "silence_for",
    "silent_accounts",
    "snooze_until",
]

HEATMAP_DAYS = 28
STAKEHOLDER_ROLES = ("champion", "admin", "executive")
"""The default key roles; the drill-down's live snapshot uses the configured ones."""
ALERT_STATUSES = ("firing", "acknowledged", "unacknowledged")
"""``status`` filter of the alerts list: all open ones, or by acknowledgement."""
WORKING_DAY_RATE = 0.4
"""As the default silence rules: a weekday active on >= 40% of them is a working day."""
MAX_SNOOZE = timedelta(days=366)
QUIET_MIN_DAYS = 2
"""Without an alert, an account is listed once it missed more working days than its
longest usual break, and at least this many."""
QUIET_STATUSES = frozenset({"paused", "churned"})
"""Accounts that raise no engagement alerts are not triaged either."""

# --- ranking ---------------------------------------------------------------------------

SILENCE_POINTS = 35.0
SILENCE_CAP_GAPS = 4.0
"""Quiet for 4 usual gaps (or more) earns all the silence points."""
ARR_POINTS = 20.0
ARR_FLOOR, ARR_CEILING = 1_000.0, 1_000_000.0
"""ARR scores on a log scale from 1k (nothing) to 1M (everything)."""
RENEWAL_POINTS = 20.0
RENEWAL_HORIZON_DAYS = 180.0
"""A renewal today (or overdue) earns everything; one 180+ days away, nothing."""
TIER_POINTS = {"red": 15.0, "yellow": 7.5, "green": 0.0}
SEVERITY_POINTS = {"critical": 10.0, "warning": 6.0, "info": 2.0}


def priority(
    silent_gaps: float | None,
    arr: float | None,
    days_to_renewal: int | None,
    tier: str | None,
    severities: Iterable[str],
) -> float:
    """Triage priority in [0, 100]: the higher, the sooner someone should call.

    Silence against habit (35) + ARR, log-scaled (20) + renewal proximity (20) +
    health tier (15) + the worst open alert's severity (10). Unknown parts score 0.
    """
    silence = SILENCE_POINTS * _unit((silent_gaps or 0.0) / SILENCE_CAP_GAPS)
    value = 0.0
    if arr is not None and arr > 0:
        span = math.log10(ARR_CEILING / ARR_FLOOR)
        value = ARR_POINTS * _unit(math.log10(arr / ARR_FLOOR) / span)
    renewal = 0.0
    if days_to_renewal is not None:
        renewal = RENEWAL_POINTS * _unit(1.0 - days_to_renewal / RENEWAL_HORIZON_DAYS)
    health = TIER_POINTS.get(tier or "", 0.0)
    alert = max((SEVERITY_POINTS.get(s, 0.0) for s in severities), default=0.0)
    return round(silence + value + renewal + health + alert, 3)


def _unit(x: float) -> float:
    return min(1.0, max(0.0, x))


# --- quiet against habit ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Quiet:
    """How long an account has been quiet, in its working days, against its habit."""

    last_active_day: date | None
    days_silent: int | None
    """Working days with no activity since the last active day (today not counted)."""
    usual_gap_days: int | None
    """The longest break between two active days in its history, in working days."""

    @property
    def gaps(self) -> float | None:
        """How many usual gaps the account has been quiet (a gap of 0 counts as 1)."""
        if self.days_silent is None or self.usual_gap_days is None:
            return None
        return self.days_silent / max(self.usual_gap_days, 1)


def quiet_for(state: EngagementState, now: datetime) -> Quiet:
    """The silence rules' measure (alerts/evaluate.py), counting today's activity too."""
    today = state.local_day(now)
    days = [
        day
        for day in metrics.window(today, HISTORY_DAYS)
        if (bucket := state.bucket(day)) is not None and bucket.active_users
    ]
    if not days:
        return Quiet(None, None, None)
    working = working_weekdays(state, days[-1], WORKING_DAY_RATE)
    if not working:
        return Quiet(days[-1], None, None)  # no habit yet: nothing to compare with
    usual = max((_working_days_between(a, b, working) for a, b in pairwise(days)), default=0)
    return Quiet(days[-1], _working_days_between(days[-1], today, working), usual)


def _working_days_between(after: date, before: date, working: frozenset[int]) -> int:
    return sum(
        (after + timedelta(days=n)).weekday() in working for n in range(1, (before - after).days)
    )


# --- the index entries a sweep writes --------------------------------------------------


def account_entry(
    state: EngagementState,
    account: Account | None,
    open_states: Sequence[AlertState],
    health: Mapping[str, Any] | None,
    now: datetime,
) -> dict[str, Any]:
    """One account's triage summary, JSON-ready, with its priority; ``health`` is the
    evidence of the account's last health score (tier and value), if it has one."""
    today = state.local_day(now)
    quiet = quiet_for(state, now)
    tier = str(health["tier"]) if health and health.get("tier") is not None else None
    renewal = account.renewal_date if account else None
    days_to_renewal = (renewal - today).days if renewal else None
    alerts = [alert_entry(s, account) for s in sorted(open_states, key=lambda s: s.fingerprint)]
    status = account.status if account else "active"
    score = priority(
        quiet.gaps,
        account.arr if account else None,
        days_to_renewal,
        tier,
        [a["severity"] for a in alerts],
    )
    return {
        "account_id": state.account_id,
        "name": account.name if account else state.account_id,
        "arr": account.arr if account else None,
        "renewal_date": renewal.isoformat() if renewal else None,
        "days_to_renewal": days_to_renewal,
        "owner": account.owner_email if account else None,
        "segment": account.segment if account else None,
        "status": status,
        "licenses": metrics.licenses_on(state, account, today),
        "tier": tier,
        "health_score": health.get("value") if health else None,
        "last_active_day": quiet.last_active_day.isoformat() if quiet.last_active_day else None,
        "days_silent": quiet.days_silent,
        "usual_gap_days": quiet.usual_gap_days,
        "silent_gaps": None if quiet.gaps is None else round(quiet.gaps, 2),
        "open_alerts": alerts,
        "daily_active_users": _daily_active_users(state, today),
        "stakeholders_last_seen": {
            user: iso(seen)
            for user, seen in metrics.stakeholder_last_seen(state, STAKEHOLDER_ROLES).items()
        },
        "priority": 0.0 if status in QUIET_STATUSES else score,
        "swept_at": iso(now),
    }


def _daily_active_users(state: EngagementState, today: date) -> list[dict[str, Any]]:
    """The heatmap row: distinct active users on each of the last 28 local days."""
    rows = []
    for day in metrics.window(today, HEATMAP_DAYS):
        bucket = state.bucket(day)
        rows.append(
            {"date": day.isoformat(), "users": bucket.active_users.bit_count() if bucket else 0}
        )
    return rows


def alert_entry(state: AlertState, account: Account | None) -> dict[str, Any]:
    """An open alert as the triage lists show it."""
    return {
        "fingerprint": state.fingerprint,
        "rule": state.rule,
        "severity": state.severity,
        "status": state.status.value,
        "starts_at": iso(state.starts_at),
        "account_id": state.account_id,
        "account_name": account.name if account else state.account_id,
        "owner": account.owner_email if account else None,
        "segment": account.segment if account else None,
        "stakeholder": state.subject,
        "summary": state.annotations.get("summary", ""),
    }


# --- what people record ----------------------------------------------------------------


class InputError(ValueError):
    """A request field is wrong; ``field`` names it for the 400 answer."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True, slots=True)
class Silence:
    """A snooze: holds delivery of one alert, or of an account's alerts (of one rule)."""

    id: str
    until: datetime
    author: str
    reason: str
    created_at: datetime
    fingerprint: str | None = None
    account_id: str | None = None
    rule: str | None = None
    made_from: str | None = None
    """The fingerprint of the alert it was made from: an account's or a rule's snooze
    can still be named by it (to unsnooze) after that alert has closed."""
    made_for: str | None = None
    """The account of that alert (the history an alert's snooze is recorded in)."""

    def __post_init__(self) -> None:
        if (self.fingerprint is None) == (self.account_id is None):
            raise ValueError("a silence names either a fingerprint or an account")
        if self.rule is not None and self.account_id is None:
            raise ValueError("a silence names a rule only together with an account")

    def active(self, now: datetime) -> bool:
        return now < self.until

    def matches(self, fingerprint: str, account_id: str, rule: str) -> bool:
        if self.fingerprint is not None:
            return self.fingerprint == fingerprint
        return self.account_id == account_id and self.rule in (None, rule)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "fingerprint": self.fingerprint,
            "account_id": self.account_id,
            "rule": self.rule,
            "until": iso(self.until),
            "author": self.author,
            "reason": self.reason,
            "created_at": iso(self.created_at),
            "made_from": self.made_from,
            "made_for": self.made_for,
        }

    def named_by(self, fingerprint: str) -> bool:
        """Whether naming ``fingerprint`` reaches this snooze once its alert is gone."""
        return fingerprint in (self.fingerprint, self.made_from)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Silence:
        return cls(
            id=data["id"],
            until=parse_time(data["until"]),
            author=data["author"],
            reason=data["reason"],
            created_at=parse_time(data["created_at"]),
            fingerprint=data.get("fingerprint"),
            account_id=data.get("account_id"),
            rule=data.get("rule"),
            made_from=data.get("made_from"),
            made_for=data.get("made_for"),
        )


@dataclass(frozen=True, slots=True)
class Ack:
    """Someone is on it: shown next to the alert; silences nothing."""

    fingerprint: str
    author: str
    at: datetime
    comment: str = ""
    starts_at: str | None = None
    """The episode acknowledged (the alert's ``starts_at``): an ack that lands as the
    alert closes must not make its next episode look acknowledged."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "fingerprint": self.fingerprint,
            "author": self.author,
            "at": iso(self.at),
            "comment": self.comment,
            "starts_at": self.starts_at,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Ack:
        at = parse_time(data["at"])
        return cls(data["fingerprint"], data["author"], at, data["comment"], data.get("starts_at"))

    def of(self, alert: Mapping[str, Any]) -> bool:
        """Whether this acknowledges ``alert``'s episode (an ack of old records any)."""
        return self.starts_at is None or self.starts_at == alert.get("starts_at")


@dataclass(frozen=True, slots=True)
class ResolveRequest:
    """A person asked to resolve a firing alert; the owning worker's next sweep does it."""

    fingerprint: str
    account_id: str
    author: str
    reason: str
    at: datetime

    def to_dict(self) -> dict[str, Any]:
        return {
            "fingerprint": self.fingerprint,
            "account_id": self.account_id,
            "author": self.author,
            "reason": self.reason,
            "at": iso(self.at),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ResolveRequest:
        return cls(
            data["fingerprint"],
            data["account_id"],
            data["author"],
            data["reason"],
            parse_time(data["at"]),
        )


def silence_for(
    silences: Iterable[Silence], fingerprint: str, account_id: str, rule: str, now: datetime
) -> Silence | None:
    """The active silence holding this alert (the one lasting longest), if any."""
    holding = [s for s in silences if s.active(now) and s.matches(fingerprint, account_id, rule)]
    return max(holding, key=lambda s: (s.until, s.id), default=None)


def snooze_until(now: datetime, until: str | None, duration: str | None) -> datetime:
    """When a snooze asked for with ``until`` (RFC 3339) or ``duration`` (3d) ends."""
    if until is None and duration is None:
        raise InputError("until", "give until (RFC 3339) or duration (e.g. 3d)")
    if until is not None and duration is not None:
        raise InputError("until", "give either until (RFC 3339) or duration (e.g. 3d), not both")
    if until is not None:
        try:
            end = parse_time(until)
        except (ValueError, OverflowError):  # an offset past year 1 or 9999 overflows
            raise InputError("until", f"expected RFC 3339 with an offset, got {until!r}") from None
        field = "until"
    else:
        try:
            seconds = parse_duration_s(duration)
        except ValueError as exc:
            raise InputError("duration", str(exc)) from None
        if seconds > MAX_SNOOZE.total_seconds():  # before timedelta, which overflows
            raise InputError("duration", _TOO_LONG)
        end = now + timedelta(seconds=seconds)
        field = "duration"
    if end <= now:
        raise InputError(field, "the snooze must end in the future")
    if end - now > MAX_SNOOZE:
        raise InputError(field, _TOO_LONG)
    return end


_TOO_LONG = "a snooze lasts at most 366 days; resolve or re-snooze later"


def parse_time(text: str) -> datetime:
    """RFC 3339 with an offset (``Z`` too) -> aware UTC datetime; ValueError otherwise."""
    moment = datetime.fromisoformat(text.strip().replace("z", "Z"))
    if moment.tzinfo is None:
        raise ValueError(f"{text!r} has no UTC offset")
    return moment.astimezone(UTC)


def iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


# --- the lists -------------------------------------------------------------------------


def silent_accounts(
    entries: Iterable[Mapping[str, Any]],
    silences: Sequence[Silence],
    now: datetime,
    *,
    include_snoozed: bool = False,
    owner: str | None = None,
    segment: str | None = None,
    tier: str | None = None,
    limit: int = 50,
) -> list[dict[str, Any]]:
    """Accounts worth a call, best first.

    Listed: an account with an open alert nobody snoozed, or, without alerts, one quiet
    for longer than its longest usual break (``QUIET_MIN_DAYS`` at least). An account all
    of whose alerts are snoozed (or the whole account) leaves the list unless
    ``include_snoozed``, and comes back marked.
    """
    listed = []
    for entry in entries:
        if entry.get("status") in QUIET_STATUSES or not _matches(entry, owner, segment, tier):
            continue
        snoozed, worth = _account_snoozed(entry, silences, now)
        if worth and (include_snoozed or not snoozed):
            listed.append({**entry, "snoozed": snoozed})
    listed.sort(key=lambda e: (-float(e.get("priority") or 0.0), str(e["account_id"])))
    return listed[:limit]


def _matches(
    entry: Mapping[str, Any], owner: str | None, segment: str | None, tier: str | None
) -> bool:
    return (
        (owner is None or str(entry.get("owner") or "").lower() == owner.lower())
        and (segment is None or entry.get("segment") == segment)
        and (tier is None or entry.get("tier") == tier)
    )


def _account_snoozed(
    entry: Mapping[str, Any], silences: Sequence[Silence], now: datetime
) -> tuple[bool, bool]:
    """(snoozed, worth a look) for one account entry."""
    account_id = str(entry["account_id"])
    alerts = entry.get("open_alerts") or []
    if alerts:
        held = [silence_for(silences, a["fingerprint"], account_id, a["rule"], now) for a in alerts]
        return all(held), True
    missed = entry.get("days_silent") or 0
    quiet = missed >= QUIET_MIN_DAYS and missed > (entry.get("usual_gap_days") or 0)
    return silence_for(silences, "", account_id, "", now) is not None, quiet


def open_alerts(
    alerts: Iterable[Mapping[str, Any]],
    silences: Sequence[Silence],
    acks: Mapping[str, Ack],
    resolves: Mapping[str, ResolveRequest],
    now: datetime,
    *,
    include_snoozed: bool = False,
    status: str | None = None,
    severity: str | None = None,
    rule: str | None = None,
    account_id: str | None = None,
    owner: str | None = None,
) -> list[dict[str, Any]]:
    """Open alerts with their snooze, ack and pending resolve; worst and oldest first."""
    shown = []
    for alert in alerts:
        fp = str(alert["fingerprint"])
        silence = silence_for(silences, fp, str(alert["account_id"]), str(alert["rule"]), now)
        ack = acks.get(fp)
        if ack is not None and not ack.of(alert):
            ack = None  # an earlier episode's
        resolve = resolves.get(fp)
        wanted = (
            (include_snoozed or silence is None)
            and (severity is None or alert.get("severity") == severity)
            and (rule is None or alert.get("rule") == rule)
            and (account_id is None or alert.get("account_id") == account_id)
            and (owner is None or str(alert.get("owner") or "").lower() == owner.lower())
            and _status_matches(status, ack is not None)
        )
        if wanted:
            shown.append(
                {
                    **alert,
                    "snoozed": silence.to_dict() if silence else None,
                    "ack": ack.to_dict() if ack else None,
                    "resolve_requested": resolve.to_dict() if resolve else None,
                }
            )
    shown.sort(
        key=lambda a: (
            -severity_rank(a.get("severity", "")),
            a.get("starts_at") or "",
            a["fingerprint"],
        )
    )
    return shown


def _status_matches(status: str | None, acked: bool) -> bool:
    if status in (None, "firing"):
        return True
    return acked if status == "acknowledged" else not acked
