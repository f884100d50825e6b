"""`pier serve --workers 2 --writer-process` on SQLite (and PostgreSQL, where it keeps one
process writing, which keeps the lists' cache), as real processes: two HTTP workers send their
commands to one writer process over a unix socket. Data is committed, idempotency holds across
the workers, a refusal's 422 arrives with its pointer; kill -9 of the writer process answers
the requests in flight 503 (never 204), loses nothing acknowledged, and the writer process is
started again; kill -9 of a worker loses nothing acknowledged either."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from conftest import db_call
from faults.pierproc import (
    Load,
    PierProcess,
    new_project,
    retry_until_stored,
    stored_message_ids,
)
from faults.test_crash import assert_all_or_nothing

WORKER = re.compile(r"Started server process \[(\d+)\]")


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/pier.db"


def serving(url: str, tmp_path: Path) -> Iterator[PierProcess]:
    pier = PierProcess(url, tmp_path / "server.log", "--workers", "2", "--writer-process")
    try:
        yield pier
    finally:
        pier.kill()


@pytest.fixture
def server(sqlite_url: str, tmp_path: Path) -> Iterator[PierProcess]:
    yield from serving(sqlite_url, tmp_path)


@pytest.fixture(params=["sqlite", "postgres"])
def any_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/pier.db"
    return str(request.getfixturevalue("pg_server").create_database())


@pytest.fixture
def any_server(any_url: str, tmp_path: Path) -> Iterator[PierProcess]:
    yield from serving(any_url, tmp_path)


def pids(server: PierProcess, pattern: re.Pattern[str]) -> list[int]:
    return [int(m) for m in pattern.findall(server.log())]


def wait_for(condition, what: str, timeout: float = 30) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_two_workers_commit_through_one_writer_process(
    any_url: str, any_server: PierProcess
) -> None:
    url, server = any_url, any_server
    project = new_project(url)
    assert len(server.writer_pids()) == 1
    wait_for(lambda: len(pids(server, WORKER)) == 2, "both workers")
    auth = {"Authorization": f"Bearer {project.public_key}"}
    identify = {"external_id": "u-0", "email": "ann@example.com", "data": {"n": 1}}

    async def post(path: str, body: object, headers: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
        # a connection of its own each: the two workers take some each
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            return await http.post(path, json=body, headers={**auth, **(headers or {})})

    async def main():  # type: ignore[no-untyped-def]
        events = [
            post(
                "/api/client/events",
                [
                    {"name": "e", "external_id": f"u-{i % 4}", "message_id": f"m-{i}-{j}"}
                    for j in range(10)
                ],
            )
            for i in range(40)
        ]
        keyed = [post("/api/client/identify", identify, {"Idempotency-Key": "k"}) for _ in range(8)]
        return await asyncio.gather(*events, *keyed)

    answers = asyncio.run(main())
    assert [r.status_code for r in answers] == [204] * 48, [r.text for r in answers]
    again = asyncio.run(
        post(
            "/api/client/identify", {**identify, "email": "b@example.com"}, {"Idempotency-Key": "k"}
        )
    )
    assert again.status_code == 409, again.text
    assert "Idempotency-Key k was already used" in again.json()["error"]

    assert (
        asyncio.run(
            post("/api/client/alias", {"anonymous_id": "a", "external_id": "u-1"})
        ).status_code
        == 204
    )
    refused = asyncio.run(post("/api/client/alias", {"anonymous_id": "a", "external_id": "u-2"}))
    assert refused.status_code == 422
    assert refused.json()["errors"] == [
        {
            "path": "/anonymous_id",
            "message": "anonymous_id a is already aliased to another external_id",
        }
    ]
    segment = asyncio.run(
        post(
            "/api/client/segment",
            {
                "batch": [
                    {"type": "track", "event": "x", "userId": "u-3"},
                    {"type": "alias", "previousId": "a", "userId": "u-3"},
                ]
            },
        )
    )
    assert segment.status_code == 422, segment.text
    assert segment.json()["errors"][0]["path"].startswith("/batch/1")

    stored = stored_message_ids(url, project.id)
    assert len(stored) == 400 and set(stored.values()) == {1}
    counts = db_call(url, lambda store: store.stats(project.id))
    assert counts["users"] == 4  # u-0..u-3; the refused Segment batch created nothing
    user = httpx.get(
        f"{server.url}/api/client/users/u-0",
        headers={"Authorization": f"Bearer {project.secret_key}"},
    ).json()
    assert user["email"] == "ann@example.com"  # the identify was stored once, the 409 not
    assert len(server.writer_pids()) == 1

    # /metrics, from whichever worker answers, counts the writer process's batches
    metrics = httpx.get(f"{server.url}/metrics", timeout=10)
    assert metrics.status_code == 200, metrics.text
    (batches,) = re.findall(r"^pier_writer_batch_items_count (\S+)$", metrics.text, re.M)
    assert float(batches) >= 1


def test_kill_9_of_the_writer_process_answers_503_in_flight_and_loses_nothing_answered(
    sqlite_url: str, server: PierProcess
) -> None:
    project = new_project(sqlite_url)
    (writer,) = server.writer_pids()
    load = Load(project.public_key, clients=20, max_requests=100)

    def kill_while_requests_wait_in_it() -> None:
        # the test holds the write lock: the clients' next requests reach the writer process
        # and wait there (its busy timeout is 10 s); then it is killed, then the lock released
        lock = sqlite3.connect(sqlite_url.removeprefix("sqlite:///"))
        lock.execute("BEGIN IMMEDIATE")
        time.sleep(0.5)
        os.kill(writer, signal.SIGKILL)
        lock.rollback()
        lock.close()

    fault = threading.Thread(target=kill_while_requests_wait_in_it)  # the clients go on meanwhile
    asyncio.run(load.run(server.url, lambda lo: len(lo.acked()) >= 300, fault.start))
    fault.join()
    refused = [s for s in load.sent if s.status != 204]
    assert refused, "the kill came when no request was in flight"
    # the workers stayed up: what was in flight is answered 503 (not acknowledged), not cut off
    assert {s.status for s in refused} == {503}, [s.status for s in refused]
    stored = stored_message_ids(sqlite_url, project.id)
    assert all(stored.get(i) == 1 for s in load.acked() for i in s.ids), (
        "an answered event was lost"
    )
    assert_all_or_nothing(load.sent, stored)

    # the writer process is started again, and the same workers take writes again
    wait_for(lambda: len(server.writer_pids()) == 2, "the writer process to start again")
    assert server.writer_pids()[1] != writer
    asyncio.run(retry_until_stored(server.url, project.public_key, [s.body for s in refused]))
    stored = stored_message_ids(sqlite_url, project.id)
    assert sorted(stored) == sorted(i for s in load.sent for i in s.ids)
    assert set(stored.values()) == {1}
    assert len(pids(server, WORKER)) == 2  # no worker was restarted


def test_kill_9_of_a_worker_loses_nothing_answered(sqlite_url: str, server: PierProcess) -> None:
    project = new_project(sqlite_url)
    wait_for(lambda: len(pids(server, WORKER)) == 2, "both workers")
    victim = pids(server, WORKER)[0]
    load = Load(project.public_key, clients=20, max_requests=60)
    asyncio.run(load.run(server.url, lambda lo: len(lo.acked()) >= 300, lambda: os.kill(victim, 9)))
    stored = stored_message_ids(sqlite_url, project.id)
    assert all(stored.get(i) == 1 for s in load.acked() for i in s.ids), (
        "an answered event was lost"
    )
    assert_all_or_nothing(load.sent, stored)
    assert all(s.status in (204, None) for s in load.sent)

    wait_for(lambda: len(pids(server, WORKER)) == 3, "uvicorn to start the worker again")
    unanswered = [s.body for s in load.sent if s.status != 204]
    asyncio.run(retry_until_stored(server.url, project.public_key, unanswered))
    stored = stored_message_ids(sqlite_url, project.id)
    assert sorted(stored) == sorted(i for s in load.sent for i in s.ids)
    assert set(stored.values()) == {1}
    assert len(server.writer_pids()) == 1  # the writer process was not disturbed


def test_sigterm_stops_the_workers_then_the_writer_process_and_exits_0(
    sqlite_url: str, server: PierProcess
) -> None:
    project = new_project(sqlite_url)
    load = Load(project.public_key, clients=20)
    asyncio.run(
        load.run(
            server.url,
            lambda lo: len(lo.acked()) >= 200,
            lambda: os.killpg(server.pid, signal.SIGTERM),  # every process of the group at once
        )
    )
    assert server.proc.wait(timeout=40) == 0, server.log()[-3000:]
    stored = stored_message_ids(sqlite_url, project.id)
    for s in load.sent:
        if s.status == 204:
            assert all(stored.get(i) == 1 for i in s.ids), "an answered event was lost"
        elif s.status is not None:  # refused while shutting down: nothing stored
            assert s.status == 503 and not any(i in stored for i in s.ids)
    assert_all_or_nothing(load.sent, stored)
    assert "died" not in server.log()  # the writer process exited by itself, not restarted


COMPUTED = re.compile(r"list (\d+) computed by process (\d+)")


def test_the_writer_process_computes_the_lists_the_workers_are_asked_for(
    any_url: str, any_server: PierProcess
) -> None:
    """A list created or changed through a worker is computed by the writer process (so that
    its end is that process's own transaction, and its lists' cache stays on), under the lease
    the worker created it with: ready, with its members, and logged by the writer process."""
    url, server = any_url, any_server
    project = new_project(url)
    (writer,) = server.writer_pids()
    public = {"Authorization": f"Bearer {project.public_key}"}
    secret = {"Authorization": f"Bearer {project.secret_key}"}
    with httpx.Client(base_url=server.url, timeout=30) as http:
        for i in range(4):
            events = [{"name": "buy", "external_id": f"u-{i}"} for _ in range(i + 1)]
            assert http.post("/api/client/events", json=events, headers=public).status_code == 204

        def rule(times: int) -> dict[str, object]:
            return {
                "uuid": "r", "type": "wrapper", "group": "user", "path": "$", "operator": "and",
                "children": [{"uuid": "e", "type": "wrapper", "group": "event", "path": "$.name",
                              "value": "buy", "operator": "and", "frequency":
                              {"period": {"type": "rolling", "unit": "day", "value": 30},
                               "operator": ">=", "count": times}}],
            }  # fmt: skip

        def ready(list_id: int, count: int) -> bool:
            got = http.get(f"/api/client/lists/{list_id}", headers=secret).json()
            return got["state"] != "loading" and got["users_count"] == count

        made = http.post(
            "/api/client/lists",
            json={"name": "buyers", "type": "dynamic", "rule": rule(3)},
            headers=secret,
        )
        assert made.status_code == 201, made.text
        list_id = made.json()["id"]
        wait_for(lambda: ready(list_id, 2), "the list computed")  # u-2, u-3
        changed = http.patch(f"/api/client/lists/{list_id}", json={"rule": rule(2)}, headers=secret)
        assert changed.status_code == 200, changed.text
        wait_for(lambda: ready(list_id, 3), "the list computed again")  # u-1, u-2, u-3
    wait_for(lambda: len(COMPUTED.findall(server.log())) == 2, "both computations logged")
    assert COMPUTED.findall(server.log()) == [(str(list_id), str(writer))] * 2
