"""CRAM-MD5 as Bareos does it (``core/src/lib/cram_md5.cc``).

The challenger sends ``auth cram-md5 <R.T@QUALIFIED-NAME> ssl=P\\n``; the
responder answers with HMAC-MD5(key, token) in Bareos base64 (22 characters)
followed by a NUL byte; the challenger answers ``1000 OK auth\\n`` or
``1999 Authorization failed.\\n``.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Callable

import attrs

from . import bareos_base64
from .errors import LocalProtocolError, RemoteProtocolError
from .frames import encode_message
from .keys import Secret
from .scan import bsscanf
from .tls_policy import TlsPolicy

__all__ = [
    "Challenge",
    "make_challenge",
    "parse_challenge",
    "challenge_name",
    "is_reflected",
    "compute_response",
    "response_payload",
    "verify_response",
    "AUTH_OK",
    "AUTH_FAILED",
    "default_nonce",
]

#: The challenger's verdict on a good response (compared byte for byte).
AUTH_OK = b"1000 OK auth\n"
#: The challenger's verdict on a bad response, and Bareos' generic refusal.
AUTH_FAILED = b"1999 Authorization failed.\n"


def default_nonce() -> int:
    """The challenge number: Bareos uses ``random()`` (0..2**31-1); ours comes
    from :mod:`secrets` over the same range."""
    return secrets.randbits(31)


@attrs.frozen
class Challenge:
    """One challenge line.

    ``token`` is ``<nonce.time@name>`` exactly as on the wire (name bashed),
    ``tls_policy`` the ``ssl=`` value (``None``: the line had none, which
    Bareos treats as ``TlsPolicy.UNKNOWN``), ``standard_base64`` true for the
    ``auth cram-md5c`` variant, whose response is in standard base64.
    """

    token: bytes
    tls_policy: int | None = TlsPolicy.NONE
    standard_base64: bool = False

    @property
    def remote_policy(self) -> TlsPolicy | int:
        """The ``ssl=`` value as a :class:`TlsPolicy` where Bareos defines one."""
        if self.tls_policy is None:
            return TlsPolicy.UNKNOWN
        try:
            return TlsPolicy(self.tls_policy)
        except ValueError:
            return self.tls_policy

    def to_line(self) -> bytes:
        verb = b"auth cram-md5c " if self.standard_base64 else b"auth cram-md5 "
        if self.tls_policy is None:
            return verb + self.token + b"\n"
        return verb + self.token + b" ssl=%d\n" % self.tls_policy


def make_challenge(
    own_qualified_name: bytes,
    tls_policy: int,
    timestamp: int,
    nonce: Callable[[], int] = default_nonce,
) -> Challenge:
    """A challenge naming us (``R_DIRECTOR::bareos-dir``, already bashed)."""
    if any(b <= 0x20 and b != 0x01 for b in own_qualified_name) or not own_qualified_name:
        raise LocalProtocolError("the qualified name must be bashed and non-empty")
    token = b"<%d.%d@%s>" % (nonce() & 0xFFFFFFFF, timestamp & 0xFFFFFFFF, own_qualified_name)
    return Challenge(token, int(tls_policy))


def parse_challenge(payload: bytes) -> Challenge:
    """Parse a challenge line the way ``CramMd5Response()`` does.

    Tried in order: ``auth cram-md5c %s ssl=%d``, ``auth cram-md5 %s ssl=%d``,
    ``auth cram-md5 %s`` (no ``ssl=``).  Anything else is a
    :class:`RemoteProtocolError` whose reply is ``1999 Authorization failed.``.
    """
    scanned = bsscanf(payload, b"auth cram-md5c %s ssl=%d")
    if scanned is not None:
        return Challenge(_token(scanned[0]), _int(scanned[1]), standard_base64=True)
    scanned = bsscanf(payload, b"auth cram-md5 %s ssl=%d")
    if scanned is not None:
        return Challenge(_token(scanned[0]), _int(scanned[1]))
    scanned = bsscanf(payload, b"auth cram-md5 %s\n")
    if scanned is not None:
        return Challenge(_token(scanned[0]), None)
    raise RemoteProtocolError(
        f"Cannot scan challenge: {payload[:100]!r}", reply=encode_message(AUTH_FAILED)
    )


def _token(value: int | bytes) -> bytes:
    assert isinstance(value, bytes)
    return value


def _int(value: int | bytes) -> int:
    assert isinstance(value, int)
    return value


def challenge_name(token: bytes) -> bytes | None:
    """The name in a token (``<%u.%u@%s`` minus the last byte), or ``None``
    if the token does not scan."""
    scanned = bsscanf(token, b"<%u.%u@%s")
    if scanned is None:
        return None
    name = scanned[2]
    assert isinstance(name, bytes)
    return name[:-1]


def is_reflected(token: bytes, own_qualified_name: bytes) -> bool:
    """True if the token carries our own qualified name (CVE-2020-4042), and
    is not the legal SD-to-itself case (``R_STORAGE`` in the token)."""
    return challenge_name(token) == own_qualified_name and b"R_STORAGE" not in token


def compute_response(key: Secret, token: bytes, standard: bool = False) -> bytes:
    """HMAC-MD5(key, token) in Bareos (default) or standard base64: 22 bytes."""
    nul = token.find(b"\x00")
    if nul >= 0:
        token = token[:nul]
    digest = hmac.new(key.reveal(), token, hashlib.md5).digest()
    return bareos_base64.encode(digest, standard)


def response_payload(key: Secret, challenge: Challenge) -> bytes:
    """The response frame's payload as C Bareos sends it: 22 chars and a NUL."""
    return compute_response(key, challenge.token, challenge.standard_base64) + b"\x00"


def verify_response(key: Secret, token: bytes, payload: bytes, accept_standard: bool) -> bool:
    """Check a response the way ``CramMd5Challenge()`` does.

    The payload is read as a C string (everything from its first NUL on is
    ignored) and compared in constant time with the Bareos-mode answer and,
    if ``accept_standard`` (we challenged first, or sent ``cram-md5c``), with
    the standard-mode answer too.
    """
    nul = payload.find(b"\x00")
    if nul >= 0:
        payload = payload[:nul]
    if hmac.compare_digest(payload, compute_response(key, token, False)):
        return True
    return accept_standard and hmac.compare_digest(payload, compute_response(key, token, True))
