"""The Faust application, built by a factory so every test gets its own.

``create_app(settings)`` wires topics, tables, agents and the read API. No module-level
app exists: the CLI builds one from settings and runs a worker.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, cast

import faust
from faust.web import Request, Response, View
from prometheus_client import CONTENT_TYPE_LATEST

from alerts.evaluate import days_kept_needed
from alerts.evaluation import RuleSet
from alerts.rules import Rule, judged_features, load_rules
from config.settings import ConfigError, Settings
from stream.access import Access, load_api_token
from stream.accounts import Account
from stream.acks import Acknowledgements
from stream.bulk import ReaderProgress, bulk_reader_service
from stream.clock import Clock, SystemClock
from stream.deadletter import DeadLetter
from stream.engagement import EngagementState, StatePolicy
from stream.evaluator import LiveEvaluator
from stream.events import EventLimits
from stream.ingest import Batch
from stream.notify import register_notifier
from stream.pipeline import AccountsPipeline, IngestPipeline, OnDeleted, raw_message
from stream.portfolio import register_portfolio_view
from stream.records_first import KafkaRecordOffsets, RecordsFirst
from stream.routing import owner_route
from stream.snapshot import account_snapshot
from stream.stall import StallWatch
from stream.sweeper import Sweeper, SweepReport
from stream.tables import (
    AccountKeyed,
    ensure_metadata,
    key_partition,
    owned_items,
    owns_account,
)
from stream.telemetry import EngineMetrics
from stream.topics import TopicNames
from stream.triage_api import register_triage
from stream.triage_store import TriageStore

__all__ = ["Engine", "create_app"]

log = logging.getLogger(__name__)

ENGAGEMENT_TABLE = "engagement"
ACCOUNTS_TABLE = "accounts"
ALERTS_TABLE = "alerts"
DELETED_TABLE = "deleted-accounts"
DEFAULT_RULES = Path(__file__).resolve().parent.parent / "config" / "rules.yaml"
STATS_INTERVAL_S = 10.0
RECORDS_BATCH_MAX = 500
RECORDS_BATCH_WITHIN_S = 1.0
"""The accounts agent takes up to 500 records at a time, or what came within a second."""


@dataclass
class Engine:
    """The app and the parts tests and adapters need to reach."""

    settings: Settings
    app: faust.App
    topics: TopicNames
    pipeline: IngestPipeline
    sweeper: Sweeper
    triage: TriageStore | None = None


def rules_path(settings: Settings) -> Path:
    """The rules file the settings name, or the shipped one."""
    return Path(settings.rules_file) if settings.rules_file else DEFAULT_RULES


def state_policy(settings: Settings, rules: Sequence[Rule] = ()) -> StatePolicy:
    """The engagement-state bounds the settings ask for, keeping the features the
    ``rules`` read past the day's feature limit (as replay does: alerts/backtest.py).
    A horizon shorter than the ``rules`` read is refused: they would judge fewer days
    than they say, and other days from one hour to the next."""
    needed = days_kept_needed(rules)
    if rules and settings.horizon_days < needed:
        raise ConfigError(
            f"horizon_days: {settings.horizon_days} days kept, but the rules read today and "
            f"{needed - 1} days back: set it to {needed} or more"
        )
    return StatePolicy(
        horizon_days=settings.horizon_days,
        lateness_s=settings.allowed_lateness_s,
        dedup_capacity=settings.dedup_capacity,
        exact_user_limit=settings.exact_user_limit,
        features_per_day=settings.features_per_day,
    ).keeping(judged_features(rules))


def events_group(settings: Settings) -> str:
    """The consumer group that stores the events topic's offsets."""
    return f"{settings.app_id}-events"


