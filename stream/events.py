"""The usage-event contract (docs/events.md): decode once, validate, or say why not.

Pure: no Kafka, no clock. ``decode_event`` never raises on input; it returns either a
:class:`UsageEvent` or a :class:`Rejection` whose ``reason`` is machine-readable
(``missing_field:user_id``) and whose ``detail`` is for humans.

The ingest hot path uses :func:`decode_batch` instead: a typed decode in C (msgspec)
straight to flat :data:`Record` tuples, for the common valid event only; anything it
does not take goes through ``decode_event``, which explains rejections. A property test
holds the two to the same answers.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any, Literal

import msgspec

from stream import codec

__all__ = [
    "KINDS",
    "MAX_SESSION_S",
    "REASONS",
    "SCHEMA_VERSION",
    "AccountRecords",
    "DecodedBatch",
    "EventLimits",
    "EventType",
    "Record",
    "Rejection",
    "UsageEvent",
    "decode_batch",
    "decode_event",
    "record_of",
    "validate_event",
]

SCHEMA_VERSION = 1
MAX_ID_CHARS = 128
UNADDRESSABLE_IDS = frozenset({".", ".."})
"""Account ids no URL can name: a URL path resolves a segment of ``.`` or ``..`` (even
percent-encoded, in browsers) into another path, so the account's triage page, its
read API and the links in its alerts would all point elsewhere."""

# The fixed part of every rejection reason; field-specific ones append ":<field>".
REASONS = (
    "invalid_json",
    "not_an_object",
    "too_large",
    "missing_field",
    "bad_type",
    "bad_value",
    "unknown_type",
    "future_timestamp",
    "key_mismatch",
    "late",
)

# RFC 3339 date-time; an offset is mandatory (a naive time is ambiguous).
_RFC3339 = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})$"
)


class EventType(StrEnum):
    LOGIN = "login"
    SESSION_END = "session_end"
    FEATURE_USED = "feature_used"
    NPS_RESPONSE = "nps_response"
    VALUE_MILESTONE = "value_milestone"
    LICENSE_CHANGE = "license_change"


_TYPES = {member.value: member for member in EventType}
KINDS: tuple[EventType, ...] = tuple(EventType)
"""Event types by their code in a :data:`Record` (login is 0, license_change 5)."""
_CODES = {kind: code for code, kind in enumerate(KINDS)}
_CODES_BY_NAME = {kind.value: code for code, kind in enumerate(KINDS)}


@dataclass(frozen=True, slots=True)
class UsageEvent:
    """One validated product-usage event; ``occurred_at`` is timezone-aware UTC."""

    event_id: str
    type: EventType
    account_id: str
    user_id: str | None
    role: str
    occurred_at: datetime
    properties: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why an input is not a usage event: a machine reason and a human detail."""

    reason: str
    detail: str


@dataclass(frozen=True, slots=True)
class EventLimits:
    max_bytes: int = 64 * 1024
    future_skew: timedelta = timedelta(minutes=5)


