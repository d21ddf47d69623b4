"""Judge the shipped rules on labelled scenarios: precision, recall, delay, noise.

    .venv/bin/python bench/judge_rules.py [--seeds 3] [--first-seed 1] [--accounts 36]
        [--days 70] [--step-hours 6] [--rules FILE] [--jobs 2] [--verbose]
        [--labels slow_decline,healthy]

Scenarios come from the demo simulator (healthy, weekday-only, onboarding, going
quiet, champion leaving, slow decline) plus variants derived from healthy accounts
here: short breaks (two days off every ten days), a nine-day holiday, a detractor
answer from the champion, and a team that never adopts reports. The holiday is judged
twice on the same events: declared in a calendar of the rules file and named by the
account record, as a customer would configure it (``holiday``, a calm scenario), and
undeclared (``unknown_holiday``, reported on its own line: for its first week it looks
exactly like going quiet). Every account is backtested in event time
(``alerts/backtest.py``: sweeps on a grid of ``--step-hours``, over exactly the events
before each sweep), and the notifications a user would receive (firing changes that
no critical alert inhibits) are scored after a warm-up:

* a notification on a problem account at or after the problem's onset is a true
  positive, anything else a false alarm, bar two kinds scored neither way: a detractor
  alert where no detractor was planted (it reports an answer really given), and
  adoption or time-to-value alerts on onboarding accounts (they may rightly hear them);
* recall counts problems notified within 7 days of onset; delay is onset -> first
  notification (a problem never notified counts as an infinite delay in the p90);
* noise is false alarms per calm account per 30 days.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from statistics import median
from zoneinfo import ZoneInfo

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from alerts.backtest import Notice, backtest_account  # noqa: E402
from alerts.lifecycle import Change, ChangeKind  # noqa: E402
from alerts.rules import Rule, load_rules  # noqa: E402
from stream.accounts import Account  # noqa: E402
from stream.events import EventType, UsageEvent, validate_event  # noqa: E402
from stream.simulate import (  # noqa: E402
    DECLINE_FLOOR,
    FleetSpec,
    SimAccount,
    build_fleet,
    generate_events,
)

WARM_UP = timedelta(days=28)
DEADLINE = timedelta(days=7)
END = datetime(2026, 11, 23, 12, tzinfo=UTC)
# Onsets of the simulator's behaviours, as a share of the window (stream/simulate.py).
ONSET_SHARE = {"going_quiet": 0.7, "champion_leaving": 0.6, "slow_decline": 0.47}
CALM = {"healthy", "weekday_only", "onboarding", "short_breaks", "holiday"}
UNKNOWN_HOLIDAY = "unknown_holiday"  # calm too, but reported apart (see the docstring)
HOLIDAY_CALENDAR = "customer-shutdown"  # the calendar a customer declares for its holiday
# Onboarding accounts may rightly hear about adoption and time to value.
NEUTRAL = {("onboarding", "reports-not-adopted"), ("onboarding", "slow-time-to-value")}
# A detractor alert reports an answer that was given: never a false alarm, and only
# scored where a detractor is the planted problem.
OBSERVATIONS = {"detractor"}


@dataclass
class Scenario:
    label: str
    account: Account
    events: list[UsageEvent]
    onset: datetime | None


@dataclass
class Score:
    true_alerts: Counter[str] = field(default_factory=Counter)
    false_alerts: Counter[str] = field(default_factory=Counter)
    first_rule: Counter[str] = field(default_factory=Counter)
    """Per rule, the problems it was the first to report within the deadline."""
    detected: Counter[str] = field(default_factory=Counter)
    problems: Counter[str] = field(default_factory=Counter)
    delays_h: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    """Per problem label, onset -> first true notification (inf: never)."""
    false_by_label: Counter[str] = field(default_factory=Counter)
    false_by_label_rule: Counter[tuple[str, str]] = field(default_factory=Counter)
    accounts: Counter[str] = field(default_factory=Counter)
    details: list[str] = field(default_factory=list)
    """One line per false alarm and per missed problem (``--verbose``)."""
    early_declines: list[float] = field(default_factory=list)
    """For each alert on a slow decline before its nominal onset (counted false): how
    far its login rate had already fallen then (0.34: down 34%)."""

    def add(self, other: Score) -> None:
        for name in ("true_alerts", "false_alerts", "first_rule", "detected", "problems"):
            getattr(self, name).update(getattr(other, name))
        for name in ("false_by_label", "false_by_label_rule", "accounts"):
            getattr(self, name).update(getattr(other, name))
        for label, delays in other.delays_h.items():
            self.delays_h[label].extend(delays)
        self.details.extend(other.details)
        self.early_declines.extend(other.early_declines)


def account_of(sim: SimAccount) -> Account:
    record = sim.record()
    return Account(
        sim.account_id,
        sim.name,
        sim.licenses,
        timezone=sim.timezone,
        segment=sim.segment,
        status=str(record["status"]),
        contract_start=sim.contract_start,
        renewal_date=sim.renewal_date,
    )


def usage_events(raw: Iterable[dict[str, object]], now: datetime) -> list[UsageEvent]:
    return [e for e in (validate_event(d, now) for d in raw) if isinstance(e, UsageEvent)]


def holiday_days(start: datetime) -> tuple[date, date]:
    """The nine-day holiday of the holiday variants: Saturday to the next week's Sunday."""
    monday = first_monday(start.date() + timedelta(days=45))
    return monday - timedelta(days=2), monday + timedelta(days=6)


