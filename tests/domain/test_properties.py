"""Property tests: random command sequences over small id pools keep the identity and device
invariants, and applying them in one batch or one batch per command (state carried by a tiny
in-memory store, loading the way the stores do: partial users, then those the plan completes)
ends in the same place. Every batch goes through the writer's own plan and decide
(domain/decide.py); a user the plan failed to complete raises NeedsLoad, which nothing
catches, so every example also checks that the plan is complete."""

from __future__ import annotations

import itertools
from collections import Counter
from typing import Any

import msgspec
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st
from msgspec import UNSET, UnsetType

from pier.domain.batch import Batch, ChangeSet
from pier.domain.commands import (
    Alias,
    Command,
    EventIn,
    Identify,
    RegisterDevice,
    TrackEvents,
    Traits,
)
from pier.domain.decide import decide, plan
from pier.domain.devices import MAX_DEVICES_PER_USER
from pier.domain.errors import DomainError
from pier.domain.feed import MERGED_AWAY
from pier.domain.model import Device, User
from pier.domain.plan import LoadRequest
from support.feed import rebuild, without_nulls

PID = 1
NOW = 1_800_000_000_000
EXT = ["e0", "e1", "e2", "e3"]
ANON = ["a0", "a1", "a2", "a3", "a4"]
DEVICE_IDS = ["d0", "d1", "d2"]
TOKENS = ["t0", "t1", "t2"]
FIELDS = {"os": "ios", "model": "m", "app_build": "1", "app_version": "1.0"}

PROPS = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
REPLAY = settings(PROPS, max_examples=150)  # each example commits up to 12 batches

# -- strategies ----------------------------------------------------------------------------
id_pair = st.tuples(st.sampled_from([None, *ANON]), st.sampled_from([None, *EXT])).filter(
    lambda pair: pair != (None, None)
)
small_data = st.dictionaries(st.sampled_from(["k", "j"]), st.integers(0, 2), max_size=2)
traits = st.builds(
    Traits,
    email=st.sampled_from([UNSET, None, "x@example.com", "y@example.com"]),
    phone=st.sampled_from([UNSET, None, "+14155552671", "bad"]),
    timezone=st.sampled_from([UNSET, None, "UTC", "Europe/Paris"]),
    locale=st.sampled_from([UNSET, None, "en"]),
    data=st.one_of(st.just(UNSET), st.none(), small_data),
)


@st.composite
def identify_cmd(draw: st.DrawFn) -> Identify:
    anon, ext = draw(id_pair)
    return Identify(project_id=PID, anonymous_id=anon, external_id=ext, traits=draw(traits))


@st.composite
def alias_cmd(draw: st.DrawFn) -> Alias:
    anon, ext = draw(st.sampled_from(ANON)), draw(st.sampled_from(EXT))
    return Alias(project_id=PID, anonymous_id=anon, external_id=ext)


@st.composite
def device_cmd(draw: st.DrawFn) -> RegisterDevice:
    anon, ext = draw(id_pair)
    return RegisterDevice(
        project_id=PID,
        anonymous_id=anon,
        external_id=ext,
        device_id=draw(st.sampled_from(DEVICE_IDS)),
        fields=dict(FIELDS),
        token=draw(st.sampled_from([UNSET, None, *TOKENS])),
        extra=draw(small_data),
    )


@st.composite
def event_in(draw: st.DrawFn) -> EventIn:
    anon, ext = draw(id_pair)
    return EventIn(
        anonymous_id=anon,
        external_id=ext,
        name=draw(st.sampled_from(["open", "buy"])),
        data={},
        traits=draw(st.none() | traits),
        message_id=draw(st.sampled_from([None, None, "m0", "m1"])),
    )


@st.composite
def track_cmd(draw: st.DrawFn) -> TrackEvents:
    return TrackEvents(project_id=PID, events=draw(st.lists(event_in(), min_size=1, max_size=3)))


