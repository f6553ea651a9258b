"""``bsscanf()``: the scanner every Bareos daemon parses protocol lines with.

Its rules differ from C ``sscanf`` and decide what a peer accepts
(``core/src/lib/scan.cc``):

* the input ends at its first NUL byte (it is a C string);
* a literal format character must match the input byte;
* a whitespace character in the format matches zero or more whitespace bytes;
* ``%s`` (optionally ``%127s``) copies up to the next whitespace or the width;
* ``%u``/``%d`` read zero or more digits (zero digits still convert, to 0),
  ``%d`` takes one leading ``-``; values wrap like the C integer they go to
  (``%u``, ``%lu``: 32 bits, ``%llu``: 64 bits);
* the first literal mismatch fails the whole scan; input left over after the
  format is ignored.

:func:`bsscanf` returns the converted values, or ``None`` where Bareos
returns -1.
"""

from __future__ import annotations

import re

__all__ = ["bsscanf"]

_SPACE = frozenset(b" \t\n\v\f\r")
_DIGITS = frozenset(b"0123456789")
_DIRECTIVE = re.compile(rb"%(\d*)(hh|h|ll|l|q)?([sduc%])")
_compiled: dict[bytes, list[tuple[str, object]]] = {}


def _compile(fmt: bytes) -> list[tuple[str, object]]:
    ops: list[tuple[str, object]] = []
    i = 0
    while i < len(fmt):
        c = fmt[i]
        if c == 0x25:  # '%'
            m = _DIRECTIVE.match(fmt, i)
            if m is None:
                raise ValueError(f"unsupported directive in {fmt!r}")
            width, size, conv = m.group(1), m.group(2), m.group(3)
            if conv == b"s":
                ops.append(("s", int(width) if width else None))
            elif conv in (b"u", b"d"):
                bits = 64 if size in (b"ll", b"q") else 16 if size == b"h" else 32
                ops.append((conv.decode(), bits))
            elif conv == b"c":
                ops.append(("c", None))
            else:
                ops.append(("lit", 0x25))
            i = m.end()
        elif c in _SPACE:
            ops.append(("ws", None))
            i += 1
        else:
            ops.append(("lit", c))
            i += 1
    return ops


def bsscanf(buf: bytes, fmt: bytes) -> list[int | bytes] | None:
    """Scan ``buf`` with ``fmt`` as Bareos does; ``None`` on a mismatch."""
    ops = _compiled.get(fmt)
    if ops is None:
        ops = _compiled[fmt] = _compile(fmt)
    nul = buf.find(b"\x00")
    if nul >= 0:
        buf = buf[:nul]
    n = len(buf)
    pos = 0
    values: list[int | bytes] = []
    for op, arg in ops:
        if op == "lit":
            if pos >= n or buf[pos] != arg:
                return None
            pos += 1
        elif op == "ws":
            while pos < n and buf[pos] in _SPACE:
                pos += 1
        elif op == "s":
            start = pos
            limit = n if arg is None else min(n, pos + int(arg))  # type: ignore[call-overload]
            while pos < limit and buf[pos] not in _SPACE:
                pos += 1
            values.append(buf[start:pos])
        elif op == "c":
            values.append(buf[pos] if pos < n else 0)
            pos += 1
        else:
            negative = False
            if op == "d" and pos < n and buf[pos] == 0x2D:
                negative = True
                pos += 1
            start = pos
            while pos < n and buf[pos] in _DIGITS:
                pos += 1
            value = int(buf[start:pos]) if pos > start else 0
            bits = int(arg)  # type: ignore[call-overload]
            value &= (1 << 64) - 1
            if negative:
                value = -value
            value &= (1 << bits) - 1
            if op == "d" and value >= 1 << (bits - 1):
                value -= 1 << bits
            values.append(value)
    return values
