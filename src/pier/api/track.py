"""POST /api/client/track: one event, as the Parcelvoy JS SDK's track() sends it:
`{"event": ..., "anonymous_id"?: ..., "external_id"?: ..., "data"?: {...}}` (camelCase keys
turned snake_case, `properties` renamed `data`). Also accepted: `properties` (merged under
`data`, data wins), `timestamp` and `message_id` as on /events; other keys are ignored."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from ..clock import now_ms
from ..domain.commands import EventIn, TrackEvents
from . import ingest, validation
from .body import read_body
from .errors import Problem, invalid
from .validation import check_object, check_string, pointer


def problems(body: Any, now: int, skew: int) -> list[Problem]:
    if not isinstance(body, dict):
        return [Problem("", "the body must be a JSON object (one event)")]
    out: list[Problem] = []
    validation.check_event_name(body, "event", "", out)
    for key in ("anonymous_id", "external_id", "message_id"):
        check_string(body, key, "", out)
    check_object(body, "data", "", out)
    check_object(body, "properties", "", out)
    if not validation.has_id(body):
        out.append(Problem("", validation.NO_ID))
    if body.get("timestamp") is not None:
        _, problem = validation.event_time(body["timestamp"], now, skew)
        if problem:
            out.append(Problem(pointer("", "timestamp"), problem))
    return out


async def track(request: Request) -> Response:
    key = await request.app.state.keys.authenticate(request)
    raw = ingest.checked(await read_body(request))
    body = ingest.decode(raw)
    now = now_ms()
    skew = ingest.clock_skew(request, now)
    found = problems(body, now, skew)
    if found:
        raise invalid(found)
    data = {**(body.get("properties") or {}), **(body.get("data") or {})}
    timestamp = None
    if body.get("timestamp") is not None:
        timestamp, _ = validation.event_time(body["timestamp"], now, skew)
    event = EventIn(
        anonymous_id=body.get("anonymous_id") or None,
        external_id=body.get("external_id") or None,
        name=body["event"],
        data=data,
        message_id=body.get("message_id") or None,
        timestamp=timestamp,
    )
    cmd = TrackEvents(project_id=key.project_id, events=[event])
    return await ingest.submit(request, cmd, raw)
