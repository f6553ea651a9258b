"""``bareosproto-fuzz``: bounded mutational fuzzing of a live daemon's handshake.

Loopback only: the target must be in 127.0.0.0/8 or ``::1`` (``localhost``
means 127.0.0.1); anything else is refused before a socket is opened.

How one attempt works.  A :class:`bareosproto.connection.ClientConnection`
builds the handshake a real peer would send (Hello, CRAM-MD5 response, our
challenge, our verdict; inside TLS-PSK with ``--tls psk``).  The attempt plays
it against the daemon step by step and, at one step chosen by a seeded
:class:`random.Random`, sends a mutated version instead: hostile payload edits
(bit flips, cuts, the inserts of :data:`bareosproto.testing.HOSTILE_INSERTS`),
framing changes (split writes, oversized or wrong length headers, signals,
garbage, empty or truncated frames, an extra frame, end of stream) and
step-specific ones (an unknown name, a response in standard base64 or with a
wrong key, a reflected or ``cram-md5c`` challenge, a bad verdict).  It then
records every frame the daemon sends and whether it closed, reset or kept the
connection open.

The expected reply comes from the library's own model of a Bareos daemon:
a :class:`bareosproto.connection.ServerConnection`, configured from what the
unmutated baseline handshake showed (the daemon's name, ``ssl=`` policy,
greeting), seeded with the nonce and time of the daemon's own challenge, and
fed exactly the bytes the attempt sent.  Its output (including the delayed
``1999``/``BNET_TERMINATE`` steps of a refusal) must match the daemon's frame
for frame, and it must close exactly when the model closes.

Findings: ``crash`` (the daemon stops accepting TCP connections), ``hang``
(the model expects a reply or a close, the daemon stays silent and open),
``differs`` (anything else that does not match).  Each finding gets one JSON
reproducer in ``--out``: the exact plaintext writes, expected and received
frames, and the seed; ``--replay FILE`` runs that attempt again.  Exit status:
0 without findings, 1 with findings, 2 for usage or setup errors.

Pacing: ``--rate`` caps attempt starts per second; after an attempt the daemon
refused (Bareos sleeps ``--failure-delay`` seconds, 5 by default, inside a
failed login) a worker waits that long before its next attempt; up to
``--concurrency`` workers run attempts side by side.
"""

from __future__ import annotations

import argparse
import base64
import ipaddress
import json
import random
import re
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from .. import (
    DirectorGreeting,
    FdHelloOk,
    FrameDecoder,
    Message,
    RemoteProtocolError,
    ResourceType,
    ResponseMessage,
    Secret,
    Signal,
    SignalFrame,
    TlsPolicy,
    encode_message,
    encode_signal,
    parse_greeting,
    password_key,
    psk_identity,
    unbash,
)
from ..connection import (
    ClientConnection,
    ConnectionType,
    Credentials,
    Daemon,
    HandshakeComplete,
    ServerConfig,
    ServerConnection,
)
from ..cram import AUTH_FAILED, AUTH_OK, challenge_name, compute_response, parse_challenge
from ..errors import ProtocolError
from ..events import Event
from ..frames import MAX_PACKET_SIZE
from ..names import USER_AGENT
from ..tls import TlsEngine, psk_client_context, psk_server_context
from ..versions import BareosVersion

try:  # the hypothesis strategies module needs hypothesis; its insert list is plain data
    from ..testing import HOSTILE_INSERTS
except ImportError:  # pragma: no cover - hypothesis is a test dependency
    HOSTILE_INSERTS = (b"%s%n%x", b"\x00", b"\x01", b"\x1e", b"\r\n", b"A" * 200, b"\xff\xff\xff\xfc")

__all__ = [
    "main",
    "TargetRefused",
    "parse_target",
    "Settings",
    "Attempt",
    "Fuzzer",
    "STEPS",
    "MUTATIONS",
]

#: The steps the connecting side sends, in order.
STEPS = ("hello", "response", "challenge", "verdict")

_GENERIC = ("hostile", "split", "oversized", "signal", "signal-before", "garbage", "empty",
            "truncate", "extra", "length", "eof")
#: Mutation kinds per step.
MUTATIONS: dict[str, tuple[str, ...]] = {
    "hello": _GENERIC + ("unknown-name", "long-name", "old-form", "version-word"),
    "response": _GENERIC + ("standard-base64", "no-nul", "newline", "wrong-key", "swapcase"),
    "challenge": _GENERIC + ("reflect", "cram-md5c", "no-ssl", "ssl-value", "big-nonce", "bad-token"),
    "verdict": _GENERIC + ("failed", "no-newline", "nul", "lowercase"),
}

#: ``--as`` -> (resource type the daemon looks us up as, daemon we talk to)
_ROLES: dict[str, tuple[ResourceType, Daemon]] = {
    "console": (ResourceType.R_CONSOLE, Daemon.DIRECTOR),
    "director": (ResourceType.R_DIRECTOR, Daemon.FD),
    "client": (ResourceType.R_CLIENT, Daemon.DIRECTOR),
    "storage": (ResourceType.R_JOB, Daemon.FD),
}

_LOOPBACK4 = ipaddress.ip_network("127.0.0.0/8")
_LOOPBACK6 = ipaddress.ip_address("::1")
_TOKEN = re.compile(rb"<(\d+)\.(\d+)@")


class TargetRefused(ValueError):
    """The target is not a loopback address: this tool never sends there."""


