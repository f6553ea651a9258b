"""``bareosproto-transcript``: decode captured Bareos traffic.

Reads a pcap or pcapng file (with dpkt), reassembles every TCP connection by
sequence number (retransmissions and out-of-order segments included), splits
each cleartext direction into Bareos frames with
:class:`bareosproto.FrameDecoder`, and recognises the handshake: the Hello
(:func:`bareosproto.parse_hello` / :func:`bareosproto.detect_peer`), the
CRAM-MD5 challenges (:func:`bareosproto.cram.parse_challenge`), responses and
verdicts, and the greeting (:func:`bareosproto.parse_greeting`).  TLS
connections are recognised by their first bytes; the PSK identity is read
from the ClientHello's ``pre_shared_key`` extension.

Secrets are masked unless ``--show-secrets``: CRAM-MD5 responses and every
``Authorization=<session key>`` value.  The text output shows them as
``***``; the JSON output replaces each masked byte by ``*`` so that headers,
payload lengths and the raw streams stay consistent.

Outputs: readable text (default), ``--json`` in the format of the conformance
recordings (``conformance/README.md``), ``--mermaid`` (a sequence diagram,
one arrow per frame).  ``--raw FILE --direction i2a|a2i`` decodes one raw
byte stream instead of a capture.
"""

from __future__ import annotations

import argparse
import base64
import bisect
import json
import re
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import dpkt  # type: ignore[import-untyped]

from .. import (
    DirectorGreeting,
    FdHelloOk,
    FrameDecoder,
    Hello,
    HelloKind,
    Message,
    RemoteProtocolError,
    ResponseMessage,
    SdHelloOk,
    SignalFrame,
    detect_peer,
    parse_greeting,
    parse_hello,
    parse_psk_identity,
    unbash,
)
from ..cram import AUTH_FAILED, AUTH_OK, Challenge, challenge_name, parse_challenge
from ..names import USER_AGENT
from ..replies import DIRECTOR_NOT_AUTHORIZED, FD_AUTH_FAILED, SD_NO_GO, GreetingForm
from ..signals import signal_name

__all__ = [
    "main",
    "Frame",
    "Connection",
    "Transcript",
    "read_capture",
    "decode_raw",
    "to_json",
    "to_text",
    "to_mermaid",
    "is_text",
    "tls_info",
    "tls_records",
]

I2A, A2I = "i2a", "a2i"
_OTHER = {I2A: A2I, A2I: I2A}
_U32 = 0xFFFFFFFF

#: Listening ports of a default installation, used when nothing in the
#: capture says which daemon listens on a port.
DEFAULT_PORTS = {9101: "director", 9102: "fd", 9103: "sd"}

#: kind -> (initiator role, acceptor role, connection number of PROTOCOL.md section 7)
KINDS: dict[str, tuple[str, str, str]] = {
    "console-named": ("console", "director", "1"),
    "console-default": ("console", "director", "2"),
    "dir-fd": ("director", "fd", "3"),
    "fd-dir-client-initiated": ("fd", "director", "4"),
    "dir-sd": ("director", "sd", "5a"),
    "fd-sd": ("fd", "sd", "6"),
    "sd-fd-passive": ("sd", "fd", "7"),
    "sd-sd": ("sd", "sd", "8"),
    "monitor-dir": ("monitor", "director", "9"),
    "monitor-fd": ("monitor", "fd", "10"),
    "monitor-sd": ("monitor", "sd", "11"),
}

_ROLE_OF_TYPE = {
    "R_DIRECTOR": "director",
    "R_CLIENT": "fd",
    "R_STORAGE": "sd",
    "R_CONSOLE": "console",
    "R_MONITOR": "monitor",
}

_TLS_VERSIONS = {0x0304: "TLSv1.3", 0x0303: "TLSv1.2", 0x0302: "TLSv1.1", 0x0301: "TLSv1", 0x0300: "SSLv3"}

_TEXT_BYTES = frozenset(range(0x20, 0x7F)) | {0x09, 0x0A, 0x0D, 0x01, 0x1E}

_AUTHORIZATION = re.compile(rb"Authorization=([^\s\x00]+)")
_JOB_NAME = re.compile(rb"\b[Jj]ob=([^\s\x00\"]+)")


def is_text(payload: bytes) -> bool:
    """The recordings' text rule: printable ASCII, TAB, CR, LF, 0x01 and 0x1E,
    and at most one trailing NUL."""
    body = payload[:-1] if payload.endswith(b"\x00") else payload
    return all(b in _TEXT_BYTES for b in body)


# ---------------------------------------------------------------------------
# model
# ---------------------------------------------------------------------------


@dataclass
class Frame:
    """One decoded frame of one direction."""

    dir: str
    offset: int  #: stream offset of its header
    header: int
    payload: bytes  #: as on the wire (secrets not masked)
    time: float | None  #: capture time of the segment that carried the first byte
    packet: int  #: capture index of that segment (raw streams: the frame number)
    step: str = "data"  #: hello, challenge, response, verdict, greeting, info, refusal, signal, data
    note: str = ""
    masks: list[tuple[int, int]] = field(default_factory=list)  #: secret byte ranges of the payload

    @property
    def signal(self) -> str | None:
        return signal_name(self.header) if self.header < 0 else None

    @property
    def length(self) -> int:
        return 4 + len(self.payload)


