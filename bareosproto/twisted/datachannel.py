"""Data channels on Twisted: FD -> SD, SD -> passive FD, SD -> SD.

The bytes are the business of :class:`~bareosproto.datachannel.DataSession`
(one per channel); this module drives it over an authenticated
:class:`~bareosproto.twisted.protocol.Channel` and adds streaming with
Twisted's producer/consumer interfaces.

* :class:`DataCommander` is the side that sends the commands: the FD (also
  when a passive FD *accepted* the connection, PROTOCOL.md 15.22) and the
  reading SD of a copy.  It is an ``IConsumer``: register a producer (push
  or pull) with it and ``write()`` the data of the current stream; the
  producer is registered with the TCP transport, which pauses it whenever
  more than ``transport.bufferSize`` bytes wait to be sent.  So a slow
  reader slows the writer and the writer's memory stays bounded (by
  :data:`SEND_BUFFER` plus the frame being written).  What the producer
  writes in one ``resumeProducing()`` goes to the transport in a few
  writes, not one per frame.
* :class:`DataAnswerer` is the SD (and the writing SD of a copy).  Both
  sides are an ``IPushProducer`` towards the :class:`DataSink` that
  receives data: a sink that calls ``pauseProducing()`` stops the reading
  from the socket (``transport.pauseProducing()``), the frames already
  decoded wait in a queue of at most one socket read, and TCP flow control
  pushes back to the writer.

Connecting (each fires once the handshake of PROTOCOL.md 7.6/7.7/7.8 is
done): :func:`connect_fd_to_sd` (active client, connection 6),
:func:`connect_sd_to_fd` (passive client, 7), :func:`connect_sd_to_sd`
(replication, 8).  Accepting: :func:`data_server_factory` for an SD (FDs
and reading SDs by job name) or a passive FD (SDs by job name).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping
from typing import Any, Generic, TypeVar, cast

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IConsumer, IProducer, IPullProducer, IPushProducer, IStreamClientEndpoint
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from ..connection import ClientConnection, ConnectionType, Credentials, Daemon, ServerConfig
from ..datachannel import (
    CloseConfirmed,
    DataEnd,
    DataEvent,
    DataReady,
    DataRequested,
    DataSession,
    DataState,
    DataStored,
    Mode,
    PeerTerminated,
    ReadEnd,
    ReadParams,
    RecordData,
    RecordHeader,
    SessionClosed,
    SessionEnded,
    SessionKind,
    Side,
    StreamData,
    StreamEnd,
    StreamHeader,
    TicketGranted,
)
from ..errors import LocalProtocolError, ProtocolError, RemoteProtocolError
from ..events import ConnectionClosed, Message, SignalFrame
from ..hello import HelloKind
from ..keys import Secret
from ..names import ResourceType
from ..tls_policy import TlsPolicy
from ..versions import BAREOS_26, BareosVersion
from ._types import ReactorTime
from .factory import BareosServerFactory, connect
from .protocol import HANDSHAKE_TIMEOUT, BareosProtocol, Channel, ChannelClosed

__all__ = [
    "DataSink",
    "DataCommander",
    "DataAnswerer",
    "connect_fd_to_sd",
    "connect_sd_to_fd",
    "connect_sd_to_sd",
    "data_server_factory",
    "SEND_BUFFER",
]

#: The ``bufferSize`` a data channel sets on its TCP transport: above it the
#: transport pauses the producer, and it is the size of each socket read.  The
#: bytes a writer holds are at most this plus the frame being written (a 64 KiB
#: data frame; 999,996 bytes at worst) plus TLS record overhead.
SEND_BUFFER = 256 * 1024

E = TypeVar("E", bound=DataEvent)


@implementer(IConsumer)
class DataSink:
    """Where received data goes: subclass it and override what you need.

    Append and replication data arrive as ``stream_header()``, then
    ``write()`` per data frame, then ``stream_end()``; after the last stream
    ``data_end()`` is called, and what it returns (``True``/``False`` or a
    Deferred of it) decides between ``3000 OK append data`` and
    ``3999 Failed append``.  Restore records arrive as ``record_header()``
    and one ``write()`` each, then ``read_end()``.

    The sink is an ``IConsumer``: while data flows, the channel is
    registered as its (push) producer, so ``self.producer.pauseProducing()``
    stops the reading from the network and ``resumeProducing()`` restarts it.

    ``write()`` gets ``bytes``, a copy of each frame's payload, which the sink
    may keep.  A sink that sets :attr:`accepts_views` gets append and
    replication data without that copy: a ``memoryview`` of the buffer the
    frame was read into (or decrypted into, or, for a frame that came in
    several reads, gathered in), **valid only during the call**: the buffer
    is reused for the next read, so write the view out, hash or count it, or
    copy what you keep (``bytes(data)``), but do not store the view itself.
    Data that waited while the sink was paused comes as ``bytes`` (copied
    when the pause began), and so do a restore's records.
    """

    producer: IPushProducer | None = None
    #: ``True``: :meth:`write` may get ``memoryview`` objects, each valid only
    #: during the call (the zero-copy path); ``False`` (the default): ``bytes``.
    accepts_views: bool = False

    def registerProducer(self, producer: IProducer, streaming: bool) -> None:
        self.producer = producer  # type: ignore[assignment]

    def unregisterProducer(self) -> None:
        self.producer = None

    def write(self, data: bytes) -> None:
        """One data frame's payload (a ``memoryview`` if :attr:`accepts_views`)."""

    def stream_header(self, file_index: int, stream: int) -> None:
        pass

    def stream_end(self) -> None:
        pass

    def data_end(self) -> bool | Deferred[bool]:
        return True

    def record_header(self, header: RecordHeader) -> None:
        pass

    def read_end(self) -> None:
        pass


