"""Daemon control channels (``bareosproto.twisted.daemon``): our connectors against our acceptors.

Three parts:

* in memory, with ``StringTransport`` and ``task.Clock``: exact bytes and exact
  times of refusals, a failing login next to a good one, the reply reader;
* loopback TCP on 127.0.0.1 (trial test cases, real reactor): Director → FD,
  Director → SD and client-initiated FD → Director, each in cleartext and
  TLS-PSK, with a command, a multi-line reply and the end of the session;
* loopback TCP with a wrong password, the refusal timed by a ``task.Clock``.

Expected lines are literals from PROTOCOL.md (sections 7.3-7.5, 11, 15) and the
recordings in ``tests/data`` (names, passwords, status output).
"""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet import reactor as _reactor
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, ensureDeferred, succeed
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock, deferLater
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from bareosproto.connection import ClientConnection, ConnectionType, HandshakeComplete
from bareosproto.errors import RemoteProtocolError
from bareosproto.events import Message, SignalFrame
from bareosproto.frames import FrameDecoder, encode_signal
from bareosproto.keys import Secret, password_key
from bareosproto.replies import DirectorGreeting, FdHelloOk, GreetingForm, SdHelloOk
from bareosproto.signals import Signal
from bareosproto.tls_policy import TlsPolicy
from bareosproto.twisted.daemon import (
    DaemonChannel,
    connect_to_director_as_client,
    connect_to_fd,
    connect_to_sd,
    director_client_factory,
    fd_server_factory,
    sd_server_factory,
    text_lines,
)
from bareosproto.twisted.factory import BareosServerFactory
from bareosproto.twisted.protocol import BareosProtocol, ChannelClosed

reactor: Any = _reactor

# -- literals (PROTOCOL.md, tests/data) -------------------------------------------

DIRECTOR = "bareos-dir"
CLIENT = "client-clear"
CLIENT_PASSWORD = "fd-clear-password"
STORAGE = "bareos-sd-clear"
STORAGE_PASSWORD = "sd-clear-password"
CI_CLIENT = "client-ci-clear"
CI_PASSWORD = "fd-ci-clear-password"

TERMINATE = b"\xff\xff\xff\xfc"
EOD = b"\xff\xff\xff\xff"
HEARTBEAT = b"\xff\xff\xff\xfa"
AUTH_OK = b"1000 OK auth\n"
AUTH_FAILED = b"1999 Authorization failed.\n"
KEY_REJECTED = b"Authorization key rejected by 127.0.0.1.\n"
FD_AUTH_FAILED = b"2999 Authentication failed.\n"
FD_HELLO_OK = b"2000 OK Hello 54\n"
SD_HELLO_OK = b"3000 OK Hello\n"
SD_NO_GO = b"3999 No go\n"
DIR_NOT_AUTHORIZED = b"1999 You are not authorized.\n"
#: the FD's answer to ``status`` in monitor-fd-emulated: a bare "\n" first, then lines with a NUL
STATUS_FRAMES = [
    b"\n",
    b"Daemon started 30-Nov-26 09:18. Jobs: run=2 running=0, self-compiled binary\n\x00",
    b"\nRunning Jobs:\n\x00",
    b"No Jobs running.\n\x00",
    b"====\n\x00",
]
STATUS_LINES = [
    "\n",
    "Daemon started 30-Nov-26 09:18. Jobs: run=2 running=0, self-compiled binary\n",
    "\nRunning Jobs:\n",
    "No Jobs running.\n",
    "====\n",
]
PEER = IPv4Address("TCP", "127.0.0.1", 40000)


def frame(payload: bytes) -> bytes:
    return len(payload).to_bytes(4, "big") + payload


def policy(tls: bool) -> TlsPolicy:
    return TlsPolicy.REQUIRED if tls else TlsPolicy.NONE


# -- in-memory plumbing -------------------------------------------------------------


def result_of(d: Deferred[Any]) -> Any:
    """The result of a Deferred that has fired (raises its failure)."""
    out: list[Any] = []
    d.addBoth(out.append)
    assert out, "the Deferred has not fired"
    if isinstance(out[0], Failure):
        out[0].raiseException()
    return out[0]


def failure_of(d: Deferred[Any]) -> Failure:
    out: list[Any] = []
    d.addBoth(out.append)
    assert out, "the Deferred has not fired"
    assert isinstance(out[0], Failure), f"expected a failure, got {out[0]!r}"
    return out[0]


def has_fired(d: Deferred[Any]) -> bool:
    return bool(d.called)


class Wire:
    """Two protocols joined by StringTransports; :meth:`pump` moves bytes until quiet
    and passes a close on to both sides, as TCP would."""

    def __init__(self, client: Protocol, server: Protocol) -> None:
        self.client, self.server = client, server
        self.ct = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 9102))
        self.st = StringTransport(peerAddress=PEER)
        self.lost = False
        server.makeConnection(self.st)
        client.makeConnection(self.ct)

    def pump(self) -> None:
        for _ in range(1000):
            moved = False
            for src, dst in ((self.ct, self.server), (self.st, self.client)):
                data = src.value()
                if data and not self.lost:
                    src.clear()
                    dst.dataReceived(data)
                    moved = True
            if not moved:
                break
        closing = any(t.disconnecting or t.disconnected for t in (self.ct, self.st))
        if closing and not self.lost:
            self.lost = True
            self.client.connectionLost(Failure(ConnectionError("closed")))
            self.server.connectionLost(Failure(ConnectionError("closed")))


