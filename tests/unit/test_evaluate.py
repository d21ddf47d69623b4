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
import itertools
import json
from collections.abc import Collection, Iterable, Sequence
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alerts.evaluate import Context, DaysOff, WorkingDays, evaluate, render
from alerts.lifecycle import Finding
from alerts.rules import (
    AdoptionRule,
    Calendar,
    DropRule,
    HealthRule,
    NpsRule,
    Rule,
    RuleSet,
    SilenceRule,
    ThresholdRule,
    TimeToValueRule,
    load_rules,
)
from config.yaml_source import ConfigError
from stream.accounts import Account, decode_account
from stream.engagement import EngagementState, fold_events
from stream.events import EventType, Rejection, UsageEvent

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


# --- calendars: days off --------------------------------------------------------------------

R = TypeVar("R", bound=Rule)
W6_DAYS = "2026-06-08..2026-06-12"  # Monday to Friday of W6


def with_calendar(rule: R, *days: str, timezones: Sequence[str] = ()) -> R:
    """``rule`` as loaded from a rules file with one calendar, ``acme-closed``."""
    calendar = Calendar(days=days, timezones=tuple(timezones))
    ruleset = RuleSet(rules=(rule.model_copy(),), calendars={"acme-closed": calendar})
    bound = ruleset.rules[0]
    assert isinstance(bound, type(rule))
    return bound


CLOSED = dataclasses.replace(ACCOUNT, calendar="acme-closed")
# The daily team took W6 off; back on Monday 15 June or not.
HOLIDAY = fold(daily_team(last=date(2026, 6, 5)))


def test_a_declared_holiday_is_not_silence() -> None:
    rule = with_calendar(ACCOUNT_SILENT, W6_DAYS)
    finding = one(evaluate(rule, context(HOLIDAY, MON, CLOSED)))
    # Monday..Friday of W6 are days off: nothing missed since Friday 5 June.
    assert not finding.active
    assert (finding.evidence["value"], finding.evidence["threshold"]) == (0, 4)
    assert finding.evidence["calendar"] == "acme-closed"
    # Undeclared, the same week is five missed working days.
    unknown = one(evaluate(ACCOUNT_SILENT, context(HOLIDAY, MON, CLOSED)))
    assert (unknown.active, unknown.evidence["value"]) == (True, 5)
    assert "calendar" not in unknown.evidence


def test_working_days_after_a_holiday_count_as_usual() -> None:
    rule = with_calendar(ACCOUNT_SILENT, W6_DAYS)
    # Still away: Mon 15, Tue 16 and Wed 17 June missed on Thursday = 3 < 4 ...
    thursday = one(evaluate(rule, context(HOLIDAY, MON + timedelta(days=3), CLOSED)))
    assert (thursday.active, thursday.evidence["value"]) == (False, 3)
    # ... and Thu 18 the fourth on Friday: silent, as after any other weekend.
    friday = one(evaluate(rule, context(HOLIDAY, MON + timedelta(days=4), CLOSED)))
    assert (friday.active, friday.evidence["value"]) == (True, 4)
    # Back at work on Monday 15 June: nothing missed.
    back = fold([*daily_team(last=date(2026, 6, 5)), *daily_team(MON, MON)])
    tuesday = one(evaluate(rule, context(back, MON + timedelta(days=1), CLOSED)))
    assert (tuesday.active, tuesday.evidence["value"]) == (False, 0)


def test_a_past_holiday_is_not_a_usual_break() -> None:
    # The team took W3 (18..22 May) off, then worked until Tuesday 9 June. Declared, that
    # week is no break in the habit: threshold max(4, 2 x 0) = 4, and Wed 10..Mon 15 June
    # are 4 missed working days on Tuesday 16 June.
    days = [
        d for d in weekdays(W1, date(2026, 6, 9)) if not date(2026, 5, 18) <= d <= date(2026, 5, 22)
    ]
    state = fold(logins([*team(3), "champ"], days))
    tuesday = MON + timedelta(days=1)
    rule = with_calendar(ACCOUNT_SILENT, "2026-05-18..2026-05-22")
    declared = one(evaluate(rule, context(state, tuesday, CLOSED)))
    assert declared.active
    assert declared.evidence["baseline"] == 0
    # Undeclared, it was a five-working-day break, and four days of silence are nothing.
    undeclared = one(evaluate(ACCOUNT_SILENT, context(state, tuesday, CLOSED)))
    assert not undeclared.active
    assert (undeclared.evidence["baseline"], undeclared.evidence["threshold"]) == (5, 10)


