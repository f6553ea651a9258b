"""Slow, literal reimplementations that the fast library code is checked against.

These are the byte-at-a-time loops the library first shipped with, written
as close to Bareos' C (``core/src/lib/scan.cc``, ``core/src/lib/base64.cc``)
as Python allows.  The library now uses compiled regular expressions and
``binascii``; ``test_fast_paths.py`` checks both give the same answers.
"""

from __future__ import annotations

import re

_SPACE = frozenset(b" \t\n\v\f\r")
_DIGITS = frozenset(b"0123456789")
_DIRECTIVE = re.compile(rb"%(\d*)(hh|h|ll|l|q)?([sduc%])")
ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


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
    ops = _compile(fmt)
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


def base64_encode(data: bytes, standard: bool = False) -> bytes:
    """``BinToBase64()``: a 32-bit register, 6 bits out at a time."""
    out = bytearray()
    reg = 0
    rem = 0
    i = 0
    n = len(data)
    while i < n:
        if rem < 6:
            b = data[i]
            if not standard and b >= 0x80:
                b -= 0x100  # signed char, sign-extended below by the mask
            reg = ((reg << 8) | b) & 0xFFFFFFFF
            i += 1
            rem += 8
        rem -= 6
        out.append(ALPHABET[(reg >> rem) & 0x3F])
    if rem:
        mask = (1 << rem) - 1
        if standard:
            out.append(ALPHABET[(reg & mask) << (6 - rem)])
        else:
            out.append(ALPHABET[reg & mask])
    return bytes(out)
