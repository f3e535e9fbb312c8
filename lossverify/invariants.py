"""Invariants: metamorphic properties of losses, checked on Hypothesis-drawn inputs.

A value check needs a trusted reference value; an invariant needs only the mathematics.
Each relation calls the loss(es) under test on related inputs and compares the results
with each other:

==================================  ==========================================================
``non_negative``                    ``loss(x) >= 0`` (cross-entropies, focal losses, MSE)
``batch_permutation``               permuting the batch permutes per-sample losses; a
                                    reduced loss (``keras.losses.Loss``) is unchanged
``batch_split``                     a batch split in two gives the same per-sample losses;
                                    a reduced loss of two equal halves averages (``sum``:
                                    adds) to the loss of the whole
``class_matches_function``          a ``Loss`` instance equals its function's per-sample
                                    losses reduced with the instance's ``reduction`` and
                                    ``sample_weight`` (Keras's documented semantics)
``sparse_matches_dense``            a sparse loss on integer labels equals its dense twin on
                                    the one-hot rows of the same labels
``focal_gamma0_matches_cross_entropy``  focal with ``gamma = 0`` equals ``alpha`` times the
                                    cross-entropy on the same inputs
``focal_not_above_cross_entropy``   focal never exceeds ``alpha`` times the cross-entropy
                                    (the factor ``(1 - p_t)**gamma`` is at most 1)
``binary_labels_match_signs``       hinge losses: 0/1 labels (converted to -1/1 when the whole
                                    batch is 0/1) give the same losses as the -1/1 labels
``magnitude_at_most_one``           ``|loss(x)| <= 1`` (cosine similarity); a reduced loss is
                                    bounded by the same reduction of ones
``odd_in_y_pred``                   ``loss(y, -p) == -loss(y, p)`` (cosine similarity)
``swap_symmetric``                  swapping ``y_true`` and ``y_pred`` leaves the losses
                                    unchanged (MAE, MSLE, Huber, log-cosh)
``huber_matches_half_mse``          Huber with ``delta`` beyond every ``|y_pred - y_true|``
                                    is half the MSE
``kl_matches_cross_entropy_minus_entropy``  KL divergence minus categorical cross-entropy
                                    is minus the labels' entropy ``sum(y log y)`` (for
                                    normalised rows inside both clips; elsewhere the
                                    references' own difference)
``generalized_not_above_cross_entropy``  generalized cross-entropy ``(1 - p**q) / q`` never
                                    exceeds sparse cross-entropy ``-log p`` (``1 - e**-a <=
                                    a``; where the cross-entropy's clip or renormalisation
                                    lowers it, up to the references' difference)
``tversky_half_matches_dice``       Tversky at ``alpha = beta = 0.5`` equals Dice up to the
                                    references' difference (``2 eps`` vs ``eps``: < eps / 2)
``permutation_equivariant``         permuting the batch permutes a batch-coupled loss's
                                    values (Circle); a reduced loss is unchanged
``logit_shift_invariant``           adding a constant to every logit of a row (along the
                                    class axis; CTC: of a frame) leaves the losses
                                    unchanged: the loss takes a softmax of its logits
``label_padding_invariant``         more trailing zeros (the blank / mask) in CTC's label
                                    rows leave the losses unchanged
==================================  ==========================================================

Tolerance. Two float32 evaluations of mathematically equal quantities each lie within
their reference budget (:mod:`lossverify.numerics`) of the exact value, so a relation
``a == b`` allows the sum of the two budgets; ``a >= 0`` allows ``-budget``. Where two
references differ by definition (the notes' focal loss clips ``p`` to ``[eps, 1]``,
``from_logits`` cross-entropy does not clip at all), ``a - b`` is compared with the
references' own difference on the drawn input (and ``a <= b`` allows it when positive),
so the relation tests the implementations, never the clipping conventions. Nothing is
calibrated to make a test pass.

    >>> import keras, lossverify.invariants as inv                    # doctest: +SKIP
    >>> inv.check_invariant("sparse_matches_dense",
    ...                     keras.losses.sparse_categorical_crossentropy,
    ...                     keras.losses.categorical_crossentropy,
    ...                     reference="sparse_categorical_crossentropy").ok
    True
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from hypothesis import Phase
from hypothesis import strategies as st

from lossverify import checks as C
from lossverify import numerics
from lossverify import reference as R
from lossverify import specs as S
from lossverify import strategies as lst
from lossverify.reference import overlap as _overlap
from lossverify.search import run_hypothesis
from lossverify.verdict import loss_name

__all__ = ["INVARIANTS", "InvariantReport", "assert_invariant", "check_invariant"]

#: invariant name -> number of losses it takes
INVARIANTS: dict[str, int] = {
    "non_negative": 1,
    "batch_permutation": 1,
    "batch_split": 1,
    "class_matches_function": 2,
    "sparse_matches_dense": 2,
    "focal_gamma0_matches_cross_entropy": 2,
    "focal_not_above_cross_entropy": 2,
}

def _relation(reference: str, invariant: str) -> S.Relation:
    """The relation of ``reference``'s record for a two-loss ``invariant``."""
    for relation in S.get_spec(reference).relations:
        if relation.invariant == invariant:
            return relation
    raise ValueError(f"reference: {invariant} relates no other loss to {reference!r} "
                     f"(its record lists none)")


