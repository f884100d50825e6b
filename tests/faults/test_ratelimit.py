"""Per-key rate limits (`pier keys create ... --rate-limit N`): a token bucket per key and
process; over the limit, 429 with Retry-After and the RateLimit-* headers, and nothing written."""

from __future__ import annotations

import time

import httpx
import pytest

from conftest import LiveServer, db_call
from faults.pierproc import new_project
from pier.api.errors import HTTPProblem
from pier.api.ratelimit import RateLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_bucket_allows_a_burst_of_n_then_n_a_second() -> None:
    clock = Clock()
    limits = RateLimiter(clock)
    for _ in range(4):
        limits.check(1, 4)
    with pytest.raises(HTTPProblem) as refused:
        limits.check(1, 4)
    assert refused.value.status == 429
    headers = dict(refused.value.headers or {})
    assert headers["Retry-After"] == "1" and headers["RateLimit-Reset"] == "1"
    assert headers["RateLimit-Limit"] == "4" and headers["RateLimit-Remaining"] == "0"
    clock.now += 0.25  # one token back
    limits.check(1, 4)
    with pytest.raises(HTTPProblem):
        limits.check(1, 4)
    limits.check(2, 4)  # another key has its own bucket
    clock.now += 10  # refills to N, not beyond
    assert limits.remaining(1, 4) == 4


def test_refused_requests_take_no_token() -> None:
    clock = Clock()
    limits = RateLimiter(clock)
    limits.check(1, 1)
    for _ in range(100):
        with pytest.raises(HTTPProblem):
            limits.check(1, 1)
    clock.now += 1.0
    limits.check(1, 1)  # refusals did not push the next token further away


def test_slow_rates_say_how_long_to_wait() -> None:
    clock = Clock()
    limits = RateLimiter(clock)
    limits.check(1, 1)
    clock.now += 0.1
    with pytest.raises(HTTPProblem) as refused:
        limits.check(1, 1)
    assert (refused.value.headers or {})["Retry-After"] == "1"  # 0.9 s, rounded up


def test_many_keys_stay_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("pier.api.ratelimit.MAX_BUCKETS", 10)
    clock = Clock()
    limits = RateLimiter(clock)
    for key in range(100):
        clock.now += 0.01
        limits.check(key, 5)
        assert len(limits._buckets) <= 10


def test_http_429_with_headers_and_nothing_written(server: LiveServer) -> None:
    project = new_project(server.database_url, rate_limit=3)
    body = [{"name": "limited", "external_id": "u"}]
    statuses = []
    started = time.monotonic()
    with httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {project.public_key}"}
    ) as http:
        for _ in range(10):
            r = http.post("/api/client/events", json=body)
            statuses.append(r.status_code)
            if r.status_code == 429:
                refused = r
    elapsed = time.monotonic() - started
    assert set(statuses) == {204, 429}
    assert statuses.count(204) <= 3 + int(elapsed * 3) + 1
    assert refused.json()["status"] == "error"
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.headers["ratelimit-limit"] == "3"
    assert refused.headers["ratelimit-remaining"] == "0"
    assert int(refused.headers["ratelimit-reset"]) >= 1
    assert refused.headers["access-control-allow-origin"] == "*"
    stats = db_call(server.database_url, lambda s: s.stats(project.id))
    assert stats["events"] == statuses.count(204) + 2  # + user_created, user_updated


def test_http_read_routes_are_limited_too_and_unlimited_keys_never_are(
    server: LiveServer,
) -> None:
    limited = new_project(server.database_url, rate_limit=2)
    free = new_project(server.database_url)
    with httpx.Client(base_url=server.url) as http:

        def get(key: str) -> int:
            r = http.get("/api/client/users/x", headers={"Authorization": f"Bearer {key}"})
            return r.status_code

        assert 429 in [get(limited.secret_key) for _ in range(8)]
        assert set(get(free.secret_key) for _ in range(50)) == {404}
