"""Slow and idle connections (issue 14, finding 2): a connection that sent nothing, half a request
line, half its headers or a short body stayed open for minutes, and 1,100 of them under
`ulimit -n 1024` made every new connection fail. Against a real `pier serve` with a 1 s head and
body timeout and a cap of 4 connections, over real sockets: each kind of stall is closed, and
with the cap reached a new client is still answered. The backend plays no part here (SQLite)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from faults.pierproc import PierProcess, Project, new_project

CAP = 4
WAIT = 15.0  # seconds a socket read may block before the test calls it a hang (timeout: 1 s)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[PierProcess, Project]]:
    folder = tmp_path_factory.mktemp("slow")
    url = f"sqlite:///{folder}/pier.db"
    # one worker: the cap is per process, and each of several takes the connections it accepts
    options = ("--workers", "1", "--header-timeout", "1", "--body-timeout", "1")
    options += ("--max-connections", str(CAP))
    server = PierProcess(url, folder / "server.log", *options)
    yield server, new_project(url)
    server.terminate()


def connect(server: PierProcess, first: bytes = b"") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=WAIT)
    if first:
        sock.sendall(first)
    return sock


def read_all(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (a hang fails the test)."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    sock.close()
    return data


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


def events_post(key: str, length: int) -> bytes:
    return (
        f"POST /api/client/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
    ).encode()


HEALTH = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"


def health(server: PierProcess) -> int:
    sock = connect(server, HEALTH)
    answer = sock.recv(65536)
    sock.close()
    return status_of(answer)


def test_a_connection_that_sends_nothing_is_closed(served) -> None:
    server, _ = served
    assert read_all(connect(server)) == b""


@pytest.mark.parametrize(
    "partial",
    [b"GET /hea", b"GET /health HTTP/1.1\r\nHost: x\r\nX-Half: ab"],
    ids=["line", "headers"],
)
def test_half_a_request_head_is_408_then_closed(served, partial: bytes) -> None:
    server, _ = served
    answer = read_all(connect(server, partial))
    assert status_of(answer) == 408
    assert b"connection: close" in answer.lower()
    body = json.loads(answer.split(b"\r\n\r\n", 1)[1])
    assert body["status"] == "error" and "did not arrive" in body["error"]


def test_a_short_body_is_closed_and_stores_nothing(served) -> None:
    server, project = served
    body = json.dumps([{"name": "short", "external_id": "u"}]).encode()
    sock = connect(server, events_post(project.public_key, len(body) + 10) + body)
    assert read_all(sock) == b""  # no 204: the request was abandoned


def test_a_body_dripped_slowly_is_closed_at_the_deadline(served) -> None:
    """The body timeout is a deadline for the whole body, not a gap between reads."""
    server, project = served
    sock = connect(server, events_post(project.public_key, 1000))
    sent = 0
    try:
        for _ in range(40):  # one byte every 0.25 s, well inside any gap: 10 s if never closed
            sock.sendall(b" ")
            sent += 1
            time.sleep(0.25)
    except (BrokenPipeError, ConnectionResetError):
        pass
    sock.close()
    assert sent < 40, "the dripping connection was never closed"


def test_past_the_cap_the_longest_idle_connection_makes_room(served) -> None:
    server, _ = served
    stalled = [connect(server, b"GET /health HTTP/1.1\r\nHo") for _ in range(CAP)]
    time.sleep(0.2)  # all accepted
    assert health(server) == 200  # the first stalled one was closed for it
    first = stalled[0]
    first.settimeout(0.5)  # long before the 1 s timeout: closed for the newcomer
    assert first.recv(65536) == b""
    for sock in stalled[1:]:
        assert status_of(read_all(sock)) == 408


def test_with_every_slot_busy_a_new_client_gets_503_then_an_answer_once_they_close(
    served,
) -> None:
    server, project = served
    busy = [connect(server, events_post(project.public_key, 100) + b"[") for _ in range(CAP)]
    time.sleep(0.2)  # each is reading its body: a request in progress, nothing idle
    refused = read_all(connect(server, HEALTH))
    assert status_of(refused) == 503
    assert b"retry-after: 1" in refused.lower()
    assert json.loads(refused.split(b"\r\n\r\n", 1)[1])["status"] == "error"
    for sock in busy:  # the body timeout closes them
        assert read_all(sock) == b""
    assert health(server) == 200


@pytest.mark.parametrize(
    ("limits", "expected"),
    [((100, 5000), "1000 1064"), ((200, 200), "136 200")],
    ids=["raised", "lowered"],
)
def test_the_cap_fits_the_open_file_limit(limits: tuple[int, int], expected: str) -> None:
    """Connections past `ulimit -n` could not even be accepted: serve raises the soft limit to
    fit --max-connections, or lowers the cap to what the hard limit allows (in a child process:
    a lowered hard limit cannot be raised again)."""
    script = (
        "import resource\n"
        f"resource.setrlimit(resource.RLIMIT_NOFILE, {limits})\n"
        "from pier.cli import _room_for_connections\n"
        "cap = _room_for_connections(1000)\n"
        "print(cap, resource.getrlimit(resource.RLIMIT_NOFILE)[0])\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.stdout.split() == expected.split(), done.stderr
    assert ("lowered to 136" in done.stderr) == (expected == "136 200")
