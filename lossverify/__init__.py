"""lossverify: property-tested numerical verification of loss functions.

``import lossverify`` and ``import lossverify.reference`` load NumPy only. The names that
need TensorFlow (``verify``, ``assert_verified``, ``VerifyReport``) are imported on first
use.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["VerifyReport", "assert_verified", "verify", "__version__"]

_LAZY = {"verify", "assert_verified", "VerifyReport"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from lossverify import verifier as _verifier

        return getattr(_verifier, name)
    raise AttributeError(f"module 'lossverify' has no attribute {name!r}")
