"""The tray monitor (``bareosproto.monitor``, ``bareosproto.twisted.monitor``), PROTOCOL.md 7.9-7.11.

Sans-IO: the daemons' verdicts on a monitor's commands (exact lines from ``filed/dir_cmd.cc``,
``stored/dir_cmd.cc``, ``dird/ua_cmds.cc``), the status framing and reading against the
``monitor-fd-emulated`` recording, the polling schedule.  Twisted (loopback, real reactor, timers
on a ``task.Clock``): our monitor against our FD, SD and Director acceptors, heartbeats answered
with ``BNET_HB_RESPONSE``, restricted commands refused with the exact lines.
"""

from __future__ import annotations

from typing import Any

import pytest
from recordings import A2I, I2A, recordings
from twisted.internet import reactor
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from bareosproto.errors import LocalProtocolError
from bareosproto.events import Message, SignalFrame
from bareosproto.monitor import (
    STATUS_COMMAND,
    MonitorTarget,
    PollSchedule,
    StatusReader,
    Verdict,
    check_refresh_interval,
    director_monitor_verdict,
    fd_monitor_verdict,
    sd_monitor_verdict,
    status_frames,
)
from bareosproto.signals import Signal
from bareosproto.tls_policy import TlsPolicy
from bareosproto.twisted.factory import connect
from bareosproto.twisted.monitor import MonitorClient, MonitorService, monitor_connection, monitor_server_factory

EOD, TERMINATE = -1, -4
FD_2997 = b"2997 Invalid command for a Director with Monitor directive enabled.\n"
SD_3997 = b"3997 Invalid command for a Director with Monitor directive enabled.\n"


# -- verdicts ------------------------------------------------------------------------


@pytest.mark.parametrize("line,verdict", [
    (b"status", Verdict(True, "status")),
    (b".status header", Verdict(True, ".status")),
    (b"backup FileIndex=0\n", Verdict(False, "backup", (FD_2997, EOD, TERMINATE), True)),
    (b"JobId=1 Job=x SDid=1 SDtime=1 Authorization=x\n", Verdict(False, "JobId=", (FD_2997, EOD, TERMINATE), True)),
    (b"quit", Verdict(False, None, (b"2999 Invalid command\n", TERMINATE), True)),
])
def test_an_fd_lets_a_monitor_run_status_only(line: bytes, verdict: Verdict) -> None:
    """FD, Director resource with ``Monitor = yes``: ``status``/``.status`` run; other known commands
    get ``2997 ...``, ``BNET_EOD`` and the end (``BNET_TERMINATE``); unknown ones ``2999 Invalid
    command`` and the end."""
    assert fd_monitor_verdict(line) == verdict


@pytest.mark.parametrize("line,verdict", [
    (b"status", Verdict(True, "status")),
    (b"run", Verdict(False, "run", (SD_3997, EOD, b"3900 Invalid command: run\n", TERMINATE), True)),
    (b"label x\n", Verdict(False, "label", (SD_3997, EOD, b"3900 Invalid command: label x\n\n", TERMINATE), True)),
    (b"bogus", Verdict(False, None, (b"3900 Invalid command: bogus\n", TERMINATE), True)),
])
def test_an_sd_refuses_a_monitor_with_3997_then_3900(line: bytes, verdict: Verdict) -> None:
    """SD, Director resource with ``Monitor = yes``: a known command other than ``status`` gets
    ``3997 ...`` and ``BNET_EOD`` and -- the refusal leaves it "not found" -- ``3900 Invalid command:
    <line>`` (with the line's own newline), then ``BNET_TERMINATE``."""
    assert sd_monitor_verdict(line) == verdict


@pytest.mark.parametrize("line,verdict", [
    (b"status dir", Verdict(True, "status")),
    (b"STAT dir", Verdict(True, "status")),
    (b".status dir running", Verdict(True, ".status")),
    (b"quit", Verdict(True, "quit")),
    (b"list jobs", Verdict(False, "list", (b"list: is an invalid command.\n", EOD), False)),
    (b"frobnicate", Verdict(False, None, (b"frobnicate: is an invalid command.\n", EOD), False)),
    (b"", Verdict(False, None, (EOD,), False)),
])
def test_a_director_answers_what_the_monitor_console_may_not_run(line: bytes, verdict: Verdict) -> None:
    """Director, console with Command ACL ``status, .status``: the first word selects a command by
    case-insensitive prefix; refused or unknown words get ``<word>: is an invalid command.`` and
    ``BNET_EOD``, and the session goes on."""
    assert director_monitor_verdict(line) == verdict


