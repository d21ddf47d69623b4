"""The triage index and what people recorded about alerts, in Redis.

Every key lives under ``ew:{topic_prefix}:`` (test runs with their own prefix never
meet). Workers write their own accounts' entries once per sweep, in one pipeline; any
worker reads all of them, so any worker answers the triage API for the whole fleet.

=============================  ======  ==============================================
key (after the prefix)         type    holds
=============================  ======  ==============================================
``rank``                       zset    account_id -> triage priority
``account:{account_id}``       string  the account's entry (JSON), expires after
                                       ``entry_ttl_s`` unless a sweep rewrites it
``alerts``                     hash    fingerprint -> open alert (JSON)
``history:{account_id}``       list    newest first: alert changes and what people
                                       did, capped at ``history_limit``
``silences``                   hash    silence id -> snooze (JSON)
``acks``                       hash    fingerprint -> ack (JSON), until it resolves
``resolves``                   hash    fingerprint -> resolve request (JSON), until
                                       the owning worker's sweep applies it
=============================  ======  ==============================================

Entries whose account key expired (no worker owns the account any more) are ignored
by the readers and cleaned up as they meet them. Redis is never on the alerting path:
callers treat its errors (:data:`REDIS_ERRORS`) as "the index is behind", nothing more.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from alerts import triage
from alerts.lifecycle import AlertState, Change, ChangeKind
from alerts.triage import Ack, ResolveRequest, Silence, iso
from stream import codec
from stream.accounts import Account
from stream.engagement import EngagementState

__all__ = ["REDIS_ERRORS", "IndexBatch", "TriageStore", "entry_ttl_s"]

REDIS_ERRORS = (RedisError, OSError, TimeoutError)
"""What a Redis call raises when the server is down, slow or unreachable."""
HISTORY_LIMIT = 100
HISTORY_TTL_S = 90 * 86_400
RESOLVE_REQUEST_TTL = timedelta(days=1)
"""A resolve request no worker applied within a day (account gone) is dropped."""
READ_CHUNK = 200
"""Ranked entries fetched per round trip while filling a list."""


def entry_ttl_s(sweep_interval_s: float) -> int:
    """Entries outlive a few missed sweeps (a rebalance, a slow sweep), not a lost worker."""
    return max(300, int(10 * sweep_interval_s))


@dataclass
class IndexBatch:
    """What one sweep writes: built while sweeping, written in one pipeline after."""

    entries: list[dict[str, Any]] = field(default_factory=list)
    open_alerts: list[dict[str, Any]] = field(default_factory=list)
    closed: list[str] = field(default_factory=list)
    """Fingerprints of the swept accounts' alerts that are not open (any more)."""
    history: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    done_resolves: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    """Accounts whose entry is still the one last written: only its expiry is renewed."""
    built: dict[str, Any] = field(default_factory=dict)
    """account_id -> what its new entry was built from (the sweep's, to skip it next
    time if nothing moved)."""

    def add(
        self,
        state: EngagementState,
        account: Account | None,
        alert_states: Mapping[str, AlertState],
        health: Mapping[str, Any] | None,
        changes: Sequence[Change],
        *,
        now: datetime,
    ) -> None:
        open_states = [s for s in alert_states.values() if s.is_open]
        entry = triage.account_entry(state, account, open_states, health, now)
        self.entries.append(entry)
        self.open_alerts.extend(entry["open_alerts"])
        self.closed.extend(fp for fp, s in alert_states.items() if not s.is_open)
        for change in changes:
            self.history.append((state.account_id, _change_record(change)))

    def leave_out(self, account_ids: Collection[str]) -> None:
        """Accounts deleted while the sweep ran: nothing of theirs is written back to
        the index (the deletion took their entry and history out)."""
        self.entries = [e for e in self.entries if e["account_id"] not in account_ids]
        self.open_alerts = [a for a in self.open_alerts if a["account_id"] not in account_ids]
        self.history = [(a, record) for a, record in self.history if a not in account_ids]
        self.kept = [a for a in self.kept if a not in account_ids]
        for account_id in account_ids:
            self.built.pop(account_id, None)


def _change_record(change: Change) -> dict[str, Any]:
    alert = change.alert
    record = {
        "at": iso(change.at),
        "kind": "firing" if change.kind is ChangeKind.FIRING else change.kind.value,
        "fingerprint": alert.fingerprint,
        "rule": alert.rule,
        "severity": alert.severity,
        "stakeholder": alert.subject,
        "summary": alert.annotations.get("summary", ""),
    }
    if change.kind is ChangeKind.RESOLVED and alert.resolved_by is not None:
        record["author"] = alert.resolved_by
        record["reason"] = alert.annotations.get("resolve_reason", "")
    return record


