"""Cluster store engines (see :mod:`rio.cluster.store`)."""
