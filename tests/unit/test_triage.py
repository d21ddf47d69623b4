"""Triage, the pure part: ranking, quiet against habit, snoozes, acks and the lists."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import pytest

from alerts.lifecycle import Finding, transition
from alerts.triage import (
    Ack,
    InputError,
    ResolveRequest,
    Silence,
    account_entry,
    open_alerts,
    parse_time,
    priority,
    quiet_for,
    silence_for,
    silent_accounts,
    snooze_until,
)
from stream.accounts import Account
from stream.engagement import EngagementState, fold_events
from stream.events import EventType, UsageEvent

NOW = datetime(2026, 6, 15, 15, tzinfo=UTC)  # Monday 15 June 2026, 15:00 UTC
REPO = Path(__file__).resolve().parents[2]


def rank(**kwargs: Any) -> float:
    base: dict[str, Any] = {
        "silent_gaps": 1.0,
        "arr": 50_000.0,
        "days_to_renewal": 120,
        "tier": "yellow",
        "severities": ["warning"],
    }
    return priority(**{**base, **kwargs})


# --- ranking ---------------------------------------------------------------------------


def test_quieter_against_habit_ranks_higher_up_to_a_cap() -> None:
    assert rank(silent_gaps=0.0) < rank(silent_gaps=1.0) < rank(silent_gaps=3.0)
    assert rank(silent_gaps=4.0) == rank(silent_gaps=40.0)  # capped: not a runaway term
    assert rank(silent_gaps=None) == rank(silent_gaps=0.0)


def test_arr_counts_on_a_log_scale() -> None:
    assert rank(arr=5_000.0) < rank(arr=50_000.0) < rank(arr=500_000.0)
    # Each tenfold step is worth the same.
    step = rank(arr=50_000.0) - rank(arr=5_000.0)
    assert rank(arr=500_000.0) - rank(arr=50_000.0) == pytest.approx(step, abs=1e-3)
    assert rank(arr=None) == rank(arr=0.0) == rank(arr=500.0)


def test_a_closer_renewal_ranks_higher_and_an_overdue_one_highest() -> None:
    assert rank(days_to_renewal=None) == rank(days_to_renewal=400) < rank(days_to_renewal=90)
    assert rank(days_to_renewal=90) < rank(days_to_renewal=10) < rank(days_to_renewal=0)
    assert rank(days_to_renewal=-5) == rank(days_to_renewal=0)


def test_worse_health_and_worse_alerts_rank_higher() -> None:
    assert rank(tier=None) == rank(tier="green") < rank(tier="yellow") < rank(tier="red")
    assert rank(severities=[]) < rank(severities=["info"]) < rank(severities=["warning"])
    assert rank(severities=["warning"]) < rank(severities=["critical"])
    # The worst alert counts, not how many rules one problem tripped.
    assert rank(severities=["critical", "warning", "info"]) == rank(severities=["critical"])


def test_the_score_stays_between_0_and_100() -> None:
    assert priority(None, None, None, None, []) == 0.0
    assert priority(10.0, 5e6, -3, "red", ["critical"]) == 100.0


def test_a_big_quiet_account_renewing_soon_outranks_a_small_chatty_one() -> None:
    big = priority(3.0, 240_000.0, 30, "red", ["critical"])
    small = priority(0.5, 8_000.0, 300, "green", ["info"])
    middling = priority(1.5, 60_000.0, 150, "yellow", ["warning"])
    assert big > middling > small


# --- quiet against habit ---------------------------------------------------------------


def weekday_logins(first: date, last: date) -> EngagementState:
    """One user logging in on every weekday from ``first`` to ``last`` (UTC account)."""
    state = EngagementState("acme")
    events = []
    day = first
    while day <= last:
        if day.weekday() < 5:
            at = datetime.combine(day, time(10), UTC)
            events.append(
                UsageEvent(f"e-{day}", EventType.LOGIN, "acme", "champ", "champion", at, {})
            )
        day += timedelta(days=1)
    fold_events(state, events)
    return state


def test_quiet_counts_missed_working_days_against_the_usual_gap() -> None:
    # Weekdays from 4 May to Tuesday 2 June, then nothing: Wed 3 .. Fri 12 June are
    # 8 missed working days (weekends do not count); the usual gap is 0 working days.
    quiet = quiet_for(weekday_logins(date(2026, 5, 4), date(2026, 6, 2)), NOW)
    assert quiet.last_active_day == date(2026, 6, 2)
    assert (quiet.days_silent, quiet.usual_gap_days, quiet.gaps) == (8, 0, 8.0)


def test_activity_today_means_not_silent() -> None:
    quiet = quiet_for(weekday_logins(date(2026, 5, 4), NOW.date()), NOW)
    assert quiet.last_active_day == NOW.date() and quiet.days_silent == 0


def test_an_account_without_activity_has_no_quiet_measure() -> None:
    quiet = quiet_for(EngagementState("new"), NOW)
    assert (quiet.last_active_day, quiet.days_silent, quiet.gaps) == (None, None, None)


def test_the_index_entry_carries_what_triage_shows() -> None:
    state = weekday_logins(date(2026, 5, 4), date(2026, 6, 2))
    account = Account(
        "acme",
        "Acme Corp",
        20,
        owner_email="dana@example.com",
        segment="enterprise",
        arr=120_000.0,
        renewal_date=date(2026, 7, 15),
    )
    alert, _ = transition(
        None,
        Finding("account-silent", "acme", True, "critical", annotations={"summary": "quiet"}),
        NOW,
    )
    assert alert is not None
    health = {"metric": "health_score", "tier": "red", "value": 0.2}
    entry = account_entry(state, account, [alert], health, NOW)
    assert entry["name"] == "Acme Corp" and entry["owner"] == "dana@example.com"
    assert entry["days_to_renewal"] == 30 and entry["tier"] == "red"
    assert (entry["days_silent"], entry["usual_gap_days"]) == (8, 0)
    assert [a["fingerprint"] for a in entry["open_alerts"]] == [alert.fingerprint]
    assert entry["open_alerts"][0]["summary"] == "quiet"
    days = entry["daily_active_users"]
    assert len(days) == 28 and days[-1] == {"date": "2026-06-15", "users": 0}
    assert {"date": "2026-06-02", "users": 1} in days
    assert entry["stakeholders_last_seen"] == {"champ": "2026-06-02T10:00:00Z"}
    assert entry["priority"] == priority(8.0, 120_000.0, 30, "red", ["critical"])
    paused = account_entry(state, Account("acme", "Acme", 20, status="paused"), [], None, NOW)
    assert paused["priority"] == 0.0


# --- snoozes and acks ------------------------------------------------------------------


def silence(**kwargs: Any) -> Silence:
    base: dict[str, Any] = {
        "id": "s1",
        "until": NOW + timedelta(hours=1),
        "author": "dana",
        "reason": "on holiday",
        "created_at": NOW,
    }
    return Silence(**{**base, **kwargs})


def test_a_silence_names_an_alert_or_an_account_never_both_or_neither() -> None:
    with pytest.raises(ValueError, match="either"):
        silence()
    with pytest.raises(ValueError, match="either"):
        silence(fingerprint="fp", account_id="acme")
    with pytest.raises(ValueError, match="rule"):
        silence(fingerprint="fp", rule="account-silent")


def test_silences_match_by_fingerprint_account_or_account_and_rule() -> None:
    by_fp = silence(fingerprint="fp1")
    by_account = silence(id="s2", account_id="acme")
    by_rule = silence(id="s3", account_id="acme", rule="usage-drop")
    assert by_fp.matches("fp1", "other", "x") and not by_fp.matches("fp2", "acme", "x")
    assert by_account.matches("any", "acme", "any") and not by_account.matches("fp1", "b", "x")
    assert by_rule.matches("fp9", "acme", "usage-drop")
    assert not by_rule.matches("fp9", "acme", "account-silent")


def test_silence_for_ignores_expired_ones_and_picks_the_longest() -> None:
    short = silence(fingerprint="fp1", until=NOW + timedelta(minutes=5))
    long = silence(id="s2", account_id="acme", until=NOW + timedelta(days=2))
    over = silence(id="s3", fingerprint="fp1", until=NOW)
    assert silence_for([short, long, over], "fp1", "acme", "r", NOW) == long
    assert silence_for([short, over], "fp1", "acme", "r", NOW + timedelta(minutes=5)) is None
    assert silence_for([over], "fp1", "acme", "r", NOW - timedelta(seconds=1)) == over


def test_models_survive_a_round_trip_through_json_data() -> None:
    s = silence(account_id="acme", rule="usage-drop")
    assert Silence.from_dict(s.to_dict()) == s
    made = silence(account_id="acme", made_from="fp1", made_for="acme")
    assert Silence.from_dict(made.to_dict()) == made
    ack = Ack("fp1", "dana", NOW, "calling them", starts_at="2026-06-10T00:00:00Z")
    assert Ack.from_dict(ack.to_dict()) == ack
    request = ResolveRequest("fp1", "acme", "dana", "fine", NOW)
    assert ResolveRequest.from_dict(request.to_dict()) == request


def test_snooze_until_takes_a_time_or_a_duration_and_names_the_bad_field() -> None:
    assert snooze_until(NOW, None, "3d") == NOW + timedelta(days=3)
    assert snooze_until(NOW, "2026-12-01T00:00Z", None) == datetime(2026, 12, 1, tzinfo=UTC)
    assert snooze_until(NOW, "2026-06-16T02:00:00+02:00", None) == datetime(2026, 6, 16, tzinfo=UTC)
    cases = [
        (None, None, "until"),
        ("2026-12-01T00:00Z", "3d", "until"),
        ("tomorrow", None, "until"),
        ("2026-12-01T00:00", None, "until"),  # no offset
        ("2026-01-01T00:00Z", None, "until"),  # in the past
        (None, "3 days", "duration"),
        (None, "800d", "duration"),  # too long
        (None, "99999999999w", "duration"),  # past what a timedelta holds
        ("9999-12-31T23:59:59-01:00", None, "until"),  # past year 9999 in UTC
        ("0001-01-01T00:00:00+01:00", None, "until"),  # before year 1 in UTC
    ]
    for until, duration, field in cases:
        with pytest.raises(InputError) as caught:
            snooze_until(NOW, until, duration)
        assert caught.value.field == field, (until, duration)


def test_parse_time_needs_an_offset() -> None:
    assert parse_time("2026-06-15T15:00:00Z") == NOW
    with pytest.raises(ValueError):
        parse_time("2026-06-15T15:00:00")


# --- the lists -------------------------------------------------------------------------


def entry(account_id: str, score: float, alerts: list[dict[str, Any]], **kw: Any) -> dict[str, Any]:
    return {
        "account_id": account_id,
        "priority": score,
        "open_alerts": alerts,
        "status": "active",
        "owner": "dana@example.com",
        "segment": "smb",
        "tier": "yellow",
        "silent_gaps": 0.0,
        "days_silent": 0,
        **kw,
    }


def alert(fp: str, account_id: str, rule: str = "account-silent", **kw: Any) -> dict[str, Any]:
    return {
        "fingerprint": fp,
        "account_id": account_id,
        "rule": rule,
        "severity": "warning",
        "starts_at": "2026-06-10T00:00:00Z",
        "owner": "dana@example.com",
        **kw,
    }


def test_silent_accounts_lists_accounts_with_unsnoozed_alerts_or_quiet_ones_best_first() -> None:
    entries = [
        entry("a", 40.0, [alert("fa", "a")]),
        entry("b", 70.0, [alert("fb", "b")]),
        entry("c", 90.0, []),  # no alert, not quiet: nothing to do
        entry("d", 20.0, [], days_silent=3, usual_gap_days=2),  # quiet beyond habit
        entry("f", 30.0, [], days_silent=2, usual_gap_days=2),  # a usual break
        entry("g", 30.0, [], days_silent=1, usual_gap_days=0),  # one day is no pattern
        entry("e", 99.0, [alert("fe", "e")], status="churned"),
    ]
    listed = silent_accounts(entries, [], NOW)
    assert [e["account_id"] for e in listed] == ["b", "a", "d"]
    assert not any(e["snoozed"] for e in listed)
    assert [e["account_id"] for e in silent_accounts(entries, [], NOW, limit=2)] == ["b", "a"]


def test_snoozed_accounts_leave_the_list_unless_asked_for_and_return_when_it_ends() -> None:
    entries = [
        entry("a", 40.0, [alert("fa1", "a"), alert("fa2", "a", "usage-drop")]),
        entry("b", 70.0, [alert("fb", "b")]),
        entry("d", 20.0, [], days_silent=4, usual_gap_days=1),
    ]
    snoozes = [
        silence(fingerprint="fb"),
        silence(id="s2", account_id="d"),
        silence(id="s3", fingerprint="fa1"),  # one of a's two alerts: a stays
    ]
    assert [e["account_id"] for e in silent_accounts(entries, snoozes, NOW)] == ["a"]
    shown = silent_accounts(entries, snoozes, NOW, include_snoozed=True)
    assert [(e["account_id"], e["snoozed"]) for e in shown] == [
        ("b", True),
        ("a", False),
        ("d", True),
    ]
    later = NOW + timedelta(hours=2)
    assert [e["account_id"] for e in silent_accounts(entries, snoozes, later)] == ["b", "a", "d"]


def test_silent_accounts_filters_by_owner_segment_and_tier() -> None:
    entries = [
        entry("a", 40.0, [alert("fa", "a")], owner="Dana@example.com", tier="red"),
        entry("b", 70.0, [alert("fb", "b")], owner="sam@example.com", segment="enterprise"),
    ]

    def ids(**f: Any) -> list[str]:
        return [e["account_id"] for e in silent_accounts(entries, [], NOW, **f)]

    assert ids(owner="dana@example.com") == ["a"]
    assert ids(segment="enterprise") == ["b"]
    assert ids(tier="red") == ["a"]
    assert ids(tier="green") == []


def test_open_alerts_show_acks_snoozes_and_resolves_and_filter() -> None:
    alerts = [
        alert("f1", "a", severity="warning"),
        alert("f2", "a", "usage-drop", severity="critical"),
        alert("f3", "b", owner="sam@example.com"),
    ]
    acks = {"f1": Ack("f1", "dana", NOW, "on it")}
    resolves = {"f3": ResolveRequest("f3", "b", "sam", "fine", NOW)}
    snoozes = [silence(fingerprint="f2")]

    def fps(**f: Any) -> list[str]:
        return [a["fingerprint"] for a in open_alerts(alerts, snoozes, acks, resolves, NOW, **f)]

    assert fps() == ["f1", "f3"]
    assert fps(include_snoozed=True) == ["f2", "f1", "f3"]  # critical first
    assert fps(status="acknowledged") == ["f1"] and fps(status="unacknowledged") == ["f3"]
    assert fps(rule="usage-drop", include_snoozed=True) == ["f2"]
    assert fps(owner="sam@example.com") == ["f3"] and fps(account_id="a") == ["f1"]
    assert fps(severity="critical") == []
    shown = {
        a["fingerprint"]: a
        for a in open_alerts(alerts, snoozes, acks, resolves, NOW, include_snoozed=True)
    }
    assert shown["f1"]["ack"]["comment"] == "on it" and shown["f1"]["snoozed"] is None
    assert shown["f2"]["snoozed"]["id"] == "s1"
    assert shown["f3"]["resolve_requested"]["author"] == "sam"


def test_an_ack_of_an_earlier_episode_does_not_carry_over() -> None:
    """An ack that landed as its alert closed stays stored until the index is rebuilt:
    if the alert fires again meanwhile, the new episode is not acknowledged."""
    refired = alert("f1", "a", starts_at="2026-06-14T00:00:00Z")
    earlier = {"f1": Ack("f1", "dana", NOW, "on it", starts_at="2026-06-10T00:00:00Z")}
    [shown] = open_alerts([refired], [], earlier, {}, NOW)
    assert shown["ack"] is None
    assert open_alerts([refired], [], earlier, {}, NOW, status="acknowledged") == []
    this = {"f1": Ack("f1", "dana", NOW, "on it", starts_at="2026-06-14T00:00:00Z")}
    assert open_alerts([refired], [], this, {}, NOW)[0]["ack"]["comment"] == "on it"
    stored_before = {"f1": Ack("f1", "dana", NOW, "on it")}  # no episode: shown as before
    assert open_alerts([refired], [], stored_before, {}, NOW)[0]["ack"] is not None


def test_the_packaged_openapi_document_is_the_one_in_docs() -> None:
    shipped = REPO / "stream" / "static" / "openapi.yaml"
    assert shipped.read_bytes() == (REPO / "docs" / "openapi.yaml").read_bytes(), (
        "copy docs/openapi.yaml to stream/static/openapi.yaml (the workers serve that copy)"
    )