class _Waiter(Generic[E]):
    def __init__(self, kind: type[E]) -> None:
        self.kind = kind
        self.deferred: Deferred[E] = Deferred()


_CLOSED = ConnectionClosed()
_tuple_new = tuple.__new__  # Message / StreamData without a Python-level call


@implementer(IPushProducer)
class _DataChannel:
    """What both sides share: the session, the frames in and out, the sink, the end.

    Events reach the sink and the waiting calls in the order of the frames;
    while the sink has paused us they wait in a queue (at most what one
    socket read decoded, as the transport stops reading at once).
    """

    log = Logger()

    def __init__(self, channel: Channel, session: DataSession) -> None:
        self.channel = channel
        self.protocol: BareosProtocol = channel.protocol
        self.session = session
        #: called with every event of the session (optional, for watching)
        self.on_event: Callable[[DataEvent], object] | None = None
        self.error: ProtocolError | None = None
        self._waiters: deque[_Waiter[Any]] = deque()
        self._closed = False
        self._sink: DataSink | None = None
        self._reading_paused = False
        self._queue: deque[DataEvent] = deque()
        self._draining = False
        self._queued_bytes = 0
        #: the most data bytes that ever waited in the pause queue
        self.max_queued_bytes = 0
        #: True while our producer's resumeProducing() runs (see :class:`_Batching`)
        self._batching = False
        #: data written in it while the session streams, not yet handed to the session
        #: (None: write() goes through the session frame by frame)
        self._pending: list[bytes] | None = None
        self._pending_bytes = 0

    def _start(self) -> None:
        """Take over the channel's frames (those that came before, too)."""
        transport = self._transport()
        if transport is not None and hasattr(transport, "bufferSize"):
            transport.bufferSize = SEND_BUFFER
        if transport is not None and hasattr(transport, "setTcpNoDelay"):
            # no Nagle: a frame's short tail must not wait for the peer's delayed ACK
            transport.setTcpNoDelay(True)
        self.channel.on_unread = self._frame
        for frame in self.channel.drain():
            self._frame(frame)
        self.channel.on_frames = self._frames
        self.protocol.when_closed().addBoth(self._connection_lost)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.session!r}>"

    def _transport(self) -> Any:
        return self.protocol.transport

    # -- out -----------------------------------------------------------------

    def _flush(self) -> None:
        self._end_pending()
        frames = self.session.frames_to_send()
        if self._closed or not frames:
            return
        self.protocol.send_frames(frames)  # in one writeSequence()

    def _send_pending(self) -> None:
        """Hand the data written since the last time to the session, which takes
        them as the table's ``(stream, C_DATA)`` each (the state stays), and
        send their frames in one transport write."""
        pending = self._pending
        if pending:
            self._pending = []
            self._pending_bytes = 0
            frames = self.session.send_data_frames(pending)
            if not self._closed:
                self.protocol.send_frames(frames)

    @property
    def pending_bytes(self) -> int:
        """Bytes of data written (headers included) and not yet handed to the
        transport: what our producer wrote in its current ``resumeProducing()``
        since the last transport write (see :class:`_Batching`)."""
        pending = self._pending
        return sum(map(len, pending)) + 4 * len(pending) if pending else 0

    def _end_pending(self) -> None:
        """Before anything else reaches the session: the data written goes first,
        and write() asks the session again (it may no longer stream)."""
        if self._pending is not None:
            self._send_pending()
            self._pending = None

    def _call(self, method: Callable[..., object], *args: Any) -> None:
        if self.error is not None:
            raise LocalProtocolError(f"the data session failed: {self.error.message}")
        self._end_pending()
        method(*args)
        self._flush()

    def close(self) -> None:
        """Close the connection (after a TLS close_notify)."""
        if not self._closed:
            self._end_pending()
            self._closed = True
            self.channel.close()

    def when_closed(self) -> Deferred[None]:
        return self.protocol.when_closed()

    # -- in ------------------------------------------------------------------

    def _frame(self, frame: Message | SignalFrame) -> bool:
        if self.error is None:
            if self._pending is not None:  # (frames arrive between batches, but to be exact)
                self._end_pending()
            session = self.session
            try:
                events = session.receive_frame(frame)
            except RemoteProtocolError as exc:
                self._refused(exc)
                return True
            if session.has_frames_to_send:
                self._flush()
            for event in events:
                kind = event.__class__
                if (kind is StreamData or kind is RecordData) and self.on_event is None \
                        and not self._reading_paused and not self._queue:
                    sink = self._sink  # the data path: _event() and _deliver() in one
                    if sink is not None:
                        sink.write(event[0])  # type: ignore[index]
                else:
                    self._event(event)
        return True

    def _frames(self, frames: list[memoryview | int]) -> None:
        """The frames of one read: payloads are views, valid only during this call."""
        sink = self._sink
        if (sink is not None and sink.accepts_views and self.session.data_run(frames) == len(frames)
                and self.on_event is None and not self._reading_paused and not self._queue):
            # the bulk path: stream data only, which leaves the session's state as it is
            write: Callable[[memoryview], object] = sink.write  # type: ignore[assignment]
            rest = iter(cast("list[memoryview]", frames))
            for payload in rest:
                write(payload)
                if self._reading_paused:  # the sink paused: what it has not had waits, copied
                    self._stream_data(list(rest))
                    return
            return
        session = self.session
        end = len(frames)
        i = 0
        while i < end and self.error is None:
            run = session.data_run(frames, i)
            if run > i:
                self._stream_data(cast("list[memoryview]", frames if run - i == end else frames[i:run]))
                i = run
                continue
            item = frames[i]
            i += 1
            self._frame(SignalFrame(item) if isinstance(item, int) else _tuple_new(Message, (bytes(item),)))

    def _stream_data(self, payloads: list[memoryview]) -> None:
        """Stream data (frames the session took without changing its state) to the
        sink: views if it accepts them, else copies; copies are queued while the
        sink is paused, as the views are valid only during the read."""
        sink = self._sink
        if self.on_event is None and not self._reading_paused and not self._queue:
            if sink is None:
                return
            write: Callable[[bytes | memoryview], object] = sink.write  # type: ignore[assignment]
            views = sink.accepts_views
            rest = iter(payloads)
            for payload in rest:
                write(payload if views else bytes(payload))
                if self._reading_paused:
                    break
            else:
                return
            payloads = list(rest)
        for payload in payloads:
            self._event(_tuple_new(StreamData, (bytes(payload),)))

    def _refused(self, exc: RemoteProtocolError) -> None:
        """Send what Bareos sends in this case (the frames on the error), then close."""
        self._end_pending()
        self.error = exc
        self.log.info("bareosproto: data session ended: {why}", why=exc.message)
        if not self._closed:
            protocol = self.protocol
            for out in getattr(exc, "frames", ()):
                if isinstance(out, int):
                    protocol.send_signal(out)
                else:
                    protocol.send_message(out)
        self._fail_waiters(Failure(exc))
        self.close()

    def _event(self, event: DataEvent) -> None:
        if self.on_event is not None:
            self.on_event(event)
        if self._reading_paused or self._queue:
            self._queue.append(event)
            if isinstance(event, (StreamData, RecordData)):
                self._queued_bytes += len(event[0])
                if self._queued_bytes > self.max_queued_bytes:
                    self.max_queued_bytes = self._queued_bytes
            return
        self._deliver(event)

    def _deliver(self, event: DataEvent) -> None:
        sink = self._sink
        kind = type(event)
        if kind is StreamData or kind is RecordData:
            if sink is not None:
                sink.write(event[0])  # type: ignore[index]
            return
        if isinstance(event, StreamHeader):
            if sink is not None:
                sink.stream_header(event.file_index, event.stream)
            return
        if isinstance(event, StreamEnd):
            if sink is not None:
                sink.stream_end()
            return
        if isinstance(event, RecordHeader):
            if sink is not None:
                sink.record_header(event)
            return
        self._handle(event)
        waiters = self._waiters
        if waiters and isinstance(event, waiters[0].kind):
            waiters.popleft().deferred.callback(event)

    def _handle(self, event: DataEvent) -> None:
        """Side-specific reactions to the events other than data."""

    def _wait(self, kind: type[E]) -> Deferred[E]:
        waiter = _Waiter(kind)
        if self.error is not None:
            waiter.deferred.errback(Failure(self.error))
        else:
            self._waiters.append(waiter)
        return waiter.deferred

    def _fail_waiters(self, failure: Failure) -> None:
        waiters, self._waiters = self._waiters, deque()
        for waiter in waiters:
            waiter.deferred.errback(failure)

    def _connection_lost(self, _: object) -> None:
        self._closed = True
        if self.error is None and self.session.state not in (DataState.TERMINATED, DataState.IDLE,
                                                             DataState.FAILED):
            try:
                self.session.receive_frame(_CLOSED)
            except RemoteProtocolError as exc:
                self.error = exc
        if self._waiters:
            self._fail_waiters(Failure(self.error or ChannelClosed("the data channel was closed")))

    # -- flow control towards the sink (IPushProducer) ---------------------------------

    def pauseProducing(self) -> None:
        """Stop reading from the network (the sink is full)."""
        if not self._reading_paused:
            self._reading_paused = True
            transport = self._transport()
            if transport is not None:
                transport.pauseProducing()

    def resumeProducing(self) -> None:
        """Deliver what waited, then read from the network again."""
        if not self._reading_paused:
            return
        self._reading_paused = False
        if self._draining:
            return
        self._draining = True
        try:
            queue = self._queue
            while queue and not self._reading_paused:
                event = queue.popleft()
                if isinstance(event, (StreamData, RecordData)):
                    self._queued_bytes -= len(event[0])
                self._deliver(event)
        finally:
            self._draining = False
        transport = self._transport()
        if not self._reading_paused and transport is not None and not self._closed:
            transport.resumeProducing()

    def stopProducing(self) -> None:
        self.close()

    def _attach_sink(self) -> None:
        sink = self._sink
        if sink is not None:
            sink.registerProducer(self, True)

    def _detach_sink(self) -> None:
        sink = self._sink
        if sink is not None and sink.producer is self:
            sink.unregisterProducer()

    # -- a producer of ours, paced by the transport (the IConsumer side) -----------------

    def registerProducer(self, producer: IProducer, streaming: bool) -> None:
        """Register the producer of what we send; the TCP transport pauses it
        whenever more than ``transport.bufferSize`` bytes wait.  The data it
        writes in one ``resumeProducing()`` goes out in transport writes of
        about that size, not one per frame (:class:`_Batching`)."""
        self._transport().registerProducer(_Batching(self, producer), streaming)

    def unregisterProducer(self) -> None:
        transport = self._transport()
        if transport is not None and transport.producer is not None:
            transport.unregisterProducer()


