"""Heartbeats, dead-peer timers, TCP keepalive and reconnect delays.

The rules (``bareosproto.heartbeat``) come from PROTOCOL.md 9 and 15 item 1,
checked against the ``heartbeat-clear`` recording; the Twisted pieces
(``bareosproto.twisted.keepalive``) run on a ``task.Clock`` over in-memory
connections, and on real sockets for the keepalive options.
"""

from __future__ import annotations

import random
import socket
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from bareosproto.events import Message, SignalFrame
from bareosproto.heartbeat import (
    CLIENT_INITIATED_RETRY,
    FD_HEARTBEAT_POLL,
    HEARTBEAT_RULES,
    Backoff,
    IdleTimer,
    IdleVerdict,
    Party,
    Phase,
    answers_heartbeat,
    backoff_delay,
    heartbeat_period,
    heartbeat_reply,
    heartbeat_rule,
    idle_frame_verdict,
    sends_heartbeat,
)
from bareosproto.signals import Signal
from bareosproto.twisted.keepalive import (
    HeartbeatAnswerer,
    HeartbeatSender,
    IdleWatchdog,
    handle_heartbeat,
    set_tcp_keepalive,
)

from recordings import recordings
from test_pool import CLIENT, MemoryDirector, T0, result_of

HEARTBEAT = SignalFrame(Signal.BNET_HEARTBEAT)
HB_RESPONSE = SignalFrame(Signal.BNET_HB_RESPONSE)


@pytest.fixture
def clock() -> Clock:
    c = Clock()
    c.advance(T0)
    return c


# -- who sends, who answers ---------------------------------------------------------------


def test_recorded_heartbeats_go_fd_to_director_every_5_s_and_are_not_answered() -> None:
    """heartbeat-clear (Heartbeat Interval = 2): BNET_HEARTBEAT only FD → Director, about every 5 s, never answered;
    the rule table predicts exactly that spacing."""
    rec = next(r for r in recordings() if r.scenario == "heartbeat-clear")
    senders = set()
    times = []
    for conn in rec.connections:
        for f in conn.frames:
            assert f.header != Signal.BNET_HB_RESPONSE
            if f.header == Signal.BNET_HEARTBEAT:
                sender = conn.side(f.dir)["role"]
                receiver = conn.side("a2i" if f.dir == "i2a" else "i2a")["role"]
                senders.add((sender, receiver))
                times.append(f.t)
    assert senders == {("fd", "director")}
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert len(gaps) >= 3
    rule = heartbeat_rule(Party.FD, Party.DIRECTOR, Phase.BACKUP)
    assert rule is not None and rule.observed and rule.poll_slice == FD_HEARTBEAT_POLL
    expected = heartbeat_period(2, rule.poll_slice)
    assert expected == 5.0
    assert all(abs(g - expected) < 0.5 for g in gaps)


def test_nobody_but_the_tray_monitor_answers_heartbeats() -> None:
    """Daemons and consoles skip BNET_HEARTBEAT silently; only the tray monitor answers BNET_HB_RESPONSE."""
    assert [p for p in Party if answers_heartbeat(p)] == [Party.TRAY_MONITOR]
    assert heartbeat_reply(Party.TRAY_MONITOR, HEARTBEAT) is Signal.BNET_HB_RESPONSE
    for party in (Party.DIRECTOR, Party.FD, Party.SD, Party.CONSOLE):
        assert heartbeat_reply(party, HEARTBEAT) is None
    assert heartbeat_reply(Party.TRAY_MONITOR, HB_RESPONSE) is None
    assert heartbeat_reply(Party.TRAY_MONITOR, Message(b"x")) is None


