"""Parameters a hostile client sent (issue 14, items 4 and 8; issue 17, item 3), on every
backend: each gave a 500 (with a text body) or a wrong answer before.

- digits Python takes but are not ASCII (`²`), 4,301 digits (int() raises), numbers past 2^63
  (SQLite and PostgreSQL cannot bind them) in X-Sent-At, limits, cursors, `after` and portal
  ids: a 422 naming the parameter (a 404 page, or the first page, in the portal);
- ids holding `/`, a newline, `.` or `..`: read and deleted through /users/{ref}, `%2F` being
  part of the id and `/` a separator;
- a gzip body with bytes after its end: a 400;
- control characters in a request path do not forge lines of the text log."""

from __future__ import annotations

import base64
import gzip
import logging
import uuid
from collections.abc import Iterator
from urllib.parse import quote

import httpx
import pytest
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from conftest import LiveServer, Tenant, db_call
from pier.api.render import encode_cursor
from pier.clock import now_ms
from pier.portal.auth import hash_password
from pier.process.logs import TextFormatter

SUPERSCRIPT_TWO = b"\xb2"  # `²` as a header byte (Latin-1): str.isdigit() says yes, int() no
PAST_BIGINT = str(2**63)
BAD_NUMBERS = ["²", "9" * 4301, PAST_BIGINT, "１２", "+5", " 7", "1_000", "-1"]


def ref_path(ref: str) -> str:
    """An id as one path segment: `/` as %2F, and `.` as %2E (clients drop `.` segments)."""
    return quote(ref, safe="").replace(".", "%2E")


# -- X-Sent-At -------------------------------------------------------------------------------
SENDERS = [
    ("events", [{"name": "e", "external_id": "u"}]),
    ("track", {"event": "e", "external_id": "u"}),
    ("segment", {"batch": [{"type": "track", "userId": "u", "event": "e"}]}),
]


@pytest.mark.parametrize(("path", "body"), SENDERS, ids=[s[0] for s in SENDERS])
@pytest.mark.parametrize(
    "sent_at",
    [SUPERSCRIPT_TWO, b"9" * 4301, PAST_BIGINT.encode(), b"12\xb2"],
    ids=["superscript", "4301 digits", "2^63", "digits and superscript"],
)
def test_a_bad_x_sent_at_is_a_422(tenant: Tenant, path: str, body: object, sent_at: bytes) -> None:
    r = tenant.post(path, body, headers={"X-Sent-At": sent_at})  # type: ignore[dict-item]
    assert r.status_code == 422, r.text
    assert r.json()["errors"][0]["path"] == "/headers/X-Sent-At"
    assert tenant.counts()["events"] == 0


# -- the read and management API -------------------------------------------------------------
READS = [
    "/api/client/users/u/events",
    "/api/client/users",
    "/api/client/events",
]


@pytest.mark.parametrize("url", READS)
@pytest.mark.parametrize("limit", BAD_NUMBERS)
def test_a_bad_limit_is_a_422(tenant: Tenant, url: str, limit: str) -> None:
    tenant.post("events", [{"name": "e", "external_id": "u"}])
    r = tenant.secret.get(url, params={"limit": limit})
    assert r.status_code == 422, r.text
    assert r.json()["errors"] == [
        {"path": "/limit", "message": "limit must be a whole number from 1 to 1000"}
    ]


def bad_cursors(size: int) -> list[str]:
    one = ["1"] * (size - 1)
    return [
        encode_cursor(*[2**63, *[1] * (size - 1)]),  # type: ignore[list-item]
        encode_cursor(*[1] * (size - 1), 2**63),  # type: ignore[list-item]
        encode_cursor_text(":".join([*one, "9" * 4301])),
        encode_cursor_text(":".join([*one, "²"])),
        encode_cursor_text(":".join([*one, "-1"])),
        encode_cursor_text(":".join([*one, " 1"])),
        "é" * 8,
        "A" * 60_000,
    ]


def encode_cursor_text(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    ("url", "name", "size"),
    [
        ("/api/client/users/u/events", "cursor", 2),
        ("/api/client/users", "cursor", 2),
        ("/api/client/events", "after", 1),
    ],
)
def test_a_bad_cursor_is_a_422(tenant: Tenant, url: str, name: str, size: int) -> None:
    tenant.post("events", [{"name": "e", "external_id": "u"}])
    for cursor in bad_cursors(size):
        r = tenant.secret.get(url, params={name: cursor})
        assert r.status_code == 422, (cursor[:40], r.text)
        assert r.json()["errors"][0]["path"] == f"/{name}"


