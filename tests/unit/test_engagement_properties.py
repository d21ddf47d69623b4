"""Properties of ``fold_events`` against a naive reference built from plain sets.

The reference sees the whole list of distinct events at once and never uses bitmaps,
slots, pruning or a dedup memory; the engine sees the same events with duplicates, in
random batches, in any order. Whatever the delivery, the state read back (bitmaps
turned into user ids with ``users_in``) must equal the reference.
"""

from __future__ import annotations

import dataclasses
import importlib
import itertools
import math
import zoneinfo
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from random import Random
from typing import Any
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from stream.engagement import (
    EngagementState,
    FoldOutcome,
    Span,
    StatePolicy,
    _day_span,
    fold_events,
)
from stream.events import EventType, UsageEvent

# The pure-Python ZoneInfo keeps its changes of offset where a test can read them.
PyZoneInfo: Any = importlib.import_module("zoneinfo._zoneinfo").ZoneInfo
POLICY = StatePolicy(recent_nps=4)  # small, so the examples reach the cap
LATENESS_S = int(POLICY.lateness_s)
# New York leaves daylight time at 06:00 UTC on 2026-11-01, inside the span; Kolkata
# and Chatham have odd offsets, so local midnights fall at unusual UTC times.
START = datetime(2026, 10, 30, tzinfo=UTC)
ZONES = ("UTC", "America/New_York", "Asia/Kolkata", "Pacific/Chatham")
USERS = ("u-1", "u-2", "u-3", "u-4", "u-5", "u-6")
ROLES = ("user", "champion", "admin", "executive")
FEATURES = ("reports", "export", "alerts")

EXAMPLES = settings(max_examples=200, deadline=None)


# --- the naive reference ----------------------------------------------------------------


@dataclass
class Day:
    events: int = 0
    logins: int = 0
    sessions: int = 0
    session_s: float = 0.0
    active_users: set[str] = field(default_factory=set)
    login_users: set[str] = field(default_factory=set)
    features: dict[str, set[str]] = field(default_factory=dict)
    nps: list[tuple[str | None, int]] = field(default_factory=list)
    """Sorted (user, score) answers."""


@dataclass
class View:
    """Everything the properties compare, in plain Python values."""

    days: dict[str, Day]
    last_seen: dict[str, float]
    first_seen: dict[str, float]
    roles: dict[str, str]
    event_counts: dict[str, int]
    firsts: tuple[float | None, float | None, float | None, float | None]
    newest_at: float | None
    nps_totals: list[int]
    recent_nps: list[tuple[str | None, str, int, Any, float]]
    license_changes: list[tuple[float, int]]
    remembered_ids: dict[str, float]


def reference(events: Sequence[UsageEvent], timezone: str) -> View:
    """Compute the view from the full list of *distinct* events, the obvious way."""
    zone = ZoneInfo(timezone)
    days: dict[str, Day] = {}
    for event in events:
        day = days.setdefault(event.occurred_at.astimezone(zone).date().isoformat(), Day())
        day.events += 1
        user = event.user_id
        if user is not None:
            day.active_users.add(user)
        if event.type is EventType.LOGIN:
            day.logins += 1
            day.login_users.add(str(user))
        elif event.type is EventType.SESSION_END:
            day.sessions += 1
            day.session_s += float(event.properties["duration_s"])
        elif event.type is EventType.FEATURE_USED:
            day.features.setdefault(event.properties["feature"], set()).add(str(user))
        elif event.type is EventType.NPS_RESPONSE:
            day.nps.append((user, event.properties["score"]))
    for day in days.values():
        day.nps.sort(key=repr)

    def at(event: UsageEvent) -> float:
        return event.occurred_at.timestamp()

    def first(kind: EventType) -> float | None:
        return min((at(e) for e in events if e.type is kind), default=None)

    with_user = [e for e in events if e.user_id is not None]
    newest_of_user: dict[str, UsageEvent] = {}
    for event in sorted(with_user, key=at):  # event times are unique in these tests
        newest_of_user[str(event.user_id)] = event
    scores = [int(e.properties["score"]) for e in events if e.type is EventType.NPS_RESPONSE]
    answers = sorted(
        (e for e in events if e.type is EventType.NPS_RESPONSE),
        key=lambda e: (at(e), str(e.user_id)),
    )
    return View(
        days=days,
        last_seen={u: max(at(e) for e in with_user if e.user_id == u) for u in newest_of_user},
        first_seen={u: min(at(e) for e in with_user if e.user_id == u) for u in newest_of_user},
        # The newest event naming a role ("user" is the default: it takes none away).
        roles={
            u: next(
                (
                    e.role
                    for e in sorted(with_user, key=at, reverse=True)
                    if e.user_id == u and e.role != "user"
                ),
                "user",
            )
            for u in newest_of_user
        },
        event_counts=dict(Counter(e.type.value for e in events)),
        firsts=(
            min((at(e) for e in events), default=None),
            first(EventType.LOGIN),
            first(EventType.FEATURE_USED),
            first(EventType.VALUE_MILESTONE),
        ),
        newest_at=max((at(e) for e in events), default=None),
        nps_totals=[
            sum(s >= 9 for s in scores),
            sum(7 <= s <= 8 for s in scores),
            sum(s <= 6 for s in scores),
        ],
        recent_nps=[
            (e.user_id, e.role, int(e.properties["score"]), e.properties.get("comment"), at(e))
            for e in answers
        ][-POLICY.recent_nps :],
        license_changes=sorted(
            (at(e), int(e.properties["licenses"]))
            for e in events
            if e.type is EventType.LICENSE_CHANGE
        ),
        remembered_ids={e.event_id: at(e) for e in events},
    )


