"""The ASGI application: routes, error handlers, and the store and writer it runs on."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.convertors import PathConvertor, register_url_convertor
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route

from ..delivery.engine import Deliverer
from ..portal.routes import routes as portal_routes
from ..store import make_store
from ..writer import Writer
from . import destinations, ingest, manage, metrics, openapi, read, segment, track
from .auth import KeyCache
from .edge import Edge
from .errors import HTTPProblem, http_exception, problem_handler
from .gctune import periodic_collection


class AnyPath(PathConvertor):
    """`{x:path}` matching any characters, newlines too: an id may hold one (Starlette's own
    pattern, `.*`, stops at a newline, and the route then answered 404)."""

    regex = "(?s:.*)"


register_url_convertor("path", AnyPath())  # before the routes below are compiled


async def health(request: Request) -> Response:
    return read.json({"status": "ok"})


# The ingestion routes: Edge calls these endpoints directly, without the router (the Routes
# below stay for the router's 405 on other methods)
INGESTION = {
    "/api/client/events": ingest.events,
    "/api/client/identify": ingest.identify,
    "/api/client/alias": ingest.alias,
    "/api/client/devices": ingest.devices,
    "/api/client/track": track.track,
    "/api/client/segment": segment.batch,
}


def routes() -> list[Route | Mount]:
    return [
        *(Route(path, endpoint, methods=["POST"]) for path, endpoint in INGESTION.items()),
        Route("/api/client/segment/{call:path}", segment.call, methods=["POST"]),
        Route("/metrics", metrics.serve, methods=["GET"]),
        Route("/health", health, methods=["GET"]),
        Route("/api/openapi.json", openapi.serve, methods=["GET"]),
        Route("/api/client/users", manage.list_users, methods=["GET"]),
        # {ref:path}: external and anonymous ids may hold "/" (send it as %2F or as is)
        Route("/api/client/users/{ref:path}/events", read.user_events, methods=["GET"]),
        Route("/api/client/users/{ref:path}/devices", manage.user_devices, methods=["GET"]),
        Route("/api/client/users/{ref:path}", read.get_user, methods=["GET"]),
        Route("/api/client/users/{ref:path}", manage.delete_user, methods=["DELETE"]),
        Route("/api/client/events", manage.event_feed, methods=["GET"]),
        *destinations.routes(),
        Mount("/portal", routes=portal_routes()),
    ]


def create_app(
    database_url: str, *, durability: str = "full", tune_gc: bool = False, deliver: bool = False
) -> Edge:
    """Pier as an ASGI app; the store is opened and migrated at start-up. `tune_gc`: collect
    garbage on a timer (see gctune); for a process that serves only Pier. `deliver`: run the
    delivery engine (pier.delivery) in the background."""
    store = make_store(database_url, durability)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await store.open()
        await store.migrate()
        writer = Writer(store)
        writer.start()
        app.state.store = store
        app.state.writer = writer
        app.state.keys = KeyCache(store)
        gc_mode = periodic_collection() if tune_gc else contextlib.nullcontext()
        deliverer = Deliverer(store) if deliver else None
        if deliverer is not None:
            deliverer.start()
        try:
            async with gc_mode:
                yield
        finally:
            if deliverer is not None:
                await deliverer.stop()
            await writer.stop()
            await store.close()

    app = Starlette(
        routes=routes(),
        lifespan=lifespan,
        exception_handlers={HTTPException: http_exception, HTTPProblem: problem_handler},
    )
    return Edge(app, INGESTION)


def from_environment() -> Edge:
    """The app `pier serve` runs in each worker process, configured by the environment."""
    import os

    from ..store import database_url

    durability = os.environ.get("PIER_DURABILITY", "full")
    deliver = os.environ.get("PIER_DELIVER", "1") != "0"
    return create_app(database_url(None), durability=durability, tune_gc=True, deliver=deliver)
