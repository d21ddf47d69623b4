"""Portfolio metrics across workers: each worker counts the accounts it owns.

``GET /portfolio/adoption?feature=reports`` on any worker asks every worker in the
current assignment for its partial count (``scope=local``) and adds them up; a worker
counts only accounts on its *active* partitions (its standby copies would count some
accounts twice). A worker that does not answer within ``ROUTE_TIMEOUT_S`` makes the
answer a 503 naming it (stream/routing.py): a sum without its accounts would look
complete and be wrong.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import aiohttp
from faust.web import Request, Response, View

from stream.access import Access, forwarded_auth, refusal_response
from stream.engagement import EngagementState
from stream.metrics import PortfolioAdoption, customer_adoption_rate
from stream.routing import (
    ROUTE_TIMEOUT_S,
    UNREACHABLE_ERRORS,
    WorkersUnreachableError,
    unavailable,
    why,
)
from stream.tables import owned_items

__all__ = ["MAX_DAYS", "AdoptionQuery", "register_portfolio_view"]

MAX_DAYS = 366
"""The longest window a portfolio query may ask for (the state keeps far fewer days)."""
ACCOUNTS_PER_TURN = 500
"""Accounts counted between two turns of the event loop (a few ms of work)."""


class AdoptionQuery:
    """``feature``, ``days`` (28), ``min_users`` (1), ``min_days`` (1) from a query string."""

    def __init__(self, query: Mapping[str, str]) -> None:
        if not query.get("feature"):
            raise ValueError("the query parameter 'feature' is required")
        self.feature = query["feature"]
        # Bounded: each worker walks this many days of every account it owns, in the
        # event loop (a review's days=700000 held a worker for seconds, 1000000 was a 500).
        self.days = _positive(query, "days", 28, most=MAX_DAYS)
        self.min_users = _positive(query, "min_users", 1)
        self.min_days = _positive(query, "min_days", 1, most=self.days)

    def params(self) -> dict[str, str]:
        return {
            "feature": self.feature,
            "days": str(self.days),
            "min_users": str(self.min_users),
            "min_days": str(self.min_days),
        }


def _positive(query: Mapping[str, str], name: str, default: int, most: int | None = None) -> int:
    try:
        value = int(query.get(name, default))
    except ValueError:
        raise ValueError(f"{name} must be a whole number") from None
    if value < 1:
        raise ValueError(f"{name} must be >= 1")
    if most is not None and value > most:
        raise ValueError(f"{name} must be <= {most}")
    return value


async def local_adoption(
    app: Any, table: Any, query: AdoptionQuery, now: datetime
) -> PortfolioAdoption:
    """Adoption over the accounts on this worker's active partitions, counted
    :data:`ACCOUNTS_PER_TURN` at a time with the event loop let go in between: in one
    go, 20,000 accounts held it (ingest, heartbeats, other requests) for 0.6 s."""
    values = [value for _, value in owned_items(app, table)]  # the table moves meanwhile
    total = PortfolioAdoption()
    for start in range(0, len(values), ACCOUNTS_PER_TURN):
        if start:
            await asyncio.sleep(0)
        states = map(EngagementState.from_json, values[start : start + ACCOUNTS_PER_TURN])
        total += customer_adoption_rate(
            ((state, state.local_day(now)) for state in states),
            query.feature,
            days=query.days,
            min_users=query.min_users,
            min_days=query.min_days,
        )
    return total


def register_portfolio_view(app: Any, table: Any, clock: Any, access: Access) -> None:
    @app.page("/portfolio/adoption")
    class PortfolioAdoptionView(View):
        """Customer adoption rate of a feature over the whole portfolio."""

        async def get(self, request: Request) -> Response:
            refused = refusal_response(self, access, request)
            if refused is not None:
                return refused
            try:
                query = AdoptionQuery(request.query)
            except ValueError as exc:
                return self.json({"error": str(exc)}, status=400)
            if request.query.get("scope") == "local":
                part = await local_adoption(app, table, query, clock.now())
                return self.json({"adopted": part.adopted, "accounts": part.accounts})
            try:
                total = await _gather(app, table, query, clock.now(), forwarded_auth(request))
            except WorkersUnreachableError as gone:
                detail = gone.detail(f"the adoption of {query.feature!r} over the portfolio")
                return unavailable(self, "worker unreachable", detail)
            return self.json(
                {
                    "feature": query.feature,
                    "adopted": total.adopted,
                    "accounts": total.accounts,
                    "rate": total.rate,
                }
            )


async def _gather(
    app: Any, table: Any, query: AdoptionQuery, now: datetime, headers: Mapping[str, str]
) -> PortfolioAdoption:
    me = str(app.conf.canonical_url).rstrip("/")
    others = [
        str(h).rstrip("/") for h in app.assignor.tables_metadata() if str(h).rstrip("/") != me
    ]
    total = await local_adoption(app, table, query, now)
    parts = await asyncio.gather(*(_remote(app, host, query, headers) for host in others))
    failures = []
    for host, part in zip(others, parts, strict=True):
        if isinstance(part, str):
            failures.append((host, part))
        else:
            total += part
    if failures:
        raise WorkersUnreachableError(failures)
    return total


async def _remote(
    app: Any, host: str, query: AdoptionQuery, headers: Mapping[str, str]
) -> PortfolioAdoption | str:
    """The worker's own count (asked with the caller's token), or why it could not be had."""
    params = {**query.params(), "scope": "local"}
    timeout = aiohttp.ClientTimeout(total=ROUTE_TIMEOUT_S)
    url = f"{host}/portfolio/adoption"
    try:
        got = app.http_client.get(url, params=params, timeout=timeout, headers=headers)
        async with got as response:
            response.raise_for_status()
            body = await response.json()
        return PortfolioAdoption(int(body["adopted"]), int(body["accounts"]))
    except (*UNREACHABLE_ERRORS, ValueError, KeyError, TypeError) as error:
        return why(error)
