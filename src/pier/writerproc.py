"""The writer process (`pier serve --writer-process` with several workers): one process
owns the database's writes and runs the group-commit `Writer`; the HTTP workers send it their
commands over a unix socket and await each answer (docs/architecture.md, "Processes").

The protocol, both sides of it:
- a frame is a 4-byte big-endian length and a MessagePack body (msgspec);
- a request is [number, Idempotency-Key and fingerprint or nil, command]; the command is a
  tagged array (`_Identify`...`_Sequence` below), the domain's structs inside it;
- an answer is [number, outcome, message, path]: OK, or the error `Writer.submit` raised,
  raised again in the worker (a DomainError keeps its path and message).
Many requests are in flight on one connection per worker; answers come back as their batches
commit, matched by number. Frames written in one turn of the event loop go out together, in
groups of 8 as they come where the writer process's batches cost little (SQLite: _Frames).

The order of a worker's requests is kept: the writer process reads them in order and queues
each before reading the next. A worker whose connection breaks answers its requests in flight
503 (`StoreUnavailable`: they were not acknowledged) and connects again at its next request,
which waits up to CONNECT_WAIT for it; `pier serve` starts the writer process and starts it
again when it dies (process.supervisor)."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import itertools
import logging
import os
import signal
import struct
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import msgspec

from .domain.commands import (
    Alias,
    Command,
    EventIn,
    Identify,
    RegisterDevice,
    RemoveDevice,
    Sequence,
    Single,
    TrackEvents,
    Traits,
)
from .domain.errors import DomainError, KeyReused, NotFound
from .lists import ListJobs
from .process.parent import when_parent_gone
from .settings import DRAIN_SECONDS, Settings
from .store.base import ListRow, Store, StoreUnavailable, lease_holder
from .writer import Overloaded, RequestKey, Writer

log = logging.getLogger("pier.writerproc")

HEADER = struct.Struct("!I")
CONNECT_WAIT = 5.0  # seconds a request waits for the writer process to (re)start; then 503


# -- the commands on the wire ----------------------------------------------------------------


class _Event(msgspec.Struct, array_like=True):
    """An EventIn, field for field (tests/test_writerproc.py checks), its data as bytes: a
    msgspec.Raw holds JSON, which MessagePack cannot carry as it is."""

    anonymous_id: str | None
    external_id: str | None
    name: str
    data: bytes | dict[str, Any]
    traits: Traits | None
    message_id: str | None
    timestamp: int | None


class _Identify(msgspec.Struct, array_like=True, tag=0):
    cmd: Identify


class _Alias(msgspec.Struct, array_like=True, tag=1):
    cmd: Alias


class _Device(msgspec.Struct, array_like=True, tag=2):
    cmd: RegisterDevice


class _Remove(msgspec.Struct, array_like=True, tag=5):
    cmd: RemoveDevice


class _Track(msgspec.Struct, array_like=True, tag=3):
    project_id: int
    events: list[_Event]


_Single = _Identify | _Alias | _Device | _Remove | _Track


class _Sequence(msgspec.Struct, array_like=True, tag=4):
    project_id: int
    commands: list[_Single]
    paths: list[str]
    join_list: int | None


class _Backfill(msgspec.Struct, array_like=True, tag=6):
    """No command: a list for the writer process's list jobs to compute, as the holder of the
    lease the worker created or restarted it with; with no holder, to stop computing it
    (ListJobs.take)."""

    project_id: int
    list_id: int
    holder: str | None


class _Request(msgspec.Struct, array_like=True):
    number: int
    key: tuple[str, str] | None
    cmd: _Single | _Sequence | _Backfill


_WRAP: dict[type, Callable[[Any], Any]] = {
    Identify: _Identify,
    Alias: _Alias,
    RegisterDevice: _Device,
    RemoveDevice: _Remove,
}


def _wire(cmd: Command) -> _Single | _Sequence:
    if isinstance(cmd, TrackEvents):
        return _Track(
            cmd.project_id,
            [
                _Event(
                    e.anonymous_id,
                    e.external_id,
                    e.name,
                    bytes(e.data) if isinstance(e.data, msgspec.Raw) else e.data,
                    e.traits,
                    e.message_id,
                    e.timestamp,
                )
                for e in cmd.events
            ],
        )
    if isinstance(cmd, Sequence):
        singles: list[_Single] = [_wire(c) for c in cmd.commands]  # type: ignore[misc]
        return _Sequence(cmd.project_id, singles, cmd.paths, cmd.join_list)
    return _WRAP[type(cmd)](cmd)


def _command(w: _Single | _Sequence) -> Command:
    if isinstance(w, _Track):
        return TrackEvents(
            project_id=w.project_id,
            events=[
                EventIn(
                    e.anonymous_id,
                    e.external_id,
                    e.name,
                    msgspec.Raw(e.data) if isinstance(e.data, bytes) else e.data,
                    e.traits,
                    e.message_id,
                    e.timestamp,
                )
                for e in w.events
            ],
        )
    if isinstance(w, _Sequence):
        singles: list[Single] = [_command(c) for c in w.commands]  # type: ignore[misc]
        return Sequence(
            project_id=w.project_id, commands=singles, paths=w.paths, join_list=w.join_list
        )
    return w.cmd


_encoder = msgspec.msgpack.Encoder()
_requests = msgspec.msgpack.Decoder(_Request)
_answers = msgspec.msgpack.Decoder(tuple[int, int, str, str])


def encode_request(number: int, cmd: Command, key: RequestKey | None) -> bytes:
    return _encoder.encode(_Request(number, key, _wire(cmd)))


def decode_request(frame: bytes) -> tuple[int, Command | _Backfill, RequestKey | None]:
    """A request: its number, its command (or the list it asks computed), its key."""
    r = _requests.decode(frame)
    return r.number, r.cmd if isinstance(r.cmd, _Backfill) else _command(r.cmd), r.key


# outcomes of an answer
OK, INVALID, KEY_REUSED, OVERLOADED, UNAVAILABLE, BUG, NOT_FOUND = range(7)


def encode_answer(number: int, error: BaseException | None) -> bytes:
    if error is None:
        return _encoder.encode((number, OK, "", ""))
    if isinstance(error, DomainError):
        outcome = NOT_FOUND if isinstance(error, NotFound) else INVALID
        return _encoder.encode((number, outcome, error.message, error.path))
    for outcome, kind in ((KEY_REUSED, KeyReused), (OVERLOADED, Overloaded)):
        if isinstance(error, kind):
            return _encoder.encode((number, outcome, str(error), ""))
    if isinstance(error, StoreUnavailable):
        return _encoder.encode((number, UNAVAILABLE, str(error), ""))
    return _encoder.encode((number, BUG, f"{type(error).__name__}: {error}", ""))


class WriterProcessFailed(RuntimeError):
    """A bug met in the writer process (logged there with its traceback): a 500."""


def answer_error(outcome: int, message: str, path: str) -> Exception | None:
    """The exception an answer stands for, to raise in the worker; None for OK."""
    if outcome == OK:
        return None
    if outcome == INVALID:
        return DomainError(message, path)
    if outcome == NOT_FOUND:
        return NotFound(message, path)
    if outcome == KEY_REUSED:
        return KeyReused(message)
    if outcome == OVERLOADED:
        return Overloaded(message)
    if outcome == UNAVAILABLE:
        return StoreUnavailable(message)
    return WriterProcessFailed(message)


# -- frames ----------------------------------------------------------------------------------


FLUSH_FRAMES = 8  # frames queued that are written at once, without waiting for the turn's end


def group_of(store: Store) -> int | None:
    """The frames written at once before the turn's end, for a writer on this kind of store:
    FLUSH_FRAMES, or None (only at the turn's end) where each batch costs round trips."""
    return None if store.remote else FLUSH_FRAMES


class _Frames:
    """Frames out on one stream: those of one turn of the event loop written together, in
    groups of `group` at most (see group_of). Written only at the turn's end, a worker's
    requests reached a SQLite writer process all at once, after the worker had parsed every
    request of the turn, and a batch's answers reached the worker all at once: each side
    waited for the other in turn. On PostgreSQL the early groups measured slower: the writer
    started a batch for the first few, and the rest waited for its round trips
    (docs/performance.md, "The thirteenth session")."""

    def __init__(self, stream: asyncio.StreamWriter, group: int | None = None) -> None:
        self.stream = stream
        self.queued: list[bytes] = []
        self.parts = 2 * group if group else 0  # (two parts a frame)

    def send(self, body: bytes) -> None:
        if not self.queued:
            asyncio.get_running_loop().call_soon(self._flush)
        self.queued += (HEADER.pack(len(body)), body)
        if len(self.queued) == self.parts:
            self._write()

    def _flush(self) -> None:
        if self.queued:
            self._write()

    def _write(self) -> None:
        queued, self.queued = self.queued, []
        if not self.stream.is_closing():  # the other side went away: nobody to answer
            self.stream.write(b"".join(queued))  # (one buffer: writelines costs one a part)


CHUNK = 1 << 16  # bytes read at a time: the frames that came together are taken together


async def read_frames(reader: asyncio.StreamReader) -> AsyncIterator[list[bytes]]:
    """The frames of the stream, in order, those that came together in one list (a wait and
    a wake-up per chunk rather than two a frame), until the other side closes it. Raises
    IncompleteReadError when it closes in the middle of a frame."""
    rest = b""
    while True:
        chunk = await reader.read(CHUNK)
        if not chunk:
            if rest:
                raise asyncio.IncompleteReadError(rest, None)
            return
        data = rest + chunk if rest else chunk
        frames, at, end = [], 0, len(data)
        while end - at >= HEADER.size:
            (size,) = HEADER.unpack_from(data, at)
            if end - at - HEADER.size < size:
                break
            at += HEADER.size
            frames.append(data[at : at + size])
            at += size
        rest = data[at:]
        if frames:
            yield frames


# -- the worker's side -----------------------------------------------------------------------


class WriterClient:
    """What an HTTP worker submits its commands to when a writer process owns the writes:
    `submit` as `Writer.submit`, over one connection to the writer process."""

    pending = 0  # the queue is the writer process's: it sets /metrics' gauge itself (livesum)

    def __init__(self, path: str, group: int | None = None) -> None:
        """`group`: see _Frames (group_of the store the writer process writes to)."""
        self.path = path
        self.group = group
        self._numbers = itertools.count()
        self._connection: _Connection | None = None
        self._attempt: asyncio.Future[_Connection] | None = None

    async def submit(self, cmd: Command, request_key: RequestKey | None = None) -> None:
        """Returns once `cmd` is committed; raises what Writer.submit raises there, and
        StoreUnavailable when the writer process cannot be reached or goes away meanwhile."""
        await self._ask(lambda number: encode_request(number, cmd, request_key))

    async def backfill(self, project_id: int, list_id: int, holder: str | None) -> None:
        """Have the writer process compute a list (ListJobs.take); returns once it took it."""
        asked = _Backfill(project_id, list_id, holder)
        await self._ask(lambda number: _encoder.encode(_Request(number, None, asked)))

    async def _ask(self, request: Callable[[int], bytes]) -> None:
        """Send the request numbered as `request` encodes it; raise the error it met."""
        connection = self._connection
        if connection is None or connection.broken:
            connection = await self._connect()
        number = next(self._numbers)
        error = await connection.ask(number, request(number))
        if error is not None:
            raise error

    async def _connect(self) -> _Connection:
        """The requests that come while there is no connection wait for one attempt together
        (the writer process may be restarting)."""
        if self._attempt is None or self._attempt.done():
            self._attempt = asyncio.ensure_future(self._open())
        return await asyncio.shield(self._attempt)

    async def _open(self) -> _Connection:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + CONNECT_WAIT
        while True:
            try:
                reader, stream = await asyncio.open_unix_connection(self.path)
                break
            except OSError as exc:
                if loop.time() >= deadline:
                    raise StoreUnavailable(f"the writer process is not running: {exc}") from exc
                await asyncio.sleep(0.05)
        self._connection = _Connection(reader, stream, self.group)
        return self._connection

    async def close(self) -> None:
        if self._attempt is not None:
            self._attempt.cancel()
        if self._connection is not None:
            await self._connection.close()


class ListJobsClient:
    """A worker's lists' jobs (lists.Backfills) when a writer process owns the writes: the
    writer process computes the lists, so that their ends are its own transactions and its
    lists' cache stays on (on SQLite and PostgreSQL alike) and starts with their tallies. A
    list is created with this worker's lease, and computed under it there."""

    def __init__(self, client: WriterClient) -> None:
        self.client = client
        self.holder = lease_holder()
        self.sending: set[asyncio.Task[None]] = set()

    def schedule(self, row: ListRow) -> None:
        self._send(row.project_id, row.id, self.holder)

    def cancel(self, list_id: int) -> None:
        self._send(0, list_id, None)

    def _send(self, project_id: int, list_id: int, holder: str | None) -> None:
        # (not awaited by the request, as ListJobs.schedule is not: a list the writer process
        # could not be told of stays loading, and its sweeper takes it up once the lease ends)
        task = asyncio.create_task(self._tell(project_id, list_id, holder))
        self.sending.add(task)
        task.add_done_callback(self.sending.discard)

    async def _tell(self, project_id: int, list_id: int, holder: str | None) -> None:
        try:
            await self.client.backfill(project_id, list_id, holder)
        except Exception:
            log.exception("the writer process could not be asked to compute list %s", list_id)

    async def stop(self) -> None:
        await asyncio.gather(*self.sending, return_exceptions=True)


class _Connection:
    """One connection of a worker to the writer process, and the requests in flight on it."""

    def __init__(
        self, reader: asyncio.StreamReader, stream: asyncio.StreamWriter, group: int | None
    ) -> None:
        self.frames = _Frames(stream, group)
        self.waiting: dict[int, asyncio.Future[Exception | None]] = {}
        self.broken = False
        # a context of its own: not the request's that happened to connect (its log fields)
        self.reading = asyncio.create_task(self._read(reader), context=contextvars.Context())

    async def ask(self, number: int, request: bytes) -> Exception | None:
        """The answer to `request`: None (committed) or the error it met."""
        if self.broken:
            return StoreUnavailable("the writer process went away")
        answer = asyncio.get_running_loop().create_future()
        self.waiting[number] = answer
        self.frames.send(request)
        return await answer

    async def _read(self, reader: asyncio.StreamReader) -> None:
        try:
            async for frames in read_frames(reader):
                for frame in frames:
                    number, outcome, message, path = _answers.decode(frame)
                    answer = self.waiting.pop(number, None)
                    if answer is not None and not answer.done():
                        answer.set_result(answer_error(outcome, message, path))
            raise ConnectionError("closed by the writer process")
        except (asyncio.IncompleteReadError, ConnectionError):
            log.warning("the connection to the writer process broke; reconnecting")
        finally:
            self._break()

    def _break(self) -> None:
        """The requests in flight were not acknowledged: each is answered 503."""
        self.broken = True
        self.frames.stream.close()
        for answer in self.waiting.values():
            if not answer.done():
                answer.set_result(StoreUnavailable("the writer process went away"))
        self.waiting.clear()

    async def close(self) -> None:
        self.reading.cancel()
        await asyncio.gather(self.reading, return_exceptions=True)


# -- the writer process's side ---------------------------------------------------------------


class _Answer:
    """A request's outcome (writer.Outcome), sent to its worker as soon as the writer sets it:
    no task and no future a request."""

    __slots__ = ("frames", "number", "sent")

    def __init__(self, frames: _Frames, number: int) -> None:
        self.frames, self.number, self.sent = frames, number, False

    def done(self) -> bool:
        return self.sent

    def set_result(self, result: None, /) -> None:
        self._send(None)

    def set_exception(self, exception: BaseException, /) -> None:
        self._send(exception)  # (a bug: the writer logged it; the worker answers it 500)

    def _send(self, error: BaseException | None) -> None:
        if not self.sent:
            self.sent = True
            self.frames.send(encode_answer(self.number, error))


async def serve(
    writer: Writer, path: str, stop: asyncio.Event | None = None, jobs: ListJobs | None = None
) -> None:
    """Take the workers' commands on the unix socket at `path` and hand them to `writer`, and
    the lists they ask computed to `jobs`.
    In the writer process (`stop` not given): until SIGTERM, once no worker is connected any
    more (at most DRAIN_SECONDS later), or until the process that started this one is gone;
    Ctrl-C is left to that process, which stops the workers first, then this one."""
    loop = asyncio.get_running_loop()
    gone = asyncio.Event()
    if stop is None:
        stop = asyncio.Event()
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        when_parent_gone(gone.set)
    connections: set[asyncio.Task[None]] = set()

    async def connection(reader: asyncio.StreamReader, stream: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        connections.add(task)
        frames = _Frames(stream, group_of(writer.store))
        try:
            async for requests in read_frames(reader):
                for request in requests:  # queued by the writer in this order
                    number, cmd, key = decode_request(request)
                    answer = _Answer(frames, number)
                    try:
                        if isinstance(cmd, _Backfill):
                            if jobs is None:
                                raise StoreUnavailable("no list jobs in this process")
                            jobs.take(cmd.project_id, cmd.list_id, cmd.holder)
                            answer.set_result(None)
                        else:
                            writer.put(cmd, key, answer)
                    except Exception as exc:  # Overloaded, or shutting down
                        answer.set_exception(exc)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the worker stopped or died: what it sent is committed all the same
        finally:
            connections.discard(task)
            stream.close()

    if os.path.exists(path):
        os.unlink(path)  # left by a writer process that was killed
    server = await asyncio.start_unix_server(connection, path)
    log.info("writer process %d: serving the workers on %s", os.getpid(), path)
    waits = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(gone.wait())]
    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    for w in waits:
        w.cancel()
    deadline = time.monotonic() + DRAIN_SECONDS
    while connections and not gone.is_set() and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    server.close()


# -- the process: what it runs ---------------------------------------------------------------


@contextlib.asynccontextmanager
async def write_side(store: Store, settings: Settings) -> AsyncIterator[tuple[Writer, ListJobs]]:
    """What the one process that writes runs (each worker, or the writer process): the
    group-commit writer, the lists' jobs (their backfills and the sweeper) and, with
    `settings.deliver`, delivery (pier.delivery)."""
    writer = Writer(store, max_pending=settings.max_pending, batch_work=settings.batch_work)
    writer.start()
    jobs = ListJobs(store, settings.list_sweep, settings.list_chunk)
    await jobs.start()
    deliverer = None
    if settings.deliver:  # (imported only then: the writer process of pier serve leaves it
        from .delivery.engine import Deliverer  # to its delivery process)
        from .delivery.pacing import Pacing

        deliverer = Deliverer(store, Pacing.of(settings))
        deliverer.start()
    try:
        yield writer, jobs
    finally:
        await jobs.stop()
        if deliverer is not None:
            await deliverer.stop()
        await writer.stop()


def main(settings: Settings, path: str) -> None:
    """The writer process's entry point (spawned by `pier serve`): `write_side` on the store,
    serving the workers' commands on the unix socket at `path` until told to stop, logging as
    the workers do. Spawned, it imports this module and what it runs, not the HTTP app
    (about 16 MB less: docs/performance.md)."""
    import logging.config

    import uvloop

    from .process import logs
    from .process.gctune import periodic_collection
    from .store import opened

    logging.config.dictConfig(logs.config(settings.log_format, logs.LEVELS[settings.log_level]))

    async def run() -> None:
        async with (
            # its loop does nothing but the writes: SQLite waits on it (SqliteStore on_loop)
            opened(settings.database_url, settings.durability, on_loop=True) as store,
            write_side(store, settings) as (writer, jobs),
            periodic_collection(),
        ):
            await serve(writer, path, jobs=jobs)

    uvloop.run(run())
