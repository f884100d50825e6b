"""The portal's Lists tab (docs/lists.md): each list with its count, state and rule in words; a
list's page with its members, paged; creating and editing a list in a JSON rule editor that
shows each problem at its JSON Pointer and a live count; a static list's members added and
removed by external id or by Parcelvoy's CSV. The checks, the preview and the changes are the
API's own (api/lists.py, api/list_csv.py), called with the form's fields."""

from __future__ import annotations

import re
from typing import Any

import msgspec
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .. import lists as list_jobs
from ..api import ingest, list_csv
from ..api import lists as api
from ..api.errors import HTTPProblem, Problem, error_body
from ..api.render import encode_cursor
from ..clock import now_ms
from ..domain.segments import RuleInvalid, parse_rule, rule_words
from ..store.base import ListRow
from .views import PAGE, _cursor, _id, _missing, _project, admin_only, page, redirect, store

NOTICES = {
    "created": "List created.",
    "changed": "List saved.",
    "added": "Members added.",
    "removed": "Members removed.",
    "imported": "CSV imported: its users are created or updated, and members.",
    "deleted": "List deleted.",
}
_SEPARATORS = re.compile(r"[\r\n,]+")  # (an external id may hold a space)


def words(row: ListRow) -> str | None:
    """A dynamic list's rule in words (None for a static list)."""
    if row.rule is None:
        return None
    try:
        return rule_words(parse_rule(msgspec.json.decode(row.rule), now_ms()))
    except (RuleInvalid, ValueError):  # a stored rule that no longer renders at this instant
        return "(the rule cannot be evaluated now)"


def pretty_rule(text: str | None) -> str:
    if not text:
        return ""
    return msgspec.json.format(text.encode(), indent=2).decode()


def problems_of(exc: HTTPProblem) -> list[Problem]:
    return exc.errors or [Problem("", exc.message)]


def _form_fields(form: Any, *, with_type: bool) -> tuple[dict[str, Any], str | None]:
    """The fields the API's create/update take, from the editor's form; the rule as decoded
    JSON (422 at /rule when it is not JSON) and as compact JSON text to store."""
    values: dict[str, Any] = {"name": str(form.get("name") or "").strip()}
    if with_type:
        values["type"] = str(form.get("type") or "")
    text = str(form.get("rule") or "").strip()
    if not text:
        return values, None
    values["rule"] = rule = api.rule_of_text(text)
    return values, msgspec.json.encode(rule).decode()


async def _index(request: Request, project: Any, status: int = 200, **context: Any) -> Response:
    rows = await store(request).lists(project.id)
    return page(
        request,
        "lists.html",
        status,
        project=project,
        tab="lists",
        lists=[{"row": r, "words": words(r)} for r in rows],
        notice=NOTICES.get(request.query_params.get("msg", "")),
        **context,
    )


@admin_only
async def index(request: Request) -> Response:
    project = await _project(request)
    if project is None:
        return _missing(request)
    return await _index(request, project, form={"type": "dynamic"})


@admin_only
async def create(request: Request) -> Response:
    project = await _project(request)
    if project is None:
        return _missing(request)
    form = await request.form()
    try:
        values, text = _form_fields(form, with_type=True)
        row = await api.create_list(request, project.id, values, text)
    except HTTPProblem as exc:
        kept = {k: str(form.get(k) or "") for k in ("name", "type", "rule")}
        return await _index(request, project, exc.status, problems=problems_of(exc), form=kept)
    return redirect(request, f"/projects/{project.id}/lists/{row.id}?msg=created")


async def _one(request: Request) -> tuple[Any, ListRow | None]:
    project = await _project(request)
    lid = _id(request, "lid")
    row = None
    if project is not None and lid is not None:
        row = await store(request).get_list(project.id, lid)
    return project, row


async def _list_page(
    request: Request, project: Any, row: ListRow, status: int = 200, **context: Any
) -> Response:
    before = _cursor(request.query_params.get("cursor"))
    members = await store(request).list_members(project.id, row.id, PAGE + 1, before)
    shown = members[:PAGE]
    more = len(members) > PAGE
    context.setdefault("form", {"name": row.name, "rule": pretty_rule(row.rule)})
    return page(
        request,
        "list.html",
        status,
        project=project,
        tab="lists",
        list=row,
        words=words(row),
        members=shown,
        paged=before is not None,
        next_cursor=encode_cursor(shown[-1].created_at, shown[-1].id) if more else None,
        notice=NOTICES.get(request.query_params.get("msg", "")),
        **context,
    )


