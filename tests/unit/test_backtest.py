"""Backtesting in event time: ticks on a fixed grid, only past events, deterministic."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any

from alerts.backtest import backtest_account, backtest_records, ticks
from alerts.lifecycle import ChangeKind
from alerts.rules import load_rules
from stream.accounts import Account
from stream.events import UsageEvent, validate_event
from stream.simulate import FleetSpec, build_fleet, generate_events

END = datetime(2026, 11, 23, 12, tzinfo=UTC)
RULES = load_rules(Path(__file__).resolve().parents[2] / "config" / "rules.yaml").rules


def test_ticks_sit_on_a_grid_aligned_to_the_epoch() -> None:
    start = datetime(2026, 11, 1, 5, 30, tzinfo=UTC)
    grid = ticks(start, start + timedelta(hours=20), timedelta(hours=6))
    assert [t.hour for t in grid] == [6, 12, 18, 0]
    assert ticks(start, start, timedelta(hours=6)) == []


def quiet_account() -> tuple[Account, list[UsageEvent]]:
    fleet = build_fleet(FleetSpec(accounts=12, seed=7, as_of=END.date()))
    sim = next(a for a in fleet if a.behaviour == "going_quiet")
    raw = generate_events([sim], END - timedelta(days=42), END, seed=7)
    events = [e for e in (validate_event(d, END) for d in raw) if isinstance(e, UsageEvent)]
    return Account(sim.account_id, sim.name, sim.licenses, timezone=sim.timezone), events


def test_a_quiet_account_is_alerted_after_it_stops_and_only_once() -> None:
    account, events = quiet_account()
    last_event = max(e.occurred_at for e in events)
    notices = backtest_account(RULES, account, events, END - timedelta(days=42), END)
    silent = [n.change for n in notices if n.change.alert.rule == "account-silent"]
    # One firing, then at most reminders a repeat interval (7 days) apart.
    assert silent[0].kind is ChangeKind.FIRING
    assert all(c.kind is ChangeKind.REPEAT for c in silent[1:])
    assert all(b.at - a.at >= timedelta(days=7) for a, b in pairwise(silent))
    # Judged on events before each tick only: it cannot fire before the account stopped,
    # and with a daily habit it fires on the 4th missed working day (within ~6 days).
    assert last_event < silent[0].at <= last_event + timedelta(days=7)
    assert silent[0].alert.evidence["value"] == 4


def test_the_same_history_gives_the_same_notices() -> None:
    account, events = quiet_account()
    start = END - timedelta(days=42)
    first = backtest_account(RULES, account, events, start, END)
    again = backtest_account(RULES, account, list(events), start, END)
    assert first == again
    assert all(n.change.at.minute == 0 and n.change.at.second == 0 for n in first)


def test_changes_sit_on_the_evaluation_grid() -> None:
    account, events = quiet_account()
    notices = backtest_account(
        RULES, account, events, END - timedelta(days=42), END, step=timedelta(hours=6)
    )
    assert notices
    assert {n.change.at.hour for n in notices} <= {0, 6, 12, 18}


def weekday_logins(
    user: str, role: str, first: datetime, days: range, *, account: str = "acme"
) -> list[UsageEvent]:
    """A login at 14:00 on each weekday of ``days`` (offsets from ``first``)."""
    events = []
    for offset in days:
        at = first + timedelta(days=offset, hours=14)
        if at.weekday() < 5:
            raw = {
                "schema": 1,
                "event_id": f"{user}-{offset}",
                "type": "login",
                "account_id": account,
                "user_id": user,
                "role": role,
                "occurred_at": at.isoformat().replace("+00:00", "Z"),
            }
            event = validate_event(raw, at + timedelta(days=1))
            assert isinstance(event, UsageEvent)
            events.append(event)
    return events


def silence_changes(
    events: list[UsageEvent], rule: str, start: datetime, end: datetime
) -> list[tuple[str, Any, Any]]:
    account = Account("acme", "Acme", 2)
    ordered = sorted(events, key=lambda e: e.occurred_at)
    notices = backtest_account(RULES, account, ordered, start, end)
    return [
        (n.change.kind.value, n.change.alert.evidence.get("value"), n.change.alert.subject)
        for n in notices
        if n.change.alert.rule == rule
    ]


MONDAY = datetime(2026, 8, 3, tzinfo=UTC)


def test_a_champion_who_left_for_good_stays_alerted_while_a_colleague_works_on() -> None:
    """Found by a review: the colleague's events move the state's horizon on, which
    pruned the champion's days until "no established habit yet" resolved the alert five
    weeks in, with nobody back; before that the missed count fell as their working
    weekdays thinned out (9, 14, 19, 14). Judged on the habit it fired on, it holds."""
    events = weekday_logins("champ", "champion", MONDAY, range(35))
    events += weekday_logins("colleague", "user", MONDAY, range(110))
    changes = silence_changes(events, "champion-silent", MONDAY, MONDAY + timedelta(days=110))
    assert changes[0] == ("firing", 4, "champ")
    assert all(kind == "repeat" for kind, _, _ in changes[1:])
    missed = [value for _, value, _ in changes]
    assert missed == sorted(missed) and len(missed) >= 10  # one a week, always growing


def test_a_champion_back_after_the_history_aged_out_resolves() -> None:
    events = weekday_logins("champ", "champion", MONDAY, range(35))
    events += weekday_logins("champ", "champion", MONDAY, range(90, 95))
    events += weekday_logins("colleague", "user", MONDAY, range(100))
    changes = silence_changes(events, "champion-silent", MONDAY, MONDAY + timedelta(days=100))
    kinds = [kind for kind, _, _ in changes]
    assert kinds[0] == "firing" and kinds[-1] == "resolved"
    assert kinds.count("resolved") == 1


def test_a_silent_account_stays_alerted_through_a_daily_billing_sync() -> None:
    """Events without a user (a licence sync each day) are no activity, but they move
    the horizon: the account's own days aged out and account-silent resolved itself."""
    events = weekday_logins("u1", "user", MONDAY, range(35))
    for offset in range(35, 110):
        at = MONDAY + timedelta(days=offset, hours=3)
        raw = {
            "schema": 1,
            "event_id": f"sync-{offset}",
            "type": "license_change",
            "account_id": "acme",
            "occurred_at": at.isoformat().replace("+00:00", "Z"),
            "properties": {"licenses": 2},
        }
        event = validate_event(raw, at + timedelta(days=1))
        assert isinstance(event, UsageEvent)
        events.append(event)
    changes = silence_changes(events, "account-silent", MONDAY, MONDAY + timedelta(days=110))
    assert changes[0][0] == "firing"
    assert all(kind == "repeat" for kind, _, _ in changes[1:])
    assert len(changes) >= 10


