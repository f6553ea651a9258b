"""A Bareos installation on loopback, built from this library only, running real backups.

``python -m bareosproto.demo`` (or ``make demo``) starts, in one process on
ephemeral 127.0.0.1 ports, a Director, a Storage Daemon, an active File
Daemon, a passive File Daemon and a client-initiated File Daemon, a console
and a tray monitor, all with TLS-PSK unless ``--cleartext``.  Every byte goes
over real TCP connections through the library:

1. the client-initiated FD connects to the Director and waits in its pool;
   a console logs in and ``status dir`` shows it waiting;
2. job 1, active client: the Director opens a job on the SD (``JobId=...``
   -> ``3000 OK Job ... Authorization=<session key>``), then on the FD
   (``JobId=... Authorization=<key>``, level, fileset,
   ``storage address=... port=... ssl=...``); the FD opens the FD -> SD data
   channel with the session key (TLS-PSK identity ``R_JOB``) and answers
   ``2000 OK storage``; ``run`` to the SD, ``backup FileIndex=0`` to the FD,
   which streams every file (``append open session``, ``append data``,
   ``<FileIndex> <Stream> 0`` headers, data frames, EOD per stream,
   ``append end/close session``); the SD stores the files in its own folder;
3. job 2, passive client: ``passive client address=... port=... ssl=...`` to
   the SD, which connects to the FD (SD -> FD); the FD still sends the append
   commands and the data;
4. job 3, client-initiated: the Director takes the waiting connection for
   the job; the FD opens its next waiting connection, and ``status dir`` shows
   it;
5. the tray monitor polls the Director, the FD and the SD once.

It prints one line per connection (type, initiator, TLS version and cipher,
authentication result), the throughput of each job and a SHA-256 comparison
of every source file with every stored copy, and exits 0 only if every
connection authenticated, every copy matches and the pool showed the waiting
client before job 3 and a fresh connection after it.  ``--trace`` prints
every frame of every connection (one line each, data frames summarised).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import re
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IListeningPort, IPushProducer
from twisted.internet.task import deferLater, react
from zope.interface import implementer

from .. import (
    BAREOS_26,
    Message,
    ResourceType,
    Secret,
    Signal,
    SignalFrame,
    TlsPolicy,
    password_key,
)
from ..bareos_base64 import ALPHABET
from ..connection import ClientConnection, ConnectionType, Credentials, Daemon, ServerConfig
from ..console import CommandResult, UnknownCommand
from ..datachannel import SessionKind
from ..errors import RemoteProtocolError
from ..events import Event
from ..hello import HelloKind
from ..jobcmds import (
    FdJobCommand,
    FdJobOk,
    PassiveClientCommand,
    RunCommand,
    SdJobCommand,
    SdJobOk,
    SetAuthorizationCommand,
    SetupReply,
    StorageCommand,
    bad_command_line,
    parse_fd_command,
    parse_sd_command,
    parse_setup_reply,
)
from ..keys import new_session_key
from ..monitor import MonitorTarget
from ..routing import JobKind, Peer, Site, director_setup
from ..twisted import (
    BareosServerFactory,
    Channel,
    DaemonChannel,
    connect,
    fd_server_factory,
    sd_server_factory,
    server_endpoint,
)
from ..twisted.client_initiated import ClientInitiatedConnector, client_initiated_connection
from ..twisted.console import ConsoleServerSession, ConsoleSession
from ..twisted.datachannel import DataAnswerer, DataCommander, DataSink
from ..twisted.monitor import MonitorClient, MonitorService, monitor_connection
from ..twisted.pool import DirectorPoolFactory, WaitingConnectionPool, connect_client

DIRECTOR = "bareos-dir"
STORAGE = "demo-sd"
ACTIVE_FD = "demo-fd"
PASSIVE_FD = "passive-fd"
CI_FD = "ci-fd"
CONSOLE = "admin"
DEFAULT_CONSOLE = "*UserAgent*"
MONITOR = "tray-monitor"
#: a parsed command of the Director, FD or SD
C = TypeVar("C")
HOST = "127.0.0.1"

#: Every password as the configuration files would hold it, as keys (MD5 hex).
KEYS: dict[str, Secret] = {
    name: password_key(f"demo-{name}-password")
    for name in ("director", "console", "storage", ACTIVE_FD, PASSIVE_FD, CI_FD,
                 "monitor-dir", "monitor-fd", "monitor-sd")
}

STREAM_UNIX_ATTRIBUTES = 1
STREAM_FILE_DATA = 2
FT_REG = 3
CHUNK = 64 * 1024
JOB_TERMINATED = ord("T")
JOB_FATAL = ord("f")
TIMEOUT = 60.0  # the whole run

_TYPE_NAMES = {
    ConnectionType.CONSOLE: "console -> dir",
    ConnectionType.DIRECTOR_FD: "dir -> fd",
    ConnectionType.CLIENT_INITIATED: "fd -> dir, client-initiated",
    ConnectionType.DIRECTOR_SD: "dir -> sd",
    ConnectionType.FD_SD: "fd -> sd, data",
    ConnectionType.SD_FD_PASSIVE: "sd -> fd, data, passive",
    ConnectionType.MONITOR_DIRECTOR: "monitor -> dir",
    ConnectionType.MONITOR_FD: "monitor -> fd",
    ConnectionType.MONITOR_SD: "monitor -> sd",
}


class DemoError(Exception):
    """Something in the demo's conversation was not as Bareos would have it."""


# -- output -------------------------------------------------------------------------


def shown(payload: bytes, limit: int = 96) -> str:
    """A frame's payload on one line: control bytes escaped, cut at ``limit``."""
    out = payload.decode("latin-1").replace("\\", "\\\\").replace("\n", "\\n").replace("\x00", "\\0")
    out = re.sub(r"[\x00-\x1f\x7f-\xff]", lambda m: f"\\x{ord(m.group()):02x}", out)
    return out if len(out) <= limit else out[: limit - 3] + "..."


_SESSION_KEY = re.compile(rb"(Authorization=)[A-P]{4}(?:-[A-P]{4}){7}")


def _is_data(payload: bytes) -> bool:
    """Binary file data rather than a command, reply or attribute record."""
    sample = payload[:256]
    return bool(sample) and sum(b < 9 or 13 < b < 32 or b > 126 for b in sample) > len(sample) // 8


