"""The portal's Destinations tab: each destination's state, lag, delivered count, last success
and error, its dead letters with a redeliver button, and forms to add, pause, resume, replay and
remove. The checks are delivery/manage.py's, as for the CLI and the API."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from ..api import params
from ..delivery import manage
from ..delivery.kinds import KINDS
from ..delivery.pacing import Pacing
from ..store.destinations import Destination, Destinations
from .views import _id, _missing, _project, admin_only, page, redirect, store

DEAD_LETTERS_SHOWN = 20  # per destination on the page


def _globs(value: Any) -> list[str]:
    return [g.strip() for g in str(value or "").split(",") if g.strip()]


async def _page(request: Request, project: Any, status: int = 200, **context: Any) -> Response:
    ds = Destinations(store(request))  # type: ignore[arg-type]
    rows = []
    for d in await ds.of_project(project.id):
        letters = (await ds.dead_letters(d.id))[:DEAD_LETTERS_SHOWN]
        rows.append({"view": await manage.view(ds, d), "dead_letters": letters})
    return page(
        request,
        "destinations.html",
        status,
        project=project,
        tab="destinations",
        destinations=rows,
        kinds=KINDS,
        **context,
    )


@admin_only
async def destinations(request: Request) -> Response:
    project = await _project(request)
    if project is None:
        return _missing(request)
    return await _page(request, project, notice=_notice(request))


NOTICES = {
    "paused": "Destination paused: its cursor stays, its lag grows.",
    "resumed": "Destination resumed.",
    "replayed": "Destination rewound: it sends everything after that point again.",
    "removed": "Destination removed.",
    "redelivered": "Dead letters sent again: the delivered ones left the list.",
    "added": "Destination added.",
}


def _notice(request: Request) -> str | None:
    return NOTICES.get(request.query_params.get("msg", ""))


@admin_only
async def add(request: Request) -> Response:
    project = await _project(request)
    if project is None:
        return _missing(request)
    form = await request.form()

    def text(name: str) -> str | None:
        return str(form.get(name) or "").strip() or None

    size = text("batch_size")
    try:
        d, signing = manage.new_destination(
            project.id,
            str(text("kind")),
            str(text("url") or ""),
            key=text("key"),
            secret_key=text("secret_key"),
            name=text("name"),
            batch_size=(params.integer(size) or 0) if size else None,
            only=_globs(form.get("only")),
            skip=_globs(form.get("skip")),
            sealing=request.app.state.settings.secret_key,
        )
        did = await manage.add(Destinations(store(request)), d, str(text("from") or "beginning"))  # type: ignore[arg-type]
    except manage.Invalid as exc:
        message = " ".join(p.message for p in exc.problems)
        return await _page(request, project, 422, error=message)
    if signing:  # shown once, on this page only
        return await _page(request, project, 201, new_secret=signing, new_id=did)
    return redirect(request, f"/projects/{project.id}/destinations?msg=added")


async def _one(request: Request) -> tuple[Any, Destinations, Destination | None]:
    project = await _project(request)
    ds = Destinations(store(request))  # type: ignore[arg-type]
    did = _id(request, "did")
    d = await ds.get(did) if project is not None and did is not None else None
    if d is not None and d.project_id != project.id:
        d = None
    return project, ds, d


def _action(do: Any, notice: str) -> Any:
    @admin_only
    async def endpoint(request: Request) -> Response:
        project, ds, d = await _one(request)
        if project is None or d is None:
            return _missing(request, "destination" if project else "project")
        problem = await do(request, ds, d)
        if problem:
            return await _page(request, project, 422, error=problem)
        return redirect(request, f"/projects/{project.id}/destinations?msg={notice}")

    return endpoint


async def _pause(request: Request, ds: Destinations, d: Destination) -> None:
    await ds.set_state(d.id, "paused")


async def _resume(request: Request, ds: Destinations, d: Destination) -> None:
    await ds.set_state(d.id, "active")


async def _remove(request: Request, ds: Destinations, d: Destination) -> None:
    await ds.remove(d.id)


async def _replay(request: Request, ds: Destinations, d: Destination) -> str | None:
    point = str((await request.form()).get("from") or "").strip() or "beginning"
    try:
        await ds.rewind(d.id, await manage.replay_cursor(ds, d, point))
    except manage.Invalid as exc:
        return exc.problems[0].message
    return None


async def _redeliver(request: Request, ds: Destinations, d: Destination) -> str | None:
    raw = str((await request.form()).get("dead_letter") or "")
    try:
        pacing = Pacing.of(request.app.state.settings)
        results = await manage.redeliver(ds, d, params.integer(raw), pacing)
    except manage.Invalid as exc:
        return exc.problems[0].message
    failed = [f"#{i}: {answer[:200]}" for i, ok, answer in results if not ok]
    return ("Failed again (kept): " + "; ".join(failed)) if failed else None


pause = _action(_pause, "paused")
resume = _action(_resume, "resumed")
remove = _action(_remove, "removed")
replay = _action(_replay, "replayed")
redeliver = _action(_redeliver, "redelivered")


def routes(project: str) -> list[Any]:
    from starlette.routing import Route

    one = project + "/destinations/{did}"
    return [
        Route(project + "/destinations", destinations, methods=["GET"]),
        Route(project + "/destinations", add, methods=["POST"]),
        Route(one + "/pause", pause, methods=["POST"]),
        Route(one + "/resume", resume, methods=["POST"]),
        Route(one + "/replay", replay, methods=["POST"]),
        Route(one + "/redeliver", redeliver, methods=["POST"]),
        Route(one + "/remove", remove, methods=["POST"]),
    ]
