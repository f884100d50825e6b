"""The management API (secret keys): the project's users, a user's devices, deleting a user or
one device, and the project's event feed in storage order."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from ..domain.commands import RemoveDevice
from ..store.base import FeedEvent, Store, StoreUnavailable
from . import params, read, render
from .auth import secret_key
from .errors import HTTPProblem
from .fields import ID
from .ingest import submit

FEED_LIMIT = 100  # default page of the event feed (at most 1000, as everywhere)


def _store(request: Request) -> Store:
    return request.app.state.store


class FeedItem(render.Event):
    """An item of the feed (GET feed, `pier export`, destinations): the read API's event plus
    its user's ids, as they are now."""

    user_id: int
    external_id: str | None
    anonymous_id: str | None


def feed_event(e: FeedEvent) -> FeedItem:
    iso = render.iso
    return FeedItem(
        e.id,
        e.name,
        e.data,
        iso(e.created_at),
        iso(e.received_at),
        e.message_id,
        e.user_id,
        e.external_id,
        e.anonymous_id,
    )


def feed_cursor(event_id: int) -> str:
    return render.encode_cursor(event_id)


def decode_feed_cursor(value: str | None, name: str = "after") -> int | None:
    """The event id inside a feed cursor; 422 naming the parameter when it is not one of ours."""
    parts = params.cursor(value, 1, name)
    return parts[0] if parts else None


async def list_users(request: Request) -> Response:
    """GET /api/client/users?limit=&cursor=&q=: newest first; q matches an id, email or phone."""
    key = await secret_key(request)
    query = request.query_params
    limit = params.limit(query.get("limit"), read.PAGE)
    before = params.position(query.get("cursor"))
    q = query.get("q") or None
    rows = await _store(request).list_users(key.project_id, limit + 1, before, q)
    page = rows[:limit]
    next_cursor = None
    if len(rows) > limit:
        next_cursor = render.encode_cursor(page[-1].created_at, page[-1].id)
    return read.json({"results": [render.user(u) for u in page], "next_cursor": next_cursor})


async def user_devices(request: Request) -> Response:
    """GET /api/client/users/{ref}/devices."""
    user = await read.find_user(request)
    return read.json({"results": [render.device(d) for d in user.devices or []]})


async def delete_user(request: Request) -> Response:
    """DELETE /api/client/users/{ref}: the user, its anonymous ids, devices and events, in one
    transaction (a person's right to be forgotten)."""
    key = await secret_key(request)
    by = params.choice(request.query_params.get("by"), "by", read.BY)
    ref = request.path_params["ref"]
    try:
        deleted = await _store(request).delete_user(key.project_id, ref, by)
    except StoreUnavailable as exc:
        raise HTTPProblem(
            503, "The database is unavailable; nothing was deleted.", headers={"Retry-After": "2"}
        ) from exc
    if not deleted:
        raise render.not_found(f"No user with {by} {ref!r} in this project.")
    return Response(status_code=204)


async def delete_device(request: Request) -> Response:
    """DELETE /api/client/devices/{device_id}: the device, whoever holds it, through the writer
    (one transaction, a device_removed item). By device id alone: it is unique in a project, and
    a feed consumer (the pier kind) drops a device_removed's device whoever holds it."""
    key = await secret_key(request)
    device_id = request.path_params["device_id"]
    if "\0" in device_id or not ID.fits(device_id):  # no device can have it
        raise render.not_found(f"No device with device_id {device_id!r} in this project.")
    return await submit(request, RemoveDevice(project_id=key.project_id, device_id=device_id), b"")


async def event_feed(request: Request) -> Response:
    """GET /api/client/events?after=&limit=: the project's change feed in storage order: tracked
    events and Pier's own items (user_created, user_updated, user_merged, device_registered,
    device_removed, user_deleted, list_entered, list_exited: domain/feed.py; their data in
    docs/client-api.md and the OpenAPI document), from which a consumer rebuilds the users and
    devices.

    `next_cursor` is where to continue: after the last event returned, or the `after` given when
    there is nothing new yet (null only when the project has no events and no `after` was given),
    so a consumer can keep polling with it. `has_more` says whether another page is ready now."""
    key = await secret_key(request)
    given = request.query_params.get("after") or None
    after = decode_feed_cursor(given)
    limit = params.limit(request.query_params.get("limit"), FEED_LIMIT)
    rows = await _store(request).event_feed(key.project_id, after, limit + 1)
    page = rows[:limit]
    next_cursor = feed_cursor(page[-1].id) if page else given
    return read.json(
        {
            "results": [feed_event(e) for e in page],
            "next_cursor": next_cursor,
            "has_more": len(rows) > limit,
        }
    )