class _InvalidEventError(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(reason)
        self.rejection = Rejection(reason, detail)


def decode_event(
    raw: bytes, now: datetime, limits: EventLimits | None = None
) -> UsageEvent | Rejection:
    """Decode and validate one message value against the contract."""
    limits = limits or EventLimits()
    if len(raw) > limits.max_bytes:
        return Rejection("too_large", f"{len(raw)} bytes, the limit is {limits.max_bytes}")
    try:
        obj = codec.loads(raw)
    except codec.JSONDecodeError as exc:
        return Rejection("invalid_json", str(exc)[:200])
    return validate_event(obj, now, limits)


def validate_event(
    obj: Any, now: datetime, limits: EventLimits | None = None
) -> UsageEvent | Rejection:
    """Validate an already-parsed JSON value (used by decode and by replay)."""
    if not isinstance(obj, dict):
        return Rejection("not_an_object", f"expected a JSON object, got {_json_type(obj)}")
    limits = limits or EventLimits()
    event = _build_fast(obj, now, limits)
    if event is not None:
        return event
    try:
        return _build(obj, now, limits)
    except _InvalidEventError as invalid:
        return invalid.rejection


def _build(obj: dict[str, Any], now: datetime, limits: EventLimits) -> UsageEvent:
    schema = _required(obj, "schema", int)
    if schema != SCHEMA_VERSION:
        raise _InvalidEventError(
            "bad_value:schema", f"schema {schema} is not supported (expected 1)"
        )
    event_type = _event_type(obj)
    event_id = _identifier(obj, "event_id")
    account_id = _identifier(obj, "account_id")
    user_id = _user_id(obj, event_type)
    role = _optional(obj, "role", str, default="user")
    if not role:
        raise _InvalidEventError("bad_value:role", "role must not be empty when given")
    occurred_at = _timestamp(obj, "occurred_at")
    if occurred_at > now + limits.future_skew:
        ahead_s = (occurred_at - now).total_seconds()
        raise _InvalidEventError(
            "future_timestamp",
            f"occurred_at is {ahead_s:.0f} s in the future; "
            f"at most {limits.future_skew.total_seconds():.0f} s is allowed",
        )
    properties = _properties(obj, event_type)
    return UsageEvent(event_id, event_type, account_id, user_id, role, occurred_at, properties)


def _build_fast(obj: dict[str, Any], now: datetime, limits: EventLimits) -> UsageEvent | None:
    """The common, valid event checked in one pass; ``None`` hands over to ``_build``.

    The hot path: per-field helpers cost about half of the engine's own time. This
    accepts exactly what ``_build`` accepts (a property test holds the two together)
    and leaves explaining a rejection to the careful path.
    """
    try:
        kind = _TYPES.get(obj["type"])
        event_id = obj["event_id"]
        account_id = obj["account_id"]
        user_id = obj.get("user_id")
        role = obj.get("role", "user")
        text = obj["occurred_at"]
        props = obj.get("properties")
        if (
            type(obj["schema"]) is not int
            or obj["schema"] != SCHEMA_VERSION
            or kind is None
            or type(event_id) is not str
            or not 0 < len(event_id) <= MAX_ID_CHARS
            or type(account_id) is not str
            or not 0 < len(account_id) <= MAX_ID_CHARS
            or account_id in UNADDRESSABLE_IDS
            or (user_id is None and kind is not EventType.LICENSE_CHANGE)
            or (user_id is not None and (type(user_id) is not str or not user_id))
            or (role is not None and (type(role) is not str or not role))
            or type(text) is not str
            or not _RFC3339.match(text)
        ):
            return None
        if props is None:
            props = {}
        if type(props) is not dict or not _FAST_PROPERTY_CHECKS[kind](props):
            return None
        occurred_at = datetime.fromisoformat(text.upper().replace("Z", "+00:00")).astimezone(UTC)
    except (KeyError, TypeError, ValueError, OverflowError):
        return None
    if occurred_at > now + limits.future_skew:
        return None
    return UsageEvent(event_id, kind, account_id, user_id, role or "user", occurred_at, props)


def _required(obj: Mapping[str, Any], name: str, kind: type, prefix: str = "") -> Any:
    if name not in obj or obj[name] is None:
        raise _InvalidEventError(f"missing_field:{prefix}{name}", f"{prefix}{name} is required")
    return _typed(obj[name], name, kind, prefix)


def _optional(obj: Mapping[str, Any], name: str, kind: type, default: Any) -> Any:
    value = obj.get(name)
    return default if value is None else _typed(value, name, kind, "")


def _typed(value: Any, name: str, kind: type, prefix: str) -> Any:
    # bool is an int subclass in Python, but true is not a count in JSON; a JSON
    # number may arrive as int or float, so "float" accepts both.
    accepted = (int, float) if kind is float else kind
    if not isinstance(value, accepted) or (isinstance(value, bool) and kind is not bool):
        expected = {float: "number", int: "integer", str: "string"}.get(kind, kind.__name__)
        raise _InvalidEventError(
            f"bad_type:{prefix}{name}",
            f"{prefix}{name} must be a {expected}, got {_json_type(value)}",
        )
    return value


def _event_type(obj: Mapping[str, Any]) -> EventType:
    name = _required(obj, "type", str)
    try:
        return _TYPES[name]
    except KeyError:
        known = ", ".join(_TYPES)
        raise _InvalidEventError(
            "unknown_type", f"type {name[:64]!r} is not one of {known}"
        ) from None


def _identifier(obj: Mapping[str, Any], name: str) -> str:
    value: str = _required(obj, name, str)
    if not value or len(value) > MAX_ID_CHARS:
        raise _InvalidEventError(
            f"bad_value:{name}", f"{name} must be 1-{MAX_ID_CHARS} characters, got {len(value)}"
        )
    if name == "account_id" and value in UNADDRESSABLE_IDS:
        raise _InvalidEventError(f"bad_value:{name}", f"{name} cannot be {value!r}")
    return value


def _user_id(obj: Mapping[str, Any], event_type: EventType) -> str | None:
    if event_type is EventType.LICENSE_CHANGE and obj.get("user_id") is None:
        return None
    value: str = _required(obj, "user_id", str)
    if not value:
        raise _InvalidEventError("bad_value:user_id", "user_id must not be empty")
    return value


def _timestamp(obj: Mapping[str, Any], name: str) -> datetime:
    text: str = _required(obj, name, str)
    if not _RFC3339.match(text):
        raise _InvalidEventError(
            f"bad_value:{name}",
            f"{name} must be RFC 3339 with an offset, like 2026-11-23T05:30:00Z; got {text[:64]!r}",
        )
    try:
        parsed = datetime.fromisoformat(text.upper().replace("Z", "+00:00"))
        # Year 1 with a positive offset, or 9999 with a negative one, overflows UTC.
        return parsed.astimezone(UTC)
    except (ValueError, OverflowError) as exc:
        raise _InvalidEventError(f"bad_value:{name}", f"{name} is not a real time: {exc}") from None


def _properties(obj: Mapping[str, Any], event_type: EventType) -> Mapping[str, Any]:
    props = obj.get("properties")
    if props is None:
        props = {}
    elif not isinstance(props, dict):
        raise _InvalidEventError(
            "bad_type:properties", f"properties must be an object, got {_json_type(props)}"
        )
    check = _PROPERTY_CHECKS.get(event_type)
    if check is not None:
        check(props)
    return props


MAX_SESSION_S = 7 * 86_400
"""The longest session an event may report, in seconds (a week: a tab left open over a
weekend still counts). Past it a duration is a placeholder (JavaScript's
``Number.MAX_VALUE``) or a unit mistake; summed into a day it could even overflow to
infinity, which no state encoding keeps."""


def _session_end(props: Mapping[str, Any]) -> None:
    duration = _required(props, "duration_s", float, "properties.")
    if not 0 <= duration <= MAX_SESSION_S:
        raise _InvalidEventError(
            "bad_value:properties.duration_s",
            f"duration_s must be 0-{MAX_SESSION_S} seconds (a week), got {duration}",
        )


def _feature_used(props: Mapping[str, Any]) -> None:
    if not _required(props, "feature", str, "properties."):
        raise _InvalidEventError("bad_value:properties.feature", "feature must not be empty")


def _nps_response(props: Mapping[str, Any]) -> None:
    score = _required(props, "score", int, "properties.")
    if not 0 <= score <= 10:
        raise _InvalidEventError("bad_value:properties.score", f"score must be 0-10, got {score}")
    if props.get("comment") is not None:
        _typed(props["comment"], "comment", str, "properties.")


def _value_milestone(props: Mapping[str, Any]) -> None:
    if not _required(props, "milestone", str, "properties."):
        raise _InvalidEventError("bad_value:properties.milestone", "milestone must not be empty")


def _license_change(props: Mapping[str, Any]) -> None:
    licenses = _required(props, "licenses", int, "properties.")
    if licenses < 0:
        raise _InvalidEventError(
            "bad_value:properties.licenses", f"licenses must be >= 0, got {licenses}"
        )


def _is_count(value: Any) -> bool:
    return type(value) is int and value >= 0


_FAST_PROPERTY_CHECKS: dict[EventType, Any] = {
    EventType.LOGIN: lambda p: True,
    EventType.SESSION_END: lambda p: (
        type(p.get("duration_s")) in (int, float) and 0 <= p["duration_s"] <= MAX_SESSION_S
    ),
    EventType.FEATURE_USED: lambda p: type(p.get("feature")) is str and bool(p["feature"]),
    EventType.NPS_RESPONSE: lambda p: (
        _is_count(p.get("score"))
        and p["score"] <= 10
        and (p.get("comment") is None or type(p["comment"]) is str)
    ),
    EventType.VALUE_MILESTONE: lambda p: type(p.get("milestone")) is str and bool(p["milestone"]),
    EventType.LICENSE_CHANGE: lambda p: _is_count(p.get("licenses")),
}

_PROPERTY_CHECKS = {
    EventType.SESSION_END: _session_end,
    EventType.FEATURE_USED: _feature_used,
    EventType.NPS_RESPONSE: _nps_response,
    EventType.VALUE_MILESTONE: _value_milestone,
    EventType.LICENSE_CHANGE: _license_change,
}


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object" if isinstance(value, dict) else type(value).__name__


# --- the hot path: typed decode to a flat record ----------------------------------------

Record = tuple[str, int, float, str | None, str, Any, Any]
"""One valid event as the fold reads it: ``(event_id, kind code, occurred_at as epoch
seconds, user_id, role, value, comment)``. ``value`` is the one property the fold uses
(a float ``duration_s``, ``feature``, ``score``, ``milestone`` or ``licenses``; ``0`` for
a login) and ``comment`` the NPS comment. A tuple: the cheapest object to build and
unpack once per event."""

_Id = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_ID_CHARS)]
_Text = Annotated[str, msgspec.Meta(min_length=1)]


