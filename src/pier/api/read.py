"""The read API (secret keys): a user, and a user's events newest first."""

from __future__ import annotations

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from ..domain.model import User
from . import params, render
from .auth import secret_key

BY = ("external_id", "anonymous_id")
PAGE = 25  # default page size of the read and management lists


def json(body: object, status: int = 200) -> Response:
    return Response(msgspec.json.encode(body), status, media_type="application/json")


async def find_user(request: Request) -> User:
    """The user named by the path, in the key's project; 404 when unknown."""
    key = await secret_key(request)
    by = params.choice(request.query_params.get("by"), "by", BY)
    ref = request.path_params["ref"]
    user = await request.app.state.store.get_user(key.project_id, ref, by)
    if user is None:
        raise render.not_found(f"No user with {by} {ref!r} in this project.")
    return user


async def get_user(request: Request) -> Response:
    return json(render.user(await find_user(request)))


async def user_events(request: Request) -> Response:
    user = await find_user(request)
    limit = params.limit(request.query_params.get("limit"), PAGE)
    before = params.position(request.query_params.get("cursor"))
    rows = await request.app.state.store.user_events(user.id, limit + 1, before)
    page = rows[:limit]
    next_cursor = None
    if len(rows) > limit:
        last = page[-1]
        next_cursor = render.encode_cursor(last.created_at, last.id)
    return json({"results": [render.event(e) for e in page], "next_cursor": next_cursor})
