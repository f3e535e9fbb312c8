"""Margin and similarity losses: hinge, squared hinge, categorical hinge, cosine similarity.

Pure NumPy references (values, analytic gradients with respect to ``y_pred``, error
scales, kink flags) with Keras 3.15's semantics, read from ``keras/src/losses/losses.py``
and ``keras/src/ops/nn.py``:

* :func:`hinge` and :func:`squared_hinge` convert labels with Keras's
  ``convert_binary_labels_to_hinge``: if *every* label of the whole ``y_true`` array is
  exactly 0 or 1, all labels become ``2 y - 1``; otherwise (labels already -1/1, soft
  labels, a mix of -1, 0 and 1, a NaN anywhere) *no* label is converted. The decision is
  per call, not per sample: one soft label elsewhere in the batch leaves a 0 label as 0.
* :func:`categorical_hinge` takes ``neg`` as the maximum of ``(1 - y) * p`` over *all*
  classes, the target's slot included (``0 * p_t = 0`` there for one-hot labels, so
  ``neg >= 0`` whenever some label is 1).
* :func:`cosine_similarity` normalises with ``keras.ops.normalize``:
  ``x * min(rsqrt(sum(x**2)), 1 / epsilon())`` with ``epsilon() = 1e-7``, that is
  ``x / max(||x||, 1e-7)``: the norm is floored at 1e-7 (the *squared* norm at 1e-14),
  not ``tf.math.l2_normalize``'s ``1e-12`` on the squared norm (a norm floor of 1e-6).
  A zero vector normalises to zero, so its loss is 0.

Gradients follow TensorFlow's registered op gradients: ``Maximum`` sends the gradient to
its first argument where ``x >= y`` (so hinge's gradient at the margin ``y p == 1`` is
``-y / n``, the active side), ``Minimum`` where ``x <= y`` (the norm floor passes the
gradient to ``rsqrt`` up to and including the floor), and ``Max`` (a reduction) splits
the gradient equally among tied maxima. Samples within rounding reach of such a point
carry ``kink=True`` (gradient comparisons skip them; other frameworks choose other
subgradients there: ``relu`` gives 0 at the margin, JAX's ``maximum`` splits 1/2).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lossverify.reference import _validate as V
from lossverify.reference._core import _U32, EPSILON, Evaluation

__all__ = [
    "categorical_hinge",
    "convert_binary_labels_to_hinge",
    "cosine_similarity",
    "hinge",
    "squared_hinge",
]

_ABS = np.abs

#: ``keras.ops.normalize``'s cap on ``rsqrt(sum(x**2))``: ``1 / epsilon()``.
NORM_CAP = 1.0 / EPSILON


def _margin_u(dtype: np.dtype) -> float:
    """The unit roundoff that sizes kink margins: float32's, or the input dtype's where
    that is coarser (float16). Inputs are the values the implementation sees."""
    d = np.dtype(dtype)
    u = float(np.finfo(d).eps) / 2 if np.issubdtype(d, np.floating) else 0.0
    return max(_U32, u)


def _flush_reach(dtype: np.dtype) -> float:
    """Twice the smallest normal number TensorFlow's CPU kernels compute with for inputs
    of ``dtype`` (float32's, float64's for float64): they flush subnormal inputs and
    results to zero, so a subnormal may compare equal to 0."""
    d = np.dtype(dtype)
    wide = np.issubdtype(d, np.floating) and d.itemsize > 4
    return 2.0 * float(np.finfo(np.float64 if wide else np.float32).tiny)


def _last_axis(yt: np.ndarray, yp: np.ndarray) -> None:
    V.check_same_shape(yt, yp)
    if yp.ndim == 0 or yp.shape[-1] == 0:
        raise ValueError(f"y_pred: expected at least rank 1 and a non-empty last axis, "
                         f"got shape {yp.shape}")


# --------------------------------------------------------------------------- hinge


def _hinge_labels(y: np.ndarray) -> np.ndarray:
    """Keras's conversion on an array already in the compute dtype (see the public one)."""
    if np.all((y == 0) | (y == 1)):
        return 2 * y - 1
    return y


