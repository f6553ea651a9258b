"""Faults and load: peers that vanish at every step, peers that never speak, many handshakes at once.

Sans-IO tests cut a live conversation after every frame; loopback tests do it with real sockets and
check that our side lets go of the connection and says why.
"""

from __future__ import annotations

import gc
import os
import resource
from collections.abc import Callable

import pytest
from twisted.internet import defer, reactor, task
from twisted.internet.protocol import Factory, Protocol
from twisted.trial import unittest

from bareosproto import ResourceType, Secret, TlsPolicy, password_key, session_key
from bareosproto.connection import (
    ClientConnection,
    ConnectionType,
    ConnState,
    Credentials,
    Daemon,
    ServerConfig,
    ServerConnection,
)
from bareosproto.errors import RemoteProtocolError
from bareosproto.events import ConnectionClosed, Event, Message
from bareosproto.twisted import BareosProtocol, BareosServerFactory, Channel, ChannelClosed, connect, server_endpoint

KEY = password_key("faults")
JOB_KEY = session_key(bytes(range(16)))
JOB = "backup.2026-11-30_10.00.00_01"

# connection type -> (accepting daemon, the peer type and name the acceptor looks up, client name)
PAIRS: dict[ConnectionType, tuple[Daemon, ResourceType, str, str]] = {
    ConnectionType.CONSOLE: (Daemon.DIRECTOR, ResourceType.R_CONSOLE, "admin", "admin"),
    ConnectionType.CLIENT_INITIATED: (Daemon.DIRECTOR, ResourceType.R_CLIENT, "fd", "fd"),
    ConnectionType.DIRECTOR_FD: (Daemon.FD, ResourceType.R_DIRECTOR, "dir", "dir"),
    ConnectionType.DIRECTOR_SD: (Daemon.SD, ResourceType.R_DIRECTOR, "dir", "dir"),
    ConnectionType.FD_SD: (Daemon.SD, ResourceType.R_JOB, JOB, "fd"),
    ConnectionType.SD_FD_PASSIVE: (Daemon.FD, ResourceType.R_JOB, JOB, "sd"),
    ConnectionType.SD_SD: (Daemon.SD, ResourceType.R_JOB, JOB, "sd2"),
}


def key_for(conn_type: ConnectionType) -> Secret:
    return JOB_KEY if PAIRS[conn_type][1] is ResourceType.R_JOB else KEY


def server_config(conn_type: ConnectionType, tls: bool, **kw: object) -> ServerConfig:
    daemon, rtype, name, _ = PAIRS[conn_type]
    policy = TlsPolicy.REQUIRED if tls else TlsPolicy.NONE
    creds = Credentials(key_for(conn_type), policy)
    return ServerConfig(daemon=daemon, name="acceptor", lookup=lambda t, n: creds if (t, n) == (rtype, name) else None,
                        tls=tls, own_tls_policy=policy, failure_delay=0.05, fd_failure_delay=0.05, **kw)  # type: ignore[arg-type]


def client_for(conn_type: ConnectionType, tls: bool, clock: Callable[[], float] = lambda: 1.0) -> ClientConnection:
    return ClientConnection(conn_type, name=PAIRS[conn_type][3], key=key_for(conn_type), job=JOB, clock=clock,
                            nonce=lambda: 9, tls=tls, tls_policy=TlsPolicy.REQUIRED if tls else TlsPolicy.NONE)


def conversation(conn_type: ConnectionType, tls: bool) -> tuple[list[bytes], list[bytes]]:
    """Run a pair to the end of the handshake; return each side's writes, one entry per flight."""
    client = client_for(conn_type, tls)
    server = ServerConnection(server_config(conn_type, tls), clock=lambda: 1.0, nonce=lambda: 7)
    client.initiate()
    c_writes, s_writes = [], []
    for _ in range(30):
        c = client.data_to_send()
        if c:
            c_writes.append(c)
            server.receive_data(c)
        s = server.data_to_send()
        if s:
            s_writes.append(s)
            client.receive_data(s)
        if not c and not s:
            break
    assert client.state is ConnState.OPEN and server.state is ConnState.OPEN
    return c_writes, s_writes


