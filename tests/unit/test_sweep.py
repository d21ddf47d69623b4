"""sweep_account and inhibition: one account, all rules, one set of alert states."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from alerts.events import alert_event
from alerts.lifecycle import AlertState, Change, ChangeKind, Status, fingerprint
from alerts.rules import Rule, load_rules
from alerts.sweep import AccountAlerts, inhibitor
from stream import codec
from stream.accounts import Account
from stream.engagement import EngagementState, fold_events
from stream.events import UsageEvent, validate_event
from stream.simulate import FleetSpec, build_fleet, generate_events

NOW = datetime(2026, 11, 23, 9, tzinfo=UTC)
SHIPPED: tuple[Rule, ...] = load_rules(
    Path(__file__).resolve().parents[2] / "config" / "rules.yaml"
).rules


def simulated(behaviour: str) -> tuple[EngagementState, Account]:
    """The first demo account of ``behaviour``, its last 28 days folded."""
    fleet = build_fleet(FleetSpec(accounts=12, seed=7, as_of=NOW.date()))
    chosen = next(a for a in fleet if a.behaviour == behaviour)
    state = EngagementState(chosen.account_id, timezone=chosen.timezone)
    raw = generate_events([chosen], NOW - timedelta(days=28), NOW, seed=7)
    fold_events(
        state, [e for e in (validate_event(d, NOW) for d in raw) if isinstance(e, UsageEvent)]
    )
    return state, Account(chosen.account_id, chosen.name, chosen.licenses, timezone=chosen.timezone)


def detractor_state() -> EngagementState:
    """An account whose champion answered NPS 2 at ``NOW``."""
    state = EngagementState("acme")
    state.recent_nps.append(
        {"user_id": "u-1", "role": "champion", "score": 2, "comment": None, "at": NOW.timestamp()}
    )
    state.newest_at = NOW.timestamp()
    return state


def alert(rule: str, severity: str, status: Status = Status.FIRING) -> AlertState:
    return AlertState(
        fingerprint(rule, "acme"), rule, "acme", status, severity, starts_at=NOW - timedelta(days=1)
    )


def test_a_critical_alert_quiets_the_warnings_on_its_account() -> None:
    silent = alert("account-silent", "critical")
    drop = alert("usage-drop", "warning")
    book = AccountAlerts({silent.fingerprint: silent, drop.fingerprint: drop})
    assert inhibitor(Change(ChangeKind.FIRING, drop, NOW), book) == silent.fingerprint
    assert inhibitor(Change(ChangeKind.REPEAT, drop, NOW), book) == silent.fingerprint
    # The critical one itself, and any resolution, always speak.
    assert inhibitor(Change(ChangeKind.FIRING, silent, NOW), book) is None
    assert inhibitor(Change(ChangeKind.RESOLVED, drop, NOW), book) is None


def test_without_an_open_critical_alert_nothing_is_quieted() -> None:
    resolved = alert("account-silent", "critical", Status.RESOLVED)
    drop = alert("usage-drop", "warning")
    book = AccountAlerts({resolved.fingerprint: resolved, drop.fingerprint: drop})
    assert inhibitor(Change(ChangeKind.FIRING, drop, NOW), book) is None


def test_alert_events_carry_the_inhibiting_fingerprint() -> None:
    drop = alert("usage-drop", "warning")
    event = alert_event(Change(ChangeKind.FIRING, drop, NOW), None, NOW, inhibited_by="f" * 32)
    assert event["inhibited_by"] == "f" * 32
    assert event["status"] == "firing" and event["ends_at"] is None
    assert event["starts_at"] == "2026-11-22T09:00:00Z"
    resolved = alert_event(Change(ChangeKind.RESOLVED, drop, NOW), None, NOW)
    assert resolved["status"] == "resolved" and resolved["inhibited_by"] is None


def test_account_alerts_round_trip_through_plain_data() -> None:
    book = AccountAlerts({a.fingerprint: a for a in (alert("x", "warning"), alert("y", "info"))})
    again = AccountAlerts.from_dict(book.to_dict())
    assert again.states == book.states
    assert [s.rule for s in again.open()] == ["x", "y"]
    assert "adopted" not in book.to_dict()  # as books were before adoptions were kept
    book.adopted["reports-not-adopted"] = ("reports", "2026-07-01")
    data = codec.loads(codec.dumps(book.to_dict()))  # as the changelog holds it
    assert AccountAlerts.from_dict(data).adopted == book.adopted


def test_sweeping_a_quiet_account_fires_once_then_holds() -> None:
    from alerts.evaluate import Context
    from alerts.sweep import sweep_account

    state, account = simulated("going_quiet")
    book = AccountAlerts()

    first = sweep_account(SHIPPED, Context(state, account, NOW), book)
    # usage-drop fits a trend to the days with activity: a silence is not its business.
    assert {c.alert.rule for c in first} >= {"account-silent", "low-daily-usage"}
    assert all(c.kind is ChangeKind.FIRING for c in first)
    silent = next(c for c in first if c.alert.rule == "account-silent")
    assert silent.alert.severity == "critical"
    drop = next(c for c in first if c.alert.rule == "low-daily-usage")
    critical = {s.fingerprint for s in book.open() if s.severity == "critical"}
    assert silent.alert.fingerprint in critical
    assert inhibitor(drop, book) in critical
    # An hour later nothing is new: one alert per problem, no second firing.
    assert sweep_account(SHIPPED, Context(state, account, NOW + timedelta(hours=1)), book) == []


def test_a_rule_with_for_waits_before_firing() -> None:
    from alerts.evaluate import Context
    from alerts.rules import NpsRule
    from alerts.sweep import sweep_account

    state = detractor_state()
    rule = NpsRule.model_validate({"name": "detractor", "kind": "nps", "for": "2h"})
    assert rule.for_ == 7200.0
    book = AccountAlerts()
    assert sweep_account([rule], Context(state, None, NOW), book) == []
    assert [s.status for s in book.states.values()] == [Status.PENDING]
    later = sweep_account([rule], Context(state, None, NOW + timedelta(hours=2)), book)
    assert [c.kind for c in later] == [ChangeKind.FIRING]


def test_a_rule_that_raises_changes_nothing_and_the_others_still_judge() -> None:
    from alerts.evaluate import Context, evaluate
    from alerts.lifecycle import Finding
    from alerts.rules import NpsRule
    from alerts.sweep import sweep_account

    state = detractor_state()
    broken, detractor = (
        NpsRule.model_validate({"name": name, "kind": "nps"}) for name in ("broken", "detractor")
    )
    firing = alert("broken", "warning")  # stays as it is: a failure is no verdict
    book = AccountAlerts({firing.fingerprint: firing})
    failures: list[tuple[str, Exception]] = []

    def judge(rule: object, context: Context) -> list[Finding]:
        if rule is broken:
            raise ZeroDivisionError("a bug met by this account")
        return evaluate(detractor, context)

    changes = sweep_account(
        [broken, detractor],
        Context(state, None, NOW + timedelta(hours=1)),
        book,
        judge=judge,
        on_failure=lambda rule, context, error: failures.append((rule.name, error)),
    )

    assert [(c.alert.rule, c.kind) for c in changes] == [("detractor", ChangeKind.FIRING)]
    assert book.states[firing.fingerprint] == firing
    assert [(name, type(error)) for name, error in failures] == [("broken", ZeroDivisionError)]


def test_a_failing_health_rule_leaves_the_health_summary_as_it_was(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With two health rules, the summary (triage, metrics) comes from the first: when
    it raises, the summary must not turn into the second rule's tier."""
    from alerts import evaluation
    from alerts.evaluate import Context, evaluate
    from alerts.evaluation import AccountRun, RuleSet
    from alerts.lifecycle import Finding

    state, account = simulated("healthy")
    first = next(rule for rule in SHIPPED if rule.kind == "health")
    strict = first.model_copy(update={"name": "strict-health", "green": 1.0, "yellow": 0.99})
    failed: list[str] = []
    ruleset = RuleSet((first, strict), 6 * 3600.0, lambda r, c, e: failed.append(r.name))
    run = AccountRun(ruleset, state, account, AccountAlerts(), reuse=None)
    run.on_clock(NOW.timestamp())
    before = run.book.health
    assert before is not None and before["tier"] == "green"

    broken: list[Rule] = [first]

    def judge(rule: Rule, context: Context) -> list[Finding]:
        if any(rule is b for b in broken):
            raise ZeroDivisionError("a bug")
        return evaluate(rule, context)

    monkeypatch.setattr(evaluation, "evaluate", judge)
    run.on_clock((NOW + timedelta(hours=12)).timestamp())
    assert failed and set(failed) == {first.name}
    assert run.book.health == before  # not the strict rule's "red"

    # The second one failing leaves the first in charge: the summary follows it.
    broken[:] = [strict]
    run.book.health = {"tier": "red", "value": 0.0}
    run.on_clock((NOW + timedelta(hours=24)).timestamp())
    assert failed[-1] == strict.name
    assert run.book.health is not None and run.book.health["tier"] == "green"
