"""Reference losses in float64 NumPy, each with its analytic gradient and error scales.

Each public loss returns per-sample losses (no reduction) with Keras 3's documented
semantics; :func:`evaluate` returns the full :class:`~lossverify.reference.Evaluation`
(value, gradient with respect to ``y_pred``, error scales, kink flags). The gradients
follow the derivatives TensorFlow's ops define: ``clip_by_value`` passes the gradient
inside its inclusive bounds and blocks it outside.

Notation: ``C`` classes on the class axis, ``eps = 1e-7`` rounded in ``y_pred``'s dtype,
``clip(x) = min(max(x, eps), 1 - eps)``, ``[.]`` the clip's pass-through indicator.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from lossverify.reference import _validate as V
from lossverify.reference._core import (
    Evaluation,
    clip_bounds,
    faithful,
    inside,
    log_softmax,
    near_bounds,
    pow_derivative,
    sigmoid,
    softmax,
    softmax_roundings,
)

_ABS = np.abs


def _prepare(y_true: Any, y_pred: Any, axis: Any) -> tuple[np.ndarray, np.ndarray, np.dtype, int]:
    """Float64 copies with the class axis moved last, and y_pred's dtype for the clip."""
    yp, dtype = V.as_real_array(y_pred, "y_pred")
    yt, _ = V.as_real_array(y_true, "y_true")
    ax = V.check_axis(axis, yp.ndim)
    V.check_same_shape(yt, yp)
    V.check_class_axis_not_empty(yp, ax)
    return np.moveaxis(yt, ax, -1), np.moveaxis(yp, ax, -1), dtype, ax


def _no_kink(shape: tuple[int, ...]) -> np.ndarray:
    return np.zeros(shape[:-1], dtype=bool)


# --------------------------------------------------------------------------- MSE


@V.quiet
def _eval_mean_squared_error(y_true: Any, y_pred: Any) -> Evaluation:
    yp, _ = V.as_real_array(y_pred, "y_pred")
    yt, _ = V.as_real_array(y_true, "y_true")
    V.check_same_shape(yt, yp)
    if yp.ndim == 0 or yp.shape[-1] == 0:
        raise ValueError(f"y_pred: expected at least rank 1 and a non-empty last axis, "
                         f"got shape {yp.shape}")
    n = yp.shape[-1]
    d = yp - yt
    value = np.asarray(np.mean(d * d, axis=-1))
    grad = 2.0 * d / n
    size = _ABS(yp) + _ABS(yt)
    grad_scale = 2.0 * size / n
    value_scale = np.sum(d * d + _ABS(grad) * size, axis=-1) / n + value
    return Evaluation(value, grad, value_scale, grad_scale, np.zeros(yp.shape[:-1], bool))


def mean_squared_error(y_true: Any, y_pred: Any) -> np.ndarray:
    """Mean squared error over the last axis: ``mean((y_pred - y_true)**2, axis=-1)``.

    >>> mean_squared_error([0., 0., 1., 1.], [1., 1., 1., 0.])   # the notes' example
    array(0.75)
    """
    return np.asarray(_eval_mean_squared_error(y_true, y_pred).value)


# --------------------------------------------------------------------------- binary