def read(state: EngagementState) -> View:
    """Read the engine's state back into the reference's plain values."""
    by_slot = {user.slot: user_id for user_id, user in state.users.items()}
    days = {
        name: Day(
            events=b.events,
            logins=b.logins,
            sessions=b.sessions,
            session_s=b.session_s,
            active_users=state.users_in(b.active_users),
            login_users=state.users_in(b.login_users),
            features={f: state.users_in(bits) for f, bits in b.features.items()},
            nps=sorted(((by_slot.get(slot), score) for slot, score in b.nps), key=repr),
        )
        for name, b in state.days.items()
    }
    return View(
        days=days,
        last_seen={u: r.last_seen for u, r in state.users.items()},
        first_seen={u: r.first_seen for u, r in state.users.items()},
        roles={u: r.role for u, r in state.users.items()},
        event_counts=dict(state.event_counts),
        firsts=(
            state.first_seen_at,
            state.first_login_at,
            state.first_action_at,
            state.first_value_at,
        ),
        newest_at=state.newest_at,
        nps_totals=list(state.nps_totals),
        recent_nps=[
            (a["user_id"], a["role"], a["score"], a["comment"], a["at"]) for a in state.recent_nps
        ],
        license_changes=list(state.license_changes),
        remembered_ids=dict(state.recent_ids),
    )


# --- strategies -----------------------------------------------------------------------


def properties_of(kind: EventType) -> st.SearchStrategy[dict[str, Any]]:
    if kind is EventType.SESSION_END:
        # quarter seconds: exact in binary, so sums do not depend on the order
        return st.builds(lambda q: {"duration_s": q / 4}, st.integers(0, 40_000))
    if kind is EventType.FEATURE_USED:
        return st.builds(lambda f: {"feature": f}, st.sampled_from(FEATURES))
    if kind is EventType.NPS_RESPONSE:
        comment = st.none() | st.sampled_from(["great", "slow"])
        return st.builds(
            lambda s, c: {"score": s} if c is None else {"score": s, "comment": c},
            st.integers(0, 10),
            comment,
        )
    if kind is EventType.VALUE_MILESTONE:
        return st.just({"milestone": "first_dashboard"})
    if kind is EventType.LICENSE_CHANGE:
        return st.builds(lambda n: {"licenses": n}, st.integers(0, 500))
    return st.just({})


@st.composite
def usage_event(draw: st.DrawFn, event_id: str, at: datetime) -> UsageEvent:
    kind = draw(st.sampled_from(list(EventType)))
    users = st.sampled_from(USERS)
    user = draw(st.none() | users if kind is EventType.LICENSE_CHANGE else users)
    role = draw(st.sampled_from(ROLES))
    return UsageEvent(event_id, kind, "acme", user, role, at, draw(properties_of(kind)))


@st.composite
def distinct_events(draw: st.DrawFn, min_size: int = 0, max_size: int = 40) -> list[UsageEvent]:
    """Events with unique ids and unique times, at most the lateness apart (so none is
    late whatever the order: late means strictly older than newest - lateness)."""
    within = st.integers(0, LATENESS_S)
    offsets = draw(st.lists(within, min_size=min_size, max_size=max_size, unique=True))
    return [
        draw(usage_event(f"e{n}", START + timedelta(seconds=offset)))
        for n, offset in enumerate(offsets)
    ]


