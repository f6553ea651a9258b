"""python-bareos, the official Python console, logs into OUR Director.

python-bareos is blocking, so each of its sessions runs in a thread
(``deferToThread``) while our Director runs in the reactor.  Its TLS-PSK
needs ``ssl.HAS_PSK`` (stdlib, Python >= 3.13; then ``sslpsk3`` is not
needed) or the ``sslpsk3``/``sslpsk`` modules; those tests are skipped, with
the reason, where neither exists.
python-bareos 25.1.1 does not bash spaces in names, so the names here have none.
"""

from __future__ import annotations

import importlib.metadata
import ssl
from typing import Any

import pytest
from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread

bsock = pytest.importorskip("bareos.bsock")
import bareos.exceptions  # noqa: E402
from bareos.bsock.lowlevel import LowLevel  # noqa: E402

from bareosproto.console import ApiMode, CommandResult, ConsoleError, UnknownCommand  # noqa: E402
from bareosproto.hello import HelloKind  # noqa: E402
from bareosproto.tls_policy import TlsPolicy  # noqa: E402
from bareosproto.twisted.console import ConsoleServerSession  # noqa: E402

from test_console import DIRECTOR, TcpCase, inline  # noqa: E402

PYTHON_BAREOS_VERSION = importlib.metadata.version("python-bareos")
HAS_PSK = bool(getattr(ssl, "HAS_PSK", False)) or LowLevel.is_tls_psk_available()
needs_psk = pytest.mark.skipif(
    not HAS_PSK,
    reason="python-bareos TLS-PSK needs ssl.HAS_PSK (Python >= 3.13 with OpenSSL PSK) or sslpsk3/sslpsk",
)

CLIENTS = [{"clientid": "1", "name": "fd-one", "fileretention": "5184000"},
           {"clientid": "2", "name": "fd-two", "fileretention": "5184000"}]
VERSION_TEXT = f"{DIRECTOR} Version: 26.0.0~pre1298.eda204c31 (21 August 2026) Linux\n"


def handler(command: str, session: ConsoleServerSession) -> object:
    if command == "version":
        return CommandResult(text=VERSION_TEXT,
                             json={"version": {"name": DIRECTOR, "version": "26.0.0~pre1298.eda204c31"}})
    if command == "list clients":
        return CommandResult(text="".join(f"| {c['clientid']} | {c['name']} |\n" for c in CLIENTS),
                             json={"clients": CLIENTS})
    if command == "fail":
        raise ConsoleError("this command fails")
    raise UnknownCommand


def run_plain(port: int, commands: list[str], **kwargs: Any) -> dict[str, Any]:
    """A DirectorConsole session (blocking; runs in a thread)."""
    console = bsock.DirectorConsole(address="127.0.0.1", port=port, **kwargs)
    try:
        return {
            "replies": [console.call(c) for c in commands],
            "cipher": console.get_cipher(),
            "protocol": console.get_protocol_version(),
        }
    finally:
        console.close()


def run_json(port: int, commands: list[str], **kwargs: Any) -> dict[str, Any]:
    """A DirectorConsoleJson session: each reply is the decoded ``result``
    or the exception python-bareos raised."""
    console = bsock.DirectorConsoleJson(address="127.0.0.1", port=port, **kwargs)
    try:
        replies: list[Any] = []
        for c in commands:
            try:
                replies.append(console.call(c))
            except bareos.exceptions.Error as exc:
                replies.append(exc)
        return {"replies": replies, "cipher": console.get_cipher(), "protocol": console.get_protocol_version()}
    finally:
        console.close()