def _bce_terms(y: np.ndarray, yp: np.ndarray, from_logits: bool, dtype: np.dtype):
    """Elementwise BCE, its derivative w.r.t. y_pred, and absolute sizes of both."""
    if from_logits:
        # max(z, 0) - z*y + log1p(exp(-|z|)): exact for any finite z, unbounded.
        z = yp
        softplus = np.log1p(np.exp(-_ABS(z)))
        t = np.maximum(z, 0) - z * y + softplus
        # sigmoid(z) through exp of a rounded argument (exp(-z - max(-z, 0)) in
        # PyTorch's form): exp's result carries a relative error of u |z|, which reaches
        # sigmoid(z) weighted by 1 - sigmoid(z) (all of it for z << 0, none for z >> 0),
        # on top of its own two roundings
        s, _ = faithful(sigmoid(z), 2.0 + _ABS(z) * sigmoid(-z))
        d = s - y
        # For soft labels the standard forms cancel terms of size |z|: Keras's
        # max(z, 0) - z y + log1p(exp(-|z|)) for z > 0, PyTorch's (1 - y) z + max(-z, 0)
        # + log(exp(-max(-z, 0)) + exp(-z - max(-z, 0))) for z < 0 (an error of u |z|
        # either way). With y exactly 0 or 1 the products are exact and those terms
        # cancel exactly: only the result itself is rounded.
        hard = (y == 0) | (y == 1)
        t_size = np.where(hard, _ABS(t), _ABS(z) + _ABS(z * y)) + softplus
        d_size = s + _ABS(y)
        return t, d, t_size, d_size
    lo, hi = clip_bounds(dtype)
    q = np.clip(yp, lo, hi)
    log_q, log_1mq = np.log(q), np.log1p(-q)
    t = -(y * log_q + (1 - y) * log_1mq)
    m = inside(yp, lo, hi)
    pos, neg = y / q, (1 - y) / (1 - q)
    d = -(pos - neg) * m
    t_size = _ABS(y * log_q) + _ABS((1 - y) * log_1mq) + 1.0
    d_size = (_ABS(pos) + _ABS(neg)) * m
    return t, d, t_size, d_size


def _smooth_binary(y: np.ndarray, label_smoothing: Any) -> np.ndarray:
    ls = V.check_label_smoothing(label_smoothing)
    return y * (1.0 - ls) + 0.5 * ls if ls else y


@V.quiet
def _eval_binary_crossentropy(y_true, y_pred, from_logits=False, label_smoothing=0.0, axis=-1):
    yt, yp, dtype, ax = _prepare(y_true, y_pred, axis)
    y = _smooth_binary(yt, label_smoothing)
    n = yp.shape[-1]
    t, d, t_size, d_size = _bce_terms(y, yp, V.check_flag(from_logits, "from_logits"), dtype)
    value = t.mean(axis=-1)
    ev = Evaluation(value, d / n, t_size.sum(-1) / n + 1.0, d_size / n, _no_kink(yp.shape))
    return ev.moved(ax, yp.ndim)


def binary_crossentropy(y_true, y_pred, from_logits=False, label_smoothing=0.0, axis=-1):
    """Binary cross-entropy, averaged over ``axis``.

    Smoothed labels ``y' = y (1 - ls) + ls / 2``. On probabilities:
    ``-mean(y' log clip(p) + (1 - y') log(1 - clip(p)))``. On logits ``z``:
    ``mean(max(z, 0) - z y' + log1p(exp(-|z|)))`` (no clip).

    >>> binary_crossentropy([[0., 1.], [0., 0.]], [[0.6, 0.4], [0.4, 0.6]]).round(5)
    array([0.91629, 0.71356])
    """
    ev = _eval_binary_crossentropy(y_true, y_pred, from_logits, label_smoothing, axis)
    return np.asarray(ev.value)


