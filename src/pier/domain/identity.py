"""Identity resolution (contract section 3): which user an (anonymous_id, external_id) pair means,
creating and merging users as the table says; alias's rule (section 4); the merge bound."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from .commands import Alias, Command, RemoveDevice, TrackEvents, Traits, flatten
from .devices import enforce_device_cap
from .errors import DomainError, NeedsLoad, TooManyMerges
from .feed import USER_CREATED, USER_MERGED
from .model import PROFILE_FIELDS, User
from .state import BatchState, Key
from .traits import creation_data

# A merge moves a user's ids, devices and events: the costliest thing a request can ask for.
# One request may make this many (the writer's work budget counts them); more is a 422.
MAX_MERGES_PER_REQUEST = 100


def resolve(
    b: BatchState,
    pid: int,
    anon: str | None,
    ext: str | None,
    traits: Traits | None,
    at: int | None = None,
    created_at: int | None = None,
) -> User:
    """The user for this pair, per the identity table. Empty ids are absent (validated).
    `at`: the time of the event that names them, when it may create the user; `created_at`:
    when the user was created, if this creates it (else now)."""
    e = b.by_external.get((pid, ext)) if ext else None
    a = b.by_anonymous.get((pid, anon)) if anon else None
    if e is None and a is None:
        return create(b, pid, ext, anon, traits, at, created_at)
    if a is None:
        assert e is not None
        if anon:
            attach(b, e, anon)
        return e
    if e is None:
        if not ext:
            return a
        if a.external_id is None:
            a.external_id = ext
            b.by_external[(pid, ext)] = a
            b.touch(a)
            b.note(a, {"external_id": ext})
            return a
        return create(b, pid, ext, None, traits, at, created_at)  # the anonymous id stays with A
    if e is a:
        return e
    if a.external_id is None:
        merge(b, a, e)
    return e


def alias(b: BatchState, cmd: Alias) -> None:
    """Alias (contract section 4): link an anonymous id to an external id, as identify would;
    refused when the anonymous id's user has another external id already."""
    owner = b.by_anonymous.get((cmd.project_id, cmd.anonymous_id))
    if owner is not None and owner.external_id not in (None, cmd.external_id):
        raise DomainError(
            f"anonymous_id {cmd.anonymous_id} is already aliased to another external_id",
            "/anonymous_id",
        )
    resolve(b, cmd.project_id, cmd.anonymous_id, cmd.external_id, None)


def merge_bound(cmd: Command, by_anonymous: dict[Key, User] | None = None) -> int:
    """How many merges `cmd` may make at most: one for each distinct anonymous id it names
    beside an external id (each can merge once); with the batch's index, not those whose user
    has an external id (such a user is never merged away, so keeps them)."""
    pid = cmd.project_id
    anons = {anon for anon, ext in _pairs(cmd) if anon and ext}
    if by_anonymous is None:
        return len(anons)
    held = (by_anonymous.get((pid, anon)) for anon in anons)
    return sum(user is None or user.external_id is None for user in held)


def _pairs(cmd: Command) -> Iterator[tuple[str | None, str | None]]:
    for single in flatten([cmd]):
        if isinstance(single, TrackEvents):
            for ev in single.events:
                yield ev.anonymous_id, ev.external_id
        elif not isinstance(single, RemoveDevice):  # it names a device only
            yield single.anonymous_id, single.external_id


def create(
    b: BatchState,
    pid: int,
    ext: str | None,
    anon: str | None,
    traits: Traits | None,
    at: int | None = None,
    created_at: int | None = None,
) -> User:
    born = b.now if created_at is None else created_at
    user = User(b.new_user_id(), pid, ext, [], created_at=born, updated_at=b.now)
    b.users[user.id] = user
    # its whole state goes in the user_updated after its user_created (Batch.flush), at
    # the same time: the external id, the anonymous id (attach), what the command sets
    b.pending[user] = {"external_id": ext} if ext else {}
    if at is not None:
        b.pending_at[user] = at
    if ext:
        b.by_external[(pid, ext)] = user
    attach(b, user, anon or b.new_anonymous_id())
    b.record(user, USER_CREATED, creation_data(traits, ext, anon), at)
    return user


def attach(b: BatchState, user: User, anon: str) -> None:
    key = (user.project_id, anon)
    b.by_anonymous[key] = user
    b.touched_anonymous.pop(key, None)  # re-added last: rows follow the user's order
    b.touched_anonymous[key] = None
    if user.anonymous_ids is not None:
        user.anonymous_ids.append(anon)
    b.note(user, {"anonymous_ids_added": [anon]})


def merge(b: BatchState, a: User, e: User) -> None:
    """Merge anonymous user A into identified user E (contract section 3)."""
    if a.anonymous_ids is None or a.devices is None or a.partial or e.partial or e.devices is None:
        raise NeedsLoad([u.id for u in (a, e) if u.stored])
    if b.merges_left <= 0:
        raise TooManyMerges(MAX_MERGES_PER_REQUEST)
    b.merges_left -= 1
    moved = list(a.anonymous_ids)
    for anon in moved:
        attach(b, e, anon)
    a.anonymous_ids = []
    for device in a.devices:
        device.user = e
        e.devices.append(device)
        b.touch_device(device, moved_only=True)
    a.devices = []
    enforce_device_cap(b, e)
    b.merged_into[a.id] = e  # its events of this batch go to E, its items leave (changes)
    b.pending.pop(a, None)
    if a.stored:
        b.event_moves.append((a.id, e.id))
    # what E gains is noted (with the anonymous ids, by attach) for its user_updated, which
    # comes after user_merged, as the moved devices' items do (Batch.flush)
    gained: dict[str, Any] = {}
    for key, value in a.data.items():
        if key not in e.data:
            e.data[key] = value
            gained.setdefault("data", {})[key] = value
    for field in PROFILE_FIELDS:
        if not getattr(e, field) and getattr(a, field) != getattr(e, field):
            setattr(e, field, getattr(a, field))
            gained[field] = getattr(a, field)
    b.note(e, gained)
    a.deleted = True
    b.touch(e)
    b.record(e, USER_MERGED, {"merged_user_id": a.id, "anonymous_ids": moved})