def parse_target(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6) -> (address, port), loopback only.

    Only literal addresses in 127.0.0.0/8, ``::1`` and the name ``localhost``
    (taken as 127.0.0.1, no resolver involved) are accepted.
    """
    host, sep, port_text = text.rpartition(":")
    if not sep or not host:
        raise TargetRefused(f"{text!r}: expected HOST:PORT")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if host.lower() == "localhost":
        host = "127.0.0.1"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise TargetRefused(
            f"{host!r} is not a loopback address: this tool only targets 127.0.0.0/8 and ::1"
        ) from None
    loopback = address in _LOOPBACK4 if address.version == 4 else address == _LOOPBACK6
    if not loopback:
        raise TargetRefused(f"{host} is not a loopback address: this tool only targets 127.0.0.0/8 and ::1")
    try:
        port = int(port_text)
    except ValueError:
        raise TargetRefused(f"{port_text!r} is not a port number") from None
    if not 0 < port < 65536:
        raise TargetRefused(f"port {port} out of range")
    return str(address), port


# ---------------------------------------------------------------------------
# settings and results
# ---------------------------------------------------------------------------


@dataclass
class Settings:
    host: str
    port: int
    role: str = "console"
    peer: str = "fd"  #: --as director: the daemon is an FD or an SD
    name: str = USER_AGENT
    key: Secret = field(default_factory=lambda: password_key(""))
    job: str | None = None
    tls: bool = False
    count: int = 100
    time_limit: float = 60.0
    rate: float = 10.0
    failure_delay: float = 5.0
    concurrency: int = 1
    seed: int = 0
    out: Path | None = None
    timeout: float = 5.0
    settle: float = 0.3
    steps: tuple[str, ...] = STEPS
    skip: tuple[str, ...] = ()  #: mutation kinds left out
    canary: bool = False
    verbose: bool = False

    @property
    def conn_type(self) -> ConnectionType:
        if self.role == "console":
            return ConnectionType.CONSOLE
        if self.role == "client":
            return ConnectionType.CLIENT_INITIATED
        if self.role == "storage":
            return ConnectionType.SD_FD_PASSIVE
        return ConnectionType.DIRECTOR_SD if self.peer == "sd" else ConnectionType.DIRECTOR_FD

    @property
    def daemon(self) -> Daemon:
        if self.role == "director" and self.peer == "sd":
            return Daemon.SD
        return _ROLES[self.role][1]

    @property
    def hello_name(self) -> str:
        return self.job if self.role == "storage" and self.job else self.name

    @property
    def target(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass
class PeerInfo:
    """What the unmutated baseline handshake showed about the daemon."""

    qualified_name: bytes = b""
    name: str = ""
    ssl: int = 0
    greeting: bytes | None = None
    release: BareosVersion | None = None
    services_text: str | None = None
    fd_protocol_version: int | None = None


@dataclass
class Write:
    step: str
    data: bytes
    mutated: bool
    pause: float = 0.0


@dataclass
class Attempt:
    index: int
    step: str | None
    mutation: str
    description: str = ""
    writes: list[Write] = field(default_factory=list)
    eof_sent: bool = False
    received: list[tuple[float, bytes]] = field(default_factory=list)  #: (seconds, wire frame)
    received_problem: str | None = None
    end: str = "open"  #: closed, reset, open, tls-error, connect-failed
    expected: list[bytes] = field(default_factory=list)
    expected_end: str = "open"
    expected_delay: float = 0.0
    model_error: str | None = None
    verdict: str = "ok"  #: ok, differs, hang, crash
    detail: str = ""
    duration: float = 0.0
    refused: bool = False
    authenticated: bool = False  #: the honest handshake completed (baseline)
    reproducer: str | None = None

    @property
    def is_finding(self) -> bool:
        return self.verdict != "ok"


# ---------------------------------------------------------------------------
# frames
# ---------------------------------------------------------------------------


def _wire(ev: Message | SignalFrame) -> bytes:
    if isinstance(ev, Message):
        return encode_message(ev.payload) if len(ev.payload) <= MAX_PACKET_SIZE - 4 else (
            len(ev.payload).to_bytes(4, "big") + ev.payload
        )
    return encode_signal(int(ev.signal))


def _split_frames(data: bytes) -> tuple[list[bytes], str | None]:
    decoder = FrameDecoder()
    frames: list[bytes] = []
    try:
        events: list[Any] = decoder.receive_data(data) if data else []
        problem = None if not decoder.buffered else f"{decoder.buffered} bytes of an unfinished frame"
    except RemoteProtocolError as exc:
        events, problem = list(exc.events), exc.message
    for ev in events:
        if isinstance(ev, (Message, SignalFrame)):
            frames.append(_wire(ev))
    return frames, problem


def show_frame(frame: bytes, width: int = 90) -> str:
    """One wire frame as a short readable string."""
    header = int.from_bytes(frame[:4], "big", signed=True)
    if header < 0:
        try:
            return Signal(header).name
        except ValueError:
            return f"BNET_SIGNAL({header})"
    payload = frame[4:]
    text = "".join(
        {0x0A: "\\n", 0x00: "\\0", 0x1E: "\\x1e", 0x01: "\\x01", 0x0D: "\\r", 0x09: "\\t"}.get(b)
        or (chr(b) if 0x20 <= b < 0x7F else f"\\x{b:02x}")
        for b in payload[:width]
    )
    more = "..." if len(payload) > width else ""
    return f"[{header}] {text}{more}"


# ---------------------------------------------------------------------------
# the live connection: a blocking socket, TLS through the library's engine
# ---------------------------------------------------------------------------


class _Live:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.t0 = time.monotonic()
        self.sock = socket.create_connection((settings.host, settings.port), timeout=settings.timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.tls: TlsEngine | None = None
        if settings.tls:
            identity = psk_identity(_ROLES[settings.role][0], settings.hello_name)
            self.tls = TlsEngine(psk_client_context(identity, settings.key), server_side=False)
        self.decoder = FrameDecoder()
        self.frames: list[tuple[float, bytes]] = []
        self.problem: str | None = None
        self.end: str | None = None

    @property
    def local_host(self) -> str:
        return str(self.sock.getsockname()[0])

    def _send_raw(self, data: bytes) -> None:
        if not data or self.end is not None:
            return
        try:
            self.sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            self.end = "reset"
        except OSError as exc:
            self.end = f"reset ({exc.strerror or exc})"

    def start_tls(self, deadline: float) -> None:
        assert self.tls is not None
        self._send_raw(self.tls.data_to_send())
        while not self.tls.handshake_done and self.end is None:
            if not self._pump(deadline):
                raise TimeoutError("TLS handshake timed out")
        if not self.tls.handshake_done:
            raise ConnectionError(f"TLS handshake failed: {self.end}")

    def write(self, plain: bytes) -> None:
        if self.tls is not None:
            if self.end is not None:
                return
            self.tls.send(plain)
            self._send_raw(self.tls.data_to_send())
        else:
            self._send_raw(plain)

    def shutdown_write(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def _pump(self, deadline: float) -> bool:
        """One receive; False when the deadline passed with nothing."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        self.sock.settimeout(remaining)
        try:
            data = self.sock.recv(65536)
        except (TimeoutError, socket.timeout):
            return False
        except ConnectionResetError:
            self.end = "reset"
            self._plain(b"", eof=True)
            return True
        except OSError as exc:
            self.end = f"reset ({exc.strerror or exc})"
            return True
        if not data:
            self.end = "closed"
        if self.tls is not None:
            try:
                plain = self.tls.receive_data(data)
                self._send_raw(self.tls.data_to_send())
            except ProtocolError as exc:
                self.end = self.end or "tls-error"
                self.problem = self.problem or f"TLS: {exc.message}"
                return True
        else:
            plain = data
        self._plain(plain, eof=not data)
        return True

    def _plain(self, plain: bytes, eof: bool) -> None:
        if self.problem is not None:
            return
        now = time.monotonic() - self.t0
        try:
            events: list[Any] = []
            if plain:
                events = self.decoder.receive_data(plain)
            if eof:
                self.decoder.receive_data(b"")
        except RemoteProtocolError as exc:
            events = list(exc.events) if not events else events
            self.problem = exc.message
        for ev in events:
            if isinstance(ev, (Message, SignalFrame)):
                self.frames.append((now, _wire(ev)))

    def read_until(self, deadline: float, done: Callable[[], bool]) -> None:
        while self.end is None and not done():
            if not self._pump(deadline):
                return

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


