"""Evaluate every rule for one account and move its alerts: the unit of work that
both the live worker (on state change and on its periodic sweep) and replay run.

An account's alert states live in one value (a mapping fingerprint -> state), so the
worker that owns the account keeps them in one table entry and writes it once per
sweep, and only when something changed.

A person's "resolve" (triage) is applied here too, by the worker that owns the account,
before the rules run: :func:`resolve_by_hand`.

A rule that raises is a bug (in the engine, or met by an odd account): it is reported
and judges nothing for that account at that instant, so its alerts stay as they were,
and the other rules and accounts go on, as a Prometheus rule that fails to evaluate
does. Live and replay skip the same evaluations, so they still agree.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from functools import lru_cache
from typing import Any

from alerts.evaluate import Context, evaluate
from alerts.lifecycle import (
    AlertState,
    Change,
    ChangeKind,
    Finding,
    LifecyclePolicy,
    resolve_manually,
    stand_down,
    state_from_dict,
    state_to_dict,
    transition,
)
from alerts.rules import Rule, SilenceRule

__all__ = [
    "ACCOUNT_DELETED",
    "AccountAlerts",
    "OnFailure",
    "close_deleted_account",
    "inhibitor",
    "log_failure",
    "resolve_by_hand",
    "stand_down_alerts",
    "stand_down_for_status",
    "sweep_account",
]

log = logging.getLogger(__name__)

OnFailure = Callable[[Rule, Context, Exception], None]
"""Told of a rule that raised while judging one account."""


def log_failure(rule: Rule, context: Context, error: Exception) -> None:
    """Log the failure with its traceback."""
    log.error(
        "rule %s failed on account %s at %s: %r",
        rule.name,
        context.state.account_id,
        context.now.isoformat(),
        error,
        exc_info=error,
    )


class AccountAlerts:
    """The alert states of one account, loaded from and saved to plain data."""

    def __init__(
        self,
        states: Mapping[str, AlertState] | None = None,
        evaluated_through: float | None = None,
        health: Mapping[str, Any] | None = None,
        unsent: Iterable[tuple[str, str]] = (),
        adopted: Mapping[str, tuple[str, str]] | None = None,
    ) -> None:
        self.states: dict[str, AlertState] = dict(states or {})
        self.evaluated_through = evaluated_through
        """The last instant the rules were evaluated at (alerts/timeline.py)."""
        self.health = dict(health) if health else None
        """The last health score's evidence (tier, value): for triage and metrics."""
        self.unsent: list[tuple[str, str]] = list(unsent)
        """Alert events (key, value) judged with these states and not yet known to be
        published, oldest first: kept with the states that caused them, so that no
        failure between the two leaves an alert firing here and unheard of
        (stream/alert_outbox.py)."""
        self.adopted: dict[str, tuple[str, str]] = dict(adopted or {})
        """Adoption rule -> (its feature, the local day it first found it adopted): an
        account that adopted a feature once is not told later that it has not, when its
        use of it has left the window the rule reads (a long break, say)."""
        self.changed = False

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> AccountAlerts:
        data = data or {}
        if "states" not in data:  # version 1: the states alone, keyed by fingerprint
            return cls({fp: state_from_dict(s) for fp, s in data.items()})
        states = {fp: state_from_dict(s) for fp, s in data["states"].items()}
        unsent = [(key, value) for key, value in data.get("unsent", ())]
        adopted = {rule: (feature, day) for rule, (feature, day) in data.get("adopted", {}).items()}
        return cls(states, data.get("evaluated_through"), data.get("health"), unsent, adopted)

    def to_dict(self, *, with_unsent: bool = True) -> dict[str, Any]:
        data: dict[str, Any] = {
            "states": {fp: state_to_dict(state) for fp, state in sorted(self.states.items())},
            "evaluated_through": self.evaluated_through,
            "health": self.health,
        }
        if self.unsent and with_unsent:  # absent when empty: as books were before it
            data["unsent"] = [list(entry) for entry in self.unsent]
        if self.adopted:  # the same
            data["adopted"] = {rule: list(seen) for rule, seen in sorted(self.adopted.items())}
        return data

    def keep_unsent(self, events: Iterable[tuple[str, str]]) -> None:
        """Keep alert events until :meth:`settle` hears they were published."""
        before = len(self.unsent)
        self.unsent.extend(events)
        self.changed = self.changed or len(self.unsent) > before

    def settle(self, published: Iterable[tuple[str, str]]) -> bool:
        """Drop the events ``published``, from the oldest up to the first that was not:
        one left behind keeps those after it, so that sending them again keeps their
        order. Returns whether any was dropped."""
        delivered = Counter(published)
        settled = 0
        for entry in self.unsent:
            if not delivered[entry]:
                break
            delivered[entry] -= 1
            settled += 1
        del self.unsent[:settled]
        self.changed = self.changed or settled > 0
        return settled > 0

    def open(self) -> list[AlertState]:
        return [state for state in self.states.values() if state.is_open]


