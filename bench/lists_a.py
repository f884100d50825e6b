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


def condition(uuid: str, group: str, path: str, kind: str, op: str, value: str) -> dict[str, Any]:
    return {"uuid": uuid, "type": kind, "group": group, "path": path, "operator": op,
            "value": value}  # fmt: skip


def mixed_rules(
    n: int,
    event: Callable[[int], tuple[str, int, dict[str, Any]]],
    trait: Callable[[int], dict[str, Any]],
) -> list[dict[str, Any]]:
    """`n` mixed rules, the ith of `event(i)` (an event name counted at least 1 + i % 3 times
    in the last so many days, with a condition on the event) and `trait(i)` (a condition on
    the user): i % 4 = 0 the trait alone, 1 the count alone, 2 both, 3 either."""
    out = []
    for i in range(n):
        name, days, child = event(i)
        count = {"uuid": "e", "type": "wrapper", "group": "event", "path": "$.name",
                 "operator": "and", "value": name,
                 "frequency": {"period": {"type": "rolling", "unit": "day", "value": days},
                               "operator": ">=", "count": 1 + i % 3},
                 "children": [child]}  # fmt: skip
        children = [trait(i)] if i % 4 == 0 else [count] if i % 4 == 1 else [trait(i), count]
        out.append({"uuid": "r", "type": "wrapper", "group": "parent", "path": "$",
                    "operator": "or" if i % 4 == 3 else "and", "children": children})  # fmt: skip
    return out


def rules(n: int = 20) -> list[dict[str, Any]]:
    """(l)'s rules over (a)'s events: the counts in the last 7 or 30 days, the user condition
    on the external id (the only trait (a)'s users have)."""

    def event(i: int) -> tuple[str, int, dict[str, Any]]:
        name, path, kind, op, value = EVENTS[i % len(EVENTS)]
        return name, 7 if i % 2 else 30, condition("p", "event", path, kind, op, value)

    def trait(i: int) -> dict[str, Any]:
        return condition("t", "user", "$.external_id", "string", "starts with", f"u{1 + i % 9}")

    return mixed_rules(n, event, trait)


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