class MemoryEndpoint:
    """A client endpoint that connects to ``server_factory`` through a :class:`Wire`."""

    def __init__(self, server_factory: Factory) -> None:
        self.server_factory = server_factory
        self.wires: list[Wire] = []

    def connect(self, factory: Factory) -> Deferred[Protocol]:
        client = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 9102))
        server = self.server_factory.buildProtocol(PEER)
        assert client is not None and server is not None
        self.wires.append(Wire(client, server))
        return succeed(client)

    @property
    def wire(self) -> Wire:
        return self.wires[-1]


def memory_pair(kind: str, clock: Clock, tls: bool = False, password: str | None = None,
                **server_kw: Any) -> tuple[Deferred[DaemonChannel], list[DaemonChannel], MemoryEndpoint]:
    """Our connector of ``kind`` ("fd", "sd", "client") against our acceptor, in memory."""
    accepted: list[DaemonChannel] = []
    if kind == "fd":
        factory = fd_server_factory(clock, client_name=CLIENT, directors={DIRECTOR: (CLIENT_PASSWORD, policy(tls))},
                                    on_channel=accepted.append, **server_kw)
        ep = MemoryEndpoint(factory)
        d = connect_to_fd(clock, ep, director_name=DIRECTOR, password=password or CLIENT_PASSWORD, tls=tls)
    elif kind == "sd":
        factory = sd_server_factory(clock, storage_name=STORAGE,
                                    directors={DIRECTOR: (STORAGE_PASSWORD, policy(tls))},
                                    on_channel=accepted.append, **server_kw)
        ep = MemoryEndpoint(factory)
        d = connect_to_sd(clock, ep, director_name=DIRECTOR, password=password or STORAGE_PASSWORD, tls=tls)
    else:
        factory = director_client_factory(clock, director_name=DIRECTOR, clients={CI_CLIENT: (CI_PASSWORD, policy(tls))},
                                          on_channel=accepted.append, **server_kw)
        ep = MemoryEndpoint(factory)
        d = connect_to_director_as_client(clock, ep, client_name=CI_CLIENT, password=password or CI_PASSWORD, tls=tls)
    ep.wire.pump()
    return d, accepted, ep


# -- in memory: handshakes ---------------------------------------------------------------


@pytest.mark.parametrize("tls", [False, True], ids=["clear", "psk"])
@pytest.mark.parametrize(
    ("kind", "greeting"),
    [("fd", FdHelloOk(54)), ("sd", SdHelloOk()),
     ("client", DirectorGreeting(DIRECTOR, "26.0.0~pre1298.eda204c31", "21 August 2026", GreetingForm.CLIENT_LINE))],
)
def test_connector_meets_acceptor_in_memory(kind: str, greeting: object, tls: bool) -> None:
    """Each connector authenticates against the matching acceptor at once (no timer
    involved); both ends see the connecting side's Hello, the connector the greeting of
    PROTOCOL.md 7.3-7.5, and with TLS-PSK both report TLS 1.3."""
    clock = Clock()
    d, accepted, _ = memory_pair(kind, clock, tls)
    ch = result_of(d)
    assert isinstance(ch, DaemonChannel) and len(accepted) == 1
    assert ch.handshake.greeting == greeting
    assert accepted[0].peer_name == ch.peer_name == (CI_CLIENT if kind == "client" else DIRECTOR)
    expected_tls = "TLSv1.3" if tls else None
    assert ch.handshake.tls_version == accepted[0].handshake.tls_version == expected_tls
    assert clock.getDelayedCalls() == []  # both handshake timers were cancelled


def test_director_hello_and_identity_on_the_fd_side() -> None:
    """With TLS-PSK the FD acceptor saw identity ``R_DIRECTOR\\x1ebareos-dir`` (PROTOCOL.md 6.4)
    and the Director's challenge carries ``ssl=2``; in clear ``ssl=0`` (PROTOCOL.md 7.3 step 5)."""
    for tls, ssl in ((False, 0), (True, 2)):
        d, accepted, _ = memory_pair("fd", Clock(), tls)
        ch = result_of(d)
        fd = accepted[0]
        assert ch.handshake.remote_policy == ssl  # the FD's ssl= towards this Director
        assert fd.handshake.remote_policy == ssl  # the Director's ssl=
        if tls:
            assert fd.protocol.tls is not None
            assert fd.protocol.tls.psk_identity == "R_DIRECTOR\x1ebareos-dir"


