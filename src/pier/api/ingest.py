"""The four ingestion endpoints: identify, alias, devices, events. Each answers 204 only after
its data is committed."""

from __future__ import annotations

from typing import Any

import msgspec
from msgspec import UNSET
from starlette.requests import Request
from starlette.responses import Response

from ..domain.commands import Alias, Command, RegisterDevice, TrackEvents
from ..domain.errors import DomainError
from ..store.base import StoreUnavailable
from ..writer import Overloaded, now_ms
from . import schemas, validation
from .body import read_body
from .errors import HTTPProblem, Problem, invalid

NO_CONTENT = 204


def _decode(raw: bytes) -> Any:
    try:
        return msgspec.json.decode(raw)
    except msgspec.DecodeError as exc:
        raise HTTPProblem(400, f"The body is not valid JSON: {exc}.") from exc


def _rejected(raw: bytes, problems: list[Problem], fallback: str) -> HTTPProblem:
    if not problems:  # the typed decoder and the rules disagree: still say something useful
        problems = [Problem("", fallback)]
    return invalid(problems)


async def _submit(request: Request, cmd: Command) -> Response:
    try:
        await request.app.state.writer.submit(cmd)
    except DomainError as exc:
        raise invalid([Problem(exc.path, exc.message)]) from exc
    except Overloaded as exc:
        raise HTTPProblem(
            503, "Pier is busy; retry shortly.", headers={"Retry-After": "1"}
        ) from exc
    except StoreUnavailable as exc:
        raise HTTPProblem(
            503, "The database is unavailable; nothing was stored.", headers={"Retry-After": "2"}
        ) from exc
    return Response(status_code=NO_CONTENT)


async def identify(request: Request) -> Response:
    key = await request.app.state.keys.authenticate(request)
    raw = await read_body(request)
    try:
        cmd = schemas.identify(raw, key.project_id)
    except schemas.Rejected as exc:
        body = _decode(raw)
        raise _rejected(
            raw,
            validation.problems_identify(body),
            str(exc.__cause__ or "the body does not match this endpoint"),
        ) from exc
    return await _submit(request, cmd)


async def alias(request: Request) -> Response:
    key = await request.app.state.keys.authenticate(request)
    body = _decode(await read_body(request))
    problems = validation.problems_alias(body)
    if problems:
        raise invalid(problems)
    cmd = Alias(
        project_id=key.project_id,
        anonymous_id=body["anonymous_id"],
        external_id=body["external_id"],
    )
    return await _submit(request, cmd)


async def devices(request: Request) -> Response:
    key = await request.app.state.keys.authenticate(request)
    body = _decode(await read_body(request))
    problems = validation.problems_device(body)
    if problems:
        raise invalid(problems)
    fields = {k: body[k] for k in validation.DEVICE_REQUIRED if k != "device_id"}
    if "os_version" in body:  # null clears it, like the other fields sent
        fields["os_version"] = body["os_version"]
    known = {"anonymous_id", "external_id", "device_id", "token", "os_version", *fields}
    cmd = RegisterDevice(
        project_id=key.project_id,
        anonymous_id=body.get("anonymous_id") or None,
        external_id=body.get("external_id") or None,
        device_id=body["device_id"],
        fields=fields,
        token=body["token"] or None if "token" in body else UNSET,
        extra={k: v for k, v in body.items() if k not in known},
    )
    return await _submit(request, cmd)


async def events(request: Request) -> Response:
    key = await request.app.state.keys.authenticate(request)
    raw = await read_body(request)
    now = now_ms()
    skew = _clock_skew(request, now)
    try:
        batch = schemas.events(raw, now, skew)
    except schemas.Rejected as exc:
        body = _decode(raw)
        problems = validation.problems_events(body, now, skew)
        raise _rejected(
            raw, problems, str(exc.__cause__ or "the body does not match this endpoint")
        ) from exc
    return await _submit(request, TrackEvents(project_id=key.project_id, events=batch))


def _clock_skew(request: Request, now: int) -> int:
    """received_at - X-Sent-At: added to event timestamps to correct the client's clock."""
    sent = request.headers.get("x-sent-at")
    if not sent:
        return 0
    value: int | str = int(sent) if sent.strip().isdigit() else sent.strip()
    sent_ms, problem = validation.event_time(value, now)
    if problem or sent_ms is None:
        raise invalid([Problem("/headers/X-Sent-At", f"X-Sent-At: {problem}")])
    return now - sent_ms
