"""The list routes (secret keys; docs/lists.md): Parcelvoy's /api/client/lists, their members,
a user's lists, and a preview of a rule without saving it."""

from __future__ import annotations

from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .. import lists
from ..clock import now_ms
from ..domain.keys import Key
from ..domain.segments import Rule, RuleError, RuleInvalid, parse_rule
from ..lists import Backfills
from ..store.base import ListRow, Store
from . import ingest, list_csv, params, read, render
from .auth import secret_key
from .body import read_body
from .errors import HTTPProblem, Problem, invalid
from .fields import ID
from .validation import check_string, pointer

TYPES = ("dynamic", "static")
CREATE_FIELDS = ("name", "type", "rule", "tags", "is_visible")  # tags, is_visible: ignored
PATCH_FIELDS = ("name", "rule", "published", "tags")
MAX_MEMBERS = 1000  # external ids in one POST/DELETE of a static list's users
SAMPLE = 10  # users in a preview's sample


def _store(request: Request) -> Store:
    return request.app.state.store


def _jobs(request: Request) -> Backfills:
    return request.app.state.lists


def render_list(row: ListRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "project_id": row.project_id,
        "name": row.name,
        "type": row.type,
        "rule": msgspec.Raw(row.rule.encode()) if row.rule is not None else None,
        "state": row.state,
        "progress": row.progress,
        "users_count": row.users_count,
        "published": row.published,
        "created_at": render.iso(row.created_at),
        "updated_at": render.iso(row.updated_at),
        "error": _error(row),
    }


def _error(row: ListRow) -> dict[str, Any] | None:
    """Why the list's computation failed, the last time, and when it is tried again (None when
    it did not fail; docs/lists.md)."""
    if not row.failures or row.failed_at is None:
        return None
    return {
        "message": row.error,
        "failures": row.failures,
        "failed_at": render.iso(row.failed_at),
        "retry_at": render.iso(row.failed_at + lists.retry_after(row.failures)),
    }


async def _fields(request: Request, allowed: tuple[str, ...]) -> dict[str, msgspec.Raw]:
    """The body's fields, each as the JSON text received; 422 for a body that is not an object
    or has a field not in `allowed`."""
    raw = ingest.checked(await read_body(request))
    ingest.decode(raw)  # 400 when it is not JSON at all
    try:
        fields = msgspec.json.decode(raw, type=dict[str, msgspec.Raw])
    except msgspec.ValidationError as exc:
        raise invalid([Problem("", "the body must be a JSON object")]) from exc
    unknown = [Problem(pointer("", k), f"unknown field {k!r}") for k in fields if k not in allowed]
    if unknown:
        raise invalid(unknown)
    return fields


def _values(fields: dict[str, msgspec.Raw]) -> dict[str, Any]:
    return {k: msgspec.json.decode(v) for k, v in fields.items()}


def rule_of_text(text: str) -> Any:
    """A rule tree sent as JSON text on its own (the portal's editor), decoded under the rules
    of every body (ingest.checked); a 422 at /rule when it breaks them or is not JSON."""
    raw = text.encode()
    try:
        return ingest.decode(ingest.checked(raw))
    except HTTPProblem as exc:
        problems = exc.errors or [Problem("", exc.message.replace("The body is", "The rule is"))]
        raise invalid([Problem("/rule" + p.path, p.message) for p in problems]) from exc


def _rule(value: Any, now: int, where: str, out: list[Problem]) -> Rule | None:
    """The tree parsed, or its problems (each with its JSON Pointer under `where`) added."""
    if not isinstance(value, dict):
        out.append(Problem(where, "rule must be a JSON object (a rule tree)"))
        return None
    try:
        return parse_rule(value, now)
    except RuleInvalid as exc:
        out.extend(Problem(where + p, message) for p, message in exc.problems)
        return None


def _check_common(values: dict[str, Any], out: list[Problem], *, creating: bool) -> None:
    check_string(values, "name", "", out, required=creating, nullable=False, nonempty=True)
    tags = values.get("tags")
    if tags is not None and not (isinstance(tags, list) and all(isinstance(t, str) for t in tags)):
        out.append(Problem("/tags", "tags must be an array of strings"))


async def _find(request: Request) -> tuple[Key, ListRow]:
    key = await secret_key(request)
    list_id = params.integer(request.path_params["id"])
    row = await _store(request).get_list(key.project_id, list_id) if list_id else None
    if row is None:
        raise render.not_found(f"No list with id {request.path_params['id']!r} in this project.")
    return key, row


def _text(fields: dict[str, msgspec.Raw], name: str) -> str | None:
    """A field's JSON text as received (a rule is stored as sent)."""
    return bytes(fields[name]).decode() if name in fields else None


