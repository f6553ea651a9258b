"""The core against every recorded connection in tests/data (real Bareos daemons).

Expected values come from the recordings (frames, raw streams, keys, names)
or are literals taken from PROTOCOL.md; the code under test only produces
the "actual" side.  Where a recording and PROTOCOL.md disagree, the
recording wins (PROTOCOL.md section 15).
"""

from __future__ import annotations

import random
import re
from typing import Iterable, Iterator

import pytest

from bareosproto.cram import (
    AUTH_OK,
    challenge_name,
    compute_response,
    is_reflected,
    parse_challenge,
    response_payload,
    verify_response,
)
from bareosproto.errors import RemoteProtocolError
from bareosproto.events import ConnectionClosed, Event, Message, SignalFrame
from bareosproto.frames import FrameDecoder, encode_message, encode_signal
from bareosproto.hello import HELLO_LENGTH_LIMITS, HelloKind, detect_peer, parse_hello
from bareosproto.keys import Secret
from bareosproto.names import ResourceType, parse_psk_identity, psk_identity
from bareosproto.replies import (
    DirectorGreeting,
    FdHelloOk,
    GreetingForm,
    ResponseMessage,
    SdHelloOk,
    parse_greeting,
    parse_response_message,
)
from bareosproto.signals import Signal, as_signal, signal_name

from recordings import (
    A2I,
    I2A,
    Connection,
    Frame,
    Recording,
    cleartext_connections,
    tls_connections,
)

# -- literals (PROTOCOL.md) ----------------------------------------------------

AUTH_OK_LINE = b"1000 OK auth\n"
TERMINATE_BYTES = b"\xff\xff\xff\xfc"
MASTER_VERSION = "26.0.0~pre1298.eda204c31"
V25_VERSION = "25.1.0"
#: build dates in the Directors' OK lines (PROTOCOL.md 7.1 step 6, 15 item 30)
BUILD_DATES = {MASTER_VERSION: "21 August 2026", V25_VERSION: "03 August 2026"}
#: console protocol ``major*100+minor`` read from ``calling version <v>``
CONSOLE_PROTOCOLS = {MASTER_VERSION: 2600, V25_VERSION: 2501}

HELLO_KINDS = {
    "console-named": HelloKind.CONSOLE,
    "console-default": HelloKind.CONSOLE,
    "dir-fd": HelloKind.DIRECTOR,
    "dir-sd": HelloKind.DIRECTOR,
    "monitor-fd": HelloKind.DIRECTOR,
    "monitor-sd": HelloKind.DIRECTOR,
    "fd-dir-client-initiated": HelloKind.CLIENT,
    "fd-sd": HelloKind.START_JOB,
    "sd-fd-passive": HelloKind.STORAGE_START_JOB,
    "sd-sd": HelloKind.START_STORAGE_JOB,
}
PEER_TYPES = {
    HelloKind.CONSOLE: ResourceType.R_CONSOLE,
    HelloKind.DIRECTOR: ResourceType.R_DIRECTOR,
    HelloKind.CLIENT: ResourceType.R_CLIENT,
    HelloKind.START_JOB: ResourceType.R_JOB,
    HelloKind.STORAGE_START_JOB: ResourceType.R_JOB,
    HelloKind.START_STORAGE_JOB: ResourceType.R_JOB,
}
#: which acceptor's length window applies to each Hello (PROTOCOL.md 11 item 22)
HELLO_WINDOWS = {
    "console-named": (15, 153),
    "fd-dir-client-initiated": (15, 153),
    "dir-fd": (25, 500),
    "monitor-fd": (25, 500),
    "sd-fd-passive": (25, 256),
    "dir-sd": (25, 158),
    "fd-sd": (25, 158),
}
HELLO_WINDOW_KEYS = {
    "console-named": "director",
    "fd-dir-client-initiated": "director",
    "dir-fd": "fd-from-director",
    "monitor-fd": "fd-from-director",
    "sd-fd-passive": "fd-from-sd",
    "dir-sd": "sd",
    "fd-sd": "sd",
}
ROLE_TYPES = {
    "director": "R_DIRECTOR",
    "fd": "R_CLIENT",
    "sd": "R_STORAGE",
    "console": "R_CONSOLE",
}
DATA_CHANNELS = {"fd-sd", "sd-fd-passive", "sd-sd"}
CONTROL_CHANNELS = {"console-named", "dir-fd", "dir-sd", "monitor-fd", "fd-dir-client-initiated"}

