"""The handshake that opens every cluster connection: both ends prove they hold the secret.

The secret never crosses the wire; each side proves it holds it with an HMAC-SHA256
over both sides' fresh random nonces, under a label naming its role (so one side's
proof can never be replayed as the other's)::

    client (dials)                                   server (listens)
      HELLO = MAGIC VERSION client_nonce     ──►      checks magic, then version
                                             ◄──      HELLO = MAGIC VERSION server_nonce
      PROOF = HMAC(secret, "rio/1 client" cn sn) ──►  checks (constant time); wrong:
                                                      logs and closes, sends nothing
                                             ◄──      PROOF = HMAC(secret, "rio/1 server" cn sn)
      checks; wrong: logs and closes

A peer that does not speak first with the magic bytes gets nothing at all; one that
fails the proof has only seen a random nonce. After the handshake, frames are not
signed one by one: on a network where someone may tamper with TCP streams, add TLS
(an ``ssl.SSLContext`` on both ends), which protects the handshake as well.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable

from rio.cluster._frames import RecvBuffer
from rio.core.errors import ConfigError

__all__ = [
    "HELLO_SIZE",
    "MAGIC",
    "PROOF_SIZE",
    "VERSION",
    "Handshake",
    "HandshakeError",
    "check_hello",
    "check_magic_prefix",
    "hello",
    "new_nonce",
    "proof",
    "secret_bytes",
    "verify",
]

#: First bytes of every cluster connection. The high-bit first byte (PNG's trick) makes
#: a text protocol (HTTP, a stray ``telnet``) fail on byte one.
MAGIC = b"\x89RIO"
#: Wire protocol version; both ends must speak the same.
VERSION = 2
NONCE_SIZE = 32
HELLO_SIZE = len(MAGIC) + 1 + NONCE_SIZE
PROOF_SIZE = hashlib.sha256().digest_size
_LABELS = {"client": b"rio/1 client", "server": b"rio/1 server"}


class HandshakeError(Exception):
    """The peer's handshake bytes are wrong; the message says how (never leaves the node)."""


def secret_bytes(secret: str | bytes) -> bytes:
    """The cluster secret as bytes (str is UTF-8); refuses an empty or mistyped one."""
    if isinstance(secret, str):
        secret = secret.encode()
    if not isinstance(secret, bytes):
        raise ConfigError(
            f"the cluster secret must be str or bytes, got {type(secret).__name__}; "
            "set the same secret on every node"
        )
    if not secret:
        raise ConfigError(
            "the cluster secret is empty: set the same non-empty secret on every node"
        )
    return secret


def new_nonce() -> bytes:
    """A fresh random nonce from the OS's CSPRNG."""
    return secrets.token_bytes(NONCE_SIZE)


def hello(nonce: bytes) -> bytes:
    """The opening message: magic, version, nonce."""
    return MAGIC + bytes((VERSION,)) + nonce


def check_magic_prefix(data: bytes) -> None:
    """Refuse early: ``data`` (the first bytes received, any length) must start like MAGIC.

    Raises:
        HandshakeError: naming what arrived instead.
    """
    n = min(len(data), len(MAGIC))
    if data[:n] != MAGIC[:n]:
        hint = ""
        if data[:1] == b"\x16":  # a TLS record: a handshake
            hint = "; that is TLS: use TLS on both ends or on neither"
        raise HandshakeError(
            f"not a rio cluster node (it sent {bytes(data[:16])!r} where the magic "
            f"{MAGIC!r} belongs{hint})"
        )


def check_hello(data: bytes) -> bytes:
    """The peer's nonce from its :func:`hello` (``HELLO_SIZE`` bytes).

    Raises:
        HandshakeError: wrong magic or version.
    """
    check_magic_prefix(data)
    version = data[len(MAGIC)]
    if version != VERSION:
        raise HandshakeError(
            f"it speaks cluster protocol version {version}, this node {VERSION}; "
            "run the same rio version on every node"
        )
    return bytes(data[len(MAGIC) + 1 : HELLO_SIZE])


def proof(secret: bytes, role: str, client_nonce: bytes, server_nonce: bytes) -> bytes:
    """The proof that ``role`` ("client" or "server") holds ``secret``, for these nonces."""
    return hmac.digest(secret, _LABELS[role] + client_nonce + server_nonce, "sha256")


def verify(
    secret: bytes, role: str, client_nonce: bytes, server_nonce: bytes, received: bytes
) -> bool:
    """True when ``received`` is ``role``'s proof (compared in constant time)."""
    return hmac.compare_digest(proof(secret, role, client_nonce, server_nonce), received)


class Handshake:
    """One end's side of the handshake, fed with the bytes as they arrive.

    Example::

        hs = Handshake(secret, server_side=False)
        send(hs.opening())
        ...  # on each read:
        send(hs.feed(rx))  # raises HandshakeError; hs.done once both ends are proven
    """

    __slots__ = ("_secret", "_step", "client_nonce", "done", "server_nonce", "server_side")

    def __init__(self, secret: bytes, *, server_side: bool) -> None:
        self._secret = secret
        self.server_side = server_side
        self.client_nonce = b""
        self.server_nonce = b""
        self.done = False
        self._step: Callable[[RecvBuffer], bytes | None] = (
            self._server_hello if server_side else self._client_hello
        )

    def opening(self) -> bytes:
        """What this end sends first: the client's hello; nothing for the server."""
        if self.server_side:
            return b""
        self.client_nonce = new_nonce()
        return hello(self.client_nonce)

    def feed(self, rx: RecvBuffer) -> bytes:
        """Consume the handshake bytes in ``rx``; return what to send back (maybe nothing).

        Bytes after the handshake are left in ``rx``: they are the first frames.

        Raises:
            HandshakeError: the peer is not a rio node, speaks another version, or
                failed its proof.
        """
        out = b""
        while not self.done:
            sent = self._step(rx)
            if sent is None:
                break
            out += sent
        if self.done:
            self._secret = b""  # not needed any more: keep it in fewer places
        return out

    def _server_hello(self, rx: RecvBuffer) -> bytes | None:
        check_magic_prefix(rx.peek(16))
        data = rx.take(HELLO_SIZE)
        if data is None:
            return None
        self.client_nonce = check_hello(data)
        self.server_nonce = new_nonce()
        self._step = self._server_proof
        return hello(self.server_nonce)

    def _server_proof(self, rx: RecvBuffer) -> bytes | None:
        data = rx.take(PROOF_SIZE)
        if data is None:
            return None
        if not verify(self._secret, "client", self.client_nonce, self.server_nonce, data):
            raise HandshakeError(
                "it failed authentication: its proof does not match this node's cluster "
                "secret (the secrets differ)"
            )
        self.done = True
        return proof(self._secret, "server", self.client_nonce, self.server_nonce)

    def _client_hello(self, rx: RecvBuffer) -> bytes | None:
        check_magic_prefix(rx.peek(16))
        data = rx.take(HELLO_SIZE)
        if data is None:
            return None
        self.server_nonce = check_hello(data)
        self._step = self._client_proof
        return proof(self._secret, "client", self.client_nonce, self.server_nonce)

    def _client_proof(self, rx: RecvBuffer) -> bytes | None:
        data = rx.take(PROOF_SIZE)
        if data is None:
            return None
        if not verify(self._secret, "server", self.client_nonce, self.server_nonce, data):
            raise HandshakeError(
                "it failed authentication: it could not prove it holds this node's cluster "
                "secret (the secrets differ)"
            )
        self.done = True
        return b""
