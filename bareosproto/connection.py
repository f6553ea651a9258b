"""One Bareos connection, sans-IO: TLS, Hello, CRAM-MD5, greeting, then frames.

:class:`ClientConnection` is the side that connects (console, Director to FD
or SD, client-initiated FD, FD or SD on a data channel, tray monitor);
:class:`ServerConnection` the side that accepts (Director, FD, SD).  Both
follow h11's pattern::

    conn.receive_data(data) -> list of events
    conn.send_message(payload) / conn.send_signal(signal)   (once OPEN)
    conn.data_to_send() -> bytes to write

and ``receive_data(b"")`` for EOF.  The phases are in :data:`CLIENT_TRANSITIONS`
and :data:`SERVER_TRANSITIONS`; the CRAM-MD5 step is
:class:`~bareosproto.auth.TwoWayAuth` and TLS is
:class:`~bareosproto.tls.TlsEngine`.  A phase change hands the bytes the
previous phase had not consumed to the next one.

Errors: :class:`~bareosproto.errors.RemoteProtocolError` carries everything
Bareos writes in that situation (``reply`` now, ``delayed`` later, then close
after ``close_after`` seconds): the caller writes it and closes.
"""

from __future__ import annotations

import enum
import functools
import ssl
import struct
from collections.abc import Sequence
from typing import Callable, NoReturn

import attrs

from .auth import FAILURE_DELAY, Role, TwoWayAuth
from .cram import default_nonce
from .errors import DelayedReply, LocalProtocolError, RemoteProtocolError
from .events import AuthSucceeded, ConnectionClosed, Event, Message
from .frames import MAX_MESSAGE_LENGTH, TERMINATE, FrameDecoder, encode_message, encode_signal
from .hello import HELLO_LENGTH_LIMITS, Hello, HelloKind, detect_peer, parse_hello
from .keys import Secret
from .names import USER_AGENT, ResourceType, parse_psk_identity, psk_identity, qualified_name
from .replies import (
    DIRECTOR_NOT_AUTHORIZED,
    FD_AUTH_FAILED,
    NO_ENCRYPTION,
    SD_NO_GO,
    SELF_COMPILED_SERVICES,
    DirectorGreeting,
    FdHelloOk,
    Greeting,
    GreetingForm,
    ResponseId,
    ResponseMessage,
    SdHelloOk,
    console_info,
    parse_greeting,
)
from .tls import TlsEngine, TlsState, psk_client_context, psk_server_context
from .tls_policy import TlsPolicy
from .versions import BAREOS_26, FD_PROTOCOL_VERSION, BareosVersion

__all__ = [
    "ConnectionType",
    "Daemon",
    "Credentials",
    "ConnState",
    "ClientConnection",
    "ServerConnection",
    "ServerConfig",
    "TlsEstablished",
    "HandshakeComplete",
    "CLIENT_TRANSITIONS",
    "SERVER_TRANSITIONS",
    "FD_FAILURE_DELAY",
    "identity_key",
    "server_psk_context",
]

#: The FD's delay after a failed authentication (``filed/authenticate.cc``).
FD_FAILURE_DELAY = 6.0


class ConnectionType(enum.Enum):
    """The connections of PROTOCOL.md section 7 (numbers as in the manual)."""

    __hash__ = object.__hash__  # members are singletons: identity hash, no Python-level call

    CONSOLE = "1"  #: named console (1) or default console ``*UserAgent*`` (2) to Director
    DIRECTOR_FD = "3"
    CLIENT_INITIATED = "4"  #: FD to Director
    DIRECTOR_SD = "5"
    FD_SD = "6"
    SD_FD_PASSIVE = "7"
    SD_SD = "8"
    MONITOR_DIRECTOR = "9"
    MONITOR_FD = "10"
    MONITOR_SD = "11"


class Daemon(enum.Enum):
    """Which daemon accepts a connection."""

    __hash__ = object.__hash__  # members are singletons: identity hash, no Python-level call

    DIRECTOR = "director"
    FD = "fd"
    SD = "sd"


@attrs.frozen
class Credentials:
    """What a daemon holds for one peer: the key and its TLS policy towards it."""

    key: Secret
    tls_policy: TlsPolicy = TlsPolicy.NONE


@attrs.frozen
class TlsEstablished(Event):
    """The TLS handshake finished (immediate TLS-PSK, or the step after CRAM-MD5)."""

    version: str | None
    cipher: str | None
    psk_identity: str | None


@attrs.frozen
class HandshakeComplete(Event):
    """Hello, authentication and greeting are done: frames flow from now on.

    ``hello`` is the Hello of the connecting side; ``greeting`` what the
    accepting side answered (``None`` on data channels); ``info`` the text
    of a console login's ``1002`` message.
    """

    hello: Hello
    greeting: Greeting | None
    info: str | None
    tls_version: str | None
    cipher: str | None
    remote_policy: TlsPolicy | int


class ConnState(enum.Enum):
    # identity hash (members are singletons): the table lookup of every frame sent or
    # received then costs no Python-level Enum.__hash__ call
    __hash__ = object.__hash__

    IDLE = "idle"
    AWAIT_FIRST_BYTES = "await-first-bytes"  #: server: TLS or cleartext Hello?
    TLS_HANDSHAKE = "tls-handshake"  #: immediate TLS
    AWAIT_HELLO = "await-hello"
    AUTH = "auth"
    POST_AUTH_TLS = "post-auth-tls"  #: TLS after CRAM-MD5 (policy matrix)
    AWAIT_GREETING = "await-greeting"
    AWAIT_INFO = "await-info"  #: console: the 1002 message after 1000 OK
    OPEN = "open"
    CLOSED = "closed"
    FAILED = "failed"


