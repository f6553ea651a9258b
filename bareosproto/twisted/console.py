"""Consoles over Twisted: log into a Director, or be one.

* :func:`connect_console` logs in as a named console (or the default console
  ``*UserAgent*``) and fires with a :class:`ConsoleSession`, whose
  :meth:`~ConsoleSession.call` runs one command at a time and fires with a
  :class:`~bareosproto.console.ConsoleReply`.
* :class:`DirectorConsoleServer` (also made by :func:`console_server_factory`)
  accepts consoles as a Director: each logged-in console gets a
  :class:`ConsoleServerSession` that runs the command loop and asks a
  handler for everything but the built-in commands.

All parsing and framing is in :mod:`bareosproto.console`; this module only
moves frames between it and a :class:`~bareosproto.twisted.protocol.Channel`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

from twisted.internet.defer import CancelledError, Deferred, DeferredLock
from twisted.internet.endpoints import connectProtocol
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.logger import Logger

from ..auth import FAILURE_DELAY
from ..connection import ClientConnection, ConnectionType, Credentials, Daemon, HandshakeComplete, ServerConfig
from ..console import (
    ApiMode,
    CommandResult,
    ConsoleClient,
    ConsoleCommand,
    ConsoleCommandLoop,
    ConsoleError,
    ConsoleReply,
    QUIT_COMMANDS,
    UnknownCommand,
)
from ..errors import LocalProtocolError, ProtocolError, RemoteProtocolError
from ..events import ConnectionClosed, Message, SignalFrame
from ..keys import Secret, as_key, password_key
from ..names import USER_AGENT, ResourceType
from ..replies import SELF_COMPILED_SERVICES, DirectorGreeting
from ..tls_policy import TlsPolicy
from ..versions import BAREOS_26, BareosVersion
from ._types import ReactorTime
from .factory import BareosServerFactory, client_endpoint
from .protocol import HANDSHAKE_TIMEOUT, BareosProtocol, Channel, ChannelClosed

__all__ = [
    "ConsoleSession",
    "connect_console",
    "ConsoleServerSession",
    "DirectorConsoleServer",
    "console_server_factory",
    "CommandHandler",
]

log = Logger()


# -- console side ---------------------------------------------------------------


class ConsoleSession:
    """A logged-in console.

    :meth:`call` sends one command and fires with its
    :class:`~bareosproto.console.ConsoleReply`; calls made while one runs
    wait their turn.  :attr:`api_mode` follows the ``.api`` commands
    (:meth:`set_api` sends one).  :meth:`quit` sends ``quit`` and fires when
    the Director has closed the connection.
    """

    def __init__(self, channel: Channel) -> None:
        self.channel = channel
        self.handshake: HandshakeComplete = channel.handshake
        self._client = ConsoleClient()
        self._lock = DeferredLock()

    def __repr__(self) -> str:
        return f"<ConsoleSession {self.name!r} at {self.director!r} api={int(self.api_mode)}>"

    # -- what the login said ---------------------------------------------------

    @property
    def name(self) -> str:
        """Our console name (``*UserAgent*`` for the default console)."""
        return self.handshake.hello.name

    @property
    def greeting(self) -> DirectorGreeting | None:
        greeting = self.handshake.greeting
        return greeting if isinstance(greeting, DirectorGreeting) else None

    @property
    def director(self) -> str | None:
        """The Director's name, from its ``1000 OK: <name> Version: ...`` greeting."""
        return self.greeting.director if self.greeting else None

    @property
    def version(self) -> str | None:
        return self.greeting.version if self.greeting else None

    @property
    def info(self) -> str | None:
        """The text of the ``1002`` info message (``... You are logged in as: <name>``)."""
        return self.handshake.info

    @property
    def tls_version(self) -> str | None:
        return self.handshake.tls_version

    @property
    def cipher(self) -> str | None:
        return self.handshake.cipher

    # -- commands --------------------------------------------------------------

    @property
    def api_mode(self) -> ApiMode:
        return self._client.mode

    @property
    def compact(self) -> bool:
        return self._client.compact

    def call(self, command: str) -> Deferred[ConsoleReply]:
        """Send ``command`` (no newline is added) and collect the reply.

        Fails with :class:`~bareosproto.twisted.protocol.ChannelClosed` if the
        connection ends before the reply does (except for ``quit``, whose
        reply ends with the connection).  Cancelling a call drops the
        connection, because the replies would no longer match the commands.
        """

        def run() -> Deferred[ConsoleReply]:
            return Deferred.fromCoroutine(self._call(command))

        return self._lock.run(run)

    def set_api(self, mode: ApiMode | int, compact: bool | None = None) -> Deferred[ConsoleReply]:
        """``.api <mode>`` (with ``compact=yes|no`` for JSON if given)."""
        mode = ApiMode(mode)
        command = f".api {int(mode)}"
        if compact is not None:
            if mode is not ApiMode.JSON:
                raise LocalProtocolError("compact= only applies to .api json")
            command += " compact=" + ("yes" if compact else "no")
        return self.call(command)

    def quit(self) -> Deferred[None]:
        """Send ``quit`` and fire once the Director has closed the connection."""

        async def run() -> None:
            await self.call("quit")
            await self.when_closed()

        return Deferred.fromCoroutine(run())

    def close(self) -> None:
        """Close the connection without ``quit``: the Director sees the end of the stream."""
        self.channel.close()

    def when_closed(self) -> Deferred[None]:
        return self.channel.protocol.when_closed()

    async def _call(self, command: str) -> ConsoleReply:
        payload = self._client.send_command(command)
        try:
            self.channel.send(payload)
        except ProtocolError as exc:
            self._client.connection_closed()
            raise ChannelClosed(f"cannot send {command!r}: {exc.message}") from exc
        while True:
            try:
                frame = await self.channel.next_frame()
            except ChannelClosed:
                collector = self._client.collector
                reply = self._client.connection_closed()
                if reply is not None and collector is not None and _is_quit(collector.command):
                    return reply
                raise
            except CancelledError:
                self.channel.protocol.abort()
                raise
            reply = self._client.receive(frame)
            if reply is not None:
                return reply


