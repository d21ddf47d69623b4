"""The triage API and page, served by every worker's web server (docs/triage.md).

Reads come from Redis (stream/triage_store.py), so any worker answers for all accounts;
an account's live snapshot comes from the table-routed ``/accounts/{id}`` read API.
Writes (ack, snooze, unsnooze, resolve) need the bearer token; without a configured
token they are refused, never open. docs/openapi.yaml describes every route here.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from importlib import resources
from typing import Any, cast
from urllib.parse import quote

import aiohttp
from faust.web import Request, Response, View

from alerts.triage import (
    ALERT_STATUSES,
    TIER_POINTS,
    Ack,
    InputError,
    ResolveRequest,
    iso,
    snooze_until,
)
from config.settings import Settings
from stream import codec
from stream.access import Access, forwarded_auth, load_api_token, refusal_response
from stream.clock import Clock
from stream.triage_store import REDIS_ERRORS, TriageStore, entry_ttl_s

__all__ = ["API", "Access", "load_api_token", "register_triage"]  # Access: re-exported

log = logging.getLogger(__name__)

API = "/api/v1"
MAX_LIMIT = 500
ALERTS_PAGE = 100
"""Open alerts listed per page unless ``limit`` says otherwise: a fleet with 20,000 open
made a 9 MB answer the page fetched every 15 s."""
MAX_OFFSET = 10_000_000
SEVERITIES = ("info", "warning", "critical")
SCOPES = ("alert", "rule", "account")
SNAPSHOT_TIMEOUT_S = 3.0
MAX_BODY_BYTES = 16 * 1024
"""The largest write body taken: an ack, snooze or resolve is a few hundred bytes."""
STATIC = {
    "triage.js": "text/javascript; charset=utf-8",
    "triage.css": "text/css; charset=utf-8",
}
PAGE_HEADERS = {
    # The page builds its DOM with textContent only; this keeps any injected markup inert.
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}

Reply = tuple[int, Any]


def register_triage(
    app: Any,
    settings: Settings,
    clock: Clock,
    *,
    access: Access,
    on_redis_error: Callable[[str], None] = lambda operation: None,
) -> TriageStore:
    """Add the triage API, its OpenAPI document and the page to ``app``, behind
    ``access``; return the store they read, for the sweeper (which writes the index)
    and the notifier."""
    store = TriageStore.from_url(
        settings.redis_url,
        settings.topic_prefix,
        entry_ttl_s=entry_ttl_s(settings.sweep_interval_s),
    )

    class TriageView(View):
        """Shared handling: the token gate, JSON errors, Redis trouble as 503."""

        async def answer(
            self, request: Request, handler: Callable[[], Awaitable[Reply]], *, write: bool
        ) -> Response:
            refused = refusal_response(self, access, request, write=write)
            if refused is not None:
                return refused
            try:
                status, body = await handler()
            except BodyTooLargeError:
                detail = f"a request body holds at most {MAX_BODY_BYTES} bytes"
                return _error(self, 413, "payload too large", detail)
            except InputError as exc:
                return _error(self, 400, "bad request", str(exc), field=exc.field)
            except REDIS_ERRORS as exc:
                on_redis_error("api")
                log.warning("triage api: redis failed: %s: %s", type(exc).__name__, exc)
                detail = "the triage index (Redis) is unreachable; alerting goes on, try again"
                return _error(self, 503, "redis unavailable", detail, headers={"Retry-After": "5"})
            return self.json(body, status=status)

        # Every method a view does not answer: a JSON 405 (aiohttp's own is plain text).
        get: Any = _not_allowed
        post: Any = _not_allowed
        put: Any = _not_allowed
        patch: Any = _not_allowed
        delete: Any = _not_allowed

    # Registered before /accounts/{account_id}: aiohttp matches in registration order.
    @app.page(f"{API}/accounts/silent", name="triage-silent")
    class SilentView(TriageView):
        async def get(self, request: Request) -> Response:
            async def run() -> Reply:
                q = request.query
                accounts = await store.silent_accounts(
                    clock.now(),
                    limit=_limit(q),
                    include_snoozed=_flag(q, "include_snoozed"),
                    owner=q.get("owner") or None,
                    segment=q.get("segment") or None,
                    tier=_choice(q, "tier", tuple(TIER_POINTS)),
                )
                return 200, {"accounts": accounts, "as_of": _now_iso(clock)}

            return await self.answer(request, run, write=False)

    @app.page(f"{API}/accounts/{{account_id}}", name="triage-account")
    class AccountView(TriageView):
        async def get(self, request: Request, account_id: str) -> Response:
            async def run() -> Reply:
                entry = await store.account(account_id)
                history = await store.history(account_id)
                alerts = await store.alerts(
                    clock.now(), account_id=account_id, include_snoozed=True
                )
                snapshot, problem = await _live_snapshot(app, account_id, request)
                if entry is None and not history and snapshot is None:
                    return 404, {
                        "error": "not found",
                        "detail": f"no account {account_id!r} in the triage index or the workers",
                    }
                return 200, {
                    "account": entry,
                    "alerts": alerts,
                    "history": history,
                    "snapshot": snapshot,
                    "snapshot_error": problem,
                }

            return await self.answer(request, run, write=False)

    @app.page(f"{API}/alerts", name="triage-alerts")
    class AlertsView(TriageView):
        async def get(self, request: Request) -> Response:
            async def run() -> Reply:
                q = request.query
                alerts = await store.alerts(
                    clock.now(),
                    include_snoozed=_flag(q, "include_snoozed"),
                    status=_choice(q, "status", ALERT_STATUSES),
                    severity=_choice(q, "severity", SEVERITIES),
                    rule=q.get("rule") or None,
                    account_id=q.get("account_id") or None,
                    owner=q.get("owner") or None,
                )
                start, size = _offset(q), _limit(q, ALERTS_PAGE)
                after = start + size
                return 200, {
                    "alerts": alerts[start:after],
                    "offset": start,
                    "total": len(alerts),
                    "next_offset": after if after < len(alerts) else None,
                    "as_of": _now_iso(clock),
                }

            return await self.answer(request, run, write=False)

    def write_view(
        path: str, name: str, act: Callable[[str, dict[str, Any]], Awaitable[Reply]]
    ) -> None:
        @app.page(f"{API}/alerts/{{fingerprint}}/{path}", name=name)
        class WriteView(TriageView):
            async def post(self, request: Request, fingerprint: str) -> Response:
                async def run() -> Reply:
                    body = _json_object(await _read_body(request, MAX_BODY_BYTES))
                    return await act(fingerprint, body)

                return await self.answer(request, run, write=True)

    async def ack(fingerprint: str, body: dict[str, Any]) -> Reply:
        author, comment = _text(body, "author"), _text(body, "comment", required=False)
        alert = await store.alert(fingerprint)
        if alert is None:
            return _unknown(fingerprint)
        done = Ack(fingerprint, author, clock.now(), comment, alert.get("starts_at"))
        await store.ack(alert, done)
        return 200, {"ack": done.to_dict()}

    async def snooze(fingerprint: str, body: dict[str, Any]) -> Reply:
        author, reason = _text(body, "author"), _text(body, "reason")
        scope = body.get("scope", "alert")
        if scope not in SCOPES:
            raise InputError("scope", f"expected one of {', '.join(SCOPES)}")
        now = clock.now()
        until = snooze_until(now, _optional(body, "until"), _optional(body, "duration"))
        alert = await store.alert(fingerprint)
        if alert is None:
            return _unknown(fingerprint)
        silence = await store.snooze(
            alert, until=until, author=author, reason=reason, now=now, scope=scope
        )
        return 200, {"silence": silence.to_dict()}

    async def unsnooze(fingerprint: str, body: dict[str, Any]) -> Reply:
        author = _text(body, "author")
        alert = await store.alert(fingerprint)
        removed = await store.unsnooze(fingerprint, author=author, now=clock.now(), alert=alert)
        if not removed:
            return 404, {"error": "not found", "detail": f"no snooze holds alert {fingerprint}"}
        return 200, {"removed": [s.to_dict() for s in removed]}

    async def resolve(fingerprint: str, body: dict[str, Any]) -> Reply:
        author, reason = _text(body, "author"), _text(body, "reason")
        alert = await store.alert(fingerprint)
        if alert is None:
            return _unknown(fingerprint)
        request = ResolveRequest(fingerprint, alert["account_id"], author, reason, clock.now())
        await store.request_resolve(alert, request)
        detail = "the worker that owns the account resolves it at its next sweep"
        return 202, {"resolve_request": request.to_dict(), "detail": detail}

    write_view("ack", "triage-ack", ack)
    write_view("snooze", "triage-snooze", snooze)
    write_view("unsnooze", "triage-unsnooze", unsnooze)
    write_view("resolve", "triage-resolve", resolve)
    _register_documents(app)

    # Last of the API's routes: any other path under it is a JSON 404, as the API's
    # errors are (aiohttp's own is plain text).
    @app.page(f"{API}/{{path:.*}}", name="triage-unknown")
    class UnknownView(TriageView):
        get = post = put = patch = delete = _no_such_path

    return store


def _register_documents(app: Any) -> None:
    """The OpenAPI document and the page: public, they hold no account data."""

    @app.page(f"{API}/openapi.yaml", name="triage-openapi")
    class OpenApiView(View):
        async def get(self, request: Request) -> Response:
            return self.bytes(_resource("openapi.yaml"), content_type="application/yaml")

    def page(path: str, name: str) -> None:
        @app.page(path, name=name)
        class PageView(View):
            async def get(self, request: Request, **params: str) -> Response:
                return self.bytes(
                    _resource("triage.html"), content_type="text/html", headers=dict(PAGE_HEADERS)
                )

    page("/triage", "triage-page")
    page("/triage/account/{account_id}", "triage-page-account")

    @app.page("/triage/static/{name}", name="triage-static")
    class StaticView(View):
        async def get(self, request: Request, name: str) -> Response:
            if name not in STATIC:
                return _error(self, 404, "not found", f"no static file {name!r}")
            return self.bytes(
                _resource(name), headers={**PAGE_HEADERS, "Content-Type": STATIC[name]}
            )


class BodyTooLargeError(Exception):
    """A write's body is over :data:`MAX_BODY_BYTES` (answered 413)."""


