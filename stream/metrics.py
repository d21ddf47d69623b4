"""Adoption metrics over engagement state, exactly as docs/metrics.md defines them.

Pure functions of (state, account metadata, day). Days are local calendar days of the
account; a window of ``n`` days ending at ``day`` includes ``day``. A metric whose
denominator is zero or unknown is ``None``, never a made-up 0.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from operator import attrgetter
from statistics import fmean

from stream.accounts import Account
from stream.engagement import DayBucket, EngagementState

__all__ = [
    "NpsSummary",
    "PortfolioAdoption",
    "Trend",
    "WeekdayHabit",
    "account_adopted",
    "active_days",
    "average_time_per_login",
    "customer_adoption_rate",
    "daily_series",
    "daily_usage_rate",
    "feature_adoption_rate",
    "licenses_on",
    "nps",
    "stakeholder_active_days",
    "stakeholder_last_seen",
    "time_to_first_action",
    "time_to_value",
    "trend",
    "weekday_profile",
    "window",
    "window_buckets",
    "window_weekdays",
]

_EMPTY = DayBucket()


@lru_cache(maxsize=4096)
def window(end: date, days: int) -> tuple[date, ...]:
    """The ``days`` local days ending with ``end``, oldest first (shared: rules ask for
    the same few windows at every evaluation)."""
    return tuple(end - timedelta(days=offset) for offset in range(days - 1, -1, -1))


@lru_cache(maxsize=4096)
def window_weekdays(end: date, days: int) -> tuple[int, ...]:
    """The weekday (0 = Monday) of each day of :func:`window`."""
    return tuple(day.weekday() for day in window(end, days))


@lru_cache(maxsize=4096)
def _window_keys(end: date, days: int) -> tuple[str, ...]:
    return tuple(day.isoformat() for day in window(end, days))


def window_buckets(state: EngagementState, end: date, days: int) -> list[DayBucket | None]:
    """The state's bucket (``None``: no activity) of each day of :func:`window`."""
    get = state.days.get
    return [get(key) for key in _window_keys(end, days)]


def _buckets(state: EngagementState, days: Iterable[date]) -> list[DayBucket]:
    return [state.bucket(day) or _EMPTY for day in days]


def _window_buckets(state: EngagementState, end: date, days: int) -> list[DayBucket]:
    return [bucket or _EMPTY for bucket in window_buckets(state, end, days)]


def licenses_on(state: EngagementState, account: Account | None, day: date) -> int | None:
    """Licenses in force at the end of ``day``: the last license_change, else metadata."""
    if not state.license_changes:  # most accounts: no need to place the day in time
        return account.licenses if account is not None else None
    end_of_day = datetime.combine(day + timedelta(days=1), time(), state.zone()).timestamp()
    changes = [n for at, n in state.license_changes if at < end_of_day]
    if changes:
        return changes[-1]
    return account.licenses if account is not None else None


def daily_usage_rate(state: EngagementState, day: date, licenses: int | None) -> float | None:
    """Distinct users with a login that day / licenses purchased."""
    if not licenses:
        return None
    bucket = state.bucket(day) or _EMPTY
    return bucket.login_users.bit_count() / licenses


def average_time_per_login(state: EngagementState, days: Iterable[date]) -> float | None:
    """Total session seconds in the period / logins in the period."""
    buckets = _buckets(state, days)
    logins = sum(b.logins for b in buckets)
    return sum(b.session_s for b in buckets) / logins if logins else None


def feature_adoption_rate(
    state: EngagementState, feature: str, days: Iterable[date]
) -> float | None:
    """Distinct users who used ``feature`` in the window / distinct active users in it."""
    used = active = 0
    for bucket in _buckets(state, days):
        used |= bucket.features.get(feature, 0)
        active |= bucket.active_users
    return used.bit_count() / active.bit_count() if active else None


def active_days(state: EngagementState, end: date, days: int = 28) -> int:
    """Days in the trailing window with at least one login."""
    return sum(1 for bucket in window_buckets(state, end, days) if bucket and bucket.logins)


def daily_series(
    state: EngagementState, metric: str, end: date, days: int, licenses: int | None = None
) -> list[float]:
    """One value per day: ``active_users``, ``login_users``, ``logins``, ``sessions``,
    ``session_s``, ``events`` or ``usage_rate`` (needs ``licenses``)."""
    if metric == "usage_rate" and not licenses:
        raise ValueError("the usage_rate series needs a licence count")
    buckets = _window_buckets(state, end, days)
    if metric == "usage_rate" and licenses:
        return [bucket.login_users.bit_count() / licenses for bucket in buckets]
    read = attrgetter(metric)
    if metric in ("active_users", "login_users"):
        return [float(read(bucket).bit_count()) for bucket in buckets]
    return [float(read(bucket)) for bucket in buckets]


@dataclass(frozen=True, slots=True)
class Trend:
    recent: float
    baseline: float
    change: float | None
    """(recent - baseline) / baseline; ``None`` when the baseline is 0."""


