"""The triage API, OpenAPI document and CLI against a real worker, Kafka and Redis.

One worker (sweeping every second, with an API token) runs a simulated fleet for the
module; each test acts on alerts of its own accounts, so the tests do not meet.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from alerts.sweep import ACCOUNT_DELETED
from alerts.triage import Silence
from config.settings import ConfigError, Settings
from stream import triage_api
from stream.app import create_app
from stream.deadletter import DeadLetter
from stream.simulate import FleetSpec, build_fleet, generate_events
from stream.triage_api import MAX_BODY_BYTES, Access, load_api_token
from stream.triage_store import TriageStore
from tests.conftest import REPO, free_port
from tests.integration.harness import WorkerProcess, read_topic, wait_for
from tests.integration.test_alerts_kafka import alert_events, scrape
from tests.integration.test_engagement_kafka import publish

sys.path.insert(0, str(REPO / "scripts"))
import devstack

pytestmark = pytest.mark.kafka

TOKEN = "s3cret-" + uuid.uuid4().hex


@dataclass
class Fleet:
    settings: Settings
    worker: WorkerProcess
    quiet: list[str]
    """Accounts that went quiet, each with an open account-silent alert: [0] is only read
    and acknowledged, [1] snoozed, [2] resolved."""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.settings.web_port}"


def fleet_settings(stack: devstack.Stack, tmp: Path, **update: Any) -> Settings:
    name = f"t{uuid.uuid4().hex[:10]}"
    values: dict[str, Any] = {
        "kafka_bootstrap": stack.bootstrap,
        "redis_url": stack.redis_url,
        "topic_prefix": name,
        "app_id": name,
        "partitions": 4,
        "data_dir": str(tmp / "data"),
        "web_port": free_port(),
        "sweep_interval_s": 1.0,
        "notifier_enabled": False,  # delivery is not what these tests are about
        **update,
    }
    return Settings(**values)


def run_fleet(settings: Settings, log: Path, accounts: int = 30) -> tuple[WorkerProcess, list[str]]:
    end = datetime.now(UTC).replace(microsecond=0)
    fleet = build_fleet(FleetSpec(accounts=accounts, seed=7, as_of=end.date()))
    worker = WorkerProcess(settings, log)
    worker.start()
    publish(settings, fleet, list(generate_events(fleet, end - timedelta(days=28), end, seed=7)))
    return worker, sorted(a.account_id for a in fleet if a.behaviour == "going_quiet")


@pytest.fixture(scope="module")
def fleet(stack: devstack.Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    tmp = tmp_path_factory.mktemp("triage-api")
    settings = fleet_settings(stack, tmp, api_token=TOKEN)
    worker, quiet = run_fleet(settings, tmp / "worker.log")
    running = Fleet(settings, worker, quiet)
    try:
        assert len(quiet) >= 3, "the fleet needs a few quiet accounts for these tests"

        def indexed() -> bool:
            alerts = call(running, "GET", "/api/v1/alerts?rule=account-silent")[2]["alerts"]
            return {a["account_id"] for a in alerts} >= set(quiet)

        wait_for(indexed, 120, "the quiet accounts' alerts in the triage index", 1)
        yield running
    finally:
        worker.kill()


def call(
    fleet: Fleet, method: str, path: str, body: Any = None, token: str | None = None
) -> tuple[int, dict[str, str], Any]:
    """(status, headers, JSON body) of one request to the worker."""
    headers = {"Content-Type": "application/json"} if body is not None else {}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(fleet.url + path, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=15) as response:
            return response.status, dict(response.headers), json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), json.loads(exc.read())


def silent_alert(fleet: Fleet, account_id: str) -> dict[str, Any]:
    alerts = call(fleet, "GET", f"/api/v1/alerts?rule=account-silent&account_id={account_id}")
    [alert] = alerts[2]["alerts"]
    assert isinstance(alert, dict)
    return alert


def listed_accounts(fleet: Fleet, query: str = "") -> dict[str, dict[str, Any]]:
    body = call(fleet, "GET", f"/api/v1/accounts/silent?limit=500{query}")[2]
    return {e["account_id"]: e for e in body["accounts"]}


def open_fingerprints(fleet: Fleet, query: str = "") -> set[str]:
    body = call(fleet, "GET", f"/api/v1/alerts?limit=500&{query}")[2]
    return {a["fingerprint"] for a in body["alerts"]}


# --- the document ------------------------------------------------------------------------


def test_the_openapi_document_lists_every_route_the_worker_serves(
    engine_settings: Settings, fleet: Fleet
) -> None:
    document = yaml.safe_load((REPO / "docs" / "openapi.yaml").read_text())
    assert str(document["openapi"]).startswith("3.1.")
    documented = {
        (path, method.upper()) for path, item in document["paths"].items() for method in item
    }
    engine = create_app(engine_settings)  # built, not run: its routes are all we read
    answered = {
        (path, method)
        for path, view in engine.app.web.views.items()
        if path.startswith(("/api/v1/", "/triage"))
        for method in view.get_methods() - {"HEAD"}  # HEAD comes with every GET
    }
    # Every other method answers a JSON 405, any other API path a JSON 404.
    errors_only = (triage_api._not_allowed, triage_api._no_such_path)
    served = {
        (path, method)
        for path, method in answered
        if getattr(engine.app.web.views[path].methods[method.lower()], "__func__", None)
        not in errors_only
    }
    assert served == documented
    assert ("/api/v1/{path:.*}", "GET") in answered
    with urllib.request.urlopen(f"{fleet.url}/api/v1/openapi.yaml", timeout=10) as response:
        assert response.read() == (REPO / "docs" / "openapi.yaml").read_bytes()


def test_an_unknown_path_or_method_is_a_json_error_too(fleet: Fleet) -> None:
    """Found by a review: the document says every error is JSON, but aiohttp answered
    these in plain text ("404: Not Found"), which a client parsing errors chokes on."""
    status, headers, body = call(fleet, "GET", "/api/v1/nosuch")
    assert (status, body["error"]) == (404, "not found")
    assert "/api/v1/nosuch" in body["detail"]
    assert headers["Content-Type"].startswith("application/json")
    status, _, body = call(fleet, "GET", "/api/v1/alerts/abc/ack")
    assert (status, body["error"]) == (405, "method not allowed")
    assert body["detail"] == "GET is not allowed on /api/v1/alerts/abc/ack"
    status, _, body = call(fleet, "DELETE", "/api/v1/accounts/silent")
    assert (status, body["error"]) == (405, "method not allowed")


# --- reading -----------------------------------------------------------------------------


def test_the_silent_list_ranks_the_quiet_accounts_with_what_triage_needs(fleet: Fleet) -> None:
    status, _, body = call(fleet, "GET", "/api/v1/accounts/silent?limit=500")
    assert status == 200
    accounts = body["accounts"]
    assert set(fleet.quiet) <= {e["account_id"] for e in accounts}
    priorities = [e["priority"] for e in accounts]
    assert priorities == sorted(priorities, reverse=True)
    quiet = next(e for e in accounts if e["account_id"] in fleet.quiet)
    assert quiet["name"] and quiet["owner"] and quiet["arr"] and quiet["renewal_date"]
    assert quiet["days_silent"] >= 3 and len(quiet["daily_active_users"]) == 28
    assert "account-silent" in {a["rule"] for a in quiet["open_alerts"]}
    assert call(fleet, "GET", "/api/v1/accounts/silent?limit=1")[2]["accounts"] == accounts[:1]
    for bad in ("0", "%C2%B2"):  # zero; a superscript two, a digit int() refuses
        status, _, error = call(fleet, "GET", f"/api/v1/accounts/silent?limit={bad}")
        assert status == 400 and "limit" in error["detail"] and error["field"] == "limit"


def test_open_alerts_come_in_pages_that_add_up_to_the_whole_list(fleet: Fleet) -> None:
    def fingerprints(body: dict[str, Any]) -> list[str]:
        return [a["fingerprint"] for a in body["alerts"]]

    def pages_of_two() -> tuple[list[str], list[int]]:
        walked: list[str] = []
        totals: list[int] = []
        offset: int | None = 0
        while offset is not None:
            status, _, page = call(fleet, "GET", f"/api/v1/alerts?limit=2&offset={offset}")
            assert status == 200 and len(page["alerts"]) <= 2
            walked += fingerprints(page)
            totals.append(page["total"])
            offset = page["next_offset"]
        return walked, totals

    # The sweep may change the list between requests: compare a walk with the whole list
    # read before and after it, once both whole readings agree.
    for _ in range(5):
        before = call(fleet, "GET", "/api/v1/alerts?limit=500")[2]
        walked, totals = pages_of_two()
        after = call(fleet, "GET", "/api/v1/alerts?limit=500")[2]
        if fingerprints(before) == fingerprints(after):
            break
    else:
        pytest.fail("the open alerts changed during each of five walks")
    assert len(walked) >= 3, "the fleet needs a few open alerts for this test"
    assert walked == fingerprints(before)
    assert set(totals) == {before["total"]} and before["total"] == len(walked)
    assert before["next_offset"] is None
    one = call(fleet, "GET", "/api/v1/alerts?limit=1")[2]
    assert one["next_offset"] == 1 and len(one["alerts"]) == 1
    past = call(fleet, "GET", f"/api/v1/alerts?offset={len(walked) + 5}")[2]
    assert past["alerts"] == [] and past["next_offset"] is None
    assert past["offset"] == len(walked) + 5
    huge = "1" * 5000  # more digits than int() takes: was a plain-text 500
    for name, bad in (
        ("offset", "-1"),
        ("offset", "x"),
        ("limit", "501"),
        ("offset", huge),
        ("limit", huge),
    ):
        status, _, error = call(fleet, "GET", f"/api/v1/alerts?{name}={bad}")
        assert status == 400 and error["field"] == name


def test_one_account_has_its_entry_alerts_history_and_live_snapshot(fleet: Fleet) -> None:
    account_id = fleet.quiet[0]
    status, _, body = call(fleet, "GET", f"/api/v1/accounts/{account_id}")
    assert status == 200
    assert body["account"]["account_id"] == account_id
    assert body["snapshot"]["account_id"] == account_id and body["snapshot_error"] is None
    assert "account-silent" in {a["rule"] for a in body["alerts"]}
    assert "firing" in {h["kind"] for h in body["history"]}
    status, _, error = call(fleet, "GET", "/api/v1/accounts/no-such-account")
    assert status == 404 and error["error"] == "not found" and "no-such-account" in error["detail"]


# --- writing -----------------------------------------------------------------------------


def test_writes_need_the_token_and_then_take_effect(fleet: Fleet) -> None:
    alert = silent_alert(fleet, fleet.quiet[0])
    path = f"/api/v1/alerts/{alert['fingerprint']}/ack"
    body = {"author": "dana", "comment": "calling them today"}
    status, headers, error = call(fleet, "POST", path, body)
    assert status == 401 and headers["WWW-Authenticate"].startswith("Bearer")
    assert set(error) >= {"error", "detail"}
    status, headers, _ = call(fleet, "POST", path, body, token="wrong")
    assert status == 401 and headers["WWW-Authenticate"].startswith("Bearer")
    status, _, done = call(fleet, "POST", path, body, token=TOKEN)
    assert status == 200 and done["ack"]["author"] == "dana"
    acked = {a["fingerprint"]: a for a in call(fleet, "GET", "/api/v1/alerts")[2]["alerts"]}
    assert acked[alert["fingerprint"]]["ack"]["comment"] == "calling them today"
    status, _, error = call(fleet, "POST", path, {"comment": "x"}, token=TOKEN)
    assert status == 400 and error["field"] == "author"
    status, _, error = call(fleet, "POST", "/api/v1/alerts/nope/ack", body, token=TOKEN)
    assert status == 404 and "nope" in error["detail"]
    snooze = f"/api/v1/alerts/{alert['fingerprint']}/snooze"
    status, _, error = call(
        fleet, "POST", snooze, {**body, "reason": "r", "duration": "soon"}, TOKEN
    )
    assert status == 400 and error["field"] == "duration"


def test_a_write_body_over_the_limit_is_refused_before_it_is_read_whole(fleet: Fleet) -> None:
    """Found by a review: a 300 MiB POST with the token was read into memory whole (99
    to 348 MiB) before the 100-character author check. Now 413 past MAX_BODY_BYTES,
    whether the body declares its length or comes in chunks."""
    alert = silent_alert(fleet, fleet.quiet[0])
    path = f"/api/v1/alerts/{alert['fingerprint']}/ack"
    big = {"author": "dana", "comment": "x" * MAX_BODY_BYTES}
    status, _, error = call(fleet, "POST", path, big, token=TOKEN)
    assert (status, error["error"]) == (413, "payload too large")

    def chunks() -> Iterator[bytes]:  # no Content-Length: Transfer-Encoding chunked
        yield b'{"author": "dana", "comment": "'
        for _ in range(64):
            yield b"x" * 1024
        yield b'"}'

    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    request = urllib.request.Request(fleet.url + path, data=chunks(), headers=headers)
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=15)
    assert refused.value.code == 413
    under = {"author": "dana", "comment": "x" * 2000}  # taken, then judged field by field
    status, _, error = call(fleet, "POST", path, under, token=TOKEN)
    assert status == 400 and error["field"] == "comment"


def test_a_snooze_hides_the_account_until_it_ends_and_the_notifier_sees_it(fleet: Fleet) -> None:
    account_id = fleet.quiet[1]
    alert = silent_alert(fleet, account_id)
    fingerprint, rule = alert["fingerprint"], alert["rule"]
    snooze = {"author": "dana", "reason": "team offsite", "duration": "4s", "scope": "account"}
    status, _, body = call(fleet, "POST", f"/api/v1/alerts/{fingerprint}/snooze", snooze, TOKEN)
    assert status == 200 and body["silence"]["account_id"] == account_id
    assert account_id not in listed_accounts(fleet)
    assert listed_accounts(fleet, "&include_snoozed=true")[account_id]["snoozed"] is True
    assert fingerprint not in open_fingerprints(fleet)
    assert fingerprint in open_fingerprints(fleet, "include_snoozed=true")
    silence = silence_now(fleet.settings, fingerprint, account_id, rule)
    assert silence is not None and silence.reason == "team offsite"
    wait_for(lambda: account_id in listed_accounts(fleet), 15, "the snooze to end", 0.5)
    assert fingerprint in open_fingerprints(fleet)
    assert silence_now(fleet.settings, fingerprint, account_id, rule) is None


def silence_now(settings: Settings, fingerprint: str, account_id: str, rule: str) -> Silence | None:
    """What the notifier asks before delivering: ``TriageStore.silence_for``."""

    async def ask() -> Silence | None:
        store = TriageStore.from_url(settings.redis_url, settings.topic_prefix, entry_ttl_s=300)
        try:
            return await store.silence_for(fingerprint, account_id, rule, datetime.now(UTC))
        finally:
            await store.close()

    return asyncio.run(ask())


def test_a_hand_resolve_publishes_resolved_and_does_not_refire(fleet: Fleet) -> None:
    account_id = fleet.quiet[2]
    alert = silent_alert(fleet, account_id)
    fingerprint = alert["fingerprint"]
    body = {"author": "sam", "reason": "customer on holiday"}
    status, _, done = call(fleet, "POST", f"/api/v1/alerts/{fingerprint}/resolve", body, TOKEN)
    assert status == 202 and done["resolve_request"]["author"] == "sam"

    def resolved() -> list[dict[str, Any]]:
        return [
            e
            for e in alert_events(fleet.settings)
            if e["fingerprint"] == fingerprint and e["status"] == "resolved"
        ]

    [event] = wait_for(resolved, 30, "the resolved alert event", 0.5)
    assert event["annotations"]["resolved_by"] == "sam"
    assert event["annotations"]["resolve_reason"] == "customer on holiday"
    time.sleep(5)  # five more sweeps while the account stays silent
    mine = [e for e in alert_events(fleet.settings) if e["fingerprint"] == fingerprint]
    assert [e["status"] for e in mine] == ["firing", "resolved"]
    assert fingerprint not in open_fingerprints(fleet, "include_snoozed=true")
    history = call(fleet, "GET", f"/api/v1/accounts/{account_id}")[2]["history"]
    assert [h["kind"] for h in history if h.get("fingerprint") == fingerprint][:2] == [
        "resolved",
        "resolve_requested",
    ]


def test_the_cli_prints_the_ranked_table_and_acknowledges(fleet: Fleet) -> None:
    def cli(
        *args: str, token: str | None = None, **settings: str
    ) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ENGAGEWATCH_")}
        if token is not None:
            env["ENGAGEWATCH_API_TOKEN"] = token
        env.update({f"ENGAGEWATCH_{name.upper()}": value for name, value in settings.items()})
        return subprocess.run(
            [sys.executable, "-m", "stream.cli", "triage", *args, "--url", fleet.url],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )

    table = cli("silent", "--limit", "50")
    assert table.returncode == 0, table.stderr
    header, *rows = table.stdout.splitlines()
    assert header.split()[:3] == ["#", "ACCOUNT", "ID"] and "PRIORITY" in header
    assert any(fleet.quiet[0] in row for row in rows)
    zero = cli("silent", "--limit", "0")  # 0 is a value (not "no limit given")
    assert zero.returncode == 2 and "limit" in zero.stderr
    # Reads need no token: an unreadable token file stops writes only.
    unreadable = cli("silent", api_token_file="/nonexistent/token")
    assert unreadable.returncode == 0, unreadable.stderr
    listing = cli("alerts", "--rule", "champion-silent", "--json")
    assert listing.returncode == 0, listing.stderr
    alert = json.loads(listing.stdout)["alerts"][0]

    refused = cli("ack", alert["fingerprint"], "--comment", "on it", token="wrong")
    assert refused.returncode == 1 and "HTTP 401" in refused.stderr
    acked = cli("ack", alert["fingerprint"], "--comment", "on it", "--author", "noor", token=TOKEN)
    assert acked.returncode == 0, acked.stderr
    assert acked.stdout.strip() == f"acknowledged {alert['fingerprint']} as noor"
    states = cli("alerts", "--status", "acknowledged")
    assert alert["fingerprint"] in states.stdout and "acked" in states.stdout
    paged = cli("alerts", "--limit", "1")
    assert paged.returncode == 0, paged.stderr
    # Patterns, not figures: the sweep may open or close an alert between two calls.
    first = paged.stdout.splitlines()[-1]
    assert re.fullmatch(r"Alerts 1-1 of \d+; the next page: --offset 1\.", first), first
    last = cli("alerts", "--limit", "500", "--offset", "1").stdout.splitlines()[-1]
    assert re.fullmatch(r"Alerts 2-(\d+) of \1 \(the last page\)\.", last), last
    past = cli("alerts", "--offset", "100000").stdout.strip()
    assert re.fullmatch(r"No alerts from --offset 100000: \d+ open in all\.", past), past
    missing = cli("ack", "no-such-alert", token=TOKEN)
    assert missing.returncode == 1 and "HTTP 404" in missing.stderr
    bad = cli("snooze", alert["fingerprint"], "--for", "forever", "--reason", "r", token=TOKEN)
    assert bad.returncode == 2 and "duration" in bad.stderr
    drill = cli("account", alert["account_id"])
    assert drill.returncode == 0 and "History (newest first):" in drill.stdout


def test_a_deleted_account_resolves_its_alerts_and_leaves_triage(
    fleet: Fleet, tmp_path: Path
) -> None:
    """``engagewatch delete-account`` (a tombstone on the accounts topic): the firing
    alerts resolve, saying why, the account leaves the index and the worker, and the
    sweeps that follow judge it no more. Runs last on the fleet: it deletes one of the
    champion-leaving accounts (the other tests use the going-quiet ones)."""
    champions = call(fleet, "GET", "/api/v1/alerts?rule=champion-silent")[2]["alerts"]
    account_id = max(a["account_id"] for a in champions if a["account_id"] not in fleet.quiet)

    def firing() -> set[str]:
        """The account's alerts whose newest event on the alerts topic says firing."""
        last: dict[str, str] = {}
        for event in alert_events(fleet.settings):
            if event["account_id"] == account_id:
                last[event["fingerprint"]] = event["status"]
        return {fp for fp, status in last.items() if status == "firing"}

    def engagewatch(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "stream.cli", *args]
        env = fleet.worker.env()
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=60)
        assert done.returncode == 0, done.stderr
        return done

    assert firing()
    done = engagewatch("delete-account", account_id)
    accounts_topic = f"{fleet.settings.topic_prefix}.accounts"
    assert done.stdout.strip() == f"published 1 tombstones to {accounts_topic}"

    wait_for(lambda: not firing(), 30, "the deleted account's alerts resolved", 0.5)
    mine = [e for e in alert_events(fleet.settings) if e["account_id"] == account_id]
    ended = [e for e in mine if e["annotations"].get("resolve_reason") == ACCOUNT_DELETED]
    assert ended and all(e["status"] == "resolved" and e["account"] for e in ended)
    assert all(e["annotations"]["resolved_by"] == "engagewatch" for e in ended)
    time.sleep(4)  # four more sweeps: none judges it or writes it back to the index

    assert call(fleet, "GET", f"/accounts/{account_id}")[0] == 404  # no state, no record
    status, _, body = call(fleet, "GET", f"/api/v1/accounts/{account_id}")
    assert status == 404, body  # no entry, no history, no live snapshot
    assert account_id not in listed_accounts(fleet, "&include_snoozed=true")
    assert not open_fingerprints(fleet, f"account_id={account_id}&include_snoozed=true")
    after = [e for e in alert_events(fleet.settings) if e["account_id"] == account_id]
    assert len(after) == len(mine)  # nothing was judged since

    # An event read after the deletion does not bring it back: it is dead-lettered.
    late = tmp_path / "late.jsonl"
    occurred = datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
    event = {
        "schema": 1,
        "event_id": f"late-{uuid.uuid4().hex}",
        "type": "login",
        "account_id": account_id,
        "user_id": "u-late",
        "occurred_at": occurred,
        "properties": {},
    }
    late.write_text(json.dumps(event) + "\n")
    engagewatch("produce", str(late))
    dead_letters = f"{fleet.settings.topic_prefix}.events.dlq"

    def refused() -> list[DeadLetter]:
        letters = read_topic(fleet.settings.kafka_bootstrap, dead_letters)
        found = [DeadLetter.from_json(value) for _, value, _, _ in letters if value]
        return [d for d in found if d.reason == "account_deleted"]

    [letter] = wait_for(refused, 30, "the late event in the dead letters", 0.5)
    assert json.loads(letter.original)["event_id"] == event["event_id"]
    assert call(fleet, "GET", f"/accounts/{account_id}")[0] == 404


