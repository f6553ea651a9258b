"""The two-way CRAM-MD5 state machine, both roles, against each other and against scripted peers."""

from __future__ import annotations

import itertools

import pytest

from bareosproto import (
    AuthState,
    AuthSucceeded,
    ConnectionClosed,
    FrameDecoder,
    LocalProtocolError,
    Message,
    RemoteProtocolError,
    ResourceType,
    Role,
    Signal,
    SignalFrame,
    TlsPolicy,
    TwoWayAuth,
    encode_message,
    password_key,
    qualified_name,
)
from bareosproto.auth import TRANSITIONS, AuthInput
from bareosproto.bareos_base64 import encode as b64encode
from bareosproto.cram import AUTH_FAILED, AUTH_OK, compute_response

DIR = qualified_name(ResourceType.R_DIRECTOR, "bareos-dir")
CONSOLE = qualified_name(ResourceType.R_CONSOLE, "admin user")
NOW = 1796030461.0


def make(role: Role, name: bytes, password: str = "pw", policy: TlsPolicy = TlsPolicy.NONE,
         nonce: int = 1234, **kw: object) -> TwoWayAuth:
    return TwoWayAuth(role, own_qualified_name=name, key=password_key(password),
                      local_policy=policy, clock=lambda: NOW, nonce=lambda: nonce, **kw)  # type: ignore[arg-type]


def run_pair(acceptor: TwoWayAuth, connector: TwoWayAuth) -> tuple[object, object, list[tuple[str, bytes]]]:
    """Shuttle frames between two machines until both are quiet; return the outcomes and the wire log.

    A side that fails still delivers what Bareos sends at once (``error.reply``) to the other side.
    """
    results: dict[str, object] = {}
    log: list[tuple[str, bytes]] = []
    decoders = {"a": FrameDecoder(), "c": FrameDecoder()}
    pending = {"a": b"", "c": b""}  # bytes on their way to a / to c
    acceptor.start()
    connector.start()
    machines = {"a": acceptor, "c": connector}
    for _ in range(20):
        for me, other in (("a", "c"), ("c", "a")):
            if not isinstance(results.get(me), RemoteProtocolError):
                pending[other] += machines[me].data_to_send()
        if not pending["a"] and not pending["c"]:
            break
        for name in ("c", "a"):
            data, pending[name] = pending[name], b""
            if not data or name in results:
                continue
            for ev in decoders[name].receive_data(data):
                assert isinstance(ev, Message)
                log.append((name, ev.payload))
                if name in results:
                    continue
                try:
                    out = machines[name].receive(ev)
                except RemoteProtocolError as exc:
                    results[name] = exc
                    pending["c" if name == "a" else "a"] += exc.reply
                    continue
                if out is not None:
                    results[name] = out
    return results.get("a"), results.get("c"), log


def test_both_roles_succeed_with_the_same_key() -> None:
    """Acceptor challenges first, connector answers, then the reverse; both end with AuthSucceeded."""
    a, c, log = run_pair(make(Role.ACCEPTOR, DIR), make(Role.CONNECTOR, CONSOLE))
    assert isinstance(a, AuthSucceeded) and isinstance(c, AuthSucceeded)
    assert [who for who, _ in log] == ["c", "a", "c", "a", "c", "a"]
    assert log[0][1] == b"auth cram-md5 <1234.1796030461@R_DIRECTOR::bareos-dir> ssl=0\n"
    assert log[1][1].endswith(b"\x00") and len(log[1][1]) == 23
    assert log[2][1] == AUTH_OK
    assert log[3][1] == b"auth cram-md5 <1234.1796030461@R_CONSOLE::admin\x01user> ssl=0\n"
    assert log[5][1] == AUTH_OK


def test_wrong_key_is_refused_with_1999_and_a_delayed_second_1999() -> None:
    """A bad response gets `1999 Authorization failed.` at once, another after the failure delay."""
    acceptor = make(Role.ACCEPTOR, DIR, "right")
    a, c, _ = run_pair(acceptor, make(Role.CONNECTOR, CONSOLE, "wrong"))
    assert isinstance(a, RemoteProtocolError)
    assert a.reply == encode_message(AUTH_FAILED)
    assert [(d.after, d.data) for d in a.delayed] == [(5.0, encode_message(AUTH_FAILED))]
    assert acceptor.state is AuthState.FAILED
    # the connector saw the verdict and fails too, sending its 1999 only after the delay
    assert isinstance(c, RemoteProtocolError)
    assert c.reply == b"" and c.delayed[0].data == encode_message(AUTH_FAILED)


