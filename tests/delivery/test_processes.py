"""Delivery by real `pier serve` processes (tests/faults/pierproc.py): kill -9 of the delivering
process mid-batch, then a restart (a webhook gets every item at least once, a `pier` target
exactly once); two processes on one database deliver each destination from one process at a
time, and the survivor takes over within 30 s of a kill -9."""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from conftest import Tenant, db_call
from delivery.receiver import receiver, wait_for
from faults.pierproc import PierProcess, new_project
from pier import settings
from pier.delivery import manage
from pier.store.destinations import Destinations

DELIVERY_NICE = settings.declared("delivery_nice").default
assert isinstance(DELIVERY_NICE, int) and DELIVERY_NICE > 0

FAST_ENV = {
    "PIER_DELIVERY_BACKOFF_BASE": "0.05",
    "PIER_DELIVERY_BACKOFF_CAP": "0.2",
    "PIER_DELIVERY_TIMEOUT": "5",
    "PIER_DELIVERY_LEASE_TTL": "3",
    "PIER_DELIVERY_SCAN_EVERY": "0.2",
    "PIER_DELIVERY_POLL_EVERY": "0.02",
}


@pytest.fixture(autouse=True)
def fast_delivery(monkeypatch: pytest.MonkeyPatch) -> None:
    for k, v in FAST_ENV.items():
        monkeypatch.setenv(k, v)


def add(database_url: str, project_id: int, kind: str, url: str, **options) -> int:  # type: ignore[no-untyped-def]
    d, _ = manage.new_destination(project_id, kind, url, **options)

    async def action(store):  # type: ignore[no-untyped-def]
        return await manage.add(Destinations(store), d, "beginning")

    return db_call(database_url, action)


def state(database_url: str, destination_id: int):  # type: ignore[no-untyped-def]
    async def action(store):  # type: ignore[no-untyped-def]
        ds = Destinations(store)
        d = await ds.get(destination_id)
        return d, (await ds.lag(d.project_id, d.cursor))[0]

    return db_call(database_url, action)


def holder_pid(database_url: str, destination_id: int) -> int:
    """The pid of the process holding the destination's lease (lease_holder: host:pid:random)."""
    return int(state(database_url, destination_id)[0].lease_holder.split(":")[1])


def post_events(url: str, key: str, n: int, message_ids: bool) -> None:
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}) as http:
        for i in range(0, n, 100):
            body = [
                {
                    "name": "e",
                    "external_id": f"u{j % 7}",
                    "data": {"n": j},
                    **({"message_id": f"m{j}"} if message_ids else {}),
                }
                for j in range(i, min(i + 100, n))
            ]
            assert http.post("/api/client/events", json=body).status_code == 204


def pause(database_url: str, destination_id: int) -> None:
    db_call(database_url, lambda s: Destinations(s).set_state(destination_id, "paused"))


def test_kill_9_mid_batch_then_restart_webhook_gets_everything(
    database_url: str, tmp_path: Path
) -> None:
    project = new_project(database_url)
    with receiver(delay=0.05) as r:  # a slow receiver: a batch is always in flight
        did = add(database_url, project.id, "webhook", r.url, batch_size=20)
        server = PierProcess(database_url, tmp_path / "a.log")
        try:
            post_events(server.url, project.public_key, 300, message_ids=True)
            wait_for(lambda: len(r.answered) >= 3)
            wait_for(lambda: len(r.got) > len(r.answered))  # a batch in flight
            assert server.kill() == -signal.SIGKILL
            d, lag = state(database_url, did)
            assert lag > 0
            again = PierProcess(database_url, tmp_path / "b.log")
            try:
                wait_for(lambda: state(database_url, did)[1] == 0, timeout=30)
            finally:
                again.terminate()
        finally:
            server.kill()
            pause(database_url, did)
    got = Counter(
        i["data"]["n"] for g in r.accepted() for i in g.json()["items"] if i["name"] == "e"
    )
    assert set(got) == set(range(300))  # at least once


