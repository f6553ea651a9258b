"""The ``status dir`` pool section (``bareosproto.status``) against the recordings.

``console-named-clear`` (master) and ``v25-console-named-clear`` (25.1.0) each
recorded a ``status dir`` while client-initiated FDs waited in the pool; the
table's text, spacing and frame boundaries there are the reference.  The rows
are rendered from the values read out of the recorded rows and compared byte
for byte, frame by frame.
"""

from __future__ import annotations

import calendar
import json
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bareosproto.status import (
    API_JSON,
    API_ON,
    POOL_HEADER,
    POOL_SEPARATOR,
    POOL_TITLE,
    STATUS_DIR_END,
    ConnectionInfo,
    civil_from_days,
    client_connection_objects,
    format_connect_time,
    jansson_dumps,
    json_result,
    pool_section_frames,
    pool_section_json,
    pool_section_text,
    status_dir_tail_frames,
)

from recordings import Connection, recordings

TITLE_FRAME_START = b"\nClient Initiated Connections (waiting for jobs):\n"


def console_session(scenario: str) -> Connection:
    rec = next(r for r in recordings() if r.scenario == scenario)
    return next(c for c in rec.connections if c.kind == "console-named")


def recorded_pool_frames(scenario: str) -> list[bytes]:
    """The frames from the pool title up to (not including) the BNET_EOD that ends ``status dir``."""
    conn = console_session(scenario)
    frames = conn.frames_in("a2i")
    start = next(i for i, f in enumerate(frames) if f.payload.startswith(TITLE_FRAME_START))
    out = []
    for f in frames[start:]:
        if f.is_signal:
            break
        out.append(f.payload)
    return out


def rows_from_recording(frames: list[bytes]) -> list[ConnectionInfo]:
    """Read the rows back: columns at 0, 20, 40, 60 (the recorded time is taken as UTC)."""
    text = b"".join(frames).decode("utf-8")
    lines = text.split("\n")
    body = lines[lines.index("=" * 100) + 1 :]
    rows = []
    for line in body:
        if not line.strip() or line.startswith("===="):
            continue
        when = datetime.strptime(line[0:20].strip(), "%d-%b-%y %H:%M").replace(tzinfo=timezone.utc)
        assert line[40:60].strip() == "1"
        rows.append(ConnectionInfo(line[60:].strip(), int(line[20:40]), calendar.timegm(when.timetuple())))
    return rows


@pytest.mark.parametrize("scenario, count", [("console-named-clear", 1), ("v25-console-named-clear", 2)])
def test_pool_section_matches_the_recording_frame_for_frame(scenario: str, count: int) -> None:
    """Rendered from the recorded values, the pool section and the closing ``====`` are the recorded frames:
    decoration and first row in one frame, each further row as ``\\n<row>``, a lone ``\\n``, then ``====\\n``."""
    recorded = recorded_pool_frames(scenario)
    rows = rows_from_recording(recorded)
    assert len(rows) == count
    assert status_dir_tail_frames(rows) == recorded
    assert recorded[-1] == STATUS_DIR_END and recorded[-2] == b"\n"


def test_recorded_rows_read_back_as_expected() -> None:
    """The values read from the 25.1.0 recording are the two waiting FDs, oldest first (insertion order)."""
    rows = rows_from_recording(recorded_pool_frames("v25-console-named-clear"))
    assert [(r.name, r.protocol_version) for r in rows] == [("client-ci", 54), ("client-ci-clear", 54)]
    assert [format_connect_time(r.connect_time) for r in rows] == ["30-Nov-26 09:30", "30-Nov-26 09:31"]


def test_decoration_is_the_recorded_header() -> None:
    """Title, column header (20/20/20/40 wide) and 100 ``=`` are exactly what the Director printed."""
    first = recorded_pool_frames("console-named-clear")[0]
    assert first.startswith(b"\n" + POOL_TITLE + POOL_HEADER + POOL_SEPARATOR)
    assert len(POOL_HEADER) == 101 and POOL_HEADER.endswith(b"Name" + b" " * 36 + b"\n")


def test_empty_pool_is_one_frame_of_decoration() -> None:
    """With nobody waiting, the section is the decoration alone, flushed by the ``====`` that follows."""
    assert pool_section_frames([]) == [b"\n" + POOL_TITLE + POOL_HEADER + POOL_SEPARATOR]
    assert status_dir_tail_frames([])[-1] == STATUS_DIR_END


def test_row_without_newline_then_newline_opens_next_frame() -> None:
    """A row frame never ends in ``\\n``; the newline after it starts the next frame (PROTOCOL.md 15.28)."""
    rows = [ConnectionInfo(f"fd-{i}", 54, 1_796_030_400 + 60 * i) for i in range(3)]
    frames = pool_section_frames(rows)
    assert len(frames) == 4
    assert not frames[0].endswith(b"\n") and frames[0].endswith(b"fd-0" + b" " * 36)
    assert frames[1] == b"\n30-Nov-26 09:21     54                  1                   fd-1" + b" " * 36
    assert frames[3] == b"\n"


