"""Property-based fuzzing of the list routes (docs/lists.md) from the OpenAPI document, on every
backend, as test_fuzz.py does for ingestion and reads (which leave the list routes to this file).

Requests: every list operation, on a static and a dynamic list of the project's own, another
project's, or ids that are none; bodies from the document's schemas, rule trees of the contract's
fixture file (whole, or with one thing broken), Parcelvoy CSV files (good, or with a bad column,
row or cell; as text/csv or a multipart upload), random JSON, bad bytes, other content types and
keys. What must hold for every one:
- a CSV (text/csv or a multipart upload) is read: never a 415;
- no 5xx, and the status is one the document lists for the operation; error bodies match its
  Error schema and 200 bodies its response schema; keys other than the secret one: 401/403;
- a rejected request changes nothing: the project's row counts, its lists (name, rule, state,
  count...) and the members of both lists, read before and after on a connection of our own;
- a 2xx did what it says: a created list reads back (and is deleted again, to keep the project
  small), a patch shows, added ids and a CSV's rows are members (and its users exist), removed
  ids are not.

Bounded: a third of PIER_FUZZ_EXAMPLES (default 200 per backend), derandomized."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from conftest import LiveServer, Tenant, make_tenant
from faults.test_fuzz import (
    ANY_JSON,
    CHARS,
    EXAMPLES,
    FUZZ,
    JSON_LEAVES,
    POOL,
    SPEC,
    Probe,
    check_documented,
    from_schema,
    headers_for,
    inline,
)
from pier.api.lists import render_list

LISTS = "/api/client/lists"
OPERATIONS = sorted(
    (m, p)
    for p, item in SPEC["paths"].items()
    if p.startswith(LISTS) or p.endswith("/lists")
    for m in item
    if m != "delete" or p.endswith("/users")  # deleting a list: done after each create below
)
RULES = [
    c["rule"]
    for c in json.loads(
        (Path(__file__).parent.parent / "fixtures" / "segment-rules.json").read_text()
    )
]
PRO = RULES[1]  # plan = "Pro": a rule with no time in it (the members only move with requests)
COLUMNS = ["external_id", "email", "phone", "timezone", "locale", "plan", "created_at", ""]
CELLS = st.one_of(
    st.sampled_from([*POOL, "", "Pro", "UTC", "Mars/Base", "ann@example.com", "x" * 300]),
    st.text(CHARS, max_size=8),
)


@dataclass
class Lists:
    tenant: Tenant
    probe: Probe
    http: httpx.Client
    ids: dict[str, int]  # static, dynamic: the project's own; other: another project's
    statuses: dict[str, int] = field(default_factory=dict)


@pytest.fixture(scope="module")
def lists(server: LiveServer) -> Iterator[Lists]:
    tenant, other = make_tenant(server), make_tenant(server)
    for ext in POOL[:3]:
        body = {"external_id": ext, "data": {"plan": "Pro"}}
        assert tenant.post("identify", body).status_code == 204

    def made(t: Tenant, body: dict[str, Any]) -> int:
        r = t.secret.post(LISTS, json=body)
        assert r.status_code == 201, r.text
        return int(r.json()["id"])

    ids = {
        "static": made(tenant, {"name": "static", "type": "static"}),
        "dynamic": made(tenant, {"name": "dynamic", "type": "dynamic", "rule": PRO}),
        "other": made(other, {"name": "theirs", "type": "static"}),
    }
    f = Lists(
        tenant, Probe(server.database_url), httpx.Client(base_url=server.url, timeout=30), ids
    )
    yield f
    print(f"fuzzed lists {server.database_url.split(':')[0]}: {sorted(f.statuses.items())}")
    f.http.close()
    f.probe.close()
    for t in (tenant, other):
        t.public.close()
        t.secret.close()


@dataclass
class Call:
    method: str
    path: str  # the document's template
    target: str  # static | dynamic | other | an id as text
    body: Any = None
    raw: bytes | None = None  # sent as is (a CSV, or bytes no parser reads)
    content_type: str | None = "application/json"
    multipart: bool = False
    auth: str = "secret"


def _nodes(tree: Any) -> list[dict[str, Any]]:
    if not isinstance(tree, dict):
        return []
    return [tree] + [n for c in tree.get("children") or [] for n in _nodes(c)]


@st.composite
def rules(draw: st.DrawFn) -> Any:
    """A fixture tree, often with one thing broken, or any JSON."""
    how = draw(st.integers(0, 5))
    if how == 5:
        return draw(ANY_JSON)
    tree = json.loads(json.dumps(draw(st.sampled_from(RULES))))
    if how >= 3:
        node = draw(st.sampled_from(_nodes(tree)))
        key = draw(st.sampled_from([*sorted(node), "colour", "frequency"]))
        if draw(st.booleans()) and key in node:
            del node[key]
        else:
            node[key] = draw(JSON_LEAVES)
    return tree


@st.composite
def csv_file(draw: st.DrawFn) -> bytes:
    header = draw(st.lists(st.sampled_from(COLUMNS), min_size=1, max_size=4))
    if draw(st.integers(0, 3)) != 0 and "external_id" not in header:
        header.insert(0, "external_id")
    rows = draw(st.lists(st.lists(CELLS, min_size=len(header), max_size=len(header)), max_size=4))
    if rows and draw(st.integers(0, 5)) == 0:
        rows[0] = rows[0][:-1]  # a row with fewer fields than the header
    lines = [header, *rows]
    text = "\r\n".join(",".join(json.dumps(c) if "," in c else c for c in row) for row in lines)
    return (text + "\r\n").encode()


def body_for(draw: st.DrawFn, method: str, path: str) -> Any:
    if path == f"{LISTS}/preview":
        return {"rule": draw(rules())}
    content = SPEC["paths"][path][method].get("requestBody", {}).get("content", {})
    if "application/json" not in content:
        return None
    body = draw(from_schema(inline(content["application/json"]["schema"])))
    if isinstance(body, dict) and "rule" in body:
        body["rule"] = draw(rules())
    if isinstance(body, dict) and "external_ids" in body and draw(st.booleans()):
        body["external_ids"] = draw(st.lists(st.sampled_from([*POOL, "nobody"]), max_size=4))
    if draw(st.integers(0, 4)) == 0:
        return draw(ANY_JSON)
    return body


@st.composite
def calls(draw: st.DrawFn) -> Call:
    method, path = draw(st.sampled_from(OPERATIONS))
    odd = ["0", "-1", "x", str(2**63), "1e3", "²"]
    target = draw(st.sampled_from(["static"] * 8 + ["dynamic"] * 4 + ["other"] * 2 + odd))
    call = Call(method, path, target, body_for(draw, method, path))
    if method == "post" and path.endswith("/users") and draw(st.booleans()):
        call.raw, call.body = draw(csv_file()), None
        call.content_type = "text/csv"
        call.multipart = draw(st.booleans())
    variant = draw(st.integers(0, 14))
    if variant == 12 and method != "get":
        call.raw = draw(st.sampled_from([b"", b"{", b"\xff\xfe", b'{"rule":{"a":"\\u0000"}}']))
    elif variant == 13 and method != "get":
        call.content_type = draw(st.sampled_from(["text/xml", None, "multipart/form-data"]))
    elif variant == 14:
        call.auth = draw(st.sampled_from(["public", "none", "unknown"]))
    return call


def list_id(f: Lists, target: str) -> str:
    return str(f.ids[target]) if target in f.ids else target


def settle(f: Lists) -> None:
    """Wait until no list of the project is being computed (a recount or a new rule runs in
    the background, and would change the snapshot)."""
    for _ in range(500):
        if all(r.state != "loading" for r in f.probe.run(f.probe.store.lists(f.tenant.id))):
            return
        time.sleep(0.02)
    raise AssertionError("a list stayed loading")


def snapshot(f: Lists) -> tuple[Any, ...]:
    async def take() -> tuple[Any, ...]:
        store, pid = f.probe.store, f.tenant.id
        rows = [render_list(r) for r in await store.lists(pid)]
        members = {}
        for name in ("static", "dynamic"):
            page = await store.list_members(pid, f.ids[name], 1000, None)
            members[name] = sorted(u.id for u in page)
        return await store.stats(pid), msgspec.json.encode(rows), members

    return f.probe.run(take())


def members(f: Lists, target: str) -> set[str]:
    r = f.tenant.secret.get(f"{LISTS}/{f.ids[target]}/users", params={"limit": 1000})
    return {u["external_id"] for u in r.json()["results"]}


def send(f: Lists, c: Call) -> httpx.Response:
    url = c.path.replace("{id}", list_id(f, c.target)).replace("{ref}", POOL[0])
    headers = headers_for(f.tenant, c.auth)
    if c.multipart and c.raw is not None:
        return f.http.post(url, files={"file": ("u.csv", c.raw, "text/csv")}, headers=headers)
    if c.content_type:
        headers["Content-Type"] = c.content_type
    content = c.raw
    if content is None and c.body is not None:
        content = json.dumps(c.body, ensure_ascii=False).encode()
    return f.http.request(c.method.upper(), url, content=content, headers=headers)


@settings(FUZZ, max_examples=max(1, EXAMPLES // 3))
@example(c=Call("post", f"{LISTS}/{{id}}/users", "static", raw=b"external_id,plan\np0,Pro\n", content_type="text/csv"))  # fmt: skip
@example(c=Call("post", f"{LISTS}/{{id}}/users", "dynamic", raw=b"external_id\np0\n", content_type="text/csv", multipart=True))  # fmt: skip
@example(c=Call("post", f"{LISTS}/{{id}}/users", "static", raw=b"external_id\n\xff\n", content_type="text/csv"))  # fmt: skip
@example(c=Call("post", LISTS, "static", body={"name": "n", "type": "dynamic", "rule": RULES[-1]}))  # fmt: skip
@example(c=Call("patch", f"{LISTS}/{{id}}", "dynamic", body={"rule": {**PRO, "colour": 1}}))
@given(c=calls())
def test_fuzzed_list_routes(lists: Lists, c: Call) -> None:
    f = lists
    settle(f)
    before = snapshot(f)
    r = send(f, c)
    key = f"{c.method.upper()} {c.path.removeprefix(LISTS)} {r.status_code}"
    f.statuses[key] = f.statuses.get(key, 0) + 1
    check_documented(c.method, c.path, r)
    if c.auth != "secret":
        assert r.status_code == (403 if c.auth == "public" else 401), r.text
    elif c.content_type == "text/csv":  # a documented type: read, whatever the verdict
        assert r.status_code != 415, r.text
    if r.status_code >= 400 or c.method == "get" or c.path.endswith("/preview"):
        settle(f)
        assert snapshot(f) == before, f"{c.method} {c.path} {r.status_code} changed data"
        return
    assert c.target in f.ids or "{id}" not in c.path, r.text
    if c.method == "post" and c.path == LISTS:  # created: reads back, then goes again
        made = r.json()
        assert f.tenant.secret.get(f"{LISTS}/{made['id']}").json()["name"] == made["name"]
        assert f.tenant.secret.delete(f"{LISTS}/{made['id']}").status_code == 204
    elif c.method == "patch" and isinstance(c.body, dict) and "name" in c.body:
        assert f.tenant.secret.get(f"{LISTS}/{f.ids[c.target]}").json()["name"] == c.body["name"]
    elif c.path.endswith("/users") and c.raw is not None:  # a CSV: its rows' users are members
        rows = c.raw.decode("utf-8-sig").splitlines()
        header = rows[0].split(",")
        ids = {row.split(",")[header.index("external_id")] for row in rows[1:] if row}
        assert ids <= members(f, c.target)
    elif c.path.endswith("/users"):
        ids = set(c.body["external_ids"])
        now = members(f, c.target)
        assert ids <= now if c.method == "post" else not ids & now
