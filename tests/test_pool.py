"""The Director's waiting-connection pool and the per-job connect strategy (``bareosproto.twisted.pool``).

In memory: real Director protocols (``BareosServerFactory``) and real FD
protocols joined by ``twisted.test.iosim`` pumps, every timer on a
``task.Clock``.  The rules are PROTOCOL.md 8.2 (newest first, pushed removal,
a signal or an empty frame on a waiting connection drops it, a text frame is
read and kept) and the manual's connect strategy (take, dial, wait, fail).
"""

from __future__ import annotations

import calendar
from typing import Any, Callable

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.interfaces import IProtocol, IProtocolFactory, IStreamClientEndpoint
from twisted.internet.task import Clock
from twisted.test import iosim
from zope.interface import implementer

from bareosproto.connection import ClientConnection, ConnectionType, Credentials, Daemon, ServerConfig
from bareosproto.errors import LocalProtocolError, RemoteProtocolError
from bareosproto.events import Message, SignalFrame
from bareosproto.frames import encode_message, encode_signal
from bareosproto.keys import password_key
from bareosproto.names import ResourceType
from bareosproto.signals import Signal
from bareosproto.status import STATUS_DIR_END
from bareosproto.tls_policy import TlsPolicy
from bareosproto.twisted.factory import BareosServerFactory
from bareosproto.twisted.pool import (
    ClientChannel,
    ClientUnreachable,
    ConnectingNotAllowed,
    DirectorPoolFactory,
    NoWaitingConnection,
    Via,
    WaitingConnectionPool,
    connect_client,
)
from bareosproto.twisted.protocol import BareosProtocol, Channel

DIRECTOR = "bareos-dir"
CLIENT = "client-ci-clear"
KEY = password_key("fd-ci-clear-password")
#: 2026-11-30 09:20:00 UTC, the minute of the recorded pool row
T0 = float(calendar.timegm((2026, 11, 30, 9, 20, 0)))


CONSOLE = "plain-console"
CONSOLE_KEY = password_key("plain-console-password")


def director_config(name: str = DIRECTOR, tls: bool = False) -> ServerConfig:
    """Our Director: every client has KEY (TLS required with ``tls``), one named console."""
    policy = TlsPolicy.REQUIRED if tls else TlsPolicy.NONE

    def lookup(rtype: ResourceType, peer: str) -> Credentials | None:
        if rtype is ResourceType.R_CLIENT:
            return Credentials(KEY, policy)
        if rtype is ResourceType.R_CONSOLE and peer == CONSOLE:
            return Credentials(CONSOLE_KEY, policy)
        return None

    return ServerConfig(daemon=Daemon.DIRECTOR, name=name, lookup=lookup, tls=tls)


class _ClientFactory:
    """A factory for one plain FD-side protocol (``IProtocolFactory`` enough for the endpoint)."""

    def __init__(self, make: Callable[[], BareosProtocol]) -> None:
        self.make = make

    def buildProtocol(self, addr: Any) -> BareosProtocol:
        return self.make()


