"""What the two backends share, over their `Run` (queries.py): the writer's transaction (load,
then write the change set in one order) and the store's other methods. A backend supplies its
connections, its transaction policy, id reservation, bulk insert of events and its own upkeep."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from collections.abc import Set as AbstractSet
from contextlib import AbstractAsyncContextManager
from itertools import chain
from typing import Any, NamedTuple, TypeVar

import msgspec

from ..clock import now_ms
from ..domain.batch import ChangeSet
from ..domain.feed import (
    DEVICE_REGISTERED,
    LIST_ENTERED,
    LIST_EXITED,
    MERGED_AWAY,
    USER_DELETED,
)
from ..domain.keys import Key as ApiKey
from ..domain.keys import Project
from ..domain.model import Device, Event, User
from ..domain.segments import (
    Dependencies,
    Evaluator,
    Rule,
    RuleError,
    RuleInvalid,
    Tally,
    dependencies,
    event_document,
    parse_rule,
    user_document,
)
from .base import Admin, AdminSession, EventRow, FeedEvent, ListRow, Start, Tallies
from .list_cache import Known, ListCache, Staged, Stamp, cacheable, unneeded
from .loading import BatchQueries, device_from_row, device_values, user_from_row, user_values
from .queries import EVENT_FIELDS, Queries, Row, Run, row_sizes
from .segments_sql import compile_members, compile_tallies

_encoder = msgspec.json.Encoder()
_decode = msgspec.json.decode
log = logging.getLogger("pier.lists")
T = TypeVar("T")
MAX_ID = 2**63 - 1  # above every row id (an open end of a range of ids)
_NONE: frozenset[int] = frozenset()
MAX_ATTEMPTS = 20  # of a backfill's last transaction, when it conflicts with batches (PostgreSQL)


def _encode(value: Any) -> str:
    return _encoder.encode(value).decode()


class SqlTx(BatchQueries):
    """The writer's transaction: the loaders (loading.BatchQueries) and the write. A backend
    adds id reservation and may replace the three steps whose policy differs. `lists`: the
    lists' cache (list_cache.py) when this process is the only writer (SQLite); this
    transaction's entries for it are `staged`, the users whose entries go are `forget`."""

    lists: ListCache | None = None

    def __init__(self, run: Run, q: Queries) -> None:
        super().__init__(run, q)
        self.written: ChangeSet | None = None  # the batch's, for the identity cache once committed
        self.staged: Staged = {}
        self.forget: set[int] = set()
        self._evaluators: dict[tuple[int, int], Evaluator] = {}

    async def check_lists(self) -> None:
        """Before the lists' cache is first used in the transaction: `lists` is the cache when
        it holds for this transaction, else None (SQLite: set with the transaction; PostgreSQL:
        PostgresTx.check_lists). Only what a transaction staged after this check is taken in."""

    def evaluator(self, rule: Rule, now: int) -> Evaluator:
        """An Evaluator of the rule at `now`, this transaction's own until `release`: the one
        an earlier transaction compiled, moved to `now` (Evaluator.at), when there is one (the
        rule is one object per stored text: _parsed; the evaluator holds it, so its id stays
        its). Compiling 20 rules costs about 260 µs, once per batch without this."""
        key = (id(rule), now)
        if key not in self._evaluators:
            spare = _SPARE_EVALUATORS.pop(id(rule), None)
            self._evaluators[key] = (
                Evaluator(rule, now) if spare is None or spare.rule is not rule else spare.at(now)
            )
        return self._evaluators[key]

    def release(self) -> None:
        """At the transaction's end: its evaluators go back for the next one to take."""
        if len(_SPARE_EVALUATORS) >= MAX_SPARE_EVALUATORS:
            _SPARE_EVALUATORS.clear()
        for evaluator in self._evaluators.values():
            _SPARE_EVALUATORS[id(evaluator.rule)] = evaluator
        self._evaluators.clear()

    async def write(self, c: ChangeSet) -> None:
        """Write a change set, always in this order (each step may rely on the ones before)."""
        self.written = c
        run, q = self.run, self.q
        if c.request_keys:
            await run.many(q.insert_request_key, [(*k, c.now) for k in c.request_keys])
        if c.new_users:
            await run.many(q.insert_user, [user_values(u) for u in c.new_users])
        if c.device_deletes:
            await run.execute(q.delete_devices, self.array(c.device_deletes))
        if c.anonymous_id_deletes:
            await run.many(q.delete_anonymous_id, c.anonymous_id_deletes)
        if c.anonymous_id_inserts:
            await run.many(q.insert_anonymous_id, c.anonymous_id_inserts)
        if c.device_writes:
            await self.write_devices(c.device_writes)
        if c.event_moves:
            await self.move_events(c.event_moves)
            await run.many(q.move_list_members, [(to, frm) for frm, to in c.event_moves])
        if c.updated_users:
            await run.many(
                q.update_user,
                [
                    (
                        u.external_id,
                        u.email,
                        u.phone,
                        u.timezone,
                        u.locale,
                        _encode(u.data),
                        u.updated_at,
                        u.id,
                    )
                    for u in c.updated_users
                ],
            )
        if c.events:
            await self.insert_events(c.events, c.now)
        if c.list_joins:
            await run.many(q.join_static_list, [(*j, c.now) for j in c.list_joins])
        if c.deleted_users:
            by_project: dict[int, list[int]] = defaultdict(list)
            for u in c.deleted_users:
                by_project[u.project_id].append(u.id)
            for project_id, ids in by_project.items():
                for sql in q.delete_members_of:
                    await run.execute(sql, project_id, self.array(ids))
            await run.execute(q.delete_users, self.array([u.id for u in c.deleted_users]))
        await self.update_lists(c)

    async def update_lists(self, c: ChangeSet) -> None:
        """Keep the dynamic lists current for the users this change set touched, in its
        transaction, evaluating only the lists each change can affect (docs/lists.md)."""
        everything: set[int] = {u.id for u in c.new_users} | {to for _, to in c.event_moves}
        profile = {u.id: u.project_id for u in c.updated_users}
        projects = {u.project_id for u in c.new_users} | set(profile.values())
        projects.update(e.user.project_id for e in c.events)
        gone = {u.id for u in c.deleted_users}
        self.forget |= gone | {u for move in c.event_moves for u in move}
        if not (everything or profile or c.events):
            return
        lists = await self.dynamic_lists(projects)
        if not lists:  # (the events are grouped only when some list may count them)
            return
        await self.check_lists()
        by_name: dict[str, set[int]] = defaultdict(set)  # the users with new events of a name
        added: dict[int, list[Event]] = defaultdict(list)
        for e in c.events:
            uid = e.user.id
            by_name[e.name].add(uid)
            added[uid].append(e)
        named: dict[int, set[str]] = {}  # the names of a user's new events, when asked

        def names_of(u: int) -> set[str]:
            if u not in named:
                named[u] = {e.name for e in added[u]}
            return named[u]

        work, every = [], []
        for row in lists:
            list_id, project_id, name, text = row[:4]
            parsed = _parsed(list_id, text, c.now)
            if parsed is None:
                continue
            rule, deps = parsed
            base = Work(list_id, project_id, name, rule, deps, [], {}, tuple(row[3:]))
            every.append(base)
            users = set(everything)
            if profile and (deps.profile_keys is None or deps.profile_keys):
                users |= {u for u, pid in profile.items() if pid == project_id}
            # users whose only change for this list is new events: {user: whether they are all
            # of names that can only add members (deps.rising)}; but those that such events
            # leave as they are (ListCache.steady): nothing to do for them. (Set operations
            # only: they are most of a batch's (list, user) pairs.)
            counts = [by_name[n] for n in deps.events if n in by_name]
            if not (counts or users):
                continue
            steady = self.steady(base, c.now)
            only_rising = deps.events <= deps.rising  # (the usual rule: every count "at least n")
            rises: dict[int, bool] = {}
            if only_rising:
                counted = (counts[0] if len(counts) == 1 else set().union(*counts)) - steady
            else:
                rises = {u: names_of(u) & deps.events <= deps.rising for u in set().union(*counts)}
                counted = {u for u, rising in rises.items() if not (rising and u in steady)}
            if users or gone:
                counted -= users | gone
            quiet = dict.fromkeys(counted, True) if only_rising else {u: rises[u] for u in counted}
            users = (users | counted) - gone if users else counted
            if users:
                work.append(base._replace(users=sorted(users), quiet=quiet))
        # users this batch created (and merged none into): all their data is in the batch
        merged_into = {to for _, to in c.event_moves}
        fresh = {u.id: u for u in c.new_users if u.id not in merged_into}
        await self.settle_many(work, c.now, fresh, added, every)

    def steady(self, w: Work, now: int) -> AbstractSet[int]:
        """The users of a list that rising events leave as they are (ListCache.steady): none
        without the lists' cache, or for a list it does not keep."""
        if self.lists is None or not w.cached:
            return _NONE
        return self.lists.steady(w.list_id, w.stamp, now)

    async def dynamic_lists(self, projects: set[int]) -> list[Row]:
        """The rows of q.dynamic_lists of these projects: on SQLite from the lists' cache,
        read again only after a list may have changed (ListCache.rows)."""
        key = tuple(sorted(projects))
        cache = self.lists if self.lists is not None and self.lists.keep_rows else None
        if cache is not None and key in cache.rows:
            return cache.rows[key]
        rows = await self.run.all(self.q.dynamic_lists, self.array(list(key)))
        if cache is not None:
            if len(cache.rows) >= 1_000:
                cache.rows.clear()
            cache.rows[key] = rows
        return rows

    async def settle_many(
        self,
        work: list[Work],
        now: int,
        fresh: dict[int, User] | None = None,
        added: dict[int, list[Event]] | None = None,
        every: Sequence[Work] = (),
    ) -> None:
        """settle() each list for its users, reading each project's users once for all its
        lists, the memberships and due instants of all the lists at once, and the events only
        of the users whose membership their new events may change (`Work.quiet`: unchanged()
        tells, from `added`, the batch's events by user), once for all the lists. `fresh`: the
        users the batch created, by id: their documents and events are the batch's, and they
        are in no list yet, so nothing of theirs is read. With the lists' cache, the users it
        knows are settled from it first (settle_known), and what the rest are found to be is
        staged for it; `every`: the dynamic lists of the batch's projects (no users), whose
        entries without a tally get one from the events read anyway (tallies_along)."""
        fresh = fresh or {}
        added = added or {}
        new_events: dict[int, list[dict[str, Any]]] = {}  # of quiet users, built once

        def events_added(u: int) -> list[dict[str, Any]]:
            if u not in new_events:
                new_events[u] = [_event_doc(e) for e in added.get(u, ())]
            return new_events[u]

        if self.lists is not None:
            work = await self.settle_known(work, now, events_added)
        by_project: dict[int, set[int]] = defaultdict(set)
        for w in work:
            by_project[w.project_id].update(w.users)
        docs: Docs = {}
        had: set[tuple[int, int]] = set()  # (list, user): the members among them now
        due: dict[tuple[int, int], int] = {}  # (list, user): the instant it is due (list_due)
        for project_id, ids in by_project.items():
            for uid in ids:
                user = fresh.get(uid)
                if user is not None and user.project_id == project_id:
                    docs[uid] = (_user_doc(user), defaultdict(list))
                    for e in added.get(uid, ()):
                        docs[uid][1][e.name].append(_event_doc(e))
            ordered = sorted(ids - fresh.keys())  # fresh users are in no list yet
            docs.update(await self.user_documents(project_id, ordered))
            if not ordered:
                continue
            pair = self.array(sorted(w.list_id for w in work if w.project_id == project_id))
            stored = self.array(ordered)
            for list_id, user_id in await self.run.all(self.q.members_of_users, pair, stored):
                had.add((list_id, user_id))
            for list_id, user_id, at in await self.run.all(self.q.due_of_users, pair, stored):
                due[list_id, user_id] = at

        todo = []
        # by project, by user: the names of the events its lists to evaluate count, so that a
        # user is read only the events of those lists, not of every list of the batch
        needs: dict[int, dict[int, set[str]]] = defaultdict(lambda: defaultdict(set))
        for w in work:
            evaluator = self.evaluator(w.rule, now)
            stage = self.lists is not None and w.cached
            users = []
            for u in w.users:
                if not (u in w.quiet and u in docs):
                    users.append(u)
                    continue
                member, at = (w.list_id, u) in had, due.get((w.list_id, u))
                if not unchanged(evaluator, docs[u][0], member, w.quiet[u], at, now,
                                 events_added(u)):  # fmt: skip
                    users.append(u)
                elif stage:  # known to be what it was, its events not read: no tally yet
                    doc = docs[u][0]
                    entry = Known(member, at, _known(evaluator, doc), None,
                                  _facts(evaluator, w.deps, doc))  # fmt: skip
                    self.stage(w, u, entry)
            if users:
                todo.append((w, users))
                if w.deps.events:
                    wants = needs[w.project_id]
                    for uid in users:
                        if uid not in fresh:
                            wants[uid] |= w.deps.events
        along = self.tallies_along(needs, every)
        for wants in needs.values():
            alike: dict[frozenset[str], list[int]] = defaultdict(list)  # users by names
            for uid, wanted in wants.items():
                alike[frozenset(wanted)].append(uid)
            for group, uids in alike.items():
                await self.add_events(docs, sorted(uids), set(group))
        for w, uid, k in along:
            if uid in docs:
                by_name = docs[uid][1]
                events = _named(by_name, w.deps.events)
                self.stage(w, uid, k._replace(tally=self.evaluator(w.rule, now).tally(events)))
        writes = ListWrites()
        for w, users in todo:
            known = {u for u in users if (w.list_id, u) in had}
            was = {u: due[w.list_id, u] for u in users if (w.list_id, u) in due}
            settled = await self.settle(
                w.list_id, w.project_id, w.name, w.rule, w.deps, now, users, docs, True, known, was,
                writes,
            )  # fmt: skip
            if settled is None and self.lists is not None:
                self.staged[w.list_id] = ((), {})  # its entries go: they cannot follow
            elif settled is not None and self.lists is not None and w.cached:
                members, due_at = settled
                evaluator = self.evaluator(w.rule, now)
                for u in users:
                    if u in docs:
                        doc, by_name = docs[u]
                        events = _named(by_name, w.deps.events)
                        decided, facts = _known(evaluator, doc), _facts(evaluator, w.deps, doc)
                        tally = evaluator.tally(events)
                        entry = Known(u in members, due_at.get(u), decided, tally, facts)
                        self.stage(w, u, entry)
        await self.flush_list_writes(writes)

    async def start_entries(
        self,
        list_id: int,
        rule: Rule,
        deps: Dependencies,
        now: int,
        members: set[int],
        tallies: Tallies,
        leave_out: set[int],
    ) -> None:
        """Stage the lists' cache's entries of a list whose row was just settled or read (a
        backfill's end, `lists.warm`): for every user of the project, its membership (in
        `members`), the tally of its counted events and what its document says (`tallies`:
        a Start by user; none: an empty tally, and the document is read when needed), with
        its due instant as stored (list_due: a backfill makes every user of a rule moving with
        time due, or a fading rule's members, so that the first event evaluates them whole,
        as the sweeper will); but the users in `leave_out` (changed since the tallies'
        snapshots, or already known to the cache). Every user has one, so that a user's first
        counted event is settled from memory, not by a read of its events (nor of its
        document); the users with neither membership nor counted events share an entry per
        answer of their documents."""
        await self.check_lists()
        if self.lists is None or not cacheable(deps):
            return
        rows = await self.run.all(self.q.lists_by_id, self.array([list_id]))
        if not rows:
            return
        due = {u: at for u, at in await self.run.all(self.q.list_due_of, list_id)}
        evaluator = self.evaluator(rule, now)
        empty = evaluator.tally(())
        shared: dict[tuple[bool | None, int | None], Known] = {}  # (known, facts): entry
        entries = {}
        for (uid,) in await self.run.all(self.q.user_ids, rows[0][1]):
            if uid in leave_out:
                continue
            hits, known, facts = tallies.get(uid) or Start([])
            at, member = due.get(uid), uid in members
            entry = Known(member, at, known, None, facts)
            if not unneeded(entry, deps):  # no tally while no event can change it
                entry = entry._replace(tally=evaluator.add(empty, hits))
            if not (hits or member or at is not None):  # the same for many users: one object
                entry = shared.setdefault((known, facts), entry)
            entries[uid] = entry
        self.staged[list_id] = (tuple(rows[0][3:]), entries)

    async def warm_entries(self, row: ListRow, now: int, mark: int, tallies: Tallies) -> bool:
        """SqlStore.warm_list, in this transaction."""
        await self.check_lists()
        if self.lists is None or row.rule is None:
            return False
        rows = await self.run.all(self.q.lists_by_id, self.array([row.id]))
        stamp = (row.rule, row.version, row.state, row.created_at)
        parsed = _parsed(row.id, row.rule, now)
        if not rows or tuple(rows[0][3:]) != stamp or parsed is None:
            return False
        q, run = self.q, self.run
        changed = {r[0] for r in await run.all(q.changed_since, row.project_id, mark, now)}
        members = {r[0] for r in await run.all(q.list_member_ids, row.id)}
        known = self.lists.of(row.id, stamp)
        await self.start_entries(row.id, *parsed, now, members, tallies, changed | known.keys())
        return True

    def tallies_along(
        self, needs: dict[int, dict[int, set[str]]], every: Sequence[Work]
    ) -> list[tuple[Work, int, Known]]:
        """The entries of the lists' cache (committed, or staged by this transaction) with no
        tally, of users whose events are read anyway (`needs`: by project, by user, the names
        to read), that may need one (no member, and its document does not decide): the names
        their lists count are added to `needs`, so that one read gives them their tallies,
        rather than a read each later, one list at a time, when an event of theirs counts."""
        along: list[tuple[Work, int, Known]] = []
        if self.lists is None:
            return along
        for w in every:
            wants = needs.get(w.project_id)
            if not (wants and w.cached and w.deps.events):
                continue
            entries = self.lists.of(w.list_id, w.stamp)
            held = self.staged.get(w.list_id)
            staged = held[1] if held is not None and held[0] == w.stamp else {}
            for uid, names in wants.items():
                k = staged.get(uid) or entries.get(uid)
                if k is not None and k.tally is None and k.known is None and not k.member:
                    names |= w.deps.events
                    along.append((w, uid, k))
        return along

    async def settle_known(
        self, work: list[Work], now: int, events_added: Callable[[int], list[dict[str, Any]]]
    ) -> list[Work]:
        """Settle from the lists' cache the users it knows whose only change is new events
        (`Work.quiet`) and who are not due: nothing read but the documents of those whose
        membership the new events may change and whose rule reads the user (evaluated with
        their tally instead of their events). What is left to settle otherwise: the work of
        the other users (list_cache.py says when an entry holds)."""
        assert self.lists is not None
        left: list[Work] = []
        checks: list[tuple[Work, Evaluator, list[tuple[int, Tally, Known]]]] = []
        readers: dict[int, set[int]] = defaultdict(set)  # by project: whose documents to read
        for w in work:
            if not (w.quiet and w.cached):
                left.append(w)
                continue
            entries = self.lists.of(w.list_id, w.stamp)
            evaluator = self.evaluator(w.rule, now)
            check: list[tuple[int, Tally, Known]] = []
            other = [u for u in w.users if u not in w.quiet]
            try:
                for u, rising in w.quiet.items():  # (the steady ones are left out: update_lists)
                    k = entries.get(u)
                    if k is None or (k.due is not None and k.due <= now):
                        other.append(u)
                        continue
                    if (k.member and rising) or k.known is not None:  # stays what it was,
                        if k.tally is not None:  # whatever the events: no tally needed now
                            self.stage(w, u, k._replace(tally=None))
                        continue
                    hits = evaluator.hits(events_added(u))
                    if not hits:
                        continue  # no count changes, at any instant from now on
                    if k.tally is None:
                        other.append(u)  # evaluated from its events, which gives its tally
                    else:
                        check.append((u, evaluator.add(k.tally, hits), k))
            except RuleError:  # evaluated the usual way, which says so
                left.append(w)
                continue
            if other:
                left.append(w._replace(users=sorted(other)))
            if check:
                checks.append((w, evaluator, check))
                unread = [u for u, _, k in check if k.facts is None]  # (facts: no need)
                if unread and w.deps.profile_keys != frozenset():
                    readers[w.project_id].update(unread)
        docs: Docs = {}
        for project_id, ids in readers.items():
            docs.update(await self.user_documents(project_id, sorted(ids)))
        writes = ListWrites()
        for w, evaluator, check in checks:
            reads = w.deps.profile_keys != frozenset()
            members: set[int] = set()
            due: dict[int, int] = {}
            try:
                for u, tally, k in check:
                    known, facts = k.known, k.facts
                    if not reads:
                        known = known if known is not None else _known(evaluator, {})
                        member = evaluator.member({}, tally)
                    elif facts is not None:  # what its document says, noted: not read again
                        member = evaluator.member_by_facts(facts, tally)
                    elif u in docs:  # read now: what it decides and its facts are noted
                        doc = docs[u][0]
                        known = known if known is not None else _known(evaluator, doc)
                        facts = _facts(evaluator, w.deps, doc)
                        member = evaluator.member(doc, tally)
                    else:  # no document: no user, no member
                        self.stage(w, u, Known(False, None, known, tally))
                        continue
                    if member:
                        members.add(u)
                    elif w.deps.fading:  # a non-member of a fading rule is never due
                        self.stage(w, u, Known(False, None, known, tally, facts))
                        continue
                    # (from a tally, the next instant to look is the tally's alone)
                    at = evaluator.next_look({}, tally) if w.deps.time else None
                    if at is not None:
                        due[u] = at
                    self.stage(w, u, Known(member, at, known, tally, facts))
            except RuleError:  # left as it is, as settle does; the list's entries go
                log.exception("list %s cannot be evaluated at %s", w.list_id, now)
                self.staged[w.list_id] = ((), {})
                continue
            had = {u for u, _, k in check if k.member}
            was = {u: k.due for u, _, k in check if k.due is not None}
            users = [u for u, _, _ in check]
            await self.write_settled(w.list_id, w.project_id, w.name, w.deps, now, users,
                                     members, due, True, had, was, writes)  # fmt: skip
        await self.flush_list_writes(writes)
        return left

    def stage(self, w: Work, user_id: int, entry: Known) -> None:
        """Note what a (list, user) is now, for the lists' cache once committed: without its
        tally when no new event can change it until it is due (list_cache.unneeded)."""
        if entry.tally is not None and unneeded(entry, w.deps):
            entry = entry._replace(tally=None)
        held = self.staged.get(w.list_id)
        if held is None:
            held = self.staged[w.list_id] = (w.stamp, {})
        held[1][user_id] = entry

    async def sweep(self, now: int, limit: int) -> int:
        """Evaluate again the memberships due by `now` (a window moved, a date passed): how
        many were due. One sweeper at a time (`sweeping`): 0 when another one is at work."""
        if not await self.sweeping():
            return 0
        due: dict[int, list[int]] = defaultdict(list)
        rows = await self.run.all(self.q.due, now, limit)
        for list_id, user_id in rows:
            due[list_id].append(user_id)
        lists = await self.run.all(self.q.lists_by_id, self.array(sorted(due))) if due else []
        work = []
        for row in lists:
            list_id, project_id, name, text = row[:4]
            parsed = _parsed(list_id, text, now)
            if parsed is not None:
                work.append(
                    Work(list_id, project_id, name, *parsed, due.pop(list_id), {}, tuple(row[3:]))
                )
        if work:
            await self.check_lists()
        await self.settle_many(work, now)
        for list_id, users in due.items():  # lists deleted meanwhile, or whose rule is broken
            await self.run.execute(self.q.delete_due, list_id, self.array(users))
        return len(rows)

    async def sweeping(self) -> bool:
        """Whether this transaction may sweep, no other process's sweeper being at work: on
        SQLite the write transaction already excludes every other."""
        return True

    async def settle(
        self,
        list_id: int,
        project_id: int,
        name: str,
        rule: Rule,
        deps: Dependencies,
        now: int,
        user_ids: list[int],
        docs: Docs,
        items: bool = True,
        had: set[int] | None = None,
        was_due: dict[int, int] | None = None,
        writes: ListWrites | None = None,
    ) -> tuple[set[int], dict[int, int]] | None:
        """Make these users' membership of the list what the rule says at `now` (`docs`: their
        documents, from `documents`; a user without one, deleted or of another project, is no
        member), and when the rule moves with time, note when each is next to be looked at
        (list_due); with `items`, a list_entered / list_exited event in the feed for each user
        who enters or leaves. `had`: which of them are members now, and `was_due`: their
        list_due instants, if already read (then only the instants that change are written).
        `writes`: where to gather the rows instead of writing them (write_settled).
        Returns the members among them and their due instants (evaluate), None when the rule
        cannot be evaluated at `now` (nothing is changed)."""
        try:
            members, due = evaluate(self.evaluator(rule, now), deps, docs, user_ids)
        except RuleError:  # a stored tree that cannot be evaluated at `now`: left as it is
            log.exception("list %s cannot be evaluated at %s", list_id, now)
            return None
        await self.write_settled(
            list_id, project_id, name, deps, now, user_ids, members, due, items, had, was_due,
            writes,
        )  # fmt: skip
        return members, due

    async def write_settled(
        self,
        list_id: int,
        project_id: int,
        name: str,
        deps: Dependencies,
        now: int,
        user_ids: list[int],
        members: set[int],
        due: dict[int, int],
        items: bool,
        had: set[int] | None,
        was_due: dict[int, int] | None,
        writes: ListWrites | None = None,
    ) -> None:
        """Write what settle found these users to be: `members` among them, `due` their next
        instants to look at (as settle says of `items`, `had` and `was_due`). With `writes`,
        the rows are gathered there, to be written with other lists' (flush_list_writes)."""
        run, q = self.run, self.q
        if had is None:
            had = {r[0] for r in await run.all(q.members_among, list_id, self.array(user_ids))}
        out = ListWrites() if writes is None else writes
        entered, left = sorted(members - had), sorted(had - members)
        out.joins += [(list_id, project_id, u, now) for u in entered]
        out.leaves += [(list_id, u) for u in left]
        if deps.time and was_due is None:
            out.undue.append((list_id, user_ids))
            out.due += [(list_id, project_id, u, t) for u, t in due.items()]
        elif deps.time and was_due is not None:
            if gone := [u for u in was_due if u not in due]:
                out.undue.append((list_id, gone))
            out.due += [(list_id, project_id, u, t) for u, t in due.items() if was_due.get(u) != t]
        if items and (entered or left):
            data = _encode({"list_id": list_id, "name": name})
            out.items += [(project_id, u, LIST_ENTERED, data, now, now, None) for u in entered]
            out.items += [(project_id, u, LIST_EXITED, data, now, now, None) for u in left]
        if writes is None:
            await self.flush_list_writes(out)

    async def flush_list_writes(self, writes: ListWrites) -> None:
        """Write the gathered rows of settled memberships, one statement per kind for all
        their lists (a batch touching 15 lists paid ~45 statements before; each (list, user)
        is settled once, so their order across lists does not matter; the items keep theirs)."""
        run, q = self.run, self.q
        if writes.joins:
            await run.many(q.insert_list_member, writes.joins)
        if writes.leaves:
            await run.many(q.delete_list_member, writes.leaves)
        for list_id, users in writes.undue:  # before the new instants, which may be theirs
            await run.execute(q.delete_due, list_id, self.array(users))
        if writes.due:
            await run.many(q.insert_due, writes.due)
        if writes.items:
            await self.insert_event_rows(writes.items)

    async def documents(self, project_id: int, user_ids: list[int], names: set[str]) -> Docs:
        """The user documents of these users of the project, read in this transaction, with
        their events of these names (event documents, by name)."""
        docs = await self.user_documents(project_id, user_ids)
        await self.add_events(docs, list(docs), names)
        return docs

    async def user_documents(self, project_id: int, user_ids: list[int]) -> Docs:
        """The user documents of these users of the project (no events yet)."""
        docs: Docs = {}
        for row in await self.run.all(self.q.list_users_by_id, project_id, self.array(user_ids)):
            u = user_from_row(row)
            docs[u.id] = (_user_doc(u), defaultdict(list))
        return docs

    async def add_events(self, docs: Docs, user_ids: list[int], names: set[str]) -> None:
        """Add to these users' documents their events of these names (event documents)."""
        ids = [u for u in user_ids if u in docs]
        if names and ids:
            for uid, name, data, at in await self.events_of(ids, frozenset(names)):
                docs[uid][1][name].append(event_document(name, at, _decode(data)))

    async def events_of(self, user_ids: list[int], names: frozenset[str]) -> list[Row]:
        """(user id, name, data JSON, created_at) of these users' events with these names."""
        return await self.run.all(
            self.q.events_of_users, self.array(user_ids), self.array(sorted(names))
        )

    async def write_devices(self, devices: list[Device]) -> None:
        """Insert devices whole (stored ones were deleted just before)."""
        await self.run.many(self.q.insert_device, [device_values(d) for d in devices])

    async def move_events(self, moves: list[tuple[int, int]]) -> None:
        """Give the events of each merged user (from) to the user it merged into (to); its own
        items (feed.MERGED_AWAY) leave the feed instead."""
        names = self.array(list(MERGED_AWAY))
        await self.run.many(self.q.delete_merged_items, [(frm, names) for frm, _ in moves])
        await self.run.many(self.q.move_events, [(to, frm) for frm, to in moves])

    async def insert_events(self, events: list[Event], now: int) -> None:
        await self.insert_event_rows(event_values(events, now))

    async def insert_event_rows(self, rows: Sequence[tuple[Any, ...]]) -> None:
        """Rows of the events table in queries.EVENT_FIELDS order (a batch's events, the lists'
        items), in multi-row statements (queries.ROWS_PER_INSERT): on SQLite about half the
        cost of executemany's statement per row (docs/performance.md). PostgreSQL COPYs them
        instead."""
        values = list(chain.from_iterable(rows))
        width, start = len(EVENT_FIELDS), 0
        for size in row_sizes(len(rows)):
            end = start + size * width
            await self.run.execute(self.q.insert_event_rows[size], *values[start:end])
            start = end