def _is_quit(command: str) -> bool:
    words = command.split()
    return bool(words) and words[0].lower() in QUIT_COMMANDS


def connect_console(
    reactor: Any,
    endpoint: str | IStreamClientEndpoint,
    name: str | None,
    password: str | Secret,
    *,
    tls: bool = False,
    tls_policy: TlsPolicy | None = None,
    director_name: str | None = None,
    release: BareosVersion = BAREOS_26,
    old_console: bool = False,
    timeout: float | None = HANDSHAKE_TIMEOUT,
    failure_delay: float = FAILURE_DELAY,
) -> Deferred[ConsoleSession]:
    """Log into a Director and fire with the :class:`ConsoleSession`.

    ``name`` is a named console, or ``None``/``"*UserAgent*"`` for the
    default console, which is keyed with the Director password.
    ``password`` is the clear text (its MD5 hex is the key,
    :func:`~bareosproto.keys.password_key`) or a :class:`~bareosproto.keys.Secret`.  ``tls=True`` starts with
    TLS-PSK; ``tls_policy`` is the ``ssl=`` of our challenge (bconsole takes
    it from its Director resource; default: ``REQUIRED`` with TLS, ``NONE``
    without).  ``director_name``, if given, must match the greeting.
    ``old_console`` sends the 12.4 Hello.  ``timeout`` bounds the login.

    A refused login fails with
    :class:`~bareosproto.errors.RemoteProtocolError` once the connection is
    closed, which is after the Bareos delay ``failure_delay`` when the
    Director rejected our key.
    """
    console = USER_AGENT if name is None else name
    key = password if isinstance(password, Secret) else password_key(password)
    policy = tls_policy if tls_policy is not None else (TlsPolicy.REQUIRED if tls else TlsPolicy.NONE)

    def make() -> ClientConnection:
        return ClientConnection(
            ConnectionType.CONSOLE,
            name=console,
            key=key,
            clock=reactor.seconds,
            tls=tls,
            tls_policy=policy,
            release=release,
            old_console=old_console,
            failure_delay=failure_delay,
        )

    async def run() -> ConsoleSession:
        proto = BareosProtocol(make, reactor, timeout)
        await connectProtocol(client_endpoint(reactor, endpoint), proto)
        try:
            await proto.when_handshake_complete()
        except RemoteProtocolError:
            await proto.when_closed()
            raise
        session = ConsoleSession(proto.channel)
        if director_name is not None and session.director != director_name:
            proto.close()
            await proto.when_closed()
            raise RemoteProtocolError(
                f"logged into Director {session.director!r}, not {director_name!r}"
            )
        return session

    return Deferred.fromCoroutine(run())


# -- Director side ----------------------------------------------------------------

#: ``handler(command, session)``: returns (or fires with, or awaits to) a
#: ``str``/``bytes`` (result text), a list of them (one frame each), a mapping
#: (the JSON result), a :class:`~bareosproto.console.CommandResult` or ``None``;
#: raises :class:`~bareosproto.console.UnknownCommand` or
#: :class:`~bareosproto.console.ConsoleError`.
CommandHandler = Callable[[str, "ConsoleServerSession"], object]