@implementer(IStreamClientEndpoint)
class MemoryDirector:
    """An in-memory Director: a client endpoint for FDs, a pool, and iosim pumps on one Clock.

    The Director is a :class:`DirectorPoolFactory`, or with ``generic=True``
    a plain ``BareosServerFactory`` whose ``on_channel`` is ``pool.offer``.
    ``refusing`` makes ``connect()`` fail like a closed port; ``flush()``
    moves bytes until every connection is quiet (running ``callLater(0)``
    calls on the way).
    """

    def __init__(self, clock: Clock, *, generic: bool = False, **pool_kw: Any) -> None:
        self.clock = clock
        pool_kw.setdefault("utc_offset", lambda t: 0)
        self.pool = WaitingConnectionPool(clock, **pool_kw)
        self.channels: list[Channel] = []
        self.others: list[Channel] = []
        self.factory: BareosServerFactory
        if generic:
            self.factory = BareosServerFactory(director_config(), clock, self._on_channel)
        else:
            self.factory = DirectorPoolFactory(director_config(), clock, self.pool, self.others.append)
            self.factory.on_channel = self._on_pool_channel
        self.refusing = False
        self.attempts = 0
        self.pumps: list[iosim.IOPump] = []
        self.server_transports: list[iosim.FakeTransport] = []
        self.client_transports: list[iosim.FakeTransport] = []

    def _on_channel(self, channel: Channel) -> None:
        self.channels.append(channel)
        self.pool.offer(channel)

    def _on_pool_channel(self, channel: Channel) -> None:
        self.channels.append(channel)
        assert isinstance(self.factory, DirectorPoolFactory)
        self.factory._route(channel)

    def connect(self, factory: IProtocolFactory) -> Deferred[IProtocol]:
        self.attempts += 1
        if self.refusing:
            return fail(ConnectionRefusedError("refused"))
        peer = IPv4Address("TCP", "127.0.0.1", 40000 + self.attempts)
        here = IPv4Address("TCP", "127.0.0.1", 9101)
        client = factory.buildProtocol(here)
        server = self.factory.buildProtocol(peer)
        assert client is not None and server is not None
        st = iosim.FakeTransport(server, isServer=True, hostAddress=here, peerAddress=peer)
        ct = iosim.FakeTransport(client, isServer=False, hostAddress=peer, peerAddress=here)
        self.server_transports.append(st)
        self.client_transports.append(ct)
        self.pumps.append(iosim.connect(server, st, client, ct, greet=False, clock=self.clock))
        return succeed(client)

    def flush(self) -> None:
        moved = True
        while moved:
            moved = False
            for pump in list(self.pumps):
                if pump.flush():
                    moved = True
            self.pumps = [p for p in self.pumps if not (p.clientIO.disconnected and p.serverIO.disconnected)]

    def fd(self, name: str = CLIENT) -> BareosProtocol:
        """A plain client-initiated FD connection, authenticated and (normally) pooled."""

        def make() -> ClientConnection:
            return ClientConnection(ConnectionType.CLIENT_INITIATED, name=name, key=KEY, clock=self.clock.seconds)

        proto = BareosProtocol(make, self.clock)
        self.connect(_ClientFactory(lambda: proto))  # type: ignore[arg-type]
        self.flush()
        assert proto.handshake is not None
        return proto

    def console(self) -> BareosProtocol:
        """A named console logged in to this Director."""

        def make() -> ClientConnection:
            return ClientConnection(ConnectionType.CONSOLE, name=CONSOLE, key=CONSOLE_KEY, clock=self.clock.seconds)

        proto = BareosProtocol(make, self.clock)
        self.connect(_ClientFactory(lambda: proto))  # type: ignore[arg-type]
        self.flush()
        return proto

    def director_side(self, fd: BareosProtocol) -> Channel:
        """The Director's channel of an FD connection made with :meth:`fd`."""
        index = next(i for i, t in enumerate(self.client_transports) if t.protocol is fd)
        proto = self.server_transports[index].protocol
        assert isinstance(proto, BareosProtocol)
        return proto.channel


def result_of(d: Deferred[Any]) -> Any:
    out: list[Any] = []
    d.addBoth(out.append)
    assert out, "the Deferred has not fired"
    if hasattr(out[0], "raiseException"):
        out[0].raiseException()
    return out[0]


def failure_of(d: Deferred[Any]) -> Any:
    out: list[Any] = []
    d.addBoth(out.append)
    assert out, "the Deferred has not fired"
    assert hasattr(out[0], "value"), f"expected a failure, got {out[0]!r}"
    return out[0].value


@pytest.fixture
def clock() -> Clock:
    c = Clock()
    c.advance(T0)
    return c


@pytest.fixture(params=["pool-factory", "generic-factory"])
def director(clock: Clock, request: pytest.FixtureRequest) -> MemoryDirector:
    """The Director both ways: its own lean factory, and any server factory feeding ``pool.offer``."""
    return MemoryDirector(clock, generic=request.param == "generic-factory")


