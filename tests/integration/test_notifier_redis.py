"""The notifier against a real Redis (ledger and queues) and a local Slack.

In-process: the notifier's loops and the Slack server share the test's event loop; the
outbox is the real Redis of the dev stack (keys under a unique prefix), or a Redis of
the test's own where the test freezes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import devstack  # scripts/, on the path through tests/conftest.py
import pytest
import redis.asyncio as aioredis

from alerts.delivery import notifier as notifier_module
from alerts.delivery.config import DeliveryConfig
from alerts.delivery.notifier import Notifier
from alerts.delivery.outbox import Outbox
from alerts.delivery.schedule import delivery_id, episode_id
from alerts.delivery.senders import Sender, build_sender, render_options
from alerts.transports.outcome import Attempt
from stream.telemetry import EngineMetrics
from tests.conftest import free_port
from tests.servers import Reply
from tests.servers.slack import (
    BOT_TOKEN,
    NO_SERVICE,
    RATE_LIMITED,
    ROLLUP_ERROR,
    SlackServer,
)
from tests.servers.smtp import PASSWORD, USERNAME, SmtpServer

pytestmark = pytest.mark.kafka  # needs the dev stack's Redis

FAST_RETRY = {"initial": "0.1s", "max": "1s", "max_attempts": 5, "give_up_after": "1h"}


def alert(n: int = 1, **overrides: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "schema": 1,
        "fingerprint": f"fp-{n}",
        "status": "firing",
        "rule": "champion-silent",
        "severity": "warning",
        "account_id": f"acct-{n}",
        "stakeholder": None,
        "labels": {"rule": "champion-silent"},
        "annotations": {"summary": f"Champion of account {n} is silent", "description": ""},
        "evidence": {"metric": "days_since_champion_login", "value": 9, "threshold": 5},
        "account": {
            "name": f"Account {n}",
            "arr": 120000,
            "segment": "enterprise",
            "owner_email": "csm@example.com",
            "slack_channel": "#alerts",
            "renewal_date": "2027-01-01",
            "status": "active",
        },
        "starts_at": "2026-11-20T00:00:00Z",
        "ends_at": None,
        "repeat": False,
        "inhibited_by": None,
        "generated_at": datetime.now(UTC).isoformat(),
    }
    event.update(overrides)
    return event


@dataclass
class Rig:
    notifier: Notifier
    outbox: Outbox
    slack: SlackServer
    dead: list[dict[str, Any]]
    metrics: EngineMetrics
    snoozed: set[str]

    async def deliver_for(self, seconds: float, receiver: str = "slack") -> None:
        """Run the receiver's loop for a while, then stop it gracefully."""
        loop = asyncio.create_task(self.notifier.run_receiver(receiver))
        await asyncio.sleep(seconds)
        loop.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await loop

    def second_worker(self, metrics: EngineMetrics | None = None) -> Notifier:
        """Another worker's notifier on the same outbox and receivers."""
        return Notifier(
            self.notifier.config,
            self.outbox,
            self.notifier.senders,
            dead_letter=self.notifier.dead_letter,
            now=self.notifier.now,
            metrics=metrics,
        )

    def count(self, receiver: str, outcome: str) -> float:
        value = self.metrics.registry.get_sample_value(
            "engagewatch_notifications_total", {"receiver": receiver, "outcome": outcome}
        )
        return value or 0.0


def quiet_now() -> dict[str, str]:
    """Quiet hours from an hour ago to two hours from now (UTC)."""
    now = datetime.now(UTC)
    return {
        "start": (now - timedelta(hours=1)).strftime("%H:%M"),
        "end": (now + timedelta(hours=2)).strftime("%H:%M"),
        "timezone": "UTC",
    }


