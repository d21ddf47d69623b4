"""Cost of evaluating the rules for one account (done once per tick of the grid).

.venv/bin/python bench/sweep_cost.py [--accounts 36]
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, datetime, timedelta
from datetime import time as dtime
from pathlib import Path
from zoneinfo import ZoneInfo

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from alerts.evaluate import Context  # noqa: E402
from alerts.evaluation import AccountRun, RuleSet  # noqa: E402
from alerts.rules import load_rules  # noqa: E402
from alerts.sweep import AccountAlerts, sweep_account  # noqa: E402
from stream.accounts import Account  # noqa: E402
from stream.engagement import EngagementState, fold_events  # noqa: E402
from stream.events import UsageEvent, validate_event  # noqa: E402
from stream.simulate import FleetSpec, build_fleet, generate_events  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--accounts", type=int, default=36)
    args = parser.parse_args()
    end = datetime(2026, 11, 23, 12, tzinfo=UTC)
    rules = load_rules(REPO / "config" / "rules.yaml").rules
    contexts = []
    for sim in build_fleet(FleetSpec(accounts=args.accounts, seed=7, as_of=end.date())):
        state = EngagementState(sim.account_id, timezone=sim.timezone)
        raw = generate_events([sim], end - timedelta(days=42), end)
        fold_events(
            state, [e for e in (validate_event(d, end) for d in raw) if isinstance(e, UsageEvent)]
        )
        account = Account(
            sim.account_id,
            sim.name,
            sim.licenses,
            timezone=sim.timezone,
            contract_start=sim.contract_start,
        )
        contexts.append(Context(state, account, end))
    started = time.perf_counter()
    for context in contexts:
        sweep_account(rules, context, AccountAlerts())
    per_account_ms = (time.perf_counter() - started) * 1000 / len(contexts)
    print(
        f"{len(contexts)} accounts x {len(rules)} rules (42 days of state each): "
        f"{per_account_ms:.2f} ms per account per evaluation, every rule on its own"
    )
    # As the worker and replay judge: the day's first tick (the rules share what they
    # read), then more ticks of the same local day on the same history (reused).
    hours = 3
    runs = []
    for context in contexts:
        book = AccountAlerts()
        run = AccountRun(RuleSet(tuple(rules), 3600.0), context.state, context.account, book)
        zone = ZoneInfo(context.state.timezone)
        noon = datetime.combine(end.date() + timedelta(days=1), dtime(12), zone).timestamp()
        book.evaluated_through = noon - 3600  # so that on_clock(noon) judges one tick
        runs.append((run, noon))
    started = time.perf_counter()
    for run, noon in runs:
        run.on_clock(noon)
    first_ms = (time.perf_counter() - started) * 1000 / len(runs)
    started = time.perf_counter()
    for run, noon in runs:
        run.on_clock(noon + hours * 3600)
    reused_ms = (time.perf_counter() - started) * 1000 / (len(runs) * hours)
    print(f"the first tick of a local day, as the worker judges it: {first_ms:.2f} ms")
    print(
        f"{hours} more hourly ticks of that day, nothing new folded: "
        f"{reused_ms:.3f} ms per account per evaluation (findings reused)"
    )


if __name__ == "__main__":
    main()