@V.quiet
def _eval_binary_focal_crossentropy(y_true, y_pred, apply_class_balancing=False, alpha=0.25,
                                    gamma=2.0, from_logits=False, label_smoothing=0.0, axis=-1):
    yt, yp, dtype, ax = _prepare(y_true, y_pred, axis)
    gamma = V.check_gamma(gamma)
    alpha = V.check_alpha(alpha)
    from_logits = V.check_flag(from_logits, "from_logits")
    apply_class_balancing = V.check_flag(apply_class_balancing, "apply_class_balancing")
    y = _smooth_binary(yt, label_smoothing)
    n = yp.shape[-1]
    # The cross-entropy part: from logits exactly (Keras recovers the logits behind its
    # own sigmoid), from probabilities with the clip.
    bce, dbce, bce_size, dbce_size = _bce_terms(y, yp, from_logits, dtype)
    if from_logits:
        p, q = sigmoid(yp), sigmoid(-yp)  # p and 1 - p, each without cancellation
        # An implementation's sigmoid is rounded (two roundings: exp and the division),
        # and autodiff forms d p / d z = p (1 - p) from that rounded p, so for z > 16,
        # where 1 - p is below float32's resolution near 1, it is 0 or 2**-24, not q.
        p_hat, d_p = faithful(p, 2.0)
        dp = p_hat * np.maximum(q - d_p * p, 0.0)  # d p / d z
    else:
        p, q = yp, 1.0 - yp
        dp = np.ones_like(p)
    p_t = y * p + (1 - y) * q
    # 1 - p_t computed without cancellation (an implementation that forms 1 - p_t
    # loses digits there; the reference does not). Under the tolerance model's
    # perturbation (lossverify.tolerance) it is moved by the rounding of p_t, a few
    # roundings of p_t (+ p on logits: the sigmoid's own rounding reaches p_t with weight
    # |y| + |1 - y| = 1), exactly, not to first order: where 1 - p_t is below that
    # rounding, a faithful evaluation may give 0 or several times the exact value.
    pt_err = p_t + p if from_logits else p_t
    _, d_t = faithful(pt_err, 4.0)
    a = np.clip(y * q + (1 - y) * p - d_t * pt_err, 0.0, 1.0)
    f = np.power(a, gamma)
    w = y * alpha + (1 - y) * (1 - alpha) if apply_class_balancing else np.ones_like(y)
    t = w * f * bce
    # d t / d p through the focal factor: f'(a) * da/dp, with da/dp = 1 - 2y. Where a
    # factor is exactly 0 the product is 0 (the limits are 0 or the term is absent).
    f_prime = pow_derivative(a, gamma)
    with np.errstate(invalid="ignore", over="ignore"):
        focal_part = np.where((bce == 0) | (1 - 2 * y == 0), 0.0, bce * f_prime * (1 - 2 * y))
        focal_z = np.where(dp == 0, 0.0, focal_part * dp)
    grad = w * (f * dbce + focal_z)  # dbce is d/dz on logits, d/dp on probabilities
    # Error scales: the terms. The sensitivity to the rounding of p_t and of the sigmoid
    # is not linearised here (its derivative (1 - p_t)**(gamma - 2) is unbounded at
    # p_t = 1): the tolerance model evaluates this function at the perturbed a and dp.
    with np.errstate(invalid="ignore", over="ignore"):
        # focal_z carries bce's own error, which is absolute (u per log of a number near
        # 1: log(1 - q) for q near 0), so its scale is bce_size, not |bce|; and autodiff
        # forms da/dp = 1 - 2y as the sum of two terms of sizes y and 1 - y (their
        # cancellation for soft labels near 0.5 is in the budget, not in the reference)
        # On logits, dp = p (1 - p) is formed from the rounded p: 1 - p carries the
        # absolute error u p, so dp's error scale is p (1 - p) + p * p = p, not dp (for
        # z > 16, 1 - p is below float32's resolution near 1).
        focal_z_size = np.where((bce == 0) | (dp == 0), 0.0,
                                bce_size * _ABS(f_prime) * (_ABS(y) + _ABS(1 - y)) * dp)
        grad_size = w * (f * dbce_size + focal_z_size)
        value_scale = (w * f * bce_size + gamma * _ABS(t)).sum(-1) / n + 1.0
    ev = Evaluation(t.mean(-1), grad / n, value_scale, grad_size / n, _no_kink(yp.shape))
    return ev.moved(ax, yp.ndim)


