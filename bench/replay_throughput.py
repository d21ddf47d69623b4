"""Replay throughput: ``engagewatch replay`` against reading the same file raw.

    .venv/bin/python bench/replay_throughput.py [--accounts 36] [--days 42]
        [--seats 1 10] [--rounds 3] [--rules config/rules.yaml]

For each fleet (``--seats``: users per account, as a multiple of the demo's teams) it
writes a simulated history once, then measures in rounds, each in a fresh process
(so no cache carries over from one measurement to the next), in this order:

* **raw**: read the file and decode every line's JSON into a dict (``orjson``), the
  least any reader of the file does;
* **no rules**: ``replay`` with no rules: decode and check each event, fold it into
  its account's state, walk the evaluation grid;
* **rules**: ``replay`` with the rules file, which writes the alert events.

Rates are events over the process's CPU time for that step (wall time on a shared
machine moves with its neighbours). The ratios are taken within each round, and
their median is printed. "Per event" is the no-rules run's CPU per event; "per
account-day" is what the rules added, over the account-days the history spans: a
replay's time is about ``events x per event + account-days x per account-day``, so
its rate depends on how many events an account makes a day.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from stream import codec  # noqa: E402
from stream.simulate import FleetSpec, build_fleet, generate_events  # noqa: E402

END = datetime(2026, 11, 23, 6, 30, tzinfo=UTC)

_RAW = """
import sys, time, orjson
started = time.process_time()
with open(sys.argv[1], "rb") as handle:
    for line in handle:
        if line.strip():
            orjson.loads(line)
print(time.process_time() - started)
"""

_REPLAY = """
import io, sys, time
from pathlib import Path
from alerts.replay import replay
from alerts.rules import load_rules
rules = [] if sys.argv[1] == "none" else load_rules(Path(sys.argv[1])).rules
fleet = Path(sys.argv[2])
started = time.process_time()
replay(rules, fleet / "events.jsonl", fleet / "accounts.jsonl", io.StringIO(), progress=None)
print(time.process_time() - started)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--accounts", type=int, default=36)
    parser.add_argument("--days", type=int, default=42)
    parser.add_argument("--seats", type=int, nargs="+", default=[1, 10])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rules", type=Path, default=REPO / "config" / "rules.yaml")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="replay-bench-") as tmp:
        for seats in args.seats:
            fleet = Path(tmp) / f"seats-{seats}"
            events = write_fleet(fleet, args.accounts, args.days, seats)
            account_days = args.accounts * args.days
            print(
                f"\nfleet: {args.accounts} accounts x {args.days} days, seats x{seats}: "
                f"{events:,} events, {events / account_days:.0f} per account-day"
            )
            measure(fleet, events, account_days, args.rules.resolve(), args.rounds)


def write_fleet(out: Path, accounts: int, days: int, seats: int) -> int:
    """The simulator's history for a fixed end, as ``engagewatch simulate --out`` writes it."""
    out.mkdir(parents=True)
    fleet = build_fleet(FleetSpec(accounts=accounts, seed=7, as_of=END.date(), seats=seats))
    with (out / "accounts.jsonl").open("wb") as handle:
        for account in fleet:
            handle.write(codec.dumps(account.record()) + b"\n")
    count = 0
    with (out / "events.jsonl").open("wb") as handle:
        for event in generate_events(fleet, END - timedelta(days=days), END, seed=7):
            handle.write(codec.dumps(event) + b"\n")
            count += 1
    return count


def measure(fleet: Path, events: int, account_days: int, rules: Path, rounds: int) -> None:
    rows: dict[str, list[float]] = {"raw": [], "no rules": [], "rules": []}
    for _ in range(rounds):
        rows["raw"].append(cpu(_RAW, str(fleet / "events.jsonl")))
        rows["no rules"].append(cpu(_REPLAY, "none", str(fleet)))
        rows["rules"].append(cpu(_REPLAY, str(rules), str(fleet)))
    for name, seconds in rows.items():
        rates = ", ".join(f"{events / s:,.0f}" for s in seconds)
        print(f"  {name:9} events/s (CPU): {rates}")
    ratios = [r / s for r, s in zip(rows["raw"], rows["rules"], strict=True)]
    bare = [r / s for r, s in zip(rows["raw"], rows["no rules"], strict=True)]
    print(f"  rules / raw: {fmt(ratios)}; no rules / raw: {fmt(bare)}")
    per_event = [s / events * 1e6 for s in rows["no rules"]]
    per_day = [
        (s - n) / account_days * 1e6 for s, n in zip(rows["rules"], rows["no rules"], strict=True)
    ]
    print(
        f"  per event: {statistics.median(per_event):.2f} us; "
        f"per account-day (the rules): {statistics.median(per_day):,.0f} us"
    )
    summary = {name: statistics.median(events / s for s in v) for name, v in rows.items()}
    print("  median events/s: " + json.dumps({k: round(v) for k, v in summary.items()}))


def cpu(script: str, *argv: str) -> float:
    """CPU seconds the step took in a fresh process (imports and start-up excluded)."""
    done = subprocess.run(
        [sys.executable, "-c", script, *argv],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
    )
    return float(done.stdout.strip().splitlines()[-1])


def fmt(ratios: list[float]) -> str:
    shown = ", ".join(f"{r:.2f}" for r in ratios)
    return f"{statistics.median(ratios):.2f} ({shown})"


if __name__ == "__main__":
    main()