class ConnInput(enum.Enum):
    __hash__ = object.__hash__

    INITIATE = "initiate"  #: local: the client starts
    FIRST_BYTES_TLS = "first bytes: TLS"
    FIRST_BYTES_HELLO = "first bytes: cleartext Hello"
    TLS_DONE = "TLS handshake done"
    HELLO = "Hello accepted"
    AUTH_TLS = "authenticated, TLS follows"
    AUTH_DONE = "authenticated"
    AUTH_DONE_NO_GREETING = "authenticated, no greeting on this channel"
    GREETING = "greeting"
    GREETING_MORE = "greeting, info message follows"
    INFO = "info message"
    FRAME = "frame"
    SEND = "send"
    EOF = "end of stream"


_S, _I = ConnState, ConnInput

#: ``{(state, input): next state}`` of the connecting side.
CLIENT_TRANSITIONS: dict[tuple[ConnState, ConnInput], ConnState] = {
    (_S.IDLE, _I.INITIATE): _S.AUTH,  # cleartext: the Hello is sent, CRAM-MD5 follows
    (_S.TLS_HANDSHAKE, _I.TLS_DONE): _S.AUTH,
    (_S.AUTH, _I.AUTH_TLS): _S.POST_AUTH_TLS,
    (_S.AUTH, _I.AUTH_DONE): _S.AWAIT_GREETING,
    (_S.AUTH, _I.AUTH_DONE_NO_GREETING): _S.OPEN,
    (_S.POST_AUTH_TLS, _I.AUTH_DONE): _S.AWAIT_GREETING,
    (_S.POST_AUTH_TLS, _I.AUTH_DONE_NO_GREETING): _S.OPEN,
    (_S.AWAIT_GREETING, _I.GREETING): _S.OPEN,
    (_S.AWAIT_GREETING, _I.GREETING_MORE): _S.AWAIT_INFO,
    (_S.AWAIT_INFO, _I.INFO): _S.OPEN,
    (_S.OPEN, _I.FRAME): _S.OPEN,
    (_S.OPEN, _I.SEND): _S.OPEN,
    (_S.OPEN, _I.EOF): _S.CLOSED,
}

#: ``{(state, input): next state}`` of the accepting side.
SERVER_TRANSITIONS: dict[tuple[ConnState, ConnInput], ConnState] = {
    (_S.AWAIT_FIRST_BYTES, _I.FIRST_BYTES_TLS): _S.TLS_HANDSHAKE,
    (_S.AWAIT_FIRST_BYTES, _I.FIRST_BYTES_HELLO): _S.AWAIT_HELLO,
    (_S.TLS_HANDSHAKE, _I.TLS_DONE): _S.AWAIT_HELLO,
    (_S.AWAIT_HELLO, _I.HELLO): _S.AUTH,
    (_S.AUTH, _I.AUTH_TLS): _S.POST_AUTH_TLS,
    (_S.AUTH, _I.AUTH_DONE): _S.OPEN,  # the greeting is sent on the way
    (_S.AUTH, _I.AUTH_DONE_NO_GREETING): _S.OPEN,
    (_S.POST_AUTH_TLS, _I.AUTH_DONE): _S.OPEN,
    (_S.POST_AUTH_TLS, _I.AUTH_DONE_NO_GREETING): _S.OPEN,
    (_S.OPEN, _I.FRAME): _S.OPEN,
    (_S.OPEN, _I.SEND): _S.OPEN,
    (_S.OPEN, _I.EOF): _S.CLOSED,
}

# The byte path of an open connection skips the lookup of what the tables say about it:
# a frame received or sent leaves the connection OPEN.
assert all(
    table[(_S.OPEN, what)] is _S.OPEN
    for table in (CLIENT_TRANSITIONS, SERVER_TRANSITIONS)
    for what in (_I.FRAME, _I.SEND)
)

# connection type -> (Hello kind, resource type of our challenge name, greeting expected)
_CLIENT_TYPES: dict[ConnectionType, tuple[HelloKind, ResourceType | None, bool]] = {
    ConnectionType.CONSOLE: (HelloKind.CONSOLE, ResourceType.R_CONSOLE, True),
    ConnectionType.DIRECTOR_FD: (HelloKind.DIRECTOR, ResourceType.R_DIRECTOR, True),
    ConnectionType.CLIENT_INITIATED: (HelloKind.CLIENT, ResourceType.R_CLIENT, True),
    ConnectionType.DIRECTOR_SD: (HelloKind.DIRECTOR, ResourceType.R_DIRECTOR, True),
    ConnectionType.FD_SD: (HelloKind.START_JOB, ResourceType.R_CLIENT, False),
    ConnectionType.SD_FD_PASSIVE: (HelloKind.STORAGE_START_JOB, None, False),
    ConnectionType.SD_SD: (HelloKind.START_STORAGE_JOB, ResourceType.R_STORAGE, False),
    ConnectionType.MONITOR_DIRECTOR: (HelloKind.CONSOLE, ResourceType.R_MONITOR, True),
    ConnectionType.MONITOR_FD: (HelloKind.DIRECTOR, ResourceType.R_MONITOR, True),
    ConnectionType.MONITOR_SD: (HelloKind.DIRECTOR, ResourceType.R_MONITOR, True),
}

#: The SD's challenge name towards a passive FD is this literal, bashed.
FILE_DAEMON_NAME = b"File\x01daemon"


_pack_header = struct.Struct(">i").pack