@implementer(IPushProducer, IPullProducer)
class _Batching:
    """Registered with the transport in place of a data channel's producer.

    While the producer's ``resumeProducing()`` runs, the data frames it
    writes inside a stream (each the table's ``(stream, C_DATA)``, which
    leaves the session's state as it is, so the session's answer before the
    first holds for all until something else reaches it) are collected and
    handed to the session and the transport together: when it returns, when
    anything else is sent or reaches the session, and as soon as what it
    wrote since the resume exceeds :data:`SEND_BUFFER`, the transport's
    ``bufferSize``: a write after which the transport pauses the producer
    where the frame-by-frame writes would have had it paused, so the bytes
    held for sending stay under the same bound.  One ``writeSequence()`` per
    batch instead of one per frame saves little with 64 KiB frames and much
    with small ones.  Pausing and stopping are passed on as they are."""

    def __init__(self, channel: _DataChannel, producer: IProducer) -> None:
        self.channel = channel
        self.producer: Any = producer  # push or pull

    def resumeProducing(self) -> None:
        channel = self.channel
        if channel._batching:
            self.producer.resumeProducing()
            return
        channel._batching = True
        if channel.session.streaming:
            channel._pending = []  # collected from the first frame on
            channel._pending_bytes = 0
        try:
            self.producer.resumeProducing()
        finally:
            channel._batching = False
            channel._end_pending()

    def pauseProducing(self) -> None:
        self.producer.pauseProducing()  # only a push producer is paused

    def stopProducing(self) -> None:
        self.producer.stopProducing()


