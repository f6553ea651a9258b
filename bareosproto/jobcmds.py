"""The Director's job setup commands that steer the data channels, and their replies.

Builders and parsers, sans-IO.  Every parser reads a line the way the
receiving daemon does (Bareos' ``bsscanf`` with the daemon's own format,
longest form first) and every builder writes it the way the Director does
(PROTOCOL.md 7.5, 7.6, 7.7, 7.8, 10.2)::

    Director -> FD   JobId=%s Job=%s SDid=%u SDtime=%u Authorization=%s[ ssl=%u]\\n
                     storage address=%s port=%u ssl=%u[ Authorization=%s]\\n
                     setauthorization Authorization=%s\\n
    Director -> SD   JobId=%s job=%s job_name=%s client_name=%s type=%d ... BackupFormat=%s\\n
                     passive client address=%s port=%u ssl=%u\\n
                     replicate JobId=%u Job=%s address=%s port=%u ssl=%u Authorization=%s\\n
                     listen        (no newline)
                     run           (no newline)

and the answers ``2000 OK Job ...`` (no newline), ``3000 OK Job SDid=%u
SDtime=%u Authorization=%s\\n``, ``2000 OK storage\\n``, ``2000 OK passive
client\\n`` (a ``2000`` code from the SD), ``3000 OK replicate\\n``,
``2000 OK Authorization\\n``.

A line a daemon refuses raises :class:`~bareosproto.errors.RemoteProtocolError`
whose ``reply`` is the framed line that daemon sends back (``2901 Bad Job\\n``,
``2902 Bad storage\\n``, ``3915 Bad Job command. stat=-1 CMD: ...``,
``3991 Bad passive client command: ...`` ...).

Session keys travel as :class:`~bareosproto.keys.Secret` (``dummy`` when the
Director has none).  Names the Director bashes (``job_name``,
``client_name``, ``FileSet``, ``BackupFormat``) are unbashed by the parser;
unique job names never contain spaces.
"""

from __future__ import annotations

import enum
import re
from typing import ClassVar, Union

import attrs

from .errors import LocalProtocolError, RemoteProtocolError
from .frames import encode_message
from .keys import Secret
from .names import bash, unbash
from .scan import bsscanf

__all__ = [
    "bad_command_line",
    "FdJobCommand",
    "FdJobOk",
    "SdJobCommand",
    "SdJobOk",
    "StorageCommand",
    "SetAuthorizationCommand",
    "PassiveClientCommand",
    "ReplicateCommand",
    "ListenCommand",
    "RunCommand",
    "SetupReply",
    "SetupCommand",
    "parse_fd_command",
    "parse_sd_command",
    "parse_setup_reply",
    "NONE_NAME",
    "DUMMY_MD5",
]

#: What the Director sends for a missing name (``job_name``, ``FileSet`` ...).
NONE_NAME = "**None**"
#: The ``FileSetMD5`` of a job without a fileset digest.
DUMMY_MD5 = "**Dummy**"


def _refuse(message: str, line: bytes) -> RemoteProtocolError:
    return RemoteProtocolError(message, reply=encode_message(line))


def _token(value: str, what: str) -> bytes:
    """A ``%s`` field: one non-empty word without whitespace or control bytes."""
    raw = value.encode("utf-8")
    if not raw or any(b <= 0x20 or b == 0x7F for b in raw):
        raise LocalProtocolError(f"{what} must be one word without spaces: {value!r}")
    return raw


def _key(key: Secret | str) -> Secret:
    return key if isinstance(key, Secret) else Secret(key)


def _key_token(key: Secret) -> bytes:
    raw = key.reveal()
    if not raw or any(b <= 0x20 or b == 0x7F for b in raw):
        raise LocalProtocolError("an Authorization key is one word without spaces")
    return raw


def _text(raw: int | bytes) -> str:
    assert isinstance(raw, bytes)
    return raw.decode("utf-8", "surrogateescape")


def _int(raw: int | bytes) -> int:
    assert isinstance(raw, int)
    return raw


def _raw(raw: int | bytes) -> bytes:
    assert isinstance(raw, bytes)
    return raw


def _secret(raw: int | bytes) -> Secret:
    return Secret(_raw(raw))


def _c_int64(raw: bytes) -> int:
    """``str_to_int64()``: optional sign and leading digits, 0 if none."""
    m = re.match(rb"[ \t]*([+-]?)(\d*)", raw)
    assert m is not None
    value = int(m.group(2)) if m.group(2) else 0
    return -value if m.group(1) == b"-" else value


# -- Director -> FD ------------------------------------------------------------