def test_director_and_consoles_never_send_and_idle_client_connections_carry_none() -> None:
    """No rule lets the Director or a console send a heartbeat, nor anyone on an idle client-initiated connection."""
    assert all(r.sender not in (Party.DIRECTOR, Party.CONSOLE) for r in HEARTBEAT_RULES)
    assert all(r.phase is not Phase.IDLE_CLIENT_INITIATED for r in HEARTBEAT_RULES)
    assert not sends_heartbeat(Party.FD, Party.DIRECTOR, Phase.IDLE_CLIENT_INITIATED, 60)
    assert sends_heartbeat(Party.FD, Party.DIRECTOR, Phase.BACKUP, 2)
    assert not sends_heartbeat(Party.FD, Party.DIRECTOR, Phase.BACKUP, 0)  # Heartbeat Interval 0 = off
    assert sends_heartbeat(Party.SD, Party.DIRECTOR, Phase.RESERVATION_RETRY, 0)  # unconditional upstream


@pytest.mark.parametrize("interval, poll, period", [(2, 5, 5), (5, 5, 5), (7, 5, 10), (60, 5, 60), (3, None, 3), (0, 5, None)])
def test_heartbeat_period_rounds_up_to_the_poll_slice(interval: float, poll: float | None, period: float | None) -> None:
    """The FD checks the clock every 5 s during a backup: the real spacing is the interval rounded up to 5 s."""
    assert heartbeat_period(interval, poll) == period


def test_idle_verdict_drops_signals_and_empty_frames_keeps_text() -> None:
    """On a waiting connection: every signal and a zero-length frame drop it; a text frame is kept."""
    assert idle_frame_verdict(Message(b"x")) is IdleVerdict.KEEP
    assert idle_frame_verdict(Message(b"")) is IdleVerdict.DROP
    for sig in list(Signal) + [-99]:
        assert idle_frame_verdict(SignalFrame(sig)) is IdleVerdict.DROP


# -- backoff -------------------------------------------------------------------------------------


def test_backoff_doubles_from_the_first_retry_up_to_the_ceiling() -> None:
    """Without jitter: first retry, then ×factor after each failure, capped; 0 failures means at once."""
    delays = [backoff_delay(n, first=1, ceiling=60, jitter=0) for n in range(0, 9)]
    assert delays == [0, 1, 2, 4, 8, 16, 32, 60, 60]
    assert backoff_delay(10_000, first=1, ceiling=60) == 60  # no overflow


def test_backoff_jitter_takes_off_a_fraction_given_by_the_injected_sample() -> None:
    """Jitter 0.5 with sample u gives d·(1 − 0.5·u): the sample comes from the caller, never a global source."""
    assert backoff_delay(3, first=1, ceiling=60, jitter=0.5, sample=0.0) == 4
    assert backoff_delay(3, first=1, ceiling=60, jitter=0.5, sample=0.5) == 3
    assert backoff_delay(3, first=1, ceiling=60, jitter=0.5, sample=0.999) == pytest.approx(2.002)


def test_backoff_policy_draws_from_its_random_source() -> None:
    """``Backoff`` draws one sample per delay from the injected source, so a seeded source repeats exactly."""
    samples = iter([0.0, 1.0, 0.5])
    policy = Backoff(lambda: next(samples), first=2, ceiling=10, jitter=1.0)
    assert [policy(1), policy(2), policy(3)] == [2.0, 0.0, 4.0]
    a = Backoff(random.Random(7).random)
    b = Backoff(random.Random(7).random)
    assert [a(n) for n in range(1, 10)] == [b(n) for n in range(1, 10)]


def test_upstream_retry_is_a_fixed_60_s() -> None:
    """``Backoff(first=60, ceiling=60, jitter=0)`` is upstream's fixed 60 s retry."""
    policy = Backoff(random.Random().random, first=CLIENT_INITIATED_RETRY, ceiling=CLIENT_INITIATED_RETRY, jitter=0)
    assert {policy(n) for n in range(1, 20)} == {60.0}


@given(st.integers(min_value=0, max_value=10_000), st.floats(0.001, 100), st.floats(0, 1000),
       st.floats(1, 10), st.floats(0, 1), st.floats(0, 1, exclude_max=True))