@implementer(IConsumer)
class DataCommander(_DataChannel):
    """The commanding side: an FD (active or passive) or the reading SD of a copy.

    Append (backup)::

        ticket = await cmd.append_open()
        await cmd.append_data()
        cmd.send_header(1, 1); cmd.write(attributes); cmd.end_stream()
        cmd.send_header(1, 2)
        cmd.registerProducer(file_reader, True)  # it write()s, the transport paces it
        ...  cmd.unregisterProducer(); cmd.end_stream()
        await cmd.end_data()          # final EOD; 3000 OK append data
        await cmd.append_end()
        status = await cmd.append_close()
        cmd.finish()                   # TERMINATE and close, as the FD does

    Read (restore): :meth:`read_open`, :meth:`read_data` (records go to a
    :class:`DataSink`), :meth:`read_close`, :meth:`finish`.  Replication:
    :meth:`start_replicate`, :meth:`replicate_data`, streams as above,
    :meth:`end_data`, :meth:`end_replicate`, :meth:`finish`.
    """

    def __init__(self, channel: Channel, kind: SessionKind = SessionKind.FD_SD) -> None:
        super().__init__(channel, DataSession(kind, Side.COMMANDER))
        self._start()

    @property
    def ticket(self) -> int:
        return self.session.ticket

    # -- commands ------------------------------------------------------------------

    async def append_open(self) -> int:
        """``append open session``; returns the ticket."""
        d = self._wait(TicketGranted)
        self._call(self.session.append_open)
        return (await d).ticket

    async def append_data(self) -> None:
        """``append data <t>``; returns on ``3000 OK data``."""
        d = self._wait(DataReady)
        self._call(self.session.append_data)
        await d

    async def start_replicate(self) -> int:
        """``start replicate``; returns the ticket."""
        d = self._wait(TicketGranted)
        self._call(self.session.start_replicate)
        return (await d).ticket

    async def replicate_data(self) -> None:
        """``replicate data <t>``; returns on ``3000 OK data``."""
        d = self._wait(DataReady)
        self._call(self.session.replicate_data)
        await d

    def send_header(self, file_index: int, stream: int) -> None:
        """Start a stream: ``<FileIndex> <Stream> 0``."""
        self._call(self.session.send_header, file_index, stream)

    def write(self, data: bytes) -> None:
        """One data frame of the current stream (``IConsumer.write``)."""
        pending = self._pending
        if pending is not None:  # our producer's, in a stream: collected (see _Batching)
            pending.append(data)
            self._pending_bytes += len(data) + 4
            if self._pending_bytes > SEND_BUFFER:
                self._send_pending()
            return
        session = self.session
        frames = session.send_data_now(data)  # through the table: refused here and now
        if not self._closed:
            self.protocol.send_frames(frames)
        if self._batching and session.streaming:
            self._pending = []  # the next ones are collected, counted from this one on
            self._pending_bytes = len(data) + 4  # (what the transport may hold counts)

    def end_stream(self) -> None:
        """The EOD after a stream's data."""
        self._call(self.session.end_stream)

    async def end_data(self) -> None:
        """The final EOD; returns on ``3000 OK append data`` / ``3000 OK replicate data``."""
        d = self._wait(DataStored)
        self._call(self.session.end_data)
        await d

    async def append_end(self) -> None:
        """``append end session <t>``; returns on ``3000 OK end``."""
        d = self._wait(SessionEnded)
        self._call(self.session.append_end)
        await d

    async def end_replicate(self) -> None:
        """``end replicate``; returns on ``3000 OK end replicate``."""
        d = self._wait(SessionEnded)
        self._call(self.session.end_replicate)
        await d

    async def append_close(self) -> int:
        """``append close session <t>``; returns the status once the SD's EOD came."""
        d = self._wait(SessionClosed)
        self._call(self.session.append_close)
        return (await d).status

    async def read_open(self, params: ReadParams) -> int:
        """``read open session = ...``; returns the ticket."""
        d = self._wait(TicketGranted)
        self._call(self.session.read_open, params)
        return (await d).ticket

    async def read_data(self, sink: DataSink) -> None:
        """``read data <t>``; the records go to ``sink`` (which may pause the
        reading); returns after the EOD of the last record reached the sink."""
        self._sink = sink
        d: Deferred[ReadEnd] = self._wait(ReadEnd)
        self._attach_sink()
        self._call(self.session.read_data)
        await d

    async def read_close(self) -> int:
        """``read close session <t>``: as the FD, TERMINATE right after the status
        line, again after the SD's EOD (PROTOCOL.md 15.8, 15.21); returns the status."""
        confirmed = self._wait(CloseConfirmed)
        closed = self._wait(SessionClosed)
        self._call(self.session.read_close)
        await confirmed
        self._call(self.session.terminate)
        status = (await closed).status
        self._call(self.session.terminate)
        return status

    def finish(self) -> None:
        """``BNET_TERMINATE`` (unless :meth:`read_close` sent them already) and
        close, as the FD and the reading SD end their data channels."""
        if self.session.state is not DataState.TERMINATED and not self._closed and self.error is None:
            try:
                self._call(self.session.terminate)
            except LocalProtocolError:
                pass
        self.close()

    def _handle(self, event: DataEvent) -> None:
        if isinstance(event, ReadEnd):
            self._detach_sink()
            if self._sink is not None:
                self._sink.read_end()


