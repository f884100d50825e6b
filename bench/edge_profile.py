"""The HTTP side of an ingestion request, in process: Pier's ASGI app called in a loop with the
request wrk sends in scenario (a) (10 events; Host, Authorization, Content-Type,
Content-Length), a writer that commits nothing and costs nothing, no server and no socket;
the garbage collector on `pier serve`'s timer (which the loop never yields to).

Usage: .venv/bin/python bench/edge_profile.py [--requests N] [--repeat R] [--profile] [--steps]
        [--path /api/client/events|/api/client/identify]

Runs the pier the venv imports (`PYTHONPATH=/tmp/x/src` for another tree's). Prints the best of R
timings of N requests, in µs of the process's CPU time per request (the loop's own cost
included, ~1 µs), then, with --profile, cProfile's table of one more loop (its times are inflated
by the profiler; read the shares). --steps first times the events endpoint stopped after each of
its steps (authenticate, read the body, ...), each inside the whole path."""

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

from starlette.requests import Request
from starlette.responses import Response

from pier.api import ingest, schemas
from pier.api.body import read_body
from pier.api.edge import NO_CONTENT
from pier.app import INGESTION, create_app
from pier.clock import now_ms
from pier.commands import create_key
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


# --steps: the events endpoint (api/ingest.py) stopped after each of its steps
async def _edge_only(request: Request) -> Response:
    return NO_CONTENT


async def _auth(request: Request) -> Response:
    await request.app.state.keys.authenticate(request)
    return NO_CONTENT


async def _body(request: Request) -> Response:
    await request.app.state.keys.authenticate(request)
    await read_body(request)
    return NO_CONTENT


async def _checked(request: Request) -> Response:
    await request.app.state.keys.authenticate(request)
    ingest.checked(await read_body(request))
    return NO_CONTENT


async def _decoded(request: Request) -> Response:
    await request.app.state.keys.authenticate(request)
    raw = ingest.checked(await read_body(request))
    now = now_ms()
    schemas.events(raw, now, ingest.clock_skew(request, now))
    return NO_CONTENT


STEPS = [
    ("edge only (the endpoint answers 204)", _edge_only),
    ("+ authenticate", _auth),
    ("+ read_body", _body),
    ("+ checked", _checked),
    ("+ clock_skew, schemas.events", _decoded),
    ("+ the command, submit (= ingest.events)", ingest.events),
]


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

        async def best() -> float:
            await loop(2000)  # warm: the key cache, the code
            return min([await loop(args.requests) for _ in range(args.repeat)]) / args.requests

        if args.steps:  # the events endpoint cut after each step, in turn
            before = 0.0
            for label, endpoint in STEPS:
                edge.fast_routes = {args.path: endpoint}
                us = await best() * 1e6
                print(f"{label:48} {us:6.2f} µs  (+{us - before:5.2f})")
                before = us
            edge.fast_routes = INGESTION
        us = await best() * 1e6
        assert set(statuses) == {204}, set(statuses)
        print(f"{args.path}: {us:.2f} µs a request (best of {args.repeat})")
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
    p.add_argument("--steps", action="store_true", help="events: the µs of each step, in turn")
    p.add_argument("--path", default="/api/client/events")
    asyncio.run(main(p.parse_args()))
