"""E-mail over SMTP (aiosmtplib): one connection per message, classified by reply code.

``security="starttls"`` means STARTTLS or nothing: a server (or a man in the middle) that
does not offer it gets no credentials and no message, rather than a silent fallback to
plaintext. Reply codes follow RFC 5321: 4xx is transient (retry), 5xx is permanent.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.message
import logging
import os
import ssl
from dataclasses import dataclass, field, replace
from typing import Literal

import aiosmtplib

from alerts.transports.outcome import Attempt, Outcome, Refusal, excerpt, redact

__all__ = ["Smtp", "SmtpConfig"]

log = logging.getLogger(__name__)

_STAGES: tuple[tuple[type[aiosmtplib.SMTPResponseException], str], ...] = (
    (aiosmtplib.SMTPConnectResponseError, "greeting refused"),
    (aiosmtplib.SMTPHeloError, "EHLO refused"),
    (aiosmtplib.SMTPAuthenticationError, "authentication failed"),
    (aiosmtplib.SMTPSenderRefused, "sender refused"),
    (aiosmtplib.SMTPRecipientRefused, "recipient refused"),
    (aiosmtplib.SMTPDataError, "message refused"),
)
"""Which step a reply code answered, for a detail a person can act on."""


@dataclass(frozen=True)
class SmtpConfig:
    """Where and how to submit mail; ``repr`` leaves the password out."""

    host: str
    port: int
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    security: Literal["starttls", "tls", "none"] = "starttls"
    timeout_s: float = 10.0
    tls_context: ssl.SSLContext | None = None
    """Trust for the server's certificate (default: the system's CAs)."""

    def __post_init__(self) -> None:
        if self.security not in ("starttls", "tls", "none"):
            raise ValueError(f"security must be starttls, tls or none, not {self.security!r}")
        if not 0 < self.port < 65536:
            raise ValueError(f"port must be 1-65535, not {self.port}")
        if self.timeout_s <= 0:
            raise ValueError("timeout_s must be positive")


class Smtp:
    """Submits one message per :meth:`send`; never retries, never downgrades TLS."""

    kind = "smtp"

    def __init__(self, config: SmtpConfig):
        self._config = config

    def __repr__(self) -> str:
        return f"Smtp({self._config!r})"

    async def send(self, message: email.message.EmailMessage) -> Attempt:
        """Deliver to every recipient in To/Cc/Bcc; the whole exchange is bounded in time."""
        config = self._config
        try:
            async with asyncio.timeout(config.timeout_s):
                attempt = await self._send(message)
        except TimeoutError:
            attempt = Attempt(Outcome.RETRY, f"timeout after {config.timeout_s:g}s")
        secrets = [config.password] if config.password else []
        attempt = replace(attempt, detail=redact(attempt.detail, secrets))
        log.debug("%s: %s (%s)", self.kind, attempt.outcome, attempt.detail)
        return attempt

    async def _send(self, message: email.message.EmailMessage) -> Attempt:
        config = self._config
        if config.username is not None and config.security == "none":
            return Attempt(Outcome.PERMANENT, "refusing to send credentials without TLS")
        client = aiosmtplib.SMTP(
            hostname=config.host,
            port=config.port,
            timeout=config.timeout_s,
            use_tls=config.security == "tls",
            start_tls=False,  # done below, where a missing STARTTLS is a refusal
            tls_context=config.tls_context,
        )
        try:
            await client.connect()
            await client.ehlo()
            if config.security == "starttls":
                if not client.supports_extension("starttls"):
                    return Attempt(
                        Outcome.PERMANENT,
                        "server does not offer STARTTLS; refusing to send in plaintext",
                    )
                await client.starttls()
                await client.ehlo()  # what the server said before TLS no longer counts
            if config.username is not None:
                if not client.supports_extension("auth"):
                    return Attempt(Outcome.PERMANENT, "server does not offer AUTH")
                await client.login(config.username, config.password or "")
            try:
                refused, reply = await client.send_message(message)
            except ValueError as exc:  # no From, no recipients: raised before any command
                return Attempt(Outcome.PERMANENT, f"unsendable message: {excerpt(str(exc))}")
            await _quit(client)
        except aiosmtplib.SMTPRecipientsRefused as exc:
            return _all_refused(exc)
        except aiosmtplib.SMTPResponseException as exc:
            return _reply(exc)
        except aiosmtplib.SMTPTimeoutError:
            return Attempt(Outcome.RETRY, f"timeout after {config.timeout_s:g}s")
        except (aiosmtplib.SMTPConnectError, aiosmtplib.SMTPServerDisconnected) as exc:
            return Attempt(Outcome.RETRY, _connection_text(exc))
        except aiosmtplib.SMTPNotSupported as exc:
            return Attempt(Outcome.PERMANENT, f"not supported by server: {excerpt(str(exc))}")
        except aiosmtplib.SMTPException as exc:
            # Texts of the remaining errors name no host; they may quote the server.
            return Attempt(Outcome.RETRY, f"SMTP error: {excerpt(str(exc))}")
        except ssl.SSLCertVerificationError:
            return Attempt(Outcome.RETRY, "TLS certificate verification failed")
        except ssl.SSLError:
            return Attempt(Outcome.RETRY, "TLS handshake failed")
        except OSError as exc:
            return Attempt(Outcome.RETRY, _connection_text(exc))
        finally:
            client.close()
        detail = f"250 {excerpt(reply)}".rstrip()
        refusals = tuple(
            Refusal(rcpt, _by_code(r.code), f"{r.code} {excerpt(r.message, 80)}".rstrip())
            for rcpt, r in sorted(refused.items())
        )
        if refusals:
            # Accepted for the others: retrying the message would send them a duplicate,
            # so the notifier follows up with the refused recipients alone.
            detail += "; refused: " + ", ".join(f"{r.recipient} ({r.detail})" for r in refusals)
        return Attempt(Outcome.DELIVERED, detail, 250, refused=refusals)


async def _quit(client: aiosmtplib.SMTP) -> None:
    """Say goodbye politely; the message is already accepted, so a failure here is noise."""
    with contextlib.suppress(aiosmtplib.SMTPException, OSError):
        await client.quit()


def _reply(exc: aiosmtplib.SMTPResponseException) -> Attempt:
    stage = next((text for kind, text in _STAGES if isinstance(exc, kind)), "server replied")
    detail = f"{stage}: {exc.code} {excerpt(exc.message)}".rstrip()
    return Attempt(_by_code(exc.code), detail, exc.code)


def _all_refused(exc: aiosmtplib.SMTPRecipientsRefused) -> Attempt:
    """Worth retrying if any refusal was transient (those recipients may accept later)."""
    codes = [r.code for r in exc.recipients]
    listed = ", ".join(f"{r.recipient} ({r.code} {excerpt(r.message, 80)})" for r in exc.recipients)
    transient = any(_by_code(code) is Outcome.RETRY for code in codes)
    outcome = Outcome.RETRY if transient or not codes else Outcome.PERMANENT
    return Attempt(outcome, f"all recipients refused: {listed}", codes[0] if codes else None)


def _by_code(code: int) -> Outcome:
    return Outcome.PERMANENT if 500 <= code < 600 else Outcome.RETRY


def _connection_text(exc: BaseException) -> str:
    """``connection refused`` etc. from errno; aiosmtplib's text names host and port."""
    cause = exc if isinstance(exc, OSError) and exc.errno else exc.__cause__
    if isinstance(cause, OSError) and cause.errno:
        text = os.strerror(cause.errno)
        return text[:1].lower() + text[1:]
    if isinstance(exc, aiosmtplib.SMTPServerDisconnected):
        return "server disconnected"
    return "connection failed"
