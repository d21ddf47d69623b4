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
from collections.abc import Callable, Collection, Sequence

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
    """
    start = 0
    boundary = math.inf if cursor is None else next_tick(cursor, step_s)
    for index, at in enumerate(times):
        if cursor is None:
            cursor = grid_floor(at, step_s)
            boundary = next_tick(cursor, step_s)
        while boundary <= at:  # one comparison per event while no tick is crossed
            if index > start:
                fold(start, index)
                start = index
            evaluate(boundary)
            cursor = boundary
            boundary = next_tick(cursor, step_s)
        if evaluate_instant is not None and index in instant:
            fold(start, index + 1)
            start = index + 1
            cursor = max(at, cursor)
            boundary = next_tick(cursor, step_s)
            evaluate_instant(cursor)
    if start < len(times):
        fold(start, len(times))
    return cursor


def advance(cursor: float | None, upto: float, step_s: float, evaluate: Evaluate) -> float | None:
    """Evaluate the ticks up to ``upto`` that no event crossed (an idle account)."""
    if cursor is None:
        return None
    while (tick := next_tick(cursor, step_s)) <= upto:
        evaluate(tick)
        cursor = tick
    return cursor
