"""TLS as Bareos does it, sans-IO: the standard library's ``ssl`` over memory BIOs.

Context builders (PROTOCOL.md 6.4, 6.7):

* :func:`psk_client_context` / :func:`psk_server_context`: TLS-PSK with the
  Python 3.13 callbacks.  Identity ``R_TYPE\\x1ename`` (name not bashed), secret
  the ASCII bytes of the key.  No certificates, no SNI, no host name check.
  TLS 1.3 with OpenSSL's default suites (the classic PSK callback binds the
  key to SHA-256, so ``TLS_CHACHA20_POLY1305_SHA256`` is what Bareos daemons
  pick) and TLS 1.2 ``PSK`` suites, ``ECDHE-PSK-CHACHA20-POLY1305`` first.
* :func:`cert_client_context` / :func:`cert_server_context`: certificate TLS;
  :func:`check_allowed_cn` and :func:`check_peer_host` are Bareos' checks
  after the handshake (``TlsAllowedCn``, address against subjectAltName/CN).

:class:`TlsEngine` drives one connection: ``receive_data(ciphertext)`` returns
plaintext, ``send(plaintext)`` encrypts (one TLS record per call, as Bareos
writes one record per frame), ``data_to_send()`` drains what goes on the wire,
``receive_data(b"")`` is transport EOF.  A failed handshake raises
:class:`~bareosproto.errors.RemoteProtocolError` whose ``reply`` is the alert
OpenSSL produced and, on the server side, the raw ``BNET_TERMINATE`` Bareos
writes on the socket afterwards (PROTOCOL.md 6.3 item 7).

The server PSK callback of Python's ``ssl`` receives only the identity, not the
connection.  The engine therefore marks itself as the active engine (a
:class:`contextvars.ContextVar`, so per thread and per task) around every call
into OpenSSL; the callback, which runs synchronously inside that call, records
the identity on that engine.  One server context serves any number of
connections (building a context costs 0.2-0.5 ms, an engine about 8 us, a
whole in-memory TLS 1.3 PSK handshake about 1 ms).

Session tickets stay on: after a TLS 1.3 PSK handshake the server sends one
NewSessionTicket record, exactly as the Bareos daemons do in the recordings
(PROTOCOL.md 15.29); a client engine consumes tickets silently.  Python offers
no setter for TLS 1.3 suites, so OpenSSL's defaults apply, as in Bareos.  An
identity that is not valid UTF-8 never reaches ``lookup`` (Python cannot
decode it) and is refused.
"""

from __future__ import annotations

import contextlib
import contextvars
import enum
import ssl
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, NoReturn

from .errors import LocalProtocolError, RemoteProtocolError
from .frames import TERMINATE
from .keys import Secret

__all__ = [
    "TLS12_PSK_CIPHERS",
    "TLS13_PSK_SUITES",
    "TlsState",
    "TlsInput",
    "TLS_TRANSITIONS",
    "TlsEngine",
    "psk_client_context",
    "psk_server_context",
    "cert_client_context",
    "cert_server_context",
    "check_allowed_cn",
    "check_peer_host",
]

#: TLS <= 1.2 suites a PSK context offers, in the order a client prefers them.
#: All are allowed at OpenSSL 3's security level 2 (no ``@SECLEVEL`` needed);
#: RSA-PSK needs a certificate and NULL ciphers are refused.
TLS12_PSK_CIPHERS = ":".join(
    [
        "ECDHE-PSK-CHACHA20-POLY1305",
        "ECDHE-PSK-AES256-CBC-SHA384",
        "ECDHE-PSK-AES128-CBC-SHA256",
        "DHE-PSK-AES256-GCM-SHA384",
        "DHE-PSK-CHACHA20-POLY1305",
        "DHE-PSK-AES128-GCM-SHA256",
        "PSK-AES256-GCM-SHA384",
        "PSK-CHACHA20-POLY1305",
        "PSK-AES128-GCM-SHA256",
        "PSK-AES256-CBC-SHA384",
        "PSK-AES128-CBC-SHA256",
    ]
)
#: TLS 1.3 suites usable with a classic-callback PSK (bound to SHA-256).
TLS13_PSK_SUITES = ("TLS_CHACHA20_POLY1305_SHA256", "TLS_AES_128_GCM_SHA256")

