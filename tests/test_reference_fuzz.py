"""Fuzz the NumPy references with arbitrary shapes, dtypes, values and parameters.

Every call either returns per-sample float64 losses of the right shape, or raises
``ValueError`` / ``TypeError``. Nothing else: no ``IndexError``, no
``ZeroDivisionError``, no ``FloatingPointError``, no NumPy ``RuntimeWarning`` (warnings
are errors here). Non-finite losses appear only where an input was non-finite, or
outside the loss's domain (see :func:`promised_finite`).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import lossverify.reference as R
from lossverify import specs as S

FUZZ = settings(max_examples=200, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

#: Dtypes the references accept, and the ones they must refuse.
REAL_DTYPES = ["float64", "float32", "float16", "int64", "uint8", "int8", "bool"]
JUNK_DTYPES = ["complex128", "object", "str"]
LABEL_DTYPES = ["int64", "int32", "uint8", "float32", "float64"]
#: Finite values stay below 1e15 so no correct computation overflows float64; NaN, Inf
#: and 1e15 itself (Inf in float16) probe the edges.
SPECIAL = [0.0, 1.0, 0.5, 1e-8, 1.0 - 1e-8, -1.0, 1e15, -1e15, math.nan, math.inf, -math.inf]
ANY_VALUE = st.one_of(st.floats(-1e15, 1e15), st.sampled_from(SPECIAL))
PROBABILITY = st.one_of(st.floats(0.0, 1.0), st.sampled_from([0.0, 1.0, math.nan, math.inf]))
RAGGED = [[0.25, 0.75], [1.0]]

#: The input kinds this harness draws (labels shaped like y_pred, or sparse labels of
#: its shape without the class axis); other kinds are fuzzed by their family's tests.
FUZZED_KINDS = ("regression", "binary", "categorical", "categorical_logits", "sparse",
                "sparse_logits")
RECORDS = {n: r for n, r in S.SPECS.items() if r.inputs in FUZZED_KINDS}
SPARSE = {n for n, r in RECORDS.items() if r.labels == "sparse"}
#: Losses that take probabilities unless from_logits; the renormalising ones divide by
#: the row sum.
ON_PROBABILITIES = {n for n, r in RECORDS.items() if r.y_pred == "probabilities"}
RENORMALISING = {n for n, r in RECORDS.items() if r.inputs == "categorical"} & ON_PROBABILITIES
BINARY = {n for n, r in RECORDS.items() if r.inputs == "binary"} & ON_PROBABILITIES

FLAG = st.sampled_from([True, False, 0, 1, np.bool_(True), np.bool_(False)])
BAD_FLAG = st.sampled_from(["yes", 2, 0.5, None, -1])
#: Per parameter: (valid values, invalid values). ``axis`` and ``class_num`` depend on
#: y_pred's shape and are drawn in :func:`cases`.
PARAMETERS = {
    "from_logits": (FLAG, BAD_FLAG),
    "apply_class_balancing": (FLAG, BAD_FLAG),
    "label_smoothing": (st.floats(0.0, 1.0), st.sampled_from([-0.1, 1.5, math.nan, "0.1"])),
    "gamma": (st.floats(0.0, 5.0) | st.sampled_from([0.0, 0.5, 1.0, 2.0]),
              st.sampled_from([-1.0, -1e-9, math.nan, math.inf, "2", None])),
    "alpha": (st.floats(0.0, 1.0), st.sampled_from([-0.1, 2.0, math.nan, "a"])),
    "ignore_class": (st.none() | st.integers(-1, 4), st.sampled_from([1.5, "x", True])),
    "axis": (None, st.integers(-5, 4) | st.sampled_from([1.0, None, "0", True])),
    "class_num": (None, st.integers(-1, 6) | st.sampled_from([2.0, "3", True])),
}
SIGNATURES = {n: [p.name for p in r.params] for n, r in RECORDS.items()}


def test_signatures_cover_every_reference():
    """Every reference of a kind this harness draws is fuzzed, with every parameter."""
    assert SIGNATURES, "no reference to fuzz"
    missing = {p for params in SIGNATURES.values() for p in params} - set(PARAMETERS)
    assert not missing, f"parameters without fuzz values: {sorted(missing)}"


def cast(values: np.ndarray, dtype: str) -> np.ndarray:
    """``values`` in ``dtype``; a cast's own overflow or NaN-to-int is part of the draw."""
    if dtype == "str":
        return values.astype(str)
    with np.errstate(all="ignore"):
        return values.astype(dtype)


