"""Replay a history file through the rules, without Kafka: a backtest.

``engagewatch replay EVENTS.jsonl --accounts ACCOUNTS.jsonl --out ALERTS.jsonl``
decodes every event with the same contract as the worker, runs each account's events
in file order (the order a producer would publish them in, which its partition keeps)
along the same evaluation grid as a live worker (``alerts/backtest.py``), up to the
history's last event, and writes every alert event the rules would have published, in
time order, with ``generated_at`` set to the evaluation instant so the output is
deterministic. A live worker fed the same file publishes the same alert events.
"""

from __future__ import annotations

import gc
import multiprocessing
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from operator import add, itemgetter
from pathlib import Path
from typing import Any, Literal, TextIO

from alerts.backtest import DEFAULT_STEP, Notice, backtest_records
from alerts.evaluate import Context
from alerts.events import alert_event
from alerts.rules import Rule
from alerts.sweep import log_failure
from stream import codec
from stream.accounts import Account, decode_account
from stream.engagement import StatePolicy
from stream.events import EventLimits, Record, Rejection, decode_batch, decode_event, record_of
from stream.publish import classify

__all__ = ["ReplayReport", "replay"]


@dataclass
class ReplayReport:
    events: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    accounts: int = 0
    alerts: Counter[str] = field(default_factory=Counter)
    failed: Counter[str] = field(default_factory=Counter)
    """Evaluations in which a rule raised, by rule: it judged nothing then (the first
    failure of each rule in each account is logged with its traceback)."""
    seconds: float = 0.0
    accounts_rejected: list[str] = field(default_factory=list)
    """Account records that did not decode, as ``file:line: reason: detail``: left out,
    so an account with no other record is judged without one (no name, time zone,
    licenses or calendar)."""
    duplicates: int = 0
    """Events whose id the account had seen already (counted once, as live)."""
    account_records: int = 0
    """Account records read (``--accounts``, and any among the events)."""
    after_until: int = 0
    """Events that occurred after ``--until``, left out."""

    def count_folded(self, folded: Counter[str]) -> None:
        """Events the fold left out: late ones are rejected (the worker dead-letters
        them as ``late``), duplicates counted once."""
        if folded["late"]:
            self.rejected["late"] += folded["late"]
        self.duplicates += folded["duplicate"]

    def summary(self) -> str:
        rate = self.events / self.seconds if self.seconds else 0.0
        lines = [
            f"replayed {self.events} events of {self.accounts} accounts in {self.seconds:.2f} s "
            f"({rate:,.0f} events/s)",
            f"rejected: {dict(self.rejected) or 'none'}",
            *([f"duplicates (counted once): {self.duplicates}"] if self.duplicates else []),
            *([f"after --until, left out: {self.after_until}"] if self.after_until else []),
            f"account records: {self.account_records}",
            *(
                [
                    f"account records rejected ({len(self.accounts_rejected)}), left out (an "
                    "account with no valid record is judged without one):"
                ]
                if self.accounts_rejected
                else []
            ),
            *(f"  {line}" for line in self.accounts_rejected[:_SHOWN_REJECTIONS]),
            *(
                [f"  ... and {len(self.accounts_rejected) - _SHOWN_REJECTIONS} more"]
                if len(self.accounts_rejected) > _SHOWN_REJECTIONS
                else []
            ),
            *([f"rules that failed (see the log): {dict(self.failed)}"] if self.failed else []),
            f"alert events written: {sum(self.alerts.values())}",
            *(f"  {kind}: {count}" for kind, count in sorted(self.alerts.items())),
        ]
        return "\n".join(lines)


def replay(
    rules: Sequence[Rule],
    events_path: Path,
    accounts_path: Path | None,
    out: TextIO,
    *,
    step: timedelta = DEFAULT_STEP,
    policy: StatePolicy | None = None,
    progress: TextIO | Literal["stderr"] | None = "stderr",
    until: datetime | None = None,
    jobs: int = 1,
    limits: EventLimits | None = None,
) -> ReplayReport:
    """Backtest every account of ``events_path``; write alert events to ``out``.

    Idle accounts are judged up to the history's last event, or up to ``until`` (the
    clock a live worker would have reached). Accounts are independent, so ``jobs``
    processes can share them (where processes fork); the output is the same. ``limits``:
    the worker's (``max_event_bytes``, ``future_skew_s``), so that both take the same
    events."""
    if progress == "stderr":  # the stream of the moment, not the one at import time
        progress = sys.stderr
    report = ReplayReport()
    started = time.perf_counter()
    with _collecting_rarely():
        _replay(
            rules,
            events_path,
            accounts_path,
            out,
            report,
            options=_Options(step, policy, progress, until, jobs, limits or EventLimits()),
        )
    report.seconds = time.perf_counter() - started
    return report


@dataclass(frozen=True)
class _Options:
    step: timedelta
    policy: StatePolicy | None
    progress: TextIO | None
    until: datetime | None
    jobs: int
    limits: EventLimits


