"""Backtesting one account in event time: its history through its timeline.

Pure and per account: the events are folded in the order given (the order they would
have arrived in), and the rules are evaluated at every tick of the grid, over exactly
the events that arrived before the first one at or past the tick, then on to ``end``
as if the clock had run (alerts/timeline.py). The live worker runs the same
:class:`~alerts.evaluation.AccountRun`, so replay and live agree. The rule judge
(``bench/judge_rules.py``) and ``engagewatch replay`` use it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from operator import itemgetter

from alerts.evaluation import AccountRun, Notice, RuleSet
from alerts.rules import Rule, judged_features
from alerts.sweep import AccountAlerts, OnFailure, log_failure
from stream.accounts import Account
from stream.engagement import EngagementState, StatePolicy, fold_records
from stream.events import Record, UsageEvent, record_of

__all__ = ["DEFAULT_STEP", "Notice", "backtest_account", "backtest_records", "ticks"]

DEFAULT_STEP = timedelta(hours=6)


def ticks(start: datetime, end: datetime, step: timedelta) -> list[datetime]:
    """Grid instants in ``(start, end]``, on multiples of ``step`` since the epoch."""
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
    step: timedelta = DEFAULT_STEP,
    policy: StatePolicy | None = None,
) -> list[Notice]:
    """Every alert change the rules would have made for ``account`` up to ``end``.

    ``events`` in arrival order; those before ``start`` only build up state (and
    cannot fire: a backtest judges from ``start`` on).
    """
    records = [record_of(event) for event in events]
    return backtest_records(
        rules, account.account_id, records, start, end, account=account, step=step, policy=policy
    )


def backtest_records(
    rules: Sequence[Rule],
    account_id: str,
    records: Sequence[Record],
    start: datetime,
    end: datetime,
    *,
    account: Account | None,
    step: timedelta = DEFAULT_STEP,
    policy: StatePolicy | None = None,
    times: Sequence[float] | None = None,
    on_failure: OnFailure = log_failure,
    folded: Counter[str] | None = None,
) -> list[Notice]:
    """:func:`backtest_account` on decoded records (``stream.events.decode_batch``) of
    ``account_id``, whose record ``account`` may be missing: judged then as a worker
    judges an account it has no record of (no metadata, UTC days).

    ``times``: the records' occurrence times, if the caller has them already;
    ``on_failure``: told of a rule that raised (it then judged nothing, as live);
    ``folded`` counts the events the fold left out: ``late`` (older than the lateness
    allows: the worker dead-letters them) and ``duplicate``."""
    zone = account.timezone if account is not None else "UTC"  # as live: stream/pipeline.py
    state = EngagementState(account_id, timezone=zone)
    ruleset = RuleSet(tuple(rules), step.total_seconds(), on_failure)
    run = AccountRun(ruleset, state, account, AccountAlerts())
    if times is None:
        times = list(map(_TIME, records))
    codes = list(map(_CODE, records))
    kept = (policy or StatePolicy()).keeping(judged_features(rules))  # as live: stream/app.py
    run.on_events(times, codes, lambda i, j: _fold(state, records[i:j], kept, folded))
    run.on_clock(end.timestamp())
    return [notice for notice in run.notices if notice.change.at >= start]


_TIME = itemgetter(2)
_CODE = itemgetter(1)


def _fold(
    state: EngagementState,
    records: Sequence[Record],
    policy: StatePolicy | None,
    folded: Counter[str] | None,
) -> None:
    outcome = fold_records(state, records, policy)
    if folded is not None and (outcome.late or outcome.duplicates):
        folded["late"] += len(outcome.late)
        folded["duplicate"] += outcome.duplicates
