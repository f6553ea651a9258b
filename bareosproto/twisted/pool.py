"""The Director's pool of waiting client-initiated connections, and the per-job connect strategy.

:class:`WaitingConnectionPool` keeps the authenticated connections that File
Daemons opened to us (PROTOCOL.md 7.4, 8.2), keyed by client name:

* :meth:`~WaitingConnectionPool.add` an authenticated channel: a
  :class:`DirectorPoolFactory` does it for every client-initiated FD (and
  holds a waiting connection in about 4.5 KB, see ``bench/pool.py``), or any
  ``BareosServerFactory(on_channel=pool.offer)``;
* :meth:`~WaitingConnectionPool.take_now` the newest one of a client, O(1);
* :meth:`~WaitingConnectionPool.take` with a timeout: a Deferred that fires
  when one arrives, or fails with :class:`NoWaitingConnection` (timer on the
  injected reactor);
* :meth:`~WaitingConnectionPool.info` and the ``status dir`` section
  (:meth:`~WaitingConnectionPool.status_frames`, byte for byte as Bareos
  prints it, and :meth:`~WaitingConnectionPool.status_json`).

A waiting connection leaves the pool the moment it dies: on connection loss
(EOF, error, a TCP keepalive timeout, an :class:`IdleWatchdog
<bareosproto.twisted.keepalive.IdleWatchdog>`), and when the FD sends a
signal or a zero-length frame on it (upstream drops those; a text frame is
read and thrown away, the entry stays).  Nothing polls the sockets: removal
is pushed by the connection itself.  ``max_idle`` optionally closes entries
older than that many seconds with one timer for the whole pool (upstream has
no such limit).

:func:`connect_client` is the manual's per-job strategy: a waiting
connection, else dial the client with the connect timeout, else wait the
same timeout for the client to connect, else fail -- honouring ``Connection
From Director To Client`` and ``Connection From Client To Director``.
"""

from __future__ import annotations

import enum
import time
from collections import deque
from itertools import takewhile
from typing import Any, Callable, Iterator

import attrs
from twisted.internet.defer import Deferred, fail, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from ..connection import ConnState, ServerConfig, ServerConnection
from ..errors import LocalProtocolError, RemoteProtocolError
from ..events import Message, SignalFrame
from ..heartbeat import IdleVerdict, idle_frame_verdict
from ..hello import HelloKind
from ..status import (
    API_JSON,
    API_OFF,
    ConnectionInfo,
    ConnectTimeFormatter,
    pool_section_frames,
    STATUS_DIR_END,
    pool_section_json,
)
from ._types import DelayedCall, ReactorTime
from .factory import BareosServerFactory
from .keepalive import set_tcp_keepalive
from .protocol import HANDSHAKE_TIMEOUT, BareosProtocol, Channel

__all__ = [
    "WaitingConnectionPool",
    "PoolEntry",
    "DirectorPoolFactory",
    "NoWaitingConnection",
    "ClientUnreachable",
    "ConnectingNotAllowed",
    "Via",
    "ClientChannel",
    "connect_client",
    "local_utc_offset",
]

log = Logger()


def local_utc_offset(seconds: int) -> int:
    """The local zone's offset from UTC at ``seconds`` (what ``localtime_r()`` uses)."""
    return time.localtime(seconds).tm_gmtoff


class NoWaitingConnection(Exception):
    """No waiting connection of that client arrived in time."""

    def __init__(self, name: str, timeout: float | None) -> None:
        super().__init__(f'no waiting connection of client "{name}" within {timeout} s')
        self.name = name
        self.timeout = timeout


