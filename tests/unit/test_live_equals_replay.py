"""The worker's code path (ingest pipeline + evaluator + sweep) and replay, in one
process over plain dicts: the same alert events for the same history, however the
stream is cut into batches and however often the sweep runs in between."""

from __future__ import annotations

import asyncio
import gc
import io
import itertools
import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alerts.replay import replay
from alerts.rules import load_rules
from alerts.sweep import AccountAlerts
from stream import codec
from stream.clock import ManualClock
from stream.deadletter import DeadLetter, SourcePosition
from stream.engagement import EngagementState
from stream.evaluator import LiveEvaluator
from stream.ingest import RawMessage
from stream.pipeline import AccountsPipeline, IngestPipeline
from stream.simulate import FleetSpec, build_fleet, generate_events
from stream.sweeper import Sweeper
from tests.unit.live_wiring import live_engine

END = datetime(2026, 11, 25, 15, 30, tzinfo=UTC)  # a Wednesday afternoon
STEP = 6 * 3600.0
RULES = load_rules(Path(__file__).resolve().parents[2] / "config" / "rules.yaml").rules
# A fleet whose alerts fire and resolve while accounts are still active (a champion
# leaving, NPS detractors, health and usage dips), not only after they went quiet.
FLEET = build_fleet(FleetSpec(accounts=12, seed=9, as_of=END.date()))
EVENTS = list(generate_events(FLEET, END - timedelta(days=28), END, seed=9))


def comparable(events: list[dict[str, Any]]) -> Counter[str]:
    return Counter(
        json.dumps({k: v for k, v in e.items() if k != "generated_at"}, sort_keys=True)
        for e in events
    )


def replayed(tmp: Path, *, records: bool = True) -> list[dict[str, Any]]:
    """Replay's alert events; ``records=False``: without the account records."""
    events, accounts = tmp / "events.jsonl", tmp / "accounts.jsonl"
    events.write_text("".join(json.dumps(e) + "\n" for e in EVENTS))
    accounts.write_text("".join(json.dumps(a.record()) + "\n" for a in FLEET))
    out = io.StringIO()
    replay(
        RULES,
        events,
        accounts if records else None,
        out,
        step=timedelta(seconds=STEP),
        progress=None,
        until=END,
    )
    return [json.loads(line) for line in out.getvalue().splitlines()]


def raw(obj: dict[str, Any], offset: int) -> RawMessage:
    """``obj`` as the message a producer keyed by account sends."""
    key = str(obj["account_id"]).encode()
    return RawMessage(codec.dumps(obj), SourcePosition("t", 0, offset, key))


class Tables:
    """The worker's tables, kept across a restart (changelog-backed in the worker)."""

    def __init__(self) -> None:
        self.engagement: dict[str, Any] = {}
        self.accounts: dict[str, Any] = {}
        self.alerts: dict[str, Any] = {}


class KafkaRefusedError(Exception):
    """What a send raises while the alerts topic takes nothing."""


async def wired(
    published: list[dict[str, Any]],
    *,
    shared: bool = True,
    decoded_states: int = 10_000,
    tables: Tables | None = None,
    refusing: bool = False,
    records: bool = True,
) -> tuple[IngestPipeline, Sweeper]:
    """The worker's pure parts over dicts (tests/unit/live_wiring.py), the fleet's
    account records already in (unless not ``records``); alert events are appended to
    ``published`` (with ``refusing``, every send fails instead)."""
    clock = ManualClock(END)
    tables = tables or Tables()

    async def publish(key: bytes, value: bytes) -> None:
        if refusing:
            raise KafkaRefusedError(key)
        published.append(codec.loads(value))

    async def dead_letter(letter: DeadLetter) -> None:
        pass

    await AccountsPipeline(tables.accounts, dead_letter, clock).process(
        [raw(a.record(), i) for i, a in enumerate(FLEET)] if records else []
    )
    return live_engine(
        RULES,
        step_s=STEP,
        engagement=tables.engagement,
        accounts=tables.accounts,
        alerts=tables.alerts,
        publish=publish,
        dead_letter=dead_letter,
        clock=clock,
        catch_up_lag_s=40 * 86_400,
        shared=shared,
        decoded_states=decoded_states,
    )


