"""lossverify: property-tested numerical verification of loss functions.

``import lossverify`` and ``import lossverify.reference`` load NumPy only. The names that
need TensorFlow (``verify``, ``assert_verified``, ``VerifyReport``) are imported on first
use.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
from lossverify.contract import Domain, LossverifyWarning, Output

__all__ = ["Call", "Closeness", "Domain", "LossverifyWarning", "Output", "VerifyReport",
           "assert_close_to_reference", "assert_verified", "close_to_reference", "verify",
           "__version__"]

_LAZY = {"verify", "assert_verified", "VerifyReport"}

#: What each optional part needs, by the extra that installs it.
EXTRAS = {
    "tf": "TensorFlow, Keras, Hypothesis, scikit-learn, matplotlib: verify(), the CLI, MNIST",
    "strategies": "Hypothesis: lossverify.strategies without TensorFlow",
    "torch": "PyTorch and Hypothesis: verify() on PyTorch losses, without TensorFlow",
    "jax": "JAX, optax and Hypothesis: verify() on JAX losses, without TensorFlow",
    "test": "tf plus pytest, pytest-xdist, pytest-benchmark: the test suite",
    "bench": "tf plus pytest and pytest-benchmark: the benchmarks",
    "lint": "ruff and mypy",
}


def missing_extra(exc: ModuleNotFoundError, what: str, extra: str) -> ModuleNotFoundError:
    """An ImportError that names the extra to install (not a bare "No module named")."""
    return ModuleNotFoundError(
        f"{what} needs {exc.name!r}, which is not installed: install lossverify's "
        f"{extra!r} extra (from a clone: pip install -e \".[{extra}]\"); it brings "
        f"{EXTRAS[extra]}", name=exc.name)


#: NumPy-only names, imported on first use (``import lossverify`` stays light).
_CLOSENESS = {"Closeness", "assert_close_to_reference", "close_to_reference"}


def __getattr__(name: str) -> Any:
    if name == "Call":
        from lossverify.frameworks import Call

        return Call
    if name in _CLOSENESS:
        from lossverify import closeness as _closeness

        return getattr(_closeness, name)
    if name in _LAZY:
        try:
            from lossverify import verifier as _verifier
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.split(".")[0] in ("hypothesis", "tensorflow", "keras"):
                raise missing_extra(exc, f"lossverify.{name}", "tf") from None
            raise
        return getattr(_verifier, name)
    raise AttributeError(f"module 'lossverify' has no attribute {name!r}")