class DataAnswerer(_DataChannel):
    """The answering side: the SD of an FD-SD channel, the writing SD of a copy.

    ``ticket`` is the job's VolSessionId (``3000 OK open ticket = <t>``);
    ``sink`` receives append and replication data.  A restore's
    ``read data`` calls ``on_read(answerer)``, which answers with
    :meth:`start_read`, sends the records with :meth:`send_record` (a
    producer may be registered, the transport paces it) and ends with
    :meth:`end_read` (or refuses with :meth:`refuse_read`); without
    ``on_read`` the read is refused as an SD without volumes does.  After
    the commander's TERMINATE the answerer closes the connection (the SD
    closes first in restores and copies, PROTOCOL.md 15.22).
    """

    def __init__(self, channel: Channel, kind: SessionKind = SessionKind.FD_SD, *, ticket: int = 0,
                 sink: DataSink | None = None, close_status: int | None = None,
                 rerunning: bool = False,
                 on_read: Callable[[DataAnswerer], object] | None = None) -> None:
        super().__init__(channel, DataSession(kind, Side.ANSWERER, ticket=ticket,
                                              close_status=close_status, rerunning=rerunning))
        self.on_read = on_read
        self._sink = sink
        self._outcome: Failure | None | bool = False  # False: not yet ended
        self._done_waiting: list[Deferred[None]] = []
        self._start()

    @property
    def sink(self) -> DataSink | None:
        return self._sink

    @sink.setter
    def sink(self, sink: DataSink | None) -> None:
        self._sink = sink

    @property
    def ticket(self) -> int:
        return self.session.ticket

    @ticket.setter
    def ticket(self, value: int) -> None:
        self.session.ticket = value

    def when_done(self) -> Deferred[None]:
        """Fires when the commander terminated (or fails with the session's error).
        Each call gets its own Deferred, so an end nobody waits for logs no error."""
        d: Deferred[None] = Deferred()
        if self._outcome is False:
            self._done_waiting.append(d)
        elif isinstance(self._outcome, Failure):
            d.errback(self._outcome)
        else:
            d.callback(None)
        return d

    def _end(self, outcome: Failure | None) -> None:
        if self._outcome is not False:
            return
        self._outcome = outcome
        waiting, self._done_waiting = self._done_waiting, []
        for d in waiting:
            if outcome is None:
                d.callback(None)
            else:
                d.errback(outcome)

    def _handle(self, event: DataEvent) -> None:
        if isinstance(event, DataRequested):
            if event.mode is Mode.READ:
                if self.on_read is None:
                    self.refuse_read()
                    return
                self.on_read(self)
            else:
                self._attach_sink()
        elif isinstance(event, DataEnd):
            self._data_end()
        elif isinstance(event, PeerTerminated):
            self._end(None)
            self.close()

    def _data_end(self) -> None:
        self._detach_sink()
        sink = self._sink
        result: Deferred[bool]
        try:
            outcome = sink.data_end() if sink is not None else True
        except Exception:
            result = fail(Failure())
        else:
            result = outcome if isinstance(outcome, Deferred) else succeed(outcome)

        def answer(ok: object) -> None:
            if self.error is not None or self._closed:
                return
            events = self.session.data_stored(bool(ok))
            self._flush()
            if self.session.failed:
                self.error = LocalProtocolError("the data could not be stored")
                self.close()
            for event in events:
                self._event(event)

        def failed(failure: Failure) -> None:
            self.log.failure("bareosproto: the data sink failed", failure)
            answer(False)

        result.addCallbacks(answer, failed)

    def _refused(self, exc: RemoteProtocolError) -> None:
        super()._refused(exc)
        self._end(Failure(exc))

    def _connection_lost(self, reason: object) -> None:
        super()._connection_lost(reason)
        if self.session.state is DataState.TERMINATED or (
                self.session.state is DataState.IDLE and self.error is None):
            self._end(None)
        else:
            self._end(Failure(self.error or ChannelClosed("the data channel was closed")))

    # -- read sessions ------------------------------------------------------------

    def start_read(self) -> None:
        """``3000 OK data``: records follow."""
        self._call(self.session.start_read)

    def refuse_read(self) -> None:
        """``3000 error`` and TERMINATE (no volume to read), then close."""
        self._call(self.session.refuse_read)
        self.close()

    def send_record(self, vol_session_id: int, vol_session_time: int, file_index: int, stream: int,
                    data: bytes) -> None:
        """One record: its ``rechdr`` line and its data frame."""
        self._call(self.session.send_record, vol_session_id, vol_session_time, file_index, stream, data)

    def end_read(self) -> None:
        """The EOD after the last record."""
        events = self.session.end_read()
        self._flush()
        for event in events:
            self._event(event)