CASES = [(t, tls) for t in PAIRS for tls in (False, True)]
IDS = [f"{t.name}-{'psk' if tls else 'clear'}" for t, tls in CASES]


def interrupted(conn_type: ConnectionType, tls: bool, cut: int, client_vanishes: bool) -> tuple[object, object]:
    """Run a live pair; after ``cut`` flights, one side vanishes: the other gets EOF instead of its next flight.

    Returns the surviving side and what ended it (an exception, or the events of the EOF).
    """
    client = client_for(conn_type, tls)
    server = ServerConnection(server_config(conn_type, tls), clock=lambda: 1.0, nonce=lambda: 7)
    client.initiate()
    flights = 0
    survivor, other = (server, client) if client_vanishes else (client, server)
    for _ in range(30):
        for sender, receiver in ((client, server), (server, client)):
            data = sender.data_to_send()
            if not data:
                continue
            if receiver is survivor and flights == cut:
                try:
                    return survivor, survivor.receive_data(b"")
                except RemoteProtocolError as exc:
                    return survivor, exc
            if receiver is survivor:
                flights += 1
            receiver.receive_data(data)
    try:
        return survivor, survivor.receive_data(b"")  # the handshake was over: a plain close
    except RemoteProtocolError as exc:
        return survivor, exc


@pytest.mark.parametrize("client_vanishes", [True, False], ids=["client-vanishes", "server-vanishes"])
@pytest.mark.parametrize("conn_type, tls", CASES, ids=IDS)
def test_peer_vanishing_at_every_step_ends_with_a_clear_error(conn_type: ConnectionType, tls: bool,
                                                               client_vanishes: bool) -> None:
    """Whatever the peer got to send before it vanished, our side fails with an error saying the
    connection closed, or, after the handshake, reports a plain close."""
    outcomes = []
    for cut in range(12):
        survivor, outcome = interrupted(conn_type, tls, cut, client_vanishes)
        outcomes.append(outcome)
        if isinstance(outcome, RemoteProtocolError):
            assert survivor.state is ConnState.FAILED  # type: ignore[attr-defined]
            assert "closed" in outcome.message or "lost" in outcome.message, outcome.message
        else:
            assert survivor.state is ConnState.CLOSED  # type: ignore[attr-defined]
            assert isinstance(outcome, list) and isinstance(outcome[-1], ConnectionClosed)
    assert isinstance(outcomes[0], RemoteProtocolError)  # at the very start it is a failure
    assert isinstance(outcomes[-1], list)  # once past the handshake it is a close


# -- loopback ---------------------------------------------------------------------------------


def raise_nofile(n: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, max(soft, n)) if hard != resource.RLIM_INFINITY else max(soft, n)
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


class CuttingFactory(BareosServerFactory):
    """A server whose connections vanish (abort) after sending ``cut_after`` frames."""

    cut_after: int | None = None

    def buildProtocol(self, addr: object) -> BareosProtocol:  # type: ignore[override]
        proto = super().buildProtocol(addr)  # type: ignore[arg-type]
        make = proto._make_connection
        cut = self.cut_after

        def make_cutting() -> ServerConnection | ClientConnection:
            conn = make()
            if cut is not None:
                sent = [0]

                def trace(direction: str, frame: Event) -> None:
                    if direction == "send":
                        sent[0] += 1
                        if sent[0] > cut:
                            proto.abort()  # now: the frame that would follow never leaves

                conn.trace = trace
            return conn

        proto._make_connection = make_cutting
        return proto


class Loopback(unittest.TestCase):
    timeout = 60

    async def listen(self, factory: Factory) -> int:
        port = await server_endpoint(reactor, "tcp:0:interface=127.0.0.1:backlog=1024").listen(factory)
        self.addCleanup(port.stopListening)
        return port.getHost().port  # type: ignore[no-any-return]

    def run_async(self, coro: object) -> defer.Deferred[None]:
        return defer.Deferred.fromCoroutine(coro)  # type: ignore[arg-type]