def test_failure_delay_is_configurable() -> None:
    """The sleeps Bareos makes after a failed authentication are a parameter."""
    a, _, _ = run_pair(make(Role.ACCEPTOR, DIR, "x", failure_delay=0.25), make(Role.CONNECTOR, CONSOLE, "y"))
    assert isinstance(a, RemoteProtocolError) and a.delayed[0].after == 0.25 and a.close_after == 0.25


def test_own_name_in_challenge_is_refused() -> None:
    """A challenge carrying the responder's own qualified name is not answered (CVE-2020-4042)."""
    conn = make(Role.CONNECTOR, DIR)
    conn.start()
    with pytest.raises(RemoteProtocolError) as info:
        conn.receive(Message(b"auth cram-md5 <1.2@R_DIRECTOR::bareos-dir> ssl=0\n"))
    assert "Attack detected" in info.value.message
    assert info.value.reply == encode_message(AUTH_FAILED)
    assert conn.data_to_send() == b""


def test_own_name_is_answered_when_it_is_a_storage() -> None:
    """An SD may talk to itself (copy jobs): R_STORAGE tokens pass the reflection check."""
    sd = qualified_name(ResourceType.R_STORAGE, "sd")
    conn = make(Role.CONNECTOR, sd)
    conn.start()
    assert conn.receive(Message(b"auth cram-md5 <1.2@R_STORAGE::sd> ssl=0\n")) is None
    assert len(conn.data_to_send()) == 4 + 23


def test_acceptor_takes_standard_base64_connector_does_not() -> None:
    """Only the side that challenged first also accepts a standard-base64 response."""
    key = password_key("pw")
    acceptor = make(Role.ACCEPTOR, DIR)
    acceptor.start()
    token = acceptor.data_to_send()[4:].split(b" ")[2]
    assert acceptor.receive(Message(compute_response(key, token, standard=True))) is None
    assert acceptor.data_to_send() == encode_message(AUTH_OK)

    connector = make(Role.CONNECTOR, CONSOLE)
    connector.start()
    connector.receive(Message(b"auth cram-md5 <9.9@R_DIRECTOR::bareos-dir> ssl=0\n"))
    connector.data_to_send()
    connector.receive(Message(AUTH_OK))
    token = connector.data_to_send()[4:].split(b" ")[2]
    standard = compute_response(key, token, standard=True)
    assert standard != compute_response(key, token, standard=False)
    with pytest.raises(RemoteProtocolError):
        connector.receive(Message(standard))


def test_cram_md5c_challenge_is_answered_in_standard_base64() -> None:
    """`auth cram-md5c` asks for a standard-base64 response."""
    conn = make(Role.CONNECTOR, CONSOLE)
    conn.start()
    conn.receive(Message(b"auth cram-md5c <7.7@R_DIRECTOR::d> ssl=1\n"))
    sent = conn.data_to_send()[4:]
    assert sent == compute_response(password_key("pw"), b"<7.7@R_DIRECTOR::d>", standard=True) + b"\x00"


def test_response_without_nul_is_accepted() -> None:
    """python-bareos sends 22 characters without the NUL; Bareos compares C strings, so it passes."""
    acceptor = make(Role.ACCEPTOR, DIR)
    acceptor.start()
    token = acceptor.data_to_send()[4:].split(b" ")[2]
    assert acceptor.receive(Message(compute_response(password_key("pw"), token))) is None


def test_response_with_newline_is_refused() -> None:
    """A response with a trailing newline fails (verified against bareos-fd)."""
    acceptor = make(Role.ACCEPTOR, DIR)
    acceptor.start()
    token = acceptor.data_to_send()[4:].split(b" ")[2]
    with pytest.raises(RemoteProtocolError):
        acceptor.receive(Message(compute_response(password_key("pw"), token) + b"\n"))


@pytest.mark.parametrize("line", [
    b"auth md5 <1.2@x> ssl=0\n", b"hello", b"auth cram-md", b"\x00auth cram-md5 <1.2@x> ssl=0\n",
])
def test_unparsable_challenge_gets_1999_now_and_later(line: bytes) -> None:
    """A challenge line Bareos cannot scan is answered with 1999 at once and again after the delay."""
    conn = make(Role.CONNECTOR, CONSOLE)
    conn.start()
    with pytest.raises(RemoteProtocolError) as info:
        conn.receive(Message(line))
    assert info.value.reply == encode_message(AUTH_FAILED)
    assert info.value.delayed[0].data == encode_message(AUTH_FAILED)


