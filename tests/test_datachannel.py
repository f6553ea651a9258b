"""The data session state machine (``bareosproto.datachannel``) against the recordings and the rules.

Every recorded FD-SD and SD-FD (passive) session is driven through our
:class:`DataSession` from both sides: as the commander (the FD) we must write
exactly the FD's frames, as the answerer (the SD) exactly the SD's, in the
recorded order.  The wire texts in the expected values are literals from the
recordings and PROTOCOL.md 7.6, 7.8 and 15.21/15.22.
"""

from __future__ import annotations

import re
from typing import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from recordings import A2I, I2A, Connection, Frame, cleartext_connections

from bareosproto.datachannel import (
    ANSWERER_TURN,
    TRANSITIONS,
    CloseConfirmed,
    CloseRequested,
    DataEnd,
    DataReady,
    DataRequested,
    DataSession,
    DataState,
    DataStored,
    EndRequested,
    Mode,
    OpenRequested,
    PeerTerminated,
    ReadEnd,
    ReadParams,
    RecordData,
    RecordHeader,
    SessionClosed,
    SessionEnded,
    SessionKind,
    SessionRefused,
    Side,
    StreamData,
    StreamEnd,
    StreamHeader,
    TicketGranted,
    transitions_as_dot,
)
from bareosproto.errors import LocalProtocolError, RemoteProtocolError
from bareosproto.events import ConnectionClosed, Message, SignalFrame
from bareosproto.frames import encode_message, encode_signal
from bareosproto.signals import Signal

EOD = -1
TERMINATE = -4
TERMINATE_BYTES = b"\xff\xff\xff\xfc"
EOD_BYTES = b"\xff\xff\xff\xff"

DATA_KINDS = {"fd-sd": I2A, "sd-fd-passive": A2I}  # kind -> direction in which the FD (commander) sends


def data_connections() -> list[Connection]:
    return [c for c in cleartext_connections() if c.kind in DATA_KINDS]


def session_frames(conn: Connection) -> list[Frame]:
    """The frames after the two-way CRAM-MD5 (the second ``1000 OK auth``)."""
    oks = [f.index for f in conn.frames if f.payload == b"1000 OK auth\n"]
    assert len(oks) == 2, conn.label
    return list(conn.frames[oks[1] + 1 :])


def as_event(frame: Frame) -> Message | SignalFrame:
    return SignalFrame(frame.header) if frame.header < 0 else Message(frame.payload)


def wire(out: bytes | int) -> bytes:
    return encode_signal(out) if isinstance(out, int) else encode_message(out)


def frame_id(frame: Frame) -> tuple[int, bytes]:
    """What a frame is, for truncated recordings too: (header, first 64 payload bytes)."""
    return (frame.header, frame.payload[:64])


def out_id(out: bytes | int) -> tuple[int, bytes]:
    return (out, b"") if isinstance(out, int) else (len(out), out[:64])


def recorded_int(frames: list[Frame], pattern: bytes) -> int:
    for f in frames:
        m = re.fullmatch(pattern, f.payload)
        if m:
            return int(m.group(1))
    raise AssertionError(f"no {pattern!r} recorded")


# -- the commander (the FD) --------------------------------------------------------


