"""Per-account engagement state, folded from batches of validated events.

Pure core: plain data in, plain data out. The Faust agent reads one state per
account touched by a batch, folds all of that account's events in, and writes it back
once (one changelog record per account per batch, not one per event).

Layout (see docs/state.md):

* daily buckets cut in the account's time zone, kept for ``horizon_days`` of event
  time; each holds counts and *user bitmaps* (bit ``i`` = the account's ``i``-th user),
  so distinct users over any set of days is an OR and a popcount;
* per-user records (role, first and last seen), which give stakeholder last-seen;
* long-lived facts: first activity, first login, first engagement action, first value
  milestone, lifetime NPS tallies, license changes.

Time is event time. An account's own clock is the newest ``occurred_at`` it has seen;
an event older than that minus ``lateness_s`` is *late* (returned to the caller, who
dead-letters it), which is also what bounds the duplicate-id memory.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo

from stream import codec
from stream.events import EventType, UsageEvent

__all__ = [
    "DayBucket",
    "EngagementState",
    "FoldOutcome",
    "StatePolicy",
    "UserRecord",
    "fold_events",
]

STATE_VERSION = 1


@dataclass(frozen=True, slots=True)
class StatePolicy:
    """The knobs that bound state size; documented in docs/state.md."""

    horizon_days: int = 42
    lateness_s: float = 3 * 86_400.0
    dedup_capacity: int = 20_000
    """Event ids remembered per account (those within the lateness window, newest kept)."""
    exact_user_limit: int = 50_000
    """Distinct users tracked exactly per account; beyond it users share bitmap slots."""
    recent_nps: int = 20


@dataclass(slots=True)
class DayBucket:
    """One local calendar day of one account."""

    events: int = 0
    logins: int = 0
    sessions: int = 0
    session_s: float = 0.0
    active_users: int = 0
    """Bitmap of users with any event that day."""
    login_users: int = 0
    """Bitmap of users who logged in that day (daily usage rate)."""
    features: dict[str, int] = field(default_factory=dict)
    """Feature name -> bitmap of users who used it that day."""
    nps: list[tuple[int, int]] = field(default_factory=list)
    """(user slot, score) of each NPS answer that day."""

    def to_list(self) -> list[Any]:
        return [
            self.events,
            self.logins,
            self.sessions,
            self.session_s,
            _hex(self.active_users),
            _hex(self.login_users),
            {name: _hex(bits) for name, bits in self.features.items()},
            [list(answer) for answer in self.nps],
        ]

    @classmethod
    def from_list(cls, data: Sequence[Any]) -> DayBucket:
        events, logins, sessions, session_s, active, login, features, nps = data
        return cls(
            events,
            logins,
            sessions,
            session_s,
            int(active, 16),
            int(login, 16),
            {name: int(bits, 16) for name, bits in features.items()},
            [(slot, score) for slot, score in nps],
        )


@dataclass(slots=True)
class UserRecord:
    slot: int
    role: str
    first_seen: float
    last_seen: float


@dataclass(slots=True)
class EngagementState:
    """What the engine knows about one account's usage; times are epoch seconds UTC."""

    account_id: str
    timezone: str = "UTC"
    days: dict[str, DayBucket] = field(default_factory=dict)
    users: dict[str, UserRecord] = field(default_factory=dict)
    event_counts: dict[str, int] = field(default_factory=dict)
    recent_ids: dict[str, float] = field(default_factory=dict)
    newest_at: float | None = None
    first_seen_at: float | None = None
    first_login_at: float | None = None
    first_action_at: float | None = None
    first_value_at: float | None = None
    nps_totals: list[int] = field(default_factory=lambda: [0, 0, 0])
    """Lifetime [promoters, passives, detractors]."""
    recent_nps: list[dict[str, Any]] = field(default_factory=list)
    license_changes: list[tuple[float, int]] = field(default_factory=list)

    # --- reading ----------------------------------------------------------------------

    @property
    def total_events(self) -> int:
        return sum(self.event_counts.values())

    def zone(self) -> ZoneInfo:
        return _zone(self.timezone)

    def local_day(self, at: datetime | float) -> date:
        moment = at if isinstance(at, datetime) else datetime.fromtimestamp(at, UTC)
        return moment.astimezone(self.zone()).date()

    def bucket(self, day: date) -> DayBucket | None:
        return self.days.get(day.isoformat())

    def users_in(self, bitmap: int) -> set[str]:
        """User ids whose slot bit is set (exact while under the user limit)."""
        return {user_id for user_id, user in self.users.items() if bitmap >> user.slot & 1}

    # --- serialisation ----------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "v": STATE_VERSION,
            "account_id": self.account_id,
            "timezone": self.timezone,
            "days": {day: bucket.to_list() for day, bucket in self.days.items()},
            "users": {
                uid: [u.slot, u.role, u.first_seen, u.last_seen] for uid, u in self.users.items()
            },
            "event_counts": self.event_counts,
            "recent_ids": self.recent_ids,
            "newest_at": self.newest_at,
            "firsts": [
                self.first_seen_at,
                self.first_login_at,
                self.first_action_at,
                self.first_value_at,
            ],
            "nps_totals": self.nps_totals,
            "recent_nps": self.recent_nps,
            "license_changes": [list(change) for change in self.license_changes],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EngagementState:
        if data.get("v") != STATE_VERSION:
            raise ValueError(
                f"engagement state of {data.get('account_id')!r} has format {data.get('v')!r}, "
                f"this engine reads {STATE_VERSION}: reset the app's changelogs or migrate"
            )
        firsts = data["firsts"]
        return cls(
            account_id=data["account_id"],
            timezone=data["timezone"],
            days={day: DayBucket.from_list(b) for day, b in data["days"].items()},
            users={uid: UserRecord(*u) for uid, u in data["users"].items()},
            event_counts=dict(data["event_counts"]),
            recent_ids=dict(data["recent_ids"]),
            newest_at=data["newest_at"],
            first_seen_at=firsts[0],
            first_login_at=firsts[1],
            first_action_at=firsts[2],
            first_value_at=firsts[3],
            nps_totals=list(data["nps_totals"]),
            recent_nps=list(data["recent_nps"]),
            license_changes=[(at, n) for at, n in data["license_changes"]],
        )

    def to_json(self) -> bytes:
        return codec.dumps(self.to_dict())

    @classmethod
    def from_json(cls, data: bytes) -> EngagementState:
        return cls.from_dict(codec.loads(data))