Docs = dict[int, tuple[dict[str, Any], dict[str, list[dict[str, Any]]]]]


class ListWrites:
    """Rows of settled memberships gathered across lists (SqlTx.write_settled), to be written
    in one statement per kind (SqlTx.flush_list_writes)."""

    def __init__(self) -> None:
        self.joins: list[tuple[int, int, int, int]] = []  # list_members rows to insert
        self.leaves: list[tuple[int, int]] = []  # (list, user) to delete
        self.undue: list[tuple[int, list[int]]] = []  # (list, users): list_due rows to delete
        self.due: list[tuple[int, int, int, int]] = []  # list_due rows to write
        self.items: list[tuple[Any, ...]] = []  # list_entered / list_exited events


class Work(NamedTuple):
    """A list to settle for some users (SqlTx.settle_many). `quiet`: the users whose only
    change is new events, each with whether those are all of `deps.rising` names."""

    list_id: int
    project_id: int
    name: str
    rule: Rule
    deps: Dependencies
    users: list[int]
    quiet: dict[int, bool]
    stamp: Stamp = ()  # the list's row as read (list_cache.py)

    @property
    def cached(self) -> bool:
        """Whether the lists' cache keeps this list's users (list_cache.cacheable)."""
        return cacheable(self.deps)


def unchanged(
    evaluator: Evaluator,
    user: dict[str, Any],
    member: bool,
    rising: bool,
    due: int | None,
    now: int,
    events: list[dict[str, Any]],
) -> bool:
    """Whether a user whose only change is new `events` (event documents) is still what it was
    (`member`), with no need to read its older events: its membership as last evaluated holds
    until `due` (list_due: none, or later than `now`), and either it is a member and the new
    events can only add members (`rising`), or no event wrapper counts any of them now or
    later (Evaluator.counted: every count stays what it was at every instant), or its own
    document decides the rule whatever its events are (Evaluator.known). The instant it is
    next due stays right: the membership is the same until then."""
    if due is not None and due <= now:
        return False
    if member and rising:
        return True
    try:
        return not any(map(evaluator.counted, events)) or evaluator.known(user) is member
    except RuleError:  # evaluating it fails the same way, and says so
        return False