# -- add and take -------------------------------------------------------------------------


def test_authenticated_fd_enters_the_pool_with_its_hello_values(director: MemoryDirector) -> None:
    """An authenticated client-initiated FD is pooled under its unbashed name, its FdProtocolVersion and the time it was added."""
    director.fd()
    (info,) = director.pool.info()
    assert (info.name, info.protocol_version, info.connect_time) == (CLIENT, 54, int(T0))
    assert director.pool.count(CLIENT) == 1 and director.pool.names() == [CLIENT]


def test_take_returns_the_newest_connection_of_that_client(director: MemoryDirector, clock: Clock) -> None:
    """``take_now`` picks the newest entry of the name (most likely alive), leaves the others, ignores other names."""
    first = director.fd()
    clock.advance(1)
    director.fd("other-fd")
    clock.advance(1)
    newest = director.fd()
    pool = director.pool
    assert pool.take_now(CLIENT) is director.director_side(newest)
    assert pool.take_now(CLIENT) is director.director_side(first)
    assert pool.take_now(CLIENT) is None
    assert pool.names() == ["other-fd"] and pool.taken == 2


def test_taken_connection_carries_the_job(director: MemoryDirector) -> None:
    """A taken channel is no longer watched by the pool: the FD's answers reach the job, not the idle check."""
    fd = director.fd()
    channel = director.pool.take_now(CLIENT)
    assert channel is not None and channel.on_unread is None
    channel.send(b"status")
    director.flush()
    assert result_of(fd.channel.next_frame()) == Message(b"status")
    fd.channel.send_signal(Signal.BNET_EOD)
    director.flush()
    assert result_of(channel.next_frame()) == SignalFrame(Signal.BNET_EOD)
    assert fd.conn is not None and fd.conn.state.value == "open"


def test_take_with_timeout_fires_when_the_client_connects(director: MemoryDirector, clock: Clock) -> None:
    """``take(name, timeout)`` waits: it fires with the connection as soon as that client connects."""
    d = director.pool.take(CLIENT, 15)
    assert not d.called and director.pool.waiting_for(CLIENT) == 1
    clock.advance(10)
    fd = director.fd()
    assert result_of(d) is director.director_side(fd)
    assert len(director.pool) == 0 and director.pool.waiting_for(CLIENT) == 0
    assert clock.getDelayedCalls() == []


def test_take_times_out_on_the_injected_clock(director: MemoryDirector, clock: Clock) -> None:
    """Without a connection, ``take(name, timeout)`` fails with NoWaitingConnection exactly at the timeout."""
    d = director.pool.take(CLIENT, 15)
    clock.advance(14.999)
    assert not d.called
    clock.advance(0.001)
    err = failure_of(d)
    assert isinstance(err, NoWaitingConnection) and err.name == CLIENT
    director.fd()  # a later connection is pooled, not lost to the dead waiter
    assert director.pool.count(CLIENT) == 1


def test_take_with_zero_timeout_answers_at_once(director: MemoryDirector) -> None:
    """``take(name, 0)`` never waits: it fails at once when nobody waits in the pool."""
    assert isinstance(failure_of(director.pool.take(CLIENT, 0)), NoWaitingConnection)
    director.fd()
    assert isinstance(result_of(director.pool.take(CLIENT, 0)), Channel)


def test_cancelled_take_stops_waiting(director: MemoryDirector, clock: Clock) -> None:
    """Cancelling a waiting ``take()`` removes it and its timer; the next connection stays in the pool."""
    d = director.pool.take(CLIENT, 15)
    d.cancel()
    d.addErrback(lambda f: None)
    assert clock.getDelayedCalls() == [] and director.pool.waiting_for(CLIENT) == 0
    director.fd()
    assert director.pool.count(CLIENT) == 1


