"""bareosproto-transcript against the conformance recordings in tests/data.

Every recorded pcap is decoded by the tool and compared with the recording's
JSON, which was made independently (by the recording lab's own converter).
Expected values come from the JSON files and tests/data/README.md only.
"""

from __future__ import annotations

import base64
import json
import random
import re
from pathlib import Path
from typing import Any

import dpkt  # type: ignore[import-untyped]
import pytest

from bareosproto.cli import transcript
from bareosproto.cli.transcript import main

from recordings import DATA, Connection, Recording, recordings

PCAPS = sorted(DATA.glob("*.pcap"))
#: the pcaps with at least one cleartext connection (the others show nothing secret)
CLEAR_PCAPS = [p for p in PCAPS if any(r.scenario == p.stem and any(c.tls == "none" for c in r.connections)
                                       for r in recordings())]

#: The keys of tests/data/README.md's "JSON format".
TOP_KEYS = {"scenario", "description", "bareos_version", "emulated", "capture", "notes", "connections"}
TOP_REQUIRED = {"scenario", "description", "bareos_version", "capture", "connections"}
CONN_REQUIRED = {"id", "kind", "connection_number", "initiator", "acceptor", "secret", "tls", "closed_by",
                 "frames", "raw_i2a_b64", "raw_a2i_b64", "trailing_bytes", "duration"}
CONN_OPTIONAL = {"job", "tls_info"}
FRAME_KEYS = {"dir", "t", "header", "signal", "payload_b64", "text"}
KINDS = {"console-named", "console-default", "dir-fd", "fd-dir-client-initiated", "dir-sd", "fd-sd",
         "sd-fd-passive", "sd-sd", "monitor-dir", "monitor-fd", "monitor-sd"}
ROLES = {"director", "fd", "sd", "console", "monitor"}


def _recording(pcap: Path) -> Recording:
    scenario = pcap.stem
    return next(r for r in recordings() if r.scenario == scenario)


def _run_json(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, Any]:
    assert main(["--json", *args]) == 0
    return json.loads(capsys.readouterr().out)  # type: ignore[no-any-return]