@dataclass
class Endpoint:
    host: str
    port: int | None
    role: str | None = None
    name: str | None = None

    def label(self) -> str:
        who = " ".join(x for x in (self.role, self.name) if x) or "peer"
        return f"{who} {self.address()}"

    def address(self) -> str:
        if self.port is None:
            return self.host
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass
class Connection:
    """One TCP connection (or one raw stream) and what was recognised in it."""

    id: int
    initiator: Endpoint
    acceptor: Endpoint
    streams: dict[str, bytes]
    start: float | None  #: time of the SYN (or of the first packet seen)
    end: float | None  #: time of the last segment that carried data, a SYN or a FIN
    syn_seen: bool = True
    closed_by: str = "unknown"
    frames: list[Frame] = field(default_factory=list)
    trailing: dict[str, int | None] = field(default_factory=lambda: {I2A: 0, A2I: 0})
    tls: str = "none"
    tls_info: dict[str, Any] | None = None
    kind: str | None = None
    job: str | None = None
    hello: Hello | None = None
    session_key: str | None = None
    notes: list[str] = field(default_factory=list)
    #: (type, name) of the qualified names in each side's challenge
    challenger: dict[str, tuple[str | None, str]] = field(default_factory=dict)
    greeting: object | None = None
    version: str | None = None
    #: per direction, (stream offset, packet index, time) of each segment that added bytes
    _owners: dict[str, list[tuple[int, int, float]]] = field(default_factory=dict)

    @property
    def duration(self) -> float | None:
        if self.start is None or self.end is None:
            return None
        return round(self.end - self.start, 3)

    def masked_stream(self, direction: str) -> bytes:
        data = bytearray(self.streams[direction])
        for f in self.frames:
            if f.dir != direction:
                continue
            for a, b in f.masks:
                data[f.offset + 4 + a : f.offset + 4 + b] = b"*" * (b - a)
        return bytes(data)


@dataclass
class Transcript:
    source: str
    connections: list[Connection]
    packets: int = 0
    notes: list[str] = field(default_factory=list)
    show_secrets: bool = False
    raw: bool = False


# ---------------------------------------------------------------------------
# capture reading: dpkt for the file and the packet layers
# ---------------------------------------------------------------------------


@dataclass
class _Segment:
    index: int
    ts: float
    src: tuple[str, int]
    dst: tuple[str, int]
    seq: int
    ack: int
    flags: int
    payload: bytes


def _ip_layer(linktype: int, buf: bytes) -> Any:
    if linktype == dpkt.pcap.DLT_EN10MB:
        return dpkt.ethernet.Ethernet(buf).data
    if linktype == dpkt.pcap.DLT_LINUX_SLL:
        return dpkt.sll.SLL(buf).data
    if linktype == 276:  # DLT_LINUX_SLL2
        return dpkt.sll2.SLL2(buf).data
    if linktype in (dpkt.pcap.DLT_NULL, dpkt.pcap.DLT_LOOP):
        buf = buf[4:]
    elif linktype not in (dpkt.pcap.DLT_RAW, 12, 14, 228, 229):
        raise ValueError(f"unsupported link type {linktype}")
    if buf and buf[0] >> 4 == 6:
        return dpkt.ip6.IP6(buf)
    return dpkt.ip.IP(buf)


def _open_reader(fh: Any) -> Any:
    magic = fh.read(4)
    fh.seek(0)
    if magic == b"\x0a\x0d\x0d\x0a":
        return dpkt.pcapng.Reader(fh)
    return dpkt.pcap.Reader(fh)


def _segments(path: Path, notes: list[str]) -> tuple[list[_Segment], int]:
    out: list[_Segment] = []
    count = skipped = truncated = 0
    with open(path, "rb") as fh:
        reader = _open_reader(fh)
        linktype = int(reader.datalink())
        for index, (ts, buf) in enumerate(reader):
            count += 1
            try:
                ip = _ip_layer(linktype, bytes(buf))
            except (dpkt.UnpackError, ValueError, IndexError) as exc:
                if isinstance(exc, ValueError) and "link type" in str(exc):
                    raise
                skipped += 1
                continue
            if isinstance(ip, dpkt.ip.IP):
                family, src, dst = socket.AF_INET, ip.src, ip.dst
                expected = int(ip.len) - 4 * int(ip.hl)
            elif isinstance(ip, dpkt.ip6.IP6):
                family, src, dst = socket.AF_INET6, ip.src, ip.dst
                expected = int(ip.plen)
            else:
                skipped += 1
                continue
            tcp = ip.data
            if not isinstance(tcp, dpkt.tcp.TCP):
                skipped += 1
                continue
            payload = bytes(tcp.data)
            if isinstance(ip, dpkt.ip.IP) and len(payload) < expected - 4 * int(tcp.off):
                truncated += 1
            out.append(
                _Segment(
                    index,
                    float(ts),
                    (socket.inet_ntop(family, bytes(src)), int(tcp.sport)),
                    (socket.inet_ntop(family, bytes(dst)), int(tcp.dport)),
                    int(tcp.seq),
                    int(tcp.ack),
                    int(tcp.flags),
                    payload,
                )
            )
    if skipped:
        notes.append(f"{skipped} packets were not TCP over IP (or could not be decoded) and were skipped")
    if truncated:
        notes.append(f"{truncated} packets were cut by the capture's snap length: their streams have gaps")
    return out, count


class _Side:
    """One direction of a TCP connection, reassembled by sequence number."""

    def __init__(self, endpoint: tuple[str, int]) -> None:
        self.endpoint = endpoint
        self.isn: int | None = None
        self.base: int | None = None
        self.stream = bytearray()
        self.owners: list[tuple[int, int, float]] = []  # (offset, packet index, time)
        self.pending: dict[int, tuple[bytes, int, float]] = {}
        self.duplicate_bytes = 0
        self.fin: _Segment | None = None
        self.rst: _Segment | None = None
        self.syn: _Segment | None = None

    def add(self, seg: _Segment) -> None:
        if seg.flags & dpkt.tcp.TH_SYN:
            if self.isn is None and self.base is None:
                self.isn = seg.seq
                self.base = (seg.seq + 1) & _U32
                self.syn = seg
        data = seg.payload
        seq = seg.seq + (1 if seg.flags & dpkt.tcp.TH_SYN else 0)
        if self.base is None:
            self.base = seq & _U32
        if seg.flags & dpkt.tcp.TH_FIN and self.fin is None:
            self.fin = seg
        if seg.flags & dpkt.tcp.TH_RST and self.rst is None:
            self.rst = seg
        if not data:
            return
        rel = (seq - self.base) & _U32
        if rel >= 1 << 31:  # before the start of the stream: keep only what follows it
            skip = (1 << 32) - rel
            if skip >= len(data):
                self.duplicate_bytes += len(data)
                return
            data, rel = data[skip:], 0
        if rel == len(self.stream) and not self.pending:
            self.owners.append((rel, seg.index, seg.ts))
            self.stream += data
            return
        old = self.pending.get(rel)
        if old is None or len(old[0]) < len(data):
            self.pending[rel] = (data, seg.index, seg.ts)
        self._drain()

    def _drain(self) -> None:
        while self.pending:
            rel = min(self.pending)
            have = len(self.stream)
            if rel > have:
                return
            data, index, ts = self.pending.pop(rel)
            end = rel + len(data)
            if end <= have:
                self.duplicate_bytes += len(data)
                continue
            self.duplicate_bytes += have - rel
            self.owners.append((have, index, ts))
            self.stream += data[have - rel :]

    @property
    def gap(self) -> tuple[int, int] | None:
        """(offset, size) of the first hole, if data after it was captured."""
        if not self.pending:
            return None
        rel = min(self.pending)
        return len(self.stream), rel - len(self.stream)


