"""No secret key value and no request body ever reaches the logs: a `pier serve` subprocess at
the most talkative log levels gets requests with keys and marked bodies, accepted and refused
ones, and its whole output is searched for them."""

from __future__ import annotations

import base64
import gzip
import secrets
from pathlib import Path

import httpx
import pytest

from faults.pierproc import PierProcess, new_project


@pytest.mark.parametrize(("level", "form"), [("debug", "json"), ("trace", "text")])
def test_no_key_or_body_in_the_logs(
    database_url: str, tmp_path: Path, level: str, form: str
) -> None:
    project = new_project(database_url)
    mark = f"MARK{secrets.token_hex(8)}"  # in every body; never in a path or header
    unknown_key = f"pk_{secrets.token_hex(16)}"
    log_path = tmp_path / "server.log"
    basic = base64.b64encode(f"{project.secret_key}:".encode()).decode()
    server = PierProcess(database_url, log_path, "--log-level", level, "--log-format", form)
    public = {"Authorization": f"Bearer {project.public_key}"}
    secret = {"Authorization": f"Bearer {project.secret_key}"}
    try:
        with httpx.Client(base_url=server.url, timeout=30) as http:

            def post(path: str, headers: dict[str, str], **kw: object) -> int:
                return http.post(f"/api/client/{path}", headers=headers, **kw).status_code  # type: ignore[arg-type]

            sent = {
                "identify": post("identify", public, json={"external_id": "u", "email": mark}),
                "events": post("events", secret, json=[{"name": mark, "external_id": "u"}]),
                "device": post(
                    "devices",
                    public,
                    json={"external_id": "u", "device_id": "d", "token": mark}
                    | {"os": "iOS", "model": "x", "app_build": "1", "app_version": "1"},
                ),
                "alias": post("alias", public, json={"anonymous_id": mark, "external_id": "u"}),
                "nul": post(
                    "events",
                    public,
                    json=[{"name": "n", "external_id": "u", "data": {mark: "\0" + mark}}],
                ),
                "bad json": post("events", public, content=f'[{{"name": "{mark}"'.encode()),
                "invalid": post("identify", public, json={"external_id": "u", mark: 1}),
                "too long": post("identify", public, json={"external_id": mark * 20}),
                "bad time": post(
                    "events", public, json=[{"name": "x", "external_id": "u", "timestamp": mark}]
                ),
                "unknown key": post(
                    "identify", {"Authorization": f"Bearer {unknown_key}"}, json={"x": mark}
                ),
                "wrong scheme": post(
                    "identify", {"Authorization": f"Basic {project.secret_key}"}, json={"x": mark}
                ),
                "too large": post("events", public, content=(mark * 80_000).encode()),
                "bad gzip": post(
                    "events",
                    {**public, "Content-Encoding": "gzip"},
                    content=gzip.compress(mark.encode())[:-4],
                ),
                "media type": post(
                    "events",
                    {**public, "Content-Type": "x/y"},
                    content=mark.encode(),
                ),
            }
            segment = [
                post(
                    "segment",
                    public,
                    json={"batch": [{"type": "track", "userId": "u", "event": mark}]},
                ),
                post("segment", {}, json={"writeKey": project.public_key, "batch": [{"x": mark}]}),
                post("segment/t", {"Authorization": "Basic " + basic}, json={"event": mark}),
                post("track", public, json={"event": mark, "external_id": "u"}),
            ]
            echoed = http.get("/health", headers={"X-Request-ID": project.secret_key})
            reads = [
                http.get("/api/client/users/u", headers=secret).status_code,
                http.get("/api/client/users/u/events", headers=secret).status_code,
                http.get("/api/client/users/u", headers=public).status_code,  # 403
            ]
            portal = http.post("/portal/login", data={"email": "a@b.c", "password": mark})
        assert sent["identify"] == sent["events"] == sent["device"] == 204, sent
        assert sent["bad json"] == 400 and sent["invalid"] == 422 and sent["unknown key"] == 401
        assert reads == [200, 200, 403]
        assert segment[0] == 200 and segment[3] == 204 and segment[1] == 422, segment
        assert echoed.headers["x-request-id"] != project.secret_key
        assert portal.status_code < 500
    finally:
        server.terminate()

    log = log_path.read_text(errors="replace")
    assert "Application startup complete" in log  # the capture works
    if level == "trace":
        assert "ASGI" in log  # uvicorn's trace logging is on: it shows messages, not bodies
    assert "/api/client/events" in log  # the access lines are there
    for value in (project.public_key, project.secret_key, unknown_key, mark):
        assert value not in log, f"{value[:10]}... is in the log:\n{log[-3000:]}"
    assert project.secret_key[3:] not in log and project.public_key[3:] not in log
    assert basic not in log
