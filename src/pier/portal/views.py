"""Portal pages: login, projects, keys, users, one user, the live view and its chart."""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import quote

import msgspec
from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.types import Receive, Scope, Send

from ..api import params
from ..api.errors import HTTPProblem
from ..api.render import encode_cursor
from ..api.validation import nested_deeper
from ..clock import now_ms
from ..domain.keys import PUBLIC, SCOPES, generate_key, hash_key
from ..store.base import EventRow, FeedEvent, Store
from . import auth
from .chart import events_chart, since

PAGE = 25  # users a page
EVENTS_PAGE = 50  # events a page on a user's page
PRETTY_MAX = 10_000  # characters of one event's (or a user's) data shown on a page
LIVE_ROWS = 50  # events the live view starts with and takes per poll
MAX_NAME = 100
MESSAGES = {  # notices after a redirect, chosen by a fixed code (no text from the URL is shown)
    "project-created": "Project created. Create a key to start sending events.",
    "key-created": "Key created.",
    "key-revoked": "Key revoked: requests with it are refused within a few seconds.",
    "user-deleted": "The user and everything stored about them are deleted.",
}


def when(ms: int | None) -> str:
    """A time as `2026-11-26 08:39:35` (UTC)."""
    if ms is None:
        return ""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ms // 1000))


def pretty(value: Any, limit: int = PRETTY_MAX) -> str:
    """Indented JSON of a value or of raw JSON bytes, cut after `limit` characters with a note.
    Only what is small and shallow is indented (indenting multiplies the size by the depth);
    anything else, such as data stored before the nesting rule, is shown as stored."""
    try:
        raw = bytes(value) if isinstance(value, msgspec.Raw) else msgspec.json.encode(value)
    except RecursionError:
        return "(nested too deeply to show)"
    if len(raw) <= limit and not nested_deeper(raw):
        text = msgspec.json.format(raw, indent=2).decode()  # numbers kept as written
    else:
        text = raw.decode()
    if len(text) <= limit:
        return text
    return f"{text[:limit]}\n… cut here: {len(text):,} characters in all"


def compact(raw: msgspec.Raw, limit: int = 140) -> str:
    text = bytes(raw).decode()
    return text if len(text) <= limit else text[: limit - 1] + "…"


env = Environment(
    loader=PackageLoader("pier.portal", "templates"),
    autoescape=select_autoescape(["html"]),
    trim_blocks=True,
    lstrip_blocks=True,
)
env.filters.update(when=when, pretty=pretty, compact=compact)


def store(request: Request) -> Store:
    return request.app.state.store


