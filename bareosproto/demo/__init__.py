"""``python -m bareosproto.demo``: a whole Bareos topology of ours on loopback.

Built on the public API only (the Twisted shell and the sans-IO core); see
:mod:`bareosproto.demo.topology`.
"""

from __future__ import annotations

from .topology import _TYPE_NAMES, FrameTracer, attributes_record, main, parse_size, to_base64

__all__ = ["main", "FrameTracer", "attributes_record", "parse_size", "to_base64", "_TYPE_NAMES"]