def convert_binary_labels_to_hinge(y_true: Any) -> np.ndarray:
    """Keras's label conversion for the hinge losses, decided on the whole array.

    ``2 y - 1`` if every label is exactly 0 or 1 (an empty array counts as binary),
    else the labels unchanged: -1/1 labels, soft labels, a mix of -1, 0 and 1, or a NaN
    anywhere leave every label as it is.

    >>> convert_binary_labels_to_hinge([[0., 1.], [1., 1.]])
    array([[-1.,  1.],
           [ 1.,  1.]])
    >>> convert_binary_labels_to_hinge([[0., 1.], [1., 0.5]])   # one soft label: none
    array([[0. , 1. ],
           [1. , 0.5]])
    """
    y, _ = V.as_real_array(y_true, "y_true")
    return np.asarray(_hinge_labels(y), dtype=np.float64)


def _hinge_margins(y_true: Any, y_pred: Any):
    """Converted labels, ``x = 1 - y p``, the size ``1 + |y p|`` of what ``x`` is made
    of, and the rounding reach ``m`` of ``x`` (a product and a subtraction, 8 u)."""
    yp, dtype = V.as_real_array(y_pred, "y_pred")
    yt, _ = V.as_real_array(y_true, "y_true")
    _last_axis(yt, yp)
    y = _hinge_labels(yt)
    prod = y * yp
    x = 1 - prod
    size = 1 + _ABS(prod)
    reach = 8.0 * _margin_u(dtype) * size
    return y, x, size, reach


@V.quiet
def _eval_hinge(y_true: Any, y_pred: Any) -> Evaluation:
    y, x, size, reach = _hinge_margins(y_true, y_pred)
    n = x.shape[-1]
    active = x >= 0  # tf.maximum(x, 0) passes the gradient where x >= 0
    value = np.asarray(np.mean(np.maximum(x, 0), axis=-1))
    grad = np.where(active, -y, 0.0) / n
    # max(x, 0) errs by at most x's own error, active or not; an inactive term can
    # become active only within x's rounding reach of the margin
    near = x > -reach
    value_scale = np.sum(np.where(near, size, 0.0), axis=-1) / n + value
    grad_scale = np.where(active, _ABS(y), 0.0) / n
    kink = np.any(_ABS(x) <= reach, axis=-1)
    return Evaluation(value, grad, value_scale, grad_scale, kink)


def hinge(y_true: Any, y_pred: Any) -> np.ndarray:
    """Hinge loss over the last axis: ``mean(max(1 - y' p, 0), axis=-1)``.

    ``y' = 2 y - 1`` if *all* of ``y_true`` is 0 or 1, else ``y' = y`` (see
    :func:`convert_binary_labels_to_hinge`). Its gradient at the margin ``y' p == 1``
    is TensorFlow's ``maximum`` convention, ``-y' / n`` (the active side).

    >>> hinge([[0., 1.], [0., 0.]], [[0.6, 0.4], [0.4, 0.6]])   # labels become -1/1
    array([1.1, 1.5])
    >>> hinge([[0., 1.], [1., 0.5]], [[0.6, 0.4], [0.4, 0.6]])  # a soft label: none converted
    array([0.8 , 0.65])
    """
    return np.asarray(_eval_hinge(y_true, y_pred).value)


@V.quiet
def _eval_squared_hinge(y_true: Any, y_pred: Any) -> Evaluation:
    y, x, size, reach = _hinge_margins(y_true, y_pred)
    n = x.shape[-1]
    a = np.maximum(x, 0)
    t = a * a
    value = np.asarray(np.mean(t, axis=-1))
    # continuous at the margin (0 from both sides); 0 where x is NaN, as in TensorFlow
    grad = np.where(x >= 0, -2 * y * a, 0.0) / n
    near = x > -reach
    # |(a + e)**2 - a**2| <= |e| (2 a + |e|) with |e| <= reach ~ u * size: the second
    # order term keeps a (rounded) x at the margin from being a false alarm
    value_scale = np.sum(np.where(near, size * (2 * a + reach), 0.0) + t, axis=-1) / n + value
    grad_scale = 2 * _ABS(y) * (a + np.where(near, size, 0.0)) / n
    kink = np.zeros(x.shape[:-1], dtype=bool)  # value and gradient are continuous
    return Evaluation(value, grad, value_scale, grad_scale, kink)


def squared_hinge(y_true: Any, y_pred: Any) -> np.ndarray:
    """Squared hinge loss over the last axis: ``mean(max(1 - y' p, 0)**2, axis=-1)``.

    Labels as in :func:`hinge`. The gradient ``-2 y' max(1 - y' p, 0) / n`` is
    continuous, 0 at the margin from both sides: there is no kink.

    >>> squared_hinge([[0., 1.], [0., 0.]], [[0.6, 0.4], [0.4, 0.6]]).round(12)
    array([1.46, 2.26])
    """
    return np.asarray(_eval_squared_hinge(y_true, y_pred).value)


