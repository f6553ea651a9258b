"""The library's fast scanner and base64 give exactly what the literal loops give.

``reference_impl`` holds byte-at-a-time versions written after Bareos' C;
the library uses compiled regular expressions and ``binascii``.  Any
difference here would be a handshake a real daemon answers differently.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from bareosproto import bareos_base64
from bareosproto.scan import bsscanf

import reference_impl

# formats built from the pieces bsscanf knows, including those the daemons use
_directives = st.sampled_from([b"%s", b"%127s", b"%3s", b"%0s", b"%d", b"%u", b"%ld", b"%lu", b"%lld", b"%llu",
                               b"%hd", b"%hu", b"%c", b"%%", b" ", b"\n", b"\t"])
_literals = st.binary(min_size=1, max_size=3).filter(lambda b: b"%" not in b)
formats = st.lists(st.one_of(_directives, _literals), max_size=8).map(b"".join)
# inputs near the formats: their literal bytes, digits, signs, spaces and NUL
_alphabet = st.sampled_from(list(b"-+0123456789 \t\n\x00aZ%<>.@=:\xff"))
inputs = st.one_of(st.binary(max_size=40), st.lists(_alphabet, max_size=40).map(bytes))

DAEMON_FORMATS = [
    b"auth cram-md5c %s ssl=%d", b"auth cram-md5 %s ssl=%d", b"auth cram-md5 %s\n", b"<%u.%u@%s",
    b"Hello %127s calling version %127s", b"Hello %127s calling", b"Hello Director %127s calling",
    b'Hello Client %127s FdProtocolVersion=%d calling Version="%u.%u.%u"',
    b"Hello Start Job %127s", b"append open session", b"3000 OK open ticket = %d",
    b"Jmsg Job=%127s type=%d level=%lld", b"%s %d %d %d",
]


@settings(max_examples=3000)
@given(inputs, formats)
def test_bsscanf_matches_the_byte_loop(buf: bytes, fmt: bytes) -> None:
    """Random formats and near-miss inputs scan to the same values (or None) both ways."""
    assert bsscanf(buf, fmt) == reference_impl.bsscanf(buf, fmt)


@settings(max_examples=2000)
@given(st.data(), st.sampled_from(DAEMON_FORMATS))
def test_bsscanf_daemon_formats(data: st.DataObject, fmt: bytes) -> None:
    """The daemons' formats on inputs built from the format itself, mutated."""
    base = fmt.replace(b"%127s", b"name").replace(b"%s", b"tok").replace(b"%d", b"-12").replace(b"%u", b"7")
    base = base.replace(b"%lld", b"99999999999999999999").replace(b"%ld", b"4294967297")
    cut = data.draw(st.integers(0, len(base)))
    junk = data.draw(st.binary(max_size=4))
    buf = base[:cut] + junk + base[cut:]
    assert bsscanf(buf, fmt) == reference_impl.bsscanf(buf, fmt)


def test_bsscanf_does_not_backtrack() -> None:
    """A directive keeps what it took, as the C loop does: ``%s@`` never matches
    (``%s`` took the ``@``), and ``%d-`` does not give its ``-`` back."""
    assert bsscanf(b"ab@x", b"%s@x") is None
    assert bsscanf(b"-", b"%d-") is None
    assert bsscanf(b"12345", b"%3s45") == [b"123"]
    assert reference_impl.bsscanf(b"ab@x", b"%s@x") is None


@settings(max_examples=3000)
@given(st.binary(max_size=70), st.booleans())
def test_base64_matches_the_register_loop(data: bytes, standard: bool) -> None:
    """Bareos-mode and standard-mode output are the same as ``BinToBase64()``'s loop."""
    assert bareos_base64.encode(data, standard) == reference_impl.base64_encode(data, standard)


def test_base64_every_high_bit_pattern() -> None:
    """Every pattern of bytes >= 0x80 over six bytes (both group positions, every tail)."""
    for n in range(1, 8):
        for mask in range(1 << n):
            data = bytes(0xC5 if mask >> i & 1 else 0x3A for i in range(n))
            assert bareos_base64.encode(data) == reference_impl.base64_encode(data), data.hex()


def test_remembered_lines_are_parsed_once_and_refusals_every_time() -> None:
    """A Hello seen before is answered from the cache (the same object); a refused line
    raises again each time; long lines and bytearrays are parsed without the cache."""
    from bareosproto.errors import RemoteProtocolError
    from bareosproto.hello import parse_hello
    from bareosproto.memo import MAX_REMEMBERED_LENGTH, remembered

    line = b'Hello admin calling version 26.0.0 Version="26.0.0"\n'
    assert parse_hello(line) is parse_hello(bytes(line))
    assert parse_hello(bytearray(line)) == parse_hello(line)
    for _ in range(2):
        try:
            parse_hello(b"Hello\n")
        except RemoteProtocolError:
            pass
        else:
            raise AssertionError("a refused Hello was accepted the second time")

    calls: list[bytes] = []

    @remembered(maxsize=2)
    def length(payload: bytes) -> int:
        calls.append(payload)
        return len(payload)

    long_line = b"x" * (MAX_REMEMBERED_LENGTH + 1)
    for payload in (b"a", b"a", long_line, long_line, b"b", b"c", b"a"):
        assert length(payload) == len(payload)
    # "a" once, the long line twice (never cached), "b", "c", then "a" again (evicted, maxsize 2)
    assert calls == [b"a", long_line, long_line, b"b", b"c", b"a"]