class _Conv:
    def __init__(self, first: _Segment) -> None:
        self.sides: dict[tuple[str, int], _Side] = {}
        self.initiator: tuple[str, int] | None = None
        self.syn_ts: float | None = None
        self.first_ts = first.ts
        self.first_index = first.index
        self.last_ts = first.ts
        #: the last segment that carried data, a SYN or a FIN
        self.last_data_ts = first.ts

    def side(self, ep: tuple[str, int]) -> _Side:
        s = self.sides.get(ep)
        if s is None:
            s = self.sides[ep] = _Side(ep)
        return s

    @property
    def closed(self) -> bool:
        return any(s.fin is not None or s.rst is not None for s in self.sides.values())


def _conversations(segments: Iterable[_Segment]) -> list[_Conv]:
    convs: list[_Conv] = []
    current: dict[frozenset[tuple[str, int]], _Conv] = {}
    for seg in segments:
        key = frozenset((seg.src, seg.dst))
        conv = current.get(key)
        syn_only = seg.flags & dpkt.tcp.TH_SYN and not seg.flags & dpkt.tcp.TH_ACK
        if syn_only and conv is not None:
            known = conv.sides.get(seg.src)
            if known is None or known.isn != seg.seq:
                conv = None  # not a retransmitted SYN: the four-tuple is reused by a new connection
        if conv is None:
            conv = _Conv(seg)
            current[key] = conv
            convs.append(conv)
        if syn_only and conv.initiator is None:
            conv.initiator = seg.src
            conv.syn_ts = seg.ts
        elif seg.flags & dpkt.tcp.TH_SYN and seg.flags & dpkt.tcp.TH_ACK and conv.initiator is None:
            conv.initiator = seg.dst
        conv.side(seg.src).add(seg)
        conv.side(seg.dst)
        conv.last_ts = seg.ts
        if seg.payload or seg.flags & (dpkt.tcp.TH_SYN | dpkt.tcp.TH_FIN):
            conv.last_data_ts = seg.ts
    return convs


def _closed_by(conv: _Conv, initiator: tuple[str, int], acceptor: tuple[str, int]) -> str:
    closes: list[tuple[int, str, _Segment]] = []
    for ep, who in ((initiator, "initiator"), (acceptor, "acceptor")):
        side = conv.sides[ep]
        first = min((s for s in (side.fin, side.rst) if s is not None), key=lambda s: s.index, default=None)
        if first is not None:
            closes.append((first.index, who, first))
    if not closes:
        return "unknown"
    closes.sort(key=lambda c: c[0])
    if len(closes) == 2:
        (_, who, first), (_, _, second) = closes
        if (
            first.flags & dpkt.tcp.TH_FIN
            and second.flags & dpkt.tcp.TH_FIN
            and second.flags & dpkt.tcp.TH_ACK
        ):
            fin_end = (first.seq + len(first.payload) + 1) & _U32
            if (second.ack - fin_end) & _U32 >= 1 << 31:
                return "both"  # each side sent its FIN before it saw the other's
    return closes[0][1]


def _guess_initiator(conv: _Conv) -> tuple[str, int]:
    """No SYN in the capture: the side that sent a Hello or a ClientHello, else the higher port."""
    eps = list(conv.sides)
    for ep in eps:
        data = bytes(conv.sides[ep].stream[:10])
        if data[4:10] == b"Hello " or data[:1] == b"\x16":
            return ep
    return max(eps, key=lambda e: e[1])


def read_capture(path: str | Path, show_secrets: bool = False) -> Transcript:
    """Decode every TCP connection of a pcap/pcapng file."""
    path = Path(path)
    notes: list[str] = []
    segments, count = _segments(path, notes)
    convs = _conversations(segments)
    connections: list[Connection] = []
    for conv in convs:
        if len(conv.sides) != 2:
            continue
        initiator = conv.initiator or _guess_initiator(conv)
        acceptor = next(ep for ep in conv.sides if ep != initiator)
        i_side, a_side = conv.sides[initiator], conv.sides[acceptor]
        c = Connection(
            id=len(connections) + 1,
            initiator=Endpoint(*initiator),
            acceptor=Endpoint(*acceptor),
            streams={I2A: bytes(i_side.stream), A2I: bytes(a_side.stream)},
            start=conv.syn_ts if conv.syn_ts is not None else conv.first_ts,
            end=conv.last_data_ts,
            syn_seen=conv.syn_ts is not None,
        )
        c._owners = {I2A: i_side.owners, A2I: a_side.owners}
        c.closed_by = _closed_by(conv, initiator, acceptor)
        if not c.syn_seen:
            c.notes.append("the capture starts inside this connection (no SYN): initiator guessed")
        for direction, side in ((I2A, i_side), (A2I, a_side)):
            gap = side.gap
            if gap is not None:
                c.notes.append(
                    f"{direction}: {gap[1]} bytes missing at stream offset {gap[0]} (not captured); "
                    "decoding stops there"
                )
            if side.duplicate_bytes:
                c.notes.append(f"{direction}: {side.duplicate_bytes} retransmitted bytes ignored")
        connections.append(c)
    transcript = Transcript(str(path), connections, count, notes, show_secrets)
    _analyse(transcript)
    return transcript