@attrs.frozen
class FdJobCommand:
    """``JobId=%s Job=%s SDid=%u SDtime=%u Authorization=%s[ ssl=%u]\\n`` (Director -> FD).

    ``sd_id``/``sd_time`` are the SD's VolSessionId/VolSessionTime from its
    ``3000 OK Job`` reply, ``authorization`` the job session key the FD and
    SD authenticate the data channel with.  ``ssl`` is sent to clients that
    did a TLS-first handshake (Bareos >= 18.2: 4 = TLS-PSK with the ``R_JOB``
    identity, 0 = cleartext); ``None`` is the old form without it.  FD reply:
    :class:`FdJobOk`; refusal ``2901 Bad Job\\n``.
    """

    PREFIX: ClassVar[bytes] = b"JobId="
    _SSL: ClassVar[bytes] = b"JobId=%lu Job=%127s SDid=%lu SDtime=%lu Authorization=%100s ssl=%lu\n"
    _PLAIN: ClassVar[bytes] = b"JobId=%lu Job=%127s SDid=%lu SDtime=%lu Authorization=%100s"

    job_id: int
    job: str
    sd_id: int
    sd_time: int
    authorization: Secret = attrs.field(converter=_key)
    ssl: int | None = None

    def to_bytes(self) -> bytes:
        line = b"JobId=%d Job=%s SDid=%d SDtime=%d Authorization=%s" % (
            self.job_id, _token(self.job, "a job name"), self.sd_id, self.sd_time,
            _key_token(self.authorization),
        )
        if self.ssl is not None:
            line += b" ssl=%d" % self.ssl
        return line + b"\n"

    @classmethod
    def parse(cls, payload: bytes) -> FdJobCommand:
        """``JobCommand`` of the FD (``filed/evaluate_job_command.cc``): with ``ssl=`` first."""
        ssl: int | None = None
        values = bsscanf(payload, cls._SSL)
        if values is not None:
            ssl = _int(values[5])
        else:
            values = bsscanf(payload, cls._PLAIN)
            if values is None:
                raise _refuse(f"Bad Job Command: {payload[:200]!r}", b"2901 Bad Job\n")
        return cls(_int(values[0]), _text(values[1]), _int(values[2]), _int(values[3]),
                   _secret(values[4]), ssl)


@attrs.frozen
class FdJobOk:
    """``2000 OK Job <version> (<short date>) <os info>,<platform>`` (no newline).

    The Director only checks the ``2000 OK Job`` prefix and keeps the rest
    as the client's uname.
    """

    version: str
    short_date: str
    os_info: str
    platform: str

    _FORM: ClassVar[re.Pattern[bytes]] = re.compile(rb"2000 OK Job (\S+) \(([^)]*)\) (.*),([^,]*)", re.S)

    def to_bytes(self) -> bytes:
        return f"2000 OK Job {self.version} ({self.short_date}) {self.os_info},{self.platform}".encode()

    @classmethod
    def parse(cls, payload: bytes) -> FdJobOk:
        m = cls._FORM.fullmatch(payload)
        if m is None:
            raise RemoteProtocolError(f"not a 2000 OK Job reply: {payload[:200]!r}")
        version, date, os_info, platform = (g.decode("utf-8", "surrogateescape") for g in m.groups())
        return cls(version, date, os_info, platform)


@attrs.frozen
class StorageCommand:
    """``storage address=%s port=%u ssl=%u[ Authorization=%s]\\n`` (Director -> FD).

    Tells an active FD where its SD is.  Backups send it without
    ``Authorization`` (the key came with ``JobId=``); restores and verifies
    carry the current session key.  The FD connects, authenticates and
    answers ``2000 OK storage\\n``; a line it cannot parse, or an SD it cannot
    reach, gets ``2902 Bad storage\\n``.
    """

    PREFIX: ClassVar[bytes] = b"storage "
    _V1: ClassVar[bytes] = b"storage address=%s port=%d ssl=%d Authorization=%100s"
    _V0: ClassVar[bytes] = b"storage address=%s port=%d ssl=%d"

    address: str
    port: int
    ssl: int
    authorization: Secret | None = attrs.field(
        default=None, converter=attrs.converters.optional(_key)
    )

    def to_bytes(self) -> bytes:
        line = b"storage address=%s port=%d ssl=%d" % (_token(self.address, "an address"), self.port, self.ssl)
        if self.authorization is not None:
            line += b" Authorization=" + _key_token(self.authorization)
        return line + b"\n"

    @classmethod
    def parse(cls, payload: bytes) -> StorageCommand:
        values = bsscanf(payload, cls._V1)
        if values is not None:
            return cls(_text(values[0]), _int(values[1]), _int(values[2]), _secret(values[3]))
        values = bsscanf(payload, cls._V0)
        if values is None:
            raise _refuse(f"Bad storage command: {payload[:200]!r}", b"2902 Bad storage\n")
        return cls(_text(values[0]), _int(values[1]), _int(values[2]))


