"""The executor side of a TF node: supervisor, TF process, GPUs, TF_CONFIG.

Constants shared by the supervisor and the TF process live here, so that importing tfos never imports
``tfos._node.child``, which runs as ``python -m tfos._node.child`` (runpy warns when the module it is asked to
run was already imported by its package).
"""

ERROR_FILE_ENV = "TFOS_ERROR_FILE"  # where the TF process writes its error record (message, traceback, ...)
PROGRESS_FILE_ENV = "TFOS_PROGRESS_FILE"  # where ctx.report_progress writes the latest progress for the supervisor
