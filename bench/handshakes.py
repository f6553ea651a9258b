"""Console logins per second against our Director-side server, printed (nothing asserted).

    python bench/handshakes.py            # full run
    python bench/handshakes.py --quick    # a few seconds

The server runs in a process of its own, as a Director does; the clients run
in this process, all on 127.0.0.1.  The server is a ``BareosServerFactory``
with ``Daemon.DIRECTOR`` that knows four consoles and whose ``on_channel`` is
trivial: for the consoles ``bench*`` it closes right after the greeting
(``1000\\x1eOK: ...`` and ``1002\\x1e...``), for ``pyb*`` it answers the one
command python-bareos sends after its login (``autodisplay off``) with
``BNET_EOD`` and then closes.  Beside it, in the same process, a raw TCP server
closes every connection at once.

Contenders, interleaved round-robin with the order rotated every repeat:

* 50 concurrent clients of ours (``connect()`` with a console
  ``ClientConnection``) on this process's reactor, cleartext and TLS-PSK (TLS
  1.3): a login is TCP connect, Hello, CRAM-MD5 both ways, greeting, close.
  Reference: 50 concurrent raw TCP connect/close cycles against the raw server.
* python-bareos ``DirectorConsole`` (blocking, so sequential; run in this
  process while its reactor has nothing to do), cleartext and TLS-PSK:
  connect, login, ``autodisplay off``, close.  Reference: a blocking raw TCP
  connect/close loop.

Rates are logins (or cycles) per second; "best" is the fastest repeat,
"median" the median; "ratio" is best over the best of the table's first row
(the raw TCP reference run in the same process).  The CPU columns are the CPU time (user + system) per
login of the server process and of this process in the best repeat (from
``/proc``, Linux only).  The last lines divide our logins per second by
python-bareos' (target >= 3x).  ``--same-process`` runs the server on this
process's reactor instead, for comparison (the blocking clients then run in a
thread, and the client CPU column includes the server's).
"""

from __future__ import annotations

import argparse
import os
import resource
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

from twisted.internet import defer, task
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint, connectProtocol
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.threads import deferToThread
from twisted.python.failure import Failure

from bareosproto import ResourceType, Signal, TlsPolicy, password_key
from bareosproto.connection import ClientConnection, ConnectionType, Credentials, Daemon, ServerConfig
from bareosproto.twisted import BareosServerFactory, Channel, connect

CONCURRENCY = 50
PASSWORD = "bench-password"
KEY = password_key(PASSWORD)
CONSOLES = {
    "bench": Credentials(KEY, TlsPolicy.NONE),  # our clients, cleartext
    "bench-tls": Credentials(KEY, TlsPolicy.REQUIRED),  # our clients, TLS-PSK
    "pyb": Credentials(KEY, TlsPolicy.NONE),  # python-bareos, cleartext
    "pyb-tls": Credentials(KEY, TlsPolicy.REQUIRED),  # python-bareos, TLS-PSK
}


# -- servers -------------------------------------------------------------------------------------


def director_factory(reactor: Any) -> BareosServerFactory:
    config = ServerConfig(
        daemon=Daemon.DIRECTOR,
        name="bench-dir",
        lookup=lambda rtype, name: CONSOLES.get(name) if rtype is ResourceType.R_CONSOLE else None,
    )

    def on_channel(channel: Channel) -> None:
        if not channel.handshake.hello.name.startswith("pyb"):
            channel.close()
            return

        def answer(_: object) -> None:
            channel.send_signal(Signal.BNET_EOD)
            channel.close()

        channel.next_frame().addCallbacks(answer, lambda f: None)

    return BareosServerFactory(config, reactor, on_channel)


class CloseAtOnce(Protocol):
    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.loseConnection()


async def listen(reactor: Any) -> tuple[int, int]:
    """The Director and the raw server on ephemeral ports of 127.0.0.1."""
    raw_factory = Factory.forProtocol(CloseAtOnce)
    raw_factory.noisy = False
    director = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(director_factory(reactor))
    raw = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(raw_factory)
    return director.getHost().port, raw.getHost().port


