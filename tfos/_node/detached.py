"""A node supervisor that outlives its Spark task: ``python -m tfos._node.detached``.

With InputMode.SPARK the node stage must end so that feeding tasks can use the executors' slots, while the
TF process goes on. The task starts this process in its own session, reads one line from it (``READY`` once
the TF process started, or ``DONE`` if the node ended before that) and returns. This process then supervises
the node as an in-task supervisor would, and stops it if the executor's JVM goes away.
"""

from __future__ import annotations

import json
import os
import pickle
import sys


def main() -> int:
    import logging

    # This process is an entry point: its lifecycle goes to the executor's stderr log.
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s tfos node supervisor %(levelname)s %(name)s: %(message)s")
    spec, place = pickle.loads(sys.stdin.buffer.read())
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # anything printed later goes to the executor's stderr, not the READY pipe
    said = []

    def ready(info: dict) -> None:
        out.write("READY " + json.dumps(info) + "\n")
        out.close()
        said.append(True)

    from .supervisor import run_node

    summary = run_node(spec, place, on_started=ready)
    if not said:
        out.write("DONE " + json.dumps(summary) + "\n")
        out.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