class PoolEntry:
    """One waiting connection: Bareos' ``connection_info`` plus the channel."""

    __slots__ = ("name", "protocol_version", "added", "channel", "pool")

    def __init__(self, name: str, protocol_version: int, added: float, channel: Channel,
                 pool: WaitingConnectionPool) -> None:
        self.name = name
        self.protocol_version = protocol_version
        #: ``reactor.seconds()`` at insertion
        self.added = added
        self.channel = channel
        self.pool: WaitingConnectionPool | None = pool

    @property
    def connect_time(self) -> int:
        """``time(nullptr)`` at insertion, as Bareos stores it."""
        return int(self.added)

    def __repr__(self) -> str:
        return f"<PoolEntry {self.name!r} v{self.protocol_version} at {self.connect_time}>"

    # the channel's on_unread hook while the entry waits
    def __call__(self, frame: Message | SignalFrame) -> bool:
        pool = self.pool
        if pool is None:
            return False
        if idle_frame_verdict(frame) is IdleVerdict.KEEP:
            return True  # read and thrown away, as check_connection() does
        pool._drop(self, f"{frame!r} on a waiting connection")
        return True

    def _closed(self, _: object) -> None:
        pool = self.pool
        if pool is not None:
            pool._forget(self)
            pool.lost += 1


class _Waiter:
    __slots__ = ("name", "deferred", "call", "timeout")

    def __init__(self, name: str, timeout: float | None) -> None:
        self.name = name
        self.timeout = timeout
        self.deferred: Deferred[Channel] = Deferred(self._cancel)
        self.call: DelayedCall | None = None

    def _cancel(self, _: Deferred[Channel]) -> None:
        self._stop_timer()

    def _stop_timer(self) -> None:
        call, self.call = self.call, None
        if call is not None and call.active():
            call.cancel()

    @property
    def pending(self) -> bool:
        return not self.deferred.called