def test_kill_9_mid_batch_then_restart_pier_target_gets_each_event_once(
    database_url: str, target: Tenant, tmp_path: Path
) -> None:
    project = new_project(database_url)
    # events without message ids: each is sent alone under its own Idempotency-Key
    did = add(
        database_url, project.id, "pier", target.server.url, key=target.public_key, batch_size=50
    )
    server = PierProcess(database_url, tmp_path / "a.log")
    try:
        post_events(server.url, project.public_key, 200, message_ids=False)
        # kill while a batch is half sent: the target has some of the batch's events
        wait_for(lambda: target.counts()["events"] > 0 and state(database_url, did)[1] > 0)
        assert server.kill() == -signal.SIGKILL
        again = PierProcess(database_url, tmp_path / "b.log")
        try:
            wait_for(lambda: state(database_url, did)[1] == 0, timeout=30)
        finally:
            again.terminate()
    finally:
        server.kill()
        pause(database_url, did)
    r = target.secret.get("/api/client/events", params={"limit": 1000})
    got = Counter(e["data"]["n"] for e in r.json()["results"] if e["name"] == "e")
    assert got == Counter(range(200))  # each exactly once


def test_two_processes_deliver_one_at_a_time_and_hand_over_after_kill(
    database_url: str, tmp_path: Path
) -> None:
    project = new_project(database_url)
    with receiver() as r:
        did = add(database_url, project.id, "webhook", r.url, batch_size=10)
        one = PierProcess(database_url, tmp_path / "one.log")
        two = PierProcess(database_url, tmp_path / "two.log")
        try:
            post_events(one.url, project.public_key, 100, message_ids=True)
            wait_for(lambda: state(database_url, did)[1] == 0)
            pid = holder_pid(database_url, did)
            assert one.owns(pid) or two.owns(pid)
            holder_proc, other = (one, two) if one.owns(pid) else (two, one)
            assert holder_proc.kill() == -signal.SIGKILL
            killed_at = time.monotonic()
            post_events(other.url, project.public_key, 50, message_ids=False)
            wait_for(lambda: state(database_url, did)[1] == 0, timeout=30)
            assert time.monotonic() - killed_at < 30
            assert other.owns(holder_pid(database_url, did))
        finally:
            one.kill()
            two.kill()
            pause(database_url, did)
    # one process at a time: nothing was sent twice (no batch was in flight at the kill)
    items = [i["id"] for g in r.accepted() for i in g.json()["items"] if i["name"] == "e"]
    assert len(items) == len(set(items)) == 150 and items == sorted(items)