def _frame_chunks(frames: Sequence[bytes | int]) -> list[bytes]:
    """The frames' bytes as chunks: header and payload apart (the payload
    uncopied), a signal's 4 bytes, a long message split as Bareos splits it."""
    out: list[bytes] = []
    for frame in frames:
        if frame.__class__ is bytes:
            n = len(frame)
            if 0 < n <= MAX_MESSAGE_LENGTH:
                out += (_pack_header(n), frame)
                continue
        if isinstance(frame, int):
            out.append(encode_signal(frame))
        else:
            out.append(encode_message(frame))
    return out


@functools.lru_cache(maxsize=64)
def _cached_psk_client_context(identity: str, key: Secret) -> ssl.SSLContext:
    """One client context per identity and key: building one costs more than a
    whole cleartext login, and one context serves any number of connections."""
    return psk_client_context(identity, key)


class _Base:
    """What both sides share: the byte path through TLS and the frame decoder."""

    _transitions: dict[tuple[ConnState, ConnInput], ConnState]

    def __init__(self, clock: Callable[[], float], nonce: Callable[[], int], failure_delay: float) -> None:
        self._clock = clock
        self._nonce = nonce
        self.failure_delay = failure_delay
        self.state = ConnState.IDLE
        self._decoder = FrameDecoder()
        self._tls: TlsEngine | None = None
        self._tls_reported = False
        self._outgoing: list[bytes] = []  # chunks: a frame's payload is not copied here
        self._auth: TwoWayAuth | None = None
        self._error: RemoteProtocolError | None = None
        self._events: list[Event] = []
        #: ``trace("recv"|"send", frame)`` for every plaintext frame, if set
        self.trace: Callable[[str, Event], None] | None = None
        self._trace_decoder: FrameDecoder | None = None

    # -- table ---------------------------------------------------------------

    def _transition(self, what: ConnInput) -> None:
        try:
            self.state = self._transitions[(self.state, what)]
        except KeyError:
            old = self.state
            if what in (ConnInput.INITIATE, ConnInput.SEND):
                raise LocalProtocolError(f"{what.value} is not allowed in state {old.value}") from None
            self._fail(f"unexpected {what.value} in state {old.value}", TERMINATE)

    # -- public --------------------------------------------------------------

    @property
    def tls(self) -> TlsEngine | None:
        """The TLS engine, once TLS is in use."""
        return self._tls

    def data_to_send(self) -> bytes:
        """The bytes to write now.  Empty once the connection failed: what Bareos
        writes then is on the error (``reply``, ``delayed``)."""
        return b"".join(self.data_to_send_chunks())

    def data_to_send_chunks(self) -> list[bytes]:
        """:meth:`data_to_send` as a list of chunks to write in order, without
        joining them (a cleartext message's payload is the caller's object)."""
        out, self._outgoing = self._outgoing, []
        if self._tls is not None:
            tls_out = self._tls.data_to_send()
            if tls_out:
                out.append(tls_out)
        return [] if self.state is ConnState.FAILED else out

    def send_message(self, payload: bytes) -> None:
        """Send one message (split above 999,996 bytes as Bareos does); only when OPEN."""
        if self.state is not ConnState.OPEN:  # (OPEN, SEND) -> OPEN: nothing to look up
            self._transition(ConnInput.SEND)
        n = len(payload)
        if self._tls is None and self.trace is None and 0 < n <= MAX_MESSAGE_LENGTH and type(payload) is bytes:
            # header and payload as two chunks: the payload is not copied
            self._outgoing += (n.to_bytes(4, "big"), payload)
        else:
            self._write(encode_message(payload))

    def send_frames(self, frames: Sequence[bytes | int]) -> list[bytes]:
        """:meth:`send_message` or :meth:`send_signal` for each frame (a payload,
        or a negative ``int``), in order, then :meth:`data_to_send_chunks`: the
        bulk path of the data channels, one call per batch of frames."""
        if self.state is ConnState.OPEN and self.trace is None and self._tls is None and not self._outgoing:
            # (OPEN, SEND) -> OPEN for each frame; a payload goes out uncopied after its header.
            # Inside TLS each frame is one write of header and payload, as Bareos' SendPacket()
            # does: the records then fall where a daemon's fall.
            return _frame_chunks(frames)
        for frame in frames:
            if isinstance(frame, int):
                self.send_signal(frame)
            else:
                self.send_message(frame)
        return self.data_to_send_chunks()

    def send_signal(self, signal: int) -> None:
        """Send a signal frame; only when OPEN."""
        self._transition(ConnInput.SEND)
        self._write(encode_signal(signal))

    def close(self) -> None:
        """Start a clean close: a TLS close_notify if TLS is up (bytes in data_to_send)."""
        if self._tls is not None and self._tls.state is TlsState.OPEN:
            self._tls.close()

    def receive_data(self, data: bytes) -> list[Event]:
        """Feed bytes from the peer (``b""``: EOF); returns the events they complete."""
        if self._error is not None:
            raise self._error
        self._events = []
        try:
            self._receive(data)
        except RemoteProtocolError as exc:
            if exc is not self._error:
                self._fail_with(exc)
            raise
        return self._events

    def receive_views(self, data: bytes) -> list[memoryview | int] | None:
        """The byte path of an open connection without events, for bulk data:
        the frames ``data`` completes, each its payload or its signal (a
        negative ``int``), in one list.  ``None`` (nothing read) when this path
        does not apply: before the connection is OPEN, while :attr:`trace` is
        set, and for EOF; feed the same bytes to :meth:`receive_data` then.

        Each payload is a ``memoryview`` (:meth:`FrameDecoder.receive_views`):
        of ``data``, of the buffer TLS decrypted into, or of the decoder's
        buffer for a frame that spanned calls.  **Valid only until the next
        call** on this connection: copy what you keep.  The table's transition
        for each frame is ``(OPEN, FRAME) -> OPEN``, as in :meth:`receive_data`.
        """
        if self.state is not ConnState.OPEN or self.trace is not None or not data:
            return None
        try:
            if self._tls is not None:
                plain = self._through_tls(data)
                return self._decoder.receive_views(plain) if plain else []
            return self._decoder.receive_views(data)
        except RemoteProtocolError as exc:
            if exc is not self._error:
                self._fail_with(exc)
            raise

    # -- byte path -----------------------------------------------------------

    def _receive(self, data: bytes) -> None:
        raise NotImplementedError

    def _write(self, frame: bytes) -> None:
        if self.trace is not None:
            if self._trace_decoder is None:
                self._trace_decoder = FrameDecoder()
            for ev in self._trace_decoder.receive_data(frame):
                self.trace("send", ev)
        if self._tls is not None:
            self._tls.send(frame)
        else:
            self._outgoing.append(frame)

    def _through_tls(self, data: bytes) -> bytes | memoryview:
        """Ciphertext in, plaintext out (or ``data`` itself without TLS).  The
        plaintext may be a view of the TLS engine's buffer, valid until the
        engine is called again: the frame decoder copies out what it keeps."""
        if self._tls is None:
            return data
        plain = self._tls.receive_data_view(data)
        if self._tls.handshake_done and not self._tls_reported:
            self._tls_reported = True
            self._events.append(
                TlsEstablished(self._tls.version, self._tls.cipher, self._tls.psk_identity)
            )
            self._on_tls_done()
        if not data:
            return b""
        return plain

    def _on_tls_done(self) -> None:
        if self.state is ConnState.TLS_HANDSHAKE:
            self._transition(ConnInput.TLS_DONE)
        elif self.state is ConnState.POST_AUTH_TLS:
            self._after_auth()

    def _after_auth(self) -> None:
        raise NotImplementedError

    def _frames(self, plain: bytes | memoryview, eof: bool) -> None:
        if plain and self.state is ConnState.OPEN and self.trace is None:
            # (OPEN, FRAME) -> OPEN: every frame of an open connection is an event as it is
            events = self._decoder.receive_data(plain)
            if self._events:
                self._events += events
            else:
                self._events = events
        elif plain:
            for ev in self._decoder.receive_data(plain):
                self._on_frame(ev)
                if self.state in (ConnState.TLS_HANDSHAKE, ConnState.POST_AUTH_TLS):
                    # the bytes after this frame belong to TLS
                    rest = self._decoder.take_buffered()
                    if rest:
                        self._feed_tls(rest)
                    return
        if eof:
            for ev in self._decoder.receive_data(b""):
                self._on_frame(ev)

    def _feed_tls(self, data: bytes) -> None:
        """Bytes after a frame that switched to TLS: they belong to the TLS engine."""
        plain = self._through_tls(data)
        self._frames(plain, eof=False)

    def _on_frame(self, ev: Event) -> None:
        if self.trace is not None and not isinstance(ev, ConnectionClosed):
            self.trace("recv", ev)
        if self.state is ConnState.AUTH:
            assert self._auth is not None
            try:
                result = self._auth.receive(ev)
            except RemoteProtocolError as exc:
                self._daemon_auth_failure(exc)
            self._flush_auth()
            if result is not None:
                self._authenticated(result)
            return
        if isinstance(ev, ConnectionClosed):
            if self.state is ConnState.OPEN:
                self._transition(ConnInput.EOF)
                self._events.append(ev)
                return
            self._fail(f"connection closed in state {self.state.value}", b"", close_after=0.0)
        self._on_other_frame(ev)

    def _on_other_frame(self, ev: Event) -> None:
        if self.state is ConnState.OPEN:
            self._transition(ConnInput.FRAME)
            self._events.append(ev)
            return
        self._fail(f"unexpected {ev!r} in state {self.state.value}", TERMINATE)

    def _flush_auth(self) -> None:
        assert self._auth is not None
        out = self._auth.data_to_send()
        if out:
            self._write(out)

    def _authenticated(self, result: AuthSucceeded) -> None:
        raise NotImplementedError

    def _daemon_auth_failure(self, exc: RemoteProtocolError) -> NoReturn:
        """Fail as this side's daemon does after ``TwoWayAuthenticate()`` failed."""
        raise NotImplementedError

    # -- failure -------------------------------------------------------------

    def _fail(self, message: str, reply: bytes = TERMINATE, delayed: tuple[DelayedReply, ...] = (),
              close_after: float = 0.0) -> NoReturn:
        """Fail with what Bareos writes: inside TLS, the replies go through TLS too."""
        tls = self._tls
        if tls is not None and tls.state is TlsState.OPEN:
            tls.send(reply)
            reply = tls.data_to_send()
            encrypted = []
            for step in delayed:
                tls.send(step.data)
                encrypted.append(DelayedReply(step.after, tls.data_to_send()))
            delayed = tuple(encrypted)
        elif tls is not None and tls.handshake_done:
            # TLS is over (EOF or an error): nothing more can be written in it;
            # Bareos' sleeps still decide when the socket closes.
            close_after += sum(step.after for step in delayed)
            reply, delayed = b"", ()
        else:
            reply = b"".join(self._outgoing) + reply
            self._outgoing.clear()
        self._fail_with(RemoteProtocolError(message, reply=reply, delayed=delayed, close_after=close_after))

    def _fail_with(self, exc: RemoteProtocolError) -> NoReturn:
        self.state = ConnState.FAILED
        self._error = exc
        raise exc

    def _auth_failed(self, exc: RemoteProtocolError, extra: tuple[DelayedReply, ...] = (),
                     close_after: float | None = None) -> NoReturn:
        """Re-raise an authentication failure with the daemon's own steps appended."""
        self._fail(exc.message, exc.reply, exc.delayed + extra,
                   exc.close_after if close_after is None else close_after)


