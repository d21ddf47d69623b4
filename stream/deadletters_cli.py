"""``engagewatch dead-letters``: what is on the dead-letter topic, and sending it again.

Ops need two answers when dead letters pile up: *what* (how many, for which reason,
from which accounts) and, once the cause is fixed (a producer bug, a limit raised),
*send them again*. The command reads the dead-letter topic from its start to the end
it has when the command starts, so it always ends. ``--republish`` sends each chosen
letter's exact original bytes, with its original key, back to the topic it was
rejected from; repeating it is safe for events, whose ids are counted once within
the lateness window (an event by then older goes to the dead letters again as
``late``). Choosing (reason, account, time) is plain code, testable without Kafka.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TextIO

from config.settings import Settings
from stream.deadletter import MAX_KEY_BYTES, MAX_ORIGINAL_BYTES, DeadLetter

__all__ = ["Choice", "DeadLetterSummary", "add_parser", "run"]

DETAIL_WIDTH = 100
TOP_ACCOUNTS = 10


@dataclass(frozen=True, slots=True)
class Choice:
    """Which letters a command acts on: each given filter must match (none: all)."""

    reasons: frozenset[str] = frozenset()
    """Exact reasons, or prefixes ending in ``:`` (``bad_value:`` for every field)."""
    accounts: frozenset[str] = frozenset()
    since: datetime | None = None

    def takes(self, letter: DeadLetter) -> bool:
        if self.reasons and not any(
            letter.reason == reason or (reason.endswith(":") and letter.reason.startswith(reason))
            for reason in self.reasons
        ):
            return False
        if self.accounts and _key(letter) not in self.accounts:
            return False
        return self.since is None or letter.rejected_at >= self.since


@dataclass(slots=True)
class DeadLetterSummary:
    """Counts over the whole topic, and over the letters chosen. Letters are not kept
    (a producer bug can leave millions): each chosen one is handed to ``each`` as it is
    read, and only the first ``show`` are kept to print."""

    total: int = 0
    by_reason: Counter[str] = field(default_factory=Counter)
    unreadable: int = 0
    """Records that are not dead letters of this schema (counted, never republished)."""
    chosen: int = 0
    by_key: Counter[str] = field(default_factory=Counter)
    first_at: datetime | None = None
    last_at: datetime | None = None
    shown: list[DeadLetter] = field(default_factory=list)

    @classmethod
    def of(
        cls,
        records: Iterable[bytes | None],
        choice: Choice,
        *,
        show: int = 0,
        each: Callable[[DeadLetter], None] | None = None,
    ) -> DeadLetterSummary:
        summary = cls()
        for value in records:
            summary.total += 1
            try:
                letter = DeadLetter.from_json(value or b"")
            except (ValueError, KeyError, TypeError, AttributeError):
                summary.unreadable += 1
                continue
            summary.by_reason[letter.reason] += 1
            if choice.takes(letter):
                summary._choose(letter, show)
                if each is not None:
                    each(letter)
        return summary

    def _choose(self, letter: DeadLetter, show: int) -> None:
        self.chosen += 1
        self.by_key[_key(letter) or "(no key)"] += 1
        at = letter.rejected_at
        self.first_at = at if self.first_at is None else min(self.first_at, at)
        self.last_at = at if self.last_at is None else max(self.last_at, at)
        if len(self.shown) < show:
            self.shown.append(letter)

    def report(self, topic: str, out: TextIO) -> None:
        print(f"{self.total:,} dead letters on {topic}", file=out)
        for reason, count in sorted(self.by_reason.items(), key=lambda item: (-item[1], item[0])):
            print(f"  {count:>10,}  {reason}", file=out)
        if self.unreadable:
            print(f"  {self.unreadable:>10,}  (not a dead letter: left alone)", file=out)
        print(f"chosen: {self.chosen:,}", file=out)
        if self.first_at is None or self.last_at is None:
            return
        print(
            f"  rejected from {self.first_at.isoformat()} to {self.last_at.isoformat()}", file=out
        )
        keys = self.by_key
        top = ", ".join(f"{key} {n:,}" for key, n in keys.most_common(TOP_ACCOUNTS))
        more = len(keys) - TOP_ACCOUNTS
        rest = f", {more:,} more" if more > 0 else ""
        print(f"  {len(keys):,} keys: {top}{rest}", file=out)
        for letter in self.shown:
            print(_line(letter), file=out)


def add_parser(sub: Any) -> None:
    """Add ``dead-letters`` to the ``engagewatch`` parser."""
    from stream.cli import moment_argument

    parser = sub.add_parser(
        "dead-letters",
        help="summarise the dead-letter topic; --republish sends chosen letters again",
    )
    parser.add_argument(
        "--reason",
        action="append",
        default=[],
        help="only this reason (repeatable; a prefix ending in ':' such as bad_value:)",
    )
    parser.add_argument(
        "--account", action="append", default=[], help="only this account (its key; repeatable)"
    )
    parser.add_argument(
        "--since", type=moment_argument, help="only letters rejected at or after this RFC 3339 time"
    )
    parser.add_argument("--show", type=int, default=0, metavar="N", help="print N chosen letters")
    parser.add_argument(
        "--republish",
        action="store_true",
        help="send the chosen letters' original bytes, with their keys, to the topics "
        "they were rejected from",
    )


def run(settings: Settings, args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    from stream.publish import Publisher
    from stream.topics import TopicNames

    topics = TopicNames.from_settings(settings)
    choice = Choice(frozenset(args.reason), frozenset(args.account), args.since)
    values = _values(settings, topics.dead_letters)
    if not args.republish:
        DeadLetterSummary.of(values, choice, show=args.show).report(topics.dead_letters, out)
        return 0
    publisher = Publisher(settings)
    skipped: Counter[str] = Counter()  # by topic: not an engine input
    truncated = 0  # letters keeping only the first bytes of the original (or its key)

    def republish(letter: DeadLetter) -> None:
        nonlocal truncated
        if letter.is_truncated:  # only its first bytes: the whole is at its source position
            truncated += 1
        elif letter.source.topic == topics.events:
            publisher.send_event(letter.original, letter.source.key)
        elif letter.source.topic == topics.accounts:
            publisher.send_account(letter.original, letter.source.key)
        else:
            skipped[letter.source.topic] += 1

    try:
        summary = DeadLetterSummary.of(values, choice, show=args.show, each=republish)
        publisher.flush()
    finally:
        publisher.close()
    summary.report(topics.dead_letters, out)
    report = publisher.report
    print(
        f"republished {report.events:,} events to {topics.events} and "
        f"{report.accounts:,} account records to {topics.accounts}",
        file=out,
    )
    if truncated:
        print(
            f"left alone: {truncated:,} letters that kept only the first "
            f"{MAX_ORIGINAL_BYTES:,} bytes of their original, or the first "
            f"{MAX_KEY_BYTES:,} of its key (read the whole at the source position they name)",
            file=out,
        )
    for topic, count in skipped.items():
        print(f"left alone: {count:,} from {topic}, not an engine input topic", file=out)
    if report.failed:
        print(f"engagewatch: {report.failed:,} records were not delivered", file=sys.stderr)
        return 1
    return 0


def _values(settings: Settings, topic: str) -> Iterator[bytes | None]:
    """Every value on ``topic`` from its start to the end it has now."""
    from kafka.consumer import KafkaConsumer
    from kafka.structs import TopicPartition

    consumer = KafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap.split(","), enable_auto_commit=False
    )
    try:
        partitions = sorted(consumer.partitions_for_topic(topic) or ())
        assigned = [TopicPartition(topic, partition) for partition in partitions]
        if not assigned:
            return
        consumer.assign(assigned)
        consumer.seek_to_beginning(*assigned)
        end = consumer.end_offsets(assigned)
        while any(consumer.position(tp) < end[tp] for tp in assigned):
            for tp, records in consumer.poll(timeout_ms=1_000).items():
                for record in records:
                    if record.offset < end[tp]:
                        yield record.value
    finally:
        consumer.close()


def _line(letter: DeadLetter) -> str:
    source = letter.source
    detail = letter.detail
    if len(detail) > DETAIL_WIDTH:
        detail = detail[: DETAIL_WIDTH - 3] + "..."
    return (
        f"{letter.rejected_at.isoformat()}  {letter.reason}  {_key(letter) or '-'}  "
        f"{source.topic}/{source.partition}@{source.offset}  {detail}"
    )


def _key(letter: DeadLetter) -> str | None:
    key = letter.source.key
    return key.decode("utf-8", "replace") if key is not None else None
