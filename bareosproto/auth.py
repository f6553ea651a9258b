"""Two-way CRAM-MD5 authentication as one state machine per role.

``TwoWayAuthenticate()`` / ``CramMd5Handshake::DoHandshake()`` in upstream:
the side that *accepted* the TCP connection challenges first and then answers
the peer's challenge; the side that *connected* answers first and then
challenges.  Both directions must succeed; the ``ssl=`` values exchanged in
the challenges then go through the TLS policy matrix.

Every transition is in :data:`TRANSITIONS`.  An input with no transition is a
protocol error: :class:`~bareosproto.errors.LocalProtocolError` for a call of
ours (``start()`` twice), :class:`~bareosproto.errors.RemoteProtocolError`
for what the peer sent, carrying the replies and delays Bareos would produce.
"""

from __future__ import annotations

import enum
from typing import Callable

from .cram import (
    AUTH_FAILED,
    AUTH_OK,
    Challenge,
    challenge_name,
    default_nonce,
    is_reflected,
    make_challenge,
    parse_challenge,
    response_payload,
    verify_response,
)
from .errors import DelayedReply, LocalProtocolError, RemoteProtocolError
from .events import AuthSucceeded, ConnectionClosed, Event, Message, SignalFrame
from .frames import encode_message
from .keys import Secret
from .signals import Signal
from .tls_policy import TlsPolicy, select_tls_policy

__all__ = [
    "Role",
    "AuthState",
    "AuthInput",
    "TwoWayAuth",
    "TRANSITIONS",
    "AUTH_TIMEOUT",
    "RESPONSE_TIMEOUT",
    "FAILURE_DELAY",
]

#: The watchdog over the whole two-way authentication (``AUTH_TIMEOUT``), s.
AUTH_TIMEOUT = 600.0
#: How long each side waits for a response or a verdict (``WaitData(180)``), s.
RESPONSE_TIMEOUT = 180.0
#: ``sleep_time_after_authentication_error``, s.
FAILURE_DELAY = 5.0


class Role(enum.Enum):
    """Which end of the TCP connection we are."""

    __hash__ = object.__hash__  # members are singletons: identity hash, no Python-level call

    ACCEPTOR = "acceptor"  #: accepted the connection: challenges first
    CONNECTOR = "connector"  #: connected: answers first, then challenges


class AuthState(enum.Enum):
    __hash__ = object.__hash__  # members are singletons: identity hash, no Python-level call

    IDLE = "idle"
    AWAIT_RESPONSE = "await-response"  #: we challenged
    AWAIT_CHALLENGE = "await-challenge"  #: the peer is to challenge us
    AWAIT_VERDICT = "await-verdict"  #: we answered, ``1000 OK auth`` expected
    DONE = "done"
    FAILED = "failed"


class AuthInput(enum.Enum):
    __hash__ = object.__hash__  # members are singletons: identity hash, no Python-level call

    START = "start"  #: local: ``start()``
    LINE = "line"  #: a frame with a payload
    EMPTY = "empty"  #: a zero-length frame (Bareos' ``recv()`` returns 0)
    SIGNAL = "signal"  #: a negative header
    CLOSED = "closed"  #: end of stream


_R, _S, _I = Role, AuthState, AuthInput

#: ``(role, state, input) -> (action, next state)``; nothing else is allowed.
TRANSITIONS: dict[tuple[Role, AuthState, AuthInput], tuple[str, AuthState]] = {
    (_R.ACCEPTOR, _S.IDLE, _I.START): ("send_challenge", _S.AWAIT_RESPONSE),
    (_R.ACCEPTOR, _S.AWAIT_RESPONSE, _I.LINE): ("check_response", _S.AWAIT_CHALLENGE),
    (_R.ACCEPTOR, _S.AWAIT_CHALLENGE, _I.LINE): ("answer_challenge", _S.AWAIT_VERDICT),
    (_R.ACCEPTOR, _S.AWAIT_VERDICT, _I.LINE): ("check_verdict", _S.DONE),
    (_R.CONNECTOR, _S.IDLE, _I.START): ("nothing", _S.AWAIT_CHALLENGE),
    (_R.CONNECTOR, _S.AWAIT_CHALLENGE, _I.LINE): ("answer_challenge", _S.AWAIT_VERDICT),
    (_R.CONNECTOR, _S.AWAIT_VERDICT, _I.LINE): ("check_verdict_and_challenge", _S.AWAIT_RESPONSE),
    (_R.CONNECTOR, _S.AWAIT_RESPONSE, _I.LINE): ("check_response", _S.DONE),
}


