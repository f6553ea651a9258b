"""The ``status dir`` section of the Director's waiting-connection pool, sans-IO.

Bareos prints the pool after the terminated jobs (``core/src/dird/ua_status.cc``
``ListConnectedClients()``, PROTOCOL.md 8.2)::

    \\n
    Client Initiated Connections (waiting for jobs):\\n
    <"Connect time" %-20s><"Protocol" %-20s><"Authenticated" %-20s><"Name" %-40s>\\n
    <five groups of 20 '='>\\n
    <connect time %-20s><protocol version %-20d><1 %-20d><name %-40s>
    \\n<next row> ...
    \\n

then ``status dir`` ends with ``====\\n``.  The frame boundaries come from
Bareos' output formatter: text accumulates in a buffer, every row's
``ObjectEnd()`` sends the buffer as one frame, and the newline that follows a
row stays in the buffer until the next frame -- so a row frame ends without
``\\n`` and the next one begins with it (PROTOCOL.md 15 item 28, recorded in
``console-named-clear``).  :func:`pool_section_frames` returns exactly those
frames.

Padding is by bytes, as ``printf`` pads: a name is UTF-8 and ``%-40s`` counts
its bytes, not its characters; nothing is cut.  The connect time is
``bstrftime_nc()``'s ``%d-%b-%y %H:%M`` in the Director's local time; this
module does the calendar arithmetic itself (no clock, no ``time`` module) and
takes the UTC offset from its caller.

In API mode 1 the decoration is left out (each row is a frame of its own,
without newlines); in JSON mode (API 2) the rows become the array
``client-connection`` of the result object.  Bareos' JSON formatter lowercases
every key (``JsonKeyValueAdd()`` calls ``toLower()``), so the keys on the wire
are ``connecttime``, ``protocol_version``, ``authenticated`` and ``name``
(the source passes ``ConnectTime``).  :func:`jansson_dumps` writes JSON the
way ``json_dumps()`` of jansson does with Bareos' flags (``JSON_INDENT(2)``,
or ``JSON_COMPACT`` after ``.api json compact=yes``).
"""

from __future__ import annotations

from typing import Callable, Iterable, Protocol, Sequence

import attrs

__all__ = [
    "API_OFF",
    "API_ON",
    "API_JSON",
    "MONTHS",
    "POOL_TITLE",
    "POOL_HEADER",
    "POOL_SEPARATOR",
    "STATUS_DIR_END",
    "PoolRow",
    "ConnectionInfo",
    "civil_from_days",
    "format_connect_time",
    "ConnectTimeFormatter",
    "pool_row",
    "pool_section_frames",
    "pool_section_text",
    "status_dir_tail_frames",
    "client_connection_objects",
    "pool_section_json",
    "jansson_dumps",
    "json_result",
]

#: ``.api 0`` / ``.api 1`` / ``.api 2`` (``.api json``).
API_OFF = 0
API_ON = 1
API_JSON = 2

#: ``%b`` in the C locale.
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")

POOL_TITLE = b"Client Initiated Connections (waiting for jobs):\n"
#: ``"%-20s%-20s%-20s%-40s\n"`` of the four column titles.
POOL_HEADER = b"%-20s%-20s%-20s%-40s\n" % (b"Connect time", b"Protocol", b"Authenticated", b"Name")
#: ``"%-20s" * 5`` of ``====================``, then a newline: 100 ``=``.
POOL_SEPARATOR = b"=" * 100 + b"\n"
#: What ``status dir`` sends after the pool section, as a frame of its own.
STATUS_DIR_END = b"====\n"

#: Everything the section prints before the first row (decoration, text mode only).
_DECORATION = b"\n" + POOL_TITLE + POOL_HEADER + POOL_SEPARATOR
_ROW = b"%-20s%-20d%-20d%-40s"


class PoolRow(Protocol):
    """What a row needs: Bareos' ``connection_info``."""

    @property
    def name(self) -> str: ...

    @property
    def protocol_version(self) -> int: ...

    @property
    def connect_time(self) -> int:
        """Seconds since the epoch (``time(nullptr)`` when the entry was added)."""
        ...


@attrs.frozen
class ConnectionInfo:
    """One waiting connection as ``connection_pool::info()`` reports it."""

    name: str
    protocol_version: int
    connect_time: int


