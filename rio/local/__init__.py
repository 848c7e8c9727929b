"""rio's local runtime: actors in per-core worker processes on one box.

Workers and the driver talk through single-producer single-consumer byte rings in
shared memory (:mod:`rio.local.ring`) with eventfd wake-ups.
"""
