"""The JSON codec: what it writes, and what the bytes it returns hold on to."""

from __future__ import annotations

import tracemalloc
from datetime import UTC, datetime

from stream import codec


def test_round_trip_with_times_and_non_string_keys() -> None:
    value = {"at": datetime(2026, 11, 23, 5, 30, tzinfo=UTC), 7: [1, "x"]}
    assert codec.dumps(value) == b'{"at":"2026-11-23T05:30:00Z","7":[1,"x"]}'
    assert codec.loads(codec.dumps({"a": [1, 2]})) == {"a": [1, 2]}


def test_short_json_holds_no_more_memory_than_its_size() -> None:
    """Found by a review: orjson's bytes hold the 4 KB buffer it wrote into (4,097 B
    for 114 B of JSON), and the engine keeps many (table values, state fragments,
    alert books): a worker of 10,000 accounts held twice the memory it needed."""
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        kept = [codec.dumps({"n": n, "text": "x" * 100}) for n in range(1_000)]
        per_value = (tracemalloc.get_traced_memory()[0] - before) / len(kept)
    finally:
        tracemalloc.stop()
    assert all(len(value) < 130 for value in kept)
    assert per_value < 400, per_value  # a bytes object of ~130 B and its list slot