class WaitingConnectionPool:
    """Waiting client-initiated connections, newest first per client name.

    ``reactor`` provides the time (connect times, ``take`` timeouts,
    ``max_idle``); ``utc_offset`` the local zone for the ``status dir``
    table (default: this machine's, as ``bstrftime_nc()`` uses);
    ``keepalive_interval`` turns on TCP keepalive with that idle time and
    probe interval on every socket that enters the pool (``None``: leave the
    socket as accepted).  Counters: ``added``, ``taken``, ``lost`` (closed
    while waiting), ``dropped`` (closed by us: a signal on the idle
    connection, ``max_idle``, :meth:`clear`).
    """

    def __init__(
        self,
        reactor: ReactorTime,
        *,
        max_idle: float | None = None,
        keepalive_interval: float | None = None,
        utc_offset: Callable[[int], int] = local_utc_offset,
    ) -> None:
        self.reactor = reactor
        self.max_idle = max_idle
        self.keepalive_interval = keepalive_interval
        self.utc_offset = utc_offset
        self._formatter = ConnectTimeFormatter(utc_offset)
        #: every entry, oldest first (dict as an ordered set: O(1) insert and delete)
        self._all: dict[PoolEntry, None] = {}
        #: per client name: the entry itself, or (two or more) a dict of them oldest first
        self._by_name: dict[str, PoolEntry | dict[PoolEntry, None]] = {}
        self._waiters: dict[str, deque[_Waiter]] = {}
        self._expiry: DelayedCall | None = None
        self.added = 0
        self.taken = 0
        self.lost = 0
        self.dropped = 0

    # -- size -------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._all)

    def __iter__(self) -> Iterator[PoolEntry]:
        return iter(list(self._all))

    def count(self, name: str) -> int:
        """Waiting connections of one client."""
        entries = self._by_name.get(name)
        if entries is None:
            return 0
        return 1 if isinstance(entries, PoolEntry) else len(entries)

    def _entries(self, name: str) -> list[PoolEntry]:
        entries = self._by_name.get(name)
        if entries is None:
            return []
        return [entries] if isinstance(entries, PoolEntry) else list(entries)

    def names(self) -> list[str]:
        """Client names with at least one waiting connection."""
        return list(self._by_name)

    def waiting_for(self, name: str) -> int:
        """How many ``take()`` calls wait for this client."""
        return sum(1 for w in self._waiters.get(name, ()) if w.pending)

    # -- add --------------------------------------------------------------------

    def offer(self, channel: Channel) -> PoolEntry | None:
        """``on_channel`` for a Director's server factory: pool client-initiated FDs, ignore the rest."""
        handshake = channel.protocol.handshake
        if handshake is None or handshake.hello.kind is not HelloKind.CLIENT:
            return None
        return self.add(channel)

    def add(self, channel: Channel) -> PoolEntry | None:
        """Add an authenticated client-initiated connection.

        If a :meth:`take` waits for this client, the channel goes straight to
        it and ``None`` is returned; a connection that is already closed is
        not added either.
        """
        proto = channel.protocol
        handshake = proto.handshake
        if handshake is None:
            raise LocalProtocolError("only authenticated connections can be pooled")
        hello = handshake.hello
        if hello.kind is not HelloKind.CLIENT:
            raise LocalProtocolError(f"a {hello.kind.value} connection is not a client-initiated one")
        conn = proto.conn
        if conn is None or conn.state is not ConnState.OPEN:
            return None
        name = hello.name
        self.added += 1
        waiters = self._waiters.get(name)
        while waiters:
            waiter = waiters.popleft()
            if not waiters:
                del self._waiters[name]
            if waiter.pending:
                waiter._stop_timer()
                self.taken += 1
                waiter.deferred.callback(channel)
                return None
        entry = PoolEntry(name, hello.fd_protocol_version or 0, self.reactor.seconds(), channel, self)
        self._all[entry] = None
        per_name = self._by_name.get(name)
        if per_name is None:
            self._by_name[name] = entry  # the usual case: one waiting connection per client
        elif isinstance(per_name, PoolEntry):
            self._by_name[name] = {per_name: None, entry: None}
        else:
            per_name[entry] = None
        channel.on_unread = entry
        if isinstance(proto, _PoolingProtocol):
            proto.pool_entry = entry  # told directly by connectionLost
        else:
            proto.when_closed().addCallback(entry._closed)
        if self.keepalive_interval is not None:
            set_tcp_keepalive(proto.transport, self.keepalive_interval)
        if self.max_idle is not None and self._expiry is None:
            self._expiry = self.reactor.callLater(self.max_idle, self._expire)
        return entry

    # -- take -------------------------------------------------------------------

    def take_now(self, name: str) -> Channel | None:
        """The newest waiting connection of ``name``, removed from the pool; ``None`` if there is none."""
        per_name = self._by_name.get(name)
        if per_name is None:
            return None
        if isinstance(per_name, PoolEntry):
            entry = per_name
            del self._by_name[name]
        else:
            entry, _ = per_name.popitem()  # LIFO: the newest
            if len(per_name) == 1:
                (self._by_name[name],) = per_name
        del self._all[entry]
        entry.pool = None
        channel = entry.channel
        channel.on_unread = None
        # (a _PoolingProtocol keeps its pool_entry: with entry.pool None its close is a no-op)
        self.taken += 1
        return channel

    def take(self, name: str, timeout: float | None = 0.0) -> Deferred[Channel]:
        """The newest waiting connection of ``name``, or the next one to arrive within ``timeout`` s.

        ``timeout`` 0 answers at once; ``None`` waits without limit.  Fails
        with :class:`NoWaitingConnection`; cancelling the Deferred stops
        waiting.  Several waiters of one client are served in order.
        """
        channel = self.take_now(name)
        if channel is not None:
            return succeed(channel)
        if timeout is not None and timeout <= 0:
            return fail(NoWaitingConnection(name, timeout))
        waiter = _Waiter(name, timeout)
        self._waiters.setdefault(name, deque()).append(waiter)
        if timeout is not None:
            waiter.call = self.reactor.callLater(timeout, self._waiter_timed_out, waiter)
        waiter.deferred.addErrback(self._waiter_gone, waiter)
        return waiter.deferred

    def _waiter_timed_out(self, waiter: _Waiter) -> None:
        waiter.call = None
        if waiter.pending:
            waiter.deferred.errback(NoWaitingConnection(waiter.name, waiter.timeout))

    def _waiter_gone(self, failure: Failure, waiter: _Waiter) -> Failure:
        """A waiter failed (timeout or cancel): take it out of the queue."""
        queue = self._waiters.get(waiter.name)
        if queue is not None:
            try:
                queue.remove(waiter)
            except ValueError:
                pass
            if not queue:
                del self._waiters[waiter.name]
        return failure

    # -- removal ------------------------------------------------------------------

    def _forget(self, entry: PoolEntry) -> bool:
        if entry.pool is not self:
            return False
        entry.pool = None
        self._all.pop(entry, None)
        per_name = self._by_name.get(entry.name)
        if per_name is entry:
            del self._by_name[entry.name]
        elif isinstance(per_name, dict):
            per_name.pop(entry, None)
            if len(per_name) == 1:
                (self._by_name[entry.name],) = per_name
            elif not per_name:
                del self._by_name[entry.name]
        return True

    def _drop(self, entry: PoolEntry, why: str) -> None:
        """Close a waiting connection as Bareos does (plain close, no BNET_TERMINATE)."""
        if self._forget(entry):
            self.dropped += 1
            log.info("bareosproto: dropping waiting connection of {name}: {why}", name=entry.name, why=why)
            entry.channel.on_unread = None
            entry.channel.close()

    def remove(self, channel: Channel) -> bool:
        """Take a specific connection out of the pool without closing it."""
        found = [e for e in self._entries(self._name_of(channel)) if e.channel is channel]
        if not found:
            return False
        self._forget(found[0])
        channel.on_unread = None
        return True

    @staticmethod
    def _name_of(channel: Channel) -> str:
        handshake = channel.protocol.handshake
        return handshake.hello.name if handshake is not None else ""

    def clear(self) -> int:
        """Close every waiting connection (a Director shutting down); returns how many."""
        entries = list(self._all)
        for entry in entries:
            self._drop(entry, "pool cleared")
        return len(entries)

    def _expire(self) -> None:
        self._expiry = None
        if self.max_idle is None:
            return
        now = self.reactor.seconds()
        limit = now - self.max_idle
        old = list(takewhile(lambda e: e.added <= limit, self._all))
        for entry in old:
            self._drop(entry, f"waiting longer than {self.max_idle} s")
        if self._all:
            oldest = next(iter(self._all))
            self._expiry = self.reactor.callLater(max(0.0, oldest.added + self.max_idle - now), self._expire)

    def stop(self) -> None:
        """Cancel the pool's timers and fail every waiting ``take()`` (the connections stay)."""
        if self._expiry is not None and self._expiry.active():
            self._expiry.cancel()
        self._expiry = None
        waiters = [w for queue in self._waiters.values() for w in queue]
        self._waiters.clear()
        for waiter in waiters:
            if waiter.pending:
                waiter.deferred.cancel()

    # -- status ---------------------------------------------------------------------

    def info(self) -> list[ConnectionInfo]:
        """``connection_pool::info()``: name, protocol version, connect time; oldest first."""
        return [ConnectionInfo(e.name, e.protocol_version, int(e.added)) for e in self._all]

    def status_frames(self, api: int = API_OFF, *, end: bool = True) -> list[bytes]:
        """The ``status dir`` pool section as Bareos frames it, with the final ``====\\n`` if ``end``."""
        frames = pool_section_frames(self._all, api=api, formatter=self._formatter)
        if end and api != API_JSON:
            frames.append(STATUS_DIR_END)
        return frames

    def status_text(self) -> bytes:
        """The section as bconsole shows it (frames joined, without the final ``====``)."""
        return b"".join(pool_section_frames(self._all, formatter=self._formatter))

    def status_json(self) -> dict[str, list[dict[str, str | int]]]:
        """The ``client-connection`` part of ``status dir``'s JSON result (API 2)."""
        return pool_section_json(self._all, utc_offset=self.utc_offset)


