"""A list created while a real `pier serve` runs (docs/lists.md, "One process per backfill"), on
every backend: it is created with its lease held by its creator, so the server's sweeper, which
takes up the loading lists nobody holds, leaves it to the creator; `pier lists create` computes
its list itself before it returns."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import httpx

from conftest import db_call
from faults.pierproc import PIER, PierProcess, new_project
from pier import lists
from pier.clock import now_ms

PRO = {
    "uuid": "r", "path": "$", "type": "wrapper", "group": "parent", "operator": "and",
    "children": [{"uuid": "p", "type": "string", "group": "user", "path": "$.plan",
                  "operator": "=", "value": "pro"}],
}  # fmt: skip
RULE = json.dumps(PRO)


def wait_for(condition, what: str, timeout: float = 30) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def get_list(url: str, project_id: int, list_id: int):  # type: ignore[no-untyped-def]
    return db_call(url, lambda s: s.get_list(project_id, list_id))


def test_a_list_created_while_a_server_runs_is_computed_by_its_creator(
    database_url: str, tmp_path: Path
) -> None:
    project = new_project(database_url)
    server = PierProcess(
        database_url, tmp_path / "serve.log", "--list-sweep", "0.1", "--no-deliver"
    )
    try:
        auth = {"Authorization": f"Bearer {project.public_key}"}
        for i, plan in enumerate(["pro", "free", "pro"]):
            body = {"external_id": f"u{i}", "data": {"plan": plan}}
            r = httpx.post(f"{server.url}/api/client/identify", json=body, headers=auth)
            assert r.status_code == 204, r.text

        # a creator (the CLI, another server) creates a list, and is slow to start on it
        mine = db_call(
            database_url,
            lambda s: lists.create(s, project.id, "mine", "dynamic", RULE, "creator", now_ms()),
        )
        # a list left loading by a process that stopped before it computed it (no lease): the
        # server's sweeper takes it up; once it is computed, the sweeper has looked at `mine`
        left = db_call(
            database_url, lambda s: s.create_list(project.id, "left", "dynamic", RULE, now_ms())
        )
        wait_for(
            lambda: get_list(database_url, project.id, left.id).state == "draft", "the sweeper"
        )
        now = get_list(database_url, project.id, mine.id)
        assert now.state == "loading" and now.users_count == 0  # the server left it alone
        assert db_call(database_url, lambda s: lists.compute(s, mine, "creator"))
        assert get_list(database_url, project.id, mine.id).users_count == 2

        # the command line, while the server runs: the list is computed when it returns
        rule_file = tmp_path / "rule.json"
        rule_file.write_text(RULE)
        out = subprocess.run(
            [PIER, "lists", "create", "--project", str(project.id), "--name", "cli",
             "--rule-file", str(rule_file), "--database-url", database_url],
            capture_output=True, text=True, timeout=60, check=True,
        )  # fmt: skip
        made = get_list(database_url, project.id, int(out.stdout))
        assert (made.state, made.users_count) == ("draft", 2)
    finally:
        server.terminate()