def test_secret_is_used_as_the_key_itself() -> None:
    """A ``str`` is a clear config password, hashed to MD5 hex; a ``Secret`` is the key
    itself: the recorded key of ``fd-clear-password`` (backup-clear) logs in against an FD
    configured with the clear text, and the clear text as a ``Secret`` does not."""
    clock = Clock()
    factory = fd_factory(clock)
    ep = MemoryEndpoint(factory)
    d = connect_to_fd(clock, ep, director_name=DIRECTOR, password=Secret("e7c1203c0fb5f8c7ce169490a811c7e6"))
    ep.wire.pump()
    assert isinstance(result_of(d), DaemonChannel)
    ep2 = MemoryEndpoint(factory)
    d2 = connect_to_fd(clock, ep2, director_name=DIRECTOR, password=Secret(CLIENT_PASSWORD))
    ep2.wire.pump()
    assert isinstance(failure_of(d2).value, RemoteProtocolError)


# -- in memory: refusals, timed exactly ------------------------------------------------------


class RawDirector(Protocol):
    """A Director that logs in with a given key through the sans-IO core and records
    every frame the FD sends, with the Clock's time; it keeps reading after the core gave up."""

    def __init__(self, clock: Clock, key: Secret, conn_type: ConnectionType = ConnectionType.DIRECTOR_FD,
                 name: str = DIRECTOR) -> None:
        self.clock = clock
        self.conn = ClientConnection(conn_type, name=name, key=key, clock=clock.seconds, nonce=lambda: 7)
        self.decoder = FrameDecoder()
        self.frames: list[tuple[float, bytes]] = []
        self.failed = False
        self.closed_at: float | None = None
        self.waiting: list[tuple[int, Deferred[None]]] = []

    def connectionMade(self) -> None:
        self.conn.initiate()
        self.transport.write(self.conn.data_to_send())  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        for ev in self.decoder.receive_data(data):
            raw = ev.payload if isinstance(ev, Message) else encode_signal(int(ev.signal))  # type: ignore[attr-defined]
            self.frames.append((self.clock.seconds(), raw))
        if not self.failed:
            try:
                self.conn.receive_data(data)
            except RemoteProtocolError:
                self.failed = True
            else:
                out = self.conn.data_to_send()
                if out:
                    self.transport.write(out)  # type: ignore[union-attr]
        self._notify()

    def connectionLost(self, reason: Failure = Failure(ConnectionError())) -> None:
        self.closed_at = self.clock.seconds()
        self._notify()

    def when_frames(self, n: int) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        self.waiting.append((n, d))
        self._notify()
        return d

    def _notify(self) -> None:
        for item in list(self.waiting):
            n, d = item
            if len(self.frames) >= n or self.closed_at is not None:
                self.waiting.remove(item)
                d.callback(None)


def drive(server: BareosProtocol, client: ClientConnection) -> StringTransport:
    """Connect ``server`` to a StringTransport and play ``client`` against it until quiet."""
    transport = StringTransport(peerAddress=PEER)
    server.makeConnection(transport)
    client.initiate()
    for _ in range(20):
        out = client.data_to_send()
        if out:
            server.dataReceived(out)
        back = transport.value()
        transport.clear()
        if not back:
            break
        try:
            client.receive_data(back)
        except RemoteProtocolError:
            break
    return transport


def fd_factory(clock: Clock, **kw: Any) -> BareosServerFactory:
    return fd_server_factory(clock, client_name=CLIENT, directors={DIRECTOR: (CLIENT_PASSWORD, TlsPolicy.NONE)},
                             on_channel=kw.pop("on_channel", lambda ch: None), **kw)


def wrong_director(clock: Clock) -> ClientConnection:
    return ClientConnection(ConnectionType.DIRECTOR_FD, name=DIRECTOR, key=password_key("wrong"),
                            clock=clock.seconds, nonce=lambda: 7)


def test_fd_refusal_of_a_wrong_password_is_timed_as_recorded() -> None:
    """A Director with a wrong password gets, from our FD, what the real FD sent
    (PROTOCOL.md 11 item 18, 15.6, 15.24): ``1999 Authorization failed.`` at once,
    ``Authorization key rejected by 127.0.0.1.`` and ``1999`` at 5 s,
    ``2999 Authentication failed.`` at 10 s, and the close 6 s later (16 s)."""
    clock = Clock()
    server = fd_factory(clock).buildProtocol(PEER)
    transport = drive(server, wrong_director(clock))
    # drive() consumed the challenge; what is left is the verdict
    assert server.handshake is None
    clock.advance(4.75)
    assert transport.value() == b""
    clock.advance(0.25)
    assert transport.value() == frame(KEY_REJECTED) + frame(AUTH_FAILED)
    transport.clear()
    clock.advance(4.75)
    assert transport.value() == b""
    clock.advance(0.25)
    assert transport.value() == frame(FD_AUTH_FAILED)
    transport.clear()
    clock.advance(5.75)
    assert not transport.disconnecting
    clock.advance(0.25)
    assert transport.disconnecting and transport.value() == b""


