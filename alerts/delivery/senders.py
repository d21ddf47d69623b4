"""One sender per configured receiver: render the alerts its way, send them once.

The glue between the pure renderers (alerts/render) and the transports
(alerts/transports): which channel, which recipients, which payload. A sender never
retries; the notifier decides from the ``Attempt`` it returns.
"""

from __future__ import annotations

import hashlib
import logging
import ssl
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import aiohttp

from alerts.delivery.config import (
    AlertmanagerReceiver,
    EmailReceiver,
    LogReceiver,
    PagerDutyReceiver,
    Receiver,
    SlackBotReceiver,
    SlackWebhookReceiver,
    WebhookReceiver,
)
from alerts.render.common import RenderOptions
from alerts.render.email import email_message
from alerts.render.oncall import (
    alertmanager_alerts,
    pagerduty_event,
    webhook_body,
    webhook_headers,
)
from alerts.render.slack import slack_message
from alerts.transports.http import (
    AlertmanagerClient,
    PagerDuty,
    SignedWebhook,
    SlackBot,
    SlackWebhook,
)
from alerts.transports.outcome import Attempt, Outcome
from alerts.transports.smtp import Smtp, SmtpConfig
from stream.accounts import plain_address

__all__ = ["Sender", "account_target", "build_sender"]

log = logging.getLogger("engagewatch.alerts")

Alerts = Sequence[Mapping[str, Any]]
Options = Callable[[], RenderOptions]


class Sender(Protocol):
    async def send(
        self, alerts: Alerts, message_ids: Sequence[str], recipients: Sequence[str] = ()
    ) -> Attempt:
        """Send ``alerts`` as one message; ``recipients``: only these, where a receiver
        has several (a follow-up for those an SMTP server refused for a while)."""
        ...


def account_target(receiver: Receiver, alert: Mapping[str, Any]) -> str:
    """Where ``receiver`` sends this alert when that depends on its account: the
    account's Slack channel (``channel: account``) or its owner's address (``to:
    [owner]``); "" when it does not. A digest holds alerts of one target only, since
    its sender reads the target from its first alert."""
    account = alert.get("account") or {}
    if isinstance(receiver, SlackBotReceiver) and receiver.channel == "account":
        return str(account.get("slack_channel") or receiver.fallback_channel or "")
    if isinstance(receiver, EmailReceiver) and "owner" in receiver.to:
        return str(account.get("owner_email") or "")
    return ""


def build_sender(receiver: Receiver, session: aiohttp.ClientSession, options: Options) -> Sender:
    """The sender for one receiver."""
    timeout = receiver.timeout
    if isinstance(receiver, SlackWebhookReceiver):
        return _SlackWebhookSender(
            SlackWebhook(session, receiver.url.get_secret_value(), timeout_s=timeout), options
        )
    if isinstance(receiver, SlackBotReceiver):
        bot = SlackBot(
            session,
            receiver.token.get_secret_value(),
            timeout_s=timeout,
            api_base=receiver.api_base,
        )
        return _SlackBotSender(bot, receiver, options)
    if isinstance(receiver, EmailReceiver):
        server = receiver.smtp
        smtp = Smtp(
            SmtpConfig(
                host=server.host,
                port=server.port,
                username=server.username,
                password=server.password.get_secret_value() if server.password else None,
                security=server.security,
                timeout_s=timeout,
                tls_context=ssl.create_default_context(cafile=server.ca_file)
                if server.ca_file
                else None,
            )
        )
        return _EmailSender(smtp, receiver, options)
    if isinstance(receiver, AlertmanagerReceiver):
        headers = (
            {"Authorization": f"Bearer {receiver.bearer_token.get_secret_value()}"}
            if receiver.bearer_token
            else None
        )
        client = AlertmanagerClient(session, receiver.url, timeout_s=timeout, headers=headers)
        return _AlertmanagerSender(client, options, receiver.firing_ends_after)
    if isinstance(receiver, PagerDutyReceiver):
        pagerduty = PagerDuty(session, timeout_s=timeout, url=receiver.url)
        return _PagerDutySender(pagerduty, receiver.routing_key.get_secret_value(), options)
    if isinstance(receiver, WebhookReceiver):
        webhook = SignedWebhook(session, receiver.url.get_secret_value(), timeout_s=timeout)
        return _WebhookSender(webhook, receiver.secret.get_secret_value().encode(), options)
    if isinstance(receiver, LogReceiver):
        return _LogSender(receiver.name)
    raise TypeError(f"no sender for receiver type {receiver.type!r}")


class _SlackWebhookSender:
    def __init__(self, webhook: SlackWebhook, options: Options) -> None:
        self.webhook = webhook
        self.options = options

    async def send(
        self, alerts: Alerts, message_ids: Sequence[str], recipients: Sequence[str] = ()
    ) -> Attempt:
        return await self.webhook.send(slack_message(alerts, self.options()))