def drive_commander(session: DataSession, frame: Frame) -> None:
    """Make our commander send what the recorded FD sent, through the public API."""
    p = frame.payload
    state = session.state
    if frame.header == TERMINATE:
        session.terminate()
    elif frame.header == EOD:
        if state in (DataState.APPEND_STREAM, DataState.REPLICATE_STREAM):
            session.end_stream()
        else:
            session.end_data()
    elif state in (DataState.APPEND_HEADER, DataState.REPLICATE_HEADER):
        m = re.fullmatch(rb"(\d+) (\d+) 0", p)
        assert m, p
        session.send_header(int(m.group(1)), int(m.group(2)))
    elif state in (DataState.APPEND_STREAM, DataState.REPLICATE_STREAM):
        session.send_data(p)
    elif p == b"append open session\n":
        session.append_open()
    elif re.fullmatch(rb"append data \d+\n", p):
        session.append_data()
    elif re.fullmatch(rb"append end session \d+\n", p):
        session.append_end()
    elif re.fullmatch(rb"append close session \d+\n", p):
        session.append_close()
    elif re.fullmatch(rb"read data \d+\n", p):
        session.read_data()
    elif re.fullmatch(rb"read close session \d+\n", p):
        session.read_close()
    else:
        m = re.fullmatch(rb"read open session = (\S+) (\d+) (\d+) (\d+) (\d+) (\d+) (\d+)\n", p)
        assert m, f"unexpected commander frame {p!r}"
        session.read_open(ReadParams(m.group(1).decode(), *(int(g) for g in m.groups()[1:])))


@pytest.mark.parametrize("conn", data_connections(), ids=lambda c: c.label)
def test_our_commander_sends_exactly_what_the_recorded_fd_sent(conn: Connection) -> None:
    """Driven through its API in the recorded order, our FD side writes every recorded FD frame of
    the session (commands, stream headers without newline, data, EODs, TERMINATEs), byte for byte,
    and accepts every recorded SD frame without writing anything in reply."""
    commander_dir = DATA_KINDS[conn.kind]
    session = DataSession(SessionKind.FD_SD, Side.COMMANDER)
    for frame in session_frames(conn):
        if frame.dir == commander_dir:
            drive_commander(session, frame)
            out = session.frames_to_send()
            assert len(out) == 1
            if frame.truncated:  # heartbeat-clear: only the first 64 bytes were kept
                assert out[0] == frame.payload
            else:
                assert wire(out[0]) == frame.wire
        else:
            session.receive_frame(as_event(frame))
            assert session.frames_to_send() == []
    assert session.state is DataState.TERMINATED
    session.receive_frame(ConnectionClosed())  # the close that follows is no error


@pytest.mark.parametrize("conn", data_connections(), ids=lambda c: c.label)
def test_our_commander_reports_each_recorded_reply_as_its_event(conn: Connection) -> None:
    """The SD's replies come out as events in order: the ticket, OK data, OK append data (or the
    records of a restore), OK end, the close status and the EOD after it."""
    commander_dir = DATA_KINDS[conn.kind]
    session = DataSession(SessionKind.FD_SD, Side.COMMANDER)
    events = []
    for frame in session_frames(conn):
        if frame.dir == commander_dir:
            drive_commander(session, frame)
            session.frames_to_send()
        else:
            events += session.receive_frame(as_event(frame))
    frames = session_frames(conn)
    ticket = recorded_int(frames, rb"3000 OK open ticket = (\d+)\n")
    status = recorded_int(frames, rb"3000 OK close Status = (\d+)\n")
    kinds = [type(e) for e in events]
    if conn.scenario == "restore-clear":
        records = [e for e in events if isinstance(e, RecordHeader)]
        data = [e for e in events if isinstance(e, RecordData)]
        assert events[:2] == [TicketGranted(Mode.READ, ticket), DataReady(Mode.READ)]
        recorded = [f for f in frames if f.payload.startswith(b"rechdr ")]
        assert len(records) == len(data) == len(recorded) == 12
        assert records[0] == RecordHeader(1, 1796030307, 1, 1, 99)
        assert [len(d.payload) for d in data] == [r.length for r in records]
        assert kinds[-3:] == [ReadEnd, CloseConfirmed, SessionClosed]
    else:
        assert events == [TicketGranted(Mode.APPEND, ticket), DataReady(Mode.APPEND),
                          DataStored(Mode.APPEND), SessionEnded(Mode.APPEND), CloseConfirmed(status),
                          SessionClosed(status)]
    assert events[-1] == SessionClosed(status)


# -- the answerer (the SD) ----------------------------------------------------------