@attrs.frozen
class SetAuthorizationCommand:
    """``setauthorization Authorization=%s\\n`` (Director -> passive FD, restores).

    Answer ``2000 OK Authorization\\n``; refusal ``2902 Bad setauthorization\\n``.
    """

    PREFIX: ClassVar[bytes] = b"setauthorization"
    _FORMAT: ClassVar[bytes] = b"setauthorization Authorization=%100s"

    authorization: Secret = attrs.field(converter=_key)

    def to_bytes(self) -> bytes:
        return b"setauthorization Authorization=" + _key_token(self.authorization) + b"\n"

    @classmethod
    def parse(cls, payload: bytes) -> SetAuthorizationCommand:
        values = bsscanf(payload, cls._FORMAT)
        if values is None:
            raise _refuse(f"Bad setauthorization command: {payload[:200]!r}", b"2902 Bad setauthorization\n")
        return cls(_secret(values[0]))


# -- Director -> SD ------------------------------------------------------------


def _bashed(value: str) -> bytes:
    return bash(value)


@attrs.frozen
class SdJobCommand:
    """The job command that opens every Director -> SD job session (PROTOCOL.md 7.5 step 6).

    ``job`` is the unique job name; ``job_name``, ``client_name``,
    ``fileset`` and ``backup_format`` are bashed on the wire (``**None**``
    when missing); ``job_type``/``level`` are the ASCII codes of the job
    type and level letters (66 = ``B``, 70 = ``F``); ``fileset_md5`` may be
    ``**Dummy**``.  Answer :class:`SdJobOk`; a line the SD cannot scan gets
    ``3915 Bad Job command. stat=-1 CMD: <the line>\\n``.
    """

    PREFIX: ClassVar[bytes] = b"JobId="
    _FORMAT: ClassVar[bytes] = (
        b"JobId=%d job=%127s job_name=%127s client_name=%127s "
        b"type=%d level=%d FileSet=%127s NoAttr=%d SpoolAttr=%d FileSetMD5=%127s "
        b"SpoolData=%d PreferMountedVols=%d SpoolSize=%127s "
        b"rerunning=%d VolSessionId=%d VolSessionTime=%d Quota=%llu "
        b"Protocol=%d BackupFormat=%127s\n"
    )

    job_id: int
    job: str
    job_name: str
    client_name: str
    job_type: int
    level: int
    fileset: str = NONE_NAME
    no_attr: int = 0
    spool_attr: int = 0
    fileset_md5: str = DUMMY_MD5
    spool_data: int = 0
    prefer_mounted_vols: int = 1
    spool_size: int = 0
    rerunning: int = 0
    vol_session_id: int = 0
    vol_session_time: int = 0
    quota: int = 0
    protocol: int = 0
    backup_format: str = "Native"

    def to_bytes(self) -> bytes:
        return (
            b"JobId=%d job=%s job_name=%s client_name=%s type=%d level=%d FileSet=%s "
            b"NoAttr=%d SpoolAttr=%d FileSetMD5=%s SpoolData=%d PreferMountedVols=%d "
            b"SpoolSize=%d rerunning=%d VolSessionId=%d VolSessionTime=%d Quota=%d "
            b"Protocol=%d BackupFormat=%s\n"
            % (
                self.job_id, _token(self.job, "a unique job name"), _bashed(self.job_name),
                _bashed(self.client_name), self.job_type, self.level, _bashed(self.fileset),
                self.no_attr, self.spool_attr, _token(self.fileset_md5, "FileSetMD5"),
                self.spool_data, self.prefer_mounted_vols, self.spool_size, self.rerunning,
                self.vol_session_id, self.vol_session_time, self.quota, self.protocol,
                _bashed(self.backup_format),
            )
        )

    @classmethod
    def parse(cls, payload: bytes) -> SdJobCommand:
        """``job_cmd()`` of the SD (``stored/job.cc``): all 19 fields or the 3915 refusal."""
        v = bsscanf(payload, cls._FORMAT)
        if v is None:
            # bsscanf() returns -1 on any mismatch; the SD echoes the line it got
            raise _refuse(f"Bad Job command: {payload[:200]!r}",
                          b"3915 Bad Job command. stat=-1 CMD: " + payload.split(b"\0")[0] + b"\n")
        return cls(
            job_id=_int(v[0]), job=_text(v[1]), job_name=unbash(_raw(v[2])),
            client_name=unbash(_raw(v[3])), job_type=_int(v[4]), level=_int(v[5]),
            fileset=unbash(_raw(v[6])), no_attr=_int(v[7]), spool_attr=_int(v[8]),
            fileset_md5=_text(v[9]), spool_data=_int(v[10]), prefer_mounted_vols=_int(v[11]),
            spool_size=_c_int64(_raw(v[12])), rerunning=_int(v[13]),
            vol_session_id=_int(v[14]) & 0xFFFFFFFF, vol_session_time=_int(v[15]) & 0xFFFFFFFF,
            quota=_int(v[16]), protocol=_int(v[17]), backup_format=unbash(_raw(v[18])),
        )


