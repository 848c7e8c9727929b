"""rio's core: ids, errors, registry, codec, activations and the in-process runtime.

Nothing here knows about worker processes, the cluster or the CLI.
"""
