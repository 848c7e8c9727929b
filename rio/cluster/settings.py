"""A node's cluster settings: where membership lives, how it listens, how it detects failure."""

from __future__ import annotations

import math
import os
import socket
import ssl
from typing import Literal

import msgspec

from rio.core.errors import ConfigError

__all__ = [
    "STRATEGIES",
    "ClusterSettings",
    "Strategy",
    "advertised",
    "client_context",
    "join_address",
    "split_address",
]

#: Placement strategies: ``prefer-local`` (the calling node hosts it when it can),
#: ``random``, ``consistent-hash`` (rendezvous hashing over the live nodes hosting the
#: type) and ``least-loaded`` (the lighter of two random nodes, by activation count).
Strategy = Literal["prefer-local", "random", "consistent-hash", "least-loaded"]
STRATEGIES: tuple[str, ...] = ("prefer-local", "random", "consistent-hash", "least-loaded")


class ClusterSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How one node takes part in a cluster. Every period is in seconds.

    The defaults detect a killed node within about 3 s: peers notice the dropped
    connection on their next probe, suspect it after ``missed_probes`` failures in a
    row, and ``votes`` suspicions from different members within
    ``suspicion_window`` declare it dead; callers learn it on their next
    ``refresh`` of the table.

    Attributes:
        url: the membership and placement store (``redis://``, ``postgresql://``,
            ``mysql://`` or ``sqlite:///`` for clusters on one box).
        secret: the cluster secret every node and client shares (``RIO_CLUSTER_SECRET``
            when empty).
        host: the address the node listens on (127.0.0.1).
        port: its port; 0 picks a free one.
        advertise: ``host:port`` other members dial, for NAT and containers (default:
            the bound address).
        node: the node's name, stable across restarts (default: its address).
        placement: the default strategy (see :data:`STRATEGIES`); per type with
            ``App(actor_options={"Type": {"placement": ...}})``.
        probe_period: how often each member probes the members it watches (1.0).
        probe_timeout: seconds a probe may take (1.0).
        probe_targets: how many successors on the ring each member watches (3).
        missed_probes: failed probes in a row before a member is suspected (2).
        votes: suspicions from distinct members that declare a member dead (2; fewer
            when fewer members could vote: members that have not heartbeat within
            ``suspicion_window``, or three heartbeat periods if longer, do not count).
        suspicion_window: seconds a suspicion counts (10.0).
        heartbeat_period: how often a member writes its row (2.0).
        refresh: how often every process rereads the membership table (1.0).
        join_grace: seconds a new node stays ``joining``, listening, before it takes
            activations and clients publish topics through it: time for every
            subscriber in the cluster to see it and register its streams there, so
            that no event published on it is missed (default: twice ``refresh``;
            raise it when clients refresh less often than the nodes).
        prune_after: seconds after which dead and left rows are deleted (3600).
        redirects: redirects a call follows before it fails (3).
        tls_cert: a PEM certificate chain: with ``tls_key``, the node's listener speaks
            TLS (and so must every peer: set ``tls_ca`` on every node and client).
        tls_key: the certificate's private key (PEM).
        tls_ca: PEM certificates this node trusts when it dials other nodes over TLS
            (their SAN must name the host in their advertised address).
    """

    url: str
    secret: str = ""
    host: str = "127.0.0.1"
    port: int = 0
    advertise: str | None = None
    node: str | None = None
    placement: str = "prefer-local"
    probe_period: float = 1.0
    probe_timeout: float = 1.0
    probe_targets: int = 3
    missed_probes: int = 2
    votes: int = 2
    suspicion_window: float = 10.0
    heartbeat_period: float = 2.0
    refresh: float = 1.0
    join_grace: float | None = None
    prune_after: float = 3600.0
    redirects: int = 3
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_ca: str | None = None

    def __repr__(self) -> str:
        fields = ", ".join(
            f"{name}={'***' if name == 'secret' and value else repr(value)}"
            for name, value in msgspec.structs.asdict(self).items()
        )
        return f"ClusterSettings({fields})"

    def resolved(self) -> ClusterSettings:
        """These settings checked, with the secret taken from the environment if unset.

        Raises:
            ConfigError: naming the setting that is wrong.

        """
        secret = self.secret or os.environ.get("RIO_CLUSTER_SECRET", "")
        if not secret:
            raise ConfigError(
                "a cluster needs a shared secret: pass --secret, ClusterSettings(secret=...) "
                "or set RIO_CLUSTER_SECRET (the same on every node and client)"
            )
        if not self.url:
            raise ConfigError("a cluster needs a membership URL (redis://, postgresql://, ...)")
        if self.placement not in STRATEGIES:
            raise ConfigError(
                f"unknown placement strategy {self.placement!r}; known: {', '.join(STRATEGIES)}"
            )
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"cluster port must be 0..65535, got {self.port}")
        for name in ("probe_period", "probe_timeout", "suspicion_window", "heartbeat_period"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"cluster setting {name} must be > 0, got {getattr(self, name)}")
        if not self.refresh > 0:
            raise ConfigError(f"cluster setting refresh must be > 0, got {self.refresh}")
        if self.join_grace is not None and not 0 <= self.join_grace < math.inf:
            raise ConfigError(
                f"cluster setting join_grace must be >= 0 seconds, got {self.join_grace}"
            )
        for name in ("probe_targets", "missed_probes", "votes"):
            if getattr(self, name) < 1:
                raise ConfigError(f"cluster setting {name} must be >= 1, got {getattr(self, name)}")
        if self.advertise is not None:
            split_address(self.advertise, "advertise")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigError("cluster TLS needs both tls_cert and tls_key (or neither)")
        resolved = msgspec.structs.replace(self, secret=secret)
        resolved.server_ssl()  # a missing or unreadable file fails here, not at start
        resolved.client_ssl()
        from rio.cluster.store import cluster_store_from_url

        cluster_store_from_url(self.url)  # a malformed URL too, before anything starts
        return resolved

    @property
    def grace(self) -> float:
        """Seconds a new node waits, joining, before it serves (see ``join_grace``)."""
        return 2 * self.refresh if self.join_grace is None else self.join_grace

    def server_ssl(self) -> ssl.SSLContext | None:
        """The listener's TLS context, or None for plain TCP.

        Raises:
            ConfigError: a certificate or key file cannot be loaded.

        """
        if self.tls_cert is None or self.tls_key is None:
            return None
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            ctx.load_cert_chain(self.tls_cert, self.tls_key)
        except (OSError, ssl.SSLError) as e:
            raise ConfigError(
                f"cluster TLS: cannot load {self.tls_cert} / {self.tls_key}: {e}"
            ) from None
        return ctx

    def client_ssl(self) -> ssl.SSLContext | None:
        """The TLS context for dialing other nodes, or None for plain TCP.

        Raises:
            ConfigError: the CA file cannot be loaded.

        """
        if self.tls_ca is None:
            return None
        return client_context(self.tls_ca)


def client_context(cafile: str) -> ssl.SSLContext:
    """A TLS context trusting the certificates in ``cafile`` (for dialing nodes).

    Raises:
        ConfigError: the file cannot be loaded.

    """
    try:
        return ssl.create_default_context(cafile=cafile)
    except (OSError, ssl.SSLError) as e:
        raise ConfigError(f"cluster TLS: cannot load the CA file {cafile}: {e}") from None


def split_address(address: str, what: str = "address") -> tuple[str, int]:
    """``"host:port"`` → ``(host, port)`` (IPv6 hosts in brackets).

    Raises:
        ConfigError: naming ``what`` when it is not ``host:port``.

    """
    host, sep, port = address.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{what} {address!r} is not host:port")
    return host, int(port)


def join_address(host: str, port: int) -> str:
    """``(host, port)`` → ``"host:port"`` (brackets around an IPv6 host)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def advertised(host: str, port: int) -> str:
    """The address to publish for a listener bound to ``host:port``."""
    if host in ("0.0.0.0", "::", ""):
        host = socket.gethostname()
    return join_address(host, port)
