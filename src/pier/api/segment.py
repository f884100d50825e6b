"""POST /api/client/segment: Segment-format calls mapped onto Pier's commands.

A batch (`{"batch": [...]}` or a bare array, 1 to 1,000 calls) of identify, track, page, screen
and alias calls; `group` calls are accepted and ignored (Pier has no groups). The sub-paths the
Segment libraries append to a configured host are served too: `/b` and `/v1/batch` (batches),
`/t` `/i` `/p` `/s` `/a` `/g` and `/v1/track` ... (one call each).

- userId → external_id, anonymousId → anonymous_id (strings; numbers are taken as strings)
- identify: traits.email/phone/timezone/locale → the profile fields (context.timezone and
  context.locale when the traits lack them and they are valid), the other traits → data; the
  traits are `context.traits` overlaid with `traits` key by key (rudder-sdk-python sends them
  only under context.traits)
- track: event → the name, properties → data; page → `Page Viewed`, screen → `Screen
  Viewed`, with properties plus the call's name and category as data
- timestamp (else originalTimestamp, all rudder-sdk-node sends) and messageId → the event's
  time and message_id, the time corrected by the client's clock skew when the call or the batch
  carries `sentAt` (else X-Sent-At)
- alias: previousId (else anonymousId) → anonymous_id, userId → external_id

Every call is validated before anything is written (422 with JSON Pointers; each field the
format defines is checked on every call, used by that call or not, as the OpenAPI says); then
the whole batch is one Sequence command, committed all or nothing: an alias the domain refuses
fails the batch with a 422 and nothing stored. Success is `200 {"success": true}`, what
Segment-format servers answer (analytics-python 1.x and rudder-sdk-python take anything else,
204 included, for a failure and send the batch again). The body is read as JSON whatever its
Content-Type (rudder-sdk-node labels its gzip JSON application/x-www-form-urlencoded). The key:
`Authorization: Bearer` or `Basic` (the write key as user name, as the Segment server libraries
send it), or the body's `writeKey` (analytics.js).
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from msgspec import UNSET
from starlette.requests import Request
from starlette.responses import Response

from ..clock import now_ms
from ..domain.commands import Alias, EventIn, Identify, Sequence, Single, TrackEvents, Traits
from ..domain.keys import Key
from ..domain.model import PROFILE_FIELDS
from ..domain.traits import TIMEZONE_ERROR, canonical_timezone
from . import ingest, validation
from .body import read_body
from .edge import header
from .errors import HTTPProblem, Problem, invalid
from .fields import ID, MAX_EVENTS, PROFILE
from .validation import pointer

TYPES = ("identify", "track", "page", "screen", "alias", "group")
EVENT_NAMES = {"page": "Page Viewed", "screen": "Screen Viewed"}
# sub-path → the call type its body holds, or "batch"
SUB_PATHS = {
    "b": "batch",
    "batch": "batch",
    "v1/batch": "batch",
    "v1/import": "batch",
    **{t[0]: t for t in TYPES},
    **{t: t for t in TYPES},
    **{f"v1/{t}": t for t in TYPES},
}
SUCCESS = b'{"success":true}'
FAR_FUTURE = 2**62  # sentAt is the client's clock: checked for form, not for being in the future


# -- routes ------------------------------------------------------------------------------
async def batch(request: Request) -> Response:
    return await _handle(request, "batch")


async def call(request: Request) -> Response:
    """POST /api/client/segment/{call}: the paths the Segment libraries append to a host."""
    kind = SUB_PATHS.get(request.path_params["call"].strip("/"))
    if kind is None:
        raise HTTPProblem(404, f"No such endpoint: {request.url.path}")
    return await _handle(request, kind)


async def _handle(request: Request, kind: str) -> Response:
    # with a header, refuse a bad key before reading the body; analytics.js sends it inside
    has_header = header(request, "authorization") is not None
    key = await authenticate(request, None) if has_header else None
    raw = ingest.checked(await read_body(request, any_type=True))
    body = ingest.decode(raw)
    if key is None:
        key = await authenticate(request, _write_key(body))
    now = now_ms()
    calls, base, problems = _calls(body, kind)
    if problems:
        raise invalid(problems)
    envelope = body if base == "/batch" else {}  # {"batch": [...], "sentAt", "context", ...}
    parser = _Parser(key.project_id, now, ingest.clock_skew(request, now), envelope)
    for i, item in enumerate(calls):
        parser.add(item, pointer(base, i) if kind == "batch" else "", kind)
    if parser.problems:
        raise invalid(parser.problems)
    cmd = parser.command()
    if cmd is not None:  # None: only group calls
        await ingest.submit(request, cmd, raw)
    return Response(SUCCESS, media_type="application/json")  # a new one: Edge adds headers


# -- authentication ----------------------------------------------------------------------
async def authenticate(request: Request, write_key: str | None) -> Key:
    """Bearer as everywhere; Basic with the key as user name (or password); or, without an
    Authorization header, the body's writeKey. All go through the same key checks."""
    sent = header(request, "authorization")
    if sent is None and write_key is None:
        return await request.app.state.keys.authenticate(request)  # the usual 401
    if sent is not None:
        scheme, _, value = sent.strip().partition(" ")
        if scheme.lower() != "basic":
            return await request.app.state.keys.authenticate(request)
        write_key = _basic_user(value.strip())
    return await request.app.state.keys.authenticate(_as_bearer(request, write_key or ""))


