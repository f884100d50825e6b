"""Failures between client and server: events must be stored exactly once, whatever happens."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections import Counter
from typing import Any

from pier.client import Client

EVENTS = 2000
KILL_AT = {500: "kill", 800: "start", 1300: "kill", 1600: "start"}


def test_events_survive_server_restarts(own_server: Any, uid: str, request_log: Any) -> None:
    failed: list[tuple[BaseException, list[dict]]] = []
    client = Client(
        own_server.public_key,
        own_server.url,
        max_batch=50,
        flush_interval=0.05,
        max_retries=60,  # with the delays below: ~8 s of retrying before giving up
        on_error=lambda exc, events: failed.append((exc, events)),
    )
    client.retry.backoff_base = 0.02
    client.retry.backoff_max = 0.25
    sent: dict[str, int] = {}
    with client:
        for i in range(EVENTS):
            sent[client.track("Restart", external_id=uid, data={"i": i})] = i
            action = KILL_AT.get(i)
            if action == "kill":
                own_server.kill()  # cuts whatever request is in flight
            elif action == "start":
                own_server.start()  # same port, same database; blocks until /health answers
            time.sleep(0.001)
        client.flush()

    assert request_log.retries() > 0  # the client did see the server go away
    assert not failed, f"{sum(len(e) for _, e in failed)} events failed: {failed[0][0]}"
    stored = own_server.events(uid, "Restart")
    counts = Counter(e["data"]["i"] for e in stored)
    missing = sorted(set(range(EVENTS)) - counts.keys())
    duplicated = sorted(i for i, n in counts.items() if n > 1)
    assert not missing, f"{len(missing)} events lost, e.g. {missing[:10]}"
    assert not duplicated, f"{len(duplicated)} events stored twice, e.g. {duplicated[:10]}"
    assert len(stored) == EVENTS
    assert {e["message_id"] for e in stored} == set(sent)


class DroppingProxy:
    """A TCP proxy to the server that loses the first ``drops`` responses: it lets the request
    through, waits for the server's answer (sent after the commit), then closes the client's
    connection instead of passing the answer on."""

    def __init__(self, upstream_port: int, drops: int) -> None:
        self.upstream_port = upstream_port
        self.drops = drops
        self.dropped = 0
        self.lock = threading.Lock()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return  # closed
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
        with self.lock:
            drop = self.dropped < self.drops
            self.dropped += drop
        threading.Thread(target=self._pipe, args=(client, upstream), daemon=True).start()
        self._pipe(upstream, client, drop_first=drop)

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket, drop_first: bool = False) -> None:
        try:
            while data := src.recv(65536):
                if drop_first:
                    break  # the answer is lost on its way to the client
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)  # wakes the other direction's recv()
                sock.close()

    def close(self) -> None:
        self.listener.close()


def test_lost_responses_do_not_duplicate_events(
    pier_server: Any, fast_retries: Any, uid: str, request_log: Any
) -> None:
    proxy = DroppingProxy(pier_server.port, drops=3)
    failed: list[BaseException] = []
    client = Client(
        pier_server.public_key,
        proxy.url,
        max_batch=10,
        flush_interval=30,
        on_error=lambda exc, events: failed.append(exc),
    )
    try:
        with fast_retries(client):
            sent = {client.track("Lost", external_id=uid, data={"i": i}) for i in range(50)}
    finally:
        proxy.close()
    assert not failed
    assert (
        proxy.dropped == 3 and request_log.retries() >= 3
    )  # answers lost: batches were sent again
    stored = pier_server.events(uid, "Lost")
    assert sorted(e["data"]["i"] for e in stored) == list(range(50))
    assert {e["message_id"] for e in stored} == sent
