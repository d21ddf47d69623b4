"""On-call transports against real peers: PagerDuty's contract, a signed webhook, and the
real Alertmanager binary delivering to a webhook receiver."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from alerts.transports import AlertmanagerClient, Outcome, PagerDuty, SignedWebhook
from stream import codec
from tests.conftest import free_port
from tests.servers import Reply, assert_hidden
from tests.servers.alertmanager import Alertmanager, NotificationReceiver
from tests.servers.pagerduty import INTEGRATION_KEY, PagerDutyServer
from tests.servers.webhook import SECRET, SIGNATURE, WebhookReceiver, signed_headers

NOTIFY_TIMEOUT_S = 20.0
"""group_wait and group_interval are 1s; this leaves room for a slow machine."""


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


# PagerDuty -------------------------------------------------------------------------------


@pytest.fixture
async def pagerduty() -> AsyncIterator[PagerDutyServer]:
    async with PagerDutyServer() as server:
        yield server


def pd_event(action: str, dedup_key: str = "ew-acme-adoption-drop") -> dict[str, Any]:
    event: dict[str, Any] = {
        "routing_key": INTEGRATION_KEY,
        "event_action": action,
        "dedup_key": dedup_key,
    }
    if action == "trigger":
        event["payload"] = {
            "summary": "Acme Corp: weekly active users fell 42%",
            "source": "engagewatch",
            "severity": "warning",
            "timestamp": datetime.now(UTC).isoformat(),
            "custom_details": {"account_id": "acme", "wau": 336},
        }
    return event


async def test_pagerduty_trigger_then_resolve_by_dedup_key(
    session: aiohttp.ClientSession, pagerduty: PagerDutyServer
) -> None:
    transport = PagerDuty(session, timeout_s=5, url=pagerduty.url)

    triggered = await transport.send(pd_event("trigger"))
    assert pagerduty.incidents == {"ew-acme-adoption-drop": "trigger"}
    resolved = await transport.send(pd_event("resolve"))

    for attempt in (triggered, resolved):
        assert (attempt.outcome, attempt.status) == (Outcome.DELIVERED, 202)
        assert "dedup_key=ew-acme-adoption-drop" in attempt.detail
    assert pagerduty.incidents == {"ew-acme-adoption-drop": "resolve"}


async def test_pagerduty_invalid_event_is_permanent_with_the_apis_errors(
    session: aiohttp.ClientSession, pagerduty: PagerDutyServer
) -> None:
    event = pd_event("trigger")
    del event["payload"]["severity"]

    attempt = await PagerDuty(session, timeout_s=5, url=pagerduty.url).send(event)

    assert (attempt.outcome, attempt.status) == (Outcome.PERMANENT, 400)
    assert "Event object is invalid" in attempt.detail
    assert "'payload.severity' is invalid" in attempt.detail
    assert pagerduty.events == []


@pytest.mark.parametrize("reply", [Reply(429, ""), Reply(500, ""), Reply(502, "Bad Gateway")])
async def test_pagerduty_throttling_and_outages_are_retry(
    session: aiohttp.ClientSession, pagerduty: PagerDutyServer, reply: Reply
) -> None:
    pagerduty.script.push(reply)

    attempt = await PagerDuty(session, timeout_s=5, url=pagerduty.url).send(pd_event("trigger"))

    assert (attempt.outcome, attempt.status) == (Outcome.RETRY, reply.status)


async def test_pagerduty_routing_key_stays_secret(
    session: aiohttp.ClientSession, pagerduty: PagerDutyServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    key = "S3CRETR0UT1NGKEYS3CRETR0UT1NGKY"
    event = pd_event("trigger") | {"routing_key": key}
    # A peer that echoes the key back (proxies and error pages do) must not leak it either.
    pagerduty.script.push(Reply(400, {"status": "invalid event", "errors": [f"bad key {key}"]}))
    transports = [
        PagerDuty(session, timeout_s=5, url=pagerduty.url),
        PagerDuty(session, timeout_s=5, url=f"http://127.0.0.1:{free_port()}/v2/enqueue"),
    ]

    for transport in transports:
        attempt = await transport.send(event)
        assert attempt.outcome is not Outcome.DELIVERED
        assert_hidden(key, detail=attempt.detail, repr=repr(transport), logs=caplog.text)
    assert any(r.name.startswith("alerts.transports") for r in caplog.records)


# Signed webhook --------------------------------------------------------------------------


@pytest.fixture
async def webhook() -> AsyncIterator[WebhookReceiver]:
    async with WebhookReceiver() as receiver:
        yield receiver


BODY = codec.dumps({"status": "firing", "account_id": "acme", "rule": "adoption_drop"})


async def test_signed_webhook_is_accepted_byte_for_byte(
    session: aiohttp.ClientSession, webhook: WebhookReceiver
) -> None:
    attempt = await SignedWebhook(session, webhook.url, timeout_s=5).send(
        BODY, signed_headers(SECRET, BODY)
    )

    assert (attempt.outcome, attempt.status) == (Outcome.DELIVERED, 200)
    assert webhook.accepted == [BODY]


async def test_tampered_signature_is_rejected_and_permanent(
    session: aiohttp.ClientSession, webhook: WebhookReceiver
) -> None:
    headers = signed_headers(SECRET, BODY)
    headers[SIGNATURE] = headers[SIGNATURE][:-4] + "0000"

    attempt = await SignedWebhook(session, webhook.url, timeout_s=5).send(BODY, headers)

    assert (attempt.outcome, attempt.status) == (Outcome.PERMANENT, 401)
    assert "bad signature" in attempt.detail
    assert webhook.accepted == []


async def test_webhook_url_token_stays_secret(
    session: aiohttp.ClientSession, webhook: WebhookReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    token = "tok_9f8e7d6c5b4a39281706f5e4d3c2b1a0"
    transports = [
        SignedWebhook(session, f"{webhook.url}?token={token}", timeout_s=5),  # 401: unsigned
        SignedWebhook(session, f"http://127.0.0.1:{free_port()}/hooks/{token}", timeout_s=5),
    ]

    for transport in transports:
        attempt = await transport.send(BODY, {"Content-Type": "application/json"})
        assert attempt.outcome is not Outcome.DELIVERED
        assert_hidden(token, detail=attempt.detail, repr=repr(transport), logs=caplog.text)
    assert any(r.name.startswith("alerts.transports") for r in caplog.records)


# Alertmanager ----------------------------------------------------------------------------


@pytest.fixture
async def notifications() -> AsyncIterator[NotificationReceiver]:
    async with NotificationReceiver() as receiver:
        yield receiver


@pytest.fixture
async def alertmanager(
    tmp_path: Path, notifications: NotificationReceiver
) -> AsyncIterator[Alertmanager]:
    async with Alertmanager(tmp_path, notifications.url) as running:
        yield running


LABELS = {
    "alertname": "AdoptionDrop",
    "account_id": "acme",
    "severity": "warning",
    "engagewatch_fingerprint": "5b1f0c2a9e7d4c3b",
}


def of_ours(status: str) -> Any:
    def matches(notification: dict[str, Any]) -> bool:
        return notification["status"] == status and any(
            alert["labels"] == LABELS for alert in notification["alerts"]
        )

    return matches


async def test_alertmanager_receives_fires_and_resolves(
    session: aiohttp.ClientSession,
    alertmanager: Alertmanager,
    notifications: NotificationReceiver,
) -> None:
    client = AlertmanagerClient(session, alertmanager.url, timeout_s=5)
    starts_at = datetime.now(UTC) - timedelta(minutes=5)
    firing = {
        "labels": LABELS,
        "annotations": {"summary": "Acme Corp: weekly active users fell 42%"},
        "startsAt": starts_at.isoformat(),
        "generatorURL": "https://ew.example.com/alerts/5b1f0c2a9e7d4c3b",
    }

    attempt = await client.send([firing])

    assert (attempt.outcome, attempt.status) == (Outcome.DELIVERED, 200)
    async with session.get(
        f"{alertmanager.url}/api/v2/alerts",
        params={"filter": 'engagewatch_fingerprint="5b1f0c2a9e7d4c3b"'},
        timeout=aiohttp.ClientTimeout(total=5),
    ) as response:
        stored = await response.json()
    assert [(a["labels"], a["status"]["state"]) for a in stored] == [(LABELS, "active")]
    fired = await notifications.wait_for(of_ours("firing"), NOTIFY_TIMEOUT_S, "firing")
    assert fired["alerts"][0]["annotations"]["summary"].startswith("Acme Corp")

    ended = {"labels": LABELS, "startsAt": starts_at.isoformat()}
    ended["endsAt"] = (datetime.now(UTC) - timedelta(seconds=1)).isoformat()
    attempt = await client.send([ended])

    assert attempt.outcome is Outcome.DELIVERED
    await notifications.wait_for(of_ours("resolved"), NOTIFY_TIMEOUT_S, "resolved")


async def test_alertmanager_rejects_a_malformed_alert_permanently(
    session: aiohttp.ClientSession, alertmanager: Alertmanager
) -> None:
    attempt = await AlertmanagerClient(session, alertmanager.url, timeout_s=5).send(
        [{"labels": {}, "startsAt": datetime.now(UTC).isoformat()}]
    )

    assert (attempt.outcome, attempt.status) == (Outcome.PERMANENT, 400)


async def test_alertmanager_credentials_stay_secret(
    session: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    token, password = "Bearer am-proxy-0123456789abcdef", "hunter2hunter2"
    down = f"127.0.0.1:{free_port()}"
    transports = [
        AlertmanagerClient(session, f"http://{down}", headers={"Authorization": token}),
        AlertmanagerClient(session, f"http://ops:{password}@{down}"),
    ]

    for transport in transports:
        attempt = await transport.send([{"labels": LABELS}])
        assert (attempt.outcome, attempt.detail) == (Outcome.RETRY, "connection refused")
        for hidden in (token, password):
            assert_hidden(hidden, detail=attempt.detail, repr=repr(transport), logs=caplog.text)
