"""A batch: the commands of many requests applied in order, in memory, to what the store loaded.

The store loads what the plan names (plan.py) into a Batch through its `add_*` methods;
decide.py applies the commands here and hands `changes()` to the store to write in one
transaction. The rules live in identity.py, events.py, devices.py and traits.py.
"""

from __future__ import annotations

import copy
import itertools
import uuid
from collections.abc import Callable, Iterable
from typing import Any

import msgspec

from . import identity
from .commands import Alias, Command, Identify, RemoveDevice, Sequence, TrackEvents, Traits
from .devices import register_device, remove_device
from .errors import DomainError, NeedsLoad
from .events import track
from .feed import (
    DEVICE_REGISTERED,
    DEVICE_REMOVED,
    MERGED_AWAY,
    REMOVED_RENAMED,
    USER_UPDATED,
    device_data,
    device_state,
)
from .identity import MAX_MERGES_PER_REQUEST, merge_bound
from .model import Device, Event, User
from .plan import Key, load_request
from .traits import apply_traits


class ChangeSet(msgspec.Struct):
    """What a batch changed, in the order the store writes it."""

    now: int
    new_users: list[User]
    updated_users: list[User]
    deleted_users: list[User]
    event_moves: list[tuple[int, int]]  # (from user id, to user id)
    anonymous_id_deletes: list[Key]
    anonymous_id_inserts: list[tuple[int, str, int]]  # (project, anonymous id, user id)
    device_deletes: list[int]
    device_writes: list[Device]  # inserted whole (stored ones were deleted just before)
    events: list[Event]
    request_keys: list[tuple[int, str, str]]  # (project, Idempotency-Key, request fingerprint)
    list_joins: list[tuple[int, int, int]]  # (static list id, project, user id): Sequence.join_list
    client_events: int = 0  # of `events`, those the clients sent (the others: user_created...)
    duplicates: int = 0  # client events dropped: their message_id was stored already


_LINKED = (User, Device)
_ATOMS = frozenset({int, str, bool, bytes, float})


def _clone(obj: User | Device, memo: dict[int, User | Device]) -> Any:
    """A copy of a user or device for a trial batch, with the users and devices it links to
    (each copied once, through `memo`); lists are copied, dicts (data, extra) deep-copied."""
    twin = memo.get(id(obj))
    if twin is not None:
        return twin
    twin = memo[id(obj)] = object.__new__(type(obj))
    for name in type(obj).__slots__:
        value = getattr(obj, name, _LINKED)  # _LINKED: a slot never set
        if value is _LINKED:
            continue
        if value is None or value.__class__ in _ATOMS:
            pass
        elif isinstance(value, _LINKED):
            value = _clone(value, memo)
        elif isinstance(value, list):
            value = [_clone(v, memo) if isinstance(v, _LINKED) else v for v in value]
        elif isinstance(value, dict):
            value = copy.deepcopy(value)
        setattr(twin, name, value)
    return twin