async def live(
    cuts: list[int],
    sweep_after: set[int],
    *,
    shared: bool = True,
    decoded_states: int = 10_000,
    records: bool = True,
) -> list[dict[str, Any]]:
    """The events in batches cut at ``cuts``; a sweep after the batches in ``sweep_after``
    (at the clock of the newest event so far, as a worker keeping up would), then a
    last sweep at the end. ``shared``: wired as the worker is, the sweep judging the
    pipeline's own states and sharing the evaluator's reuse; else on its own."""
    published: list[dict[str, Any]] = []
    pipeline, sweeper = await wired(
        published, shared=shared, decoded_states=decoded_states, records=records
    )
    bounds = [0, *sorted(c for c in set(cuts) if 0 < c < len(EVENTS)), len(EVENTS)]
    for n, (start, end) in enumerate(itertools.pairwise(bounds)):
        await pipeline.process([raw(e, start + i) for i, e in enumerate(EVENTS[start:end])])
        if n in sweep_after:
            newest = max(datetime.fromisoformat(str(e["occurred_at"])) for e in EVENTS[:end])
            await sweeper.sweep(newest)
    await sweeper.sweep(END)
    return published


def test_the_worker_publishes_what_replay_writes(tmp_path: Path) -> None:

    expected = replayed(tmp_path)
    last_event = {e["account_id"]: e["occurred_at"] for e in EVENTS}
    during = [e for e in expected if (e["ends_at"] or e["starts_at"]) < last_event[e["account_id"]]]
    assert {e["rule"] for e in during} >= {"detractor", "champion-silent", "health-tier"}
    got = asyncio.run(live(cuts=[len(EVENTS) // 3, len(EVENTS) // 2], sweep_after={0, 1}))
    assert comparable(got) == comparable(expected)


def test_accounts_without_a_record_are_judged_alike_live_and_in_replay(tmp_path: Path) -> None:
    """No metadata: the worker judges such an account with none (``account: null`` in
    its alert events, UTC days), and so must replay (it used to make up a record)."""
    expected = replayed(tmp_path, records=False)
    assert expected and all(e["account"] is None for e in expected)
    got = asyncio.run(live(cuts=[len(EVENTS) // 2], sweep_after={0}, records=False))
    assert comparable(got) == comparable(expected)


@settings(
    max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    cuts=st.lists(st.integers(min_value=1, max_value=len(EVENTS) - 1), max_size=6),
    sweeps=st.sets(st.integers(min_value=0, max_value=6), max_size=4),
    shared=st.booleans(),
    decoded_states=st.sampled_from([10_000, 3, 0]),  # all, fewer than the accounts, none
)
def test_batching_and_sweeps_never_change_the_alerts(
    tmp_path: Path, cuts: list[int], sweeps: set[int], shared: bool, decoded_states: int
) -> None:
    expected = comparable(replayed(tmp_path))
    got = asyncio.run(live(cuts, sweeps, shared=shared, decoded_states=decoded_states))
    assert comparable(got) == expected


@pytest.mark.rule_failures
def test_a_rule_that_raises_is_skipped_alike_live_and_in_replay(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug met by one account from some day on: both skip the same evaluations (the
    rule judges nothing then), so they still publish the same alert events."""
    from alerts import evaluation
    from alerts.evaluate import Context, evaluate
    from alerts.rules import Rule

    healthy = replayed(tmp_path)
    first = next(e for e in healthy if e["rule"] == "champion-silent")
    victim = first["account_id"]
    broken_from = datetime.fromisoformat(first["starts_at"]).date()

    def flaky(rule: Rule, context: Context) -> Any:
        if (
            rule.name == "champion-silent"
            and context.state.account_id == victim
            and context.today >= broken_from
        ):
            raise ArithmeticError("a bug met by this account")
        return evaluate(rule, context)

    monkeypatch.setattr(evaluation, "evaluate", flaky)  # what AccountRun judges with
    events, accounts = tmp_path / "events.jsonl", tmp_path / "accounts.jsonl"
    out = io.StringIO()
    report = replay(
        RULES, events, accounts, out, step=timedelta(seconds=STEP), progress=None, until=END
    )
    expected = comparable([json.loads(line) for line in out.getvalue().splitlines()])

    assert report.failed["champion-silent"] > 0 and set(report.failed) == {"champion-silent"}
    assert expected != comparable(healthy)  # the victim's champion alert never fired
    got = asyncio.run(live(cuts=[len(EVENTS) // 3, len(EVENTS) // 2], sweep_after={0, 1}))
    assert comparable(got) == expected


def test_alert_events_refused_then_a_restart_still_publishes_what_replay_writes(
    tmp_path: Path,
) -> None:
    """Kafka refuses every alert event while the first half of the history is read, and
    the worker then restarts (all it held in memory gone, the tables kept): what was
    judged meanwhile is in the books, and the restarted worker's first sweep publishes
    it before anything newer, so the topic gets what replay writes, in order."""

    async def run() -> list[dict[str, Any]]:
        published: list[dict[str, Any]] = []
        tables = Tables()
        half = len(EVENTS) // 2
        pipeline, sweeper = await wired(published, tables=tables, refusing=True)
        await pipeline.process([raw(e, i) for i, e in enumerate(EVENTS[:half])])
        await sweeper.sweep(datetime.fromisoformat(str(EVENTS[half - 1]["occurred_at"])))
        kept = [AccountAlerts.from_dict(codec.loads(b)).unsent for b in tables.alerts.values()]
        assert published == [] and sum(len(unsent) for unsent in kept) > 0
        pipeline, sweeper = await wired(published, tables=tables)  # restarted
        newest = datetime.fromisoformat(str(EVENTS[half - 1]["occurred_at"]))
        assert (await sweeper.sweep(newest)).republished == sum(len(u) for u in kept)
        await pipeline.process([raw(e, half + i) for i, e in enumerate(EVENTS[half:])])
        await sweeper.sweep(END)
        assert all("unsent" not in codec.loads(book) for book in tables.alerts.values())
        return published

    expected = replayed(tmp_path)
    got = asyncio.run(run())
    assert comparable(got) == comparable(expected)
    for fingerprint in {e["fingerprint"] for e in expected}:
        assert [e["status"] for e in got if e["fingerprint"] == fingerprint] == [
            e["status"] for e in expected if e["fingerprint"] == fingerprint
        ]


def test_no_more_states_stay_decoded_than_the_setting_allows() -> None:
    """The evaluator's shared results hold the state they were computed on: when the
    pipeline lets a state go, they go with it, so ``decoded_states`` bounds both."""

    async def run() -> int:
        pipeline, _ = await wired([], decoded_states=3)
        evaluator = pipeline._evaluator
        assert isinstance(evaluator, LiveEvaluator)
        worst = 0
        for start in range(0, len(EVENTS), 50):
            batch = EVENTS[start : start + 50]
            await pipeline.process([raw(e, start + i) for i, e in enumerate(batch)])
            cached = {id(state) for _, state in pipeline._states.values()}
            shared = {id(state) for state, _ in evaluator._reuse.values()}
            worst = max(worst, len(cached | shared))
        return worst

    assert asyncio.run(run()) == 3


def test_a_sweep_after_a_restart_decodes_one_account_at_a_time() -> None:
    """A restarted worker holds no state decoded; its sweep decodes each account as it
    judges it and lets it go, instead of decoding every owned state up front (20,000
    at once took a worker from 196 to 839 MB)."""

    def alive() -> int:
        return sum(isinstance(o, EngagementState) for o in gc.get_objects())

    async def run() -> tuple[int, int]:
        tables = Tables()
        pipeline, _ = await wired([], tables=tables, decoded_states=3)
        await pipeline.process([raw(e, i) for i, e in enumerate(EVENTS)])
        del pipeline
        _, sweeper = await wired([], tables=tables, decoded_states=3)  # the restart
        gc.collect()
        before = alive()  # other tests' states, still referenced somewhere
        judged = sweeper._sweep_one
        peak = 0

        async def judge_counting(*args: Any, **kwargs: Any) -> None:
            nonlocal peak
            peak = max(peak, alive() - before)
            await judged(*args, **kwargs)

        sweeper._sweep_one = judge_counting  # type: ignore[method-assign]
        report = await sweeper.sweep(END)
        return peak, report.accounts

    peak, judged = asyncio.run(run())
    assert judged == len(FLEET) > 3
    assert peak == 1