def binary_focal_crossentropy(y_true, y_pred, apply_class_balancing=False, alpha=0.25,
                              gamma=2.0, from_logits=False, label_smoothing=0.0, axis=-1):
    """Binary focal cross-entropy (Lin et al. 2017), averaged over ``axis``.

    ``p = sigmoid(z)`` on logits, else ``y_pred``; ``p_t = y' p + (1 - y')(1 - p)``;
    per element ``w (1 - p_t)**gamma * bce`` where ``bce`` is :func:`binary_crossentropy`'s
    element (from logits when ``from_logits``) and ``w = y' alpha + (1 - y')(1 - alpha)``
    with class balancing, else 1. ``gamma = 0`` and no balancing is plain BCE.

    >>> binary_focal_crossentropy([[0, 1]], [[0.6, 0.4]], gamma=2.0).round(5)
    array([0.32986])
    """
    ev = _eval_binary_focal_crossentropy(y_true, y_pred, apply_class_balancing, alpha, gamma,
                                         from_logits, label_smoothing, axis)
    return np.asarray(ev.value)


# --------------------------------------------------------------------------- categorical


def _smooth_categorical(y: np.ndarray, label_smoothing: Any) -> np.ndarray:
    """``y (1 - ls) + ls / C`` with ``C`` the size of the class axis (last, here)."""
    ls = V.check_label_smoothing(label_smoothing)
    return y * (1.0 - ls) + ls / y.shape[-1] if ls else y


def _renormalised_clip(yp: np.ndarray, dtype: np.dtype, hi_override: float | None = None):
    """``q = p / sum(p)`` then clipped; returns q, clip(q), the pass mask and kink flags."""
    lo, hi = clip_bounds(dtype)
    if hi_override is not None:
        hi = hi_override
    with np.errstate(invalid="ignore", divide="ignore"):
        s = yp.sum(-1, keepdims=True)
        # an n-term sum and a division: n roundings of q
        q, _ = faithful(yp / s, yp.shape[-1])
    return s, q, np.clip(q, lo, hi), inside(q, lo, hi), near_bounds(q, lo, hi, yp.shape[-1])


def _through_renormalisation(h: np.ndarray, h_size: np.ndarray, q: np.ndarray, s: np.ndarray):
    """Chain rule through ``q = p / sum(p)``: ``dL/dp_j = (h_j - sum_k h_k q_k) / s``."""
    hq = (h * q).sum(-1, keepdims=True)
    hq_size = (_ABS(h) * _ABS(q)).sum(-1, keepdims=True)
    return (h - hq) / s, (h_size + hq_size) / _ABS(s)


def _through_softmax(g: np.ndarray, g_size: np.ndarray, p: np.ndarray):
    """Chain rule through ``p = softmax(z)``: ``dL/dz_j = p_j (g_j - sum_k g_k p_k)``."""
    gp = (g * p).sum(-1, keepdims=True)
    gp_size = (g_size * p).sum(-1, keepdims=True)
    return p * (g - gp), p * (g_size + gp_size)


@V.quiet
def _eval_categorical_crossentropy(y_true, y_pred, from_logits=False, label_smoothing=0.0,
                                   axis=-1):
    yt, yp, dtype, ax = _prepare(y_true, y_pred, axis)
    y = _smooth_categorical(yt, label_smoothing)
    if V.check_flag(from_logits, "from_logits"):
        lsm = log_softmax(yp)
        p, _ = faithful(np.exp(lsm), softmax_roundings(yp))
        sum_y = y.sum(-1, keepdims=True)
        value = -(y * lsm).sum(-1)
        grad = p * sum_y - y
        big = _ABS(yp).max(-1, keepdims=True)
        value_scale = (_ABS(y) * (_ABS(lsm) + _ABS(yp) + big)).sum(-1) + 1.0
        grad_size = p * _ABS(sum_y) + _ABS(y)
        return Evaluation(value, grad, value_scale, grad_size, _no_kink(yp.shape)).moved(
            ax, yp.ndim)
    s, q, qc, m, kink = _renormalised_clip(yp, dtype)
    log_qc = np.log(qc)
    value = -(y * log_qc).sum(-1)
    h = -y / qc * m
    grad, grad_size = _through_renormalisation(h, _ABS(h), q, s)
    value_scale = (_ABS(y * log_qc) + _ABS(h * q)).sum(-1) + 1.0
    return Evaluation(value, grad, value_scale, grad_size, kink).moved(ax, yp.ndim)