def recorded_records(frames: list[Frame], answerer_dir: str) -> Iterator[tuple[list[int], bytes]]:
    sd = [f for f in frames if f.dir == answerer_dir]
    for i, f in enumerate(sd):
        m = re.fullmatch(rb"rechdr (\d+) (\d+) (\d+) (\d+) (\d+)", f.payload)
        if m:
            yield [int(g) for g in m.groups()], sd[i + 1].payload


@pytest.mark.parametrize("conn", data_connections(), ids=lambda c: c.label)
def test_our_answerer_replies_exactly_what_the_recorded_sd_replied(conn: Connection) -> None:
    """Fed the recorded FD frames, our SD side writes every recorded SD frame of the session in the
    same order (ticket, OK data, OK append data after the final EOD, OK end, close status and its
    EOD; for a restore the records and their EOD) and never writes one before the FD frame that
    caused it."""
    commander_dir = DATA_KINDS[conn.kind]
    answerer_dir = A2I if commander_dir == I2A else I2A
    frames = session_frames(conn)
    expected = [f for f in frames if f.dir == answerer_dir]
    session = DataSession(
        SessionKind.FD_SD, Side.ANSWERER,
        ticket=recorded_int(frames, rb"3000 OK open ticket = (\d+)\n"),
    )
    produced: list[bytes | int] = []
    for frame in frames:
        if frame.dir != commander_dir:
            continue
        events = session.receive_frame(as_event(frame))
        for event in events:
            if isinstance(event, DataEnd):
                events += session.data_stored(True)
            elif isinstance(event, DataRequested) and event.mode is Mode.READ:
                session.start_read()
                for (vid, vtime, fi, stream, length), data in recorded_records(frames, answerer_dir):
                    assert len(data) == length
                    session.send_record(vid, vtime, fi, stream, data)
                events += session.end_read()
        produced += session.frames_to_send()
        got = [out_id(o) for o in produced]
        assert got == [frame_id(f) for f in expected[: len(got)]]
    assert [out_id(o) for o in produced] == [frame_id(f) for f in expected]
    if not conn.has_truncated_frames:
        assert b"".join(wire(o) for o in produced) == b"".join(f.wire for f in expected)
    assert session.state is DataState.TERMINATED


@pytest.mark.parametrize("conn", data_connections(), ids=lambda c: c.label)
def test_our_answerer_reports_the_recorded_streams(conn: Connection) -> None:
    """The answerer's events rebuild the FD's streams: one StreamHeader per recorded header, the
    data frames in order, a StreamEnd per stream, one DataEnd; the FD's TERMINATE comes out as
    PeerTerminated, and the default close status is the one the SD reported (84 after a backup,
    82 for a restore's read session)."""
    commander_dir = DATA_KINDS[conn.kind]
    frames = session_frames(conn)
    session = DataSession(SessionKind.FD_SD, Side.ANSWERER, ticket=7)
    events = []
    for frame in frames:
        if frame.dir != commander_dir:
            continue
        new = session.receive_frame(as_event(frame))
        events += new
        for event in new:
            if isinstance(event, DataEnd):
                session.data_stored(True)
            elif isinstance(event, DataRequested) and event.mode is Mode.READ:
                session.start_read()
                session.end_read()
    status = recorded_int(frames, rb"3000 OK close Status = (\d+)\n")
    closes = [e for e in events if isinstance(e, CloseRequested)]
    assert [c.status for c in closes] == [status]
    assert isinstance(events[0], OpenRequested)
    assert PeerTerminated() in events
    if conn.scenario == "restore-clear":
        assert events[0] == OpenRequested(Mode.READ, ReadParams("DummyVolume", 2, 1796030307))
        return
    headers = [re.fullmatch(rb"(\d+) (\d+) 0", f.payload) for f in frames
               if f.dir == commander_dir and f.header > 0]
    expected_headers = [StreamHeader(int(m.group(1)), int(m.group(2))) for m in headers if m]
    assert [e for e in events if isinstance(e, StreamHeader)] == expected_headers
    assert sum(isinstance(e, StreamEnd) for e in events) == len(expected_headers)
    assert sum(isinstance(e, DataEnd) for e in events) == 1
    data = [e.payload for e in events if isinstance(e, StreamData)]
    assert len(data) == sum(1 for f in frames if f.dir == commander_dir and f.header > 0) - len(
        expected_headers) - 4  # minus the four command lines


