"""The demo (``python -m bareosproto.demo``), short variant, as a user runs it.

Each run is a subprocess (the demo runs the global Twisted reactor, which
starts once per process): a Director, an SD, an active, a passive and a
client-initiated FD, a console and a tray monitor on loopback, three backups
of a generated folder.  Exit status 0 means every connection authenticated,
every stored copy matched its source and the pool showed the waiting client
before and a fresh one after the client-initiated job.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

import pytest
from twisted.internet.defer import Deferred, succeed

from bareosproto.demo import _TYPE_NAMES, FrameTracer, attributes_record, parse_size, to_base64
from bareosproto.demo.topology import next_command
from bareosproto.errors import RemoteProtocolError
from bareosproto.events import Message, SignalFrame
from bareosproto.frames import encode_message
from bareosproto.jobcmds import parse_fd_command
from bareosproto.signals import Signal

#: one row per connection type of the demo (PROTOCOL.md 7 numbers)
TYPES = [f"{name} ({conn_type.value})" for conn_type, name in _TYPE_NAMES.items()]
ROWS = 15  # 2 consoles, 2 client-initiated, 3 x (dir -> sd, dir -> fd or pooled, data), 3 monitor
SHORT = ["--size", "200K"]


def run_demo(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bareosproto.demo", *args], capture_output=True, text=True,
                          timeout=120)


def table(out: str) -> list[str]:
    """The rows of the connection table."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("connections"))
    rows = []
    for line in lines[start + 2:]:
        if not line.strip():
            break
        rows.append(line)
    return rows


@pytest.mark.parametrize("mode", ["tls", "cleartext"])
def test_demo_runs_every_connection_and_every_checksum_matches(mode: str) -> None:
    """Default TLS-PSK and ``--cleartext``: exit 0, one row per connection naming every type, TLS
    1.3 on every row (or cleartext on every row), three jobs, all checksums matched, and the
    waiting client seen before and replaced after the client-initiated job."""
    args = SHORT + (["--cleartext"] if mode == "cleartext" else [])
    result = run_demo(*args)
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    rows = table(out)
    assert len(rows) == ROWS, rows
    for name in TYPES:
        assert any(name in row for row in rows), name
    expected = "cleartext" if mode == "cleartext" else "TLSv1.3"
    assert all(f" {expected} " in row and re.search(r" ok ", row) for row in rows), rows
    if mode == "tls":
        assert sum(" R_JOB " in row for row in rows) == 3  # the data channels use the job's PSK identity
    assert "all checksums match (15/15)" in out
    assert out.count("ci-fd") >= 4 and "(pool: 2 added, 1 taken; the waiting connection is a new one)" in out
    assert "waited in the pool before job 3 (yes) and a fresh connection waits after it (yes)" in out
    assert re.findall(r"job \d  \S+ +\S+ +[\d.]+ MB in [\d.]+ s +[\d.]+ MB/s", out), out
    assert out.rstrip().endswith("everything matched: exit status 0")


def test_a_corrupted_stored_file_makes_the_demo_fail() -> None:
    """``--corrupt`` flips one byte of one stored copy: that copy DIFFERS and the exit status is 1,
    though every connection still authenticated."""
    result = run_demo("--corrupt", "--cleartext", *SHORT)
    out = result.stdout
    assert result.returncode == 1, out + result.stderr
    assert "DIFFERS" in out and "CHECKSUMS DIFFER (14/15)" in out
    assert "15/15 connections authenticated" in out
    assert "SOMETHING DID NOT MATCH: exit status 1" in out