@functools.lru_cache(maxsize=256)
def _hello_frame(hello: Hello) -> bytes:
    return encode_message(hello.to_bytes())


class ClientConnection(_Base):
    """The connecting side of any connection type.

    ``name`` is our resource name (console, Director, client, storage or
    monitor name); data channels also need ``job``, the unique job name.
    ``tls=True`` starts with immediate TLS-PSK (identity and key as Bareos
    derives them); ``tls_context`` replaces the PSK context (e.g. for
    certificates).  ``post_auth_tls_context`` is used if the policy matrix
    asks for TLS after a cleartext CRAM-MD5.  ``release`` decides the Hello
    form (``BAREOS_25``: no ``Version=`` suffix); ``old_console=True`` sends
    the 12.4 console Hello ``Hello <name> calling``.
    """

    _transitions = CLIENT_TRANSITIONS

    def __init__(
        self,
        conn_type: ConnectionType,
        *,
        name: str,
        key: Secret,
        clock: Callable[[], float],
        job: str | None = None,
        tls_policy: TlsPolicy = TlsPolicy.NONE,
        tls: bool = False,
        tls_context: ssl.SSLContext | None = None,
        post_auth_tls_context: ssl.SSLContext | None = None,
        release: BareosVersion = BAREOS_26,
        old_console: bool = False,
        nonce: Callable[[], int] = default_nonce,
        failure_delay: float = FAILURE_DELAY,
    ) -> None:
        super().__init__(clock, nonce, failure_delay)
        self.conn_type = conn_type
        kind, own_type, self._expects_greeting = _CLIENT_TYPES[conn_type]
        if kind in (HelloKind.START_JOB, HelloKind.STORAGE_START_JOB, HelloKind.START_STORAGE_JOB):
            if not job:
                raise LocalProtocolError(f"a {conn_type.name} connection needs the unique job name")
            hello_name = job
        else:
            hello_name = name
        if kind is HelloKind.CONSOLE:
            self.hello = Hello.console(hello_name, None if old_console else release)
        elif kind is HelloKind.CLIENT:
            self.hello = Hello.client(hello_name, release)
        else:
            self.hello = Hello(kind, hello_name, release.numeric)
        self._hello_bytes = _hello_frame(self.hello)
        self.own_qualified_name = (
            FILE_DAEMON_NAME if own_type is None else qualified_name(own_type, name)
        )
        self._key = key
        self.tls_policy = tls_policy
        if tls and tls_context is None:
            tls_context = _cached_psk_client_context(psk_identity(self.hello.peer_type, hello_name), key)
        self._tls_context = tls_context
        self._post_auth_tls_context = post_auth_tls_context
        self._greeting: Greeting | None = None
        self._remote_policy: TlsPolicy | int = TlsPolicy.UNKNOWN

    def __repr__(self) -> str:
        return f"<ClientConnection {self.conn_type.name} {self.state.value} {self.hello.name!r}>"

    def initiate(self) -> None:
        """Start: the TLS ClientHello, or the Hello frame, is in ``data_to_send()``.

        With TLS the Hello waits inside the engine and goes out, encrypted, as
        soon as the handshake completes.
        """
        if self.state is not ConnState.IDLE:
            raise LocalProtocolError(f"initiate() in state {self.state.value}")
        self._auth = TwoWayAuth(
            Role.CONNECTOR,
            own_qualified_name=self.own_qualified_name,
            key=self._key,
            local_policy=self.tls_policy,
            clock=self._clock,
            nonce=self._nonce,
            tls_active=self._tls_context is not None,
            failure_delay=self.failure_delay,
        )
        self._auth.start()
        if self._tls_context is not None:
            self._tls = TlsEngine(self._tls_context, server_side=False)
            self._write(self._hello_bytes)  # waits in the engine for the handshake
            self.state = ConnState.TLS_HANDSHAKE
            return
        self._transition(ConnInput.INITIATE)
        self._write(self._hello_bytes)

    def _receive(self, data: bytes) -> None:
        if self.state is ConnState.IDLE:
            raise LocalProtocolError("receive_data() before initiate()")
        plain = self._through_tls(data)
        self._frames(plain, eof=not data)

    def _authenticated(self, result: AuthSucceeded) -> None:
        self._remote_policy = result.remote_policy
        if result.tls is not TlsPolicy.NONE:
            self._transition(ConnInput.AUTH_TLS)
            if self._post_auth_tls_context is None:
                self._fail("the peer wants TLS after CRAM-MD5 and no certificate TLS is configured",
                           b"")
            self._tls = TlsEngine(self._post_auth_tls_context, server_side=False)
            return
        self._after_auth()

    def _after_auth(self) -> None:
        if self._expects_greeting:
            self._transition(ConnInput.AUTH_DONE)
        else:
            self._transition(ConnInput.AUTH_DONE_NO_GREETING)
            self._complete(None)

    def _daemon_auth_failure(self, exc: RemoteProtocolError) -> NoReturn:
        extra: tuple[DelayedReply, ...] = ()
        if self.conn_type is ConnectionType.DIRECTOR_FD:
            # the Director sends BNET_TERMINATE after its own sleep (PROTOCOL.md 15.6)
            extra = (DelayedReply(exc.close_after, TERMINATE),)
        self._auth_failed(exc, extra, close_after=0.0 if extra else None)

    def _on_other_frame(self, ev: Event) -> None:
        if self.state is ConnState.AWAIT_GREETING:
            self._on_greeting(ev)
        elif self.state is ConnState.AWAIT_INFO:
            self._on_info(ev)
        else:
            super()._on_other_frame(ev)

    def _on_greeting(self, ev: Event) -> None:
        if not isinstance(ev, Message):
            self._fail(f"expected the greeting, got {ev!r}", b"")
        payload = ev.payload
        kind = self.conn_type
        if kind is ConnectionType.CLIENT_INITIATED:
            # The FD reads this line and ignores what it says.
            try:
                self._greeting = parse_greeting(payload)
            except RemoteProtocolError:
                self._greeting = None
            self._transition(ConnInput.GREETING)
            self._complete(None)
            return
        try:
            greeting = parse_greeting(payload)
        except RemoteProtocolError as exc:
            self._fail(f"the peer refused or sent no greeting: {exc.message}", b"")
        if kind in (ConnectionType.DIRECTOR_SD, ConnectionType.MONITOR_SD):
            ok = isinstance(greeting, SdHelloOk)
        elif kind is ConnectionType.DIRECTOR_FD:
            ok = isinstance(greeting, FdHelloOk)
        elif kind is ConnectionType.MONITOR_FD:
            ok = payload.startswith(b"2000 OK Hello")
        else:  # consoles and the monitor's Director channel
            if self.hello.new_console_protocol:
                ok = isinstance(greeting, DirectorGreeting) and greeting.form is GreetingForm.RESPONSE_MESSAGE
                if isinstance(greeting, ResponseMessage) and greeting.id == ResponseId.PAM_REQUIRED:
                    self._fail("the Director asks for PAM, which this console does not do", b"")
            else:
                ok = isinstance(greeting, DirectorGreeting) and greeting.form is GreetingForm.CONSOLE_LINE
            if ok and self.hello.new_console_protocol:
                self._greeting = greeting
                self._transition(ConnInput.GREETING_MORE)
                return
        if not ok:
            self._fail(f"not the greeting of a {kind.name} connection: {payload[:100]!r}", b"")
        self._greeting = greeting
        self._transition(ConnInput.GREETING)
        self._complete(None)

    def _on_info(self, ev: Event) -> None:
        if not isinstance(ev, Message) or not ev.payload.startswith(b"1002\x1e"):
            self._fail(f"expected the 1002 info message, got {ev!r}", b"")
        self._transition(ConnInput.INFO)
        self._complete(ev.payload[5:].decode("utf-8", "surrogateescape"))

    def _complete(self, info: str | None) -> None:
        tls = self._tls
        self._events.append(
            HandshakeComplete(
                self.hello,
                self._greeting,
                info,
                tls.version if tls else None,
                tls.cipher if tls else None,
                self._remote_policy,
            )
        )


