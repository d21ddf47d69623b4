"""The triage store on the real redis-server: round trips, one-pipeline writes, expiry,
and the sweep writing the index, applying resolves, and alerting without Redis."""

from __future__ import annotations

import asyncio
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from typing import Any

import pytest

from alerts.triage import Ack, ResolveRequest
from stream import codec
from stream.sweeper import REBUILD_EVERY
from stream.triage_store import TriageStore
from tests.conftest import REPO, free_port
from tests.unit.test_sweeper import NOW, Harness, quiet_account_state

sys.path.insert(0, str(REPO / "scripts"))
import devstack


@pytest.fixture
async def store(stack: devstack.Stack) -> AsyncIterator[TriageStore]:
    triage = TriageStore.from_url(stack.redis_url, f"t{uuid.uuid4().hex[:10]}", entry_ttl_s=60)
    yield triage
    keys = [key async for key in triage.redis.scan_iter(match=triage.prefix + "*")]
    if keys:
        await triage.redis.delete(*keys)
    await triage.close()


def with_store(harness: Harness, store: TriageStore, errors: list[str] | None = None) -> Harness:
    harness.sweeper._triage = store
    if errors is not None:
        harness.sweeper._on_redis_error = errors.append
    return harness


async def swept(store: TriageStore) -> tuple[Harness, str]:
    """A going-quiet account swept once into ``store``; returns its account id."""
    state, account = quiet_account_state()
    harness = with_store(Harness(state, account), store)
    report = await harness.sweeper.sweep(NOW)
    assert report.changes > 0
    return harness, state.account_id


class RoundTrips:
    """Counts what reaches Redis: direct commands, and pipelines executed (real calls)."""

    def __init__(self, store: TriageStore) -> None:
        self.commands: list[str] = []
        self.pipelines = 0
        redis = store.redis
        direct: Callable[..., Awaitable[Any]] = redis.execute_command
        make_pipeline = redis.pipeline

        async def execute_command(*args: Any, **kwargs: Any) -> Any:
            self.commands.append(str(args[0]))
            return await direct(*args, **kwargs)

        def pipeline(*args: Any, **kwargs: Any) -> Any:
            pipe = make_pipeline(*args, **kwargs)
            execute: Callable[..., Awaitable[Any]] = pipe.execute

            async def counted(*a: Any, **kw: Any) -> Any:
                self.pipelines += 1
                return await execute(*a, **kw)

            pipe.execute = counted  # type: ignore[method-assign]
            return pipe

        redis.execute_command = execute_command  # type: ignore[method-assign]
        redis.pipeline = pipeline  # type: ignore[method-assign]


async def test_a_sweep_writes_its_index_in_one_round_trip(store: TriageStore) -> None:
    state, account = quiet_account_state()
    harness = with_store(Harness(state, account), store)
    trips = RoundTrips(store)
    await harness.sweeper.sweep(NOW)
    # One read of the resolve requests, then the whole index in one pipeline.
    assert trips.commands == ["HGETALL"] and trips.pipelines == 1
    assert await store.redis.zcard(store.key("rank")) == 1


async def test_the_index_round_trips_entries_alerts_and_history(store: TriageStore) -> None:
    harness, account_id = await swept(store)
    published = [codec.loads(v) for _, v in harness.published]
    entry = await store.account(account_id)
    assert entry is not None and entry["account_id"] == account_id
    assert entry["days_silent"] >= 3 and len(entry["daily_active_users"]) == 28
    assert {a["fingerprint"] for a in entry["open_alerts"]} == {e["fingerprint"] for e in published}
    listed = await store.silent_accounts(NOW)
    assert [e["account_id"] for e in listed] == [account_id]
    alerts = await store.alerts(NOW)
    assert {a["fingerprint"] for a in alerts} == {e["fingerprint"] for e in published}
    assert all(a["ack"] is None and a["snoozed"] is None for a in alerts)
    history = await store.history(account_id)
    assert sorted(h["fingerprint"] for h in history) == sorted(e["fingerprint"] for e in published)
    assert {h["kind"] for h in history} == {"firing"}
    assert await store.account("nobody") is None and await store.alert("nothing") is None


