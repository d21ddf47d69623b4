"""Reusing day-based findings between evaluations (alerts/evaluation.py) is exact: an
account run that reuses them publishes the same changes, with the same evidence and
texts, and ends with the same alert book as one that judges every rule afresh at
every tick, whatever arrives late, twice, or out of order."""

from __future__ import annotations

import random
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alerts.evaluate import Context
from alerts.evaluation import AccountRun, Reuse, RuleSet, history_key
from alerts.rules import load_rules
from alerts.sweep import AccountAlerts
from stream import codec
from stream.accounts import Account
from stream.engagement import EngagementState, fold_records
from stream.events import Record, UsageEvent, decode_event, record_of
from stream.simulate import FleetSpec, build_fleet, generate_events

END = datetime(2026, 11, 25, 15, 30, tzinfo=UTC)
STEP = 6 * 3600.0
RULES = tuple(load_rules(Path(__file__).resolve().parents[2] / "config" / "rules.yaml").rules)


def fleet_records(seed: int, days: int = 56) -> tuple[list[Account], dict[str, list[Record]]]:
    simulated = build_fleet(FleetSpec(accounts=12, seed=seed, as_of=END.date()))
    fleet = [Account.from_json(codec.dumps(a.record())) for a in simulated]
    by_account: dict[str, list[Record]] = {a.account_id: [] for a in fleet}
    for raw in generate_events(simulated, END - timedelta(days=days), END, seed=seed):
        event = decode_event(codec.dumps(raw), END + timedelta(days=1))
        assert isinstance(event, UsageEvent)
        by_account[event.account_id].append(record_of(event))
    return fleet, by_account


