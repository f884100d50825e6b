"""Scenario (d) of run.py: (a) while one webhook destination delivers what it commits.

The receiver is `bare_asgi.py` (it drains each body and answers 204 at once) in a process of
its own; the destination is added and removed through Pier's own API with a secret key, and its
lag (`GET /api/client/destinations/{id}`: items after its cursor, age of the oldest) is read
twice a second in a thread while wrk runs, then until it is caught up again."""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from typing import Any

PICKUP_TIMEOUT_S = 30.0  # the engine looks for new destinations every 5 s
CATCH_UP_TIMEOUT_S = 120.0
SAMPLE_EVERY_S = 0.5


def call(method: str, url: str, secret: str, body: object | None = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Authorization", f"Bearer {secret}")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=10) as resp:
        text = resp.read()
    return json.loads(text) if text else None


class Destination:
    """One webhook destination of the bench project, from `--from now`."""

    def __init__(self, server_url: str, secret: str, receiver_url: str) -> None:
        self.base = f"{server_url}/api/client/destinations"
        self.secret = secret
        made = call(
            "POST", self.base, secret, {"kind": "webhook", "url": receiver_url, "from": "now"}
        )
        self.id = int(made["id"])

    def view(self) -> dict[str, Any]:
        return call("GET", f"{self.base}/{self.id}", self.secret)  # type: ignore[no-any-return]

    def wait_leased(self) -> None:
        """Until a delivery engine holds it (it then delivers from its cursor on)."""
        deadline = time.monotonic() + PICKUP_TIMEOUT_S
        while not self.view().get("lease_holder"):
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"destination {self.id} not picked up in {PICKUP_TIMEOUT_S:.0f} s"
                )
            time.sleep(0.2)

    def wait_caught_up(self) -> float:
        """Seconds until no item is left after its cursor (raises after a bound)."""
        start = time.monotonic()
        while self.view()["lag_items"]:
            if time.monotonic() - start > CATCH_UP_TIMEOUT_S:
                raise RuntimeError(
                    f"destination {self.id} still behind after {CATCH_UP_TIMEOUT_S} s"
                )
            time.sleep(0.1)
        return time.monotonic() - start

    def remove(self) -> None:
        call("DELETE", f"{self.base}/{self.id}", self.secret)


class LagWatch:
    """The destination's lag, read every SAMPLE_EVERY_S in a thread: the maxima seen."""

    def __init__(self, destination: Destination) -> None:
        self.destination = destination
        self.max_seconds = 0.0
        self.max_items = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> LagWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_EVERY_S):
            try:
                view = self.destination.view()
            except OSError:
                continue  # the server is busy: the next sample
            self.samples += 1
            self.max_seconds = max(self.max_seconds, float(view["lag_seconds"]))
            self.max_items = max(self.max_items, int(view["lag_items"]))
