"""The sans-IO TLS engine (PROTOCOL.md 6, 13, 14, 15 items 12, 16, 23, 29)."""

from __future__ import annotations

import os
import select
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import recordings
from bareosproto.errors import LocalProtocolError, RemoteProtocolError
from bareosproto.frames import TERMINATE
from bareosproto.keys import Secret, password_key
from bareosproto.names import ResourceType, psk_identity
from bareosproto.tls import (
    TLS13_PSK_SUITES,
    TLS_TRANSITIONS,
    TlsEngine,
    TlsInput,
    TlsState,
    cert_client_context,
    cert_server_context,
    check_allowed_cn,
    check_peer_host,
    psk_client_context,
    psk_server_context,
)

OPENSSL = shutil.which("openssl") or ("/usr/bin/openssl" if os.path.exists("/usr/bin/openssl") else None)
needs_openssl = pytest.mark.skipif(OPENSSL is None, reason="the openssl binary is not installed")

#: V6: console password "password" -> this ASCII key is the PSK.
KEY = Secret("5f4dcc3b5aa765d61d8327deb882cf99")
OTHER_KEY = Secret("0123456789abcdef0123456789abcdef")
SESSION_KEY = Secret("ABCD-EFGH-IJKL-MNOP-ABCD-EFGH-IJKL-MNOP")  # 39 chars
ADMIN_USER = psk_identity(ResourceType.R_CONSOLE, "admin user")
ADMIN = psk_identity(ResourceType.R_CONSOLE, "admin")

ALERT_HANDSHAKE_FAILURE = 40
ALERT_ILLEGAL_PARAMETER = 47
ALERT_UNKNOWN_PSK_IDENTITY = 115


# -- helpers -----------------------------------------------------------------


def lookup_for(table: dict[str, Secret]) -> Callable[[str], Secret | None]:
    return table.get


def make_pair(
    identity: str = ADMIN_USER,
    client_key: Secret = KEY,
    table: dict[str, Secret] | None = None,
    **client_opts: bool,
) -> tuple[TlsEngine, TlsEngine]:
    server_ctx = psk_server_context(lookup_for(table if table is not None else {identity: KEY}))
    client = TlsEngine(psk_client_context(identity, client_key, **client_opts), server_side=False)
    server = TlsEngine(server_ctx, server_side=True)
    return client, server


def pump(client: TlsEngine, server: TlsEngine, rounds: int = 10) -> tuple[bytes, bytes]:
    """Move bytes both ways until both are quiet; return (to client, to server) plaintext."""
    got_client = b""
    got_server = b""
    for _ in range(rounds):
        a = client.data_to_send()
        if a:
            got_server += server.receive_data(a)
        b = server.data_to_send()
        if b:
            got_client += client.receive_data(b)
        if not a and not b:
            break
    return got_client, got_server


def records(stream: bytes) -> list[tuple[int, bytes]]:
    """Split a TLS byte stream into (content type, record body)."""
    out = []
    i = 0
    while i + 5 <= len(stream):
        n = int.from_bytes(stream[i + 3 : i + 5], "big")
        out.append((stream[i], stream[i + 5 : i + 5 + n]))
        i += 5 + n
    assert i == len(stream), "stream ends inside a record"
    return out


def first_record(stream: bytes) -> bytes:
    """The first TLS record of a stream, header included."""
    return stream[: 5 + int.from_bytes(stream[3:5], "big")]


def plain_alert(data: bytes) -> int | None:
    """The description of a cleartext alert record at the start of ``data``."""
    if len(data) >= 7 and data[0] == 21 and data[3:5] == b"\x00\x02":
        return data[6]
    return None


def server_hello_info(record_body: bytes) -> tuple[bytes, list[int]]:
    """Cipher suite and extension types of a ServerHello."""
    assert record_body[0] == 2
    p = 4 + 2 + 32
    p += 1 + record_body[p]
    suite = record_body[p : p + 2]
    p += 3
    end = p + 2 + int.from_bytes(record_body[p : p + 2], "big")
    p += 2
    exts = []
    while p < end:
        exts.append(int.from_bytes(record_body[p : p + 2], "big"))
        p += 4 + int.from_bytes(record_body[p + 2 : p + 4], "big")
    return suite, exts


def assert_no_key(exc: BaseException, *keys: Secret) -> None:
    text = str(exc) + repr(exc) + repr(getattr(exc, "reply", b""))
    for key in keys:
        raw = key.reveal()
        assert raw.decode() not in text
        assert raw.hex() not in text
        assert repr(raw) not in text


# -- TLS-PSK between two engines -------------------------------------------


