"""Golden values of every adoption metric on one small, hand-built account.

The account lives in America/New_York (EST, UTC-5, in mid-November; EDT, UTC-4, on
15 October and at midnight on 1 November), so local-day bucketing matters: three of
the admin's events happen after midnight UTC but on the evening of 17 November local
time, and u-2's last login happens on 21 November UTC but on 20 November locally.

Every expected number below is worked out by hand in the comments, from this table.

=====  =====================  ===========  =========  ==============================
id     occurred_at (UTC)      local day    user       what
=====  =====================  ===========  =========  ==============================
e00a   2026-10-15 13:00       Thu 10-15    u-champ    login
e00b   2026-10-15 13:30       Thu 10-15    u-champ    nps 3 (detractor)
e01    2026-11-16 14:00       Mon 11-16    u-champ    login
e02    2026-11-16 14:10       Mon 11-16    u-champ    feature reports
e03    2026-11-16 15:00       Mon 11-16    u-champ    session 1200 s
e04    2026-11-16 16:00       Mon 11-16    u-1        login
e05    2026-11-16 16:30       Mon 11-16    u-1        session 600 s
e12    2026-11-17 12:00       Tue 11-17    (none)     license_change -> 20
e06    2026-11-17 13:00       Tue 11-17    u-champ    login (delivered twice)
e07    2026-11-17 13:30       Tue 11-17    u-2        login
e08    2026-11-17 13:40       Tue 11-17    u-2        feature reports
e09    2026-11-17 13:45       Tue 11-17    u-2        feature export
e10    2026-11-17 14:00       Tue 11-17    u-2        session 900 s
e11    2026-11-17 15:00       Tue 11-17    u-champ    value_milestone
e13    2026-11-18 03:30       Tue 11-17    u-admin    login
e14    2026-11-18 04:00       Tue 11-17    u-admin    session 300 s
e15    2026-11-18 04:30       Tue 11-17    u-admin    nps 6 (detractor)
e16    2026-11-19 15:00       Thu 11-19    u-exec     login
e17    2026-11-19 15:05       Thu 11-19    u-exec     nps 10 (promoter)
e18    2026-11-19 16:00       Thu 11-19    u-1        nps 8 (passive)
e19    2026-11-19 16:10       Thu 11-19    u-1        feature reports
e20    2026-11-20 14:00       Fri 11-20    u-champ    login
e21    2026-11-20 18:00       Fri 11-20    u-champ    login
e22    2026-11-20 18:30       Fri 11-20    u-champ    session 1500 s
e23    2026-11-20 19:00       Fri 11-20    u-champ    nps 9 (promoter)
e24    2026-11-21 02:00       Fri 11-20    u-2        login
=====  =====================  ===========  =========  ==============================

Wednesday 18 November (local) has no events at all.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from stream import codec, metrics
from stream.accounts import Account
from stream.engagement import EngagementState, FoldOutcome, fold_events
from stream.events import EventType, UsageEvent
from stream.metrics import NpsSummary, PortfolioAdoption, Trend, WeekdayHabit
from stream.snapshot import account_snapshot

ZONE = "America/New_York"
ROLES = {
    "u-champ": "champion",
    "u-admin": "admin",
    "u-exec": "executive",
    "u-1": "user",
    "u-2": "user",
}
STAKEHOLDER_ROLES = ("champion", "admin", "executive")
ACCOUNT = Account(
    "acme",
    "Acme Corp",
    10,
    owner_email="csm@example.com",
    arr=120_000.0,
    timezone=ZONE,
    contract_start=date(2026, 11, 1),
    renewal_date=date(2027, 11, 1),
)

OCT15 = date(2026, 10, 15)
NOV16, NOV17, NOV18 = date(2026, 11, 16), date(2026, 11, 17), date(2026, 11, 18)
NOV19, NOV20 = date(2026, 11, 19), date(2026, 11, 20)
FIVE_DAYS = [NOV16, NOV17, NOV18, NOV19, NOV20]


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def event(event_id: str, kind: EventType, user_id: str | None, at: str, **props: Any) -> UsageEvent:
    role = ROLES[user_id] if user_id is not None else "user"
    return UsageEvent(event_id, kind, "acme", user_id, role, utc(at), props)


LOGIN, SESSION, FEATURE = EventType.LOGIN, EventType.SESSION_END, EventType.FEATURE_USED
NPS, VALUE, LICENSES = EventType.NPS_RESPONSE, EventType.VALUE_MILESTONE, EventType.LICENSE_CHANGE

OCTOBER = [
    event("e00a", LOGIN, "u-champ", "2026-10-15 13:00"),
    event("e00b", NPS, "u-champ", "2026-10-15 13:30", score=3),
]
NOVEMBER = [
    event("e01", LOGIN, "u-champ", "2026-11-16 14:00"),
    event("e02", FEATURE, "u-champ", "2026-11-16 14:10", feature="reports"),
    event("e03", SESSION, "u-champ", "2026-11-16 15:00", duration_s=1200),
    event("e04", LOGIN, "u-1", "2026-11-16 16:00"),
    event("e05", SESSION, "u-1", "2026-11-16 16:30", duration_s=600),
    event("e12", LICENSES, None, "2026-11-17 12:00", licenses=20),
    event("e06", LOGIN, "u-champ", "2026-11-17 13:00"),
    event("e07", LOGIN, "u-2", "2026-11-17 13:30"),
    event("e08", FEATURE, "u-2", "2026-11-17 13:40", feature="reports"),
    event("e09", FEATURE, "u-2", "2026-11-17 13:45", feature="export"),
    event("e10", SESSION, "u-2", "2026-11-17 14:00", duration_s=900),
    event("e11", VALUE, "u-champ", "2026-11-17 15:00", milestone="first_dashboard"),
    event("e13", LOGIN, "u-admin", "2026-11-18 03:30"),
    event("e14", SESSION, "u-admin", "2026-11-18 04:00", duration_s=300),
    event("e15", NPS, "u-admin", "2026-11-18 04:30", score=6),
    event("e16", LOGIN, "u-exec", "2026-11-19 15:00"),
    event("e17", NPS, "u-exec", "2026-11-19 15:05", score=10),
    event("e18", NPS, "u-1", "2026-11-19 16:00", score=8),
    event("e19", FEATURE, "u-1", "2026-11-19 16:10", feature="reports"),
    event("e20", LOGIN, "u-champ", "2026-11-20 14:00"),
    event("e21", LOGIN, "u-champ", "2026-11-20 18:00"),
    event("e22", SESSION, "u-champ", "2026-11-20 18:30", duration_s=1500),
    event("e23", NPS, "u-champ", "2026-11-20 19:00", score=9),
    event("e24", LOGIN, "u-2", "2026-11-21 02:00"),
]
REDELIVERED = event("e06", LOGIN, "u-champ", "2026-11-17 13:00")


@pytest.fixture(scope="module")
def acme() -> EngagementState:
    state = EngagementState("acme", timezone=ZONE)
    assert fold_events(state, OCTOBER) == FoldOutcome(counted=2)
    # e06 again, after e16: a duplicate (within the lateness, so still remembered)
    november = [*NOVEMBER[:16], REDELIVERED, *NOVEMBER[16:]]
    assert fold_events(state, november) == FoldOutcome(counted=24, duplicates=1)
    return state


def test_fixture_lands_in_local_days(acme: EngagementState) -> None:
    # 26 distinct events; the three after midnight UTC on the 18th belong to the 17th.
    assert acme.total_events == 26
    assert sorted(acme.days) == [
        "2026-10-15",
        "2026-11-16",
        "2026-11-17",
        "2026-11-19",
        "2026-11-20",
    ]
    # e06 e07 e08 e09 e10 e11 e12 e13 e14 e15
    assert acme.days["2026-11-17"].events == 10


# --- licenses and daily usage rate ----------------------------------------------------


def test_licenses_on_follows_license_changes_from_their_local_day(acme: EngagementState) -> None:
    # e12 (20 licenses) happened at 07:00 local on the 17th; before it the account's 10.
    assert metrics.licenses_on(acme, ACCOUNT, NOV16) == 10
    assert metrics.licenses_on(acme, ACCOUNT, NOV17) == 20
    assert metrics.licenses_on(acme, ACCOUNT, NOV20) == 20
    assert metrics.licenses_on(acme, None, NOV16) is None
    assert metrics.licenses_on(acme, None, NOV18) == 20


@pytest.mark.parametrize(
    ("day", "expected"),
    [
        # login users {u-champ, u-1} / 10 licenses
        pytest.param(NOV16, 0.2, id="11-16"),
        # {u-champ, u-2, u-admin (22:30 local)} / 20 (e12 counts from the 17th on)
        pytest.param(NOV17, 0.15, id="11-17"),
        # nobody: u-admin's 03:30 UTC login is the evening before, locally
        pytest.param(NOV18, 0.0, id="11-18"),
        # {u-exec} / 20; u-1 answered NPS but did not log in
        pytest.param(NOV19, 0.05, id="11-19"),
        # {u-champ (twice), u-2 (21:00 local)} / 20
        pytest.param(NOV20, 0.1, id="11-20"),
    ],
)
def test_daily_usage_rate(acme: EngagementState, day: date, expected: float) -> None:
    licenses = metrics.licenses_on(acme, ACCOUNT, day)
    assert metrics.daily_usage_rate(acme, day, licenses) == pytest.approx(expected)


def test_daily_usage_rate_without_licenses_is_none(acme: EngagementState) -> None:
    assert metrics.daily_usage_rate(acme, NOV16, None) is None
    assert metrics.daily_usage_rate(acme, NOV16, 0) is None


# --- time per login, feature adoption, active days -----------------------------------


def test_average_time_per_login(acme: EngagementState) -> None:
    # sessions 1200 + 600 + 900 + 300 + 1500 = 4500 s; logins 2 + 3 + 0 + 1 + 3 = 9
    assert metrics.average_time_per_login(acme, FIVE_DAYS) == pytest.approx(500.0)
    # the 17th: (900 + 300) s / 3 logins (e06 once, e07, e13)
    assert metrics.average_time_per_login(acme, [NOV17]) == pytest.approx(400.0)
    assert metrics.average_time_per_login(acme, [NOV18]) is None


def test_feature_adoption_rate(acme: EngagementState) -> None:
    # reports: {u-champ, u-2, u-1}; active: {u-champ, u-1, u-2, u-admin, u-exec}
    assert metrics.feature_adoption_rate(acme, "reports", FIVE_DAYS) == pytest.approx(0.6)
    # export: {u-2} / 5
    assert metrics.feature_adoption_rate(acme, "export", FIVE_DAYS) == pytest.approx(0.2)
    # the 17th: reports {u-2} / active {u-champ, u-2, u-admin}
    assert metrics.feature_adoption_rate(acme, "reports", [NOV17]) == pytest.approx(1 / 3)
    assert metrics.feature_adoption_rate(acme, "never-used", FIVE_DAYS) == 0.0
    assert metrics.feature_adoption_rate(acme, "reports", [NOV18]) is None


def test_active_days(acme: EngagementState) -> None:
    # 28 days 10-24..11-20: logins on 11-16, 11-17, 11-19, 11-20
    assert metrics.active_days(acme, NOV20) == 4
    # 42 days 10-10..11-20 also hold 10-15
    assert metrics.active_days(acme, NOV20, 42) == 5
    # 11-17..11-18: only the 17th
    assert metrics.active_days(acme, NOV18, 2) == 1
    assert metrics.active_days(acme, date(2026, 11, 15), 28) == 0


# --- trend ----------------------------------------------------------------------------


def test_trend_of_a_hand_series() -> None:
    # recent [8] vs baseline mean of [2, 4, 6] = 4: +100 %
    assert metrics.trend([2.0, 4.0, 6.0, 8.0], recent_days=1, baseline_days=3) == Trend(
        8.0, 4.0, 1.0
    )
    # only the last 1 + 2 values count: recent 3 vs (1 + 5) / 2 = 3 -> no change
    assert metrics.trend([100.0, 1.0, 5.0, 3.0], 1, 2) == Trend(3.0, 3.0, 0.0)
    # a fall: recent 1 vs baseline 4 -> -75 %
    assert metrics.trend([4.0, 4.0, 1.0], 1, 2).change == pytest.approx(-0.75)


def test_trend_needs_enough_values() -> None:
    with pytest.raises(ValueError, match="need 35 values, got 34"):
        metrics.trend([1.0] * 34)


def test_trend_of_the_account(acme: EngagementState) -> None:
    # login users 11-14..11-20: [0, 0, 2, 3, 0, 1, 2]
    series = metrics.daily_series(acme, "login_users", NOV20, 7)
    assert series == [0.0, 0.0, 2.0, 3.0, 0.0, 1.0, 2.0]
    # recent (1 + 2) / 2 = 1.5 vs baseline (0 + 0 + 2 + 3 + 0) / 5 = 1.0 -> +50 %
    result = metrics.trend(series, recent_days=2, baseline_days=5)
    assert result.recent == pytest.approx(1.5)
    assert result.baseline == pytest.approx(1.0)
    assert result.change == pytest.approx(0.5)

    # Default 7 vs 28: nothing in 10-17..11-13, so the baseline is 0 and change None.
    # active users 11-14..11-20: [0, 0, 2, 3, 0, 2, 2] (u-1 is active on the 19th)
    long = metrics.trend(metrics.daily_series(acme, "active_users", NOV20, 35))
    assert long.recent == pytest.approx(9 / 7)
    assert long.baseline == 0.0
    assert long.change is None


def test_daily_series_other_metrics(acme: EngagementState) -> None:
    assert metrics.daily_series(acme, "logins", NOV20, 5) == [2.0, 3.0, 0.0, 1.0, 3.0]
    assert metrics.daily_series(acme, "sessions", NOV20, 5) == [2.0, 2.0, 0.0, 0.0, 1.0]
    assert metrics.daily_series(acme, "session_s", NOV20, 5) == [1800.0, 1200.0, 0.0, 0.0, 1500.0]
    assert metrics.daily_series(acme, "events", NOV20, 5) == [5.0, 10.0, 0.0, 4.0, 5.0]
    # a fixed denominator of 10 licenses
    usage = metrics.daily_series(acme, "usage_rate", NOV20, 5, licenses=10)
    assert usage == pytest.approx([0.2, 0.3, 0.0, 0.1, 0.2])


# --- stakeholders and habit -----------------------------------------------------------


def test_stakeholder_last_seen(acme: EngagementState) -> None:
    seen = metrics.stakeholder_last_seen(acme, STAKEHOLDER_ROLES)
    assert list(seen) == ["u-admin", "u-champ", "u-exec"]
    assert seen == {
        "u-admin": utc("2026-11-18 04:30"),  # e15
        "u-champ": utc("2026-11-20 19:00"),  # e23
        "u-exec": utc("2026-11-19 15:05"),  # e17
    }
    assert metrics.stakeholder_last_seen(acme, ["user"]) == {
        "u-1": utc("2026-11-19 16:10"),  # e19
        "u-2": utc("2026-11-21 02:00"),  # e24
    }
    assert metrics.stakeholder_last_seen(acme, ["owner"]) == {}


def test_stakeholder_active_days(acme: EngagementState) -> None:
    # u-champ: 11-16, 11-17, 11-20 (10-15 is outside 28 days, inside 42)
    assert metrics.stakeholder_active_days(acme, "u-champ", NOV20) == 3
    assert metrics.stakeholder_active_days(acme, "u-champ", NOV20, 42) == 4
    # u-admin: only the 17th, local time
    assert metrics.stakeholder_active_days(acme, "u-admin", NOV20) == 1
    assert metrics.stakeholder_active_days(acme, "u-admin", NOV18, 1) == 0
    # u-1: 11-16 (login) and 11-19 (NPS, feature): any activity counts
    assert metrics.stakeholder_active_days(acme, "u-1", NOV20) == 2
    assert metrics.stakeholder_active_days(acme, "nobody", NOV20) == 0


def test_weekday_profile_of_one_week(acme: EngagementState) -> None:
    # 11-14 (Sat) .. 11-20 (Fri): each weekday once; active Mon, Tue, Thu, Fri.
    assert metrics.weekday_profile(acme, NOV20, days=7) == [
        WeekdayHabit(0, 1, 1, 1.0),
        WeekdayHabit(1, 1, 1, 1.0),
        WeekdayHabit(2, 1, 0, 0.0),
        WeekdayHabit(3, 1, 1, 1.0),
        WeekdayHabit(4, 1, 1, 1.0),
        WeekdayHabit(5, 1, 0, 0.0),
        WeekdayHabit(6, 1, 0, 0.0),
    ]


def test_weekday_profile_counts_only_days_since_first_seen(acme: EngagementState) -> None:
    # 42 days from 10-10, but first seen Thu 10-15: 10-15..11-20 is 37 days, so
    # Thursdays (10-15 .. 11-19) and Fridays (10-16 .. 11-20) 6 each, the rest 5.
    # Active: Mon 11-16, Tue 11-17, Thu 10-15 and 11-19, Fri 11-20.
    profile = metrics.weekday_profile(acme, NOV20)
    assert [(h.weekday, h.observed, h.active) for h in profile] == [
        (0, 5, 1),
        (1, 5, 1),
        (2, 5, 0),
        (3, 6, 2),
        (4, 6, 1),
        (5, 5, 0),
        (6, 5, 0),
    ]
    assert [h.rate for h in profile] == pytest.approx([0.2, 0.2, 0.0, 1 / 3, 1 / 6, 0.0, 0.0])


def test_weekday_profile_of_an_empty_state() -> None:
    # Never seen: only the end day itself counts as observed (a Friday).
    profile = metrics.weekday_profile(EngagementState("new", timezone=ZONE), NOV20)
    assert [(h.observed, h.active, h.rate) for h in profile] == [(0, 0, None)] * 4 + [
        (1, 0, 0.0)
    ] + [(0, 0, None)] * 2


# --- NPS ------------------------------------------------------------------------------


def test_nps_lifetime(acme: EngagementState) -> None:
    # promoters 10 (e17), 9 (e23); passive 8 (e18); detractors 3 (e00b), 6 (e15)
    lifetime = metrics.nps(acme)
    assert lifetime == NpsSummary(promoters=2, passives=1, detractors=2)
    assert lifetime.responses == 5
    assert lifetime.score == pytest.approx(0.0)  # 100 * (2 - 2) / 5


def test_nps_windows(acme: EngagementState) -> None:
    # 28 days to 11-20 leave out 10-15: 100 * (2 - 1) / 4 = 25
    month = metrics.nps(acme, metrics.window(NOV20, 28))
    assert month == NpsSummary(2, 1, 1)
    assert month.score == pytest.approx(25.0)
    # 11-19..11-20: 10, 8, 9 -> 100 * 2 / 3
    assert metrics.nps(acme, [NOV19, NOV20]).score == pytest.approx(200 / 3)
    # u-admin's 6 is on the 17th locally, not the 18th
    assert metrics.nps(acme, [NOV17]) == NpsSummary(0, 0, 1)
    assert metrics.nps(acme, [NOV17]).score == pytest.approx(-100.0)
    assert metrics.nps(acme, [NOV18]) == NpsSummary(0, 0, 0)
    assert metrics.nps(acme, [NOV18]).score is None


@pytest.mark.parametrize(
    ("score", "expected"),
    [
        (0, (0, 0, 1)),
        (6, (0, 0, 1)),
        (7, (0, 1, 0)),
        (8, (0, 1, 0)),
        (9, (1, 0, 0)),
        (10, (1, 0, 0)),
    ],
)
def test_nps_category_boundaries(score: int, expected: tuple[int, int, int]) -> None:
    state = EngagementState("acme")
    fold_events(state, [event("n", NPS, "u-1", "2026-11-20 12:00", score=score)])
    assert metrics.nps(state) == NpsSummary(*expected)
    assert metrics.nps(state, [NOV20]) == NpsSummary(*expected)


# --- time to first action / value -----------------------------------------------------


def test_time_to_first_action(acme: EngagementState) -> None:
    # first login e00a 10-15 13:00 UTC -> first feature e02 11-16 14:10 UTC
    # = 31 days to 11-15 13:00, + 1 day 1 h 10 min
    assert metrics.time_to_first_action(acme) == timedelta(days=32, hours=1, minutes=10)
    assert metrics.time_to_first_action(EngagementState("new")) is None


def test_time_to_value_starts_at_local_midnight_of_contract_start(
    acme: EngagementState,
) -> None:
    # contract_start 11-01 00:00 in New York is still EDT: 04:00 UTC. First value
    # (e11) 11-17 15:00 UTC: 16 days and 11 hours later.
    assert metrics.time_to_value(acme, ACCOUNT) == timedelta(days=16, hours=11)
    assert metrics.time_to_value(acme, None) is None
    no_start = Account("acme", "Acme Corp", 10, timezone=ZONE)
    assert metrics.time_to_value(acme, no_start) is None
    assert metrics.time_to_value(EngagementState("new", timezone=ZONE), ACCOUNT) is None


# --- adoption -------------------------------------------------------------------------


def test_account_adopted(acme: EngagementState) -> None:
    # reports in 28 days to 11-20: users {u-champ, u-2, u-1} on 11-16, 11-17, 11-19
    assert metrics.account_adopted(acme, "reports", NOV20, days=28, min_users=3, min_days=3)
    assert not metrics.account_adopted(acme, "reports", NOV20, days=28, min_users=4, min_days=1)
    assert not metrics.account_adopted(acme, "reports", NOV20, days=28, min_users=1, min_days=4)
    # 11-19..11-20 hold only u-1's use on the 19th
    assert metrics.account_adopted(acme, "reports", NOV20, days=2, min_users=1, min_days=1)
    assert not metrics.account_adopted(acme, "reports", NOV20, days=1, min_users=1, min_days=1)
    # export: u-2 once
    assert metrics.account_adopted(acme, "export", NOV20, days=28, min_users=1, min_days=1)
    assert not metrics.account_adopted(acme, "export", NOV20, days=28, min_users=2, min_days=1)


def one_feature_account(account_id: str, uses: list[tuple[str, str]]) -> EngagementState:
    """An account in UTC whose only events are ``reports`` uses as (user, time)."""
    state = EngagementState(account_id)
    fold_events(
        state,
        [
            UsageEvent(
                f"{account_id}-{n}",
                FEATURE,
                account_id,
                user,
                "user",
                utc(at),
                {"feature": "reports"},
            )
            for n, (user, at) in enumerate(uses)
        ],
    )
    return state


@pytest.fixture(scope="module")
def portfolio(acme: EngagementState) -> list[tuple[EngagementState, date]]:
    globex = one_feature_account("globex", [("g-1", "2026-11-10 12:00")])
    initech = one_feature_account("initech", [])
    # Judged at its own day: on 12-20 its uses (11-01, 11-02) are outside 28 days.
    hooli = one_feature_account("hooli", [("h-1", "2026-11-01 12:00"), ("h-2", "2026-11-02 12:00")])
    umbrella = one_feature_account(
        "umbrella", [("x-1", "2026-11-18 09:00"), ("x-2", "2026-11-19 09:00")]
    )
    return [
        (acme, NOV20),
        (globex, NOV20),
        (initech, NOV20),
        (hooli, date(2026, 12, 20)),
        (umbrella, NOV20),
    ]


def test_customer_adoption_rate(portfolio: list[tuple[EngagementState, date]]) -> None:
    # >= 1 user on >= 1 day: acme, globex, umbrella (hooli's uses are too old)
    loose = metrics.customer_adoption_rate(portfolio, "reports")
    assert loose == PortfolioAdoption(adopted=3, accounts=5)
    assert loose.rate == pytest.approx(0.6)
    # >= 2 users on >= 2 days: acme (3 users, 3 days) and umbrella (2, 2)
    strict = metrics.customer_adoption_rate(portfolio, "reports", min_users=2, min_days=2)
    assert strict == PortfolioAdoption(2, 5)
    # a 7-day window to 11-20 (11-14..11-20) loses globex's 11-10
    assert metrics.customer_adoption_rate(portfolio, "reports", days=7) == PortfolioAdoption(2, 5)
    assert metrics.customer_adoption_rate(portfolio, "export") == PortfolioAdoption(1, 5)


def test_customer_adoption_rate_of_nothing() -> None:
    empty = metrics.customer_adoption_rate([], "reports")
    assert empty == PortfolioAdoption(0, 0)
    assert empty.rate is None


@pytest.mark.parametrize("split", [0, 1, 2, 3, 4, 5])
def test_portfolio_partials_add_up_like_the_union(
    portfolio: list[tuple[EngagementState, date]], split: int
) -> None:
    whole = metrics.customer_adoption_rate(portfolio, "reports", min_users=2, min_days=2)
    first = metrics.customer_adoption_rate(portfolio[:split], "reports", min_users=2, min_days=2)
    rest = metrics.customer_adoption_rate(portfolio[split:], "reports", min_users=2, min_days=2)
    assert first + rest == whole == PortfolioAdoption(2, 5)


def test_portfolio_adoption_arithmetic() -> None:
    # The seed's example: 250 of 1,000 accounts adopted = 25 %.
    total = PortfolioAdoption(100, 400) + PortfolioAdoption(150, 600) + PortfolioAdoption()
    assert total == PortfolioAdoption(250, 1000)
    assert total.rate == pytest.approx(0.25)


# --- snapshot -------------------------------------------------------------------------

# 22:00 on Friday 11-20 in New York.
SNAPSHOT_NOW = utc("2026-11-21 03:00")


def test_account_snapshot_is_json_with_the_expected_values(acme: EngagementState) -> None:
    snapshot = account_snapshot(acme, ACCOUNT, SNAPSHOT_NOW, STAKEHOLDER_ROLES)
    back = codec.loads(codec.dumps(snapshot))
    assert back == snapshot
    assert set(snapshot) == {
        "account_id",
        "account",
        "as_of",
        "local_date",
        "timezone",
        "metrics",
        "daily",
        "stakeholders",
        "weekday_habit",
        "event_counts",
    }
    assert snapshot["account_id"] == "acme"
    assert snapshot["local_date"] == "2026-11-20"
    assert snapshot["timezone"] == ZONE
    assert snapshot["as_of"] == "2026-11-21T03:00:00+00:00"
    assert snapshot["account"]["contract_start"] == "2026-11-01"
    assert snapshot["event_counts"] == {
        "feature_used": 4,
        "license_change": 1,
        "login": 10,
        "nps_response": 5,
        "session_end": 5,
        "value_milestone": 1,
    }

    headline = snapshot["metrics"]
    assert headline["licenses"] == 20
    assert headline["daily_usage_rate"] == pytest.approx(0.1)
    assert headline["active_days_28d"] == 4
    assert headline["average_time_per_login_s_28d"] == pytest.approx(500.0)
    assert headline["feature_adoption_28d"] == pytest.approx({"export": 0.2, "reports": 0.6})
    assert headline["nps_28d"] == pytest.approx(25.0)
    assert headline["nps_lifetime"] == pytest.approx(0.0)
    assert headline["time_to_first_action_s"] == 32 * 86_400 + 4_200
    assert headline["time_to_value_s"] == 16 * 86_400 + 11 * 3_600
    assert headline["active_users_trend"] == {
        "recent_7d": pytest.approx(9 / 7),
        "baseline_28d": 0.0,
        "change": None,
    }

    daily = snapshot["daily"]
    assert len(daily) == 28
    assert daily[0]["date"] == "2026-10-24"
    by_date = {row["date"]: row for row in daily}
    assert by_date["2026-11-17"] == {
        "date": "2026-11-17",
        "events": 10,
        "logins": 3,
        "login_users": 3,
        "active_users": 3,
        "sessions": 2,
        "session_s": 1200.0,
        "usage_rate": pytest.approx(0.15),
    }
    assert by_date["2026-11-16"]["usage_rate"] == pytest.approx(0.2)  # 10 licenses then
    assert by_date["2026-11-18"]["events"] == 0

    assert snapshot["stakeholders"] == [
        {
            "user_id": "u-admin",
            "role": "admin",
            "last_seen": "2026-11-18T04:30:00+00:00",
            "active_days_28d": 1,
        },
        {
            "user_id": "u-champ",
            "role": "champion",
            "last_seen": "2026-11-20T19:00:00+00:00",
            "active_days_28d": 3,
        },
        {
            "user_id": "u-exec",
            "role": "executive",
            "last_seen": "2026-11-19T15:05:00+00:00",
            "active_days_28d": 1,
        },
    ]
    assert snapshot["weekday_habit"][3] == {
        "weekday": 3,
        "observed": 6,
        "active": 2,
        "rate": pytest.approx(1 / 3),
    }


def test_account_snapshot_without_state(acme: EngagementState) -> None:
    snapshot = account_snapshot(None, ACCOUNT, SNAPSHOT_NOW, STAKEHOLDER_ROLES)
    codec.dumps(snapshot)
    assert snapshot["account_id"] == "acme"
    assert snapshot["timezone"] == ZONE
    assert snapshot["local_date"] == "2026-11-20"
    assert snapshot["metrics"]["licenses"] == 10
    assert snapshot["metrics"]["daily_usage_rate"] == 0.0
    assert snapshot["metrics"]["nps_lifetime"] is None
    assert snapshot["metrics"]["time_to_value_s"] is None
    assert snapshot["stakeholders"] == []
    assert snapshot["event_counts"] == {}