async def create(request: Request) -> Response:
    """POST /api/client/lists {name, type, rule?}: a dynamic list is computed in the
    background (state loading, then draft); a static one starts empty."""
    key = await secret_key(request)
    fields = await _fields(request, CREATE_FIELDS)
    row = await create_list(request, key.project_id, _values(fields), _text(fields, "rule"))
    return read.json(render_list(row), 201)


async def create_list(
    request: Request, project_id: int, values: dict[str, Any], rule_text: str | None
) -> ListRow:
    """Create a list from the decoded fields of a request (the API's body, the portal's form)
    and `rule_text`, the rule's JSON text; 422 listing every problem, and nothing created."""
    now = now_ms()
    out: list[Problem] = []
    _check_common(values, out, creating=True)
    kind: str = values.get("type", "")
    if kind not in TYPES:
        out.append(Problem("/type", "type must be dynamic or static"))
    if kind == "dynamic":
        if values.get("rule") is None:
            out.append(Problem("/rule", "a dynamic list needs a rule"))
        else:
            _rule(values["rule"], now, "/rule", out)
    elif kind == "static" and values.get("rule") is not None:
        out.append(Problem("/rule", "a static list has no rule"))
    if "is_visible" in values and not isinstance(values["is_visible"], bool):
        out.append(Problem("/is_visible", "is_visible must be true or false"))
    if out:
        raise invalid(out)
    rule = rule_text if kind == "dynamic" else None
    jobs = _jobs(request)
    row = await lists.create(
        _store(request), project_id, values["name"], kind, rule, jobs.holder, now
    )
    if rule is not None:
        jobs.schedule(row)
    return row


async def index(request: Request) -> Response:
    """GET /api/client/lists."""
    key = await secret_key(request)
    rows = await _store(request).lists(key.project_id)
    return read.json({"results": [render_list(r) for r in rows]})


async def show(request: Request) -> Response:
    """GET /api/client/lists/{id}."""
    _, row = await _find(request)
    return read.json(render_list(row))


async def update(request: Request) -> Response:
    """PATCH /api/client/lists/{id} {name?, rule?, published?}: a new rule is computed again
    (state loading); `published` moves a computed list between draft and ready."""
    _, row = await _find(request)
    fields = await _fields(request, PATCH_FIELDS)
    return read.json(
        render_list(await update_list(request, row, _values(fields), _text(fields, "rule")))
    )


async def update_list(
    request: Request, row: ListRow, values: dict[str, Any], rule_text: str | None
) -> ListRow:
    """Change a list from the decoded fields of a request (the API's, the portal's); a new
    rule (`rule_text`, its JSON text) is computed again. 422 (nothing changed), 404."""
    now = now_ms()
    out: list[Problem] = []
    _check_common(values, out, creating=False)
    rule = values.get("rule")
    if rule is not None:
        if row.type == "static":
            out.append(Problem("/rule", "a static list has no rule"))
        else:
            _rule(rule, now, "/rule", out)
    published = values.get("published", row.published)
    if not isinstance(published, bool):
        out.append(Problem("/published", "published must be true or false"))
    if out:
        raise invalid(out)
    store = _store(request)
    changed = await store.update_list(
        row.project_id, row.id, values.get("name", row.name), published, now
    )
    if changed is None or rule is None:
        return _answer(changed)
    return await _restart(request, row, rule_text, now)


def _answer(row: ListRow | None) -> ListRow:
    """The list as changed; 404 when it was deleted meanwhile."""
    if row is None:
        raise render.not_found("The list was deleted meanwhile.")
    return row


async def _restart(request: Request, row: ListRow, rule_text: str | None, now: int) -> ListRow:
    """The list, now being computed again (with a new rule, unless None) in the background, by
    this process (it holds the list's lease from the start)."""
    jobs = _jobs(request)
    restarted = await lists.restart(
        _store(request), row.project_id, row.id, rule_text, jobs.holder, now
    )
    if restarted is not None:
        jobs.schedule(restarted)
    return _answer(restarted)


async def delete(request: Request) -> Response:
    """DELETE /api/client/lists/{id}: the list and its members."""
    key, row = await _find(request)
    await _store(request).delete_list(key.project_id, row.id)
    _jobs(request).cancel(row.id)
    return Response(status_code=204)


async def recount(request: Request) -> Response:
    """POST /api/client/lists/{id}/recount: compute a dynamic list's members again, now (a
    static list's count is always current)."""
    _, row = await _find(request)
    if row.type == "static":
        return read.json(render_list(row))
    return read.json(render_list(await _restart(request, row, None, now_ms())))


async def members(request: Request) -> Response:
    """GET /api/client/lists/{id}/users?cursor=&limit=: paged as GET /api/client/users."""
    key, row = await _find(request)
    query = request.query_params
    limit = params.limit(query.get("limit"), read.PAGE)
    before = params.position(query.get("cursor"))
    rows = await _store(request).list_members(key.project_id, row.id, limit + 1, before)
    page = rows[:limit]
    next_cursor = None
    if len(rows) > limit:
        next_cursor = render.encode_cursor(page[-1].created_at, page[-1].id)
    return read.json({"results": [render.user(u) for u in page], "next_cursor": next_cursor})