#: The most plaintext one TLS record carries.
_RECORD_SIZE = 16384
#: A buffer the records are decrypted into is kept for the next ones when it is at
#: least this large (bulk data); a smaller one is not (an idle connection holds none).
_KEEP_BUFFER = 4 * _RECORD_SIZE


class TlsState(enum.Enum):
    """States of :class:`TlsEngine` (the TLS protocol state is OpenSSL's)."""

    # identity hash (members are singletons): the table lookup of every record sent or
    # received then costs no Python-level Enum.__hash__ call
    __hash__ = object.__hash__

    HANDSHAKE = "HANDSHAKE"  #: until the handshake completes
    OPEN = "OPEN"  #: application data both ways
    CLOSING = "CLOSING"  #: our close_notify is queued, the peer's not yet seen
    CLOSED = "CLOSED"  #: both close_notify exchanged, or transport EOF
    ERROR = "ERROR"  #: a failure; the engine accepts nothing more


class TlsInput(enum.Enum):
    """Inputs of the :data:`TLS_TRANSITIONS` table (caller calls and OpenSSL outcomes)."""

    __hash__ = object.__hash__

    RECEIVE = "receive_data"
    SEND = "send"
    CLOSE = "close"
    HANDSHAKE_DONE = "handshake done"
    PEER_CLOSE_NOTIFY = "peer close_notify"
    PEER_EOF = "transport EOF"
    FAILURE = "TLS failure"


_S = TlsState
_I = TlsInput
#: ``{(state, input): next_state}``; an input without an entry is an error.
TLS_TRANSITIONS: dict[tuple[TlsState, TlsInput], TlsState] = {
    (_S.HANDSHAKE, _I.RECEIVE): _S.HANDSHAKE,
    (_S.HANDSHAKE, _I.SEND): _S.HANDSHAKE,  # queued until the handshake is done
    (_S.HANDSHAKE, _I.HANDSHAKE_DONE): _S.OPEN,
    (_S.HANDSHAKE, _I.CLOSE): _S.CLOSED,  # nothing to notify yet; queued data dropped
    (_S.HANDSHAKE, _I.FAILURE): _S.ERROR,
    (_S.OPEN, _I.RECEIVE): _S.OPEN,
    (_S.OPEN, _I.SEND): _S.OPEN,
    (_S.OPEN, _I.CLOSE): _S.CLOSING,
    (_S.OPEN, _I.PEER_CLOSE_NOTIFY): _S.CLOSED,  # answered with our close_notify
    (_S.OPEN, _I.PEER_EOF): _S.CLOSED,
    (_S.OPEN, _I.FAILURE): _S.ERROR,
    (_S.CLOSING, _I.RECEIVE): _S.CLOSING,  # the peer may still send data
    (_S.CLOSING, _I.CLOSE): _S.CLOSING,
    (_S.CLOSING, _I.PEER_CLOSE_NOTIFY): _S.CLOSED,
    (_S.CLOSING, _I.PEER_EOF): _S.CLOSED,
    (_S.CLOSING, _I.FAILURE): _S.ERROR,
    (_S.CLOSED, _I.RECEIVE): _S.CLOSED,  # bytes after the end go to trailing_data
    (_S.CLOSED, _I.CLOSE): _S.CLOSED,
}

_active_engine: contextvars.ContextVar[TlsEngine | None] = contextvars.ContextVar(
    "bareosproto_tls_active_engine", default=None
)