# ---------------------------------------------------------------------------
# the builder: ClientConnection makes the bytes an honest peer sends
# ---------------------------------------------------------------------------


class _Builder:
    """A ClientConnection whose plaintext we can read and feed.

    With ``--tls psk`` it runs inside an in-memory TLS-PSK session with a
    local shadow engine, so it behaves exactly as over real TLS (no TLS step
    after CRAM-MD5) while we see the plaintext it would send.
    """

    def __init__(self, settings: Settings, nonce: Callable[[], int]) -> None:
        self.conn = ClientConnection(
            settings.conn_type,
            name=settings.name,
            key=settings.key,
            clock=time.time,
            job=settings.job,
            tls=settings.tls,
            nonce=nonce,
            failure_delay=0.0,
        )
        self.complete: HandshakeComplete | None = None
        self.failed: RemoteProtocolError | None = None
        self._plain = bytearray()
        self.shadow: TlsEngine | None = None
        self.conn.initiate()
        if settings.tls:
            key = settings.key
            self.shadow = TlsEngine(psk_server_context(lambda identity: key), server_side=True)
            for _ in range(8):
                out = self.conn.data_to_send()
                if out:
                    self._plain += self.shadow.receive_data(out)
                back = self.shadow.data_to_send()
                if back:
                    self._events(self.conn.receive_data(back))
                if not out and not back:
                    break

    def _events(self, events: list[Event]) -> None:
        for ev in events:
            if isinstance(ev, HandshakeComplete):
                self.complete = ev

    def take(self) -> bytes:
        """The plaintext the client wants to send now."""
        out = self.conn.data_to_send()
        if self.shadow is not None:
            if out:
                self._plain += self.shadow.receive_data(out)
        else:
            self._plain += out
        data = bytes(self._plain)
        self._plain.clear()
        return data

    def feed(self, frame: bytes) -> None:
        if self.failed is not None:
            return
        data = frame
        if self.shadow is not None:
            self.shadow.send(frame)
            data = self.shadow.data_to_send()
        try:
            self._events(self.conn.receive_data(data))
        except RemoteProtocolError as exc:
            self.failed = exc


# ---------------------------------------------------------------------------
# the model: ServerConnection says what a Bareos daemon answers
# ---------------------------------------------------------------------------


class _Model:
    def __init__(self, config: ServerConfig, clock: float, nonce: int, peer_host: str,
                 tls: tuple[str, Secret] | None) -> None:
        self.server = ServerConnection(config, clock=lambda: clock, nonce=lambda: nonce, peer_host=peer_host)
        self.plain = bytearray()
        self.error: RemoteProtocolError | None = None
        self.client_tls: TlsEngine | None = None
        if tls is not None:
            self.client_tls = TlsEngine(psk_client_context(*tls), server_side=False)
            for _ in range(8):
                out = self.client_tls.data_to_send()
                if not out or self.error is not None:
                    break
                self._to_server(out)

    def _to_server(self, data: bytes) -> None:
        if self.error is not None:
            return
        try:
            self.server.receive_data(data)
        except RemoteProtocolError as exc:
            self.error = exc
        out = self.server.data_to_send()
        if out:
            self._from_server(out)

    def _from_server(self, data: bytes) -> None:
        if not data:
            return  # b"" would be end of stream to the TLS engine
        if self.client_tls is None:
            self.plain += data
            return
        try:
            self.plain += self.client_tls.receive_data(data)
        except ProtocolError:
            return
        back = self.client_tls.data_to_send()
        if back and self.error is None:
            self._to_server(back)

    def write(self, plain: bytes) -> None:
        if self.client_tls is not None:
            self.client_tls.send(plain)
            self._to_server(self.client_tls.data_to_send())
        else:
            self._to_server(plain)

    def eof(self) -> None:
        self._to_server(b"")

    def expectation(self) -> tuple[list[bytes], str, float]:
        """(frames in wire form, "closed" or "open", seconds until the close)."""
        total = 0.0
        if self.error is not None:
            self._from_server(self.error.reply)
            for step in self.error.delayed:
                self._from_server(step.data)
                total += step.after
            total += self.error.close_after
        frames, _ = _split_frames(bytes(self.plain))
        return frames, ("closed" if self.error is not None else "open"), total


def _model_config(settings: Settings, info: PeerInfo) -> ServerConfig:
    try:
        policy = TlsPolicy(info.ssl)
    except ValueError:
        policy = TlsPolicy.REQUIRED
    creds = Credentials(settings.key, policy)
    own_type = _ROLES[settings.role][0]
    hello_name = settings.hello_name

    def lookup(rtype: ResourceType, name: str) -> Credentials | None:
        return creds if rtype is own_type and name == hello_name else None

    extra: dict[str, Any] = {}
    if info.release is not None:
        extra["release"] = info.release
    if info.services_text is not None:
        extra["services_text"] = info.services_text
    if info.fd_protocol_version is not None:
        extra["fd_protocol_version"] = info.fd_protocol_version
    return ServerConfig(
        daemon=settings.daemon,
        name=info.name or "unknown",
        lookup=lookup,
        tls=True,
        own_tls_policy=policy,
        failure_delay=settings.failure_delay,
        fd_failure_delay=settings.failure_delay * 1.2,
        **extra,
    )


# ---------------------------------------------------------------------------
# mutations
# ---------------------------------------------------------------------------


@dataclass
class _Context:
    """What step-specific mutations need."""

    settings: Settings
    server_challenge: bytes | None  #: the daemon's challenge payload
    our_challenge: bytes | None  #: our (unmutated) challenge payload
    server_name: bytes  #: the daemon's qualified name, bashed


