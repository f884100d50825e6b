"""What the lists' incremental path last knew of each (dynamic list, user), as committed: whether
the user is a member, when it is next due, what its document alone decides, and the Tally of
its events. With it a user whose only change is new events is settled from memory: no read of
its memberships, due instants or events (store/common.py, SqlTx.settle_known; docs/lists.md).

Valid only while this process is the only writer, as loading.IdentityCache: the SQLite store
clears it when another process has committed a write transaction of the writer's kind
(SqliteStore._epoch; a delivery process's commits do not count), the PostgreSQL store when a
transaction that would use it finds that another process has (PostgresStore.lists_for). A list's entries hold only while its row is
as they were made under (`stamp`: its rule, version, state and creation): a new rule, a
recount, a backfill's end or another list of the same id drop them. Users merged or deleted
are dropped; every other change of a user goes through the evaluation that writes its entry
again. Entries are staged by the transaction and taken in only once it has committed."""

from __future__ import annotations

from typing import Any, NamedTuple

from ..domain.feed import RESERVED_EVENT_NAMES
from ..domain.segments import Dependencies, Tally


class Known(NamedTuple):
    """A (list, user) as last evaluated. `known`: Evaluator.known of its document (True or
    False: its events cannot change its membership; None: they can). `tally`: of its events,
    None until the user is evaluated from its events (a read). `facts`: Evaluator.facts of its
    document, for a rule that reads the user (None until the document is read): with them,
    its new events are evaluated without reading the document again."""

    member: bool
    due: int | None
    known: bool | None
    tally: Tally | None
    facts: int | None = None


def cacheable(deps: Dependencies) -> bool:
    """Whether the cache keeps a list's users: a rule that counts events and can be tallied,
    counting no names of Pier's own items (they are written outside the lists' path)."""
    return deps.tallied and bool(deps.events) and deps.events.isdisjoint(RESERVED_EVENT_NAMES)


def unneeded(entry: Known, deps: Dependencies) -> bool:
    """Whether the entry's tally is not needed: no new event can change what it is until it
    is due (then it is evaluated from the user's events anyway). So for a user whose document
    decides, and for a member of a rule whose events can only add members (deps.rising: the
    usual "at least n"). Most entries of a list are its members: not keeping their tallies
    saves the memory, and staging the entry again without it on their next event."""
    return entry.known is not None or (entry.member and deps.events <= deps.rising)


Stamp = tuple[Any, ...]
Staged = dict[int, tuple[Stamp, dict[int, Known]]]  # by list: its stamp, entries by user


def stays(entry: Known, horizon: int) -> bool:
    """Whether rising events (ListCache.steady) leave the entry as it is until `horizon`: a
    member, or a user whose document decides, not due before it."""
    return (entry.member or entry.known is not None) and (entry.due is None or entry.due > horizon)


class ListCache:
    MAX_ENTRIES = 1_000_000  # (list, user) pairs; beyond, it starts again empty
    HORIZON_MS = 3_600_000  # how far ahead a steady set holds (steady)

    def __init__(self, keep_rows: bool) -> None:
        self.lists: dict[int, tuple[Stamp, dict[int, Known]]] = {}
        self._steady: dict[int, tuple[int, set[int]]] = {}  # by list: (horizon, users)
        # the dynamic lists' rows of a batch's projects (SqlTx.dynamic_lists), until a list
        # may have changed: the store forgets them at every write outside the batch path and
        # whenever another process has committed anything. Kept only by a store that sees
        # every commit (`keep_rows`: SQLite's PRAGMA data_version); on PostgreSQL each batch
        # reads them, in its snapshot.
        self.keep_rows = keep_rows
        self.rows: dict[tuple[int, ...], list[Any]] = {}
        # one object for each entry without a tally: most entries are those (a list's
        # members, the users their documents decide), and few differ (with 20 lists over
        # 10,000 users, 1,903 kinds among 106,623 such entries): 80 bytes each saved
        self._shared: dict[Known, Known] = {}

    def clear(self) -> None:
        self.lists.clear()
        self._steady.clear()
        self.rows.clear()
        self._shared.clear()

    def drop(self, list_id: int) -> None:
        """Forget a deleted list's entries (nothing else would: no row comes to replace them)."""
        self.lists.pop(list_id, None)
        self._steady.pop(list_id, None)

    def steady(self, list_id: int, stamp: Stamp, now: int) -> set[int]:
        """The users of a list (as its row is now) that events which can only add members
        leave as they are, whatever they are, until a horizon after `now` (`stays`): one set
        lookup per (list, user) settles most pairs of a batch, instead of reading the entry
        (a dictionary slot, the entry and its due instant, mostly cache misses). Made again
        from the entries when `now` passes its horizon; kept up as entries are taken in."""
        entries = self.of(list_id, stamp)
        held = self._steady.get(list_id)
        if held is None or held[0] <= now:
            horizon = now + self.HORIZON_MS
            held = self._steady[list_id] = (horizon, {u for u, k in entries.items()
                                                      if stays(k, horizon)})  # fmt: skip
        return held[1] if entries else set()

    def of(self, list_id: int, stamp: Stamp) -> dict[int, Known]:
        """The entries of a list as its row is now (none when the row changed since)."""
        held = self.lists.get(list_id)
        if held is None or held[0] != stamp:
            return {}
        return held[1]

    def committed(self, staged: Staged, forget: set[int]) -> None:
        """Take in a committed transaction's entries, after dropping the users it merged
        away, merged into or deleted (`forget`)."""
        if forget:
            for _, entries in self.lists.values():
                for uid in forget:
                    entries.pop(uid, None)
            for _, users in self._steady.values():
                users -= forget
        for list_id, (stamp, new) in staged.items():
            held = self.lists.get(list_id)
            if held is None or held[0] != stamp:
                held = self.lists[list_id] = (stamp, {})
                self._steady.pop(list_id, None)
            shared = self._shared
            entries = held[1]
            for uid, entry in new.items():
                if entry.tally is None:
                    entry = shared.setdefault(entry, entry)
                entries[uid] = entry
            steady = self._steady.get(list_id)
            if steady is not None:
                horizon, users = steady
                for uid, entry in new.items():
                    if stays(entry, horizon):
                        users.add(uid)
                    else:
                        users.discard(uid)
        if sum(len(entries) for _, entries in self.lists.values()) > self.MAX_ENTRIES:
            self.clear()
        elif len(self._shared) > self.MAX_ENTRIES // 10:  # entries that differ after all
            self._shared.clear()