class FrameTracer:
    """``conn.trace`` of one connection: prints every frame, runs of data frames as one line."""

    def __init__(self, label: str) -> None:
        self.label = label
        self._run: tuple[str, int, int] | None = None  # direction, frames, bytes

    def __call__(self, direction: str, frame: Event) -> None:
        if isinstance(frame, Message) and _is_data(frame.payload):
            if self._run is not None and self._run[0] == direction:
                _, frames, size = self._run
                self._run = (direction, frames + 1, size + len(frame.payload))
            else:
                self.flush()
                self._run = (direction, 1, len(frame.payload))
            return
        self.flush()
        if isinstance(frame, Message):
            # the length is the real one; the job session key is not shown
            payload = _SESSION_KEY.sub(rb"\1<session key>", frame.payload)
            self._print(direction, f"{len(frame.payload):>5} {shown(payload)}")
        elif isinstance(frame, SignalFrame):
            self._print(direction, f"{'':>5} {frame.name}")

    def flush(self) -> None:
        if self._run is not None:
            direction, frames, size = self._run
            self._run = None
            self._print(direction, f"{'':>5} [{frames} data frame{'s' * (frames != 1)}, {size} bytes]")

    def _print(self, direction: str, text: str) -> None:
        arrow = "->" if direction == "send" else "<-"
        print(f"  | {self.label:<17} {arrow} {text}")


@dataclass
class Row:
    """One connection of the table."""

    conn_type: ConnectionType
    initiator: str
    acceptor: str
    tls: str = "-"
    cipher: str = "-"
    psk: str = "-"  #: the resource type of the TLS-PSK identity
    auth: str = "ok"
    note: str = ""
    ok: bool = True


def mb(size: int) -> str:
    return f"{size / 1e6:.2f} MB"


# -- the network: traced client connections, listening, the connection table ---------------


class Net:
    """What every daemon of the demo shares: the reactor, TLS on or off, tracing, the table."""

    def __init__(self, reactor: Any, tls: bool, trace: bool) -> None:
        self.reactor = reactor
        self.tls = tls
        self.trace = trace
        #: our ``ssl=`` everywhere: TLS Enable = yes (Require = yes), or TLS Enable = no
        self.policy = TlsPolicy.REQUIRED if tls else TlsPolicy.NONE
        self.rows: list[Row] = []
        self.ports: list[IListeningPort] = []
        self.factories: list[BareosServerFactory] = []

    def traced(self, label: str, make: Callable[[], ClientConnection]) -> Callable[[], ClientConnection]:
        if not self.trace:
            return make

        def make_traced() -> ClientConnection:
            conn = make()
            conn.trace = FrameTracer(label)
            return conn

        return make_traced

    def client(self, label: str, conn_type: ConnectionType, *, name: str, key: Secret, job: str | None = None,
               tls: bool | None = None) -> Callable[[], ClientConnection]:
        """How one of our daemons (or the console) connects; traced with ``--trace``."""
        use_tls = self.tls if tls is None else tls

        def make() -> ClientConnection:
            return ClientConnection(conn_type, name=name, key=key, job=job, clock=self.reactor.seconds,
                                    tls=use_tls, tls_policy=self.policy, release=BAREOS_26)

        return self.traced(label, make)

    async def connect(self, label: str, conn_type: ConnectionType, address: str, port: int, *, name: str,
                      key: Secret, initiator: str, acceptor: str, note: str, job: str | None = None,
                      tls: bool | None = None) -> Channel:
        """Connect, authenticate, and add the connection to the table (also when it failed)."""
        make = self.client(label, conn_type, name=name, key=key, job=job, tls=tls)
        try:
            channel = await connect(self.reactor, f"tcp:host={address}:port={port}", make,
                                    handshake_timeout=10)
        except Exception as exc:
            self.rows.append(Row(conn_type, initiator, acceptor, auth=f"FAILED: {exc}"[:60], note=note,
                                 ok=False))
            raise
        self.record(conn_type, initiator, acceptor, channel, note)
        return channel

    def record(self, conn_type: ConnectionType, initiator: str, acceptor: str, channel: Channel,
               note: str) -> Row:
        """A connection whose handshake completed on our (connecting) side, which means that both
        CRAM-MD5 challenges were answered and accepted."""
        handshake, tls = channel.handshake, channel.protocol.tls
        identity = tls.psk_identity if tls is not None else None
        row = Row(conn_type, initiator, acceptor, handshake.tls_version or "cleartext",
                  handshake.cipher or "-", identity.split("\x1e")[0] if identity else "-", note=note)
        self.rows.append(row)
        return row

    async def listen(self, factory: BareosServerFactory) -> int:
        port = await server_endpoint(self.reactor, f"tcp:0:interface={HOST}").listen(factory)
        self.ports.append(port)
        self.factories.append(factory)
        return int(port.getHost().port)  # type: ignore[attr-defined]  # an IPv4Address

    async def shutdown(self) -> None:
        for port in self.ports:
            stopping = port.stopListening()
            if stopping is not None:
                await stopping
        await deferLater(self.reactor, 0.05, lambda: None)  # let the last close_notify go out
        for factory in self.factories:
            for proto in list(factory.protocols):
                proto.abort()


def run_session(name: str, channel: DaemonChannel, session: Any) -> Deferred[None]:
    """Run a daemon's session coroutine; a failure is printed and closes the channel."""

    def failed(failure: Any) -> None:
        print(f"  ! {name}: {failure.getErrorMessage()}")
        channel.close()

    return Deferred.fromCoroutine(session).addErrback(failed)


async def next_command(channel: DaemonChannel, parse: Callable[[bytes], C]) -> tuple[bytes, C] | None:
    """The Director's next command line and what ``parse`` makes of it, skipping
    other signals; ``None`` ends the session: at ``BNET_TERMINATE``, or once a
    line ``parse`` rejects has been refused as the daemon refuses it."""
    while True:
        frame = await channel.read_command()
        if isinstance(frame, SignalFrame):
            if frame.signal == Signal.BNET_TERMINATE:
                return None
            continue
        try:
            return frame.payload, parse(frame.payload)
        except RemoteProtocolError as exc:
            channel.send_refusal(exc)
            return None


def status_reply(name: str, started: float, jobs: int) -> list[bytes]:
    start = time.strftime("%d-%b-%y %H:%M", time.localtime(started))
    return [f"{name} Version: {BAREOS_26.full} ({BAREOS_26.date}) bareosproto demo".encode(),
            f"Daemon started {start}. Jobs: run={jobs} running=0.".encode(),
            b"No Jobs running.", b"===="]


# -- the File Daemon -------------------------------------------------------------------------


def to_base64(value: int) -> str:
    """Bareos' ``ToBase64()`` of an integer (the attribute record's stat fields)."""
    if value < 0:
        return "-" + to_base64(-value)
    digits = ""
    while True:
        digits = chr(ALPHABET[value & 0x3F]) + digits
        value >>= 6
        if not value:
            return digits


