"""The demo fleet is deterministic, follows the contracts, and shows each behaviour."""

from __future__ import annotations

import json
import re
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from itertools import islice
from zoneinfo import ZoneInfo

import pytest

from stream.simulate import (
    _SEGMENTS,
    BEHAVIOURS,
    ONBOARDING_DAYS,
    FleetSpec,
    SimAccount,
    build_fleet,
    generate_events,
)

# Six weeks from a Monday, across the EU (25 Oct) and US (1 Nov) DST changes.
START = datetime(2026, 10, 12, tzinfo=UTC)
END = START + timedelta(days=42)
SPAN = END - START
AS_OF = END.date()

EVENT_TYPES = {
    "login",
    "session_end",
    "feature_used",
    "nps_response",
    "value_milestone",
    "license_change",
}
RECORD_KEYS = {
    "account_id",
    "name",
    "licenses",
    "owner_email",
    "slack_channel",
    "segment",
    "arr",
    "timezone",
    "contract_start",
    "renewal_date",
    "status",
}
RFC3339_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")

Event = dict[str, object]


@pytest.fixture(scope="module")
def fleet() -> tuple[SimAccount, ...]:
    return build_fleet(FleetSpec(as_of=AS_OF))


@pytest.fixture(scope="module")
def events(fleet: tuple[SimAccount, ...]) -> list[Event]:
    return list(generate_events(fleet, START, END))


def when(event: Event) -> datetime:
    return datetime.fromisoformat(str(event["occurred_at"]).replace("Z", "+00:00"))


def of_behaviour(
    fleet: tuple[SimAccount, ...], events: list[Event], behaviour: str
) -> dict[SimAccount, list[Event]]:
    accounts = [account for account in fleet if account.behaviour == behaviour]
    assert accounts, f"the default fleet has no {behaviour} account"
    return {a: [e for e in events if e["account_id"] == a.account_id] for a in accounts}


# --- determinism -------------------------------------------------------------------


def test_same_spec_builds_the_same_fleet() -> None:
    assert build_fleet(FleetSpec(seed=3)) == build_fleet(FleetSpec(seed=3))
    assert build_fleet(FleetSpec(seed=3)) != build_fleet(FleetSpec(seed=4))


def test_same_seed_generates_the_same_events(
    fleet: tuple[SimAccount, ...], events: list[Event]
) -> None:
    assert list(generate_events(fleet, START, END, seed=7)) == events
    other = generate_events(fleet, START, END, seed=8)  # lazy: the first day is enough
    assert list(islice(other, 500)) != events[:500]


# --- the fleet ---------------------------------------------------------------------


def test_fleet_size_ids_and_users(fleet: tuple[SimAccount, ...]) -> None:
    assert len(fleet) == 36
    assert len({a.account_id for a in fleet}) == len(fleet)
    assert len({a.name for a in fleet}) == len(fleet)
    user_ids = [u.user_id for a in fleet for u in a.users]
    assert len(set(user_ids)) == len(user_ids)
    for account in fleet:
        assert re.fullmatch(r"acct-\d{3}-[a-z0-9-]+", account.account_id)
        assert 5 <= len(account.users) <= 60
        assert account.licenses >= len(account.users)
        assert any(u.role == "champion" for u in account.users)
        assert {u.role for u in account.users} <= {"champion", "admin", "executive", "user"}
    assert any(a.licenses > len(a.users) for a in fleet)


def test_records_follow_the_account_contract(fleet: tuple[SimAccount, ...]) -> None:
    for account in fleet:
        record = account.record()
        assert set(record) == RECORD_KEYS
        json.dumps(record)  # JSON-ready as it is
        assert record["segment"] in {"enterprise", "mid-market", "smb"}
        assert isinstance(record["arr"], int) and record["arr"] > 0
        ZoneInfo(str(record["timezone"]))
        start = date.fromisoformat(str(record["contract_start"]))
        renewal = date.fromisoformat(str(record["renewal_date"]))
        assert start <= AS_OF < renewal
        expected = "onboarding" if account.behaviour == "onboarding" else "active"
        assert record["status"] == expected


def test_onboarding_contracts_start_just_before_activity(fleet: tuple[SimAccount, ...]) -> None:
    for account in (a for a in fleet if a.behaviour == "onboarding"):
        assert AS_OF - timedelta(days=14) <= account.contract_start <= AS_OF


def test_a_mix_of_behaviours(fleet: tuple[SimAccount, ...]) -> None:
    counts = Counter(a.behaviour for a in fleet)
    assert set(counts) == set(BEHAVIOURS)
    assert counts["healthy"] + counts["weekday_only"] >= len(fleet) * 0.6


def test_negative_fleet_size_is_rejected() -> None:
    with pytest.raises(ValueError, match="accounts"):
        FleetSpec(accounts=-1)


def test_seats_multiply_every_team(fleet: tuple[SimAccount, ...]) -> None:
    bigger = build_fleet(FleetSpec(as_of=AS_OF, seats=3))
    assert build_fleet(FleetSpec(as_of=AS_OF, seats=1)) == fleet
    for account in bigger:
        (low, high), _ = _SEGMENTS[account.segment]
        assert len(account.users) % 3 == 0
        assert 3 * low <= len(account.users) <= 3 * high
        champions = [u.role for u in account.users].count("champion")
        assert champions == (2 if account.segment == "enterprise" else 1)
    with pytest.raises(ValueError, match="seats"):
        FleetSpec(seats=0)


