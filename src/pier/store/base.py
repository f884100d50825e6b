"""The storage interface: every backend (SQLite, PostgreSQL) implements these methods."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import Protocol

import msgspec

from ..clock import now_ms
from ..domain.batch import Batch, ChangeSet, LoadRequest
from ..domain.keys import Key, Project
from ..domain.model import User
from ..domain.segments import Rule

PRUNE_EVERY = 600.0  # seconds between two prunings of expired Idempotency-Keys
KEEP_REQUEST_KEYS_MS = 7 * 86_400_000  # an Idempotency-Key is honoured for 7 days


def request_keys_cutoff() -> int:
    """Idempotency-Keys recorded before this time (epoch ms) may be pruned."""
    return now_ms() - KEEP_REQUEST_KEYS_MS


class StoreUnavailable(Exception):
    """The database cannot serve now (unreachable, locked, out of disk); the request is answered
    503 with Retry-After. Each backend raises it only for the errors that say so (its
    `check_unavailable`): any other error is a bug in Pier, answered 500."""


class EventRow(msgspec.Struct):
    id: int
    name: str
    data: msgspec.Raw
    created_at: int
    received_at: int
    message_id: str | None
    user_id: int = 0


class FeedEvent(EventRow):
    """An event of the project feed, with its user's ids as they are when read."""

    external_id: str | None = None
    anonymous_id: str | None = None  # the user's first anonymous id


class Admin(msgspec.Struct):
    """A portal administrator; `password_hash` is an argon2 hash."""

    id: int
    email: str
    password_hash: str
    created_at: int


class AdminSession(msgspec.Struct):
    """A logged-in portal browser: whose it is, its CSRF token, when it ends."""

    admin_id: int
    email: str
    csrf_token: str
    expires_at: int


class WriteTx(Protocol):
    """One write transaction of the writer: load, then write what the domain decided."""

    async def reserve_user_ids(self, n: int) -> list[int]:
        """Ids for up to n new users (a batch creates at most one user per identity item)."""

    async def release_user_ids(self, ids: list[int]) -> None:
        """Give back the ids the batch did not use."""

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
    async def maintain(self) -> None:
        """Called by the writer between batches, for the backend's own upkeep."""

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

    async def segment_members(
        self, project_id: int, rule: Rule, now: int, user_ids: list[int] | None = None
    ) -> list[int]:
        """Ids of the users of the project (or of `user_ids`) who are members of `rule` at
        `now` (ms)."""

    async def stats(self, project_id: int) -> dict[str, int]:
        """Row counts of the project's users, user_anonymous_ids, devices and events."""

    # management reads and deletion (read API, export, portal)
    async def list_users(
        self, project_id: int, limit: int, before: tuple[int, int] | None, q: str | None
    ) -> list[User]:
        """Newest first by (created_at, id), strictly before the cursor, with anonymous ids and
        devices; `q` keeps the users whose external id, anonymous id, email or phone equals it."""

    async def get_user_by_id(self, project_id: int, user_id: int) -> User | None:
        """Like get_user, by Pier's own user id."""

    async def delete_user(self, project_id: int, ref: str, by: str) -> bool:
        """Delete a user with its anonymous ids, devices and events in one write transaction;
        `by` is external_id, anonymous_id or id. False when there is no such user."""

    async def event_feed(self, project_id: int, after: int | None, limit: int) -> list[FeedEvent]:
        """The project's events in storage order (by id), strictly after the event id `after`."""

    async def latest_events(
        self, project_id: int, limit: int, after: int | None = None
    ) -> list[FeedEvent]:
        """The project's newest events, newest first; only those after `after` when given."""

    async def events_per_minute(self, project_id: int, since: int) -> dict[int, int]:
        """Events received since `since` (ms), counted by minute: {minute start ms: count}."""

    # portal admins and sessions
    async def create_admin(self, email: str, password_hash: str, now: int) -> Admin: ...
    async def find_admin(self, email: str) -> Admin | None: ...
    async def list_admins(self) -> list[Admin]: ...
    async def set_admin_password(self, email: str, password_hash: str) -> bool:
        """A new password hash, and every session of that admin ended, in one transaction.
        False when there is no such admin."""

    async def delete_admin(self, email: str) -> bool:
        """Remove the admin and end their sessions, in one transaction. False when unknown."""

    async def create_session(
        self, token_hash: str, admin_id: int, csrf_token: str, now: int, expires_at: int
    ) -> None:
        """Store a session (and drop the expired ones)."""

    async def get_session(self, token_hash: str, now: int) -> AdminSession | None:
        """The live session with this token hash, or None."""

    async def delete_session(self, token_hash: str) -> None: ...
