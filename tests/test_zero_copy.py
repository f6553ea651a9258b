"""The zero-copy receive path and the bulk send path of the data channels.

Core, each against the path it stands for: ``FrameDecoder.receive_views`` (payloads as
``memoryview`` slices of what came in, a frame that spans reads gathered once in the decoder's
buffers) against the encoded frames; ``receive_views`` and ``send_frames`` of a connection against
``receive_data`` and ``send_message``/``send_signal``; ``DataSession.data_run``,
``send_data_now`` and ``send_data_frames`` against the transition table frame by frame.  Twisted,
in memory: a ``DataAnswerer`` hands views to a sink that accepts them and ``bytes`` to one that
does not, and keeps what a paused sink has not had yet (copied) until the resume; a
``DataCommander`` sends what its producer writes in one ``resumeProducing()`` in one transport
write, in order with the commands, paused by the transport where frame-by-frame writes would be.
"""

from __future__ import annotations

import copy
import struct
import tracemalloc
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import abstract
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, ensureDeferred, succeed
from twisted.internet.protocol import Factory
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from bareosproto.connection import (
    ClientConnection,
    ConnectionType,
    ConnState,
    Credentials,
    Daemon,
    ServerConfig,
    ServerConnection,
)
from bareosproto.datachannel import (
    DataEvent,
    DataSession,
    DataState,
    SessionKind,
    SessionRefused,
    Side,
    StreamData,
)
from bareosproto.errors import LocalProtocolError, RemoteProtocolError
from bareosproto.events import ConnectionClosed, Message, SignalFrame
from bareosproto.frames import TERMINATE, FrameDecoder, encode_message, encode_signal
from bareosproto.keys import session_key
from bareosproto.names import ResourceType
from bareosproto.tls_policy import TlsPolicy
from bareosproto.twisted.datachannel import (
    SEND_BUFFER,
    DataAnswerer,
    DataCommander,
    DataSink,
    connect_fd_to_sd,
    data_server_factory,
)

KEY = session_key(bytes(range(16)))
JOB = "backup-client.2026-11-30_10.00.00_01"
EOD = -1

frame_lists = st.lists(
    st.one_of(
        st.binary(max_size=300).map(Message),
        st.integers(min_value=-(2**31), max_value=-1).map(SignalFrame),
    ),
    max_size=30,
)
cut_lists = st.lists(st.integers(min_value=0), max_size=40)


def encode(events: list[Message | SignalFrame]) -> bytes:
    return b"".join(encode_message(e.payload) if isinstance(e, Message) else encode_signal(int(e.signal))
                    for e in events)


def raw(events: list[Message | SignalFrame]) -> list[bytes | int]:
    return [e.payload if isinstance(e, Message) else int(e.signal) for e in events]


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in zip(points, points[1:]) if b > a]


def copied(items: list[memoryview | int]) -> list[bytes | int]:
    """What a caller keeps of one call's frames: each view copied before the next call."""
    out: list[bytes | int] = []
    for item in items:
        if isinstance(item, int):
            out.append(item)
        else:
            assert type(item) is memoryview
            out.append(bytes(item))
    return out


# -- FrameDecoder.receive_views -----------------------------------------------------------


@given(frame_lists, cut_lists)
def test_views_round_trip_under_any_chunking(events: list[Message | SignalFrame], cuts: list[int]) -> None:
    """Fed the encoded frames cut anywhere, receive_views() gives every payload as a memoryview and every
    signal as an int, in order; each view holds its frame until the next call (copied after the call,
    not during it), also when the same call went on to gather the beginning of the next frame."""
    decoder = FrameDecoder()
    out: list[bytes | int] = []
    for piece in chunked(encode(events), cuts):
        out += copied(decoder.receive_views(piece))
    assert out == raw(events)
    assert decoder.receive_views(b"") == []


@given(frame_lists, st.lists(st.integers(min_value=1, max_value=700), min_size=1, max_size=20))
def test_views_of_a_buffer_the_caller_reuses(events: list[Message | SignalFrame], sizes: list[int]) -> None:
    """Fed views of one buffer that the caller overwrites after each call (the TLS path), the frames
    are still right: what spans calls is kept by the decoder, the rest is read before the overwrite."""
    data = encode(events)
    decoder = FrameDecoder()
    scratch = bytearray(max(sizes))
    out: list[bytes | int] = []
    pos = i = 0
    while pos < len(data):
        piece = data[pos : pos + sizes[i % len(sizes)]]
        i += 1
        scratch[: len(piece)] = piece
        out += copied(decoder.receive_views(memoryview(scratch)[: len(piece)]))
        scratch[:] = b"\xaa" * len(scratch)
        pos += len(piece)
    assert out == raw(events)