def static_only(row: ListRow) -> None:
    """409 for a change of members on a dynamic list."""
    if row.type != "static":
        raise HTTPProblem(409, "This list is dynamic: its rule decides its members.")


async def _external_ids(request: Request, row: ListRow) -> list[str]:
    static_only(row)
    return checked_ids(_values(await _fields(request, ("external_ids",))).get("external_ids"))


def checked_ids(ids: Any) -> list[str]:
    """external_ids of a change of a static list's members: 1 - MAX_MEMBERS external ids, or
    a 422 naming each bad one."""
    if not isinstance(ids, list) or not 1 <= len(ids) <= MAX_MEMBERS:
        message = f"external_ids must be an array of 1 to {MAX_MEMBERS} external ids"
        raise invalid([Problem("/external_ids", message)])
    out: list[Problem] = []
    for i, value in enumerate(ids):
        if not ID.fits(value) or not value:
            out.append(Problem(f"/external_ids/{i}", ID.expected("an external id")))
    if out:
        raise invalid(out)
    return ids


async def add_members(request: Request) -> Response:
    """POST /api/client/lists/{id}/users: {external_ids} (JSON), all of them or (when one is
    no user of the project) none, with a 422 naming each unknown id; or Parcelvoy's CSV import
    (text/csv, or a multipart form's file), which creates or updates the users and adds them,
    all or nothing (api/list_csv.py)."""
    _, row = await _find(request)
    if list_csv.is_csv(request):
        static_only(row)
        raw = await list_csv.csv_text(request)
        return await ingest.submit(request, list_csv.sequence(raw, row.project_id, row.id), raw)
    await add_ids(request, row, await _external_ids(request, row))
    return Response(status_code=204)


async def add_ids(request: Request, row: ListRow, ids: list[str]) -> None:
    """Add users by external id to a static list: all, or none and a 422 naming each unknown."""
    unknown = await lists.add_members(_store(request), row, ids, now_ms())
    if unknown:
        raise invalid(
            [
                Problem(
                    f"/external_ids/{i}", f"no user with external_id {ids[i]!r} in this project"
                )
                for i in unknown
            ]
        )


async def remove_members(request: Request) -> Response:
    """DELETE /api/client/lists/{id}/users {external_ids}: ids that are no member are skipped."""
    _, row = await _find(request)
    ids = await _external_ids(request, row)
    await lists.remove_members(_store(request), row, ids, now_ms())
    return Response(status_code=204)


async def preview(request: Request) -> Response:
    """POST /api/client/lists/preview {rule}: how many users the rule holds now, and a few of
    them, without saving anything."""
    key = await secret_key(request)
    values = _values(await _fields(request, ("rule",)))
    return read.json(await preview_rule(request, key.project_id, values.get("rule")))


async def preview_rule(request: Request, project_id: int, value: Any) -> dict[str, Any]:
    """{count, sample} of a rule tree (decoded JSON) now, nothing saved (the API's preview,
    the portal's live count); 422 with a pointer under /rule for each problem."""
    now = now_ms()
    out: list[Problem] = []
    rule = _rule(value, now, "/rule", out)
    if rule is None:
        raise invalid(out)
    store = _store(request)
    try:
        ids = await store.compute_members(project_id, rule, now)
    except RuleError as exc:
        raise invalid([Problem("/rule" + exc.pointer, exc.message)]) from exc
    sample = [await store.get_user_by_id(project_id, u) for u in sorted(ids)[:SAMPLE]]
    return {"count": len(ids), "sample": [render.user(u) for u in sample if u is not None]}


async def user_lists(request: Request) -> Response:
    """GET /api/client/users/{ref}/lists: the lists the user is a member of."""
    user = await read.find_user(request)
    rows = await _store(request).user_lists(user.project_id, user.id)
    return read.json({"results": [render_list(r) for r in rows]})


def routes() -> list[Route]:
    base = "/api/client/lists"
    return [
        Route(base, create, methods=["POST"]),
        Route(base, index, methods=["GET"]),
        Route(f"{base}/preview", preview, methods=["POST"]),
        Route(base + "/{id}", show, methods=["GET"]),
        Route(base + "/{id}", update, methods=["PATCH"]),
        Route(base + "/{id}", delete, methods=["DELETE"]),
        Route(base + "/{id}/recount", recount, methods=["POST"]),
        Route(base + "/{id}/users", members, methods=["GET"]),
        Route(base + "/{id}/users", add_members, methods=["POST"]),
        Route(base + "/{id}/users", remove_members, methods=["DELETE"]),
    ]
