"""The wall clock Pier stores: milliseconds since the Unix epoch, UTC."""

import time


def now_ms() -> int:
    return time.time_ns() // 1_000_000
