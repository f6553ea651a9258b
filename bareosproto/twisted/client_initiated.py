"""The File Daemon's side of client-initiated connections (PROTOCOL.md 7.4, 8.1).

:class:`ClientInitiatedConnector` keeps exactly one idle, authenticated
connection open to one Director.  When the Director takes it -- the first
frame arrives on it -- the connection is handed to ``on_job(channel)`` (the
first command is the channel's first frame) and the connector opens the next
idle connection at once, while the taken one serves the job.  Nothing is ever
sent on the idle connection: the Director drops a waiting connection that
carries a signal (8.2).

Reconnecting runs on :class:`twisted.application.internet.ClientService`.
Each idle slot is one ``ClientService``; when its connection is taken the
service is *retired* (it keeps the job's connection and is stopped when that
connection ends, so it never reconnects) and a new service opens the next
slot.  The wait before a new attempt is

* 0 after an idle connection was taken or lost (the Director closed it or
  restarted): upstream reconnects at once;
* after failed attempts in a row (refused, unreachable, handshake refused):
  the retry policy, by default :class:`~bareosproto.heartbeat.Backoff`
  (exponential with jitter, ``first_retry`` .. ``max_retry``; upstream waits a
  fixed 60 s), its jitter drawn from the ``random`` source you inject.

``stopService()`` stops retrying and closes the idle connection and the
connections of running jobs; its Deferred fires when all are closed.
"""

from __future__ import annotations

import inspect
import random as _random
from typing import Any, Callable

from twisted.application.internet import ClientService
from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.internet.interfaces import IAddress, IStreamClientEndpoint
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.python.failure import Failure

from ..connection import ClientConnection, ConnectionType
from ..events import Message, SignalFrame
from ..heartbeat import Backoff
from ..keys import Secret
from ..tls_policy import TlsPolicy
from ..versions import BAREOS_26, BareosVersion
from ._types import ReactorTime
from .factory import client_endpoint
from .keepalive import set_tcp_keepalive
from .protocol import HANDSHAKE_TIMEOUT, BareosProtocol, Channel

__all__ = ["ClientInitiatedConnector", "client_initiated_connection"]

log = Logger()


def client_initiated_connection(
    name: str,
    key: Secret,
    reactor: ReactorTime,
    *,
    tls: bool = False,
    tls_policy: TlsPolicy = TlsPolicy.NONE,
    release: BareosVersion = BAREOS_26,
) -> Callable[[], ClientConnection]:
    """``make_connection`` for a client-initiated FD ``name`` whose Director resource has ``key``.

    ``tls=True``: immediate TLS-PSK (identity ``R_CLIENT\\x1e<name>``), for a
    Director resource with ``TlsEnable``; ``tls_policy`` the ``ssl=`` of our
    challenge.
    """

    def make() -> ClientConnection:
        return ClientConnection(
            ConnectionType.CLIENT_INITIATED,
            name=name,
            key=key,
            clock=reactor.seconds,
            tls=tls,
            tls_policy=tls_policy,
            release=release,
        )

    return make


class _SlotProtocol(BareosProtocol):
    """One client-initiated connection: idle until the Director speaks, then a job's."""

    def __init__(self, connector: ClientInitiatedConnector, slot: _Slot) -> None:
        super().__init__(connector.make_connection, connector.reactor, connector.handshake_timeout,
                         self._authenticated)
        self.connector = connector
        self.slot = slot
        self.taken = False

    def connectionMade(self) -> None:
        super().connectionMade()
        if self.connector.keepalive:
            set_tcp_keepalive(self.transport, self.connector.heartbeat_interval)

    def _authenticated(self, channel: Channel) -> None:
        self.connector._idle_ready(self)

    def _first_frame(self, frame: Message | SignalFrame) -> bool:
        self.channel.on_unread = None
        self.connector._taken(self)
        return False  # stays queued: the job reads it as its first frame

    def connectionLost(self, reason: Failure = Failure(ConnectionError())) -> None:
        try:
            super().connectionLost(reason)
        finally:  # before ClientService hears of it (its proxy calls us first)
            self.connector._lost(self)


class _Slot(Factory):
    noisy = False
    """The protocol factory of one ClientService: builds at most one live connection at a time."""

    def __init__(self, connector: ClientInitiatedConnector) -> None:
        self.connector = connector
        self.service: ClientService | None = None

    def buildProtocol(self, addr: IAddress | None) -> _SlotProtocol:
        return _SlotProtocol(self.connector, self)