# -- parameter sets ------------------------------------------------------------

CLEAR = cleartext_connections()
CLEAR_WITH_RAW = [c for c in CLEAR if c.raw is not None]
CLEAR_WITHOUT_RAW = [c for c in CLEAR if c.raw is None]
TLS = tls_connections()


def _conn_params(conns: Iterable[Connection]) -> list[object]:
    return [pytest.param(c, id=c.label) for c in conns]


def _direction_params(conns: Iterable[Connection]) -> list[object]:
    return [pytest.param(c, d, id=f"{c.label}/{d}") for c in conns for d in (I2A, A2I)]


def _is_challenge(f: Frame) -> bool:
    return f.payload.startswith(b"auth cram-md5")


def _challenge_params() -> list[object]:
    out: list[object] = []
    for c in CLEAR:
        for f in c.frames:
            if _is_challenge(f):
                who = "initiator" if f.dir == I2A else "acceptor"
                out.append(pytest.param(c, f, id=f"{c.label}/{who}-challenge"))
    return out


def _signal_params() -> list[object]:
    seen: dict[tuple[int, str | None], str] = {}
    for c in CLEAR:
        for f in c.frames:
            if f.is_signal:
                seen.setdefault((f.header, f.signal), c.label)
    return [
        pytest.param(h, name, where, id=f"{name}({h})")
        for (h, name), where in sorted(seen.items(), reverse=True)
    ]


CHALLENGES = _challenge_params()
SIGNALS = _signal_params()


def _other(direction: str) -> str:
    return A2I if direction == I2A else I2A


def _expected_events(conn: Connection, direction: str) -> list[Event]:
    out: list[Event] = []
    for f in conn.frames_in(direction):
        out.append(Message(f.payload) if f.header >= 0 else SignalFrame(f.header))
    return out


def _decode(chunks: Iterable[bytes]) -> tuple[list[Event], int, list[Event]]:
    decoder = FrameDecoder()
    events: list[Event] = []
    for chunk in chunks:
        events.extend(decoder.receive_data(chunk))
    buffered = decoder.buffered
    tail = decoder.receive_data(b"")
    return events, buffered, tail


def _random_chunks(data: bytes, seed: int) -> Iterator[bytes]:
    rng = random.Random(seed)
    pos = 0
    while pos < len(data):
        small, large = rng.randint(1, 16), rng.randint(1, 4096)
        size = small if rng.random() < 0.5 else large
        yield data[pos : pos + size]
        pos += size


def _verdict_indexes(conn: Connection) -> list[int]:
    return [f.index for f in conn.frames if f.payload == AUTH_OK_LINE]


def _hello_name(conn: Connection) -> str:
    if conn.kind in DATA_CHANNELS:
        assert conn.job
        return conn.job
    return str(conn.initiator["name"])


def _challenger_name(conn: Connection, direction: str) -> bytes:
    """The name a sender puts in its challenge token (PROTOCOL.md 5.2, 15 item 11)."""
    side = conn.side(direction)
    role, name = side["role"], side["name"]
    if role == "monitor" and conn.emulated:
        return str(name).encode()  # python-bareos: the bare name
    if conn.kind == "sd-fd-passive" and role == "sd":
        return b"File\x01daemon"
    return f"{ROLE_TYPES[role]}::{name}".encode()


def _own_qualified_name(conn: Connection, direction: str) -> bytes:
    """What a daemon compares a challenge with in its replay check."""
    side = conn.side(direction)
    role, name = side["role"], side["name"]
    if role == "monitor":
        return str(name).encode()
    return f"{ROLE_TYPES[role]}::{name}".encode()


# -- sanity of the recordings themselves -----------------------------------------


