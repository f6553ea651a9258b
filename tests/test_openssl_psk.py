"""``openssl s_client -psk`` (Debian's OpenSSL, an independent TLS stack) against our FD acceptor.

PROTOCOL.md 6.4 and 12 V6: a Director reaches an FD with TLS-PSK identity
``R_DIRECTOR\\x1e<director name>`` and, as the PSK, the ASCII bytes of the key
(the MD5 hex of the password), which ``s_client -psk`` takes as hex.  Once the
handshake is done, the Bareos conversation runs inside TLS: a raw Hello frame
written to s_client's stdin reaches our FD, whose CRAM-MD5 challenge comes back
on s_client's stdout.  A wrong identity or key makes the handshake fail with the
alerts of 15.16.  Every wait is bounded and every s_client is killed at the end.
"""

from __future__ import annotations

import os
import re
import select
import shutil
import subprocess
import time
from typing import Any

import pytest
from twisted.internet import reactor as _reactor
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from bareosproto.tls_policy import TlsPolicy
from bareosproto.twisted.daemon import DaemonChannel, fd_server_factory
from bareosproto.twisted.factory import BareosServerFactory

OPENSSL = shutil.which("openssl")
pytestmark = pytest.mark.skipif(OPENSSL is None, reason="openssl is not installed")

reactor: Any = _reactor

DIRECTOR = "bareos-dir"
CLIENT = "client-clear"
PASSWORD = "secret"
#: PROTOCOL.md 12 V6 (c): the key of "secret" is 5ebe2294ecd0e0f08eab7690d2a6ee69; -psk takes its ASCII as hex
PSK_HEX = b"5ebe2294ecd0e0f08eab7690d2a6ee69".hex()
IDENTITY = "R_DIRECTOR\x1ebareos-dir"
#: the Hello of a Bareos 26 Director (PROTOCOL.md 7.3 step 4), framed
HELLO = b"\x00\x00\x00\x32" + b'Hello Director bareos-dir calling Version="26.0.0"\n'
#: the FD's challenge for a Director whose TLS is required: ssl=2 (PROTOCOL.md 13)
CHALLENGE = re.compile(rb"\x00\x00\x00(.)(auth cram-md5 <\d+\.\d+@R_CLIENT::client-clear> ssl=2\n)", re.DOTALL)