def _related(invariant: str) -> list[str]:
    """The references whose records list a relation for ``invariant``."""
    return sorted(name for name, record in S.SPECS.items()
                  if any(r.invariant == invariant for r in record.relations))


def _twin(reference: str, invariant: str, params: Mapping[str, Any]
          ) -> tuple[str, dict[str, Any], float]:
    """The other reference of ``invariant`` for ``reference``, its parameters, and the
    factor that scales its value (a focal loss's ``alpha``, else 1)."""
    relation = _relation(reference, invariant)
    factor = 1.0
    if relation.factor is not None:
        factor = float(params.get(relation.factor, _default(reference, relation.factor)))
    return relation.other, relation.other_params(params), factor


class _Violation(AssertionError):
    pass


@dataclass
class InvariantReport:
    """The result of :func:`check_invariant`."""

    invariant: str
    losses: tuple[str, ...]
    reference: str
    params: dict[str, Any]
    seed: int
    max_examples: int
    examples: int
    ok: bool
    worst_ratio: float
    message: str = ""
    counterexample: str = ""
    #: the expression that draws the batches given as ``drawn`` (the conformance run's)
    drawn_from: str = ""

    def reproduce_line(self) -> str:
        args = "".join(f", {k}={v!r}" for k, v in self.params.items())
        losses = ", ".join(f"loss{i + 1}" for i in range(len(self.losses)))
        drawn = f", drawn={self.drawn_from}" if self.drawn_from else ""
        return (f"lossverify.invariants.check_invariant({self.invariant!r}, {losses}, "
                f"reference={self.reference!r}, max_examples={self.max_examples}, "
                f"seed={self.seed}{drawn}{args})")

    def __str__(self) -> str:
        head = (f"lossverify invariant {self.invariant}: {' vs '.join(self.losses)} "
                f"(inputs for {self.reference}, {self.params or 'defaults'}) seed={self.seed}"
                f": {'OK' if self.ok else 'FAILED'} after {self.examples} examples, worst "
                f"error/allowed {self.worst_ratio:.3g}")
        if self.ok:
            return head
        lines = [head, f"  {self.message}", "  minimal counterexample:"]
        lines += ["    " + ln for ln in self.counterexample.splitlines()]
        lines.append(f"  reproduce with: {self.reproduce_line()}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {"schema": "lossverify.invariant-report/1", "invariant": self.invariant,
                "losses": list(self.losses), "reference": self.reference,
                "params": self.params, "seed": self.seed, "max_examples": self.max_examples,
                "examples": self.examples, "ok": self.ok, "worst_ratio": self.worst_ratio,
                "message": self.message, "counterexample": self.counterexample}


# ---------------------------------------------------------------------------- helpers


def _call(loss: Callable, x: lst.LossInputs, reduced: bool) -> np.ndarray:
    """The loss's value on ``x`` (eagerly) as float64; a failure to produce one is a
    violation that says why."""
    import tensorflow as tf

    args = [tf.constant(x.y_true), tf.constant(x.y_pred)]
    try:
        if reduced and x.sample_weight is not None:
            out = loss(*args, sample_weight=tf.constant(x.sample_weight))
        else:
            out = loss(*args)
        out = tf.convert_to_tensor(out)
    except Exception as exc:  # the loss under test may raise anything
        raise _Violation(f"{loss_name(loss)} raised {type(exc).__name__}: "
                         f"{C._first_line(exc)}") from None
    if not out.dtype.is_floating:
        raise _Violation(f"{loss_name(loss)} returned dtype {out.dtype.name}, expected a float")
    return np.asarray(out.numpy(), np.float64)


def _reduction(loss: Any) -> str:
    return getattr(loss, "reduction", None) or "none"


def _budget(reference: str, params: Mapping[str, Any], x: lst.LossInputs, loss: Any
            ) -> C.Expected:
    reduced = C.is_keras_loss(loss)
    return C.expected_for(reference, params, x, reduced,
                          _reduction(loss) if reduced else "none")


def _same_shape(a: np.ndarray, b: np.ndarray, what: str) -> None:
    if a.shape != b.shape:
        raise _Violation(f"{what}: shapes differ, {a.shape} vs {b.shape}")


def _equal(a: np.ndarray, b: np.ndarray, allowed: np.ndarray, what: str) -> float:
    _same_shape(a, b, what)
    cmp = numerics.compare(a, b, allowed)
    if not cmp.ok:
        raise _Violation(f"{what}: {cmp.describe()}")
    return cmp.worst_ratio


def _default(reference: str, name: str) -> Any:
    return S.get_spec(reference).parameters[name]