@attrs.frozen
class SdJobOk:
    """``3000 OK Job SDid=%u SDtime=%u Authorization=%s\\n`` (SD -> Director).

    ``sd_id`` is the job's VolSessionId, ``sd_time`` the SD's VolSessionTime
    (its start time), ``authorization`` the fresh session key.
    """

    _FORMAT: ClassVar[bytes] = b"3000 OK Job SDid=%lu SDtime=%lu Authorization=%100s\n"

    sd_id: int
    sd_time: int
    authorization: Secret = attrs.field(converter=_key)

    def to_bytes(self) -> bytes:
        return b"3000 OK Job SDid=%d SDtime=%d Authorization=%s\n" % (
            self.sd_id, self.sd_time, _key_token(self.authorization))

    @classmethod
    def parse(cls, payload: bytes) -> SdJobOk:
        values = bsscanf(payload, cls._FORMAT)
        if values is None:
            raise RemoteProtocolError(f"not a 3000 OK Job reply: {payload[:200]!r}")
        return cls(_int(values[0]), _int(values[1]), _secret(values[2]))


@attrs.frozen
class PassiveClientCommand:
    """``passive client address=%s port=%u ssl=%u\\n`` (Director -> SD).

    The SD connects to the (passive) FD at ``address:port`` and answers
    ``2000 OK passive client\\n``; a line it cannot scan, or an FD it cannot
    reach or authenticate, gets ``3991 Bad passive client command: <line>\\n``.
    """

    PREFIX: ClassVar[bytes] = b"passive"
    _FORMAT: ClassVar[bytes] = b"passive client address=%s port=%d ssl=%d"

    address: str
    port: int
    ssl: int

    def to_bytes(self) -> bytes:
        return b"passive client address=%s port=%d ssl=%d\n" % (
            _token(self.address, "an address"), self.port, self.ssl)

    @classmethod
    def parse(cls, payload: bytes) -> PassiveClientCommand:
        values = bsscanf(payload, cls._FORMAT)
        if values is None:
            raise _refuse(f"Bad passiveclientcmd command: {payload[:200]!r}",
                          bad_command_line("passive client", payload))
        return cls(_text(values[0]), _int(values[1]), _int(values[2]))


@attrs.frozen
class ReplicateCommand:
    """``replicate JobId=%u Job=%s address=%s port=%u ssl=%u Authorization=%s\\n`` (Director -> reading SD).

    JobId, job name, session key and TLS need are those of the *writing*
    SD's job; the reading SD connects there, authenticates and answers
    ``3000 OK replicate\\n``; refusal ``3991 Bad replicate command: <line>\\n``.
    """

    PREFIX: ClassVar[bytes] = b"replicate"
    _FORMAT: ClassVar[bytes] = (
        b"replicate JobId=%lu Job=%127s address=%s port=%d ssl=%lu Authorization=%100s"
    )

    job_id: int
    job: str
    address: str
    port: int
    ssl: int
    authorization: Secret = attrs.field(converter=_key)

    def to_bytes(self) -> bytes:
        return b"replicate JobId=%d Job=%s address=%s port=%d ssl=%d Authorization=%s\n" % (
            self.job_id, _token(self.job, "a job name"), _token(self.address, "an address"),
            self.port, self.ssl, _key_token(self.authorization))

    @classmethod
    def parse(cls, payload: bytes) -> ReplicateCommand:
        values = bsscanf(payload, cls._FORMAT)
        if values is None:
            raise _refuse(f"Bad replicate command: {payload[:200]!r}", bad_command_line("replicate", payload))
        return cls(_int(values[0]), _text(values[1]), _text(values[2]), _int(values[3]), _int(values[4]),
                   _secret(values[5]))