def trend(series: Sequence[float], recent_days: int = 7, baseline_days: int = 28) -> Trend:
    """Mean of the last ``recent_days`` against the mean of the ``baseline_days`` before."""
    if len(series) < recent_days + baseline_days:
        raise ValueError(f"need {recent_days + baseline_days} values, got {len(series)}")
    recent = fmean(series[-recent_days:])
    baseline = fmean(series[-recent_days - baseline_days : -recent_days])
    change = (recent - baseline) / baseline if baseline else None
    return Trend(recent, baseline, change)


def stakeholder_last_seen(state: EngagementState, roles: Iterable[str]) -> dict[str, datetime]:
    """Per user holding a key role, the time of their last activity."""
    return {uid: datetime.fromtimestamp(u.last_seen, UTC) for uid, u in state.holding(tuple(roles))}


def stakeholder_active_days(state: EngagementState, user_id: str, end: date, days: int = 28) -> int:
    """Days in the trailing window on which ``user_id`` did anything."""
    user = state.users.get(user_id)
    if user is None:
        return 0
    bit = 1 << user.slot
    return sum(1 for b in _buckets(state, window(end, days)) if b.active_users & bit)


@dataclass(frozen=True, slots=True)
class WeekdayHabit:
    weekday: int
    """0 = Monday ... 6 = Sunday, in the account's time zone."""
    observed: int
    """How many of this weekday the window holds since the account was first seen."""
    active: int
    rate: float | None


def weekday_profile(state: EngagementState, end: date, days: int = 42) -> list[WeekdayHabit]:
    """How often the account is active on each weekday: rules use it to expect quiet
    weekends or Fridays instead of alarming on them."""
    first = state.local_day(state.first_seen_at) if state.first_seen_at is not None else end
    observed = [0] * 7
    active = [0] * 7
    for day in window(end, days):
        if day < first:
            continue
        observed[day.weekday()] += 1
        bucket = state.bucket(day)
        if bucket is not None and bucket.active_users:
            active[day.weekday()] += 1
    return [
        WeekdayHabit(w, observed[w], active[w], active[w] / observed[w] if observed[w] else None)
        for w in range(7)
    ]


@dataclass(frozen=True, slots=True)
class NpsSummary:
    promoters: int
    passives: int
    detractors: int

    @property
    def responses(self) -> int:
        return self.promoters + self.passives + self.detractors

    @property
    def score(self) -> float | None:
        """% promoters (9-10) - % detractors (0-6), from -100 to 100."""
        if not self.responses:
            return None
        return 100.0 * (self.promoters - self.detractors) / self.responses


def nps(state: EngagementState, days: Iterable[date] | None = None) -> NpsSummary:
    """NPS over a window of days, or over the account's lifetime when ``days`` is None."""
    if days is None:
        return NpsSummary(*state.nps_totals)
    scores = [score for bucket in _buckets(state, days) for _, score in bucket.nps]
    return NpsSummary(
        sum(s >= 9 for s in scores), sum(7 <= s <= 8 for s in scores), sum(s <= 6 for s in scores)
    )


def time_to_first_action(state: EngagementState) -> timedelta | None:
    """From the account's first login to its first engagement action (a feature used)."""
    if state.first_login_at is None or state.first_action_at is None:
        return None
    return timedelta(seconds=max(0.0, state.first_action_at - state.first_login_at))


def time_to_value(state: EngagementState, account: Account | None) -> timedelta | None:
    """From contract start (local midnight) to the first value milestone."""
    if account is None or account.contract_start is None or state.first_value_at is None:
        return None
    start = datetime.combine(account.contract_start, time(), state.zone()).timestamp()
    return timedelta(seconds=state.first_value_at - start)


def account_adopted(
    state: EngagementState, feature: str, end: date, *, days: int, min_users: int, min_days: int
) -> bool:
    """The per-feature definition of "adopted": used by >= ``min_users`` distinct users
    in the window and on >= ``min_days`` days of it."""
    users = used_days = 0
    for bucket in _window_buckets(state, end, days):
        bits = bucket.features.get(feature, 0)
        users |= bits
        used_days += 1 if bits else 0
    return users.bit_count() >= min_users and used_days >= min_days


@dataclass(frozen=True, slots=True)
class PortfolioAdoption:
    """A partial count that adds up across workers (each counts the accounts it owns)."""

    adopted: int = 0
    accounts: int = 0

    def __add__(self, other: PortfolioAdoption) -> PortfolioAdoption:
        return PortfolioAdoption(self.adopted + other.adopted, self.accounts + other.accounts)

    @property
    def rate(self) -> float | None:
        return self.adopted / self.accounts if self.accounts else None


def customer_adoption_rate(
    states: Iterable[tuple[EngagementState, date]],
    feature: str,
    days: int = 28,
    min_users: int = 1,
    min_days: int = 1,
) -> PortfolioAdoption:
    """Accounts that adopted ``feature`` / all accounts (each judged at its own day)."""
    total = PortfolioAdoption()
    for state, end in states:
        adopted = account_adopted(
            state, feature, end, days=days, min_users=min_users, min_days=min_days
        )
        total += PortfolioAdoption(int(adopted), 1)
    return total