def test_sigterm_abandons_a_batch_in_flight_within_the_drain_time(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PIER_DELIVERY_DRAIN", "0.5")
    monkeypatch.setenv("PIER_DELIVERY_TIMEOUT", "60")
    project = new_project(database_url)
    with receiver(delay=20) as r:  # answers long after the drain time
        did = add(database_url, project.id, "webhook", r.url)
        server = PierProcess(database_url, tmp_path / "a.log")
        try:
            post_events(server.url, project.public_key, 5, message_ids=True)
            wait_for(lambda: len(r.got) == 1)
            assert server.terminate(timeout=15) == 0
        finally:
            server.kill()
            pause(database_url, did)
        d, lag = state(database_url, did)
        assert (
            d.cursor == 0 and d.delivered == 0 and lag == 15
        )  # 5 users (user_created, user_updated), 5 events: abandoned, the cursor stayed
        assert d.lease_holder is None  # given back


def test_pier_deliver_alone_beside_a_server_that_does_not_deliver(
    database_url: str, tmp_path: Path
) -> None:
    import subprocess

    from faults.pierproc import PIER

    project = new_project(database_url)
    with receiver() as r:
        did = add(database_url, project.id, "webhook", r.url)
        server = PierProcess(database_url, tmp_path / "serve.log", "--no-deliver")
        log = (tmp_path / "deliver.log").open("wb")
        deliver = subprocess.Popen(
            [PIER, "deliver", "--database-url", database_url, "--delivery-nice", "3"],
            stdout=log,
            stderr=log,
        )
        try:
            post_events(server.url, project.public_key, 30, message_ids=True)
            wait_for(lambda: state(database_url, did)[1] == 0)
            assert holder_pid(database_url, did) == deliver.pid
            nice = os.getpriority(os.PRIO_PROCESS, os.getpid())
            assert os.getpriority(os.PRIO_PROCESS, deliver.pid) == min(19, nice + 3)
            deliver.send_signal(signal.SIGTERM)
            assert deliver.wait(timeout=20) == 0
            assert state(database_url, did)[0].lease_holder is None
        finally:
            if deliver.poll() is None:
                deliver.kill()
            log.close()
            server.kill()
            pause(database_url, did)
    assert "delivering as" in (tmp_path / "deliver.log").read_text()
    assert len([i for g in r.accepted() for i in g.json()["items"] if i["name"] == "e"]) == 30


def delivered_metric(url: str, destination_id: int) -> float:
    text = httpx.get(f"{url}/metrics").text
    prefix = f'pier_destination_items_delivered_total{{destination="{destination_id}"}} '
    return sum(float(line[len(prefix) :]) for line in text.splitlines() if line.startswith(prefix))


def test_pier_serve_delivers_from_a_process_of_its_own_and_starts_it_again(
    database_url: str, tmp_path: Path
) -> None:
    project = new_project(database_url)
    with receiver() as r:
        did = add(database_url, project.id, "webhook", r.url)
        server = PierProcess(database_url, tmp_path / "a.log")
        try:
            post_events(server.url, project.public_key, 30, message_ids=True)
            wait_for(lambda: state(database_url, did)[1] == 0)
            pid = holder_pid(database_url, did)
            assert pid != server.pid and server.owns(pid)  # a process of pier serve's own
            # at a lower CPU priority than the processes that ingest (--delivery-nice)
            nice = os.getpriority(os.PRIO_PROCESS, server.pid)
            assert os.getpriority(os.PRIO_PROCESS, pid) == min(19, nice + DELIVERY_NICE)
            others = [p for p in server.children() if p != pid]
            assert server.writer_pids()[0] in others
            assert {os.getpriority(os.PRIO_PROCESS, p) for p in others} == {nice}
            # its metrics are the server's: /metrics answers for every process
            wait_for(
                lambda: delivered_metric(server.url, did) == state(database_url, did)[0].delivered
            )
            os.kill(pid, signal.SIGKILL)
            post_events(server.url, project.public_key, 20, message_ids=False)
            wait_for(lambda: state(database_url, did)[1] == 0, timeout=30)  # started again
            again = holder_pid(database_url, did)
            assert again not in (pid, server.pid) and server.owns(again)
            assert os.getpriority(os.PRIO_PROCESS, again) == min(19, nice + DELIVERY_NICE)
            assert "the delivery process" in server.log() and "starting it again" in server.log()
        finally:
            server.kill()
            pause(database_url, did)
    assert len({i["id"] for g in r.accepted() for i in g.json()["items"] if i["name"] == "e"}) == 50


def test_every_process_ends_with_pier_serve_even_killed_with_9(
    database_url: str, tmp_path: Path
) -> None:
    """pier serve killed with -9 alone (not its process group): its delivery process, its
    writer process and its workers all end by themselves."""
    project = new_project(database_url)
    with receiver() as r:
        did = add(database_url, project.id, "webhook", r.url)
        server = PierProcess(database_url, tmp_path / "a.log")
        try:
            post_events(server.url, project.public_key, 10, message_ids=True)
            wait_for(lambda: state(database_url, did)[1] == 0)
            delivering = holder_pid(database_url, did)
            children = server.children()
            assert delivering in children and server.writer_pids()[0] in children
            # the writer and delivery processes, the HTTP workers but one (pier serve is one),
            # multiprocessing's resource tracker
            assert len(children) >= 3
            os.kill(server.pid, signal.SIGKILL)  # pier serve alone, not its process group
            server.proc.wait(timeout=10)

            def ended(pid: int) -> bool:
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    return True
                return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"

            # (multiprocessing's resource tracker ends once the others have)
            wait_for(lambda: all(ended(pid) for pid in children), timeout=30)
        finally:
            server.kill()
            pause(database_url, did)


@pytest.mark.parametrize("workers", ["1", "2"])
def test_no_deliver_process_delivers_from_the_serving_process(
    database_url: str, tmp_path: Path, workers: str
) -> None:
    """--no-deliver-process: one process delivers in its own loop, or with several workers the
    writer process does (the workers leave the writes to it)."""
    project = new_project(database_url)
    with receiver() as r:
        did = add(database_url, project.id, "webhook", r.url)
        options = ("--no-deliver-process", "--workers", workers)
        server = PierProcess(database_url, tmp_path / "a.log", *options)
        try:
            post_events(server.url, project.public_key, 10, message_ids=True)
            wait_for(lambda: state(database_url, did)[1] == 0)
            expected = server.pid if workers == "1" else server.writer_pids()[0]
            assert holder_pid(database_url, did) == expected
        finally:
            server.kill()
            pause(database_url, did)
    assert len([i for g in r.accepted() for i in g.json()["items"] if i["name"] == "e"]) == 10
