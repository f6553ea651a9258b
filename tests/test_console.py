"""The console command protocol: sans-IO rules, the recorded sessions, and
consoles against our Director over real TCP on 127.0.0.1."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import reactor
from twisted.internet.defer import CancelledError, Deferred, gatherResults
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.task import deferLater
from twisted.trial import unittest

import recordings
from bareosproto.console import (
    ApiMode,
    ApiSwitch,
    CommandResult,
    ConsoleClient,
    ConsoleCommand,
    ConsoleCommandLoop,
    ConsoleError,
    ConsoleReply,
    Notice,
    NoticeKind,
    ReplyCollector,
    UnknownCommand,
    encode_frames,
    parse_api_command,
    parse_args,
    render_json,
)
from bareosproto.errors import LocalProtocolError, RemoteProtocolError
from bareosproto.events import ConnectionClosed, Message, SignalFrame
from bareosproto.frames import MAX_MESSAGE_LENGTH, FrameDecoder
from bareosproto.keys import password_key
from bareosproto.signals import Signal
from bareosproto.tls_policy import TlsPolicy
from bareosproto.twisted.console import (
    ConsoleServerSession,
    ConsoleSession,
    DirectorConsoleServer,
    connect_console,
    console_server_factory,
)
from bareosproto.twisted.protocol import ChannelClosed

S = Signal
Frame = Message | SignalFrame


def sig(s: Signal) -> SignalFrame:
    return SignalFrame(s)


# -- the recorded sessions ----------------------------------------------------------

CONSOLE_RECORDINGS = ["console-named-clear", "v25-console-named-clear"]


def _session(scenario: str) -> recordings.Connection:
    rec = next(r for r in recordings.recordings() if r.scenario == scenario)
    return next(c for c in rec.connections if c.kind == "console-named")


def _exchanges(conn: recordings.Connection) -> list[tuple[recordings.Frame, list[recordings.Frame]]]:
    """(command frame, reply frames) after the login (the 1002 info message)."""
    frames = list(conn.frames)
    start = next(i for i, f in enumerate(frames) if f.payload.startswith(b"1002\x1e")) + 1
    out: list[tuple[recordings.Frame, list[recordings.Frame]]] = []
    for f in frames[start:]:
        if f.dir == recordings.I2A:
            out.append((f, []))
        else:
            out[-1][1].append(f)
    return out


def _event(f: recordings.Frame) -> Frame:
    return SignalFrame(f.header) if f.is_signal else Message(f.payload)


def _recorded_result(command: ConsoleCommand, reply: list[recordings.Frame]) -> CommandResult:
    """What a handler returns to reproduce a recorded reply: the same text
    frames, or in JSON mode the decoded result object."""
    payloads = [f.payload for f in reply if not f.is_signal]
    if command.mode is ApiMode.JSON:
        return CommandResult(json=json.loads(payloads[-1])["result"])
    if len(payloads) == 1:
        return CommandResult(text=payloads[0])
    return CommandResult(messages=payloads)


@pytest.mark.parametrize("scenario", CONSOLE_RECORDINGS)
def test_director_framing_reproduces_the_recorded_session_byte_for_byte(scenario: str) -> None:
    """Fed the recorded commands, and for each non-built-in command the
    recorded output, the Director loop writes exactly the recorded bytes:
    text + EOD in mode 0; `.api 2` = CMD_OK, JSON, MAIN_PROMPT; JSON commands =
    CMD_BEGIN, CMD_OK, JSON (re-rendered as jansson does), MAIN_PROMPT;
    `.api 0` = CMD_BEGIN, `api: 0\\n`, EOD; `quit` = nothing, then close."""
    loop = ConsoleCommandLoop()
    exchanges = _exchanges(_session(scenario))
    assert [c.payload for c, _ in exchanges] == [
        b"version", b"status dir", b".api 2", b"list clients", b".api 0", b"quit"
    ]
    for command_frame, reply in exchanges:
        assert not loop.closed
        command = loop.receive(Message(command_frame.payload))
        if command is not None:
            loop.complete(_recorded_result(command, reply))
        assert loop.data_to_send() == b"".join(f.wire for f in reply), command_frame.payload
    assert loop.closed


@pytest.mark.parametrize("scenario", CONSOLE_RECORDINGS)
@pytest.mark.parametrize("chunk", [None, 1])
def test_console_collects_the_recorded_replies(scenario: str, chunk: int | None) -> None:
    """Each recorded reply is complete exactly at its last frame, framed in
    the mode after the command; JSON replies decode to the recorded payload,
    `.api 2` answers {"api": 2}; the stream cut into single bytes gives the
    same replies; `quit` ends with the connection."""
    client = ConsoleClient()
    replies: list[ConsoleReply] = []
    for command_frame, reply in _exchanges(_session(scenario)):
        assert client.send_command(command_frame.payload.decode()) == command_frame.payload
        wire = b"".join(f.wire for f in reply)
        decoder = FrameDecoder()
        pieces = [wire] if chunk is None and wire else [wire[i : i + 1] for i in range(len(wire))]
        got = []
        for piece in pieces:
            for ev in decoder.receive_data(piece):
                assert isinstance(ev, (Message, SignalFrame))
                assert not got, "frames after the end of the reply"
                done = client.receive(ev)
                if done is not None:
                    got.append(done)
        if not reply:
            closed = client.connection_closed()
            assert closed is not None
            got.append(closed)
        assert len(got) == 1
        replies.append(got[0])
    version, status, api2, clients, api0, quit = replies
    assert version.end == S.BNET_EOD and version.mode is ApiMode.OFF
    assert version.lines[0].startswith("bareos-dir Version: ")
    assert api2.mode is ApiMode.JSON and api2.end == S.BNET_MAIN_PROMPT
    assert api2.signals == (S.BNET_CMD_OK, S.BNET_MAIN_PROMPT)
    assert api2.json == {"jsonrpc": "2.0", "id": None, "result": {"api": 2}} and api2.result == {"api": 2}
    assert clients.signals == (S.BNET_CMD_BEGIN, S.BNET_CMD_OK, S.BNET_MAIN_PROMPT)
    names = [c["name"] for c in clients.result["clients"]]
    assert "client-ci-clear" in names and clients.ok
    assert api0.mode is ApiMode.OFF and api0.end == S.BNET_EOD and api0.text == "api: 0\n"
    assert api0.json is None
    assert quit.end is None and quit.frames == ()
    assert client.mode is ApiMode.OFF


@pytest.mark.parametrize("scenario", CONSOLE_RECORDINGS)
def test_rows_are_split_after_joining_the_frames(scenario: str) -> None:
    """A `status dir` pool-table row ends without a newline and the next frame
    opens with it (PROTOCOL.md 15.28): the reply's lines are cut after joining,
    so the table has no blank rows, whereas cutting each frame would add some."""
    command_frame, reply = _exchanges(_session(scenario))[1]
    assert command_frame.payload == b"status dir"
    collector = ReplyCollector("status dir", ApiMode.OFF)
    result = None
    for f in reply:
        result = collector.receive(_event(f))
    assert result is not None
    lines = list(result.lines)
    head = lines.index("Client Initiated Connections (waiting for jobs):")
    rule = head + 2
    assert set(lines[rule]) == {"="}
    rows = lines[rule + 1 : lines.index("====", rule)]
    assert rows and all(r.split()[0].count("-") == 2 for r in rows), rows
    per_frame = [line for f in reply if not f.is_signal for line in f.payload.decode().splitlines()]
    assert per_frame != lines


# -- command lines and .api -----------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "switch"),
    [
        (".api", ApiSwitch(ApiMode.ON)),
        (".api 0", ApiSwitch(ApiMode.OFF)),
        (".api off", ApiSwitch(ApiMode.OFF)),
        (".api 1", ApiSwitch(ApiMode.ON)),
        (".API On", ApiSwitch(ApiMode.ON)),
        (".api 2", ApiSwitch(ApiMode.JSON)),
        (".api json", ApiSwitch(ApiMode.JSON)),
        (".api json compact=yes", ApiSwitch(ApiMode.JSON, True)),
        (".api 2 compact=YES", ApiSwitch(ApiMode.JSON, True)),
        (".api json compact=no", ApiSwitch(ApiMode.JSON, False)),
        (".api json compact=true", ApiSwitch(ApiMode.JSON, False)),  # parse_user_bool: only yes/no
        (".api json verbose", ApiSwitch(ApiMode.JSON, None)),
        (".api 1 compact=yes", ApiSwitch(ApiMode.ON, None)),
        (".api 3", ApiSwitch(None)),
        (".api json compact=yes x", ApiSwitch(None)),
        (".api json=1", ApiSwitch(None)),
        ("list clients", None),
        (".apix 2", None),
        ("", None),
    ],
)
def test_api_command_grammar(command: str, switch: ApiSwitch | None) -> None:
    """`.api [0|off|1|on|2|json] [compact=yes|no]` as DotApiCmd() reads it:
    no argument is mode 1; words in any case; compact only for JSON and only
    `yes` is true; more than three words or an unknown word fail."""
    assert parse_api_command(command) == switch


def test_command_lines_are_split_like_parse_args() -> None:
    """Arguments are split at whitespace, double quotes group and vanish, a
    backslash keeps the next character, `key=value` splits at the first `=`."""
    assert parse_args('list jobs client="my client" days=3 x= \\"q') == (
        ("list", None), ("jobs", None), ("client", "my client"), ("days", "3"), ("x", ""), ('"q', None)
    )
    assert parse_args("   \n") == ()
    assert len(parse_args(" ".join(["w"] * 40))) == 30


def test_json_is_written_as_jansson_writes_it() -> None:
    """Two-space indent or compact separators, keys in insertion order,
    UTF-8 left as is, control characters as upper-case \\u00XX escapes."""
    doc = {"b": 1, "a": ["\x1f\\u001f", "é", None, True], "e": {}, "l": []}
    assert render_json(doc) == (
        '{\n  "b": 1,\n  "a": [\n    "\\u001F\\\\u001f",\n    "é",\n    null,\n    true\n  ],\n'
        '  "e": {},\n  "l": []\n}'
    ).encode()
    assert render_json(doc, compact=True) == '{"b":1,"a":["\\u001F\\\\u001f","é",null,true],"e":{},"l":[]}'.encode()
    assert json.loads(render_json(doc)) == doc


# -- Director framing rules -------------------------------------------------------------


def _run(loop: ConsoleCommandLoop, command: str, result: CommandResult | None = None) -> list[Frame]:
    cmd = loop.receive(Message(command.encode()))
    if cmd is not None:
        loop.complete(result if result is not None else CommandResult())
    else:
        assert result is None, f"{command!r} is built in"
    return loop.frames_to_send()


def test_mode_1_prompts_and_never_sends_eod() -> None:
    """Mode 1 (PROTOCOL.md 1.4): `.api 1` from mode 0 is CMD_OK, `api: 1\\n`,
    MAIN_PROMPT; then each command is CMD_BEGIN, its messages, CMD_OK, its
    result text, MAIN_PROMPT, without BNET_EOD."""
    loop = ConsoleCommandLoop()
    assert _run(loop, ".api 1") == [sig(S.BNET_CMD_OK), Message(b"api: 1\n"), sig(S.BNET_MAIN_PROMPT)]
    frames = _run(loop, "status", CommandResult(messages=["m1\n", "m2\n"], text="result\n"))
    assert frames == [
        sig(S.BNET_CMD_BEGIN), Message(b"m1\n"), Message(b"m2\n"), sig(S.BNET_CMD_OK),
        Message(b"result\n"), sig(S.BNET_MAIN_PROMPT),
    ]
    assert _run(loop, ".api") == [sig(S.BNET_CMD_BEGIN), sig(S.BNET_CMD_OK), Message(b"api: 1\n"),
                                  sig(S.BNET_MAIN_PROMPT)]


def test_json_mode_from_json_mode_and_compact_style() -> None:
    """In JSON mode `.api json compact=yes` is CMD_BEGIN, CMD_OK, the compact
    document, MAIN_PROMPT, and every later document is compact."""
    loop = ConsoleCommandLoop(ApiMode.JSON)
    assert _run(loop, ".api json compact=yes") == [
        sig(S.BNET_CMD_BEGIN), sig(S.BNET_CMD_OK),
        Message(b'{"jsonrpc":"2.0","id":null,"result":{"api":2}}'), sig(S.BNET_MAIN_PROMPT),
    ]
    frames = _run(loop, "list clients", CommandResult(json={"clients": []}, messages=["hidden\n"]))
    assert frames[2] == Message(b'{"jsonrpc":"2.0","id":null,"result":{"clients":[]}}')
    assert len(frames) == 4


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        (ApiMode.OFF, [Message(b"bogus: is an invalid command.\n"), sig(S.BNET_EOD)]),
        (ApiMode.ON, [sig(S.BNET_ERROR_MSG), Message(b"bogus: is an invalid command.\n"),
                      sig(S.BNET_MAIN_PROMPT)]),
        (ApiMode.JSON, [sig(S.BNET_ERROR_MSG), Message(render_json({
            "jsonrpc": "2.0", "id": None, "error": {"code": 1, "message": "failed", "data": {
                "result": {}, "messages": {"error": ["bogus: is an invalid command.\n"]}}}})),
            sig(S.BNET_MAIN_PROMPT)]),
    ],
)
def test_unknown_command_in_each_mode(mode: ApiMode, expected: list[Frame]) -> None:
    """An unknown command gets `<word>: is an invalid command.` with no
    CMD_BEGIN/CMD_OK; in API modes BNET_ERROR_MSG comes first, in JSON mode
    the message goes into a JSON-RPC error (PROTOCOL.md 15.17)."""
    loop = ConsoleCommandLoop(mode)
    assert _run(loop, "bogus arg", CommandResult(found=False)) == expected


def test_failed_command_in_json_mode_is_a_jsonrpc_error() -> None:
    """A command that fails in JSON mode: CMD_BEGIN, ERROR_MSG, CMD_FAILED, the
    error document with the result and the messages, MAIN_PROMPT."""
    loop = ConsoleCommandLoop(ApiMode.JSON)
    frames = _run(loop, "delete volume=x", CommandResult(
        messages=[Notice(NoticeKind.WARNING, "careful\n"), Notice(NoticeKind.ERROR, "no such volume\n")],
        json={"partial": 1}, ok=False))
    assert [f.signal for f in frames if isinstance(f, SignalFrame)] == [
        S.BNET_CMD_BEGIN, S.BNET_WARNING_MSG, S.BNET_ERROR_MSG, S.BNET_CMD_FAILED, S.BNET_MAIN_PROMPT]
    (doc,) = [json.loads(f.payload) for f in frames if isinstance(f, Message)]
    assert doc == {"jsonrpc": "2.0", "id": None, "error": {"code": 1, "message": "failed", "data": {
        "result": {"partial": 1}, "messages": {"warning": ["careful\n"], "error": ["no such volume\n"]}}}}


def test_signal_instead_of_a_command_is_answered_with_poll() -> None:
    """A signal where a command is expected gets BNET_POLL (and, in an API
    mode, the next MAIN_PROMPT); BNET_TERMINATE ends the session silently."""
    loop = ConsoleCommandLoop()
    assert loop.receive(sig(S.BNET_HEARTBEAT)) is None
    assert loop.frames_to_send() == [sig(S.BNET_POLL)]
    _run(loop, ".api 2")
    loop.receive(sig(S.BNET_EOD))
    assert loop.frames_to_send() == [sig(S.BNET_POLL), sig(S.BNET_MAIN_PROMPT)]
    loop.receive(sig(S.BNET_TERMINATE))
    assert loop.closed and loop.frames_to_send() == []


def test_empty_command_gets_only_the_end_of_a_reply() -> None:
    """An empty (or blank) command finalizes nothing: BNET_EOD in mode 0,
    MAIN_PROMPT in API modes."""
    loop = ConsoleCommandLoop()
    assert _run(loop, "") == [sig(S.BNET_EOD)]
    _run(loop, ".api 2")
    assert _run(loop, "  ") == [sig(S.BNET_MAIN_PROMPT)]


@pytest.mark.parametrize("word", ["quit", "exit", ".quit", "QUIT"])
def test_quit_closes_without_a_signal(word: str) -> None:
    """`quit` (also `exit`, `.quit`) sends nothing in mode 0 and the Director
    closes (PROTOCOL.md 15.3); in JSON mode the command is still framed
    (CMD_BEGIN, CMD_OK, an empty result) but no MAIN_PROMPT follows."""
    loop = ConsoleCommandLoop()
    assert _run(loop, word) == [] and loop.closed
    loop = ConsoleCommandLoop(ApiMode.JSON, compact=True)
    assert _run(loop, word) == [sig(S.BNET_CMD_BEGIN), sig(S.BNET_CMD_OK),
                                Message(b'{"jsonrpc":"2.0","id":null,"result":{}}')]
    assert loop.closed
    with pytest.raises(LocalProtocolError):
        loop.receive(Message(b"version"))


def test_autodisplay_and_failed_api_switch() -> None:
    """`autodisplay off` (python-bareos' first command) is accepted with an
    empty reply; without on/off it is an error message; `.api 7` fails and
    leaves the mode alone (CMD_FAILED and a JSON-RPC error in JSON mode)."""
    loop = ConsoleCommandLoop()
    assert _run(loop, "autodisplay off") == [sig(S.BNET_EOD)] and not loop.auto_display
    assert _run(loop, "autodisplay") == [Message(b"ON or OFF keyword missing.\n"), sig(S.BNET_EOD)]
    assert _run(loop, ".api 7") == [sig(S.BNET_EOD)] and loop.mode is ApiMode.OFF
    _run(loop, ".api json compact=yes")
    frames = _run(loop, ".api 7")
    assert frames[:2] == [sig(S.BNET_CMD_BEGIN), sig(S.BNET_CMD_FAILED)] and loop.mode is ApiMode.JSON
    assert json.loads(frames[2].payload)["error"]["message"] == "failed"  # type: ignore[union-attr]


def test_one_command_at_a_time_on_the_director() -> None:
    """While a command's result is due the loop takes no other frame, and a
    result without a command is a caller error."""
    loop = ConsoleCommandLoop()
    with pytest.raises(LocalProtocolError):
        loop.complete(CommandResult())
    assert loop.receive(Message(b"status")) is not None
    with pytest.raises(LocalProtocolError):
        loop.receive(Message(b"version"))


# -- console reply rules -------------------------------------------------------------


def test_reply_ends_per_mode() -> None:
    """Mode 0 ends at EOD (also MAIN_PROMPT, SUB_PROMPT, TERMINATE); API modes
    end at MAIN_PROMPT, SUB_PROMPT or TERMINATE but not at EOD; heartbeats and
    MSGS_PENDING end nothing and heartbeats are not kept."""
    for end in (S.BNET_EOD, S.BNET_MAIN_PROMPT, S.BNET_SUB_PROMPT, S.BNET_TERMINATE):
        c = ReplyCollector("x", ApiMode.OFF)
        assert c.receive(sig(S.BNET_HEARTBEAT)) is None
        assert c.receive(Message(b"a")) is None
        reply = c.receive(sig(end))
        assert reply is not None and reply.end == end and reply.frames == (Message(b"a"), sig(end))
    c = ReplyCollector("x", ApiMode.ON)
    for f in (sig(S.BNET_CMD_BEGIN), Message(b"a"), sig(S.BNET_EOD), sig(S.BNET_MSGS_PENDING),
              sig(S.BNET_HB_RESPONSE), sig(S.BNET_CMD_OK)):
        assert c.receive(f) is None
    reply = c.receive(sig(S.BNET_MAIN_PROMPT))
    assert reply is not None and reply.text == "a" and S.BNET_HB_RESPONSE not in reply.signals
    with pytest.raises(LocalProtocolError):
        c.receive(Message(b"late"))


def test_error_flag_and_json_of_an_error_reply() -> None:
    """BNET_ERROR_MSG before a message sets `error`; the JSON-RPC error is
    decoded and `result` raises ConsoleError with the Director's message."""
    c = ReplyCollector("bogus", ApiMode.JSON)
    doc = {"jsonrpc": "2.0", "id": None, "error": {"code": 1, "message": "failed", "data": {
        "result": {}, "messages": {"error": ["bogus: is an invalid command.\n"]}}}}
    c.receive(sig(S.BNET_ERROR_MSG))
    c.receive(Message(render_json(doc)))
    reply = c.receive(sig(S.BNET_MAIN_PROMPT))
    assert reply is not None and reply.error and reply.failed and reply.json == doc
    with pytest.raises(ConsoleError, match="is an invalid command"):
        reply.result
    plain = ReplyCollector("x", ApiMode.OFF)
    plain.receive(sig(S.BNET_ERROR_MSG))
    assert plain.receive(sig(S.BNET_EOD)) is not None and plain.reply is not None
    assert not plain.reply.error  # no message followed the signal


def test_bad_json_is_reported_not_raised() -> None:
    """A JSON-mode reply that is no JSON keeps its text and says why in `json_error`."""
    c = ReplyCollector("x", ApiMode.JSON)
    c.receive(Message(b"{not json"))
    reply = c.receive(sig(S.BNET_MAIN_PROMPT))
    assert reply is not None and reply.json is None and reply.json_error and reply.text == "{not json"
    with pytest.raises(ConsoleError):
        reply.result


def test_console_client_tracks_the_mode_and_refuses_overlap() -> None:
    """The console sends one command at a time (a second before the reply is
    a caller error), commands go without a newline, `.api` switches change the
    mode the *next* replies are read in, a frame with no command outstanding
    is refused, and a heartbeat then is ignored."""
    client = ConsoleClient()
    assert client.send_command("version") == b"version"
    with pytest.raises(LocalProtocolError):
        client.send_command("status")
    assert client.receive(sig(S.BNET_EOD)) is not None
    assert client.receive(sig(S.BNET_HEARTBEAT)) is None
    client.send_command(".api json compact=yes")
    client.receive(sig(S.BNET_CMD_OK))
    client.receive(Message(b'{"jsonrpc":"2.0","id":null,"result":{"api":2}}'))
    assert client.receive(sig(S.BNET_MAIN_PROMPT)) is not None
    assert client.mode is ApiMode.JSON and client.compact
    with pytest.raises(RemoteProtocolError):
        client.receive(Message(b"unasked"))
    with pytest.raises(LocalProtocolError):
        ConsoleClient().send_command("x" * (MAX_MESSAGE_LENGTH + 1))


def test_connection_end_ends_a_reply_in_progress() -> None:
    """EOF while a reply is collected ends it with `end=None` (the answer to
    `quit`); after that no command can be sent."""
    client = ConsoleClient(ApiMode.JSON)
    client.send_command("quit")
    for f in (sig(S.BNET_CMD_BEGIN), sig(S.BNET_CMD_OK), Message(b'{"jsonrpc":"2.0","id":null,"result":{}}')):
        assert client.receive(f) is None
    reply = client.receive(ConnectionClosed())
    assert reply is not None and reply.end is None and reply.result == {}
    with pytest.raises(LocalProtocolError):
        client.send_command("version")


_texts = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=40)
_json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | _texts,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_texts, inner, max_size=3),
    max_leaves=8,
)
_results = st.builds(
    CommandResult,
    messages=st.lists(_texts.filter(bool), max_size=3),
    text=_texts,
    json=st.dictionaries(_texts, _json_values, max_size=3),
    ok=st.booleans(),
)
_switches = st.sampled_from([".api 0", ".api 1", ".api 2", ".api json compact=yes", ".api json compact=no",
                             ".api", ".api off"])


