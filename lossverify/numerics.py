"""Floating-point facts (unit roundoff, tiny, ULP distances) and element-wise comparison.

The tolerance model itself (how large an error a correct implementation may make) is
:mod:`lossverify.tolerance`; this module compares against what it allows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "DTYPES",
    "Comparison",
    "max_finite",
    "compare",
    "at_least_ulps",
    "np_dtype",
    "tiny",
    "underflow",
    "ulp_distance",
    "unit_roundoff",
]

_UNIT_ROUNDOFF = {
    "float16": 2.0**-11,
    "bfloat16": 2.0**-8,
    "float32": 2.0**-24,
    "float64": 2.0**-53,
}
_TINY = {
    "float16": float(np.finfo(np.float16).tiny),
    "bfloat16": 2.0**-126,
    "float32": float(np.finfo(np.float32).tiny),
    "float64": float(np.finfo(np.float64).tiny),
}


def unit_roundoff(dtype: str) -> float:
    """Half the machine epsilon of ``dtype`` ("float16", "bfloat16", "float32", "float64")."""
    try:
        return _UNIT_ROUNDOFF[str(dtype)]
    except KeyError:
        raise ValueError(f"dtype: expected one of {sorted(_UNIT_ROUNDOFF)}, "
                         f"got {dtype!r}") from None


def underflow(dtype: str = "float32") -> float:
    """The absolute allowance for underflow: ``tiny / u`` (2e-31 in float32).

    TensorFlow's CPU kernels flush subnormal numbers to zero, in intermediates too: in a
    product of small factors (a focal factor times a clipped probability's gradient) one
    partial product can flush, taking a result of 1e-37 to exactly 0. Results that small
    are indistinguishable from 0 for any loss whose terms are of order one; below
    ``tiny / u`` we stop comparing digits.
    """
    return _TINY[str(dtype)] / unit_roundoff(dtype)


def tiny(dtype: str = "float32") -> float:
    """The smallest normal number of ``dtype``."""
    return _TINY[str(dtype)]


def at_least_ulps(value: np.ndarray, budget: np.ndarray, dtype: str = "float32",
                  ulps: int = 4) -> np.ndarray:
    """``budget`` (from :func:`lossverify.tolerance.budget`), or ``ulps`` units in the last
    place of ``value`` where that is larger: what an execution mode (``tf.function``,
    XLA) is allowed from the reference. The budget bounds *every* faithful evaluation, so
    a graph optimiser's reassociation or XLA's own ``exp``/``log`` stay inside it, while
    a computation that really differs between modes (a changed constant, another
    formula under ``tf.executing_eagerly()``) does not.
    """
    ftype = np_dtype(dtype)
    if ftype.itemsize == 2 and ftype != np.float16:  # bfloat16: 7 stored mantissa bits
        spacing = np.abs(np.asarray(value, np.float64)) * 2.0**-7
    else:
        with np.errstate(over="ignore", invalid="ignore"):
            spacing = np.spacing(np.abs(np.asarray(value, np.float64)).astype(ftype))
    # beyond the dtype's range (a reference the dtype cannot hold) the spacing is NaN:
    # the budget alone then decides
    return np.fmax(ulps * spacing.astype(np.float64), np.asarray(budget))


DTYPES = ("float16", "bfloat16", "float32", "float64")


def np_dtype(dtype: str) -> np.dtype:
    """The NumPy dtype for a dtype name; ``bfloat16`` comes from ``ml_dtypes`` (installed
    with TensorFlow), float32 standing in when it is missing."""
    name = str(dtype)
    if name not in DTYPES:
        raise ValueError(f"dtype: expected one of {DTYPES}, got {dtype!r}")
    if name == "bfloat16":
        try:
            import ml_dtypes
        except ImportError:
            return np.dtype(np.float32)
        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(name)


def max_finite(dtype: str) -> float:
    """The largest finite value of ``dtype`` (float32's for bfloat16, whose exponent
    range is float32's)."""
    ftype = np_dtype(dtype)
    if ftype.itemsize == 2 and ftype != np.float16:
        ftype = np.dtype(np.float32)
    return float(np.finfo(ftype).max)


def ulp_distance(a: np.ndarray, b: np.ndarray, dtype: str = "float32") -> np.ndarray:
    """Number of representable ``dtype`` values between ``a`` and ``b`` (0 if equal).

    Uses the sign-magnitude to two's-complement mapping of the IEEE bit patterns, so it
    is exact across zero. NaN against anything is reported as the maximum integer.
    """
    ftype = np_dtype(dtype)
    itype = {2: np.int16, 4: np.int32, 8: np.int64}[ftype.itemsize]
    with np.errstate(over="ignore", invalid="ignore"):  # beyond the dtype's range: inf
        x = np.asarray(np.asarray(a, dtype=np.float64), dtype=ftype)
        y = np.asarray(np.asarray(b, dtype=np.float64), dtype=ftype)
    ix = x.view(itype).astype(np.int64)
    iy = y.view(itype).astype(np.int64)
    top = np.int64(-(2 ** (8 * ftype.itemsize - 1)))  # the signed integer type's minimum
    ix = np.where(ix < 0, top - ix, ix)
    iy = np.where(iy < 0, top - iy, iy)
    dist = np.abs(ix - iy)
    xn, yn = np.isnan(x.astype(np.float64)), np.isnan(y.astype(np.float64))
    nan = xn | yn
    both_nan = xn & yn
    return np.where(both_nan, 0, np.where(nan, np.iinfo(np.int64).max, dist))


@dataclass(frozen=True)
class Comparison:
    """Result of comparing ``actual`` with ``expected`` element by element.

    ``ok`` is False if any element exceeds its allowance, or is NaN/Inf where the
    expected value is finite, or is finite where the expected value is infinite.
    ``index`` locates the worst element (largest error relative to its allowance).
    ``failing`` marks every element beyond its allowance, ``nonfinite`` those among
    them that are NaN or Inf where the expected value is finite (for matching a known
    deviation's symptom element by element). ``row_scale`` is the largest finite
    ``|expected|`` in the worst element's row (its sample, along the last axis; the
    value itself for per-sample values), so a report can show the error relative to
    the row's own size: 1e-24 of noise on a row of 1e-27 gradients and a real bug look
    different.
    """

    ok: bool
    worst_abs: float
    worst_rel: float
    worst_ulp: int
    worst_ratio: float
    index: tuple[int, ...] | None
    actual: float
    expected: float
    allowed: float
    failing: np.ndarray | None = field(default=None, compare=False, repr=False)
    nonfinite: np.ndarray | None = field(default=None, compare=False, repr=False)
    row_scale: float = 0.0

    @property
    def row_rel(self) -> float:
        """The worst error relative to ``row_scale`` (inf where the row is all 0)."""
        if self.worst_abs == 0:
            return 0.0
        return self.worst_abs / self.row_scale if self.row_scale > 0 else math.inf

    def describe(self) -> str:
        where = "" if self.index is None else f" at index {self.index}"
        return (f"got {self.actual!r}, expected {self.expected!r}{where} "
                f"(error {self.worst_abs:.3g}, allowed {self.allowed:.3g}; "
                f"{self.row_rel:.3g} of the row's largest |value| {self.row_scale:.3g})")


def compare(actual: np.ndarray, expected: np.ndarray, allowed: np.ndarray,
            dtype: str = "float32") -> Comparison:
    """Compare element-wise; non-finite mismatches count as infinite error."""
    a = np.asarray(actual, dtype=np.float64)
    e = np.asarray(expected, dtype=np.float64)
    tol = np.broadcast_to(np.asarray(allowed, dtype=np.float64), e.shape)
    if a.shape != e.shape:
        raise ValueError(f"actual: expected shape {e.shape}, got {a.shape}")
    if e.size == 0:
        return Comparison(True, 0.0, 0.0, 0, 0.0, None, float("nan"), float("nan"), 0.0)
    same_inf = np.isinf(e) & (a == e)
    both_nan = np.isnan(e) & np.isnan(a)
    with np.errstate(invalid="ignore", over="ignore"):
        err = np.where(same_inf | both_nan, 0.0, np.abs(a - e))
    err = np.where(np.isnan(err), np.inf, err)
    with np.errstate(divide="ignore", invalid="ignore"):
        # an infinite allowance marks an element the dtype cannot represent (see
        # lossverify.tolerance.budget): it is not compared
        ratio = np.where((err == 0) | np.isposinf(tol), 0.0, err / tol)
        rel = np.where(err == 0, 0.0, err / np.abs(e))
    rel = np.where(np.isnan(rel), np.inf, rel)
    flat = int(np.argmax(ratio))
    idx = tuple(int(i) for i in np.unravel_index(flat, e.shape))
    ulp = ulp_distance(a, e, dtype)
    failing = ~(ratio <= 1.0)
    nonfinite = failing & np.isfinite(e) & ~np.isfinite(a)
    row = np.abs(e[idx[:-1]]) if e.ndim > 1 else np.abs(e.flat[flat])
    row = np.where(np.isfinite(row), row, 0.0)
    return Comparison(
        ok=bool(np.all(ratio <= 1.0)),
        worst_abs=float(err.flat[flat]),
        worst_rel=float(rel.flat[flat]),
        worst_ulp=int(ulp.flat[flat]),
        worst_ratio=float(ratio.flat[flat]),
        index=idx,
        actual=float(a.flat[flat]),
        expected=float(e.flat[flat]),
        allowed=float(tol.flat[flat]),
        failing=failing,
        nonfinite=nonfinite,
        row_scale=float(np.max(row)),
    )