# -- a Director factory that feeds the pool ------------------------------------------------


class _LeanChannel(Channel):
    """A :class:`Channel` whose two queues exist only once something is queued.

    A waiting connection never queues a frame (its frames go to the pool's
    ``on_unread`` hook) and has no reader, so it does not pay for two empty
    deques (about 1.5 KB).  Every use of the queues goes through these
    properties: assigning an empty deque forgets it, reading creates one.
    """

    __lean_frames: deque[Message | SignalFrame] | None = None
    __lean_readers: deque[Deferred[Message | SignalFrame]] | None = None

    @property
    def _frames(self) -> deque[Message | SignalFrame]:
        q = self.__lean_frames
        if q is None:
            q = self.__lean_frames = deque()
        return q

    @_frames.setter
    def _frames(self, value: deque[Message | SignalFrame]) -> None:
        self.__lean_frames = value if value else None

    @property
    def _readers(self) -> deque[Deferred[Message | SignalFrame]]:
        q = self.__lean_readers
        if q is None:
            q = self.__lean_readers = deque()
        return q

    @_readers.setter
    def _readers(self, value: deque[Deferred[Message | SignalFrame]]) -> None:
        self.__lean_readers = value if value else None


class _PoolingProtocol(BareosProtocol):
    """A Director-side connection that tells its factory and its pool entry of its end directly.

    The same as the protocols of :class:`BareosServerFactory`, minus a
    closure and two Deferreds per connection (about 1 KB each, which matters
    with thousands of waiting connections).
    """

    def __init__(self, factory: DirectorPoolFactory, host: str) -> None:
        self.factory = factory
        self.peer_host = host
        self.pool_entry: PoolEntry | None = None
        super().__init__(self._new_connection, factory.reactor, factory.handshake_timeout, factory.on_channel)
        self.channel = _LeanChannel(self)

    def _new_connection(self) -> ServerConnection:
        factory = self.factory
        return ServerConnection(factory.config, clock=factory.reactor.seconds, peer_host=self.peer_host,
                                psk_context=factory._psk_context)

    def connectionLost(self, reason: Failure = Failure(ConnectionError())) -> None:
        try:
            super().connectionLost(reason)
        finally:
            self.factory.protocols.discard(self)
            entry, self.pool_entry = self.pool_entry, None
            if entry is not None:
                entry._closed(None)