@settings(max_examples=150, deadline=None)
@given(st.lists(st.one_of(_switches, _results), max_size=8))
def test_director_and_console_agree_in_every_mode(steps: list[str | CommandResult]) -> None:
    """Whatever the sequence of `.api` switches and command results, the
    console collects exactly one reply per command from the Director's frames,
    both sides agree on the mode, the text is the frames joined, and in JSON
    mode the decoded document carries the result."""
    loop, client = ConsoleCommandLoop(), ConsoleClient()
    for step in steps:
        command = step if isinstance(step, str) else "do something"
        loop.receive(Message(client.send_command(command)))
        if isinstance(step, CommandResult):
            loop.complete(step)
        frames = loop.frames_to_send()
        replies = [r for r in (client.receive(f) for f in frames) if r is not None]
        assert len(replies) == 1 and replies[0].frames[-1] == frames[-1]
        reply = replies[0]
        assert client.mode is loop.mode is reply.mode
        assert reply.data == b"".join(f.payload for f in frames if isinstance(f, Message))
        if isinstance(step, CommandResult) and loop.mode is ApiMode.JSON:
            key = "result" if step.ok else "error"
            assert key in reply.json
            if step.ok:
                assert reply.result == step.json
        elif isinstance(step, CommandResult):
            assert reply.text.endswith(str(step.text))
    assert encode_frames([]) == b""