def test_trace_prints_every_frame_and_summarises_data() -> None:
    """``--trace``: the Hellos, CRAM-MD5 lines and job commands of every connection one line each,
    data frames folded into one summary line per run, session keys never printed."""
    result = run_demo("--trace", "--cleartext", "--size", "64K")
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    for text in ("Hello Client ci-fd FdProtocolVersion=54 calling", "Hello Director bareos-dir calling",
                 "Hello Start Job backup-demo-fd.", "Hello Storage calling Start Job backup-passive-fd.",
                 "Hello tray-monitor calling version", "auth cram-md5 <", "1000 OK auth",
                 "storage address=127.0.0.1 port=", "passive client address=127.0.0.1 port=",
                 "append open session", "append close session", "3000 OK close Status = 84",
                 "2800 End Job TermCode=84 JobFiles=5", "BNET_TERMINATE", "status dir"):
        assert text in out, text
    assert re.search(r"\[\d+ data frames?, \d+ bytes\]", out)
    assert "Authorization=<session key>" in out
    assert not re.search(r"Authorization=[A-P]{4}-", out)
    assert all(len(line) < 140 for line in out.splitlines() if line.startswith("  | "))


def test_parse_size() -> None:
    """``--size`` takes bytes or K/M/G (powers of 1024) and refuses less than 64 bytes or junk."""
    assert parse_size("4M") == 4 << 20
    assert parse_size("512k") == 512 << 10
    assert parse_size("1.5MiB") == 3 << 19
    assert parse_size("100") == 100
    for bad in ("12", "lots", "4T"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_size(bad)


def test_attribute_record_as_recorded(tmp_path: Path) -> None:
    """The stat fields are Bareos' integer base64 (0o100644 is ``IGk``, 4096 ``BAA``), and the
    record is ``<FileIndex> 3 <path>\\0<stat>\\0\\0\\0`` then ``0\\0`` as in ``backup-clear``."""
    assert (to_base64(0o100644), to_base64(4096), to_base64(0), to_base64(45)) == ("IGk", "BAA", "A", "t")
    path = tmp_path / "a b"
    path.write_bytes(b"x" * 45)
    path.chmod(0o644)
    record = attributes_record(7, str(path), path.stat())
    assert record.startswith(b"7 3 " + str(path).encode() + b"\0")
    assert record.endswith(b" C\0\0\x000\0")
    fields = record.split(b"\0")[1].split()
    assert len(fields) == 16 and fields[2] == b"IGk" and fields[3] == b"B" and fields[7] == b"t"


def test_tracer_folds_data_frames(capsys: pytest.CaptureFixture[str]) -> None:
    """Consecutive binary frames in one direction print as one line; text frames as themselves."""
    from bareosproto import Message, Signal, SignalFrame

    tracer = FrameTracer("fd->sd")
    tracer("send", Message(b"1 2 0"))
    for _ in range(3):
        tracer("send", Message(bytes(range(256))))
    tracer("send", SignalFrame(Signal.BNET_EOD))
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3
    assert "1 2 0" in lines[0] and "[3 data frames, 768 bytes]" in lines[1] and "BNET_EOD" in lines[2]


class _Director:
    """What the demo's job sessions use of a DaemonChannel: frames in, refusals out."""

    def __init__(self, *frames: Message | SignalFrame) -> None:
        self.frames = list(frames)
        self.refused: list[bytes] = []

    def read_command(self) -> Deferred[Message | SignalFrame]:
        return succeed(self.frames.pop(0))

    def send_refusal(self, error: RemoteProtocolError) -> None:
        self.refused.append(error.reply)


def next_of(director: _Director) -> object:
    result: list[object] = []
    Deferred.fromCoroutine(next_command(director, parse_fd_command)).addBoth(result.append)  # type: ignore[arg-type]
    return result[0]


def test_a_demo_session_reads_commands_skips_signals_and_ends_at_terminate_or_a_refusal() -> None:
    """The FD's and SD's job sessions share ``next_command``: a heartbeat is
    skipped, a command comes with its parse, TERMINATE ends the session, and a
    line the parser rejects is refused as the FD refuses it, then ends it."""
    level = b"level = full\n"
    director = _Director(SignalFrame(Signal.BNET_HEARTBEAT), Message(level), SignalFrame(Signal.BNET_TERMINATE))
    assert next_of(director) == (level, parse_fd_command(level))
    assert next_of(director) is None
    assert director.frames == [] and director.refused == []

    bad = _Director(Message(b"JobId=\n"), Message(level))
    assert next_of(bad) is None
    assert bad.refused == [encode_message(b"2901 Bad Job\n")]
    assert bad.frames == [Message(level)]  # nothing read after the refusal