# -- against the recording ---------------------------------------------------------------


def recorded_status() -> tuple[list[bytes], list[Any]]:
    (rec,) = [r for r in recordings() if r.scenario == "monitor-fd-emulated"]
    (conn,) = rec.connections
    frames = list(conn.frames)
    start = next(f.index for f in frames if f.payload == b"status")
    reply = [f for f in frames[start + 1:] if f.dir == A2I]
    assert frames[start].dir == I2A
    return [f.payload for f in reply], reply


def test_fd_status_framing_is_as_recorded() -> None:
    """The FD's reply to ``status``: a bare ``\\n`` frame, then each line ending in ``\\n`` and a NUL,
    then ``BNET_EOD`` (monitor-fd-emulated, PROTOCOL.md 15.5)."""
    payloads, reply = recorded_status()
    assert reply[-1].header == EOD
    lines = [p[:-2] for p in payloads[1:-1]]
    assert status_frames(lines) == payloads[:-1]


def test_the_monitor_reads_the_recorded_reply() -> None:
    """The tray's reading: text up to ``BNET_EOD``, newline and NUL stripped, a heartbeat inside the
    reply answered with ``BNET_HB_RESPONSE``."""
    payloads, reply = recorded_status()
    reader = StatusReader()
    back: list[int] = []
    for i, frame in enumerate(reply):
        if i == 3:
            back += reader.feed(int(Signal.BNET_HEARTBEAT))
        back += reader.feed(frame.header if frame.header < 0 else frame.payload)
    assert reader.done and reader.complete
    assert back == [int(Signal.BNET_HB_RESPONSE)]
    assert reader.lines[0] == ""
    assert reader.lines[1].startswith("client-clear Version: 26.0.0")
    assert reader.lines[-1] == "===="
    assert len(reader.lines) == len(payloads) - 1
    with pytest.raises(LocalProtocolError):
        reader.feed(b"more")


def test_status_commands() -> None:
    """``status dir`` to a Director, ``status`` to an FD or SD, no newline."""
    assert STATUS_COMMAND == {MonitorTarget.DIRECTOR: b"status dir", MonitorTarget.FD: b"status",
                              MonitorTarget.SD: b"status"}


# -- the schedule ---------------------------------------------------------------------------


def test_polls_fall_on_the_timer_ticks_and_a_busy_tick_is_skipped() -> None:
    """Ticks at start + k*interval; a poll still running at a tick makes the tray skip that tick;
    a late timer does not make up missed ticks."""
    s = PollSchedule(10, start=100)
    assert [s.tick(k) for k in (1, 2, 3)] == [110, 120, 130]
    assert s.next_tick(100) == 110 and s.next_tick(110) == 120 and s.next_tick(125.5) == 130
    assert s.next_tick(0) == 110
    assert s.polls(150) == [110, 120, 130, 140, 150]
    # poll 1 takes 15 s (tick 120 skipped), poll 2 none, poll 3 25 s (ticks 150 and 160 skipped)
    assert s.polls(170, durations=[15, 0, 25]) == [110, 130, 140, 170]


def test_the_refresh_interval_is_one_second_to_ten_minutes() -> None:
    """``RefreshInterval`` outside 1..600 s is refused, as the tray refuses to start; default 60."""
    assert check_refresh_interval(1) == 1.0 and check_refresh_interval(600) == 600.0
    for bad in (0, 0.5, 601):
        with pytest.raises(LocalProtocolError):
            check_refresh_interval(bad)
    assert PollSchedule().interval == 60
    assert PollSchedule(0.1, check=False).tick(1) == pytest.approx(0.1)


# -- loopback ------------------------------------------------------------------------------

R: Any = reactor
MONITOR = "tray-monitor"
PASSWORD = "monitor-password"
FD_LINES = [b"client-fd Version: 26.0.0", b"Running Jobs:", b"No Jobs running.", b"===="]