def attributes_record(file_index: int, path: str, st: os.stat_result) -> bytes:
    """The ``STREAM_UNIX_ATTRIBUTES`` record, as in ``backup-clear``:
    ``<FileIndex> <type> <name>\\0<stat>\\0<link>\\0<extended attributes>\\0<delta seq>\\0``."""
    fields = (st.st_dev, st.st_ino, st.st_mode, st.st_nlink, st.st_uid, st.st_gid,
              getattr(st, "st_rdev", 0) or 0, st.st_size, getattr(st, "st_blksize", 0) or 0,
              getattr(st, "st_blocks", 0) or 0, int(st.st_atime), int(st.st_mtime), int(st.st_ctime),
              0, 0, STREAM_FILE_DATA)  # ..., LinkFI, st_flags, data stream
    encoded = " ".join(to_base64(v) for v in fields)
    return b"%d %d %s\0%s\0\0\0" % (file_index, FT_REG, path.encode(), encoded.encode()) + b"0\0"


def files_of(paths: Iterable[str]) -> Iterator[Path]:
    """The regular files of a fileset's ``F`` entries, in a stable order."""
    for entry in paths:
        top = Path(entry)
        if top.is_file():
            yield top
            continue
        for root, dirs, files in os.walk(top):
            dirs.sort()
            for name in sorted(files):
                yield Path(root, name)


@implementer(IPushProducer)
class FileStreamer:
    """Writes one file into a DataCommander as fast as the TCP transport takes it."""

    def __init__(self, commander: DataCommander, source: BinaryIO) -> None:
        self.commander = commander
        self.source = source
        self.sent = 0
        self.paused = False
        self.done: Deferred[int] = Deferred()

    def run(self) -> Deferred[int]:
        self.commander.registerProducer(self, True)
        self.resumeProducing()
        return self.done

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        while not self.paused and not self.done.called:
            chunk = self.source.read(CHUNK)
            if not chunk:
                self.commander.unregisterProducer()
                self.done.callback(self.sent)
                return
            self.sent += len(chunk)
            self.commander.write(chunk)

    def stopProducing(self) -> None:
        self.paused = True
        if not self.done.called:
            self.done.errback(DemoError("the data channel closed while a file was being sent"))


@dataclass
class FdJob:
    command: FdJobCommand
    paths: list[str] = field(default_factory=list)
    data: Deferred[DataCommander] = field(default_factory=Deferred)


class FileDaemon:
    """A File Daemon: takes jobs from the Director and streams the fileset to the SD."""

    def __init__(self, net: Net, name: str) -> None:
        self.net = net
        self.name = name
        self.jobs: dict[str, FdJob] = {}
        self.started = time.time()
        self.port = 0

    def factory(self) -> BareosServerFactory:
        """Its listening side: the Director, the tray monitor (``Monitor = yes``) and, for a
        passive client, the SD's data channel (by job name)."""
        return fd_server_factory(
            self.net.reactor, client_name=self.name,
            directors={DIRECTOR: Credentials(KEYS[self.name], self.net.policy),
                       MONITOR: Credentials(KEYS["monitor-fd"], self.net.policy)},
            jobs=self.job_credentials, on_channel=self.on_channel, tls=self.net.tls,
            own_tls_policy=self.net.policy)

    def job_credentials(self, job: str) -> Credentials | None:
        found = self.jobs.get(job)
        if found is None:
            return None
        ssl = found.command.ssl  # 4 (TLS-PSK) or 0, as the Director said in JobId=
        return Credentials(found.command.authorization, TlsPolicy(ssl) if ssl is not None else TlsPolicy.NONE)

    def on_channel(self, channel: DaemonChannel) -> None:
        hello = channel.handshake.hello
        if hello.kind is HelloKind.STORAGE_START_JOB:  # passive client: the SD connected
            job = self.jobs.get(hello.name)
            commander = DataCommander(channel.channel, SessionKind.FD_SD)
            if job is None or job.data.called:
                commander.close()
            else:
                job.data.callback(commander)
        elif hello.name == MONITOR:
            MonitorService(channel.channel, MonitorTarget.FD,
                           lambda _cmd, _line: status_reply(self.name, self.started, len(self.jobs)))
        else:
            self.serve(channel)

    def serve_channel(self, channel: Channel) -> Deferred[None]:
        """``on_job`` of the client-initiated connector: the Director took a waiting connection."""
        return self.serve(DaemonChannel(channel))

    def serve(self, channel: DaemonChannel) -> Deferred[None]:
        return run_session(self.name, channel, self.session(channel))

    async def session(self, channel: DaemonChannel) -> None:
        """The Director's commands, as ``filed/dir_cmd.cc`` answers them."""
        job: FdJob | None = None
        while (got := await next_command(channel, parse_fd_command)) is not None:
            line, command = got
            if isinstance(command, FdJobCommand):
                job = FdJob(command)
                self.jobs[command.job] = job
                uname = f"{platform.system()} {platform.release()}"
                ok = FdJobOk(BAREOS_26.full, BAREOS_26.short_date, uname, "bareosproto")
                channel.send_line(ok.to_bytes())
                continue
            if line.startswith((b"status", b".status")):
                channel.send_lines(status_reply(self.name, self.started, len(self.jobs)), nul=True)
                continue
            if job is None:
                channel.send_line(b"2999 Invalid command\n")
                break
            if isinstance(command, StorageCommand):
                try:
                    commander = await self.connect_storage(job, command)
                except Exception:
                    channel.send_line(SetupReply.BAD_STORAGE.line)
                    break
                job.data.callback(commander)
                channel.send_line(SetupReply.STORAGE_OK.line)
            elif isinstance(command, SetAuthorizationCommand):
                channel.send_line(SetupReply.AUTHORIZATION_OK.line)
            elif line.startswith(b"level = "):
                channel.send_line(b"2000 OK level\n")
            elif line.startswith(b"fileset"):
                job.paths = await self.read_fileset(channel)
                channel.send_line(b"2000 OK include\n")
            elif line.startswith(b"backup"):
                channel.send_line(b"2000 OK backup\n")
                files, size = await self.backup(await job.data, job.paths)
                channel.send_line(b"2800 End Job TermCode=%d JobFiles=%d ReadBytes=%d JobBytes=%d Errors=0 "
                                  b"VSS=0 Encrypt=0\n" % (JOB_TERMINATED, files, size, size))
                break
            else:
                channel.send_line(b"2999 Invalid command\n")
                break
        channel.terminate()  # BNET_TERMINATE and close, as the FD ends a job session

    @staticmethod
    async def read_fileset(channel: DaemonChannel) -> list[str]:
        """The include lines up to BNET_EOD; ``F <path>`` entries are what to back up."""
        paths: list[str] = []
        while True:
            frame = await channel.read_frame()
            if isinstance(frame, SignalFrame):
                if frame.signal == Signal.BNET_EOD:
                    return paths
                raise DemoError(f"{frame.name} in the fileset")
            if frame.payload.startswith(b"F "):
                paths.append(frame.payload[2:].rstrip(b"\n").decode())

    async def connect_storage(self, job: FdJob, command: StorageCommand) -> DataCommander:
        """The FD -> SD data channel of ``storage address=...``: ``ssl=4`` is TLS-PSK with ``R_JOB``."""
        cmd = job.command
        channel = await self.net.connect(
            f"fd->sd job {cmd.job_id}", ConnectionType.FD_SD, command.address, command.port, name=self.name,
            key=cmd.authorization, job=cmd.job, tls=command.ssl == TlsPolicy.AUTO, initiator=self.name,
            acceptor=STORAGE, note=f"job {cmd.job_id} data")
        return DataCommander(channel, SessionKind.FD_SD)

    @staticmethod
    async def backup(commander: DataCommander, paths: list[str]) -> tuple[int, int]:
        """One append session: per file an attributes stream and a data stream."""
        await commander.append_open()
        await commander.append_data()
        files = size = 0
        for path in files_of(paths):
            files += 1
            commander.send_header(files, STREAM_UNIX_ATTRIBUTES)
            commander.write(attributes_record(files, str(path), path.stat()))
            commander.end_stream()
            commander.send_header(files, STREAM_FILE_DATA)
            with path.open("rb") as source:
                size += await FileStreamer(commander, source).run()
            commander.end_stream()
        await commander.end_data()  # the final EOD: 3000 OK append data
        await commander.append_end()
        await commander.append_close()
        commander.finish()  # BNET_TERMINATE, and the FD closes first
        return files, size


