"""Shared fixtures: real servers started once per test session by scripts/devstack.py.

Unit tests never touch these; a test that asks for ``stack`` gets the real Kafka
(KRaft) and Redis that ``scripts/dev-stack up`` runs, in a temporary state directory.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))

import devstack  # noqa: E402 - lives in scripts/, shared with the dev-stack command

from config.settings import Settings  # noqa: E402


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class _Kept(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture(autouse=True)
def _rules_never_raise(request: pytest.FixtureRequest) -> Iterator[None]:
    """A rule that raises is logged and skipped (alerts/sweep.py), so a test comparing
    two paths would pass with both failing alike: any failure logged in this process
    fails the test, unless it is marked ``rule_failures`` (it makes rules raise)."""
    if request.node.get_closest_marker("rule_failures"):
        yield
        return
    kept = _Kept()
    logger = logging.getLogger("alerts.sweep")
    logger.addHandler(kept)
    try:
        yield
    finally:
        logger.removeHandler(kept)
    assert not kept.records, f"a rule raised: {kept.records[0].getMessage()}"


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[devstack.Stack]:
    """One Kafka + Redis for the session; ENGAGEWATCH_TEST_STACK_DIR reuses a running
    ``scripts/dev-stack up`` (faster while developing; tests use unique names anyway)."""
    reuse = os.environ.get("ENGAGEWATCH_TEST_STACK_DIR")
    if reuse and (running := devstack.status(Path(reuse))) is not None:
        yield running
        return
    state = tmp_path_factory.mktemp("dev-stack")
    running = devstack.up(state)
    try:
        yield running
    finally:
        devstack.down(state)


@pytest.fixture
def engine_settings(stack: devstack.Stack, tmp_path: Path) -> Settings:
    """Settings for one test: its own topics, consumer group and data directory."""
    name = f"t{uuid.uuid4().hex[:10]}"
    return Settings(
        kafka_bootstrap=stack.bootstrap,
        redis_url=stack.redis_url,
        topic_prefix=name,
        app_id=name,
        partitions=4,
        data_dir=str(tmp_path / "data"),
        web_port=free_port(),
    )
