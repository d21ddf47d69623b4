"""One account's rules run along its timeline: the unit both the live worker and replay
call, so they publish the same alerts for the same history (alerts/timeline.py).

``on_events`` folds an account's new events and evaluates every tick they cross (and
the event-driven rules right after the events that feed them); ``on_clock`` evaluates
the ticks of an account no event crossed. Both update the account's alert book and
return what changed, with the critical alert that quiets each change, if any.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from typing import Any

from alerts.evaluate import Context, evaluate
from alerts.lifecycle import Change, Finding
from alerts.rules import Rule
from alerts.sweep import AccountAlerts, inhibitor, sweep_account
from alerts.timeline import advance, walk
from stream.accounts import Account
from stream.engagement import EngagementState

__all__ = ["EVENT_DRIVEN", "AccountRun", "Notice", "RuleSet"]

EVENT_DRIVEN: dict[str, frozenset[str]] = {"nps": frozenset({"nps_response"})}
"""Rule kinds judged right after an event of these types, not only on the grid."""

EXACT_TIME_KINDS = frozenset({"nps"})
"""Rule kinds whose verdict depends on the exact instant; the others judge local days
(alerts/evaluate.py), so their verdict holds until the state, the day or the set of
open alerts changes, and is reused until then."""


@dataclass(frozen=True, slots=True)
class Notice:
    """One change the engine publishes, and the open critical alert quieting it."""

    change: Change
    inhibited_by: str | None


@dataclass(frozen=True)
class RuleSet:
    """The rules, and those of them that events trigger."""

    rules: tuple[Rule, ...]
    step_s: float

    @cached_property
    def instant_rules(self) -> tuple[Rule, ...]:
        return tuple(rule for rule in self.rules if rule.kind in EVENT_DRIVEN)

    @cached_property
    def health_rules(self) -> frozenset[str]:
        return frozenset(rule.name for rule in self.rules if rule.kind == "health")

    @cached_property
    def triggers(self) -> frozenset[str]:
        """Event types that trigger an instant evaluation."""
        return frozenset(t for rule in self.instant_rules for t in EVENT_DRIVEN[rule.kind])


@dataclass
class AccountRun:
    """Evaluations of one account: its state, metadata and alert book, in place."""

    ruleset: RuleSet
    state: EngagementState
    account: Account | None
    book: AccountAlerts
    notices: list[Notice] = field(default_factory=list)
    _state_version: int = 0
    _verdicts: dict[str, tuple[Any, list[Finding]]] = field(default_factory=dict)

    def on_events(
        self, times: Sequence[float], types: Sequence[str], fold: Callable[[int, int], None]
    ) -> list[Notice]:
        """Fold the account's new events (``fold(start, end)``) along its timeline."""
        triggers = self.ruleset.triggers
        instant = {i for i, kind in enumerate(types) if kind in triggers} if triggers else set()

        def fold_and_count(start: int, end: int) -> None:
            fold(start, end)
            self._state_version += 1

        cursor = walk(
            times,
            self.book.evaluated_through,
            self.ruleset.step_s,
            fold=fold_and_count,
            evaluate=self._tick,
            instant=instant,
            evaluate_instant=self._instant,
        )
        self._move(cursor)
        return self.notices

    def on_clock(self, upto: float) -> list[Notice]:
        """Evaluate the ticks up to ``upto`` that no event crossed."""
        cursor = self.book.evaluated_through
        if cursor is None and self.state.newest_at is not None:
            # State from before the grid (an upgrade): start from its newest event.
            cursor = self.state.newest_at
        self._move(advance(cursor, upto, self.ruleset.step_s, self._tick))
        return self.notices

    def _tick(self, at: float) -> None:
        self._evaluate(self.ruleset.rules, at)

    def _instant(self, at: float) -> None:
        self._evaluate(self.ruleset.instant_rules, at)

    def _evaluate(self, rules: Sequence[Rule], at: float) -> None:
        now = datetime.fromtimestamp(at, UTC)
        findings: list[Finding] = []
        context = Context(self.state, self.account, now)
        for change in sweep_account(rules, context, self.book, findings, self._judge):
            self.notices.append(Notice(change, inhibitor(change, self.book)))
        health = [f.evidence for f in findings if f.rule in self.ruleset.health_rules]
        if health and health[0].get("tier") is not None:
            summary = {"tier": health[0]["tier"], "value": health[0].get("value")}
            if summary != self.book.health:
                self.book.health = summary
                self.book.changed = True

    def _judge(self, rule: Rule, context: Context) -> list[Finding]:
        """``evaluate``, reusing a day-based rule's verdict while nothing it reads moved."""
        if rule.kind in EXACT_TIME_KINDS:
            return evaluate(rule, context)
        key = (self._state_version, context.today, context.open_rules)
        cached = self._verdicts.get(rule.name)
        if cached is not None and cached[0] == key:
            return cached[1]
        findings = evaluate(rule, context)
        self._verdicts[rule.name] = (key, findings)
        return findings

    def _move(self, cursor: float | None) -> None:
        if cursor != self.book.evaluated_through:
            self.book.evaluated_through = cursor
            self.book.changed = True
