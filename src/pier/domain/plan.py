"""What a batch needs loaded, planned from its commands: the keys they name (loaded first), then,
once the store knows who holds those keys, the users to load whole with every anonymous id and
device (`LoadRequest.to_complete`). The plan is complete: the rules never reach a user loaded
short of what they need (`errors.NeedsLoad` says the plan missed one, a bug)."""

from __future__ import annotations

from collections.abc import Iterable

import msgspec

from .commands import (
    Alias,
    Command,
    Identify,
    RegisterDevice,
    RemoveDevice,
    TrackEvents,
    flatten,
)
from .model import User

Key = tuple[int, str]  # (project id, value)
Ids = tuple[int, str | None, str | None]  # (project id, anonymous id, external id)
Node = int | tuple[str, int, str]  # a stored user's id, or an id no stored user holds


class LoadRequest(msgspec.Struct):
    """What a batch names: the store loads the users, ids and devices behind these keys."""

    external_ids: set[Key]
    anonymous_ids: set[Key]
    device_ids: set[Key]
    tokens: set[Key]
    message_ids: set[Key]
    request_keys: set[Key]  # Idempotency-Key headers
    # the keys whose users the commands will likely patch: loaded whole, the others partial
    profile_external_ids: set[Key]
    profile_anonymous_ids: set[Key]
    # the items that decide which users to complete (to_complete): pairs of ids (a pair may
    # link, attach, merge), device registrations, profile changes, anonymous ids named alone
    pairs: list[tuple[int, str, str]] = msgspec.field(default_factory=list)
    devices: list[Ids] = msgspec.field(default_factory=list)
    profiles: list[Ids] = msgspec.field(default_factory=list)
    alone: set[Key] = msgspec.field(default_factory=set)

    def to_complete(self, by_anonymous: dict[Key, User], by_external: dict[Key, User]) -> set[int]:
        """The stored users (among those the keys loaded, in these indexes) to load whole with
        every anonymous id and device, so that no rule needs more.

        Only a pair of ids changes who holds an id: each pair that may change something joins
        its two sides (a stored user, or an id no stored user holds) in a group. Within a group
        the commands may reach any of its stored users, so a group is completed whole when it
        holds a device registration (the device cap counts the user's devices), a pair that
        may merge (the merge moves every id and device), one that may give a stored user its
        external id, or (once the group changed) a profile change. Outside such groups each
        key keeps its stored holder, which the keys' own loading brought (whole for a profile
        key): nothing more is needed."""
        if not self.pairs and not self.devices:
            return set()
        parent: dict[Node, Node] = {}

        def find(node: Node) -> Node:
            while (up := parent.get(node, node)) != node:
                parent[node] = parent.get(up, up)
                node = up
            return node

        def nodes(pid: int, anon: str | None, ext: str | None) -> list[Node]:
            found: list[Node] = []
            if anon:
                user = by_anonymous.get((pid, anon))
                found.append(user.id if user is not None else ("a", pid, anon))
            if ext:
                user = by_external.get((pid, ext))
                found.append(user.id if user is not None else ("e", pid, ext))
            return found

        changed: list[Node] = []  # in groups whose pairs may change who holds an id
        needs: list[Node] = []
        for pid, anon, ext in self.pairs:
            a = by_anonymous.get((pid, anon))
            if a is not None and a.external_id is not None:
                continue  # linked already, or A keeps its id: no change, whatever came before
            x, y = (find(n) for n in nodes(pid, anon, ext))
            if x != y:
                parent[x] = y
            changed.append(y)
            # A without external id: gets this one, or merges; a new anonymous user may merge
            if a is not None or (pid, anon) in self.alone:
                needs.append(y)
        for ids in self.devices:
            needs += nodes(*ids)
        if changed:
            changed_roots = {find(n) for n in changed}
            for ids in self.profiles:
                needs += (n for n in nodes(*ids) if find(n) in changed_roots)
        if not needs:
            return set()
        roots = {find(n) for n in needs}
        users = {u.id for u in (*by_anonymous.values(), *by_external.values())}
        return {uid for uid in users if find(uid) in roots}


def load_request(commands: Iterable[Command]) -> LoadRequest:
    """Every identity key the commands name, and the items `to_complete` reads."""
    commands = flatten(commands)
    req = LoadRequest(set(), set(), set(), set(), set(), set(), set(), set())
    for cmd in commands:
        pid = cmd.project_id
        if isinstance(cmd, TrackEvents):
            external, message_ids = req.external_ids.add, req.message_ids.add
            for ev in cmd.events:
                anon, ext = ev.anonymous_id, ev.external_id
                if ext:
                    external((pid, ext))
                    if ev.traits is not None:
                        req.profile_external_ids.add((pid, ext))
                if anon:
                    req.anonymous_ids.add((pid, anon))
                    if ev.traits is not None:
                        req.profile_anonymous_ids.add((pid, anon))
                    if ext:
                        req.pairs.append((pid, anon, ext))
                    else:
                        req.alone.add((pid, anon))
                if ev.traits is not None:
                    req.profiles.append((pid, anon, ext))
                if ev.message_id:
                    message_ids((pid, ev.message_id))
            continue
        if isinstance(cmd, RemoveDevice):  # the device, whoever holds it (partial users do)
            req.device_ids.add((pid, cmd.device_id))
            continue
        anon, ext = cmd.anonymous_id, cmd.external_id
        profile = not isinstance(cmd, RegisterDevice)
        if ext:
            req.external_ids.add((pid, ext))
            if profile:
                req.profile_external_ids.add((pid, ext))
        if anon:
            req.anonymous_ids.add((pid, anon))
            if profile:
                req.profile_anonymous_ids.add((pid, anon))
            if ext:
                req.pairs.append((pid, anon, ext))
            else:
                req.alone.add((pid, anon))
        if isinstance(cmd, Identify):
            req.profiles.append((pid, anon, ext))
        elif isinstance(cmd, RegisterDevice):
            req.devices.append((pid, anon, ext))
            req.device_ids.add((pid, cmd.device_id))
            if cmd.token:
                req.tokens.add((pid, cmd.token))
        else:
            assert isinstance(cmd, Alias)
    return req
