"""The client-initiated File Daemon (``bareosproto.twisted.client_initiated``) and our Director's pool.

Two parts:

* in memory on a ``task.Clock`` (iosim pumps to a real Director factory and
  pool): one idle connection, never a byte on it, the hand-over when the
  Director takes it and the immediate replacement, the backoff sequence with
  an injected random source, clean stop;
* loopback TCP on 127.0.0.1 (trial test cases, real reactor): 200 connectors
  against our Director, a job on each, a Director restart, a killed FD and a
  half-open peer.

PROTOCOL.md 8.1 (the FD loop), 8.2 (the pool), 15 item 10 (the next waiting
connection opens within a millisecond of the Director's first command) are
the rules; ``client-initiated-clear`` shows that first command, ``JobId=...``.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from twisted.internet import reactor as _reactor
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
from twisted.internet.interfaces import IListeningPort
from twisted.internet.task import Clock, deferLater
from twisted.trial.unittest import TestCase

from bareosproto.connection import ClientConnection, ConnectionType
from bareosproto.events import Message, SignalFrame
from bareosproto.keys import password_key
from bareosproto.signals import Signal
from bareosproto.tls_policy import TlsPolicy
from bareosproto.twisted.client_initiated import ClientInitiatedConnector, client_initiated_connection
from bareosproto.twisted.keepalive import IdleWatchdog
from bareosproto.twisted.pool import DirectorPoolFactory, WaitingConnectionPool
from bareosproto.twisted.protocol import BareosProtocol, Channel, ChannelClosed

from recordings import recordings
from test_pool import CLIENT, KEY, MemoryDirector, T0, director_config

reactor: Any = _reactor

#: the Director's first command on the pooled connection in client-initiated-clear
JOB_COMMAND = next(
    f.payload
    for r in recordings() if r.scenario == "client-initiated-clear"
    for c in r.connections if c.kind == "fd-dir-client-initiated"
    for f in c.frames if f.dir == "a2i" and f.payload.startswith(b"JobId=")
)


class JobLog:
    """What the FD's ``on_job`` saw: each taken channel and its first frame; answers and ends the job."""

    def __init__(self, answer: bool = True) -> None:
        self.channels: list[Channel] = []
        self.first: list[Message | SignalFrame] = []
        self.answer = answer

    async def __call__(self, channel: Channel) -> None:
        self.channels.append(channel)
        frame = await channel.next_frame()
        self.first.append(frame)
        if self.answer:
            channel.send(b"2000 OK Job\n")
            channel.send_signal(Signal.BNET_TERMINATE)
            channel.close()


def connector(director: MemoryDirector, jobs: JobLog, name: str = CLIENT, key: Any = KEY,
              samples: list[float] | None = None, **kw: Any) -> ClientInitiatedConnector:
    source = iter(samples) if samples is not None else None
    random = (lambda: next(source)) if source is not None else (lambda: 0.0)  # type: ignore[arg-type]
    kw.setdefault("first_retry", 1.0)
    kw.setdefault("max_retry", 10.0)
    return ClientInitiatedConnector(director.clock, director, client_initiated_connection(name, key, director.clock),
                                    jobs, random=random, **kw)


@pytest.fixture
def clock() -> Clock:
    c = Clock()
    c.advance(T0)
    return c


# -- in memory ---------------------------------------------------------------------------------


def test_connector_keeps_one_idle_connection_and_sends_nothing_on_it(clock: Clock) -> None:
    """Started, the FD opens one connection, authenticates and waits: for an hour not one byte goes out on it."""
    director = MemoryDirector(clock)
    fd = connector(director, JobLog())
    fd.startService()
    director.flush()
    assert director.pool.count(CLIENT) == 1 and fd.idle is not None and fd.connected == 1
    dir_proto = director.channels[0].protocol
    quiet_since = dir_proto.last_received
    for _ in range(60):
        clock.advance(60)
        director.flush()
    assert dir_proto.last_received == quiet_since  # nothing at all, no heartbeat either
    assert director.attempts == 1 and director.pool.count(CLIENT) == 1 and director.pool.dropped == 0


def test_taken_connection_goes_to_the_job_and_the_next_one_opens_at_once(clock: Clock) -> None:
    """The Director's first command on the idle connection hands it to ``on_job`` (first frame = that command)
    and the FD opens its next waiting connection at the same instant, before the job has answered."""
    director = MemoryDirector(clock)
    jobs = JobLog(answer=False)
    fd = connector(director, jobs)
    fd.startService()
    director.flush()
    taken = director.pool.take_now(CLIENT)
    assert taken is not None
    started = clock.seconds()
    taken.send(JOB_COMMAND)
    director.flush()
    assert clock.seconds() == started
    assert jobs.first == [Message(JOB_COMMAND)]
    assert director.attempts == 2 and director.pool.count(CLIENT) == 1
    assert director.pool.take_now(CLIENT) is not taken
    assert fd.taken == 1 and fd.jobs == 1 and fd.idle is not None