@pytest.mark.parametrize("line", [b"auth cram-md5 garbage ssl=0\n", b"auth cram-md5", b"auth cram-md5 <x.1@a> ssl=1\n"])
def test_challenge_token_that_does_not_scan_is_refused(line: bytes) -> None:
    """A token that is not `<n.t@name>` is a format mismatch: one 1999, no response."""
    conn = make(Role.CONNECTOR, CONSOLE)
    conn.start()
    with pytest.raises(RemoteProtocolError) as info:
        conn.receive(Message(line))
    assert info.value.reply == encode_message(AUTH_FAILED) and info.value.delayed == ()


def test_terminate_before_authentication_sends_nothing() -> None:
    """A peer whose first frame is BNET_TERMINATE reset the connection: fail without a reply."""
    conn = make(Role.CONNECTOR, CONSOLE)
    conn.start()
    with pytest.raises(RemoteProtocolError) as info:
        conn.receive(SignalFrame(Signal.BNET_TERMINATE))
    assert "reset by destination peer" in info.value.message
    assert info.value.reply == b"" and info.value.delayed == ()


@pytest.mark.parametrize("event", [SignalFrame(Signal.BNET_HEARTBEAT), Message(b""), SignalFrame(-99)])
def test_signal_or_empty_frame_during_auth_is_a_network_error(event: object) -> None:
    """Bareos' recv() <= 0 during CRAM-MD5: sleep, then 1999."""
    acceptor = make(Role.ACCEPTOR, DIR)
    acceptor.start()
    acceptor.data_to_send()
    with pytest.raises(RemoteProtocolError) as info:
        acceptor.receive(event)  # type: ignore[arg-type]
    assert "Network error" in info.value.message
    assert info.value.reply == b"" and info.value.delayed[0].data == encode_message(AUTH_FAILED)


def test_eof_during_auth_is_a_network_error() -> None:
    """The peer ending its stream mid-handshake fails the authentication like any network error:
    a half-closed peer still gets the 1999 after the delay."""
    acceptor = make(Role.ACCEPTOR, DIR)
    acceptor.start()
    acceptor.data_to_send()
    with pytest.raises(RemoteProtocolError) as info:
        acceptor.receive(ConnectionClosed())
    assert "closed" in info.value.message and info.value.reply == b""
    assert [(d.after, d.data) for d in info.value.delayed] == [(5.0, encode_message(AUTH_FAILED))]


def test_verdict_other_than_1000_ok_auth_fails() -> None:
    """Only the exact bytes `1000 OK auth\\n` are a success verdict."""
    conn = make(Role.CONNECTOR, CONSOLE)
    conn.start()
    conn.receive(Message(b"auth cram-md5 <1.2@R_DIRECTOR::d> ssl=0\n"))
    with pytest.raises(RemoteProtocolError):
        conn.receive(Message(b"1000 OK auth"))


def test_error_is_sticky() -> None:
    """After a failure every further input raises the same error."""
    acceptor = make(Role.ACCEPTOR, DIR)
    acceptor.start()
    with pytest.raises(RemoteProtocolError) as first:
        acceptor.receive(Message(b"nonsense"))
    with pytest.raises(RemoteProtocolError) as second:
        acceptor.receive(Message(b"more"))
    assert second.value is first.value


def test_local_misuse_raises_local_protocol_error() -> None:
    """start() twice, or receive() before start(), is our caller's mistake."""
    acceptor = make(Role.ACCEPTOR, DIR)
    with pytest.raises(LocalProtocolError):
        acceptor.receive(Message(b"x"))
    acceptor.start()
    with pytest.raises(LocalProtocolError):
        acceptor.start()


def test_every_state_input_pair_transitions_or_raises() -> None:
    """Exhaustive: each (role, state, input) either has a table entry or raises a protocol error."""
    samples = {
        AuthInput.LINE: Message(b"line"),
        AuthInput.EMPTY: Message(b""),
        AuthInput.SIGNAL: SignalFrame(Signal.BNET_EOD),
        AuthInput.CLOSED: ConnectionClosed(),
    }
    paths = {  # inputs that lead a fresh machine into each state
        (Role.ACCEPTOR, AuthState.IDLE): [],
        (Role.ACCEPTOR, AuthState.AWAIT_RESPONSE): ["start"],
        (Role.CONNECTOR, AuthState.IDLE): [],
        (Role.CONNECTOR, AuthState.AWAIT_CHALLENGE): ["start"],
        (Role.CONNECTOR, AuthState.AWAIT_VERDICT): ["start", b"auth cram-md5 <1.2@R_DIRECTOR::d> ssl=0\n"],
    }
    checked = 0
    for (role, state), path in paths.items():
        for kind in AuthInput:
            machine = make(role, CONSOLE if role is Role.CONNECTOR else DIR)
            for step in path:
                machine.start() if step == "start" else machine.receive(Message(step))  # type: ignore[arg-type]
            assert machine.state is state
            entry = TRANSITIONS.get((role, state, kind))
            try:
                machine.start() if kind is AuthInput.START else machine.receive(samples[kind])
            except (LocalProtocolError, RemoteProtocolError):
                assert machine.state in (AuthState.FAILED, state)
            else:
                assert entry is not None, (role, state, kind)
                assert machine.state is entry[1]
            checked += 1
    assert checked == len(paths) * len(AuthInput)


