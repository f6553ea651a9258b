"""Hostile peers against our acceptors (Director, FD, SD): what they get, when, and the close.

Each case plays one peer against a factory from ``bareosproto.twisted.daemon``
over a ``StringTransport`` with a ``task.Clock``, and records every frame our
daemon writes with the time it was written and the time it closed.  The
expectations are literals from PROTOCOL.md (sections 1.3, 5, 6.3, 6.4, 7.3-7.5,
11 and 15) and the recordings:

* the failed-login sequences (15.6, 15.24, 11 items 18-20);
* immediate ``BNET_TERMINATE`` for a first frame that is no usable Hello or names
  nothing we know (15.31), for a cleartext Hello where TLS is required (6.3, 11
  item 2), and after a failed TLS handshake (6.3 item 7, 15.16);
* a 5 s wait before the ``BNET_TERMINATE`` when the name resolves but the rest of
  the Hello does not parse or does not fit the length window (15.31, 11 item 19),
  and for a PSK identity that is not the Hello's name (6.4, Bareos 26 only);
* the replay check of CRAM-MD5 (5.3 step 3, 11 item 6).

A peer that never finishes is dropped after the handshake timeout (our choice:
upstream holds it open, 15.31).  A few real-TCP tests at the end check the close
as a client sees it.  The CRAM-MD5 responses of the hostile peers are computed
with python-bareos' Bareos base64 and ``hmac``, not with bareosproto.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from bareos.util.bareosbase64 import BareosBase64
from twisted.internet import reactor as _reactor
from twisted.internet.address import IPv4Address
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from bareosproto.connection import Credentials, Daemon, ServerConfig
from bareosproto.errors import RemoteProtocolError
from bareosproto.events import Message
from bareosproto.frames import FrameDecoder
from bareosproto.keys import Secret
from bareosproto.names import ResourceType
from bareosproto.tls import TlsEngine, psk_client_context
from bareosproto.tls_policy import TlsPolicy
from bareosproto.twisted.daemon import DaemonChannel, director_client_factory, fd_server_factory, sd_server_factory
from bareosproto.twisted.factory import BareosServerFactory

reactor: Any = _reactor

# -- literals ------------------------------------------------------------------------------

TERMINATE = b"\xff\xff\xff\xfc"
AUTH_OK = b"1000 OK auth\n"
AUTH_FAILED = b"1999 Authorization failed.\n"
FD_AUTH_FAILED = b"2999 Authentication failed.\n"
SD_NO_GO = b"3999 No go\n"
NOT_AUTHORIZED = b"1999 You are not authorized.\n"
FD_HELLO_OK = b"2000 OK Hello 54\n"
SD_HELLO_OK = b"3000 OK Hello\n"
#: the FD's job messages of ``TwoWayAuthenticate()`` (PROTOCOL.md 5.5; the first one recorded, 15.6)
KEY_REJECTED = b"Authorization key rejected by 127.0.0.1.\n"
WRONG_FORMAT = b"Wrong format of the CRAM challenge with 127.0.0.1.\n"
NETWORK_ERROR = b"Network error during CRAM MD5 with 127.0.0.1\n"
ATTACK = (b"Warning! Attack detected: I will not answer to my own challenge. "
          b"Please check integrity of the host at IP address: 127.0.0.1\n")
#: TLS alert records (15.16): handshake_failure for an unknown identity, illegal_parameter for a wrong key
ALERT_HANDSHAKE_FAILURE = bytes.fromhex("15030300020228")
ALERT_ILLEGAL_PARAMETER = bytes.fromhex("1503030002022f")

DIRECTOR = "bareos-dir"
CLIENT = "client-clear"
STORAGE = "bareos-sd-clear"
JOB = "backup-client-clear.2026-11-30_09.18.24_03"
SESSION_KEY = Secret("FNJHLDCLPAGGMPKG-IPFCFDCHLDAHOAH-OHEBDKFIE")

PASSWORDS = {
    "bareos-dir@fd": "fd-clear-password",
    "tls-dir@fd": "tls-dir-password",
    "d@fd": "d-password",
    "bareos-dir@sd": "sd-clear-password",
    "client-ci-clear": "fd-ci-clear-password",
    "client-ci": "fd-ci-password",
    "plain-console": "plain-console-password",
    "admin": "admin-password",
}
HANDSHAKE_TIMEOUT = 30.0
PEER = IPv4Address("TCP", "127.0.0.1", 40000)


def frame(payload: bytes) -> bytes:
    return len(payload).to_bytes(4, "big") + payload


def key(name: str) -> bytes:
    """The key of a password: the ASCII MD5 hex (PROTOCOL.md 3.1)."""
    return hashlib.md5(PASSWORDS[name].encode()).hexdigest().encode()


def hello_director(name: str) -> bytes:
    return frame(b"Hello Director " + name.encode() + b' calling Version="26.0.0"\n')


def challenge_re(name: bytes, ssl: int) -> re.Pattern[bytes]:
    return re.compile(rb"auth cram-md5 <\d+\.\d+@" + re.escape(name) + rb"> ssl=%d\n" % ssl)


FD_CHALLENGE = challenge_re(b"R_CLIENT::client-clear", 0)
SD_CHALLENGE = challenge_re(b"R_STORAGE::bareos-sd-clear", 0)
SD_DATA_CHALLENGE = challenge_re(b"R_STORAGE::bareos-sd-clear", 2)
DIR_CHALLENGE = challenge_re(b"R_DIRECTOR::bareos-dir", 0)

# -- the daemons under attack ----------------------------------------------------------------


def fd_factory(clock: Clock, on_channel: Callable[[DaemonChannel], object], **kw: Any) -> BareosServerFactory:
    return fd_server_factory(
        clock, client_name=CLIENT, on_channel=on_channel, handshake_timeout=HANDSHAKE_TIMEOUT,
        directors={DIRECTOR: (PASSWORDS["bareos-dir@fd"], TlsPolicy.NONE),
                   "tls-dir": (PASSWORDS["tls-dir@fd"], TlsPolicy.REQUIRED),
                   "d": (PASSWORDS["d@fd"], TlsPolicy.NONE)},
        jobs={JOB: SESSION_KEY}, **kw,
    )  # fmt: skip


def sd_factory(clock: Clock, on_channel: Callable[[DaemonChannel], object], **kw: Any) -> BareosServerFactory:
    return sd_server_factory(
        clock, storage_name=STORAGE, on_channel=on_channel, handshake_timeout=HANDSHAKE_TIMEOUT,
        directors={DIRECTOR: (PASSWORDS["bareos-dir@sd"], TlsPolicy.NONE)}, jobs={JOB: SESSION_KEY}, **kw,
    )  # fmt: skip


def dir_factory(clock: Clock, on_channel: Callable[[DaemonChannel], object], **kw: Any) -> BareosServerFactory:
    return director_client_factory(
        clock, director_name=DIRECTOR, on_channel=on_channel, handshake_timeout=HANDSHAKE_TIMEOUT,
        clients={"client-ci-clear": (PASSWORDS["client-ci-clear"], TlsPolicy.NONE),
                 "client-ci": (PASSWORDS["client-ci"], TlsPolicy.REQUIRED)}, **kw,
    )  # fmt: skip


def dir_console_factory(clock: Clock, on_channel: Callable[[DaemonChannel], object], **kw: Any) -> BareosServerFactory:
    """A Director that also knows consoles: ``plain-console`` (TLS off) and ``admin`` (TLS required)."""
    table = {
        (ResourceType.R_CONSOLE, "plain-console"): Credentials(Secret(key("plain-console")), TlsPolicy.NONE),
        (ResourceType.R_CONSOLE, "admin"): Credentials(Secret(key("admin")), TlsPolicy.REQUIRED),
    }
    config = ServerConfig(daemon=Daemon.DIRECTOR, name=DIRECTOR, lookup=lambda t, n: table.get((t, n)))
    return BareosServerFactory(config, clock, lambda ch: on_channel(DaemonChannel(ch)), HANDSHAKE_TIMEOUT)


FACTORIES: dict[str, Callable[..., BareosServerFactory]] = {
    "fd": fd_factory, "sd": sd_factory, "dir": dir_factory, "dir-console": dir_console_factory,
}

# -- the hostile peer ------------------------------------------------------------------------

Frames = list[bytes]
Step = Callable[[Frames], bytes | None]


def cram_response(key_bytes: bytes, challenge_line: bytes) -> bytes:
    """HMAC-MD5 of the token in Bareos base64 (python-bareos' implementation)."""
    token = challenge_line.split(b" ")[2]
    digest = hmac.new(key_bytes, token, hashlib.md5).digest()
    return bytes(BareosBase64().string_to_base64(bytearray(digest)))


def send(data: bytes) -> Step:
    return lambda frames: data


def when(predicate: Callable[[Frames], bool], make: Callable[[Frames], bytes]) -> Step:
    return lambda frames: make(frames) if predicate(frames) else None


def got_challenge(frames: Frames) -> bool:
    return bool(frames) and frames[-1].startswith(b"auth cram-md5 ")


def got_ok(frames: Frames) -> bool:
    return bool(frames) and frames[-1] == AUTH_OK


def respond(key_bytes: bytes, mangle: Callable[[bytes], bytes] = lambda r: r + b"\x00") -> Step:
    """Answer the daemon's challenge (22 characters and a NUL, as C Bareos does)."""
    return when(got_challenge, lambda f: frame(mangle(cram_response(key_bytes, f[-1].rstrip(b"\n")))))


def after_ok(data: Callable[[Frames], bytes]) -> Step:
    return when(got_ok, data)


def our_challenge(name: bytes) -> Step:
    return after_ok(lambda f: frame(b"auth cram-md5 <1234.1796030000@" + name + b"> ssl=0\n"))


def echo_challenge() -> Step:
    """Send the daemon's own challenge line back as ours (a reflection attack)."""
    return after_ok(lambda f: frame(f[0]))


class Peer:
    """Plays its steps in order (a step returns None until its turn comes); optionally
    inside TLS-PSK.  Records the plaintext frames it receives with their times."""

    def __init__(self, steps: Sequence[Step], tls: TlsEngine | None = None) -> None:
        self.steps = list(steps)
        self.tls = tls
        self.decoder = FrameDecoder()
        self.frames: list[tuple[float, bytes]] = []
        self.raw = b""
        self.tls_error: RemoteProtocolError | None = None
        self._out = b""

    def start(self) -> None:
        self._run_steps()

    def take(self) -> bytes:
        out, self._out = self._out, b""
        if self.tls is not None:
            out += self.tls.data_to_send()
        return out

    def receive(self, t: float, data: bytes) -> None:
        self.raw += data
        plain = data
        if self.tls is not None:
            if self.tls_error is not None:
                return
            try:
                plain = self.tls.receive_data(data)
            except RemoteProtocolError as exc:
                self.tls_error = exc
                return
        for ev in self.decoder.receive_data(plain) if plain else []:
            if isinstance(ev, Message):
                self.frames.append((t, ev.payload))
            else:
                self.frames.append((t, int(ev.signal).to_bytes(4, "big", signed=True)))  # type: ignore[attr-defined]
        self._run_steps()

    def _run_steps(self) -> None:
        while self.steps:
            data = self.steps[0]([p for _, p in self.frames])
            if data is None:
                return
            self.steps.pop(0)
            if self.tls is not None:
                self.tls.send(data)
            else:
                self._out += data


@dataclass
class Outcome:
    frames: list[tuple[float, bytes]]
    closed_at: float | None  #: loseConnection (a clean close after the replies)
    aborted_at: float | None  #: abortConnection (the handshake timeout)
    channels: list[DaemonChannel] = field(default_factory=list)
    peer: Peer | None = None


def play(daemon: str, peer: Peer, until: float = 40.0, **factory_kw: Any) -> Outcome:
    """Run ``peer`` against a fresh acceptor; step the clock by 0.25 s up to ``until``."""
    clock = Clock()
    channels: list[DaemonChannel] = []
    factory = FACTORIES[daemon](clock, channels.append, **factory_kw)
    proto = factory.buildProtocol(PEER)
    transport = StringTransport(peerAddress=PEER)
    proto.makeConnection(transport)
    peer.start()
    closed_at = aborted_at = None
    while True:
        out = peer.take()
        if out and closed_at is None and aborted_at is None:
            proto.dataReceived(out)
        got = transport.value()
        transport.clear()
        if got:
            peer.receive(clock.seconds(), got)
            continue
        if out:
            continue
        if any(c.getTime() <= clock.seconds() for c in clock.getDelayedCalls()):
            clock.advance(0)  # steps due now (a zero delay) run before time moves on
            continue
        if transport.disconnected:  # abortConnection() (it sets disconnecting too)
            aborted_at = clock.seconds()
        elif transport.disconnecting:
            closed_at = clock.seconds()
        if closed_at is not None or aborted_at is not None or clock.seconds() >= until:
            break
        clock.advance(0.25)
    return Outcome(peer.frames, closed_at, aborted_at, channels, peer)


def match(outcome: Outcome, expected: list[tuple[float, bytes | re.Pattern[bytes]]]) -> None:
    got = outcome.frames
    assert len(got) == len(expected), f"frames: {got!r}"
    for (t, payload), (t_exp, exp) in zip(got, expected):
        assert t == t_exp, f"{payload!r} at {t}, expected at {t_exp}"
        if isinstance(exp, re.Pattern):
            assert exp.fullmatch(payload), payload
        else:
            assert payload == exp


# -- the cases -------------------------------------------------------------------------------

FD_KEY = key("bareos-dir@fd")
FD_HELLO = hello_director(DIRECTOR)
NO_CLOSE = None


@dataclass
class Case:
    daemon: str
    steps: Sequence[Step]
    expected: list[tuple[float, bytes | re.Pattern[bytes]]]
    closed_at: float | None
    doc: str
    factory_kw: dict[str, Any] = field(default_factory=dict)
    until: float = 40.0


def wrong_password_steps(hello: bytes = FD_HELLO, mangle: Callable[[bytes], bytes] | None = None) -> list[Step]:
    return [send(hello), respond(b"0" * 32) if mangle is None else respond(FD_KEY, mangle)]


FD_WRONG_HASH: list[tuple[float, bytes | re.Pattern[bytes]]] = [(0.0, FD_CHALLENGE), (0.0, AUTH_FAILED), (5.0, KEY_REJECTED), (5.0, AUTH_FAILED),
                 (10.0, FD_AUTH_FAILED)]  # fmt: skip

CASES: dict[str, Case] = {
    # -- FD: CRAM-MD5 ----------------------------------------------------------------------
    "fd-wrong-password": Case(
        "fd", wrong_password_steps(), FD_WRONG_HASH, 16.0,
        "wrong password: 1999 now; key rejected + 1999 at 5 s; 2999 at 10 s; close at 16 s (15.6)"),
    "fd-garbage-response": Case(
        "fd", wrong_password_steps(mangle=lambda r: b"garbage"), FD_WRONG_HASH, 16.0,
        "a response that is no base64 digest is a wrong hash: the same sequence"),
    "fd-bad-base64-response": Case(
        "fd", wrong_password_steps(mangle=lambda r: b"!!!!!!!!!!!!!!!!!!!!!!\x00"), FD_WRONG_HASH, 16.0,
        "22 characters outside the base64 alphabet: a wrong hash"),
    "fd-response-with-newline": Case(
        "fd", wrong_password_steps(mangle=lambda r: r + b"\n"), FD_WRONG_HASH, 16.0,
        "the right response plus a newline is rejected (strcmp, PROTOCOL.md 11 item 4)"),
    "fd-empty-response": Case(
        "fd", [send(FD_HELLO), when(got_challenge, lambda f: frame(b""))],
        [(0.0, FD_CHALLENGE), (5.0, NETWORK_ERROR), (5.0, AUTH_FAILED), (10.0, FD_AUTH_FAILED)], 16.0,
        "an empty frame as response: recv() <= 0, a network error after the 5 s sleep (5.4, 5.5)"),
    "fd-reflected-challenge": Case(
        "fd", [send(FD_HELLO), respond(FD_KEY), echo_challenge()],
        [(0.0, FD_CHALLENGE), (0.0, AUTH_OK), (0.0, ATTACK), (0.0, AUTH_FAILED), (5.0, FD_AUTH_FAILED)], 11.0,
        "our own challenge echoed back is refused without an answer (5.3 step 3), 1999 at once, 2999 at 5 s"),
    "fd-own-name-challenge": Case(
        "fd", [send(FD_HELLO), respond(FD_KEY), our_challenge(b"R_CLIENT::client-clear")],
        [(0.0, FD_CHALLENGE), (0.0, AUTH_OK), (0.0, ATTACK), (0.0, AUTH_FAILED), (5.0, FD_AUTH_FAILED)], 11.0,
        "a fresh challenge carrying the FD's own qualified name is the same attack"),
    "fd-malformed-challenge-line": Case(
        "fd", [send(FD_HELLO), respond(FD_KEY), after_ok(lambda f: frame(b"auth digest-md5 <1.2@R_DIRECTOR::x> ssl=0\n"))],
        [(0.0, FD_CHALLENGE), (0.0, AUTH_OK), (0.0, AUTH_FAILED), (5.0, WRONG_FORMAT), (5.0, AUTH_FAILED),
         (10.0, FD_AUTH_FAILED)], 16.0,
        "a challenge that does not scan: 1999 and the 5 s sleep of CramMd5Response, then the usual end"),
    "fd-malformed-challenge-token": Case(
        "fd", [send(FD_HELLO), respond(FD_KEY), after_ok(lambda f: frame(b"auth cram-md5 nonsense ssl=0\n"))],
        [(0.0, FD_CHALLENGE), (0.0, AUTH_OK), (0.0, WRONG_FORMAT), (0.0, AUTH_FAILED), (5.0, FD_AUTH_FAILED)], 11.0,
        "a token that is not <%u.%u@%s>: format mismatch without the CRAM sleep"),
    "fd-terminate-before-auth": Case(
        "fd", [send(FD_HELLO + TERMINATE)],
        [(0.0, FD_CHALLENGE), (0.0, FD_AUTH_FAILED)], 6.0,
        "BNET_TERMINATE right after the Hello: no 1999 (1.3), 2999 and the FD's 6 s; our challenge "
        "goes out first (upstream peeks and sends none)"),
    # -- FD: the Hello -----------------------------------------------------------------------
    "fd-hello-printf": Case(
        "fd", [send(frame(b"Hello Director %s%n%s%n calling\n"))], [(0.0, TERMINATE)], 0.0,
        "printf specifiers are just an unknown name: BNET_TERMINATE at once (15.31)"),
    "fd-hello-nul": Case(
        "fd", [send(frame(b"Hello Director bareos-dir\x00 calling\n"))], [(5.0, TERMINATE)], 5.0,
        "a NUL cuts the Hello after a known name: the rest does not parse, 5 s, BNET_TERMINATE (15.31)"),
    "fd-hello-long-name": Case(
        "fd", [send(frame(b"Hello Director " + b"a" * 200 + b" calling\n"))], [(0.0, TERMINATE)], 0.0,
        "a 200-byte name (buffers hold 127) names no resource: BNET_TERMINATE at once"),
    "fd-hello-name-128": Case(
        "fd", [send(frame(b"Hello Director " + b"b" * 128 + b' calling Version="26.0.0"\n'))], [(0.0, TERMINATE)], 0.0,
        "a 128-byte name: BNET_TERMINATE at once"),
    "fd-hello-too-long": Case(
        "fd", [send(frame(b'Hello Director bareos-dir calling Version="26.0.0"' + b" " * 480 + b"\n"))],
        [(5.0, TERMINATE)], 5.0,
        "a Hello above the FD's 500-byte window: 5 s, BNET_TERMINATE (11 items 19, 22)"),
    "fd-hello-too-short": Case(
        "fd", [send(frame(b"Hello Director d calling"))], [(5.0, TERMINATE)], 5.0,
        "a 24-byte Hello of a known Director 'd' (no newline), below the FD's 25-byte minimum: "
        "5 s, BNET_TERMINATE (11 items 19, 22)"),
    "fd-cleartext-where-tls-required": Case(
        "fd", [send(hello_director("tls-dir"))], [(0.0, TERMINATE)], 0.0,
        "cleartext Hello of a Director whose TLS is required: BNET_TERMINATE at once, no delay (6.3, 11 item 2)"),
    "fd-unknown-director": Case(
        "fd", [send(hello_director("nobody-dir"))], [(0.0, TERMINATE)], 0.0,
        "unknown Director name: BNET_TERMINATE at once (15.31)"),
    "fd-console-hello": Case(
        "fd", [send(frame(b'Hello admin calling version 26.0.0 Version="26.0.0"\n'))], [(0.0, TERMINATE)], 0.0,
        "a console Hello at an FD names no resource: BNET_TERMINATE at once"),
    "fd-unknown-job": Case(
        "fd", [send(frame(b'Hello Storage calling Start Job nosuchjob Version="26.0.0"\n'))], [(0.0, TERMINATE)], 0.0,
        "an SD naming a job the FD does not run: BNET_TERMINATE at once"),
    # -- FD: not a Hello at all ---------------------------------------------------------------
    "fd-signal-first-frame": Case(
        "fd", [send(b"\xff\xff\xff\xfa" + FD_HELLO)], [(0.0, TERMINATE)], 0.0,
        "a heartbeat signal before the Hello: not 'Hello ' at bytes 4..9, not TLS either (15.31)"),
    "fd-empty-first-frame": Case(
        "fd", [send(b"\x00\x00\x00\x00" + FD_HELLO)], [(0.0, TERMINATE)], 0.0,
        "an empty frame before the Hello: BNET_TERMINATE at once (15.31)"),
    "fd-oversized-header": Case(
        "fd", [send(b"\x00\x0f\x42\x41Hello Director bareos-dir calling\n")], [(0.0, TERMINATE)], 0.0,
        "a header of 1,000,001 in front of Hello text: packet too big, BNET_TERMINATE (1.1, 15.31)"),
    "fd-http-get": Case(
        "fd", [send(b"GET / HTTP/1.1\r\nHost: 127.0.0.1:9102\r\n\r\n")], [(0.0, TERMINATE)], 0.0,
        "an HTTP request goes to the TLS server, which fails: the raw BNET_TERMINATE (6.3 item 7)"),
    # -- FD: silence -----------------------------------------------------------------------
    "fd-never-speaks": Case(
        "fd", [], [], NO_CLOSE,
        "a peer that never speaks is dropped (aborted) at the handshake timeout, nothing sent"),
    "fd-one-byte-then-stall": Case(
        "fd", [send(b"\x00")], [], NO_CLOSE,
        "one byte then silence: we wait for 10 bytes, then the handshake timeout drops it"),
    "fd-stall-after-hello": Case(
        "fd", [send(FD_HELLO)], [(0.0, FD_CHALLENGE)], NO_CLOSE,
        "a Hello and then no response: the challenge, then the handshake timeout"),
    # -- SD ----------------------------------------------------------------------------------
    "sd-wrong-password": Case(
        "sd", wrong_password_steps(),
        [(0.0, SD_CHALLENGE), (0.0, AUTH_FAILED), (5.0, AUTH_FAILED), (10.0, SD_NO_GO)], 15.0,
        "wrong Director password at the SD: 1999, 1999 at 5 s, 3999 No go at 10 s, close 5 s later (7.5)"),
    "sd-unknown-job": Case(
        "sd", [send(frame(b'Hello Start Job nosuchjob Version="26.0.0"\n'))], [(0.0, TERMINATE)], 0.0,
        "an FD naming a job the SD does not run: BNET_TERMINATE at once"),
    "sd-unknown-director": Case(
        "sd", [send(hello_director("nobody-dir"))], [(0.0, TERMINATE)], 0.0,
        "unknown Director at the SD: BNET_TERMINATE at once"),
    "sd-hello-too-long": Case(
        "sd", [send(frame(b'Hello Director bareos-dir calling Version="26.0.0"' + b" " * 120 + b"\n"))],
        [(5.0, TERMINATE)], 5.0,
        "a Hello above the SD's 158-byte window: 5 s, BNET_TERMINATE (11 items 19, 22)"),
    "sd-data-channel-wrong-session-key": Case(
        "sd", [send(frame(b"Hello Start Job " + JOB.encode() + b' Version="26.0.0"\n')), respond(b"A" * 39)],
        [(0.0, SD_DATA_CHALLENGE), (0.0, AUTH_FAILED), (5.0, AUTH_FAILED)], 10.0,
        "an FD with the wrong session key: the CRAM lines only (no 3999 on a data channel), close at 10 s"),
    "sd-storage-name-in-challenge-is-answered": Case(
        "sd", [send(hello_director(DIRECTOR)), respond(key("bareos-dir@sd")),
               our_challenge(b"R_STORAGE::bareos-sd-clear"), when(lambda f: len(f) == 3, lambda f: frame(AUTH_OK))],
        [(0.0, SD_CHALLENGE), (0.0, AUTH_OK), (0.0, re.compile(rb"[A-Za-z0-9+/]{22}\x00")), (0.0, SD_HELLO_OK)],
        NO_CLOSE,
        "the replay check spares R_STORAGE (an SD may talk to itself, 5.3 step 3): the login succeeds",
        until=1.0),
    # -- Director ----------------------------------------------------------------------------
    "dir-client-wrong-password": Case(
        "dir", [send(frame(b'Hello Client client-ci-clear FdProtocolVersion=54 calling Version="26.0.0"\n')),
                respond(b"0" * 32)],
        [(0.0, DIR_CHALLENGE), (0.0, AUTH_FAILED), (5.0, AUTH_FAILED), (10.0, NOT_AUTHORIZED)], 15.0,
        "a client-initiated FD with a wrong password: 1999, 1999 at 5 s, 'You are not authorized' at 10 s (7.4)"),
    "dir-client-reflected-challenge": Case(
        "dir", [send(frame(b'Hello Client client-ci-clear FdProtocolVersion=54 calling Version="26.0.0"\n')),
                respond(key("client-ci-clear")), echo_challenge()],
        [(0.0, DIR_CHALLENGE), (0.0, AUTH_OK), (0.0, AUTH_FAILED), (5.0, NOT_AUTHORIZED)], 10.0,
        "the Director's challenge echoed back: refused, 1999 at once, 'not authorized' after 5 s"),
    "dir-unknown-client": Case(
        "dir", [send(frame(b"Hello Client nobody FdProtocolVersion=54 calling\n"))], [(0.0, TERMINATE)], 0.0,
        "an unknown client name: BNET_TERMINATE at once (6.3, 15.31)"),
    "dir-client-hello-printf": Case(
        "dir", [send(frame(b"Hello Client %s%s%n FdProtocolVersion=54 calling\n"))], [(0.0, TERMINATE)], 0.0,
        "printf specifiers in a client Hello: an unknown name, BNET_TERMINATE at once"),
    "dir-client-cleartext-where-tls-required": Case(
        "dir", [send(frame(b'Hello Client client-ci FdProtocolVersion=54 calling Version="26.0.0"\n'))],
        [(0.0, TERMINATE)], 0.0,
        "cleartext Hello of a client whose TLS is required: BNET_TERMINATE at once (6.3 step 6)"),
    "dir-unknown-console": Case(
        "dir-console", [send(frame(b'Hello nobody calling version 26.0.0 Version="26.0.0"\n'))], [(0.0, TERMINATE)], 0.0,
        "an unknown console: BNET_TERMINATE at once (7.1 step 4, 15.31)"),
    "dir-console-cleartext-where-tls-required": Case(
        "dir-console", [send(frame(b'Hello admin calling version 26.0.0 Version="26.0.0"\n'))], [(0.0, TERMINATE)], 0.0,
        "a cleartext 18.2+ Hello for a console whose TLS is on: BNET_TERMINATE at once (15.15)"),
    "dir-console-12.4-cleartext-reaches-cram": Case(
        "dir-console", [send(frame(b"Hello admin calling\n"))], [(0.0, challenge_re(b"R_DIRECTOR::bareos-dir", 2))],
        NO_CLOSE, "a 12.4 Hello is let through to CRAM-MD5 whatever the TLS setting (15.15)", until=1.0),
    "dir-console-hello-too-long": Case(
        "dir-console", [send(frame(b'Hello plain-console calling version 26.0.0 Version="26.0.0"' + b" " * 100 + b"\n"))],
        [(5.0, TERMINATE)], 5.0,
        "a console Hello above the Director's 153-byte window: 5 s, BNET_TERMINATE (11 item 19)"),
}


def _tls_off_case() -> Case:
    client = TlsEngine(psk_client_context("R_DIRECTOR\x1ebareos-dir", Secret(FD_KEY)), server_side=False)
    return Case("fd", [send(client.data_to_send())], [(0.0, TERMINATE)], 0.0,
                "a TLS ClientHello to an FD with tls=False: BNET_TERMINATE at once", {"tls": False})


CASES["fd-tls-when-tls-is-off"] = _tls_off_case()


@pytest.mark.parametrize("name", list(CASES), ids=list(CASES))
def test_hostile_peer(name: str) -> None:
    """Every case: the frames our daemon writes and their times are the literal expectation,
    the connection ends with a clean close at the expected time (or, for a peer that stalls,
    with an abort at the handshake timeout), and ``on_channel`` is never called for a refusal."""
    case = CASES[name]
    outcome = play(case.daemon, Peer(case.steps), until=case.until, **case.factory_kw)
    try:
        match(outcome, case.expected)
        positive = name.endswith("-is-answered") or name.endswith("-reaches-cram")
        if case.closed_at is not None:
            assert outcome.closed_at == case.closed_at
            assert outcome.aborted_at is None
        elif positive:
            assert outcome.closed_at is None and outcome.aborted_at is None
        else:
            assert outcome.closed_at is None and outcome.aborted_at == HANDSHAKE_TIMEOUT
        assert len(outcome.channels) == (1 if name.endswith("-is-answered") else 0)
    except AssertionError as exc:
        raise AssertionError(f"{name}: {case.doc}\n{exc}") from None


def test_there_are_at_least_thirty_cases() -> None:
    """The table holds at least 30 hostile inputs (the TLS ones below come on top)."""
    assert len(CASES) >= 30


# -- TLS-PSK cases ---------------------------------------------------------------------------------


def tls_peer(identity: str, key_bytes: bytes, steps: Sequence[Step]) -> Peer:
    return Peer(steps, TlsEngine(psk_client_context(identity, Secret(key_bytes)), server_side=False))


def test_unknown_psk_identity() -> None:
    """An identity the FD does not know (``R_DIRECTOR\\x1enobody-dir``): the TLS alert
    handshake_failure, then the raw ``ff ff ff fc`` on the plain socket, close at once
    (6.3 item 7, 15.16)."""
    peer = tls_peer("R_DIRECTOR\x1enobody-dir", key("tls-dir@fd"), [send(hello_director("nobody-dir"))])
    outcome = play("fd", peer)
    assert peer.raw == ALERT_HANDSHAKE_FAILURE + TERMINATE
    assert peer.tls_error is not None
    assert outcome.closed_at == 0.0 and outcome.channels == []


def test_psk_with_a_wrong_key() -> None:
    """The right identity with the wrong key: illegal_parameter alert, raw terminate, close (15.16)."""
    peer = tls_peer("R_DIRECTOR\x1etls-dir", b"0" * 32, [send(hello_director("tls-dir"))])
    outcome = play("fd", peer)
    assert peer.raw.endswith(ALERT_ILLEGAL_PARAMETER + TERMINATE)
    assert outcome.closed_at == 0.0 and outcome.channels == []


def test_psk_identity_and_hello_name_differ() -> None:
    """TLS-PSK as ``tls-dir`` but the Hello names ``bareos-dir`` (another known Director):
    Bareos 26 refuses after 5 s with ``BNET_TERMINATE`` (inside TLS) and closes; no challenge (6.4)."""
    peer = tls_peer("R_DIRECTOR\x1etls-dir", key("tls-dir@fd"), [send(hello_director(DIRECTOR))])
    outcome = play("fd", peer)
    assert outcome.frames == [(5.0, TERMINATE)]
    assert outcome.closed_at == 5.0 and outcome.channels == []


def test_psk_identity_and_hello_name_may_differ_for_25x() -> None:
    """With ``psk_name_check=False`` (25.x peers, which have no cross-check) the same Hello
    gets the challenge of the Hello's Director, ``ssl=0`` (its policy), at once."""
    peer = tls_peer("R_DIRECTOR\x1etls-dir", key("tls-dir@fd"), [send(hello_director(DIRECTOR))])
    outcome = play("fd", peer, until=1.0, psk_name_check=False)
    match(outcome, [(0.0, FD_CHALLENGE)])
    assert outcome.closed_at is None


def test_psk_hello_naming_nobody_inside_tls() -> None:
    """Inside TLS, a Hello naming no Director gets ``BNET_TERMINATE`` (encrypted) at once."""
    peer = tls_peer("R_DIRECTOR\x1etls-dir", key("tls-dir@fd"), [send(hello_director("nobody-dir"))])
    outcome = play("fd", peer)
    assert outcome.frames == [(0.0, TERMINATE)]
    assert outcome.closed_at == 0.0


def test_psk_client_identity_mismatch_at_the_director() -> None:
    """At the Director: TLS-PSK as ``R_CLIENT\\x1eclient-ci``, Hello as ``client-ci-clear``:
    5 s, ``BNET_TERMINATE``, close."""
    peer = tls_peer("R_CLIENT\x1eclient-ci", key("client-ci"),
                    [send(frame(b'Hello Client client-ci-clear FdProtocolVersion=54 calling Version="26.0.0"\n'))])
    outcome = play("dir", peer)
    assert outcome.frames == [(5.0, TERMINATE)]
    assert outcome.closed_at == 5.0


def test_good_login_control() -> None:
    """Control: the same machinery with the right password logs in (``2000 OK Hello 54``)
    and reaches ``on_channel`` once, so the refusals above are not an artefact of the harness."""
    peer = Peer([send(FD_HELLO), respond(FD_KEY), our_challenge(b"R_DIRECTOR::bareos-dir"),
                 when(lambda f: len(f) == 3, lambda f: frame(AUTH_OK))])
    outcome = play("fd", peer, until=1.0)
    match(outcome, [(0.0, FD_CHALLENGE), (0.0, AUTH_OK), (0.0, re.compile(rb"[A-Za-z0-9+/]{22}\x00")),
                    (0.0, FD_HELLO_OK)])
    assert len(outcome.channels) == 1 and outcome.closed_at is None


def test_failing_connection_replies_are_not_read_further() -> None:
    """While a refusal plays out, further bytes from the peer are ignored (Bareos sleeps
    and reads nothing): a correct retry on the same connection changes nothing."""
    steps = wrong_password_steps() + [when(lambda f: len(f) == 2, lambda f: frame(b"status\n"))]
    outcome = play("fd", Peer(steps))
    match(outcome, FD_WRONG_HASH)
    assert outcome.closed_at == 16.0


# -- real TCP: the close as a client sees it ----------------------------------------------------


def blocking_exchange(port: int, data: bytes, timeout: float = 5.0) -> tuple[bytes, str]:
    """Send ``data`` (if any), read until EOF or reset; return what came and how it ended."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        if data:
            sock.sendall(data)
        got = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                return got, "reset"
            except TimeoutError:
                return got, "timeout"
            if not chunk:
                return got, "eof"
            got += chunk


class TcpTests(TestCase):
    """Refusals over real TCP on 127.0.0.1: bytes, then the connection ends."""

    timeout = 30

    async def listen(self, factory: BareosServerFactory) -> int:
        port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(factory)
        self.addCleanup(port.stopListening)
        return int(port.getHost().port)

    async def test_http_get_gets_terminate_and_close(self) -> None:
        """``GET / HTTP/1.1`` to our FD: exactly ``ff ff ff fc``, then the connection ends."""
        port = await self.listen(fd_factory(reactor, lambda ch: None))
        got, how = await deferToThread(blocking_exchange, port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertIn(how, ("eof", "reset"))
        self.assertEqual(got, TERMINATE)

    async def test_cleartext_hello_where_tls_required(self) -> None:
        """A cleartext Hello from a TLS-required Director: ``ff ff ff fc`` at once, then the end
        (PROTOCOL.md 11 item 2 allows a reset instead; we close after the frame)."""
        port = await self.listen(fd_factory(reactor, lambda ch: None))
        got, how = await deferToThread(blocking_exchange, port, hello_director("tls-dir"))
        self.assertIn(how, ("eof", "reset"))
        self.assertEqual(got, TERMINATE)

    async def test_unknown_console_at_the_director(self) -> None:
        """An unknown console at our Director: ``ff ff ff fc`` and the end."""
        port = await self.listen(dir_console_factory(reactor, lambda ch: None))
        got, how = await deferToThread(blocking_exchange, port,
                                       frame(b'Hello nobody calling version 26.0.0 Version="26.0.0"\n'))
        self.assertIn(how, ("eof", "reset"))
        self.assertEqual(got, TERMINATE)

    async def test_silent_peer_is_dropped_after_the_handshake_timeout(self) -> None:
        """A peer that connects and says nothing is dropped by the handshake timeout (0.3 s
        here), receiving nothing."""
        factory = fd_server_factory(reactor, client_name=CLIENT, directors={}, on_channel=lambda ch: None,
                                    handshake_timeout=0.3)
        port = await self.listen(factory)
        got, how = await deferToThread(blocking_exchange, port, b"", 5.0)
        self.assertEqual(got, b"")
        self.assertIn(how, ("eof", "reset"))

    async def test_wrong_password_at_the_sd_ends_with_close(self) -> None:
        """A wrong password at our SD with short delays (0.1 s): ``1999``, ``1999``,
        ``3999 No go``, then the close."""
        factory = sd_server_factory(reactor, storage_name=STORAGE, failure_delay=0.1,
                                    directors={DIRECTOR: (PASSWORDS["bareos-dir@sd"], TlsPolicy.NONE)},
                                    on_channel=lambda ch: None)
        port = await self.listen(factory)

        def run() -> tuple[list[bytes], str]:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                sock.sendall(hello_director(DIRECTOR))
                decoder = FrameDecoder()
                frames: list[bytes] = []
                how = "eof"
                while True:
                    try:
                        chunk = sock.recv(65536)
                    except ConnectionResetError:
                        how = "reset"
                        break
                    for ev in decoder.receive_data(chunk) if chunk else []:
                        assert isinstance(ev, Message)
                        frames.append(ev.payload)
                        if len(frames) == 1:
                            sock.sendall(frame(b"x" * 22 + b"\x00"))
                    if not chunk:
                        break
                return frames, how

        frames, how = await deferToThread(run)
        self.assertEqual(how, "eof")
        self.assertTrue(SD_CHALLENGE.fullmatch(frames[0]))
        self.assertEqual(frames[1:], [AUTH_FAILED, AUTH_FAILED, SD_NO_GO])