def _one_hot(x: lst.LossInputs, classes: int) -> lst.LossInputs:
    labels = np.asarray(x.y_true)
    if labels.ndim == x.y_pred.ndim:
        labels = labels[..., 0]
    dense = np.eye(classes, dtype=np.float32)[labels]
    return x.replace(y_true=dense)


# -------------------------------------------------------------------------- relations


def _non_negative(losses, x, reference, params, draw_int):
    (loss,) = losses
    out = _call(loss, x, C.is_keras_loss(loss))
    expected = _budget(reference, params, x, loss)
    allowed = expected.value_allowed
    # NaN propagates where the mathematics gives NaN (a class axis whose probabilities sum
    # to 0 renormalises to 0/0): only NaN where the reference is a number is a violation
    bad = np.isnan(out) & ~np.isnan(np.broadcast_to(expected.value, np.shape(out)))
    if bad.any():
        raise _Violation(f"non_negative: NaN at {np.argwhere(bad).tolist()[:4]} where the "
                         f"reference is a number")
    out = np.where(np.isnan(out), 0.0, out)
    ratio = np.where(out < 0, -out / allowed, 0.0)
    if (ratio > 1).any():
        i = np.unravel_index(int(np.argmax(ratio)), np.shape(ratio))
        raise _Violation(f"non_negative: loss {np.asarray(out)[i]:.9g} < 0 at {i} beyond "
                         f"the rounding budget {np.broadcast_to(allowed, out.shape)[i]:.3g}")
    return float(np.max(ratio, initial=0.0))


def _batch_permutation(losses, x, reference, params, draw_int):
    (loss,) = losses
    n = x.y_pred.shape[0]
    perm = np.random.default_rng(draw_int).permutation(n)
    reduced = C.is_keras_loss(loss)
    out, out_p = _call(loss, x, reduced), _call(loss, x.take_rows(perm), reduced)
    allowed = _budget(reference, params, x, loss).value_allowed
    if reduced:
        return _equal(out_p, out, 2 * allowed, f"batch_permutation {perm.tolist()}")
    return _equal(out_p, out[perm], 2 * allowed[perm], f"batch_permutation {perm.tolist()}")


def _batch_split(losses, x, reference, params, draw_int):
    (loss,) = losses
    n = x.y_pred.shape[0]
    reduced = C.is_keras_loss(loss)
    reduction = _reduction(loss) if reduced else "none"
    if reduction in ("sum_over_batch_size", "mean", "sum", "mean_with_sample_weight"):
        n -= n % 2  # reduced: equal halves
        k = n // 2
    else:
        k = 1 + draw_int % max(n - 1, 1)
    if n < 2:
        return 0.0
    if reduction == "mean_with_sample_weight":
        x = x.without_weight()
    whole = x.take_rows(np.arange(n))
    head, tail = x.take_rows(np.arange(k)), x.take_rows(np.arange(k, n))
    out = _call(loss, whole, reduced)
    parts = [_call(loss, part, reduced) for part in (head, tail)]
    budgets = [_budget(reference, params, part, loss).value_allowed
               for part in (whole, head, tail)]
    what = f"batch_split at row {k} of {n}"
    if not reduced or reduction == "none":
        return _equal(np.concatenate(parts), out, np.concatenate(budgets[1:]) + budgets[0],
                      what)
    scale = 1.0 if reduction == "sum" else 0.5
    joined = scale * (parts[0] + parts[1])
    return _equal(joined, out, scale * (budgets[1] + budgets[2]) + budgets[0], what)


def _class_matches_function(losses, x, reference, params, draw_int):
    instance, function = losses
    reduction = _reduction(instance)
    out = _call(instance, x, True)
    per_sample = _call(function, x, False)
    mask = None
    if params.get("ignore_class") is not None:
        labels = np.asarray(x.y_true)
        labels = labels[..., 0] if labels.ndim == x.y_pred.ndim else labels
        mask = labels != params["ignore_class"]
    if reference in _overlap.NAMES:  # Circle's Loss averages over the rows with loss > 0
        mask = _overlap.reduction_mask(reference, x.y_true, params)
    if per_sample.shape != _per_sample_shape(x, params, reference):
        raise _Violation(f"class_matches_function: the function returned shape "
                         f"{per_sample.shape}, expected per-sample "
                         f"{_per_sample_shape(x, params, reference)}")
    reduced = np.asarray(R.reduce(per_sample, x.sample_weight, reduction, mask))
    allowed = 2 * _budget(reference, params, x, instance).value_allowed
    return _equal(out, reduced, allowed,
                  f"class_matches_function ({reduction}, sample_weight "
                  f"{'given' if x.sample_weight is not None else 'none'})")


def _per_sample_shape(x: lst.LossInputs, params: Mapping[str, Any],
                      reference: str | None = None) -> tuple[int, ...]:
    """y_pred's shape without the class axis, or the record's input kind's ``loss_shape``
    (CTC: ``(batch,)`` of ``(batch, time, classes)``; Dice's ``axis=None``: ``()``)."""
    if reference in _overlap.NAMES:
        return _overlap.loss_shape(reference, x.y_pred.shape, params)
    axis = params.get("axis", -1)
    if reference is not None:
        kind = lst.KINDS.get(S.get_spec(reference).inputs)
        if kind is not None and kind.loss_shape is not None:
            return tuple(kind.loss_shape(tuple(x.y_pred.shape), axis))
    axis = axis % x.y_pred.ndim
    return x.y_pred.shape[:axis] + x.y_pred.shape[axis + 1:]


