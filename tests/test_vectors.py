"""Known-answer vectors of PROTOCOL.md section 12 (V1..V6) and the key rules of section 3.

Every expected value is a literal copied from PROTOCOL.md (cross-checked there
against the upstream C functions, python-bareos and a real bareos-fd); none is
computed with bareosproto.
"""

from __future__ import annotations

import hashlib
import hmac

import pytest

from bareosproto import bareos_base64
from bareosproto.cram import (
    AUTH_FAILED,
    AUTH_OK,
    Challenge,
    challenge_name,
    compute_response,
    is_reflected,
    make_challenge,
    parse_challenge,
    response_payload,
    verify_response,
)
from bareosproto.errors import LocalProtocolError
from bareosproto.events import Event, Message, SignalFrame
from bareosproto.frames import TERMINATE, FrameDecoder, encode_message, encode_signal
from bareosproto.hello import Hello, HelloKind, detect_peer, parse_hello
from bareosproto.keys import Secret, new_session_key, password_key, session_key, stored_password_key
from bareosproto.names import (
    USER_AGENT,
    ResourceType,
    bash,
    parse_psk_identity,
    psk_identity,
    qualified_name,
    unbash,
)
from bareosproto.replies import DirectorGreeting, parse_greeting
from bareosproto.signals import Signal
from bareosproto.versions import BAREOS_26


def h(text: str) -> bytes:
    """Bytes from hex written with optional spaces, as PROTOCOL.md prints them."""
    return bytes.fromhex(text.replace(" ", ""))


# -- V4: base64 -------------------------------------------------------------------

# (input hex, Bareos mode, standard mode)
BASE64_VECTORS = [
    ("000102", b"AAEC", b"AAEC"),
    ("fffefd", b"///9", b"//79"),
    ("80", b"gA", b"gA"),
    ("128034", b"E4A0", b"EoA0"),
    ("f0f1f2f3f4", b"8//y8/E", b"8PHy8/Q"),
]


@pytest.mark.parametrize(("data", "bareos", "standard"), BASE64_VECTORS, ids=[v[0] for v in BASE64_VECTORS])
def test_base64_bareos_mode(data: str, bareos: bytes, standard: bytes) -> None:
    """Bareos-mode base64 sign-extends bytes >= 0x80 and right-aligns the last group, no padding (V4)."""
    assert bareos_base64.encode(h(data)) == bareos
    assert bareos_base64.encode(h(data), standard=False) == bareos


@pytest.mark.parametrize(("data", "bareos", "standard"), BASE64_VECTORS, ids=[v[0] for v in BASE64_VECTORS])
def test_base64_standard_mode(data: str, bareos: bytes, standard: bytes) -> None:
    """Standard-mode base64 is RFC 4648 without '=' padding (V4)."""
    assert bareos_base64.encode(h(data), standard=True) == standard


@pytest.mark.parametrize(("data", "bareos", "standard"), BASE64_VECTORS, ids=[v[0] for v in BASE64_VECTORS])
def test_base64_decode_standard(data: str, bareos: bytes, standard: bytes) -> None:
    """decode() turns standard-mode text back into the input bytes (V4)."""
    assert bareos_base64.decode(standard) == h(data)


def test_base64_decode_accepts_rfc_padding() -> None:
    """decode() also reads the RFC 4648 padded form: 8PHy8/Q= is f0f1f2f3f4 (V4)."""
    assert bareos_base64.decode(b"8PHy8/Q=") == h("f0f1f2f3f4")


def test_base64_decode_refuses_foreign_characters() -> None:
    """decode() raises ValueError on a character outside the base64 alphabet."""
    with pytest.raises(ValueError):
        bareos_base64.decode(b"AA*C")


def test_base64_hmac_is_22_chars() -> None:
    """A 16-byte HMAC encodes to 22 characters in both modes (section 4)."""
    digest = h("3e30bcc30953b59665e1f067b6c42e10")
    assert len(bareos_base64.encode(digest)) == 22
    assert len(bareos_base64.encode(digest, standard=True)) == 22


# -- V1: CRAM-MD5 with a configured password ---------------------------------------

V1_KEY = b"5ebe2294ecd0e0f08eab7690d2a6ee69"
V1_LINE = b"auth cram-md5 <1804289383.1787288046@R_DIRECTOR::bareos-dir> ssl=2\n"
V1_TOKEN = b"<1804289383.1787288046@R_DIRECTOR::bareos-dir>"
V1_HMAC = "3e30bcc30953b59665e1f067b6c42e10"
V1_RESPONSE = b"Pj+8wwlTt5Zl4/Bnt8QuEA"
V1_RESPONSE_STANDARD = b"PjC8wwlTtZZl4fBntsQuEA"
V1_FRAME = h("00000017 506a2b3877776c5474355a6c342f426e74385175454100")
V1_FRAME_PYTHON_BAREOS = h("00000016 506a2b3877776c5474355a6c342f426e743851754541")


