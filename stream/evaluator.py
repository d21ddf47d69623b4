"""Event-driven evaluation in the worker: the ticks an account's events cross, judged
as the events are folded (alerts/timeline.py), exactly as replay does.

The ingest pipeline hands each account's new events here instead of folding them
itself. Most batches cross no tick: a cursor per account, kept in memory, answers
that without reading the account's alert book. When a tick is crossed (or an NPS
answer arrives) the book is loaded, the rules run through
:class:`~alerts.evaluation.AccountRun`, and the book is written back once, keeping the
alert events it caused until they are published (:attr:`outbox`,
stream/alert_outbox.py): after the batch's state is written, :meth:`flush` publishes
them. The sweep and an account's deletion queue theirs in the same outbox, so an
alert's ``resolved`` never overtakes its ``firing`` on the alerts topic.

Tables are plain mappings (Faust tables in the worker), so this stays testable
without Kafka.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, MutableMapping, Sequence
from typing import Any

from alerts.evaluation import AccountRun, Reuse, RuleSet
from alerts.events import alert_event
from alerts.lifecycle import Change
from alerts.sweep import AccountAlerts
from alerts.timeline import next_tick
from stream import codec
from stream.accounts import Account
from stream.alert_outbox import AlertOutbox, Flushed, Send
from stream.engagement import EngagementState
from stream.events import Record

__all__ = ["LiveEvaluator"]


class LiveEvaluator:
    """Judges the ticks crossed by incoming events; publishes after each batch."""

    def __init__(
        self,
        ruleset: RuleSet,
        accounts: Mapping[str, Any],
        alerts: MutableMapping[str, Any],
        publish: Send,
        on_changes: Callable[[list[Change]], None] = lambda changes: None,
        *,
        reuse_limit: int = 10_000,
        on_publish_failure: Callable[[BaseException], None] = lambda error: None,
        owns: Callable[[str], bool] = lambda account_id: True,
    ) -> None:
        self._ruleset = ruleset
        self._accounts = accounts
        self._alerts = alerts
        self.outbox = AlertOutbox(alerts, publish, on_publish_failure, owns=owns)
        """Every alert event the worker publishes goes through it, in the order judged."""
        self._on_changes = on_changes
        self._cursors: dict[str, float] = {}
        """account_id -> the last evaluated instant seen (it can only be behind)."""
        self._reuse: dict[str, tuple[EngagementState, Reuse]] = {}
        """account_id -> what its evaluations share, for the state object it was
        computed on (the pipeline keeps states decoded between batches)."""
        self._reuse_limit = reuse_limit
        self._trigger_codes = ruleset.trigger_codes

    def fold(
        self,
        account_id: str,
        state: EngagementState,
        records: Sequence[Record],
        fold: Callable[[int, int], None],
    ) -> None:
        """Fold ``[start, end)`` slices of the account's new records, judging on the way.

        The common case, no tick crossed and no trigger, builds nothing per event."""
        if not self._ruleset.rules:  # nothing to judge: fold as if there were no grid
            fold(0, len(records))
            return
        cursor = self._cursors.get(account_id)
        if cursor is not None:
            boundary = next_tick(cursor, self._step)
            triggers = self._trigger_codes
            quiet = all(r[2] < boundary and r[1] not in triggers for r in records)
            if quiet:
                fold(0, len(records))
                return
        times = [record[2] for record in records]
        codes = [record[1] for record in records]
        stored = self._alerts.get(account_id)
        book = AccountAlerts.from_dict(codec.loads(stored) if stored else None)
        record = self._accounts.get(account_id)
        account = Account.from_json(record) if record else None
        run = AccountRun(
            self._ruleset, state, account, book, reuse=self.reuse_for(account_id, state)
        )
        notices = run.on_events(times, codes, fold)
        events = []
        for notice in notices:
            change = notice.change
            # Generated at the instant judged, as replay writes it: the same bytes.
            event = alert_event(change, account, change.at, inhibited_by=notice.inhibited_by)
            events.append((change.alert.fingerprint.encode(), codec.dumps(event)))
        if events:
            self.outbox.queue(account_id, book, events)  # kept in the book written next
        if book.changed:
            self._alerts[account_id] = codec.dumps(book.to_dict())
        if book.evaluated_through is not None:
            self._cursors[account_id] = book.evaluated_through
        if notices:
            self._on_changes([notice.change for notice in notices])

    async def flush(self) -> Flushed:
        """Publish the alert events judged so far (stream/alert_outbox.py)."""
        return await self.outbox.flush()

    def forget(self) -> None:
        """Drop the cursors (partitions moved): the books are the truth."""
        self._cursors.clear()
        self._reuse.clear()

    def forget_account(self, account_id: str) -> None:
        """The account was deleted, its book with it: its cursor must not skip the
        first ticks of an account of the same id started afresh."""
        self._cursors.pop(account_id, None)
        self._reuse.pop(account_id, None)

    def let_go(self, account_id: str) -> None:
        """The pipeline dropped the account's decoded state: its shared results, which
        hold it, go too (a later evaluation starts afresh, as for a state decoded again)."""
        self._reuse.pop(account_id, None)

    def reuse_for(self, account_id: str, state: EngagementState) -> Reuse:
        """The account's shared results, kept only for the very state object they came
        from (a state decoded again starts afresh); the least recent go first. The
        sweep shares them too."""
        kept = self._reuse.pop(account_id, None)
        reuse = kept[1] if kept is not None and kept[0] is state else Reuse()
        if self._reuse_limit <= 0:
            return reuse
        if len(self._reuse) >= self._reuse_limit:
            del self._reuse[next(iter(self._reuse))]
        self._reuse[account_id] = (state, reuse)
        return reuse

    @property
    def _step(self) -> float:
        return self._ruleset.step_s