class PythonBareosConsoles(TcpCase):
    seen: list[ConsoleServerSession]

    async def serve(self, **kwargs: Any) -> tuple[Any, int]:
        """Our Director with the test handler; its sessions are kept in ``self.seen``."""
        self.seen = []
        factory, endpoint = await self.director(handler, on_session=self.seen.append, **kwargs)
        return factory, int(endpoint.rsplit("=", 1)[1])

    async def all_closed(self, factory: Any) -> None:
        """Wait until python-bareos' connections are closed on our side."""
        for _ in range(500):
            if not factory.protocols:
                return
            await deferLater(reactor, 0.01, lambda: None)
        raise AssertionError(f"still open: {factory.protocols}")

    @staticmethod
    def password(clear: str) -> Any:
        return bsock.Password(clear)

    @inline
    async def test_named_console_cleartext_text_mode(self) -> None:
        """python-bareos DirectorConsole logs in as a named console in
        cleartext (its Hello `... calling version <its version>`, 18.2
        protocol), sends `autodisplay off` first, and reads our mode 0 replies,
        an unknown command's error text included."""
        factory, port = await self.serve()
        result = await deferToThread(
            run_plain, port, ["version", "list clients", "bogus"], name="plain-console",
            password=self.password("plain-console-password"), tls_psk_enable=False)
        assert result["replies"] == [VERSION_TEXT.encode(), b"| 1 | fd-one |\n| 2 | fd-two |\n",
                                     b"bogus: is an invalid command.\n"]
        assert result["protocol"] == bsock.ProtocolVersions.bareos_18_2 and result["cipher"] is None
        await self.all_closed(factory)
        assert self.seen[0].commands == ["autodisplay off", "version", "list clients", "bogus"]
        hello = self.seen[0].handshake.hello
        assert hello.kind is HelloKind.CONSOLE and hello.console_version == PYTHON_BAREOS_VERSION

    @inline
    async def test_named_console_cleartext_json_mode(self) -> None:
        """DirectorConsoleJson: `.api json` then `.api json compact=yes` are
        accepted, `version` and `list clients` come back as JSON results, a
        failing or unknown command raises JsonRpcErrorReceivedException."""
        factory, port = await self.serve()
        result = await deferToThread(
            run_json, port, ["version", "list clients", "fail", "bogus"], name="plain-console",
            password=self.password("plain-console-password"), tls_psk_enable=False)
        version, clients, failed, bogus = result["replies"]
        assert version == {"version": {"name": DIRECTOR, "version": "26.0.0~pre1298.eda204c31"}}
        assert clients == {"clients": CLIENTS}
        assert isinstance(failed, bareos.exceptions.JsonRpcErrorReceivedException)
        assert isinstance(bogus, bareos.exceptions.JsonRpcErrorReceivedException)
        assert "is an invalid command" in str(bogus)
        await self.all_closed(factory)
        session = self.seen[0]
        assert session.commands[:2] == [".api json", ".api json compact=yes"]
        assert session.api_mode is ApiMode.JSON and session.compact

    @inline
    async def test_default_console_cleartext(self) -> None:
        """Without a name python-bareos is the default console `*UserAgent*`,
        keyed with the Director password; text and JSON both work."""
        factory, port = await self.serve()
        plain = await deferToThread(run_plain, port, ["version"], password=self.password("dir-console-password"),
                                    tls_psk_enable=False)
        assert plain["replies"] == [VERSION_TEXT.encode()]
        js = await deferToThread(run_json, port, ["list clients"], password=self.password("dir-console-password"),
                                 tls_psk_enable=False)
        assert js["replies"] == [{"clients": CLIENTS}]
        await self.all_closed(factory)
        assert {s.name for s in self.seen} == {"*UserAgent*"}

    @needs_psk
    @inline
    async def test_named_console_tls_psk(self) -> None:
        """python-bareos with TLS-PSK required (identity R_CONSOLE\\x1e<name>,
        its password's MD5 as PSK) connects to our Director over TLS 1.3 and
        runs commands in text and JSON mode."""
        factory, port = await self.serve()
        plain = await deferToThread(run_plain, port, ["version"], name="admin",
                                    password=self.password("admin-password"), tls_psk_require=True)
        assert plain["replies"] == [VERSION_TEXT.encode()]
        assert plain["cipher"] is not None and plain["cipher"][1] == "TLSv1.3"
        js = await deferToThread(run_json, port, ["list clients"], name="admin",
                                 password=self.password("admin-password"), tls_psk_require=True)
        assert js["replies"] == [{"clients": CLIENTS}] and js["cipher"][1] == "TLSv1.3"
        await self.all_closed(factory)
        assert {s.tls_version for s in self.seen} == {"TLSv1.3"}

    @needs_psk
    @inline
    async def test_default_console_tls_psk(self) -> None:
        """The default console over TLS-PSK (identity R_CONSOLE\\x1e*UserAgent*,
        the Director password as PSK), with the Director's policy REQUIRED."""
        factory, port = await self.serve(director_tls_policy=TlsPolicy.REQUIRED)
        js = await deferToThread(run_json, port, ["version"], password=self.password("dir-console-password"),
                                 tls_psk_require=True)
        assert js["replies"][0]["version"]["name"] == DIRECTOR
        assert js["cipher"][1] == "TLSv1.3"

    @inline
    async def test_falls_back_to_the_12_4_protocol(self) -> None:
        """A cleartext 18.2 Hello of a console whose TLS is enabled gets
        BNET_TERMINATE; python-bareos then retries with the 12.4 Hello, which
        our Director lets in, greets with the one-line `1000 OK: ...` and
        serves (PROTOCOL.md 15.13, 15.15); asked for protocol 12.4 from the
        start, python-bareos gets the same."""
        factory, port = await self.serve()
        result = await deferToThread(run_plain, port, ["version"], name="enabled-console",
                                     password=self.password("enabled-password"), tls_psk_enable=False)
        assert result["protocol"] == bsock.ProtocolVersions.bareos_12_4
        assert result["replies"] == [VERSION_TEXT.encode()]
        fixed = await deferToThread(run_plain, port, ["version"], name="plain-console",
                                    password=self.password("plain-console-password"), tls_psk_enable=False,
                                    protocolversion=bsock.ProtocolVersions.bareos_12_4)
        assert fixed["protocol"] == bsock.ProtocolVersions.bareos_12_4
        assert fixed["replies"] == [VERSION_TEXT.encode()]
        await self.all_closed(factory)
        assert [s.handshake.hello.console_version for s in self.seen] == [None, None]

    @inline
    async def test_wrong_password_is_refused(self) -> None:
        """python-bareos with a wrong password gets AuthenticationError (after
        its 12.4 retry is refused as well) and no session is opened."""
        factory, port = await self.serve()

        def attempt() -> Exception | None:
            try:
                run_plain(port, [], name="plain-console", password=self.password("wrong"), tls_psk_enable=False)
            except bareos.exceptions.Error as exc:
                return exc
            return None

        error = await deferToThread(attempt)
        assert isinstance(error, bareos.exceptions.AuthenticationError)
        await self.all_closed(factory)
        assert self.seen == []
