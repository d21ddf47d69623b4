"""The periodic rule sweep of one worker: its own accounts, its own alerts.

Every worker runs it (a Faust timer) over the accounts on its *active* partitions, so
each account is evaluated by exactly one worker. Alert states live in the `alerts`
table, keyed by account like everything else, so a restart or a take-over neither
re-fires nor forgets an alert. Changes are published to the alerts topic, keyed by
fingerprint (CONTRACTS.md).

With a triage store, the sweep also applies the resolve requests people made for its
accounts (before evaluating, so a resolved alert is not re-fired at once) and writes its
accounts' triage index in one Redis round trip after publishing. Redis trouble is
logged and counted, never raised: alerting does not depend on Redis.

While the input is behind, nothing is evaluated: while the reader still has a backlog
on this worker's partitions (accounts whose events are in it would look silent), or
while the newest event the worker holds is older than ``catch_up_lag_s`` (producers
stopped: "our pipeline went quiet" must not page anyone as "the account went quiet").
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, TypeVar

from alerts.evaluate import Context
from alerts.events import alert_event
from alerts.lifecycle import AlertState, Change, Finding
from alerts.rules import Rule
from alerts.sweep import AccountAlerts, inhibitor, resolve_by_hand, sweep_account
from alerts.triage import ResolveRequest
from stream import codec
from stream.accounts import Account
from stream.engagement import EngagementState
from stream.triage_store import IndexBatch, TriageStore

__all__ = ["SweepReport", "Sweeper"]

log = logging.getLogger(__name__)

YIELD_EVERY = 25
"""Accounts evaluated between two yields to the event loop (a sweep can be long)."""

REDIS_TIMEOUT_S = 5.0
"""Longest a sweep waits for one triage-store call (the store's sockets time out sooner)."""

Publish = Callable[[bytes, bytes], Awaitable[None]]
T = TypeVar("T")


class SweepReport:
    """What one sweep did: for logs and metrics."""

    def __init__(self) -> None:
        self.accounts = 0
        self.held = False
        self.changed: list[Change] = []
        self.open: list[AlertState] = []
        self.seconds = 0.0
        self.tiers: Counter[str] = Counter()
        """Accounts per health tier (those the health rule scored)."""
        self.silent_accounts = 0
        """Accounts with an open alert of an account-wide silence rule."""

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
        publish: Publish,
        catch_up_lag_s: float,
        reading_backlog: Callable[[], bool] = lambda: False,
        triage: TriageStore | None = None,
        on_redis_error: Callable[[str], None] = lambda operation: None,
    ) -> None:
        self._rules = rules
        self._health_rules = frozenset(rule.name for rule in rules if rule.kind == "health")
        self._silence_rules = frozenset(
            rule.name for rule in rules if rule.kind == "silence" and rule.scope == "account"
        )
        self._owned_states = owned_states
        self._accounts = accounts
        self._alerts = alerts
        self._publish = publish
        self._catch_up_lag_s = catch_up_lag_s
        self._reading_backlog = reading_backlog
        self._triage = triage
        self._on_redis_error = on_redis_error
        self._redis_failing = False

    async def sweep(self, now: datetime) -> SweepReport:
        report = SweepReport()
        started = time.perf_counter()
        states = [EngagementState.from_json(value) for _, value in self._owned_states()]
        newest = max((s.newest_at for s in states if s.newest_at is not None), default=None)
        stalled = newest is None or now.timestamp() - newest > self._catch_up_lag_s
        if stalled or self._reading_backlog():
            report.held = bool(states)
            if self._triage is not None and states:
                ids = [s.account_id for s in states]
                await self._redis("index_refresh", lambda t: t.refresh_index(ids))
            return report
        resolves = await self._resolve_requests(now)
        batch = IndexBatch() if self._triage is not None else None
        for index, state in enumerate(states, 1):
            report.accounts += 1
            await self._sweep_one(state, now, report, resolves.get(state.account_id, []), batch)
            if index % YIELD_EVERY == 0:
                await asyncio.sleep(0)  # let ingest and the web server run between accounts
        report.seconds = time.perf_counter() - started
        if batch is not None:
            await self._redis("index_write", lambda t: t.write_index(batch))
        return report

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
    ) -> None:
        record = self._accounts.get(state.account_id)
        account = Account.from_json(record) if record else None
        stored = self._alerts.get(state.account_id)
        book = AccountAlerts.from_dict(codec.loads(stored) if stored else None)
        # People's resolves first: the rules then see a resolved alert and hold it.
        changes = [
            change
            for r in resolves
            if (change := resolve_by_hand(book, r.fingerprint, now, r.author, r.reason))
        ]
        findings: list[Finding] = []
        changes += sweep_account(self._rules, Context(state, account, now), book, findings)
        health = [f for f in findings if f.rule in self._health_rules]
        tier = health[0].evidence.get("tier") if health else None
        if tier is not None:
            report.tiers[str(tier)] += 1
        if any(alert.rule in self._silence_rules for alert in book.open()):
            report.silent_accounts += 1
        if book.changed:
            self._alerts[state.account_id] = codec.dumps(book.to_dict())
        for change in changes:
            event = alert_event(change, account, now, inhibited_by=inhibitor(change, book))
            await self._publish(change.alert.fingerprint.encode(), codec.dumps(event))
        report.changed.extend(changes)
        report.open.extend(book.open())
        if batch is not None:
            try:
                batch.add(state, account, book.states, findings, changes, now=now)
            except Exception:  # the index serves people; a bug in it must not stop alerting
                log.exception("triage index: no entry for %s", state.account_id)
            batch.done_resolves.extend(r.fingerprint for r in resolves)
