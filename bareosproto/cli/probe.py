"""``bareosproto-probe``: log into a live Bareos daemon and report how it went.

Connects as a console, Director, client (the client-initiated Hello), storage (an SD calling a
passive FD for a job) or tray monitor, and reports the TLS outcome, the Hello sent, the
authentication result, the peer's greeting and version, and round-trip times; ``--command`` runs
one command and prints the reply.  The exit status is 0 only when authentication succeeded.

Examples::

    bareosproto-probe --connect 127.0.0.1:9101 --as console --name admin --password secret --tls psk
    bareosproto-probe --connect 127.0.0.1:9102 --as director --name bareos-dir --password pw \\
        --tls none --command status
    bareosproto-probe --connect 127.0.0.1:9103 --as monitor --peer sd --name tray --password pw --json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import react

from ..connection import ClientConnection, ConnectionType
from ..errors import ProtocolError, RemoteProtocolError
from ..events import Message, SignalFrame
from ..keys import Secret, as_key
from ..names import USER_AGENT
from ..replies import DirectorGreeting, FdHelloOk, SdHelloOk
from ..signals import Signal
from ..tls import cert_client_context
from ..tls_policy import TlsPolicy
from ..versions import BAREOS_25, BAREOS_26
from ..twisted import connect

__all__ = ["main", "probe"]

_END = {Signal.BNET_EOD, Signal.BNET_MAIN_PROMPT, Signal.BNET_SUB_PROMPT, Signal.BNET_TERMINATE}
_DEFAULT_PEER = {9101: "dir", 9102: "fd", 9103: "sd"}


def connection_type(role: str, peer: str) -> ConnectionType:
    """The connection type for acting as ``role`` towards a ``peer`` daemon."""
    if role == "console":
        return ConnectionType.CONSOLE
    if role == "director":
        return ConnectionType.DIRECTOR_SD if peer == "sd" else ConnectionType.DIRECTOR_FD
    if role == "client":
        return ConnectionType.CLIENT_INITIATED
    if role == "storage":
        return ConnectionType.SD_SD if peer == "sd" else ConnectionType.SD_FD_PASSIVE
    return {"dir": ConnectionType.MONITOR_DIRECTOR, "sd": ConnectionType.MONITOR_SD}.get(
        peer, ConnectionType.MONITOR_FD
    )


def _text(frame: Message | SignalFrame) -> str:
    if isinstance(frame, SignalFrame):
        return frame.name
    payload: bytes = frame.payload
    return payload.rstrip(b"\x00").decode("utf-8", "replace")


async def probe(reactor: Any, args: argparse.Namespace) -> dict[str, Any]:
    host, _, port = args.connect.rpartition(":")
    peer = args.peer or _DEFAULT_PEER.get(int(port), "fd")
    conn_type = connection_type(args.as_, peer)
    name = args.name if args.name else (USER_AGENT if args.as_ == "console" else None)
    if name is None:
        raise SystemExit("--name is needed for this role")
    key: Secret = as_key(args.password)
    tls_context = None
    if args.tls == "cert":
        tls_context = cert_client_context(args.ca, args.cert, args.key, verify_peer=args.ca is not None)
    report: dict[str, Any] = {
        "connect": args.connect,
        "as": args.as_,
        "connection": conn_type.name,
        "name": name,
        "tls_requested": args.tls,
    }
    made: list[ClientConnection] = []

    def make() -> ClientConnection:
        conn = ClientConnection(
            conn_type, name=name, key=key, job=args.job, clock=reactor.seconds,
            tls=args.tls == "psk", tls_context=tls_context,
            tls_policy=TlsPolicy.REQUIRED if args.tls != "none" else TlsPolicy.NONE,
            release=BAREOS_25 if args.release == "25" else BAREOS_26,
            old_console=args.old_console,
        )
        made.append(conn)
        return conn

    start = time.perf_counter()
    try:
        channel = await connect(reactor, f"tcp:host={host}:port={port}:timeout={max(1, round(args.timeout))}", make,
                                handshake_timeout=args.timeout)
    except RemoteProtocolError as exc:
        report.update(auth="refused", error=exc.message, hello=_hello(made))
        return report
    except ProtocolError as exc:
        report.update(auth="failed", error=exc.message, hello=_hello(made))
        return report
    except Exception as exc:  # the endpoint could not connect
        report.update(auth="no connection", error=f"{type(exc).__name__}: {exc}")
        return report
    hs = channel.handshake
    report.update(
        auth="ok",
        hello=hs.hello.to_bytes().decode("utf-8", "replace"),
        tls={"version": hs.tls_version, "cipher": hs.cipher} if hs.tls_version else None,
        peer_tls_policy=int(hs.remote_policy),
        handshake_ms=round((time.perf_counter() - start) * 1000, 2),
    )
    greeting = hs.greeting
    if isinstance(greeting, DirectorGreeting):
        report.update(greeting=greeting.to_bytes().decode("utf-8", "replace").replace("\x1e", " ").strip(),
                      peer_name=greeting.director, peer_version=greeting.version)
    elif isinstance(greeting, (FdHelloOk, SdHelloOk)):
        report["greeting"] = greeting.to_bytes().decode().strip()
        if isinstance(greeting, FdHelloOk):
            report["fd_protocol_version"] = greeting.protocol_version
    if hs.info:
        report["info"] = hs.info
    if args.command:
        sent = time.perf_counter()
        channel.send(args.command.encode("utf-8"))
        frames = await channel.read_until(lambda f: isinstance(f, SignalFrame) and f.signal in _END)
        report["command"] = args.command
        report["command_ms"] = round((time.perf_counter() - sent) * 1000, 2)
        report["reply"] = [_text(f) for f in frames]
    channel.close()
    return report


def _hello(made: list[ClientConnection]) -> str | None:
    return made[0].hello.to_bytes().decode("utf-8", "replace") if made else None


def render(report: dict[str, Any]) -> str:
    lines = [f"{report['connect']}: {report['connection']} as {report['name']!r}: auth {report['auth']}"]
    if report.get("tls"):
        lines.append(f"  TLS           {report['tls']['version']} {report['tls']['cipher']}")
    elif report["auth"] == "ok":
        lines.append("  TLS           none (cleartext)")
    for key in ("hello", "greeting", "peer_version", "fd_protocol_version", "handshake_ms", "error"):
        if report.get(key) is not None:
            lines.append(f"  {key:<13} {str(report[key]).rstrip()}")
    if report.get("info"):
        lines.append("  info          " + report["info"].replace("\n", "\n                "))
    if "reply" in report:
        lines.append(f"  command       {report['command']!r} ({report['command_ms']} ms)")
        lines.extend("    " + line for line in "".join(
            r if not r.startswith("BNET_") else f"[{r}]\n" for r in report["reply"]).splitlines())
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bareosproto-probe", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    p.add_argument("--connect", required=True, metavar="HOST:PORT")
    p.add_argument("--as", dest="as_", required=True,
                   choices=["console", "director", "client", "storage", "monitor"])
    p.add_argument("--peer", choices=["dir", "fd", "sd"],
                   help="the daemon at --connect (default from the port: 9101 dir, 9103 sd, else fd)")
    p.add_argument("--name", help="our resource name (console default: *UserAgent*)")
    p.add_argument("--password", required=True,
                   help="the configured password ([md5]<hex> kept as is); a session key for --as storage")
    p.add_argument("--job", help="unique job name (--as storage)")
    p.add_argument("--tls", choices=["psk", "none", "cert"], default="psk")
    p.add_argument("--ca", help="CA file (--tls cert)")
    p.add_argument("--cert", help="our certificate (--tls cert)")
    p.add_argument("--key", help="our key (--tls cert)")
    p.add_argument("--release", choices=["26", "25"], default="26", help="Hello form to send")
    p.add_argument("--old-console", action="store_true", help="send the 12.4 console Hello")
    p.add_argument("--command", help="run one command after logging in")
    p.add_argument("--timeout", type=float, default=15.0)
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    result: dict[str, Any] = {}

    async def run(reactor: Any) -> None:
        result.update(await probe(reactor, args))

    try:
        react(lambda reactor: Deferred.fromCoroutine(run(reactor)))
    except SystemExit as exc:
        if exc.code not in (0, None) and not result:
            print(exc.code, file=sys.stderr)
            return 2
    print(json.dumps(result, indent=2) if args.json else render(result))
    return 0 if result.get("auth") == "ok" else 1


if __name__ == "__main__":
    sys.exit(main())
