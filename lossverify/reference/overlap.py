"""Overlap losses (Dice, Tversky) and the Circle metric-learning loss, in NumPy.

Each ``_eval_<name>`` returns an :class:`~lossverify.reference.Evaluation` (values,
gradient with respect to ``y_pred``, error scales, kink flags) with Keras 3.15's exact
semantics, read from ``keras/src/losses/losses.py``:

``dice(y_true, y_pred, axis=None)``
    ``1 - 2 sum(y p) / (sum(y) + sum(p) + eps)`` with ``eps = 1e-7`` (``backend.epsilon()``,
    rounded in ``y_pred``'s dtype) in the *denominator only*: empty masks (``y = p = 0``)
    give 1, not 0. The sums run over ``axis``; ``axis=None`` sums over *every* axis,
    the batch axis included, so the result is one scalar for the whole batch (Keras's
    own docstring example has shape ``()``). Per-sample values need the non-batch axes,
    e.g. ``axis=(1, 2)`` for masks of shape ``(batch, h, w)``.

``tversky(y_true, y_pred, alpha=0.5, beta=0.5, axis=None)``
    ``1 - I / (I + alpha sum((1 - p) y) + beta sum(p (1 - y)) + eps)``, ``I = sum(y p)``,
    same ``eps`` and same ``axis`` semantics. Note that Keras's ``alpha`` multiplies
    ``sum((1 - p) y)``, the *false negatives* (Keras names that sum ``fp``), and ``beta``
    the false positives ``sum(p (1 - y))``: the reverse of the docstring ("alpha: ...
    false positives") and of Salehi et al. 2017. The reference follows the code.
    With ``alpha = beta = 1/2`` the denominator is ``(sum(y) + sum(p)) / 2 + eps``, so
    ``tversky = 1 - 2 I / (sum(y) + sum(p) + 2 eps)``: Dice with ``2 eps`` instead of
    ``eps``. Not the same number: with ``D = sum(y) + sum(p)`` they differ by
    ``2 I eps / ((D + eps)(D + 2 eps))``, exactly 0 where ``I = 0`` (empty or disjoint
    masks) and below ``eps / 2`` for ``y, p`` in ``[0, 1]`` (``I <= D**2 / 4``), reached
    by a perfect one-pixel prediction, where the losses themselves are that small: Dice
    ``eps / (2 + eps)``, Tversky ``eps / (1 + eps)``, a factor 2 apart. An invariant
    ``tversky(alpha=beta=0.5) == dice`` holds to an *absolute* ``eps / 2`` (plus both
    budgets), not to a relative tolerance.

``circle(y_true, y_pred, ref_labels=None, ref_embeddings=None, remove_diagonal=True,
gamma=80, margin=0.4)``
    Batch-coupled: sample ``i``'s value depends on every row of the batch (pairwise
    cosine distances), so a verifier must not split, pad or fuse batches for it, nor
    evaluate a row on its own (permuting the batch permutes the values: that invariant
    holds); see :func:`batch_coupled`, which also names Dice and Tversky when their
    ``axis`` reduces over the batch axis (``axis=None``). ``y_pred`` is used as given:
    Keras does *not* L2-normalise inside (its docstring asks for normalised embeddings,
    e.g. from ``keras.layers.UnitNormalization``). A row with no positive or no negative
    has loss exactly 0, and Keras sets the mask ``loss > 0`` on the result, so
    ``keras.losses.Circle()`` averages over the other rows only (its docstring's
    "divide by the sample size" is not what it does): reduce with that mask.

Module-level helpers for an integrator: :func:`reduction_terms` (the ``n`` of the
tolerance model's ``K u (n + 1) scale``: the number of terms a reduction adds, which for
these losses is not the size of ``y_pred``'s last axis), :func:`kink_to_grad` (the
per-value kink flags broadcast onto ``y_pred``'s shape), and :func:`circle_weighted` (the
gradient of a weighted sum of Circle values, which does not factor row by row).
"""

from __future__ import annotations

import contextlib
import numbers
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np

from lossverify.reference import _core
from lossverify.reference import _validate as V
from lossverify.reference._core import EPSILON, Evaluation

__all__ = [
    "circle",
    "circle_weighted",
    "dice",
    "tversky",
]

_ABS = np.abs
_U32 = _core._U32
#: The unit roundoff of the precision y_pred was rounded to before it reached this module
#: as float32 (bfloat16, which NumPy cannot hold natively): see :func:`inputs_rounded_to`.
_INPUT_U = {"u": 0.0}


