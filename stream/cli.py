"""``engagewatch``: the one command-line entry point (the README lists its commands)."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from config.settings import ConfigError, Settings, load_settings

if TYPE_CHECKING:
    from stream.publish import Publisher
    from stream.simulate import SimAccount

__all__ = ["main"]

log = logging.getLogger("engagewatch")


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("kafka").setLevel(logging.WARNING)  # kafka-python logs every connect
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        print(f"engagewatch: {exc}", file=sys.stderr)
        return 2
    handler = _COMMANDS[args.command]
    try:
        return handler(settings, args)
    except ConfigError as exc:  # e.g. a bad rules file, found when the app is built
        print(f"engagewatch: {exc}", file=sys.stderr)
        return 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="engagewatch", description="Streaming customer-adoption health alerts."
    )
    parser.add_argument("--config", help="settings YAML (default: $ENGAGEWATCH_CONFIG)")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("worker", help="run a Faust worker (ingest, engagement state)")

    produce = sub.add_parser("produce", help="publish JSONL events or account records to Kafka")
    produce.add_argument("file", type=Path)

    delete = sub.add_parser(
        "delete-account",
        help="delete accounts: their state goes, their firing alerts resolve (a tombstone)",
    )
    delete.add_argument("account_ids", nargs="+", metavar="ACCOUNT_ID")

    simulate = sub.add_parser("simulate", help="publish (or write) a deterministic demo fleet")
    simulate.add_argument("--accounts", type=positive_int, default=36)
    simulate.add_argument(
        "--days", type=positive_int, default=42, help="days of history, ending now"
    )
    simulate.add_argument("--seed", type=int, default=7)
    simulate.add_argument(
        "--seats",
        type=positive_int,
        default=1,
        help="users per account, as a multiple of the usual team (bigger customers)",
    )
    pace = simulate.add_mutually_exclusive_group()
    pace.add_argument(
        "--speed",
        type=positive_float,
        default=86_400.0,
        help="simulated seconds per wall second (default: a day per second)",
    )
    pace.add_argument("--fast", action="store_true", help="publish as fast as possible")
    simulate.add_argument(
        "--out", type=Path, help="write accounts.jsonl and events.jsonl here instead of Kafka"
    )

    alerts = sub.add_parser("alerts", help="print the alert events on the alerts topic")
    alerts.add_argument("--follow", action="store_true", help="keep printing new ones")
    alerts.add_argument("--json", action="store_true", help="one JSON event per line")

    replay = sub.add_parser("replay", help="backtest the rules over a history, without Kafka")
    replay.add_argument("events", type=Path, help="usage events, JSONL")
    replay.add_argument("--accounts", type=Path, help="account records, JSONL")
    replay.add_argument("--out", type=Path, required=True, help="where to write alert events")
    replay.add_argument("--rules", type=Path, help="rules YAML (default: the configured rules)")
    replay.add_argument(
        "--until",
        type=moment_argument,
        default=None,
        help="the clock a live worker would have reached: events after it are left out, "
        "idle accounts judged up to it (default: the last event)",
    )
    replay.add_argument(
        "--step-hours",
        type=step_hours,
        default=None,
        help="evaluation grid in hours, 1/60 to 24 (default: the evaluation_step_s setting, "
        "as live)",
    )
    replay.add_argument(
        "--jobs",
        type=positive_int,
        default=1,
        help="processes sharing the accounts (the output is the same; default 1)",
    )
    from stream import check_cli, deadletters_cli, triage_cli

    deadletters_cli.add_parser(sub)
    triage_cli.add_parser(sub)
    check_cli.add_parser(sub)
    return parser


def _worker(settings: Settings, args: argparse.Namespace) -> int:
    from faust import Worker

    from stream.app import create_app
    from stream.topics import ensure_topics

    ensure_topics(settings)
    engine = create_app(settings)
    worker = Worker(engine.app, loglevel=settings.log_level)
    # At "warning" and above Faust's progress spinner sets the root logger to DEBUG so
    # that it can spin on every record: every library's debug call then builds a log
    # record (a few % of the worker's CPU). A worker needs no spinner.
    worker.spinner = None
    worker.execute_from_commandline()  # returns only at shutdown (SIGTERM / Ctrl-C)
    return 0


def _produce(settings: Settings, args: argparse.Namespace) -> int:
    from stream.publish import Publisher, read_jsonl

    if not args.file.exists():
        print(f"engagewatch: {args.file}: no such file", file=sys.stderr)
        return 2
    publisher = Publisher(settings)
    try:
        report = publisher.send_lines(read_jsonl(args.file))
        publisher.flush()
    finally:
        publisher.close()
    print(
        f"published {report.events} events to {publisher.topics.events} "
        f"and {report.accounts} account records to {publisher.topics.accounts}"
    )
    return 0


def _delete_account(settings: Settings, args: argparse.Namespace) -> int:
    from stream.publish import Publisher

    publisher = Publisher(settings)
    try:
        for account_id in args.account_ids:
            publisher.delete_account(account_id)
        publisher.flush()
    finally:
        publisher.close()
    if publisher.report.failed:
        print(f"engagewatch: {publisher.report.failed} tombstones undelivered", file=sys.stderr)
        return 1
    print(f"published {len(args.account_ids)} tombstones to {publisher.topics.accounts}")
    return 0


def _simulate(settings: Settings, args: argparse.Namespace) -> int:
    from stream import codec
    from stream.simulate import FleetSpec, build_fleet, generate_events

    end = datetime.now(UTC).replace(microsecond=0)
    start = end - timedelta(days=args.days)
    spec = FleetSpec(accounts=args.accounts, seed=args.seed, as_of=end.date(), seats=args.seats)
    fleet = build_fleet(spec)
    events = generate_events(fleet, start, end, seed=args.seed)
    if args.out is None:
        return _publish_simulation(
            settings, fleet, events, start, None if args.fast else args.speed
        )
    try:
        args.out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        print(
            f"engagewatch: {args.out}: cannot make the directory: {exc.strerror}", file=sys.stderr
        )
        return 2
    accounts = b"".join(codec.dumps(account.record()) + b"\n" for account in fleet)
    (args.out / "accounts.jsonl").write_bytes(accounts)
    count = 0
    with (args.out / "events.jsonl").open("wb") as handle:
        for event in events:
            handle.write(codec.dumps(event) + b"\n")
            count += 1
    print(f"wrote {len(fleet)} accounts and {count} events to {args.out}")
    return 0


def _publish_simulation(
    settings: Settings,
    fleet: Sequence[SimAccount],
    events: Iterable[dict[str, object]],
    start: datetime,
    speed: float | None,
) -> int:
    """Publish the fleet's records, then its events, paced by ``speed`` if given."""
    from stream.publish import Publisher

    publisher = Publisher(settings)
    for account in fleet:
        publisher.send_json(account.record())
    publisher.flush()
    began = last_report = time.monotonic()
    try:
        for event in events:
            if speed is not None:
                _wait_until_due(publisher, event, began + _offset_s(event, start) / speed)
            publisher.send_json(event)
            if time.monotonic() - last_report > 5:
                last_report = time.monotonic()
                log.info("simulate: %d events published", publisher.report.events)
    except KeyboardInterrupt:
        pass
    finally:
        publisher.flush()
        publisher.close()
    print(
        f"simulate: published {publisher.report.accounts} accounts and "
        f"{publisher.report.events} events to {publisher.topics.events}"
    )
    return 0


