"""Every case of the contract's fixture file (tests/fixtures/segment-rules.json) through the
API, on every backend: the users and events replayed over HTTP at their own instants (the clock
frozen, pier/clock.py), then a list created at the case's `now` and computed by the backfill,
and the same rule through the preview."""

from __future__ import annotations

import json
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from conftest import Tenant
from pier import clock

CASES = json.loads((Path(__file__).parent.parent / "fixtures" / "segment-rules.json").read_text())


def instant(text: str) -> int:
    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)


def replay(t: Tenant, users: list[dict[str, Any]], now: int) -> None:
    """The case's users (each created at its created_at) and their events, over HTTP."""
    for u in users:
        clock.set_frozen(instant(u["created_at"]))
        body = {k: u[k] for k in ("external_id", "email", "phone", "timezone", "locale", "data")}
        r = t.post("identify", body)
        assert r.status_code == 204, r.text
    clock.set_frozen(now)
    events = [
        {"name": e["name"], "external_id": u["external_id"], "data": e["data"],
         "timestamp": e["created_at"]}
        for u in users for e in u["events"]
    ]  # fmt: skip
    if events:
        r = t.post("events", events)
        assert r.status_code == 204, r.text


def members(t: Tenant, list_id: int, refs: dict[str, str]) -> list[str]:
    r = t.secret.get(f"/api/client/lists/{list_id}/users", params={"limit": 1000})
    assert r.status_code == 200, r.text
    return sorted(refs[u["external_id"]] for u in r.json()["results"])


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_fixture_case_by_backfill_and_preview(tenant: Tenant, case: dict[str, Any]) -> None:
    now = instant(case["now"])
    refs = {u["external_id"]: u["ref"] for u in case["users"]}
    with clock.frozen(now):
        replay(tenant, case["users"], now)
        r = tenant.secret.post("/api/client/lists/preview", json={"rule": case["rule"]})
        assert r.status_code == 200, r.text
        assert r.json()["count"] == len(case["expect_members"])
        r = tenant.secret.post(
            "/api/client/lists",
            json={"name": case["name"], "type": "dynamic", "rule": case["rule"]},
        )
        assert r.status_code == 201, r.text
        list_id = r.json()["id"]
        for _ in range(500):
            if tenant.secret.get(f"/api/client/lists/{list_id}").json()["state"] != "loading":
                break
            time.sleep(0.01)
        assert members(tenant, list_id, refs) == sorted(case["expect_members"])
