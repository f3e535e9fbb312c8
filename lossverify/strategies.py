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
}


@st.composite
def loss_inputs(draw: st.DrawFn, reference: str, *, from_logits: bool = False,
                with_sample_weight: bool = False, max_batch: int = DEFAULT_MAX_BATCH,
                max_classes: int = 12,
                rank: int | None = None, class_num: int | None = None,
                ignore_class: int | None = None, soft_labels: bool = True,
                axis: int = -1, **params: Any) -> LossInputs:
    """A labelled batch of inputs for reference ``reference`` with these parameters.

    ``from_logits`` draws logits instead of probabilities; the notes' focal losses
    always get logits (they apply softmax themselves). ``class_num`` fixes the number
    of classes; ``rank`` fixes the rank (2 or 3). Other keyword arguments (``gamma``,
    ``alpha``, ...) are passed to the input kind's drawer, so a spec's parameters can be
    passed straight through.
    """
    try:
        kind = KINDS[LABEL_KIND[reference]]
    except KeyError:
        raise ValueError(f"reference: expected one of {sorted(LABEL_KIND)}, "
                         f"got {reference!r}") from None
    max_extra = 0 if kind.rank2_only or rank == 2 else 1
    shape = draw(batch_shapes(1, max_batch, kind.min_classes, max_classes, max_extra),
                 label="shape")
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
        class_axis = axis % len(shape)
        loss_shape = tuple(int(n) for i, n in enumerate(shape) if i != class_axis) \
            if len(shape) > 1 else (1,)
        if kind.loss_shape is not None:
            loss_shape = kind.loss_shape(tuple(np.shape(y_pred)), axis)
        weight = draw(sample_weights(loss_shape), label="sample_weight")
    return LossInputs(y_true=y_true, y_pred=y_pred, sample_weight=weight, regime=regime,
                      notes=notes)
