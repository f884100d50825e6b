"""Portal fixtures: an administrator in the live server's database, and an HTTP client that
logs in and sends forms with their CSRF token like a browser does."""

from __future__ import annotations

import html
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from conftest import LiveServer, db_call
from pier.clock import now_ms
from pier.portal.auth import hash_password

PASSWORD = "correct horse battery staple"
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


@dataclass
class Admin:
    email: str
    password: str


def csrf_of(page: str) -> str:
    found = _CSRF.search(page)
    assert found, "the page has no form with a CSRF token"
    return html.unescape(found.group(1))


class Portal:
    """A cookie-keeping client of /portal (redirects are not followed, to check them)."""

    def __init__(self, server: LiveServer) -> None:
        self.server = server
        self.http = httpx.Client(base_url=f"{server.url}/portal", timeout=30)

    def get(self, path: str, **kw: object) -> httpx.Response:
        return self.http.get(path, **kw)  # type: ignore[arg-type]

    def login(self, email: str, password: str, next_path: str | None = None) -> httpx.Response:
        token = csrf_of(self.get("/login").text)
        form = {"email": email, "password": password, "csrf": token}
        if next_path is not None:
            form["next"] = next_path
        return self.http.post("/login", data=form)

    def submit(
        self, path: str, data: dict[str, str] | None = None, page: str = "/projects"
    ) -> httpx.Response:
        """POST a form with the CSRF token found on `page`."""
        token = csrf_of(self.get(page).text)
        return self.http.post(path, data={**(data or {}), "csrf": token})

    def close(self) -> None:
        self.http.close()


@pytest.fixture
def admin(server: LiveServer) -> Admin:
    email = f"admin-{uuid.uuid4().hex[:10]}@example.com"
    hashed = hash_password(PASSWORD)
    db_call(server.database_url, lambda s: s.create_admin(email, hashed, now_ms()))
    return Admin(email, PASSWORD)


@pytest.fixture
def anonymous(server: LiveServer) -> Iterator[Portal]:
    client = Portal(server)
    yield client
    client.close()


@pytest.fixture
def portal(server: LiveServer, admin: Admin) -> Iterator[Portal]:
    client = Portal(server)
    r = client.login(admin.email, admin.password)
    assert r.status_code == 303, r.text
    yield client
    client.close()