def civil_from_days(days: int) -> tuple[int, int, int]:
    """(year, month 1-12, day 1-31) of a day count since 1970-01-01 (proleptic Gregorian)."""
    z = days + 719468
    era = z // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    day = doy - (153 * mp + 2) // 5 + 1
    month = mp + 3 if mp < 10 else mp - 9
    year = yoe + era * 400 + (1 if month <= 2 else 0)
    return year, month, day


def format_connect_time(seconds: int, utc_offset: int = 0, months: Sequence[str] = MONTHS) -> str:
    """``bstrftime_nc()``: ``%d-%b-%Y %H:%M`` with the century cut out, e.g. ``30-Nov-26 09:20``.

    ``seconds`` since the epoch, ``utc_offset`` the local zone's offset at that
    moment in seconds east of UTC (``tm_gmtoff``).  The century is removed the
    way Bareos does it, by moving the text from the 10th character onwards
    two places to the left.
    """
    local = int(seconds) + int(utc_offset)
    days, rest = divmod(local, 86400)
    year, month, day = civil_from_days(days)
    hour, rest = divmod(rest, 3600)
    text = "%02d-%s-%d %02d:%02d" % (day, months[month - 1], year, hour, rest // 60)
    return text[:7] + text[9:]


def _utc(seconds: int) -> int:
    return 0


class ConnectTimeFormatter:
    """Formats connect times, remembering each minute it has formatted.

    ``utc_offset(seconds)`` gives the local offset at a moment (the Twisted
    layer passes one built on ``time.localtime``); the default is UTC.  A zone
    changes its offset only at a whole minute, so one lookup per minute is
    enough.
    """

    __slots__ = ("_offset", "_months", "_cache")

    def __init__(self, utc_offset: Callable[[int], int] = _utc, months: Sequence[str] = MONTHS) -> None:
        self._offset = utc_offset
        self._months = months
        self._cache: dict[int, bytes] = {}

    def __call__(self, seconds: int) -> bytes:
        minute = int(seconds) // 60
        text = self._cache.get(minute)
        if text is None:
            t = minute * 60
            text = format_connect_time(t, self._offset(t), self._months).encode("ascii")
            if len(self._cache) > 4096:
                self._cache.clear()
            self._cache[minute] = text
        return text


def _name_bytes(name: str) -> bytes:
    return name.encode("utf-8", "surrogateescape")


def pool_row(row: PoolRow, formatter: Callable[[int], bytes] | None = None) -> bytes:
    """One row, ``%-20s%-20d%-20d%-40s``, without a newline."""
    fmt = formatter if formatter is not None else ConnectTimeFormatter()
    return _ROW % (fmt(row.connect_time), row.protocol_version, 1, _name_bytes(row.name))


def pool_section_frames(
    rows: Iterable[PoolRow],
    *,
    api: int = API_OFF,
    utc_offset: Callable[[int], int] = _utc,
    formatter: Callable[[int], bytes] | None = None,
) -> list[bytes]:
    """The frames ``ListConnectedClients()`` sends, oldest entry first.

    Text mode (``api=0``): the decoration and the first row in one frame,
    every further row as ``\\n<row>``, and a last frame ``\\n`` (the newline
    after the last row, which Bareos sends when the next message flushes its
    buffer -- in ``status dir`` that is :data:`STATUS_DIR_END`).  An empty
    pool is one frame, the decoration alone.  API mode 1: one frame per row,
    nothing else.  JSON mode: no frames (see :func:`pool_section_json`).
    """
    if api == API_JSON:
        return []
    fmt = formatter if formatter is not None else ConnectTimeFormatter(utc_offset)
    row_format = _ROW
    frames: list[bytes] = []
    append = frames.append
    if api == API_OFF:
        pending = _DECORATION
        for row in rows:
            append(pending + row_format % (fmt(row.connect_time), row.protocol_version, 1,
                                           row.name.encode("utf-8", "surrogateescape")))
            pending = b"\n"
        append(pending)
    else:
        for row in rows:
            append(row_format % (fmt(row.connect_time), row.protocol_version, 1,
                                 row.name.encode("utf-8", "surrogateescape")))
    return frames


def pool_section_text(rows: Iterable[PoolRow], *, api: int = API_OFF,
                      utc_offset: Callable[[int], int] = _utc) -> bytes:
    """The section as one byte string (what bconsole shows, frames joined)."""
    return b"".join(pool_section_frames(rows, api=api, utc_offset=utc_offset))


def status_dir_tail_frames(rows: Iterable[PoolRow], *, api: int = API_OFF,
                           utc_offset: Callable[[int], int] = _utc) -> list[bytes]:
    """The pool section and the ``====\\n`` that ends ``status dir`` (text and API 1)."""
    if api == API_JSON:
        return []
    return pool_section_frames(rows, api=api, utc_offset=utc_offset) + [STATUS_DIR_END]


def client_connection_objects(
    rows: Iterable[PoolRow], *, utc_offset: Callable[[int], int] = _utc
) -> list[dict[str, str | int]]:
    """The ``client-connection`` array of the JSON result, keys as Bareos writes them."""
    fmt = ConnectTimeFormatter(utc_offset)
    return [
        {
            "connecttime": fmt(row.connect_time).decode("ascii"),
            "protocol_version": int(row.protocol_version),
            "authenticated": 1,
            # jansson replaces invalid UTF-8 (utf8::replace_invalid)
            "name": _name_bytes(row.name).decode("utf-8", "replace"),
        }
        for row in rows
    ]


def pool_section_json(
    rows: Iterable[PoolRow], *, utc_offset: Callable[[int], int] = _utc
) -> dict[str, list[dict[str, str | int]]]:
    """What the section adds to the JSON result object: ``{"client-connection": [...]}``."""
    return {"client-connection": client_connection_objects(rows, utc_offset=utc_offset)}


# -- jansson ---------------------------------------------------------------

_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _json_string(text: str) -> str:
    out = ['"']
    for ch in text:
        esc = _ESCAPES.get(ch)
        if esc is not None:
            out.append(esc)
        elif ch < " ":
            out.append("\\u%04X" % ord(ch))
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _dump(value: object, out: list[str], depth: int, indent: int, compact: bool) -> None:
    if value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, int):
        out.append(str(value))
    elif isinstance(value, str):
        out.append(_json_string(value))
    elif isinstance(value, (list, tuple)):
        if not value:
            out.append("[]")
            return
        out.append("[")
        for i, item in enumerate(value):
            out.append(_indent(depth + 1, indent, compact, space=i > 0))
            _dump(item, out, depth + 1, indent, compact)
            if i < len(value) - 1:
                out.append(",")
        out.append(_indent(depth, indent, compact, space=False))
        out.append("]")
    elif isinstance(value, dict):
        if not value:
            out.append("{}")
            return
        out.append("{")
        sep = ":" if compact else ": "
        last = len(value) - 1
        for i, (key, item) in enumerate(value.items()):
            out.append(_indent(depth + 1, indent, compact, space=i > 0))
            out.append(_json_string(str(key)))
            out.append(sep)
            _dump(item, out, depth + 1, indent, compact)
            if i < last:
                out.append(",")
        out.append(_indent(depth, indent, compact, space=False))
        out.append("}")
    else:
        raise TypeError(f"not a JSON value: {value!r}")


def _indent(depth: int, indent: int, compact: bool, space: bool) -> str:
    if indent > 0:
        return "\n" + " " * (depth * indent)
    if space and not compact:
        return " "
    return ""


def jansson_dumps(value: object, *, compact: bool = False) -> bytes:
    """``json_dumps()`` as Bareos calls it: ``JSON_INDENT(2)``, or ``JSON_COMPACT``.

    Keys keep their insertion order, text is UTF-8 (no ``\\u`` escapes above
    U+001F), control characters are ``\\uXXXX`` with upper-case hex.
    """
    out: list[str] = []
    _dump(value, out, 0, 0 if compact else 2, compact)
    return "".join(out).encode("utf-8", "surrogateescape")


def json_result(result: object, *, compact: bool = False) -> bytes:
    """The JSON-RPC envelope of a successful command (``JsonFinalizeResult()``)."""
    return jansson_dumps({"jsonrpc": "2.0", "id": None, "result": result}, compact=compact)
