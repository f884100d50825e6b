"""The wall clock Pier stores: milliseconds since the Unix epoch, UTC.

Tests may stop it at an instant (`frozen`) to replay data at given times and to move time
forward without sleeping; nothing else does."""

import time
from collections.abc import Iterator
from contextlib import contextmanager

_frozen: int | None = None

# "Never", as the last time of something measured with time.monotonic(): that clock counts from
# the machine's boot, which may be seconds ago, so 0.0 would read as "just now" there.
NEVER = float("-inf")


def now_ms() -> int:
    if _frozen is not None:
        return _frozen
    return time.time_ns() // 1_000_000


@contextmanager
def frozen(at: int) -> Iterator[None]:
    """The clock stands at `at` (ms) in this block (and `set_frozen` moves it)."""
    global _frozen
    before, _frozen = _frozen, at
    try:
        yield
    finally:
        _frozen = before


def set_frozen(at: int) -> None:
    """Move a frozen clock (inside `frozen`)."""
    global _frozen
    assert _frozen is not None, "the clock is not frozen"
    _frozen = at
