"""A process of `pier serve` beside its HTTP workers (the writer process, the delivery
process), started by spawning, started again when it dies, stopped with SIGTERM."""

from __future__ import annotations

import importlib
import logging
import multiprocessing
import threading
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger("pier.supervisor")


def _run(target: str, *args: Any) -> None:
    """A spawned process's entry point: `target` ("module:function") imported there only, so
    that the parent need not import what the child runs, nor the child what it does not
    (with pier's console script importing nothing either: pier/__main__.py)."""
    module, _, name = target.partition(":")
    getattr(importlib.import_module(module), name)(*args)


class Supervisor:
    """Runs `target(*args)` ("module:function") in a process of its own (started by
    spawning), starts it again when it dies of anything but a clean exit, and stops it
    (SIGTERM) on `stop()`."""

    RESTART_PAUSE = 0.1  # seconds before a restart; doubled while it keeps dying, up to 5

    def __init__(self, target: str, *args: Any, name: str, stop_timeout: float) -> None:
        self.target, self.args, self.name = target, args, name
        self.stop_timeout = stop_timeout
        self._context = multiprocessing.get_context("spawn")
        self._stopping = threading.Event()
        self._lock = threading.Lock()  # a restart and stop() do not cross
        self.process: Any = None
        self._thread: threading.Thread | None = None

    def start(self, ready: Callable[[], bool] | None = None, timeout: float = 60) -> None:
        """Start the process; return once `ready()` holds (e.g. its socket answers), if given."""
        self._launch()
        deadline = time.monotonic() + timeout
        while ready is not None and not ready():
            if not self.process.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the {self.name} did not start (see its log above)")
            time.sleep(0.02)
        self._thread = threading.Thread(target=self._watch, name=f"pier-{self.name}-supervisor")
        self._thread.daemon = True
        self._thread.start()

    def _launch(self) -> None:
        with self._lock:
            if self._stopping.is_set():
                return
            self.process = self._context.Process(
                target=_run, args=(self.target, *self.args), name=f"pier-{self.name}", daemon=False
            )
            self.process.start()

    def _watch(self) -> None:
        pause = self.RESTART_PAUSE
        while True:
            started = time.monotonic()
            self.process.join()
            if self._stopping.is_set() or self.process.exitcode == 0:
                return
            log.error(
                "the %s %s died (exit code %s); starting it again",
                self.name,
                self.process.pid,
                self.process.exitcode,
            )
            # at once after a long life; more slowly while it keeps dying at start-up
            pause = self.RESTART_PAUSE if time.monotonic() - started > 5 else min(pause * 2, 5)
            if self._stopping.wait(pause):
                return
            self._launch()

    def stop(self) -> None:
        """SIGTERM, wait for it to finish what it holds and exit; kill -9 past `stop_timeout`."""
        with self._lock:
            self._stopping.set()
            process = self.process
        if process is not None and process.is_alive():
            process.terminate()
            process.join(self.stop_timeout)
            if process.is_alive():
                process.kill()
                process.join()
        if self._thread is not None:
            self._thread.join()
