"""Prometheus metrics: `GET /metrics`, the request counter (fed by api/edge.py) and the
writer's hooks (batch sizes, commit latency, events, queue depth).

With several processes (`pier serve --workers N`, or its delivery process), every one writes its values to
files in the directory PROMETHEUS_MULTIPROC_DIR names, and any worker's /metrics answers for all
of them (prometheus_client's multiprocess mode). `pier serve` sets that up (cli._metrics_dir): a
private directory of its own, unless the variable is set. Without the variable (a single
process), /metrics shows this process."""

from __future__ import annotations

import atexit
import os
from collections.abc import Iterable

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, multiprocess
from prometheus_client.exposition import choose_encoder
from starlette.requests import Request
from starlette.responses import Response

from ..domain.batch import ChangeSet
from ..domain.commands import Command, TrackEvents, flatten

REQUESTS = Counter(
    "pier_http_requests",
    "HTTP requests answered, by method, route template and status.",
    ["method", "route", "status"],
)
EVENTS = Counter(
    "pier_events_stored",
    "Client events stored (committed); a retry dropped by its message_id is not counted.",
)
DUPLICATES = Counter(
    "pier_events_duplicate",
    "Client events dropped because an event with their message_id was stored already.",
)
BATCH_ITEMS = Histogram(
    "pier_writer_batch_items",
    "Items (events, and other commands as one each) committed in one transaction.",
    buckets=(1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000),
)
COMMIT_SECONDS = Histogram(
    "pier_writer_commit_seconds",
    "Time to load, decide, write and commit one batch, retries included.",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
REPLAYS = Counter(
    "pier_writer_replays",
    "Batch attempts rolled back by a conflict with another process, and replayed.",
)
QUEUE_DEPTH = Gauge(
    "pier_writer_queue_depth",
    "Items submitted to the writer and not yet answered.",
    multiprocess_mode="livesum",
)

METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})
_request_counters: dict[tuple[str, str, int], Counter] = {}


def count_request(method: str, route: str, status: int) -> None:
    """One answered request. `route` is a route template (bounded), never a raw path."""
    if method not in METHODS:  # a client can send any method name: one series for them all
        method = "OTHER"
    key = (method, route, status)
    counter = _request_counters.get(key)
    if counter is None:
        counter = _request_counters[key] = REQUESTS.labels(method, route, str(status))
    counter.inc()


# -- the writer's hooks ------------------------------------------------------------------
def observe_batch(commands: Iterable[Command], seconds: float, changes: ChangeSet) -> None:
    """A committed transaction: its commands, how long it took and what it stored."""
    items = 0
    for cmd in flatten(commands):
        items += len(cmd.events) if isinstance(cmd, TrackEvents) else 1
    BATCH_ITEMS.observe(items)
    COMMIT_SECONDS.observe(seconds)
    if changes.client_events:
        EVENTS.inc(changes.client_events)
    if changes.duplicates:
        DUPLICATES.inc(changes.duplicates)


def replayed() -> None:
    REPLAYS.inc()


def queue_depth(items: int) -> None:
    QUEUE_DEPTH.set(items)


# -- exposition --------------------------------------------------------------------------
_multiprocess_registry: CollectorRegistry | None = None


def multiprocess_mode() -> bool:
    """prometheus_client's own variable (read by it when imported): set by `pier serve`."""
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


def _registry() -> CollectorRegistry:
    global _multiprocess_registry
    if not multiprocess_mode():
        return REGISTRY
    if _multiprocess_registry is None:
        _multiprocess_registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(_multiprocess_registry)
    return _multiprocess_registry


async def serve(request: Request) -> Response:
    """GET /metrics: the Prometheus text format (OpenMetrics when the scraper asks for it)."""
    writer = getattr(request.app.state, "writer", None)
    if writer is not None:  # exact for this process, whatever the last batch left
        queue_depth(writer.pending)
    encode, content_type = choose_encoder(request.headers.get("accept", ""))
    return Response(encode(_registry()), headers={"Content-Type": content_type})


@atexit.register
def _mark_dead() -> None:
    """A live-sum gauge counts a process until it is marked dead."""
    if multiprocess_mode():
        multiprocess.mark_process_dead(os.getpid())
