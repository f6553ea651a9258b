"""The data session on an FD-SD or SD-SD channel, sans-IO, as one transition table.

Once a data channel is authenticated (connections 6, 7 and 8 of PROTOCOL.md
section 7), one side *commands* and the other *answers*:

==========  ======================================  ===================================
channel     commander (sends the commands)          answerer
==========  ======================================  ===================================
FD -> SD    the FD                                  the SD
SD -> FD    the FD (it accepted the TCP connection  the SD
            but still commands, PROTOCOL.md 15.22)
SD -> SD    the reading SD                          the writing SD
==========  ======================================  ===================================

The wire, as recorded (``backup-clear``, ``restore-clear``, ``passive-clear``,
PROTOCOL.md 7.6 step 8, 7.8 step 5, 15.9, 15.21, 15.22, 15.26)::

    append open session\\n          -> 3000 OK open ticket = <t>\\n
    append data <t>\\n              -> 3000 OK data\\n
      per stream: "<FileIndex> <Stream> 0" (no newline), data frames..., EOD
      a final EOD                  -> 3000 OK append data\\n
    append end session <t>\\n       -> 3000 OK end\\n
    append close session <t>\\n     -> 3000 OK close Status = <n>\\n, EOD
    TERMINATE (from the FD; the SD sends none on this channel)

    read open session = <vol> <id> <time> <sf> <ef> <sb> <eb>\\n -> 3000 OK open ticket = <t>\\n
    read data <t>\\n                -> 3000 OK data\\n, then per record
                                      "rechdr <id> <time> <FileIndex> <Stream> <len>", the data, and one EOD
    read close session <t>\\n       -> 3000 OK close Status = <n>\\n, EOD
    TERMINATE, TERMINATE (the FD's first may cross the SD's EOD)

    start replicate\\n              -> 3000 OK start replicate ticket = <t>\\n
    replicate data <t>\\n           -> 3000 OK data\\n, streams as in a backup, a final EOD
                                   -> 3000 OK replicate data\\n
    end replicate\\n                -> 3000 OK end replicate\\n
    TERMINATE (from the reading SD)

:data:`TRANSITIONS` is the single table ``{(state, input): (action, next
state)}`` for both channels and both sides.  Inputs are named after their
sender (``C_`` commander, ``S_`` answerer).  Each side feeds *every* frame
through it, the ones it sends and the ones it receives, in the order it
sees them; an input without an entry is a protocol error.  The action is
what the *receiving* side of that input does (the answerer replies
automatically where the reply is fixed; events go to the caller).

A :class:`DataSession` takes frames from the connection below
(:meth:`DataSession.receive_frame`) and hands back frames to send
(:meth:`DataSession.frames_to_send`: payloads as ``bytes`` objects -- the
very objects passed in, no copy -- and signals as ints) or their bytes
(:meth:`DataSession.data_to_send`).

Refusals are the answerer's (``stored/fd_cmds.cc``, ``stored/sd_cmds.cc``,
``stored/append.cc``, ``stored/read.cc``): ``3900 Invalid command``,
``3901 Error session already open``, ``3902 Error session not opened``,
then ``BNET_TERMINATE``; a failed append sends ``3999 Failed append``
and ``3903 Error append data`` (a failed replication ``3000 OK replicate
data`` -- sic -- and ``3903 Error replicate data``) and ``BNET_TERMINATE``.
They are raised as :class:`SessionRefused`, which carries those frames.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Sequence
from typing import NoReturn, Union

import attrs

from .errors import LocalProtocolError, RemoteProtocolError
from .events import ConnectionClosed, Event, Message, SignalFrame
from .frames import MAX_MESSAGE_LENGTH, FrameDecoder, encode_message, encode_signal
from .scan import bsscanf
from .signals import Signal

__all__ = [
    "SessionKind",
    "Side",
    "Mode",
    "DataState",
    "DataInput",
    "Action",
    "TRANSITIONS",
    "DataSession",
    "SessionRefused",
    "ReadParams",
    "OutFrame",
    # events received by the answerer
    "OpenRequested",
    "DataRequested",
    "StreamHeader",
    "StreamData",
    "StreamEnd",
    "DataEnd",
    "EndRequested",
    "CloseRequested",
    "PeerTerminated",
    # events received by the commander
    "TicketGranted",
    "DataReady",
    "DataStored",
    "SessionEnded",
    "CloseConfirmed",
    "SessionClosed",
    "RecordHeader",
    "RecordData",
    "ReadEnd",
    "stream_header",
    "record_header",
    "transitions_as_dot",
    "CLOSE_STATUS_TERMINATED",
    "CLOSE_STATUS_RUNNING",
]

#: ``JS_Terminated`` ('T'): the close status after a backup (``3000 OK close Status = 84``).
CLOSE_STATUS_TERMINATED = ord("T")
#: ``JS_Running`` ('R'): the close status of a restore's read session (82).
CLOSE_STATUS_RUNNING = ord("R")

#: A frame to send: a payload, or a (negative) signal.
OutFrame = Union[bytes, int]


class SessionKind(enum.Enum):
    FD_SD = "fd-sd"  #: append and read sessions (connections 6 and 7)
    SD_SD = "sd-sd"  #: replication (connection 8)


class Side(enum.Enum):
    COMMANDER = "commander"  #: the FD; the reading SD
    ANSWERER = "answerer"  #: the SD; the writing SD


class Mode(enum.Enum):
    __hash__ = object.__hash__

    APPEND = "append"
    READ = "read"
    REPLICATE = "replicate"


class DataState(enum.Enum):
    __hash__ = object.__hash__  # members are singletons: identity hash, no Python-level call

    IDLE = "idle"  #: no session open
    APPEND_OPENING = "append-opening"
    APPEND_OPEN = "append-open"
    APPEND_DATA_REQUESTED = "append-data-requested"
    APPEND_HEADER = "append-header"  #: a stream header or the final EOD comes next
    APPEND_STREAM = "append-stream"  #: data frames or the EOD of the stream come next
    APPEND_STORING = "append-storing"  #: final EOD seen, ``3000 OK append data`` pending
    APPEND_ENDING = "append-ending"
    READ_OPENING = "read-opening"
    READ_OPEN = "read-open"
    READ_DATA_REQUESTED = "read-data-requested"
    READ_HEADER = "read-header"  #: a ``rechdr`` or the EOD comes next
    READ_RECORD = "read-record"  #: the record's data frame comes next
    REPLICATE_OPENING = "replicate-opening"
    REPLICATE_OPEN = "replicate-open"
    REPLICATE_DATA_REQUESTED = "replicate-data-requested"
    REPLICATE_HEADER = "replicate-header"
    REPLICATE_STREAM = "replicate-stream"
    REPLICATE_STORING = "replicate-storing"
    REPLICATE_ENDING = "replicate-ending"
    CLOSING = "closing"  #: close command sent, ``3000 OK close Status`` pending
    CLOSE_EOD_PENDING = "close-eod-pending"  #: status line seen, the answerer's EOD pending
    TERMINATED_EOD_PENDING = "terminated-eod-pending"  #: commander terminated before that EOD
    TERMINATED = "terminated"
    FAILED = "failed"


class DataInput(enum.Enum):
    """Frames on the channel, named after their sender (``C_`` commander, ``S_`` answerer)."""

    __hash__ = object.__hash__

    C_APPEND_OPEN = "append open session"
    C_APPEND_DATA = "append data <t>"
    C_APPEND_END = "append end session <t>"
    C_APPEND_CLOSE = "append close session <t>"
    C_READ_OPEN = "read open session = ..."
    C_READ_DATA = "read data <t>"
    C_READ_CLOSE = "read close session <t>"
    C_START_REPLICATE = "start replicate"
    C_REPLICATE_DATA = "replicate data <t>"
    C_END_REPLICATE = "end replicate"
    C_HEADER = "<FileIndex> <Stream> 0"
    C_DATA = "stream data"
    C_EOD = "EOD (commander)"
    C_TERMINATE = "TERMINATE (commander)"
    C_UNKNOWN = "unknown command"
    S_TICKET = "3000 OK ... ticket = <t>"
    S_OK_DATA = "3000 OK data"
    S_OK_APPEND_DATA = "3000 OK append data"
    S_OK_REPLICATE_DATA = "3000 OK replicate data"
    S_OK_END = "3000 OK end"
    S_OK_END_REPLICATE = "3000 OK end replicate"
    S_OK_CLOSE = "3000 OK close Status = <n>"
    S_RECHDR = "rechdr ..."
    S_RECORD = "record data"
    S_EOD = "EOD (answerer)"
    S_ERROR = "error reply"
    S_TERMINATE = "TERMINATE (answerer)"

    @property
    def side(self) -> Side:
        return Side.COMMANDER if self.name.startswith("C_") else Side.ANSWERER


class Action(enum.Enum):
    """What the receiving side of an input does."""

    # the answerer, on a commander's input
    GRANT_TICKET = "emit OpenRequested, reply the ticket"
    ACCEPT_DATA = "emit DataRequested, reply 3000 OK data"
    AWAIT_READ = "emit DataRequested, wait for start_read()"
    STREAM_HEADER = "emit StreamHeader"
    STREAM_DATA = "emit StreamData"
    STREAM_END = "emit StreamEnd"
    AWAIT_STORED = "emit DataEnd, wait for data_stored()"
    CONFIRM_END = "emit EndRequested, reply 3000 OK end"
    CONFIRM_CLOSE = "emit CloseRequested, reply 3000 OK close Status and EOD"
    PEER_TERMINATED = "emit PeerTerminated"
    IGNORE = "nothing"
    # the commander, on an answerer's input
    TICKET = "emit TicketGranted"
    DATA_READY = "emit DataReady"
    DATA_STORED = "emit DataStored"
    SESSION_ENDED = "emit SessionEnded"
    CLOSE_CONFIRMED = "emit CloseConfirmed"
    RECORD_HEADER = "emit RecordHeader"
    RECORD_DATA = "emit RecordData"
    READ_END = "emit ReadEnd"
    CLOSE_EOD = "emit SessionClosed"


_S, _I, _A = DataState, DataInput, Action

#: ``{(state, input): (action, next state)}`` for FD-SD and SD-SD sessions, both sides.
TRANSITIONS: dict[tuple[DataState, DataInput], tuple[Action, DataState]] = {
    # FD-SD: append (backup)
    (_S.IDLE, _I.C_APPEND_OPEN): (_A.GRANT_TICKET, _S.APPEND_OPENING),
    (_S.APPEND_OPENING, _I.S_TICKET): (_A.TICKET, _S.APPEND_OPEN),
    (_S.APPEND_OPEN, _I.C_APPEND_DATA): (_A.ACCEPT_DATA, _S.APPEND_DATA_REQUESTED),
    (_S.APPEND_DATA_REQUESTED, _I.S_OK_DATA): (_A.DATA_READY, _S.APPEND_HEADER),
    (_S.APPEND_HEADER, _I.C_HEADER): (_A.STREAM_HEADER, _S.APPEND_STREAM),
    (_S.APPEND_STREAM, _I.C_DATA): (_A.STREAM_DATA, _S.APPEND_STREAM),
    (_S.APPEND_STREAM, _I.C_EOD): (_A.STREAM_END, _S.APPEND_HEADER),
    (_S.APPEND_HEADER, _I.C_EOD): (_A.AWAIT_STORED, _S.APPEND_STORING),
    (_S.APPEND_STORING, _I.S_OK_APPEND_DATA): (_A.DATA_STORED, _S.APPEND_OPEN),
    (_S.APPEND_OPEN, _I.C_APPEND_END): (_A.CONFIRM_END, _S.APPEND_ENDING),
    (_S.APPEND_ENDING, _I.S_OK_END): (_A.SESSION_ENDED, _S.APPEND_OPEN),
    (_S.APPEND_OPEN, _I.C_APPEND_CLOSE): (_A.CONFIRM_CLOSE, _S.CLOSING),
    (_S.APPEND_OPEN, _I.C_TERMINATE): (_A.PEER_TERMINATED, _S.TERMINATED),
    # FD-SD: read (restore, verify)
    (_S.IDLE, _I.C_READ_OPEN): (_A.GRANT_TICKET, _S.READ_OPENING),
    (_S.READ_OPENING, _I.S_TICKET): (_A.TICKET, _S.READ_OPEN),
    (_S.READ_OPEN, _I.C_READ_DATA): (_A.AWAIT_READ, _S.READ_DATA_REQUESTED),
    (_S.READ_DATA_REQUESTED, _I.S_OK_DATA): (_A.DATA_READY, _S.READ_HEADER),
    (_S.READ_HEADER, _I.S_RECHDR): (_A.RECORD_HEADER, _S.READ_RECORD),
    (_S.READ_RECORD, _I.S_RECORD): (_A.RECORD_DATA, _S.READ_HEADER),
    (_S.READ_HEADER, _I.S_EOD): (_A.READ_END, _S.READ_OPEN),
    (_S.READ_OPEN, _I.C_READ_CLOSE): (_A.CONFIRM_CLOSE, _S.CLOSING),
    (_S.READ_OPEN, _I.C_TERMINATE): (_A.PEER_TERMINATED, _S.TERMINATED),
    # FD-SD: close; the commander's TERMINATE may cross the answerer's EOD (restore)
    (_S.CLOSING, _I.S_OK_CLOSE): (_A.CLOSE_CONFIRMED, _S.CLOSE_EOD_PENDING),
    (_S.CLOSE_EOD_PENDING, _I.S_EOD): (_A.CLOSE_EOD, _S.IDLE),
    (_S.CLOSE_EOD_PENDING, _I.C_TERMINATE): (_A.PEER_TERMINATED, _S.TERMINATED_EOD_PENDING),
    (_S.TERMINATED_EOD_PENDING, _I.S_EOD): (_A.CLOSE_EOD, _S.TERMINATED),
    (_S.TERMINATED_EOD_PENDING, _I.C_TERMINATE): (_A.IGNORE, _S.TERMINATED_EOD_PENDING),
    # SD-SD: replication
    (_S.IDLE, _I.C_START_REPLICATE): (_A.GRANT_TICKET, _S.REPLICATE_OPENING),
    (_S.REPLICATE_OPENING, _I.S_TICKET): (_A.TICKET, _S.REPLICATE_OPEN),
    (_S.REPLICATE_OPEN, _I.C_REPLICATE_DATA): (_A.ACCEPT_DATA, _S.REPLICATE_DATA_REQUESTED),
    (_S.REPLICATE_DATA_REQUESTED, _I.S_OK_DATA): (_A.DATA_READY, _S.REPLICATE_HEADER),
    (_S.REPLICATE_HEADER, _I.C_HEADER): (_A.STREAM_HEADER, _S.REPLICATE_STREAM),
    (_S.REPLICATE_STREAM, _I.C_DATA): (_A.STREAM_DATA, _S.REPLICATE_STREAM),
    (_S.REPLICATE_STREAM, _I.C_EOD): (_A.STREAM_END, _S.REPLICATE_HEADER),
    (_S.REPLICATE_HEADER, _I.C_EOD): (_A.AWAIT_STORED, _S.REPLICATE_STORING),
    (_S.REPLICATE_STORING, _I.S_OK_REPLICATE_DATA): (_A.DATA_STORED, _S.REPLICATE_OPEN),
    (_S.REPLICATE_OPEN, _I.C_END_REPLICATE): (_A.CONFIRM_END, _S.REPLICATE_ENDING),
    (_S.REPLICATE_ENDING, _I.S_OK_END_REPLICATE): (_A.SESSION_ENDED, _S.REPLICATE_OPEN),
    (_S.REPLICATE_OPEN, _I.C_TERMINATE): (_A.PEER_TERMINATED, _S.TERMINATED),
    # the end
    (_S.IDLE, _I.C_TERMINATE): (_A.PEER_TERMINATED, _S.TERMINATED),
    (_S.TERMINATED, _I.C_TERMINATE): (_A.IGNORE, _S.TERMINATED),  # a restore's second TERMINATE
}


def _turns() -> tuple[frozenset[DataState], frozenset[DataState]]:
    """States where only the answerer / only the commander may speak next."""
    inputs: dict[DataState, set[Side]] = {}
    for (state, inp) in TRANSITIONS:
        inputs.setdefault(state, set()).add(inp.side)
    answerer = frozenset(s for s, sides in inputs.items() if sides == {Side.ANSWERER})
    commander = frozenset(s for s, sides in inputs.items() if sides == {Side.COMMANDER})
    return answerer, commander


#: States in which the answerer speaks next (the commander waits for a reply or for data).
ANSWERER_TURN, COMMANDER_TURN = _turns()

#: States in which a commander's data frame leaves the state as it is (the streams):
#: the data path checks only these, derived from the table.
_DATA_LOOPS = frozenset(s for (s, i), (_a, n) in TRANSITIONS.items() if i is _I.C_DATA and n is s)
_OPEN_STATES = frozenset({_S.APPEND_OPEN, _S.READ_OPEN, _S.REPLICATE_OPEN})
_DATA_STATES = frozenset({_S.APPEND_HEADER, _S.APPEND_STREAM, _S.REPLICATE_HEADER, _S.REPLICATE_STREAM})
_HEADER_STATES = frozenset({_S.APPEND_HEADER, _S.REPLICATE_HEADER})
_STREAM_STATES = frozenset({_S.APPEND_STREAM, _S.REPLICATE_STREAM})
_OPEN_INPUTS = frozenset({_I.C_APPEND_OPEN, _I.C_READ_OPEN, _I.C_START_REPLICATE})

_MODE_OF_STATE = {
    s: (Mode.APPEND if s.name.startswith("APPEND") else Mode.READ if s.name.startswith("READ")
        else Mode.REPLICATE)
    for s in DataState
    if s.name.startswith(("APPEND", "READ", "REPLICATE"))
}


def transitions_as_dot() -> str:
    """:data:`TRANSITIONS` as a Graphviz digraph, for the documentation."""
    lines = ["digraph data_session {", "  rankdir=LR;"]
    for (state, inp), (action, nxt) in TRANSITIONS.items():
        label = f"{inp.value}\\n[{action.name.lower()}]"
        lines.append(f'  "{state.value}" -> "{nxt.value}" [label="{label}"];')
    lines.append("}")
    return "\n".join(lines)


# -- wire texts -------------------------------------------------------------------

#: Commands the answerer recognises, by the prefix it compares (``bstrncmp``), in table order.
_COMMAND_PREFIXES: dict[SessionKind, tuple[tuple[bytes, DataInput], ...]] = {
    SessionKind.FD_SD: (
        (b"append open", _I.C_APPEND_OPEN),
        (b"append data", _I.C_APPEND_DATA),
        (b"append end", _I.C_APPEND_END),
        (b"append close", _I.C_APPEND_CLOSE),
        (b"read open", _I.C_READ_OPEN),
        (b"read data", _I.C_READ_DATA),
        (b"read close", _I.C_READ_CLOSE),
    ),
    SessionKind.SD_SD: (
        (b"start replicate", _I.C_START_REPLICATE),
        (b"replicate data", _I.C_REPLICATE_DATA),
        (b"end replicate", _I.C_END_REPLICATE),
    ),
}
#: The ticket as the commander writes it into a command (``%d``).
_TICKET_FORMATS = {
    _I.C_APPEND_DATA: b"append data %d",
    _I.C_APPEND_END: b"append end session %d",
    _I.C_APPEND_CLOSE: b"append close session %d",
    _I.C_READ_DATA: b"read data %d",
    _I.C_READ_CLOSE: b"read close session %d",
    _I.C_REPLICATE_DATA: b"replicate data %d",
}
_READ_OPEN_FORMAT = b"read open session = %127s %ld %ld %ld %ld %ld %ld\n"
_HEADER_FORMAT = b"%ld %ld"
_RECHDR_FORMAT = b"rechdr %lu %lu %ld %ld %lu"

OK_DATA = b"3000 OK data\n"
OK_APPEND_DATA = b"3000 OK append data\n"
OK_REPLICATE_DATA = b"3000 OK replicate data\n"
OK_END = b"3000 OK end\n"
OK_END_REPLICATE = b"3000 OK end replicate\n"
FAILED_APPEND = b"3999 Failed append\n"
ERROR_APPEND = b"3903 Error append data\n"
ERROR_REPLICATE = b"3903 Error replicate data\n"
INVALID_COMMAND = b"3900 Invalid command\n"
READ_ERROR = b"3000 error\n"
POLL_OK = b"2000 OK\n"
STATUS_OK = b"Status OK\n"

_ALREADY_OPEN = {
    SessionKind.FD_SD: b"3901 Error session already open\n",
    SessionKind.SD_SD: b"3901 Error replicate session already open\n",
}
_NOT_OPENED = {
    SessionKind.FD_SD: b"3902 Error session not opened\n",
    SessionKind.SD_SD: b"3902 Error replicate session not opened\n",
}
_TICKET_REPLY = {
    SessionKind.FD_SD: (b"3000 OK open ticket = %d\n", b"3000 OK open ticket = %d"),
    SessionKind.SD_SD: (b"3000 OK start replicate ticket = %d\n", b"3000 OK start replicate ticket = %ld\n"),
}
_CLOSE_FORMAT = b"3000 OK close Status = %d\n"
#: Replies the commander compares byte for byte (``response()`` uses ``bstrcmp``).
_EXACT_REPLY = {
    _S.APPEND_DATA_REQUESTED: (OK_DATA, _I.S_OK_DATA),
    _S.READ_DATA_REQUESTED: (OK_DATA, _I.S_OK_DATA),
    _S.REPLICATE_DATA_REQUESTED: (OK_DATA, _I.S_OK_DATA),
    _S.APPEND_STORING: (OK_APPEND_DATA, _I.S_OK_APPEND_DATA),
    _S.REPLICATE_STORING: (OK_REPLICATE_DATA, _I.S_OK_REPLICATE_DATA),
    _S.APPEND_ENDING: (OK_END, _I.S_OK_END),
    _S.REPLICATE_ENDING: (OK_END_REPLICATE, _I.S_OK_END_REPLICATE),
}


def stream_header(file_index: int, stream: int) -> bytes:
    """``<FileIndex> <Stream> 0``, no newline (``filed/backup.cc``, ``stored/mac.cc``)."""
    return b"%d %d 0" % (file_index, stream)


def record_header(vol_session_id: int, vol_session_time: int, file_index: int, stream: int,
                  length: int) -> bytes:
    """``rechdr <VolSessionId> <VolSessionTime> <FileIndex> <Stream> <len>``, no newline."""
    return b"rechdr %d %d %d %d %d" % (vol_session_id, vol_session_time, file_index, stream, length)


# -- events --------------------------------------------------------------------------


@attrs.frozen
class ReadParams:
    """The fields of ``read open session = ...``."""

    volume: str
    vol_session_id: int
    vol_session_time: int
    start_file: int = 0
    end_file: int = 0
    start_block: int = 0
    end_block: int = 0


class DataEvent(Event):
    """Base class of the data session's events."""

    __slots__ = ()


