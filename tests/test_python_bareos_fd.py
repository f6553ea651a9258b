"""python-bareos' ``FileDaemon`` (a real, independent client) against our FD acceptor.

``bareos.bsock.FileDaemon`` is blocking, so it runs in a thread
(``deferToThread``) while our ``fd_server_factory`` serves on 127.0.0.1 in the
reactor.  It logs in as a Director and runs ``status``; our ``on_channel``
answers with the status frames the real FD sent to python-bareos in the
recording ``monitor-fd-emulated`` (same names and password), so the bytes
python-bareos returns are known in advance.  python-bareos 25.1.1 does not bash
names (PROTOCOL.md 11 item 12): the names here have no spaces.

TLS-PSK: python-bareos uses the standard library's TLS-PSK when
``ssl.HAS_PSK`` is true (Python >= 3.13; ``lowlevel.py`` ``__connect_tls_psk``)
and needs ``sslpsk3`` only on older Pythons; the TLS test is skipped only if
neither is available.
"""

from __future__ import annotations

import base64
import json
import ssl
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import reactor as _reactor
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from bareosproto.events import Message, SignalFrame
from bareosproto.tls_policy import TlsPolicy
from bareosproto.twisted.daemon import DaemonChannel, fd_server_factory
from bareosproto.twisted.factory import BareosServerFactory

bareos_bsock = pytest.importorskip("bareos.bsock")
bareos_exceptions = pytest.importorskip("bareos.exceptions")

reactor: Any = _reactor

RECORDING = Path(__file__).resolve().parent / "data" / "monitor-fd-emulated.json"
DIRECTOR = "monitor-py"
PASSWORD = "monitor-py-password"
CLIENT = "client-clear"


def recorded_status() -> tuple[bytes, list[bytes]]:
    """The command python-bareos sent and the FD's reply frames (up to ``BNET_EOD``)."""
    doc = json.loads(RECORDING.read_text(encoding="utf-8"))
    frames = doc["connections"][0]["frames"]
    command_at = next(i for i, f in enumerate(frames) if f["dir"] == "i2a" and base64.b64decode(f["payload_b64"]) == b"status")
    reply = []
    for f in frames[command_at + 1 :]:
        assert f["dir"] == "a2i"
        if f["header"] < 0:
            assert f["signal"] == "BNET_EOD"
            break
        reply.append(base64.b64decode(f["payload_b64"]))
    return b"status", reply


COMMAND, STATUS = recorded_status()


def tls_psk_available() -> bool:
    if getattr(ssl, "HAS_PSK", False):
        return True
    try:
        import sslpsk3  # noqa: F401
    except ImportError:
        return False
    return True


