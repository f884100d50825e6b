"""A server killed or stopped mid-load, on every backend: kill -9 loses nothing that was answered
204, and clients retrying what went unanswered create no duplicates (message ids); SIGTERM
answers the requests in flight, commits them and exits 0."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import pytest

from conftest import db_call
from faults.pierproc import (
    Load,
    PierProcess,
    Sent,
    new_project,
    retry_until_stored,
    stored_message_ids,
)


def assert_all_or_nothing(sent: list[Sent], stored: dict[str, int]) -> None:
    """Every request is stored whole or not at all, and no event twice."""
    assert all(n == 1 for n in stored.values()), "an event was stored twice"
    for s in sent:
        present = [stored.get(i, 0) for i in s.ids]
        assert present in ([1] * len(present), [0] * len(present)), f"half a request: {s.ids}"


def test_kill_9_mid_load_loses_nothing_answered_and_retries_make_no_duplicates(
    database_url: str, tmp_path: Path
) -> None:
    project = new_project(database_url)
    server = PierProcess(database_url, tmp_path / "server.log")
    load = Load(project.public_key, clients=20)
    try:
        asyncio.run(load.run(server.url, lambda lo: len(lo.acked()) >= 300, server.kill))
    finally:
        status = server.kill()
    assert status == -signal.SIGKILL

    acked = load.acked()
    unanswered = [s for s in load.sent if s.status != 204]
    assert all(s.status is None for s in unanswered), "a request was refused before the kill"
    assert unanswered, "the kill came when no request was in flight"

    stored = stored_message_ids(database_url, project.id)
    assert all(stored.get(i) == 1 for s in acked for i in s.ids), "an answered event was lost"
    assert_all_or_nothing(load.sent, stored)

    # Restart on the same database; clients retry what got no answer, and some of what did
    # (a reply lost on the way looks the same to them): nothing is stored twice.
    again = PierProcess(database_url, tmp_path / "server2.log")
    try:
        retries = [s.body for s in unanswered] + [s.body for s in acked[:100]]
        asyncio.run(retry_until_stored(again.url, project.public_key, retries))
    finally:
        again.terminate()

    stored = stored_message_ids(database_url, project.id)
    every_id = [i for s in load.sent for i in s.ids]
    assert sorted(stored) == sorted(every_id)
    assert set(stored.values()) == {1}
    counts = db_call(database_url, lambda store: store.stats(project.id))
    assert counts["users"] == load.clients
    assert counts["events"] == len(every_id) + 2 * load.clients  # + user_created, user_updated


@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_answers_what_is_in_flight_commits_it_and_exits_0(
    database_url: str, tmp_path: Path, workers: int
) -> None:
    project = new_project(database_url)
    server = PierProcess(database_url, tmp_path / "server.log", "--workers", str(workers))
    load = Load(project.public_key, clients=40)
    signalled: list[float] = []

    def sigterm() -> None:
        signalled.append(time.monotonic())
        os.killpg(server.pid, signal.SIGTERM)

    try:
        asyncio.run(load.run(server.url, lambda lo: len(lo.acked()) >= 300, sigterm))
        status = server.proc.wait(timeout=30)
    finally:
        server.kill()
    assert status == 0, server.log()[-3000:]
    # Requests sent before the signal were still answered after it: the in-flight ones.
    assert any(s.answered_at > signalled[0] for s in load.acked())

    stored = stored_message_ids(database_url, project.id)
    for s in load.sent:
        if s.status == 204:
            assert all(stored.get(i) == 1 for i in s.ids), "an answered event was lost"
        elif s.status is not None:  # refused (503 while shutting down): nothing stored
            assert s.status == 503 and not any(i in stored for i in s.ids)
    assert_all_or_nothing(load.sent, stored)