def test_a_calendar_covers_the_accounts_of_its_time_zones() -> None:
    # The account's record names no calendar; Los Angeles is in America/*.
    covering = with_calendar(ACCOUNT_SILENT, W6_DAYS, timezones=["America/*"])
    assert not one(evaluate(covering, context(HOLIDAY, MON))).active
    elsewhere = with_calendar(ACCOUNT_SILENT, W6_DAYS, timezones=["Europe/*"])
    assert one(evaluate(elsewhere, context(HOLIDAY, MON))).active
    # Named by its record, a calendar applies wherever the account is.
    assert not one(evaluate(elsewhere, context(HOLIDAY, MON, CLOSED))).active


def test_an_account_record_names_its_calendar() -> None:
    record = {"account_id": "acme", "name": "Acme Corp", "licenses": 50, "calendar": "acme-closed"}
    account = decode_account(json.dumps({**record, "timezone": ZONE}).encode())
    assert isinstance(account, Account)
    assert account.calendar == "acme-closed"
    assert account.to_dict()["calendar"] == "acme-closed"
    # Optional: a record without one decodes (and encodes) as before.
    plain = decode_account(
        json.dumps({k: v for k, v in record.items() if k != "calendar"}).encode()
    )
    assert isinstance(plain, Account)
    assert plain.calendar is None
    assert "calendar" not in plain.to_dict()
    rejected = decode_account(json.dumps({**record, "calendar": 7}).encode())
    assert isinstance(rejected, Rejection)
    assert rejected.reason == "bad_type:calendar"
    rule = with_calendar(ACCOUNT_SILENT, W6_DAYS)
    assert not one(evaluate(rule, context(HOLIDAY, MON, account))).active


def test_a_champion_on_a_declared_holiday_is_not_silent() -> None:
    rule = with_calendar(CHAMPION_SILENT, W6_DAYS)
    finding = one(evaluate(rule, context(HOLIDAY, MON, CLOSED)))
    assert (finding.subject, finding.active, finding.evidence["value"]) == ("champ", False, 0)


def test_holidays_are_no_low_usage_days() -> None:
    # Busy W1..W5; W6 Monday..Wednesday closed (nobody), Thursday and Friday quiet (6%).
    state = usage(weekdays(W1, date(2026, 6, 5)), [date(2026, 6, 11), FRI])
    rule = with_calendar(LOW_USAGE, "2026-06-08..2026-06-10")
    finding = one(evaluate(rule, context(state, MON, CLOSED)))
    # The last five working days: Wed 3, Thu 4, Fri 5 (20%), Thu 11, Fri 12 (6%).
    assert not finding.active
    assert list(finding.evidence["values"]) == [
        "2026-06-03",
        "2026-06-04",
        "2026-06-05",
        "2026-06-11",
        "2026-06-12",
    ]
    assert one(evaluate(LOW_USAGE, context(state, MON, CLOSED))).active


def test_a_holiday_is_no_drop() -> None:
    # Ten users every working day, none in W6, declared closed.
    state = drop_state(10, 0)
    rule = with_calendar(USAGE_DROP, W6_DAYS)
    finding = one(evaluate(rule, context(state, MON, CLOSED)))
    # No working day left in the recent week: no verdict on a change.
    assert not finding.active
    assert finding.evidence["change"] is None
    assert one(evaluate(USAGE_DROP, context(state, MON, CLOSED))).active
    # The health tier reads only the days that were not off either: usage 1 (W5), all
    # 15 working days active, no trend without a recent working day: 1.0.
    health = with_calendar(HEALTH, W6_DAYS)
    assert one(evaluate(health, context(state, MON, TEN_CLOSED))).evidence["value"] == 1.0
    # Undeclared, the empty week halves the typical day of two weeks (usage 0.5 / 0.7),
    # activity is 15 of 20 and the trend 0: (0.4 * 0.714 + 0.3 * 0.75) / 0.9 = 0.567.
    undeclared = one(evaluate(HEALTH, context(state, MON, TEN_CLOSED)))
    assert undeclared.evidence["value"] == 0.567


