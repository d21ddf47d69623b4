"""The notifier: alert events in, messages out, each exactly once where it can be.

Two halves, joined by the Redis outbox:

* ``accept`` runs for every alert event read from the alerts topic. It routes the
  event, decides when each message is due (now, after quiet hours, at the digest's
  end) and queues one message per receiver. Queueing is idempotent, so an event read
  twice is queued once. While Redis is down it waits, and the topic's offset is not
  committed past the event: nothing read is lost.
* ``run_receiver`` is one loop per receiver. It sends what is due, at the receiver's
  rate, and retries failures with backoff and jitter (honouring Retry-After). A
  permanent failure, or one that outlasts the retry policy, goes to the alerts
  dead-letter topic with the reason. Only the holder of a receiver's lease sends, so
  several workers share the work without sending twice or breaking the rate limit.

Snoozed alerts (the triage API) and alerts quieted by a critical one are recorded as
``suppressed`` and not sent; a resolved message goes only where a firing message of its
episode went, and never ahead of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from functools import partial
from typing import Any, Protocol

from alerts.delivery.config import DeliveryConfig, Receiver
from alerts.delivery.outbox import Outbox, QueuedMessage, Settled
from alerts.delivery.routing import receivers_for, routing_labels
from alerts.delivery.schedule import (
    GiveUp,
    RateLimiter,
    delivery_id,
    digest_due,
    episode_id,
    group_key,
    quiet_until,
    retry_or_give_up,
)
from alerts.delivery.senders import Sender, account_target
from alerts.transports.outcome import Attempt, Outcome

__all__ = ["DeliveryMetrics", "Notifier", "SilenceLookup"]

log = logging.getLogger(__name__)

LEASE_TTL_S = 30.0
IDLE_POLL_S = 0.5
RESOLVE_RECHECK_S = 1.0
"""How soon a resolve held back by its firing's send in flight looks again."""
REDIS_RETRY_S = (0.5, 10.0)
"""First and longest wait between tries while Redis is unreachable."""


class DeliveryMetrics(Protocol):
    def declare_receivers(self, receivers: Iterable[str]) -> None: ...
    def observe_notification(
        self, receiver: str, outcome: str, latency_s: float | None = None
    ) -> None: ...
    def count_delivery_retry(self, receiver: str) -> None: ...
    def set_delivery_backlog(self, receiver: str, pending: int) -> None: ...
    def count_redis_error(self, operation: str) -> None: ...


SilenceLookup = Callable[[str, str, str, datetime], Awaitable[Any | None]]
"""The triage store's answer to "is this alert snoozed?" for (fingerprint, account_id,
rule, now): an object with ``author`` and ``until``, or None."""


DeadLetter = Callable[[Mapping[str, Any]], Awaitable[None]]


