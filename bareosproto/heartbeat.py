"""Heartbeats, idle connections and reconnect delays: the decisions, sans-IO.

Who sends ``BNET_HEARTBEAT`` (-6) and who answers ``BNET_HB_RESPONSE`` (-7) is
:data:`HEARTBEAT_RULES` and :func:`answers_heartbeat` (PROTOCOL.md 9.1 and 15
item 1: in the recordings only the FD sent heartbeats, to the Director, during
a job, and nobody answered).  :func:`heartbeat_period` gives the spacing
Bareos really produces, :func:`idle_frame_verdict` what the Director's pool
does with a frame on a waiting connection (8.2), :class:`IdleTimer` the
dead-peer arithmetic, and :class:`Backoff` / :func:`backoff_delay` the
reconnect delays of a client-initiated FD.

Nothing here reads a clock or a global random source: times and random
samples come from the caller.
"""

from __future__ import annotations

import enum
import math
from typing import Callable

import attrs

from .events import Message, SignalFrame
from .signals import Signal

__all__ = [
    "Party",
    "Phase",
    "HeartbeatRule",
    "HEARTBEAT_RULES",
    "FD_HEARTBEAT_POLL",
    "CLIENT_INITIATED_RETRY",
    "CLIENT_INITIATED_POLL",
    "heartbeat_rule",
    "sends_heartbeat",
    "answers_heartbeat",
    "heartbeat_reply",
    "heartbeat_period",
    "IdleVerdict",
    "idle_frame_verdict",
    "IdleTimer",
    "backoff_delay",
    "Backoff",
]

#: The FD's heartbeat thread waits on the SD socket in 5 s slices (``WAIT_INTERVAL``).
FD_HEARTBEAT_POLL = 5.0
#: A client-initiated FD sleeps 60 s after a failed connect (``handle_connection_to_director()``).
CLIENT_INITIATED_RETRY = 60.0
#: ... and polls its idle connection in 60 s slices (nothing is sent).
CLIENT_INITIATED_POLL = 60.0


class Party(enum.Enum):
    DIRECTOR = "director"
    FD = "fd"
    SD = "sd"
    CONSOLE = "console"
    TRAY_MONITOR = "tray-monitor"


class Phase(enum.Enum):
    """When a heartbeat can be due."""

    BACKUP = "backup"  #: FD: during a backup (heartbeat_sd_dir)
    RESTORE = "restore"  #: FD: during a restore or volume verify (heartbeat_dir)
    WAIT_FOR_VOLUME = "waiting for a volume or device"  #: SD
    RESERVATION_RETRY = "device reservation retry"  #: SD
    IDLE_CLIENT_INITIATED = "idle client-initiated connection"  #: nobody, ever
    CONSOLE_SESSION = "console session"  #: nobody


@attrs.frozen
class HeartbeatRule:
    """One place where Bareos sends ``BNET_HEARTBEAT``.

    ``poll_slice``: the sender checks the time only at the end of such slices,
    so the real spacing is the interval rounded up to a multiple of it
    (``None``: exactly the interval); ``immediate``: the first heartbeat goes
    out at once instead of after one period; ``needs_interval``: only with a
    ``HeartbeatInterval`` > 0; ``observed``: seen in the recordings.
    """

    sender: Party
    receiver: Party
    phase: Phase
    poll_slice: float | None
    immediate: bool
    needs_interval: bool
    observed: bool
    source: str


#: Where Bareos sends heartbeats (PROTOCOL.md 9.1, 15 item 1).  Not listed:
#: the Director and the consoles never send one; nothing is ever sent on an
#: idle client-initiated connection (the Director would drop it, 8.2).
HEARTBEAT_RULES: tuple[HeartbeatRule, ...] = (
    HeartbeatRule(Party.FD, Party.DIRECTOR, Phase.BACKUP, FD_HEARTBEAT_POLL, False, True, True,
                  "core/src/filed/heartbeat.cc heartbeat_sd_dir"),
    HeartbeatRule(Party.FD, Party.DIRECTOR, Phase.RESTORE, None, False, True, False,
                  "core/src/filed/heartbeat.cc heartbeat_dir"),
    HeartbeatRule(Party.SD, Party.FD, Phase.WAIT_FOR_VOLUME, None, True, True, False,
                  "core/src/stored/wait.cc"),
    HeartbeatRule(Party.SD, Party.DIRECTOR, Phase.WAIT_FOR_VOLUME, None, True, True, False,
                  "core/src/stored/wait.cc"),
    HeartbeatRule(Party.SD, Party.DIRECTOR, Phase.RESERVATION_RETRY, None, True, False, False,
                  "core/src/stored/reserve.cc"),
)

#: The only party that answers a heartbeat (``qt-tray-monitor/monitoritem.cc``).
_ANSWERERS = frozenset({Party.TRAY_MONITOR})


def heartbeat_rule(sender: Party, receiver: Party, phase: Phase) -> HeartbeatRule | None:
    """The rule under which ``sender`` sends heartbeats to ``receiver`` in ``phase``, if any."""
    for rule in HEARTBEAT_RULES:
        if rule.sender is sender and rule.receiver is receiver and rule.phase is phase:
            return rule
    return None


def sends_heartbeat(sender: Party, receiver: Party, phase: Phase, interval: float = 0.0) -> bool:
    """Whether Bareos sends ``BNET_HEARTBEAT`` there, given the ``HeartbeatInterval``."""
    rule = heartbeat_rule(sender, receiver, phase)
    if rule is None:
        return False
    return interval > 0 or not rule.needs_interval


