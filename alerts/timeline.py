"""When an account's rules are evaluated: on a grid in event time, identically live and
in replay.

An account is evaluated at every tick of a fixed grid (multiples of ``step_s`` since
the epoch, UTC), each time over exactly the events that arrived before the first
event at or past that tick. Ticks are crossed by the account's own events, in the
order they arrive (its partition's order live, the file's order in replay); an idle
account's ticks are crossed by the clock (the worker's sweep live, the end of the
history in replay). Rules of event-driven kinds (an NPS answer) are evaluated right
after the event that feeds them, at its own time.

So the same history gives the same evaluations, at the same instants, over the same
state: live and replay publish the same alert events. The cursor (the last instant
evaluated) is stored with the account's alerts, so a restart neither skips nor
repeats a tick.

Pure: the caller folds and evaluates through the two callbacks.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Iterator, Sequence
from functools import partial
from itertools import compress, count, islice
from operator import le

__all__ = ["advance", "grid_floor", "next_tick", "walk"]

Fold = Callable[[int, int], None]
"""Fold the account's events ``[start, end)`` into its state."""
Evaluate = Callable[[float], None]
"""Evaluate the account's rules at this instant (epoch seconds)."""


def grid_floor(at: float, step_s: float) -> float:
    """The last tick at or before ``at``."""
    return math.floor(at / step_s) * step_s


def next_tick(cursor: float, step_s: float) -> float:
    """The first tick after ``cursor`` (which may lie between ticks)."""
    return grid_floor(cursor, step_s) + step_s


def walk(
    times: Sequence[float],
    cursor: float | None,
    step_s: float,
    *,
    fold: Fold,
    evaluate: Evaluate,
    instant: Collection[int] = (),
    evaluate_instant: Evaluate | None = None,
) -> float | None:
    """Fold one account's new events (occurrence ``times``, in arrival order) and
    evaluate every tick they cross, before the first event past it; returns the
    new cursor.

    ``instant`` holds the indices of events after which ``evaluate_instant`` runs at
    the event's time (never before the cursor: evaluation time only moves forward).
    An account seen for the first time starts at the tick before its first event.

    It jumps from one event that matters (one crossing a tick, or a trigger) to the
    next, searching the times in between in C rather than looking at each in Python
    (tests/unit/test_timeline.py holds it to the event-by-event reading).
    """
    total = len(times)
    if not total:
        return cursor
    if cursor is None:
        cursor = grid_floor(times[0], step_s)
    boundary = next_tick(cursor, step_s)
    # Each index once, and only those of ``times`` (as a per-event test would read them).
    triggers = (
        sorted({i for i in instant if 0 <= i < total}) if evaluate_instant is not None else []
    )
    pending = iter(triggers)
    trigger = next(pending, total)
    stream = iter(times)  # read up to ``index``
    start = index = 0
    while index < total:
        crossing = _reaching(stream, index, min(trigger, total - 1), boundary)
        if crossing is not None:
            index, at = crossing, times[crossing]
            while boundary <= at:
                if index > start:
                    fold(start, index)
                    start = index
                evaluate(boundary)
                cursor = boundary
                boundary = next_tick(cursor, step_s)
        elif trigger < total:  # a trigger comes first, crossing nothing
            index = trigger
        else:
            break
        if index == trigger:
            assert evaluate_instant is not None
            fold(start, index + 1)
            start = index + 1
            cursor = max(times[index], cursor)
            boundary = next_tick(cursor, step_s)
            evaluate_instant(cursor)
            trigger = next(pending, total)
        index += 1
    if start < total:
        fold(start, total)
    return cursor


def _reaching(stream: Iterator[float], first: int, last: int, boundary: float) -> int | None:
    """The first index in ``[first, last]`` whose time is at or past ``boundary``, read
    from ``stream`` (at ``first``) in C, and no further than that index (or ``last``)."""
    times = islice(stream, last - first + 1)
    return next(compress(count(first), map(partial(le, boundary), times)), None)


def advance(cursor: float | None, upto: float, step_s: float, evaluate: Evaluate) -> float | None:
    """Evaluate the ticks up to ``upto`` that no event crossed (an idle account)."""
    if cursor is None:
        return None
    while (tick := next_tick(cursor, step_s)) <= upto:
        evaluate(tick)
        cursor = tick
    return cursor