def categorical_crossentropy(y_true, y_pred, from_logits=False, label_smoothing=0.0, axis=-1):
    """Categorical cross-entropy over the class axis ``axis``.

    Smoothed labels ``y' = y (1 - ls) + ls / C`` with ``C`` the size of ``axis``. On
    probabilities: ``-sum(y' log clip(p / sum(p)))`` (renormalised, then clipped). On
    logits: ``-sum(y' log_softmax(z))``, exact.

    The study notes' example:

    >>> y_true = [[1., 0., 0.], [0., 1., 0.], [0., 0., 1.]]
    >>> y_pred = [[.9, .05, .05], [.05, .89, .06], [.05, .01, .94]]
    >>> categorical_crossentropy(y_true, y_pred).round(5)
    array([0.10536, 0.11653, 0.06188])
    """
    ev = _eval_categorical_crossentropy(y_true, y_pred, from_logits, label_smoothing, axis)
    return np.asarray(ev.value)


def _focal_q_terms(y: np.ndarray, qc: np.ndarray, m: np.ndarray, gamma: float, scale: float):
    """Per element ``t = -scale * y (1 - qc)**gamma log qc`` and ``dt/dq`` (masked).

    At ``qc == 1`` (possible only with an upper bound of 1.0) the focal derivative
    ``gamma (1 - q)**(gamma - 1) log q`` has the limit 0 for every ``gamma > 0``.
    """
    a = 1.0 - qc
    f = np.power(a, gamma)
    log_qc = np.log(qc)
    t = -scale * y * f * log_qc
    with np.errstate(invalid="ignore", divide="ignore"):
        focal = np.where(a > 0, pow_derivative(a, gamma) * log_qc, 0.0)
    h = scale * y * (focal - f / qc) * m
    # The sensitivity of h to the rounding of q (an absolute error in a = 1 - q when q
    # is near 1) is not linearised here: its derivative grows like a**(gamma - 2) as
    # a -> 0. The tolerance model evaluates h at the perturbed q instead.
    h_size = _ABS(scale * y) * (_ABS(focal) + f / qc) * m
    return t, h, h_size


@V.quiet
def _eval_categorical_focal_crossentropy(y_true, y_pred, alpha=0.25, gamma=2.0,
                                         from_logits=False, label_smoothing=0.0, axis=-1):
    yt, yp, dtype, ax = _prepare(y_true, y_pred, axis)
    gamma = V.check_gamma(gamma)
    alpha = V.check_alpha(alpha)
    from_logits = V.check_flag(from_logits, "from_logits")
    y = _smooth_categorical(yt, label_smoothing)
    p = faithful(softmax(yp), softmax_roundings(yp))[0] if from_logits else yp
    s, q, qc, m, kink = _renormalised_clip(p, dtype)
    t, h, h_size = _focal_q_terms(y, qc, m, gamma, alpha)
    grad, grad_size = _through_renormalisation(h, h_size, q, s)
    value_scale = (_ABS(t) + _ABS(h * q)).sum(-1) + 1.0
    if from_logits:
        value_scale = value_scale + (_ABS(grad) * p).sum(-1)
        grad, grad_size = _through_softmax(grad, grad_size, p)
    return Evaluation(t.sum(-1), grad, value_scale, grad_size, kink).moved(ax, yp.ndim)


def categorical_focal_crossentropy(y_true, y_pred, alpha=0.25, gamma=2.0, from_logits=False,
                                   label_smoothing=0.0, axis=-1):
    """Categorical focal cross-entropy over ``axis``.

    ``p = softmax(z)`` on logits, else ``y_pred``; ``q = clip(p / sum(p))``; per sample
    ``-sum(alpha (1 - q)**gamma y' log q)`` with ``y'`` smoothed as in
    :func:`categorical_crossentropy`.

    >>> categorical_focal_crossentropy([[0., 1., 0.]], [[0.1, 0.8, 0.1]]).round(6)
    array([0.002231])
    """
    ev = _eval_categorical_focal_crossentropy(y_true, y_pred, alpha, gamma, from_logits,
                                              label_smoothing, axis)
    return np.asarray(ev.value)


