"""Memory exhaustion without a key (issue 14, finding 1): 1 MiB Authorization values were cached
one by one and took the server from 85 MB to 478 MB, all answered 401. Now a request head
larger than Settings.max_head bytes or Settings.max_headers fields is a 431 and the connection is closed; a value
that is not key-shaped is a 401 before any lookup; unknown keys are never cached."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import socket
import time
from pathlib import Path

import httpx
import pytest

from conftest import LiveServer, Tenant
from faults.pierproc import PierProcess, new_project
from pier.api.auth import KEY_SHAPE, KeyCache
from pier.domain.keys import SCOPES, generate_key
from pier.settings import Settings

BODY = [{"name": "x", "external_id": "u"}]
MIB = 1024 * 1024


def rss(pid: int) -> int:
    """Resident memory of a process, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


async def post_many(url: str, keys: list[str], concurrency: int = 10) -> list[int]:
    """POST one event per key, `concurrency` at a time; the statuses, in order."""
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as http:

        async def one(key: str) -> int:
            headers = {"Authorization": f"Bearer {key}"}
            return (await http.post("/api/client/events", json=BODY, headers=headers)).status_code

        return list(await asyncio.gather(*(one(k) for k in keys)))


def test_generated_keys_have_the_shape_auth_accepts() -> None:
    for scope in SCOPES:
        for _ in range(100):
            assert KEY_SHAPE.fullmatch(generate_key(scope))


def test_huge_and_unknown_keys_do_not_grow_the_server(database_url: str, tmp_path: Path) -> None:
    server = PierProcess(database_url, tmp_path / "server.log")
    try:
        project = new_project(database_url)
        assert asyncio.run(post_many(server.url, [project.public_key]))[0] == 204
        before = rss(server.pid)
        # 120 MiB of Authorization values: each 1 MiB, each different
        huge = [secrets.token_hex(16) + "k" * MIB for _ in range(120)]
        assert set(asyncio.run(post_many(server.url, huge))) == {431}
        # values a header may carry, but no key: 16 KiB each, then well-formed unknown keys
        long = [secrets.token_hex(8) + "x" * 16_384 for _ in range(1000)]
        assert set(asyncio.run(post_many(server.url, long))) == {401}
        unknown = [generate_key("public") for _ in range(1000)]
        assert set(asyncio.run(post_many(server.url, unknown))) == {401}
        grown = rss(server.pid) - before
        assert grown < 30 * MIB, f"RSS grew by {grown / MIB:.0f} MiB"
        # and the server still serves its real key
        assert asyncio.run(post_many(server.url, [project.public_key]))[0] == 204
    finally:
        server.terminate()


def test_a_head_too_large_is_431_json_and_closes_the_connection(tmp_path: Path) -> None:
    """Both the size and the count of header fields are bounded (the backend plays no part)."""
    server = PierProcess(f"sqlite:///{tmp_path}/pier.db", tmp_path / "server.log")
    try:
        for headers in (
            {"Authorization": "Bearer " + "k" * Settings.max_head},
            {f"x-h{i}": "v" for i in range(Settings.max_headers + 1)},
        ):
            r = httpx.post(f"{server.url}/api/client/events", json=BODY, headers=headers)
            assert r.status_code == 431, r.text
            assert r.headers["connection"] == "close"
            assert r.json()["status"] == "error" and "too large" in r.json()["error"]
        within = {f"x-h{i}": "v" * 100 for i in range(Settings.max_headers - 10)}
        assert httpx.get(f"{server.url}/health", headers=within).status_code == 200
        # a head sent in small pieces is counted as it comes, though no header is complete
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
            sock.sendall(b"GET /health HTTP/1.1\r\nX-Long: ")
            with contextlib.suppress(OSError):  # the server may close while we still send
                for _ in range(Settings.max_head // 1024 + 8):
                    sock.sendall(b"v" * 1024)
                    time.sleep(0.002)
            assert sock.recv(65536).startswith(b"HTTP/1.1 431 ")
        # a large body and the next request in one write: the body is not taken for a head
        body = b"x" * (4 * Settings.max_head)
        post = b"POST /health HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body)
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
            sock.sendall(post + body + b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            answers = b""
            while answers.count(b"HTTP/1.1 ") < 2 and (chunk := sock.recv(65536)):
                answers += chunk
        assert [a[:3] for a in answers.split(b"HTTP/1.1 ")[1:]] == [b"405", b"200"]
    finally:
        server.terminate()


@pytest.mark.parametrize(
    "value",
    ["pk_" + "0" * 31, "pk_" + "0" * 33, "PK_" + "0" * 32, "pk_" + "G" * 32, "x" * 20_000],
)
def test_values_not_shaped_like_keys_are_401_before_any_lookup(tenant: Tenant, value: str) -> None:
    r = tenant.public.post(
        "/api/client/events", json=BODY, headers={"Authorization": f"Bearer {value}"}
    )
    assert r.status_code == 401
    assert "a key is pk_ or sk_ followed by 32 lowercase hex digits" in r.json()["error"]


def test_unknown_keys_are_not_cached(server: LiveServer, tenant: Tenant) -> None:
    cache = key_cache(server)
    assert tenant.post("events", BODY).status_code == 204
    size = len(cache._entries)
    unknown = [generate_key("public") for _ in range(300)] + ["pk_" + "z" * 500] * 10
    assert set(asyncio.run(post_many(server.url, unknown))) == {401}
    assert len(cache._entries) == size
    assert tenant.post("events", BODY).status_code == 204


def key_cache(server: LiveServer) -> KeyCache:
    return server.server.config.app.app.state.keys