def _sparse_matches_dense(losses, x, reference, params, draw_int):
    sparse, dense = losses
    twin, twin_params, _ = _twin(reference, "sparse_matches_dense", params)
    xd = _one_hot(x, x.y_pred.shape[-1])
    a, b = _call(sparse, x, C.is_keras_loss(sparse)), _call(dense, xd, C.is_keras_loss(dense))
    ea, eb = _budget(reference, params, x, sparse), _budget(twin, twin_params, xd, dense)
    _same_shape(a, b, "sparse_matches_dense")
    return _equal(a - b, ea.value - eb.value, ea.value_allowed + eb.value_allowed,
                  "sparse_matches_dense: sparse - dense vs the references' difference")


def _focal_vs_cross_entropy(losses, x, reference, params, *, equal: bool):
    focal, cross = losses
    invariant = "focal_gamma0_matches_cross_entropy" if equal else \
        "focal_not_above_cross_entropy"
    ce_ref, ce_params, alpha = _twin(reference, invariant, params)
    a = _call(focal, x, C.is_keras_loss(focal))
    b = alpha * _call(cross, x, C.is_keras_loss(cross))
    ea, eb = _budget(reference, params, x, focal), _budget(ce_ref, ce_params, x, cross)
    allowed = ea.value_allowed + alpha * eb.value_allowed
    ref_gap = ea.value - alpha * eb.value
    _same_shape(a, b, "focal vs cross-entropy")
    if equal:
        return _equal(a - b, ref_gap, allowed, f"focal(gamma=0) - {alpha:g} * CE vs the "
                      "references' difference (their clipping conventions)")
    excess = a - b - np.maximum(ref_gap, 0.0)
    ratio = np.where(excess > 0, excess / allowed, 0.0)
    if np.isnan(a).any() or np.isnan(b).any() or (ratio > 1).any():
        i = np.unravel_index(int(np.nanargmax(np.where(np.isnan(ratio), np.inf, ratio))),
                             np.shape(ratio))
        raise _Violation(f"focal_not_above_cross_entropy: focal {np.asarray(a)[i]:.9g} > "
                         f"{alpha:g} * CE = {np.asarray(b)[i]:.9g} at {i} (budget "
                         f"{np.broadcast_to(allowed, a.shape)[i]:.3g})")
    return float(np.max(ratio, initial=0.0))


_RELATIONS: dict[str, Callable[..., float]] = {
    "non_negative": _non_negative,
    "batch_permutation": _batch_permutation,
    "batch_split": _batch_split,
    "class_matches_function": _class_matches_function,
    "sparse_matches_dense": _sparse_matches_dense,
    "focal_gamma0_matches_cross_entropy":
        lambda losses, x, ref, params, _: _focal_vs_cross_entropy(losses, x, ref, params,
                                                                  equal=True),
    "focal_not_above_cross_entropy":
        lambda losses, x, ref, params, _: _focal_vs_cross_entropy(losses, x, ref, params,
                                                                  equal=False),
}


# ---------------------------------------------------------------- margin family


def _binary_labels_match_signs(losses, x, reference, params, draw_int):
    """The hinge losses on 0/1 labels (every label 0 or 1: converted to 2 y - 1) and on
    the same labels written as -1/1 (not converted): the same losses."""
    (loss,) = losses
    binary = (np.asarray(x.y_true, np.float64) >= 0.5).astype(np.float32)
    xb, xs = x.replace(y_true=binary), x.replace(y_true=2 * binary - np.float32(1))
    reduced = C.is_keras_loss(loss)
    a, b = _call(loss, xb, reduced), _call(loss, xs, reduced)
    allowed = _budget(reference, params, xb, loss).value_allowed + \
        _budget(reference, params, xs, loss).value_allowed
    return _equal(a, b, allowed, "binary_labels_match_signs: 0/1 labels vs the same labels "
                  "as -1/1")


def _magnitude_at_most_one(losses, x, reference, params, draw_int):
    """``|loss| <= 1`` per sample; a reduced loss is bounded by its reduction of ones
    (non-negative weights)."""
    (loss,) = losses
    reduced = C.is_keras_loss(loss)
    out = _call(loss, x, reduced)
    expected = _budget(reference, params, x, loss)
    bound = 1.0
    if reduced:
        ones = np.ones(_per_sample_shape(x, params, reference))
        bound = float(np.abs(R.reduce(ones, x.sample_weight, _reduction(loss))))
    bad = np.isnan(out) & ~np.isnan(np.broadcast_to(expected.value, np.shape(out)))
    if bad.any():
        raise _Violation(f"magnitude_at_most_one: NaN at {np.argwhere(bad).tolist()[:4]} "
                         f"where the reference is a number")
    excess = np.abs(np.where(np.isnan(out), 0.0, out)) - bound
    ratio = np.where(excess > 0, excess / expected.value_allowed, 0.0)
    if (ratio > 1).any():
        i = np.unravel_index(int(np.argmax(ratio)), np.shape(ratio))
        raise _Violation(f"magnitude_at_most_one: |loss| = {abs(np.asarray(out)[i]):.9g} > "
                         f"{bound:g} at {i} beyond the rounding budget "
                         f"{np.broadcast_to(expected.value_allowed, out.shape)[i]:.3g}")
    return float(np.max(ratio, initial=0.0))


