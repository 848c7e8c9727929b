"""rio's cluster layer: many boxes behind the same API.

So far it holds :mod:`rio.cluster.transport`, the node-to-node connections:
length-framed msgpack over TCP, authenticated with the cluster secret (an HMAC
challenge both ways; TLS optional), many requests in flight per connection, replies
matched by id in any order, coalesced writes with backpressure, keep-alive pings.
Membership, placement and the cluster client build on it, and so does pub/sub
across nodes (:mod:`rio.cluster.streams`).
"""
