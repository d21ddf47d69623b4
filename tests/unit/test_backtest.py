"""Backtesting in event time: ticks on a fixed grid, only past events, deterministic."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path

from alerts.backtest import backtest_account, ticks
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