class VanishingPeers(Loopback):
    def test_server_vanishing_at_each_step_fails_connect_clearly(self) -> defer.Deferred[None]:
        """Our client, cut off after each server frame of a console login, fails with a clear error."""

        async def run() -> None:
            for tls in (False, True):
                for cut in range(0, 5):
                    factory = CuttingFactory(server_config(ConnectionType.CONSOLE, tls), reactor, lambda ch: None)
                    factory.cut_after = cut
                    port = await self.listen(factory)
                    try:
                        await connect(reactor, f"tcp:host=127.0.0.1:port={port}",
                                      lambda: client_for(ConnectionType.CONSOLE, tls, reactor.seconds),
                                      handshake_timeout=5)
                    except RemoteProtocolError as exc:
                        self.assertTrue(exc.message)
                    else:
                        self.fail(f"connect succeeded although the server vanished after {cut} frames")

        return self.run_async(run())

    def test_client_vanishing_releases_the_server_connection(self) -> defer.Deferred[None]:
        """A client that aborts after each of its frames leaves no connection behind on our server."""

        async def run() -> None:
            factory = BareosServerFactory(server_config(ConnectionType.CONSOLE, False), reactor, lambda ch: None)
            port = await self.listen(factory)
            for cut in range(0, 4):
                proto_holder: list[BareosProtocol] = []

                def make(cut: int = cut) -> ClientConnection:
                    conn = client_for(ConnectionType.CONSOLE, False, reactor.seconds)
                    sent = [0]

                    def trace(direction: str, frame: Event) -> None:
                        if direction == "send":
                            sent[0] += 1
                            if sent[0] > cut:
                                proto_holder[0].abort()  # now: this frame never leaves

                    conn.trace = trace
                    return conn

                proto = BareosProtocol(make, reactor, 5)
                proto_holder.append(proto)
                from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol

                await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), proto)
                await proto.when_closed()
                for _ in range(50):
                    if not factory.protocols:
                        break
                    await task.deferLater(reactor, 0.02, lambda: None)
                self.assertEqual(factory.protocols, set(), f"server kept the connection cut after {cut} frames")

        return self.run_async(run())

    def test_peer_vanishing_during_a_transfer_ends_the_channel(self) -> defer.Deferred[None]:
        """When the server aborts mid-transfer, the client's channel ends with ChannelClosed, not a hang."""

        async def run() -> None:
            received = [0]

            def on_channel(ch: Channel) -> None:
                def count(frame: Message | object) -> bool:
                    received[0] += 1
                    if received[0] == 50:
                        ch.protocol.abort()
                    return True

                ch.on_unread = count  # type: ignore[assignment]

            port = await self.listen(BareosServerFactory(server_config(ConnectionType.FD_SD, True), reactor, on_channel))
            channel = await connect(reactor, f"tcp:host=127.0.0.1:port={port}",
                                    lambda: client_for(ConnectionType.FD_SD, True, reactor.seconds))
            block = b"x" * 65536
            for _ in range(200):
                if channel.protocol.transport is None or channel.protocol.conn.state is not ConnState.OPEN:  # type: ignore[union-attr]
                    break
                channel.send(block)
                await task.deferLater(reactor, 0, lambda: None)
            with self.assertRaises(ChannelClosed):
                await channel.next_frame()

        return self.run_async(run())


