"""Alert events as Slack Block Kit messages: one alert in detail, or a digest.

Slack rejects a whole message when one block breaks a limit, and an alert nobody
receives is worse than a shortened one, so every limit is met by cutting, never by
failing: at most 50 blocks per message (a digest ends with "…and 17 more alerts not
shown"); a header's plain text at most 150 characters; a section's text at most 3000,
its fields at most 10 of 2000 each; a context at most 10 elements; a button's text at
most 75 and its URL at most 3000 (a longer URL is dropped, since a cut one is broken).
Cut text ends in "…".

Everything that comes from an event (names, summaries, evidence) is escaped for
mrkdwn (``&``, ``<``, ``>``, Slack's rules) before it meets our own ``<url|text>``
link syntax, and a cut never splits an escape or a link.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from alerts.render.common import (
    RenderOptions,
    account_link,
    account_name,
    alert_facts,
    by_urgency,
    clip,
    evidence_lines,
    format_value,
    headline,
    last_seen_lines,
    resolved_by_fact,
    severity,
    status_fact,
    status_tag,
    transition,
)

__all__ = ["MAX_BLOCKS", "escape", "slack_message"]

MAX_BLOCKS = 50
HEADER_MAX = 150
TEXT_MAX = 3000
FIELDS_MAX = 10
FIELD_MAX = 2000
CONTEXT_MAX = 10
BUTTON_TEXT_MAX = 75
URL_MAX = 3000
FALLBACK_MAX = 3000

EVIDENCE_FIELDS_MAX = 3 * FIELDS_MAX
"""A single alert shows at most three sections of evidence; no rule produces more."""
DIGEST_SUMMARY_MAX = 300
"""A digest entry is compact: a long summary is cut, the detail is one click away."""

_EMOJI = {
    "critical": ":red_circle:",
    "error": ":red_circle:",
    "warning": ":large_orange_circle:",
    "info": ":large_blue_circle:",
}
_RESOLVED_EMOJI = ":white_check_mark:"


def slack_message(
    alerts: Sequence[Mapping[str, Any]], options: RenderOptions, *, title: str | None = None
) -> dict[str, Any]:
    """``{"text": fallback, "blocks": [...]}`` for ``chat.postMessage`` or a webhook:
    one alert in detail, several as a digest titled ``title`` (default: how many
    accounts need attention; a single alert's header is its own). Raises
    ``ValueError`` only for an empty ``alerts``."""
    if not alerts:
        raise ValueError("no alerts to render")
    if len(alerts) == 1:
        alert = alerts[0]
        text = f"[{status_tag(alert)}] {headline(alert)} — {_summary(alert)}"
        return {"text": _clip(escape(text), FALLBACK_MAX), "blocks": _single(alert, options)}
    ordered = by_urgency(alerts)
    heading = title or _digest_title(ordered)
    lines = [heading, *(f"• [{status_tag(a)}] {headline(a)}" for a in ordered)]
    return {
        "text": _clip(escape("\n".join(lines)), FALLBACK_MAX),
        "blocks": _digest(ordered, options, heading),
    }


def escape(text: str) -> str:
    """Text made literal for mrkdwn: Slack reads ``&``, ``<`` and ``>`` as markup."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


# --- one alert -----------------------------------------------------------------------


def _single(alert: Mapping[str, Any], options: RenderOptions) -> list[dict[str, Any]]:
    blocks = [
        _header(f"{_emoji(alert)} {_prefix(alert)}{headline(alert)}"),
        _section(_summary_text(alert)),
        *_field_sections(alert_facts(alert, options), FIELDS_MAX),
        *_field_sections(evidence_lines(alert), EVIDENCE_FIELDS_MAX),
    ]
    seen = last_seen_lines(alert, options.now)
    if seen:
        blocks.append(_section(_bullets("*Stakeholders last seen*", seen)))
    link = account_link(options, str(alert.get("account_id") or ""))
    if link is not None and len(link) <= URL_MAX:
        blocks.append({"type": "actions", "elements": [_button("Open in triage", link)]})
    blocks.append(_context([f"engagewatch · fingerprint `{escape(_fingerprint(alert))}`"]))
    return blocks


def _summary_text(alert: Mapping[str, Any]) -> str:
    summary = f"*{_clip(escape(_summary(alert)), TEXT_MAX // 3)}*"
    description = _annotation(alert, "description")
    if not description.strip():
        return summary
    return _clip(f"{summary}\n{escape(description)}", TEXT_MAX)


def _field_sections(pairs: list[tuple[str, str]], most: int) -> list[dict[str, Any]]:
    """Label/value pairs as sections of at most 10 fields; beyond ``most`` pairs the
    last field says how many were left out."""
    if len(pairs) > most:
        pairs = [*pairs[: most - 1], ("More", f"{len(pairs) - most + 1} more not shown")]
    fields = [
        {"type": "mrkdwn", "text": _clip(f"*{escape(label)}*\n{escape(value)}", FIELD_MAX)}
        for label, value in pairs
    ]
    return [
        {"type": "section", "fields": fields[start : start + FIELDS_MAX]}
        for start in range(0, len(fields), FIELDS_MAX)
    ]


def _bullets(heading: str, pairs: list[tuple[str, str]]) -> str:
    """A heading and one bullet per pair, as many as fit in a section's text."""
    lines = [heading]
    room = TEXT_MAX - len(heading) - 40  # leaves room for the "…and N more" line
    for shown, (label, value) in enumerate(pairs):
        line = f"• {escape(label)}: {escape(value)}"
        if len(line) + 1 > room:
            lines.append(f"…and {len(pairs) - shown} more")
            break
        lines.append(line)
        room -= len(line) + 1
    return _clip("\n".join(lines), TEXT_MAX)


# --- a digest ------------------------------------------------------------------------


def _digest_title(alerts: Sequence[Mapping[str, Any]]) -> str:
    firing = {str(a.get("account_id")) for a in alerts if transition(a) != "resolved"}
    if not firing:
        return f"{len(alerts)} alert{'s' if len(alerts) != 1 else ''} resolved"
    if len(firing) == 1:
        return "1 account needs attention"
    return f"{len(firing)} accounts need attention"


def _digest(
    alerts: Sequence[Mapping[str, Any]], options: RenderOptions, heading: str
) -> list[dict[str, Any]]:
    head = [_header(heading), _context([escape(_tally(alerts))])]
    room = MAX_BLOCKS - len(head)
    shown = alerts if len(alerts) <= room else alerts[: room - 1]
    blocks = head + [_entry(alert, options) for alert in shown]
    if len(shown) < len(alerts):
        left = len(alerts) - len(shown)
        blocks.append(_context([f"…and {left} more alert{'s' if left != 1 else ''} not shown"]))
    return blocks


def _tally(alerts: Sequence[Mapping[str, Any]]) -> str:
    """``2 critical · 1 warning · 1 resolved``."""
    counts: dict[str, int] = {}
    for alert in alerts:
        key = "resolved" if transition(alert) == "resolved" else severity(alert)
        counts[key] = counts.get(key, 0) + 1
    return " · ".join(f"{count} {key}" for key, count in counts.items())


def _entry(alert: Mapping[str, Any], options: RenderOptions) -> dict[str, Any]:
    """One alert in a digest: who, what, since when, and a link to the detail."""
    name = escape(clip(account_name(alert), 100))
    link = account_link(options, str(alert.get("account_id") or ""))
    if link is not None and len(link) <= URL_MAX:
        name = f"<{_url(link)}|{name}>"
    what = escape(clip(f"{alert.get('rule') or 'alert'} · {_status_word(alert)}", 200))
    facts = dict(alert_facts(alert, options))
    details = [" ".join(status_fact(alert, options))]
    closed = resolved_by_fact(alert)
    if closed is not None:
        details.append(" ".join(closed))
    details += [
        f"{label} {facts[label]}" for label in ("ARR", "Renewal", "Owner") if label in facts
    ]
    lines = [
        f"{_emoji(alert)} *{name}* · {what}",
        escape(clip(_summary(alert), DIGEST_SUMMARY_MAX)),
        escape(clip(" · ".join(details), 600)),
    ]
    return _section(_clip("\n".join(lines), TEXT_MAX))


# --- blocks and text -----------------------------------------------------------------


def _header(text: str) -> dict[str, Any]:
    return {
        "type": "header",
        "text": {"type": "plain_text", "text": clip(_one_line(text), HEADER_MAX), "emoji": True},
    }


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


def _context(texts: list[str]) -> dict[str, Any]:
    elements = [{"type": "mrkdwn", "text": _clip(t, TEXT_MAX)} for t in texts[:CONTEXT_MAX]]
    return {"type": "context", "elements": elements}


def _button(text: str, url: str) -> dict[str, Any]:
    return {
        "type": "button",
        "text": {"type": "plain_text", "text": clip(text, BUTTON_TEXT_MAX)},
        "url": url,
        "action_id": "engagewatch-open-triage",
    }


def _emoji(alert: Mapping[str, Any]) -> str:
    if transition(alert) == "resolved":
        return _RESOLVED_EMOJI
    return _EMOJI.get(severity(alert).lower(), ":white_circle:")


def _prefix(alert: Mapping[str, Any]) -> str:
    return {"resolved": "RESOLVED: ", "repeat": "Still firing: "}.get(transition(alert), "")


def _status_word(alert: Mapping[str, Any]) -> str:
    return "resolved" if transition(alert) == "resolved" else severity(alert)


def _summary(alert: Mapping[str, Any]) -> str:
    """The summary annotation, or the headline when the rule wrote none."""
    return _annotation(alert, "summary").strip() or headline(alert)


def _annotation(alert: Mapping[str, Any], name: str) -> str:
    annotations = alert.get("annotations")
    return format_value(annotations.get(name)) if isinstance(annotations, Mapping) else ""


def _fingerprint(alert: Mapping[str, Any]) -> str:
    return clip(str(alert.get("fingerprint") or "none"), 100)


def _one_line(text: str) -> str:
    return " ".join(text.split()) or "engagewatch alert"


def _url(url: str) -> str:
    """A URL made safe inside ``<url|text>``: escaped like text, and no ``|``."""
    return escape(url).replace("|", "%7C")


_PARTIAL_ESCAPE = re.compile(r"&[a-z]*$")


def _clip(text: str, limit: int) -> str:
    """Mrkdwn cut to ``limit`` without splitting an escape (``&amp;``) or a link."""
    if len(text) <= limit:
        return text
    cut = _PARTIAL_ESCAPE.sub("", text[: limit - 1])
    if cut.rfind("<") > cut.rfind(">"):
        cut = cut[: cut.rfind("<")]
    return cut.rstrip() + "…"