# -- the portal ------------------------------------------------------------------------------
class PortalClient:
    def __init__(self, server: LiveServer) -> None:
        import html
        import re

        email = f"admin-{uuid.uuid4().hex[:10]}@example.com"
        hashed = hash_password("correct horse battery staple")
        db_call(server.database_url, lambda s: s.create_admin(email, hashed, now_ms()))
        self.http = httpx.Client(base_url=f"{server.url}/portal", timeout=30)
        page = self.http.get("/login").text
        found = re.search(r'name="csrf" value="([^"]+)"', page)
        assert found
        form = {"email": email, "password": "correct horse battery staple"}
        r = self.http.post("/login", data={**form, "csrf": html.unescape(found.group(1))})
        assert r.status_code == 303, r.text


@pytest.fixture
def portal(server: LiveServer) -> Iterator[httpx.Client]:
    client = PortalClient(server)
    yield client.http
    client.http.close()


def test_portal_ids_past_bigint_are_not_found(tenant: Tenant, portal: httpx.Client) -> None:
    tenant.post("events", [{"name": "e", "external_id": "u"}])
    uid = tenant.user("u")["id"]
    p = tenant.id
    for path in (
        f"/projects/{PAST_BIGINT}",
        f"/projects/{PAST_BIGINT}/users",
        f"/projects/{'9' * 4301}/keys",
        f"/projects/{p}/users/{PAST_BIGINT}",
        f"/projects/{p}/users/{'9' * 4301}",
        f"/projects/{p}/users/%C2%B2",
    ):
        r = portal.get(path)
        assert r.status_code == 404, (path[:60], r.status_code, r.text[:200])
    for path in (f"/projects/{p}/users/{PAST_BIGINT}/delete", f"/projects/{p}/keys/{2**64}/revoke"):
        token = portal.get(f"/projects/{p}/keys").text.split('name="csrf" value="')[1]
        r = portal.post(path, data={"csrf": token.split('"')[0]})
        assert r.status_code == 404, (path, r.status_code, r.text[:200])
    assert tenant.user("u")["id"] == uid


@pytest.mark.parametrize("bad", BAD_NUMBERS)
def test_portal_cursors_and_after_past_bigint_start_over(
    tenant: Tenant, portal: httpx.Client, bad: str
) -> None:
    tenant.post("events", [{"name": "e", "external_id": "u"}])
    uid = tenant.user("u")["id"]
    p = tenant.id
    for cursor in [*bad_cursors(2), bad]:
        for path in (f"/projects/{p}/users", f"/projects/{p}/users/{uid}"):
            r = portal.get(path, params={"cursor": cursor})
            assert r.status_code == 200, (path, cursor[:40], r.status_code, r.text[:200])
    for after in (bad, str(2**64)):
        r = portal.get(f"/projects/{p}/live.json", params={"after": after})
        assert r.status_code == 200, (after[:40], r.status_code, r.text[:200])
        assert r.json()["events"]


# -- a 500 is JSON everywhere ----------------------------------------------------------------
async def boom(request: Request) -> Response:
    raise RuntimeError("a bug")


def test_an_unexpected_error_is_a_json_500(tmp_path: object) -> None:
    live = LiveServer(f"sqlite:///{tmp_path}/pier.db")
    live.server.config.app.app.router.routes.append(Route("/boom", boom))  # type: ignore[attr-defined]
    live.start()
    try:
        r = httpx.get(f"{live.url}/boom", timeout=30)
        assert r.status_code == 500
        assert r.headers["content-type"] == "application/json"
        assert r.json() == {"status": "error", "error": "internal error"}
    finally:
        live.stop()