async def _read_body(request: Request, limit: int) -> bytes:
    """The request body, read no further than ``limit`` bytes: Faust's
    ``read_request_content`` reads it all into memory first (a review's 300 MiB POST
    took the worker from 99 to 348 MiB before the 100-character author check)."""
    declared = request.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > limit:
        raise BodyTooLargeError
    stream = cast(Any, request).content  # aiohttp's StreamReader under Faust's Request
    body = bytearray()
    while chunk := await stream.read(limit + 1 - len(body)):
        body += chunk
        if len(body) > limit:
            raise BodyTooLargeError
    return bytes(body)


def _resource(name: str) -> bytes:
    """A file shipped in the package (stream/static), so it works installed too."""
    return resources.files("stream").joinpath("static", name).read_bytes()


async def _live_snapshot(
    app: Any, account_id: str, request: Request
) -> tuple[dict[str, Any] | None, str | None]:
    """The account's snapshot from the worker that owns it (table-routed), if reachable,
    asked with the caller's token."""
    base = str(app.conf.canonical_url).rstrip("/")
    url = f"{base}/accounts/{quote(account_id, safe='')}"
    timeout = aiohttp.ClientTimeout(total=SNAPSHOT_TIMEOUT_S)
    headers = forwarded_auth(request)
    try:
        async with app.http_client.get(url, timeout=timeout, headers=headers) as response:
            if response.status == 404:
                return None, "no worker holds state for this account"
            if response.status == 503:  # its owner did not answer (stream/routing.py)
                unavailable: dict[str, Any] = await response.json()
                return None, f"live snapshot unavailable: {unavailable.get('detail')}"
            response.raise_for_status()
            body: dict[str, Any] = await response.json()
            return body, None
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        return None, f"live snapshot unavailable: {type(exc).__name__}: {exc}"


