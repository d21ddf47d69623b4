"""The one clock abstraction: the core takes "now" as an argument, adapters ask a Clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Protocol

__all__ = ["Clock", "ManualClock", "SystemClock"]


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware UTC."""
        ...


class SystemClock:
    """Wall-clock time, for live workers."""

    def now(self) -> datetime:
        return datetime.now(UTC)


class ManualClock:
    """A clock tests (and replay) move by hand."""

    def __init__(self, start: datetime) -> None:
        self._now = start

    def now(self) -> datetime:
        return self._now

    def advance(self, by: timedelta) -> None:
        self._now += by

    def set(self, when: datetime) -> None:
        self._now = when
