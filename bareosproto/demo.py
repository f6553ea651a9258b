"""A Bareos topology on loopback, built from this library only.

``python -m bareosproto.demo`` (or ``make demo``) starts a Director, a File
Daemon and a Storage Daemon of ours on ephemeral 127.0.0.1 ports and opens
the connections between them: a named console and the default console to
the Director, Director to FD and to SD, a client-initiated FD to the
Director, and the FD to SD data channel keyed with a job session key.  Each
runs the real Hello, CRAM-MD5 and greeting, over TLS-PSK unless
``--cleartext``; ``--trace`` prints every frame.  It prints one line per
connection (type, initiator, TLS, cipher, result) and exits 0 only if every
connection authenticated and every command was answered.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, Callable

from twisted.internet.defer import Deferred
from twisted.internet.task import react

from . import BAREOS_26, Message, ResourceType, Secret, Signal, SignalFrame, TlsPolicy, new_session_key, password_key
from .connection import ClientConnection, ConnectionType, Credentials, Daemon, ServerConfig
from .events import Event
from .twisted import BareosServerFactory, Channel, connect, server_endpoint

DIRECTOR, CLIENT, STORAGE = "bareos-dir", "demo-fd", "demo-sd"
JOB = "backup-demo-fd.2026-11-30_10.00.00_01"

PASSWORDS = {
    "director": password_key("demo-director-password"),  # the default console's key
    "console": password_key("demo-console-password"),
    "client": password_key("demo-client-password"),
    "storage": password_key("demo-storage-password"),
}


def show_frame(who: str) -> Callable[[str, Event], None]:
    def trace(direction: str, frame: Event) -> None:
        arrow = "->" if direction == "send" else "<-"
        if isinstance(frame, Message):
            text = frame.payload.decode("latin-1")
            if frame.payload.endswith(b"\x00"):
                text = text[:-1] + "\\0"
            shown = text.replace("\x1e", "\\x1e").replace("\x01", "\\x01").replace("\n", "\\n")
            print(f"    {who:<22} {arrow} {len(frame.payload):>4} {shown[:100]}")
        elif isinstance(frame, SignalFrame):
            print(f"    {who:<22} {arrow} {frame.name}")

    return trace


class Topology:
    def __init__(self, reactor: Any, tls: bool, trace: bool) -> None:
        self.reactor = reactor
        self.tls = tls
        self.trace = trace
        self.policy = TlsPolicy.REQUIRED if tls else TlsPolicy.NONE
        self.session_key: Secret = new_session_key()
        self.ports: dict[str, int] = {}
        self.results: list[tuple[str, str, str, str, str, str]] = []

    # -- the three daemons ---------------------------------------------------

    def lookup(self, daemon: str) -> Callable[[ResourceType, str], Credentials | None]:
        p = self.policy
        tables: dict[str, dict[tuple[ResourceType, str], Credentials]] = {
            "dir": {
                (ResourceType.R_CONSOLE, "admin"): Credentials(PASSWORDS["console"], p),
                (ResourceType.R_CONSOLE, "*UserAgent*"): Credentials(PASSWORDS["director"], p),
                (ResourceType.R_CLIENT, CLIENT): Credentials(PASSWORDS["client"], p),
            },
            "fd": {(ResourceType.R_DIRECTOR, DIRECTOR): Credentials(PASSWORDS["client"], p)},
            "sd": {
                (ResourceType.R_DIRECTOR, DIRECTOR): Credentials(PASSWORDS["storage"], p),
                # a running job: its session key; the job's policy is what the Director said (ssl=)
                (ResourceType.R_JOB, JOB): Credentials(self.session_key, p),
            },
        }
        table = tables[daemon]
        return lambda rtype, name: table.get((rtype, name))

    async def start(self) -> None:
        for name, daemon, dname in (("dir", Daemon.DIRECTOR, DIRECTOR), ("fd", Daemon.FD, CLIENT),
                                    ("sd", Daemon.SD, STORAGE)):
            config = ServerConfig(daemon=daemon, name=dname, lookup=self.lookup(name), tls=self.tls,
                                  own_tls_policy=self.policy, failure_delay=0.1)
            factory = BareosServerFactory(config, self.reactor, self.serve(dname))
            port = await server_endpoint(self.reactor, "tcp:0:interface=127.0.0.1").listen(factory)
            self.ports[name] = port.getHost().port  # type: ignore[attr-defined]  # an IPv4Address

    def serve(self, daemon: str) -> Callable[[Channel], object]:
        """Every daemon of the demo answers each command with one line and BNET_EOD."""

        async def loop(channel: Channel) -> None:
            while True:
                frame = await channel.next_frame()
                if isinstance(frame, Message):
                    channel.send(b"%s: OK " % daemon.encode() + frame.payload + b"\n")
                    channel.send_signal(Signal.BNET_EOD)

        def on_channel(channel: Channel) -> None:
            Deferred.fromCoroutine(loop(channel)).addErrback(lambda _: None)

        return on_channel

    # -- the connections -----------------------------------------------------

    async def open(self, label: str, initiator: str, port: str, conn_type: ConnectionType, name: str,
                   key: Secret, command: bytes | None, job: str | None = None) -> None:
        def make() -> ClientConnection:
            conn = ClientConnection(conn_type, name=name, key=key, job=job, clock=self.reactor.seconds,
                                    tls=self.tls, tls_policy=self.policy, release=BAREOS_26)
            if self.trace:
                conn.trace = show_frame(label)
            return conn

        endpoint = f"tcp:host=127.0.0.1:port={self.ports[port]}"
        try:
            channel = await connect(self.reactor, endpoint, make, handshake_timeout=10)
        except Exception as exc:  # shown in the table; the exit status says it failed
            self.results.append((label, initiator, "-", "-", "FAILED", str(exc)[:60]))
            return
        hs = channel.handshake
        outcome = "authenticated"
        if command is not None:
            channel.send(command)
            reply = await channel.read_until(lambda f: isinstance(f, SignalFrame))
            answer = b"".join(f.payload for f in reply if isinstance(f, Message)).strip()
            outcome += f", {answer.decode()!r}"
            if not answer.endswith(command):
                outcome = "FAILED: " + outcome
        channel.close()
        await channel.protocol.when_closed()
        self.results.append((label, initiator, hs.tls_version or "cleartext", hs.cipher or "-", "OK", outcome))

    async def run(self) -> int:
        await self.start()
        await self.open("console (named)", "console admin", "dir", ConnectionType.CONSOLE, "admin",
                        PASSWORDS["console"], b"version")
        await self.open("console (default)", "console *UserAgent*", "dir", ConnectionType.CONSOLE,
                        "*UserAgent*", PASSWORDS["director"], b"status dir")
        await self.open("director -> fd", DIRECTOR, "fd", ConnectionType.DIRECTOR_FD, DIRECTOR,
                        PASSWORDS["client"], b"status")
        await self.open("director -> sd", DIRECTOR, "sd", ConnectionType.DIRECTOR_SD, DIRECTOR,
                        PASSWORDS["storage"], b"status")
        await self.open("fd -> director (ci)", CLIENT, "dir", ConnectionType.CLIENT_INITIATED, CLIENT,
                        PASSWORDS["client"], None)
        await self.open("fd -> sd (data)", CLIENT, "sd", ConnectionType.FD_SD, CLIENT, self.session_key,
                        b"append open session", job=JOB)
        print(f"{'connection':<22} {'initiator':<22} {'TLS':<10} {'cipher':<30} result")
        ok = True
        for label, initiator, tls, cipher, status, detail in self.results:
            print(f"{label:<22} {initiator:<22} {tls:<10} {cipher:<30} {detail}")
            ok &= status == "OK" and not detail.startswith("FAILED")
        print("all connections authenticated" if ok else "SOME CONNECTIONS FAILED")
        return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bareosproto.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--cleartext", action="store_true", help="no TLS-PSK (TLS Enable = no everywhere)")
    parser.add_argument("--trace", action="store_true", help="print every frame")
    args = parser.parse_args(argv)
    status = 1

    async def run(reactor: Any) -> None:
        nonlocal status
        status = await Topology(reactor, tls=not args.cleartext, trace=args.trace).run()

    try:
        react(lambda reactor: Deferred.fromCoroutine(run(reactor)))
    except SystemExit as exc:
        if exc.code not in (0, None):
            return int(exc.code) if isinstance(exc.code, int) else 1
    return status


if __name__ == "__main__":
    sys.exit(main())