def _hostile(rng: random.Random, data: bytes) -> tuple[bytes, str]:
    buf = bytearray(data)
    ops = []
    for _ in range(rng.randint(1, 4)):
        op = rng.choice(("flip", "cut", "insert", "repeat", "drop"))
        pos = rng.randint(0, len(buf))
        if op == "flip" and buf:
            i = min(pos, len(buf) - 1)
            bit = rng.randrange(8)
            buf[i] ^= 1 << bit
            ops.append(f"flip bit {bit} of byte {i}")
        elif op == "cut":
            del buf[pos:]
            ops.append(f"cut at {pos}")
        elif op == "insert":
            what = rng.choice(HOSTILE_INSERTS) if rng.random() < 0.7 else rng.randbytes(rng.randint(1, 8))
            buf[pos:pos] = what
            ops.append(f"insert {what[:16]!r} at {pos}")
        elif op == "repeat":
            n = rng.randint(1, 16)
            buf[pos:pos] = buf[pos : pos + n]
            ops.append(f"repeat {n} bytes at {pos}")
        elif op == "drop" and buf:
            i = min(pos, len(buf) - 1)
            del buf[i]
            ops.append(f"drop byte {i}")
    return bytes(buf), "; ".join(ops) or "no change"


def _random_name(rng: random.Random, n: int) -> bytes:
    alphabet = b"abcdefghijklmnopqrstuvwxyz0123456789-_."
    return bytes(rng.choice(alphabet) for _ in range(n))


def _mutate(step: str, kind: str, frame: bytes, rng: random.Random, ctx: _Context) -> tuple[list[Write], bool, str]:
    """The writes replacing ``frame`` (one wire frame), whether to send EOF after them, and a description."""
    payload = frame[4:]

    def one(data: bytes) -> list[Write]:
        return [Write(step, data, True)]

    if kind == "hostile":
        mutated, how = _hostile(rng, payload)
        return one(encode_message(mutated)), False, how
    if kind == "split":
        cuts = sorted(rng.sample(range(1, len(frame)), min(len(frame) - 1, rng.randint(1, 5))))
        pieces = [frame[a:b] for a, b in zip([0, *cuts], [*cuts, len(frame)])]
        return [Write(step, p, True, 0.005) for p in pieces], False, f"split into {len(pieces)} writes at {cuts}"
    if kind == "oversized":
        n = rng.randint(MAX_PACKET_SIZE + 1, 2**31 - 1)
        return one(n.to_bytes(4, "big") + payload), False, f"header {n} (> {MAX_PACKET_SIZE})"
    if kind == "signal":
        value = rng.choice([int(s) for s in Signal] + [rng.randint(-(2**31), -29)])
        return one(encode_signal(value)), False, f"signal {value} instead of the frame"
    if kind == "signal-before":
        value = rng.choice([int(s) for s in Signal])
        return one(encode_signal(value) + frame), False, f"signal {value} before the frame"
    if kind == "garbage":
        junk = rng.randbytes(rng.randint(1, 64))
        return one(junk), False, f"{len(junk)} random bytes instead of the frame"
    if kind == "empty":
        return one(encode_message(b"")), False, "an empty message instead of the frame"
    if kind == "truncate":
        cut = rng.randint(1, max(1, len(frame) - 1))
        return one(frame[:cut]), False, f"only the first {cut} of {len(frame)} bytes"
    if kind == "extra":
        more, how = _hostile(rng, payload)
        return one(frame + encode_message(more)), False, f"the frame, then an extra frame ({how})"
    if kind == "length":
        delta = rng.choice([-3, -2, -1, 1, 2, 3])
        n = max(0, len(payload) + delta)
        return one(n.to_bytes(4, "big") + payload), False, f"header {n} for a {len(payload)}-byte payload"
    if kind == "eof":
        return [], True, "end of stream instead of the frame"
    # step-specific
    if step == "hello":
        if kind == "unknown-name":
            name = ctx.settings.hello_name.encode("utf-8").replace(b" ", b"\x01")
            new = _random_name(rng, rng.randint(1, 40))
            return one(encode_message(payload.replace(name, new, 1))), False, f"name {new.decode()!r}"
        if kind == "long-name":
            name = ctx.settings.hello_name.encode("utf-8").replace(b" ", b"\x01")
            new = _random_name(rng, rng.randint(120, 300))
            return one(encode_message(payload.replace(name, new, 1))), False, f"a {len(new)}-byte name"
        if kind == "old-form":
            words = payload.split(b" ")
            if payload.startswith(b"Hello ") and len(words) > 1:
                return one(encode_message(b"Hello " + words[1].rstrip(b"\n") + b" calling\n")), False, "12.4 form"
            return one(encode_message(payload.rstrip(b"\n"))), False, "no newline"
        if kind == "version-word":
            word = rng.choice([b"x", b"1", b"99999999999999999999.1", b"18.2", b"-1.-1", b"1.2.3.4.5"])
            new = re.sub(rb"version \S+", b"version " + word, payload, count=1)
            if new == payload:
                new = re.sub(rb'Version="[^"]*"', b'Version="' + word + b'"', payload, count=1)
            return one(encode_message(new)), False, f"version {word.decode()!r}"
    if step == "response" and ctx.server_challenge is not None:
        try:
            token = parse_challenge(ctx.server_challenge).token
        except RemoteProtocolError:
            token = b""
        text = payload.rstrip(b"\x00")
        if kind == "standard-base64":
            return one(encode_message(compute_response(ctx.settings.key, token, True) + b"\x00")), False, \
                "response in standard base64"
        if kind == "no-nul":
            return one(encode_message(text)), False, "response without the NUL"
        if kind == "newline":
            return one(encode_message(text + b"\n")), False, "response ending in a newline"
        if kind == "wrong-key":
            wrong = password_key(_random_name(rng, 12))
            return one(encode_message(compute_response(wrong, token) + b"\x00")), False, "response with a wrong key"
        if kind == "swapcase":
            return one(encode_message(text.swapcase() + b"\x00")), False, "response with swapped case"
    if step == "challenge" and ctx.our_challenge is not None:
        line = ctx.our_challenge
        m = re.match(rb"auth cram-md5 (<[^>]*>)(.*)", line, re.S)
        token, rest = (m.group(1), m.group(2)) if m else (b"<1.1@x>", b" ssl=0\n")
        if kind == "reflect":
            new = re.sub(rb"@[^>]*>", b"@" + ctx.server_name + b">", token)
            return one(encode_message(b"auth cram-md5 " + new + rest)), False, "challenge naming the daemon itself"
        if kind == "cram-md5c":
            return one(encode_message(b"auth cram-md5c " + token + rest)), False, "cram-md5c (standard base64)"
        if kind == "no-ssl":
            return one(encode_message(b"auth cram-md5 " + token + b"\n")), False, "challenge without ssl="
        if kind == "ssl-value":
            value = rng.choice([1, 2, 3, 4, 254, 255, 2**31 - 1, -1])
            return one(encode_message(b"auth cram-md5 %s ssl=%d\n" % (token, value))), False, f"ssl={value}"
        if kind == "big-nonce":
            new = _TOKEN.sub(b"<%d.%d@" % (rng.randint(2**32, 2**64), rng.randint(0, 2**40)), token, count=1)
            return one(encode_message(b"auth cram-md5 " + new + rest)), False, "nonce and time beyond 32 bits"
        if kind == "bad-token":
            new = rng.choice([b"token", b"<>", b"<1.2>", b"<a.b@c>", b"<1.2@", b"@"])
            return one(encode_message(b"auth cram-md5 " + new + rest)), False, f"token {new!r}"
    if step == "verdict":
        if kind == "failed":
            return one(encode_message(AUTH_FAILED)), False, "1999 Authorization failed. as our verdict"
        if kind == "no-newline":
            return one(encode_message(AUTH_OK.rstrip(b"\n"))), False, "verdict without the newline"
        if kind == "nul":
            return one(encode_message(AUTH_OK + b"\x00")), False, "verdict with a NUL after it"
        if kind == "lowercase":
            return one(encode_message(AUTH_OK.lower())), False, "verdict in lower case"
    mutated, how = _hostile(rng, payload)
    return one(encode_message(mutated)), False, how