# -- connecting ---------------------------------------------------------------------


def _client(reactor: Any, endpoint: str | IStreamClientEndpoint, conn_type: ConnectionType, *,
            name: str, job: str, key: Secret, tls: bool, tls_policy: TlsPolicy, release: BareosVersion,
            timeout: float | None) -> Deferred[Channel]:
    def make() -> ClientConnection:
        return ClientConnection(conn_type, name=name, key=key, job=job, clock=reactor.seconds, tls=tls,
                                tls_policy=tls_policy, release=release)

    return connect(reactor, endpoint, make, timeout)


def connect_fd_to_sd(reactor: Any, endpoint: str | IStreamClientEndpoint, *, client: str, job: str,
                     key: Secret, tls: bool = False, tls_policy: TlsPolicy = TlsPolicy.NONE,
                     release: BareosVersion = BAREOS_26,
                     timeout: float | None = HANDSHAKE_TIMEOUT) -> Deferred[DataCommander]:
    """An active FD (``client``) opens the data channel of ``job`` to its SD (connection 6).

    ``tls=True`` is the ``ssl=4`` case: TLS-PSK with ``R_JOB\\x1e<job>`` and
    the session ``key``; ``tls_policy`` is the ``ssl=`` of the FD's
    challenge (its Client resource).
    """
    d = _client(reactor, endpoint, ConnectionType.FD_SD, name=client, job=job, key=key, tls=tls,
                tls_policy=tls_policy, release=release, timeout=timeout)
    return d.addCallback(DataCommander)