def test_a_calendar_of_only_days_off_leaves_no_working_day() -> None:
    # Every day off, every year: nothing is missed, low or dropped; no endless search
    # for days that are not off.
    always = ("01-01..12-31",)
    tuesday = MON + timedelta(days=1)
    silent = one(
        evaluate(with_calendar(ACCOUNT_SILENT, *always), context(HOLIDAY, tuesday, CLOSED))
    )
    assert not silent.active
    mean_drop = with_calendar(MEAN_DROP, *always)
    assert (
        one(evaluate(mean_drop, context(drop_state(10, 0), MON, CLOSED))).evidence["change"] is None
    )
    assert evaluate(with_calendar(LOW_USAGE, *always), context(HOLIDAY, MON, CLOSED)) == []


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
    # champ-b missed W5 and W6: 10 working days >= max(4, ceil(2.0 * 0)) = 4.
    assert gone.active
    assert gone.evidence["value"] == 10
    assert gone.evidence["threshold"] == 4
    assert gone.evidence["last_active_day"] == "2026-05-29"
    assert gone.evidence["last_seen"] == {"champ-b": "2026-05-30T00:30:00Z"}
    assert gone.annotations["summary"] == (
        "Champion champ-b at Acme Corp has not been seen for 10 working days"
    )
    assert gone.fingerprint != stayed.fingerprint
    assert gone.severity == "warning"


def test_champion_on_a_short_break_is_not_silent() -> None:
    # champ-b took Wednesday..Friday of W6 off: 3 missed working days < 4.
    events = logins([*team(3), "champ-a"], weekdays(W1, FRI))
    events += logins(["champ-b"], weekdays(W1, date(2026, 6, 9)))
    findings = evaluate(CHAMPION_SILENT, context(fold(events), MON))
    assert [(f.subject, f.active, f.evidence["value"]) for f in findings] == [
        ("champ-a", False, 0),
        ("champ-b", False, 3),
    ]


def test_a_champion_is_judged_on_their_own_working_days() -> None:
    # The team also works at weekends (every day W1..W6), the champion only Monday to
    # Friday, and is last seen Wednesday 10 June. Evaluated Monday 15 June, Thu 11 and
    # Fri 12 are missed: the weekend, a working day of the account, is not the
    # champion's (their Saturdays and Sundays are 0 of 6 active).
    events = logins(team(3), weekdays(W1, SUN, range(7)))
    events += logins(["champ"], weekdays(W1, date(2026, 6, 10)))
    finding = one(evaluate(CHAMPION_SILENT, context(fold(events), MON)))
    assert not finding.active
    assert finding.evidence["working_weekdays"] == [0, 1, 2, 3, 4]
    assert (finding.evidence["value"], finding.evidence["threshold"]) == (2, 4)
    # The account itself works all week.
    account = one(evaluate(ACCOUNT_SILENT, context(fold(events), MON)))
    assert account.evidence["working_weekdays"] == [0, 1, 2, 3, 4, 5, 6]


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


def test_a_long_silence_keeps_low_usage_firing() -> None:
    """Busy every weekday, then silent from 1 June: four weeks on, its working days are
    still the weekdays it used to work (read up to its last active day, as silence reads
    them). Read up to yesterday, the silence wore them away until the alert resolved on
    an account that had not come back."""
    state = usage(weekdays(W1, date(2026, 5, 29)), [])
    finding = one(evaluate(LOW_USAGE, context(state, date(2026, 6, 29))))
    assert finding.active
    assert list(finding.evidence["values"].values()) == [0.0] * 5


@pytest.mark.parametrize(
    "account", [dataclasses.replace(ACCOUNT, licenses=0), None], ids=["zero-licenses", "no-account"]
)
def test_unknown_licenses_clear_the_usage_rate(account: Account | None) -> None:
    """A share of no licenses means nothing: the finding is inactive, saying why, so an
    alert from before the licenses went resolves rather than staying open for good."""
    state = usage(weekdays(W1, date(2026, 6, 5)), weekdays(W6, FRI))
    finding = one(evaluate(LOW_USAGE, context(state, MON, account)))
    assert not finding.active
    assert finding.evidence == {
        "metric": "daily_usage_rate",
        "value": None,
        "reason": "no licenses on record",
    }


def test_a_day_without_logins_gives_time_per_login_no_verdict() -> None:
    rule = LOW_USAGE.model_copy(update={"metric": "average_time_per_login", "value": 60.0})
    state = usage(weekdays(W1, date(2026, 6, 5)), [])
    assert evaluate(rule, context(state, MON)) == []


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

