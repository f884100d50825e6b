"""The writer process's protocol (pier/writerproc.py): every command crosses the socket whole,
every answer comes back as the error it stands for, and many requests in flight on one
connection are answered each with its own outcome, by a real Writer on a real SQLite file."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import typing
from pathlib import Path

import msgspec
import pytest
from msgspec import UNSET

from pier import writerproc
from pier.domain.commands import (
    Alias,
    EventIn,
    Identify,
    RegisterDevice,
    RemoveDevice,
    Sequence,
    Single,
    TrackEvents,
    Traits,
)
from pier.domain.errors import DomainError, KeyReused, NotFound
from pier.store import StoreUnavailable, make_store
from pier.writer import Overloaded, Writer
from pier.writerproc import WriterClient, WriterProcessFailed

EVENTS = TrackEvents(
    project_id=7,
    events=[
        EventIn("a-1", None, "viewed", msgspec.Raw(b'{"n": 1, "s": "\\u00e9"}')),
        EventIn(
            None,
            "u-1",
            "bought",
            {"price": 2.5, "tags": ["x"], "deep": {"big": 2**63 - 1}},
            Traits(email=None, timezone="Europe/Paris", data={"plan": "pro"}),
            "m-1",
            1_700_000_000_000,
        ),
    ],
)
IDENTIFY = Identify(
    project_id=7,
    anonymous_id="a-1",
    external_id="u-1",
    traits=Traits(email="ann@example.com", phone=None, data={"k": [1, None, True]}),
)
ALIAS = Alias(project_id=7, anonymous_id="a-2", external_id="u-2")
DEVICE = RegisterDevice(
    project_id=7,
    anonymous_id=None,
    external_id="u-1",
    device_id="d-1",
    fields={"os": "iOS", "os_version": None},
    extra={"push": {"on": True}},
)
COMMANDS = [
    EVENTS,
    IDENTIFY,
    ALIAS,
    DEVICE,
    msgspec.structs.replace(DEVICE, token="t-1"),
    Sequence(project_id=7, commands=[IDENTIFY, EVENTS, ALIAS, DEVICE]),
    Sequence(
        project_id=7,
        commands=[msgspec.structs.replace(IDENTIFY, created_at=1_600_000_000_000)],  # a CSV's
        paths=["/batch/0"],
        join_list=3,
    ),
    RemoveDevice(project_id=7, device_id="d-1"),
]


def test_every_kind_of_command_is_among_those_sent() -> None:
    """A command added to the domain must cross the socket too."""
    assert set(typing.get_args(Single)) | {Sequence} == {type(c) for c in COMMANDS}


@pytest.mark.parametrize("cmd", COMMANDS, ids=lambda c: type(c).__name__)
def test_every_command_crosses_the_socket_whole(cmd: object) -> None:
    key = ("idem-1", "f" * 64)
    for request_key in (key, None):
        frame = writerproc.encode_request(41, cmd, request_key)  # type: ignore[arg-type]
        assert writerproc.decode_request(frame) == (41, cmd, request_key)


def test_the_wire_forms_have_the_fields_of_the_domains_structs() -> None:
    """A field added to EventIn or Sequence must be added to its wire form too."""

    def names(struct: type) -> list[str]:
        return [f.name for f in msgspec.structs.fields(struct)]

    assert names(writerproc._Event) == names(EventIn)
    assert names(writerproc._Sequence) == names(Sequence)
    assert names(writerproc._Track) == names(TrackEvents)


def test_an_event_keeps_the_json_its_client_sent_byte_for_byte() -> None:
    raw = msgspec.Raw(b'{"b":1,  "a" : [1.50]}')
    cmd = TrackEvents(project_id=1, events=[EventIn(None, "u", "n", raw)])
    _, back, _ = writerproc.decode_request(writerproc.encode_request(0, cmd, None))
    assert isinstance(back, TrackEvents)
    data = back.events[0].data
    assert isinstance(data, msgspec.Raw) and bytes(data) == bytes(raw)


@pytest.mark.parametrize(
    "error",
    [
        None,
        DomainError("anonymous_id a is already aliased", "/batch/2/anonymousId"),
        NotFound("No device with device_id 'd' in this project."),
        KeyReused("idem-1"),
        Overloaded("the writer is behind"),
        StoreUnavailable("disk full"),
        RuntimeError("a bug"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_every_answer_comes_back_as_the_error_it_stands_for(error: Exception | None) -> None:
    number, outcome, message, path = msgspec.msgpack.decode(writerproc.encode_answer(12, error))
    assert number == 12
    back = writerproc.answer_error(outcome, message, path)
    if error is None:
        assert back is None
    elif isinstance(error, DomainError):
        assert type(back) is type(error)  # NotFound stays a 404, not a 422
        assert (back.message, back.path) == (error.message, error.path)
    elif type(error) in (KeyReused, Overloaded, StoreUnavailable):
        assert type(back) is type(error) and str(back) == str(error)
    else:  # a bug in the writer process: the worker answers 500
        assert isinstance(back, WriterProcessFailed) and "a bug" in str(back)


def test_requests_in_flight_on_one_connection_are_each_answered_and_committed(
    tmp_path: Path,
) -> None:
    """60 requests pipelined on one connection: each gets its own answer (a refused alias its
    DomainError, a reused key its KeyReused), all are committed in a few batches, in order."""

    async def main() -> None:
        store = make_store(f"sqlite:///{tmp_path}/pier.db")
        await store.open()
        await store.migrate()
        project = await store.create_project("p", 0)
        writer = Writer(store)
        writer.start()
        path = str(tmp_path / "w.sock")
        stop = asyncio.Event()
        serving = asyncio.create_task(writerproc.serve(writer, path, stop))
        client = WriterClient(path)
        p = project.id
        try:
            events = [
                TrackEvents(
                    project_id=p,
                    events=[EventIn(None, f"u-{i % 5}", "e", msgspec.Raw(b'{"i":%d}' % i))],
                )
                for i in range(56)
            ]
            commands = [
                Alias(project_id=p, anonymous_id="a", external_id="u-1"),
                *events,
                Alias(project_id=p, anonymous_id="a", external_id="u-2"),  # refused
            ]
            same = Identify(project_id=p, anonymous_id=None, external_id="u-9", traits=Traits())
            keyed = [(same, ("k", "1")), (same, ("k", "1")), (same, ("k", "2"))]
            outcomes = await asyncio.gather(
                *(client.submit(c) for c in commands),
                *(client.submit(c, k) for c, k in keyed),
                return_exceptions=True,
            )
        finally:
            await client.close()
            stop.set()
            await serving
            await writer.stop()
        assert outcomes[: len(commands) - 1] == [None] * (len(commands) - 1)
        refused = outcomes[len(commands) - 1]
        assert isinstance(refused, DomainError) and refused.path == "/anonymous_id"
        assert outcomes[-3:-1] == [None, None] and isinstance(outcomes[-1], KeyReused)
        assert writer.batches < 20  # grouped: not one transaction per request
        user = await store.get_user(p, "u-1", "external_id")
        assert user is not None
        stored = await store.user_events(user.id, 100, None)
        mine = [msgspec.json.decode(e.data)["i"] for e in stored if e.name == "e"]
        assert sorted(mine, reverse=True) == mine == [i for i in range(55, -1, -1) if i % 5 == 1]
        await store.close()

    asyncio.run(main())


def test_a_worker_without_its_writer_process_answers_503(tmp_path: Path) -> None:
    async def main() -> None:
        writerproc_wait, writerproc.CONNECT_WAIT = writerproc.CONNECT_WAIT, 0.2
        try:
            client = WriterClient(str(tmp_path / "nobody.sock"))
            with pytest.raises(StoreUnavailable, match="writer process is not running"):
                await client.submit(ALIAS)
            await client.close()
        finally:
            writerproc.CONNECT_WAIT = writerproc_wait

    asyncio.run(main())


def test_unset_traits_stay_unset() -> None:
    _, back, _ = writerproc.decode_request(writerproc.encode_request(0, IDENTIFY, None))
    assert isinstance(back, Identify)
    assert back.traits.timezone is UNSET and back.traits.phone is None


def test_frames_arrive_whole_and_in_order_however_the_stream_cuts_them() -> None:
    """read_frames takes the frames that came together in one read, and keeps a frame cut
    anywhere (its length prefix too) until its end arrives; a stream closed in the middle
    of a frame is an IncompleteReadError, not a short frame."""
    bodies = [b"", b"a", b"bc" * 300, bytes(range(256))]
    stream = b"".join(writerproc.HEADER.pack(len(b)) + b for b in bodies)

    async def read(pieces: list[bytes]) -> list[list[bytes]]:
        reader = asyncio.StreamReader()
        got: list[list[bytes]] = []

        async def feed() -> None:
            for piece in pieces:
                reader.feed_data(piece)
                await asyncio.sleep(0)  # each piece its own read
            reader.feed_eof()

        feeding = asyncio.create_task(feed())
        async for frames in writerproc.read_frames(reader):
            got.append(frames)
        await feeding
        return got

    async def main() -> None:
        for cut in range(1, len(stream)):
            got = await read([stream[:cut], stream[cut:]])
            assert [f for frames in got for f in frames] == bodies, cut
        assert await read([stream]) == [bodies]  # all at once: one list
        for cut in (2, 5, len(stream) - 1):  # closed inside a prefix, then inside bodies
            with pytest.raises(asyncio.IncompleteReadError):
                await read([stream[:cut]])

    asyncio.run(main())


@pytest.mark.parametrize("url", ["sqlite:///unused.db", "postgresql://pier@127.0.0.1/unused"])
def test_frames_go_out_in_groups_on_sqlite_and_at_the_end_of_the_turn_on_postgresql(
    url: str,
) -> None:
    """On SQLite the frames sent in one turn of the event loop are written as each group of
    FLUSH_FRAMES fills, and the rest at the turn's end: the other side starts on the first
    requests (or answers) while this side is still making the next ones. On PostgreSQL they
    all wait for the turn's end, so that the writer's batches gather them (group_of)."""
    group = writerproc.group_of(make_store(url))  # (not opened: the kind of store is enough)
    assert group == (writerproc.FLUSH_FRAMES if url.startswith("sqlite") else None)
    bodies = [bytes([i]) * (i + 1) for i in range(2 * writerproc.FLUSH_FRAMES + 3)]
    early = 2 * group if group else 0

    async def received(peer: socket.socket) -> list[bytes]:
        """The frames the peer can read now."""
        reader = asyncio.StreamReader()
        with contextlib.suppress(BlockingIOError):
            while chunk := peer.recv(1 << 16):
                reader.feed_data(chunk)
        reader.feed_eof()
        return [frame async for frames in writerproc.read_frames(reader) for frame in frames]

    async def main() -> None:
        ours, peer = socket.socketpair()
        peer.setblocking(False)
        _, stream = await asyncio.open_unix_connection(sock=ours)
        frames = writerproc._Frames(stream, group)
        for body in bodies[: writerproc.FLUSH_FRAMES - 1]:
            frames.send(body)
        assert await received(peer) == []  # a group not yet full waits for the turn's end
        for body in bodies[writerproc.FLUSH_FRAMES - 1 :]:
            frames.send(body)
        assert await received(peer) == bodies[:early]  # full groups, in order, at once
        await asyncio.sleep(0)  # the turn ends
        assert await received(peer) == bodies[early:]
        stream.close()
        peer.close()

    asyncio.run(main())


def test_a_request_the_writer_cannot_take_is_answered_at_once(tmp_path: Path) -> None:
    """Writer.put refuses a request past max_pending: the writer process answers it
    Overloaded (a 503 in the worker) without queuing it, and answers the others."""

    async def main() -> None:
        store = make_store(f"sqlite:///{tmp_path}/pier.db")
        await store.open()
        await store.migrate()
        p = (await store.create_project("p", 0)).id
        writer = Writer(store, max_pending=10)
        path = str(tmp_path / "w.sock")
        stop = asyncio.Event()
        serving = asyncio.create_task(writerproc.serve(writer, path, stop))
        client = WriterClient(path)
        ten = TrackEvents(project_id=p, events=[EventIn(None, "u", "e", msgspec.Raw(b"{}"))] * 10)
        try:  # the writer is not started: the first request fills its queue
            first = asyncio.ensure_future(client.submit(ten))
            while writer.pending < 10:  # queued in the writer process
                await asyncio.sleep(0.01)
            with pytest.raises(Overloaded):
                await client.submit(ten)
            writer.start()
            assert await first is None
        finally:
            await client.close()
            stop.set()
            await serving
            await writer.stop()
        user = await store.get_user(p, "u", "external_id")
        assert user is not None
        stored = await store.user_events(user.id, 100, None)
        assert [e.name for e in stored].count("e") == 10  # the first request's alone
        await store.close()

    asyncio.run(main())
