"""The lines that end a handshake: greetings, OK lines and refusals.

=========================  =================================================
who sends it               line
=========================  =================================================
Director to console 18.2+  ``1000\\x1eOK: <dir> Version: <full> (<date>)``,
                           then ``1002\\x1e<info text>`` (0x1E messages,
                           no newline)
Director to console 12.4   ``1000 OK: <dir> Version: <full> (<date>) -- <cipher>\\n``
Director to a client-      ``1000 OK: <dir> Version: <full> (<date>)\\n``
initiated FD
FD to a Director           ``2000 OK Hello 54\\n`` (or ``2000 OK Hello\\n``)
SD to a Director           ``3000 OK Hello\\n``
refusals                   ``1999 You are not authorized.\\n`` (Director),
                           ``2999 Authentication failed.\\n`` (FD),
                           ``3999 No go\\n`` (SD)
=========================  =================================================
"""

from __future__ import annotations

import enum
import re

import attrs

from .errors import LocalProtocolError, RemoteProtocolError
from .memo import remembered
from .versions import FD_PROTOCOL_VERSION, BareosVersion

__all__ = [
    "RECORD_SEPARATOR",
    "ResponseMessage",
    "ResponseId",
    "DirectorGreeting",
    "GreetingForm",
    "FdHelloOk",
    "SdHelloOk",
    "Greeting",
    "parse_greeting",
    "parse_response_message",
    "console_info",
    "DIRECTOR_NOT_AUTHORIZED",
    "FD_AUTH_FAILED",
    "SD_NO_GO",
    "NO_ENCRYPTION",
    "SELF_COMPILED_SERVICES",
]

RECORD_SEPARATOR = b"\x1e"
DIRECTOR_NOT_AUTHORIZED = b"1999 You are not authorized.\n"
FD_AUTH_FAILED = b"2999 Authentication failed.\n"
SD_NO_GO = b"3999 No go\n"
#: The cipher text of a cleartext connection (note the leading space).
NO_ENCRYPTION = " Encryption: None"
#: The services text of self-compiled binaries (``core/src/lib/version.cc``).
SELF_COMPILED_SERVICES = (
    "Self-compiled binaries (UNSUPPORTED)\nGet professional support from https://www.bareos.com"
)


class ResponseId(enum.IntEnum):
    """Ids of 0x1E response messages (``core/src/lib/bnet.h``)."""

    OK = 1000
    PAM_REQUIRED = 1001
    INFO_MESSAGE = 1002
    PAM_INTERACTIVE = 4001
    PAM_USER_CREDENTIALS = 4002


@attrs.frozen
class ResponseMessage:
    """``<id>\\x1e<arg>\\x1e<arg>...``, no newline (console protocol >= 18.2)."""

    id: int
    args: tuple[bytes, ...] = ()

    def to_bytes(self) -> bytes:
        if self.id < 0:
            raise LocalProtocolError("a response id is not negative")
        return RECORD_SEPARATOR.join((b"%d" % self.id, *self.args)) if self.args else (
            b"%d" % self.id + RECORD_SEPARATOR
        )


def parse_response_message(payload: bytes) -> ResponseMessage:
    """Split at 0x1E; the first field must be a decimal id."""
    fields = payload.split(RECORD_SEPARATOR)
    if len(fields) < 2 or not fields[0].isdigit() or len(fields[0]) > 9:
        raise RemoteProtocolError(f"not a response message: {payload[:100]!r}")
    args = tuple(fields[1:])
    if args == (b"",):
        args = ()
    return ResponseMessage(int(fields[0]), args)


def console_info(text: str) -> ResponseMessage:
    """The ``1002`` info message that follows a console login."""
    return ResponseMessage(ResponseId.INFO_MESSAGE, (text.encode("utf-8"),))


class GreetingForm(enum.Enum):
    RESPONSE_MESSAGE = "response-message"  #: ``1000\x1eOK: ...`` (consoles >= 18.2)
    CONSOLE_LINE = "console-line"  #: ``1000 OK: ... -- <cipher>\n`` (consoles 12.4)
    CLIENT_LINE = "client-line"  #: ``1000 OK: ...\n`` (client-initiated FDs)


