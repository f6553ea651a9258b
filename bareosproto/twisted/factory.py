"""Factories and the connect call: where a core connection meets the network.

* :class:`BareosServerFactory` accepts connections as a Director, FD or SD
  (one :class:`~bareosproto.connection.ServerConnection` per TCP connection)
  and hands each authenticated :class:`~bareosproto.twisted.protocol.Channel`
  to a callback.
* :func:`connect` opens a connection of any type through an endpoint (an
  object or a string such as ``"tcp:host=127.0.0.1:port=9101"``) and fires
  with the authenticated channel.
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import clientFromString, serverFromString
from twisted.internet.interfaces import IAddress, IStreamClientEndpoint, IStreamServerEndpoint
from twisted.internet.protocol import Factory

from ..connection import ClientConnection, ServerConfig, ServerConnection, server_psk_context
from ._types import ReactorTime
from .protocol import HANDSHAKE_TIMEOUT, BareosProtocol, Channel

__all__ = ["BareosServerFactory", "connect", "client_endpoint", "server_endpoint"]


def client_endpoint(reactor: Any, endpoint: str | IStreamClientEndpoint) -> IStreamClientEndpoint:
    """An endpoint object from a string like ``tcp:host=127.0.0.1:port=9101``."""
    return clientFromString(reactor, endpoint) if isinstance(endpoint, str) else endpoint


def server_endpoint(reactor: Any, endpoint: str | IStreamServerEndpoint) -> IStreamServerEndpoint:
    """An endpoint object from a string like ``tcp:9101:interface=127.0.0.1``."""
    return serverFromString(reactor, endpoint) if isinstance(endpoint, str) else endpoint


class BareosServerFactory(Factory):
    """Accept connections as the daemon ``config`` describes.

    ``on_channel(channel)`` is called for every connection whose handshake
    completed; ``channel.handshake`` says who it is.  Refused connections
    never reach it: they get Bareos' replies and delays and are closed.
    ``handshake_timeout`` drops a peer that does not finish (or never speaks)
    in time.  Each connection logs one line (``twisted.logger``): who
    authenticated, with which TLS, or why it was refused.
    """

    noisy = False

    def __init__(
        self,
        config: ServerConfig,
        reactor: ReactorTime,
        on_channel: Callable[[Channel], object],
        handshake_timeout: float | None = HANDSHAKE_TIMEOUT,
    ) -> None:
        self.config = config
        self.reactor = reactor
        self.on_channel = on_channel
        self.handshake_timeout = handshake_timeout
        self._psk_context = server_psk_context(config) if config.tls else None
        #: open connections, handshake done or not
        self.protocols: set[BareosProtocol] = set()

    def buildProtocol(self, addr: IAddress | None) -> BareosProtocol:
        host = getattr(addr, "host", "")

        def make() -> ServerConnection:
            return ServerConnection(
                self.config, clock=self.reactor.seconds, peer_host=host, psk_context=self._psk_context
            )

        proto = BareosProtocol(make, self.reactor, self.handshake_timeout, self.on_channel, self.protocols.discard)
        self.protocols.add(proto)
        return proto


def connect(
    reactor: Any,
    endpoint: str | IStreamClientEndpoint,
    make_connection: Callable[[], ClientConnection],
    handshake_timeout: float | None = HANDSHAKE_TIMEOUT,
) -> Deferred[Channel]:
    """Connect, run the handshake, and fire with the open :class:`Channel`.

    Fails with :class:`~bareosproto.errors.RemoteProtocolError` if the peer
    refused us (its replies are on the error) and with the endpoint's error
    if the TCP connection could not be made.
    """

    proto = BareosProtocol(make_connection, reactor, handshake_timeout)
    connected = client_endpoint(reactor, endpoint).connect(_OneConnection(proto))
    handshake: Deferred[object] = connected.addCallback(lambda _: proto.when_handshake_complete())
    return handshake.addCallback(lambda _: proto.channel)


class _OneConnection(Factory):
    """Builds the one protocol of a :func:`connect` call, silently (Twisted's
    ``connectProtocol`` logs a start and a stop line for every connection)."""

    noisy = False

    def __init__(self, protocol: BareosProtocol) -> None:
        self._protocol = protocol

    def buildProtocol(self, addr: IAddress | None) -> BareosProtocol:
        return self._protocol
