"""A local PagerDuty Events API v2 (``POST /v2/enqueue``), validating as the real one does.

Rules from developer.pagerduty.com (Events API v2 overview): ``routing_key`` is a
32-character integration key; ``event_action`` is trigger, acknowledge or resolve;
``dedup_key`` (at most 255 characters) is required to acknowledge or resolve and
generated when a trigger has none; a trigger needs ``payload`` with ``summary`` (at most
1024 characters), ``source`` and ``severity`` (critical, error, warning, info).
Accepted events get ``202 {"status": "success", "message": "Event processed",
"dedup_key": ...}``; invalid ones ``400 {"status": "invalid event", "message": "Event
object is invalid", "errors": [...]}``. 429 and 5xx only when scripted.
"""

from __future__ import annotations

import uuid
from contextlib import AsyncExitStack
from datetime import datetime
from types import TracebackType
from typing import Any, Self

from aiohttp import web

from stream import codec
from tests.servers import Received, Script, record, serve

__all__ = ["INTEGRATION_KEY", "PagerDutyServer", "event_errors"]

INTEGRATION_KEY = "R0UT1NGKEY0000000000000000000001"
ACTIONS = ("trigger", "acknowledge", "resolve")
SEVERITIES = ("critical", "error", "warning", "info")


class PagerDutyServer:
    """``async with PagerDutyServer() as pd``: post to ``pd.url``; read ``events`` (accepted,
    in order), ``incidents`` (dedup_key -> last action) and ``requests`` (everything)."""

    def __init__(self) -> None:
        self.script = Script()
        self.requests: list[Received] = []
        self.events: list[dict[str, Any]] = []
        self.incidents: dict[str, str] = {}
        self.url = ""
        self._stack = AsyncExitStack()

    async def __aenter__(self) -> Self:
        app = web.Application()
        app.router.add_post("/v2/enqueue", self._enqueue)
        self.url = f"{await self._stack.enter_async_context(serve(app))}/v2/enqueue"
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._stack.aclose()

    async def _enqueue(self, request: web.Request) -> web.StreamResponse:
        received = await record(request)
        self.requests.append(received)
        if (scripted := self.script.pop()) is not None:
            return await scripted.respond()
        try:
            event = received.json()
        except codec.JSONDecodeError:
            return _invalid(["Event object is not valid JSON"])
        if not isinstance(event, dict):
            return _invalid(["Event object must be a JSON object"])
        if errors := event_errors(event):
            return _invalid(errors)
        dedup_key = event.get("dedup_key") or uuid.uuid4().hex
        self.events.append(event)
        self.incidents[dedup_key] = event["event_action"]
        body = {"status": "success", "message": "Event processed", "dedup_key": dedup_key}
        return web.json_response(body, status=202)


def event_errors(event: dict[str, Any]) -> list[str]:
    """Everything wrong with an event, in the API's words where known."""
    errors: list[str] = []
    key = event.get("routing_key")
    if not isinstance(key, str) or not key:
        errors.append("'routing_key' is missing or blank")
    elif len(key) != 32:
        errors.append("Length of 'routing_key' is incorrect (should be 32 characters)")
    action = event.get("event_action")
    if action not in ACTIONS:
        errors.append(
            "'event_action' is missing or invalid (should be one of trigger, acknowledge, resolve)"
        )
    dedup_key = event.get("dedup_key")
    if dedup_key is not None and (not isinstance(dedup_key, str) or len(dedup_key) > 255):
        errors.append("'dedup_key' must be a string of at most 255 characters")
    if action in ("acknowledge", "resolve") and not dedup_key:
        errors.append(f"'dedup_key' is required to {action}")
    if action == "trigger":
        errors += _payload_errors(event.get("payload"))
    return errors


def _payload_errors(payload: Any) -> list[str]:
    if not isinstance(payload, dict):
        return ["'payload' is missing or not an object"]
    errors: list[str] = []
    summary = payload.get("summary")
    if not isinstance(summary, str) or not summary:
        errors.append("'payload.summary' is missing or blank")
    elif len(summary) > 1024:
        errors.append("'payload.summary' must be at most 1024 characters")
    if not isinstance(payload.get("source"), str) or not payload["source"]:
        errors.append("'payload.source' is missing or blank")
    if payload.get("severity") not in SEVERITIES:
        errors.append(
            "'payload.severity' is invalid (should be one of critical, error, warning, info)"
        )
    if (timestamp := payload.get("timestamp")) is not None:
        try:
            datetime.fromisoformat(str(timestamp))
        except ValueError:
            errors.append("'payload.timestamp' is not a valid ISO 8601 timestamp")
    details = payload.get("custom_details")
    if details is not None and not isinstance(details, dict | list | str):
        errors.append("'payload.custom_details' must be an object")
    return errors


def _invalid(errors: list[str]) -> web.Response:
    body = {"status": "invalid event", "message": "Event object is invalid", "errors": errors}
    return web.json_response(body, status=400)