def _odd_in_y_pred(losses, x, reference, params, draw_int):
    """``loss(y, -p) == -loss(y, p)``."""
    (loss,) = losses
    reduced = C.is_keras_loss(loss)
    xn = x.replace(y_pred=-x.y_pred)
    a, b = _call(loss, x, reduced), _call(loss, xn, reduced)
    allowed = _budget(reference, params, x, loss).value_allowed + \
        _budget(reference, params, xn, loss).value_allowed
    return _equal(b, -a, allowed, "odd_in_y_pred: loss(y, -p) vs -loss(y, p)")


INVARIANTS.update({"binary_labels_match_signs": 1, "magnitude_at_most_one": 1,
                   "odd_in_y_pred": 1})
_RELATIONS.update({"binary_labels_match_signs": _binary_labels_match_signs,
                   "magnitude_at_most_one": _magnitude_at_most_one,
                   "odd_in_y_pred": _odd_in_y_pred})
# ----------------------------------------------------------- regression invariants


def _swap_symmetric(losses, x, reference, params, draw_int):
    (loss,) = losses
    reduced = C.is_keras_loss(loss)
    swapped = x.replace(y_true=x.y_pred, y_pred=np.asarray(x.y_true, x.y_pred.dtype))
    a, b = _call(loss, x, reduced), _call(loss, swapped, reduced)
    allowed = (_budget(reference, params, x, loss).value_allowed
               + _budget(reference, params, swapped, loss).value_allowed)
    return _equal(b, a, allowed, "swap_symmetric: loss(y_pred, y_true) vs loss(y_true, y_pred)")


def _huber_matches_half_mse(losses, x, reference, params, draw_int):
    huber, mse = losses
    twin, twin_params, _ = _twin(reference, "huber_matches_half_mse", params)
    a, b = _call(huber, x, C.is_keras_loss(huber)), 0.5 * _call(mse, x, C.is_keras_loss(mse))
    ea, eb = _budget(reference, params, x, huber), _budget(twin, twin_params, x, mse)
    _same_shape(a, b, "huber_matches_half_mse")
    # where some |y_pred - y_true| exceeds delta the references differ: compare with that
    return _equal(a - b, ea.value - 0.5 * eb.value, ea.value_allowed + 0.5 * eb.value_allowed,
                  "huber_matches_half_mse: huber - mse / 2 vs the references' difference")


INVARIANTS.update({"swap_symmetric": 1, "huber_matches_half_mse": 2})
_RELATIONS.update({"swap_symmetric": _swap_symmetric,
                   "huber_matches_half_mse": _huber_matches_half_mse})
# ------------------------------------------------------------- overlap invariants


def _tversky_half_matches_dice(losses, x, reference, params, draw_int):
    """Tversky at ``alpha = beta = 1/2`` is Dice with ``2 eps`` for ``eps``: the two
    differ by ``2 I eps / ((D + eps)(D + 2 eps)) < eps / 2`` (the references' own
    difference on the drawn input, compared like Huber's with half the MSE)."""
    tversky, dice = losses
    if params.get("alpha", 0.5) != 0.5 or params.get("beta", 0.5) != 0.5:
        raise ValueError(f"alpha: tversky_half_matches_dice holds at alpha = beta = 0.5, "
                         f"got alpha={params.get('alpha')!r}, beta={params.get('beta')!r}")
    twin, twin_params, _ = _twin(reference, "tversky_half_matches_dice", params)
    a, b = _call(tversky, x, C.is_keras_loss(tversky)), _call(dice, x, C.is_keras_loss(dice))
    ea, eb = _budget(reference, params, x, tversky), _budget(twin, twin_params, x, dice)
    _same_shape(a, b, "tversky_half_matches_dice")
    return _equal(a - b, ea.value - eb.value, ea.value_allowed + eb.value_allowed,
                  "tversky_half_matches_dice: tversky(0.5, 0.5) - dice vs the references' "
                  "difference (2 eps vs eps)")


