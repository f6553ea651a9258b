"""Framing: the 4-byte signed big-endian header and its payload.

``encode_message``/``encode_signal`` build the bytes Bareos writes;
:class:`FrameDecoder` turns a byte stream, cut anywhere, into
:class:`~bareosproto.events.Message`, :class:`~bareosproto.events.SignalFrame`
and (at EOF) :class:`~bareosproto.events.ConnectionClosed` events.
"""

from __future__ import annotations

import struct
from typing import NoReturn

from .errors import LocalProtocolError, RemoteProtocolError
from .events import ConnectionClosed, Event, Message, SignalFrame
from .signals import Signal

__all__ = [
    "HEADER_LENGTH",
    "MAX_PACKET_SIZE",
    "MAX_MESSAGE_LENGTH",
    "encode_message",
    "encode_signal",
    "FrameDecoder",
    "TERMINATE",
]

HEADER_LENGTH = 4
#: The largest positive header a receiver accepts (``bsock_tcp.h``).
MAX_PACKET_SIZE = 1_000_000
#: The largest payload a sender puts in one frame; longer messages are split.
MAX_MESSAGE_LENGTH = MAX_PACKET_SIZE - HEADER_LENGTH

_HEADER = struct.Struct(">i")
_pack = _HEADER.pack
_unpack_from = _HEADER.unpack_from
_StructError = struct.error
_tuple_new = tuple.__new__  # Message is a tuple: built without a Python-level call


def encode_message(payload: bytes) -> bytes:
    """Header and payload as Bareos writes them in one ``write()``.

    A payload longer than 999,996 bytes becomes several frames of 999,996
    bytes and a final remainder, as ``BareosSocketTCP::send()`` does; the
    receiver delivers each as a message of its own.
    """
    n = len(payload)
    if n <= MAX_MESSAGE_LENGTH:
        return _pack(n) + payload
    parts: list[bytes | memoryview] = []
    view = memoryview(payload)
    for start in range(0, n, MAX_MESSAGE_LENGTH):
        chunk = view[start : start + MAX_MESSAGE_LENGTH]
        parts.append(_pack(len(chunk)))
        parts.append(chunk)
    return b"".join(parts)


def encode_signal(signal: int) -> bytes:
    """The 4 bytes of a signal frame; ``signal`` must be negative."""
    value = int(signal)
    if value >= 0 or value < -(2**31):
        raise LocalProtocolError(f"a signal is a negative 32-bit value, not {value}")
    return _pack(value)


#: ``ff ff ff fc``: what Bareos writes before it closes a refused connection.
TERMINATE = encode_signal(Signal.BNET_TERMINATE)


class FrameDecoder:
    """Incremental decoder; feed it any chunking of a stream, byte by byte too.

    ``receive_data(data)`` returns the events completed by ``data``;
    ``receive_data(b"")`` means EOF and yields :class:`ConnectionClosed`.

    A positive header above :data:`MAX_PACKET_SIZE` raises
    :class:`RemoteProtocolError` (its reply is ``BNET_TERMINATE``, which is
    what Bareos turns such a header into) before any of its payload is
    buffered, so the decoder never holds more than one header and 1,000,000
    payload bytes.  The frames completed before the bad header in the same
    call are on the exception as ``events``.  After an error, or after EOF,
    every further call raises again.
    """

    __slots__ = ("_buffer", "_need", "_error", "_closed", "max_packet_size")

    def __init__(self, max_packet_size: int = MAX_PACKET_SIZE) -> None:
        if not 0 < max_packet_size <= MAX_PACKET_SIZE:
            raise LocalProtocolError(f"max_packet_size must be 1..{MAX_PACKET_SIZE}")
        self._buffer = bytearray()
        #: bytes the unfinished frame in ``_buffer`` needs in all (header included)
        self._need = HEADER_LENGTH
        self._error: RemoteProtocolError | None = None
        self._closed = False
        self.max_packet_size = max_packet_size

    @property
    def buffered(self) -> int:
        """Bytes received but not yet part of a complete frame."""
        return len(self._buffer)

    def take_buffered(self) -> bytes:
        """Hand the bytes not yet decoded to another layer (a TLS engine, a
        new phase) and forget them: no byte is dropped or read twice."""
        data = bytes(self._buffer)
        self._buffer.clear()
        self._need = HEADER_LENGTH
        return data

    def receive_data(self, data: bytes) -> list[Event]:
        """The events ``data`` completes: :class:`Message`, :class:`SignalFrame`,
        and :class:`ConnectionClosed` for ``b""`` (EOF)."""
        if not data:
            self.receive_frames(b"")
            return [ConnectionClosed()]
        new = _tuple_new
        return [
            new(Message, (item,)) if item.__class__ is bytes else SignalFrame(item)  # type: ignore[arg-type]
            for item in self.receive_frames(data)
        ]

    def receive_frames(self, data: bytes) -> list[bytes | int]:
        """The raw form of :meth:`receive_data`, for hot paths: each frame is its
        payload (``bytes``, ``b""`` for an empty message) or its signal value (a
        negative ``int``).  ``b""`` means EOF and returns ``[]``."""
        if self._error is not None:
            raise self._error
        if self._closed:
            raise RemoteProtocolError("data after end of stream")
        if not data:
            self._eof()
            return []
        items: list[bytes | int] = []
        pos = 0
        buf = self._buffer
        if buf:
            # Complete the frame begun in an earlier call.
            while True:
                missing = self._need - len(buf)
                if len(data) - pos < missing:
                    buf += data[pos:] if pos else data
                    return items
                buf += data[pos : pos + missing]
                pos += missing
                if self._need == HEADER_LENGTH:
                    (n,) = _unpack_from(buf, 0)
                    if n > 0:
                        if n > self.max_packet_size:
                            self._fail(n, items)
                        self._need = HEADER_LENGTH + n
                        continue
                    items.append(b"" if n == 0 else n)
                else:
                    with memoryview(buf) as view:
                        items.append(bytes(view[HEADER_LENGTH:]))
                buf.clear()
                self._need = HEADER_LENGTH
                break
        self._parse(data, pos, items)
        return items

    def _parse(self, data: bytes, pos: int, items: list[bytes | int]) -> None:
        # The hot loop: locals only, the header length as a literal 4.
        append = items.append
        unpack = _unpack_from
        limit = self.max_packet_size
        end = len(data)
        while True:
            try:
                (n,) = unpack(data, pos)
            except _StructError:  # fewer than 4 bytes left
                break
            if n > 0:
                stop = pos + 4 + n
                if stop > end:
                    if n > limit:
                        self._fail(n, items)
                    self._need = 4 + n
                    break
                if n > limit:
                    self._fail(n, items)
                append(data[pos + 4 : stop])
                pos = stop
            else:
                append(n or b"")
                pos += 4
        if pos < end:
            self._buffer += data[pos:]

    def _fail(self, n: int, items: list[bytes | int]) -> NoReturn:
        self._buffer.clear()
        error = RemoteProtocolError(
            f"Packet size too big ({n} > {self.max_packet_size}). Terminating connection.",
            reply=TERMINATE,
        )
        error.events = [Message(i) if isinstance(i, bytes) else SignalFrame(i) for i in items]
        self._error = error
        raise error

    def _eof(self) -> None:
        self._closed = True
        if self._buffer:
            n = len(self._buffer)
            self._buffer.clear()
            self._error = RemoteProtocolError(
                f"connection closed inside a frame ({n} bytes of it received)"
            )
            raise self._error