class PythonBareosFileDaemonTests(TestCase):
    """python-bareos as a Director against our FD."""

    timeout = 60

    async def serve(self, tls_policy: TlsPolicy) -> tuple[int, Deferred[tuple[Message | SignalFrame, DaemonChannel]]]:
        seen: Deferred[tuple[Message | SignalFrame, DaemonChannel]] = Deferred()

        async def fd_side(ch: DaemonChannel) -> None:
            command = await ch.read_command()
            ch.send_lines(STATUS)  # the recorded frames, NULs included
            seen.callback((command, ch))

        factory = fd_server_factory(reactor, client_name=CLIENT, directors={DIRECTOR: (PASSWORD, tls_policy)},
                                    on_channel=lambda ch: ensureDeferred(fd_side(ch)))
        port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(factory)
        self.addCleanup(port.stopListening)
        self.addCleanup(self.close_all, factory)
        return int(port.getHost().port), seen

    async def close_all(self, factory: BareosServerFactory) -> None:
        for proto in list(factory.protocols):
            proto.abort()
            await proto.when_closed()

    @staticmethod
    def run_client(port: int, tls: bool, password: str = PASSWORD) -> tuple[bytes, Any]:
        """Blocking: log in, run ``status``, close. Returns the result and the cipher."""
        fd = bareos_bsock.FileDaemon(address="127.0.0.1", port=port, name=DIRECTOR, password=password,
                                     tls_psk_enable=tls, tls_psk_require=tls)
        try:
            result = fd.call(COMMAND.decode())
            return bytes(result), fd.get_cipher()
        finally:
            fd.close()

    async def test_status_in_cleartext(self) -> None:
        """python-bareos logs in to our FD in clear (its Hello ``Hello Director monitor-py
        calling``, its response without NUL, its challenge ``<N.T@monitor-py>`` with a number
        that may exceed 32 bits: all accepted) and gets the status text it got from the real
        FD: the recorded frames concatenated, up to ``BNET_EOD``."""
        port, seen = await self.serve(TlsPolicy.NONE)
        result, cipher = await deferToThread(self.run_client, port, False)
        command, ch = await seen
        self.assertEqual(command, Message(b"status"))
        self.assertEqual(result, b"".join(STATUS))
        self.assertIsNone(cipher)
        self.assertEqual(ch.peer_name, DIRECTOR)
        self.assertIsNone(ch.handshake.hello.version)  # python-bareos sends no Version= (15.11)
        self.assertIsNone(ch.handshake.tls_version)
        await ch.when_closed()  # python-bareos closes without BNET_TERMINATE (15.11)

    async def test_status_over_tls_psk(self) -> None:
        """The same over TLS-PSK: python-bareos' stdlib PSK client (identity
        ``R_DIRECTOR\\x1emonitor-py``, key = MD5 hex of the password) and our PSK server agree on TLS 1.3."""
        if not tls_psk_available():
            raise pytest.skip.Exception("python-bareos has no TLS-PSK here: neither ssl.HAS_PSK nor sslpsk3")
        port, seen = await self.serve(TlsPolicy.REQUIRED)
        result, cipher = await deferToThread(self.run_client, port, True)
        command, ch = await seen
        self.assertEqual(command, Message(b"status"))
        self.assertEqual(result, b"".join(STATUS))
        self.assertEqual(cipher[1], "TLSv1.3")
        self.assertEqual(ch.handshake.tls_version, "TLSv1.3")
        assert ch.protocol.tls is not None
        self.assertEqual(ch.protocol.tls.psk_identity, "R_DIRECTOR\x1emonitor-py")
        await ch.when_closed()

    async def test_wrong_password_is_refused(self) -> None:
        """python-bareos with a wrong password raises AuthenticationError: our FD answers its
        response with ``1999 Authorization failed.`` at once, so the blocking client does not wait
        for the delayed lines (which play out on our side; a short delay keeps the test quick)."""
        factory = fd_server_factory(reactor, client_name=CLIENT, directors={DIRECTOR: (PASSWORD, TlsPolicy.NONE)},
                                    on_channel=lambda ch: None, failure_delay=0.1, auth_failure_delay=0.1)
        port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(factory)
        self.addCleanup(port.stopListening)
        with self.assertRaises(bareos_exceptions.AuthenticationError):
            await deferToThread(self.run_client, port.getHost().port, False, "not-the-password")
        for proto in list(factory.protocols):
            await proto.when_closed()

    async def test_cleartext_refused_where_tls_is_required(self) -> None:
        """python-bareos without TLS against an FD that requires TLS for this Director gets
        ``BNET_TERMINATE`` at once (PROTOCOL.md 6.3); it reports the signal (-4) as an
        authentication error."""
        port, _ = await self.serve(TlsPolicy.REQUIRED)
        with self.assertRaises(bareos_exceptions.AuthenticationError) as caught:
            await deferToThread(self.run_client, port, False)
        self.assertIn("-4", str(caught.exception))  # the signal it received: BNET_TERMINATE


def test_the_recorded_reply_is_what_we_serve() -> None:
    """The served frames are the recorded ones: a bare ``\\n`` first (15.5), the rest with a NUL."""
    assert STATUS[0] == b"\n"
    assert all(f.endswith(b"\n\x00") for f in STATUS[1:])
    assert len(STATUS) == 14