def serve() -> None:
    """The server process: print the two ports, serve until stdin ends."""

    async def run(reactor: Any) -> None:
        dport, rport = await listen(reactor)
        print(dport, rport, flush=True)
        done: defer.Deferred[None] = defer.Deferred()

        def wait_for_stdin_end() -> None:
            sys.stdin.read()
            reactor.callFromThread(done.callback, None)

        threading.Thread(target=wait_for_stdin_end, daemon=True).start()
        await done

    task.react(lambda reactor: defer.Deferred.fromCoroutine(run(reactor)))


# -- CPU time ---------------------------------------------------------------------------------------


def own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def process_cpu(pid: int) -> float | None:
    """User + system seconds of another process, from /proc (None elsewhere)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# -- one cycle of each contender --------------------------------------------------------------------


class WaitForClose(Protocol):
    def __init__(self) -> None:
        self.done: defer.Deferred[None] = defer.Deferred()

    def connectionLost(self, reason: Failure = Failure(ConnectionError())) -> None:
        self.done.callback(None)


def login(reactor: Any, port: int, tls: bool) -> Callable[[], Awaitable[None]]:
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port)
    name = "bench-tls" if tls else "bench"

    def make() -> ClientConnection:
        return ClientConnection(ConnectionType.CONSOLE, name=name, key=KEY, clock=reactor.seconds, tls=tls,
                                tls_policy=TlsPolicy.REQUIRED if tls else TlsPolicy.NONE)

    async def one() -> None:
        channel = await connect(reactor, endpoint, make)
        channel.close()
        await channel.protocol.when_closed()

    return one


def raw_cycle(reactor: Any, port: int) -> Callable[[], Awaitable[None]]:
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port)

    async def one() -> None:
        proto = WaitForClose()
        await connectProtocol(endpoint, proto)
        await proto.done

    return one


async def concurrently(one: Callable[[], Awaitable[None]], total: int, concurrency: int) -> None:
    """Run ``total`` cycles with ``concurrency`` workers."""
    left = [total]

    async def worker() -> None:
        while left[0] > 0:
            left[0] -= 1
            await one()

    await defer.gatherResults([defer.Deferred.fromCoroutine(worker()) for _ in range(concurrency)],
                              consumeErrors=True)


def python_bareos_logins(port: int, count: int, tls: bool = False) -> None:
    from bareos.bsock import DirectorConsole

    for _ in range(count):
        console = DirectorConsole(address="127.0.0.1", port=port, name="pyb-tls" if tls else "pyb",
                                  password=PASSWORD, tls_psk_enable=tls)
        console.close()


def blocking_raw_cycles(port: int, count: int) -> None:
    for _ in range(count):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            while sock.recv(4096):
                pass


# -- reporting ------------------------------------------------------------------------------------


class Contender:
    def __init__(self, name: str, count: int, run: Callable[[], Awaitable[None]], server_pid: int | None) -> None:
        self.name = name
        self.count = count
        self.run = run
        self.server_pid = server_pid
        #: (logins per second, server CPU ms per login or None, client CPU ms per login)
        self.runs: list[tuple[float, float | None, float]] = []

    async def once(self, record: bool = True) -> None:
        pid = self.server_pid
        s0 = process_cpu(pid) if pid else None
        c0 = own_cpu()
        t0 = time.perf_counter()
        await self.run()
        seconds = time.perf_counter() - t0
        c1 = own_cpu()
        s1 = process_cpu(pid) if pid else None
        server = (s1 - s0) * 1e3 / self.count if s0 is not None and s1 is not None else None
        if record:
            self.runs.append((self.count / seconds, server, (c1 - c0) * 1e3 / self.count))

    @property
    def best(self) -> float:
        return max(r[0] for r in self.runs)

    @property
    def median(self) -> float:
        return statistics.median(r[0] for r in self.runs)

    def cpu(self) -> tuple[str, str]:
        _, server, client = max(self.runs, key=lambda r: r[0])
        return (f"{server:.3f}" if server is not None else "-"), f"{client:.3f}"


async def race(contenders: list[Contender], repeats: int) -> None:
    for c in contenders:  # warm-up
        await c.once(record=False)
    for r in range(repeats):
        for i in range(len(contenders)):
            await contenders[(i + r) % len(contenders)].once()


ROW = "{:<58} {:>9} {:>9} {:>7} {:>10} {:>10}"


def table(title: str, contenders: list[Contender]) -> None:
    """The first contender is the baseline: the ratio is best over its best."""
    print()
    print(title)
    print(ROW.format("contender", "best/s", "median/s", "ratio", "server ms", "client ms"))
    base = contenders[0].best
    for c in contenders:
        print(ROW.format(c.name, f"{c.best:,.0f}", f"{c.median:,.0f}", f"{c.best / base:.3f}", *c.cpu()))


def blocking(fn: Callable[..., None], *args: Any, in_thread: bool = False) -> Callable[[], Awaitable[None]]:
    """A blocking loop, run on the reactor thread (nothing else runs in this process
    meanwhile) or, when the server shares this process's reactor, in a thread."""

    async def run() -> None:
        if in_thread:
            await deferToThread(fn, *args)
        else:
            fn(*args)

    return run


