"""Alert events as an e-mail: one alert in detail, or a digest of several.

The message is ``multipart/alternative``: a text part for terminals and filters, an
HTML part for mail clients, both written from the same facts so neither says more.
Everything from an event is HTML-escaped in the HTML part: names and summaries come
from customers' CRM records and are not to be trusted as markup.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import format_datetime
from typing import Any

from alerts.render.common import (
    RenderOptions,
    account_link,
    alert_facts,
    by_urgency,
    clip,
    evidence_lines,
    fired_for,
    format_value,
    headline,
    last_seen_lines,
    status_tag,
    transition,
)

__all__ = ["email_message"]

SUBJECT_MAX = 200
"""Mail clients show about 80 characters; longer subjects only get folded."""

_COLOURS = {"critical": "#b42318", "error": "#b42318", "warning": "#b54708", "info": "#175cd3"}
_RESOLVED_COLOUR = "#067647"


def email_message(
    alerts: Sequence[Mapping[str, Any]],
    options: RenderOptions,
    *,
    sender: str,
    recipients: Sequence[str],
    message_id: str | None = None,
) -> EmailMessage:
    """The e-mail for ``alerts``, ready for SMTP; its ``Date`` is ``options.now``.

    A single alert's message carries ``X-Engagewatch-Fingerprint`` so mail filters
    and replies can tell which alert it is. Raises ``ValueError`` for no alerts.
    """
    if not alerts:
        raise ValueError("no alerts to render")
    cards = [_card(alert, options) for alert in by_urgency(alerts)]
    heading = None if len(cards) == 1 else f"{len(cards)} alerts for your accounts"
    message = EmailMessage()
    message["Subject"] = clip(_one_line(_subject(alerts[0], heading)), SUBJECT_MAX)
    message["From"] = sender
    if recipients:
        message["To"] = ", ".join(recipients)
    message["Date"] = format_datetime(options.now)
    if message_id is not None:
        message["Message-ID"] = message_id
    if heading is None:
        message["X-Engagewatch-Fingerprint"] = _one_line(cards[0].fingerprint)
    message.set_content(_text(heading, cards))
    message.add_alternative(_html(heading, cards), subtype="html")
    return message


@dataclass(frozen=True)
class _Card:
    """One alert as the e-mail tells it; both parts are written from this."""

    title: str
    colour: str
    summary: str
    description: str
    facts: list[tuple[str, str]]
    evidence: list[tuple[str, str]]
    last_seen: list[tuple[str, str]]
    link: str | None
    fingerprint: str


def _card(alert: Mapping[str, Any], options: RenderOptions) -> _Card:
    annotations = alert.get("annotations")
    notes = annotations if isinstance(annotations, Mapping) else {}
    level = str(alert.get("severity") or "").lower()
    resolved = transition(alert) == "resolved"
    return _Card(
        title=f"[{status_tag(alert)}] {headline(alert)}",
        colour=_RESOLVED_COLOUR if resolved else _COLOURS.get(level, "#475467"),
        summary=format_value(notes.get("summary")).strip() or headline(alert),
        description=format_value(notes.get("description")).strip(),
        facts=alert_facts(alert, options),
        evidence=evidence_lines(alert),
        last_seen=last_seen_lines(alert, options.now),
        link=account_link(options, str(alert.get("account_id") or "")),
        fingerprint=str(alert.get("fingerprint") or ""),
    )


def _subject(first: Mapping[str, Any], heading: str | None) -> str:
    """``[FIRING critical] Acme Corp: champion-silent``, ``[RESOLVED] … (fired 3d 4h)``
    or, for a digest, ``[engagewatch] 4 alerts for your accounts``."""
    if heading is not None:
        return f"[engagewatch] {heading}"
    subject = f"[{status_tag(first)}] {headline(first)}"
    span = fired_for(first) if transition(first) == "resolved" else None
    return f"{subject} (fired {span})" if span else subject


def _one_line(text: str) -> str:
    """Header text: a line break in a header would end it (and start another)."""
    return " ".join(text.split())


# --- text part -----------------------------------------------------------------------


def _text(heading: str | None, cards: list[_Card]) -> str:
    blocks = [heading] if heading else []
    blocks += [_text_card(card) for card in cards]
    return "\n\n".join([*blocks, "-- \nengagewatch\n"])


def _text_card(card: _Card) -> str:
    lines = [card.title, "-" * min(len(card.title), 72), "", card.summary]
    if card.description:
        lines += ["", card.description]
    lines += ["", *(f"{label}: {value}" for label, value in card.facts)]
    for heading, pairs in (("Evidence", card.evidence), ("Stakeholders last seen", card.last_seen)):
        if pairs:
            lines += ["", f"{heading}:", *(f"  {label}: {value}" for label, value in pairs)]
    if card.link:
        lines += ["", f"Open in triage: {card.link}"]
    if card.fingerprint:
        lines += ["", f"Fingerprint: {card.fingerprint}"]
    return "\n".join(lines)


# --- HTML part -----------------------------------------------------------------------


def _html(heading: str | None, cards: list[_Card]) -> str:
    top = f'<h1 style="font-size:20px">{_e(heading)}</h1>\n' if heading else ""
    body = "\n<hr>\n".join(_html_card(card) for card in cards)
    return (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8"></head>\n'
        '<body style="font-family:Arial,Helvetica,sans-serif;font-size:14px;color:#101828">\n'
        f"{top}{body}\n"
        '<p style="color:#667085;font-size:12px">engagewatch</p>\n</body></html>\n'
    )


def _html_card(card: _Card) -> str:
    parts = [
        f'<h2 style="font-size:17px;color:{card.colour}">{_e(card.title)}</h2>',
        f"<p><strong>{_e(card.summary)}</strong></p>",
    ]
    if card.description:
        parts.append(f'<p style="white-space:pre-wrap">{_e(card.description)}</p>')
    parts.append(_table(card.facts))
    for heading, pairs in (("Evidence", card.evidence), ("Stakeholders last seen", card.last_seen)):
        if pairs:
            parts += [f'<h3 style="font-size:15px">{heading}</h3>', _table(pairs)]
    if card.link:
        parts.append(f'<p><a href="{_e(card.link)}">Open in triage</a></p>')
    if card.fingerprint:
        parts.append(
            f'<p style="color:#667085;font-size:12px">Fingerprint: {_e(card.fingerprint)}</p>'
        )
    return "\n".join(parts)


def _table(pairs: list[tuple[str, str]]) -> str:
    rows = "".join(
        f'<tr><th align="left" style="padding:2px 12px 2px 0;vertical-align:top">'
        f'{_e(label)}</th><td style="padding:2px 0">{_e(value)}</td></tr>'
        for label, value in pairs
    )
    return f'<table cellspacing="0">{rows}</table>'


def _e(text: str) -> str:
    return html.escape(text, quote=True)