def _named(by_name: dict[str, list[dict[str, Any]]], names: frozenset[str]) -> list[dict[str, Any]]:
    """A user's event documents (as Docs holds them, by name) of these names."""
    return [e for name in names for e in by_name.get(name, ())]


def _known(evaluator: Evaluator, user: dict[str, Any]) -> bool | None:
    """Evaluator.known, None (the events may decide) when the tree cannot be evaluated."""
    try:
        return evaluator.known(user)
    except RuleError:
        return None


def _facts(evaluator: Evaluator, deps: Dependencies, user: dict[str, Any]) -> int | None:
    """Evaluator.facts for the lists' cache, when the rule reads the user; None (the document
    is read when needed) when it does not, or when they cannot all be evaluated."""
    if deps.profile_keys == frozenset():
        return None
    try:
        return evaluator.facts(user)
    except RuleError:
        return None


def user_start(
    evaluator: Evaluator, deps: Dependencies, user: User, hits: list[tuple[int, int]]
) -> Start:
    """A backfill's Start of a user of a rule that reads the user (compute_tallies)."""
    doc = _user_doc(user)
    return Start(hits, _known(evaluator, doc), _facts(evaluator, deps, doc))


def _user_doc(u: User) -> dict[str, Any]:
    return user_document(
        u.data,
        external_id=u.external_id,
        email=u.email,
        phone=u.phone,
        timezone=u.timezone,
        locale=u.locale,
        created_at=u.created_at,
    )