commands = st.lists(
    st.one_of(identify_cmd(), alias_cmd(), device_cmd(), track_cmd()), min_size=1, max_size=12
)


def register(
    device_id: str, anon: str | None, ext: str | None, token: str | None | UnsetType
) -> RegisterDevice:
    return RegisterDevice(
        project_id=PID,
        anonymous_id=anon,
        external_id=ext,
        device_id=device_id,
        fields=dict(FIELDS),
        token=token,
    )


def fresh_batch(now: int = NOW) -> Batch:
    ids = itertools.count(1)
    anon = itertools.count(1)
    return Batch(now, lambda: next(ids), lambda: f"gen-{next(anon)}")


def apply_all(batch: Batch, cmds: list[Command]) -> list[Exception | None]:
    """Decide the commands over `batch` (fresh: nothing stored), as the writer does."""
    return decide(plan(cmds), batch)[0]


def named_anons(cmd: Command, seen_messages: set[str]) -> list[str]:
    """The anonymous ids a command resolves (an event with a message id seen before is skipped)."""
    if not isinstance(cmd, TrackEvents):
        return [cmd.anonymous_id] if cmd.anonymous_id else []
    out = []
    for ev in cmd.events:
        if ev.message_id is not None:
            if ev.message_id in seen_messages:
                continue
            seen_messages.add(ev.message_id)
        if ev.anonymous_id:
            out.append(ev.anonymous_id)
    return out


# -- invariants of one batch ---------------------------------------------------------------
def check_batch(b: Batch) -> None:
    live = [u for u in b.users.values() if not u.deleted]
    # Each anonymous id belongs to exactly one live user, and the index agrees.
    owned = Counter(anon for u in live for anon in u.anonymous_ids or ())
    assert all(n == 1 for n in owned.values()), owned
    for (_, anon), u in b.by_anonymous.items():
        assert not u.deleted, f"anonymous id {anon} points to deleted {u}"
        assert u.anonymous_ids is not None and anon in u.anonymous_ids
    assert set(owned) == {anon for _, anon in b.by_anonymous}
    # External ids are unique among live users; the index points to live users.
    exts = [u.external_id for u in live if u.external_id is not None]
    assert len(exts) == len(set(exts)), exts
    for (_, ext), u in b.by_external.items():
        assert not u.deleted and u.external_id == ext
    assert set(exts) == {ext for _, ext in b.by_external}
    # Devices: a token on one device at most; every device on a live user's list.
    devices = list(b.devices_by_id.values())
    held = [d.token for d in devices if d.token is not None]
    assert len(held) == len(set(held)), held
    for (_, token), d in b.devices_by_token.items():
        assert d.token == token and b.devices_by_id[(PID, d.device_id)] is d
    for (_, device_id), d in b.devices_by_id.items():
        assert d.device_id == device_id and not d.deleted
        assert not d.user.deleted, f"device {device_id} on deleted {d.user}"
        assert d.user.devices is not None and d in d.user.devices
    for u in live:
        assert u.devices is not None
        for d in u.devices:
            assert d.user is u and b.devices_by_id[(PID, d.device_id)] is d
        assert len(u.devices) <= MAX_DEVICES_PER_USER
    # Events belong to live users (those of a merged user go to the user it went into, its own
    # items leave with it); every live user got its user_created.
    c = b.changes()
    for ev in c.events:
        assert not ev.user.deleted, f"event {ev.name} on deleted {ev.user}"
    assert sum(ev.name == "user_created" for ev in c.events) == len(live)
    created = {id(ev.user) for ev in c.events if ev.name == "user_created"}
    assert all(id(u) in created for u in live)
    # The change set says the same (a fresh batch: every user is new).
    assert {u.id for u in c.new_users} == {u.id for u in live}
    assert c.updated_users == c.deleted_users == c.event_moves == c.anonymous_id_deletes == []
    inserts = [(anon, uid) for _, anon, uid in c.anonymous_id_inserts]
    assert sorted(inserts) == sorted((a, u.id) for u in live for a in u.anonymous_ids or ())