def adopted_then_away(*, used_reports: bool) -> list[tuple[Any, ...]]:
    """Two users log in every day for 60 days (using reports on days 5-15 if
    ``used_reports``), the account is away for 60 days, then back for 30 without
    using reports."""
    start = END.replace(hour=9, minute=0) - timedelta(days=150)
    records: list[tuple[Any, ...]] = []
    for day in [*range(60), *range(120, 150)]:
        at = (start + timedelta(days=day)).timestamp()
        for user in ("u1", "u2"):
            records.append((f"{user}-{day}", 0, at, user, "user", 0, None))
            if used_reports and 5 <= day <= 15:
                records.append((f"{user}-r{day}", 2, at + 60, user, "user", "reports", None))
    return records


def test_a_feature_once_adopted_is_not_told_unadopted_after_a_long_break() -> None:
    """An account that adopted reports, went away for two months and came back without
    using them yet did adopt them: "has not adopted reports" would be false (its
    silence is the silence rules' business). Never having used them, it is told."""
    start = END - timedelta(days=150)
    account = Account("acme", "Acme", 10, contract_start=start.date())

    def told(used_reports: bool) -> list[ChangeKind]:
        records = adopted_then_away(used_reports=used_reports)
        notices = backtest_records(RULES, "acme", records, start, END, account=account)
        return [n.change.kind for n in notices if n.change.alert.rule == "reports-not-adopted"]

    assert told(used_reports=True) == []
    assert told(used_reports=False)[0] is ChangeKind.FIRING
