"""The Twisted protocol that drives one core connection.

:class:`BareosProtocol` owns a :class:`~bareosproto.connection.ClientConnection`
or :class:`~bareosproto.connection.ServerConnection` and adds only I/O and
timers: ``dataReceived`` feeds the core, the core's bytes go to the transport,
events go to :class:`Channel` once the handshake is complete.  It parses
nothing itself.

A refusal (:class:`~bareosproto.errors.RemoteProtocolError`) is played out
as Bareos does it: the immediate reply, each delayed step through
``reactor.callLater`` (so a failed login delays only its own connection),
then the close.  While it plays out, nothing more is read.
"""

from __future__ import annotations

import socket
from collections import deque
from collections.abc import Sequence
from typing import Callable, Generic, TypeVar

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet import tcp
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from ..connection import (
    ClientConnection,
    ConnState,
    HandshakeComplete,
    ServerConnection,
    TlsEstablished,
)
from ..errors import DelayedReply, LocalProtocolError, ProtocolError, RemoteProtocolError
from ..events import ConnectionClosed, Event, Message, SignalFrame
from ._types import DelayedCall, ReactorTime, Transport

__all__ = ["BareosProtocol", "Channel", "HANDSHAKE_TIMEOUT", "ChannelClosed"]

#: Hello and authentication of a console take at most 300 s upstream.
HANDSHAKE_TIMEOUT = 300.0

T = TypeVar("T")

#: transports that are a bare TCP socket (not TLS or another wrapper around one)
_PLAIN_TCP = (tcp.Server, tcp.Client)


class ChannelClosed(ProtocolError):
    """The connection ended while a reader waited for a frame."""


class _Observers(Generic[T]):
    """Hands out fresh Deferreds that all fire with one result."""

    def __init__(self) -> None:
        self._waiting: list[Deferred[T]] = []
        self._result: T | Failure | None = None
        self._fired = False

    def when(self) -> Deferred[T]:
        if self._fired:
            result = self._result
            if isinstance(result, Failure):
                return fail(result)
            return succeed(result)  # type: ignore[arg-type]
        d: Deferred[T] = Deferred()
        self._waiting.append(d)
        return d

    @property
    def fired(self) -> bool:
        return self._fired

    def fire(self, result: T | Failure) -> None:
        if self._fired:
            return
        self._fired = True
        self._result = result
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            if isinstance(result, Failure):
                d.errback(result)
            else:
                d.callback(result)


class Channel:
    """The frames of an open connection, for user code and the channel classes.

    ``send(payload)`` and ``send_signal(signal)`` write frames;
    ``next_frame()`` returns a Deferred of the next :class:`Message` or
    :class:`SignalFrame`; ``read_until(stop)`` collects frames up to and
    including the first for which ``stop`` is true.  Heartbeats are passed
    on like any other signal; the classes above decide about them.
    """

    def __init__(self, protocol: BareosProtocol) -> None:
        self._protocol = protocol
        self._frames: deque[Message | SignalFrame] = deque()
        self._readers: deque[Deferred[Message | SignalFrame]] = deque()
        self._closed: str | None = None  # why, once the connection is gone
        #: called with each frame when nobody is reading (e.g. to log or answer heartbeats)
        self.on_unread: Callable[[Message | SignalFrame], bool] | None = None
        #: if set, takes the frames of each read in one list instead of :attr:`on_unread`
        #: (while nobody waits in :meth:`next_frame` and no frame waits in the channel):
        #: each frame its payload, a ``memoryview`` of the receive buffer **valid only
        #: during the call**, or its signal (a negative ``int``); the bulk path of the
        #: data channels, without a copy or an event object per frame
        self.on_frames: Callable[[list[memoryview | int]], object] | None = None

    @property
    def handshake(self) -> HandshakeComplete:
        assert self._protocol.handshake is not None
        return self._protocol.handshake

    @property
    def protocol(self) -> BareosProtocol:
        return self._protocol

    def send(self, payload: bytes) -> None:
        self._protocol.send_message(payload)

    def send_signal(self, signal: int) -> None:
        self._protocol.send_signal(signal)

    def next_frame(self) -> Deferred[Message | SignalFrame]:
        if self._frames:
            return succeed(self._frames.popleft())
        if self._closed is not None:
            return fail(ChannelClosed(self._closed))
        d: Deferred[Message | SignalFrame] = Deferred(lambda d: self._readers.remove(d))
        self._readers.append(d)
        return d

    async def read_until(self, stop: Callable[[Message | SignalFrame], bool]) -> list[Message | SignalFrame]:
        frames: list[Message | SignalFrame] = []
        while True:
            frame = await self.next_frame()
            frames.append(frame)
            if stop(frame):
                return frames

    def close(self) -> None:
        """Close the connection (after a TLS close_notify when TLS is up)."""
        self._protocol.close()

    def drain(self) -> list[Message | SignalFrame]:
        """Take the frames that arrived while nobody read them, oldest first
        (for a reader that installs :attr:`on_unread` after the handshake)."""
        frames = list(self._frames)
        self._frames.clear()
        return frames

    # called by the protocol
    def _deliver(self, frame: Message | SignalFrame) -> None:
        if self._readers:
            self._readers.popleft().callback(frame)
            return
        if self.on_unread is not None and self.on_unread(frame):
            return
        self._frames.append(frame)

    def _end(self, why: str) -> None:
        self._closed = why
        if self._readers:
            readers, self._readers = self._readers, deque()
            failure = Failure(ChannelClosed(why))
            for d in readers:
                d.errback(failure)


