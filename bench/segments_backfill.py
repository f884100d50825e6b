"""Backfill of a dynamic list over a project of 100,000 users and 1,000,000 events (issue 13's
target: under 20 s): the one query (store/segments_sql.py) that finds the members of a rule, and
the whole backfill as a server runs it (pier.lists.compute: chunks of 5,000 users, each one
query, the progress noted after each, then the transaction that writes the members).

Usage: .venv/bin/python bench/segments_backfill.py [--database-url URL] [--users N] [--events N]
(no URL: a temporary SQLite file; a PostgreSQL URL: a temporary database on that server).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import tempfile
import time
from pathlib import Path

import database

from pier.domain.segments import parse_rule
from pier.domain.segments.values import parse_date
from pier.lists import Backfill
from pier.store import make_store

NOW = parse_date("2024-06-15T12:00:00Z")
DAY = 86_400_000
NAMES = ("purchase", "view", "login", "add_to_cart")


def rule(*children: dict) -> dict:
    return {"uuid": "r", "type": "wrapper", "group": "parent", "path": "$", "operator": "and"} | {
        "children": list(children)
    }


def purchases(count: int, *children: dict) -> dict:
    frequency = {"period": {"type": "rolling", "unit": "day", "value": 30}}
    return {
        "uuid": "e",
        "type": "wrapper",
        "group": "event",
        "path": "$.name",
        "operator": "and",
        "value": "purchase",
        "frequency": frequency | {"operator": ">=", "count": count},
        "children": list(children),
    }


RULES = {
    "purchase >= 3 in 30 days": rule(purchases(3)),
    "plan = pro, purchase with price > 50 >= 2 in 30 days": rule(
        {"uuid": "p", "type": "string", "group": "user", "path": "$.plan", "operator": "="}
        | {"value": "pro"},
        purchases(
            2,
            {"uuid": "c", "type": "number", "group": "event", "path": "$.price"}
            | {"operator": ">", "value": "50"},
        ),
    ),
    "did not log in in 7 days (count < 1)": rule(
        purchases(1)
        | {
            "value": "login",
            "frequency": {
                "period": {"type": "rolling", "unit": "day", "value": 7},
                "operator": "<",
                "count": 1,
            },
        }
    ),
}


async def main(url: str, users: int, events: int) -> None:
    store = make_store(url)
    await store.open()
    await store.migrate()
    pid = (await store.create_project("bench", 0)).id
    rnd = random.Random(1)
    base = pid * 10_000_000
    user_rows = [
        (
            base + i,
            pid,
            f"u{i}",
            None,
            None,
            None,
            None,
            json.dumps({"plan": rnd.choice(["pro", "free"])}),
            0,
            0,
        )
        for i in range(users)
    ]
    event_rows = [
        (
            pid,
            base + rnd.randrange(users),
            rnd.choice(NAMES),
            json.dumps({"price": rnd.randrange(100)}),
            NOW - rnd.randrange(90 * DAY),
            NOW,
            None,
        )
        for _ in range(events)
    ]
    started = time.perf_counter()
    async with store.writing() as run:
        for i in range(0, len(user_rows), 10_000):
            await run.many(store.q.insert_user, user_rows[i : i + 10_000])
        for i in range(0, len(event_rows), 50_000):
            await run.many(store.q.insert_events, event_rows[i : i + 50_000])
    print(f"loaded {users} users and {events} events in {time.perf_counter() - started:.1f} s")
    if url.startswith("postgres"):  # as autovacuum does after such a load: planner statistics
        await store.pool.execute("ANALYZE")  # type: ignore[attr-defined]
    for name, tree in RULES.items():
        started = time.perf_counter()
        members = await store.segment_members(pid, parse_rule(tree, NOW), NOW)
        print(f"{name}: {len(members)} members in {time.perf_counter() - started:.2f} s")
        row = await store.create_list(pid, name, "dynamic", json.dumps(tree), NOW)
        started = time.perf_counter()
        backfill = Backfill(store, row, "bench", NOW)
        notes = [(p, time.perf_counter()) async for p in backfill.chunks()]
        assert backfill.done
        ended = time.perf_counter()
        done = await store.get_list(pid, row.id)
        assert done is not None and done.users_count == len(members)
        print(
            f"  backfill in {len(notes) + 1} chunks: {ended - started:.2f} s (after the last"
            f" progress note: {ended - notes[-1][1]:.2f} s, its last chunk and finish_list)"
        )
    await store.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--database-url")
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--events", type=int, default=1_000_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as workdir:
        db = database.prepare(args.database_url, Path(workdir), fresh=True)
        try:
            asyncio.run(main(db.url, args.users, args.events))
        finally:
            database.drop(db)
