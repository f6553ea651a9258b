"""The Twisted shell around the sans-IO core: protocols, factories, endpoints.

Nothing here parses bytes: :class:`BareosProtocol` feeds the core and writes
what it returns, and adds timers (through an injected ``IReactorTime``) and
Deferreds.
"""

from __future__ import annotations

from .console import ConsoleSession, DirectorConsoleServer, connect_console, console_server_factory
from .daemon import (
    DaemonChannel,
    connect_to_director_as_client,
    connect_to_fd,
    connect_to_sd,
    director_client_factory,
    fd_server_factory,
    sd_server_factory,
)
from .factory import BareosServerFactory, client_endpoint, connect, server_endpoint
from .protocol import HANDSHAKE_TIMEOUT, BareosProtocol, Channel, ChannelClosed

__all__ = [
    "ConsoleSession",
    "DaemonChannel",
    "DirectorConsoleServer",
    "connect_console",
    "connect_to_director_as_client",
    "connect_to_fd",
    "connect_to_sd",
    "console_server_factory",
    "director_client_factory",
    "fd_server_factory",
    "sd_server_factory",
    "BareosProtocol",
    "BareosServerFactory",
    "Channel",
    "ChannelClosed",
    "HANDSHAKE_TIMEOUT",
    "client_endpoint",
    "connect",
    "server_endpoint",
]