def _error(
    view: View,
    status: int,
    error: str,
    detail: str,
    *,
    field: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> Response:
    body = {"error": error, "detail": detail}
    if field is not None:
        body["field"] = field
    response: Response = view.json(body, status=status, headers=dict(headers or {}))
    return response


async def _not_allowed(view: View, request: Request, **params: str) -> Response:
    detail = f"{request.method} is not allowed on {request.url.path}"
    return _error(view, 405, "method not allowed", detail)


async def _no_such_path(view: View, request: Request, **params: str) -> Response:
    return _error(view, 404, "not found", f"no such API path {request.url.path}")


def _unknown(fingerprint: str) -> Reply:
    return 404, {"error": "not found", "detail": f"no open alert with fingerprint {fingerprint}"}


def _json_object(raw: bytes) -> dict[str, Any]:
    if not raw.strip():
        return {}
    try:
        body = codec.loads(raw)
    except codec.JSONDecodeError:
        raise InputError("body", "expected a JSON object") from None
    if not isinstance(body, dict):
        raise InputError("body", "expected a JSON object")
    return body


_MAX_TEXT = {"author": 100, "reason": 500, "comment": 1000}


def _text(body: Mapping[str, Any], name: str, *, required: bool = True) -> str:
    value = body.get(name)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value.strip()):
        raise InputError(name, "required, a non-empty string" if required else "must be a string")
    if len(value) > _MAX_TEXT[name]:
        raise InputError(name, f"at most {_MAX_TEXT[name]} characters")
    return value.strip()


