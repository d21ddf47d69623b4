"""Evaluating rules against one account's state: pure, "now" is an argument.

``evaluate(rule, context)`` returns the rule's findings for the account: one finding
(or one per watched stakeholder), each saying whether the condition holds and with
which evidence. An empty list means "no verdict": the rule does not apply right now
(account paused, input stalled, metadata missing), and any open alert stays as it is.

Daily rules judge only *completed* local days, and only the account's working days:
a weekday is a working day when the account was active on at least
``working_day_rate`` of those weekdays in its history, so quiet weekends, or a team
that never works Fridays, are expected rather than alarming.
"""

from __future__ import annotations

import math
import string
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from itertools import pairwise
from statistics import fmean
from typing import Any

from alerts.lifecycle import Finding
from alerts.rules import (
    AdoptionRule,
    DropRule,
    HealthRule,
    NpsRule,
    Rule,
    SilenceRule,
    ThresholdRule,
    TimeToValueRule,
)
from stream import metrics
from stream.accounts import Account
from stream.engagement import EngagementState

__all__ = ["Context", "evaluate", "working_weekdays"]

HISTORY_DAYS = 42


@dataclass(frozen=True, slots=True)
class Context:
    """Everything a rule may look at for one account."""

    state: EngagementState
    account: Account | None
    now: datetime
    input_healthy: bool = True
    """False while the engine's own input is stalled: silence means nothing then."""
    open_rules: frozenset[str] = frozenset()
    """Rules with an alert open on this account (for exit levels that differ from entry)."""

    @property
    def today(self) -> date:
        return self.state.local_day(self.now)

    @property
    def account_name(self) -> str:
        return self.account.name if self.account else self.state.account_id


def evaluate(rule: Rule, context: Context) -> list[Finding]:
    """The rule's findings for this account (empty: no verdict now)."""
    account = context.account
    if account is not None and account.status in rule.skip_statuses:
        return []
    if not context.input_healthy and isinstance(rule, _JUDGE_DAYS):
        return []  # our own input is behind: every account would look quiet
    return _EVALUATORS[type(rule)](rule, context)


# --- silence -------------------------------------------------------------------------


def working_weekdays(state: EngagementState, end: date, rate: float) -> frozenset[int]:
    """Weekdays (0 = Monday) on which the account is usually active."""
    profile = metrics.weekday_profile(state, end, HISTORY_DAYS)
    return frozenset(h.weekday for h in profile if h.rate is not None and h.rate >= rate)


def _silence(rule: Any, context: Context) -> list[Finding]:
    assert isinstance(rule, SilenceRule)
    state = context.state
    # The habit is read from the history *before* the silence: measured up to today, a
    # long silence would erode its own working days until the alert resolved itself.
    end = _history_end(context)
    account_days = _active_days(state, end, _any_user)
    working = working_weekdays(
        state, account_days[-1] if account_days else end, rule.working_day_rate
    )
    if rule.scope == "account":
        first = state.first_seen_at
        return [
            _silence_finding(rule, context, None, account_days, first_seen=first, working=working)
        ]
    findings = []
    for user_id, user in sorted(state.users.items()):
        if user.role not in rule.roles:
            continue
        days = _active_days(state, end, _has_bit(user.slot))
        findings.append(
            _silence_finding(
                rule, context, user_id, days, first_seen=user.first_seen, working=working
            )
        )
    return findings


def _history_end(context: Context) -> date:
    """The last completed day that can hold history: yesterday, or the account's newest
    activity if that is older (its buckets are kept relative to that day)."""
    yesterday = context.today - timedelta(days=1)
    newest = context.state.newest_at
    return min(yesterday, context.state.local_day(newest)) if newest is not None else yesterday


def _any_user(users: int) -> bool:
    return users != 0


def _has_bit(slot: int) -> Callable[[int], bool]:
    bit = 1 << slot
    return lambda users: bool(users & bit)