@pytest.mark.parametrize("remote, local, outcome", [
    (TlsPolicy.NONE, TlsPolicy.NONE, TlsPolicy.NONE),
    (TlsPolicy.NONE, TlsPolicy.ENABLED, TlsPolicy.NONE),
    (TlsPolicy.ENABLED, TlsPolicy.NONE, TlsPolicy.NONE),
    (TlsPolicy.ENABLED, TlsPolicy.ENABLED, TlsPolicy.ENABLED),
    (TlsPolicy.ENABLED, TlsPolicy.REQUIRED, TlsPolicy.ENABLED),
    (TlsPolicy.REQUIRED, TlsPolicy.ENABLED, TlsPolicy.ENABLED),
    (TlsPolicy.REQUIRED, TlsPolicy.REQUIRED, TlsPolicy.ENABLED),
    (TlsPolicy.AUTO, TlsPolicy.NONE, TlsPolicy.AUTO),
])
def test_tls_decision_after_cram(remote: TlsPolicy, local: TlsPolicy, outcome: TlsPolicy) -> None:
    """After CRAM-MD5 the policy matrix of PROTOCOL.md 6.6 decides on TLS."""
    acceptor = make(Role.ACCEPTOR, DIR, policy=local)
    a, c, _ = run_pair(acceptor, make(Role.CONNECTOR, CONSOLE, policy=remote))
    assert isinstance(a, AuthSucceeded) and a.tls is outcome and a.remote_policy == remote


@pytest.mark.parametrize("remote, local", [(TlsPolicy.NONE, TlsPolicy.REQUIRED), (TlsPolicy.REQUIRED, TlsPolicy.NONE)])
def test_tls_policy_deny_fails_after_cram(remote: TlsPolicy, local: TlsPolicy) -> None:
    """none against required is refused once both directions authenticated."""
    a, _, _ = run_pair(make(Role.ACCEPTOR, DIR, policy=local), make(Role.CONNECTOR, CONSOLE, policy=remote))
    assert isinstance(a, RemoteProtocolError) and "Tls handshake failed" in a.message


def test_no_tls_step_inside_immediate_tls() -> None:
    """Inside immediate TLS-PSK the ssl= values are informational: no second TLS step."""
    a, c, _ = run_pair(make(Role.ACCEPTOR, DIR, policy=TlsPolicy.REQUIRED, tls_active=True),
                       make(Role.CONNECTOR, CONSOLE, policy=TlsPolicy.REQUIRED, tls_active=True))
    assert isinstance(a, AuthSucceeded) and a.tls is TlsPolicy.NONE and a.remote_policy is TlsPolicy.REQUIRED


def test_challenge_without_ssl_leaves_remote_policy_unknown() -> None:
    """`auth cram-md5 <token>` without ssl= makes the remote policy 0xFE, which means TLS."""
    conn = make(Role.CONNECTOR, CONSOLE)
    conn.start()
    conn.receive(Message(b"auth cram-md5 <1.2@R_DIRECTOR::d>\n"))
    assert conn.remote_policy is TlsPolicy.UNKNOWN


def test_secret_never_in_repr_or_errors() -> None:
    """The key appears in no repr and no error text."""
    key = password_key("topsecret").reveal().decode()
    acceptor = make(Role.ACCEPTOR, DIR, "topsecret")
    acceptor.start()
    with pytest.raises(RemoteProtocolError) as info:
        acceptor.receive(Message(b"x" * 22))
    for text in (repr(acceptor), str(info.value), repr(info.value), repr(vars(acceptor))):
        assert key not in text and "topsecret" not in text


def test_nonce_and_clock_are_injected() -> None:
    """The challenge number and time come from the injected callables."""
    numbers = itertools.count(41)
    machine = TwoWayAuth(Role.ACCEPTOR, own_qualified_name=DIR, key=password_key("p"),
                         local_policy=TlsPolicy.REQUIRED, clock=lambda: 17.9, nonce=lambda: next(numbers))
    machine.start()
    assert machine.data_to_send()[4:] == b"auth cram-md5 <41.17@R_DIRECTOR::bareos-dir> ssl=2\n"
    assert b64encode(b"") == b""