@contextlib.contextmanager
def inputs_rounded_to(u: float) -> Iterator[None]:
    """Within the block, Circle's kink reach assumes inputs (and so the implementation's
    distances) in a precision with unit roundoff ``u`` (bfloat16's 2**-8, passed here as
    float32 arrays), not just the arrays' own dtype."""
    previous = _INPUT_U["u"]
    _INPUT_U["u"] = float(u)
    try:
        yield
    finally:
        _INPUT_U["u"] = previous

#: The losses of this module.
NAMES = ("dice", "tversky", "circle")

#: Losses whose per-sample value always depends on other samples of the batch (Dice
#: and Tversky too when their ``axis`` takes in the batch axis: see :func:`batch_coupled`).
BATCH_COUPLED = frozenset({"circle"})

_INT32 = 2**31 - 1


# --------------------------------------------------------------------------- validators


def check_reduce_axes(axis: Any, ndim: int, name: str = "axis") -> tuple[int, ...]:
    """Keras's ``ops.sum`` axis: ``None`` (every axis), an int, or a tuple/list of ints.

    Returned as sorted non-negative axes. Duplicates are refused; an empty tuple means no
    reduction (Keras then returns the elementwise loss).
    """
    if axis is None:
        return tuple(range(ndim))
    if isinstance(axis, list | tuple):
        items = list(axis)
    elif isinstance(axis, numbers.Integral) and not isinstance(axis, bool | np.bool_):
        items = [axis]
    else:
        raise TypeError(f"{name}: expected None, an int or a tuple of ints, got {axis!r} "
                        f"of type {type(axis).__name__}")
    out = []
    for a in items:
        if isinstance(a, bool | np.bool_) or not isinstance(a, numbers.Integral):
            raise TypeError(f"{name}: expected None, an int or a tuple of ints, got {axis!r}")
        if not -ndim <= int(a) < ndim:
            raise ValueError(f"{name}: expected axes in [{-ndim}, {ndim - 1}] for rank "
                             f"{ndim}, got {axis!r}")
        out.append(int(a) % ndim)
    if len(set(out)) != len(out):
        raise ValueError(f"{name}: expected distinct axes, got {axis!r}")
    return tuple(sorted(out))


def check_axis_param(value: Any) -> Any:
    """Dice's and Tversky's ``axis`` before the rank is known: ``None``, an int, or a
    tuple/list of ints (the range is checked against ``y_pred``'s rank when evaluating)."""
    items = value if isinstance(value, list | tuple) else [value]
    if value is not None and any(isinstance(a, bool | np.bool_)
                                 or not isinstance(a, numbers.Integral) for a in items):
        raise TypeError(f"axis: expected None, an int or a tuple of ints, got {value!r}")
    return value


def check_tversky_weight(value: Any, name: str) -> float:
    """``alpha`` or ``beta`` of Tversky: a finite number >= 0 (Keras does not check;
    a negative weight can make the denominator vanish)."""
    v = V._check_real_scalar(value, name)
    if v < 0:
        raise ValueError(f"{name}: expected a number >= 0, got {value!r}")
    return v


def check_margin(value: Any) -> float:
    """Circle's ``margin``: any finite number (the paper uses 0.25; Keras defaults 0.4)."""
    return V._check_real_scalar(value, "margin")


def check_circle_gamma(value: Any) -> float:
    """Circle's ``gamma``: a finite number >= 0 (the paper's scale; Keras defaults 80),
    checked as the focal losses' ``gamma`` is."""
    return V.check_gamma(value)


def _as_circle_labels(x: Any, name: str, n: int) -> np.ndarray:
    """Integer labels of shape ``(n,)`` or ``(n, 1)`` (Keras casts them to int32)."""
    arr = V.as_array(x, name, "integer class labels")
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name}: expected integer class labels, got dtype {arr.dtype}")
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.shape != (n,):
        raise ValueError(f"{name}: expected labels of shape ({n},) or ({n}, 1), "
                         f"got {arr.shape}")
    if arr.dtype.kind == "f":
        with np.errstate(invalid="ignore"):
            bad = ~np.isfinite(arr) | (arr != np.round(arr))
        if bad.any():
            raise ValueError(f"{name}: expected integer class labels, got non-integer "
                             f"value {arr[bad].flat[0].item()!r}")
    if arr.dtype.kind != "b" and arr.size:
        big = (arr > _INT32) | (arr < -_INT32 - 1)
        if big.any():
            raise ValueError(f"{name}: expected labels within int32 (Keras casts them), "
                             f"got {arr[big].flat[0].item()!r}")
    return arr.astype(np.int64)


