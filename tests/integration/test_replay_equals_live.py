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
from tests.integration.harness import WorkerProcess
from tests.integration.test_alerts_kafka import alert_events, settled
from tests.integration.test_engagement_kafka import publish

pytestmark = pytest.mark.kafka


def comparable(events: list[dict[str, Any]]) -> Counter[str]:
    """Alert events as a multiset, without the one field that may differ."""
    return Counter(
        json.dumps({k: v for k, v in e.items() if k != "generated_at"}, sort_keys=True)
        for e in events
    )


def test_a_history_through_a_live_worker_gives_the_replays_alert_events(
    engine_settings: Settings, tmp_path: Path
) -> None:
    settings = engine_settings.model_copy(
        update={"sweep_interval_s": 1.0, "evaluation_delay_s": 0.0}
    )
    end = datetime.now(UTC).replace(microsecond=0)
    fleet = build_fleet(FleetSpec(accounts=12, seed=11, as_of=end.date()))
    events = list(generate_events(fleet, end - timedelta(days=28), end, seed=11))
    events_file, accounts_file = tmp_path / "events.jsonl", tmp_path / "accounts.jsonl"
    events_file.write_text("".join(json.dumps(e) + "\n" for e in events))
    accounts_file.write_text("".join(json.dumps(a.record()) + "\n" for a in fleet))

    worker = WorkerProcess(settings, tmp_path / "worker.log")
    worker.start()
    try:
        publish(settings, fleet, events)
        live = settled(settings, quiet_s=5)
        # The clock a live worker judged idle accounts up to; a tick passing while the
        # test read would add alerts the replay has not judged: read again then.
        step = settings.evaluation_step_s
        judged_to = grid_floor(time.time(), step)
        while grid_floor(time.time(), step) != judged_to or not live:
            time.sleep(5)
            judged_to = grid_floor(time.time(), step)
            live = alert_events(settings)
    finally:
        assert worker.stop() == 0

    out = io.StringIO()
    replay(
        load_rules(DEFAULT_RULES).rules,
        events_file,
        accounts_file,
        out,
        step=timedelta(seconds=step),
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
