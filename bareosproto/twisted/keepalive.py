"""Heartbeats, dead-peer timers and TCP keepalive for open channels.

* :func:`set_tcp_keepalive`: ``SO_KEEPALIVE`` and, for a non-zero interval,
  ``TCP_KEEPIDLE`` and ``TCP_KEEPINTVL`` both set to it, as
  ``BareosSocketTCP::SetKeepalive()`` does (PROTOCOL.md 9.2).  Only for a
  real TCP socket (``transport.getHandle()``); any other transport is left
  alone and the call returns ``False``.
* :class:`HeartbeatSender`: ``BNET_HEARTBEAT`` every period on a channel
  where Bareos sends one (:data:`bareosproto.heartbeat.HEARTBEAT_RULES`:
  FD to Director during a job).  Never use it on an idle client-initiated
  connection: the Director drops a waiting connection that sends a signal.
* :class:`HeartbeatAnswerer` and :func:`handle_heartbeat`: skip heartbeats
  like the daemons, or answer ``BNET_HB_RESPONSE`` like the tray monitor.
* :class:`IdleWatchdog`: the dead-peer timer.  Nothing received for
  ``timeout`` seconds and the connection is aborted (not closed: a peer that
  stopped reading would hold a graceful close forever).

Every timer runs on the injected ``IReactorTime`` (``task.Clock`` in tests).
Activity is read from ``BareosProtocol.last_received``, so receiving data
costs no timer reset; the watchdog re-arms itself lazily.
"""

from __future__ import annotations

import socket
from typing import Any, Callable

from twisted.logger import Logger

from ..errors import LocalProtocolError
from ..events import Message, SignalFrame
from ..heartbeat import (
    HeartbeatRule,
    IdleTimer,
    Party,
    heartbeat_period,
    heartbeat_reply,
)
from ..signals import Signal
from ._types import DelayedCall, ReactorTime
from .protocol import BareosProtocol, Channel

__all__ = [
    "set_tcp_keepalive",
    "HeartbeatSender",
    "HeartbeatAnswerer",
    "handle_heartbeat",
    "IdleWatchdog",
]

log = Logger()


def set_tcp_keepalive(transport: Any, interval: float | None) -> bool:
    """Turn on TCP keepalive on a transport's socket, with ``interval`` as idle time and probe interval.

    ``interval`` ``None`` or 0 only sets ``SO_KEEPALIVE`` (system timings,
    as Bareos does for accepted sockets).  Returns ``True`` if the options
    were set; ``False`` (silently) if the transport has no TCP socket
    (``StringTransport``, a TLS wrapper, a UNIX socket) or the system refused.
    """
    get_handle = getattr(transport, "getHandle", None)
    if get_handle is None:
        return False
    try:
        sock = get_handle()
    except Exception:
        return False
    if not isinstance(sock, socket.socket):
        return False
    if sock.family not in (socket.AF_INET, socket.AF_INET6) or sock.type != socket.SOCK_STREAM:
        return False
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        if interval:
            seconds = max(1, int(interval))
            idle = getattr(socket, "TCP_KEEPIDLE", None)
            if idle is None:  # macOS names it TCP_KEEPALIVE
                idle = getattr(socket, "TCP_KEEPALIVE", None)
            if idle is not None:
                sock.setsockopt(socket.IPPROTO_TCP, idle, seconds)
            intvl = getattr(socket, "TCP_KEEPINTVL", None)
            if intvl is not None:
                sock.setsockopt(socket.IPPROTO_TCP, intvl, seconds)
    except OSError:
        return False
    return True