def _event_doc(e: Event) -> dict[str, Any]:
    """The event document of an event of the batch, as add_events reads it once written."""
    data = _decode(e.data) if isinstance(e.data, msgspec.Raw) else e.data
    return event_document(e.name, e.created_at, data)


def evaluate(
    evaluator: Evaluator, deps: Dependencies, docs: Docs, user_ids: list[int]
) -> tuple[set[int], dict[int, int]]:
    """In memory: the members among these users at the evaluator's instant, and when the rule
    moves with time, {user id: the next instant to look again} for those whose membership can
    change with no new data."""
    members: set[int] = set()
    due: dict[int, int] = {}
    for uid in user_ids:
        if uid not in docs:
            continue
        doc, by_name = docs[uid]
        events = _named(by_name, deps.events)
        if evaluator.member(doc, events):
            members.add(uid)
        elif deps.fading:
            continue  # out until new data comes
        if deps.time:
            at = evaluator.next_look(doc, events)
            if at is not None:
                due[uid] = at
    return members, due


def event_values(events: list[Event], now: int) -> Sequence[tuple[Any, ...]]:
    """Events as rows in queries.EVENT_FIELDS order."""
    encode = _encoder.encode
    return [
        (
            e.user.project_id,
            e.user.id,
            e.name,
            encode(e.data).decode(),
            e.created_at,
            now,
            e.message_id,
        )
        for e in events
    ]


