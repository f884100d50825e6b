"""Identity resolution (contract section 3) and alias (section 4), applied to a Batch of plain
objects: every row of the identity table, the merge, `user_created`, and the alias rules."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import pytest

from pier.domain.batch import Batch, ChangeSet
from pier.domain.commands import (
    Alias,
    Command,
    EventIn,
    Identify,
    RegisterDevice,
    Sequence,
    TrackEvents,
    Traits,
)
from pier.domain.errors import DomainError, TooManyMerges
from pier.domain.identity import MAX_MERGES_PER_REQUEST
from pier.domain.model import Device, Event, User

PID = 1
NOW = 1_800_000_000_000


def make_batch(first_id: int = 100) -> Batch:
    """A fresh batch: user ids count from `first_id`, generated anonymous ids are gen-1, gen-2..."""
    user_ids = itertools.count(first_id)
    anon_ids = itertools.count(1)
    return Batch(NOW, lambda: next(user_ids), lambda: f"gen-{next(anon_ids)}")


def stored_user(
    batch: Batch, uid: int, external_id: str | None, anonymous_ids: list[str], **fields: Any
) -> User:
    """A user as the store would load it fully: all its anonymous ids and (no) devices."""
    user = User(uid, PID, external_id, list(anonymous_ids), stored=True, created_at=1, **fields)
    user.devices = []
    batch.add_user(user, anonymous_ids)
    return user


def stored_device(batch: Batch, did: int, owner: User, device_id: str, **fields: Any) -> Device:
    device = Device(did, PID, owner, device_id, stored=True, created_at=1, updated_at=1, **fields)
    batch.add_device(device)
    return device


def identify(anon: str | None, ext: str | None, **traits: Any) -> Identify:
    return Identify(project_id=PID, anonymous_id=anon, external_id=ext, traits=Traits(**traits))


def track(anon: str | None, ext: str | None, name: str = "opened", **kw: Any) -> TrackEvents:
    event = EventIn(anonymous_id=anon, external_id=ext, name=name, data={}, **kw)
    return TrackEvents(project_id=PID, events=[event])


def device(anon: str | None, ext: str | None, device_id: str = "dev-x") -> RegisterDevice:
    fields = {"os": "ios", "model": "iPhone", "app_build": "1", "app_version": "1.0"}
    return RegisterDevice(
        project_id=PID, anonymous_id=anon, external_id=ext, device_id=device_id, fields=fields
    )


# Every command kind resolves its user through the same table (alias has its own extra rules).
RESOLVERS: dict[str, Callable[[str | None, str | None], Command]] = {
    "identify": lambda anon, ext: identify(anon, ext),
    "event": lambda anon, ext: track(anon, ext),
    "device": lambda anon, ext: device(anon, ext),
}
resolver = pytest.mark.parametrize("make", RESOLVERS.values(), ids=RESOLVERS.keys())


def owner(batch: Batch, anon: str) -> User:
    return batch.by_anonymous[(PID, anon)]


def named(events: list[Event], name: str) -> list[Event]:
    return [e for e in events if e.name == name]


def live_users(batch: Batch) -> list[User]:
    return [u for u in batch.users.values() if not u.deleted]


def assert_no_changes(c: ChangeSet) -> None:
    assert c.new_users == []
    assert c.updated_users == []
    assert c.deleted_users == []
    assert c.event_moves == []
    assert c.anonymous_id_deletes == []
    assert c.anonymous_id_inserts == []
    assert c.device_deletes == []
    assert c.device_writes == []
    assert c.events == []


# -- the identity table, row by row --------------------------------------------------------
@resolver
def test_none_none_creates_a_user_with_both_ids(make: Callable[..., Command]) -> None:
    b = make_batch()
    b.apply(make("a1", "e1"))
    c = b.changes()
    [user] = c.new_users
    assert (user.id, user.external_id, user.anonymous_ids) == (100, "e1", ["a1"])
    assert owner(b, "a1") is user and b.by_external[(PID, "e1")] is user
    assert c.anonymous_id_inserts == [(PID, "a1", 100)]
    assert c.updated_users == c.deleted_users == c.anonymous_id_deletes == []
    assert c.events[0].name == "user_created" and c.events[0].user is user
    assert c.events[0].data == {"external_id": "e1", "anonymous_id": "a1"}


@resolver
def test_external_id_only_gets_a_generated_anonymous_id(make: Callable[..., Command]) -> None:
    b = make_batch()
    b.apply(make(None, "e1"))
    c = b.changes()
    [user] = c.new_users
    assert user.anonymous_ids == ["gen-1"]
    assert c.anonymous_id_inserts == [(PID, "gen-1", user.id)]
    # The generated id was not sent, so user_created does not list it.
    assert c.events[0].data == {"external_id": "e1"}


@resolver
def test_anonymous_id_only_creates_an_anonymous_user(make: Callable[..., Command]) -> None:
    b = make_batch()
    b.apply(make("a1", None))
    [user] = b.changes().new_users
    assert user.external_id is None and user.anonymous_ids == ["a1"]
    assert b.changes().events[0].data == {"anonymous_id": "a1"}


@resolver
def test_e_exists_a_none_attaches_the_anonymous_id_to_e(make: Callable[..., Command]) -> None:
    b = make_batch()
    e = stored_user(b, 1, "e1", ["old"])
    b.apply(make("a1", "e1"))
    c = b.changes()
    assert owner(b, "a1") is e and e.anonymous_ids == ["old", "a1"]
    assert c.anonymous_id_inserts == [(PID, "a1", 1)]
    assert c.new_users == c.deleted_users == c.anonymous_id_deletes == []
    assert named(c.events, "user_created") == []


@resolver
def test_e_none_a_anonymous_sets_the_external_id_on_a(make: Callable[..., Command]) -> None:
    b = make_batch()
    a = stored_user(b, 2, None, ["a1"])
    b.apply(make("a1", "e1"))
    c = b.changes()
    assert a.external_id == "e1" and b.by_external[(PID, "e1")] is a
    assert c.updated_users == [a] and a.updated_at == NOW
    assert c.new_users == c.deleted_users == []
    assert c.anonymous_id_inserts == c.anonymous_id_deletes == []
    assert named(c.events, "user_created") == []


@resolver
def test_e_none_a_identified_creates_a_new_user_and_a_keeps_the_id(
    make: Callable[..., Command],
) -> None:
    b = make_batch()
    a = stored_user(b, 2, "other", ["a1"])
    b.apply(make("a1", "e1"))
    c = b.changes()
    [new] = c.new_users
    assert new.external_id == "e1" and new.anonymous_ids == ["gen-1"]
    assert owner(b, "a1") is a and a.external_id == "other" and a.anonymous_ids == ["a1"]
    assert c.anonymous_id_inserts == [(PID, "gen-1", new.id)]
    assert c.updated_users == c.deleted_users == c.anonymous_id_deletes == []
    [created] = named(c.events, "user_created")
    assert created.user is new and created.data["external_id"] == "e1"
    # The anonymous id stayed with A, so the new user's creation does not claim it.
    assert "anonymous_id" not in created.data


@resolver
def test_e_and_a_are_the_same_user(make: Callable[..., Command]) -> None:
    b = make_batch()
    stored_user(b, 1, "e1", ["a1"])
    b.apply(make("a1", "e1"))
    c = b.changes()
    assert c.new_users == c.deleted_users == []
    assert c.anonymous_id_inserts == c.anonymous_id_deletes == c.event_moves == []
    assert named(c.events, "user_created") == named(c.events, "user_merged") == []
    if isinstance(make("a1", "e1"), Identify):
        assert_no_changes(c)  # nothing to patch: not even an update


@resolver
def test_e_and_a_identified_users_are_never_merged(make: Callable[..., Command]) -> None:
    b = make_batch()
    e = stored_user(b, 1, "e1", ["e-anon"])
    a = stored_user(b, 2, "other", ["a1"])
    cmd = make("a1", "e1")
    b.apply(cmd)
    c = b.changes()
    assert owner(b, "a1") is a and a.anonymous_ids == ["a1"] and not a.deleted
    assert e.anonymous_ids == ["e-anon"] and not e.deleted
    assert c.new_users == c.deleted_users == c.event_moves == []
    assert c.anonymous_id_inserts == c.anonymous_id_deletes == []
    assert named(c.events, "user_merged") == []
    if isinstance(cmd, TrackEvents):
        assert [ev.user for ev in c.events] == [e]  # "use E"
    if isinstance(cmd, RegisterDevice):
        assert [d.user for d in c.device_writes] == [e]


def test_never_merge_a_user_identified_earlier_in_the_same_batch() -> None:
    b = make_batch()
    e = stored_user(b, 1, "e1", ["e-anon"])
    b.apply(identify("a1", None))  # creates A
    b.apply(identify("a1", "e2"))  # A gets e2
    a = owner(b, "a1")
    b.apply(identify("a1", "e1"))  # E exists, A has another external id: no merge
    assert owner(b, "a1") is a and a.external_id == "e2" and not a.deleted
    assert named(b.changes().events, "user_merged") == [] and not e.deleted


# -- the merge ---------------------------------------------------------------------------
@resolver
def test_merge_a_into_e(make: Callable[..., Command]) -> None:
    b = make_batch()
    e = stored_user(
        b,
        1,
        "e1",
        ["e-anon"],
        email=None,
        phone="+14155552671",
        timezone="",
        locale="en",
        data={"shared": "E", "only_e": 1},
    )
    a = stored_user(
        b,
        2,
        None,
        ["a1", "a2"],
        email="a@example.com",
        phone="+33123456789",
        timezone="Europe/Paris",
        locale="fr",
        data={"shared": "A", "only_a": {"nested": True}},
    )
    dev = stored_device(b, 7, a, "dev-a", token="tok-a")
    b.apply(make("a1", "e1"))
    c = b.changes()

    # Anonymous ids moved, A deleted, E updated.
    assert a.deleted and a.anonymous_ids == [] and a.devices == []
    assert e.anonymous_ids == ["e-anon", "a1", "a2"]
    assert owner(b, "a1") is e and owner(b, "a2") is e
    assert c.deleted_users == [a] and c.updated_users == [e] and c.new_users == []
    assert c.anonymous_id_deletes == [(PID, "a1"), (PID, "a2")]
    assert c.anonymous_id_inserts == [(PID, "a1", 1), (PID, "a2", 1)]
    # Stored events of A are moved by the store.
    assert c.event_moves == [(2, 1)]
    # Devices moved: rewritten under E.
    assert dev.user is e and dev in (e.devices or [])
    assert 7 in c.device_deletes and dev in c.device_writes
    # Data: keys E lacks are copied, E wins on conflicts.
    assert e.data == {"shared": "E", "only_e": 1, "only_a": {"nested": True}}
    # Empty profile fields of E filled from A, set ones kept.
    assert (e.email, e.phone, e.timezone, e.locale) == (
        "a@example.com",
        "+14155552671",
        "Europe/Paris",
        "en",
    )
    [merged] = named(c.events, "user_merged")
    assert merged.user is e and merged.created_at == NOW
    assert merged.data == {"merged_user_id": 2, "anonymous_ids": ["a1", "a2"]}
    assert named(c.events, "user_created") == []
    assert all(ev.user is e for ev in c.events)


def test_merge_repoints_events_of_a_stored_a_tracked_earlier_in_the_batch() -> None:
    b = make_batch()
    e = stored_user(b, 1, "e1", [])
    a = stored_user(b, 2, None, ["a1"])
    b.apply(track("a1", None, "before"))
    assert b.events[0].user is a
    b.apply(identify("a1", "e1"))
    c = b.changes()
    assert [(ev.name, ev.user) for ev in c.events] == [
        ("before", e),
        ("user_merged", e),
        ("user_updated", e),  # what E gained
    ]
    assert c.events[-1].data == {"anonymous_ids_added": ["a1"]}
    assert c.event_moves == [(2, 1)]  # and the stored ones are moved by the store


def test_merge_of_a_user_created_in_the_same_batch() -> None:
    b = make_batch()
    e = stored_user(b, 1, "e1", ["e-anon"])
    b.apply(track("a9", None, "first"))  # creates A (id 100) with its user_created
    a = owner(b, "a9")
    assert not a.stored
    b.apply(identify("a9", "e1"))
    c = b.changes()
    assert a.deleted and a not in c.new_users and a not in c.deleted_users
    assert c.new_users == [] and c.deleted_users == []
    assert c.event_moves == []  # nothing of A is stored yet
    # A's own items (user_created, user_updated) leave with it; its events move to E
    assert [(ev.name, ev.user) for ev in c.events] == [
        ("first", e),
        ("user_merged", e),
        ("user_updated", e),
    ]
    assert c.events[1].data == {"merged_user_id": a.id, "anonymous_ids": ["a9"]}
    assert c.events[2].data == {"anonymous_ids_added": ["a9"]}
    assert c.anonymous_id_inserts == [(PID, "a9", 1)] and c.anonymous_id_deletes == []


def test_merge_into_a_user_created_in_the_same_batch() -> None:
    b = make_batch()
    a = stored_user(b, 2, None, ["a1"], data={"k": "a"})
    b.apply(identify(None, "e1", data={"k": "e"}))  # creates E
    e = b.by_external[(PID, "e1")]
    b.apply(identify("a1", "e1"))
    c = b.changes()
    assert c.new_users == [e] and c.deleted_users == [a] and c.updated_users == []
    assert e.anonymous_ids == ["gen-1", "a1"] and e.data == {"k": "e"}
    assert c.anonymous_id_deletes == [(PID, "a1")]
    assert c.anonymous_id_inserts == [(PID, "gen-1", e.id), (PID, "a1", e.id)]
    assert c.event_moves == [(2, e.id)]


def test_anonymous_id_rows_follow_the_users_order_after_a_merge() -> None:
    # The store keeps a user's anonymous ids in insert order and shows the first as its
    # `anonymous_id`. After A (created first) merges into E, E's own id must stay first, as it
    # does when the same three requests are committed in three batches.
    b = make_batch()
    b.apply(identify("a1", None))  # A {a1}
    b.apply(identify(None, "e1"))  # E {gen-1}
    b.apply(alias("a1", "e1"))  # merge A into E
    e = b.by_external[(PID, "e1")]
    assert e.anonymous_ids == ["gen-1", "a1"]
    inserts = [anon for _, anon, uid in b.changes().anonymous_id_inserts if uid == e.id]
    assert inserts == ["gen-1", "a1"]  # fails: ["a1", "gen-1"], first-touch order


def test_merge_then_identify_patches_e() -> None:
    b = make_batch()
    e = stored_user(b, 1, "e1", [], email="e@example.com")
    stored_user(b, 2, None, ["a1"], email="a@example.com", data={"x": 1})
    b.apply(identify("a1", "e1", email="new@example.com", data={"x": 2}))
    assert e.email == "new@example.com" and e.data == {"x": 2}
    assert [u.id for u in live_users(b)] == [1]


# -- user_created --------------------------------------------------------------------------
def test_user_created_is_first_with_the_request_data_and_the_fields_it_set() -> None:
    b = make_batch()
    b.apply(
        identify(
            "a1",
            None,
            email="x@example.com",
            phone=None,  # null: left out
            timezone="UTC",
            data={"plan": "pro", "email": "from-data"},
        )
    )
    c = b.changes()
    [user] = c.new_users
    assert [ev.name for ev in c.events] == ["user_created", "user_updated"]
    assert c.events[0].user is user and c.events[0].created_at == NOW
    # what the user holds, said without ambiguity (a data key named like a field, the
    # phone's keys, the generated anonymous id) by the user_updated that follows
    assert c.events[1].user is user
    assert c.events[1].data == {
        "anonymous_ids_added": ["a1"],
        "email": "x@example.com",
        "timezone": "UTC",
        "data": {"plan": "pro", "email": "from-data"},
    }
    assert c.events[0].data == {
        "plan": "pro",
        "anonymous_id": "a1",
        "email": "x@example.com",
        "timezone": "UTC",
    }
    assert (user.email, user.phone, user.timezone, user.locale) == (
        "x@example.com",
        None,
        "UTC",
        None,
    )
    assert user.data == {"plan": "pro", "email": "from-data"}


def test_user_created_comes_before_the_event_that_created_the_user() -> None:
    b = make_batch()
    traits = Traits(email="x@example.com", locale="fr", data={"src": "ad"})
    b.apply(
        TrackEvents(
            project_id=PID,
            events=[EventIn(anonymous_id=None, external_id="e1", name="a", data={}, traits=traits)],
        )
    )
    c = b.changes()
    assert [ev.name for ev in c.events] == ["user_created", "user_updated", "a"]
    assert c.events[1].data == {
        "external_id": "e1",
        "anonymous_ids_added": ["gen-1"],
        "email": "x@example.com",
        "locale": "fr",
        "data": {"src": "ad"},
    }
    assert c.events[0].data == {
        "src": "ad",
        "external_id": "e1",
        "email": "x@example.com",
        "locale": "fr",
    }
    assert c.new_users[0].email == "x@example.com"


def test_one_user_created_per_created_user() -> None:
    b = make_batch()
    for cmd in (track("a1", None), track("a1", None), identify("a1", "e1"), track(None, "e1")):
        b.apply(cmd)
    assert len(named(b.changes().events, "user_created")) == 1


# -- alias ---------------------------------------------------------------------------------
def alias(anon: str, ext: str) -> Alias:
    return Alias(project_id=PID, anonymous_id=anon, external_id=ext)


def test_alias_before_the_anonymous_user_exists_links_them() -> None:
    b = make_batch()
    b.apply(alias("a1", "e1"))
    c = b.changes()
    [user] = c.new_users
    assert (user.external_id, user.anonymous_ids) == ("e1", ["a1"])
    assert c.anonymous_id_inserts == [(PID, "a1", user.id)]
    assert [ev.name for ev in c.events] == ["user_created", "user_updated"]
    assert c.events[0].data == {"external_id": "e1", "anonymous_id": "a1"}
    assert c.events[1].data == {"external_id": "e1", "anonymous_ids_added": ["a1"]}
    b.apply(track("a1", None))  # later events of the anonymous id reach the same user
    assert b.events[-1].user is user


def test_alias_sets_the_external_id_of_an_anonymous_user() -> None:
    b = make_batch()
    a = stored_user(b, 2, None, ["a1"])
    b.apply(alias("a1", "e1"))
    c = b.changes()
    assert a.external_id == "e1" and c.updated_users == [a] and c.new_users == []


def test_alias_attaches_to_an_existing_external_user() -> None:
    b = make_batch()
    e = stored_user(b, 1, "e1", [])
    b.apply(alias("a1", "e1"))
    assert owner(b, "a1") is e
    assert b.changes().anonymous_id_inserts == [(PID, "a1", 1)]


def test_alias_merges_the_anonymous_user_into_the_external_one() -> None:
    b = make_batch()
    e = stored_user(b, 1, "e1", [])
    a = stored_user(b, 2, None, ["a1"])
    b.apply(alias("a1", "e1"))
    c = b.changes()
    assert a.deleted and owner(b, "a1") is e
    assert c.deleted_users == [a] and c.event_moves == [(2, 1)]
    assert [ev.name for ev in c.events] == ["user_merged", "user_updated"]


def test_repeating_an_alias_is_a_no_op() -> None:
    b = make_batch()
    stored_user(b, 1, "e1", ["a1"])
    b.apply(alias("a1", "e1"))
    assert_no_changes(b.changes())


def test_repeating_an_alias_in_the_same_batch_changes_nothing_more() -> None:
    b = make_batch()
    b.apply(alias("a1", "e1"))
    before = b.changes()
    snapshot = (len(before.new_users), list(before.anonymous_id_inserts), len(before.events))
    b.apply(alias("a1", "e1"))
    after = b.changes()
    assert (len(after.new_users), after.anonymous_id_inserts, len(after.events)) == snapshot


@pytest.mark.parametrize("target_exists", [False, True])
def test_realias_to_another_external_id_is_refused(target_exists: bool) -> None:
    b = make_batch()
    a = stored_user(b, 2, "e1", ["a1"])
    if target_exists:
        stored_user(b, 3, "e2", [])
    with pytest.raises(DomainError) as info:
        b.apply(alias("a1", "e2"))
    assert info.value.path == "/anonymous_id"
    assert "already aliased to another external_id" in info.value.message
    assert "a1" in info.value.message
    assert owner(b, "a1") is a and a.external_id == "e1"
    assert_no_changes(b.changes())  # refused: changes nothing


def test_realias_after_alias_in_the_same_batch_is_refused() -> None:
    b = make_batch()
    b.apply(alias("a1", "e1"))
    with pytest.raises(DomainError):
        b.apply(alias("a1", "e2"))
    assert b.by_external.get((PID, "e2")) is None
    assert len(b.changes().new_users) == 1


# -- projects ------------------------------------------------------------------------------
def test_the_same_ids_in_two_projects_are_two_users() -> None:
    b = make_batch()
    b.apply(identify("a1", "e1"))
    b.apply(Identify(project_id=2, anonymous_id="a1", external_id="e1", traits=Traits()))
    c = b.changes()
    assert sorted(u.project_id for u in c.new_users) == [1, 2]
    assert sorted(c.anonymous_id_inserts) == [(1, "a1", 100), (2, "a1", 101)]
    assert named(c.events, "user_merged") == []


# -- the merge bound -----------------------------------------------------------------------
def pairs_batch(n: int) -> Batch:
    """n stored anonymous users a{i} and n stored identified users e{i}, not yet linked."""
    b = make_batch()
    for i in range(n):
        stored_user(b, 1 + i, f"e{i}", [])
        stored_user(b, 10_000 + i, None, [f"a{i}"])
    return b


def linking(n: int, repeat: int = 1) -> TrackEvents:
    events = [
        EventIn(anonymous_id=f"a{i}", external_id=f"e{i}", name="login", data={})
        for _ in range(repeat)
        for i in range(n)
    ]
    return TrackEvents(project_id=PID, events=events)


def test_one_request_may_merge_the_bound_and_no_more() -> None:
    b = pairs_batch(MAX_MERGES_PER_REQUEST + 1)
    b.apply(linking(MAX_MERGES_PER_REQUEST, repeat=3))  # pairs met again merge nothing more
    assert sum(u.deleted for u in b.users.values()) == MAX_MERGES_PER_REQUEST
    b.apply(linking(MAX_MERGES_PER_REQUEST + 1))  # a new request: one merge left to make
    assert sum(u.deleted for u in b.users.values()) == MAX_MERGES_PER_REQUEST + 1

    with pytest.raises(TooManyMerges) as refused:
        pairs_batch(MAX_MERGES_PER_REQUEST + 1).apply(linking(MAX_MERGES_PER_REQUEST + 1))
    assert refused.value.error.path == ""
    assert f"at most {MAX_MERGES_PER_REQUEST} " in refused.value.error.message


def test_a_sequence_counts_its_merges_together() -> None:
    n = MAX_MERGES_PER_REQUEST + 1
    seq = Sequence(project_id=PID, commands=[identify(f"a{i}", f"e{i}") for i in range(n)])
    with pytest.raises(TooManyMerges):
        pairs_batch(n).apply(seq)
    with_alias = Sequence(
        project_id=PID,
        commands=[*seq.commands, Alias(project_id=PID, anonymous_id="x", external_id="y")],
    )
    b = pairs_batch(n)
    with pytest.raises(TooManyMerges):  # refused by the trial batch, before this one changed
        b.apply(with_alias)
    assert not any(u.deleted for u in b.users.values())