# The typical-day comparison (statistic: median) that usage-drop shipped with before it
# became a fitted trend (tests/unit/test_decline.py): still a supported configuration.
USAGE_DROP = DropRule.model_validate(
    {
        "name": "usage-drop",
        "kind": "drop",
        "metric": "active_users",
        "statistic": "median",
        "recent_days": 7,
        "baseline_gap_days": 21,
        "baseline_days": 14,
        "drop": 0.4,
        "for_days": 2,
        "min_baseline": 4,
        "exit_margin": 0.1,
        "summary": "{account_name}: a typical day's active users changed {change:.0%} "
        "against a month ago ({value} vs {baseline})",
    }
)


def drop_state(before: int, after: int) -> EngagementState:
    """``before`` users every working day W1..W5, ``after`` users in W6."""
    return fold(
        logins(team(before), weekdays(W1, date(2026, 6, 5)))
        + logins(team(after), weekdays(W6, FRI))
    )


def test_half_the_daily_users_is_a_drop() -> None:
    finding = one(evaluate(USAGE_DROP, context(drop_state(10, 5), MON)))
    # The typical (median) full working day: Monday..Friday (weekends are empty).
    # Recent: the 7 days ending Sunday 14 June, W6, median 5. Baseline: the 14 days
    # ending 21 days before the recent week starts, 4..17 May (W1, W2): median 10.
    # Change 5 / 10 - 1 = -0.5 <= -0.4, and the same in the window ending Saturday
    # 13 June (for_days 2).
    assert finding.active
    assert finding.evidence == {
        "metric": "active_users_7d_median",
        "value": 5.0,
        "baseline": 10.0,
        "threshold": -0.4,
        "change": -0.5,
    }
    assert finding.annotations["summary"] == (
        "Acme Corp: a typical day's active users changed -50% against a month ago (5.0 vs 10.0)"
    )


def test_a_smaller_drop_is_not_alarming() -> None:
    # 7 of 10: change -0.3 > -0.4.
    finding = one(evaluate(USAGE_DROP, context(drop_state(10, 7), MON)))
    assert not finding.active
    assert finding.evidence["change"] == -0.3


def test_small_account_drop_is_noise() -> None:
    # Three users every working day: a typical day of 3 < min_baseline 4, so even
    # losing two of them (-67%) says nothing.
    finding = one(evaluate(USAGE_DROP, context(drop_state(3, 1), MON)))
    assert not finding.active
    assert (finding.evidence["baseline"], finding.evidence["value"]) == (3.0, 1.0)
    assert finding.evidence["change"] == -0.667


def test_no_baseline_no_change() -> None:
    # Only W6 has users: no day before the recent week, so no baseline and no change.
    state = fold(logins(team(5), weekdays(W6, FRI)))
    finding = one(evaluate(USAGE_DROP, context(state, MON)))
    assert not finding.active
    assert (finding.evidence["baseline"], finding.evidence["change"]) == (0.0, None)


def test_two_days_off_are_no_drop_of_a_typical_day() -> None:
    # Ten users every working day, but nobody on Thursday 11 and Friday 12 June.
    days = [d for d in weekdays(W1, FRI) if d not in (date(2026, 6, 11), FRI)]
    state = fold(logins(team(10), days))
    # W6 is 10, 10, 10, 0, 0: its median working day is still 10 (change 0).
    finding = one(evaluate(USAGE_DROP, context(state, MON)))
    assert not finding.active
    assert (finding.evidence["value"], finding.evidence["change"]) == (10.0, 0.0)
    # Read as means, the same week is a drop: 30 / 7 = 4.286 against 200 / 28 = 7.143.
    finding = one(evaluate(MEAN_DROP.model_copy(update={"drop": 0.4}), context(state, MON)))
    assert finding.active
    assert finding.evidence["change"] == -0.4


def test_a_slow_decline_shows_against_a_month_ago() -> None:
    # Ten users in W1 and W2, then 9, 8, 7 and 5 in W3..W6: never 40% below the four
    # weeks just before, but half of what it was a month earlier.
    per_week = [10, 10, 9, 8, 7, 5]
    events = [
        e
        for week, users in enumerate(per_week)
        for e in logins(
            team(users), weekdays(W1 + timedelta(weeks=week), W1 + timedelta(weeks=week, days=4))
        )
    ]
    state = fold(events)
    finding = one(evaluate(USAGE_DROP, context(state, MON)))
    assert finding.active
    assert (finding.evidence["value"], finding.evidence["baseline"]) == (5.0, 10.0)
    # Against W2..W5 (means: (10 + 9 + 8 + 7) x 5 / 28 = 6.071) W6 (25 / 7 = 3.571) is -41%,
    # and with the old default of -50% no alert: the adjacent baseline follows the decline.
    adjacent = one(evaluate(MEAN_DROP, context(state, MON)))
    assert not adjacent.active
    assert adjacent.evidence["change"] == -0.412


