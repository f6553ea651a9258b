"""Daemon control channels: Director → FD, Director → SD, FD → Director.

Thin helpers over :func:`~bareosproto.twisted.factory.connect` and
:class:`~bareosproto.twisted.factory.BareosServerFactory`; the bytes are the
core's business (:class:`~bareosproto.connection.ClientConnection`,
:class:`~bareosproto.connection.ServerConnection`).

Connectors (each fires with an authenticated :class:`DaemonChannel`):

* :func:`connect_to_fd`: we are a Director, the peer a File Daemon
  (PROTOCOL.md 7.3; the FD must answer ``2000 OK Hello <n>``);
* :func:`connect_to_sd`: we are a Director, the peer a Storage Daemon
  (7.5; ``3000 OK Hello``);
* :func:`connect_to_director_as_client`: we are a client-initiated File
  Daemon (7.4; the handshake only, the waiting-connection pool comes later).

Acceptors (each returns a factory to ``listen()`` with; ``on_channel`` gets a
:class:`DaemonChannel` for every peer that authenticated):

* :func:`fd_server_factory`: we are a File Daemon (Directors, and the SD of a
  passive client by job name);
* :func:`sd_server_factory`: we are a Storage Daemon (Directors, FDs and SDs
  by job name);
* :func:`director_client_factory`: we are a Director taking
  client-initiated File Daemons.

Secrets are given as the clear password of the config file (a ``str``,
hashed to the MD5 hex Bareos uses) or as a :class:`~bareosproto.keys.Secret`
holding the key itself (e.g. a job session key).  Refused peers never reach
``on_channel``: they get Bareos' replies and delays and are closed
(PROTOCOL.md 11).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeAlias

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IStreamClientEndpoint

from ..auth import FAILURE_DELAY
from ..connection import (
    FD_FAILURE_DELAY,
    ClientConnection,
    ConnectionType,
    ConnState,
    Credentials,
    Daemon,
    HandshakeComplete,
    ServerConfig,
)
from ..errors import RemoteProtocolError
from ..events import Message, SignalFrame
from ..frames import FrameDecoder
from ..keys import Secret, as_key
from ..names import ResourceType
from ..replies import SELF_COMPILED_SERVICES
from ..signals import Signal
from ..tls_policy import TlsPolicy
from ..versions import BAREOS_26, FD_PROTOCOL_VERSION, BareosVersion
from ._types import ReactorTime
from .factory import BareosServerFactory, connect
from .protocol import HANDSHAKE_TIMEOUT, BareosProtocol, Channel

__all__ = [
    "DaemonChannel",
    "Frame",
    "PeerSecret",
    "JobLookup",
    "HEARTBEAT_SIGNALS",
    "connect_to_fd",
    "connect_to_sd",
    "connect_to_director_as_client",
    "fd_server_factory",
    "sd_server_factory",
    "director_client_factory",
    "text_lines",
]

Frame: TypeAlias = Message | SignalFrame
#: A peer's secret and our TLS policy towards it, as a daemon holds them.
PeerSecret: TypeAlias = tuple[str | Secret, TlsPolicy] | Credentials
#: Running jobs by unique job name: a mapping or a function; the value is the
#: job's session key (``Secret``), or key and TLS policy, or Credentials.
JobLookup: TypeAlias = (
    Mapping[str, Secret | tuple[Secret, TlsPolicy] | Credentials]
    | Callable[[str], Secret | tuple[Secret, TlsPolicy] | Credentials | None]
)

#: Signals the daemons skip without an answer wherever they read (PROTOCOL.md 9.1, 15.1).
HEARTBEAT_SIGNALS = frozenset({Signal.BNET_HEARTBEAT, Signal.BNET_HB_RESPONSE})


def _is_heartbeat(frame: Frame) -> bool:
    return isinstance(frame, SignalFrame) and frame.signal in HEARTBEAT_SIGNALS


def _is_signal(frame: Frame, signal: Signal) -> bool:
    return isinstance(frame, SignalFrame) and frame.signal == signal


def text_lines(frames: Iterable[Frame]) -> list[str]:
    """The text frames of a reply, one ``str`` each, signals left out.

    The trailing NUL FD and SD status frames carry (PROTOCOL.md 11 item 7)
    is stripped; the text is decoded as UTF-8 with ``surrogateescape`` (what
    is not UTF-8 survives as surrogates and can be encoded back).
    """
    out = []
    for frame in frames:
        if isinstance(frame, Message):
            payload = frame.payload
            if payload.endswith(b"\x00"):
                payload = payload[:-1]
            out.append(payload.decode("utf-8", "surrogateescape"))
    return out


class DaemonChannel:
    """An authenticated control channel between daemons.

    Either end uses it: a Director sends commands and reads replies
    (:meth:`call`), a daemon reads commands (:meth:`read_command`) and sends
    lines (:meth:`send_lines`).  Heartbeats (``BNET_HEARTBEAT`` and
    ``BNET_HB_RESPONSE``) are skipped wherever it reads and are never
    answered, as the Bareos daemons do; ones that arrive while nobody reads
    are dropped.  Nothing is parsed here.
    """

    def __init__(self, channel: Channel) -> None:
        self._channel = channel
        self._terminated = False
        channel.on_unread = _is_heartbeat

    def __repr__(self) -> str:
        hello = self.handshake.hello
        return f"<DaemonChannel {hello.kind.value} {hello.name!r}>"

    # -- what the handshake said -------------------------------------------

    @property
    def channel(self) -> Channel:
        return self._channel

    @property
    def handshake(self) -> HandshakeComplete:
        """The completed handshake: the Hello (who the connecting side is),
        the greeting, TLS version and cipher."""
        return self._channel.handshake

    @property
    def peer_name(self) -> str:
        """The name in the connecting side's Hello (Director, client or job)."""
        return self.handshake.hello.name

    @property
    def protocol(self) -> BareosProtocol:
        return self._channel.protocol

    @property
    def is_open(self) -> bool:
        """True until the connection ended or we terminated or closed it."""
        conn = self.protocol.conn
        return (not self._terminated and conn is not None and conn.state is ConnState.OPEN
                and self.protocol.transport is not None)

    # -- sending -----------------------------------------------------------

    def send_command(self, line: bytes | str) -> None:
        """Send one command frame exactly as given: no newline is added
        (Directors end most FD/SD commands with ``\\n``, ``run`` and
        ``listen`` have none; PROTOCOL.md 11 item 8)."""
        self._channel.send(line.encode("utf-8") if isinstance(line, str) else line)

    def send_line(self, line: bytes | str) -> None:
        """Send one text frame, as given (an alias of :meth:`send_command`)."""
        self.send_command(line)

    def send_signal(self, signal: int) -> None:
        self._channel.send_signal(signal)

    def send_lines(self, lines: Iterable[bytes | str], *, nul: bool = False, eod: bool = True) -> None:
        """Send a multi-line reply: one frame per line, then ``BNET_EOD``.

        ``nul=True`` appends the NUL byte FD and SD status frames carry.
        """
        for line in lines:
            payload = line.encode("utf-8") if isinstance(line, str) else line
            self._channel.send(payload + b"\x00" if nul else payload)
        if eod:
            self._channel.send_signal(Signal.BNET_EOD)

    # -- reading -----------------------------------------------------------

    def read_frame(self) -> Deferred[Frame]:
        """The next frame that is not a heartbeat."""
        return Deferred.fromCoroutine(self._read_frame())

    async def _read_frame(self) -> Frame:
        while True:
            frame = await self._channel.next_frame()
            if not _is_heartbeat(frame):
                return frame

    def read_command(self) -> Deferred[Frame]:
        """The next command (a :class:`Message`) or signal, heartbeats skipped."""
        return self.read_frame()

    def read_reply(self, until_eod: bool = False) -> Deferred[list[Frame]]:
        """Read one reply: frames up to the first text line, or with
        ``until_eod=True`` up to ``BNET_EOD`` (multi-line replies such as
        ``status``).  Heartbeats are left out; other signals are kept, in
        order, and the one that ended the reply is the last element.
        ``BNET_TERMINATE`` ends a reply in both modes (the peer is leaving).
        Fails with :class:`~bareosproto.twisted.protocol.ChannelClosed` if
        the connection ends first.  Read one reply at a time (concurrent
        readers would take frames from each other in turn).
        """
        return Deferred.fromCoroutine(self._read_reply(until_eod))

    async def _read_reply(self, until_eod: bool) -> list[Frame]:
        frames: list[Frame] = []
        while True:
            frame = await self._read_frame()
            frames.append(frame)
            if _is_signal(frame, Signal.BNET_TERMINATE):
                return frames
            if until_eod:
                if _is_signal(frame, Signal.BNET_EOD):
                    return frames
            elif isinstance(frame, Message):
                return frames

    def call(self, command: bytes | str, until_eod: bool = False) -> Deferred[list[Frame]]:
        """Send a command and read its reply (see :meth:`read_reply`)."""
        self.send_command(command)
        return self.read_reply(until_eod)

    text_lines = staticmethod(text_lines)

    def send_refusal(self, error: RemoteProtocolError) -> None:
        """Send the frames a daemon answers a line it refuses with: the
        ``reply`` of a :class:`~bareosproto.errors.RemoteProtocolError` raised
        by a parser such as :func:`bareosproto.jobcmds.parse_fd_command`."""
        for frame in FrameDecoder().receive_data(error.reply):
            if isinstance(frame, Message):
                self._channel.send(frame.payload)
            elif isinstance(frame, SignalFrame):
                self._channel.send_signal(int(frame.signal))

    # -- ending ------------------------------------------------------------

    def terminate(self) -> None:
        """Send ``BNET_TERMINATE`` and close, as a daemon ending a session
        does (nothing is sent if the connection is already down)."""
        if self.is_open:
            self._channel.send_signal(Signal.BNET_TERMINATE)
        self.close()

    def close(self) -> None:
        """Close without a terminate frame (TLS close_notify first if TLS is up)."""
        if not self._terminated:
            self._terminated = True
            self._channel.close()

    def when_closed(self) -> Deferred[None]:
        return self.protocol.when_closed()


