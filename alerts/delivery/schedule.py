"""When a message may go out: retries with backoff, quiet hours, digests, rate limits.

All of it is arithmetic on times passed in (and a random number passed in for the
jitter), so every rule here is tested without sleeping.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from alerts.delivery.config import Digest, QuietHours, RetryPolicy

__all__ = [
    "GiveUp",
    "RateLimiter",
    "Retry",
    "backoff_s",
    "delivery_id",
    "digest_due",
    "group_key",
    "quiet_until",
    "retry_or_give_up",
    "transition_id",
]


def transition_id(event: Mapping[str, Any]) -> str:
    """One notification's identity: the same alert event read twice gets the same id,
    a new episode or a re-notification a new one. The ledger is keyed by it."""
    status = str(event["status"])
    starts = str(event.get("starts_at"))
    if status == "firing" and event.get("repeat"):
        return f"repeat:{starts}:{event.get('generated_at')}"
    return f"{status}:{starts}"


def delivery_id(event: Mapping[str, Any], receiver: str) -> str:
    """(fingerprint, transition, receiver): one message to one receiver."""
    return f"{event['fingerprint']}|{transition_id(event)}|{receiver}"


def episode_id(event: Mapping[str, Any], receiver: str) -> str:
    """(fingerprint, episode start, receiver): the firing, reminders and resolve of one
    alert episode to one receiver."""
    return f"{event['fingerprint']}|{event.get('starts_at')}|{receiver}"


def backoff_s(policy: RetryPolicy, attempts: int, rand: float) -> float:
    """Delay after the ``attempts``-th failure: exponential, capped, with jitter
    drawn from ``rand`` in [0, 1)."""
    delay = min(policy.max, policy.initial * policy.multiplier ** max(attempts - 1, 0))
    return delay * (1.0 - policy.jitter * rand)


@dataclass(frozen=True)
class Retry:
    at: datetime


@dataclass(frozen=True)
class GiveUp:
    reason: str


def retry_or_give_up(
    policy: RetryPolicy,
    *,
    attempts: int,
    first_attempt: datetime,
    now: datetime,
    retry_after_s: float | None,
    rand: float,
) -> Retry | GiveUp:
    """After a retryable failure: when to try again, or why to stop.

    A peer's Retry-After wins over a shorter backoff (sending earlier only earns
    another 429); the give-up horizon bounds both.
    """
    if attempts >= policy.max_attempts:
        return GiveUp(f"gave up after {attempts} attempts")
    delay = backoff_s(policy, attempts, rand)
    if retry_after_s is not None:
        delay = max(delay, retry_after_s)
    at = now + timedelta(seconds=delay)
    if (at - first_attempt).total_seconds() > policy.give_up_after:
        return GiveUp(f"gave up after {attempts} attempts over {policy.give_up_after:.0f}s")
    return Retry(at)


def quiet_until(quiet: QuietHours, severity: str, now: datetime) -> datetime | None:
    """The end of the quiet period ``now`` falls in, or None when a message may go now.

    A period may run into the next one (a Friday night into an all-day weekend): it
    is followed to its real end, a week at most (config forbids quiet every day).
    """
    if severity in quiet.deliver_severities:
        return None
    end: datetime | None = None
    moment = now
    for _ in range(8):
        step = _quiet_end(quiet, moment)
        if step is None:
            break
        end = moment = step
    return end


def _quiet_end(quiet: QuietHours, now: datetime) -> datetime | None:
    zone = ZoneInfo(quiet.timezone)
    local = now.astimezone(zone)
    end: datetime | None = None
    # A window starting yesterday may still hold (22:00-07:00); so may today's.
    for start_day in (local.date() - timedelta(days=1), local.date()):
        window = _window(quiet, start_day, zone)
        if window is not None and window[0] <= local < window[1]:
            end = window[1] if end is None else max(end, window[1])
    if local.weekday() in quiet.all_day:
        day_end = datetime.combine(local.date() + timedelta(days=1), datetime.min.time(), zone)
        end = day_end if end is None else max(end, day_end)
    return end.astimezone(UTC) if end is not None else None


def _window(quiet: QuietHours, day: Any, zone: ZoneInfo) -> tuple[datetime, datetime] | None:
    if day.weekday() not in quiet.weekdays or quiet.start == quiet.end:
        return None
    start = datetime.combine(day, quiet.start, zone)
    end_day = day if quiet.end > quiet.start else day + timedelta(days=1)
    return start, datetime.combine(end_day, quiet.end, zone)


def digest_due(digest: Digest, now: datetime) -> datetime:
    """The end of the digest interval ``now`` is in: every alert of one interval shares
    it, so they go out together."""
    epoch = now.timestamp()
    boundary = (epoch // digest.interval + 1) * digest.interval
    return datetime.fromtimestamp(boundary, UTC)


def group_key(digest: Digest | None, event: Mapping[str, Any], receiver: str) -> str:
    """Messages with the same key may share one digest."""
    account = event.get("account") or {}
    if digest is None:
        return ""
    if digest.group_by == "owner":
        return f"owner:{account.get('owner_email') or '-'}"
    if digest.group_by == "channel":
        return f"channel:{account.get('slack_channel') or '-'}"
    return f"receiver:{receiver}"


class RateLimiter:
    """A token bucket: ``rate`` messages a second, bursts of ``burst``.

    ``reserve`` answers how long to wait before the next message (0: go now) and takes
    the token; the caller sleeps, so time stays outside this class.
    """

    def __init__(self, rate: float, burst: float = 1.0) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = burst
        self._at: float | None = None

    def reserve(self, now_s: float) -> float:
        if self._at is not None:
            self._tokens = min(self.burst, self._tokens + (now_s - self._at) * self.rate)
        self._at = now_s
        self._tokens -= 1.0
        if self._tokens >= 0:
            return 0.0
        return -self._tokens / self.rate