def test_finished_job_does_not_open_another_connection(clock: Clock) -> None:
    """When the job's connection ends, exactly one waiting connection remains: the taken slot never reconnects."""
    director = MemoryDirector(clock)
    jobs = JobLog()
    fd = connector(director, jobs)
    fd.startService()
    director.flush()
    for round_ in range(3):
        taken = director.pool.take_now(CLIENT)
        assert taken is not None
        taken.send(b"status")
        director.flush()
        clock.advance(100)
        director.flush()
        assert director.pool.count(CLIENT) == 1 and director.attempts == 2 + round_
    assert fd.jobs == 0 and fd.taken == 3 and jobs.first == [Message(b"status")] * 3


def test_lost_idle_connection_is_replaced_at_once(clock: Clock) -> None:
    """If the Director closes the waiting connection (a restart, an idle limit), the FD reconnects without waiting."""
    director = MemoryDirector(clock)
    fd = connector(director, JobLog())
    fd.startService()
    director.flush()
    director.pool.clear()
    director.flush()
    assert director.attempts == 2 and director.pool.count(CLIENT) == 1 and fd.failures == 0


def test_refused_connections_back_off_exponentially_with_injected_jitter(clock: Clock) -> None:
    """The Director is down: retries after 1, 2, 4, 8, 10, 10 s (first retry 1, ceiling 10), each shortened by
    jitter 0.5 × the injected sample; once it is back the FD returns and the count starts over."""
    director = MemoryDirector(clock)
    samples = [0.0, 0.5, 0.0, 1.0, 0.0, 0.2, 0.0]
    fd = connector(director, JobLog(), samples=samples, jitter=0.5)
    director.refusing = True
    fd.startService()
    times = [clock.seconds()]
    for _ in range(6):
        (call,) = clock.getDelayedCalls()
        clock.advance(call.getTime() - clock.seconds())
        times.append(clock.seconds())
    gaps = [round(b - a, 6) for a, b in zip(times, times[1:])]
    assert gaps == [1.0, 1.5, 4.0, 4.0, 10.0, 9.0]
    assert fd.failures == 7 and director.attempts == 7  # the 7th refusal waits for the 8th attempt
    director.refusing = False
    (call,) = clock.getDelayedCalls()
    clock.advance(call.getTime() - clock.seconds())
    director.flush()
    assert director.pool.count(CLIENT) == 1 and fd.failures == 0


def test_refused_login_counts_as_a_failed_attempt(clock: Clock) -> None:
    """A Director that refuses the login (wrong password) is retried with backoff, not in a tight loop."""
    director = MemoryDirector(clock)
    fd = connector(director, JobLog(), key=password_key("wrong"))
    fd.startService()
    for _ in range(200):
        clock.advance(1)
        director.flush()
    assert director.pool.count(CLIENT) == 0 and fd.connected == 0
    assert 3 <= director.attempts <= 20 and fd.failures >= director.attempts - 1


def test_stop_service_closes_everything_and_leaves_no_timer(clock: Clock) -> None:
    """``stopService()`` closes the waiting connection and running jobs, cancels retries, and fires when done."""
    director = MemoryDirector(clock)
    fd = connector(director, JobLog(answer=False))
    fd.startService()
    director.flush()
    taken = director.pool.take_now(CLIENT)
    assert taken is not None
    taken.send(b"status")
    director.flush()
    assert fd.jobs == 1
    stopped = fd.stopService()
    director.flush()
    assert stopped.called and fd.jobs == 0 and fd.idle is None
    assert len(director.pool) == 0 and taken.protocol.conn is not None
    assert taken.protocol.conn.state.value == "closed"
    clock.advance(1000)
    director.flush()
    assert director.attempts == 2 and clock.getDelayedCalls() == []


def test_stop_while_retrying_cancels_the_retry(clock: Clock) -> None:
    """Stopped while waiting to retry, the FD makes no further attempt."""
    director = MemoryDirector(clock)
    director.refusing = True
    fd = connector(director, JobLog())
    fd.startService()
    assert len(clock.getDelayedCalls()) == 1
    assert fd.stopService().called
    assert clock.getDelayedCalls() == []
    clock.advance(1000)
    assert director.attempts == 1


# -- loopback ---------------------------------------------------------------------------------------