# -- connectors --------------------------------------------------------------------


def _our_policy(tls: bool, tls_policy: TlsPolicy | None) -> TlsPolicy:
    """Our ``ssl=``: a resource with TLS uses the default ``TlsRequire = yes``."""
    if tls_policy is not None:
        return tls_policy
    return TlsPolicy.REQUIRED if tls else TlsPolicy.NONE


def _connect(
    reactor: Any,
    endpoint: str | IStreamClientEndpoint,
    conn_type: ConnectionType,
    name: str,
    password: str | Secret,
    tls: bool,
    tls_policy: TlsPolicy | None,
    release: BareosVersion,
    timeout: float | None,
    failure_delay: float,
    nonce: Callable[[], int] | None,
) -> Deferred[DaemonChannel]:
    key = as_key(password)
    policy = _our_policy(tls, tls_policy)
    extra: dict[str, Any] = {} if nonce is None else {"nonce": nonce}

    def make() -> ClientConnection:
        return ClientConnection(
            conn_type,
            name=name,
            key=key,
            clock=reactor.seconds,
            tls=tls,
            tls_policy=policy,
            release=release,
            failure_delay=failure_delay,
            **extra,
        )

    return connect(reactor, endpoint, make, timeout).addCallback(DaemonChannel)


def connect_to_fd(
    reactor: Any,
    endpoint: str | IStreamClientEndpoint,
    *,
    director_name: str,
    password: str | Secret,
    tls: bool = False,
    release: BareosVersion = BAREOS_26,
    timeout: float | None = HANDSHAKE_TIMEOUT,
    tls_policy: TlsPolicy | None = None,
    failure_delay: float = FAILURE_DELAY,
    nonce: Callable[[], int] | None = None,
) -> Deferred[DaemonChannel]:
    """Connect to a File Daemon as Director ``director_name`` (PROTOCOL.md 7.3).

    ``tls=True``: immediate TLS-PSK with identity ``R_DIRECTOR\\x1e<name>``
    and the Client password.  ``tls_policy`` is the ``ssl=`` of our
    challenge (default: ``REQUIRED`` with TLS, ``NONE`` without).  Fires
    with the channel once the FD said ``2000 OK Hello <n>``
    (``channel.handshake.greeting.protocol_version``); fails with
    :class:`~bareosproto.errors.RemoteProtocolError` if the FD refused us
    (our own Director-side replies, ``1999`` and ``BNET_TERMINATE``, then
    play out over ``failure_delay`` seconds each on ``reactor``).
    ``reactor`` schedules the timers; ``endpoint`` may be a string such as
    ``"tcp:host=fd.example:port=9102"``.
    """
    return _connect(reactor, endpoint, ConnectionType.DIRECTOR_FD, director_name, password, tls,
                    tls_policy, release, timeout, failure_delay, nonce)  # fmt: skip