def test_waiters_are_served_in_order(director: MemoryDirector) -> None:
    """Two jobs waiting for one client get its next two connections in the order they asked."""
    a, b = director.pool.take(CLIENT, None), director.pool.take(CLIENT, None)
    fa = director.fd()
    assert a.called and not b.called
    fb = director.fd()
    assert result_of(a) is director.director_side(fa) and result_of(b) is director.director_side(fb)


def test_only_client_initiated_connections_are_pooled(director: MemoryDirector) -> None:
    """``add`` refuses a channel that is not an authenticated client Hello; ``offer`` ignores it."""
    proto = BareosProtocol(lambda: ClientConnection(ConnectionType.CLIENT_INITIATED, name="x", key=KEY,
                                                    clock=director.clock.seconds), director.clock)
    with pytest.raises(LocalProtocolError):
        director.pool.add(proto.channel)
    assert director.pool.offer(proto.channel) is None


# -- dead connections leave at once, nothing polls ------------------------------------------


def test_fd_closing_its_connection_leaves_the_pool_at_once(director: MemoryDirector, clock: Clock) -> None:
    """EOF on a waiting connection removes its entry when it happens, with no timer involved."""
    fd = director.fd()
    director.fd("other-fd")
    assert clock.getDelayedCalls() == []  # nothing polls the waiting sockets
    fd.transport.loseConnection()  # type: ignore[union-attr]
    director.flush()
    assert director.pool.names() == ["other-fd"] and director.pool.lost == 1


def test_connection_error_leaves_the_pool(director: MemoryDirector) -> None:
    """An aborted connection (reset) leaves the pool too."""
    fd = director.fd()
    fd.abort()
    director.flush()
    assert len(director.pool) == 0


@pytest.mark.parametrize(
    "frame",
    [encode_signal(Signal.BNET_HEARTBEAT), encode_signal(Signal.BNET_EOD), encode_signal(-99), encode_message(b"")],
    ids=["heartbeat", "eod", "unknown-signal", "empty-frame"],
)
def test_signal_or_empty_frame_on_a_waiting_connection_drops_it(director: MemoryDirector, frame: bytes) -> None:
    """Any signal (BNET_HEARTBEAT too) or a zero-length frame on a waiting connection: closed and removed, no reply."""
    fd = director.fd()
    fd.transport.write(frame)  # type: ignore[union-attr]
    director.flush()
    assert len(director.pool) == 0 and director.pool.dropped == 1
    assert fd.conn is not None and fd.conn.state.value == "closed"


def test_text_frame_on_a_waiting_connection_is_read_and_kept(director: MemoryDirector) -> None:
    """A text frame on a waiting connection is consumed; the entry stays and the frame never reaches a job."""
    fd = director.fd()
    fd.channel.send(b"hello?")
    director.flush()
    assert director.pool.count(CLIENT) == 1
    channel = director.pool.take_now(CLIENT)
    assert channel is not None
    assert not channel.next_frame().called


def test_max_idle_uses_one_timer_for_the_whole_pool(clock: Clock) -> None:
    """With ``max_idle``, one timer serves every entry; each entry is closed once it has waited that long."""
    director = MemoryDirector(clock, max_idle=100)
    director.fd("a")
    clock.advance(30)
    director.fd("b")
    director.fd("c")
    assert len(clock.getDelayedCalls()) == 1
    clock.advance(70)
    director.flush()
    assert director.pool.names() == ["b", "c"] and director.pool.dropped == 1
    assert len(clock.getDelayedCalls()) == 1
    clock.advance(30)
    director.flush()
    assert len(director.pool) == 0 and clock.getDelayedCalls() == []


def test_clear_closes_every_waiting_connection(director: MemoryDirector) -> None:
    """``clear()`` (Director shutdown) closes all waiting connections; the FDs see the close."""
    fds = [director.fd(f"fd-{i}") for i in range(3)]
    assert director.pool.clear() == 3
    director.flush()
    assert len(director.pool) == 0
    assert all(fd.conn is not None and fd.conn.state.value == "closed" for fd in fds)


