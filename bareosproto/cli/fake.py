"""``bareosproto-fake {director,fd,sd}``: small Bareos daemons built on bareosproto.

Real Bareos daemons and consoles can talk to them:

* **director** accepts consoles (named and the default console, cleartext or TLS-PSK as
  configured per console) with ``version``, ``whoami``, ``status dir`` (with its table of
  waiting client-initiated connections), ``.api 0|1|2`` (JSON replies in mode 2), ``quit``
  and Bareos' reply to an unknown command; and client-initiated FDs, which wait in its pool.
* **fd** accepts a Director (``status``; a ``:monitor`` Director may only use ``status`` and
  ``.status``) and, with ``--connect-director``, also connects client-initiated.
* **sd** accepts a Director (``status``, ``JobId=...`` to start a job) and the data channels
  of the jobs it started (``append open session`` ... ``append close session``).

Peers are ``NAME:PASSWORD`` with an optional ``:monitor`` (Directors of an FD or SD) and an
optional TLS policy ``:none``, ``:enabled`` or ``:required`` (default required, as in
Bareos); names may contain spaces.  One line is logged per connection (who, TLS, or why it was refused).  Runs until
interrupted.

Examples::

    bareosproto-fake director --listen 127.0.0.1:9101 --name bareos-dir --password dirpw \\
        --console "admin:adminpw:none" --client "my-fd:fdpw"
    bareosproto-fake fd --listen 127.0.0.1:9102 --name my-fd --director "bareos-dir:fdpw" \\
        --connect-director 127.0.0.1:9101
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any, Callable

from twisted.internet.defer import Deferred
from twisted.internet.task import react
from twisted.logger import globalLogBeginner, textFileLogObserver

from ..connection import Credentials, Daemon, ServerConfig
from ..console import CommandResult, UnknownCommand
from ..events import Message, SignalFrame
from ..keys import Secret, as_key, new_session_key
from ..names import USER_AGENT, ResourceType
from ..signals import Signal
from ..tls_policy import TlsPolicy
from ..versions import BAREOS_25, BAREOS_26, BareosVersion
from ..twisted import BareosServerFactory, Channel, DaemonChannel, server_endpoint
from ..twisted.client_initiated import ClientInitiatedConnector, client_initiated_connection
from ..twisted.console import ConsoleServerSession
from ..twisted.pool import DirectorPoolFactory, WaitingConnectionPool

__all__ = ["main", "Peer", "parse_peer", "FakeDirector", "FakeFd", "FakeSd"]

_POLICIES = {"none": TlsPolicy.NONE, "enabled": TlsPolicy.ENABLED, "required": TlsPolicy.REQUIRED}


class Peer:
    """One ``NAME:PASSWORD[:monitor][:policy]`` option."""

    def __init__(self, name: str, password: str, policy: TlsPolicy, monitor: bool) -> None:
        self.name = name
        self.key: Secret = as_key(password)
        self.policy = policy
        self.monitor = monitor

    def __repr__(self) -> str:
        return f"Peer({self.name!r}, policy={self.policy.name}, monitor={self.monitor})"

    @property
    def credentials(self) -> Credentials:
        return Credentials(self.key, self.policy)


def parse_peer(value: str) -> Peer:
    """``name:password[:monitor][:none|enabled|required]``; the password may hold colons."""
    name, sep, rest = value.partition(":")
    if not sep or not name or not rest:
        raise argparse.ArgumentTypeError(f"expected NAME:PASSWORD, got {value!r}")
    parts = rest.split(":")
    policy, monitor = TlsPolicy.REQUIRED, False
    while len(parts) > 1 and parts[-1] in (*_POLICIES, "monitor"):
        flag = parts.pop()
        if flag == "monitor":
            monitor = True
        else:
            policy = _POLICIES[flag]
    return Peer(name, ":".join(parts), policy, monitor)


def _now() -> str:
    return time.strftime("%d-%b-%y %H:%M")


def _version_line(name: str, release: BareosVersion) -> str:
    return f"{name} Version: {release.full} ({release.date}) bareosproto bareosproto \n"


class FakeDirector:
    """A Director: consoles get a command loop, client-initiated FDs wait in the pool."""

    def __init__(self, reactor: Any, name: str, password: str, consoles: list[Peer], clients: list[Peer],
                 tls_policy: TlsPolicy, release: BareosVersion, failure_delay: float) -> None:
        self.name = name
        self.release = release
        self.started = _now()
        self.pool = WaitingConnectionPool(reactor)
        table: dict[tuple[ResourceType, str], Credentials] = {
            (ResourceType.R_CONSOLE, USER_AGENT): Credentials(as_key(password), tls_policy)
        }
        table.update({(ResourceType.R_CONSOLE, c.name): c.credentials for c in consoles})
        table.update({(ResourceType.R_CLIENT, c.name): c.credentials for c in clients})
        config = ServerConfig(daemon=Daemon.DIRECTOR, name=name, lookup=lambda t, n: table.get((t, n)),
                              release=release, tls=True, own_tls_policy=tls_policy, failure_delay=failure_delay)
        self.factory = DirectorPoolFactory(config, reactor, self.pool, self._console)

    def _console(self, channel: Channel) -> None:
        ConsoleServerSession(channel, self.handle)

    def handle(self, command: str, session: ConsoleServerSession) -> object:
        words = command.split()
        if not words:
            return ""
        if words[0] == "version":
            release = self.release
            return CommandResult(text=_version_line(self.name, release), json={"version": {
                "name": self.name, "version": release.full, "bdate": release.date}})
        if words[0] == "whoami":
            return f"{session.name}\n"
        if words[0] == "status" and (len(words) == 1 or words[1] in ("dir", "director")):
            return self.status_dir(session)
        raise UnknownCommand(words[0])

    def status_dir(self, session: ConsoleServerSession) -> CommandResult:
        api = int(session.api_mode)
        lines: list[str | bytes] = [
            _version_line(self.name, self.release).rstrip(" \n") + "\n",
            f"Daemon started {self.started}. Jobs: run=0, running=0 bareosproto\n",
            "No Scheduled Jobs.\n",
            "====\n",
            "\nRunning Jobs:\n",
            f"Console connected at {_now()}\n",
            "No Jobs running.\n====\n",
            "\nTerminated Jobs:\n",
            "No Terminated Jobs.\n",
            "\n",
        ]
        lines += self.pool.status_frames(api)
        return CommandResult(messages=tuple(lines), json=self.pool.status_json())


class _CommandDaemon:
    """An FD or SD answering a Director's commands (``status``; the rest is refused)."""

    code = "2"

    def __init__(self, name: str, release: BareosVersion, monitors: set[str]) -> None:
        self.name = name
        self.release = release
        self.monitors = monitors
        self.started = _now()

    def serve(self, channel: Channel) -> None:
        Deferred.fromCoroutine(self._loop(DaemonChannel(channel))).addErrback(lambda _: None)

    def status_lines(self) -> list[str]:
        return [
            "\n",
            f"{self.name} Version: {self.release.full} ({self.release.date}) bareosproto\n",
            f"Daemon started {self.started}. Jobs: run=0 running=0.\n",
            "\nRunning Jobs:\nNo Jobs running.\n====\n",
        ]

    async def _loop(self, channel: DaemonChannel) -> None:
        monitor = channel.peer_name in self.monitors
        while channel.is_open:
            frame = await channel.read_command()
            if isinstance(frame, SignalFrame):
                if frame.signal == Signal.BNET_TERMINATE:
                    break
                continue
            command = frame.payload.decode("utf-8", "replace").strip()
            word = command.split(" ", 1)[0] if command else ""
            if word in ("status", ".status"):
                first, *rest = self.status_lines()
                channel.send_line(first)  # the first status frame carries no NUL (PROTOCOL.md 15.5)
                channel.send_lines(rest, nul=True)
            elif monitor:
                channel.send_line(f"{self.code}997 Invalid command for a Director with Monitor directive enabled.\n")
                channel.send_signal(Signal.BNET_EOD)
                break
            elif not await self.command(channel, command):
                break
        channel.terminate()

    async def command(self, channel: DaemonChannel, command: str) -> bool:
        """Anything but status: the FD's ``2999 Invalid command`` ends the session."""
        channel.send_line(b"2999 Invalid command\n")
        return False