async def test_entries_expire_and_take_their_rank_and_alerts_along(stack: devstack.Stack) -> None:
    store = TriageStore.from_url(stack.redis_url, f"t{uuid.uuid4().hex[:10]}", entry_ttl_s=1)
    try:
        _, account_id = await swept(store)
        assert await store.silent_accounts(NOW)
        await asyncio.sleep(2.1)
        assert await store.account(account_id) is None
        assert await store.silent_accounts(NOW) == [] and await store.alerts(NOW) == []
        # Readers cleaned up what they met: the rank and the orphaned alerts.
        assert await store.redis.zcard(store.key("rank")) == 0
        assert await store.redis.hlen(store.key("alerts")) == 0
    finally:
        await store.redis.delete(
            *[k async for k in store.redis.scan_iter(match=store.prefix + "*")]
        )
        await store.close()


async def test_snoozes_hold_until_they_end_and_expired_ones_are_cleaned_up(
    store: TriageStore,
) -> None:
    _, account_id = await swept(store)
    alert = (await store.alerts(NOW))[0]
    fp, rule = alert["fingerprint"], alert["rule"]
    silence = await store.snooze(
        alert, until=NOW + timedelta(hours=1), author="dana", reason="holiday", now=NOW
    )
    assert await store.silence_for(fp, account_id, rule, NOW) == silence
    assert await store.silence_for("other", account_id, rule, NOW) is None
    assert fp not in {a["fingerprint"] for a in await store.alerts(NOW)}
    shown = {a["fingerprint"]: a for a in await store.alerts(NOW, include_snoozed=True)}
    assert shown[fp]["snoozed"]["author"] == "dana"
    later = NOW + timedelta(hours=1)
    assert await store.silence_for(fp, account_id, rule, later) is None
    assert await store.redis.hlen(store.key("silences")) == 0  # deleted on the way
    assert fp in {a["fingerprint"] for a in await store.alerts(later)}


async def test_account_snoozes_and_unsnooze(store: TriageStore) -> None:
    _, account_id = await swept(store)
    alerts = await store.alerts(NOW)
    await store.snooze(
        alerts[0], until=NOW + timedelta(days=1), author="d", reason="r", now=NOW, scope="account"
    )
    assert await store.alerts(NOW) == []
    assert await store.silent_accounts(NOW) == []
    marked = await store.silent_accounts(NOW, include_snoozed=True)
    assert [(e["account_id"], e["snoozed"]) for e in marked] == [(account_id, True)]
    removed = await store.unsnooze(alerts[-1]["fingerprint"], author="d", now=NOW, alert=alerts[-1])
    assert len(removed) == 1 and removed[0].account_id == account_id
    assert len(await store.alerts(NOW)) == len(alerts)
    assert await store.unsnooze("fp", author="d", now=NOW, alert=None) == []
    kinds = [h["kind"] for h in await store.history(account_id)]
    assert kinds[:2] == ["unsnooze", "snooze"]  # newest first


async def test_an_account_snooze_can_be_lifted_by_its_alert_after_that_closed(
    store: TriageStore,
) -> None:
    """The alert a snooze of the whole account was made from resolves: naming it still
    lifts the snooze (else the quiet account stayed hidden until the snooze ended), and
    the history says which alert and rule each action was about."""
    _, account_id = await swept(store)
    alert = (await store.alerts(NOW))[0]
    await store.snooze(
        alert, until=NOW + timedelta(days=14), author="d", reason="r", now=NOW, scope="account"
    )
    assert await store.silent_accounts(NOW) == []
    removed = await store.unsnooze(alert["fingerprint"], author="d", now=NOW, alert=None)
    assert [s.account_id for s in removed] == [account_id]
    assert [e["account_id"] for e in await store.silent_accounts(NOW)] == [account_id]
    unsnoozed, snoozed = (await store.history(account_id))[:2]
    assert unsnoozed["kind"] == "unsnooze"
    assert unsnoozed["fingerprint"] == alert["fingerprint"]
    assert snoozed["kind"] == "snooze"
    assert (snoozed["fingerprint"], snoozed["rule"]) == (alert["fingerprint"], alert["rule"])
    assert snoozed["scope"] == "account"


async def test_unsnoozing_a_closed_alert_lands_in_its_accounts_history(store: TriageStore) -> None:
    _, account_id = await swept(store)
    alert = (await store.alerts(NOW))[0]
    await store.snooze(alert, until=NOW + timedelta(days=1), author="d", reason="r", now=NOW)
    assert len(await store.unsnooze(alert["fingerprint"], author="e", now=NOW, alert=None)) == 1
    newest = (await store.history(account_id))[0]
    assert (newest["kind"], newest["author"]) == ("unsnooze", "e")


