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

__all__ = ["encode", "decode", "ALPHABET"]

ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_DECODE = {c: i for i, c in enumerate(ALPHABET)}


def encode(data: bytes, standard: bool = False) -> bytes:
    """``BinToBase64(data, use_standard_encoding=standard)``."""
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