class SilentPeers(Loopback):
    async def _raw_client(self, port: int, drip: bytes | None) -> float:
        """Connect a raw socket that sends nothing (or ``drip`` every 0.1 s); return seconds until closed."""
        closed: defer.Deferred[None] = defer.Deferred()

        class Raw(Protocol):
            def connectionMade(self) -> None:
                self.loop = task.LoopingCall(lambda: self.transport.write(drip)) if drip else None  # type: ignore[union-attr]
                if self.loop is not None:
                    self.loop.start(0.1)

            def connectionLost(self, reason: object = None) -> None:
                if self.loop is not None and self.loop.running:
                    self.loop.stop()
                closed.callback(None)

        from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol

        start = reactor.seconds()
        await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), Raw())
        await closed
        return reactor.seconds() - start  # type: ignore[no-any-return]

    def test_peer_that_never_speaks_is_dropped_after_the_timeout(self) -> defer.Deferred[None]:
        """A client that connects and says nothing is dropped when the handshake timeout expires."""

        async def run() -> None:
            factory = BareosServerFactory(server_config(ConnectionType.CONSOLE, True), reactor, lambda ch: None,
                                          handshake_timeout=0.5)
            took = await self._raw_client(await self.listen(factory), None)
            self.assertGreaterEqual(took, 0.45)
            self.assertLess(took, 3.0)

        return self.run_async(run())

    def test_peer_that_sends_one_byte_at_a_time_is_dropped(self) -> defer.Deferred[None]:
        """Trickling bytes does not keep a connection alive past the handshake timeout."""

        async def run() -> None:
            factory = BareosServerFactory(server_config(ConnectionType.CONSOLE, False), reactor, lambda ch: None,
                                          handshake_timeout=0.5)
            took = await self._raw_client(await self.listen(factory), b"\x00")
            self.assertLess(took, 3.0)

        return self.run_async(run())


class Load(Loopback):
    timeout = 120

    def test_a_thousand_concurrent_tls_handshakes_all_succeed(self) -> defer.Deferred[None]:
        """1,000 TLS-PSK console logins at once, one reactor thread: zero failures."""
        raise_nofile(4096)

        async def run() -> None:
            factory = BareosServerFactory(server_config(ConnectionType.CONSOLE, True), reactor, lambda ch: None)
            port = await self.listen(factory)
            endpoint = f"tcp:host=127.0.0.1:port={port}"
            results = await defer.DeferredList(
                [connect(reactor, endpoint, lambda: client_for(ConnectionType.CONSOLE, True, reactor.seconds),
                         handshake_timeout=60) for _ in range(1000)],
                consumeErrors=True,
            )
            failures = [r for ok, r in results if not ok]
            self.assertEqual(failures, [])
            self.assertTrue(all(ch.handshake.tls_version == "TLSv1.3" for _, ch in results))
            for _, channel in results:
                channel.close()
            await defer.gatherResults([ch.protocol.when_closed() for _, ch in results])
            while factory.protocols:
                await task.deferLater(reactor, 0.01, lambda: None)

        return self.run_async(run())

    def test_connect_disconnect_cycles_leak_no_descriptors(self) -> defer.Deferred[None]:
        """Login/close cycles: open descriptors come back to their baseline (TLS-PSK and clear), and
        memory too once warm (measured in clear: OpenSSL's own caches settle only after ~1,500 TLS
        logins, which `bench/hardening.py` covers with 10,000 cycles)."""
        raise_nofile(4096)

        servers: dict[bool, tuple[BareosServerFactory, str]] = {}

        async def cycles(tls: bool, n: int) -> int:
            factory, endpoint = servers[tls]
            for _ in range(n // 50):
                channels = await defer.gatherResults([
                    connect(reactor, endpoint, lambda: client_for(ConnectionType.CONSOLE, tls, reactor.seconds))
                    for _ in range(50)
                ])
                for ch in channels:
                    ch.close()
                await defer.gatherResults([ch.protocol.when_closed() for ch in channels])
            while factory.protocols:
                await task.deferLater(reactor, 0.01, lambda: None)
            gc.collect()
            return len(os.listdir("/proc/self/fd"))

        async def run() -> None:
            for tls in (False, True):
                factory = BareosServerFactory(server_config(ConnectionType.CONSOLE, tls), reactor, lambda ch: None)
                servers[tls] = (factory, f"tcp:host=127.0.0.1:port={await self.listen(factory)}")
            await cycles(False, 300)  # warm up caches and allocator pools
            await cycles(True, 50)
            fds, rss = len(os.listdir("/proc/self/fd")), _rss_kib()
            self.assertLessEqual(await cycles(False, 1000), fds)
            self.assertLess(_rss_kib() - rss, 4 * 1024, "RSS grew by more than 4 MiB over 1,000 cycles")
            self.assertLessEqual(await cycles(True, 500), fds)

        return self.run_async(run())


def _rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0
