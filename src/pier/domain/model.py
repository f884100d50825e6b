"""Domain objects: User, Device, Event. The store builds them from rows and writes them back."""

from __future__ import annotations

from typing import Any

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
        "data",
        "created_at",
        "updated_at",
        "devices",
        "stored",
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
        self.data = data if data is not None else {}
        self.created_at = created_at
        self.updated_at = updated_at
        self.devices: list[Device] | None = None if stored else []
        self.stored = stored
        self.dirty = False
        self.deleted = False

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


class Event:
    """An event to store. `user` is resolved to its id when the batch is written."""

    __slots__ = ("user", "name", "data", "created_at", "message_id")

    def __init__(
        self,
        user: User,
        name: str,
        data: dict[str, Any],
        created_at: int,
        message_id: str | None = None,
    ) -> None:
        self.user = user
        self.name = name
        self.data = data
        self.created_at = created_at
        self.message_id = message_id
