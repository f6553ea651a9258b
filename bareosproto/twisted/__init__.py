"""The Twisted shell around the sans-IO core: protocols, factories, endpoints.

Nothing here parses bytes: :class:`BareosProtocol` feeds the core and writes
what it returns, and adds timers (through an injected ``IReactorTime``) and
Deferreds.
"""

from __future__ import annotations

from .factory import BareosServerFactory, client_endpoint, connect, server_endpoint
from .protocol import HANDSHAKE_TIMEOUT, BareosProtocol, Channel, ChannelClosed

__all__ = [
    "BareosProtocol",
    "BareosServerFactory",
    "Channel",
    "ChannelClosed",
    "HANDSHAKE_TIMEOUT",
    "client_endpoint",
    "connect",
    "server_endpoint",
]