def _optional(body: Mapping[str, Any], name: str) -> str | None:
    value = body.get(name)
    if value is not None and not isinstance(value, str):
        raise InputError(name, "must be a string")
    return value


def _limit(query: Mapping[str, str], default: int = 50) -> int:
    raw = query.get("limit", str(default))
    if not _whole_number(raw) or not 1 <= int(raw) <= MAX_LIMIT:
        raise InputError(
            "limit", f"expected a whole number from 1 to {MAX_LIMIT}, got {raw[:20]!r}"
        )
    return int(raw)


def _offset(query: Mapping[str, str]) -> int:
    raw = query.get("offset", "0")
    if not _whole_number(raw) or int(raw) > MAX_OFFSET:
        raise InputError(
            "offset", f"expected a whole number from 0 to {MAX_OFFSET}, got {raw[:20]!r}"
        )
    return int(raw)


def _whole_number(raw: str) -> bool:
    """ASCII digits, few enough for ``int``: Python refuses strings of over 4,300 digits
    with a ValueError, which answered a plain-text 500."""
    return raw.isascii() and raw.isdigit() and len(raw) <= 12


def _flag(query: Mapping[str, str], name: str) -> bool:
    raw = query.get(name, "false").lower()
    if raw not in ("true", "false", "1", "0"):
        raise InputError(name, f"expected true or false, got {raw!r}")
    return raw in ("true", "1")


def _choice(query: Mapping[str, str], name: str, choices: tuple[str, ...]) -> str | None:
    raw = query.get(name) or None
    if raw is not None and raw not in choices:
        raise InputError(name, f"expected one of {', '.join(choices)}, got {raw!r}")
    return raw


def _now_iso(clock: Clock) -> str | None:
    return iso(clock.now())
