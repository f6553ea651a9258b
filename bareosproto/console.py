"""The console command protocol after login, sans-IO: both ends.

Once a console is logged in (``HandshakeComplete``), every exchange is one
command frame from the console (the bare text, no newline) and a reply from
the Director whose framing depends on the *API mode* (PROTOCOL.md 1.4, 15
items 3, 4, 17, 18, and the recordings ``console-named-clear`` and
``v25-console-named-clear``)::

    mode 0 (off)    output frames ..., BNET_EOD
    mode 1 (on)     BNET_CMD_BEGIN, messages ..., BNET_CMD_OK, result text, BNET_MAIN_PROMPT
    mode 2 (json)   BNET_CMD_BEGIN, BNET_CMD_OK, the JSON document, BNET_MAIN_PROMPT

``BNET_CMD_BEGIN`` is sent when the mode *before* the command is an API mode,
``BNET_CMD_OK``/``BNET_CMD_FAILED``, the result format and ``BNET_EOD`` /
``BNET_MAIN_PROMPT`` follow the mode *after* it; so the ``.api`` switches
themselves look mixed (recorded: ``.api 2`` from mode 0 is ``CMD_OK``,
JSON, ``MAIN_PROMPT``; ``.api 0`` from mode 2 is ``CMD_BEGIN``,
``api: 0\\n``, ``EOD``).  Upstream: ``dird/ua_server.cc``
``HandleUserAgentClientRequest()``, ``dird/ua_cmds.cc`` ``Do_a_command()``,
``dird/ua_dotcmds.cc`` ``DotApiCmd()``, ``lib/output_formatter.cc``.

Console side: :class:`ConsoleClient` (mode tracking and one
:class:`ReplyCollector` per command) turns reply frames into a
:class:`ConsoleReply`.

Director side: :class:`ConsoleCommandLoop` reads command frames, runs the
built-in commands (``.api``, ``quit``/``exit``/``.quit``, ``autodisplay``)
itself, hands every other command out as a :class:`ConsoleCommand`, and
frames a :class:`CommandResult` exactly as the Director does.

Neither side does I/O: frames go in as :class:`~bareosproto.events.Message`
/ :class:`~bareosproto.events.SignalFrame` events, and the server's frames
come out the same way (``frames_to_send()``; :func:`encode_frames` gives the
wire bytes).
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import attrs

from .errors import LocalProtocolError, RemoteProtocolError
from .events import ConnectionClosed, Event, Message, SignalFrame
from .frames import MAX_MESSAGE_LENGTH, encode_message, encode_signal
from .signals import Signal

__all__ = [
    "ApiMode",
    "ApiSwitch",
    "parse_api_command",
    "parse_args",
    "render_json",
    "END_SIGNALS_TEXT",
    "END_SIGNALS_API",
    "ConsoleReply",
    "ReplyCollector",
    "ConsoleClient",
    "ClientState",
    "CLIENT_TRANSITIONS",
    "NoticeKind",
    "Notice",
    "CommandResult",
    "ConsoleCommand",
    "ConsoleCommandLoop",
    "LoopState",
    "LOOP_TRANSITIONS",
    "ConsoleError",
    "UnknownCommand",
    "encode_frames",
    "invalid_command_text",
    "QUIT_COMMANDS",
]

#: Bareos reads at most this many arguments of a command line (``MAX_CMD_ARGS``).
MAX_CMD_ARGS = 30
#: The commands that end a session (``quit_cmd``); the Director closes without a signal.
QUIT_COMMANDS = frozenset({"quit", "exit", ".quit"})

_HEARTBEATS = frozenset({Signal.BNET_HEARTBEAT, Signal.BNET_HB_RESPONSE})


class ApiMode(enum.IntEnum):
    """``ua->api``: how the Director frames replies."""

    OFF = 0  #: plain text, ``BNET_EOD`` after each reply (bconsole)
    ON = 1  #: text with ``BNET_CMD_*`` signals and ``BNET_MAIN_PROMPT``
    JSON = 2  #: a JSON-RPC document per reply


# -- command lines -------------------------------------------------------------


def _next_arg(line: str, pos: int) -> tuple[str, int]:
    """``next_arg()`` (``lib/scan.cc``): skip spaces; a backslash keeps the
    next character; double quotes toggle quoting and are dropped."""
    n = len(line)
    while pos < n and line[pos].isspace():
        pos += 1
    out: list[str] = []
    in_quote = False
    while pos < n:
        c = line[pos]
        if c == "\\":
            pos += 1
            if pos < n:
                out.append(line[pos])
                pos += 1
            continue
        if c == '"':
            pos += 1
            in_quote = not in_quote
            continue
        if not in_quote and c.isspace():
            pos += 1
            break
        out.append(c)
        pos += 1
    return "".join(out), pos


def parse_args(command: str) -> tuple[tuple[str, str | None], ...]:
    """``ParseArgs()``: the ``(keyword, value)`` pairs of a command line.

    ``list jobs client="a b" days=3`` gives ``(("list", None), ("jobs", None),
    ("client", "a b"), ("days", "3"))``; at most 30 arguments.
    """
    line = command.rstrip()  # StripTrailingJunk
    args: list[tuple[str, str | None]] = []
    pos = 0
    while len(args) < MAX_CMD_ARGS:
        arg, pos = _next_arg(line, pos)
        if not arg:
            break
        key, eq, value = arg.partition("=")
        args.append((key, value if eq else None))
    return tuple(args)


@attrs.frozen
class ApiSwitch:
    """What a ``.api`` command asks for.

    ``mode`` is ``None`` when the Director refuses the arguments (the command
    fails and the mode stays); ``compact`` is ``None`` when the command leaves
    the JSON style as it is.
    """

    mode: ApiMode | None
    compact: bool | None = None


_API_WORDS = {"0": ApiMode.OFF, "off": ApiMode.OFF, "1": ApiMode.ON, "on": ApiMode.ON,
              "2": ApiMode.JSON, "json": ApiMode.JSON}


def _api_switch(args: Sequence[tuple[str, str | None]]) -> ApiSwitch:
    """``DotApiCmd()`` on parsed arguments (``args[0]`` is ``.api``)."""
    if len(args) == 1:
        return ApiSwitch(ApiMode.ON)
    if len(args) > 3:
        return ApiSwitch(None)
    word = args[1][0]
    mode = _API_WORDS.get(word.lower()) if args[1][1] is None else None
    if mode is None:
        return ApiSwitch(None)
    compact: bool | None = None
    if mode is ApiMode.JSON and len(args) == 3:
        key, value = args[2]
        if key.lower() == "compact" and value is not None:
            # parse_user_bool(): only "yes" is true; anything else sets false
            compact = value.lower() == "yes"
    return ApiSwitch(mode, compact)


def parse_api_command(command: str) -> ApiSwitch | None:
    """The :class:`ApiSwitch` of a ``.api`` command, ``None`` for any other command.

    ``.api`` alone is mode 1; ``.api 0|off|1|on|2|json`` (any case) sets the
    mode; ``.api json compact=yes`` (or ``2 compact=...``) also sets the JSON
    style (``yes`` is compact, any other value is not).
    """
    args = parse_args(command)
    if not args or args[0][0].lower() != ".api":
        return None
    return _api_switch(args)


# -- JSON as jansson writes it --------------------------------------------------

_ESCAPES = re.compile(r"(\\\\)|\\u([0-9a-f]{4})")


def _upper_escape(m: re.Match[str]) -> str:
    if m.group(1):
        return m.group(1)
    return "\\u" + m.group(2).upper()


def render_json(document: Any, *, compact: bool = False) -> bytes:
    """``json_dumps()`` with the Director's flags: ``JSON_INDENT(2)`` or
    ``JSON_COMPACT``, UTF-8 (no ASCII escaping), control characters as
    upper-case ``\\u00XX``, keys in insertion order."""
    if compact:
        text = json.dumps(document, ensure_ascii=False, separators=(",", ":"))
    else:
        text = json.dumps(document, ensure_ascii=False, indent=2)
    if "\\u" in text:
        text = _ESCAPES.sub(_upper_escape, text)
    return text.encode("utf-8", "surrogateescape")


def _to_bytes(text: str | bytes) -> bytes:
    return text if isinstance(text, bytes) else text.encode("utf-8", "surrogateescape")


# -- console side ---------------------------------------------------------------

#: What ends a reply in mode 0 (python-bareos' ``is_end_of_message()``).
END_SIGNALS_TEXT = frozenset({Signal.BNET_EOD, Signal.BNET_MAIN_PROMPT, Signal.BNET_SUB_PROMPT,
                              Signal.BNET_TERMINATE})
#: What ends a reply in an API mode (no ``BNET_EOD`` there).
END_SIGNALS_API = frozenset({Signal.BNET_MAIN_PROMPT, Signal.BNET_SUB_PROMPT, Signal.BNET_TERMINATE})


def _split_lines(text: str) -> tuple[str, ...]:
    if not text:
        return ()
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    return tuple(lines)


@attrs.frozen
class ConsoleReply:
    """The Director's whole answer to one command.

    ``data`` is the payloads of all message frames joined, ``text`` the same
    decoded (UTF-8, undecodable bytes replaced); split it into rows with
    :attr:`lines`, never per frame (a row can end in the next frame,
    PROTOCOL.md 15.28).  ``frames`` are the frames as received (heartbeats
    left out), ``signals`` the signals among them, ``end`` the signal that
    ended the reply (``None``: the connection closed, as after ``quit``).
    ``mode`` is the API mode the reply was framed in (the mode *after* the
    command).  In mode 2, ``json`` is the decoded document (``json_error``
    says why it is ``None`` if the payload was no JSON).  ``error`` is true
    when ``BNET_ERROR_MSG`` preceded a message.
    """

    command: str
    mode: ApiMode
    frames: tuple[Message | SignalFrame, ...]
    data: bytes
    end: Signal | int | None
    json: Any = None
    json_error: str | None = None
    error: bool = False

    @property
    def text(self) -> str:
        return self.data.decode("utf-8", "replace")

    @property
    def lines(self) -> tuple[str, ...]:
        """The rows of :attr:`text` (split at ``\\n`` after joining the frames)."""
        return _split_lines(self.text)

    @property
    def signals(self) -> tuple[Signal | int, ...]:
        return tuple(f.signal for f in self.frames if isinstance(f, SignalFrame))

    @property
    def failed(self) -> bool:
        """``BNET_CMD_FAILED``, ``BNET_ERROR_MSG`` or a JSON-RPC ``error``."""
        if self.error or Signal.BNET_CMD_FAILED in self.signals:
            return True
        return isinstance(self.json, dict) and "error" in self.json

    @property
    def ok(self) -> bool:
        return not self.failed

    @property
    def result(self) -> Any:
        """The JSON-RPC ``result`` object; raises :class:`ConsoleError` for an
        ``error`` document or a reply that is no JSON."""
        doc = self.json
        if isinstance(doc, dict) and "result" in doc:
            return doc["result"]
        if isinstance(doc, dict) and "error" in doc:
            raise ConsoleError(_json_error_text(doc), reply=self)
        raise ConsoleError(f"no JSON result for {self.command!r}: {self.json_error or 'not in JSON mode'}",
                           reply=self)


def _json_error_text(doc: Mapping[str, Any]) -> str:
    error = doc.get("error")
    if not isinstance(error, dict):
        return "error"
    data = error.get("data")
    if isinstance(data, dict):
        messages = data.get("messages")
        if isinstance(messages, dict) and messages.get("error"):
            return "".join(str(m) for m in messages["error"]).strip() or str(error.get("message"))
    return str(error.get("message", "error"))


class ReplyCollector:
    """Collects the reply to one command.

    ``mode`` is the API mode in force when the command is sent; a ``.api``
    command changes the mode its own reply is framed in.  Feed every frame to
    :meth:`receive`; it returns the :class:`ConsoleReply` with the frame that
    ends it (``BNET_EOD``, ``BNET_MAIN_PROMPT``, ``BNET_SUB_PROMPT`` or
    ``BNET_TERMINATE`` in mode 0; the same without ``BNET_EOD`` in API modes)
    and ``None`` before.  Heartbeats are skipped.  :meth:`close` ends the
    reply at the end of the connection (the answer to ``quit``).
    """

    def __init__(self, command: str, mode: ApiMode) -> None:
        self.command = command
        self.mode_before = ApiMode(mode)
        self.switch = parse_api_command(command)
        after = self.switch.mode if self.switch is not None else None
        self.mode = after if after is not None else self.mode_before
        self.end_signals = END_SIGNALS_TEXT if self.mode is ApiMode.OFF else END_SIGNALS_API
        self._frames: list[Message | SignalFrame] = []
        self._error_next = False
        self._error = False
        self.reply: ConsoleReply | None = None

    @property
    def done(self) -> bool:
        return self.reply is not None

    def receive(self, frame: Message | SignalFrame) -> ConsoleReply | None:
        if self.reply is not None:
            raise LocalProtocolError("the reply is complete; start a new collector")
        if isinstance(frame, SignalFrame):
            sig = frame.signal
            if sig in _HEARTBEATS:
                return None
            self._frames.append(frame)
            if sig == Signal.BNET_ERROR_MSG:
                self._error_next = True
            if sig in self.end_signals:
                return self._finish(sig)
            return None
        if not isinstance(frame, Message):
            raise LocalProtocolError(f"not a frame: {frame!r}")
        self._frames.append(frame)
        if self._error_next:
            self._error = True
            self._error_next = False
        return None

    def close(self) -> ConsoleReply:
        """The connection ended: the reply is what came so far (``end=None``)."""
        if self.reply is not None:
            return self.reply
        return self._finish(None)

    def _finish(self, end: Signal | int | None) -> ConsoleReply:
        data = b"".join(f.payload for f in self._frames if isinstance(f, Message))
        doc: Any = None
        why: str | None = None
        if self.mode is ApiMode.JSON and data and end is not Signal.BNET_SUB_PROMPT:
            try:
                doc = json.loads(data.decode("utf-8"))
            except ValueError as exc:
                why = f"not JSON: {exc}"
        self.reply = ConsoleReply(self.command, self.mode, tuple(self._frames), data, end, doc, why,
                                  self._error)
        return self.reply


class ClientState(enum.Enum):
    __hash__ = object.__hash__  # members are singletons: identity hash, no Python-level call

    IDLE = "idle"  #: no command outstanding
    AWAIT_REPLY = "await-reply"
    CLOSED = "closed"


class ClientInput(enum.Enum):
    __hash__ = object.__hash__  # members are singletons: identity hash, no Python-level call

    COMMAND = "command"
    FRAME = "frame"
    REPLY_END = "end of reply"
    HEARTBEAT = "heartbeat"
    EOF = "end of stream"


_CS, _CI = ClientState, ClientInput

#: ``{(state, input): next state}`` of :class:`ConsoleClient`.
CLIENT_TRANSITIONS: dict[tuple[ClientState, ClientInput], ClientState] = {
    (_CS.IDLE, _CI.COMMAND): _CS.AWAIT_REPLY,
    (_CS.IDLE, _CI.HEARTBEAT): _CS.IDLE,
    (_CS.IDLE, _CI.EOF): _CS.CLOSED,
    (_CS.AWAIT_REPLY, _CI.FRAME): _CS.AWAIT_REPLY,
    (_CS.AWAIT_REPLY, _CI.HEARTBEAT): _CS.AWAIT_REPLY,
    (_CS.AWAIT_REPLY, _CI.REPLY_END): _CS.IDLE,
    (_CS.AWAIT_REPLY, _CI.EOF): _CS.CLOSED,
    (_CS.CLOSED, _CI.EOF): _CS.CLOSED,
}


class ConsoleClient:
    """The console's side of the command loop: one command at a time.

    ``send_command(text)`` returns the payload of the command frame (the text
    as UTF-8, no newline added); feed the Director's frames to
    :meth:`receive` until it returns the :class:`ConsoleReply`.  The API mode
    (:attr:`mode`) and the JSON style (:attr:`compact`) follow the ``.api``
    commands that succeed; a reply ending in ``BNET_EOD`` means mode 0.
    """

    def __init__(self, mode: ApiMode = ApiMode.OFF) -> None:
        self.state = ClientState.IDLE
        self.mode = ApiMode(mode)
        self.compact = False
        self._collector: ReplyCollector | None = None

    def _transition(self, what: ClientInput, detail: object = None) -> None:
        try:
            self.state = CLIENT_TRANSITIONS[(self.state, what)]
        except KeyError:
            old = self.state
            if what is ClientInput.COMMAND:
                raise LocalProtocolError(f"a command while {old.value}") from None
            self.state = ClientState.CLOSED
            raise RemoteProtocolError(f"unexpected {what.value} {detail!r} while {old.value}") from None

    @property
    def collector(self) -> ReplyCollector | None:
        return self._collector

    def send_command(self, command: str) -> bytes:
        payload = command.encode("utf-8", "surrogateescape")
        if len(payload) > MAX_MESSAGE_LENGTH:
            raise LocalProtocolError("a command longer than one frame would reach the Director in pieces")
        self._transition(ClientInput.COMMAND)
        self._collector = ReplyCollector(command, self.mode)
        return payload

    def receive(self, event: Event) -> ConsoleReply | None:
        """One frame (or ``ConnectionClosed``) from the Director."""
        if isinstance(event, ConnectionClosed):
            return self.connection_closed()
        if isinstance(event, SignalFrame) and event.signal in _HEARTBEATS:
            self._transition(ClientInput.HEARTBEAT)
            return None
        if not isinstance(event, (Message, SignalFrame)):
            raise LocalProtocolError(f"not a frame: {event!r}")
        if self.state is not ClientState.AWAIT_REPLY:
            self._transition(ClientInput.FRAME, event)
        assert self._collector is not None
        reply = self._collector.receive(event)
        if reply is None:
            self._transition(ClientInput.FRAME)
            return None
        self._transition(ClientInput.REPLY_END)
        self._settle(self._collector, reply)
        self._collector = None
        return reply

    def connection_closed(self) -> ConsoleReply | None:
        """EOF: the reply in progress (if any) ends with ``end=None``."""
        collector, self._collector = self._collector, None
        self._transition(ClientInput.EOF)
        if collector is None:
            return None
        reply = collector.close()
        return reply

    def _settle(self, collector: ReplyCollector, reply: ConsoleReply) -> None:
        self.mode = collector.mode
        switch = collector.switch
        if switch is not None and switch.compact is not None and switch.mode is ApiMode.JSON:
            self.compact = switch.compact
        if reply.end == Signal.BNET_EOD:
            self.mode = ApiMode.OFF


# -- Director side ----------------------------------------------------------------


class ConsoleError(Exception):
    """A command failed: raised by a command handler (the text becomes the
    Director's error message) or by :attr:`ConsoleReply.result`."""

    def __init__(self, message: str, *, reply: ConsoleReply | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.reply = reply


class UnknownCommand(Exception):
    """Raised by a command handler for a command it does not know:
    the Director answers ``<word>: is an invalid command.``"""


class NoticeKind(enum.Enum):
    """``ErrorMsg``/``WarningMsg``/``InfoMsg``: signal in API modes, key in JSON."""

    ERROR = "error"
    WARNING = "warning"
    INFO = "info"

    @property
    def signal(self) -> Signal:
        return _NOTICE_SIGNALS[self]


_NOTICE_SIGNALS = {NoticeKind.ERROR: Signal.BNET_ERROR_MSG, NoticeKind.WARNING: Signal.BNET_WARNING_MSG,
                   NoticeKind.INFO: Signal.BNET_INFO_MSG}


@attrs.frozen
class Notice:
    """An error, warning or info message of a command (``ua->ErrorMsg()`` ...)."""

    kind: NoticeKind
    text: str


def _as_messages(value: Iterable[str | bytes | Notice]) -> tuple[str | bytes | Notice, ...]:
    if isinstance(value, (str, bytes)):
        return (value,)
    return tuple(value)


def _as_json(value: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    return None if value is None else dict(value)


@attrs.frozen
class CommandResult:
    """What a command produced, independent of the API mode.

    * ``messages``: sent as they come, one frame each (``ua->SendMsg()``),
      before ``BNET_CMD_OK``; a :class:`Notice` is preceded by its signal in
      API modes.  In JSON mode plain messages are not shown and notices go
      into the error document's ``messages``.
    * ``text``: the formatted result, one frame after ``BNET_CMD_OK`` in text
      modes (the output formatter's buffer).
    * ``json``: the ``result`` object in JSON mode (``{}`` if ``None``).
    * ``ok``: false gives ``BNET_CMD_FAILED`` and a JSON-RPC error.
    * ``found``: false for an unknown command (no ``CMD_BEGIN``/``CMD_OK``).
    """

    messages: tuple[str | bytes | Notice, ...] = attrs.field(default=(), converter=_as_messages)
    text: str | bytes = ""
    json: Mapping[str, Any] | None = attrs.field(default=None, converter=_as_json)
    ok: bool = True
    found: bool = True

    @classmethod
    def error(cls, message: str, *, found: bool = True) -> CommandResult:
        return cls(messages=(Notice(NoticeKind.ERROR, message),), ok=False, found=found)

    @classmethod
    def of(cls, value: object) -> CommandResult:
        """A handler's return value as a result: a ``str``/``bytes`` is the
        result text, a list of them the messages (one frame each), a mapping
        the JSON result (shown as ``key: value`` lines in text modes)."""
        if value is None:
            return cls()
        if isinstance(value, CommandResult):
            return value
        if isinstance(value, (str, bytes)):
            return cls(text=value)
        if isinstance(value, Mapping):
            return cls(text=_mapping_text(value), json=value)
        if isinstance(value, (list, tuple)):
            for item in value:
                if not isinstance(item, (str, bytes, Notice)):
                    raise LocalProtocolError(f"not a console output frame: {item!r}")
            return cls(messages=tuple(value))
        raise LocalProtocolError(f"a command handler returned {type(value).__name__}")


def _mapping_text(value: Mapping[str, Any]) -> str:
    out = []
    for key, item in value.items():
        shown = item if isinstance(item, (str, int, float)) and not isinstance(item, bool) else json.dumps(item)
        out.append(f"{key}: {shown}\n")
    return "".join(out)


def invalid_command_text(keyword: str) -> str:
    """``%s: is an invalid command.\\n`` (``Do_a_command()``)."""
    return f"{keyword}: is an invalid command.\n"


@attrs.frozen
class ConsoleCommand:
    """A command the Director received; ``mode`` is the API mode it arrived in."""

    text: str
    args: tuple[tuple[str, str | None], ...]
    mode: ApiMode

    @property
    def keyword(self) -> str:
        """The first word, as typed (``argk[0]``)."""
        return self.args[0][0] if self.args else ""


class LoopState(enum.Enum):
    __hash__ = object.__hash__  # members are singletons: identity hash, no Python-level call

    READY = "ready"  #: waiting for a command frame
    RUNNING = "running"  #: a command was handed out; its result is due
    CLOSED = "closed"  #: quit, terminate or EOF: the Director closes


class LoopInput(enum.Enum):
    __hash__ = object.__hash__  # members are singletons: identity hash, no Python-level call

    COMMAND = "command"  #: a command for the caller
    BUILTIN = "built-in command"
    EMPTY = "empty command"
    SIGNAL = "signal"
    TERMINATE = "BNET_TERMINATE"
    RESULT = "result"
    QUIT = "quit"
    EOF = "end of stream"


_LS, _LI = LoopState, LoopInput

#: ``{(state, input): next state}`` of :class:`ConsoleCommandLoop`.
LOOP_TRANSITIONS: dict[tuple[LoopState, LoopInput], LoopState] = {
    (_LS.READY, _LI.COMMAND): _LS.RUNNING,
    (_LS.READY, _LI.BUILTIN): _LS.READY,
    (_LS.READY, _LI.EMPTY): _LS.READY,
    (_LS.READY, _LI.SIGNAL): _LS.READY,
    (_LS.READY, _LI.TERMINATE): _LS.CLOSED,
    (_LS.READY, _LI.QUIT): _LS.CLOSED,
    (_LS.READY, _LI.EOF): _LS.CLOSED,
    (_LS.RUNNING, _LI.RESULT): _LS.READY,
    (_LS.RUNNING, _LI.EOF): _LS.CLOSED,
    (_LS.CLOSED, _LI.EOF): _LS.CLOSED,
}


class ConsoleCommandLoop:
    """The Director's console loop after login (``HandleUserAgentClientRequest()``).

    :meth:`receive` takes each frame from the console.  A signal is answered
    with ``BNET_POLL`` (``BNET_TERMINATE`` ends the session); an empty
    command gets just the end of a reply; ``.api``, ``quit``/``exit``/
    ``.quit`` and ``autodisplay`` are answered here; any other command is
    returned as a :class:`ConsoleCommand`, and its :class:`CommandResult`
    must come back through :meth:`complete` before the next frame.
    :meth:`frames_to_send` hands out the frames to write; when
    :attr:`closed` is true the Director closes the connection (after
    ``quit`` no signal is sent, PROTOCOL.md 15.3).
    """

    def __init__(self, mode: ApiMode = ApiMode.OFF, *, compact: bool = False) -> None:
        self.state = LoopState.READY
        self.mode = ApiMode(mode)
        self.compact = compact
        self.auto_display = True
        self._out: list[Message | SignalFrame] = []
        self._running: ConsoleCommand | None = None

    # -- table ---------------------------------------------------------------

    def _transition(self, what: LoopInput) -> None:
        try:
            self.state = LOOP_TRANSITIONS[(self.state, what)]
        except KeyError:
            old = self.state
            if what is LoopInput.RESULT:
                raise LocalProtocolError(f"a result while {old.value}") from None
            raise LocalProtocolError(
                f"{what.value} while {old.value}: one command at a time, none after the close"
            ) from None

    # -- public --------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self.state is LoopState.CLOSED

    @property
    def running(self) -> ConsoleCommand | None:
        return self._running

    def frames_to_send(self) -> list[Message | SignalFrame]:
        out, self._out = self._out, []
        return out

    def data_to_send(self) -> bytes:
        """The frames to send as wire bytes (for callers that write bytes)."""
        return encode_frames(self.frames_to_send())

    def receive(self, event: Event) -> ConsoleCommand | None:
        if isinstance(event, ConnectionClosed):
            self._transition(LoopInput.EOF)
            self._running = None
            return None
        if isinstance(event, SignalFrame):
            if event.signal == Signal.BNET_TERMINATE:
                self._transition(LoopInput.TERMINATE)
                return None
            self._transition(LoopInput.SIGNAL)
            self._signal(Signal.BNET_POLL)
            self._prompt()
            return None
        if not isinstance(event, Message):
            raise LocalProtocolError(f"not a frame: {event!r}")
        text = event.payload.decode("utf-8", "surrogateescape")
        args = parse_args(text)
        if not args:  # Do_a_command() returns at once: no result is finalized
            self._transition(LoopInput.EMPTY)
            self._end_of_reply()
            return None
        command = ConsoleCommand(text, args, self.mode)
        keyword = command.keyword.lower()
        if keyword in QUIT_COMMANDS:
            self._transition(LoopInput.QUIT)
            self._frame(command, CommandResult(), self.mode)
            return None
        if keyword == ".api":
            self._transition(LoopInput.BUILTIN)
            self._api(command)
            return None
        if keyword == "autodisplay":
            self._transition(LoopInput.BUILTIN)
            self._autodisplay(command)
            return None
        self._transition(LoopInput.COMMAND)
        self._running = command
        return command

    def complete(self, result: CommandResult) -> None:
        """The result of the command :meth:`receive` handed out."""
        command = self._running
        self._transition(LoopInput.RESULT)
        assert command is not None
        self._running = None
        if not result.found:
            result = CommandResult(
                messages=(Notice(NoticeKind.ERROR, invalid_command_text(command.keyword)),),
                ok=False,
                found=False,
            )
        self._frame(command, result, self.mode)
        self._end_of_reply()

    # -- built-in commands -----------------------------------------------------

    def _api(self, command: ConsoleCommand) -> None:
        before = self.mode
        switch = _api_switch(command.args)
        if switch.mode is None:
            self._frame(command, CommandResult(ok=False), before)
            self._end_of_reply()
            return
        self.mode = switch.mode
        if switch.compact is not None:
            self.compact = switch.compact
        result = CommandResult(text=f"api: {int(switch.mode)}\n", json={"api": int(switch.mode)})
        self._frame(command, result, before)
        self._end_of_reply()

    def _autodisplay(self, command: ConsoleCommand) -> None:
        words = [key.lower() for key, _ in command.args[1:]]
        if "on" in words or "off" in words:
            first = next(w for w in words if w in ("on", "off"))
            self.auto_display = first == "on"
            result = CommandResult()
        else:
            result = CommandResult(messages=(Notice(NoticeKind.ERROR, "ON or OFF keyword missing.\n"),))
        self._frame(command, result, self.mode)
        self._end_of_reply()

    # -- framing -----------------------------------------------------------------

    def _signal(self, signal: Signal) -> None:
        self._out.append(SignalFrame(signal))

    def _message(self, payload: bytes) -> None:
        self._out.append(Message(payload))

    def _prompt(self) -> None:
        """``BNET_MAIN_PROMPT`` before the next command is read, in API modes."""
        if self.mode is not ApiMode.OFF:
            self._signal(Signal.BNET_MAIN_PROMPT)

    def _end_of_reply(self) -> None:
        if self.mode is ApiMode.OFF:
            self._signal(Signal.BNET_EOD)
        else:
            self._signal(Signal.BNET_MAIN_PROMPT)

    def _frame(self, command: ConsoleCommand, result: CommandResult, before: ApiMode) -> None:
        """``Do_a_command()``: ``before`` is ``ua->api`` when the command
        started, :attr:`mode` what it is when the command has run."""
        after = self.mode
        if result.found and before is not ApiMode.OFF:
            self._signal(Signal.BNET_CMD_BEGIN)
        notices: dict[str, list[str]] = {}
        for item in result.messages:
            if isinstance(item, Notice):
                if after is not ApiMode.OFF:
                    self._signal(item.kind.signal)
                if after is ApiMode.JSON:
                    notices.setdefault(item.kind.value, []).append(item.text)
                else:
                    self._message(_to_bytes(item.text))
            elif after is not ApiMode.JSON:
                self._message(_to_bytes(item))
        if result.found and after is not ApiMode.OFF:
            self._signal(Signal.BNET_CMD_OK if result.ok else Signal.BNET_CMD_FAILED)
        if after is ApiMode.JSON:
            self._message(render_json(self._document(result, notices), compact=self.compact))
        elif result.text:
            self._message(_to_bytes(result.text))

    @staticmethod
    def _document(result: CommandResult, notices: Mapping[str, list[str]]) -> dict[str, Any]:
        """``JsonFinalizeResult()``."""
        payload = dict(result.json) if result.json is not None else {}
        doc: dict[str, Any] = {"jsonrpc": "2.0", "id": None}
        if not result.ok or "error" in notices:
            doc["error"] = {
                "code": 1,
                "message": "failed",
                "data": {"result": payload, "messages": dict(notices)},
            }
        else:
            doc["result"] = payload
        return doc


def encode_frames(frames: Iterable[Message | SignalFrame]) -> bytes:
    """The wire bytes of frame events, in order."""
    out = bytearray()
    for frame in frames:
        if isinstance(frame, SignalFrame):
            out += encode_signal(int(frame.signal))
        else:
            out += encode_message(frame.payload)
    return bytes(out)
