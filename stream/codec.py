"""The project's one JSON codec (orjson): bytes in, bytes out, UTF-8 only."""

from __future__ import annotations

from typing import Any

import orjson

__all__ = ["Fragment", "JSONDecodeError", "dumps", "fragment", "loads"]

JSONDecodeError = orjson.JSONDecodeError
Fragment = orjson.Fragment


def loads(data: bytes | str) -> Any:
    """Parse JSON; raises :class:`JSONDecodeError` on bad JSON or bad UTF-8."""
    return orjson.loads(data)


def dumps(value: Any) -> bytes:
    """Serialise to compact JSON bytes; datetimes become RFC 3339 strings."""
    return orjson.dumps(value, option=orjson.OPT_UTC_Z | orjson.OPT_NON_STR_KEYS)


def fragment(value: Any) -> Fragment:
    """``value`` serialised once, to be embedded as is in later :func:`dumps` calls."""
    return orjson.Fragment(dumps(value))