def test_v1_password_key() -> None:
    """The key of Password = "secret" is the 32 ASCII bytes of its lower-case MD5 hex (V1)."""
    assert password_key("secret").reveal() == V1_KEY
    assert stored_password_key("secret").reveal() == V1_KEY


def test_v1_key_is_the_hex_string_fed_to_hmac() -> None:
    """HMAC-MD5 keyed with the hex string (not the raw digest) gives the V1 HMAC."""
    key = password_key("secret").reveal()
    assert hmac.new(key, V1_TOKEN, hashlib.md5).hexdigest() == V1_HMAC


def test_v1_challenge_parses() -> None:
    """The V1 challenge line parses to its token and ssl=2, and to_line() gives it back."""
    challenge = parse_challenge(V1_LINE)
    assert challenge == Challenge(V1_TOKEN, 2, False)
    assert challenge.to_line() == V1_LINE
    assert challenge_name(V1_TOKEN) == b"R_DIRECTOR::bareos-dir"


def test_v1_response_bareos_mode() -> None:
    """The V1 response in Bareos base64 is Pj+8wwlTt5Zl4/Bnt8QuEA."""
    assert compute_response(Secret(V1_KEY), V1_TOKEN) == V1_RESPONSE
    assert bareos_base64.encode(h(V1_HMAC)) == V1_RESPONSE


def test_v1_response_standard_mode() -> None:
    """The V1 response in standard base64 is PjC8wwlTtZZl4fBntsQuEA and decodes to the V1 HMAC."""
    standard = compute_response(Secret(V1_KEY), V1_TOKEN, standard=True)
    assert standard == V1_RESPONSE_STANDARD
    assert bareos_base64.decode(standard) == h(V1_HMAC)


def test_v1_response_frame() -> None:
    """C Bareos sends the V1 response as a 23-byte frame: 22 characters and a NUL."""
    payload = response_payload(Secret(V1_KEY), parse_challenge(V1_LINE))
    assert encode_message(payload) == V1_FRAME


def test_v1_python_bareos_frame() -> None:
    """python-bareos sends the same 22 characters without NUL (a 22-byte frame)."""
    assert encode_message(compute_response(Secret(V1_KEY), V1_TOKEN)) == V1_FRAME_PYTHON_BAREOS


def test_v1_verify_accepts_with_or_without_nul() -> None:
    """A challenger accepts the Bareos-mode response with and without its trailing NUL."""
    key = Secret(V1_KEY)
    assert verify_response(key, V1_TOKEN, V1_FRAME[4:], accept_standard=False)
    assert verify_response(key, V1_TOKEN, V1_FRAME_PYTHON_BAREOS[4:], accept_standard=False)


def test_v1_verify_standard_only_when_allowed() -> None:
    """A standard-mode response passes only a challenger that accepts both modes (inbound side, 5.4)."""
    key = Secret(V1_KEY)
    assert verify_response(key, V1_TOKEN, V1_RESPONSE_STANDARD, accept_standard=True)
    assert not verify_response(key, V1_TOKEN, V1_RESPONSE_STANDARD, accept_standard=False)


def test_v1_verify_refuses_newline_and_wrong_key() -> None:
    """A response ending in a newline, or made with another key, is refused (11 item 4)."""
    assert not verify_response(Secret(V1_KEY), V1_TOKEN, V1_RESPONSE + b"\n", accept_standard=True)
    other = Secret(b"5ebe2294ecd0e0f08eab7690d2a6ee6a")
    assert not verify_response(other, V1_TOKEN, V1_RESPONSE, accept_standard=True)


def test_verdict_lines() -> None:
    """The verdicts are exactly `1000 OK auth\\n` and `1999 Authorization failed.\\n` (5.3, 5.4)."""
    assert AUTH_OK == b"1000 OK auth\n"
    assert AUTH_FAILED == b"1999 Authorization failed.\n"


# -- V2: CRAM-MD5 with a job session key ------------------------------------------

V2_RANDOM = h("de ad be ef 01 23 45 67 89 ab cd ef 10 32 54 76")
V2_KEY = b"ONNK-OLPO-BADC-FEHG-JILK-NMPO-ABCD-EFGH"
V2_RANDOM_2 = h("00 11 22 33 44 55 66 77 88 99 aa bb cc dd ee ff")
V2_KEY_2 = b"AABB-CCDD-EEFF-GGHH-IIJJ-KKLL-MMNN-OOPP"
V2_TOKEN = b"<42.1787288046@R_STORAGE::bareos-sd>"
V2_HMAC = "bb66825ef14a8ca57ecebf3e216a542e"


