"""The usage-event contract: every type decodes, every violation has its exact reason."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream.events import (
    MAX_SESSION_S,
    REASONS,
    UNADDRESSABLE_IDS,
    EventLimits,
    EventType,
    Rejection,
    UsageEvent,
    decode_event,
    validate_event,
)

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
OCCURRED_AT = "2026-11-23T05:30:00Z"
OCCURRED_AT_UTC = datetime(2026, 11, 23, 5, 30, tzinfo=UTC)

# The minimal valid properties of each type.
PROPERTIES: dict[str, dict[str, Any]] = {
    "login": {},
    "session_end": {"duration_s": 310},
    "feature_used": {"feature": "export_csv"},
    "nps_response": {"score": 9, "comment": "great"},
    "value_milestone": {"milestone": "first_dashboard"},
    "license_change": {"licenses": 250},
}
PROPERTY_FIELD = {
    "session_end": "duration_s",
    "feature_used": "feature",
    "nps_response": "score",
    "value_milestone": "milestone",
    "license_change": "licenses",
}
TYPES = list(PROPERTIES)
USER_TYPES = [name for name in TYPES if name != "license_change"]

MISSING = object()
"""Marks a field to delete rather than to set."""


def valid_event(event_type: str = "login", **fields: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "schema": 1,
        "event_id": "e-7f3c",
        "type": event_type,
        "account_id": "acme",
        "user_id": "u-123",
        "occurred_at": OCCURRED_AT,
        "properties": dict(PROPERTIES[event_type]),
    }
    if event_type == "license_change":
        del event["user_id"]
    event.update(fields)
    return event


def changed(event: dict[str, Any], path: str, value: object) -> dict[str, Any]:
    """A copy of ``event`` with ``path`` (``a`` or ``properties.b``) set or deleted."""
    copy = json.loads(json.dumps(event))
    *parents, name = path.split(".")
    target = copy
    for parent in parents:
        target = target[parent]
    if value is MISSING:
        target.pop(name, None)
    else:
        target[name] = value
    result: dict[str, Any] = copy
    return result


def encode(obj: object) -> bytes:
    return json.dumps(obj).encode()


def decode(obj: object, limits: EventLimits | None = None) -> UsageEvent | Rejection:
    return decode_event(encode(obj), NOW, limits)


def accepted(result: UsageEvent | Rejection) -> UsageEvent:
    assert isinstance(result, UsageEvent), result
    return result


def rejected(result: UsageEvent | Rejection) -> Rejection:
    assert isinstance(result, Rejection), result
    return result


def rfc3339(when: datetime) -> str:
    return when.isoformat().replace("+00:00", "Z")


# --- valid events ---------------------------------------------------------------------


@pytest.mark.parametrize("event_type", TYPES)
def test_valid_event_of_every_type_decodes(event_type: str) -> None:
    event = accepted(decode(valid_event(event_type)))

    assert event.event_id == "e-7f3c"
    assert event.type is EventType(event_type)
    assert event.account_id == "acme"
    assert event.user_id == (None if event_type == "license_change" else "u-123")
    assert event.role == "user"
    assert event.occurred_at == OCCURRED_AT_UTC
    assert event.occurred_at.utcoffset() == timedelta(0)
    assert dict(event.properties) == PROPERTIES[event_type]


@pytest.mark.parametrize("event_type", TYPES)
def test_validate_event_agrees_with_decode_event(event_type: str) -> None:
    obj = valid_event(event_type, role="champion")
    assert validate_event(obj, NOW) == decode(obj)


def test_given_role_is_kept() -> None:
    assert accepted(decode(valid_event(role="champion"))).role == "champion"


def test_null_role_means_user() -> None:
    assert accepted(decode(valid_event(role=None))).role == "user"


def test_license_change_keeps_a_user_id_when_given() -> None:
    event = accepted(decode(valid_event("license_change", user_id="u-admin")))
    assert event.user_id == "u-admin"


def test_login_without_properties_has_empty_properties() -> None:
    event = accepted(decode(changed(valid_event("login"), "properties", MISSING)))
    assert dict(event.properties) == {}


@pytest.mark.parametrize(
    ("event_type", "path", "value"),
    [
        pytest.param("login", "event_id", "e" * 128, id="event_id-128-chars"),
        pytest.param("login", "account_id", "a" * 128, id="account_id-128-chars"),
        pytest.param("session_end", "properties.duration_s", 0, id="duration_s-0"),
        pytest.param("session_end", "properties.duration_s", 12.5, id="duration_s-float"),
        pytest.param("session_end", "properties.duration_s", 604_800, id="duration_s-a-week"),
        pytest.param("nps_response", "properties.score", 0, id="score-0"),
        pytest.param("nps_response", "properties.score", 10, id="score-10"),
        pytest.param("nps_response", "properties.comment", MISSING, id="no-comment"),
        pytest.param("nps_response", "properties.comment", None, id="null-comment"),
        pytest.param("license_change", "properties.licenses", 0, id="licenses-0"),
        pytest.param("login", "occurred_at", "2026-11-23T05:30:00.123456Z", id="fraction"),
        pytest.param("login", "occurred_at", "2026-11-23t05:30:00z", id="lowercase-t-z"),
    ],
)
def test_boundary_values_are_accepted(event_type: str, path: str, value: object) -> None:
    accepted(decode(changed(valid_event(event_type), path, value)))


@pytest.mark.parametrize(
    ("occurred_at", "expected"),
    [
        ("2026-11-23T05:30:00+05:30", datetime(2026, 11, 23, 0, 0, tzinfo=UTC)),
        ("2026-11-23T03:30:00-08:00", datetime(2026, 11, 23, 11, 30, tzinfo=UTC)),
        ("2026-11-23T05:30:00+00:00", datetime(2026, 11, 23, 5, 30, tzinfo=UTC)),
    ],
)
def test_offsets_are_normalised_to_utc(occurred_at: str, expected: datetime) -> None:
    event = accepted(decode(valid_event(occurred_at=occurred_at)))
    assert event.occurred_at == expected
    assert event.occurred_at.tzinfo is UTC


# --- rejections -------------------------------------------------------------------------

# (event type, field path, value or MISSING, exact reason)
FIELD_REJECTIONS: list[Any] = [
    # missing_field
    pytest.param("login", "schema", MISSING, "missing_field:schema", id="no-schema"),
    pytest.param("login", "schema", None, "missing_field:schema", id="null-schema"),
    pytest.param("login", "event_id", MISSING, "missing_field:event_id", id="no-event_id"),
    pytest.param("login", "type", MISSING, "missing_field:type", id="no-type"),
    pytest.param("login", "account_id", MISSING, "missing_field:account_id", id="no-account"),
    *[
        pytest.param(name, "user_id", MISSING, "missing_field:user_id", id=f"no-user_id-{name}")
        for name in USER_TYPES
    ],
    pytest.param("login", "user_id", None, "missing_field:user_id", id="null-user_id"),
    pytest.param("login", "occurred_at", MISSING, "missing_field:occurred_at", id="no-time"),
    *[
        pytest.param(
            name,
            f"properties.{prop}",
            MISSING,
            f"missing_field:properties.{prop}",
            id=f"no-{prop}",
        )
        for name, prop in PROPERTY_FIELD.items()
    ],
    pytest.param(
        "session_end",
        "properties",
        MISSING,
        "missing_field:properties.duration_s",
        id="no-properties",
    ),
    # bad_type
    pytest.param("login", "event_id", 42, "bad_type:event_id", id="event_id-number"),
    pytest.param("login", "schema", "1", "bad_type:schema", id="schema-string"),
    pytest.param("login", "schema", True, "bad_type:schema", id="schema-true"),
    pytest.param("login", "schema", 1.5, "bad_type:schema", id="schema-float"),
    pytest.param("login", "type", 3, "bad_type:type", id="type-number"),
    pytest.param("login", "account_id", ["acme"], "bad_type:account_id", id="account-array"),
    pytest.param("login", "user_id", 123, "bad_type:user_id", id="user_id-number"),
    pytest.param("login", "role", 7, "bad_type:role", id="role-number"),
    pytest.param("login", "occurred_at", 1_795_000_000, "bad_type:occurred_at", id="epoch"),
    pytest.param("login", "properties", [], "bad_type:properties", id="properties-array"),
    pytest.param("login", "properties", "x", "bad_type:properties", id="properties-string"),
    pytest.param(
        "nps_response", "properties.score", 5.5, "bad_type:properties.score", id="score-5.5"
    ),
    pytest.param(
        "nps_response", "properties.score", "5", "bad_type:properties.score", id="score-str"
    ),
    pytest.param(
        "nps_response", "properties.score", True, "bad_type:properties.score", id="score-bool"
    ),
    pytest.param(
        "nps_response",
        "properties.comment",
        5,
        "bad_type:properties.comment",
        id="comment-number",
    ),
    pytest.param(
        "session_end",
        "properties.duration_s",
        "310",
        "bad_type:properties.duration_s",
        id="duration-string",
    ),
    pytest.param(
        "session_end",
        "properties.duration_s",
        False,
        "bad_type:properties.duration_s",
        id="duration-bool",
    ),
    pytest.param(
        "license_change",
        "properties.licenses",
        True,
        "bad_type:properties.licenses",
        id="licenses-true",
    ),
    pytest.param(
        "license_change",
        "properties.licenses",
        2.5,
        "bad_type:properties.licenses",
        id="licenses-float",
    ),
    pytest.param(
        "feature_used", "properties.feature", 1, "bad_type:properties.feature", id="feature-num"
    ),
    pytest.param(
        "value_milestone",
        "properties.milestone",
        False,
        "bad_type:properties.milestone",
        id="milestone-bool",
    ),
    # bad_value
    pytest.param("login", "schema", 2, "bad_value:schema", id="schema-2"),
    pytest.param("login", "schema", 0, "bad_value:schema", id="schema-0"),
    pytest.param("login", "event_id", "", "bad_value:event_id", id="event_id-empty"),
    pytest.param("login", "event_id", "e" * 129, "bad_value:event_id", id="event_id-129"),
    pytest.param("login", "account_id", "a" * 129, "bad_value:account_id", id="account-129"),
    pytest.param("login", "account_id", "", "bad_value:account_id", id="account-empty"),
    # No URL can name them: a path resolves "." and ".." (even percent-encoded) away.
    pytest.param("login", "account_id", ".", "bad_value:account_id", id="account-dot"),
    pytest.param("login", "account_id", "..", "bad_value:account_id", id="account-dot-dot"),
    pytest.param("login", "user_id", "", "bad_value:user_id", id="user_id-empty"),
    pytest.param("license_change", "user_id", "", "bad_value:user_id", id="license-user_id-empty"),
    pytest.param("login", "role", "", "bad_value:role", id="role-empty"),
    pytest.param(
        "login", "occurred_at", "2026-11-23T05:30:00", "bad_value:occurred_at", id="no-offset"
    ),
    pytest.param("login", "occurred_at", "2026-11-23", "bad_value:occurred_at", id="date-only"),
    pytest.param("login", "occurred_at", "yesterday", "bad_value:occurred_at", id="nonsense"),
    pytest.param("login", "occurred_at", "", "bad_value:occurred_at", id="empty-time"),
    pytest.param(
        "login", "occurred_at", "2026-13-01T00:00:00Z", "bad_value:occurred_at", id="month-13"
    ),
    pytest.param(
        "login", "occurred_at", "2026-02-30T00:00:00Z", "bad_value:occurred_at", id="feb-30"
    ),
    pytest.param(
        "login",
        "occurred_at",
        "2026-11-23T05:30:00+24:00",
        "bad_value:occurred_at",
        id="offset-24h",
    ),
    pytest.param(
        "nps_response", "properties.score", 11, "bad_value:properties.score", id="score-11"
    ),
    pytest.param(
        "nps_response", "properties.score", -1, "bad_value:properties.score", id="score-neg"
    ),
    pytest.param(
        "session_end",
        "properties.duration_s",
        -1,
        "bad_value:properties.duration_s",
        id="duration-neg",
    ),
    pytest.param(
        "session_end",
        "properties.duration_s",
        -0.5,
        "bad_value:properties.duration_s",
        id="duration-neg-float",
    ),
    pytest.param(  # a day's sum of such placeholders overflowed to infinity
        "session_end",
        "properties.duration_s",
        1.7976931348623157e308,
        "bad_value:properties.duration_s",
        id="duration-number-max-value",
    ),
    pytest.param(
        "session_end",
        "properties.duration_s",
        604_800.5,
        "bad_value:properties.duration_s",
        id="duration-over-a-week",
    ),
    pytest.param(
        "license_change",
        "properties.licenses",
        -1,
        "bad_value:properties.licenses",
        id="licenses-neg",
    ),
    pytest.param(
        "feature_used", "properties.feature", "", "bad_value:properties.feature", id="feature-empty"
    ),
    pytest.param(
        "value_milestone",
        "properties.milestone",
        "",
        "bad_value:properties.milestone",
        id="milestone-empty",
    ),
    # unknown_type
    pytest.param("login", "type", "logout", "unknown_type", id="type-logout"),
    pytest.param("login", "type", "LOGIN", "unknown_type", id="type-uppercase"),
    pytest.param("login", "type", "", "unknown_type", id="type-empty"),
]


@pytest.mark.parametrize(("event_type", "path", "value", "reason"), FIELD_REJECTIONS)
def test_field_rejection_reason(event_type: str, path: str, value: object, reason: str) -> None:
    result = rejected(decode(changed(valid_event(event_type), path, value)))
    assert result.reason == reason


@pytest.mark.parametrize(("event_type", "path", "value", "reason"), FIELD_REJECTIONS)
def test_validate_event_gives_the_same_reason(
    event_type: str, path: str, value: object, reason: str
) -> None:
    result = rejected(validate_event(changed(valid_event(event_type), path, value), NOW))
    assert result.reason == reason


VALID_BYTES = encode(valid_event("session_end"))

RAW_REJECTIONS: list[Any] = [
    pytest.param(b"not json at all", "invalid_json", id="garbage"),
    pytest.param(b"", "invalid_json", id="empty"),
    pytest.param(VALID_BYTES[: len(VALID_BYTES) // 2], "invalid_json", id="truncated"),
    pytest.param(b'{"schema": 1, "event_id"', "invalid_json", id="truncated-key"),
    pytest.param(b"\xff\xfe\xfd", "invalid_json", id="invalid-utf8"),
    pytest.param(
        VALID_BYTES.replace(b'"acme"', b'"ac\xe9me"'), "invalid_json", id="latin1-in-string"
    ),
    pytest.param(b"{'schema': 1}", "invalid_json", id="single-quotes"),
    pytest.param(b"[]", "not_an_object", id="array"),
    pytest.param(b"[" + VALID_BYTES + b"]", "not_an_object", id="array-of-event"),
    pytest.param(b"42", "not_an_object", id="number"),
    pytest.param(b'"login"', "not_an_object", id="string"),
    pytest.param(b"null", "not_an_object", id="null"),
    pytest.param(b"true", "not_an_object", id="boolean"),
]


@pytest.mark.parametrize(("raw", "reason"), RAW_REJECTIONS)
def test_raw_rejection_reason(raw: bytes, reason: str) -> None:
    assert rejected(decode_event(raw, NOW)).reason == reason


@pytest.mark.parametrize(
    ("obj", "json_type"),
    [([], "array"), (42, "number"), ("login", "string"), (None, "null"), (True, "boolean")],
)
def test_not_an_object_detail_names_the_json_type(obj: object, json_type: str) -> None:
    result = rejected(validate_event(obj, NOW))
    assert result.reason == "not_an_object"
    assert json_type in result.detail


def test_too_large_over_the_default_limit() -> None:
    raw = b" " * (EventLimits().max_bytes + 1)
    result = rejected(decode_event(raw, NOW))
    assert result.reason == "too_large"
    assert str(EventLimits().max_bytes) in result.detail


def test_too_large_is_checked_before_parsing() -> None:
    assert rejected(decode_event(b"\xff" * 101, NOW, EventLimits(max_bytes=100))).reason == (
        "too_large"
    )


def test_event_of_exactly_max_bytes_is_accepted_one_more_is_too_large() -> None:
    raw = VALID_BYTES
    accepted(decode_event(raw, NOW, EventLimits(max_bytes=len(raw))))
    result = rejected(decode_event(raw, NOW, EventLimits(max_bytes=len(raw) - 1)))
    assert result.reason == "too_large"


# --- future timestamps ------------------------------------------------------------------

SKEW = EventLimits().future_skew


@pytest.mark.parametrize(
    ("ahead", "limits"),
    [
        pytest.param(SKEW + timedelta(seconds=1), None, id="default-skew+1s"),
        pytest.param(timedelta(days=365), None, id="next-year"),
        pytest.param(timedelta(seconds=1), EventLimits(future_skew=timedelta(0)), id="no-skew"),
        pytest.param(
            timedelta(minutes=61),
            EventLimits(future_skew=timedelta(hours=1)),
            id="1h-skew+1min",
        ),
    ],
)
def test_future_timestamp_beyond_the_skew_is_rejected(
    ahead: timedelta, limits: EventLimits | None
) -> None:
    result = rejected(decode(valid_event(occurred_at=rfc3339(NOW + ahead)), limits))
    assert result.reason == "future_timestamp"


@pytest.mark.parametrize(
    ("ahead", "limits"),
    [
        pytest.param(SKEW - timedelta(seconds=1), None, id="default-skew-1s"),
        pytest.param(SKEW, None, id="exactly-default-skew"),
        pytest.param(timedelta(0), EventLimits(future_skew=timedelta(0)), id="now-no-skew"),
        pytest.param(
            timedelta(minutes=59),
            EventLimits(future_skew=timedelta(hours=1)),
            id="1h-skew-1min",
        ),
    ],
)
def test_future_timestamp_just_inside_the_skew_is_accepted(
    ahead: timedelta, limits: EventLimits | None
) -> None:
    event = accepted(decode(valid_event(occurred_at=rfc3339(NOW + ahead)), limits))
    assert event.occurred_at == NOW + ahead


def test_future_skew_applies_after_offset_normalisation() -> None:
    # 17:10 at +05:00 is 12:10 UTC: ten minutes ahead of NOW, beyond the 5 min skew.
    ahead = datetime(2026, 11, 23, 17, 10, tzinfo=timezone(timedelta(hours=5)))
    result = rejected(decode(valid_event(occurred_at=ahead.isoformat())))
    assert result.reason == "future_timestamp"


@pytest.mark.parametrize("occurred_at", ["9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00+01:00"])
def test_time_outside_datetime_range_is_rejected_not_raised(occurred_at: str) -> None:
    result = rejected(decode(valid_event(occurred_at=occurred_at)))
    assert result.reason in ("bad_value:occurred_at", "future_timestamp")


# --- reason and detail shape ------------------------------------------------------------


def _all_rejections() -> list[Rejection]:
    results: list[Rejection] = []
    for param in FIELD_REJECTIONS:
        event_type, path, value, _ = param.values
        results.append(rejected(decode(changed(valid_event(event_type), path, value))))
    for param in RAW_REJECTIONS:
        raw, _ = param.values
        results.append(rejected(decode_event(raw, NOW)))
    results.append(rejected(decode_event(b"x" * 11, NOW, EventLimits(max_bytes=10))))
    results.append(rejected(decode(valid_event(occurred_at=rfc3339(NOW + timedelta(hours=1))))))
    return results


def test_every_rejection_has_a_known_reason_and_a_human_detail() -> None:
    rejections = _all_rejections()
    seen = set()
    for rejection in rejections:
        base, _, field = rejection.reason.partition(":")
        assert base in REASONS, rejection
        assert rejection.reason == base or field, rejection
        assert rejection.detail.strip(), rejection
        assert rejection.detail != rejection.reason, rejection
        seen.add(base)
    # key_mismatch and late are decided outside decode_event (ingest, windows).
    assert seen == set(REASONS) - {"key_mismatch", "late"}


def test_detail_says_what_was_expected() -> None:
    result = rejected(decode(changed(valid_event("nps_response"), "properties.score", 11)))
    assert "11" in result.detail
    assert "0-10" in result.detail


# --- properties -------------------------------------------------------------------------

JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=30,
)


def _check_result(result: object) -> None:
    assert isinstance(result, UsageEvent | Rejection)
    if isinstance(result, Rejection):
        assert result.reason.partition(":")[0] in REASONS
        assert result.detail


@given(st.binary(max_size=2_000))
def test_decode_never_raises_on_arbitrary_bytes(raw: bytes) -> None:
    _check_result(decode_event(raw, NOW))


@given(JSON_VALUES)
def test_decode_never_raises_on_arbitrary_json(value: object) -> None:
    _check_result(decode_event(json.dumps(value).encode(), NOW))


@given(
    st.sampled_from(TYPES),
    st.sampled_from(
        [
            "schema",
            "event_id",
            "type",
            "account_id",
            "user_id",
            "role",
            "occurred_at",
            "properties",
        ]
    ),
    JSON_VALUES,
)
def test_decode_never_raises_when_one_field_is_arbitrary(
    event_type: str, name: str, value: object
) -> None:
    _check_result(decode(valid_event(event_type, **{name: value})))


_ID_TEXT = st.text(alphabet=st.characters(codec="utf-8"), min_size=1, max_size=128)


@st.composite
def valid_events(draw: st.DrawFn) -> tuple[dict[str, Any], datetime]:
    """A random contract-valid event and the UTC time it must decode to."""
    event_type = draw(st.sampled_from(TYPES))
    local = draw(st.datetimes(min_value=datetime(2000, 1, 2), max_value=datetime(2026, 11, 21)))
    offset_min = draw(st.integers(min_value=-(23 * 60 + 59), max_value=23 * 60 + 59))
    zone = timezone(timedelta(minutes=offset_min))
    occurred = local.replace(tzinfo=zone)
    choices: dict[str, dict[str, Any]] = {
        "login": {},
        "session_end": {
            "duration_s": draw(st.floats(min_value=0, max_value=MAX_SESSION_S) | st.just(0))
        },
        "feature_used": {"feature": draw(_ID_TEXT)},
        "nps_response": {"score": draw(st.integers(min_value=0, max_value=10))},
        "value_milestone": {"milestone": draw(_ID_TEXT)},
        "license_change": {"licenses": draw(st.integers(min_value=0, max_value=10**9))},
    }
    props = choices[event_type]
    event = valid_event(
        event_type,
        event_id=draw(_ID_TEXT),
        account_id=draw(_ID_TEXT.filter(lambda i: i not in UNADDRESSABLE_IDS)),
        occurred_at=occurred.isoformat().replace("+00:00", "Z"),
        properties=props,
    )
    if event_type != "license_change":
        event["user_id"] = draw(_ID_TEXT)
    return event, occurred.astimezone(UTC)


@settings(max_examples=200)
@given(valid_events())
def test_generated_valid_events_round_trip(case: tuple[dict[str, Any], datetime]) -> None:
    obj, occurred_utc = case
    event = accepted(decode(obj))
    assert event.event_id == obj["event_id"]
    assert event.account_id == obj["account_id"]
    assert event.user_id == obj.get("user_id")
    assert event.type.value == obj["type"]
    assert event.occurred_at == occurred_utc
    assert event.occurred_at.utcoffset() == timedelta(0)
    assert dict(event.properties) == obj["properties"]


def _required_fields(event_type: str) -> list[str]:
    fields = ["schema", "event_id", "type", "account_id", "occurred_at"]
    if event_type != "license_change":
        fields.append("user_id")
    if event_type in PROPERTY_FIELD:
        fields.append(f"properties.{PROPERTY_FIELD[event_type]}")
    return fields


@settings(max_examples=200)
@given(valid_events(), st.data())
def test_removing_a_required_field_is_missing_field(
    case: tuple[dict[str, Any], datetime], data: st.DataObject
) -> None:
    obj, _ = case
    name = data.draw(st.sampled_from(_required_fields(obj["type"])))
    result = rejected(decode(changed(obj, name, MISSING)))
    assert result.reason == f"missing_field:{name}"
