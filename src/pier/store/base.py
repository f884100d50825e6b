"""The storage interface: every backend (SQLite, PostgreSQL) implements these methods."""

from __future__ import annotations

import os
import random
import socket
from contextlib import AbstractAsyncContextManager
from typing import NamedTuple, Protocol

import msgspec

from ..clock import now_ms
from ..domain.batch import Batch, ChangeSet
from ..domain.keys import Key, Project
from ..domain.model import User
from ..domain.plan import LoadRequest
from ..domain.segments import Rule

PRUNE_EVERY = 600.0  # seconds between two prunings of expired Idempotency-Keys
KEEP_REQUEST_KEYS_MS = 7 * 86_400_000  # an Idempotency-Key is honoured for 7 days


def request_keys_cutoff() -> int:
    """Idempotency-Keys recorded before this time (epoch ms) may be pruned."""
    return now_ms() - KEEP_REQUEST_KEYS_MS


def lease_holder() -> str:
    """A name for the leases a process takes (destinations, lists): host, pid and a random part,
    so that a restarted process (same pid in a container) is another holder."""
    return f"{socket.gethostname()}:{os.getpid()}:{random.getrandbits(32):08x}"


class Start(NamedTuple):
    """What a backfill's snapshot gives the lists' cache of a user (Store.compute_tallies):
    the tally of its events as Evaluator.hits gives it (event wrapper, instant), and for a
    rule that reads the user, what its document decides (Evaluator.known) and its facts
    (Evaluator.facts), so that its first events need no read of the document either."""

    hits: list[tuple[int, int]]
    known: bool | None = None
    facts: int | None = None


Tallies = dict[int, Start]  # by user id


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


class ListRow(msgspec.Struct):
    """A list (docs/lists.md). `rule` is the tree's JSON text as received (None: static);
    `users_count` is counted when read; `failures`, `error` and `failed_at`: the backfills of
    this version that failed in a row, the last one's error and when (0, None, None: none)."""

    id: int
    project_id: int
    name: str
    type: str
    rule: str | None
    state: str
    progress: float | None
    published: bool
    version: int
    created_at: int
    updated_at: int
    users_count: int
    failures: int = 0
    error: str | None = None
    failed_at: int | None = None


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
        """Add every user, anonymous id, device, seen message id and Idempotency-Key the
        request names, then complete the users it says to (`request.to_complete`)."""

    async def write(self, changes: ChangeSet) -> None: ...