class ConsoleServerSession:
    """One logged-in console on our Director: the command loop.

    Built-in commands (``.api``, ``quit``, ``exit``, ``.quit``,
    ``autodisplay``) are answered by :class:`~bareosproto.console.ConsoleCommandLoop`;
    every other command goes to ``handler(command, session)``, one at a time.
    ``session.api_mode`` tells the handler how its result will be shown.
    """

    def __init__(self, channel: Channel, handler: CommandHandler | None) -> None:
        self.channel = channel
        self.handshake: HandshakeComplete = channel.handshake
        self.handler = handler
        self.loop = ConsoleCommandLoop()
        self.commands: list[str] = []  #: every command received, built-ins included
        self.done: Deferred[None] = Deferred.fromCoroutine(self._run())

    def __repr__(self) -> str:
        return f"<ConsoleServerSession {self.name!r} api={int(self.api_mode)}>"

    @property
    def name(self) -> str:
        return self.handshake.hello.name

    @property
    def is_default_console(self) -> bool:
        return self.name == USER_AGENT

    @property
    def api_mode(self) -> ApiMode:
        return self.loop.mode

    @property
    def compact(self) -> bool:
        return self.loop.compact

    @property
    def auto_display(self) -> bool:
        return self.loop.auto_display

    @property
    def tls_version(self) -> str | None:
        return self.handshake.tls_version

    def close(self) -> None:
        self.channel.close()

    async def _run(self) -> None:
        try:
            while not self.loop.closed:
                try:
                    frame = await self.channel.next_frame()
                except ChannelClosed:
                    self.loop.receive(ConnectionClosed())
                    return
                if isinstance(frame, Message):
                    self.commands.append(frame.payload.decode("utf-8", "surrogateescape"))
                command = self.loop.receive(frame)
                if command is not None:
                    self.loop.complete(await self._execute(command))
                if not self._flush():
                    return
            self.channel.close()
        except Exception:
            log.failure("bareosproto: console session {name!r} failed", name=self.name)
            self.channel.protocol.abort()

    async def _execute(self, command: ConsoleCommand) -> CommandResult:
        if self.handler is None:
            return CommandResult(found=False)
        try:
            value = self.handler(command.text, self)
            while isinstance(value, Deferred) or inspect.isawaitable(value):
                value = await value
            return CommandResult.of(value)
        except UnknownCommand:
            return CommandResult(found=False)
        except ConsoleError as exc:
            text = exc.message if exc.message.endswith("\n") else exc.message + "\n"
            return CommandResult.error(text)
        except Exception:
            log.failure("bareosproto: console command {command!r} failed", command=command.text)
            return CommandResult.error(f"{command.keyword}: command failed.\n")

    def _flush(self) -> bool:
        """Write the loop's frames; false if the connection is gone."""
        try:
            for frame in self.loop.frames_to_send():
                if isinstance(frame, SignalFrame):
                    self.channel.send_signal(int(frame.signal))
                else:
                    self.channel.send(frame.payload)
        except ProtocolError:
            return False
        return True


ConsoleCredentials = str | Secret | tuple[str | Secret, TlsPolicy]


class DirectorConsoleServer(BareosServerFactory):
    """A Director that accepts consoles and serves commands.

    ``consoles`` maps console names to their password (clear text, ``[md5]``
    form or :class:`~bareosproto.keys.Secret`) or to ``(password,
    TlsPolicy)``; the policy (default ``NONE``) is the ``ssl=`` of the
    Director's challenge and decides whether a cleartext Hello is let in.
    ``director_password`` keys the default console ``*UserAgent*`` (``None``:
    no default console), with ``director_tls_policy``.  ``tls=True`` accepts
    TLS-PSK.  Open sessions are in :attr:`sessions`; ``on_session(session)``
    is called for each new one.
    """

    def __init__(
        self,
        reactor: ReactorTime,
        director_name: str,
        consoles: Mapping[str, ConsoleCredentials],
        director_password: str | Secret | None,
        handler: CommandHandler | None,
        *,
        release: BareosVersion = BAREOS_26,
        tls: bool = True,
        director_tls_policy: TlsPolicy = TlsPolicy.REQUIRED,
        failure_delay: float = FAILURE_DELAY,
        services_text: str = SELF_COMPILED_SERVICES,
        handshake_timeout: float | None = HANDSHAKE_TIMEOUT,
        on_session: Callable[[ConsoleServerSession], object] | None = None,
    ) -> None:
        table: dict[str, Credentials] = {}
        for name, value in consoles.items():
            if name == USER_AGENT:
                raise LocalProtocolError(f"{USER_AGENT} is the default console: give director_password")
            password, policy = value if isinstance(value, tuple) else (value, TlsPolicy.NONE)
            table[name] = Credentials(as_key(password), policy)
        if director_password is not None:
            table[USER_AGENT] = Credentials(as_key(director_password), director_tls_policy)
        self.credentials = table
        self.handler = handler
        self.on_session = on_session
        self.sessions: set[ConsoleServerSession] = set()

        def lookup(rtype: ResourceType, name: str) -> Credentials | None:
            return table.get(name) if rtype is ResourceType.R_CONSOLE else None

        config = ServerConfig(
            daemon=Daemon.DIRECTOR,
            name=director_name,
            lookup=lookup,
            release=release,
            tls=tls,
            failure_delay=failure_delay,
            services_text=services_text,
        )
        super().__init__(config, reactor, self._on_channel, handshake_timeout)

    def _on_channel(self, channel: Channel) -> None:
        session = ConsoleServerSession(channel, self.handler)
        self.sessions.add(session)
        channel.protocol.when_closed().addBoth(lambda _: self.sessions.discard(session))
        if self.on_session is not None:
            self.on_session(session)


#: A :class:`DirectorConsoleServer` (a ``BareosServerFactory``) to listen with;
#: the same arguments.
console_server_factory = DirectorConsoleServer