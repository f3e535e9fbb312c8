"""The tolerance model: how far a correct implementation may be from the reference.

NumPy only (no TensorFlow, no Hypothesis): any test suite can size its comparisons with
:func:`budget`, and :func:`lossverify.verify` uses nothing else.

What "correct" means
====================
An implementation is correct if it evaluates the loss (and autodiff its gradient) by
*some* standard formula, every intermediate result *faithfully* rounded in the dtype
it computes in (to either floating-point neighbour of its exact value: any CPU, SIMD
lane, batch size, summation order, FMA or not, reciprocal-multiply, ``exp(log_softmax)``,
``logsumexp``, stable logits forms). The budget must hold for every such evaluation
(no false alarm) and be finite and tight wherever the reference is finite (no hole).

The budget, per element
=======================
::

    allowed = K u (n + 1) scale  +  spread  +  tiny / u

``K u (n + 1) scale`` (first order)
    The reference computes ``scale`` (``Evaluation.value_scale``, ``grad_scale``) from
    its own float64 terms on the inputs the implementation sees: the sum of the absolute
    sizes of every quantity a floating-point evaluation adds, subtracts or takes the log
    of (terms, ``|dL/dv| |v|`` for intermediates whose relative error the loss passes
    on, 1 per logarithm of a number near 1). A correct evaluation with unit roundoff
    ``u`` errs by a small multiple of ``u * scale``; ``n + 1`` allows an ``n``-term sum
    along the class axis in any order, ``K = 4`` the handful of roundings inside a term
    (a ``log``, a ``pow``, a division, a product with a label). Set from that count.

``spread`` (the nonlinear part)
    Where ``1 - p`` is of the order of the rounding of ``p`` (a saturated softmax or
    sigmoid, ``p_t`` near 1), first-order analysis fails both ways: the focal factor's
    derivative ``(1 - p)**(gamma - 2)`` is unbounded (a budget that grows without
    bound is a hole), and a rounding of ``p`` to ``1 - 2**-24`` instead of ``1`` moves
    a gradient of 1e-27 to 1e-23, far more than its linearisation says (a false
    alarm on another CPU). So the reference is *evaluated again*, exactly, with each
    rounding-sensitive intermediate (softmax and sigmoid outputs, renormalised
    probabilities, ``1 - p_t``) moved by its largest faithful rounding error, ``c u``
    relative with ``c`` the number of roundings that reach it (``n + 2 + 2 |z - max z|``
    for a softmax, ``n`` for ``p / sum(p)``, 2 for a sigmoid (plus ``|z| sigmoid(-z)`` in
    from-logits cross-entropy: exp's argument), 4 for ``p_t``): down,
    up, and alternating between classes (:data:`PATTERNS`). ``spread`` is the largest
    change of each element over those evaluations and twice the change that
    evaluating the reference formulas in the implementation's own dtype makes (a
    float32 softmax that rounds to exactly 1.0), which another evaluation order may
    make with the other sign. Both are finite wherever the reference is.

``tiny / u``
    TensorFlow's CPU kernels flush subnormals to zero, intermediates included, so a
    product of small factors can lose a result of 1e-37 entirely: 2e-31 in float32.

Non-finite results: NaN or Inf where the reference is finite always fails (the budget
is finite there); an element the dtype cannot represent (a float16 gradient beyond
65504, where even the implementation's-dtype evaluation is not finite) gets an
infinite allowance and is not compared.

A reduced value (a ``keras.losses.Loss``) gets the weighted mean of the per-sample
budgets plus the rounding of the final sum and division; a gradient through a cast from
a narrower input dtype, twice that dtype's ``u`` relative.

How tight (measured, ``tests/test_adversaries.py``): the rounding adversary
(:class:`lossverify.adversary.RoundingAdversary`), which rounds every intermediate of
the real TensorFlow losses to a random neighbour, stays below the budget for every
correct loss; the README gives the worst ratios and the smallest relative
perturbation of a value or gradient element the budget detects per regime.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from lossverify import numerics
from lossverify import reference as R
from lossverify.reference import _core
from lossverify.reference import overlap as _overlap

__all__ = ["K", "PATTERNS", "Budget", "allowed", "budget", "unit_roundoff", "underflow"]

#: Safety factor on the first-order rounding bound; see the module docstring.
K = 4.0

#: Directions in which the rounding-sensitive intermediates are moved (the spread).
PATTERNS = ("down", "up", "alternate", "alternate-neg")

unit_roundoff = numerics.unit_roundoff
underflow = numerics.underflow


def allowed(scale: np.ndarray, n_terms: int, dtype: str = "float32",
            spread: np.ndarray | None = None) -> np.ndarray:
    """The allowed absolute error ``K u (n + 1) scale + spread + tiny / u``
    (non-finite entries of ``spread`` count as 0)."""
    u = unit_roundoff(dtype)
    out = K * u * (n_terms + 1) * np.asarray(scale, dtype=np.float64) + underflow(dtype)
    if spread is not None:
        s = np.abs(np.asarray(spread, dtype=np.float64))
        out = out + np.where(np.isfinite(s), s, 0.0)
    return out


@dataclass(frozen=True)
class Budget:
    """The reference's answer for one batch, shaped like the loss's own output, with
    the allowed absolute error of each element."""

    value: np.ndarray
    value_allowed: np.ndarray
    grad: np.ndarray
    grad_allowed: np.ndarray
    grad_rows: np.ndarray  # bool per y_pred element: compare the gradient here
    kink_rows: int
    dtype: str = "float32"  # the dtype the implementation computes in (for ULP counts)


def _as_float64(ev: R.Evaluation) -> R.Evaluation:
    return R.Evaluation(*(f if f.dtype == bool else np.asarray(f, np.float64)
                          for f in (ev.value, ev.grad, ev.value_scale, ev.grad_scale,
                                    ev.kink)))


#: :func:`spread`'s results by what they depend on (at most :data:`_SPREAD_KEPT`): a
#: setting's class and function runs share their draws, and a batch is budgeted for
#: several checks; about half of a default run's calls repeat one. Read-only arrays.
_SPREAD_MEMO: OrderedDict[tuple[Any, ...], tuple[Any, ...]] = OrderedDict()
_SPREAD_KEPT = 512


def _array_key(a: Any) -> tuple[Any, ...]:
    a = np.ascontiguousarray(a)
    return a.dtype.str, a.shape, hashlib.blake2b(a.tobytes(), digest_size=16).digest()


def _read_only(ev: R.Evaluation) -> R.Evaluation:
    for f in (ev.value, ev.grad, ev.value_scale, ev.grad_scale, ev.kink):
        f.setflags(write=False)
    return ev


def spread(reference: str, params: Mapping[str, Any], y_true: Any, y_pred: Any,
           dtype: str, exact: R.Evaluation | None = None
           ) -> tuple[R.Evaluation, R.Evaluation, np.ndarray, np.ndarray]:
    """``(exact evaluation, evaluation in dtype, value spread, gradient spread)``; see the
    module docstring. Without ``exact``, memoized on the inputs, the parameters, the
    dtype and the references' ambient state (a perturbation, Circle's input rounding);
    the arrays returned are read-only."""
    if exact is not None:
        return _spread(reference, params, y_true, y_pred, dtype, exact)
    key = (reference, repr(sorted(params.items())), dtype, _array_key(y_true),
           _array_key(y_pred), _core._PERTURB["u"], _core._PERTURB["pattern"],
           _core._COMPUTE["dtype"].str, _overlap._INPUT_U["u"])
    found = _SPREAD_MEMO.get(key)
    if found is None:
        ev, low, v, g = _spread(reference, params, y_true, y_pred, dtype, None)
        for a in (v, g):
            a.setflags(write=False)
        found = (_read_only(ev), _read_only(low), v, g)
        _SPREAD_MEMO[key] = found
        if len(_SPREAD_MEMO) > _SPREAD_KEPT:
            _SPREAD_MEMO.popitem(last=False)
    else:
        _SPREAD_MEMO.move_to_end(key)
    return found


def _spread(reference: str, params: Mapping[str, Any], y_true: Any, y_pred: Any,
            dtype: str, exact: R.Evaluation | None
            ) -> tuple[R.Evaluation, R.Evaluation, np.ndarray, np.ndarray]:
    hi = np.longdouble if dtype == "float64" else np.float64
    with np.errstate(all="ignore"):
        if exact is None:
            with R.computing_in(hi):
                exact = _as_float64(R.evaluate(reference, y_true, y_pred, **params))
        with R.computing_in(numerics.np_dtype(dtype)):
            low = _as_float64(R.evaluate(reference, y_true, y_pred, **params))
        value_spread = 2.0 * _finite_abs(low.value - exact.value)
        grad_spread = 2.0 * _finite_abs(low.grad - exact.grad)
        for pattern in PATTERNS:
            with R.computing_in(hi), R.perturbing(unit_roundoff(dtype), pattern):
                moved = _as_float64(R.evaluate(reference, y_true, y_pred, **params))
            value_spread = np.maximum(value_spread, _finite_abs(moved.value - exact.value))
            grad_spread = np.maximum(grad_spread, _finite_abs(moved.grad - exact.grad))
    return exact, low, value_spread, grad_spread


def _finite_abs(d: np.ndarray) -> np.ndarray:
    d = np.abs(np.asarray(d, np.float64))
    return np.where(np.isfinite(d), d, 0.0)


def budget(reference: str, params: Mapping[str, Any], y_true: Any, y_pred: Any, *,
           dtype: str = "float32", input_dtype: str | None = None,
           sample_weight: Any = None, reduced: bool = False,
           reduction: str = "sum_over_batch_size") -> Budget:
    """The reference on ``(y_true, y_pred)`` with the allowed error of each element.

    ``dtype`` is the precision the implementation computes in; ``input_dtype`` (default
    ``dtype``) the one its ``y_pred`` arrives in, when narrower (a ``keras.losses.Loss``
    casts float16 inputs to float32: the gradient flows back through that cast).
    ``reduced`` gives the budget of a ``keras.losses.Loss``'s reduced value (with
    ``sample_weight`` and ``reduction``), else per sample. ``y_pred`` must already hold
    the values the implementation sees (rounded to ``dtype``).
    """
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    rounded_to = 0.0
    if y_pred.dtype.kind == "V":  # bfloat16 (ml_dtypes): the references take float32
        y_pred, rounded_to = y_pred.astype(np.float32), unit_roundoff("bfloat16")
    if y_true.dtype.kind == "V":
        y_true = y_true.astype(np.float32)
    with _overlap.inputs_rounded_to(rounded_to):  # Circle's kink reach (its distances)
        ev, low, v_spread, g_spread = spread(reference, params, y_true, y_pred, dtype)
    axis = params.get("axis", -1)
    if reference in _overlap.NAMES:  # sums over other axes than a class axis (Dice: all)
        n_terms = _overlap.reduction_terms(reference, np.shape(y_pred), params)
    else:
        n_terms = int(np.shape(y_pred)[axis])
    with np.errstate(invalid="ignore", over="ignore"):
        v_allowed = allowed(ev.value_scale, n_terms, dtype, v_spread)
        g_allowed = allowed(ev.grad_scale, n_terms, dtype, g_spread)
    if numerics.np_dtype(dtype).itemsize == 2:
        # where the dtype itself cannot hold the answer, nothing is compared
        v_allowed = np.where(np.isfinite(low.value), v_allowed, np.inf)
        g_allowed = np.where(np.isfinite(low.grad), g_allowed, np.inf)
    if reference in _overlap.NAMES:
        kink = _overlap.kink_to_grad(reference, ev.kink, np.shape(y_pred), params)
    else:
        kink = np.broadcast_to(np.expand_dims(ev.kink, axis), ev.grad.shape)
    if not reduced:
        out = Budget(ev.value, v_allowed, ev.grad, g_allowed, ~kink, int(ev.kink.sum()), dtype)
    else:
        out = _reduced(reference, params, y_true, y_pred, ev, v_allowed, g_allowed, kink,
                       sample_weight, reduction, dtype, n_terms)
    narrow = input_dtype or dtype
    if unit_roundoff(narrow) > unit_roundoff(dtype):
        # the gradient flows back through the cast to the narrower input dtype
        widen = 2 * unit_roundoff(narrow) * np.abs(out.grad) + numerics.tiny(narrow)
        # beyond the input dtype's range the gradient cannot be represented: not compared
        g = np.where(np.abs(out.grad) > numerics.max_finite(narrow), np.inf,
                     out.grad_allowed + widen)
        out = Budget(out.value, out.value_allowed, out.grad, g, out.grad_rows, out.kink_rows,
                     out.dtype)
    return out


def _reduced(reference: str, params: Mapping[str, Any], y_true: np.ndarray,
             y_pred: np.ndarray, ev: R.Evaluation, v_allowed: np.ndarray,
             g_allowed: np.ndarray, kink: np.ndarray, sample_weight: Any, reduction: str,
             dtype: str, n_terms: int) -> Budget:
    """The budget of Keras's reduction of the per-sample values (and its gradient)."""
    axis = params.get("axis", -1)
    # Circle's Loss masks the rows whose loss is 0 (no positive or no negative)
    mask = _overlap.reduction_mask(reference, y_true, params) \
        if reference in _overlap.NAMES else None
    if params.get("ignore_class") is not None:  # Keras masks the ignored labels' samples
        labels = np.asarray(y_true)
        if labels.ndim == np.ndim(y_pred):
            labels = labels[..., 0]
        mask = labels != params["ignore_class"]
    w = R.sample_weights(ev.value, sample_weight, mask, reduction)
    w = np.ones_like(ev.value) if w is None else np.broadcast_to(w, ev.value.shape)
    value = R.reduce(ev.value, sample_weight, reduction, mask)
    n = ev.value.size
    if reduction in ("sum_over_batch_size", "mean"):
        divisor = float(n)
    elif reduction == "mean_with_sample_weight" and sample_weight is not None:
        divisor = float(np.sum(w))
    else:
        divisor = 1.0
    divisor = divisor or 1.0
    u = unit_roundoff(dtype)
    weighted = np.abs(w * ev.value)
    tiny = numerics.tiny(dtype)  # TensorFlow flushes subnormal results to zero on CPU
    value_allowed = (np.sum(np.abs(w) * v_allowed) / divisor + tiny
                     + K * u * (n + 2) * (np.sum(weighted) / divisor + abs(float(value))))
    if reference in _overlap.NAMES:  # the values' shape is not y_pred's without one axis
        factor = _overlap.to_grad_shape(reference, w / divisor, np.shape(y_pred), params)
        coupled = _overlap.weighted_evaluation(reference, y_true, y_pred, w / divisor,
                                               dict(params), numerics.np_dtype(dtype))
    else:
        factor, coupled = w / divisor, None
        if factor.ndim + 1 == ev.grad.ndim:  # per-sample losses: y_pred's shape without axis
            factor = np.expand_dims(factor, axis)
        else:  # losses over several axes of y_pred (CTC: (batch,) of (batch, time, classes))
            factor = factor.reshape(factor.shape + (1,) * (ev.grad.ndim - factor.ndim))
    with np.errstate(invalid="ignore"):  # an infinite reference gradient at weight 0: NaN
        if coupled is None:
            grad = ev.grad * factor
            grad_allowed = g_allowed * np.abs(factor) + K * u * np.abs(grad) + tiny
        else:  # coupled rows (Circle): the gradient of the weighted sum, its own budget
            weighted_ev, weighted_spread = coupled
            grad = weighted_ev.grad
            grad_allowed = (allowed(weighted_ev.grad_scale, n_terms, dtype, weighted_spread)
                            + K * u * np.abs(grad) + tiny)
    return Budget(np.asarray(value), np.asarray(value_allowed), grad, grad_allowed, ~kink,
                  int(ev.kink.sum()), dtype)
