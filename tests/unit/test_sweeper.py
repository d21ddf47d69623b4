"""The worker's sweep as plain code: when it holds, what it publishes and stores."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from alerts.evaluation import Reuse
from alerts.rules import load_rules
from stream import codec
from stream import sweeper as sweeper_module
from stream.accounts import Account
from stream.alert_outbox import AlertOutbox
from stream.clock import ManualClock
from stream.deadletter import DeadLetter, SourcePosition
from stream.engagement import EngagementState, fold_events
from stream.events import UsageEvent, validate_event
from stream.ingest import RawMessage
from stream.simulate import FleetSpec, build_fleet, generate_events
from stream.sweeper import Sweeper
from tests.unit.live_wiring import live_engine

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
        self.accounts: dict[str, bytes] = {account.account_id: account.to_json()}
        self.backlog = backlog

        async def publish(key: bytes, value: bytes) -> None:
            self.published.append((key, value))

        self.sweeper = Sweeper(
            RULES,
            lambda: [(state.account_id, state.to_json())],
            self.accounts,
            self.alerts,
            outbox=AlertOutbox(self.alerts, publish),
            deleted={},
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


async def test_the_sweep_judges_what_ingest_folded_while_it_ran(monkeypatch: Any) -> None:
    """Ingest runs while a sweep waits: an account the sweep reaches afterwards is
    judged on the events folded meanwhile, as replay judges it, not on the state read
    when the sweep began. Here a silent account's login at 23:00 reaches the worker
    mid-sweep; the midnight tick must see yesterday active and resolve the silence."""
    monkeypatch.setattr(sweeper_module, "YIELD_EVERY", 1)  # yield after each account
    midnight = datetime(2026, 11, 24, tzinfo=UTC)
    clock = ManualClock(midnight)
    engagement: dict[str, Any] = {}
    alerts: dict[str, Any] = {}
    accounts = {a: Account(a, a, 5).to_json() for a in ("busy", "quiet")}
    published: list[dict[str, Any]] = []

    async def publish(key: bytes, value: bytes) -> None:
        published.append(codec.loads(value))

    async def dead_letter(letter: DeadLetter) -> None:
        raise AssertionError(letter)

    pipeline, sweeper = live_engine(
        RULES,
        step_s=6 * 3600.0,
        engagement=engagement,
        accounts=accounts,
        alerts=alerts,
        publish=publish,
        dead_letter=dead_letter,
        clock=clock,
        catch_up_lag_s=30 * 86_400,
    )
    offset = 0

    def login(account_id: str, at: datetime) -> RawMessage:
        nonlocal offset
        offset += 1
        event = {
            "schema": 1,
            "event_id": f"{account_id}-{offset}",
            "type": "login",
            "account_id": account_id,
            "user_id": f"{account_id}-u1",
            "role": "champion",
            "occurred_at": at.isoformat().replace("+00:00", "Z"),
            "properties": {},
        }
        return RawMessage(codec.dumps(event), SourcePosition("t", 0, offset, account_id.encode()))

    start = midnight - timedelta(days=42)
    days = [start + timedelta(days=d, hours=10) for d in range(42)]
    weekdays = [d for d in days if d.weekday() < 5]
    # "busy" works every weekday; "quiet" did too, until two weeks ago.
    history = [login("busy", d) for d in weekdays] + [
        login("quiet", d) for d in weekdays if d < midnight - timedelta(days=14)
    ]
    await pipeline.process(history)
    await sweeper.sweep(midnight - timedelta(hours=1))  # up to 18:00: "quiet" is silent
    assert any(e["rule"] == "account-silent" and e["status"] == "firing" for e in published)
    published.clear()

    late_login = [login("quiet", midnight - timedelta(hours=1))]  # 23:00, before the tick

    async def ingest_meanwhile() -> None:  # runs when the sweep yields after "busy"
        await pipeline.process(late_login)

    await asyncio.gather(sweeper.sweep(midnight), ingest_meanwhile())
    assert list(engagement) == ["busy", "quiet"]  # the sweep's order: "quiet" comes second
    resolved = [e for e in published if e["rule"] == "account-silent"]
    assert [(e["status"], e["ends_at"]) for e in resolved] == [("resolved", "2026-11-24T00:00:00Z")]


async def test_a_copy_decoded_by_the_sweep_gets_no_reuse_entry() -> None:
    """Reuse is kept for the pipeline's own state objects only: a state the sweep
    decoded itself would fill the evaluator's cache with entries nobody uses again."""
    state, account = quiet_account_state()
    asked: list[str] = []

    def reuse_for(account_id: str, held: EngagementState) -> Reuse:
        asked.append(account_id)
        return Reuse()

    def current_state(account_id: str, *, decode: bool = True) -> EngagementState | None:
        return EngagementState.from_json(state.to_json()) if decode else None  # not held

    async def publish(key: bytes, value: bytes) -> None:
        pass

    alerts: dict[str, bytes] = {}
    sweeper = Sweeper(
        RULES,
        lambda: [(state.account_id, state.to_json())],
        {account.account_id: account.to_json()},
        alerts,
        outbox=AlertOutbox(alerts, publish),
        deleted={},
        catch_up_lag_s=30 * 86_400,
        current_state=current_state,
        reuse_for=reuse_for,
    )
    report = await sweeper.sweep(NOW)
    assert report.accounts == 1 and report.changes > 0 and asked == []


def test_an_account_marked_churned_has_its_alerts_closed_at_the_next_sweep() -> None:
    """Found by a review: the stand-down came only from a tick's evaluation, so a
    critical page stayed open up to 6 hours (the grid step) after the CRM marked the
    account churned."""
    state, account = quiet_account_state()
    harness = Harness(state, account)
    asyncio.run(harness.sweeper.sweep(NOW))
    opened = {codec.loads(v)["fingerprint"] for _, v in harness.published}
    assert opened
    churned = Account(
        account.account_id, account.name, account.licenses, timezone=account.timezone,
        status="churned",
    )  # fmt: skip
    harness.accounts[account.account_id] = churned.to_json()
    before = len(harness.published)
    asyncio.run(harness.sweeper.sweep(NOW + timedelta(minutes=10)))  # no tick in between
    events = [codec.loads(v) for _, v in harness.published[before:]]
    assert {e["fingerprint"] for e in events} == opened
    assert {e["status"] for e in events} == {"resolved"}
    assert {e["annotations"]["resolve_reason"] for e in events} == {"account status churned"}
    assert {e["ends_at"] for e in events} == {"2026-11-23T12:10:00Z"}
    asyncio.run(harness.sweeper.sweep(NOW + timedelta(hours=7)))  # ticks: nothing more
    assert len(harness.published) == before + len(events)
