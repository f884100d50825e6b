"""The `pier` command: `serve` here, every other command in commands.py, imported only when
one of them runs or is listed."""

from __future__ import annotations

import os
from typing import Any

import click

from . import settings
from .options import serve_options
from .process.supervisor import Supervisor
from .settings import DRAIN_SECONDS, Settings


class _Commands(click.Group):
    """`serve`, and the commands of pier.commands, looked up there when asked for."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        from .commands import commands

        return sorted({*super().list_commands(ctx), *commands.list_commands(ctx)})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        found = super().get_command(ctx, name)
        if found is None:
            from .commands import commands

            found = commands.get_command(ctx, name)
        return found


@click.group(cls=_Commands)
def main() -> None:
    """Pier: a customer-data ingestion server speaking the Parcelvoy Client API."""


@main.command()
@serve_options
def serve(**values: Any) -> None:
    """Serve the API. Metrics at /metrics, for all the workers together. Every option can be
    given by its environment variable instead (docs/settings.md)."""
    import signal

    # uvicorn re-raises SIGTERM once its graceful shutdown is done: exit 0 then, not -15
    signal.signal(signal.SIGTERM, _exit_cleanly)

    config = Settings(**values)
    workers, writer_process = settings.layout(config, _cores())
    config = config.replace(
        workers=workers,
        writer_process=writer_process,
        max_connections=_room_for_connections(config.max_connections),
    )
    apart = config.deliver and config.deliver_process
    if apart:  # the workers (and the writer process) leave delivery to the delivery process
        config = config.replace(deliver=False)
    os.environ.update(config.to_environment())  # for the workers: uvicorn imports the app
    _metrics_dir(config.workers + writer_process + apart)
    forwarded = config.forwarded_allow_ips.strip()
    writer = _start_writer_process(config)
    delivery = _start_delivery_process(config) if apart else None
    try:
        _serve_http(config, forwarded)
    finally:  # the workers are gone: the writer process commits what it holds and exits
        if delivery is not None:
            delivery.stop()
        if writer is not None:
            writer.stop()


def _serve_http(config: Settings, forwarded: str) -> None:
    import uvicorn

    from .process import logs

    uvicorn.run(
        "pier.app:from_environment",
        factory=True,
        host=config.host,
        port=config.port,
        workers=config.workers,
        loop="uvloop",
        http="pier.api.connections:Connection",  # httptools, with header limits and timeouts
        ws="none",
        timeout_keep_alive=config.keep_alive_timeout,
        # uvicorn trusts X-Forwarded-* from 127.0.0.1 unless told otherwise: trust only these
        proxy_headers=bool(forwarded),
        forwarded_allow_ips=forwarded or None,
        access_log=False,
        log_level=config.log_level,
        log_config=logs.config(config.log_format, logs.LEVELS[config.log_level]),
        timeout_graceful_shutdown=10,
    )


def _start_delivery_process(config: Settings) -> Supervisor:
    """The delivery process: `pier deliver`'s loop, spawned, started again if it dies."""
    supervisor = Supervisor(
        "pier.delivery.engine:main",
        config,
        name="delivery process",
        stop_timeout=config.delivery_drain + 10,
    )
    supervisor.start()
    return supervisor


def _start_writer_process(config: Settings) -> Supervisor | None:
    """With config.writer_process (settings.layout): the writer process (writerproc), started
    and ready before the workers, its socket in a private directory of this run."""
    import atexit
    import shutil
    import socket
    import tempfile

    if not config.writer_process:
        return None
    folder = tempfile.mkdtemp(prefix="pier-writer-")  # mode 0700
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    path = os.path.join(folder, "writer.sock")
    os.environ[settings.WRITER_SOCKET_VARIABLE] = path  # for the workers

    def answers() -> bool:
        with socket.socket(socket.AF_UNIX) as probe:
            try:
                probe.connect(path)
            except OSError:
                return False
            return True

    supervisor = Supervisor(
        "pier.writerproc:main", config, path, name="writer process", stop_timeout=DRAIN_SECONDS + 10
    )
    supervisor.start(ready=answers)
    return supervisor


def _cores() -> int:
    """--workers 0: the cores this process may run on (its affinity: taskset, a cpuset), at
    most what --workers itself allows."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    bound = settings.declared("workers").metadata["maximum"]
    return min(cores, int(bound))


FD_RESERVE = 64  # descriptors a process needs beside its connections (database, logs, ...)


def _room_for_connections(wanted: int) -> int:
    """Raise the open-file limit so `wanted` connections fit (a new connection past the limit
    would fail to be accepted, where the cap answers it); lower the cap if the system cannot."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = wanted + FD_RESERVE
    if soft != resource.RLIM_INFINITY and soft < need:
        soft = need if hard == resource.RLIM_INFINITY else min(need, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    if soft != resource.RLIM_INFINITY and soft < need:
        fits = max(1, soft - FD_RESERVE)
        click.echo(f"--max-connections lowered to {fits}: ulimit -n allows {soft}", err=True)
        return fits
    return wanted


def _metrics_dir(processes: int) -> None:
    """prometheus_client's multiprocess mode, so that any worker's /metrics answers for all:
    every process (workers, the delivery process) writes its values to files in one directory.
    PROMETHEUS_MULTIPROC_DIR names it when set (the files of earlier runs are removed, only
    those). Otherwise, with several processes, a private directory is made for this run (the workers inherit the variable), and
    removed when `pier serve` exits."""
    import atexit
    import shutil
    import tempfile
    from pathlib import Path

    folder = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        for kind in ("counter", "gauge", "histogram", "summary"):
            for stale in Path(folder).glob(f"{kind}_*.db"):
                stale.unlink(missing_ok=True)
    elif processes > 1:  # one process needs nothing: its own registry is the whole server's
        private = tempfile.mkdtemp(prefix="pier-metrics-")  # mode 0700, in $TMPDIR or /tmp
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = private
        atexit.register(shutil.rmtree, private, ignore_errors=True)


def _exit_cleanly(signum: int, frame: object) -> None:
    raise SystemExit(0)
