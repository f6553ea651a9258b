"""Console logins per second against our Director-side server, printed (nothing asserted).

    python bench/handshakes.py            # full run
    python bench/handshakes.py --quick    # a few seconds

One process, one reactor, everything on 127.0.0.1.  The server is a
``BareosServerFactory`` with ``Daemon.DIRECTOR`` that knows two consoles and
whose ``on_channel`` is trivial: for console ``bench`` it closes right after the
greeting (``1000\\x1eOK: ...`` and ``1002\\x1e...``), for console ``pyb`` it
answers the one command python-bareos sends after its login
(``autodisplay off``) with ``BNET_EOD`` and then closes.

Contenders, interleaved round-robin with the order rotated every repeat:

(a) 50 concurrent clients of ours (``connect()`` with a console
    ``ClientConnection``), cleartext and TLS-PSK (TLS 1.3): a login is TCP
    connect, Hello, CRAM-MD5 both ways, greeting, close.  Baseline: 50
    concurrent raw TCP connect/close cycles on the same reactor (the server
    closes at once, the client waits for the end, as in a login).
(b) python-bareos ``DirectorConsole`` (blocking, so sequential, in a thread),
    cleartext and TLS-PSK: connect, login, ``autodisplay off``, close.  Baseline: a blocking
    raw TCP connect/close loop in a thread against the same raw server.

Rates are logins (or cycles) per second; "best" is the fastest repeat,
"median" the median; the ratio is best over the baseline's best (how many
logins per raw TCP connection a second buys).
"""

from __future__ import annotations

import argparse
import socket
import statistics
import sys
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


class WaitForClose(Protocol):
    def __init__(self) -> None:
        self.done: defer.Deferred[None] = defer.Deferred()

    def connectionLost(self, reason: Failure = Failure(ConnectionError())) -> None:
        self.done.callback(None)


# -- one cycle of each contender --------------------------------------------------------------------


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


async def concurrently(one: Callable[[], Awaitable[None]], total: int, concurrency: int) -> float:
    """Run ``total`` cycles with ``concurrency`` workers; return the seconds taken."""
    left = [total]

    async def worker() -> None:
        while left[0] > 0:
            left[0] -= 1
            await one()

    t0 = time.perf_counter()
    await defer.gatherResults([defer.Deferred.fromCoroutine(worker()) for _ in range(concurrency)],
                              consumeErrors=True)
    return time.perf_counter() - t0


def python_bareos_logins(port: int, count: int, tls: bool = False) -> float:
    from bareos.bsock import DirectorConsole

    t0 = time.perf_counter()
    for _ in range(count):
        console = DirectorConsole(address="127.0.0.1", port=port, name="pyb-tls" if tls else "pyb",
                                  password=PASSWORD, tls_psk_enable=tls)
        console.close()
    return time.perf_counter() - t0


def blocking_raw_cycles(port: int, count: int) -> float:
    t0 = time.perf_counter()
    for _ in range(count):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            while sock.recv(4096):
                pass
    return time.perf_counter() - t0


# -- reporting ------------------------------------------------------------------------------------


class Contender:
    def __init__(self, name: str, count: int, run: Callable[[], Awaitable[float]]) -> None:
        self.name = name
        self.count = count
        self.run = run
        self.rates: list[float] = []

    async def once(self, record: bool = True) -> None:
        seconds = await self.run()
        if record:
            self.rates.append(self.count / seconds)

    @property
    def best(self) -> float:
        return max(self.rates)

    @property
    def median(self) -> float:
        return statistics.median(self.rates)


async def race(contenders: list[Contender], repeats: int) -> None:
    for c in contenders:  # warm-up
        await c.once(record=False)
    for r in range(repeats):
        for i in range(len(contenders)):
            await contenders[(i + r) % len(contenders)].once()


ROW = "{:<58} {:>10} {:>10} {:>8}  {}"


def table(title: str, baseline: Contender, others: list[Contender]) -> None:
    print()
    print(title)
    print(ROW.format("contender", "best/s", "median/s", "ratio", ""))
    print(ROW.format(baseline.name, f"{baseline.best:,.0f}", f"{baseline.median:,.0f}", "1.000", "(baseline)"))
    for c in others:
        print(ROW.format(c.name, f"{c.best:,.0f}", f"{c.median:,.0f}", f"{c.best / baseline.best:.3f}", ""))


async def amain(reactor: Any, args: argparse.Namespace) -> None:
    director = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(director_factory(reactor))
    raw = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(Factory.forProtocol(CloseAtOnce))
    dport, rport = director.getHost().port, raw.getHost().port
    n = args.logins
    seq = args.sequential
    reactor.suggestThreadPoolSize(2)

    concurrent = [
        Contender(f"raw TCP connect/close, {CONCURRENCY} concurrent", n,
                  lambda: concurrently(raw_cycle(reactor, rport), n, CONCURRENCY)),
        Contender(f"bareosproto console login, cleartext, {CONCURRENCY} concurrent", n,
                  lambda: concurrently(login(reactor, dport, False), n, CONCURRENCY)),
        Contender(f"bareosproto console login, TLS-PSK, {CONCURRENCY} concurrent", n,
                  lambda: concurrently(login(reactor, dport, True), n, CONCURRENCY)),
    ]
    sequential = [
        Contender("raw TCP connect/close, blocking, sequential", seq,
                  lambda: deferToThread(blocking_raw_cycles, rport, seq)),
        Contender("python-bareos DirectorConsole login, cleartext, sequential", seq,
                  lambda: deferToThread(python_bareos_logins, dport, seq)),
        Contender("python-bareos DirectorConsole login, TLS-PSK, sequential", seq,
                  lambda: deferToThread(python_bareos_logins, dport, seq, True)),
    ]
    print(f"handshakes: {n} logins per timed run with {CONCURRENCY} clients, {seq} sequential "
          f"python-bareos logins, {args.repeats} repeats after a warm-up; Python {sys.version.split()[0]}")
    await race(concurrent, args.repeats)
    table("(a) our clients against our Director (reactor: " + type(reactor).__name__ + ")", concurrent[0], concurrent[1:])
    await race(sequential, args.repeats)
    table("(b) python-bareos (blocking, in a thread) against our Director", sequential[0], sequential[1:])
    print()
    for mode, ours, pyb in (("cleartext", concurrent[1], sequential[1]), ("TLS-PSK", concurrent[2], sequential[2])):
        ratio = ours.best / pyb.best
        print(f"{mode}: our logins/s ({CONCURRENCY} concurrent) over python-bareos logins/s (sequential): "
              f"{ratio:.1f}x, target >= 3x: {'met' if ratio >= 3 else 'NOT MET'}")
    await director.stopListening()
    await raw.stopListening()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short run (a few seconds)")
    parser.add_argument("--repeats", type=int, help="timed repeats per contender (after one warm-up)")
    parser.add_argument("--logins", type=int, help="logins per timed run of the concurrent contenders")
    parser.add_argument("--sequential", type=int, help="logins per timed run of python-bareos")
    args = parser.parse_args(argv)
    args.repeats = args.repeats or (2 if args.quick else 3)
    args.logins = args.logins or (300 if args.quick else 1500)
    args.sequential = args.sequential or (30 if args.quick else 200)
    task.react(lambda reactor: defer.Deferred.fromCoroutine(amain(reactor, args)))


if __name__ == "__main__":
    main()
