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

import math
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from itertools import islice
from operator import itemgetter
from typing import Any
from zoneinfo import ZoneInfo

from stream import codec
from stream.events import KINDS, Record, UsageEvent, record_of

__all__ = [
    "OTHER_FEATURES",
    "DayBucket",
    "EngagementState",
    "FoldOutcome",
    "StatePolicy",
    "UserRecord",
    "fold_events",
    "fold_records",
]

STATE_VERSION = 1
OTHER_FEATURES = "(other)"
"""Where a day's feature names past ``StatePolicy.features_per_day`` are counted."""


@dataclass(frozen=True, slots=True)
class StatePolicy:
    """The knobs that bound state size; documented in docs/state.md."""

    horizon_days: int = 44
    lateness_s: float = 3 * 86_400.0
    dedup_capacity: int = 20_000
    """Event ids remembered per account (those within the lateness window, newest kept)."""
    exact_user_limit: int = 50_000
    """Distinct users tracked exactly per account; beyond it users share bitmap slots."""
    recent_nps: int = 20
    features_per_day: int = 200
    """Distinct feature names kept per account and day; later new names that day are
    counted under :data:`OTHER_FEATURES`, so a producer sending ids as feature names
    cannot grow the state without bound."""
    kept_features: frozenset[str] = frozenset()
    """Names always kept, past the limit too: those the rules judge."""

    def keeping(self, features: frozenset[str]) -> StatePolicy:
        """This policy, also keeping ``features`` past the day's limit."""
        if features <= self.kept_features:
            return self
        return replace(self, kept_features=self.kept_features | features)


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


DEFAULT_ROLE = "user"
"""The role of an event that names none (docs/events.md)."""
NO_ROLE_AT = -1.0


@dataclass(slots=True)
class UserRecord:
    slot: int
    role: str
    first_seen: float
    last_seen: float
    role_at: float = NO_ROLE_AT
    """When the event that gave ``role`` happened (``NO_ROLE_AT``: only the default).
    An event without a role of its own (``DEFAULT_ROLE``) never takes a role away: a
    champion's NPS answer sent without a role must not make them a plain user."""


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
    read_through: tuple[int, int] | None = field(default=None, compare=False)
    """(partition, offset) of the newest message of the events topic this state has
    taken (a worker sets it; ``None`` in replay and tests): a message at or before it,
    read again after a crash, was taken already (stream/pipeline.py). Where it was read,
    not what it knows: equal states may differ in it."""
    ids_in_order: bool = field(default=False, compare=False, repr=False)
    """Not stored: ``recent_ids`` is known to be in time order, so pruning can stop at
    the first id still inside the lateness window instead of sorting them all."""
    people_version: int = field(default=0, compare=False, repr=False)
    """Not stored: moves whenever a user is added, changes role or is found to have
    been seen earlier, so readers can tell that ``users`` (bar last-seen times) stood
    still without comparing every user (alerts/evaluation.py)."""
    holders: dict[tuple[str, ...], tuple[int, list[tuple[str, UserRecord]]]] = field(
        default_factory=dict, init=False, compare=False, repr=False
    )
    """Not stored: :meth:`holding`'s answers, each with the ``people_version`` it was
    read at."""
    encoded_days: dict[str, tuple[DayBucket, int, codec.Fragment]] = field(
        default_factory=dict, init=False, compare=False, repr=False
    )
    """Not stored: each day bucket's JSON from the last :meth:`to_json`, with the bucket
    and its event count then (see :meth:`_encoded_days`)."""

    # --- reading ----------------------------------------------------------------------

    @property
    def total_events(self) -> int:
        return sum(self.event_counts.values())

    def zone(self) -> ZoneInfo:
        return _zone(self.timezone)

    def local_day(self, at: datetime | float) -> date:
        """The local calendar day of ``at`` (from the per-zone cache of day spans that
        the fold uses: rules ask for it many times per evaluation)."""
        moment = at.timestamp() if isinstance(at, datetime) else at
        zone = self.timezone
        return _day_date(_day_span(_zone_spans(zone), _zone(zone), moment)[2])

    def holding(self, roles: tuple[str, ...]) -> list[tuple[str, UserRecord]]:
        """``(user id, user)`` of the users holding one of ``roles``, by user id; read
        again only when ``people_version`` has moved (rules ask at every evaluation)."""
        cached = self.holders.get(roles)
        if cached is not None and cached[0] == self.people_version:
            return cached[1]
        found = sorted((uid, user) for uid, user in self.users.items() if user.role in roles)
        self.holders[roles] = (self.people_version, found)
        return found

    def bucket(self, day: date) -> DayBucket | None:
        return self.days.get(day.isoformat())

    def users_in(self, bitmap: int) -> set[str]:
        """User ids whose slot bit is set (exact while under the user limit)."""
        return {user_id for user_id, user in self.users.items() if bitmap >> user.slot & 1}

    # --- serialisation ----------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return self._as_dict({day: bucket.to_list() for day, bucket in self.days.items()})

    def _as_dict(self, days: dict[str, Any]) -> dict[str, Any]:
        return {
            "v": STATE_VERSION,
            "account_id": self.account_id,
            "timezone": self.timezone,
            "days": days,
            "users": {
                uid: [u.slot, u.role, u.first_seen, u.last_seen, u.role_at]
                for uid, u in self.users.items()
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
        } | ({"read_through": list(self.read_through)} if self.read_through else {})

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
            users={uid: _user_record(u) for uid, u in data["users"].items()},
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
            read_through=_read_through(data.get("read_through")),
        )

    def to_json(self) -> bytes:
        return codec.dumps(self._as_dict(self._encoded_days()))

    def _encoded_days(self) -> dict[str, codec.Fragment]:
        """Each day bucket as JSON, encoded again only if it changed: a batch touches a
        few of the ~42 days. A bucket is unchanged while it is the same object with the
        same event count, since the fold counts an event in a bucket for every change it
        makes to it (nothing else changes buckets)."""
        before = self.encoded_days
        after = {}
        for day, bucket in self.days.items():
            known = before.get(day)
            if known is None or known[0] is not bucket or known[1] != bucket.events:
                known = (bucket, bucket.events, codec.fragment(bucket.to_list()))
            after[day] = known
        self.encoded_days = after
        return {day: known[2] for day, known in after.items()}

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
    return fold_records(state, [record_of(event) for event in events], policy)