# -- the Director's own factory ---------------------------------------------------------------


def test_pool_factory_pools_clients_and_passes_consoles_on(clock: Clock) -> None:
    """DirectorPoolFactory puts client-initiated FDs in the pool and hands every other login to ``on_channel``."""
    director = MemoryDirector(clock)
    director.fd()
    console = director.console()
    assert console.handshake is not None
    assert director.pool.count(CLIENT) == 1
    assert [c.protocol.handshake.hello.name for c in director.others] == [CONSOLE]  # type: ignore[union-attr]


def test_pool_factory_without_on_channel_closes_other_logins(clock: Clock) -> None:
    """With no ``on_channel``, a console that logged in to the pool's factory is closed at once."""
    pool = WaitingConnectionPool(clock)
    director = MemoryDirector(clock)
    director.factory = DirectorPoolFactory(director_config(), clock, pool)
    console = director.console()
    assert console.conn is not None and console.conn.state.value == "closed" and len(pool) == 0


def test_waiting_connection_holds_no_queues_until_it_serves_a_job(clock: Clock) -> None:
    """A waiting connection of the lean factory allocates no queue while it waits, and no frame queue when a
    text frame arrives and is thrown away; once taken it queues and reads like any channel."""
    director = MemoryDirector(clock)
    fd = director.fd()
    (entry,) = list(director.pool)
    lean = entry.channel
    assert lean._LeanChannel__lean_frames is None and lean._LeanChannel__lean_readers is None  # type: ignore[attr-defined]
    fd.channel.send(b"keep me")
    director.flush()
    assert lean._LeanChannel__lean_frames is None  # type: ignore[attr-defined]
    channel = director.pool.take_now(CLIENT)
    assert channel is lean
    fd.channel.send(b"2000 OK")
    fd.channel.send(b"more")
    director.flush()
    assert result_of(channel.next_frame()) == Message(b"2000 OK")
    assert result_of(channel.next_frame()) == Message(b"more")
    later = channel.next_frame()
    fd.abort()
    director.flush()
    assert later.called and director.factory.protocols == set()
    later.addErrback(lambda f: None)


# -- status --------------------------------------------------------------------------------


def test_pool_status_is_the_recorded_table(director: MemoryDirector, clock: Clock) -> None:
    """The pool prints its entries as ``status dir`` does: the recorded frames of console-named-clear."""
    director.fd()
    assert director.pool.status_frames() == [
        b"\nClient Initiated Connections (waiting for jobs):\n"
        b"Connect time        Protocol            Authenticated       Name                                    \n"
        + b"=" * 100 + b"\n"
        b"30-Nov-26 09:20     54                  1                   client-ci-clear                         ",
        b"\n",
        STATUS_DIR_END,
    ]
    assert director.pool.status_json() == {"client-connection": [
        {"connecttime": "30-Nov-26 09:20", "protocol_version": 54, "authenticated": 1, "name": CLIENT}]}


def test_info_lists_oldest_first_and_only_live_entries(director: MemoryDirector, clock: Clock) -> None:
    """``info()`` is in insertion order (as the 25.1.0 recording lists its two FDs) and never shows a dead entry."""
    director.fd("client-ci")
    clock.advance(60)
    gone = director.fd("gone")
    clock.advance(60)
    director.fd("client-ci-clear")
    gone.abort()
    director.flush()
    assert [i.name for i in director.pool.info()] == ["client-ci", "client-ci-clear"]


# -- the per-job strategy ----------------------------------------------------------------------


def dialer(result: Deferred[Channel] | None = None, calls: list[float] | None = None
           ) -> Callable[[float], Deferred[Channel]]:
    def dial(timeout: float) -> Deferred[Channel]:
        if calls is not None:
            calls.append(timeout)
        return result if result is not None else Deferred()

    return dial


