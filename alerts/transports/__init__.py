"""Delivery adapters: one attempt per call, classified, never retried here.

The notifier decides what to do with an :class:`Attempt` (retry after a backoff, give up,
record it); renderers produce the payloads. Transports only speak each receiver's
protocol and keep secrets out of everything they return or log.
"""

from alerts.transports.http import (
    AlertmanagerClient,
    PagerDuty,
    SignedWebhook,
    SlackBot,
    SlackWebhook,
)
from alerts.transports.outcome import Attempt, Outcome, classify_http
from alerts.transports.smtp import Smtp, SmtpConfig

__all__ = [
    "AlertmanagerClient",
    "Attempt",
    "Outcome",
    "PagerDuty",
    "SignedWebhook",
    "SlackBot",
    "SlackWebhook",
    "Smtp",
    "SmtpConfig",
    "classify_http",
]