def connect_to_sd(
    reactor: Any,
    endpoint: str | IStreamClientEndpoint,
    *,
    director_name: str,
    password: str | Secret,
    tls: bool = False,
    release: BareosVersion = BAREOS_26,
    timeout: float | None = HANDSHAKE_TIMEOUT,
    tls_policy: TlsPolicy | None = None,
    failure_delay: float = FAILURE_DELAY,
    nonce: Callable[[], int] | None = None,
) -> Deferred[DaemonChannel]:
    """Connect to a Storage Daemon as Director ``director_name`` (PROTOCOL.md 7.5).

    As :func:`connect_to_fd`; the SD must answer exactly ``3000 OK Hello``.
    Bareos has no cleartext fallback here: with ``tls=True`` a TLS failure
    is final.
    """
    return _connect(reactor, endpoint, ConnectionType.DIRECTOR_SD, director_name, password, tls,
                    tls_policy, release, timeout, failure_delay, nonce)  # fmt: skip


def connect_to_director_as_client(
    reactor: Any,
    endpoint: str | IStreamClientEndpoint,
    *,
    client_name: str,
    password: str | Secret,
    tls: bool = False,
    release: BareosVersion = BAREOS_26,
    timeout: float | None = HANDSHAKE_TIMEOUT,
    tls_policy: TlsPolicy | None = None,
    failure_delay: float = FAILURE_DELAY,
    nonce: Callable[[], int] | None = None,
) -> Deferred[DaemonChannel]:
    """Connect to a Director as the client-initiated File Daemon ``client_name``
    (PROTOCOL.md 7.4): ``Hello Client <name> FdProtocolVersion=54 calling``,
    the Director challenges first, then its ``1000 OK: ...`` line (read and
    ignored, as the FD does).  The channel then idles until the Director
    sends its first command; read it with :meth:`DaemonChannel.read_command`.
    The name goes into the Hello unbashed, so it cannot contain spaces.
    """
    return _connect(reactor, endpoint, ConnectionType.CLIENT_INITIATED, client_name, password, tls,
                    tls_policy, release, timeout, failure_delay, nonce)  # fmt: skip


