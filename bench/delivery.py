"""Backlog drain of one webhook destination: N items already stored, a receiver in another
process that accepts at once (bare ASGI under uvicorn), the delivery engine in this process.
Prints items/s and the CPU time the delivery took per item (this process's: the engine, its
reads and writes; the receiver is not counted). `python bench/delivery.py [--items N] [--database-url URL]` (default: a
temporary SQLite file)."""

from __future__ import annotations

import argparse
import asyncio
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from pier.clock import now_ms
from pier.delivery import manage
from pier.delivery.engine import Deliverer
from pier.delivery.pacing import Pacing
from pier.store import make_store
from pier.store.destinations import Destinations

RECEIVER = """
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b""})
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def preload(store, project_id: int, n: int, users: int) -> None:  # type: ignore[no-untyped-def]
    """n events of `users` users (u1, u2...; the events go round them, as scenario (a)'s
    random users do), written straight into the tables (not what is measured)."""
    from pier.store.queries import Queries

    q: Queries = store.q
    async with store.writing() as run:
        await run.many(
            q.dialect.render(
                "INSERT INTO users (id, project_id, external_id, data, created_at, updated_at)"
                " VALUES ($1, $2, $3, '{{}}', 0, 0)"
            ),
            [(u, project_id, f"u{u}") for u in range(1, users + 1)],
        )
        now = now_ms()
        rows = [
            (
                project_id,
                1 + i * 7919 % users,
                "page_view",
                f'{{"path":"/p/{i}","n":{i}}}',
                now,
                now,
                f"m{i}",
            )
            for i in range(n)
        ]
        for i in range(0, n, 10_000):
            await run.many(q.insert_events, rows[i : i + 10_000])


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=200_000)
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--batch-size", type=int, default=None, help="default: the kind's")
    parser.add_argument("--users", type=int, default=1, help="users the items go round")
    args = parser.parse_args()
    folder = tempfile.mkdtemp(prefix="pier-bench-delivery-")
    url = args.database_url or f"sqlite:///{folder}/pier.db"
    app_file = Path(folder) / "receiver.py"
    app_file.write_text(RECEIVER)
    port = free_port()
    receiver = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "receiver:app",
            "--port",
            str(port),
            "--loop",
            "uvloop",
            "--http",
            "httptools",
            "--no-access-log",
            "--log-level",
            "warning",
        ],
        cwd=folder,
    )
    try:
        for _ in range(100):
            try:
                httpx.post(f"http://127.0.0.1:{port}/", content=b"x")
                break
            except httpx.TransportError:
                time.sleep(0.05)
        store = make_store(url)
        await store.open()
        await store.migrate()
        project = await store.create_project("bench", now_ms())
        await preload(store, project.id, args.items, args.users)
        ds = Destinations(store)  # type: ignore[arg-type]
        d, _ = manage.new_destination(
            project.id, "webhook", f"http://127.0.0.1:{port}/", batch_size=args.batch_size
        )
        did = await manage.add(ds, d, "beginning")
        deliverer = Deliverer(store, Pacing(scan_every=0.05))
        start, cpu = time.perf_counter(), time.process_time()
        deliverer.start()
        while (await ds.get(did)).delivered < args.items:  # type: ignore[union-attr]
            await asyncio.sleep(0.05)
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
        await deliverer.stop()
        await store.close()
        print(
            f"{args.items} items drained in {seconds:.2f} s: {args.items / seconds:,.0f} items/s,"
            f" {cpu / args.items * 1e6:.2f} us of this process's CPU an item"
            f" (batch {d.batch_size}, {args.users} users, {url.split(':', 1)[0]})"
        )
    finally:
        receiver.terminate()
        receiver.wait()
        if not args.database_url:
            import shutil

            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