def scenarios(seed: int, accounts: int, start: datetime, end: datetime) -> list[Scenario]:
    fleet = build_fleet(FleetSpec(accounts=accounts, seed=seed, as_of=end.date()))
    window = end - start
    built = []
    variants = iter(["short_breaks", "holiday", "detractor", "low_adoption"] * accounts)
    for sim in fleet:
        events = usage_events(generate_events([sim], start, end, seed=seed), end)
        share = ONSET_SHARE.get(sim.behaviour)
        onset = start + window * share if share is not None else None
        built.append(Scenario(sim.behaviour, account_of(sim), events, onset))
        if sim.behaviour == "healthy":
            variant = derive(next(variants), sim, events, start, window)
            built.append(variant)
            if variant.label == "holiday":  # the same holiday, nobody told the engine
                unknown = replace(variant.account, calendar=None)
                unknown = replace(unknown, account_id=unknown.account_id + "-unknown")
                built.append(Scenario(UNKNOWN_HOLIDAY, unknown, variant.events, None))
    return built


def derive(
    label: str, sim: SimAccount, events: list[UsageEvent], start: datetime, window: timedelta
) -> Scenario:
    """A variant of a healthy account, on its own copy (a new account id)."""
    account = account_of(sim)
    account = Account(
        f"{account.account_id}-{label}",
        account.name,
        account.licenses,
        timezone=account.timezone,
        segment=account.segment,
        contract_start=account.contract_start,
        calendar=HOLIDAY_CALENDAR if label == "holiday" else None,
    )
    zone = ZoneInfo(account.timezone)
    local = {e.event_id: e.occurred_at.astimezone(zone).date() for e in events}
    onset: datetime | None = None
    if label == "short_breaks":
        off = {start.date() + timedelta(days=d) for d in range(30, 70, 10)}
        off |= {day + timedelta(days=1) for day in off}
        kept = [e for e in events if local[e.event_id] not in off]
    elif label == "holiday":
        first, last = holiday_days(start)
        kept = [e for e in events if not first <= local[e.event_id] <= last]
    elif label == "detractor":
        onset = start + window * 0.8
        champion = next(u.user_id for u in sim.users if u.role == "champion")
        kept = [
            *events,
            UsageEvent(
                "detractor-1",
                EventType.NPS_RESPONSE,
                sim.account_id,
                champion,
                "champion",
                onset,
                {"score": 2, "comment": "we are evaluating other tools"},
            ),
        ]
    else:  # low_adoption: nobody ever opens reports
        onset = start + WARM_UP
        kept = [
            e
            for e in events
            if e.properties.get("feature") != "reports" and e.type is not EventType.VALUE_MILESTONE
        ]
    moved = [
        UsageEvent(
            e.event_id, e.type, account.account_id, e.user_id, e.role, e.occurred_at, e.properties
        )
        for e in kept
    ]
    return Scenario(label, account, moved, onset)


def first_monday(day: date) -> date:
    return day + timedelta(days=(7 - day.weekday()) % 7)


def load_judged_rules(path: Path, start: datetime) -> tuple[Rule, ...]:
    """The rules file with the holiday variants' calendar added, as a customer would
    declare its closure, loaded (and validated) like any rules file."""
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    first, last = holiday_days(start)
    calendars = data.setdefault("calendars", {}) or {}
    calendars[HOLIDAY_CALENDAR] = {"days": [f"{first.isoformat()}..{last.isoformat()}"]}
    data["calendars"] = calendars
    with tempfile.TemporaryDirectory() as folder:
        judged = Path(folder) / "rules.yaml"
        judged.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
        return load_rules(judged).rules


