"""A local Slack: the incoming-webhook contract and the Web API's ``chat.postMessage``.

Incoming webhooks (api.slack.com/messaging/webhooks#handling_errors) answer ``200 ok``,
or a status with a plain-text error code: 400 ``invalid_payload``/``no_text``/
``invalid_blocks``, 403 ``invalid_token``, 404 ``no_service`` (an unknown or revoked URL),
410 ``channel_is_archived``, 429 ``rate_limited`` with ``Retry-After``, 500
``rollup_error``. The Web API answers HTTP 200 with ``{"ok": false, "error": ...}`` for
almost everything, HTTP 429 with ``Retry-After`` when rate limited. Blocks are checked
with slack_sdk's own Block Kit models.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from contextlib import AsyncExitStack
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qsl

from aiohttp import web
from slack_sdk.errors import SlackObjectFormationError
from slack_sdk.models.blocks import Block

from stream import codec
from tests.servers import Received, Reply, Script, record, serve

__all__ = [
    "API_RATELIMITED",
    "INVALID_BLOCKS",
    "NO_SERVICE",
    "RATE_LIMITED",
    "ROLLUP_ERROR",
    "SlackServer",
]

RATE_LIMITED = Reply(429, "rate_limited", {"Retry-After": "1"})
ROLLUP_ERROR = Reply(500, "rollup_error")
NO_SERVICE = Reply(404, "no_service")
INVALID_BLOCKS = Reply(400, "invalid_blocks")
API_RATELIMITED = Reply(429, {"ok": False, "error": "ratelimited"}, {"Retry-After": "1"})

WEBHOOK_PATH = "/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX"
BOT_TOKEN = "xoxb-0000000000-0000000000000-XXXXXXXXXXXXXXXXXXXXXXXX"
CHANNELS = {"#alerts": "C0ALERTS01", "C0ALERTS01": "C0ALERTS01"}


class SlackServer:
    """``async with SlackServer() as slack``: ``slack.webhook_url``, ``slack.api_base``.

    Queue replies on ``webhook_script``/``api_script``; read ``webhook_requests``,
    ``api_requests`` (everything that arrived) and ``posted`` (messages Slack accepted).
    """

    def __init__(
        self,
        *,
        webhook_path: str = WEBHOOK_PATH,
        token: str = BOT_TOKEN,
        channels: Mapping[str, str] = CHANNELS,
    ) -> None:
        self.webhook_path = webhook_path
        self.token = token
        self.channels = dict(channels)
        self.webhook_script = Script()
        self.api_script = Script()
        self.webhook_requests: list[Received] = []
        self.api_requests: list[Received] = []
        self.posted: list[dict[str, Any]] = []
        self.base_url = ""
        self._stack = AsyncExitStack()

    @property
    def webhook_url(self) -> str:
        return f"{self.base_url}{self.webhook_path}"

    @property
    def api_base(self) -> str:
        return f"{self.base_url}/api"

    async def __aenter__(self) -> Self:
        app = web.Application()
        app.router.add_post("/services/{rest:.+}", self._webhook)
        app.router.add_post("/api/chat.postMessage", self._post_message)
        self.base_url = await self._stack.enter_async_context(serve(app))
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._stack.aclose()

    async def _webhook(self, request: web.Request) -> web.StreamResponse:
        received = await record(request)
        self.webhook_requests.append(received)
        if request.path != self.webhook_path:
            return _text(404, "no_service")
        if (scripted := self.webhook_script.pop()) is not None:
            return await scripted.respond()
        try:
            message = received.json()
        except codec.JSONDecodeError:
            return _text(400, "invalid_payload")
        if not isinstance(message, dict):
            return _text(400, "invalid_payload")
        if error := _message_error(message):
            return _text(400, error)
        self.posted.append(message)
        return _text(200, "ok")

    async def _post_message(self, request: web.Request) -> web.StreamResponse:
        received = await record(request)
        self.api_requests.append(received)
        if (scripted := self.api_script.pop()) is not None:
            return await scripted.respond()
        auth = request.headers.get("Authorization", "")
        if not auth:
            return _api_error("not_authed")
        if auth != f"Bearer {self.token}":
            return _api_error("invalid_auth")
        args = _arguments(request.content_type, received.body)
        if args is None:
            return _api_error("invalid_json")
        channel = self.channels.get(str(args.get("channel", "")))
        if channel is None:
            return _api_error("channel_not_found")
        if error := _message_error(args):
            return _api_error(error)
        ts = f"{time.time():.6f}"
        self.posted.append({**args, "channel": channel})
        message = {"type": "message", "bot_id": "B0TESTBOT1", "ts": ts}
        message |= {k: args[k] for k in ("text", "blocks", "attachments") if k in args}
        return web.json_response({"ok": True, "channel": channel, "ts": ts, "message": message})


def _message_error(message: Mapping[str, Any]) -> str | None:
    """Slack's checks on a message: something to show, and blocks Block Kit accepts."""
    if not any(message.get(k) for k in ("text", "blocks", "attachments")):
        return "no_text"
    if len(str(message.get("text", ""))) > 40_000:
        return "msg_too_long"
    blocks = message.get("blocks", [])
    if not isinstance(blocks, list) or len(blocks) > 50:
        return "invalid_blocks"
    for raw in blocks:
        try:
            block = Block.parse(raw) if isinstance(raw, dict) else None
            if block is None:
                return "invalid_blocks"
            block.validate_json()
        except (SlackObjectFormationError, TypeError, KeyError, ValueError):
            return "invalid_blocks"
    return None


def _arguments(content_type: str, body: bytes) -> dict[str, Any] | None:
    """The Web API takes JSON or form-encoded arguments."""
    if content_type == "application/x-www-form-urlencoded":
        return dict(parse_qsl(body.decode()))
    try:
        args = codec.loads(body)
    except codec.JSONDecodeError:
        return None
    return args if isinstance(args, dict) else None


def _text(status: int, body: str) -> web.Response:
    return web.Response(status=status, text=body, content_type="text/html")


def _api_error(error: str) -> web.Response:
    return web.json_response({"ok": False, "error": error})
