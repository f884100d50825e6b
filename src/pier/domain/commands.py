"""Commands: what a valid request asks the domain to do. Plain data, already validated."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import msgspec
from msgspec import UNSET, UnsetType


class Traits(msgspec.Struct, kw_only=True):
    """The profile fields of identify. UNSET = left out (keep), None = sent as null (clear)."""

    email: str | None | UnsetType = UNSET
    phone: str | None | UnsetType = UNSET
    timezone: str | None | UnsetType = UNSET  # already canonical
    locale: str | None | UnsetType = UNSET
    data: dict[str, Any] | None | UnsetType = UNSET


class Identify(msgspec.Struct, kw_only=True):
    project_id: int
    anonymous_id: str | None
    external_id: str | None
    traits: Traits
    # when the user was created (epoch ms), if this creates it: Parcelvoy's CSV import sets it
    # (a `created_at` column, docs/lists.md), no identify body does; a user that exists keeps its
    created_at: int | None = None


class Alias(msgspec.Struct, kw_only=True):
    project_id: int
    anonymous_id: str
    external_id: str


class RegisterDevice(msgspec.Struct, kw_only=True):
    project_id: int
    anonymous_id: str | None
    external_id: str | None
    device_id: str
    fields: dict[str, Any]  # os, model, app_build, app_version and os_version when sent
    token: str | None | UnsetType = UNSET
    extra: dict[str, Any] = {}
    replace_extra: bool = False  # `extra` becomes the device's whole extra (?extra=replace)


class RemoveDevice(msgspec.Struct, kw_only=True):
    """DELETE /api/client/devices/{device_id}: the device goes, whoever holds it."""

    project_id: int
    device_id: str


EventData = dict[str, Any] | msgspec.Raw  # Raw: a JSON object as the client sent it


class EventIn(msgspec.Struct):
    anonymous_id: str | None
    external_id: str | None
    name: str
    data: EventData  # stored as is; the domain never reads an event's data
    traits: Traits | None = None  # the event's `user` object
    message_id: str | None = None
    timestamp: int | None = None  # client time, epoch ms, already skew-corrected


class TrackEvents(msgspec.Struct, kw_only=True):
    project_id: int
    events: list[EventIn]


Single = Identify | Alias | RegisterDevice | RemoveDevice | TrackEvents


class Sequence(msgspec.Struct, kw_only=True):
    """The commands of one request (a Segment batch), applied in order, all or nothing."""

    project_id: int
    commands: list[Single]
    # paths[i]: the JSON Pointer a refusal of commands[i] is reported at (default /i + its own)
    paths: list[str] = []
    # a static list that every user the Identify commands name by external id joins, in the
    # same transaction (Parcelvoy's CSV import of a list: docs/lists.md)
    join_list: int | None = None


Command = Single | Sequence


def flatten(commands: Iterable[Command]) -> Iterator[Single]:
    """The commands, with each Sequence replaced by the commands it holds."""
    for cmd in commands:
        if isinstance(cmd, Sequence):
            yield from cmd.commands
        else:
            yield cmd
