"""Property tests: round trips under any chunking, and garbage that only ever yields events or RemoteProtocolError."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bareosproto import (
    ConnectionClosed,
    FrameDecoder,
    Hello,
    HelloKind,
    Message,
    RemoteProtocolError,
    ResourceType,
    Role,
    SignalFrame,
    TlsPolicy,
    TwoWayAuth,
    encode_message,
    encode_signal,
    parse_greeting,
    parse_hello,
    password_key,
    qualified_name,
)
from bareosproto.bareos_base64 import decode as b64decode
from bareosproto.errors import LocalProtocolError
from bareosproto.bareos_base64 import encode as b64encode
from bareosproto.frames import MAX_MESSAGE_LENGTH
from bareosproto.hello import detect_peer
from bareosproto.scan import bsscanf
from bareosproto.versions import BAREOS_25, BAREOS_26

frames = st.lists(
    st.one_of(
        st.binary(max_size=300).map(Message),
        st.integers(min_value=-(2**31), max_value=-1).map(SignalFrame),
    ),
    max_size=30,
)


def encode(events: list[Message | SignalFrame]) -> bytes:
    return b"".join(
        encode_message(e.payload) if isinstance(e, Message) else encode_signal(int(e.signal)) for e in events
    )


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in zip(points, points[1:]) if b > a]


@given(frames, st.lists(st.integers(min_value=0), max_size=40))
def test_decoder_round_trip_under_any_chunking(events: list[Message | SignalFrame], cuts: list[int]) -> None:
    """Encoding frames and decoding the bytes cut anywhere gives the same frames, then ConnectionClosed."""
    decoder = FrameDecoder()
    out: list[object] = []
    for piece in chunked(encode(events), cuts):
        out += decoder.receive_data(piece)
    assert out == events
    assert decoder.receive_data(b"") == [ConnectionClosed()]


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2000), st.lists(st.integers(min_value=0), max_size=20))
def test_decoder_on_garbage_yields_events_or_remote_error(data: bytes, cuts: list[int]) -> None:
    """Arbitrary bytes never crash the decoder, and it never holds more than one frame."""
    decoder = FrameDecoder()
    try:
        for piece in chunked(data, cuts) + [b""]:
            for ev in decoder.receive_data(piece):
                assert isinstance(ev, (Message, SignalFrame, ConnectionClosed))
            assert decoder.buffered <= 4 + 1_000_000
    except RemoteProtocolError:
        pass


@given(st.integers(min_value=0, max_value=3 * MAX_MESSAGE_LENGTH + 5).filter(lambda n: n % 7 == 0 or n > 999_990))
@settings(max_examples=15, deadline=None)
def test_long_messages_split_like_bareos(n: int) -> None:
    """Payloads above 999,996 bytes become frames of 999,996 and a remainder; no header exceeds 1,000,000."""
    data = encode_message(b"x" * n)
    sizes = [len(m.payload) for m in FrameDecoder().receive_data(data)]  # type: ignore[union-attr]
    assert sum(sizes) == n
    assert all(s == MAX_MESSAGE_LENGTH for s in sizes[:-1]) and 0 < sizes[-1] <= MAX_MESSAGE_LENGTH or n == 0


@given(st.binary(max_size=64))
def test_standard_base64_decodes_back(data: bytes) -> None:
    """Standard-mode Bareos base64 is RFC 4648 without padding: it decodes back."""
    assert b64decode(b64encode(data, standard=True)) == data


@given(st.binary(max_size=64))
def test_bareos_base64_length(data: bytes) -> None:
    """Both modes give ceil(8n/6) characters, no padding."""
    assert len(b64encode(data)) == len(b64encode(data, True)) == -(-len(data) * 8 // 6)


names = st.text(
    alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters="\x7f"), min_size=1, max_size=60
)
spaced_names = st.lists(names, min_size=1, max_size=3).map(" ".join).filter(lambda s: len(s) <= 127)


@given(spaced_names, st.sampled_from([BAREOS_26, BAREOS_25]), st.booleans())
def test_console_and_director_hello_round_trip(name: str, release: object, old: bool) -> None:
    """Bashed Hellos carry names with spaces and parse back to the same name and bytes."""
    for hello in (Hello.console(name, None if old else release), Hello.director(name, release)):  # type: ignore[arg-type]
        if hello.kind is HelloKind.CONSOLE and name.startswith(("Director", "Client", "Storage")):
            # a daemon takes "Hello Client ..." for a client's Hello: no such console can log in
            with pytest.raises(LocalProtocolError, match="a console name cannot begin"):
                hello.to_bytes()
            continue
        raw = hello.to_bytes()
        assert b" " not in raw.split(b" calling")[0].split(b" ", 2)[-1] or hello.kind is HelloKind.DIRECTOR
        parsed = parse_hello(raw)
        assert parsed == hello and parsed.to_bytes() == raw
        assert detect_peer(raw).name == name


@given(names.filter(lambda s: len(s) <= 127), st.sampled_from([BAREOS_26, BAREOS_25]))
def test_unbashed_hellos_round_trip(name: str, release: object) -> None:
    """Client and job Hellos round trip for names without spaces."""
    for hello in (
        Hello.client(name, release),  # type: ignore[arg-type]
        Hello.start_job(name, release),  # type: ignore[arg-type]
        Hello.storage_start_job(name, release),  # type: ignore[arg-type]
        Hello.start_storage_job(name, release),  # type: ignore[arg-type]
    ):
        raw = hello.to_bytes()
        assert parse_hello(raw) == hello


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.binary(max_size=200), st.binary(max_size=120).map(lambda b: b"Hello " + b)))
def test_hello_parsers_on_garbage(data: bytes) -> None:
    """The Hello parser and peer detection only return a Hello or raise RemoteProtocolError."""
    for parse in (parse_hello, detect_peer, parse_greeting):
        try:
            parse(data)
        except RemoteProtocolError:
            pass


@given(st.binary(max_size=80), st.sampled_from([b"auth cram-md5 %s ssl=%d", b"<%u.%u@%s", b"Hello %127s calling"]))
def test_bsscanf_total(data: bytes, fmt: bytes) -> None:
    """The scanner returns values or None for any input."""
    result = bsscanf(data, fmt)
    assert result is None or isinstance(result, list)


def _machine(role: Role) -> TwoWayAuth:
    name = qualified_name(ResourceType.R_DIRECTOR if role is Role.ACCEPTOR else ResourceType.R_CLIENT, "x")
    return TwoWayAuth(role, own_qualified_name=name, key=password_key("p"), local_policy=TlsPolicy.ENABLED,
                      clock=lambda: 0.0, nonce=lambda: 1)


inputs = st.lists(
    st.one_of(
        frames.map(lambda fs: fs[0] if fs else ConnectionClosed()),
        st.sampled_from([
            Message(b"auth cram-md5 <1.2@R_STORAGE::s> ssl=1\n"),
            Message(b"1000 OK auth\n"),
            Message(b"auth cram-md5c <1.2@R_X::y>\n"),
        ]),
    ),
    max_size=8,
)


@given(st.sampled_from(list(Role)), inputs)
def test_auth_machines_on_arbitrary_frames(role: Role, events: list[object]) -> None:
    """Both roles, fed any frames, produce AuthSucceeded/None or raise RemoteProtocolError, never anything else."""
    machine = _machine(role)
    machine.start()
    for ev in events:
        try:
            machine.receive(ev)  # type: ignore[arg-type]
        except RemoteProtocolError:
            break
        except Exception as exc:  # LocalProtocolError only once the handshake is over
            from bareosproto import LocalProtocolError

            assert isinstance(exc, LocalProtocolError) and machine.state.value == "done"
            break
        machine.data_to_send()


@given(frames, st.lists(st.integers(min_value=1, max_value=5000), min_size=1, max_size=20))
def test_decoder_copies_what_it_keeps_from_a_reused_buffer(events: list[Message | SignalFrame], sizes: list[int]) -> None:
    """Fed views of one buffer that the caller overwrites after each call (as the TLS path does),
    the decoder still returns exactly the encoded frames."""
    data = encode(events)
    decoder = FrameDecoder()
    scratch = bytearray(max(sizes))
    out: list[object] = []
    pos = 0
    i = 0
    while pos < len(data):
        n = sizes[i % len(sizes)]
        i += 1
        piece = data[pos : pos + n]
        scratch[: len(piece)] = piece
        with memoryview(scratch)[: len(piece)] as view:
            out += decoder.receive_data(view)
        scratch[:] = b"\xaa" * len(scratch)  # the caller reuses its buffer
        pos += n
    assert out == events


@pytest.mark.parametrize("name", ["Client", "Director", "Storage", "Clientele", "Director of backups"])
def test_console_names_a_daemon_reads_as_another_hello_are_refused_locally(name: str) -> None:
    """A console named ``Client...``, ``Director...`` or ``Storage...`` cannot log in (a daemon
    takes its Hello for another kind): building the Hello says so instead of sending it."""
    with pytest.raises(LocalProtocolError, match="cannot begin"):
        Hello.console(name, BAREOS_26).to_bytes()
    with pytest.raises(LocalProtocolError, match="cannot begin"):
        Hello.console(name, None).to_bytes()
    assert Hello.console("my " + name, BAREOS_26).to_bytes().startswith(b"Hello my\x01")
