"""The validation fast path accepts exactly what the careful path accepts.

``_build_fast`` exists for speed only; if it ever accepted an event ``_build`` rejects
(or built a different event), the contract would depend on which path ran.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from stream.events import EventLimits, UsageEvent, _build, _build_fast, _InvalidEventError

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
LIMITS = EventLimits(future_skew=timedelta(minutes=5))

VALID: dict[str, dict[str, Any]] = {
    "login": {},
    "session_end": {"duration_s": 310},
    "feature_used": {"feature": "reports"},
    "nps_response": {"score": 9, "comment": "great"},
    "value_milestone": {"milestone": "first_report"},
    "license_change": {"licenses": 100},
}
FIELDS = [
    "schema",
    "event_id",
    "type",
    "account_id",
    "user_id",
    "role",
    "occurred_at",
    "properties",
]
PROPERTY_NAMES = ["duration_s", "feature", "score", "comment", "milestone", "licenses"]

json_scalars = (
    st.none()
    | st.booleans()
    | st.sampled_from([-1, 0, 1, 6, 9, 10, 11, 128, 129])
    | st.integers(-3, 130)
    | st.floats(-5, 20)
    | st.sampled_from(
        [
            "",
            "x",
            "login",
            "nps_response",
            "2026-11-23T11:00:00Z",
            "2026-11-23T12:30:00+00:00",
            "2026-11-23",
            "0001-01-01T00:00:00+01:00",
            "a" * 129,
        ]
    )
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=2)
        | st.dictionaries(st.sampled_from(PROPERTY_NAMES), inner, max_size=3)
    ),
    max_leaves=4,
)


# Values on each side of every rule, so a loosened check in either path shows up.
BOUNDARIES: dict[str, list[Any]] = {
    "duration_s": [-1, -0.5, 0, 0.0, 310.5, "310", True, None],
    "feature": ["", "f", 3, None, ["f"]],
    "score": [-1, 0, 10, 11, 5.5, "5", True, None],
    "comment": ["", "ok", 3, None, False],
    "milestone": ["", "m", 1, None],
    "licenses": [-1, 0, 100, 1.5, "10", True, None],
    "schema": [0, 1, 2, 1.0, "1", True, None],
    "event_id": ["", "e", "e" * 128, "e" * 129, 7, None],
    "account_id": ["", "a", "a" * 128, "a" * 129, 7, None],
    "user_id": ["", "u", 7, None],
    "role": ["", "admin", 7, None],
    "occurred_at": [
        "2026-11-23T12:04:59Z",
        "2026-11-23T12:05:01Z",
        "2026-11-23T11:00:00",
        "2026-11-23T11:00:00+05:30",
        "2026-13-01T00:00:00Z",
        "9999-12-31T23:59:59-23:59",
        "2026-11-23t11:00:00z",
        17,
    ],
    "type": ["login", "logout", "", 1, None],
    "properties": [{}, [], "x", None],
}


def field_value(name: str) -> st.SearchStrategy[Any]:
    return st.sampled_from(BOUNDARIES[name]) | json_values


def careful(obj: dict[str, Any]) -> UsageEvent | None:
    try:
        return _build(obj, NOW, LIMITS)
    except _InvalidEventError:
        return None


@st.composite
def mutated_events(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(sorted(VALID)))
    event: dict[str, Any] = {
        "schema": 1,
        "event_id": "e-1",
        "type": kind,
        "account_id": "acme",
        "user_id": "u-1",
        "role": "champion",
        "occurred_at": "2026-11-23T11:00:00Z",
        "properties": dict(VALID[kind]),
    }
    for field in draw(st.lists(st.sampled_from(FIELDS), max_size=3)):
        if draw(st.booleans()):
            event.pop(field, None)
        else:
            event[field] = draw(field_value(field))
    if isinstance(event.get("properties"), dict):
        for name in draw(st.lists(st.sampled_from(PROPERTY_NAMES), max_size=2)):
            if draw(st.booleans()):
                event["properties"].pop(name, None)
            else:
                event["properties"][name] = draw(field_value(name))
    return event


@settings(max_examples=3_000, deadline=None)
@given(mutated_events())
def test_fast_path_agrees_with_the_careful_path(event: dict[str, Any]) -> None:
    assert _build_fast(event, NOW, LIMITS) == careful(event)


def test_fast_path_takes_every_valid_type() -> None:
    for kind, properties in VALID.items():
        event = {
            "schema": 1,
            "event_id": "e",
            "type": kind,
            "account_id": "a",
            "user_id": "u",
            "occurred_at": "2026-11-23T11:00:00Z",
            "properties": properties,
        }
        fast = _build_fast(event, NOW, LIMITS)
        assert fast is not None and fast == careful(event)