# -- the table ---------------------------------------------------------------------


def test_every_input_of_the_table_is_sent_by_one_side_and_every_state_is_reachable() -> None:
    """The table is closed: every state but FAILED is reached from IDLE, and no (state, input)
    key mixes up who sends what (an answerer's input never follows a state in which only the
    commander may speak, and the other way round)."""
    reached = {DataState.IDLE}
    changed = True
    while changed:
        changed = False
        for (state, _inp), (_action, nxt) in TRANSITIONS.items():
            if state in reached and nxt not in reached:
                reached.add(nxt)
                changed = True
    assert reached == set(DataState) - {DataState.FAILED}
    for (state, inp) in TRANSITIONS:
        if state in ANSWERER_TURN:
            assert inp.side is Side.ANSWERER
    assert "digraph" in transitions_as_dot()


def test_the_commander_may_not_skip_a_step() -> None:
    """Calls out of order are LocalProtocolErrors and send nothing: data before the ticket, a
    header before OK data, end_data() inside a stream, replication commands on an FD-SD channel."""
    s = DataSession(SessionKind.FD_SD, Side.COMMANDER)
    with pytest.raises(LocalProtocolError):
        s.append_data()
    s.append_open()
    with pytest.raises(LocalProtocolError):
        s.append_data()  # the ticket has not come
    s.receive_frame(Message(b"3000 OK open ticket = 3\n"))
    s.append_data()
    with pytest.raises(LocalProtocolError):
        s.send_header(1, 1)  # 3000 OK data has not come
    s.receive_frame(Message(b"3000 OK data\n"))
    s.send_header(1, 1)
    with pytest.raises(LocalProtocolError):
        s.end_data()
    with pytest.raises(LocalProtocolError):
        s.start_replicate()
    assert s.frames_to_send() == [b"append open session\n", b"append data 3\n", b"1 1 0"]


@pytest.mark.parametrize("file_indexes,ok", [
    ([1, 1, 2, 3, 3], True),
    ([2], False),
    ([1, 3], False),
    ([1, 2, 1], False),
    ([0], False),
])
def test_file_indexes_start_at_one_and_advance_by_at_most_one(file_indexes: list[int], ok: bool) -> None:
    """FileIndex must be positive and equal to or one above the previous one (``append.cc``); the
    commander refuses to send a bad one, the answerer fails the append with ``3999 Failed append``,
    ``3903 Error append data`` and TERMINATE."""
    c = ready_commander(SessionKind.FD_SD)
    a = ready_answerer(SessionKind.FD_SD)
    failed = False
    for fi in file_indexes:
        try:
            a.receive_frame(Message(b"%d 1 0" % fi))
            a.receive_frame(SignalFrame(EOD))
        except SessionRefused as exc:
            failed = True
            assert exc.frames == (b"3999 Failed append\n", b"3903 Error append data\n", TERMINATE)
            assert exc.reply == (encode_message(b"3999 Failed append\n")
                                 + encode_message(b"3903 Error append data\n") + TERMINATE_BYTES)
            break
        try:
            c.send_header(fi, 1)
        except LocalProtocolError:
            failed = True
            break
        c.end_stream()
    assert failed is not ok


def test_rerunning_jobs_may_start_at_any_positive_file_index() -> None:
    """An incomplete job that is rerun may begin with any FileIndex above 0."""
    a = ready_answerer(SessionKind.FD_SD, rerunning=True)
    assert a.receive_frame(Message(b"17 1 0")) == [StreamHeader(17, 1)]