def test_recordings_present(all_recordings: tuple[Recording, ...]) -> None:
    """tests/data holds all 12 scenarios: cleartext ones with raw streams, one without, and TLS ones."""
    assert len(all_recordings) == 12
    assert len(CLEAR_WITH_RAW) >= 25
    assert [c.label for c in CLEAR_WITHOUT_RAW] == ["heartbeat-clear#3-fd-sd"]
    assert len(TLS) == 5
    assert {c.bareos_version for c in CLEAR} == {MASTER_VERSION, V25_VERSION}


@pytest.mark.parametrize("conn", _conn_params(CLEAR))
def test_recorded_headers_match_payloads(conn: Connection) -> None:
    """A header > 0 counts its payload bytes, 0 is empty, < 0 is a named signal without payload."""
    for f in conn.frames:
        if f.header < 0:
            assert f.payload == b"" and f.signal is not None
        elif f.truncated:
            assert f.header >= 1000 and len(f.payload) == 64
        else:
            assert len(f.payload) == f.header and f.signal is None


# -- 1. decoding the raw streams ----------------------------------------------------


@pytest.mark.parametrize(("conn", "direction"), _direction_params(CLEAR_WITH_RAW))
def test_decode_whole_stream(conn: Connection, direction: str) -> None:
    """A direction's whole stream in one call decodes to exactly its recorded frames, then EOF."""
    assert conn.raw is not None
    events, buffered, tail = _decode([conn.raw[direction]])
    assert events == _expected_events(conn, direction)
    assert buffered == conn.trailing_bytes[direction] == 0
    assert tail == [ConnectionClosed()]


@pytest.mark.parametrize(("conn", "direction"), _direction_params(CLEAR_WITH_RAW))
def test_decode_byte_at_a_time(conn: Connection, direction: str) -> None:
    """Fed one byte at a time, a stream decodes to the same frames as fed whole."""
    assert conn.raw is not None
    data = conn.raw[direction]
    events, buffered, tail = _decode(data[i : i + 1] for i in range(len(data)))
    assert events == _expected_events(conn, direction)
    assert buffered == 0
    assert tail == [ConnectionClosed()]


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize(("conn", "direction"), _direction_params(CLEAR_WITH_RAW))
def test_decode_random_chunks(conn: Connection, direction: str, seed: int) -> None:
    """Any chunking (1..4096 bytes, seeded) of a stream decodes to its recorded frames."""
    assert conn.raw is not None
    events, buffered, tail = _decode(_random_chunks(conn.raw[direction], seed))
    assert events == _expected_events(conn, direction)
    assert buffered == 0
    assert tail == [ConnectionClosed()]


@pytest.mark.parametrize(("conn", "direction"), _direction_params(CLEAR_WITH_RAW))
def test_decoded_signals_carry_recorded_names(conn: Connection, direction: str) -> None:
    """Every decoded signal frame is a Signal member named as in the recording."""
    assert conn.raw is not None
    events, _, _ = _decode([conn.raw[direction]])
    recorded = [f for f in conn.frames_in(direction)]
    assert len(events) == len(recorded)
    for event, f in zip(events, recorded):
        if f.is_signal:
            assert isinstance(event, SignalFrame)
            assert isinstance(event.signal, Signal)
            assert event.name == f.signal
        else:
            assert isinstance(event, Message)


@pytest.mark.parametrize("conn", _conn_params(CLEAR_WITHOUT_RAW))
def test_decode_recording_with_truncated_payloads(conn: Connection) -> None:
    """Without raw streams: the frames before a cut payload decode, the cut frame waits, EOF inside it is an error."""
    first_cut = next(f for f in conn.frames if f.truncated)
    before = [f for f in conn.frames[: first_cut.index] if f.dir == first_cut.dir]
    stream = b"".join(f.wire for f in before)
    decoder = FrameDecoder()
    events = decoder.receive_data(stream + (first_cut.header).to_bytes(4, "big") + first_cut.payload)
    assert events == [Message(f.payload) if f.header >= 0 else SignalFrame(f.header) for f in before]
    assert decoder.buffered == 4 + len(first_cut.payload)
    with pytest.raises(RemoteProtocolError):
        decoder.receive_data(b"")