CredentialsLookup = Callable[[ResourceType, str], "Credentials | None"]


@attrs.frozen(kw_only=True)
class ServerConfig:
    """A daemon's side of accepting connections.

    ``lookup(type, name)`` gives the :class:`Credentials` for a peer:
    ``R_CONSOLE`` names (``*UserAgent*`` is the default console, keyed with
    the Director password and the Director resource's policy) and
    ``R_CLIENT`` names on a Director; ``R_DIRECTOR`` names on an FD or SD;
    ``R_JOB`` unique job names on an FD or SD (the running job's session key,
    and the ``ssl=`` policy the Director gave for it, 0 by default).  Its
    ``tls_policy`` decides whether a cleartext Hello is let in, and is the
    ``ssl=`` of our challenge, except on data channels, where the challenge
    carries ``own_tls_policy`` (the daemon's own resource).  ``tls=True``
    accepts immediate TLS-PSK.  ``psk_name_check`` is the Bareos 26 rule that the
    Hello names the resource whose PSK was used (25.x peers do not need it).
    """

    daemon: Daemon
    name: str
    lookup: CredentialsLookup
    release: BareosVersion = BAREOS_26
    tls: bool = True
    own_tls_policy: TlsPolicy = TlsPolicy.REQUIRED
    post_auth_tls_context: ssl.SSLContext | None = None
    psk_name_check: bool = True
    services_text: str = SELF_COMPILED_SERVICES
    failure_delay: float = FAILURE_DELAY
    fd_failure_delay: float = FD_FAILURE_DELAY
    fd_protocol_version: int = FD_PROTOCOL_VERSION