def test_psk_tls13_handshake_and_data_both_ways() -> None:
    """Two engines agree on TLS 1.3 with a SHA-256 suite (CHACHA20 first, as the
    Bareos daemons pick), carry bytes both ways, and the server learns the
    identity ``R_CONSOLE\\x1eadmin user`` with its space kept (6.4, V6)."""
    client, server = make_pair()
    hello = client.data_to_send()  # the ClientHello is ready at once
    assert hello[:1] == b"\x16" and not client.handshake_done
    server.receive_data(hello)
    pump(client, server)
    assert client.handshake_done and server.handshake_done
    assert client.version == server.version == "TLSv1.3"
    assert client.cipher == server.cipher == "TLS_CHACHA20_POLY1305_SHA256"
    assert client.cipher in TLS13_PSK_SUITES
    assert server.psk_identity == "R_CONSOLE\x1eadmin user"
    assert client.psk_identity == "R_CONSOLE\x1eadmin user"

    client.send(b"\x00\x00\x00\x05Hello")
    server.send(b"\x00\x00\x00\x02OK")
    to_client, to_server = pump(client, server)
    assert to_server == b"\x00\x00\x00\x05Hello"
    assert to_client == b"\x00\x00\x00\x02OK"


def test_session_key_of_39_chars_is_a_psk() -> None:
    """A job session key (39 ASCII chars) works as PSK for ``R_JOB\\x1e<job>`` (6.4 rows 6-8)."""
    job = psk_identity(ResourceType.R_JOB, "backup-client.2026-11-30_09.21.35_25")
    client, server = make_pair(job, SESSION_KEY, {job: SESSION_KEY})
    pump(client, server)
    assert server.handshake_done and server.psk_identity == job


def test_tls12_only_client_gets_ecdhe_psk_chacha20() -> None:
    """A client limited to TLS 1.2 negotiates ECDHE-PSK-CHACHA20-POLY1305, what
    bconsole and bareos-fd negotiate over TLS 1.2 (6.7, 13)."""
    client, server = make_pair(tls13=False)
    pump(client, server)
    assert client.version == server.version == "TLSv1.2"
    assert client.cipher == server.cipher == "ECDHE-PSK-CHACHA20-POLY1305"
    assert server.psk_identity == ADMIN_USER
    client.send(b"ping")
    assert pump(client, server)[1] == b"ping"


def test_tls13_only_client_gets_tls13() -> None:
    """A client limited to TLS 1.3 still works (tls12=False)."""
    client, server = make_pair(tls12=False)
    pump(client, server)
    assert server.version == "TLSv1.3"


def test_client_context_refuses_nonsense() -> None:
    """No versions, an empty key or an empty identity are caller errors."""
    with pytest.raises(LocalProtocolError):
        psk_client_context(ADMIN, KEY, tls13=False, tls12=False)
    with pytest.raises(LocalProtocolError):
        psk_client_context(ADMIN, Secret(b""))
    with pytest.raises(LocalProtocolError):
        psk_client_context("", KEY)


def test_identity_is_in_clear_in_the_client_hello() -> None:
    """The PSK identity, unbashed, is visible in clear in the ClientHello (15.12)."""
    client = TlsEngine(psk_client_context(ADMIN_USER, KEY), server_side=False)
    hello = client.data_to_send()
    assert hello[0] == 0x16
    assert b"R_CONSOLE\x1eadmin user" in hello
    assert KEY.reveal() not in hello


# -- failures ------------------------------------------------------------------


@pytest.mark.parametrize("tls13", [True, False], ids=["tls13", "tls12"])
def test_wrong_key_fails_on_both_sides(tls13: bool) -> None:
    """Right identity, wrong key: both engines raise RemoteProtocolError; the
    server's reply is its alert (TLS 1.3: illegal_parameter, 15.16) followed by
    the raw ``ff ff ff fc`` (6.3 item 7); no error text shows either key."""
    client, server = make_pair(client_key=OTHER_KEY, tls13=tls13)
    with pytest.raises(RemoteProtocolError) as server_err:
        pump(client, server)
    reply = server_err.value.reply
    assert reply.endswith(TERMINATE)
    assert reply[:1] == b"\x15"  # an alert record first
    if tls13:
        assert plain_alert(reply) == ALERT_ILLEGAL_PARAMETER
    assert server.state is TlsState.ERROR and not server.handshake_done
    with pytest.raises(RemoteProtocolError) as client_err:
        client.receive_data(reply[: -len(TERMINATE)])
    assert not client_err.value.reply.endswith(TERMINATE)
    for err in (server_err.value, client_err.value):
        assert_no_key(err, KEY, OTHER_KEY)
    assert KEY.reveal().decode() not in repr(server) + repr(client)


