"""The destinations API (secret keys only; 403 for public keys): `/api/client/destinations...`,
the same commands as `pier destinations`, checked by the same code (delivery/manage.py).
Destinations of another project are 404, as if they did not exist."""

from __future__ import annotations

from typing import Any, Literal

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from ..api import params, read
from ..api.auth import secret_key
from ..api.body import read_body
from ..api.errors import HTTPProblem, Problem, invalid
from ..api.ingest import checked, decode
from ..api.render import iso
from ..store.destinations import Destination, Destinations
from . import manage
from .pacing import Pacing


class NewDestination(msgspec.Struct, forbid_unknown_fields=True):
    kind: str
    url: str
    key: str | None = None
    secret_key: str | None = None
    name: str | None = None
    batch_size: int | None = None
    max_bytes: int | None = None
    retry_window: float | None = None
    only: list[str] = []
    skip: list[str] = []
    start: Literal["beginning", "now"] = msgspec.field(name="from", default="beginning")


class Replay(msgspec.Struct, forbid_unknown_fields=True):
    start: str = msgspec.field(name="from")


class Redeliver(msgspec.Struct, forbid_unknown_fields=True):
    all: bool = False
    dead_letter: int | None = None


def _destinations(request: Request) -> Destinations:
    return Destinations(request.app.state.store)


async def _project(request: Request) -> int:
    key = await secret_key(request)
    return key.project_id


async def _body(request: Request, shape: type[Any]) -> Any:
    raw = checked(await read_body(request) or b"{}")
    try:
        return msgspec.convert(decode(raw), shape)
    except msgspec.ValidationError as exc:
        message, _, where = str(exc).partition(" - at `$")
        path = where.rstrip("`").replace(".", "/").replace("[", "/").replace("]", "")
        raise invalid([Problem(path or "", message)]) from None


def _invalid(exc: manage.Invalid) -> HTTPProblem:
    return invalid([Problem(f"/{p.field}", p.message) for p in exc.problems])


async def _destination(request: Request) -> tuple[Destinations, Destination]:
    project_id = await _project(request)
    ds = _destinations(request)
    raw = request.path_params["id"]
    number = params.integer(raw, 1)
    d = None if number is None else await ds.get(number)
    if d is None or d.project_id != project_id:
        raise HTTPProblem(404, f"No destination {raw} in this project.")
    return ds, d


async def list_destinations(request: Request) -> Response:
    """GET /api/client/destinations"""
    project_id = await _project(request)
    ds = _destinations(request)
    return read.json(
        {"results": [await manage.view(ds, d) for d in await ds.of_project(project_id)]}
    )


async def add_destination(request: Request) -> Response:
    """POST /api/client/destinations: 201 with the destination (and a webhook's signing secret,
    shown only in this answer)."""
    project_id = await _project(request)
    body: NewDestination = await _body(request, NewDestination)
    try:
        d, signing = manage.new_destination(
            project_id,
            body.kind,
            body.url,
            key=body.key,
            secret_key=body.secret_key,
            name=body.name,
            batch_size=body.batch_size,
            max_bytes=body.max_bytes,
            retry_window=body.retry_window,
            only=body.only,
            skip=body.skip,
            sealing=request.app.state.settings.secret_key,
        )
        ds = _destinations(request)
        d.id = await manage.add(ds, d, body.start)
    except manage.Invalid as exc:
        raise _invalid(exc) from None
    shown = await manage.view(ds, await ds.get(d.id) or d)
    if signing:
        shown["signing_secret"] = signing
    return read.json(shown, 201)


async def get_destination(request: Request) -> Response:
    ds, d = await _destination(request)
    return read.json(await manage.view(ds, d))


async def remove_destination(request: Request) -> Response:
    ds, d = await _destination(request)
    await ds.remove(d.id)
    return Response(status_code=204)


async def pause(request: Request) -> Response:
    ds, d = await _destination(request)
    await ds.set_state(d.id, "paused")
    return read.json(await manage.view(ds, await ds.get(d.id) or d))


async def resume(request: Request) -> Response:
    ds, d = await _destination(request)
    await ds.set_state(d.id, "active")
    return read.json(await manage.view(ds, await ds.get(d.id) or d))


async def replay(request: Request) -> Response:
    """POST .../replay {"from": "beginning" | a feed cursor | an ISO-8601 time}"""
    ds, d = await _destination(request)
    body: Replay = await _body(request, Replay)
    try:
        cursor = await manage.replay_cursor(ds, d, body.start)
    except manage.Invalid as exc:
        raise _invalid(exc) from None
    await ds.rewind(d.id, cursor)
    return read.json(await manage.view(ds, await ds.get(d.id) or d))


async def dead_letters(request: Request) -> Response:
    ds, d = await _destination(request)
    return read.json(
        {
            "results": [
                {
                    "id": x.id,
                    "item": x.item,
                    "answer": x.answer,
                    "created_at": iso(x.created_at),
                }
                for x in await ds.dead_letters(d.id)
            ]
        }
    )


async def redeliver(request: Request) -> Response:
    """POST .../redeliver {"all": true} or {"dead_letter": N}: each sent again, alone."""
    ds, d = await _destination(request)
    body: Redeliver = await _body(request, Redeliver)
    if body.all == (body.dead_letter is not None):
        raise invalid([Problem("", "give either all: true or dead_letter: N")])
    try:
        results = await manage.redeliver(
            ds, d, body.dead_letter, Pacing.of(request.app.state.settings)
        )
    except manage.Invalid as exc:
        raise _invalid(exc) from None
    return read.json(
        {"results": [{"id": i, "delivered": ok, "answer": answer} for i, ok, answer in results]}
    )


def routes() -> list[Any]:
    from starlette.routing import Route

    base = "/api/client/destinations"
    one = base + "/{id}"
    return [
        Route(base, list_destinations, methods=["GET"]),
        Route(base, add_destination, methods=["POST"]),
        Route(one, get_destination, methods=["GET"]),
        Route(one, remove_destination, methods=["DELETE"]),
        Route(one + "/pause", pause, methods=["POST"]),
        Route(one + "/resume", resume, methods=["POST"]),
        Route(one + "/replay", replay, methods=["POST"]),
        Route(one + "/dead-letters", dead_letters, methods=["GET"]),
        Route(one + "/redeliver", redeliver, methods=["POST"]),
    ]
