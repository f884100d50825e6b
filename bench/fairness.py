"""How long one project's single write waits behind another project's merging load.

Starts `pier serve` on a fresh SQLite file, makes a "heavy" and a "light" project, and per
round: stores R x M identified and R x M anonymous users in the heavy project, posts R
concurrent requests of E events, each request linking M of the anonymous users to identified
ones (M merges; the events cycle over its M pairs), and 50 ms later one event for the light
project. Prints the light request's latency and each heavy request's status and time.
Nothing is asserted (tests count work instead: tests/test_fairness.py).

    .venv/bin/python bench/fairness.py [--requests 4] [--events 1000] [--merges 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import httpx
from procs import Server, free_port
from run import PIER, pier_cli


def events(pairs: list[tuple[str | None, str | None]]) -> list[dict]:
    return [
        {"name": "e", **({"anonymous_id": a} if a else {}), **({"external_id": e} if e else {})}
        for a, e in pairs
    ]


async def timed(http: httpx.AsyncClient, body: list[dict], key: str) -> tuple[str, float]:
    t0 = time.perf_counter()
    try:
        resp = await http.post(
            "/api/client/events", json=body, headers={"Authorization": f"Bearer {key}"}
        )
        status = str(resp.status_code)
    except httpx.TimeoutException:
        status = "timeout"
    return status, time.perf_counter() - t0


async def one_round(
    http: httpx.AsyncClient, heavy: str, light: str, r: int, args: argparse.Namespace
) -> tuple[tuple[str, float], list[tuple[str, float]]]:
    hh = {"Authorization": f"Bearer {heavy}"}
    users = args.requests * args.merges
    for start in range(0, users, 1000):  # the users to merge, stored beforehand
        ids = range(start, min(start + 1000, users))
        for pairs in ([(None, f"e{r}-{i}") for i in ids], [(f"a{r}-{i}", None) for i in ids]):
            resp = await http.post("/api/client/events", json=events(pairs), headers=hh)
            assert resp.status_code == 204, resp.text
    bodies = [
        events(
            [
                (f"a{r}-{s + i % args.merges}", f"e{r}-{s + i % args.merges}")
                for i in range(args.events)
            ]
        )
        for s in range(0, users, args.merges)
    ]
    merging = [asyncio.create_task(timed(http, body, heavy)) for body in bodies]
    await asyncio.sleep(0.05)
    light_result = await timed(http, events([(None, f"l{r}")]), light)
    return light_result, await asyncio.gather(*merging)


async def measure(url: str, base: str, args: argparse.Namespace) -> None:
    keys = []
    for name in ("heavy", "light"):
        project = pier_cli("projects", "create", name, "--database-url", url)
        keys.append(
            pier_cli(
                "keys", "create", "--project", project, "--scope", "public", "--database-url", url
            )
        )
    lights = []
    async with httpx.AsyncClient(base_url=base, timeout=args.timeout) as http:
        for r in range(args.rounds):
            (status, secs), heavy = await one_round(http, keys[0], keys[1], r, args)
            lights.append(secs)
            heavy_desc = ", ".join(f"{s} in {t * 1000:.0f} ms" for s, t in heavy)
            print(
                f"round {r}: light {status} in {secs * 1000:.0f} ms; heavy: {heavy_desc}",
                flush=True,
            )
    print(
        f"light request: median {statistics.median(lights) * 1000:.0f} ms,"
        f" max {max(lights) * 1000:.0f} ms over {args.rounds} rounds"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=4, help="heavy requests per round (R)")
    parser.add_argument("--events", type=int, default=1000, help="events per heavy request (E)")
    parser.add_argument("--merges", type=int, default=1000, help="merges per heavy request (M)")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per request")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="pier-fair-") as tmp:
        url = f"sqlite:///{tmp}/pier.db"
        port = free_port()
        argv = [str(PIER), "serve", "--port", str(port), "--database-url", url]
        server = Server("pier", argv, port, Path(tmp) / "server.log")
        server.start()
        try:
            server.wait_healthy()
            asyncio.run(measure(url, server.url, args))
        finally:
            server.stop()


if __name__ == "__main__":
    main()
