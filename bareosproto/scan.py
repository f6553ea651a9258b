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
from typing import Callable

__all__ = ["bsscanf"]

# Each format becomes one regular expression with possessive quantifiers
# (``*+``, ``?+``, ``{0,n}+``): like the C loop, a directive takes all it can
# and never gives bytes back, so a later literal cannot make it match less.
_WS = rb"[ \t\n\v\f\r]"
_NOT_WS = rb"[^ \t\n\v\f\r]"
_DIRECTIVE = re.compile(rb"%(\d*)(hh|h|ll|l|q)?([sduc%])")

_Convert = Callable[[bytes], "int | bytes"]


def _integer(bits: int, signed: bool) -> _Convert:
    """Digits (after an optional ``-`` for ``%d``) to the C integer they land in."""
    mask = (1 << bits) - 1

    def convert(text: bytes) -> int:
        negative = signed and text[:1] == b"-"
        digits = text[1:] if negative else text
        value = (int(digits) if digits else 0) & 0xFFFFFFFFFFFFFFFF
        if negative:
            value = -value
        value &= mask
        if signed and value >> (bits - 1):
            value -= 1 << bits
        return value

    return convert


def _char(text: bytes) -> int:
    return text[0] if text else 0


class _Format:
    __slots__ = ("pattern", "converts", "all_strings")

    def __init__(self, fmt: bytes) -> None:
        parts: list[bytes] = []
        converts: list[_Convert | None] = []  # None: the bytes as they are (%s)
        i = 0
        while i < len(fmt):
            c = fmt[i]
            if c == 0x25:  # '%'
                m = _DIRECTIVE.match(fmt, i)
                if m is None:
                    raise ValueError(f"unsupported directive in {fmt!r}")
                width, size, conv = m.group(1), m.group(2), m.group(3)
                if conv == b"s":
                    parts.append(b"(" + _NOT_WS + (b"{0,%d}+" % int(width) if width else b"*+") + b")")
                    converts.append(None)
                elif conv in (b"u", b"d"):
                    bits = 64 if size in (b"ll", b"q") else 16 if size == b"h" else 32
                    parts.append(b"(-?+[0-9]*+)" if conv == b"d" else b"([0-9]*+)")
                    converts.append(_integer(bits, conv == b"d"))
                elif conv == b"c":
                    # past the end %c still converts (to 0) and moves on
                    parts.append(b"(.?+)")
                    converts.append(_char)
                else:
                    parts.append(b"%")
                i = m.end()
            elif c in b" \t\n\v\f\r":
                parts.append(_WS + b"*+")
                i += 1
            else:
                parts.append(re.escape(bytes([c])))
                i += 1
        self.pattern = re.compile(b"".join(parts), re.DOTALL)
        self.converts = tuple(converts)
        self.all_strings = all(f is None for f in converts)


_compiled: dict[bytes, _Format] = {}


def bsscanf(buf: bytes, fmt: bytes) -> list[int | bytes] | None:
    """Scan ``buf`` with ``fmt`` as Bareos does; ``None`` on a mismatch."""
    compiled = _compiled.get(fmt)
    if compiled is None:
        compiled = _compiled[fmt] = _Format(fmt)
    nul = buf.find(b"\x00")
    m = compiled.pattern.match(buf, 0, nul if nul >= 0 else len(buf))
    if m is None:
        return None
    groups: tuple[bytes, ...] = m.groups()
    if compiled.all_strings:
        return list(groups)
    return [g if f is None else f(g) for f, g in zip(compiled.converts, groups)]