# ---------------------------------------------------------------------------
# the fuzzer
# ---------------------------------------------------------------------------


class BaselineFailed(Exception):
    """The unmutated handshake did not authenticate: wrong settings, or no daemon."""


class Fuzzer:
    """Runs the baseline and then the mutated attempts (see the module docstring).

    ``expectation`` may replace the model's answer: it gets the attempt and
    the model's ``(frames, end, delay)`` and returns the triple to compare
    with (a hook for tests and for ``--canary``).
    """

    def __init__(
        self,
        settings: Settings,
        expectation: Callable[[Attempt, tuple[list[bytes], str, float]], tuple[list[bytes], str, float]]
        | None = None,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.settings = settings
        self.expectation = expectation
        self.log = log
        self.info = PeerInfo()
        self.baseline: Attempt | None = None
        self.attempts: list[Attempt] = []
        self.crashed = False
        self.elapsed = 0.0
        self._lock = threading.Lock()
        self._next_start = 0.0
        self._issued = 0
        self._deadline = 0.0

    # -- one attempt -----------------------------------------------------------

    def _rngs(self, index: int) -> tuple[random.Random, random.Random]:
        seed = self.settings.seed
        return random.Random(f"{seed}:{index}:mutation"), random.Random(f"{seed}:{index}:nonce")

    def plan(self, index: int) -> tuple[str, str, random.Random, random.Random]:
        """The step and mutation kind of attempt ``index`` (>= 1), and its random sources."""
        rng, nonce_rng = self._rngs(index)
        step = rng.choice(self.settings.steps)
        kinds = [k for k in MUTATIONS[step] if k not in self.settings.skip] or list(MUTATIONS[step])
        kind = rng.choice(kinds)
        return step, kind, rng, nonce_rng

    def run_attempt(self, index: int) -> Attempt:
        """Attempt ``index``: 0 is the unmutated baseline."""
        s = self.settings
        if index == 0:
            step: str | None = None
            kind = "none"
            rng, nonce_rng = self._rngs(0)
        else:
            step, kind, rng, nonce_rng = self.plan(index)
        att = Attempt(index, step, kind)
        started = time.monotonic()
        try:
            live = _Live(s)
        except OSError as exc:
            att.end = "connect-failed"
            att.verdict = "crash"
            att.detail = f"cannot connect: {exc.strerror or exc}"
            att.duration = time.monotonic() - started
            return att
        try:
            self._play(att, live, step, kind, rng, nonce_rng)
        finally:
            live.close()
        att.duration = time.monotonic() - started
        return att

    def _play(self, att: Attempt, live: _Live, step: str | None, kind: str,
              rng: random.Random, nonce_rng: random.Random) -> None:
        s = self.settings
        deadline = time.monotonic() + s.timeout
        if live.tls is not None:
            try:
                live.start_tls(deadline)
            except (OSError, ConnectionError) as exc:
                att.end = live.end or "open"
                att.verdict = "differs"
                att.detail = f"TLS-PSK handshake did not complete: {exc}"
                return
        builder = _Builder(s, lambda: nonce_rng.getrandbits(31))
        out = builder.take()
        consumed = 0
        server_challenge: bytes | None = None
        our_challenge: bytes | None = None
        for current in STEPS:
            if not out:
                break
            if current == "challenge":
                our_challenge = out[4:]
            if current == step:
                ctx = _Context(s, server_challenge, our_challenge, self.info.qualified_name)
                writes, eof, how = _mutate(current, kind, out, rng, ctx)
                att.description = how
                for w in writes:
                    if w.pause:
                        time.sleep(w.pause)
                    live.write(w.data)
                    att.writes.append(w)
                if eof:
                    live.shutdown_write()
                    att.eof_sent = True
                break
            live.write(out)
            att.writes.append(Write(current, out, False))
            out = b""
            # read the daemon's frames until the builder has its next step ready
            while not out and builder.failed is None and builder.complete is None:
                before = len(live.frames)
                live.read_until(time.monotonic() + s.timeout, lambda: len(live.frames) > consumed)
                if len(live.frames) == before and consumed >= len(live.frames):
                    break
                while consumed < len(live.frames):
                    frame = live.frames[consumed][1]
                    consumed += 1
                    if server_challenge is None and frame[4:].startswith(b"auth cram-md5"):
                        server_challenge = frame[4:]
                    builder.feed(frame)
                    out = builder.take()
                    if out or builder.failed is not None:
                        break
        att.authenticated = builder.complete is not None
        if att.index == 0:
            self._learn(live)
        # the model's answer to exactly what we sent, its challenge seeded with the daemon's
        model = self._run_model(att, live)
        expected = model.expectation()
        at = next((i for i, f in enumerate(expected[0]) if f[4:].startswith(b"auth cram-md5")), None)
        if at is not None and _first_challenge(live) is None:
            live.read_until(time.monotonic() + expected[2] * 1.5 + s.timeout, lambda: len(live.frames) > at)
            if _first_challenge(live) is not None:
                model = self._run_model(att, live)
                expected = model.expectation()
        if model.error is not None:
            att.model_error = model.error.message
        if self.expectation is not None:
            expected = self.expectation(att, expected)
        att.expected, att.expected_end, att.expected_delay = expected
        # watch the daemon until it matches, closes, or time is up
        if att.expected_end == "closed":
            live.read_until(time.monotonic() + att.expected_delay * 1.5 + s.timeout, lambda: False)
        else:
            live.read_until(time.monotonic() + s.timeout, lambda: len(live.frames) >= len(att.expected))
            live.read_until(time.monotonic() + s.settle, lambda: False)
        att.received = list(live.frames)
        att.received_problem = live.problem
        att.end = live.end or "open"
        att.refused = att.model_error is not None or att.end != "open"
        self._judge(att)

    def _learn(self, live: _Live) -> None:
        info = self.info
        for _, frame in live.frames:
            payload = frame[4:]
            if payload.startswith(b"auth cram-md5") and not info.qualified_name:
                try:
                    challenge = parse_challenge(payload)
                except RemoteProtocolError:
                    continue
                qn = challenge_name(challenge.token) or b""
                info.qualified_name = qn
                info.name = unbash(qn.partition(b"::")[2] or qn)
                info.ssl = challenge.tls_policy if challenge.tls_policy is not None else 0
                continue
            if info.qualified_name and info.greeting is None and not payload.startswith(b"1000 OK auth") \
                    and len(payload) > 4 and not payload.startswith(b"auth"):
                try:
                    greeting = parse_greeting(payload)
                except RemoteProtocolError:
                    continue
                if isinstance(greeting, DirectorGreeting):
                    info.greeting = payload
                    info.release = BareosVersion(greeting.version, None, greeting.date, "")
                elif isinstance(greeting, FdHelloOk):
                    info.greeting = payload
                    info.fd_protocol_version = greeting.protocol_version
                elif isinstance(greeting, ResponseMessage):
                    continue
                else:
                    info.greeting = payload
            if payload.startswith(b"1002\x1e") and info.services_text is None:
                text = payload[5:].decode("utf-8", "surrogateescape")
                if "\n" in text:
                    info.services_text = text.rsplit("\n", 1)[0]

    def _run_model(self, att: Attempt, live: _Live) -> _Model:
        model = self._model(_first_challenge(live), live.local_host)
        for w in att.writes:
            model.write(w.data)
        if att.eof_sent:
            model.eof()
        return model

    def _model(self, challenge: bytes | None, peer_host: str) -> _Model:
        s = self.settings
        clock, nonce = 0.0, 0
        if challenge is not None:
            m = _TOKEN.search(challenge)
            if m is not None:
                nonce, clock = int(m.group(1)), float(int(m.group(2)))
        tls = (psk_identity(_ROLES[s.role][0], s.hello_name), s.key) if s.tls else None
        return _Model(_model_config(s, self.info), clock, nonce, peer_host, tls)

    @staticmethod
    def _judge(att: Attempt) -> None:
        got = [f for _, f in att.received]
        exp = att.expected
        closed = att.end != "open"
        want_closed = att.expected_end == "closed"
        if got == exp and closed == want_closed and att.received_problem is None:
            att.verdict = "ok"
            return
        if not closed and (want_closed or len(got) < len(exp)) and got == exp[: len(got)]:
            att.verdict = "hang"
            missing = exp[len(got) :]
            att.detail = (
                "the daemon stayed open and silent; expected "
                + (", ".join(show_frame(f, 40) for f in missing) or "nothing more")
                + (" and a close" if want_closed else "")
            )
            return
        att.verdict = "differs"
        reasons = []
        if att.received_problem:
            reasons.append(f"undecodable reply: {att.received_problem}")
        for i in range(max(len(got), len(exp))):
            g = got[i] if i < len(got) else None
            e = exp[i] if i < len(exp) else None
            if g != e:
                reasons.append(
                    f"frame {i + 1}: expected {show_frame(e, 50) if e else 'nothing'}, "
                    f"got {show_frame(g, 50) if g else 'nothing'}"
                )
                break
        if closed != want_closed:
            reasons.append(f"expected the connection {att.expected_end}, it was {att.end}")
        att.detail = "; ".join(reasons)

    # -- the run -----------------------------------------------------------------

    def run(self) -> None:
        """Baseline, then attempts until ``count`` or ``time_limit``; raises
        :class:`BaselineFailed` if the unmutated handshake does not authenticate."""
        s = self.settings
        started = time.monotonic()
        self._deadline = started + s.time_limit
        base = self.run_attempt(0)
        self.baseline = base
        if base.end == "connect-failed":
            raise BaselineFailed(base.detail)
        if not base.authenticated:
            raise BaselineFailed(
                "the unmutated handshake did not authenticate: "
                + (", ".join(show_frame(f, 60) for _, f in base.received) or "no reply")
                + f" ({base.end}); check --as, --name, --password/--key and --tls"
            )
        if base.is_finding:
            self._finding(base)
        self._next_start = time.monotonic()
        workers = [threading.Thread(target=self._worker, daemon=True) for _ in range(max(1, s.concurrency))]
        for w in workers:
            w.start()
        try:
            for w in workers:
                while w.is_alive():
                    w.join(0.2)
        except KeyboardInterrupt:
            with self._lock:
                self._issued = s.count  # no new attempts; running ones finish
            for w in workers:
                w.join()
        self.attempts.sort(key=lambda a: a.index)
        self.elapsed = time.monotonic() - started

    def _claim(self) -> int | None:
        s = self.settings
        with self._lock:
            if self.crashed or self._issued >= s.count:
                return None
            now = time.monotonic()
            start = max(now, self._next_start)
            if start >= self._deadline:
                return None
            self._issued += 1
            self._next_start = start + (1.0 / s.rate if s.rate > 0 else 0.0)
            index = self._issued
        if start > now:
            time.sleep(start - now)
        return index

    def _worker(self) -> None:
        s = self.settings
        while True:
            index = self._claim()
            if index is None:
                return
            att = self.run_attempt(index)
            if att.verdict != "crash" and not self._accepting():
                att.verdict = "crash"
                att.detail = "the daemon stopped accepting connections after this attempt"
                if s.concurrency > 1:
                    att.detail += f" ({s.concurrency} attempts ran side by side: any of them may be the cause)"
            with self._lock:
                self.attempts.append(att)
                if att.verdict == "crash":
                    self.crashed = True
            if self.log is not None:
                self.log(_attempt_line(att))
            if att.is_finding:
                self._finding(att)
            if att.refused and s.failure_delay > 0:
                time.sleep(s.failure_delay)  # Bareos sleeps through a failed login: so do we

    def _accepting(self) -> bool:
        s = self.settings
        try:
            with socket.create_connection((s.host, s.port), timeout=s.timeout):
                return True
        except OSError:
            return False

    def _finding(self, att: Attempt) -> None:
        out = self.settings.out
        if out is None:
            return
        out.mkdir(parents=True, exist_ok=True)
        path = out / f"finding-{att.index:05d}-{att.verdict}.json"
        att.reproducer = str(path)
        path.write_text(json.dumps(self.reproducer(att), indent=1) + "\n", encoding="utf-8")

    def reproducer(self, att: Attempt) -> dict[str, Any]:
        """Everything needed to look at, and replay, one attempt (no password in it)."""
        s = self.settings

        def frames(items: list[bytes]) -> list[dict[str, Any]]:
            return [{"b64": _b64(f), "shown": show_frame(f, 200)} for f in items]

        return {
            "tool": "bareosproto-fuzz",
            "verdict": att.verdict,
            "detail": att.detail,
            "target": s.target,
            "as": s.role,
            "peer": s.peer,
            "name": s.name,
            "job": s.job,
            "tls": "psk" if s.tls else "none",
            "seed": s.seed,
            "index": att.index,
            "steps": list(s.steps),
            "skip": list(s.skip),
            "failure_delay": s.failure_delay,
            "step": att.step,
            "mutation": att.mutation,
            "description": att.description,
            "writes": [
                {"step": w.step, "mutated": w.mutated, "pause": w.pause, "b64": _b64(w.data), "hex": w.data.hex()}
                for w in att.writes
            ],
            "eof_sent": att.eof_sent,
            "writes_note": "plaintext frames; with tls=psk they were sent inside a TLS-PSK session",
            "expected": frames(att.expected),
            "expected_end": att.expected_end,
            "expected_delay": att.expected_delay,
            "model_error": att.model_error,
            "received": [{"t": round(t, 3), "b64": _b64(f), "shown": show_frame(f, 200)} for t, f in att.received],
            "received_problem": att.received_problem,
            "end": att.end,
            "replay": f"bareosproto-fuzz --replay {att.reproducer or 'FILE'} --password PASSWORD",
        }

    def summary(self) -> dict[str, Any]:
        counts = {"ok": 0, "differs": 0, "hang": 0, "crash": 0}
        by_step: dict[str, int] = {}
        for a in self.attempts:
            counts[a.verdict] = counts.get(a.verdict, 0) + 1
            by_step[a.step or "none"] = by_step.get(a.step or "none", 0) + 1
        findings = [a for a in ([self.baseline] if self.baseline else []) + self.attempts if a.is_finding]
        return {"attempts": len(self.attempts), **counts, "by_step": by_step,
                "findings": len(findings), "elapsed": round(self.elapsed, 3)}

    def findings(self) -> list[Attempt]:
        return [a for a in ([self.baseline] if self.baseline else []) + self.attempts if a.is_finding]


def _first_challenge(live: _Live) -> bytes | None:
    return next((f[4:] for _, f in live.frames if f[4:].startswith(b"auth cram-md5")), None)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _attempt_line(att: Attempt) -> str:
    what = f"{att.step}/{att.mutation}" if att.step else "baseline"
    return (f"#{att.index:<5} {att.verdict:<8} {what:<28} {len(att.received)} frame(s), {att.end}, "
            f"{att.duration:.2f} s  {att.description[:60]}")


# ---------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="bareosproto-fuzz",
        description="Bounded mutational fuzzing of a live Bareos daemon's handshake, on loopback only "
        "(127.0.0.0/8 and ::1). Each attempt mutates one step of an honest handshake and compares the "
        "daemon's replies with what the library's model of Bareos answers.",
        epilog="Exit status: 0 no finding, 1 findings, 2 usage or setup error.",
    )
    p.add_argument("--connect", metavar="HOST:PORT", help="the daemon (loopback only)")
    p.add_argument("--as", dest="role", choices=sorted(_ROLES), default="console",
                   help="connect as a console (to a Director), director (to an FD or SD, see --peer), "
                        "client (client-initiated FD to a Director) or storage (SD to a passive FD, needs --job)")
    p.add_argument("--peer", choices=("fd", "sd"), default="fd", help="with --as director: the daemon is an FD or SD")
    p.add_argument("--name", help="our resource name (default: *UserAgent* for a console)")
    p.add_argument("--password", help="our password in clear text (hashed to the MD5 key as Bareos does)")
    p.add_argument("--key", help="our key as is (an MD5 hex key, or a job session key for --as storage)")
    p.add_argument("--job", help="unique job name (--as storage)")
    p.add_argument("--tls", choices=("none", "psk"), default="none", help="cleartext or immediate TLS-PSK")
    p.add_argument("--count", type=int, default=100, help="number of mutated attempts (default 100)")
    p.add_argument("--time", type=float, default=60.0, metavar="SECONDS",
                   help="start no attempt after this many seconds (default 60)")
    p.add_argument("--rate", type=float, default=10.0, metavar="PER_SECOND",
                   help="at most this many attempt starts per second (default 10)")
    p.add_argument("--failure-delay", type=float, default=5.0, metavar="SECONDS",
                   help="the daemon's sleep after a failed login (Bareos: 5): a worker waits this long "
                        "after a refused attempt, and the model's timings use it (default 5)")
    p.add_argument("--concurrency", type=int, default=1, help="attempts running side by side (default 1)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0); attempt N is reproducible alone")
    p.add_argument("--steps", default=",".join(STEPS),
                   help=f"comma-separated steps to mutate (default {','.join(STEPS)})")
    p.add_argument("--skip-mutations", metavar="KIND,...", default="",
                   help="mutation kinds to leave out, e.g. eof,split (kinds: "
                        + ", ".join(sorted({k for ks in MUTATIONS.values() for k in ks})) + ")")
    p.add_argument("--timeout", type=float, default=5.0,
                   help="seconds to wait beyond the expected replies before calling it a hang (default 5)")
    p.add_argument("--out", metavar="DIR", default="bareosproto-fuzz-findings",
                   help="directory for one JSON reproducer per finding (default ./bareosproto-fuzz-findings, "
                        "created on the first finding)")
    p.add_argument("--replay", metavar="FILE", help="run the attempt of a reproducer again (target and settings "
                                                    "from the file unless given; the password is not stored)")
    p.add_argument("--canary", action="store_true",
                   help="self-test: turn every expected reply into its opposite, so that every attempt must be "
                        "reported with a reproducer")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("-v", "--verbose", action="store_true", help="one line per attempt on standard error")
    return p


