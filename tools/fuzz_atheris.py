"""Coverage-guided fuzzing of the sans-IO core with atheris.

    pip install atheris            # or: pip install -e '.[fuzz]'
    python tools/fuzz_atheris.py --runs 1000000            # all targets, round robin
    python tools/fuzz_atheris.py --target server --runs 200000 -- -max_len=512

Targets: ``decoder`` (FrameDecoder under random chunking), ``hello`` (Hello parser, peer
detection, greeting and challenge parsers, bsscanf), ``server`` (our Director, FD and SD
accepting a fuzzed conversation), ``client`` (each connection type talking to a fuzzed peer).
For the two handshake targets the input is a script of frames; a script step may ask the
harness to answer the last challenge *correctly*, so the fuzzer gets past CRAM-MD5 and reaches
the greeting and the open channel.

The only exception the core may raise for peer input is ``RemoteProtocolError``; anything
else is a finding and stops the run with the input saved by libFuzzer (``crash-*``).  At the
end a line ``fuzzed N inputs (...)`` is printed; the exit status is 0 only if no input
raised anything but ``RemoteProtocolError``.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from typing import Callable

from bareosproto import (
    FrameDecoder,
    RemoteProtocolError,
    ResourceType,
    TlsPolicy,
    detect_peer,
    encode_message,
    encode_signal,
    parse_greeting,
    parse_hello,
    password_key,
)
from bareosproto.connection import (
    ClientConnection,
    ConnectionType,
    ConnState,
    Credentials,
    Daemon,
    ServerConfig,
    ServerConnection,
)
from bareosproto.cram import compute_response, parse_challenge
from bareosproto.scan import bsscanf

KEY = password_key("fuzz")
TOKEN = re.compile(rb"auth cram-md5c? (<[^ \n]*>)")
COUNTS: dict[str, int] = {}

HELLOS = [
    b"Hello admin calling version 26.0.0 Version=\"26.0.0\"\n",
    b"Hello *UserAgent* calling\n",
    b"Hello Director bareos-dir calling Version=\"26.0.0\"\n",
    b"Hello Client fd FdProtocolVersion=54 calling\n",
    b"Hello Start Job job.1\n",
    b"Hello Storage calling Start Job job.1\n",
    b"Hello Start Storage Job job.1\n",
]


def lookup(rtype: ResourceType, name: str) -> Credentials | None:
    return Credentials(KEY, TlsPolicy.NONE) if name in ("admin", "*UserAgent*", "bareos-dir", "fd", "job.1") else None


def script(data: bytes) -> list[bytes]:
    """Cut the input into steps: [kind byte][len byte][payload]."""
    steps = []
    i = 0
    while i + 2 <= len(data):
        kind, n = data[i], data[i + 1]
        payload = data[i + 2 : i + 2 + n]
        i += 2 + n
        steps.append(bytes([kind]) + payload)
    return steps


def play(conn: ClientConnection | ServerConnection, steps: list[bytes], first: bytes = b"") -> None:
    """Feed a scripted peer; step kinds: 0-3 frame, 4 signal, 5 correct CRAM response,
    6 `1000 OK auth`, 7 raw bytes, 8 EOF."""
    last_token = b""
    sent = first
    try:
        if first:
            conn.receive_data(first)
        for step in steps:
            out = conn.data_to_send()
            m = TOKEN.search(out)
            if m:
                last_token = m.group(1)
            kind, payload = step[0] % 9, step[1:]
            if kind <= 3:
                data = encode_message(payload)
            elif kind == 4:
                data = encode_signal(-1 - (payload[0] if payload else 3))
            elif kind == 5:
                data = encode_message(compute_response(KEY, last_token) + b"\x00")
            elif kind == 6:
                data = encode_message(b"1000 OK auth\n")
            elif kind == 7:
                data = payload
            else:
                data = b""
            if not data and kind != 8:
                continue
            conn.receive_data(data)
            sent += data
            if kind == 8:
                break
        if conn.state is ConnState.OPEN:
            conn.send_message(b"status")
            conn.data_to_send()
    except RemoteProtocolError:
        pass


def target_decoder(data: bytes) -> None:
    decoder = FrameDecoder()
    cut = (data[0] % 7 + 1) if data else 1
    try:
        for i in range(1, len(data), cut):
            decoder.receive_data(data[i : i + cut])
        decoder.receive_data(b"")
    except RemoteProtocolError:
        pass


def target_hello(data: bytes) -> None:
    for parse in (parse_hello, detect_peer, parse_greeting, parse_challenge):
        try:
            parse(data)  # type: ignore[operator]
        except RemoteProtocolError:
            pass
    bsscanf(data, b"Hello %127s calling version %127s Version=\"%u.%u.%u\"")
    bsscanf(data, b"auth cram-md5 %s ssl=%d")


def target_server(data: bytes) -> None:
    if not data:
        return
    daemon = [Daemon.DIRECTOR, Daemon.FD, Daemon.SD][data[0] % 3]
    config = ServerConfig(daemon=daemon, name="fuzz-daemon", lookup=lookup, tls=False)
    conn = ServerConnection(config, clock=lambda: 1.0, nonce=lambda: 7)
    hello = HELLOS[data[1] % len(HELLOS)] if len(data) > 1 and data[1] < 200 else b""
    play(conn, script(data[2:]), encode_message(hello) if hello else b"")


def target_client(data: bytes) -> None:
    if not data:
        return
    types = list(ConnectionType)
    conn_type = types[data[0] % len(types)]
    conn = ClientConnection(conn_type, name="fuzz", key=KEY, job="job.1", clock=lambda: 1.0, nonce=lambda: 7)
    conn.initiate()
    play(conn, script(data[1:]))


TARGETS: dict[str, Callable[[bytes], None]] = {
    "decoder": target_decoder,
    "hello": target_hello,
    "server": target_server,
    "client": target_client,
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", choices=[*TARGETS, "all"], default="all")
    parser.add_argument("--runs", type=int, default=100_000, help="inputs in total")
    parser.add_argument("libfuzzer_args", nargs="*", help="after --: passed to libFuzzer")
    args = parser.parse_args()
    try:
        import atheris
    except ImportError:
        print("atheris is not installed: pip install atheris", file=sys.stderr)
        return 2
    names = list(TARGETS) if args.target == "all" else [args.target]

    start = time.monotonic()

    def report() -> None:
        total = sum(COUNTS.values())
        detail = ", ".join(f"{k} {v}" for k, v in sorted(COUNTS.items()))
        print(f"fuzzed {total} inputs ({detail}) in {time.monotonic() - start:.0f} s, "
              "unexpected exceptions so far: 0", flush=True)

    def one_input(data: bytes) -> None:
        name = names[data[0] % len(names)] if len(names) > 1 and data else names[0]
        COUNTS[name] = COUNTS.get(name, 0) + 1
        TARGETS[name](data[1:] if len(names) > 1 else data)
        total = sum(COUNTS.values())
        if total % 100_000 == 0 or total == args.runs:
            report()

    # libFuzzer ends the process itself: after --runs inputs without a finding (exit 0),
    # or at the first unexpected exception (traceback, a crash-* file, exit 1).
    atheris.instrument_all()
    argv = [sys.argv[0], f"-runs={args.runs}", *args.libfuzzer_args]
    atheris.Setup(argv, one_input)
    atheris.Fuzz()
    return 0


if __name__ == "__main__":
    sys.exit(main())