async def test_acks_show_and_are_dropped_when_the_alert_closes(store: TriageStore) -> None:
    harness, account_id = await swept(store)
    alert = (await store.alerts(NOW))[0]
    await store.ack(alert, Ack(alert["fingerprint"], "dana", NOW, "calling"))
    shown = {a["fingerprint"]: a for a in await store.alerts(NOW)}
    assert shown[alert["fingerprint"]]["ack"]["comment"] == "calling"
    assert [a["fingerprint"] for a in await store.alerts(NOW, status="acknowledged")] == [
        alert["fingerprint"]
    ]
    request = ResolveRequest(alert["fingerprint"], account_id, "dana", "spoke to them", NOW)
    await store.request_resolve(alert, request)
    assert await store.resolve_requests(NOW) == {alert["fingerprint"]: request}
    await harness.sweeper.sweep(NOW + timedelta(minutes=1))
    assert await store.resolve_requests(NOW) == {}
    assert await store.redis.hget(store.key("acks"), alert["fingerprint"]) is None
    assert alert["fingerprint"] not in {a["fingerprint"] for a in await store.alerts(NOW)}


async def test_one_accounts_alerts_are_read_without_reading_the_fleets(
    store: TriageStore,
) -> None:
    """Found by a fleet-scale review: a drill-down read every open alert of the fleet
    (HGETALL) to show one account's, a second with 20,000 open. It now reads the
    account's entry and its acks: the same answer, whatever else the hash holds."""
    _, account_id = await swept(store)
    alert = (await store.alerts(NOW))[0]
    await store.ack(alert, Ack(alert["fingerprint"], "dana", NOW, "calling"))
    fleet_wide = await store.alerts(NOW, include_snoozed=True)
    mine = [a for a in fleet_wide if a["account_id"] == account_id]
    assert mine and await store.alerts(NOW, account_id=account_id, include_snoozed=True) == mine
    assert await store.alerts(NOW, account_id=account_id, status="acknowledged") == [
        a for a in mine if a["ack"] is not None
    ]
    assert await store.alerts(NOW, account_id="nobody") == []
    # Another account's alert the whole-hash read could not even decode: not read.
    await store.redis.hset(store.key("alerts"), "other-fingerprint", b"{not json")
    trips = RoundTrips(store)
    assert await store.alerts(NOW, account_id=account_id, include_snoozed=True) == mine
    assert trips.commands.count("HGETALL") == 2  # the snoozes and the resolve requests


async def test_the_sweep_applies_a_resolve_once_and_does_not_refire(store: TriageStore) -> None:
    harness, account_id = await swept(store)
    alert = next(a for a in await store.alerts(NOW) if a["rule"] == "account-silent")
    request = ResolveRequest(alert["fingerprint"], account_id, "dana", "on holiday", NOW)
    await store.request_resolve(alert, request)
    before = len(harness.published)
    await harness.sweeper.sweep(NOW + timedelta(minutes=1))
    events = [codec.loads(v) for _, v in harness.published[before:]]
    assert [(e["fingerprint"], e["status"]) for e in events] == [(alert["fingerprint"], "resolved")]
    assert events[0]["annotations"]["resolved_by"] == "dana"
    assert events[0]["annotations"]["resolve_reason"] == "on holiday"
    for minutes in (2, 3, 60 * 24 * 8):  # the account stays silent, past the repeat interval
        await harness.sweeper.sweep(NOW + timedelta(minutes=minutes))
    later = [codec.loads(v) for _, v in harness.published[before + 1 :]]
    assert alert["fingerprint"] not in {e["fingerprint"] for e in later}
    history = await store.history(account_id)
    assert history[0]["kind"] in ("resolved", "repeat")
    resolved = next(h for h in history if h["kind"] == "resolved")
    assert (resolved["author"], resolved["reason"]) == ("dana", "on holiday")


