"""One account's rules run along its timeline: the unit both the live worker and replay
call, so they publish the same alerts for the same history (alerts/timeline.py).

``on_events`` folds an account's new events and evaluates every tick they cross (and
the event-driven rules right after the events that feed them); ``on_clock`` evaluates
the ticks of an account no event crossed. Both update the account's alert book and
return what changed, with the critical alert that quiets each change, if any.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cached_property
from itertools import compress, count
from typing import Any

from alerts.evaluate import Context, evaluate
from alerts.lifecycle import Change, Finding
from alerts.rules import AdoptionRule, Rule
from alerts.sweep import (
    AccountAlerts,
    OnFailure,
    inhibitor,
    log_failure,
    stand_down_alerts,
    sweep_account,
)
from alerts.timeline import advance, walk
from stream.accounts import Account
from stream.engagement import EngagementState
from stream.events import KINDS

__all__ = ["EVENT_DRIVEN", "AccountRun", "Notice", "Reuse", "RuleSet", "history_key"]

EVENT_DRIVEN: dict[str, frozenset[str]] = {"nps": frozenset({"nps_response"})}
"""Rule kinds judged right after an event of these types, not only on the grid."""

FRESH_KINDS = frozenset({"nps", "adoption", "silence"})
"""Rule kinds judged afresh at every evaluation: NPS reads the exact instant, adoption
today's events, and a silence shows when people were last seen (its verdict, a
function of the history and the people, is shared through ``Context.memo``). The other
kinds judge completed local days (alerts/evaluate.py), so their findings hold until the
account's history before today, its facts, the day or its open alerts change
(:func:`history_key`), or, for the kinds of :data:`READS_NPS_TALLY`, its NPS tally; they
are reused until then."""

READS_NPS_TALLY = frozenset({"health"})
"""Day-based kinds that also read the account's lifetime NPS tally (the health score's
NPS part): their findings are reused only while it stands still too. An answer moves
the tally, and nothing else the other kinds read."""


@dataclass(frozen=True, slots=True)
class Notice:
    """One change the engine publishes, and the open critical alert quieting it."""

    change: Change
    inhibited_by: str | None


@dataclass(frozen=True)
class RuleSet:
    """The rules, those of them that events trigger, and who hears of their failures."""

    rules: tuple[Rule, ...]
    step_s: float
    on_failure: OnFailure = field(default=log_failure, compare=False)
    """Told of a rule that raised on an account (alerts/sweep.py): it judged nothing."""

    @cached_property
    def names(self) -> frozenset[str]:
        return frozenset(rule.name for rule in self.rules)

    @cached_property
    def instant_rules(self) -> tuple[Rule, ...]:
        return tuple(rule for rule in self.rules if rule.kind in EVENT_DRIVEN)

    @cached_property
    def health_rules(self) -> frozenset[str]:
        return frozenset(rule.name for rule in self.rules if rule.kind == "health")

    @cached_property
    def adoption_rules(self) -> dict[str, str]:
        """Adoption rule -> its feature."""
        return {rule.name: rule.feature for rule in self.rules if isinstance(rule, AdoptionRule)}

    @cached_property
    def triggers(self) -> frozenset[str]:
        """Event types that trigger an instant evaluation."""
        return frozenset(t for rule in self.instant_rules for t in EVENT_DRIVEN[rule.kind])

    @cached_property
    def trigger_codes(self) -> frozenset[int]:
        """:attr:`triggers` as the event codes records carry (``stream.events.KINDS``)."""
        return frozenset(code for code, kind in enumerate(KINDS) if kind.value in self.triggers)


@dataclass
class Reuse:
    """Findings and partial results one account's evaluations share while nothing they
    read has moved: day-based rules judge completed days, so most evaluations of a
    day (every tick of it, and every NPS answer) give the same findings."""

    history: Any = None
    """The :func:`history_key` the entries below were computed under."""
    state: EngagementState | None = None
    """The state object they were computed on: memo entries keyed on its
    ``people_version`` count the changes of that object only."""
    verdicts: dict[str, tuple[frozenset[str], tuple[int, ...] | None, list[Finding]]] = field(
        default_factory=dict
    )
    """rule -> (the open alerts' fingerprints then, the NPS tally then if it reads it, its
    findings)."""
    memo: dict[Any, Any] = field(default_factory=dict)
    """Partial results the rules keep themselves (``Context.memo``)."""

    def move_to(self, context: Context) -> None:
        """Forget everything if the history of ``context`` is not the one kept."""
        history = history_key(context)
        if history != self.history or context.state is not self.state:
            self.history = history
            self.state = context.state
            self.verdicts.clear()
            self.memo.clear()  # in place: ``context.memo`` is this dict

    def findings(self, rule: Rule, context: Context) -> list[Finding]:
        """The rule's findings, reused while the history and the open alerts stand still
        (an exit level may depend on whether its alert is open)."""
        tally = tuple(context.state.nps_totals) if rule.kind in READS_NPS_TALLY else None
        opened = context.open_fingerprints
        cached = self.verdicts.get(rule.name)
        if cached is not None and cached[0] == opened and cached[1] == tally:
            return cached[2]
        found = evaluate(rule, context)
        self.verdicts[rule.name] = (opened, tally, found)
        return found


@dataclass
class AccountRun:
    """Evaluations of one account: its state, metadata and alert book, in place."""

    ruleset: RuleSet
    state: EngagementState
    account: Account | None
    book: AccountAlerts
    notices: list[Notice] = field(default_factory=list)
    reuse: Reuse | None = field(default_factory=Reuse)
    """What this account's evaluations share while its history stands still; a worker
    keeps it between batches. ``None``: judge everything afresh (to test that reuse
    is exact)."""

    def on_events(
        self, times: Sequence[float], codes: Sequence[int], fold: Callable[[int, int], None]
    ) -> list[Notice]:
        """Fold the account's new events (occurrence ``times`` and event ``codes``, as
        records carry them, in arrival order; ``fold(start, end)``) along its timeline."""
        triggers = self.ruleset.trigger_codes
        # Triggers are rare: picked out in C, not by a test per event in Python.
        instant = set(compress(count(), map(triggers.__contains__, codes))) if triggers else set()
        cursor = walk(
            times,
            self.book.evaluated_through,
            self.ruleset.step_s,
            fold=fold,
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
        open_alerts = {state.fingerprint: state for state in self.book.open()}
        open_rules = frozenset(state.rule for state in open_alerts.values())
        memo = self.reuse.memo if self.reuse is not None else None
        context = Context(
            self.state,
            self.account,
            now,
            open_rules=open_rules,
            open_alerts=open_alerts,
            adopted=self.book.adopted,
            memo=memo,
        )
        if self.reuse is not None:
            self.reuse.move_to(context)
        failed: list[str] = []

        def on_failure(rule: Rule, context: Context, error: Exception) -> None:
            failed.append(rule.name)
            self.ruleset.on_failure(rule, context, error)

        changes = sweep_account(
            rules, context, self.book, findings, self._judge, on_failure=on_failure
        )
        if rules is self.ruleset.rules:
            changes += self._stand_down_removed_rules(now)
        self._remember_adoptions(findings, context)
        for change in changes:
            self.notices.append(Notice(change, inhibitor(change, self.book)))
        evidence = self._health_evidence(rules, findings, failed)
        if evidence is not None and evidence.get("tier") is not None:
            summary = {"tier": evidence["tier"], "value": evidence.get("value")}
            if summary != self.book.health:
                self.book.health = summary
                self.book.changed = True

    def _stand_down_removed_rules(self, now: datetime) -> list[Change]:
        """Alerts of rules no longer in the rules file resolve (nothing would judge them),
        and then leave the book: it only holds alerts of the rules there are."""
        names = self.ruleset.names
        states = self.book.states
        if all(state.rule in names for state in states.values()):
            return []
        removed = "rule removed from the rules file"
        changes = stand_down_alerts(self.book, now, removed, lambda s: s.rule not in names)
        for fingerprint in [fp for fp, state in states.items() if state.rule not in names]:
            del states[fingerprint]
        self.book.changed = True
        return changes

    def _remember_adoptions(self, findings: Sequence[Finding], context: Context) -> None:
        """Keep the day each adoption rule first found its feature adopted (the book is
        durable), and forget the rules no longer in the rules file."""
        features = self.ruleset.adoption_rules
        adopted = self.book.adopted
        for finding in findings:
            feature = features.get(finding.rule)
            if feature is None or finding.evidence.get("value") is not True:
                continue
            if adopted.get(finding.rule, ("",))[0] != feature:
                adopted[finding.rule] = (feature, context.today.isoformat())
                self.book.changed = True
        for rule in [rule for rule in adopted if rule not in features]:
            del adopted[rule]
            self.book.changed = True

    def _health_evidence(
        self, rules: Sequence[Rule], findings: list[Finding], failed: list[str]
    ) -> Mapping[str, Any] | None:
        """The evidence of the first health rule with a finding, which the account's
        health summary shows; ``None`` (the summary stays as it was) if there is none,
        or if a health rule before it raised and so might have spoken first."""
        found = {f.rule: f.evidence for f in findings if f.rule in self.ruleset.health_rules}
        for rule in rules:
            if rule.name in failed and rule.name in self.ruleset.health_rules:
                return None
            if rule.name in found:
                return found[rule.name]
        return None

    def _judge(self, rule: Rule, context: Context) -> list[Finding]:
        """``evaluate``, reusing a day-based rule's findings while nothing it reads moved."""
        if self.reuse is None or rule.kind in FRESH_KINDS:
            return evaluate(rule, context)
        return self.reuse.findings(rule, context)

    def _move(self, cursor: float | None) -> None:
        if cursor != self.book.evaluated_through:
            self.book.evaluated_through = cursor
            self.book.changed = True


def history_key(context: Context) -> tuple[Any, ...]:
    """Everything a day-based rule reads, as a value that changes whenever any of it does.

    Those rules read completed local days (buckets before today), the account's facts
    and metadata, and today's date.
    Every event counted into a day adds one to that day's ``events``, so the days'
    counts change with anything folded into them (or pruned away); events of today
    leave the key alone until the day is over. Two things only some rules read stay
    out, so that they do not throw away everyone's findings: the people (slots, roles,
    first sightings), on which the silence rules key their own results through the
    state's ``people_version``, and the NPS tally (:data:`READS_NPS_TALLY`).
    Cheap next to an evaluation: one pass over the kept days.
    """
    state = context.state
    today = context.today
    before = today.isoformat()
    days = tuple((day, bucket.events) for day, bucket in state.days.items() if day < before)
    newest = state.newest_at
    # A silence's history ends at the newest active day, or yesterday if that is later.
    history_end = (
        min(state.local_day(newest), today - timedelta(days=1)) if newest is not None else None
    )
    return (
        today,
        context.input_healthy,
        context.account,
        history_end,
        state.first_seen_at,
        state.first_value_at,
        tuple(state.license_changes),
        days,
    )