def test_fd_verdict_is_sent_at_once() -> None:
    """The CRAM verdict ``1999 Authorization failed.`` leaves at t=0, right after the response."""
    clock = Clock()
    server = fd_factory(clock).buildProtocol(PEER)
    transport = StringTransport(peerAddress=PEER)
    server.makeConnection(transport)
    client = wrong_director(clock)
    client.initiate()
    server.dataReceived(client.data_to_send())
    challenge = transport.value()
    transport.clear()
    assert challenge == frame(b"auth cram-md5 <" + challenge[19:].split(b"@")[0] + b"@R_CLIENT::client-clear> ssl=0\n")
    client.receive_data(challenge)
    server.dataReceived(client.data_to_send())
    assert transport.value() == frame(AUTH_FAILED)


@pytest.mark.parametrize(("cram", "fd"), [(0.5, 1.0), (2.0, 3.0)], ids=["short", "long"])
def test_fd_failure_delays_are_configurable(cram: float, fd: float) -> None:
    """``auth_failure_delay`` (Bareos: 5 s) spaces the CRAM lines, ``failure_delay``
    (the FD's 6 s) the close after ``2999``."""
    clock = Clock()
    server = fd_factory(clock, failure_delay=fd, auth_failure_delay=cram).buildProtocol(PEER)
    transport = drive(server, wrong_director(clock))
    clock.advance(cram)
    assert transport.value() == frame(KEY_REJECTED) + frame(AUTH_FAILED)
    transport.clear()
    clock.advance(cram)
    assert transport.value() == frame(FD_AUTH_FAILED)
    clock.advance(fd - 0.25)
    assert not transport.disconnecting
    clock.advance(0.25)
    assert transport.disconnecting


def test_sd_refusal_of_a_wrong_password() -> None:
    """Our SD: ``1999`` at once, ``1999`` at 5 s, ``3999 No go`` at 10 s, close 5 s later
    (PROTOCOL.md 7.5 step 5, 11 item 20)."""
    clock = Clock()
    factory = sd_server_factory(clock, storage_name=STORAGE, directors={DIRECTOR: (STORAGE_PASSWORD, TlsPolicy.NONE)},
                                on_channel=lambda ch: None)
    client = ClientConnection(ConnectionType.DIRECTOR_SD, name=DIRECTOR, key=password_key("wrong"), clock=clock.seconds)
    transport = drive(factory.buildProtocol(PEER), client)
    clock.advance(5)
    assert transport.value() == frame(AUTH_FAILED)
    transport.clear()
    clock.advance(5)
    assert transport.value() == frame(SD_NO_GO)
    clock.advance(4.75)
    assert not transport.disconnecting
    clock.advance(0.25)
    assert transport.disconnecting


def test_director_refusal_of_a_client_with_a_wrong_password() -> None:
    """Our Director to a client-initiated FD: ``1999 Authorization failed.`` at once
    and at 5 s, ``1999 You are not authorized.`` at 10 s, close 5 s later (PROTOCOL.md 7.4
    step 7, 11 item 20)."""
    clock = Clock()
    factory = director_client_factory(clock, director_name=DIRECTOR, clients={CI_CLIENT: (CI_PASSWORD, TlsPolicy.NONE)},
                                      on_channel=lambda ch: None)
    client = ClientConnection(ConnectionType.CLIENT_INITIATED, name=CI_CLIENT, key=password_key("wrong"),
                              clock=clock.seconds)
    server = factory.buildProtocol(PEER)
    transport = StringTransport(peerAddress=PEER)
    server.makeConnection(transport)
    client.initiate()
    server.dataReceived(client.data_to_send())
    client.receive_data(transport.value())
    transport.clear()
    server.dataReceived(client.data_to_send())
    assert transport.value() == frame(AUTH_FAILED)
    transport.clear()
    clock.advance(5)
    assert transport.value() == frame(AUTH_FAILED)
    transport.clear()
    clock.advance(5)
    assert transport.value() == frame(DIR_NOT_AUTHORIZED)
    clock.advance(5)
    assert transport.disconnecting


def test_our_director_side_of_a_refused_fd_login() -> None:
    """Refused by the FD, our Director connector fails at once with the
    RemoteProtocolError and then does what the real Director did (PROTOCOL.md 15.6):
    its own ``1999 Authorization failed.`` at 5 s and ``BNET_TERMINATE`` at 10 s, then it closes."""
    clock = Clock()
    ep = MemoryEndpoint(fd_factory(clock))
    d = connect_to_fd(clock, ep, director_name=DIRECTOR, password="wrong")
    wire = ep.wire
    # deliver the FD's challenge, let the Director answer, deliver the verdict
    wire.server.dataReceived(wire.ct.value())
    wire.ct.clear()
    wire.client.dataReceived(wire.st.value())
    wire.st.clear()
    wire.server.dataReceived(wire.ct.value())
    wire.ct.clear()
    assert wire.st.value() == frame(AUTH_FAILED)
    wire.client.dataReceived(wire.st.value())
    wire.st.clear()
    err = failure_of(d)
    assert isinstance(err.value, RemoteProtocolError)
    assert wire.ct.value() == b""
    clock.advance(5)
    assert wire.ct.value() == frame(AUTH_FAILED)
    wire.ct.clear()
    clock.advance(5)
    assert wire.ct.value() == TERMINATE
    assert wire.ct.disconnecting


