"""Reference losses of the probabilistic family: KL divergence, Poisson, generalized CE.

Float64 NumPy (or :func:`~lossverify.reference.computing_in`'s dtype), each loss with its
analytic gradient with respect to ``y_pred`` and its error scales, in the pattern of
:mod:`lossverify.reference.losses`. The semantics are Keras 3.15's
(``keras/src/losses/losses.py``), read from its source:

* ``kl_divergence``: both ``y_true`` and ``y_pred`` are clipped to ``[eps, 1]`` (upper
  bound 1, not ``1 - eps``), ``eps = 1e-7`` rounded in ``y_pred``'s dtype (Keras converts
  ``y_true`` to that dtype first), then ``sum(y * log(y / p))`` over the last axis.
* ``poisson``: ``mean(p - y * log(p + eps))`` over the last axis, ``eps`` in ``y_pred``'s
  dtype; no clip (``p < -eps`` is NaN, ``p == -eps`` is ``inf`` or NaN).
* ``categorical_generalized_cross_entropy``: integer labels, ``p = y_pred[label]``,
  ``(1 - p**q) / q`` with ``q`` in ``(0, 1)`` converted to ``y_pred``'s dtype (Keras's
  ``ops.power`` and the division take the Python float ``q`` as a weak scalar).

Keras casts ``y_true`` to ``y_pred``'s dtype; these references take ``y_true`` as given:
pass the values the implementation sees (``y_true`` rounded to ``y_pred``'s dtype).

The gradients follow TensorFlow's: ``clip_by_value`` passes the gradient at its inclusive
bounds (``Minimum``/``Maximum`` gradients use ``<=``/``>=``) and blocks it outside.
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np

from lossverify.reference import _validate as V
from lossverify.reference._core import Evaluation, clip_bounds, compute_dtype, inside

__all__ = [
    "categorical_generalized_cross_entropy",
    "check_q",
    "kl_divergence",
    "poisson",
]

_ABS = np.abs


def _prepare_last_axis(y_true: Any, y_pred: Any) -> tuple[np.ndarray, np.ndarray, np.dtype]:
    """Copies in the compute dtype, reduced axis last (Keras reduces ``axis=-1``)."""
    yp, dtype = V.as_real_array(y_pred, "y_pred")
    yt, _ = V.as_real_array(y_true, "y_true")
    V.check_same_shape(yt, yp)
    if yp.ndim == 0 or yp.shape[-1] == 0:
        raise ValueError(f"y_pred: expected at least rank 1 and a non-empty last axis, "
                         f"got shape {yp.shape}")
    return yt, yp, dtype


def check_q(value: Any) -> float:
    """``q`` of the generalized cross-entropy: a finite real number in the *open*
    interval ``(0, 1)``, as ``keras.losses.CategoricalGeneralizedCrossEntropy`` requires
    (``if not 0 < q < 1: raise ValueError``). The function form does not check ``q``;
    the reference does."""
    if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Real):
        raise TypeError(f"q: expected a real number in (0, 1), got {value!r}")
    v = float(value)
    if not 0.0 < v < 1.0:  # NaN fails this too
        raise ValueError(f"q: expected a number in the open interval (0, 1), got {value!r}")
    return v


# --------------------------------------------------------------------------- KL


@V.quiet
def _eval_kl_divergence(y_true: Any, y_pred: Any) -> Evaluation:
    yt, yp, dtype = _prepare_last_axis(y_true, y_pred)
    lo, _ = clip_bounds(dtype)
    hi = 1.0
    yc = np.clip(yt, lo, hi)
    pc = np.clip(yp, lo, hi)
    r = yc / pc
    log_r = np.log(r)
    value = (yc * log_r).sum(-1)
    m = inside(yp, lo, hi) > 0
    # d/dp [y log(y / p)] = -y / p inside the clip, 0 outside (where, not a product:
    # TensorFlow's clip gradient selects 0 for a NaN y_pred rather than multiplying)
    grad = np.where(m, -r, 0.0)
    # Error scales. Keras's form rounds y / p (an absolute u in its log, weighted by y),
    # the log (u |log r|) and the product; the cross-entropy-minus-entropy form
    # y log y - y log p (PyTorch's kl_div) rounds each log at its own size. The larger
    # of the two: y (1 + |log y| + |log p|) >= y (1 + |log r|).
    value_scale = (yc * (1.0 + _ABS(np.log(yc)) + _ABS(np.log(pc)))).sum(-1)
    grad_scale = np.where(m, _ABS(r), 0.0)
    # The gradient jumps from -y / eps to 0 at eps (and from -y to 0 at 1). y_pred is an
    # input, not a rounded intermediate, so the clip decides exactly, and a neighbour
    # of a bound is clipped the same way whatever precision eps is taken in (float32's
    # 1e-7 lies between the float16, bfloat16 and float32 neighbours of eps). Only a
    # tie is ambiguous: TF passes the gradient, an exclusive clip blocks it, JAX's
    # max/min split it in half. So a y_pred exactly at a bound marks a kink, no margin
    # (one would hide an upper bound of 1 - eps: float32 1 - 2**-24 lies between).
    near = (yp == lo) | (yp == hi)
    kink = np.asarray(near.any(-1))
    return Evaluation(np.asarray(value), grad, np.asarray(value_scale), grad_scale, kink)


def kl_divergence(y_true: Any, y_pred: Any) -> np.ndarray:
    """Kullback-Leibler divergence over the last axis, with Keras's clip of both inputs.

    ``y = clip(y_true, eps, 1)``, ``p = clip(y_pred, eps, 1)``, ``sum(y * log(y / p))``
    with ``eps = 1e-7`` rounded in ``y_pred``'s dtype (float32: ``1.0000000117e-07``). A
    zero label therefore contributes ``eps * log(eps / p)`` (slightly negative for
    ``p > eps``), not 0, so the loss can be slightly negative; rows need not be
    normalised (values above 1 are clipped to 1, and a ``y_pred`` above 1 gets no
    gradient). For normalised rows with every ``y`` and ``p`` in ``[eps, 1]`` it equals
    cross-entropy minus entropy, ``-sum(y log p) + sum(y log y)``.

    >>> kl_divergence([[0., 1.], [.5, .5]], [[.5, .5], [.25, .75]]).round(7)
    array([0.6931456, 0.143841 ])
    """
    return np.asarray(_eval_kl_divergence(y_true, y_pred).value)


# --------------------------------------------------------------------------- Poisson


@V.quiet
def _eval_poisson(y_true: Any, y_pred: Any) -> Evaluation:
    yt, yp, dtype = _prepare_last_axis(y_true, y_pred)
    lo, _ = clip_bounds(dtype)
    n = yp.shape[-1]
    s = yp + lo
    log_s = np.log(s)
    t = yp - yt * log_s
    value = t.mean(-1)
    r = yt / s
    grad = (1.0 - r) / n
    # Terms p and y log(p + eps), the rounding of p + eps (an absolute u in the log,
    # times |y|), the log's own rounding (in |y log s|), the difference, the mean.
    value_scale = (_ABS(yp) + _ABS(yt * log_s) + _ABS(yt) + _ABS(t)).sum(-1) / n + _ABS(value)
    grad_scale = (1.0 + _ABS(r)) / n
    kink = np.zeros(yp.shape[:-1], dtype=bool)
    return Evaluation(np.asarray(value), grad, np.asarray(value_scale), grad_scale, kink)


def poisson(y_true: Any, y_pred: Any) -> np.ndarray:
    """Poisson loss over the last axis: ``mean(p - y * log(p + eps))``, ``p = y_pred``.

    ``eps = 1e-7`` in ``y_pred``'s dtype, added inside the log only; no clip: a
    prediction of exactly 0 gives ``-y log(eps)`` (gradient ``1 - y / eps``), one below
    ``-eps`` gives NaN. ``y`` (counts or rates) is used as given. For each element the
    loss is smallest at ``p = y - eps`` (``y >= eps``).

    >>> poisson([[1., 2.], [0., 3.]], [[.5, 2.], [1., 0.]]).round(6)
    array([ 0.903426, 24.677143])
    """
    return np.asarray(_eval_poisson(y_true, y_pred).value)


# --------------------------------------------------------------------------- GCE


def _flush_subnormal(x: np.ndarray) -> np.ndarray:
    """Subnormals of the compute dtype to 0, as TensorFlow's CPU kernels treat them.

    In float64 (the exact evaluation of a float32 input) nothing changes; under
    ``computing_in(float32)`` a float32 subnormal becomes 0, so the tolerance model's
    spread (twice the difference of the two evaluations) covers an implementation that
    flushes and one that does not. float16 is left alone: TensorFlow computes float16 in
    float32, where a float16 subnormal is a normal number."""
    dt = compute_dtype()
    if dt == np.float16:
        return x
    return np.where(_ABS(x) < np.finfo(dt).tiny, np.zeros_like(x), x)


def _flushed_by_tensorflow(p: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Where ``p`` (in ``y_pred``'s ``dtype``) is 0 for TensorFlow's CPU kernels: exactly
    0, or a subnormal of a dtype they compute in (not float16, computed in float32)."""
    d = np.dtype(dtype)
    if d == np.float16 or d.kind != "f":
        return np.asarray(p == 0)
    return np.asarray(_ABS(p) < np.finfo(d).tiny)


