"""The settings of cluster connections, and the snapshot of one connection's counters."""

from __future__ import annotations

from dataclasses import dataclass

from rio.core.errors import ConfigError

__all__ = ["ConnectionStatistics", "TransportOptions"]

_KiB = 1 << 10
_MiB = 1 << 20


@dataclass(frozen=True, kw_only=True, slots=True)
class TransportOptions:
    """Settings of a connection; each end applies its own.

    Example::

        TransportOptions(ping_interval=1.0, ping_timeout=3.0)

    Attributes:
        max_frame_size: largest frame body in bytes, either way (16 MiB). A bigger
            incoming length prefix closes the connection before anything is allocated
            for it; a bigger outgoing message fails with :class:`rio.BadArguments`.
        request_timeout: seconds a request waits for its reply when the caller gives
            no timeout (30).
        ping_interval: seconds between keep-alive pings (5).
        ping_timeout: seconds without an answer to a ping (or any reply) after which
            the peer is declared dead and the connection closed (10).
        handshake_timeout: seconds to complete TLS and the secret handshake (5).
        connect_timeout: seconds to establish the TCP connection (5).
        max_in_flight: requests from the peer handled at once on one connection
            (10,000). More wait in arrival order; when as many again wait, the
            connection stops reading until half of them have started.
        write_buffer_high: bytes buffered for the peer above which senders wait (1 MiB),
            and requests from the peer wait too (a peer that does not read its replies
            gets no more of them, and soon is not read either).
        write_buffer_low: bytes below which they go on again (256 KiB).
        coalesce_bytes: bytes gathered within one loop pass before they are written
            without waiting for the end of the pass (4 KiB): under a burst the peer
            starts on the first requests while later ones are still being made.
        read_buffer_size: steady size of the receive buffer (256 KiB); it grows for
            one larger frame at a time, then shrinks back.
    """

    max_frame_size: int = 16 * _MiB
    request_timeout: float = 30.0
    ping_interval: float = 5.0
    ping_timeout: float = 10.0
    handshake_timeout: float = 5.0
    connect_timeout: float = 5.0
    max_in_flight: int = 10_000
    write_buffer_high: int = _MiB
    write_buffer_low: int = _MiB // 4
    coalesce_bytes: int = 4 * _KiB
    read_buffer_size: int = _MiB // 4

    def __post_init__(self) -> None:
        for field in ("max_frame_size", "max_in_flight", "read_buffer_size", "coalesce_bytes"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(
                    f"TransportOptions.{field} must be a whole number >= 1, got {value!r}"
                )
        for field in (
            "request_timeout",
            "ping_interval",
            "ping_timeout",
            "handshake_timeout",
            "connect_timeout",
        ):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
                raise ConfigError(f"TransportOptions.{field} must be seconds > 0, got {value!r}")
        if not 0 <= self.write_buffer_low <= self.write_buffer_high:
            raise ConfigError(
                "TransportOptions: need 0 <= write_buffer_low <= write_buffer_high, got "
                f"{self.write_buffer_low} and {self.write_buffer_high}"
            )


@dataclass(frozen=True, slots=True)
class ConnectionStatistics:
    """A snapshot of one connection (see :meth:`Connection.statistics`).

    Attributes:
        peer: the other node's name.
        requests_waiting: requests this end sent that wait for their reply.
        serving: the peer's requests whose handler runs now.
        queued: the peer's requests waiting for a handler slot (or for the peer to
            read its replies).
        write_paused: the peer reads slower than this end writes: senders wait.
        reading_paused: too many of the peer's requests wait: not reading for now.
        bytes_sent: bytes written (queued included), handshake and frames.
        bytes_received: bytes read.
        frames_received: frames read after the handshake.
    """

    peer: str
    requests_waiting: int
    serving: int
    queued: int
    write_paused: bool
    reading_paused: bool
    bytes_sent: int
    bytes_received: int
    frames_received: int
