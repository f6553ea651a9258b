"""The two kinds of protocol error, after h11.

* :class:`LocalProtocolError`: our caller misused the API (sent an event the
  state machine does not allow, formatted a name Bareos cannot carry, ...).
  Nothing was sent to the peer because of it.
* :class:`RemoteProtocolError`: the peer sent something we refuse.  It carries
  the reply a real Bareos daemon would send in that situation, already framed
  and in order, so that a caller can write exactly what Bareos writes and then
  close.  :attr:`RemoteProtocolError.reply` is sent at once; each
  :class:`DelayedReply` in :attr:`RemoteProtocolError.delayed` after the given
  number of seconds (Bareos' failed-authentication sleeps).
"""

from __future__ import annotations

import attrs

__all__ = ["ProtocolError", "LocalProtocolError", "RemoteProtocolError", "DelayedReply"]


@attrs.frozen
class DelayedReply:
    """Bytes Bareos writes ``after`` seconds following the previous step."""

    after: float
    data: bytes


class ProtocolError(Exception):
    """Base class of both protocol errors."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class LocalProtocolError(ProtocolError):
    """Raised when our own side misuses the API; the peer is not involved."""


class RemoteProtocolError(ProtocolError):
    """The peer sent something we refuse.

    ``reply`` holds the framed bytes Bareos writes at once (for instance the
    ``1999 Authorization failed.`` line or a ``BNET_TERMINATE`` signal),
    ``delayed`` the steps Bareos writes later, and ``close_after`` the
    seconds after the last step at which Bareos closes the connection.
    """

    def __init__(
        self,
        message: str,
        reply: bytes = b"",
        delayed: tuple[DelayedReply, ...] = (),
        close_after: float = 0.0,
    ) -> None:
        super().__init__(message)
        self.reply = reply
        self.delayed = delayed
        self.close_after = close_after
        #: events the same input completed before the error (frame decoder)
        self.events: list[object] = []

    def __repr__(self) -> str:
        return (
            f"RemoteProtocolError({self.message!r}, reply={self.reply!r}, "
            f"delayed={self.delayed!r}, close_after={self.close_after!r})"
        )