def _replay(
    rules: Sequence[Rule],
    events_path: Path,
    accounts_path: Path | None,
    out: TextIO,
    report: ReplayReport,
    *,
    options: _Options,
) -> None:
    accounts = _load_accounts(accounts_path, report) if accounts_path else {}
    # Reading makes records (tuples of plain values: no cycles) kept to the end, so the
    # collector has nothing to find in them: it stays off while reading, and they stay
    # out of its later walks.
    collecting = gc.isenabled()
    gc.disable()
    try:
        by_account = _load_events(events_path, report, accounts, options.limits)
        if options.until is not None:
            by_account = _cut_at(by_account, options.until.timestamp(), report)
    finally:
        if collecting:
            gc.enable()
    if not gc.get_freeze_count():  # a caller's own freeze is theirs to undo: left alone
        gc.freeze()
    report.accounts = len(by_account)
    if not by_account:
        return
    # The earliest and latest occurrence, wherever they sit in the file (events arrive
    # out of order): nothing the rules judge from the first event on is left out.
    times = {account_id: list(map(_TIME, records)) for account_id, records in by_account.items()}
    first = min(min(account_times) for account_times in times.values())
    last = max(max(account_times) for account_times in times.values())
    start = datetime.fromtimestamp(first, UTC)
    end = options.until or datetime.fromtimestamp(last, UTC)
    work = _Work(rules, accounts, by_account, times, start, end, options.step, options.policy)
    jobs, progress = options.jobs, options.progress
    written: list[_Written] = []
    # The busiest accounts first, so that no process is left with one at the end.
    account_ids = sorted(by_account, key=lambda a: (-len(by_account[a]), a))
    if jobs > 1 and len(account_ids) > 1 and _FORK is not None:
        global _WORK  # noqa: PLW0603 - how forked processes inherit the decoded history
        _WORK = work
        try:
            with _FORK.Pool(min(jobs, len(account_ids))) as pool:
                results = pool.imap_unordered(_run_account, account_ids)
                for index, (found, failed, folded) in enumerate(results, 1):
                    written.extend(found)
                    report.failed.update(failed)
                    report.count_folded(folded)
                    if progress is not None:
                        _show_progress(progress, index, len(account_ids))
        finally:
            _WORK = None
    else:
        for index, account_id in enumerate(account_ids, 1):
            found, failed, folded = work.run(account_id)
            written.extend(found)
            report.failed.update(failed)
            report.count_folded(folded)
            if progress is not None:
                _show_progress(progress, index, len(account_ids))
    for _, _, event in sorted(written, key=lambda item: (item[0], item[1])):
        out.write(codec.dumps(event).decode() + "\n")
        report.alerts[f"{event['rule']}:{event['status']}"] += 1


@contextmanager
def _collecting_rarely() -> Iterator[None]:
    """Fewer cyclic-GC walks while replaying, as the worker does (stream/bulk.py): the
    history read stays to the end, and judging makes many short-lived objects that
    collecting every 700 allocations would walk again and again. Restored after."""
    threshold = gc.get_threshold()
    frozen = gc.get_freeze_count()
    gc.set_threshold(GC_YOUNG_THRESHOLD, *threshold[1:])
    try:
        yield
    finally:
        if not frozen:  # froze only if nothing was frozen before (see _replay)
            gc.unfreeze()
        gc.set_threshold(*threshold)


_Written = tuple[datetime, str, dict[str, Any]]
_Done = tuple[list[_Written], Counter[str], Counter[str]]
"""One account's alert events, its rules' failures, and the events its fold left out
(``late``, ``duplicate``)."""


@dataclass(frozen=True)
class _Work:
    """What every account's backtest needs."""

    rules: Sequence[Rule]
    accounts: dict[str, Account]
    by_account: dict[str, list[Record]]
    times: dict[str, list[float]]
    """Each account's occurrence times, in its records' order."""
    start: datetime
    end: datetime
    step: timedelta
    policy: StatePolicy | None

    def run(self, account_id: str) -> _Done:
        account = self.accounts.get(account_id)  # None: judged as live, without metadata
        records = self.by_account[account_id]
        failed: Counter[str] = Counter()
        folded: Counter[str] = Counter()

        def on_failure(rule: Rule, context: Context, error: Exception) -> None:
            if not failed[rule.name]:
                log_failure(rule, context, error)
            failed[rule.name] += 1

        notices = backtest_records(
            self.rules,
            account_id,
            records,
            self.start,
            self.end,
            account=account,
            step=self.step,
            policy=self.policy,
            times=self.times[account_id],
            on_failure=on_failure,
            folded=folded,
        )
        return list(_events(notices, account)), failed, folded


_FORK = (
    multiprocessing.get_context("fork")
    if "fork" in multiprocessing.get_all_start_methods()
    else None
)
_WORK: _Work | None = None
"""Set in the parent just before the pool forks: children read the decoded history
from memory they inherited, instead of receiving it pickled."""


def _run_account(account_id: str) -> _Done:
    assert _WORK is not None, "only called in a forked child"
    return _WORK.run(account_id)