# --------------------------------------------------------------------------- sparse


@V.quiet
def _eval_sparse_categorical_crossentropy(y_true, y_pred, from_logits=False, ignore_class=None,
                                          axis=-1):
    yp, dtype = V.as_real_array(y_pred, "y_pred")
    ax = V.check_axis(axis, yp.ndim)
    V.check_class_axis_not_empty(yp, ax)
    yp = np.moveaxis(yp, ax, -1)
    n_classes = yp.shape[-1]
    labels_in = V.as_array(y_true, "y_true", "integer class labels")
    if labels_in.ndim == yp.ndim and labels_in.ndim > 0 and labels_in.shape[ax] == 1:
        labels_in = np.squeeze(labels_in, axis=ax)
    ignore_class = V.check_ignore_class(ignore_class)
    from_logits = V.check_flag(from_logits, "from_logits")
    labels = V.as_labels(labels_in, n_classes, ignore_class=ignore_class)
    if labels.shape != yp.shape[:-1]:
        raise ValueError(f"y_true: expected label shape {yp.shape[:-1]} (y_pred's shape "
                         f"without the class axis), got {labels.shape}")
    valid = np.ones(labels.shape, bool) if ignore_class is None else labels != ignore_class
    safe_labels = np.where(valid, labels, 0)
    onehot = np.zeros_like(yp)
    np.put_along_axis(onehot, safe_labels[..., None], 1.0, axis=-1)
    if from_logits:
        logits, dlogits, m = yp, np.ones_like(yp), np.ones_like(yp)
    else:
        lo, hi = clip_bounds(dtype)
        pc = np.clip(yp, lo, hi)
        logits, m = np.log(pc), inside(yp, lo, hi)
        dlogits = m / pc
    lsm = log_softmax(logits)
    sm, _ = faithful(np.exp(lsm), softmax_roundings(logits))
    value = -(onehot * lsm).sum(-1)
    grad = (sm - onehot) * dlogits
    grad_size = (sm + onehot) * _ABS(dlogits)
    big = _ABS(logits).max(-1)
    value_scale = ((sm * _ABS(logits)).sum(-1) + (onehot * _ABS(logits)).sum(-1) + big
                   + _ABS(value) + 1.0)
    vmask = valid[..., None]
    ev = Evaluation(np.where(valid, value, 0.0), np.where(vmask, grad, 0.0),
                    np.where(valid, value_scale, 1.0), np.where(vmask, grad_size, 0.0),
                    np.zeros(labels.shape, bool))
    return ev.moved(ax, yp.ndim)


def sparse_categorical_crossentropy(y_true, y_pred, from_logits=False, ignore_class=None,
                                    axis=-1):
    """Sparse categorical cross-entropy: integer labels, class axis ``axis`` of y_pred.

    On logits: ``logsumexp(z) - z[label]``. On probabilities Keras clips, takes the
    log, and applies the logits formula to the logs, which renormalises:
    ``-log(clip(p)[label] / sum(clip(p)))``. Samples whose label equals
    ``ignore_class`` get 0 (and are masked out of Keras's reduction: pass
    ``mask=y_true != ignore_class`` to :func:`reduce`). A trailing label axis of size 1
    is squeezed, as Keras does.

    >>> sparse_categorical_crossentropy([1, 2], [[0.05, 0.95, 0], [0.1, 0.8, 0.1]]).round(5)
    array([0.05129, 2.30259])
    """
    ev = _eval_sparse_categorical_crossentropy(y_true, y_pred, from_logits, ignore_class, axis)
    return np.asarray(ev.value)


# --------------------------------------------------------------------------- notes


