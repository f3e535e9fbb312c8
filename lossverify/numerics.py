"""Comparison with tolerances derived from the computation, and ULP distances.

The tolerance policy (DESIGN.md section 4)
==========================================
A correct implementation evaluated in a precision with unit roundoff ``u`` (2**-24 for
float32) errs, to first order, by at most ``u`` times the sum of the absolute sizes of
every quantity its rounding touches: each term it adds (a sum of ``n`` terms rounds
``n - 1`` times), each intermediate whose relative error the loss amplifies (``1 - p``
for ``p`` near 1, ``p / sum(p)``, a softmax; the amplification is ``|dL/dv| |v|``), and
one absolute ``u`` for each logarithm of a number near 1. The reference computes that
sum per sample as ``Evaluation.value_scale`` (and per gradient element as
``grad_scale``) from its own float64 terms, on the *same float32-rounded inputs* the
implementation sees. We then allow::

    |actual - reference| <= K * u * (n + 1) * scale  +  2 |ref_low - ref|  +  tiny / u

* ``n`` is the number of terms summed along the class axis (summation error grows with
  it; TensorFlow does not promise pairwise summation, so we take the worst case).
* ``K = 4`` covers the handful of roundings inside each term (a ``log``, a ``pow``, a
  division, a multiplication by a label) with a margin of about 2. It was set from that
  count, not tuned to tests; measured afterwards, the worst ``error / allowed`` over the
  default conformance run (``lossverify verify --max-examples 30``, seed 0, every Keras
  and notes' loss) is 0.5, and the 20-seed meta-tests of correct losses pass.
* ``ref_low - ref`` is the *yardstick*: the same reference formulas evaluated in the
  implementation's dtype minus the float64 result. It captures what first-order
  analysis misses: a float32 softmax that rounds to exactly 1.0 (so ``1 - p`` is 0 and
  a focal gradient vanishes), a ``sigmoid`` that saturates. Twice it, because another
  correct evaluation order may round the other way.
* ``tiny / u`` (2e-31 in float32; ``tiny`` is the smallest normal number) allows for
  flush-to-zero: TensorFlow's CPU kernels flush subnormals, intermediates included, so a
  product of small factors can lose a result of 1e-37 entirely (:func:`underflow`). The
  thorough sweep found such gradients of Keras's binary focal loss.

This rejects the bugs that matter (an epsilon of 1e-5 instead of 1e-7 errs by ~4.6 at a
zero probability; a float16 intermediate by ~1e-3 relative, thousands of times the
budget; a missing renormalisation by ``log(sum p)``) and accepts any float32 evaluation
order, because the budget is a bound on *every* such order, not a fixed rtol.

Reduced values (a ``keras.losses.Loss`` returns one number) get the weighted mean of
the per-sample budgets plus the rounding of the final sum and division.

Comparisons between execution modes use :func:`mode_tolerance`: the same budget (or a
few ULPs, if larger), since any correct evaluation order stays inside it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "DTYPES",
    "K",
    "Comparison",
    "max_finite",
    "compare",
    "mode_tolerance",
    "np_dtype",
    "tiny",
    "tolerance",
    "underflow",
    "ulp_distance",
    "unit_roundoff",
]

#: Safety factor on the first-order rounding bound; see the module docstring.
K = 4.0

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


def tolerance(scale: np.ndarray, n_terms: int, dtype: str = "float32",
              yardstick: np.ndarray | None = None) -> np.ndarray:
    """The allowed absolute error ``K u (n + 1) scale + 2 |yardstick| + tiny / u``.

    ``yardstick`` is the reference evaluated in ``dtype`` minus the reference in float64
    (non-finite entries ignored): what rounding of intermediates did to one correct
    low-precision evaluation (see the module docstring).
    """
    u = unit_roundoff(dtype)
    budget = K * u * (n_terms + 1) * np.asarray(scale, dtype=np.float64) + underflow(dtype)
    if yardstick is not None:
        y = np.abs(np.asarray(yardstick, dtype=np.float64))
        budget = budget + 2.0 * np.where(np.isfinite(y), y, 0.0)
    return budget


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


def mode_tolerance(value: np.ndarray, budget: np.ndarray, dtype: str = "float32",
                   ulps: int = 4) -> np.ndarray:
    """Allowed difference between two execution modes of the same implementation.

    ``ulps`` units in the last place of the value, or the reference budget ``budget``
    (from :func:`tolerance`), whichever is larger. The budget bounds *every* correct
    evaluation order, so a graph optimiser's reassociation or XLA's own ``exp``/``log``
    stay inside it, while a computation that really differs between modes (a changed
    constant, another formula under ``tf.executing_eagerly()``) does not: a relative
    change of 1e-5 is already beyond it for any loss whose terms are of order one.
    """
    ftype = np_dtype(dtype)
    if ftype.itemsize == 2 and ftype != np.float16:  # bfloat16: 7 stored mantissa bits
        spacing = np.abs(np.asarray(value, np.float64)) * 2.0**-7
    else:
        with np.errstate(over="ignore", invalid="ignore"):
            spacing = np.spacing(np.abs(np.asarray(value, np.float64)).astype(ftype))
    return np.maximum(ulps * spacing.astype(np.float64), np.asarray(budget))


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

    def describe(self) -> str:
        where = "" if self.index is None else f" at index {self.index}"
        return (f"got {self.actual!r}, expected {self.expected!r}{where} "
                f"(error {self.worst_abs:.3g}, allowed {self.allowed:.3g})")


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
        # checks.expected_for): it is not compared
        ratio = np.where((err == 0) | np.isposinf(tol), 0.0, err / tol)
        rel = np.where(err == 0, 0.0, err / np.abs(e))
    rel = np.where(np.isnan(rel), np.inf, rel)
    flat = int(np.argmax(ratio))
    idx = tuple(int(i) for i in np.unravel_index(flat, e.shape))
    ulp = ulp_distance(a, e, dtype)
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
    )
