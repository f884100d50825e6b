"""Property-based fuzzing of the Client API from its OpenAPI document, on every backend.

Requests are generated from the request schemas of GET /api/openapi.json (by `from_schema`
below: hypothesis-jsonschema does not work with current Hypothesis), then some are broken (a
field dropped, retyped or too long, random JSON, bad bytes, a wrong content type, encoding or
key). What must hold for every one of them:
- no 5xx, and the status is one the document lists for that operation; error bodies match its
  Error schema and 200 bodies its response schema;
- a body the schema rejects is never accepted, and a rejected request changes nothing (the
  project's row counts, its newest event and every user the request names, read before and
  after on a connection of our own);
- every 2xx leaves data that reads back through the read API: an accepted batch of events is
  exactly what the event feed shows after it (less the message ids already stored, plus the
  user_created/user_merged events), an identify, alias or device shows on the user.

Bounded: PIER_FUZZ_EXAMPLES (default 600 writes and 300 reads per backend: some 1,800 fuzzed
requests and as many reading back, ~40 s), derandomized so that `make test` is repeatable.
Raise it for a deeper run; PIER_FUZZ_SHRINK=1 shrinks a failure to a small example (slow).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import gzip
import json
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import jsonschema
import pytest
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

from conftest import LiveServer, Tenant, make_tenant
from faults.pierproc import stored_message_ids
from faults.test_hostile_params import ref_path
from pier.api import render
from pier.api.manage import feed_cursor
from pier.api.openapi import document
from pier.api.segment import SUB_PATHS
from pier.api.validation import event_time
from pier.clock import now_ms
from pier.domain import feed
from pier.store import make_store

SPEC = document()
EXAMPLES = int(os.environ.get("PIER_FUZZ_EXAMPLES", "600"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    phases=[Phase.explicit, Phase.generate]
    + ([Phase.shrink] if os.environ.get("PIER_FUZZ_SHRINK") else []),
    suppress_health_check=list(HealthCheck),
)


def inline(schema: Any) -> Any:
    """The schema with every $ref to components replaced by its target (none are recursive)."""
    if isinstance(schema, dict):
        if "$ref" in schema:
            return inline(SPEC["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]])
        return {k: inline(v) for k, v in schema.items()}
    if isinstance(schema, list):
        return [inline(v) for v in schema]
    return schema


def operation(method: str, path: str) -> dict[str, Any]:
    return SPEC["paths"][path][method]


SEGMENT_CALL = "/api/client/segment/{call}"
DESTINATIONS = "/api/client/destinations"  # managed by administrators: tests/delivery
EVENTS = "/api/client/events"


def body_schema(path: str) -> dict[str, Any]:
    """The request body's schema; a Segment sub-path takes one call, or a batch (b, v1/batch)."""
    if path.startswith(SEGMENT_CALL + "="):
        name = "SegmentBatch" if SUB_PATHS[path.split("=", 1)[1]] == "batch" else "SegmentCall"
        return inline(SPEC["components"]["schemas"][name])
    return inline(operation("post", path)["requestBody"]["content"]["application/json"]["schema"])


# the POST operations of public keys (ingestion); a Segment sub-path is written `template=call`
WRITES = [
    p
    for p, item in SPEC["paths"].items()
    if "post" in item and p != SEGMENT_CALL and item["post"].get("x-pier-scope") == "public"
]
WRITES += [f"{SEGMENT_CALL}={call}" for call in sorted(SUB_PATHS)]
VALIDATORS = {p: jsonschema.Draft202012Validator(body_schema(p)) for p in WRITES}
ERROR = jsonschema.Draft202012Validator(inline(SPEC["components"]["schemas"]["Error"]))
NOW = now_ms()  # fixed: strategies must not depend on the clock
POOL = [f"p{i}" for i in range(6)]  # a few shared ids, so requests meet each other's users