def _permutation_equivariant(losses, x, reference, params, draw_int):
    """Permuting the batch permutes the values of a batch-coupled loss too (Circle: the
    pairwise distances permute with the rows); its reduced value is unchanged. Unlike
    ``batch_permutation`` the values are computed from sums over the batch, whose order
    the permutation changes: both batches' budgets are allowed."""
    (loss,) = losses
    n = x.y_pred.shape[0]
    perm = np.random.default_rng(draw_int).permutation(n)
    xp = x.take_rows(perm)
    reduced = C.is_keras_loss(loss)
    out, out_p = _call(loss, x, reduced), _call(loss, xp, reduced)
    allowed, allowed_p = (_budget(reference, params, x, loss).value_allowed,
                          _budget(reference, params, xp, loss).value_allowed)
    what = f"permutation_equivariant {perm.tolist()}"
    if reduced or np.ndim(out) == 0:
        return _equal(out_p, out, allowed + allowed_p, what)
    return _equal(out_p, out[perm], allowed[perm] + allowed_p, what)


INVARIANTS.update({"tversky_half_matches_dice": 2, "permutation_equivariant": 1})
_RELATIONS.update({"tversky_half_matches_dice": _tversky_half_matches_dice,
                   "permutation_equivariant": _permutation_equivariant})


# ------------------------------------------------------- probabilistic family's relations


def _probabilistic_pair(losses, x, reference, params, invariant):
    """Both losses' values on ``x``, their budgets, and the references' difference."""
    first, cross = losses
    twin, twin_params, _ = _twin(reference, invariant, params)
    a = _call(first, x, C.is_keras_loss(first))
    b = _call(cross, x, C.is_keras_loss(cross))
    ea, eb = _budget(reference, params, x, first), _budget(twin, twin_params, x, cross)
    _same_shape(a, b, invariant)
    return a, b, ea.value - eb.value, ea.value_allowed + eb.value_allowed


def _kl_matches_cross_entropy_minus_entropy(losses, x, reference, params, draw_int):
    """``KL(y, p) - CE(y, p) = sum(y log y)``, minus the labels' entropy, for normalised
    rows inside both clips. The references' difference is that there, and elsewhere
    carries the two clips' conventions (KL clips y and p to [eps, 1], CE renormalises
    p and clips it to [eps, 1 - eps]), so the relation tests the implementations only."""
    invariant = "kl_matches_cross_entropy_minus_entropy"
    a, b, ref_gap, allowed = _probabilistic_pair(losses, x, reference, params, invariant)
    return _equal(a - b, ref_gap, allowed,
                  "KL - CE vs the references' difference (minus the labels' entropy)")


def _generalized_not_above_cross_entropy(losses, x, reference, params, draw_int):
    """``(1 - p**q) / q <= -log p`` for the labelled class's ``p``. Sparse cross-entropy
    clips ``p`` to ``[eps, 1 - eps]`` and renormalises, which can make it smaller than
    ``-log p`` (``p < eps``, rows summing below 1): there the excess allowed is the
    references' own difference."""
    invariant = "generalized_not_above_cross_entropy"
    a, b, ref_gap, allowed = _probabilistic_pair(losses, x, reference, params, invariant)
    excess = a - b - np.maximum(np.nan_to_num(ref_gap, nan=0.0), 0.0)
    ratio = np.where(excess > 0, excess / allowed, 0.0)
    if np.isnan(a).any() or np.isnan(b).any() or (ratio > 1).any():
        i = np.unravel_index(int(np.nanargmax(np.where(np.isnan(ratio), np.inf, ratio))),
                             np.shape(ratio))
        raise _Violation(f"{invariant}: GCE {np.asarray(a)[i]:.9g} > CE "
                         f"{np.asarray(b)[i]:.9g} at {i} beyond the references' difference "
                         f"{np.asarray(ref_gap)[i]:.3g} (budget "
                         f"{np.broadcast_to(allowed, a.shape)[i]:.3g})")
    return float(np.max(ratio, initial=0.0))


INVARIANTS.update({"kl_matches_cross_entropy_minus_entropy": 2,
                   "generalized_not_above_cross_entropy": 2})
_RELATIONS.update({
    "kl_matches_cross_entropy_minus_entropy": _kl_matches_cross_entropy_minus_entropy,
    "generalized_not_above_cross_entropy": _generalized_not_above_cross_entropy,
})


# ------------------------------------------------------------------- CTC invariants


def _logit_shift_invariant(losses, x, reference, params, draw_int):
    """``loss(y, z + c) == loss(y, z)`` with ``c`` one integer in [-4, 4] per row of the
    class axis. ``z + c`` rounds in float32: compared with the references' own
    difference on the two inputs, so the relation tests the implementation only."""
    (loss,) = losses
    axis = params.get("axis", -1) % x.y_pred.ndim
    shape = list(x.y_pred.shape)
    shape[axis] = 1
    shift = np.random.default_rng(draw_int).integers(-4, 5, size=shape)
    moved = x.replace(y_pred=(x.y_pred + shift.astype(x.y_pred.dtype)).astype(x.y_pred.dtype))
    reduced = C.is_keras_loss(loss)
    a, b = _call(loss, moved, reduced), _call(loss, x, reduced)
    ea, eb = _budget(reference, params, moved, loss), _budget(reference, params, x, loss)
    return _equal(a - b, ea.value - eb.value, ea.value_allowed + eb.value_allowed,
                  "logit_shift_invariant: loss(y, z + c) - loss(y, z) vs the references' "
                  "difference (the rounding of z + c)")