class _SlackBotSender:
    def __init__(self, bot: SlackBot, receiver: SlackBotReceiver, options: Options) -> None:
        self.bot = bot
        self.receiver = receiver
        self.options = options

    async def send(
        self, alerts: Alerts, message_ids: Sequence[str], recipients: Sequence[str] = ()
    ) -> Attempt:
        channel = self.receiver.channel
        if channel == "account":
            channel = account_target(self.receiver, alerts[0])
        if not channel:
            return Attempt(Outcome.PERMANENT, "the account has no slack_channel and no fallback")
        return await self.bot.send(channel, slack_message(alerts, self.options()))


class _EmailSender:
    def __init__(self, smtp: Smtp, receiver: EmailReceiver, options: Options) -> None:
        self.smtp = smtp
        self.receiver = receiver
        self.options = options

    async def send(
        self, alerts: Alerts, message_ids: Sequence[str], recipients: Sequence[str] = ()
    ) -> Attempt:
        if not recipients:
            owner = account_target(self.receiver, alerts[0])
            wanted = [owner if item == "owner" else item for item in self.receiver.to]
            recipients = list(dict.fromkeys(str(r) for r in wanted if r))
        if not recipients:
            return Attempt(Outcome.PERMANENT, "the account has no owner_email")
        # A record accepted before owner_email was checked may hold a list or a header.
        if bad := [r for r in recipients if not plain_address(r)]:
            return Attempt(Outcome.PERMANENT, f"not one plain e-mail address: {bad[0]!r}")
        message = email_message(
            alerts,
            self.options(),
            sender=self.receiver.from_,
            recipients=recipients,
            # The same message ids give the same Message-ID: a copy re-sent after a
            # crash is recognisable as the same mail.
            message_id=_message_id(message_ids),
        )
        return await self.smtp.send(message)


class _AlertmanagerSender:
    def __init__(self, client: AlertmanagerClient, options: Options, ends_after_s: float) -> None:
        self.client = client
        self.options = options
        self.ends_after = timedelta(seconds=ends_after_s)

    async def send(
        self, alerts: Alerts, message_ids: Sequence[str], recipients: Sequence[str] = ()
    ) -> Attempt:
        options = self.options()
        posted = alertmanager_alerts(alerts, options)
        # Without endsAt Alertmanager resolves a firing alert after its resolve_timeout
        # (5 m by default); we re-post only on repeats, so say how long it holds.
        ends = (options.now + self.ends_after).astimezone(UTC).isoformat().replace("+00:00", "Z")
        for alert in posted:
            alert.setdefault("endsAt", ends)
        return await self.client.send(posted)


class _PagerDutySender:
    def __init__(self, pagerduty: PagerDuty, routing_key: str, options: Options) -> None:
        self.pagerduty = pagerduty
        self.routing_key = routing_key
        self.options = options

    async def send(
        self, alerts: Alerts, message_ids: Sequence[str], recipients: Sequence[str] = ()
    ) -> Attempt:
        attempt = Attempt(Outcome.DELIVERED, "nothing to send")
        for alert in alerts:  # one event each: PagerDuty has no batch endpoint
            event = pagerduty_event(alert, self.options(), routing_key=self.routing_key)
            attempt = await self.pagerduty.send(event)
            if attempt.outcome is not Outcome.DELIVERED:
                return attempt
        return attempt


class _WebhookSender:
    def __init__(self, webhook: SignedWebhook, secret: bytes, options: Options) -> None:
        self.webhook = webhook
        self.secret = secret
        self.options = options

    async def send(
        self, alerts: Alerts, message_ids: Sequence[str], recipients: Sequence[str] = ()
    ) -> Attempt:
        body = webhook_body(alerts)
        timestamp = int(self.options().now.timestamp())
        return await self.webhook.send(body, webhook_headers(self.secret, timestamp, body))


class _LogSender:
    def __init__(self, name: str) -> None:
        self.name = name

    async def send(
        self, alerts: Alerts, message_ids: Sequence[str], recipients: Sequence[str] = ()
    ) -> Attempt:
        for alert in alerts:
            log.warning(
                "alert %s [%s] %s on %s: %s",
                alert.get("status"),
                alert.get("severity"),
                alert.get("rule"),
                alert.get("account_id"),
                (alert.get("annotations") or {}).get("summary", ""),
            )
        return Attempt(Outcome.DELIVERED, f"logged by {self.name}")


def _message_id(message_ids: Sequence[str]) -> str:
    digest = hashlib.sha256("\n".join(sorted(message_ids)).encode()).hexdigest()[:32]
    return f"<{digest}@engagewatch>"


def render_options(now: Callable[[], datetime], triage_url: str | None) -> Options:
    """Options for each send: the time of sending, the configured link base."""
    return lambda: RenderOptions(now=now(), triage_url=triage_url)