@given(frame_lists, cut_lists, st.lists(st.sampled_from(["views", "frames", "data"]), min_size=1))
def test_the_three_receive_forms_can_take_turns(events: list[Message | SignalFrame], cuts: list[int],
                                                 forms: list[str]) -> None:
    """A connection switches from events to views (and back) mid-stream, even inside a frame: any
    sequence of receive_data / receive_frames / receive_views calls decodes the same frames."""
    decoder = FrameDecoder()
    out: list[bytes | int] = []
    for i, piece in enumerate(chunked(encode(events), cuts)):
        form = forms[i % len(forms)]
        if form == "views":
            out += copied(decoder.receive_views(piece))
        elif form == "frames":
            out += decoder.receive_frames(piece)
        else:
            out += raw(decoder.receive_data(piece))  # type: ignore[arg-type]
    assert out == raw(events)
    assert decoder.receive_data(b"") == [ConnectionClosed()]


def test_a_frame_inside_a_read_is_a_view_of_that_read() -> None:
    """No copy: the payload of a frame that lies wholly inside the bytes of one call is a slice of
    those very bytes; an empty message is an empty view."""
    chunk = encode_message(b"a" * 1000) + encode_message(b"") + encode_signal(EOD) + encode_message(b"b" * 10)
    items = FrameDecoder().receive_views(chunk)
    assert copied(items) == [b"a" * 1000, b"", EOD, b"b" * 10]
    first, empty, _, last = items
    assert isinstance(first, memoryview) and isinstance(last, memoryview) and isinstance(empty, memoryview)
    assert first.obj is chunk and last.obj is chunk


def test_a_gathered_frame_survives_the_rest_of_its_call() -> None:
    """The decoder gathers frames that span reads in two buffers in turn: the view of a frame completed
    at the start of a call is not overwritten when the same call begins gathering the next one."""
    a, b, c = b"A" * 5000, b"B" * 5000, b"C" * 500
    stream = encode_message(a) + encode_message(b) + encode_message(c)
    decoder = FrameDecoder()
    assert decoder.receive_views(stream[:3000]) == []  # a begins
    done_a = decoder.receive_views(stream[3000:8000])  # a completes, b begins
    assert copied(done_a) == [a]
    done_b = decoder.receive_views(stream[8000:])  # b completes, c inside
    assert copied(done_b) == [b, c]


def traced(action: Callable[[], object]) -> int:
    """Bytes still allocated after ``action``, by tracemalloc."""
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        action()
        return tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("form", ["receive_views", "receive_data"])
def test_the_buffer_grows_with_what_came_not_with_what_the_header_claims(form: str) -> None:
    """A header announcing 999,996 bytes followed by 100 of them makes the decoder hold a few KiB,
    not a megabyte: bad input never makes it allocate ahead of the data."""
    decoder = FrameDecoder()
    data = struct.pack(">i", 999_996) + b"x" * 100
    assert traced(lambda: getattr(decoder, form)(data)) < 16 * 1024
    assert decoder.buffered == 104


def test_a_large_frames_buffer_is_let_go() -> None:
    """A frame of 999,996 bytes that came in pieces is gathered (and handed out) in a buffer of its
    size, which the decoder drops afterwards: it keeps only buffers up to 256 KiB."""
    payload = (bytes(range(256)) * 3907)[:999_996]
    small = encode_message(b"s" * 5000)
    stream = encode_message(payload) + small + small
    decoder = FrameDecoder()

    def feed() -> None:
        got: list[bytes | int] = []
        for start in range(0, len(stream), 200_000):
            got += copied(decoder.receive_views(memoryview(stream)[start : start + 200_000]))
        assert got == [payload, b"s" * 5000, b"s" * 5000]

    assert traced(feed) < 200 * 1024