# -- 2. encoding ------------------------------------------------------------------------


@pytest.mark.parametrize(("conn", "direction"), _direction_params(CLEAR_WITH_RAW))
def test_reencode_reproduces_raw_stream(conn: Connection, direction: str) -> None:
    """encode_message/encode_signal of a direction's frames give its raw stream byte for byte."""
    assert conn.raw is not None
    parts = [
        encode_message(f.payload) if f.header >= 0 else encode_signal(f.header)
        for f in conn.frames_in(direction)
    ]
    assert b"".join(parts) == conn.raw[direction]


@pytest.mark.parametrize("conn", _conn_params(CLEAR))
def test_encode_each_frame(conn: Connection) -> None:
    """Each recorded frame (not cut in the recording) encodes to its signed big-endian header plus payload."""
    checked = 0
    for f in conn.frames:
        if f.truncated:
            continue
        if f.is_signal:
            assert f.signal is not None
            assert encode_signal(Signal[f.signal]) == f.wire
            assert encode_signal(f.header) == f.wire
        else:
            assert encode_message(f.payload) == f.wire
        checked += 1
    assert checked > 0


# -- 3. CRAM-MD5 ---------------------------------------------------------------------------


@pytest.mark.parametrize("conn", _conn_params(CLEAR))
def test_handshake_order(conn: Connection) -> None:
    """Hello, acceptor's challenge, response, verdict, initiator's challenge, response, verdict (5.1)."""
    head = conn.frames[:7]
    assert [f.dir for f in head] == [I2A, A2I, I2A, A2I, I2A, A2I, I2A]
    assert head[0].payload.startswith(b"Hello ")
    assert _is_challenge(head[1]) and _is_challenge(head[4])
    assert head[3].payload == AUTH_OK_LINE and head[6].payload == AUTH_OK_LINE
    assert [f.index for f in conn.frames if _is_challenge(f)] == [1, 4]
    assert _verdict_indexes(conn) == [3, 6]


@pytest.mark.parametrize(("conn", "challenge_frame"), CHALLENGES)
def test_cram_response_reproduced(conn: Connection, challenge_frame: Frame) -> None:
    """The recorded response is HMAC-MD5(responder's key, token) in Bareos base64, with NUL from daemons, without from python-bareos."""
    challenge = parse_challenge(challenge_frame.payload)
    responder = _other(challenge_frame.dir)
    response = conn.next_frame(challenge_frame.index, responder)
    assert response is not None and response.index == challenge_frame.index + 1
    key_text = conn.cram_key(responder)
    assert key_text is not None
    key = Secret(key_text)
    python_bareos = conn.emulated and conn.side(responder)["role"] == "monitor"
    if python_bareos:
        assert len(response.payload) == 22
        assert compute_response(key, challenge.token) == response.payload
    else:
        assert len(response.payload) == 23 and response.payload[-1:] == b"\x00"
        assert response_payload(key, challenge) == response.payload
        assert compute_response(key, challenge.token) + b"\x00" == response.payload


@pytest.mark.parametrize(("conn", "challenge_frame"), CHALLENGES)
def test_cram_recorded_response_verifies(conn: Connection, challenge_frame: Frame) -> None:
    """verify_response accepts each recorded response, in strict and lenient mode, and only for its own token."""
    challenge = parse_challenge(challenge_frame.payload)
    responder = _other(challenge_frame.dir)
    response = conn.next_frame(challenge_frame.index, responder)
    assert response is not None
    key = Secret(conn.cram_key(responder) or "")
    assert verify_response(key, challenge.token, response.payload, accept_standard=False)
    assert verify_response(key, challenge.token, response.payload, accept_standard=True)
    other = next(f for f in conn.frames if _is_challenge(f) and f is not challenge_frame)
    other_token = parse_challenge(other.payload).token
    assert not verify_response(key, other_token, response.payload, accept_standard=True)


