"""Hello lines: the first frame of every connection, build and parse.

=====================  =====================================================  ========
kind                   line (Bareos 26; 25.x has no ``Version=`` suffix)      bashed
=====================  =====================================================  ========
``CONSOLE``            ``Hello <name> calling version <full> Version="x.y.z"``  yes
                       ``Hello <name> calling`` (protocol 12.4)
``DIRECTOR``           ``Hello Director <name> calling Version="x.y.z"``       yes
``CLIENT``             ``Hello Client <name> FdProtocolVersion=54 calling ...``  no
                       ``Hello Client <name> calling`` (very old FDs)
``START_JOB``          ``Hello Start Job <job> Version="x.y.z"``               no
``STORAGE_START_JOB``  ``Hello Storage calling Start Job <job> Version=...``   no
``START_STORAGE_JOB``  ``Hello Start Storage Job <job> Version="x.y.z"``       no
=====================  =====================================================  ========

Every line ends in ``\\n``.  Names are at most 127 bytes.  :func:`detect_peer`
is the server's first look at a cleartext Hello
(``GetNameAndResourceTypeAndVersionFromHello()``).
"""

from __future__ import annotations

import enum
import functools
import re

import attrs

from .errors import LocalProtocolError, RemoteProtocolError
from .frames import TERMINATE
from .memo import remembered
from .names import MAX_NAME_LENGTH, ResourceType, bash, unbash
from .scan import bsscanf
from .versions import FD_PROTOCOL_VERSION, BareosVersion

__all__ = [
    "HelloKind",
    "Hello",
    "parse_hello",
    "detect_peer",
    "PeerInfo",
    "NEW_CONSOLE_PROTOCOL",
    "HELLO_LENGTH_LIMITS",
]

#: Console Hellos with a version >= 18.2 get the 0x1E login answer.
NEW_CONSOLE_PROTOCOL = 1802

#: ``(min, max)`` frame lengths each acceptor allows for a Hello.
HELLO_LENGTH_LIMITS: dict[str, tuple[int, int]] = {
    "director": (15, 153),
    "fd-from-director": (25, 500),
    "fd-from-sd": (25, 256),
    "sd": (25, 158),
}


class HelloKind(enum.Enum):
    __hash__ = object.__hash__  # members are singletons: identity hash, no Python-level call

    CONSOLE = "console"
    DIRECTOR = "director"
    CLIENT = "client"
    START_JOB = "start-job"
    STORAGE_START_JOB = "storage-start-job"
    START_STORAGE_JOB = "start-storage-job"

    @property
    def peer_type(self) -> ResourceType:
        return _PEER_TYPE[self]


_PEER_TYPE = {
    HelloKind.CONSOLE: ResourceType.R_CONSOLE,
    HelloKind.DIRECTOR: ResourceType.R_DIRECTOR,
    HelloKind.CLIENT: ResourceType.R_CLIENT,
    HelloKind.START_JOB: ResourceType.R_JOB,
    HelloKind.STORAGE_START_JOB: ResourceType.R_JOB,
    HelloKind.START_STORAGE_JOB: ResourceType.R_JOB,
}

_PREFIX = {
    HelloKind.DIRECTOR: b"Hello Director ",
    HelloKind.CLIENT: b"Hello Client ",
    HelloKind.START_JOB: b"Hello Start Job ",
    HelloKind.STORAGE_START_JOB: b"Hello Storage calling Start Job ",
    HelloKind.START_STORAGE_JOB: b"Hello Start Storage Job ",
}
_BASHED = {HelloKind.CONSOLE, HelloKind.DIRECTOR}


def _version_suffix(version: tuple[int, int, int] | None) -> bytes:
    if version is None:
        return b""
    return b' Version="%d.%d.%d"' % version