@attrs.frozen
class OpenRequested(DataEvent):
    """The commander opened a session (the ticket reply is already queued).

    ``read`` holds the ``read open session`` fields, ``None`` for other
    modes, and also when the line did not scan (the SD accepts it anyway).
    """

    mode: Mode
    read: ReadParams | None = None


@attrs.frozen
class DataRequested(DataEvent):
    """``append data`` / ``replicate data`` (``3000 OK data`` queued) or ``read data``
    (answer with :meth:`DataSession.start_read` or :meth:`DataSession.refuse_read`).
    ``ticket`` is the number in the command, ``None`` if it did not scan (the SD
    does not check it)."""

    mode: Mode
    ticket: int | None


@attrs.frozen
class StreamHeader(DataEvent):
    file_index: int
    stream: int


class StreamData(tuple[bytes], DataEvent):
    """One data frame of the current stream (a tuple, as cheap as ``Message``)."""

    __slots__ = ()

    def __new__(cls, payload: bytes) -> StreamData:
        return tuple.__new__(cls, (payload,))

    @property
    def payload(self) -> bytes:
        return self[0]

    def __repr__(self) -> str:
        return f"StreamData(len={len(self[0])})"

    def __eq__(self, other: object) -> bool:
        return type(other) is StreamData and tuple.__eq__(self, other)

    def __ne__(self, other: object) -> bool:
        return not self.__eq__(other)

    def __hash__(self) -> int:
        return hash((StreamData, self[0]))