def fold_records(  # noqa: PLR0915 - one loop on purpose: a call per event costs more
    state: EngagementState,
    records: Sequence[Record],
    policy: StatePolicy | None = None,
) -> FoldOutcome:
    """:func:`fold_events` for records (``stream.events.decode_batch``): the hot path.

    One tight loop: per event a late check, a duplicate check, a cached local day and a
    few bitmap ORs. The account's clock, firsts and counts live in locals (infinite
    while unknown) and are written back once.
    """
    policy = policy or StatePolicy()
    outcome = FoldOutcome()
    late = outcome.late
    duplicates = 0
    counts = [0] * len(KINDS)
    ids = state.recent_ids
    users = state.users
    days = state.days
    spans = _zone_spans(state.timezone)
    zone = state.zone()
    in_order = state.ids_in_order
    tail = next(reversed(ids.values()), -math.inf)  # the newest id's time, if in order
    sorted_upto = len(ids) if in_order else 0  # ids known to be in time order
    lateness = policy.lateness_s
    feature_limit = policy.features_per_day
    kept_features = policy.kept_features
    inf = math.inf
    newest = -inf if state.newest_at is None else state.newest_at
    bound = newest - lateness
    first_seen = inf if state.first_seen_at is None else state.first_seen_at
    first_login = inf if state.first_login_at is None else state.first_login_at
    first_action = inf if state.first_action_at is None else state.first_action_at
    day_start = day_end = 0.0
    bucket = _NO_BUCKET
    last_user_id = None
    user = _NO_USER
    bit = 0
    active = False  # this user's bit is set in this day's active users
    people = 0  # changes to users that readers key on (people_version)
    for index, record in enumerate(records):
        event_id, code, at, user_id, role, value, _ = record
        if at < bound:
            late.append(index)
            continue
        if event_id in ids:
            duplicates += 1
            continue
        ids[event_id] = at
        counts[code] += 1
        if at >= tail:
            tail = at
        else:
            in_order = False
        if at > newest:
            newest = at
            bound = at - lateness
        if at < first_seen:  # noqa: PLR1730 - min() costs a call per event
            first_seen = at
        if not day_start <= at < day_end:
            day_start, day_end, day = _day_span(spans, zone, at)
            bucket = days.get(day) or days.setdefault(day, DayBucket())
            active = False
        bucket.events += 1
        if user_id is None:
            bit = 0
            last_user_id = None
        else:
            if user_id != last_user_id:  # a user's events tend to come together
                found = users.get(user_id)
                if found is None:
                    slot = _slot_for(users, user_id, policy)
                    found = users[user_id] = UserRecord(slot, DEFAULT_ROLE, at, at)
                    people += 1
                user = found
                bit = 1 << user.slot
                last_user_id = user_id
                active = False
            if at > user.last_seen:  # noqa: PLR1730 - max() costs a call per event
                user.last_seen = at
            # The newest event that names a role says which they hold now (one without
            # a role takes none away); a tie at the same instant is broken by name, so
            # that arrival order cannot change the result.
            if role != DEFAULT_ROLE and (
                at > user.role_at or (at == user.role_at and role > user.role)
            ):
                user.role_at = at
                if role != user.role:
                    user.role = role
                    people += 1
            if at < user.first_seen:
                user.first_seen = at
                people += 1
            if not active:  # once per run of one user's events on one day
                bucket.active_users |= bit
                active = True
        if code == 2:  # feature_used
            features = bucket.features
            used = features.get(value)
            if used is None:
                used = 0
                if len(features) >= feature_limit and value not in kept_features:
                    value = OTHER_FEATURES
                    used = features.get(value, 0)
            features[value] = used | bit
            if at < first_action:  # noqa: PLR1730
                first_action = at
        elif code == 0:  # login
            bucket.logins += 1
            bucket.login_users |= bit
            if at < first_login:  # noqa: PLR1730
                first_login = at
        elif code == 1:  # session_end
            bucket.sessions += 1
            bucket.session_s += value
        else:
            _RARE[code](state, bucket, record, bit)
    state.newest_at = None if newest == -inf else newest
    state.first_seen_at = None if first_seen == inf else first_seen
    state.first_login_at = None if first_login == inf else first_login
    state.first_action_at = None if first_action == inf else first_action
    event_counts = state.event_counts
    for name, count in zip(_KIND_NAMES, counts, strict=True):
        if count:
            event_counts[name] = event_counts.get(name, 0) + count
    outcome.counted = sum(counts)
    outcome.duplicates = duplicates
    state.ids_in_order = in_order
    state.people_version += people
    _prune(state, policy, spans, zone, sorted_upto)
    return outcome


