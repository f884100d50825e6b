"""The ASGI application, assembled above `api/` and `portal/`: routes, error handlers, and the
store and writer it runs on."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from urllib.parse import quote, unquote

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, Mount, Route, get_route_path
from starlette.types import Scope

from . import writerproc
from .api import ingest, lists, manage, openapi, read, segment, track
from .api.auth import KeyCache
from .api.edge import AppState, Edge
from .api.errors import (
    HTTPProblem,
    http_exception,
    problem_handler,
    server_error,
    store_unavailable,
)
from .delivery import routes as destinations
from .portal.auth import LoginThrottle
from .portal.routes import routes as portal_routes
from .process import metrics
from .process.gctune import periodic_collection
from .process.parent import exit_with_parent
from .settings import Settings
from .store import StoreUnavailable, make_store


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


class RawPathRoute(Route):
    """A route matched on the path as the client sent it (scope["raw_path"]), its parameters
    percent-decoded only once matched: in `/api/client/users/{ref}`, a `/` separates segments
    and `%2F` is part of the id, so `/users/x%2Fevents` is the user `x/events` and
    `/users/x/events` the events of `x`."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if scope["type"] != "http":
            return Match.NONE, {}
        found = self.path_regex.match(raw_route_path(scope))
        if found is None:
            return Match.NONE, {}
        values = {
            name: self.param_convertors[name].convert(unquote(value))
            for name, value in found.groupdict().items()
        }
        child = {
            "endpoint": self.endpoint,
            "path_params": {**scope.get("path_params", {}), **values},
        }
        if self.methods and scope["method"] not in self.methods:
            return Match.PARTIAL, child
        return Match.FULL, child


def raw_route_path(scope: Scope) -> str:
    """The path still percent-encoded, less the root path (uvicorn prefixes both with it)."""
    raw = scope.get("raw_path")
    if raw is None:  # a server that does not give it: the decoded path, encoded again
        return quote(get_route_path(scope), safe="/")
    path = raw.decode("latin-1")
    root = scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root + "/") else path


def routes() -> list[Route | Mount]:
    return [
        *(Route(path, endpoint, methods=["POST"]) for path, endpoint in INGESTION.items()),
        Route("/api/client/segment/{call:path}", segment.call, methods=["POST"]),
        Route("/metrics", metrics.serve, methods=["GET"]),
        Route("/health", health, methods=["GET"]),
        Route("/api/openapi.json", openapi.serve, methods=["GET"]),
        Route("/api/client/users", manage.list_users, methods=["GET"]),
        # {ref}: one segment of the raw path; an id holding "/" is sent with %2F
        RawPathRoute("/api/client/users/{ref}/events", read.user_events, methods=["GET"]),
        RawPathRoute("/api/client/users/{ref}/devices", manage.user_devices, methods=["GET"]),
        RawPathRoute("/api/client/users/{ref}/lists", lists.user_lists, methods=["GET"]),
        RawPathRoute("/api/client/users/{ref}", read.get_user, methods=["GET"]),
        RawPathRoute("/api/client/users/{ref}", manage.delete_user, methods=["DELETE"]),
        RawPathRoute("/api/client/devices/{device_id}", manage.delete_device, methods=["DELETE"]),
        Route("/api/client/events", manage.event_feed, methods=["GET"]),
        *lists.routes(),
        *destinations.routes(),
        Mount("/portal", routes=portal_routes()),
    ]


def create_app(
    settings: Settings, *, tune_gc: bool = False, writer_socket: str | None = None
) -> Edge:
    """Pier as an ASGI app; the store is opened and migrated at start-up. `tune_gc`: collect
    garbage on a timer (see gctune); for a process that serves only Pier. `writer_socket`: a
    writer process owns the writes (writerproc) and listens there; else this process runs
    `write_side` itself."""
    store = make_store(settings.database_url, settings.durability)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await store.open()
        app.state.store = store
        app.state.keys = KeyCache(store)
        try:
            await store.migrate()
            async with contextlib.AsyncExitStack() as stack:
                if writer_socket is None:
                    side = writerproc.write_side(store, settings)
                    app.state.writer, app.state.lists = await stack.enter_async_context(side)
                else:  # the writer process computes the lists and runs the sweeper
                    group = writerproc.group_of(store)  # (the writer process's kind of store)
                    app.state.writer = writerproc.WriterClient(writer_socket, group)
                    app.state.lists = writerproc.ListJobsClient(app.state.writer)
                    stack.push_async_callback(app.state.writer.close)
                    stack.push_async_callback(app.state.lists.stop)
                if tune_gc:  # a process that serves only Pier: pier serve's worker
                    await stack.enter_async_context(periodic_collection())
                    exit_with_parent()
                yield
        finally:
            await store.close()

    app = Starlette(
        routes=routes(),
        lifespan=lifespan,
        exception_handlers={
            HTTPException: http_exception,
            HTTPProblem: problem_handler,
            StoreUnavailable: store_unavailable,
            Exception: server_error,
        },
    )
    app.state = AppState()
    app.state.settings = settings
    app.state.login_throttle = LoginThrottle.of(settings)
    return Edge(app, INGESTION, log_all=settings.access_log == "all")


def from_environment() -> Edge:
    """The app `pier serve` runs in each worker process, with the settings it passed."""
    from . import settings

    return create_app(
        settings.from_environment(),
        tune_gc=True,
        writer_socket=settings.writer_socket(),
    )