# --------------------------------------------------------------------------- helpers


def _eps(dtype: np.dtype) -> Any:
    """``backend.epsilon()`` as Keras adds it: rounded in y_pred's dtype, then held in the
    compute dtype (a NumPy scalar of that dtype, so float32 arithmetic stays float32)."""
    d = np.dtype(dtype) if np.dtype(dtype).kind == "f" else np.dtype(np.float64)
    return _core.compute_dtype().type(d.type(EPSILON))


def _flatten(x: np.ndarray, axes: tuple[int, ...]) -> tuple[np.ndarray, list[int],
                                                           tuple[int, ...]]:
    """``x`` with the kept axes first and the reduced ones flattened into one last axis."""
    keep = [a for a in range(x.ndim) if a not in axes]
    perm = keep + list(axes)
    kept = tuple(x.shape[a] for a in keep)
    n = int(np.prod([x.shape[a] for a in axes], dtype=np.int64))
    return np.transpose(x, perm).reshape(kept + (n,)), perm, kept


def _unflatten(g: np.ndarray, x_shape: tuple[int, ...], perm: list[int]) -> np.ndarray:
    permuted = tuple(x_shape[a] for a in perm)
    return np.transpose(g.reshape(permuted), np.argsort(perm))


def _prepare_overlap(y_true: Any, y_pred: Any, axis: Any):
    yp, dtype = V.as_real_array(y_pred, "y_pred")
    yt, _ = V.as_real_array(y_true, "y_true")
    V.check_same_shape(yt, yp)
    axes = check_reduce_axes(axis, yp.ndim)
    y, perm, kept = _flatten(yt, axes)
    p, _, _ = _flatten(yp, axes)
    return y, p, yp.shape, perm, _eps(dtype)


def loss_shape(name: str, y_pred_shape: tuple[int, ...], params: Mapping[str, Any]
               ) -> tuple[int, ...]:
    """The shape of the values: y_pred's without the reduced axes (Dice, Tversky: ``()``
    for ``axis=None``), ``(batch,)`` for Circle."""
    shape = tuple(int(s) for s in y_pred_shape)
    if name in ("dice", "tversky"):
        axes = check_reduce_axes(params.get("axis"), len(shape))
        return tuple(n for i, n in enumerate(shape) if i not in axes)
    if name == "circle":
        return shape[:1]
    raise ValueError(f"name: expected one of {list(NAMES)}, got {name!r}")


def reduction_mask(name: str, y_true: Any, params: Mapping[str, Any]) -> np.ndarray | None:
    """The mask a ``keras.losses.Loss`` reduces with, or None. Circle: the rows with at
    least one positive and one negative (Keras masks ``loss > 0``; the others are exactly
    0), so ``sum_over_batch_size`` averages over those rows only."""
    if name != "circle":
        return None
    labels = V.as_array(y_true, "y_true", "integer class labels")
    labels = labels.reshape(labels.shape[0], -1)[:, 0] if labels.ndim == 2 else labels
    same = labels[:, None] == labels[None, :]
    pos = same.copy()
    if params.get("remove_diagonal", True):
        np.fill_diagonal(pos, False)
    return np.asarray(pos.any(-1) & (~same).any(-1))


def reduction_terms(name: str, y_pred_shape: tuple[int, ...], params: Mapping[str, Any],
                    ref_rows: int | None = None) -> int:
    """The ``n`` of the tolerance model's ``K u (n + 1) scale`` for one value.

    Dice and Tversky: the number of elements each value sums over (the product of the
    reduced axes' sizes; every element of ``y_pred`` for ``axis=None``). Circle: the
    longest sum, ``max(dim, rows)`` (a ``dim``-term dot product per pair, then
    ``rows``-term logsumexps and gradient sums, ``rows`` the reference batch).
    """
    shape = tuple(int(s) for s in y_pred_shape)
    if name in ("dice", "tversky"):
        axes = check_reduce_axes(params.get("axis"), len(shape))
        return max(int(np.prod([shape[a] for a in axes], dtype=np.int64)), 1)
    if name == "circle":
        rows = shape[0] if ref_rows is None else int(ref_rows)
        return max(shape[1], rows, 1)
    raise ValueError(f"name: expected one of {list(NAMES)}, got {name!r}")


