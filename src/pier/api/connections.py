"""The HTTP connection `pier serve` runs: uvicorn's httptools protocol with the limits it lacks.

uvicorn with httptools bounds neither the size of a request head nor the time a client may take
to send it, and never closes a connection that has not sent a whole request. Here:

- **Head size.** The request line and headers may hold at most `max_head` bytes and
  `max_headers` fields (32 KiB, nginx's default allows 4 x 8 KiB; 100, Apache's default); past either, the answer is 431 and the connection is closed.
- **Head timeout.** A connection must deliver a whole request head within `head_timeout` seconds
  of opening (or of the first byte of a following request); else 408 (when it sent part of a
  request) and the connection is closed. Idle keep-alive connections are uvicorn's
  `timeout_keep_alive` (5 s).
- **Body timeout.** The body must arrive whole within `body_timeout` seconds after the head
  (a deadline, not a gap between reads: a body dripped a byte at a time does not hold a
  connection for longer); else the connection is closed and the request is abandoned.
- **Connection cap.** At most `max_connections` per process. A connection arriving past the cap
  closes the connection idle the longest (waiting for a request head, or for the next request
  of a keep-alive client), so clients that send their request promptly are served while slow
  ones wait; when every connection has a request in progress, the new one is answered 503 with
  Retry-After at once.

Refusals (408, 431, 503) are JSON like every error, sent with `Connection: close`; the
connection then drains, without keeping, what the client still sends for up to LINGER seconds,
so that the client reads the answer instead of a connection reset.
"""

from __future__ import annotations

import asyncio
import functools
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, ClassVar

import httptools
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

from ..settings import Settings, from_environment
from .errors import HTTPProblem, error_body

LINGER = 2.0  # seconds a refused connection drains the client's data before it is closed
RETRY_AFTER = b"1"  # seconds, on the 503 past the connection cap


@dataclass(frozen=True)
class Limits:
    """The settings of a connection (pier/settings.py)."""

    head_timeout: float = Settings.header_timeout
    body_timeout: float = Settings.body_timeout
    max_connections: int = Settings.max_connections
    max_head: int = Settings.max_head
    max_headers: int = Settings.max_headers

    @classmethod
    def of(cls, settings: Settings) -> Limits:
        return cls(
            settings.header_timeout,
            settings.body_timeout,
            settings.max_connections,
            settings.max_head,
            settings.max_headers,
        )


@functools.cache
def configured() -> Limits:
    """The limits of the settings `pier serve` passed to this process (uvicorn makes a
    Connection by its name: no argument reaches it), read at its first connection."""
    return Limits.of(from_environment())


class HeadTooLarge(Exception):
    """Raised in a parser callback: stops the parser before the request reaches the app."""


# Per server: its connections, the one idle the longest first (see Connection.idle)
_by_idleness: weakref.WeakKeyDictionary[ServerState, OrderedDict[Connection, None]] = (
    weakref.WeakKeyDictionary()
)


