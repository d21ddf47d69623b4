"""Account metadata (the compacted accounts topic): validated, plain data.

Pure. An account record that fails validation is dead-lettered like a bad event, with
the same kind of reason (``missing_field:licenses``), so a typo in a CRM export is
visible rather than silently ignored.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import date
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from stream import codec
from stream.events import UNADDRESSABLE_IDS, Rejection

__all__ = ["STATUSES", "Account", "decode_account", "plain_address"]

STATUSES = ("active", "onboarding", "paused", "churned")


@dataclass(frozen=True, slots=True)
class Account:
    """What the engine knows about a customer account besides its usage."""

    account_id: str
    name: str
    licenses: int
    owner_email: str | None = None
    slack_channel: str | None = None
    segment: str | None = None
    arr: float | None = None
    timezone: str = "UTC"
    contract_start: date | None = None
    renewal_date: date | None = None
    status: str = "active"
    calendar: str | None = None
    """The rules' calendar of days off this account follows (optional: without it, the
    calendars that cover its time zone apply)."""

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for name in ("contract_start", "renewal_date"):
            data[name] = data[name].isoformat() if data[name] else None
        if data["calendar"] is None:
            del data["calendar"]  # optional: records without it stay as they were
        return data

    def to_json(self) -> bytes:
        return codec.dumps(self.to_dict())

    @classmethod
    def from_json(cls, data: bytes) -> Account:
        result = decode_account(data)
        if isinstance(result, Rejection):
            raise ValueError(f"stored account record is invalid: {result.detail}")
        return result


def decode_account(raw: bytes) -> Account | Rejection:
    """Decode and validate one account record; never raises on input."""
    try:
        obj = codec.loads(raw)
    except codec.JSONDecodeError as exc:
        return Rejection("invalid_json", str(exc)[:200])
    if not isinstance(obj, dict):
        return Rejection("not_an_object", "an account record must be a JSON object")
    return _validate(obj)


def _validate(obj: Mapping[str, Any]) -> Account | Rejection:
    checks = (
        _account_id(obj),
        _text(obj, "name", required=True),
        _count(obj, "licenses"),
        _address(obj, "owner_email"),
        _text(obj, "slack_channel"),
        _text(obj, "segment"),
        _number(obj, "arr"),
        _zone(obj),
        _day(obj, "contract_start"),
        _day(obj, "renewal_date"),
        _status(obj),
        _text(obj, "calendar"),
    )
    for check in checks:
        if isinstance(check, Rejection):
            return check
    fields = (
        "account_id",
        "name",
        "licenses",
        "owner_email",
        "slack_channel",
        "segment",
        "arr",
        "timezone",
        "contract_start",
        "renewal_date",
        "status",
        "calendar",
    )
    return Account(**dict(zip(fields, checks, strict=True)))


def _text(obj: Mapping[str, Any], name: str, required: bool = False) -> Any:
    value = obj.get(name)
    if value is None:
        return Rejection(f"missing_field:{name}", f"{name} is required") if required else None
    if not isinstance(value, str) or (required and not value):
        return Rejection(f"bad_type:{name}", f"{name} must be a non-empty string")
    return value


def _account_id(obj: Mapping[str, Any]) -> Any:
    value = _text(obj, "account_id", required=True)
    if isinstance(value, str) and value in UNADDRESSABLE_IDS:  # as events (stream/events.py)
        return Rejection("bad_value:account_id", f"account_id cannot be {value!r}")
    return value


_ADDRESS = re.compile(r'[^@\s\x00-\x1f\x7f,;:<>()\[\]\\"]+@[^@\s\x00-\x1f\x7f,;:<>()\[\]\\"]+')
_ADDRESS_MAX = 254  # RFC 5321's limit on a path


def plain_address(text: str) -> bool:
    """One bare e-mail address (``csm@example.com``): no display name, no list, no line
    break. Alerts are mailed to it as is, so a CRM field holding two addresses, or a
    header line, must not get that far."""
    return len(text) <= _ADDRESS_MAX and _ADDRESS.fullmatch(text) is not None


def _address(obj: Mapping[str, Any], name: str) -> Any:
    value = _text(obj, name)
    if isinstance(value, str) and not plain_address(value):
        return Rejection(f"bad_value:{name}", f"{name} must be one plain e-mail address")
    return value


def _count(obj: Mapping[str, Any], name: str) -> Any:
    value = obj.get(name)
    if value is None:
        return Rejection(f"missing_field:{name}", f"{name} is required")
    if not isinstance(value, int) or isinstance(value, bool):
        return Rejection(f"bad_type:{name}", f"{name} must be an integer")
    if value < 0:
        return Rejection(f"bad_value:{name}", f"{name} must be >= 0, got {value}")
    return value


def _number(obj: Mapping[str, Any], name: str) -> Any:
    value = obj.get(name)
    if value is not None and (not isinstance(value, int | float) or isinstance(value, bool)):
        return Rejection(f"bad_type:{name}", f"{name} must be a number")
    return value


def _zone(obj: Mapping[str, Any]) -> Any:
    value = obj.get("timezone") or "UTC"
    if not isinstance(value, str):
        return Rejection("bad_type:timezone", "timezone must be an IANA name like Europe/Berlin")
    try:
        ZoneInfo(value)
    # With tzdata installed a name like 'Europe' is a directory: OSError, not NotFound.
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return Rejection("bad_value:timezone", f"unknown time zone {value[:64]!r}")
    return value


def _day(obj: Mapping[str, Any], name: str) -> Any:
    value = obj.get(name)
    if value is None:
        return None
    try:
        return date.fromisoformat(value) if isinstance(value, str) else _bad_day(name)
    except ValueError:
        return _bad_day(name)


def _bad_day(name: str) -> Rejection:
    return Rejection(f"bad_value:{name}", f"{name} must be a date like 2026-01-31")


def _status(obj: Mapping[str, Any]) -> Any:
    value = obj.get("status") or "active"
    if value not in STATUSES:
        return Rejection("bad_value:status", f"status must be one of {', '.join(STATUSES)}")
    return value