def _active_days(state: EngagementState, end: date, is_active: Callable[[int], bool]) -> list[date]:
    return [
        day
        for day in metrics.window(end, HISTORY_DAYS)
        if (bucket := state.bucket(day)) is not None and is_active(bucket.active_users)
    ]


def _silence_finding(
    rule: SilenceRule,
    context: Context,
    subject: str | None,
    days: list[date],
    *,
    first_seen: float | None,
    working: frozenset[int],
) -> Finding:
    state, today = context.state, context.today
    history = (today - state.local_day(first_seen)).days if first_seen is not None else 0
    habit = history >= rule.min_history_days and len(days) >= rule.min_active_days and working
    if not habit or not days:
        return _finding(
            rule,
            context,
            False,
            subject,
            {"metric": "missed_working_days", "value": 0, "reason": "no established habit yet"},
        )
    missed = _working_days_between(days[-1], today, working)
    usual = max(
        (_working_days_between(a, b, working) for a, b in pairwise(days)),
        default=0,
    )
    threshold = max(rule.min_missed_working_days, math.ceil(rule.gap_multiple * usual))
    evidence = {
        "metric": "missed_working_days",
        "value": missed,
        "threshold": threshold,
        "baseline": usual,
        "last_active_day": days[-1].isoformat(),
        "working_weekdays": sorted(working),
        "last_seen": _last_seen(
            state, rule.roles if rule.scope == "stakeholder" else None, subject
        ),
    }
    return _finding(rule, context, missed >= threshold, subject, evidence)


def _working_days_between(after: date, before: date, working: frozenset[int]) -> int:
    """Working days strictly between two dates."""
    count = 0
    day = after + timedelta(days=1)
    while day < before:
        count += day.weekday() in working
        day += timedelta(days=1)
    return count


def _last_seen(
    state: EngagementState, roles: Iterable[str] | None, subject: str | None
) -> dict[str, str]:
    wanted = tuple(roles) if roles is not None else ("champion", "admin", "executive")
    seen = metrics.stakeholder_last_seen(state, wanted)
    if subject is not None:
        seen = {subject: seen[subject]} if subject in seen else {}
    return {user: when.isoformat().replace("+00:00", "Z") for user, when in seen.items()}


# --- thresholds and drops ------------------------------------------------------------

_OPS: dict[str, Callable[[float, float], bool]] = {
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
}


def _daily_value(metric: str, context: Context, day: date) -> float | None:
    state = context.state
    if metric == "daily_usage_rate":
        return metrics.daily_usage_rate(
            state, day, metrics.licenses_on(state, context.account, day)
        )
    if metric == "active_users":
        bucket = state.bucket(day)
        return float(bucket.active_users.bit_count()) if bucket else 0.0
    return metrics.average_time_per_login(state, [day])


def _threshold(rule: Any, context: Context) -> list[Finding]:
    assert isinstance(rule, ThresholdRule)
    state, yesterday = context.state, context.today - timedelta(days=1)
    if _history_days(context) < rule.min_history_days:
        return [
            _finding(
                rule,
                context,
                False,
                None,
                {"metric": rule.metric, "value": None, "reason": "not enough history yet"},
            )
        ]
    working = working_weekdays(state, yesterday, rule.working_day_rate)
    days = [d for d in metrics.window(yesterday, HISTORY_DAYS) if d.weekday() in working]
    days = days[-rule.for_working_days :]
    if len(days) < rule.for_working_days:
        return []
    values = [_daily_value(rule.metric, context, day) for day in days]
    if any(value is None for value in values):
        return []
    breached = all(_OPS[rule.op](float(v), rule.value) for v in values if v is not None)
    evidence = {
        "metric": rule.metric,
        "value": values[-1],
        "threshold": rule.value,
        "values": {d.isoformat(): v for d, v in zip(days, values, strict=True)},
    }
    return [_finding(rule, context, breached, None, evidence)]