def _overflows(p: np.ndarray, exponent: float, dtype: np.dtype) -> np.ndarray:
    """Where ``|p|**exponent`` (a negative exponent) reaches, or comes within rounding of,
    the largest finite number of ``dtype`` (float64 for non-float inputs)."""
    d = np.dtype(dtype) if np.dtype(dtype).kind == "f" else np.dtype(np.float64)
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        big = np.power(_ABS(np.asarray(p, np.float64)), exponent)
    return np.asarray(big >= float(np.finfo(d).max) * (1 - 2.0**-8))


def _labels_for(y_true: Any, yp: np.ndarray) -> np.ndarray:
    labels_in = V.as_array(y_true, "y_true", "integer class labels")
    if labels_in.ndim == yp.ndim and labels_in.shape[-1:] == (1,):
        labels_in = labels_in[..., 0]  # the documented [batch, 1] form
    labels = V.as_labels(labels_in, yp.shape[-1])
    if labels.shape != yp.shape[:-1]:
        raise ValueError(f"y_true: expected label shape {yp.shape[:-1]} (y_pred's shape "
                         f"without the class axis), got {labels.shape}")
    return labels


@V.quiet
def _eval_categorical_generalized_cross_entropy(y_true: Any, y_pred: Any,
                                                q: Any = 0.5) -> Evaluation:
    q = check_q(q)
    yp, dtype = V.as_real_array(y_pred, "y_pred")
    if yp.ndim == 0 or yp.shape[-1] == 0:
        raise ValueError(f"y_pred: expected at least rank 1 and a non-empty class axis, "
                         f"got shape {yp.shape}")
    labels = _labels_for(y_true, yp)
    ct = compute_dtype().type
    # Keras's q: the Python float converted to y_pred's dtype by ops.power and `/ q`
    qd = ct(float(np.dtype(dtype).type(q)))
    p = _flush_subnormal(np.take_along_axis(yp, labels[..., None], axis=-1)[..., 0])
    big_p = np.power(p, qd)
    value = (1 - big_p) / qd
    # d/dp (1 - p**q) / q = -p**(q - 1): -inf at p == 0 (TensorFlow's autodiff also
    # gives NaN on the other classes there, -inf * 0 through the one-hot product)
    dp = np.power(p, qd - 1)
    grad = np.zeros_like(yp)
    np.put_along_axis(grad, labels[..., None], -dp[..., None], axis=-1)
    log_p = np.log(p)
    # Error scales: 1 and p**q subtracted, divided by q; pow as exp(q log p) errs by
    # u |q log p| relative (p**q |q log p| / q = p**q |log p| <= 1 / (e q)); the result.
    # p**(q - 1) errs by u |(q - 1) log p| relative inside pow, and the exponent q - 1
    # is rounded (u |q - 1| |log p|): 2 u |log p| covers both, and q taken in float64.
    with np.errstate(invalid="ignore"):
        pow_err = np.where(big_p == 0, 0.0, big_p * _ABS(log_p))
        value_scale = (1 + big_p) / qd + pow_err + _ABS(value)
        g_rel = 2.0 + 2.0 * _ABS(log_p)
        g_size = np.where(np.isfinite(dp) & (p > 0), dp * g_rel, 0.0)
    grad_scale = np.zeros_like(yp)
    np.put_along_axis(grad_scale, labels[..., None], g_size[..., None], axis=-1)
    # TensorFlow's gradient is -inf on the true class, and NaN on the others (inf * 0
    # through the one-hot product), where p**(q - 1) is not finite in y_pred's dtype:
    # p == 0, a subnormal a CPU kernel flushes to 0, or an overflow (float16: p below
    # about 1.5e-5 for small q). The gradient is not compared there.
    raw_p = np.take_along_axis(yp, labels[..., None], axis=-1)[..., 0]
    kink = _flushed_by_tensorflow(raw_p, dtype) | _overflows(raw_p, float(qd) - 1, dtype)
    return Evaluation(np.asarray(value), grad, np.asarray(value_scale), grad_scale,
                      np.asarray(kink))