# -- the Storage Daemon ----------------------------------------------------------------------


class StoringSink(DataSink):
    """Where the SD puts a job's data: each file under ``root`` at its original path.

    A record it cannot place (no attributes before the data, a name outside
    ``root``) fails the append: ``data_end()`` is false, the FD gets
    ``3999 Failed append``.  It writes each piece out or copies it at once,
    so it takes the data as views (no copy per frame before that).
    """

    accepts_views = True

    def __init__(self, root: Path) -> None:
        self.root = root
        self.stored: dict[str, Path] = {}  # original path -> stored copy
        self.files = 0
        self.bytes = 0
        self.failed = False
        self._by_index: dict[int, Path] = {}
        self._stream = 0
        self._index = 0
        self._attributes = bytearray()
        self._out: BinaryIO | None = None

    def stream_header(self, file_index: int, stream: int) -> None:
        self._index, self._stream = file_index, stream
        if stream == STREAM_UNIX_ATTRIBUTES:
            self._attributes.clear()
        elif stream == STREAM_FILE_DATA:
            target = self._by_index.get(file_index)
            if target is None:
                self.failed = True
            else:
                self._out = target.open("wb")

    def write(self, data: bytes | memoryview) -> None:  # a view: valid only during the call
        if self._stream == STREAM_FILE_DATA and self._out is not None:
            self._out.write(data)
            self.bytes += len(data)
        elif self._stream == STREAM_UNIX_ATTRIBUTES:
            self._attributes += data

    def stream_end(self) -> None:
        if self._stream == STREAM_UNIX_ATTRIBUTES:
            head = bytes(self._attributes).split(b"\0", 1)[0]
            _index, _type, name = head.split(b" ", 2)
            original = name.decode("utf-8", "surrogateescape")
            target = (self.root / original.lstrip("/")).resolve()
            if self.root.resolve() not in target.parents:  # "../" in the name
                self.failed = True
                return
            target.parent.mkdir(parents=True, exist_ok=True)
            target.touch()
            self._by_index[self._index] = target
            self.stored[original] = target
            self.files += 1
        elif self._out is not None:
            self._out.close()
            self._out = None

    def data_end(self) -> bool:
        return not self.failed


@dataclass
class SdJob:
    command: SdJobCommand
    key: Secret
    sd_id: int
    sink: StoringSink
    data: Deferred[DataAnswerer] = field(default_factory=Deferred)


class StorageDaemon:
    """A Storage Daemon: opens jobs for the Director and stores what the FDs send."""

    def __init__(self, net: Net, volume: Path) -> None:
        self.net = net
        self.volume = volume
        self.jobs: dict[str, SdJob] = {}
        self.started = time.time()
        self.port = 0

    def factory(self) -> BareosServerFactory:
        return sd_server_factory(
            self.net.reactor, storage_name=STORAGE,
            directors={DIRECTOR: Credentials(KEYS["storage"], self.net.policy),
                       MONITOR: Credentials(KEYS["monitor-sd"], self.net.policy)},
            jobs=self.job_credentials, on_channel=self.on_channel, tls=self.net.tls,
            own_tls_policy=self.net.policy)

    def job_credentials(self, name: str) -> Credentials | None:
        job = self.jobs.get(name)
        return Credentials(job.key, TlsPolicy.NONE) if job is not None else None

    def on_channel(self, channel: DaemonChannel) -> None:
        hello = channel.handshake.hello
        if hello.kind is HelloKind.START_JOB:  # an active FD's data channel
            job = self.jobs.get(hello.name)
            if job is None or job.data.called:
                channel.close()  # "Hey!!!! JobId ... already authenticated."
                return
            job.data.callback(DataAnswerer(channel.channel, SessionKind.FD_SD, ticket=job.sd_id,
                                           sink=job.sink))
        elif hello.name == MONITOR:
            MonitorService(channel.channel, MonitorTarget.SD,
                           lambda _cmd, _line: status_reply(STORAGE, self.started, len(self.jobs)))
        else:
            run_session(STORAGE, channel, self.session(channel))

    async def session(self, channel: DaemonChannel) -> None:
        """The Director's job session, as ``stored/dir_cmd.cc`` answers it."""
        job: SdJob | None = None
        while (got := await next_command(channel, parse_sd_command)) is not None:
            line, command = got
            if isinstance(command, SdJobCommand):
                key = new_session_key()
                sink = StoringSink(self.volume / f"job-{command.job_id}")
                job = SdJob(command, key, len(self.jobs) + 1, sink)
                self.jobs[command.job] = job
                channel.send_line(SdJobOk(job.sd_id, int(self.started), key).to_bytes())
            elif line.startswith((b"status", b".status")):
                channel.send_lines(status_reply(STORAGE, self.started, len(self.jobs)), nul=True)
            elif job is not None and isinstance(command, PassiveClientCommand):
                try:
                    answerer = await self.connect_passive_client(job, command)
                except Exception:
                    channel.send_line(bad_command_line("passive client", line))
                    break
                job.data.callback(answerer)
                channel.send_line(SetupReply.PASSIVE_CLIENT_OK.line)
            elif job is not None and isinstance(command, RunCommand):
                await self.run(channel, job)
                return
            else:
                channel.send_line(b"3900 Invalid command: " + line.split(b"\0")[0] + b"\n")
                break
        channel.terminate()

    async def connect_passive_client(self, job: SdJob, command: PassiveClientCommand) -> DataAnswerer:
        """The SD -> FD data channel of ``passive client ...``; the FD will still command it."""
        cmd = job.command
        channel = await self.net.connect(
            f"sd->fd job {cmd.job_id}", ConnectionType.SD_FD_PASSIVE, command.address, command.port,
            name=STORAGE, key=job.key, job=cmd.job, tls=command.ssl == TlsPolicy.AUTO, initiator=STORAGE,
            acceptor=cmd.client_name, note=f"job {cmd.job_id} data")
        return DataAnswerer(channel, SessionKind.FD_SD, ticket=job.sd_id, sink=job.sink)

    @staticmethod
    async def run(channel: DaemonChannel, job: SdJob) -> None:
        """``run``: the job starts, the data arrives, the SD reports the end and leaves."""
        name = job.command.job.encode()
        channel.send_line(b"3010 Job %s start\n" % name)
        status, errors = JOB_TERMINATED, 0
        try:
            await (await job.data).when_done()
        except Exception:
            status, errors = JOB_FATAL, 1
        sink = job.sink
        channel.send_line(b"3099 Job %s end JobStatus=%d JobFiles=%d JobBytes=%d JobErrors=%d\n"
                          % (name, status, sink.files, sink.bytes, errors))
        for signal in (Signal.BNET_EOD, Signal.BNET_TERMINATE, Signal.BNET_EOD):
            channel.send_signal(signal)
        channel.terminate()


