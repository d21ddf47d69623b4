"""Deleting an account (a tombstone on the accounts topic): its state and alert book
go, its firing alerts resolve with a reason, and nothing of it is judged any more."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import pytest

from alerts.lifecycle import ChangeKind, Finding, LifecyclePolicy, Status, transition
from alerts.rules import Rule, load_rules
from alerts.sweep import ACCOUNT_DELETED, AccountAlerts, close_deleted_account
from stream import codec
from stream import sweeper as sweeper_module
from stream.accounts import Account
from stream.alert_outbox import AlertOutbox
from stream.clock import ManualClock
from stream.deadletter import DeadLetter, SourcePosition
from stream.ingest import RawMessage
from stream.pipeline import AccountsPipeline, IngestPipeline
from stream.sweeper import Sweeper
from stream.triage_store import IndexBatch, TriageStore
from tests.unit.live_wiring import live_engine
from tests.unit.test_alert_outbox import Producer

RULES = load_rules(Path(__file__).resolve().parents[2] / "config" / "rules.yaml").rules
MIDNIGHT = datetime(2026, 11, 24, tzinfo=UTC)
STEP_S = 6 * 3600.0


def finding(rule: str, *, active: bool = True) -> Finding:
    return Finding(rule=rule, account_id="acme", active=active)


def test_closing_a_deleted_account_resolves_what_fires_and_leaves_the_rest() -> None:
    """Firing alerts resolve, annotated as a person's resolve is; a pending one (never
    told to anyone) and one already resolved make no change."""
    start = datetime(2026, 11, 1, tzinfo=UTC)
    book = AccountAlerts()
    for rule, wait_s in (("firing", 0.0), ("pending", 3600.0), ("over", 0.0)):
        state, _ = transition(None, finding(rule), start, LifecyclePolicy(for_s=wait_s))
        assert state is not None
        book.states[state.fingerprint] = state
    over = finding("over").fingerprint
    cleared = finding("over", active=False)
    resolved, _ = transition(book.states[over], cleared, start + timedelta(hours=1))
    assert resolved is not None and resolved.status is Status.RESOLVED
    book.states[over] = resolved
    now = start + timedelta(days=1)
    changes = close_deleted_account(book, now)
    assert [(c.kind, c.alert.rule, c.at) for c in changes] == [(ChangeKind.RESOLVED, "firing", now)]
    annotations = changes[0].alert.annotations
    assert annotations["resolved_by"] == "engagewatch"
    assert annotations["resolve_reason"] == ACCOUNT_DELETED
    assert close_deleted_account(book, now + timedelta(hours=1)) == []  # nothing twice


class RecordingIndex:
    """The triage store's side the sweep calls, recorded (Redis itself is tested in
    tests/integration/test_triage_store.py); ``failing``: Redis is down."""

    def __init__(self) -> None:
        self.written: list[IndexBatch] = []
        self.forgotten: list[dict[str, list[str]]] = []
        self.failing = False
        self.meanwhile: Callable[[], Awaitable[Any]] | None = None
        """Runs while a forget waits for Redis (the accounts' states are gone then)."""

    async def resolve_requests(self, now: datetime) -> dict[str, Any]:
        return {}

    async def write_index(self, batch: IndexBatch) -> list[str]:
        self.written.append(batch)
        return []

    async def refresh_index(self, account_ids: Any) -> None:
        pass

    async def forget_accounts(self, fingerprints: dict[str, list[str]]) -> bool:
        if self.meanwhile is not None:
            await self.meanwhile()
        if self.failing:
            raise ConnectionError("redis is down")
        self.forgotten.append(dict(fingerprints))
        return True


class Fleet:
    """Two accounts that worked every weekday for six weeks; "quiet" stopped two
    weeks ago, so its silence alerts fire. The worker's parts over plain dicts."""

    def __init__(
        self,
        index: RecordingIndex | None = None,
        rules: Sequence[Rule] = RULES,
        *,
        restarted_from: Fleet | None = None,
    ) -> None:
        """``restarted_from``: a fleet whose worker stopped; this one starts on its
        tables (changelog-backed in the worker), with nothing else of it."""
        self.clock = ManualClock(MIDNIGHT)
        self.index = index
        self.engagement: dict[str, Any] = {}
        self.alerts: dict[str, Any] = {}
        self.accounts = {
            a: Account(a, a.title(), 5, owner_email=f"csm@{a}.example").to_json()
            for a in ("busy", "quiet")
        }
        self.deleted: dict[str, Any] = {}
        if restarted_from is not None:
            self.clock = restarted_from.clock
            self.engagement, self.alerts = restarted_from.engagement, restarted_from.alerts
            self.accounts, self.deleted = restarted_from.accounts, restarted_from.deleted
        self.published: list[dict[str, Any]] = []
        self.on_publish: Callable[[dict[str, Any]], Awaitable[None]] | None = None

        self.refusing = False
        """Kafka takes no alert event (every send raises)."""

        async def publish(key: bytes, value: bytes) -> None:
            if self.refusing:
                raise ConnectionError("the broker refuses alert events")
            event = codec.loads(value)
            assert key.decode() == event["fingerprint"]
            self.published.append(event)
            if self.on_publish is not None:
                await self.on_publish(event)

        self.dead_letters: list[DeadLetter] = []

        async def dead_letter(letter: DeadLetter) -> None:
            self.dead_letters.append(letter)

        self.pipeline, self.sweeper = live_engine(
            rules,
            step_s=STEP_S,
            engagement=self.engagement,
            accounts=self.accounts,
            alerts=self.alerts,
            publish=publish,
            dead_letter=dead_letter,
            clock=self.clock,
            catch_up_lag_s=30 * 86_400,
            triage=cast(TriageStore, index),
            deleted=self.deleted,
        )

        async def remove(deleted: Any) -> None:
            await self.sweeper.remove(deleted, self.clock.now())

        self.records = AccountsPipeline(
            self.accounts,
            dead_letter,
            self.clock,
            remove,
            self.deleted,
            removal_unfinished=lambda a: a in self.engagement or a in self.alerts,
        )
        self.offset = 0

    def login(
        self, account_id: str, at: datetime, user: str = "u1", role: str = "champion"
    ) -> RawMessage:
        return self.event(account_id, at, "login", user=user, role=role)

    def event(
        self,
        account_id: str,
        at: datetime,
        kind: str,
        *,
        user: str = "u1",
        role: str = "champion",
        properties: dict[str, Any] | None = None,
    ) -> RawMessage:
        """One usage event as it arrives, keyed by its account, at the next offset."""
        self.offset += 1
        event = {
            "schema": 1,
            "event_id": f"{account_id}-{self.offset}",
            "type": kind,
            "account_id": account_id,
            "user_id": f"{account_id}-{user}",
            "role": role,
            "occurred_at": at.isoformat().replace("+00:00", "Z"),
            "properties": properties or {},
        }
        return RawMessage(
            codec.dumps(event), SourcePosition("events", 0, self.offset, account_id.encode())
        )

    async def history(self, quiet_users: Sequence[str] = ("u1",)) -> None:
        days = [MIDNIGHT - timedelta(days=42 - d, hours=-10) for d in range(42)]
        weekdays = [d for d in days if d.weekday() < 5]
        before = [d for d in weekdays if d < MIDNIGHT - timedelta(days=14)]
        await self.pipeline.process(
            [self.login("busy", d) for d in weekdays]
            + [self.login("quiet", d, user) for d in before for user in quiet_users]
        )
        await self.sweeper.sweep(MIDNIGHT - timedelta(hours=1))

    def detractor(self, account_id: str, at: datetime) -> RawMessage:
        answer = {"score": 2, "comment": "we are leaving"}
        return self.event(account_id, at, "nps_response", properties=answer)

    def tombstone(self, account_id: str) -> RawMessage:
        self.offset += 1
        return RawMessage(None, SourcePosition("accounts", 0, self.offset, account_id.encode()))

    def firing(self, account_id: str) -> set[str]:
        """Fingerprints of the account's alerts whose last event says firing."""
        last: dict[str, str] = {}
        for event in self.published:
            if event["account_id"] == account_id:
                last[event["fingerprint"]] = event["status"]
        return {fp for fp, status in last.items() if status == "firing"}


async def test_a_deleted_account_resolves_its_alerts_and_is_judged_no_more() -> None:
    fleet = Fleet()
    await fleet.history()
    silent = fleet.firing("quiet")
    assert any(e["rule"] == "account-silent" for e in fleet.published if e["account_id"] == "quiet")
    told = len(fleet.published)

    await fleet.records.process([fleet.tombstone("quiet")])

    resolves = fleet.published[told:]
    assert {e["fingerprint"] for e in resolves} == silent
    assert all(e["status"] == "resolved" for e in resolves)
    assert all(e["annotations"]["resolve_reason"] == ACCOUNT_DELETED for e in resolves)
    assert all(e["annotations"]["resolved_by"] == "engagewatch" for e in resolves)
    # The record it had still tells receivers whose account it was.
    assert all(e["account"]["owner_email"] == "csm@quiet.example" for e in resolves)
    assert fleet.firing("quiet") == set()
    assert "quiet" not in fleet.engagement and "quiet" not in fleet.alerts
    assert "quiet" not in fleet.accounts and fleet.pipeline.current_state("quiet") is None

    later = len(fleet.published)
    for days in (1, 7, 30):
        await fleet.sweeper.sweep(MIDNIGHT + timedelta(days=days))
    assert [e for e in fleet.published[later:] if e["account_id"] == "quiet"] == []
    assert "busy" in fleet.engagement and "busy" in fleet.alerts  # the other one goes on


async def test_a_deletion_waits_until_kafka_takes_its_alert_events() -> None:
    """Kafka refuses alert events from before the account goes silent until after its
    deletion. The record goes; the state and the book, with the events it keeps, stay
    (the account judged no more, its events refused) until a sweep finds Kafka taking
    them again: then they go out as a worker with Kafka up all along published them,
    and the rest goes. A worker restarted meanwhile finishes it (the marker tells it)."""

    async def told(*, refusing: bool, restart: bool = False) -> list[dict[str, Any]]:
        fleet = Fleet()
        fleet.refusing = refusing
        await fleet.history()
        await fleet.records.process([fleet.tombstone("quiet")])
        if refusing:
            assert "quiet" not in fleet.accounts and fleet.published == []
            assert "quiet" in fleet.alerts and "quiet" in fleet.engagement
            await fleet.pipeline.process([fleet.login("quiet", MIDNIGHT - timedelta(hours=1))])
            assert fleet.dead_letters[-1].reason == "account_deleted"
            refused = await fleet.sweeper.sweep(MIDNIGHT + timedelta(hours=2))  # still
            assert "quiet" in fleet.alerts and fleet.published == []
            kept = sum(
                len(AccountAlerts.from_dict(codec.loads(b)).unsent) for b in fleet.alerts.values()
            )
            assert refused.unsent == kept > 0  # what ops see (engagewatch_alert_events_unsent)
            fleet.refusing = False
            if restart:  # its events are refused before any sweep: the marker says so
                fleet = Fleet(restarted_from=fleet)
                await fleet.pipeline.process([fleet.login("quiet", MIDNIGHT - timedelta(hours=1))])
                assert [letter.reason for letter in fleet.dead_letters] == ["account_deleted"]
            assert (await fleet.sweeper.sweep(MIDNIGHT + timedelta(hours=3))).unsent == 0
        assert fleet.firing("quiet") == set()
        assert "quiet" not in fleet.alerts and "quiet" not in fleet.engagement
        return [e for e in fleet.published if e["account_id"] == "quiet"]

    expected = await told(refusing=False)
    assert {e["status"] for e in expected} == {"firing", "resolved"}
    assert await told(refusing=True) == expected
    assert await told(refusing=True, restart=True) == expected


async def test_events_after_the_deletion_go_to_the_dead_letters_until_a_record_comes() -> None:
    """A backlog read after the tombstone must not start the account afresh (its user
    ids back in the state, judged with no record); once a record for it is published
    again, its events are welcome, and the silence rules leave the new account alone."""
    fleet = Fleet()
    await fleet.history()
    assert fleet.dead_letters == []
    await fleet.records.process([fleet.tombstone("quiet")])
    fleet.clock.set(MIDNIGHT + timedelta(hours=10))
    backlog = [fleet.login("quiet", MIDNIGHT - timedelta(hours=1)), fleet.login("busy", MIDNIGHT)]
    await fleet.pipeline.process(backlog)
    [letter] = fleet.dead_letters
    assert letter.reason == "account_deleted" and letter.original == backlog[0].value
    assert "'quiet' was deleted (2026-11-24T00:00:00+00:00)" in letter.detail
    assert fleet.pipeline.current_state("quiet") is None
    assert fleet.pipeline.current_state("busy") is not None  # the others go on

    again = Account("quiet", "Quiet again", 5).to_json()
    await fleet.records.process([RawMessage(again, SourcePosition("accounts", 0, 99, b"quiet"))])
    assert fleet.deleted == {}
    await fleet.pipeline.process([fleet.login("quiet", MIDNIGHT + timedelta(hours=9))])
    state = fleet.pipeline.current_state("quiet")
    assert state is not None and state.total_events == 1 and len(fleet.dead_letters) == 1
    told = len(fleet.published)
    await fleet.sweeper.sweep(MIDNIGHT + timedelta(days=5))
    assert [e for e in fleet.published[told:] if e["account_id"] == "quiet"] == []


@pytest.mark.parametrize("restart", [False, True])
async def test_a_record_published_again_while_the_removal_waits_starts_a_new_account(
    restart: bool,
) -> None:
    """Found by a review: deleted while Kafka refused alert events, then published again
    (a CRM's undo), the account lost its marker, so the waiting removal was never
    finished: its events were refused until a restart, and once Kafka was back its old
    alerts resolved, then fired again on the old state. Now the removal finishes first
    (a worker restarted meanwhile too: the marker says so), then the account lives afresh."""
    fleet = Fleet()
    await fleet.history()
    fleet.refusing = True
    await fleet.records.process([fleet.tombstone("quiet")])
    again = Account("quiet", "Quiet again", 5).to_json()
    await fleet.records.process([RawMessage(again, SourcePosition("accounts", 0, 99, b"quiet"))])
    assert "quiet" in fleet.deleted and "quiet" in fleet.accounts  # the marker waits too
    await fleet.pipeline.process([fleet.login("quiet", MIDNIGHT + timedelta(minutes=5))])
    [letter] = fleet.dead_letters
    assert "its record published again, but its removal still waits" in letter.detail
    fleet.refusing = False
    if restart:
        fleet = Fleet(restarted_from=fleet)
    await fleet.sweeper.sweep(MIDNIGHT + timedelta(hours=1))
    told = [e for e in fleet.published if e["account_id"] == "quiet"]
    resolved = [e for e in told if e["status"] == "resolved"]
    assert resolved and told[-len(resolved) :] == resolved  # nothing fired after them
    assert {e["annotations"]["resolve_reason"] for e in resolved} == {"account record deleted"}
    assert "quiet" not in fleet.deleted and "quiet" not in fleet.alerts
    assert fleet.pipeline.current_state("quiet") is None  # the old state is gone
    before = len(fleet.published)
    fleet.clock.set(MIDNIGHT + timedelta(hours=2))
    await fleet.pipeline.process([fleet.login("quiet", MIDNIGHT + timedelta(hours=2))])
    state = fleet.pipeline.current_state("quiet")
    assert state is not None and state.total_events == 1  # a new account, welcome
    await fleet.sweeper.sweep(MIDNIGHT + timedelta(days=3))
    assert [e for e in fleet.published[before:] if e["account_id"] == "quiet"] == []


async def test_an_account_deleted_while_a_sweep_runs_is_passed_by(monkeypatch: Any) -> None:
    """The sweep read its states before the tombstone came: judged on that copy with
    the book gone, "quiet" would fire again as a new episode after its resolve."""
    monkeypatch.setattr(sweeper_module, "YIELD_EVERY", 1)  # yield after each account
    fleet = Fleet()
    await fleet.history()
    told = len(fleet.published)

    async def tombstone_meanwhile() -> None:  # runs when the sweep yields after "busy"
        await fleet.records.process([fleet.tombstone("quiet")])

    report, _ = await asyncio.gather(
        fleet.sweeper.sweep(MIDNIGHT + timedelta(days=2)), tombstone_meanwhile()
    )
    assert list(fleet.engagement) == ["busy"] and report.accounts == 1
    after = [e for e in fleet.published[told:] if e["account_id"] == "quiet"]
    assert after and all(e["status"] == "resolved" for e in after)
    assert "quiet" not in fleet.alerts


async def test_a_tombstone_tells_of_the_record_it_deleted() -> None:
    """In one batch the last message of a key is the record kept, but a tombstone
    anywhere deletes what was kept before it (deleted, then created again); an
    unknown account's tombstone still reaches ``on_deleted`` (its state, if any, must
    go). Each tombstone leaves a marker; a record removes it."""
    clock = ManualClock(MIDNIGHT)
    table = {"acme": Account("acme", "Acme", 3).to_json()}
    heard: list[dict[str, bytes | None]] = []

    async def on_deleted(deleted: Any) -> None:
        heard.append(dict(deleted))

    async def dead_letter(letter: DeadLetter) -> None:
        raise AssertionError(letter)

    markers: dict[str, Any] = {}
    records = AccountsPipeline(table, dead_letter, clock, on_deleted, markers)
    acme = Account("acme", "Acme", 3).to_json()
    globex = Account("globex", "Globex", 9).to_json()

    def message(key: str, value: bytes | None, offset: int) -> RawMessage:
        return RawMessage(value, SourcePosition("accounts", 0, offset, key.encode()))

    await records.process([message("acme", None, 1), message("ghost", None, 2)])
    assert sorted(markers) == ["acme", "ghost"]
    await records.process([message("globex", globex, 3), message("globex", None, 4)])
    table["acme"] = acme  # created again, then deleted and created again in one batch
    del markers["acme"]
    await records.process([message("acme", None, 5), message("acme", acme, 6)])
    assert heard == [{"acme": acme, "ghost": None}, {"globex": None}, {"acme": acme}]
    assert table == {"acme": acme} and sorted(markers) == ["ghost", "globex"]


def test_forgetting_an_account_the_pipeline_never_saw_is_harmless() -> None:
    async def dead_letter(letter: DeadLetter) -> None:
        raise AssertionError(letter)

    table: dict[str, Any] = {}
    pipeline = IngestPipeline(table, dead_letter, ManualClock(MIDNIGHT))
    assert pipeline.forget("nobody") is False and table == {}


def test_the_sweeper_removes_without_a_triage_store() -> None:
    async def publish(key: bytes, value: bytes) -> None:
        raise AssertionError("nothing fires for an account with no book")

    outbox = AlertOutbox({}, publish)
    sweeper = Sweeper(RULES, list, {}, {}, outbox=outbox, catch_up_lag_s=86_400, deleted={})
    assert asyncio.run(sweeper.remove({"nobody": None}, MIDNIGHT)) == []


def test_a_sweeps_index_leaves_out_the_accounts_deleted_while_it_ran() -> None:
    """Built before the deletion, written after it: the entry and open alerts would
    put the account back in the triage list until they expired."""
    batch = IndexBatch(
        entries=[{"account_id": "gone"}, {"account_id": "kept"}],
        open_alerts=[{"account_id": "gone", "fingerprint": "g"}, {"account_id": "kept"}],
        history=[("gone", {"kind": "firing"})],
        kept=["gone", "other"],
        built={"gone": 1, "kept": 2},
    )
    batch.leave_out({"gone"})
    assert batch.entries == [{"account_id": "kept"}]
    assert batch.open_alerts == [{"account_id": "kept"}]
    assert batch.kept == ["other"] and batch.built == {"kept": 2}
    assert batch.history == []  # the deletion took the account's history out


async def test_events_read_while_the_resolves_go_out_are_refused() -> None:
    """Publishing takes time, and events keep coming: a detractor answer read then
    would fire at once, and be deleted with the book, open and never resolved, or
    fold into a state about to go. It is refused, as it would be a moment later."""
    fleet = Fleet()
    await fleet.history()
    fleet.clock.set(MIDNIGHT + timedelta(hours=1))
    ingest: list[asyncio.Task[list[str]]] = []

    async def answer_meanwhile(event: dict[str, Any]) -> None:
        if event["annotations"].get("resolve_reason") == ACCOUNT_DELETED and not ingest:
            answer = fleet.detractor("quiet", MIDNIGHT + timedelta(minutes=30))
            ingest.append(asyncio.create_task(fleet.pipeline.process([answer])))
            for _ in range(5):
                await asyncio.sleep(0)  # the batch is judged, then waits for the flush

    fleet.on_publish = answer_meanwhile
    told = len(fleet.published)
    await fleet.records.process([fleet.tombstone("quiet")])
    await asyncio.gather(*ingest)
    mine = [e for e in fleet.published[told:] if e["account_id"] == "quiet"]
    assert mine and {e["status"] for e in mine} == {"resolved"}
    assert "detractor" not in {e["rule"] for e in mine}
    assert [letter.reason for letter in fleet.dead_letters] == ["account_deleted"]
    assert fleet.firing("quiet") == set()
    assert "quiet" not in fleet.alerts and "quiet" not in fleet.engagement


async def test_a_sweeps_index_write_leaves_out_an_account_deleted_meanwhile(
    monkeypatch: Any,
) -> None:
    monkeypatch.setattr(sweeper_module, "YIELD_EVERY", 1)
    index = RecordingIndex()
    fleet = Fleet(index)
    await fleet.history()
    quiet_alerts = sorted(codec.loads(fleet.alerts["quiet"])["states"])

    async def tombstone_meanwhile() -> None:  # after the sweep judged both accounts
        await asyncio.sleep(0)
        await fleet.records.process([fleet.tombstone("quiet")])

    report, _ = await asyncio.gather(
        fleet.sweeper.sweep(MIDNIGHT + timedelta(days=2)), tombstone_meanwhile()
    )
    assert report.accounts == 2  # "quiet" was judged, its entry built, before it went
    written = index.written[-1]
    assert [e["account_id"] for e in written.entries] == ["busy"]
    assert {a["account_id"] for a in written.open_alerts} <= {"busy"}
    assert {account_id for account_id, _ in written.history} <= {"busy"}
    assert index.forgotten == [{"quiet": quiet_alerts}]


async def test_the_index_forgets_a_deleted_account_once_redis_is_back() -> None:
    index = RecordingIndex()
    fleet = Fleet(index)
    await fleet.history()
    index.failing = True
    await fleet.records.process([fleet.tombstone("quiet")])
    assert index.forgotten == [] and "quiet" not in fleet.alerts  # alerting did not wait
    await fleet.sweeper.sweep(MIDNIGHT + timedelta(hours=1))  # Redis still down
    index.failing = False
    await fleet.sweeper.sweep(MIDNIGHT + timedelta(hours=2))
    assert [set(f) for f in index.forgotten] == [{"quiet"}]
    await fleet.sweeper.sweep(MIDNIGHT + timedelta(hours=3))
    assert len(index.forgotten) == 1  # done once


async def test_a_failed_deletion_keeps_the_record_for_the_tombstone_read_again() -> None:
    table = {"acme": Account("acme", "Acme", 3).to_json()}

    async def on_deleted(deleted: Any) -> None:
        raise ConnectionError("the broker is away")

    async def dead_letter(letter: DeadLetter) -> None:
        raise AssertionError(letter)

    records = AccountsPipeline(table, dead_letter, ManualClock(MIDNIGHT), on_deleted)
    tombstone = RawMessage(None, SourcePosition("accounts", 0, 1, b"acme"))
    with pytest.raises(ConnectionError):
        await records.process([tombstone])
    assert "acme" in table


async def test_a_sweep_that_starts_while_the_resolves_go_out_passes_the_account_by() -> None:
    """It reads the states before the deletion deletes them, then waits for it: judged
    on that copy with the book gone, the account would fire again as a new episode."""
    fleet = Fleet()
    await fleet.history()
    sweeps: list[asyncio.Task[Any]] = []

    async def sweep_meanwhile(event: dict[str, Any]) -> None:
        if event["annotations"].get("resolve_reason") == ACCOUNT_DELETED and not sweeps:
            sweeps.append(asyncio.create_task(fleet.sweeper.sweep(MIDNIGHT + timedelta(days=2))))
            for _ in range(5):
                await asyncio.sleep(0)  # it reads the states, then waits for the removal

    fleet.on_publish = sweep_meanwhile
    told = len(fleet.published)
    await fleet.records.process([fleet.tombstone("quiet")])
    [report] = await asyncio.gather(*sweeps)
    assert report.accounts == 1
    mine = [e["status"] for e in fleet.published[told:] if e["account_id"] == "quiet"]
    assert mine and set(mine) == {"resolved"}
    assert "quiet" not in fleet.alerts


async def test_an_event_read_once_the_state_is_gone_is_refused_too() -> None:
    """The marker is in place before the state goes: between the two, an event would
    start the account afresh."""
    index = RecordingIndex()
    fleet = Fleet(index)
    await fleet.history()
    fleet.clock.set(MIDNIGHT + timedelta(hours=1))

    async def event_meanwhile() -> None:
        assert fleet.pipeline.current_state("quiet") is None  # gone already
        await fleet.pipeline.process([fleet.login("quiet", MIDNIGHT)])

    index.meanwhile = event_meanwhile
    await fleet.records.process([fleet.tombstone("quiet")])
    assert [letter.reason for letter in fleet.dead_letters] == ["account_deleted"]
    assert fleet.pipeline.current_state("quiet") is None


async def test_an_alert_event_on_its_way_when_its_account_is_deleted_is_not_lost() -> None:
    """Ingest's flush waits for Kafka to acknowledge an event of the account when the
    tombstone is read, and Kafka then refuses it. The deletion must wait for that flush
    and send what the book still keeps before the book goes."""
    fleet = Fleet()
    await fleet.history()
    producer = Producer()
    outbox = fleet.sweeper._outbox
    outbox._send = producer.send
    book = AccountAlerts.from_dict(codec.loads(fleet.alerts["quiet"]))
    late = (b"fp-late", codec.dumps({"id": "judged by ingest just before"}))
    outbox.queue("quiet", book, [late])
    fleet.alerts["quiet"] = codec.dumps(book.to_dict())
    ingest = asyncio.create_task(outbox.flush())
    await producer.in_flight()
    deleting = asyncio.create_task(fleet.records.process([fleet.tombstone("quiet")]))
    await asyncio.sleep(0.01)
    producer.hold = False
    producer.acknowledge(late[1])  # refused
    await asyncio.gather(ingest, deleting)
    published = [codec.loads(value) for value in producer.published]
    assert published[0] == {"id": "judged by ingest just before"}
    assert published[1:] and all(e["status"] == "resolved" for e in published[1:])
    assert "quiet" not in fleet.alerts and "quiet" not in fleet.accounts