def decode_raw(data: bytes, direction: str = I2A, source: str = "<raw>", show_secrets: bool = False) -> Transcript:
    """Decode one raw byte stream (one direction of one connection)."""
    streams = {I2A: b"", A2I: b""}
    streams[direction] = data
    c = Connection(
        id=1,
        initiator=Endpoint("?", None),
        acceptor=Endpoint("?", None),
        streams=streams,
        start=None,
        end=None,
        syn_seen=False,
    )
    transcript = Transcript(source, [c], 0, [], show_secrets, raw=True)
    _analyse(transcript)
    return transcript


# ---------------------------------------------------------------------------
# frames
# ---------------------------------------------------------------------------


def _frames_of(c: Connection, direction: str) -> tuple[list[Frame], int, str | None]:
    """Split one direction into frames: (frames, trailing byte count, problem)."""
    data = c.streams[direction]
    decoder = FrameDecoder()
    problem = None
    try:
        events = decoder.receive_data(data) if data else []
        trailing = decoder.buffered
    except RemoteProtocolError as exc:
        events = [e for e in exc.events if isinstance(e, (Message, SignalFrame))]
        problem = exc.message
        trailing = -1
    owners = c._owners.get(direction, [])
    starts = [o[0] for o in owners]
    frames: list[Frame] = []
    offset = 0
    for n, ev in enumerate(events):
        if isinstance(ev, Message):
            header, payload = len(ev.payload), ev.payload
        elif isinstance(ev, SignalFrame):
            header, payload = int(ev.signal), b""
        else:
            continue
        if owners:
            i = bisect.bisect_right(starts, offset) - 1
            _, packet, ts = owners[max(i, 0)]
            time: float | None = ts
        else:
            packet, time = n, None
        frames.append(Frame(direction, offset, header, payload, time, packet))
        offset += 4 + len(payload)
    if trailing < 0:
        trailing = len(data) - offset
    return frames, trailing, problem


def _merge(a: list[Frame], b: list[Frame]) -> list[Frame]:
    """Both directions in capture order, each direction keeping its own order."""
    out: list[Frame] = []
    i = j = 0
    while i < len(a) and j < len(b):
        if (b[j].packet, 1) < (a[i].packet, 0):
            out.append(b[j])
            j += 1
        else:
            out.append(a[i])
            i += 1
    out.extend(a[i:])
    out.extend(b[j:])
    return out


# ---------------------------------------------------------------------------
# TLS: the ClientHello and ServerHello, read in clear
# ---------------------------------------------------------------------------


def _tls_handshake_messages(stream: bytes) -> Iterator[tuple[int, bytes]]:
    """Handshake messages from the cleartext start of a TLS stream."""
    buf = bytearray()
    pos = 0
    while pos + 5 <= len(stream):
        ctype, length = stream[pos], int.from_bytes(stream[pos + 3 : pos + 5], "big")
        body = stream[pos + 5 : pos + 5 + length]
        pos += 5 + length
        if ctype == 20:  # change_cipher_spec: TLS 1.2 encrypts after it
            continue
        if ctype != 22:
            break
        buf += body
        while len(buf) >= 4:
            mlen = int.from_bytes(buf[1:4], "big")
            if len(buf) < 4 + mlen:
                break
            yield buf[0], bytes(buf[4 : 4 + mlen])
            del buf[: 4 + mlen]


def _extensions(body: bytes, pos: int) -> dict[int, bytes]:
    out: dict[int, bytes] = {}
    if pos + 2 > len(body):
        return out
    end = min(len(body), pos + 2 + int.from_bytes(body[pos : pos + 2], "big"))
    pos += 2
    while pos + 4 <= end:
        etype = int.from_bytes(body[pos : pos + 2], "big")
        elen = int.from_bytes(body[pos + 2 : pos + 4], "big")
        out[etype] = body[pos + 4 : pos + 4 + elen]
        pos += 4 + elen
    return out


def _hex16(value: int) -> str:
    return f"0x{value:04x}"


def tls_info(client: bytes, server: bytes) -> dict[str, Any]:
    """What the cleartext part of a TLS handshake says: the versions the client
    offers, its PSK identity (TLS 1.3 ``pre_shared_key`` extension, or the
    TLS 1.2 ClientKeyExchange) and the version the server chose."""
    info: dict[str, Any] = {}
    for mtype, body in _tls_handshake_messages(client):
        if mtype == 1 and len(body) >= 35:  # ClientHello
            info["client_hello_version"] = _hex16(int.from_bytes(body[0:2], "big"))
            pos = 34
            pos += 1 + body[pos]
            pos += 2 + int.from_bytes(body[pos : pos + 2], "big")
            pos += 1 + body[pos] if pos < len(body) else 0
            ext = _extensions(body, pos)
            if 43 in ext and ext[43]:
                raw = ext[43][1 : 1 + ext[43][0]]
                info["client_supported_versions"] = [
                    _hex16(int.from_bytes(raw[i : i + 2], "big")) for i in range(0, len(raw) - 1, 2)
                ]
            if 41 in ext:
                psk = ext[41]
                ids_len = int.from_bytes(psk[0:2], "big")
                if ids_len >= 2 and len(psk) >= 4:
                    id_len = int.from_bytes(psk[2:4], "big")
                    identity = psk[4 : 4 + id_len]
                    info["psk_identity"] = identity.decode("utf-8", "surrogateescape")
        elif mtype == 16 and "psk_identity" not in info and len(body) >= 2:  # TLS 1.2 ClientKeyExchange
            id_len = int.from_bytes(body[0:2], "big")
            if 0 < id_len <= len(body) - 2:
                info["psk_identity"] = body[2 : 2 + id_len].decode("utf-8", "surrogateescape")
    for mtype, body in _tls_handshake_messages(server):
        if mtype == 2 and len(body) >= 35:  # ServerHello
            version = int.from_bytes(body[0:2], "big")
            pos = 34
            pos += 1 + body[pos]
            pos += 3
            ext = _extensions(body, pos)
            if 43 in ext and len(ext[43]) == 2:
                version = int.from_bytes(ext[43], "big")
            info["version"] = _TLS_VERSIONS.get(version, _hex16(version))
            break
    return info


