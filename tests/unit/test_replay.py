"""Replay: history files in, the alert events the rules would have published out."""

from __future__ import annotations

import gc
import io
import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from alerts.replay import ReplayReport, _load_events, replay
from alerts.rules import load_rules
from stream import codec
from stream.events import EventLimits, Record, UsageEvent, decode_event, record_of
from stream.simulate import FleetSpec, build_fleet, generate_events

END = datetime(2026, 11, 23, 12, tzinfo=UTC)
RULES = load_rules(Path(__file__).resolve().parents[2] / "config" / "rules.yaml").rules


def write_history(folder: Path) -> dict[str, str]:
    fleet = build_fleet(FleetSpec(accounts=12, seed=7, as_of=END.date()))
    events = generate_events(fleet, END - timedelta(days=35), END, seed=7)
    lines = [codec.dumps(e) for e in events] + [b"not json", b'{"schema": 1}']
    (folder / "events.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    records = b"\n".join(codec.dumps(a.record()) for a in fleet)
    (folder / "accounts.jsonl").write_bytes(records + b"\n")
    return {a.account_id: a.behaviour for a in fleet}


def run(folder: Path, jobs: int = 1) -> tuple[str, ReplayReport]:
    out = io.StringIO()
    events, accounts = folder / "events.jsonl", folder / "accounts.jsonl"
    report = replay(RULES, events, accounts, out, progress=None, jobs=jobs)
    return out.getvalue(), report


def test_replay_alerts_the_quiet_accounts_and_rejects_bad_lines(tmp_path: Path) -> None:
    behaviour = write_history(tmp_path)
    text, report = run(tmp_path)
    alerts = [json.loads(line) for line in text.splitlines()]
    silent = {a["account_id"] for a in alerts if a["rule"] == "account-silent"}
    assert silent == {i for i, b in behaviour.items() if b == "going_quiet"}
    calm = {i for i, b in behaviour.items() if b in ("healthy", "weekday_only")}
    assert not [a for a in alerts if a["rule"] == "account-silent" and a["account_id"] in calm]
    # In time order, and generated_at is the sweep time, so the file is reproducible.
    times = [a["generated_at"] for a in alerts]
    assert times == sorted(times)
    assert all(a["status"] in ("firing", "resolved") for a in alerts)
    assert report.rejected == {"invalid_json": 1, "missing_field:type": 1}
    assert report.accounts == len(behaviour)


def test_the_same_history_replays_to_the_same_file(tmp_path: Path) -> None:
    write_history(tmp_path)
    assert run(tmp_path)[0] == run(tmp_path)[0]


def test_replay_leaves_the_garbage_collector_as_it_found_it(tmp_path: Path) -> None:
    """Replay tunes the collector while it runs (fewer walks over the history held):
    a caller's settings come back, whether it had the collector on or off."""
    write_history(tmp_path)
    threshold = gc.get_threshold()
    try:
        gc.set_threshold(500, 7, 9)
        run(tmp_path)
        assert (gc.get_threshold(), gc.isenabled(), gc.get_freeze_count()) == ((500, 7, 9), True, 0)
        gc.disable()
        run(tmp_path)
        assert not gc.isenabled()
        gc.enable()
    finally:
        gc.unfreeze()
        gc.enable()
        gc.set_threshold(*threshold)


def test_replay_leaves_a_callers_frozen_objects_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With objects frozen already, replay neither freezes more (they would stay frozen
    for good: it cannot tell its own from the caller's) nor unfreezes the caller's."""
    write_history(tmp_path)
    calls: list[str] = []
    monkeypatch.setattr(gc, "freeze", lambda: calls.append("freeze"))
    monkeypatch.setattr(gc, "unfreeze", lambda: calls.append("unfreeze"))
    monkeypatch.setattr(gc, "get_freeze_count", lambda: 1)
    run(tmp_path)
    assert calls == []
    monkeypatch.setattr(gc, "get_freeze_count", lambda: 0)
    run(tmp_path)
    assert calls == ["freeze", "unfreeze"]


def test_processes_sharing_the_accounts_write_the_same_file(tmp_path: Path) -> None:
    write_history(tmp_path)
    alone, report = run(tmp_path)
    shared, shared_report = run(tmp_path, jobs=3)
    assert alone and shared == alone
    assert shared_report.alerts == report.alerts
    assert shared_report.rejected == report.rejected


def test_events_the_fast_decoder_leaves_to_the_careful_one_keep_their_place(
    tmp_path: Path,
) -> None:
    """Times with a fraction of a second go the careful way; each account's events are
    still in file order, as the careful path alone would give them."""
    write_history(tmp_path)
    path = tmp_path / "events.jsonl"
    lines = path.read_bytes().splitlines()
    lines = [
        re.sub(rb'("occurred_at":"[^"]*)Z"', rb'\1.5Z"', line) if n % 7 == 0 else line
        for n, line in enumerate(lines)
    ]
    path.write_bytes(b"\n".join(lines) + b"\n")
    expected: dict[str, list[Record]] = {}
    for line in lines:
        event = decode_event(line, datetime.now(UTC))
        if isinstance(event, UsageEvent):
            expected.setdefault(event.account_id, []).append(record_of(event))
    report = ReplayReport()
    loaded = _load_events(path, report, {}, EventLimits())
    assert loaded == expected
    assert sum(r[2] % 1 == 0.5 for records in loaded.values() for r in records) > 100


@pytest.mark.parametrize("chunk_bytes", [8 << 20, 700])  # 700: a chunk every few lines
def test_lines_are_read_as_their_stripped_selves_whatever_surrounds_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk_bytes: int
) -> None:
    """CRLF endings, blank lines, lines of spaces, spaces and tabs around an event, an
    event that fits the size limit only without its spaces, no newline at the end: the
    events read are those of each line stripped, as the worker would take them."""
    monkeypatch.setattr("alerts.replay._CHUNK_BYTES", chunk_bytes)
    write_history(tmp_path)
    path = tmp_path / "events.jsonl"
    lines = path.read_bytes().splitlines()[:400]
    limit = EventLimits().max_bytes
    model = codec.loads(lines[5])
    fields = {k: model[k] for k in ("schema", "account_id", "user_id", "occurred_at")}
    pad = {**fields, "event_id": "pad-1", "type": "feature_used", "properties": {"feature": ""}}
    padded = codec.dumps(
        {**pad, "properties": {"feature": "f" * (limit - len(codec.dumps(pad)))}}
    )  # the size limit exactly
    assert len(padded) == limit
    surroundings = [b"", b"\r", b"  ", b"\t", b" \r"]
    text = b"".join(
        surroundings[n % 5] + line + surroundings[(n + 2) % 5] + b"\n" + (b"\n" * (n % 3 == 0))
        for n, line in enumerate([*lines, padded])
    )
    path.write_bytes(b"   \n\r\n" + text + b" \t \n" + lines[7])
    expected: dict[str, list[Record]] = {}
    events = 0
    for line in path.read_bytes().split(b"\n"):
        if not line.strip():
            continue
        events += 1
        event = decode_event(line.strip(), datetime.now(UTC))
        if isinstance(event, UsageEvent):
            expected.setdefault(event.account_id, []).append(record_of(event))
    report = ReplayReport()
    assert _load_events(path, report, {}, EventLimits()) == expected
    assert report.events == events == 402
    assert any(r[0] == "pad-1" for r in expected[model["account_id"]])  # at the limit, in


def test_an_answer_that_arrives_late_is_judged_as_live_judges_it(tmp_path: Path) -> None:
    """The history starts at its earliest event, wherever the file has it: a detractor
    answer timed before the account's first line still alerts (as a live worker does)."""

    def event(n: int, kind: str, at: str, **properties: Any) -> dict[str, Any]:
        return {
            "schema": 1,
            "event_id": f"e{n}",
            "type": kind,
            "account_id": "acme",
            "user_id": "ann",
            "role": "champion",
            "occurred_at": at,
            "properties": properties,
        }

    lines = [
        event(1, "login", "2026-11-20T10:00:00Z"),
        event(2, "nps_response", "2026-11-20T03:00:00Z", score=3, comment="slow"),
    ]
    (tmp_path / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in lines))
    out = io.StringIO()
    replay(RULES, tmp_path / "events.jsonl", None, out, progress=None)
    alerts = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [(a["rule"], a["status"]) for a in alerts] == [("detractor", "firing")]


def test_events_the_fold_leaves_out_are_counted_not_dropped_silently(tmp_path: Path) -> None:
    """An export ordered by user, not by time: events more than the lateness older than
    one already read are rejected as ``late`` (the worker dead-letters them), and an id
    seen twice counts once; the summary says both."""

    def login(n: int, day: int, user: str) -> bytes:
        return codec.dumps(
            {
                "schema": 1,
                "event_id": f"e-{n}",
                "type": "login",
                "account_id": "acme",
                "user_id": user,
                "occurred_at": f"2026-11-{day:02d}T10:00:00Z",
            }
        )

    events = [login(1, 20, "a"), login(2, 10, "b"), login(3, 19, "a"), login(1, 20, "a")]
    (tmp_path / "events.jsonl").write_bytes(b"\n".join(events) + b"\n")
    report = replay(RULES, tmp_path / "events.jsonl", None, io.StringIO(), progress=None)
    assert report.rejected == {"late": 1}
    assert report.duplicates == 1
    assert "rejected: {'late': 1}" in report.summary()
    assert "duplicates (counted once): 1" in report.summary()


def test_account_records_among_the_events_are_taken_as_produce_routes_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One file of records and events, as `engagewatch produce` takes it (records to the
    accounts topic): the same alert events as with the records in --accounts, and the
    records are not counted as rejected events."""
    write_history(tmp_path)
    expected, apart = run(tmp_path)
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_bytes(
        (tmp_path / "accounts.jsonl").read_bytes() + (tmp_path / "events.jsonl").read_bytes()
    )
    out = io.StringIO()
    report = replay(RULES, mixed, None, out, progress=None)
    assert out.getvalue() == expected
    assert report.rejected == apart.rejected == {"invalid_json": 1, "missing_field:type": 1}
    assert report.events == apart.events
    assert report.account_records == apart.account_records == 12
    # A record among the events that does not decode is named with its line, as in
    # --accounts: blank lines count, as an editor counts them.
    bad = codec.dumps({"account_id": "zz", "name": "Z", "licenses": -5})
    mixed.write_bytes(b"\n\n" + mixed.read_bytes() + bad + b"\n")
    lines = len(mixed.read_bytes().splitlines())
    monkeypatch.setattr("alerts.replay._CHUNK_BYTES", 4096)  # numbered across chunks too
    report = replay(RULES, mixed, None, io.StringIO(), progress=None)
    [rejected] = report.accounts_rejected
    assert rejected.startswith(f"{mixed}:{lines}: bad_value:licenses: ")


def test_a_rejected_record_leaves_the_accounts_earlier_one_in_force(tmp_path: Path) -> None:
    """As on the accounts topic: a record that does not decode changes nothing, and the
    summary says it was left out, not that the account went without a record."""
    write_history(tmp_path)
    expected, _ = run(tmp_path)
    accounts = tmp_path / "accounts.jsonl"
    first = json.loads(accounts.read_bytes().splitlines()[0])
    broken = codec.dumps({**first, "licenses": -5})
    accounts.write_bytes(accounts.read_bytes() + broken + b"\n")
    text, report = run(tmp_path)
    assert text == expected
    assert len(report.accounts_rejected) == 1
    assert f"{accounts}:13: " in report.accounts_rejected[0]
    assert "left out (an account with no valid record is judged without one)" in report.summary()


def test_the_workers_event_limits_decide_what_replay_takes(tmp_path: Path) -> None:
    """A worker configured with a bigger max_event_bytes takes a 70 KB event; replay given
    the same limits takes it too (it used to apply the built-in 64 KB)."""
    event = {
        "schema": 1,
        "event_id": "e-big",
        "type": "feature_used",
        "account_id": "acme",
        "user_id": "u-1",
        "occurred_at": "2026-11-20T10:00:00Z",
        "properties": {"feature": "reports", "note": "x" * 70_000},
    }
    path = tmp_path / "events.jsonl"
    path.write_bytes(codec.dumps(event) + b"\n")
    default = replay(RULES, path, None, io.StringIO(), progress=None)
    assert default.rejected == {"too_large": 1}
    bigger = EventLimits(max_bytes=128 * 1024)
    configured = replay(RULES, path, None, io.StringIO(), progress=None, limits=bigger)
    assert configured.rejected == {}
    assert configured.events == 1 and configured.accounts == 1


def test_until_before_the_last_event_replays_the_history_up_to_it(tmp_path: Path) -> None:
    """--until is the clock a live worker would have reached: what occurred after it is
    left out (and counted), not judged in the past of the accounts that had it."""
    write_history(tmp_path)
    until = END - timedelta(days=10)
    out = io.StringIO()
    events, accounts = tmp_path / "events.jsonl", tmp_path / "accounts.jsonl"
    report = replay(RULES, events, accounts, out, progress=None, until=until)
    written = [json.loads(line) for line in out.getvalue().splitlines()]
    assert written
    assert max(e["generated_at"] for e in written) <= until.isoformat().replace("+00:00", "Z")
    assert report.after_until > 0
    assert f"after --until, left out: {report.after_until}" in report.summary()
    whole = replay(RULES, events, accounts, io.StringIO(), progress=None)
    assert report.events == whole.events - report.after_until  # replayed: what was judged
    # The same as a history that ends there.
    cut = tmp_path / "cut.jsonl"
    cut.write_bytes(
        b"".join(
            line + b"\n"
            for line in events.read_bytes().splitlines()
            if not line.startswith(b"{")
            or json.loads(line).get("occurred_at", "") <= until.isoformat().replace("+00:00", "Z")
        )
    )
    again = io.StringIO()
    replay(RULES, cut, accounts, again, progress=None, until=until)
    assert again.getvalue() == out.getvalue()