def test_a_header_above_the_limit_fails_with_the_frames_before_it_as_bytes() -> None:
    """In the views form too, a header above 1,000,000 raises RemoteProtocolError (reply
    BNET_TERMINATE) before anything of it is buffered; the frames before it are on the error as
    events holding copies (the views would die with the call), and every later call raises."""
    data = encode_message(b"ok") + encode_signal(EOD) + struct.pack(">i", 1_000_001)
    decoder = FrameDecoder()
    with pytest.raises(RemoteProtocolError) as err:
        decoder.receive_views(data)
    assert err.value.reply == TERMINATE
    assert err.value.events == [Message(b"ok"), SignalFrame(EOD)]
    assert type(err.value.events[0].payload) is bytes  # type: ignore[attr-defined]
    with pytest.raises(RemoteProtocolError):
        decoder.receive_views(encode_message(b"more"))


# -- connections: receive_views and send_frames ----------------------------------------------


def fd_sd_pair(tls: bool) -> tuple[ClientConnection, ServerConnection]:
    """An FD's and an SD's data channel connection, open (sans-IO, bytes moved until quiet)."""
    policy = TlsPolicy.REQUIRED if tls else TlsPolicy.NONE
    creds = Credentials(KEY, policy)
    config = ServerConfig(daemon=Daemon.SD, name="bareos-sd", tls=tls, own_tls_policy=policy,
                          lookup=lambda t, n: creds if (t, n) == (ResourceType.R_JOB, JOB) else None)
    client = ClientConnection(ConnectionType.FD_SD, name="client-fd", key=KEY, job=JOB, clock=lambda: 1.0,
                              tls=tls, tls_policy=policy)
    server = ServerConnection(config, clock=lambda: 1.0, nonce=lambda: 7)
    client.initiate()
    for _ in range(20):
        moved = False
        for src, dst in ((client, server), (server, client)):
            data = src.data_to_send()
            if data:
                dst.receive_data(data)
                moved = True
        if not moved:
            break
    assert client.state is ConnState.OPEN and server.state is ConnState.OPEN
    return client, server


@pytest.mark.parametrize("tls", [False, True], ids=["clear", "tls"])
def test_receive_views_applies_only_to_open_untraced_connections(tls: bool) -> None:
    """Before the connection is open, while it is traced, and for EOF, receive_views() reads nothing
    and says so (None): those bytes go through receive_data()."""
    policy = TlsPolicy.REQUIRED if tls else TlsPolicy.NONE
    config = ServerConfig(daemon=Daemon.SD, name="bareos-sd", tls=tls, own_tls_policy=policy,
                          lookup=lambda t, n: None)
    fresh = ServerConnection(config, clock=lambda: 1.0)
    assert fresh.receive_views(encode_message(b"Hello Start Job x")) is None
    client, server = fd_sd_pair(tls)
    assert server.receive_views(b"") is None
    server.trace = lambda direction, event: None
    client.send_message(b"traced")
    data = client.data_to_send()
    assert server.receive_views(data) is None
    assert server.receive_data(data) == [Message(b"traced")]


@pytest.mark.parametrize("tls", [False, True], ids=["clear", "tls"])
def test_frames_sent_in_bulk_arrive_as_views(tls: bool) -> None:
    """send_frames() writes payloads and signals as send_message()/send_signal() do (a payload above
    999,996 bytes split as Bareos splits it); the peer's receive_views() gives the payloads as views,
    in cleartext and inside TLS, cut anywhere."""
    client, server = fd_sd_pair(tls)
    frames: list[bytes | int] = [b"x" * 70000, EOD, b"", b"y" * 1_000_100, -4]
    data = b"".join(client.send_frames(frames))
    twin, _ = fd_sd_pair(tls)
    for frame in frames:
        if isinstance(frame, int):
            twin.send_signal(frame)
        else:
            twin.send_message(frame)
    if not tls:
        assert data == twin.data_to_send()
    got: list[bytes | int] = []
    for start in range(0, len(data), 100_000):
        items = server.receive_views(data[start : start + 100_000])
        assert items is not None
        got += copied(items)
    assert got == [b"x" * 70000, EOD, b"", b"y" * 999_996, b"y" * 104, -4]


