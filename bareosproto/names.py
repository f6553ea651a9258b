"""Names on the wire: bashing, qualified names, TLS-PSK identities.

Resource names may contain spaces, but protocol lines are split at
whitespace, so inside lines Bareos sends every space as byte 0x01
("bashed").  TLS-PSK identities carry the name unbashed after the type and
a 0x1E record separator.
"""

from __future__ import annotations

import enum
import functools

from .errors import LocalProtocolError, RemoteProtocolError

__all__ = [
    "ResourceType",
    "bash",
    "unbash",
    "qualified_name",
    "psk_identity",
    "parse_psk_identity",
    "MAX_NAME_LENGTH",
    "USER_AGENT",
]

#: A name buffer is 128 bytes: names are at most 127 bytes on the wire.
MAX_NAME_LENGTH = 127
#: The name of the default console (the Director password's console).
USER_AGENT = "*UserAgent*"


class ResourceType(enum.Enum):
    """The resource type names Bareos uses in qualified names and identities."""

    __hash__ = object.__hash__  # members are singletons: identity hash, no Python-level call

    R_AUTOCHANGER = "R_AUTOCHANGER"
    R_CATALOG = "R_CATALOG"
    R_CLIENT = "R_CLIENT"
    R_CONSOLE_FONT = "R_CONSOLE_FONT"
    R_CONSOLE = "R_CONSOLE"
    R_COUNTER = "R_COUNTER"
    R_DEVICE = "R_DEVICE"
    R_DIRECTOR = "R_DIRECTOR"
    R_FILESET = "R_FILESET"
    R_JOBDEFS = "R_JOBDEFS"
    R_JOB = "R_JOB"
    R_MSGS = "R_MSGS"
    R_MONITOR = "R_MONITOR"
    R_NDMP = "R_NDMP"
    R_POOL = "R_POOL"
    R_PROFILE = "R_PROFILE"
    R_SCHEDULE = "R_SCHEDULE"
    R_STORAGE = "R_STORAGE"
    R_USER = "R_USER"

    def __str__(self) -> str:
        return self.value


def _encode_name(name: str | bytes) -> bytes:
    raw = name.encode("utf-8") if isinstance(name, str) else name
    if not raw:
        raise LocalProtocolError("a name cannot be empty")
    if any(b < 0x20 or b == 0x7F for b in raw):
        raise LocalProtocolError(f"a name cannot hold control bytes: {raw!r}")
    return raw


def bash(name: str | bytes) -> bytes:
    """The name as Bareos writes it inside a line: spaces become 0x01."""
    return _encode_name(name).replace(b" ", b"\x01")


def unbash(raw: bytes) -> str:
    """The name a peer wrote inside a line: 0x01 becomes a space again."""
    return raw.replace(b"\x01", b" ").decode("utf-8", errors="surrogateescape")


@functools.lru_cache(maxsize=256)
def qualified_name(rtype: ResourceType, name: str) -> bytes:
    """``R_DIRECTOR::bareos-dir``, bashed: the name in a CRAM-MD5 challenge."""
    return rtype.value.encode("ascii") + b"::" + bash(name)


def psk_identity(rtype: ResourceType, name: str) -> str:
    """``R_CONSOLE\\x1eadmin``: the TLS-PSK identity (name not bashed)."""
    raw = _encode_name(name)
    if len(raw) + len(rtype.value) + 1 > MAX_NAME_LENGTH:
        raise LocalProtocolError("a PSK identity is at most 127 bytes")
    return f"{rtype.value}\x1e{name}"


def parse_psk_identity(identity: str | bytes) -> tuple[ResourceType, str]:
    """Split an identity at the first 0x1E into its type and its name.

    An identity with no separator, an unknown type or an empty name is a
    :class:`RemoteProtocolError` (the TLS handshake then fails, as upstream).
    """
    if isinstance(identity, bytes):
        identity = identity.decode("utf-8", errors="surrogateescape")
    type_name, sep, name = identity.partition("\x1e")
    if not sep or not name:
        raise RemoteProtocolError(f"malformed PSK identity {identity!r}")
    try:
        rtype = ResourceType(type_name)
    except ValueError:
        raise RemoteProtocolError(f"unknown resource type in PSK identity {identity!r}") from None
    return rtype, name