def _classify(event: Event) -> AuthInput:
    if isinstance(event, Message):
        return AuthInput.LINE if event.payload else AuthInput.EMPTY
    if isinstance(event, SignalFrame):
        return AuthInput.SIGNAL
    if isinstance(event, ConnectionClosed):
        return AuthInput.CLOSED
    raise LocalProtocolError(f"not a frame event: {event!r}")


class TwoWayAuth:
    """Sans-IO two-way CRAM-MD5 for one connection.

    ``own_qualified_name`` is what our challenges carry (bashed), e.g.
    ``qualified_name(ResourceType.R_DIRECTOR, "bareos-dir")``; it is also the
    name we refuse to answer (reflection check).  ``local_policy`` is our
    ``ssl=``; ``tls_active`` says the connection already runs inside TLS
    (immediate TLS-PSK), in which case no TLS step follows.  ``clock`` gives
    Unix seconds for the challenge; ``nonce`` the challenge number.

    Use: ``start()``; feed every frame event to ``receive()`` until it returns
    :class:`AuthSucceeded`; send ``data_to_send()`` after each call.  On
    :class:`RemoteProtocolError` send ``error.reply`` (it includes whatever
    this machine still had to send), then each ``error.delayed`` step, and
    close ``error.close_after`` seconds after the last one.
    """

    def __init__(
        self,
        role: Role,
        *,
        own_qualified_name: bytes,
        key: Secret,
        local_policy: TlsPolicy,
        clock: Callable[[], float],
        nonce: Callable[[], int] = default_nonce,
        tls_active: bool = False,
        failure_delay: float = FAILURE_DELAY,
    ) -> None:
        self.role = role
        self.own_qualified_name = own_qualified_name
        self._key = key
        self.local_policy = local_policy
        self.tls_active = tls_active
        self.failure_delay = failure_delay
        self._clock = clock
        self._nonce = nonce
        self.state = AuthState.IDLE
        #: the challenge we sent
        self.our_challenge: Challenge | None = None
        #: the challenge the peer sent us
        self.peer_challenge: Challenge | None = None
        self._outgoing = bytearray()
        self._error: RemoteProtocolError | None = None
        self._seen_input = False

    def __repr__(self) -> str:
        return f"<TwoWayAuth {self.role.value} {self.state.value} {self.own_qualified_name!r}>"

    # -- public API --------------------------------------------------------

    @property
    def remote_policy(self) -> TlsPolicy | int:
        """The peer's ``ssl=`` (``UNKNOWN`` until its challenge arrived or if it had none)."""
        if self.peer_challenge is None:
            return TlsPolicy.UNKNOWN
        return self.peer_challenge.remote_policy

    def start(self) -> None:
        """Begin: the acceptor sends its challenge, the connector waits for one."""
        self._step(AuthInput.START, None)

    def receive(self, event: Event) -> AuthSucceeded | None:
        """Feed one frame event; returns :class:`AuthSucceeded` at the end."""
        kind = _classify(event)
        return self._step(kind, event)

    def data_to_send(self) -> bytes:
        out = bytes(self._outgoing)
        self._outgoing.clear()
        return out

    # -- machinery ---------------------------------------------------------

    def _step(self, kind: AuthInput, event: Event | None) -> AuthSucceeded | None:
        if self._error is not None:
            raise self._error
        try:
            action, next_state = TRANSITIONS[(self.role, self.state, kind)]
        except KeyError:
            if kind is AuthInput.START:
                raise LocalProtocolError(
                    f"start() in state {self.state.value}: already started"
                ) from None
            if self.state in (AuthState.IDLE, AuthState.DONE):
                raise LocalProtocolError(
                    f"receive() in state {self.state.value}: authentication "
                    f"{'not started' if self.state is AuthState.IDLE else 'is over'}"
                ) from None
            self._no_transition(kind, event)
        if kind is not AuthInput.START:
            self._seen_input = True
        payload = event.payload if isinstance(event, Message) else b""
        getattr(self, "_do_" + action)(payload)
        self.state = next_state
        if next_state is AuthState.DONE:
            return self._finish()
        return None

    def _send(self, line: bytes) -> None:
        self._outgoing += encode_message(line)

    def _fail(
        self,
        message: str,
        now: bytes = b"",
        later: bool = True,
        close_after: float | None = None,
    ) -> None:
        """Move to FAILED and raise.  ``now`` is sent at once; if ``later``,
        ``TwoWayAuthenticate()``'s own ``1999`` follows after one delay."""
        d = self.failure_delay
        delayed = (DelayedReply(d, encode_message(AUTH_FAILED)),) if later else ()
        reply = bytes(self._outgoing) + now
        self._outgoing.clear()
        self.state = AuthState.FAILED
        self._error = RemoteProtocolError(
            message,
            reply=reply,
            delayed=delayed,
            close_after=d if close_after is None else close_after,
        )
        raise self._error

    def _no_transition(self, kind: AuthInput, event: Event | None) -> None:
        if kind is AuthInput.CLOSED:
            # recv() <= 0 like any network error: a half-closed peer still gets
            # TwoWayAuthenticate()'s 1999 after the delay.
            self._fail("connection closed during authentication")
        if kind is AuthInput.SIGNAL and not self._seen_input:
            assert isinstance(event, SignalFrame)
            if event.signal == Signal.BNET_TERMINATE:
                # ConnectionReceivedTerminateSignal(): fail, send nothing.
                self._fail(
                    "TwoWayAuthenticate failed, because connection was reset by destination peer.",
                    later=False,
                    close_after=0.0,
                )
        what = repr(event)
        # Bareos' recv() <= 0: "Network error during CRAM MD5": sleep, then 1999.
        self._fail(f"Network error during CRAM MD5: got {what} in state {self.state.value}")

    # -- actions -----------------------------------------------------------

    def _do_nothing(self, payload: bytes) -> None:
        pass

    def _do_send_challenge(self, payload: bytes) -> None:
        self.our_challenge = make_challenge(
            self.own_qualified_name, self.local_policy, int(self._clock()), self._nonce
        )
        self._send(self.our_challenge.to_line())

    def _do_check_response(self, payload: bytes) -> None:
        assert self.our_challenge is not None
        # The acceptor's challenge runs with compatible_ still true: it takes
        # standard base64 too; the connector's only after a cram-md5c.
        accept_standard = self.role is Role.ACCEPTOR or (
            self.peer_challenge is not None and self.peer_challenge.standard_base64
        )
        if not verify_response(self._key, self.our_challenge.token, payload, accept_standard):
            self._fail("Authorization key rejected by peer", now=encode_message(AUTH_FAILED))
        self._send(AUTH_OK)

    def _do_answer_challenge(self, payload: bytes) -> None:
        try:
            challenge = parse_challenge(payload)
        except RemoteProtocolError as exc:
            self._fail(f"Wrong format of the CRAM challenge: {exc.message}", now=exc.reply)
        if challenge_name(challenge.token) is None:
            self._fail(
                f"Wrong format of the CRAM challenge token {challenge.token[:100]!r}",
                now=encode_message(AUTH_FAILED),
                later=False,
            )
        if is_reflected(challenge.token, self.own_qualified_name):
            self._fail(
                "Warning! Attack detected: I will not answer to my own challenge.",
                now=encode_message(AUTH_FAILED),
                later=False,
            )
        self.peer_challenge = challenge
        self._send(response_payload(self._key, challenge))

    def _do_check_verdict(self, payload: bytes) -> None:
        nul = payload.find(b"\x00")
        if (payload[:nul] if nul >= 0 else payload) != AUTH_OK:
            self._fail(f"Authorization key rejected by peer: {payload[:100]!r}")

    def _do_check_verdict_and_challenge(self, payload: bytes) -> None:
        self._do_check_verdict(payload)
        self._do_send_challenge(payload)

    def _finish(self) -> AuthSucceeded:
        if self.tls_active:
            return AuthSucceeded(self.remote_policy, TlsPolicy.NONE)
        decision = select_tls_policy(self.remote_policy, self.local_policy)
        if decision is TlsPolicy.DENY:
            self._fail(
                f"Tls handshake failed: peer policy {int(self.remote_policy)}, "
                f"ours {int(self.local_policy)}",
                later=False,
                close_after=0.0,
            )
        return AuthSucceeded(self.remote_policy, decision)
