"""The four ingestion endpoints: identify, alias, devices, events. Each answers 204 only after
its data is committed.

The intake every ingestion route shares (these four, track.py and segment.py): `checked` (the
body rules), `decode`, `clock_skew` and `submit` (the command to the writer, its errors
answered)."""

from __future__ import annotations

import hashlib
from typing import Any

import msgspec
from msgspec import UNSET
from starlette.requests import Request
from starlette.responses import Response

from ..clock import now_ms
from ..domain.commands import Alias, Command, RegisterDevice, TrackEvents
from ..domain.errors import DomainError, KeyReused, NotFound
from ..store.base import StoreUnavailable
from ..writer import Overloaded, RequestKey
from . import params, render, schemas, validation
from .body import read_body
from .edge import NO_CONTENT, header
from .errors import HTTPProblem, Problem, invalid
from .fields import IDEMPOTENCY_KEY

EXTRA_MODES = ("merge", "replace")  # of POST /devices?extra=


def decode(raw: bytes) -> Any:
    """The body as JSON values, or a 400 that says why it is not JSON."""
    try:
        return msgspec.json.decode(raw)
    except msgspec.DecodeError as exc:
        raise HTTPProblem(400, f"The body is not valid JSON: {exc}.") from exc
    except UnicodeDecodeError as exc:  # msgspec's own error for a string that is not UTF-8
        raise HTTPProblem(400, f"The body is not valid JSON: not UTF-8 ({exc.reason}).") from exc
    except RecursionError as exc:  # msgspec's nesting limit
        raise HTTPProblem(400, "The body is nested too deeply.") from exc


NUL_ESCAPE = b"\\u0000"  # JSON can carry U+0000 only escaped
NUL_MESSAGE = "strings must not contain the NUL character (\\u0000)"


def checked(raw: bytes) -> bytes:
    """The rules for every body of every ingestion route, whatever part of it is stored: JSON
    nested at most validation.MAX_DEPTH deep, numbers in range, no U+0000. A 422 names the
    first place that breaks one."""
    problem = validation.body_problem(raw)
    if problem is not None:
        raise invalid([problem])
    return _no_nul(raw)


def _no_nul(raw: bytes) -> bytes:
    """PostgreSQL cannot store U+0000 in text or jsonb: refuse it with a 422 on every backend."""
    if NUL_ESCAPE in raw:
        path = _nul_path(decode(raw), "")
        if path is not None:
            raise invalid([Problem(path, NUL_MESSAGE)])
    return raw


def _nul_path(value: Any, path: str) -> str | None:
    """The JSON Pointer of the first string (or key) holding U+0000, if any."""
    if isinstance(value, str):
        return path if "\0" in value else None
    if isinstance(value, list):
        value = dict(enumerate(value))
    if not isinstance(value, dict):
        return None
    for key, item in value.items():
        inner = validation.pointer(path, key)
        if isinstance(key, str) and "\0" in key:
            return inner
        found = _nul_path(item, inner)
        if found is not None:
            return found
    return None


def _rejected(raw: bytes, problems: list[Problem], fallback: str) -> HTTPProblem:
    if not problems:  # the typed decoder and the rules disagree: still say something useful
        problems = [Problem("", fallback)]
    return invalid(problems)


def _request_key(request: Request, raw: bytes) -> RequestKey | None:
    """The Idempotency-Key header, with a fingerprint of the request (path, query and body)."""
    key = header(request, "idempotency-key")
    if key is None:
        return None
    if not key or not IDEMPOTENCY_KEY.fits(key):
        message = f"Idempotency-Key must be 1 to {IDEMPOTENCY_KEY.max_len} characters"
        raise invalid([Problem("/headers/Idempotency-Key", message)])
    query = request.url.query  # ?extra=replace asks for another change than the same body
    path = f"{request.url.path}?{query}" if query else request.url.path
    digest = hashlib.sha256(path.encode() + b"\0" + raw)
    return key, digest.hexdigest()


async def submit(request: Request, cmd: Command, raw: bytes) -> Response:
    """Hand `cmd` to the writer and wait for its commit: 204, or the error it met."""
    try:
        await request.app.state.writer.submit(cmd, _request_key(request, raw))
    except NotFound as exc:
        raise render.not_found(exc.message) from exc
    except DomainError as exc:
        raise invalid([Problem(exc.path, exc.message)]) from exc
    except KeyReused as exc:
        raise HTTPProblem(
            409, f"Idempotency-Key {exc} was already used with a different request."
        ) from exc
    except Overloaded as exc:
        raise HTTPProblem(
            503, "Pier is busy; retry shortly.", headers={"Retry-After": "1"}
        ) from exc
    except StoreUnavailable as exc:
        raise HTTPProblem(
            503, "The database is unavailable; nothing was stored.", headers={"Retry-After": "2"}
        ) from exc
    return NO_CONTENT


async def identify(request: Request) -> Response:
    key = await request.app.state.keys.authenticate(request)
    raw = checked(await read_body(request))
    try:
        cmd = schemas.identify(raw, key.project_id)
    except schemas.Rejected as exc:
        body = decode(raw)
        raise _rejected(
            raw,
            validation.problems_identify(body),
            str(exc.__cause__ or "the body does not match this endpoint"),
        ) from exc
    return await submit(request, cmd, raw)


async def alias(request: Request) -> Response:
    key = await request.app.state.keys.authenticate(request)
    raw = checked(await read_body(request))
    body = decode(raw)
    problems = validation.problems_alias(body)
    if problems:
        raise invalid(problems)
    cmd = Alias(
        project_id=key.project_id,
        anonymous_id=body["anonymous_id"],
        external_id=body["external_id"],
    )
    return await submit(request, cmd, raw)


async def devices(request: Request) -> Response:
    key = await request.app.state.keys.authenticate(request)
    # ?extra=replace: the other keys are the device's whole extra (the pier kind's copy of a
    # device); by default they are merged into it (Parcelvoy's behaviour)
    extra = params.choice(request.query_params.get("extra"), "extra", EXTRA_MODES)
    raw = checked(await read_body(request))
    body = decode(raw)
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
        replace_extra=extra == "replace",
    )
    return await submit(request, cmd, raw)


async def events(request: Request) -> Response:
    key = await request.app.state.keys.authenticate(request)
    raw = checked(await read_body(request))
    now = now_ms()
    skew = clock_skew(request, now)
    try:
        batch = schemas.events(raw, now, skew)
    except schemas.Rejected as exc:
        body = decode(raw)
        problems = validation.problems_events(body, now, skew)
        raise _rejected(
            raw, problems, str(exc.__cause__ or "the body does not match this endpoint")
        ) from exc
    return await submit(request, TrackEvents(project_id=key.project_id, events=batch), raw)


def clock_skew(request: Request, now: int) -> int:
    """received_at - X-Sent-At: added to event timestamps to correct the client's clock."""
    sent = header(request, "x-sent-at")
    if not sent:
        return 0
    return now - params.timestamp(sent, "X-Sent-At", now)
