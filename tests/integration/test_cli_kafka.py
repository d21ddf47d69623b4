"""The command line against the real broker: produce and simulate publish what they say."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from config.settings import Settings
from stream import codec
from stream.topics import TopicNames
from tests.integration.harness import read_topic

pytestmark = pytest.mark.kafka
REPO = Path(__file__).resolve().parents[2]


def engagewatch(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENGAGEWATCH_")}
    env |= {
        "ENGAGEWATCH_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "ENGAGEWATCH_TOPIC_PREFIX": settings.topic_prefix,
        "ENGAGEWATCH_PARTITIONS": str(settings.partitions),
    }
    return subprocess.run(
        [sys.executable, "-m", "stream.cli", *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_produce_sends_events_and_accounts_keyed_by_account(engine_settings: Settings) -> None:
    result = engagewatch(engine_settings, "produce", "docs/examples/events.jsonl")
    assert result.returncode == 0, result.stderr
    assert "published 10 events" in result.stdout and "1 account records" in result.stdout
    names = TopicNames.from_settings(engine_settings)
    events = read_topic(engine_settings.kafka_bootstrap, names.events)
    accounts = read_topic(engine_settings.kafka_bootstrap, names.accounts)
    assert len(events) == 10 and len(accounts) == 1
    # Lines that are JSON with an account_id are keyed by it; the non-JSON line has no key.
    assert Counter(key for key, _, _, _ in events) == Counter({b"acme": 9, None: 1})
    assert accounts[0][0] == b"acme"


def test_simulate_fast_publishes_the_fleet_it_describes(
    engine_settings: Settings, tmp_path: Path
) -> None:
    written = engagewatch(
        engine_settings, "simulate", "--accounts", "4", "--days", "3", "--out", str(tmp_path)
    )
    assert written.returncode == 0, written.stderr
    lines = (tmp_path / "events.jsonl").read_bytes().splitlines()
    assert len((tmp_path / "accounts.jsonl").read_bytes().splitlines()) == 4

    published = engagewatch(engine_settings, "simulate", "--accounts", "4", "--days", "3", "--fast")
    assert published.returncode == 0, published.stderr
    names = TopicNames.from_settings(engine_settings)
    events = read_topic(engine_settings.kafka_bootstrap, names.events)
    assert f"published 4 accounts and {len(events)} events" in published.stdout
    # Same seed, same fleet: the files hold the same accounts' events (times end "now").
    assert {codec.loads(v)["account_id"] for _, v, _, _ in events if v} == {
        codec.loads(line)["account_id"] for line in lines
    }
    assert all(key == codec.loads(v)["account_id"].encode() for key, v, _, _ in events if v)


def test_a_bad_setting_stops_the_cli_with_the_variable_named() -> None:
    env = {**os.environ, "ENGAGEWATCH_PARTITIONS": "zero"}
    result = subprocess.run(
        [sys.executable, "-m", "stream.cli", "produce", "x.jsonl"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "ENGAGEWATCH_PARTITIONS" in result.stderr and "partitions" in result.stderr
    assert "Traceback" not in result.stderr
