"""No password, key or PSK in any log line, exception text or repr.

Every path (successful logins of each connection type in clear and TLS-PSK, wrong passwords, wrong
PSKs, unknown identities, hostile Hellos) runs under a ``twisted.logger`` capture; the captured
text, the error texts and the reprs of every object involved are searched for the clear password,
its MD5 key and the job session key.
"""

from __future__ import annotations

import hmac
import inspect
from typing import Any

from twisted.internet import defer, reactor
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial import unittest

from bareosproto import ResourceType, TlsPolicy, password_key, session_key
from bareosproto import cram
from bareosproto.connection import (
    ClientConnection,
    ConnectionType,
    Credentials,
    Daemon,
    ServerConfig,
)
from bareosproto.errors import ProtocolError
from bareosproto.twisted import BareosServerFactory, connect, server_endpoint

PASSWORD = "Sup3r-Secret-Pa55word"
KEY = password_key(PASSWORD)
WRONG = password_key("not-the-password")
JOB_KEY = session_key(b"\x13\x37" * 8)
JOB = "job.2026-11-30_10.00.00_01"
NEEDLES = [PASSWORD, KEY.reveal().decode(), JOB_KEY.reveal().decode()]

TYPES = {
    ConnectionType.CONSOLE: (Daemon.DIRECTOR, ResourceType.R_CONSOLE, "admin", KEY),
    ConnectionType.CLIENT_INITIATED: (Daemon.DIRECTOR, ResourceType.R_CLIENT, "fd", KEY),
    ConnectionType.DIRECTOR_FD: (Daemon.FD, ResourceType.R_DIRECTOR, "dir", KEY),
    ConnectionType.DIRECTOR_SD: (Daemon.SD, ResourceType.R_DIRECTOR, "dir", KEY),
    ConnectionType.FD_SD: (Daemon.SD, ResourceType.R_JOB, JOB, JOB_KEY),
    ConnectionType.SD_FD_PASSIVE: (Daemon.FD, ResourceType.R_JOB, JOB, JOB_KEY),
}


class NoSecretsAnywhere(unittest.TestCase):
    timeout = 60

    def setUp(self) -> None:
        self.captured: list[str] = []

        def observer(event: dict[str, Any]) -> None:
            self.captured.append(formatEvent(event) or "")
            self.captured.append(repr(event))
            failure = event.get("log_failure")
            if failure is not None:
                self.captured.append(failure.getTraceback())

        self.observer = observer
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)

    def seen(self, *objects: object) -> None:
        for obj in objects:
            self.captured.append(repr(obj))
            self.captured.append(str(obj))
            if isinstance(obj, ProtocolError):
                self.captured.append(obj.message)
            if hasattr(obj, "__dict__"):
                self.captured.append(repr({k: v for k, v in vars(obj).items() if not inspect.isroutine(v)}))

    def assert_clean(self) -> None:
        text = "\n".join(self.captured)
        self.assertGreater(len(text), 0)
        for needle in NEEDLES:
            self.assertNotIn(needle, text)
            self.assertNotIn(needle.encode().hex(), text)

    async def exercise(self, conn_type: ConnectionType, tls: bool, client_key: Any, name: str | None = None) -> None:
        daemon, rtype, peer, server_key = TYPES[conn_type]
        creds = Credentials(server_key, TlsPolicy.REQUIRED if tls else TlsPolicy.NONE)
        config = ServerConfig(daemon=daemon, name="acceptor", tls=tls, failure_delay=0.01, fd_failure_delay=0.01,
                              lookup=lambda t, n: creds if (t, n) == (rtype, peer) else None,
                              own_tls_policy=creds.tls_policy)
        channels: list[Any] = []
        factory = BareosServerFactory(config, reactor, channels.append)
        port = await server_endpoint(reactor, "tcp:0:interface=127.0.0.1").listen(factory)
        try:
            client_name = name or ("sd" if rtype is ResourceType.R_JOB else peer)

            def make() -> ClientConnection:
                conn = ClientConnection(conn_type, name=client_name, key=client_key, job=JOB, clock=reactor.seconds,
                                        tls=tls, tls_policy=creds.tls_policy, failure_delay=0.01)
                self.seen(conn)
                return conn

            try:
                channel = await connect(reactor, f"tcp:host=127.0.0.1:port={port.getHost().port}", make,
                                        handshake_timeout=5)
            except ProtocolError as exc:
                self.seen(exc)
            else:
                self.seen(channel, channel.protocol, channel.handshake, channel.protocol.conn)
                channel.send(b"status")
                channel.close()
                await channel.protocol.when_closed()
            for proto in list(factory.protocols):
                self.seen(proto, proto.conn, proto.error)
                await proto.when_closed()
            for ch in channels:
                self.seen(ch.protocol.conn, ch.handshake)
            self.seen(config, creds, factory)
        finally:
            await port.stopListening()

    def test_every_path_keeps_secrets_out_of_logs_errors_and_reprs(self) -> defer.Deferred[None]:
        """Logins that succeed and fail, in clear and TLS-PSK, for every connection type."""

        async def run() -> None:
            for conn_type, (_, _, _, key) in TYPES.items():
                for tls in (False, True):
                    await self.exercise(conn_type, tls, key)  # success
                    await self.exercise(conn_type, tls, WRONG if key is KEY else session_key(bytes(16)))
            await self.exercise(ConnectionType.CONSOLE, True, KEY, name="nobody")  # unknown identity
            await self.exercise(ConnectionType.CONSOLE, False, KEY, name="admin %s%n")  # hostile name
            self.assert_clean()

        return defer.Deferred.fromCoroutine(run())

    def test_digests_are_compared_in_constant_time(self) -> None:
        """Response checks go through hmac.compare_digest (no early-exit comparison)."""
        calls: list[tuple[bytes, bytes]] = []
        original = hmac.compare_digest

        def spy(a: Any, b: Any) -> bool:
            calls.append((a, b))
            return original(a, b)

        cram.hmac.compare_digest = spy  # type: ignore[assignment]
        try:
            self.assertFalse(cram.verify_response(KEY, b"<1.2@R_DIRECTOR::d>", b"x" * 22, accept_standard=True))
        finally:
            cram.hmac.compare_digest = original  # type: ignore[assignment]
        self.assertEqual(len(calls), 2)

    def test_nonces_come_from_secrets(self) -> None:
        """The default challenge number comes from the secrets module, over Bareos' random() range."""
        values = {cram.default_nonce() for _ in range(200)}
        self.assertGreater(len(values), 190)
        self.assertTrue(all(0 <= v < 2**31 for v in values))
        self.assertIn("secrets", inspect.getsource(cram.default_nonce))