@PROPS
@given(commands)
def test_one_batch_keeps_the_invariants(cmds: list[Command]) -> None:
    b = fresh_batch()
    errors = apply_all(b, cmds)
    check_batch(b)
    seen: set[str] = set()
    for cmd, error in zip(cmds, errors, strict=True):
        if error is None:  # every anonymous id a successful command named is owned
            for anon in named_anons(cmd, seen):
                assert (PID, anon) in b.by_anonymous
        else:
            assert isinstance(cmd, Alias) and isinstance(error, DomainError)
            assert error.path == "/anonymous_id"


# -- a tiny in-memory store ----------------------------------------------------------------
_enc = msgspec.json.encode
_dec = msgspec.json.decode


class MemoryStore:
    """Rows as the SQLite store keeps them, loaded into a Batch the way the stores load them, and
    written from a ChangeSet in SqlTx.write's order with its unique constraints checked."""

    USER_FIELDS = ("external_id", "email", "phone", "timezone", "locale")
    DEVICE_FIELDS = ("device_id", "token", "os", "os_version", "model", "app_build", "app_version")

    def __init__(self) -> None:
        self.users: dict[int, dict[str, Any]] = {}
        self.anon: dict[str, int] = {}  # anonymous id -> user id, in row order
        self.devices: dict[int, dict[str, Any]] = {}  # row id -> row
        self.events: list[list[Any]] = []  # [user id, name, message id, data, event id]
        self._user_ids = itertools.count(1)
        self._device_ids = itertools.count(1)
        self._anon_ids = itertools.count(1)
        self._event_ids = itertools.count(1)
        self.completed: list[set[int]] = []  # the users each load completed

    def new_user_id(self) -> int:
        return next(self._user_ids)

    def new_anonymous_id(self) -> str:
        return f"gen-{next(self._anon_ids)}"

    # -- load --------------------------------------------------------------------------------
    def _user(self, uid: int) -> User:
        row = self.users[uid]
        fields = {k: row[k] for k in self.USER_FIELDS[1:]}
        return User(
            uid, PID, row["external_id"], None, data=_dec(row["data"]), stored=True, **fields
        )

    def _device(self, did: int, owner: User) -> Device:
        row = self.devices[did]
        fields = {k: row[k] for k in self.DEVICE_FIELDS[1:]}
        return Device(
            did,
            PID,
            owner,
            row["device_id"],
            extra=_dec(row["extra"]),
            updated_at=row["updated_at"],
            stored=True,
            **fields,
        )

    def load(self, req: LoadRequest, b: Batch) -> None:
        """As store/loading.py loads: the users the keys name (whole for a profile key, else
        partial), the devices, the seen message ids; then the users the plan completes."""
        ext_owner = {row["external_id"]: uid for uid, row in self.users.items()}
        for whole in (True, False):  # whole rows first: a user named by several keys is one
            for _, ext in req.profile_external_ids if whole else req.external_ids:
                uid = ext_owner.get(ext)
                if uid is not None and whole:
                    b.add_user(b.users.get(uid) or self._user(uid))
                elif uid is not None:
                    b.add_partial(uid, PID, ext)
            for _, anon in req.profile_anonymous_ids if whole else req.anonymous_ids:
                uid = self.anon.get(anon)
                if uid is not None and whole:
                    b.add_user(b.users.get(uid) or self._user(uid), (anon,))
                elif uid is not None:
                    b.add_partial(uid, PID, self.users[uid]["external_id"], anon)
        for column, keys in (("device_id", req.device_ids), ("token", req.tokens)):
            wanted = {v for _, v in keys}
            for did, row in self.devices.items():
                if row[column] not in wanted:
                    continue
                if row["user_id"] not in b.users:
                    b.add_user(self._user(row["user_id"]))
                if (PID, row["device_id"]) not in b.devices_by_id:
                    b.add_device(self._device(did, b.users[row["user_id"]]))
        stored_messages = {m for _, _, m, _, _ in self.events if m is not None}
        b.add_seen_message_ids(PID, (m for _, m in req.message_ids if m in stored_messages))
        self.complete(req.to_complete(b.by_anonymous, b.by_external), b)

    def complete(self, user_ids: set[int], b: Batch) -> None:
        self.completed.append(user_ids)
        for uid in user_ids:
            user = b.users[uid]
            if user.partial:
                user.fill(self._user(uid))
            user.anonymous_ids = [a for a, owner in self.anon.items() if owner == uid]
            b.add_user(user, user.anonymous_ids)
            user.devices = []
        for did, row in self.devices.items():
            if row["user_id"] not in user_ids:
                continue
            known = b.devices_by_id.get((PID, row["device_id"]))
            if known is None:
                b.add_device(self._device(did, b.users[row["user_id"]]))
            elif known.user.devices is not None and known not in known.user.devices:
                known.user.devices.append(known)

    # -- write -------------------------------------------------------------------------------
    def _check_unique(self) -> None:
        exts = [r["external_id"] for r in self.users.values() if r["external_id"] is not None]
        assert len(exts) == len(set(exts)), f"UNIQUE users.external_id: {exts}"
        for column in ("device_id", "token"):
            values = [r[column] for r in self.devices.values() if r[column] is not None]
            assert len(values) == len(set(values)), f"UNIQUE devices.{column}: {values}"

    def write(self, c: ChangeSet) -> None:
        for u in c.new_users:
            assert u.id not in self.users, f"user {u.id} inserted twice"
            self.users[u.id] = self._user_row(u)
        self._check_unique()
        for did in c.device_deletes:
            self.devices.pop(did, None)
        for _, anon in c.anonymous_id_deletes:
            self.anon.pop(anon, None)
        for _, anon, uid in c.anonymous_id_inserts:
            assert anon not in self.anon, f"UNIQUE user_anonymous_ids: {anon}"
            self.anon[anon] = uid
        for d in c.device_writes:
            did = d.id if d.id is not None else next(self._device_ids) + 1_000_000
            assert did not in self.devices, f"device row {did} inserted twice"
            self.devices[did] = {
                **{k: getattr(d, k) for k in self.DEVICE_FIELDS},
                "user_id": d.user.id,
                "extra": _enc(d.extra),
                "updated_at": d.updated_at,
            }
            self._check_unique()
        for frm, to in c.event_moves:  # the merged user's own items go, its events move
            self.events = [ev for ev in self.events if ev[0] != frm or ev[1] not in MERGED_AWAY]
            for ev in self.events:
                if ev[0] == frm:
                    ev[0] = to
        for u in c.updated_users:
            assert u.id in self.users, f"update of missing user {u.id}"
            self.users[u.id] = self._user_row(u)
            self._check_unique()
        for ev in c.events:
            assert ev.message_id is None or all(ev.message_id != m for _, _, m, _, _ in self.events)
            row = [ev.user.id, ev.name, ev.message_id, _dec(_enc(ev.data)), next(self._event_ids)]
            self.events.append(row)
        for u in c.deleted_users:
            del self.users[u.id]
        # What SQLite does not enforce (no foreign keys) must still hold.
        for anon, uid in self.anon.items():
            assert uid in self.users, f"anonymous id {anon} on missing user {uid}"
        for row in self.devices.values():
            assert row["user_id"] in self.users, f"device {row['device_id']} on missing user"
        for uid, name, _, _, _ in self.events:
            assert uid in self.users, f"event {name} on missing user {uid}"
        assert set(self.users) <= set(self.anon.values()), "a user without anonymous id"

    def _user_row(self, u: User) -> dict[str, Any]:
        return {**{k: getattr(u, k) for k in self.USER_FIELDS}, "data": _enc(u.data)}

    # -- a batch, as the writer runs it ------------------------------------------------------
    def run_batch(self, cmds: list[Command], now: int) -> list[Exception | None]:
        """Plan, load, decide and write, like Writer.run_batch (domain/decide.py)."""
        planned = plan(cmds)
        b = Batch(now, self.new_user_id, self.new_anonymous_id)
        self.load(planned.request, b)
        errors, changes = decide(planned, b)
        self.write(changes)
        return errors

    # -- what we compare -----------------------------------------------------------------------
    def identity(self) -> tuple[dict[str, str | None], set[str]]:
        """Anonymous id (of the pool) -> external id of its owner, and the external ids."""
        mapping = {a: self.users[uid]["external_id"] for a, uid in self.anon.items() if a in ANON}
        exts = {r["external_id"] for r in self.users.values() if r["external_id"] is not None}
        return mapping, exts

    def _sig(self, uid: int) -> tuple[str | None, frozenset[str]]:
        # Every live user has an external id or an anonymous id of the pool: a stable name.
        pool = frozenset(a for a, owner in self.anon.items() if owner == uid and a in ANON)
        return self.users[uid]["external_id"], pool

    def anonymous_ids(self, uid: int) -> list[str]:
        """The user's anonymous ids in row order (the first is its `anonymous_id`)."""
        return [a if a in ANON else "gen" for a, owner in self.anon.items() if owner == uid]

    def world(self) -> dict[str, Any]:
        """Everything but row ids and generated ids: users, profiles, devices, events."""
        users = {}
        for uid, row in self.users.items():
            data = _dec(row["data"])
            fields = {k: row[k] for k in self.USER_FIELDS}
            users[self._sig(uid)] = (fields, data, self.anonymous_ids(uid))
        devices = {
            r["device_id"]: (self._sig(r["user_id"]), r["token"], _dec(r["extra"]))
            for r in self.devices.values()
        }
        events = Counter((self._sig(uid), name) for uid, name, _, _, _ in self.events)
        return {"users": users, "devices": devices, "events": events}

    def rebuilt(self) -> tuple[dict[int, dict], dict[str, dict]]:
        """Users and devices as the rows hold them, in the shape tests.support.feed.rebuild
        gives."""
        users = {
            uid: {
                **{k: row[k] for k in self.USER_FIELDS},
                "anonymous_ids": [a for a, owner in self.anon.items() if owner == uid],
                "data": without_nulls(_dec(row["data"])),
            }
            for uid, row in self.users.items()
        }
        devices = {
            r["device_id"]: {
                **{k: r[k] for k in self.DEVICE_FIELDS},
                "extra": _dec(r["extra"]),
                "user_id": r["user_id"],
            }
            for r in self.devices.values()
        }
        return users, devices

    def feed(self, after: int = 0) -> list[dict[str, Any]]:
        """The items past the event id `after`, as the feed gives them now."""
        return [
            {"user_id": uid, "name": name, "data": data, "id": eid}
            for uid, name, _, data, eid in self.events
            if eid > after
        ]