def test_a_failing_login_does_not_stall_a_good_one() -> None:
    """While one Director's failed login plays out its delays on the FD, another
    Director (ours) logs in at once and gets ``2000 OK Hello 54`` at t=0; the failed one still
    gets its ``2999`` at 10 s and its close at 16 s (upstream serializes FD failures behind a
    mutex; we delay only the failing connection)."""
    clock = Clock()
    accepted: list[DaemonChannel] = []
    factory = fd_factory(clock, on_channel=accepted.append)
    bad = factory.buildProtocol(PEER)
    bad_transport = drive(bad, wrong_director(clock))
    clock.advance(1)
    ep = MemoryEndpoint(factory)
    d = connect_to_fd(clock, ep, director_name=DIRECTOR, password=CLIENT_PASSWORD)
    ep.wire.pump()
    good = result_of(d)
    assert clock.seconds() == 1 and len(accepted) == 1
    assert good.handshake.greeting == FdHelloOk(54)
    assert len(factory.protocols) == 2
    reply = good.call(b"status\n", until_eod=True)
    ep.wire.pump()
    assert not has_fired(reply)  # nobody answers yet: no interference from the failing one
    accepted[0].send_lines(STATUS_FRAMES)
    ep.wire.pump()
    assert text_lines(result_of(reply)) == STATUS_LINES
    clock.advance(9)
    assert bad_transport.value().endswith(frame(FD_AUTH_FAILED))
    clock.advance(6)
    assert bad_transport.disconnecting
    assert not ep.wire.st.disconnecting


def test_a_good_login_meanwhile_on_the_sd_and_director() -> None:
    """Same for the SD and the Director acceptors: a refusal in progress does not delay a
    login that succeeds meanwhile."""
    for kind in ("sd", "client"):
        clock = Clock()
        d_bad, _, ep_bad = memory_pair(kind, clock, password="wrong")
        assert isinstance(failure_of(d_bad).value, RemoteProtocolError)
        ep_bad.wire.pump()
        clock.advance(2)
        d, accepted, _ = memory_pair(kind, clock)
        assert isinstance(result_of(d), DaemonChannel) and len(accepted) == 1
        assert not ep_bad.wire.lost


# -- in memory: the reply reader ---------------------------------------------------------------


def open_pair(kind: str = "fd") -> tuple[DaemonChannel, DaemonChannel, Wire]:
    clock = Clock()
    d, accepted, ep = memory_pair(kind, clock)
    return result_of(d), accepted[0], ep.wire


def test_call_reads_one_line_by_default() -> None:
    """``call(command)`` sends the command as is (no newline added) and returns at the first
    text line, e.g. ``setbandwidth=... Job=...`` → ``2000 OK Bandwidth`` (PROTOCOL.md 7.3)."""
    director, fd, wire = open_pair()
    reply = director.call(b"setbandwidth=1000 Job=test.2026-11-30_09.18.00_03\n")
    wire.pump()
    cmd = result_of(fd.read_command())
    assert cmd == Message(b"setbandwidth=1000 Job=test.2026-11-30_09.18.00_03\n")
    fd.send_line(b"2000 OK Bandwidth\n")
    wire.pump()
    assert result_of(reply) == [Message(b"2000 OK Bandwidth\n")]


def test_str_commands_are_utf8() -> None:
    """A ``str`` command goes out as its UTF-8 bytes."""
    director, fd, wire = open_pair()
    director.send_command("status")
    wire.pump()
    assert result_of(fd.read_command()) == Message(b"status")


def test_heartbeats_inside_a_reply_are_skipped_and_not_answered() -> None:
    """``BNET_HEARTBEAT`` and ``BNET_HB_RESPONSE`` inside a reply are left out and get no
    answer (PROTOCOL.md 9.1, 15.1: nobody answered in the recordings)."""
    director, fd, wire = open_pair()
    reply = director.call(b"status\n", until_eod=True)
    wire.pump()
    result_of(fd.read_command())
    fd.send_signal(Signal.BNET_HEARTBEAT)
    fd.send_line(STATUS_FRAMES[0])
    fd.send_signal(Signal.BNET_HB_RESPONSE)
    fd.send_lines(STATUS_FRAMES[1:])
    wire.ct.clear()
    wire.pump()
    frames = result_of(reply)
    assert frames[-1] == SignalFrame(Signal.BNET_EOD)
    assert [f for f in frames if isinstance(f, SignalFrame)] == [SignalFrame(Signal.BNET_EOD)]
    assert text_lines(frames) == STATUS_LINES
    assert wire.ct.value() == b""  # no HB_RESPONSE went back


def test_heartbeats_while_idle_are_dropped() -> None:
    """Heartbeats that arrive while nobody reads do not pile up in front of the next reply."""
    director, fd, wire = open_pair()
    for _ in range(3):
        fd.send_signal(Signal.BNET_HEARTBEAT)
    wire.pump()
    reply = director.call(b"status\n", until_eod=True)
    fd.send_lines(STATUS_FRAMES[:1])
    wire.pump()
    assert result_of(reply) == [Message(b"\n"), SignalFrame(Signal.BNET_EOD)]


