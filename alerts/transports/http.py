"""HTTP receivers: Slack (incoming webhook and Web API), Alertmanager, PagerDuty, webhooks.

Each ``send`` is one POST and a classified :class:`Attempt`; retrying is the notifier's
job. The caller owns the ``aiohttp.ClientSession`` (one pool for all receivers).

Secrets live in URLs (Slack webhooks, signed webhooks), headers (bot tokens) and bodies
(PagerDuty routing keys), and aiohttp puts the URL into its exception messages, so no
exception text ever reaches a detail or a log: details are built from the exception's
class and errno, and whatever the peer answered is scrubbed of the secrets sent to it.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import aiohttp
from multidict import CIMultiDict
from yarl import URL

from alerts.transports.outcome import Attempt, Outcome, classify_http, excerpt, redact
from stream import codec

__all__ = ["AlertmanagerClient", "PagerDuty", "SignedWebhook", "SlackBot", "SlackWebhook"]

log = logging.getLogger(__name__)

BODY_LIMIT = 64 * 1024
"""Most of an answer we read: receivers answer in a few bytes; a proxy's page can be big."""

JSON = "application/json; charset=utf-8"

SLACK_RETRYABLE_ERRORS = frozenset(
    {
        "ratelimited",
        "rate_limited",
        "internal_error",
        "fatal_error",
        "service_unavailable",
        "request_timeout",
        "team_added_to_org",
    }
)
"""Web API ``error`` codes that are Slack's trouble, not ours; every other one (bad token,
unknown channel, archived channel, invalid blocks, ...) fails the same way next time."""


class SlackWebhook:
    """A Slack incoming webhook; the whole URL is the secret."""

    kind = "slack-webhook"

    def __init__(self, session: aiohttp.ClientSession, url: str, *, timeout_s: float = 10.0):
        self._session = session
        self._url = url
        self._timeout_s = timeout_s
        self._secrets = _url_secrets(url)

    def __repr__(self) -> str:
        return f"SlackWebhook(origin={_origin(self._url)!r}, timeout_s={self._timeout_s})"

    async def send(self, message: Mapping[str, Any]) -> Attempt:
        """Slack answers ``200 ok``, or a status plus an error code (``no_service``...)."""
        answer = await _post(self._session, self._url, codec.dumps(message), {}, self._timeout_s)
        if isinstance(answer, _Answer):
            answer = classify_http(answer.status, answer.headers, answer.body)
        return _finish(self.kind, answer, self._secrets)


class SlackBot:
    """Slack's Web API ``chat.postMessage`` with a bot token (can post to any channel)."""

    kind = "slack-bot"

    def __init__(
        self,
        session: aiohttp.ClientSession,
        token: str,
        *,
        timeout_s: float = 10.0,
        api_base: str = "https://slack.com/api",
    ):
        self._session = session
        self._token = token
        self._timeout_s = timeout_s
        self._url = f"{api_base.rstrip('/')}/chat.postMessage"
        self._secrets = (token, *_url_secrets(api_base))

    def __repr__(self) -> str:
        return f"SlackBot(origin={_origin(self._url)!r}, timeout_s={self._timeout_s})"

    async def send(self, channel: str, message: Mapping[str, Any]) -> Attempt:
        """The Web API answers 200 with ``ok: false`` for most errors: read the body."""
        headers = {"Authorization": f"Bearer {self._token}"}
        body = codec.dumps({"channel": channel, **message})
        answer = await _post(self._session, self._url, body, headers, self._timeout_s)
        if isinstance(answer, _Answer):
            answer = _classify_slack_api(answer)
        return _finish(self.kind, answer, self._secrets)


class AlertmanagerClient:
    """Alertmanager's ``POST /api/v2/alerts``: it groups, dedups and routes for us."""

    kind = "alertmanager"

    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        *,
        timeout_s: float = 10.0,
        headers: Mapping[str, str] | None = None,
    ):
        self._session = session
        self._url = f"{base_url.rstrip('/')}/api/v2/alerts"
        self._timeout_s = timeout_s
        self._headers = dict(headers or {})  # e.g. Authorization for a proxy in front
        self._secrets = (*_url_secrets(base_url), *self._headers.values())

    def __repr__(self) -> str:
        return (
            f"AlertmanagerClient(origin={_origin(self._url)!r}, timeout_s={self._timeout_s}, "
            f"headers={sorted(self._headers)!r})"
        )

    async def send(self, alerts: Sequence[Mapping[str, Any]]) -> Attempt:
        """200 means stored; 400 means a malformed alert that no retry will fix."""
        body = codec.dumps(list(alerts))
        answer = await _post(self._session, self._url, body, self._headers, self._timeout_s)
        if isinstance(answer, _Answer):
            answer = classify_http(answer.status, answer.headers, answer.body)
        return _finish(self.kind, answer, self._secrets)