# -- acceptors ----------------------------------------------------------------------

_Finder: TypeAlias = Callable[[str], Credentials | None]


def _credentials(value: PeerSecret) -> Credentials:
    if isinstance(value, Credentials):
        return value
    password, policy = value
    return Credentials(as_key(password), TlsPolicy(policy))


def _peer_finder(peers: Mapping[str, PeerSecret]) -> _Finder:
    table = {name: _credentials(value) for name, value in peers.items()}
    return table.get


def _job_credentials(value: Secret | tuple[Secret, TlsPolicy] | Credentials | None) -> Credentials | None:
    if value is None or isinstance(value, Credentials):
        return value
    if isinstance(value, Secret):
        # the policy the Director's ssl= gave the job; 0 when it gave none (6.3 step 5)
        return Credentials(value, TlsPolicy.NONE)
    key, policy = value
    return Credentials(key, TlsPolicy(policy))


def _job_finder(jobs: JobLookup | None) -> _Finder | None:
    if jobs is None:
        return None
    if isinstance(jobs, Mapping):
        table = jobs

        def find(name: str) -> Credentials | None:
            return _job_credentials(table.get(name))

        return find
    func = jobs

    def call(name: str) -> Credentials | None:
        return _job_credentials(func(name))

    return call


def _lookup(finders: Mapping[ResourceType, _Finder | None]) -> Callable[[ResourceType, str], Credentials | None]:
    def lookup(rtype: ResourceType, name: str) -> Credentials | None:
        find = finders.get(rtype)
        return None if find is None else find(name)

    return lookup


def _factory(
    config: ServerConfig,
    reactor: ReactorTime,
    on_channel: Callable[[DaemonChannel], object],
    handshake_timeout: float | None,
) -> BareosServerFactory:
    return BareosServerFactory(config, reactor, lambda ch: on_channel(DaemonChannel(ch)), handshake_timeout)