@admin_only
async def one(request: Request) -> Response:
    project, row = await _one(request)
    if project is None or row is None:
        return _missing(request, "list" if project else "project")
    return await _list_page(request, project, row)


def _action(do: Any, notice: str) -> Any:
    """A POST on one list: `do(request, row)` raises HTTPProblem to show its problems."""

    @admin_only
    async def endpoint(request: Request) -> Response:
        project, row = await _one(request)
        if project is None or row is None:
            return _missing(request, "list" if project else "project")
        try:
            await do(request, row)
        except HTTPProblem as exc:
            form = await request.form()
            kept = {"name": str(form.get("name") or row.name), "rule": str(form.get("rule") or "")}
            if not kept["rule"]:
                kept["rule"] = pretty_rule(row.rule)
            return await _list_page(
                request, project, row, exc.status, problems=problems_of(exc), form=kept
            )
        if notice == "deleted":
            return redirect(request, f"/projects/{project.id}/lists?msg=deleted")
        return redirect(request, f"/projects/{project.id}/lists/{row.id}?msg={notice}")

    return endpoint


async def _update(request: Request, row: ListRow) -> None:
    form = await request.form()
    values, text = _form_fields(form, with_type=False)
    values["published"] = form.get("published") == "on"
    if row.rule is not None and values.get("rule") == msgspec.json.decode(row.rule):
        del values["rule"]  # the same tree: nothing to compute again
        text = None
    await api.update_list(request, row, values, text)


def _ids(form: Any) -> list[str]:
    found = (i.strip() for i in _SEPARATORS.split(str(form.get("external_ids") or "")))
    return [i for i in found if i]


async def _add(request: Request, row: ListRow) -> None:
    api.static_only(row)
    await api.add_ids(request, row, api.checked_ids(_ids(await request.form())))


async def _remove(request: Request, row: ListRow) -> None:
    api.static_only(row)
    ids = api.checked_ids(_ids(await request.form()))
    await list_jobs.remove_members(store(request), row, ids, now_ms())


async def _import(request: Request, row: ListRow) -> None:
    api.static_only(row)
    upload = (await request.form()).get("file")
    if not isinstance(upload, UploadFile) or not upload.filename:
        raise HTTPProblem(422, "Choose a CSV file to import.")
    raw = await upload.read()
    await ingest.submit(request, list_csv.sequence(raw, row.project_id, row.id), raw)


async def _delete(request: Request, row: ListRow) -> None:
    await store(request).delete_list(row.project_id, row.id)
    request.app.state.lists.cancel(row.id)


update = _action(_update, "changed")
add = _action(_add, "added")
remove = _action(_remove, "removed")
import_csv = _action(_import, "imported")
delete = _action(_delete, "deleted")


@admin_only
async def preview(request: Request) -> Response:
    """The editor's live count: {count} for the form's rule now, or the API's 422 body."""
    project = await _project(request)
    if project is None:
        return JSONResponse({"status": "error", "error": "No such project."}, 404)
    try:
        text = str((await request.form()).get("rule") or "")
        found = await api.preview_rule(request, project.id, api.rule_of_text(text))
    except HTTPProblem as exc:
        return Response(error_body(exc), exc.status, media_type="application/json")
    return JSONResponse({"count": found["count"]})


def routes(project: str) -> list[Route]:
    one_list = project + "/lists/{lid}"
    return [
        Route(project + "/lists", index, methods=["GET"]),
        Route(project + "/lists", create, methods=["POST"]),
        Route(project + "/lists/preview.json", preview, methods=["POST"]),
        Route(one_list, one, methods=["GET"]),
        Route(one_list, update, methods=["POST"]),
        Route(one_list + "/add", add, methods=["POST"]),
        Route(one_list + "/remove", remove, methods=["POST"]),
        Route(one_list + "/import", import_csv, methods=["POST"]),
        Route(one_list + "/delete", delete, methods=["POST"]),
    ]