def test_backoff_never_exceeds_the_ceiling(failures: int, first: float, ceiling: float, factor: float,
                                           jitter: float, sample: float) -> None:
    """Whatever the parameters and sample, a delay is between 0 and the ceiling: the bound a restart test relies on."""
    d = backoff_delay(failures, first=first, ceiling=ceiling, factor=factor, jitter=jitter, sample=sample)
    assert 0 <= d <= ceiling


def test_bad_backoff_parameters_are_refused() -> None:
    """A jitter outside 0..1, a negative delay or a factor below 1 is a programming error."""
    with pytest.raises(ValueError):
        Backoff(random.random, jitter=1.5)
    with pytest.raises(ValueError):
        Backoff(random.random, first=-1)
    with pytest.raises(ValueError):
        Backoff(random.random, factor=0.5)


# -- idle timer ----------------------------------------------------------------------------------


def test_idle_timer_expires_timeout_after_the_last_activity() -> None:
    """The peer counts as dead ``timeout`` seconds after the last sign of life, not after the start."""
    timer = IdleTimer(10, now=100)
    timer.touch(105)
    assert timer.remaining(110) == 5 and not timer.expired(114.9)
    assert timer.expired(115)
    timer.touch(90)  # an older timestamp changes nothing
    assert timer.expired(115)
    with pytest.raises(ValueError):
        IdleTimer(0, now=0)


# -- Twisted: sender, answerer, watchdog --------------------------------------------------------


def job_channels(director: MemoryDirector) -> tuple[Any, Any]:
    """(FD protocol, Director channel) of a connection the Director has taken for a job."""
    fd = director.fd()
    channel = director.pool.take_now(CLIENT)
    assert channel is not None
    return fd, channel


def test_heartbeat_sender_sends_every_period_on_the_clock(clock: Clock) -> None:
    """The FD's job channel carries BNET_HEARTBEAT every period (5 s for interval 2 in a backup), none before."""
    director = MemoryDirector(clock)
    fd, dir_channel = job_channels(director)
    rule = heartbeat_rule(Party.FD, Party.DIRECTOR, Phase.BACKUP)
    assert rule is not None
    sender = HeartbeatSender.for_rule(fd.channel, rule, 2, clock)
    assert sender is not None and sender.period == 5.0
    sender.start()
    clock.advance(4.9)
    director.flush()
    first = dir_channel.next_frame()
    assert not first.called
    for _ in range(3):
        clock.advance(5)
    director.flush()
    assert sender.sent == 3
    frames = [result_of(first)] + [result_of(dir_channel.next_frame()) for _ in range(2)]
    assert frames == [HEARTBEAT] * 3
    assert HeartbeatSender.for_rule(fd.channel, rule, 0, clock) is None


def test_heartbeat_sender_stops_when_the_connection_closes(clock: Clock) -> None:
    """A closed connection stops its heartbeat timer: nothing is left on the clock."""
    director = MemoryDirector(clock)
    fd, _ = job_channels(director)
    HeartbeatSender(fd.channel, 2, clock).start()
    assert len(clock.getDelayedCalls()) == 1
    fd.abort()
    director.flush()
    assert clock.getDelayedCalls() == []


def test_tray_monitor_answers_and_daemons_do_not(clock: Clock) -> None:
    """Unread heartbeats: the tray monitor answers each with BNET_HB_RESPONSE, a daemon only skips them."""
    director = MemoryDirector(clock)
    fd, dir_channel = job_channels(director)
    answerer = HeartbeatAnswerer(dir_channel, Party.TRAY_MONITOR)
    fd.channel.send_signal(Signal.BNET_HEARTBEAT)
    director.flush()
    assert answerer.seen == 1 and result_of(fd.channel.next_frame()) == HB_RESPONSE

    fd2, dir2 = job_channels(director)
    quiet = HeartbeatAnswerer(dir2, Party.DIRECTOR)
    fd2.channel.send_signal(Signal.BNET_HEARTBEAT)
    fd2.channel.send(b"2000 OK\n")
    director.flush()
    assert quiet.seen == 1 and not fd2.channel.next_frame().called
    assert result_of(dir2.next_frame()) == Message(b"2000 OK\n")  # other frames pass through