def copy_of(event: UsageEvent) -> UsageEvent:
    """An exact copy, as a redelivery decodes it again: equal, not the same object."""
    return dataclasses.replace(event, properties=dict(event.properties))


@st.composite
def deliveries(draw: st.DrawFn, events: Sequence[UsageEvent]) -> list[list[UsageEvent]]:
    """The events plus random duplicates, shuffled and cut into random batches."""
    repeats = draw(st.lists(st.sampled_from(events), max_size=len(events))) if events else []
    delivered = draw(st.permutations([*events, *(copy_of(e) for e in repeats)]))
    cuts = draw(st.lists(st.integers(0, len(delivered)), max_size=6))
    bounds = [0, *sorted(cuts), len(delivered)]
    return [delivered[a:b] for a, b in itertools.pairwise(bounds)]


@dataclass
class Scenario:
    timezone: str
    events: list[UsageEvent]
    batches: list[list[UsageEvent]]

    @property
    def delivered(self) -> int:
        return sum(len(batch) for batch in self.batches)


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    events = draw(distinct_events())
    return Scenario(draw(st.sampled_from(ZONES)), events, draw(deliveries(events)))


def fold_all(
    state: EngagementState, batches: Iterable[Sequence[UsageEvent]], round_trip: bool = False
) -> tuple[EngagementState, FoldOutcome]:
    total = FoldOutcome()
    for batch in batches:
        outcome = fold_events(state, batch, POLICY)
        total.counted += outcome.counted
        total.duplicates += outcome.duplicates
        total.late.extend(outcome.late)
        if round_trip:
            state = EngagementState.from_json(state.to_json())
    return state, total


# --- properties -----------------------------------------------------------------------


@EXAMPLES
@given(scenarios())
def test_any_delivery_folds_to_the_reference(scenario: Scenario) -> None:
    state, outcome = fold_all(EngagementState("acme", scenario.timezone), scenario.batches)

    assert outcome == FoldOutcome(
        counted=len(scenario.events),
        duplicates=scenario.delivered - len(scenario.events),
        late=[],
    )
    assert read(state) == reference(scenario.events, scenario.timezone)
    assert state.total_events == len(scenario.events)


@EXAMPLES
@given(scenarios())
def test_the_dedup_memory_holds_the_ids_within_the_lateness_in_time_order(
    scenario: Scenario,
) -> None:
    """After every batch, whatever order its events came in: the ids remembered are
    those of the newest event's lateness window (the newest by time, then id, past the
    capacity), in time order, which is what lets the next prune stop at the first id
    it keeps."""
    for capacity in (POLICY.dedup_capacity, 3):  # never reached; cut at almost every batch
        policy = dataclasses.replace(POLICY, dedup_capacity=capacity)
        state = EngagementState("acme", scenario.timezone)
        seen: dict[str, float] = {}
        for batch in scenario.batches:
            fold_events(state, batch, policy)
            seen |= {event.event_id: event.occurred_at.timestamp() for event in batch}
            bound = -math.inf if state.newest_at is None else state.newest_at - policy.lateness_s
            kept = sorted((at, i) for i, at in seen.items() if at >= bound)[-capacity:]
            assert state.recent_ids == {i: at for at, i in kept}
            times = list(state.recent_ids.values())
            assert times == sorted(times)


@EXAMPLES
@given(scenarios())
def test_a_json_round_trip_after_every_batch_changes_nothing(scenario: Scenario) -> None:
    state, outcome = fold_all(
        EngagementState("acme", scenario.timezone), scenario.batches, round_trip=True
    )

    assert outcome.counted == len(scenario.events)
    assert read(state) == reference(scenario.events, scenario.timezone)
    direct, _ = fold_all(EngagementState("acme", scenario.timezone), scenario.batches)
    assert read(state) == read(direct)


@EXAMPLES
@given(scenarios(), st.randoms(use_true_random=False))
def test_full_redelivery_changes_nothing(scenario: Scenario, random: Random) -> None:
    state, _ = fold_all(EngagementState("acme", scenario.timezone), scenario.batches)
    before = state.to_json()  # bytes: to_dict shares the state's own dicts

    again = [list(batch) for batch in scenario.batches]
    random.shuffle(again)
    _, outcome = fold_all(state, again)

    assert outcome == FoldOutcome(counted=0, duplicates=scenario.delivered, late=[])
    assert state.to_json() == before
    assert read(state) == reference(scenario.events, scenario.timezone)


