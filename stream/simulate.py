"""A deterministic demo fleet: SaaS accounts and their product-usage events.

Feeds ``engagewatch simulate``, demos and tests with a believable mix of healthy and
troubled accounts, each following the usage-event contract and the account record.
Pure: no I/O and no wall clock; the window is an argument and every random choice
comes from ``random.Random`` seeded by the caller.

Time and onboarding: ``build_fleet`` has no "now", so contract dates are laid out
around ``FleetSpec.as_of``, while ``generate_events`` starts an onboarding account's
activity ``ONBOARDING_DAYS`` before the window's end. Pass ``as_of=end.date()`` and the
records agree with the events (contract start a few days before the first login).
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

__all__ = [
    "BEHAVIOURS",
    "FEATURES",
    "MILESTONE",
    "ONBOARDING_DAYS",
    "ROLES",
    "TIMEZONES",
    "FleetSpec",
    "SimAccount",
    "SimUser",
    "build_fleet",
    "generate_events",
]

BEHAVIOURS = (
    "healthy",
    "weekday_only",
    "going_quiet",
    "champion_leaving",
    "slow_decline",
    "onboarding",
)
_PROBLEMS = BEHAVIOURS[2:]
_UNHAPPY = frozenset({"going_quiet", "champion_leaving", "slow_decline"})
ROLES = ("champion", "admin", "executive", "user")
FEATURES = ("reports", "dashboards", "exports", "integrations", "alerts")
_FEATURE_WEIGHTS = (5, 4, 2, 1, 2)
MILESTONE = "first_report"
TIMEZONES = (
    "America/New_York",
    "America/Chicago",
    "America/Los_Angeles",
    "Europe/London",
    "Europe/Berlin",
    "Asia/Tokyo",
    "Australia/Sydney",
)

ONBOARDING_DAYS = 10  # onboarding accounts act only in the window's last days
QUIET_AT = 0.7  # going_quiet: share of the window after which nothing happens
CHAMPION_LEAVES_AT = 0.6  # champion_leaving: share after which champions are gone
DECLINE_FLOOR = 0.15  # slow_decline: login probability multiplier at the window's end
WEEKEND_FACTOR = 0.12  # light weekend use for everyone but weekday_only
NPS_PER_SESSION = 0.006
LICENSE_CHANGE_PER_DAY = 0.01

# segment -> ((min users, max users), (min ARR, max ARR)); ARR follows seat count.
_SEGMENTS = {
    "enterprise": ((35, 60), (80_000, 250_000)),
    "mid-market": ((15, 34), (20_000, 80_000)),
    "smb": ((5, 14), (3_000, 20_000)),
}
_SEGMENT_WEIGHTS = (1, 2, 2)
_PROPENSITY = {  # role -> range of a user's working-day login probability
    "champion": (0.85, 0.97),
    "admin": (0.6, 0.85),
    "executive": (0.2, 0.45),
    "user": (0.35, 0.85),
}
_CSMS = ("dana", "miguel", "priya", "sam", "noor")
_NAME_WORDS = (
    "Acme",
    "Globex",
    "Initech",
    "Umbrella",
    "Stark",
    "Wayne",
    "Hooli",
    "Vandelay",
    "Tyrell",
    "Cyberdyne",
    "Soylent",
    "Massive",
    "Oscorp",
    "Wonka",
    "Gringotts",
    "Monarch",
    "Aperture",
    "Black Mesa",
    "Pied Piper",
    "Dunder",
    "Sterling",
    "Bluth",
    "Nakatomi",
    "Zorg",
)
_NAME_SUFFIXES = ("Corp", "Industries", "Labs", "Systems", "Group", "Logistics", "Health", "Media")
_COMMENTS = {
    "promoter": ("Reports save us hours every week.", "Great support team."),
    "passive": ("Does the job.", "Exports could be faster."),
    "detractor": ("Hard to get the team to use it.", "Too expensive for what we use."),
}


@dataclass(frozen=True)
class FleetSpec:
    """What fleet to build: size, seed, and the day contract dates are laid out around."""

    accounts: int = 36
    seed: int = 7
    as_of: date = date(2026, 11, 23)
    seats: int = 1
    """Users per account, as a multiple of the segment's usual team: a fleet of bigger
    customers (benchmarks: work per event against work per account and day)."""

    def __post_init__(self) -> None:
        if self.accounts < 0:
            raise ValueError(f"FleetSpec.accounts must be >= 0, got {self.accounts}")
        if self.seats < 1:
            raise ValueError(f"FleetSpec.seats must be >= 1, got {self.seats}")


@dataclass(frozen=True)
class SimUser:
    user_id: str
    role: str


@dataclass(frozen=True)
class SimAccount:
    """One demo account: its contract record plus the behaviour that drives its events."""

    account_id: str
    name: str
    licenses: int
    segment: str
    arr: int
    timezone: str
    owner_email: str
    slack_channel: str
    contract_start: date
    renewal_date: date
    status: str
    behaviour: str
    users: tuple[SimUser, ...]

    def record(self) -> dict[str, object]:
        """The account record as published on the accounts topic (JSON-ready)."""
        return {
            "account_id": self.account_id,
            "name": self.name,
            "licenses": self.licenses,
            "owner_email": self.owner_email,
            "slack_channel": self.slack_channel,
            "segment": self.segment,
            "arr": self.arr,
            "timezone": self.timezone,
            "contract_start": self.contract_start.isoformat(),
            "renewal_date": self.renewal_date.isoformat(),
            "status": self.status,
        }


# --- the fleet ---------------------------------------------------------------------


def build_fleet(spec: FleetSpec) -> tuple[SimAccount, ...]:
    """Build ``spec.accounts`` accounts; the same spec always gives the same fleet."""
    rng = random.Random(spec.seed)
    behaviours = _assign_behaviours(spec.accounts, rng)
    names = _pick_names(spec.accounts, rng)
    return tuple(
        _build_account(index, name, behaviour, spec.as_of, rng, seats=spec.seats)
        for index, (name, behaviour) in enumerate(zip(names, behaviours, strict=True), 1)
    )


def _assign_behaviours(count: int, rng: random.Random) -> list[str]:
    """A third of the fleet has a problem (round-robin over them); the rest is healthy."""
    chosen = [_PROBLEMS[i % len(_PROBLEMS)] for i in range(count // 3)]
    rest = count - len(chosen)
    weekday_only = rest * 2 // 5
    chosen += ["weekday_only"] * weekday_only + ["healthy"] * (rest - weekday_only)
    rng.shuffle(chosen)
    return chosen


def _pick_names(count: int, rng: random.Random) -> list[str]:
    words, suffixes = list(_NAME_WORDS), list(_NAME_SUFFIXES)
    rng.shuffle(words)
    rng.shuffle(suffixes)
    # One suffix step further per lap over the words: unique for len(words) * len(suffixes).
    return [
        f"{words[i % len(words)]} {suffixes[(i + i // len(words)) % len(suffixes)]}"
        for i in range(count)
    ]


def _build_account(
    index: int, name: str, behaviour: str, as_of: date, rng: random.Random, *, seats: int = 1
) -> SimAccount:
    segment = rng.choices(list(_SEGMENTS), weights=_SEGMENT_WEIGHTS)[0]
    (min_users, max_users), (min_arr, max_arr) = _SEGMENTS[segment]
    users = _build_users(index, rng.randint(min_users, max_users) * seats, segment, rng)
    spare = 0 if rng.random() < 0.6 else rng.randint(1, max(1, len(users) // 2))
    contract_start, renewal = _contract_dates(behaviour, as_of, rng)
    slug = name.lower().replace(" ", "-")
    return SimAccount(
        account_id=f"acct-{index:03d}-{slug}",
        name=name,
        licenses=len(users) + spare,
        segment=segment,
        arr=rng.randint(min_arr // 1000, max_arr // 1000) * 1000,
        timezone=rng.choice(TIMEZONES),
        owner_email=f"{rng.choice(_CSMS)}@example.com",
        slack_channel=f"#{slug}-success",
        contract_start=contract_start,
        renewal_date=renewal,
        status="onboarding" if behaviour == "onboarding" else "active",
        behaviour=behaviour,
        users=users,
    )


def _build_users(index: int, count: int, segment: str, rng: random.Random) -> tuple[SimUser, ...]:
    """At least one champion (two in enterprise), usually an admin and an executive."""
    roles = ["champion"] * (2 if segment == "enterprise" else 1)
    if rng.random() < 0.85:
        roles.append("admin")
    if rng.random() < 0.8:
        roles.append("executive")
    roles += ["user"] * (count - len(roles))
    return tuple(SimUser(f"u-{index:03d}-{n:02d}", role) for n, role in enumerate(roles, 1))


def _contract_dates(behaviour: str, as_of: date, rng: random.Random) -> tuple[date, date]:
    if behaviour == "onboarding":
        start = as_of - timedelta(days=ONBOARDING_DAYS + rng.randint(0, 3))
    else:
        start = as_of - timedelta(days=rng.randint(90, 1000))
    years = 1
    while _add_years(start, years) <= as_of:
        years += 1
    return start, _add_years(start, years)


def _add_years(day: date, years: int) -> date:
    try:
        return day.replace(year=day.year + years)
    except ValueError:  # 29 February in a non-leap year
        return day.replace(year=day.year + years, day=28)


# --- the events --------------------------------------------------------------------


@dataclass(frozen=True)
class _Window:
    start: datetime
    end: datetime

    def at(self, share: float) -> datetime:
        return self.start + (self.end - self.start) * share

    def progress(self, moment: datetime) -> float:
        """How far into the window ``moment`` is, clamped to 0..1."""
        span = (self.end - self.start).total_seconds() or 1.0
        return min(1.0, max(0.0, (moment - self.start).total_seconds() / span))


@dataclass(frozen=True)
class _UserPlan:
    """A user's daily login probability and the span in which they act at all."""

    user: SimUser
    login_p: float
    active_from: datetime
    active_until: datetime