def run_one_batch(cmds: list[Command]) -> tuple[MemoryStore, list[Exception | None]]:
    store = MemoryStore()
    return store, store.run_batch(cmds, NOW)


def run_batch_per_command(cmds: list[Command]) -> tuple[MemoryStore, list[Exception | None]]:
    store = MemoryStore()
    errors = [store.run_batch([cmd], NOW + i)[0] for i, cmd in enumerate(cmds)]
    return store, errors


def run_in_chunks(
    cmds: list[Command], cuts: list[int]
) -> tuple[MemoryStore, list[Exception | None]]:
    """Batches of several commands each, split before the indexes in `cuts`."""
    store = MemoryStore()
    bounds = [0, *sorted({c % len(cmds) for c in cuts} - {0}), len(cmds)]
    errors: list[Exception | None] = []
    for i, (lo, hi) in enumerate(itertools.pairwise(bounds)):
        errors += store.run_batch(cmds[lo:hi], NOW + i)
    return store, errors


@REPLAY
@given(commands)
def test_one_batch_or_one_per_command_same_identities(cmds: list[Command]) -> None:
    one, errors_one = run_one_batch(cmds)
    many, errors_many = run_batch_per_command(cmds)
    assert one.identity() == many.identity()
    assert [e is None for e in errors_one] == [e is None for e in errors_many]