def test_v2_session_key_from_bytes() -> None:
    """MakeSessionKey: low nibble then high nibble as A..P, a dash every two bytes, 39 chars (V2)."""
    assert session_key(V2_RANDOM).reveal() == V2_KEY
    assert session_key(V2_RANDOM_2).reveal() == V2_KEY_2
    assert len(V2_KEY) == 39


def test_v2_new_session_key_uses_injected_randomness() -> None:
    """new_session_key draws exactly 16 bytes from the given source (V2)."""
    asked: list[int] = []

    def source(n: int) -> bytes:
        asked.append(n)
        return V2_RANDOM

    assert new_session_key(source).reveal() == V2_KEY
    assert asked == [16]


def test_v2_session_key_needs_16_bytes() -> None:
    """A session key is made of exactly 16 random bytes."""
    with pytest.raises(LocalProtocolError):
        session_key(V2_RANDOM[:15])


def test_v2_response() -> None:
    """With the session key as key, the V2 token answers u2+CX/FKj6V+z78+IWpULC (standard: u2aCXvFKjKV+zr8+IWpULg)."""
    key = Secret(V2_KEY)
    assert compute_response(key, V2_TOKEN) == b"u2+CX/FKj6V+z78+IWpULC"
    assert compute_response(key, V2_TOKEN, standard=True) == b"u2aCXvFKjKV+zr8+IWpULg"
    assert bareos_base64.decode(b"u2aCXvFKjKV+zr8+IWpULg") == h(V2_HMAC)


def test_v2_storage_challenge_is_not_a_replay() -> None:
    """An SD may answer a challenge carrying its own name: tokens with R_STORAGE are never reflections (5.3)."""
    assert not is_reflected(V2_TOKEN, b"R_STORAGE::bareos-sd")
    assert is_reflected(V1_TOKEN, b"R_DIRECTOR::bareos-dir")
    assert not is_reflected(V1_TOKEN, b"R_CLIENT::bareos-fd")


# -- V3: a name with a space -----------------------------------------------------------

V3_KEY = b"70e76a15da00e6301ade718cc9416f79"
V3_TOKEN = b"<1.1787288046@R_CONSOLE::admin\x01user>"
V3_HMAC = "ecad8db0172058e584bc2cf5d9685130"


def test_v3_key() -> None:
    """Password adminpw gives the key 70e76a15da00e6301ade718cc9416f79 (V3)."""
    assert password_key("adminpw").reveal() == V3_KEY


def test_v3_bashed_name() -> None:
    """Inside lines a space is sent as 0x01; unbash turns it back (2.1, V3)."""
    assert bash("admin user") == b"admin\x01user"
    assert unbash(b"admin\x01user") == "admin user"
    assert qualified_name(ResourceType.R_CONSOLE, "admin user") == b"R_CONSOLE::admin\x01user"


def test_v3_challenge_token() -> None:
    """A challenge from console 'admin user' carries the bashed token <1.1787288046@R_CONSOLE::admin\\x01user>."""
    challenge = make_challenge(b"R_CONSOLE::admin\x01user", 0, 1787288046, nonce=lambda: 1)
    assert challenge.token == V3_TOKEN
    assert challenge.to_line() == b"auth cram-md5 " + V3_TOKEN + b" ssl=0\n"
    assert challenge_name(V3_TOKEN) == b"R_CONSOLE::admin\x01user"


def test_v3_response() -> None:
    """The V3 token answers 76+NsBcgW++EvC/12WhRMA (standard: 7K2NsBcgWOWEvCz12WhRMA)."""
    key = Secret(V3_KEY)
    assert compute_response(key, V3_TOKEN) == b"76+NsBcgW++EvC/12WhRMA"
    standard = compute_response(key, V3_TOKEN, standard=True)
    assert standard == b"7K2NsBcgWOWEvCz12WhRMA"
    assert bareos_base64.decode(standard) == h(V3_HMAC)


def test_v3_hello_bashes_the_name() -> None:
    """The console Hello of 'admin user' carries admin\\x01user; parsing unbashes it (V3, 7.2)."""
    line = b'Hello admin\x01user calling version 26.0.0~pre1298.eda204c31 Version="26.0.0"\n'
    assert Hello.console("admin user", BAREOS_26).to_bytes() == line
    hello = parse_hello(line)
    assert hello.kind is HelloKind.CONSOLE and hello.name == "admin user"
    assert detect_peer(line).name == "admin user"


