"""The periodic sweep of one worker: the ticks the clock passed for idle accounts.

Rules run on a grid in event time (alerts/timeline.py). The ticks an account's events
cross are judged as the events are folded (stream/evaluator.py); the sweep, a Faust
timer on every worker, judges the ticks no event crossed, over the accounts on its
*active* partitions, each account by exactly one worker, up to the clock less
``evaluation_delay_s``. Alert states and the cursor live in the `alerts` table, keyed
by account like everything else, so a restart or a take-over neither re-fires nor
forgets an alert. Changes are kept in the book and published to the alerts topic,
keyed by fingerprint (docs/alert-events.md), once the sweep has judged every account; they
leave the book once Kafka has them (stream/alert_outbox.py).

With a triage store, the sweep also applies the resolve requests people made for its
accounts and writes its accounts' triage index in one Redis round trip after
publishing. Redis trouble is logged and counted, never raised: alerting does not
depend on Redis.

An account whose partition still has events not folded is left for the next sweep
(judged now, it would look quieter than it is). While the newest event the worker
holds is older than ``catch_up_lag_s`` (producers stopped: "our pipeline went quiet"
must not page anyone as "the account went quiet"), nothing is judged by the clock.

An account deleted from the accounts topic (a tombstone) is removed here too
(:meth:`Sweeper.remove`): its state and alert book go, its firing alerts resolve, and
it leaves the triage index; a sweep under way passes it by.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Collection, Mapping, MutableMapping, Sequence
from datetime import datetime
from typing import Any, Protocol, TypeVar

from alerts.evaluation import AccountRun, Notice, Reuse, RuleSet
from alerts.events import alert_event
from alerts.lifecycle import AlertState, Change
from alerts.rules import Rule
from alerts.sweep import (
    AccountAlerts,
    OnFailure,
    close_deleted_account,
    log_failure,
    resolve_by_hand,
    stand_down_for_status,
)
from alerts.triage import ResolveRequest
from stream import codec
from stream.accounts import Account
from stream.alert_outbox import AlertOutbox
from stream.engagement import EngagementState
from stream.pipeline import is_recreated
from stream.triage_store import IndexBatch, TriageStore

__all__ = ["SweepReport", "Sweeper"]

log = logging.getLogger(__name__)

YIELD_EVERY = 25
"""Accounts evaluated between two yields to the event loop (a sweep can be long)."""

REDIS_TIMEOUT_S = 5.0
"""Longest a sweep waits for one triage-store call (the store's sockets time out sooner)."""

REBUILD_EVERY = 5
"""Sweeps an unchanged triage entry is kept (its expiry renewed) before it is built and
written again anyway (Redis may have lost it)."""


class CurrentState(Protocol):
    """The account's state now, decoded if need be (``decode=False``: only if held)."""

    def __call__(self, account_id: str, *, decode: bool = True) -> EngagementState | None: ...


T = TypeVar("T")


class SweepReport:
    """What one sweep did: for logs and metrics."""

    def __init__(self) -> None:
        self.accounts = 0
        self.held = False
        self.behind = 0
        """Accounts left for the next sweep: their partition had events not folded yet."""
        self.changed: list[Change] = []
        self.open: list[AlertState] = []
        self.seconds = 0.0
        self.tiers: Counter[str] = Counter()
        """Accounts per health tier (those the health rule scored)."""
        self.silent_accounts = 0
        """Accounts with an open alert of an account-wide silence rule."""
        self.republished = 0
        """Alert events an earlier publish left in their books, queued again."""
        self.unsent = 0
        """Alert events the books still keep once the sweep has published: not yet
        acknowledged by Kafka."""
        self.holding: list[str] = []
        """Accounts whose books held alert events to publish during the sweep."""

    @property
    def changes(self) -> int:
        return len(self.changed)


class Sweeper:
    """Evaluates ``rules`` over the owned accounts and publishes what changed."""

    def __init__(
        self,
        rules: Sequence[Rule],
        owned_states: Callable[[], list[tuple[str, Any]]],
        accounts: Mapping[str, Any],
        alerts: Any,
        *,
        outbox: AlertOutbox,
        catch_up_lag_s: float,
        behind: Callable[[str], bool] = lambda account_id: False,
        triage: TriageStore | None = None,
        on_redis_error: Callable[[str], None] = lambda operation: None,
        step_s: float = 21_600.0,
        delay_s: float = 0.0,
        current_state: CurrentState | None = None,
        reuse_for: Callable[[str, EngagementState], Reuse] | None = None,
        on_rule_failure: OnFailure = log_failure,
        forget_state: Callable[[str], object] = lambda account_id: None,
        retire_states: Callable[[Collection[str]], object] = lambda account_ids: None,
        deleted: MutableMapping[str, Any],
    ) -> None:
        self._ruleset = RuleSet(tuple(rules), step_s, on_rule_failure)
        self._current_state = current_state
        """The account's state now (the ingest pipeline's own object); without it, the
        states are decoded from ``owned_states``, each as its account is judged."""
        self._reuse_for = reuse_for
        self._delay_s = delay_s
        self._silence_rules = frozenset(
            rule.name for rule in rules if rule.kind == "silence" and rule.scope == "account"
        )
        self._owned_states = owned_states
        self._accounts = accounts
        self._alerts = alerts
        self._outbox = outbox
        """Every alert event goes through it (the evaluator's, in the worker)."""
        self._catch_up_lag_s = catch_up_lag_s
        self._behind = behind
        self._triage = triage
        self._on_redis_error = on_redis_error
        self._redis_failing = False
        self._indexed: dict[str, tuple[Any, int]] = {}
        """account_id -> what its last written triage entry was built from, and the
        sweeps since that kept it as it was."""
        self._forget_state = forget_state
        """Drops a deleted account's engagement state (the ingest pipeline's ``forget``)."""
        self._retire_states = retire_states
        """Tells ingest that accounts are being deleted (the pipeline's ``retire``)."""
        self._removed: set[str] = set()
        """Accounts deleted since the current sweep began: it passes them by."""
        self._removing: frozenset[str] = frozenset()
        """The accounts of the removal under way, if any."""
        self._deleted = deleted
        """Deletion markers (account_id -> when): an owned state with one is a removal
        not finished (its alert events not yet published, or a worker stopped in it)."""
        self._unindexed: dict[str, list[str]] = {}
        """Deleted accounts (and their alerts' fingerprints) Redis has yet to forget."""
        self._one_account = asyncio.Lock()
        """Held while one account is judged and its book written, and while accounts
        are removed: a removal never lands between an account's changes."""

    async def sweep(self, now: datetime) -> SweepReport:
        report = SweepReport()
        started = time.perf_counter()
        # A removal under way (it holds the lock) keeps its accounts out: their states
        # are read below, before it deletes them.
        self._removed = set(self._removing)
        owned = self._owned_states()
        marked = [a for a, _ in owned if a in self._deleted and a not in self._removed]
        if marked:  # removals left unfinished (a removal under way is left to itself)
            await self._finish_removals(marked, now, report)
            owned = [(a, value) for a, value in owned if a not in self._removed]
        if not self._any_recent(owned, now):
            await self._hold(owned, now, report)
            return report
        if self._unindexed:
            await self._forget_in_index()
        resolves = await self._resolve_requests(now)
        batch = IndexBatch() if self._triage is not None else None
        waiting: list[str] = []
        for index, (account_id, value) in enumerate(owned, 1):
            if self._behind(account_id):
                # Its events are still being read: judged by the clock now, it would
                # look quieter than it is (and than replay would judge it).
                waiting.append(account_id)
                continue
            # Decoded here, one account at a time: a worker holds no more decoded states
            # than ``decoded_states`` allows, whatever it owns. The pipeline's own object
            # if it holds the account (its evaluator's reuse belongs to it).
            held = self._held(account_id)
            async with self._one_account:
                if account_id in self._removed:
                    continue  # deleted since this sweep listed the accounts
                state = held or self._decoded(account_id, value)
                if state is None:
                    continue
                report.accounts += 1
                await self._sweep_one(
                    state, now, report, resolves.get(account_id, []), batch, shared=held is not None
                )
            if index % YIELD_EVERY == 0:
                await asyncio.sleep(0)  # let ingest and the web server run between accounts
        await self._publish(report)
        report.seconds = time.perf_counter() - started
        report.behind = len(waiting)
        if batch is not None:
            owned_ids = {account_id for account_id, _ in owned} - self._removed
            batch.leave_out(self._removed)
            self._indexed = {a: v for a, v in self._indexed.items() if a in owned_ids}
            lost = await self._redis("index_write", lambda t: t.write_index(batch))
            if lost is None:  # not written: build them all again next time
                self._indexed.clear()
            else:
                self._indexed.update((a, (sig, 0)) for a, sig in batch.built.items())
                for account_id in lost:  # kept, but Redis had lost it: build it next time
                    self._indexed.pop(account_id, None)
            if waiting:
                await self._redis("index_refresh", lambda t: t.refresh_index(waiting))
        return report

    async def remove(self, deleted: Mapping[str, bytes | None], now: datetime) -> list[Change]:
        """Deleted accounts (account_id -> the record each had, for the alert events):
        their firing alerts resolve, annotated ``resolved_by: engagewatch`` and
        published; then their state and alert book go, and they leave the triage index.
        Returns the resolves.

        The resolves are kept in the books and published (with whatever the books
        kept from before, after any flush under way) before the state and book go. If
        Kafka does not take them all, that account's removal stays unfinished: it is
        judged no more, its events are refused, and each sweep tries again
        (:meth:`_finish_removals`). Nothing else writes the books meanwhile: ingest
        refuses the accounts' events from the start (``retire_states``), and sweeps
        wait for the lock, then pass them by."""
        resolved, waiting = await self._remove(deleted, now)
        if waiting:
            log.warning(
                "deleted accounts %s keep their state and alert book until Kafka takes "
                "their alert events; each sweep tries again",
                ", ".join(sorted(waiting)),
            )
        return resolved

    async def _remove(
        self, deleted: Mapping[str, bytes | None], now: datetime
    ) -> tuple[list[Change], list[str]]:
        """:meth:`remove`; also returns the accounts whose books still hold events."""
        async with self._one_account:
            self._removing = frozenset(deleted)
            self._removed.update(deleted)
            self._retire_states(self._removing)
            resolved: list[Change] = []
            try:
                self._close(deleted, now, resolved)
                await self._outbox.flush()
            finally:
                self._removing = frozenset()
            waiting = [a for a in deleted if self._book(a).unsent]
            fingerprints: dict[str, list[str]] = {}
            for account_id in deleted:
                if account_id in waiting:
                    continue  # its marker stays: the next sweep finishes it
                self._forget_state(account_id)
                if is_recreated(self._deleted.get(account_id)):
                    del self._deleted[account_id]  # published again meanwhile: it lives afresh
                    log.info("deleted account %s removed; its new record takes over", account_id)
                self._indexed.pop(account_id, None)
                stored = self._alerts.pop(account_id, None)
                book = AccountAlerts.from_dict(codec.loads(stored) if stored else None)
                fingerprints[account_id] = sorted(book.states)
        if self._triage is not None:
            self._unindexed.update(fingerprints)
            await self._forget_in_index()
        return resolved, waiting

    async def _publish(self, report: SweepReport) -> None:
        """Publish what the sweep judged and what the books kept from before; count
        what still waits for Kafka."""
        await self._outbox.flush()
        report.unsent = sum(len(self._book(a).unsent) for a in report.holding)

    async def _finish_removals(self, marked: list[str], now: datetime, report: SweepReport) -> None:
        """Owned states with a deletion marker are removals left unfinished: waiting for
        Kafka to take their alert events, or stopped by a worker's end (their record is
        gone, so a resolve still owed names no account record). Try again; what still
        waits counts among the events the books keep."""
        _, waiting = await self._remove(dict.fromkeys(marked), now)
        report.holding.extend(waiting)
        self._removed.update(marked)

    def _close(
        self, deleted: Mapping[str, bytes | None], now: datetime, resolved: list[Change]
    ) -> None:
        """Resolve the deleted accounts' firing alerts, keeping the alert events in their
        books behind whatever an earlier publish left there, and queue them; adds the
        changes to ``resolved``."""
        for account_id, record in deleted.items():
            book = self._book(account_id)
            changes = close_deleted_account(book, now)
            account = Account.from_json(record) if record else None
            events = [
                (c.alert.fingerprint.encode(), codec.dumps(alert_event(c, account, c.at)))
                for c in changes
            ]
            self._outbox.queue(account_id, book, events)
            if book.changed:
                self._alerts[account_id] = codec.dumps(book.to_dict())
            resolved.extend(changes)

    def _book(self, account_id: str) -> AccountAlerts:
        stored = self._alerts.get(account_id)
        return AccountAlerts.from_dict(codec.loads(stored) if stored else None)

    async def _forget_in_index(self) -> None:
        """Take the deleted accounts out of the triage index; kept for the next sweep
        to try again if Redis fails (an entry left would show for ``entry_ttl_s``, the
        history for 90 days)."""
        gone = dict(self._unindexed)
        if await self._redis("forget_accounts", lambda t: t.forget_accounts(gone)):
            for account_id in gone:
                self._unindexed.pop(account_id, None)

    def _held(self, account_id: str) -> EngagementState | None:
        """The pipeline's own decoded state of the account, if it holds one."""
        if self._current_state is None:
            return None
        return self._current_state(account_id, decode=False)

    def _decoded(self, account_id: str, value: Any) -> EngagementState | None:
        """The account's state now (the table's latest, with a pipeline)."""
        if self._current_state is None:
            return EngagementState.from_json(value)
        return self._current_state(account_id)

    def _any_recent(self, owned: Sequence[tuple[str, Any]], now: datetime) -> bool:
        """Whether some owned account's newest event is within ``catch_up_lag_s``: if
        none is, the input has stalled. States held decoded are asked first, then the
        others decoded one at a time and let go, up to the first recent one."""
        since = now.timestamp() - self._catch_up_lag_s

        def recent(state: EngagementState | None) -> bool:
            return state is not None and state.newest_at is not None and state.newest_at >= since

        if any(recent(self._held(account_id)) for account_id, _ in owned):
            return True
        return any(recent(self._decoded(account_id, value)) for account_id, value in owned)

    async def _hold(
        self, owned: Sequence[tuple[str, Any]], now: datetime, report: SweepReport
    ) -> None:
        """A sweep held while the input is stalled (a quiet night, a holiday): nothing
        judged by the clock, but the people's resolves applied and published, not left
        waiting for the next event (a request nobody applies in a day is dropped), and
        the triage entries kept alive, or built again where Redis has none: a worker
        started in a quiet hour after its entries expired showed on-call nothing."""
        report.held = bool(owned)
        if self._triage is None or not owned:
            return
        resolves = await self._resolve_requests(now)
        ids = [account_id for account_id, _ in owned]
        missing = set(await self._redis("index_refresh", lambda t: t.refresh_index(ids)) or ())
        tended = [(a, value) for a, value in owned if a in resolves or a in missing]
        if not tended:
            return
        batch = IndexBatch()
        for account_id, value in tended:
            async with self._one_account:
                state = None if account_id in self._removed else self._decoded(account_id, value)
                if state is None:
                    continue
                self._indexed.pop(account_id, None)  # its entry built now, and afresh next time
                requests = resolves.get(account_id, [])
                await self._sweep_one(state, now, report, requests, batch, judge=False)
        await self._publish(report)
        await self._redis("index_write", lambda t: t.write_index(batch))

    async def _resolve_requests(self, now: datetime) -> dict[str, list[ResolveRequest]]:
        """Pending resolve requests by account (any worker's; each applies its own)."""
        requests = await self._redis("resolve_read", lambda t: t.resolve_requests(now))
        by_account: dict[str, list[ResolveRequest]] = {}
        for request in (requests or {}).values():
            by_account.setdefault(request.account_id, []).append(request)
        return by_account

    async def _redis(self, operation: str, call: Callable[[TriageStore], Awaitable[T]]) -> T | None:
        """One triage-store call; any failure is logged (once per outage) and counted."""
        if self._triage is None:
            return None
        try:
            async with asyncio.timeout(REDIS_TIMEOUT_S):
                result = await call(self._triage)
        # Anything, not only Redis errors: a bad stored value must not stop alerting either.
        except Exception as exc:
            self._on_redis_error(operation)
            if not self._redis_failing:
                log.warning("triage index: %s failed: %s: %s", operation, type(exc).__name__, exc)
            self._redis_failing = True
            return None
        if self._redis_failing:
            log.info("triage index: %s works again", operation)
            self._redis_failing = False
        return result

    async def _sweep_one(
        self,
        state: EngagementState,
        now: datetime,
        report: SweepReport,
        resolves: Sequence[ResolveRequest] = (),
        batch: IndexBatch | None = None,
        *,
        shared: bool = False,
        judge: bool = True,
    ) -> None:
        """Judge one account; ``shared``: ``state`` is the ingest pipeline's own object,
        whose evaluations' reuse the evaluator keeps (a copy decoded here has none);
        not ``judge``: only apply ``resolves`` (the rules are held)."""
        record = self._accounts.get(state.account_id)
        account = Account.from_json(record) if record else None
        stored = self._alerts.get(state.account_id)
        book = AccountAlerts.from_dict(codec.loads(stored) if stored else None)
        run = AccountRun(self._ruleset, state, account, book)
        if self._reuse_for is not None and shared:
            run.reuse = self._reuse_for(state.account_id, state)
        changes = list(run.on_clock(now.timestamp() - self._delay_s)) if judge else []
        if judge and account is not None:  # a status just changed closes them now, not at a tick
            status_changes = stand_down_for_status(self._ruleset.rules, account.status, book, now)
            changes += [Notice(change, None) for change in status_changes]
        # People's resolves after the ticks (which are in the past): the resolved alert
        # is then held until its condition clears.
        changes += [
            Notice(change, None)
            for r in resolves
            if (change := resolve_by_hand(book, r.fingerprint, now, r.author, r.reason))
        ]
        if book.health is not None:
            report.tiers[str(book.health["tier"])] += 1
        if any(alert.rule in self._silence_rules for alert in book.open()):
            report.silent_accounts += 1
        events = []
        for notice in changes:
            change = notice.change
            # Generated at the instant judged (a tick; now for a person's resolve).
            event = alert_event(change, account, change.at, inhibited_by=notice.inhibited_by)
            events.append((change.alert.fingerprint.encode(), codec.dumps(event)))
        # Kept in the book written next, behind what an earlier publish left there; the
        # sweep publishes them all once every account is judged.
        report.republished += self._outbox.retry(state.account_id, book)
        self._outbox.queue(state.account_id, book, events)
        written = stored
        if book.changed:
            written = self._alerts[state.account_id] = codec.dumps(book.to_dict())
        if book.unsent:  # the triage entry shows the states: the book as it will be settled
            written = codec.dumps(book.to_dict(with_unsent=False))
            report.holding.append(state.account_id)
        report.changed.extend(notice.change for notice in changes)
        report.open.extend(book.open())
        if batch is not None:
            changed = [n.change for n in changes]
            self._index(
                batch,
                state,
                account=account,
                record=record,
                book=book,
                book_bytes=written,
                changes=changed,
                now=now,
            )
            batch.done_resolves.extend(r.fingerprint for r in resolves)

    def _index(
        self,
        batch: IndexBatch,
        state: EngagementState,
        *,
        account: Account | None,
        record: Any,
        book: AccountAlerts,
        book_bytes: Any,
        changes: list[Change],
        now: datetime,
    ) -> None:
        """The account's triage entry, built again only when something it shows moved
        (its events, alerts, health, record or local day), or every few sweeps in case
        Redis lost it; otherwise its expiry is renewed."""
        account_id = state.account_id
        signature = (
            state.local_day(now),
            state.newest_at,
            state.total_events,
            record,
            book_bytes,  # the book the entry is built from, not one written since
        )
        written = self._indexed.get(account_id)
        unchanged = not changes and written is not None and written[0] == signature
        if unchanged and written is not None and written[1] < REBUILD_EVERY:
            batch.kept.append(account_id)
            self._indexed[account_id] = (signature, written[1] + 1)
            return
        try:
            batch.add(state, account, book.states, book.health, changes, now=now)
        except Exception:  # the index serves people; a bug in it must not stop alerting
            log.exception("triage index: no entry for %s", account_id)
            return
        batch.built[account_id] = signature