@implementer(IHalfCloseableProtocol)
class BareosProtocol(Protocol):
    """One connection: the core does the protocol, this class does the I/O.

    ``make_connection`` builds the core object when the TCP connection is
    made (a :class:`ClientConnection` is initiated at once).  Deferreds:
    :meth:`when_handshake_complete` fires with the
    :class:`~bareosproto.connection.HandshakeComplete` event (or fails with
    the :class:`RemoteProtocolError` that refused the connection, or a
    timeout); :meth:`when_closed` fires when the transport is gone.
    ``on_handshake(channel)`` and ``on_closed(protocol)`` are plain callbacks
    for the same two moments (a factory uses them: no Deferred per connection).
    """

    log = Logger()

    def __init__(
        self,
        make_connection: Callable[[], ClientConnection | ServerConnection],
        reactor: ReactorTime,
        handshake_timeout: float | None = HANDSHAKE_TIMEOUT,
        on_handshake: Callable[[Channel], object] | None = None,
        on_closed: Callable[[BareosProtocol], object] | None = None,
    ) -> None:
        self._make_connection = make_connection
        self.reactor = reactor
        self.handshake_timeout = handshake_timeout
        self.on_handshake = on_handshake
        #: called with this protocol once the connection is gone
        self.on_closed = on_closed
        self.conn: ClientConnection | ServerConnection | None = None
        self.channel = Channel(self)
        self.handshake: HandshakeComplete | None = None
        self.tls: TlsEstablished | None = None
        self.error: ProtocolError | None = None
        self._handshake_obs: _Observers[HandshakeComplete] = _Observers()
        self._closed_obs: _Observers[None] = _Observers()
        self._timer: DelayedCall | None = None
        self._refusal: list[DelayedCall] = []
        self._refusing = False
        #: ``reactor.seconds()`` when bytes last arrived (``None``: not yet); for idle timers
        self.last_received: float | None = None
        #: the socket of a plain TCP transport, written to directly until the
        #: handshake is over or the transport was written to
        self._socket: socket.socket | None = None

    def __repr__(self) -> str:
        return f"<BareosProtocol {self.conn!r}>"

    # -- public ----------------------------------------------------------------

    def when_handshake_complete(self) -> Deferred[HandshakeComplete]:
        return self._handshake_obs.when()

    def when_closed(self) -> Deferred[None]:
        return self._closed_obs.when()

    def send_message(self, payload: bytes) -> None:
        assert self.conn is not None
        self.conn.send_message(payload)
        self._flush()

    def send_signal(self, signal: int) -> None:
        assert self.conn is not None
        self.conn.send_signal(signal)
        self._flush()

    def send_frames(self, frames: Sequence[bytes | int]) -> None:
        """Write frames (payloads, and signals as negative ints) in one
        ``writeSequence()``; payloads go out uncopied in cleartext."""
        conn, out = self.conn, self.transport
        assert conn is not None
        try:
            chunks = conn.send_frames(frames)
        except BaseException:
            self._flush()  # what went into the connection before the error
            raise
        if chunks and out is not None:
            self._write_chunks(chunks, out)

    def close(self) -> None:
        """TLS close_notify (if TLS is up), then a TCP close."""
        out = self._out
        if self.conn is not None and out is not None:
            self.conn.close()
            self._flush()
            self._socket = None
            out.loseConnection()

    def abort(self) -> None:
        self._socket = None  # not a byte more
        if self.transport is not None:
            self.transport.abortConnection()  # type: ignore[attr-defined]  # ITCPTransport

    # -- Twisted -----------------------------------------------------------------

    def connectionMade(self) -> None:
        # Each flight goes out in one write; with Nagle and delayed ACKs a
        # flight that follows another small write would wait ~40 ms.
        transport = self.transport
        set_no_delay = getattr(transport, "setTcpNoDelay", None)
        if set_no_delay is not None:
            set_no_delay(True)
        if type(transport) in _PLAIN_TCP:
            self._socket = transport.getHandle()  # type: ignore[union-attr]
        self.conn = self._make_connection()
        if self.handshake_timeout is not None:
            self._timer = self.reactor.callLater(self.handshake_timeout, self._timed_out)
        if isinstance(self.conn, ClientConnection):
            self.conn.initiate()
            self._flush()

    def dataReceived(self, data: bytes) -> None:
        self.last_received = self.reactor.seconds()
        conn = self.conn
        if self._refusing or conn is None:
            return  # Bareos sleeps through a refusal and reads nothing
        channel = self.channel
        on_frames = channel.on_frames
        if on_frames is not None and not channel._readers and not channel._frames:
            try:
                frames = conn.receive_views(data)  # no copy, no event per frame
            except RemoteProtocolError as exc:
                self._refuse(exc)
                return
            if frames is not None:
                if conn.tls is not None:
                    self._flush()  # TLS may answer (cleartext frames received write nothing)
                if frames:
                    on_frames(frames)
                return
        try:
            events = conn.receive_data(data)
        except RemoteProtocolError as exc:
            self._refuse(exc)
            return
        except LocalProtocolError as exc:  # a state we cannot be in: report and drop
            self.log.failure("bareosproto: internal error", Failure(exc))
            self.abort()
            return
        self._flush()
        deliver = self.channel._deliver
        for ev in events:
            kind = ev.__class__
            if kind is Message or kind is SignalFrame:  # the frames of an open connection
                deliver(ev)  # type: ignore[arg-type]
            else:
                self._dispatch(ev)

    def readConnectionLost(self) -> None:
        """The peer ended its stream (FIN) but can still read, as a Bareos socket
        can: the core sees EOF, and a refusal it answers with is still written
        (for instance the Director's ``1999 You are not authorized.``) before we
        close our side."""
        if self._refusing or self.conn is None:
            return
        try:
            events = self.conn.receive_data(b"")
        except RemoteProtocolError as exc:
            self._refuse(exc)
            return
        except ProtocolError as exc:
            self.error = exc
            events = []
        self._flush()
        for ev in events:
            self._dispatch(ev)
        self._socket = None
        out = self._out
        if out is not None:
            out.loseConnection()

    def writeConnectionLost(self) -> None:
        """Our write side is closed: nothing more can be sent, so close."""
        self._socket = None
        out = self._out
        if out is not None:
            out.loseConnection()

    def connectionLost(self, reason: Failure = Failure(ConnectionError())) -> None:
        self._socket = None
        self._cancel_timer()
        for call in self._refusal:
            if call.active():
                call.cancel()
        if self.conn is not None and self.conn.state not in (ConnState.CLOSED, ConnState.FAILED):
            try:
                for ev in self.conn.receive_data(b""):
                    self._dispatch(ev)
            except ProtocolError as exc:
                self.error = self.error or exc
        if not self._handshake_obs.fired:
            err = self.error or RemoteProtocolError(
                f"connection lost during the handshake: {reason.getErrorMessage()}"
            )
            self._handshake_obs.fire(Failure(err))
        self.channel._end(f"connection closed: {reason.getErrorMessage()}")
        self._closed_obs.fire(None)
        if self.on_closed is not None:
            self.on_closed(self)

    # -- internals --------------------------------------------------------------------

    @property
    def _out(self) -> Transport | None:
        return self.transport

    def _flush(self) -> None:
        conn, out = self.conn, self.transport
        if conn is None or out is None:
            return
        chunks = conn.data_to_send_chunks()  # a payload goes out uncopied
        if chunks:
            self._write_chunks(chunks, out)

    def _write_chunks(self, chunks: list[bytes], out: Transport) -> None:
        sock = self._socket
        if sock is not None:
            # A handshake flight goes straight to the socket: nothing of ours
            # waits in the transport (it has never been written to), and the
            # flight leaves now rather than on the reactor's next turn.
            data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
            try:
                sent = sock.send(data)
            except OSError:  # full, or broken: the transport finds out and reports
                sent = 0
            if sent == len(data):
                return
            self._socket = None
            out.write(data[sent:])
            return
        out.writeSequence(chunks)

    def _dispatch(self, ev: Event) -> None:
        if isinstance(ev, (Message, SignalFrame)):
            self.channel._deliver(ev)
        elif isinstance(ev, HandshakeComplete):
            self._cancel_timer()
            self._socket = None  # from now on the transport buffers and paces
            self.handshake = ev
            self.log.info(
                "bareosproto: {peer} {hello_kind} {name!r} authenticated, TLS {tls}",
                peer=self._peer(),
                hello_kind=ev.hello.kind.value,
                name=ev.hello.name,
                tls=f"{ev.tls_version} {ev.cipher}" if ev.tls_version else "none",
            )
            self._handshake_obs.fire(ev)
            if self.on_handshake is not None:
                self.on_handshake(self.channel)
        elif isinstance(ev, TlsEstablished):
            self.tls = ev
        elif isinstance(ev, ConnectionClosed):
            pass

    def _refuse(self, exc: RemoteProtocolError) -> None:
        """Play out a refusal: reply now, each delayed step later, then close."""
        self.error = exc
        self._refusing = True
        self._cancel_timer()
        self.log.info("bareosproto: {peer} refused: {why}", peer=self._peer(), why=exc.message)
        if not self._handshake_obs.fired:
            self._handshake_obs.fire(Failure(exc))
        self._socket = None
        out = self._out
        if exc.reply and out is not None:
            out.write(exc.reply)
        at = 0.0
        for step in exc.delayed:
            at += step.after
            self._refusal.append(self.reactor.callLater(at, self._write_step, step))
        at += exc.close_after
        if at > 0:
            self._refusal.append(self.reactor.callLater(at, self._close_after_refusal))
        else:
            self._close_after_refusal()

    def _peer(self) -> str:
        transport = self.transport
        peer = transport.getPeer() if transport is not None else None
        host, port = getattr(peer, "host", None), getattr(peer, "port", None)
        return f"{host}:{port}" if host is not None else "-"

    def _write_step(self, step: DelayedReply) -> None:
        out = self._out
        if out is not None:
            out.write(step.data)

    def _close_after_refusal(self) -> None:
        out = self._out
        if out is not None:
            out.loseConnection()

    def _timed_out(self) -> None:
        self._timer = None
        err = RemoteProtocolError(f"handshake not complete after {self.handshake_timeout} s")
        self.error = err
        self._handshake_obs.fire(Failure(err))
        self.abort()

    def _cancel_timer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

