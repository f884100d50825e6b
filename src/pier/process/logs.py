"""Logging for `pier serve`: one JSON object per line (or plain text), each line of a request
carrying its request id. Nothing here ever logs a body, a header or a key: the access line
(api/edge.py) has the method, the path without its query string, the status and the time."""

from __future__ import annotations

import contextvars
import logging
import time
from typing import Any

import msgspec

# Set per request by api/edge.py; each request runs in a task of its own, so lines logged
# while it runs (by Pier, Starlette or uvicorn) carry its id.
request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "pier_request_id", default=None
)

ACCESS_FIELDS = ("method", "path", "status", "duration_ms")
FORMATS = ("json", "text")
_encode = msgspec.json.Encoder().encode


_second: tuple[int, str] = (-1, "")  # the last second formatted, and its text


def _time(created: float) -> str:
    """ISO-8601 UTC with milliseconds; the date and time of day are formatted once a second."""
    global _second
    seconds = int(created)
    cached = _second
    if cached[0] != seconds:
        cached = _second = (seconds, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)))
    return f"{cached[1]}.{int((created - seconds) * 1000):03d}Z"


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    out: dict[str, Any] = {}
    rid = getattr(record, "request_id", None) or request_id.get()
    if rid is not None:
        out["request_id"] = rid
    for name in ACCESS_FIELDS:
        value = getattr(record, name, None)
        if value is not None:
            out[name] = value
    return out


class JSONFormatter(logging.Formatter):
    """time, level, logger, message, then request_id and the access fields when present."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": _time(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            **_fields(record),
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return _encode(line).decode()


# Control characters (CR, LF, ESC, the C1 set) and Unicode's line and paragraph separators, as
# escapes: a request path (percent-decoded: %0D%0A) must not start a forged line or move a
# terminal's cursor.
_ESCAPES = {
    c: f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}"
    for c in (*range(0x20), *range(0x7F, 0xA0), 0x2028, 0x2029)
}


class TextFormatter(logging.Formatter):
    """`time LEVEL logger: message key=value ...`, for reading in a terminal; one line a record
    (a traceback follows on lines of its own)."""

    def format(self, record: logging.LogRecord) -> str:
        extra = " ".join(f"{k}={v}" for k, v in _fields(record).items())
        line = f"{_time(record.created)} {record.levelname} {record.name}: {record.getMessage()}"
        if extra:
            line = f"{line} {extra}"
        line = line.translate(_ESCAPES)
        if record.exc_info:
            line = f"{line}\n{self.formatException(record.exc_info)}"
        return line


LEVELS = {"critical": 50, "error": 40, "warning": 30, "info": 20, "debug": 10, "trace": 5}
# (uvicorn's names and numbers: its TRACE is 5; settings.log_level takes these names)


def config(log_format: str, level: int) -> dict[str, Any]:
    """A logging.config.dictConfig for `pier serve` (uvicorn applies it in every worker).
    Pier's and uvicorn's loggers log at `level`; other libraries at WARNING and above only, so
    that no third-party debug output (which may show request data) reaches the log."""
    formatter = JSONFormatter if log_format == "json" else TextFormatter
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"pier": {"()": f"{__name__}.{formatter.__name__}"}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "pier",
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"handlers": ["stderr"], "level": max(level, logging.WARNING)},
        "loggers": {
            "pier": {"level": level, "handlers": ["stderr"], "propagate": False},
            "uvicorn": {"level": level, "handlers": ["stderr"], "propagate": False},
            **{f"uvicorn.{name}": {"level": level} for name in ("error", "access", "asgi")},
        },
    }
