"""Reference regression losses (Keras 3): MAE, MAPE, MSLE, Huber and log-cosh.

Float64 NumPy (or the dtype :func:`~lossverify.reference.computing_in` names), each with
its analytic gradient with respect to ``y_pred`` and its error scales, following
:mod:`lossverify.reference.losses`. Every loss is a mean over the last axis of an
elementwise term ``t(e)`` of the error; ``n`` is the size of that axis.

Conventions shared by the five:

* ``y_true`` is first rounded to ``y_pred``'s floating dtype, as Keras does
  (``convert_to_tensor(y_true, dtype=y_pred.dtype)``), so both inputs are exact numbers
  of the dtype the loss computes in. Forming the error ``e = y_pred - y_true`` then
  rounds once, by at most ``u |e|`` (``e`` is exact when the inputs are close); the
  error scales therefore count ``|e|``, not ``|y_true| + |y_pred|``.
* Gradients follow TensorFlow's op gradients: ``abs`` has ``sign(x)`` (0 at 0),
  ``maximum(x, c)`` passes the gradient to ``x`` where ``x >= c``, ``where`` routes it to
  the selected branch.
* ``kink`` flags a sample in which some element sits exactly on a point where the loss
  is not differentiable and the gradient is a convention (TensorFlow's is returned, and
  checked in ``tests/test_reference_regression.py``; JAX or PyTorch split ties or pick
  the other side): ``e == 0`` for MAE and MAPE (or ``|e|`` below the dtype's smallest
  normal number, which TensorFlow's CPU kernels flush to 0), ``y_pred == eps`` for
  MSLE. Inputs are exact, so no rounding can move an element across these points: the
  margin is exact equality. Huber and log-cosh have continuous gradients: no kink.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np

from lossverify.reference import _validate as V
from lossverify.reference._core import EPSILON, Evaluation, compute_dtype, faithful, sigmoid

__all__ = [
    "MSLE_EPSILON",
    "check_delta",
    "huber",
    "log_cosh",
    "mean_absolute_error",
    "mean_absolute_percentage_error",
    "mean_squared_logarithmic_error",
]

_ABS = np.abs
_LOG2 = math.log(2.0)

#: MSLE's ``epsilon``: Keras converts ``backend.epsilon()`` to a float32 tensor with no
#: dtype, so it is float32's ``1e-7`` whatever the inputs (a float64 ``maximum`` promotes
#: it: 1.0000000116860974e-07; float16 inputs are promoted to float32 by it).
MSLE_EPSILON = float(np.float32(EPSILON))


def check_delta(value: Any) -> float:
    """Huber's ``delta``: a finite real number > 0 (Keras does not check; ``delta <= 0``
    is not a Huber loss: 0 gives a loss of 0, a negative one a negative loss)."""
    if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Real):
        raise TypeError(f"delta: expected a real number, got {value!r}")
    v = float(value)
    if not np.isfinite(v):
        raise ValueError(f"delta: expected a finite number, got {value!r}")
    if v <= 0:
        raise ValueError(f"delta: expected a number > 0, got {value!r}")
    return v


def _prepare(y_true: Any, y_pred: Any) -> tuple[np.ndarray, np.ndarray, np.dtype]:
    """``(y_true, y_pred, dtype)``: both in the compute dtype, ``y_true`` first rounded to
    ``y_pred``'s floating dtype ``dtype`` (float64 for bool or integer ``y_pred``)."""
    yp, dtype = V.as_real_array(y_pred, "y_pred")
    yt, _ = V.as_real_array(y_true, "y_true")
    V.check_same_shape(yt, yp)
    if yp.ndim == 0 or yp.shape[-1] == 0:
        raise ValueError(f"y_pred: expected at least rank 1 and a non-empty last axis, "
                         f"got shape {yp.shape}")
    if np.asarray(y_pred).dtype.kind == "f" and np.asarray(y_true).dtype != dtype:
        yt = np.asarray(y_true).astype(dtype).astype(compute_dtype())
    return yt, yp, dtype


