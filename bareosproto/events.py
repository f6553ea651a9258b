"""Events: what the sans-IO objects hand to their caller, as attrs value types.

Frame level events come out of :class:`bareosproto.frames.FrameDecoder`;
authentication events out of :class:`bareosproto.auth.TwoWayAuth`.
"""

from __future__ import annotations

from operator import itemgetter
from typing import TYPE_CHECKING

import attrs

from .signals import Signal, as_signal, signal_name
from .tls_policy import TlsPolicy

__all__ = [
    "Event",
    "Message",
    "SignalFrame",
    "ConnectionClosed",
    "AuthSucceeded",
]


class Event:
    """Base class of every event."""

    __slots__ = ()


class Message(tuple[bytes], Event):
    """One frame with a payload of zero or more bytes (header >= 0).

    The one event the decoder makes per data frame, so it is the cheapest
    immutable value Python has: a one-element tuple with a ``payload``
    field (an attrs class costs the decoder a third of its speed on small
    frames; see ``bench/decoder.py``).
    """

    __slots__ = ()

    def __new__(cls, payload: bytes) -> Message:
        return tuple.__new__(cls, (payload,))

    if TYPE_CHECKING:

        @property
        def payload(self) -> bytes:
            """The frame's payload bytes."""

    else:
        payload = property(itemgetter(0), doc="The frame's payload bytes.")  # a C-level getter

    @property
    def text(self) -> str:
        """The payload as latin-1 text (Bareos lines are bytes, not UTF-8)."""
        return self[0].decode("latin-1")

    def __repr__(self) -> str:
        payload = self[0]
        shown = payload if len(payload) <= 80 else payload[:77] + b"..."
        return f"Message({shown!r}, len={len(payload)})"

    def __eq__(self, other: object) -> bool:
        return type(other) is Message and tuple.__eq__(self, other)

    def __ne__(self, other: object) -> bool:
        return not self.__eq__(other)

    def __hash__(self) -> int:
        return hash((Message, self[0]))


@attrs.frozen
class SignalFrame(Event):
    """A frame with a negative header; ``signal`` is a :class:`Signal` or, if
    Bareos defines no signal for that value, the raw negative int."""

    signal: Signal | int = attrs.field(converter=as_signal)

    @property
    def name(self) -> str:
        return signal_name(int(self.signal))


@attrs.frozen
class ConnectionClosed(Event):
    """The peer closed the stream at a frame boundary."""


@attrs.frozen
class AuthSucceeded(Event):
    """Both directions of CRAM-MD5 succeeded.

    ``remote_policy`` is the ``ssl=`` value the peer put in its challenge
    (``TlsPolicy.UNKNOWN`` if it sent none); ``tls`` is the outcome of the
    policy matrix (``NONE``: stay in clear, ``ENABLED`` or ``AUTO``: run a TLS
    handshake now, the acceptor being the TLS server), or ``NONE`` if TLS was
    already active.
    """

    remote_policy: TlsPolicy | int
    tls: TlsPolicy