# --------------------------------------------------------------------------- categorical


@V.quiet
def _eval_categorical_hinge(y_true: Any, y_pred: Any) -> Evaluation:
    yp, dtype = V.as_real_array(y_pred, "y_pred")
    yt, _ = V.as_real_array(y_true, "y_true")
    _last_axis(yt, yp)
    u = _margin_u(dtype)
    n = yp.shape[-1]
    prod = yt * yp
    pos = prod.sum(-1)
    others = (1 - yt) * yp
    neg = others.max(-1)
    x = neg - pos + 1
    value = np.maximum(x, 0)
    active = (x >= 0)[..., None]
    # tf.reduce_max's gradient: split equally among the tied maxima
    chosen = (others == neg[..., None]).astype(yp.dtype)
    share = chosen / chosen.sum(-1, keepdims=True)
    grad = np.where(active, (1 - yt) * share - yt, 0.0)
    # a NaN maximum ties with nothing: TensorFlow's 0 / 0 share makes the row NaN
    grad = np.where(np.isnan(neg)[..., None], np.nan, grad)
    size = _ABS(prod).sum(-1) + _ABS(neg) + 1  # pos's terms, neg and the 1
    reach = 4.0 * (n + 2) * u * size  # x: an n-term sum, two products, two additions
    value_scale = np.where(x > -reach, size, 0.0)
    grad_scale = np.where(active, _ABS(yt) + _ABS(1 - yt) * share, 0.0)
    # kinks: the margin, and (where the gradient flows) a tie for the maximum, exact,
    # within the rounding of the products (1 - y) p, or of subnormals flushed to 0
    kink = _ABS(x) <= reach
    if n > 1:
        top = np.sort(others, axis=-1)
        first, second = top[..., -1], top[..., -2]
        tie = first - second <= 8.0 * u * (_ABS(first) + _ABS(second)) + _flush_reach(dtype)
        kink |= tie & (x > -reach)
    return Evaluation(value, grad, value_scale, grad_scale, kink)


def categorical_hinge(y_true: Any, y_pred: Any) -> np.ndarray:
    """Categorical hinge loss over the last axis: ``max(neg - pos + 1, 0)``.

    ``pos = sum(y p)`` and ``neg = max((1 - y) p)`` over every class, the target's slot
    included: with one-hot labels ``neg = max(0, max of p over the other classes)``.
    Gradient (where ``neg - pos + 1 >= 0``, else 0): ``-y_j + (1 - y_j) [j ties for
    neg's maximum] / (number tied)``, TensorFlow's ``reduce_max`` convention.

    >>> categorical_hinge([[0., 1., 0.], [1., 0., 0.]],
    ...                   [[0.2, 0.5, 0.3], [0.6, 0.1, 0.9]]).round(12)
    array([0.8, 1.3])
    >>> categorical_hinge([[1., 0.]], [[0.5, -2.]])   # neg is the target's 0 * p
    array([0.5])
    """
    return np.asarray(_eval_categorical_hinge(y_true, y_pred).value)


# --------------------------------------------------------------------------- cosine