class DirectorPoolFactory(BareosServerFactory):
    """A Director's server factory whose client-initiated FDs go into ``pool``.

    Every other authenticated connection (consoles) goes to ``on_channel``,
    or is closed if there is none.  Behaves like
    :class:`~bareosproto.twisted.factory.BareosServerFactory` otherwise
    (``protocols`` holds the open connections), with less memory per
    connection.
    """

    def __init__(
        self,
        config: ServerConfig,
        reactor: ReactorTime,
        pool: WaitingConnectionPool,
        on_channel: Callable[[Channel], object] | None = None,
        handshake_timeout: float | None = HANDSHAKE_TIMEOUT,
    ) -> None:
        super().__init__(config, reactor, self._route, handshake_timeout)
        self.pool = pool
        self.other_channel = on_channel

    def _route(self, channel: Channel) -> None:
        handshake = channel.protocol.handshake
        if handshake is not None and handshake.hello.kind is HelloKind.CLIENT:
            self.pool.add(channel)
        elif self.other_channel is not None:
            self.other_channel(channel)
        else:
            channel.close()

    def buildProtocol(self, addr: Any) -> _PoolingProtocol:
        proto = _PoolingProtocol(self, getattr(addr, "host", ""))
        self.protocols.add(proto)
        return proto


# -- the per-job strategy -------------------------------------------------------------