def batch_coupled(name: str, ndim: int, params: Mapping[str, Any]) -> bool:
    """Does a value depend on more than one row of the batch (axis 0)? Then a verifier
    must not split, pad or fuse batches (nor compare a row computed alone). Circle:
    always. Dice and Tversky: when ``axis`` reduces over axis 0, as ``axis=None`` (the
    default) does; a permutation of the batch then permutes nothing (one value)."""
    if name == "circle":
        return True
    if name in ("dice", "tversky"):
        return ndim > 0 and 0 in check_reduce_axes(params.get("axis"), ndim)
    raise ValueError(f"name: expected one of {list(NAMES)}, got {name!r}")


def kink_to_grad(name: str, kink: np.ndarray, y_pred_shape: tuple[int, ...],
                 params: Mapping[str, Any]) -> np.ndarray:
    """The per-value kink flags as a mask of ``y_pred``'s shape (True: do not compare
    the gradient there). Dice/Tversky: over the reduced axes; Circle: per row (its
    kink flags already name every row a kinked pair reaches)."""
    return to_grad_shape(name, np.asarray(kink, bool), y_pred_shape, params)


def to_grad_shape(name: str, per_value: Any, y_pred_shape: tuple[int, ...],
                  params: Mapping[str, Any]) -> np.ndarray:
    """An array of the values' shape broadcast onto ``y_pred``'s shape (each value's
    entry on the elements it reduces): kink flags, per-sample weights."""
    a = np.asarray(per_value)
    shape = tuple(int(s) for s in y_pred_shape)
    if name in ("dice", "tversky"):
        axes = check_reduce_axes(params.get("axis"), len(shape))
        return np.broadcast_to(np.expand_dims(a, axes) if axes else a, shape)
    if name == "circle":
        return np.broadcast_to(a.reshape(-1, 1) if a.ndim else a, shape)
    raise ValueError(f"name: expected one of {list(NAMES)}, got {name!r}")


def weighted_evaluation(name: str, y_true: Any, y_pred: Any, weights: Any,
                        params: Mapping[str, Any], dtype: Any
                        ) -> tuple[Evaluation, np.ndarray] | None:
    """For a batch-coupled loss whose rows' gradients do not factor (Circle): the
    evaluation of ``sum_i w_i L_i`` (:func:`circle_weighted`) and its gradient spread,
    twice the change evaluating in ``dtype`` makes (see :mod:`lossverify.tolerance`).
    None for the other losses (their weighted gradient is the per-row one scaled)."""
    if name != "circle":
        return None
    dtype = np.dtype(dtype)
    with _core.computing_in(np.longdouble if dtype == np.float64 else np.float64):
        exact = circle_weighted(y_true, y_pred, weights, **params)
    with _core.computing_in(dtype):
        low = circle_weighted(y_true, y_pred, weights, **params)
    with np.errstate(all="ignore"):
        d = np.abs(np.asarray(low.grad, np.float64) - exact.grad)
    return exact, 2.0 * np.where(np.isfinite(d), d, 0.0)


def _over_square(x: np.ndarray, d: np.ndarray) -> np.ndarray:
    """``x / d / d`` (TF eager's order for the gradient of a division), NaN where the
    other order XLA uses, ``x / (d * d)``, is not finite. Only a float16 evaluation can
    meet either (``d * d`` underflows for a near-empty mask); NaN there tells the
    tolerance model the dtype cannot hold the gradient, so it is not compared."""
    with np.errstate(all="ignore"):
        other = x / (d * d)
    return np.where(np.isfinite(other), x / d / d, np.nan).astype(x.dtype)


def _overlap_evaluation(value, grad, value_scale, grad_scale, shape, perm) -> Evaluation:
    f = np.float64
    return Evaluation(np.asarray(value, f), _unflatten(grad, shape, perm).astype(f),
                      np.asarray(value_scale, f), _unflatten(grad_scale, shape, perm).astype(f),
                      np.zeros(np.shape(value), bool))


# --------------------------------------------------------------------------- dice


