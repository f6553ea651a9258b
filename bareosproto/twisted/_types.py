"""Structural types for the parts of Twisted we use (its zope interfaces
do not type-check without a mypy plugin)."""

from __future__ import annotations

from typing import Any, Callable, Protocol


class DelayedCall(Protocol):
    def active(self) -> bool: ...

    def cancel(self) -> None: ...


class ReactorTime(Protocol):
    """What we need of ``IReactorTime``: ``task.Clock`` and every reactor have it."""

    def callLater(self, delay: float, callable: Callable[..., Any], *args: Any, **kw: Any) -> DelayedCall: ...

    def seconds(self) -> float: ...


class Transport(Protocol):
    def write(self, data: bytes) -> None: ...

    def writeSequence(self, data: list[bytes]) -> None: ...

    def loseConnection(self) -> None: ...