# -- the Director ----------------------------------------------------------------------------


@dataclass
class Client:
    """A Client resource of the Director."""

    name: str
    mode: str  # "active", "passive", "client-initiated"
    port: int = 0


@dataclass
class JobReport:
    job_id: int
    client: Client
    job: str = ""
    files: int = 0
    size: int = 0
    seconds: float = 0.0
    ok: bool = False
    error: str = ""
    taken: Channel | None = None  # the waiting connection a client-initiated job used


_SKIPPED = (b"Jmsg ", b"Status Job=", b"CatReq ", b"UpdCat ")  # PROTOCOL.md 15 item 27


async def expect(channel: DaemonChannel, prefix: bytes) -> bytes:
    """The next reply line, which must start with ``prefix`` (job messages are skipped)."""
    while True:
        frames = await channel.read_reply()
        last: Message | SignalFrame = frames[-1]
        if isinstance(last, SignalFrame):
            raise DemoError(f"{last.name} while waiting for {prefix.decode()!r}")
        payload: bytes = last.payload
        if payload.startswith(_SKIPPED):
            continue
        if not payload.startswith(prefix):
            raise DemoError(f"expected {prefix.decode()!r}, got {shown(payload, 70)!r}")
        return payload


async def until_terminate(channel: DaemonChannel) -> None:
    while True:
        frame = await channel.read_frame()
        if isinstance(frame, SignalFrame) and frame.signal == Signal.BNET_TERMINATE:
            return