def _basic_user(value: str) -> str:
    try:
        decoded = base64.b64decode(value, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise HTTPProblem(401, "The Basic credentials are not valid base64.", code=1000) from None
    user, _, password = decoded.partition(":")
    return user or password


def _as_bearer(request: Request, value: str) -> Request:
    """The same request with `Authorization: Bearer <value>`, for KeyCache.authenticate."""
    headers = [(k, v) for k, v in request.scope["headers"] if k != b"authorization"]
    headers.append((b"authorization", b"Bearer " + value.encode("latin-1", "replace")))
    return Request({**request.scope, "headers": headers})


def _write_key(body: Any) -> str | None:
    """analytics.js puts the write key in the body: the batch's, or the (first) call's."""
    holder = body
    if isinstance(body, list):
        holder = body[0] if body else None
    elif isinstance(body, dict) and "writeKey" not in body and isinstance(body.get("batch"), list):
        holder = body["batch"][0] if body["batch"] else None
    value = holder.get("writeKey") if isinstance(holder, dict) else None
    return value if isinstance(value, str) and value else None


# -- parsing -----------------------------------------------------------------------------
def _calls(body: Any, kind: str) -> tuple[list[Any], str, list[Problem]]:
    """(the calls, the pointer of their array, problems of the shape)."""
    if kind != "batch":
        if not isinstance(body, dict):
            return [], "", [Problem("", "the body must be a JSON object (one call)")]
        return [body], "", []
    if isinstance(body, list):
        calls, base = body, ""
    elif isinstance(body, dict):
        if not isinstance(body.get("batch"), list):
            return [], "", [Problem("/batch", "batch must be an array of calls")]
        calls, base = body["batch"], "/batch"
    else:
        return [], "", [Problem("", 'the body must be {"batch": [...]} or an array')]
    if not calls:
        return [], base, [Problem(base, "at least one call is required")]
    if len(calls) > MAX_EVENTS:
        return [], base, [Problem(base, f"at most {MAX_EVENTS} calls are accepted")]
    return calls, base, []


class _Parser:
    """Validates calls one by one and builds their commands; consecutive events share one
    TrackEvents."""

    def __init__(self, pid: int, now: int, header_skew: int, envelope: dict[str, Any]) -> None:
        self.pid = pid
        self.now = now
        self.problems: list[Problem] = []
        self.commands: list[Single] = []
        self.paths: list[str] = []
        # the batch's own fields: its context applies to every call, its sentAt to their times
        self.context = self._object(envelope, "context", "")
        self.skew = header_skew
        if envelope.get("sentAt") is not None:
            self.skew = self._skew(envelope["sentAt"], "/sentAt", header_skew)
        if "writeKey" in envelope and not isinstance(envelope["writeKey"], str):
            self.problems.append(Problem("/writeKey", "writeKey must be a string"))

    def add(self, item: Any, at: str, route: str) -> None:
        if not isinstance(item, dict):
            self.problems.append(Problem(at, "a call must be a JSON object"))
            return
        kind = item.get("type", route if route != "batch" else None)
        if kind not in TYPES:
            self.problems.append(
                Problem(pointer(at, "type"), f"type must be one of {', '.join(TYPES)}")
            )
            return
        # every field the format defines is checked on every call, used by the call or not
        before = len(self.problems)
        user, anon, previous, message_id = (
            self._id(item, field, at)
            for field in ("userId", "anonymousId", "previousId", "messageId")
        )
        name, category, event = (
            self._text(item, field, at) for field in ("name", "category", "event")
        )
        properties, traits, context = (
            self._object(item, field, at) for field in ("properties", "traits", "context")
        )
        context_traits = self._object(context, "traits", pointer(at, "context"))
        timestamp = self._timestamp(item, at)
        if "writeKey" in item and not isinstance(item["writeKey"], str):
            self.problems.append(Problem(pointer(at, "writeKey"), "writeKey must be a string"))
        if kind == "alias":
            self._alias(at, user, anon, previous, before)
            return
        if user is None and anon is None and len(self.problems) == before:
            self.problems.append(Problem(at, "userId or anonymousId is required"))
        if kind == "track" and not event and pointer(at, "event") not in self._reported(before):
            self.problems.append(
                Problem(pointer(at, "event"), "event is required for a track call")
            )
        if kind == "track" and event and (problem := validation.reserved_name(event)):
            self.problems.append(Problem(pointer(at, "event"), problem))
        if len(self.problems) > before or kind == "group":  # group: checked, then ignored
            return
        if kind == "identify":
            cmd = Identify(
                project_id=self.pid,
                anonymous_id=anon,
                external_id=user,
                traits=self._traits(traits, context_traits, context, at),
            )
            if len(self.problems) == before:
                self._push(cmd, at)
            return
        if kind == "track":
            assert event is not None
            data = properties
        else:  # page, screen: properties plus the call's name and category
            event = EVENT_NAMES[kind]
            data = {**properties, **({"name": name} if name is not None else {})}
            if category is not None:
                data["category"] = category
        self._push_event(EventIn(anon, user, event, data, None, message_id, timestamp), at)

    # -- one call --------------------------------------------------------------------------
    def _alias(
        self, at: str, user: str | None, anon: str | None, previous: str | None, before: int
    ) -> None:
        field = "previousId"
        if previous is None and anon is not None:  # analytics.js fills previousId; others may not
            field, previous = "anonymousId", anon
        reported = self._reported(before)  # a bad id is not also reported missing
        for name, value in (("userId", user), ("previousId", previous)):
            if value is None and pointer(at, name) not in reported:
                self.problems.append(Problem(pointer(at, name), f"{name} is required for an alias"))
        if len(self.problems) > before or previous == user:  # aliasing an id to itself: no-op
            return
        assert user is not None and previous is not None
        self._push(
            Alias(project_id=self.pid, anonymous_id=previous, external_id=user),
            pointer(at, field),
        )

    def _traits(
        self, own: dict[str, Any], in_context: dict[str, Any], context: dict[str, Any], at: str
    ) -> Traits:
        """The call's traits: context.traits overlaid with traits, key by key."""
        traits = {**in_context, **own}
        fields: dict[str, Any] = {}
        for field in PROFILE_FIELDS:
            if field not in traits:
                continue
            value = traits[field]
            declared = PROFILE[field]
            base = (
                pointer(at, "traits") if field in own else pointer(pointer(at, "context"), "traits")
            )
            if value is not None and not declared.fits(value):
                self.problems.append(
                    Problem(pointer(base, field), declared.expected(field, nullable=True))
                )
            elif field == "timezone" and value is not None:
                value = canonical_timezone(value)
                if value is None:
                    self.problems.append(Problem(pointer(base, field), TIMEZONE_ERROR))
            fields[field] = value
        context = {**self.context, **context}
        for field in ("timezone", "locale"):  # the device's, when the traits say nothing
            value = context.get(field)
            if field not in fields and PROFILE[field].fits(value):
                value = canonical_timezone(value) if field == "timezone" else value
                if value:
                    fields[field] = value
        data = {k: v for k, v in traits.items() if k not in PROFILE_FIELDS}
        return Traits(**fields, data=data if data else UNSET)

    def _timestamp(self, item: dict, at: str) -> int | None:
        """The call's time in epoch ms: its timestamp, else its originalTimestamp (when the call
        was made, by rudder-sdk-node), moved by the client's clock skew (its own sentAt, else
        the batch's, else X-Sent-At). Both are checked when both are sent."""
        skew = self.skew
        if item.get("sentAt") is not None:
            skew = self._skew(item["sentAt"], pointer(at, "sentAt"), skew)
        found = None
        for field in ("originalTimestamp", "timestamp"):  # the last one sent wins
            if item.get(field) is None:
                continue
            timestamp, problem = validation.event_time(item[field], self.now, skew)
            if problem:
                self.problems.append(Problem(pointer(at, field), problem))
            found = timestamp
        return found

    # -- fields ------------------------------------------------------------------------------
    def _id(self, item: dict, field: str, at: str) -> str | None:
        """A string id (a number is taken as its decimal string); empty and null are absent."""
        value = item.get(field)
        if value is None or value == "":
            return None
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if not ID.fits(value):
            self.problems.append(Problem(pointer(at, field), ID.expected(field)))
            return None
        return value

    def _text(self, item: dict, field: str, at: str) -> str | None:
        value = item.get(field)
        if value is not None and not ID.fits(value):
            self.problems.append(Problem(pointer(at, field), ID.expected(field)))
            return None
        return value or None

    def _reported(self, since: int) -> set[str]:
        return {p.path for p in self.problems[since:]}

    def _object(self, item: dict, field: str, at: str) -> dict[str, Any]:
        value = item.get(field)
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.problems.append(Problem(pointer(at, field), f"{field} must be an object"))
            return {}
        return value

    def _skew(self, sent_at: Any, at: str, default: int) -> int:
        """now - sentAt: the client's clock error, added to its timestamps."""
        sent, problem = validation.event_time(sent_at, FAR_FUTURE)
        if problem or sent is None:
            self.problems.append(Problem(at, f"sentAt: {problem}"))
            return default
        return self.now - sent

    # -- commands ----------------------------------------------------------------------------
    def _push(self, cmd: Single, at: str) -> None:
        self.commands.append(cmd)
        self.paths.append(at)

    def _push_event(self, event: EventIn, at: str) -> None:
        last = self.commands[-1] if self.commands else None
        if isinstance(last, TrackEvents):
            last.events.append(event)
        else:
            self._push(TrackEvents(project_id=self.pid, events=[event]), at)

    def command(self) -> Single | Sequence | None:
        """One command when one will do (the common all-events batch), else a Sequence (an
        alias too, for its refusal to point into the body)."""
        if not self.commands:
            return None
        if len(self.commands) == 1 and not isinstance(self.commands[0], Alias):
            return self.commands[0]
        return Sequence(project_id=self.pid, commands=self.commands, paths=self.paths)