@pytest.mark.parametrize(("conn", "challenge_frame"), CHALLENGES)
def test_cram_verdict_is_ok(conn: Connection, challenge_frame: Frame) -> None:
    """The challenger answers the response with exactly `1000 OK auth\\n` (AUTH_OK)."""
    response = conn.next_frame(challenge_frame.index, _other(challenge_frame.dir))
    assert response is not None
    verdict = conn.next_frame(response.index, challenge_frame.dir)
    assert verdict is not None and verdict.index == response.index + 1
    assert verdict.payload == AUTH_OK_LINE
    assert AUTH_OK == verdict.payload


@pytest.mark.parametrize(("conn", "challenge_frame"), CHALLENGES)
def test_challenge_round_trip(conn: Connection, challenge_frame: Frame) -> None:
    """parse_challenge reads token and ssl= as on the wire, and to_line() gives the line back."""
    line = challenge_frame.payload
    m = re.fullmatch(rb"auth cram-md5 (<\d+\.\d+@\S+>) ssl=(\d+)\n", line)
    assert m is not None
    challenge = parse_challenge(line)
    assert challenge.token == m.group(1)
    assert challenge.tls_policy == int(m.group(2))
    assert not challenge.standard_base64
    assert challenge.to_line() == line


@pytest.mark.parametrize(("conn", "challenge_frame"), CHALLENGES)
def test_challenge_name_is_senders_qualified_name(conn: Connection, challenge_frame: Frame) -> None:
    """The token names its sender: R_<TYPE>::<name>, File\\x01daemon for an SD to a passive FD, bare for python-bareos."""
    token = parse_challenge(challenge_frame.payload).token
    assert challenge_name(token) == _challenger_name(conn, challenge_frame.dir)


@pytest.mark.parametrize(("conn", "challenge_frame"), CHALLENGES)
def test_replay_check_on_recorded_challenges(conn: Connection, challenge_frame: Frame) -> None:
    """A recorded challenge is not a replay for its responder, but is one if sent back to its sender (except R_STORAGE)."""
    token = parse_challenge(challenge_frame.payload).token
    responder = _other(challenge_frame.dir)
    assert not is_reflected(token, _own_qualified_name(conn, responder))
    sender_name = _challenger_name(conn, challenge_frame.dir)
    assert is_reflected(token, sender_name) is (b"R_STORAGE" not in token)


# -- 4. Hello -------------------------------------------------------------------------------


@pytest.mark.parametrize("conn", _conn_params(CLEAR))
def test_hello_parses(conn: Connection) -> None:
    """The first i2a frame is a Hello of the connection's kind naming the initiator (or the job)."""
    first = conn.frames[0]
    assert first.dir == I2A
    hello = parse_hello(first.payload)
    assert hello.kind is HELLO_KINDS[conn.kind]
    assert hello.name == _hello_name(conn)
    assert hello.peer_type is PEER_TYPES[hello.kind]


@pytest.mark.parametrize("conn", _conn_params(CLEAR))
def test_hello_round_trip(conn: Connection) -> None:
    """Hello.to_bytes() reproduces the recorded Hello payload exactly."""
    payload = conn.frames[0].payload
    assert parse_hello(payload).to_bytes() == payload


@pytest.mark.parametrize("conn", _conn_params(CLEAR))
def test_hello_version(conn: Connection) -> None:
    """Master Hellos carry Version="26.0.0"; 25.1.0 and python-bareos Hellos carry none."""
    hello = parse_hello(conn.frames[0].payload)
    if conn.is_v25 or conn.emulated:
        assert hello.version is None
    else:
        assert hello.version == (26, 0, 0)
    if hello.kind is HelloKind.CONSOLE:
        assert hello.console_version == conn.bareos_version
        assert hello.console_protocol == CONSOLE_PROTOCOLS[conn.bareos_version]
        assert hello.new_console_protocol
    if hello.kind is HelloKind.CLIENT:
        assert hello.fd_protocol_version == 54


@pytest.mark.parametrize("conn", _conn_params(CLEAR))
def test_detect_peer(conn: Connection) -> None:
    """The accept-time Hello scan gives the initiator's resource type and name (6.3)."""
    payload = conn.frames[0].payload
    kind = HELLO_KINDS[conn.kind]
    peer = detect_peer(payload)
    assert peer.peer_type is PEER_TYPES[kind]
    assert peer.name == _hello_name(conn)
    if kind is HelloKind.CONSOLE:
        assert peer.console_protocol == CONSOLE_PROTOCOLS[conn.bareos_version]
    else:
        assert peer.console_protocol is None