@V.quiet
def _eval_dice(y_true: Any, y_pred: Any, axis: Any = None) -> Evaluation:
    y, p, shape, perm, eps = _prepare_overlap(y_true, y_pred, axis)
    inter = (y * p).sum(-1)
    den = (y.sum(-1) + p.sum(-1)) + eps
    ratio = 2.0 * inter / den
    value = 1.0 - ratio
    d = den[..., None]
    i = inter[..., None]
    # In TF's autodiff order (so that a float16 evaluation overflows where TF's does:
    # -1 / eps is -inf in float16, and y * -inf is NaN where y = 0): the division sends
    # -1 / den to 2 I and 2 I / den / den to den; y * p passes y times the first (doubled),
    # each sum passes the second.
    g_num = -1.0 / d
    g_den = _over_square(2.0 * i, d)
    grad = y * (2.0 * g_num) + g_den
    inter_size = _ABS(y * p).sum(-1)
    den_size = _ABS(y).sum(-1) + _ABS(p).sum(-1) + eps
    rel_den = den_size / _ABS(den)
    # 1 - r, r = 2 I / den with I and den each carrying the error of an N-term sum:
    # |r| rel(den) + 2 sum|y p| / |den| (the latter finite where I = 0)
    value_scale = 1.0 + _ABS(ratio) * (1.0 + rel_den) + 2.0 * inter_size / _ABS(den)
    t1 = 2.0 * _ABS(y) / _ABS(d)
    t2 = 2.0 * _ABS(i) / (d * d)
    grad_scale = (t1 * (1.0 + rel_den[..., None]) + t2 * (1.0 + 2.0 * rel_den[..., None])
                  + 2.0 * inter_size[..., None] / (d * d))
    return _overlap_evaluation(value, grad, value_scale, grad_scale, shape, perm)


def dice(y_true: Any, y_pred: Any, axis: Any = None) -> np.ndarray:
    """Keras's Dice loss: ``1 - 2 sum(y p) / (sum(y) + sum(p) + eps)`` over ``axis``.

    ``eps = 1e-7`` in y_pred's dtype, in the denominator only (no numerator smoothing:
    all-zero masks give 1). ``axis=None`` reduces over every axis, the batch included
    (one scalar); pass the non-batch axes for per-sample values.

    Keras's docstring example (float64, hence the ``eps`` in the last digits):

    >>> y_true = [[[[1.], [1.]], [[0.], [0.]]], [[[1.], [1.]], [[0.], [0.]]]]
    >>> y_pred = [[[[0.], [1.]], [[0.], [1.]]], [[[.4], [0.]], [[0.], [.9]]]]
    >>> dice(y_true, y_pred, axis=(1, 2, 3)).round(7)
    array([0.5      , 0.7575758])
    >>> round(float(dice(y_true, y_pred)), 7)   # axis=None: one value for the batch
    0.6164384
    >>> dice([[0., 0.]], [[0., 0.]], axis=1)   # empty masks: 1 - 0 / eps
    array([1.])
    """
    return np.asarray(_eval_dice(y_true, y_pred, axis).value)


# --------------------------------------------------------------------------- tversky


@V.quiet
def _eval_tversky(y_true: Any, y_pred: Any, alpha: Any = 0.5, beta: Any = 0.5,
                  axis: Any = None) -> Evaluation:
    alpha = check_tversky_weight(alpha, "alpha")
    beta = check_tversky_weight(beta, "beta")
    y, p, shape, perm, eps = _prepare_overlap(y_true, y_pred, axis)
    tp = y * p
    fn_ = (1.0 - p) * y  # Keras's "fp"
    fp_ = p * (1.0 - y)  # Keras's "fn"
    inter = tp.sum(-1)
    den = inter + fn_.sum(-1) * alpha + fp_.sum(-1) * beta + eps
    t = inter / den
    value = 1.0 - t
    d = den[..., None]
    i = inter[..., None]
    # TF's autodiff order, as in dice: d(-T)/d I = -1 / den, d(-T)/d den = I / den / den
    g_num = -1.0 / d
    g_den = _over_square(i, d)
    grad = y * (g_num + g_den) - y * (g_den * alpha) + (1.0 - y) * (g_den * beta)
    inter_size = _ABS(tp).sum(-1)
    den_size = (inter_size + abs(alpha) * _ABS(fn_).sum(-1) + abs(beta) * _ABS(fp_).sum(-1)
                + eps)
    rel_den = den_size / _ABS(den)
    value_scale = 1.0 + _ABS(t) * (1.0 + rel_den) + inter_size / _ABS(den)
    weights = _ABS(y) + abs(alpha) * _ABS(y) + abs(beta) * _ABS(1.0 - y)
    r = rel_den[..., None]
    grad_scale = (_ABS(y) / _ABS(d) * (1.0 + r) + weights * _ABS(g_den) * (1.0 + 2.0 * r)
                  + weights * inter_size[..., None] / (d * d))
    return _overlap_evaluation(value, grad, value_scale, grad_scale, shape, perm)