class Connection(HttpToolsProtocol):
    preset_limits: ClassVar[Limits | None] = None  # None: `configured()`; a subclass may set
    limits: Limits

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limits = type(self).preset_limits or configured()
        self.in_head = True  # waiting for a request head, or reading one
        self.begun = False  # a request's first byte has come and its head not yet
        self.since_head = 0  # bytes received since a head or a message last ended (see below)
        self.timer: asyncio.TimerHandle | None = None
        self.refused = False  # answered with an error: what arrives now is dropped
        self.idle_order = _by_idleness.setdefault(self.server_state, OrderedDict())

    # -- connection life -------------------------------------------------------------------
    # uvicorn's signature, narrower than asyncio.BaseProtocol's (it overrides it the same way)
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.idle_order[self] = None
        if len(self.connections) > self.limits.max_connections:
            victim = next((c for c in self.idle_order if c is not self and c.idle), None)
            if victim is None:
                self.refuse(503, "The server has too many open connections; retry shortly.")
                return
            victim.transport.close()
        self.arm(self.limits.head_timeout, self.head_timed_out)

    def connection_lost(self, exc: Exception | None) -> None:
        self.disarm()
        self.idle_order.pop(self, None)
        super().connection_lost(exc)

    @property
    def idle(self) -> bool:
        """No request in progress or queued: waiting for a head, or draining an answered body."""
        cycle = self.cycle
        return not self.refused and (cycle is None or cycle.response_complete) and not self.pipeline

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self in self.idle_order:
            self.idle_order.move_to_end(self)  # idle from now: the last to be closed for a newcomer

    # -- reading -----------------------------------------------------------------------------
    # Head size: the parser keeps a header it has not finished in its own buffers, unreported,
    # so `since_head` counts what arrives in whole reads: past max_head with the head still
    # incomplete, 431. A read that also ends a head or a message is not counted (the count
    # starts again there), so a body is never taken for a head; at most one read of a head can
    # go uncounted. When a head completes and more than max_head bytes arrived since the last
    # one, its exact size is checked. Timers are armed only for a read that leaves a head or a
    # body incomplete: a request that arrives whole costs none.
    def data_received(self, data: bytes) -> None:
        """uvicorn's, with the head limits (431) and the timers."""
        if self.refused:
            return
        self._unset_keepalive_if_required()
        self.since_head += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            if isinstance(exc.__context__, HeadTooLarge):
                self.refuse(431, str(exc.__context__))
            else:
                self.invalid_request()
            return
        except httptools.HttpParserError:
            self.invalid_request()
            return
        except httptools.HttpParserUpgrade:  # Pier serves no upgrades: as uvicorn does
            self._unsupported_upgrade_warning()
        if self.in_head and self.since_head > self.limits.max_head:
            self.refuse(431, self.too_large())
        elif self.timer is not None:
            return
        elif not self.in_head:
            self.timer = self.loop.call_later(self.limits.body_timeout, self.body_timed_out)
        elif self.idle:  # (with an answer in progress, uvicorn's keep-alive timer comes next)
            self.timer = self.loop.call_later(self.limits.head_timeout, self.head_timed_out)

    def invalid_request(self) -> None:
        self.logger.warning("Invalid HTTP request received.")
        self.send_400_response("Invalid HTTP request received.")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.begun = True

    def on_headers_complete(self) -> None:
        max_head = self.limits.max_head
        if len(self.headers) > self.limits.max_headers or (
            self.since_head > max_head
            and len(self.url) + sum(len(n) + len(v) + 4 for n, v in self.headers) > max_head
        ):
            raise HeadTooLarge(self.too_large())
        self.in_head = self.begun = False
        self.since_head = 0
        self.disarm()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self.in_head = True
        self.since_head = 0
        self.disarm()
        super().on_message_complete()

    # -- timeouts and refusals ----------------------------------------------------------------
    def arm(self, seconds: float, then: Any) -> None:
        self.disarm()
        self.timer = self.loop.call_later(seconds, then)

    def disarm(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def head_timed_out(self) -> None:
        self.timer = None
        if self.transport.is_closing():
            return
        if not self.idle:  # a pipelined head waits for the answer before it: check again later
            self.arm(self.limits.head_timeout, self.head_timed_out)
        elif self.begun:  # part of a request came: say why it is dropped
            seconds = f"{self.limits.head_timeout:g}"
            self.refuse(408, f"The request head did not arrive within {seconds} s.")
        else:
            self.transport.close()

    def body_timed_out(self) -> None:
        self.timer = None
        self.transport.close()  # the app's receive() sees the disconnect

    def too_large(self) -> str:
        limits = self.limits
        return (
            f"Request header fields too large: at most {limits.max_head} bytes and "
            f"{limits.max_headers} fields."
        )

    def refuse(self, status: int, message: str) -> None:
        """Answer `status` with a JSON error and close, draining the client's data for a while.
        (With an answer to a pipelined request still being written: just close.)"""
        answering = not self.idle
        self.refused = True
        self.disarm()
        self.idle_order.pop(self, None)
        if answering:
            self.transport.close()
            return
        body = error_body(HTTPProblem(status, message))
        head = [
            STATUS_LINE[status],
            *(name + b": " + value + b"\r\n" for name, value in self.server_state.default_headers),
            b"content-type: application/json\r\n",
            b"content-length: " + str(len(body)).encode() + b"\r\n",
            b"connection: close\r\n",
            b"retry-after: " + RETRY_AFTER + b"\r\n" if status == 503 else b"",
            b"\r\n",
        ]
        self.transport.write(b"".join(head) + body)
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.timer = self.loop.call_later(LINGER, self.transport.close)
