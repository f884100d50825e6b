"""The real Segment-format libraries, in their default setups with only a host and a key set,
against a real `pier serve`: every call (identify, alias, track, page, screen, and a burst sent as
a batch) lands once with its traits, time and message id; the library reported no error and
re-sent nothing (each request it made reached the server once and was answered 200).

Python: segment-analytics-python and rudder-sdk-python (dev dependencies), and the old
analytics-python 1.x, which provides the same `segment.analytics` module as the first and pins
backoff 1.10.0 against rudder's 2.x: it is installed apart (`pip install --target`, see
sdk_env.py) and run with that directory first on its PYTHONPATH. Each library runs in a
subprocess (drive.py), as in an app. Node: @segment/analytics-node and
@rudderstack/rudder-sdk-node, pinned in node/package-lock.json and installed with `npm ci`
(node/drive.js); they are skipped without node and npm, unless PIER_REQUIRE_NODE=1.

The backend does not matter for wire handling: SQLite only."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import httpx
import pytest

from faults.pierproc import PierProcess, Project, new_project
from sdk.sdk_env import NODE_DIR, node_modules, old_analytics_python

HERE = Path(__file__).parent


@pytest.fixture(scope="module")
def pier(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PierProcess]:
    tmp = tmp_path_factory.mktemp("sdk")
    server = PierProcess(f"sqlite:///{tmp}/pier.db", tmp / "pier.log", "--access-log", "all")
    yield server
    server.terminate()


def segment_requests(pier: PierProcess, since: int, expected: int) -> list[tuple[str, int]]:
    """(path, status) of each request to a Segment-format route after byte `since` of the
    server's log (--access-log all: a line for every request, written just after its answer:
    waits a little for `expected` of them)."""
    deadline = time.monotonic() + 10
    while True:
        out = []
        text = pier.log_path.read_bytes()[since:].decode(errors="replace")
        for line in text.split("\n")[:-1]:  # whole lines only
            entry = json.loads(line) if line.startswith("{") else {}
            if entry.get("logger") == "pier.access" and entry["path"].startswith(
                "/api/client/segment"
            ):
                out.append((entry["path"], entry["status"]))
        if len(out) >= expected or time.monotonic() > deadline:
            return out
        time.sleep(0.05)


def ms(iso: str) -> int:
    return round(datetime.fromisoformat(iso).timestamp() * 1000)


def drive(cmd: list[str], env: dict[str, str] | None = None, cwd: Path = HERE) -> dict:
    done = subprocess.run(
        cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def check_landed(pier: PierProcess, project: Project, sent: dict, since: int) -> None:
    uploads = sent["uploads"]
    assert sent["errors"] == []  # the library reported none
    # each request the library made reached the server once and was answered 200: no re-send
    assert sent["attempts"] == len(uploads) >= 1
    assert [u["status"] for u in uploads] == [200] * len(uploads)
    seen = segment_requests(pier, since, len(uploads))
    assert [status for _, status in seen] == [200] * len(uploads), seen
    calls = [(u, call) for u in uploads for call in u["body"]["batch"]]
    ids = [call["messageId"] for _, call in calls]
    assert len(ids) == 8 and len(set(ids)) == 8, ids  # every call sent, none twice
    assert max(len(u["body"]["batch"]) for u in uploads) > 1  # batches, not only single calls

    with httpx.Client(
        base_url=pier.url, headers={"Authorization": f"Bearer {project.secret_key}"}, timeout=30
    ) as http:

        def get(path: str) -> dict:
            r = http.get(path, params={"limit": 1000})
            assert r.status_code == 200, r.text
            return r.json()

        for upload, call in calls:
            user = get(f"/api/client/users/{call['userId']}")
            kind = call["type"]
            if kind == "identify":
                traits = {**call.get("context", {}).get("traits", {}), **call.get("traits", {})}
                assert traits, call  # wherever the library put them
                assert (user["email"], user["timezone"]) == (traits["email"], traits["timezone"])
                assert user["data"] == {"plan": traits["plan"]}
            elif kind == "alias":
                assert call["previousId"] in user["anonymous_ids"]
            else:
                events = get(f"/api/client/users/{call['userId']}/events")["results"]
                found = [e for e in events if e["message_id"] == call["messageId"]]
                assert len(found) == 1, (call, events)
                check_event(found[0], call, upload)


def check_event(event: dict, call: dict, upload: dict) -> None:
    kind = call["type"]
    properties = call.get("properties", {})
    if kind == "track":
        assert (event["name"], event["data"]) == (call["event"], properties)
    else:
        extra = {k: call[k] for k in ("name", "category") if call.get(k) is not None}
        assert event["name"] == f"{kind.title()} Viewed"
        assert event["data"] == {**properties, **extra}
    # the time of the call, moved by the server's clock minus sentAt: the server read its
    # clock after sentAt and before the library had its answer (one clock on this machine)
    called = ms(call.get("timestamp") or call["originalTimestamp"])
    sent_at = ms(call.get("sentAt") or upload["body"]["sentAt"])
    stored = ms(event["created_at"])
    assert called - 2 <= stored <= called + (upload["answered_ms"] - sent_at) + 2, (event, call)


PYTHON_SDKS = {
    "segment-analytics-python": "segment.analytics",
    "rudder-sdk-python": "rudderstack.analytics",
    "analytics-python-1": "analytics",
}


@pytest.mark.parametrize("sdk", list(PYTHON_SDKS))
def test_python_library(pier: PierProcess, sdk: str, tmp_path: Path) -> None:
    project = new_project(pier.database_url)
    env = dict(os.environ)
    if sdk == "analytics-python-1":
        env["PYTHONPATH"] = str(old_analytics_python())
    since = pier.log_path.stat().st_size
    module = PYTHON_SDKS[sdk]
    host = f"{pier.url}/api/client/segment"
    sent = drive(
        [sys.executable, str(HERE / "drive.py"), module, host, project.public_key, sdk],
        env=env,
        cwd=tmp_path,  # rudder-sdk-python loads a .env from where it runs: none there
    )
    check_landed(pier, project, sent, since)


@pytest.mark.parametrize("sdk", ["segment", "rudder"])
def test_node_library(pier: PierProcess, sdk: str) -> None:
    node = node_modules()
    project = new_project(pier.database_url)
    since = pier.log_path.stat().st_size
    sent = drive(
        [node, str(NODE_DIR / "drive.js"), sdk, pier.url, project.public_key, f"node-{sdk}"],
        cwd=NODE_DIR,
    )
    check_landed(pier, project, sent, since)
