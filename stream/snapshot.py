"""One account's engagement as JSON: what the read API (and later triage) shows."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime
from typing import Any

from stream import metrics
from stream.accounts import Account
from stream.engagement import EngagementState

__all__ = ["account_snapshot"]

SERIES_DAYS = 28
TREND_RECENT_DAYS = 7
TREND_BASELINE_DAYS = 28


def account_snapshot(
    state: EngagementState | None,
    account: Account | None,
    now: datetime,
    stakeholder_roles: Iterable[str],
) -> dict[str, Any]:
    """Metadata, headline metrics, the daily series and stakeholders, as of ``now``."""
    account_id = state.account_id if state else account.account_id if account else None
    state = state or EngagementState(str(account_id), account.timezone if account else "UTC")
    today = state.local_day(now)
    days = metrics.window(today, SERIES_DAYS)
    licenses = metrics.licenses_on(state, account, today)
    return {
        "account_id": account_id,
        "account": account.to_dict() if account else None,
        "as_of": now.astimezone(UTC).isoformat(),
        "local_date": today.isoformat(),
        "timezone": state.timezone,
        "metrics": _headline(state, account, today, licenses),
        "daily": _daily(state, account, days),
        "stakeholders": _stakeholders(state, stakeholder_roles, today),
        "weekday_habit": [
            {"weekday": h.weekday, "observed": h.observed, "active": h.active, "rate": h.rate}
            for h in metrics.weekday_profile(state, today)
        ],
        "event_counts": dict(sorted(state.event_counts.items())),
    }


def _headline(
    state: EngagementState, account: Account | None, today: Any, licenses: int | None
) -> dict[str, Any]:
    days = metrics.window(today, SERIES_DAYS)
    features = sorted({name for d in days if (b := state.bucket(d)) for name in b.features})
    series = metrics.daily_series(
        state, "active_users", today, TREND_RECENT_DAYS + TREND_BASELINE_DAYS
    )
    active_trend = metrics.trend(series, TREND_RECENT_DAYS, TREND_BASELINE_DAYS)
    ttfa = metrics.time_to_first_action(state)
    ttv = metrics.time_to_value(state, account)
    return {
        "licenses": licenses,
        "daily_usage_rate": metrics.daily_usage_rate(state, today, licenses),
        "active_days_28d": metrics.active_days(state, today, SERIES_DAYS),
        "average_time_per_login_s_28d": metrics.average_time_per_login(state, days),
        "feature_adoption_28d": {
            f: metrics.feature_adoption_rate(state, f, days) for f in features
        },
        "nps_28d": metrics.nps(state, days).score,
        "nps_lifetime": metrics.nps(state).score,
        "time_to_first_action_s": ttfa.total_seconds() if ttfa is not None else None,
        "time_to_value_s": ttv.total_seconds() if ttv is not None else None,
        "active_users_trend": {
            "recent_7d": active_trend.recent,
            "baseline_28d": active_trend.baseline,
            "change": active_trend.change,
        },
    }


def _daily(
    state: EngagementState, account: Account | None, days: Sequence[date]
) -> list[dict[str, Any]]:
    rows = []
    for day in days:
        bucket = state.bucket(day)
        licenses = metrics.licenses_on(state, account, day)
        rows.append(
            {
                "date": day.isoformat(),
                "events": bucket.events if bucket else 0,
                "logins": bucket.logins if bucket else 0,
                "login_users": bucket.login_users.bit_count() if bucket else 0,
                "active_users": bucket.active_users.bit_count() if bucket else 0,
                "sessions": bucket.sessions if bucket else 0,
                "session_s": bucket.session_s if bucket else 0.0,
                "usage_rate": metrics.daily_usage_rate(state, day, licenses),
            }
        )
    return rows


def _stakeholders(state: EngagementState, roles: Iterable[str], today: Any) -> list[dict[str, Any]]:
    return [
        {
            "user_id": user_id,
            "role": state.users[user_id].role,
            "last_seen": seen.isoformat(),
            "active_days_28d": metrics.stakeholder_active_days(state, user_id, today, SERIES_DAYS),
        }
        for user_id, seen in metrics.stakeholder_last_seen(state, roles).items()
    ]