@pytest.mark.parametrize("conn", _conn_params(CLEAR))
def test_hello_fits_acceptor_window(conn: Connection) -> None:
    """Each Hello is in its acceptor's length window and inside the 255-byte first peek, 'Hello ' at bytes 4..9."""
    first = conn.frames[0]
    low, high = HELLO_WINDOWS[conn.kind]
    assert low <= len(first.payload) <= high
    assert HELLO_LENGTH_LIMITS[HELLO_WINDOW_KEYS[conn.kind]] == (low, high)
    assert len(first.wire) <= 255
    if conn.raw is not None:
        assert conn.raw[I2A][4:10] == b"Hello "


# -- 5. greeting lines -----------------------------------------------------------------------


def _greeting_frame(conn: Connection) -> Frame:
    verdicts = _verdict_indexes(conn)
    assert len(verdicts) == 2
    frame = conn.next_frame(verdicts[-1], A2I)
    assert frame is not None
    return frame


@pytest.mark.parametrize("conn", _conn_params(c for c in CLEAR if c.kind in CONTROL_CHANNELS))
def test_greeting(conn: Connection) -> None:
    """The acceptor's first line after CRAM-MD5 parses to the greeting of that connection kind and round-trips."""
    frame = _greeting_frame(conn)
    greeting = parse_greeting(frame.payload)
    director = conn.acceptor["name"]
    if conn.kind == "dir-sd":
        assert greeting == SdHelloOk()
    elif conn.kind in ("dir-fd", "monitor-fd"):
        assert greeting == FdHelloOk(54)
    elif conn.kind == "fd-dir-client-initiated":
        assert greeting == DirectorGreeting(
            director, conn.bareos_version, BUILD_DATES[conn.bareos_version], GreetingForm.CLIENT_LINE
        )
    elif conn.kind == "console-named":
        assert greeting == DirectorGreeting(
            director,
            conn.bareos_version,
            BUILD_DATES[conn.bareos_version],
            GreetingForm.RESPONSE_MESSAGE,
        )
    else:  # pragma: no cover - every control kind is listed above
        pytest.fail(f"no expectation for {conn.kind}")
    assert greeting.to_bytes() == frame.payload


@pytest.mark.parametrize("conn", _conn_params(c for c in CLEAR if c.kind == "console-named"))
def test_console_info_message(conn: Connection) -> None:
    """A >= 18.2 console login: 1000 greeting, then a 1002 info message ending in 'You are logged in as: <console>'."""
    greeting = _greeting_frame(conn)
    info = conn.next_frame(greeting.index, A2I)
    assert info is not None and info.index == greeting.index + 1
    parsed = parse_greeting(info.payload)
    assert isinstance(parsed, ResponseMessage)
    assert parsed.id == 1002
    assert len(parsed.args) == 1
    console = conn.initiator["name"]
    assert parsed.args[0].endswith(b"\nYou are logged in as: " + console.encode())
    assert parse_response_message(info.payload) == parsed
    assert parsed.to_bytes() == info.payload


@pytest.mark.parametrize("conn", _conn_params(c for c in CLEAR if len(c.frames) > 9))
def test_later_lines_are_not_greetings(conn: Connection) -> None:
    """After the handshake, no recorded line but the greeting (and a console's 1002 info) parses as a greeting."""
    start = _verdict_indexes(conn)[-1] + 1
    allowed: set[int] = set()
    if conn.kind in CONTROL_CHANNELS:
        allowed.add(_greeting_frame(conn).index)
    if conn.kind == "console-named":
        allowed.add(_greeting_frame(conn).index + 1)
    refused = 0
    for f in conn.frames[start:]:
        if f.is_signal or f.index in allowed:
            continue
        with pytest.raises(RemoteProtocolError):
            parse_greeting(f.payload)
        refused += 1
    assert refused > 0