@pytest.mark.parametrize(
    ("tls13", "alert"),
    [(True, ALERT_HANDSHAKE_FAILURE), (False, ALERT_UNKNOWN_PSK_IDENTITY)],
    ids=["tls13", "tls12"],
)
def test_unknown_identity_is_refused_with_an_alert(tls13: bool, alert: int) -> None:
    """An identity the lookup does not know is refused: TLS 1.3 answers
    handshake_failure (15.16), TLS 1.2 unknown_psk_identity (6.7); the server
    reply ends with ``ff ff ff fc`` and the client fails too."""
    client, server = make_pair(ADMIN, table={ADMIN_USER: KEY}, tls13=tls13)
    with pytest.raises(RemoteProtocolError) as err:
        pump(client, server)
    assert plain_alert(err.value.reply) == alert
    assert err.value.reply.endswith(TERMINATE)
    assert server.psk_identity == ADMIN  # what was offered, for the log
    assert "R_CONSOLE" in err.value.message
    with pytest.raises(RemoteProtocolError):
        client.receive_data(err.value.reply[: -len(TERMINATE)])
    assert_no_key(err.value, KEY)


def test_lookup_exception_counts_as_unknown_identity() -> None:
    """A lookup that raises refuses the identity like None does; the error names
    the exception type but not its text."""

    def lookup(identity: str) -> Secret | None:
        raise KeyError("5f4dcc3b5aa765d61d8327deb882cf99")

    server = TlsEngine(psk_server_context(lookup), server_side=True)
    client = TlsEngine(psk_client_context(ADMIN, KEY), server_side=False)
    with pytest.raises(RemoteProtocolError) as err:
        server.receive_data(client.data_to_send())
    assert "KeyError" in err.value.message
    assert err.value.reply.endswith(TERMINATE)
    assert_no_key(err.value, KEY)


def test_cleartext_hello_into_a_tls_server_is_refused_with_terminate() -> None:
    """A cleartext Bareos Hello fed to the TLS server engine is not TLS: the
    handshake fails and the reply is ``ff ff ff fc`` (OpenSSL writes no alert
    for it) (6.3 item 7)."""
    server = TlsEngine(psk_server_context(lookup_for({ADMIN: KEY})), server_side=True)
    hello = b"Hello admin calling version 25.1.1\n"
    with pytest.raises(RemoteProtocolError) as err:
        server.receive_data(len(hello).to_bytes(4, "big") + hello)
    assert err.value.reply == TERMINATE
    assert server.state is TlsState.ERROR
    with pytest.raises(LocalProtocolError):
        server.receive_data(b"more")


@settings(max_examples=200, deadline=None)
@given(
    first=st.integers(0, 0x7F),
    second=st.integers(0, 255).filter(lambda b: b != 3),
    rest=st.binary(min_size=3, max_size=300),
)
def test_garbage_that_is_not_a_tls_record_fails_at_once(first: int, second: int, rest: bytes) -> None:
    """Bytes whose header cannot start a TLS record (version major byte not 3,
    no SSLv2 high bit) make the server fail at once with TERMINATE last in its
    reply, whatever else follows."""
    server = TlsEngine(psk_server_context(lookup_for({ADMIN: KEY})), server_side=True)
    with pytest.raises(RemoteProtocolError) as err:
        server.receive_data(bytes([first, second]) + rest)
    assert err.value.reply.endswith(TERMINATE)


def test_eof_during_handshake_is_a_remote_error() -> None:
    """Transport EOF before the handshake completes is a RemoteProtocolError;
    the server reply still ends with TERMINATE."""
    client, server = make_pair()
    hello = client.data_to_send()
    server.receive_data(hello[:10])
    with pytest.raises(RemoteProtocolError) as err:
        server.receive_data(b"")
    assert err.value.reply.endswith(TERMINATE)
    client_only = TlsEngine(psk_client_context(ADMIN, KEY), server_side=False)
    with pytest.raises(RemoteProtocolError) as cerr:
        client_only.receive_data(b"")
    assert not cerr.value.reply.endswith(TERMINATE)


def test_corrupted_record_after_handshake_is_a_remote_error() -> None:
    """A tampered application record fails authentication: RemoteProtocolError
    whose reply is our alert, without TERMINATE (that is for handshakes only)."""
    client, server = make_pair()
    pump(client, server)
    client.send(b"0123456789")
    record = bytearray(client.data_to_send())
    record[-1] ^= 0x01
    with pytest.raises(RemoteProtocolError) as err:
        server.receive_data(bytes(record))
    assert err.value.reply and not err.value.reply.endswith(TERMINATE)


# -- chunking, flights, records --------------------------------------------


@pytest.mark.parametrize("tls13", [True, False], ids=["tls13", "tls12"])
def test_handshake_fed_one_byte_at_a_time(tls13: bool) -> None:
    """Every byte fed separately (both directions) gives the same result as
    whole flights: handshake, data, close."""
    client, server = make_pair(tls13=tls13)
    client.send(b"Hello frame")
    got_server = b""
    got_client = b""
    for _ in range(10):
        a = client.data_to_send()
        for i in range(len(a)):
            got_server += server.receive_data(a[i : i + 1])
        b = server.data_to_send()
        for i in range(len(b)):
            got_client += client.receive_data(b[i : i + 1])
        if not a and not b:
            break
    assert server.handshake_done and client.handshake_done
    assert got_server == b"Hello frame" and got_client == b""
    server.send(b"reply")
    for byte in server.data_to_send():
        got_client += client.receive_data(bytes([byte]))
    assert got_client == b"reply"


