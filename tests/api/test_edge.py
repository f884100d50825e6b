"""api/edge.py on its own: the routes it dispatches itself answer like the ones Starlette serves
(headers, error bodies), including when an endpoint fails unexpectedly."""

from __future__ import annotations

import asyncio

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response

from pier.api.edge import NO_CONTENT, Edge
from pier.api.errors import HTTPProblem


async def accepted(request: Request) -> Response:
    assert await request.body() == b"{}"
    assert request.app is app.app  # request.app.state works as under Starlette
    return NO_CONTENT


async def refused(request: Request) -> Response:
    raise HTTPProblem(422, "name is required", headers={"X-Extra": "1"})


async def broken(request: Request) -> Response:
    raise RuntimeError("a bug")


app = Edge(Starlette(), {"/ok": accepted, "/bad": refused, "/boom": broken})


def post(path: str) -> httpx.Response:
    async def main() -> httpx.Response:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://pier") as client:
            return await client.post(path, content=b"{}", headers={"X-Request-ID": "req-1"})

    return asyncio.run(main())


def test_204_carries_the_request_id_and_cors() -> None:
    r = post("/ok")
    assert r.status_code == 204 and r.content == b""
    assert r.headers["x-request-id"] == "req-1"
    assert r.headers["access-control-allow-origin"] == "*"


def test_a_problem_is_the_usual_json_error_with_its_headers() -> None:
    r = post("/bad")
    assert r.status_code == 422
    assert r.json() == {"status": "error", "error": "name is required"}
    assert r.headers["x-extra"] == "1" and r.headers["x-request-id"] == "req-1"


def test_an_unexpected_error_answers_json_500() -> None:
    r = post("/boom")
    assert r.status_code == 500
    assert r.json() == {"status": "error", "error": "internal error"}
    assert r.headers["x-request-id"] == "req-1"
    assert r.headers["access-control-allow-origin"] == "*"


def test_other_paths_go_to_starlette() -> None:
    r = post("/elsewhere")
    assert r.status_code == 404  # Starlette's own answer, with the edge's headers
    assert r.headers["x-request-id"] == "req-1"