#: Rank 0 to 3, mostly 1 to 3; every axis may be empty.
SHAPES = st.sampled_from([0, 1, 1, 2, 2, 2, 3, 3]).flatmap(
    lambda rank: st.tuples(*[st.sampled_from([0, 1, 2, 3, 4])] * rank))


@st.composite
def arrays(draw, shape, elements, dtypes, label):
    dtype = draw(st.sampled_from(dtypes), label=f"{label} dtype")
    size = math.prod(shape)
    flat = draw(st.lists(elements, min_size=size, max_size=size), label=f"{label} values")
    return cast(np.array(flat, dtype=np.float64).reshape(shape), dtype)


def class_axis(params: dict, ndim: int) -> int | None:
    """The class axis the call will use, when the call can succeed at all."""
    axis = params.get("axis", -1)
    if not isinstance(axis, int) or isinstance(axis, bool) or not -ndim <= axis < ndim:
        return None
    return axis % ndim


@st.composite
def cases(draw):
    """A loss, its inputs and parameters; most draws valid, one in three broken somewhere."""
    name = draw(st.sampled_from(sorted(SIGNATURES)), label="loss")
    broken = draw(st.sampled_from([None] * 6 + ["y_pred", "y_true", "parameter"]),
                  label="broken")
    shape = draw(SHAPES, label="y_pred shape")
    params = {}
    for p in SIGNATURES[name]:
        valid, invalid = PARAMETERS[p]
        if p == "axis":
            valid = st.integers(-len(shape), len(shape) - 1) if shape else st.just(-1)
        elif p == "class_num":
            valid = st.just(shape[-1] if shape else 3)
        if broken == "parameter" and draw(st.booleans(), label=f"break {p}"):
            params[p] = draw(invalid, label=p)
        elif p == "class_num" or draw(st.booleans(), label=f"pass {p}"):
            params[p] = draw(valid, label=p)
    logits = params.get("from_logits") is True or name not in ON_PROBABILITIES
    pred_dtypes = REAL_DTYPES + JUNK_DTYPES if broken == "y_pred" else REAL_DTYPES
    y_pred = draw(arrays(shape, ANY_VALUE if logits else PROBABILITY, pred_dtypes, "y_pred"))
    ax = class_axis(params, len(shape))
    if broken == "y_true":
        y_true = draw(st.just(RAGGED) | arrays(draw(SHAPES, label="y_true shape"), ANY_VALUE,
                                               REAL_DTYPES + JUNK_DTYPES, "y_true"))
    elif ax is None:
        y_true = draw(arrays(shape, ANY_VALUE, REAL_DTYPES, "y_true"))
    elif name in SPARSE:
        label_shape = shape[:ax] + shape[ax + 1:]
        labels = st.integers(0, max(shape[ax] - 1, 0)).map(float)
        y_true = draw(arrays(label_shape, labels, LABEL_DTYPES, "y_true"))
    else:
        y_true = draw(arrays(shape, PROBABILITY, REAL_DTYPES, "y_true"))
    return name, y_true, y_pred, params