def heard_after(notices: list[Notice], since: datetime) -> list[Change]:
    """Firing notifications from ``since`` on; an alert already open then counts as
    heard at ``since`` (as if the user started watching at the end of the warm-up)."""
    open_at_start: dict[str, Change] = {}
    heard = []
    for notice in notices:
        change = notice.change
        if change.at < since:
            if change.kind is ChangeKind.FIRING and notice.inhibited_by is None:
                open_at_start[change.alert.fingerprint] = change
            elif change.kind is ChangeKind.RESOLVED:
                open_at_start.pop(change.alert.fingerprint, None)
        elif change.kind is ChangeKind.FIRING and notice.inhibited_by is None:
            heard.append(change)
    carried = [Change(c.kind, c.alert, since) for c in open_at_start.values()]
    return carried + heard


def score(
    scenario: Scenario, notices: list[Notice], start: datetime, result: Score, seed: int
) -> None:
    heard = heard_after(notices, start + WARM_UP)
    label, onset = scenario.label, scenario.onset
    calm = label in CALM or label == UNKNOWN_HOLIDAY
    result.accounts[label] += 1
    if not calm:
        result.problems[label] += 1
    first_true: Change | None = None
    where = f"seed {seed} {label} {scenario.account.account_id}"
    for change in heard:
        rule = change.alert.rule
        if (label, rule) in NEUTRAL or (rule in OBSERVATIONS and label != "detractor"):
            continue
        if not calm and onset is not None and change.at >= onset:
            result.true_alerts[rule] += 1
            first_true = first_true or change
        else:
            result.false_alerts[rule] += 1
            result.false_by_label[label] += 1
            result.false_by_label_rule[(label, rule)] += 1
            if label == "slow_decline":  # the simulator's decline, from the window's start
                progress = (change.at - start) / (END - start)
                result.early_declines.append((1 - DECLINE_FLOOR) * progress)
            value = change.alert.evidence.get("value")
            when = f"{change.at:%m-%d %H}h"
            result.details.append(f"false alarm  {where}: {rule} at {when} ({value})")
    if calm or onset is None:
        return
    delay = first_true.at - onset if first_true is not None else None
    hours = delay.total_seconds() / 3600 if delay is not None else math.inf
    result.delays_h[label].append(hours)
    if delay is not None and delay <= DEADLINE:
        result.detected[label] += 1
        assert first_true is not None
        result.first_rule[first_true.alert.rule] += 1
    else:
        late = f"first told after {_days(delay)}" if delay is not None else "never told"
        result.details.append(f"missed       {where}: {late}")


def judge_seed(
    rules_path: Path,
    seed: int,
    accounts: int,
    days: int,
    step: timedelta,
    *,
    labels: frozenset[str] | None = None,
) -> Score:
    """Backtest and score every scenario of one seed (run in a worker process); with
    ``labels``, only the scenarios of those labels (a quicker, partial look)."""
    start = END - timedelta(days=days)
    rules = load_judged_rules(rules_path, start)
    result = Score()
    for scenario in scenarios(seed, accounts, start, END):
        if labels is not None and scenario.label not in labels:
            continue
        # Events arrive in the order they happened (a planted answer included).
        events = sorted(scenario.events, key=lambda e: (e.occurred_at, e.event_id))
        notices = backtest_account(rules, scenario.account, events, start, END, step=step)
        score(scenario, notices, start, result, seed)
    return result


def _days(delay: timedelta | float | None) -> str:
    if delay is None:
        return "-"
    hours = delay.total_seconds() / 3600 if isinstance(delay, timedelta) else delay
    return "never" if math.isinf(hours) else f"{hours / 24:.1f} days"