def ready_commander(kind: SessionKind) -> DataSession:
    s = DataSession(kind, Side.COMMANDER)
    if kind is SessionKind.FD_SD:
        s.append_open()
        s.receive_frame(Message(b"3000 OK open ticket = 5\n"))
        s.append_data()
    else:
        s.start_replicate()
        s.receive_frame(Message(b"3000 OK start replicate ticket = 5\n"))
        s.replicate_data()
    s.receive_frame(Message(b"3000 OK data\n"))
    s.frames_to_send()
    return s


def ready_answerer(kind: SessionKind, **kw: object) -> DataSession:
    s = DataSession(kind, Side.ANSWERER, ticket=5, **kw)  # type: ignore[arg-type]
    if kind is SessionKind.FD_SD:
        s.receive_frame(Message(b"append open session\n"))
        s.receive_frame(Message(b"append data 5\n"))
    else:
        s.receive_frame(Message(b"start replicate\n"))
        s.receive_frame(Message(b"replicate data 5\n"))
    s.frames_to_send()
    return s


def test_a_replication_session_as_the_sds_speak_it() -> None:
    """SD-SD: ``start replicate`` -> ``3000 OK start replicate ticket = <t>``, ``replicate data <t>`` ->
    ``3000 OK data``, streams framed as in a backup with a final EOD -> ``3000 OK replicate data``,
    ``end replicate`` -> ``3000 OK end replicate``, then the reading SD's TERMINATE (PROTOCOL.md 7.8,
    15.22, 15.26); both sides agree frame for frame."""
    reader = DataSession(SessionKind.SD_SD, Side.COMMANDER)
    writer = DataSession(SessionKind.SD_SD, Side.ANSWERER, ticket=9)
    wire_log: list[tuple[str, bytes | int]] = []
    writer_events = []

    def pump() -> None:
        for out in reader.frames_to_send():
            wire_log.append(("r", out))
            new = writer.receive_frame(SignalFrame(out) if isinstance(out, int) else Message(out))
            writer_events.extend(new)
            for e in new:
                if isinstance(e, DataEnd):
                    writer.data_stored(True)
        for out in writer.frames_to_send():
            wire_log.append(("w", out))
            reader.receive_frame(SignalFrame(out) if isinstance(out, int) else Message(out))

    reader.start_replicate(); pump()
    reader.replicate_data(); pump()
    reader.send_header(1, 1); reader.send_data(b"attrs"); reader.end_stream()
    reader.send_header(1, 2); reader.send_data(b"x" * 1000); reader.send_data(b"y"); reader.end_stream()
    reader.end_data(); pump()
    reader.end_replicate(); pump()
    reader.terminate(); pump()
    assert wire_log == [
        ("r", b"start replicate\n"), ("w", b"3000 OK start replicate ticket = 9\n"),
        ("r", b"replicate data 9\n"), ("w", b"3000 OK data\n"),
        ("r", b"1 1 0"), ("r", b"attrs"), ("r", EOD), ("r", b"1 2 0"), ("r", b"x" * 1000),
        ("r", b"y"), ("r", EOD), ("r", EOD), ("w", b"3000 OK replicate data\n"),
        ("r", b"end replicate\n"), ("w", b"3000 OK end replicate\n"), ("r", TERMINATE),
    ]
    assert reader.state is writer.state is DataState.TERMINATED
    assert writer_events[:2] == [OpenRequested(Mode.REPLICATE), DataRequested(Mode.REPLICATE, 9)]