def page(request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
    session = getattr(request.state, "session", None)
    context.setdefault("csrf", session.csrf_token if session else "")
    context.setdefault("notice", MESSAGES.get(request.query_params.get("msg", "")))
    html = env.get_template(template).render(
        base=auth.base_path(request), session=session, **context
    )
    return HTMLResponse(html, status)


def redirect(request: Request, path: str) -> RedirectResponse:
    return RedirectResponse(auth.base_path(request) + path, status_code=303)


def error(request: Request, status: int, title: str, message: str) -> HTMLResponse:
    return page(request, "error.html", status, title=title, message=message)


async def not_found(scope: Scope, receive: Receive, send: Send) -> None:
    """A path under the portal that no route has (any method): a 404 page in the portal's
    layout, with the way back to the projects."""
    request = Request(scope, receive)
    request.state.session = await auth.current_session(request)  # the layout shows who it is
    response = error(request, 404, "Page not found", "There is no such page in the portal.")
    await response(scope, receive, send)


async def denied(request: Request, logged_in: bool) -> Response:
    """No session: to the login page (JSON endpoints: 401). A session but no CSRF token: 403."""
    if logged_in:
        return error(
            request,
            403,
            "Form expired",
            "This form was not sent from a current portal page. Reload the page and try again.",
        )
    if request.url.path.endswith((".json", ".svg")):
        return JSONResponse({"status": "error", "error": "Log in to the portal."}, 401)
    if request.method != "GET":
        return redirect(request, "/login")
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return redirect(request, "/login?next=" + quote(target, safe="/"))


def safe_next(request: Request, value: object) -> str:
    """A path inside the portal to go to after login, else the projects page."""
    base = auth.base_path(request)
    if (
        isinstance(value, str)
        and value.startswith(base + "/")
        and not any(bad in value for bad in ("//", "\\", "\r", "\n"))
        and not value.startswith(base + "/login")
    ):
        return value
    return base + "/projects"


admin_only = auth.admin_only(denied=denied)


# -- login and logout -------------------------------------------------------------------------
def _login_page(request: Request, status: int = 200, **context: Any) -> HTMLResponse:
    token = request.cookies.get(auth.LOGIN_COOKIE) or auth.new_token()
    response = page(request, "login.html", status, csrf=token, **context)
    auth.set_cookie(response, request, auth.LOGIN_COOKIE, token, 3600)
    return response


async def login_form(request: Request) -> Response:
    if await auth.current_session(request) is not None:
        return redirect(request, "/projects")
    return _login_page(request, next=safe_next(request, request.query_params.get("next")))


async def login(request: Request) -> Response:
    form = await request.form()
    email, password = str(form.get("email", "")), str(form.get("password", ""))
    next_path = safe_next(request, form.get("next"))
    context = {"email": email, "next": next_path}
    csrf = form.get("csrf")
    cookie = request.cookies.get(auth.LOGIN_COOKIE)
    if not auth.same_origin(request) or not auth.same(str(csrf or ""), cookie):
        error = "The login form expired. Please try again."
        return _login_page(request, 403, error=error, **context)
    # the peer, or the client a proxy named when it is one of `pier serve --forwarded-allow-ips`
    who = request.client.host if request.client else "?"
    try:
        throttle = request.app.state.login_throttle
        admin = await auth.log_in(store(request), throttle, who, email, password)
    except auth.Throttled as refused:
        response: Response = _login_page(request, 429, error=refused.message, **context)
        response.headers["Retry-After"] = str(refused.retry_after)
        return response
    if admin is None:
        return _login_page(request, 401, error="Wrong email or password.", **context)
    response = RedirectResponse(next_path, status_code=303)
    await auth.start_session(store(request), admin, response, request)
    response.delete_cookie(auth.LOGIN_COOKIE, path=auth.base_path(request))
    return response


@admin_only
async def logout(request: Request) -> Response:
    response = redirect(request, "/login")
    await auth.end_session(store(request), request, response)
    return response


# -- projects ---------------------------------------------------------------------------------
@admin_only
async def home(request: Request) -> Response:
    return redirect(request, "/projects")


@admin_only
async def projects(request: Request) -> Response:
    return page(request, "projects.html", projects=await store(request).list_projects())


@admin_only
async def create_project(request: Request) -> Response:
    name = str((await request.form()).get("name", "")).strip()
    if not 1 <= len(name) <= MAX_NAME:
        return page(
            request,
            "projects.html",
            422,
            projects=await store(request).list_projects(),
            error=f"A project name has 1 to {MAX_NAME} characters.",
            name=name,
        )
    project = await store(request).create_project(name, now_ms())
    return redirect(request, f"/projects/{project.id}/keys?msg=project-created")


def _id(request: Request, name: str) -> int | None:
    """A numeric id from the path (projects, keys, users); None when it cannot be one."""
    return params.integer(request.path_params[name], 1)


async def _project(request: Request) -> Any:
    pid = _id(request, "pid")
    return None if pid is None else await store(request).get_project(pid)


def _missing(request: Request, what: str = "project") -> HTMLResponse:
    return error(request, 404, "Not found", f"There is no such {what}.")


# -- live view and chart ----------------------------------------------------------------------
def live_event(base: str, e: FeedEvent, project_id: int) -> dict[str, Any]:
    return {
        "id": e.id,
        "time": when(e.received_at),
        "name": e.name,
        "user": e.external_id or e.anonymous_id or f"user {e.user_id}",
        "user_url": f"{base}/projects/{project_id}/users/{e.user_id}",
        "data": compact(e.data),
    }


async def _chart(request: Request, project_id: int) -> str:
    now = now_ms()
    return events_chart(await store(request).events_per_minute(project_id, since(now)), now)


@admin_only
async def live(request: Request) -> Response:
    project = await _project(request)
    if project is None:
        return _missing(request)
    base = auth.base_path(request)
    events = await store(request).latest_events(project.id, LIVE_ROWS)
    keys = await store(request).list_keys(project.id)
    public = next((k.value for k in keys if k.value and k.revoked_at is None), None)
    return page(
        request,
        "live.html",
        project=project,
        tab="live",
        events=[live_event(base, e, project.id) for e in events],
        last_id=events[0].id if events else 0,
        chart=await _chart(request, project.id),
        public_key=public,
        origin=f"{request.url.scheme}://{request.url.netloc}",
    )


@admin_only
async def live_json(request: Request) -> Response:
    project = await _project(request)
    if project is None:
        return JSONResponse({"status": "error", "error": "No such project."}, 404)
    after_id = params.integer(request.query_params.get("after")) or 0
    events = await store(request).latest_events(project.id, LIVE_ROWS, after_id)
    base = auth.base_path(request)
    return JSONResponse(
        {
            "events": [live_event(base, e, project.id) for e in events],
            "last_id": events[0].id if events else after_id,
        }
    )


@admin_only
async def chart_svg(request: Request) -> Response:
    project = await _project(request)
    if project is None:
        return _missing(request)
    return Response(await _chart(request, project.id), media_type="image/svg+xml")


# -- keys -------------------------------------------------------------------------------------
async def _keys_page(request: Request, project: Any, status: int = 200, **context: Any) -> Response:
    keys = sorted(
        await store(request).list_keys(project.id),
        key=lambda k: (k.revoked_at is not None, -k.id),
    )
    return page(request, "keys.html", status, project=project, tab="keys", keys=keys, **context)


@admin_only
async def keys(request: Request) -> Response:
    project = await _project(request)
    if project is None:
        return _missing(request)
    return await _keys_page(request, project)


@admin_only
async def create_key(request: Request) -> Response:
    project = await _project(request)
    if project is None:
        return _missing(request)
    form = await request.form()
    scope = form.get("scope")
    name = str(form.get("name", "")).strip() or None
    if scope not in SCOPES or (name is not None and len(name) > MAX_NAME):
        message = f"Choose public or secret, and a name of at most {MAX_NAME} characters."
        return await _keys_page(request, project, 422, error=message)
    value = generate_key(str(scope))
    stored = value if scope == PUBLIC else None  # only a hash of a secret key is kept
    key = await store(request).create_key(
        project.id, str(scope), name, hash_key(value), value[:7], stored, now_ms()
    )
    if scope == PUBLIC:  # shown in the list again: a redirect keeps reloads harmless
        return redirect(request, f"/projects/{project.id}/keys?msg=key-created")
    return await _keys_page(request, project, 201, new_secret=value, new_key=key)


@admin_only
async def revoke_key(request: Request) -> Response:
    project = await _project(request)
    if project is None:
        return _missing(request)
    key_id = _id(request, "kid")
    if all(k.id != key_id for k in await store(request).list_keys(project.id)):
        return _missing(request, "key")
    await store(request).revoke_key(key_id, None, now_ms())
    return redirect(request, f"/projects/{project.id}/keys?msg=key-revoked")


# -- users ------------------------------------------------------------------------------------
def _cursor(value: str | None) -> tuple[int, int] | None:
    try:
        return params.position(value)
    except HTTPProblem:
        return None  # a cursor edited by hand: start from the first page


@admin_only
async def users(request: Request) -> Response:
    project = await _project(request)
    if project is None:
        return _missing(request)
    q = request.query_params.get("q", "").strip()
    before = _cursor(request.query_params.get("cursor"))
    rows = await store(request).list_users(project.id, PAGE + 1, before, q or None)
    shown = rows[:PAGE]
    more = len(rows) > PAGE
    return page(
        request,
        "users.html",
        project=project,
        tab="users",
        users=shown,
        q=q,
        paged=before is not None,
        next_cursor=encode_cursor(shown[-1].created_at, shown[-1].id) if more else None,
    )


@admin_only
async def user(request: Request) -> Response:
    project = await _project(request)
    if project is None:
        return _missing(request)
    uid = _id(request, "uid")
    found = None if uid is None else await store(request).get_user_by_id(project.id, uid)
    if found is None:
        return _missing(request, "user in this project")
    before = _cursor(request.query_params.get("cursor"))
    rows: list[EventRow] = await store(request).user_events(found.id, EVENTS_PAGE + 1, before)
    shown = rows[:EVENTS_PAGE]
    more = len(rows) > EVENTS_PAGE
    return page(
        request,
        "user.html",
        project=project,
        tab="users",
        user=found,
        events=shown,
        paged=before is not None,
        next_cursor=encode_cursor(shown[-1].created_at, shown[-1].id) if more else None,
    )


@admin_only
async def delete_user(request: Request) -> Response:
    project = await _project(request)
    if project is None:
        return _missing(request)
    uid = _id(request, "uid")
    if uid is None or not await store(request).delete_user(project.id, str(uid), "id"):
        return _missing(request, "user in this project")
    return redirect(request, f"/projects/{project.id}/users?msg=user-deleted")