def test_inside_tls_a_frame_is_encrypted_as_one_write_as_bareos_does() -> None:
    """Inside TLS 1.3 send_frames() encrypts each frame's header and payload in one write, as Bareos'
    SendPacket() does (bsock_tcp.cc): a 64 KiB frame is four records of 16 KiB and one of the last
    4 bytes, so the records fall where a daemon's fall; the peer decodes the frames."""
    client, server = fd_sd_pair(True)
    payload = bytes(range(256)) * 256
    data = b"".join(client.send_frames([payload, payload]))
    sizes = []
    pos = 0
    while pos < len(data):
        n = int.from_bytes(data[pos + 3 : pos + 5], "big")
        sizes.append(n - 17)  # the plaintext: minus the content type byte and the 16-byte tag
        pos += 5 + n
    assert sizes == [16384, 16384, 16384, 16384, 4] * 2
    items = server.receive_views(data)
    assert items is not None and copied(items) == [payload, payload]


def test_send_frames_hands_cleartext_payloads_on_uncopied() -> None:
    """In cleartext each payload is a chunk of its own after its 4-byte header: the very object."""
    client, _ = fd_sd_pair(False)
    payload = bytes(65536)
    chunks = client.send_frames([payload])
    assert chunks == [b"\x00\x01\x00\x00", payload] and chunks[1] is payload


# -- DataSession: data_run and send_data_now against the table -------------------------------


def answerer(kind: SessionKind, state: str) -> DataSession:
    """An answerer (SD) in a given state, reached through the table."""
    s = DataSession(kind, Side.ANSWERER, ticket=5)
    if state == "idle":
        return s
    if kind is SessionKind.FD_SD:
        s.receive_frame(Message(b"append open session\n"))
        s.receive_frame(Message(b"append data 5\n"))
    else:
        s.receive_frame(Message(b"start replicate\n"))
        s.receive_frame(Message(b"replicate data 5\n"))
    if state == "header":
        return s
    s.receive_frame(Message(b"1 2 0"))
    if state == "stream":
        return s
    if state == "storing":
        s.receive_frame(SignalFrame(EOD))
        s.receive_frame(SignalFrame(EOD))
        return s
    assert state == "failed"
    with pytest.raises(SessionRefused):
        s.receive_frame(SignalFrame(-4))
    return s


def commander(state: str) -> DataSession:
    """An FD's session: streaming its own data, or reading a restore's records."""
    s = DataSession(SessionKind.FD_SD, Side.COMMANDER)
    if state == "stream":
        s.append_open()
        s.receive_frame(Message(b"3000 OK open ticket = 5\n"))
        s.append_data()
        s.receive_frame(Message(b"3000 OK data\n"))
        s.send_header(1, 2)
    else:
        from bareosproto.datachannel import ReadParams

        s.read_open(ReadParams("DummyVolume", 5, 6))
        s.receive_frame(Message(b"3000 OK open ticket = 5\n"))
        s.read_data()
        s.receive_frame(Message(b"3000 OK data\n"))
        s.receive_frame(Message(b"rechdr 5 6 1 2 3"))
    s.frames_to_send()
    return s


def drained(session: DataSession) -> DataSession:
    session.frames_to_send()
    return session


def pending(session: DataSession) -> DataSession:
    session.send_data(b"earlier")  # a frame waits to be sent
    return session


SESSIONS: dict[str, Callable[[], DataSession]] = {
    "answerer idle": lambda: answerer(SessionKind.FD_SD, "idle"),
    "answerer append stream, replies sent": lambda: drained(answerer(SessionKind.FD_SD, "stream")),
    "commander stream, a frame pending": lambda: pending(commander("stream")),
    "answerer header": lambda: answerer(SessionKind.FD_SD, "header"),
    "answerer append stream": lambda: answerer(SessionKind.FD_SD, "stream"),
    "answerer replicate stream": lambda: answerer(SessionKind.SD_SD, "stream"),
    "answerer storing": lambda: answerer(SessionKind.FD_SD, "storing"),
    "answerer failed": lambda: answerer(SessionKind.FD_SD, "failed"),
    "commander stream": lambda: commander("stream"),
    "commander record": lambda: commander("record"),
}

raw_frames = st.lists(
    st.one_of(st.binary(max_size=8).map(lambda b: memoryview(b)), st.sampled_from([EOD, -4, -5, -6, -9, -10, -11])),
    max_size=8,
)


def stream_data_run(session: DataSession, frames: list[memoryview | int], start: int) -> int:
    """The run the table gives frame by frame: the frames from ``start`` on that receive_frame() turns
    into exactly their StreamData event, leaving the state as it was."""
    twin = copy.deepcopy(session)
    i = start
    while i < len(frames):
        item = frames[i]
        if isinstance(item, int):
            break
        state = twin.state
        try:
            events: list[DataEvent] = twin.receive_frame(Message(bytes(item)))
        except RemoteProtocolError:
            break
        if events != [StreamData(bytes(item))] or twin.state is not state:
            break
        i += 1
    return i