class PagerDuty:
    """PagerDuty Events API v2; the routing key travels in each event's body."""

    kind = "pagerduty"

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        timeout_s: float = 10.0,
        url: str = "https://events.pagerduty.com/v2/enqueue",
    ):
        self._session = session
        self._url = url
        self._timeout_s = timeout_s

    def __repr__(self) -> str:
        return f"PagerDuty(origin={_origin(self._url)!r}, timeout_s={self._timeout_s})"

    async def send(self, event: Mapping[str, Any]) -> Attempt:
        """202 accepted; 400 invalid event (permanent); 429 and 5xx worth retrying."""
        key = event.get("routing_key")
        secrets = (*_url_secrets(self._url), *([key] if isinstance(key, str) else []))
        answer = await _post(self._session, self._url, codec.dumps(event), {}, self._timeout_s)
        if isinstance(answer, _Answer):
            answer = _classify_pagerduty(answer)
        return _finish(self.kind, answer, secrets)


class SignedWebhook:
    """A generic webhook: posts a body someone else rendered and signed, as it is."""

    kind = "webhook"

    def __init__(self, session: aiohttp.ClientSession, url: str, *, timeout_s: float = 10.0):
        self._session = session
        self._url = url
        self._timeout_s = timeout_s
        self._secrets = _url_secrets(url)

    def __repr__(self) -> str:
        return f"SignedWebhook(origin={_origin(self._url)!r}, timeout_s={self._timeout_s})"

    async def send(self, body: bytes, headers: Mapping[str, str]) -> Attempt:
        """The bytes are sent untouched: the signature covers exactly these bytes."""
        answer = await _post(self._session, self._url, body, headers, self._timeout_s)
        if isinstance(answer, _Answer):
            answer = classify_http(answer.status, answer.headers, answer.body)
        return _finish(self.kind, answer, (*self._secrets, *headers.values()))


@dataclass(frozen=True)
class _Answer:
    status: int
    headers: Mapping[str, str]
    body: str


async def _post(
    session: aiohttp.ClientSession,
    url: str,
    body: bytes,
    headers: Mapping[str, str],
    timeout_s: float,
) -> _Answer | Attempt:
    """One POST: the peer's answer, or an :class:`Attempt` for a failure without one."""
    try:
        async with session.post(
            url,
            data=body,
            headers=_with_defaults(headers),
            timeout=aiohttp.ClientTimeout(total=timeout_s),
            allow_redirects=False,
        ) as response:
            raw = await _read_capped(response)
            text = raw.decode(response.charset or "utf-8", errors="replace")
            return _Answer(response.status, response.headers, text)
    except TimeoutError:  # aiohttp's own timeouts subclass it too
        return Attempt(Outcome.RETRY, f"timeout after {timeout_s:g}s")
    except aiohttp.ClientError as exc:
        return _client_error(exc)
    except OSError as exc:
        return Attempt(Outcome.RETRY, _os_error_text(exc, "connection failed"))
    except LookupError:  # an unknown charset in the answer
        return Attempt(Outcome.RETRY, "answer in an unknown charset")
    except ValueError:  # e.g. credentials in the URL and an Authorization header
        return Attempt(Outcome.PERMANENT, "invalid request (check the URL and headers)")


def _with_defaults(headers: Mapping[str, str]) -> CIMultiDict[str]:
    """JSON unless the caller says otherwise, whatever case its header names are in."""
    merged = CIMultiDict({"Content-Type": JSON})
    merged.update(headers)
    return merged


async def _read_capped(response: aiohttp.ClientResponse) -> bytes:
    body = bytearray()
    async for chunk in response.content.iter_chunked(8192):
        body += chunk
        if len(body) >= BODY_LIMIT:
            break
    return bytes(body[:BODY_LIMIT])