async def test_a_resolve_is_applied_while_the_sweeps_are_held(store: TriageStore) -> None:
    """Found by a review: with the input stalled (a quiet night, a holiday) every sweep
    was held before it read the requests, so a resolve waited for the next event, and
    one held over a day was dropped unapplied while the alert went on firing."""
    harness, account_id = await swept(store)
    alert = next(a for a in await store.alerts(NOW) if a["rule"] == "account-silent")
    asked = NOW + timedelta(minutes=5)
    request = ResolveRequest(alert["fingerprint"], account_id, "dana", "known outage", asked)
    await store.request_resolve(alert, request)
    harness.sweeper._catch_up_lag_s = 3600.0  # the default: the newest event is days old
    before = len(harness.published)
    report = await harness.sweeper.sweep(asked + timedelta(minutes=1))
    assert report.held
    events = [codec.loads(v) for _, v in harness.published[before:]]
    assert [(e["fingerprint"], e["status"]) for e in events] == [(alert["fingerprint"], "resolved")]
    assert events[0]["annotations"]["resolved_by"] == "dana"
    assert await store.resolve_requests(asked + timedelta(minutes=2)) == {}
    assert alert["fingerprint"] not in {a["fingerprint"] for a in await store.alerts(asked)}
    for hours in (2, 30):  # still held, a day later: nothing more, nothing fired again
        assert (await harness.sweeper.sweep(asked + timedelta(hours=hours))).held
    assert len(harness.published) == before + 1


async def test_a_held_sweep_builds_the_entries_redis_no_longer_has(store: TriageStore) -> None:
    """Found while reading the held sweep: it only renewed the entries' expiry, so a
    worker back in a quiet hour after its entries expired listed nothing to on-call
    until the next event arrived."""
    harness, account_id = await swept(store)
    await store.redis.delete(store.key(f"account:{account_id}"))  # expired meanwhile
    harness.sweeper._catch_up_lag_s = 3600.0  # the default: the newest event is days old
    before = len(harness.published)
    later = NOW + timedelta(hours=2)
    report = await harness.sweeper.sweep(later)
    assert report.held and len(harness.published) == before  # nothing judged
    entry = await store.account(account_id)
    assert entry is not None
    assert "account-silent" in {a["rule"] for a in entry["open_alerts"]}
    assert account_id in {e["account_id"] for e in await store.silent_accounts(later)}
    assert await store.redis.ttl(store.key(f"account:{account_id}")) > 0
    report = await harness.sweeper.sweep(later + timedelta(minutes=1))  # kept, not rebuilt
    assert report.held and await store.account(account_id) == entry


async def test_requests_nobody_applied_within_a_day_are_dropped(store: TriageStore) -> None:
    request = ResolveRequest("fp", "gone", "dana", "r", NOW)
    await store.request_resolve({"account_id": "gone", "fingerprint": "fp"}, request)
    assert await store.resolve_requests(NOW + timedelta(hours=23)) == {"fp": request}
    assert await store.resolve_requests(NOW + timedelta(days=1, seconds=1)) == {}
    assert await store.redis.hlen(store.key("resolves")) == 0


async def test_alerting_goes_on_when_redis_is_down() -> None:
    dead = TriageStore.from_url(
        f"redis://127.0.0.1:{free_port()}/0", "down", entry_ttl_s=60, timeout_s=0.5
    )
    state, account = quiet_account_state()
    errors: list[str] = []
    harness = with_store(Harness(state, account), dead, errors)
    report = await harness.sweeper.sweep(NOW)
    assert report.changes > 0 and len(harness.published) == report.changes
    assert errors == ["resolve_read", "index_write"]
    # A held sweep (the input stalled) only refreshes the index: also counted.
    assert (await harness.sweeper.sweep(NOW + timedelta(days=40))).held
    assert errors[-1] == "index_refresh"
    await dead.close()


async def test_an_entry_nothing_moved_is_kept_and_only_its_expiry_renewed(
    store: TriageStore,
) -> None:
    harness, account_id = await swept(store)
    key = store.key(f"account:{account_id}")
    first = await store.account(account_id)
    assert first is not None
    await store.redis.expire(key, 5)
    minute = timedelta(minutes=1)
    for n in range(1, REBUILD_EVERY + 1):  # the same tick, no new event: nothing moved
        await harness.sweeper.sweep(NOW + n * minute)
        assert await store.account(account_id) == first  # not built again ...
        assert await store.redis.ttl(key) > 50  # ... but kept alive
    await harness.sweeper.sweep(NOW + (REBUILD_EVERY + 1) * minute)  # in case Redis lost it
    rebuilt = await store.account(account_id)
    assert rebuilt is not None and rebuilt["swept_at"] != first["swept_at"]
    await harness.sweeper.sweep(NOW + timedelta(hours=6))  # a tick: the alerts moved
    moved = await store.account(account_id)
    assert moved is not None and moved["swept_at"] == "2026-11-23T18:00:00Z"


