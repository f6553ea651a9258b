"""The BNET signals: negative frame headers (``core/src/lib/bnet_protocol_signals.h``)."""

from __future__ import annotations

import enum

__all__ = ["Signal", "signal_name"]


class Signal(enum.IntEnum):
    """All 28 signals, named as Bareos names them."""

    BNET_EOD = -1
    BNET_EOD_POLL = -2
    BNET_STATUS = -3
    BNET_TERMINATE = -4
    BNET_POLL = -5
    BNET_HEARTBEAT = -6
    BNET_HB_RESPONSE = -7
    BNET_xxxxxxPROMPT = -8
    BNET_BTIME = -9
    BNET_BREAK = -10
    BNET_START_SELECT = -11
    BNET_END_SELECT = -12
    BNET_INVALID_CMD = -13
    BNET_CMD_FAILED = -14
    BNET_CMD_OK = -15
    BNET_CMD_BEGIN = -16
    BNET_MSGS_PENDING = -17
    BNET_MAIN_PROMPT = -18
    BNET_SELECT_INPUT = -19
    BNET_WARNING_MSG = -20
    BNET_ERROR_MSG = -21
    BNET_INFO_MSG = -22
    BNET_RUN_CMD = -23
    BNET_YESNO = -24
    BNET_START_RTREE = -25
    BNET_END_RTREE = -26
    BNET_SUB_PROMPT = -27
    BNET_TEXT_INPUT = -28

    def __str__(self) -> str:
        return self.name


_BY_VALUE: dict[int, Signal] = {s.value: s for s in Signal}


def as_signal(value: int) -> Signal | int:
    """The :class:`Signal` for ``value``, or ``value`` itself if Bareos defines none."""
    return _BY_VALUE.get(value, value)


def signal_name(value: int) -> str:
    """``BNET_EOD`` for -1; ``BNET_SIGNAL(-99)`` for a value Bareos does not define."""
    known = _BY_VALUE.get(value)
    return known.name if known is not None else f"BNET_SIGNAL({value})"