def _label_padding_invariant(losses, x, reference, params, draw_int):
    """CTC: 1 to 3 more zero columns in ``y_true`` (padding) give the same losses."""
    (loss,) = losses
    labels = np.asarray(x.y_true)
    extra = 1 + draw_int % 3
    padded = x.replace(y_true=np.concatenate(
        [labels, np.zeros((labels.shape[0], extra), labels.dtype)], axis=1))
    reduced = C.is_keras_loss(loss)
    a, b = _call(loss, padded, reduced), _call(loss, x, reduced)
    allowed = _budget(reference, params, padded, loss).value_allowed + \
        _budget(reference, params, x, loss).value_allowed
    return _equal(a, b, allowed, f"label_padding_invariant: {extra} more zero label columns")


INVARIANTS.update({"logit_shift_invariant": 1, "label_padding_invariant": 1})
_RELATIONS.update({"logit_shift_invariant": _logit_shift_invariant,
                   "label_padding_invariant": _label_padding_invariant})

def _validate(invariant: str, losses: tuple[Callable, ...], reference: str,
              params: Mapping[str, Any]) -> None:
    if invariant not in INVARIANTS:
        raise ValueError(f"invariant: expected one of {sorted(INVARIANTS)}, got {invariant!r}")
    if len(losses) != INVARIANTS[invariant]:
        raise TypeError(f"losses: {invariant} takes {INVARIANTS[invariant]} loss(es), "
                        f"got {len(losses)}")
    for loss in losses:
        if not callable(loss):
            raise TypeError(f"losses: expected callables (y_true, y_pred) -> tensor, "
                            f"got {loss!r}")
    S.get_spec(reference)
    if invariant == "class_matches_function" and (
            not C.is_keras_loss(losses[0]) or C.is_keras_loss(losses[1])):
        raise TypeError("losses: class_matches_function takes a keras.losses.Loss instance "
                        "and a per-sample function, in that order")
    if invariant == "batch_split" and params.get("ignore_class") is not None and \
            C.is_keras_loss(losses[0]):
        raise ValueError("ignore_class: a reduced loss divides by the valid labels of each "
                         "half, so halves do not average to the whole; check the function")
    if INVARIANTS[invariant] == 2 and invariant != "class_matches_function":
        related = _related(invariant)
        if reference not in related:
            raise ValueError(f"reference: {invariant} needs one of {related} (a record "
                             f"that lists this relation), got {reference!r}")
    if invariant == "sparse_matches_dense":
        if params.get("ignore_class") is not None:
            raise ValueError("ignore_class: sparse_matches_dense has no dense twin for "
                             "ignored labels; leave ignore_class unset")
    if invariant.startswith("focal_"):
        if invariant == "focal_gamma0_matches_cross_entropy":
            if params.get("gamma", None) != 0:
                raise ValueError(f"gamma: {invariant} holds at gamma=0; build the focal "
                                 f"loss with gamma=0 and pass gamma=0, got "
                                 f"{params.get('gamma')!r}")
            if params.get("apply_class_balancing"):
                raise ValueError("apply_class_balancing: with class balancing, binary focal "
                                 "at gamma=0 is a weighted cross-entropy; leave it False")
    if invariant in ("batch_permutation", "batch_split") and params.get("axis", -1) not in (
            -1, None):
        raise ValueError(f"axis: {invariant} permutes or splits axis 0 and needs the class "
                         f"axis last (axis=-1), got {params.get('axis')!r}")