# --- without a token, and without Redis ---------------------------------------------------


def test_the_token_comes_from_the_file_first_and_an_empty_one_opens_nothing(
    tmp_path: Path,
) -> None:
    secret = tmp_path / "token"
    secret.write_text("  from-file\n")
    assert load_api_token(Settings(api_token="env", api_token_file=str(secret))) == "from-file"
    assert load_api_token(Settings(api_token="env")) == "env"
    secret.write_text("\n")
    assert load_api_token(Settings(api_token_file=str(secret))) is None
    assert load_api_token(Settings(api_token="  ")) is None
    with pytest.raises(ConfigError, match="api_token_file"):
        load_api_token(Settings(api_token_file=str(tmp_path / "missing")))


def test_the_token_gate() -> None:
    open_reads = Access("t0ken", reads_require_token=False)
    assert open_reads.refusal({}, write=False) is None
    assert open_reads.refusal({"Authorization": "Bearer t0ken"}, write=True) is None
    assert open_reads.refusal({"Authorization": "bearer t0ken"}, write=True) is None
    for header in ({}, {"Authorization": "Bearer "}, {"Authorization": "Basic t0ken"}):
        refused = open_reads.refusal(header, write=True)
        assert refused is not None and refused[0] == 401
    closed = Access("t0ken", reads_require_token=True)
    refused = closed.refusal({}, write=False)
    assert refused is not None and refused[0] == 401
    no_token = Access(None, reads_require_token=False)
    refused = no_token.refusal({"Authorization": "Bearer "}, write=True)
    assert refused is not None and refused[:2] == (403, "writes disabled: no api token configured")


def test_without_redis_alerting_goes_on_and_the_api_says_503(
    stack: devstack.Stack, tmp_path: Path
) -> None:
    settings = fleet_settings(stack, tmp_path, redis_url=f"redis://127.0.0.1:{free_port()}/0")
    worker, quiet = run_fleet(settings, tmp_path / "worker.log", accounts=12)
    try:
        wait_for(
            lambda: {e["account_id"] for e in alert_events(settings)} >= set(quiet),
            120,
            "alerts on the quiet accounts with Redis down",
            1,
        )
        fleetless = Fleet(settings, worker, quiet)
        status, headers, error = call(fleetless, "GET", "/api/v1/accounts/silent")
        assert status == 503 and error["error"] == "redis unavailable" and "Retry-After" in headers
        status, _, error = call(fleetless, "POST", "/api/v1/alerts/x/ack", {"author": "d"}, "t")
        assert status == 403 and error["error"] == "writes disabled: no api token configured"
        errors = {
            labels: value
            for (name, labels), value in scrape(settings.web_port).items()
            if name == "engagewatch_redis_errors_total"
        }
        assert errors[(("operation", "index_write"),)] >= 1
        assert errors[(("operation", "api"),)] >= 1
    finally:
        worker.kill()
