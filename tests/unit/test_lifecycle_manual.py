"""A person resolving an alert (triage): examples, then properties over random histories."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from alerts.lifecycle import (
    AlertState,
    Change,
    ChangeKind,
    Finding,
    LifecyclePolicy,
    Status,
    resolve_manually,
    state_from_dict,
    state_to_dict,
    transition,
)
from alerts.sweep import AccountAlerts, resolve_by_hand

T0 = datetime(2026, 11, 23, tzinfo=UTC)
HOUR = timedelta(hours=1)


def finding(active: bool) -> Finding:
    return Finding(
        "account-silent",
        "acme",
        active,
        "critical",
        evidence={"v": 1},
        annotations={"summary": "s"},
    )


def firing() -> AlertState:
    state, _ = transition(None, finding(True), T0)
    assert state is not None and state.status is Status.FIRING
    return state


def test_resolving_a_firing_alert_publishes_resolved_with_who_and_why() -> None:
    state, change = resolve_manually(firing(), T0 + HOUR, "dana", "called them, all fine")
    assert change is not None and change.kind is ChangeKind.RESOLVED
    assert state is not None and state.status is Status.RESOLVED and state.ends_at == T0 + HOUR
    assert state.resolved_by == "dana" and state.held_until_clear
    assert state.annotations == {
        "summary": "s",
        "resolved_by": "dana",
        "resolve_reason": "called them, all fine",
    }


def test_only_a_firing_alert_can_be_resolved_by_hand() -> None:
    assert resolve_manually(None, T0, "dana") == (None, None)
    pending, _ = transition(None, finding(True), T0, LifecyclePolicy(for_s=3600))
    assert resolve_manually(pending, T0, "dana") == (pending, None)
    resolved, _ = resolve_manually(firing(), T0, "dana")
    assert resolve_manually(resolved, T0 + HOUR, "sam") == (resolved, None)


def test_it_stays_resolved_while_the_condition_holds_and_fires_after_it_cleared() -> None:
    state, _ = resolve_manually(firing(), T0 + HOUR, "dana")
    for hours in (2, 30, 500):  # even past any repeat interval
        state, change = transition(state, finding(True), T0 + hours * HOUR)
        assert change is None and state is not None and state.status is Status.RESOLVED
    state, change = transition(state, finding(False), T0 + 501 * HOUR)
    assert change is None and state is not None and not state.held_until_clear
    state, change = transition(state, finding(True), T0 + 502 * HOUR)
    assert change is not None and change.kind is ChangeKind.FIRING
    assert state is not None and state.starts_at == T0 + 502 * HOUR
    assert state.resolved_by is None and "resolved_by" not in state.annotations


def test_stored_states_without_the_new_fields_still_load_and_unset_ones_are_not_written() -> None:
    plain = state_to_dict(firing())
    assert "resolved_by" not in plain and "held_until_clear" not in plain
    assert state_from_dict(plain) == firing()
    resolved, _ = resolve_manually(firing(), T0, "dana", "ok")
    assert resolved is not None and state_from_dict(state_to_dict(resolved)) == resolved


def test_the_account_book_applies_a_resolve_and_marks_itself_changed() -> None:
    state = firing()
    book = AccountAlerts({state.fingerprint: state})
    change = resolve_by_hand(book, state.fingerprint, T0 + HOUR, "dana", "fine")
    assert change is not None and book.changed and not book.open()
    again = AccountAlerts.from_dict(book.to_dict())
    assert resolve_by_hand(again, state.fingerprint, T0 + 2 * HOUR, "dana") is None
    assert not again.changed
    assert resolve_by_hand(again, "no-such-alert", T0, "dana") is None


# --- properties: sweeps (True/False findings) interleaved with people resolving ("R") ---

steps = st.lists(
    st.tuples(st.sampled_from([True, False, "R"]), st.integers(min_value=0, max_value=30)),
    max_size=60,
)
policies = st.builds(
    LifecyclePolicy,
    for_s=st.sampled_from([0.0, 3600.0]),
    repeat_interval_s=st.sampled_from([3600.0, 1e9]),
)


def run(history: list[tuple[bool | str, int]], policy: LifecyclePolicy) -> list[tuple[str, Change]]:
    """(what happened, change) for every change: 'sweep' or 'hand' resolves."""
    state: AlertState | None = None
    at, changes = T0, []
    for step, gap_h in history:
        at += timedelta(hours=gap_h)
        if step == "R":
            state, change = resolve_manually(state, at, "dana")
            source = "hand"
        else:
            state, change = transition(state, finding(bool(step)), at, policy)
            source = "sweep"
        if change is not None:
            changes.append((source, change))
    return changes


@given(steps, policies)
def test_no_double_firing_and_resolved_only_after_firing(
    history: list[tuple[bool | str, int]], policy: LifecyclePolicy
) -> None:
    kinds = "".join(
        {"firing": "F", "repeat": "P", "resolved": "R"}[c.kind.value]
        for _, c in run(history, policy)
    )
    assert re.fullmatch(r"(FP*R)*(FP*)?", kinds), kinds


@given(steps, policies)
def test_after_a_hand_resolve_nothing_fires_until_the_condition_cleared(
    history: list[tuple[bool | str, int]], policy: LifecyclePolicy
) -> None:
    state: AlertState | None = None
    at = T0
    held = False  # resolved by hand, condition not seen clear since
    for step, gap_h in history:
        at += timedelta(hours=gap_h)
        if step == "R":
            before = state
            state, change = resolve_manually(state, at, "dana")
            if before is not None and before.status is Status.FIRING:
                assert change is not None
                held = True
            continue
        state, change = transition(state, finding(bool(step)), at, policy)
        if not step:
            held = False
        if held:
            assert change is None, "re-fired while the hand-resolved condition still held"
            assert state is not None and state.status is Status.RESOLVED


@given(st.integers(min_value=1, max_value=20), st.integers(min_value=1, max_value=20))
def test_a_hand_resolved_alert_can_fire_again_once_the_condition_cleared(
    held_sweeps: int, clear_sweeps: int
) -> None:
    state, _ = resolve_manually(firing(), T0, "dana")
    at = T0
    for _ in range(held_sweeps):
        at += HOUR
        state, change = transition(state, finding(True), at)
        assert change is None
    for _ in range(clear_sweeps):
        at += HOUR
        state, change = transition(state, finding(False), at)
        assert change is None
    state, change = transition(state, finding(True), at + HOUR)
    assert change is not None and change.kind is ChangeKind.FIRING