def test_data_in_the_same_flight_as_the_client_finished_is_not_lost() -> None:
    """Plaintext sent before the handshake is done goes out right behind the
    client's Finished; the server returns it from the very call that
    completes its handshake."""
    client, server = make_pair()
    client.send(b"\x00\x00\x00\x05Hello")
    server.receive_data(client.data_to_send())
    client.receive_data(server.data_to_send())
    flight = client.data_to_send()
    assert [t for t, _ in records(flight)] == [20, 23, 23]  # CCS, Finished, data
    assert not server.handshake_done
    assert server.receive_data(flight) == b"\x00\x00\x00\x05Hello"
    assert server.handshake_done


def test_server_sends_one_session_ticket_that_the_client_swallows() -> None:
    """After a TLS 1.3 PSK handshake the server sends exactly one
    NewSessionTicket record, as the Bareos daemons do (15.29 recordings); the
    client consumes it and returns no application bytes; data in the same
    chunk behind the ticket is still delivered."""
    client, server = make_pair()
    server.receive_data(client.data_to_send())
    client.receive_data(server.data_to_send())
    server.receive_data(client.data_to_send())
    after = server.data_to_send()
    assert [t for t, _ in records(after)] == [23]
    server.send(b"challenge")
    assert client.receive_data(after + server.data_to_send()) == b"challenge"


def test_each_send_is_one_record_of_length_plus_17() -> None:
    """Each send() becomes its own TLS 1.3 record of payload length + 17 bytes,
    as Bareos sends one record per frame; 16 KiB payloads per record at most
    (16401-byte records in the recordings) (15.29)."""
    client, server = make_pair()
    pump(client, server)
    client.send(b"a" * 8)
    client.send(b"b" * 30)
    client.send(b"c" * 40000)
    out = client.data_to_send()
    lengths = [len(body) for _, body in records(out)]
    assert lengths == [8 + 17, 30 + 17, 16401, 16401, 40000 - 2 * 16384 + 17]
    assert server.receive_data(out) == b"a" * 8 + b"b" * 30 + b"c" * 40000


# -- closing -----------------------------------------------------------------


@pytest.mark.parametrize("first_closer", ["client", "server"])
def test_close_notify_both_ways(first_closer: str) -> None:
    """close() queues a close_notify (a 19-byte TLS 1.3 record, as recorded);
    the peer reports it, answers with its own at once (15.23: every TLS
    connection ends with a close_notify from each side) and both end CLOSED."""
    client, server = make_pair()
    pump(client, server)
    closer, other = (client, server) if first_closer == "client" else (server, client)
    closer.send(b"last words")
    closer.close()
    assert closer.state.value == "CLOSING"
    out = closer.data_to_send()
    assert [(t, len(b)) for t, b in records(out)][-1] == (23, 19)
    assert other.receive_data(out) == b"last words"  # data before the notify survives
    assert other.peer_closed and other.close_notify_received
    assert other.state is TlsState.CLOSED
    answer = other.data_to_send()
    assert [(t, len(b)) for t, b in records(answer)] == [(23, 19)]
    assert closer.receive_data(answer) == b""
    assert closer.state.value == "CLOSED" and closer.close_notify_received
    closer.close()  # idempotent
    assert closer.data_to_send() == b""
    with pytest.raises(LocalProtocolError):
        closer.send(b"too late")
    assert closer.state is TlsState.ERROR


@pytest.mark.parametrize("tls13", [True, False], ids=["tls13", "tls12"])
def test_bytes_after_the_close_notify_are_kept_as_trailing_data(tls13: bool) -> None:
    """Bytes behind the peer's close_notify, in the same chunk or later, are not
    TLS: receive_data returns nothing for them and trailing_data keeps them
    all for the cleartext phase that follows (TlsAuthenticate, 6.5 item 4)."""
    client, server = make_pair(tls13=tls13)
    pump(client, server)
    client.send(b"inside")
    client.close()
    frame = b"\x00\x00\x00\x05Hello"
    assert server.receive_data(client.data_to_send() + frame[:3]) == b"inside"
    assert server.state is TlsState.CLOSED
    assert server.receive_data(frame[3:]) == b""
    assert server.trailing_data == frame
    client.receive_data(server.data_to_send() + b"clear")
    assert client.state is TlsState.CLOSED and client.trailing_data == b"clear"


def test_transport_eof_after_handshake_is_reported_not_raised() -> None:
    """Transport EOF without close_notify after the handshake marks the peer
    closed (not cleanly) and raises nothing; no close_notify is sent back, only
    the one alert record OpenSSL queues for the truncation (as Bareos' socket
    BIO would write it)."""
    client, server = make_pair()
    pump(client, server)
    assert server.receive_data(b"") == b""
    assert server.peer_closed and not server.close_notify_received
    assert server.state is TlsState.CLOSED
    assert [(t, len(b)) for t, b in records(server.data_to_send())] == [(23, 19)]
    server.close()
    assert server.data_to_send() == b""