def _client_error(exc: aiohttp.ClientError) -> Attempt:
    """Describe an aiohttp failure by its class: its message would include the URL."""
    if isinstance(exc, aiohttp.InvalidURL | aiohttp.NonHttpUrlClientError):
        return Attempt(Outcome.PERMANENT, "invalid URL (not an absolute http(s) URL)")
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        detail = "TLS certificate verification failed"
    elif isinstance(exc, aiohttp.ClientSSLError):
        detail = "TLS handshake failed"
    elif isinstance(exc, aiohttp.ClientConnectorDNSError) or (
        isinstance(exc, aiohttp.ClientConnectorError) and isinstance(exc.os_error, socket.gaierror)
    ):
        detail = "name resolution failed"
    elif isinstance(exc, aiohttp.ClientConnectorError):
        detail = _os_error_text(exc.os_error, "connection failed")
    elif isinstance(exc, aiohttp.ServerDisconnectedError):
        detail = "server disconnected without answering"
    elif isinstance(exc, aiohttp.ClientOSError):
        detail = _os_error_text(exc, "connection error")
    elif isinstance(exc, aiohttp.ClientPayloadError):
        detail = "answer body truncated or malformed"
    elif isinstance(exc, aiohttp.ClientResponseError):
        detail = f"malformed answer ({type(exc).__name__})"
    else:
        detail = f"request failed ({type(exc).__name__})"
    return Attempt(Outcome.RETRY, detail)


def _os_error_text(exc: OSError, fallback: str) -> str:
    """``connection refused`` and the like, from errno: ``str(exc)`` names host and port."""
    if exc.errno is None or exc.errno not in errno.errorcode:
        return fallback
    text = os.strerror(exc.errno)
    return text[:1].lower() + text[1:]


def _classify_slack_api(answer: _Answer) -> Attempt:
    """Web API errors come as ``{"ok": false, "error": code}``, mostly with HTTP 200."""
    try:
        data = codec.loads(answer.body) if answer.body else None
    except codec.JSONDecodeError:
        data = None
    if not isinstance(data, dict) or not isinstance(data.get("ok"), bool):
        attempt = classify_http(answer.status, answer.headers, answer.body)
        if attempt.outcome is Outcome.DELIVERED:  # 2xx but not the Web API talking
            return replace(
                attempt, outcome=Outcome.RETRY, detail=f"unexpected answer: {attempt.detail}"
            )
        return attempt
    if data["ok"] and 200 <= answer.status < 300:
        return Attempt(Outcome.DELIVERED, f"HTTP {answer.status}: ok", answer.status)
    error = excerpt(str(data.get("error") or "unknown_error"))
    by_status = classify_http(answer.status, answer.headers, "")
    if error in SLACK_RETRYABLE_ERRORS or by_status.outcome is Outcome.RETRY:
        return Attempt(
            Outcome.RETRY, f"HTTP {answer.status}: {error}", answer.status, by_status.retry_after_s
        )
    return Attempt(Outcome.PERMANENT, f"HTTP {answer.status}: {error}", answer.status)


def _classify_pagerduty(answer: _Answer) -> Attempt:
    """Classify by status; describe with the body's ``message``/``errors``/``dedup_key``."""
    attempt = classify_http(answer.status, answer.headers, answer.body)
    try:
        data = codec.loads(answer.body) if answer.body else None
    except codec.JSONDecodeError:
        return attempt
    if not isinstance(data, dict):
        return attempt
    parts = [str(data.get("message") or data.get("status") or "")]
    if isinstance(errors := data.get("errors"), list) and errors:
        parts.append("; ".join(str(e) for e in errors))
    if isinstance(dedup_key := data.get("dedup_key"), str):
        parts.append(f"dedup_key={dedup_key}")
    summary = excerpt(": ".join(p for p in parts if p))
    detail = f"HTTP {answer.status}: {summary}" if summary else f"HTTP {answer.status}"
    return replace(attempt, detail=detail)


def _finish(kind: str, attempt: Attempt, secrets: Iterable[str]) -> Attempt:
    attempt = replace(attempt, detail=redact(attempt.detail, secrets))
    log.debug("%s: %s (%s)", kind, attempt.outcome, attempt.detail)
    return attempt


def _origin(url: str) -> str:
    """Scheme, host and port: enough to tell receivers apart, never a path or password."""
    try:
        parsed = URL(url)
        return str(parsed.origin()) if parsed.absolute else "<relative URL>"
    except ValueError:
        return "<invalid URL>"


def _url_secrets(url: str) -> tuple[str, ...]:
    """The parts of a URL that may be secret, to scrub from anything a peer echoes."""
    secrets = [url]
    try:
        parsed = URL(url)
    except ValueError:
        return tuple(secrets)
    secrets += [parsed.raw_path_qs, parsed.path_qs]
    secrets += [part for part in parsed.parts if len(part) >= 16]
    secrets += [value for value in parsed.query.values() if len(value) >= 16]
    secrets += [s for s in (parsed.user, parsed.password, parsed.raw_user) if s]
    return tuple(s for s in secrets if s not in ("", "/"))