class TriageStore:
    """Reads and writes the triage keys of one engine (one topic prefix)."""

    def __init__(
        self,
        redis: Redis,
        topic_prefix: str,
        *,
        entry_ttl_s: int,
        history_limit: int = HISTORY_LIMIT,
    ) -> None:
        self.redis = redis
        self.prefix = f"ew:{topic_prefix}:"
        self.entry_ttl_s = entry_ttl_s
        self.history_limit = history_limit

    @classmethod
    def from_url(
        cls, url: str, topic_prefix: str, *, entry_ttl_s: int, timeout_s: float = 2.0
    ) -> TriageStore:
        """A store whose calls fail within ``timeout_s`` when Redis is away or stuck."""
        redis = Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
        return cls(redis, topic_prefix, entry_ttl_s=entry_ttl_s)

    def key(self, name: str) -> str:
        return self.prefix + name

    async def close(self) -> None:
        await self.redis.aclose()

    # --- the sweeper's side ----------------------------------------------------------

    async def write_index(self, batch: IndexBatch) -> list[str]:
        """Everything one sweep learned, in one round trip; returns the kept accounts
        whose entry was not there any more (Redis lost it): build those again."""
        pipe = self.redis.pipeline(transaction=False)
        if batch.entries:
            pipe.zadd(self.key("rank"), {e["account_id"]: e["priority"] for e in batch.entries})
        for entry in batch.entries:
            pipe.set(
                self.key(f"account:{entry['account_id']}"), codec.dumps(entry), ex=self.entry_ttl_s
            )
        if batch.open_alerts:
            pipe.hset(
                self.key("alerts"),
                mapping={a["fingerprint"]: codec.dumps(a) for a in batch.open_alerts},
            )
        if batch.closed:
            pipe.hdel(self.key("alerts"), *batch.closed)
            pipe.hdel(self.key("acks"), *batch.closed)
        if batch.done_resolves:
            pipe.hdel(self.key("resolves"), *batch.done_resolves)
        for account_id, record in batch.history:
            self._push_history(pipe, account_id, record)
        for account_id in batch.kept:
            pipe.expire(self.key(f"account:{account_id}"), self.entry_ttl_s)
        results = await pipe.execute()
        renewed = results[len(results) - len(batch.kept) :] if batch.kept else []
        return [a for a, found in zip(batch.kept, renewed, strict=True) if not found]

    async def forget_accounts(self, fingerprints: Mapping[str, Sequence[str]]) -> bool:
        """Deleted accounts (account_id -> their alerts' fingerprints) leave the index
        with everything recorded about them: entry, rank, open alerts, acks, resolve
        requests, snoozes and history (it names people). Returns True once done."""
        if not fingerprints:
            return True
        gone = {fp for fps in fingerprints.values() for fp in fps}
        raw = await self.redis.hgetall(self.key("silences"))
        held = {_text(i): Silence.from_dict(codec.loads(v)) for i, v in raw.items()}
        snoozes = [
            silence_id
            for silence_id, silence in held.items()
            if silence.account_id in fingerprints or silence.fingerprint in gone
        ]
        pipe = self.redis.pipeline(transaction=False)
        pipe.zrem(self.key("rank"), *fingerprints)
        for account_id in fingerprints:
            pipe.delete(self.key(f"account:{account_id}"), self.key(f"history:{account_id}"))
        if gone:
            for name in ("alerts", "acks", "resolves"):
                pipe.hdel(self.key(name), *gone)
        if snoozes:
            pipe.hdel(self.key("silences"), *snoozes)
        await pipe.execute()
        return True

    async def refresh_index(self, account_ids: Iterable[str]) -> list[str]:
        """Keep entries alive through sweeps that hold evaluation (input behind);
        returns the accounts that had no entry to keep (expired, or never written)."""
        ids = list(account_ids)
        pipe = self.redis.pipeline(transaction=False)
        for account_id in ids:
            pipe.expire(self.key(f"account:{account_id}"), self.entry_ttl_s)
        renewed = await pipe.execute()
        return [account_id for account_id, found in zip(ids, renewed, strict=True) if not found]

    async def resolve_requests(self, now: datetime) -> dict[str, ResolveRequest]:
        """Pending resolve requests by fingerprint; drops those nobody applied in a day."""
        raw = await self.redis.hgetall(self.key("resolves"))
        requests, stale = {}, []
        for fp, value in raw.items():
            request = ResolveRequest.from_dict(codec.loads(value))
            if now - request.at > RESOLVE_REQUEST_TTL:
                stale.append(fp)
            else:
                requests[request.fingerprint] = request
        if stale:
            await self.redis.hdel(self.key("resolves"), *stale)
        return requests

    # --- reading ---------------------------------------------------------------------

    async def silent_accounts(
        self, now: datetime, *, limit: int = 50, **filters: Any
    ) -> list[dict[str, Any]]:
        """The ranked list (alerts/triage.py decides who is listed), read chunk by chunk
        in rank order until ``limit`` accounts qualify."""
        silences = await self.silences(now)
        listed: dict[str, dict[str, Any]] = {}
        start = 0
        while len(listed) < limit:
            ids = await self.redis.zrevrange(self.key("rank"), start, start + READ_CHUNK - 1)
            if not ids:
                break
            start += len(ids)
            entries = await self._entries([_text(i) for i in ids])
            chunk = triage.silent_accounts(entries.values(), silences, now, limit=limit, **filters)
            # A sweep may re-rank while we page: an account can show up twice.
            listed.update((entry["account_id"], entry) for entry in chunk)
        ranked = sorted(
            listed.values(), key=lambda e: (-float(e.get("priority") or 0.0), str(e["account_id"]))
        )
        return ranked[:limit]

    async def account(self, account_id: str) -> dict[str, Any] | None:
        return (await self._entries([account_id])).get(account_id)

    async def history(self, account_id: str, limit: int = HISTORY_LIMIT) -> list[dict[str, Any]]:
        raw = await self.redis.lrange(self.key(f"history:{account_id}"), 0, limit - 1)
        return [codec.loads(item) for item in raw]

    async def alert(self, fingerprint: str) -> dict[str, Any] | None:
        raw = await self.redis.hget(self.key("alerts"), fingerprint)
        return codec.loads(raw) if raw else None

    async def alerts(
        self, now: datetime, *, account_id: str | None = None, **filters: Any
    ) -> list[dict[str, Any]]:
        """Open alerts of accounts some worker still sweeps, with snoozes, acks, resolves.
        One account's come from its entry (the sweep writes its open alerts there and
        in the fleet's hash alike): reading the whole hash took a second a drill-down
        with 20,000 alerts open in the fleet."""
        if account_id is not None:
            entry = await self.account(account_id)
            alerts = list(entry["open_alerts"]) if entry else []
            fingerprints = [str(a["fingerprint"]) for a in alerts]
            raw_acks = await self.redis.hmget(self.key("acks"), fingerprints) if alerts else []
            acked = zip(fingerprints, raw_acks, strict=True)
            acks = {fp: Ack.from_dict(codec.loads(v)) for fp, v in acked if v}
        else:
            alerts = await self._live_alerts()
            acks = {
                _text(fp): Ack.from_dict(codec.loads(v))
                for fp, v in (await self.redis.hgetall(self.key("acks"))).items()
            }
        resolves = await self.resolve_requests(now)
        silences = await self.silences(now)
        return triage.open_alerts(
            alerts, silences, acks, resolves, now, account_id=account_id, **filters
        )

    async def _live_alerts(self) -> list[dict[str, Any]]:
        """Every open alert of an account that still has an entry; the others (left by
        a worker that stopped sweeping them) are forgotten."""
        raw = await self.redis.hgetall(self.key("alerts"))
        alerts = [codec.loads(value) for value in raw.values()]
        live = await self._live_accounts(sorted({a["account_id"] for a in alerts}))
        orphans = [a["fingerprint"] for a in alerts if a["account_id"] not in live]
        if orphans:
            await self.redis.hdel(self.key("alerts"), *orphans)
        return [a for a in alerts if a["account_id"] in live]

    async def _live_accounts(self, account_ids: Sequence[str]) -> set[str]:
        """Which of these accounts still have an entry; forgets ranks whose entry
        expired. Decoding 20,000 entries to learn that was half of a fleet-wide alert
        list's second; one ``EXISTS`` each in a pipeline costs redis-py about as much."""
        if not account_ids:
            return set()
        found = await self.redis.mget([self.key(f"account:{i}") for i in account_ids])
        gone = [i for i, there in zip(account_ids, found, strict=True) if not there]
        if gone:
            await self.redis.zrem(self.key("rank"), *gone)
        return set(account_ids).difference(gone)

    async def _entries(self, account_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The live entries of these accounts; forgets ranks whose entry expired."""
        if not account_ids:
            return {}
        values = await self.redis.mget([self.key(f"account:{i}") for i in account_ids])
        found = {i: codec.loads(v) for i, v in zip(account_ids, values, strict=True) if v}
        gone = [i for i in account_ids if i not in found]
        if gone:
            await self.redis.zrem(self.key("rank"), *gone)
        return found

    # --- what people record ----------------------------------------------------------

    async def silences(self, now: datetime) -> list[Silence]:
        """Active snoozes; expired ones are deleted on the way."""
        raw = await self.redis.hgetall(self.key("silences"))
        silences = [Silence.from_dict(codec.loads(value)) for value in raw.values()]
        expired = [s.id for s in silences if not s.active(now)]
        if expired:
            await self.redis.hdel(self.key("silences"), *expired)
        return [s for s in silences if s.active(now)]

    async def silence_for(
        self, fingerprint: str, account_id: str, rule: str, now: datetime
    ) -> Silence | None:
        """The snooze that holds this alert's delivery now, if any (for the notifier)."""
        return triage.silence_for(await self.silences(now), fingerprint, account_id, rule, now)

    async def snooze(
        self,
        alert: Mapping[str, Any],
        *,
        until: datetime,
        author: str,
        reason: str,
        now: datetime,
        scope: str = "alert",
    ) -> Silence:
        """Snooze one alert (``scope="alert"``), its rule on the account, or the account."""
        silence = Silence(
            id=uuid.uuid4().hex,
            until=until,
            author=author,
            reason=reason,
            created_at=now,
            fingerprint=alert["fingerprint"] if scope == "alert" else None,
            account_id=None if scope == "alert" else alert["account_id"],
            rule=alert["rule"] if scope == "rule" else None,
            made_from=alert["fingerprint"],
            made_for=alert["account_id"],
        )
        pipe = self.redis.pipeline(transaction=False)
        pipe.hset(self.key("silences"), silence.id, codec.dumps(silence.to_dict()))
        # The alert's fingerprint and rule, not the silence's (empty for a wider scope).
        record = {
            "kind": "snooze",
            **silence.to_dict(),
            **_about(alert),
            "scope": scope,
            "at": iso(now),
        }
        self._push_history(pipe, alert["account_id"], record)
        await pipe.execute()
        return silence

    async def unsnooze(
        self, fingerprint: str, *, author: str, now: datetime, alert: Mapping[str, Any] | None
    ) -> list[Silence]:
        """Delete every snooze holding this alert (its own, and its account's or rule's)."""
        silences = await self.silences(now)
        if alert is not None:
            holding = [
                s for s in silences if s.matches(fingerprint, alert["account_id"], alert["rule"])
            ]
        else:  # closed since: the snoozes made from it, or for it alone
            holding = [s for s in silences if s.named_by(fingerprint)]
        if not holding:
            return []
        pipe = self.redis.pipeline(transaction=False)
        pipe.hdel(self.key("silences"), *(s.id for s in holding))
        accounts = {s.account_id or s.made_for or (alert or {}).get("account_id") for s in holding}
        for account_id in sorted(a for a in accounts if a):
            record = {"kind": "unsnooze", "fingerprint": fingerprint, "author": author}
            self._push_history(pipe, account_id, {**record, "at": iso(now)})
        await pipe.execute()
        return holding

    async def ack(self, alert: Mapping[str, Any], ack: Ack) -> None:
        pipe = self.redis.pipeline(transaction=False)
        pipe.hset(self.key("acks"), ack.fingerprint, codec.dumps(ack.to_dict()))
        self._push_history(
            pipe, alert["account_id"], {"kind": "ack", **_about(alert), **ack.to_dict()}
        )
        await pipe.execute()

    async def request_resolve(self, alert: Mapping[str, Any], request: ResolveRequest) -> None:
        pipe = self.redis.pipeline(transaction=False)
        pipe.hset(self.key("resolves"), request.fingerprint, codec.dumps(request.to_dict()))
        record = {"kind": "resolve_requested", **_about(alert), **request.to_dict()}
        self._push_history(pipe, request.account_id, record)
        await pipe.execute()

    def _push_history(self, pipe: Any, account_id: str, record: Mapping[str, Any]) -> None:
        key = self.key(f"history:{account_id}")
        pipe.lpush(key, codec.dumps(record))
        pipe.ltrim(key, 0, self.history_limit - 1)
        pipe.expire(key, HISTORY_TTL_S)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _about(alert: Mapping[str, Any]) -> dict[str, Any]:
    return {k: alert.get(k) for k in ("fingerprint", "rule", "severity", "summary")}
