"""The evaluation grid: the same history gives the same evaluations, however it is
batched, and each tick sees exactly the events before it."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Collection
from dataclasses import dataclass, field

from hypothesis import given
from hypothesis import strategies as st

from alerts.timeline import advance, grid_floor, next_tick, walk

STEP = 100.0


@dataclass
class Recorder:
    """Folds and evaluations as they happen: what each evaluation saw."""

    times: list[float]
    folded: list[float] = field(default_factory=list)
    seen: list[tuple[str, float, tuple[float, ...]]] = field(default_factory=list)
    offset: int = 0

    def fold(self, start: int, end: int) -> None:
        assert start < end, "empty folds are skipped"
        self.folded.extend(self.times[self.offset + start : self.offset + end])

    def tick(self, at: float) -> None:
        self.seen.append(("tick", at, tuple(self.folded)))

    def instant(self, at: float) -> None:
        self.seen.append(("instant", at, tuple(self.folded)))


def run(times: list[float], cuts: list[int], instant: set[int], upto: float) -> Recorder:
    """Walk ``times`` in batches split at ``cuts``, then advance idle ticks to ``upto``."""
    recorder = Recorder(times)
    cursor: float | None = None
    bounds = [0, *sorted(c for c in set(cuts) if 0 < c < len(times)), len(times)]
    for start, end in itertools.pairwise(bounds):
        recorder.offset = start
        cursor = walk(
            times[start:end],
            cursor,
            STEP,
            fold=recorder.fold,
            evaluate=recorder.tick,
            instant={i - start for i in instant if start <= i < end},
            evaluate_instant=recorder.instant,
        )
    advance(cursor, upto, STEP, recorder.tick)
    return recorder


def test_ticks_cross_before_the_first_event_at_or_past_them() -> None:
    recorder = run([10, 50, 120, 130, 310], cuts=[], instant=set(), upto=0)
    assert recorder.seen == [
        ("tick", 100, (10, 50)),
        ("tick", 200, (10, 50, 120, 130)),
        ("tick", 300, (10, 50, 120, 130)),
    ]
    assert recorder.folded == [10, 50, 120, 130, 310]


def test_an_idle_account_is_evaluated_up_to_the_clock() -> None:
    recorder = run([10], cuts=[], instant=set(), upto=350)
    assert [(kind, at) for kind, at, _ in recorder.seen] == [
        ("tick", 100),
        ("tick", 200),
        ("tick", 300),
    ]
    assert advance(None, 1000, STEP, recorder.tick) is None  # no events: nothing to judge


def test_an_event_on_a_tick_is_judged_after_it() -> None:
    recorder = run([50, 100], cuts=[], instant=set(), upto=0)
    assert recorder.seen == [("tick", 100, (50,))]


def test_event_driven_rules_run_right_after_their_event_at_its_time() -> None:
    recorder = run([10, 40, 60, 150], cuts=[], instant={1}, upto=0)
    assert recorder.seen == [
        ("instant", 40, (10, 40)),
        ("tick", 100, (10, 40, 60)),
    ]
    # A late answer is judged at the cursor: evaluation time never goes back.
    late = run([150, 90], cuts=[], instant={1}, upto=0)
    assert late.seen == [("instant", 100, (150, 90))]


def test_grid_helpers() -> None:
    assert grid_floor(250, STEP) == 200
    assert grid_floor(-50, STEP) == -100
    assert next_tick(200, STEP) == 300
    assert next_tick(250, STEP) == 300


times_strategy = st.lists(st.integers(min_value=0, max_value=1_000), min_size=1, max_size=40).map(
    lambda xs: [float(x) for x in xs]
)


@given(
    times=times_strategy,
    cuts=st.lists(st.integers(min_value=0, max_value=40), max_size=8),
    instant=st.sets(st.integers(min_value=0, max_value=39), max_size=5),
    idle=st.integers(min_value=0, max_value=500),
)
def test_batching_never_changes_what_is_evaluated(
    times: list[float], cuts: list[int], instant: set[int], idle: int
) -> None:
    upto = max(times) + idle
    whole = run(times, [], instant, upto)
    batched = run(times, cuts, instant, upto)
    assert batched.seen == whole.seen
    assert batched.folded == whole.folded == times


@given(times=times_strategy, instant=st.sets(st.integers(min_value=0, max_value=39), max_size=5))
def test_each_evaluation_sees_only_earlier_events_and_time_moves_forward(
    times: list[float], instant: set[int]
) -> None:
    recorder = run(times, [], instant, upto=max(times) + 300)
    instants = [at for _, at, _ in recorder.seen]
    assert instants == sorted(instants)
    ticks = [at for kind, at, _ in recorder.seen if kind == "tick"]
    assert len(ticks) == len(set(ticks))
    assert all(at % STEP == 0 for at in ticks)
    for kind, at, folded in recorder.seen:
        if kind == "tick":
            assert all(t < at for t in folded), (at, folded)
    # Every tick from the first event's to the end is evaluated once.
    first = grid_floor(times[0], STEP)
    assert ticks == [first + STEP * n for n in range(1, len(ticks) + 1)]


def walk_event_by_event(
    times: list[float],
    cursor: float | None,
    step_s: float,
    *,
    fold: Callable[[int, int], None],
    evaluate: Callable[[float], None],
    instant: Collection[int],
    evaluate_instant: Callable[[float], None],
) -> float | None:
    """The grid read one event at a time: what :func:`walk` must do, however it searches."""
    start = 0
    boundary = math.inf if cursor is None else next_tick(cursor, step_s)
    for index, at in enumerate(times):
        if cursor is None:
            cursor = grid_floor(at, step_s)
            boundary = next_tick(cursor, step_s)
        while boundary <= at:
            if index > start:
                fold(start, index)
                start = index
            evaluate(boundary)
            cursor = boundary
            boundary = next_tick(cursor, step_s)
        if index in instant:
            fold(start, index + 1)
            start = index + 1
            cursor = max(at, cursor)
            boundary = next_tick(cursor, step_s)
            evaluate_instant(cursor)
    if start < len(times):
        fold(start, len(times))
    return cursor


@given(
    times=st.lists(
        st.floats(min_value=0, max_value=2_000, allow_nan=False), min_size=0, max_size=60
    ),
    # Any collection of indices: repeated ones, and ones outside ``times``, count as a
    # per-event membership test reads them.
    instant=st.lists(st.integers(min_value=-5, max_value=70), max_size=8),
    cursor=st.none() | st.floats(min_value=-200, max_value=2_000, allow_nan=False),
)
def test_walk_does_what_reading_event_by_event_does(
    times: list[float], instant: list[int], cursor: float | None
) -> None:
    calls: dict[str, list[tuple[str, float, float]]] = {"walk": [], "reference": []}

    def recorder(name: str) -> dict[str, Callable[..., None]]:
        log = calls[name]
        return {
            "fold": lambda start, end: log.append(("fold", start, end)),
            "evaluate": lambda at: log.append(("tick", at, 0)),
            "evaluate_instant": lambda at: log.append(("instant", at, 0)),
        }

    got = walk(times, cursor, STEP, instant=instant, **recorder("walk"))
    expected = walk_event_by_event(times, cursor, STEP, instant=instant, **recorder("reference"))
    assert got == expected
    assert calls["walk"] == calls["reference"]