def promised_finite(name: str, params: dict, y_true: np.ndarray, y_pred: np.ndarray,
                    ax: int) -> np.ndarray:
    """Per sample: must the loss be finite? Yes when every input of the sample is finite
    and inside the loss's domain: labels in [0, 1]; for losses on probabilities,
    probabilities in [0, 1], with a positive row sum where the loss renormalises, and
    below 1 for binary losses in float16 (whose clip bound ``1 - eps`` rounds to 1)."""
    yp = np.moveaxis(y_pred.astype(np.float64), ax, -1)
    ok = np.isfinite(yp).all(-1)
    if name not in SPARSE:
        yt = np.moveaxis(y_true.astype(np.float64), ax, -1)
        ok &= np.isfinite(yt).all(-1)
        if name != "mean_squared_error":
            ok &= ((yt >= 0) & (yt <= 1)).all(-1)
    if name in ON_PROBABILITIES and not bool(params.get("from_logits", False)):
        ok &= ((yp >= 0) & (yp <= 1)).all(-1)
        if name in RENORMALISING:
            ok &= yp.sum(-1) > 0
        if name in BINARY and y_pred.dtype == np.float16:
            ok &= (yp < 1).all(-1)
    return ok


@FUZZ
@given(cases())
def test_reference_returns_per_sample_losses_or_refuses(case):
    name, y_true, y_pred, params = case
    fn = getattr(R, name)
    arrays_in = [a for a in (y_true, y_pred) if isinstance(a, np.ndarray)]
    before = [a.copy() for a in arrays_in]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        try:
            out = fn(y_true, y_pred, **params)
        except (ValueError, TypeError) as exc:
            event(f"refused: {str(exc).split(':')[0]}")
            return
        ev = R.evaluate(name, y_true, y_pred, **params)
    event(f"evaluated: {name}")
    for arg, old in zip(arrays_in, before, strict=True):  # references never write into their inputs
        np.testing.assert_array_equal(arg, old, strict=True)
    ax = class_axis(params, y_pred.ndim)
    assert ax is not None, "an invalid axis was accepted"
    assert isinstance(out, np.ndarray) and out.dtype == np.float64
    assert out.shape == y_pred.shape[:ax] + y_pred.shape[ax + 1:]
    assert ev.grad.shape == y_pred.shape
    np.testing.assert_array_equal(ev.value, out)
    promised = promised_finite(name, params, np.asarray(y_true), y_pred, ax)
    bad = promised & ~np.isfinite(out)
    assert not bad.any(), (f"{name}{params}: non-finite loss {out[bad]} from finite "
                           f"in-domain inputs at samples {np.argwhere(bad).tolist()}")


REDUCTION = st.sampled_from([*R.REDUCTIONS, "avg", 0])


@st.composite
def reductions(draw):
    shape = draw(SHAPES, label="values shape")
    values = draw(arrays(shape, ANY_VALUE, REAL_DTYPES + JUNK_DTYPES, "values"))
    weight_shape = draw(st.sampled_from([shape, shape[:1], shape + (1,), (3,)]),
                        label="sample_weight shape")
    weight = draw(st.none() | arrays(weight_shape, ANY_VALUE, REAL_DTYPES, "sample_weight"))
    mask = draw(st.none() | arrays(shape, st.sampled_from([0.0, 1.0]), REAL_DTYPES, "mask"))
    return values, weight, mask, draw(REDUCTION, label="reduction")


@FUZZ
@given(reductions())
def test_reduce_returns_a_reduction_or_refuses(case):
    values, weight, mask, reduction = case
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        try:
            out = R.reduce(values, sample_weight=weight, reduction=reduction, mask=mask)
        except (ValueError, TypeError) as exc:
            event(f"refused: {str(exc).split(':')[0]}")
            return
    event("reduced")
    assert isinstance(out, np.ndarray) and out.dtype == np.float64
    unreduced = reduction in (None, "none") or values.shape in ((), (0,))
    if not unreduced:
        assert out.shape == ()
    inputs_finite = all(np.isfinite(np.asarray(a, np.float64)).all()
                        for a in (values, weight) if a is not None)
    # Dividing by sum(w) may overflow for tiny weight sums: no promise there.
    if inputs_finite and reduction != "mean_with_sample_weight":
        assert np.isfinite(out).all(), (values, weight, mask, reduction, out)