# -- ids with /, a newline, . and .. ---------------------------------------------------------
def test_an_encoded_slash_is_part_of_the_id(tenant: Tenant) -> None:
    assert (
        tenant.post("identify", {"external_id": "x", "email": "x@example.com"}).status_code == 204
    )
    assert (
        tenant.post("identify", {"external_id": "x/events", "email": "e@example.com"}).status_code
        == 204
    )
    assert tenant.post("events", [{"name": "of x", "external_id": "x"}]).status_code == 204

    r = tenant.secret.get("/api/client/users/x%2Fevents")  # the user "x/events"
    assert r.status_code == 200, r.text
    assert (r.json()["external_id"], r.json()["email"]) == ("x/events", "e@example.com")
    r = tenant.secret.get("/api/client/users/x%2fevents")  # lower case: the same
    assert r.json()["external_id"] == "x/events"
    r = tenant.secret.get("/api/client/users/x/events")  # the events of "x"
    assert r.status_code == 200, r.text
    assert [e["name"] for e in r.json()["results"]] == ["of x", "user_updated", "user_created"]
    r = tenant.secret.get("/api/client/users/x%2Fevents/events")
    assert [e["name"] for e in r.json()["results"]] == ["user_updated", "user_created"]
    r = tenant.secret.get("/api/client/users/x%2Fevents/devices")
    assert r.json() == {"results": []}

    assert tenant.secret.delete("/api/client/users/x%2Fevents").status_code == 204
    assert tenant.secret.get("/api/client/users/x%2Fevents").status_code == 404
    assert tenant.secret.get("/api/client/users/x").json()["email"] == "x@example.com"
    assert tenant.secret.delete("/api/client/users/x/events").status_code == 405  # a GET route


@pytest.mark.parametrize("ref", ["a\nb", "a\r\nb", "\n", ".", "..", "a/b/c", "%2F", "é/ü", "a?b#c"])
@pytest.mark.parametrize("by", ["external_id", "anonymous_id"])
def test_any_id_can_be_read_and_deleted(tenant: Tenant, ref: str, by: str) -> None:
    assert tenant.post("identify", {by: ref, "email": "e@example.com"}).status_code == 204
    url = f"/api/client/users/{ref_path(ref)}"
    r = tenant.secret.get(url, params={"by": by})
    assert r.status_code == 200, (url, r.text)
    assert ref in (r.json()["external_id"], *r.json()["anonymous_ids"])
    r = tenant.secret.get(f"{url}/events", params={"by": by})
    assert [e["name"] for e in r.json()["results"]] == ["user_updated", "user_created"]
    assert tenant.secret.delete(url, params={"by": by}).status_code == 204
    assert tenant.secret.get(url, params={"by": by}).status_code == 404
    assert tenant.counts()["users"] == 0


# -- gzip with bytes after its end -----------------------------------------------------------
@pytest.mark.parametrize(
    "trailer", [b"garbage", b"\0", gzip.compress(b'[{"name": "more", "external_id": "u"}]')]
)
def test_gzip_with_bytes_after_its_end_is_a_400(tenant: Tenant, trailer: bytes) -> None:
    body = gzip.compress(b'[{"name": "e", "external_id": "u"}]') + trailer
    headers = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
    r = tenant.public.post("/api/client/events", content=body, headers=headers)
    assert r.status_code == 400, r.text
    assert "after its end" in r.json()["error"]
    assert tenant.counts()["events"] == 0


# -- the text log ----------------------------------------------------------------------------
def test_the_text_log_escapes_control_characters() -> None:
    path = "/api/client/x\r\n2026-11-30T00:00:00.000Z INFO pier.access: GET /fake 200\x1b[2J"
    record = logging.LogRecord(
        "pier.access", logging.INFO, "", 0, "%s %s %d", ("GET", path, 404), None
    )
    record.path = path
    line = TextFormatter().format(record)
    assert "\n" not in line and "\r" not in line and "\x1b" not in line
    assert "\\x0d\\x0a2026-11-30" in line and "\\x1b[2J" in line
    assert line.count("path=/api/client/x\\x0d") == 1


def test_an_id_holding_nul_names_no_user(tenant: Tenant) -> None:
    """PostgreSQL cannot compare text with U+0000 in it: the lookups were 500s there."""
    for url in ("/api/client/users/a%00b", "/api/client/users/a%00b/events"):
        r = tenant.secret.get(url)
        assert r.status_code == 404, (url, r.text)
    assert tenant.secret.delete("/api/client/users/a%00b").status_code == 404
    r = tenant.secret.get("/api/client/users", params={"q": "a\0b"})
    assert r.status_code == 200 and r.json()["results"] == []