# -- the store, read directly (another connection), before and after each request -------------
class Probe:
    def __init__(self, url: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.store = make_store(url)
        self.run(self.store.open())

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def snapshot(self, pid: int, refs: set[tuple[str, str]]) -> tuple[Any, ...]:
        async def take() -> tuple[Any, ...]:
            users = {}
            for ref, by in sorted(refs):
                u = await self.store.get_user(pid, ref, by)
                users[(ref, by)] = render.user(u) if u else None
            latest = await self.store.latest_events(pid, 1)
            return await self.store.stats(pid), users, latest[0].id if latest else None

        return self.run(take())

    def close(self) -> None:
        self.run(self.store.close())
        self.loop.close()


@dataclass
class Fuzz:
    tenant: Tenant
    probe: Probe
    http: httpx.Client  # no key of its own: each request says which it sends
    acked_message_ids: set[str] = field(default_factory=set)
    statuses: dict[str, int] = field(default_factory=dict)

    def count(self, what: str) -> None:
        self.statuses[what] = self.statuses.get(what, 0) + 1


@pytest.fixture(scope="module")
def fuzz(server: LiveServer) -> Iterator[Fuzz]:
    tenant = make_tenant(server)
    probe = Probe(server.database_url)
    f = Fuzz(tenant, probe, httpx.Client(base_url=server.url, timeout=30))
    yield f
    f.http.close()
    print(f"fuzzed {server.database_url.split(':')[0]}: {sorted(f.statuses.items())}")
    # No message id is stored twice
    stored = stored_message_ids(server.database_url, tenant.id)
    # (a DELETE of the read fuzz may have taken some away with their user, never duplicated them)
    assert set(stored.values()) <= {1}
    probe.close()
    tenant.public.close()
    tenant.secret.close()


# -- strategies ------------------------------------------------------------------------------
CHARS = st.characters(blacklist_categories=("Cs",), blacklist_characters="\0")
JSON_LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(CHARS, max_size=20),
)
ANY_JSON = st.recursive(
    JSON_LEAVES,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(CHARS, max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


def from_schema(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Values the schema accepts, for the keywords the document uses."""
    if "allOf" in schema:
        merged = {k: v for k, v in schema.items() if k != "allOf"}
        for part in schema["allOf"]:
            required = merged.get("required", []) + part.get("required", [])
            merged = {**part, **merged, "required": required}
            merged["properties"] = {**part.get("properties", {}), **merged.get("properties", {})}
        return from_schema(merged)
    if "const" in schema:
        return st.just(schema["const"])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    if "anyOf" in schema:
        rest = {k: v for k, v in schema.items() if k not in ("anyOf", "description")}
        if not rest:
            return st.one_of([from_schema(branch) for branch in schema["anyOf"]])
        accepts = jsonschema.Draft202012Validator(schema).is_valid
        return from_schema(rest).filter(accepts)  # e.g. "one of the ids" on an object
    types = schema.get("type")
    if types is None:
        return ANY_JSON
    if isinstance(types, list):
        return st.one_of([from_schema({**schema, "type": t}) for t in types])
    if types == "null":
        return st.none()
    if types == "boolean":
        return st.booleans()
    if types == "integer":
        return st.integers()
    if types == "number":
        return st.one_of(st.integers(), st.floats(allow_nan=False, allow_infinity=False))
    if types == "string":
        low, high = schema.get("minLength", 0), schema.get("maxLength", 1000)
        text = st.text(CHARS, min_size=low, max_size=min(high, 24))
        if high >= 1000:
            return text
        at_limit = st.sampled_from(["x" * high, "é" * high, "\U0001f600" * high])  # code points
        return st.one_of(text, at_limit)
    if types == "array":
        items = from_schema(schema.get("items", {}))
        return st.lists(
            items, min_size=schema.get("minItems", 0), max_size=min(schema.get("maxItems", 5), 5)
        )
    return _object(schema)


def _object(schema: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    props = schema.get("properties", {})
    if not props:
        return st.dictionaries(st.text(CHARS, max_size=8), ANY_JSON, max_size=4)
    required = schema.get("required", [])
    fixed = st.fixed_dictionaries(
        {k: from_schema(props[k]) for k in required},
        optional={k: from_schema(v) for k, v in props.items() if k not in required},
    )
    if schema.get("additionalProperties", True) is False:
        return fixed
    extra = st.dictionaries(
        st.text(CHARS, min_size=1, max_size=8).filter(lambda k: k not in props),
        JSON_LEAVES,
        max_size=2,
    )
    return st.builds(lambda a, b: {**b, **a}, fixed, extra)


def recent_times() -> st.SearchStrategy[Any]:
    ms = st.integers(NOW - 30 * 86_400_000, NOW)
    iso = ms.map(lambda t: dt.datetime.fromtimestamp(t / 1000, dt.UTC).isoformat())
    return st.one_of(ms, iso)


BODIES = {p: from_schema(body_schema(p)) for p in WRITES}


@st.composite
def valid_body(draw: st.DrawFn, path: str) -> Any:
    """A body the schema accepts, often with shared ids and plausible times."""
    body = draw(BODIES[path])
    items = body if isinstance(body, list) else [body]
    for item in items:
        if not isinstance(item, dict):
            continue
        for key in ("anonymous_id", "external_id", "anonymousId", "userId"):
            if key in item and draw(st.booleans()):
                item[key] = draw(st.sampled_from(POOL))
        if "timestamp" in item and draw(st.integers(0, 4)) != 4:  # (Hypothesis favours 0)
            item["timestamp"] = draw(recent_times())
    return body


@st.composite
def broken_body(draw: st.DrawFn, path: str) -> Any:
    """A valid body with one thing changed, or any JSON at all."""
    if draw(st.integers(0, 4)) == 4:
        return draw(ANY_JSON)
    body = draw(valid_body(path))
    target = body
    if isinstance(body, list):
        target = body[draw(st.integers(0, len(body) - 1))]
    how = draw(st.sampled_from(["drop", "retype", "long", "extra", "empty", "wrap", "deep", "big"]))
    if not isinstance(target, dict):
        return draw(ANY_JSON)
    keys = sorted(target)
    if how == "drop" and keys:
        del target[draw(st.sampled_from(keys))]
    elif how == "retype" and keys:
        target[draw(st.sampled_from(keys))] = draw(
            st.one_of(st.integers(), st.lists(st.integers(), max_size=2), st.booleans())
        )
    elif how == "long":
        target[draw(st.sampled_from([*keys, "name"]))] = "x" * draw(st.integers(256, 400))
    elif how == "extra":
        target[draw(st.text(min_size=1, max_size=8))] = draw(JSON_LEAVES)
    elif how == "deep":  # past 32 levels, or at most: a 422 or stored
        target[draw(st.sampled_from([*keys, "data"]))] = nested(draw(st.integers(28, 40)))
    elif how == "big":  # a number past a 64-bit integer
        big = draw(st.sampled_from([2**63, -(2**63), 10**400, 2**63 - 1]))
        target[draw(st.sampled_from([*keys, "data"]))] = {"n": [big]}
    elif how == "empty":
        return [] if isinstance(body, list) else {}
    else:
        return [body] if not isinstance(body, list) else body[0] if body else {}
    return body


# Shapes that gave 500s (issue 14, item 4): digits Python's int() takes but are not ASCII,
# more digits than int() converts, numbers past a bigint
HOSTILE_NUMBERS = st.sampled_from(
    ["²", "³", "1²", "１２", "9" * 4301, str(2**63), str(2**64), "-1", "+1", "1_000", " 7 "]
)
HOSTILE_CURSORS = st.sampled_from(
    [
        render.encode_cursor(2**63),
        render.encode_cursor(2**63, 1),
        render.encode_cursor(1, 2**63),
        render.encode_cursor(2**64, 2**64),
        render.encode_cursor(-1, 1),
        "OTk5" * 1200,
        "wrI",  # base64 of `²`
    ]
)
# Bodies with data no parser can read, or nested past the limit (item 5): a 422, as raw bytes
BAD_DATA = [
    b'[{"name":"n","external_id":"p0","data":{"x":1e999}}]',
    b'[{"name":"n","external_id":"p0","data":{"x":' + b"9" * 5000 + b"}}]",
    b'{"external_id":"p0","data":{"x":-9223372036854775808}}',
    b'[{"name":"n","external_id":"p0","data":' + b'{"a":' * 40 + b"1" + b"}" * 40 + b"}]",
]


@dataclass
class Write:
    path: str  # as in WRITES
    body: Any
    raw: bytes | None = None  # bytes sent as they are, instead of the body
    content_type: str | None = "application/json"
    gzip: bool = False
    auth: str = "public"  # public | secret | none | basic | unknown
    sent_at: str | None = None

    @property
    def transport_ok(self) -> bool:
        ok_type = (
            "segment" in self.path  # the Segment-format routes read any body as JSON
            or self.content_type is None
            or self.content_type.split(";")[0] in ("application/json", "text/plain")
        )
        return self.auth in ("public", "secret") and ok_type and self.raw is None

    @property
    def schema_valid(self) -> bool:
        return VALIDATORS[self.path].is_valid(self.body)

    @property
    def template(self) -> str:
        return self.path.split("=", 1)[0]

    @property
    def url(self) -> str:
        template, _, call = self.path.partition("=")
        return template.replace("{call}", call)


@st.composite
def writes(draw: st.DrawFn) -> Write:
    path = draw(st.sampled_from([p for p in WRITES if "=" not in p] + [SEGMENT_CALL]))
    if path == SEGMENT_CALL:
        path = f"{path}={draw(st.sampled_from(sorted(SUB_PATHS)))}"
    body = draw(st.one_of(valid_body(path), broken_body(path)))
    w = Write(path, body)
    variant = draw(st.integers(0, 19))  # mostly 0: a plain request
    if variant == 15:
        w.raw = draw(
            st.sampled_from([b"", b"{", b"[1,", b'{"a":1}}', b"\xff\xfe", b"nul\x00l", *BAD_DATA])
        )
    elif variant == 16:
        w.content_type = draw(
            st.sampled_from(["text/plain", "application/json; charset=utf-8", None, "text/xml"])
        )
    elif variant == 17:
        w.gzip = True
    elif variant == 18:
        w.auth = draw(st.sampled_from(["secret", "none", "basic", "unknown"]))
    elif variant == 19 and (path in (EVENTS, "/api/client/track") or "segment" in path):
        w.sent_at = draw(
            st.one_of(
                st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=30),
                recent_times().map(str),
                HOSTILE_NUMBERS,
            )
        )
    return w


def headers_for(t: Tenant, auth: str) -> dict[str, str]:
    return {
        "public": {"Authorization": f"Bearer {t.public_key}"},
        "secret": {"Authorization": f"bearer {t.secret_key}"},
        "none": {},
        "basic": {"Authorization": f"Basic {t.public_key}"},
        "unknown": {"Authorization": "Bearer pk_00000000000000000000000000000000"},
    }[auth]


def refs_in(body: Any) -> set[tuple[str, str]]:
    """Every (id, kind) a body names, to compare those users before and after."""
    found = set()
    items = body if isinstance(body, list) else [body]
    if isinstance(body, dict) and isinstance(body.get("batch"), list):
        items = body["batch"]
    names = {
        "anonymous_id": "anonymous_id",
        "external_id": "external_id",
        "anonymousId": "anonymous_id",
        "previousId": "anonymous_id",
        "userId": "external_id",
    }
    for item in items:
        for obj in (item, item.get("user") if isinstance(item, dict) else None):
            if not isinstance(obj, dict):
                continue
            for key, kind in names.items():
                value = obj.get(key)
                if isinstance(value, int) and not isinstance(value, bool):
                    value = str(value)
                if isinstance(value, str) and value and len(value) <= 255:
                    found.add((value, kind))
    return found


# -- checks ----------------------------------------------------------------------------------
def same(a: Any, b: Any) -> bool:
    """JSON equality, numbers compared as numbers (PostgreSQL's jsonb rewrites 1e300)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        try:
            return a == b or math.isclose(float(a), float(b), rel_tol=1e-12)
        except OverflowError:
            return False
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def check_documented(method: str, path: str, r: httpx.Response) -> None:
    assert r.status_code < 500, f"{method} {path}: {r.status_code} {r.text}"
    responses = operation(method, path)["responses"]
    assert str(r.status_code) in responses, (
        f"{method} {path}: undocumented {r.status_code} {r.text}"
    )
    if r.status_code >= 400:
        ERROR.validate(r.json())
    elif r.status_code == 200:
        schema = inline(responses["200"]["content"]["application/json"]["schema"])
        jsonschema.validate(r.json(), schema, cls=jsonschema.Draft202012Validator)


def read_user(t: Tenant, ref: str, by: str) -> dict[str, Any]:
    r = t.secret.get(f"/api/client/users/{ref_path(ref)}", params={"by": by})
    assert r.status_code == 200, f"a 204 left no user {by}={ref!r}: {r.text}"
    return r.json()


def user_ref(obj: dict[str, Any], user: Any = None) -> tuple[str, str]:
    """Whom the server resolves: the external id when there is one, else the anonymous id."""
    user = user if isinstance(user, dict) else {}
    ext = obj.get("external_id") or user.get("external_id")
    return (
        (ext, "external_id")
        if ext
        else (obj.get("anonymous_id") or user["anonymous_id"], "anonymous_id")
    )


def feed_after(t: Tenant, last_event: int | None) -> list[dict[str, Any]]:
    """Every event stored after `last_event`, through the event feed (storage order)."""
    found: list[dict[str, Any]] = []
    after = feed_cursor(last_event) if last_event is not None else None
    for _ in range(10):
        params = {"limit": 1000, **({"after": after} if after else {})}
        r = t.secret.get("/api/client/events", params=params)
        assert r.status_code == 200, r.text
        found += r.json()["results"]
        after = r.json()["next_cursor"]
        if not r.json()["has_more"]:
            return found
    raise AssertionError("the feed did not end")


@dataclass
class Expected:
    """An event a request should have stored."""

    name: str
    message_id: str | None
    data: Any = None  # None: not compared
    external_id: str | None = None
    timestamp: Any = None


def expected_events(w: Write) -> list[Expected]:
    body = w.body
    if w.path == EVENTS:
        return [
            Expected(
                e["name"],
                e.get("message_id") or None,
                {**(e.get("properties") or {}), **(e.get("data") or {})},
                e.get("external_id") or (e.get("user") or {}).get("external_id"),
                e.get("timestamp"),
            )
            for e in body
        ]
    if w.path == "/api/client/track":
        data = {**(body.get("properties") or {}), **(body.get("data") or {})}
        return [
            Expected(
                body["event"],
                body.get("message_id") or None,
                data,
                body.get("external_id") or None,
                body.get("timestamp"),
            )
        ]
    # Segment: track, page and screen calls become events (identify, alias, group do not)
    kind = SUB_PATHS[w.path.split("=", 1)[1]] if "=" in w.path else "batch"
    calls = [body] if kind != "batch" else body if isinstance(body, list) else body["batch"]
    out = []
    for call in calls:
        t = call.get("type", kind)
        if t not in ("track", "page", "screen"):
            continue
        mid = call.get("messageId")
        name = call["event"] if t == "track" else f"{t.title()} Viewed"
        data = (call.get("properties") or {}) if t == "track" else None
        user = call.get("userId")
        out.append(
            Expected(name, str(mid) if mid not in (None, "") else None, data, user and str(user))
        )
    return out


def read_back_events(f: Fuzz, w: Write, last_event: int | None) -> None:
    """The events stored by this request are the ones it sent, less those whose message id
    the project already had, plus Pier's own items (domain/feed.py) for its users."""
    new = feed_after(f.tenant, last_event)
    by_key: dict[tuple[str, str | None], list[dict[str, Any]]] = {}
    for x in new:
        by_key.setdefault((x["name"], x["message_id"]), []).append(x)
    seen = set(f.acked_message_ids)
    expected = expected_events(w)
    for e in expected:
        if e.message_id is not None and e.message_id in seen:
            continue  # not stored again: it would be left over below
        seen.add(e.message_id)
        candidates = by_key.get((e.name, e.message_id), [])
        match = next((x for x in candidates if e.data is None or same(x["data"], e.data)), None)
        assert match is not None, f"event {e!r} did not read back"
        candidates.remove(match)
        if e.external_id:
            assert match["external_id"] == e.external_id
        if e.timestamp is not None and w.sent_at is None:
            ms, _ = event_time(e.timestamp, now_ms())
            assert match["created_at"] == render.iso(ms)
    left = [x for xs in by_key.values() for x in xs]
    assert all(x["name"] in feed.ITEMS for x in left), left
    f.acked_message_ids |= {e.message_id for e in expected if e.message_id}


def read_back(f: Fuzz, w: Write, last_event: int | None) -> None:
    """The data of an accepted write, read through the read API."""
    t, body = f.tenant, w.body
    if w.path == EVENTS or "segment" in w.path or w.path == "/api/client/track":
        read_back_events(f, w, last_event)
        return
    ref, by = user_ref(body)
    if w.path == "/api/client/alias":
        user = read_user(t, body["anonymous_id"], "anonymous_id")
        assert user["external_id"] == body["external_id"]
    elif w.path == "/api/client/identify":
        user = read_user(t, ref, by)
        for key in ("email", "phone", "locale"):
            if key in body:
                assert (user[key] or None) == (body[key] or None), key
        if isinstance(body.get("timezone"), str):
            assert user["timezone"].lower() == body["timezone"].lower()
        for key, value in (body.get("data") or {}).items():
            if key not in ("phone_country", "phone_is_valid"):
                assert same(user["data"].get(key), value), key
    else:
        devices = {d["device_id"]: d for d in read_user(t, ref, by)["devices"]}
        d = devices[body["device_id"]]
        for key in ("os", "model", "app_build", "app_version"):
            assert d[key] == body[key]
        if "token" in body:
            assert d["token"] == (body["token"] or None)


# -- the properties --------------------------------------------------------------------------
def nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = {"a": value}
    return value


DEEP = b'{"a":' * 5000 + b"1" + b"}" * 5000  # past msgspec's nesting limit: a 400


@FUZZ
@example(w=Write(EVENTS, [{"name": "deep", "external_id": "p0", "data": nested(200)}]))
@example(w=Write(EVENTS, None, raw=b'[{"name":"n","external_id":"p0","data":' + DEEP + b"}]"))
@example(w=Write(EVENTS, None, raw=b"[" * 100_000))
@example(w=Write(EVENTS, [{"name": "n", "anonymous_id": "p1", "data": {"x": 10**400, "y": 1e308}}]))
@example(
    w=Write(
        EVENTS,
        [{"name": f"e{i}", "anonymous_id": "p2", "message_id": f"m{i}"} for i in range(1000)],
    )
)
@example(w=Write(EVENTS, [{"name": "e", "anonymous_id": "p2"}] * 1001))
@example(w=Write(EVENTS, [{"name": n, "external_id": "p4", "message_id": "dup"} for n in "ab"]))
@example(w=Write("/api/client/identify", {"external_id": "p3", "email": "a\0b"}))
@example(w=Write(EVENTS, [{"name": "n", "external_id": "p0"}], sent_at="²"))
@example(w=Write(EVENTS, [{"name": "n", "external_id": "p0"}], sent_at="１２"))
@example(w=Write("/api/client/track", {"event": "n", "external_id": "p0"}, sent_at="9" * 4301))
@example(
    w=Write(
        "/api/client/devices",
        {
            "anonymous_id": "p5",
            "device_id": "d",
            "os": "",
            "model": "",
            "app_build": "",
            "app_version": "",
            "sdk_version": [1],
        },
    )
)
@given(w=writes())
def test_fuzzed_writes(fuzz: Fuzz, w: Write) -> None:
    t = fuzz.tenant
    raw = (
        w.raw
        if w.raw is not None
        else json.dumps(w.body, ensure_ascii=False, allow_nan=False).encode()
    )
    headers = headers_for(t, w.auth)
    if w.content_type:
        headers["Content-Type"] = w.content_type
    if w.gzip:
        raw = gzip.compress(raw)
        headers["Content-Encoding"] = "gzip"
    if w.sent_at is not None:  # (Latin-1, as HTTP headers are read: `²` is one byte;
        # what Latin-1 cannot spell, such as fullwidth digits, goes as its UTF-8 bytes)
        latin1 = all(ord(c) < 256 for c in w.sent_at)
        # (spaces around a value are not part of it in HTTP: h11 refuses to send them)
        sent = w.sent_at.strip(" \t").encode("latin-1" if latin1 else "utf-8")
        headers["X-Sent-At"] = sent  # type: ignore[assignment]  # httpx takes bytes too
    refs = refs_in(w.body)
    before = fuzz.probe.snapshot(t.id, refs)
    r = fuzz.http.post(w.url, content=raw, headers=headers)
    fuzz.count(f"POST {r.status_code}")
    check_documented("post", w.template, r)
    if r.status_code >= 400:
        assert fuzz.probe.snapshot(t.id, refs) == before, f"a {r.status_code} changed data"
        if w.transport_ok and w.schema_valid:
            assert r.status_code == 422, r.text  # only rules the schema cannot say
        return
    assert r.status_code == (200 if "segment" in w.path else 204)  # Segment: {"success": true}
    assert w.transport_ok and w.schema_valid, f"accepted a body the schema rejects: {w.body!r}"
    read_back(fuzz, w, before[2])


@dataclass
class Read:
    method: str
    path: str
    ref: str | None
    params: dict[str, str]
    auth: str = "secret"


TEXT = st.text(CHARS, max_size=12)


@st.composite
def reads(draw: st.DrawFn) -> Read:
    method, path = draw(
        st.sampled_from(
            [
                (m, p)
                for p, item in SPEC["paths"].items()
                for m in item
                # (the list routes: test_fuzz_lists.py)
                if m != "post" and not p.startswith(DESTINATIONS) and "/lists" not in p
            ]
        )
    )
    ref = None
    if "{ref}" in path:
        odd = st.sampled_from(["a/b", "x/events", ".", "..", "a\nb", "%2F", "é?#"])
        ref = draw(st.one_of(st.sampled_from(POOL), TEXT.filter(bool), odd))
    params = {}
    for p in operation(method, path)["parameters"]:
        if p["in"] != "query" or draw(st.booleans()):
            continue
        if p["name"] == "by":
            params["by"] = draw(st.one_of(st.sampled_from(["external_id", "anonymous_id"]), TEXT))
        elif p["name"] == "limit":
            params["limit"] = draw(st.one_of(st.integers(-2, 1002).map(str), TEXT, HOSTILE_NUMBERS))
        elif p["name"] in ("cursor", "after"):
            params[p["name"]] = draw(st.one_of(TEXT, HOSTILE_CURSORS, HOSTILE_NUMBERS))
        else:
            params[p["name"]] = draw(TEXT)
    auth = draw(st.sampled_from(["secret"] * 8 + ["public", "none", "unknown"]))
    return Read(method, path, ref, params, auth)


@settings(FUZZ, max_examples=max(1, EXAMPLES // 2))
@example(q=Read("get", "/api/client/users/{ref}/events", "p0", {"limit": "²"}))
@example(q=Read("get", "/api/client/events", None, {"after": render.encode_cursor(2**63)}))
@example(q=Read("get", "/api/client/users", None, {"cursor": render.encode_cursor(2**63, 1)}))
@example(q=Read("delete", "/api/client/users/{ref}", "a\nb", {}))
@given(q=reads())
def test_fuzzed_reads(fuzz: Fuzz, q: Read) -> None:
    t = fuzz.tenant
    url = q.path.replace("{ref}", ref_path(q.ref)) if q.ref is not None else q.path
    by = q.params.get("by", "external_id")
    refs = {(q.ref, by)} if q.ref is not None and by in ("external_id", "anonymous_id") else set()
    before = fuzz.probe.snapshot(t.id, refs)
    r = fuzz.http.request(q.method.upper(), url, params=q.params, headers=headers_for(t, q.auth))
    fuzz.count(f"{q.method.upper()} {r.status_code}")
    check_documented(q.method, q.path, r)
    if q.auth != "secret":  # a public key is known but may not read; the others are unknown
        assert r.status_code == (403 if q.auth == "public" else 401), r.text
    if q.method == "delete" and r.status_code == 204:
        after = fuzz.probe.snapshot(t.id, refs)
        assert after[1][(q.ref, by)] is None and before[1][(q.ref, by)] is not None
        return
    assert fuzz.probe.snapshot(t.id, refs) == before, f"{q.method} {q.path} changed data"
