#!/usr/bin/env python3
"""Benchmark of the FD -> SD data channel; prints figures, asserts nothing.

MB/s of a backup stream of 64 KiB data messages from our FD
(:class:`~bareosproto.twisted.datachannel.DataCommander`) to our SD
(:class:`~bareosproto.twisted.datachannel.DataAnswerer` with a sink that
counts the bytes), over loopback TCP in one process and one reactor:

* cleartext, against a raw Twisted TCP pump of the same framed bytes (a push
  producer writing 4-byte header + 64 KiB payload per message, a receiver that
  counts bytes);
* TLS-PSK (TLS 1.3), against a raw ``ssl.MemoryBIO`` pump of the same frames
  (one ``SSLObject.write()`` per frame on the sender, reads until
  ``SSLWantReadError`` on the receiver) over the same kind of TCP pump.

The counting sink of the compared rows sets ``DataSink.accepts_views``: its
``write()`` gets each payload as a ``memoryview`` of the buffer it was read (or
decrypted, or, across reads, gathered) into, valid only during the call, with
no copy per frame.  Two reference rows run the same with a sink that takes the
default, ``bytes`` (a copy of each payload, which a sink may keep).

Both ends of every compared variant use the same transport settings (``TCP_NODELAY``, and the
data channel's ``SEND_BUFFER`` of 256 KiB as ``bufferSize``); reference rows show the raw
pumps with Twisted's default ``bufferSize`` of 64 KiB, and the raw pumps whose receiver
runs :class:`~bareosproto.frames.FrameDecoder` on what it reads (or decrypts) and counts the
payloads: with ``receive_frames()``, the least any receiver that hands out each frame's payload
as ``bytes`` must do, and with ``receive_views()``, the least one that hands out views must do
(it copies only the frames that span reads), as the raw pumps' receivers only count bytes.  The
time runs from the first data frame to the sink's last byte (the handshake and the session
commands are outside it).  Variants run interleaved (round-robin, order rotated each repeat) so
a noisy machine slows them alike; ratios use the best time of each, the median is shown beside
it, and the "cpu" columns use process time (user + system), which other processes on a busy
machine do not inflate.

    python bench/data_channel.py            # 256 MiB per run, 6 timed rounds
    python bench/data_channel.py --quick    # 32 MiB per run, 4 timed rounds
"""

from __future__ import annotations

import argparse
import gc
import ssl
import statistics
import struct
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from twisted.internet import defer, reactor  # noqa: E402
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol  # noqa: E402
from twisted.internet.interfaces import IPushProducer  # noqa: E402
from twisted.internet.protocol import Factory, Protocol  # noqa: E402
from zope.interface import implementer  # noqa: E402

from bareosproto.connection import Daemon  # noqa: E402
from bareosproto.frames import FrameDecoder  # noqa: E402
from bareosproto.keys import Secret  # noqa: E402
from bareosproto.tls import psk_client_context, psk_server_context  # noqa: E402
from bareosproto.twisted.datachannel import (  # noqa: E402
    SEND_BUFFER,
    DataCommander,
    DataSink,
    connect_fd_to_sd,
    data_server_factory,
)

