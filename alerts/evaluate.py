"""Evaluating rules against one account's state: pure, "now" is an argument.

``evaluate(rule, context)`` returns the rule's findings for the account: one finding
(or one per watched stakeholder), each saying whether the condition holds and with
which evidence. An empty list means "no verdict": the rule does not apply right now
(account paused, input stalled, metadata missing), and any open alert stays as it is.

Daily rules judge only *completed* local days, and only the account's working days:
a weekday is a working day when the account was active on at least
``working_day_rate`` of those weekdays in its history, so quiet weekends, or a team
that never works Fridays, are expected rather than alarming. Days off in the account's
calendar (``calendars`` in the rules file: closures, public holidays) are never working
days, and are left out of the habit too, so a past holiday is not a "usual break".
"""

from __future__ import annotations

import math
import string
from bisect import bisect_left
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from statistics import fmean, median
from typing import Any, TypeVar

from alerts import decline
from alerts.lifecycle import AlertState, Finding
from alerts.rules import (
    AdoptionRule,
    Calendar,
    DropRule,
    HealthRule,
    NpsRule,
    Rule,
    SilenceRule,
    ThresholdRule,
    TimeToValueRule,
    calendars_for,
)
from stream import metrics
from stream.accounts import Account
from stream.engagement import DEFAULT_ROLE, EngagementState, UserRecord

__all__ = [
    "LAST_SEEN_ROLES",
    "Context",
    "DaysOff",
    "WorkingDays",
    "days_kept_needed",
    "days_off",
    "evaluate",
    "working_weekdays",
]

HISTORY_DAYS = 42
ANYONE = -1
"""A bitmap of user slots that takes everyone: ``active_users & ANYONE`` is the day's
active users, nonzero on any active day."""
_ONE_DAY = timedelta(days=1)
_T = TypeVar("_T")
LAST_SEEN_ROLES = ("champion", "admin", "executive")
"""Whose last-seen times an account-wide silence shows as evidence."""
TYPICAL_USAGE_DAYS = 14  # the health tier's usage part: the typical day of two weeks


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
    open_alerts: Mapping[str, AlertState] = field(default_factory=dict, compare=False)
    """The account's firing alerts by fingerprint: a silence alert is judged on the habit
    it fired on while its subject stays away (the history that showed the habit ages out
    of the state, and would otherwise resolve the alert with nobody back)."""
    adopted: Mapping[str, tuple[str, str]] = field(default_factory=dict, compare=False)
    """Adoption rule -> (feature, local day) it first found adopted on this account
    (``AccountAlerts.adopted``): adopted once, adopted for good."""
    memo: dict[Any, Any] | None = field(default=None, compare=False)
    """Results shared by the evaluations of one day while the account's history before
    today stands still (alerts/evaluation.py clears it when that moves). An entry that
    also depends on something the history key leaves out has it in its own key:
    something of today (last-seen times, today's events), or the people (the state's
    ``people_version``). ``None``: compute everything afresh."""

    today: date = field(init=False, repr=False, compare=False)
    """The account's local day at ``now`` (read by every rule, so worked out once)."""
    open_fingerprints: frozenset[str] = field(init=False, repr=False, compare=False)
    """The keys of ``open_alerts`` (what reused findings are keyed on), worked out once."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "today", self.state.local_day(self.now))
        object.__setattr__(self, "open_fingerprints", frozenset(self.open_alerts))

    @property
    def account_name(self) -> str:
        return self.account.name if self.account else self.state.account_id


_BACK_AFTER_ACTIVE_DAYS = 3
"""Active days in the last week that end an open trend alert left without a fit."""


def days_kept_needed(rules: Iterable[Rule]) -> int:
    """Days of buckets an account's state must keep, today included, for ``rules`` to
    read the same days all day long: the history they read ends yesterday, and a fold
    that reaches today prunes relative to today (StatePolicy.horizon_days)."""
    back = HISTORY_DAYS
    for rule in rules:
        if isinstance(rule, DropRule):  # the windows ending on earlier days (for_days)
            if rule.statistic == "trend":
                reach = rule.trend_days
            else:
                windows = rule.recent_days + rule.baseline_gap_days + rule.baseline_days
                reach = max(HISTORY_DAYS, windows)
            back = max(back, reach + rule.for_days - 1)
    return back + 1


def _memo(context: Context, key: Any, compute: Callable[[], _T]) -> _T:
    """``compute()``, or its value from an earlier evaluation over the same history."""
    memo = context.memo
    if memo is None:
        return compute()
    if key not in memo:
        memo[key] = compute()
    return memo[key]  # type: ignore[no-any-return]


def evaluate(rule: Rule, context: Context) -> list[Finding]:
    """The rule's findings for this account (empty: no verdict now)."""
    account = context.account
    if account is not None and account.status in rule.skip_statuses:
        return []
    if not context.input_healthy and isinstance(rule, _JUDGE_DAYS):
        return []  # our own input is behind: every account would look quiet
    return _EVALUATORS[type(rule)](rule, context)