class ClientUnreachable(Exception):
    """``Failed to connect to client "<name>".`` (job error)."""

    def __init__(self, name: str, message: str | None = None) -> None:
        super().__init__(message or f'Failed to connect to client "{name}".')
        self.name = name


class ConnectingNotAllowed(ClientUnreachable):
    """Neither direction is allowed: ``Connecting to <name> is not allowed.``"""

    def __init__(self, name: str) -> None:
        super().__init__(name, f"Connecting to {name} is not allowed.")


class Via(enum.Enum):
    WAITING = "a waiting connection"
    DIALED = "a connection to the client"
    AWAITED = "a connection the client opened while we waited"


@attrs.frozen
class ClientChannel:
    """The channel a job got, and how.

    A pooled channel (``WAITING``, ``AWAITED``) is already authenticated and
    was opened by the FD: no second Hello, the job's first command goes
    straight on it.  ``log_line`` is the job message Bareos writes then.
    """

    channel: Channel
    via: Via
    name: str

    @property
    def pooled(self) -> bool:
        return self.via is not Via.DIALED

    @property
    def log_line(self) -> str | None:
        return f"Using Client Initiated Connection ({self.name}).\n" if self.pooled else None


def connect_client(
    pool: WaitingConnectionPool,
    name: str,
    *,
    dial: Callable[[float], Deferred[Channel]] | None,
    timeout: float,
    reactor: Any | None = None,
    from_director: bool = True,
    from_client: bool = True,
    auth_attempts: int = 1,
) -> Deferred[ClientChannel]:
    """Get a control channel to client ``name`` for a job (``ConnectToFileDaemon()``).

    1. a waiting connection of the client, if ``from_client`` (Connection From
       Client To Director);
    2. else, if ``from_director`` (Connection From Director To Client) and a
       ``dial`` is given: ``dial(timeout)``, the user's connect-and-authenticate
       call, cut off after ``timeout`` seconds;
    3. if that failed or is not allowed: wait up to ``timeout`` seconds for
       the client to connect (``from_client`` only);
    4. else fail with :class:`ClientUnreachable`.

    A dial that fails with :class:`~bareosproto.errors.RemoteProtocolError`
    (authentication) starts over from step 1, up to ``auth_attempts``
    times in all (upstream makes a second attempt only after a failed
    TLS-first try; its limit is 3); any other dial failure (TCP) goes on to
    step 3.  Neither direction allowed: :class:`ConnectingNotAllowed` at
    once.  Jobs use ``FdConnectTimeout`` (180 s), console commands 15 s.
    """
    clock: Any = reactor if reactor is not None else pool.reactor

    async def run() -> ClientChannel:
        if not from_director and not from_client:
            raise ConnectingNotAllowed(name)
        last_auth_error: RemoteProtocolError | None = None
        for _ in range(max(1, auth_attempts)):
            if from_client:
                channel = pool.take_now(name)
                if channel is not None:
                    return ClientChannel(channel, Via.WAITING, name)
            if from_director and dial is not None:
                try:
                    dialing = dial(timeout)
                    dialing.addTimeout(timeout, clock)
                    return ClientChannel(await dialing, Via.DIALED, name)
                except RemoteProtocolError as exc:
                    last_auth_error = exc
                    continue
                except Exception as exc:  # TCP failure or timeout: wait for the client instead
                    log.info("bareosproto: connecting to client {name} failed: {err}", name=name, err=exc)
            if from_client:
                try:
                    channel = await pool.take(name, timeout)
                except NoWaitingConnection:
                    pass
                else:
                    return ClientChannel(channel, Via.AWAITED, name)
            raise ClientUnreachable(name)
        error = ClientUnreachable(name)
        if last_auth_error is not None:
            error.__cause__ = last_auth_error
        raise error

    return Deferred.fromCoroutine(run())
