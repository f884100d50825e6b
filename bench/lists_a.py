"""Scenario (l) of run.py: (a) again with 20 dynamic lists kept current (issue 13's target:
at least 70% of (a)'s rate without lists).

The lists are rules over what (a) sends (bench/gen.lua: six event names with their
properties, for users u1 … u10000 who have no traits but their external id): event counts
with a property condition in a rolling window, an external-id condition, both, or either,
like bench/lists_ingest.py's mix. They are added through Pier's own API with a secret key
after (a), computed over what (a) stored (the run waits until every one is ready), and
removed after (l)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from destination import call

READY_TIMEOUT_S = 300.0

# (name, property path, type, operator, value): one property condition of each event name
EVENTS = (
    ("purchase", "$.total", "number", ">", "100"),
    ("product_viewed", "$.currency", "string", "=", "EUR"),
    ("add_to_cart", "$.quantity", "number", ">=", "2"),
    ("page_view", "$.path", "string", "starts with", "/pricing"),
    ("search", "$.results", "number", "<", "50"),
    ("button_click", "$.experiment", "string", "=", "A"),
)


def rules(n: int = 20) -> list[dict[str, Any]]:
    """`n` mixed rules: i % 4 = 0 an external-id condition, 1 an event count, 2 both, 3
    either; the event counts are 1 – 3 in the last 7 or 30 days."""
    out = []
    for i in range(n):
        name, path, kind, op, value = EVENTS[i % len(EVENTS)]
        event = {"uuid": "e", "type": "wrapper", "group": "event", "path": "$.name",
                 "operator": "and", "value": name,
                 "frequency": {"period": {"type": "rolling", "unit": "day",
                                          "value": 7 if i % 2 else 30},
                               "operator": ">=", "count": 1 + i % 3},
                 "children": [{"uuid": "p", "type": kind, "group": "event", "path": path,
                               "operator": op, "value": value}]}  # fmt: skip
        trait = {"uuid": "t", "type": "string", "group": "user", "path": "$.external_id",
                 "operator": "starts with", "value": f"u{1 + i % 9}"}  # fmt: skip
        children = [trait] if i % 4 == 0 else [event] if i % 4 == 1 else [trait, event]
        out.append({"uuid": "r", "type": "wrapper", "group": "parent", "path": "$",
                    "operator": "or" if i % 4 == 3 else "and", "children": children})  # fmt: skip
    return out


class Lists:
    """The bench project's 20 dynamic lists, made through the API and computed."""

    def __init__(self, server_url: str, secret: str, n: int = 20) -> None:
        self.base = f"{server_url}/api/client/lists"
        self.secret = secret
        self.ids = [
            int(
                call(
                    "POST",
                    self.base,
                    secret,
                    {"name": f"bench-{i}", "type": "dynamic", "rule": rule},
                )["id"]
            )  # fmt: skip
            for i, rule in enumerate(rules(n))
        ]

    def wait_ready(self) -> float:
        """Seconds until none is loading (each computed over what is stored)."""
        start = time.monotonic()
        while any(self.view(i)["state"] == "loading" for i in self.ids):
            if time.monotonic() - start > READY_TIMEOUT_S:
                raise RuntimeError(f"lists still loading after {READY_TIMEOUT_S:.0f} s")
            time.sleep(0.2)
        return time.monotonic() - start

    def wait_swept(self, scalar: Callable[[str], int]) -> float:
        """Seconds until the sweeper has looked at every membership due (after a backfill of
        a rule that moves with time, every user is due once: Pier notes when to look again);
        until then ingestion shares the writer with the sweeper. `scalar`: a read of the
        database."""
        start = time.monotonic()
        sql = f"SELECT count(*) FROM list_due WHERE due_at <= {int(time.time() * 1000)}"
        while scalar(sql):
            if time.monotonic() - start > READY_TIMEOUT_S:
                raise RuntimeError(f"lists still due after {READY_TIMEOUT_S:.0f} s")
            time.sleep(0.5)
        return time.monotonic() - start

    def view(self, list_id: int) -> dict[str, Any]:
        return call("GET", f"{self.base}/{list_id}", self.secret)  # type: ignore[no-any-return]

    def members(self) -> int:
        return sum(int(self.view(i)["users_count"]) for i in self.ids)

    def remove(self) -> None:
        for i in self.ids:
            call("DELETE", f"{self.base}/{i}", self.secret)
