"""The portfolio query's parameters: checked, and bounded, before any account is read."""

from __future__ import annotations

import pytest

from stream.portfolio import MAX_DAYS, AdoptionQuery


def test_defaults_and_values_given() -> None:
    query = AdoptionQuery({"feature": "reports"})
    assert (query.days, query.min_users, query.min_days) == (28, 1, 1)
    given = AdoptionQuery({"feature": "reports", "days": "14", "min_users": "3", "min_days": "2"})
    assert given.params() == {"feature": "reports", "days": "14", "min_users": "3", "min_days": "2"}


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({}, "the query parameter 'feature' is required"),
        ({"feature": "reports", "days": "a week"}, "days must be a whole number"),
        ({"feature": "reports", "days": "0"}, "days must be >= 1"),
        # Each worker walks this many days of every account it owns, in its event loop.
        ({"feature": "reports", "days": "700000"}, f"days must be <= {MAX_DAYS}"),
        ({"feature": "reports", "days": str(MAX_DAYS + 1)}, f"days must be <= {MAX_DAYS}"),
        ({"feature": "reports", "days": "7", "min_days": "8"}, "min_days must be <= 7"),
        ({"feature": "reports", "min_users": "-1"}, "min_users must be >= 1"),
    ],
)
def test_a_bad_parameter_is_refused_with_its_name(query: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        AdoptionQuery(query)
    assert AdoptionQuery({"feature": "reports", "days": str(MAX_DAYS)}).days == MAX_DAYS
