"""Error responses. Every 4xx/5xx body is JSON and says what was wrong and where."""

from __future__ import annotations

from collections.abc import Mapping

import msgspec
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

_encode = msgspec.json.encode

AUTH_CODE = 1000
ACCESS_DENIED_CODE = 1007


class Problem(msgspec.Struct):
    path: str
    message: str


class HTTPProblem(Exception):
    """Raised anywhere in the HTTP layer to answer with a JSON error."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: int | None = None,
        errors: list[Problem] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.errors = errors
        self.headers = headers


def invalid(errors: list[Problem]) -> HTTPProblem:
    """422 listing every problem; `error` is the first, for Parcelvoy compatibility."""
    return HTTPProblem(422, errors[0].message, errors=errors)


def error_body(problem: HTTPProblem) -> bytes:
    body: dict[str, object] = {"status": "error", "error": problem.message}
    if problem.code is not None:
        body["code"] = problem.code
    if problem.errors is not None:
        body["errors"] = problem.errors
    return _encode(body)


def error_response(problem: HTTPProblem) -> Response:
    return Response(
        error_body(problem), problem.status, headers=problem.headers, media_type="application/json"
    )


async def http_exception(request: Request, exc: Exception) -> Response:
    """Starlette's own 404/405 (and others) as JSON."""
    assert isinstance(exc, HTTPException)
    messages = {
        404: f"No such endpoint: {request.url.path}",
        405: f"Method {request.method} is not allowed on {request.url.path}",
    }
    message = messages.get(exc.status_code, str(exc.detail))
    return error_response(HTTPProblem(exc.status_code, message, headers=exc.headers))


SERVER_ERROR = HTTPProblem(500, "internal error")
# The database cannot serve now (store.StoreUnavailable), on any route: retrying later may work
UNAVAILABLE = HTTPProblem(
    503, "The database is unavailable; retry shortly.", headers={"Retry-After": "2"}
)


async def server_error(request: Request, exc: Exception) -> Response:
    """Any unexpected error (a bug), under Starlette as in api/edge.py: a JSON 500 without
    Retry-After (Starlette's own is text); the error is raised on afterwards, for uvicorn to log
    with its traceback, in the request's task: the line carries its request id (api/logs.py)."""
    return error_response(SERVER_ERROR)


async def store_unavailable(request: Request, exc: Exception) -> Response:
    """store.StoreUnavailable wherever it is raised (a read, a key lookup): 503, Retry-After."""
    return error_response(UNAVAILABLE)


async def problem_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPProblem)
    return error_response(exc)