def _drop(rule: Any, context: Context) -> list[Finding]:
    assert isinstance(rule, DropRule)
    yesterday = context.today - timedelta(days=1)
    series = metrics.daily_series(
        context.state, rule.metric, yesterday, rule.recent_days + rule.baseline_days
    )
    trend = metrics.trend(series, rule.recent_days, rule.baseline_days)
    quiet = trend.baseline < rule.min_baseline or trend.change is None
    dropped = not quiet and trend.change is not None and trend.change <= -rule.drop
    evidence = {
        "metric": f"{rule.metric}_{rule.recent_days}d_mean",
        "value": round(trend.recent, 3),
        "baseline": round(trend.baseline, 3),
        "threshold": -rule.drop,
        "change": None if trend.change is None else round(trend.change, 3),
    }
    return [_finding(rule, context, dropped, None, evidence)]


# --- adoption, time to value, NPS ----------------------------------------------------


def _adoption(rule: Any, context: Context) -> list[Finding]:
    assert isinstance(rule, AdoptionRule)
    account = context.account
    if account is None or account.contract_start is None:
        return []
    if _history_days(context) < rule.window_days:
        return []  # too little history to tell "not adopted" from "not seen yet"
    start = max(account.contract_start, rule.launched_on or account.contract_start)
    due = start + timedelta(days=rule.within_days)
    adopted = metrics.account_adopted(
        context.state,
        rule.feature,
        context.today,
        days=rule.window_days,
        min_users=rule.min_users,
        min_days=rule.min_days,
    )
    evidence = {
        "metric": f"adopted:{rule.feature}",
        "value": adopted,
        "threshold": True,
        "due": due.isoformat(),
    }
    return [_finding(rule, context, context.today >= due and not adopted, None, evidence)]


def _time_to_value(rule: Any, context: Context) -> list[Finding]:
    assert isinstance(rule, TimeToValueRule)
    account = context.account
    if account is None or account.contract_start is None:
        return []
    first = context.state.first_seen_at
    if first is None or context.state.local_day(first) > account.contract_start + timedelta(
        days=rule.max_days
    ):
        return []  # we did not watch its onboarding: a milestone may predate our history
    ttv = metrics.time_to_value(context.state, account)
    waited = (context.today - account.contract_start).days
    late = ttv is None and waited > rule.max_days
    evidence = {
        "metric": "days_without_value",
        "value": waited if ttv is None else None,
        "threshold": rule.max_days,
    }
    return [_finding(rule, context, late, None, evidence)]


def _nps(rule: Any, context: Context) -> list[Finding]:
    assert isinstance(rule, NpsRule)
    since = context.now.timestamp() - rule.within_days * 86_400
    answers = [
        a
        for a in context.state.recent_nps
        if a["at"] >= since and a["role"] in rule.roles and a["score"] <= rule.max_score
    ]
    evidence = {
        "metric": "nps_score",
        "value": min((a["score"] for a in answers), default=None),
        "threshold": rule.max_score,
        "answers": [
            {
                "user_id": a["user_id"],
                "role": a["role"],
                "score": a["score"],
                "comment": a["comment"],
            }
            for a in answers
        ],
    }
    return [_finding(rule, context, bool(answers), None, evidence)]


# --- health score --------------------------------------------------------------------


def health_components(rule: HealthRule, context: Context) -> dict[str, float]:
    """Each component in [0, 1]; a component without data is left out."""
    state, yesterday = context.state, context.today - timedelta(days=1)
    working = working_weekdays(state, yesterday, 0.4) or frozenset(range(5))
    days = [d for d in metrics.window(yesterday, 28) if d.weekday() in working]
    parts: dict[str, float] = {}
    rates = [_daily_value("daily_usage_rate", context, d) for d in days[-7:]]
    if rates and all(r is not None for r in rates):
        parts["usage"] = min(
            1.0, fmean(float(r) for r in rates if r is not None) / rule.usage_target
        )
    if days:
        parts["activity"] = min(1.0, metrics.active_days(state, yesterday, 28) / len(days))
    trend = metrics.trend(metrics.daily_series(state, "active_users", yesterday, 35), 7, 28)
    if trend.change is not None:
        parts["trend"] = max(0.0, min(1.0, 1.0 + trend.change))
    score = metrics.nps(state).score
    if score is not None:
        parts["nps"] = (score + 100.0) / 200.0
    return parts