def _base_context(protocol: ssl._SSLMethod) -> ssl.SSLContext:
    ctx = ssl.SSLContext(protocol)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    # Bareos does not set SSL_OP_CIPHER_SERVER_PREFERENCE: the client's order wins.
    ctx.options &= ~ssl.OP_CIPHER_SERVER_PREFERENCE
    return ctx


def _check_tls13_suites(ctx: ssl.SSLContext) -> None:
    names = {c["name"] for c in ctx.get_ciphers()}
    if not names.intersection(TLS13_PSK_SUITES):
        raise LocalProtocolError(
            "TLS 1.3 PSK needs a SHA-256 suite (TLS_CHACHA20_POLY1305_SHA256 or "
            "TLS_AES_128_GCM_SHA256) and the local OpenSSL enables none"
        )


def psk_client_context(
    identity: str, key: Secret, *, tls13: bool = True, tls12: bool = True
) -> ssl.SSLContext:
    """A TLS client context authenticating with ``identity`` and ``key``.

    ``identity`` is sent as its UTF-8 bytes (``names.psk_identity()`` builds
    ``R_CONSOLE\\x1eadmin``); the PSK is ``key.reveal()``, the ASCII key.
    """
    if not tls13 and not tls12:
        raise LocalProtocolError("a PSK context needs TLS 1.3 or TLS 1.2")
    if not identity or "\x00" in identity:
        raise LocalProtocolError("a PSK identity is non-empty and has no NUL")
    if not isinstance(key, Secret) or not key.reveal():
        raise LocalProtocolError("a PSK is a non-empty Secret")
    ctx = _base_context(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2 if tls12 else ssl.TLSVersion.TLSv1_3
    ctx.maximum_version = ssl.TLSVersion.TLSv1_3 if tls13 else ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(TLS12_PSK_CIPHERS)
    if tls13:
        _check_tls13_suites(ctx)

    def client_callback(hint: str | None) -> tuple[str | None, bytes]:
        engine = _active_engine.get()
        if engine is not None:
            engine._psk_identity = identity
        return identity, key.reveal()

    ctx.set_psk_client_callback(client_callback)
    return ctx


def psk_server_context(lookup: Callable[[str], Secret | None]) -> ssl.SSLContext:
    """A TLS server context that takes the key of an identity from ``lookup``.

    ``lookup(identity)`` returns the :class:`Secret` of that identity or None;
    None (or an exception in ``lookup``) refuses the identity, which OpenSSL
    answers with an alert (TLS 1.3: handshake_failure, TLS 1.2:
    unknown_psk_identity), as Bareos does.  The identity a
    :class:`TlsEngine` was offered is its :attr:`TlsEngine.psk_identity`.
    """
    ctx = _base_context(ssl.PROTOCOL_TLS_SERVER)
    ctx.set_ciphers(TLS12_PSK_CIPHERS)

    def server_callback(identity: str | None) -> bytes:
        engine = _active_engine.get()
        if engine is not None:
            engine._psk_identity = identity
        if identity is None:
            return b""
        try:
            key = lookup(identity)
        except Exception as exc:  # an exception here would be lost inside OpenSSL
            if engine is not None:
                engine._lookup_error = type(exc).__name__
            return b""
        return key.reveal() if isinstance(key, Secret) else b""

    ctx.set_psk_server_callback(server_callback)
    return ctx


def cert_client_context(
    ca_file: str | None = None,
    cert_file: str | None = None,
    key_file: str | None = None,
    verify_peer: bool = True,
) -> ssl.SSLContext:
    """Certificate TLS, client side (``TlsVerifyPeer``, ``TlsCaCertificateFile`` ...).

    No host name check inside OpenSSL: Bareos checks the peer after the
    handshake with :func:`check_allowed_cn` or :func:`check_peer_host`.
    """
    ctx = _base_context(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    if verify_peer:
        ctx.verify_mode = ssl.CERT_REQUIRED
        if ca_file is not None:
            ctx.load_verify_locations(cafile=ca_file)
        else:
            ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)
    else:
        ctx.verify_mode = ssl.CERT_NONE
    if cert_file is not None:
        ctx.load_cert_chain(cert_file, key_file)
    return ctx


def cert_server_context(
    cert_file: str,
    key_file: str | None,
    ca_file: str | None = None,
    verify_peer: bool = False,
) -> ssl.SSLContext:
    """Certificate TLS, server side; ``verify_peer`` requires a client certificate."""
    ctx = _base_context(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert_file, key_file)
    if ca_file is not None:
        ctx.load_verify_locations(cafile=ca_file)
    if verify_peer:
        # SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT
        ctx.verify_mode = ssl.CERT_REQUIRED
        if ca_file is None:
            ctx.load_default_certs(ssl.Purpose.CLIENT_AUTH)
    return ctx


def _subject_cns(peer_cert: Mapping[str, Any]) -> list[str]:
    return [
        value
        for rdn in peer_cert.get("subject", ())
        for key, value in rdn
        if key == "commonName"
    ]


def check_allowed_cn(peer_cert: Mapping[str, Any] | None, allowed: Iterable[str]) -> bool:
    """``TlsAllowedCn``: the peer's (first) subject CN equals one entry exactly.

    ``peer_cert`` is :attr:`TlsEngine.peer_certificate` (a verified
    certificate; an empty or missing one never matches).
    """
    if not peer_cert:
        return False
    cns = _subject_cns(peer_cert)
    return bool(cns) and cns[0] in set(allowed)


def check_peer_host(peer_cert: Mapping[str, Any] | None, host: str) -> bool:
    """The client's check when ``TlsAllowedCn`` is empty: the configured
    address equals (ignoring case) a subjectAltName DNS entry or a subject CN.
    No wildcards, no IP entries, as Bareos.
    """
    if not peer_cert:
        return False
    wanted = host.casefold()
    names = [v for k, v in peer_cert.get("subjectAltName", ()) if k == "DNS"]
    names += _subject_cns(peer_cert)
    return any(name.casefold() == wanted for name in names)


class TlsEngine:
    """One TLS connection over a pair of memory BIOs; no I/O of its own.

    A client engine has its ClientHello in :meth:`data_to_send` right after
    construction.  Feed every byte from the peer to :meth:`receive_data`
    (any chunking; ``b""`` = EOF) and write :meth:`data_to_send` after every
    call.  Plaintext passed to :meth:`send` before the handshake completes is
    kept and encrypted, one record per call, as soon as it does.
    """

    def __init__(self, context: ssl.SSLContext, server_side: bool) -> None:
        self.server_side = server_side
        self._in = ssl.MemoryBIO()
        self._out = ssl.MemoryBIO()
        self._psk_identity: str | None = None
        self._lookup_error: str | None = None  # type name only: no key text kept
        self._state = TlsState.HANDSHAKE
        self._pending: list[bytes] = []
        self._trailing = b""
        #: the buffer bulk records are decrypted into, reused (see _decrypt)
        self._plain = bytearray()
        self._handshake_complete = False
        self._peer_closed = False
        self._close_notify_received = False
        self._obj = context.wrap_bio(self._in, self._out, server_side=server_side)
        if not server_side:
            with self._active():
                self._step_handshake()

    # -- state -------------------------------------------------------------

    def _transition(self, event: TlsInput) -> None:
        try:
            self._state = TLS_TRANSITIONS[(self._state, event)]
        except KeyError:
            old = self._state
            self._state = TlsState.ERROR
            raise LocalProtocolError(f"{event.value} is not allowed in TLS state {old.value}") from None

    @contextlib.contextmanager
    def _active(self) -> Iterator[None]:
        token = _active_engine.set(self)
        try:
            yield
        finally:
            _active_engine.reset(token)

    @property
    def state(self) -> TlsState:
        return self._state

    @property
    def handshake_done(self) -> bool:
        return self._handshake_complete

    @property
    def version(self) -> str | None:
        """``TLSv1.3``, ``TLSv1.2``; None before the handshake."""
        return self._obj.version() if self.handshake_done else None

    @property
    def cipher(self) -> str | None:
        """The negotiated suite, e.g. ``TLS_CHACHA20_POLY1305_SHA256``."""
        if not self.handshake_done:
            return None
        info = self._obj.cipher()
        return info[0] if info else None

    @property
    def psk_identity(self) -> str | None:
        """The PSK identity used: offered by the peer (server) or sent (client).

        After the handshake on the server side this is the identity whose key
        authenticated the peer: cross-check it against the Hello name
        (PROTOCOL.md 6.4).
        """
        return self._psk_identity

    @property
    def peer_certificate(self) -> dict[str, Any] | None:
        """The peer's verified certificate as ``SSLObject.getpeercert()`` gives it.

        None if there is none; ``{}`` if it was not verified (``CERT_NONE``).
        """
        if not self.handshake_done:
            return None
        cert = self._obj.getpeercert()
        return dict(cert) if cert is not None else None

    @property
    def peer_closed(self) -> bool:
        """The peer sent close_notify or the transport reached EOF."""
        return self._peer_closed

    @property
    def close_notify_received(self) -> bool:
        """The peer ended with a close_notify (not a bare EOF)."""
        return self._close_notify_received

    @property
    def trailing_data(self) -> bytes:
        """Bytes received after the TLS session ended (CLOSED), not TLS any more.

        With ``TlsAuthenticate = yes`` Bareos shuts TLS down after the
        handshake and goes on in clear (PROTOCOL.md 6.5 item 4): those bytes
        belong to the next phase.
        """
        return self._trailing

    # -- public API --------------------------------------------------------

    def receive_data(self, data: bytes) -> bytes:
        """Feed bytes from the peer; return the application bytes they complete."""
        plain = self.receive_data_view(data)
        return plain if plain.__class__ is bytes else bytes(plain)

    def receive_data_view(self, data: bytes) -> bytes | memoryview:
        """:meth:`receive_data` without a copy: the plaintext as a view of the
        engine's buffer, valid until the next call on the engine (the records
        are decrypted straight into that buffer; a frame decoder copies out
        what it keeps)."""
        self._transition(TlsInput.RECEIVE)
        if self._state is TlsState.CLOSED:
            self._trailing += data
            return b""
        if data:
            self._in.write(data)
        else:
            self._in.write_eof()
        token = _active_engine.set(self)
        try:
            if self._state is TlsState.HANDSHAKE and not self._step_handshake():
                return b""
            return self._decrypt()
        finally:
            _active_engine.reset(token)

    def send(self, data: bytes) -> None:
        """Encrypt ``data`` as one TLS record (several above 16 KiB)."""
        self._transition(TlsInput.SEND)
        if not data:
            return
        if self._state is TlsState.HANDSHAKE:
            self._pending.append(bytes(data))
            return
        token = _active_engine.set(self)
        try:
            self._write(data)
        finally:
            _active_engine.reset(token)

    def data_to_send(self) -> bytes:
        """Everything to write to the transport now (handshake, records, alerts)."""
        return self._out.read()

    def close(self) -> None:
        """Queue our close_notify (``SSL_shutdown``); idempotent.

        Before the handshake completes there is nothing to notify: the engine
        just moves to CLOSED and plaintext queued by :meth:`send` is dropped.
        """
        before = self._state
        self._transition(TlsInput.CLOSE)
        if before is TlsState.OPEN:
            with self._active():
                self._shutdown()
        elif before is TlsState.HANDSHAKE:
            self._pending.clear()

    def __repr__(self) -> str:
        side = "server" if self.server_side else "client"
        return (
            f"<TlsEngine {side} {self._state.value} version={self.version!r} "
            f"cipher={self.cipher!r} psk_identity={self._psk_identity!r}>"
        )

    # -- internals ---------------------------------------------------------

    def _step_handshake(self) -> bool:
        try:
            self._obj.do_handshake()
        except ssl.SSLWantReadError:
            return False
        except ssl.SSLError as exc:
            self._fail(exc, handshake=True)
        self._transition(TlsInput.HANDSHAKE_DONE)
        self._handshake_complete = True
        pending, self._pending = self._pending, []
        for chunk in pending:
            self._write(chunk)
        return True

    def _write(self, data: bytes) -> None:
        try:
            self._obj.write(data)
        except ssl.SSLError as exc:
            self._fail(exc, handshake=False)

    def _decrypt(self) -> bytes | memoryview:
        """Decrypt every record the incoming BIO holds, one after the other, into
        a buffer; returns the plaintext, a view of that buffer."""
        buf = self._plain
        # The plaintext is shorter than the ciphertext waiting in the BIO, plus at
        # most one record OpenSSL may have begun to read in an earlier call.
        need = self._in.pending + _RECORD_SIZE + 256
        if len(buf) < need:
            buf = bytearray(need)  # a new one: a view of the old one may be alive
            if need >= _KEEP_BUFFER:
                self._plain = buf  # bulk data: reuse it
        read: Callable[[int, memoryview], int] = self._obj.read  # type: ignore[assignment]  # into a buffer
        incoming, pending = self._in, self._obj.pending
        view = memoryview(buf)
        filled = 0
        while True:
            if not incoming.pending and not incoming.eof and not pending():
                break  # nothing OpenSSL could read (read() would raise SSLWantReadError)
            room = len(buf) - filled
            if not room:  # not expected; but never fail for want of room
                buf = self._plain = buf + bytes(len(buf))
                view = memoryview(buf)
                room = len(buf) - filled
            try:
                n = read(room, view[filled:])
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:
                self._on_close_notify()
                break
            except ssl.SSLEOFError:
                self._on_eof()
                break
            except ssl.SSLError as exc:
                self._fail(exc, handshake=False, plaintext=bytes(buf[:filled]))
            if not n:  # read() gives 0 for a close_notify
                self._on_close_notify()
                break
            filled += n
        return view[:filled] if filled else b""

    def _on_close_notify(self) -> None:
        self._peer_closed = True
        self._close_notify_received = True
        answer = self._state is TlsState.OPEN
        self._transition(TlsInput.PEER_CLOSE_NOTIFY)
        if answer:  # Bareos answers with its own close_notify (PROTOCOL.md 15.23)
            self._shutdown()
        self._trailing += self._in.read()  # OpenSSL reads no further than the alert

    def _on_eof(self) -> None:
        self._peer_closed = True
        self._transition(TlsInput.PEER_EOF)

    def _shutdown(self) -> None:
        try:
            self._obj.unwrap()
        except ssl.SSLWantReadError:
            pass  # close_notify queued; the peer's has not arrived yet
        except ssl.SSLError as exc:
            self._fail(exc, handshake=False)

    def _fail(self, exc: ssl.SSLError, *, handshake: bool, plaintext: bytes = b"") -> NoReturn:
        self._transition(TlsInput.FAILURE)
        reply = self._out.read()
        if handshake and self.server_side:
            reply += TERMINATE  # written on the plain socket (PROTOCOL.md 6.3 item 7)
        reason = exc.reason or type(exc).__name__
        what = "TLS handshake failed" if handshake else "TLS error"
        if isinstance(exc, ssl.SSLEOFError) or reason == "UNEXPECTED_EOF_WHILE_READING":
            reason = f"connection closed by the peer ({reason})"
        message = f"{what}: {reason}"
        if self._psk_identity is not None:
            message += f" (PSK identity {self._psk_identity!r})"
        if self._lookup_error is not None:
            message += f" (PSK lookup raised {self._lookup_error})"
        error = RemoteProtocolError(message, reply=reply)
        if plaintext:
            error.events.append(plaintext)
        raise error from exc
