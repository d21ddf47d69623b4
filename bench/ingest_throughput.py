"""Engine vs raw consumer, on the same pre-filled topic, in one run.

    .venv/bin/python bench/ingest_throughput.py [--accounts 36] [--days 84] [--rules none]

Fills a fresh topic with a simulated fleet's events, then measures, one after the
other on that same topic:

  raw     an aiokafka consumer (getmany) that only decodes each value's JSON;
  engine  the real worker (Faust app from ``create_app``): ingest, validation, fold
          into per-account state, one table write per account per batch;
  core    the ingest pipeline in-process without Kafka, and without rules or account
          records (days in UTC): ingest alone, whatever ``--rules`` says.

Each rate counts from the first batch received to the last event handled, so
process start-up and consumer-group joins are excluded; so is the engine's wait for
its accounts agent to read the account records at start (stream/records_first.py),
printed apart as ``record_wait_s``. Prints events/s and ratios,
and the CPU time per event over the same span (steadier when the machine is shared).
The engine judges its rules as it folds (the shipped rules unless ``--rules FILE``);
``--rules none`` runs it without rules, to measure ingest alone.
Uses a running ``scripts/dev-stack up`` if there is one (``--stack DIR``, default
``$ENGAGEWATCH_TEST_STACK_DIR`` or this checkout's ``.dev-stack``), else starts its own.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))
sys.path.insert(0, str(REPO))

import devstack  # noqa: E402

from config.settings import Settings, load_settings  # noqa: E402
from stream import codec  # noqa: E402
from stream.clock import SystemClock  # noqa: E402
from stream.deadletter import DeadLetter, SourcePosition  # noqa: E402
from stream.ingest import Batch, RawMessage  # noqa: E402
from stream.pipeline import IngestPipeline  # noqa: E402
from stream.publish import Publisher, classify  # noqa: E402
from stream.simulate import FleetSpec, build_fleet, generate_events  # noqa: E402


def fill(settings: Settings, accounts: int, days: int) -> list[bytes]:
    end = datetime.now(UTC).replace(microsecond=0)
    fleet = build_fleet(FleetSpec(accounts=accounts, seed=3, as_of=end.date()))
    lines = [codec.dumps(e) for e in generate_events(fleet, end - timedelta(days=days), end)]
    publisher = Publisher(settings)
    for account in fleet:
        publisher.send_json(account.record())
    for line in lines:
        publisher.send_event(line, classify(line)[1])
    publisher.flush()
    publisher.close()
    return lines


async def raw_consumer(settings: Settings, expected: int) -> dict[str, Any]:
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(
        settings.topic("events"),
        bootstrap_servers=settings.kafka_bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
    )
    await consumer.start()
    seen = 0
    first: float | None = None
    first_cpu = 0.0
    try:
        while seen < expected:
            batches = await consumer.getmany(timeout_ms=1000, max_records=10_000)
            for records in batches.values():
                if first is None:
                    first, first_cpu = time.perf_counter(), time.process_time()
                for record in records:
                    codec.loads(record.value)
                seen += len(records)
        elapsed = time.perf_counter() - (first or time.perf_counter())
        cpu = time.process_time() - first_cpu
    finally:
        await consumer.stop()
    return {"events": seen, "seconds": elapsed, "rate": seen / elapsed, "cpu_s": cpu}


def engine_worker(expected: int, result_path: Path) -> None:
    """Runs inside a child process: the real worker, stopped once it has seen it all."""
    from faust import Worker

    from stream.app import create_app

    settings = load_settings()
    engine = create_app(settings)
    pipeline = engine.pipeline
    totals = pipeline.totals
    process = pipeline.process
    marks: dict[str, float] = {}

    async def timed(messages: Batch) -> list[str]:
        # From the start of the first batch to the end of the last, as the raw consumer
        # is timed (a timer polling the totals would add its own lateness).
        if "first" not in marks:
            marks["first"], marks["first_cpu"] = time.perf_counter(), time.process_time()
        try:
            return await process(messages)
        finally:
            marks["last"], marks["last_cpu"] = time.perf_counter(), time.process_time()

    pipeline.process = timed  # type: ignore[method-assign]
    # A new account's first events wait for the records published before them: at the
    # start that is the accounts agent catching up, a start-up cost the raw consumer
    # does not have. Timed apart and left out of the engine's span.
    waited = {"s": 0.0}
    wait = pipeline._records_first
    if wait is not None:

        async def timed_wait(partitions: Any) -> object:
            started = time.perf_counter()
            try:
                return await wait(partitions)
            finally:
                waited["s"] += time.perf_counter() - started

        pipeline._records_first = timed_wait

    @engine.app.timer(0.05)
    async def watch() -> None:
        if totals.messages >= expected:
            elapsed = marks["last"] - marks["first"] - waited["s"]
            result = {
                "events": totals.messages,
                "seconds": elapsed,
                "record_wait_s": waited["s"],
                "rate": totals.messages / elapsed,
                "batches": totals.batches,
                "busy_s": totals.busy_s,
                "cpu_s": marks["last_cpu"] - marks["first_cpu"],  # all the worker's threads
            }
            # Faust redirects stdout to its logger, so hand the result over in a file.
            result_path.write_text(json.dumps(result))
            os._exit(0)  # the measurement is taken; skip a graceful shutdown

    # As `engagewatch worker` runs it. (At "warning" or above Faust adds a progress
    # spinner and sets the root logger to DEBUG, so every library's debug call builds a
    # log record: that would be timed here, and is not how the worker runs by default.)
    Worker(engine.app, loglevel=settings.log_level).execute_from_commandline()


def run_engine(settings: Settings, expected: int) -> dict[str, Any]:
    env = {
        **os.environ,
        **{
            f"ENGAGEWATCH_{k.upper()}": str(v)
            for k, v in settings.model_dump(mode="json").items()
            if v is not None and not isinstance(v, list)
        },
    }
    result_path = Path(settings.data_dir) / "engine-result.json"
    result_path.parent.mkdir(parents=True, exist_ok=True)
    out = subprocess.run(
        [sys.executable, __file__, "--engine-child", str(expected), "--result", str(result_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if result_path.exists():
        result: dict[str, Any] = json.loads(result_path.read_text())
        return result
    raise RuntimeError(f"the engine did not finish:\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}")


async def core_only(lines: list[bytes]) -> dict[str, Any]:
    table: dict[str, Any] = {}

    async def send(letter: DeadLetter) -> None:
        pass

    pipeline = IngestPipeline(table, send, SystemClock())
    messages = [
        RawMessage(line, SourcePosition("t", 0, i, codec.loads(line)["account_id"].encode()))
        for i, line in enumerate(lines)
    ]
    started, started_cpu = time.perf_counter(), time.process_time()
    for i in range(0, len(messages), 2_000):
        await pipeline.process(messages[i : i + 2_000])
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - started_cpu
    return {
        "events": len(messages),
        "seconds": elapsed,
        "rate": len(messages) / elapsed,
        "cpu_s": cpu,
    }


def no_rules(directory: str) -> str:
    path = Path(directory) / "no-rules.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("rules: []\n")
    return str(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--accounts", type=int, default=36)
    parser.add_argument("--days", type=int, default=84)
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument(
        "--rules", help="the engine's rules file; 'none' for no rules (default: shipped rules)"
    )
    parser.add_argument(
        "--batch-max", type=int, help="the worker's batch_max_events (default: the setting's)"
    )
    parser.add_argument(
        "--stack",
        type=Path,
        default=Path(os.environ.get("ENGAGEWATCH_TEST_STACK_DIR") or devstack.DEFAULT_STATE),
        help="a running dev stack's state directory (default: $ENGAGEWATCH_TEST_STACK_DIR, "
        "else .dev-stack); without one running there, a stack is started and stopped",
    )
    parser.add_argument("--engine-child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.engine_child:
        engine_worker(args.engine_child, args.result)
        return
    state = args.stack
    stack = devstack.status(state)
    started_here = stack is None
    stack = stack or devstack.up(state)
    try:
        name = f"bench{uuid.uuid4().hex[:8]}"
        settings = Settings(
            kafka_bootstrap=stack.bootstrap,
            redis_url=stack.redis_url,
            topic_prefix=name,
            app_id=name,
            partitions=args.partitions,
            web_port=devstack._free_ports(1)[0],
            log_level="info",  # the default; see engine_worker
            data_dir=f"/tmp/{name}",
            rules_file=no_rules(f"/tmp/{name}") if args.rules == "none" else args.rules,
        )
        if args.batch_max:
            settings = settings.model_copy(update={"batch_max_events": args.batch_max})
        lines = fill(settings, args.accounts, args.days)
        print(
            f"topic {settings.topic('events')}: {len(lines)} events, {args.accounts} accounts, "
            f"{args.partitions} partitions"
        )
        raw = asyncio.run(raw_consumer(settings, len(lines)))
        engine = run_engine(settings, len(lines))
        core = asyncio.run(core_only(lines))
    finally:
        if started_here:
            devstack.down(state)
    for label, result in (
        ("raw aiokafka getmany + JSON decode", raw),
        ("engine (Faust worker: ingest + fold + table writes)", engine),
        ("core pipeline in-process: no Kafka, no rules", core),
    ):
        print(
            f"{label:<54} {result['rate']:>10,.0f} events/s  ({result['seconds']:.2f} s, "
            f"CPU {result['cpu_s'] * 1e6 / result['events']:.1f} us/event)"
        )
    waited = engine.get("record_wait_s", 0.0)
    print(f"engine's wait for the account records at its start (left out): {waited:.2f} s")
    print(f"ratio engine / raw: {engine['rate'] / raw['rate']:.2f}")
    print(f"ratio core / raw:   {core['rate'] / raw['rate']:.2f}")
    # CPU time per event moves less than wall time when other work shares the machine.
    print(f"CPU ratio engine / raw: {raw['cpu_s'] / engine['cpu_s']:.2f}")


if __name__ == "__main__":
    main()