_KIND_NAMES = tuple(kind.value for kind in KINDS)


def _read_through(stored: Any) -> tuple[int, int] | None:
    """A stored ``read_through`` (absent in states written before it was kept)."""
    if not stored:
        return None
    partition, offset = stored
    return int(partition), int(offset)


def _user_record(stored: Sequence[Any]) -> UserRecord:
    """A stored user; one stored before ``role_at`` took its role from its newest event."""
    if len(stored) == 5:
        return UserRecord(*stored)
    slot, role, first_seen, last_seen = stored
    role_at = last_seen if role != DEFAULT_ROLE else NO_ROLE_AT
    return UserRecord(slot, role, first_seen, last_seen, role_at)


def _slot_for(users: Mapping[str, UserRecord], user_id: str, policy: StatePolicy) -> int:
    count = len(users)
    limit = policy.exact_user_limit
    # Past the limit users share slots by hash: distinct counts become a lower
    # bound (documented in docs/state.md) instead of state growing without end.
    return count if count < limit else zlib.crc32(user_id.encode()) % limit


def _nps_response(state: EngagementState, bucket: DayBucket, record: Record, bit: int) -> None:
    _, _, at, user_id, role, score, comment = record
    bucket.nps.append((bit.bit_length() - 1, score))
    state.nps_totals[0 if score >= 9 else 1 if score >= 7 else 2] += 1
    state.recent_nps.append(
        {"user_id": user_id, "role": role, "score": score, "comment": comment, "at": at}
    )


def _value_milestone(state: EngagementState, bucket: DayBucket, record: Record, bit: int) -> None:
    state.first_value_at = _earliest(state.first_value_at, record[2])


def _license_change(state: EngagementState, bucket: DayBucket, record: Record, bit: int) -> None:
    state.license_changes.append((record[2], record[5]))


_RARE = {3: _nps_response, 4: _value_milestone, 5: _license_change}
_NO_BUCKET = DayBucket()
_NO_USER = UserRecord(0, "", 0.0, 0.0)


def _prune(
    state: EngagementState,
    policy: StatePolicy,
    spans: dict[float, Span],
    zone: ZoneInfo,
    sorted_upto: int = 0,
) -> None:
    """Drop what the horizon and lateness no longer need; keep lists canonical."""
    if state.newest_at is None:
        return
    newest = _day_span(spans, zone, state.newest_at)[2]
    oldest_kept = _days_before(newest, policy.horizon_days - 1)
    days = state.days
    if days and min(days) < oldest_kept:
        for day in [d for d in days if d < oldest_kept]:
            del days[day]
    # An id older than the lateness bound can never be accepted again (it would be
    # late), so remembering it is useless; past the capacity keep the newest ids.
    if not state.ids_in_order:
        state.recent_ids = _in_time_order(state.recent_ids, sorted_upto)
        state.ids_in_order = True
    ids = state.recent_ids
    bound = state.newest_at - policy.lateness_s
    expired = []  # in time order, the expired ids are the first ones
    for event_id, at in ids.items():
        if at >= bound:
            break
        expired.append(event_id)
    for event_id in expired:
        del ids[event_id]
    if len(ids) > policy.dedup_capacity:  # the newest, tied times cut by id
        kept = sorted(ids.items(), key=_TIME_THEN_ID)
        state.recent_ids = dict(kept[-policy.dedup_capacity :])
    # Sorted by time, so the same events in any arrival order give the same state.
    changes = state.license_changes
    if len(changes) > 1:
        changes.sort()
        horizon_start = state.newest_at - policy.horizon_days * 86_400.0
        older = [change for change in changes if change[0] < horizon_start]
        if len(older) > 1:  # the newest change before the horizon still says what held then
            state.license_changes = older[-1:] + changes[len(older) :]
    if len(state.recent_nps) > 1:
        state.recent_nps.sort(key=lambda answer: (answer["at"], str(answer["user_id"])))
        del state.recent_nps[: -policy.recent_nps]


