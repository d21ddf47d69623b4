"""Replay: history files in, the alert events the rules would have published out."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from alerts.replay import ReplayReport, replay
from alerts.rules import load_rules
from stream import codec
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


def run(folder: Path) -> tuple[str, ReplayReport]:
    out = io.StringIO()
    report = replay(RULES, folder / "events.jsonl", folder / "accounts.jsonl", out, progress=None)
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