@attrs.frozen
class DirectorGreeting:
    """The Director's ``1000 OK: <name> Version: <full> (<date>)`` in its three forms.

    ``encryption`` is the cipher text of the 12.4 console form, which starts
    with a space (``" Encryption: None"``).
    """

    director: str
    version: str
    date: str
    form: GreetingForm = GreetingForm.RESPONSE_MESSAGE
    encryption: str | None = None

    @classmethod
    def of(
        cls,
        director: str,
        release: BareosVersion,
        form: GreetingForm = GreetingForm.RESPONSE_MESSAGE,
        encryption: str | None = None,
    ) -> DirectorGreeting:
        if form is GreetingForm.CONSOLE_LINE and encryption is None:
            encryption = NO_ENCRYPTION
        return cls(director, release.full, release.date, form, encryption)

    def to_bytes(self) -> bytes:
        text = f"OK: {self.director} Version: {self.version} ({self.date})".encode("utf-8")
        if self.form is GreetingForm.RESPONSE_MESSAGE:
            # snprintf() into 100 bytes: at most 99 bytes of text
            return b"1000" + RECORD_SEPARATOR + text[:99]
        if self.form is GreetingForm.CLIENT_LINE:
            return b"1000 " + text + b"\n"
        return b"1000 " + text + b" -- " + (self.encryption or "").encode("utf-8") + b"\n"


@attrs.frozen
class FdHelloOk:
    """``2000 OK Hello 54\\n``; ``protocol_version=None`` is ``2000 OK Hello\\n``."""

    protocol_version: int | None = FD_PROTOCOL_VERSION

    def to_bytes(self) -> bytes:
        if self.protocol_version is None:
            return b"2000 OK Hello\n"
        return b"2000 OK Hello %d\n" % self.protocol_version


@attrs.frozen
class SdHelloOk:
    """``3000 OK Hello\\n``, the only reply a Director accepts from an SD."""

    def to_bytes(self) -> bytes:
        return b"3000 OK Hello\n"


Greeting = DirectorGreeting | FdHelloOk | SdHelloOk | ResponseMessage

_OK_TEXT = re.compile(rb"OK: (.+?) Version: (\S+) \((.*?)\)")


def _director_greeting(text: bytes, form: GreetingForm, encryption: str | None) -> DirectorGreeting:
    m = _OK_TEXT.fullmatch(text)
    if m is None:
        raise RemoteProtocolError(f"not a Director greeting: {text[:100]!r}")
    name, version, date = (g.decode("utf-8", "surrogateescape") for g in m.groups())
    return DirectorGreeting(name, version, date, form, encryption)


@remembered()
def parse_greeting(payload: bytes) -> Greeting:
    """Parse the line that ends a handshake (see the module table).

    A ``1002`` (or other) 0x1E message comes back as :class:`ResponseMessage`;
    anything else that is no greeting is a :class:`RemoteProtocolError`.
    """
    if payload == b"3000 OK Hello\n":
        return SdHelloOk()
    if payload == b"2000 OK Hello\n":
        return FdHelloOk(None)
    m = re.fullmatch(rb"2000 OK Hello (\d{1,9})\n", payload)
    if m is not None:
        return FdHelloOk(int(m.group(1)))
    if payload.startswith(b"1000" + RECORD_SEPARATOR):
        return _director_greeting(payload[5:], GreetingForm.RESPONSE_MESSAGE, None)
    if payload.startswith(b"1000 OK: ") and payload.endswith(b"\n"):
        body = payload[5:-1]
        head, sep, cipher = body.partition(b") -- ")
        if sep:
            return _director_greeting(
                head + b")", GreetingForm.CONSOLE_LINE, cipher.decode("utf-8", "surrogateescape")
            )
        return _director_greeting(body, GreetingForm.CLIENT_LINE, None)
    if RECORD_SEPARATOR in payload:
        return parse_response_message(payload)
    raise RemoteProtocolError(f"not a greeting: {payload[:100]!r}")