@pytest.mark.parametrize("kind,line,reply", [
    (SessionKind.FD_SD, b"append data 1\n", b"3902 Error session not opened\n"),
    (SessionKind.FD_SD, b"append close session 1\n", b"3902 Error session not opened\n"),
    (SessionKind.FD_SD, b"read data 1\n", b"3902 Error session not opened\n"),
    (SessionKind.FD_SD, b"bogus\n", b"3900 Invalid command\n"),
    (SessionKind.FD_SD, b"start replicate\n", b"3900 Invalid command\n"),
    (SessionKind.SD_SD, b"replicate data 1\n", b"3902 Error replicate session not opened\n"),
    (SessionKind.SD_SD, b"append open session\n", b"3900 Invalid command\n"),
])
def test_commands_without_an_open_session_are_refused_as_the_sd_does(
        kind: SessionKind, line: bytes, reply: bytes) -> None:
    """``stored/fd_cmds.cc`` / ``sd_cmds.cc``: a data, end or close command without an open session
    gets ``3902``, an unknown command ``3900 Invalid command``, each followed by TERMINATE."""
    s = DataSession(kind, Side.ANSWERER)
    with pytest.raises(SessionRefused) as info:
        s.receive_frame(Message(line))
    assert info.value.frames == (reply, TERMINATE)
    assert s.state is DataState.FAILED
    with pytest.raises(RemoteProtocolError):
        s.receive_frame(Message(b"append open session\n"))


@pytest.mark.parametrize("kind,line,reply", [
    (SessionKind.FD_SD, b"append open session\n", b"3901 Error session already open\n"),
    (SessionKind.FD_SD, b"read open session = V 1 1 0 0 0 0\n", b"3901 Error session already open\n"),
    (SessionKind.SD_SD, b"start replicate\n", b"3901 Error replicate session already open\n"),
])
def test_a_second_open_is_refused_with_3901(kind: SessionKind, line: bytes, reply: bytes) -> None:
    """Opening a session while one is open gets ``3901 Error ... already open`` and TERMINATE."""
    s = DataSession(kind, Side.ANSWERER)
    s.receive_frame(Message(b"append open session\n" if kind is SessionKind.FD_SD else b"start replicate\n"))
    s.frames_to_send()
    with pytest.raises(SessionRefused) as info:
        s.receive_frame(Message(line))
    assert info.value.frames == (reply, TERMINATE)


def test_signals_between_commands_are_ignored_and_a_failed_replication_still_says_ok() -> None:
    """Between commands the SD ignores signals and empty frames (``DoFdCommands()``); inside the
    data a heartbeat is skipped, a POLL answered ``2000 OK``; an unexpected signal fails the
    replication with ``3000 OK replicate data`` (sic, ``append.cc``), ``3903 Error replicate data``
    and TERMINATE."""
    s = DataSession(SessionKind.SD_SD, Side.ANSWERER, ticket=1)
    assert s.receive_frame(SignalFrame(int(Signal.BNET_HEARTBEAT))) == []
    assert s.receive_frame(SignalFrame(EOD)) == []
    assert s.receive_frame(Message(b"")) == []
    assert s.frames_to_send() == []
    s = ready_answerer(SessionKind.SD_SD)
    assert s.receive_frame(SignalFrame(int(Signal.BNET_HEARTBEAT))) == []
    assert s.receive_frame(SignalFrame(int(Signal.BNET_POLL))) == []
    assert s.frames_to_send() == [b"2000 OK\n"]
    with pytest.raises(SessionRefused) as info:
        s.receive_frame(SignalFrame(int(Signal.BNET_BREAK)))
    assert info.value.frames == (b"3000 OK replicate data\n", b"3903 Error replicate data\n", TERMINATE)


def test_a_terminate_inside_the_data_fails_the_append_without_a_reply() -> None:
    """A TERMINATE inside the data ends the append; the SD's socket is then terminated, so no
    failure line can go out."""
    s = ready_answerer(SessionKind.FD_SD)
    with pytest.raises(SessionRefused) as info:
        s.receive_frame(SignalFrame(TERMINATE))
    assert info.value.frames == ()


def test_storage_failure_is_answered_with_failed_append() -> None:
    """data_stored(False): ``3999 Failed append``, ``3903 Error append data``, TERMINATE."""
    s = ready_answerer(SessionKind.FD_SD)
    s.receive_frame(SignalFrame(EOD))
    s.data_stored(False)
    assert s.frames_to_send() == [b"3999 Failed append\n", b"3903 Error append data\n", TERMINATE]
    assert s.failed