class Notifier:
    def __init__(
        self,
        config: DeliveryConfig,
        outbox: Outbox,
        senders: Mapping[str, Sender],
        *,
        dead_letter: DeadLetter,
        now: Callable[[], datetime],
        metrics: DeliveryMetrics | None = None,
        silence_for: SilenceLookup | None = None,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.config = config
        self.outbox = outbox
        self.senders = senders
        self.dead_letter = dead_letter
        self.now = now
        self.metrics = metrics
        self.silence_for = silence_for
        self.rand = rand
        self.holder = f"{uuid.uuid4().hex[:12]}"
        self._stopping = asyncio.Event()
        self._paused_until: dict[str, datetime] = {}
        """Receivers that asked us to wait (Retry-After), until when."""

    def stop(self) -> None:
        """Finish the message in flight, then stop: a graceful stop sends nothing twice."""
        self._stopping.set()

    # --- accept: alerts topic -> outbox ---------------------------------------

    async def accept(self, event: Mapping[str, Any]) -> None:
        """Queue ``event`` for every receiver its labels route to; waits out Redis."""
        for name in receivers_for(self.config.route, routing_labels(event)):
            receiver = self.config.receiver(name)
            await self._until_redis_answers("enqueue", _bind(self._accept, receiver, event))

    async def _accept(self, receiver: Receiver, event: Mapping[str, Any]) -> None:
        message_id = delivery_id(event, receiver.name)
        firing = event["status"] == "firing"
        if firing and event.get("inhibited_by"):
            reason = f"inhibited by {event['inhibited_by']}"
            await self._suppress(receiver.name, message_id, reason)
            return
        if firing and event.get("repeat") and not await self._told(receiver, event):
            # Nothing of this episode reached this receiver (its firing was quieted by a
            # critical alert that has closed since, say): this reminder is its first
            # word of it, so it says FIRING, and is old news like any late firing.
            event = {**event, "repeat": False}
        now = self.now()
        due = now
        age = _latency_s(event, now)
        if firing and age is not None and age > receiver.max_age:
            if event.get("repeat"):
                reason = f"a reminder judged {age / 3600:.0f} h ago, older than max_age"
                await self._suppress(receiver.name, message_id, reason)
                return
            # Old news: wait for its resolved event, which may follow in the same burst.
            due = now + timedelta(seconds=receiver.catch_up_wait)
        if not firing:
            if not receiver.send_resolved:
                await self._suppress(receiver.name, message_id, "send_resolved is off")
                return
            settled = await self._settle(receiver, event)
            if settled.verdict == "none":
                await self._suppress(receiver.name, message_id, _unsent(settled))
                return
            if settled.due is not None:  # after the firing it waits to retry
                due = max(due, settled.due)
        severity = str(event.get("severity"))
        group = ""
        if receiver.digest is not None and severity not in receiver.digest.deliver_severities:
            due = max(due, digest_due(receiver.digest, now))
            group = group_key(receiver.digest, event, receiver.name)
            if target := account_target(receiver, event):  # one account's channel or owner
                group += f"|to:{target}"
        if receiver.quiet_hours is not None:
            quiet_end = quiet_until(receiver.quiet_hours, severity, due)
            if quiet_end is not None:
                due = quiet_end
        message = QueuedMessage(message_id, receiver.name, dict(event), group=group)
        episode = episode_id(event, receiver.name) if firing else None
        if await self.outbox.enqueue(message, due, episode) and self.metrics and due > now:
            self.metrics.observe_notification(receiver.name, "deferred")

    async def _told(self, receiver: Receiver, event: Mapping[str, Any]) -> bool:
        """Whether a firing message of ``event``'s episode was queued for ``receiver``
        (the episode's set; or, for an episode begun before those sets were kept, its
        first firing's ledger entry, unless that was suppressed)."""
        if await self.outbox.episode_size(episode_id(event, receiver.name)):
            return True
        first = delivery_id({**event, "status": "firing", "repeat": False}, receiver.name)
        entry = await self.outbox.state(first)
        return entry is not None and entry.get("state") != "suppressed"

    async def _settle(self, receiver: Receiver, resolved: Mapping[str, Any]) -> Settled:
        """Settle the firing messages of a resolved event's episode (``Outbox.settle``)."""
        first = delivery_id({**resolved, "status": "firing", "repeat": False}, receiver.name)
        return await self.outbox.settle(episode_id(resolved, receiver.name), receiver.name, [first])

    async def _suppress(self, receiver: str, message_id: str, reason: str) -> None:
        if await self.outbox.record(message_id, "suppressed", reason) and self.metrics:
            self.metrics.observe_notification(receiver, "suppressed")

    # --- run_receiver: outbox -> the receiver -----------------------------------

    async def run_receiver(self, name: str) -> None:
        """Deliver what is due for one receiver, forever (cancel to stop)."""
        receiver = self.config.receiver(name)
        limiter = RateLimiter(receiver.rate_per_s)
        try:
            while not self._stopping.is_set():
                # Without this the loop ran on for good after a lost cancel, and the
                # worker's stop waited on it.
                _stop_if_cancelled()
                try:
                    sent = await self._until_redis_answers(
                        "deliver", lambda: self._deliver_due(receiver, limiter)
                    )
                except Exception:
                    # E.g. the dead-letter topic unreachable: what was in flight stays
                    # queued and is tried again; the loop must outlive any one failure.
                    log.exception("notifier: %s delivery pass failed; trying again", name)
                    sent = 0
                    await asyncio.sleep(REDIS_RETRY_S[1])
                if not sent:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(IDLE_POLL_S):
                            await self._stopping.wait()
        finally:
            try:
                await asyncio.shield(self.outbox.release_lease(name, self.holder))
            except Exception:  # best effort: the lease expires anyway
                log.debug("could not release the %s lease", name)

    async def _deliver_due(self, receiver: Receiver, limiter: RateLimiter) -> int:
        """One pass over the due messages; returns how many were handled."""
        if not await self._hold_lease(receiver):
            if self.metrics:  # the holder reports the queue; a stale count here would add up
                self.metrics.set_delivery_backlog(receiver.name, 0)
            return 0
        now = self.now()
        if self.metrics:
            # Due now or waiting for a retry (backoff is at most retry.max), not those
            # held for hours by quiet hours or a digest: a night's quiet is no backlog.
            soon = now + timedelta(seconds=receiver.retry.max)
            self.metrics.set_delivery_backlog(
                receiver.name, await self.outbox.due_by(receiver.name, soon)
            )
        paused = self._paused_until.get(receiver.name)
        if paused is not None and now < paused:
            return 0  # the lease held all the same: no other worker sends meanwhile
        due = await self.outbox.due(receiver.name, now)
        for group in _groups(due):
            if self._stopping.is_set():
                break
            if not await self._deliver(receiver, group, limiter):
                break  # the lease went to another worker, or the receiver said wait
        return len(due)

    async def _hold_lease(self, receiver: Receiver) -> bool:
        """Hold the receiver's lease for longer than a send may take: a worker that
        lost it while its request was in flight would let another send it again."""
        ttl = max(LEASE_TTL_S, _send_limit_s(receiver) + LEASE_TTL_S)
        return await self.outbox.hold_lease(receiver.name, self.holder, ttl)

    async def _deliver(
        self, receiver: Receiver, group: list[QueuedMessage], limiter: RateLimiter
    ) -> bool:
        """Send one message (or digest); False when this pass must stop."""
        group = await self._drop_snoozed(receiver, group)
        group = await self._hold_back_resolves(receiver, group)
        group = await self._dead_letter_refused(receiver, group)
        if not group:
            return True
        wait = limiter.reserve(time.monotonic())
        if wait > 0:
            await asyncio.sleep(wait)
        if not await self._hold_lease(receiver):
            return False
        group = await self.outbox.claim(group)
        if not group:
            return True
        for message in group:
            if message.interrupted:
                log.warning(
                    "%s: sending %s again after an interrupted attempt", receiver.name, message.id
                )
        attempt = await self._send(receiver, group)
        now = self.now()
        if attempt.outcome is Outcome.DELIVERED:
            if attempt.refused:  # queued before the send is recorded: none can be lost
                await self._follow_up(receiver, group, attempt, now)
            await self._record_until_done(lambda: self.outbox.finish(group, "sent", attempt.detail))
            for message in group:
                self._observe(receiver.name, "delivered", _latency_s(message.event, now))
            return True
        for message in group:
            message.attempts += 1
            message.detail = attempt.detail
            if message.first_attempt_at is None:
                message.first_attempt_at = now.timestamp()
        if attempt.outcome is Outcome.PERMANENT:
            await self._give_up(receiver, group, attempt, attempt.detail)
            return True
        first = datetime.fromtimestamp(min(m.first_attempt_at or 0.0 for m in group), now.tzinfo)
        decision = retry_or_give_up(
            receiver.retry,
            attempts=max(m.attempts for m in group),
            first_attempt=first,
            now=now,
            retry_after_s=attempt.retry_after_s,
            rand=self.rand(),
        )
        if isinstance(decision, GiveUp):
            await self._give_up(receiver, group, attempt, f"{decision.reason}: {attempt.detail}")
            return True
        log.info(
            "%s: %s; retrying %d message(s) at %s",
            receiver.name,
            attempt.detail,
            len(group),
            decision.at.isoformat(),
        )
        await self._record_until_done(lambda: self.outbox.reschedule(group, decision.at))
        for _ in group:
            self._observe(receiver.name, "retry")
            if self.metrics:
                self.metrics.count_delivery_retry(receiver.name)
        if attempt.retry_after_s is not None:
            # Retry-After speaks for the receiver, not for one message: nothing more
            # goes to it until then (the next messages would only be refused too).
            self._paused_until[receiver.name] = now + timedelta(seconds=attempt.retry_after_s)
            return False
        return True

    async def _send(self, receiver: Receiver, group: list[QueuedMessage]) -> Attempt:
        sender = self.senders[receiver.name]
        alerts = [message.event for message in group]
        try:
            # The transports time out on their own; this bounds anything they miss.
            # A group shares its recipients: a follow-up's are part of its digest group.
            # asyncio.timeout, not wait_for, which loses a cancel (run_receiver says how).
            async with asyncio.timeout(_send_limit_s(receiver)):
                return await sender.send(alerts, [m.id for m in group], group[0].recipients)
        except TimeoutError:
            return Attempt(Outcome.RETRY, f"no answer within {_send_limit_s(receiver):.0f}s")
        except ValueError as error:  # content that cannot be rendered: the same every time
            log.exception("%s: could not render %d message(s)", receiver.name, len(group))
            return Attempt(Outcome.PERMANENT, f"cannot be rendered: {error}")
        except Exception as error:
            # Escaping, it failed the whole pass and stayed first in line for good, so
            # nothing after it went out either: retried, then dead-lettered, instead.
            log.exception("%s: sending %d message(s) failed", receiver.name, len(group))
            return Attempt(Outcome.RETRY, f"{type(error).__name__}: {error}")

    async def _drop_snoozed(
        self, receiver: Receiver, group: list[QueuedMessage]
    ) -> list[QueuedMessage]:
        if self.silence_for is None:
            return group
        kept = []
        now = self.now()
        for message in group:
            event = message.event
            silence = None
            if event["status"] == "firing":
                silence = await self.silence_for(
                    str(event["fingerprint"]), str(event["account_id"]), str(event["rule"]), now
                )
            if silence is None:
                kept.append(message)
                continue
            until, author = getattr(silence, "until", "?"), getattr(silence, "author", "?")
            detail = f"snoozed until {until} by {author}"
            await self.outbox.finish([message], "suppressed", detail)
            self._observe(receiver.name, "suppressed")
        return kept

    async def _hold_back_resolves(
        self, receiver: Receiver, group: list[QueuedMessage]
    ) -> list[QueuedMessage]:
        """A resolve goes only after its episode's firing messages are done: while one
        is in flight or waits to retry, the resolve waits too; if in the end none was
        sent, neither is the resolve."""
        kept = []
        for message in group:
            if message.event["status"] == "firing":
                kept.append(message)
                continue
            settled = await self._settle(receiver, message.event)
            if settled.verdict == "sent":
                kept.append(message)
            elif settled.verdict == "pending":
                later = self.now() + timedelta(seconds=RESOLVE_RECHECK_S)
                due = max(settled.due, later) if settled.due is not None else later
                await self._record_until_done(partial(self.outbox.reschedule, [message], due))
            else:
                await self.outbox.finish([message], "suppressed", _unsent(settled))
                self._observe(receiver.name, "suppressed")
        return kept

    async def _follow_up(
        self, receiver: Receiver, group: list[QueuedMessage], attempt: Attempt, now: datetime
    ) -> None:
        """Recipients refused while the others took the message get follow-ups of their
        own (the others must not get it twice): those refused for a while are retried
        like any message, those refused for good go to the dead letters from the queue
        (so a dead-letter topic that is down loses nothing either)."""
        later = tuple(sorted(r.recipient for r in attempt.refused if r.outcome is Outcome.RETRY))
        decision = retry_or_give_up(
            receiver.retry,
            attempts=1,
            first_attempt=now,
            now=now,
            retry_after_s=None,
            rand=self.rand(),
        )
        follow_ups: list[tuple[tuple[str, ...], str, str, datetime]] = []
        if later:
            detail = "; ".join(
                f"{r.recipient}: {r.detail}" for r in attempt.refused if r.recipient in later
            )
            if isinstance(decision, GiveUp):
                follow_ups.append((later, detail, f"{decision.reason}: {detail}", now))
            else:
                follow_ups.append((later, detail, "", decision.at))
        for refusal in attempt.refused:
            if refusal.outcome is not Outcome.RETRY:
                reason = f"recipient {refusal.recipient} refused: {refusal.detail}"
                follow_ups.append(((refusal.recipient,), reason, reason, now))
        for recipients, detail, refused, due in follow_ups:
            suffix = f"|retry-to:{','.join(recipients)}"
            for message in group:
                follow_up = QueuedMessage(
                    message.id + suffix,
                    receiver.name,
                    message.event,
                    group=message.group + suffix if message.group else "",
                    attempts=1,
                    first_attempt_at=now.timestamp(),
                    detail=detail,
                    recipients=recipients,
                    refused=refused,
                )
                firing = message.event["status"] == "firing" and not refused
                episode = episode_id(message.event, receiver.name) if firing else None
                await self._record_until_done(partial(self.outbox.enqueue, follow_up, due, episode))
                if not refused:
                    self._observe(receiver.name, "retry")
                    if self.metrics:
                        self.metrics.count_delivery_retry(receiver.name)
            log.info("%s: %s; following up at %s", receiver.name, detail, due.isoformat())

    async def _dead_letter_refused(
        self, receiver: Receiver, group: list[QueuedMessage]
    ) -> list[QueuedMessage]:
        """Follow-ups for recipients refused for good are dead-lettered, not sent."""
        kept = []
        for message in group:
            if not message.refused:
                kept.append(message)
                continue
            failed = Attempt(Outcome.PERMANENT, message.refused)
            await self._give_up(receiver, [message], failed, message.refused)
        return kept

    async def _give_up(
        self, receiver: Receiver, group: list[QueuedMessage], attempt: Attempt, reason: str
    ) -> None:
        await self._dead_letter(receiver, group, attempt, reason, group[0].recipients)
        await self._record_until_done(lambda: self.outbox.finish(group, "dead", reason))
        # "permanent": the receiver refused it; "dead_lettered": retries ran out.
        outcome = "permanent" if attempt.outcome is Outcome.PERMANENT else "dead_lettered"
        for _ in group:
            self._observe(receiver.name, outcome)

    async def _dead_letter(
        self,
        receiver: Receiver,
        group: list[QueuedMessage],
        attempt: Attempt,
        reason: str,
        recipients: Sequence[str],
    ) -> None:
        log.error("%s: not delivered, dead-lettered: %s", receiver.name, reason)
        for message in group:
            letter: dict[str, Any] = {
                "receiver": receiver.name,
                "receiver_type": receiver.type,
                "reason": attempt.outcome.value,
                "detail": reason,
                "status": attempt.status,
                "attempts": message.attempts,
                "message_id": message.id,
                "alert": message.event,
                "failed_at": self.now().isoformat(),
            }
            if recipients:  # not every recipient's: only these were refused
                letter["recipients"] = list(recipients)
            await self.dead_letter(letter)

    def _observe(self, receiver: str, outcome: str, latency_s: float | None = None) -> None:
        if self.metrics is not None:
            self.metrics.observe_notification(receiver, outcome, latency_s)

    # --- Redis outages -------------------------------------------------------------

    async def _until_redis_answers(self, operation: str, step: Callable[[], Awaitable[Any]]) -> Any:
        """Run ``step`` until it gets through: Redis being down delays, never drops."""
        delay = REDIS_RETRY_S[0]
        while True:
            try:
                return await step()
            except _REDIS_ERRORS as exc:
                _stop_if_cancelled()  # a stop while Redis is away: left for the next worker
                if self.metrics:
                    self.metrics.count_redis_error(operation)
                log.warning(
                    "notifier: Redis unavailable during %s (%s); waiting",
                    operation,
                    type(exc).__name__,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, REDIS_RETRY_S[1])

    async def _record_until_done(self, step: Callable[[], Awaitable[Any]]) -> None:
        """After a send, its outcome must be recorded, however long Redis is away."""
        await self._until_redis_answers("record", step)


def _bind(
    step: Callable[[Receiver, Mapping[str, Any]], Awaitable[None]],
    receiver: Receiver,
    event: Mapping[str, Any],
) -> Callable[[], Awaitable[None]]:
    return lambda: step(receiver, event)


def _stop_if_cancelled() -> None:
    """Raise the cancel some library lost: on Python 3.11 ``asyncio.wait_for``, which
    redis-py uses around each write, returns when its awaitable is done even if the task
    was cancelled meanwhile, and the cancel is gone (the task still counts it)."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def _send_limit_s(receiver: Receiver) -> float:
    """The longest one send may take (the transports time out on their own before)."""
    return receiver.timeout * 3 + 5


def _unsent(settled: Settled) -> str:
    states = ", ".join(settled.states) or "none"
    return f"its firing message was not sent ({states})"


def _groups(messages: Sequence[QueuedMessage]) -> list[list[QueuedMessage]]:
    """Messages that share a digest group go in one message; the rest one by one."""
    grouped: dict[str, list[QueuedMessage]] = {}
    singles: list[list[QueuedMessage]] = []
    for message in messages:
        if message.group:
            grouped.setdefault(message.group, []).append(message)
        else:
            singles.append([message])
    return singles + list(grouped.values())


def _latency_s(event: Mapping[str, Any], now: datetime) -> float | None:
    generated = event.get("generated_at")
    if not generated:
        return None
    try:
        started = datetime.fromisoformat(str(generated).replace("Z", "+00:00"))
    except ValueError:
        return None
    return max((now - started) / timedelta(seconds=1), 0.0)


def _redis_errors() -> tuple[type[BaseException], ...]:
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    return (RedisConnectionError, RedisTimeoutError, OSError)


_REDIS_ERRORS = _redis_errors()
