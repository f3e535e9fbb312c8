"""Keras 3's reduction of per-sample losses, with sample weights and masks."""

from __future__ import annotations

from typing import Any

import numpy as np

from lossverify.reference._validate import as_mask, as_real_array, check_choice, quiet

#: Reductions ``keras.losses.Loss`` accepts (``None`` means ``"none"``).
REDUCTIONS = ("sum_over_batch_size", "sum", "mean", "mean_with_sample_weight", "none", None)


def _same_rank(values: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Keras's ``squeeze_or_expand_to_same_rank``: fix a rank difference of one."""
    if values.ndim == weights.ndim + 1 and values.shape[-1:] == (1,):
        values = values[..., 0] if weights.ndim != 1 else values
        weights = weights[..., None] if values.ndim == weights.ndim + 1 else weights
    elif weights.ndim == values.ndim + 1 and weights.shape[-1:] == (1,):
        if values.ndim == 1:
            values = values[..., None]
        else:
            weights = weights[..., 0]
    return values, weights


def _broadcast(values: np.ndarray, weight: np.ndarray, name: str) -> np.ndarray:
    """``weight`` broadcast against ``values`` after the rank fix; errors name ``name``."""
    v, w = _same_rank(values, weight)
    try:
        return np.broadcast_to(w, np.broadcast_shapes(v.shape, w.shape)).copy()
    except ValueError:
        raise ValueError(f"{name}: expected a shape that broadcasts to the losses' shape "
                         f"{values.shape}, got {weight.shape}") from None


@quiet
def sample_weights(values: Any, sample_weight: Any = None, mask: Any = None,
                   reduction: str | None = "sum_over_batch_size") -> np.ndarray | None:
    """The effective per-sample weights Keras multiplies the losses by.

    A mask (for instance ``y_true != ignore_class``) becomes ``total / valid`` on valid
    samples and 0 elsewhere for the mean reductions (so the mean runs over valid samples
    only), and 0/1 for the others; it multiplies any ``sample_weight``.
    """
    check_choice(reduction, REDUCTIONS, "reduction")
    v, _ = as_real_array(values, "values")
    weight = None
    if sample_weight is not None:
        weight = as_real_array(sample_weight, "sample_weight")[0]
        _broadcast(v, weight, "sample_weight")
    if mask is not None:
        m = as_mask(mask)
        _broadcast(v, m, "mask")
        if reduction in ("mean", "sum_over_batch_size"):
            valid = m.sum()
            factor = m.size / valid if valid else 0.0
            float_mask = np.where(m, factor, 0.0)
        else:
            float_mask = m.astype(np.float64)
        if weight is None:
            weight = float_mask
        else:
            float_mask, weight = _same_rank(float_mask, weight)
            weight = weight * float_mask
    if weight is None:
        return None
    return _broadcast(v, weight, "sample_weight" if mask is None else "sample_weight * mask")


@quiet
def reduce(values: Any, sample_weight: Any = None, reduction: str | None = "sum_over_batch_size",
           mask: Any = None) -> np.ndarray:
    """Reduce per-sample losses as ``keras.losses.Loss.__call__`` does.

    * ``"sum_over_batch_size"`` / ``"mean"``: ``sum(values * w) / values.size``. The
      divisor is the number of loss values, *not* ``sum(w)``.
    * ``"sum"``: ``sum(values * w)``.
    * ``"mean_with_sample_weight"``: ``sum(values * w) / sum(w)`` (plain mean without w).
    * ``"none"`` / ``None``: ``values * w``, unreduced.

    Divisions are "no NaN": a zero divisor gives 0. A scalar or empty ``values`` is
    returned (weighted) unreduced, as Keras does.

    >>> reduce([1.0, 2.0, 3.0], sample_weight=[1.0, 0.0, 1.0])
    array(1.33333333)
    """
    check_choice(reduction, REDUCTIONS, "reduction")
    v, _ = as_real_array(values, "values")
    w = sample_weights(v, sample_weight, mask, reduction)
    if w is not None:
        v, w2 = _same_rank(v, w)
        v = v * w2
    if reduction in (None, "none") or v.shape in ((), (0,)):
        return np.asarray(v)
    total = v.sum()
    if reduction == "sum":
        return np.asarray(total)
    if reduction == "mean_with_sample_weight" and w is not None:
        divisor = float(np.sum(w))
    else:
        divisor = float(v.size)
    return np.asarray(total / divisor if divisor else 0.0)
