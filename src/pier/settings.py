"""Every setting of `pier serve`, declared once: its name, type, default, environment variable
and help, as a field of `Settings` (the way Datasette declares its settings). `pier serve`'s
options are generated from these fields (cli.py), docs/settings.md lists them
(tests/test_settings.py checks it does, exactly), and the app and its parts receive the one
`Settings` object (`create_app(settings)`, `Writer(..., max_pending=...)`): nothing reads the
environment at import time.

`pier serve` runs the app in worker processes that uvicorn starts and that import the app by
its name: the settings cross into them as one environment variable, SETTINGS_VARIABLE, which
`pier.app:from_environment` reads (`from_environment` here)."""

from __future__ import annotations

import dataclasses
import os
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

import msgspec

SETTINGS_VARIABLE = "PIER_SETTINGS"  # the settings as JSON, from `pier serve` to its workers
# the writer process's socket (`--writer-process`), from `pier serve` to its workers
WRITER_SOCKET_VARIABLE = "PIER_WRITER_SOCKET"
# after SIGTERM, how long the writer process waits for the workers to finish (uvicorn gives 10)
DRAIN_SECONDS = 15.0


def setting(
    default: Any,
    help: str,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    above: float | None = None,
) -> Any:
    """A field of Settings. `minimum`/`maximum`: bounds, inclusive; `above`: a bound excluded.
    Its environment variable is PIER_ and its name in capitals (`environment_variable`)."""
    return field(
        default=default,
        metadata={"help": help, "minimum": minimum, "maximum": maximum, "above": above},
    )


@dataclass(frozen=True)
class Settings:
    # -- where and how to serve ------------------------------------------------------------
    database_url: str = setting(
        "sqlite:///pier-data/pier.db", "sqlite:///PATH or postgresql://USER:PASS@HOST/DB."
    )
    host: str = setting("127.0.0.1", "The address to listen on.")
    port: int = setting(8000, "The port to listen on.", minimum=0, maximum=65535)
    workers: int = setting(
        0,
        "HTTP worker processes. 0: one per core this process may run on, less one for the "
        "writer process when it runs (--writer-process on two cores or more).",
        minimum=0,
        maximum=64,
    )
    writer_process: bool = setting(
        True,
        "On several cores (--workers 0) or with several workers: one more process owns the "
        "writes (the writer, the lists' jobs) and the workers send it their commands over a "
        "unix socket. --no-writer-process: each worker writes itself (docs/deployment.md).",
    )
    durability: Literal["full", "normal"] = setting(
        "full", "full: fsync every commit. normal (SQLite): a power loss may lose the last commits."
    )
    forwarded_allow_ips: str = setting(
        "", "Proxies (IPs, networks, or *) whose X-Forwarded-For/-Proto are trusted. Default: none."
    )
    # -- logs --------------------------------------------------------------------------------
    log_level: Literal["critical", "error", "warning", "info", "debug", "trace"] = setting(
        "info", "The least severe log lines written."
    )
    log_format: Literal["json", "text"] = setting(
        "json", "json: one JSON object per line. Bodies and keys are never logged."
    )
    access_log: Literal["errors", "all"] = setting(
        "errors", "errors: a line for each 4xx/5xx answer. all: a line for every request."
    )
    # -- connections -------------------------------------------------------------------------
    header_timeout: float = setting(
        10.0, "Seconds a connection has to send a whole request head; then 408 and closed.", above=0
    )
    body_timeout: float = setting(
        30.0, "Seconds a request has to send its whole body after its head; then closed.", above=0
    )
    keep_alive_timeout: int = setting(
        5, "Seconds an idle keep-alive connection is kept between requests.", minimum=1
    )
    max_connections: int = setting(
        1000,
        "Open connections per process; past it the longest idle one is closed (503 if none).",
        minimum=1,
    )
    # -- request limits ----------------------------------------------------------------------
    max_head: int = setting(
        32 * 1024, "Bytes of request line and headers; past it 431 and closed.", minimum=1024
    )
    max_headers: int = setting(
        100, "Header fields of a request; past it 431 and closed.", minimum=1
    )
    max_body: int = setting(
        1024 * 1024, "Bytes of a request body (after gzip decompression); past it 413.", minimum=1
    )
    # -- the portal --------------------------------------------------------------------------
    login_failures: int = setting(
        10,
        "Portal logins per client address, and per account, in --login-window; then 429. "
        "With several workers each allows its share (rounded up).",
        minimum=1,
    )
    login_window: float = setting(
        900.0, "Seconds over which portal logins are counted for --login-failures.", above=0
    )
    # -- the writer --------------------------------------------------------------------------
    batch_work: int = setting(
        5000,
        "Work one transaction takes beyond its first request: an event or a command is 1, "
        "a possible merge 40 (docs/performance.md).",
        minimum=1,
    )
    max_pending: int = setting(
        200_000,
        "Items (events, commands) queued for the writer of a process; past it new requests "
        "get 503 with Retry-After.",
        minimum=1,
    )

    # -- delivery (docs/destinations.md) ----------------------------------------------------
    deliver: bool = setting(
        True, "Deliver destinations (--no-deliver: leave them to `pier deliver` run elsewhere)."
    )
    deliver_process: bool = setting(
        True,
        "pier serve delivers from one process of its own, which it starts and restarts, so "
        "that delivering takes no CPU from the processes that ingest (docs/destinations.md). "
        "--no-deliver-process: in the serving process itself.",
    )
    delivery_nice: int = setting(
        5,
        "How much lower the CPU priority of the delivery process (and of `pier deliver`) is "
        "than the workers' and the writer process's (added to its nice value, 0 - 19): when "
        "the CPU is short, delivery waits and ingestion does not (docs/destinations.md).",
        minimum=0,
        maximum=19,
    )
    secret_key: str = setting(
        "",
        "Seals destinations' keys at rest (Fernet); the same on every process. Default: stored "
        "as given.",
    )
    delivery_backoff_base: float = setting(
        1.0, "Seconds the first retry of a batch waits at most (full jitter), doubling.", above=0
    )
    delivery_backoff_cap: float = setting(
        300.0, "Seconds a retry of a batch waits at most.", above=0
    )
    delivery_timeout: float = setting(
        10.0, "Seconds one call to a destination has, from connecting to its answer.", above=0
    )
    delivery_answer_limit: int = setting(
        4096, "Bytes of a destination's answer body read (kept with a dead letter).", minimum=1
    )
    delivery_lease_ttl: float = setting(
        15.0,
        "Seconds a destination's lease lasts unrenewed; then another process takes it.",
        above=0,
    )
    delivery_scan_every: float = setting(
        5.0, "Seconds between looks for destinations no process delivers.", above=0
    )
    delivery_poll_every: float = setting(
        0.05,
        "Seconds between reads of the feeds' heads for new items; also what a destination"
        " that has caught up waits before its next batch, which gathers what came meanwhile.",
        above=0,
    )
    delivery_drain: float = setting(
        5.0,
        "Seconds a batch in flight gets at shutdown; then it is abandoned (sent again).",
        above=0,
    )

    # -- lists -------------------------------------------------------------------------------
    list_sweep: float = setting(
        5.0,
        "Seconds between two looks for list memberships that time alone moves (a rolling "
        "window, a relative date; docs/lists.md).",
        above=0,
        maximum=60,
    )
    list_chunk: int = setting(
        5000,
        "Users a list's backfill computes in one query; its progress is noted after each "
        "(docs/lists.md).",
        minimum=1,
    )

    def to_environment(self) -> dict[str, str]:
        """The settings for worker processes: one variable, read by `from_environment`."""
        return {SETTINGS_VARIABLE: msgspec.json.encode(self).decode()}

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)


