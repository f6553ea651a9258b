"""Passwords and keys: what is fed to HMAC-MD5 and used as TLS-PSK secret.

Bareos keys are *strings*: the 32 lower-case hex digits of the MD5 of a clear
password (``Password = "secret"``), the 32 characters kept verbatim from a
stored ``"[md5]<hex>"`` value (case preserved), or the 39-character job
session key an SD makes for each job.  :class:`Secret` holds such a key and
never shows it in a ``repr``, ``str`` or log line.
"""

from __future__ import annotations

import hashlib
import secrets
from typing import Callable

from .errors import LocalProtocolError

__all__ = [
    "Secret",
    "password_key",
    "stored_password_key",
    "as_key",
    "session_key",
    "new_session_key",
    "EMPTY_PASSWORD_KEY",
    "DUMMY_SESSION_KEY",
]

#: MD5 of the empty string: Bareos refuses it for a required password.
EMPTY_PASSWORD_KEY = "d41d8cd98f00b204e9800998ecf8427e"
#: What the Director sends as session key when it has none.
DUMMY_SESSION_KEY = "dummy"


class Secret:
    """A key, as the ASCII bytes Bareos feeds to HMAC-MD5 and to TLS-PSK.

    Its ``repr`` and ``str`` never contain the key; compare two secrets with
    ``==`` (constant time).
    """

    __slots__ = ("_value",)

    def __init__(self, value: bytes | str) -> None:
        if isinstance(value, str):
            value = value.encode("ascii")
        if not isinstance(value, bytes):
            raise LocalProtocolError("a Secret is built from bytes or an ASCII str")
        self._value = value

    def reveal(self) -> bytes:
        """The key bytes; only pass them to HMAC or TLS."""
        return self._value

    def __repr__(self) -> str:
        return "Secret(<hidden>)"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        import hmac

        return hmac.compare_digest(self._value, other._value)

    def __hash__(self) -> int:
        return hash(("Secret", len(self._value)))

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("a Secret is not pickled")


def password_key(clear: str | bytes) -> Secret:
    """The key of a plain config value ``Password = "<clear>"``: MD5 hex."""
    if isinstance(clear, str):
        clear = clear.encode("utf-8")
    return Secret(hashlib.md5(clear).hexdigest())


def stored_password_key(value: str) -> Secret:
    """The key Bareos stores for a password directive value as written.

    ``"[md5]<32 hex>"`` is kept verbatim (case included, so an upper-case
    digest no longer matches a peer that hashed the clear text); anything
    else is hashed.  The empty password is refused, as Bareos refuses it.
    """
    if value.startswith("[md5]"):
        digest = value[5:]
        if len(digest) != 32 or any(c not in "0123456789abcdefABCDEF" for c in digest):
            raise LocalProtocolError("[md5] must be followed by exactly 32 hex digits")
        key = Secret(digest)
    else:
        key = password_key(value)
    if key.reveal() == EMPTY_PASSWORD_KEY.encode():
        raise LocalProtocolError("Empty Password not allowed")
    return key


def as_key(value: str | Secret) -> Secret:
    """The key of a password as a daemon's configuration holds it.

    A :class:`Secret` is taken as the key itself; a ``str`` is a configured
    password value (:func:`stored_password_key`: ``[md5]<hex>`` kept as
    written, anything else MD5-hashed).
    """
    return value if isinstance(value, Secret) else stored_password_key(value)


def session_key(random16: bytes) -> Secret:
    """``MakeSessionKey()`` from 16 random bytes: ``AAAA-BBBB-...`` (39 chars).

    Each byte gives two letters, ``'A' + low nibble`` then ``'A' + high
    nibble``; a dash after every second byte, none at the end.
    """
    if len(random16) != 16:
        raise LocalProtocolError("a session key is made of exactly 16 bytes")
    out = []
    for i, b in enumerate(random16):
        out.append(chr(65 + (b & 0x0F)))
        out.append(chr(65 + (b >> 4)))
        if i % 2 == 1 and i != 15:
            out.append("-")
    return Secret("".join(out))


def new_session_key(random_bytes: Callable[[int], bytes] = secrets.token_bytes) -> Secret:
    """A fresh job session key; ``random_bytes`` is injectable for tests."""
    return session_key(random_bytes(16))