def _settings(args: argparse.Namespace, p: argparse.ArgumentParser, replay: dict[str, Any] | None) -> Settings:
    r = replay or {}
    target = args.connect or r.get("target")
    if not target:
        p.error("--connect HOST:PORT is required")
    host, port = parse_target(target)
    role = args.role if (args.role != "console" or not r) else r.get("as", "console")
    if args.password is not None and args.key is not None:
        p.error("give --password or --key, not both")
    if args.key is not None:
        key = Secret(args.key)
    elif args.password is not None:
        key = Secret(args.password) if role == "storage" else password_key(args.password)
    else:
        p.error("--password or --key is required")
    name = args.name or r.get("name") or USER_AGENT
    job = args.job or r.get("job")
    if role == "storage" and not job:
        p.error("--as storage needs --job")
    steps = tuple(x.strip() for x in (r.get("steps") and ",".join(r["steps"]) or args.steps).split(",") if x.strip())
    bad = [x for x in steps if x not in STEPS]
    if bad or not steps:
        p.error(f"--steps takes some of {', '.join(STEPS)}")
    skip = tuple(x.strip() for x in (",".join(r.get("skip", [])) if replay else args.skip_mutations).split(",")
                 if x.strip())
    known = {k for ks in MUTATIONS.values() for k in ks}
    if any(k not in known for k in skip):
        p.error(f"--skip-mutations takes some of {', '.join(sorted(known))}")
    return Settings(
        host=host,
        port=port,
        role=role,
        peer=r.get("peer", args.peer) if replay else args.peer,
        name=name,
        key=key,
        job=job,
        tls=(r.get("tls", args.tls) if replay else args.tls) == "psk",
        count=max(0, args.count),
        time_limit=max(0.0, args.time),
        rate=args.rate,
        failure_delay=max(0.0, r.get("failure_delay", args.failure_delay) if replay else args.failure_delay),
        concurrency=max(1, args.concurrency),
        seed=int(r.get("seed", args.seed)) if replay else args.seed,
        out=Path(args.out) if args.out else None,
        timeout=max(0.1, args.timeout),
        steps=steps,
        skip=skip,
        canary=args.canary,
        verbose=args.verbose,
    )


