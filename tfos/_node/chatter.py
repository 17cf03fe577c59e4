"""Which lines of a TF process's output the driver leaves out by default: TensorFlow's C++ start-up chatter.

Every line still goes to the executor's log (the supervisor writes them all to its stderr) and into the failure
report's last lines; only the copy forwarded to the driver is filtered. Left out:

- TensorFlow's C++ log lines at INFO level (``I0000 00:00:... file.cc:123] ...``: oneDNN notices,
  cpu_feature_guard, coordination-service progress, gRPC server start-up) and absl's "All log messages before
  absl::InitializeLog()" notice, plus the "To enable the following instructions" line that follows
  cpu_feature_guard's;
- on a node without GPUs, the CUDA probe's noise ("Could not find cuda drivers", "failed call to cuInit"),
  which TensorFlow logs at ERROR level even when no GPU was asked for.

Kept: everything Python prints (prints, Keras progress, warnings, tracebacks) and TensorFlow's C++ WARNING and
ERROR lines. ``forward_logs=all`` (``TFOS_FORWARD_LOGS=all``) forwards every line; so does a
``TF_CPP_MIN_LOG_LEVEL`` the user set for the TF process (then TensorFlow itself decides what it prints).
"""

from __future__ import annotations

import re

# absl's log prefix: severity, MMDD, time, thread id, file:line]
_CPP_LINE = re.compile(r"^([IWEF])\d{4} \d\d:\d\d:\d+\.\d+\s+\d+ [\w.+/-]+:\d+\] ")
_ABSL_NOTICE = "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"
_CPU_FEATURES = "To enable the following instructions:"
_GPU_PROBE = ("Could not find cuda drivers", "failed call to cuInit", "cuda_platform.cc", "cudart_stub.cc",
              "Unable to register cuDNN", "Unable to register cuFFT", "Unable to register cuBLAS",
              "computation placer already registered")


def is_chatter(line: str, cpu_only: bool = True) -> bool:
    """Whether the driver leaves ``line`` out by default (see the module docstring)."""
    text = line.strip()
    if text == _ABSL_NOTICE or text.startswith(_CPU_FEATURES):
        return True
    match = _CPP_LINE.match(text)
    if match is None:
        return False
    if match.group(1) == "I":
        return True
    return cpu_only and any(marker in text for marker in _GPU_PROBE)
