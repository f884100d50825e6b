"""Request ids and structured logs: every response carries X-Request-ID (the client's when it is
sane, else a new one); `pier serve` writes one JSON object per line (or text with
--log-format text), the access line of each request carrying its id, and never a query string."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import pytest

from conftest import Tenant
from faults.pierproc import PierProcess, new_project

GENERATED = re.compile(r"[0-9a-f]{16}")


def test_every_response_carries_a_request_id(tenant: Tenant) -> None:
    answers = [
        tenant.post("events", [{"name": "x", "external_id": "rid-1"}]),  # 204
        tenant.post("events", [{"name": ""}]),  # 422
        tenant.public.get("/api/client/users/rid-1"),  # 403
        tenant.public.get("/nowhere"),  # 404
        tenant.public.delete("/api/client/identify"),  # 405
        tenant.public.options("/api/client/events"),  # CORS preflight
        httpx.post(f"{tenant.server.url}/api/client/events", json=[]),  # 401
        tenant.public.get("/health"),
        tenant.public.get("/metrics"),
    ]
    ids = [r.headers.get("x-request-id") for r in answers]
    assert all(i and GENERATED.fullmatch(i) for i in ids), ids
    # the 204 comes from api/edge.py's own dispatch: CORS there too
    assert answers[0].status_code == 204
    assert answers[0].headers["access-control-allow-origin"] == "*"
    assert len(set(ids)) == len(ids)


@pytest.mark.parametrize(
    ("sent", "echoed"),
    [
        ("abc-123", True),
        ("0f8fad5b-d9cb-469f-a165-70867728950e", True),
        ("trace:1/span.2=x+y_z", True),
        ("a" * 128, True),
        ("a" * 129, False),
        ("has space", False),
        ("<script>", False),
        ("-leading-dash", False),
        ("pk_0123456789abcdef0123456789abcdef", False),  # never echo what looks like a key
        ("x-sk_0123456789abcdef", False),
    ],
)
def test_a_sane_incoming_id_is_kept(tenant: Tenant, sent: str, echoed: bool) -> None:
    r = tenant.public.get("/health", headers={"X-Request-ID": sent})
    got = r.headers["x-request-id"]
    assert (got == sent) is echoed
    if not echoed:
        assert GENERATED.fullmatch(got)


def serve(tmp_path: Path, *args: str) -> tuple[PierProcess, str, dict[str, str]]:
    url = f"sqlite:///{tmp_path}/pier.db"
    project = new_project(url)
    server = PierProcess(url, tmp_path / "server.log", *args)
    return server, project.secret_key, {"Authorization": f"Bearer {project.secret_key}"}


def test_json_lines_with_request_ids(tmp_path: Path) -> None:
    server, key, auth = serve(tmp_path, "--access-log", "all")
    try:
        with httpx.Client(base_url=server.url, headers=auth, timeout=30) as http:
            ok = http.post(
                "/api/client/identify",
                json={"external_id": "log-1", "email": "secret-mail@example.com"},
                headers={"X-Request-ID": "req-identify-1"},
            )
            refused = http.post("/api/client/events", json=[{"name": "", "external_id": "x"}])
            read = http.get("/api/client/users/log-1", params={"by": "external_id", "q": "QSMARK"})
            pasted = http.get(f"/api/client/users/{key}")  # a key pasted into a path
    finally:
        server.terminate()
    assert (ok.status_code, refused.status_code, read.status_code) == (204, 422, 200)
    lines = [json.loads(line) for line in server.log().splitlines() if line.strip()]
    assert lines, "nothing logged"
    for line in lines:
        assert {"time", "level", "logger", "message"} <= set(line), line
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line["time"])
    access = [line for line in lines if line["logger"] == "pier.access"]
    by_id = {line["request_id"]: line for line in access}
    first = by_id["req-identify-1"]
    assert (first["method"], first["path"], first["status"]) == (
        "POST",
        "/api/client/identify",
        204,
    )
    assert isinstance(first["duration_ms"], float | int) and first["duration_ms"] > 0
    assert by_id[refused.headers["x-request-id"]]["status"] == 422
    assert by_id[read.headers["x-request-id"]]["path"] == "/api/client/users/log-1"
    assert by_id[pasted.headers["x-request-id"]]["path"] == "/api/client/users/sk_…"
    text = server.log()
    for never in ("QSMARK", "secret-mail", key, key[3:]):  # no query string, body or key
        assert never not in text


def test_text_format(tmp_path: Path) -> None:
    server, _, auth = serve(tmp_path, "--log-format", "text", "--access-log", "all")
    try:
        r = httpx.get(f"{server.url}/health", headers={"X-Request-ID": "text-1"}, timeout=30)
    finally:
        server.terminate()
    assert r.headers["x-request-id"] == "text-1"
    [line] = [line for line in server.log().splitlines() if "request_id=text-1" in line]
    assert " INFO pier.access: GET /health 200 " in line
    assert "status=200" in line and "duration_ms=" in line
    assert not server.log().lstrip().startswith("{")


def test_default_access_log_keeps_errors_only(tmp_path: Path) -> None:
    server, _, auth = serve(tmp_path)
    try:
        httpx.get(f"{server.url}/health")
        httpx.post(f"{server.url}/api/client/identify", json={}, headers=auth)
    finally:
        server.terminate()
    access = [line for line in server.log().splitlines() if '"pier.access"' in line]
    assert len(access) == 1 and '"status":422' in access[0]