def _canary(att: Attempt, expected: tuple[list[bytes], str, float]) -> tuple[list[bytes], str, float]:
    frames, end, delay = expected
    return frames + [encode_message(b"canary: this frame is never sent")], \
        ("open" if end == "closed" else "closed"), delay


def _report_text(fz: Fuzzer) -> str:
    s = fz.settings
    info = fz.info
    summ = fz.summary()
    lines = [
        f"bareosproto-fuzz: {s.target} as {s.role} {s.hello_name!r} ({'TLS-PSK' if s.tls else 'cleartext'}), "
        f"seed {s.seed}",
        f"daemon: {info.qualified_name.decode('utf-8', 'replace') or '?'} ssl={info.ssl}"
        + (f", greeting {show_frame(encode_message(info.greeting), 70)}" if info.greeting else ""),
        f"attempts: {summ['attempts']} in {summ['elapsed']:.1f} s ("
        + ", ".join(f"{k} {v}" for k, v in sorted(summ["by_step"].items())) + ")",
        f"results: ok {summ['ok']}, differs {summ['differs']}, hang {summ['hang']}, crash {summ['crash']}",
    ]
    findings = fz.findings()
    if not findings:
        lines.append("findings: none")
    else:
        lines.append(f"findings: {len(findings)}")
        for a in findings:
            what = f"{a.step}/{a.mutation}" if a.step else "baseline"
            lines.append(f"  #{a.index} {a.verdict} {what}: {a.description}")
            lines.append(f"      {a.detail}")
            if a.reproducer:
                lines.append(f"      reproducer: {a.reproducer}")
    if fz.crashed:
        lines.append("the daemon stopped accepting connections: fuzzing stopped")
    return "\n".join(lines) + "\n"