# --- working days --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DaysOff:
    """The account's calendar days off (none when no calendar applies)."""

    names: tuple[str, ...] = ()
    calendars: tuple[Calendar, ...] = ()

    def __contains__(self, day: object) -> bool:
        if not self.calendars:  # most accounts: the fast answer
            return False
        return isinstance(day, date) and any(c.is_off(day) for c in self.calendars)


def days_off(rule: Rule, account: Account | None, timezone: str) -> DaysOff:
    """The calendars of ``rule``'s rules file that this account follows."""
    chosen = account.calendar if account is not None else None
    zone = account.timezone if account is not None else timezone
    calendars = rule.calendars
    key = (id(calendars), chosen, zone)
    cached = _DAYS_OFF.get(key)
    if cached is not None and cached[0] is calendars:  # the very same rules file
        return cached[1]
    names = calendars_for(calendars, chosen, zone)
    off = DaysOff(names, tuple(calendars[name] for name in names))
    if len(_DAYS_OFF) >= 4096:
        _DAYS_OFF.clear()
    _DAYS_OFF[key] = (calendars, off)
    return off


_DAYS_OFF: dict[tuple[int, str | None, str], tuple[Mapping[str, Calendar], DaysOff]] = {}
"""(the rules file's calendars by identity, the account's calendar, its zone) -> its
days off: asked by every day-based rule at every evaluation. The entry keeps the
calendars it was built from alive, so their identity cannot be reused meanwhile."""


@dataclass(frozen=True, slots=True)
class WorkingDays:
    """The local days an account works: its usual weekdays, bar its days off."""

    weekdays: frozenset[int]
    off: DaysOff = DaysOff()

    def __contains__(self, day: object) -> bool:
        return isinstance(day, date) and day.weekday() in self.weekdays and day not in self.off

    def within(self, end: date, days: int) -> list[date]:
        """The working days among the ``days`` local days ending with ``end``, oldest
        first (``[d for d in metrics.window(end, days) if d in self]``, in one pass)."""
        weekdays, off = self.weekdays, self.off
        pairs = zip(metrics.window(end, days), metrics.window_weekdays(end, days), strict=True)
        if off.calendars:
            return [d for d, w in pairs if w in weekdays and d not in off]
        return [d for d, w in pairs if w in weekdays]

    def gaps(self, days: Sequence[date], today: date) -> tuple[int, int]:
        """For active ``days`` (ascending, all before ``today``): the most working days
        strictly between two consecutive ones, and those since the last one, before
        ``today``; in one walk over the days."""
        active = set(days)
        weekdays, off = self.weekdays, self.off
        check_off = bool(off.calendars)
        longest = run = 0
        day = days[0] + _ONE_DAY
        while day < today:
            if day in active:
                longest = max(longest, run)
                run = 0
            elif day.weekday() in weekdays and not (check_off and day in off):
                run += 1
            day += _ONE_DAY
        return longest, run