@st.composite
def late_scenarios(draw: st.DrawFn) -> tuple[Scenario, list[UsageEvent], list[UsageEvent]]:
    """A folded history, then one batch mixing late events, duplicates of the history
    and new events that are neither late nor newer than the history's newest."""
    base = draw(distinct_events(min_size=1, max_size=30))
    scenario = Scenario(draw(st.sampled_from(ZONES)), base, draw(deliveries(base)))
    newest = max(e.occurred_at for e in base)
    bound = newest - timedelta(seconds=LATENESS_S)
    taken = {e.occurred_at for e in base}

    late_offsets = st.lists(st.integers(1, 10 * 86_400), max_size=10, unique=True)
    late = [
        draw(usage_event(f"late{n}", bound - timedelta(seconds=back)))
        for n, back in enumerate(draw(late_offsets))
    ]
    fresh_offsets = st.lists(st.integers(0, LATENESS_S), max_size=10, unique=True)
    fresh = [
        draw(usage_event(f"new{n}", at))
        for n, at in enumerate(newest - timedelta(seconds=s) for s in draw(fresh_offsets))
        if at not in taken
    ]
    repeats = draw(st.lists(st.sampled_from(base), max_size=10))
    return scenario, late, [*fresh, *(copy_of(e) for e in repeats)]


@EXAMPLES
@given(late_scenarios(), st.data())
def test_late_events_are_reported_and_change_nothing(
    late_scenario: tuple[Scenario, list[UsageEvent], list[UsageEvent]], data: st.DataObject
) -> None:
    scenario, late, others = late_scenario
    state, _ = fold_all(EngagementState("acme", scenario.timezone), scenario.batches)

    # Late events alone: reported by index, the state is byte for byte the same.
    before = state.to_json()
    alone = data.draw(st.permutations(late))
    assert fold_events(state, alone, POLICY) == FoldOutcome(late=list(range(len(alone))))
    assert state.to_json() == before

    # Mixed with duplicates and in-lateness new events: only the late ones are late.
    batch = data.draw(st.permutations([*late, *others]))
    outcome = fold_events(state, batch, POLICY)
    late_ids = {e.event_id for e in late}
    assert outcome.late == [i for i, e in enumerate(batch) if e.event_id in late_ids]
    fresh = [e for e in others if e.event_id.startswith("new")]
    assert outcome.counted == len(fresh)
    assert read(state) == reference([*scenario.events, *fresh], scenario.timezone)


# --- local days without a datetime per event --------------------------------------------


def test_offsets_never_change_twice_in_a_day() -> None:
    # _day_span trusts one offset at both ends of a day to mean one offset all day.
    closest = min(
        (b - a, name)
        for name in zoneinfo.available_timezones()
        if len(transitions := PyZoneInfo.no_cache(name)._trans_utc) > 1
        for a, b in itertools.pairwise(transitions)
    )
    assert closest[0] > 86_400, closest


@EXAMPLES
@given(
    st.sampled_from(sorted(zoneinfo.available_timezones())),
    st.lists(st.integers(-2 * 86_400, 2 * 86_400), min_size=1, max_size=30),
    st.sampled_from([0.0, 0.25, 0.999999]),
)
def test_day_spans_give_the_local_day_of_every_instant(
    zone_name: str, offsets: list[int], fraction: float
) -> None:
    zone = ZoneInfo(zone_name)
    # Around the zone's changes of offset in 2026 (or any day, for zones without any).
    changes = [t for t in PyZoneInfo.no_cache(zone_name)._trans_utc if 1.77e9 < t < 1.81e9]
    base = changes[len(offsets) % len(changes)] if changes else 1_795_000_000
    spans: dict[float, Span] = {}
    for offset in offsets:
        at = base + offset + fraction
        start, end, day = _day_span(spans, zone, at)
        expected = datetime.fromtimestamp(at, UTC).astimezone(zone).date().isoformat()
        assert day == expected and start <= at <= end
        for inside in (start, end - 1.0) if start < end else ():
            local = datetime.fromtimestamp(inside, UTC).astimezone(zone).date().isoformat()
            assert local == day