async def amain(reactor: Any, args: argparse.Namespace) -> None:
    server: subprocess.Popen[str] | None = None
    if args.same_process:
        dport, rport = await listen(reactor)
        where = "the server on this process's reactor (--same-process)"
    else:
        server = subprocess.Popen([sys.executable, __file__, "--serve"], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True)
        assert server.stdout is not None
        dport, rport = map(int, server.stdout.readline().split())
        where = f"the server in its own process (pid {server.pid})"
    pid = server.pid if server is not None else None
    n, seq = args.logins, args.sequential
    concurrent = [
        Contender(f"raw TCP connect/close, {CONCURRENCY} concurrent", n,
                  lambda: concurrently(raw_cycle(reactor, rport), n, CONCURRENCY), pid),
        Contender(f"bareosproto console login, cleartext, {CONCURRENCY} concurrent", n,
                  lambda: concurrently(login(reactor, dport, False), n, CONCURRENCY), pid),
        Contender(f"bareosproto console login, TLS-PSK, {CONCURRENCY} concurrent", n,
                  lambda: concurrently(login(reactor, dport, True), n, CONCURRENCY), pid),
    ]
    sequential = [
        Contender("raw TCP connect/close, blocking, sequential", seq,
                  blocking(blocking_raw_cycles, rport, seq, in_thread=args.same_process), pid),
        Contender("python-bareos DirectorConsole login, cleartext, sequential", seq,
                  blocking(python_bareos_logins, dport, seq, in_thread=args.same_process), pid),
        Contender("python-bareos DirectorConsole login, TLS-PSK, sequential", seq,
                  blocking(python_bareos_logins, dport, seq, True, in_thread=args.same_process), pid),
    ]
    print(f"handshakes: {n} logins per timed run with {CONCURRENCY} clients, {seq} sequential "
          f"python-bareos logins, {args.repeats} repeats after a warm-up; Python {sys.version.split()[0]}; "
          f"{where}; {os.cpu_count()} CPUs")
    try:
        await race(concurrent + sequential, args.repeats)
    finally:
        if server is not None:
            assert server.stdin is not None
            server.stdin.close()
            server.wait(10)
    table(f"(a) our clients, {CONCURRENCY} concurrent (reactor: {type(reactor).__name__})", concurrent)
    table("(b) blocking clients, one at a time", sequential)
    print()
    for mode, ours, pyb in (("cleartext", concurrent[1], sequential[1]), ("TLS-PSK", concurrent[2], sequential[2])):
        ratio = ours.best / pyb.best
        rounds = statistics.median(o[0] / p[0] for o, p in zip(ours.runs, pyb.runs))
        print(f"{mode}: our logins/s ({CONCURRENCY} concurrent) over python-bareos logins/s (sequential): "
              f"{ratio:.2f}x, target >= 3x: {'met' if ratio >= 3 else 'NOT MET'}; "
              f"median of the per-round ratios {rounds:.2f}x")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short run (a few seconds)")
    parser.add_argument("--repeats", type=int, help="timed repeats per contender (after one warm-up)")
    parser.add_argument("--logins", type=int, help="logins per timed run of the concurrent contenders")
    parser.add_argument("--sequential", type=int, help="logins per timed run of python-bareos")
    parser.add_argument("--same-process", action="store_true",
                        help="run the server on this process's reactor instead of its own process")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)  # the server process
    args = parser.parse_args(argv)
    if args.serve:
        serve()
        return
    args.repeats = args.repeats or (2 if args.quick else 5)
    args.logins = args.logins or (500 if args.quick else 2000)
    args.sequential = args.sequential or (100 if args.quick else 400)
    task.react(lambda reactor: defer.Deferred.fromCoroutine(amain(reactor, args)))


if __name__ == "__main__":
    main()