def working_weekdays(
    state: EngagementState,
    end: date,
    rate: float,
    off: DaysOff = DaysOff(),
    *,
    users: int = ANYONE,
    since: float | None = None,
) -> frozenset[int]:
    """Weekdays (0 = Monday) on which the account (or, with ``users`` and ``since``, one
    person: their slot's bit) is usually active, over the history up to ``end``; days off
    count neither as worked nor as skipped."""
    start = since if since is not None else state.first_seen_at
    first = state.local_day(start) if start is not None else end
    observed, active = [0] * 7, [0] * 7
    days = metrics.window(end, HISTORY_DAYS)
    skip = bisect_left(days, first)  # days before the account (or person) was seen
    weekdays = metrics.window_weekdays(end, HISTORY_DAYS)[skip:]
    buckets = metrics.window_buckets(state, end, HISTORY_DAYS)[skip:]
    check_off = bool(off.calendars)
    for day, weekday, bucket in zip(days[skip:], weekdays, buckets, strict=True):
        if check_off and day in off:
            continue
        observed[weekday] += 1
        if bucket is not None and bucket.active_users & users:
            active[weekday] += 1
    return frozenset(w for w in range(7) if observed[w] and active[w] / observed[w] >= rate)


def _working_days(
    rule: Rule, context: Context, end: date, rate: float, off: DaysOff | None = None
) -> WorkingDays:
    off = off if off is not None else days_off(rule, context.account, context.state.timezone)
    return WorkingDays(_account_weekdays(context, end, rate, off), off)


def _account_weekdays(context: Context, end: date, rate: float, off: DaysOff) -> frozenset[int]:
    """:func:`working_weekdays` of the whole account, shared by the rules that ask."""
    return _memo(
        context,
        ("weekdays", end, rate, off.names),
        lambda: working_weekdays(context.state, end, rate, off),
    )


# --- silence -------------------------------------------------------------------------


def _silence(rule: Any, context: Context) -> list[Finding]:
    assert isinstance(rule, SilenceRule)
    roles = rule.roles if rule.scope == "stakeholder" else LAST_SEEN_ROLES
    # Who holds the roles, and since when, is history the shared key leaves out: the
    # state's ``people_version`` moves whenever any of it does.
    people = context.state.holding(roles)
    version = context.state.people_version
    fired = _fired(rule, context)
    verdicts = _memo(
        context,
        ("silence", rule.name, version, _habits_fired_on(fired)),
        lambda: _silence_verdicts(rule, context, people, fired),
    )
    # Fresh evidence: people seen today show up at once (and nothing else moves today).
    seen = tuple(user.last_seen for _, user in people)

    def findings() -> list[Finding]:
        found = []
        for subject, active, judged in verdicts:
            evidence = judged
            if "last_seen" in judged:
                evidence = {**judged, "last_seen": _last_seen(people, subject)}
            found.append(_finding(rule, context, active, subject, evidence))
        return found

    return _memo(
        context, ("silence-seen", rule.name, version, seen, _habits_fired_on(fired)), findings
    )


_SilenceVerdict = tuple[str | None, bool, dict[str, Any]]


def _fired(rule: SilenceRule, context: Context) -> dict[str | None, AlertState]:
    """The rule's firing alerts on this account, by subject."""
    return {
        alert.subject: alert for alert in context.open_alerts.values() if alert.rule == rule.name
    }


def _habits_fired_on(fired: Mapping[str | None, AlertState]) -> tuple[Any, ...]:
    """What of ``fired`` a verdict reads (a memo key): each one's habit as it fired."""
    return tuple(sorted((str(s), str(_habit_fired_on(a))) for s, a in fired.items()))


def _habit_fired_on(alert: AlertState) -> tuple[date, frozenset[int], int] | None:
    """The last active day, working weekdays and usual longest break a silence alert
    fired on (its evidence), or ``None`` if its evidence does not say."""
    evidence = alert.evidence
    last, weekdays, usual = (
        evidence.get("last_active_day"),
        evidence.get("working_weekdays"),
        evidence.get("baseline"),
    )
    if not (isinstance(last, str) and isinstance(weekdays, list) and isinstance(usual, int)):
        return None
    try:
        return date.fromisoformat(last), frozenset(weekdays), usual
    except ValueError:
        return None


