"""Backtesting one account in event time: fold its history, sweep the rules on a clock.

Pure and per account: the account's events are folded in order, and at every tick of
``step`` (aligned to the epoch, so runs agree) the rules are swept with "now" = the
tick, over exactly the events that occurred before it. The rule judge
(``bench/judge_rules.py``) uses it to measure the default rules; replay will build on
it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from alerts.evaluate import Context
from alerts.lifecycle import Change
from alerts.rules import Rule
from alerts.sweep import AccountAlerts, inhibitor, sweep_account
from stream.accounts import Account
from stream.engagement import EngagementState, StatePolicy, fold_events
from stream.events import UsageEvent

__all__ = ["Notice", "backtest_account", "ticks"]


@dataclass(frozen=True, slots=True)
class Notice:
    """One change the engine would have published, and whether it was inhibited."""

    change: Change
    inhibited_by: str | None


def ticks(start: datetime, end: datetime, step: timedelta) -> list[datetime]:
    """Sweep times in ``(start, end]``, on multiples of ``step`` since the epoch."""
    step_s = step.total_seconds()
    first = (int(start.timestamp() // step_s) + 1) * step_s
    times = []
    moment = first
    while moment <= end.timestamp():
        times.append(datetime.fromtimestamp(moment, UTC))
        moment += step_s
    return times


def backtest_account(
    rules: Sequence[Rule],
    account: Account,
    events: Sequence[UsageEvent],
    start: datetime,
    end: datetime,
    *,
    step: timedelta = timedelta(hours=6),
    policy: StatePolicy | None = None,
) -> list[Notice]:
    """Every alert change the rules would have made for ``account`` from start to end."""
    state = EngagementState(account.account_id, timezone=account.timezone)
    alerts = AccountAlerts()
    ordered = sorted(events, key=lambda e: (e.occurred_at, e.event_id))
    notices: list[Notice] = []
    cursor = 0
    for tick in ticks(start, end, step):
        upto = cursor
        while upto < len(ordered) and ordered[upto].occurred_at < tick:
            upto += 1
        if upto > cursor:
            fold_events(state, ordered[cursor:upto], policy)
            cursor = upto
        if state.newest_at is not None:
            for change in sweep_account(rules, Context(state, account, tick), alerts):
                notices.append(Notice(change, inhibitor(change, alerts)))
    return notices
