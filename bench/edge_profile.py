"""The HTTP side of an ingestion request, in process: Pier's ASGI app called in a loop with the
request wrk sends in scenario (a) (10 events; Host, Authorization, Content-Type,
Content-Length), a writer that commits nothing and costs nothing, no server and no socket;
the garbage collector on `pier serve`'s timer (which the loop never yields to).

Usage: .venv/bin/python bench/edge_profile.py [--requests N] [--repeat R] [--profile]
        [--path /api/client/events|/api/client/identify]

Runs the pier the venv imports (`PYTHONPATH=/tmp/x/src` for another tree's). Prints the best of R
timings of N requests, in µs of the process's CPU time per request (the loop's own cost
included, ~1 µs), then, with --profile, cProfile's table of one more loop (its times are inflated
by the profiler; read the shares)."""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import pstats
import random
import tempfile
import time
from typing import Any

from pier.app import create_app
from pier.cli import create_key
from pier.clock import now_ms
from pier.domain.keys import PUBLIC
from pier.settings import Settings


class NullWriter:
    """Commits nothing: what is left is the HTTP side."""

    async def submit(self, cmd: Any, request_key: Any = None) -> None:
        return None


def events_body(rng: random.Random) -> bytes:
    events = [
        {
            "name": "product_viewed",
            "external_id": f"u{rng.randint(1, 10_000)}",
            "data": {"product_id": f"p{rng.randint(1, 5000)}", "price": 12.5, "currency": "EUR"},
        }
        for _ in range(10)
    ]
    return json.dumps(events, separators=(",", ":")).encode()


def identify_body(rng: random.Random) -> bytes:
    n = rng.randint(1, 100_000)
    body = {"external_id": f"u{n}", "email": f"u{n}@example.com", "data": {"plan": "pro"}}
    return json.dumps(body, separators=(",", ":")).encode()


async def main(args: argparse.Namespace) -> None:
    tmp = tempfile.mkdtemp(prefix="pier-edge-")
    edge = create_app(Settings(database_url=f"sqlite:///{tmp}/pier.db"), tune_gc=True)
    starlette = edge.app
    async with starlette.router.lifespan_context(starlette):
        store = starlette.state.store
        project = await store.create_project("bench", now_ms())
        key = await create_key(store, project.id, PUBLIC, "bench")
        starlette.state.writer = NullWriter()
        rng = random.Random(1)
        make = events_body if args.path.endswith("/events") else identify_body
        bodies = [make(rng) for _ in range(64)]
        statuses: list[int] = []

        async def send(message: Any) -> None:
            if message["type"] == "http.response.start":
                statuses.append(message["status"])

        async def one(body: bytes) -> None:
            scope = {
                "type": "http",
                "asgi": {"version": "3.0", "spec_version": "2.3"},
                "http_version": "1.1",
                "server": ("127.0.0.1", 8000),
                "client": ("127.0.0.1", 50000),
                "scheme": "http",
                "method": "POST",
                "root_path": "",
                "path": args.path,
                "raw_path": args.path.encode(),
                "query_string": b"",
                "headers": [
                    (b"host", b"127.0.0.1:8000"),
                    (b"authorization", b"Bearer " + key.encode()),
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
                "state": {},
            }

            async def receive() -> dict[str, Any]:
                return {"type": "http.request", "body": body, "more_body": False}

            await edge(scope, receive, send)

        async def loop(n: int) -> float:
            started = time.process_time()
            for i in range(n):
                await one(bodies[i & 63])
            return time.process_time() - started

        await loop(2000)  # warm: the key cache, the code
        best = min([await loop(args.requests) for _ in range(args.repeat)])
        assert set(statuses) == {204}, set(statuses)
        print(f"{args.path}: {best / args.requests * 1e6:.2f} µs a request (best of {args.repeat})")
        if args.profile:
            profiler = cProfile.Profile()
            profiler.enable()
            await loop(args.requests)
            profiler.disable()
            pstats.Stats(profiler).sort_stats("tottime").print_stats(30)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--requests", type=int, default=20_000)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--profile", action="store_true")
    p.add_argument("--path", default="/api/client/events")
    asyncio.run(main(p.parse_args()))