def table() -> tuple[dataclasses.Field[Any], ...]:
    """The settings, in their order of declaration."""
    return dataclasses.fields(Settings)


def declared(name: str) -> dataclasses.Field[Any]:
    """The declaration of one setting: its default, and its help and bounds (`metadata`)."""
    return next(f for f in table() if f.name == name)


def environment_variable(name: str) -> str:
    return f"PIER_{name.upper()}"


def option(name: str) -> str:
    return "--" + name.replace("_", "-")


def choices(name: str) -> tuple[str, ...] | None:
    """The values a Literal-typed setting allows, else None."""
    hint = typing.get_type_hints(Settings)[name]
    return typing.get_args(hint) if typing.get_origin(hint) is Literal else None


def value_type(name: str) -> type:
    hint = typing.get_type_hints(Settings)[name]
    return str if typing.get_origin(hint) is Literal else hint


def markdown() -> str:
    """The table of docs/settings.md (`python -m pier.settings` prints it)."""
    lines = [
        "| option | environment variable | default | allowed | help |",
        "|---|---|---|---|---|",
    ]
    for declared in table():
        meta, name = declared.metadata, declared.name
        allowed = " \\| ".join(choices(name) or ())
        if meta["above"] is not None:
            allowed = f"> {meta['above']}"
            if meta["maximum"] is not None:
                allowed += f", <= {meta['maximum']}"
        elif meta["minimum"] is not None or meta["maximum"] is not None:
            low, high = meta["minimum"], meta["maximum"]
            allowed = f"{low} to {high}" if high is not None else f">= {low}"
        default = f"`{declared.default}`" if declared.default != "" else "(none)"
        flag = option(name) + (f"/--no-{option(name)[2:]}" if value_type(name) is bool else "")
        lines.append(
            f"| `{flag}` | `{environment_variable(name)}` | {default} | {allowed} | {meta['help']} |"
        )
    return "\n".join(lines) + "\n"


def layout(settings: Settings, cores: int) -> tuple[int, bool]:
    """The HTTP workers `pier serve` runs on `cores` cores, and whether a writer process runs
    beside them. --workers 0: a process per core; with --writer-process the writer process
    takes one core and the workers the others (on two cores one worker: two workers beside
    the writer process measured slower, docs/performance.md, "The thirteenth session").
    --workers N: N workers, and the writer process when N > 1 (--workers 1 is one process)."""
    if settings.workers:
        return settings.workers, settings.writer_process and settings.workers > 1
    if settings.writer_process and cores > 1:
        return cores - 1, True
    return cores, False


def from_environment() -> Settings:
    """The settings `pier serve` passed to this process, else the defaults."""
    raw = os.environ.get(SETTINGS_VARIABLE)
    return Settings() if raw is None else msgspec.json.decode(raw, type=Settings)


def writer_socket() -> str | None:
    """The path of the writer process's socket, when `pier serve` started one."""
    return os.environ.get(WRITER_SOCKET_VARIABLE)


if __name__ == "__main__":
    print(markdown(), end="")