class Loopback(TestCase):
    timeout = 30

    def serve(self, target: MonitorTarget, tls: bool, status: Any = None) -> tuple[int, list[MonitorService]]:
        services: list[MonitorService] = []

        def default(command: str, line: bytes) -> list[bytes]:
            return FD_LINES

        policy = TlsPolicy.REQUIRED if tls else TlsPolicy.NONE
        factory = monitor_server_factory(R, target=target, name=f"the-{target.value}",
                                         monitors={MONITOR: (PASSWORD, policy)}, status=status or default,
                                         tls=tls, on_service=services.append)
        port = R.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)

        def abort() -> Any:
            from twisted.internet.defer import DeferredList
            ds = []
            for proto in list(factory.protocols):
                proto.abort()
                ds.append(proto.when_closed())
            return DeferredList(ds)

        self.addCleanup(abort)
        return int(port.getHost().port), services

    def client(self, target: MonitorTarget, port: int, tls: bool, clock: Clock, interval: float = 2.0,
               on_status: Any = None) -> MonitorClient:
        make = monitor_connection(target, monitor=MONITOR, password=PASSWORD, clock=R.seconds, tls=tls,
                                  tls_policy=TlsPolicy.REQUIRED if tls else TlsPolicy.NONE)
        mon = MonitorClient(R, f"tcp:host=127.0.0.1:port={port}", make, target, interval=interval,
                            clock=clock, on_status=on_status)
        self.addCleanup(mon.stop)
        return mon

    async def polling(self, target: MonitorTarget, tls: bool) -> None:
        port, services = self.serve(target, tls)
        clock = Clock()
        replies: list[list[str]] = []
        waiting: list[Deferred[None]] = []

        def on_status(lines: list[str]) -> None:
            replies.append(lines)
            fire = list(waiting)
            waiting.clear()
            for d in fire:
                d.callback(None)

        def next_reply() -> Deferred[None]:
            d: Deferred[None] = Deferred()
            waiting.append(d)
            return d

        mon = self.client(target, port, tls, clock, interval=5.0, on_status=on_status)
        first = next_reply()
        mon.start(poll_now=True)
        await first
        clock.advance(4.9)
        self.assertEqual(len(replies), 1)  # no tick yet
        second = next_reply()
        clock.advance(0.1)
        await second
        third = next_reply()
        clock.advance(5)
        await third
        self.assertEqual(mon.polls, 3)
        expected = ([] if target is MonitorTarget.DIRECTOR else [""]) + [line.decode() for line in FD_LINES]
        self.assertEqual(replies, [expected] * 3)
        (service,) = services  # one connection, reused for every poll
        self.assertEqual(service.commands, [STATUS_COMMAND[target]] * 3)
        # heartbeat while idle: answered at once
        service.heartbeat()
        for _ in range(50):
            if service.hb_responses:
                break
            await deferLater(0.01)
        self.assertEqual(service.hb_responses, 1)
        await mon.stop()
        await service.done
        if target is not MonitorTarget.DIRECTOR:
            self.assertEqual(service.commands[-1], b"quit")
        if tls:
            self.assertEqual(service.channel.protocol.tls.version, "TLSv1.3")  # type: ignore[union-attr]

    def test_monitor_polls_an_fd(self) -> Deferred[None]:
        """Tray -> FD (connection 10): ``status`` on every tick of the refresh timer (5 s on the
        test clock), the FD's NUL-terminated lines read up to EOD, one connection for all polls, an
        idle heartbeat answered with ``BNET_HB_RESPONSE``, ``quit`` and TERMINATE at the end."""
        return ensureDeferred(self.polling(MonitorTarget.FD, False))

    def test_monitor_polls_an_sd_over_tls_psk(self) -> Deferred[None]:
        """Tray -> SD (connection 11) inside TLS-PSK (identity ``R_DIRECTOR\\x1e<monitor>``)."""
        return ensureDeferred(self.polling(MonitorTarget.SD, True))

    def test_monitor_polls_a_director(self) -> Deferred[None]:
        """Tray -> Director (connection 9): the console login, ``status dir`` on every tick."""
        return ensureDeferred(self.polling(MonitorTarget.DIRECTOR, False))

    async def heartbeat_in_reply(self) -> None:
        pending: Deferred[list[bytes]] = Deferred()
        port, services = self.serve(MonitorTarget.FD, False, status=lambda c, l: pending)
        mon = self.client(MonitorTarget.FD, port, False, Clock())
        poll = ensureDeferred(mon.poll())
        for _ in range(100):
            if services and services[0].commands:
                break
            await deferLater(0.01)
        (service,) = services
        service.heartbeat()
        service.heartbeat()
        pending.callback(FD_LINES)
        lines = await poll
        self.assertEqual(lines[1:], [line.decode() for line in FD_LINES])
        for _ in range(50):
            if service.hb_responses == 2:
                break
            await deferLater(0.01)
        self.assertEqual(service.hb_responses, 2)
        self.assertEqual(mon.heartbeats_answered, 2)

    def test_heartbeats_inside_a_reply_are_answered(self) -> Deferred[None]:
        """A ``BNET_HEARTBEAT`` that arrives while the monitor waits for the status lines is
        answered with ``BNET_HB_RESPONSE`` and does not end the reply."""
        return ensureDeferred(self.heartbeat_in_reply())

    async def busy_tick(self) -> None:
        pending: Deferred[list[bytes]] = Deferred()
        replies: list[Any] = [pending]
        port, services = self.serve(MonitorTarget.FD, False,
                                    status=lambda c, l: replies.pop() if replies else FD_LINES)
        clock = Clock()
        mon = self.client(MonitorTarget.FD, port, False, clock, interval=10.0)
        mon.start(poll_now=True)
        for _ in range(100):
            if services and services[0].commands:
                break
            await deferLater(0.01)
        clock.advance(10)  # a tick while the first poll still waits for its reply
        clock.advance(10)
        self.assertEqual(mon.skipped, 2)
        self.assertEqual(services[0].commands, [b"status"])
        pending.callback(FD_LINES)
        for _ in range(100):
            if mon.polls == 1:
                break
            await deferLater(0.01)
        self.assertEqual(mon.polls, 1)
        clock.advance(10)  # the next tick polls again
        for _ in range(100):
            if mon.polls == 2:
                break
            await deferLater(0.01)
        self.assertEqual(services[0].commands, [b"status", b"status"])

    def test_a_tick_during_a_running_poll_is_skipped(self) -> Deferred[None]:
        """While a poll waits for its reply, the refresh ticks that come are dropped (the tray's
        ``isRefreshing``); the first tick after the reply polls again."""
        return ensureDeferred(self.busy_tick())

    async def refused(self, target: MonitorTarget, line: bytes, expected: list[Message | SignalFrame],
                      closes: bool) -> None:
        port, services = self.serve(target, False)
        make = monitor_connection(target, monitor=MONITOR, password=PASSWORD, clock=R.seconds)
        channel = await connect(R, f"tcp:host=127.0.0.1:port={port}", make)
        channel.send(line)
        got = []
        for _ in expected:
            got.append(await channel.next_frame())
        self.assertEqual(got, expected)
        if closes:
            await channel.protocol.when_closed()
        else:
            channel.send(b"status dir")
            frame = await channel.next_frame()
            self.assertEqual(frame, Message(FD_LINES[0] + b"\n"))
            channel.close()
            await channel.protocol.when_closed()

    def test_an_fd_refuses_a_monitor_with_2997(self) -> Deferred[None]:
        """Our FD answers a monitor's ``estimate`` with exactly ``2997 Invalid command for a Director
        with Monitor directive enabled.\\n``, ``BNET_EOD``, ``BNET_TERMINATE``, and closes."""
        return ensureDeferred(self.refused(MonitorTarget.FD, b"estimate listing=0\n",
                                           [Message(FD_2997), SignalFrame(EOD), SignalFrame(TERMINATE)], True))

    def test_an_sd_refuses_a_monitor_with_3997(self) -> Deferred[None]:
        """Our SD answers ``mount`` with ``3997 ...``, ``BNET_EOD``, ``3900 Invalid command: mount``,
        ``BNET_TERMINATE``, and closes."""
        return ensureDeferred(self.refused(MonitorTarget.SD, b"mount",
                                           [Message(SD_3997), SignalFrame(EOD),
                                            Message(b"3900 Invalid command: mount\n"), SignalFrame(TERMINATE)],
                                           True))

    def test_a_director_refuses_a_monitor_and_goes_on(self) -> Deferred[None]:
        """Our Director answers a monitor console's ``delete volume=x`` with ``delete: is an invalid
        command.\\n`` and ``BNET_EOD``; the next ``status dir`` still runs."""
        return ensureDeferred(self.refused(MonitorTarget.DIRECTOR, b"delete volume=x",
                                           [Message(b"delete: is an invalid command.\n"), SignalFrame(EOD)],
                                           False))


def deferLater(seconds: float) -> Deferred[None]:
    from twisted.internet.task import deferLater as later

    return later(R, seconds, lambda: None)