def _normalise(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``keras.ops.normalize`` over the last axis, ``x * min(rsqrt(sum(x**2)), 1 / 1e-7)``,
    in the equal form ``x / max(||x||, 1e-7)`` (whose floor stays finite in float16,
    where ``1 / 1e-7`` is not): ``(x_hat, r = 1 / max(||x||, 1e-7), ||x||)``. A zero
    vector normalises to 0."""
    norm = np.sqrt(np.sum(x * x, axis=-1, keepdims=True))
    floored = np.maximum(norm, x.dtype.type(EPSILON))
    return x / floored, 1 / floored, norm


@V.quiet
def _eval_cosine_similarity(y_true: Any, y_pred: Any, axis: Any = -1) -> Evaluation:
    yp, dtype = V.as_real_array(y_pred, "y_pred")
    yt, _ = V.as_real_array(y_true, "y_true")
    ax = V.check_axis(axis, yp.ndim)
    V.check_same_shape(yt, yp)
    V.check_class_axis_not_empty(yp, ax)
    yt, yp = np.moveaxis(yt, ax, -1), np.moveaxis(yp, ax, -1)
    n = yp.shape[-1]
    t_hat, _, _ = _normalise(yt)
    p_hat, r, norm = _normalise(yp)
    terms = t_hat * p_hat
    value = -terms.sum(-1)
    # tf.minimum passes the gradient to rsqrt where rsqrt(sum(p**2)) <= 1 / eps
    passes = norm >= EPSILON
    dot = terms.sum(-1, keepdims=True)  # t_hat . p_hat
    sizes = _ABS(terms).sum(-1, keepdims=True)
    # d/dp of -t_hat . (p r(p)): -r (t_hat - (t_hat . p_hat) p_hat) on the rsqrt side,
    # -cap t_hat where the norm is floored (a zero y_pred vector included)
    grad = np.where(passes, -r * (t_hat - dot * p_hat), -r * t_hat)
    grad_scale = np.where(passes, r * (_ABS(t_hat) + sizes * _ABS(p_hat)), r * _ABS(t_hat))
    # normalisation errors are relative to each factor: sum |t_hat p_hat| (<= 1) bounds
    # the products, the sum and the common scale errors of both rsqrts
    value_scale = sizes[..., 0] + _ABS(value)
    # TensorFlow's CPU kernels read subnormal inputs as 0, and the norm floor multiplies
    # them by up to 1e7 twice (t_hat, then the gradient -1e7 t_hat): what such an
    # element contributes may be missing entirely, not just rounded. Its terms enter
    # the scales divided by u (n + 1), so the budget allows all of them.
    tiny = _flush_reach(dtype) / 2
    gone_t = (yt != 0) & (_ABS(yt) < tiny)
    gone_p = (yp != 0) & (_ABS(yp) < tiny)
    # The backward pass multiplies the upstream gradient times -t_hat by p (the radial
    # part of the normalisation's gradient). Where |t_hat p| is tiny, that product is
    # subnormal under a reduced loss's upstream (weight / batch size: 1/2 for a batch of
    # two suffices at |t_hat p| = 1.4e-38) and flushed, taking the element's share of
    # the radial term with it (the whole gradient where that term cancels the other).
    # Upstreams down to float32's unit roundoff are covered.
    gone_tp = (terms != 0) & (_ABS(t_hat * yp) < tiny / _U32)
    if gone_t.any() or gone_p.any() or gone_tp.any():
        whole = 1.0 / (_margin_u(dtype) * (n + 1))
        lost = (_ABS(terms) * (gone_t | gone_p | gone_tp)).sum(-1, keepdims=True)
        grad_scale = grad_scale + whole * r * (_ABS(t_hat) * gone_t + lost * _ABS(p_hat)
                                               + _ABS(dot * p_hat) * gone_p)
        value_scale = value_scale + whole * lost[..., 0]
    # the floor is a kink of the gradient (its radial part jumps): within the rounding
    # reach of rsqrt(sum(p**2)) (an n-term sum, the rsqrt) of 1 / eps
    reach = 4.0 * (n + 4) * _margin_u(dtype)
    kink = (_ABS(norm / EPSILON - 1) <= reach)[..., 0]
    ev = Evaluation(value, grad, value_scale, grad_scale, kink)
    return ev.moved(ax, yp.ndim)


def cosine_similarity(y_true: Any, y_pred: Any, axis: Any = -1) -> np.ndarray:
    """Keras's cosine similarity loss: ``-sum(normalize(y) * normalize(p), axis=axis)``.

    ``normalize(x) = x * min(rsqrt(sum(x**2)), 1e7) = x / max(||x||, 1e-7)`` (Keras's
    ``epsilon() = 1e-7`` floors the *norm*). The value lies in ``[-1, 1]``: -1 for
    parallel vectors, 1 for opposite ones, 0 if either is a zero vector. Below the floor
    the loss is linear in ``y_pred``, ``-1e7 normalize(y) . p``, and so is its gradient
    ``-1e7 normalize(y)`` (also at ``p = 0``).

    Keras's own docstring example (float32 there: ``[-0., -0.99999994, 0.99999994]``):

    >>> cosine_similarity([[0., 1.], [1., 1.], [1., 1.]],
    ...                   [[1., 0.], [1., 1.], [-1., -1.]]).round(12)
    array([-0., -1.,  1.])
    >>> cosine_similarity([[3., 4.]], [[0., 1e-8]])   # a norm below 1e-7
    array([-0.08])
    """
    return np.asarray(_eval_cosine_similarity(y_true, y_pred, axis).value)