def test_close_before_handshake_sends_nothing() -> None:
    """close() during the handshake has nothing to notify; queued plaintext is dropped."""
    client = TlsEngine(psk_client_context(ADMIN, KEY), server_side=False)
    client.data_to_send()
    client.send(b"never")
    client.close()
    assert client.state is TlsState.CLOSED
    assert client.data_to_send() == b""


def test_inputs_without_a_transition_are_local_errors() -> None:
    """Every (state, caller input) pair missing from the table raises
    LocalProtocolError and moves the engine to ERROR."""

    def engine_in(state: TlsState) -> TlsEngine:
        client, server = make_pair()
        if state is TlsState.HANDSHAKE:
            return client
        pump(client, server)
        if state is TlsState.CLOSING:
            client.close()
        elif state is TlsState.CLOSED:
            client.close()
            pump(client, server)
        elif state is TlsState.ERROR:
            client.close()
            with pytest.raises(LocalProtocolError):
                client.send(b"x")
        assert client.state is state
        return client

    calls: dict[str, Callable[[TlsEngine], object]] = {
        "receive_data": lambda e: e.receive_data(b"\x17"),  # part of a record header
        "send": lambda e: e.send(b"x"),
        "close": lambda e: e.close(),
    }
    for state in TlsState:
        for name, call in calls.items():
            allowed = (state, TlsInput(name)) in TLS_TRANSITIONS
            engine = engine_in(state)
            if allowed:
                call(engine)
            else:
                with pytest.raises(LocalProtocolError):
                    call(engine)
                assert engine.state is TlsState.ERROR


# -- one server context, many connections --------------------------------------


def test_shared_server_context_keeps_identities_apart() -> None:
    """One server context serves interleaved handshakes; each engine records
    the identity of its own peer (for the cross-check after the Hello, 6.4)."""
    table = {ADMIN: KEY, ADMIN_USER: OTHER_KEY}
    ctx = psk_server_context(lookup_for(table))
    c1 = TlsEngine(psk_client_context(ADMIN, KEY), server_side=False)
    c2 = TlsEngine(psk_client_context(ADMIN_USER, OTHER_KEY), server_side=False)
    s1 = TlsEngine(ctx, server_side=True)
    s2 = TlsEngine(ctx, server_side=True)
    h1, h2 = c1.data_to_send(), c2.data_to_send()
    s2.receive_data(h2)
    s1.receive_data(h1)
    assert (s1.psk_identity, s2.psk_identity) == (ADMIN, ADMIN_USER)
    pump(c1, s1)
    pump(c2, s2)
    assert s1.handshake_done and s2.handshake_done
    assert (s1.psk_identity, s2.psk_identity) == (ADMIN, ADMIN_USER)


def test_shared_server_context_across_threads() -> None:
    """Handshakes on one server context in several threads at once each see their own identity."""
    names = [psk_identity(ResourceType.R_CLIENT, f"fd-{i}") for i in range(8)]
    table = {name: password_key(name) for name in names}
    ctx = psk_server_context(lookup_for(table))
    results: dict[str, str | None] = {}
    barrier = threading.Barrier(len(names))

    def run(name: str) -> None:
        client = TlsEngine(psk_client_context(name, table[name]), server_side=False)
        server = TlsEngine(ctx, server_side=True)
        barrier.wait()
        for _ in range(20):
            pump(client, server, rounds=1)
        results[name] = server.psk_identity if server.handshake_done else None

    threads = [threading.Thread(target=run, args=(n,)) for n in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert results == {n: n for n in names}


# -- recorded Bareos peers ---------------------------------------------------------


def _recorded_psk_connections() -> list[recordings.Connection]:
    return [
        c
        for c in recordings.tls_connections()
        if c.tls == "psk" and c.raw and c.secret.get("cram_key") and c.tls_info
    ]


@pytest.mark.parametrize("conn", _recorded_psk_connections(), ids=lambda c: c.label)
def test_recorded_bareos_client_hello_is_accepted_like_the_daemon(conn: recordings.Connection) -> None:
    """A ClientHello recorded from bconsole / bareos-fd / bareos-dir verifies
    against the ASCII key (the PSK binder checks it), the lookup sees the
    recorded identity, and our server's flight has the daemon's shape: same
    record types and sizes, suite TLS_CHACHA20_POLY1305_SHA256, same
    ServerHello extensions."""
    assert conn.tls_info is not None
    identity = conn.tls_info["psk_identity"]
    seen: list[str] = []

    def lookup(offered: str) -> Secret | None:
        seen.append(offered)
        return Secret(conn.secret["cram_key"]) if offered == identity else None

    assert conn.raw is not None
    server = TlsEngine(psk_server_context(lookup), server_side=True)
    assert server.receive_data(first_record(conn.raw[recordings.I2A])) == b""
    assert seen == [identity]
    ours = records(server.data_to_send())
    theirs = records(conn.raw[recordings.A2I])[: len(ours)]
    assert [(t, len(b)) for t, b in ours] == [(t, len(b)) for t, b in theirs]
    assert server_hello_info(ours[0][1]) == server_hello_info(theirs[0][1])
    assert server_hello_info(ours[0][1])[0] == b"\x13\x03"


@pytest.mark.parametrize("conn", _recorded_psk_connections()[:1], ids=lambda c: c.label)
def test_recorded_client_hello_with_wrong_key_gets_illegal_parameter(conn: recordings.Connection) -> None:
    """The same recorded ClientHello against a wrong key is refused with the
    illegal_parameter alert a Bareos client sees for a wrong password (15.16)."""
    assert conn.raw is not None
    server = TlsEngine(psk_server_context(lambda offered: OTHER_KEY), server_side=True)
    with pytest.raises(RemoteProtocolError) as err:
        server.receive_data(first_record(conn.raw[recordings.I2A]))
    assert plain_alert(err.value.reply) == ALERT_ILLEGAL_PARAMETER
    assert err.value.reply.endswith(TERMINATE)


# -- real OpenSSL peers ------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_output(proc: subprocess.Popen[bytes], marker: bytes, timeout: float = 10.0) -> bytes:
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    seen = b""
    deadline = time.monotonic() + timeout
    while marker not in seen:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"openssl did not print {marker!r} in time: {seen!r}")
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            chunk = os.read(fd, 4096)
            if not chunk:
                raise AssertionError(f"openssl ended without printing {marker!r}: {seen!r}")
            seen += chunk
    return seen


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                stream.close()