@settings(max_examples=300)
@given(st.sampled_from(sorted(SESSIONS)), raw_frames, st.integers(min_value=0, max_value=8))
def test_data_run_is_what_the_table_does_frame_by_frame(name: str, frames: list[memoryview | int],
                                                        start: int) -> None:
    """data_run() passes a run of frames by without the table only where the table would have made
    each of them StreamData and stayed in its state: an answerer inside a stream, up to the first
    signal; nowhere else (headers, held frames, failed sessions, the commander's own streams and a
    restore's records all go through receive_frame())."""
    start = min(start, len(frames))
    session = SESSIONS[name]()
    state = session.state
    assert session.data_run(frames, start) == stream_data_run(session, frames, start)
    assert session.state is state  # data_run() itself changes nothing


@given(st.sampled_from(sorted(SESSIONS)), st.binary(max_size=10))
def test_send_data_now_is_send_data_then_frames_to_send(name: str, payload: bytes) -> None:
    """send_data_now() gives what send_data() and frames_to_send() give, in every state (or the same
    LocalProtocolError), and leaves the session in the same state."""
    ours, theirs = SESSIONS[name](), SESSIONS[name]()
    try:
        theirs.send_data(payload)
        expected: object = theirs.frames_to_send()
    except LocalProtocolError as exc:
        expected = type(exc)
    try:
        got: object = ours.send_data_now(payload)
    except LocalProtocolError as exc:
        got = type(exc)
    assert got == expected
    assert ours.state is theirs.state


@given(st.sampled_from(sorted(SESSIONS)), st.lists(st.binary(max_size=10), max_size=4))
def test_send_data_frames_is_send_data_then_frames_to_send(name: str, payloads: list[bytes]) -> None:
    """send_data_frames() gives what send_data() for each payload and then frames_to_send() give, in
    every state (or the same LocalProtocolError), and leaves the session in the same state; where
    ``streaming`` is true it stays true and the frames are the payloads."""
    ours, theirs = SESSIONS[name](), SESSIONS[name]()
    streaming = ours.streaming
    assert streaming == (theirs.state in (DataState.APPEND_STREAM, DataState.REPLICATE_STREAM)
                         and theirs.side is Side.COMMANDER and not theirs.failed and not theirs.has_frames_to_send)
    try:
        for payload in payloads:
            theirs.send_data(payload)
        expected: object = theirs.frames_to_send()
    except LocalProtocolError as exc:
        expected = type(exc)
    try:
        got: object = list(ours.send_data_frames(list(payloads)))
    except LocalProtocolError as exc:
        got = type(exc)
    assert got == expected
    assert ours.state is theirs.state
    if streaming:
        assert got == payloads and ours.streaming


def test_send_data_now_hands_the_payload_on_uncopied() -> None:
    s = commander("stream")
    payload = bytes(65536)
    (out,) = s.send_data_now(payload)
    assert out is payload


# -- Twisted, in memory: the answerer's sink ----------------------------------------------


class Wire:
    """A client and a server protocol joined by StringTransports; :meth:`pump` moves bytes until quiet."""

    def __init__(self, client: Any, server: Any) -> None:
        self.client, self.server = client, server
        self.ct: Any = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 9103))  # type: ignore[no-untyped-call]
        self.st: Any = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 40000))  # type: ignore[no-untyped-call]
        server.makeConnection(self.st)
        client.makeConnection(self.ct)

    def pump(self) -> None:
        for _ in range(100):
            moved = False
            for src, dst in ((self.ct, self.server), (self.st, self.client)):
                data = src.value()
                if data:
                    src.clear()
                    dst.dataReceived(data)
                    moved = True
            if not moved:
                return


class MemoryEndpoint:
    def __init__(self, server_factory: Factory) -> None:
        self.server_factory = server_factory
        self.wire: Wire | None = None

    def connect(self, factory: Factory) -> Deferred[Any]:
        client: Any = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 9103))
        server: Any = self.server_factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
        assert client is not None and server is not None
        self.wire = Wire(client, server)
        return succeed(client)


