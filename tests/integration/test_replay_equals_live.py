"""The same history through a live worker and through ``engagewatch replay``: the same
alert events (apart from ``generated_at``), because both judge every account on the
same event-time grid over the same events (alerts/timeline.py)."""

from __future__ import annotations

import io
import json
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from alerts.replay import replay
from alerts.rules import load_rules
from alerts.timeline import grid_floor
from config.settings import Settings
from stream.app import DEFAULT_RULES, state_policy
from stream.simulate import FleetSpec, build_fleet, generate_events
from stream.topics import TopicNames
from tests.integration.harness import WorkerProcess, set_topic_limit, wait_for
from tests.integration.test_alerts_kafka import alert_events, scrape, settled
from tests.integration.test_engagement_kafka import publish

pytestmark = pytest.mark.kafka


def comparable(events: list[dict[str, Any]]) -> Counter[str]:
    """Alert events as a multiset, without the one field that may differ."""
    return Counter(
        json.dumps({k: v for k, v in e.items() if k != "generated_at"}, sort_keys=True)
        for e in events
    )


class History:
    """A simulated fleet's last 28 days, published to the worker and written as the
    files ``engagewatch replay`` reads."""

    def __init__(self, tmp_path: Path, seed: int) -> None:
        end = datetime.now(UTC).replace(microsecond=0)
        self.fleet = build_fleet(FleetSpec(accounts=12, seed=seed, as_of=end.date()))
        self.events = list(generate_events(self.fleet, end - timedelta(days=28), end, seed=seed))
        # At night (UTC) the fleet's newest event can be over an hour old: a worker then
        # holds its sweeps ("the producers stopped", catch_up_lag_s) and judges nothing
        # by the clock, which replay does. One login a minute ago, published last, is
        # what a fleet at work sends: both sides read it.
        login = next(e for e in reversed(self.events) if e["type"] == "login")
        moment = (end - timedelta(minutes=1)).isoformat().replace("+00:00", "Z")
        self.events.append(
            {**login, "event_id": f"{login['event_id']}-late", "occurred_at": moment}
        )
        self.events_file = tmp_path / "events.jsonl"
        self.accounts_file = tmp_path / "accounts.jsonl"
        self.events_file.write_text("".join(json.dumps(e) + "\n" for e in self.events))
        self.accounts_file.write_text("".join(json.dumps(a.record()) + "\n" for a in self.fleet))


def published_to_the_clock(settings: Settings) -> tuple[list[dict[str, Any]], float]:
    """The alert events once they settle, and the clock the worker judged idle accounts
    up to: a tick passing while the test read would add alerts the replay has not
    judged, so read again then."""
    live = settled(settings, quiet_s=5)
    step = settings.evaluation_step_s
    judged_to = grid_floor(time.time(), step)
    while grid_floor(time.time(), step) != judged_to or not live:
        time.sleep(5)
        judged_to = grid_floor(time.time(), step)
        live = alert_events(settings)
    return live, judged_to


def test_a_history_through_a_live_worker_gives_the_replays_alert_events(
    engine_settings: Settings, tmp_path: Path
) -> None:
    settings = engine_settings.model_copy(
        update={"sweep_interval_s": 1.0, "evaluation_delay_s": 0.0}
    )
    history = History(tmp_path, seed=11)
    worker = WorkerProcess(settings, tmp_path / "worker.log")
    worker.start()
    try:
        publish(settings, history.fleet, history.events)
        live, judged_to = published_to_the_clock(settings)
    finally:
        assert worker.stop() == 0
    assert_same_as_replay(live, settings, history, judged_to)


def test_alert_events_kafka_refused_are_published_once_it_takes_them(
    engine_settings: Settings, tmp_path: Path
) -> None:
    """The alerts topic refuses every event for a while (its ``max.message.bytes`` below
    any event's size: Kafka answers MESSAGE_TOO_LARGE, which is not retried). The
    books keep what was judged; once Kafka takes events again the sweeps publish them,
    and the topic ends as if nothing had failed: every replayed event, in order."""
    settings = engine_settings.model_copy(
        update={"sweep_interval_s": 1.0, "evaluation_delay_s": 0.0}
    )
    history = History(tmp_path, seed=11)
    worker = WorkerProcess(settings, tmp_path / "worker.log")
    worker.start()
    alerts_topic = TopicNames.from_settings(settings).alerts
    try:
        set_topic_limit(settings, alerts_topic, 64)
        publish(settings, history.fleet, history.events)
        port = settings.web_port

        def refused_and_all_folded() -> bool:
            metrics = scrape(port)
            folded = sum(v for (n, _), v in metrics.items() if n == "engagewatch_events_total")
            refused = metrics.get(
                ("engagewatch_kafka_errors_total", (("operation", "send_alert"),)), 0
            )
            return folded == len(history.events) and refused > 0

        wait_for(refused_and_all_folded, 120, "events folded and alert events refused", 1)
        time.sleep(3)  # sweeps meanwhile try again, and are refused again
        assert alert_events(settings) == []
        set_topic_limit(settings, alerts_topic, None)
        live, judged_to = published_to_the_clock(settings)
    finally:
        assert worker.stop() == 0
    assert_same_as_replay(live, settings, history, judged_to)
    # In order: per alert, never a resolve before its firing, nor two firings in a row.
    for fingerprint in {e["fingerprint"] for e in live}:
        kinds = [e["status"] for e in live if e["fingerprint"] == fingerprint and not e["repeat"]]
        assert kinds == ["firing", "resolved"] * (len(kinds) // 2) + ["firing"] * (len(kinds) % 2)


def assert_same_as_replay(
    live: list[dict[str, Any]], settings: Settings, history: History, judged_to: float
) -> None:
    out = io.StringIO()
    replay(
        load_rules(DEFAULT_RULES).rules,
        history.events_file,
        history.accounts_file,
        out,
        step=timedelta(seconds=settings.evaluation_step_s),
        policy=state_policy(settings),
        progress=None,
        until=datetime.fromtimestamp(judged_to, UTC),
    )
    replayed = [json.loads(line) for line in out.getvalue().splitlines()]

    assert replayed, "the fleet should raise alerts"
    assert {e["status"] for e in replayed} >= {"firing"}
    missing = comparable(replayed) - comparable(live)
    extra = comparable(live) - comparable(replayed)
    assert not missing and not extra, (
        f"{len(missing)} replayed alert events not published live, e.g. "
        f"{next(iter(missing), None)}; {len(extra)} published only live, e.g. "
        f"{next(iter(extra), None)}"
    )
