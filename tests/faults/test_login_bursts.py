"""Portal login bursts (issue 14, finding 3): the throttle was checked before a failure was
recorded, so 40 concurrent logins from one address all ran argon2 (RSS 47 MB -> 2.4 GB), and it
keyed on the address uvicorn took from X-Forwarded-For, so rotating that header gave unlimited
guesses. Now an attempt is counted before its hash, at most MAX_HASHES hashes run at once
(more: 429 with Retry-After), the throttle holds per account as well as per address, and
forwarded headers count only from `pier serve --forwarded-allow-ips`. On both backends (the
admin lookup is the store's)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from conftest import LiveServer, db_call
from faults.pierproc import PierProcess
from pier.clock import now_ms
from pier.portal import auth
from pier.settings import Settings
from portal.conftest import csrf_of

PASSWORD = "correct horse battery staple"
LOGIN_FAILURES = Settings.login_failures
LOGIN_WINDOW = Settings.login_window


def new_admin(database_url: str) -> str:
    email = f"admin-{uuid.uuid4().hex[:10]}@example.com"
    hashed = auth.hash_password(PASSWORD)
    db_call(database_url, lambda s: s.create_admin(email, hashed, now_ms()))
    return email


class Login:
    """A login form fetched once (its CSRF cookie and token), posted as often as needed."""

    def __init__(self, url: str) -> None:
        self.url = f"{url}/portal"
        page = httpx.get(f"{self.url}/login")
        self.cookies = dict(page.cookies)
        self.token = csrf_of(page.text)

    def post(self, email: str, password: str, **headers: str) -> httpx.Response:
        form = {"email": email, "password": password, "csrf": self.token}
        with httpx.Client(cookies=self.cookies, timeout=30) as http:
            return http.post(f"{self.url}/login", data=form, headers=headers)

    async def burst(self, email: str, password: str, n: int) -> list[httpx.Response]:
        form = {"email": email, "password": password, "csrf": self.token}
        limits = httpx.Limits(max_connections=n)
        async with httpx.AsyncClient(cookies=self.cookies, timeout=60, limits=limits) as http:
            return list(
                await asyncio.gather(*(http.post(f"{self.url}/login", data=form) for _ in range(n)))
            )


@pytest.fixture
def fresh_server(server: LiveServer) -> Iterator[LiveServer]:
    """The in-process server's throttle lives as long as it: leave it as other tests expect."""
    server.state.login_throttle.clear()
    yield server
    server.state.login_throttle.clear()


def test_40_concurrent_logins_run_at_most_the_allowed_hashes(fresh_server: LiveServer) -> None:
    server = fresh_server
    email = new_admin(server.database_url)
    login = Login(server.url)
    checked = auth.hash_slots.checked
    auth.hash_slots.peak = 0
    answers = asyncio.run(login.burst(email, "wrong password", 40))
    statuses = [r.status_code for r in answers]
    hashes = auth.hash_slots.checked - checked
    assert set(statuses) <= {401, 429}
    assert statuses.count(401) == hashes  # every hash answered 401, every 429 ran none
    assert 1 <= hashes <= LOGIN_FAILURES
    assert auth.hash_slots.peak <= auth.MAX_HASHES
    for r in answers:
        if r.status_code == 429:
            assert int(r.headers["retry-after"]) >= 1
    # hammering on: only failures already counted, none of them hashed
    for _ in range(LOGIN_FAILURES):
        login.post(email, "wrong again")
    assert auth.hash_slots.checked - checked <= LOGIN_FAILURES
    r = login.post(email, PASSWORD)  # the address is paused, even for the right password
    assert r.status_code == 429 and "Too many failed logins" in r.text


@pytest.fixture
def untrusting(database_url: str, tmp_path: Path) -> Iterator[PierProcess]:
    """`pier serve` with its defaults: no proxy is trusted. One worker, so that every attempt
    meets the same throttle (several: test_several_workers_allow_no_more_in_all)."""
    server = PierProcess(database_url, tmp_path / "server.log", "--workers", "1")
    yield server
    server.terminate()


@pytest.fixture
def behind_proxy(database_url: str, tmp_path: Path) -> Iterator[PierProcess]:
    """`pier serve` trusting the local peer as its proxy."""
    server = PierProcess(
        database_url,
        tmp_path / "server.log",
        "--workers",
        "1",
        "--forwarded-allow-ips",
        "127.0.0.1",
    )
    yield server
    server.terminate()


