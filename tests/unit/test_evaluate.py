"""Every rule kind on hand-built accounts, with the shipped default rules.

The account lives in America/Los_Angeles (PDT, UTC-7, all through May and June 2026).
Usage happens at 17:30 local time, which is 00:30 UTC on the *next* day: if anything
cut days in UTC, a Monday-to-Friday team would look like a Tuesday-to-Saturday one and
the weekday evidence below would be wrong. Rules are evaluated at 08:00 local time.

Calendar (2026): the six weeks W1..W6 before the evaluation day start on Mondays
4, 11, 18, 25 May, 1 and 8 June; W6 ends on Sunday 14 June; "today" is mostly
Monday 15 June. Every expected number is worked out by hand in the comments.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Iterable, Sequence
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import pytest

from alerts.evaluate import Context, evaluate
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
    load_rules,
)
from config.yaml_source import ConfigError
from stream.accounts import Account
from stream.engagement import EngagementState, fold_events
from stream.events import EventType, UsageEvent

SHIPPED = Path(__file__).resolve().parents[2] / "config" / "rules.yaml"
RULES: dict[str, Rule] = {rule.name: rule for rule in load_rules(SHIPPED).rules}

ZONE = "America/Los_Angeles"
TZ = ZoneInfo(ZONE)
ACCOUNT = Account(
    "acme",
    "Acme Corp",
    50,
    owner_email="csm@example.com",
    segment="enterprise",
    arr=120_000.0,
    timezone=ZONE,
    contract_start=date(2026, 5, 1),
    renewal_date=date(2027, 5, 1),
)
ROLES = {"champ": "champion", "champ-a": "champion", "champ-b": "champion", "boss": "executive"}

W1 = date(2026, 5, 4)  # Monday, first day of the history
W5 = date(2026, 6, 1)
W6 = date(2026, 6, 8)
MON = date(2026, 6, 15)  # the usual evaluation day
SAT, SUN = MON - timedelta(days=2), MON - timedelta(days=1)
FRI = MON - timedelta(days=3)

LOGIN, FEATURE = EventType.LOGIN, EventType.FEATURE_USED
NPS, VALUE = EventType.NPS_RESPONSE, EventType.VALUE_MILESTONE

T = TypeVar("T")


# --- fixtures -----------------------------------------------------------------------------


def shipped(name: str, kind: type[T]) -> T:
    rule = RULES[name]
    assert isinstance(rule, kind)
    return rule


def at(day: date, hour: int = 17, minute: int = 30) -> datetime:
    """A local wall-clock time of the account, as the UTC instant events carry."""
    return datetime.combine(day, time(hour, minute), TZ).astimezone(UTC)


def event(kind: EventType, user: str, day: date, hour: int = 17, **props: Any) -> UsageEvent:
    when = at(day, hour)
    event_id = f"{kind.value}:{user}:{when.isoformat()}"
    return UsageEvent(event_id, kind, "acme", user, ROLES.get(user, "user"), when, props)


def weekdays(first: date, last: date, which: Collection[int] = range(5)) -> list[date]:
    """The days from ``first`` to ``last`` (inclusive) whose weekday is in ``which``."""
    count = (last - first).days + 1
    days = (first + timedelta(days=n) for n in range(count))
    return [day for day in days if day.weekday() in which]


def team(size: int) -> list[str]:
    return [f"u{n}" for n in range(1, size + 1)]


def logins(users: Iterable[str], days: Iterable[date]) -> list[UsageEvent]:
    return [event(LOGIN, user, day) for day in days for user in users]


def fold(events: Iterable[UsageEvent]) -> EngagementState:
    state = EngagementState("acme", timezone=ZONE)
    outcome = fold_events(state, sorted(events, key=lambda e: (e.occurred_at, e.event_id)))
    assert (outcome.late, outcome.duplicates) == ([], 0)
    return state


def context(
    state: EngagementState,
    today: date,
    account: Account | None = ACCOUNT,
    *,
    hour: int = 8,
    healthy: bool = True,
) -> Context:
    return Context(state, account, at(today, hour, 0), input_healthy=healthy)


def one(findings: Sequence[Finding]) -> Finding:
    assert len(findings) == 1, findings
    return findings[0]


def daily_team(first: date = W1, last: date = FRI) -> list[UsageEvent]:
    """Three users and the champion, every working day from ``first`` to ``last``."""
    return logins([*team(3), "champ"], weekdays(first, last))


# --- silence: account scope ---------------------------------------------------------------

ACCOUNT_SILENT = shipped("account-silent", SilenceRule)
WEEKDAY_ONLY = fold(daily_team())  # W1..W6 Monday to Friday, never a weekend


@pytest.mark.parametrize(
    ("today", "hour"),
    [
        (SAT, 9),
        (SUN, 9),
        # 23:30 on Sunday in Los Angeles is 06:30 on Monday in UTC: still Sunday here.
        (SUN, 23),
        (MON, 8),
    ],
)
def test_weekday_team_is_not_silent_at_the_weekend(today: date, hour: int) -> None:
    finding = one(evaluate(ACCOUNT_SILENT, context(WEEKDAY_ONLY, today, hour=hour)))
    # Between Friday and Saturday/Sunday/Monday lie only weekend days, and no weekday
    # of six weeks ever had a Saturday or Sunday login: 0 working days missed.
    assert not finding.active
    assert finding.evidence["value"] == 0
    assert finding.evidence["threshold"] == 4
    assert finding.evidence["baseline"] == 0
    assert finding.evidence["last_active_day"] == "2026-06-12"
    # Cut in local time: 17:30 PDT Monday..Friday (00:30 UTC Tuesday..Saturday).
    assert finding.evidence["working_weekdays"] == [0, 1, 2, 3, 4]


def test_two_working_day_break_is_not_silence() -> None:
    # Active until Wednesday 10 June; Thursday and Friday off, then the weekend.
    state = fold(daily_team(last=date(2026, 6, 10)))
    finding = one(evaluate(ACCOUNT_SILENT, context(state, MON)))
    # Missed working days: Thu 11 and Fri 12 = 2; the daily habit's longest gap is 0,
    # so the threshold is max(min_missed_working_days 4, ceil(2.0 * 0)) = 4.
    assert not finding.active
    assert (finding.evidence["value"], finding.evidence["threshold"]) == (2, 4)
    assert finding.evidence["last_active_day"] == "2026-06-10"


def test_a_long_weekend_is_not_silence() -> None:
    # The same break evaluated on Tuesday: Thu 11, Fri 12 and Mon 15 missed = 3 < 4.
    state = fold(daily_team(last=date(2026, 6, 10)))
    finding = one(evaluate(ACCOUNT_SILENT, context(state, MON + timedelta(days=1))))
    assert not finding.active
    assert (finding.evidence["value"], finding.evidence["threshold"]) == (3, 4)


def test_the_fourth_missed_working_day_fires() -> None:
    # Evaluated on Wednesday: Thu 11, Fri 12, Mon 15 and Tue 16 missed = 4 >= 4.
    state = fold(daily_team(last=date(2026, 6, 10)))
    finding = one(evaluate(ACCOUNT_SILENT, context(state, MON + timedelta(days=2))))
    assert finding.active
    assert (finding.evidence["value"], finding.evidence["threshold"]) == (4, 4)


def silent_since_tuesday() -> EngagementState:
    """A daily habit W1..W6, last active Tuesday 9 June."""
    return fold(daily_team(last=date(2026, 6, 9)))


def test_silent_for_four_working_days_after_a_daily_habit() -> None:
    tuesday = MON + timedelta(days=1)
    finding = one(evaluate(ACCOUNT_SILENT, context(silent_since_tuesday(), tuesday)))
    # Missed: Wed 10, Thu 11, Fri 12, Mon 15 = 4 >= threshold max(4, ceil(2 * 0)) = 4.
    assert finding.active
    assert finding.rule == "account-silent"
    assert finding.severity == "critical"
    assert finding.subject is None
    assert finding.evidence == {
        "metric": "missed_working_days",
        "value": 4,
        "threshold": 4,
        "baseline": 0,
        "last_active_day": "2026-06-09",
        "working_weekdays": [0, 1, 2, 3, 4],
        # The champion's last login: Tuesday 9 June 17:30 PDT = 10 June 00:30 UTC.
        "last_seen": {"champ": "2026-06-10T00:30:00Z"},
    }
    assert finding.annotations["summary"] == (
        "Acme Corp has been silent for 4 working days (usual longest break: 0)"
    )
    description = finding.annotations["description"]
    assert description.startswith("No activity since 2026-06-09. Stakeholders last seen: ")
    assert "champ" in description
    assert "2026-06-10T00:30:00Z" in description


def test_silence_three_weeks_long_still_fires() -> None:
    # A daily habit from 6 April to Friday 15 May, then nothing; evaluated Monday 8 June.
    # The 42-day profile (27 Apr..7 Jun) holds each weekday 6 times, 3 of them active:
    # rate 0.5 >= 0.4, so Monday..Friday stay working days; missed 18 May..5 Jun = 15.
    state = fold(daily_team(date(2026, 4, 6), date(2026, 5, 15)))
    finding = one(evaluate(ACCOUNT_SILENT, context(state, W6)))
    assert finding.active
    assert (finding.evidence["value"], finding.evidence["threshold"]) == (15, 4)


def test_silence_four_weeks_long_still_fires() -> None:
    # Same account, evaluated Monday 15 June: profile 4 May..14 Jun, each weekday active
    # 2 times out of 6 (0.33). Missed working days since 15 May: 20.
    state = fold(daily_team(date(2026, 4, 6), date(2026, 5, 15)))
    finding = one(evaluate(ACCOUNT_SILENT, context(state, MON)))
    assert finding.active
    assert finding.evidence["value"] == 20


def test_new_account_has_no_habit_yet() -> None:
    # First seen Friday 5 June (10 days ago), active 5 and 8 June, silent for a week.
    state = fold(logins(team(3), [date(2026, 6, 5), W6]))
    finding = one(evaluate(ACCOUNT_SILENT, context(state, MON)))
    # 10 days of history < min_history_days 21 (and 2 active days < 8).
    assert not finding.active
    assert finding.evidence == {
        "metric": "missed_working_days",
        "value": 0,
        "reason": "no established habit yet",
    }


@pytest.mark.parametrize("status", ["onboarding", "paused", "churned"])
def test_silence_has_no_verdict_for_inactive_statuses(status: str) -> None:
    account = dataclasses.replace(ACCOUNT, status=status)
    tuesday = MON + timedelta(days=1)
    assert evaluate(ACCOUNT_SILENT, context(silent_since_tuesday(), tuesday, account)) == []


def test_silence_has_no_verdict_while_our_input_is_stalled() -> None:
    tuesday = MON + timedelta(days=1)
    ctx = context(silent_since_tuesday(), tuesday, healthy=False)
    assert evaluate(ACCOUNT_SILENT, ctx) == []
    assert evaluate(shipped("champion-silent", SilenceRule), ctx) == []


def test_silence_without_account_metadata_still_judges() -> None:
    tuesday = MON + timedelta(days=1)
    finding = one(evaluate(ACCOUNT_SILENT, context(silent_since_tuesday(), tuesday, None)))
    assert finding.active
    assert finding.annotations["summary"].startswith("acme has been silent for 4 working")
    assert finding.labels == {"rule": "account-silent", "account_id": "acme"}


MONDAY_THURSDAY = fold(logins(team(2), weekdays(W1, date(2026, 6, 4), which={0, 3})))


def test_monday_thursday_habit_makes_a_week_off_plausible() -> None:
    # Active only on Mondays and Thursdays, 4 May..Thu 4 June; Mon 8 and Thu 11 June
    # are skipped. Working weekdays: Monday and Thursday (rate 5/6), the rest 0/6.
    # Counted in working days the habit has no gap at all (Mon->Thu and Thu->Mon skip
    # only non-working days): baseline 0, threshold max(4, ceil(2.0 * 0)) = 4.
    friday = date(2026, 6, 12)
    finding = one(evaluate(ACCOUNT_SILENT, context(MONDAY_THURSDAY, friday)))
    # A calendar week off is 2 missed working days (Mon 8, Thu 11): plausible.
    assert not finding.active
    assert finding.evidence["working_weekdays"] == [0, 3]
    assert (finding.evidence["value"], finding.evidence["threshold"]) == (2, 4)
    assert finding.evidence["baseline"] == 0
    # Still 2 on Monday morning: today is not judged until it is over.
    monday = one(evaluate(ACCOUNT_SILENT, context(MONDAY_THURSDAY, MON)))
    assert (monday.active, monday.evidence["value"]) == (False, 2)


def test_monday_thursday_habit_fires_on_the_fourth_missed_day() -> None:
    # Tuesday 16 June: Mon 8, Thu 11 and Mon 15 missed = 3 < 4: not yet.
    tuesday = one(evaluate(ACCOUNT_SILENT, context(MONDAY_THURSDAY, MON + timedelta(days=1))))
    assert (tuesday.active, tuesday.evidence["value"]) == (False, 3)
    # Friday 19 June: Thu 18 June is the fourth missed working day.
    friday = one(evaluate(ACCOUNT_SILENT, context(MONDAY_THURSDAY, MON + timedelta(days=4))))
    assert friday.active
    assert friday.evidence["value"] == 4


def test_alternate_weeks_habit_tolerates_a_week_off() -> None:
    # Active Monday..Friday in W1, W3 and W5 only: each weekday is active 3 of 6 times
    # (0.5 >= 0.4), so all five are working days and the usual gap is a whole week:
    # Fri 8 May -> Mon 18 May skips 5 working days. Threshold max(3, ceil(2 * 5)) = 10.
    days = weekdays(W1, W1 + timedelta(days=4))
    days += weekdays(date(2026, 5, 18), date(2026, 5, 22))
    days += weekdays(W5, W5 + timedelta(days=4))
    finding = one(evaluate(ACCOUNT_SILENT, context(fold(logins(team(2), days)), MON)))
    # W6 off: 5 missed working days < 10.
    assert not finding.active
    assert finding.evidence["baseline"] == 5
    assert (finding.evidence["value"], finding.evidence["threshold"]) == (5, 10)


# --- silence: stakeholder scope -------------------------------------------------------------

CHAMPION_SILENT = shipped("champion-silent", SilenceRule)


def test_one_finding_per_champion_and_only_the_gone_one_fires() -> None:
    # Everyone works Monday..Friday W1..W6, except champ-b, last seen Friday 29 May.
    # "boss" (an executive) and the users are not watched by this rule.
    events = logins([*team(3), "champ-a", "boss"], weekdays(W1, FRI))
    events += logins(["champ-b"], weekdays(W1, date(2026, 5, 29)))
    findings = evaluate(CHAMPION_SILENT, context(fold(events), MON))
    assert [f.subject for f in findings] == ["champ-a", "champ-b"]
    stayed, gone = findings
    assert not stayed.active
    assert stayed.evidence["value"] == 0
    # champ-b missed W5 and W6: 10 working days >= max(5, ceil(2.0 * 0)) = 5.
    assert gone.active
    assert gone.evidence["value"] == 10
    assert gone.evidence["threshold"] == 5
    assert gone.evidence["last_active_day"] == "2026-05-29"
    assert gone.evidence["last_seen"] == {"champ-b": "2026-05-30T00:30:00Z"}
    assert gone.annotations["summary"] == (
        "Champion champ-b at Acme Corp has not been seen for 10 working days"
    )
    assert gone.fingerprint != stayed.fingerprint
    assert gone.severity == "warning"


def test_champion_on_a_short_break_is_not_silent() -> None:
    # champ-b took Wednesday..Friday of W6 off: 3 missed working days < 5.
    events = logins([*team(3), "champ-a"], weekdays(W1, FRI))
    events += logins(["champ-b"], weekdays(W1, date(2026, 6, 9)))
    findings = evaluate(CHAMPION_SILENT, context(fold(events), MON))
    assert [(f.subject, f.active, f.evidence["value"]) for f in findings] == [
        ("champ-a", False, 0),
        ("champ-b", False, 3),
    ]


def test_no_champion_no_finding() -> None:
    state = fold(logins(team(3), weekdays(W1, FRI)))
    assert evaluate(CHAMPION_SILENT, context(state, MON)) == []


# --- threshold: daily usage rate ------------------------------------------------------------

LOW_USAGE = shipped("low-daily-usage", ThresholdRule)
BUSY, QUIET = team(10), team(3)  # of 50 licenses: 20% and 6%


def usage(busy: Iterable[date], quiet: Iterable[date]) -> EngagementState:
    return fold(logins(BUSY, busy) + logins(QUIET, quiet))


def test_low_usage_on_each_of_the_last_five_working_days() -> None:
    state = usage(weekdays(W1, date(2026, 6, 5)), weekdays(W6, FRI))
    finding = one(evaluate(LOW_USAGE, context(state, MON)))
    # W6 Monday..Friday: 3 / 50 = 0.06 < 0.1 on each.
    assert finding.active
    assert finding.evidence == {
        "metric": "daily_usage_rate",
        "value": 0.06,
        "threshold": 0.1,
        "values": {day.isoformat(): 0.06 for day in weekdays(W6, FRI)},
    }
    assert finding.annotations["summary"] == (
        "Acme Corp: under 10% of licenses used on each of the last 5 working days"
    )


def test_an_empty_weekend_in_the_window_does_not_count() -> None:
    # Quiet from Wednesday 10 June; evaluated Wednesday 17 June. The last five working
    # days are Wed 10, Thu 11, Fri 12, Mon 15, Tue 16: the empty weekend is skipped.
    state = usage(weekdays(W1, date(2026, 6, 9)), weekdays(date(2026, 6, 10), date(2026, 6, 16)))
    finding = one(evaluate(LOW_USAGE, context(state, date(2026, 6, 17))))
    assert finding.active
    assert finding.evidence["values"] == {
        "2026-06-10": 0.06,
        "2026-06-11": 0.06,
        "2026-06-12": 0.06,
        "2026-06-15": 0.06,
        "2026-06-16": 0.06,
    }


def test_one_good_working_day_clears_it() -> None:
    good = date(2026, 6, 11)
    quiet = [d for d in weekdays(date(2026, 6, 10), date(2026, 6, 16)) if d != good]
    state = usage([*weekdays(W1, date(2026, 6, 9)), good], quiet)
    finding = one(evaluate(LOW_USAGE, context(state, date(2026, 6, 17))))
    assert not finding.active
    assert finding.evidence["values"]["2026-06-11"] == 0.2
    assert finding.evidence["value"] == 0.06


@pytest.mark.parametrize(
    "account", [dataclasses.replace(ACCOUNT, licenses=0), None], ids=["zero-licenses", "no-account"]
)
def test_unknown_licenses_give_no_verdict(account: Account | None) -> None:
    state = usage(weekdays(W1, date(2026, 6, 5)), weekdays(W6, FRI))
    assert evaluate(LOW_USAGE, context(state, MON, account)) == []


def test_license_change_events_beat_the_metadata() -> None:
    # 3 users of 50 licenses is 6%, but the account cut to 20 licenses on 1 June: 15%.
    props = {"licenses": 20}
    cut = UsageEvent("lic", EventType.LICENSE_CHANGE, "acme", None, "user", at(W5, 9), props)
    events = logins(BUSY, weekdays(W1, date(2026, 5, 29))) + logins(QUIET, weekdays(W5, FRI))
    state = fold([cut, *events])
    finding = one(evaluate(LOW_USAGE, context(state, MON)))
    assert not finding.active
    assert finding.evidence["value"] == 0.15


@pytest.mark.parametrize(("users", "active", "rate"), [(0, True, 0.0), (1, False, 1 / 3)])
def test_tiny_account(users: int, active: bool, rate: float) -> None:
    # 3 licenses, one user every working day W1..W5; in W6 nobody (0%) or that one user
    # (33%). One login is already above 10%: only total absence can fire.
    tiny = dataclasses.replace(ACCOUNT, licenses=3)
    state = fold(
        logins(["u1"], weekdays(W1, date(2026, 6, 5))) + logins(team(users), weekdays(W6, FRI))
    )
    finding = one(evaluate(LOW_USAGE, context(state, MON, tiny)))
    assert finding.active is active
    assert finding.evidence["values"] == {day.isoformat(): rate for day in weekdays(W6, FRI)}


def test_threshold_waits_for_three_weeks_of_history() -> None:
    # First seen Wednesday 10 June (5 days of history < min_history_days 21); 2 of 50
    # users (4%) on Wed, Thu and Fri. Without the wait, Thu 4 and Fri 5 June (before the
    # account existed) would count as two more working days at 0%.
    state = fold(logins(team(2), weekdays(date(2026, 6, 10), FRI)))
    finding = one(evaluate(LOW_USAGE, context(state, MON)))
    assert not finding.active
    assert finding.evidence == {
        "metric": "daily_usage_rate",
        "value": None,
        "reason": "not enough history yet",
    }


# --- drop ---------------------------------------------------------------------------------

USAGE_DROP = shipped("usage-drop", DropRule)


def drop_state(before: int, after: int) -> EngagementState:
    """``before`` users every working day W1..W5, ``after`` users in W6."""
    return fold(
        logins(team(before), weekdays(W1, date(2026, 6, 5)))
        + logins(team(after), weekdays(W6, FRI))
    )


def test_half_the_daily_users_is_a_drop() -> None:
    finding = one(evaluate(USAGE_DROP, context(drop_state(10, 5), MON)))
    # 35 days ending Sunday 14 June. Recent 7 (W6): 5 users x 5 days / 7 = 3.5714.
    # Baseline 28 (W2..W5): 10 x 20 / 28 = 7.1429. Change 3.5714 / 7.1429 - 1 = -0.5.
    assert finding.active
    assert finding.evidence == {
        "metric": "active_users_7d_mean",
        "value": 3.571,
        "baseline": 7.143,
        "threshold": -0.5,
        "change": -0.5,
    }
    assert finding.annotations["summary"] == (
        "Acme Corp: daily active users changed -50% against the 4-week baseline (3.571 vs 7.143)"
    )


def test_a_smaller_drop_is_not_alarming() -> None:
    # 7 of 10: change -0.3 > -0.5.
    finding = one(evaluate(USAGE_DROP, context(drop_state(10, 7), MON)))
    assert not finding.active
    assert finding.evidence["change"] == -0.3


def test_tiny_account_drop_is_noise() -> None:
    # One user every working day: baseline 20 / 28 = 0.714 < min_baseline 2, so even
    # losing that user entirely (-100%) says nothing.
    finding = one(evaluate(USAGE_DROP, context(drop_state(1, 0), MON)))
    assert not finding.active
    assert finding.evidence["baseline"] == 0.714
    assert finding.evidence["value"] == 0.0
    assert finding.evidence["change"] == -1.0


def test_no_baseline_no_change() -> None:
    # Only W6 has users: the baseline is 0 and the change undefined.
    state = fold(logins(team(5), weekdays(W6, FRI)))
    finding = one(evaluate(USAGE_DROP, context(state, MON)))
    assert not finding.active
    assert (finding.evidence["baseline"], finding.evidence["change"]) == (0.0, None)


def test_drop_has_no_verdict_while_our_input_is_stalled() -> None:
    assert evaluate(USAGE_DROP, context(drop_state(10, 0), MON, healthy=False)) == []


# --- adoption and time to value ---------------------------------------------------------------

REPORTS = shipped("reports-not-adopted", AdoptionRule)


def reports_used(users: Sequence[str], days: Sequence[date]) -> EngagementState:
    events = logins(team(3), weekdays(W1, FRI))
    events += [event(FEATURE, user, day, feature="reports") for user in users for day in days]
    return fold(events)


def test_feature_not_adopted_after_the_deadline() -> None:
    # Contract start 1 May, due 31 May. Only u1 used reports (on 5 days): 1 user < 2.
    state = reports_used(["u1"], weekdays(W6, FRI))
    finding = one(evaluate(REPORTS, context(state, MON)))
    assert finding.active
    assert finding.severity == "info"
    assert finding.evidence == {
        "metric": "adopted:reports",
        "value": False,
        "threshold": True,
        "due": "2026-05-31",
    }
    assert finding.annotations["summary"] == (
        "Acme Corp has not adopted reports 30 days after onboarding"
    )


def test_feature_adopted_by_two_users_on_three_days() -> None:
    state = reports_used(["u1", "u2"], [date(2026, 6, 2), date(2026, 6, 4), date(2026, 6, 9)])
    finding = one(evaluate(REPORTS, context(state, MON)))
    assert not finding.active
    assert finding.evidence["value"] is True


def test_adoption_is_not_due_yet() -> None:
    # Contract start 20 May: due 19 June, four days from now.
    account = dataclasses.replace(ACCOUNT, contract_start=date(2026, 5, 20))
    finding = one(evaluate(REPORTS, context(reports_used([], []), MON, account)))
    assert not finding.active
    assert finding.evidence["due"] == "2026-06-19"


def test_adoption_counts_from_the_feature_launch() -> None:
    rule = REPORTS.model_copy(update={"launched_on": date(2026, 6, 1)})
    finding = one(evaluate(rule, context(reports_used([], []), MON)))
    assert not finding.active
    assert finding.evidence["due"] == "2026-07-01"


@pytest.mark.parametrize("name", ["reports-not-adopted", "slow-time-to-value"])
def test_no_contract_start_no_verdict(name: str) -> None:
    account = dataclasses.replace(ACCOUNT, contract_start=None)
    assert evaluate(RULES[name], context(reports_used([], []), MON, account)) == []


SLOW_VALUE = shipped("slow-time-to-value", TimeToValueRule)


@pytest.mark.parametrize(
    ("start", "active", "waited"),
    [(date(2026, 5, 14), True, 32), (date(2026, 5, 15), True, 31), (date(2026, 5, 16), False, 30)],
)
def test_time_to_value_without_a_milestone(start: date, active: bool, waited: int) -> None:
    account = dataclasses.replace(ACCOUNT, contract_start=start)
    finding = one(evaluate(SLOW_VALUE, context(reports_used([], []), MON, account)))
    # Waited = 15 June - start; late only when more than max_days 30.
    assert finding.active is active
    assert finding.evidence == {"metric": "days_without_value", "value": waited, "threshold": 30}
    assert finding.annotations["summary"] == (
        f"Acme Corp: no value milestone {waited} days after contract start"
    )


def test_time_to_value_reached() -> None:
    events = [*logins(team(3), weekdays(W1, FRI)), event(VALUE, "u1", W5, milestone="dash")]
    finding = one(evaluate(SLOW_VALUE, context(fold(events), MON)))
    assert not finding.active
    assert finding.evidence["value"] is None


# --- NPS --------------------------------------------------------------------------------------

DETRACTOR = shipped("detractor", NpsRule)


def answered(user: str, day: date, score: int, comment: str | None = None) -> EngagementState:
    events = logins([*team(3), "champ"], weekdays(W1, FRI))
    events.append(event(NPS, user, day, hour=12, score=score, comment=comment))
    return fold(events)


def test_stakeholder_detractor_within_two_weeks() -> None:
    state = answered("champ", W6, 3, comment="too slow")
    finding = one(evaluate(DETRACTOR, context(state, MON)))
    assert finding.active
    assert finding.evidence == {
        "metric": "nps_score",
        "value": 3,
        "threshold": 6,
        "answers": [{"user_id": "champ", "role": "champion", "score": 3, "comment": "too slow"}],
    }
    assert finding.annotations["summary"] == "A stakeholder at Acme Corp answered NPS 3"


@pytest.mark.parametrize(
    ("day", "active"),
    [
        # 1 June 12:00 to 15 June 08:00 is 13 days 20 hours: within 14 days.
        (date(2026, 6, 1), True),
        # 31 May 12:00 is 14 days 20 hours ago: too old.
        (date(2026, 5, 31), False),
    ],
)
def test_detractor_age(day: date, active: bool) -> None:
    finding = one(evaluate(DETRACTOR, context(answered("champ", day, 2), MON)))
    assert finding.active is active
    assert finding.evidence["value"] == (2 if active else None)


@pytest.mark.parametrize(("score", "active"), [(0, True), (6, True), (7, False), (10, False)])
def test_detractor_scores(score: int, active: bool) -> None:
    finding = one(evaluate(DETRACTOR, context(answered("boss", W6, score), MON)))
    assert finding.active is active


def test_a_user_detractor_is_not_a_stakeholder_detractor() -> None:
    finding = one(evaluate(DETRACTOR, context(answered("u1", W6, 0), MON)))
    assert not finding.active
    assert finding.evidence["answers"] == []
    assert finding.evidence["value"] is None


# --- health -----------------------------------------------------------------------------------

HEALTH = shipped("health-tier", HealthRule)
TEN = dataclasses.replace(ACCOUNT, licenses=10)


def test_healthy_account_is_green() -> None:
    # 8 of 10 licenses every working day for six weeks and one promoter answer.
    events = [*logins(team(8), weekdays(W1, FRI)), event(NPS, "u1", W5, score=10)]
    finding = one(evaluate(HEALTH, context(fold(events), MON, TEN)))
    # usage min(1, 0.8 / 0.7) = 1; activity 20 login days / 20 working days = 1;
    # trend 1 + 0 = 1; nps (100 + 100) / 200 = 1.
    assert not finding.active
    assert finding.severity == "warning"
    assert finding.evidence == {
        "metric": "health_score",
        "value": 1.0,
        "threshold": 0.55,
        "tier": "green",
        "components": {"usage": 1.0, "activity": 1.0, "trend": 1.0, "nps": 1.0},
    }
    assert finding.annotations["summary"] == "Acme Corp health is green (1.0)"


def test_fading_account_is_yellow() -> None:
    # 8 users every working day W1..W4, then only u1 every working day W5..W6, no NPS.
    events = logins(team(8), weekdays(W1, date(2026, 5, 29))) + logins(["u1"], weekdays(W5, FRI))
    finding = one(evaluate(HEALTH, context(fold(events), MON, TEN)))
    # usage: last 7 working days at 1/10 -> 0.1 / 0.7 = 0.142857
    # activity: 20 login days / 20 working days = 1
    # trend: recent W6 5/7 = 0.714; baseline W2..W5 (3 x 40 + 5) / 28 = 4.464;
    #        change 0.714 / 4.464 - 1 = -0.84 -> 0.16
    # no NPS: weights 0.4 + 0.3 + 0.2 = 0.9;
    # score (0.4 * 0.142857 + 0.3 * 1 + 0.2 * 0.16) / 0.9 = 0.389143 / 0.9 = 0.432
    assert finding.active
    assert finding.severity == "warning"
    assert finding.evidence["tier"] == "yellow"
    assert finding.evidence["value"] == 0.432
    assert finding.evidence["components"] == {"usage": 0.143, "activity": 1.0, "trend": 0.16}


def test_collapsing_account_is_red_and_critical() -> None:
    # 8 users every working day W1..W4; in W5 and W6 only the champion, on Monday,
    # Wednesday and Friday, who answers NPS 0 on Wednesday 10 June.
    events = logins([*team(7), "champ"], weekdays(W1, date(2026, 5, 29)))
    events += logins(["champ"], weekdays(W5, FRI, which={0, 2, 4}))
    events.append(event(NPS, "champ", date(2026, 6, 10), hour=18, score=0))
    finding = one(evaluate(HEALTH, context(fold(events), MON, TEN)))
    # usage: the last 7 working days are Thu 4, Fri 5 and W6 Mon..Fri at
    #        0, .1, .1, 0, .1, 0, .1 -> mean 0.4 / 7 = 0.05714; / 0.7 = 0.08163
    # activity: login days in 18 May..14 Jun: 10 + 3 + 3 = 16 of 20 working days = 0.8
    # trend: recent W6 3/7; baseline W2..W5 (3 x 40 + 3) / 28 = 123/28;
    #        change (3/7) / (123/28) - 1 = 12/123 - 1 = -0.90244 -> 0.09756
    # nps: one detractor, -100 -> 0
    # score 0.4 * 0.08163 + 0.3 * 0.8 + 0.2 * 0.09756 + 0.1 * 0 = 0.29217 < 0.35: red
    assert finding.active
    assert finding.severity == "critical"
    assert finding.evidence["tier"] == "red"
    assert finding.evidence["value"] == 0.292
    assert finding.evidence["components"] == {
        "usage": 0.082,
        "activity": 0.8,
        "trend": 0.098,
        "nps": 0.0,
    }
    assert finding.annotations["summary"] == "Acme Corp health is red (0.292)"


def test_health_waits_for_two_weeks_of_history() -> None:
    # First seen Tuesday 2 June: 13 days of history < 14.
    state = fold(logins(team(8), weekdays(date(2026, 6, 2), FRI)))
    assert evaluate(HEALTH, context(state, MON, TEN)) == []


# --- statuses, labels and annotations -------------------------------------------------------


@pytest.mark.parametrize("name", sorted(RULES))
def test_churned_and_paused_accounts_get_no_verdict(name: str) -> None:
    state = drop_state(10, 0)
    for status in ("paused", "churned"):
        account = dataclasses.replace(ACCOUNT, status=status)
        assert evaluate(RULES[name], context(state, MON, account)) == []


def test_labels_name_rule_account_and_segment() -> None:
    finding = one(evaluate(USAGE_DROP, context(drop_state(10, 5), MON)))
    assert finding.labels == {"rule": "usage-drop", "account_id": "acme", "segment": "enterprise"}
    assert finding.account_id == "acme"
    assert finding.rule == "usage-drop"


def test_rule_labels_are_added() -> None:
    rule = USAGE_DROP.model_copy(update={"labels": {"team": "cs-emea"}})
    no_segment = dataclasses.replace(ACCOUNT, segment=None)
    finding = one(evaluate(rule, context(drop_state(10, 5), MON, no_segment)))
    assert finding.labels == {"rule": "usage-drop", "account_id": "acme", "team": "cs-emea"}


def test_unknown_placeholders_are_left_as_they_are() -> None:
    rule = DETRACTOR.model_copy(
        update={"summary": "{account_name}: {nope} scored {value}", "description": "{subject}{x}"}
    )
    finding = one(evaluate(rule, context(answered("champ", W6, 3), MON)))
    assert finding.annotations == {"summary": "Acme Corp: {nope} scored 3", "description": "{x}"}


def test_no_description_no_annotation() -> None:
    finding = one(evaluate(DETRACTOR, context(answered("champ", W6, 3), MON)))
    assert set(finding.annotations) == {"summary"}


@pytest.mark.parametrize(
    ("summary", "rendered"),
    [
        # An unknown placeholder stays visible, without its format spec.
        ("{account_name}: {nope:.1f}", "Acme Corp: {nope}"),
        # No detractor: value is None, which '.0f' cannot take; shown plainly.
        ("{account_name}: {value:.0f}", "Acme Corp: None"),
    ],
)
def test_format_specs_never_break_an_alert(summary: str, rendered: str) -> None:
    rule = DETRACTOR.model_copy(update={"summary": summary})
    finding = one(evaluate(rule, context(answered("champ", W6, 9), MON)))
    assert finding.annotations["summary"] == rendered


@pytest.mark.parametrize(
    "summary", ["{account_name} scored {value", "{0} at {account_name}", "{value!z}"]
)
def test_a_malformed_template_is_rejected_at_load(tmp_path: Path, summary: str) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(f'rules:\n  - name: detractor\n    kind: nps\n    summary: "{summary}"\n')
    try:
        rules = load_rules(path)
    except ConfigError as exc:
        assert f"{path}:4: rules.0.summary:" in str(exc)
        return
    finding = one(evaluate(rules.rules[0], context(answered("champ", W6, 3), MON)))
    assert "3" in finding.annotations["summary"]


def test_an_open_health_alert_resolves_only_above_the_exit_margin() -> None:
    # The fading account scores 0.432 (see test_fading_account_is_yellow). With green at
    # 0.42 it is green on entry, but an open alert stays until 0.42 + 0.05 = 0.47.
    events = logins(team(8), weekdays(W1, date(2026, 5, 29))) + logins(["u1"], weekdays(W5, FRI))
    rule = HEALTH.model_copy(update={"green": 0.42, "yellow": 0.3, "exit_margin": 0.05})
    ctx = context(fold(events), MON, TEN)
    entering = one(evaluate(rule, ctx))
    assert (entering.active, entering.evidence["tier"]) == (False, "green")
    holding = one(evaluate(rule, dataclasses.replace(ctx, open_rules=frozenset({rule.name}))))
    assert (holding.active, holding.evidence["tier"]) == (True, "yellow")
    loose = rule.model_copy(update={"exit_margin": 0.0})
    released = one(evaluate(loose, dataclasses.replace(ctx, open_rules=frozenset({rule.name}))))
    assert not released.active