class _WireProperties(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """Every property the contract knows, each already held to its rule."""

    duration_s: Annotated[float, msgspec.Meta(ge=0, le=MAX_SESSION_S)] | None = None
    feature: _Text | None = None
    score: Annotated[int, msgspec.Meta(ge=0, le=10)] | None = None
    comment: str | None = None
    milestone: _Text | None = None
    # orjson reads integers past 2**64 - 1 as floats, which the contract rejects; msgspec
    # bounds must fit an int64, so the few between go to the careful path.
    licenses: Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)] | None = None


_Kind = Literal[
    "login", "session_end", "feature_used", "nps_response", "value_milestone", "license_change"
]


class _WireEvent(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """The usage event as msgspec checks it in C.

    Unknown fields are refused (the careful path takes those events) because msgspec
    skips an unknown value without the checks orjson makes (number range, UTF-8). With
    every field decoded, every string's UTF-8 is checked, as orjson checks it.
    """

    schema: Literal[1]
    event_id: _Id
    type: _Kind
    account_id: _Id
    occurred_at: str
    user_id: _Text | None = None
    role: _Text | None = None
    properties: _WireProperties | None = None


@dataclass(slots=True)
class AccountRecords:
    """One account's valid events in a batch, in arrival order."""

    key: bytes
    """The account id as the message key it must arrive with."""
    records: list[Record] = field(default_factory=list)
    indexes: list[int] = field(default_factory=list)
    """The batch position of each record's message."""


@dataclass(slots=True)
class DecodedBatch:
    """What :func:`decode_batch` took, and the positions left to the careful path."""

    accounts: dict[str, AccountRecords] = field(default_factory=dict)
    careful: list[int] = field(default_factory=list)


_decode_wire = msgspec.json.Decoder(_WireEvent).decode
_HOURS: dict[str, float] = {}
"""``YYYY-MM-DDTHH`` -> epoch seconds of that UTC hour, for the hours seen."""
_SECONDS: dict[str, float] = {}
"""The rest of a time, like ``:30:00Z`` or ``:30:00+05:30`` -> seconds after its hour
(negative past a positive offset)."""
_CACHE_LIMIT = 100_000


def decode_batch(  # noqa: PLR0915 - one loop on purpose: a call per event costs more
    values: Sequence[bytes | None],
    keys: Sequence[bytes | None] | None,
    max_bytes: int,
    limit_s: float,
) -> DecodedBatch:
    """The common valid events of a batch as records, grouped by account.

    ``keys``: each message's key, which must be its account id (``None``: messages
    without keys, such as a history file's lines, are not checked).

    ``limit_s`` is the newest acceptable ``occurred_at`` (now + future skew) in epoch
    seconds. A message this does not take (``careful``) may still be valid:
    ``decode_event`` decides. A record equals ``record_of(decode_event(...))`` of its
    message (tests/unit/test_events_wire.py), so which path ran never changes a result.
    """
    batch = DecodedBatch()
    accounts = batch.accounts
    careful = batch.careful
    seconds_of = _SECONDS.get
    prefix = "-"  # the last hour seen, "YYYY-MM-DDTHH": a batch's events are close in time
    hour: float | None = None
    for index, raw in enumerate(values):
        if raw is None or len(raw) > max_bytes:
            careful.append(index)
            continue
        try:
            wire = _decode_wire(raw)
        except ValueError:  # msgspec.DecodeError, or UnicodeDecodeError for bad UTF-8
            careful.append(index)
            continue
        # occurred_at is its hour, "2026-11-23T05", and the rest, ":30:00Z": each hour
        # and each rest is checked once by the careful parser (see _checked_hour).
        text = wire.occurred_at
        if not text.startswith(prefix):
            hour = _HOURS.get(text[:13]) or _checked_hour(text[:13])
            prefix = "-" if hour is None else text[:13]
        seconds = seconds_of(text[13:])
        if seconds is None:
            seconds = _checked_seconds(text[13:])
        if hour is None or seconds is None:
            careful.append(index)
            continue
        at = hour + seconds
        code = _CODES_BY_NAME[wire.type]
        user_id = wire.user_id
        props = wire.properties
        comment = None
        if code == 0:  # a login needs no property
            value: Any = 0
        elif props is None:
            value = None
        elif code == 2:
            value = props.feature
        elif code == 1:
            value = props.duration_s
        elif code == 3:
            value = props.score
            comment = props.comment
        elif code == 4:
            value = props.milestone
        else:
            value = props.licenses
        group = accounts.get(wire.account_id)
        key = group.key if group is not None else wire.account_id.encode()
        if (
            value is None
            or (user_id is None and code != 5)
            or at > limit_s
            or (keys is not None and key != keys[index])
            or (group is None and wire.account_id in UNADDRESSABLE_IDS)  # once per account
        ):
            careful.append(index)
            continue
        if group is None:
            group = accounts[wire.account_id] = AccountRecords(key)
        role = wire.role or "user"
        group.records.append((wire.event_id, code, at, user_id, role, value, comment))
        group.indexes.append(index)
    return batch


def record_of(event: UsageEvent) -> Record:
    """The record of an event built by the careful path (or by hand, in tests)."""
    code = _CODES[event.type]
    props = event.properties
    value: Any = 0
    comment = None
    if code == 1:
        value = float(props["duration_s"])
    elif code == 2:
        value = str(props["feature"])
    elif code == 3:
        value = int(props["score"])
        comment = props.get("comment")
    elif code == 4:
        value = props["milestone"]
    elif code == 5:
        value = int(props["licenses"])
    at = event.occurred_at.timestamp()
    return (event.event_id, code, at, event.user_id, event.role, value, comment)


def _checked_hour(hour: str) -> float | None:
    """Epoch seconds of ``hour`` (``YYYY-MM-DDTHH``) if the careful parser takes it.

    Why a time can be checked in two parts: the careful regex and ``fromisoformat``
    read the first 13 characters (date and hour) apart from the rest (minutes,
    seconds, fraction, offset), so a time is valid when both parts are, and its
    instant is the hour's plus the rest's. Years 1 and 9999 are left to the careful
    path, where an offset can push the instant off the calendar.
    """
    at = None if hour.startswith(("0001", "9999")) else _careful(f"{hour}:00:00Z")
    return _remember(_HOURS, hour, at)


def _checked_seconds(rest: str) -> float | None:
    """Seconds of ``rest`` after its hour if the careful parser takes it; only whole
    seconds, whose sums with an hour are exact (a fraction could round differently)."""
    seconds = _careful(f"1970-01-01T00{rest}")
    whole = seconds is not None and seconds.is_integer()
    return _remember(_SECONDS, rest, seconds if whole else None)


def _careful(text: str) -> float | None:
    """Epoch seconds of ``text`` by the careful parser, or ``None`` if it refuses it."""
    if not text.isascii():  # the careful regex's \d takes any Unicode digit
        return None
    try:
        return _timestamp({"t": text}, "t").timestamp()
    except _InvalidEventError:
        return None


def _remember(cache: dict[str, float], key: str, at: float | None) -> float | None:
    if at is not None:
        if len(cache) >= _CACHE_LIMIT:
            cache.clear()
        cache[key] = at
    return at
