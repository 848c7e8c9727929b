"""rio's cluster layer: the same app on many boxes, behind the same API.

* :mod:`rio.cluster.transport` — node-to-node connections: length-framed msgpack over
  TCP, authenticated with the cluster secret (an HMAC challenge both ways; TLS
  optional), many requests in flight per connection, coalesced writes, keep-alive.
* :mod:`rio.cluster.store` — the membership table and the placement directory, on
  Redis, PostgreSQL, MySQL/MariaDB or SQLite (:mod:`rio.cluster.stores`).
* :mod:`rio.cluster.membership` — the view every process keeps, and each node's agent:
  incarnations, heartbeats, ring probes, suspicion votes, declaring members dead.
* :mod:`rio.cluster.routing` — placement strategies, the placement cache, redirects
  and failover retries.
* :mod:`rio.cluster.node` — a node: its listener, its membership duties, and the
  claims and releases of the objects it hosts (in-process or in a worker pool).
* :mod:`rio.cluster.client` — :func:`rio.connect`, the external client.
* :mod:`rio.cluster.settings` — :class:`rio.ClusterSettings`.
* :mod:`rio.cluster.streams` — pub/sub across nodes: subscribers register with every
  member, members relay what is published there.
"""