def _silence_verdicts(
    rule: SilenceRule,
    context: Context,
    people: Sequence[tuple[str, UserRecord]],
    fired: Mapping[str | None, AlertState],
) -> list[_SilenceVerdict]:
    """Each subject's verdict and evidence, bar the last-seen times: a function of the
    history before today, of the people (who holds the roles, since when) and of the
    habits ``fired`` alerts fired on, so evaluations of one day share it while none of
    them moves (:func:`_silence` keys it on all three). ``people``: the users holding the
    rule's roles (``EngagementState.holding``)."""
    state = context.state
    # The habit is read from the history *before* the silence: measured up to today, a
    # long silence would erode its own working days until the alert resolved itself.
    end = _history_end(context)
    off = days_off(rule, context.account, state.timezone)
    rate = rule.working_day_rate
    if rule.scope == "account":
        days = _active_days(state, end, ANYONE)
        held = _still_away(rule, context, None, days, alert=fired.get(None), off=off)
        if held is not None:
            return [held]
        working = WorkingDays(_account_weekdays(context, days[-1] if days else end, rate, off), off)
        first = state.first_seen_at
        return [_silence_verdict(rule, context, None, days, first_seen=first, working=working)]
    verdicts = []
    for user_id, user in people:
        # A person's own working days: a champion who never logs in at weekends misses
        # nothing on a Sunday, even if colleagues of theirs work then.
        bit = 1 << user.slot
        days = _active_days(state, end, bit)
        held = _still_away(rule, context, user_id, days, alert=fired.get(user_id), off=off)
        if held is not None:
            verdicts.append(held)
            continue
        weekdays = working_weekdays(
            state, days[-1] if days else end, rate, off, users=bit, since=user.first_seen
        )
        verdicts.append(
            _silence_verdict(
                rule,
                context,
                user_id,
                days,
                first_seen=user.first_seen,
                working=WorkingDays(weekdays, off),
            )
        )
    return verdicts


def _still_away(
    rule: SilenceRule,
    context: Context,
    subject: str | None,
    days: list[date],
    *,
    alert: AlertState | None,
    off: DaysOff,
) -> _SilenceVerdict | None:
    """The verdict on a subject whose silence alert is firing and who has not been
    active since the day it fired on: judged on the habit it fired on, not read again.

    Read again, the habit erodes as the state's horizon moves on with other events (a
    colleague's, a billing sync's): the weekdays thin out, the missed count falls, and
    once fewer than ``min_active_days`` are left the alert resolved as "no established
    habit yet", with nobody back. ``None``: judge afresh (no such alert, or back)."""
    habit = _habit_fired_on(alert) if alert is not None else None
    if habit is None:
        return None
    last_active, weekdays, usual = habit
    if days and days[-1] > last_active:
        return None  # back since: the history says what the habit is now
    working = WorkingDays(weekdays, off)
    _, missed = working.gaps([last_active], context.today)
    return _judged_silence(rule, subject, last_active, working, usual=usual, missed=missed)


def _history_end(context: Context) -> date:
    """The last completed day that can hold history: yesterday, or the account's newest
    activity if that is older (its buckets are kept relative to that day)."""
    yesterday = context.today - timedelta(days=1)
    newest = context.state.newest_at
    return min(yesterday, context.state.local_day(newest)) if newest is not None else yesterday


def _active_days(state: EngagementState, end: date, users: int) -> list[date]:
    """The days of the history up to ``end`` on which any of ``users`` (a bitmap of
    slots; :data:`ANYONE`) was active."""
    buckets = metrics.window_buckets(state, end, HISTORY_DAYS)
    return [
        day
        for day, bucket in zip(metrics.window(end, HISTORY_DAYS), buckets, strict=True)
        if bucket is not None and bucket.active_users & users
    ]


def _silence_verdict(
    rule: SilenceRule,
    context: Context,
    subject: str | None,
    days: list[date],
    *,
    first_seen: float | None,
    working: WorkingDays,
) -> _SilenceVerdict:
    state, today = context.state, context.today
    history = (today - state.local_day(first_seen)).days if first_seen is not None else 0
    enough = history >= rule.min_history_days and len(days) >= rule.min_active_days
    habit = enough and bool(working.weekdays)
    if not habit or not days:
        reason = "no established habit yet"
        return subject, False, {"metric": "missed_working_days", "value": 0, "reason": reason}
    usual, missed = working.gaps(days, today)
    return _judged_silence(rule, subject, days[-1], working, usual=usual, missed=missed)