class Batch:
    """In-memory state of one batch: the loaded rows, their indexes, and what changed."""

    def __init__(
        self,
        now: int,
        new_user_id: Callable[[], int],
        new_anonymous_id: Callable[[], str] = lambda: str(uuid.uuid4()),
    ) -> None:
        self.now = now
        self.new_user_id = new_user_id
        self.new_anonymous_id = new_anonymous_id
        self.users: dict[int, User] = {}
        self.by_external: dict[Key, User] = {}
        self.by_anonymous: dict[Key, User] = {}
        self.stored_anonymous: dict[Key, int] = {}  # owner in the database, as loaded
        self.touched_anonymous: dict[Key, None] = {}  # ordered: first id first
        self.devices_by_id: dict[Key, Device] = {}
        self.devices_by_token: dict[Key, Device] = {}
        self.touched_devices: list[Device] = []
        self._device_updates = 0
        self.seen_message_ids: set[Key] = set()
        self.request_keys: dict[Key, str] = {}  # stored Idempotency-Key → its fingerprint
        self.events: list[Event] = []
        self.recorded = 0  # events of Pier's own (user_created, user_merged...) in `events`
        # what the command in progress changed: user_updated data per user, devices touched
        # (flush() turns them into items when the command is done)
        self.pending: dict[User, dict[str, Any]] = {}
        self.pending_at: dict[User, int] = {}  # an item's time, when not now: a new user's
        self.pending_devices: dict[Device, None] = {}
        self.duplicates = 0  # client events dropped as retries
        self.event_moves: list[tuple[int, int]] = []
        self.merged_into: dict[int, User] = {}  # merged-away user id → the user it went into
        self.list_joins: list[tuple[int, User]] = []  # (static list id, user): Sequence.join_list
        self.merges_left = MAX_MERGES_PER_REQUEST  # of the request being applied

    # -- loading -------------------------------------------------------------------------
    def add_user(self, user: User, anonymous_ids: Iterable[str] = ()) -> None:
        self.users[user.id] = user
        if user.external_id is not None:
            self.by_external[(user.project_id, user.external_id)] = user
        for anon in anonymous_ids:
            key = (user.project_id, anon)
            self.by_anonymous[key] = user
            self.stored_anonymous[key] = user.id

    def add_partial(self, uid: int, pid: int, ext: str | None, anon: str | None = None) -> None:
        """A stored user known by its ids only (the loaders' hot path: add_user, without
        building a user that the batch already holds)."""
        user = self.users.get(uid)
        if user is None:
            user = self.users[uid] = User.partial_of(uid, pid, ext)
            if ext is not None:
                self.by_external[(pid, ext)] = user
        if anon is not None:
            key = (pid, anon)
            self.by_anonymous[key] = user
            self.stored_anonymous[key] = uid

    def add_device(self, device: Device) -> None:
        device.shown = device_state(device)  # stored: the feed has described it so
        pid = device.project_id
        self.devices_by_id[(pid, device.device_id)] = device
        if device.token is not None:
            self.devices_by_token[(pid, device.token)] = device
        owner = device.user
        if owner.devices is not None and device not in owner.devices:
            owner.devices.append(device)

    def add_request_key(self, pid: int, key: str, fingerprint: str) -> None:
        """An Idempotency-Key stored already, with the fingerprint of its request."""
        self.request_keys[(pid, key)] = fingerprint

    def add_seen_message_ids(self, pid: int, message_ids: Iterable[str]) -> None:
        """Message ids of stored events: an event naming one again is a retry, dropped."""
        self.seen_message_ids.update((pid, m) for m in message_ids)

    # -- applying ------------------------------------------------------------------------
    def apply(self, cmd: Command) -> None:
        """Apply one request's command; raises DomainError or TooManyMerges, having changed
        nothing, when it is refused. The items of what it changed are recorded when it is done
        (flush).

        A refusal may come midway, after the command changed the batch (an alias inside a
        sequence, which is all or nothing; the merge past the bound), and the batch has no
        undo: so a command that can be refused midway is first tried on a trial batch, and
        applied here only once the trial took it whole (then it cannot fail: the same commands
        deciding on the same state)."""
        if self._refusable_midway(cmd):
            self._trial(cmd)._apply_whole(cmd)
        self._apply_whole(cmd)

    def _refusable_midway(self, cmd: Command) -> bool:
        if isinstance(cmd, Sequence):
            if any(isinstance(c, Alias) for c in cmd.commands):
                return True
        elif not isinstance(cmd, TrackEvents) or len(cmd.events) <= MAX_MERGES_PER_REQUEST:
            return False  # (a command that is no sequence names one pair at most)
        return merge_bound(cmd, self.by_anonymous) > MAX_MERGES_PER_REQUEST

    def _apply_whole(self, cmd: Command) -> None:
        self.merges_left = MAX_MERGES_PER_REQUEST
        try:
            self._apply(cmd)
        except BaseException:
            self.pending.clear()
            self.pending_at.clear()
            self.pending_devices.clear()
            raise
        self.flush()

    def _apply(self, cmd: Command) -> None:
        if isinstance(cmd, TrackEvents):
            track(self, cmd)
        elif isinstance(cmd, Identify):
            # a user it creates with a given created_at: its items are dated then too, as the
            # items of a user an event creates are dated at the event's time
            user = identity.resolve(
                self,
                cmd.project_id,
                cmd.anonymous_id,
                cmd.external_id,
                cmd.traits,
                cmd.created_at,
                cmd.created_at,
            )
            self.patch(user, apply_traits(user, cmd.traits))
        elif isinstance(cmd, Alias):
            identity.alias(self, cmd)
        elif isinstance(cmd, Sequence):
            self._apply_each(cmd)
            if cmd.join_list is not None:
                for c in cmd.commands:
                    if isinstance(c, Identify) and c.external_id:
                        user = self.by_external[(cmd.project_id, c.external_id)]
                        self.list_joins.append((cmd.join_list, user))
        elif isinstance(cmd, RemoveDevice):
            remove_device(self, cmd)
        else:
            register_device(self, cmd)

    def _apply_each(self, seq: Sequence) -> None:
        for i, cmd in enumerate(seq.commands):
            try:
                self._apply(cmd)
                self.flush()  # each command's items before the next command's
            except DomainError as exc:
                path = seq.paths[i] if i < len(seq.paths) else f"/{i}{exc.path}"
                raise DomainError(exc.message, path) from exc

    def _trial(self, cmd: Command) -> Batch:
        """A small batch holding copies of what `cmd` can reach: the users and devices behind
        the keys it names (users with their devices, devices with their users) and the message
        ids seen. Commands look nothing else up, so they decide there as they would here. The
        cost grows with the command, not with the batch (a deep copy of it all is far slower)."""
        new_ids = itertools.count(-1, -1)  # never one of a copied user's
        trial = Batch(self.now, lambda: next(new_ids))
        named = load_request([cmd])
        trial.seen_message_ids = {k for k in named.message_ids if k in self.seen_message_ids}
        memo: dict[int, User | Device] = {}
        for keys, source, target in (
            (named.external_ids, self.by_external, trial.by_external),
            (named.anonymous_ids, self.by_anonymous, trial.by_anonymous),
            (named.device_ids, self.devices_by_id, trial.devices_by_id),
            (named.tokens, self.devices_by_token, trial.devices_by_token),
        ):
            for key in keys:  # (not keys & source.keys(): that walks the whole index)
                found = source.get(key)
                if found is not None:
                    target[key] = _clone(found, memo)
        for obj in list(memo.values()):
            if isinstance(obj, User):
                trial.users[obj.id] = obj
            elif isinstance(obj, Device) and not obj.deleted:  # the device cap removes by id
                trial.devices_by_id.setdefault((obj.project_id, obj.device_id), obj)
                if obj.token is not None:
                    trial.devices_by_token.setdefault((obj.project_id, obj.token), obj)
        return trial

    # -- helpers for the rules -----------------------------------------------------------
    def resolve(
        self,
        pid: int,
        anon: str | None,
        ext: str | None,
        traits: Traits | None,
        at: int | None = None,
    ) -> User:
        """identity.resolve, for the rules that cannot import it (devices.py: identity.py
        imports it for the device cap)."""
        return identity.resolve(self, pid, anon, ext, traits, at)

    def touch(self, user: User, changed: bool = True) -> None:
        if user.partial:  # its row is written whole: the plan should have loaded it
            raise NeedsLoad([user.id])
        if changed:
            user.dirty = True
            user.updated_at = self.now

    def patch(self, user: User, changes: dict[str, Any]) -> None:
        """`user`'s profile changed (traits.apply_traits' result): touch it, note the changes."""
        self.touch(user, bool(changes))
        self.note(user, changes)

    def record(self, user: User, name: str, data: dict[str, Any], at: int | None = None) -> None:
        self.recorded += 1
        self.events.append(Event(user, name, data, self.now if at is None else at))

    def note(self, user: User, changes: dict[str, Any]) -> None:
        """Add to what the command in progress changed on `user`, in a user_updated item's
        words: fields with their new values, `anonymous_ids_added`, `data` (changed keys)."""
        if not changes:
            return
        pending = self.pending.setdefault(user, {})
        for key, value in changes.items():
            if key == "data":
                pending.setdefault("data", {}).update(value)
            elif key == "anonymous_ids_added":
                pending.setdefault(key, []).extend(value)
            else:
                pending[key] = value

    def flush(self) -> None:
        """Record the items of the command (or event) just applied: a user_updated for each user
        it changed, then a device_registered for each device whose state (feed.device_state)
        is not the one the feed last showed (after a device_removed of its former id when it
        was renamed), in the order they were first touched. Nothing changed, no item."""
        if self.pending:
            for user, changes in self.pending.items():
                if not user.deleted:
                    self.record(user, USER_UPDATED, changes, self.pending_at.get(user))
            self.pending = {}
            self.pending_at.clear()
        if self.pending_devices:
            for device in self.pending_devices:
                if device.deleted:  # removed (cap, DELETE): its device_removed is recorded already
                    continue
                state, shown = device_state(device), device.shown
                if state == shown:
                    continue
                if shown is not None and shown[1] != device.device_id:
                    # renamed (found by its token): its former id goes, under the user the feed
                    # showed it with; the item stays if that user or this one is merged away
                    gone = {"device_id": shown[1], "reason": REMOVED_RENAMED}
                    self.record(shown[0], DEVICE_REMOVED, gone)
                device.shown = state
                self.record(device.user, DEVICE_REGISTERED, device_data(device))
            self.pending_devices = {}

    def touch_device(self, device: Device, *, moved_only: bool = False) -> None:
        """Mark a device changed. `seq` orders the updates of one batch, which share one time,
        for the cap's "least recently updated". A device that only moved (in a merge) keeps
        its updated_at."""
        if not device.dirty:
            device.dirty = True
            self.touched_devices.append(device)
        self.pending_devices[device] = None
        if moved_only:
            return
        device.updated_at = self.now
        device.seq = self._device_updates
        self._device_updates += 1

    # -- result --------------------------------------------------------------------------
    def _list_joins(self) -> list[tuple[int, int, int]]:
        """Each static list join, for the user it ended in (a user merged away later in the
        batch joins through the user it went into)."""
        out = []
        for list_id, user in self.list_joins:
            while user.deleted and user.id in self.merged_into:
                user = self.merged_into[user.id]
            if not user.deleted:
                out.append((list_id, user.project_id, user.id))
        return out

    def changes(self, request_keys: list[tuple[int, str, str]] | None = None) -> ChangeSet:
        """What the batch changed; `request_keys`: the Idempotency-Keys to record with it."""
        users = list(self.users.values())
        anon_deletes: list[Key] = []
        anon_inserts: list[tuple[int, str, int]] = []
        for key in self.touched_anonymous:
            owner = self.by_anonymous.get(key)
            stored = self.stored_anonymous.get(key)
            if owner is None or owner.id == stored:
                continue
            if stored is not None:
                anon_deletes.append(key)
            anon_inserts.append((key[0], key[1], owner.id))
        if self.merged_into:  # a merged-away user's own items leave the feed (feed.MERGED_AWAY:
            kept = []  # the store does the same for the stored ones); its events go to E
            for event in self.events:
                if event.user.deleted:
                    if event.name in MERGED_AWAY:
                        self.recorded -= 1
                        continue
                    event.user = self.merged_into[event.user.id]
                kept.append(event)
            self.events = kept
        device_deletes = [d.id for d in self.touched_devices if d.stored and d.id is not None]
        device_writes = [d for d in self.touched_devices if not d.deleted]
        return ChangeSet(
            now=self.now,
            new_users=[u for u in users if not u.stored and not u.deleted],
            updated_users=[u for u in users if u.stored and u.dirty and not u.deleted],
            deleted_users=[u for u in users if u.stored and u.deleted],
            event_moves=self.event_moves,
            anonymous_id_deletes=anon_deletes,
            anonymous_id_inserts=anon_inserts,
            device_deletes=device_deletes,
            device_writes=device_writes,
            events=self.events,
            request_keys=request_keys or [],
            list_joins=self._list_joins(),
            client_events=len(self.events) - self.recorded,
            duplicates=self.duplicates,
        )
