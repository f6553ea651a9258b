"""The tray monitor on Twisted: polling a Director, FD or SD, and serving a monitor.

* :class:`MonitorClient` watches one daemon as the Bareos tray monitor does
  (connections 9-11): it connects when it first needs to (and again after
  the connection was lost), sends the status command of
  :data:`~bareosproto.monitor.STATUS_COMMAND`, reads up to ``BNET_EOD``,
  answers every ``BNET_HEARTBEAT`` with ``BNET_HB_RESPONSE`` (also while it
  idles between polls), and polls again on the ticks of a
  :class:`~bareosproto.monitor.PollSchedule` (interval configurable; a tick
  during a running poll is skipped).  :meth:`MonitorClient.stop` sends
  ``quit`` and ``BNET_TERMINATE`` and closes.
* :class:`MonitorService` is the daemon's side: it answers the status
  commands with the lines a callback gives, and refuses everything else
  with the exact lines of :mod:`bareosproto.monitor` (``2997``/``3997`` and
  ``BNET_TERMINATE`` from an FD/SD, ``...: is an invalid command.`` from a
  Director).  :func:`monitor_server_factory` accepts monitors.

Timers use the injected ``clock`` (``task.Clock`` in tests); the network
uses ``reactor``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.logger import Logger
from twisted.python.failure import Failure

from ..connection import ClientConnection, ConnectionType, Credentials, ServerConfig
from ..errors import LocalProtocolError
from ..events import Message, SignalFrame
from ..keys import Secret, password_key
from ..monitor import (
    QUIT,
    STATUS_COMMAND,
    MonitorTarget,
    PollSchedule,
    StatusReader,
    Verdict,
    director_monitor_verdict,
    fd_monitor_verdict,
    sd_monitor_verdict,
    status_frames,
)
from ..names import ResourceType
from ..signals import Signal
from ..tls_policy import TlsPolicy
from ..versions import BAREOS_26, BareosVersion
from ._types import DelayedCall, ReactorTime
from .factory import BareosServerFactory, connect
from .protocol import HANDSHAKE_TIMEOUT, Channel, ChannelClosed

__all__ = [
    "MonitorClient",
    "MonitorService",
    "monitor_connection",
    "monitor_server_factory",
    "StatusProvider",
]

_CONN_TYPE = {
    MonitorTarget.DIRECTOR: ConnectionType.MONITOR_DIRECTOR,
    MonitorTarget.FD: ConnectionType.MONITOR_FD,
    MonitorTarget.SD: ConnectionType.MONITOR_SD,
}


def monitor_connection(target: MonitorTarget, *, monitor: str, password: str | Secret,
                       clock: Callable[[], float], tls: bool = False,
                       tls_policy: TlsPolicy = TlsPolicy.NONE,
                       release: BareosVersion = BAREOS_26) -> Callable[[], ClientConnection]:
    """How the tray connects to ``target`` as monitor ``monitor``.

    ``password`` is the tray's ``Monitor``/``Client``/``Storage`` password
    for that daemon (clear text, or the key as a Secret); with ``tls`` the
    identity is ``R_CONSOLE\\x1e<monitor>`` (Director) or
    ``R_DIRECTOR\\x1e<monitor>`` (FD, SD).
    """
    key = password if isinstance(password, Secret) else password_key(password)

    def make() -> ClientConnection:
        return ClientConnection(_CONN_TYPE[target], name=monitor, key=key, clock=clock, tls=tls,
                                tls_policy=tls_policy, release=release)

    return make


class MonitorClient:
    """Poll one daemon's status as the tray monitor does.

    ``on_status(lines)`` gets every complete reply; :meth:`poll` polls now.
    :meth:`start` starts the timer (``interval`` seconds, 1..600 unless
    ``check_interval=False``); ``poll_now=True`` also polls at once, as the
    tray does when its window opens.
    """

    log = Logger()

    def __init__(self, reactor: Any, endpoint: str | IStreamClientEndpoint,
                 make_connection: Callable[[], ClientConnection], target: MonitorTarget, *,
                 interval: float = 60.0, clock: ReactorTime | None = None,
                 on_status: Callable[[list[str]], object] | None = None,
                 check_interval: bool = True, timeout: float | None = HANDSHAKE_TIMEOUT) -> None:
        self.reactor = reactor
        self.clock: ReactorTime = clock if clock is not None else reactor
        self.endpoint = endpoint
        self.make_connection = make_connection
        self.target = target
        self.interval = interval
        self.check_interval = check_interval
        self.on_status = on_status
        self.timeout = timeout
        self.channel: Channel | None = None
        self.polls = 0  #: replies received
        self.skipped = 0  #: ticks skipped because a poll was running
        self.heartbeats_answered = 0
        self._polling = False
        self._timer: DelayedCall | None = None
        self._schedule: PollSchedule | None = None
        self._connecting: Deferred[Channel] | None = None

    # -- connection ----------------------------------------------------------

    async def _connect(self) -> Channel:
        channel = self.channel
        if channel is not None and channel.protocol.transport is not None and not self._lost(channel):
            return channel
        channel = await connect(self.reactor, self.endpoint, self.make_connection, self.timeout)
        channel.on_unread = self._idle_frame
        channel.protocol.when_closed().addBoth(self._closed, channel)
        self.channel = channel
        return channel

    @staticmethod
    def _lost(channel: Channel) -> bool:
        return channel.protocol.when_closed().called

    def _closed(self, _: object, channel: Channel) -> None:
        if self.channel is channel:
            self.channel = None

    def _idle_frame(self, frame: Message | SignalFrame) -> bool:
        """Between polls: answer heartbeats at once, drop them; keep anything else."""
        if isinstance(frame, SignalFrame) and frame.signal == Signal.BNET_HEARTBEAT:
            self._answer_heartbeat()
            return True
        return False

    def _answer_heartbeat(self) -> None:
        if self.channel is not None:
            self.channel.send_signal(Signal.BNET_HB_RESPONSE)
            self.heartbeats_answered += 1

    # -- polling -------------------------------------------------------------

    async def poll(self) -> list[str]:
        """Send the status command and collect the reply (up to ``BNET_EOD``)."""
        self._polling = True
        try:
            channel = await self._connect()
            channel.send(STATUS_COMMAND[self.target])
            reader = StatusReader()
            while not reader.done:
                frame = await channel.next_frame()
                item: bytes | int = frame.payload if isinstance(frame, Message) else int(frame.signal)
                for sig in reader.feed(item):
                    channel.send_signal(sig)
                    self.heartbeats_answered += 1
        finally:
            self._polling = False
        self.polls += 1
        if self.on_status is not None:
            self.on_status(reader.lines)
        return reader.lines

    def start(self, poll_now: bool = False) -> None:
        """Start the refresh timer."""
        self._schedule = PollSchedule(self.interval, self.clock.seconds(), check=self.check_interval)
        if poll_now:
            self._run_poll()
        self._arm()

    def _arm(self) -> None:
        assert self._schedule is not None
        now = self.clock.seconds()
        self._timer = self.clock.callLater(self._schedule.next_tick(now) - now, self._tick)

    def _tick(self) -> None:
        self._timer = None
        if self._polling:
            self.skipped += 1  # isRefreshing: this tick is dropped
        else:
            self._run_poll()
        self._arm()

    def _run_poll(self) -> None:
        def failed(failure: Failure) -> None:
            self.log.failure("bareosproto: monitor poll of {target} failed", failure,
                             target=self.target.value)

        ensureDeferred(self.poll()).addErrback(failed)

    def stop(self) -> Deferred[None]:
        """Stop polling; send ``quit`` and ``BNET_TERMINATE``, then close."""
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        channel, self.channel = self.channel, None
        if channel is None or self._lost(channel):
            done: Deferred[None] = Deferred()
            done.callback(None)
            return done
        channel.send(QUIT)
        channel.send_signal(Signal.BNET_TERMINATE)
        channel.close()
        return channel.protocol.when_closed()


#: The status text for a command: lines (bytes, without NUL) or a Deferred of them.
StatusProvider = Callable[[str, bytes], "Iterable[bytes] | Deferred[Iterable[bytes]]"]


class MonitorService:
    """A daemon serving one monitor on an authenticated channel.

    ``status(command, line)`` returns the lines of the reply to an allowed
    command (``command`` is the table entry, e.g. ``status``).  FD and SD
    replies are framed as the FD does (a first ``\\n`` frame, then lines
    ending in a NUL); a Director's without NUL.  Refused commands get the
    daemon's exact lines; an FD/SD then closes, a Director goes on.
    ``allowed`` is the Director console's Command ACL.
    """

    log = Logger()

    def __init__(self, channel: Channel, target: MonitorTarget, status: StatusProvider, *,
                 allowed: tuple[str, ...] = ("status", ".status")) -> None:
        self.channel = channel
        self.target = target
        self.status = status
        self.allowed = allowed
        self.commands: list[bytes] = []  #: every command line received
        self.hb_responses = 0  #: ``BNET_HB_RESPONSE`` frames received
        self.done: Deferred[None] = ensureDeferred(self._serve())

    def heartbeat(self) -> None:
        """Send a ``BNET_HEARTBEAT`` (the monitor answers with ``BNET_HB_RESPONSE``)."""
        self.channel.send_signal(Signal.BNET_HEARTBEAT)

    def _verdict(self, line: bytes) -> Verdict:
        if self.target is MonitorTarget.FD:
            return fd_monitor_verdict(line)
        if self.target is MonitorTarget.SD:
            return sd_monitor_verdict(line)
        return director_monitor_verdict(line, self.allowed)

    async def _serve(self) -> None:
        channel = self.channel
        try:
            while True:
                frame = await channel.next_frame()
                if isinstance(frame, SignalFrame):
                    if frame.signal == Signal.BNET_HB_RESPONSE:
                        self.hb_responses += 1
                    elif frame.signal == Signal.BNET_TERMINATE:
                        channel.close()
                        return
                    continue  # heartbeats and other signals are skipped
                line = frame.payload
                self.commands.append(line)
                verdict = self._verdict(line)
                if not verdict.allowed:
                    for out in verdict.frames:
                        if isinstance(out, int):
                            channel.send_signal(out)
                        else:
                            channel.send(out)
                    if verdict.close:
                        channel.close()
                        return
                    continue
                if verdict.command in ("quit", "exit"):  # a Director closes after quit
                    channel.close()
                    return
                assert verdict.command is not None
                try:
                    result = self.status(verdict.command, line)
                    lines = list(await result) if isinstance(result, Deferred) else list(result)
                except Exception:
                    self.log.failure("bareosproto: the status of {command} failed", command=verdict.command)
                    channel.close()
                    return
                director = self.target is MonitorTarget.DIRECTOR
                for payload in status_frames(lines, nul=not director, leading_blank=not director):
                    channel.send(payload)
                channel.send_signal(Signal.BNET_EOD)
        except (ChannelClosed, LocalProtocolError):  # the peer went away (or closed TLS) meanwhile
            return


PeerPassword = str | Secret | tuple[str | Secret, TlsPolicy] | Credentials


def _credentials(value: PeerPassword) -> Credentials:
    if isinstance(value, Credentials):
        return value
    if isinstance(value, tuple):
        secret, policy = value
        return Credentials(secret if isinstance(secret, Secret) else password_key(secret), policy)
    return Credentials(value if isinstance(value, Secret) else password_key(value), TlsPolicy.NONE)


_PEER_TYPE = {MonitorTarget.DIRECTOR: ResourceType.R_CONSOLE, MonitorTarget.FD: ResourceType.R_DIRECTOR,
              MonitorTarget.SD: ResourceType.R_DIRECTOR}


def monitor_server_factory(
    reactor: ReactorTime,
    *,
    target: MonitorTarget,
    name: str,
    monitors: Mapping[str, PeerPassword],
    status: StatusProvider,
    tls: bool = True,
    allowed: tuple[str, ...] = ("status", ".status"),
    on_service: Callable[[MonitorService], object] | None = None,
    release: BareosVersion = BAREOS_26,
    handshake_timeout: float | None = HANDSHAKE_TIMEOUT,
) -> BareosServerFactory:
    """Accept monitors as the daemon ``target`` named ``name``.

    ``monitors`` maps each monitor's name to its password (and our TLS
    policy towards it): on a Director the ``Console`` named like the
    monitor, on an FD/SD the ``Director`` resource with ``Monitor = yes``.
    ``on_service`` gets every :class:`MonitorService`.
    """
    peer_type = _PEER_TYPE[target]

    def lookup(rtype: ResourceType, peer: str) -> Credentials | None:
        if rtype is not peer_type or peer not in monitors:
            return None
        return _credentials(monitors[peer])

    config = ServerConfig(daemon=target, name=name, lookup=lookup, tls=tls, release=release)

    def on_channel(channel: Channel) -> None:
        service = MonitorService(channel, target, status, allowed=allowed)
        if on_service is not None:
            on_service(service)

    return BareosServerFactory(config, reactor, on_channel, handshake_timeout)