def test_handle_heartbeat_in_a_reader_loop() -> None:
    """For readers: heartbeat signals are reported as handled (skip them), other frames are not."""
    transport = StringTransport()

    class _Chan:
        def send_signal(self, sig: int) -> None:
            transport.write(int(sig).to_bytes(4, "big", signed=True))

    chan: Any = _Chan()
    assert handle_heartbeat(chan, HEARTBEAT, Party.TRAY_MONITOR) and transport.value() == b"\xff\xff\xff\xf9"
    assert handle_heartbeat(chan, HB_RESPONSE, Party.FD)
    assert not handle_heartbeat(chan, SignalFrame(Signal.BNET_EOD), Party.FD)
    assert not handle_heartbeat(chan, Message(b""), Party.FD)


def test_idle_watchdog_aborts_a_silent_peer(clock: Clock) -> None:
    """Nothing received for the timeout: the connection is aborted and ``on_timeout`` called."""
    director = MemoryDirector(clock)
    fd, dir_channel = job_channels(director)
    fired: list[bool] = []
    dog = IdleWatchdog(dir_channel, 30, clock, on_timeout=lambda: fired.append(True)).start()
    clock.advance(29.9)
    assert not dog.expired
    clock.advance(0.1)
    director.flush()
    assert dog.expired and fired == [True]
    assert fd.conn is not None and fd.conn.state.value == "closed"
    assert clock.getDelayedCalls() == []


def test_idle_watchdog_is_kept_alive_by_heartbeats(clock: Clock) -> None:
    """An FD that sends a heartbeat every 5 s keeps a 30 s watchdog quiet for as long as it does; then it fires."""
    director = MemoryDirector(clock)
    fd, dir_channel = job_channels(director)
    dog = IdleWatchdog(dir_channel, 30, clock).start()
    sender = HeartbeatSender(fd.channel, 5, clock).start()
    for _ in range(40):  # 200 s
        clock.advance(5)
        director.flush()
    assert not dog.expired and len(clock.getDelayedCalls()) == 2  # one timer each, re-armed, never piled up
    sender.stop()
    for _ in range(7):
        clock.advance(5)
        director.flush()
    assert dog.expired


# -- TCP keepalive ------------------------------------------------------------------------------


class _Handle:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def getHandle(self) -> socket.socket:
        return self.sock


def test_keepalive_sets_idle_and_interval_on_a_real_socket() -> None:
    """SO_KEEPALIVE on, TCP_KEEPIDLE and TCP_KEEPINTVL both the heartbeat interval, as SetKeepalive() does."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    sock = socket.create_connection(server.getsockname())
    try:
        assert set_tcp_keepalive(_Handle(sock), 7)
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        if hasattr(socket, "TCP_KEEPIDLE"):
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 7
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL) == 7
    finally:
        sock.close()
        server.close()


def test_keepalive_without_interval_only_switches_it_on() -> None:
    """Interval 0/None: only SO_KEEPALIVE, system timings (what Bareos does on accepted sockets)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        before = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) if hasattr(socket, "TCP_KEEPIDLE") else 0
        assert set_tcp_keepalive(_Handle(sock), None)
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        if hasattr(socket, "TCP_KEEPIDLE"):
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == before
    finally:
        sock.close()


def test_keepalive_skips_transports_without_a_tcp_socket() -> None:
    """A transport with no socket (StringTransport, a UNIX or UDP socket) is left alone, silently."""
    assert not set_tcp_keepalive(StringTransport(), 7)
    assert not set_tcp_keepalive(object(), 7)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        assert not set_tcp_keepalive(_Handle(udp), 7)
    finally:
        udp.close()
