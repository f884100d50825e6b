"""A process that `pier serve` spawned ends when `pier serve` does, even killed with -9."""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import signal
from collections.abc import AsyncIterator


@contextlib.asynccontextmanager
async def exit_with_parent() -> AsyncIterator[None]:
    """In a spawned process (a uvicorn worker of `pier serve`): SIGTERM to itself, so that it
    stops as it would on a signal (finishing its requests), once its parent is gone. Without
    it the workers of a `pier serve` killed with -9 kept the port and answered 503 with no
    writer process behind them. Elsewhere (not spawned) it does nothing."""
    parent = multiprocessing.parent_process()
    if parent is None or parent.sentinel is None:
        yield
        return
    loop = asyncio.get_running_loop()
    loop.add_reader(parent.sentinel, os.kill, os.getpid(), signal.SIGTERM)
    try:
        yield
    finally:
        loop.remove_reader(parent.sentinel)
