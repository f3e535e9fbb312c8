"""Bad input to the NumPy references fails early with a message naming the argument.

And the inputs that are *not* errors behave as TensorFlow does: NaN and Inf propagate
(without NumPy warnings), empty batches give empty results.
"""

from __future__ import annotations

import numpy as np
import pytest

import lossverify.reference as R
from lossverify import specs as S

pytestmark = pytest.mark.filterwarnings("error")

Y = [[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]
P = [[0.2, 0.7, 0.1], [0.6, 0.3, 0.1]]
LABELS = [1, 0]

#: References whose inputs are (labels shaped like y_pred, y_pred) or (sparse labels,
#: y_pred): the ones these tables' inputs fit; other kinds have their family's tests.
_KINDS = ("regression", "binary", "categorical", "categorical_logits", "sparse",
          "sparse_logits")
_RECORDS = {n: r for n, r in S.SPECS.items() if r.inputs in _KINDS}


def _three_classes(name: str):
    """Reference ``name``; a loss with ``class_num`` gets 3 (the tables' classes)."""
    fn = getattr(R, name)
    if "class_num" not in S.SPECS[name].parameters:
        return fn
    return lambda y, p, **kw: fn(y, p, **{"class_num": 3, **kw})


SPARSE = {n: _three_classes(n) for n, r in _RECORDS.items() if r.labels == "sparse"}
DENSE = {n: getattr(R, n) for n in _RECORDS if n not in SPARSE}


def _with(param: str) -> list[str]:
    return [n for n, r in _RECORDS.items() if param in r.parameters]


WITH_AXIS = _with("axis")
WITH_LOGITS = _with("from_logits")
WITH_SMOOTHING = _with("label_smoothing")
WITH_GAMMA = _with("gamma")
WITH_ALPHA = _with("alpha")
ALL = {**DENSE, **SPARSE}


def call(name, y_true=None, y_pred=None, **params):
    fn = ALL[name]
    if y_true is None:
        y_true = LABELS if name in SPARSE else Y
    return fn(y_true, P if y_pred is None else y_pred, **params)


RAGGED = [[0.1, 0.9], [1.0]]
NON_NUMERIC = {
    "strings": [["a", "b", "c"], ["d", "e", "f"]],
    "objects": np.array(P, dtype=object),
    "complex": np.array(P, dtype=complex),
    "ragged": RAGGED,
    "none": None,
    "timedelta": np.array(P).astype("m8[s]"),
}


@pytest.mark.parametrize("what", sorted(NON_NUMERIC))
@pytest.mark.parametrize("name", sorted(ALL))
def test_non_numeric_y_pred(name, what):
    bad = NON_NUMERIC[what]
    if bad is None:  # None would mean "use the default" in `call`
        with pytest.raises(TypeError, match="y_pred"):
            ALL[name](LABELS if name in SPARSE else Y, None)
        return
    with pytest.raises(TypeError, match="y_pred"):
        call(name, y_pred=bad)


@pytest.mark.parametrize("what", sorted(set(NON_NUMERIC) - {"none"}))
@pytest.mark.parametrize("name", sorted(ALL))
def test_non_numeric_y_true(name, what):
    with pytest.raises(TypeError, match="y_true"):
        call(name, y_true=NON_NUMERIC[what])


@pytest.mark.parametrize("name", sorted(DENSE))
@pytest.mark.parametrize("y_true", [
    [[0.0, 1.0], [1.0, 0.0]],                    # fewer classes
    [[0.0, 1.0, 0.0]],                           # fewer samples
    [[[0.0], [1.0], [0.0]], [[1.0], [0.0], [0.0]]],  # higher rank
    [0.0, 1.0, 0.0],                             # lower rank
], ids=["classes", "batch", "rank_up", "rank_down"])
def test_dense_shape_mismatch(name, y_true):
    with pytest.raises(ValueError, match=r"y_true: expected the shape of y_pred \(2, 3\)"):
        call(name, y_true=y_true)


@pytest.mark.parametrize("name", sorted(ALL))
def test_scalar_y_pred(name):
    with pytest.raises(ValueError, match="y_pred: expected at least rank 1"):
        call(name, y_true=1.0 if name in DENSE else 0, y_pred=0.5)


@pytest.mark.parametrize("name", sorted(ALL))
def test_empty_class_axis(name):
    y_true = np.zeros((2,)) if name in SPARSE else np.zeros((2, 0))
    with pytest.raises(ValueError, match=r"y_pred: expected .*\(2, 0\)"):
        call(name, y_true=y_true, y_pred=np.zeros((2, 0)))


@pytest.mark.parametrize("name", WITH_AXIS)
@pytest.mark.parametrize("axis, error", [
    (2, ValueError), (-3, ValueError), (1.0, TypeError), ("1", TypeError), (True, TypeError),
    (None, TypeError),
])
def test_bad_axis(name, axis, error):
    with pytest.raises(error, match="axis"):
        call(name, axis=axis)


@pytest.mark.parametrize("name", WITH_LOGITS)
@pytest.mark.parametrize("flag", ["yes", "False", 2, -1, 0.0, 1.0, None, [True]])
def test_bad_from_logits(name, flag):
    with pytest.raises(TypeError, match=r"from_logits: expected a bool \(or 0/1\)"):
        call(name, from_logits=flag)


@pytest.mark.parametrize("flag", ["yes", 2, 0.5, None])
def test_bad_apply_class_balancing(flag):
    with pytest.raises(TypeError, match="apply_class_balancing"):
        R.binary_focal_crossentropy(Y, P, apply_class_balancing=flag)


@pytest.mark.parametrize("name", WITH_LOGITS)
@pytest.mark.parametrize("flag", [True, False, np.bool_(True), np.bool_(False), 0, 1,
                                  np.int8(1)])
def test_bool_like_flags_accepted(name, flag):
    expected = call(name, from_logits=bool(flag))
    np.testing.assert_array_equal(call(name, from_logits=flag), expected)


@pytest.mark.parametrize("name", WITH_SMOOTHING)
@pytest.mark.parametrize("value, error", [
    (-0.1, ValueError), (1.5, ValueError), (np.nan, ValueError), (np.inf, ValueError),
    ("0.1", TypeError), (None, TypeError), (True, TypeError),
])
def test_bad_label_smoothing(name, value, error):
    with pytest.raises(error, match="label_smoothing"):
        call(name, label_smoothing=value)


@pytest.mark.parametrize("name", WITH_GAMMA)
@pytest.mark.parametrize("value, error", [
    (-0.5, ValueError), (-np.inf, ValueError), (np.nan, ValueError), ("2", TypeError),
    (None, TypeError), (False, TypeError),
])
def test_bad_gamma(name, value, error):
    with pytest.raises(error, match="gamma"):
        call(name, gamma=value)


@pytest.mark.parametrize("name", WITH_ALPHA)
@pytest.mark.parametrize("value, error", [
    (-0.01, ValueError), (1.01, ValueError), (np.nan, ValueError), ("0.25", TypeError),
])
def test_bad_alpha(name, value, error):
    with pytest.raises(error, match="alpha"):
        call(name, alpha=value)


@pytest.mark.parametrize("name", sorted(SPARSE))
@pytest.mark.parametrize("labels, error, match", [
    ([1, 3], ValueError, r"y_true: expected labels in \[0, 3\), got 3"),
    ([-1, 0], ValueError, r"y_true: expected labels in \[0, 3\), got -1"),
    (np.array([1, 2**64 - 1], dtype=np.uint64), ValueError, "got 18446744073709551615"),
    ([0.5, 1.0], ValueError, "y_true: expected integer class labels, got non-integer value 0.5"),
    ([np.nan, 1.0], ValueError, "y_true: expected integer class labels, got non-integer value nan"),
    ([1e300, 1.0], ValueError, r"y_true: expected labels in \[0, 3\)"),
    ([True, False], TypeError, "y_true: expected integer class labels, got dtype bool"),
    ([1, 0, 2], ValueError, r"y_true: expected label shape \(2,\)"),
    ([[1, 0]], ValueError, r"y_true: expected label shape \(2,\)"),
])
def test_bad_sparse_labels(name, labels, error, match):
    with pytest.raises(error, match=match):
        call(name, y_true=labels)


def test_labels_may_carry_a_trailing_axis_of_one():
    for name in SPARSE:
        np.testing.assert_array_equal(call(name, y_true=[[1], [0]]), call(name))


@pytest.mark.parametrize("value", ["0", 1.0, True, [0]])
def test_bad_ignore_class(value):
    with pytest.raises(TypeError, match="ignore_class: expected an int or None"):
        R.sparse_categorical_crossentropy(LABELS, P, ignore_class=value)


def test_ignore_class_allows_that_label_only():
    out = R.sparse_categorical_crossentropy([-1, 0], P, ignore_class=-1)
    assert out[0] == 0.0
    with pytest.raises(ValueError, match="or ignore_class=-1, got -2"):
        R.sparse_categorical_crossentropy([-2, 0], P, ignore_class=-1)


@pytest.mark.parametrize("class_num, error, match", [
    (5, ValueError, r"class_num: expected the size of y_pred's last axis \(3\), got 5"),
    (2, ValueError, "class_num"),
    ("3", TypeError, "class_num: expected an int"),
    (3.0, TypeError, "class_num"),
    (True, TypeError, "class_num"),
])
def test_bad_class_num(class_num, error, match):
    with pytest.raises(error, match=match):
        R.sparse_focal_loss(LABELS, P, class_num=class_num)


# --------------------------------------------------------------------------- reduction


@pytest.mark.parametrize("fn", [R.reduce, R.sample_weights])
@pytest.mark.parametrize("reduction, error", [
    ("avg", ValueError), ("SUM", ValueError), (3, TypeError), (["sum"], TypeError),
    (np.array("sum"), TypeError),
])
def test_bad_reduction(fn, reduction, error):
    with pytest.raises(error, match="reduction: expected one of"):
        fn([1.0, 2.0], reduction=reduction)


@pytest.mark.parametrize("fn", [R.reduce, R.sample_weights])
@pytest.mark.parametrize("kwargs, error, match", [
    ({"sample_weight": [1.0, 2.0, 3.0]}, ValueError,
     r"sample_weight: expected a shape that broadcasts to the losses' shape \(2,\), got \(3,\)"),
    ({"sample_weight": [[1.0, 2.0, 3.0]]}, ValueError, "sample_weight"),
    ({"sample_weight": ["a", "b"]}, TypeError, "sample_weight: expected a real numeric"),
    ({"sample_weight": RAGGED}, TypeError, "sample_weight"),
    ({"sample_weight": [1 + 1j, 1]}, TypeError, "sample_weight"),
    ({"mask": [True, False, True]}, ValueError, r"mask: expected a shape .* got \(3,\)"),
    ({"mask": ["yes", "no"]}, TypeError, "mask: expected a boolean"),
])
def test_bad_weights_and_masks(fn, kwargs, error, match):
    with pytest.raises(error, match=match):
        fn([1.0, 2.0], **kwargs)


@pytest.mark.parametrize("values", [["a"], RAGGED, np.array([1j]), None])
def test_bad_values(values):
    with pytest.raises(TypeError, match="values: expected"):
        R.reduce(values)


# --------------------------------------------------------------------------- dispatch


@pytest.mark.parametrize("fn", [R.evaluate, R.value_and_grad])
@pytest.mark.parametrize("name, error", [("focal", ValueError), (["focal_loss"], TypeError),
                                         (None, TypeError)])
def test_bad_name(fn, name, error):
    with pytest.raises(error, match="name: expected one of"):
        fn(name, Y, P)


@pytest.mark.parametrize("fn", [R.evaluate, R.value_and_grad])
def test_dispatch_validates_parameters(fn):
    with pytest.raises(ValueError, match="gamma"):
        fn("focal_loss", Y, P, gamma=-1.0)
    with pytest.raises(TypeError, match="delta"):
        fn("focal_loss", Y, P, delta=1.0)


# --------------------------------------------------------------------------- values, not errors

F32 = np.float32


def f32(x):
    return np.array(x, dtype=F32)


#: TensorFlow 2.21 / Keras 3.15, float32 on CPU (see test_tensorflow_agrees below).
NON_FINITE_CASES = {
    "bce_nan_label": (R.binary_crossentropy, [[np.nan, 1.0]], [[0.5, 0.5]], {}, [np.nan]),
    "bce_nan_prob": (R.binary_crossentropy, [[0.0, 1.0]], [[np.nan, 0.5]], {}, [np.nan]),
    "bce_inf_prob_clipped": (R.binary_crossentropy, [[0.0, 1.0]], [[np.inf, 0.5]], {},
                             [8.317766]),
    "bce_pos_inf_logit": (R.binary_crossentropy, [[0.0, 1.0]], [[np.inf, 0.5]],
                          {"from_logits": True}, [np.nan]),
    "bce_neg_inf_logit": (R.binary_crossentropy, [[0.0]], [[-np.inf]],
                          {"from_logits": True}, [np.nan]),
    "cce_inf_logit": (R.categorical_crossentropy, [[0.0, 1.0, 0.0]], [[np.inf, 0.0, 0.0]],
                      {"from_logits": True}, [np.nan]),
    "cce_inf_target_logit": (R.categorical_crossentropy, [[0.0, 1.0, 0.0]],
                             [[0.0, np.inf, 0.0]], {"from_logits": True}, [np.nan]),
    "cce_neg_inf_logit": (R.categorical_crossentropy, [[0.0, 1.0, 0.0]],
                          [[-np.inf, 0.0, 0.0]], {"from_logits": True}, [np.nan]),
    "cce_inf_prob": (R.categorical_crossentropy, [[0.0, 1.0, 0.0]], [[np.inf, 0.5, 0.5]], {},
                     [np.nan]),
    "cce_zero_row": (R.categorical_crossentropy, [[0.0, 1.0]], [[0.0, 0.0]], {}, [np.nan]),
    "scce_inf_logit": (R.sparse_categorical_crossentropy, [1], [[np.inf, 0.0, 0.0]],
                       {"from_logits": True}, [np.nan]),
    "mse_inf": (R.mean_squared_error, [[np.inf, 1.0]], [[np.inf, 0.5]], {}, [np.nan]),
}


@pytest.mark.parametrize("case", sorted(NON_FINITE_CASES))
def test_non_finite_values_propagate(case):
    fn, y_true, y_pred, params, expected = NON_FINITE_CASES[case]
    out = fn(f32(y_true), f32(y_pred), **params)
    np.testing.assert_allclose(out, expected, rtol=1e-6)


def test_float16_binary_crossentropy_of_a_certain_probability():
    # In float16 the clip bound 1 - eps rounds to 1: log(1 - 1) = -inf, as in TensorFlow.
    out = R.binary_crossentropy(np.array([[0.0], [1.0]], np.float16),
                                np.array([[1.0], [1.0]], np.float16))
    np.testing.assert_array_equal(out, [np.inf, np.nan])


# MSE's d**2 and MAPE's 100 |d| / eps exceed float64 at |d| = 1e300: inf is their value
@pytest.mark.parametrize("name", sorted(set(_RECORDS) - {"mean_squared_error",
                                                        "mean_absolute_percentage_error"}))
def test_huge_logits_stay_finite(name):
    # Every logits formula is the stable one: no exp overflow, no inf - inf.
    params = {"class_num": 3} if name == "sparse_focal_loss" else {}
    if name in WITH_LOGITS:
        params["from_logits"] = True
    y_true = LABELS if name in SPARSE else Y
    huge = [[1e300, -1e300, 0.0], [-1e300, 1e300, 1e300]]
    value, grad = R.value_and_grad(name, y_true, huge, **params)
    assert np.isfinite(value).all(), value
    assert np.isfinite(grad).all(), grad


@pytest.mark.parametrize("name", R.NAMES)
def test_empty_batch(name):
    sparse = S.SPECS[name].labels == "sparse" or S.SPECS[name].inputs == "embeddings"
    y_true = np.zeros((0,)) if sparse else np.zeros((0, 3))
    params = {"class_num": 3} if name == "sparse_focal_loss" else {}
    # CTC: label rows (batch, max_label_length) and logits (batch, time, classes)
    y_pred = np.zeros((0, 4, 3)) if S.SPECS[name].inputs == "ctc" else np.zeros((0, 3))
    ev = R.evaluate(name, y_true, y_pred, **params)
    # Dice and Tversky (axis=None) sum over the batch too: one value, 1 - 0 / eps
    expected = () if name in ("dice", "tversky") else (0,)
    assert ev.value.shape == expected
    assert ev.grad.shape == y_pred.shape


@pytest.mark.parametrize("reduction", R.REDUCTIONS)
def test_reduce_returns_empty_and_scalar_values_unreduced(reduction):
    empty = R.reduce(np.zeros((0,)), reduction=reduction)
    assert empty.shape == (0,)
    weighted = R.reduce(np.zeros((0,)), sample_weight=np.zeros((0,)), reduction=reduction)
    assert weighted.shape == (0,)
    assert R.reduce(2.0, sample_weight=3.0, reduction=reduction) == 6.0


@pytest.mark.parametrize("reduction", ["sum_over_batch_size", "sum", "mean",
                                       "mean_with_sample_weight"])
def test_reduce_of_empty_rank_two_values_is_zero(reduction):
    # Keras: CategoricalCrossentropy() on y of shape (2, 0, 3) gives 0.0 (no-NaN divide).
    assert R.reduce(np.zeros((2, 0)), reduction=reduction) == 0.0


def test_reduce_propagates_nan_and_inf():
    assert np.isnan(R.reduce([np.inf, -np.inf]))
    assert np.isnan(R.reduce([np.inf, 1.0], sample_weight=[0.0, 1.0]))
    assert R.reduce([np.inf, 1.0], reduction="sum") == np.inf


# --------------------------------------------------------------------------- TensorFlow


@pytest.fixture(scope="module")
def keras():
    return pytest.importorskip("keras")


TF_FUNCTIONS = {
    R.binary_crossentropy: "binary_crossentropy",
    R.categorical_crossentropy: "categorical_crossentropy",
    R.sparse_categorical_crossentropy: "sparse_categorical_crossentropy",
    R.mean_squared_error: "mean_squared_error",
}


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("case", sorted(NON_FINITE_CASES))
def test_tensorflow_agrees(keras, case):
    fn, y_true, y_pred, params, expected = NON_FINITE_CASES[case]
    tf_fn = getattr(keras.losses, TF_FUNCTIONS[fn])
    labels = np.array(y_true) if fn is R.sparse_categorical_crossentropy else f32(y_true)
    got = np.asarray(tf_fn(labels, f32(y_pred), **params))
    np.testing.assert_allclose(got, expected, rtol=1e-6)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_tensorflow_empty_batch(keras):
    empty = np.zeros((0, 3), np.float32)
    assert np.asarray(keras.losses.categorical_crossentropy(empty, empty)).shape == (0,)
    assert np.asarray(keras.losses.CategoricalCrossentropy()(empty, empty)).shape == (0,)
    assert float(keras.losses.CategoricalCrossentropy()(
        np.zeros((2, 0, 3)), np.zeros((2, 0, 3)))) == 0.0