def test_a_young_account_is_compared_with_its_first_days() -> None:
    # First seen Monday 18 May (W3): a month back is before its time, so the baseline
    # is its first 14 days, 18..31 May (median 10); W6 has 4: -60%.
    state = fold(
        logins(team(10), weekdays(date(2026, 5, 18), date(2026, 6, 5)))
        + logins(team(4), weekdays(W6, FRI))
    )
    finding = one(evaluate(USAGE_DROP, context(state, MON)))
    assert finding.active
    assert (finding.evidence["baseline"], finding.evidence["change"]) == (10.0, -0.6)


def test_a_drop_must_show_on_two_days_running() -> None:
    # Ten users every working day; only 2 on Thursday 11, Friday 12 and Monday 15 June.
    low = {date(2026, 6, 11), FRI, MON}
    days = weekdays(W1, MON)
    state = fold(logins(team(10), [d for d in days if d not in low]) + logins(team(2), low))
    tuesday = MON + timedelta(days=1)
    # The week ending Monday 15 (9..15 June: 10, 10, 2, 2, 2) has a typical day of 2,
    # the week ending Sunday 14 (8..12 June: 10, 10, 10, 2, 2) one of 10.
    finding = one(evaluate(USAGE_DROP, context(state, tuesday)))
    assert not finding.active
    assert finding.evidence["change"] == -0.8
    once = USAGE_DROP.model_copy(update={"for_days": 1})
    assert one(evaluate(once, context(state, tuesday))).active


def test_an_open_drop_resolves_only_above_the_exit_margin() -> None:
    # 13 of 20 (-35%) does not fire at -40%, but an open alert holds until the change
    # is back above -(0.4 - 0.1) = -30%; 15 of 20 (-25%) releases it.
    ctx = context(drop_state(20, 13), MON)
    assert not one(evaluate(USAGE_DROP, ctx)).active
    holding = dataclasses.replace(ctx, open_rules=frozenset({"usage-drop"}))
    assert one(evaluate(USAGE_DROP, holding)).active
    released = dataclasses.replace(holding, state=drop_state(20, 15))
    assert not one(evaluate(USAGE_DROP, released)).active


MEAN_DROP = DropRule(name="usage-drop", kind="drop", drop=0.5)


def test_mean_drop_against_the_four_weeks_before() -> None:
    finding = one(evaluate(MEAN_DROP, context(drop_state(10, 5), MON)))
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


def test_mean_drop_of_a_tiny_account_is_noise() -> None:
    # One user every working day: baseline 20 / 28 = 0.714 < min_baseline 2, so even
    # losing that user entirely (-100%) says nothing.
    finding = one(evaluate(MEAN_DROP, context(drop_state(1, 0), MON)))
    assert not finding.active
    assert finding.evidence["baseline"] == 0.714
    assert finding.evidence["value"] == 0.0
    assert finding.evidence["change"] == -1.0


@pytest.mark.parametrize("statistic", ["mean", "median"])
def test_a_drop_held_two_days_looks_back_a_local_day_on_a_25_hour_day(statistic: str) -> None:
    """``for_days`` compares whole local days: on the day clocks go back (25 hours in
    Berlin), 24 hours before its late evening is still that day, not the day before."""
    rule = DropRule.model_validate(
        {"name": "short-drop", "kind": "drop", "statistic": statistic, "drop": 0.5,
         "recent_days": 1, "baseline_days": 7, "min_baseline": 1, "for_days": 2}
    )  # fmt: skip
    berlin = ZoneInfo("Europe/Berlin")

    def login(user: str, day: date) -> UsageEvent:
        when = datetime.combine(day, time(10), berlin).astimezone(UTC)
        return UsageEvent(f"{user}-{day}", LOGIN, "acme", user, "user", when, {})

    days = [date(2026, 10, 10) + timedelta(days=n) for n in range(14)]  # to the 23rd
    events = [login(f"u{n}", day) for day in days for n in range(10)]
    events.append(login("u0", date(2026, 10, 24)))  # down on the 24th only
    state = EngagementState("acme", timezone="Europe/Berlin")
    fold_events(state, sorted(events, key=lambda e: (e.occurred_at, e.event_id)))
    morning = one(evaluate(rule, Context(state, None, datetime(2026, 10, 25, 9, tzinfo=UTC))))
    evening = Context(state, None, datetime(2026, 10, 25, 22, tzinfo=UTC))  # 23:00 CET
    assert evening.today == date(2026, 10, 25)
    assert not morning.active  # the window ending on the 23rd had not dropped
    assert one(evaluate(rule, evening)) == morning


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