class RecordingSink(DataSink):
    """Records what write() got (its type, and a copy made during the call) and the stream ends;
    pauses its producer after ``pause_after`` writes."""

    def __init__(self, views: bool, pause_after: int | None = None) -> None:
        self.accepts_views = views
        self.pause_after = pause_after
        self.log: list[tuple[type, bytes] | str] = []

    def write(self, data: bytes) -> None:
        self.log.append((type(data), bytes(data)))
        if self.pause_after is not None and len(self.data) == self.pause_after:
            assert self.producer is not None
            self.producer.pauseProducing()

    def stream_header(self, file_index: int, stream: int) -> None:
        self.log.append(f"header {file_index} {stream}")

    def stream_end(self) -> None:
        self.log.append("end")

    @property
    def data(self) -> list[bytes]:
        return [entry[1] for entry in self.log if isinstance(entry, tuple)]

    @property
    def types(self) -> set[type]:
        return {entry[0] for entry in self.log if isinstance(entry, tuple)}


def appending_answerer(sink: DataSink) -> tuple[DataAnswerer, DataCommander, Wire]:
    """Our FD and SD in memory, the session at ``append data``: the SD's answerer with ``sink``."""
    clock = Clock()
    sessions: list[DataAnswerer] = []

    def on_session(session: DataCommander | DataAnswerer) -> None:
        assert isinstance(session, DataAnswerer)
        session.ticket = 5
        session.sink = sink
        sessions.append(session)

    endpoint = MemoryEndpoint(data_server_factory(clock, daemon=Daemon.SD, name="bareos-sd", jobs={JOB: KEY},
                                                  on_session=on_session, tls=False))
    d = connect_fd_to_sd(clock, endpoint, client="client-fd", job=JOB, key=KEY)  # type: ignore[arg-type]
    wire = endpoint.wire
    assert wire is not None
    wire.pump()
    commander: DataCommander = d.result  # type: ignore[assignment]

    async def start() -> None:
        await commander.append_open()
        await commander.append_data()

    started = ensureDeferred(start())
    wire.pump()
    assert started.called
    (session,) = sessions
    assert session.session.state is DataState.APPEND_HEADER
    return session, commander, wire


PAYLOADS = [bytes([i]) * (1000 + i) for i in range(5)]
HEADER = encode_message(b"1 2 0")
DATA = b"".join(map(encode_message, PAYLOADS))
TAIL = encode_signal(EOD) + encode_message(b"2 2 0") + encode_message(b"last") + encode_signal(EOD)
ONE_READ = HEADER + DATA + TAIL
#: the same bytes in one read (data among other frames: each run of data and each other frame in
#: turn), and in three (the middle one all data of one stream: the bulk path)
READS = {"one read": [ONE_READ], "data read": [HEADER, DATA, TAIL]}
EXPECTED: list[tuple[type, bytes] | str] = ["header 1 2", *[(memoryview, p) for p in PAYLOADS], "end", "header 2 2",
                                           (memoryview, b"last"), "end"]


def feed(session: DataAnswerer, reads: str) -> None:
    for data in READS[reads]:
        session.protocol.dataReceived(data)


@pytest.mark.parametrize("reads", sorted(READS))
@pytest.mark.parametrize("views", [True, False], ids=["views", "bytes"])
def test_the_sink_gets_views_only_if_it_accepts_them(views: bool, reads: str) -> None:
    """A stream header, five data frames, an EOD, another header, a data frame and an EOD, in one read
    or with the five data frames in a read of their own: the sink gets all of it in that order; a
    sink with ``accepts_views`` gets each payload as a memoryview (no copy), the default sink bytes."""
    sink = RecordingSink(views)
    session, _, _ = appending_answerer(sink)
    feed(session, reads)
    kind = memoryview if views else bytes
    assert sink.log == [(kind, e[1]) if isinstance(e, tuple) else e for e in EXPECTED]
    assert session.session.state is DataState.APPEND_HEADER