async def test_entries_a_failed_write_lost_are_built_again(store: TriageStore) -> None:
    harness, account_id = await swept(store)
    await store.redis.delete(store.key(f"account:{account_id}"))  # say Redis lost it
    dead = TriageStore.from_url(
        f"redis://127.0.0.1:{free_port()}/0", "down", entry_ttl_s=60, timeout_s=0.5
    )
    harness.sweeper._triage = dead  # a sweep whose write fails
    await harness.sweeper.sweep(NOW + timedelta(minutes=1))
    await dead.close()
    harness.sweeper._triage = store  # Redis is back: nothing is known to be written
    await harness.sweeper.sweep(NOW + timedelta(minutes=2))
    assert await store.account(account_id) is not None


async def test_alerts_written_while_a_sweep_publishes_are_shown_next_sweep(
    store: TriageStore,
) -> None:
    """The entry is remembered as built from the book the sweep judged: a book ingest
    writes while the sweep awaits its publishing makes the next sweep build it again."""
    state, account = quiet_account_state()
    harness = with_store(Harness(state, account), store)
    outbox = harness.sweeper._outbox
    publish = outbox._send
    account_id = state.account_id

    async def publish_while_ingest_writes(key: bytes, value: bytes) -> None:
        await publish(key, value)
        stored = harness.alerts.get(account_id)
        if stored is not None:  # ingest judges a tick meanwhile: the health moved
            book = codec.loads(stored)
            book["health"] = {"tier": "red", "value": 0.01}
            harness.alerts[account_id] = codec.dumps(book)

    outbox._send = publish_while_ingest_writes
    assert (await harness.sweeper.sweep(NOW)).changes > 0
    first = await store.account(account_id)
    assert first is not None and first["tier"] != "red"
    outbox._send = publish
    await harness.sweeper.sweep(NOW + timedelta(minutes=1))  # nothing new judged
    again = await store.account(account_id)
    assert again is not None and again["tier"] == "red"


async def test_an_entry_redis_lost_is_built_again_at_the_next_sweep(store: TriageStore) -> None:
    harness, account_id = await swept(store)
    await store.redis.delete(store.key(f"account:{account_id}"))  # lost: Redis restarted
    await harness.sweeper.sweep(NOW + timedelta(minutes=1))  # kept: its renewal finds nothing
    assert await store.account(account_id) is None
    await harness.sweeper.sweep(NOW + timedelta(minutes=2))
    assert await store.account(account_id) is not None


async def test_a_deleted_account_leaves_the_index_with_all_recorded_about_it(
    store: TriageStore,
) -> None:
    """Entry, rank, open alerts, acks, resolve requests, snoozes and history (which names
    people) go; another account's snooze and everything of the fleet's stay."""
    harness, account_id = await swept(store)
    alerts = await store.alerts(NOW)
    first, last = alerts[0], alerts[-1]
    await store.ack(first, Ack(first["fingerprint"], "dana", NOW, "calling"))
    await store.request_resolve(
        last, ResolveRequest(last["fingerprint"], account_id, "dana", "gone", NOW)
    )
    until = NOW + timedelta(days=1)
    await store.snooze(first, until=until, author="d", reason="r", now=NOW, scope="account")
    await store.snooze(first, until=until, author="d", reason="r", now=NOW)
    other = {**first, "fingerprint": "f-other", "account_id": "other-account"}
    kept = await store.snooze(other, until=until, author="d", reason="r", now=NOW, scope="account")
    assert await store.history(account_id)

    book = codec.loads(harness.alerts[account_id])
    assert await store.forget_accounts({account_id: sorted(book["states"])}) is True

    assert await store.account(account_id) is None
    assert await store.history(account_id) == []
    assert await store.alerts(NOW, include_snoozed=True) == []
    assert await store.silent_accounts(NOW, include_snoozed=True) == []
    assert await store.redis.zscore(store.key("rank"), account_id) is None
    for name in ("alerts", "acks", "resolves"):
        assert await store.redis.hlen(store.key(name)) == 0, name
    assert [s.id for s in await store.silences(NOW)] == [kept.id]
    assert await store.forget_accounts({}) is True
