"""Which GPUs a node's TF process may see (``CUDA_VISIBLE_DEVICES``). Pure functions."""

from __future__ import annotations

from typing import Sequence


def visible_devices(assigned: Sequence[str] | None, inherited: str | None) -> str | None:
    """Maps the GPUs Spark assigned to a task to the child's ``CUDA_VISIBLE_DEVICES``.

    Spark's addresses index the devices this executor sees; when the executor itself was started with a
    ``CUDA_VISIBLE_DEVICES`` list, address ``i`` is that list's ``i``-th entry.

    Args:
        assigned: ``TaskContext.resources()["gpu"].addresses``, or None when Spark does not schedule GPUs.
        inherited: the executor's own ``CUDA_VISIBLE_DEVICES`` (None if unset).

    Returns:
        The value for the child, or None to leave the inherited one (Spark does not schedule GPUs).

    Raises:
        ValueError: an address is not an index into the inherited list.
    """
    if assigned is None:
        return None
    if not assigned:
        return ""
    if not inherited:
        return ",".join(str(a).strip() for a in assigned)
    visible = [d.strip() for d in inherited.split(",") if d.strip()]
    out = []
    for address in assigned:
        try:
            out.append(visible[int(address)])
        except (ValueError, IndexError):
            raise ValueError(
                f"Spark assigned GPU {address!r}, but this executor only sees CUDA_VISIBLE_DEVICES={inherited!r}; "
                "check spark.executor.resource.gpu.discoveryScript"
            ) from None
    return ",".join(out)