def _report_json(fz: Fuzzer) -> dict[str, Any]:
    s = fz.settings
    info = fz.info

    def attempt(a: Attempt) -> dict[str, Any]:
        return {
            "index": a.index, "step": a.step, "mutation": a.mutation, "description": a.description,
            "verdict": a.verdict, "detail": a.detail, "end": a.end, "expected_end": a.expected_end,
            "received": [show_frame(f, 120) for _, f in a.received],
            "expected": [show_frame(f, 120) for f in a.expected],
            "duration": round(a.duration, 3), "reproducer": a.reproducer,
        }

    return {
        "tool": "bareosproto-fuzz",
        "target": s.target, "as": s.role, "name": s.hello_name, "tls": "psk" if s.tls else "none",
        "seed": s.seed,
        "limits": {"count": s.count, "time": s.time_limit, "rate": s.rate, "failure_delay": s.failure_delay,
                   "concurrency": s.concurrency, "timeout": s.timeout, "steps": list(s.steps),
                   "skip_mutations": list(s.skip)},
        "daemon": {"qualified_name": info.qualified_name.decode("utf-8", "replace"), "ssl": info.ssl,
                   "greeting": show_frame(encode_message(info.greeting), 200) if info.greeting else None},
        "baseline": attempt(fz.baseline) if fz.baseline else None,
        "attempts": [attempt(a) for a in fz.attempts],
        "summary": fz.summary(),
        "crashed": fz.crashed,
        "findings": [attempt(a) for a in fz.findings()],
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``bareosproto-fuzz``; returns the exit status."""
    p = _parser()
    args = p.parse_args(argv)
    replay: dict[str, Any] | None = None
    if args.replay:
        try:
            replay = json.loads(Path(args.replay).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            print(f"bareosproto-fuzz: cannot read {args.replay}: {exc}", file=sys.stderr)
            return 2
    try:
        settings = _settings(args, p, replay)
    except TargetRefused as exc:
        print(f"bareosproto-fuzz: refused: {exc}", file=sys.stderr)
        return 2
    log = (lambda line: print(line, file=sys.stderr, flush=True)) if settings.verbose else None
    fuzzer = Fuzzer(settings, expectation=_canary if settings.canary else None, log=log)
    if replay is not None:
        settings.count = 0
        try:
            fuzzer.run()  # the baseline: learns the daemon
        except BaselineFailed as exc:
            print(f"bareosproto-fuzz: {exc}", file=sys.stderr)
            return 2
        att = fuzzer.run_attempt(int(replay["index"]))
        fuzzer.attempts = [att]
        if att.is_finding:
            fuzzer._finding(att)
    else:
        try:
            fuzzer.run()
        except BaselineFailed as exc:
            print(f"bareosproto-fuzz: {exc}", file=sys.stderr)
            return 2
    if args.json:
        print(json.dumps(_report_json(fuzzer), indent=1))
    else:
        sys.stdout.write(_report_text(fuzzer))
    return 1 if fuzzer.findings() else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
