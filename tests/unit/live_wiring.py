"""The worker's pure parts wired as stream/app.py wires them, over plain dicts: ingest
judging on the event-time grid as it folds, and a sweep for the clock's ticks."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any

from alerts.evaluation import RuleSet
from alerts.rules import Rule
from stream.clock import Clock
from stream.deadletter import DeadLetter
from stream.evaluator import LiveEvaluator
from stream.pipeline import IngestPipeline
from stream.sweeper import Sweeper
from stream.triage_store import TriageStore


def live_engine(
    rules: Sequence[Rule],
    *,
    step_s: float,
    engagement: MutableMapping[str, Any],
    accounts: MutableMapping[str, Any],
    alerts: MutableMapping[str, Any],
    publish: Callable[[bytes, bytes], Awaitable[None]],
    dead_letter: Callable[[DeadLetter], Awaitable[None]],
    clock: Clock,
    catch_up_lag_s: float,
    shared: bool = True,
    decoded_states: int = 10_000,
    triage: TriageStore | None = None,
    deleted: MutableMapping[str, Any] | None = None,
) -> tuple[IngestPipeline, Sweeper]:
    """``shared``: the sweep judges the pipeline's own states and shares the evaluator's
    reuse, as in the worker; else it decodes the stored states and judges afresh.
    ``decoded_states``: the setting of that name (states kept decoded between batches)."""
    markers = deleted if deleted is not None else {}
    evaluator = LiveEvaluator(
        RuleSet(tuple(rules), step_s), accounts, alerts, publish, reuse_limit=decoded_states
    )
    pipeline = IngestPipeline(
        engagement,
        dead_letter,
        clock,
        accounts=accounts,
        cached_states=decoded_states,
        evaluator=evaluator,
        deleted=markers,
    )
    sweeper = Sweeper(
        rules,
        lambda: list(engagement.items()),
        accounts,
        alerts,
        outbox=evaluator.outbox,
        catch_up_lag_s=catch_up_lag_s,
        step_s=step_s,
        current_state=pipeline.current_state if shared else None,
        reuse_for=evaluator.reuse_for if shared else None,
        forget_state=pipeline.forget,
        retire_states=pipeline.retire,
        triage=triage,
        deleted=markers,
    )
    return pipeline, sweeper
