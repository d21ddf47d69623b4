"""Judge the shipped rules on labelled scenarios: precision, recall, delay, noise.

    .venv/bin/python bench/judge_rules.py [--seeds 3] [--accounts 36] [--days 70]

Scenarios come from the demo simulator (healthy, weekday-only, onboarding, going
quiet, champion leaving, slow decline) plus variants derived from healthy accounts
here: short breaks (two working days off every ten days), a one-week holiday, a
detractor answer from the champion, and a team that never adopts reports. Every
account is backtested in event time (``alerts/backtest.py``: sweeps every 6 h over
exactly the events before each sweep), and the notifications a user would receive
(firing changes that no critical alert inhibits) are scored after a warm-up:

* a notification on a problem account at or after the problem's onset is a true
  positive, anything else a false alarm;
* recall counts problems notified within 7 days of onset; delay is onset -> first
  notification;
* noise is false alarms per calm account per 30 days.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from statistics import median
from zoneinfo import ZoneInfo

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from alerts.backtest import Notice, backtest_account  # noqa: E402
from alerts.lifecycle import Change, ChangeKind  # noqa: E402
from alerts.rules import load_rules  # noqa: E402
from stream.accounts import Account  # noqa: E402
from stream.events import EventType, UsageEvent, validate_event  # noqa: E402
from stream.simulate import FleetSpec, SimAccount, build_fleet, generate_events  # noqa: E402

WARM_UP = timedelta(days=28)
DEADLINE = timedelta(days=7)
# Onsets of the simulator's behaviours, as a share of the window (stream/simulate.py).
ONSET_SHARE = {"going_quiet": 0.7, "champion_leaving": 0.6, "slow_decline": 0.47}
CALM = {"healthy", "weekday_only", "onboarding", "short_breaks", "holiday"}
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
    detected: Counter[str] = field(default_factory=Counter)
    problems: Counter[str] = field(default_factory=Counter)
    delays_h: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    false_by_label: Counter[str] = field(default_factory=Counter)
    false_by_label_rule: Counter[tuple[str, str]] = field(default_factory=Counter)
    calm_accounts: int = 0


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
            built.append(derive(next(variants), sim, events, start, window))
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
    )
    zone = ZoneInfo(account.timezone)
    local = {e.event_id: e.occurred_at.astimezone(zone).date() for e in events}
    onset: datetime | None = None
    if label == "short_breaks":
        off = {start.date() + timedelta(days=d) for d in range(30, 70, 10)}
        off |= {day + timedelta(days=1) for day in off}
        kept = [e for e in events if local[e.event_id] not in off]
    elif label == "holiday":
        monday = first_monday(start.date() + timedelta(days=45))
        off = {monday + timedelta(days=d) for d in range(-2, 7)}  # Sat..Sun, nine days
        kept = [e for e in events if local[e.event_id] not in off]
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


def score(scenario: Scenario, notices: list[Notice], start: datetime, result: Score) -> None:
    heard = heard_after(notices, start + WARM_UP)
    label = scenario.label
    if label in CALM:
        result.calm_accounts += 1
    else:
        result.problems[label] += 1
    first_true: datetime | None = None
    for change in heard:
        rule = change.alert.rule
        if (label, rule) in NEUTRAL or (rule in OBSERVATIONS and label != "detractor"):
            continue
        onset = scenario.onset
        if label not in CALM and onset is not None and change.at >= onset:
            result.true_alerts[rule] += 1
            first_true = first_true or change.at
        else:
            result.false_alerts[rule] += 1
            result.false_by_label[label] += 1
            result.false_by_label_rule[(label, rule)] += 1
    if first_true is not None and scenario.onset is not None:
        delay = first_true - scenario.onset
        if delay <= DEADLINE:
            result.detected[label] += 1
            result.delays_h[label].append(delay.total_seconds() / 3600)


def report(result: Score, months: float) -> None:
    tp, fp = sum(result.true_alerts.values()), sum(result.false_alerts.values())
    print(f"notifications scored: {tp + fp} (true {tp}, false {fp})")
    print(f"overall precision: {tp / (tp + fp):.3f}" if tp + fp else "overall precision: n/a")
    problems, found = sum(result.problems.values()), sum(result.detected.values())
    print(
        f"overall recall within {DEADLINE.days} days: {found}/{problems} = {found / problems:.3f}"
    )
    fp_calm = sum(result.false_by_label[label] for label in CALM)
    noise = fp_calm / max(1, result.calm_accounts) / months
    print(
        f"false alarms per calm account per 30 days: {noise:.3f} "
        f"({fp_calm} on {result.calm_accounts} calm accounts)"
    )
    print("\nper rule:                 true  false  precision")
    for rule in sorted(set(result.true_alerts) | set(result.false_alerts)):
        t, f = result.true_alerts[rule], result.false_alerts[rule]
        print(f"  {rule:<24}{t:>5}{f:>7}  {t / (t + f):>9.3f}")
    print("\nper problem:              detected  median delay")
    for label in sorted(result.problems):
        delays = result.delays_h[label]
        delay = f"{median(delays) / 24:.1f} days" if delays else "-"
        print(f"  {label:<24}{result.detected[label]:>4}/{result.problems[label]:<4} {delay:>12}")
    print("\nfalse alarms by scenario and rule:")
    for (label, rule), count in sorted(result.false_by_label_rule.items()):
        print(f"  {label:<16} {rule:<24}{count:>4}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--accounts", type=int, default=36)
    parser.add_argument("--days", type=int, default=70)
    parser.add_argument("--rules", type=Path, default=REPO / "config" / "rules.yaml")
    args = parser.parse_args()
    rules = load_rules(args.rules).rules
    end = datetime(2026, 11, 23, 12, tzinfo=UTC)
    start = end - timedelta(days=args.days)
    result = Score()
    for seed in range(1, args.seeds + 1):
        for scenario in scenarios(seed, args.accounts, start, end):
            notices = backtest_account(rules, scenario.account, scenario.events, start, end)
            score(scenario, notices, start, result)
    months = (args.days - WARM_UP.days) / 30
    print(
        f"{args.seeds} seeds x {args.accounts} accounts (+ variants), {args.days} days, "
        f"scored after a {WARM_UP.days}-day warm-up"
    )
    report(result, months)


if __name__ == "__main__":
    main()