@V.quiet
def _eval_focal_loss(y_true, y_pred, gamma=2.0):
    yt, yp, dtype, _ = _prepare(y_true, y_pred, -1)
    gamma = V.check_gamma(gamma)
    lo, _hi = clip_bounds(dtype)
    p, _ = faithful(softmax(yp), softmax_roundings(yp))
    qc, m = np.clip(p, lo, 1.0), inside(p, lo, 1.0)
    kink = near_bounds(p, lo, None, yp.shape[-1])
    t, h, h_size = _focal_q_terms(yt, qc, m, gamma, 1.0)
    grad, grad_size = _through_softmax(h, h_size, p)
    value_scale = (_ABS(t) + _ABS(h * p)).sum(-1) + 1.0
    return Evaluation(t.sum(-1), grad, value_scale, grad_size, kink)


def focal_loss(y_true, y_pred, gamma=2.0):
    """The study notes' focal loss, per sample.

    ``p = clip(softmax(y_pred), eps, 1.0)`` (softmax of *whatever* it is given, upper
    bound 1.0, not ``1 - eps``) and ``-sum(y (1 - p)**gamma log p)`` over the last axis.
    The notes' ``alpha`` is unused, so it is not an argument here.

    >>> focal_loss([[0., 1.]], [[0., 0.]], gamma=2.0).round(6)   # p = [0.5, 0.5]
    array([0.173287])
    """
    return np.asarray(_eval_focal_loss(y_true, y_pred, gamma).value)


def _sparse_to_dense(y_true, y_pred, class_num):
    yp, _ = V.as_real_array(y_pred, "y_pred")
    class_num = V.check_class_num(class_num, yp)
    labels_in = V.as_array(y_true, "y_true", "integer class labels")
    if labels_in.ndim == yp.ndim and labels_in.shape[-1:] == (1,):
        labels_in = labels_in[..., 0]
    labels = V.as_labels(labels_in, class_num)
    if labels.shape != yp.shape[:-1]:
        raise ValueError(f"y_true: expected label shape {yp.shape[:-1]}, got {labels.shape}")
    onehot = np.zeros(yp.shape, dtype=np.float64)
    np.put_along_axis(onehot, labels[..., None], 1.0, axis=-1)
    return onehot


@V.quiet
def _eval_sparse_focal_loss(y_true, y_pred, gamma=2.0, class_num=10):
    return _eval_focal_loss(_sparse_to_dense(y_true, y_pred, class_num),
                            np.asarray(y_pred), gamma)


def sparse_focal_loss(y_true, y_pred, gamma=2.0, class_num=10):
    """The notes' ``SparseFocalLoss``: :func:`focal_loss` of ``one_hot(y_true, class_num)``.

    Labels must lie in ``[0, class_num)``: TensorFlow's ``one_hot`` silently maps other
    labels to an all-zero row (loss 0); the reference refuses them.

    >>> sparse_focal_loss([1], [[0., 0.]], class_num=2).round(6)
    array([0.173287])
    """
    return np.asarray(_eval_sparse_focal_loss(y_true, y_pred, gamma, class_num).value)


def evaluators_by_name() -> dict[str, Callable[..., Evaluation]]:
    """Reference name -> the function returning its :class:`Evaluation`, from the
    records of :mod:`lossverify.catalogue` (imported here, not at the top: the catalogue
    imports the reference functions)."""
    from lossverify.catalogue import RECORDS

    return {name: record.evaluator for name, record in RECORDS.items()}


def evaluate(name: str, y_true: Any, y_pred: Any, **params: Any) -> Evaluation:
    """Evaluate reference ``name`` with its gradient and error scales; see :class:`Evaluation`."""
    evaluators = evaluators_by_name()
    fn = evaluators[V.check_choice(name, sorted(evaluators), "name")]
    return fn(y_true, y_pred, **params)


def value_and_grad(name: str, y_true: Any, y_pred: Any, **params: Any):
    """``(per-sample values, d values / d y_pred)`` for reference ``name``."""
    ev = evaluate(name, y_true, y_pred, **params)
    return ev.value, ev.grad