@pytest.mark.parametrize("reads", sorted(READS))
@pytest.mark.parametrize("views", [True, False], ids=["views", "bytes"])
def test_a_sink_that_pauses_mid_read_gets_the_rest_after_the_resume(views: bool, reads: str) -> None:
    """The sink pauses after the second of the read's five data frames: it gets nothing more (and the
    transport stops reading), what it has not had of the read waits, the data as copies, and after
    the resume it all comes in order."""
    sink = RecordingSink(views, pause_after=2)
    session, _, wire = appending_answerer(sink)
    feed(session, reads)  # (a paused transport reads nothing more; here the wire feeds on regardless)
    assert sink.data == PAYLOADS[:2]
    assert wire.st.producerState == "paused"
    assert session.max_queued_bytes == sum(map(len, PAYLOADS[2:])) + len(b"last")
    sink.pause_after = None
    session.resumeProducing()
    assert sink.data == PAYLOADS + [b"last"]
    assert sink.log[-4:] == ["end", "header 2 2", (bytes, b"last"), "end"]
    assert [entry[0] for entry in sink.log[1:6] if isinstance(entry, tuple)] == \
        [memoryview if views else bytes] * 2 + [bytes] * 3
    assert wire.st.producerState == "producing"


@pytest.mark.parametrize("reads", sorted(READS))
def test_a_watcher_of_events_gets_stream_data_as_bytes(reads: str) -> None:
    """With ``on_event`` set every frame becomes its event (StreamData with a copy of the payload),
    and the sink still gets the data."""
    sink = RecordingSink(True)
    session, _, _ = appending_answerer(sink)
    events: list[DataEvent] = []
    session.on_event = events.append
    feed(session, reads)
    data = [e for e in events if isinstance(e, StreamData)]
    assert [e.payload for e in data] == PAYLOADS + [b"last"]
    assert all(type(e.payload) is bytes for e in data)
    assert sink.data == PAYLOADS + [b"last"]


def test_a_refusal_in_the_middle_of_a_read_still_delivers_what_came_before() -> None:
    """A frame the SD refuses (BNET_TERMINATE inside a stream) after two data frames of the same read:
    the sink has the two, the SD answers as Bareos does (nothing, the socket is gone) and closes."""
    sink = RecordingSink(True)
    session, _, wire = appending_answerer(sink)
    session.protocol.dataReceived(encode_message(b"1 2 0") + encode_message(b"a") + encode_message(b"b")
                                  + encode_signal(-4) + encode_message(b"after"))
    assert sink.data == [b"a", b"b"]
    assert isinstance(session.error, SessionRefused)
    assert wire.st.disconnecting


def test_the_commander_streams_through_the_bulk_path() -> None:
    """Our FD writes data frames (header and payload as two chunks, the payload uncopied) that our SD
    takes through the views path; the sink gets them in order."""
    sink = RecordingSink(True)
    _, commander, wire = appending_answerer(sink)
    commander.send_header(1, 2)
    for payload in PAYLOADS:
        commander.write(payload)
    commander.end_stream()
    wire.pump()
    assert sink.log == ["header 1 2", *[(memoryview, p) for p in PAYLOADS], "end"]


# -- Twisted: the commander's batches ----------------------------------------------------------


class CountingTransport(abstract.FileDescriptor):
    """Twisted's own write buffer and producer pausing (FileDescriptor), without a socket: counts
    the transport writes and keeps what was written."""

    connected = 1

    def __init__(self) -> None:
        super().__init__(None)
        self.writes = 0
        self.bufferSize = SEND_BUFFER

    def startWriting(self) -> None:
        pass

    def write(self, data: bytes) -> None:
        self.writes += 1
        super().write(data)

    def writeSequence(self, iovec: Any) -> None:
        self.writes += 1
        super().writeSequence(iovec)

    def held(self) -> int:
        return len(self.dataBuffer) - self.offset + self._tempDataLen

    def drain(self) -> bytes:
        """Everything written so far (as the socket would have taken it); the buffer is empty after."""
        data = bytes(self.dataBuffer[self.offset :]) + b"".join(self._tempDataBuffer)
        self.dataBuffer, self.offset, self._tempDataBuffer, self._tempDataLen = b"", 0, [], 0
        return data


class Frames:
    """A push producer that writes ``count`` data frames per resume until paused, and records the
    most the FD held to send after any write (in the transport and in the commander)."""

    def __init__(self, commander: DataCommander, transport: CountingTransport, size: int, count: int,
                 script: Callable[[DataCommander, int], None] | None = None) -> None:
        self.commander, self.transport, self.size, self.script = commander, transport, size, script
        self.count = count
        self.paused = False
        self.sent = 0
        self.most_held = 0

    def resumeProducing(self) -> None:
        self.paused = False
        while not self.paused and self.sent < self.count:
            self.commander.write(bytes([self.sent % 256]) * self.size)
            self.sent += 1
            self.most_held = max(self.most_held, self.transport.held() + self.commander.pending_bytes)
            if self.script is not None:
                self.script(self.commander, self.sent)

    def pauseProducing(self) -> None:
        self.paused = True

    def stopProducing(self) -> None:
        self.paused = True