def _tie(e: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Per sample: an element with ``e == 0`` (or ``|e|`` subnormal: flushed to 0)."""
    return np.any(_ABS(e) < float(np.finfo(dtype).tiny), axis=-1)


def _finish(value: np.ndarray, grad: np.ndarray, value_scale: np.ndarray,
            grad_scale: np.ndarray, kink: np.ndarray) -> Evaluation:
    return Evaluation(np.asarray(value), grad, np.asarray(value_scale),
                      np.broadcast_to(grad_scale, grad.shape).copy(), np.asarray(kink))


# --------------------------------------------------------------------------- MAE


@V.quiet
def _eval_mean_absolute_error(y_true: Any, y_pred: Any) -> Evaluation:
    yt, yp, dtype = _prepare(y_true, y_pred)
    n = yp.shape[-1]
    e = yp - yt
    value = _ABS(e).mean(-1)
    grad = np.sign(e) / n
    # each |e| rounds once when formed (u |e|), then the n-term mean
    value_scale = _ABS(e).mean(-1) + value
    # +-1/n, or 0: only the rounding of 1/n
    grad_scale = np.full(yp.shape, 1.0 / n, dtype=yp.dtype)
    return _finish(value, grad, value_scale, grad_scale, _tie(e, dtype))


def mean_absolute_error(y_true: Any, y_pred: Any) -> np.ndarray:
    """Mean absolute error over the last axis: ``mean(|y_true - y_pred|, axis=-1)``.

    The gradient is ``sign(y_pred - y_true) / n``, 0 where ``y_pred == y_true``
    (TensorFlow's ``abs`` gradient, ``sign(0) = 0``). Keras's docstring example:

    >>> float(mean_absolute_error([1.0, 0.3, 1.0], [1.9, 0.3, 1.8]).round(6))
    0.566667
    >>> mean_absolute_error([[0., 1.], [2., 2.]], [[1., 1.], [0., 5.]])
    array([0.5, 2.5])
    """
    return np.asarray(_eval_mean_absolute_error(y_true, y_pred).value)


# --------------------------------------------------------------------------- MAPE


@V.quiet
def _eval_mean_absolute_percentage_error(y_true: Any, y_pred: Any) -> Evaluation:
    yt, yp, dtype = _prepare(y_true, y_pred)
    n = yp.shape[-1]
    eps = float(dtype.type(EPSILON))  # Keras: epsilon converted to y_pred's dtype
    m = np.maximum(_ABS(yt), eps)
    e = yp - yt
    r = _ABS(e / m)
    value = 100.0 * r.mean(-1)
    grad = 100.0 * np.sign(e) / (n * m)
    # |e| and the division each round once (relative u), then the mean and the factor 100
    value_scale = 100.0 * r.mean(-1) + value
    grad_scale = 100.0 / (n * m)
    return _finish(value, grad, value_scale, grad_scale, _tie(e, dtype))


def mean_absolute_percentage_error(y_true: Any, y_pred: Any) -> np.ndarray:
    """Mean absolute percentage error over the last axis.

    ``100 * mean(|(y_true - y_pred) / max(|y_true|, eps)|, axis=-1)`` with
    ``eps = 1e-7`` rounded to ``y_pred``'s dtype (float16: 1.19e-7, so any ``|y_true|``
    below ``1e-7`` divides by ``eps`` and the loss overflows there in float16). Keras's
    docstring says ``maximum(y_true, epsilon)``; its code (and this reference) takes
    ``|y_true|``, so a negative target is a scale, not clamped to ``eps``. The gradient is
    ``100 sign(y_pred - y_true) / (n max(|y_true|, eps))`` (0 at ``y_pred == y_true``).

    Keras's docstring example, and a target of 0 (divided by ``eps``):

    >>> float(mean_absolute_percentage_error([100., 200., 300.], [90., 210., 310.]).round(5))
    6.11111
    >>> mean_absolute_percentage_error([[0., -2.]], [[1e-7, -1.]])
    array([75.])
    """
    return np.asarray(_eval_mean_absolute_percentage_error(y_true, y_pred).value)


# --------------------------------------------------------------------------- MSLE


@V.quiet
def _eval_mean_squared_logarithmic_error(y_true: Any, y_pred: Any) -> Evaluation:
    yt, yp, _ = _prepare(y_true, y_pred)
    n = yp.shape[-1]
    eps = MSLE_EPSILON
    zp, zt = np.maximum(yp, eps), np.maximum(yt, eps)
    a, b = np.log1p(zp), np.log1p(zt)
    diff = a - b
    # Keras forms log(z + 1): the rounding of z + 1 is an absolute error of u in the log
    # (1 per log), the log rounds relative u |log|; so a - b errs by u (|a| + |b| + 2)
    # plus its own rounding.
    size = _ABS(a) + _ABS(b) + 2.0
    # That error is squared, too: where a - b is of its order (a == b, computed in two
    # lanes that round differently), (a - b)**2 is second order in u and not covered by
    # the first-order scale. Under the tolerance model's perturbation the difference is
    # moved by 4 u size (faithful rounding errs by up to 2 u per operation), exactly.
    _, delta = faithful(size, 4.0)
    moved = diff + delta.astype(size.dtype) * size
    value = (moved * moved).mean(-1)
    passes = (yp >= eps).astype(yp.dtype)  # tf.maximum: the gradient goes to y_pred at >=
    grad = 2.0 * diff / (n * (1.0 + zp)) * passes
    value_scale = (2.0 * _ABS(diff) * (size + _ABS(diff)) + diff * diff).mean(-1) + value
    grad_scale = 2.0 * (size + _ABS(diff)) / (n * (1.0 + zp)) * passes
    kink = np.any(yp == eps, axis=-1)
    return _finish(value, grad, value_scale, grad_scale, kink)


def mean_squared_logarithmic_error(y_true: Any, y_pred: Any) -> np.ndarray:
    """Mean squared logarithmic error over the last axis.

    ``mean((log1p(max(y_pred, eps)) - log1p(max(y_true, eps)))**2, axis=-1)`` with
    ``eps`` float32's ``1e-7`` (:data:`MSLE_EPSILON`) for every input dtype: values below
    ``eps`` (zero, negative, below -1) count as ``eps``, so the loss is finite for every
    finite input and ``y_pred == -1`` is no singularity. Keras writes
    ``log(max(x, eps) + 1.0)``, whose rounding of ``x + 1`` costs an absolute ``u`` per
    log; the reference is the exact ``log1p``. The gradient is
    ``2 (a - b) / (n (1 + y_pred))`` where ``y_pred >= eps`` (TensorFlow's ``maximum``
    passes ties to ``y_pred``) and 0 below.

    In the second sample ``-1`` and ``-5`` both count as ``eps`` and ``1`` gives
    ``(log 2 - log1p(eps))**2 / 2``:

    >>> mean_squared_logarithmic_error([[1., 2.], [0., -1.]], [[3., 2.], [-5., 1.]]).round(6)
    array([0.240227, 0.240226])
    """
    return np.asarray(_eval_mean_squared_logarithmic_error(y_true, y_pred).value)


# --------------------------------------------------------------------------- Huber


@V.quiet
def _eval_huber(y_true: Any, y_pred: Any, delta: Any = 1.0) -> Evaluation:
    d = check_delta(delta)
    yt, yp, dtype = _prepare(y_true, y_pred)
    n = yp.shape[-1]
    dl = float(dtype.type(d))  # Keras: convert_to_tensor(delta, dtype=y_pred.dtype)
    e = yp - yt
    ae = _ABS(e)
    quad = ae <= dl  # Keras: where(abs_error <= delta, ...): |e| == delta is quadratic
    t = np.where(quad, 0.5 * e * e, dl * ae - 0.5 * dl * dl)
    # quadratic: d/de 0.5 e^2 = e; linear: delta sign(e). At |e| == delta both give
    # +-delta exactly, so the gradient is continuous and a rounding of e across the
    # boundary moves it by |e - delta| <= u |e|: within grad_scale, no kink.
    g = np.where(quad, e, dl * np.sign(e))
    grad = g / n
    value = t.mean(-1)
    # terms: 0.5 e^2 (plus e's rounding, |e| |e|); delta |e| and delta^2 / 2 (plus delta |e|)
    t_size = np.where(quad, 1.5 * e * e, 2.0 * dl * ae + 0.5 * dl * dl)
    value_scale = t_size.mean(-1) + value
    # The classic form q = min(|e|, delta), q**2 / 2 + delta (|e| - q) (tf.compat.v1's
    # huber_loss) assembles the quadratic branch's gradient as q + delta - delta: an
    # absolute error of u delta however small e is. Its pieces count.
    grad_scale = (_ABS(g) + 2.0 * dl * quad.astype(yp.dtype)) / n
    return _finish(value, grad, value_scale, grad_scale, np.zeros(yp.shape[:-1], bool))


def huber(y_true: Any, y_pred: Any, delta: Any = 1.0) -> np.ndarray:
    """Huber loss over the last axis, ``e = y_pred - y_true``:

    ``mean(where(|e| <= delta, e**2 / 2, delta |e| - delta**2 / 2), axis=-1)``, with
    ``delta`` rounded to ``y_pred``'s dtype (float32 ``0.1`` is 0.10000000149). At
    ``|e| == delta`` the quadratic branch holds; both branches give the value
    ``delta**2 / 2`` and the gradient ``+-delta / n`` there, so only the second derivative
    jumps. The gradient is ``e / n`` inside, ``delta sign(e) / n`` outside.
    ``delta`` must be a finite number > 0 (:func:`check_delta`).

    Keras's docstring example (per sample; Keras's mean of these is 0.155):

    >>> huber([[0., 1.], [0., 0.]], [[0.6, 0.4], [0.4, 0.6]]).round(6)
    array([0.18, 0.13])
    >>> huber([[0., 0., 0.]], [[0.5, 2., -3.]], delta=2.0).round(6)   # 1/8, 2, 4
    array([2.041667])
    """
    return np.asarray(_eval_huber(y_true, y_pred, delta).value)


# --------------------------------------------------------------------------- log-cosh


def _log_cosh(ax: np.ndarray) -> np.ndarray:
    """``log(cosh(x))`` of ``ax = |x|``, accurate to a few ulps everywhere and finite for
    every finite ``x``: ``log1p(2 sinh(x/2)**2)`` (``cosh x - 1`` without cancellation)
    below 1, ``|x| + log1p(exp(-2|x|)) - log 2`` (no overflow) from 1 on."""
    small = np.minimum(ax, 1.0)
    sh = np.sinh(0.5 * small)
    near = np.log1p(2.0 * sh * sh)
    far = ax + np.log1p(np.exp(-2.0 * ax)) - _LOG2
    return np.where(ax < 1.0, near, far)


@V.quiet
def _eval_log_cosh(y_true: Any, y_pred: Any) -> Evaluation:
    yt, yp, _ = _prepare(y_true, y_pred)
    n = yp.shape[-1]
    x = yp - yt
    ax = _ABS(x)
    t = _log_cosh(ax)
    value = t.mean(-1)
    th = np.tanh(x)
    grad = th / n
    # Keras: x + softplus(-2x) - log 2, terms |x|, softplus(-2x) (about 2|x| for x < 0)
    # and log 2, plus x's own rounding passed on with weight |tanh x|. The value cancels
    # to about x**2 / 2 for small |x|: its error is absolute, ~u, there.
    s = sigmoid(-2.0 * x)  # softplus(-2x)' = sigmoid(-2x)
    softplus = np.log1p(np.exp(-2.0 * ax)) + np.maximum(-2.0 * x, 0.0)
    value_scale = (ax + softplus + _LOG2 + _ABS(th) * ax).mean(-1) + value
    # autodiff: 1 - 2 sigmoid(-2x) (sizes 1 + 2 sigmoid(-2x); the logaddexp form's
    # sigmoid(2x) - sigmoid(-2x) has sizes 1), plus x's rounding times sech^2 x
    sech2 = 4.0 * sigmoid(2.0 * x) * s
    grad_scale = (1.0 + 2.0 * s + sech2 * ax) / n
    return _finish(value, grad, value_scale, grad_scale, np.zeros(yp.shape[:-1], bool))


def log_cosh(y_true: Any, y_pred: Any) -> np.ndarray:
    """Log-cosh loss over the last axis: ``mean(log(cosh(y_pred - y_true)), axis=-1)``.

    Exact and finite for every finite input (``cosh`` itself overflows beyond
    ``|x| ~ 89`` in float32, 710 in float64); Keras evaluates the same function as
    ``x + softplus(-2x) - log(2)``. The gradient is ``tanh(y_pred - y_true) / n``.

    Keras's docstring example (per sample; Keras's mean of these is 0.108), and a large
    error (``|x| - log 2``):

    >>> log_cosh([[0., 1.], [0., 0.]], [[1., 1.], [0., 0.]]).round(6)
    array([0.21689, 0.     ])
    >>> log_cosh([[0.]], [[1000.]]).round(4)
    array([999.3069])
    """
    return np.asarray(_eval_log_cosh(y_true, y_pred).value)
