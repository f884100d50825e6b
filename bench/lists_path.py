"""In-process, no HTTP: the SQLite writer's path for scenario (l)'s requests, with and without
its 20 dynamic lists (bench/lists_a.py's rules over bench/gen.lua's six events, 10 a request,
users drawn from 10,000), as `Writer` runs them: first as much as (a) stores before (l) starts,
then the lists are made and computed (with their sweep), then the measured batches. Prints
the process CPU per request (all threads) over the measured batches and their last quarter,
and the bytes the process wrote a request (the database's pages, at each commit).

What makes its figures follow the HTTP bench's (docs/performance.md, "(l) at the target's
edge"): the cycle collector set as `pier serve` sets it (process/gctune.py: frozen after the
set-up, then one young collection a second, counted in), and batches of the size the server's
writer takes under (l), 16 - 25 requests (the lists cost a fixed part per batch). Run it
against two source trees in turn to compare them (the other one through PYTHONPATH, e.g. a
`git archive` of its `src`), and with `--lists 0` for the cost without lists:

    .venv/bin/python bench/lists_path.py [--lists 20] [--requests 24] [--batches 1066]
    PYTHONPATH=/tmp/parent/src .venv/bin/python bench/lists_path.py
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import random
import statistics
import sys
import time
from pathlib import Path

import msgspec

import pier
from pier import lists
from pier.clock import now_ms
from pier.domain.commands import Command, EventIn, TrackEvents

sys.path.insert(0, str(Path(__file__).parent))
from lists_a import rules  # noqa: E402
from write_path import bench_writer  # noqa: E402

USERS = 10_000
PRE_EVENTS = 450_000  # about what (a) stores before (l) starts
PAGES = ["/", "/pricing", "/products", "/blog", "/checkout", "/account", "/search"]
SOURCES = ["google", "newsletter", "direct", "twitter", "partner"]
CURRENCIES = ["EUR", "USD", "GBP"]
SCREENS = ["home", "cart", "settings", "product", "onboarding"]


def event(rng: random.Random) -> EventIn:
    """One of gen.lua's events, its data as the raw JSON the HTTP edge hands the writer."""
    r, pick = rng.randint, rng.choice
    price = f"{r(1, 499)}.{r(0, 99):02d}"
    name, data = pick(
        [
            ("page_view", {"path": f"{pick(PAGES)}/{r(1, 500)}", "referrer": pick(SOURCES),
                           "duration_ms": r(50, 30000)}),
            ("product_viewed", {"product_id": f"p{r(1, 5000)}", "price": float(price),
                                "currency": pick(CURRENCIES)}),
            ("add_to_cart", {"product_id": f"p{r(1, 5000)}", "quantity": r(1, 5),
                             "price": float(price), "currency": pick(CURRENCIES)}),
            ("purchase", {"order_id": f"o{r(1, 10**9)}", "total": float(price),
                          "currency": pick(CURRENCIES), "items": r(1, 8), "coupon": None}),
            ("button_click", {"button": f"cta_{r(1, 40)}", "screen": pick(SCREENS),
                              "experiment": pick("AB")}),
            ("search", {"query": f"item {r(1, 10000)}", "results": r(0, 200),
                        "filters": {"in_stock": r(0, 1) == 1}}),
        ]
    )  # fmt: skip
    raw = msgspec.Raw(msgspec.json.encode(data))
    return EventIn(None, f"u{r(1, USERS)}", name, raw)


def requests(pid: int, n: int, rng: random.Random) -> list[Command]:
    return [TrackEvents(project_id=pid, events=[event(rng) for _ in range(10)]) for _ in range(n)]


async def main(n_lists: int, batches: int, per_batch: int) -> None:
    rng = random.Random(1)
    async with bench_writer() as (store, pid, writer):
        for _ in range(PRE_EVENTS // (10 * per_batch)):
            await writer.run_batch(requests(pid, per_batch, rng))
            await store.maintain()
        for i, rule in enumerate(rules(n_lists)):
            text = msgspec.json.encode(rule).decode()
            row = await lists.create(store, pid, f"bench-{i}", "dynamic", text, "bench", now_ms())
            assert await lists.compute(store, row, "bench")
        while await store.sweep_lists(now_ms(), 500):
            pass
        gc.collect()
        gc.freeze()
        gc.disable()  # as pier serve: young collections on a timer (process/gctune.py)
        collected = time.monotonic()
        written = _written()
        cpu = []
        for _ in range(batches):
            cmds = requests(pid, per_batch, rng)
            t0 = time.process_time()
            await writer.run_batch(cmds)
            await store.maintain()
            if time.monotonic() - collected >= 1.0:
                gc.collect(1)
                collected = time.monotonic()
            cpu.append((time.process_time() - t0) / per_batch * 1e6)
        written = _written() - written
        gc.enable()
        gc.unfreeze()
    last = cpu[-(len(cpu) // 4) :]
    print(
        f"{pier.__file__}: {n_lists} lists, {batches} batches of {per_batch} requests x 10"
        f" events; CPU us per request: {statistics.mean(cpu):.1f}"
        f" (median {statistics.median(cpu):.1f}), last quarter {statistics.mean(last):.1f}"
        f" (median {statistics.median(last):.1f}); written {written / batches / per_batch:,.0f}"
        " bytes a request"
    )


def _written() -> int:
    """Bytes this process has written so far (Linux: /proc/self/io's wchar, WAL frames
    included): a count of work the machine's noise does not move, unlike the CPU."""
    with open("/proc/self/io") as io:
        return next(int(line.split()[1]) for line in io if line.startswith("wchar:"))


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--lists", type=int, default=20, help="dynamic lists (0: none)")
    p.add_argument("--batches", type=int, default=1066)
    p.add_argument("--requests", type=int, default=24, help="requests per batch")
    a = p.parse_args()
    asyncio.run(main(a.lists, a.batches, a.requests))
