"""Domain objects: User, Device, Event. The store builds them from rows and writes them back."""

from __future__ import annotations

from typing import Any

import msgspec

PROFILE_FIELDS = ("email", "phone", "timezone", "locale")


class User:
    """A user of a project. `stored` is True when the row exists in the database."""

    __slots__ = (
        "id",
        "project_id",
        "external_id",
        "anonymous_ids",
        "email",
        "phone",
        "timezone",
        "locale",
        "_data",
        "_raw",
        "created_at",
        "updated_at",
        "devices",
        "stored",
        "partial",
        "dirty",
        "deleted",
    )

    def __init__(
        self,
        id: int,
        project_id: int,
        external_id: str | None,
        anonymous_ids: list[str] | None = None,
        *,
        email: str | None = None,
        phone: str | None = None,
        timezone: str | None = None,
        locale: str | None = None,
        data: dict[str, Any] | None = None,
        created_at: int = 0,
        updated_at: int = 0,
        stored: bool = False,
        raw_data: str | bytes | None = None,
        partial: bool = False,
    ) -> None:
        self.id = id
        self.project_id = project_id
        self.external_id = external_id
        # None means "not loaded": the store loads the full list only where a merge may need it.
        self.anonymous_ids = anonymous_ids
        self.email = email
        self.phone = phone
        self.timezone = timezone
        self.locale = locale
        # `data` is decoded from `raw_data` (JSON) on first use: most batches never read it.
        self._data = data if data is not None or raw_data is not None else {}
        self._raw = raw_data
        self.created_at = created_at
        self.updated_at = updated_at
        self.devices: list[Device] | None = None if stored else []
        self.stored = stored
        # A partial user carries its id and external id only: enough to resolve identities and
        # record events. Anything that reads or changes the profile asks for the full row.
        self.partial = partial
        self.dirty = False
        self.deleted = False

    @classmethod
    def partial_of(cls, id: int, project_id: int, external_id: str | None) -> User:
        """A stored user known by its ids only (see `partial`); the loaders' hot path, so
        built without __init__'s keyword handling."""
        user = object.__new__(cls)
        user.id, user.project_id, user.external_id = id, project_id, external_id
        user.anonymous_ids = user.devices = None
        user.email = user.phone = user.timezone = user.locale = user._raw = None
        user._data = None
        user.created_at = user.updated_at = 0
        user.stored = user.partial = True
        user.dirty = user.deleted = False
        return user

    def fill(self, full: User) -> None:
        """Complete a partial user with the profile of `full` (the same user, loaded whole)."""
        for name in ("email", "phone", "timezone", "locale", "_data", "_raw"):
            setattr(self, name, getattr(full, name))
        self.created_at, self.updated_at = full.created_at, full.updated_at
        self.partial = False

    @property
    def data(self) -> dict[str, Any]:
        if self._data is None:
            self._data = msgspec.json.decode(self._raw or b"{}")
            self._raw = None
        return self._data

    @data.setter
    def data(self, value: dict[str, Any]) -> None:
        self._data, self._raw = value, None

    def __repr__(self) -> str:
        return f"User(id={self.id}, external_id={self.external_id!r})"


class Device:
    """A push-notification device; `device_id` and `token` are unique in the project."""

    __slots__ = (
        "id",
        "project_id",
        "user",
        "device_id",
        "token",
        "os",
        "os_version",
        "model",
        "app_build",
        "app_version",
        "extra",
        "created_at",
        "updated_at",
        "stored",
        "dirty",
        "deleted",
        "seq",
        "shown",
    )

    def __init__(
        self,
        id: int | None,
        project_id: int,
        user: User,
        device_id: str,
        *,
        token: str | None = None,
        os: str | None = None,
        os_version: str | None = None,
        model: str | None = None,
        app_build: str | None = None,
        app_version: str | None = None,
        extra: dict[str, Any] | None = None,
        created_at: int = 0,
        updated_at: int = 0,
        stored: bool = False,
    ) -> None:
        self.id = id
        self.project_id = project_id
        self.user = user
        self.device_id = device_id
        self.token = token
        self.os = os
        self.os_version = os_version
        self.model = model
        self.app_build = app_build
        self.app_version = app_version
        self.extra = extra if extra is not None else {}
        self.created_at = created_at
        self.updated_at = updated_at
        self.stored = stored
        self.dirty = False
        self.deleted = False
        self.seq = -1  # order of the last update within the batch (-1: not updated in it)
        # its state as the feed last described it (feed.device_state): set when loaded and when
        # an item is recorded; None for a new device
        self.shown: tuple[Any, ...] | None = None


class Event:
    """An event to store. `user` is resolved to its id when the batch is written."""

    __slots__ = ("user", "name", "data", "created_at", "message_id")

    def __init__(
        self,
        user: User,
        name: str,
        data: dict[str, Any] | msgspec.Raw,
        created_at: int,
        message_id: str | None = None,
    ) -> None:
        self.user = user
        self.name = name
        self.data = data
        self.created_at = created_at
        self.message_id = message_id