# -- over TCP -----------------------------------------------------------------------

T = TypeVar("T")
DIRECTOR = "test-dir"
FAST = 0.05  # failure delay for refused logins


def inline(f: Callable[..., Coroutine[Any, Any, T]]) -> Callable[..., Deferred[T]]:
    """Run an ``async def`` test method as a Deferred trial waits for."""

    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Deferred[T]:
        return Deferred.fromCoroutine(f(*args, **kwargs))

    return wrapper


def default_handler(command: str, session: ConsoleServerSession) -> object:
    if command == "version":
        return CommandResult(text=f"{DIRECTOR} Version: 26.0.0 (21 August 2026)\n",
                             json={"version": {"name": DIRECTOR, "version": "26.0.0"}})
    if command == "list clients":
        return {"clients": [{"clientid": "1", "name": "fd-one"}, {"clientid": "2", "name": "fd-two"}]}
    if command == "fail":
        raise ConsoleError("it failed")
    raise UnknownCommand


class TcpCase(unittest.TestCase):
    """Our Director on 127.0.0.1 (ephemeral port), consoles logging in."""

    timeout = 30

    def setUp(self) -> None:
        self.consoles: dict[str, Any] = {
            "plain-console": "plain-console-password",
            "admin": ("admin-password", TlsPolicy.REQUIRED),
            "enabled-console": ("enabled-password", TlsPolicy.ENABLED),
        }

    async def director(self, handler: Callable[[str, ConsoleServerSession], object] | None = default_handler,
                       **kwargs: Any) -> tuple[DirectorConsoleServer, str]:
        kwargs.setdefault("director_tls_policy", TlsPolicy.NONE)
        factory = console_server_factory(reactor, DIRECTOR, self.consoles, "dir-console-password", handler,
                                         failure_delay=FAST, **kwargs)
        port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(factory)

        async def stop() -> None:
            closing = [p.when_closed() for p in list(factory.protocols)]
            for p in list(factory.protocols):
                p.close()
            await gatherResults(closing)
            await port.stopListening()

        self.addCleanup(lambda: Deferred.fromCoroutine(stop()))
        return factory, f"tcp:host=127.0.0.1:port={port.getHost().port}"

    async def login(self, endpoint: str, name: str | None, password: Any, **kwargs: Any) -> ConsoleSession:
        session = await connect_console(reactor, endpoint, name, password, failure_delay=FAST, **kwargs)

        async def close() -> None:
            session.close()
            await session.when_closed()

        self.addCleanup(lambda: Deferred.fromCoroutine(close()))
        return session