class Director:
    """A Director: consoles, the tray monitor, a pool of client-initiated FDs, and backup jobs."""

    def __init__(self, net: Net, storage_port: int, source: Path) -> None:
        self.net = net
        self.storage = Site(HOST, storage_port, tls=net.tls)
        self.source = source
        self.started = time.time()
        self.jobs = 0
        self.pool = WaitingConnectionPool(net.reactor)
        policy = net.policy
        table = {
            (ResourceType.R_CONSOLE, CONSOLE): Credentials(KEYS["console"], policy),
            (ResourceType.R_CONSOLE, DEFAULT_CONSOLE): Credentials(KEYS["director"], policy),
            (ResourceType.R_CONSOLE, MONITOR): Credentials(KEYS["monitor-dir"], policy),
            (ResourceType.R_CLIENT, CI_FD): Credentials(KEYS[CI_FD], policy),
        }
        config = ServerConfig(daemon=Daemon.DIRECTOR, name=DIRECTOR, lookup=lambda t, n: table.get((t, n)),
                              tls=net.tls, own_tls_policy=policy)
        self.factory = DirectorPoolFactory(config, net.reactor, self.pool, self.on_console)

    # -- consoles and the monitor ------------------------------------------------------------

    def on_console(self, channel: Channel) -> None:
        if channel.handshake.hello.name == MONITOR:
            MonitorService(channel, MonitorTarget.DIRECTOR, self.monitor_status, allowed=("status",))
        else:
            ConsoleServerSession(channel, self.handle)

    def header(self) -> list[str]:
        start = time.strftime("%d-%b-%y %H:%M", time.localtime(self.started))
        return [f"{DIRECTOR} Version: {BAREOS_26.full} ({BAREOS_26.date}) bareosproto demo\n",
                f"Daemon started {start}. Jobs: run={self.jobs}, running=0 bareosproto\n",
                "No Scheduled Jobs.\n", "====\n"]

    def handle(self, command: str, session: ConsoleServerSession) -> object:
        words = command.split()
        if words[:1] == ["version"]:
            return self.header()[0]
        if words[:1] == ["status"] and words[1:2] in ([], ["dir"], ["director"]):
            messages: list[str | bytes] = [*self.header()]
            messages += self.pool.status_frames(int(session.api_mode))
            return CommandResult(messages=tuple(messages), json=self.pool.status_json())
        raise UnknownCommand(words[0] if words else "")

    def monitor_status(self, _command: str, _line: bytes) -> list[bytes]:
        lines = [line.rstrip("\n").encode() for line in self.header()]
        return lines + self.pool.status_text().strip(b"\n").split(b"\n")

    # -- jobs --------------------------------------------------------------------------------

    async def backup(self, client: Client) -> JobReport:
        """A full backup of ``client``, in the order Bareos uses (PROTOCOL.md 15 items 9, 10, 19)."""
        self.jobs += 1
        n = self.jobs
        report = JobReport(n, client)
        job = report.job = f"backup-{client.name}.{time.strftime('%Y-%m-%d_%H.%M.%S')}_{n:02d}"
        sd: DaemonChannel | None = None
        fd: DaemonChannel | None = None
        try:
            sd = DaemonChannel(await self.net.connect(
                f"dir->sd job {n}", ConnectionType.DIRECTOR_SD, HOST, self.storage.port, name=DIRECTOR,
                key=KEYS["storage"], initiator=DIRECTOR, acceptor=STORAGE, note=f"job {n}"))
            sd.send_command(SdJobCommand(n, job, f"backup-{client.name}", client.name, ord("B"), ord("F"),
                                         fileset="demo-fileset").to_bytes())
            ok = SdJobOk.parse(await expect(sd, b"3000 OK Job "))
            if client.mode == "client-initiated":
                got = await connect_client(self.pool, client.name, dial=None, timeout=5.0)
                report.taken = got.channel
                fd = DaemonChannel(got.channel)
            else:
                fd = DaemonChannel(await self.net.connect(
                    f"dir->fd job {n}", ConnectionType.DIRECTOR_FD, HOST, client.port, name=DIRECTOR,
                    key=KEYS[client.name], initiator=DIRECTOR, acceptor=client.name, note=f"job {n}"))
            # TLS-first clients get ssl= (4: the data channel uses TLS-PSK); cleartext ones none
            ssl = int(TlsPolicy.AUTO) if self.net.tls else None
            fd.send_command(FdJobCommand(n, job, ok.sd_id, ok.sd_time, ok.authorization, ssl).to_bytes())
            FdJobOk.parse(await expect(fd, b"2000 OK Job "))
            fd.send_command(b"level = full  mtime_only=0 \n")
            await expect(fd, b"2000 OK level\n")
            # the fileset as recorded, without an options block; F lines carry no newline
            for line in (b"fileset vss=1\n", b"I\n", b"F " + str(self.source).encode(), b"N\n", b"N\n"):
                fd.send_command(line)
            fd.send_signal(Signal.BNET_EOD)
            await expect(fd, b"2000 OK include\n")
            client_site = Site(HOST, client.port, tls=self.net.tls)
            for step in director_setup(JobKind.BACKUP, client_site, self.storage,
                                       passive=client.mode == "passive"):
                # (after "passive client" Bareos sleeps 2 s before it reads the reply; not here)
                target = fd if step.to is Peer.FD else sd
                target.send_command(step.command.to_bytes())
                if isinstance(step.command, RunCommand):
                    await expect(sd, b"3010 Job ")
                else:
                    reply = parse_setup_reply(await expect(target, b""))
                    if reply not in (SetupReply.STORAGE_OK, SetupReply.PASSIVE_CLIENT_OK):
                        raise DemoError(f"{step.command.to_bytes()!r} was answered {reply}")
            started = time.perf_counter()
            fd.send_command(b"backup FileIndex=0\n")
            await expect(fd, b"2000 OK backup\n")
            end = await expect(fd, b"2800 End Job ")
            report.seconds = time.perf_counter() - started
            await until_terminate(fd)
            fields = dict(re.findall(rb"(\w+)=(\d+)", end))
            report.files, report.size = int(fields[b"JobFiles"]), int(fields[b"JobBytes"])
            sd_end = await expect(sd, b"3099 Job ")
            await until_terminate(sd)
            sd_fields = dict(re.findall(rb"(\w+)=(\d+)", sd_end))
            if int(sd_fields[b"JobStatus"]) != JOB_TERMINATED or int(sd_fields[b"JobBytes"]) != report.size:
                raise DemoError(f"the SD reports {shown(sd_end, 80)}")
            report.ok = True
        except Exception as exc:
            report.error = f"{type(exc).__name__}: {exc}"
        finally:
            for channel in (fd, sd):
                if channel is not None:
                    channel.close()
        return report


# -- the demo --------------------------------------------------------------------------------


FILES = (("alpha.bin", 0.40), ("beta.bin", 0.25), ("docs/gamma.bin", 0.20), ("docs/deep/delta.bin", 0.10),
         ("docs/epsilon.bin", 0.05))


def make_source(root: Path, size: int) -> list[Path]:
    """A folder of files of random bytes, ``size`` bytes in all."""
    paths = []
    left = size
    for i, (name, share) in enumerate(FILES):
        n = left if i == len(FILES) - 1 else max(1, int(size * share))
        left -= n
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as out:
            written = 0
            while written < n:
                block = os.urandom(min(1 << 20, n - written))
                out.write(block)
                written += len(block)
        paths.append(path)
    return paths


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as source:
        while block := source.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def pool_section(lines: Iterable[str]) -> list[str]:
    """The waiting-connection table of a ``status dir`` reply."""
    out: list[str] = []
    for line in lines:
        if line.startswith("Client Initiated Connections") or out:
            out.append(line)
            if out and line.startswith("====") and len(out) > 3:
                break
    return out