def run_client_engine(engine: TlsEngine, sock: socket.socket, until: Callable[[bytes], bool]) -> bytes:
    """Drive ``engine`` over a blocking socket until ``until(received)``."""
    got = b""
    deadline = time.monotonic() + 10
    while not until(got):
        assert time.monotonic() < deadline, "timeout"
        out = engine.data_to_send()
        if out:
            sock.sendall(out)
        try:
            data = sock.recv(65536)
        except ConnectionResetError:  # a reset ends the stream like EOF
            data = b""
        got += engine.receive_data(data)
        if not data:
            break
    out = engine.data_to_send()
    if out:
        sock.sendall(out)
    return got


@needs_openssl
@pytest.mark.parametrize(
    ("server_args", "client_opts", "version", "cipher"),
    [
        ([], {}, "TLSv1.3", "TLS_CHACHA20_POLY1305_SHA256"),
        (["-tls1_2"], {}, "TLSv1.2", "ECDHE-PSK-CHACHA20-POLY1305"),
        ([], {"tls13": False}, "TLSv1.2", "ECDHE-PSK-CHACHA20-POLY1305"),
    ],
    ids=["tls13", "server-tls12", "client-tls12"],
)
def test_client_engine_against_openssl_s_server(
    processes: list[subprocess.Popen[bytes]],
    server_args: list[str],
    client_opts: dict[str, bool],
    version: str,
    cipher: str,
) -> None:
    """Our client engine over a real socket completes TLS-PSK with
    ``openssl s_server -psk <hex of the ASCII key> -psk_identity R_CONSOLE<1e>admin
    -nocert`` (which in TLS 1.3 accepts only that exact identity), exchanges a
    line with its ``-rev`` echo and both sides close."""
    assert OPENSSL is not None
    port = free_port()
    proc = subprocess.Popen(
        [OPENSSL, "s_server", "-accept", f"127.0.0.1:{port}", "-nocert", "-naccept", "1",
         "-psk", KEY.reveal().hex(), "-psk_identity", ADMIN, "-rev", *server_args],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    processes.append(proc)
    wait_for_output(proc, b"ACCEPT")
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.settimeout(10)
        engine = TlsEngine(psk_client_context(ADMIN, KEY, **client_opts), server_side=False)
        engine.send(b"hello bareos\n")
        got = run_client_engine(engine, sock, lambda got: got.endswith(b"\n"))
        assert got == b"soerab olleh\n"
        assert engine.version == version and engine.cipher == cipher
        engine.close()
        run_client_engine(engine, sock, lambda got: engine.state is TlsState.CLOSED)
        assert engine.state is TlsState.CLOSED and engine.close_notify_received
    output = wait_for_output(proc, b"CONNECTION CLOSED")
    assert f"Ciphersuite: {cipher}".encode() in output


@needs_openssl
def test_openssl_s_server_refuses_another_identity(processes: list[subprocess.Popen[bytes]]) -> None:
    """In TLS 1.3 s_server only takes the identity it was told; our client with
    ``R_CONSOLE\\x1eadmin user`` against one expecting ``...admin`` fails: the
    identity bytes really are what we send."""
    assert OPENSSL is not None
    port = free_port()
    proc = subprocess.Popen(
        [OPENSSL, "s_server", "-accept", f"127.0.0.1:{port}", "-nocert", "-naccept", "1",
         "-psk", KEY.reveal().hex(), "-psk_identity", ADMIN],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    processes.append(proc)
    wait_for_output(proc, b"ACCEPT")
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.settimeout(10)
        engine = TlsEngine(psk_client_context(ADMIN_USER, KEY, tls12=False), server_side=False)
        with pytest.raises(RemoteProtocolError):
            run_client_engine(engine, sock, lambda got: engine.handshake_done)


def serve_one(
    listener: socket.socket, engine: TlsEngine, respond: Callable[[bytes], bytes | None]
) -> bytes:
    """Accept one connection and drive a server engine: answer a complete
    line with ``respond(line)``, then close; return what was received."""
    conn, _ = listener.accept()
    got = b""
    with conn:
        conn.settimeout(10)
        deadline = time.monotonic() + 10
        while engine.state is not TlsState.CLOSED:
            assert time.monotonic() < deadline, "timeout"
            data = conn.recv(65536)
            try:
                got += engine.receive_data(data)
            finally:
                out = engine.data_to_send()
                if out:
                    conn.sendall(out)
            if b"\n" in got and engine.state is TlsState.OPEN:
                answer = respond(got)
                if answer:
                    engine.send(answer)
                engine.close()
                conn.sendall(engine.data_to_send())
            if not data:
                break
    return got


@needs_openssl
@pytest.mark.parametrize(
    ("client_args", "version", "cipher"),
    [
        (["-tls1_3"], "TLSv1.3", "TLS_CHACHA20_POLY1305_SHA256"),
        (["-tls1_3", "-ciphersuites", "TLS_AES_128_GCM_SHA256"], "TLSv1.3", "TLS_AES_128_GCM_SHA256"),
        (["-tls1_2"], "TLSv1.2", "ECDHE-PSK-CHACHA20-POLY1305"),
    ],
    ids=["tls13", "tls13-aes128", "tls12"],
)
def test_openssl_s_client_against_server_engine(
    processes: list[subprocess.Popen[bytes]], client_args: list[str], version: str, cipher: str
) -> None:
    """``openssl s_client -psk <hex> -psk_identity R_CONSOLE<1e>admin`` (the 0x1E
    passed as a real argument byte) handshakes with our server engine on a
    socket; the engine sees the identity, answers a line and closes with
    close_notify, which s_client reports."""
    assert OPENSSL is not None
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        listener.settimeout(10)
        port = listener.getsockname()[1]
        proc = subprocess.Popen(
            [OPENSSL, "s_client", "-connect", f"127.0.0.1:{port}", "-psk", KEY.reveal().hex(),
             "-psk_identity", ADMIN, *client_args],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )  # fmt: skip
        processes.append(proc)
        assert proc.stdin is not None
        proc.stdin.write(b"ping\n")
        proc.stdin.flush()
        engine = TlsEngine(psk_server_context(lookup_for({ADMIN: KEY})), server_side=True)
        got = serve_one(listener, engine, lambda line: b"pong\n")
    assert got == b"ping\n"
    assert engine.psk_identity == "R_CONSOLE\x1eadmin"
    assert engine.version == version and engine.cipher == cipher
    assert engine.close_notify_received
    output = wait_for_output(proc, b"closed")
    assert b"pong" in output


@needs_openssl
def test_s_client_with_only_aes256_sha384_cannot_use_the_psk(processes: list[subprocess.Popen[bytes]]) -> None:
    """A TLS 1.3 client offering only TLS_AES_256_GCM_SHA384 cannot use a
    classic-callback PSK (bound to SHA-256): the handshake fails, as against a
    real bareos-fd (6.7, 13); the server reply ends with TERMINATE."""
    assert OPENSSL is not None
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        listener.settimeout(10)
        port = listener.getsockname()[1]
        proc = subprocess.Popen(
            [OPENSSL, "s_client", "-connect", f"127.0.0.1:{port}", "-psk", KEY.reveal().hex(),
             "-psk_identity", ADMIN, "-tls1_3", "-ciphersuites", "TLS_AES_256_GCM_SHA384"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )  # fmt: skip
        processes.append(proc)
        engine = TlsEngine(psk_server_context(lookup_for({ADMIN: KEY})), server_side=True)
        with pytest.raises(RemoteProtocolError) as err:
            serve_one(listener, engine, lambda line: None)
    assert err.value.reply.endswith(TERMINATE)
    assert not engine.handshake_done


# -- certificates ------------------------------------------------------------------


def _openssl(*args: str, cwd: Path) -> None:
    assert OPENSSL is not None
    subprocess.run([OPENSSL, *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A throwaway CA, a server certificate (CN bareos-dir.example, SAN
    dir.local) and a client certificate (CN bconsole-admin), all EC P-256."""
    if OPENSSL is None:
        pytest.skip("the openssl binary is not installed")
    d = tmp_path_factory.mktemp("pki")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
             "-subj", "/CN=Test CA", "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)  # fmt: skip
    (d / "srv.ext").write_text("subjectAltName=DNS:dir.local,IP:127.0.0.1\n")
    (d / "cli.ext").write_text("extendedKeyUsage=clientAuth\n")
    for name, cn in (("srv", "bareos-dir.example"), ("cli", "bconsole-admin")):
        _openssl("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr",
                 "-subj", f"/O=Bareos/CN={cn}", cwd=d)  # fmt: skip
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                 "-CAcreateserial", "-out", f"{name}.pem", "-days", "2",
                 "-extfile", f"{name}.ext", cwd=d)  # fmt: skip
    # a second CA that signed nothing we use
    _openssl("req", "-x509", *ec, "-keyout", "other.key", "-out", "other.pem", "-days", "2",
             "-subj", "/CN=Other CA", cwd=d)  # fmt: skip
    return {n: str(d / n) for n in ("ca.pem", "srv.pem", "srv.key", "cli.pem", "cli.key", "other.pem")}


def test_certificate_tls_with_verified_peers_and_allowed_cn(pki: dict[str, str]) -> None:
    """Certificate TLS: the client verifies the server against the CA, the
    server requires and verifies the client certificate (TlsVerifyPeer); the
    peers' CNs pass or fail TlsAllowedCn by exact match and the configured
    address is checked against SAN DNS entries and CN, ignoring case (6.7)."""
    client = TlsEngine(
        cert_client_context(pki["ca.pem"], pki["cli.pem"], pki["cli.key"], verify_peer=True), server_side=False
    )
    server = TlsEngine(
        cert_server_context(pki["srv.pem"], pki["srv.key"], ca_file=pki["ca.pem"], verify_peer=True), server_side=True
    )
    client.send(b"Hello")
    assert pump(client, server)[1] == b"Hello"
    assert client.version == "TLSv1.3"
    assert server.psk_identity is None
    server_cert = client.peer_certificate
    client_cert = server.peer_certificate
    assert check_allowed_cn(server_cert, ["other", "bareos-dir.example"])
    assert not check_allowed_cn(server_cert, ["Bareos-Dir.example"])  # exact, case kept
    assert not check_allowed_cn(server_cert, ["bareos-dir"])
    assert check_allowed_cn(client_cert, ["bconsole-admin"])
    assert not check_allowed_cn(client_cert, [])
    assert check_peer_host(server_cert, "DIR.LOCAL")
    assert check_peer_host(server_cert, "bareos-dir.example")
    assert not check_peer_host(server_cert, "127.0.0.1")  # IP entries are not checked
    assert not check_peer_host(server_cert, "other.example")


def test_certificate_from_an_unknown_ca_is_refused(pki: dict[str, str]) -> None:
    """A client that verifies the server refuses a certificate from another CA."""
    client = TlsEngine(cert_client_context(pki["other.pem"]), server_side=False)
    server = TlsEngine(cert_server_context(pki["srv.pem"], pki["srv.key"]), server_side=True)
    with pytest.raises(RemoteProtocolError) as err:
        pump(client, server)
    assert "CERTIFICATE_VERIFY_FAILED" in err.value.message
    assert client.state is TlsState.ERROR


def test_server_that_verifies_peers_refuses_a_client_without_certificate(pki: dict[str, str]) -> None:
    """A server with verify_peer fails the handshake of a client without a
    certificate (SSL_VERIFY_FAIL_IF_NO_PEER_CERT), reply ending with TERMINATE;
    the client learns it from the alert."""
    client = TlsEngine(cert_client_context(pki["ca.pem"]), server_side=False)
    server = TlsEngine(
        cert_server_context(pki["srv.pem"], pki["srv.key"], ca_file=pki["ca.pem"], verify_peer=True), server_side=True
    )
    with pytest.raises(RemoteProtocolError) as err:
        pump(client, server)
    assert err.value.reply.endswith(TERMINATE)
    with pytest.raises(RemoteProtocolError):
        client.receive_data(err.value.reply[: -len(TERMINATE)])


def test_unverified_peer_certificate_is_empty() -> None:
    """Without verification the peer certificate is ``{}`` and never passes the CN check."""
    client, server = make_pair()
    pump(client, server)
    assert client.peer_certificate in ({}, None)
    assert not check_allowed_cn(client.peer_certificate, ["anything"])
    assert not check_peer_host(None, "host")


def test_allowed_cn_uses_the_first_cn_only() -> None:
    """TlsAllowedCn compares the first subject CN (X509_NAME_get_text_by_NID)."""
    cert = {"subject": ((("organizationName", "Bareos"),), (("commonName", "a"),), (("commonName", "b"),))}
    assert check_allowed_cn(cert, ["a"])
    assert not check_allowed_cn(cert, ["b"])
    assert check_peer_host(cert, "B")  # the host check looks at every CN


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