class NamedAndDefaultConsoles(TcpCase):
    @inline
    async def test_named_console_cleartext(self) -> None:
        """A named console logs in in cleartext: greeting with our Director's
        name, info `You are logged in as: <name>`, a mode 0 reply ending in EOD."""
        factory, endpoint = await self.director()
        session = await self.login(endpoint, "plain-console", "plain-console-password")
        assert session.director == DIRECTOR and session.tls_version is None
        assert session.info is not None and session.info.endswith("You are logged in as: plain-console")
        reply = await session.call("version")
        assert reply.text == f"{DIRECTOR} Version: 26.0.0 (21 August 2026)\n"
        assert reply.signals == (S.BNET_EOD,) and session.api_mode is ApiMode.OFF
        (server_session,) = factory.sessions
        assert server_session.name == "plain-console" and server_session.commands == ["version"]

    @inline
    async def test_named_console_tls_psk(self) -> None:
        """A named console with TLS-PSK (identity R_CONSOLE\\x1e<name>, key its
        password) gets TLS 1.3, works like the cleartext one, and `quit` ends it."""
        _, endpoint = await self.director()
        session = await self.login(endpoint, "admin", password_key("admin-password"), tls=True)
        assert session.tls_version == "TLSv1.3"
        assert (await session.set_api(ApiMode.JSON)).result == {"api": 2}
        assert [c["name"] for c in (await session.call("list clients")).result["clients"]] == ["fd-one", "fd-two"]
        await session.quit()  # the Director closes the TLS connection too (15.23)

    @inline
    async def test_default_console_cleartext_and_tls(self) -> None:
        """The default console `*UserAgent*` (name None) is keyed with the
        Director password, in cleartext and with TLS-PSK, and is told `You are
        connected using the default console`."""
        factory, endpoint = await self.director()
        for tls in (False, True):
            session = await self.login(endpoint, None, "dir-console-password", tls=tls)
            assert session.name == "*UserAgent*"
            assert session.info is not None and session.info.endswith("You are connected using the default console")
            assert (await session.call("version")).end == S.BNET_EOD
            assert (session.tls_version is not None) is tls
        assert {s.is_default_console for s in factory.sessions} == {True}

    @inline
    async def test_wrong_password_is_refused(self) -> None:
        """A wrong console password is refused with RemoteProtocolError, and
        the attempt is over (connection closed) when the Deferred fails."""
        factory, endpoint = await self.director()
        with self.assertRaises(RemoteProtocolError):
            await connect_console(reactor, endpoint, "plain-console", "wrong", failure_delay=FAST)
        with self.assertRaises(RemoteProtocolError):
            await connect_console(reactor, endpoint, "nobody", "x", failure_delay=FAST)
        assert factory.sessions == set()

    @inline
    async def test_cleartext_console_whose_tls_is_on_is_turned_away(self) -> None:
        """A cleartext >= 18.2 Hello of a console whose TLS policy is not off
        gets BNET_TERMINATE at once (PROTOCOL.md 15.15); the 12.4 Hello of the
        same console is let in and the policies agree on cleartext."""
        _, endpoint = await self.director()
        with self.assertRaises(RemoteProtocolError):
            await connect_console(reactor, endpoint, "enabled-console", "enabled-password")
        session = await self.login(endpoint, "enabled-console", "enabled-password", old_console=True)
        assert session.info is None and session.greeting is not None
        assert (await session.call("version")).ok

    @inline
    async def test_director_name_is_checked_when_given(self) -> None:
        """`director_name` that differs from the greeting fails the login."""
        _, endpoint = await self.director()
        with self.assertRaises(RemoteProtocolError):
            await connect_console(reactor, endpoint, "plain-console", "plain-console-password",
                                  director_name="other-dir")
        session = await self.login(endpoint, "plain-console", "plain-console-password", director_name=DIRECTOR)
        assert session.director == DIRECTOR