@attrs.frozen
class Hello:
    """One Hello line.

    ``name`` is unbashed; ``version`` the ``Version="x.y.z"`` triple or
    ``None``; ``console_version`` the word after ``calling version`` (consoles
    only; ``None`` for the 12.4 form ``Hello <name> calling``);
    ``fd_protocol_version`` the ``FdProtocolVersion=`` of client-initiated
    FDs (``None`` for the oldest form ``Hello Client <name> calling``).
    """

    kind: HelloKind
    name: str
    version: tuple[int, int, int] | None = None
    console_version: str | None = None
    fd_protocol_version: int | None = None

    # -- builders ----------------------------------------------------------

    @classmethod
    def console(cls, name: str, release: BareosVersion | None) -> Hello:
        """``Hello <name> calling version ...``; ``release=None`` gives the 12.4 form."""
        if release is None:
            return cls(HelloKind.CONSOLE, name)
        return cls(HelloKind.CONSOLE, name, release.numeric, release.full)

    @classmethod
    def director(cls, name: str, release: BareosVersion) -> Hello:
        return cls(HelloKind.DIRECTOR, name, release.numeric)

    @classmethod
    def client(
        cls, name: str, release: BareosVersion, fd_protocol_version: int | None = FD_PROTOCOL_VERSION
    ) -> Hello:
        return cls(HelloKind.CLIENT, name, release.numeric, None, fd_protocol_version)

    @classmethod
    def start_job(cls, job: str, release: BareosVersion) -> Hello:
        return cls(HelloKind.START_JOB, job, release.numeric)

    @classmethod
    def storage_start_job(cls, job: str, release: BareosVersion) -> Hello:
        return cls(HelloKind.STORAGE_START_JOB, job, release.numeric)

    @classmethod
    def start_storage_job(cls, job: str, release: BareosVersion) -> Hello:
        return cls(HelloKind.START_STORAGE_JOB, job, release.numeric)

    # -- properties --------------------------------------------------------

    @property
    def peer_type(self) -> ResourceType:
        return self.kind.peer_type

    @property
    def console_protocol(self) -> int | None:
        """``major*100+minor`` of a console Hello, ``None`` if it had no version."""
        if self.console_version is None:
            return None
        return _console_protocol(self.console_version.encode("utf-8", "surrogateescape"))

    @property
    def new_console_protocol(self) -> bool:
        """A console >= 18.2: its login is answered with 0x1E messages."""
        proto = self.console_protocol
        return proto is not None and proto >= NEW_CONSOLE_PROTOCOL

    # -- wire --------------------------------------------------------------

    def to_bytes(self) -> bytes:
        """The payload as Bareos writes it (raises LocalProtocolError for a
        name the line cannot carry)."""
        name = self._wire_name()
        suffix = _version_suffix(self.version)
        if self.kind is HelloKind.CONSOLE:
            if self.console_version is None:
                if self.version is not None:
                    raise LocalProtocolError("a 12.4 console Hello carries no Version=")
                return _console_line(b"Hello " + name + b" calling\n")
            word = self.console_version.encode("utf-8")
            if not word or any(b <= 0x20 for b in word):
                raise LocalProtocolError(f"bad console version word {self.console_version!r}")
            return _console_line(b"Hello " + name + b" calling version " + word + suffix + b"\n")
        if self.kind is HelloKind.CLIENT:
            if self.fd_protocol_version is None:
                if self.version is not None:
                    raise LocalProtocolError("the oldest client Hello carries no Version=")
                return b"Hello Client " + name + b" calling\n"
            return (
                b"Hello Client %s FdProtocolVersion=%d calling" % (name, self.fd_protocol_version)
                + suffix
                + b"\n"
            )
        if self.kind is HelloKind.DIRECTOR:
            return b"Hello Director " + name + b" calling" + suffix + b"\n"
        return _PREFIX[self.kind] + name + suffix + b"\n"

    def _wire_name(self) -> bytes:
        if self.kind in _BASHED:
            raw = bash(self.name)
        else:
            raw = self.name.encode("utf-8")
            if not raw or any(b <= 0x20 or b == 0x7F for b in raw):
                raise LocalProtocolError(
                    f"a {self.kind.value} Hello carries its name unbashed: "
                    f"{self.name!r} cannot contain spaces or control bytes"
                )
        if len(raw) > MAX_NAME_LENGTH:
            raise LocalProtocolError(f"a name is at most {MAX_NAME_LENGTH} bytes")
        return raw


_VERSION_FORMAT = b' Version="%u.%u.%u"'


def _console_line(line: bytes) -> bytes:
    """A console Hello that a daemon reads as a console's, or LocalProtocolError.

    Daemons tell Hellos apart by their first words, so a console whose name
    begins with ``Director``, ``Client`` or ``Storage`` is taken for that
    daemon and refused: Bareos cannot log such a console in either.
    """
    kind = detect_peer(line).peer_type
    if kind is not ResourceType.R_CONSOLE:
        raise LocalProtocolError(
            f"a daemon reads {line.split(b' calling')[0]!r} as a {kind.value} Hello: "
            "a console name cannot begin with that word"
        )
    return line


def _refuse(message: str) -> RemoteProtocolError:
    return RemoteProtocolError(message, reply=TERMINATE)


def _scan_name(raw: int | bytes) -> str:
    assert isinstance(raw, bytes)
    if not raw:
        raise _refuse("empty name in Hello")
    if len(raw) >= MAX_NAME_LENGTH + 1:
        raise _refuse(f"name in Hello longer than {MAX_NAME_LENGTH} bytes")
    if any(b < 0x20 and b != 0x01 or b == 0x7F for b in raw):
        raise _refuse(f"control byte in the name of a Hello: {raw!r}")
    return unbash(raw)


def _scan_version(payload: bytes, fmt: bytes) -> tuple[int, int, int] | None:
    """Try the longer format with ``Version=`` first, as receivers do."""
    scanned = bsscanf(payload, fmt + _VERSION_FORMAT)
    if scanned is None:
        return None
    a, b, c = scanned[-3:]
    assert isinstance(a, int) and isinstance(b, int) and isinstance(c, int)
    return (a, b, c)


_STOUL = re.compile(rb"^[ \t\n\v\f\r]*[+-]?[0-9]+")


