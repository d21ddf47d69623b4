"""Memory and CPU of a restarted worker's sweep: nothing held decoded, every account judged.

.venv/bin/python bench/sweep_memory.py [--accounts 1000] [--days 28]

Folds a simulated fleet through the worker's pure parts (tests/unit/live_wiring.py,
wired as stream/app.py wires them, with ``decoded_states`` 100), starts them again on
the same tables, sweeps once to catch up the ticks, then traces the next sweep.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
import time
import tracemalloc
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from alerts.rules import load_rules  # noqa: E402
from stream import codec  # noqa: E402
from stream.clock import ManualClock  # noqa: E402
from stream.deadletter import SourcePosition  # noqa: E402
from stream.ingest import RawMessage  # noqa: E402
from stream.pipeline import AccountsPipeline, IngestPipeline  # noqa: E402
from stream.simulate import FleetSpec, build_fleet, generate_events  # noqa: E402
from stream.sweeper import Sweeper  # noqa: E402
from tests.unit.live_wiring import live_engine  # noqa: E402

END = datetime(2026, 11, 25, 15, 30, tzinfo=UTC)
BATCH = 5_000


def message(obj: dict[str, Any], offset: int) -> RawMessage:
    key = str(obj["account_id"]).encode()
    return RawMessage(codec.dumps(obj), SourcePosition("bench", 0, offset, key))


async def nothing(*_: Any) -> None:
    pass


async def measure(accounts: int, days: int) -> None:
    rules = load_rules(REPO / "config" / "rules.yaml").rules
    fleet = build_fleet(FleetSpec(accounts=accounts, seed=3, as_of=END.date()))
    engagement: dict[str, Any] = {}
    records: dict[str, Any] = {}
    alerts: dict[str, Any] = {}
    clock = ManualClock(END)
    await AccountsPipeline(records, nothing, clock).process(
        [message(a.record(), i) for i, a in enumerate(fleet)]
    )

    def engine() -> tuple[IngestPipeline, Sweeper]:
        return live_engine(
            rules,
            step_s=21_600.0,
            engagement=engagement,
            accounts=records,
            alerts=alerts,
            publish=nothing,
            dead_letter=nothing,
            clock=clock,
            catch_up_lag_s=(days + 12) * 86_400.0,
            decoded_states=100,
        )

    pipeline, _ = engine()
    events = list(generate_events(fleet, END - timedelta(days=days), END, seed=3))
    for start in range(0, len(events), BATCH):
        chunk = events[start : start + BATCH]
        await pipeline.process([message(e, start + i) for i, e in enumerate(chunk)])
    del pipeline
    _, sweeper = engine()  # the restart: same tables, nothing decoded
    await sweeper.sweep(END)
    gc.collect()
    tracemalloc.start()
    started = time.process_time()
    report = await sweeper.sweep(END + timedelta(minutes=1))
    cpu = time.process_time() - started
    _, peak = tracemalloc.get_traced_memory()
    print(
        f"{accounts} accounts, {days} days, {len(events):,} events: the sweep judged "
        f"{report.accounts}; peak traced {peak / 1e6:.1f} MB; CPU {cpu:.2f} s under tracemalloc"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--accounts", type=int, default=1_000)
    parser.add_argument("--days", type=int, default=28)
    args = parser.parse_args()
    asyncio.run(measure(args.accounts, args.days))


if __name__ == "__main__":
    main()