@REPLAY
@given(commands)
@example(  # the minimal case found: the order of a merged user's anonymous ids
    [
        Identify(project_id=PID, anonymous_id="a1", external_id=None, traits=Traits()),
        Identify(project_id=PID, anonymous_id=None, external_id="e3", traits=Traits()),
        Alias(project_id=PID, anonymous_id="a1", external_id="e3"),
    ]
)
def test_one_batch_or_one_per_command_same_world(cmds: list[Command]) -> None:
    one, _ = run_one_batch(cmds)
    many, _ = run_batch_per_command(cmds)
    assert one.world() == many.world()


@REPLAY
@given(commands, st.lists(st.integers(0, 11), max_size=3))
@example(  # the same case, split as [first] [second, third]
    [
        Identify(project_id=PID, anonymous_id="a1", external_id=None, traits=Traits()),
        Identify(project_id=PID, anonymous_id=None, external_id="e3", traits=Traits()),
        Alias(project_id=PID, anonymous_id="a1", external_id="e3"),
    ],
    [1],
)
def test_one_batch_or_a_few_batches_same_world(cmds: list[Command], cuts: list[int]) -> None:
    # Batches of several commands over stored rows: here NeedsLoad and partial loads matter.
    one, errors_one = run_one_batch(cmds)
    chunked, errors_chunked = run_in_chunks(cmds, cuts)
    assert one.world() == chunked.world()
    assert [e is None for e in errors_one] == [e is None for e in errors_chunked]


