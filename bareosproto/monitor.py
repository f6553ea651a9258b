"""The tray monitor's conversation, sans-IO: what it sends, what a daemon lets it do, when it polls.

The monitor's identities, Hello lines and handshakes are those of
:class:`~bareosproto.connection.ClientConnection` with
``ConnectionType.MONITOR_DIRECTOR`` / ``MONITOR_FD`` / ``MONITOR_SD``
(PROTOCOL.md 7.9-7.11).  This module holds the rest
(``qt-tray-monitor/monitoritem.cc``, ``monitoritemthread.cc``):

* what it sends: ``status dir`` to a Director, ``status`` to an FD or SD (no
  newline), and ``quit`` then ``BNET_TERMINATE`` when it disconnects;
* how it reads a reply: frames up to ``BNET_EOD`` (or ``BNET_SUB_PROMPT``),
  each line's trailing newline (and the NUL of FD/SD status lines) dropped,
  ``BNET_HEARTBEAT`` answered with ``BNET_HB_RESPONSE``
  (:class:`StatusReader`);
* what a daemon lets a monitor do (:func:`fd_monitor_verdict`,
  :func:`sd_monitor_verdict`, :func:`director_monitor_verdict`): an FD or
  SD with ``Monitor = yes`` on the Director resource runs ``status`` and
  ``.status`` only; any other known command gets
  ``2997 Invalid command for a Director with Monitor directive enabled.``
  (FD) / ``3997 ...`` (SD) and the session ends; a Director runs what the
  monitor's console ACL allows and answers the rest with
  ``<command>: is an invalid command.``;
* when it polls (:class:`PollSchedule`): a periodic timer of
  ``RefreshInterval`` seconds (1..600, default 60); a tick that comes while
  a poll still runs is skipped, missed ticks are not made up.
"""

from __future__ import annotations

import math

import attrs

from .connection import Daemon
from .errors import LocalProtocolError
from .signals import Signal

__all__ = [
    "MonitorTarget",
    "STATUS_COMMAND",
    "QUIT",
    "MONITOR_COMMANDS",
    "FD_MONITOR_REFUSAL",
    "SD_MONITOR_REFUSAL",
    "FD_INVALID_COMMAND",
    "FD_COMMANDS",
    "SD_COMMANDS",
    "DIRECTOR_COMMANDS",
    "Verdict",
    "fd_monitor_verdict",
    "sd_monitor_verdict",
    "director_monitor_verdict",
    "status_frames",
    "StatusReader",
    "PollSchedule",
    "check_refresh_interval",
    "REFRESH_INTERVAL_DEFAULT",
]


#: The daemons a tray monitor watches (the Director's, FD's and SD's ``Daemon``).
MonitorTarget = Daemon


#: What ``MonitorItem::GetStatus()`` sends (``writecmd``: no newline).
STATUS_COMMAND: dict[MonitorTarget, bytes] = {
    MonitorTarget.DIRECTOR: b"status dir",
    MonitorTarget.FD: b"status",
    MonitorTarget.SD: b"status",
}
#: What ``MonitorItem::disconnect()`` sends before ``BNET_TERMINATE``.
QUIT = b"quit"

#: The FD/SD commands with ``monitoraccess`` (``filed/dir_cmd.cc``, ``stored/dir_cmd.cc``).
MONITOR_COMMANDS = (b"status", b".status")
FD_MONITOR_REFUSAL = b"2997 Invalid command for a Director with Monitor directive enabled.\n"
SD_MONITOR_REFUSAL = b"3997 Invalid command for a Director with Monitor directive enabled.\n"
FD_INVALID_COMMAND = b"2999 Invalid command\n"