def identity_key(config: ServerConfig, identity: str) -> Secret | None:
    """The key a daemon holds for a TLS-PSK identity (``R_TYPE\x1ename``), or None."""
    try:
        rtype, name = parse_psk_identity(identity)
    except RemoteProtocolError:
        return None
    creds = config.lookup(rtype, name)
    return creds.key if creds is not None else None


def server_psk_context(config: ServerConfig) -> ssl.SSLContext:
    """One TLS-PSK server context for every connection a daemon accepts."""
    return psk_server_context(lambda identity: identity_key(config, identity))


_SERVER_KINDS: dict[Daemon, frozenset[HelloKind]] = {
    Daemon.DIRECTOR: frozenset({HelloKind.CONSOLE, HelloKind.CLIENT}),
    Daemon.FD: frozenset({HelloKind.DIRECTOR, HelloKind.STORAGE_START_JOB}),
    Daemon.SD: frozenset({HelloKind.DIRECTOR, HelloKind.START_JOB, HelloKind.START_STORAGE_JOB}),
}
_OWN_TYPE = {Daemon.DIRECTOR: ResourceType.R_DIRECTOR, Daemon.FD: ResourceType.R_CLIENT,
             Daemon.SD: ResourceType.R_STORAGE}


#: ``TwoWayAuthenticate()``'s job message per failure (``bsock.cc``), by the
#: start of the core's error message.
_FD_JOB_MESSAGES = (
    ("Authorization key rejected", "Authorization key rejected by {}.\n"),
    ("Wrong format of the CRAM challenge", "Wrong format of the CRAM challenge with {}.\n"),
    ("Network error during CRAM MD5", "Network error during CRAM MD5 with {}\n"),
    ("Warning! Attack detected", "Warning! Attack detected: I will not answer to my own challenge. "
                                 "Please check integrity of the host at IP address: {}\n"),
)