def test_a_one_seat_account_adopts_with_its_one_user() -> None:
    """min_users 2 can never be met by an account with one licence: its one user using
    reports every day is adoption, not a weekly 'has not adopted' for ever."""
    state = reports_used(["u1"], weekdays(W6, FRI))
    one_seat = dataclasses.replace(ACCOUNT, licenses=1)
    assert not one(evaluate(REPORTS, context(state, MON, one_seat))).active
    assert one(evaluate(REPORTS, context(state, MON))).active  # 50 seats: one is not enough


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
def test_no_contract_start_clears_the_onboarding_rules(name: str) -> None:
    """Their deadline counts from it: without it (removed from the record) they find
    nothing active, saying why; without a record at all they give no verdict."""
    account = dataclasses.replace(ACCOUNT, contract_start=None)
    finding = one(evaluate(RULES[name], context(reports_used([], []), MON, account)))
    assert not finding.active
    assert finding.evidence["reason"] == "no contract_start on record"
    assert evaluate(RULES[name], context(reports_used([], []), MON, None)) == []


def test_time_to_value_is_not_judged_on_an_onboarding_before_our_history() -> None:
    account = dataclasses.replace(ACCOUNT, contract_start=date(2026, 1, 5))  # months before
    finding = one(evaluate(SLOW_VALUE, context(reports_used([], []), MON, account)))
    assert not finding.active
    assert finding.evidence["reason"] == "onboarding before our history"


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
    if active:
        assert finding.annotations["summary"] == (
            f"Acme Corp: no value milestone {waited} days after contract start"
        )
    else:  # a text nobody is shown is not rendered
        assert finding.annotations == {}


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


def test_a_champions_answer_sent_without_a_role_is_theirs_and_keeps_them_champion() -> None:
    """Producers often send NPS answers from a survey tool that knows no roles: the
    answer is the champion's all the same, and it must not turn them into a plain user
    whose silence nobody watches (DOMAIN.md: a detractor is a key stakeholder's 0-6)."""
    events = logins([*team(3), "champ"], weekdays(W1, W6))
    answer = event(NPS, "champ", W6 + timedelta(days=1), hour=12, score=3, comment="leaving")
    events.append(dataclasses.replace(answer, role="user"))  # no role on the answer
    state = fold(events)
    assert state.users["champ"].role == "champion"
    finding = one(evaluate(DETRACTOR, context(state, MON)))
    assert finding.active
    assert finding.evidence["answers"] == [
        {"user_id": "champ", "role": "champion", "score": 3, "comment": "leaving"}
    ]
    # ... and their silence since is watched.
    silent = evaluate(CHAMPION_SILENT, context(state, date(2026, 6, 19)))
    assert [f.subject for f in silent if f.active] == ["champ"]


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
TEN_CLOSED = dataclasses.replace(CLOSED, licenses=10)


def test_healthy_account_is_green() -> None:
    # 8 of 10 licenses every working day for six weeks and one promoter answer.
    events = [*logins(team(8), weekdays(W1, FRI)), event(NPS, "u1", W5, score=10)]
    finding = one(evaluate(HEALTH, context(fold(events), MON, TEN)))
    # usage: the typical full working day of the last two weeks, 0.8: min(1, 0.8 / 0.7) = 1;
    # activity 20 login days / 20 working days = 1; trend: W6's typical day (8) against
    # the 28 days before (8): 1 + 0 = 1; nps: one promoter and three neutral answers
    # to start from, (1 + 0.5 x 3) / 4 = 0.625.
    # score 0.4 + 0.3 + 0.2 + 0.1 x 0.625 = 0.9625
    assert not finding.active
    assert finding.severity == "warning"
    assert finding.evidence == {
        "metric": "health_score",
        "value": 0.963,
        "threshold": 0.5,
        "tier": "green",
        "components": {"usage": 1.0, "activity": 1.0, "trend": 1.0, "nps": 0.625},
    }
    assert finding.annotations == {}  # green: no alert, no text to render


