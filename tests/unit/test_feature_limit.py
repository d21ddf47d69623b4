"""The day's feature limit: a producer sending ids as feature names cannot grow an
account's state without bound, and nothing the rules read or count is lost."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from alerts.rules import judged_features, load_rules
from config.settings import Settings
from stream.app import state_policy
from stream.engagement import OTHER_FEATURES, EngagementState, StatePolicy, fold_events
from stream.events import EventType, UsageEvent

START = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
NAMES = ("reports", "export", "alerts", "f-1", "f-2", "f-3", "f-4", "f-5")
USERS = ("u-1", "u-2", "u-3", "u-4", "u-5", "u-6")
SHIPPED = Path(__file__).resolve().parents[2] / "config" / "rules.yaml"


def used(n: int, feature: str, user: str, day: int = 0) -> UsageEvent:
    at = START + timedelta(days=day, minutes=n)
    props = {"feature": feature}
    return UsageEvent(f"e-{day}-{n}", EventType.FEATURE_USED, "acme", user, "user", at, props)


def features_by_day(state: EngagementState) -> dict[str, dict[str, set[str]]]:
    return {
        day: {name: state.users_in(bits) for name, bits in bucket.features.items()}
        for day, bucket in state.days.items()
    }


def test_new_names_past_the_day_limit_are_counted_as_other_and_kept_names_stay() -> None:
    state = EngagementState("acme")
    policy = StatePolicy(features_per_day=3, kept_features=frozenset({"reports"}))
    events = [
        used(0, "f-1", "u-1"),
        used(1, "f-2", "u-2"),
        used(2, "f-3", "u-3"),
        used(3, "f-4", "u-4"),  # the fourth name of the day
        used(4, "f-5", "u-1"),
        used(5, "f-1", "u-5"),  # a name already kept is still followed
        used(6, "reports", "u-6"),  # judged by a rule: kept past the limit
        used(0, "f-9", "u-1", day=1),  # a new day has its own limit
    ]
    outcome = fold_events(state, events, policy)
    assert outcome.counted == len(events)
    assert features_by_day(state) == {
        "2026-11-02": {
            "f-1": {"u-1", "u-5"},
            "f-2": {"u-2"},
            "f-3": {"u-3"},
            OTHER_FEATURES: {"u-4", "u-1"},
            "reports": {"u-6"},
        },
        "2026-11-03": {"f-9": {"u-1"}},
    }
    assert state.event_counts == {"feature_used": len(events)}


def test_the_rules_features_are_kept_live_and_in_replay() -> None:
    """The worker's policy (stream/app.py) keeps the names the shipped rules read, and
    so does the backtest, which adds them to any policy it is given."""
    rules = load_rules(SHIPPED).rules
    assert judged_features(rules) == {"reports"}
    policy = state_policy(Settings(features_per_day=5), rules)
    assert (policy.features_per_day, policy.kept_features) == (5, frozenset({"reports"}))
    assert state_policy(Settings()).kept_features == frozenset()
    assert policy.keeping(frozenset({"reports"})) is policy


@settings(max_examples=300, deadline=None)
@given(
    uses=st.lists(
        st.tuples(st.integers(0, 2), st.sampled_from(NAMES), st.sampled_from(USERS)),
        max_size=40,
    ),
    limit=st.integers(1, 4),
    kept=st.frozensets(st.sampled_from(NAMES), max_size=2),
)
def test_the_limit_merges_names_in_arrival_order_and_loses_no_user(
    uses: list[tuple[int, str, str]], limit: int, kept: frozenset[str]
) -> None:
    events = [used(n, feature, user, day) for n, (day, feature, user) in enumerate(uses)]
    capped, free = EngagementState("acme"), EngagementState("acme")
    fold_events(capped, events, StatePolicy(features_per_day=limit, kept_features=kept))
    fold_events(free, events, StatePolicy(features_per_day=len(NAMES)))

    # The reference: a new name is kept as it is while its day holds fewer than `limit`
    # names (kept names and "(other)" among them), a kept name always, and any other
    # is "(other)".
    expected: dict[str, dict[str, set[str]]] = {}
    for event in events:
        names = expected.setdefault(event.occurred_at.date().isoformat(), {})
        name = event.properties["feature"]
        if name not in names and name not in kept and len(names) >= limit:
            name = OTHER_FEATURES
        assert event.user_id is not None
        names.setdefault(name, set()).add(event.user_id)
    assert features_by_day(capped) == expected

    for day, folded in features_by_day(capped).items():
        assert len(folded) <= limit + 1 + len(kept)
        uncapped = features_by_day(free)[day]
        assert set().union(*folded.values()) == set().union(*uncapped.values())
        for name in kept & uncapped.keys():
            assert folded[name] == uncapped[name]
    assert capped.event_counts == free.event_counts