def _judged_silence(
    rule: SilenceRule,
    subject: str | None,
    last_active: date,
    working: WorkingDays,
    *,
    usual: int,
    missed: int,
) -> _SilenceVerdict:
    """Silent once the working days missed reach the rule's multiple of the usual break."""
    threshold = max(rule.min_missed_working_days, math.ceil(rule.gap_multiple * usual))
    evidence: dict[str, Any] = {
        "metric": "missed_working_days",
        "value": missed,
        "threshold": threshold,
        "baseline": usual,
        "last_active_day": last_active.isoformat(),
        "working_weekdays": sorted(working.weekdays),
        "last_seen": {},  # filled in by _silence, at each evaluation
    }
    if working.off.names:  # says why a holiday did not count as missed
        evidence["calendar"] = ", ".join(working.off.names)
    return subject, missed >= threshold, evidence


def _last_seen(people: Sequence[tuple[str, UserRecord]], subject: str | None) -> dict[str, str]:
    """When each of ``people`` (or only ``subject``) was last seen, as evidence shows it."""
    return {
        uid: datetime.fromtimestamp(user.last_seen, UTC).isoformat().replace("+00:00", "Z")
        for uid, user in people
        if subject is None or uid == subject
    }


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
    yesterday = context.today - timedelta(days=1)
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
    # The habit is read up to the last active day, as silence reads it: measured up to
    # yesterday, a long silence would wear its own working days away until the alert
    # resolved on an account that has not come back.
    active = _active_days(context.state, _history_end(context), ANYONE)
    habit_end = active[-1] if active else yesterday
    working = _working_days(rule, context, habit_end, rule.working_day_rate)
    days = working.within(yesterday, HISTORY_DAYS)
    days = days[-rule.for_working_days :]
    if len(days) < rule.for_working_days:
        return []
    values = [_daily_value(rule.metric, context, day) for day in days]
    if any(value is None for value in values):
        if rule.metric != "daily_usage_rate":
            return []  # a day without logins has no time per login: no verdict
        # No licenses on record (or a change to 0): a share of them means nothing, and
        # an alert about it must not stay open.
        return [_gone(rule, context, rule.metric, "no licenses on record")]
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
    off = days_off(rule, context.account, context.state.timezone)
    windows = _Windows(rule.recent_days, rule.baseline_days, rule.baseline_gap_days)
    # Enter at -drop, leave only above -(drop - margin): no storm at the boundary.
    level = rule.drop - rule.exit_margin if rule.name in context.open_rules else rule.drop
    if rule.statistic == "trend":  # a fitted trend, noise measured (alerts/decline.py)
        extra = max(0, rule.trend_days + rule.for_days - 1 - HISTORY_DAYS)
        kept = _kept_days(context, rule.metric, off, extra_days=extra)
        full = _full_weekdays(kept)
        yesterday = context.today - timedelta(days=1)
        fits = [
            decline.fit_trend(
                decline.trend_points(kept, full, yesterday - timedelta(days=b), rule.trend_days)
            )
            for b in range(rule.for_days)
        ]
        fit = fits[0]
        if rule.name in context.open_rules:
            # Open: it resolves only above the exit level, not because the level fell
            # under min_baseline (the deeper the drop, the smaller it gets) or the
            # slope's significance wavered; with too few days to fit, no verdict.
            if fit is None or fit.days < rule.min_trend_days:
                # Too few days to fit: while the account is (nearly) silent, that is the
                # silence rules' business and the alert stays; once it is active again
                # on a few days of a week, there is no decline left to show.
                active = _active_days(context.state, yesterday, ANYONE)
                week = [day for day in active if day > yesterday - timedelta(days=7)]
                if len(week) < _BACK_AFTER_ACTIVE_DAYS:
                    return []
                reason = "active again: too few days to fit a trend"
                return [_gone(rule, context, f"{rule.metric}_{rule.trend_days}d_trend", reason)]
            down = fit.change <= -level
        else:
            down = all(
                decline.declined(f, level, rule.min_z, rule.min_baseline, rule.min_trend_days)
                for f in fits
            )
        evidence = {
            "metric": f"{rule.metric}_{rule.trend_days}d_trend",
            "value": None if fit is None else round(fit.end, 3),
            "baseline": None if fit is None else round(fit.start, 3),
            "threshold": -rule.drop,
            "change": None if fit is None else round(fit.change, 3),
            "z": None if fit is None else round(fit.z, 2),
            "days": 0 if fit is None else fit.days,
        }
        return [_finding(rule, context, down, None, evidence)]
    # The newest window first; with for_days > 1 the windows ending a local day earlier
    # too (calendar days: 24 hours back from a 25-hour day's evening is the same day).
    ends = [context.today - timedelta(days=1 + b) for b in range(rule.for_days)]
    if rule.statistic == "median":
        kept = _kept_days(context, rule.metric, off, extra_days=rule.for_days - 1)
        trends = [_typical_trend(context, rule.metric, windows, off, kept, end=end) for end in ends]
    else:
        trends = [_trend(context, rule.metric, windows, off, end) for end in ends]
    trend = trends[0]
    dropped = all(_dropped(t, rule.min_baseline, level) for t in trends)
    evidence = {
        "metric": f"{rule.metric}_{rule.recent_days}d_{rule.statistic}",
        "value": round(trend.recent, 3),
        "baseline": round(trend.baseline, 3),
        "threshold": -rule.drop,
        "change": None if trend.change is None else round(trend.change, 3),
    }
    return [_finding(rule, context, dropped, None, evidence)]


