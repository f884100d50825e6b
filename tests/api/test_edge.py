"""api/edge.py on its own: the routes it dispatches itself answer like the ones Starlette serves
(headers, error bodies), including when an endpoint fails unexpectedly."""

from __future__ import annotations

import asyncio

import httpx
from hypothesis import given
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response

from pier.api.edge import INGEST_HEADERS, NO_CONTENT, Edge, IngestRequest, header
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


# Header lists as a client may send them: the names the ingestion routes read, in any case
# (servers lowercase them), repeated, among others
_NAMES = st.sampled_from([*INGEST_HEADERS, "host", "x-request-id", "authorization2", "content"])
_HEADERS = st.lists(
    st.tuples(_NAMES.map(str.encode), st.binary(max_size=8).filter(lambda v: b"\0" not in v)),
    max_size=12,
)


@given(_HEADERS)
def test_the_edge_reads_each_ingestion_header_as_starlette_does(raw: list) -> None:
    """One pass over the raw list finds what each Starlette lookup would: the first value."""
    scope = {"type": "http", "headers": raw}
    ours = IngestRequest(scope, _no_body)
    theirs = Request(scope)
    for name in INGEST_HEADERS:
        assert header(ours, name) == header(theirs, name) == theirs.headers.get(name)


async def _no_body() -> dict:
    return {"type": "http.request", "body": b""}
