"""How `engagewatch triage alerts` tells which page of the open alerts it printed."""

from __future__ import annotations

from typing import Any

from stream.triage_cli import _render_alerts


def alert(n: int) -> dict[str, Any]:
    return {
        "severity": "warning",
        "account_name": f"Account {n}",
        "rule": "account-silent",
        "starts_at": "2026-12-01T00:00:00Z",
        "fingerprint": f"fp-{n}",
        "summary": "quiet",
    }


def page(offset: int, shown: int, total: int, next_offset: int | None) -> dict[str, Any]:
    alerts = [alert(n) for n in range(offset, offset + shown)]
    return {"alerts": alerts, "offset": offset, "total": total, "next_offset": next_offset}


def test_the_whole_list_is_printed_without_a_footer() -> None:
    text = _render_alerts(page(0, 2, 2, None))
    assert "fp-0" in text and "fp-1" in text and "Alerts" not in text


def test_a_page_names_its_range_and_the_next_offset() -> None:
    assert _render_alerts(page(0, 2, 5, 2)).splitlines()[-1] == (
        "Alerts 1-2 of 5; the next page: --offset 2."
    )
    assert _render_alerts(page(2, 2, 5, 4)).splitlines()[-1] == (
        "Alerts 3-4 of 5; the next page: --offset 4."
    )
    assert (
        _render_alerts(page(4, 1, 5, None)).splitlines()[-1] == "Alerts 5-5 of 5 (the last page)."
    )


def test_an_offset_past_the_end_says_so_and_an_empty_list_says_none_are_open() -> None:
    assert _render_alerts(page(9, 0, 5, None)) == "No alerts from --offset 9: 5 open in all."
    assert _render_alerts(page(9, 0, 0, None)) == "No open alerts."
    assert _render_alerts(page(0, 0, 0, None)) == "No open alerts."