@attrs.frozen
class StreamEnd(DataEvent):
    """The EOD that ends a stream."""


@attrs.frozen
class DataEnd(DataEvent):
    """The final EOD: answer with :meth:`DataSession.data_stored`."""

    mode: Mode


@attrs.frozen
class EndRequested(DataEvent):
    mode: Mode
    ticket: int | None


@attrs.frozen
class CloseRequested(DataEvent):
    """``append close`` / ``read close``: the status line and EOD are already queued."""

    mode: Mode
    ticket: int | None
    status: int


@attrs.frozen
class PeerTerminated(DataEvent):
    """The commander sent ``BNET_TERMINATE``."""


@attrs.frozen
class TicketGranted(DataEvent):
    mode: Mode
    ticket: int


@attrs.frozen
class DataReady(DataEvent):
    """``3000 OK data``: send the streams (append, replicate) or read the records."""

    mode: Mode


@attrs.frozen
class DataStored(DataEvent):
    """``3000 OK append data`` / ``3000 OK replicate data``."""

    mode: Mode


@attrs.frozen
class SessionEnded(DataEvent):
    """``3000 OK end`` / ``3000 OK end replicate``."""

    mode: Mode


@attrs.frozen
class CloseConfirmed(DataEvent):
    """``3000 OK close Status = <n>``; its EOD follows (:class:`SessionClosed`)."""

    status: int


