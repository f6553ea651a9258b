"""Stateful fuzzing of a connected client/server pair, sans-IO.

Hypothesis drives a console and our Director through any interleaving of partial deliveries,
garbage, heartbeats, clock steps and closes.  Invariants: no exception but the documented ones,
nothing is emitted after an error, both sides agree once everything is delivered, and every
heartbeat sent on an open channel arrives exactly once.
"""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from bareosproto import (
    LocalProtocolError,
    RemoteProtocolError,
    ResourceType,
    Signal,
    SignalFrame,
    TlsPolicy,
    password_key,
)
from bareosproto import testing as bst
from bareosproto.connection import (
    ClientConnection,
    ConnectionType,
    ConnState,
    Credentials,
    Daemon,
    HandshakeComplete,
    ServerConfig,
    ServerConnection,
)

KEY = password_key("stateful")


def lookup(rtype: ResourceType, name: str) -> Credentials | None:
    if (rtype, name) == (ResourceType.R_CONSOLE, "admin"):
        return Credentials(KEY, TlsPolicy.NONE)
    return None


class Side:
    def __init__(self, conn: ClientConnection | ServerConnection) -> None:
        self.conn = conn
        self.error: RemoteProtocolError | None = None
        self.heartbeats = 0
        self.complete = False

    def feed(self, data: bytes) -> bytes:
        """Feed bytes; return what this side writes in response (its refusal too)."""
        if self.error is not None:
            try:
                self.conn.receive_data(data)
            except RemoteProtocolError as exc:
                assert exc is self.error  # the error is sticky
            else:
                raise AssertionError("a failed connection accepted more input")
            assert self.conn.data_to_send() == b""  # nothing after an error
            return b""
        try:
            events = self.conn.receive_data(data)
        except RemoteProtocolError as exc:
            self.error = exc
            assert self.conn.state is ConnState.FAILED
            assert self.conn.data_to_send() == b""
            return exc.reply
        for ev in events:
            if isinstance(ev, HandshakeComplete):
                assert not self.complete
                self.complete = True
            elif isinstance(ev, SignalFrame) and ev.signal == Signal.BNET_HEARTBEAT:
                self.heartbeats += 1
        return self.conn.data_to_send()


class PairMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.now = 1796030461.0
        clock = lambda: self.now  # noqa: E731
        self.client = Side(ClientConnection(ConnectionType.CONSOLE, name="admin", key=KEY, clock=clock))
        config = ServerConfig(daemon=Daemon.DIRECTOR, name="bareos-dir", lookup=lookup, tls=False)
        self.server = Side(ServerConnection(config, clock=clock))
        self.client.conn.initiate()
        self.to_server = bytearray(self.client.conn.data_to_send())
        self.to_client = bytearray()
        self.garbage = False
        self.closed = False
        self.heartbeats_sent = 0

    @rule(n=st.integers(min_value=1, max_value=200))
    def deliver_to_server(self, n: int) -> None:
        chunk, self.to_server[:] = bytes(self.to_server[:n]), self.to_server[n:]
        if chunk:
            self.to_client += self.server.feed(chunk)

    @rule(n=st.integers(min_value=1, max_value=200))
    def deliver_to_client(self, n: int) -> None:
        chunk, self.to_client[:] = bytes(self.to_client[:n]), self.to_client[n:]
        if chunk:
            self.to_server += self.client.feed(chunk)

    @rule(data=bst.hostile(bst.frame_streams(max_frames=3)), to_server=st.booleans())
    def inject_garbage(self, data: bytes, to_server: bool) -> None:
        if data:
            self.garbage = True
            (self.to_server if to_server else self.to_client).extend(data)

    @precondition(lambda self: self.client.complete and self.client.error is None and not self.closed)
    @rule()
    def heartbeat(self) -> None:
        self.client.conn.send_signal(Signal.BNET_HEARTBEAT)
        self.to_server += self.client.conn.data_to_send()
        self.heartbeats_sent += 1

    @rule(dt=st.floats(min_value=0, max_value=1000))
    def advance_clock(self, dt: float) -> None:
        self.now += dt

    @precondition(lambda self: not self.closed)
    @rule(client_closes=st.booleans())
    def close(self, client_closes: bool) -> None:
        """One side's stream ends: the other sees EOF after the bytes in flight."""
        self.closed = True
        target, pending = (self.server, self.to_server) if client_closes else (self.client, self.to_client)
        data = bytes(pending)
        pending.clear()
        if data:
            target.feed(data)
        target.feed(b"")

    @rule()
    def misuse_is_local(self) -> None:
        """Sending before the handshake is a LocalProtocolError and changes nothing."""
        for side in (self.client, self.server):
            if side.conn.state is not ConnState.OPEN:
                state = side.conn.state
                try:
                    side.conn.send_message(b"too early")
                except LocalProtocolError:
                    pass
                else:
                    raise AssertionError("send before OPEN was accepted")
                assert side.conn.state is state

    @invariant()
    def quiet_pair_agrees(self) -> None:
        """With nothing in flight, no garbage and no close, both sides are OPEN or both still waiting."""
        if self.garbage or self.closed or self.to_server or self.to_client:
            return
        assert self.client.error is None and self.server.error is None
        assert self.client.conn.state is ConnState.OPEN and self.server.conn.state is ConnState.OPEN
        assert self.server.heartbeats == self.heartbeats_sent


PairMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=30, deadline=None)
TestConnectedPair = PairMachine.TestCase