class Store(Protocol):
    url: str
    # whether a write transaction runs without ever suspending the writer's task (SQLite's
    # waits on the event loop, in the writer process): then the writer gives the loop a turn
    # after each batch, else the batch's answers would wait for the next batches
    never_suspends: bool
    # whether each statement is a round trip to a database server (PostgreSQL): a batch then
    # costs a few of them however small it is, so the writer process's frames go out only at
    # the end of each turn of the loop, gathering as many requests as came (writerproc)
    remote: bool

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

    # lists (docs/lists.md)
    async def create_list(
        self,
        project_id: int,
        name: str,
        type: str,
        rule: str | None,
        now: int,
        holder: str | None = None,
        until: int | None = None,
    ) -> ListRow:
        """A new list: a dynamic one in state loading (to be computed), a static one draft.
        `holder`: the process that will compute it, holding its lease until `until` from the
        start, so that no other process takes it up before (pier.lists.create)."""

    async def get_list(self, project_id: int, list_id: int) -> ListRow | None: ...
    async def lists(self, project_id: int) -> list[ListRow]: ...
    async def loading_lists(self, now: int) -> list[ListRow]:
        """Every list of every project whose members are still to be computed and that no
        process is computing: no lease, or one expired at `now`."""

    async def claim_list(self, row: ListRow, holder: str, now: int, ttl_ms: int) -> bool:
        """Take (or renew) the lease of computing this version of a loading list, until now +
        ttl_ms: False when another holder's lease is live, or the list moved on (a newer
        version, computed, deleted)."""

    async def release_list(self, list_id: int, holder: str) -> None:
        """Give back the lease of computing a list, if `holder` has it."""

    async def fail_list(
        self, row: ListRow, holder: str, error: str, now: int, retry_at: int
    ) -> None:
        """Note that `holder`'s backfill of this version failed at `now` with `error`; it keeps
        the lease until `retry_at`, when another process (or this one) may try again. Nothing
        when the lease is no longer `holder`'s or a newer version was asked for."""

    async def list_progress(
        self, row: ListRow, holder: str, progress: float, now: int, ttl_ms: int
    ) -> bool:
        """Note a backfill's progress (0..1) and renew its lease; False (nothing written) when
        the lease is no longer `holder`'s or a newer version was asked for."""

    async def user_count(self, project_id: int) -> int:
        """How many users the project has."""

    async def user_chunks(self, project_id: int, size: int) -> tuple[list[tuple[int, int]], int]:
        """The chunks of a backfill: (id, rank) of every `size`-th user of the project by id
        (each ends a chunk; the last chunk has no end), and how many users it has. On SQLite,
        where each chunk scans the project's events, chunks grow so that there are at most 10
        (SqliteStore.max_chunks)."""

    async def user_lists(self, project_id: int, user_id: int) -> list[ListRow]: ...
    async def update_list(
        self, project_id: int, list_id: int, name: str, published: bool, now: int
    ) -> ListRow | None:
        """A new name and published flag (a computed list's state follows published)."""

    async def restart_list(
        self,
        project_id: int,
        list_id: int,
        rule: str | None,
        now: int,
        holder: str | None = None,
        until: int | None = None,
    ) -> ListRow | None:
        """Ask for the members to be computed again (with a new rule, unless None): a new
        version, state loading, its failures cleared, its lease `holder`'s until `until` (as
        create_list). The computation is the caller's (`pier.lists`)."""

    async def delete_list(self, project_id: int, list_id: int) -> bool:
        """The list and its members, in one transaction; False when there is no such list."""

    async def list_members(
        self, project_id: int, list_id: int, limit: int, before: tuple[int, int] | None
    ) -> list[User]:
        """Members newest first by (created_at, id), as list_users pages them."""

    async def user_ids(self, project_id: int, external_ids: list[str]) -> dict[str, int]:
        """{external id: user id} of those of the project's users that exist."""

    async def change_members(
        self, project_id: int, list_id: int, add: list[int], remove: list[int], now: int
    ) -> None:
        """Add and remove members (static lists), in one transaction."""

    async def compute_members(
        self, project_id: int, rule: Rule, now: int, ids: tuple[int, int | None] | None = None
    ) -> list[int]:
        """segment_members for a backfill (a chunk of it: the users whose ids are in `ids`,
        after, up to): on SQLite on a connection and thread of its own, so that the event loop
        goes on serving meanwhile."""

    async def compute_tallies(
        self, project_id: int, rule: Rule, now: int, ids: tuple[int, int | None]
    ) -> Tallies | None:
        """For a backfill's chunk, when this store keeps the lists' cache (SQLite) and the
        rule can be tallied: by user id, each user's Start (its tally as `Evaluator.hits`,
        and when the rule reads the user what its document says), of the users with events
        it counts, and of every user of the chunk when the rule reads the user; else None."""

    async def warm_list(self, row: ListRow, now: int, mark: int, tallies: Tallies) -> bool:
        """Start the lists' cache (SQLite) with a computed list's users' tallies, computed at
        `now` from snapshots taken after the feed was at `mark`, with their memberships and
        due instants as stored, in one transaction; users changed since are left out, and so
        are those the cache has learnt meanwhile. False (nothing done) when the list is no
        longer as `row` says, or this store keeps no such cache."""

    async def sweep_lists(self, now: int, limit: int) -> int:
        """Evaluate again (in one transaction) up to `limit` memberships of lists whose rule
        moves with time that are due by `now`; returns how many were due."""

    async def feed_mark(self, project_id: int) -> int:
        """The id of the project's newest event (0 when none): where a backfill starts."""

    async def finish_list(
        self,
        row: ListRow,
        members: list[int],
        now: int,
        mark: int,
        rule: Rule,
        holder: str,
        tallies: Tallies | None = None,
    ) -> bool:
        """End a backfill: `members` (computed at `now`, from a snapshot taken after the feed
        was at `mark`) become the list's members, and its state settles, in one transaction,
        unless its version is no longer `row.version` or its lease no longer `holder`'s (then False,
        nothing written); the lease is released. Users
        whose events or profile changed since are evaluated again in that transaction, so an
        incremental update that raced the backfill is not lost. `tallies` (compute_tallies,
        all chunks): what the lists' cache starts the list with, for the users who did not
        change meanwhile."""

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
