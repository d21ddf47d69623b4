"""The delivery ledger and queue in Redis: what was sent, what waits, and until when.

Every message to a receiver has an id, (fingerprint, transition, receiver). Its ledger
entry is created once (``SET NX``), so an alert event read again after a crash or a
rebalance is not queued twice; the queue is a sorted set per receiver scored by when
the message is due (now, after a backoff, after quiet hours, at the digest's end).

A message is marked ``sending`` before it is sent and ``sent`` after. A worker killed
between the two leaves it ``sending`` and due, so it is sent again: the only window
for a duplicate is one request in flight (docs/delivery.md). When Redis is down
nothing is marked, so nothing is sent: delivery waits and resumes.

The firing messages of one alert episode to one receiver (the first and reminders)
are kept in a set, which its resolve settles: those still waiting unattempted are
cancelled, and one in flight or waiting to retry holds the resolve back.

Keys live under ``ew:<topic_prefix>:dlv:``; ledger entries expire after
``LEDGER_TTL_S``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, cast

import redis.asyncio as aioredis

__all__ = ["LEDGER_TTL_S", "Outbox", "QueuedMessage", "Settled"]

LEDGER_TTL_S = 180 * 86_400
"""Long enough to outlive any alert's episode: a resolved message looks its firing up."""

# Queue a message unless its ledger entry exists (then it was seen before); a firing
# message (first or reminder) joins its episode's set, which its resolve looks through.
# The set's members so far (KEYS[5..]: their ledger entries; ARGV[6..]: their ids) are
# pruned first: once one of them was sent, that one says all a resolve needs to know of
# those already settled, so the others leave (those queued or being sent stay). An
# alert firing for months thus keeps a set of two or three, not one per reminder.
_ENQUEUE = """
if not redis.call('SET', KEYS[1], ARGV[4], 'NX', 'EX', ARGV[5]) then return 0 end
redis.call('HSET', KEYS[3], ARGV[1], ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
if KEYS[4] then
  local kept_sent, settled = false, {}
  for i = 5, #KEYS do
    local raw = redis.call('GET', KEYS[i])
    local state = raw and cjson.decode(raw)['state'] or 'none'
    if state == 'sent' and not kept_sent then
      kept_sent = true
    elseif state ~= 'queued' and state ~= 'sending' then
      table.insert(settled, ARGV[i + 1])
    end
  end
  if kept_sent and #settled > 0 then redis.call('SREM', KEYS[4], unpack(settled)) end
  redis.call('SADD', KEYS[4], ARGV[1])
  redis.call('EXPIRE', KEYS[4], ARGV[5])
end
return 1
"""

# What a resolve may do, given its episode's firing messages (KEYS[4..]: their ledger
# entries; ARGV[4..]: their ids). One still waiting unattempted (quiet hours, a digest,
# catch-up) is cancelled: nobody needs to hear of an alert that is over. One being
# sent, or waiting for a retry, holds the resolve back ('pending', with the latest
# time one is due): the receiver may have it, or get it, and must hear of the end
# after it. Else 'sent' if any went out, 'none' (with their states) if none did.
_SETTLE = """
local pending, due, sent, states = false, 0, false, {}
for i = 4, #KEYS do
  local id = ARGV[i]
  local raw = redis.call('GET', KEYS[i])
  local state = raw and cjson.decode(raw)['state'] or 'none'
  if state == 'queued' then
    local item = redis.call('HGET', KEYS[2], id)
    local attempts = item and cjson.decode(item)['attempts'] or 0
    if attempts == 0 then
      redis.call('ZREM', KEYS[1], id)
      redis.call('HDEL', KEYS[2], id)
      redis.call('SET', KEYS[i], ARGV[1], 'EX', ARGV[2])
      state = 'superseded'
    else
      pending = true
      due = math.max(due, tonumber(redis.call('ZSCORE', KEYS[1], id) or 0))
    end
  elseif state == 'sending' then
    pending = true
  elseif state == 'sent' then
    sent = true
  end
  table.insert(states, state)
end
if pending then return {'pending', tostring(due)} end
if sent then return {'sent', ''} end
return {'none', table.concat(states, ',')}
"""

# Claim messages for sending: only those still queued (or left 'sending' by a worker
# that died mid-send); one a resolve cancelled meanwhile is not sent.
_CLAIM = """
local claimed = {}
for i = 1, #KEYS do
  local raw = redis.call('GET', KEYS[i])
  local state = raw and cjson.decode(raw)['state'] or 'queued'
  if state == 'queued' or state == 'sending' then
    redis.call('SET', KEYS[i], ARGV[i], 'EX', ARGV[#KEYS + 1])
    table.insert(claimed, i)
  end
end
return claimed
"""

