"""Sequence: the commands of one request (a Segment batch) applied in order, all or nothing, even
when the refusal comes after earlier commands of the sequence changed the batch."""

from __future__ import annotations

import itertools

import pytest

from pier.domain.batch import Batch
from pier.domain.commands import Alias, EventIn, Identify, Sequence, TrackEvents, Traits
from pier.domain.errors import DomainError
from pier.domain.model import Device, User
from pier.domain.plan import load_request

PID = 1
NOW = 1_800_000_000_000


def make_batch() -> Batch:
    user_ids = itertools.count(100)
    return Batch(NOW, lambda: next(user_ids))


def stored(batch: Batch, uid: int, ext: str | None, anons: list[str]) -> User:
    user = User(uid, PID, ext, list(anons), stored=True, created_at=1)
    user.devices = []
    batch.add_user(user, anons)
    return user


def identify(anon: str | None, ext: str | None, **traits: object) -> Identify:
    return Identify(project_id=PID, anonymous_id=anon, external_id=ext, traits=Traits(**traits))  # type: ignore[arg-type]


def track(ext: str, name: str) -> TrackEvents:
    return TrackEvents(project_id=PID, events=[EventIn(None, ext, name, {})])


def snapshot(batch: Batch) -> tuple:
    c = batch.changes()
    return (
        [(u.id, u.external_id, u.email, u.deleted) for u in batch.users.values()],
        [(e.user.id, e.name) for e in c.events],
        sorted(c.anonymous_id_inserts),
        c.event_moves,
    )


def test_a_sequence_applies_its_commands_in_order() -> None:
    b = make_batch()
    seq = Sequence(
        project_id=PID,
        commands=[identify("a1", "u1", email="x@y.z"), track("u1", "bought"), track("u1", "left")],
    )
    b.apply(seq)
    assert [(e.user.external_id, e.name) for e in b.events] == [
        ("u1", "user_created"),
        ("u1", "user_updated"),
        ("u1", "bought"),
        ("u1", "left"),
    ]
    assert b.by_external[(PID, "u1")].email == "x@y.z"


def test_a_refusal_after_earlier_changes_leaves_the_batch_as_it_was() -> None:
    b = make_batch()
    a = stored(b, 1, None, ["anon-a"])  # anonymous: the identify below merges it into u2
    phone = Device(7, PID, a, "phone-a", token="tok-a", stored=True, created_at=1, updated_at=1)
    b.add_device(phone)
    stored(b, 2, "u2", ["anon-u2"])
    b.apply(track("u2", "before"))
    before = snapshot(b)
    seq = Sequence(
        project_id=PID,
        commands=[
            identify("anon-a", "u2", email="merged@example.com"),  # merge A into u2
            identify("anon-new", "u3"),  # a new user
            track("u3", "never"),
            Alias(project_id=PID, anonymous_id="anon-new", external_id="u4"),  # refused
        ],
        paths=["/batch/0", "/batch/1", "/batch/2", "/batch/3/previousId"],
    )
    with pytest.raises(DomainError) as refused:
        b.apply(seq)
    assert refused.value.path == "/batch/3/previousId"
    assert "already aliased" in refused.value.message
    assert snapshot(b) == before
    assert not a.deleted and (PID, "u3") not in b.by_external
    assert phone.user is a and a.devices == [phone] and not phone.dirty  # moved in the trial only
    assert b.by_external[(PID, "u2")].email is None
    b.apply(track("u2", "after"))  # the batch goes on
    assert [e.name for e in b.events] == ["before", "after"]


def test_without_paths_a_refusal_points_at_the_command() -> None:
    b = make_batch()
    stored(b, 1, "u1", ["anon-1"])
    seq = Sequence(
        project_id=PID,
        commands=[track("u1", "x"), Alias(project_id=PID, anonymous_id="anon-1", external_id="u9")],
    )
    with pytest.raises(DomainError) as refused:
        b.apply(seq)
    assert refused.value.path == "/1/anonymous_id"


def test_a_sequence_that_takes_is_applied_once() -> None:
    b = make_batch()
    seq = Sequence(
        project_id=PID,
        commands=[
            identify("anon-1", None),
            Alias(project_id=PID, anonymous_id="anon-1", external_id="u1"),
            track("u1", "done"),
        ],
    )
    b.apply(seq)
    # anon-1's user gets its external id (no merge): its items stay
    assert [e.name for e in b.events] == ["user_created", "user_updated", "user_updated", "done"]
    assert [e.data for e in b.events[1:3]] == [
        {"anonymous_ids_added": ["anon-1"]},
        {"external_id": "u1"},
    ]
    assert b.by_anonymous[(PID, "anon-1")] is b.by_external[(PID, "u1")]
    assert len(b.users) == 1


def test_loading_sees_inside_a_sequence() -> None:
    seq = Sequence(
        project_id=PID,
        commands=[identify("a1", "u1"), Alias(project_id=PID, anonymous_id="a2", external_id="u2")],
    )
    req = load_request([seq, track("u3", "x")])
    assert req.external_ids == {(PID, "u1"), (PID, "u2"), (PID, "u3")}
    assert req.anonymous_ids == {(PID, "a1"), (PID, "a2")}
    assert req.pairs == [(PID, "a1", "u1"), (PID, "a2", "u2")]
