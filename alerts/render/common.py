"""The facts of one alert event as plain text, shared by every channel's renderer.

Pure: no I/O and no clock reads; "now" comes in :class:`RenderOptions`, so a message
rendered twice from the same event reads the same. Slack, e-mail and on-call render
these same facts their own way, so a fact is worded once. Nothing here raises on odd
input: a null account, a missing time or evidence of an unexpected shape still renders.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import quote

__all__ = [
    "RenderOptions",
    "account_link",
    "account_name",
    "alert_facts",
    "by_urgency",
    "clip",
    "evidence_lines",
    "fired_for",
    "format_duration",
    "format_number",
    "format_value",
    "headline",
    "last_seen_lines",
    "resolved_by_fact",
    "severity",
    "status_fact",
    "status_tag",
    "transition",
]


@dataclass(frozen=True)
class RenderOptions:
    """What a rendering needs besides the events."""

    now: datetime
    """Aware UTC; every "3 days ago" and "in 37 days" is relative to it."""
    triage_url: str | None = None
    """Base URL of the triage web page (``https://ew.example.com``); no links without it."""


def account_link(options: RenderOptions, account_id: str) -> str | None:
    """The account's triage page, or ``None`` when no triage URL is configured."""
    if not options.triage_url:
        return None
    return f"{options.triage_url.rstrip('/')}/triage/account/{quote(account_id, safe='')}"


def format_duration(span: timedelta) -> str:
    """The two largest units of a span: ``3d 4h``, ``5h 12m``, ``42s``."""
    left = max(0, int(span.total_seconds()))
    counts = []
    for suffix, size in (("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)):
        count, left = divmod(left, size)
        counts.append((count, suffix))
    first = next((i for i, (count, _) in enumerate(counts) if count), None)
    if first is None:
        return "0s"
    # "3d", not "3d 0h": a zero second unit says nothing.
    return " ".join(f"{count}{suffix}" for count, suffix in counts[first : first + 2] if count)


def transition(alert: Mapping[str, Any]) -> str:
    """``firing``, ``repeat`` (a re-notification of an alert still firing) or ``resolved``."""
    if alert.get("status") == "resolved":
        return "resolved"
    return "repeat" if alert.get("repeat") else "firing"


def severity(alert: Mapping[str, Any]) -> str:
    return str(alert.get("severity") or "unknown")


_URGENCY = {"critical": 0, "error": 1, "warning": 2, "info": 3}


def by_urgency(alerts: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Firing before resolved, critical first, otherwise in the given order: when a
    digest must cut, what it cuts is the least urgent."""
    return sorted(
        alerts,
        key=lambda a: (transition(a) == "resolved", _URGENCY.get(severity(a).lower(), 4)),
    )


def account_name(alert: Mapping[str, Any]) -> str:
    """The account's name, or its id when the engine knows no account record."""
    name = _mapping(alert.get("account")).get("name")
    if isinstance(name, str) and name.strip():
        return name.strip()
    return str(alert.get("account_id") or "") or "unknown account"


def headline(alert: Mapping[str, Any]) -> str:
    """``Acme Corp: champion-silent``."""
    return f"{account_name(alert)}: {alert.get('rule') or 'alert'}"


def status_tag(alert: Mapping[str, Any]) -> str:
    """``FIRING critical``, ``STILL FIRING critical`` or ``RESOLVED``."""
    kind = transition(alert)
    if kind == "resolved":
        return "RESOLVED"
    return f"{'STILL FIRING' if kind == 'repeat' else 'FIRING'} {severity(alert)}"


def fired_for(alert: Mapping[str, Any]) -> str | None:
    """How long a resolved alert fired (``3d 4h``), when both ends are known."""
    start, end = _parse_time(alert.get("starts_at")), _parse_time(alert.get("ends_at"))
    if start is None or end is None:
        return None
    return format_duration(end - start)


def status_fact(alert: Mapping[str, Any], options: RenderOptions) -> tuple[str, str]:
    """Since when it fires, or for how long it fired; reads as a sentence when the
    label and value are joined by a space."""
    start = _parse_time(alert.get("starts_at"))
    if transition(alert) == "resolved":
        end = _parse_time(alert.get("ends_at"))
        span = fired_for(alert) or "an unknown time"
        if start is None or end is None:
            return "Fired for", span
        return "Fired for", f"{span} ({_format_time(start)} to {_format_time(end)})"
    label = "Still firing since" if transition(alert) == "repeat" else "Firing since"
    if start is None:
        return label, "an unknown time"
    return label, f"{_format_time(start)} ({_ago(start, options.now)})"


def alert_facts(alert: Mapping[str, Any], options: RenderOptions) -> list[tuple[str, str]]:
    """Who is affected and since when: account, ARR, renewal, owner, stakeholder, rule,
    severity, status. Facts the event does not carry are left out."""
    account = _mapping(alert.get("account"))
    facts = [("Account", account_name(alert))]
    arr = account.get("arr")
    if _is_number(arr):
        facts.append(("ARR", f"${arr:,.0f}"))
    renewal = _parse_day(account.get("renewal_date"))
    if renewal is not None:
        when = _relative_day(renewal, options.now.astimezone(UTC).date())
        facts.append(("Renewal", f"{renewal.isoformat()} ({when})"))
    facts += [
        ("Owner", format_value(account.get("owner_email"))),
        ("Stakeholder", format_value(alert.get("stakeholder"))),
        ("Rule", format_value(alert.get("rule"))),
        ("Severity", severity(alert)),
        status_fact(alert, options),
    ]
    closed = resolved_by_fact(alert)
    if closed is not None:
        facts.append(closed)
    return [(label, value) for label, value in facts if value]


def resolved_by_fact(alert: Mapping[str, Any]) -> tuple[str, str] | None:
    """Who closed a resolved alert that did not clear by itself, and why: a person
    (triage), or engagewatch (the account deleted or churned, the rule removed)."""
    if transition(alert) != "resolved":
        return None
    notes = _mapping(alert.get("annotations"))
    by = notes.get("resolved_by")
    if not isinstance(by, str) or not by.strip():
        return None
    reason = notes.get("resolve_reason")
    text = f"{by.strip()}: {reason.strip()}" if isinstance(reason, str) and reason.strip() else by
    return "Resolved by", clip(text, 300)


_EVIDENCE_FIRST = ("metric", "value", "threshold", "baseline", "change", "window")
_WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


def evidence_lines(alert: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The evidence as (label, text) pairs: the measured value against its threshold
    and baseline first, then the rest by name. Rates (``daily_usage_rate``) and relative
    changes show as percentages; ``last_seen`` is left to :func:`last_seen_lines`."""
    evidence = _mapping(alert.get("evidence"))
    rate = str(evidence.get("metric") or "").endswith("_rate")
    relative = "change" in evidence  # the threshold is then a relative change (-0.5)
    rest = sorted(str(key) for key in evidence if key not in _EVIDENCE_FIRST)
    lines: list[tuple[str, str]] = []
    for key in [*(k for k in _EVIDENCE_FIRST if k in evidence), *rest]:
        value = evidence.get(key)
        if key == "last_seen" or value is None:
            continue
        if key == "change" or (key == "threshold" and relative):
            text = format_value(value, percent=True, signed=True)
        elif key == "working_weekdays" and isinstance(value, list):
            text = ", ".join(_weekday(day) for day in value)
        else:
            text = format_value(value, percent=rate and key in ("value", "threshold", "values"))
        if text:
            lines.append((key.replace("_", " ").capitalize(), text))
    return lines


def last_seen_lines(alert: Mapping[str, Any], now: datetime) -> list[tuple[str, str]]:
    """Each stakeholder in ``evidence.last_seen`` with when they were last seen, the
    longest silent first."""
    seen = _mapping(_mapping(alert.get("evidence")).get("last_seen"))
    entries = []
    for user, raw in seen.items():
        moment = _parse_time(raw)
        text = f"{_format_time(moment)} ({_ago(moment, now)})" if moment else format_value(raw)
        entries.append((moment is None, moment or now, str(user), text))
    return [(user, text) for _, _, user, text in sorted(entries)]


def format_value(value: Any, *, percent: bool = False, signed: bool = False) -> str:
    """Any evidence value as short text: ints without ``.0``, floats to 2-3 significant
    digits, mappings as ``key value, ...`` (as rule templates show them)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if _is_number(value):
        number = float(value) * 100 if percent else value
        text = format_number(number)
        if signed and number > 0:
            text = "+" + text
        return text + "%" if percent else text
    if isinstance(value, Mapping):
        pairs = (f"{k} {format_value(v, percent=percent)}" for k, v in value.items())
        return ", ".join(pairs)
    if isinstance(value, list | tuple):
        if value and all(isinstance(item, Mapping) for item in value):
            return "; ".join(
                ", ".join(f"{k}: {format_value(v)}" for k, v in item.items() if v is not None)
                for item in value
            )
        return ", ".join(format_value(item, percent=percent) for item in value)
    return str(value)


def format_number(value: float) -> str:
    """``16``, ``1,234``, ``7.86``, ``12.3``, ``0.222``, ``0.0123``."""
    if not math.isfinite(value):
        return str(value)
    if value == int(value):
        return f"{int(value):,}"
    magnitude = math.floor(math.log10(abs(value)))
    decimals = min(6, max(0, 2 - magnitude))
    text = f"{value:,.{decimals}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def _format_time(moment: datetime) -> str:
    """``2026-11-20 09:00 UTC``."""
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def clip(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters, ending in "…" when cut."""
    if len(text) <= limit:
        return text
    return text[: limit - 1].rstrip() + "…"


def _parse_time(value: Any) -> datetime | None:
    """An RFC 3339 time from an event (naive times taken as UTC), or ``None``."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return None
    if not isinstance(value, datetime):
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _parse_day(value: Any) -> date | None:
    if isinstance(value, str):
        try:
            return date.fromisoformat(value)
        except ValueError:
            moment = _parse_time(value)
            return moment.date() if moment else None
    return None


def _ago(moment: datetime, now: datetime) -> str:
    span = now - moment
    if span < timedelta(0):
        return f"in {format_duration(-span)}"
    if span.days >= 1:
        return f"{span.days} day{'s' if span.days != 1 else ''} ago"
    if span < timedelta(minutes=1):
        return "just now"
    return f"{format_duration(span)} ago"


def _relative_day(day: date, today: date) -> str:
    days = (day - today).days
    named = {0: "today", 1: "tomorrow", -1: "yesterday"}
    if days in named:
        return named[days]
    return f"in {days} days" if days > 0 else f"{-days} days ago"


def _weekday(day: Any) -> str:
    return _WEEKDAYS[day] if isinstance(day, int) and 0 <= day < 7 else str(day)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}