def dead_letter_sender(
    topic: Any, telemetry: EngineMetrics, acknowledgements: Acknowledgements | None
) -> Callable[[DeadLetter], Awaitable[None]]:
    """Sends a dead letter, its reason in a header; ``acknowledgements`` (if any) follows
    its delivery (a lost letter stops commits), and a failure is counted."""

    async def send_dead_letter(letter: DeadLetter) -> None:
        delivery = await telemetry.counting_kafka_errors(
            "send_dead_letter",
            topic.send(
                key=letter.kafka_key,
                value=letter.to_json(),
                headers={"reason": letter.reason.encode()},
            ),
        )
        future = cast("asyncio.Future[Any]", delivery)  # Faust's send returns the future
        if acknowledgements is not None:
            acknowledgements.track(future)
        future.add_done_callback(count_failure)

    def count_failure(future: asyncio.Future[Any]) -> None:
        if not future.cancelled() and future.exception() is not None:
            telemetry.count_kafka_error("send_dead_letter")

    return send_dead_letter


def records_first_for(
    app: Any, settings: Settings, names: TopicNames, telemetry: EngineMetrics
) -> RecordsFirst:
    """The worker's :class:`RecordsFirst`, reading offsets of the accounts topic (and of
    the app's group, which the accounts agent commits in) until the app shuts down."""
    offsets = KafkaRecordOffsets(settings.kafka_bootstrap, names.accounts, settings.app_id)

    @app.on_before_shutdown.connect
    async def close_record_offsets(sender: Any, **kwargs: Any) -> None:
        await offsets.close()

    return RecordsFirst(
        offsets,
        on_wait=telemetry.count_record_wait,
        # The accounts agent is held while the worker stops or rebalances: waiting for
        # it then only holds up the stop (or the hand-over), and ends in UTC days.
        abandon=lambda: bool(app.should_stop or getattr(app, "rebalancing", False)),
    )