def _health(rule: Any, context: Context) -> list[Finding]:
    assert isinstance(rule, HealthRule)
    if _history_days(context) < 14:
        return []
    parts = health_components(rule, context)
    weights = {name: w for name, w in rule.weights.items() if name in parts and w > 0}
    if not weights:
        return []
    score = sum(parts[name] * w for name, w in weights.items()) / sum(weights.values())
    tier = "green" if score >= rule.green else "yellow" if score >= rule.yellow else "red"
    # Enter below green, leave only above green + margin: no storm at the boundary.
    recovering = rule.name in context.open_rules and score < rule.green + rule.exit_margin
    if tier == "green" and recovering:
        tier = "yellow"
    evidence = {
        "metric": "health_score",
        "value": round(score, 3),
        "threshold": rule.green,
        "tier": tier,
        "components": {k: round(v, 3) for k, v in parts.items()},
    }
    severity = "critical" if tier == "red" else rule.severity
    return [_finding(rule, context, tier != "green", None, evidence, severity=severity)]


def _history_days(context: Context) -> int:
    first = context.state.first_seen_at
    return (context.today - context.state.local_day(first)).days if first is not None else 0


# --- findings ------------------------------------------------------------------------


class _Blank(dict[str, Any]):
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


class _Forgiving(string.Formatter):
    """Templates never break an alert: a value a format spec cannot take (``None``
    for ``{change:.0%}``) is shown plainly instead."""

    def format_field(self, value: Any, format_spec: str) -> str:
        if isinstance(value, Mapping):
            return ", ".join(f"{key} {item}" for key, item in value.items()) or "none"
        if isinstance(value, list | tuple):
            return ", ".join(str(item) for item in value) or "none"
        try:
            return format(value, format_spec)
        except (TypeError, ValueError):
            return str(value)


_TEMPLATES = _Forgiving()


def render(template: str, fields: Mapping[str, Any]) -> str:
    return _TEMPLATES.vformat(template, (), _Blank(fields))


def _finding(
    rule: Rule,
    context: Context,
    active: bool,
    subject: str | None,
    evidence: Mapping[str, Any],
    *,
    severity: str | None = None,
) -> Finding:
    account = context.account
    labels = {"rule": rule.name, "account_id": context.state.account_id, **rule.labels}
    if account is not None and account.segment:
        labels.setdefault("segment", account.segment)
    fields = _Blank(
        evidence,
        rule=rule.name,
        account_id=context.state.account_id,
        account_name=context.account_name,
        subject=subject or "",
    )
    annotations = {"summary": render(rule.summary, fields)}
    if rule.description:
        annotations["description"] = render(rule.description, fields)
    return Finding(
        rule.name,
        context.state.account_id,
        active,
        severity or rule.severity,
        subject,
        dict(evidence),
        labels,
        annotations,
    )


# Rules that read recent days of activity, which a stalled input makes look empty.
_JUDGE_DAYS = (SilenceRule, ThresholdRule, DropRule, HealthRule)

_EVALUATORS: dict[type, Callable[[Any, Context], list[Finding]]] = {
    SilenceRule: _silence,
    ThresholdRule: _threshold,
    DropRule: _drop,
    AdoptionRule: _adoption,
    TimeToValueRule: _time_to_value,
    NpsRule: _nps,
    HealthRule: _health,
}
