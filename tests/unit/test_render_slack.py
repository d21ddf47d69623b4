"""Slack rendering, and the shared facts it shows: every payload is checked against
slack_sdk's own Block Kit models and Slack's message limits."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from slack_sdk.models.blocks import Block

from alerts.events import alert_event
from alerts.lifecycle import AlertState, Change, ChangeKind, Status, fingerprint
from alerts.render.common import (
    RenderOptions,
    account_link,
    evidence_lines,
    format_duration,
    format_number,
    transition,
)
from alerts.render.slack import escape, slack_message
from stream.accounts import Account

NOW = datetime(2026, 11, 26, 13, tzinfo=UTC)
STARTS = datetime(2026, 11, 23, 9, tzinfo=UTC)
OPTIONS = RenderOptions(now=NOW, triage_url="https://ew.example.com/")
ACME = Account(
    "acme",
    "Acme Corp",
    1000,
    owner_email="csm@example.com",
    segment="enterprise",
    arr=120000,
    renewal_date=date(2027, 1, 2),
)
EVIDENCE = {
    "metric": "missed_working_days",
    "value": 9,
    "threshold": 5,
    "baseline": 0.8,
    "last_seen": {"u-9": "2026-11-14T16:02:00Z"},
}


def event(
    kind: ChangeKind = ChangeKind.FIRING,
    *,
    account: Account | None = ACME,
    account_id: str = "acme",
    rule: str = "champion-silent",
    severity: str = "warning",
    evidence: dict[str, Any] | None = None,
    summary: str = "Champion u-9 at Acme Corp has not been seen for 9 working days",
    description: str = "Last seen: u-9 2026-11-14T16:02:00Z.",
) -> dict[str, Any]:
    """A real alert event, built the way the engine builds it."""
    resolved = kind is ChangeKind.RESOLVED
    state = AlertState(
        fingerprint(rule, account_id, "u-9"),
        rule,
        account_id,
        Status.RESOLVED if resolved else Status.FIRING,
        severity,
        subject="u-9",
        starts_at=STARTS,
        ends_at=STARTS + timedelta(days=3, hours=4) if resolved else None,
        evidence=EVIDENCE if evidence is None else evidence,
        labels={"rule": rule, "account_id": account_id},
        annotations={"summary": summary, "description": description},
    )
    return alert_event(Change(kind, state, NOW), account, NOW)


def valid(payload: dict[str, Any]) -> list[dict[str, Any]]:
    """The payload's blocks, after checking them against Slack's models and limits."""
    blocks: list[dict[str, Any]] = payload["blocks"]
    assert 1 <= len(blocks) <= 50
    assert 0 < len(payload["text"]) <= 3000
    for raw, block in zip(blocks, Block.parse_all(blocks), strict=True):
        block.validate_json()
        assert block.to_dict() == raw
        for field in raw.get("fields", []):
            assert 0 < len(field["text"]) <= 2000
        assert len(raw.get("elements", [])) <= 10
    for text in [payload["text"], *mrkdwn(blocks)]:
        assert_escaped(text)
    return blocks


def mrkdwn(blocks: list[dict[str, Any]]) -> list[str]:
    texts = []
    for block in blocks:
        objects = [block.get("text"), *block.get("fields", []), *block.get("elements", [])]
        texts += [o["text"] for o in objects if o and o.get("type") == "mrkdwn"]
    return texts


LINK = re.compile(r"<https://[^<>|\s]+\|[^<>]*>")


def assert_escaped(text: str) -> None:
    """Only our own links are markup; every other <, > and & is escaped."""
    bare = LINK.sub("", text)
    assert "<" not in bare and ">" not in bare, text
    assert re.fullmatch(r"([^&]|&(amp|lt|gt);)*", bare, re.DOTALL), text


def all_text(blocks: list[dict[str, Any]]) -> str:
    header = [b["text"]["text"] for b in blocks if b["type"] == "header"]
    return "\n".join(header + mrkdwn(blocks))


# --- shared facts --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("span", "text"),
    [
        (timedelta(days=3, hours=4, minutes=5), "3d 4h"),
        (timedelta(days=3, minutes=5), "3d"),
        (timedelta(hours=5, minutes=12, seconds=9), "5h 12m"),
        (timedelta(seconds=42), "42s"),
        (timedelta(0), "0s"),
        (timedelta(seconds=-5), "0s"),
    ],
)
def test_durations_show_their_two_largest_units(span: timedelta, text: str) -> None:
    assert format_duration(span) == text


def test_numbers_read_like_a_person_wrote_them() -> None:
    assert [format_number(x) for x in (16, 16.0, 1234567, 7.857, 12.345, 0.222, 0.01234)] == [
        "16",
        "16",
        "1,234,567",
        "7.86",
        "12.3",
        "0.222",
        "0.0123",
    ]


def test_evidence_shows_rates_and_changes_as_percentages() -> None:
    usage = {"metric": "daily_usage_rate", "value": 0.085, "threshold": 0.1}
    assert evidence_lines({"evidence": usage}) == [
        ("Metric", "daily_usage_rate"),
        ("Value", "8.5%"),
        ("Threshold", "10%"),
    ]
    drop = {"metric": "active_users_7d_mean", "value": 3.0, "baseline": 7.857, "change": -0.618}
    assert evidence_lines({"evidence": {**drop, "threshold": -0.5}}) == [
        ("Metric", "active_users_7d_mean"),
        ("Value", "3"),
        ("Threshold", "-50%"),
        ("Baseline", "7.86"),
        ("Change", "-61.8%"),
    ]
    silent = {**EVIDENCE, "working_weekdays": [0, 1, 4], "reason": None}
    assert evidence_lines({"evidence": silent})[-1] == ("Working weekdays", "Mon, Tue, Fri")
    assert evidence_lines({"evidence": None}) == []


def test_transitions_and_links() -> None:
    assert [transition(event(kind)) for kind in ChangeKind] == ["firing", "repeat", "resolved"]
    assert account_link(OPTIONS, "a/b c") == "https://ew.example.com/triage/account/a%2Fb%20c"
    assert account_link(RenderOptions(now=NOW), "acme") is None


# --- one alert -----------------------------------------------------------------------


def test_a_firing_alert_shows_who_what_and_since_when() -> None:
    blocks = valid(slack_message([event()], OPTIONS))
    assert blocks[0]["text"]["text"] == ":large_orange_circle: Acme Corp: champion-silent"
    text = all_text(blocks)
    for fact in (
        "*ARR*\n$120,000",
        "*Renewal*\n2027-01-02 (in 37 days)",
        "*Owner*\ncsm@example.com",
        "*Severity*\nwarning",
        "*Firing since*\n2026-11-23 09:00 UTC (3 days ago)",
        "*Value*\n9",
        "*Threshold*\n5",
        "*Baseline*\n0.8",
        "• u-9: 2026-11-14 16:02 UTC (11 days ago)",
        "Champion u-9 at Acme Corp has not been seen for 9 working days",
    ):
        assert fact in text
    button = blocks[-2]["elements"][0]
    assert button["url"] == "https://ew.example.com/triage/account/acme"
    assert button["text"]["text"] == "Open in triage"


def test_a_resolved_alert_is_marked_and_says_how_long_it_fired() -> None:
    blocks = valid(slack_message([event(ChangeKind.RESOLVED)], OPTIONS))
    assert blocks[0]["text"]["text"].startswith(":white_check_mark: RESOLVED: Acme Corp")
    assert "*Fired for*\n3d 4h (2026-11-23 09:00 UTC to 2026-11-26 13:00 UTC)" in all_text(blocks)


def test_a_repeat_says_it_is_still_firing() -> None:
    blocks = valid(slack_message([event(ChangeKind.REPEAT, severity="critical")], OPTIONS))
    assert blocks[0]["text"]["text"].startswith(":red_circle: Still firing: Acme Corp")
    assert "*Still firing since*\n2026-11-23 09:00 UTC (3 days ago)" in all_text(blocks)


def test_no_account_no_evidence_and_no_triage_url_still_render() -> None:
    alert = event(account=None, evidence={}, summary="", description="")
    blocks = valid(slack_message([alert], RenderOptions(now=NOW)))
    assert blocks[0]["text"]["text"].endswith("acme: champion-silent")
    text = all_text(blocks)
    assert "*Account*\nacme" in text and "ARR" not in text and "Value" not in text
    assert all(b["type"] != "actions" for b in blocks)


def test_a_huge_description_is_cut_to_the_section_limit() -> None:
    blocks = valid(slack_message([event(description="x" * 10_000)], OPTIONS))
    text = blocks[1]["text"]["text"]
    assert len(text) == 3000 and text.endswith("…")


def test_markup_in_names_and_texts_is_escaped_never_cut_mid_escape() -> None:
    evil = Account("acme", "<!channel> & <b>Evil</b> " + "&" * 400, 10, owner_email="<x>")
    alert = event(account=evil, summary="<@U123> & co", description="<https://x|click> " * 500)
    for payload in (
        slack_message([alert], OPTIONS),
        slack_message([alert, event(account=evil)], OPTIONS),
    ):
        text = "\n".join(mrkdwn(valid(payload)))
        assert "<!channel>" not in text and "&lt;!channel&gt;" in text
        assert "<@U123>" not in text and "&lt;@U123&gt; &amp; co" in text
    header = slack_message([alert], OPTIONS)["blocks"][0]["text"]["text"]
    assert len(header) == 150 and header.endswith("…")
    assert "<!channel> & <b>Evil</b>" in header  # plain_text is shown as is


def test_many_stakeholders_are_listed_oldest_first_as_many_as_fit() -> None:
    seen = {f"u-{i:03}": (NOW - timedelta(hours=i * 7 % 500)).isoformat() for i in range(500)}
    blocks = valid(slack_message([event(evidence={**EVIDENCE, "last_seen": seen})], OPTIONS))
    listing = next(
        b for b in blocks if "Stakeholders last seen" in b.get("text", {}).get("text", "")
    )
    lines = listing["text"]["text"].splitlines()
    assert re.fullmatch(r"…and \d+ more", lines[-1])
    shown = [line for line in lines if line.startswith("• ")]
    assert len(shown) + int(lines[-1].split()[1]) == 500
    assert shown[0].startswith(f"• {min(seen, key=seen.__getitem__)}: ")
    assert "(20 days ago)" in shown[0] and "(0 days ago)" not in listing["text"]["text"]


# --- digests -------------------------------------------------------------------------


def test_a_hundred_alert_digest_fits_in_fifty_blocks_critical_first() -> None:
    alerts = [
        event(account_id=f"a-{i}", account=None, severity="critical" if i % 10 == 9 else "info")
        for i in range(100)
    ]
    payload = slack_message(alerts, OPTIONS)
    blocks = valid(payload)
    assert len(blocks) == 50
    assert blocks[0]["text"]["text"] == "100 accounts need attention"
    assert blocks[1]["elements"][0]["text"] == "10 critical · 90 info"
    entries = [b["text"]["text"] for b in blocks if b["type"] == "section"]
    assert len(entries) == 47
    assert all(e.startswith(":red_circle: *<https://ew.example.com/") for e in entries[:10])
    assert blocks[-1]["elements"][0]["text"] == "…and 53 more alerts not shown"


def test_a_digest_takes_a_title_and_counts_resolutions() -> None:
    both = [event(), event(ChangeKind.RESOLVED, account_id="b", account=None)]
    blocks = valid(slack_message(both, OPTIONS, title="Morning digest"))
    assert blocks[0]["text"]["text"] == "Morning digest"
    assert blocks[1]["elements"][0]["text"] == "1 warning · 1 resolved"
    assert "Fired for 3d 4h" in blocks[-1]["text"]["text"]
    resolved = [event(ChangeKind.RESOLVED), event(ChangeKind.RESOLVED, account_id="b")]
    assert valid(slack_message(resolved, OPTIONS))[0]["text"]["text"] == "2 alerts resolved"


def test_nothing_to_render_is_an_error() -> None:
    with pytest.raises(ValueError, match="no alerts"):
        slack_message([], OPTIONS)


def test_escape_follows_slacks_rules() -> None:
    assert escape("a & <b> &amp;") == "a &amp; &lt;b&gt; &amp;amp;"


@settings(max_examples=60, deadline=None)
@given(
    name=st.text(max_size=400),
    summary=st.text(max_size=4000),
    description=st.text(max_size=12_000),
    count=st.integers(min_value=1, max_value=120),
)
def test_any_text_and_any_number_of_alerts_make_a_valid_message(
    name: str, summary: str, description: str, count: int
) -> None:
    account = Account("acme", name, 10, owner_email=name, segment=name)
    alerts = [
        event(
            account=account, account_id=f"{name[:20]}-{i}", summary=summary, description=description
        )
        for i in range(count)
    ]
    blocks = valid(slack_message(alerts, OPTIONS))
    assert len(blocks) <= 50


def test_a_resolve_the_engine_or_a_person_made_says_who_and_why() -> None:
    closed = event(ChangeKind.RESOLVED)
    closed["annotations"] |= {
        "resolved_by": "engagewatch",
        "resolve_reason": "account status churned",
    }
    text = all_text(valid(slack_message([closed], OPTIONS)))
    assert "*Resolved by*\nengagewatch: account status churned" in text
    digest = all_text(valid(slack_message([closed, event(ChangeKind.RESOLVED)], OPTIONS)))
    assert "Resolved by engagewatch: account status churned" in digest
    by_itself = all_text(valid(slack_message([event(ChangeKind.RESOLVED)], OPTIONS)))
    assert "Resolved by" not in by_itself  # it cleared: nobody closed it
