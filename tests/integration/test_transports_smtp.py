"""The SMTP transport against a real aiosmtpd server: STARTTLS, AUTH, scripted replies."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from alerts.transports import Outcome, Smtp, SmtpConfig
from alerts.transports.outcome import Refusal
from tests.conftest import free_port
from tests.servers import assert_hidden
from tests.servers.smtp import PASSWORD, USERNAME, SmtpServer

SUBJECT = "[warning] Acme Corp — weekly active users fell 42%"
BODY = "Weekly active users: 580 → 336 (-42 %).\nOpen: https://ew.example.com/alerts/af31\n"


def alert_mail(*to: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = "EngageWatch <alerts@example.com>"
    message["To"] = ", ".join(to or ("csm@example.com",))
    message["Subject"] = SUBJECT
    message.set_content(BODY)
    message.add_alternative(f"<p>{BODY}</p>", subtype="html")
    return message


def config(server: SmtpServer, **changes: Any) -> SmtpConfig:
    settings: dict[str, Any] = {
        "host": server.host,
        "port": server.port,
        "username": USERNAME,
        "password": PASSWORD,
        "timeout_s": 5.0,
        "tls_context": server.client_tls,
    }
    return SmtpConfig(**(settings | changes))


@pytest.fixture
async def smtp(tmp_path: Path) -> AsyncIterator[SmtpServer]:
    async with SmtpServer(tmp_path) as server:
        yield server


async def test_delivers_over_starttls_with_auth_and_content_intact(smtp: SmtpServer) -> None:
    attempt = await Smtp(config(smtp)).send(alert_mail())

    assert (attempt.outcome, attempt.status) == (Outcome.DELIVERED, 250)
    assert smtp.logins == [(USERNAME, True)]
    [mail] = smtp.received
    assert mail.tls
    assert mail.rcpt_tos == ("csm@example.com",)
    assert mail.message["Subject"] == SUBJECT
    plain = mail.message.get_body(("plain",))
    assert plain is not None
    assert plain.get_content().replace("\r\n", "\n") == BODY  # SMTP sends CRLF lines


async def test_wrong_password_is_permanent_535(smtp: SmtpServer) -> None:
    attempt = await Smtp(config(smtp, password="not-the-password")).send(alert_mail())

    assert (attempt.outcome, attempt.status) == (Outcome.PERMANENT, 535)
    assert attempt.detail.startswith("authentication failed: 535")
    assert smtp.received == []


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS:UserWarning")
async def test_never_falls_back_to_plaintext_when_starttls_is_missing(tmp_path: Path) -> None:
    # This server offers AUTH without TLS: only the client's refusal keeps the password safe.
    async with SmtpServer(tmp_path, starttls=False) as plaintext:
        attempt = await Smtp(config(plaintext)).send(alert_mail())

        assert attempt.outcome is Outcome.PERMANENT
        assert "STARTTLS" in attempt.detail
        assert plaintext.logins == []
        assert plaintext.received == []


async def test_an_untrusted_certificate_is_not_accepted(smtp: SmtpServer) -> None:
    attempt = await Smtp(config(smtp, tls_context=None)).send(alert_mail())  # system CAs

    assert attempt.outcome is Outcome.RETRY
    assert attempt.detail == "TLS certificate verification failed"
    assert smtp.logins == []
    assert smtp.received == []


@pytest.mark.parametrize(
    ("stage", "reply", "outcome"),
    [
        ("rcpt", "451 4.3.0 Mailbox temporarily unavailable", Outcome.RETRY),
        ("rcpt", "550 5.1.1 No such user", Outcome.PERMANENT),
        ("data", "451 4.7.1 Greylisted, try again later", Outcome.RETRY),
        ("data", "550 5.7.1 Message rejected as spam", Outcome.PERMANENT),
    ],
)
async def test_reply_codes_decide_retry_or_permanent(
    smtp: SmtpServer, stage: str, reply: str, outcome: Outcome
) -> None:
    (smtp.rcpt_replies if stage == "rcpt" else smtp.data_replies).append(reply)

    attempt = await Smtp(config(smtp)).send(alert_mail())

    assert (attempt.outcome, attempt.status) == (outcome, int(reply[:3]))
    assert reply[4:] in attempt.detail
    assert smtp.received == []


async def test_partial_refusal_is_delivered_and_names_who_was_refused(smtp: SmtpServer) -> None:
    smtp.refuse["gone@example.com"] = "550 5.1.1 No such user"

    attempt = await Smtp(config(smtp)).send(alert_mail("csm@example.com", "gone@example.com"))

    assert attempt.outcome is Outcome.DELIVERED
    assert "refused: gone@example.com (550 5.1.1 No such user)" in attempt.detail
    assert attempt.refused == (
        Refusal("gone@example.com", Outcome.PERMANENT, "550 5.1.1 No such user"),
    )
    assert [mail.rcpt_tos for mail in smtp.received] == [("csm@example.com",)]


async def test_server_down_is_retry() -> None:
    down = SmtpConfig("127.0.0.1", free_port(), USERNAME, PASSWORD, timeout_s=5.0)

    attempt = await Smtp(down).send(alert_mail())

    assert (attempt.outcome, attempt.detail) == (Outcome.RETRY, "connection refused")


async def test_password_stays_secret(smtp: SmtpServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    secret = "Sup3r-Secret-Pa55word!"
    configs = [
        config(smtp, password=secret),  # refused with 535
        SmtpConfig("127.0.0.1", free_port(), USERNAME, secret, timeout_s=5.0),  # nobody home
    ]

    for cfg in configs:
        transport = Smtp(cfg)
        attempt = await transport.send(alert_mail())
        assert attempt.outcome is not Outcome.DELIVERED
        assert_hidden(
            secret,
            detail=attempt.detail,
            repr=repr(transport),
            config=repr(cfg),
            logs=caplog.text,
        )
    assert any(r.name.startswith("alerts.transports") for r in caplog.records)


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS:UserWarning")
async def test_credentials_are_never_sent_without_tls(tmp_path: Path) -> None:
    async with SmtpServer(tmp_path, starttls=False) as plaintext:
        attempt = await Smtp(config(plaintext, security="none")).send(alert_mail())

        assert attempt.outcome is Outcome.PERMANENT
        assert "without TLS" in attempt.detail
        assert plaintext.logins == []
        assert plaintext.received == []
