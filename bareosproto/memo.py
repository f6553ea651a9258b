"""Remembering the parse of protocol lines that come again and again.

A daemon sees the same Hello line from the same peer at every login, and a
client the same greeting from the same daemon.  :func:`remembered` wraps a
pure parser of such a line (bytes in, an immutable value out) in a small
LRU cache: a line seen before costs one dictionary lookup.  Only ``bytes``
of at most :data:`MAX_REMEMBERED_LENGTH` bytes are remembered, so the cache
holds at most ``maxsize`` short lines whatever a peer sends; a line the
parser refuses raises every time (exceptions are not cached).
"""

from __future__ import annotations

import functools
from typing import Callable, TypeVar

__all__ = ["remembered", "MAX_REMEMBERED_LENGTH"]

T = TypeVar("T")

MAX_REMEMBERED_LENGTH = 512


def remembered(maxsize: int = 128) -> Callable[[Callable[[bytes], T]], Callable[[bytes], T]]:
    """Decorate a pure, immutable-valued parser of one short line."""

    def wrap(parse: Callable[[bytes], T]) -> Callable[[bytes], T]:
        cached = functools.lru_cache(maxsize)(parse)

        @functools.wraps(parse)
        def parse_line(payload: bytes) -> T:
            if payload.__class__ is bytes and len(payload) <= MAX_REMEMBERED_LENGTH:
                return cached(payload)
            return parse(payload)

        return parse_line

    return wrap
