"""Ingestion with dynamic lists kept current, against none (issue 13's target: with 20 lists of
mixed rules, at least 70% of the rate without lists).

Starts `pier serve` on a fresh SQLite file (or a PostgreSQL URL given), per run a project with
`--lists` dynamic lists (0 and 20 by default), then posts requests of events (a few names, some
counted by the lists' rules) and identifies (a plan trait the rules read) for `--users` users,
`--concurrency` requests at a time; prints events a second for each run.

    .venv/bin/python bench/lists_ingest.py [--requests 400] [--events 100] [--users 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

import httpx
from lists_a import condition, mixed_rules
from procs import CpuWatch, Server, free_port, own_cpu_s
from run import PIER, pier_cli

NAMES = ("purchase", "view", "login", "add_to_cart")


def rules() -> list[dict]:
    """20 mixed rules: a plan, a count in the last 30 days of events over a price, both, or
    either (lists_a.mixed_rules)."""
    return mixed_rules(
        20,
        lambda i: (NAMES[i % len(NAMES)], 30,
                   condition("p", "event", "$.price", "number", ">", str(i))),
        lambda i: condition("t", "user", "$.plan", "string", "=", ("pro", "free", "team")[i % 3]),
    )  # fmt: skip


def body(rng: random.Random, users: int, events: int) -> tuple[str, object]:
    if rng.random() < 0.1:
        plan = rng.choice(["pro", "free", "team"])
        return "identify", {"external_id": f"u{rng.randrange(users)}", "data": {"plan": plan}}
    return "events", [
        {"name": rng.choice(NAMES), "external_id": f"u{rng.randrange(users)}",
         "data": {"price": rng.randrange(40)}}
        for _ in range(events)
    ]  # fmt: skip


class Figures(NamedTuple):
    events_per_s: float
    server_us_per_event: float  # the server's CPU time per event committed
    client_pct: float  # this script's CPU during the run, % of one core
    other_pct: float  # every other process's, % of all CPUs (bench/README.md: "other CPU")


def measure(server: Server, url: str, tmp: Path, lists: int, args: argparse.Namespace) -> Figures:
    """One run on a project with `lists` lists, with the CPU the server and the rest used."""
    key, requests = prepare(url, tmp, lists, args)
    # encoded beforehand: the client's own work while measuring is as small as it can be
    queue = [(f"/api/client/{kind}", json.dumps(b).encode()) for kind, b in requests]
    if args.warmup:  # the same load first, not measured: users have a history, lists members
        asyncio.run(post(server.url, key, queue[: args.warmup], args.concurrency))
        requests, queue = requests[args.warmup :], queue[args.warmup :]
    sent = sum(len(b) for kind, b in requests if kind == "events")  # type: ignore[arg-type]
    own = own_cpu_s()
    with CpuWatch(server) as cpu:
        t0 = time.perf_counter()
        asyncio.run(post(server.url, key, queue, args.concurrency))
        wall = time.perf_counter() - t0
    return Figures(
        sent / wall,
        cpu.server_cpu_s / sent * 1e6,
        (own_cpu_s() - own) / wall * 100,
        cpu.other_pct,
    )


def prepare(
    url: str, tmp: Path, lists: int, args: argparse.Namespace
) -> tuple[str, list[tuple[str, object]]]:
    """A project with its key and its lists (computed); the requests to send."""
    project = pier_cli("projects", "create", f"lists-{lists}", "--database-url", url)
    key = pier_cli("keys", "create", "--project", project, "--scope", "public",
                   "--database-url", url)  # fmt: skip
    for i, rule in enumerate(rules()[:lists]):
        path = tmp / f"rule{i}.json"
        path.write_text(json.dumps(rule))
        pier_cli("lists", "create", "--project", project, "--name", f"l{i}",
                 "--rule-file", str(path), "--database-url", url)  # fmt: skip
    rng = random.Random(1)
    total = args.warmup + args.requests
    return key, [body(rng, args.users, args.events) for _ in range(total)]


async def post(base: str, key: str, queue: list[tuple[str, bytes]], concurrency: int) -> None:
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    async with httpx.AsyncClient(base_url=base, timeout=300) as http:

        async def worker() -> None:
            while queue:
                path, content = queue.pop()
                r = await http.post(path, content=content, headers=headers)
                assert r.status_code == 204, r.text

        await asyncio.gather(*(worker() for _ in range(concurrency)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument(
        "--warmup", type=int, default=0, help="requests sent before the measured ones"
    )
    parser.add_argument("--events", type=int, default=100, help="events per request")
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--lists", type=int, nargs="+", default=[0, 20])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="pier-lists-") as name:
        tmp = Path(name)
        url = args.database_url or f"sqlite:///{tmp}/pier.db"
        port = free_port()
        argv = [str(PIER), "serve", "--port", str(port), "--database-url", url]
        server = Server("pier", argv, port, tmp / "server.log")
        server.start()
        try:
            server.wait_healthy()
            runs = {n: measure(server, url, tmp, n, args) for n in args.lists}
        finally:
            server.stop()
    base = runs[args.lists[0]]
    for n, f in runs.items():
        print(
            f"{n:>3} dynamic lists: {f.events_per_s:,.0f} events/s "
            f"({f.events_per_s / base.events_per_s:.0%} of {args.lists[0]}), "
            f"server CPU {f.server_us_per_event:.1f} us/event "
            f"({base.server_us_per_event / f.server_us_per_event:.0%} of the rate per CPU), "
            f"client CPU {f.client_pct:.0f}%, other CPU {f.other_pct:.0f}%"
        )


if __name__ == "__main__":
    main()