class Loopback(TestCase):
    """Our client-initiated FDs against our Director over TCP on 127.0.0.1."""

    timeout = 60
    FIRST_RETRY = 0.05
    MAX_RETRY = 0.25

    async def start_director(self, port: int = 0, **pool_kw: Any) -> IListeningPort:
        if not hasattr(self, "pool"):
            self.pool = WaitingConnectionPool(reactor, **pool_kw)
            self.factory = DirectorPoolFactory(director_config(), reactor, self.pool)
            self.addCleanup(self.stop_director_connections)
        listening = await TCP4ServerEndpoint(reactor, port, backlog=1024, interface="127.0.0.1").listen(self.factory)
        self.listening = listening
        return listening

    async def stop_director_connections(self) -> None:
        if getattr(self, "listening", None) is not None:
            await self.listening.stopListening()
            self.listening = None
        waits = []
        for proto in list(self.factory.protocols):
            proto.abort()
            waits.append(proto.when_closed())
        await DeferredList(waits)

    def start_fds(self, count: int, port: int, jobs: JobLog) -> list[ClientInitiatedConnector]:
        fds = []
        for i in range(count):
            endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=5)
            fd = ClientInitiatedConnector(
                reactor, endpoint, client_initiated_connection(f"fd-{i:03d}", KEY, reactor), jobs,
                first_retry=self.FIRST_RETRY, max_retry=self.MAX_RETRY, heartbeat_interval=30,
            )
            fd.startService()
            fds.append(fd)
        self.addCleanup(lambda: DeferredList([fd.stopService() for fd in fds]))
        return fds

    async def until(self, condition: Any, limit: float = 10.0) -> float:
        start = time.monotonic()
        while not condition():
            if time.monotonic() - start > limit:
                raise AssertionError(f"condition not met after {limit} s")
            await deferLater(reactor, 0.005, lambda: None)
        return time.monotonic() - start

    async def run_job(self, name: str) -> list[Message | SignalFrame]:
        channel = self.pool.take_now(name)
        assert channel is not None, name
        channel.send(JOB_COMMAND)
        frames = await channel.read_until(lambda f: isinstance(f, SignalFrame))
        await channel.protocol.when_closed()
        return frames

    async def test_200_fds_serve_a_job_each_and_come_back_with_a_fresh_connection(self) -> None:
        """200 connectors wait in the pool; a job takes each connection, the FD answers on it, and every FD
        is back in the pool with a new connection (the taken ones are closed after their job)."""
        port = (await self.start_director()).getHost().port
        jobs = JobLog()
        fds = self.start_fds(200, port, jobs)
        await self.until(lambda: len(self.pool) == 200)
        names = [f"fd-{i:03d}" for i in range(200)]
        assert sorted(self.pool.names()) == names
        first_channels = {e.name: e.channel for e in self.pool}
        results = await DeferredList([Deferred.fromCoroutine(self.run_job(n)) for n in names], fireOnOneErrback=True)
        for ok, frames in results:
            assert ok and frames == [Message(b"2000 OK Job\n"), SignalFrame(Signal.BNET_TERMINATE)]
        # the Director pools a connection when it sends its greeting, the FD is idle once it has read it
        await self.until(lambda: len(self.pool) == 200 and all(fd.idle is not None for fd in fds))
        assert all(e.channel is not first_channels[e.name] for e in self.pool)
        assert all(fd.taken == 1 and fd.connected == 2 and fd.jobs == 0 for fd in fds)
        assert jobs.first == [Message(JOB_COMMAND)] * 200
        assert self.pool.dropped == 0

    async def test_director_restart_every_fd_returns_within_the_backoff_bound(self) -> None:
        """The Director stops (closing the pool) and comes back on the same port 1.5 s later: every FD has been
        refused meanwhile and is back in the pool within the backoff ceiling (0.25 s) of the restart, plus 0.5 s
        for 200 handshakes."""
        listening = await self.start_director()
        port = listening.getHost().port
        fds = self.start_fds(200, port, JobLog())
        await self.until(lambda: len(self.pool) == 200)
        await listening.stopListening()
        self.listening = None
        self.pool.clear()
        await deferLater(reactor, 1.5, lambda: None)
        assert len(self.pool) == 0
        assert all(fd.failures >= 1 for fd in fds)  # every FD saw the Director down
        await self.start_director(port)
        back = await self.until(lambda: len(self.pool) == 200 and all(fd.idle is not None for fd in fds))
        assert back <= self.MAX_RETRY + 0.5, f"all FDs back after {back:.3f} s"
        assert all(fd.failures == 0 and fd.idle is not None for fd in fds)

    async def test_next_connection_is_waiting_right_after_the_first_command(self) -> None:
        """Over TCP too, the FD's next connection is open and authenticated within a few milliseconds of the
        Director's first command on the taken one (the recordings show the SYN 0.2 ms after ``JobId=``)."""
        port = (await self.start_director()).getHost().port
        jobs = JobLog(answer=False)
        (fd,) = self.start_fds(1, port, jobs)
        await self.until(lambda: fd.idle is not None)
        channel = self.pool.take_now("fd-000")
        assert channel is not None
        channel.send(JOB_COMMAND)
        took = await self.until(lambda: self.pool.count("fd-000") == 1, limit=2)
        assert took < 0.1, f"{took * 1000:.1f} ms"
        assert fd.jobs == 1 and jobs.first == [Message(JOB_COMMAND)]
        channel.close()

    async def test_killed_fd_leaves_the_pool_without_polling(self) -> None:
        """An FD that goes away (its service stopped, its socket closed) leaves the pool as the close arrives;
        the pool has no timer of its own."""
        port = (await self.start_director()).getHost().port
        fds = self.start_fds(5, port, JobLog())
        await self.until(lambda: len(self.pool) == 5)
        assert self.pool._expiry is None
        await fds[2].stopService()
        took = await self.until(lambda: self.pool.count("fd-002") == 0, limit=2)
        assert took < 0.5 and len(self.pool) == 4 and self.pool.lost == 1
        fds[3].idle.protocol.abort()  # type: ignore[union-attr]  # a reset: gone, and the FD reconnects
        await self.until(lambda: self.pool.lost == 2, limit=2)
        await self.until(lambda: self.pool.count("fd-003") == 1, limit=2)

    async def test_tls_psk_fds_wait_serve_and_come_back(self) -> None:
        """With TLS-PSK (identity ``R_CLIENT\\x1e<name>``) the same cycle works: waiting, taken by a job, replaced."""
        self.pool = WaitingConnectionPool(reactor)
        self.factory = DirectorPoolFactory(director_config(tls=True), reactor, self.pool)
        self.addCleanup(self.stop_director_connections)
        port = (await self.start_director()).getHost().port
        fds = []
        for i in range(3):
            endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=5)
            make = client_initiated_connection(f"fd-{i:03d}", KEY, reactor, tls=True, tls_policy=TlsPolicy.REQUIRED)
            fd = ClientInitiatedConnector(reactor, endpoint, make, JobLog(), first_retry=self.FIRST_RETRY,
                                          max_retry=self.MAX_RETRY)
            fd.startService()
            self.addCleanup(fd.stopService)
            fds.append(fd)
        await self.until(lambda: len(self.pool) == 3 and all(fd.idle is not None for fd in fds))
        assert all(e.channel.protocol.tls is not None for e in self.pool)
        for i in range(3):
            frames = await self.run_job(f"fd-{i:03d}")
            assert frames == [Message(b"2000 OK Job\n"), SignalFrame(Signal.BNET_TERMINATE)]
        await self.until(lambda: len(self.pool) == 3 and all(fd.idle is not None and fd.taken == 1 for fd in fds))
        assert self.pool.dropped == 0

    async def test_half_open_fd_is_detected_by_the_idle_timeout(self) -> None:
        """An FD that stops reading and answering in the middle of a job is detected by the Director's idle
        watchdog after the timeout and its connection is dropped; the job's reader gets ChannelClosed."""
        port = (await self.start_director(keepalive_interval=2)).getHost().port
        fd = BareosProtocol(lambda: ClientConnection(ConnectionType.CLIENT_INITIATED, name=CLIENT, key=KEY,
                                                     clock=reactor.seconds), reactor)
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=5)
        from twisted.internet.endpoints import connectProtocol

        await connectProtocol(endpoint, fd)
        self.addCleanup(fd.abort)
        await fd.when_handshake_complete()
        await self.until(lambda: self.pool.count(CLIENT) == 1)
        channel = self.pool.take_now(CLIENT)
        assert channel is not None
        sock = channel.protocol.transport.getHandle()  # type: ignore[union-attr]
        import socket

        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        if hasattr(socket, "TCP_KEEPIDLE"):
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 2
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL) == 2
        fd.transport.pauseProducing()  # type: ignore[union-attr]  # stops reading, will never answer
        expired: list[float] = []
        started = time.monotonic()
        IdleWatchdog(channel, 0.5, reactor, on_timeout=lambda: expired.append(time.monotonic() - started)).start()
        channel.send(JOB_COMMAND)
        with pytest.raises(ChannelClosed):
            await channel.next_frame()
        assert len(expired) == 1 and 0.45 <= expired[0] < 2.0
        fd.transport.resumeProducing()  # type: ignore[union-attr]
        await fd.when_closed()