def tversky(y_true: Any, y_pred: Any, alpha: Any = 0.5, beta: Any = 0.5,
            axis: Any = None) -> np.ndarray:
    """Keras's Tversky loss over ``axis`` (``None``: every axis, batch included).

    ``1 - I / (I + alpha sum((1 - p) y) + beta sum(p (1 - y)) + eps)``, ``I = sum(y p)``,
    ``eps = 1e-7`` in y_pred's dtype. Keras's ``alpha`` weighs the *false negatives*
    ``sum((1 - p) y)`` (its docstring says false positives).

    >>> tversky([[1., 1., 0., 0.]], [[1., 0., 0., 0.]], alpha=1.0, beta=0.0, axis=1).round(7)
    array([0.5])
    >>> tversky([[1., 1., 0., 0.]], [[1., 0., 0., 0.]], alpha=0.0, beta=1.0, axis=1).round(7)
    array([1.e-07])
    >>> round(float(tversky([[1., 0.], [0., 1.]], [[.5, .5], [.5, .5]])), 7)
    0.5
    """
    return np.asarray(_eval_tversky(y_true, y_pred, alpha, beta, axis).value)


# --------------------------------------------------------------------------- circle


def _masked_lse(x: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray,
                                                          np.ndarray]:
    """Row-wise ``logsumexp`` over ``mask`` (``-inf`` for an empty row), its max and the
    softmax weights (0 off the mask and on empty rows), in the compute dtype."""
    neg_inf = x.dtype.type(-np.inf)
    masked = np.where(mask, x, neg_inf)
    top = masked.max(-1, keepdims=True) if x.shape[-1] else np.full(x.shape[:-1] + (1,),
                                                                     neg_inf)
    shift = np.where(np.isfinite(top), top, x.dtype.type(0))
    e = np.where(mask, np.exp(masked - shift), x.dtype.type(0))
    total = e.sum(-1, keepdims=True)
    lse = np.log(total) + shift
    weights = np.where(total > 0, e / np.where(total > 0, total, 1), x.dtype.type(0))
    return lse[..., 0], top[..., 0], weights


