"""Real peers for delivery tests: servers that follow the receivers' published contracts.

Each server listens on 127.0.0.1 only, records what it received (with arrival times) and
answers from a script when a test queues replies, else as the real service would. The
HTTP ones share :func:`serve`, :class:`Reply` and :class:`Received` from here.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from stream import codec

__all__ = ["Received", "Reply", "Script", "assert_hidden", "record", "serve"]


@dataclass(frozen=True)
class Reply:
    """A scripted answer: status, body (``dict``/``list`` sent as JSON), headers, delay."""

    status: int
    body: str | bytes | dict[str, Any] | list[Any] = ""
    headers: Mapping[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    """Sleep this long first, e.g. past the client's timeout."""

    async def respond(self) -> web.Response:
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if isinstance(self.body, dict | list):
            return web.Response(
                status=self.status,
                body=codec.dumps(self.body),
                content_type="application/json",
                headers=self.headers,
            )
        if isinstance(self.body, bytes):
            return web.Response(status=self.status, body=self.body, headers=self.headers)
        return web.Response(status=self.status, text=self.body, headers=self.headers)


@dataclass(frozen=True)
class Received:
    """One request as it arrived."""

    method: str
    path: str
    headers: Mapping[str, str]
    body: bytes
    at: float
    """``time.monotonic()`` on arrival."""

    def json(self) -> Any:
        return codec.loads(self.body)


class Script:
    """A queue of scripted replies, consumed one per request; empty means "behave"."""

    def __init__(self) -> None:
        self._replies: deque[Reply] = deque()

    def push(self, *replies: Reply) -> None:
        self._replies.extend(replies)

    def pop(self) -> Reply | None:
        return self._replies.popleft() if self._replies else None


async def record(request: web.Request) -> Received:
    return Received(
        request.method,
        request.path,
        dict(request.headers),
        await request.read(),
        time.monotonic(),
    )


@asynccontextmanager
async def serve(app: web.Application) -> AsyncIterator[str]:
    """Run ``app`` on 127.0.0.1 (a port the OS picks: no race) and yield its base URL."""
    # handler_cancellation: a client that timed out must not keep a sleeping handler (and
    # so the shutdown) waiting. No access log: the peer may see the secret URL, and tests
    # check the client's logs for it.
    runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=2.0, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()


def assert_hidden(secret: str, **texts: str) -> None:
    """Fail naming where ``secret`` leaked: details, reprs and logs must never carry one."""
    leaked = [name for name, text in texts.items() if secret in text]
    assert not leaked, f"secret leaked into {', '.join(leaked)}"
