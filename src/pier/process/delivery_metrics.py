"""Delivery metrics, per destination (the label is its id), on /metrics with the others."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

DELIVERED = Counter(
    "pier_destination_items_delivered",
    "Feed items delivered to a destination (items its filters skip included).",
    ["destination"],
)
FAILED = Counter(
    "pier_destination_batches_failed",
    "Tries of a batch (or of a part of a split batch) that did not get a 2xx.",
    ["destination"],
)
RETRIES = Counter(
    "pier_destination_retries",
    "Batches sent again after a failure that may pass (timeout, connection, 408, 429, 5xx).",
    ["destination"],
)
DEAD_LETTERS = Counter(
    "pier_destination_dead_letters",
    "Items that failed alone and went to the destination's dead letters.",
    ["destination"],
)
LAG_ITEMS = Gauge(
    "pier_destination_lag_items",
    "Feed items after the destination's cursor (as its delivering process last saw, each second).",
    ["destination"],
    multiprocess_mode="livemax",
)
LAG_SECONDS = Gauge(
    "pier_destination_lag_seconds",
    "Age of the oldest feed item not yet delivered (0 when caught up).",
    ["destination"],
    multiprocess_mode="livemax",
)
