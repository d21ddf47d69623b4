"""The periodic rule sweep of one worker: its own accounts, its own alerts.

Every worker runs it (a Faust timer) over the accounts on its *active* partitions, so
each account is evaluated by exactly one worker. Alert states live in the `alerts`
table, keyed by account like everything else, so a restart or a take-over neither
re-fires nor forgets an alert. Changes are published to the alerts topic, keyed by
fingerprint (CONTRACTS.md).

While the input is behind, nothing is evaluated: while the reader still has a backlog
on this worker's partitions (accounts whose events are in it would look silent), or
while the newest event the worker holds is older than ``catch_up_lag_s`` (producers
stopped: "our pipeline went quiet" must not page anyone as "the account went quiet").
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from alerts.evaluate import Context
from alerts.events import alert_event
from alerts.lifecycle import AlertState, Change
from alerts.rules import Rule
from alerts.sweep import AccountAlerts, inhibitor, sweep_account
from stream import codec
from stream.accounts import Account
from stream.engagement import EngagementState

__all__ = ["SweepReport", "Sweeper"]

log = logging.getLogger(__name__)

YIELD_EVERY = 25
"""Accounts evaluated between two yields to the event loop (a sweep can be long)."""

Publish = Callable[[bytes, bytes], Awaitable[None]]


class SweepReport:
    """What one sweep did: for logs and metrics."""

    def __init__(self) -> None:
        self.accounts = 0
        self.held = False
        self.changed: list[Change] = []
        self.open: list[AlertState] = []
        self.seconds = 0.0

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
    ) -> None:
        self._rules = rules
        self._owned_states = owned_states
        self._accounts = accounts
        self._alerts = alerts
        self._publish = publish
        self._catch_up_lag_s = catch_up_lag_s
        self._reading_backlog = reading_backlog

    async def sweep(self, now: datetime) -> SweepReport:
        report = SweepReport()
        started = time.perf_counter()
        states = [EngagementState.from_json(value) for _, value in self._owned_states()]
        newest = max((s.newest_at for s in states if s.newest_at is not None), default=None)
        stalled = newest is None or now.timestamp() - newest > self._catch_up_lag_s
        if stalled or self._reading_backlog():
            report.held = bool(states)
            return report
        for index, state in enumerate(states, 1):
            report.accounts += 1
            await self._sweep_one(state, now, report)
            if index % YIELD_EVERY == 0:
                await asyncio.sleep(0)  # let ingest and the web server run between accounts
        report.seconds = time.perf_counter() - started
        return report

    async def _sweep_one(self, state: EngagementState, now: datetime, report: SweepReport) -> None:
        record = self._accounts.get(state.account_id)
        account = Account.from_json(record) if record else None
        stored = self._alerts.get(state.account_id)
        book = AccountAlerts.from_dict(codec.loads(stored) if stored else None)
        changes = sweep_account(self._rules, Context(state, account, now), book)
        if book.changed:
            self._alerts[state.account_id] = codec.dumps(book.to_dict())
        for change in changes:
            event = alert_event(change, account, now, inhibited_by=inhibitor(change, book))
            await self._publish(change.alert.fingerprint.encode(), codec.dumps(event))
        report.changed.extend(changes)
        report.open.extend(book.open())