def _fd_job_message(message: str, host: str) -> bytes | None:
    for prefix, text in _FD_JOB_MESSAGES:
        if message.startswith(prefix):
            return text.format(host).encode()
    return None


class ServerConnection(_Base):
    """The accepting side: decides TLS or cleartext from the first bytes,
    judges the Hello, authenticates and greets as the daemon would.

    ``peer_host`` only appears in the lines Bareos sends after a failure
    (``Authorization key rejected by <host>.``).
    """

    _transitions = SERVER_TRANSITIONS

    def __init__(
        self,
        config: ServerConfig,
        *,
        clock: Callable[[], float],
        nonce: Callable[[], int] = default_nonce,
        peer_host: str = "127.0.0.1",
        psk_context: ssl.SSLContext | None = None,
    ) -> None:
        super().__init__(clock, nonce, config.failure_delay)
        self.config = config
        self.peer_host = peer_host
        self.state = ConnState.AWAIT_FIRST_BYTES
        self._first = bytearray()
        self._psk_context = psk_context
        self.hello: Hello | None = None
        self.credentials: Credentials | None = None
        self.own_qualified_name = qualified_name(_OWN_TYPE[config.daemon], config.name)

    def __repr__(self) -> str:
        peer = self.hello.name if self.hello else None
        return f"<ServerConnection {self.config.daemon.value} {self.state.value} peer={peer!r}>"

    def psk_lookup(self, identity: str) -> Secret | None:
        """The key of a PSK identity, through ``config.lookup``."""
        return identity_key(self.config, identity)

    def _receive(self, data: bytes) -> None:
        if self.state is ConnState.AWAIT_FIRST_BYTES:
            if not data:
                self._fail("connection closed before a Hello", b"", close_after=0.0)
            self._first += data
            if len(self._first) < 10:
                return
            first, self._first = bytes(self._first), bytearray()
            if first[4:10] == b"Hello ":
                self._transition(ConnInput.FIRST_BYTES_HELLO)
                self._frames(first, eof=False)
                return
            if not self.config.tls:
                self._fail("not a cleartext Hello and TLS is off", TERMINATE)
            self._transition(ConnInput.FIRST_BYTES_TLS)
            context = self._psk_context or psk_server_context(self.psk_lookup)
            self._tls = TlsEngine(context, server_side=True)
            data = first
        plain = self._through_tls(data)
        self._frames(plain, eof=not data)

    def _on_other_frame(self, ev: Event) -> None:
        if self.state is ConnState.AWAIT_HELLO:
            self._on_hello(ev)
        else:
            super()._on_other_frame(ev)

    # -- Hello ---------------------------------------------------------------

    def _on_hello(self, ev: Event) -> None:
        if not isinstance(ev, Message) or not ev.payload:
            self._fail(f"Connection request failed: {ev!r} instead of a Hello")
        assert isinstance(ev, Message)
        payload = ev.payload
        cfg = self.config
        in_tls = self._tls is not None
        try:
            info = detect_peer(payload)
        except RemoteProtocolError as exc:
            self._fail(exc.message)
        creds = cfg.lookup(info.peer_type, info.name)
        if creds is None:
            self._fail(f"no resource for {info.peer_type.value} {info.name!r}")
        assert creds is not None
        if not in_tls:
            if not self._cleartext_allowed(info.peer_type, info.console_protocol, creds.tls_policy):
                self._fail(f"cleartext Hello from {info.peer_type.value} {info.name!r} refused by TLS policy")
        try:
            hello = parse_hello(payload)
        except RemoteProtocolError as exc:
            # the name resolved but the rest does not parse: Bareos sleeps first
            self._fail(exc.message, b"", (DelayedReply(cfg.failure_delay, TERMINATE),))
        if hello.kind not in _SERVER_KINDS[cfg.daemon]:
            self._fail(f"Connection request failed (unknown type): {payload[:100]!r}")
        low, high = HELLO_LENGTH_LIMITS[self._length_window(hello.kind)]
        if not low <= len(payload) <= high:
            # socket_server.cc: log, sleep 5 s, then BNET_TERMINATE (PROTOCOL.md 11 item 19)
            self._fail(f"Invalid connection. Len={len(payload)}", b"",
                       (DelayedReply(cfg.failure_delay, TERMINATE),))
        if in_tls and cfg.psk_name_check:
            self._check_psk_name(hello)
        self.hello = hello
        self.credentials = creds
        self._transition(ConnInput.HELLO)
        self._auth = TwoWayAuth(
            Role.ACCEPTOR,
            own_qualified_name=self.own_qualified_name,
            key=creds.key,
            # data channels: the daemon's own resource, not the job, sets ssl=
            local_policy=cfg.own_tls_policy if hello.peer_type is ResourceType.R_JOB else creds.tls_policy,
            clock=self._clock,
            nonce=self._nonce,
            tls_active=in_tls,
            failure_delay=cfg.failure_delay,
        )
        self._auth.start()
        self._flush_auth()

    def _length_window(self, kind: HelloKind) -> str:
        if self.config.daemon is Daemon.DIRECTOR:
            return "director"
        if self.config.daemon is Daemon.SD:
            return "sd"
        return "fd-from-sd" if kind is HelloKind.STORAGE_START_JOB else "fd-from-director"

    @staticmethod
    def _cleartext_allowed(peer: ResourceType, console_protocol: int | None, policy: int) -> bool:
        """``GetHandshakeMode()`` (PROTOCOL.md 6.3 step 6)."""
        if peer is ResourceType.R_CLIENT:
            return policy != TlsPolicy.REQUIRED
        if peer is ResourceType.R_CONSOLE and (console_protocol is None or console_protocol < 1802):
            return True
        return policy == TlsPolicy.NONE

    def _check_psk_name(self, hello: Hello) -> None:
        assert self._tls is not None
        identity = self._tls.psk_identity
        if identity is None:
            return  # certificate TLS: nothing to compare
        rtype, name = parse_psk_identity(identity)
        if rtype is not hello.peer_type or name != hello.name:
            self._fail(
                f"tried authenticating as '{hello.peer_type.value}::{hello.name}' "
                f"but used psk for '{rtype.value}::{name}'",
                b"",
                (DelayedReply(self.config.failure_delay, TERMINATE),),
            )

    # -- authentication ------------------------------------------------------

    def _daemon_auth_failure(self, exc: RemoteProtocolError) -> NoReturn:
        """Append what each daemon sends after ``TwoWayAuthenticate()`` failed."""
        assert self.hello is not None
        cfg = self.config
        d = cfg.failure_delay
        kind = self.hello.kind
        line = encode_message
        if cfg.daemon is Daemon.DIRECTOR:
            if kind is HelloKind.CLIENT:
                self._auth_failed(exc, (DelayedReply(exc.close_after, line(DIRECTOR_NOT_AUTHORIZED)),), d)
            elif not self.hello.new_console_protocol:
                self._auth_failed(exc, (DelayedReply(exc.close_after, line(DIRECTOR_NOT_AUTHORIZED)),), 0.0)
            else:
                self._auth_failed(exc)
        elif cfg.daemon is Daemon.FD:
            # The FD's job message about the failure goes to the Director just
            # before TwoWayAuthenticate()'s own 1999 (PROTOCOL.md 5.5, 15.6).
            steps, reply = exc.delayed, exc.reply
            failed = encode_message(b"1999 Authorization failed.\n")
            jmsg = _fd_job_message(exc.message, self.peer_host)
            if jmsg is not None:
                if steps and steps[0].data == failed:
                    steps = (DelayedReply(steps[0].after, line(jmsg) + steps[0].data),) + steps[1:]
                elif reply.endswith(failed):  # no sleep in CRAM-MD5: the 1999 went at once
                    reply = reply[: -len(failed)] + line(jmsg) + failed
            exc = RemoteProtocolError(exc.message, reply, steps, exc.close_after)
            extra = (DelayedReply(exc.close_after, line(FD_AUTH_FAILED)),) if kind is HelloKind.DIRECTOR else ()
            self._auth_failed(exc, extra, cfg.fd_failure_delay)
        else:
            extra = (DelayedReply(exc.close_after, line(SD_NO_GO)),) if kind is HelloKind.DIRECTOR else ()
            self._auth_failed(exc, extra, d)

    def _authenticated(self, result: AuthSucceeded) -> None:
        self._remote_policy = result.remote_policy
        if result.tls is not TlsPolicy.NONE:
            self._transition(ConnInput.AUTH_TLS)
            if self.config.post_auth_tls_context is None:
                self._fail("TLS after CRAM-MD5 needs certificate TLS, which is not configured", b"")
            self._tls = TlsEngine(self.config.post_auth_tls_context, server_side=True)
            return
        self._after_auth()

    def _after_auth(self) -> None:
        assert self.hello is not None
        greeting, info = self._greeting()
        if greeting is None:
            self._transition(ConnInput.AUTH_DONE_NO_GREETING)
        else:
            self._transition(ConnInput.AUTH_DONE)
            self._write(encode_message(greeting.to_bytes()))
            if info is not None:
                self._write(encode_message(console_info(info).to_bytes()))
        tls = self._tls
        self._events.append(
            HandshakeComplete(self.hello, greeting, info, tls.version if tls else None,
                              tls.cipher if tls else None, self._remote_policy)
        )

    def _greeting(self) -> tuple[Greeting | None, str | None]:
        assert self.hello is not None
        cfg = self.config
        kind = self.hello.kind
        if cfg.daemon is Daemon.DIRECTOR:
            if kind is HelloKind.CLIENT:
                return DirectorGreeting.of(cfg.name, cfg.release, GreetingForm.CLIENT_LINE), None
            if not self.hello.new_console_protocol:
                tls = self._tls
                cipher = f" Encryption: {tls.cipher} {tls.version}" if tls and tls.cipher else NO_ENCRYPTION
                return DirectorGreeting.of(cfg.name, cfg.release, GreetingForm.CONSOLE_LINE, cipher), None
            who = (
                "You are connected using the default console"
                if self.hello.name == USER_AGENT
                else f"You are logged in as: {self.hello.name}"
            )
            return DirectorGreeting.of(cfg.name, cfg.release), f"{cfg.services_text}\n{who}"
        if kind is HelloKind.DIRECTOR:
            if cfg.daemon is Daemon.FD:
                return FdHelloOk(cfg.fd_protocol_version), None
            return SdHelloOk(), None
        return None, None

    _remote_policy: TlsPolicy | int = TlsPolicy.UNKNOWN