def test_v3_psk_identity_not_bashed() -> None:
    """The PSK identity of 'admin user' keeps the space: R_CONSOLE\\x1eadmin user (V3, V6)."""
    assert psk_identity(ResourceType.R_CONSOLE, "admin user") == "R_CONSOLE\x1eadmin user"
    assert psk_identity(ResourceType.R_CONSOLE, "admin user").encode() == h(
        "525f434f4e534f4c451e61646d696e2075736572"
    )
    assert parse_psk_identity("R_CONSOLE\x1eadmin user") == (ResourceType.R_CONSOLE, "admin user")


# -- V5: frames ----------------------------------------------------------------------

V5_MESSAGES = [
    (
        b'Hello Director bareos-dir calling Version="26.0.0"\n',
        "00000033 48656c6c6f204469726563746f7220626172656f732d6469722063616c6c696e67205665"
        "7273696f6e3d2232362e302e30220a",
    ),
    (
        b"Hello admin calling version 25.1.1\n",
        "00000023 48656c6c6f2061646d696e2063616c6c696e672076657273696f6e2032352e312e310a",
    ),
    (
        b"1000\x1eOK: bareos-dir Version: 26.0.0 (21 August 2026)",
        "00000034 313030301e4f4b3a20626172656f732d6469722056657273696f6e3a2032362e302e30"
        "2028323120417567757374203230323629",
    ),
]
V5_SIGNALS = [
    (Signal.BNET_EOD, "ffffffff"),
    (Signal.BNET_EOD_POLL, "fffffffe"),
    (Signal.BNET_TERMINATE, "fffffffc"),
    (Signal.BNET_POLL, "fffffffb"),
    (Signal.BNET_HEARTBEAT, "fffffffa"),
    (Signal.BNET_HB_RESPONSE, "fffffff9"),
    (Signal.BNET_MAIN_PROMPT, "ffffffee"),
    (Signal.BNET_SUB_PROMPT, "ffffffe5"),
]


@pytest.mark.parametrize(("payload", "wire"), V5_MESSAGES, ids=["hello-director", "hello-console", "response-message"])
def test_v5_encode_message(payload: bytes, wire: str) -> None:
    """A message is its 4-byte big-endian length followed by the payload (V5)."""
    assert encode_message(payload) == h(wire)


@pytest.mark.parametrize(("signal", "wire"), V5_SIGNALS, ids=[s.name for s, _ in V5_SIGNALS])
def test_v5_encode_signal(signal: Signal, wire: str) -> None:
    """A signal is its negative value as a signed 32-bit big-endian header, no payload (V5)."""
    assert encode_signal(signal) == h(wire)
    assert encode_signal(int(signal)) == h(wire)


def test_v5_terminate_constant() -> None:
    """TERMINATE is the 4 bytes ff ff ff fc Bareos writes before closing a refused connection."""
    assert TERMINATE == h("fffffffc")


def test_v5_decode_back() -> None:
    """The V5 frames (and an empty one) concatenated decode back to the same messages and signals, in order."""
    stream = b"".join(h(w) for _, w in V5_MESSAGES) + h("00000000")
    stream += b"".join(h(w) for _, w in V5_SIGNALS)
    expected: list[Event] = [Message(p) for p, _ in V5_MESSAGES]
    expected.append(Message(b""))
    expected.extend(SignalFrame(s) for s, _ in V5_SIGNALS)
    assert FrameDecoder().receive_data(stream) == expected
    decoder = FrameDecoder()
    one_by_one = [e for i in range(len(stream)) for e in decoder.receive_data(stream[i : i + 1])]
    assert one_by_one == expected


def test_v5_decoded_signal_names() -> None:
    """Decoded V5 signals carry their BNET_* names."""
    events = FrameDecoder().receive_data(b"".join(h(w) for _, w in V5_SIGNALS))
    assert [e.name for e in events if isinstance(e, SignalFrame)] == [
        "BNET_EOD",
        "BNET_EOD_POLL",
        "BNET_TERMINATE",
        "BNET_POLL",
        "BNET_HEARTBEAT",
        "BNET_HB_RESPONSE",
        "BNET_MAIN_PROMPT",
        "BNET_SUB_PROMPT",
    ]


