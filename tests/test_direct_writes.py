"""Handshake flights go straight to the socket; after that, and after any
short write, the transport takes over and the byte order holds.

``BareosProtocol`` writes a handshake flight with one ``send()`` on the
socket of a plain TCP transport (so it leaves now, not on the reactor's next
turn).  These tests put a recording socket in place of the real one.
"""

from __future__ import annotations

from twisted.internet import task
from twisted.internet.testing import StringTransport

from bareosproto import TlsPolicy, password_key
from bareosproto.connection import ClientConnection, ConnectionType
from bareosproto.frames import encode_message
from bareosproto.twisted import BareosProtocol

KEY = password_key("secret")


class RecordingSocket:
    """Takes at most ``room`` bytes per send(), like a nearly full socket buffer."""

    def __init__(self, room: int) -> None:
        self.room = room
        self.sent = bytearray()

    def send(self, data: bytes) -> int:
        n = min(self.room, len(data))
        self.sent += data[:n]
        self.room -= n
        return n


def protocol_with(sock: RecordingSocket) -> tuple[BareosProtocol, StringTransport]:
    clock = task.Clock()
    proto = BareosProtocol(
        lambda: ClientConnection(ConnectionType.CONSOLE, name="admin", key=KEY, clock=clock.seconds,
                                 tls_policy=TlsPolicy.NONE),
        clock,
    )
    transport = StringTransport()
    proto.makeConnection(transport)  # not a plain TCP transport: nothing direct yet
    proto._socket = sock  # type: ignore[assignment]  # as connectionMade does for tcp.Server/Client
    return proto, transport


def test_a_flight_goes_to_the_socket_and_nothing_to_the_transport() -> None:
    """With room in the socket, the response flight is one send() and the transport stays empty."""
    sock = RecordingSocket(room=10_000)
    proto, transport = protocol_with(sock)
    hello = transport.value()  # the Hello went before the socket was put in
    assert b"Hello admin calling" in hello
    proto.dataReceived(encode_message(b"auth cram-md5 <1.2@R_DIRECTOR::bareos-dir> ssl=0\n"))
    assert len(sock.sent) == 4 + 23  # header and the 22-char response with its NUL
    assert transport.value() == hello


def test_a_short_send_hands_the_rest_and_all_later_bytes_to_the_transport() -> None:
    """If the socket takes only part of a flight, the rest and every later flight go
    through the transport, in order."""
    sock = RecordingSocket(room=5)
    proto, transport = protocol_with(sock)
    transport.clear()
    proto.dataReceived(encode_message(b"auth cram-md5 <1.2@R_DIRECTOR::bareos-dir> ssl=0\n"))
    first_flight = bytes(sock.sent) + transport.value()
    assert len(sock.sent) == 5 and len(first_flight) == 27
    sock.room = 10_000
    proto.dataReceived(encode_message(b"1000 OK auth\n"))
    assert len(sock.sent) == 5  # nothing direct any more
    assert transport.value().startswith(first_flight[5:])
    assert b"auth cram-md5 <" in transport.value()  # our challenge followed, via the transport


def test_nothing_is_sent_directly_after_abort() -> None:
    """abort() ends the direct path: a flight produced afterwards never reaches the socket."""
    sock = RecordingSocket(room=10_000)
    proto, transport = protocol_with(sock)
    proto.abort()
    proto.dataReceived(encode_message(b"auth cram-md5 <1.2@R_DIRECTOR::bareos-dir> ssl=0\n"))
    assert sock.sent == b""