def disorder(records: list[Record], rng: random.Random) -> list[Record]:
    """Some events arrive up to a day late (into days already judged), some twice."""
    out = list(records)
    for _ in range(len(out) // 20):
        i = rng.randrange(len(out))
        j = min(len(out) - 1, i + rng.randrange(1, 60))
        out.insert(j, out.pop(i))
    for _ in range(len(out) // 50):
        i = rng.randrange(len(out))
        out.insert(min(len(out), i + rng.randrange(1, 30)), out[i])
    return out


def run(account: Account, records: Sequence[Record], *, reuse: bool) -> AccountRun:
    state = EngagementState(account.account_id, timezone=account.timezone)
    book = AccountAlerts()
    account_run = AccountRun(RuleSet(RULES, STEP), state, account, book)
    if not reuse:
        account_run.reuse = None
    times = [r[2] for r in records]
    codes = [r[1] for r in records]

    def fold(start: int, end: int) -> None:
        fold_records(state, records[start:end])

    account_run.on_events(times, codes, fold)
    account_run.on_clock(END.timestamp())
    return account_run


def assert_same(reused: AccountRun, fresh: AccountRun) -> None:
    assert reused.notices == fresh.notices
    assert reused.book.to_dict() == fresh.book.to_dict()


@pytest.mark.parametrize("seed", [3, 9, 21])
def test_reused_verdicts_equal_fresh_ones_on_a_fleet(seed: int) -> None:
    fleet, by_account = fleet_records(seed)
    rng = random.Random(seed)
    notices = 0
    for account in fleet:
        records = disorder(by_account[account.account_id], rng)
        reused, fresh = run(account, records, reuse=True), run(account, records, reuse=False)
        assert_same(reused, fresh)
        notices += len(fresh.notices)
    assert notices > 10  # the fleet's alerts fire and resolve: the comparison means something


FLEET, BY_ACCOUNT = fleet_records(5, days=35)


@settings(max_examples=25, deadline=None)
@given(
    index=st.integers(0, len(FLEET) - 1),
    seed=st.integers(0, 2**32 - 1),
    late=st.floats(0, 1),
)
def test_reused_verdicts_equal_fresh_ones_whatever_arrives_late(
    index: int, seed: int, late: float
) -> None:
    account = FLEET[index]
    rng = random.Random(seed)
    records = list(BY_ACCOUNT[account.account_id])
    # Move a share of events up to two days later in arrival order (still in lateness).
    for _ in range(int(late * len(records) / 10)):
        i = rng.randrange(len(records))
        record = records.pop(i)
        later = [k for k in range(i, len(records)) if records[k][2] - record[2] < 2 * 86_400]
        records.insert(later[-1] + 1 if later else i, record)
    assert_same(run(account, records, reuse=True), run(account, records, reuse=False))


def test_the_history_key_ignores_today_and_sees_the_past() -> None:
    account = Account("acme", "Acme", 10, timezone="Europe/Paris")
    state = EngagementState("acme", timezone="Europe/Paris")
    noon = datetime(2026, 11, 24, 11, 0, tzinfo=UTC)

    def event(at: datetime, user: str = "u1") -> Record:
        return (f"e{at.timestamp()}{user}", 0, at.timestamp(), user, "user", 0, None)

    fold_records(state, [event(noon - timedelta(days=2)), event(noon - timedelta(hours=1))])
    context = Context(state, account, noon)
    before = history_key(context)
    fold_records(state, [event(noon - timedelta(minutes=30))])  # today: no change
    assert history_key(context) == before
    fold_records(state, [event(noon - timedelta(days=1))])  # yesterday, late: a change
    assert history_key(context) != before
    moved, people = history_key(context), state.people_version
    fold_records(state, [event(noon - timedelta(minutes=20), "u2")])  # a new person
    assert history_key(context) == moved  # only the silence rules read people ...
    assert state.people_version != people  # ... and key their results on this


def test_people_version_moves_with_a_new_role_and_an_earlier_first_sighting() -> None:
    """What the silence rules read of people (roles, first sightings) moves the state's
    ``people_version``, on which they key their results; a later sighting does not."""
    state = EngagementState("acme")
    noon = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
    n = iter(range(100))

    def event(hours_before: float, role: str, user: str = "u1") -> Record:
        at = (noon - timedelta(hours=hours_before)).timestamp()
        return (f"e{next(n)}", 0, at, user, role, 0, None)

    # Someone else came first: the account's own first sighting stays put below.
    fold_records(state, [event(5, "admin", "u0"), event(2, "user")])
    key = state.people_version
    fold_records(state, [event(1, "user")])  # seen again, later: nothing a rule keys on
    assert state.people_version == key
    fold_records(state, [event(0.5, "champion")])  # the newest event names a new role
    assert state.people_version != key
    key = state.people_version
    fold_records(state, [event(0.75, "user")])  # older than their last event: role kept
    assert state.people_version == key
    fold_records(state, [event(3, "champion")])  # earlier than first seen, today
    assert state.people_version != key


def test_reuse_forgets_what_another_state_object_gave() -> None:
    """``people_version`` counts one object's changes: a different object starts over."""
    noon = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
    first, second = EngagementState("acme"), EngagementState("acme")
    fold_records(first, [("a", 0, noon.timestamp() - 99_000, "u1", "champion", 0, None)])
    fold_records(second, [("a", 0, noon.timestamp() - 99_000, "u2", "user", 0, None)])
    reuse = Reuse()
    reuse.move_to(Context(first, None, noon, memo=reuse.memo))
    reuse.memo["kept"] = "from the first state"
    reuse.move_to(Context(second, None, noon, memo=reuse.memo))
    assert history_key(Context(first, None, noon)) == history_key(Context(second, None, noon))
    assert reuse.memo == {}


def test_a_feature_adopted_this_morning_counts_at_noon() -> None:
    """Adoption reads today's events: reuse must not hold the morning's verdict."""
    account = Account("acme", "Acme", 10, contract_start=(END - timedelta(days=60)).date())
    start = END.replace(hour=9, minute=0) - timedelta(days=40)
    records: list[Record] = [("u2-first", 0, start.timestamp() - 60, "u2", "user", 0, None)]
    for day in range(41):
        at = (start + timedelta(days=day)).timestamp()
        records.append((f"l{day}", 0, at, "u1", "champion", 0, None))
        if day in (30, 33, 36):  # one user on three days: not adopted (min_users 2)
            records.append((f"r{day}", 2, at + 60, "u1", "champion", "reports", None))
    records.append(("r-u2", 2, records[-1][2] + 3600, "u2", "user", "reports", None))
    fresh = run(account, records, reuse=False)
    adoption = [n.change for n in fresh.notices if n.change.alert.rule == "reports-not-adopted"]
    assert adoption[0].kind.value == "firing"
    assert [c.kind.value for c in adoption].count("resolved") == 1
    assert adoption[-1].kind.value == "resolved"
    assert adoption[-1].at.date() == END.date()  # resolved at a tick of the same day
    assert_same(run(account, records, reuse=True), fresh)


def test_a_silent_user_made_champion_this_morning_is_judged_as_one_at_noon() -> None:
    """Roles are read by the silence rules only, outside the shared history key: the
    verdicts of the morning must not hide a new champion's silence at noon."""
    account = Account("acme", "Acme", 10)
    monday = datetime(2026, 10, 5, 9, 0, tzinfo=UTC)
    records: list[Record] = []
    for day in range(49):
        at = monday + timedelta(days=day)
        if at.weekday() >= 5:
            continue
        records.append((f"c{day}", 0, at.timestamp(), "c0", "champion", 0, None))
        if day < 35:  # u1 then stays away for the last two weeks
            records.append((f"u{day}", 0, at.timestamp() + 60, "u1", "user", 0, None))
    today = monday + timedelta(days=49)  # a Monday
    records.append(("c-today", 0, today.timestamp(), "c0", "champion", 0, None))
    # Promoted: their first event since, this morning, names their new role.
    records.append(("promoted", 0, today.timestamp() + 3 * 3600, "u1", "champion", 0, None))
    fresh = run(account, records, reuse=False)
    firing = [
        n.change.alert.subject
        for n in fresh.notices
        if n.change.alert.rule == "champion-silent" and n.change.kind.value == "firing"
    ]
    assert firing == ["u1"]
    assert_same(run(account, records, reuse=True), fresh)
