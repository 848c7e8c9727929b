"""Run one workload and print its record as JSON: ``python -m rio.bench.one PATH NAME N``.

``rio bench`` runs each workload this way, in a fresh interpreter.
"""

from __future__ import annotations

import sys

import msgspec

from rio.bench.core import measure, registered


def main(argv: list[str]) -> int:
    """Measure the workload ``argv`` names; print its record on the last line."""
    if len(argv) != 3:
        print("usage: python -m rio.bench.one PATH NAME N", file=sys.stderr)
        return 2
    path, name, count = argv
    found = [w for w in registered() if w.path == path and w.name == name]
    if not found:
        print(f"no workload {path}/{name}", file=sys.stderr)
        return 2
    record = measure(found[0], int(count))
    sys.stdout.write(msgspec.json.encode(record).decode() + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
