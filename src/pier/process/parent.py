"""A process that `pier serve` spawned ends when `pier serve` does, even killed with -9: it
watches its parent's sentinel (a pipe multiprocessing keeps open while the parent lives)."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
from collections.abc import Callable


def when_parent_gone(callback: Callable[[], object]) -> None:
    """On the running loop: `callback()` once, when the process that spawned this one has
    ended. In a process not spawned (`pier deliver`, a test's server) it does nothing."""
    parent = multiprocessing.parent_process()
    if parent is None or parent.sentinel is None:
        return
    sentinel = parent.sentinel
    loop = asyncio.get_running_loop()

    def gone() -> None:
        loop.remove_reader(sentinel)  # (readable from now on: called once, not every turn)
        callback()

    loop.add_reader(sentinel, gone)


def exit_with_parent() -> None:
    """In a uvicorn worker of `pier serve`: SIGTERM to itself once its parent is gone, so that
    it stops as it would on a signal (finishing its requests). Without it the workers of a
    `pier serve` killed with -9 kept the port and answered 503 with no writer process behind
    them."""
    when_parent_gone(lambda: os.kill(os.getpid(), signal.SIGTERM))
