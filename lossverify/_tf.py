"""Importing TensorFlow without its start-up noise.

On a machine without a GPU, ``import tensorflow`` and its first device discovery write
lines such as "Could not find cuda drivers", "failed call to cuInit" and "This
TensorFlow binary is optimized to use available CPU instructions" from C++ to the
process's standard error, before ``TF_CPP_MIN_LOG_LEVEL``
is read and whatever it says. With ``quiet`` the import runs with file descriptor 2
pointed at a temporary file; afterwards the lines that are not such notices are written
to standard error after all, so a real problem still shows.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator
from typing import Any

#: Start-up notices of a CPU-only TensorFlow (parts of the lines).
NOISE = ("cudart_stub.cc", "cpu_feature_guard.cc", "All log messages before absl::InitializeLog",
         "To enable the following instructions", "oneDNN custom operations",
         "Unable to register cu", "computation placer already registered", "TF-TRT Warning",
         "rebuild TensorFlow with the appropriate compiler flags", "cuda_dnn.cc",
         "cuda_fft.cc", "cuda_blas.cc", "port.cc:153", "Could not find cuda drivers",
         "cuda_platform.cc", "failed call to cuInit")


def import_tensorflow(quiet: bool = True) -> Any:
    """``import tensorflow``, its start-up notices dropped when ``quiet``, its Python
    logger set to errors only (retracing and autograph notices are not findings)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if "tensorflow" in sys.modules or not quiet:
        import tensorflow as tf
    else:
        with start_up_notices_dropped():
            import keras  # noqa: F401  (its import prints from C++ too)
            import tensorflow as tf

            tf.config.list_physical_devices()  # device discovery prints "cuInit" notices
    tf.get_logger().setLevel("ERROR")
    return tf


@contextlib.contextmanager
def start_up_notices_dropped() -> Iterator[None]:
    """Run the block with file descriptor 2 pointed at a temporary file; afterwards write
    the lines that are not :data:`NOISE` to standard error (a user's module that imports
    TensorFlow goes through here too)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            kept = [line for line in sink.read().decode(errors="replace").splitlines()
                    if line.strip() and not any(n in line for n in NOISE)]
            if kept:
                print("\n".join(kept), file=sys.stderr)