@dataclass(slots=True)
class FoldOutcome:
    counted: int = 0
    duplicates: int = 0
    late: list[int] = field(default_factory=list)
    """Indexes (into the folded sequence) of events older than the lateness allows."""


def fold_events(
    state: EngagementState,
    events: Sequence[UsageEvent],
    policy: StatePolicy | None = None,
) -> FoldOutcome:
    """Fold one account's events into ``state`` in place, in arrival order."""
    policy = policy or StatePolicy()
    outcome = FoldOutcome()
    folder = _Folder(state, policy)
    for index, event in enumerate(events):
        at = event.occurred_at.timestamp()
        if state.newest_at is not None and at < state.newest_at - policy.lateness_s:
            outcome.late.append(index)
        elif event.event_id in state.recent_ids:
            outcome.duplicates += 1
        else:
            folder.apply(event, at)
            outcome.counted += 1
    _prune(state, policy)
    return outcome


class _Folder:
    """Applies events to a state; caches the last bucket since batches cluster by day."""

    def __init__(self, state: EngagementState, policy: StatePolicy) -> None:
        self.state = state
        self.policy = policy
        self.zone = state.zone()

    def apply(self, event: UsageEvent, at: float) -> None:
        state = self.state
        state.recent_ids[event.event_id] = at
        kind = event.type.value
        state.event_counts[kind] = state.event_counts.get(kind, 0) + 1
        if state.newest_at is None or at > state.newest_at:
            state.newest_at = at
        state.first_seen_at = _earliest(state.first_seen_at, at)
        day = event.occurred_at.astimezone(self.zone).date().isoformat()
        bucket = state.days.get(day)
        if bucket is None:
            bucket = state.days[day] = DayBucket()
        bucket.events += 1
        bit = self._user_bit(event, at) if event.user_id is not None else 0
        bucket.active_users |= bit
        _APPLY[event.type](state, bucket, event, at, bit)

    def _user_bit(self, event: UsageEvent, at: float) -> int:
        assert event.user_id is not None
        user = self.state.users.get(event.user_id)
        if user is None:
            user = UserRecord(self._slot_for(event.user_id), event.role, at, at)
            self.state.users[event.user_id] = user
        else:
            # The newest event says what role they hold now; a tie at the same instant
            # is broken by name so that arrival order cannot change the result.
            if at > user.last_seen or (at == user.last_seen and event.role > user.role):
                user.last_seen = at
                user.role = event.role
            user.first_seen = min(user.first_seen, at)
        return 1 << user.slot

    def _slot_for(self, user_id: str) -> int:
        count = len(self.state.users)
        limit = self.policy.exact_user_limit
        # Past the limit users share slots by hash: distinct counts become a lower
        # bound (documented in docs/state.md) instead of state growing without end.
        return count if count < limit else zlib.crc32(user_id.encode()) % limit