def _events(notices: Iterable[Notice], account: Account | None) -> Iterator[_Written]:
    for notice in notices:
        change = notice.change
        event = alert_event(change, account, change.at, inhibited_by=notice.inhibited_by)
        yield change.at, change.alert.fingerprint, event


def _load_accounts(path: Path, report: ReplayReport) -> dict[str, Account]:
    accounts: dict[str, Account] = {}
    with path.open("rb") as handle:
        for number, line in enumerate(handle, 1):
            if line.strip():
                _take_account(line.strip(), f"{path}:{number}", accounts, report)
    return accounts


def _take_account(
    line: bytes, where: str, accounts: dict[str, Account], report: ReplayReport
) -> None:
    """One account record: it replaces the account's earlier one, as on the accounts
    topic; one that does not decode is named in the report and changes nothing."""
    result = decode_account(line)
    if isinstance(result, Account):
        accounts[result.account_id] = result
        report.account_records += 1
    else:
        report.accounts_rejected.append(f"{where}: {result.reason}: {result.detail}")


def _cut_at(
    by_account: dict[str, list[Record]], until_s: float, report: ReplayReport
) -> dict[str, list[Record]]:
    """The history a live worker would have had at ``until``: the events that occurred
    after it left out (and counted)."""
    kept = {}
    for account_id, records in by_account.items():
        before = [record for record in records if record[2] <= until_s]
        report.after_until += len(records) - len(before)
        if before:
            kept[account_id] = before
    report.events -= report.after_until  # read, but not replayed
    return kept


def _load_events(
    path: Path, report: ReplayReport, accounts: dict[str, Account], limits: EventLimits
) -> dict[str, list[Record]]:
    """Each account's events as records, in file order, decoded as the worker does: the
    common event in one typed pass, anything else by the careful path, which alone
    decides a rejection (stream/events.py). Account records among the events (a file
    ``engagewatch produce`` takes: it sends them to the accounts topic) go to
    ``accounts``, a later one for an account replacing an earlier one."""
    now = datetime.now(UTC)
    limit_s = (now + limits.future_skew).timestamp()
    by_account: dict[str, list[Record]] = {}
    for chunk, line_number in _chunks(path):
        report.events += len(chunk)
        batch = decode_batch(chunk, None, limits.max_bytes, limit_s)
        careful: dict[str, list[tuple[int, Record]]] = defaultdict(list)
        for index in batch.careful:
            line = chunk[index]
            if classify(line)[0]:  # an account record: produce would send it to the accounts
                report.events -= 1
                _take_account(line, f"{path}:{line_number(index)}", accounts, report)
                continue
            result = decode_event(line, now, limits)
            if isinstance(result, Rejection):
                report.rejected[result.reason] += 1
            else:
                careful[result.account_id].append((index, record_of(result)))
        for account_id, group in batch.accounts.items():
            records = group.records
            if account_id in careful:  # back to file order
                merged = [*zip(group.indexes, records, strict=True), *careful.pop(account_id)]
                records = [record for _, record in sorted(merged, key=_first)]
            by_account.setdefault(account_id, []).extend(records)
        for account_id, found in careful.items():
            by_account.setdefault(account_id, []).extend(record for _, record in found)
    return by_account


_SHOWN_REJECTIONS = 5
GC_YOUNG_THRESHOLD = 50_000
"""Allocations between collections of the youngest generation (Python's default: 700;
the worker's, in stream/bulk.py, is the same)."""
_CHUNK_BYTES = 8 << 20
"""Bytes of lines read and decoded per pass: big enough to amortise the pass, while
only the records (not the lines) of the whole file are held."""
_TIME = itemgetter(2)


def _first(item: tuple[int, Record]) -> int:
    return item[0]


def _chunks(path: Path) -> Iterator[tuple[list[bytes], Callable[[int], int]]]:
    """The file's lines, stripped, blank ones left out, in lists of about
    :data:`_CHUNK_BYTES`; each with the line number (from 1) of each of its lines."""
    start = 1
    with path.open("rb") as handle:
        while lines := handle.readlines(_CHUNK_BYTES):
            kept = [stripped for line in lines if (stripped := line.strip())]
            if len(kept) == len(lines):  # no blank line: numbered from the first
                yield kept, partial(add, start)
            else:
                yield kept, [start + n for n, line in enumerate(lines) if line.strip()].__getitem__
            start += len(lines)


def _show_progress(stream: TextIO, done: int, total: int) -> None:
    """A bar on a terminal (redrawn at most every 2%); one closing line elsewhere."""
    if not stream.isatty():
        if done == total:
            stream.write(f"replay: {total} accounts done\n")
        return
    if done != total and (50 * done // total) == (50 * (done - 1) // total):
        return
    width = 30
    filled = width * done // total
    stream.write(f"\rreplay [{'#' * filled}{'.' * (width - filled)}] {done}/{total} accounts")
    if done == total:
        stream.write("\n")
    stream.flush()