def test_strategy_takes_a_waiting_connection_first(director: MemoryDirector) -> None:
    """Step 1: a waiting connection is used without dialing; the job logs ``Using Client Initiated Connection``."""
    fd = director.fd()
    calls: list[float] = []
    got: ClientChannel = result_of(connect_client(director.pool, CLIENT, dial=dialer(calls=calls), timeout=180))
    assert got.via is Via.WAITING and got.channel is director.director_side(fd) and calls == []
    assert got.log_line == f"Using Client Initiated Connection ({CLIENT}).\n"


def test_strategy_dials_when_nobody_waits(director: MemoryDirector) -> None:
    """Step 2: no waiting connection, so the client is dialed with the connect timeout."""
    dialed = Channel.__new__(Channel)
    calls: list[float] = []
    got = result_of(connect_client(director.pool, CLIENT, dial=dialer(succeed(dialed), calls), timeout=180))
    assert got.via is Via.DIALED and got.channel is dialed and calls == [180] and got.log_line is None


def test_strategy_waits_for_the_client_when_dialing_fails(director: MemoryDirector, clock: Clock) -> None:
    """Step 3: the dial fails (TCP), so the job waits the same timeout for the client to connect."""
    d = connect_client(director.pool, CLIENT, dial=dialer(fail(ConnectionRefusedError())), timeout=180)
    clock.advance(100)
    assert not d.called
    fd = director.fd()
    got = result_of(d)
    assert got.via is Via.AWAITED and got.channel is director.director_side(fd) and got.pooled


def test_strategy_cuts_a_slow_dial_at_the_timeout_then_waits(director: MemoryDirector, clock: Clock) -> None:
    """A dial that hangs is cancelled after the connect timeout; then the wait starts, and fails after another timeout."""
    hanging: Deferred[Channel] = Deferred()
    d = connect_client(director.pool, CLIENT, dial=dialer(hanging), timeout=15)
    clock.advance(15)
    assert hanging.called and not d.called  # cancelled, now waiting for the client
    clock.advance(15)
    err = failure_of(d)
    assert isinstance(err, ClientUnreachable) and str(err) == f'Failed to connect to client "{CLIENT}".'


def test_strategy_honours_connection_from_client_to_director(director: MemoryDirector) -> None:
    """With Connection From Client To Director = no, a waiting connection is never used: the client is dialed."""
    director.fd()
    dialed = Channel.__new__(Channel)
    got = result_of(connect_client(director.pool, CLIENT, dial=dialer(succeed(dialed)), timeout=15,
                                   from_client=False))
    assert got.via is Via.DIALED and director.pool.count(CLIENT) == 1


def test_strategy_honours_connection_from_director_to_client(director: MemoryDirector, clock: Clock) -> None:
    """With Connection From Director To Client = no, the client is never dialed: the job only waits."""
    calls: list[float] = []
    d = connect_client(director.pool, CLIENT, dial=dialer(calls=calls), timeout=15, from_director=False)
    clock.advance(15)
    assert calls == [] and isinstance(failure_of(d), ClientUnreachable)


def test_strategy_with_no_direction_allowed_fails_at_once(director: MemoryDirector) -> None:
    """Neither direction allowed: ``Connecting to <client> is not allowed.`` without dialing or waiting."""
    err = failure_of(connect_client(director.pool, CLIENT, dial=dialer(), timeout=15,
                                    from_director=False, from_client=False))
    assert isinstance(err, ConnectingNotAllowed) and str(err) == f"Connecting to {CLIENT} is not allowed."


def test_strategy_retries_only_failed_authentication(director: MemoryDirector) -> None:
    """A refused login (RemoteProtocolError) starts over, up to ``auth_attempts``; then the job fails."""
    calls: list[float] = []

    def dial(timeout: float) -> Deferred[Channel]:
        calls.append(timeout)
        return fail(RemoteProtocolError("Authorization key rejected"))

    err = failure_of(connect_client(director.pool, CLIENT, dial=dial, timeout=15, auth_attempts=3))
    assert isinstance(err, ClientUnreachable) and len(calls) == 3
    assert isinstance(err.__cause__, RemoteProtocolError)