def _circle(y_true: Any, y_pred: Any, ref_labels: Any, ref_embeddings: Any,
            remove_diagonal: Any, gamma: Any, margin: Any, sample_weight: Any
            ) -> Evaluation:
    q, source = V.as_real_array(y_pred, "y_pred")
    if q.ndim != 2:
        raise ValueError(f"y_pred: expected embeddings of shape (batch, dim), "
                         f"got shape {q.shape}")
    self_ref = ref_embeddings is None
    if self_ref:
        r = q
    else:
        r, _ = V.as_real_array(ref_embeddings, "ref_embeddings")
        if r.ndim != 2 or r.shape[1] != q.shape[1]:
            raise ValueError(f"ref_embeddings: expected shape (rows, {q.shape[1]}), "
                             f"got {r.shape}")
    labels = _as_circle_labels(y_true, "y_true", q.shape[0])
    ref = labels if ref_labels is None else _as_circle_labels(ref_labels, "ref_labels",
                                                              r.shape[0])
    if ref_labels is None and r.shape[0] != q.shape[0]:
        raise ValueError(f"ref_labels: expected labels for the {r.shape[0]} reference "
                         f"embeddings (without them y_true serves, {q.shape[0]} rows)")
    remove_diagonal = V.check_flag(remove_diagonal, "remove_diagonal")
    gamma = check_circle_gamma(gamma)
    m = check_margin(margin)
    b, n_ref = q.shape[0], r.shape[0]
    if sample_weight is None:
        w = np.ones(b, q.dtype)
    else:
        w = V.as_real_array(sample_weight, "sample_weight")[0]
        if w.shape not in ((), (b,), (b, 1)):
            raise ValueError(f"sample_weight: expected a scalar or shape ({b},), "
                             f"got {w.shape}")
        w = np.broadcast_to(w.reshape(-1) if w.ndim else w, (b,))

    pos = labels[:, None] == ref[None, :]
    neg = ~pos
    if remove_diagonal:
        pos &= ~np.eye(b, n_ref, dtype=bool)
    posf, negf = pos.astype(q.dtype), neg.astype(q.dtype)

    dot = q @ r.T
    raw = 1.0 - dot
    dist = np.maximum(raw, 0.0)
    wp_raw = (m + dist) * posf
    wp = np.maximum(wp_raw, 0.0)
    wn_raw = ((1.0 + m) - dist) * negf
    wn = np.maximum(wn_raw, 0.0)
    dp = m - dist
    dn = (1.0 - m) - dist
    a = (-1.0 * gamma) * wp * dp
    bn = gamma * wn * dn
    p_loss, a_top, pi = _masked_lse(a, pos)
    n_loss, b_top, nu = _masked_lse(bn, neg)
    s = p_loss + n_loss
    value = np.logaddexp(q.dtype.type(0), s)
    sig = _core.sigmoid(s)  # 0 at s = -inf

    # d a / d dist and d b / d dist, through TF's maximum (x >= 0 passes) and the masks
    ind_p = posf * (wp_raw >= 0)
    ind_n = negf * (wn_raw >= 0)
    alpha = -gamma * (ind_p * dp - wp)
    beta = gamma * (-ind_n * dn - wn)
    c = (w * sig)[:, None]
    g = c * (pi * alpha + nu * beta) * (raw >= 0)  # d sum_i w_i L_i / d raw_ij
    grad = -(g @ r)  # raw = 1 - q r^T
    if self_ref:  # y_pred is also the right operand of the matmul
        grad = grad - g.T @ q

    # ---- error scales (float64 from here on: sizes, not values)
    f = np.float64
    qa, ra = _ABS(q.astype(f)), _ABS(r.astype(f))
    dd, aa, bb = dist.astype(f), a.astype(f), bn.astype(f)
    pi64, nu64 = pi.astype(f), nu.astype(f)
    wp64, wn64 = wp.astype(f), wn.astype(f)
    dot_size = qa @ ra.T
    d_err = 1.0 + dot_size  # dot product, then 1 - dot
    al, be = alpha.astype(f), beta.astype(f)
    mm = abs(m)
    a_err = (_ABS(al) * d_err + gamma * (mm + dd) * _ABS(m - dd)
             + gamma * wp64 * (mm + dd) + 2.0 * _ABS(aa))
    b_err = (_ABS(be) * d_err + gamma * (1.0 + mm + dd) * _ABS((1.0 - m) - dd)
             + gamma * wn64 * (1.0 + mm + dd) + 2.0 * _ABS(bb))
    a_top64 = np.where(np.isfinite(a_top), a_top.astype(f), 0.0)
    b_top64 = np.where(np.isfinite(b_top), b_top.astype(f), 0.0)
    a_shift = np.where(pos, _ABS(aa - a_top64[:, None]), 0.0)
    b_shift = np.where(neg, _ABS(bb - b_top64[:, None]), 0.0)
    p64 = np.where(np.isfinite(p_loss), p_loss.astype(f), 0.0)
    n64 = np.where(np.isfinite(n_loss), n_loss.astype(f), 0.0)
    p_err = (pi64 * (a_err + a_shift)).sum(-1) + _ABS(p64) + 2.0 * _ABS(a_top64) + 2.0
    n_err = (nu64 * (b_err + b_shift)).sum(-1) + _ABS(n64) + 2.0 * _ABS(b_top64) + 2.0
    finite = np.isfinite(s)
    s64 = np.where(finite, s.astype(f), 0.0)
    sig64 = sig.astype(f)
    s_err = p_err + n_err + _ABS(s64)
    value64 = value.astype(f)
    value_scale = np.where(finite, sig64 * (s_err + 1.0) + _ABS(value64), 0.0)
    # the gradient: g_ij = c_i (pi_ij alpha_ij + nu_ij beta_ij)
    rel_c = (1.0 - sig64) * s_err + 2.0
    rel_pi = a_err + a_shift + (pi64 * (a_err + a_shift)).sum(-1, keepdims=True) + 2.0
    rel_nu = b_err + b_shift + (nu64 * (b_err + b_shift)).sum(-1, keepdims=True) + 2.0
    al_err = 2.0 * gamma * d_err + 2.0 * gamma * (_ABS(m - dd) + wp64) + _ABS(al)
    be_err = 2.0 * gamma * d_err + 2.0 * gamma * (_ABS((1.0 - m) - dd) + wn64) + _ABS(be)
    ca = _ABS(c.astype(f))
    g_size = ca * (pi64 * _ABS(al) * (1.0 + rel_c[:, None] + rel_pi + 1.0) + pi64 * al_err
                   + nu64 * _ABS(be) * (1.0 + rel_c[:, None] + rel_nu + 1.0) + nu64 * be_err)
    g_size = np.where(raw >= 0, g_size, 0.0)
    g_abs = _ABS(g.astype(f))
    grad_scale = (g_abs + g_size) @ ra
    if self_ref:
        grad_scale = grad_scale + (g_abs + g_size).T @ qa

    # kinks: pairs whose distance lies within rounding reach of a point where TF's
    # gradient jumps: raw = 0 for negatives (d b / d dist ~ -2 gamma there, blocked
    # below), m + dist = 0 for positives (m < 0 only), 1 + m - dist = 0 for negatives
    # (m != 0). Positives at dist = 0 have d a / d dist = 2 gamma dist = 0: no jump.
    # rounding reach of the distance: a dim-term dot product, in y_pred's dtype when that
    # is narrower than float32 (float16: 8192 times float32's)
    u_in = max(float(np.finfo(source).eps) / 2, _U32) if source.kind == "f" else _U32
    u_in = max(u_in, _INPUT_U["u"])
    reach = 4.0 * (q.shape[1] + 2) * u_in * (1.0 + mm + dot_size)
    raw64 = raw.astype(f)
    near = neg & (_ABS(raw64) <= reach)
    if m < 0:
        near |= pos & (_ABS(m + dd) <= reach)
    if m != 0:
        near |= neg & (_ABS((1.0 + m) - dd) <= reach)
    # a pair matters only to a row with a finite loss argument (else its weight is 0)
    near &= finite[:, None] & (gamma > 0)
    kink = near.any(-1)
    if self_ref:
        kink |= near.any(0)
    return Evaluation(value64, grad.astype(f), value_scale, grad_scale, kink)