@dataclass(frozen=True)
class _Draft:
    at: datetime
    type: str
    user: SimUser | None
    properties: dict[str, object]


@dataclass
class _AccountState:
    """What carries over from one day to the next within an account."""

    licenses: int
    milestone_day: date
    milestone_done: bool = False


@dataclass(frozen=True)
class _AccountRun:
    """Everything a day of one account is generated from, bar the day itself."""

    account: SimAccount
    plans: tuple[_UserPlan, ...]
    state: _AccountState
    tz: ZoneInfo
    window: _Window


_Stamped = tuple[str, str, dict[str, object]]  # (occurred_at, event_id, event)


def generate_events(
    fleet: Sequence[SimAccount], start: datetime, end: datetime, *, seed: int = 7
) -> Iterator[dict[str, object]]:
    """Yield the fleet's usage events in [start, end), ordered by ``occurred_at``.

    Each account is generated lazily, one local day at a time, and the accounts are
    merged, so memory stays at about a day per account however long the window.
    """
    window = _window(start, end)
    streams = [_account_events(account, window, seed) for account in fleet]
    for _, _, event in heapq.merge(*streams, key=_merge_key):
        yield event


def _merge_key(item: _Stamped) -> tuple[str, str]:
    return item[0], item[1]


def _window(start: datetime, end: datetime) -> _Window:
    if start.utcoffset() is None or end.utcoffset() is None:
        raise ValueError("start and end must be timezone-aware (e.g. tzinfo=datetime.UTC)")
    if end < start:
        raise ValueError(f"end ({end.isoformat()}) is before start ({start.isoformat()})")
    return _Window(start.astimezone(UTC), end.astimezone(UTC))