def _dropped(trend: metrics.Trend, min_baseline: float, level: float) -> bool:
    """Fell by ``level`` or more from a baseline big enough to mean something."""
    quiet = trend.baseline < min_baseline or trend.change is None
    return not quiet and trend.change is not None and trend.change <= -level


@dataclass(frozen=True, slots=True)
class _Windows:
    """The recent days, and the baseline days that end ``gap`` days before them."""

    recent: int
    baseline: int
    gap: int = 0


def _trend(
    context: Context, metric: str, windows: _Windows, off: DaysOff, end: date | None = None
) -> metrics.Trend:
    """The metric's recent mean against its baseline, over the days up to ``end``
    (default: yesterday) that are not days off: a holiday neither drags the recent days
    down nor the baseline."""
    recent_days, gap = windows.recent, windows.gap
    wanted = recent_days + gap + windows.baseline
    yesterday = end if end is not None else context.today - timedelta(days=1)
    span = wanted
    while sum(day not in off for day in metrics.window(yesterday, span)) < wanted:
        span += 1
        if span > wanted + HISTORY_DAYS:  # a calendar that is (nearly) all days off
            return metrics.Trend(0.0, 0.0, None)
    days = metrics.window(yesterday, span)
    series = metrics.daily_series(context.state, metric, yesterday, span)
    kept = [value for day, value in zip(days, series, strict=True) if day not in off]
    if gap:
        kept = kept[: len(kept) - recent_days - gap] + kept[len(kept) - recent_days :]
    return metrics.trend(kept, recent_days, windows.baseline)


def _typical_trend(
    context: Context,
    metric: str,
    windows: _Windows,
    off: DaysOff,
    kept: Mapping[date, float] | None = None,
    *,
    end: date | None = None,
) -> metrics.Trend:
    """The typical (median) full working day of the recent window (ending on ``end``,
    default yesterday) against that of the baseline, within the kept history since the
    account was first seen (an account younger than the baseline's distance is compared
    with its first days). ``kept``: the metric's days already read (a superset is fine:
    the history is cut here)."""
    yesterday = end if end is not None else context.today - timedelta(days=1)
    oldest = yesterday - timedelta(days=HISTORY_DAYS - 1)
    if kept is None:
        kept = _kept_days(context, metric, off)
    values = {d: v for d, v in kept.items() if oldest <= d <= yesterday}
    full = _full_weekdays(values)
    base_end = yesterday - timedelta(days=windows.recent + windows.gap)
    if values:  # a younger account: its first days, as far back as it goes
        latest = yesterday - timedelta(days=windows.recent)
        earliest = min(values) + timedelta(days=windows.baseline - 1)
        base_end = min(max(base_end, earliest), latest)
    recent = _typical(values, metrics.window(yesterday, windows.recent), full)
    baseline = _typical(values, metrics.window(base_end, windows.baseline), full)
    if recent is None or baseline is None:
        return metrics.Trend(recent or 0.0, baseline or 0.0, None)
    change = (recent - baseline) / baseline if baseline else None
    return metrics.Trend(recent, baseline, change)


