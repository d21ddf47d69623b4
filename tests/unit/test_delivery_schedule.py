"""Routing, backoff, quiet hours, digests and rate limits: pure, no sleeping."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, time, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from alerts.delivery.config import Digest, QuietHours, RetryPolicy, Route
from alerts.delivery.routing import receivers_for, routing_labels
from alerts.delivery.schedule import (
    GiveUp,
    RateLimiter,
    Retry,
    backoff_s,
    delivery_id,
    digest_due,
    group_key,
    quiet_until,
    retry_or_give_up,
    transition_id,
)

T0 = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def event(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "fingerprint": "fp1",
        "status": "firing",
        "rule": "champion-silent",
        "severity": "warning",
        "account_id": "acme",
        "stakeholder": None,
        "labels": {"rule": "champion-silent", "team": "emea"},
        "account": {"segment": "enterprise", "owner_email": "csm@example.com"},
        "starts_at": "2026-11-20T00:00:00Z",
        "repeat": False,
        "generated_at": "2026-11-23T12:00:00Z",
    }
    base.update(overrides)
    return base


# --- routing --------------------------------------------------------------------------

TREE = Route.model_validate(
    {
        "receiver": "default",
        "routes": [
            {"match": {"severity": "critical"}, "receiver": "pager", "continue": True},
            {"match_re": {"segment": "enterprise|strategic"}, "receiver": "csm-slack"},
            {"match": {"team": "emea"}, "receiver": "emea"},
            {
                "match": {"rule": "nps-detractor"},
                "routes": [{"match": {"severity": "critical"}, "receiver": "exec"}],
            },
        ],
    }
)


def test_first_matching_route_wins_unless_continue() -> None:
    labels = routing_labels(event(severity="critical"))
    assert receivers_for(TREE, labels) == ["pager", "csm-slack"]  # emea never reached
    assert receivers_for(TREE, routing_labels(event())) == ["csm-slack"]


def test_regex_matchers_are_anchored_and_nothing_matching_means_the_default() -> None:
    smb = event(account={"segment": "smb-enterprise"}, labels={})
    assert receivers_for(TREE, routing_labels(smb)) == ["default"]


def test_a_route_without_receiver_inherits_its_parents() -> None:
    nps = event(rule="nps-detractor", labels={}, account={"segment": "smb"})
    assert receivers_for(TREE, routing_labels(nps)) == ["default"]


def test_routing_labels_add_the_alert_and_account_facts() -> None:
    labels = routing_labels(event(stakeholder="u-9"))
    assert labels["severity"] == "warning"
    assert labels["segment"] == "enterprise"
    assert labels["owner"] == "csm@example.com"
    assert labels["stakeholder"] == "u-9"
    assert labels["team"] == "emea"


# --- identities -------------------------------------------------------------------------


def test_a_transition_is_the_same_when_read_twice_and_new_for_a_repeat() -> None:
    firing = event()
    assert transition_id(firing) == transition_id(dict(firing))
    repeat = event(repeat=True, generated_at="2026-11-30T12:00:00Z")
    resolved = event(status="resolved")
    ids = {transition_id(firing), transition_id(repeat), transition_id(resolved)}
    assert len(ids) == 3
    assert delivery_id(firing, "a") != delivery_id(firing, "b")


# --- retries ----------------------------------------------------------------------------

POLICY = RetryPolicy(initial=2, max=60, multiplier=2, jitter=0.2, max_attempts=5, give_up_after=600)


@given(st.integers(min_value=1, max_value=50), st.floats(min_value=0, max_value=0.9999))
def test_backoff_grows_is_capped_and_jitter_only_shortens(attempts: int, rand: float) -> None:
    delay = backoff_s(POLICY, attempts, rand)
    ceiling = min(60.0, 2.0 * 2 ** (attempts - 1))
    assert ceiling * 0.8 <= delay <= ceiling


def test_retry_after_wins_over_a_shorter_backoff() -> None:
    decision = retry_or_give_up(
        POLICY, attempts=1, first_attempt=T0, now=T0, retry_after_s=30, rand=0.0
    )
    assert decision == Retry(T0 + timedelta(seconds=30))


def test_give_up_after_max_attempts_or_the_horizon() -> None:
    by_count = retry_or_give_up(
        POLICY, attempts=5, first_attempt=T0, now=T0, retry_after_s=None, rand=0.0
    )
    assert isinstance(by_count, GiveUp)
    assert "5 attempts" in by_count.reason
    late = T0 + timedelta(seconds=598)  # the next try (4 s later) is past 600 s
    by_time = retry_or_give_up(
        POLICY, attempts=2, first_attempt=T0, now=late, retry_after_s=None, rand=0.0
    )
    assert isinstance(by_time, GiveUp)


# --- quiet hours ------------------------------------------------------------------------

NIGHTS = QuietHours(start=time(20), end=time(8), timezone="Europe/Berlin", all_day=(5, 6))


def at_berlin(day: int, hour: int, minute: int = 0) -> datetime:
    """2026-11-23 is a Monday; Berlin is UTC+1 in November."""
    return datetime(2026, 11, day, hour, minute, tzinfo=UTC) - timedelta(hours=1)


def test_daytime_messages_go_at_once_and_night_ones_wait_for_morning() -> None:
    assert quiet_until(NIGHTS, "warning", at_berlin(24, 14)) is None
    assert quiet_until(NIGHTS, "warning", at_berlin(24, 23)) == at_berlin(25, 8)
    assert quiet_until(NIGHTS, "warning", at_berlin(25, 3)) == at_berlin(25, 8)


def test_a_friday_night_waits_for_monday_morning_through_an_all_day_weekend() -> None:
    assert quiet_until(NIGHTS, "warning", at_berlin(27, 21)) == at_berlin(30, 8)
    assert quiet_until(NIGHTS, "info", at_berlin(29, 12)) == at_berlin(30, 8)


def test_critical_messages_are_never_held() -> None:
    assert quiet_until(NIGHTS, "critical", at_berlin(24, 23)) is None


def test_quiet_hours_follow_daylight_saving() -> None:
    summer = QuietHours(start=time(20), end=time(8), timezone="Europe/Berlin")
    at_night = datetime(2026, 7, 1, 21, 0, tzinfo=UTC)  # 23:00 in Berlin (UTC+2)
    assert quiet_until(summer, "warning", at_night) == datetime(2026, 7, 2, 6, 0, tzinfo=UTC)


# --- digests and rate limits -----------------------------------------------------------------


def test_alerts_in_one_interval_share_a_due_time_and_group_by_owner() -> None:
    hourly = Digest(interval=3600, group_by="owner")
    first = digest_due(hourly, T0 + timedelta(minutes=1))
    last = digest_due(hourly, T0 + timedelta(minutes=59))
    assert first == last == T0 + timedelta(hours=1)
    assert digest_due(hourly, T0 + timedelta(hours=1)) == T0 + timedelta(hours=2)
    assert group_key(hourly, event(), "r") == "owner:csm@example.com"
    assert group_key(None, event(), "r") == ""


def test_the_rate_limiter_spaces_messages_at_its_rate() -> None:
    limiter = RateLimiter(rate=2.0)
    waits = [limiter.reserve(100.0) for _ in range(4)]
    assert waits == [0.0, 0.5, 1.0, 1.5]
    assert limiter.reserve(110.0) == 0.0  # refilled after a pause


@pytest.mark.parametrize("rate", [0.5, 1.0, 10.0])
def test_a_steady_sender_never_exceeds_the_rate(rate: float) -> None:
    limiter = RateLimiter(rate=rate)
    clock, sent = 0.0, []
    for _ in range(50):
        clock += limiter.reserve(clock)
        sent.append(clock)
    gaps = [b - a for a, b in itertools.pairwise(sent)]
    assert min(gaps) >= 1 / rate - 1e-9
