"""Slack transports against a local server that follows Slack's published contracts."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import aiohttp
import pytest

from alerts.transports import Outcome, SlackBot, SlackWebhook
from tests.conftest import free_port
from tests.servers import Reply, assert_hidden
from tests.servers.slack import (
    API_RATELIMITED,
    INVALID_BLOCKS,
    RATE_LIMITED,
    ROLLUP_ERROR,
    SlackServer,
)

MESSAGE: dict[str, Any] = {
    "text": "Acme Corp: weekly active users fell 42% (Adoption drop, warning)",
    "blocks": [
        {"type": "header", "text": {"type": "plain_text", "text": "Adoption drop — Acme Corp"}},
        {"type": "section", "text": {"type": "mrkdwn", "text": "*WAU* 580 → 336 (-42%)"}},
    ],
}


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


@pytest.fixture
async def slack() -> AsyncIterator[SlackServer]:
    async with SlackServer() as server:
        yield server


async def test_webhook_delivers_and_slack_receives_the_message(
    session: aiohttp.ClientSession, slack: SlackServer
) -> None:
    attempt = await SlackWebhook(session, slack.webhook_url, timeout_s=5).send(MESSAGE)

    assert (attempt.outcome, attempt.status) == (Outcome.DELIVERED, 200)
    assert slack.posted == [MESSAGE]
    assert slack.webhook_requests[0].headers["Content-Type"].startswith("application/json")


@pytest.mark.parametrize(
    ("reply", "outcome", "code"),
    [
        (RATE_LIMITED, Outcome.RETRY, "rate_limited"),
        (ROLLUP_ERROR, Outcome.RETRY, "rollup_error"),
        (INVALID_BLOCKS, Outcome.PERMANENT, "invalid_blocks"),
        (Reply(403, "action_prohibited"), Outcome.PERMANENT, "action_prohibited"),
        (Reply(410, "channel_is_archived"), Outcome.PERMANENT, "channel_is_archived"),
    ],
)
async def test_webhook_classifies_slack_errors(
    session: aiohttp.ClientSession, slack: SlackServer, reply: Reply, outcome: Outcome, code: str
) -> None:
    slack.webhook_script.push(reply)

    attempt = await SlackWebhook(session, slack.webhook_url, timeout_s=5).send(MESSAGE)

    assert (attempt.outcome, attempt.status) == (outcome, reply.status)
    assert code in attempt.detail
    assert attempt.retry_after_s == (1.0 if reply is RATE_LIMITED else None)


async def test_webhook_to_an_unknown_url_is_permanent_no_service(
    session: aiohttp.ClientSession, slack: SlackServer
) -> None:
    revoked = f"{slack.base_url}/services/T00000000/B00000000/revokedrevokedrevoked000"

    attempt = await SlackWebhook(session, revoked, timeout_s=5).send(MESSAGE)

    assert (attempt.outcome, attempt.status) == (Outcome.PERMANENT, 404)
    assert "no_service" in attempt.detail


async def test_webhook_blocks_slack_rejects_are_permanent(
    session: aiohttp.ClientSession, slack: SlackServer
) -> None:
    broken = {"text": "x", "blocks": [{"type": "section"}]}  # no text, no fields

    attempt = await SlackWebhook(session, slack.webhook_url, timeout_s=5).send(broken)

    assert (attempt.outcome, attempt.status) == (Outcome.PERMANENT, 400)
    assert "invalid_blocks" in attempt.detail
    assert slack.posted == []


async def test_webhook_timeout_is_retry_and_returns_on_time(
    session: aiohttp.ClientSession, slack: SlackServer
) -> None:
    slack.webhook_script.push(Reply(200, "ok", delay_s=3.0))
    started = time.monotonic()

    attempt = await SlackWebhook(session, slack.webhook_url, timeout_s=0.3).send(MESSAGE)

    assert attempt.outcome is Outcome.RETRY
    assert attempt.detail == "timeout after 0.3s"
    assert attempt.status is None
    assert time.monotonic() - started < 2.0


async def test_bot_posts_to_a_channel_with_its_token(
    session: aiohttp.ClientSession, slack: SlackServer
) -> None:
    bot = SlackBot(session, slack.token, timeout_s=5, api_base=slack.api_base)

    attempt = await bot.send("#alerts", MESSAGE)

    assert (attempt.outcome, attempt.status) == (Outcome.DELIVERED, 200)
    assert slack.posted == [{**MESSAGE, "channel": "C0ALERTS01"}]
    request = slack.api_requests[0]
    assert request.headers["Authorization"] == f"Bearer {slack.token}"
    assert request.json() == {"channel": "#alerts", **MESSAGE}


@pytest.mark.parametrize(
    ("token", "channel", "error"),
    [
        ("xoxb-0-0-wrongwrongwrongwrongwrong", "#alerts", "invalid_auth"),
        (None, "#no-such-channel", "channel_not_found"),
    ],
)
async def test_bot_errors_slack_reports_in_the_body_are_permanent(
    session: aiohttp.ClientSession,
    slack: SlackServer,
    token: str | None,
    channel: str,
    error: str,
) -> None:
    bot = SlackBot(session, token or slack.token, timeout_s=5, api_base=slack.api_base)

    attempt = await bot.send(channel, MESSAGE)

    assert (attempt.outcome, attempt.status) == (Outcome.PERMANENT, 200)
    assert error in attempt.detail
    assert slack.posted == []


@pytest.mark.parametrize(
    ("reply", "retry_after_s"),
    [
        (API_RATELIMITED, 1.0),
        (Reply(200, {"ok": False, "error": "internal_error"}), None),
        (Reply(503, {"ok": False, "error": "service_unavailable"}), None),
    ],
)
async def test_bot_transient_errors_are_retry(
    session: aiohttp.ClientSession, slack: SlackServer, reply: Reply, retry_after_s: float | None
) -> None:
    slack.api_script.push(reply)
    bot = SlackBot(session, slack.token, timeout_s=5, api_base=slack.api_base)

    attempt = await bot.send("#alerts", MESSAGE)

    assert (attempt.outcome, attempt.status) == (Outcome.RETRY, reply.status)
    assert attempt.retry_after_s == retry_after_s


async def test_webhook_url_stays_secret(
    session: aiohttp.ClientSession, slack: SlackServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    secret = "T0SECRET/B0SECRET/hushhushhushhushhushhush"
    refused = SlackWebhook(session, f"http://127.0.0.1:{free_port()}/services/{secret}")
    wrong = SlackWebhook(session, f"{slack.base_url}/services/{secret}", timeout_s=5)

    for transport, expected in ((refused, "connection refused"), (wrong, "HTTP 404: no_service")):
        attempt = await transport.send(MESSAGE)
        assert attempt.outcome is not Outcome.DELIVERED
        assert attempt.detail == expected
        assert_hidden(secret, detail=attempt.detail, repr=repr(transport), logs=caplog.text)
    assert any(r.name.startswith("alerts.transports") for r in caplog.records)


async def test_bot_token_stays_secret(
    session: aiohttp.ClientSession, slack: SlackServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    token = "xoxb-1111111111-2222222222222-supersecretsupersecret"
    refused = SlackBot(session, token, api_base=f"http://127.0.0.1:{free_port()}/api")
    wrong = SlackBot(session, token, timeout_s=5, api_base=slack.api_base)

    for transport in (refused, wrong):
        attempt = await transport.send("#alerts", MESSAGE)
        assert attempt.outcome is not Outcome.DELIVERED
        assert_hidden(token, detail=attempt.detail, repr=repr(transport), logs=caplog.text)
    assert any(r.name.startswith("alerts.transports") for r in caplog.records)


async def test_retry_after_as_an_http_date_becomes_seconds(
    session: aiohttp.ClientSession, slack: SlackServer
) -> None:
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    slack.webhook_script.push(Reply(503, "service_unavailable", {"Retry-After": later}))

    attempt = await SlackWebhook(session, slack.webhook_url, timeout_s=5).send(MESSAGE)

    assert attempt.outcome is Outcome.RETRY
    assert attempt.retry_after_s is not None
    assert 28.0 <= attempt.retry_after_s <= 30.0