def fd_server_factory(
    reactor: ReactorTime,
    *,
    client_name: str,
    directors: Mapping[str, PeerSecret],
    on_channel: Callable[[DaemonChannel], object],
    jobs: JobLookup | None = None,
    tls: bool = True,
    failure_delay: float = FD_FAILURE_DELAY,
    auth_failure_delay: float = FAILURE_DELAY,
    handshake_timeout: float | None = HANDSHAKE_TIMEOUT,
    release: BareosVersion = BAREOS_26,
    psk_name_check: bool = True,
    own_tls_policy: TlsPolicy | None = None,
    fd_protocol_version: int = FD_PROTOCOL_VERSION,
) -> BareosServerFactory:
    """Accept connections as the File Daemon ``client_name``.

    ``directors`` maps each Director name the FD knows to its password and
    the FD's TLS policy towards it (``TlsPolicy.NONE`` lets a cleartext
    Hello in, anything else demands TLS-PSK; PROTOCOL.md 6.3).  ``jobs``
    resolves the unique job names an SD uses to reach a passive client
    (``Hello Storage calling Start Job``) to their session keys.
    ``tls=False`` refuses TLS outright.  After a failed authentication the
    FD answers as recorded (PROTOCOL.md 15.6): ``1999`` at once,
    ``Authorization key rejected by <ip>.`` and ``1999`` after
    ``auth_failure_delay``, ``2999 Authentication failed.`` after another,
    and closes ``failure_delay`` later.  ``psk_name_check=False`` drops the
    Bareos 26 rule that the Hello names the PSK identity's resource, for
    25.x peers.  ``handshake_timeout`` drops peers that do not finish.
    """
    config = ServerConfig(
        daemon=Daemon.FD,
        name=client_name,
        lookup=_lookup({ResourceType.R_DIRECTOR: _peer_finder(directors), ResourceType.R_JOB: _job_finder(jobs)}),
        release=release,
        tls=tls,
        own_tls_policy=_our_policy(tls, own_tls_policy),
        psk_name_check=psk_name_check,
        failure_delay=auth_failure_delay,
        fd_failure_delay=failure_delay,
        fd_protocol_version=fd_protocol_version,
    )
    return _factory(config, reactor, on_channel, handshake_timeout)


def sd_server_factory(
    reactor: ReactorTime,
    *,
    storage_name: str,
    directors: Mapping[str, PeerSecret],
    on_channel: Callable[[DaemonChannel], object],
    jobs: JobLookup | None = None,
    tls: bool = True,
    failure_delay: float = FAILURE_DELAY,
    handshake_timeout: float | None = HANDSHAKE_TIMEOUT,
    release: BareosVersion = BAREOS_26,
    psk_name_check: bool = True,
    own_tls_policy: TlsPolicy | None = None,
) -> BareosServerFactory:
    """Accept connections as the Storage Daemon ``storage_name``.

    ``directors`` as for :func:`fd_server_factory`; ``jobs`` resolves the
    job names of FD (``Hello Start Job``) and SD (``Hello Start Storage
    Job``) data channels.  A failed Director login gets the CRAM lines,
    ``3999 No go`` after ``failure_delay`` and the close another
    ``failure_delay`` later.
    """
    config = ServerConfig(
        daemon=Daemon.SD,
        name=storage_name,
        lookup=_lookup({ResourceType.R_DIRECTOR: _peer_finder(directors), ResourceType.R_JOB: _job_finder(jobs)}),
        release=release,
        tls=tls,
        own_tls_policy=_our_policy(tls, own_tls_policy),
        psk_name_check=psk_name_check,
        failure_delay=failure_delay,
    )
    return _factory(config, reactor, on_channel, handshake_timeout)


def director_client_factory(
    reactor: ReactorTime,
    *,
    director_name: str,
    clients: Mapping[str, PeerSecret],
    on_channel: Callable[[DaemonChannel], object],
    tls: bool = True,
    failure_delay: float = FAILURE_DELAY,
    handshake_timeout: float | None = HANDSHAKE_TIMEOUT,
    release: BareosVersion = BAREOS_26,
    psk_name_check: bool = True,
    services_text: str = SELF_COMPILED_SERVICES,
) -> BareosServerFactory:
    """Accept client-initiated File Daemons as the Director ``director_name``.

    ``clients`` maps each Client resource that allows
    ``ConnectionFromClientToDirector`` to its password and the Director's
    TLS policy towards it (a cleartext Hello is refused only if that policy
    is ``REQUIRED``; PROTOCOL.md 6.3 step 6).  A successful login is answered
    ``1000 OK: <director> Version: <version> (<date>)``; a failed one with
    ``1999 You are not authorized.`` after ``failure_delay``.  Consoles have
    no entry here and are refused.
    """
    config = ServerConfig(
        daemon=Daemon.DIRECTOR,
        name=director_name,
        lookup=_lookup({ResourceType.R_CLIENT: _peer_finder(clients)}),
        release=release,
        tls=tls,
        psk_name_check=psk_name_check,
        failure_delay=failure_delay,
        services_text=services_text,
    )
    return _factory(config, reactor, on_channel, handshake_timeout)
