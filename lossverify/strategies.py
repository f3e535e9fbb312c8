"""Public Hypothesis strategies for loss inputs, in float32 NumPy (no TensorFlow).

Everything a loss check needs: shapes, probabilities (normalised or not, with exact 0
and 1 and values below ``1e-7``), logits (with gaps beyond 20 and 100), one-hot, soft,
binary and sparse labels, sample weights, and :func:`loss_inputs`, which draws a whole
labelled :class:`LossInputs` for a reference by name. PyTorch and JAX users can draw
the same inputs and call :mod:`lossverify.reference` on them:

>>> from hypothesis import given
>>> import lossverify.reference as R
>>> from lossverify import strategies as lst
>>> @given(lst.loss_inputs("categorical_crossentropy", from_logits=True))
... def test_mine(x):
...     expected = R.categorical_crossentropy(x.y_true, x.y_pred, from_logits=True)
...     assert expected.shape == x.y_pred.shape[:-1]
>>> test_mine()

Every draw inside :func:`loss_inputs` is labelled (``regime``, ``shape``, ...) so a
failing example says which regime produced it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lossverify.catalogue import RECORDS
from lossverify.inputs import LossInputs

try:
    from hypothesis import strategies as st
    from hypothesis.extra import numpy as hnp
except ModuleNotFoundError as _exc:  # a NumPy-only install
    from lossverify import missing_extra

    raise missing_extra(_exc, "lossverify.strategies", "strategies") from None

__all__ = [
    "KINDS",
    "InputKind",
    "LossInputs",
    "Request",
    "batch_shapes",
    "binary_labels",
    "categorical_labels",
    "logits",
    "loss_inputs",
    "probabilities",
    "sample_weights",
    "sparse_labels",
]

F32 = np.float32
#: The largest batch :func:`loss_inputs` draws by default.
DEFAULT_MAX_BATCH = 16


def _exact32(*values: float) -> tuple[float, ...]:
    """The values as exact float32 numbers (Hypothesis with NumPy 1.x refuses an array
    element that is not exactly representable in the array's dtype)."""
    return tuple(float(F32(v)) for v in values)


#: float32 values that sit on or next to the clip bounds and other edges.
EDGE_PROBABILITIES = _exact32(0.0, 1.0, 1e-7, 1.1920929e-07, 0.99999988, 0.99999994, 1e-8,
                              1e-30, 0.5)
REGIMES = ("uniform", "extreme", "peaked", "tiny", "unnormalised")
LOGIT_REGIMES = ("moderate", "gap20", "gap100", "wide")


def batch_shapes(min_batch: int = 1, max_batch: int = 16, min_classes: int = 2,
                 max_classes: int = 12, max_extra_dims: int = 1) -> st.SearchStrategy:
    """``(batch, [time,] classes)`` shapes; batch 1 and non-square shapes included."""
    return st.tuples(
        st.integers(min_batch, max_batch),
        st.lists(st.integers(1, 3), max_size=max_extra_dims),
        st.integers(min_classes, max_classes),
    ).map(lambda t: (t[0], *t[1], t[2]))


def _float32(lo: float, hi: float) -> st.SearchStrategy:
    """Finite float32 values in ``[lo, hi]`` (bounds rounded inwards to float32)."""
    lo32 = float(np.nextafter(np.float32(lo), np.float32(np.inf))) if float(np.float32(lo)) < lo \
        else float(np.float32(lo))
    hi32 = float(np.nextafter(np.float32(hi), np.float32(-np.inf))) if float(np.float32(hi)) > hi \
        else float(np.float32(hi))
    return st.floats(lo32, hi32, width=32, allow_nan=False, allow_infinity=False)


def probabilities(shape: tuple[int, ...], regime: str = "uniform",
                  normalised: bool = True) -> st.SearchStrategy:
    """Float32 probabilities of ``shape`` in one regime.

    ``uniform``: values in [0, 1]. ``extreme``: mostly exact 0, 1 and the clip edges.
    ``peaked``: one dominant class per row. ``tiny``: values below 1e-6, many below 1e-7.
    ``unnormalised``: positive rows with sums far from 1 (implies ``normalised=False``).
    With ``normalised`` rows are divided by their sum in float32 (so they sum to 1 up to
    rounding); every row is guaranteed a positive sum.
    """
    if regime not in REGIMES:
        raise ValueError(f"regime: expected one of {REGIMES}, got {regime!r}")
    elements = {
        "uniform": _float32(0.0, 1.0),
        "extreme": st.one_of(st.sampled_from(EDGE_PROBABILITIES), _float32(0.0, 1.0)),
        "peaked": _float32(0.0, 0.05),
        "tiny": st.one_of(_float32(0.0, 1e-6), st.sampled_from(_exact32(0.0, 1e-8, 9e-8, 1e-7))),
        "unnormalised": _float32(1e-3, 1.0),
    }[regime]

    def finish(pair: tuple[np.ndarray, int, float]) -> np.ndarray:
        arr, hot, scale = pair
        arr = arr.astype(F32).copy()
        if regime == "peaked":
            rows = arr.reshape(-1, shape[-1])
            rows[np.arange(rows.shape[0]), hot % shape[-1]] = F32(1.0)
        rows = arr.reshape(-1, shape[-1])
        empty = rows.sum(axis=-1) <= 0
        rows[empty, hot % shape[-1]] = F32(1.0)
        if regime == "unnormalised":
            return (arr * F32(scale)).astype(F32)
        if normalised:
            arr = (arr / arr.sum(axis=-1, keepdims=True, dtype=F32)).astype(F32)
        return arr

    return st.tuples(
        hnp.arrays(F32, shape, elements=elements),
        st.integers(0, 1000),
        st.sampled_from((1e-3, 0.1, 3.0, 250.0)),
    ).map(finish)


def logits(shape: tuple[int, ...], regime: str = "moderate") -> st.SearchStrategy:
    """Float32 logits. ``gap20``/``gap100``: one class per row leads by > 20 / > 100;
    ``wide``: values up to +-1e3 (softmax saturates in float32)."""
    if regime not in LOGIT_REGIMES:
        raise ValueError(f"regime: expected one of {LOGIT_REGIMES}, got {regime!r}")
    bound = 1e3 if regime == "wide" else 8.0
    base = hnp.arrays(F32, shape, elements=_float32(-bound, bound))
    if regime in ("moderate", "wide"):
        return base
    gap_lo = 20.0 if regime == "gap20" else 100.0

    def lift(pair: tuple[np.ndarray, int, float]) -> np.ndarray:
        """Set one class per row to the row's largest other logit plus ``gap``."""
        arr, hot, gap = pair
        arr = arr.copy()
        rows = arr.reshape(-1, shape[-1])
        idx = np.arange(rows.shape[0]), (hot + np.arange(rows.shape[0])) % shape[-1]
        others = rows.copy()
        others[idx] = -np.inf
        runner_up = np.where(shape[-1] > 1, others.max(axis=-1), rows[idx])
        rows[idx] = runner_up + F32(gap)
        return arr.astype(F32)

    # The gap starts one above the promised lead, so float32 rounding keeps it > lead.
    return st.tuples(base, st.integers(0, 1000), _float32(gap_lo + 1.0, gap_lo * 2)).map(lift)


def categorical_labels(shape: tuple[int, ...], kind: str = "one_hot") -> st.SearchStrategy:
    """Float32 labels over the last axis: ``one_hot`` rows or ``soft`` distributions."""
    if kind == "one_hot":
        return sparse_labels(shape[:-1], shape[-1]).map(
            lambda lab: np.eye(shape[-1], dtype=F32)[lab])
    if kind == "soft":
        return probabilities(shape, "uniform", normalised=True)
    raise ValueError(f"kind: expected 'one_hot' or 'soft', got {kind!r}")


def binary_labels(shape: tuple[int, ...], soft: bool = False) -> st.SearchStrategy:
    """Float32 0/1 labels, or soft labels in [0, 1] (with 0 and 1 likely)."""
    elements = st.one_of(st.sampled_from((0.0, 1.0)), _float32(0.0, 1.0)) if soft else \
        st.sampled_from((0.0, 1.0))
    return hnp.arrays(F32, shape, elements=elements)


def sparse_labels(batch_shape: tuple[int, ...], n_classes: int) -> st.SearchStrategy:
    """Int32 class indices in ``[0, n_classes)``."""
    return hnp.arrays(np.int32, batch_shape, elements=st.integers(0, n_classes - 1))


def sample_weights(batch_shape: tuple[int, ...]) -> st.SearchStrategy:
    """Non-negative float32 per-sample weights: exact 0 and 1 likely, else in [1e-3, 4].

    Weights far below 1e-3 push weighted gradients into float32 subnormals, which CPU
    kernels flush to zero eagerly and XLA does not: a real but uninteresting difference.
    """
    return hnp.arrays(F32, batch_shape,
                      elements=st.one_of(st.sampled_from((0.0, 1.0)), _float32(1e-3, 4.0)))


# ------------------------------------------------------------------ by reference name

#: How each reference's inputs are drawn: its input kind, from its record.
LABEL_KIND = {name: record.inputs for name, record in RECORDS.items()}


@dataclass(frozen=True)
class Request:
    """What :func:`loss_inputs` was asked for, handed to an input kind's drawer."""

    shape: tuple[int, ...]
    from_logits: bool = False
    soft_labels: bool = True
    ignore_class: int | None = None
    params: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class InputKind:
    """How a reference's inputs are drawn. ``draw(draw, request)`` returns
    ``(y_true, y_pred, regime, notes)`` for ``request.shape`` (y_pred's shape, class
    axis last); ``min_classes`` is the smallest class axis; ``rank2_only`` keeps y_pred
    at rank 2 (the notes' losses); ``logits``: y_pred are always logits."""

    draw: Callable[[st.DrawFn, Request], tuple[np.ndarray, np.ndarray, str, dict[str, Any]]]
    min_classes: int = 2
    rank2_only: bool = False
    logits: bool = False
    #: the shape of the per-sample losses (and sample weights) for y_pred's ``shape`` and
    #: the class ``axis``; ``None``: y_pred's shape without the class axis
    loss_shape: Callable[[tuple[int, ...], int], tuple[int, ...]] | None = None
    #: drawer parameters that fix the rest of a rank-2 request's shape (beyond batch and
    #: classes) from a generator: the xla check's draws, one XLA compile per run
    one_shape: Callable[[np.random.Generator], Mapping[str, Any]] | None = None


def _regression(draw: st.DrawFn, req: Request) -> tuple[Any, ...]:
    y_pred = draw(hnp.arrays(F32, req.shape, elements=_float32(-1e3, 1e3)), label="y_pred")
    y_true = draw(hnp.arrays(F32, req.shape, elements=_float32(-1e3, 1e3)), label="y_true")
    return y_true, y_pred, "regression", {}


def _scores(draw: st.DrawFn, req: Request, categorical: bool) -> tuple[np.ndarray, str]:
    """Logits (``from_logits``) or probabilities, normalised for a categorical loss."""
    if req.from_logits:
        regime = draw(st.sampled_from(LOGIT_REGIMES), label="regime")
        return draw(logits(req.shape, regime), label="y_pred"), regime
    regime = draw(st.sampled_from(REGIMES if categorical else REGIMES[:4]), label="regime")
    return draw(probabilities(req.shape, regime, normalised=categorical),
                label="y_pred"), regime


def _binary(draw: st.DrawFn, req: Request) -> tuple[Any, ...]:
    y_pred, regime = _scores(draw, req, categorical=False)
    return draw(binary_labels(req.shape, soft=req.soft_labels), label="y_true"), y_pred, \
        regime, {}


def _categorical(draw: st.DrawFn, req: Request) -> tuple[Any, ...]:
    y_pred, regime = _scores(draw, req, categorical=True)
    label_kind = draw(st.sampled_from(("one_hot", "soft") if req.soft_labels
                                      else ("one_hot",)), label="label_kind")
    y_true = draw(categorical_labels(req.shape, label_kind), label="y_true")
    return y_true, y_pred, regime, {"labels": label_kind}


def _sparse(draw: st.DrawFn, req: Request) -> tuple[Any, ...]:
    y_pred, regime = _scores(draw, req, categorical=True)
    y_true = draw(sparse_labels(req.shape[:-1], req.shape[-1]), label="y_true")
    if req.ignore_class is not None:
        drop = draw(hnp.arrays(np.bool_, req.shape[:-1]), label="ignored")
        y_true = np.where(drop, np.int32(req.ignore_class), y_true).astype(np.int32)
    return y_true, y_pred, regime, {}


def _with_logits(drawer: Callable[..., tuple[Any, ...]]) -> Callable[..., tuple[Any, ...]]:
    """``drawer`` on logits whatever ``from_logits`` says (losses that apply the softmax
    themselves)."""
    def draw_logits(draw: st.DrawFn, req: Request) -> tuple[Any, ...]:
        return drawer(draw, dataclasses.replace(req, from_logits=True))

    return draw_logits


# ------------------------------------------------------------------ margin family

#: hinge labels: all -1/1, all 0/1 (Keras converts them, batch-wide), soft, or a mix
#: of -1, 0 and 1 (neither converts: a 0 stays 0)
HINGE_LABELS = ("signs", "binary", "soft", "mixed")
#: hinge predictions: reals in [-3, 3]; some on the margin y p == 1 (exactly, or a few
#: ulps off); up to +-1e3
HINGE_REGIMES = ("uniform", "margin", "large")
#: categorical hinge predictions: reals; a coarse grid (ties for the maximum, a 0 tying
#: with the target's slot); rows on the margin; up to +-1e3
CATEGORICAL_HINGE_REGIMES = ("uniform", "ties", "margin", "large")
#: cosine rows: reals; zero rows; norms 1e-13..1e-4; norms around the 1e-7 floor;
#: y_pred a multiple of y_true (+-1 and a cancelling gradient); norms up to ~1e10
COSINE_REGIMES = ("normal", "zero", "tiny", "floor", "parallel", "large")
_MARGIN_GRID = _exact32(-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5, 2.0)


def _step_ulps(x: np.ndarray, ulps: np.ndarray) -> np.ndarray:
    """``x`` moved by ``ulps`` (small ints) units in the last place of float32."""
    x = x.astype(F32)
    for _ in range(int(np.abs(ulps).max(initial=0))):
        x = np.where(ulps > 0, np.nextafter(x, F32(np.inf)), x)
        x = np.where(ulps < 0, np.nextafter(x, F32(-np.inf)), x)
        ulps = ulps - np.sign(ulps)
    return x.astype(F32)


def _hinge(draw: st.DrawFn, req: Request) -> tuple[Any, ...]:
    kinds = HINGE_LABELS if req.soft_labels else HINGE_LABELS[:2]
    labels = draw(st.sampled_from(kinds), label="labels")
    values = {"signs": st.sampled_from((-1.0, 1.0)), "binary": st.sampled_from((0.0, 1.0)),
              "soft": st.one_of(st.sampled_from((0.0, 1.0)), _float32(0.0, 1.0)),
              "mixed": st.sampled_from((-1.0, 0.0, 1.0))}[labels]
    y_true = draw(hnp.arrays(F32, req.shape, elements=values), label="y_true").copy()
    flat = y_true.reshape(-1)
    if labels == "soft" and np.isin(flat, (0.0, 1.0)).all():
        flat[0] = F32(0.25)  # at least one soft label: no conversion
    if labels == "mixed" and not (flat == -1).any():
        flat[0] = F32(-1.0)
    regime = draw(st.sampled_from(HINGE_REGIMES), label="regime")
    if regime == "large":
        y_pred = draw(hnp.arrays(F32, req.shape, elements=_float32(-1e3, 1e3)), label="y_pred")
        return y_true, y_pred, regime, {"labels": labels}
    elements = _float32(-3.0, 3.0)
    if regime == "margin":
        elements = st.one_of(elements, st.sampled_from(_MARGIN_GRID))
    y_pred = draw(hnp.arrays(F32, req.shape, elements=elements), label="y_pred")
    if regime == "margin":
        # some elements exactly on the margin p = 1 / y' (y' the converted label), or a
        # few ulps off it; labels |y'| >= 1/2 keep the margin within [-2, 2]
        binary = np.isin(y_true, (0.0, 1.0)).all()
        y = 2 * y_true - 1 if binary else y_true
        on = draw(hnp.arrays(np.bool_, req.shape), label="on the margin") & (np.abs(y) >= 0.5)
        ulps = draw(hnp.arrays(np.int8, req.shape, elements=st.integers(-2, 2)),
                    label="ulps off the margin")
        with np.errstate(divide="ignore"):
            target = _step_ulps((F32(1) / np.where(y == 0, F32(1), y)).astype(F32), ulps)
        y_pred = np.where(on, target, y_pred).astype(F32)
    return y_true, y_pred, regime, {"labels": labels}


def _categorical_hinge(draw: st.DrawFn, req: Request) -> tuple[Any, ...]:
    label_kind = draw(st.sampled_from(("one_hot", "soft") if req.soft_labels
                                      else ("one_hot",)), label="label_kind")
    y_true = draw(categorical_labels(req.shape, label_kind), label="y_true")
    regime = draw(st.sampled_from(CATEGORICAL_HINGE_REGIMES), label="regime")
    elements = {"uniform": _float32(-3.0, 3.0), "ties": st.sampled_from(_MARGIN_GRID),
                "margin": st.one_of(_float32(-3.0, 3.0), st.sampled_from(_MARGIN_GRID)),
                "large": _float32(-1e3, 1e3)}[regime]
    y_pred = draw(hnp.arrays(F32, req.shape, elements=elements), label="y_pred").copy()
    if regime == "margin" and label_kind == "one_hot":
        # the target's prediction set to max(0, max of the others) + 1: the loss is 0
        # exactly at the kink, in float32 as well
        rows, targets = y_pred.reshape(-1, req.shape[-1]), y_true.reshape(-1, req.shape[-1])
        others = np.where(targets == 1, F32(0), rows).max(axis=-1)
        hot = targets.argmax(axis=-1)
        rows[np.arange(rows.shape[0]), hot] = (np.maximum(others, F32(0)) + F32(1)).astype(F32)
    return y_true, y_pred, regime, {"labels": label_kind}


def _cosine(draw: st.DrawFn, req: Request) -> tuple[Any, ...]:
    axis = int(req.params.get("axis", -1)) % len(req.shape)
    vectors = hnp.arrays(F32, req.shape, elements=_float32(-10.0, 10.0))
    y_true = draw(vectors, label="y_true")
    y_pred = draw(vectors, label="y_pred")
    regime = draw(st.sampled_from(COSINE_REGIMES), label="regime")
    # rows along the class axis: moved last to be scaled, then back
    yt, yp = np.moveaxis(y_true, axis, -1).copy(), np.moveaxis(y_pred, axis, -1).copy()
    n_rows = int(np.prod(yp.shape[:-1]))
    picked = draw(hnp.arrays(np.bool_, n_rows), label="rows changed")
    picked[0] = True
    rows_t, rows_p = yt.reshape(n_rows, -1), yp.reshape(n_rows, -1)
    rows_p[(rows_p == 0).all(axis=-1) & picked] = 1  # a zero row scaled stays 0
    norms = np.sqrt((rows_p.astype(np.float64) ** 2).sum(-1))
    norms = np.where(norms > 0, norms, 1.0)
    if regime == "zero":
        which = draw(st.sampled_from(("y_pred", "y_true", "both")), label="zero rows of")
        if which != "y_true":
            rows_p[picked] = 0
        if which != "y_pred":
            rows_t[picked] = 0
    elif regime in ("tiny", "floor", "large"):
        exponent = {"tiny": st.floats(-13.0, -4.0), "floor": st.floats(-7.3, -6.7),
                    "large": st.floats(3.0, 10.0)}[regime]
        scale = draw(hnp.arrays(np.float64, n_rows, elements=exponent), label="log10 norm")
        rows_p[picked] = (rows_p / norms[:, None] * 10.0 ** scale[:, None])[picked]
    elif regime == "parallel":
        c = draw(hnp.arrays(np.float64, n_rows, elements=st.floats(-3.0, 3.0)),
                 label="log10 |factor|")
        sign = draw(hnp.arrays(np.bool_, n_rows), label="opposite")
        factor = np.where(sign, -1.0, 1.0) * 10.0 ** c
        rows_p[picked] = (rows_t * factor[:, None])[picked]
    y_true, y_pred = np.moveaxis(yt, -1, axis), np.moveaxis(yp, -1, axis)
    return y_true.astype(F32), y_pred.astype(F32), regime, {}
# ------------------------------------------------------------------ regression regimes
# MAE, MAPE, MSLE, Huber and log-cosh (lossverify.reference.regression): each loss's hard
# parts sit in a few narrow places of [-1e3, 1e3], which uniform draws never reach.

_REG_WIDE = _float32(-1e3, 1e3)
_REG_SMALL = st.one_of(_float32(-1e-3, 1e-3),
                       st.sampled_from(_exact32(0.0, 1e-30, -1e-30, 1e-8, -1e-8)))
#: Keras's eps = 1e-7 in float32 and its neighbours (MAPE's target guard, MSLE's clamp)
_REG_AROUND_EPS = _exact32(0.0, 1e-7, float(np.nextafter(F32(1e-7), F32(1))),
                           float(np.nextafter(F32(1e-7), F32(0))), 1e-8, 2e-7, 1e-30, 1e-6)
_REG_NEAR_MINUS_ONE = _exact32(-1.0, float(np.nextafter(F32(-1), F32(0))),
                               float(np.nextafter(F32(-1), F32(-2))), -1.0 + 2**-20,
                               -1.0 - 2**-20)


def _reg_ulps(x: np.ndarray, k: np.ndarray) -> np.ndarray:
    """``x`` moved by ``k`` float32 units in the last place, elementwise."""
    out = np.asarray(x, F32).copy()
    towards = np.where(k > 0, F32(np.inf), F32(-np.inf)).astype(F32)
    for step in range(1, int(np.abs(k).max(initial=0)) + 1):
        out = np.where(np.abs(k) >= step, np.nextafter(out, towards), out).astype(F32)
    return out


def _reg_array(draw: st.DrawFn, shape: tuple[int, ...], elements: st.SearchStrategy,
               label: str) -> np.ndarray:
    return draw(hnp.arrays(F32, shape, elements=elements), label=label)


def _reg_signs(draw: st.DrawFn, shape: tuple[int, ...]) -> np.ndarray:
    return draw(hnp.arrays(F32, shape, elements=st.sampled_from(_exact32(1.0, -1.0))),
                label="sign")


def _reg_offset(draw: st.DrawFn, shape: tuple[int, ...], lo: float, hi: float) -> tuple:
    """``(y_true, y_pred)`` with ``|y_pred - y_true|`` in about ``[lo, hi]``."""
    y_true = _reg_array(draw, shape, _float32(-10.0, 10.0) if hi > 10 else _REG_WIDE, "y_true")
    size = _reg_array(draw, shape, _float32(lo, hi), "error size")
    y_pred = (y_true.astype(np.float64) + _reg_signs(draw, shape) * size).astype(F32)
    return y_true, y_pred


def _reg_uniform(draw, shape, params):
    return _reg_array(draw, shape, _REG_WIDE, "y_true"), \
        _reg_array(draw, shape, _REG_WIDE, "y_pred")


def _reg_close(draw, shape, params):
    """Cancellation in y_pred - y_true: a relative gap of 1e-7..1e-2, or 0 to 3 ulps."""
    y_true = _reg_array(draw, shape, _REG_WIDE, "y_true")
    gap = draw(hnp.arrays(np.float64, shape, elements=st.one_of(
        st.just(0.0), st.floats(1e-7, 1e-2), st.floats(-1e-2, -1e-7))), label="relative gap")
    ulps = draw(hnp.arrays(np.int8, shape, elements=st.integers(-3, 3)), label="ulps")
    return y_true, _reg_ulps((y_true.astype(np.float64) * (1.0 + gap)).astype(F32), ulps)


def _reg_ties(draw, shape, params):
    """Exact ties y_pred == y_true (MAE's and MAPE's kink) among other values."""
    y_true = _reg_array(draw, shape, st.one_of(_REG_WIDE, _REG_SMALL), "y_true")
    other = _reg_array(draw, shape, st.one_of(_REG_WIDE, _REG_SMALL), "y_pred")
    tie = draw(hnp.arrays(np.bool_, shape), label="tie")
    return y_true, np.where(tie, y_true, other).astype(F32)


def _reg_small(draw, shape, params):
    return _reg_array(draw, shape, _REG_SMALL, "y_true"), \
        _reg_array(draw, shape, _REG_SMALL, "y_pred")


def _reg_tiny_target(draw, shape, params):
    """MAPE: targets at and below eps = 1e-7 (0 included), where max(|y_true|, eps)
    divides by eps."""
    tiny = st.one_of(st.sampled_from(_REG_AROUND_EPS + _exact32(-1e-7, -1e-8)),
                     _float32(-1e-5, 1e-5), _REG_WIDE)
    return _reg_array(draw, shape, tiny, "y_true"), \
        _reg_array(draw, shape, st.one_of(_REG_WIDE, _REG_SMALL), "y_pred")


def _reg_negative(draw, shape, params):
    """MSLE: values below eps (clamped, gradient blocked), down to -1e3."""
    low = _float32(-1e3, 1e-3)
    return _reg_array(draw, shape, st.one_of(low, _REG_WIDE), "y_true"), \
        _reg_array(draw, shape, low, "y_pred")


def _reg_near_minus_one(draw, shape, params):
    """MSLE: y_pred at and around -1, where an unclamped log(1 + y_pred) is -inf."""
    near = st.one_of(st.sampled_from(_REG_NEAR_MINUS_ONE), _float32(-1.01, -0.99))
    return _reg_array(draw, shape, _float32(-2.0, 5.0), "y_true"), \
        _reg_array(draw, shape, near, "y_pred")


def _reg_at_epsilon(draw, shape, params):
    """MSLE: y_pred exactly at eps = 1e-7 (the clamp's tie), just above and below."""
    near = st.one_of(st.sampled_from(_REG_AROUND_EPS + _exact32(-1e-7)), _float32(0.0, 1e-4))
    return _reg_array(draw, shape, near, "y_true"), _reg_array(draw, shape, near, "y_pred")


def _reg_tiny_positive(draw, shape, params):
    """MSLE: both in [0, 1e-4], where log(1 + x) loses x to the rounding of 1 + x."""
    tiny = st.one_of(_float32(0.0, 1e-4), st.sampled_from(_REG_AROUND_EPS))
    return _reg_array(draw, shape, tiny, "y_true"), _reg_array(draw, shape, tiny, "y_pred")


def _reg_at_delta(draw, shape, params):
    """Huber: |y_pred - y_true| == delta exactly (y_true = 0, or where the sum is exact)
    and 1 or 2 ulps either side."""
    delta = float(F32(params.get("delta", 1.0)))
    y_true = _reg_array(draw, shape, st.one_of(st.just(0.0), _float32(-10.0, 10.0), _REG_WIDE),
                        "y_true")
    ulps = draw(hnp.arrays(np.int8, shape, elements=st.sampled_from((0, 0, 0, 1, -1, 2, -2))),
                label="ulps")
    at = (y_true.astype(np.float64) + _reg_signs(draw, shape) * delta).astype(F32)
    return y_true, _reg_ulps(at, ulps)


def _reg_large_error(draw, shape, params):
    """|y_pred - y_true| in [89, 1990]: cosh overflows float32 beyond 89.4."""
    return _reg_offset(draw, shape, 89.0, 1990.0)


def _reg_small_error(draw, shape, params):
    """|y_pred - y_true| in [1e-4, 0.1] on |y| up to 1e3: log-cosh cancels to x**2 / 2."""
    return _reg_offset(draw, shape, 1e-4, 0.1)


_REG_COMMON = {"uniform": _reg_uniform, "close": _reg_close, "ties": _reg_ties,
               "small": _reg_small}
#: regression input kind -> its regimes (name -> drawer)
REGRESSION_REGIMES: dict[str, dict[str, Callable[..., tuple[np.ndarray, np.ndarray]]]] = {
    "regression_abs": _REG_COMMON,
    "regression_percentage": {**_REG_COMMON, "tiny_target": _reg_tiny_target},
    "regression_log": {**_REG_COMMON, "negative": _reg_negative,
                       "near_minus_one": _reg_near_minus_one, "at_epsilon": _reg_at_epsilon,
                       "tiny_positive": _reg_tiny_positive},
    "regression_huber": {**_REG_COMMON, "at_delta": _reg_at_delta,
                         "large_error": _reg_large_error},
    "regression_log_cosh": {**_REG_COMMON, "large_error": _reg_large_error,
                            "small_error": _reg_small_error},
}


def _regression_regimes(kind: str) -> Callable[..., tuple[Any, ...]]:
    """The drawer of a regression input kind: one regime per batch, labelled."""
    regimes = REGRESSION_REGIMES[kind]

    def draw_regression(draw: st.DrawFn, req: Request) -> tuple[Any, ...]:
        regime = draw(st.sampled_from(tuple(regimes)), label="regime")
        y_true, y_pred = regimes[regime](draw, req.shape, req.params)
        return y_true.astype(F32), y_pred.astype(F32), regime, {}

    return draw_regression
# ------------------------------------------------------------ probabilistic family


def _edges32(*values: Any) -> tuple[float, ...]:
    return tuple(float(v) for v in np.asarray(values, dtype=F32))


_EPS32 = F32(1e-7)
#: kl_divergence's y_pred edges: Keras clips y_pred to [eps, 1] (float32 eps), so eps and
#: 1 themselves (the gradient passes), their float32 neighbours, and values beyond them.
KL_LOW_EDGES = _edges32(_EPS32, np.nextafter(_EPS32, F32(0)), np.nextafter(_EPS32, F32(1)),
                        0.0, 5e-8, 1e-8, 1e-30)
KL_HIGH_EDGES = _edges32(1.0, np.nextafter(F32(1), F32(0)), np.nextafter(F32(1), F32(2)),
                         1.5, 3.0)
#: Poisson predictions near 0: exactly 0, a float32 subnormal, eps's neighbourhood.
POISSON_NEAR_ZERO = _edges32(0.0, 1e-45, 1e-38, 1e-12, 1e-9, 5e-8, _EPS32, 2e-7, 1e-6, 1e-4)
#: GCE's p_y near 0: exactly 0, float32 subnormals, the smallest normal, tiny normals.
GCE_NEAR_ZERO = _edges32(0.0, 1e-45, 1e-40, np.finfo(F32).tiny, 1e-30, 1e-20, 1e-10, 1e-7)
GCE_NEAR_ONE = _edges32(1.0, np.nextafter(F32(1), F32(0)), 1 - 1e-6, 1 - 1e-4, 0.999)
DISTRIBUTION_REGIMES = ("simplex", "zero_labels", "at_eps", "at_one", "unnormalised", "peaked")
COUNT_REGIMES = ("counts", "near_zero", "large_counts", "rates")
SPARSE_PROBABILITY_REGIMES = ("uniform", "p_y_near_zero", "p_y_near_one", "unnormalised")


def _replace_some(draw: st.DrawFn, arr: np.ndarray, values: tuple[float, ...], label: str,
                  share: float = 0.3) -> np.ndarray:
    """``arr`` with a drawn subset of its elements (about ``share``) set to drawn
    ``values``."""
    mask = draw(hnp.arrays(F32, arr.shape, elements=_float32(0.0, 1.0)),
                label=f"{label} mask") < share
    picks = draw(hnp.arrays(F32, arr.shape, elements=st.sampled_from(values)), label=label)
    return np.where(mask, picks, arr).astype(F32)


def _positive_rows(p: np.ndarray) -> np.ndarray:
    """Every row (last axis) with a positive sum: a zero row gets eps in its first class
    (the cross-entropy it is related to renormalises by the sum)."""
    p = p.copy()
    rows = p.reshape(-1, p.shape[-1])
    rows[rows.sum(axis=-1) <= 0, 0] = _EPS32
    return p


def _distributions(draw: st.DrawFn, req: Request) -> tuple[Any, ...]:
    """kl_divergence's inputs: probability rows for both y_true and y_pred, normalised
    or not, labels with exact zeros, y_pred at, next to and beyond the clip [eps, 1]
    (``at_eps``, ``at_one``: where the gradient stops or passes)."""
    regime = draw(st.sampled_from(DISTRIBUTION_REGIMES), label="regime")
    shape = req.shape
    if regime == "unnormalised":
        y_true = draw(hnp.arrays(F32, shape, elements=st.one_of(
            st.just(0.0), _float32(0.0, 2.0))), label="y_true")
        y_pred = draw(hnp.arrays(F32, shape, elements=_float32(0.0, 3.0)), label="y_pred")
        y_pred = _replace_some(draw, y_pred, KL_HIGH_EDGES + KL_LOW_EDGES, "edges")
        return y_true, _positive_rows(y_pred), regime, {"labels": "unnormalised"}
    if regime == "peaked":
        y_true = draw(probabilities(shape, "peaked"), label="y_true")
        y_pred = draw(probabilities(shape, "peaked"), label="y_pred")
        return y_true, y_pred, regime, {"labels": "soft"}
    if regime == "at_one":  # the neighbours of the upper bound 1 (not 1 - eps); a tie
        # with 1 itself is a kink (drawn in "unnormalised"), which would hide its row
        y_true = draw(categorical_labels(shape, "soft"), label="y_true")
        y_pred = draw(probabilities(shape, "peaked"), label="y_pred")
        y_pred = _replace_some(draw, y_pred, KL_HIGH_EDGES[1:3], "edges", 0.4)
        return y_true, y_pred, regime, {"labels": "soft"}
    label_kind = "soft"
    if regime == "zero_labels":
        label_kind = draw(st.sampled_from(("one_hot", "soft")), label="label_kind")
    y_true = draw(categorical_labels(shape, label_kind), label="y_true")
    if regime == "zero_labels" and label_kind == "soft":
        y_true = _replace_some(draw, y_true, (0.0,), "zero labels", share=0.5)
    y_pred = draw(probabilities(shape, "uniform"), label="y_pred")
    if regime == "at_eps":
        y_pred = _positive_rows(_replace_some(draw, y_pred, KL_LOW_EDGES, "edges", 0.4))
    return y_true, y_pred, regime, {"labels": label_kind}


def _counts(draw: st.DrawFn, req: Request) -> tuple[Any, ...]:
    """poisson's inputs: count labels (small and up to 2e6, exact in float32) or real
    rates, non-negative predictions, exactly 0 and around eps included."""
    regime = draw(st.sampled_from(COUNT_REGIMES), label="regime")
    shape = req.shape

    def integers(hi: int, label: str) -> np.ndarray:
        return draw(hnp.arrays(np.int64, shape, elements=st.integers(0, hi)),
                    label=label).astype(F32)

    if regime == "counts":
        y_true = integers(30, "y_true")
        y_pred = draw(hnp.arrays(F32, shape, elements=_float32(0.0, 40.0)), label="y_pred")
    elif regime == "near_zero":
        y_true = integers(5, "y_true")
        y_pred = draw(hnp.arrays(F32, shape, elements=st.one_of(
            st.sampled_from(POISSON_NEAR_ZERO), _float32(0.0, 1e-5))), label="y_pred")
    elif regime == "large_counts":
        y_true = integers(2_000_000, "y_true")
        ratio = draw(hnp.arrays(F32, shape, elements=st.one_of(
            st.just(1.0), _float32(0.5, 2.0))), label="y_pred / y_true")
        y_pred = (y_true * ratio + F32(1.0)).astype(F32)
    else:
        y_true = draw(hnp.arrays(F32, shape, elements=_float32(0.0, 10.0)), label="y_true")
        y_pred = draw(hnp.arrays(F32, shape, elements=_float32(0.0, 10.0)), label="y_pred")
    return y_true, y_pred, regime, {}


def _sparse_probabilities(draw: st.DrawFn, req: Request) -> tuple[Any, ...]:
    """categorical_generalized_cross_entropy's inputs: integer labels and probabilities
    in [0, 1], with p of the labelled class at 0, subnormal or tiny, or at or next to 1."""
    regime = draw(st.sampled_from(SPARSE_PROBABILITY_REGIMES), label="regime")
    shape = req.shape
    labels = draw(sparse_labels(shape[:-1], shape[-1]), label="y_true")
    y_pred = draw(probabilities(shape, "uniform", normalised=regime != "unnormalised"),
                  label="y_pred")
    if regime in ("p_y_near_zero", "p_y_near_one"):
        values = GCE_NEAR_ZERO if regime == "p_y_near_zero" else GCE_NEAR_ONE
        p_y = draw(hnp.arrays(F32, shape[:-1], elements=st.sampled_from(values)), label="p_y")
        if regime == "p_y_near_one":  # the other classes share what is left
            y_pred = (y_pred * (F32(1) - p_y[..., None])).astype(F32)
        np.put_along_axis(y_pred, labels[..., None].astype(np.int64), p_y[..., None], axis=-1)
    if req.ignore_class is not None:
        drop = draw(hnp.arrays(np.bool_, shape[:-1]), label="ignored")
        labels = np.where(drop, np.int32(req.ignore_class), labels).astype(np.int32)
    return labels, y_pred, regime, {}


# ------------------------------------------------------------------ overlap family

#: masks (Dice, Tversky): y_true 0/1 masks of shape (batch, n), y_pred in [0, 1]. Random
#: masks; empty masks (y = 0 with p = 0, tiny or random; or p = 0 under a nonempty y);
#: one-pixel masks (hit, miss, exact 1); perfect predictions p = y; p within 1e-7..1e-3
#: of y (1 - r cancels); soft y_true (when soft labels are allowed)
MASK_REGIMES = ("random", "empty", "one_pixel", "perfect", "saturated", "soft_true")
#: embeddings (Circle): int32 labels (batch,) and unit-norm rows (batch, dim). Random
#: rows; all labels equal (no negatives: every loss 0); all labels different (no
#: positives: 0); duplicated rows (a duplicate with another label is a kink); zero rows
#: (distance exactly 1 to everything); clustered classes (positives close, where keeping
#: the diagonal shows); rows opposite or at cos = -0.4 (the negative-weight clamp)
EMBEDDING_REGIMES = ("random", "all_equal", "all_different", "duplicates", "zeros",
                     "clustered", "far_negatives")


def _masks(draw: st.DrawFn, req: Request) -> tuple[Any, ...]:
    shape = req.shape
    regimes = MASK_REGIMES if req.soft_labels else MASK_REGIMES[:-1]
    regime = draw(st.sampled_from(regimes), label="regime")
    y = draw(binary_labels(shape), label="y_true")
    p = draw(hnp.arrays(F32, shape, elements=st.one_of(
        st.sampled_from(_exact32(0.0, 1.0)), _float32(0.0, 1.0))), label="y_pred")
    rows = draw(hnp.arrays(np.bool_, shape[:1]), label="rows changed")
    rows[0] = True
    pick = rows.reshape((-1,) + (1,) * (len(shape) - 1))
    if regime == "empty":
        what = draw(st.sampled_from(("both", "tiny", "y_only", "p_only")), label="empty")
        tiny = draw(hnp.arrays(F32, shape, elements=_float32(0.0, 1e-6)), label="tiny p")
        y = np.where(pick & (what != "p_only"), F32(0), y)
        p = np.where(pick, {"both": np.zeros_like(p), "tiny": tiny, "y_only": p,
                            "p_only": np.zeros_like(p)}[what], p)
    elif regime == "one_pixel":
        n = int(np.prod(shape[1:]))
        at = draw(hnp.arrays(np.int64, shape[:1], elements=st.integers(0, n - 1)),
                  label="pixel")
        hit = draw(hnp.arrays(np.int64, shape[:1], elements=st.integers(0, n - 1)),
                   label="predicted pixel")
        flat_y = np.where(rows[:, None], F32(0), y.reshape(shape[0], -1))
        flat_p = np.where(rows[:, None], F32(0), p.reshape(shape[0], -1))
        flat_y[rows, at[rows]] = 1
        exact = draw(st.booleans(), label="exact 1")
        flat_p[rows, hit[rows]] = F32(1) if exact else p.reshape(shape[0], -1)[rows, 0]
        y, p = flat_y.reshape(shape), flat_p.reshape(shape)
    elif regime == "perfect":
        p = np.where(pick, y, p)
    elif regime == "saturated":
        gap = draw(hnp.arrays(F32, shape, elements=_float32(1e-7, 1e-3)), label="gap")
        near = np.where(y > 0, F32(1) - gap, gap).astype(F32)
        p = np.where(pick, near, p)
    elif regime == "soft_true":
        y = draw(hnp.arrays(F32, shape, elements=_float32(0.0, 1.0)), label="soft y_true")
    return y.astype(F32), p.astype(F32), regime, {}


def _mask_loss_shape(shape: tuple[int, ...], axis: Any) -> tuple[int, ...]:
    """Dice's and Tversky's value shape: y_pred's without the reduced axes (``()`` for
    ``axis=None``)."""
    from lossverify.reference import overlap

    return overlap.loss_shape("dice", shape, {"axis": axis})


def _unit_rows(e: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length in float64 (zero rows stay zero), as float32."""
    e = np.asarray(e, np.float64)
    norm = np.sqrt((e * e).sum(-1, keepdims=True))
    return np.where(norm > 0, e / np.where(norm > 0, norm, 1.0), 0.0).astype(F32)


def _embeddings(draw: st.DrawFn, req: Request) -> tuple[Any, ...]:
    if len(req.shape) != 2:
        raise ValueError(f"rank: Circle's embeddings have shape (batch, dim), got a request "
                         f"for shape {req.shape}")
    b, d = req.shape
    regime = draw(st.sampled_from(EMBEDDING_REGIMES), label="regime")
    e = draw(hnp.arrays(F32, (b, d), elements=_float32(-1.0, 1.0)), label="y_pred")
    classes = draw(st.integers(1, 4), label="classes")
    labels = draw(hnp.arrays(np.int32, (b,), elements=st.integers(0, classes - 1)),
                  label="y_true")
    e64 = e.astype(np.float64)
    if regime == "all_equal":
        labels = np.zeros(b, np.int32)
    elif regime == "all_different":
        labels = np.arange(b, dtype=np.int32)
    elif regime == "duplicates" and b > 1:
        src = draw(hnp.arrays(np.int64, (b,), elements=st.integers(0, b - 1)), label="copy of")
        take = draw(hnp.arrays(np.bool_, (b,)), label="copied rows")
        take[1] = True
        e64 = np.where(take[:, None], _unit_rows(e64)[src].astype(np.float64), e64)
    elif regime == "zeros":
        zero = draw(hnp.arrays(np.bool_, (b,)), label="zero rows")
        zero[0] = True
        e64 = np.where(zero[:, None], 0.0, e64)
    elif regime == "clustered":
        centres = draw(hnp.arrays(F32, (4, d), elements=_float32(-1.0, 1.0)), label="centres")
        e64 = centres.astype(np.float64)[labels % 4] + 0.05 * e64
    elif regime == "far_negatives" and b > 1:
        base = _unit_rows(e64)[0].astype(np.float64)
        other = e64[1] - (e64[1] @ base) * base
        other = other / max(float(np.sqrt(other @ other)), 1e-12)
        cos = draw(st.sampled_from((-1.0, -0.4, -0.6)), label="cosine")
        e64 = e64.copy()
        e64[1] = cos * base + np.sqrt(1.0 - cos * cos) * other
        if labels[1] == labels[0]:
            labels = labels.copy()
            labels[1] = (labels[0] + 1) % 5
    return labels.astype(np.int32), _unit_rows(e64), regime, {}
# ------------------------------------------------------------------ CTC

#: keras.losses.ctc's regimes: every label fits its time axis (a blank between equal
#: neighbours), trailing padding only, losses below ~600 (TensorFlow caps near 707)
CTC_REGIMES = ("random", "blank_only", "repeats", "single_alignment", "peaked", "large_loss",
               "long")
#: frames of a rank-2 request and of the "long" regime; the xla check's draws take one of
#: the two per run (``time``), so that one XLA compile serves them all
CTC_TIME, CTC_LONG_TIME = 8, 48


def _ctc_needed(labels: list[int]) -> int:
    """Frames a label sequence needs: one per label and one blank between equal ones."""
    return len(labels) + sum(a == b for a, b in zip(labels, labels[1:], strict=False))


def _ctc_label_row(draw: st.DrawFn, regime: str, n_classes: int, n_time: int,
                   longest: int) -> list[int]:
    """One label sequence (classes 1 .. C - 1) that fits ``n_time`` frames."""
    label = st.integers(1, n_classes - 1)
    if regime == "blank_only":
        return []
    if regime == "single_alignment":  # labels + blanks between repeats == frames
        row: list[int] = []
        while _ctc_needed(row) < n_time and len(row) < longest:
            c = draw(label, label="label")
            if _ctc_needed([*row, c]) > n_time:
                c = next(k for k in range(1, n_classes) if k != row[-1]) if n_classes > 2 \
                    else c
            if _ctc_needed([*row, c]) > n_time:
                break
            row.append(c)
        return row
    if regime == "repeats":  # runs of one class, and pairs
        runs = draw(st.lists(st.tuples(label, st.integers(1, 3)), min_size=1, max_size=4),
                    label="runs")
        row = [c for c, k in runs for _ in range(k)]
    else:
        row = draw(st.lists(label, max_size=longest), label="labels")
    while _ctc_needed(row) > n_time or len(row) > longest:
        row = row[:-1]
    return row


def _ctc_alignment(row: list[int], n_time: int) -> list[int]:
    """An alignment of ``row``: its labels with a blank between repeats, then blanks."""
    path: list[int] = []
    for i, c in enumerate(row):
        if i and row[i - 1] == c:
            path.append(0)
        path.append(c)
    return path + [0] * (n_time - len(path))


def _ctc(draw: st.DrawFn, req: Request) -> tuple[Any, ...]:
    """keras.losses.ctc's inputs: int32 label sequences ``(batch, width)`` (classes 1 ..
    C - 1, trailing zero padding, some rows empty) and float32 logits ``(batch, time,
    C)``. A rank-3 request draws its time axis (1 .. 12), a rank-2 one has CTC_TIME
    frames, and a ``time`` parameter fixes the frames of every regime (the xla check's
    draws: one shape per run); ``width`` is a multiple of 3 at least
    the longest label (the xla check tiles y_true's axis 1 to a multiple of 3: a no-op).
    Regimes: random labels; ``blank_only`` rows; ``repeats`` (runs that need blanks);
    ``single_alignment`` (labels + repeats = frames); ``peaked`` logits (a lead of 20 ..
    35 on an alignment of the label, or on random classes); ``large_loss`` (the blank
    favoured by 10 .. 25 against non-empty labels); ``long`` (CTC_LONG_TIME frames)."""
    regime = draw(st.sampled_from(CTC_REGIMES), label="regime")
    batch, n_classes = req.shape[0], req.shape[-1]
    if req.params.get("time") is not None:
        n_time = int(req.params["time"])
    elif regime == "long":
        n_time = CTC_LONG_TIME
    elif len(req.shape) == 3:
        n_time = draw(st.integers(1, 12), label="time")
    else:
        n_time = CTC_TIME
    longest = min(n_time, 12)
    rows = [_ctc_label_row(draw, regime, n_classes, n_time, longest) for _ in range(batch)]
    if regime == "large_loss" and n_classes > 1:
        rows = [r or [1] for r in rows]
    width = 3 * -(-max(1, longest) // 3)
    y_true = np.zeros((batch, width), np.int32)
    for b, row in enumerate(rows):
        y_true[b, :len(row)] = row
    shape = (batch, n_time, n_classes)
    if regime == "random":
        scale = draw(st.sampled_from((0.5, 2.0, 5.0)), label="scale")
    else:
        scale = 0.5 if regime in ("peaked", "large_loss") else 2.0
    y_pred = draw(hnp.arrays(F32, shape, elements=_float32(-scale, scale)), label="y_pred")
    if regime == "peaked":
        gap = draw(_float32(20.0, 35.0), label="gap")
        on_path = draw(hnp.arrays(np.bool_, (batch,)), label="on an alignment")
        random_classes = draw(hnp.arrays(np.int64, (batch, n_time),
                                         elements=st.integers(0, n_classes - 1)),
                              label="peaked classes")
        for b, row in enumerate(rows):
            path = _ctc_alignment(row, n_time) if on_path[b] else random_classes[b]
            y_pred[b, np.arange(n_time), path] += F32(gap)
    elif regime == "large_loss":
        bias = draw(_float32(10.0, 25.0), label="blank bias")
        y_pred[..., 0] += F32(bias)
    return y_true, y_pred.astype(F32), regime, {"time": n_time}


#: input kind -> how it is drawn (a record names its kind)
KINDS: dict[str, InputKind] = {
    "regression": InputKind(_regression, min_classes=1),
    "binary": InputKind(_binary, min_classes=1),
    "categorical": InputKind(_categorical),
    "categorical_logits": InputKind(_with_logits(_categorical), rank2_only=True, logits=True),
    "sparse": InputKind(_sparse),
    "sparse_logits": InputKind(_with_logits(_sparse), rank2_only=True, logits=True),
    "hinge": InputKind(_hinge, min_classes=1),
    "categorical_hinge": InputKind(_categorical_hinge, min_classes=1),
    "cosine": InputKind(_cosine, min_classes=1),
    # regression losses with narrow hard regimes (see REGRESSION_REGIMES)
    **{kind: InputKind(_regression_regimes(kind), min_classes=1)
       for kind in REGRESSION_REGIMES},
    "distributions": InputKind(_distributions),
    "counts": InputKind(_counts, min_classes=1),
    "sparse_probabilities": InputKind(_sparse_probabilities),
    "masks": InputKind(_masks, min_classes=1, rank2_only=True, loss_shape=_mask_loss_shape),
    "embeddings": InputKind(_embeddings, rank2_only=True),
    "ctc": InputKind(_ctc, logits=True, loss_shape=lambda shape, axis: (shape[0],),
                     one_shape=lambda rng: {"time": int(rng.choice((CTC_TIME, CTC_LONG_TIME)))}),
}


@st.composite
def loss_inputs(draw: st.DrawFn, reference: str, *, from_logits: bool = False,
                with_sample_weight: bool = False, max_batch: int = DEFAULT_MAX_BATCH,
                max_classes: int = 12,
                rank: int | None = None, class_num: int | None = None,
                ignore_class: int | None = None, soft_labels: bool = True,
                axis: Any = None, batch: int | None = None, **params: Any) -> LossInputs:
    """A labelled batch of inputs for reference ``reference`` with these parameters.

    ``from_logits`` draws logits instead of probabilities; the notes' focal losses
    always get logits (they apply softmax themselves). ``class_num`` fixes the number
    of classes, ``batch`` the batch size; ``rank`` fixes the rank (2 or 3). Other
    keyword arguments (``gamma``, ``alpha``, ...) are passed to the input kind's drawer,
    so a spec's parameters can be passed straight through.
    """
    try:
        kind = KINDS[RECORDS[reference].inputs]
    except KeyError:
        raise ValueError(f"reference: expected one of {sorted(RECORDS)}, "
                         f"got {reference!r}") from None
    if axis is None:  # the record's default: a class axis, last; Dice's None (every axis)
        axis = RECORDS[reference].parameters.get("axis", -1)
    max_extra = 0 if kind.rank2_only or rank == 2 else 1
    shape = draw(batch_shapes(batch or 1, batch or max_batch, kind.min_classes, max_classes,
                              max_extra), label="shape")
    if rank == 3 and len(shape) == 2:
        shape = (shape[0], 1, shape[1])
    if class_num is not None:
        shape = (*shape[:-1], int(class_num))
    request = Request(shape, bool(from_logits), soft_labels, ignore_class,
                      {"axis": axis, **params})
    y_true, y_pred, regime, notes = kind.draw(draw, request)
    weight = None
    if with_sample_weight:
        # one weight per sample: the shape of the losses, y_pred's without the class axis
        # (or the kind's own: Dice's axis may be None or a tuple)
        if kind.loss_shape is not None:
            loss_shape = kind.loss_shape(tuple(np.shape(y_pred)), axis)
        else:
            class_axis = axis % len(shape)
            loss_shape = tuple(int(n) for i, n in enumerate(shape) if i != class_axis) \
                if len(shape) > 1 else (1,)
        weight = draw(sample_weights(loss_shape), label="sample_weight")
    return LossInputs(y_true=y_true, y_pred=y_pred, sample_weight=weight, regime=regime,
                      notes=notes)
