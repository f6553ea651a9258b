"""Hardening report: inputs fuzzed, faults injected, handshakes run, leaks found.

    python bench/hardening.py              # full: 10,000 cycles, 1,000 concurrent handshakes
    python bench/hardening.py --quick      # a short run
    python bench/hardening.py --atheris 1000000   # also run tools/fuzz_atheris.py for N inputs

Printed, not asserted.  Everything runs on 127.0.0.1 in this process (the atheris run in a
child process).
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import re
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from twisted.internet import defer, task

from bareosproto import RemoteProtocolError, ResourceType, TlsPolicy, password_key, session_key
from bareosproto.connection import (
    ClientConnection,
    ConnectionType,
    ConnState,
    Credentials,
    Daemon,
    ServerConfig,
    ServerConnection,
)
from bareosproto.twisted import BareosServerFactory, connect, server_endpoint

KEY = password_key("hardening")
JOB = "job.2026-11-30_10.00.00_01"
JOB_KEY = session_key(bytes(range(16)))
TYPES = {
    ConnectionType.CONSOLE: (Daemon.DIRECTOR, ResourceType.R_CONSOLE, "admin", "admin"),
    ConnectionType.CLIENT_INITIATED: (Daemon.DIRECTOR, ResourceType.R_CLIENT, "fd", "fd"),
    ConnectionType.DIRECTOR_FD: (Daemon.FD, ResourceType.R_DIRECTOR, "dir", "dir"),
    ConnectionType.DIRECTOR_SD: (Daemon.SD, ResourceType.R_DIRECTOR, "dir", "dir"),
    ConnectionType.FD_SD: (Daemon.SD, ResourceType.R_JOB, JOB, "fd"),
    ConnectionType.SD_FD_PASSIVE: (Daemon.FD, ResourceType.R_JOB, JOB, "sd"),
    ConnectionType.SD_SD: (Daemon.SD, ResourceType.R_JOB, JOB, "sd2"),
}


def config(conn_type: ConnectionType, tls: bool) -> ServerConfig:
    daemon, rtype, name, _ = TYPES[conn_type]
    key = JOB_KEY if rtype is ResourceType.R_JOB else KEY
    creds = Credentials(key, TlsPolicy.REQUIRED if tls else TlsPolicy.NONE)
    return ServerConfig(daemon=daemon, name="acceptor", tls=tls, own_tls_policy=creds.tls_policy,
                        lookup=lambda t, n: creds if (t, n) == (rtype, name) else None, failure_delay=0.0)


def client(conn_type: ConnectionType, tls: bool, clock: Any = lambda: 1.0) -> ClientConnection:
    rtype = TYPES[conn_type][1]
    return ClientConnection(conn_type, name=TYPES[conn_type][3], key=JOB_KEY if rtype is ResourceType.R_JOB else KEY,
                            job=JOB, clock=clock, tls=tls, tls_policy=TlsPolicy.REQUIRED if tls else TlsPolicy.NONE)


def faults(rounds: int, rng: random.Random) -> tuple[int, int]:
    """Cut or corrupt live sans-IO pairs at every step; count injected faults and unexpected outcomes."""
    injected = unexpected = 0
    for _ in range(rounds):
        for conn_type in TYPES:
            for tls in (False, True):
                for cut in range(10):
                    c = client(conn_type, tls)
                    s = ServerConnection(config(conn_type, tls), clock=lambda: 1.0)
                    c.initiate()
                    flight = 0
                    mode = rng.choice(["eof", "flip", "garbage"])
                    try:
                        for _ in range(20):
                            for a, b in ((c, s), (s, c)):
                                data = a.data_to_send()
                                if not data:
                                    continue
                                if flight == cut:
                                    injected += 1
                                    if mode == "eof":
                                        data = b""
                                    elif mode == "flip":
                                        i = rng.randrange(len(data))
                                        data = data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1 :]
                                    else:
                                        data = rng.randbytes(rng.randrange(1, 64))
                                flight += 1
                                b.receive_data(data)
                                if not data:
                                    raise StopIteration
                    except (RemoteProtocolError, StopIteration):
                        pass
                    except Exception as exc:  # anything else is a finding
                        unexpected += 1
                        print(f"  unexpected {type(exc).__name__}: {exc} ({conn_type.name}, tls={tls}, cut={cut})")
                    for side in (c, s):
                        if side.state is ConnState.FAILED:
                            if side.data_to_send():
                                unexpected += 1
    return injected, unexpected


def rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


async def network(reactor: Any, concurrent: int, cycles: int) -> dict[str, Any]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 4 * concurrent + 256)), hard))
    factory = BareosServerFactory(config(ConnectionType.CONSOLE, True), reactor, lambda ch: None)
    port = await server_endpoint(reactor, "tcp:0:interface=127.0.0.1:backlog=2048").listen(factory)
    endpoint = f"tcp:host=127.0.0.1:port={port.getHost().port}"
    out: dict[str, Any] = {}

    def login() -> defer.Deferred[Any]:
        return connect(reactor, endpoint, lambda: client(ConnectionType.CONSOLE, True, reactor.seconds),
                       handshake_timeout=120)

    start = time.perf_counter()
    results = await defer.DeferredList([login() for _ in range(concurrent)], consumeErrors=True)
    out["concurrent"] = concurrent
    out["concurrent_failures"] = sum(1 for ok, _ in results if not ok)
    out["concurrent_seconds"] = time.perf_counter() - start
    for ok, ch in results:
        if ok:
            ch.close()
    while factory.protocols:
        await task.deferLater(reactor, 0.01, lambda: None)

    async def run_cycles(n: int) -> None:
        for _ in range(n // 50):
            chans = await defer.gatherResults([login() for _ in range(50)])
            for ch in chans:
                ch.close()
            await defer.gatherResults([ch.protocol.when_closed() for ch in chans])
        while factory.protocols:
            await task.deferLater(reactor, 0.01, lambda: None)

    await run_cycles(2000)  # OpenSSL and the allocator settle after ~1,500 TLS logins
    gc.collect()
    fds0, rss0 = len(os.listdir("/proc/self/fd")), rss_kib()
    start = time.perf_counter()
    await run_cycles(cycles)
    gc.collect()
    out.update(cycles=cycles, cycle_seconds=time.perf_counter() - start, fds_before=fds0,
               fds_after=len(os.listdir("/proc/self/fd")), rss_before=rss0, rss_after=rss_kib())
    await port.stopListening()
    return out


def atheris_run(runs: int) -> str:
    tool = Path(__file__).resolve().parent.parent / "tools" / "fuzz_atheris.py"
    proc = subprocess.run([sys.executable, str(tool), "--runs", str(runs)], capture_output=True, text=True)
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if line.startswith("fuzzed")]
    status = "no unexpected exception" if proc.returncode == 0 else f"FINDING (exit {proc.returncode})"
    done = re.findall(r"Done (\d+) runs", proc.stderr)
    return f"{lines[-1] if lines else 'no report'}; libFuzzer runs {done[-1] if done else '?'}; {status}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--atheris", type=int, default=0, metavar="N", help="also fuzz N inputs with atheris")
    args = parser.parse_args()
    rng = random.Random(20261130)
    rounds, concurrent, cycles = (2, 200, 1000) if args.quick else (10, 1000, 10000)

    start = time.perf_counter()
    injected, unexpected = faults(rounds, rng)
    print(f"faults injected (sans-IO, every type, clear and TLS-PSK): {injected}, "
          f"unexpected outcomes: {unexpected} ({time.perf_counter() - start:.1f} s)")

    result: dict[str, Any] = {}

    async def net(reactor: Any) -> None:
        result.update(await network(reactor, concurrent, cycles))

    from twisted.internet import reactor as global_reactor

    errors: list[Any] = []
    d = defer.Deferred.fromCoroutine(net(global_reactor))
    d.addErrback(errors.append)
    d.addBoth(lambda _: global_reactor.stop())  # type: ignore[attr-defined]
    global_reactor.run()  # type: ignore[attr-defined]
    if errors:
        print(f"the loopback part failed: {errors[0].getTraceback()}")
        return 1
    print(f"concurrent TLS-PSK handshakes: {result['concurrent']}, failures: {result['concurrent_failures']} "
          f"({result['concurrent_seconds']:.2f} s, one reactor thread)")
    print(f"connect/disconnect cycles: {result['cycles']} in {result['cycle_seconds']:.1f} s; "
          f"open fds {result['fds_before']} -> {result['fds_after']}; "
          f"RSS {result['rss_before']} KiB -> {result['rss_after']} KiB "
          f"({(result['rss_after'] - result['rss_before']) / result['cycles'] * 1024:.1f} bytes/cycle)")
    leaks = int(result["fds_after"] > result["fds_before"]) + int(result["rss_after"] - result["rss_before"] > 4096)
    print(f"leaks found: {leaks}")
    if args.atheris:
        print(f"atheris: {atheris_run(args.atheris)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