def answers_heartbeat(party: Party) -> bool:
    """Whether ``party`` answers ``BNET_HEARTBEAT`` with ``BNET_HB_RESPONSE`` (only the tray monitor)."""
    return party in _ANSWERERS


def heartbeat_reply(party: Party, frame: Message | SignalFrame) -> Signal | None:
    """The signal ``party`` sends back for ``frame``: ``BNET_HB_RESPONSE`` or nothing.

    Daemons skip both heartbeat signals silently (``BgetDirmsg()``,
    ``BgetMsg()``); the tray monitor answers a heartbeat.
    """
    if (
        isinstance(frame, SignalFrame)
        and frame.signal == Signal.BNET_HEARTBEAT
        and answers_heartbeat(party)
    ):
        return Signal.BNET_HB_RESPONSE
    return None


def heartbeat_period(interval: float, poll_slice: float | None = None) -> float | None:
    """Seconds between two heartbeats for a ``HeartbeatInterval``; ``None`` if off.

    With a ``poll_slice`` the sender only looks at the clock every slice, so
    ``interval`` is rounded up to a whole number of slices: interval 2 with
    the FD's 5 s slices gives 5 s, as recorded (PROTOCOL.md 15 item 1).
    """
    if interval <= 0:
        return None
    if poll_slice is None or poll_slice <= 0:
        return float(interval)
    return math.ceil(interval / poll_slice - 1e-9) * float(poll_slice)


class IdleVerdict(enum.Enum):
    KEEP = "keep"  #: a text frame: read, thrown away, the entry stays
    DROP = "drop"  #: a signal or an empty frame: the entry is closed and removed


def idle_frame_verdict(frame: Message | SignalFrame) -> IdleVerdict:
    """What the Director's pool does with a frame on a waiting connection.

    ``check_connection()`` (``core/src/lib/connection_pool.cc``) reads one
    frame and drops the connection if ``recv()`` returns <= 0: any signal
    (``BNET_HEARTBEAT`` too) or a zero-length frame.
    """
    if isinstance(frame, Message) and frame.payload:
        return IdleVerdict.KEEP
    return IdleVerdict.DROP


class IdleTimer:
    """Dead-peer arithmetic: the peer is dead ``timeout`` seconds after its last sign of life.

    ``touch(now)`` records activity; :meth:`remaining` says how long to wait
    before looking again (0 or less: expired).  Recording activity costs one
    assignment, so a caller can keep a single timer and re-arm it lazily.
    """

    __slots__ = ("timeout", "last")

    def __init__(self, timeout: float, now: float) -> None:
        if timeout <= 0:
            raise ValueError("an idle timeout must be positive")
        self.timeout = float(timeout)
        self.last = float(now)

    def touch(self, now: float) -> None:
        if now > self.last:
            self.last = float(now)

    def remaining(self, now: float) -> float:
        return self.last + self.timeout - now

    def expired(self, now: float) -> bool:
        return self.remaining(now) <= 0


def backoff_delay(
    failures: int,
    *,
    first: float,
    ceiling: float,
    factor: float = 2.0,
    jitter: float = 0.5,
    sample: float = 0.0,
) -> float:
    """The wait before the next connect attempt after ``failures`` failures in a row.

    Exponential: ``first`` after the first failure, times ``factor`` after each
    further one, never above ``ceiling``.  ``jitter`` (0..1) is the fraction
    that may be taken off, ``sample`` a random number in [0, 1) from the
    caller: the result lies in ``[(1 - jitter) * d, d]`` and therefore never
    exceeds ``ceiling``.  ``failures <= 0`` gives 0 (connect at once).
    """
    if failures <= 0:
        return 0.0
    if not 0.0 <= jitter <= 1.0:
        raise ValueError("jitter is a fraction between 0 and 1")
    if first < 0 or ceiling < 0:
        raise ValueError("delays cannot be negative")
    try:
        base = first * factor ** min(failures - 1, 1024)
    except OverflowError:
        base = ceiling
    delay = min(base, ceiling)
    return delay * (1.0 - jitter * min(max(sample, 0.0), 1.0))


@attrs.frozen
class Backoff:
    """A reconnect policy: ``policy(failures) -> seconds``, jitter from ``random``.

    ``random`` is a callable returning floats in [0, 1) (e.g.
    ``random.Random(seed).random`` or ``secrets.SystemRandom().random``);
    the core never picks one itself.  Upstream waits a fixed 60 s
    (:data:`CLIENT_INITIATED_RETRY`); ``Backoff(first=60, ceiling=60,
    jitter=0)`` reproduces that.
    """

    random: Callable[[], float]
    first: float = 1.0
    ceiling: float = CLIENT_INITIATED_RETRY
    factor: float = 2.0
    jitter: float = 0.5

    def __attrs_post_init__(self) -> None:
        if self.first < 0 or self.ceiling < 0 or self.factor < 1 or not 0 <= self.jitter <= 1:
            raise ValueError(f"bad backoff parameters: {self!r}")

    def __call__(self, failures: int) -> float:
        if failures <= 0:
            return 0.0
        return backoff_delay(failures, first=self.first, ceiling=self.ceiling, factor=self.factor,
                             jitter=self.jitter, sample=self.random())

    @property
    def bound(self) -> float:
        """No wait is longer than this: the ceiling."""
        return self.ceiling