class Demo:
    def __init__(self, reactor: Any, args: argparse.Namespace) -> None:
        self.reactor = reactor
        self.args = args
        self.net = Net(reactor, tls=not args.cleartext, trace=args.trace)
        self.problems: list[str] = []
        self.reports: list[JobReport] = []
        self.pool_before = False
        self.pool_after = False
        self.connector: ClientInitiatedConnector | None = None
        self.sources: list[Path] = []
        self.source_root = Path()
        self.sd: StorageDaemon | None = None

    def check(self, ok: bool, problem: str) -> bool:
        if not ok:
            self.problems.append(problem)
        return ok

    async def run(self) -> int:
        with tempfile.TemporaryDirectory(prefix="bareosproto-demo-") as tmp:
            root = Path(tmp)
            (root / "source").mkdir()
            (root / "volume").mkdir()
            self.sources = make_source(root / "source", self.args.size)
            self.source_root = root / "source"
            self.sd = StorageDaemon(self.net, root / "volume")
            try:
                scenario = Deferred.fromCoroutine(self.scenario())
                scenario.addTimeout(TIMEOUT, self.reactor)
                await scenario
            except Exception as exc:
                self.problems.append(f"the demo stopped: {type(exc).__name__}: {exc}")
            finally:
                if self.connector is not None:
                    await self.connector.stopService()
                await self.net.shutdown()
            if self.args.corrupt:
                self.corrupt()
            return self.report()

    async def scenario(self) -> None:
        net, reactor, tls = self.net, self.reactor, self.net.tls
        sd = self.sd
        assert sd is not None
        sd.port = await net.listen(sd.factory())
        active, passive = FileDaemon(net, ACTIVE_FD), FileDaemon(net, PASSIVE_FD)
        active.port = await net.listen(active.factory())
        passive.port = await net.listen(passive.factory())
        ci = FileDaemon(net, CI_FD)  # no listening port: it connects to the Director
        director = Director(net, sd.port, self.source_root)
        dir_port = await net.listen(director.factory)
        total = sum(p.stat().st_size for p in self.sources)
        print(f"bareosproto demo: {'TLS-PSK' if tls else 'cleartext (TLS Enable = no)'} on {HOST}, "
              f"ephemeral ports")
        print(f"  {DIRECTOR:<11} Director            :{dir_port}")
        print(f"  {STORAGE:<11} Storage Daemon      :{sd.port}  (volume folder {sd.volume})")
        print(f"  {ACTIVE_FD:<11} File Daemon         :{active.port}  active: connects to the SD")
        print(f"  {PASSIVE_FD:<11} File Daemon         :{passive.port}  passive: the SD connects to it")
        print(f"  {CI_FD:<11} File Daemon         -      client-initiated: waits in the Director's pool")
        print(f"  source      {self.source_root}: {len(self.sources)} files, {total} bytes ({mb(total)})")
        print()

        # 1. the client-initiated FD connects and waits; a console sees it in status dir
        ci_rows: list[Row] = []

        def ci_connection() -> ClientConnection:
            ci_make = client_initiated_connection(CI_FD, KEYS[CI_FD], reactor, tls=tls, tls_policy=net.policy)
            return net.traced(f"ci-fd->dir #{len(ci_rows) + 1}", ci_make)()

        self.connector = ClientInitiatedConnector(reactor, f"tcp:host={HOST}:port={dir_port}", ci_connection,
                                                  ci.serve_channel, first_retry=0.2, max_retry=1.0)
        self.connector.startService()
        waiting = await self.connector.when_idle().addTimeout(10, reactor)
        ci_rows.append(net.record(ConnectionType.CLIENT_INITIATED, CI_FD, DIRECTOR, waiting,
                                  "waiting"))
        await self.until(lambda: director.pool.count(CI_FD) == 1, "the waiting connection in the pool")

        console = ConsoleSession(await net.connect(
            "console admin", ConnectionType.CONSOLE, HOST, dir_port, name=CONSOLE, key=KEYS["console"],
            initiator=CONSOLE, acceptor=DIRECTOR, note="status dir x2"))
        default = ConsoleSession(await net.connect(
            "console default", ConnectionType.CONSOLE, HOST, dir_port, name=DEFAULT_CONSOLE,
            key=KEYS["director"], initiator=DEFAULT_CONSOLE, acceptor=DIRECTOR, note="version"))
        version = await default.call("version")
        print(f"default console: version -> {version.text.strip()}")
        print(f"console {CONSOLE}: status dir, before the jobs:")
        section = pool_section((await console.call("status dir")).lines)
        for line in section:
            print(f"    {line}".rstrip())
        self.pool_before = self.check(any(line.split()[-1:] == [CI_FD] for line in section[3:]),
                                      f"status dir did not show {CI_FD} waiting before job 3")
        print()

        # 2-4. the three backups
        self.reports.append(await self.job(director, Client(ACTIVE_FD, "active", active.port)))
        self.reports.append(await self.job(director, Client(PASSIVE_FD, "passive", passive.port)))
        before = [entry.channel for entry in director.pool]  # the Director's end of the waiting connection
        report = await self.job(director, Client(CI_FD, "client-initiated"))
        self.reports.append(report)
        if report.taken is not None and report.taken in before:
            ci_rows[0].note = f"waited, then job {report.job_id}"
        else:
            self.check(False, f"job {report.job_id} did not run on the waiting connection")

        # the FD has opened its next waiting connection
        fresh = await self.connector.when_idle().addTimeout(10, reactor)
        ci_rows.append(net.record(ConnectionType.CLIENT_INITIATED, CI_FD, DIRECTOR, fresh,
                                  "new, waiting"))
        await self.until(lambda: director.pool.count(CI_FD) == 1, "the next waiting connection in the pool")
        print(f"console {CONSOLE}: status dir, after job {report.job_id}:")
        section = pool_section((await console.call("status dir")).lines)
        for line in section:
            print(f"    {line}".rstrip())
        pooled = [entry.channel for entry in director.pool]
        is_new = fresh is not waiting and len(pooled) == 1 and pooled[0] not in before
        self.pool_after = self.check(
            is_new and any(line.split()[-1:] == [CI_FD] for line in section[3:]),
            f"status dir did not show a fresh {CI_FD} connection after job {report.job_id}")
        print(f"    (pool: {director.pool.added} added, {director.pool.taken} taken; the waiting connection "
              f"is {'a new one' if is_new else 'NOT a new one'})")
        print()

        # 5. the tray monitor polls each daemon once
        print("tray monitor:")
        for target, port, key, acceptor in ((MonitorTarget.DIRECTOR, dir_port, "monitor-dir", DIRECTOR),
                                            (MonitorTarget.FD, active.port, "monitor-fd", ACTIVE_FD),
                                            (MonitorTarget.SD, sd.port, "monitor-sd", STORAGE)):
            await self.monitor(target, port, KEYS[key], acceptor)
        print()

        await console.quit()
        await default.quit()

    async def until(self, condition: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise DemoError(f"timed out waiting for {what}")
            await deferLater(self.reactor, 0.01, lambda: None)

    async def job(self, director: Director, client: Client) -> JobReport:
        how = {"active": "active client: FD -> SD", "passive": "passive client: SD -> FD",
               "client-initiated": "client-initiated: the waiting connection, FD -> SD"}[client.mode]
        print(f"job {director.jobs + 1}: backup of {client.name} ({how})")
        report = await director.backup(client)
        if report.ok:
            rate = report.size / report.seconds / 1e6 if report.seconds else 0.0
            print(f"    {report.job}: {report.files} files, {report.size} bytes in {report.seconds:.3f} s, "
                  f"{rate:.1f} MB/s")
        else:
            print(f"    {report.job}: FAILED: {report.error}")
            self.problems.append(f"job {report.job_id} failed: {report.error}")
        return report

    async def monitor(self, target: MonitorTarget, port: int, key: Secret, acceptor: str) -> None:
        conn_type = {MonitorTarget.DIRECTOR: ConnectionType.MONITOR_DIRECTOR,
                     MonitorTarget.FD: ConnectionType.MONITOR_FD,
                     MonitorTarget.SD: ConnectionType.MONITOR_SD}[target]
        make = monitor_connection(target, monitor=MONITOR, password=key, clock=self.reactor.seconds,
                                  tls=self.net.tls, tls_policy=self.net.policy)
        client = MonitorClient(self.reactor, f"tcp:host={HOST}:port={port}",
                               self.net.traced(f"monitor->{target.value}", make), target, timeout=10)
        try:
            lines = await client.poll()
        except Exception as exc:
            self.net.rows.append(Row(conn_type, MONITOR, acceptor, auth=f"FAILED: {exc}"[:60], ok=False))
            self.problems.append(f"the monitor could not poll {acceptor}: {exc}")
            return
        assert client.channel is not None
        first = next((line for line in lines if line.strip()), "")
        self.net.record(conn_type, MONITOR, acceptor, client.channel,
                        "status dir" if target is MonitorTarget.DIRECTOR else "status")
        print(f"    {acceptor:<11} {len(lines):>2} lines: {first}")
        await client.stop()

    def corrupt(self) -> None:
        """``--corrupt``: flip one byte of one stored copy, so the comparison must fail."""
        jobs = self.sd.jobs.values() if self.sd is not None else ()
        for job in jobs:
            for stored in job.sink.stored.values():
                if stored.stat().st_size:
                    with stored.open("r+b") as f:
                        byte = f.read(1)
                        f.seek(0)
                        f.write(bytes([byte[0] ^ 0xFF]))
                    print(f"--corrupt: flipped the first byte of {stored}")
                    print()
                    return

    def report(self) -> int:
        rows = self.net.rows
        print("connections (type with its number in PROTOCOL.md 7; auth: CRAM-MD5 both ways, inside TLS-PSK"
              " unless cleartext):")
        print(f"  {'#':>2}  {'type':<31} {'initiator -> acceptor':<26} {'TLS':<9} {'cipher':<28} "
              f"{'PSK id':<10} auth note")
        for i, row in enumerate(rows, 1):
            kind = f"{_TYPE_NAMES[row.conn_type]} ({row.conn_type.value})"
            who = f"{row.initiator} -> {row.acceptor}"
            print(f"  {i:>2}  {kind:<31} {who:<26} {row.tls:<9} {row.cipher:<28} {row.psk:<10} {row.auth:<4} "
                  f"{row.note}")
        authenticated = sum(row.ok for row in rows)
        kinds = {row.conn_type for row in rows}
        self.check(authenticated == len(rows), f"{len(rows) - authenticated} connections failed")
        self.check(kinds == set(_TYPE_NAMES), "not every connection type was opened: missing "
                   + ", ".join(_TYPE_NAMES[k] for k in set(_TYPE_NAMES) - kinds))
        print()

        print("throughput (backup FileIndex=0 until 2800 End Job):")
        for report in self.reports:
            if report.ok and report.seconds:
                rate = report.size / report.seconds / 1e6
                print(f"  job {report.job_id}  {report.client.name:<11} {report.client.mode:<17} "
                      f"{mb(report.size):>10} in {report.seconds:.3f} s  {rate:8.1f} MB/s")
            else:
                print(f"  job {report.job_id}  {report.client.name:<11} FAILED")
        print()

        matched, compared = self.compare()
        print()
        ok = not self.problems
        print(f"result: {authenticated}/{len(rows)} connections authenticated, {matched}/{compared} stored "
              f"files match their source, {CI_FD} waited in the pool before job 3 "
              f"({'yes' if self.pool_before else 'NO'}) and a fresh connection waits after it "
              f"({'yes' if self.pool_after else 'NO'})")
        for problem in self.problems:
            print(f"  problem: {problem}")
        print("everything matched: exit status 0" if ok else "SOMETHING DID NOT MATCH: exit status 1")
        return 0 if ok else 1

    def compare(self) -> tuple[int, int]:
        """SHA-256 of every source file against each job's stored copy."""
        sd_jobs = self.sd.jobs if self.sd is not None else {}
        jobs = [(report, sd_jobs.get(report.job)) for report in self.reports]
        print(f"checksums (SHA-256 of each source file and of the copy {STORAGE} stored per job):")
        heads = " ".join(f"{f'job {r.job_id}':<7}" for r, _ in jobs)
        print(f"  {'file':<22} {'bytes':>9}  {'sha256':<16}  {heads}".rstrip())
        matched = compared = 0
        for path in self.sources:
            digest = sha256(path)
            verdicts = []
            for _report, job in jobs:
                compared += 1
                stored = job.sink.stored.get(str(path)) if job is not None else None
                if stored is None or not stored.exists():
                    verdicts.append("MISSING")
                elif sha256(stored) == digest:
                    matched += 1
                    verdicts.append("match")
                else:
                    verdicts.append("DIFFERS")
            name = str(path.relative_to(self.source_root))
            columns = " ".join(f"{v:<7}" for v in verdicts)
            print(f"  {name:<22} {path.stat().st_size:>9}  {digest[:13]}...  {columns}".rstrip())
        stored_total = sum(len(job.sink.stored) for _r, job in jobs if job is not None)
        self.check(stored_total == len(self.sources) * len(jobs),
                   f"the SD stored {stored_total} files, expected {len(self.sources) * len(jobs)}")
        self.check(matched == compared,
                   f"{compared - matched} of {compared} stored copies differ from their source")
        print(f"  {'all checksums match' if matched == compared else 'CHECKSUMS DIFFER'} "
              f"({matched}/{compared})")
        return matched, compared


def parse_size(text: str) -> int:
    """``4M``, ``512K``, ``1G`` (powers of 1024) or a number of bytes; at least 64 bytes."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kKmMgG]?)(?:i?[bB])?\s*", text)
    if m is None:
        raise argparse.ArgumentTypeError(f"not a size: {text!r}")
    size = int(float(m.group(1)) * 1024 ** " kmg".index(m.group(2).lower() or " "))
    if size < 64:
        raise argparse.ArgumentTypeError("the source folder needs at least 64 bytes")
    return size


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bareosproto.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--cleartext", action="store_true", help="no TLS-PSK (TLS Enable = no everywhere)")
    parser.add_argument("--trace", action="store_true", help="print every frame of every connection")
    parser.add_argument("--size", type=parse_size, default=4 << 20, metavar="SIZE",
                        help="bytes in the generated folder, e.g. 512K, 4M (default), 64M")
    parser.add_argument("--corrupt", action="store_true",
                        help="flip a byte of one stored file before the comparison (to see it fail)")
    args = parser.parse_args(argv)
    status = 1

    async def run(reactor: Any) -> None:
        nonlocal status
        status = await Demo(reactor, args).run()

    try:
        react(lambda reactor: Deferred.fromCoroutine(run(reactor)))
    except SystemExit as exc:
        if exc.code not in (0, None):
            return int(exc.code) if isinstance(exc.code, int) else 1
    return status


if __name__ == "__main__":
    sys.exit(main())