@functools.lru_cache(maxsize=64)
def _console_protocol(word: bytes) -> int | None:
    """``major*100+minor`` as ``std::stoul`` reads it; ``None`` if invalid."""
    parts = word.split(b".")
    if len(parts) < 2:
        return None
    numbers = []
    for part in parts[:2]:
        m = _STOUL.match(part)
        if m is None:
            return None
        numbers.append(int(m.group(0)) & 0xFFFFFFFFFFFFFFFF)
    return (numbers[0] * 100 + numbers[1]) & 0xFFFFFFFF


@remembered()
def parse_hello(payload: bytes) -> Hello:
    """Parse a Hello payload with the formats the receiving daemons use.

    Anything that is not a Hello Bareos accepts is a
    :class:`RemoteProtocolError` whose reply is ``BNET_TERMINATE``.
    """
    if b"\x00" in payload.rstrip(b"\x00"):
        raise _refuse("NUL byte inside a Hello")
    for kind, fmt in _JOB_FORMATS:
        scanned = bsscanf(payload, fmt)
        if scanned is not None:
            return Hello(kind, _scan_name(scanned[0]), _scan_version(payload, fmt))
    scanned = bsscanf(payload, b"Hello Director %127s calling")
    if scanned is not None:
        fmt = b"Hello Director %127s calling"
        return Hello(HelloKind.DIRECTOR, _scan_name(scanned[0]), _scan_version(payload, fmt))
    fmt = b"Hello Client %127s FdProtocolVersion=%d calling"
    scanned = bsscanf(payload, fmt)
    if scanned is not None:
        proto = scanned[1]
        assert isinstance(proto, int)
        return Hello(
            HelloKind.CLIENT, _scan_name(scanned[0]), _scan_version(payload, fmt), None, proto
        )
    scanned = bsscanf(payload, b"Hello Client %127s calling")
    if scanned is not None:
        return Hello(HelloKind.CLIENT, _scan_name(scanned[0]))
    if payload.startswith(b"Hello Director") or payload.startswith(b"Hello Client"):
        raise _refuse(f"bad Hello: {payload[:100]!r}")
    fmt = b"Hello %127s calling version %127s"
    scanned = bsscanf(payload, fmt)
    if scanned is not None:
        word = scanned[1]
        assert isinstance(word, bytes)
        if word:
            if _console_protocol(word) is None:
                raise _refuse(f"UA Hello is invalid. Got: {payload[:100]!r}")
            return Hello(
                HelloKind.CONSOLE,
                _scan_name(scanned[0]),
                _scan_version(payload, fmt),
                word.decode("utf-8", "surrogateescape"),
            )
    scanned = bsscanf(payload, b"Hello %127s calling")
    if scanned is not None:
        return Hello(HelloKind.CONSOLE, _scan_name(scanned[0]))
    raise _refuse(f"unknown type of Hello: {payload[:100]!r}")


_JOB_FORMATS = (
    (HelloKind.STORAGE_START_JOB, b"Hello Storage calling Start Job %127s"),
    (HelloKind.START_STORAGE_JOB, b"Hello Start Storage Job %127s"),
    (HelloKind.START_JOB, b"Hello Start Job %127s"),
)


@attrs.frozen
class PeerInfo:
    """What a server reads off a cleartext Hello before anything else."""

    peer_type: ResourceType
    name: str
    #: ``major*100+minor`` of a console Hello, ``None`` when it had none
    console_protocol: int | None


# (prefix, peer type, index of the name token, index of the version token)
_DETECT = (
    (b"Hello Storage calling Start Job", ResourceType.R_JOB, 5, -1),
    (b"Hello Start Storage Job", ResourceType.R_JOB, 4, -1),
    (b"Hello Start Job", ResourceType.R_JOB, 3, -1),
    (b"Hello Director", ResourceType.R_DIRECTOR, 2, -1),
    (b"Hello Storage", ResourceType.R_STORAGE, 2, -1),
    (b"Hello Client", ResourceType.R_CLIENT, 2, -1),
    (b"Hello", ResourceType.R_CONSOLE, 1, 4),
)


@remembered()
def detect_peer(payload: bytes) -> PeerInfo:
    """Peer type, name and console version from a Hello, the way a daemon's
    accept handler reads them before it decides on TLS.

    The first matching prefix wins; the line is split at spaces; the name is
    unbashed.  A Hello too short to hold the name, or a console Hello whose
    version word is not ``major.minor...``, is refused with
    ``BNET_TERMINATE``.
    """
    nul = payload.find(b"\x00")
    line = payload if nul < 0 else payload[:nul]
    for prefix, rtype, name_at, version_at in _DETECT:
        if line.startswith(prefix):
            break
    else:
        raise _refuse(f"not a Hello: {payload[:100]!r}")
    words = line.split(b" ")
    if len(words) <= name_at:
        raise _refuse("Failed to retrieve the name from hello message")
    name = words[name_at].rstrip(b"\r\n")
    if not name:
        raise _refuse("empty name in Hello")
    protocol = None
    if version_at >= 0 and len(words) > version_at and words[version_at]:
        protocol = _console_protocol(words[version_at])
        if protocol is None:
            raise _refuse(f"UA Hello is invalid. Got: {payload[:100]!r}")
    return PeerInfo(rtype, unbash(name), protocol)