@attrs.frozen
class SessionClosed(DataEvent):
    """The EOD after the close status line."""

    status: int


@attrs.frozen
class RecordHeader(DataEvent):
    vol_session_id: int
    vol_session_time: int
    file_index: int
    stream: int
    length: int


class RecordData(tuple[bytes], DataEvent):
    """The data frame of the record announced by the last :class:`RecordHeader`."""

    __slots__ = ()

    def __new__(cls, payload: bytes) -> RecordData:
        return tuple.__new__(cls, (payload,))

    @property
    def payload(self) -> bytes:
        return self[0]

    def __repr__(self) -> str:
        return f"RecordData(len={len(self[0])})"

    def __eq__(self, other: object) -> bool:
        return type(other) is RecordData and tuple.__eq__(self, other)

    def __ne__(self, other: object) -> bool:
        return not self.__eq__(other)

    def __hash__(self) -> int:
        return hash((RecordData, self[0]))


@attrs.frozen
class ReadEnd(DataEvent):
    """The EOD after the last record."""


class SessionRefused(RemoteProtocolError):
    """The peer did something this side refuses; ``frames`` are what to send
    before closing (as Bareos does), ``reply`` the same frames as bytes."""

    def __init__(self, message: str, frames: tuple[OutFrame, ...] = ()) -> None:
        super().__init__(message, reply=_encode(frames))
        self.frames = frames