def connect_sd_to_fd(reactor: Any, endpoint: str | IStreamClientEndpoint, *, storage: str, job: str,
                     key: Secret, ticket: int, sink: DataSink | None = None, tls: bool = False,
                     tls_policy: TlsPolicy = TlsPolicy.NONE, release: BareosVersion = BAREOS_26,
                     on_read: Callable[[DataAnswerer], object] | None = None,
                     timeout: float | None = HANDSHAKE_TIMEOUT) -> Deferred[DataAnswerer]:
    """The SD ``storage`` connects to a passive FD for ``job`` (connection 7).

    The SD connects but still answers: the FD sends the commands and the
    data (PROTOCOL.md 15.22).
    """
    d = _client(reactor, endpoint, ConnectionType.SD_FD_PASSIVE, name=storage, job=job, key=key, tls=tls,
                tls_policy=tls_policy, release=release, timeout=timeout)
    return d.addCallback(lambda ch: DataAnswerer(ch, SessionKind.FD_SD, ticket=ticket, sink=sink,
                                                 on_read=on_read))


def connect_sd_to_sd(reactor: Any, endpoint: str | IStreamClientEndpoint, *, storage: str, job: str,
                     key: Secret, tls: bool = False, tls_policy: TlsPolicy = TlsPolicy.NONE,
                     release: BareosVersion = BAREOS_26,
                     timeout: float | None = HANDSHAKE_TIMEOUT) -> Deferred[DataCommander]:
    """The reading SD ``storage`` connects to the writing SD for the writing ``job`` (connection 8)."""
    d = _client(reactor, endpoint, ConnectionType.SD_SD, name=storage, job=job, key=key, tls=tls,
                tls_policy=tls_policy, release=release, timeout=timeout)
    return d.addCallback(lambda ch: DataCommander(ch, SessionKind.SD_SD))


