"""TLS policy values and the negotiation matrix (``core/src/lib/tls_conf.cc``)."""

from __future__ import annotations

import enum

__all__ = ["TlsPolicy", "local_policy", "select_tls_policy"]


class TlsPolicy(enum.IntEnum):
    """Values of the ``ssl=`` field and of Bareos' internal policy."""

    NONE = 0  #: TLS Enable = no
    ENABLED = 1  #: TLS Enable = yes, TLS Require = no
    REQUIRED = 2  #: TLS Enable = yes, TLS Require = yes
    AUTO = 4  #: decided by the handshake itself (setup commands, immediate TLS)
    UNKNOWN = 0xFE  #: the peer sent no ``ssl=``
    DENY = 0xFF  #: internal: the two policies cannot agree


def local_policy(tls_enable: bool, tls_require: bool) -> TlsPolicy:
    """``GetPolicy()``: the policy a resource announces in its ``ssl=`` field."""
    if not tls_enable:
        return TlsPolicy.NONE
    return TlsPolicy.REQUIRED if tls_require else TlsPolicy.ENABLED


def select_tls_policy(remote: int, local: int) -> TlsPolicy:
    """``SelectTlsPolicy()``: what to do after CRAM-MD5.

    Returns ``NONE`` (stay in clear), ``ENABLED`` or ``AUTO`` (run a TLS
    handshake) or ``DENY`` (fail).  ``remote`` is the peer's ``ssl=`` value,
    any int (values Bareos does not know count as "do TLS").
    """
    if remote == TlsPolicy.AUTO:
        return TlsPolicy.AUTO
    if remote == TlsPolicy.NONE:
        return TlsPolicy.DENY if local == TlsPolicy.REQUIRED else TlsPolicy.NONE
    if remote == TlsPolicy.ENABLED:
        return TlsPolicy.NONE if local == TlsPolicy.NONE else TlsPolicy.ENABLED
    if remote == TlsPolicy.REQUIRED:
        return TlsPolicy.DENY if local == TlsPolicy.NONE else TlsPolicy.ENABLED
    return TlsPolicy.ENABLED