class Replies(TcpCase):
    @inline
    async def test_replies_in_modes_0_1_2(self) -> None:
        """Over TCP: mode 0 text + EOD, mode 1 CMD_BEGIN/CMD_OK/MAIN_PROMPT,
        mode 2 JSON decoded (pretty, then compact), errors flagged, and `.api 0`
        brings back EOD."""
        _, endpoint = await self.director()
        s = await self.login(endpoint, "plain-console", "plain-console-password")
        r0 = await s.call("fail")
        assert r0.text == "it failed\n" and r0.signals == (S.BNET_EOD,)
        r1 = await s.set_api(ApiMode.ON)
        assert r1.text == "api: 1\n" and s.api_mode is ApiMode.ON
        r1 = await s.call("version")
        assert r1.signals == (S.BNET_CMD_BEGIN, S.BNET_CMD_OK, S.BNET_MAIN_PROMPT) and r1.ok
        r1 = await s.call("fail")
        assert r1.error and S.BNET_CMD_FAILED in r1.signals
        r2 = await s.call(".api json")
        assert r2.json == {"jsonrpc": "2.0", "id": None, "result": {"api": 2}} and b"\n  " in r2.data
        r2 = await s.call("version")
        assert r2.result == {"version": {"name": DIRECTOR, "version": "26.0.0"}}
        await s.set_api(ApiMode.JSON, compact=True)
        r2 = await s.call("list clients")
        assert r2.data.startswith(b'{"jsonrpc":"2.0","id":null,"result":{"clients":[{')
        r2 = await s.call("nonsense")
        assert r2.error and r2.json["error"]["data"]["messages"]["error"] == ["nonsense: is an invalid command.\n"]
        r0 = await s.call(".api 0")
        assert r0.text == "api: 0\n" and r0.end == S.BNET_EOD and s.api_mode is ApiMode.OFF

    @inline
    async def test_rows_spanning_frames_and_huge_replies(self) -> None:
        """Rows that end in the next frame come out whole, and a reply longer
        than one frame (split at 999,996 bytes) is joined again."""
        big = "".join(f"row {i:07d}\n" for i in range(150_000))  # 1.8 MB

        def handler(command: str, session: ConsoleServerSession) -> object:
            if command == "table":
                return ["head\nrow 1", "\nrow 2", "\n", "row 3\n"]
            return big

        _, endpoint = await self.director(handler)
        s = await self.login(endpoint, "plain-console", "plain-console-password")
        table = await s.call("table")
        assert table.lines == ("head", "row 1", "row 2", "row 3")
        reply = await s.call("big")
        assert len([f for f in reply.frames if isinstance(f, Message)]) == 2
        assert reply.text == big and len(reply.lines) == 150_000

    @inline
    async def test_concurrent_calls_are_serialized(self) -> None:
        """Calls made at once go out one at a time: the second command is not
        even sent before the first reply is complete, and each caller gets its
        own reply."""
        release: Deferred[str] = Deferred()
        started: Deferred[None] = Deferred()

        def handler(command: str, session: ConsoleServerSession) -> object:
            if command == "slow":
                session.channel.on_unread = lambda frame: early.append(frame) or False  # type: ignore[func-returns-value]
                started.callback(None)
                return release
            return f"answer to {command}\n"

        early: list[Frame] = []
        _, endpoint = await self.director(handler)
        s = await self.login(endpoint, "plain-console", "plain-console-password")
        first, second, third = s.call("slow"), s.call("two"), s.call("three")
        fired: list[str] = []
        for d in (first, second, third):
            d.addCallback(lambda r: fired.append(r.command) or r)
        await started
        await deferLater(reactor, 0.1, lambda: None)
        assert early == [] and fired == []
        release.callback("slow done\n")
        replies = [await first, await second, await third]
        assert [r.text for r in replies] == ["slow done\n", "answer to two\n", "answer to three\n"]
        assert fired == ["slow", "two", "three"]

    @inline
    async def test_async_handler_and_async_caller(self) -> None:
        """An `async def` handler is awaited; `call` is awaitable from a coroutine."""

        async def handler(command: str, session: ConsoleServerSession) -> object:
            await deferLater(reactor, 0.01, lambda: None)
            return {"echo": command, "mode": int(session.api_mode)}

        _, endpoint = await self.director(handler)
        s = await self.login(endpoint, None, "dir-console-password")
        await s.set_api(2)
        assert (await s.call("hello there")).result == {"echo": "hello there", "mode": 2}

    @inline
    async def test_quit_closes_the_connection(self) -> None:
        """`quit` is sent as a command and the Director closes; quit() fires
        after the close and later calls fail."""
        factory, endpoint = await self.director()
        s = await self.login(endpoint, "plain-console", "plain-console-password")
        await s.call(".api json compact=yes")
        await s.quit()
        assert s.channel.protocol.when_closed().called
        with self.assertRaises(LocalProtocolError):
            await s.call("version")
        while factory.sessions:
            await deferLater(reactor, 0.01, lambda: None)

    @inline
    async def test_connection_lost_mid_reply_fails_the_call(self) -> None:
        """If the Director goes away during a command the call fails with ChannelClosed."""

        def handler(command: str, session: ConsoleServerSession) -> object:
            session.channel.protocol.abort()
            return Deferred()

        _, endpoint = await self.director(handler)
        s = await self.login(endpoint, "plain-console", "plain-console-password")
        with self.assertRaises(ChannelClosed):
            await s.call("anything")

    @inline
    async def test_cancelled_call_drops_the_connection(self) -> None:
        """Cancelling a call whose reply is still coming drops the connection
        (later replies could no longer be matched to their commands)."""

        def handler(command: str, session: ConsoleServerSession) -> object:
            return Deferred()  # never answers

        _, endpoint = await self.director(handler)
        s = await self.login(endpoint, "plain-console", "plain-console-password")
        call = s.call("hang")
        await deferLater(reactor, 0.05, lambda: None)
        call.cancel()
        with self.assertRaises(CancelledError):
            await call
        await s.when_closed()