def _kept_days(
    context: Context, metric: str, off: DaysOff, extra_days: int = 0
) -> dict[date, float]:
    """:func:`_read_kept_days`, shared by the rules that ask (read-only)."""
    return _memo(
        context,
        ("kept", context.today, metric, off.names, extra_days),
        lambda: _read_kept_days(context, metric, off, extra_days),
    )


def _read_kept_days(
    context: Context, metric: str, off: DaysOff, extra_days: int = 0
) -> dict[date, float]:
    """The metric on each day of the kept history (and ``extra_days`` before it) since
    the account was first seen, bar days off: days before an account existed are no
    evidence of a low baseline."""
    state = context.state
    yesterday = context.today - timedelta(days=1)
    first = state.local_day(state.first_seen_at) if state.first_seen_at is not None else yesterday
    span = HISTORY_DAYS + extra_days
    days = metrics.window(yesterday, span)
    series = metrics.daily_series(state, metric, yesterday, span)
    skip = bisect_left(days, first)  # days before the account was first seen
    kept = zip(days[skip:], series[skip:], strict=True)
    if off.calendars:
        return {d: v for d, v in kept if d not in off}
    return dict(kept)


def _full_weekdays(values: Mapping[date, float]) -> frozenset[int]:
    """Weekdays the account works at full strength: a mean at least half the busiest
    weekday's. Light weekend use is real activity (silence counts it) but not a
    typical day's volume."""
    per_weekday: list[list[float]] = [[], [], [], [], [], [], []]
    for day, value in values.items():
        per_weekday[day.weekday()].append(value)
    # fmean's arithmetic (an exactly rounded sum over the count), at a fraction of its cost
    means = [(w, math.fsum(seen) / len(seen)) for w, seen in enumerate(per_weekday) if seen]
    busiest = max((mean for _, mean in means), default=0.0)
    return frozenset(w for w, mean in means if busiest and mean >= busiest / 2)


def _typical(
    values: Mapping[date, float], days: Sequence[date], full: frozenset[int]
) -> float | None:
    """The median over the full working days among ``days`` (``None``: there are none)."""
    kept = [values[d] for d in days if d in values and d.weekday() in full]
    return median(kept) if kept else None


# --- adoption, time to value, NPS ----------------------------------------------------


def _adoption(rule: Any, context: Context) -> list[Finding]:
    assert isinstance(rule, AdoptionRule)
    # It reads today's events too: every event of the day adds one to its count.
    today = context.state.days.get(context.today.isoformat())
    seen_today = today.events if today is not None else 0
    known = context.adopted.get(rule.name)
    return _memo(
        context,
        ("adoption", rule.name, seen_today, known),
        lambda: _judge_adoption(rule, context),
    )


def _gone(rule: Rule, context: Context, metric: str, reason: str) -> Finding:
    """An inactive finding for a rule whose premise the account no longer meets (its
    record changed): what it had open resolves, the evidence saying why."""
    return _finding(rule, context, False, None, {"metric": metric, "value": None, "reason": reason})


def _judge_adoption(rule: AdoptionRule, context: Context) -> list[Finding]:
    account = context.account
    if account is None:
        return []  # no record yet: no verdict
    if account.contract_start is None:
        return [_gone(rule, context, f"adopted:{rule.feature}", "no contract_start on record")]
    if _history_days(context) < rule.window_days:
        return []  # too little history to tell "not adopted" from "not seen yet"
    start = max(account.contract_start, rule.launched_on or account.contract_start)
    due = start + timedelta(days=rule.within_days)
    # An account with fewer seats than min_users adopts with all of them: a one-licence
    # customer using the feature daily must not be told every week it has not.
    min_users = min(rule.min_users, account.licenses) if account.licenses > 0 else rule.min_users
    adopted = metrics.account_adopted(
        context.state,
        rule.feature,
        context.today,
        days=rule.window_days,
        min_users=min_users,
        min_days=rule.min_days,
    )
    evidence: dict[str, Any] = {
        "metric": f"adopted:{rule.feature}",
        "value": adopted,
        "threshold": True,
        "due": due.isoformat(),
    }
    known = context.adopted.get(rule.name)
    if known is not None and known[0] == rule.feature:
        # Adopted before: its use may have left the window since (a long break, a
        # feature dropped), but "has not adopted" would be false.
        evidence.update(value=True, adopted_on=known[1])
    return [_finding(rule, context, context.today >= due and not evidence["value"], None, evidence)]