KiB = 1024
MiB = 1024 * KiB
MESSAGE = 64 * KiB
TARGET = 0.85
KEY = Secret("ABCD-EFGH-IJKL-MNOP-ABCD-EFGH-IJKL-MNOP")
JOB = "bench.2026-11-30_00.00.00_01"
PAYLOAD = bytes(range(256)) * (MESSAGE // 256)
HEADER = struct.pack(">i", MESSAGE)
FRAME = HEADER + PAYLOAD
R: Any = reactor


# -- the raw pumps -------------------------------------------------------------------


class _Counter(Protocol):
    """Counts received bytes; optionally decrypts them first (TLS pump) and decodes the frames
    (counting header and payload of each)."""

    def __init__(self, expected: int, tls: ssl.SSLContext | None, buffer_size: int,
                 decode: str | None = None) -> None:
        self.buffer_size = buffer_size
        self.expected = expected
        self.received = 0
        self.decoder = FrameDecoder() if decode else None
        self.views = decode == "views"
        self.done: defer.Deferred[None] = defer.Deferred()
        self.tls = None
        if tls is not None:
            self.incoming = ssl.MemoryBIO()
            self.outgoing = ssl.MemoryBIO()
            self.tls = tls.wrap_bio(self.incoming, self.outgoing, server_side=True)

    def connectionMade(self) -> None:
        self.transport.bufferSize = self.buffer_size  # type: ignore[union-attr]
        self.transport.setTcpNoDelay(True)  # type: ignore[union-attr]  # as the data channel does

    def dataReceived(self, data: bytes) -> None:
        if self.tls is None:
            self._count(data)
        else:
            self.incoming.write(data)
            try:
                while True:
                    self._count(self.tls.read(65536))
            except ssl.SSLWantReadError:
                pass
            out = self.outgoing.read()
            if out:
                self.transport.write(out)  # type: ignore[union-attr]
        if self.received >= self.expected and not self.done.called:
            self.done.callback(None)

    def _count(self, data: bytes) -> None:
        if self.decoder is None:
            self.received += len(data)
        elif self.views:
            for view in self.decoder.receive_views(data):
                self.received += 4 + len(view)  # type: ignore[arg-type]
        else:
            for event in self.decoder.receive_data(data):
                self.received += 4 + len(event.payload)  # type: ignore[attr-defined]


@implementer(IPushProducer)
class _Pump(Protocol):
    """Writes ``count`` frames, pausing when the transport asks (TLS: through an SSLObject)."""

    def __init__(self, count: int, tls: ssl.SSLContext | None, buffer_size: int) -> None:
        self.buffer_size = buffer_size
        self.left = count
        self.paused = True
        self.started: defer.Deferred[None] = defer.Deferred()
        self.tls = None
        if tls is not None:
            self.incoming = ssl.MemoryBIO()
            self.outgoing = ssl.MemoryBIO()
            self.tls = tls.wrap_bio(self.incoming, self.outgoing, server_side=False)

    def connectionMade(self) -> None:
        self.transport.bufferSize = self.buffer_size  # type: ignore[union-attr]
        self.transport.setTcpNoDelay(True)  # type: ignore[union-attr]  # as the data channel does
        if self.tls is None:
            self.started.callback(None)
        else:
            self._handshake()

    def _handshake(self) -> None:
        assert self.tls is not None
        try:
            self.tls.do_handshake()
            done = True
        except ssl.SSLWantReadError:
            done = False
        out = self.outgoing.read()
        if out:
            self.transport.write(out)  # type: ignore[union-attr]
        if done and not self.started.called:
            self.started.callback(None)

    def dataReceived(self, data: bytes) -> None:
        if self.tls is not None:
            self.incoming.write(data)
            if not self.started.called:
                self._handshake()
            else:
                try:
                    self.tls.read(65536)  # session tickets
                except ssl.SSLWantReadError:
                    pass

    def start(self) -> None:
        self.transport.registerProducer(self, True)  # type: ignore[union-attr]
        self.resumeProducing()

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        write = self.transport.write  # type: ignore[union-attr]
        tls = self.tls
        while not self.paused and self.left > 0:
            self.left -= 1
            if tls is None:
                write(FRAME)
            else:
                tls.write(FRAME)
                write(self.outgoing.read())
        if self.left == 0:
            self.left = -1
            self.transport.unregisterProducer()  # type: ignore[union-attr]

    def stopProducing(self) -> None:
        self.left = -1


async def raw_pump(count: int, tls: bool, buffer_size: int = SEND_BUFFER,
                   decode: str | None = None) -> tuple[float, float]:
    server_ctx = psk_server_context(lambda identity: KEY) if tls else None
    client_ctx = psk_client_context("R_JOB\x1e" + JOB, KEY) if tls else None
    counter = _Counter(count * len(FRAME), server_ctx, buffer_size, decode)
    port = R.listenTCP(0, Factory.forProtocol(lambda: counter), interface="127.0.0.1")
    pump = _Pump(count, client_ctx, buffer_size)
    await connectProtocol(TCP4ClientEndpoint(R, "127.0.0.1", port.getHost().port), pump)
    await pump.started
    t0, c0 = time.perf_counter(), time.process_time()
    pump.start()
    await counter.done
    elapsed = (time.perf_counter() - t0, time.process_time() - c0)
    pump.transport.loseConnection()  # type: ignore[union-attr]
    await port.stopListening()
    return elapsed


# -- ours ----------------------------------------------------------------------------


class _CountingSink(DataSink):
    """Counts the bytes; with ``views`` it opts in to memoryviews (it keeps nothing)."""

    def __init__(self, expected: int, views: bool = True) -> None:
        self.accepts_views = views
        self.expected = expected
        self.received = 0
        self.done: defer.Deferred[None] = defer.Deferred()

    def write(self, data: bytes | memoryview) -> None:
        self.received += len(data)
        if self.received >= self.expected and not self.done.called:
            self.done.callback(None)


@implementer(IPushProducer)
class _Writer:
    def __init__(self, commander: DataCommander, count: int) -> None:
        self.commander = commander
        self.left = count
        self.paused = False

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        write = self.commander.write
        while not self.paused and self.left > 0:
            self.left -= 1
            write(PAYLOAD)
        if self.left == 0:
            self.left = -1
            self.commander.unregisterProducer()

    def stopProducing(self) -> None:
        self.left = -1


async def data_channel(count: int, tls: bool, views: bool = True) -> tuple[float, float]:
    sink = _CountingSink(count * MESSAGE, views)
    done: defer.Deferred[None] = defer.Deferred()

    def on_session(session: Any) -> None:
        session.ticket = 1
        session.sink = sink
        session.when_done().chainDeferred(done)

    factory = data_server_factory(R, daemon=Daemon.SD, name="bench-sd", jobs={JOB: KEY},
                                  on_session=on_session, tls=tls)
    port = R.listenTCP(0, factory, interface="127.0.0.1")
    commander = await connect_fd_to_sd(R, f"tcp:host=127.0.0.1:port={port.getHost().port}",
                                       client="bench-fd", job=JOB, key=KEY, tls=tls)
    await commander.append_open()
    await commander.append_data()
    commander.send_header(1, 2)
    writer = _Writer(commander, count)
    t0, c0 = time.perf_counter(), time.process_time()
    commander.registerProducer(writer, True)
    writer.resumeProducing()
    await sink.done
    elapsed = (time.perf_counter() - t0, time.process_time() - c0)
    commander.end_stream()
    await commander.end_data()
    await commander.append_end()
    await commander.append_close()
    commander.finish()
    await done
    await port.stopListening()
    return elapsed


# -- harness --------------------------------------------------------------------------


class Variant:
    def __init__(self, name: str, run: Callable[[], Awaitable[tuple[float, float]]]) -> None:
        self.name = name
        self.run = run
        self.times: list[float] = []  #: wall clock
        self.cpu: list[float] = []  #: process time (user + system), immune to other processes

    async def once(self) -> None:
        gc.collect()
        wall, cpu = await self.run()
        self.times.append(wall)
        self.cpu.append(cpu)

    def clear(self) -> None:
        self.times.clear()
        self.cpu.clear()

    @property
    def best(self) -> float:
        return min(self.times)

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    @property
    def best_cpu(self) -> float:
        return min(self.cpu)


ROW = "{:<40} {:>11} {:>11} {:>7} {:>11} {:>7}  {}"


async def main(args: argparse.Namespace) -> int:
    total = (32 if args.quick else 256) * MiB
    repeats = args.repeats or (4 if args.quick else 6)
    count = total // MESSAGE
    default = 64 * KiB  # Twisted's own bufferSize
    variants = [
        Variant("raw Twisted TCP pump", lambda: raw_pump(count, False)),
        Variant("bareosproto FD -> SD, cleartext", lambda: data_channel(count, False)),
        Variant("raw ssl.MemoryBIO pump (TLS 1.3 PSK)", lambda: raw_pump(count, True)),
        Variant("bareosproto FD -> SD, TLS-PSK", lambda: data_channel(count, True)),
        Variant("raw Twisted TCP pump, bufferSize 64 KiB", lambda: raw_pump(count, False, default)),
        Variant("raw ssl.MemoryBIO pump, bufferSize 64 KiB", lambda: raw_pump(count, True, default)),
        Variant("raw Twisted TCP pump + FrameDecoder", lambda: raw_pump(count, False, decode="bytes")),
        Variant("raw ssl.MemoryBIO pump + FrameDecoder", lambda: raw_pump(count, True, decode="bytes")),
        Variant("raw Twisted TCP pump + decoder views", lambda: raw_pump(count, False, decode="views")),
        Variant("raw ssl.MemoryBIO pump + decoder views", lambda: raw_pump(count, True, decode="views")),
        Variant("bareosproto cleartext, bytes sink", lambda: data_channel(count, False, views=False)),
        Variant("bareosproto TLS-PSK, bytes sink", lambda: data_channel(count, True, views=False)),
    ]
    print(f"Python {sys.version.split()[0]}, {ssl.OPENSSL_VERSION}; {total // MiB} MiB of 64 KiB messages "
          f"per run, best of {repeats}; MB = 10^6 bytes of payload; transport bufferSize "
          f"{SEND_BUFFER // KiB} KiB (the data channel's SEND_BUFFER) unless stated; our sink takes "
          f"memoryviews unless stated")
    t0 = time.perf_counter()
    for v in variants:  # warm-up (and a check that every variant runs)
        await v.once()
    for v in variants:
        v.clear()
    for r in range(repeats):
        for i in range(len(variants)):
            await variants[(i + r) % len(variants)].once()

    def mbps(t: float) -> str:
        return f"{total / t / 1e6:,.0f} MB/s"

    print(ROW.format("name", "best", "median", "ratio", "best (cpu)", "ratio", "target (wall-clock ratio)"))
    missed = []
    for base, ours in ((variants[0], variants[1]), (variants[2], variants[3])):
        print(ROW.format(base.name, mbps(base.best), mbps(base.median), "1.00", mbps(base.best_cpu), "1.00",
                         "(baseline)"))
        ratio = base.best / ours.best
        ok = ratio >= TARGET
        print(ROW.format(ours.name, mbps(ours.best), mbps(ours.median), f"{ratio:.2f}", mbps(ours.best_cpu),
                         f"{base.best_cpu / ours.best_cpu:.2f}", f">= {TARGET:.2f}x  {'met' if ok else 'NOT MET'}"))
        if not ok:
            missed.append((ours.name, ratio))
    print("for reference (ratios against the raw pump of the same kind): the raw pumps with Twisted's default "
          "bufferSize;\nwith a receiver that decodes into bytes (FrameDecoder.receive_frames) or into views "
          "(receive_views);\nours with a sink that takes bytes (the default):")
    clear, tls = (variants[0], variants[1]), (variants[2], variants[3])
    for v, (base, ours) in zip(variants[4:], (clear, tls) * 4):
        print(ROW.format(v.name, mbps(v.best), mbps(v.median), f"{base.best / v.best:.2f}", mbps(v.best_cpu),
                         f"{base.best_cpu / v.best_cpu:.2f}", f"(ours / this: {v.best / ours.best:.2f})"))
    print()
    for base, ours in ((variants[0], variants[1]), (variants[2], variants[3])):
        rounds = [b / o for b, o in zip(base.times, ours.times)]
        print(f"{ours.name}: median of the {len(rounds)} per-round ratios {statistics.median(rounds):.2f} "
              f"(each round runs every variant once; less swayed by one lucky run than best over best)")
    for name, ratio in missed:
        print(f"target not met: {name}: {ratio:.2f}x ({(TARGET - ratio) / TARGET:.0%} short)")
    if not missed:
        print("all 2 targets met")
    print(f"({time.perf_counter() - t0:.1f} s)")
    return 0


def run() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short run (a few seconds)")
    parser.add_argument("--repeats", type=int,
                        help="timed rounds, each running every variant once (after one warm-up round)")
    args = parser.parse_args()
    result: list[int] = []

    def failed(failure: Any) -> None:
        failure.printTraceback()
        result.append(1)

    def go() -> None:
        d = defer.ensureDeferred(main(args))
        d.addCallbacks(result.append, failed)
        d.addBoth(lambda _: R.stop())

    R.callWhenRunning(go)
    R.run()
    sys.exit(result[0] if result else 1)


if __name__ == "__main__":
    run()