class ClientInitiatedConnector(Service):
    """Keep one idle authenticated connection to a Director; hand each taken one to ``on_job``.

    ``endpoint``: the Director (an endpoint or a string such as
    ``"tcp:host=127.0.0.1:port=9101"``); ``make_connection`` builds the core
    :class:`~bareosproto.connection.ClientConnection` of type
    ``CLIENT_INITIATED`` (see :func:`client_initiated_connection`);
    ``on_job(channel)`` gets every connection the Director took -- it may
    return a Deferred or a coroutine, and should close the channel when the
    job is done (Bareos' FD sends ``BNET_TERMINATE`` and closes).

    Reconnect delays: ``retry_policy(failures) -> seconds`` if given, else
    ``Backoff(random, first_retry, max_retry, factor, jitter)``; ``random``
    defaults to a private ``random.Random()``.  ``heartbeat_interval`` is the
    FD's ``HeartbeatInterval``: with ``keepalive`` (default) it becomes the
    TCP keepalive idle time and probe interval of each connection, as
    upstream does; no BNET heartbeat is ever sent by the connector.
    """

    def __init__(
        self,
        reactor: Any,
        endpoint: str | IStreamClientEndpoint,
        make_connection: Callable[[], ClientConnection],
        on_job: Callable[[Channel], object],
        *,
        retry_policy: Callable[[int], float] | None = None,
        random: Callable[[], float] | None = None,
        first_retry: float = 1.0,
        max_retry: float = 60.0,
        factor: float = 2.0,
        jitter: float = 0.5,
        heartbeat_interval: float | None = None,
        keepalive: bool = True,
        handshake_timeout: float | None = HANDSHAKE_TIMEOUT,
    ) -> None:
        self.reactor = reactor
        self.endpoint = client_endpoint(reactor, endpoint)
        self.make_connection = make_connection
        self.on_job = on_job
        if retry_policy is None:
            source = random if random is not None else _random.Random().random
            retry_policy = Backoff(source, first_retry, max_retry, factor, jitter)
        self.retry_policy = retry_policy
        self.heartbeat_interval = heartbeat_interval
        self.keepalive = keepalive
        self.handshake_timeout = handshake_timeout
        #: the idle authenticated connection, if there is one now
        self.idle: Channel | None = None
        #: failed attempts in a row (reset by a successful handshake)
        self.failures = 0
        #: handshakes completed, connections taken by the Director
        self.connected = 0
        self.taken = 0
        self._slot: _Slot | None = None
        self._retired: set[_Slot] = set()
        self._reconnect_now = False
        self._idle_waiters: list[Deferred[Channel]] = []
        self._jobs: set[Channel] = set()

    def __repr__(self) -> str:
        return f"<ClientInitiatedConnector {self.endpoint!r} idle={self.idle is not None}>"

    # -- Service --------------------------------------------------------------------

    def startService(self) -> None:
        if self.running:
            return
        super().startService()
        self._open_slot()

    def stopService(self) -> Deferred[None]:
        """Stop connecting; close the idle connection and every job's connection."""
        super().stopService()
        slots = ([self._slot] if self._slot is not None else []) + list(self._retired)
        self._slot = None
        self._retired.clear()
        self.idle = None
        stops: list[Deferred[Any]] = []
        for slot in slots:
            if slot.service is not None:
                stops.append(slot.service.stopService())
        waiters, self._idle_waiters = self._idle_waiters, []
        for d in waiters:
            d.cancel()
        if not stops:
            return succeed(None)
        done: Deferred[None] = DeferredList(stops, consumeErrors=True).addCallback(lambda _: None)
        return done

    # -- API -----------------------------------------------------------------------------

    def when_idle(self) -> Deferred[Channel]:
        """The idle connection, now or as soon as the next one is authenticated."""
        if self.idle is not None:
            return succeed(self.idle)
        d: Deferred[Channel] = Deferred(lambda d: self._idle_waiters.remove(d))
        self._idle_waiters.append(d)
        return d

    @property
    def jobs(self) -> int:
        """Taken connections still open."""
        return len(self._jobs)

    # -- slots ----------------------------------------------------------------------------

    def _open_slot(self) -> None:
        slot = _Slot(self)
        slot.service = ClientService(self.endpoint, slot, retryPolicy=self._retry_delay, clock=self.reactor)
        self._slot = slot
        slot.service.startService()

    def _retry_delay(self, attempt: int) -> float:
        # ClientService counts a lost connection as attempt 1; we keep our own count.
        if self._reconnect_now:
            self._reconnect_now = False
            return 0.0
        self.failures += 1
        return self.retry_policy(self.failures)

    # -- events from the protocols ----------------------------------------------------------

    def _idle_ready(self, proto: _SlotProtocol) -> None:
        if proto.slot is not self._slot:  # a stopped connector's late handshake
            proto.close()
            return
        self.failures = 0
        self.connected += 1
        self.idle = proto.channel
        proto.channel.on_unread = proto._first_frame
        waiters, self._idle_waiters = self._idle_waiters, []
        for d in waiters:
            d.callback(proto.channel)

    def _taken(self, proto: _SlotProtocol) -> None:
        proto.taken = True
        self.taken += 1
        if self.idle is proto.channel:
            self.idle = None
        slot = proto.slot
        self._jobs.add(proto.channel)
        if slot is self._slot:
            self._retired.add(slot)
            self._slot = None
            if self.running:
                self._open_slot()  # the next idle connection, at once
        # hand over on the next turn, once the first frame is queued on the channel
        self.reactor.callLater(0, self._hand_over, proto.channel)

    def _hand_over(self, channel: Channel) -> None:
        if not self.running:
            return  # stopped meanwhile: stopService() closed the connection
        try:
            result = self.on_job(channel)
        except Exception:
            log.failure("bareosproto: on_job failed")
            channel.close()
            return
        d: Deferred[Any] | None = None
        if isinstance(result, Deferred):
            d = result
        elif inspect.iscoroutine(result):
            d = Deferred.fromCoroutine(result)
        if d is not None:
            d.addErrback(self._job_failed, channel)

    def _job_failed(self, failure: Failure, channel: Channel) -> None:
        log.failure("bareosproto: job on a client-initiated connection failed", failure)
        channel.close()

    def _lost(self, proto: _SlotProtocol) -> None:
        slot = proto.slot
        if proto.taken:
            self._jobs.discard(proto.channel)
            if slot in self._retired:
                # stop the retired service before it hears of the loss, so it does not reconnect
                self._retired.discard(slot)
                if slot.service is not None:
                    slot.service.stopService()
            return
        if self.idle is proto.channel:
            self.idle = None
        if proto.handshake is not None and slot is self._slot:
            self._reconnect_now = True  # the idle connection went away: reconnect at once