@REPLAY
@given(commands, st.lists(st.integers(0, 11), max_size=3))
@example(  # a merge of a user created in an earlier batch
    [
        Identify(project_id=PID, anonymous_id="a1", external_id=None, traits=Traits(email="x")),
        Identify(project_id=PID, anonymous_id=None, external_id="e3", traits=Traits()),
        Alias(project_id=PID, anonymous_id="a1", external_id="e3"),
    ],
    [1],
)
def test_the_items_alone_rebuild_the_users_and_devices(
    cmds: list[Command], cuts: list[int]
) -> None:
    # What a destination relies on: the feed's items, read after the fact, give the state the
    # rows hold; however the commands were batched. (Under the device cap, which has no item.)
    for store, _ in (run_one_batch(cmds), run_in_chunks(cmds, cuts)):
        users, devices = rebuild(store.feed())
        for user in users.values():
            user["data"] = without_nulls(user["data"])
        assert (users, devices) == store.rebuilt()


@REPLAY
@given(commands)
def test_a_consumer_following_the_feed_rebuilds_the_same(cmds: list[Command]) -> None:
    # A destination reads the items as they come: those of a user later merged away still name
    # it (user_merged tells it to drop that user).
    store = MemoryStore()
    seen: list[dict[str, Any]] = []
    for i, cmd in enumerate(cmds):
        store.run_batch([cmd], NOW + i)
        seen += store.feed(seen[-1]["id"] if seen else 0)
    users, devices = rebuild(seen)
    for user in users.values():
        user["data"] = without_nulls(user["data"])
    assert (users, devices) == store.rebuilt()


@PROPS
@given(commands)
def test_a_request_that_changes_nothing_adds_no_item(cmds: list[Command]) -> None:
    store = MemoryStore()
    for i, cmd in enumerate(cmds):
        store.run_batch([cmd], NOW + 2 * i)
        if isinstance(cmd, (Identify, RegisterDevice, Alias)):
            before = len(store.events)
            store.run_batch([cmd], NOW + 2 * i + 1)  # the same again
            assert store.feed()[before:] == []


