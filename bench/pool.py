#!/usr/bin/env python3
"""Benchmark of the Director's waiting-connection pool; prints figures, asserts nothing.

One Director process (this one) holds N waiting client-initiated connections
opened by N ``ClientInitiatedConnector`` File Daemons running in a second
process (started by this script), all over TCP on 127.0.0.1 in cleartext.
Measured in the Director process:

* RSS per waiting connection: (RSS with N pooled - RSS listening, empty) / N;
* ``take_now()`` and ``take()`` (the Deferred API) per call with 10 entries
  in the pool and with N entries: the same ten connections each time, alone
  or among the others, put back untimed, so that only the pool size
  differs; and 1,000 different clients in a row (cold CPU caches);
* rendering the ``status dir`` pool table with N entries (best of several);
* CPU time used while the N connections sit idle for a while.

For scale, a real bareos-dir holds a waiting connection in about 5.6 KB of
RSS and needs 1.9 s to print ``status dir`` with 5,000 waiting clients.
Targets: RSS/connection <= 5.6 KB, take at N <= 2x take at 10, status table
at N <= 50 ms, idle CPU <= 1 %.

    python bench/pool.py            # 10,000 connections, 30 s idle
    python bench/pool.py --quick    # 1,000 connections, 5 s idle
    python bench/pool.py --generic-factory   # the Director as BareosServerFactory + pool.offer
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

# Run from a checkout even without the editable install.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from twisted.internet import reactor as _reactor  # noqa: E402
from twisted.internet.defer import Deferred  # noqa: E402
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint  # noqa: E402
from twisted.internet.task import deferLater, react  # noqa: E402

from bareosproto.connection import Credentials, Daemon, ServerConfig  # noqa: E402
from bareosproto.keys import password_key  # noqa: E402
from bareosproto.names import ResourceType  # noqa: E402
from bareosproto.tls_policy import TlsPolicy  # noqa: E402
from bareosproto.twisted.client_initiated import ClientInitiatedConnector, client_initiated_connection  # noqa: E402
from bareosproto.twisted.factory import BareosServerFactory  # noqa: E402
from bareosproto.twisted.pool import DirectorPoolFactory, WaitingConnectionPool  # noqa: E402

reactor: Any = _reactor

KEY = password_key("bench-client-password")
TARGET_RSS_KB = 5.6
TARGET_TAKE_RATIO = 2.0
TARGET_STATUS_MS = 50.0
TARGET_IDLE_CPU = 1.0  # percent


def raise_nofile(needed: int) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else max(needed, soft)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft < needed:
        print(f"warning: open-files limit {soft} is below the {needed} this run needs", file=sys.stderr)
    return soft


def rss_kb() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def cpu_seconds() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def name_of(i: int) -> str:
    return f"bench-fd-{i:05d}"


# -- the FD process -------------------------------------------------------------------------


async def fd_process(port: int, count: int, batch: int) -> None:
    raise_nofile(count + 200)
    fds = []

    def on_job(channel: Any) -> None:
        channel.close()

    for start in range(0, count, batch):
        for i in range(start, min(count, start + batch)):
            endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=30)
            fd = ClientInitiatedConnector(reactor, endpoint, client_initiated_connection(name_of(i), KEY, reactor),
                                          on_job, first_retry=0.5, max_retry=5.0)
            fd.startService()
            fds.append(fd)
        await deferLater(reactor, 0.02, lambda: None)
    print("fds started", flush=True)
    await Deferred()  # until killed


# -- the Director process --------------------------------------------------------------------


def time_takes(pool: WaitingConnectionPool, names: list[str], rounds: int, deferred: bool = False) -> list[float]:
    """Per-call seconds of ``take_now(name)`` (or ``take(name)``, the Deferred API, if ``deferred``) over
    ``names``, each taken once per round and put back untimed."""
    per_call = []
    perf = time.perf_counter
    gc.disable()  # as timeit does: no collection inside a timed batch
    try:
        _time_rounds(pool, names, rounds, deferred, per_call, perf)
    finally:
        gc.enable()
    return per_call


def move(src: WaitingConnectionPool, dst: WaitingConnectionPool, names: list[str]) -> None:
    for name in names:
        channel = src.take_now(name)
        assert channel is not None
        dst.add(channel)


def _time_rounds(pool: WaitingConnectionPool, names: list[str], rounds: int, deferred: bool,
                 per_call: list[float], perf: Any) -> None:
    for _ in range(rounds):
        order = names[:]
        random.shuffle(order)
        taken: list[Any] = []
        if deferred:
            take = pool.take
            t0 = perf()
            for name in order:
                take(name).addCallback(taken.append)
            t1 = perf()
        else:
            take_now = pool.take_now
            t0 = perf()
            for name in order:
                taken.append(take_now(name))
            t1 = perf()
        per_call.append((t1 - t0) / len(order))
        assert len(taken) == len(order)
        for channel in taken:
            assert channel is not None
            pool.add(channel)


async def director(args: argparse.Namespace) -> None:
    count = args.count
    limit = raise_nofile(count + 200)
    print(f"connections: {count}, idle period: {args.idle} s, open-files limit: {limit}")

    def lookup(rtype: ResourceType, name: str) -> Credentials | None:
        return Credentials(KEY, TlsPolicy.NONE) if rtype is ResourceType.R_CLIENT else None

    pool = WaitingConnectionPool(reactor)
    config = ServerConfig(daemon=Daemon.DIRECTOR, name="bench-dir", lookup=lookup, tls=False)
    factory: BareosServerFactory
    if args.generic_factory:
        factory = BareosServerFactory(config, reactor, pool.offer)
    else:
        factory = DirectorPoolFactory(config, reactor, pool)
    print(f"Director factory: {type(factory).__name__}")
    listening = await TCP4ServerEndpoint(reactor, 0, backlog=4096, interface="127.0.0.1").listen(factory)
    port = listening.getHost().port
    gc.collect()
    rss_empty = rss_kb()

    cmd = [sys.executable, __file__, "--fd-process", "--port", str(port), "--count", str(count)]
    fd_proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    try:
        t0 = time.monotonic()
        while len(pool) < count:
            if fd_proc.poll() is not None:
                raise SystemExit(f"the FD process ended early ({fd_proc.returncode})")
            if time.monotonic() - t0 > 120 + count / 50:
                raise SystemExit(f"only {len(pool)} of {count} connections after {time.monotonic() - t0:.0f} s")
            await deferLater(reactor, 0.05, lambda: None)
        fill = time.monotonic() - t0
        await deferLater(reactor, 0.5, lambda: None)  # let the last handshakes settle
        gc.collect()
        rss_full = rss_kb()
        per_conn = (rss_full - rss_empty) / count
        print(f"pooled {len(pool)} connections in {fill:.1f} s ({count / fill:.0f}/s)")
        print(f"RSS: empty {rss_empty / 1024:.1f} MiB, with {count} waiting {rss_full / 1024:.1f} MiB "
              f"-> {per_conn:.2f} KB per connection (target <= {TARGET_RSS_KB} KB, ratio {per_conn / TARGET_RSS_KB:.2f})")

        # take() at 10 and at N entries: the same ten connections, alone in a pool of their own or among
        # the N - 10 others, so that only the pool size differs; interleaved so that noise hits both alike
        names = pool.names()
        ten = random.sample(names, 10)
        small_pool = WaitingConnectionPool(reactor)
        large: list[float] = []
        small: list[float] = []
        large_d: list[float] = []
        small_d: list[float] = []
        for _ in range(200):
            large.append(statistics.fmean(time_takes(pool, ten, 10)))
            large_d.append(statistics.fmean(time_takes(pool, ten, 10, deferred=True)))
            move(pool, small_pool, ten)
            small.append(statistics.fmean(time_takes(small_pool, ten, 10)))
            small_d.append(statistics.fmean(time_takes(small_pool, ten, 10, deferred=True)))
            move(small_pool, pool, ten)
        t_large, t_small = min(large), min(small)
        print(f"take_now(): {t_small * 1e6:.2f} us at 10 entries (median {statistics.median(small) * 1e6:.2f}), "
              f"{t_large * 1e6:.2f} us at {len(pool)} entries (median {statistics.median(large) * 1e6:.2f}) "
              f"-> ratio {t_large / t_small:.2f} (target <= {TARGET_TAKE_RATIO})")
        td_large, td_small = min(large_d), min(small_d)
        print(f"take() (Deferred, a connection waiting): {td_small * 1e6:.2f} us at 10 entries, "
              f"{td_large * 1e6:.2f} us at {len(pool)} entries -> ratio {td_large / td_small:.2f}")
        # and cold: 1,000 different clients in a row, each connection's objects out of the CPU caches
        sample = random.sample(names, min(1000, len(names)))
        cold = time_takes(pool, sample, 20)
        print(f"take_now() of 1,000 different clients in a row at {len(pool)} entries: "
              f"{min(cold) * 1e6:.2f} us (median {statistics.median(cold) * 1e6:.2f}) "
              f"(memory latency of touching a connection's objects, not the pool size)")

        # the status table
        times = []
        for _ in range(7):
            t = time.perf_counter()
            frames = pool.status_frames()
            times.append(time.perf_counter() - t)
        size = sum(len(f) for f in frames)
        best = min(times) * 1000
        print(f"status dir pool table, {len(pool)} rows ({len(frames)} frames, {size / 1024:.0f} KiB): "
              f"{best:.1f} ms (median {statistics.median(times) * 1000:.1f}) "
              f"(target <= {TARGET_STATUS_MS} ms, ratio {best / TARGET_STATUS_MS:.2f})")
        t = time.perf_counter()
        pool.status_json()
        print(f"status dir pool JSON (API 2), {len(pool)} rows: {(time.perf_counter() - t) * 1000:.1f} ms")

        # idle CPU
        gc.collect()
        c0, w0 = cpu_seconds(), time.monotonic()
        await deferLater(reactor, args.idle, lambda: None)
        c1, w1 = cpu_seconds(), time.monotonic()
        cpu = 100 * (c1 - c0) / (w1 - w0)
        print(f"idle CPU over {w1 - w0:.1f} s with {len(pool)} waiting: {c1 - c0:.3f} s = {cpu:.3f} % "
              f"(target <= {TARGET_IDLE_CPU} %)")
        print(f"pool counters: added {pool.added}, taken {pool.taken}, lost {pool.lost}, dropped {pool.dropped}")

        met = {
            "rss": per_conn <= TARGET_RSS_KB,
            "take": t_large / t_small <= TARGET_TAKE_RATIO,
            "status": best <= TARGET_STATUS_MS,
            "idle-cpu": cpu <= TARGET_IDLE_CPU,
        }
        print("targets: " + ", ".join(f"{k} {'met' if v else 'MISSED'}" for k, v in met.items()))
        if args.json:
            print(json.dumps({"count": count, "rss_kb_per_conn": per_conn, "take_us_10": t_small * 1e6,
                              "take_us_n": t_large * 1e6, "status_ms": best, "idle_cpu_pct": cpu}))
    finally:
        fd_proc.terminate()
        try:
            fd_proc.wait(10)
        except subprocess.TimeoutExpired:
            fd_proc.kill()
        pool.stop()
        await listening.stopListening()
        for proto in list(factory.protocols):
            proto.abort()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1,000 connections and 5 s idle")
    parser.add_argument("--count", type=int, help="number of waiting connections")
    parser.add_argument("--idle", type=float, help="seconds of idle CPU measurement")
    parser.add_argument("--json", action="store_true", help="also print the figures as one JSON line")
    parser.add_argument("--generic-factory", action="store_true",
                        help="a plain BareosServerFactory feeding pool.offer instead of DirectorPoolFactory")
    parser.add_argument("--fd-process", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, default=250, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.count is None:
        args.count = 1000 if args.quick else 10_000
    if args.idle is None:
        args.idle = 5.0 if args.quick else 30.0
    if args.fd_process:
        react(lambda r: Deferred.fromCoroutine(fd_process(args.port, args.count, args.batch)))
    else:
        react(lambda r: Deferred.fromCoroutine(director(args)))


if __name__ == "__main__":
    main()