@pytest.mark.parametrize("conn", _conn_params(c for c in CLEAR if c.kind in DATA_CHANNELS))
def test_data_channel_has_no_greeting(conn: Connection) -> None:
    """After CRAM-MD5 on a data channel the FD sends an open-session command; nothing parses as a greeting."""
    verdicts = _verdict_indexes(conn)
    first = conn.frames[verdicts[-1] + 1]
    assert conn.side(first.dir)["role"] == "fd"
    assert first.payload == b"append open session\n" or first.payload.startswith(
        b"read open session = "
    )
    with pytest.raises(RemoteProtocolError):
        parse_greeting(first.payload)


# -- 6. TLS recordings -----------------------------------------------------------------------


def _expected_identity(conn: Connection) -> tuple[ResourceType, str]:
    if conn.kind in DATA_CHANNELS:
        assert conn.job
        return ResourceType.R_JOB, conn.job
    types = {
        "console-named": ResourceType.R_CONSOLE,
        "fd-dir-client-initiated": ResourceType.R_CLIENT,
        "dir-sd": ResourceType.R_DIRECTOR,
        "dir-fd": ResourceType.R_DIRECTOR,
    }
    return types[conn.kind], str(conn.initiator["name"])


def _first_tls_record(stream: bytes) -> bytes:
    length = int.from_bytes(stream[3:5], "big")
    return stream[: 5 + length]


@pytest.mark.parametrize("conn", _conn_params(TLS))
def test_psk_identity_parses(conn: Connection) -> None:
    """The recorded PSK identity splits into the expected resource type and (unbashed) name."""
    assert conn.tls == "psk" and conn.tls_info is not None
    assert parse_psk_identity(conn.tls_info["psk_identity"]) == _expected_identity(conn)
    assert parse_psk_identity(conn.tls_info["psk_identity"].encode()) == _expected_identity(conn)


@pytest.mark.parametrize("conn", _conn_params(TLS))
def test_psk_identity_in_client_hello(conn: Connection) -> None:
    """psk_identity() builds the identity bytes that travel in clear in the recorded ClientHello."""
    assert conn.raw is not None
    identity = psk_identity(*_expected_identity(conn))
    assert conn.tls_info is not None and identity == conn.tls_info["psk_identity"]
    assert identity.encode() in _first_tls_record(conn.raw[I2A])


@pytest.mark.parametrize("conn", _conn_params(TLS))
def test_tls_stream_is_not_a_hello(conn: Connection) -> None:
    """Both TLS streams start with a handshake record (16 03); the cleartext Hello scan refuses them."""
    assert conn.raw is not None
    assert conn.frames == ()
    for direction in (I2A, A2I):
        stream = conn.raw[direction]
        assert stream[:2] == b"\x16\x03"
        assert stream[4:10] != b"Hello "
        with pytest.raises(RemoteProtocolError):
            detect_peer(stream[4:255])
        with pytest.raises(RemoteProtocolError):
            parse_hello(stream[4:255])


@pytest.mark.parametrize("conn", _conn_params(TLS))
def test_tls_stream_as_frames_is_oversized(conn: Connection) -> None:
    """Read as Bareos frames, a TLS record header is a packet > 1,000,000 bytes: refused with BNET_TERMINATE."""
    assert conn.raw is not None
    stream = conn.raw[I2A]
    assert int.from_bytes(stream[:4], "big", signed=True) > 1_000_000
    with pytest.raises(RemoteProtocolError) as info:
        FrameDecoder().receive_data(stream)
    assert info.value.reply == TERMINATE_BYTES


# -- 7. signals ------------------------------------------------------------------------------


def test_signals_seen() -> None:
    """The recordings contain signals at all (so the per-signal checks below are not vacuous)."""
    assert len(SIGNALS) >= 6


@pytest.mark.parametrize(("header", "name", "where"), SIGNALS)
def test_recorded_signal_is_named(header: int, name: str, where: str) -> None:
    """Every signal value seen on the wire is a named Signal member with the recorded BNET_* name."""
    signal = as_signal(header)
    assert isinstance(signal, Signal), where
    assert signal.name == name
    assert Signal[name] == header
    assert signal_name(header) == name
    assert SignalFrame(header).name == name