def test_the_plan_completes_the_user_an_anonymous_id_was_just_linked_to() -> None:
    # E is stored with a device; in one batch a1 is aliased to E, then a device registers for
    # a1: the device goes to E, under the cap, so E comes whole with its devices in the load.
    store = MemoryStore()
    store.run_batch(
        [Identify(project_id=PID, anonymous_id=None, external_id="e1", traits=Traits())], NOW
    )
    store.run_batch([register("d0", None, "e1", "t0")], NOW + 1)
    [e_id] = [uid for uid, row in store.users.items() if row["external_id"] == "e1"]
    cmds: list[Command] = [
        Alias(project_id=PID, anonymous_id="a1", external_id="e1"),
        register("d1", "a1", None, UNSET),
    ]
    store.completed.clear()
    assert store.run_batch(cmds, NOW + 2) == [None, None]
    assert store.completed == [{e_id}]
    assert sorted(r["device_id"] for r in store.devices.values() if r["user_id"] == e_id) == [
        "d0",
        "d1",
    ]
    assert store.anon["a1"] == e_id


def test_the_plan_completes_no_one_when_no_id_changes_hands() -> None:
    # Events and identify calls naming ids already linked: every key keeps its stored user,
    # nothing beyond the keys' own rows is loaded.
    store = MemoryStore()
    store.run_batch(
        [Identify(project_id=PID, anonymous_id="a1", external_id="e1", traits=Traits())], NOW
    )
    store.completed.clear()
    again: list[Command] = [
        Identify(project_id=PID, anonymous_id="a1", external_id="e1", traits=Traits(email="x")),
        TrackEvents(project_id=PID, events=[EventIn("a1", "e1", "open", {})]),
        TrackEvents(project_id=PID, events=[EventIn("a1", None, "open", {})]),
    ]
    assert store.run_batch(again, NOW + 1) == [None, None, None]
    assert store.completed == [set()]


# -- the device cap: enough device ids to reach it -----------------------------------------
MANY_DEVICES = [f"d{i}" for i in range(MAX_DEVICES_PER_USER + 5)]


USERS = [("a0", None)] * 7 + [(None, "e0"), ("a0", "e0"), ("a1", None)]


@st.composite
def busy_commands(draw: st.DrawFn) -> list[Command]:
    """Every device id once (mostly for one user), plus a few re-registrations: over the cap."""
    device_ids = list(draw(st.permutations(MANY_DEVICES)))
    for _ in range(draw(st.integers(0, 8))):
        position = draw(st.integers(0, len(device_ids)))
        device_ids.insert(position, draw(st.sampled_from(MANY_DEVICES)))
    cmds: list[Command] = []
    for device_id in device_ids:
        anon, ext = draw(st.sampled_from(USERS))
        token = draw(st.sampled_from([UNSET] * 6 + [None, *TOKENS]))
        cmds.append(register(device_id, anon, ext, token))
    return cmds


# No shrinking: these examples are long and shrinking them takes minutes; the minimal case is
# test_domain_devices.py::test_cap_in_one_batch_spares_a_device_updated_later_in_the_batch.
@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
)
@given(busy_commands())
@example(  # 25 devices, the first one registered again, then one more
    [register(d, "a0", None, UNSET) for d in [*MANY_DEVICES[:25], "d0", "d25"]]
)
def test_device_cap_keeps_the_invariants_and_does_not_depend_on_batching(
    cmds: list[Command],
) -> None:
    b = fresh_batch()
    apply_all(b, cmds)
    check_batch(b)
    one, _ = run_one_batch(cmds)
    many, _ = run_batch_per_command(cmds)
    assert one.world()["devices"] == many.world()["devices"]
