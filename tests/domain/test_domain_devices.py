"""Device registration (contract section 4, devices): upsert by device_id then token, the token
follows the latest user, token conflicts, extra, the 25-device cap, unknown users."""

from __future__ import annotations

import itertools
from typing import Any

from msgspec import UNSET, UnsetType

from pier.domain.batch import Batch
from pier.domain.commands import Identify, RegisterDevice, Traits
from pier.domain.devices import MAX_DEVICES_PER_USER
from pier.domain.model import Device, User

PID = 1
NOW = 1_800_000_000_000
FIELDS = {"os": "ios", "model": "iPhone15,2", "app_build": "42", "app_version": "1.2.0"}


def make_batch() -> Batch:
    ids = itertools.count(100)
    anon = itertools.count(1)
    return Batch(NOW, lambda: next(ids), lambda: f"gen-{next(anon)}")


def stored_user(batch: Batch, uid: int, ext: str | None, anons: list[str]) -> User:
    user = User(uid, PID, ext, list(anons), stored=True, created_at=1)
    user.devices = []
    batch.add_user(user, anons)
    return user


def stored_device(
    batch: Batch, did: int, owner: User, device_id: str, updated_at: int = 1, **fields: Any
) -> Device:
    d = Device(did, PID, owner, device_id, stored=True, created_at=1, updated_at=updated_at)
    for key, value in {**FIELDS, **fields}.items():
        setattr(d, key, value)
    batch.add_device(d)
    return d


