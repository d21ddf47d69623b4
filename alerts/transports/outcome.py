"""What one delivery attempt came to, so the notifier can decide: done, retry, or give up.

Transports never retry; they classify. The rules follow the receivers' contracts: 2xx is
delivered; 429, 408, 425 and 5xx are worth retrying (honouring ``Retry-After``); any other
4xx will fail the same way again. Pure: no I/O, time as an argument.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from enum import StrEnum

__all__ = [
    "Attempt",
    "Outcome",
    "Refusal",
    "classify_http",
    "excerpt",
    "parse_retry_after",
    "redact",
]

DETAIL_MAX = 200
"""Longest peer text kept in a detail: enough for an error code and a sentence."""

REDACTED = "<redacted>"

_RETRYABLE_4XX = frozenset({408, 425, 429})
_WHITESPACE = re.compile(r"\s+")


class Outcome(StrEnum):
    DELIVERED = "delivered"
    RETRY = "retry"
    PERMANENT = "permanent"


@dataclass(frozen=True)
class Attempt:
    """The result of one attempt; ``detail`` is for people and never holds a secret."""

    outcome: Outcome
    detail: str
    status: int | None = None
    """HTTP status or SMTP reply code, when the peer answered."""
    retry_after_s: float | None = None
    """The peer's ``Retry-After``, in seconds from now, when it gave one."""
    refused: tuple[Refusal, ...] = ()
    """Delivered, but not to these recipients (SMTP refuses them one by one)."""


@dataclass(frozen=True)
class Refusal:
    """One recipient the peer refused while it took the message for the others."""

    recipient: str
    outcome: Outcome
    """``RETRY`` for a temporary refusal (4xx), ``PERMANENT`` for 5xx."""
    detail: str


def classify_http(
    status: int, headers: Mapping[str, str], body: str, now: datetime | None = None
) -> Attempt:
    """Classify one HTTP answer by status alone; receivers with richer contracts refine it."""
    detail = f"HTTP {status}"
    if text := excerpt(body):
        detail = f"{detail}: {text}"
    if 200 <= status < 300:
        return Attempt(Outcome.DELIVERED, detail, status)
    if status in _RETRYABLE_4XX or 500 <= status < 600:
        retry_after = parse_retry_after(_header(headers, "Retry-After"), now)
        return Attempt(Outcome.RETRY, detail, status, retry_after)
    # Other 4xx, and 1xx/3xx (transports do not follow redirects: a redirect could carry
    # the payload somewhere nobody configured).
    return Attempt(Outcome.PERMANENT, detail, status)


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """``Retry-After`` as seconds from ``now``: delta-seconds or an HTTP-date (RFC 9110)."""
    if value is None or not (value := value.strip()):
        return None
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # "-0000" dates parse naive; HTTP-dates are always GMT
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def excerpt(text: str, limit: int = DETAIL_MAX) -> str:
    """A peer's text on one line and short, so a detail stays readable in a log line."""
    flat = _WHITESPACE.sub(" ", text).strip()
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def redact(text: str, secrets: Iterable[str]) -> str:
    """Remove every secret from ``text``; peers sometimes echo what they were sent."""
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    return text


def _header(headers: Mapping[str, str], name: str) -> str | None:
    """Case-insensitive lookup that also works for a plain ``dict``."""
    if (value := headers.get(name)) is not None:
        return value
    lowered = name.lower()
    return next((v for k, v in headers.items() if k.lower() == lowered), None)