def percentile(values: Sequence[float], share: float) -> float:
    """Nearest-rank percentile (inf stays inf: an undetected problem)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


def report(result: Score, months: float, verbose: bool) -> None:
    tp, fp_all = sum(result.true_alerts.values()), sum(result.false_alerts.values())
    unknown = result.false_by_label[UNKNOWN_HOLIDAY]
    fp = fp_all - unknown
    print(f"notifications scored: {tp + fp} (true {tp}, false {fp})")
    print(f"overall precision: {tp / (tp + fp):.3f}" if tp + fp else "overall precision: n/a")
    problems, found = sum(result.problems.values()), sum(result.detected.values())
    recall = f"{found / problems:.3f}" if problems else "n/a"
    print(f"overall recall within {DEADLINE.days} days: {found}/{problems} = {recall}")
    delays = [d for values in result.delays_h.values() for d in values]
    if delays:
        print(
            f"detection delay: median {_days(median(delays))}, p90 {_days(percentile(delays, 0.9))}"
        )
    if result.early_declines:
        low, high = min(result.early_declines), max(result.early_declines)
        onset = (1 - DECLINE_FLOOR) * ONSET_SHARE["slow_decline"]
        print(
            f"slow declines told before their nominal onset (counted false): "
            f"{len(result.early_declines)}, their login rate then already down "
            f"{low:.0%}..{high:.0%} (the onset is -{onset:.0%})"
        )
    calm_accounts = sum(result.accounts[label] for label in CALM)
    fp_calm = sum(result.false_by_label[label] for label in CALM)
    noise = fp_calm / max(1, calm_accounts) / months
    print(
        f"false alarms per calm account per 30 days: {noise:.3f} "
        f"({fp_calm} on {calm_accounts} calm accounts)"
    )
    held = result.accounts[UNKNOWN_HOLIDAY]
    with_unknown = tp / (tp + fp_all) if tp + fp_all else math.nan
    print(
        f"unknown holiday (not in any calendar): {unknown} false alarms on {held} accounts; "
        f"counted in, precision {with_unknown:.3f}, false alarms per calm account per 30 "
        f"days {(fp_calm + unknown) / max(1, calm_accounts + held) / months:.3f}"
    )
    print("\nper rule:                 true  false  precision  first to detect")
    for rule in sorted(set(result.true_alerts) | set(result.false_alerts)):
        t, f = (
            result.true_alerts[rule],
            result.false_alerts[rule] - (result.false_by_label_rule[(UNKNOWN_HOLIDAY, rule)]),
        )
        precision = f"{t / (t + f):>9.3f}" if t + f else f"{'-':>9}"
        print(f"  {rule:<24}{t:>5}{f:>7}  {precision}  {result.first_rule[rule]:>15}")
    print("\nper problem:              detected  median delay  p90 delay")
    for label in sorted(result.problems):
        values = result.delays_h[label]
        print(
            f"  {label:<24}{result.detected[label]:>4}/{result.problems[label]:<4} "
            f"{_days(median(values)):>12} {_days(percentile(values, 0.9)):>10}"
        )
    print("\nfalse alarms by scenario and rule:")
    for (label, rule), count in sorted(result.false_by_label_rule.items()):
        print(f"  {label:<16} {rule:<24}{count:>4}")
    if verbose:
        print("\nfalse alarms and misses:")
        for line in sorted(result.details):
            print(f"  {line}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=3, help="how many seeds")
    parser.add_argument("--first-seed", type=int, default=1, help="seeds run from here up")
    parser.add_argument("--accounts", type=int, default=36)
    parser.add_argument("--days", type=int, default=70)
    parser.add_argument("--rules", type=Path, default=REPO / "config" / "rules.yaml")
    parser.add_argument("--step-hours", type=float, default=6.0, help="sweep grid")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--verbose", action="store_true", help="list every error")
    parser.add_argument(
        "--labels",
        help="judge only these scenarios (comma-separated, e.g. slow_decline,healthy): "
        "quicker, but the headline then covers them only",
    )
    args = parser.parse_args()
    labels = frozenset(args.labels.split(",")) if args.labels else None
    load_rules(args.rules)  # a broken file stops here, with its own file and line
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    step = timedelta(hours=args.step_hours)
    result = Score()
    with ProcessPoolExecutor(max_workers=max(1, min(args.jobs, len(seeds)))) as pool:
        jobs = [
            pool.submit(judge_seed, args.rules, seed, args.accounts, args.days, step, labels=labels)
            for seed in seeds
        ]
        for job in jobs:
            result.add(job.result())
    months = (args.days - WARM_UP.days) / 30
    print(
        f"seeds {seeds[0]}..{seeds[-1]} x {args.accounts} accounts (+ variants), "
        f"{args.days} days, a sweep every {args.step_hours:g} h, "
        f"scored after a {WARM_UP.days}-day warm-up"
        + (f"; only {', '.join(sorted(labels))}" if labels else "")
    )
    report(result, months, args.verbose)


if __name__ == "__main__":
    main()