def _account_events(account: SimAccount, window: _Window, seed: int) -> Iterator[_Stamped]:
    tz = ZoneInfo(account.timezone)
    plans = tuple(_plan_user(account.behaviour, user, window, seed) for user in account.users)
    first_day = min(plan.active_from for plan in plans).astimezone(tz).date()
    # Time to value varies: the milestone lands a few days after the first activity.
    delay = random.Random(f"{seed}|{account.account_id}|milestone").randint(0, 4)
    state = _AccountState(account.licenses, first_day + timedelta(days=delay))
    run = _AccountRun(account, plans, state, tz, window)
    for day in _local_days(window, tz):
        # One generator per account and day: a day's events do not depend on other accounts.
        rng = random.Random(f"{seed}|{account.account_id}|{day.isoformat()}")
        drafts = _day_drafts(run, day, rng)
        for n, draft in enumerate(drafts, 1):
            event_id = f"{account.account_id}-{day:%Y%m%d}-{n:04d}"
            event = _to_event(account.account_id, event_id, draft)
            yield str(event["occurred_at"]), event_id, event


def _plan_user(behaviour: str, user: SimUser, window: _Window, seed: int) -> _UserPlan:
    low, high = _PROPENSITY.get(user.role, _PROPENSITY["user"])
    login_p = random.Random(f"{seed}|{user.user_id}").uniform(low, high)
    active_from, active_until = window.start, window.end
    if behaviour == "going_quiet":
        active_until = window.at(QUIET_AT)
    elif behaviour == "champion_leaving" and user.role == "champion":
        active_until = window.at(CHAMPION_LEAVES_AT)
    elif behaviour == "onboarding":
        active_from = max(window.start, window.end - timedelta(days=ONBOARDING_DAYS))
    return _UserPlan(user, login_p, active_from, active_until)


def _local_days(window: _Window, tz: ZoneInfo) -> Iterator[date]:
    day = window.start.astimezone(tz).date()
    last = (window.end - timedelta(microseconds=1)).astimezone(tz).date()
    while day <= last:
        yield day
        day += timedelta(days=1)


