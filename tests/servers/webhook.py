"""A generic webhook receiver that checks engagewatch's HMAC-SHA256 signature.

The contract a customer's endpoint implements: ``X-Engagewatch-Timestamp`` is Unix
seconds, ``X-Engagewatch-Signature`` is ``"sha256=" + hex(HMAC(secret, f"{ts}." + body))``
over the exact bytes received. A bad or missing signature, or a timestamp more than
``tolerance_s`` away (a replay), gets 401; anything else 200.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from contextlib import AsyncExitStack
from types import TracebackType
from typing import Self

from aiohttp import web

from tests.servers import Received, record, serve

__all__ = ["SECRET", "WebhookReceiver", "sign", "signed_headers"]

SECRET = b"whsec-test-0123456789abcdef0123456789abcdef"
TIMESTAMP = "X-Engagewatch-Timestamp"
SIGNATURE = "X-Engagewatch-Signature"


def sign(secret: bytes, timestamp: str, body: bytes) -> str:
    """The signature header's value for ``body`` sent at ``timestamp``."""
    digest = hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def signed_headers(secret: bytes, body: bytes, timestamp: int | None = None) -> dict[str, str]:
    ts = str(int(time.time()) if timestamp is None else timestamp)
    return {TIMESTAMP: ts, SIGNATURE: sign(secret, ts, body), "Content-Type": "application/json"}


class WebhookReceiver:
    """``async with WebhookReceiver() as hook``: post to ``hook.url``; ``accepted`` holds
    the bodies whose signature held, ``requests`` everything that arrived."""

    def __init__(self, secret: bytes = SECRET, *, tolerance_s: float = 300.0) -> None:
        self.secret = secret
        self.tolerance_s = tolerance_s
        self.requests: list[Received] = []
        self.accepted: list[bytes] = []
        self.url = ""
        self._stack = AsyncExitStack()

    async def __aenter__(self) -> Self:
        app = web.Application()
        app.router.add_post("/hooks/engagewatch", self._receive)
        self.url = f"{await self._stack.enter_async_context(serve(app))}/hooks/engagewatch"
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._stack.aclose()

    async def _receive(self, request: web.Request) -> web.StreamResponse:
        received = await record(request)
        self.requests.append(received)
        if error := self._problem(request, received.body):
            return web.json_response({"error": error}, status=401)
        self.accepted.append(received.body)
        return web.json_response({"ok": True})

    def _problem(self, request: web.Request, body: bytes) -> str | None:
        timestamp = request.headers.get(TIMESTAMP, "")
        given = request.headers.get(SIGNATURE, "")
        if not timestamp.isdigit() or not given:
            return "missing signature"
        if abs(time.time() - int(timestamp)) > self.tolerance_s:
            return "timestamp outside tolerance"
        if not hmac.compare_digest(given, sign(self.secret, timestamp, body)):
            return "bad signature"
        return None