def streaming_commander(sink: DataSink) -> tuple[DataCommander, DataAnswerer, CountingTransport]:
    session, commander, _ = appending_answerer(sink)
    commander.send_header(1, 2)
    session.protocol.dataReceived(b"".join(_take(commander)))
    transport = CountingTransport()
    commander.protocol.transport = transport
    return commander, session, transport


def _take(commander: DataCommander) -> list[bytes]:
    wire = commander.protocol.transport
    data = wire.value()  # type: ignore[union-attr]
    wire.clear()  # type: ignore[union-attr]
    return [data]


@pytest.mark.parametrize("size", [65536, 4096, 100])
def test_what_one_resume_writes_goes_out_in_few_writes_under_the_same_bound(size: int) -> None:
    """Registered with the commander, a producer's resumeProducing() writes data frames until the
    transport pauses it: the frames reach the transport in one write each time more than
    SEND_BUFFER were written (then the transport pauses the producer) and at the end, not one write
    per frame; the FD never holds more than SEND_BUFFER and one frame; the SD gets every byte."""
    sink = RecordingSink(True)
    commander, session, transport = streaming_commander(sink)
    frame = size + 4
    count = 3 * SEND_BUFFER // frame
    producer = Frames(commander, transport, size, count)
    commander.registerProducer(producer, True)
    transport.producer.resumeProducing()  # as the transport does once its buffer has drained
    assert producer.paused
    assert producer.sent == SEND_BUFFER // frame + 1  # paused where frame-by-frame writes pause it
    assert transport.writes <= 2  # the first frame, then the rest in one
    assert producer.most_held <= SEND_BUFFER + frame
    session.protocol.dataReceived(transport.drain())
    while producer.sent < count:
        transport.producer.resumeProducing()
        session.protocol.dataReceived(transport.drain())
    assert sink.data == [bytes([i % 256]) * size for i in range(count)]
    commander.unregisterProducer()


def test_commands_between_batched_writes_keep_their_place() -> None:
    """Within one resumeProducing() the producer ends the stream after its third frame and starts
    another: the data written before goes out first, each command in its place, and a write that
    the table refuses (data after the stream's end) is refused at once."""
    sink = RecordingSink(True)
    commander, session, transport = streaming_commander(sink)

    def script(cmd: DataCommander, sent: int) -> None:
        if sent == 3:
            cmd.end_stream()
            with pytest.raises(LocalProtocolError):
                cmd.write(b"not in a stream")
            cmd.send_header(2, 2)
        if sent == 5:
            producer.paused = True

    producer = Frames(commander, transport, 1000, 100, script)
    commander.registerProducer(producer, True)
    transport.producer.resumeProducing()
    session.protocol.dataReceived(transport.drain())
    assert sink.log == ["header 1 2", *[(memoryview, bytes([i]) * 1000) for i in range(3)], "end", "header 2 2",
                        *[(memoryview, bytes([i]) * 1000) for i in range(3, 5)]]
    assert commander.pending_bytes == 0


def test_a_pull_producer_is_asked_for_more_through_the_batching() -> None:
    """A pull producer (streaming=False) registered with the commander is asked by the transport
    for each next piece as before (at once, then whenever the buffer is empty); what it writes
    arrives in order."""
    sink = RecordingSink(True)
    commander, session, transport = streaming_commander(sink)
    asked: list[int] = []

    class Pull:
        def resumeProducing(self) -> None:
            asked.append(len(asked))
            commander.write(bytes([len(asked)]) * 3000)
            commander.write(bytes([len(asked)]) * 10)

        def stopProducing(self) -> None:
            pass

    commander.registerProducer(Pull(), False)
    assert asked == [0]  # Twisted asks a pull producer at once
    assert transport.writes == 1  # its two frames in one write
    for _ in range(3):
        session.protocol.dataReceived(transport.drain())
        transport.producer.resumeProducing()  # as doWrite does once the buffer is empty
    commander.unregisterProducer()
    session.protocol.dataReceived(transport.drain())
    assert sink.data == [bytes([i]) * n for i in range(1, 5) for n in (3000, 10)]