class HeartbeatSender:
    """Sends ``BNET_HEARTBEAT`` on ``channel`` every ``period`` seconds until stopped or closed.

    Build it from a ``HeartbeatInterval`` with :meth:`for_rule` to get Bareos'
    real spacing (the FD's backup heartbeat is checked in 5 s slices).  The
    first heartbeat goes out after one period, or at once if ``immediate``.
    """

    def __init__(self, channel: Channel, period: float, reactor: ReactorTime, *, immediate: bool = False) -> None:
        if period <= 0:
            raise ValueError("a heartbeat period must be positive")
        self.channel = channel
        self.period = float(period)
        self.reactor = reactor
        self.immediate = immediate
        #: heartbeats written so far
        self.sent = 0
        self._call: DelayedCall | None = None
        self._stopped = False
        channel.protocol.when_closed().addCallback(lambda _: self.stop())

    @classmethod
    def for_rule(cls, channel: Channel, rule: HeartbeatRule, interval: float,
                 reactor: ReactorTime) -> HeartbeatSender | None:
        """A sender with the spacing of ``rule`` for ``interval``; ``None`` if Bareos would send none."""
        period = heartbeat_period(interval, rule.poll_slice)
        if period is None:
            return None
        return cls(channel, period, reactor, immediate=rule.immediate)

    @property
    def running(self) -> bool:
        return self._call is not None and self._call.active()

    def start(self) -> HeartbeatSender:
        if self._stopped:
            raise LocalProtocolError("a stopped heartbeat sender cannot start again")
        if self._call is None:
            if self.immediate:
                self._beat()
            else:
                self._call = self.reactor.callLater(self.period, self._beat)
        return self

    def stop(self) -> None:
        self._stopped = True
        call, self._call = self._call, None
        if call is not None and call.active():
            call.cancel()

    def _beat(self) -> None:
        self._call = None
        if self._stopped:
            return
        try:
            self.channel.send_signal(Signal.BNET_HEARTBEAT)
        except LocalProtocolError:  # the connection is closing
            self.stop()
            return
        self.sent += 1
        self._call = self.reactor.callLater(self.period, self._beat)


def handle_heartbeat(channel: Channel, frame: Message | SignalFrame, party: Party) -> bool:
    """For reader loops: ``True`` if ``frame`` is a heartbeat signal (skip it).

    A ``BNET_HEARTBEAT`` is answered with ``BNET_HB_RESPONSE`` if ``party``
    answers (the tray monitor); daemons stay silent.
    """
    if not isinstance(frame, SignalFrame):
        return False
    if frame.signal not in (Signal.BNET_HEARTBEAT, Signal.BNET_HB_RESPONSE):
        return False
    reply = heartbeat_reply(party, frame)
    if reply is not None:
        try:
            channel.send_signal(reply)
        except LocalProtocolError:
            pass
    return True


class HeartbeatAnswerer:
    """Takes heartbeats off a channel while nobody is reading, as ``party`` does.

    Installs itself as ``channel.on_unread`` (keeping any previous hook for
    the other frames).  Frames that go straight to a waiting reader do not
    pass here; reader loops use :func:`handle_heartbeat`.
    """

    def __init__(self, channel: Channel, party: Party) -> None:
        self.channel = channel
        self.party = party
        self.seen = 0
        self._next = channel.on_unread
        channel.on_unread = self

    def __call__(self, frame: Message | SignalFrame) -> bool:
        if handle_heartbeat(self.channel, frame, self.party):
            self.seen += 1
            return True
        return self._next(frame) if self._next is not None else False


class IdleWatchdog:
    """Aborts a connection from which nothing arrived for ``timeout`` seconds.

    A live FD sends heartbeats during a long job (or data), so silence longer
    than the timeout means a dead or half-open peer.  ``on_timeout()`` is
    called before the abort; :attr:`expired` tells afterwards.  One timer per
    watchdog; receiving data does not touch it (it looks at
    ``protocol.last_received`` when it fires and re-arms for the rest).
    """

    def __init__(
        self,
        target: Channel | BareosProtocol,
        timeout: float,
        reactor: ReactorTime,
        on_timeout: Callable[[], object] | None = None,
    ) -> None:
        self.protocol = target.protocol if isinstance(target, Channel) else target
        self.reactor = reactor
        self.on_timeout = on_timeout
        self.expired = False
        self._timer = IdleTimer(timeout, reactor.seconds())
        self._call: DelayedCall | None = None
        self._stopped = False
        self.protocol.when_closed().addCallback(lambda _: self.stop())

    @property
    def timeout(self) -> float:
        return self._timer.timeout

    def start(self) -> IdleWatchdog:
        if self._call is None and not self._stopped:
            self._timer.touch(self.reactor.seconds())
            self._call = self.reactor.callLater(self._timer.timeout, self._check)
        return self

    def stop(self) -> None:
        self._stopped = True
        call, self._call = self._call, None
        if call is not None and call.active():
            call.cancel()

    def _check(self) -> None:
        self._call = None
        if self._stopped:
            return
        last = self.protocol.last_received
        if last is not None:
            self._timer.touch(last)
        now = self.reactor.seconds()
        left = self._timer.remaining(now)
        if left > 0:
            self._call = self.reactor.callLater(left, self._check)
            return
        self.expired = True
        self._stopped = True
        log.info("bareosproto: nothing received for {timeout} s, dropping {proto!r}",
                 timeout=self._timer.timeout, proto=self.protocol)
        if self.on_timeout is not None:
            self.on_timeout()
        self.protocol.abort()
