"""bareosproto: the Bareos network protocol, byte for byte.

The package root is a sans-IO core: it imports no Twisted, no socket, no
clock and no global random.  Bytes go in, events come out, bytes to send
are handed back.  The Twisted shell lives in :mod:`bareosproto.twisted`.
"""

from __future__ import annotations

from .auth import AuthState, Role, TwoWayAuth
from .errors import DelayedReply, LocalProtocolError, ProtocolError, RemoteProtocolError
from .events import AuthSucceeded, ConnectionClosed, Event, Message, SignalFrame
from .frames import (
    MAX_MESSAGE_LENGTH,
    MAX_PACKET_SIZE,
    TERMINATE,
    FrameDecoder,
    encode_message,
    encode_signal,
)
from .hello import Hello, HelloKind, PeerInfo, detect_peer, parse_hello
from .keys import Secret, as_key, new_session_key, password_key, session_key, stored_password_key
from .names import ResourceType, bash, psk_identity, parse_psk_identity, qualified_name, unbash
from .replies import (
    DirectorGreeting,
    FdHelloOk,
    GreetingForm,
    ResponseMessage,
    SdHelloOk,
    parse_greeting,
)
from .signals import Signal
from .tls_policy import TlsPolicy, local_policy, select_tls_policy
from .versions import BAREOS_25, BAREOS_26, BareosVersion

__version__ = "0.1.0"

__all__ = [
    "AuthState",
    "AuthSucceeded",
    "BAREOS_25",
    "BAREOS_26",
    "BareosVersion",
    "ConnectionClosed",
    "DelayedReply",
    "DirectorGreeting",
    "Event",
    "FdHelloOk",
    "FrameDecoder",
    "GreetingForm",
    "Hello",
    "HelloKind",
    "LocalProtocolError",
    "MAX_MESSAGE_LENGTH",
    "MAX_PACKET_SIZE",
    "Message",
    "PeerInfo",
    "ProtocolError",
    "RemoteProtocolError",
    "ResourceType",
    "ResponseMessage",
    "Role",
    "SdHelloOk",
    "Secret",
    "Signal",
    "SignalFrame",
    "TERMINATE",
    "TlsPolicy",
    "TwoWayAuth",
    "as_key",
    "bash",
    "detect_peer",
    "encode_message",
    "encode_signal",
    "local_policy",
    "new_session_key",
    "parse_greeting",
    "parse_hello",
    "parse_psk_identity",
    "password_key",
    "psk_identity",
    "qualified_name",
    "select_tls_policy",
    "session_key",
    "stored_password_key",
    "unbash",
]