def categorical_generalized_cross_entropy(y_true: Any, y_pred: Any, q: Any = 0.5) -> np.ndarray:
    """Generalized cross-entropy (Zhang & Sabuncu 2018) on integer labels.

    ``p = y_pred[..., label]`` (no clip, no renormalisation), ``(1 - p**q) / q`` with
    ``q`` in ``(0, 1)`` taken in ``y_pred``'s dtype (the function ``keras.losses.
    categorical_generalized_cross_entropy`` has no default and no range check; the class
    defaults to 0.5 and checks ``0 < q < 1``; so does this reference). ``y_true`` holds
    class indices of shape ``y_pred.shape[:-1]`` (or with a trailing axis of 1, as the
    Keras docstring allows). As ``q -> 0`` it tends to ``-log p``; for ``p`` in
    ``[0, 1]`` it lies in ``[0, 1/q]`` and never exceeds ``-log p``.

    Keras's docstring example:

    >>> y_pred = [[.7, .3], [.2, .8], [.6, .4], [.4, .6]]
    >>> categorical_generalized_cross_entropy([0, 1, 0, 1], y_pred, q=0.5).round(6)
    array([0.32668 , 0.211146, 0.450807, 0.450807])
    """
    ev = _eval_categorical_generalized_cross_entropy(y_true, y_pred, q)
    return np.asarray(ev.value)
