"""Hypothesis strategies for Bareos wire data, for your own tests and fuzzers.

``pip install hypothesis`` (it is not a dependency of the library itself).
Valid data first, then hostile mutations of it::

    from hypothesis import given
    from bareosproto import testing as bst

    @given(bst.hostile(bst.hello_payloads()))
    def test_my_director_never_crashes(payload): ...

Strategies: :func:`signals`, :func:`frames`, :func:`frame_streams`,
:func:`names`, :func:`hello_payloads`, :func:`challenge_payloads`,
:func:`response_payloads`, :func:`psk_identities`, :func:`session_keys`,
:func:`hostile` and :func:`chunkings`.
"""

from __future__ import annotations

from hypothesis import strategies as st

from .cram import Challenge, compute_response
from .events import Message, SignalFrame
from .frames import encode_message, encode_signal
from .hello import Hello, HelloKind
from .keys import Secret, password_key, session_key
from .names import MAX_NAME_LENGTH, ResourceType, psk_identity, qualified_name
from .signals import Signal
from .tls_policy import TlsPolicy
from .versions import BAREOS_25, BAREOS_26, BareosVersion

__all__ = [
    "signals",
    "frames",
    "frame_streams",
    "names",
    "releases",
    "hello_payloads",
    "challenge_payloads",
    "response_payloads",
    "psk_identities",
    "session_keys",
    "hostile",
    "chunkings",
    "HOSTILE_INSERTS",
]

_NAME_CHARS = st.characters(min_codepoint=0x21, max_codepoint=0x7E)


def signals(unknown: bool = True) -> st.SearchStrategy[int]:
    """Signal values: the 28 Bareos defines and, if ``unknown``, any other negative int32."""
    known = st.sampled_from([int(s) for s in Signal])
    if not unknown:
        return known
    return st.one_of(known, st.integers(min_value=-(2**31), max_value=-29))


def frames(max_payload: int = 512) -> st.SearchStrategy[Message | SignalFrame]:
    """One frame event: a message (empty ones too) or a signal."""
    return st.one_of(
        st.binary(max_size=max_payload).map(Message),
        signals().map(SignalFrame),
    )


def frame_streams(max_frames: int = 20) -> st.SearchStrategy[bytes]:
    """The wire bytes of a sequence of valid frames."""

    def encode(events: list[Message | SignalFrame]) -> bytes:
        return b"".join(
            encode_message(e.payload) if isinstance(e, Message) else encode_signal(int(e.signal))
            for e in events
        )

    return st.lists(frames(), max_size=max_frames).map(encode)


def names(spaces: bool = True, max_size: int = 40) -> st.SearchStrategy[str]:
    """Resource names: printable ASCII, with spaces if ``spaces`` (bashed on the wire)."""
    word = st.text(_NAME_CHARS, min_size=1, max_size=max_size)
    if not spaces:
        return word
    return st.lists(word, min_size=1, max_size=3).map(" ".join).filter(
        lambda s: len(s) <= MAX_NAME_LENGTH
    )


def releases() -> st.SearchStrategy[BareosVersion]:
    """Bareos 26 (with the ``Version=`` suffix) and 25.1 (without)."""
    return st.sampled_from([BAREOS_26, BAREOS_25])


@st.composite
def hello_payloads(draw: st.DrawFn, kind: HelloKind | None = None) -> bytes:
    """A valid Hello payload of ``kind`` (or of any kind), as Bareos would send it."""
    kind = kind if kind is not None else draw(st.sampled_from(list(HelloKind)))
    release = draw(releases())
    if kind is HelloKind.CONSOLE:
        hello = Hello.console(draw(names()), draw(st.sampled_from([release, None])))
    elif kind is HelloKind.DIRECTOR:
        hello = Hello.director(draw(names()), release)
    elif kind is HelloKind.CLIENT:
        hello = Hello.client(draw(names(spaces=False)), release)
    else:
        hello = Hello(kind, draw(names(spaces=False)), release.numeric)
    return hello.to_bytes()


