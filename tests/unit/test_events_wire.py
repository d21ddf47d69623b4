"""The typed hot path (``decode_batch``) takes exactly what the careful path takes.

``decode_batch`` exists for speed only: msgspec decodes and checks the common event in
C, and whatever it leaves goes to ``decode_event``. If it ever took a message the
careful path rejects, or built a record other than the careful event's, a result would
depend on which path ran. These properties feed both the same bytes: JSON written in
different ways, with the contract's boundary values, unknown fields, duplicate keys,
bad UTF-8, huge numbers and every time form.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any, get_args

from hypothesis import given, settings
from hypothesis import strategies as st

from stream.events import (
    _HOURS,
    _SECONDS,
    KINDS,
    EventLimits,
    UsageEvent,
    _Kind,
    decode_batch,
    record_of,
)
from stream.ingest import _decode_value
from tests.unit.test_events_fast_path import VALID

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
LIMITS = EventLimits(max_bytes=600, future_skew=timedelta(minutes=5))
LIMIT_S = (NOW + LIMITS.future_skew).timestamp()

TIMES = [
    "2026-11-23T11:00:00Z",
    "2026-11-23T11:00:00+00:00",
    "2026-11-23T12:04:59Z",
    "2026-11-23T12:05:00Z",
    "2026-11-23T12:05:01Z",
    "2026-11-23T12:05:00+00:00",
    "2026-11-23T11:00:00z",
    "2026-11-23t11:00:00Z",
    "2026-11-23 11:00:00Z",
    "2026-11-23T11:00:00-00:00",
    "2026-11-23T16:30:00+05:30",
    "2026-11-23T11:00:00.5Z",
    "2026-11-23T11:00:00.000Z",
    "2026-11-23T11:00:00.123456789Z",
    "2026-11-23T11:00:00.5+01:00",
    "2026-11-23T06:00:00-05:00",
    "2026-11-23T12:04:59+00:01",
    "2026-11-23T12:06:00+00:01",
    "2026-11-23T11:00:00+23:59",
    "2026-11-23T11:00:00+24:00",
    "2026-11-23T11:00:00+05:60",
    "0001-01-01T00:30:00+01:00",
    "0001-01-01T01:30:00+01:00",
    "9999-12-31T23:59:59-01:00",
    "2026-11-23T11:00:00",
    "2026-11-23T24:00:00Z",
    "2026-11-23T23:59:60Z",
    "2026-11-23T11:60:00Z",
    "2026-02-29T11:00:00Z",
    "2024-02-29T11:00:00Z",
    "2026-13-01T00:00:00Z",
    "0001-01-01T00:00:00Z",
    "1969-12-31T23:59:59Z",
    "1970-01-01T00:00:00Z",
    "2026-11-23T1:00:00Z",
    "2026-11-23T11:00:00ZZ",
    "2026-11-23T11:00:00Z\n",
    "2026-11-23T11:0\u0660:00Z",  # an Arabic-Indic zero: \d, but not ASCII
    "\uff12026-11-23T11:00:00Z",  # a full-width digit
    "2026-11-23T11:00:00+0000",
]
FIELDS = ["schema", "event_id", "type", "account_id", "user_id", "role", "occurred_at"]
PROPERTY_NAMES = ["duration_s", "feature", "score", "comment", "milestone", "licenses"]
# Values on each side of every rule, and the ones where msgspec and orjson could differ.
BOUNDARIES: dict[str, list[Any]] = {
    "schema": [0, 1, 2, 1.0, "1", True, None],
    "event_id": ["", "e", "e" * 128, "e" * 129, "é" * 128, "é" * 129, "😀", 7, None],
    "account_id": ["", "a", "acme", "a" * 128, "a" * 129, "café", 7, None],
    "user_id": ["", "u", "ü", 7, None],
    "role": ["", "admin", "user", 7, None, False],
    "type": ["login", "logout", "", "LOGIN", 1, None, *VALID],
    "occurred_at": [*TIMES, 17, None],
    "duration_s": [
        -1,
        -0.5,
        0,
        0.0,
        -0.0,
        310.5,
        604_800,
        604_800.5,
        1.7976931348623157e308,
        2**63,
        2**64,
        2**70,
        1e308,
        "310",
        True,
        None,
    ],
    "feature": ["", "f", "ü", 3, None, ["f"]],
    "score": [-1, 0, 10, 11, 5.5, 9.0, 2**64, "5", True, None],
    "comment": ["", "ok", "ü", 3, None, False],
    "milestone": ["", "m", 1, None],
    "licenses": [-1, 0, 100, 1.5, 2**63 - 1, 2**63, 2**64 - 1, 2**64, "10", True, None],
    "properties": [{}, [], "x", None, 0],
}
# Raw JSON text spliced into the object: what json.dumps cannot write.
RAW_VALUES = [
    b"1e400",
    b"-1e400",
    b"1E999",
    b"123456789012345678901234567890",
    b"18446744073709551616",
    b"18446744073709551615",
    b"9223372036854775808",
    b"1e2",
    b"-0",
    b"-0.0",
    b"1.0",
    b'"\\ud800"',
    b'"\\udc00\\u0041"',
    b'"\\ud83d\\ude00"',
    b'"\xff"',
    b'"\xed\xa0\x80"',
    b'"\xc0\x80"',
    b'"\xc3\xa9"',
    b'"\\u00e9"',
    b'"\\u0000"',
    b'"."',  # account ids no URL can name
    b'".."',
    b"[[[[1]]]]",
    b'{"a":1,"a":2}',
    b"NaN",
    b"true",
    b"null",
]


def careful(raw: bytes, key: bytes | None) -> Any:
    return _decode_value(raw, key, NOW, LIMITS)


def fast(raw: bytes, key: bytes | None) -> tuple[str, tuple[Any, ...]] | None:
    """The record decode_batch took for ``raw`` and its account, or None if it left it."""
    batch = decode_batch([raw], [key], LIMITS.max_bytes, LIMIT_S)
    if batch.careful:
        assert batch.careful == [0] and batch.accounts == {}
        return None
    [(account_id, group)] = batch.accounts.items()
    assert group.key == account_id.encode() and group.indexes == [0]
    [record] = group.records
    return account_id, record


def assert_same(raw: bytes, key: bytes | None) -> None:
    took = fast(raw, key)
    if took is None:
        return  # the careful path decides, whatever the answer
    result = careful(raw, key)
    assert isinstance(result, UsageEvent), (raw, result)
    account_id, record = took
    expected = record_of(result)
    assert (account_id, record) == (result.account_id, expected)
    assert [type(v) for v in record] == [type(v) for v in expected]


@st.composite
def event_objects(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(sorted(VALID)))
    event: dict[str, Any] = {
        "schema": 1,
        "event_id": "e-1",
        "type": kind,
        "account_id": "acme",
        "user_id": "u-1",
        "role": "champion",
        "occurred_at": draw(st.sampled_from(TIMES[:6])),
        "properties": dict(VALID[kind]),
    }
    for name in draw(st.lists(st.sampled_from([*FIELDS, "properties"]), max_size=3)):
        if draw(st.booleans()):
            event.pop(name, None)
        else:
            event[name] = draw(st.sampled_from(BOUNDARIES[name]))
    if isinstance(event.get("properties"), dict):
        own = [*VALID[kind]] or PROPERTY_NAMES  # the type's own properties, mostly
        names = st.sampled_from(own) | st.sampled_from(PROPERTY_NAMES)
        for name in draw(st.lists(names, max_size=2)):
            if draw(st.booleans()):
                event["properties"].pop(name, None)
            else:
                event["properties"][name] = draw(st.sampled_from(BOUNDARIES[name]))
    return event


@st.composite
def encodings(draw: st.DrawFn) -> bytes:
    """One event as bytes: any key order and spacing, escaped or raw UTF-8, and maybe
    an unknown field, a duplicate key or a value json.dumps cannot write."""
    event = draw(event_objects())
    items = list(event.items())
    if draw(st.booleans()):
        items = draw(st.permutations(items))
    spaced = draw(st.booleans())
    separators = (", ", ": ") if spaced else (",", ":")
    ascii_only = draw(st.booleans())
    parts = [
        json.dumps(k)
        + separators[1]
        + json.dumps(v, ensure_ascii=ascii_only, separators=separators)
        for k, v in items
    ]
    encoded = [part.encode() for part in parts]
    extra = draw(st.sampled_from(["none", "unknown", "property", "duplicate", "raw-field"]))
    if extra == "unknown":
        encoded.append(b'"source":' + draw(st.sampled_from(RAW_VALUES)))
    elif extra == "duplicate" and items:
        name = draw(st.sampled_from([k for k, _ in items]))
        value = draw(st.sampled_from(BOUNDARIES.get(name, [None])))
        encoded.insert(draw(st.integers(0, len(encoded))), json.dumps({name: value})[1:-1].encode())
    elif extra == "raw-field":
        name = draw(st.sampled_from([*FIELDS, "properties"]))
        encoded = [p for p, (k, _) in zip(encoded, items, strict=True) if k != name]
        encoded.append(json.dumps(name).encode() + b":" + draw(st.sampled_from(RAW_VALUES)))
    body = b"{" + separators[0].encode().join(encoded) + b"}"
    if extra == "property" and b'"properties":{' in body:
        splice = b'"properties":{' + b'"x":' + draw(st.sampled_from(RAW_VALUES)) + b","
        body = body.replace(b'"properties":{', splice, 1).replace(b",}", b"}")
    return draw(st.sampled_from([b"", b" ", b"\n"])) + body + draw(st.sampled_from([b"", b"\n"]))


keys = st.just(b"acme") | st.sampled_from(
    [b"acme ", b"ACME", b"caf\xc3\xa9", b"\xff", b"", b"..", None]
)


@settings(max_examples=4_000, deadline=None)
@given(encodings(), keys)
def test_the_hot_path_takes_only_what_the_careful_path_takes(raw: bytes, key: bytes | None) -> None:
    assert_same(raw, key)


@settings(max_examples=500, deadline=None)
@given(encodings())
def test_the_hot_path_agrees_with_its_key(raw: bytes) -> None:
    result = careful(raw, b"acme")
    key = result.account_id.encode() if isinstance(result, UsageEvent) else b"acme"
    assert_same(raw, key)


messages = (
    encodings()
    | encodings().map(lambda raw: raw + b" " * LIMITS.max_bytes)  # too big, however valid
    | st.sampled_from([None, b"", b"{not json"])
)


usual_messages = st.builds(
    lambda kind, account, n: (usual(kind, event_id=f"e-{n}", account_id=account), account.encode()),
    st.sampled_from(sorted(VALID)),
    st.sampled_from(["acme", "globex"]),
    st.integers(0, 99),
)
"""Valid events with their keys, so that many batches hold several records."""


@settings(max_examples=500, deadline=None)
@given(st.lists(usual_messages | st.tuples(messages, keys), max_size=8))
def test_a_batch_takes_each_message_as_it_would_alone(
    batch: list[tuple[bytes | None, bytes | None]],
) -> None:
    """Whatever else a batch holds (absent, too big or refused messages, other accounts),
    each message is taken or left as it would be alone, at its own position."""
    values = [raw for raw, _ in batch]
    whole = decode_batch(values, [key for _, key in batch], LIMITS.max_bytes, LIMIT_S)
    alone = {i: None if raw is None else fast(raw, key) for i, (raw, key) in enumerate(batch)}
    assert whole.careful == [i for i, took in alone.items() if took is None]
    assert {
        i: (account_id, record)
        for account_id, group in whole.accounts.items()
        for i, record in zip(group.indexes, group.records, strict=True)
    } == {i: took for i, took in alone.items() if took is not None}
    assert all(group.indexes == sorted(group.indexes) for group in whole.accounts.values())


def test_every_single_change_of_every_event_type() -> None:
    # Each boundary value and each raw JSON value alone, in every field of every type:
    # the combinations above are random, this covers every single change for sure.
    for kind, props in VALID.items():
        base: dict[str, Any] = {
            "schema": 1,
            "event_id": "e-1",
            "type": kind,
            "account_id": "acme",
            "user_id": "u-1",
            "role": "champion",
            "occurred_at": "2026-11-23T11:00:00Z",
            "properties": props,
        }
        for name in [*FIELDS, "properties", *PROPERTY_NAMES]:
            inside = name in PROPERTY_NAMES
            for value in BOUNDARIES[name]:
                event = (
                    {**base, "properties": {**props, name: value}}
                    if inside
                    else {
                        **base,
                        name: value,
                    }
                )
                assert_same(json.dumps(event).encode(), b"acme")
            for raw_value in RAW_VALUES:
                event = {**base, "properties": {**props, name: 0}} if inside else {**base, name: 0}
                raw = json.dumps(event, separators=(",", ":")).encode()
                spliced = raw.replace(f'"{name}":0'.encode(), f'"{name}":'.encode() + raw_value)
                assert_same(spliced, b"acme")


def usual(kind: str, occurred_at: str = "2026-11-23T11:00:00Z", **fields: Any) -> bytes:
    event = {
        "schema": 1,
        "event_id": "e-1",
        "type": kind,
        "account_id": "acme",
        "user_id": "u-1",
        "occurred_at": occurred_at,
        "properties": VALID[kind],
        **fields,
    }
    return json.dumps(event).encode()


def test_the_hot_path_takes_every_usual_valid_event() -> None:
    # Without this, the properties above would hold for a hot path that took nothing.
    for kind in VALID:
        for occurred_at in (
            "2026-11-23T11:00:00Z",
            "2026-11-23T11:00:00+00:00",
            "2026-11-23T16:30:00+05:30",
            "2026-11-23T06:00:00-05:00",
        ):
            raw = usual(kind, occurred_at)
            assert fast(raw, b"acme") is not None, raw
            assert_same(raw, b"acme")
    assert fast(usual("license_change", user_id=None), b"acme") is not None
    assert fast(usual("nps_response", role=None), b"acme") is not None
    assert fast(usual("feature_used", user_id="ü", properties={"feature": "é"}), b"acme")


def test_the_hot_path_leaves_the_rest_to_the_careful_path() -> None:
    left = [
        usual("login", source="web"),  # unknown fields: msgspec would not check them
        usual("login", "2026-11-23T11:00:00.5Z"),  # fractions: sums could round apart
        usual("login", "0001-01-01T00:30:00+01:00"),  # the ends of the calendar
        usual("login", "2026-11-23T12:05:01Z"),  # in the future
        usual("session_end", properties={}),  # invalid
        usual("login", account_id="a" * 129),
    ]
    for raw in left:
        assert fast(raw, b"acme") is None, raw
    assert fast(usual("login"), b"globex") is None
    assert fast(usual("login"), None) is None
    for dots in (".", ".."):  # ids no URL can name: the careful path refuses them
        raw = usual("login", account_id=dots)
        assert fast(raw, dots.encode()) is None
        assert decode_batch([usual("login"), raw], None, LIMITS.max_bytes, LIMIT_S).careful == [1]


def test_time_caches_hold_only_what_the_careful_parser_accepts() -> None:
    for text in TIMES:
        fast(usual("login", text), b"acme")
    for hour, at in _HOURS.items():
        assert datetime.fromisoformat(f"{hour}:00:00+00:00").timestamp() == at
    for rest, seconds in _SECONDS.items():
        text = f"1970-01-01T00{rest}".upper().replace("Z", "+00:00")
        assert datetime.fromisoformat(text).timestamp() == seconds
        assert seconds.is_integer()


def test_batches_group_by_account_in_arrival_order() -> None:
    values = [
        usual("login", event_id="a1"),
        usual("login", event_id="g1", account_id="globex"),
        b"{not json",
        usual("session_end", event_id="a2"),
        usual("login", event_id="a3"),
    ]
    keys = [b"acme", b"globex", b"acme", b"acme", b"globex"]
    batch = decode_batch(values, keys, LIMITS.max_bytes, LIMIT_S)
    assert list(batch.accounts) == ["acme", "globex"]
    assert [r[0] for r in batch.accounts["acme"].records] == ["a1", "a2"]
    assert batch.accounts["acme"].indexes == [0, 3]
    assert batch.careful == [2, 4]


def test_the_kind_literal_names_every_event_type() -> None:
    assert list(get_args(_Kind)) == [kind.value for kind in KINDS]