#: The FD's command table, in its order (matched by prefix, ``bstrncmp``).
FD_COMMANDS = (
    b"accurate", b"backup", b"bootstrap", b"cancel", b"endrestore", b"estimate", b"fileset",
    b"JobId=", b"level = ", b"pluginoptions", b"RunBeforeNow", b"Run", b"restoreobject",
    b"restore ", b"resolve ", b"getSecureEraseCmd", b"session", b"setauthorization",
    b"setbandwidth=", b"setdebug=", b"status", b".status", b"storage ", b"verify",
)
#: The SD's command table, in its order.
SD_COMMANDS = (
    b"autochanger", b"bootstrap", b"cancel", b"finish", b"JobId=", b"label", b"listen", b"mount",
    b"nextrun", b"passive", b"pluginoptions", b"readlabel", b"relabel", b"release", b"resolve",
    b"replicate", b"run", b"getSecureEraseCmd", b"setbandwidth=", b"setdebug=", b"setdevice",
    b"stats", b"status", b".status", b"unmount", b"use storage=",
)
#: The Director's console commands, in table order (``dird/ua_cmds.cc``): a
#: typed word selects the first one it is a case-insensitive prefix of.
DIRECTOR_COMMANDS = tuple(
    ". .actiononpurge .api .authorized .catalogs .clients .consoles .users .defaults .filesets "
    ".help .jobdefs .jobs .jobstatus .levels .locations .messages .media .mediatypes .msgs .pools "
    ".profiles .quit .sql .schedule .status .storages .types .volstatus .bvfs_lsdirs .bvfs_lsfiles "
    ".bvfs_update .bvfs_get_jobids .bvfs_versions .bvfs_restore .bvfs_cleanup .bvfs_clear_cache "
    "add autodisplay automount cancel configure create delete disable enable estimate exit export "
    "gui help import label list llist messages memory mount move prune purge quit query restore "
    "relabel release reload rerun resolve run status setbandwidth setdebug setdevice setip show "
    "sqlquery time trace truncate unmount umount update use var version wait whoami".split()
)
#: Commands a console may always run, whatever its ACL.
_ALWAYS = frozenset({"exit", "quit", "whoami"})

_EOD = int(Signal.BNET_EOD)
_TERM = int(Signal.BNET_TERMINATE)


@attrs.frozen
class Verdict:
    """What a daemon does with one command from a monitor.

    ``allowed``: run ``command`` (the table entry it matched).  Otherwise
    send ``frames`` (payloads, and signals as negative ints) and, if
    ``close``, end the session (the daemon closes after them).
    """

    allowed: bool
    command: str | None = None
    frames: tuple[bytes | int, ...] = ()
    close: bool = False


def _match(table: tuple[bytes, ...], payload: bytes) -> bytes | None:
    for entry in table:
        if payload.startswith(entry):
            return entry
    return None


def _c_string(payload: bytes) -> bytes:
    return payload.split(b"\0", 1)[0]


def fd_monitor_verdict(payload: bytes, monitor: bool = True) -> Verdict:
    """``process_director_commands()`` of an FD for a Director with ``Monitor = yes``.

    ``status``/``.status`` run; another known command gets
    ``2997 ...`` and ``BNET_EOD``, an unknown one ``2999 Invalid command``;
    either way the FD stops and ends with ``BNET_TERMINATE`` (no
    ``2800 End Job``, no job ran).
    """
    line = _c_string(payload)
    entry = _match(FD_COMMANDS, line)
    if entry is None:
        return Verdict(False, None, (FD_INVALID_COMMAND, _TERM), True)
    if monitor and entry not in MONITOR_COMMANDS:
        return Verdict(False, entry.decode(), (FD_MONITOR_REFUSAL, _EOD, _TERM), True)
    return Verdict(True, entry.decode())


def sd_monitor_verdict(payload: bytes, monitor: bool = True) -> Verdict:
    """``HandleDirectorConnection()`` of an SD for a Director with ``Monitor = yes``.

    ``status``/``.status`` run; another known command gets ``3997 ...`` and
    ``BNET_EOD`` -- and then, because the refusal leaves the command "not
    found", also ``3900 Invalid command: <line>`` -- and the SD ends with
    ``BNET_TERMINATE``.  An unknown command gets only the ``3900`` line and
    ``BNET_TERMINATE``.
    """
    line = _c_string(payload)
    invalid = b"3900 Invalid command: " + line + b"\n"
    entry = _match(SD_COMMANDS, line)
    if entry is None:
        return Verdict(False, None, (invalid, _TERM), True)
    if monitor and entry not in MONITOR_COMMANDS:
        return Verdict(False, entry.decode(), (SD_MONITOR_REFUSAL, _EOD, invalid, _TERM), True)
    return Verdict(True, entry.decode())


def director_monitor_verdict(payload: bytes, allowed: tuple[str, ...] = ("status", ".status")) -> Verdict:
    """``Do_a_command()`` of a Director for a console whose Command ACL is ``allowed``.

    The first word selects the first table command it is a case-insensitive
    prefix of (``stat`` is ``status``); ``exit``, ``quit`` and ``whoami`` are
    always allowed.  A refused or unknown word gets
    ``<word>: is an invalid command.`` and the Director's ``BNET_EOD``; the
    session goes on.  An empty line runs nothing and gets just the ``EOD``.
    """
    words = _c_string(payload).decode("utf-8", "surrogateescape").split()
    if not words:
        return Verdict(False, None, (_EOD,), False)
    word = words[0].split("=", 1)[0]
    folded = word.lower()
    key = next((k for k in DIRECTOR_COMMANDS if k.lower().startswith(folded)), None) if folded else None
    if key is not None and (key in _ALWAYS or key in allowed):
        return Verdict(True, key)
    return Verdict(False, key, (f"{word}: is an invalid command.\n".encode("utf-8", "surrogateescape"), _EOD),
                   False)