async def until(check: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


RigFactory = Callable[..., Awaitable[Rig]]


@pytest.fixture
async def make_rig(stack: devstack.Stack) -> AsyncIterator[RigFactory]:
    """Build a notifier whose one receiver ``slack`` posts to a local Slack."""
    cleanup = contextlib.AsyncExitStack()

    async def build(redis_url: str = stack.redis_url, **receiver: Any) -> Rig:
        slack = await cleanup.enter_async_context(SlackServer())
        session = await cleanup.enter_async_context(aiohttp.ClientSession())
        redis = aioredis.from_url(redis_url, socket_timeout=1.0, socket_connect_timeout=1.0)
        cleanup.push_async_callback(redis.aclose)
        if receiver.get("type") == "slack_bot":  # the Web API's chat.postMessage
            endpoint = {"type": "slack_bot", "token": BOT_TOKEN, "api_base": slack.api_base}
        else:
            endpoint = {"type": "slack_webhook", "url": slack.webhook_url}
        config = DeliveryConfig.model_validate(
            {
                "receivers": [
                    {
                        "name": "slack",
                        **endpoint,
                        "timeout": "2s",
                        "rate_per_s": 50,
                        "retry": FAST_RETRY,
                        **receiver,
                    }
                ],
                "route": {"receiver": "slack"},
            }
        )
        options = render_options(lambda: datetime.now(UTC), "http://triage.test")
        senders: dict[str, Sender] = {
            r.name: build_sender(r, session, options) for r in config.receivers
        }
        outbox = Outbox(redis, f"t{uuid.uuid4().hex[:10]}")
        dead: list[dict[str, Any]] = []
        snoozed: set[str] = set()
        metrics = EngineMetrics()

        async def dead_letter(record: Any) -> None:
            dead.append(dict(record))

        async def silence_for(fp: str, account: str, rule: str, now: datetime) -> Any:
            return {"author": "oncall"} if fp in snoozed else None

        notifier = Notifier(
            config,
            outbox,
            senders,
            dead_letter=dead_letter,
            now=lambda: datetime.now(UTC),
            metrics=metrics,
            silence_for=silence_for,
        )
        return Rig(notifier, outbox, slack, dead, metrics, snoozed)

    yield build
    await cleanup.aclose()


async def test_an_alert_event_read_twice_is_sent_once(make_rig: RigFactory) -> None:
    rig = await make_rig()
    event = alert()
    await rig.notifier.accept(event)
    await rig.notifier.accept(dict(event))  # Kafka delivered it again after a rebalance
    await rig.deliver_for(1.0)
    assert len(rig.slack.posted) == 1
    state = await rig.outbox.state(delivery_id(event, "slack"))
    assert state is not None
    assert state["state"] == "sent"
    assert await rig.outbox.pending("slack") == 0
    assert rig.count("slack", "delivered") == 1


async def test_rate_limits_and_server_errors_are_retried_honouring_retry_after(
    make_rig: RigFactory,
) -> None:
    rig = await make_rig()
    rig.slack.webhook_script.push(RATE_LIMITED, ROLLUP_ERROR)
    await rig.notifier.accept(alert())
    loop = asyncio.create_task(rig.notifier.run_receiver("slack"))
    try:
        await until(lambda: len(rig.slack.posted) == 1, 10, "the message after two failures")
    finally:
        loop.cancel()
    arrivals = [request.at for request in rig.slack.webhook_requests]
    assert len(arrivals) == 3
    assert arrivals[1] - arrivals[0] >= 1.0, "Retry-After: 1 was not honoured"
    assert rig.count("slack", "retry") == 2
    assert rig.dead == []


async def test_a_refused_message_goes_to_the_dead_letters_with_its_reason(
    make_rig: RigFactory,
) -> None:
    rig = await make_rig()
    rig.slack.webhook_script.push(NO_SERVICE)
    event = alert()
    await rig.notifier.accept(event)
    await rig.deliver_for(1.0)
    assert rig.slack.posted == []
    assert len(rig.dead) == 1
    letter = rig.dead[0]
    assert letter["receiver"] == "slack"
    assert letter["reason"] == "permanent"
    assert "no_service" in letter["detail"]
    assert letter["alert"]["fingerprint"] == event["fingerprint"]
    assert rig.slack.webhook_url not in str(letter)
    state = await rig.outbox.state(delivery_id(event, "slack"))
    assert state is not None
    assert state["state"] == "dead"
    assert await rig.outbox.pending("slack") == 0


async def test_retries_that_run_out_go_to_the_dead_letters(make_rig: RigFactory) -> None:
    rig = await make_rig(retry={**FAST_RETRY, "max_attempts": 3})
    rig.slack.webhook_script.push(ROLLUP_ERROR, ROLLUP_ERROR, ROLLUP_ERROR)
    await rig.notifier.accept(alert())
    await rig.deliver_for(2.5)
    assert len(rig.slack.webhook_requests) == 3
    assert rig.slack.posted == []
    assert len(rig.dead) == 1
    assert "gave up after 3 attempts" in rig.dead[0]["detail"]
    assert rig.count("slack", "dead_lettered") == 1


async def test_a_resolved_message_goes_only_where_its_firing_went(make_rig: RigFactory) -> None:
    rig = await make_rig()
    sent, inhibited = alert(1), alert(2, inhibited_by="fp-critical")
    for event in (sent, inhibited):
        await rig.notifier.accept(event)
    await rig.deliver_for(1.0)
    assert [m["text"] for m in rig.slack.posted if "Account 2" in m["text"]] == []
    for event in (sent, inhibited):
        await rig.notifier.accept(
            {**event, "status": "resolved", "ends_at": "2026-11-23T00:00:00Z"}
        )
    await rig.deliver_for(1.0)
    texts = [message["text"] for message in rig.slack.posted]
    assert len(texts) == 2, texts  # account 1 fired and resolved; account 2 neither
    assert all("Account 1" in text for text in texts)
    assert rig.count("slack", "suppressed") == 2


class KafkaUnavailableError(Exception):
    pass


def resolved(event: dict[str, Any]) -> dict[str, Any]:
    return {**event, "status": "resolved", "ends_at": "2026-11-23T00:00:00Z"}


def kinds(rig: Rig) -> list[str]:
    """What Slack accepted, in order: ``firing``, ``repeat`` or ``resolved``."""
    found = []
    for message in rig.slack.posted:
        text = str(message)
        found.append(
            "resolved" if "RESOLVED" in text else "repeat" if "Still firing" in text else "firing"
        )
    return found


async def resolve_after_first_send(rig: Rig, first_reply: Reply) -> dict[str, Any]:
    """Fire an alert whose first send gets ``first_reply``, resolve it once that send
    has reached Slack, and deliver until Slack has taken two messages."""
    rig.slack.webhook_script.push(first_reply)
    event = alert()
    await rig.notifier.accept(event)
    loop = asyncio.create_task(rig.notifier.run_receiver("slack"))
    try:
        await until(lambda: len(rig.slack.webhook_requests) == 1, 5, "the firing's send")
        await rig.notifier.accept(resolved(event))
        await until(lambda: len(rig.slack.posted) == 2, 10, "the firing and its resolve")
    finally:
        loop.cancel()
        await asyncio.gather(loop, return_exceptions=True)
    return event


async def test_a_resolve_judged_while_its_firing_is_in_flight_waits_for_it(
    make_rig: RigFactory,
) -> None:
    """The firing is on its way when the alert resolves, and that send fails: the
    receiver hears the firing (retried) first and the resolve after, never the reverse
    (which would leave a PagerDuty incident open for good)."""
    rig = await make_rig()
    # Slack has not answered yet when the resolve comes.
    await resolve_after_first_send(rig, Reply(500, "rollup_error", delay_s=0.5))
    assert kinds(rig) == ["firing", "resolved"]


async def test_a_firing_waiting_to_retry_is_not_cancelled_by_its_resolve(
    make_rig: RigFactory,
) -> None:
    """A firing that failed may have reached the receiver (a timeout after it took it),
    and it was judged worth telling: its resolve does not cancel it, but follows it."""
    rig = await make_rig(retry={**FAST_RETRY, "initial": "1s"})
    event = await resolve_after_first_send(rig, ROLLUP_ERROR)  # it waits for its retry
    assert kinds(rig) == ["firing", "resolved"]
    state = await rig.outbox.state(delivery_id(event, "slack"))
    assert state is not None
    assert state["state"] == "sent"


async def test_a_resolve_follows_a_reminder_that_went_out_after_a_quieted_firing(
    make_rig: RigFactory,
) -> None:
    """The firing was quieted by a critical alert; once that ended, the reminder went
    out, saying FIRING (the CSM had heard nothing of it: "still firing" would puzzle
    them): they heard of the alert, so they hear of its end."""
    rig = await make_rig()
    event = alert(inhibited_by="fp-critical")
    await rig.notifier.accept(event)
    reminder = {**event, "inhibited_by": None, "repeat": True, "generated_at": _later(1)}
    await rig.notifier.accept(reminder)
    await rig.deliver_for(1.0)
    await rig.notifier.accept({**resolved(event), "inhibited_by": None})
    await rig.deliver_for(1.0)
    assert kinds(rig) == ["firing", "resolved"]


async def test_an_alert_firing_for_months_keeps_its_episode_set_small(
    make_rig: RigFactory,
) -> None:
    """Found by a review: every reminder joined its episode's set in Redis, which never
    shrank while the alert fired (a champion who left: a reminder a week for years, 141
    bytes each, per receiver). Once one message of the episode was sent, the settled
    others leave the set; the resolve still follows what was sent."""
    rig = await make_rig()
    event = alert()
    await rig.notifier.accept(event)
    await rig.deliver_for(0.5)
    episode = rig.outbox.episode_key(episode_id(event, "slack"))
    for week in range(1, 11):
        reminder = {**event, "repeat": True, "generated_at": _later(week)}
        await rig.notifier.accept(reminder)
        await rig.deliver_for(0.3)
        assert await rig.outbox.redis.scard(episode) == 2  # the one kept, the newest
    await rig.notifier.accept(resolved(event))
    await rig.deliver_for(0.5)
    assert kinds(rig) == ["firing"] + ["repeat"] * 10 + ["resolved"]


async def test_an_old_reminder_after_a_quieted_firing_is_told_as_old_news(
    make_rig: RigFactory,
) -> None:
    """Found by a review (and by the delivery test, on days whose tick made a health
    tier go red): a yellow tier quieted by a critical alert, then red, is re-notified as
    a reminder; read in a catch-up burst it was dropped as an old reminder, so nobody
    heard of an alert still open. It is this receiver's first word of the episode: old
    news, told once its catch-up wait shows it is still open."""
    rig = await make_rig(catch_up_wait="0.5s")
    judged = (datetime.now(UTC) - timedelta(days=3)).isoformat()
    quieted = alert(1, generated_at=judged, inhibited_by="fp-critical")
    two_days_ago = (datetime.now(UTC) - timedelta(days=2)).isoformat()
    red = {**quieted, "inhibited_by": None, "repeat": True, "severity": "critical"}
    await rig.notifier.accept(quieted)
    await rig.notifier.accept({**red, "generated_at": two_days_ago})
    await rig.deliver_for(1.5)
    assert kinds(rig) == ["firing"]
    assert "FIRING critical" in str(rig.slack.posted[0])


async def test_a_reminder_held_by_quiet_hours_is_dropped_when_the_alert_resolves(
    make_rig: RigFactory,
) -> None:
    rig = await make_rig(quiet_hours=quiet_now())  # warnings wait, criticals go
    event = alert(severity="warning")
    # The firing went out before the quiet hours (recorded as sent), the reminder waits.
    first = delivery_id(event, "slack")
    await rig.outbox.record(first, "sent")
    reminder = {**event, "repeat": True, "generated_at": _later(1)}
    await rig.notifier.accept(reminder)
    assert await rig.outbox.pending("slack") == 1
    await rig.notifier.accept(resolved(event))
    state = await rig.outbox.state(delivery_id(reminder, "slack"))
    assert state is not None
    assert state["state"] == "superseded"
    assert await rig.outbox.pending("slack") == 1  # the resolve, after the quiet hours


async def test_retry_after_holds_the_whole_receiver(make_rig: RigFactory) -> None:
    """Slack's 429 speaks for the webhook, not one message: nothing else is posted to
    it before Retry-After has passed (each would only be refused, spending a retry)."""
    rig = await make_rig()
    rig.slack.webhook_script.push(RATE_LIMITED)  # Retry-After: 1
    for n in (1, 2, 3):
        await rig.notifier.accept(alert(n))
    loop = asyncio.create_task(rig.notifier.run_receiver("slack"))
    try:
        await until(lambda: len(rig.slack.posted) == 3, 10, "all three messages")
    finally:
        loop.cancel()
        await asyncio.gather(loop, return_exceptions=True)
    arrivals = [request.at for request in rig.slack.webhook_requests]
    assert len(arrivals) == 4  # one refused, three accepted
    assert arrivals[1] - arrivals[0] >= 1.0, "a message was posted inside Retry-After"
    assert rig.count("slack", "retry") == 1


async def test_the_lease_outlasts_a_send(make_rig: RigFactory) -> None:
    """A worker must keep the receiver's lease for as long as its request may take,
    or another worker would take the lease and send the same message again."""
    rig = await make_rig(timeout="20s")  # a send may take up to 3 x 20 + 5 s
    await rig.notifier.accept(alert())
    loop = asyncio.create_task(rig.notifier.run_receiver("slack"))
    try:
        await until(lambda: len(rig.slack.posted) == 1, 5, "the message")
        ttl_ms = await rig.outbox.redis.pttl(f"{rig.outbox.base}lease:slack")
    finally:
        loop.cancel()
        await asyncio.gather(loop, return_exceptions=True)
    assert ttl_ms > 65_000


def _later(seconds: float) -> str:
    return (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat()


async def test_a_digest_groups_an_owners_alerts_into_one_message(make_rig: RigFactory) -> None:
    rig = await make_rig(digest={"interval": "1s", "group_by": "owner"})
    for n in (1, 2, 3):
        await rig.notifier.accept(alert(n))
    other = alert(4)
    other["account"] = {**other["account"], "owner_email": "other@example.com"}
    await rig.notifier.accept(other)
    await rig.notifier.accept(alert(5, severity="critical"))  # criticals skip the digest
    await rig.deliver_for(2.5)
    assert len(rig.slack.posted) == 3
    by_size = sorted(rig.slack.posted, key=lambda message: len(str(message)))
    digest = str(by_size[-1])
    assert all(f"Account {n}" in digest for n in (1, 2, 3))
    assert "Account 4" not in digest


async def test_a_digest_never_mixes_two_accounts_channels(make_rig: RigFactory) -> None:
    """One owner, accounts with channels of their own: each channel gets its accounts'
    digest only, never another customer's alert."""
    rig = await make_rig(
        type="slack_bot", channel="account", digest={"interval": "1s", "group_by": "owner"}
    )
    rig.slack.channels["#customer-globex"] = "C0GLOBEX01"
    for n, channel in ((1, "#alerts"), (2, "#customer-globex"), (3, "#alerts")):
        event = alert(n)
        event["account"] = {**event["account"], "slack_channel": channel}
        await rig.notifier.accept(event)
    await rig.deliver_for(2.5)
    by_channel = {message["channel"]: str(message) for message in rig.slack.posted}
    assert len(rig.slack.posted) == 2
    assert "Account 1" in by_channel["C0ALERTS01"]
    assert "Account 3" in by_channel["C0ALERTS01"]
    assert "Account 2" not in by_channel["C0ALERTS01"]
    assert "Account 2" in by_channel["C0GLOBEX01"]


async def test_a_firing_resolved_before_its_digest_is_never_sent(make_rig: RigFactory) -> None:
    rig = await make_rig(digest={"interval": "1h", "group_by": "owner"})
    event = alert()
    await rig.notifier.accept(event)
    await rig.notifier.accept({**event, "status": "resolved", "ends_at": "2026-11-23T00:00:00Z"})
    assert await rig.outbox.pending("slack") == 0
    state = await rig.outbox.state(delivery_id(event, "slack"))
    assert state is not None
    assert state["state"] == "superseded"


async def test_quiet_hours_hold_warnings_but_not_criticals(make_rig: RigFactory) -> None:
    rig = await make_rig(quiet_hours=quiet_now())
    await rig.notifier.accept(alert(1, severity="warning"))
    await rig.notifier.accept(alert(2, severity="critical"))
    await rig.deliver_for(1.0)
    assert len(rig.slack.posted) == 1
    assert "Account 2" in rig.slack.posted[0]["text"]
    next_due = await rig.outbox.next_due("slack")
    assert next_due is not None
    assert next_due > datetime.now(UTC) + timedelta(hours=1)
    assert rig.count("slack", "deferred") == 1


async def test_a_snoozed_alert_is_not_sent(make_rig: RigFactory) -> None:
    rig = await make_rig()
    rig.snoozed.add("fp-1")
    await rig.notifier.accept(alert(1))
    await rig.notifier.accept(alert(2))
    await rig.deliver_for(1.0)
    assert [m["text"] for m in rig.slack.posted if "Account 1" in m["text"]] == []
    assert len(rig.slack.posted) == 1
    state = await rig.outbox.state(delivery_id(alert(1), "slack"))
    assert state is not None
    assert state["state"] == "suppressed"


async def test_the_receiver_rate_is_kept(make_rig: RigFactory) -> None:
    rig = await make_rig(rate_per_s=5)
    for n in range(1, 6):
        await rig.notifier.accept(alert(n))
    await rig.deliver_for(2.0)
    arrivals = [request.at for request in rig.slack.webhook_requests]
    assert len(arrivals) == 5
    gaps = [later - earlier for earlier, later in itertools.pairwise(arrivals)]
    assert min(gaps) >= 0.18, gaps  # 5/s: 0.2 s apart, less the server's clock jitter


async def test_two_workers_share_a_receiver_and_send_each_message_once(
    make_rig: RigFactory,
) -> None:
    rig = await make_rig()
    twin = rig.second_worker()
    for n in range(1, 11):
        await rig.notifier.accept(alert(n))
    loops = [
        asyncio.create_task(rig.notifier.run_receiver("slack")),
        asyncio.create_task(twin.run_receiver("slack")),
    ]
    await until(lambda: len(rig.slack.posted) >= 10, 10, "ten messages")
    await asyncio.sleep(0.5)
    for loop in loops:
        loop.cancel()
    await asyncio.gather(*loops, return_exceptions=True)
    names = sorted(str(message["text"]) for message in rig.slack.posted)
    assert len(names) == 10
    assert len(set(names)) == 10


async def test_only_the_lease_holder_reports_the_backlog(make_rig: RigFactory) -> None:
    """A worker that lost a receiver's lease must not keep showing the queue it last saw:
    summed over workers, that stale count raised EngagewatchNotificationBacklog for a
    queue that had drained."""
    # A digest an hour away, within the longest retry wait: counted as pending.
    retry = {**FAST_RETRY, "max": "2h"}
    rig = await make_rig(digest={"interval": "1h", "group_by": "owner"}, retry=retry)
    await rig.notifier.accept(alert())
    twin_metrics = EngineMetrics()
    twin_metrics.set_delivery_backlog("slack", 7)  # what it saw while it held the lease

    def pending(metrics: EngineMetrics) -> float | None:
        sample = "engagewatch_notifications_pending"
        return metrics.registry.get_sample_value(sample, {"receiver": "slack"})

    twin = rig.second_worker(twin_metrics)
    holder = asyncio.create_task(rig.notifier.run_receiver("slack"))
    try:
        await until(lambda: pending(rig.metrics) == 1, 5, "the holder's count")
        other = asyncio.create_task(twin.run_receiver("slack"))
        try:
            await until(lambda: pending(twin_metrics) == 0, 5, "the other worker's 0")
        finally:
            other.cancel()
            await asyncio.gather(other, return_exceptions=True)
    finally:
        holder.cancel()
        await asyncio.gather(holder, return_exceptions=True)
    assert pending(rig.metrics) == 1


async def test_a_night_of_quiet_hours_is_no_backlog(make_rig: RigFactory) -> None:
    """Messages held for hours by quiet hours are not 'pending': counted, they raised
    EngagewatchNotificationBacklog every night."""
    rig = await make_rig(quiet_hours=quiet_now())
    await rig.notifier.accept(alert(severity="warning"))
    await rig.deliver_for(0.5)
    assert await rig.outbox.pending("slack") == 1
    pending = rig.metrics.registry.get_sample_value(
        "engagewatch_notifications_pending", {"receiver": "slack"}
    )
    assert pending == 0


# --- Redis outages -------------------------------------------------------------------


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[tuple[str, int]]:
    """A redis-server of this test's own, which it may freeze (SIGSTOP) and thaw."""
    port = free_port()
    proc = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--dir",
            str(tmp_path),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while not devstack._redis_ping(port):
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0", proc.pid
    finally:
        os.kill(proc.pid, signal.SIGCONT)
        proc.terminate()
        proc.wait(10)


async def test_a_cancel_that_comes_as_a_send_finishes_stops_the_delivery_loop(
    make_rig: RigFactory,
) -> None:
    """Found by a review (this file's tests hung 1 in 20-40 runs): on Python 3.11
    asyncio.wait_for returns when its awaitable is done even if the task was cancelled
    meanwhile, and drops the cancel. The notifier bounded its sends with it, and
    redis-py bounds each write with it (here: recording the message as sent): the loop
    went on for good, and a worker's stop that cancels it waited forever."""
    rig = await make_rig()
    real = rig.notifier.senders["slack"]
    tasks: list[asyncio.Task[None]] = []

    class CancelledAsItFinishes:
        async def send(
            self, alerts: Any, message_ids: Sequence[str], recipients: Sequence[str] = ()
        ) -> Attempt:
            attempt = await real.send(alerts, message_ids, recipients)
            tasks[0].cancel()  # the worker stops as the receiver's answer arrives
            return attempt

    senders = rig.notifier.senders
    assert isinstance(senders, dict)
    senders["slack"] = CancelledAsItFinishes()
    await rig.notifier.accept(alert(1))
    tasks.append(asyncio.create_task(rig.notifier.run_receiver("slack")))
    done, _ = await asyncio.wait(tasks, timeout=10)
    try:
        assert done == set(tasks), "the delivery loop went on after it was cancelled"
        assert tasks[0].cancelled() and len(rig.slack.posted) == 1
    finally:
        rig.notifier.stop()
        await asyncio.wait(tasks, timeout=5)


async def test_while_redis_is_unreachable_nothing_is_lost_or_sent_unrecorded(
    make_rig: RigFactory, own_redis: tuple[str, int]
) -> None:
    url, pid = own_redis
    rig = await make_rig(redis_url=url)
    await rig.notifier.accept(alert(1))
    loop = asyncio.create_task(rig.notifier.run_receiver("slack"))
    try:
        await until(lambda: len(rig.slack.posted) == 1, 5, "the first message")
        os.kill(pid, signal.SIGSTOP)  # Redis stops answering
        accepting = asyncio.create_task(rig.notifier.accept(alert(2)))
        await asyncio.sleep(2.5)
        assert not accepting.done(), "accept returned while Redis could not record it"
        assert len(rig.slack.posted) == 1, "something was sent that Redis could not record"
        os.kill(pid, signal.SIGCONT)
        await asyncio.wait_for(accepting, 20)
        await until(lambda: len(rig.slack.posted) == 2, 20, "delivery to resume")
    finally:
        os.kill(pid, signal.SIGCONT)
        loop.cancel()
        await asyncio.gather(loop, return_exceptions=True)
    assert ["Account 1" in m["text"] for m in rig.slack.posted] == [True, False]
    errors = rig.metrics.registry.get_sample_value(
        "engagewatch_redis_errors_total", {"operation": "enqueue"}
    )
    assert errors is not None
    assert errors >= 1


async def test_old_news_is_told_only_if_it_is_still_news(make_rig: RigFactory) -> None:
    """A worker catching up on history publishes long-past episodes in a burst: an
    episode that ended meanwhile pages nobody, one still open is told, once."""
    rig = await make_rig(catch_up_wait="0.5s")
    judged = (datetime.now(UTC) - timedelta(days=3)).isoformat()
    over, still_open = alert(1, generated_at=judged), alert(2, generated_at=judged)
    two_days_ago = (datetime.now(UTC) - timedelta(days=2)).isoformat()
    reminder = {**still_open, "repeat": True, "generated_at": two_days_ago}
    await rig.notifier.accept(over)
    await rig.notifier.accept(still_open)
    await rig.notifier.accept({**over, "status": "resolved", "ends_at": judged})
    await rig.notifier.accept(reminder)
    await rig.deliver_for(0.3)
    assert rig.slack.posted == []  # old firings wait for their resolved events first
    await rig.deliver_for(1.0)
    assert [m["text"] for m in rig.slack.posted if "Account 1" in m["text"]] == []
    assert len(rig.slack.posted) == 1
    assert "Account 2" in rig.slack.posted[0]["text"]
    state = await rig.outbox.state(delivery_id(over, "slack"))
    assert state is not None
    assert state["state"] == "superseded"


@pytest.fixture
async def smtp(tmp_path: Path) -> AsyncIterator[SmtpServer]:
    async with SmtpServer(tmp_path) as server:
        yield server


def mail_config(smtp: SmtpServer, tmp_path: Path, to: list[str]) -> DeliveryConfig:
    """One e-mail receiver, "mail", on the test's SMTP server, retrying fast."""
    return DeliveryConfig.model_validate(
        {
            "receivers": [
                {
                    "name": "mail",
                    "type": "email",
                    "smtp": {
                        "host": smtp.host,
                        "port": smtp.port,
                        "username": USERNAME,
                        "password": PASSWORD,
                        "ca_file": str(tmp_path / "smtp-cert.pem"),
                    },
                    "from": "engagewatch@example.com",
                    "to": to,
                    "retry": FAST_RETRY,
                }
            ],
            "route": {"receiver": "mail"},
        }
    )


@contextlib.asynccontextmanager
async def mail_notifier(
    stack: devstack.Stack, config: DeliveryConfig, dead_letter: Callable[[Any], Awaitable[None]]
) -> AsyncIterator[Notifier]:
    """A notifier for ``config`` on the real Redis, with the real senders."""
    redis = aioredis.from_url(stack.redis_url)
    try:
        async with aiohttp.ClientSession() as session:
            options = render_options(lambda: datetime.now(UTC), None)
            senders: dict[str, Sender] = {
                r.name: build_sender(r, session, options) for r in config.receivers
            }
            outbox = Outbox(redis, f"t{uuid.uuid4().hex[:10]}")
            yield Notifier(
                config, outbox, senders, dead_letter=dead_letter, now=lambda: datetime.now(UTC)
            )
    finally:
        await redis.aclose()


@contextlib.asynccontextmanager
async def delivering(notifier: Notifier, receiver: str) -> AsyncIterator[None]:
    """The receiver's delivery loop, running for the block."""
    loop = asyncio.create_task(notifier.run_receiver(receiver))
    try:
        yield
    finally:
        loop.cancel()
        await asyncio.gather(loop, return_exceptions=True)


@pytest.mark.parametrize("dead_letters_down", [False, True])
async def test_a_recipient_refused_for_a_while_gets_its_own_follow_up(
    stack: devstack.Stack,
    smtp: SmtpServer,
    tmp_path: Path,
    dead_letters_down: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The SMTP server takes the mail for the owner but answers 450 (busy) for the
    on-call alias: the owner is not sent it twice, the alias gets it once it takes mail
    again, and an address refused for good (550) goes to the dead letters. Before, both
    were recorded as sent and never heard of again. With the dead-letter topic down at
    first, the refusal waits in the queue: nothing is lost, and nobody mailed twice."""
    monkeypatch.setattr(notifier_module, "REDIS_RETRY_S", (0.1, 0.2))  # a failed pass
    config = mail_config(smtp, tmp_path, ["owner", "oncall@example.com", "gone@example.com"])
    smtp.refuse["oncall@example.com"] = "450 4.2.1 Mailbox busy"
    smtp.refuse["gone@example.com"] = "550 5.1.1 No such user"
    dead: list[dict[str, Any]] = []

    refusing = [dead_letters_down]

    async def dead_letter(record: Any) -> None:
        if refusing[0]:
            refusing[0] = False
            raise KafkaUnavailableError("the dead-letter topic is down")
        dead.append(dict(record))

    async with mail_notifier(stack, config, dead_letter) as notifier:
        await notifier.accept(alert())
        async with delivering(notifier, "mail"):
            await until(lambda: len(smtp.received) == 1, 10, "the mail to the owner")
            del smtp.refuse["oncall@example.com"]  # the alias takes mail again
            await until(lambda: len(smtp.received) == 2, 10, "the follow-up")
            await until(lambda: len(dead) == 1, 10, "the dead letter")
            await asyncio.sleep(0.5)  # nothing else follows
        assert await notifier.outbox.pending("mail") == 0
    assert [mail.rcpt_tos for mail in smtp.received] == [
        ("csm@example.com",),
        ("oncall@example.com",),
    ]
    assert [(d["recipients"], d["reason"]) for d in dead] == [(["gone@example.com"], "permanent")]
    assert "550 5.1.1 No such user" in dead[0]["detail"]


async def test_an_owner_email_that_is_not_one_address_is_dead_lettered_not_stuck_first_in_line(
    stack: devstack.Stack, smtp: SmtpServer, tmp_path: Path
) -> None:
    """Found by a review: an account record's owner_email holding a line break made
    rendering raise; the error escaped the delivery pass, which failed and ran again
    every few seconds with that message first in line, so no e-mail went out for any
    account. One holding a list mailed every address in it. Both are now refused for
    good, with the reason, and the mail for the next account goes out."""
    config = mail_config(smtp, tmp_path, ["owner"])
    owners = ["dana@example.com\nlee@example.com", "csm@example.com, attacker@evil.example"]
    bad = [alert(n + 1) for n in range(len(owners))]
    for event, owner in zip(bad, owners, strict=True):
        event["account"]["owner_email"] = owner
    good = alert(3)
    dead: list[dict[str, Any]] = []

    async def dead_letter(record: Any) -> None:
        dead.append(dict(record))

    async with mail_notifier(stack, config, dead_letter) as notifier:
        for event in [*bad, good]:
            await notifier.accept(event)
        async with delivering(notifier, "mail"):
            await until(lambda: len(smtp.received) == 1, 10, "the mail of the good account")
            await until(lambda: len(dead) == 2, 10, "the two dead letters")
        assert await notifier.outbox.pending("mail") == 0
    assert [mail.rcpt_tos for mail in smtp.received] == [("csm@example.com",)]
    assert sorted(d["detail"] for d in dead) == sorted(
        f"not one plain e-mail address: {owner!r}" for owner in owners
    )
