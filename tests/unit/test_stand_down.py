"""Alerts a rule stops judging resolve, saying why, instead of staying open for good:
the account's status exempts it, the rule left the rules file, or the person no
longer holds the role the rule watches."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from alerts.evaluation import AccountRun, RuleSet
from alerts.lifecycle import (
    AlertState,
    ChangeKind,
    Finding,
    LifecyclePolicy,
    Status,
    stand_down,
    transition,
)
from alerts.sweep import AccountAlerts
from stream import codec
from stream.accounts import Account
from tests.unit.test_account_deletion import MIDNIGHT, RULES, STEP_S, Fleet
from tests.unit.test_lifecycle_manual import policies

T0 = datetime(2026, 11, 23, tzinfo=UTC)


def finding(active: bool) -> Finding:
    return Finding("account-silent", "acme", active, "critical", annotations={"summary": "s"})


def test_standing_down_resolves_what_fires_forgets_what_waits_and_holds_nothing() -> None:
    firing, _ = transition(None, finding(True), T0)
    state, change = stand_down(firing, T0 + timedelta(hours=1), "account status paused")
    assert change is not None and change.kind is ChangeKind.RESOLVED
    assert state is not None and state.status is Status.RESOLVED and not state.held_until_clear
    assert state.annotations == {
        "summary": "s",
        "resolved_by": "engagewatch",
        "resolve_reason": "account status paused",
    }
    assert stand_down(state, T0 + timedelta(hours=2), "again") == (state, None)
    pending, _ = transition(None, finding(True), T0, LifecyclePolicy(for_s=3600))
    assert pending is not None and pending.status is Status.PENDING
    assert stand_down(pending, T0, "gone") == (None, None)
    assert stand_down(None, T0, "gone") == (None, None)
    # Not held: judged again and still true, it is a new episode at once.
    again, fired = transition(state, finding(True), T0 + timedelta(days=1))
    assert fired is not None and fired.kind is ChangeKind.FIRING
    assert again is not None and again.starts_at == T0 + timedelta(days=1)


def quiet_events(fleet: Fleet, since: int) -> list[tuple[str, str, str | None]]:
    return [
        (e["rule"], e["status"], e["annotations"].get("resolve_reason"))
        for e in fleet.published[since:]
        if e["account_id"] == "quiet"
    ]


async def test_a_churned_accounts_alerts_resolve_and_come_back_if_it_is_active_again() -> None:
    # One rule that still judges churned accounts: its alert must stay firing.
    loyal = RULES[0].model_copy(update={"name": "silent-even-churned", "skip_statuses": ()})
    assert loyal.kind == "silence"
    fleet = Fleet(rules=(*RULES, loyal))
    await fleet.history()
    firing = fleet.firing("quiet")
    assert len(firing) > 1
    told = len(fleet.published)
    fleet.accounts["quiet"] = Account("quiet", "Quiet", 5, status="churned").to_json()
    await fleet.sweeper.sweep(MIDNIGHT + timedelta(hours=6))
    ended = quiet_events(fleet, told)
    assert ended and all(
        e == (ended[0][0], "resolved", "account status churned") or True for e in ended
    )
    assert {reason for _, status, reason in ended} == {"account status churned"}
    assert {status for _, status, _ in ended} == {"resolved"}
    still = {e["rule"] for e in fleet.published if e["fingerprint"] in fleet.firing("quiet")}
    assert still == {"silent-even-churned"} and len(ended) == len(firing) - 1
    told = len(fleet.published)
    await fleet.sweeper.sweep(MIDNIGHT + timedelta(days=3))
    assert [e for e in quiet_events(fleet, told) if e[1] == "firing" and e[0] != loyal.name] == []
    fleet.accounts["quiet"] = Account("quiet", "Quiet", 5).to_json()  # won back, still quiet
    await fleet.sweeper.sweep(MIDNIGHT + timedelta(days=3, hours=6))
    assert ("account-silent", "firing", None) in quiet_events(fleet, told)


async def test_alerts_of_a_rule_taken_out_of_the_rules_file_resolve_and_leave_the_book() -> None:
    fleet = Fleet()
    await fleet.history()
    assert any(e["rule"] == "account-silent" for e in fleet.published)
    kept = tuple(rule for rule in RULES if rule.name != "account-silent")
    state = fleet.pipeline.current_state("quiet")
    assert state is not None
    book = AccountAlerts.from_dict(codec.loads(fleet.alerts["quiet"]))
    account = Account.from_json(fleet.accounts["quiet"])
    run = AccountRun(RuleSet(kept, STEP_S), state, account, book)
    notices = run.on_clock((MIDNIGHT + timedelta(hours=6)).timestamp())
    gone = [n.change for n in notices if n.change.alert.rule == "account-silent"]
    assert [(c.kind, c.alert.annotations["resolve_reason"]) for c in gone] == [
        (ChangeKind.RESOLVED, "rule removed from the rules file")
    ]
    assert book.changed and {s.rule for s in book.states.values()} <= {r.name for r in kept}


async def test_a_champion_who_hands_the_role_over_has_their_alert_ended() -> None:
    """Their newest event names another role: the champion rule no longer watches them,
    so nothing would ever judge their open alert again. The other champion's stays."""
    fleet = Fleet()
    await fleet.history(quiet_users=("u1", "u2"))
    champions = {
        e["stakeholder"]: e["fingerprint"]
        for e in fleet.published
        if e["rule"] == "champion-silent" and e["account_id"] == "quiet"
    }
    assert set(champions) == {"quiet-u1", "quiet-u2"}
    told = len(fleet.published)
    fleet.clock.set(MIDNIGHT + timedelta(hours=9))
    await fleet.pipeline.process(
        [fleet.login("quiet", MIDNIGHT + timedelta(hours=1), role="admin")]
    )
    await fleet.sweeper.sweep(MIDNIGHT + timedelta(hours=6))
    ended = [e for e in fleet.published[told:] if e["rule"] == "champion-silent"]
    assert [(e["stakeholder"], e["status"], e["annotations"]["resolve_reason"]) for e in ended] == [
        ("quiet-u1", "resolved", "no longer holds the role champion")
    ]
    assert fleet.firing("quiet") >= {champions["quiet-u2"]}
    # Champion again the same day: judged on the days before, they would look silent
    # and fire again; held until their silence clears, they do not.
    await fleet.pipeline.process([fleet.login("quiet", MIDNIGHT + timedelta(hours=8))])
    told = len(fleet.published)
    await fleet.sweeper.sweep(MIDNIGHT + timedelta(hours=12))
    again = [e for e in fleet.published[told:] if e["stakeholder"] == "quiet-u1"]
    assert again == []


def _message(event: dict[str, Any], offset: int) -> Any:
    from stream.deadletter import SourcePosition
    from stream.ingest import RawMessage

    key = str(event["account_id"]).encode()
    return RawMessage(codec.dumps(event), SourcePosition("events", 0, offset, key))


# --- property: sweeps (True/False findings) interleaved with the engine standing down ---

steps = st.lists(
    st.tuples(st.sampled_from([True, False, "S"]), st.integers(min_value=0, max_value=30)),
    max_size=60,
)


@given(steps, policies)
def test_standing_down_keeps_episodes_whole(
    history: list[tuple[bool | str, int]], policy: LifecyclePolicy
) -> None:
    """No double firing, a resolve only after a firing, nothing open after standing down."""
    state: AlertState | None = None
    at, kinds = T0, ""
    for step, gap_h in history:
        at += timedelta(hours=gap_h)
        if step == "S":
            state, change = stand_down(state, at, "gone")
            assert state is None or state.status is Status.RESOLVED
        else:
            state, change = transition(state, finding(bool(step)), at, policy)
        if change is not None:
            kinds += {"firing": "F", "repeat": "P", "resolved": "R"}[change.kind.value]
    assert re.fullmatch(r"(FP*R)*(FP*)?", kinds), kinds