def test_single_line_read_keeps_signals_before_the_line() -> None:
    """Reading one line keeps any other signal in front of it, in order (the FD sends
    ``BNET_EOD`` before ``2000 OK level`` of an incremental level command, PROTOCOL.md 7.3)."""
    director, fd, wire = open_pair()
    reply = director.call(b"level = since_utime 1796030000 mtime_only=0 prev_job=x\n")
    fd.send_signal(Signal.BNET_EOD)
    fd.send_line(b"2000 OK level\n")
    wire.pump()
    assert result_of(reply) == [SignalFrame(Signal.BNET_EOD), Message(b"2000 OK level\n")]


def test_terminate_ends_a_reply() -> None:
    """``BNET_TERMINATE`` ends a reply in both modes: the SD's end of a session is
    ``EOD, TERMINATE, EOD, TERMINATE`` (PROTOCOL.md 15.8)."""
    director, sd, wire = open_pair("sd")
    reply = director.read_reply(until_eod=False)
    sd.send_signal(Signal.BNET_EOD)
    sd.send_signal(Signal.BNET_TERMINATE)
    wire.pump()
    assert result_of(reply) == [SignalFrame(Signal.BNET_EOD), SignalFrame(Signal.BNET_TERMINATE)]
    reply = director.read_reply(until_eod=True)
    wire.pump()
    assert not has_fired(reply)


def test_reader_fails_when_the_connection_ends() -> None:
    """A reply cut off by the end of the connection fails with ChannelClosed."""
    director, fd, wire = open_pair()
    reply = director.call(b"status\n", until_eod=True)
    fd.send_lines(STATUS_FRAMES[:2], eod=False)
    wire.pump()
    fd.close()
    wire.pump()
    assert isinstance(failure_of(reply).value, ChannelClosed)


def test_terminate_sends_the_signal_and_closes() -> None:
    """``terminate()`` writes ``ff ff ff fc`` and closes; the other side reads the signal."""
    director, fd, wire = open_pair()
    director.terminate()
    assert wire.ct.value() == TERMINATE and wire.ct.disconnecting
    wire.pump()
    assert result_of(fd.read_command()) == SignalFrame(Signal.BNET_TERMINATE)
    director.terminate()  # again: the connection is gone, nothing is written
    assert not director.is_open


def test_text_lines_strip_one_nul_and_skip_signals() -> None:
    """``text_lines`` strips the status NUL (PROTOCOL.md 11 item 7), keeps a frame without
    one as is (15.5) and leaves signals out."""
    frames: list[Message | SignalFrame] = [
        Message(b"\n"), Message(b"a\n\x00"), SignalFrame(Signal.BNET_EOD), Message(b"\xc3\xa4\n\x00")
    ]
    assert text_lines(frames) == ["\n", "a\n", "\u00e4\n"]
    assert DaemonChannel.text_lines(frames) == text_lines(frames)


def test_client_initiated_channel_idles_until_the_director_speaks() -> None:
    """After the login the client-initiated FD reads nothing until the Director's first
    command; then it is a normal command session (PROTOCOL.md 7.4 step 9)."""
    fd, director, wire = open_pair("client")
    assert fd.handshake.greeting == DirectorGreeting(
        DIRECTOR, "26.0.0~pre1298.eda204c31", "21 August 2026", GreetingForm.CLIENT_LINE
    )
    cmd = fd.read_command()
    wire.pump()
    assert not has_fired(cmd)
    reply = director.call(b"status\n", until_eod=True)
    wire.pump()
    assert result_of(cmd) == Message(b"status\n")
    fd.send_lines(STATUS_FRAMES)
    wire.pump()
    assert text_lines(result_of(reply)) == STATUS_LINES


def test_25x_director_hello_has_no_version() -> None:
    """``release=BAREOS_25`` sends ``Hello Director bareos-dir calling`` (PROTOCOL.md 15.30)
    and our FD accepts it."""
    from bareosproto.versions import BAREOS_25

    clock = Clock()
    ep = MemoryEndpoint(fd_factory(clock))
    d = connect_to_fd(clock, ep, director_name=DIRECTOR, password=CLIENT_PASSWORD, release=BAREOS_25)
    assert ep.wire.ct.value() == frame(b"Hello Director bareos-dir calling\n")
    ep.wire.pump()
    assert result_of(d).handshake.hello.version is None


# -- loopback TCP --------------------------------------------------------------------------------