@attrs.frozen
class ListenCommand:
    """``listen`` (no newline): the writing SD of a copy waits for the reading SD."""

    PREFIX: ClassVar[bytes] = b"listen"

    def to_bytes(self) -> bytes:
        return b"listen"

    @classmethod
    def parse(cls, payload: bytes) -> ListenCommand:
        if not payload.startswith(cls.PREFIX):
            raise RemoteProtocolError(f"not a listen command: {payload[:200]!r}")
        return cls()


@attrs.frozen
class RunCommand:
    """``run`` (no newline): start the job in the SD."""

    PREFIX: ClassVar[bytes] = b"run"

    def to_bytes(self) -> bytes:
        return b"run"

    @classmethod
    def parse(cls, payload: bytes) -> RunCommand:
        if not payload.startswith(cls.PREFIX):
            raise RemoteProtocolError(f"not a run command: {payload[:200]!r}")
        return cls()


def bad_command_line(what: str, payload: bytes) -> bytes:
    """``3991 Bad %s command: %s\\n`` with the SD's copy of the line (its own newline kept)."""
    return b"3991 Bad " + what.encode() + b" command: " + payload.split(b"\0")[0] + b"\n"


SetupCommand = Union[
    FdJobCommand, StorageCommand, SetAuthorizationCommand, SdJobCommand,
    PassiveClientCommand, ReplicateCommand, ListenCommand, RunCommand,
]

# Prefix tables as the daemons match them (``bstrncmp`` of the table entry,
# first match in table order); only the commands of this module are listed.
_FD_TABLE: tuple[tuple[bytes, type[FdJobCommand | SetAuthorizationCommand | StorageCommand]], ...] = (
    (b"JobId=", FdJobCommand),
    (b"setauthorization", SetAuthorizationCommand),
    (b"storage ", StorageCommand),
)
_SD_TABLE: tuple[tuple[bytes, type[SdJobCommand | ListenCommand | PassiveClientCommand
                                   | ReplicateCommand | RunCommand]], ...] = (
    (b"JobId=", SdJobCommand),
    (b"listen", ListenCommand),
    (b"passive", PassiveClientCommand),
    (b"replicate", ReplicateCommand),
    (b"run", RunCommand),
)


def parse_fd_command(payload: bytes) -> FdJobCommand | SetAuthorizationCommand | StorageCommand | None:
    """A Director -> FD line as the FD dispatches it; ``None`` if it is none of ours.

    Raises :class:`RemoteProtocolError` (with the FD's refusal as ``reply``)
    for a line that starts like one of them but does not scan.
    """
    for prefix, cls in _FD_TABLE:
        if payload.startswith(prefix):
            return cls.parse(payload)
    return None


def parse_sd_command(
    payload: bytes,
) -> SdJobCommand | ListenCommand | PassiveClientCommand | ReplicateCommand | RunCommand | None:
    """A Director -> SD line as the SD dispatches it; ``None`` if it is none of ours."""
    for prefix, cls in _SD_TABLE:
        if payload.startswith(prefix):
            return cls.parse(payload)
    return None


class SetupReply(enum.Enum):
    """The fixed answers to the setup commands (value: the exact line)."""

    STORAGE_OK = b"2000 OK storage\n"
    STORAGE_END_OK = b"2000 OK storage end\n"
    AUTHORIZATION_OK = b"2000 OK Authorization\n"
    PASSIVE_CLIENT_OK = b"2000 OK passive client\n"  #: the SD answers with a 2000 code
    REPLICATE_OK = b"3000 OK replicate\n"
    BAD_JOB = b"2901 Bad Job\n"
    BAD_STORAGE = b"2902 Bad storage\n"
    BAD_SETAUTHORIZATION = b"2902 Bad setauthorization\n"

    @property
    def line(self) -> bytes:
        value = self.value
        assert isinstance(value, bytes)
        return value

    def to_bytes(self) -> bytes:
        return self.line


_REPLIES = {r.line: r for r in SetupReply}


def parse_setup_reply(payload: bytes) -> SetupReply | SdJobOk | FdJobOk:
    """One of the answers above; anything else is a :class:`RemoteProtocolError`.

    The fixed lines are compared byte for byte, as the Director does
    (``response()`` / ``bstrcmp``); the job replies are scanned.
    """
    fixed = _REPLIES.get(payload)
    if fixed is not None:
        return fixed
    if payload.startswith(b"3000 OK Job SDid="):
        return SdJobOk.parse(payload)
    if payload.startswith(b"2000 OK Job "):
        return FdJobOk.parse(payload)
    raise RemoteProtocolError(f"not a setup reply: {payload[:200]!r}")
