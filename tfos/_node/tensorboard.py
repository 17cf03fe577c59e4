"""TensorBoard for the chief's node: ``python -m tfos._node.tensorboard PARENT_PID [tensorboard flags...]``.

It runs the tensorboard package's server in this process and exits when its parent (the node's supervisor)
dies, like the TF process does: a lost executor or a killed driver never leaves a TensorBoard behind.
(TensorBoard's own data server exits when TensorBoard does: it is started with ``--die-after-stdin``.)
"""

from __future__ import annotations

import sys


def main() -> None:
    from .child import _die_with_parent

    _die_with_parent(int(sys.argv[1]))
    sys.argv = ["tensorboard", *sys.argv[2:]]
    from tensorboard.main import run_main

    run_main()


if __name__ == "__main__":
    main()
