"""The Director's data-channel setup commands and their replies (``bareosproto.jobcmds``).

Every setup command and reply in the recordings parses and re-formats to the same bytes;
the other forms (TLS-first ``ssl=``, restore ``Authorization=``, ``setauthorization``,
``replicate``) are literals from PROTOCOL.md 7.5-7.8 and 10.2 and the upstream formats.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from recordings import A2I, I2A, cleartext_connections

from bareosproto.errors import LocalProtocolError, RemoteProtocolError
from bareosproto.frames import encode_message
from bareosproto.jobcmds import (
    FdJobCommand,
    FdJobOk,
    ListenCommand,
    PassiveClientCommand,
    ReplicateCommand,
    RunCommand,
    SdJobCommand,
    SdJobOk,
    SetAuthorizationCommand,
    SetupReply,
    StorageCommand,
    parse_fd_command,
    parse_sd_command,
    parse_setup_reply,
)
from bareosproto.keys import Secret

KEY = "GGJO-FNNA-AAOB-CFOO-BGGG-CAHD-NEFG-BMIB"
SETUP_PREFIXES = (b"JobId=", b"storage ", b"setauthorization", b"passive", b"replicate", b"listen", b"run")
REPLY_PREFIXES = (b"3000 OK Job", b"2000 OK Job", b"2000 OK storage", b"2000 OK passive client",
                  b"3000 OK replicate", b"2000 OK Authorization")


def recorded_lines() -> list[tuple[str, str, bytes]]:
    """(label, "fd"|"sd"|"reply", payload) of every setup line and reply in the recordings."""
    out = []
    for conn in cleartext_connections():
        if conn.kind not in ("dir-fd", "dir-sd", "fd-dir-client-initiated"):
            continue
        director_dir = A2I if conn.kind == "fd-dir-client-initiated" else I2A
        daemon = "sd" if conn.kind == "dir-sd" else "fd"
        for f in conn.frames:
            p = f.payload
            if f.dir == director_dir and p.startswith(SETUP_PREFIXES):
                out.append((f"{conn.label}#{f.index}", daemon, p))
            elif f.dir != director_dir and p.startswith(REPLY_PREFIXES):
                out.append((f"{conn.label}#{f.index}", "reply", p))
    return out


RECORDED = recorded_lines()


def test_the_recordings_hold_every_kind_of_setup_line() -> None:
    """The replay below covers the FD job command, storage (backup and restore forms), passive
    client, run, and the SD's and FD's job replies and OK lines."""
    kinds = {type(parse_fd_command(p) if d == "fd" else parse_sd_command(p) if d == "sd" else parse_setup_reply(p))
             for _, d, p in RECORDED}
    assert {FdJobCommand, SdJobCommand, StorageCommand, PassiveClientCommand, RunCommand, SdJobOk,
            FdJobOk, SetupReply} <= kinds
    assert len(RECORDED) >= 40


@pytest.mark.parametrize("label,daemon,payload", RECORDED, ids=[r[0] for r in RECORDED])
def test_every_recorded_setup_line_parses_and_reformats_to_the_same_bytes(
        label: str, daemon: str, payload: bytes) -> None:
    """Parsed as the receiving daemon parses it and formatted as the Director (or daemon) writes it,
    each recorded line comes back byte for byte."""
    if daemon == "fd":
        parsed = parse_fd_command(payload)
    elif daemon == "sd":
        parsed = parse_sd_command(payload)
    else:
        parsed = parse_setup_reply(payload)
    assert parsed is not None
    assert parsed.to_bytes() == payload


def test_the_recorded_restore_storage_command_carries_the_session_key() -> None:
    """``storage address=127.0.0.1 port=9113 ssl=0 Authorization=<key>`` (restore-clear, 15.20)."""
    cmd = StorageCommand.parse(b"storage address=127.0.0.1 port=9113 ssl=0 Authorization=" + KEY.encode() + b"\n")
    assert cmd == StorageCommand("127.0.0.1", 9113, 0, Secret(KEY))
    assert cmd.authorization is not None and cmd.authorization.reveal() == KEY.encode()
    assert KEY not in repr(cmd)  # the key never shows itself


def test_fd_job_command_with_ssl_is_read_first() -> None:
    """The FD scans the TLS-first form (with `` ssl=``) first, then the old one (PROTOCOL.md 15.29)."""
    line = b"JobId=21 Job=backup-ci.2026-11-30_09.20.45_18 SDid=7 SDtime=1796030307 Authorization=" + KEY.encode()
    with_ssl = FdJobCommand.parse(line + b" ssl=4\n")
    without = FdJobCommand.parse(line + b"\n")
    assert with_ssl.ssl == 4 and without.ssl is None
    assert with_ssl.to_bytes() == line + b" ssl=4\n"
    assert len(with_ssl.to_bytes()) == len(without.to_bytes()) + 6  # the recorded 6 bytes
    assert with_ssl.authorization == Secret(KEY)


@pytest.mark.parametrize("cls,line,reply", [
    (FdJobCommand, b"JobId=x Job=\n", b"2901 Bad Job\n"),
    (StorageCommand, b"storage addr=1\n", b"2902 Bad storage\n"),
    (SetAuthorizationCommand, b"setauthorization Key=1\n", b"2902 Bad setauthorization\n"),
    (PassiveClientCommand, b"passive client address=h port=x ssl\n",
     b"3991 Bad passive client command: passive client address=h port=x ssl\n\n"),
    (ReplicateCommand, b"replicate JobId=1\n", b"3991 Bad replicate command: replicate JobId=1\n\n"),
    (SdJobCommand, b"JobId=1 job=x\n", b"3915 Bad Job command. stat=-1 CMD: JobId=1 job=x\n\n"),
])
def test_a_line_the_daemon_cannot_scan_gets_its_refusal(cls: type, line: bytes, reply: bytes) -> None:
    """Each daemon's refusal, framed on the error: ``2901 Bad Job``, ``2902 Bad %s``, ``3991 Bad %s
    command: %s`` and ``3915 Bad Job command. stat=%d CMD: %s`` (the SD echoes the line with its
    newline, then adds its own)."""
    with pytest.raises(RemoteProtocolError) as info:
        cls.parse(line)
    assert info.value.reply == encode_message(reply)


def test_the_replicate_command_as_the_director_writes_it() -> None:
    """``replicate JobId=%u Job=%s address=%s port=%u ssl=%u Authorization=%s\\n`` (migrate.cc),
    the reading SD's scan of it, and the exact OK line the Director compares with."""
    cmd = ReplicateCommand(22, "copy.2026-11-30_09.40.00_30", "sd2.lan", 9103, 4, Secret(KEY))
    line = (b"replicate JobId=22 Job=copy.2026-11-30_09.40.00_30 address=sd2.lan port=9103 ssl=4 "
            b"Authorization=" + KEY.encode() + b"\n")
    assert cmd.to_bytes() == line
    assert ReplicateCommand.parse(line) == cmd
    assert parse_setup_reply(b"3000 OK replicate\n") is SetupReply.REPLICATE_OK


