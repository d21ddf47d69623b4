"""The alert state machine: examples, then properties over random histories."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from alerts.lifecycle import (
    AlertState,
    Change,
    ChangeKind,
    Finding,
    LifecyclePolicy,
    Status,
    fingerprint,
    state_from_dict,
    state_to_dict,
    transition,
)

T0 = datetime(2026, 11, 23, tzinfo=UTC)
HOUR = timedelta(hours=1)


def finding(active: bool, value: int = 9, subject: str | None = None) -> Finding:
    return Finding(
        "champion-silent", "acme", active, "critical", subject, evidence={"value": value}
    )


def run(steps: list[tuple[bool, datetime]], policy: LifecyclePolicy) -> list[Change]:
    state: AlertState | None = None
    changes = []
    for active, at in steps:
        state, change = transition(state, finding(active), at, policy)
        if change is not None:
            changes.append(change)
    return changes


def test_fires_at_once_without_a_pending_duration() -> None:
    state, change = transition(None, finding(True), T0)
    assert state is not None and state.status is Status.FIRING and state.starts_at == T0
    assert change is not None and change.kind is ChangeKind.FIRING and change.alert == state


def test_pending_fires_only_after_holding_for_the_duration() -> None:
    policy = LifecyclePolicy(for_s=2 * 3600)
    state, change = transition(None, finding(True), T0, policy)
    assert state is not None and state.status is Status.PENDING and change is None
    state, change = transition(state, finding(True), T0 + HOUR, policy)
    assert state is not None and state.status is Status.PENDING and change is None
    state, change = transition(state, finding(True, value=11), T0 + 2 * HOUR, policy)
    assert change is not None and change.kind is ChangeKind.FIRING
    assert state is not None and state.starts_at == T0 + 2 * HOUR and state.active_since == T0
    assert state.evidence == {"value": 11}


def test_a_pending_condition_that_clears_leaves_no_trace() -> None:
    policy = LifecyclePolicy(for_s=3600)
    state, _ = transition(None, finding(True), T0, policy)
    assert transition(state, finding(False), T0 + timedelta(minutes=5), policy) == (None, None)


def test_firing_resolves_once_with_its_end_time() -> None:
    state, _ = transition(None, finding(True), T0)
    state, change = transition(state, finding(False, value=0), T0 + 3 * HOUR)
    assert change is not None and change.kind is ChangeKind.RESOLVED
    assert state is not None and state.ends_at == T0 + 3 * HOUR and state.starts_at == T0
    again, nothing = transition(state, finding(False), T0 + 4 * HOUR)
    assert again == state and nothing is None


def test_a_held_condition_repeats_only_on_schedule() -> None:
    policy = LifecyclePolicy(repeat_interval_s=24 * 3600)
    state, _ = transition(None, finding(True), T0, policy)
    state, change = transition(state, finding(True), T0 + 23 * HOUR, policy)
    assert change is None
    state, change = transition(state, finding(True), T0 + 24 * HOUR, policy)
    assert change is not None and change.kind is ChangeKind.REPEAT
    assert state is not None and state.last_notified_at == T0 + 24 * HOUR and state.starts_at == T0


def test_an_alert_that_grows_worse_is_told_at_once() -> None:
    """A health tier from yellow (warning) to red (critical): routes that page on
    critical hear of it now, not at the weekly reminder; growing better waits for it."""
    policy = LifecyclePolicy(repeat_interval_s=7 * 24 * 3600)

    def tier(severity: str) -> Finding:
        return Finding("health-tier", "acme", True, severity, None, evidence={"tier": severity})

    state, _ = transition(None, tier("warning"), T0, policy)
    state, change = transition(state, tier("critical"), T0 + HOUR, policy)
    assert change is not None and change.kind is ChangeKind.REPEAT
    assert change.alert.severity == "critical" and change.alert.starts_at == T0
    assert state is not None and state.last_notified_at == T0 + HOUR
    state, change = transition(state, tier("critical"), T0 + 2 * HOUR, policy)
    assert change is None
    state, change = transition(state, tier("warning"), T0 + 3 * HOUR, policy)
    assert change is None and state is not None and state.severity == "warning"
    # Back to red: receivers were told red already; the reminder will say it again.
    state, change = transition(state, tier("critical"), T0 + 4 * HOUR, policy)
    assert change is None and state is not None and state.severity == "critical"
    state, change = transition(state, tier("warning"), T0 + 5 * HOUR, policy)
    assert state is not None and state.told_severity == "critical"
    assert state_from_dict(state_to_dict(state)) == state


def test_a_returning_condition_is_a_new_episode() -> None:
    state, _ = transition(None, finding(True), T0)
    state, _ = transition(state, finding(False), T0 + HOUR)
    state, change = transition(state, finding(True), T0 + 5 * HOUR)
    assert change is not None and change.kind is ChangeKind.FIRING
    assert state is not None and state.starts_at == T0 + 5 * HOUR and state.ends_at is None


def test_fingerprint_is_stable_per_rule_account_and_stakeholder() -> None:
    assert fingerprint("r", "acme") == fingerprint("r", "acme")
    assert (
        len(
            {
                fingerprint("r", "acme"),
                fingerprint("r", "acme", "u-1"),
                fingerprint("r", "globex"),
                fingerprint("q", "acme"),
            }
        )
        == 4
    )
    assert finding(True, subject="u-9").fingerprint == fingerprint("champion-silent", "acme", "u-9")


def test_a_finding_cannot_move_another_alert() -> None:
    state, _ = transition(None, finding(True), T0)
    with pytest.raises(ValueError, match="fingerprint"):
        transition(state, finding(True, subject="u-2"), T0 + HOUR)


histories = st.lists(st.tuples(st.booleans(), st.integers(min_value=0, max_value=30)), max_size=60)
policies = st.builds(
    LifecyclePolicy,
    for_s=st.sampled_from([0.0, 3600.0, 4 * 3600.0]),
    repeat_interval_s=st.sampled_from([3600.0, 6 * 3600.0, 1e9]),
)


def timeline(history: list[tuple[bool, int]]) -> list[tuple[bool, datetime]]:
    at, steps = T0, []
    for active, gap_h in history:
        at += timedelta(hours=gap_h)
        steps.append((active, at))
    return steps


@given(histories, policies)
def test_changes_follow_firing_repeat_resolved_episodes(
    history: list[tuple[bool, int]], policy: LifecyclePolicy
) -> None:
    kinds = "".join(
        {"firing": "F", "repeat": "P", "resolved": "R"}[c.kind.value]
        for c in run(timeline(history), policy)
    )
    # Never a second firing while one is open; resolved only after firing.
    assert re.fullmatch(r"(FP*R)*(FP*)?", kinds), kinds


@given(histories, policies)
def test_firing_needs_the_condition_held_for_the_duration(
    history: list[tuple[bool, int]], policy: LifecyclePolicy
) -> None:
    steps = timeline(history)
    held_since: datetime | None = None
    state: AlertState | None = None
    for active, at in steps:
        if active and (state is None or state.status is not Status.FIRING):
            held_since = held_since or at
        if not active:
            held_since = None
        state, change = transition(state, finding(active), at, policy)
        if change is not None and change.kind is ChangeKind.FIRING:
            assert held_since is not None
            assert at - held_since >= timedelta(seconds=policy.for_s)
            held_since = None


@given(histories, policies)
def test_repeats_are_at_least_an_interval_apart(
    history: list[tuple[bool, int]], policy: LifecyclePolicy
) -> None:
    last: datetime | None = None
    for change in run(timeline(history), policy):
        if change.kind is ChangeKind.FIRING:
            last = change.at
        elif change.kind is ChangeKind.REPEAT:
            assert last is not None
            assert change.at - last >= timedelta(seconds=policy.repeat_interval_s)
            last = change.at