# --- the events --------------------------------------------------------------------


def test_every_event_follows_the_event_contract(events: list[Event]) -> None:
    assert events
    for event in events:
        assert event["schema"] == 1
        for key in ("event_id", "account_id"):
            assert isinstance(event[key], str) and 0 < len(str(event[key])) <= 128
        assert event["type"] in EVENT_TYPES
        if event["type"] != "license_change":
            assert isinstance(event["user_id"], str) and event["user_id"]
        assert isinstance(event.get("role", "user"), str)
        assert RFC3339_UTC.fullmatch(str(event["occurred_at"]))
        props = event["properties"]
        assert isinstance(props, dict)
        check_properties(str(event["type"]), props)


def check_properties(kind: str, props: dict[str, object]) -> None:
    if kind == "session_end":
        duration = props["duration_s"]
        assert isinstance(duration, int | float) and not isinstance(duration, bool)
        assert duration >= 0
    elif kind == "feature_used":
        assert isinstance(props["feature"], str) and props["feature"]
    elif kind == "nps_response":
        score = props["score"]
        assert isinstance(score, int) and not isinstance(score, bool) and 0 <= score <= 10
        assert isinstance(props.get("comment", ""), str)
    elif kind == "value_milestone":
        assert isinstance(props["milestone"], str) and props["milestone"]
    elif kind == "license_change":
        licenses = props["licenses"]
        assert isinstance(licenses, int) and not isinstance(licenses, bool) and licenses >= 0


def test_every_event_type_occurs(events: list[Event]) -> None:
    assert {e["type"] for e in events} == EVENT_TYPES


def test_events_are_ordered_and_inside_the_window(events: list[Event]) -> None:
    times = [when(e) for e in events]
    assert times == sorted(times)
    assert times[0] >= START and times[-1] < END


def test_event_ids_are_unique(events: list[Event]) -> None:
    assert len({e["event_id"] for e in events}) == len(events)


def test_each_account_reaches_its_milestone_once(
    fleet: tuple[SimAccount, ...], events: list[Event]
) -> None:
    milestones = Counter(e["account_id"] for e in events if e["type"] == "value_milestone")
    assert milestones == {a.account_id: 1 for a in fleet}


def test_a_window_shorter_than_a_day_still_works(fleet: tuple[SimAccount, ...]) -> None:
    short = list(generate_events(fleet, START + timedelta(hours=13), START + timedelta(hours=15)))
    assert all(START + timedelta(hours=13) <= when(e) < START + timedelta(hours=15) for e in short)
    assert list(generate_events(fleet, START, START)) == []


def test_naive_times_are_rejected(fleet: tuple[SimAccount, ...]) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        list(generate_events(fleet, datetime(2026, 10, 12), datetime(2026, 10, 13)))


# --- behaviours --------------------------------------------------------------------


def test_weekday_only_accounts_rest_at_local_weekends(
    fleet: tuple[SimAccount, ...], events: list[Event]
) -> None:
    for account, own in of_behaviour(fleet, events, "weekday_only").items():
        assert own
        tz = ZoneInfo(account.timezone)
        assert all(when(e).astimezone(tz).weekday() < 5 for e in own)


def test_healthy_accounts_use_weekends_lightly(
    fleet: tuple[SimAccount, ...], events: list[Event]
) -> None:
    logins = [
        (account, e)
        for account, own in of_behaviour(fleet, events, "healthy").items()
        for e in own
        if e["type"] == "login"
    ]
    weekend = [e for a, e in logins if when(e).astimezone(ZoneInfo(a.timezone)).weekday() >= 5]
    assert 0 < len(weekend) < len(logins) * 0.1


def test_going_quiet_accounts_stop(fleet: tuple[SimAccount, ...], events: list[Event]) -> None:
    late = START + SPAN * 0.75
    for own in of_behaviour(fleet, events, "going_quiet").values():
        assert own
        assert all(when(e) < late for e in own)


def test_champion_leaving_accounts_lose_only_their_champions(
    fleet: tuple[SimAccount, ...], events: list[Event]
) -> None:
    late = START + SPAN * 0.65
    for own in of_behaviour(fleet, events, "champion_leaving").values():
        assert any(e["role"] == "champion" for e in own)
        after = [e for e in own if when(e) >= late]
        assert after and all(e.get("role") != "champion" for e in after)


def test_slow_decline_accounts_log_in_less_over_time(
    fleet: tuple[SimAccount, ...], events: list[Event]
) -> None:
    third = START + SPAN / 3
    for own in of_behaviour(fleet, events, "slow_decline").values():
        logins = [when(e) for e in own if e["type"] == "login"]
        early = sum(1 for t in logins if t < third)
        late = sum(1 for t in logins if t >= END - SPAN / 3)
        assert late < early * 0.7


def test_onboarding_accounts_start_late(fleet: tuple[SimAccount, ...], events: list[Event]) -> None:
    first_day = END - timedelta(days=ONBOARDING_DAYS)
    for own in of_behaviour(fleet, events, "onboarding").values():
        assert own
        assert all(when(e) >= first_day for e in own)