def fading() -> EngagementState:
    """8 users every working day W1..W4, then only u1 every working day W5..W6, no NPS."""
    return fold(
        logins(team(8), weekdays(W1, date(2026, 5, 29))) + logins(["u1"], weekdays(W5, FRI))
    )


def test_fading_account_is_yellow() -> None:
    finding = one(evaluate(HEALTH, context(fading(), MON, TEN)))
    # Full working days: Monday..Friday (weekends are empty).
    # usage: the typical day of 1..14 June is 1 of 10: 0.1 / 0.7 = 0.142857
    # activity: 20 login days / 20 working days = 1
    # trend: W6's typical day 1; 11 May..7 June: fifteen days of 8, five of 1: median 8;
    #        change 1 / 8 - 1 = -0.875 -> 0.125
    # no NPS: weights 0.4 + 0.3 + 0.2 = 0.9;
    # score (0.4 * 0.142857 + 0.3 * 1 + 0.2 * 0.125) / 0.9 = 0.382143 / 0.9 = 0.425
    assert finding.active
    assert finding.severity == "warning"
    assert finding.evidence["tier"] == "yellow"
    assert finding.evidence["value"] == 0.425
    assert finding.evidence["components"] == {"usage": 0.143, "activity": 1.0, "trend": 0.125}


def test_fading_account_read_by_means() -> None:
    rule = HEALTH.model_copy(update={"statistic": "mean", "nps_prior_answers": 0})
    finding = one(evaluate(rule, context(fading(), MON, TEN)))
    # usage: last 7 working days at 1/10 -> 0.1 / 0.7 = 0.142857
    # activity: 20 login days / 20 working days = 1
    # trend: recent W6 5/7 = 0.714; baseline W2..W5 (3 x 40 + 5) / 28 = 4.464;
    #        change 0.714 / 4.464 - 1 = -0.84 -> 0.16
    # score (0.4 * 0.142857 + 0.3 * 1 + 0.2 * 0.16) / 0.9 = 0.389143 / 0.9 = 0.432
    assert finding.evidence["value"] == 0.432
    assert finding.evidence["components"] == {"usage": 0.143, "activity": 1.0, "trend": 0.16}


def test_two_days_off_do_not_turn_an_account_yellow() -> None:
    # 4 of 10 licenses every working day, none on Thursday 11 and Friday 12 June.
    off = (date(2026, 6, 11), FRI)
    state = fold(logins(team(4), [d for d in weekdays(W1, FRI) if d not in off]))
    typical = one(evaluate(HEALTH, context(state, MON, TEN)))
    # Typical days: usage 0.4 / 0.7 = 0.571, trend 1 (4 against 4), activity 18 / 20:
    # (0.4 * 0.571 + 0.3 * 0.9 + 0.2 * 1) / 0.9 = 0.776.
    assert (typical.active, typical.evidence["value"]) == (False, 0.776)
    # Means over the same days: usage of the last 7 working days (Thu 4..Fri 12 June)
    # 0.4 x 5 / 7 / 0.7 = 0.408, trend 12/7 against 80/28: 0.6;
    # (0.4 * 0.408 + 0.3 * 0.9 + 0.2 * 0.6) / 0.9 = 0.615: two days off cost 0.16.
    rule = HEALTH.model_copy(update={"statistic": "mean"})
    means = one(evaluate(rule, context(state, MON, TEN)))
    assert means.evidence["value"] == 0.615


def test_collapsing_account_is_red_and_critical() -> None:
    # 8 users every working day W1..W4; in W5 and W6 only the champion, on Mondays and
    # Fridays, who answers NPS 0 on Wednesday 10 June (an answer, not a login).
    events = logins([*team(7), "champ"], weekdays(W1, date(2026, 5, 29)))
    events += logins(["champ"], weekdays(W5, FRI, which={0, 4}))
    events.append(event(NPS, "champ", date(2026, 6, 10), hour=18, score=0))
    finding = one(evaluate(HEALTH, context(fold(events), MON, TEN)))
    # usage: 1..14 June's working days have a login on 4 of 10: typical rate 0 -> 0
    # activity: login days in 18 May..14 Jun: 5 + 5 + 2 + 2 = 14 of 20 = 0.7
    # trend: W6's active users 1, 0, 1 (the answer), 0, 1: median 1; 11 May..7 June
    #        has fifteen days of 8: median 8; change -0.875 -> 0.125
    # nps: one detractor and three neutral answers: (0 + 1.5) / 4 = 0.375
    # score 0.4 * 0 + 0.3 * 0.7 + 0.2 * 0.125 + 0.1 * 0.375 = 0.2725 < 0.35: red
    assert finding.active
    assert finding.severity == "critical"
    assert finding.evidence["tier"] == "red"
    assert finding.evidence["value"] == 0.273
    assert finding.evidence["components"] == {
        "usage": 0.0,
        "activity": 0.7,
        "trend": 0.125,
        "nps": 0.375,
    }
    assert finding.annotations["summary"] == "Acme Corp health is red (0.273)"