def test_v5_payload_builders() -> None:
    """Hello.director and DirectorGreeting build the V5 payloads byte for byte."""
    assert Hello.director("bareos-dir", BAREOS_26).to_bytes() == V5_MESSAGES[0][0]
    greeting = DirectorGreeting("bareos-dir", "26.0.0", "21 August 2026")
    assert greeting.to_bytes() == V5_MESSAGES[2][0]
    assert parse_greeting(V5_MESSAGES[2][0]) == greeting
    console = parse_hello(V5_MESSAGES[1][0])
    assert (console.kind, console.name, console.console_version, console.version) == (
        HelloKind.CONSOLE,
        "admin",
        "25.1.1",
        None,
    )


# -- V6: TLS-PSK ------------------------------------------------------------------------

V6_IDENTITIES = [
    (ResourceType.R_CONSOLE, "admin", "525f434f4e534f4c451e61646d696e"),
    (ResourceType.R_CONSOLE, USER_AGENT, "525f434f4e534f4c451e2a557365724167656e742a"),
    (ResourceType.R_DIRECTOR, "bareos-dir", "525f4449524543544f521e626172656f732d646972"),
    (ResourceType.R_CONSOLE, "admin user", "525f434f4e534f4c451e61646d696e2075736572"),
]


@pytest.mark.parametrize(("rtype", "name", "wire"), V6_IDENTITIES, ids=[v[1] for v in V6_IDENTITIES])
def test_v6_identity(rtype: ResourceType, name: str, wire: str) -> None:
    """A PSK identity is <type>\\x1e<name>, name unbashed, no NUL (V6)."""
    assert psk_identity(rtype, name).encode() == h(wire)
    assert parse_psk_identity(h(wire)) == (rtype, name)


def test_v6_default_console_name() -> None:
    """The default console is called *UserAgent* (7.2)."""
    assert USER_AGENT == "*UserAgent*"


def test_v6_psk_secret() -> None:
    """The PSK of password 'password' is the 32 ASCII bytes of its MD5 hex (V6)."""
    assert password_key("password").reveal() == h(
        "3566346463633362356161373635643631643833323764656238383263663939"
    )


def test_v6_malformed_identities_refused() -> None:
    """An identity without separator, with an unknown type or an empty name is refused."""
    from bareosproto.errors import RemoteProtocolError

    for bad in ("R_CONSOLEadmin", "R_NOPE\x1eadmin", "R_CONSOLE\x1e"):
        with pytest.raises(RemoteProtocolError):
            parse_psk_identity(bad)


# -- section 3: stored keys and Secret ------------------------------------------------------


def test_stored_md5_keeps_case() -> None:
    """[md5]<hex> is stored verbatim: upper-case hex is a different key from the peer's lower-case one (3.1, 11 item 13)."""
    upper = stored_password_key("[md5]5EBE2294ECD0E0F08EAB7690D2A6EE69")
    lower = stored_password_key("[md5]5ebe2294ecd0e0f08eab7690d2a6ee69")
    assert upper.reveal() == b"5EBE2294ECD0E0F08EAB7690D2A6EE69"
    assert lower.reveal() == V1_KEY
    assert upper != lower
    assert lower == password_key("secret")
    assert compute_response(lower, V1_TOKEN) == V1_RESPONSE
    assert compute_response(upper, V1_TOKEN) != V1_RESPONSE


def test_stored_md5_needs_32_hex_digits() -> None:
    """[md5] must be followed by exactly 32 hex digits."""
    for bad in ("[md5]5ebe2294", "[md5]5ebe2294ecd0e0f08eab7690d2a6ee6g", "[md5]"):
        with pytest.raises(LocalProtocolError):
            stored_password_key(bad)


def test_empty_password_refused() -> None:
    """An empty password (MD5 d41d8cd98f00b204e9800998ecf8427e) is refused, written plain or as [md5]."""
    with pytest.raises(LocalProtocolError):
        stored_password_key("")
    with pytest.raises(LocalProtocolError):
        stored_password_key("[md5]d41d8cd98f00b204e9800998ecf8427e")


def test_secret_never_shows_the_key() -> None:
    """repr(), str() and formatting of a Secret (also inside containers) never contain the key."""
    secret = Secret(V1_KEY)
    texts = [repr(secret), str(secret), f"{secret}", f"{secret!r}", repr([secret]), repr({"k": secret})]
    for text in texts:
        assert "5ebe2294" not in text
        assert "5ebe2294ecd0e0f08eab7690d2a6ee69" not in text
    session = session_key(V2_RANDOM)
    assert "ONNK" not in repr(session) and "ONNK" not in str(session)


def test_secret_equality_by_value() -> None:
    """Two Secrets are equal when their key bytes are, whether built from str or bytes."""
    assert Secret("5ebe2294ecd0e0f08eab7690d2a6ee69") == Secret(V1_KEY)
    assert Secret(V1_KEY) != Secret(V3_KEY)