def _time_to_value(rule: Any, context: Context) -> list[Finding]:
    assert isinstance(rule, TimeToValueRule)
    account = context.account
    if account is None:
        return []  # no record yet: no verdict
    if account.contract_start is None:
        return [_gone(rule, context, "days_without_value", "no contract_start on record")]
    first = context.state.first_seen_at
    if first is None:
        return []
    if context.state.local_day(first) > account.contract_start + timedelta(days=rule.max_days):
        # We did not watch its onboarding: a milestone may predate our history.
        return [_gone(rule, context, "days_without_value", "onboarding before our history")]
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
    users = context.state.users
    answers = []
    for answer in context.state.recent_nps:
        if answer["at"] < since or answer["score"] > rule.max_score:
            continue
        role = answer["role"]
        if role == DEFAULT_ROLE and (person := users.get(answer["user_id"])) is not None:
            role = person.role  # an answer sent without a role: who they are
        if role in rule.roles:
            answers.append({**answer, "role": role})
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
    off = days_off(rule, context.account, state.timezone)
    working = _working_days(rule, context, yesterday, 0.4, off)
    if not working.weekdays:
        working = WorkingDays(frozenset(range(5)), off)
    days = working.within(yesterday, 28)
    typical = rule.statistic == "median"
    kept = _kept_days(context, "active_users", off) if typical else {}
    parts: dict[str, float] = {}
    usage = _typical_usage(context, kept, off) if typical else _mean_usage(context, days)
    if usage is not None:
        parts["usage"] = min(1.0, usage / rule.usage_target)
    if days:
        parts["activity"] = min(1.0, metrics.active_days(state, yesterday, 28) / len(days))
    week = _Windows(7, 28)
    trend = (
        _typical_trend(context, "active_users", week, off, kept)
        if typical
        else _trend(context, "active_users", week, off)
    )
    if trend.change is not None:
        parts["trend"] = max(0.0, min(1.0, 1.0 + trend.change))
    answers = metrics.nps(state)
    if answers.responses:
        # Promoters count 1, passives (and the neutral prior) 0.5, detractors 0.
        points = answers.promoters + 0.5 * (answers.passives + rule.nps_prior_answers)
        parts["nps"] = points / (answers.responses + rule.nps_prior_answers)
    return parts


def _mean_usage(context: Context, days: list[date]) -> float | None:
    """The mean daily usage rate of the last 7 working days."""
    rates = [_daily_value("daily_usage_rate", context, d) for d in days[-7:]]
    if not rates or any(r is None for r in rates):
        return None
    return fmean(float(r) for r in rates if r is not None)


def _typical_usage(context: Context, kept: Mapping[date, float], off: DaysOff) -> float | None:
    """The typical (median) full working day's usage rate of the last two weeks, which
    a few days off, or a week's unannounced holiday, do not move much (silence rules
    speak for those)."""
    full = _full_weekdays(kept)
    yesterday = context.today - timedelta(days=1)
    recent = metrics.window(yesterday, TYPICAL_USAGE_DAYS)
    rates = [
        _daily_value("daily_usage_rate", context, d)
        for d in recent
        if d.weekday() in full and d not in off
    ]
    if not rates or any(r is None for r in rates):
        return None
    return median(float(r) for r in rates if r is not None)


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
    for ``{change:.0%}``) is shown plainly instead, and a placeholder whose lookup
    fails (``{components[nope]}``, ``{value[0]}``) is left as is."""

    def get_field(self, field_name: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> Any:
        try:
            return super().get_field(field_name, args, kwargs)
        except (LookupError, AttributeError, TypeError, ValueError):
            return "{" + field_name + "}", field_name

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
    annotations = {}
    if active:  # an inactive finding's text is never shown: a resolution keeps the firing's
        fields = _Blank(
            evidence,
            rule=rule.name,
            account_id=context.state.account_id,
            account_name=context.account_name,
            subject=subject or "",
        )
        annotations["summary"] = render(rule.summary, fields)
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