# Hold a receiver's lease (only its holder sends, so one worker keeps its rate limit).
_LEASE = """
local holder = redis.call('GET', KEYS[1])
if holder == false or holder == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""


@dataclass(frozen=True)
class Settled:
    """What a resolve may do, from its episode's firing messages (see ``settle``)."""

    verdict: Literal["sent", "pending", "none"]
    due: datetime | None = None
    """``pending``: the latest time one of them is due (``None``: one is being sent)."""
    states: tuple[str, ...] = ()
    """``none``: what became of them (suppressed, superseded, dead, ...)."""


@dataclass
class QueuedMessage:
    """One message waiting for one receiver, as stored in the queue."""

    id: str
    receiver: str
    event: dict[str, Any]
    group: str = ""
    attempts: int = 0
    first_attempt_at: float | None = None
    detail: str = ""
    recipients: tuple[str, ...] = ()
    """Only these recipients (a follow-up for those refused); empty: the receiver's."""
    refused: str = ""
    """Set on a follow-up for recipients refused for good: dead-lettered, not sent."""
    interrupted: bool = field(default=False, compare=False)
    """Set when the ledger says ``sending``: a worker died with it in flight."""

    def to_json(self) -> str:
        return json.dumps(
            {
                "id": self.id,
                "receiver": self.receiver,
                "event": self.event,
                "group": self.group,
                "attempts": self.attempts,
                "first_attempt_at": self.first_attempt_at,
                "detail": self.detail,
                "recipients": list(self.recipients),
                "refused": self.refused,
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, raw: str | bytes) -> QueuedMessage:
        data = json.loads(raw)
        return cls(
            id=data["id"],
            receiver=data["receiver"],
            event=data["event"],
            group=data.get("group", ""),
            attempts=int(data.get("attempts", 0)),
            first_attempt_at=data.get("first_attempt_at"),
            detail=data.get("detail", ""),
            recipients=tuple(data.get("recipients", ())),
            refused=data.get("refused", ""),
        )


class Outbox:
    """The ledger and the per-receiver queues of one engine (one topic prefix)."""

    def __init__(self, redis: aioredis.Redis, prefix: str) -> None:
        self.redis = redis
        self.base = f"ew:{prefix}:dlv:"
        self._enqueue = redis.register_script(_ENQUEUE)
        self._settle = redis.register_script(_SETTLE)
        self._claim = redis.register_script(_CLAIM)
        self._lease = redis.register_script(_LEASE)

    # --- keys -------------------------------------------------------------------

    def ledger_key(self, message_id: str) -> str:
        return f"{self.base}ledger:{message_id}"

    def queue_key(self, receiver: str) -> str:
        return f"{self.base}queue:{receiver}"

    @property
    def items_key(self) -> str:
        return f"{self.base}items"

    def episode_key(self, episode: str) -> str:
        return f"{self.base}episode:{episode}"

    # --- writes from the alerts topic ------------------------------------------

    async def enqueue(
        self, message: QueuedMessage, due: datetime, episode: str | None = None
    ) -> bool:
        """Queue ``message`` unless it was seen before; True when it was queued.
        ``episode``: a firing message's episode, which its resolve settles."""
        keys = [self.ledger_key(message.id), self.queue_key(message.receiver), self.items_key]
        members: list[str] = []
        if episode is not None:
            keys.append(self.episode_key(episode))
            # Read before the script: one added meanwhile is simply not pruned this time.
            found = await self.redis.smembers(self.episode_key(episode))
            members = sorted(_text(member) for member in found)
            keys += [self.ledger_key(member) for member in members]
        args: list[str | float] = [
            message.id,
            due.timestamp(),
            message.to_json(),
            _entry("queued"),
            LEDGER_TTL_S,
            *members,
        ]
        return bool(await self._enqueue(keys=keys, args=args))

    async def record(self, message_id: str, state: str, detail: str = "") -> bool:
        """Record a message that will not be queued (suppressed, say), once."""
        done = await self.redis.set(
            self.ledger_key(message_id), _entry(state, detail), nx=True, ex=LEDGER_TTL_S
        )
        return bool(done)

    async def settle(self, episode: str, receiver: str, firing_ids: Sequence[str] = ()) -> Settled:
        """Settle the firing messages of ``episode`` (and ``firing_ids``: those queued
        before episodes were kept) for its resolve: cancel those still waiting
        unattempted, and say whether the resolve may go (``sent``), must wait for one
        in flight or retrying (``pending``), or has nothing to close (``none``)."""
        members = await self.redis.smembers(self.episode_key(episode))
        ids = list(dict.fromkeys([*firing_ids, *sorted(_text(m) for m in members)]))
        keys = [self.queue_key(receiver), self.items_key, self.episode_key(episode)]
        keys += [self.ledger_key(message_id) for message_id in ids]
        superseded = _entry("superseded", "resolved before it was sent")
        args: list[str | float] = [superseded, LEDGER_TTL_S, "", *ids]  # ARGV[i]: KEYS[i]'s id
        verdict, detail = (_text(part) for part in await self._settle(keys=keys, args=args))
        if verdict == "pending":
            due = float(detail)
            return Settled("pending", datetime.fromtimestamp(due, UTC) if due > 0 else None)
        if verdict == "sent":
            return Settled("sent")
        return Settled("none", states=tuple(detail.split(",")) if detail else ())

    # --- the delivery loop -----------------------------------------------------

    async def hold_lease(self, receiver: str, holder: str, ttl_s: float) -> bool:
        key = f"{self.base}lease:{receiver}"
        return bool(await self._lease(keys=[key], args=[holder, int(ttl_s * 1000)]))

    async def release_lease(self, receiver: str, holder: str) -> None:
        key = f"{self.base}lease:{receiver}"
        if await self.redis.get(key) == holder.encode():
            await self.redis.delete(key)

    async def due(self, receiver: str, now: datetime, limit: int = 100) -> list[QueuedMessage]:
        """Messages due by ``now``, oldest first, flagged when a send was interrupted."""
        found = await self.redis.zrangebyscore(
            self.queue_key(receiver), "-inf", now.timestamp(), start=0, num=limit
        )
        ids = [_text(item) for item in found if isinstance(item, str | bytes)]
        if not ids:
            return []
        raw_items = await self.redis.hmget(self.items_key, ids)
        states = await self.redis.mget([self.ledger_key(_text(i)) for i in ids])
        messages = []
        for message_id, raw, state in zip(ids, raw_items, states, strict=True):
            if raw is None:  # finished by another holder between the two reads
                await self.redis.zrem(self.queue_key(receiver), message_id)
                continue
            message = QueuedMessage.from_json(raw)
            message.interrupted = state is not None and json.loads(state)["state"] == "sending"
            messages.append(message)
        return messages

    async def next_due(self, receiver: str) -> datetime | None:
        first = await self.redis.zrange(self.queue_key(receiver), 0, 0, withscores=True)
        if not first:
            return None
        return datetime.fromtimestamp(float(first[0][1]), UTC)

    async def pending(self, receiver: str) -> int:
        return int(await self.redis.zcard(self.queue_key(receiver)))

    async def due_by(self, receiver: str, until: datetime) -> int:
        """How many messages are due by ``until`` and not delivered yet."""
        return int(await self.redis.zcount(self.queue_key(receiver), "-inf", until.timestamp()))

    async def claim(self, messages: Sequence[QueuedMessage]) -> list[QueuedMessage]:
        """Mark ``messages`` ``sending``, those still to be sent, and return them; the
        others were settled meanwhile (a resolve cancelled them). Must succeed before
        anything is sent: no send goes unrecorded."""
        if not messages:
            return []
        keys = [self.ledger_key(message.id) for message in messages]
        args: list[str | float] = [
            _entry("sending", attempt=message.attempts + 1) for message in messages
        ]
        args.append(LEDGER_TTL_S)
        claimed = await self._claim(keys=keys, args=args)
        return [messages[int(index) - 1] for index in claimed]

    async def finish(self, messages: Sequence[QueuedMessage], state: str, detail: str = "") -> None:
        """Take messages off the queue with their final state (sent, dead, suppressed)."""
        async with self.redis.pipeline(transaction=True) as pipe:
            for message in messages:
                entry = _entry(state, detail, attempt=message.attempts + 1)
                pipe.set(self.ledger_key(message.id), entry, ex=LEDGER_TTL_S)
                pipe.zrem(self.queue_key(message.receiver), message.id)
                pipe.hdel(self.items_key, message.id)
            await pipe.execute()

    async def reschedule(self, messages: Sequence[QueuedMessage], due: datetime) -> None:
        """Put messages back, due later, with their attempt count and last failure."""
        async with self.redis.pipeline(transaction=True) as pipe:
            for message in messages:
                pipe.set(self.ledger_key(message.id), _entry("queued"), ex=LEDGER_TTL_S)
                pipe.hset(self.items_key, message.id, message.to_json())
                pipe.zadd(self.queue_key(message.receiver), {message.id: due.timestamp()})
            await pipe.execute()

    async def episode_size(self, episode: str) -> int:
        """How many firing messages (first, reminders) of ``episode`` its set holds: 0
        if none was queued (pruned, it keeps one that was sent)."""
        return int(await self.redis.scard(self.episode_key(episode)))

    async def state(self, message_id: str) -> Mapping[str, Any] | None:
        raw = await self.redis.get(self.ledger_key(message_id))
        return cast(Mapping[str, Any], json.loads(raw)) if raw is not None else None


def _entry(state: str, detail: str = "", attempt: int = 0) -> str:
    at = datetime.now(UTC).isoformat()
    return json.dumps({"state": state, "detail": detail, "attempt": attempt, "at": at})


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value