def tls_records(stream: bytes) -> dict[str, int]:
    """Count the TLS records of one direction by content type (handshake,
    change_cipher_spec, alert, application_data); with TLS 1.3 every record
    after the hellos reads as application_data.  Bareos writes one record per
    frame, so their number follows the frame count."""
    names = {20: "change_cipher_spec", 21: "alert", 22: "handshake", 23: "application_data"}
    out: dict[str, int] = {}
    pos = 0
    while pos + 5 <= len(stream):
        name = names.get(stream[pos], f"type {stream[pos]}")
        out[name] = out.get(name, 0) + 1
        pos += 5 + int.from_bytes(stream[pos + 3 : pos + 5], "big")
    return out


def _looks_like_tls(data: bytes) -> bool:
    return len(data) >= 3 and data[0] == 0x16 and data[1] == 0x03


# ---------------------------------------------------------------------------
# analysis: handshake steps, kinds, names, secrets
# ---------------------------------------------------------------------------


def _qualified(token: bytes) -> tuple[str | None, str] | None:
    name = challenge_name(token)
    if name is None:
        return None
    rtype, sep, rest = name.partition(b"::")
    if sep and rtype.startswith(b"R_"):
        return rtype.decode("ascii", "replace"), unbash(rest)
    return None, unbash(name)


def _describe_hello(hello: Hello) -> str:
    parts = [f"{hello.kind.value} {hello.name!r}"]
    if hello.console_version:
        parts.append(f"version {hello.console_version}")
    elif hello.version:
        parts.append("version %d.%d.%d" % hello.version)
    if hello.fd_protocol_version is not None:
        parts.append(f"FdProtocolVersion={hello.fd_protocol_version}")
    return ", ".join(parts)


def _steps(c: Connection) -> None:
    """Label the handshake frames of one cleartext connection."""
    expect_response: str | None = None  # direction the next response comes from
    expect_verdict: str | None = None
    verdicts: dict[str, bool] = {}
    greeted = False
    hello_done = False
    info_next = False
    for f in c.frames:
        payload = f.payload
        if f.header < 0:
            f.step = "signal"
            if f.header == -4 and not greeted and not hello_done:
                f.step = "refusal"
            elif f.header == -4 and len(verdicts) < 2:
                f.step = "refusal"
            continue
        if not hello_done and f.dir == I2A:
            hello_done = True
            f.step = "hello"
            try:
                hello = parse_hello(payload)
            except RemoteProtocolError as exc:
                try:
                    peer = detect_peer(payload)
                    f.note = f"Hello of a {peer.peer_type.value} {peer.name!r} that does not parse: {exc.message}"
                except RemoteProtocolError:
                    f.note = f"not a Hello: {exc.message}"
            else:
                c.hello = hello
                f.note = _describe_hello(hello)
            continue
        if payload.startswith(b"auth cram-md5"):
            try:
                challenge: Challenge = parse_challenge(payload)
            except RemoteProtocolError as exc:
                f.step, f.note = "challenge", f"malformed: {exc.message}"
            else:
                f.step = "challenge"
                q = _qualified(challenge.token)
                if q is not None:
                    c.challenger[f.dir] = q
                    who = f"{q[0]}::{q[1]}" if q[0] else q[1]
                else:
                    who = "?"
                ssl = "none" if challenge.tls_policy is None else str(challenge.tls_policy)
                f.note = f"from {who}, ssl={ssl}"
            expect_response = _OTHER[f.dir]
            continue
        if expect_response == f.dir:
            f.step = "response"
            f.note = f"{len(payload.rstrip(b'\x00'))} characters" + (" + NUL" if payload.endswith(b"\x00") else "")
            end = len(payload) - 1 if payload.endswith(b"\x00") else len(payload)
            if end > 0:
                f.masks.append((0, end))
            expect_response = None
            expect_verdict = _OTHER[f.dir]
            continue
        if expect_verdict == f.dir and payload in (AUTH_OK, AUTH_FAILED):
            f.step = "verdict"
            verdicts[_OTHER[f.dir]] = payload == AUTH_OK
            f.note = "accepted" if payload == AUTH_OK else "refused"
            expect_verdict = None
            continue
        if payload == AUTH_FAILED or payload in (DIRECTOR_NOT_AUTHORIZED, FD_AUTH_FAILED, SD_NO_GO):
            f.step, f.note = "refusal", ""
            continue
        if info_next and f.dir == A2I and payload.startswith(b"1002\x1e"):
            f.step, f.note, info_next = "info", "console login info", False
            continue
        if not greeted and f.dir == A2I and len(verdicts) == 2 and all(verdicts.values()):
            greeted = True
            if c.hello is not None and c.hello.kind not in (HelloKind.CONSOLE, HelloKind.DIRECTOR, HelloKind.CLIENT):
                continue  # data channels have no greeting
            try:
                greeting = parse_greeting(payload)
            except RemoteProtocolError:
                continue
            f.step = "greeting"
            c.greeting = greeting
            if isinstance(greeting, DirectorGreeting):
                f.note = f"Director {greeting.director!r} version {greeting.version}"
                c.version = greeting.version
                info_next = greeting.form is GreetingForm.RESPONSE_MESSAGE
            elif isinstance(greeting, FdHelloOk):
                f.note = "File Daemon" + (
                    f", protocol {greeting.protocol_version}" if greeting.protocol_version is not None else ""
                )
            elif isinstance(greeting, SdHelloOk):
                f.note = "Storage Daemon"
            elif isinstance(greeting, ResponseMessage):
                f.note = f"response message {greeting.id}"
            continue


def _mask_keys(c: Connection, keys: set[bytes]) -> None:
    for f in c.frames:
        for m in _AUTHORIZATION.finditer(f.payload):
            f.masks.append(m.span(1))
        for key in keys:
            start = f.payload.find(key)
            while start >= 0:
                f.masks.append((start, start + len(key)))
                start = f.payload.find(key, start + 1)