def register(
    device_id: str,
    *,
    ext: str | None = None,
    anon: str | None = None,
    token: str | None | UnsetType = UNSET,
    fields: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> RegisterDevice:
    return RegisterDevice(
        project_id=PID,
        anonymous_id=anon,
        external_id=ext,
        device_id=device_id,
        fields=fields if fields is not None else dict(FIELDS),
        token=token,
        extra=extra or {},
    )


def tokens(batch: Batch) -> dict[str, str]:
    """token -> device_id, from the batch's index (checked against the devices themselves)."""
    out = {}
    for (_, token), d in batch.devices_by_token.items():
        assert d.token == token
        out[token] = d.device_id
    return out


# -- upsert ----------------------------------------------------------------------------------
def test_new_device_is_inserted_on_the_user() -> None:
    b = make_batch()
    u = stored_user(b, 1, "e1", [])
    b.apply(register("d1", ext="e1", token="t1", extra={"sdk_version": "3"}))
    c = b.changes()
    [d] = c.device_writes
    assert (d.id, d.user, d.device_id, d.token, d.os, d.extra) == (
        None,
        u,
        "d1",
        "t1",
        "ios",
        {"sdk_version": "3"},
    )
    assert d.created_at == d.updated_at == NOW
    assert u.devices == [d] and c.device_deletes == []


def test_upsert_by_device_id_updates_the_fields_sent() -> None:
    b = make_batch()
    u = stored_user(b, 1, "e1", [])
    d = stored_device(b, 7, u, "d1", token="t1", os_version="17.0")
    b.apply(register("d1", ext="e1", fields={**FIELDS, "app_version": "2.0"}))
    c = b.changes()
    assert c.device_writes == [d] and c.device_deletes == [7]  # rewritten whole, same row id
    assert (d.app_version, d.os_version, d.token) == ("2.0", "17.0", "t1")
    assert (d.created_at, d.updated_at) == (1, NOW)
    assert u.devices == [d]


def test_upsert_by_token_replaces_the_device_id() -> None:
    b = make_batch()
    u = stored_user(b, 1, "e1", [])
    d = stored_device(b, 7, u, "old-id", token="t1")
    b.apply(register("new-id", ext="e1", token="t1"))
    c = b.changes()
    assert c.device_writes == [d] and d.device_id == "new-id" and d.id == 7
    assert (PID, "old-id") not in b.devices_by_id and b.devices_by_id[(PID, "new-id")] is d
    assert u.devices == [d]  # one device, not two
    assert tokens(b) == {"t1": "new-id"}


def test_token_follows_the_latest_user() -> None:
    b = make_batch()
    x = stored_user(b, 1, "x", [])
    y = stored_user(b, 2, "y", [])
    d = stored_device(b, 7, x, "d1", token="t1")
    b.apply(register("d1", ext="y", token="t1"))
    assert d.user is y and x.devices == [] and y.devices == [d]
    assert [w.user.id for w in b.changes().device_writes] == [2]


def test_token_found_by_token_moves_to_the_latest_user() -> None:
    b = make_batch()
    x = stored_user(b, 1, "x", [])
    y = stored_user(b, 2, "y", [])
    d = stored_device(b, 7, x, "d1", token="t1")
    b.apply(register("d2", ext="y", token="t1"))  # reinstalled app: new device id, same token
    assert (d.user, d.device_id) == (y, "d2") and x.devices == [] and y.devices == [d]


def test_token_conflict_leaves_the_token_on_the_device_found_by_id() -> None:
    b = make_batch()
    x = stored_user(b, 1, "x", [])
    y = stored_user(b, 2, "y", [])
    dx = stored_device(b, 7, x, "dx", token="tx")
    dy = stored_device(b, 8, y, "dy", token="ty")
    b.apply(register("dx", ext="x", token="ty"))  # device_id found on X, token on Y
    assert (dx.token, dy.token) == ("ty", None)
    assert tokens(b) == {"ty": "dx"}
    c = b.changes()
    assert sorted(c.device_deletes) == [7, 8]  # both rows rewritten
    assert {d.device_id: d.token for d in c.device_writes} == {"dx": "ty", "dy": None}
    assert dy.user is y  # Y keeps its device, without the token


def test_token_left_out_keeps_it() -> None:
    b = make_batch()
    u = stored_user(b, 1, "e1", [])
    d = stored_device(b, 7, u, "d1", token="t1")
    b.apply(register("d1", ext="e1"))
    assert d.token == "t1" and tokens(b) == {"t1": "d1"}


def test_token_null_clears_it() -> None:
    b = make_batch()
    u = stored_user(b, 1, "e1", [])
    d = stored_device(b, 7, u, "d1", token="t1")
    b.apply(register("d1", ext="e1", token=None))
    assert d.token is None and tokens(b) == {}
    assert b.changes().device_writes[0].token is None


def test_new_token_replaces_the_old_one() -> None:
    b = make_batch()
    u = stored_user(b, 1, "e1", [])
    d = stored_device(b, 7, u, "d1", token="t1")
    b.apply(register("d1", ext="e1", token="t2"))
    assert d.token == "t2" and tokens(b) == {"t2": "d1"}


def test_extra_is_merged() -> None:
    b = make_batch()
    u = stored_user(b, 1, "e1", [])
    d = stored_device(b, 7, u, "d1", extra={"sdk_version": "1", "kept": True})
    b.apply(register("d1", ext="e1", extra={"sdk_version": "2", "added": 1}))
    assert d.extra == {"sdk_version": "2", "kept": True, "added": 1}
    b.apply(register("d1", ext="e1"))  # no extra keys sent: extra kept
    assert d.extra == {"sdk_version": "2", "kept": True, "added": 1}


# -- unknown users ---------------------------------------------------------------------------
def test_unknown_user_is_created() -> None:
    b = make_batch()
    b.apply(register("d1", anon="a1", token="t1"))
    c = b.changes()
    [u] = c.new_users
    assert u.anonymous_ids == ["a1"] and u.external_id is None
    assert [d.user for d in c.device_writes] == [u] and u.devices == c.device_writes
    assert [ev.name for ev in c.events] == ["user_created", "user_updated", "device_registered"]
    assert c.events[2].user is u and c.events[2].data == {
        "device_id": "d1",
        "token": "t1",
        "os_version": None,
        **FIELDS,
        "extra": {},
    }
    assert c.events[0].data == {"anonymous_id": "a1"}


def test_unknown_external_user_is_created_and_takes_the_token() -> None:
    b = make_batch()
    x = stored_user(b, 1, "x", [])
    d = stored_device(b, 7, x, "d1", token="t1")
    b.apply(register("d1", ext="newcomer", token="t1"))
    [u] = b.changes().new_users
    assert u.external_id == "newcomer" and d.user is u and x.devices == []


# -- the 25-device cap -----------------------------------------------------------------------
def test_cap_removes_the_least_recently_updated_tokenless_devices() -> None:
    b = make_batch()
    u = stored_user(b, 1, "e1", [])
    # 25 stored devices: the 5 oldest carry tokens (they stay), then token-less ones.
    for i in range(MAX_DEVICES_PER_USER):
        token = f"t{i}" if i < 5 else None
        stored_device(b, 1000 + i, u, f"d{i}", updated_at=10 + i, token=token)
    b.apply(register("fresh", ext="e1"))
    c = b.changes()
    assert u.devices is not None and len(u.devices) == MAX_DEVICES_PER_USER
    assert "d5" not in {d.device_id for d in u.devices}  # the oldest token-less one
    assert (PID, "d5") not in b.devices_by_id
    assert c.device_deletes == [1005]
    assert [d.device_id for d in c.device_writes] == ["fresh"]
    assert all(f"d{i}" in {d.device_id for d in u.devices} for i in range(5))


def test_cap_holds_when_every_device_has_a_token() -> None:
    # Tokens do not lift the cap: with only tokened devices, the least recently updated goes,
    # and its token is free for another device.
    b = make_batch()
    u = stored_user(b, 1, "e1", [])
    for i in range(MAX_DEVICES_PER_USER):
        stored_device(b, 1000 + i, u, f"d{i}", updated_at=100 - i, token=f"t{i}")
    b.apply(register("fresh", ext="e1", token="t-fresh"))
    assert u.devices is not None and len(u.devices) == MAX_DEVICES_PER_USER
    last = f"d{MAX_DEVICES_PER_USER - 1}"  # updated_at 76: the least recently updated
    assert last not in {d.device_id for d in u.devices} and "fresh" in {
        d.device_id for d in u.devices
    }
    assert (PID, f"t{MAX_DEVICES_PER_USER - 1}") not in b.devices_by_token
    assert b.changes().device_deletes == [1000 + MAX_DEVICES_PER_USER - 1]


def test_cap_of_300_tokened_registrations_keeps_the_25_latest() -> None:
    b = make_batch()
    for i in range(300):
        b.apply(register(f"d{i}", ext="e1", token=f"t{i}"))
    u = b.by_external[(PID, "e1")]
    assert u.devices is not None
    assert sorted(d.device_id for d in u.devices) == sorted(f"d{i}" for i in range(275, 300))
    assert len(b.devices_by_token) == len(b.devices_by_id) == MAX_DEVICES_PER_USER
    assert len(b.changes().device_writes) == MAX_DEVICES_PER_USER


def test_cap_counts_a_device_moved_from_another_user() -> None:
    b = make_batch()
    u = stored_user(b, 1, "e1", [])
    other = stored_user(b, 2, "e2", [])
    for i in range(MAX_DEVICES_PER_USER):
        stored_device(b, 1000 + i, u, f"d{i}", updated_at=10 + i)
    moving = stored_device(b, 7, other, "moving", token="tm")
    b.apply(register("moving", ext="e1", token="tm"))
    assert u.devices is not None and len(u.devices) == MAX_DEVICES_PER_USER
    assert moving in u.devices and other.devices == []
    assert sorted(b.changes().device_deletes) == [7, 1000]  # 7 is rewritten, 1000 goes


def test_cap_applies_to_devices_created_in_the_same_batch() -> None:
    b = make_batch()
    for i in range(MAX_DEVICES_PER_USER + 3):
        b.apply(register(f"d{i}", anon="a1"))
    u = b.by_anonymous[(PID, "a1")]
    assert u.devices is not None and len(u.devices) == MAX_DEVICES_PER_USER
    c = b.changes()
    assert len(c.device_writes) == MAX_DEVICES_PER_USER and c.device_deletes == []
    assert {d.device_id for d in c.device_writes} == {d.device_id for d in u.devices}
    # A removed device can register again: it comes back as a new device.
    gone = next(
        f"d{i}" for i in range(MAX_DEVICES_PER_USER + 3) if (PID, f"d{i}") not in b.devices_by_id
    )
    b.apply(register(gone, anon="a1"))
    assert b.devices_by_id[(PID, gone)] in u.devices


def test_cap_in_one_batch_spares_a_device_updated_later_in_the_batch() -> None:
    # Devices touched in one batch all get updated_at = batch.now; "least recently updated" must
    # still follow the order of the updates, as it does when each request is its own batch.
    b = make_batch()
    for i in range(MAX_DEVICES_PER_USER):
        b.apply(register(f"d{i}", anon="a1"))
    b.apply(register("d0", anon="a1"))  # d0 updated again: now the most recent
    b.apply(register("d25", anon="a1"))
    kept = {d.device_id for d in b.by_anonymous[(PID, "a1")].devices or ()}
    assert "d1" not in kept  # fails: d0, updated after d1, is the one dropped
    assert "d0" in kept


def test_merge_keeps_the_device_cap() -> None:
    # "At most 25 devices per user": a merge that brings E above the cap should drop the least
    # recently updated token-less devices, as registering one does.
    b = make_batch()
    e = stored_user(b, 1, "e1", [])
    a = stored_user(b, 2, None, ["a1"])
    for i in range(20):
        stored_device(b, 1000 + i, e, f"e{i}", updated_at=10 + i)
        stored_device(b, 2000 + i, a, f"a{i}", updated_at=100 + i)
    b.apply(Identify(project_id=PID, anonymous_id="a1", external_id="e1", traits=Traits()))
    assert e.devices is not None and len(e.devices) == MAX_DEVICES_PER_USER  # fails: 40


def test_merge_keeps_the_cap_for_tokened_devices() -> None:
    # A merge combining two users' tokened devices keeps the 25 most recently updated.
    b = make_batch()
    e = stored_user(b, 1, "e1", [])
    a = stored_user(b, 2, None, ["a1"])
    for i in range(20):
        stored_device(b, 1000 + i, e, f"e{i}", updated_at=10 + i, token=f"te{i}")
        stored_device(b, 2000 + i, a, f"a{i}", updated_at=100 + i, token=f"ta{i}")
    b.apply(Identify(project_id=PID, anonymous_id="a1", external_id="e1", traits=Traits()))
    assert e.devices is not None and len(e.devices) == MAX_DEVICES_PER_USER
    kept = {d.device_id for d in e.devices}
    assert kept == {f"a{i}" for i in range(20)} | {f"e{i}" for i in range(15, 20)}
    assert sorted(b.changes().device_deletes) == [1000 + i for i in range(15)] + [
        2000 + i
        for i in range(20)  # moved: rewritten under their new owner
    ]
