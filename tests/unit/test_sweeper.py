"""The worker's sweep as plain code: when it holds, what it publishes and stores."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from alerts.rules import load_rules
from stream import codec
from stream.accounts import Account
from stream.engagement import EngagementState, fold_events
from stream.events import UsageEvent, validate_event
from stream.simulate import FleetSpec, build_fleet, generate_events
from stream.sweeper import Sweeper

NOW = datetime(2026, 11, 23, 12, tzinfo=UTC)
RULES = load_rules(Path(__file__).resolve().parents[2] / "config" / "rules.yaml").rules


def quiet_account_state() -> tuple[EngagementState, Account]:
    fleet = build_fleet(FleetSpec(accounts=12, seed=7, as_of=NOW.date()))
    sim = next(a for a in fleet if a.behaviour == "going_quiet")
    state = EngagementState(sim.account_id, timezone=sim.timezone)
    raw = generate_events([sim], NOW - timedelta(days=28), NOW, seed=7)
    fold_events(
        state, [e for e in (validate_event(d, NOW) for d in raw) if isinstance(e, UsageEvent)]
    )
    return state, Account(sim.account_id, sim.name, sim.licenses, timezone=sim.timezone)


class Harness:
    def __init__(self, state: EngagementState, account: Account, *, backlog: bool = False) -> None:
        self.published: list[tuple[bytes, bytes]] = []
        self.alerts: dict[str, bytes] = {}
        self.backlog = backlog

        async def publish(key: bytes, value: bytes) -> None:
            self.published.append((key, value))

        self.sweeper = Sweeper(
            RULES,
            lambda: [(state.account_id, state.to_json())],
            {account.account_id: account.to_json()},
            self.alerts,
            publish=publish,
            catch_up_lag_s=30 * 86_400,
            behind=lambda account_id: self.backlog,
        )


async def test_a_sweep_publishes_each_new_alert_once_and_stores_the_states() -> None:
    state, account = quiet_account_state()
    harness = Harness(state, account)
    report = await harness.sweeper.sweep(NOW)
    assert not report.held and report.accounts == 1 and report.changes == len(harness.published)
    events = [codec.loads(value) for _, value in harness.published]
    assert "account-silent" in {e["rule"] for e in events}
    assert all(
        key.decode() == e["fingerprint"]
        for (key, _), e in zip(harness.published, events, strict=True)
    )
    stored = codec.loads(harness.alerts[state.account_id])
    assert set(stored["states"]) == {e["fingerprint"] for e in events}
    # Evaluated on the grid up to the clock: the last tick at or before NOW (12:00).
    assert stored["evaluated_through"] == NOW.timestamp()
    assert all(e["starts_at"].endswith(":00:00Z") for e in events)
    again = await harness.sweeper.sweep(NOW + timedelta(minutes=1))
    assert again.changes == 0 and len(harness.published) == len(events)


async def test_an_account_whose_events_are_still_being_read_waits() -> None:
    state, account = quiet_account_state()
    harness = Harness(state, account, backlog=True)
    report = await harness.sweeper.sweep(NOW)
    assert report.behind == 1 and harness.published == [] and harness.alerts == {}


async def test_the_sweep_holds_when_the_newest_event_is_too_old() -> None:
    state, account = quiet_account_state()
    harness = Harness(state, account)
    report = await harness.sweeper.sweep(NOW + timedelta(days=40))  # producers stopped
    assert report.held and harness.published == []