def _session_keys(c: Connection) -> dict[str, str]:
    """job name -> session key, from ``Job=...`` and ``Authorization=...`` in one connection."""
    out: dict[str, str] = {}
    last_job: str | None = None
    for f in c.frames:
        if f.header <= 0:
            continue
        job = _JOB_NAME.search(f.payload)
        if job is not None:
            last_job = job.group(1).decode("latin-1")
        for m in _AUTHORIZATION.finditer(f.payload):
            key = m.group(1).decode("latin-1")
            if key != "dummy" and last_job is not None:
                out[last_job] = key
    return out


def _classify(c: Connection, ports: dict[tuple[str, int], tuple[str, str | None]]) -> None:
    """Kind, roles and names from the Hello (or the PSK identity), the
    challenges, the greeting and what the capture says about the acceptor's port."""
    acc_ep = (c.acceptor.host, c.acceptor.port or 0)
    acc_known = ports.get(acc_ep)
    acc_role = acc_known[0] if acc_known else DEFAULT_PORTS.get(c.acceptor.port or 0)
    acc_name = acc_known[1] if acc_known else None
    ch_acc = c.challenger.get(A2I)
    ch_ini = c.challenger.get(I2A)
    if ch_acc is not None and ch_acc[0] in _ROLE_OF_TYPE:
        acc_role, acc_name = _ROLE_OF_TYPE[ch_acc[0]], ch_acc[1]
    if isinstance(c.greeting, FdHelloOk):
        acc_role = "fd"
    elif isinstance(c.greeting, SdHelloOk):
        acc_role = "sd"
    elif isinstance(c.greeting, DirectorGreeting):
        acc_role, acc_name = "director", acc_name or c.greeting.director
    monitor = ch_ini is not None and ch_ini[0] == "R_MONITOR"
    kind: str | None = None
    ini_name: str | None = None
    if c.hello is not None:
        hk = c.hello.kind
        if hk is HelloKind.CONSOLE:
            kind = "monitor-dir" if monitor else (
                "console-default" if c.hello.name == USER_AGENT else "console-named"
            )
            ini_name = c.hello.name
        elif hk is HelloKind.DIRECTOR:
            side = "sd" if acc_role == "sd" else "fd"
            kind = f"monitor-{side}" if monitor else f"dir-{side}"
            ini_name = c.hello.name
        elif hk is HelloKind.CLIENT:
            kind, ini_name = "fd-dir-client-initiated", c.hello.name
        else:
            kind = {
                HelloKind.START_JOB: "fd-sd",
                HelloKind.STORAGE_START_JOB: "sd-fd-passive",
                HelloKind.START_STORAGE_JOB: "sd-sd",
            }[hk]
            c.job = c.hello.name
            if ch_ini is not None and ch_ini[0] in _ROLE_OF_TYPE:
                ini_name = ch_ini[1]
        if c.hello.console_version:
            c.version = c.version or c.hello.console_version
        elif c.hello.version:
            c.version = c.version or "%d.%d.%d" % c.hello.version
    elif c.tls_info and "psk_identity" in c.tls_info:
        try:
            rtype, name = parse_psk_identity(c.tls_info["psk_identity"])
        except RemoteProtocolError:
            rtype, name = None, None
        if rtype is not None and name is not None:
            t = rtype.value
            if t == "R_CONSOLE":
                kind = "console-default" if name == USER_AGENT else "console-named"
                ini_name = name
            elif t == "R_CLIENT":
                kind, ini_name = "fd-dir-client-initiated", name
            elif t == "R_DIRECTOR":
                kind, ini_name = ("dir-sd" if acc_role == "sd" else "dir-fd"), name
            elif t == "R_JOB":
                kind = "sd-fd-passive" if acc_role == "fd" else "fd-sd"
                c.job = name
    if kind is None:
        return
    c.kind = kind
    ini_role, def_acc_role, _ = KINDS[kind]
    c.initiator.role = ini_role
    c.initiator.name = ini_name
    c.acceptor.role = def_acc_role
    c.acceptor.name = acc_name if (acc_role is None or acc_role == def_acc_role) else None


def _analyse(t: Transcript) -> None:
    conns = t.connections
    for c in conns:
        if _looks_like_tls(c.streams[I2A]):
            c.tls = "psk"
            c.tls_info = tls_info(c.streams[I2A], c.streams[A2I])
            if "psk_identity" not in c.tls_info:
                c.tls = "cert"
            c.trailing = {I2A: None, A2I: None}
            continue
        per_dir = {}
        for direction in (I2A, A2I):
            frames, trailing, problem = _frames_of(c, direction)
            per_dir[direction] = frames
            c.trailing[direction] = trailing
            if problem is not None:
                rest = c.streams[direction][sum(f.length for f in frames) :]
                if _looks_like_tls(rest):
                    c.tls = "cert"
                    c.notes.append(f"{direction}: TLS starts after {len(frames)} cleartext frames")
                else:
                    c.notes.append(f"{direction}: framing stops: {problem}")
        c.frames = _merge(per_dir[I2A], per_dir[A2I])
        _steps(c)
    # what the cleartext connections say about who listens where, and the session keys
    ports: dict[tuple[str, int], tuple[str, str | None]] = {}
    keys: dict[str, str] = {}
    for c in conns:
        keys.update(_session_keys(c))
    for c in conns:
        _classify(c, ports)
        if c.kind is not None and c.acceptor.role is not None and c.acceptor.port is not None:
            known = ports.get((c.acceptor.host, c.acceptor.port))
            if known is None or known[1] is None:
                ports[(c.acceptor.host, c.acceptor.port)] = (c.acceptor.role, c.acceptor.name)
    # a second pass: TLS connections and early ones learn from later cleartext ones
    for c in conns:
        _classify(c, ports)
        if c.job is not None:
            c.session_key = keys.get(c.job)
    # names a connection cannot tell: the only daemon of that role seen in the capture
    names: dict[str, set[str]] = {}
    for c in conns:
        for ep in (c.initiator, c.acceptor):
            if ep.role in ("director", "fd", "sd") and ep.name:
                names.setdefault(ep.role, set()).add(ep.name)
    for c in conns:
        for ep in (c.initiator, c.acceptor):
            if ep.role in names and ep.name is None and len(names[ep.role]) == 1:
                ep.name = next(iter(names[ep.role]))
    secret = {k.encode("latin-1") for k in keys.values()}
    for c in conns:
        _mask_keys(c, secret)
        for f in c.frames:
            f.masks = _union(f.masks)