def check_invariant(invariant: str, *losses: Callable, reference: str,
                    max_examples: int = 100, seed: int | None = None,
                    drawn: Sequence[tuple[lst.LossInputs, bool]] | None = None,
                    **params: Any) -> InvariantReport:
    """Check one metamorphic relation (see the module docstring) on ``max_examples``
    batches drawn for ``reference`` with ``params``; on failure, shrink to a minimal
    counterexample. ``params`` are the reference's parameters the losses were built
    with (``gamma=0.0``, ``from_logits=True``, ...). Deterministic for a given seed.

    ``drawn``: batches already drawn for this reference and setting, as ``verify()``'s
    search phase draws them (``(batch, whether a Loss uses its sample weight)``, see
    :func:`lossverify.session.raw_strategy`): the relation runs on the first
    ``max_examples`` of them (the conformance run's draws, drawn once per setting), and
    Hypothesis draws only to shrink a violation."""
    if isinstance(max_examples, bool) or not isinstance(max_examples, int) or max_examples < 1:
        raise ValueError(f"max_examples: expected a positive int, got {max_examples!r}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise TypeError(f"seed: expected an int or None, got {seed!r}")
    seed = 0 if seed is None else seed
    _validate(invariant, losses, reference, params)
    S.check_reference_params(S.get_spec(reference), params)
    relation = _RELATIONS[invariant]
    weighted = any(C.is_keras_loss(loss) for loss in losses)
    inputs = lst.loss_inputs(reference, with_sample_weight=weighted,
                             soft_labels=invariant != "sparse_matches_dense", **params)
    strategy = st.tuples(inputs, st.booleans() if weighted else st.just(False),
                         st.integers(0, 2**32 - 1))
    state: dict[str, Any] = {"examples": 0, "worst": 0.0}

    def test(case: tuple[lst.LossInputs, bool, int]) -> None:
        x, drop_weight, draw_int = case
        if drop_weight:
            x = x.without_weight()
        if "message" not in state:
            state["examples"] += 1
        try:
            ratio = relation(losses, x, reference, params, draw_int)
        except _Violation as exc:
            state["message"], state["example"] = str(exc), repr(x)
            raise
        if "message" not in state:
            state["worst"] = max(state["worst"], ratio)

    found: dict[str, Any] = {}
    if drawn is not None:
        rng = np.random.default_rng(seed)
        for x, use_weight in drawn[:max_examples]:
            try:
                test((x, not (weighted and use_weight), int(rng.integers(2**32))))
            except _Violation:
                # Hypothesis's own search shrinks it below; where that search misses
                # it, this batch is the counterexample
                found = {k: state.pop(k) for k in ("message", "example")}
                found["examples"] = state["examples"]
                break
    if drawn is None or found:
        try:
            run_hypothesis(test, strategy, max_examples, seed,
                            (Phase.explicit, Phase.generate, Phase.shrink))
        except Exception:  # the violation, or Hypothesis's report of a flaky one
            if "message" not in state:
                raise
        if found:  # the examples were the given batches
            state["examples"] = found.pop("examples")
            for key, value in found.items():
                state.setdefault(key, value)
    failed = "message" in state
    return InvariantReport(
        invariant=invariant, losses=tuple(loss_name(loss) for loss in losses),
        reference=reference, params=dict(params), seed=seed, max_examples=max_examples,
        examples=state["examples"], ok=not failed,
        worst_ratio=float("inf") if failed else state["worst"],
        message=state.get("message", ""), counterexample=state.get("example", ""))


def assert_invariant(invariant: str, *losses: Callable, reference: str,
                     **kwargs: Any) -> InvariantReport:
    """:func:`check_invariant`, raising ``AssertionError`` with the report when violated."""
    report = check_invariant(invariant, *losses, reference=reference, **kwargs)
    if not report.ok:
        raise AssertionError(str(report))
    return report


# ---------------------------------------------------------------- conformance cases


#: Single-loss invariants that relate batches (checked on the class: its reduction is
#: what a split or permutation can break).
_BATCH_RELATIONS = ("batch_permutation", "batch_split")


def conformance_cases(spec_name: str, params: Mapping[str, Any]
                      ) -> list[tuple[str, str, tuple[tuple[S.Implementation, dict[str, Any]],
                                                      ...], str, dict[str, Any]]]:
    """The invariants the conformance run checks for one spec and parameter setting:
    ``(label, invariant, losses, reference, params)`` for Keras's and the notes' pairs,
    each loss an ``(implementation, parameters)`` pair for
    :func:`lossverify.specs.build_implementation` (listing the cases builds nothing).
    The record says which invariants hold: its single-loss ones (batch relations run on
    the class, whose reduction is what a split or permutation can break; non-negativity
    on the function) and its relations to other records (on the functions)."""
    params = dict(params)
    record = S.get_spec(spec_name)
    cases: list[tuple[str, str, tuple[tuple[S.Implementation, dict[str, Any]], ...], str,
                      dict[str, Any]]] = []
    batch_ok = params.get("axis", -1) == -1 and not record.batch_coupled
    for owner in ("keras", "notes"):
        cls, fn = record.implementation(owner, "class"), record.implementation(owner, "function")
        if cls is None or fn is None:
            continue
        cases.append((f"{cls.label} = {fn.label}", "class_matches_function",
                      ((cls, params), (fn, params)), spec_name, params))
        for inv in record.invariants:
            if inv not in _BATCH_RELATIONS:  # a property of the values: on the function
                cases.append((fn.label, inv, ((fn, params),), spec_name, params))
            elif batch_ok and not (inv == "batch_split"
                                   and params.get("ignore_class") is not None):
                cases.append((cls.label, inv, ((cls, params),), spec_name, params))
        for relation in record.relations:
            at = {**params, **relation.at}
            if not relation.holds_for(at):
                continue
            other = S.get_spec(relation.other)
            other_fn = other.implementation(owner, "function") or \
                other.implementation("keras", "function")
            if other_fn is None:
                continue
            symbol = {"focal_not_above_cross_entropy": "<=",
                      "generalized_not_above_cross_entropy": "<="}.get(relation.invariant, "=")
            shown = fn.label + ("".join(f"({k}={v:g})" for k, v in relation.at.items())
                                if relation.at else "")
            cases.append((f"{shown} {symbol} {other_fn.label}", relation.invariant,
                          ((fn, at), (other_fn, relation.other_params(at))), spec_name, at))
    return cases
