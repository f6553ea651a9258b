"""Taking a recorded daemon's place: given the same nonce and clock, we say exactly what it said.

For every cleartext connection of the recordings, our :class:`ServerConnection` is fed the
recorded initiator's frames and must answer with the recorded acceptor's bytes, up to the end of
the handshake; and our :class:`ClientConnection` is fed the acceptor's frames and must send the
initiator's bytes.  The nonce and the time of our challenge are taken from the recorded one.
"""

from __future__ import annotations

import re

import pytest
from recordings import A2I, I2A, Connection, cleartext_connections

from bareosproto import BAREOS_25, BAREOS_26, FrameDecoder, Message, ResourceType, Secret, TlsPolicy
from bareosproto.connection import (
    ClientConnection,
    ConnectionType,
    Credentials,
    Daemon,
    HandshakeComplete,
    ServerConfig,
    ServerConnection,
)

SERVER = {  # kind -> (daemon, resource type the acceptor looks the initiator up as, greeting frames)
    "console-named": (Daemon.DIRECTOR, ResourceType.R_CONSOLE, 2),
    "fd-dir-client-initiated": (Daemon.DIRECTOR, ResourceType.R_CLIENT, 1),
    "dir-fd": (Daemon.FD, ResourceType.R_DIRECTOR, 1),
    "monitor-fd": (Daemon.FD, ResourceType.R_DIRECTOR, 1),
    "dir-sd": (Daemon.SD, ResourceType.R_DIRECTOR, 1),
    "fd-sd": (Daemon.SD, ResourceType.R_JOB, 0),
    "sd-fd-passive": (Daemon.FD, ResourceType.R_JOB, 0),
}
CLIENT = {
    "console-named": ConnectionType.CONSOLE,
    "fd-dir-client-initiated": ConnectionType.CLIENT_INITIATED,
    "dir-fd": ConnectionType.DIRECTOR_FD,
    "dir-sd": ConnectionType.DIRECTOR_SD,
    "fd-sd": ConnectionType.FD_SD,
    "sd-fd-passive": ConnectionType.SD_FD_PASSIVE,
}
TOKEN = re.compile(rb"auth cram-md5 <(\d+)\.(\d+)@.*> ssl=(\d+)")


def handshake_conns() -> list[Connection]:
    return [c for c in cleartext_connections() if c.kind in SERVER and not c.has_truncated_frames]


def challenge_numbers(conn: Connection, direction: str) -> tuple[int, int, TlsPolicy]:
    """Nonce, time and ssl= of the challenge recorded in ``direction``."""
    for f in conn.frames_in(direction):
        m = TOKEN.match(f.payload)
        if m:
            return int(m.group(1)), int(m.group(2)), TlsPolicy(int(m.group(3)))
    raise AssertionError("no challenge recorded")


def release_of(conn: Connection) -> object:
    return BAREOS_25 if conn.is_v25 else BAREOS_26


def frames_of(data: bytes) -> list[bytes]:
    return [ev.payload for ev in FrameDecoder().receive_data(data) if isinstance(ev, Message)]


@pytest.mark.parametrize("conn", handshake_conns(), ids=lambda c: c.label)
def test_our_server_answers_as_the_recorded_acceptor(conn: Connection) -> None:
    """Fed the initiator's recorded frames, our acceptor writes the recorded acceptor's handshake bytes."""
    daemon, peer_type, greeting_frames = SERVER[conn.kind]
    peer_name = conn.job if peer_type is ResourceType.R_JOB else conn.initiator["name"]
    key = Secret(conn.cram_key(I2A) or "")

    def lookup(rtype: ResourceType, name: str) -> Credentials | None:
        return Credentials(key, TlsPolicy.NONE) if (rtype, name) == (peer_type, peer_name) else None

    nonce, now, ssl = challenge_numbers(conn, A2I)
    # v25-backup-clear: the SD's own Storage resource has TLS enabled (ssl=1), the job does not
    config = ServerConfig(daemon=daemon, name=conn.acceptor["name"], lookup=lookup, own_tls_policy=ssl,
                          release=release_of(conn), tls=False)  # type: ignore[arg-type]
    server = ServerConnection(config, clock=lambda: float(now), nonce=lambda: nonce)
    ours: list[bytes] = []
    done = None
    for frame in conn.frames_in(I2A):
        events = server.receive_data(frame.wire)
        ours += frames_of(server.data_to_send())
        done = next((e for e in events if isinstance(e, HandshakeComplete)), None)
        if done:
            break
    assert done is not None, "handshake did not complete"
    recorded = [f.payload for f in conn.frames_in(A2I)]
    assert len(ours) == 3 + greeting_frames  # challenge, verdict, response, greeting(s)
    assert ours == recorded[: len(ours)]
    assert done.hello.name == peer_name


@pytest.mark.parametrize("conn", [c for c in handshake_conns() if c.kind in CLIENT], ids=lambda c: c.label)
def test_our_client_speaks_as_the_recorded_initiator(conn: Connection) -> None:
    """Fed the acceptor's recorded frames, our connecting side writes the recorded initiator's bytes."""
    nonce, now, ssl = challenge_numbers(conn, I2A)
    client = ClientConnection(
        CLIENT[conn.kind], name=conn.initiator["name"], key=Secret(conn.cram_key(A2I) or ""),
        job=conn.job, release=release_of(conn), tls_policy=ssl, clock=lambda: float(now), nonce=lambda: nonce,  # type: ignore[arg-type]
    )
    client.initiate()
    ours = frames_of(client.data_to_send())
    done = None
    for frame in conn.frames_in(A2I):
        events = client.receive_data(frame.wire)
        ours += frames_of(client.data_to_send())
        done = next((e for e in events if isinstance(e, HandshakeComplete)), None)
        if done:
            break
    assert done is not None
    recorded = [f.payload for f in conn.frames_in(I2A)]
    assert len(ours) == 4
    assert ours == recorded[:4]