JobKeys = Mapping[str, Secret | Credentials] | Callable[[str], Secret | Credentials | None]


def data_server_factory(
    reactor: ReactorTime,
    *,
    daemon: Daemon,
    name: str,
    jobs: JobKeys,
    on_session: Callable[[DataCommander | DataAnswerer], object],
    tls: bool = True,
    own_tls_policy: TlsPolicy = TlsPolicy.NONE,
    release: BareosVersion = BAREOS_26,
    handshake_timeout: float | None = HANDSHAKE_TIMEOUT,
) -> BareosServerFactory:
    """Accept data channels as an SD (``daemon=Daemon.SD``: FDs and reading SDs)
    or as a passive FD (``Daemon.FD``: SDs), authenticated with the job keys.

    ``jobs`` gives the session key of a running job by its unique name (a
    ``Credentials`` carries the ``ssl=`` policy the Director gave for it too;
    a plain key means 0, cleartext allowed).  ``on_session`` gets a
    :class:`DataAnswerer` (on an SD; set its ``ticket`` and ``sink`` there and
    then) or a :class:`DataCommander` (on a passive FD).  ``own_tls_policy``
    is the ``ssl=`` of our challenge (the daemon's own Storage/Client resource).
    """

    def job_credentials(job: str) -> Credentials | None:
        found = jobs.get(job) if isinstance(jobs, Mapping) else jobs(job)
        if found is None or isinstance(found, Credentials):
            return found
        return Credentials(found, TlsPolicy.NONE)

    def lookup(rtype: ResourceType, peer: str) -> Credentials | None:
        return job_credentials(peer) if rtype is ResourceType.R_JOB else None

    config = ServerConfig(daemon=daemon, name=name, lookup=lookup, tls=tls, own_tls_policy=own_tls_policy,
                          release=release)

    def on_channel(channel: Channel) -> None:
        kind = channel.handshake.hello.kind
        session: DataCommander | DataAnswerer
        if kind is HelloKind.START_JOB:
            session = DataAnswerer(channel, SessionKind.FD_SD)
        elif kind is HelloKind.START_STORAGE_JOB:
            session = DataAnswerer(channel, SessionKind.SD_SD)
        elif kind is HelloKind.STORAGE_START_JOB:
            session = DataCommander(channel, SessionKind.FD_SD)
        else:  # pragma: no cover - the lookup admits job names only
            channel.close()
            return
        on_session(session)

    return BareosServerFactory(config, reactor, on_channel, handshake_timeout)
