"""A real Pier server for the client tests: `pier serve` on a free port with a temp SQLite file."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from pier.client import Client


def pier_executable() -> str:
    candidate = Path(sys.executable).with_name("pier")
    found = str(candidate) if candidate.exists() else shutil.which("pier")
    if not found:
        pytest.fail("the `pier` executable is missing (pip install -e . in the virtualenv)")
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PierServer:
    """One `pier serve` process; can be killed and started again on the same port and database."""

    def __init__(self, workdir: Path) -> None:
        self.pier = pier_executable()
        self.workdir = workdir
        self.database_url = f"sqlite:///{workdir / 'pier.db'}"  # an absolute path: 4 slashes
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / "server.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.project_id = self.cli("projects", "create", f"client-tests-{uuid.uuid4().hex[:8]}")
        self.public_key = self.cli(
            "keys", "create", "--project", self.project_id, "--scope", "public"
        )
        self.secret_key = self.cli(
            "keys", "create", "--project", self.project_id, "--scope", "secret"
        )

    def cli(self, *args: str) -> str:
        done = subprocess.run(
            [self.pier, *args, "--database-url", self.database_url],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if done.returncode != 0:
            pytest.fail(f"pier {' '.join(args)} failed ({done.returncode}):\n{done.stderr}")
        return done.stdout.strip()

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [self.pier, "serve", "--host", "127.0.0.1", "--port", str(self.port)]
                + ["--database-url", self.database_url],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: kill() reaches any workers
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"pier serve exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        self.stop()
        pytest.fail(f"pier serve did not answer /health within 30 s:\n{self.log_tail()}")

    def kill(self) -> None:
        """SIGKILL: no graceful shutdown, in-flight requests are cut."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is None:
            return
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                return
            try:
                self.proc.wait(timeout=10)
                return
            except subprocess.TimeoutExpired:
                continue

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]

    # The read API, with the secret key.

    def get(self, path: str, **params: Any) -> httpx.Response:
        return httpx.get(
            f"{self.url}{path}",
            params=params,
            headers={"Authorization": f"Bearer {self.secret_key}"},
            timeout=30,
        )

    def user(self, external_id: str) -> dict[str, Any]:
        response = self.get(f"/api/client/users/{external_id}")
        assert response.status_code == 200, response.text
        return response.json()

    def events(self, external_id: str, name: str | None = None) -> list[dict[str, Any]]:
        """Every event of the user (all pages), newest first; only ``name`` ones if given.
        An unknown user has none."""
        results: list[dict[str, Any]] = []
        cursor = None
        for _ in range(1000):  # bounded: 1,000 pages of 1,000
            params: dict[str, Any] = {"limit": 1000}
            if cursor:
                params["cursor"] = cursor
            response = self.get(f"/api/client/users/{external_id}/events", **params)
            if response.status_code == 404 and not results:
                return []
            assert response.status_code == 200, response.text
            page = response.json()
            results.extend(page["results"])
            cursor = page.get("next_cursor")
            if not cursor:
                break
        return [e for e in results if name is None or e["name"] == name]


def start_server(workdir: Path) -> PierServer:
    server = PierServer(workdir)
    server.start()
    return server


@pytest.fixture(scope="session")
def pier_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PierServer]:
    """One server shared by the tests; each test uses its own user ids."""
    server = start_server(tmp_path_factory.mktemp("pier"))
    yield server
    server.stop()


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[PierServer]:
    """A server for one test alone (for tests that kill it)."""
    server = start_server(tmp_path)
    yield server
    server.stop()


@pytest.fixture
def uid() -> str:
    """A prefix that keeps one test's users apart from the others'."""
    return f"t{uuid.uuid4().hex[:12]}"


def _fast_retries(client: Any, max_retries: int | None = None) -> Any:
    client.retry.backoff_base = 0.01
    client.retry.backoff_max = 0.05
    if max_retries is not None:
        client.retry.max_retries = max_retries
    return client


@pytest.fixture
def fast_retries() -> Any:
    """``fast_retries(client, max_retries=None)``: small backoff delays for quick tests."""
    return _fast_retries


@pytest.fixture
def make_client(pier_server: PierServer) -> Iterator[Any]:
    """``make_client(**options)``: a ``Client`` of the shared server (public key), closed after."""
    clients: list[Client] = []

    def make(**options: Any) -> Client:
        key = options.pop("api_key", pier_server.public_key)
        clients.append(_fast_retries(Client(key, pier_server.url, **options)))
        return clients[-1]

    yield make
    for c in clients:
        c.close()


@pytest.fixture
def client(pier_server: PierServer) -> Iterator[Client]:
    """A ``Client`` of the shared server (public key), with fast retries."""
    with _fast_retries(Client(pier_server.public_key, pier_server.url)) as c:
        yield c


class RequestLog:
    """Reads the log: httpx writes one INFO line per answered request, the client one DEBUG
    line per retry."""

    def __init__(self, caplog: pytest.LogCaptureFixture) -> None:
        self.caplog = caplog

    def count(self, path: str) -> int:
        return sum(1 for r in self.caplog.records if r.name == "httpx" and path in r.getMessage())

    def retries(self) -> int:
        return sum(
            1 for r in self.caplog.records if r.name == "pier.client" and "retry" in r.getMessage()
        )


@pytest.fixture
def request_log(caplog: pytest.LogCaptureFixture) -> RequestLog:
    caplog.set_level(logging.INFO, logger="httpx")
    caplog.set_level(logging.DEBUG, logger="pier.client")
    return RequestLog(caplog)
