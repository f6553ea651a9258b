"""Which Bareos release we speak as: version strings that go on the wire."""

from __future__ import annotations

import attrs

__all__ = ["BareosVersion", "BAREOS_26", "BAREOS_25", "FD_PROTOCOL_VERSION"]

#: ``FD_PROTOCOL_VERSION`` of current File Daemons (``2000 OK Hello 54``).
FD_PROTOCOL_VERSION = 54


@attrs.frozen
class BareosVersion:
    """The version a daemon of ours announces.

    ``full`` goes into console Hellos and OK lines, ``date`` into OK lines
    (``%d %B %Y``), ``numeric`` into the ``Version="x.y.z"`` Hello suffix of
    Bareos >= 26; ``numeric=None`` leaves the suffix out, as 25.x does.
    """

    full: str
    numeric: tuple[int, int, int] | None
    date: str
    short_date: str

    @property
    def console_protocol(self) -> int:
        """``major * 100 + minor``, what a Director reads from a console Hello."""
        major, minor = self.full.split(".")[:2]
        return int(major) * 100 + int("".join(c for c in minor if c.isdigit()) or 0)


#: Upstream master as recorded in the conformance captures.
BAREOS_26 = BareosVersion("26.0.0~pre1298.eda204c31", (26, 0, 0), "21 August 2026", "21Aug26")
#: The 25.1.0 release: no ``Version=`` suffix on Hellos.
BAREOS_25 = BareosVersion("25.1.0", None, "03 August 2026", "03Aug26")