def test_padding_counts_bytes_not_characters() -> None:
    """``%-40s`` pads a UTF-8 name by bytes, and a name longer than 40 bytes is not cut."""
    t = calendar.timegm((2026, 11, 30, 9, 20, 0))
    (row,) = pool_section_frames([ConnectionInfo("cliënt", 54, t)])[0:1]
    name_field = row[-40:]
    assert name_field == "cliënt".encode() + b" " * 33
    long_name = "x" * 50
    frames = pool_section_frames([ConnectionInfo(long_name, 0, t)])
    assert frames[0].endswith(b"0                   1                   " + b"x" * 50)


def test_api_mode_1_has_no_decoration() -> None:
    """``.api 1``: no title, header or newlines; every row is a frame of its own."""
    t = calendar.timegm((2026, 11, 30, 9, 20, 0))
    rows = [ConnectionInfo("a", 54, t), ConnectionInfo("b", 51, t)]
    assert pool_section_frames(rows, api=API_ON) == [
        b"30-Nov-26 09:20     54                  1                   a" + b" " * 39,
        b"30-Nov-26 09:20     51                  1                   b" + b" " * 39,
    ]
    assert pool_section_frames(rows, api=API_JSON) == []
    assert pool_section_frames([], api=API_ON) == []


def test_text_is_frames_joined() -> None:
    """The text bconsole shows is the frames joined; the local offset moves the printed time."""
    t = calendar.timegm((2026, 11, 30, 23, 59, 0))
    rows = [ConnectionInfo("fd", 54, t)]
    assert pool_section_text(rows) == b"".join(pool_section_frames(rows))
    assert b"01-Dec-26 00:59" in pool_section_text(rows, utc_offset=lambda s: 3600)


@given(st.integers(min_value=0, max_value=2**33), st.integers(min_value=-14 * 3600, max_value=14 * 3600))
def test_connect_time_is_bstrftime_nc(seconds: int, offset: int) -> None:
    """The connect time is ``%d-%b-%y %H:%M`` of local time, as strftime prints it in the C locale."""
    expected = datetime.fromtimestamp(seconds, timezone(timedelta(seconds=offset))).strftime("%d-%b-%Y %H:%M")
    expected = expected[:7] + expected[9:]  # Bareos cuts the century out of %Y
    assert format_connect_time(seconds, offset) == expected


@given(st.integers(min_value=-719_162, max_value=2_932_896))
def test_civil_from_days_is_the_gregorian_calendar(days: int) -> None:
    """Day numbers map to the dates Python's proleptic Gregorian calendar gives."""
    d = datetime(1970, 1, 1) + timedelta(days=days)
    assert civil_from_days(days) == (d.year, d.month, d.day)


# -- JSON (API 2) ------------------------------------------------------------------------


def test_json_rows_use_bareos_lowercased_keys() -> None:
    """API 2: ``client-connection`` objects with ``connecttime``, ``protocol_version``, ``authenticated`` (1), ``name``.

    Bareos passes ``ConnectTime`` but its JSON formatter lowercases every key
    (``JsonKeyValueAdd()``), and ``authenticated`` is the integer 1.
    """
    t = calendar.timegm((2026, 11, 30, 9, 31, 0))
    assert pool_section_json([ConnectionInfo("client-ci-clear", 54, t)]) == {
        "client-connection": [
            {"connecttime": "30-Nov-26 09:31", "protocol_version": 54, "authenticated": 1, "name": "client-ci-clear"}
        ]
    }
    assert client_connection_objects([]) == []


def test_json_result_layout_is_jansson_indent_2() -> None:
    """The result is dumped like ``json_dumps(JSON_INDENT(2))``: two-space indent, ``": "``, insertion order."""
    t = calendar.timegm((2026, 11, 30, 9, 31, 0))
    out = json_result(pool_section_json([ConnectionInfo("fd", 54, t)]))
    assert out == (
        b'{\n  "jsonrpc": "2.0",\n  "id": null,\n  "result": {\n    "client-connection": [\n      {\n'
        b'        "connecttime": "30-Nov-26 09:31",\n        "protocol_version": 54,\n'
        b'        "authenticated": 1,\n        "name": "fd"\n      }\n    ]\n  }\n}'
    )
    assert json_result(pool_section_json([]), compact=True) == (
        b'{"jsonrpc":"2.0","id":null,"result":{"client-connection":[]}}'
    )


@pytest.mark.parametrize("scenario", ["console-named-clear", "v25-console-named-clear"])
def test_jansson_dump_reproduces_the_recorded_json(scenario: str) -> None:
    """Our jansson-style dump of the recorded JSON replies (``.api 2``, ``list clients``) gives the same bytes."""
    conn = console_session(scenario)
    docs = [f.payload for f in conn.frames_in("a2i") if f.payload.startswith(b"{")]
    assert len(docs) >= 2
    for payload in docs:
        assert jansson_dumps(json.loads(payload)) == payload


def test_jansson_escapes_like_jansson() -> None:
    """Control characters become ``\\uXXXX`` in upper-case hex, ``/`` and non-ASCII stay as they are."""
    assert jansson_dumps({"k": "a/é\x01\n\""}) == '{\n  "k": "a/é\\u0001\\n\\""\n}'.encode()
    assert jansson_dumps([], compact=True) == b"[]" and jansson_dumps({}) == b"{}"
