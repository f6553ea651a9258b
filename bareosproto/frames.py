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
#: The smallest buffer in which the decoder gathers a frame that spans chunks.
_KEEP_MIN = 4096
#: Its buffers are kept for the next such frame up to this size.
_REUSE_MAX = 256 * 1024
_EMPTY = memoryview(b"")


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
    buffered, so the decoder never holds more than one unfinished frame: a
    header and at most 1,000,000 payload bytes.  The frames completed before
    the bad header in the same call are on the exception as ``events``.
    After an error, or after EOF, every further call raises again.

    Copies: a frame inside one chunk is sliced out of it (one copy of its
    payload), or by :meth:`receive_views` handed out as a ``memoryview`` of
    ``data`` (no copy).  The payload of a frame that spans
    chunks is gathered in a buffer of the decoder: each piece is copied into
    it as it arrives, as much as has arrived (the buffer grows with what
    came, not with what the header claims), and nothing of the chunks is
    kept by reference (a view of a chunk would keep all of it alive, and
    with it the allocator from reusing its memory: a stream of 256 KiB reads
    then runs at half speed).  When the last piece arrives the frame is
    ``bytes`` (the earlier pieces joined with the last one, read in place),
    or from :meth:`receive_views` a view of the buffer once the last piece
    is copied in: each byte of such a frame is copied once.  The decoder keeps
    two such buffers (up to 256 KiB) and uses them in turn, so that a view
    handed out stays intact while the next frame is gathered.
    """

    __slots__ = ("_head", "_buf", "_spare", "_filled", "_size", "_missing", "_error", "_closed",
                 "max_packet_size")

    def __init__(self, max_packet_size: int = MAX_PACKET_SIZE) -> None:
        if not 0 < max_packet_size <= MAX_PACKET_SIZE:
            raise LocalProtocolError(f"max_packet_size must be 1..{MAX_PACKET_SIZE}")
        #: the first 1-3 bytes of a header whose rest has not come yet
        self._head = b""
        #: the payload (so far) of the frame whose header was complete: ``_filled`` bytes of ``_buf``
        self._buf = _EMPTY
        self._filled = 0
        #: the other buffer, holding the frame last handed out as a view
        self._spare = _EMPTY
        #: that payload's length, and how many of its bytes are still to come (0: none pending)
        self._size = 0
        self._missing = 0
        self._error: RemoteProtocolError | None = None
        self._closed = False
        self.max_packet_size = max_packet_size

    @property
    def buffered(self) -> int:
        """Bytes received but not yet part of a complete frame."""
        if self._missing:
            return HEADER_LENGTH + self._size - self._missing
        return len(self._head)

    def take_buffered(self) -> bytes:
        """Hand the bytes not yet decoded to another layer (a TLS engine, a
        new phase) and forget them: no byte is dropped or read twice."""
        if self._missing:
            data = _pack(self._size) + self._buf[: self._filled]
        else:
            data = self._head
        self._reset()
        return data

    def receive_data(self, data: bytes | memoryview) -> list[Event]:
        """The events ``data`` completes: :class:`Message`, :class:`SignalFrame`,
        and :class:`ConnectionClosed` for ``b""`` (EOF).

        ``data`` may be a view of a buffer the caller reuses after the call
        (decrypted TLS records): the decoder copies out what it keeps."""
        if not data:
            self.receive_frames(b"")
            return [ConnectionClosed()]
        new = _tuple_new
        return [
            new(Message, (item,)) if item.__class__ is bytes else SignalFrame(item)  # type: ignore[arg-type]
            for item in self.receive_frames(data)
        ]

    def receive_frames(self, data: bytes | memoryview) -> list[bytes | int]:
        """The raw form of :meth:`receive_data`, for hot paths: each frame is its
        payload (``bytes``, ``b""`` for an empty message) or its signal value (a
        negative ``int``).  ``b""`` means EOF and returns ``[]``."""
        if not self._accepts(data):
            return []
        items: list[bytes | int] = []
        pos = 0
        missing = self._missing
        if missing:
            # The payload of a frame begun in an earlier call.
            end = len(data)
            if end < missing:
                self._keep(data, 0)
                self._missing = missing - end
                return items
            last = data if end == missing else memoryview(data)[:missing]
            filled = self._filled
            if filled:  # joined with the pieces before: one copy
                items.append(b"".join((self._buf[:filled], last)))
                if len(self._buf) > _REUSE_MAX:
                    self._buf = _EMPTY  # a large frame's buffer is not kept
            else:  # only the header came before
                items.append(bytes(last))
            self._filled = self._size = self._missing = 0
            if end == missing:
                return items
            pos = missing
        elif self._head:
            # 1-3 bytes of a header: put them before the new bytes (a copy of this
            # chunk, but only when a header is cut, which a bulk stream rarely does)
            data = self._head + data
            self._head = b""
        self._parse(data, pos, items)
        return items

    def _parse(self, data: bytes | memoryview, pos: int, items: list[bytes | int]) -> None:
        # The hot loop: locals only, the header length as a literal 4.
        append = items.append
        unpack = _unpack_from
        limit = self.max_packet_size
        end = len(data)
        view = data.__class__ is not bytes  # slices of a view are views: copy them to bytes
        while True:
            try:
                (n,) = unpack(data, pos)
            except _StructError:  # fewer than 4 bytes left
                if pos < end:
                    self._head = bytes(data[pos:])
                return
            if n > 0:
                if n > limit:
                    self._fail(n, items)
                stop = pos + 4 + n
                if stop > end:
                    self._size = n
                    self._missing = stop - end
                    if pos + 4 < end:
                        self._keep(data, pos + 4)
                    return
                append(bytes(data[pos + 4 : stop]) if view else data[pos + 4 : stop])  # type: ignore[arg-type]
                pos = stop
            else:
                append(n or b"")
                pos += 4

    def receive_views(self, data: bytes | memoryview) -> list[memoryview | int]:
        """The zero-copy form of :meth:`receive_frames`: each payload is a
        ``memoryview``, a slice of ``data`` for a frame that lies wholly inside
        it, else a view of the decoder's buffer, in which the pieces of a frame
        that spans calls are gathered (the frame's one copy).  **Valid only
        until the next call**, and a view of ``data`` only as long as ``data``
        holds those bytes: copy what you keep.  Signals are negative ``int``;
        ``b""`` means EOF and returns ``[]``."""
        if not self._accepts(data):
            return []
        items: list[memoryview | int] = []
        view = data if data.__class__ is memoryview else memoryview(data)
        end = len(view)
        pos = 0
        missing = self._missing
        if missing:
            if end < missing:
                self._keep(view, 0)
                self._missing = missing - end
                return items
            filled = self._filled
            if filled:
                buf = self._buf
                stop = filled + missing
                if len(buf) < stop:
                    buf = self._grow(stop)
                buf[filled:stop] = view[:missing]
                items.append(buf[:stop])
                # the next frame is gathered in the other buffer: this one is handed out
                self._buf = self._spare
                self._spare = buf if len(buf) <= _REUSE_MAX else _EMPTY
                self._filled = 0
            else:  # only the header came before
                items.append(view[:missing])
            self._size = self._missing = 0
            pos = missing
        elif self._head:
            view = memoryview(self._head + view)  # a header cut in two: rare in a bulk stream
            end = len(view)
            self._head = b""
        append = items.append
        unpack = _unpack_from
        limit = self.max_packet_size
        while True:
            try:
                (n,) = unpack(view, pos)
            except _StructError:  # fewer than 4 bytes left
                if pos < end:
                    self._head = bytes(view[pos:])
                return items
            if n > 0:
                if n > limit:
                    self._fail(n, items)
                stop = pos + 4 + n
                if stop > end:
                    self._size = n
                    self._missing = stop - end
                    if pos + 4 < end:
                        self._keep(view, pos + 4)
                    return items
                append(view[pos + 4 : stop])
                pos = stop
            else:
                append(n or _EMPTY)
                pos += 4

    def _keep(self, data: bytes | memoryview, start: int) -> None:
        """Copy ``data[start:]``, a piece of the unfinished payload, into the buffer."""
        filled = self._filled
        stop = filled + len(data) - start
        buf = self._buf
        if len(buf) < stop:
            buf = self._grow(stop)
        buf[filled:stop] = data if not start else memoryview(data)[start:]
        self._filled = stop

    def _grow(self, need: int) -> memoryview:
        """A buffer of at least ``need`` bytes with the pending payload at its start:
        at least twice the old one and 4 KiB (appending byte by byte stays linear),
        never more than the payload's length.  A new buffer, not the old one
        resized: a view of the old one may still be alive."""
        size = min(max(need, 2 * len(self._buf), _KEEP_MIN), self._size)
        buf = memoryview(bytearray(size))
        filled = self._filled
        if filled:
            buf[:filled] = self._buf[:filled]
        self._buf = buf
        return buf

    def _reset(self) -> None:
        self._head = b""
        self._filled = self._size = self._missing = 0
        if len(self._buf) > _REUSE_MAX:
            self._buf = _EMPTY  # a large frame's buffer is not kept

    def _fail(self, n: int, items: list[bytes | int] | list[memoryview | int]) -> NoReturn:
        self._reset()
        error = RemoteProtocolError(
            f"Packet size too big ({n} > {self.max_packet_size}). Terminating connection.",
            reply=TERMINATE,
        )
        error.events = [SignalFrame(i) if isinstance(i, int) else Message(bytes(i)) for i in items]
        self._error = error
        raise error

    def _accepts(self, data: bytes | memoryview) -> bool:
        """What every receive form checks first: no input after an error or after
        EOF; ``b""`` is EOF.  True if there are bytes to decode."""
        if self._error is not None:
            raise self._error
        if self._closed:
            raise RemoteProtocolError("data after end of stream")
        if not data:
            self._eof()
            return False
        return True

    def _eof(self) -> None:
        self._closed = True
        n = self.buffered
        if n:
            self._reset()
            self._error = RemoteProtocolError(
                f"connection closed inside a frame ({n} bytes of it received)"
            )
            raise self._error