def _day_drafts(run: _AccountRun, day: date, rng: random.Random) -> list[_Draft]:
    """One local day of an account: a session per user who logs in, time-ordered."""
    account, state = run.account, run.state
    weekend = day.weekday() >= 5
    progress = run.window.progress(datetime.combine(day, time(12), tzinfo=run.tz))
    factor = _day_factor(account.behaviour, weekend, progress)
    sessions: list[list[_Draft]] = []
    for plan in run.plans:
        if rng.random() >= plan.login_p * factor:
            continue
        milestone = not state.milestone_done and day >= state.milestone_day
        login = _login_time(day, run.tz, weekend, rng)
        session = _session(
            plan.user,
            login,
            behaviour=account.behaviour,
            progress=progress,
            milestone=milestone,
            rng=rng,
        )
        if plan.active_from <= session[0].at and session[-1].at < plan.active_until:
            sessions.append(session)
            state.milestone_done = state.milestone_done or milestone
    drafts = [draft for session in sessions for draft in session]
    if sessions and rng.random() < LICENSE_CHANGE_PER_DAY:
        drafts.append(_license_change(account, state, rng.choice(sessions)[0].at, rng))
    # Stable sort: a session keeps its own order. Every user's active span lies inside
    # the window, so accepted sessions need no further clipping.
    drafts.sort(key=lambda draft: draft.at)
    return drafts


def _day_factor(behaviour: str, weekend: bool, progress: float) -> float:
    """Scale a user's login probability for the day's kind and the account's trend."""
    factor = 1.0
    if weekend:
        factor = 0.0 if behaviour == "weekday_only" else WEEKEND_FACTOR
    if behaviour == "slow_decline":
        factor *= 1.0 - (1.0 - DECLINE_FLOOR) * progress
    return factor


def _login_time(day: date, tz: ZoneInfo, weekend: bool, rng: random.Random) -> datetime:
    """A local working-hours login (a shorter, later window at weekends), in UTC."""
    if weekend:
        minutes = rng.randint(10 * 60, 16 * 60)
    else:
        minutes = int(rng.triangular(7.5 * 60, 17.5 * 60, 10 * 60))
    # Aware arithmetic with one tzinfo is wall-clock arithmetic: 10:00 local on DST days too.
    local = datetime.combine(day, time(), tzinfo=tz)
    local += timedelta(minutes=minutes, seconds=rng.randint(0, 59))
    return local.astimezone(UTC)


def _session(
    user: SimUser,
    login: datetime,
    *,
    behaviour: str,
    progress: float,
    milestone: bool,
    rng: random.Random,
) -> list[_Draft]:
    """login, a few feature_used (and the milestone if due), session_end, maybe an NPS."""
    pace = 1.0 - 0.6 * progress if behaviour == "slow_decline" else 1.0  # shorter sessions
    features = rng.choices(FEATURES, weights=_FEATURE_WEIGHTS, k=rng.randint(1, 4))
    if milestone:
        features[0] = "reports"
    drafts = [_Draft(login, "login", user, {})]
    moment = login
    for n, feature in enumerate(features):
        moment += timedelta(seconds=max(1, int(rng.randint(20, 600) * pace)))
        drafts.append(_Draft(moment, "feature_used", user, {"feature": feature}))
        if milestone and n == 0:
            drafts.append(_Draft(moment, "value_milestone", user, {"milestone": MILESTONE}))
    moment += timedelta(seconds=max(1, int(rng.randint(30, 900) * pace)))
    duration_s = int((moment - login).total_seconds())
    drafts.append(_Draft(moment, "session_end", user, {"duration_s": duration_s}))
    if rng.random() < NPS_PER_SESSION:
        moment += timedelta(seconds=rng.randint(5, 600))
        drafts.append(_Draft(moment, "nps_response", user, _nps(behaviour, rng)))
    return drafts


def _nps(behaviour: str, rng: random.Random) -> dict[str, object]:
    """An NPS answer; declining accounts are mostly detractors, healthy ones promoters."""
    weights = (7, 2, 1) if behaviour in _UNHAPPY else (1, 3, 6)
    kind = rng.choices(("detractor", "passive", "promoter"), weights=weights)[0]
    low, high = {"detractor": (0, 6), "passive": (7, 8), "promoter": (9, 10)}[kind]
    answer: dict[str, object] = {"score": rng.randint(low, high)}
    if rng.random() < 0.35:
        answer["comment"] = rng.choice(_COMMENTS[kind])
    return answer


def _license_change(
    account: SimAccount, state: _AccountState, at: datetime, rng: random.Random
) -> _Draft:
    """Seats bought, or dropped by accounts that are cooling off; never below zero."""
    step = rng.choice((5, 10)) if account.behaviour not in _UNHAPPY else -rng.choice((2, 5))
    state.licenses = max(0, state.licenses + step)
    return _Draft(at, "license_change", None, {"licenses": state.licenses})


def _to_event(account_id: str, event_id: str, draft: _Draft) -> dict[str, object]:
    event: dict[str, object] = {
        "schema": 1,
        "event_id": event_id,
        "type": draft.type,
        "account_id": account_id,
    }
    if draft.user is not None:
        event["user_id"] = draft.user.user_id
        event["role"] = draft.user.role
    event["occurred_at"] = draft.at.strftime("%Y-%m-%dT%H:%M:%SZ")
    event["properties"] = dict(draft.properties)
    return event
