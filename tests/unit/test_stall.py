"""A worker that stood still distrusts its partitions for a while (stream/stall.py)."""

from __future__ import annotations

from stream.stall import StallWatch


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_loop_ticking_along_is_never_suspect() -> None:
    clock = Clock()
    watch = StallWatch(30.0, 10.0, monotonic=clock)
    for _ in range(200):
        clock.now += 1.0
        watch.tick()
        assert not watch.suspect()
    assert watch.stalls == 0


def test_start_up_before_the_first_look_is_not_a_stall() -> None:
    """Found by a review: the watch was made with the app, and the first tick came after
    the worker had joined its group (a minute, after a crash) and recovered its tables:
    every restarted worker "stood still" and held its first 10 s."""
    clock = Clock()
    watch = StallWatch(30.0, 10.0, monotonic=clock)
    clock.now += 60.0
    assert not watch.suspect()
    assert watch.stalls == 0


def test_after_a_stall_longer_than_the_limit_it_is_suspect_until_confirmed() -> None:
    clock = Clock()
    watch = StallWatch(30.0, 10.0, monotonic=clock)
    watch.tick()
    clock.now += 75.0  # SIGSTOP for 75 s: not even the ticker ran
    assert watch.suspect()  # the first look after waking says so
    assert watch.stalls == 1
    clock.now += 9.0
    watch.tick()
    assert watch.suspect()
    clock.now += 1.5
    watch.tick()
    assert not watch.suspect()
    assert watch.stalls == 1


def test_a_stall_shorter_than_the_limit_is_not_one() -> None:
    clock = Clock()
    watch = StallWatch(30.0, 10.0, monotonic=clock)
    watch.tick()
    clock.now += 29.0  # a long batch, a slow GC: the group session survives that
    assert not watch.suspect()


def test_the_limit_is_half_the_session_and_the_doubt_three_heartbeats() -> None:
    watch = StallWatch.for_session(60.0, 3.0)  # Faust's defaults
    assert (watch.limit_s, watch.confirm_s) == (30.0, 10.0)