def event_row(r: Row) -> EventRow:
    return EventRow(r[0], r[1], msgspec.Raw(r[2].encode()), r[3], r[4], r[5], r[6])


_RULES: dict[str, tuple[Rule, Dependencies] | None] = {}  # by the tree's text
# compiled evaluators no transaction is using, by id(rule) (SqlTx.evaluator, release)
_SPARE_EVALUATORS: dict[int, Evaluator] = {}
MAX_SPARE_EVALUATORS = 1_000


def _parsed(list_id: int, text: str, now: int) -> tuple[Rule, Dependencies] | None:
    """A stored rule, parsed once (by its text: a process may serve several databases, whose
    list ids meet); None for one that no longer parses."""
    if text not in _RULES:
        if len(_RULES) >= 1_000:
            _RULES.clear()
        try:
            rule = parse_rule(_decode(text), now)
            _RULES[text] = (rule, dependencies(rule))
        except RuleInvalid:
            log.exception("list %s: the stored rule does not parse", list_id)
            _RULES[text] = None
    return _RULES[text]


def _list_row(r: Row) -> ListRow:
    return ListRow(
        r[0], r[1], r[2], r[3], r[4], r[5], r[6], bool(r[7]), r[8], r[9], r[10], r[11], r[12],
        r[13], r[14],
    )  # fmt: skip