def test_frames_sent_while_the_sd_is_busy_wait_until_it_answers() -> None:
    """The SD reads the next command only after it answered the final EOD (or sent the last
    record): a command that arrives earlier is handled then, not refused."""
    s = ready_answerer(SessionKind.FD_SD)
    s.receive_frame(SignalFrame(EOD))
    assert s.receive_frame(Message(b"append end session 5\n")) == []
    assert s.frames_to_send() == []
    events = s.data_stored(True)
    assert events == [EndRequested(Mode.APPEND, 5)]
    assert s.frames_to_send() == [b"3000 OK append data\n", b"3000 OK end\n"]


def test_the_commander_gives_up_on_a_bad_reply_with_a_terminate() -> None:
    """A reply the FD does not expect (here the SD's refusal) fails the session; the error carries
    the TERMINATE the FD sends before it closes."""
    s = DataSession(SessionKind.FD_SD, Side.COMMANDER)
    s.append_open()
    s.frames_to_send()
    with pytest.raises(SessionRefused) as info:
        s.receive_frame(Message(b"3901 Error session already open\n"))
    assert info.value.frames == (TERMINATE,)


def test_a_record_must_have_the_length_its_header_announces() -> None:
    """The FD compares the data frame with the ``rechdr`` length (``filed/restore.cc``)."""
    s = DataSession(SessionKind.FD_SD, Side.COMMANDER)
    s.read_open(ReadParams("DummyVolume", 1, 2))
    s.receive_frame(Message(b"3000 OK open ticket = 1\n"))
    s.read_data()
    s.receive_frame(Message(b"3000 OK data\n"))
    s.receive_frame(Message(b"rechdr 1 2 1 1 5"))
    with pytest.raises(RemoteProtocolError):
        s.receive_frame(Message(b"1234"))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(
    st.binary(max_size=30).map(Message),
    st.sampled_from([-1, -2, -4, -5, -6, -7, -10]).map(SignalFrame),
    st.sampled_from([b"append open session\n", b"append data 1\n", b"append end session 1\n",
                     b"append close session 1\n", b"read open session = V 1 2 0 0 0 0\n",
                     b"read data 1\n", b"read close session 1\n", b"1 1 0"]).map(Message),
), max_size=25))
def test_the_answerer_never_crashes_and_fails_only_with_a_refusal(frames: list[Message | SignalFrame]) -> None:
    """Any frame sequence leaves the answerer in a table state; every failure is a SessionRefused
    whose frames end in TERMINATE (or are empty after the peer's own TERMINATE)."""
    s = DataSession(SessionKind.FD_SD, Side.ANSWERER, ticket=1)
    for frame in frames:
        try:
            for event in s.receive_frame(frame):
                if isinstance(event, DataEnd):
                    s.data_stored(True)
                elif isinstance(event, DataRequested) and event.mode is Mode.READ:
                    s.start_read()
                    s.end_read()
            s.frames_to_send()
        except SessionRefused as exc:
            assert exc.frames == () or exc.frames[-1] == TERMINATE
            assert s.state is DataState.FAILED
            break
        assert s.state in {st for st, _ in TRANSITIONS} | {DataState.TERMINATED}


def test_data_to_send_frames_the_same_frames() -> None:
    """data_to_send() is frames_to_send() encoded: messages with their header, signals as 4 bytes."""
    s = DataSession(SessionKind.FD_SD, Side.COMMANDER)
    s.append_open()
    assert s.data_to_send() == encode_message(b"append open session\n")
    s.receive_data(encode_message(b"3000 OK open ticket = 2\n"))
    s.terminate()
    assert s.data_to_send() == TERMINATE_BYTES


def test_payloads_are_handed_over_without_a_copy() -> None:
    """The commander's frames_to_send() holds the very data object given to send_data()."""
    s = ready_commander(SessionKind.FD_SD)
    s.send_header(1, 2)
    chunk = bytes(65536)
    s.send_data(chunk)
    assert s.frames_to_send()[-1] is chunk