def read_until(proc: subprocess.Popen[bytes], done: Any, timeout: float = 10.0) -> bytes:
    """Read s_client's stdout (stderr merged) until ``done(seen)`` or EOF or the timeout."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    seen = b""
    deadline = time.monotonic() + timeout
    while not done(seen):
        left = deadline - time.monotonic()
        if left <= 0:
            break
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            continue
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        seen += chunk
    return seen


class OpensslPskTests(TestCase):
    """s_client against ``fd_server_factory`` on 127.0.0.1."""

    timeout = 60

    async def start(self) -> tuple[int, BareosServerFactory, list[DaemonChannel]]:
        channels: list[DaemonChannel] = []
        factory = fd_server_factory(reactor, client_name=CLIENT, directors={DIRECTOR: (PASSWORD, TlsPolicy.REQUIRED)},
                                    on_channel=channels.append)
        port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(factory)
        self.addCleanup(port.stopListening)
        self.addCleanup(self.close_all, factory)
        return int(port.getHost().port), factory, channels

    async def close_all(self, factory: BareosServerFactory) -> None:
        for proto in list(factory.protocols):
            proto.abort()
            await proto.when_closed()

    def s_client(self, port: int, *extra: str, identity: str = IDENTITY, psk: str = PSK_HEX) -> subprocess.Popen[bytes]:
        assert OPENSSL is not None
        proc = subprocess.Popen(
            [OPENSSL, "s_client", "-quiet", "-connect", f"127.0.0.1:{port}", "-psk", psk,
             "-psk_identity", identity, *extra],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )  # fmt: skip

        def stop() -> None:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)
            for stream in (proc.stdin, proc.stdout):
                if stream is not None:
                    stream.close()

        self.addCleanup(stop)
        return proc

    async def hello_through(self, *extra: str) -> tuple[bytes, BareosServerFactory]:
        port, factory, _ = await self.start()
        proc = self.s_client(port, *extra)
        assert proc.stdin is not None

        def talk() -> bytes:
            assert proc.stdin is not None
            proc.stdin.write(HELLO)  # s_client sends it once the handshake is done
            proc.stdin.flush()
            return read_until(proc, lambda seen: CHALLENGE.search(seen) is not None)

        seen = await deferToThread(talk)
        return seen, factory

    async def test_tls13_handshake_then_hello_gets_the_challenge(self) -> None:
        """``s_client -psk <hex> -psk_identity R_DIRECTOR<1e>bareos-dir`` completes TLS 1.3
        with our FD (TLS_CHACHA20_POLY1305_SHA256 or another SHA-256 suite), the raw Hello
        frame written to its stdin reaches the FD, and the FD's challenge frame comes back
        (header = payload length, ``ssl=2``)."""
        seen, factory = await self.hello_through()
        m = CHALLENGE.search(seen)
        assert m is not None, seen
        self.assertEqual(m.group(1)[0], len(m.group(2)))
        (proto,) = factory.protocols
        assert proto.tls is not None
        self.assertEqual(proto.tls.version, "TLSv1.3")
        self.assertIn(proto.tls.cipher, ("TLS_CHACHA20_POLY1305_SHA256", "TLS_AES_128_GCM_SHA256"))
        self.assertEqual(proto.tls.psk_identity, IDENTITY)
        assert proto.conn is not None and proto.conn.hello is not None
        self.assertEqual(proto.conn.hello.name, DIRECTOR)

    async def test_tls12_handshake_then_hello_gets_the_challenge(self) -> None:
        """The same with ``-tls1_2``: ECDHE-PSK-CHACHA20-POLY1305, as bareos-fd negotiated
        with a TLS 1.2 PSK client (PROTOCOL.md 13)."""
        seen, factory = await self.hello_through("-tls1_2")
        self.assertIsNotNone(CHALLENGE.search(seen), seen)
        (proto,) = factory.protocols
        assert proto.tls is not None
        self.assertEqual((proto.tls.version, proto.tls.cipher), ("TLSv1.2", "ECDHE-PSK-CHACHA20-POLY1305"))

    async def refused(self, identity: str, psk: str, alert: bytes) -> None:
        port, factory, channels = await self.start()
        proc = self.s_client(port, identity=identity, psk=psk)

        def talk() -> tuple[bytes, int | None]:
            assert proc.stdin is not None
            try:
                proc.stdin.write(HELLO)
                proc.stdin.flush()
            except BrokenPipeError:
                pass
            seen = read_until(proc, lambda s: False, timeout=10)  # until s_client ends
            try:
                return seen, proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                return seen, None

        seen, rc = await deferToThread(talk)
        self.assertNotIn(b"auth cram-md5", seen)
        self.assertIn(alert, seen)
        self.assertNotEqual(rc, 0)
        self.assertEqual(channels, [])
        for proto in list(factory.protocols):
            await proto.when_closed()  # our side closed after the alert and the raw terminate

    async def test_wrong_identity_fails(self) -> None:
        """An identity the FD does not know (``R_DIRECTOR<1e>nobody-dir``): our FD answers
        with the handshake_failure alert (15.16), s_client reports it and exits non-zero; no
        challenge is ever sent."""
        await self.refused("R_DIRECTOR\x1enobody-dir", PSK_HEX, b"handshake failure")

    async def test_identity_of_another_type_fails(self) -> None:
        """The right name under the wrong type (``R_CONSOLE<1e>bareos-dir``) is unknown too."""
        await self.refused("R_CONSOLE\x1ebareos-dir", PSK_HEX, b"handshake failure")

    async def test_wrong_key_fails(self) -> None:
        """The right identity with another key: the illegal_parameter alert (15.16)."""
        await self.refused(IDENTITY, (b"0" * 32).hex(), b"illegal parameter")