@V.quiet
def _eval_circle(y_true: Any, y_pred: Any, remove_diagonal: Any = True, gamma: Any = 80.0,
                 margin: Any = 0.4) -> Evaluation:
    """Circle's evaluation with the batch as its own reference (``Circle()``'s case);
    :func:`circle` and :func:`circle_weighted` also take ``ref_labels``/``ref_embeddings``."""
    return _circle(y_true, y_pred, None, None, remove_diagonal, gamma, margin, None)


@V.quiet
def circle_weighted(y_true: Any, y_pred: Any, sample_weight: Any, ref_labels: Any = None,
                    ref_embeddings: Any = None, remove_diagonal: Any = True,
                    gamma: Any = 80.0, margin: Any = 0.4) -> Evaluation:
    """:func:`circle`'s evaluation with ``grad = d sum_i w_i L_i / d y_pred`` (and its
    scale) for per-sample weights ``w`` (shape ``(batch,)``, or a scalar).

    Circle's rows are coupled (``L_i`` depends on every embedding), so the gradient of a
    reduced Circle loss is *not* the unweighted gradient scaled row by row. For Keras's
    ``Circle()`` with ``"sum_over_batch_size"`` the weights are ``mask / valid`` with
    ``mask = L > 0`` (Keras sets that mask on the loss: the mean runs over samples that
    have at least one positive and one negative) and ``valid = sum(mask)``.
    """
    return _circle(y_true, y_pred, ref_labels, ref_embeddings, remove_diagonal, gamma,
                   margin, sample_weight)


def circle(y_true: Any, y_pred: Any, ref_labels: Any = None, ref_embeddings: Any = None,
           remove_diagonal: Any = True, gamma: Any = 80.0, margin: Any = 0.4) -> np.ndarray:
    """Keras's Circle loss (Sun et al. 2020), one value per row of ``y_pred``.

    ``d_ij = max(1 - <e_i, r_j>, 0)`` with ``r = ref_embeddings`` (default ``y_pred``,
    *not* normalised here or in Keras); positives ``P``: same label (minus ``i == j`` if
    ``remove_diagonal``), negatives ``N``: different label. With
    ``a_ij = -gamma max(m + d_ij, 0) (m - d_ij)`` and
    ``b_ij = gamma max(1 + m - d_ij, 0) (1 - m - d_ij)``:
    ``L_i = softplus(logsumexp_{j in P} a_ij + logsumexp_{j in N} b_ij)``, 0 when a row
    has no positive or no negative (``softplus(-inf)``). Batch-coupled.

    Four directions in the plane, opposite ones sharing a label: each row's positive is
    at distance 2, its two negatives at distance 1, so ``L = 80 * 3.84 - 12.8 + log 2``:

    >>> e = [[1., 0.], [0., 1.], [-1., 0.], [0., -1.]]
    >>> circle([0, 1, 0, 1], e).round(6)
    array([295.093147, 295.093147, 295.093147, 295.093147])
    >>> circle([0, 1, 2, 3], e)   # no positives anywhere
    array([0., 0., 0., 0.])
    """
    with np.errstate(all="ignore"):
        return np.asarray(_circle(y_true, y_pred, ref_labels, ref_embeddings, remove_diagonal,
                                  gamma, margin, None).value)


#: name -> function returning an :class:`Evaluation` (the package's table comes from the
#: records in :mod:`lossverify.catalogue.overlap`; this one serves this module's tests).
EVALUATIONS: dict[str, Callable[..., Evaluation]] = {
    "dice": _eval_dice,
    "tversky": _eval_tversky,
    "circle": _eval_circle,
}
