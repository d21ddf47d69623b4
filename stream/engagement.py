"""Per-account engagement state, folded from batches of validated events.

Pure core: plain data in, plain data out. The Faust agent reads one state per
account touched by a batch, folds all of that account's events in, and writes it
back once (one changelog record per account per batch, not per event).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from stream import codec
from stream.events import UsageEvent

__all__ = ["DEFAULT_DEDUP_CAPACITY", "EngagementState", "fold_events"]

DEFAULT_DEDUP_CAPACITY = 2_048
"""Event ids remembered per account; a redelivery older than this is counted again."""


@dataclass(slots=True)
class EngagementState:
    """What the engine knows about one account's usage so far."""

    account_id: str
    event_counts: dict[str, int] = field(default_factory=dict)
    recent_event_ids: deque[str] = field(default_factory=deque)

    @property
    def total_events(self) -> int:
        return sum(self.event_counts.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "account_id": self.account_id,
            "event_counts": self.event_counts,
            "recent_event_ids": list(self.recent_event_ids),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EngagementState:
        return cls(
            account_id=data["account_id"],
            event_counts=dict(data["event_counts"]),
            recent_event_ids=deque(data["recent_event_ids"]),
        )

    def to_json(self) -> bytes:
        return codec.dumps(self.to_dict())

    @classmethod
    def from_json(cls, data: bytes) -> EngagementState:
        return cls.from_dict(codec.loads(data))


def fold_events(
    state: EngagementState,
    events: Iterable[UsageEvent],
    dedup_capacity: int = DEFAULT_DEDUP_CAPACITY,
) -> int:
    """Fold one account's events into ``state`` in place; returns how many counted.

    An event id already seen (within the last ``dedup_capacity`` ids) is skipped, so
    redelivery after a crash or a producer retry counts once.
    """
    seen = set(state.recent_event_ids)
    recent = state.recent_event_ids
    counts = state.event_counts
    counted = 0
    for event in events:
        if event.event_id in seen:
            continue
        seen.add(event.event_id)
        recent.append(event.event_id)
        counts[event.type.value] = counts.get(event.type.value, 0) + 1
        counted += 1
    while len(recent) > dedup_capacity:
        recent.popleft()
    return counted