def _offset_s(event: dict[str, object], start: datetime) -> float:
    at = datetime.fromisoformat(str(event["occurred_at"]).replace("Z", "+00:00"))
    return (at - start).total_seconds()


def _wait_until_due(publisher: Publisher, event: dict[str, object], due: float) -> None:
    delay = due - time.monotonic()
    if delay > 0:
        publisher.flush()  # make what is due visible before sleeping
        time.sleep(delay)


def _alerts(settings: Settings, args: argparse.Namespace) -> int:
    from kafka.consumer import KafkaConsumer

    from stream import codec
    from stream.topics import TopicNames

    consumer = KafkaConsumer(
        TopicNames.from_settings(settings).alerts,
        bootstrap_servers=settings.kafka_bootstrap.split(","),
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=-1 if args.follow else 3_000,
    )
    try:
        for record in consumer:
            event = codec.loads(record.value)
            print(codec.dumps(event).decode() if args.json else _alert_line(event), flush=True)
    except (KeyboardInterrupt, BrokenPipeError):
        pass
    finally:
        consumer.close()
    return 0


def _alert_line(event: dict[str, object]) -> str:
    annotations = event.get("annotations") or {}
    summary = annotations.get("summary", "") if isinstance(annotations, dict) else ""
    return f"{event['generated_at']}  {event['status']:<8} {event['severity']:<8} {summary}"


def _replay(settings: Settings, args: argparse.Namespace) -> int:
    from alerts.replay import replay
    from alerts.rules import load_rules
    from stream.app import rules_path, state_policy
    from stream.events import EventLimits

    for path in (args.events, args.accounts):
        if path is not None and not path.is_file():
            problem = "a directory" if path.is_dir() else "no such file"
            print(f"engagewatch: {path}: {problem}", file=sys.stderr)
            return 2
    rules = load_rules(args.rules or rules_path(settings)).rules
    try:
        out = args.out.open("w", encoding="utf-8")
    except OSError as exc:  # before hours of replay, not after
        print(f"engagewatch: {args.out}: cannot write: {exc.strerror}", file=sys.stderr)
        return 2
    with out:
        report = replay(
            rules,
            args.events,
            args.accounts,
            out,
            until=args.until,
            step=timedelta(hours=args.step_hours)
            if args.step_hours is not None
            else timedelta(seconds=settings.evaluation_step_s),
            policy=state_policy(settings, rules),
            jobs=args.jobs,
            limits=EventLimits(settings.max_event_bytes, timedelta(seconds=settings.future_skew_s)),
        )
    print(report.summary())
    return 0


def _dead_letters(settings: Settings, args: argparse.Namespace) -> int:
    from stream import deadletters_cli

    return deadletters_cli.run(settings, args)


def _check(settings: Settings, args: argparse.Namespace) -> int:
    from stream import check_cli

    return check_cli.run(settings, args)


def _triage(settings: Settings, args: argparse.Namespace) -> int:
    from stream import triage_cli

    return triage_cli.run(settings, args)


_COMMANDS = {
    "worker": _worker,
    "produce": _produce,
    "delete-account": _delete_account,
    "simulate": _simulate,
    "alerts": _alerts,
    "replay": _replay,
    "dead-letters": _dead_letters,
    "triage": _triage,
    "check": _check,
}


def positive_int(text: str) -> int:
    """A whole number of 1 or more, for counts such as --accounts or --jobs."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {value}")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number above 0, got {text}")
    return value


def step_hours(text: str) -> float:
    """--step-hours: within the evaluation_step_s setting's bounds (60 s to a day)."""
    hours = positive_float(text)
    if not 1 / 60 <= hours <= 24:
        raise argparse.ArgumentTypeError(f"must be from 1/60 (a minute) to 24 hours, got {text}")
    return hours


def moment_argument(text: str) -> datetime:
    """An RFC 3339 time with an offset, for options such as --until."""
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} needs an offset, e.g. Z")
    return moment


if __name__ == "__main__":
    sys.exit(main())