def _run_text(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    assert main(list(args)) == 0
    return capsys.readouterr().out


def _responses(conn: Connection) -> list[bytes]:
    """The CRAM-MD5 responses of a recorded connection: the frame after each challenge, other direction."""
    out = []
    for f in conn.frames:
        if f.payload.startswith(b"auth cram-md5"):
            nxt = conn.next_frame(f.index, "a2i" if f.dir == "i2a" else "i2a")
            assert nxt is not None
            out.append(nxt.payload.rstrip(b"\x00"))
    return out


def _session_keys(rec: Recording) -> set[bytes]:
    return {
        c.secret["cram_key"].encode()
        for c in rec.connections
        if c.secret.get("password") is None and c.secret.get("cram_key")
    }


def test_every_pcap_has_its_json() -> None:
    """Every recorded pcap in tests/data has the JSON transcript the other tests compare with."""
    assert PCAPS, "no pcap in tests/data"
    for pcap in PCAPS:
        assert pcap.with_suffix(".json").exists(), pcap


@pytest.mark.parametrize("pcap", PCAPS, ids=[p.stem for p in PCAPS])
def test_cleartext_connections_decode_to_the_recorded_frames(
    pcap: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every cleartext connection of a pcap decodes to exactly the recorded frames (direction,
    time, header, signal, payload, text), raw streams, trailing bytes, ports, closer and duration."""
    rec = _recording(pcap)
    doc = _run_json(capsys, "--show-secrets", str(pcap))
    got = doc["connections"]
    assert len(got) == len(rec.connections)
    expected_raw = json.loads(pcap.with_suffix(".json").read_text())["connections"]
    for conn, mine, raw in zip(rec.connections, got, expected_raw):
        assert mine["initiator"]["port"] == conn.initiator["port"], conn.label
        assert mine["acceptor"]["port"] == conn.acceptor["port"], conn.label
        assert mine["closed_by"] == conn.closed_by, conn.label
        assert mine["duration"] == raw["duration"], conn.label
        assert mine["tls"] == conn.tls, conn.label
        if conn.tls != "none":
            continue
        assert mine["trailing_bytes"] == conn.trailing_bytes, conn.label
        assert len(mine["frames"]) == len(conn.frames), conn.label
        for f, m, r in zip(conn.frames, mine["frames"], raw["frames"]):
            where = f"{conn.label} frame {f.index}"
            assert (m["dir"], m["header"], m["signal"], m["t"]) == (f.dir, f.header, f.signal, f.t), where
            payload = base64.b64decode(m["payload_b64"])
            if f.truncated:  # heartbeat-clear fd-sd: the recording kept the first 64 bytes
                assert payload[:64] == f.payload and len(payload) == f.header, where
            else:
                assert payload == f.payload, where
                assert m["text"] == r["text"], where
        if conn.raw is not None:
            assert base64.b64decode(mine["raw_i2a_b64"]) == conn.raw["i2a"], conn.label
            assert base64.b64decode(mine["raw_a2i_b64"]) == conn.raw["a2i"], conn.label


@pytest.mark.parametrize("pcap", PCAPS, ids=[p.stem for p in PCAPS])
def test_tls_connections_are_recognised_with_their_psk_identity(
    pcap: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A TLS connection is recognised by its first bytes: tls "psk", no frames, null trailing bytes,
    and tls_info (offered versions, PSK identity, chosen version) as the recording says; its raw
    streams are the reassembled TCP streams."""
    rec = _recording(pcap)
    doc = _run_json(capsys, str(pcap))
    for conn, mine in zip(rec.connections, doc["connections"]):
        if conn.tls == "none":
            assert "tls_info" not in mine, conn.label
            continue
        assert mine["tls"] == "psk", conn.label
        assert mine["frames"] == [], conn.label
        assert mine["trailing_bytes"] == {"i2a": None, "a2i": None}, conn.label
        assert mine["tls_info"] == conn.tls_info, conn.label
        assert conn.raw is not None
        assert base64.b64decode(mine["raw_i2a_b64"]) == conn.raw["i2a"], conn.label
        assert base64.b64decode(mine["raw_a2i_b64"]) == conn.raw["a2i"], conn.label


def test_tls_pcaps_are_covered() -> None:
    """The recordings hold TLS-PSK connections, so the TLS test above checks something."""
    assert sum(1 for r in recordings() for c in r.connections if c.tls == "psk") >= 5


@pytest.mark.parametrize("pcap", PCAPS, ids=[p.stem for p in PCAPS])
def test_json_output_has_the_format_of_the_readme(pcap: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The JSON output has the README's keys and value types: the top-level keys, every
    connection's keys (job only on data channels, tls_info only on TLS), every frame's six keys."""
    rec = _recording(pcap)
    doc = _run_json(capsys, str(pcap))
    expected = json.loads(pcap.with_suffix(".json").read_text())
    assert TOP_REQUIRED <= set(doc) <= TOP_KEYS
    assert set(doc["capture"]) == set(expected["capture"])
    assert isinstance(doc["connections"], list)
    for conn, mine, theirs in zip(rec.connections, doc["connections"], expected["connections"]):
        keys = set(theirs)
        if "payload_truncated" in json.dumps(theirs["frames"]):
            keys |= {"raw_i2a_b64", "raw_a2i_b64"}  # the recording left them out; we do not truncate
        assert set(mine) == keys, conn.label
        assert CONN_REQUIRED <= set(mine) <= CONN_REQUIRED | CONN_OPTIONAL
        assert set(mine["initiator"]) == set(mine["acceptor"]) == {"role", "name", "port"}
        assert set(mine["secret"]) >= {"password", "cram_key"}
        assert mine["kind"] in KINDS
        assert mine["initiator"]["role"] in ROLES and mine["acceptor"]["role"] in ROLES
        assert mine["tls"] in {"none", "psk", "cert"}
        assert mine["closed_by"] in {"initiator", "acceptor", "both", "unknown"}
        assert set(mine["trailing_bytes"]) == {"i2a", "a2i"}
        assert isinstance(mine["duration"], float)
        for f in mine["frames"]:
            assert set(f) == FRAME_KEYS
            assert f["dir"] in {"i2a", "a2i"}
            assert isinstance(f["header"], int) and isinstance(f["t"], float)
            assert (f["signal"] is None) == (f["header"] >= 0)
            assert f["text"] is None or isinstance(f["text"], str)


def test_kinds_roles_and_names_match_the_recordings(capsys: pytest.CaptureFixture[str]) -> None:
    """Kind, connection number and roles come from the Hello (or PSK identity), the challenges and
    the greeting; a name the tool reports is the recorded one.  The one exception is
    python-bareos as tray monitor: its challenge carries no R_MONITOR type, so it reads as dir-fd."""
    emulated_monitor = 0
    for pcap in PCAPS:
        rec = _recording(pcap)
        doc = _run_json(capsys, str(pcap))
        for conn, mine in zip(rec.connections, doc["connections"]):
            if conn.emulated and conn.kind == "monitor-fd":
                emulated_monitor += 1
                assert (mine["kind"], mine["initiator"]["role"]) == ("dir-fd", "director")
                assert mine["initiator"]["name"] == conn.initiator["name"]
                continue
            assert mine["kind"] == conn.kind, conn.label
            assert mine["connection_number"] == conn.connection_number, conn.label
            for side in ("initiator", "acceptor"):
                assert mine[side]["role"] == getattr(conn, side)["role"], conn.label
                if mine[side]["name"] is not None:
                    assert mine[side]["name"] == getattr(conn, side)["name"], conn.label
            if conn.tls == "none":  # cleartext: every name is on the wire
                assert mine["initiator"]["name"] == conn.initiator["name"], conn.label
                assert mine["acceptor"]["name"] == conn.acceptor["name"], conn.label
            assert mine.get("job") == conn.job, conn.label
    assert emulated_monitor == 1


def test_version_is_read_from_the_wire(capsys: pytest.CaptureFixture[str]) -> None:
    """bareos_version is the full version a greeting or console Hello carries."""
    for name in ("console-named-clear", "v25-console-named-clear"):
        doc = _run_json(capsys, str(DATA / f"{name}.pcap"))
        assert doc["bareos_version"] == json.loads((DATA / f"{name}.json").read_text())["bareos_version"]


@pytest.mark.parametrize("pcap", CLEAR_PCAPS, ids=[p.stem for p in CLEAR_PCAPS])
def test_secrets_are_masked_unless_asked_for(pcap: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """By default no CRAM-MD5 response and no job session key appears in the text, JSON (payloads,
    texts, raw streams) or Mermaid output; with --show-secrets they all appear."""
    rec = _recording(pcap)
    secrets = _session_keys(rec)
    for conn in rec.connections:
        if conn.tls == "none":
            secrets.update(_responses(conn))
    assert secrets

    def visible(doc_text: str, doc: dict[str, Any] | None) -> set[bytes]:
        blobs = [doc_text.encode()]
        if doc is not None:
            for c in doc["connections"]:
                blobs += [base64.b64decode(c["raw_i2a_b64"]), base64.b64decode(c["raw_a2i_b64"])]
                blobs += [base64.b64decode(f["payload_b64"]) for f in c["frames"]]
        return {s for s in secrets if any(s in b for b in blobs)}

    masked = _run_json(capsys, str(pcap))
    assert visible(json.dumps(masked), masked) == set()
    assert visible(_run_text(capsys, "--width", "0", str(pcap)), None) == set()
    assert visible(_run_text(capsys, "--mermaid", str(pcap)), None) == set()
    shown = _run_json(capsys, "--show-secrets", str(pcap))
    assert visible(json.dumps(shown), shown) == secrets
    text = _run_text(capsys, "--show-secrets", "--width", "0", str(pcap))
    assert visible(text, None) == secrets
    # masking keeps lengths: headers still match payloads and frames still make the raw stream
    for c in masked["connections"]:
        for direction in ("i2a", "a2i"):
            frames = [f for f in c["frames"] if f["dir"] == direction]
            if not frames:
                continue
            wire = b"".join(
                f["header"].to_bytes(4, "big", signed=True) + base64.b64decode(f["payload_b64"]) for f in frames
            )
            assert wire == base64.b64decode(c[f"raw_{direction}_b64"])


def test_masked_values_read_as_stars_in_the_text(capsys: pytest.CaptureFixture[str]) -> None:
    """In the text output a CRAM response reads '***' and a session key 'Authorization=***'."""
    text = _run_text(capsys, "--width", "0", str(DATA / "backup-clear.pcap"))
    assert re.search(r"response\s+\*\*\*\\0", text)
    assert "Authorization=***" in text


def test_text_output_names_the_handshake_steps(capsys: pytest.CaptureFixture[str]) -> None:
    """The text output labels the console login: hello, challenge, response, verdict, challenge,
    response, verdict, greeting, info, in that order, then commands as data."""
    text = _run_text(capsys, str(DATA / "console-named-clear.pcap"))
    steps = re.findall(r"^\s+\d+\.\d+ (?:i2a|a2i) (?:-->|<--)\s+-?\d+ (\S+)", text, re.M)
    assert steps[:9] == ["hello", "challenge", "response", "verdict", "challenge", "response", "verdict",
                         "greeting", "info"]
    assert steps[9] == "data"
    assert "console 'plain-console', version 26.0.0~pre1298.eda204c31" in text
    assert "from R_DIRECTOR::bareos-dir, ssl=0" in text


@pytest.mark.parametrize("pcap", PCAPS, ids=[p.stem for p in PCAPS])
def test_mermaid_has_one_arrow_per_frame(pcap: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The Mermaid output is a sequenceDiagram with one arrow per recorded frame, between declared
    participants, and nothing else that looks like an arrow."""
    rec = _recording(pcap)
    out = _run_text(capsys, "--mermaid", str(pcap))
    lines = out.splitlines()
    assert lines[0] == "sequenceDiagram"
    declared = set(re.findall(r"^\s+participant (P\d+) as \S", out, re.M))
    arrows = re.findall(r"^\s+(P\d+)(->>|-\))(P\d+): ", out, re.M)
    assert len(arrows) == sum(len(c.frames) for c in rec.connections)
    assert sum(1 for a in arrows if a[1] == "-)") == sum(1 for c in rec.connections for f in c.frames if f.is_signal)
    for src, _, dst in arrows:
        assert src in declared and dst in declared and src != dst
    body = [ln for ln in lines[1:] if not re.match(r"^\s+(participant |Note over |P\d+(->>|-\))P\d+: )", ln)]
    assert body == []
    assert sum(1 for ln in lines if "->" in ln or "-)" in ln) == len(arrows)


@pytest.mark.parametrize("direction", ["i2a", "a2i"])
def test_a_raw_stream_file_decodes_like_the_recording(
    direction: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--raw FILE --direction D decodes one stream to the recorded frames of that direction."""
    conn = next(c for c in recordings() if c.scenario == "backup-clear").connections[1]
    assert conn.raw is not None
    raw = tmp_path / "stream.bin"
    raw.write_bytes(conn.raw[direction])
    doc = _run_json(capsys, "--show-secrets", "--raw", str(raw), "--direction", direction)
    (mine,) = doc["connections"]
    want = conn.frames_in(direction)
    assert [(f["dir"], f["header"], base64.b64decode(f["payload_b64"])) for f in mine["frames"]] == [
        (f.dir, f.header, f.payload) for f in want
    ]
    assert all(f["t"] is None for f in mine["frames"])
    assert mine["trailing_bytes"][direction] == 0


def test_a_raw_stream_with_a_cut_frame_reports_trailing_bytes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A raw stream that ends inside a frame reports the leftover bytes as trailing_bytes."""
    raw = tmp_path / "cut.bin"
    raw.write_bytes(b"\x00\x00\x00\x05hello" + b"\xff\xff\xff\xff" + b"\x00\x00\x00\x09abc")
    doc = _run_json(capsys, "--raw", str(raw))
    (mine,) = doc["connections"]
    assert [(f["header"], f["signal"]) for f in mine["frames"]] == [(5, None), (-1, "BNET_EOD")]
    assert mine["trailing_bytes"]["i2a"] == 7


def _rewrite(pcap: Path, out: Path, edit: Any) -> None:
    with open(pcap, "rb") as fh:
        packets = list(dpkt.pcap.Reader(fh))
    packets = edit(packets)
    with open(out, "wb") as fh:
        writer = dpkt.pcap.Writer(fh, linktype=dpkt.pcap.DLT_EN10MB)
        for ts, buf in packets:
            writer.writepkt(buf, ts)


def _has_payload(buf: bytes) -> bool:
    return len(dpkt.ethernet.Ethernet(buf).data.data.data) > 0


def test_reassembly_survives_reordering_and_duplicates(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """TCP segments are reassembled by sequence number: with data segments swapped and repeated the
    frames and raw streams are those of the recording."""
    pcap = DATA / "console-named-clear.pcap"
    rng = random.Random(6)

    def edit(packets: list[tuple[float, bytes]]) -> list[tuple[float, bytes]]:
        out = list(packets)
        data_at = [i for i, (_, b) in enumerate(out) if _has_payload(b)]
        for i in rng.sample(data_at[:-1], 6):
            out[i], out[i + 1] = out[i + 1], out[i]  # out of order
        for i in sorted(rng.sample(data_at, 6), reverse=True):
            out.insert(i + 2, out[i])  # a retransmission, a little later
        return out

    edited = tmp_path / "shuffled.pcap"
    _rewrite(pcap, edited, edit)
    doc = _run_json(capsys, "--show-secrets", str(edited))
    conn = _recording(pcap).connections[0]
    (mine,) = doc["connections"]
    assert conn.raw is not None
    assert base64.b64decode(mine["raw_i2a_b64"]) == conn.raw["i2a"]
    assert base64.b64decode(mine["raw_a2i_b64"]) == conn.raw["a2i"]
    for direction in ("i2a", "a2i"):
        assert [(f["header"], base64.b64decode(f["payload_b64"])) for f in mine["frames"] if f["dir"] == direction] \
            == [(f.header, f.payload) for f in conn.frames_in(direction)]
    assert any("retransmitted bytes ignored" in n for n in doc["notes"])


def test_a_lost_segment_is_reported_and_decoding_stops_there(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A data segment missing from the capture leaves a gap: the frames before it are decoded, the
    gap is named in the notes, and nothing after it is invented."""
    pcap = DATA / "console-named-clear.pcap"

    def edit(packets: list[tuple[float, bytes]]) -> list[tuple[float, bytes]]:
        data_at = [i for i, (_, b) in enumerate(packets) if _has_payload(b)]
        return [p for i, p in enumerate(packets) if i != data_at[10]]

    edited = tmp_path / "lossy.pcap"
    _rewrite(pcap, edited, edit)
    doc = _run_json(capsys, "--show-secrets", str(edited))
    conn = _recording(pcap).connections[0]
    (mine,) = doc["connections"]
    assert any("bytes missing" in n for n in doc["notes"])
    got = [(f["dir"], f["header"], base64.b64decode(f["payload_b64"])) for f in mine["frames"]]
    want = [(f.dir, f.header, f.payload) for f in conn.frames]
    assert 0 < len(got) < len(want)
    for direction in ("i2a", "a2i"):
        mine_dir = [g for g in got if g[0] == direction]
        assert mine_dir == [w for w in want if w[0] == direction][: len(mine_dir)]


def test_closed_by_reads_fin_and_rst(capsys: pytest.CaptureFixture[str]) -> None:
    """closed_by is the side of the first FIN or RST, and unknown while a connection stays open."""
    seen = set()
    for pcap in PCAPS:
        doc = _run_json(capsys, str(pcap))
        for conn, mine in zip(_recording(pcap).connections, doc["connections"]):
            assert mine["closed_by"] == conn.closed_by
            seen.add(conn.closed_by)
    assert {"initiator", "acceptor", "unknown"} <= seen


def test_tls_info_is_read_from_a_clienthello() -> None:
    """tls_info reads the offered versions and the PSK identity from the ClientHello and the chosen
    version from the ServerHello (here from a console-named-psk recording)."""
    conn = next(c for c in recordings() if c.scenario == "console-named-psk").connections[0]
    assert conn.raw is not None
    info = transcript.tls_info(conn.raw["i2a"], conn.raw["a2i"])
    assert info == {
        "client_hello_version": "0x0303",
        "client_supported_versions": ["0x0304", "0x0303", "0x0302", "0x0301"],
        "psk_identity": "R_CONSOLE\x1eadmin",
        "version": "TLSv1.3",
    }


def test_text_rule_of_the_readme() -> None:
    """text: printable ASCII, TAB, CR, LF, 0x01, 0x1E and one trailing NUL; anything else is binary."""
    assert transcript.is_text(b"Hello a\x01b calling\r\n\t\x1e")
    assert transcript.is_text(b"X5JOZ9+s6W/3h4/sCX/+eD\x00")
    assert not transcript.is_text(b"two NULs\x00\x00")
    assert not transcript.is_text(b"\x00inside")
    assert not transcript.is_text(b"caf\xc3\xa9")
    assert not transcript.is_text(b"\x7f")


def test_help_and_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    """--help documents the outputs and exits 0; no input, or a file that is no capture, fails."""
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for option in ("--json", "--mermaid", "--raw", "--direction", "--show-secrets"):
        assert option in out
    with pytest.raises(SystemExit) as exc:
        main([])
    assert exc.value.code == 2
    assert main([str(DATA / "README.md")]) == 2


def test_sequence_numbers_wrap_and_four_tuples_are_reused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Stream offsets survive a sequence number wrap past 2**32, and a new SYN on a four-tuple that
    was used before starts a new connection."""
    pcap = DATA / "console-named-clear.pcap"
    conn = _recording(pcap).connections[0]

    def edit(packets: list[tuple[float, bytes]]) -> list[tuple[float, bytes]]:
        first = dpkt.ethernet.Ethernet(packets[0][1]).data.data  # the SYN
        shift_i = (2**32 - 50 - first.seq) % 2**32  # the console's stream wraps after 49 bytes
        shift_a = 12345
        out = list(packets)
        last = packets[-1][0]
        for ts, buf in packets:
            eth = dpkt.ethernet.Ethernet(buf)
            tcp = eth.data.data
            mine, theirs = (shift_i, shift_a) if tcp.sport == conn.initiator["port"] else (shift_a, shift_i)
            tcp.seq = (tcp.seq + mine) % 2**32
            if tcp.flags & dpkt.tcp.TH_ACK:
                tcp.ack = (tcp.ack + theirs) % 2**32
            out.append((ts - packets[0][0] + last + 1.0, bytes(eth)))
        return out

    edited = tmp_path / "twice.pcap"
    _rewrite(pcap, edited, edit)
    doc = _run_json(capsys, "--show-secrets", str(edited))
    assert len(doc["connections"]) == 2
    assert conn.raw is not None
    for mine in doc["connections"]:
        assert mine["initiator"]["port"] == conn.initiator["port"]
        assert base64.b64decode(mine["raw_i2a_b64"]) == conn.raw["i2a"]
        assert base64.b64decode(mine["raw_a2i_b64"]) == conn.raw["a2i"]
        assert [f["t"] for f in mine["frames"]] == [f.t for f in conn.frames]
        assert mine["closed_by"] == conn.closed_by
