"""The portal's routes (mounted at /portal by pier/app.py) and the headers every page carries."""

from __future__ import annotations

from pathlib import Path

from starlette.middleware import Middleware
from starlette.routing import Mount, Route, Router
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from . import destinations, lists, views

STATIC = Path(__file__).parent / "static"

# Only our own files: no inline script or style, no framing, forms post to the portal only.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:;"
    " connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
]
NO_STORE = (b"cache-control", b"no-store")  # pages may show a secret key once


class SecurityHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        static = scope.get("path", "").startswith(scope.get("root_path", "") + "/static/")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                extra = HEADERS if static else [*HEADERS, NO_STORE]
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        await self.app(scope, receive, send_with_headers)


def routes() -> list[Route | Mount]:
    project = "/projects/{pid}"  # ids are parsed by the views (views._id): a bad one is a 404
    pages = Router(
        # a path no route has: the portal's own 404 page, not the API's JSON
        default=views.not_found,
        routes=[
            Route("/", views.home, methods=["GET"]),
            Route("/login", views.login_form, methods=["GET"]),
            Route("/login", views.login, methods=["POST"]),
            Route("/logout", views.logout, methods=["POST"]),
            Route("/projects", views.projects, methods=["GET"]),
            Route("/projects", views.create_project, methods=["POST"]),
            Route(project, views.live, methods=["GET"]),
            Route(project + "/live.json", views.live_json, methods=["GET"]),
            Route(project + "/chart.svg", views.chart_svg, methods=["GET"]),
            Route(project + "/keys", views.keys, methods=["GET"]),
            Route(project + "/keys", views.create_key, methods=["POST"]),
            Route(project + "/keys/{kid}/revoke", views.revoke_key, methods=["POST"]),
            Route(project + "/users", views.users, methods=["GET"]),
            Route(project + "/users/{uid}", views.user, methods=["GET"]),
            Route(project + "/users/{uid}/delete", views.delete_user, methods=["POST"]),
            *destinations.routes(project),
            *lists.routes(project),
            Mount("/static", StaticFiles(directory=STATIC), name="portal-static"),
        ],
    )
    return [Mount("", app=pages, middleware=[Middleware(SecurityHeaders)])]
