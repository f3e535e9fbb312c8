"""Shared numerics of the reference losses: clip bounds, stable softmax, evaluations.

Everything here is float64 NumPy. The only place the *input* dtype matters is the clip:
Keras clips to ``[epsilon, 1 - epsilon]`` computed in the input dtype, so the bounds are
taken in ``y_pred``'s dtype (float32 ``1 - 1e-7`` is ``0.99999988``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

#: Keras's default fuzz factor, ``keras.config.epsilon()``.
EPSILON = 1e-7

#: float32 unit roundoff ``2**-24``; used to size the ``kink`` margin below.
_U32 = float(np.finfo(np.float32).eps) / 2


_COMPUTE = {"dtype": np.dtype(np.float64)}


def compute_dtype() -> np.dtype:
    """The precision the references compute in: float64, except inside
    :func:`computing_in` (used to build a float32 yardstick for tolerances)."""
    return _COMPUTE["dtype"]


@contextlib.contextmanager
def computing_in(dtype: Any) -> Iterator[None]:
    """Evaluate the reference formulas in ``dtype`` instead of float64 (not thread-safe).

    :mod:`lossverify.checks` evaluates each reference once in float32 as well: the
    difference between that and float64 measures how much rounding of intermediates
    (a softmax that rounds to exactly 1.0, say) can move a correct float32 result.
    """
    previous = _COMPUTE["dtype"]
    _COMPUTE["dtype"] = np.dtype(dtype)
    try:
        yield
    finally:
        _COMPUTE["dtype"] = previous


_PERTURB: dict[str, Any] = {"u": 0.0, "pattern": None}


@contextlib.contextmanager
def perturbing(u: float, pattern: str) -> Iterator[None]:
    """Evaluate the reference with its rounding-sensitive intermediates (probabilities
    from a softmax, a sigmoid or a renormalisation, and ``1 - p_t``) moved by their
    largest faithful rounding error, ``c u`` relative per element (``c`` from
    :func:`faithful`), in the direction ``pattern`` gives: ``"down"``, ``"up"``, or
    ``"alternate"`` / ``"alternate-neg"`` (the sign flips from class to class). Used by
    :mod:`lossverify.tolerance` to bound, without linearising, what rounding of ``p``
    does where ``1 - p`` is of the order of that rounding (not thread-safe)."""
    previous = dict(_PERTURB)
    _PERTURB.update(u=float(u), pattern=pattern)
    try:
        yield
    finally:
        _PERTURB.update(previous)


def _signs(shape: tuple[int, ...]) -> np.ndarray | None:
    pattern = _PERTURB["pattern"]
    if pattern is None:
        return None
    if pattern in ("down", "up"):
        return np.full(shape, -1.0 if pattern == "down" else 1.0)
    flip = 1.0 if pattern == "alternate" else -1.0
    last = shape[-1] if shape else 1
    return np.broadcast_to(flip * (1.0 - 2.0 * (np.arange(last) % 2)), shape)


def faithful(p: np.ndarray, c: Any) -> tuple[np.ndarray, np.ndarray]:
    """``(p_hat, delta)``: ``p`` as an implementation may have rounded it, ``p (1 + delta)``
    with ``|delta| = c u`` inside :func:`perturbing` (``c`` a scalar or per element: how
    many roundings reach ``p``), and ``p`` itself (``delta = 0``) outside it."""
    p = np.asarray(p)
    signs = _signs(p.shape)
    if signs is None:
        return p, np.zeros(p.shape)
    delta = signs * _PERTURB["u"] * np.asarray(c, dtype=np.float64)
    return p * (1.0 + delta), delta


def softmax_roundings(z: np.ndarray) -> np.ndarray:
    """``c`` for a softmax's output (see :func:`faithful`): the exponent ``z - max`` is
    rounded (absolute error ``u |z - max|``, a relative error of ``exp``'s result), then
    ``exp``, an ``n``-term sum and a division round; ``exp(log_softmax)`` rounds twice at
    the magnitude of ``z - max`` (the shift, then subtracting ``log(sum)``) before its
    ``exp``: ``n + 2 + 2 |z - max|`` covers both evaluation orders."""
    n = z.shape[-1]
    return n + 2.0 + 2.0 * np.abs(z - z.max(axis=-1, keepdims=True))


@dataclass(frozen=True)
class Evaluation:
    """A reference loss evaluated on one batch, with what a comparison needs.

    Attributes:
        value: per-sample losses, float64, ``y_pred``'s shape without the class axis.
        grad: ``d value[i] / d y_pred``; samples are independent, so this is also the
            gradient of ``value.sum()``. Same shape as ``y_pred``.
        value_scale: per sample, the sum of the absolute sizes of everything a floating
            point evaluation of the loss adds, subtracts or takes the log of (terms, the
            sensitivity to relative perturbations of inputs and intermediates, and 1 for
            a logarithm of a number near 1). A correct implementation in a precision with
            unit roundoff ``u`` errs by at most a small multiple of ``u * value_scale``;
            see :mod:`lossverify.numerics`.
        grad_scale: the same for each gradient element: the sum of the absolute values
            of the pieces the gradient is assembled from.
        kink: per sample, True where an intermediate that TensorFlow computes itself
            (a softmax or renormalised probability) lies so close to a clip bound that a
            float32 evaluation may land on the other side. The value is continuous
            there, the gradient is not, so gradient comparisons skip such samples.
    """

    value: np.ndarray
    grad: np.ndarray
    value_scale: np.ndarray
    grad_scale: np.ndarray
    kink: np.ndarray

    def moved(self, axis: int, ndim: int) -> Evaluation:
        """Move the class axis of the gradient arrays from last back to ``axis``."""
        if axis in (-1, ndim - 1):
            return self
        return Evaluation(
            self.value,
            np.moveaxis(self.grad, -1, axis),
            self.value_scale,
            np.moveaxis(self.grad_scale, -1, axis),
            self.kink,
        )


def clip_bounds(dtype: np.dtype) -> tuple[float, float]:
    """Keras's clip interval ``[eps, 1 - eps]`` rounded in ``dtype``, returned as floats."""
    d = np.dtype(dtype)
    if not np.issubdtype(d, np.floating):
        d = np.dtype(np.float64)
    lo = d.type(EPSILON)
    hi = d.type(1) - lo
    return float(lo), float(hi)


def softmax(z: np.ndarray) -> np.ndarray:
    """Softmax over the last axis, shifted by the row maximum."""
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def log_softmax(z: np.ndarray) -> np.ndarray:
    """``z - logsumexp(z)`` over the last axis, stable for any finite ``z``."""
    shifted = z - z.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def sigmoid(z: np.ndarray) -> np.ndarray:
    """Logistic function without overflow for large ``|z|``."""
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def inside(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """``tf.clip_by_value``'s gradient mask: 1 inside the *inclusive* bounds, else 0."""
    return ((x >= lo) & (x <= hi)).astype(np.float64)


def near_bounds(q: np.ndarray, lo: float, hi: float | None, n_terms: int) -> np.ndarray:
    """Per sample: does a computed probability lie within rounding reach of a bound?

    A float32 softmax or ``p / sum(p)`` carries a relative error of up to about
    ``(n_terms + 2) u``; we take four times that as the margin, relative to the bound.
    ``hi=None`` checks the lower bound only.
    """
    margin = 4.0 * (n_terms + 2) * _U32
    close = np.abs(q - lo) <= margin * lo
    if hi is not None:
        close |= np.abs(q - hi) <= margin * hi
    return np.any(close, axis=-1)


def pow_derivative(a: np.ndarray, gamma: float) -> np.ndarray:
    """``d a**gamma / d a = gamma * a**(gamma - 1)``, with the limits at ``a == 0``.

    ``gamma == 0``: 0 (a constant). ``gamma == 1``: 1. ``gamma > 1``: 0 at ``a == 0``.
    ``0 < gamma < 1``: ``+inf`` at ``a == 0`` (the true one-sided derivative).
    """
    a = np.asarray(a, dtype=np.float64)
    if gamma == 0:
        return np.zeros_like(a)
    with np.errstate(divide="ignore"):
        return gamma * np.power(a, gamma - 1.0)