class FakeFd(_CommandDaemon):
    code = "2"


class FakeSd(_CommandDaemon):
    """An SD: ``JobId=...`` starts a job whose session key admits its data channel."""

    code = "3"

    def __init__(self, name: str, release: BareosVersion, monitors: set[str]) -> None:
        super().__init__(name, release, monitors)
        self.jobs: dict[str, Secret] = {}
        self.session_id = 0
        self.stored: dict[str, int] = {}

    async def command(self, channel: DaemonChannel, command: str) -> bool:
        if command.startswith("JobId="):
            fields = dict(f.split("=", 1) for f in command.split() if "=" in f)
            job = fields.get("job", "")
            key = new_session_key()
            self.jobs[job] = key
            self.session_id += 1
            channel.send_line(f"3000 OK Job SDid={self.session_id} SDtime={int(time.time())} "
                              f"Authorization={key.reveal().decode()}\n")
            return True
        channel.send_line(f"3900 Invalid command: {command}\n")
        return False

    def job_credentials(self, name: str) -> Credentials | None:
        key = self.jobs.get(name)
        return Credentials(key, TlsPolicy.NONE) if key is not None else None

    def serve_data(self, channel: Channel) -> None:
        Deferred.fromCoroutine(self._data(DaemonChannel(channel))).addErrback(lambda _: None)

    async def _data(self, channel: DaemonChannel) -> None:
        """A minimal append session: the bytes are counted, not kept."""
        job = channel.peer_name
        ticket = self.session_id
        while channel.is_open:
            frame = await channel.read_frame()
            if not isinstance(frame, Message):
                if frame.signal == Signal.BNET_TERMINATE:
                    break
                continue
            line = frame.payload.decode("utf-8", "replace")
            if line.startswith("append open session"):
                channel.send_line(f"3000 OK open ticket = {ticket}\n")
            elif line.startswith("append data"):
                channel.send_line("3000 OK data\n")
                while True:
                    data = await channel.read_frame()
                    if isinstance(data, SignalFrame):
                        break
                    self.stored[job] = self.stored.get(job, 0) + len(data.payload)
                channel.send_line("3000 OK append data\n")
            elif line.startswith("append end session"):
                channel.send_line("3000 OK end\n")
            elif line.startswith("append close session"):
                channel.send_line("3000 OK close Status = 84\n")
                channel.send_signal(Signal.BNET_EOD)
            else:
                channel.send_line("3900 Invalid command\n")
                break
        channel.close()


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bareosproto-fake", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    p.add_argument("daemon", choices=["director", "fd", "sd"])
    p.add_argument("--listen", default="127.0.0.1:0", metavar="HOST:PORT")
    p.add_argument("--name", help="our resource name")
    p.add_argument("--password", default=None, help="director: its own password (the default console's)")
    p.add_argument("--console", action="append", type=parse_peer, default=[], metavar="NAME:PW[:POLICY]")
    p.add_argument("--client", action="append", type=parse_peer, default=[], metavar="NAME:PW[:POLICY]",
                   help="director: a client-initiated FD it admits")
    p.add_argument("--director", action="append", type=parse_peer, default=[],
                   metavar="NAME:PW[:monitor][:POLICY]", help="fd/sd: a Director (or monitor) it admits")
    p.add_argument("--tls-policy", choices=list(_POLICIES), default="required", help="the daemon's own policy")
    p.add_argument("--connect-director", metavar="HOST:PORT",
                   help="fd: also connect client-initiated, with the password of the first --director")
    p.add_argument("--release", choices=["26", "25"], default="26")
    p.add_argument("--failure-delay", type=float, default=5.0, help="seconds Bareos sleeps after a failed login")
    return p