class LoopbackTests(TestCase):
    """Our connectors against our acceptors over real TCP on 127.0.0.1."""

    timeout = 30

    async def listen(self, factory: BareosServerFactory) -> int:
        port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(factory)
        self.addCleanup(port.stopListening)
        self.addCleanup(self.close_all, factory)
        return int(port.getHost().port)

    async def close_all(self, factory: BareosServerFactory) -> None:
        for proto in list(factory.protocols):
            proto.abort()
            await proto.when_closed()

    def endpoint(self, port: int) -> TCP4ClientEndpoint:
        return TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=5)

    async def director_fd(self, tls: bool) -> None:
        done: Deferred[tuple[Any, ...]] = Deferred()

        async def fd_side(ch: DaemonChannel) -> None:
            status = await ch.read_command()
            ch.send_signal(Signal.BNET_HEARTBEAT)  # FD heartbeats reach the Director at any time
            ch.send_lines(STATUS_FRAMES)
            bandwidth = await ch.read_command()
            ch.send_line(b"2000 OK Bandwidth\n")
            end = await ch.read_command()
            await ch.when_closed()
            done.callback((status, bandwidth, end, ch.handshake, ch.protocol.tls))

        factory = fd_server_factory(reactor, client_name=CLIENT, directors={DIRECTOR: (CLIENT_PASSWORD, policy(tls))},
                                    on_channel=lambda ch: ensureDeferred(fd_side(ch)))
        port = await self.listen(factory)
        ch = await connect_to_fd(reactor, self.endpoint(port), director_name=DIRECTOR, password=CLIENT_PASSWORD, tls=tls)
        self.assertEqual(ch.handshake.greeting, FdHelloOk(54))
        reply = await ch.call(b"status\n", until_eod=True)
        self.assertEqual(text_lines(reply), STATUS_LINES)
        self.assertEqual(reply[-1], SignalFrame(Signal.BNET_EOD))
        one = await ch.call(b"setbandwidth=1000 Job=x\n")
        self.assertEqual(one, [Message(b"2000 OK Bandwidth\n")])
        ch.terminate()
        status, bandwidth, end, handshake, tls_info = await done
        await ch.when_closed()
        self.assertEqual(status, Message(b"status\n"))
        self.assertEqual(bandwidth, Message(b"setbandwidth=1000 Job=x\n"))
        self.assertEqual(end, SignalFrame(Signal.BNET_TERMINATE))
        self.assertEqual(handshake.hello.name, DIRECTOR)
        if tls:
            self.assertEqual(ch.handshake.tls_version, "TLSv1.3")
            self.assertEqual(handshake.tls_version, "TLSv1.3")
            self.assertEqual(tls_info.psk_identity, "R_DIRECTOR\x1ebareos-dir")
        else:
            self.assertIsNone(ch.handshake.tls_version)
            self.assertIsNone(tls_info)

    def test_director_to_fd_cleartext(self) -> Deferred[None]:
        """Director → FD in clear: ``2000 OK Hello 54``, ``status`` with a heartbeat and NUL
        lines up to ``BNET_EOD``, a one-line command, ``BNET_TERMINATE`` and close."""
        return ensureDeferred(self.director_fd(False))

    def test_director_to_fd_tls_psk(self) -> Deferred[None]:
        """The same inside TLS-PSK (TLS 1.3, identity ``R_DIRECTOR\\x1ebareos-dir``)."""
        return ensureDeferred(self.director_fd(True))

    async def director_sd(self, tls: bool) -> None:
        done: Deferred[tuple[Any, ...]] = Deferred()
        job = ("JobId=16 job=backup-client-clear.2026-11-30_09.18.24_03 job_name=backup-client-clear "
               "client_name=client-clear type=66 level=70 FileSet=LinuxAll NoAttr=0 SpoolAttr=0 "
               "FileSetMD5=**Dummy** SpoolData=0 PreferMountedVols=1 SpoolSize=0 rerunning=0 "
               "VolSessionId=0 VolSessionTime=0 Quota=0 Protocol=0 BackupFormat=Native\n").encode()

        async def sd_side(ch: DaemonChannel) -> None:
            cmd = await ch.read_command()
            ch.send_line(b"3000 OK Job SDid=1 SDtime=1796030000 Authorization=ABCD-EFGH-IJKL-MNOP-ABCD-EFGH-IJKL-MNOP\n")
            status = await ch.read_command()
            ch.send_lines(STATUS_FRAMES, nul=False)
            end = await ch.read_command()
            done.callback((cmd, status, end))

        factory = sd_server_factory(reactor, storage_name=STORAGE, directors={DIRECTOR: (STORAGE_PASSWORD, policy(tls))},
                                    on_channel=lambda ch: ensureDeferred(sd_side(ch)))
        port = await self.listen(factory)
        ch = await connect_to_sd(reactor, self.endpoint(port), director_name=DIRECTOR, password=STORAGE_PASSWORD, tls=tls)
        self.assertEqual(ch.handshake.greeting, SdHelloOk())
        self.assertEqual(ch.handshake.tls_version, "TLSv1.3" if tls else None)
        reply = await ch.call(job)
        self.assertEqual(text_lines(reply), ["3000 OK Job SDid=1 SDtime=1796030000 "
                                             "Authorization=ABCD-EFGH-IJKL-MNOP-ABCD-EFGH-IJKL-MNOP\n"])
        status = await ch.call(b".status header", until_eod=True)
        self.assertEqual(text_lines(status), STATUS_LINES)
        ch.terminate()
        cmd, status_cmd, end = await done
        await ch.when_closed()
        self.assertEqual(cmd, Message(job))
        self.assertEqual(status_cmd, Message(b".status header"))
        self.assertEqual(end, SignalFrame(Signal.BNET_TERMINATE))

    def test_director_to_sd_cleartext(self) -> Deferred[None]:
        """Director → SD in clear: ``3000 OK Hello``, the ``JobId=`` command answered by
        ``3000 OK Job ...``, a multi-line status, then ``BNET_TERMINATE``."""
        return ensureDeferred(self.director_sd(False))

    def test_director_to_sd_tls_psk(self) -> Deferred[None]:
        """The same inside TLS-PSK."""
        return ensureDeferred(self.director_sd(True))

    async def client_initiated(self, tls: bool) -> None:
        done: Deferred[list[Message | SignalFrame]] = Deferred()

        async def director_side(ch: DaemonChannel) -> None:
            reply = await ch.call(b"status\n", until_eod=True)
            ch.terminate()
            done.callback(reply)

        factory = director_client_factory(reactor, director_name=DIRECTOR, clients={CI_CLIENT: (CI_PASSWORD, policy(tls))},
                                          on_channel=lambda ch: ensureDeferred(director_side(ch)))
        port = await self.listen(factory)
        fd = await connect_to_director_as_client(reactor, self.endpoint(port), client_name=CI_CLIENT,
                                                 password=CI_PASSWORD, tls=tls)
        greeting = fd.handshake.greeting
        assert isinstance(greeting, DirectorGreeting)
        self.assertEqual((greeting.director, greeting.form), (DIRECTOR, GreetingForm.CLIENT_LINE))
        self.assertEqual(fd.handshake.tls_version, "TLSv1.3" if tls else None)
        cmd = await fd.read_command()
        self.assertEqual(cmd, Message(b"status\n"))
        fd.send_lines(STATUS_FRAMES)
        reply = await done
        self.assertEqual(text_lines(reply), STATUS_LINES)
        end = await fd.read_command()
        self.assertEqual(end, SignalFrame(Signal.BNET_TERMINATE))
        await fd.when_closed()

    def test_client_initiated_cleartext(self) -> Deferred[None]:
        """Client-initiated FD → Director in clear: the Director's ``1000 OK: bareos-dir ...``
        line, then the Director's first command on the idle connection, the FD's reply,
        ``BNET_TERMINATE`` from the Director."""
        return ensureDeferred(self.client_initiated(False))

    def test_client_initiated_tls_psk(self) -> Deferred[None]:
        """The same inside TLS-PSK (identity ``R_CLIENT\\x1eclient-ci-clear``)."""
        return ensureDeferred(self.client_initiated(True))

    async def test_wrong_password_sequence_over_tcp(self) -> None:
        """Over TCP, a wrong Director password gets the recorded FD sequence (PROTOCOL.md
        15.6): ``1999`` now; ``Authorization key rejected by 127.0.0.1.`` + ``1999`` at 5 s;
        ``2999 Authentication failed.`` at 10 s; the FD closes at 16 s. The delays run on a
        ``task.Clock``."""
        clock = Clock()
        factory = fd_factory(clock)
        port = await self.listen(factory)
        director = RawDirector(clock, password_key("wrong"))
        from twisted.internet.endpoints import connectProtocol

        await connectProtocol(self.endpoint(port), director)
        await director.when_frames(2)  # challenge and verdict
        self.assertEqual(director.frames[1], (0.0, AUTH_FAILED))
        self.assertTrue(director.frames[0][1].startswith(b"auth cram-md5 <"))
        self.assertTrue(director.failed)
        clock.advance(5)
        await director.when_frames(4)
        self.assertEqual(director.frames[2:], [(5.0, KEY_REJECTED), (5.0, AUTH_FAILED)])
        clock.advance(5)
        await director.when_frames(5)
        self.assertEqual(director.frames[4], (10.0, FD_AUTH_FAILED))
        clock.advance(5.75)
        await deferLater(reactor, 0.05, lambda: None)
        self.assertIsNone(director.closed_at)
        clock.advance(0.25)
        await director.when_frames(99)
        self.assertEqual(director.closed_at, 16.0)
        self.assertEqual(len(director.frames), 5)

    async def test_connector_fails_with_the_refusal_over_tcp(self) -> None:
        """``connect_to_sd`` with a wrong password fails with RemoteProtocolError at once
        (the SD's ``1999`` verdict); our Director side then plays out its own lines on the
        clock it was given."""
        clock = Clock()
        factory = sd_server_factory(clock, storage_name=STORAGE, directors={DIRECTOR: (STORAGE_PASSWORD, TlsPolicy.NONE)},
                                    on_channel=lambda ch: None)
        port = await self.listen(factory)
        d = connect_to_sd(clock, self.endpoint(port), director_name=DIRECTOR, password="wrong")
        with self.assertRaises(RemoteProtocolError):
            await d
        clock.advance(100)  # both sides finish their delays and close
        for proto in list(factory.protocols):
            await proto.when_closed()


def test_daemon_channel_repr_names_the_peer() -> None:
    """The repr says which kind of Hello and which name the channel belongs to."""
    director, _, _ = open_pair()
    assert repr(director) == "<DaemonChannel director 'bareos-dir'>"
    assert isinstance(director.handshake, HandshakeComplete)