def test_several_workers_allow_no_more_in_all(database_url: str, tmp_path: Path) -> None:
    """Two workers, each with its own throttle: each allows half the failures, so an account
    guessed at on new connections (spread over both) gets at most --login-failures in all."""
    server = PierProcess(database_url, tmp_path / "server.log", "--workers", "2")
    try:
        email = new_admin(database_url)
        login = Login(server.url)
        statuses = [login.post(email, "guess").status_code for _ in range(3 * LOGIN_FAILURES)]
    finally:
        server.terminate()
    share = -(-LOGIN_FAILURES // 2)
    assert statuses[:share] == [401] * share  # whichever worker took them: within its share
    assert set(statuses) == {401, 429}
    assert statuses.count(401) <= LOGIN_FAILURES


def test_rotating_x_forwarded_for_gives_no_extra_guesses(untrusting: PierProcess) -> None:
    login = Login(untrusting.url)
    statuses = []
    for i in range(LOGIN_FAILURES + 5):  # a new account each time: only the address counts
        forged = {"X-Forwarded-For": f"203.0.113.{i}", "X-Forwarded-Proto": "https"}
        r = login.post(f"nobody-{i}@example.com", "guess", **forged)
        statuses.append(r.status_code)
    assert statuses == [401] * LOGIN_FAILURES + [429] * 5
    email = new_admin(untrusting.database_url)
    r = Login(untrusting.url).post(email, PASSWORD, **{"X-Forwarded-For": "198.51.100.9"})
    assert r.status_code == 429  # still the same peer
    assert "secure" not in r.headers["set-cookie"].lower()  # X-Forwarded-Proto ignored too


def test_per_account_throttle_holds_across_addresses(behind_proxy: PierProcess) -> None:
    email = new_admin(behind_proxy.database_url)
    login = Login(behind_proxy.url)
    for i in range(LOGIN_FAILURES):
        r = login.post(email, "guess", **{"X-Forwarded-For": f"203.0.113.{i}"})
        assert r.status_code == 401
    # a new address each time, and the trusted proxy's word for it: the account is paused
    r = login.post(email, PASSWORD, **{"X-Forwarded-For": "198.51.100.1"})
    assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
    # another account from another address is not
    other = new_admin(behind_proxy.database_url)
    r = login.post(
        other, PASSWORD, **{"X-Forwarded-For": "198.51.100.2", "X-Forwarded-Proto": "https"}
    )
    assert r.status_code == 303
    assert "secure" in r.headers["set-cookie"].lower()  # the trusted proxy said https


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_throttle_counts_per_address_and_per_account_in_a_window() -> None:
    clock = Clock()
    throttle = auth.LoginThrottle(clock=clock)
    for i in range(LOGIN_FAILURES):
        throttle.admit("10.0.0.1", f"u{i}@x")
    with pytest.raises(auth.Throttled) as refused:
        throttle.admit("10.0.0.1", "new@x")
    assert refused.value.retry_after == LOGIN_WINDOW
    for i in range(LOGIN_FAILURES):
        throttle.admit(f"10.0.1.{i}", "target@x")
    with pytest.raises(auth.Throttled):
        throttle.admit("10.0.2.1", "target@x")
    clock.now += LOGIN_WINDOW
    throttle.admit("10.0.0.1", "target@x")  # the window has passed for both


def test_refused_attempts_record_nothing_and_memory_stays_bounded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(auth, "MAX_TRACKED", 50)
    clock = Clock()
    throttle = auth.LoginThrottle(clock=clock)
    for _ in range(LOGIN_FAILURES):
        throttle.admit("10.0.0.1", "a@x")
    size = len(throttle)
    for i in range(500):  # a paused address trying new accounts adds no account
        with pytest.raises(auth.Throttled):
            throttle.admit("10.0.0.1", f"other-{i}@x")
    assert len(throttle) == size
    for i in range(500):  # many others: bounded, and the paused address, still trying, stays
        clock.now += 0.01
        throttle.admit(f"10.1.{i // 250}.{i % 250}", f"v{i}@x")
        with pytest.raises(auth.Throttled):
            throttle.admit("10.0.0.1", "a@x")
        assert len(throttle) <= 50
