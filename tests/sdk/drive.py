"""Drive one Python Segment-format library, as an app would, against a Pier server; print what
it sent as one JSON line: {"uploads": [{"body", "status", "answered_ms"}], "attempts": N,
"errors": [...]}.

    python drive.py MODULE HOST WRITE_KEY RUN

MODULE is the library's package: `segment.analytics` (segment-analytics-python 2.x),
`rudderstack.analytics` (rudder-sdk-python) or `analytics` (the old analytics-python 1.x, run
with its own PYTHONPATH: it cannot be installed beside the other two). HOST is what the library
is given (it appends /v1/batch). The library keeps its defaults (a consumer thread, its batching,
gzip and retries); what it sent is read from its own debug log ("making request: <the JSON
body>", then "data uploaded successfully"), the same in all three."""

from __future__ import annotations

import importlib
import json
import logging
import sys


class Recorder(logging.Handler):
    """The library's log: each request body it sends, when each was answered, its errors."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.uploads: list[dict] = []
        self.attempts = 0
        self.errors: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.msg == "making request: %s":
            self.attempts += 1
            self.uploads.append({"body": json.loads(record.args[0]), "status": None})
        elif record.msg == "data uploaded successfully":
            self.uploads[-1]["status"] = 200  # all three accept exactly 200 (or any 2xx)
            self.uploads[-1]["answered_ms"] = int(record.created * 1000)
        elif record.levelno >= logging.WARNING:
            self.errors.append(record.getMessage())


def main(module: str, host: str, key: str, run: str) -> None:
    library = importlib.import_module(module)
    recorder = Recorder()
    log = logging.getLogger("rudderstack" if module.startswith("rudderstack") else "segment")
    log.setLevel(logging.DEBUG)
    log.addHandler(recorder)

    client = library.Client(
        key, host=host, on_error=lambda e, batch: recorder.errors.append(str(e))
    )
    user, anon = f"{run}-user", f"{run}-anon"
    traits = {"email": f"{run}@example.com", "timezone": "America/Chicago", "plan": "pro"}
    client.identify(user, traits)
    client.alias(anon, user)
    client.track(user, "Order Completed", {"total": 99.5, "currency": "EUR"})
    client.page(user, "Docs", "Pricing", {"title": "Pricing"})
    client.screen(user, None, "Settings", {"tab": 2})
    for i in range(3):  # a burst: the consumer sends it as one batch or more
        client.track(user, "Item Added", {"i": i})
    client.flush()  # until every call was sent and answered (or given up)
    client.join()
    print(
        json.dumps(
            {"uploads": recorder.uploads, "attempts": recorder.attempts, "errors": recorder.errors}
        )
    )


if __name__ == "__main__":
    main(*sys.argv[1:])