def _union(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for a, b in sorted(ranges):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


# ---------------------------------------------------------------------------
# output: JSON
# ---------------------------------------------------------------------------


def _payload(f: Frame, show_secrets: bool) -> bytes:
    if show_secrets or not f.masks:
        return f.payload
    data = bytearray(f.payload)
    for a, b in f.masks:
        data[a:b] = b"*" * (b - a)
    return bytes(data)


def _text_field(payload: bytes, header: int) -> str | None:
    if header < 0 or not is_text(payload):
        return None
    return payload.decode("latin-1")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _connection_json(c: Connection, show_secrets: bool) -> dict[str, Any]:
    _, _, number = KINDS.get(c.kind or "", (None, None, None))
    out: dict[str, Any] = {
        "id": c.id,
        "kind": c.kind,
        "connection_number": number,
        "initiator": {"role": c.initiator.role, "name": c.initiator.name, "port": c.initiator.port},
        "acceptor": {"role": c.acceptor.role, "name": c.acceptor.name, "port": c.acceptor.port},
        "secret": {
            "password": None,
            "cram_key": c.session_key if (show_secrets and c.session_key) else None,
        },
        "tls": c.tls,
        "closed_by": c.closed_by,
    }
    if c.job is not None:
        out["job"] = c.job
    if c.tls != "none":
        out["tls_info"] = c.tls_info or {}
    frames = []
    for f in c.frames:
        payload = _payload(f, show_secrets)
        t = None if (f.time is None or c.start is None) else round(f.time - c.start, 3)
        frames.append(
            {
                "dir": f.dir,
                "t": t,
                "header": f.header,
                "signal": f.signal,
                "payload_b64": _b64(payload),
                "text": _text_field(payload, f.header),
            }
        )
    out["frames"] = frames
    for direction in (I2A, A2I):
        raw = c.streams[direction] if show_secrets else c.masked_stream(direction)
        out[f"raw_{direction}_b64"] = _b64(raw)
    out["trailing_bytes"] = dict(c.trailing)
    out["duration"] = c.duration
    return out


def to_json(t: Transcript) -> dict[str, Any]:
    """The transcript in the format of the conformance recordings."""
    versions = [c.version for c in t.connections if c.version]
    full = [v for v in versions if not re.fullmatch(r"\d+\.\d+\.\d+", v)]
    notes = list(t.notes)
    for c in t.connections:
        notes.extend(f"connection {c.id}: {n}" for n in c.notes)
    if not t.show_secrets:
        notes.append(
            "CRAM-MD5 responses and Authorization= session keys are masked: each of their bytes is "
            "'*' in payload_b64, text and raw_*_b64 (use --show-secrets to keep them)"
        )
    name = Path(t.source).name
    doc: dict[str, Any] = {
        "scenario": Path(t.source).stem,
        "description": f"{'Raw stream' if t.raw else 'Capture'} {name} decoded by bareosproto-transcript.",
        "bareos_version": next(iter(full or versions), None),
        "capture": {"pcap": None if t.raw else name, "interface": None, "filter": None},
    }
    if notes:
        doc["notes"] = notes
    doc["connections"] = [_connection_json(c, t.show_secrets) for c in t.connections]
    return doc


# ---------------------------------------------------------------------------
# output: text
# ---------------------------------------------------------------------------

_ESCAPES = {0x0A: "\\n", 0x0D: "\\r", 0x09: "\\t", 0x00: "\\0", 0x1E: "\\x1e", 0x01: "\\x01", 0x5C: "\\\\"}


def _show_bytes(data: bytes) -> str:
    return "".join(
        _ESCAPES.get(b) or (chr(b) if 0x20 <= b < 0x7F else f"\\x{b:02x}") for b in data
    )


def _display(f: Frame, show_secrets: bool, width: int) -> str:
    if f.header < 0:
        return f.signal or ""
    if not f.payload:
        return "(empty message)"
    if not is_text(f.payload):
        head = f.payload[:24].hex(" ")
        return f"<{len(f.payload)} bytes: {head}{' ...' if len(f.payload) > 24 else ''}>"
    parts: list[str] = []
    pos = 0
    for a, b in [] if show_secrets else f.masks:
        parts.append(_show_bytes(f.payload[pos:a]))
        parts.append("***")
        pos = b
    parts.append(_show_bytes(f.payload[pos:]))
    text = "".join(parts)
    if width and len(text) > width:
        text = text[: max(width - 3, 1)] + "..."
    return text


def to_text(t: Transcript, width: int = 100) -> str:
    """A readable listing: one block per connection, one line per frame."""
    lines = [f"{'raw stream' if t.raw else 'capture'} {t.source}: {len(t.connections)} connection(s)"
             + ("" if t.raw else f", {t.packets} packets")]
    lines.extend(f"note: {n}" for n in t.notes)
    for c in t.connections:
        lines.append("")
        kind = c.kind or "unknown kind"
        number = KINDS[c.kind][2] if c.kind in KINDS else "?"
        lines.append(f"#{c.id} {kind} (connection {number}): {c.initiator.label()} -> {c.acceptor.label()}")
        sizes = f"i2a {len(c.streams[I2A])} B, a2i {len(c.streams[A2I])} B"
        if c.tls == "none":
            detail = f"cleartext, {len(c.frames)} frames, {sizes}"
        else:
            info = c.tls_info or {}
            detail = f"TLS ({c.tls}) {info.get('version', '?')}, PSK identity " + (
                _show_bytes(info["psk_identity"].encode("utf-8", "surrogateescape"))
                if "psk_identity" in info else "none"
            ) + f", {sizes}"
        if c.job:
            detail += f", job {c.job}"
        if c.session_key:
            detail += f", session key {c.session_key if t.show_secrets else '***'}"
        if not t.raw:
            detail += f", closed by {c.closed_by}, {c.duration} s"
        lines.append("   " + detail)
        if c.tls != "none":
            lines.append("   TLS records: " + "; ".join(
                f"{d} " + (", ".join(f"{n} {k}" for k, n in tls_records(c.streams[d]).items()) or "none")
                for d in (I2A, A2I)
            ))
        for n in c.notes:
            lines.append(f"   note: {n}")
        for f in c.frames:
            when = "      " if f.time is None or c.start is None else f"{f.time - c.start:7.3f}"
            arrow = "-->" if f.dir == I2A else "<--"
            shown = _display(f, t.show_secrets, width)
            note = f"  ({f.note})" if f.note else ""
            lines.append(f"   {when} {f.dir} {arrow} {f.header:>8} {f.step:<9} {shown}{note}")
        if c.tls == "none" and any(c.trailing.values()):
            lines.append(f"   trailing bytes: i2a {c.trailing[I2A]}, a2i {c.trailing[A2I]}")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------
# output: Mermaid
# ---------------------------------------------------------------------------


def _mermaid_text(s: str, limit: int = 60) -> str:
    """Text Mermaid shows as it is: ``;``, ``#``, ``<``, ``>``, quotes and
    anything beyond ASCII as entity codes (``#59;``), cut at ``limit``."""
    if len(s) > limit:
        s = s[: limit - 3] + "..."
    out = []
    for ch in s:
        if ch in ";#<>{}\"%" or ord(ch) > 0x7E or ord(ch) < 0x20:
            out.append(f"#{ord(ch)};")
        else:
            out.append(ch)
    return "".join(out)


def to_mermaid(t: Transcript, width: int = 60) -> str:
    """A Mermaid ``sequenceDiagram``: one participant per daemon or peer, one
    arrow per frame (messages ``->>``, signals ``-)``), notes for TLS and close."""
    ids: dict[str, str] = {}
    lines = ["sequenceDiagram"]

    def participant(ep: Endpoint, listening: bool) -> str:
        who = " ".join(x for x in (ep.role, ep.name) if x)
        label = who if (who and ep.name) else f"{who or 'peer'} {ep.address()}"
        if not ep.name and not listening and ep.role:
            label = f"{ep.role} {ep.address()}"
        if label not in ids:
            ids[label] = f"P{len(ids) + 1}"
            lines.append(f"    participant {ids[label]} as {_mermaid_text(label, 80)}")
        return ids[label]

    pairs = {c.id: (participant(c.initiator, False), participant(c.acceptor, True)) for c in t.connections}
    events: list[tuple[float, int, int, str]] = []
    for c in t.connections:
        ini, acc = pairs[c.id]
        start = c.start if c.start is not None else 0.0
        kind = c.kind or "connection"
        if c.tls == "none":
            head = f"#{c.id} {kind}, cleartext"
        else:
            ident = (c.tls_info or {}).get("psk_identity")
            shown = _show_bytes(ident.encode("utf-8", "surrogateescape")) if ident else "no PSK"
            head = f"#{c.id} {kind}, TLS {c.tls} {shown}"
        first_packet = c.frames[0].packet if c.frames else 0
        events.append((start, first_packet - 1, 0, f"    Note over {ini},{acc}: {_mermaid_text(head, 80)}"))
        for n, f in enumerate(c.frames):
            src, dst = (ini, acc) if f.dir == I2A else (acc, ini)
            when = f.time if f.time is not None else start
            label = f"{f.step}: " if f.step not in ("data", "signal") else ""
            arrow = "-)" if f.header < 0 else "->>"
            text = _mermaid_text(label + _display(f, t.show_secrets, 0), width)
            events.append((when, f.packet, n + 1, f"    {src}{arrow}{dst}: {text}"))
        if c.closed_by != "unknown" and c.end is not None:
            note = _mermaid_text(f"#{c.id} closed by {c.closed_by}", 80)
            events.append((c.end, 1 << 62, 0, f"    Note over {ini},{acc}: {note}"))
    events.sort(key=lambda e: (e[0], e[1], e[2]))
    lines.extend(e[3] for e in events)
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="bareosproto-transcript",
        description="Decode Bareos traffic from a pcap/pcapng capture (or one raw stream) into frames per "
        "TCP connection, with the Hello, CRAM-MD5 and greeting steps recognised and secrets masked.",
    )
    p.add_argument("capture", nargs="?", help="pcap or pcapng file (tcpdump -w)")
    p.add_argument("--raw", metavar="FILE", help="decode one raw byte stream instead of a capture")
    p.add_argument("--direction", choices=(I2A, A2I), default=I2A,
                   help="direction of the --raw stream: i2a (from the connecting side, default) or a2i")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="JSON in the format of the conformance recordings")
    out.add_argument("--mermaid", action="store_true", help="a Mermaid sequence diagram, one arrow per frame")
    p.add_argument("--show-secrets", action="store_true",
                   help="do not mask CRAM-MD5 responses and Authorization= session keys")
    p.add_argument("--port", type=int, action="append", default=[],
                   help="only connections with this TCP port (repeatable)")
    p.add_argument("--width", type=int, default=100, help="cut payload text at this width (0: never), text output")
    p.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of standard output")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``bareosproto-transcript``; returns the exit status."""
    p = _parser()
    args = p.parse_args(argv)
    if (args.raw is None) == (args.capture is None):
        p.error("give either a capture file or --raw FILE")
    try:
        if args.raw is not None:
            data = Path(args.raw).read_bytes()
            transcript = decode_raw(data, args.direction, args.raw, args.show_secrets)
        else:
            transcript = read_capture(args.capture, args.show_secrets)
    except (OSError, ValueError, dpkt.UnpackError) as exc:
        print(f"bareosproto-transcript: {exc}", file=sys.stderr)
        return 2
    if args.port:
        wanted = set(args.port)
        transcript.connections = [
            c for c in transcript.connections if {c.initiator.port, c.acceptor.port} & wanted
        ]
    if args.json:
        text = json.dumps(to_json(transcript), indent=1, ensure_ascii=True) + "\n"
    elif args.mermaid:
        text = to_mermaid(transcript)
    else:
        text = to_text(transcript, args.width)
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