def _encode(frames: tuple[OutFrame, ...] | list[OutFrame]) -> bytes:
    return b"".join(encode_signal(f) if isinstance(f, int) else encode_message(f) for f in frames)


_tuple_new = tuple.__new__  # StreamData(payload) without a Python-level call
_TERM = int(Signal.BNET_TERMINATE)
_EOD = int(Signal.BNET_EOD)
_IGNORED_SIGNALS = frozenset({int(Signal.BNET_HEARTBEAT), int(Signal.BNET_HB_RESPONSE)})


class DataSession:
    """One side of a data session (see the module documentation).

    ``ticket`` is the answerer's VolSessionId (the number in its ticket
    replies); ``close_status`` the status its close reply reports
    (default 84 ``T`` after an append, 82 ``R`` for a read session, as
    recorded); ``rerunning`` lets an append start at a FileIndex above 1.

    Commander methods: :meth:`append_open`, :meth:`append_data`,
    :meth:`send_header`, :meth:`send_data`, :meth:`end_stream`,
    :meth:`end_data`, :meth:`append_end`, :meth:`append_close`,
    :meth:`read_open`, :meth:`read_data`, :meth:`read_close`,
    :meth:`start_replicate`, :meth:`replicate_data`, :meth:`end_replicate`,
    :meth:`terminate`.  Answerer methods: :meth:`data_stored`,
    :meth:`start_read`, :meth:`send_record`, :meth:`end_read`,
    :meth:`refuse_read`.  Both: :meth:`receive_frame` (or
    :meth:`receive_data` for raw bytes), :meth:`frames_to_send` /
    :meth:`data_to_send`.

    The answerer reads the next command only once it has answered, as the SD
    does: commander frames that arrive while it still owes an answer (to the
    final EOD, or the records of a read) are held, and handled by
    :meth:`data_stored` / :meth:`end_read`, which return their events.
    """

    def __init__(self, kind: SessionKind, side: Side, *, ticket: int = 0,
                 close_status: int | None = None, rerunning: bool = False) -> None:
        self.kind = kind
        self.side = side
        self.state = DataState.IDLE
        self.ticket = ticket
        self.close_status = close_status
        self.rerunning = rerunning
        #: the commander's record of the last granted ticket (0 before)
        self.mode: Mode | None = None
        self._out: list[OutFrame] = []
        self._events: list[DataEvent] = []
        self._error: RemoteProtocolError | None = None
        self._deferred: deque[Message | SignalFrame | ConnectionClosed] = deque()
        self._last_file_index = 0
        self._record_length = 0
        self._close_line_status = 0
        self._decoder: FrameDecoder | None = None
        self._commands = _COMMAND_PREFIXES[kind]

    def __repr__(self) -> str:
        return f"<DataSession {self.kind.value} {self.side.value} {self.state.value}>"

    # -- output ------------------------------------------------------------------

    def frames_to_send(self) -> list[OutFrame]:
        """The frames to send now, in order: ``bytes`` payloads (the objects given
        to :meth:`send_data`, uncopied) and signals (negative ints)."""
        out, self._out = self._out, []
        return out

    @property
    def has_frames_to_send(self) -> bool:
        """Whether :meth:`frames_to_send` has anything."""
        return bool(self._out)

    def data_to_send(self) -> bytes:
        """:meth:`frames_to_send`, framed as bytes."""
        return _encode(self.frames_to_send())

    @property
    def failed(self) -> bool:
        return self.state is DataState.FAILED

    # -- the table ---------------------------------------------------------------

    def _step(self, inp: DataInput) -> Action:
        """Apply ``inp`` (any side); raises KeyError if the table has no entry."""
        action, self.state = TRANSITIONS[(self.state, inp)]
        mode = _MODE_OF_STATE.get(self.state)
        if mode is not None:
            self.mode = mode
        return action

    def _local(self, inp: DataInput, *frames: OutFrame) -> Action:
        """Our own frame(s): allowed by the table or a LocalProtocolError (nothing sent)."""
        if self._error is not None:
            raise LocalProtocolError(f"the session failed: {self._error.message}")
        if inp.side is not self.side:
            raise LocalProtocolError(f"the {self.side.value} does not send {inp.value!r}")
        try:
            action = self._step(inp)
        except KeyError:
            raise LocalProtocolError(f"{inp.value!r} is not allowed in state {self.state.value}") from None
        self._out.extend(frames)
        return action

    # -- commander API ------------------------------------------------------------

    def _fd_sd(self) -> None:
        if self.kind is not SessionKind.FD_SD:
            raise LocalProtocolError("append and read sessions are FD-SD commands")

    def _sd_sd(self) -> None:
        if self.kind is not SessionKind.SD_SD:
            raise LocalProtocolError("replication commands belong to SD-SD channels")

    def append_open(self) -> None:
        self._fd_sd()
        self._local(_I.C_APPEND_OPEN, b"append open session\n")

    def append_data(self) -> None:
        self._local(_I.C_APPEND_DATA, b"append data %d\n" % self.ticket)
        self._last_file_index = 0

    def append_end(self) -> None:
        self._local(_I.C_APPEND_END, b"append end session %d\n" % self.ticket)

    def append_close(self) -> None:
        self._local(_I.C_APPEND_CLOSE, b"append close session %d\n" % self.ticket)

    def read_open(self, params: ReadParams) -> None:
        """``read open session = ...`` (the FD sends the volume ``DummyVolume``)."""
        self._fd_sd()
        line = b"read open session = %s %d %d %d %d %d %d\n" % (
            params.volume.encode("utf-8"), params.vol_session_id, params.vol_session_time,
            params.start_file, params.end_file, params.start_block, params.end_block)
        self._local(_I.C_READ_OPEN, line)

    def read_data(self) -> None:
        self._local(_I.C_READ_DATA, b"read data %d\n" % self.ticket)

    def read_close(self) -> None:
        self._local(_I.C_READ_CLOSE, b"read close session %d\n" % self.ticket)

    def start_replicate(self) -> None:
        self._sd_sd()
        self._local(_I.C_START_REPLICATE, b"start replicate\n")

    def replicate_data(self) -> None:
        self._local(_I.C_REPLICATE_DATA, b"replicate data %d\n" % self.ticket)
        self._last_file_index = 0

    def end_replicate(self) -> None:
        self._local(_I.C_END_REPLICATE, b"end replicate\n")

    def send_header(self, file_index: int, stream: int) -> None:
        """Start a stream: ``<FileIndex> <Stream> 0``.  FileIndex must be positive
        and stay or advance by one (the answerer refuses anything else)."""
        if self.state in _HEADER_STATES and not self._sequential(file_index):
            raise LocalProtocolError(
                f"FileIndex={file_index} not positive or sequential={self._last_file_index}")
        self._local(_I.C_HEADER, stream_header(file_index, stream))
        self._last_file_index = file_index

    def send_data(self, payload: bytes) -> None:
        """One data frame of the current stream (a longer payload is split by the
        framing into several frames, which the answerer takes as several records)."""
        if self.state in _DATA_LOOPS and self.side is Side.COMMANDER and self._error is None:
            self._out.append(payload)  # (stream, C_DATA) -> (STREAM_DATA, stream): the hot path
            return
        self._local(_I.C_DATA, payload)

    def send_data_now(self, payload: bytes) -> list[OutFrame]:
        """:meth:`send_data` and :meth:`frames_to_send` in one call (the bulk path)."""
        if self.streaming:
            return [payload]  # (stream, C_DATA) -> (STREAM_DATA, stream), as in send_data()
        self.send_data(payload)
        return self.frames_to_send()

    @property
    def streaming(self) -> bool:
        """Whether :meth:`send_data` now would be the table's ``(stream, C_DATA)
        -> (STREAM_DATA, same state)`` on the commander with nothing queued
        before it: it only queues the payload, and leaves this true."""
        return self.state in _DATA_LOOPS and self.side is Side.COMMANDER and self._error is None and not self._out

    def send_data_frames(self, payloads: list[bytes]) -> list[OutFrame]:
        """:meth:`send_data` for each payload, then :meth:`frames_to_send`, in one
        call (the bulk path); while :attr:`streaming`, that is the list given."""
        if self.streaming:
            return payloads  # type: ignore[return-value]  # (stream, C_DATA) -> same state, for each
        for payload in payloads:
            self.send_data(payload)
        return self.frames_to_send()

    def end_stream(self) -> None:
        """The EOD after a stream's data."""
        if self.state not in _STREAM_STATES:
            raise LocalProtocolError(f"no stream to end in state {self.state.value}")
        self._local(_I.C_EOD, _EOD)

    def end_data(self) -> None:
        """The final EOD (after the last stream's own EOD)."""
        if self.state not in _HEADER_STATES:
            raise LocalProtocolError(f"end_data() is not allowed in state {self.state.value}"
                                     " (end the stream first)")
        self._local(_I.C_EOD, _EOD)

    def terminate(self) -> None:
        """``BNET_TERMINATE``: the commander is done (also after a failure)."""
        if self.state is DataState.FAILED:
            self._out.append(_TERM)
            return
        self._local(_I.C_TERMINATE, _TERM)

    def _sequential(self, file_index: int) -> bool:
        last = self._last_file_index
        if file_index <= 0:
            return False
        if self.rerunning and last == 0:
            return True
        return file_index == last or file_index == last + 1

    # -- answerer API ---------------------------------------------------------------

    def data_stored(self, ok: bool = True) -> list[DataEvent]:
        """Answer the final EOD: the data is on the volume (``ok``), or it is not
        (the SD's failure lines and ``BNET_TERMINATE`` are queued, the session fails).

        Returns the events of commander frames that arrived meanwhile (the
        SD reads them only now).
        """
        if self.side is not Side.ANSWERER or self.state not in (_S.APPEND_STORING, _S.REPLICATE_STORING):
            raise LocalProtocolError(f"data_stored() is not allowed in state {self.state.value}")
        if not ok:
            self._refuse_locally("the data could not be stored", *self._append_failure_frames())
            return []
        if self.state is _S.APPEND_STORING:
            self._local(_I.S_OK_APPEND_DATA, OK_APPEND_DATA)
        else:
            self._local(_I.S_OK_REPLICATE_DATA, OK_REPLICATE_DATA)
        return self._run_deferred()

    def start_read(self) -> None:
        """Answer ``read data``: ``3000 OK data``; records follow."""
        self._local(_I.S_OK_DATA, OK_DATA)

    def refuse_read(self) -> None:
        """Answer ``read data`` with ``3000 error`` (no volume to read) and terminate."""
        if self.side is not Side.ANSWERER or self.state is not _S.READ_DATA_REQUESTED:
            raise LocalProtocolError(f"refuse_read() is not allowed in state {self.state.value}")
        self._refuse_locally("the read was refused", READ_ERROR, _TERM)

    def send_record(self, vol_session_id: int, vol_session_time: int, file_index: int, stream: int,
                    data: bytes) -> None:
        """One record of a read session: its ``rechdr`` and its data in one frame."""
        if len(data) > MAX_MESSAGE_LENGTH:
            raise LocalProtocolError(f"a record is sent in one frame (at most {MAX_MESSAGE_LENGTH} bytes)")
        self._local(_I.S_RECHDR, record_header(vol_session_id, vol_session_time, file_index, stream,
                                               len(data)))
        self._local(_I.S_RECORD, data)

    def end_read(self) -> list[DataEvent]:
        """The EOD after the last record; returns the events of commander frames
        that arrived while the records went out."""
        if self.state is not _S.READ_HEADER:
            raise LocalProtocolError(f"end_read() is not allowed in state {self.state.value}")
        self._local(_I.S_EOD, _EOD)
        return self._run_deferred()

    def _refuse_locally(self, message: str, *frames: OutFrame) -> None:
        """Our own decision to end the session the way the SD does."""
        self._out.extend(frames)
        self.state = DataState.FAILED
        self._error = SessionRefused(message)

    def _append_failure_frames(self) -> tuple[OutFrame, ...]:
        if self.kind is SessionKind.FD_SD:
            return (FAILED_APPEND, ERROR_APPEND, _TERM)
        # append.cc answers OK_replicate whatever happened, then ReplicateData() the 3903
        return (OK_REPLICATE_DATA, ERROR_REPLICATE, _TERM)

    # -- input ---------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> list[DataEvent]:
        """Feed raw bytes (``b""`` = EOF) when no connection object decodes the frames."""
        if self._decoder is None:
            self._decoder = FrameDecoder()
        events: list[DataEvent] = []
        for frame in self._decoder.receive_data(data):
            assert isinstance(frame, (Message, SignalFrame, ConnectionClosed))
            events.extend(self.receive_frame(frame))
        return events

    def receive_frame(self, frame: Message | SignalFrame | ConnectionClosed) -> list[DataEvent]:
        """Feed one frame from the peer; returns the events it completes.

        Raises :class:`SessionRefused` when the answerer refuses (send its
        ``frames``, then close) and :class:`RemoteProtocolError` when the
        commander gets something it cannot use (it then terminates: send
        ``frames`` of the error, a ``BNET_TERMINATE``).
        """
        if self._error is not None:
            raise self._error
        if type(frame) is Message and self.state in _DATA_LOOPS and self.side is Side.ANSWERER:
            self._events = [_tuple_new(StreamData, frame)]  # the hot path of (stream, C_DATA)
            return self._events
        self._events = []
        if self.side is Side.ANSWERER:
            if self.state in ANSWERER_TURN:
                self._deferred.append(frame)  # the SD reads it once it has answered
            else:
                self._answerer_frame(frame)
        else:
            self._commander_frame(frame)
        return self._events

    def data_run(self, frames: Sequence[bytes | memoryview | int], start: int = 0) -> int:
        """The bulk path of :meth:`receive_frame`: how many of the raw frames from
        ``frames[start]`` on are stream data that the current state takes as they
        are; returns the index after the last of them (``start``: none).

        Those frames are the table's ``(APPEND_STREAM | REPLICATE_STREAM, C_DATA)
        -> (STREAM_DATA, same state)`` on the answerer: the state does not change,
        so the caller hands each payload (``bytes`` or ``memoryview``) to its sink
        as the :class:`StreamData` event :meth:`receive_frame` would have made.
        A signal (a negative ``int``) ends the run; it and every frame in another
        state go through :meth:`receive_frame`, as :class:`Message` or
        :class:`SignalFrame`.
        """
        if self.side is not Side.ANSWERER or self._error is not None or self.state not in _DATA_LOOPS:
            return start
        end = len(frames)
        if not start and int not in map(type, frames):  # a read of data frames only: no loop here
            return end
        i = start
        while i < end and frames[i].__class__ is not int:
            i += 1
        return i

    def _run_deferred(self) -> list[DataEvent]:
        self._events = []
        while self._deferred and self.state not in ANSWERER_TURN and self._error is None:
            self._answerer_frame(self._deferred.popleft())
        return self._events

    def _take_out(self) -> tuple[OutFrame, ...]:
        """The frames not yet handed out: they go out before a refusal, on the error."""
        out = tuple(self._out)
        self._out.clear()
        return out

    def _fail(self, exc: RemoteProtocolError) -> NoReturn:
        self.state = DataState.FAILED
        self._error = exc
        raise exc

    # -- answerer: frames from the commander ---------------------------------------------

    def _answerer_frame(self, frame: Message | SignalFrame | ConnectionClosed) -> None:
        state = self.state
        if state is DataState.TERMINATED:
            return  # the SD stopped reading after the TERMINATE; it only closes
        if isinstance(frame, ConnectionClosed):
            if state is DataState.IDLE:
                return  # no session open: a close without TERMINATE ends the conversation
            self._fail(SessionRefused(f"connection closed in state {state.value}"))
        if state in _DATA_STATES:
            self._answerer_data_frame(frame)
            return
        if isinstance(frame, SignalFrame):
            if frame.signal == _TERM:
                self._answer(_I.C_TERMINATE, None)
            return  # DoFdCommands() ignores every other signal
        payload = frame.payload
        if not payload:
            return  # and zero-length messages
        for prefix, inp in self._commands:
            if payload.startswith(prefix):
                self._answer(inp, payload)
                return
        self._answer(_I.C_UNKNOWN, payload)

    def _answerer_data_frame(self, frame: Message | SignalFrame) -> None:
        """Inside ``DoAppendData()``: frames come through ``BgetMsg()``."""
        if isinstance(frame, Message):
            if self.state in _HEADER_STATES:
                values = bsscanf(frame.payload, _HEADER_FORMAT)
                if values is None or len(values) != 2:
                    self._remote_append_failure(f"Malformed data header: {frame.payload[:100]!r}")
                file_index, stream = values[0], values[1]
                assert isinstance(file_index, int) and isinstance(stream, int)
                if not self._sequential(file_index):
                    self._remote_append_failure(
                        f"FileIndex={file_index} not positive or sequential={self._last_file_index}")
                self._last_file_index = file_index
                self._step(_I.C_HEADER)
                self._events.append(StreamHeader(file_index, stream))
            else:
                self._step(_I.C_DATA)
                self._events.append(StreamData(frame.payload))
            return
        sig = int(frame.signal)
        if sig == _EOD:
            action = self._step(_I.C_EOD)
            if action is _A.STREAM_END:
                self._events.append(StreamEnd())
            else:
                assert self.mode is not None
                self._events.append(DataEnd(self.mode))
            return
        if sig in _IGNORED_SIGNALS:
            return
        if sig == Signal.BNET_POLL:
            self._out.append(POLL_OK)
            return
        if sig == Signal.BNET_STATUS:
            self._out.extend((STATUS_OK, _EOD))
            return
        if sig == _TERM:  # the socket is terminated: the SD's replies cannot go out
            self._remote_append_failure("Unexpected signal: BNET_TERMINATE", sent=False)
        if sig == Signal.BNET_EOD_POLL:
            self._out.append(POLL_OK)
        self._remote_append_failure(f"Unexpected signal: {frame.name}")

    def _remote_append_failure(self, message: str, *, sent: bool = True) -> NoReturn:
        frames = self._append_failure_frames() if sent else ()
        self._fail(SessionRefused(message, self._take_out() + frames))

    def _answer(self, inp: DataInput, payload: bytes | None) -> None:
        """A command (or TERMINATE) from the commander, and the answerer's reaction."""
        try:
            action = self._step(inp)
        except KeyError:
            self._refuse_command(inp, payload)
            return
        mode = self.mode
        assert mode is not None or action in (_A.PEER_TERMINATED, _A.IGNORE)
        if action is _A.GRANT_TICKET:
            assert mode is not None and payload is not None
            read = self._read_params(payload) if mode is Mode.READ else None
            self._events.append(OpenRequested(mode, read))
            self._reply(_I.S_TICKET, _TICKET_REPLY[self.kind][0] % self.ticket)
        elif action is _A.ACCEPT_DATA:
            assert mode is not None and payload is not None
            self._last_file_index = 0
            self._events.append(DataRequested(mode, self._ticket_of(inp, payload)))
            self._reply(_I.S_OK_DATA, OK_DATA)
        elif action is _A.AWAIT_READ:
            assert mode is not None and payload is not None
            self._events.append(DataRequested(mode, self._ticket_of(inp, payload)))
        elif action is _A.CONFIRM_END:
            assert mode is not None and payload is not None
            self._events.append(EndRequested(mode, self._ticket_of(inp, payload)))
            if mode is Mode.REPLICATE:
                self._reply(_I.S_OK_END_REPLICATE, OK_END_REPLICATE)
            else:
                self._reply(_I.S_OK_END, OK_END)
        elif action is _A.CONFIRM_CLOSE:
            assert mode is not None and payload is not None
            status = self.close_status
            if status is None:
                status = CLOSE_STATUS_RUNNING if mode is Mode.READ else CLOSE_STATUS_TERMINATED
            self._events.append(CloseRequested(mode, self._ticket_of(inp, payload), status))
            self._reply(_I.S_OK_CLOSE, _CLOSE_FORMAT % status)
            self._reply(_I.S_EOD, _EOD)
        elif action is _A.PEER_TERMINATED:
            self._events.append(PeerTerminated())

    def _reply(self, inp: DataInput, frame: OutFrame) -> None:
        self._step(inp)
        self._out.append(frame)

    def _refuse_command(self, inp: DataInput, payload: bytes | None) -> NoReturn:
        """``3900`` / ``3901`` / ``3902`` and ``BNET_TERMINATE``, as ``DoFdCommands()`` /
        ``DoSdCommands()`` do for a command they cannot run now."""
        if inp is _I.C_UNKNOWN:
            line = INVALID_COMMAND
        elif inp in _OPEN_INPUTS and self.state in _OPEN_STATES:
            line = _ALREADY_OPEN[self.kind]
        else:  # no session (of that kind) is open
            line = _NOT_OPENED[self.kind]
        shown = payload[:100] if payload is not None else inp.value
        self._fail(SessionRefused(f"{inp.value} refused in state {self.state.value}: {shown!r}",
                                  self._take_out() + (line, _TERM)))

    @staticmethod
    def _ticket_of(inp: DataInput, payload: bytes) -> int | None:
        fmt = _TICKET_FORMATS.get(inp)
        if fmt is None:
            return None
        values = bsscanf(payload, fmt)
        if values is None:
            return None
        value = values[0]
        assert isinstance(value, int)
        return value

    @staticmethod
    def _read_params(payload: bytes) -> ReadParams | None:
        values = bsscanf(payload, _READ_OPEN_FORMAT)
        if values is None:
            return None  # ReadOpenSession() opens the session all the same
        volume, *numbers = values
        assert isinstance(volume, bytes)
        n = [int(x) for x in numbers]
        return ReadParams(volume.decode("utf-8", "surrogateescape"), *n)

    # -- commander: frames from the answerer ------------------------------------------------

    def _commander_frame(self, frame: Message | SignalFrame | ConnectionClosed) -> None:
        state = self.state
        if isinstance(frame, ConnectionClosed):
            if state in (DataState.TERMINATED, DataState.IDLE):
                return
            self._fail(RemoteProtocolError(f"connection closed in state {state.value}"))
        if isinstance(frame, SignalFrame):
            sig = int(frame.signal)
            if sig in _IGNORED_SIGNALS:
                return  # BgetMsg() skips heartbeats
            if sig == Signal.BNET_POLL:
                if state in ANSWERER_TURN:
                    self._out.append(POLL_OK)
                return
            if sig == _EOD:
                self._commander_input(_I.S_EOD, frame)
            else:
                self._commander_input(_I.S_TERMINATE if sig == _TERM else _I.S_ERROR, frame)
            return
        payload = frame.payload
        if state is _S.READ_RECORD:
            if len(payload) != self._record_length:
                self._commander_error(
                    f"Actual data size {len(payload)} not same as header {self._record_length}")
            self._step(_I.S_RECORD)
            self._events.append(RecordData(payload))
            return
        if state is _S.READ_HEADER:
            values = bsscanf(payload, _RECHDR_FORMAT)
            if values is None:
                self._commander_error(f"Record header scan error: {payload[:100]!r}")
            ints = [v for v in values if isinstance(v, int)]
            self._record_length = ints[4]
            self._step(_I.S_RECHDR)
            self._events.append(RecordHeader(*ints))
            return
        if state in (_S.APPEND_OPENING, _S.READ_OPENING, _S.REPLICATE_OPENING):
            values = bsscanf(payload, _TICKET_REPLY[self.kind][1])
            if values is not None:
                ticket = values[0]
                assert isinstance(ticket, int)
                self._step(_I.S_TICKET)
                self.ticket = ticket
                assert self.mode is not None
                self._events.append(TicketGranted(self.mode, ticket))
                return
        elif state is _S.CLOSING:
            values = bsscanf(payload, _CLOSE_FORMAT)
            if values is not None:
                status = values[0]
                assert isinstance(status, int)
                self._step(_I.S_OK_CLOSE)
                self._close_line_status = status
                self._events.append(CloseConfirmed(status))
                return
        else:
            exact = _EXACT_REPLY.get(state)
            if exact is not None and payload == exact[0]:
                self._commander_input(exact[1], frame)
                return
        self._commander_input(_I.S_ERROR, frame)

    def _commander_input(self, inp: DataInput, frame: Message | SignalFrame) -> None:
        try:
            action = self._step(inp)
        except KeyError:
            shown = frame.payload[:100] if isinstance(frame, Message) else frame.name
            self._commander_error(f"unexpected {shown!r} from the {Side.ANSWERER.value} "
                                  f"in state {self.state.value}")
            return
        mode = self.mode
        if action is _A.DATA_READY:
            assert mode is not None
            self._events.append(DataReady(mode))
        elif action is _A.DATA_STORED:
            assert mode is not None
            self._events.append(DataStored(mode))
        elif action is _A.SESSION_ENDED:
            assert mode is not None
            self._events.append(SessionEnded(mode))
        elif action is _A.READ_END:
            self._events.append(ReadEnd())
        elif action is _A.CLOSE_EOD:
            self._events.append(SessionClosed(self._close_line_status))

    def _commander_error(self, message: str) -> NoReturn:
        """A reply the FD cannot use: it gives up and terminates the channel."""
        self._fail(SessionRefused(message, self._take_out() + (_TERM,)))
