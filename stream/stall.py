"""Noticing that this worker stood still long enough to lose its partitions.

A worker's process can stand still: SIGSTOP, a paused VM, a container frozen by its
orchestrator, an event loop blocked. Its Kafka heartbeats stop with it, so after the
group's session timeout the group gives its partitions to another worker. When it
runs again, the records it had fetched, the sweep timer that is late and the offsets
it holds are all still there, and until its next heartbeat tells it of the new
generation nothing in the process knows the partitions are gone. The bulk event reader
(its own consumer, outside Faust's group) would fold its stale states forward and write
them over the new owner's (the events the new owner folded meanwhile were lost for
good: found by a review, 17 to 187 events per account), and the sweep would publish
alerts the new owner already had.

:class:`StallWatch` measures how long the event loop stood still. After a stall longer
than ``limit_s`` (half the session timeout: the broker counts from the last heartbeat,
which can be a heartbeat interval before the stall) the worker *suspects* it lost its
partitions for ``confirm_s``, long enough for the next heartbeats to tell it so; the
reader and the sweep write nothing meanwhile. A worker that kept them goes on after
that; one that lost them is in a rebalance by then, which hands the partitions over
as usual.

What this cannot stop: writes that were already in the producer's buffer when the
stall began (at most about ``commit_interval_s`` of them) are sent as the process
wakes. Fencing those takes Kafka transactions.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

__all__ = ["StallWatch"]

log = logging.getLogger(__name__)


class StallWatch:
    """How long the event loop stood still, and whether to distrust ownership now."""

    def __init__(
        self,
        limit_s: float,
        confirm_s: float,
        *,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit_s = limit_s
        self.confirm_s = confirm_s
        self._monotonic = monotonic
        self._last: float | None = None
        """The last look; ``None`` until the first (a worker's start-up, joining its group
        and recovering its tables, is not standing still)."""
        self._suspect_until = float("-inf")
        self.stalls = 0
        """Stalls noticed so far."""

    @classmethod
    def for_session(cls, session_timeout_s: float, heartbeat_interval_s: float) -> StallWatch:
        """The watch for a consumer group with these settings."""
        return cls(session_timeout_s / 2, 3 * heartbeat_interval_s + 1.0)

    def tick(self) -> None:
        """Called often (every second) while the loop runs; also by every reader. The
        first call starts the watch."""
        now = self._monotonic()
        last, self._last = self._last, now
        if last is None:
            return
        stood_still = now - last
        if stood_still > self.limit_s:
            self.stalls += 1
            self._suspect_until = now + self.confirm_s
            log.warning(
                "the worker stood still for %.0f s (longer than %.0f s): its partitions may "
                "be another worker's now; writing nothing for %.0f s while the group says",
                stood_still,
                self.limit_s,
                self.confirm_s,
            )

    def suspect(self) -> bool:
        """Whether ownership is in doubt: a stall was just noticed (now, or up to
        ``confirm_s`` ago)."""
        self.tick()
        return self._monotonic() < self._suspect_until