def _in_time_order(ids: dict[str, float], sorted_upto: int) -> dict[str, float]:
    """``ids`` in time order, as a stable sort of them all would put them (tied times in
    arrival order).

    ``sorted_upto``: how many of the first ids are in time order already (those a fold
    found, when it found them in order). Events mostly arrive a little out of order, so
    only the ids the fold added and the few found before them that come later than the
    earliest added are sorted and put back at the end, not every id remembered.
    """
    if sorted_upto <= 0:
        return dict(sorted(ids.items(), key=_TIME_OF_ID))
    added = len(ids) - sorted_upto
    earliest = min(islice(reversed(ids.values()), added), default=math.inf)
    later = 0  # ids found before, newest first, that come after the earliest added
    for at in islice(reversed(ids.values()), added, None):
        if at <= earliest:
            break
        later += 1
    tail = list(islice(ids.items(), sorted_upto - later, None))
    tail.sort(key=_TIME_OF_ID)
    for event_id, _ in tail:
        del ids[event_id]
    ids.update(tail)
    return ids


_TIME_OF_ID = itemgetter(1)
_TIME_THEN_ID = itemgetter(1, 0)


@lru_cache(maxsize=1024)
def _days_before(day: str, days: int) -> str:
    return (date.fromisoformat(day) - timedelta(days=days)).isoformat()


# --- local days ---------------------------------------------------------------------------

Span = tuple[float, float, str]
"""``(start, end, day)``: every instant in ``[start, end)`` (epoch seconds) falls on the
local day ``day`` (ISO)."""

_SPANS: dict[str, dict[float, Span]] = {}
"""Per time zone: UTC hour number (epoch seconds // 3600) -> a local day's span that an
instant of that hour fell in."""
_SPANS_PER_ZONE = 100_000


def _zone_spans(zone_name: str) -> dict[float, Span]:
    """The span cache of one time zone (for :func:`_day_span`)."""
    spans = _SPANS.get(zone_name)
    if spans is None or len(spans) > _SPANS_PER_ZONE:
        spans = _SPANS[zone_name] = {}
    return spans


def _day_span(spans: dict[float, Span], zone: ZoneInfo, at: float) -> Span:
    """The local day of ``at`` exactly as ``datetime.astimezone`` gives it, with the span
    of instants sharing it: the whole day when its UTC offset is constant, else ``at``
    alone (a day with a change of offset).

    Why this is exact: local time is UTC plus the offset, so with one offset over the
    day the day is the interval from its local midnight to the next. Offsets change at
    whole seconds, and never twice in a day (tzdata's closest changes are four days
    apart, which tests/unit/test_engagement_properties.py checks), so the same offset at
    both ends of the day means the same offset all through it.
    """
    hour = at // 3600.0
    span = spans.get(hour)
    if span is not None and span[0] <= at < span[1]:
        return span
    local = datetime.fromtimestamp(at, UTC).astimezone(zone)
    day = _day_name(local.date())
    offset = local.utcoffset()
    if offset is None:  # pragma: no cover - a ZoneInfo always has an offset
        return (at, at, day)
    shift = offset.total_seconds()
    start = (at + shift) // 86_400.0 * 86_400.0 - shift
    end = start + 86_400.0
    try:
        same = _offset(zone, start) == offset == _offset(zone, end - 1.0)
    except (OverflowError, ValueError, OSError):  # at the ends of the calendar
        same = False
    if not same or not start <= at < end:
        return (at, at, day)
    span = spans[hour] = (start, end, day)
    return span


def _offset(zone: ZoneInfo, at: float) -> timedelta | None:
    return datetime.fromtimestamp(at, zone).utcoffset()


@lru_cache(maxsize=4096)
def _day_date(day: str) -> date:
    return date.fromisoformat(day)


@lru_cache(maxsize=4096)
def _day_name(day: date) -> str:
    """One shared string per day, so consecutive events compare days by identity."""
    return day.isoformat()


def _earliest(current: float | None, at: float) -> float:
    return at if current is None or at < current else current


def _hex(bits: int) -> str:
    return format(bits, "x")


@lru_cache(maxsize=512)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)
