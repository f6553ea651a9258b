"""Loader for the conformance recordings in ``tests/data`` (see its README.md).

Each ``<scenario>.json`` holds one transcript per TCP connection, recorded
from real Bareos daemons.  This module turns them into small read-only
objects for the tests; it uses no code from ``bareosproto`` so that the
recordings stay an independent reference.
"""

from __future__ import annotations

import base64
import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

__all__ = [
    "DATA",
    "Frame",
    "Connection",
    "Recording",
    "recordings",
    "connections",
    "cleartext_connections",
    "tls_connections",
    "header_bytes",
    "I2A",
    "A2I",
]

#: The copies of ``conformance/``; tests read nothing outside this folder.
DATA = Path(__file__).resolve().parent / "data"

I2A = "i2a"
A2I = "a2i"


def header_bytes(header: int) -> bytes:
    """The 4 wire bytes of a header: signed 32-bit big endian."""
    return header.to_bytes(4, "big", signed=True)


@dataclass(frozen=True)
class Frame:
    """One recorded frame."""

    index: int  #: position in the connection's frame list (both directions)
    dir: str  #: ``"i2a"`` or ``"a2i"``
    t: float
    header: int
    signal: str | None  #: the ``BNET_*`` name for a negative header
    payload: bytes
    truncated: bool  #: heartbeat-clear fd-sd only: payload cut to 64 bytes

    @property
    def is_signal(self) -> bool:
        return self.header < 0

    @property
    def wire(self) -> bytes:
        """Header and payload as they were on the wire (not for truncated frames)."""
        if self.truncated:
            raise ValueError("a truncated frame cannot be put back on the wire")
        return header_bytes(self.header) + self.payload


@dataclass(frozen=True)
class Connection:
    """One recorded TCP connection."""

    scenario: str
    bareos_version: str
    emulated: bool
    id: int
    kind: str
    connection_number: str
    initiator: dict[str, Any]
    acceptor: dict[str, Any]
    secret: dict[str, Any]
    tls: str
    job: str | None
    tls_info: dict[str, Any] | None
    frames: tuple[Frame, ...]
    raw: dict[str, bytes] | None  #: ``{"i2a": ..., "a2i": ...}`` or None if left out
    trailing_bytes: dict[str, int | None]
    closed_by: str

    @property
    def label(self) -> str:
        """A readable test id: ``backup-clear#2-dir-fd``."""
        return f"{self.scenario}#{self.id}-{self.kind}"

    @property
    def is_v25(self) -> bool:
        return self.bareos_version.startswith("25.")

    @property
    def has_truncated_frames(self) -> bool:
        return any(f.truncated for f in self.frames)

    def frames_in(self, direction: str) -> list[Frame]:
        return [f for f in self.frames if f.dir == direction]

    def next_frame(self, after: int, direction: str) -> Frame | None:
        """The first frame in ``direction`` after position ``after``."""
        for f in self.frames[after + 1 :]:
            if f.dir == direction:
                return f
        return None

    def side(self, direction: str) -> dict[str, Any]:
        """The sender of frames going in ``direction``."""
        return self.initiator if direction == I2A else self.acceptor

    def cram_key(self, responder_direction: str) -> str | None:
        """The HMAC key of the side sending the response in ``responder_direction``."""
        if responder_direction == I2A and self.secret.get("initiator_cram_key"):
            return str(self.secret["initiator_cram_key"])
        key = self.secret.get("cram_key")
        return None if key is None else str(key)


@dataclass(frozen=True)
class Recording:
    scenario: str
    bareos_version: str
    emulated: bool
    connections: tuple[Connection, ...]


def _frame(index: int, raw: dict[str, Any]) -> Frame:
    return Frame(
        index=index,
        dir=raw["dir"],
        t=raw["t"],
        header=raw["header"],
        signal=raw["signal"],
        payload=base64.b64decode(raw["payload_b64"]),
        truncated=bool(raw.get("payload_truncated", False)),
    )


def _connection(doc: dict[str, Any], raw: dict[str, Any]) -> Connection:
    streams = None
    if "raw_i2a_b64" in raw:
        streams = {
            I2A: base64.b64decode(raw["raw_i2a_b64"]),
            A2I: base64.b64decode(raw["raw_a2i_b64"]),
        }
    return Connection(
        scenario=doc["scenario"],
        bareos_version=doc["bareos_version"],
        emulated=bool(doc.get("emulated", False)),
        id=raw["id"],
        kind=raw["kind"],
        connection_number=raw["connection_number"],
        initiator=raw["initiator"],
        acceptor=raw["acceptor"],
        secret=raw["secret"],
        tls=raw["tls"],
        job=raw.get("job"),
        tls_info=raw.get("tls_info"),
        frames=tuple(_frame(i, f) for i, f in enumerate(raw["frames"])),
        raw=streams,
        trailing_bytes=raw["trailing_bytes"],
        closed_by=raw["closed_by"],
    )


@functools.cache
def recordings() -> tuple[Recording, ...]:
    """Every ``tests/data/*.json``, sorted by scenario name."""
    out = []
    for path in sorted(DATA.glob("*.json")):
        doc = json.loads(path.read_text(encoding="utf-8"))
        out.append(
            Recording(
                scenario=doc["scenario"],
                bareos_version=doc["bareos_version"],
                emulated=bool(doc.get("emulated", False)),
                connections=tuple(_connection(doc, c) for c in doc["connections"]),
            )
        )
    if not out:
        raise RuntimeError(f"no recordings found in {DATA}")
    return tuple(out)


def connections() -> Iterator[Connection]:
    for rec in recordings():
        yield from rec.connections


def cleartext_connections() -> list[Connection]:
    return [c for c in connections() if c.tls == "none"]


def tls_connections() -> list[Connection]:
    return [c for c in connections() if c.tls != "none"]