def test_passive_and_setauthorization_and_the_lines_without_newline() -> None:
    """``passive client address=%s port=%u ssl=%u\\n`` -> ``2000 OK passive client\\n`` (a 2000 code
    from the SD), ``setauthorization Authorization=%s\\n`` -> ``2000 OK Authorization\\n``; ``run``
    and ``listen`` carry no newline."""
    assert PassiveClientCommand("10.0.0.5", 9102, 4).to_bytes() == b"passive client address=10.0.0.5 port=9102 ssl=4\n"
    assert SetAuthorizationCommand(KEY).to_bytes() == b"setauthorization Authorization=" + KEY.encode() + b"\n"
    assert RunCommand().to_bytes() == b"run" and ListenCommand().to_bytes() == b"listen"
    assert parse_sd_command(b"listen") == ListenCommand()
    assert parse_setup_reply(b"2000 OK passive client\n") is SetupReply.PASSIVE_CLIENT_OK
    assert parse_setup_reply(b"2000 OK Authorization\n") is SetupReply.AUTHORIZATION_OK


def test_names_with_spaces_are_bashed_in_the_sd_job_command() -> None:
    """``job_name``, ``client_name``, ``FileSet`` and ``BackupFormat`` go bashed (0x01 for spaces)
    and come back unbashed."""
    cmd = SdJobCommand(5, "j.2026-11-30_09.00.00_01", "my job", "my client", 66, 70, fileset="Full Set")
    line = cmd.to_bytes()
    assert b"job_name=my\x01job client_name=my\x01client" in line and b"FileSet=Full\x01Set" in line
    assert SdJobCommand.parse(line) == cmd


def test_fields_that_cannot_be_one_word_are_refused_when_building() -> None:
    """An address or job name with a space, or an empty key, cannot be written (LocalProtocolError)."""
    with pytest.raises(LocalProtocolError):
        StorageCommand("a b", 1, 0).to_bytes()
    with pytest.raises(LocalProtocolError):
        FdJobCommand(1, "job name", 1, 1, Secret(KEY)).to_bytes()
    with pytest.raises(LocalProtocolError):
        SetAuthorizationCommand(Secret(b"")).to_bytes()


def test_dispatch_follows_the_daemons_prefix_tables() -> None:
    """FD and SD select the command by the prefix of its table entry; a line that is none of ours is
    ``None``; the SD's ``run`` also takes ``run`` followed by anything."""
    assert parse_fd_command(b"status") is None
    assert parse_sd_command(b"use storage=x") is None
    assert parse_sd_command(b"run") == RunCommand()
    assert isinstance(parse_fd_command(b"storage address=h port=1 ssl=0\n"), StorageCommand)


words = st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=40)
keys = st.text(alphabet="ABCDEFGHIJKLMNOP-", min_size=1, max_size=60)
u32 = st.integers(min_value=0, max_value=2**31 - 1)


@given(address=words, port=st.integers(0, 65535), ssl=st.sampled_from([0, 1, 2, 4]),
       key=st.none() | keys)
def test_storage_command_round_trips(address: str, port: int, ssl: int, key: str | None) -> None:
    """Any storage command the Director can write is read back unchanged by the FD's scan."""
    cmd = StorageCommand(address, port, ssl, key)
    assert StorageCommand.parse(cmd.to_bytes()) == cmd


@given(job_id=u32, job=words.filter(lambda w: len(w) <= 127), sd_id=u32, sd_time=u32, key=keys,
       ssl=st.none() | st.sampled_from([0, 4]))
def test_fd_job_command_round_trips(job_id: int, job: str, sd_id: int, sd_time: int, key: str,
                                    ssl: int | None) -> None:
    """Any FD job command the Director can write is read back unchanged."""
    cmd = FdJobCommand(job_id, job, sd_id, sd_time, key, ssl)
    assert FdJobCommand.parse(cmd.to_bytes()) == cmd


@given(job_id=u32, job=words.filter(lambda w: len(w) <= 127), address=words, port=st.integers(0, 65535),
       ssl=st.sampled_from([0, 4]), key=keys)
def test_replicate_command_round_trips(job_id: int, job: str, address: str, port: int, ssl: int,
                                       key: str) -> None:
    cmd = ReplicateCommand(job_id, job, address, port, ssl, key)
    assert ReplicateCommand.parse(cmd.to_bytes()) == cmd