def _login(
    state: EngagementState, bucket: DayBucket, event: UsageEvent, at: float, bit: int
) -> None:
    bucket.logins += 1
    bucket.login_users |= bit
    state.first_login_at = _earliest(state.first_login_at, at)


def _session_end(
    state: EngagementState, bucket: DayBucket, event: UsageEvent, at: float, bit: int
) -> None:
    bucket.sessions += 1
    bucket.session_s += float(event.properties["duration_s"])


def _feature_used(
    state: EngagementState, bucket: DayBucket, event: UsageEvent, at: float, bit: int
) -> None:
    name = str(event.properties["feature"])
    bucket.features[name] = bucket.features.get(name, 0) | bit
    state.first_action_at = _earliest(state.first_action_at, at)


def _nps_response(
    state: EngagementState, bucket: DayBucket, event: UsageEvent, at: float, bit: int
) -> None:
    score = int(event.properties["score"])
    bucket.nps.append((bit.bit_length() - 1, score))
    state.nps_totals[0 if score >= 9 else 1 if score >= 7 else 2] += 1
    state.recent_nps.append(
        {
            "user_id": event.user_id,
            "role": event.role,
            "score": score,
            "comment": event.properties.get("comment"),
            "at": at,
        }
    )


def _value_milestone(
    state: EngagementState, bucket: DayBucket, event: UsageEvent, at: float, bit: int
) -> None:
    state.first_value_at = _earliest(state.first_value_at, at)


def _license_change(
    state: EngagementState, bucket: DayBucket, event: UsageEvent, at: float, bit: int
) -> None:
    state.license_changes.append((at, int(event.properties["licenses"])))


_APPLY = {
    EventType.LOGIN: _login,
    EventType.SESSION_END: _session_end,
    EventType.FEATURE_USED: _feature_used,
    EventType.NPS_RESPONSE: _nps_response,
    EventType.VALUE_MILESTONE: _value_milestone,
    EventType.LICENSE_CHANGE: _license_change,
}


def _prune(state: EngagementState, policy: StatePolicy) -> None:
    """Drop what the horizon and lateness no longer need; keep lists canonical."""
    if state.newest_at is None:
        return
    newest_day = state.local_day(state.newest_at)
    oldest_kept = (newest_day - timedelta(days=policy.horizon_days - 1)).isoformat()
    for day in [d for d in state.days if d < oldest_kept]:
        del state.days[day]
    # An id older than the lateness bound can never be accepted again (it would be
    # late), so remembering it is useless; past the capacity keep the newest ids.
    bound = state.newest_at - policy.lateness_s
    ids = state.recent_ids
    if len(ids) > policy.dedup_capacity or any(at < bound for at in ids.values()):
        kept = sorted(
            (item for item in ids.items() if item[1] >= bound), key=lambda item: (item[1], item[0])
        )[-policy.dedup_capacity :]
        state.recent_ids = dict(kept)
    # Sorted by time, so the same events in any arrival order give the same state.
    state.license_changes.sort()
    horizon_start = state.newest_at - policy.horizon_days * 86_400.0
    older = [change for change in state.license_changes if change[0] < horizon_start]
    if len(older) > 1:  # the newest change before the horizon still says what held then
        state.license_changes = older[-1:] + state.license_changes[len(older) :]
    state.recent_nps.sort(key=lambda answer: (answer["at"], str(answer["user_id"])))
    del state.recent_nps[: -policy.recent_nps]


def _earliest(current: float | None, at: float) -> float:
    return at if current is None or at < current else current


def _hex(bits: int) -> str:
    return format(bits, "x")


@lru_cache(maxsize=512)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)
