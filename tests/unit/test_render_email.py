"""E-mail rendering: subjects, headers, and the same facts in the text and HTML parts."""

from __future__ import annotations

import html
from datetime import UTC, date, datetime, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from email.utils import format_datetime
from typing import Any

import pytest

from alerts.events import alert_event
from alerts.lifecycle import AlertState, Change, ChangeKind, Status, fingerprint
from alerts.render.common import RenderOptions
from alerts.render.email import email_message
from stream.accounts import Account

NOW = datetime(2026, 11, 26, 13, tzinfo=UTC)
STARTS = datetime(2026, 11, 23, 9, tzinfo=UTC)
OPTIONS = RenderOptions(now=NOW, triage_url="https://ew.example.com")
ACME = Account(
    "acme",
    "Acme Corp",
    1000,
    owner_email="csm@example.com",
    arr=120000,
    renewal_date=date(2027, 1, 2),
)


def event(
    kind: ChangeKind = ChangeKind.FIRING,
    *,
    account: Account | None = ACME,
    account_id: str = "acme",
    summary: str = "Champion u-9 at Acme Corp has not been seen for 9 working days",
    description: str = "Last seen: u-9 2026-11-14T16:02:00Z.",
) -> dict[str, Any]:
    """A real alert event, built the way the engine builds it."""
    resolved = kind is ChangeKind.RESOLVED
    state = AlertState(
        fingerprint("champion-silent", account_id, "u-9"),
        "champion-silent",
        account_id,
        Status.RESOLVED if resolved else Status.FIRING,
        "critical",
        subject="u-9",
        starts_at=STARTS,
        ends_at=STARTS + timedelta(days=3, hours=4) if resolved else None,
        evidence={
            "metric": "missed_working_days",
            "value": 9,
            "threshold": 5,
            "last_seen": {"u-9": "2026-11-14T16:02:00Z"},
        },
        annotations={"summary": summary, "description": description},
    )
    return alert_event(Change(kind, state, NOW), account, NOW)


def render(alerts: list[dict[str, Any]], **kwargs: Any) -> EmailMessage:
    """The message as a receiving mail client parses it off the wire."""
    message = email_message(
        alerts,
        OPTIONS,
        sender="engagewatch@example.com",
        recipients=["a@x.com", "b@x.com"],
        **kwargs,
    )
    parsed = message_from_bytes(message.as_bytes(), policy=policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


def parts(message: EmailMessage) -> tuple[str, str]:
    assert message.get_content_type() == "multipart/alternative"
    text, rich = message.get_body(("plain",)), message.get_body(("html",))
    assert text is not None and rich is not None
    return text.get_content(), rich.get_content()


def test_a_single_alert_has_its_subject_headers_and_both_parts() -> None:
    alert = event()
    message = render([alert], message_id="<a1@engagewatch>")
    assert message["Subject"] == "[FIRING critical] Acme Corp: champion-silent"
    assert message["From"] == "engagewatch@example.com"
    assert message["To"] == "a@x.com, b@x.com"
    assert message["Date"] == format_datetime(NOW)
    assert message["Message-ID"] == "<a1@engagewatch>"
    assert message["X-Engagewatch-Fingerprint"] == alert["fingerprint"]
    text, rich = parts(message)
    assert text.startswith("[FIRING critical] Acme Corp: champion-silent\n")
    assert rich.startswith("<!DOCTYPE html>")


def test_a_resolution_says_how_long_it_fired_and_a_repeat_that_it_still_fires() -> None:
    resolved = render([event(ChangeKind.RESOLVED)])
    assert resolved["Subject"] == "[RESOLVED] Acme Corp: champion-silent (fired 3d 4h)"
    assert "Fired for: 3d 4h (2026-11-23 09:00 UTC to 2026-11-26 13:00 UTC)" in parts(resolved)[0]
    repeat = render([event(ChangeKind.REPEAT)])
    assert repeat["Subject"] == "[STILL FIRING critical] Acme Corp: champion-silent"
    assert "Still firing since: 2026-11-23 09:00 UTC (3 days ago)" in parts(repeat)[0]


def test_a_digest_counts_its_alerts_and_names_no_single_fingerprint() -> None:
    alerts = [event(account_id=f"a-{i}", account=None) for i in range(3)]
    message = render([*alerts, event(ChangeKind.RESOLVED)])
    assert message["Subject"] == "[engagewatch] 4 alerts for your accounts"
    assert message["X-Engagewatch-Fingerprint"] is None and message["Message-ID"] is None
    text, rich = parts(message)
    for alert in alerts:
        assert alert["fingerprint"] in text and alert["fingerprint"] in rich
    # Open alerts first, the resolution last.
    assert text.index("[FIRING critical] a-2") < text.index("[RESOLVED] Acme Corp")


def test_the_text_and_html_parts_carry_the_same_facts() -> None:
    text, rich = parts(render([event()]))
    facts = [
        "Champion u-9 at Acme Corp has not been seen for 9 working days",
        "Last seen: u-9 2026-11-14T16:02:00Z.",
        "Acme Corp",
        "$120,000",
        "2027-01-02 (in 37 days)",
        "csm@example.com",
        "champion-silent",
        "2026-11-23 09:00 UTC (3 days ago)",
        "missed_working_days",
        "Threshold",
        "2026-11-14 16:02 UTC (11 days ago)",
        "https://ew.example.com/triage/account/acme",
    ]
    for fact in facts:
        assert fact in text, fact
        assert html.escape(fact) in rich, fact


def test_markup_from_customer_records_is_escaped_in_html() -> None:
    evil = Account("acme", "<script>alert(1)</script> & Co", 1, owner_email='"><img src=x>')
    alert = event(account=evil, summary="<b>bold</b>", description="<script>x</script>")
    text, rich = parts(render([alert]))
    assert "<script>" not in rich and "<img" not in rich and "<b>" not in rich
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; Co" in rich
    assert "&quot;&gt;&lt;img src=x&gt;" in rich
    assert "<script>alert(1)</script> & Co" in text  # plain text is shown as is


def test_line_breaks_in_names_cannot_inject_headers() -> None:
    alert = event(account=Account("acme", "Acme\r\nBcc: victim@example.com", 1))
    message = render([alert])
    assert message["Bcc"] is None
    assert message["Subject"] == "[FIRING critical] Acme Bcc: victim@example.com: champion-silent"


def test_a_long_subject_is_cut() -> None:
    message = render([event(account=Account("acme", "A" * 500, 1))])
    assert len(message["Subject"]) == 200 and message["Subject"].endswith("…")


def test_missing_account_and_no_triage_url_still_render() -> None:
    message = email_message(
        [event(account=None, summary="", description="")],
        RenderOptions(now=NOW),
        sender="engagewatch@example.com",
        recipients=[],
    )
    assert message["To"] is None
    text, rich = parts(message)
    assert "Account: acme" in text and "ARR" not in text and "Open in triage" not in rich


def test_nothing_to_render_is_an_error() -> None:
    with pytest.raises(ValueError, match="no alerts"):
        email_message([], OPTIONS, sender="a@x.com", recipients=["b@x.com"])


def test_a_resolve_someone_made_says_who_and_why() -> None:
    closed = event(ChangeKind.RESOLVED)
    closed["annotations"] |= {"resolved_by": "dana", "resolve_reason": "called them, all fine"}
    text, rich = parts(render([closed]))
    assert "Resolved by: dana: called them, all fine" in text
    assert "called them, all fine" in rich
    assert "Resolved by" not in parts(render([event(ChangeKind.RESOLVED)]))[0]