def status_frames(lines: list[bytes], *, nul: bool = True, leading_blank: bool = True) -> list[bytes]:
    """The frames of an FD/SD status reply (before its ``BNET_EOD``).

    As recorded from the FD (``monitor-fd-emulated``, PROTOCOL.md 15.5): a
    first frame ``\\n`` without NUL, then one frame per line, each ending in
    ``\\n`` and a NUL.  A Director's ``status dir`` frames carry no NUL
    (``nul=False, leading_blank=False``).
    """
    out = [b"\n"] if leading_blank else []
    for line in lines:
        if not line.endswith(b"\n"):
            line += b"\n"
        out.append(line + b"\0" if nul else line)
    return out


class StatusReader:
    """How the tray reads one reply (``MonitorItem::docmd()``), sans-IO.

    Feed frames with :meth:`feed` (a payload, or a signal as a negative
    int); it returns the frames to send back (``BNET_HB_RESPONSE`` for a
    heartbeat) and sets :attr:`done` at ``BNET_EOD`` (:attr:`complete`) or
    ``BNET_SUB_PROMPT`` (not complete, as the tray reports ``false``).
    :attr:`lines` holds the text, each frame's trailing newline and NUL
    stripped.
    """

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.done = False
        self.complete = False
        self.heartbeats = 0

    def feed(self, frame: bytes | int) -> list[int]:
        if self.done:
            raise LocalProtocolError("the reply is complete")
        if isinstance(frame, int):
            if frame == _EOD:
                self.done = self.complete = True
            elif frame == Signal.BNET_SUB_PROMPT:
                self.done = True
            elif frame == Signal.BNET_HEARTBEAT:
                self.heartbeats += 1
                return [int(Signal.BNET_HB_RESPONSE)]
            return []  # other signals are logged and skipped
        text = _c_string(frame).rstrip(b"\n")  # StripTrailingNewline on the C string
        self.lines.append(text.decode("utf-8", "surrogateescape"))
        return []


#: ``RefreshInterval`` when the Monitor resource sets none.
REFRESH_INTERVAL_DEFAULT = 60.0


def check_refresh_interval(seconds: float) -> float:
    """The tray refuses to start with an interval outside 1..600 s."""
    if not 1 <= seconds <= 600:
        raise LocalProtocolError(
            "Invalid refresh interval: this value must be greater or equal to 1 second and less "
            f"or equal to 10 minutes (read value: {seconds})")
    return float(seconds)


@attrs.frozen
class PollSchedule:
    """When a tray monitor polls: a periodic timer started at ``start``.

    Ticks fall at ``start + k * interval`` (k >= 1).  A tick that arrives
    while a poll runs is skipped (``isRefreshing``), and a late timer does
    not make up missed ticks.  ``check=False`` allows intervals outside the
    tray's 1..600 s (for tests).
    """

    interval: float = REFRESH_INTERVAL_DEFAULT
    start: float = 0.0
    check: bool = True

    def __attrs_post_init__(self) -> None:
        if self.check:
            check_refresh_interval(self.interval)
        elif not self.interval > 0:
            raise LocalProtocolError("the refresh interval must be positive")

    def tick(self, k: int) -> float:
        """The time of tick ``k`` (1 is the first)."""
        if k < 1:
            raise LocalProtocolError("ticks are counted from 1")
        return self.start + k * self.interval

    def next_tick(self, now: float) -> float:
        """The first tick strictly after ``now``."""
        k = max(1, math.floor((now - self.start) / self.interval) + 1)
        t = self.tick(k)
        while t <= now:  # rounding
            k += 1
            t = self.tick(k)
        return t

    def polls(self, until: float, durations: list[float] | None = None) -> list[float]:
        """The times polls start up to ``until``, given how long each poll takes
        (``durations[i]`` for poll i; 0 when missing): ticks that fall inside a
        running poll are skipped."""
        out: list[float] = []
        busy_until = -math.inf
        t = self.tick(1)
        while t <= until:
            if t >= busy_until:
                duration = durations[len(out)] if durations and len(out) < len(durations) else 0.0
                out.append(t)
                busy_until = t + duration
            t = self.next_tick(t)
        return out