def test_one_answer_does_not_swing_the_nps_part() -> None:
    events = [*logins(team(8), weekdays(W1, FRI)), event(NPS, "boss", W5, score=0)]
    state = fold(events)
    parts = one(evaluate(HEALTH, context(state, MON, TEN))).evidence["components"]
    assert parts["nps"] == 0.375  # (0 + 3 x 0.5) / 4
    raw = HEALTH.model_copy(update={"nps_prior_answers": 0})
    assert one(evaluate(raw, context(state, MON, TEN))).evidence["components"]["nps"] == 0.0


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
    assert render(summary, {"account_name": "Acme Corp", "value": None}) == rendered


def test_a_lookup_that_fails_leaves_its_placeholder_as_is() -> None:
    """A key the evidence lacks, or an index into a value that has none, must not make
    the rule fail at every evaluation (the rules file passed check)."""
    fields = {"components": {"usage": 0.5}, "value": None, "nope": "x"}
    template = "{components[usage]:.0%} {components[nope]} {value[0]} {nope[5]}"
    assert render(template, fields) == "50% {components[nope]} {value[0]} {nope[5]}"


@pytest.mark.parametrize(
    "summary",
    ["{account_name} scored {value", "{0} at {account_name}", "{value!z}", "{account.name}"],
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
    # The fading account scores 0.425 (see test_fading_account_is_yellow). With green at
    # 0.42 it is green on entry, but an open alert stays until 0.42 + 0.05 = 0.47.
    rule = HEALTH.model_copy(update={"green": 0.42, "yellow": 0.3, "exit_margin": 0.05})
    ctx = context(fading(), MON, TEN)
    entering = one(evaluate(rule, ctx))
    assert (entering.active, entering.evidence["tier"]) == (False, "green")
    holding = one(evaluate(rule, dataclasses.replace(ctx, open_rules=frozenset({rule.name}))))
    assert (holding.active, holding.evidence["tier"]) == (True, "yellow")
    loose = rule.model_copy(update={"exit_margin": 0.0})
    released = one(evaluate(loose, dataclasses.replace(ctx, open_rules=frozenset({rule.name}))))
    assert not released.active


@settings(max_examples=200, deadline=None)
@given(
    weekdays=st.frozensets(st.integers(0, 6)),
    offsets=st.sets(st.integers(0, 60), min_size=1, max_size=30),
    after=st.integers(1, 10),
    holiday=st.booleans(),
)
def test_gaps_are_the_working_days_between_active_days(
    weekdays: frozenset[int], offsets: set[int], after: int, holiday: bool
) -> None:
    """The silence rules' one walk counts what counting day by day counts (``between``)
    for every pair and for the last active day and today, with or without days off."""
    start = date(2026, 10, 1)
    days = [start + timedelta(days=n) for n in sorted(offsets)]
    today = days[-1] + timedelta(days=after)
    calendar = Calendar(days=("2026-10-05..2026-10-09", "10-20"))
    off = DaysOff(("autumn",), (calendar,)) if holiday else DaysOff()
    working = WorkingDays(weekdays, off)
    usual = max((between(working, a, b) for a, b in itertools.pairwise(days)), default=0)
    assert working.gaps(days, today) == (usual, between(working, days[-1], today))


def between(working: WorkingDays, after: date, before: date) -> int:
    """The reference: working days strictly between two dates, one by one."""
    count = 0
    day = after + timedelta(days=1)
    while day < before:
        count += day in working
        day += timedelta(days=1)
    return count


def test_the_days_the_shipped_rules_read_fit_the_default_horizon() -> None:
    from alerts.evaluate import days_kept_needed
    from alerts.rules import load_rules
    from config.settings import Settings

    needed = days_kept_needed(load_rules(SHIPPED).rules)
    assert needed == 44  # 43 days back from yesterday's window's start, and today
    assert Settings().horizon_days >= needed
