"""The triage page in headless Chromium (Debian's /usr/bin/chromium) against a real worker.

Loads /triage, sees the ranked list and the heatmap, opens a drill-down, snoozes an
account through the page's dialogs (answering the token prompt), and sees it leave the
list. Screenshots go to $ENGAGEWATCH_ARTIFACTS_DIR (default: <repo>/test-artifacts).
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect, sync_playwright

from stream import codec
from stream.triage_store import TriageStore
from tests.conftest import REPO
from tests.integration.harness import wait_for
from tests.integration.test_triage_api import TOKEN, Fleet, call, fleet_settings, run_fleet

sys.path.insert(0, str(REPO / "scripts"))
import devstack

pytestmark = pytest.mark.kafka

CHROMIUM = Path("/usr/bin/chromium")
TIMEOUT_MS = 20_000


def artifacts_dir() -> Path:
    directory = Path(os.environ.get("ENGAGEWATCH_ARTIFACTS_DIR") or REPO / "test-artifacts")
    directory.mkdir(parents=True, exist_ok=True)
    return directory


@pytest.fixture
def fleet(stack: devstack.Stack, tmp_path: Path) -> Iterator[Fleet]:
    settings = fleet_settings(stack, tmp_path, api_token=TOKEN)
    worker, quiet = run_fleet(settings, tmp_path / "worker.log", accounts=20)
    running = Fleet(settings, worker, quiet)
    try:

        def indexed() -> bool:
            listed = call(running, "GET", "/api/v1/accounts/silent?limit=500")[2]["accounts"]
            return set(quiet) <= {e["account_id"] for e in listed}

        wait_for(indexed, 120, "the quiet accounts in the triage index", 1)
        yield running
    finally:
        worker.kill()


@pytest.fixture
def page() -> Iterator[Page]:
    if not CHROMIUM.exists():
        pytest.fail(
            "Debian's chromium is missing: apt-get install chromium (scripts/dev-stack does)"
        )
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            tab = browser.new_page(viewport={"width": 1400, "height": 1000})
            tab.set_default_timeout(TIMEOUT_MS)
            yield tab
        finally:
            browser.close()


def test_triage_page_lists_drills_down_and_snoozes(fleet: Fleet, page: Page) -> None:
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    page.on(
        "console",
        lambda message: (
            problems.append(f"console: {message.text}") if message.type == "error" else None
        ),
    )
    page.on(
        "response",
        lambda response: (
            problems.append(f"HTTP {response.status} {response.url}")
            if response.status >= 400
            else None
        ),
    )
    account_id = fleet.quiet[0]
    row = f"#silent tbody tr[data-account='{account_id}']"

    page.goto(f"{fleet.url}/triage")
    page.wait_for_selector(row)
    ranks = page.locator("#silent tbody tr")
    assert ranks.count() >= len(fleet.quiet)
    heat_rows = page.locator("#heatmap .hm-cells")
    assert heat_rows.count() == ranks.count()
    assert page.locator(f"#heatmap .hm-cells[data-account='{account_id}'] .hm-cell").count() == 28
    assert page.locator("#alerts tbody tr").count() >= len(fleet.quiet)
    shot = artifacts_dir() / "triage.png"
    page.screenshot(path=str(shot), full_page=True)

    page.click(row)
    page.wait_for_url(f"**/triage/account/{account_id}")
    page.wait_for_selector("#dd-history tbody tr")
    assert page.locator("#drilldown").is_visible() and not page.locator("#overview").is_visible()
    assert page.locator("#dd-title").text_content()
    assert page.locator("#dd-series .bar").count() == 28
    assert page.locator("#dd-stakeholders tbody tr").count() >= 1
    page.screenshot(path=str(artifacts_dir() / "triage-account.png"), full_page=True)

    silent = page.locator("#dd-alerts tbody tr", has_text="account-silent")
    silent.locator("button.snooze").click()
    page.fill("#snooze-dialog input[name=duration]", "2h")
    page.select_option("#snooze-dialog select[name=scope]", "account")
    page.fill("#snooze-dialog input[name=reason]", "quarterly offsite")
    page.click("#snooze-dialog button[value=ok]")
    page.wait_for_selector("#token-dialog[open]")  # asked once for the token
    page.fill("#token-dialog input[name=token]", TOKEN)
    page.fill("#token-dialog input[name=author]", "Dana")
    page.click("#token-dialog button[value=ok]")
    page.wait_for_selector("#status:has-text('Done: snooze')")
    assert page.evaluate("sessionStorage.getItem('engagewatch.token')") == TOKEN

    page.click("#back")
    page.wait_for_url("**/triage")
    expect(page.locator(row)).to_have_count(0)  # the snoozed account left the list
    expect(page.locator("#silent tbody tr").first).to_be_visible()  # the others did not
    page.check("#filters input[name=include_snoozed]")
    page.wait_for_selector(f"{row}.snoozed")
    silence = call(fleet, "GET", f"/api/v1/alerts?account_id={account_id}&include_snoozed=true")
    snoozed = [a["snoozed"] for a in silence[2]["alerts"]]
    assert snoozed and all(s and s["author"] == "Dana" for s in snoozed)
    assert problems == []
    assert shot.exists() and shot.stat().st_size > 0


SEEDED = 150


def in_store(fleet: Fleet, act: Callable[[TriageStore], Awaitable[object]]) -> None:
    """Runs ``act`` on the fleet's triage store, in a thread of its own: Playwright's
    sync API keeps an event loop running in this one."""

    async def run() -> None:
        store = TriageStore.from_url(
            fleet.settings.redis_url, fleet.settings.topic_prefix, entry_ttl_s=300
        )
        try:
            await act(store)
        finally:
            await store.close()

    with ThreadPoolExecutor(1) as thread:
        thread.submit(asyncio.run, run()).result()


async def _seed(store: TriageStore) -> None:
    """Open alerts of made-up accounts written straight into the triage index (alert and
    live entry, as a sweep writes them): no simulated fleet has hundreds open."""
    pipe = store.redis.pipeline(transaction=False)
    for i in range(SEEDED):
        alert = {
            "fingerprint": f"seeded-fp-{i:03d}",
            "account_id": f"seeded-{i:03d}",
            "account_name": f"Seeded {i:03d}",
            "rule": "usage-below-licenses",
            "severity": "info",
            "status": "firing",
            "starts_at": "2026-01-01T00:00:00Z",
            "summary": "seeded for paging",
        }
        entry = {"account_id": alert["account_id"], "open_alerts": [alert], "priority": 0.0}
        pipe.hset(store.key("alerts"), alert["fingerprint"], codec.dumps(alert))
        pipe.set(store.key(f"account:{alert['account_id']}"), codec.dumps(entry), ex=300)
    await pipe.execute()


async def _unseed(store: TriageStore) -> None:
    await store.redis.delete(*(store.key(f"account:seeded-{i:03d}") for i in range(SEEDED)))
    await store.redis.hdel(store.key("alerts"), *(f"seeded-fp-{i:03d}" for i in range(SEEDED)))


def test_the_page_shows_a_hundred_open_alerts_and_more_on_demand(fleet: Fleet, page: Page) -> None:
    in_store(fleet, _seed)
    try:
        # The fleet's own alerts open while the test runs: figures come from the
        # page's own responses, not from a count read before.
        rows = page.locator("#alerts tbody tr")
        page.goto(f"{fleet.url}/triage")
        expect(rows).to_have_count(100)
        expect(page.locator("#alerts-count")).to_contain_text("Showing 100 of ")
        with page.expect_response(lambda r: "/api/v1/alerts?" in r.url) as more:
            page.click("#alerts-more-button")
        assert "limit=200" in more.value.url  # one request: one reading of the list
        body = more.value.json()
        listed = [a["fingerprint"] for a in body["alerts"]]
        assert body["total"] >= SEEDED and len(listed) == min(body["total"], 200)
        expect(rows).to_have_count(len(listed))
        assert rows.evaluate_all("rows => rows.map(r => r.dataset.fingerprint)") == listed
        with page.expect_response(lambda r: "/api/v1/alerts?" in r.url) as reread:
            page.select_option("#filters select[name=heat]", "licenses")  # not about alerts
        assert "limit=200" in reread.value.url  # the list shown stays as long
        page.check("#filters input[name=include_snoozed]")  # a new filter starts at one page
        expect(rows).to_have_count(100)
    finally:
        in_store(fleet, _unseed)