async def run(reactor: Any, args: argparse.Namespace) -> None:
    release = BAREOS_25 if args.release == "25" else BAREOS_26
    policy = _POLICIES[args.tls_policy]
    name = args.name or {"director": "bareos-dir", "fd": "bareos-fd", "sd": "bareos-sd"}[args.daemon]
    factory: BareosServerFactory
    if args.daemon == "director":
        if args.password is None:
            raise SystemExit("director: --password (the Director's own password) is required")
        factory = FakeDirector(reactor, name, args.password, args.console, args.client, policy, release,
                               args.failure_delay).factory
    else:
        if not args.director:
            raise SystemExit(f"{args.daemon}: at least one --director NAME:PW is required")
        directors = {(ResourceType.R_DIRECTOR, d.name): d.credentials for d in args.director}
        monitors = {d.name for d in args.director if d.monitor}
        daemon: FakeFd | FakeSd = FakeFd(name, release, monitors) if args.daemon == "fd" else FakeSd(
            name, release, monitors)

        def lookup(rtype: ResourceType, peer: str) -> Credentials | None:
            if rtype is ResourceType.R_JOB and isinstance(daemon, FakeSd):
                return daemon.job_credentials(peer)
            return directors.get((rtype, peer))

        def on_channel(channel: Channel) -> None:
            if channel.handshake.hello.peer_type is ResourceType.R_JOB and isinstance(daemon, FakeSd):
                daemon.serve_data(channel)
            else:
                daemon.serve(channel)

        config = ServerConfig(daemon=Daemon.FD if args.daemon == "fd" else Daemon.SD, name=name, lookup=lookup,
                              release=release, own_tls_policy=policy, failure_delay=args.failure_delay)
        factory = BareosServerFactory(config, reactor, on_channel)
        if args.connect_director and isinstance(daemon, FakeFd):
            first = args.director[0]
            host, _, port = args.connect_director.rpartition(":")
            make: Callable[..., Any] = client_initiated_connection(
                name, first.key, reactor, tls=first.policy != TlsPolicy.NONE, tls_policy=first.policy,
                release=release)
            connector = ClientInitiatedConnector(reactor, f"tcp:host={host}:port={port}", make, daemon.serve)
            connector.startService()
    host, _, port = args.listen.rpartition(":")
    listening = await server_endpoint(reactor, f"tcp:{port}:interface={host or '127.0.0.1'}").listen(factory)
    address = listening.getHost()
    print(f"{args.daemon} {name!r} listening on {address.host}:{address.port}", flush=True)  # type: ignore[attr-defined]
    await Deferred()  # until interrupted


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stdout)], redirectStandardIO=False)
    react(lambda reactor: Deferred.fromCoroutine(run(reactor, args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