def _feed_event(r: Row) -> FeedEvent:
    return FeedEvent(r[0], r[1], msgspec.Raw(r[2].encode()), r[3], r[4], r[5], r[6], r[7], r[8])


class SqlStore:
    """The Store methods that are the same on both backends (base.Store). A backend sets `q`
    (the queries rendered for it) and gives three ways to run them: `reader`, `reading()` and
    `writing()`; it implements the rest of the protocol itself."""

    q: Queries
    max_chunks: int | None = None  # a backfill's chunks at most (each costs a scan: SQLite)
    never_suspends = False  # (base.Store)
    remote = False  # (base.Store)
    _lists: ListCache | None = None  # the lists' cache (list_cache.py), when the backend keeps one

    @property
    def reader(self) -> Run:
        """For one read statement."""
        raise NotImplementedError

    def reading(self) -> AbstractAsyncContextManager[Run]:
        """For several reads from one snapshot."""
        raise NotImplementedError

    def writing(self, durable: bool = True) -> AbstractAsyncContextManager[Run]:
        """For a write outside the batch path (management), in a transaction of its own.
        `durable=False`: on SQLite the commit does not wait for the disk (no fsync, which would
        stall the event loop; WAL with synchronous=NORMAL, which SQLite keeps consistent); the
        next durable commit (every writer batch) syncs it, and a power loss before that loses
        this transaction whole, never part of it. For what may be redone after a crash: a
        destination's cursor (its items are then sent again)."""
        raise NotImplementedError

    # -- projects and keys ---------------------------------------------------------------
    async def create_project(self, name: str, now: int) -> Project:
        async with self.writing() as run:
            row = await run.one(self.q.insert_project, name, now)
        assert row is not None
        return Project(row[0], name, now)

    async def list_projects(self) -> list[Project]:
        return [Project(*r) for r in await self.reader.all(self.q.projects)]

    async def get_project(self, project_id: int) -> Project | None:
        row = await self.reader.one(self.q.project, project_id)
        return Project(*row) if row else None

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
    ) -> ApiKey:
        args = (project_id, name, scope, key_hash, prefix, value, now, rate_limit)
        async with self.writing() as run:
            row = await run.one(self.q.insert_key, *args)
        assert row is not None
        return ApiKey(row[0], project_id, name, scope, prefix, now, None, value, rate_limit)

    async def list_keys(self, project_id: int) -> list[ApiKey]:
        return [ApiKey(*r) for r in await self.reader.all(self.q.keys, project_id)]

    async def find_key(self, key_hash: str) -> ApiKey | None:
        row = await self.reader.one(self.q.key_by_hash, key_hash)
        return ApiKey(*row) if row else None

    async def revoke_key(self, key_id: int | None, key_hash: str | None, now: int) -> bool:
        async with self.writing() as run:
            return await run.execute(self.q.revoke_key, now, key_id, key_hash) > 0

    # -- reads ---------------------------------------------------------------------------
    async def get_user(self, project_id: int, ref: str, by: str) -> User | None:
        if "\0" in ref:  # no id holds U+0000 (refused on ingestion); PostgreSQL text cannot
            return None
        sql = self.q.user_of["anonymous_id" if by == "anonymous_id" else "external_id"]
        async with self.reading() as run:
            row = await run.one(sql, project_id, ref)
            return (await self._whole_users(run, [row]))[0] if row else None

    async def get_user_by_id(self, project_id: int, user_id: int) -> User | None:
        async with self.reading() as run:
            row = await run.one(self.q.user_by_id, project_id, user_id)
            return (await self._whole_users(run, [row]))[0] if row else None

    async def list_users(
        self, project_id: int, limit: int, before: tuple[int, int] | None, q: str | None
    ) -> list[User]:
        if q and "\0" in q:  # (as in get_user)
            return []
        args: list[Any] = [project_id, q] if q else [project_id]
        if before is not None:
            args += before
        sql = self.q.list_users[(bool(q), before is not None)]
        async with self.reading() as run:
            return await self._whole_users(run, await run.all(sql, *args, limit))

    async def _whole_users(self, run: Run, rows: list[Row]) -> list[User]:
        """Users from their rows, with all their anonymous ids and devices."""
        users = {row[0]: user_from_row(row) for row in rows}
        ids = self.q.dialect.array(list(users))
        anonymous: dict[int, list[str]] = defaultdict(list)
        for uid, anon in await run.all(self.q.anonymous_ids_of, ids):
            anonymous[uid].append(anon)
        devices: dict[int, list[Device]] = defaultdict(list)
        for row in await run.all(self.q.devices_of, ids):
            devices[row[2]].append(device_from_row(row, users[row[2]], _decode))
        for uid, user in users.items():
            user.anonymous_ids = anonymous[uid]
            user.devices = devices[uid]
        return list(users.values())

    async def stats(self, project_id: int) -> dict[str, int]:
        counts = {}
        for table, sql in self.q.counts.items():
            row = await self.reader.one(sql, project_id)
            counts[table] = row[0] if row else 0
        return counts

    async def _delete_user(self, tx: SqlTx, project_id: int, ref: str, by: str) -> bool:
        """Delete a user and all its rows, inside the backend's write transaction, and record
        its user_deleted item (the one item of the user that stays in the feed)."""
        if "\0" in ref:  # (as in get_user)
            return False
        run, q = tx.run, self.q
        row = await run.one(q.user_id_of[by], project_id, int(ref) if by == "id" else ref)
        if row is None:
            return False
        uid = row[0]
        found = await run.one(q.user_by_id, project_id, uid)
        assert found is not None
        user = user_from_row(found)
        ids = q.dialect.array([uid])
        anonymous = [a for _, a in await run.all(q.anonymous_ids_of, ids)]
        devices = [row[3] for row in await run.all(q.devices_of, ids)]  # DEVICE_FIELDS order
        devices += await self._gone_devices(run, project_id, uid, devices)
        await self._delete_events(run, project_id, uid)
        for sql in q.delete_user_rows:
            await run.execute(sql, project_id, uid)
        for sql in q.delete_members_of:
            await run.execute(sql, project_id, ids)
        await run.execute(q.delete_user, project_id, uid)
        now = now_ms()
        # device_ids: a device's earlier items may name another user (it moved there from
        # it): they stay, and the tombstone tells a consumer to drop the device too
        data = {"external_id": user.external_id, "anonymous_ids": anonymous, "device_ids": devices}
        await tx.insert_events([Event(user, USER_DELETED, data, now)], now)
        return True

    async def _gone_devices(
        self, run: Run, project_id: int, user_id: int, owned: list[str]
    ) -> list[str]:
        """The device ids that the user's device_registered items name, that it does not own
        and no device has now (renamed, found by its token, or deleted with another user):
        their items under other users, older, would stay in the feed with nothing after."""
        named = {
            _decode(d)["device_id"] for d in await self._device_items(run, project_id, user_id)
        }
        named -= set(owned)
        if not named:
            return []
        found = await run.all(
            self.q.devices_where["device_id"], project_id, self.q.dialect.array(sorted(named))
        )
        return sorted(named - {row[3] for row in found})

    async def _device_items(self, run: Run, project_id: int, user_id: int) -> list[str]:
        """The data of the user's device_registered items."""
        rows = await run.all(self.q.user_items_named, project_id, user_id, DEVICE_REGISTERED)
        return [r[0] for r in rows]

    async def _delete_events(self, run: Run, project_id: int, user_id: int) -> None:
        await run.execute(self.q.delete_user_events, project_id, user_id)

    # -- segments ------------------------------------------------------------------------
    async def segment_members(
        self,
        project_id: int,
        rule: Rule,
        now: int,
        user_ids: list[int] | None = None,
        ids: tuple[int, int | None] | None = None,
    ) -> list[int]:
        """The ids of the project's users (or of those of `user_ids`, or whose ids are in the
        range `ids`) for whom `rule` holds at `now` (ms), from one query (segments_sql.py).
        Raises RuleError when a rule value cannot be rendered at `now`."""
        sql, params = compile_members(rule, self.q.dialect, project_id, now, user_ids, ids)
        return [r[0] for r in await self.reader.all(sql, *params)]

    async def compute_members(
        self, project_id: int, rule: Rule, now: int, ids: tuple[int, int | None] | None = None
    ) -> list[int]:
        """One query that may take seconds over a large project (_apart)."""
        sql, params = compile_members(rule, self.q.dialect, project_id, now, ids=ids)
        return [r[0] for r in await self._apart(sql, params)]

    async def user_count(self, project_id: int) -> int:
        row = await self.reader.one(self.q.user_count, project_id)
        return int(row[0]) if row else 0

    async def user_chunks(self, project_id: int, size: int) -> tuple[list[tuple[int, int]], int]:
        async with self.reading() as run:
            row = await run.one(self.q.user_count, project_id)
            total = row[0] if row else 0
            if self.max_chunks is not None:
                size = max(size, -(-total // self.max_chunks))
            ends = await run.all(self.q.chunk_ends, project_id, size)
        # the last user ends no chunk: the last chunk (no end) holds it, and any user created since
        return [(r[0], r[1]) for r in ends if r[1] < total], total

    # -- lists ---------------------------------------------------------------------------
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
        state, progress = ("loading", 0.0) if rule is not None else ("draft", None)
        args = (project_id, name, type, rule, state, progress, 0, now, holder, until)
        async with self.writing() as run:
            row = await run.one(self.q.insert_list, *args)
        assert row is not None
        return ListRow(row[0], project_id, name, type, rule, state, progress, False, 1, now, now, 0)

    async def get_list(self, project_id: int, list_id: int) -> ListRow | None:
        row = await self.reader.one(self.q.list_by_id, project_id, list_id)
        return _list_row(row) if row else None

    async def lists(self, project_id: int) -> list[ListRow]:
        return [_list_row(r) for r in await self.reader.all(self.q.lists_of, project_id)]

    async def loading_lists(self, now: int) -> list[ListRow]:
        return [_list_row(r) for r in await self.reader.all(self.q.loading_lists, now)]

    async def claim_list(self, row: ListRow, holder: str, now: int, ttl_ms: int) -> bool:
        async with self.writing() as run:
            args = (row.id, row.version, holder, now + ttl_ms, now)
            return await run.execute(self.q.claim_list, *args) > 0

    async def release_list(self, list_id: int, holder: str) -> None:
        async with self.writing() as run:
            await run.execute(self.q.release_list, list_id, holder)

    async def fail_list(
        self, row: ListRow, holder: str, error: str, now: int, retry_at: int
    ) -> None:
        async with self.writing() as run:
            args = (row.id, row.version, holder, error, now, retry_at)
            await run.execute(self.q.fail_list, *args)

    async def list_progress(
        self, row: ListRow, holder: str, progress: float, now: int, ttl_ms: int
    ) -> bool:
        async with self.writing() as run:
            args = (row.id, row.version, holder, progress, now + ttl_ms)
            return await run.execute(self.q.list_progress, *args) > 0

    async def user_lists(self, project_id: int, user_id: int) -> list[ListRow]:
        rows = await self.reader.all(self.q.lists_of_user, project_id, user_id)
        return [_list_row(r) for r in rows]

    async def update_list(
        self, project_id: int, list_id: int, name: str, published: bool, now: int
    ) -> ListRow | None:
        async with self.writing() as run:
            await run.execute(self.q.update_list, project_id, list_id, name, int(published), now)
            row = await run.one(self.q.list_by_id, project_id, list_id)
        return _list_row(row) if row else None

    async def restart_list(
        self,
        project_id: int,
        list_id: int,
        rule: str | None,
        now: int,
        holder: str | None = None,
        until: int | None = None,
    ) -> ListRow | None:
        async with self.writing() as run:
            args = (project_id, list_id, rule, now, holder, until)
            await run.execute(self.q.restart_list, *args)
            row = await run.one(self.q.list_by_id, project_id, list_id)
        return _list_row(row) if row else None

    async def delete_list(self, project_id: int, list_id: int) -> bool:
        async with self.writing() as run:
            if not await run.execute(self.q.delete_list, project_id, list_id):
                return False
            for sql in self.q.delete_list_members:
                await run.execute(sql, list_id)
        self.list_deleted(list_id)
        return True

    def list_deleted(self, list_id: int) -> None:
        """After a list's deletion has committed: its entries in the lists' cache go (nothing
        else would: no row of it comes again to replace them)."""
        if self._lists is not None:
            self._lists.drop(list_id)

    async def list_members(
        self, project_id: int, list_id: int, limit: int, before: tuple[int, int] | None
    ) -> list[User]:
        args = (list_id, project_id, *(before or ()), limit)
        async with self.reading() as run:
            rows = await run.all(self.q.list_members[before is not None], *args)
            return await self._whole_users(run, rows)

    async def user_ids(self, project_id: int, external_ids: list[str]) -> dict[str, int]:
        ids = self.q.dialect.array([e for e in external_ids if "\0" not in e])
        rows = await self.reader.all(self.q.user_ids_by_external, project_id, ids)
        return {r[0]: r[1] for r in rows}

    async def change_members(
        self, project_id: int, list_id: int, add: list[int], remove: list[int], now: int
    ) -> None:
        async with self.writing() as run:
            await self._change_members(run, project_id, list_id, add, remove, now)

    async def _change_members(
        self, run: Run, project_id: int, list_id: int, add: list[int], remove: list[int], now: int
    ) -> None:
        q = self.q
        if add:
            await run.many(q.insert_list_member, [(list_id, project_id, u, now) for u in add])
        if remove:
            await run.many(q.delete_list_member, [(list_id, u) for u in remove])

    async def sweep_lists(self, now: int, limit: int) -> int:
        if not await self.reader.one(self.q.any_due, now):  # the usual case: no write lock
            return 0

        async def attempt() -> int:
            async with self.transaction() as tx:  # type: ignore[attr-defined]
                done: int = await tx.sweep(now, limit)
                return done

        return await self._retried(attempt)

    async def _retried(self, attempt: Callable[[], Awaitable[T]]) -> T:
        """`attempt()`, made again while it fails with what the backend says a new try
        resolves (`is_retryable`: PostgreSQL's conflicts with concurrent batches), up to
        MAX_ATTEMPTS times."""
        for n in range(MAX_ATTEMPTS):
            try:
                return await attempt()
            except Exception as exc:
                if n + 1 == MAX_ATTEMPTS or not self.is_retryable(exc):  # type: ignore[attr-defined]
                    raise
        raise AssertionError("unreachable")

    async def feed_mark(self, project_id: int) -> int:
        row = await self.reader.one(self.q.feed_mark, project_id)
        return row[0] if row and row[0] is not None else 0

    async def compute_tallies(
        self, project_id: int, rule: Rule, now: int, ids: tuple[int, int | None]
    ) -> Tallies | None:
        """Each user's tally of the rule (and what its document says, when the rule reads the
        user), for the lists' cache to start with: None when there is no cache to start, or
        the rule is not one it keeps. Queries that may take seconds (_apart)."""
        deps = dependencies(rule)
        if self._lists is None or not cacheable(deps):
            return None
        hits: dict[int, list[tuple[int, int]]] = {}
        sql, params = compile_tallies(rule, self.q.dialect, project_id, now, ids)
        for uid, index, at in await self._apart(sql, params):
            hits.setdefault(uid, []).append((index, at))
        if deps.profile_keys == frozenset():
            return {uid: Start(h) for uid, h in hits.items()}
        after, upto = ids
        users = await self._apart(
            self.q.users_in_range, [project_id, after, MAX_ID if upto is None else upto]
        )
        evaluator = Evaluator(rule, now)
        return {
            u.id: user_start(evaluator, deps, u, hits.get(u.id, []))
            for u in map(user_from_row, users)
        }

    async def _apart(self, sql: str, params: list[Any]) -> list[Any]:
        """The rows of a query that may take seconds over a large project, run so that
        ingestion goes on meanwhile (on PostgreSQL, any statement of the pool is)."""
        return await self.reader.all(sql, *params)

    async def warm_list(self, row: ListRow, now: int, mark: int, tallies: Tallies) -> bool:
        async with self.transaction() as tx:  # type: ignore[attr-defined]
            return bool(await tx.warm_entries(row, now, mark, tallies))

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
        q = self.q

        async def attempt() -> bool:
            async with self.transaction() as tx:  # type: ignore[attr-defined]
                run = tx.run
                if not await run.one(q.finish_list, row.id, row.version, holder):
                    return False
                # users whose data changed since the backfill's snapshot: evaluated now instead
                changed = {r[0] for r in await run.all(q.changed_since, row.project_id, mark, now)}
                had = {r[0] for r in await run.all(q.list_member_ids, row.id)}
                wanted = set(members)
                await self._change_members(
                    run,
                    row.project_id,
                    row.id,
                    sorted(wanted - had - changed),
                    sorted(had - wanted - changed),
                    now,
                )
                await run.execute(q.prune_gone_members, row.id, row.project_id)
                deps = dependencies(rule)
                if deps.time:  # every user is looked at once by the sweeper, which notes when next;
                    # with a fading rule only the members: a non-member is never due (evaluate)
                    due = q.due_members if deps.fading else q.due_all
                    await run.execute(due, row.id, row.project_id, now)
                if changed:
                    users = sorted(changed)
                    docs = await tx.documents(row.project_id, users, set(deps.events))
                    await tx.settle(
                        row.id, row.project_id, row.name, rule, deps, now_ms(), users, docs, False
                    )
                if tallies is not None:
                    await tx.start_entries(row.id, rule, deps, now, wanted, tallies, changed)
            return True

        return await self._retried(attempt)

    # -- the feed ------------------------------------------------------------------------
    async def event_feed(self, project_id: int, after: int | None, limit: int) -> list[FeedEvent]:
        rows = await self.reader.all(self.q.feed, project_id, after or 0, limit)
        return [_feed_event(r) for r in rows]

    async def latest_events(
        self, project_id: int, limit: int, after: int | None = None
    ) -> list[FeedEvent]:
        rows = await self.reader.all(self.q.latest, project_id, after or 0, limit)
        return [_feed_event(r) for r in rows]

    async def events_per_minute(self, project_id: int, since: int) -> dict[int, int]:
        # No index on time (it would slow every insert): received_at grows with the id, so the
        # first id of the period is found by bisection over the (project_id, id) index, and only
        # the period's rows are read.
        q = self.q
        async with self.reading() as run:
            first, last = (
                await run.one(q.first_event, project_id),
                await run.one(q.last_event, project_id),
            )
            if first is None or first[0] is None or last is None:
                return {}
            lo, hi = first[0], last[0] + 1
            start = None
            while lo < hi:
                mid = (lo + hi) // 2
                found = await run.one(q.event_from, project_id, mid)
                assert found is not None
                if found[1] >= since:
                    start, hi = found[0], mid
                else:
                    lo = found[0] + 1
            if start is None:
                return {}
            rows = await run.all(q.per_minute, project_id, start, since)
        return {r[0]: r[1] for r in rows}

    # -- portal admins and sessions ------------------------------------------------------
    async def create_admin(self, email: str, password_hash: str, now: int) -> Admin:
        async with self.writing() as run:
            row = await run.one(self.q.insert_admin, email, password_hash, now)
        assert row is not None
        return Admin(row[0], email, password_hash, now)

    async def find_admin(self, email: str) -> Admin | None:
        row = await self.reader.one(self.q.admin_by_email, email)
        return Admin(*row) if row else None

    async def list_admins(self) -> list[Admin]:
        return [Admin(*r) for r in await self.reader.all(self.q.admins)]

    async def set_admin_password(self, email: str, password_hash: str) -> bool:
        async with self.writing() as run:
            row = await run.one(self.q.set_admin_password, password_hash, email)
            if row is not None:
                await run.execute(self.q.delete_admin_sessions, row[0])
        return row is not None

    async def delete_admin(self, email: str) -> bool:
        async with self.writing() as run:
            row = await run.one(self.q.admin_by_email, email)
            if row is not None:
                await run.execute(self.q.delete_admin_sessions, row[0])
                await run.execute(self.q.delete_admin, email)
        return row is not None

    async def create_session(
        self, token_hash: str, admin_id: int, csrf_token: str, now: int, expires_at: int
    ) -> None:
        async with self.writing() as run:
            await run.execute(self.q.delete_expired_sessions, now)
            await run.execute(
                self.q.insert_session, token_hash, admin_id, csrf_token, now, expires_at
            )

    async def get_session(self, token_hash: str, now: int) -> AdminSession | None:
        row = await self.reader.one(self.q.live_session, token_hash, now)
        return AdminSession(*row) if row else None

    async def delete_session(self, token_hash: str) -> None:
        async with self.writing() as run:
            await run.execute(self.q.delete_session, token_hash)