def create_app(settings: Settings, clock: Clock | None = None) -> Engine:
    now: Clock = clock or SystemClock()
    app = faust.App(
        settings.app_id,
        broker=settings.kafka_url,
        store=settings.table_store,
        datadir=settings.data_dir,
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        key_serializer="raw",
        value_serializer="raw",
        consumer_auto_offset_reset="earliest",
        web_host=settings.web_host,
        web_bind=settings.web_host,
        web_port=settings.web_port,
        canonical_url=settings.advertised_url or f"http://{settings.web_host}:{settings.web_port}",
        autodiscover=False,
        producer_acks=-1,
        broker_session_timeout=settings.session_timeout_s,
        # An account's state is a changelog record of ~2-25 KB, more than the 16 KB batch
        # aiokafka fills per partition by default: each write then waited for the last
        # one's round trip, and the flush before a commit stalled the reader for 0.1-0.4 s
        # (docs/benchmarks.md). Kept under the broker's default message.max.bytes.
        producer_max_batch_size=1_000_000,
        # A busy account's state is several megabytes (docs/state.md): the producer's
        # limit (1 MB by default) is raised to the one its changelogs are created with
        # (below), and the recovering consumer fetches such a record whole.
        producer_max_request_size=settings.max_state_bytes,
        consumer_max_fetch_size=max(settings.max_state_bytes, 4 << 20),
    )
    names = TopicNames.from_settings(settings)
    n = settings.partitions
    dead_letter_topic = app.topic(names.dead_letters, partitions=n)
    accounts_topic = app.topic(names.accounts, partitions=n, compacting=True)
    alerts_topic = app.topic(names.alerts, partitions=n)
    account_table = _account_tables(app, settings)
    engagement_table = account_table(ENGAGEMENT_TABLE)
    engagement = AccountKeyed(engagement_table)
    accounts = AccountKeyed(account_table(ACCOUNTS_TABLE))
    alerts = AccountKeyed(account_table(ALERTS_TABLE))
    deleted = AccountKeyed(account_table(DELETED_TABLE))  # markers (stream/pipeline.py)
    _learn_changelogs_on_rebalance(
        app, engagement_table, accounts.table, alerts.table, deleted.table
    )
    progress = ReaderProgress()
    stall = _stall_watch(app)
    telemetry = EngineMetrics(reader=progress)  # per-partition lag is computed at scrape

    # What the reader's commits wait for: its table writes, and the dead letters (a
    # lost one stops commits, so its event is read again rather than lost).
    acknowledgements = Acknowledgements()
    send_dead_letter = dead_letter_sender(dead_letter_topic, telemetry, acknowledgements)

    async def publish_alert(key: bytes, value: bytes) -> Any:
        """Hand an alert event to the producer; returns its delivery future, which the
        outbox awaits and whose failure it reports (sent past Faust's topic, which
        would also log each failure as a future whose exception nobody retrieved)."""
        return await app.producer.send(names.alerts, key, value, None, None, None)

    rules = load_rules(rules_path(settings)).rules
    telemetry.watch_rules(rule.name for rule in rules)
    # Rules run at the ticks of event time an account's events cross, as they are folded
    # (the same as replay); the sweep below judges the ticks of idle accounts.
    evaluator = LiveEvaluator(
        RuleSet(tuple(rules), settings.evaluation_step_s, telemetry.count_rule_failure),
        accounts,
        alerts,
        publish_alert,
        on_changes=telemetry.count_alert_changes,
        reuse_limit=settings.decoded_states,  # its entries hold the state they are for
        on_publish_failure=lambda error: telemetry.count_kafka_error("send_alert"),
        owns=lambda account_id: owns_account(app, alerts.table, account_id),
    )
    # A new account's state takes its record's time zone: its first events wait until
    # the records published before them are read (stream/records_first.py).
    records_first = records_first_for(app, settings, names, telemetry)
    pipeline = IngestPipeline(
        engagement,
        send_dead_letter,
        now,
        limits=EventLimits(settings.max_event_bytes, timedelta(seconds=settings.future_skew_s)),
        policy=state_policy(settings, rules),
        accounts=accounts,
        cached_states=settings.decoded_states,
        evaluator=evaluator,
        max_state_bytes=settings.max_state_bytes,
        deleted=deleted,
        records_first=records_first.wait,
    )

    ingest_batch = _timed_ingest(app, pipeline, telemetry, engagement_table, alerts.table)
    # Usage events are read in bulk (stream/bulk.py says why) on the partitions the
    # accounts agent below is assigned: the topics are co-partitioned.
    app.service(
        bulk_reader_service(
            app,
            bootstrap=settings.kafka_bootstrap,
            events_topic=names.events,
            owner_topic=names.accounts,
            group_id=events_group(settings),
            process=ingest_batch,
            batch_max=settings.batch_max_events,
            within_s=settings.batch_within_s,
            commit_interval_s=settings.commit_interval_s,
            progress=progress,
            on_kafka_error=telemetry.count_kafka_error,
            acknowledgements=acknowledgements,
            stall=stall,
        )
    )

    async def take_records(batch: Sequence[Any]) -> None:
        await ensure_metadata(app, accounts.table, engagement_table, alerts.table, deleted.table)
        await _take_records(accounts_pipeline, records_first, batch)

    _read_accounts_topic(app, accounts_topic, take_records)

    _log_totals_every(app, STATS_INTERVAL_S, pipeline)
    # Reads that show account data need the token when api_reads_require_token says so.
    access = Access(load_api_token(settings), settings.api_reads_require_token)

    @app.page("/accounts/{account_id}")
    class AccountView(View):
        """One account's snapshot, answered by the worker that owns the account."""

        @owner_route(app, engagement_table, "account_id", access)
        async def get(self, request: Request, account_id: str) -> Response:
            stored = engagement.get(account_id)
            record = accounts.get(account_id)
            if stored is None and record is None:
                return self.json({"error": f"unknown account {account_id!r}"}, status=404)
            state = EngagementState.from_json(stored) if stored else None
            account = Account.from_json(record) if record else None
            body = account_snapshot(state, account, now.now(), settings.stakeholder_roles)
            return self.json(body)

    register_portfolio_view(app, engagement_table, now, access)

    @app.page("/metrics")
    class MetricsView(View):
        """Prometheus exposition of this worker's metrics."""

        async def get(self, request: Request) -> Response:
            # As a header: aiohttp refuses a charset inside its content_type argument.
            return self.bytes(telemetry.exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    # The triage index: written by the sweep, read by the triage API on every worker.
    triage = register_triage(
        app, settings, now, access=access, on_redis_error=telemetry.count_redis_error
    )
    sweeper = Sweeper(
        rules,
        lambda: owned_items(app, engagement_table),
        accounts,
        alerts,
        outbox=evaluator.outbox,  # in order with those judged as events are folded
        catch_up_lag_s=settings.catch_up_lag_s,
        behind=lambda account_id: progress.behind(key_partition(account_id.encode(), n)),
        triage=triage,
        on_redis_error=telemetry.count_redis_error,
        step_s=settings.evaluation_step_s,
        delay_s=settings.evaluation_delay_s,
        current_state=pipeline.current_state,
        reuse_for=evaluator.reuse_for,
        on_rule_failure=telemetry.count_rule_failure,
        forget_state=pipeline.forget,
        retire_states=pipeline.retire,
        deleted=deleted,  # a state with a marker: a removal to finish
    )
    # The accounts agent's offsets are Faust's, which the event reader's commits do not
    # cover: its dead letters are not followed (docs/events.md says what that leaves).
    accounts_pipeline = AccountsPipeline(
        accounts,
        dead_letter_sender(dead_letter_topic, telemetry, None),
        now,
        _account_removal(sweeper, telemetry, now),
        deleted,
        removal_unfinished=lambda account_id: (
            engagement.get(account_id) is not None or alerts.get(account_id) is not None
        ),
    )

    if settings.notifier_enabled:
        register_notifier(
            app,
            settings,
            alerts_topic,
            app.topic(names.alert_dead_letters, partitions=n),
            now=now.now,
            metrics=telemetry,
            silence_for=triage.silence_for,
        )

    async def sweep_rules() -> None:
        """Evaluate the rules over the accounts this worker owns."""
        await ensure_metadata(app, alerts.table)
        report = await sweeper.sweep(now.now())
        _report_sweep(telemetry, report, progress.backlog)

    _every(app, settings.sweep_interval_s, sweep_rules, unless=stall.suspect)

    return Engine(
        settings=settings,
        app=app,
        topics=names,
        pipeline=pipeline,
        sweeper=sweeper,
        triage=triage,
    )


def _timed_ingest(
    app: Any, pipeline: IngestPipeline, telemetry: EngineMetrics, *tables: Any
) -> Callable[[Batch], Awaitable[None]]:
    """One batch through ``pipeline``, timed into ``telemetry``."""

    async def ingest_batch(messages: Batch) -> None:
        await ensure_metadata(app, *tables)
        started = time.perf_counter()
        await pipeline.process(messages)
        telemetry.observe_batch(pipeline.totals, len(messages), time.perf_counter() - started)

    return ingest_batch


def _account_tables(app: Any, settings: Settings) -> Callable[[str], Any]:
    """Makes the app's tables keyed by account id.

    Batches mix partitions, so "the current event's partition" is wrong for a table
    write; partitioning by key (account_id) puts each entry on the same partition
    number as the account's events, so one worker owns both."""
    big_records = {"max.message.bytes": str(settings.max_state_bytes)}

    def account_table(name: str) -> Any:
        return app.Table(
            name,
            partitions=settings.partitions,
            key_type=bytes,
            value_type=bytes,
            use_partitioner=True,
            extra_topic_configs=big_records,  # for the changelog Faust creates
        )

    return account_table


def _every(
    app: Any, interval_s: float, work: Callable[[], Awaitable[None]], *, unless: Callable[[], bool]
) -> None:
    """``work`` every ``interval_s``, skipped while ``unless()`` (the sweep, while a
    stall leaves this worker's partitions in doubt: stream/stall.py)."""

    @app.timer(interval_s, name=work.__name__)
    async def timed() -> None:
        if not unless():
            await work()


def _stall_watch(app: Any) -> StallWatch:
    """The worker's :class:`StallWatch`, for its consumer group's session, ticked every
    second while the event loop runs."""
    stall = StallWatch.for_session(
        float(app.conf.broker_session_timeout), float(app.conf.broker_heartbeat_interval)
    )

    @app.timer(1.0)
    async def watch_for_stalls() -> None:
        stall.tick()

    return stall


def _learn_changelogs_on_rebalance(app: Any, *tables: Any) -> None:
    """After each rebalance, the producer learns every table's changelog (and keeps
    tracking it): a read routed by ``table_route`` partitions its key with that
    metadata, and a worker that had written nothing since it started answered 500 once
    a metadata refresh for another changelog (its first sweep's) had dropped them."""

    @app.on_rebalance_complete.connect
    async def learn_changelogs(sender: Any = None, **kwargs: Any) -> None:
        await ensure_metadata(app, *tables)


TakeRecords = Callable[[Sequence[Any]], Awaitable[None]]


def _read_accounts_topic(app: Any, topic: Any, take: TakeRecords) -> None:
    """The accounts agent: keeps the accounts table in step with the compacted accounts
    topic (and, subscribed to it, gives this worker its partitions)."""

    @app.agent(topic, name="accounts")
    async def account_records(stream: Any) -> None:
        async for batch in stream.take_events(RECORDS_BATCH_MAX, within=RECORDS_BATCH_WITHIN_S):
            await take(batch)


async def _take_records(
    pipeline: AccountsPipeline, records_first: RecordsFirst, batch: Sequence[Any]
) -> None:
    """One batch of the accounts topic into the accounts table; then the records are
    known read (new accounts' events wait for them: stream/records_first.py)."""
    messages = [raw_message(event.message) for event in batch]
    await pipeline.process(messages)
    for message in messages:
        records_first.record_read(message.position.partition, message.position.offset)


def _log_totals_every(app: Any, interval_s: float, pipeline: IngestPipeline) -> None:
    """What ingest counted so far, in the worker's log."""

    @app.timer(interval_s)
    async def log_totals() -> None:
        totals = pipeline.totals
        log.info(
            "ingest: %d batches, valid %s, duplicates %d, dead letters %s",
            totals.batches,
            dict(totals.valid_by_type),
            totals.duplicates,
            dict(totals.dead_by_reason),
        )


def _account_removal(sweeper: Sweeper, telemetry: EngineMetrics, clock: Clock) -> OnDeleted:
    """Tombstones on the accounts topic: the accounts' state and alerts go too."""

    async def remove(deleted: Mapping[str, bytes | None]) -> None:
        resolved = await sweeper.remove(deleted, clock.now())
        telemetry.count_alert_changes(resolved)
        names = ", ".join(sorted(deleted)[:10]) + (" ..." if len(deleted) > 10 else "")
        log.info("accounts deleted: %s; state dropped, %d alerts resolved", names, len(resolved))

    return remove


def _report_sweep(telemetry: EngineMetrics, report: SweepReport, backlog: int | None) -> None:
    """A sweep's outcome, to the metrics and the log."""
    telemetry.observe_sweep(report.changed, report.open, report.seconds, report.held)
    if report.held:
        log.info(
            "sweep: input is behind (backlog %s messages, or stalled); evaluation held", backlog
        )
        return
    telemetry.set_health_tiers(report.tiers)
    telemetry.set_silent_accounts(report.silent_accounts)
    telemetry.set_alert_events_unsent(report.unsent)
    if report.changes:
        log.info("sweep: %d accounts, %d alert changes", report.accounts, report.changes)
    if report.behind:
        log.info("sweep: %d accounts wait for their events to be read", report.behind)
