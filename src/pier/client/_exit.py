"""Delivering what is still queued when the interpreter exits."""

from __future__ import annotations

import atexit
import logging
from typing import Protocol

log = logging.getLogger("pier.client")


class _ExitHook(Protocol):
    def _at_exit(self) -> None: ...


# Clients that were not closed yet. Held strongly on purpose: a client with queued events
# must live until they are sent.
_open: set[_ExitHook] = set()


def register(client: _ExitHook) -> None:
    _open.add(client)


def unregister(client: _ExitHook) -> None:
    _open.discard(client)


@atexit.register
def _close_all() -> None:
    for client in list(_open):
        try:
            client._at_exit()
        except Exception:
            log.exception("Pier: flushing a client at exit failed")
