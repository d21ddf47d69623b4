"""The trend statistic of drop rules: a noise-aware fitted decline (alerts/decline.py).

Fixtures are whole histories of one account: a team whose time in the product falls
steadily, and the calm ones that must not look like it (weekends, short breaks, a week
off, a new account, a tiny account, a declared holiday).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from alerts.decline import declined, fit_trend, trend_points
from alerts.evaluate import Context, evaluate
from alerts.rules import Calendar, DropRule, load_rules
from config.yaml_source import ConfigError
from stream.accounts import Account
from stream.engagement import EngagementState, fold_events
from stream.events import EventType, UsageEvent

ZONE = "Europe/Berlin"
TZ = ZoneInfo(ZONE)
ACCOUNT = Account("acme", "Acme Corp", 40, timezone=ZONE, contract_start=date(2026, 1, 5))
FIRST = date(2026, 5, 4)  # Monday: the account's first day
MON = date(2026, 6, 15)  # evaluated early on this Monday: six weeks of history
SUN = MON - timedelta(days=1)

RULE = DropRule.model_validate(
    {
        "name": "engagement-decline",
        "kind": "drop",
        "metric": "session_s",
        "statistic": "trend",
        "trend_days": 42,
        "drop": 0.6,
        "min_z": 2.0,
        "min_trend_days": 15,
        "min_baseline": 1800,
        "for_days": 2,
        "summary": "{account_name}: time in the product {change:.0%} ({value:.0f} s)",
    }
)

Plan = Callable[[date, int], tuple[int, int]]
"""(day, days since FIRST) -> (users that day, minutes each spends in the product)."""


def history(
    plan: Plan, first: date = FIRST, last: date = MON - timedelta(days=1)
) -> list[UsageEvent]:
    events = []
    day = first
    while day <= last:
        users, minutes = plan(day, (day - first).days)
        for n in range(users):
            when = datetime.combine(day, time(9, n % 60), TZ).astimezone(UTC)
            user = f"u{n}"
            events.append(
                UsageEvent(f"in:{user}:{day}", EventType.LOGIN, "acme", user, "user", when, {})
            )
            end = when + timedelta(minutes=minutes)
            events.append(
                UsageEvent(
                    f"out:{user}:{day}",
                    EventType.SESSION_END,
                    "acme",
                    user,
                    "user",
                    end,
                    {"duration_s": minutes * 60},
                )
            )
        day += timedelta(days=1)
    return events


def fold(events: Iterable[UsageEvent]) -> EngagementState:
    state = EngagementState("acme", timezone=ZONE)
    fold_events(state, sorted(events, key=lambda e: (e.occurred_at, e.event_id)))
    return state


def judge(
    events: list[UsageEvent], rule: DropRule = RULE, today: date = MON
) -> tuple[bool, Mapping[str, Any]]:
    now = datetime.combine(today, time(6), TZ).astimezone(UTC)
    (finding,) = evaluate(rule, Context(fold(events), ACCOUNT, now))
    return finding.active, finding.evidence


def weekdays_only(users: int, minutes: int) -> Plan:
    return lambda day, _: (users if day.weekday() < 5 else 0, minutes)


def steady_decline(day: date, since: int) -> tuple[int, int]:
    """20 users of 20 minutes a day, down steadily to 9 users of 12 minutes."""
    if day.weekday() >= 5:
        return 0, 0
    share = since / 42
    return round(20 - 11 * share), round(20 - 8 * share)


# --- the fit ---------------------------------------------------------------------------------


def test_an_exact_exponential_decline_is_fitted_exactly() -> None:
    points = [(float(x), 100 * math.exp(-0.02 * x)) for x in range(-41, 1)]  # falling
    fit = fit_trend(points)
    assert fit is not None
    assert fit.change == pytest.approx(math.exp(-0.02 * 41) - 1, abs=1e-6)
    assert fit.start == pytest.approx(100 * math.exp(0.82))
    assert fit.end == pytest.approx(100)
    assert fit.z < -10  # no scatter at all: as significant as it gets


def test_a_flat_series_has_no_trend() -> None:
    fit = fit_trend([(float(x), 10.0) for x in range(-20, 1)])
    assert fit is not None
    assert fit.change == pytest.approx(0.0, abs=1e-9)
    assert not declined(fit, 0.1, 0.0, 0.0, 3)


def test_nothing_to_fit() -> None:
    assert fit_trend([]) is None
    assert fit_trend([(0.0, 3.0), (-1.0, 2.0)]) is None  # two points: no dispersion
    assert fit_trend([(0.0, 0.0), (-1.0, 0.0), (-2.0, 0.0)]) is None  # all zero
    assert fit_trend([(0.0, 1.0), (0.0, 2.0), (0.0, 3.0)]) is None  # one day


def test_a_big_but_noisy_fall_is_not_significant() -> None:
    # Down over 70% across the window, but days swing between 1 and 40 people:
    # the measured dispersion makes the slope's error too wide to call it a trend.
    values = [40, 1, 1, 35, 1, 1, 30, 1, 1, 28, 1, 1, 22, 1, 1, 15, 1, 1, 12, 1]
    fit = fit_trend([(float(x - len(values) + 1), float(v)) for x, v in enumerate(values)])
    assert fit is not None and fit.change < -0.6
    assert -2.0 < fit.z < 0
    assert not declined(fit, 0.6, 2.0, 0.0, 15)


def test_points_skip_days_off_idle_days_and_light_weekdays() -> None:
    values = {FIRST + timedelta(days=n): float(n % 7 < 5) * 10 for n in range(14)}
    values[FIRST + timedelta(days=2)] = 0.0  # a weekday without activity: a break
    points = trend_points(values, range(5), FIRST + timedelta(days=13), 14)
    assert [x for x, _ in points] == [-13.0, -12.0, -10.0, -9.0, -6.0, -5.0, -4.0, -3.0, -2.0]


# --- the rule on whole histories ---------------------------------------------------------------


def test_a_steady_decline_of_time_in_the_product_fires() -> None:
    active, evidence = judge(history(steady_decline))
    assert active
    assert evidence["metric"] == "session_s_42d_trend"
    assert evidence["change"] <= -0.6
    assert evidence["z"] <= -2.0
    assert evidence["days"] == 30  # Monday to Friday over six weeks
    assert evidence["baseline"] > evidence["value"]


def test_the_decline_shows_in_the_summary() -> None:
    now = datetime.combine(MON, time(6), TZ).astimezone(UTC)
    (finding,) = evaluate(RULE, Context(fold(history(steady_decline)), ACCOUNT, now))
    assert finding.annotations["summary"].startswith("Acme Corp: time in the product -")


def test_a_steady_account_does_not_fire() -> None:
    active, evidence = judge(history(weekdays_only(12, 20)))
    assert not active
    assert evidence["change"] == pytest.approx(0.0, abs=1e-6)


def test_light_weekend_use_is_not_a_decline() -> None:
    # Full weekdays, and one person for five minutes at weekends: the weekends are no
    # full working days, so they are not points low enough to drag the fit.
    plan: Plan = lambda day, _: (12, 20) if day.weekday() < 5 else (1, 5)  # noqa: E731
    assert not judge(history(plan))[0]


def test_short_breaks_are_not_a_decline() -> None:
    # Two days off every ten days, the last ones just before the evaluation.
    def plan(day: date, since: int) -> tuple[int, int]:
        off = since % 10 in (7, 8) or since >= 40
        return (0 if off or day.weekday() >= 5 else 12), 20

    assert not judge(history(plan))[0]


def test_a_week_of_silence_is_left_to_the_silence_rules() -> None:
    def plan(day: date, since: int) -> tuple[int, int]:
        return (0 if since >= 35 or day.weekday() >= 5 else 12), 20

    active, evidence = judge(history(plan))
    assert not active
    assert evidence["change"] == pytest.approx(0.0, abs=1e-6)


def test_a_new_account_gets_no_verdict_yet() -> None:
    # Ten days of onboarding: fewer than min_trend_days points, even while falling.
    active, evidence = judge(history(steady_decline, first=MON - timedelta(days=10)))
    assert not active
    assert evidence["days"] < RULE.min_trend_days


def test_a_tiny_account_is_below_the_minimum() -> None:
    # One person, ten minutes a day, halving: under half an hour on a usual day.
    def plan(day: date, since: int) -> tuple[int, int]:
        return (1 if day.weekday() < 5 else 0), round(10 - 5 * since / 42)

    active, evidence = judge(history(plan))
    assert not active
    assert evidence["change"] < -0.4


def test_a_declared_holiday_is_not_a_decline() -> None:
    # The last full week off, declared: those days are not points at all.
    holiday = Calendar.model_validate({"days": ["2026-06-06..2026-06-14"]})
    rule = RULE.model_copy()
    object.__setattr__(rule, "_calendars", {"shutdown": holiday})
    account = Account("acme", "Acme Corp", 40, timezone=ZONE, calendar="shutdown")

    def plan(day: date, since: int) -> tuple[int, int]:
        closed = date(2026, 6, 6) <= day <= date(2026, 6, 14)
        return (0 if closed or day.weekday() >= 5 else 12), 20

    now = datetime.combine(MON, time(6), TZ).astimezone(UTC)
    (finding,) = evaluate(rule, Context(fold(history(plan)), account, now))
    assert not finding.active
    assert finding.evidence["days"] == 25


def test_an_open_alert_resolves_only_above_the_exit_level() -> None:
    # Down ~55%: not enough to fire (60%), enough to hold an open one (above -50%).
    def plan(day: date, since: int) -> tuple[int, int]:
        return (0 if day.weekday() >= 5 else round(20 - 9 * since / 42)), round(20 - 4 * since / 42)

    events = history(plan)
    now = datetime.combine(MON, time(6), TZ).astimezone(UTC)
    state = fold(events)
    (fresh,) = evaluate(RULE, Context(state, ACCOUNT, now))
    (held,) = evaluate(RULE, Context(state, ACCOUNT, now, open_rules=frozenset({RULE.name})))
    assert -0.6 < fresh.evidence["change"] <= -0.5
    assert (fresh.active, held.active) == (False, True)


def test_an_open_alert_stays_while_the_drop_deepens_below_the_minimum() -> None:
    """The deeper the fall, the smaller the usual level: an open alert must not resolve
    because the account fell under min_baseline, only when it comes back above the exit
    level. (It did: a team down 90% was told it had recovered.)"""

    def plan(day: date, since: int) -> tuple[int, int]:
        # Three people, a quarter of an hour a day, falling to one person for two minutes.
        return (0, 0) if day.weekday() >= 5 else ((3, 15) if since < 14 else (1, 2))

    now = datetime.combine(MON, time(6), TZ).astimezone(UTC)
    state = fold(history(plan))
    (fresh,) = evaluate(RULE, Context(state, ACCOUNT, now))
    (held,) = evaluate(RULE, Context(state, ACCOUNT, now, open_rules=frozenset({RULE.name})))
    assert fresh.evidence["change"] < -0.8
    assert not fresh.active  # a new alert: the usual level is under the minimum
    assert held.active  # an open one: still far below the exit level


def test_an_open_alert_with_too_few_days_to_fit_is_left_as_it_is() -> None:
    # Silent for the last weeks: no fit, no verdict (the silence rules speak).
    def plan(day: date, since: int) -> tuple[int, int]:
        return (0, 0) if day.weekday() >= 5 or since >= 14 else (10, 30)

    now = datetime.combine(MON, time(6), TZ).astimezone(UTC)
    held = evaluate(
        RULE, Context(fold(history(plan)), ACCOUNT, now, open_rules=frozenset({RULE.name}))
    )
    assert held == []


def test_an_open_alert_without_a_fit_resolves_once_the_account_is_back() -> None:
    """Down, then silent for weeks, then back at full use: too few days to fit a trend
    for three weeks, but the account is plainly back, so the drop alert resolves after
    a few active days rather than staying open (it stayed about 19 days)."""

    def plan(day: date, since: int) -> tuple[int, int]:
        back = day >= MON - timedelta(days=7)  # the last week: back at full use
        return (0, 0) if day.weekday() >= 5 or (since >= 7 and not back) else (10, 30)

    now = datetime.combine(MON, time(6), TZ).astimezone(UTC)
    state = fold(history(plan))
    (back,) = evaluate(RULE, Context(state, ACCOUNT, now, open_rules=frozenset({RULE.name})))
    assert not back.active
    assert back.evidence["reason"] == "active again: too few days to fit a trend"


# --- validation --------------------------------------------------------------------------------


def test_min_trend_days_beyond_the_window_names_file_line_and_field(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(
        "rules:\n"
        "  - name: decline\n"
        "    kind: drop\n"
        "    statistic: trend\n"
        "    trend_days: 20\n"
        "    min_trend_days: 30\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as caught:
        load_rules(path)
    message = str(caught.value)
    assert f"{path}:6: rules.0.min_trend_days: min_trend_days must not exceed trend_days" in message


def test_a_too_short_trend_window_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(
        "rules:\n  - name: decline\n    kind: drop\n    statistic: trend\n    trend_days: 7\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as caught:
        load_rules(path)
    assert f"{path}:5: rules.0.trend_days: Input should be greater than or equal to 14" in str(
        caught.value
    )