def sweep_account(
    rules: Sequence[Rule],
    context: Context,
    alerts: AccountAlerts,
    findings: list[Finding] | None = None,
    judge: Callable[[Rule, Context], list[Finding]] = evaluate,
    *,
    on_failure: OnFailure = log_failure,
) -> list[Change]:
    """Evaluate ``rules`` for the account in ``context``; update ``alerts`` in place.

    ``findings``, when given, collects every finding (the health tier is read from
    them). ``judge`` evaluates one rule (a caching one may stand in for ``evaluate``);
    ``on_failure`` hears of a rule that raised, which then changes nothing.
    """
    changes: list[Change] = []
    open_alerts = {state.fingerprint: state for state in alerts.open()}
    if context.open_alerts.keys() != open_alerts.keys():
        open_rules = frozenset(state.rule for state in open_alerts.values())
        context = replace(context, open_rules=open_rules, open_alerts=open_alerts)
    status = context.account.status if context.account is not None else None
    # Rules with an alert firing or pending: only theirs can need standing down.
    unresolved = frozenset(s.rule for s in alerts.states.values() if not s.is_over)
    for rule in rules:
        if status is not None and status in rule.skip_statuses:
            # No verdict for such an account: what it had open must not stay open.
            if rule.name in unresolved:
                changes += stand_down_for_status([rule], status, alerts, context.now)
            continue
        try:
            found = judge(rule, context)
        except Exception as error:  # one rule's bug stops nothing else
            on_failure(rule, context, error)
            continue
        policy = _policy(rule.for_, rule.repeat_interval)
        for finding in found:
            if findings is not None:
                findings.append(finding)
            previous = alerts.states.get(finding.fingerprint)
            state, change = transition(previous, finding, context.now, policy)
            if state is not previous and state != previous:
                alerts.changed = True
                if state is None:
                    alerts.states.pop(finding.fingerprint, None)
                else:
                    alerts.states[finding.fingerprint] = state
            if change is not None:
                changes.append(change)
        if rule.name in unresolved and isinstance(rule, SilenceRule) and rule.scope != "account":
            changes += _stand_down_former_holders(rule, context, alerts)
    return changes


def stand_down_for_status(
    rules: Sequence[Rule], status: str | None, alerts: AccountAlerts, now: datetime
) -> list[Change]:
    """The alerts of the rules that skip the account's ``status`` (``paused``,
    ``churned``, ...) resolve, saying why: no rule judges them any more. The worker
    calls it at each sweep, so a record marked churned does not wait for the next tick
    to close a page."""
    if status is None:
        return []
    unresolved = {state.rule for state in alerts.states.values() if not state.is_over}
    reason = f"account status {status}"
    changes: list[Change] = []
    for rule in rules:
        if status in rule.skip_statuses and rule.name in unresolved:
            changes += stand_down_alerts(alerts, now, reason, _of_rule(rule.name))
    return changes


def stand_down_alerts(
    alerts: AccountAlerts,
    now: datetime,
    reason: str,
    which: Callable[[AlertState], bool],
    *,
    hold: bool = False,
) -> list[Change]:
    """:func:`~alerts.lifecycle.stand_down` the account's alerts ``which`` selects."""
    changes = []
    for fingerprint, previous in sorted(alerts.states.items()):
        if not which(previous):
            continue
        state, change = stand_down(previous, now, reason, hold=hold)
        if state is not previous:
            alerts.changed = True
            if state is None:
                del alerts.states[fingerprint]
            else:
                alerts.states[fingerprint] = state
        if change is not None:
            changes.append(change)
    return changes


def _of_rule(name: str) -> Callable[[AlertState], bool]:
    return lambda state: state.rule == name


def _stand_down_former_holders(
    rule: SilenceRule, context: Context, alerts: AccountAlerts
) -> list[Change]:
    """A person watched for a role stops being judged once their newest event names
    another role (the champion handed over): their alert ends, saying so, held until
    its condition clears (they may take the role back the same day: judged on the days
    before, they would look silent again and fire twice more)."""
    holders = {user_id for user_id, _ in context.state.holding(rule.roles)}
    roles = " or ".join(rule.roles)

    def former(state: AlertState) -> bool:
        return state.rule == rule.name and not state.is_over and state.subject not in holders

    if not any(former(state) for state in alerts.states.values()):
        return []
    reason = f"no longer holds the role {roles}"
    return stand_down_alerts(alerts, context.now, reason, former, hold=True)


@lru_cache(maxsize=256)
def _policy(for_s: float, repeat_interval_s: float) -> LifecyclePolicy:
    return LifecyclePolicy(for_s=for_s, repeat_interval_s=repeat_interval_s)


def resolve_by_hand(
    alerts: AccountAlerts, fingerprint: str, now: datetime, by: str, reason: str = ""
) -> Change | None:
    """Resolve one of the account's firing alerts for a person; ``None`` if not firing."""
    previous = alerts.states.get(fingerprint)
    state, change = resolve_manually(previous, now, by, reason)
    if state is not None and state != previous:
        alerts.states[fingerprint] = state
        alerts.changed = True
    return change


ACCOUNT_DELETED = "account record deleted"
"""The reason on the alerts an account's deletion resolves (``resolved_by: engagewatch``)."""


def close_deleted_account(alerts: AccountAlerts, now: datetime) -> list[Change]:
    """The account's record was deleted (a tombstone on the accounts topic): each
    firing alert stands down, so that whoever heard of it hears it is over and why;
    pending ones end unseen. The caller then drops the whole book: nothing of the
    account is judged any more."""
    return stand_down_alerts(alerts, now, ACCOUNT_DELETED, lambda state: True)


def inhibitor(change: Change, alerts: AccountAlerts) -> str | None:
    """The open critical alert on the same account that quiets this change, if any.

    One silent account trips several rules (silence, low usage, drop, health); the
    critical one speaks for all of them. The quieted changes are still published,
    marked, so history and triage see everything; receivers hold their delivery.
    A resolution is never quieted: whoever heard of the problem hears it is over.
    """
    if change.kind is ChangeKind.RESOLVED or change.alert.severity == "critical":
        return None
    for state in sorted(alerts.open(), key=lambda s: s.fingerprint):
        if state.severity == "critical" and state.fingerprint != change.alert.fingerprint:
            return state.fingerprint
    return None
