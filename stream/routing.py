"""Reads answered by the worker that owns a key, with a bound on waiting for it.

Faust's ``table_route`` forwards a read to the worker whose partition holds the key,
with no limit of its own: a worker that crashed or stands still (a paused VM, a frozen
container) keeps its partitions until the consumer group notices, up to
``session_timeout_s``. Until then a read routed to it waited minutes (aiohttp's
default) or failed as an error page. Here it answers 503 within
:data:`ROUTE_TIMEOUT_S`, naming the worker, with ``Retry-After``: the partitions move to
a live worker once the group notices, and the same read then succeeds.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from functools import wraps
from typing import Any

import aiohttp
from faust.exceptions import SameNode
from faust.web import Request, Response, View
from faust.web.exceptions import ServiceUnavailable

from stream.access import Access, refusal_response

__all__ = [
    "ROUTE_RETRY_AFTER_S",
    "ROUTE_TIMEOUT_S",
    "WorkersUnreachableError",
    "owner_route",
    "unavailable",
]

ROUTE_TIMEOUT_S = 5.0
"""How long a read waits for the worker it is routed to (a live one answers in ms)."""
ROUTE_RETRY_AFTER_S = 5
"""The ``Retry-After`` of a 503 for an unreachable worker."""

UNREACHABLE_ERRORS = (aiohttp.ClientError, TimeoutError)
"""What a request to a worker that is gone or frozen raises (refused, reset, timed out;
``ClientResponseError`` when it answered with an error of its own)."""

Handler = Callable[..., Awaitable[Response]]


class WorkersUnreachableError(Exception):
    """Workers a read needed did not answer: ``failures`` is (worker URL, why) each."""

    def __init__(self, failures: list[tuple[str, str]]) -> None:
        self.failures = failures
        super().__init__("; ".join(f"{url} ({why})" for url, why in failures))

    def detail(self, what: str) -> str:
        """What a 503 body says: ``what`` needed these workers, and what to expect."""
        return (
            f"{what} needs workers that did not answer within {ROUTE_TIMEOUT_S:g} s: {self}. "
            "A worker that crashed or stands still keeps its partitions until the consumer "
            "group notices (session_timeout_s); they then move to a live worker."
        )


def why(error: BaseException) -> str:
    """An error as a reader of a 503 body wants it: its type, and its text if any."""
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def unavailable(view: View, error: str, detail: str) -> Response:
    """A 503 that says when to ask again."""
    body = {"error": error, "detail": detail}
    headers = {"Retry-After": str(ROUTE_RETRY_AFTER_S)}
    response: Response = view.json(body, status=503, headers=headers)
    return response


def owner_route(
    app: Any, table: Any, match_info: str, access: Access
) -> Callable[[Handler], Handler]:
    """Like Faust's ``app.table_route(table=..., match_info=...)``, behind ``access``
    (a read): the decorated view method runs on the worker that owns the key in the
    URL, and other workers forward the request (token and all) to it; but a forward
    that is refused, fails or takes longer than :data:`ROUTE_TIMEOUT_S` answers 503
    with ``Retry-After``, naming the worker."""

    def decorate(handler: Handler) -> Handler:
        @wraps(handler)
        async def get(view: View, request: Request, *args: Any, **kwargs: Any) -> Response:
            refused = refusal_response(view, access, request)
            if refused is not None:
                return refused
            key = request.match_info[match_info]
            try:
                async with asyncio.timeout(ROUTE_TIMEOUT_S):  # not wait_for: keeps a cancel
                    routed: Response = await app.router.route_req(
                        table.name, key, view.web, request
                    )
                return routed
            except SameNode:
                return await handler(view, request, *args, **kwargs)
            except ServiceUnavailable:
                detail = f"no worker holds the partition of {key!r} yet (the group is rebalancing)"
                return unavailable(view, "no owner yet", detail)
            except UNREACHABLE_ERRORS as error:
                gone = WorkersUnreachableError([(_owner_url(app, table.name, key), why(error))])
                return unavailable(view, "worker unreachable", gone.detail(f"reading {key!r}"))

        return get

    return decorate


def _owner_url(app: Any, table_name: str, key: str) -> str:
    try:
        return str(app.router.key_store(table_name, key))
    except KeyError:  # the assignment moved on meanwhile
        return "its owner"
