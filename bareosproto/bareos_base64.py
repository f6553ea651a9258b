"""Bareos' own base64 (``core/src/lib/base64.cc``), used for CRAM-MD5 responses.

Two modes share one routine:

* Bareos mode (``standard=False``, what Bareos sends): every input byte is read
  as a *signed* char and sign-extended, and the final partial group is
  right-aligned.  Not RFC 4648.
* standard mode (``standard=True``): unsigned bytes, left-aligned final group,
  i.e. RFC 4648 without ``=`` padding.

No ``=`` padding is ever emitted.
"""

from __future__ import annotations

import binascii

__all__ = ["encode", "decode", "ALPHABET"]

ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_DECODE = {c: i for i, c in enumerate(ALPHABET)}
_CHARS = [bytes([c]) for c in ALPHABET]
_b2a = binascii.b2a_base64


def encode(data: bytes, standard: bool = False) -> bytes:
    """``BinToBase64(data, use_standard_encoding=standard)``."""
    if standard:
        return _b2a(data, newline=False).rstrip(b"=")
    # Bareos' routine keeps the bits not yet sent in a register and ORs each
    # new byte in as a signed char: a byte >= 0x80 sets the unsent low bits of
    # the byte before it (2 bits before the 2nd byte of each 3-byte group, 4
    # bits before the 3rd).  With those bits set, the full groups are RFC 4648.
    n = len(data)
    fixed: bytearray | None = None
    for i in range(1, n, 3):
        if data[i] >= 0x80:
            if fixed is None:
                fixed = bytearray(data)
            fixed[i - 1] |= 0x03
    for i in range(2, n, 3):
        if data[i] >= 0x80:
            if fixed is None:
                fixed = bytearray(data)
            fixed[i - 1] |= 0x0F
    text = _b2a(data if fixed is None else fixed, newline=False)
    tail = n % 3
    if tail == 1:  # "XY==": the last byte's 2 low bits, right-aligned
        return text[:-3] + _CHARS[data[-1] & 0x03]
    if tail == 2:  # "XYZ=": the last byte's 4 low bits, right-aligned
        return text[:-2] + _CHARS[data[-1] & 0x0F]
    return text


def decode(text: bytes) -> bytes:
    """Standard (RFC 4648) decoding of unpadded or padded input.

    Bareos-mode output cannot be decoded back in general (sign extension
    destroys bits); this is the decoder for standard-mode text.  Raises
    ``ValueError`` on a character outside the alphabet.
    """
    text = text.rstrip(b"=")
    out = bytearray()
    reg = 0
    bits = 0
    for c in text:
        try:
            v = _DECODE[c]
        except KeyError:
            raise ValueError(f"not a base64 character: {bytes([c])!r}") from None
        reg = ((reg << 6) | v) & 0xFFFFFF
        bits += 6
        if bits >= 8:
            bits -= 8
            out.append((reg >> bits) & 0xFF)
    return bytes(out)
