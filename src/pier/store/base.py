"""The storage interface: every backend (SQLite, PostgreSQL) implements these methods."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import Protocol

import msgspec

from ..domain.batch import Batch, ChangeSet, LoadRequest
from ..domain.keys import Key, Project
from ..domain.model import User


class StoreUnavailable(Exception):
    """The database cannot be reached or cannot write; the request is answered 503."""


class EventRow(msgspec.Struct):
    id: int
    name: str
    data: msgspec.Raw
    created_at: int
    received_at: int
    message_id: str | None
    user_id: int = 0


class WriteTx(Protocol):
    """One write transaction of the writer: load, then write what the domain decided."""

    async def reserve_user_ids(self, n: int) -> list[int]: ...

    async def load(self, request: LoadRequest, batch: Batch) -> None:
        """Add every user, anonymous id, device and seen message id the request names."""

    async def load_full(self, user_ids: set[int], batch: Batch) -> None:
        """Load every anonymous id and device of these (already loaded) users."""

    async def write(self, changes: ChangeSet) -> None: ...


class Store(Protocol):
    url: str

    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def migrate(self) -> list[int]:
        """Apply pending migrations; returns the versions applied."""

    def transaction(self) -> AbstractAsyncContextManager[WriteTx]: ...
    def is_retryable(self, exc: BaseException) -> bool:
        """A conflict with another process: replaying the batch will succeed."""

    # projects and keys
    async def create_project(self, name: str, now: int) -> Project: ...
    async def list_projects(self) -> list[Project]: ...
    async def get_project(self, project_id: int) -> Project | None: ...
    async def create_key(
        self,
        project_id: int,
        scope: str,
        name: str | None,
        key_hash: str,
        prefix: str,
        value: str | None,
        now: int,
        rate_limit: int | None = None,
    ) -> Key: ...
    async def list_keys(self, project_id: int) -> list[Key]: ...
    async def find_key(self, key_hash: str) -> Key | None: ...
    async def revoke_key(self, key_id: int | None, key_hash: str | None, now: int) -> bool: ...

    # reads
    async def get_user(self, project_id: int, ref: str, by: str) -> User | None:
        """A user with all anonymous ids and devices; `by` is external_id or anonymous_id."""

    async def user_events(
        self, user_id: int, limit: int, before: tuple[int, int] | None
    ) -> list[EventRow]:
        """Newest first by (created_at, id), strictly before the cursor."""

    async def stats(self, project_id: int) -> dict[str, int]:
        """Row counts of the project's users, user_anonymous_ids, devices and events."""