@st.composite
def challenge_payloads(draw: st.DrawFn) -> bytes:
    """A challenge line: ``auth cram-md5[c] <n.t@R_TYPE::name> [ssl=P]``."""
    rtype = draw(st.sampled_from([ResourceType.R_DIRECTOR, ResourceType.R_CLIENT,
                                  ResourceType.R_STORAGE, ResourceType.R_CONSOLE, ResourceType.R_MONITOR]))
    token = b"<%d.%d@%s>" % (
        draw(st.integers(min_value=0, max_value=2**32 - 1)),
        draw(st.integers(min_value=0, max_value=2**32 - 1)),
        qualified_name(rtype, draw(names())),
    )
    policy = draw(st.sampled_from([None, *[int(p) for p in TlsPolicy]]))
    return Challenge(token, policy, draw(st.booleans())).to_line()


@st.composite
def response_payloads(draw: st.DrawFn, token: bytes | None = None) -> bytes:
    """A CRAM-MD5 response to ``token`` (22 base64 characters, with or without the NUL)."""
    token = token if token is not None else draw(challenge_payloads()).split(b" ")[2]
    key = draw(st.one_of(names().map(password_key), session_keys()))
    text = compute_response(key, token, draw(st.booleans()))
    return text + (b"\x00" if draw(st.booleans()) else b"")


def psk_identities() -> st.SearchStrategy[str]:
    """``R_TYPE\\x1ename`` identities as clients send them."""
    return st.builds(
        psk_identity,
        st.sampled_from([ResourceType.R_CONSOLE, ResourceType.R_DIRECTOR, ResourceType.R_CLIENT,
                         ResourceType.R_JOB]),
        names(max_size=30),
    )


def session_keys() -> st.SearchStrategy[Secret]:
    """Job session keys (``AAAA-BBBB-...``)."""
    return st.binary(min_size=16, max_size=16).map(session_key)


#: Byte strings that have broken parsers before: printf specifiers, NUL,
#: bashed space, record separator, CR/LF, an over-long name, a stray header.
HOSTILE_INSERTS: tuple[bytes, ...] = (
    b"%s%n%x",
    b"\x00",
    b"\x01",
    b"\x1e",
    b"\r\n",
    b"A" * 200,
    b"\xff\xff\xff\xfc",
    b"\x00\x0f\x42\x41",
    b" Version=\"99999999999.0.0\"",
    "é".encode(),
)


@st.composite
def hostile(draw: st.DrawFn, base: st.SearchStrategy[bytes]) -> bytes:
    """A hostile mutation of a valid value: bit flips, cuts, inserts, repeats."""
    data = bytearray(draw(base))
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        op = draw(st.sampled_from(["flip", "cut", "insert", "repeat", "drop"]))
        pos = draw(st.integers(min_value=0, max_value=len(data)))
        if op == "flip" and data:
            i = min(pos, len(data) - 1)
            data[i] ^= 1 << draw(st.integers(min_value=0, max_value=7))
        elif op == "cut":
            del data[pos:]
        elif op == "insert":
            data[pos:pos] = draw(st.one_of(st.sampled_from(HOSTILE_INSERTS), st.binary(max_size=8)))
        elif op == "repeat":
            data[pos:pos] = data[pos : pos + draw(st.integers(min_value=1, max_value=16))]
        elif op == "drop" and data:
            del data[min(pos, len(data) - 1)]
    return bytes(data)


def chunkings(data: bytes) -> st.SearchStrategy[list[bytes]]:
    """``data`` cut into pieces at arbitrary points (one byte each, too)."""
    return st.lists(st.integers(min_value=0, max_value=len(data)), max_size=30).map(
        lambda cuts: [
            data[a:b]
            for a, b in zip(sorted({0, len(data), *cuts}), sorted({0, len(data), *cuts})[1:])
            if b > a
        ]
    )
