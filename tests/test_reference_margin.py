"""The margin-family references (``lossverify.reference.margin``): hinge, squared hinge,
categorical hinge and cosine similarity.

* values against Keras 3 (TensorFlow, float64) on Hypothesis-drawn inputs that include
  the hard regimes: labels -1/1, 0/1 (converted), soft and mixed (not converted);
  ``y_pred`` exactly at the margin; ties for categorical hinge's maximum; zero vectors
  and norms below cosine similarity's 1e-7 floor;
* the analytic gradients against float64 central differences away from the kinks, and
  against ``tf.GradientTape`` (float64) everywhere, kinks included: TensorFlow's
  ``maximum``/``minimum``/``reduce_max`` conventions;
* the kink flags, the batch-wide label conversion, invariants, argument errors and the
  module's doctests.

TensorFlow is imported only by the tests that compare with it.
"""

from __future__ import annotations

import doctest

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import lossverify.reference as R
import lossverify.reference.margin as M

SETTINGS = settings(max_examples=30, deadline=None, derandomize=True)
U64 = 2.0**-53
NAMES = ("hinge", "squared_hinge", "categorical_hinge", "cosine_similarity")
HINGE_KINDS = ("-1/1", "0/1", "soft", "mixed -1/0/1")
MARGIN_VALUES = (-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0)  # y p == 1 for y in {-1, 1, +-0.5, 2}


def _close(actual, expected, scale, what, factor=64.0):
    """Equal to ``factor`` float64 roundings of the terms (``scale``)."""
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    tol = factor * U64 * (np.asarray(scale) + np.abs(expected)) + 1e-300
    same = (actual == expected) | (np.isnan(actual) & np.isnan(expected))
    bad = ~same & ~(np.abs(actual - expected) <= tol)
    assert not bad.any(), (f"{what}: {actual[bad]} != {expected[bad]} "
                           f"(tolerance {np.broadcast_to(tol, bad.shape)[bad]})")


# ----------------------------------------------------------------------------- inputs


def _floats(lo, hi):
    return st.floats(lo, hi, allow_nan=False, allow_infinity=False)


def _shape(data, min_classes=1):
    batch = data.draw(st.integers(1, 4), label="batch")
    return batch, data.draw(st.integers(min_classes, 5), label="classes")


def _hinge_labels(data, shape, kind):
    if kind == "-1/1":
        values = st.sampled_from([-1.0, 1.0])
    elif kind == "0/1":
        values = st.sampled_from([0.0, 1.0])
    elif kind == "mixed -1/0/1":
        values = st.sampled_from([-1.0, 0.0, 1.0])
    else:
        values = _floats(0.0, 1.0)
    return data.draw(hnp.arrays(np.float64, shape, elements=values), label=f"y_true ({kind})")


def _predictions(data, shape, at_margin=True, lo=-3.0, hi=3.0):
    """Reals in [lo, hi], with values on the margin / ties mixed in when ``at_margin``."""
    elements = _floats(lo, hi)
    if at_margin:
        elements = st.one_of(elements, st.sampled_from(MARGIN_VALUES))
    return data.draw(hnp.arrays(np.float64, shape, elements=elements), label="y_pred")


def _one_hot(data, batch, n):
    labels = data.draw(st.lists(st.integers(0, n - 1), min_size=batch, max_size=batch),
                       label="classes of the one-hot labels")
    return np.eye(n)[labels]


def _categorical_labels(data, batch, n):
    if data.draw(st.booleans(), label="soft categorical labels"):
        y = data.draw(hnp.arrays(np.float64, (batch, n), elements=_floats(0.0, 1.0)),
                      label="y_true (soft)") + 1e-3
        return y / y.sum(-1, keepdims=True)
    return _one_hot(data, batch, n)


def _vectors(data, shape, label):
    """Rows of reals, some zero, some with norms far below, near or above the 1e-7 floor."""
    x = data.draw(hnp.arrays(np.float64, shape, elements=_floats(-10.0, 10.0)), label=label)
    kinds = data.draw(st.lists(st.sampled_from(["plain", "zero", "tiny", "floor", "large"]),
                               min_size=shape[0], max_size=shape[0]), label=f"{label} rows")
    for i, kind in enumerate(kinds):
        norm = np.linalg.norm(x[i]) or 1.0
        if kind == "zero":
            x[i] = 0.0
        elif kind == "tiny":
            x[i] *= 10.0 ** -data.draw(st.integers(8, 30), label="tiny exponent") / norm
        elif kind == "floor":
            x[i] *= data.draw(_floats(0.5e-7, 2e-7), label="norm near the floor") / norm
        elif kind == "large":
            x[i] *= 1e6
    return x


def _hinge_case(data):
    kind = data.draw(st.sampled_from(HINGE_KINDS), label="label kind")
    shape = _shape(data)
    return _hinge_labels(data, shape, kind), _predictions(data, shape), {}, kind


def _categorical_case(data):
    batch, n = _shape(data)
    return _categorical_labels(data, batch, n), _predictions(data, (batch, n)), {}, "cat"


def _cosine_case(data):
    batch, n = _shape(data)
    y_true, y_pred = _vectors(data, (batch, n), "y_true"), _vectors(data, (batch, n), "y_pred")
    if data.draw(st.booleans(), label="axis 0"):
        return y_true.T.copy(), y_pred.T.copy(), {"axis": 0}, "cos"
    return y_true, y_pred, {}, "cos"


CASES = {"hinge": _hinge_case, "squared_hinge": _hinge_case,
         "categorical_hinge": _categorical_case, "cosine_similarity": _cosine_case}


# ----------------------------------------------------------------------------- Keras


@pytest.fixture(scope="module")
def tf():
    return pytest.importorskip("tensorflow")


@pytest.fixture(scope="module")
def keras_losses(tf):
    import keras

    return keras.losses


def _keras_value_and_grad(tf, keras_losses, name, y_true, y_pred, **params):
    """Keras's per-sample values and ``d sum(values) / d y_pred``, eager, float64."""
    yt, yp = tf.constant(y_true, tf.float64), tf.constant(y_pred, tf.float64)
    with tf.GradientTape() as tape:
        tape.watch(yp)
        value = getattr(keras_losses, name)(yt, yp, **params)
        total = tf.reduce_sum(value)
    return np.asarray(value), np.asarray(tape.gradient(total, yp))


@pytest.mark.parametrize("name", NAMES)
@SETTINGS
@given(data=st.data())
def test_values_and_gradients_match_keras_float64(tf, keras_losses, name, data):
    """Same float64 values as Keras, and the same gradient as TensorFlow's tape on every
    sample, kinks included (exact margins, ties, zero vectors: the conventions), except
    kinks that soft labels put within rounding reach (a sum in another order may land on
    the other side)."""
    y_true, y_pred, params, kind = CASES[name](data)
    ev = R.EVALUATORS[name](y_true, y_pred, **params)
    value, grad = _keras_value_and_grad(tf, keras_losses, name, y_true, y_pred, **params)
    _close(ev.value, value, ev.value_scale, f"{name} value ({kind})")
    axis = params.get("axis", -1)
    hard = np.all(np.isin(y_true, (-1.0, 0.0, 1.0)), axis=axis)
    # TensorFlow reads float64 subnormals as 0 on CPU: a tie the reference flags as a kink
    # (categorical hinge's max of s and the masked 0), where TF splits the gradient
    tiny = np.finfo(np.float64).tiny
    flushed = np.any((y_pred != 0) & (np.abs(y_pred) < tiny), axis=axis)
    rows = np.expand_dims((hard & ~flushed) | ~ev.kink, axis)
    rows = np.broadcast_to(rows, ev.grad.shape)
    _close(ev.grad[rows], grad[rows], ev.grad_scale[rows], f"{name} gradient ({kind})")


WORKED = [  # the docstrings' examples, checked against Keras
    ("hinge", [[0.0, 1.0], [0.0, 0.0]], [[0.6, 0.4], [0.4, 0.6]], {}, [1.1, 1.5]),
    ("hinge", [[0.0, 1.0], [1.0, 0.5]], [[0.6, 0.4], [0.4, 0.6]], {}, [0.8, 0.65]),
    ("squared_hinge", [[0.0, 1.0], [0.0, 0.0]], [[0.6, 0.4], [0.4, 0.6]], {}, [1.46, 2.26]),
    ("categorical_hinge", [[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]],
     [[0.2, 0.5, 0.3], [0.6, 0.1, 0.9]], {}, [0.8, 1.3]),
    ("categorical_hinge", [[1.0, 0.0]], [[0.5, -2.0]], {}, [0.5]),
    ("cosine_similarity", [[0.0, 1.0], [1.0, 1.0], [1.0, 1.0]],
     [[1.0, 0.0], [1.0, 1.0], [-1.0, -1.0]], {}, [0.0, -1.0, 1.0]),
    ("cosine_similarity", [[3.0, 4.0]], [[0.0, 1e-8]], {}, [-0.08]),
    ("cosine_similarity", [[3.0, 0.0], [4.0, 1.0]], [[0.0, 4.0], [2.0, 3.0]], {"axis": 0},
     [-0.8, -0.6]),
]


@pytest.mark.parametrize("name, y_true, y_pred, params, expected", WORKED)
def test_worked_examples(tf, keras_losses, name, y_true, y_pred, params, expected):
    ours = getattr(M, name)(y_true, y_pred, **params)
    np.testing.assert_allclose(ours, expected, rtol=1e-12, atol=1e-15)
    theirs, _ = _keras_value_and_grad(tf, keras_losses, name, y_true, y_pred, **params)
    np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-15)


def test_doctests():
    result = doctest.testmod(M, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= 8 and result.failed == 0


# ----------------------------------------------------------------------------- conventions

# (name, y_true, y_pred, params, expected gradient): TensorFlow's choices at the kinks
KINKS = {
    # tf.maximum(x, 0) passes the gradient at x == 0: the active side, -y / n
    "hinge at the margin": ("hinge", [[1.0, -1.0, 1.0]], [[1.0, -1.0, 0.5]], {},
                            [[-1 / 3, 1 / 3, -1 / 3]]),
    "hinge at the margin, 0/1 labels": ("hinge", [[1.0, 0.0]], [[1.0, -1.0]], {},
                                        [[-0.5, 0.5]]),
    "squared hinge at the margin": ("squared_hinge", [[1.0, -1.0]], [[1.0, -1.0]], {},
                                    [[0.0, 0.0]]),
    # neg - pos + 1 == 0: the gradient flows
    "categorical hinge at the margin": ("categorical_hinge", [[1.0, 0.0, 0.0]],
                                        [[1.5, 0.5, 0.25]], {}, [[-1.0, 1.0, 0.0]]),
    # reduce_max splits the gradient among tied maxima
    "categorical hinge, tie": ("categorical_hinge", [[1.0, 0.0, 0.0]], [[0.2, 0.5, 0.5]], {},
                               [[-1.0, 0.5, 0.5]]),
    # the target's slot (1 - 1) * p = 0 ties with another class's 0
    "categorical hinge, tie with the target slot": ("categorical_hinge", [[1.0, 0.0, 0.0]],
                                                    [[0.2, 0.0, -0.5]], {},
                                                    [[-1.0, 0.5, 0.0]]),
    # neg is the target's slot alone: no gradient to the other classes
    "categorical hinge, neg from the target slot": ("categorical_hinge", [[1.0, 0.0, 0.0]],
                                                    [[0.2, -0.5, -0.5]], {},
                                                    [[-1.0, 0.0, 0.0]]),
    # below the floor the loss is -1e7 t_hat . p: gradient -1e7 t_hat, also at p = 0
    "cosine, zero y_pred": ("cosine_similarity", [[3.0, 4.0]], [[0.0, 0.0]], {},
                            [[-6e6, -8e6]]),
    "cosine, y_pred below the floor": ("cosine_similarity", [[3.0, 4.0]], [[1e-9, -1e-9]], {},
                                       [[-6e6, -8e6]]),
    "cosine, zero y_true": ("cosine_similarity", [[0.0, 0.0]], [[1.0, 2.0]], {},
                            [[0.0, 0.0]]),
}


@pytest.mark.parametrize("case", sorted(KINKS))
def test_gradient_conventions_at_kinks(tf, keras_losses, case):
    name, y_true, y_pred, params, expected = KINKS[case]
    ev = R.EVALUATORS[name](y_true, y_pred, **params)
    np.testing.assert_allclose(ev.grad, expected, rtol=1e-15, atol=1e-300)
    _, grad = _keras_value_and_grad(tf, keras_losses, name, y_true, y_pred, **params)
    np.testing.assert_allclose(ev.grad, grad, rtol=1e-14, atol=1e-300)


@pytest.mark.parametrize("name", NAMES)
def test_kink_conventions_inside_tf_function(tf, keras_losses, name):
    """``tf.function`` takes the same branches as eager at the kinks (XLA does not for
    cosine similarity's floor: see test_xla_cosine_gradient_deviation)."""
    cases = [c for c in KINKS.values() if c[0] == name]
    fn = getattr(keras_losses, name)

    @tf.function
    def grad(yt, yp):
        with tf.GradientTape() as tape:
            tape.watch(yp)
            total = tf.reduce_sum(fn(yt, yp))
        return tape.gradient(total, yp)

    for _, y_true, y_pred, _, expected in cases:
        got = grad(tf.constant(y_true, tf.float64), tf.constant(y_pred, tf.float64))
        np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-14)


def test_xla_cosine_gradient_deviation(tf, keras_losses):
    """A known TensorFlow/XLA deviation, recorded: XLA lowers RsqrtGrad as
    ``rsqrt**3 * dy / -2``, so below the floor, where ``dy == 0``, ``rsqrt**3``
    overflows (always for a zero vector) and the gradient is ``0 * inf = NaN``; eager
    and ``tf.function`` give the reference's ``-1e7 t_hat``."""

    @tf.function(jit_compile=True)
    def grad(yt, yp):
        with tf.GradientTape() as tape:
            tape.watch(yp)
            total = tf.reduce_sum(keras_losses.cosine_similarity(yt, yp))
        return tape.gradient(total, yp)

    got = np.asarray(grad(tf.constant([[3.0, 4.0]]), tf.constant([[0.0, 0.0]])))
    ref = M._eval_cosine_similarity([[3.0, 4.0]], [[0.0, 0.0]]).grad
    np.testing.assert_allclose(ref, [[-6e6, -8e6]])
    if not np.isnan(got).all():  # fixed upstream: the deviation can be dropped
        np.testing.assert_allclose(got, ref, rtol=1e-6)


# ----------------------------------------------------------------------------- gradients


def _far_from_kinks(name, y_true, y_pred, params):
    """Samples whose every finite-difference step stays on one side of every kink."""
    gap = 1e-3
    if name in ("hinge", "squared_hinge"):
        y = M.convert_binary_labels_to_hinge(y_true)
        return np.all(np.abs(1 - y * y_pred) > gap, axis=-1)
    if name == "categorical_hinge":
        others = np.sort((1 - y_true) * y_pred, axis=-1)
        x = others[..., -1] - np.sum(y_true * y_pred, -1) + 1
        ok = np.abs(x) > gap
        if y_pred.shape[-1] > 1:
            ok &= others[..., -1] - others[..., -2] > gap
        return ok
    ax = params.get("axis", -1)
    norm = np.linalg.norm(y_pred, axis=ax)
    return norm > 1e-3


@pytest.mark.parametrize("name", NAMES)
@SETTINGS
@given(data=st.data())
def test_gradient_matches_central_differences(central_difference, name, data):
    y_true, y_pred, params, kind = CASES[name](data)
    ev = R.EVALUATORS[name](y_true, y_pred, **params)
    ax = params.get("axis", -1)
    fd = central_difference(lambda p: R.EVALUATORS[name](y_true, p, **params).value,
                            y_pred, axis=ax)
    far = np.expand_dims(_far_from_kinks(name, y_true, y_pred, params), ax)
    rows = np.broadcast_to(far, y_pred.shape)
    # central differences of a smooth function: O(h**2) plus rounding of the values
    size = np.abs(ev.grad) + ev.grad_scale + 1.0
    bad = rows & ~(np.abs(fd - ev.grad) <= 1e-6 * size)
    assert not bad.any(), (f"{name} ({kind}): analytic {ev.grad[bad]} vs central differences "
                           f"{fd[bad]} at y_pred {y_pred[bad]}")


@SETTINGS
@given(data=st.data())
def test_cosine_gradient_below_the_floor(central_difference, data):
    """Norms below 1e-7: the loss is linear, and so exact under a tiny step."""
    batch, n = _shape(data)
    y_true = data.draw(hnp.arrays(np.float64, (batch, n), elements=_floats(-10.0, 10.0)),
                       label="y_true")
    y_pred = data.draw(hnp.arrays(np.float64, (batch, n), elements=_floats(-1.0, 1.0)),
                       label="y_pred direction")
    norm = np.linalg.norm(y_pred, axis=-1, keepdims=True)
    y_pred = np.where(norm > 0, y_pred / np.where(norm > 0, norm, 1.0), 0.0) * 1e-9
    ev = M._eval_cosine_similarity(y_true, y_pred)
    fd = central_difference(lambda p: M.cosine_similarity(y_true, p), y_pred, h_rel=1e-12)
    np.testing.assert_allclose(ev.grad, fd, rtol=1e-6, atol=1e-6 * M.NORM_CAP)


# ----------------------------------------------------------------------------- kinks flags


def test_hinge_kink_flags_are_tight():
    u = 2.0**-24
    y = np.array([[1.0]])
    for p, flagged in [(1.0, True), (1.0 + 2 * u, True), (1.0 - 4 * u, True),
                       (1.0 + 1e-4, False), (0.999, False), (3.0, False)]:
        assert M._eval_hinge(y, [[p]]).kink[0] == flagged, p
        assert not M._eval_squared_hinge(y, [[p]]).kink[0]  # continuous gradient


def test_categorical_hinge_kink_flags():
    ev = M._eval_categorical_hinge(
        [[1, 0, 0], [1, 0, 0], [1, 0, 0], [1, 0, 0], [1, 0, 0]],
        [[1.5, 0.5, 0.25],   # at the margin
         [0.2, 0.5, 0.5],    # active tie
         [3.0, 0.5, 0.5],    # tie, but the hinge is inactive: the gradient is 0 anyway
         [0.2, 0.5, 0.4],    # no tie, active
         [0.2, 0.0, -0.5]])  # tie of a class's 0 with the target's slot
    assert ev.kink.tolist() == [True, True, False, False, True]
    # a subnormal maximum: TensorFlow's CPU kernels flush it to 0, a tie with the target
    tiny = np.float32(1.35e-39)
    assert M._eval_categorical_hinge(np.float32([[1, 0]]), np.float32([[tiny, tiny]])).kink[0]
    assert not M._eval_categorical_hinge([[1, 0]], [[1e-30, 1e-30]]).kink[0]


def test_cosine_kink_flags_only_at_the_floor():
    t = [[3.0, 4.0]] * 5
    p = [[1e-7, 0.0], [1e-7 * (1 + 1e-6), 0.0], [1e-7 * (1 + 1e-4), 0.0], [0.0, 0.0],
         [1.0, 0.0]]
    assert M._eval_cosine_similarity(t, p).kink.tolist() == [True, True, False, False, False]


def test_cosine_scales_cover_flushed_subnormals():
    """TensorFlow reads a subnormal float32 y_true as 0; below the floor it is multiplied
    by 1e7 twice, so the gradient it makes may be missing entirely: the budget allows
    that element's whole gradient, and only where an input is subnormal."""
    from lossverify.tolerance import allowed

    zero = np.float32([[0.0, 0.0]])
    ev = M._eval_cosine_similarity(np.float32([[3.1e-40, 3.1e-40]]), zero)
    assert (np.abs(ev.grad) > 1e-27).all()  # far beyond the underflow allowance 2e-31
    assert (allowed(ev.grad_scale, 2) >= np.abs(ev.grad)).all()
    normal = M._eval_cosine_similarity(np.float32([[3.1e-30, 3.1e-30]]), zero)
    assert (allowed(normal.grad_scale, 2) < 1e-5 * np.abs(normal.grad)).all()


# ----------------------------------------------------------------------------- semantics


def test_label_conversion_is_decided_on_the_whole_array():
    conv = M.convert_binary_labels_to_hinge
    np.testing.assert_array_equal(conv([[0.0, 1.0], [1.0, 1.0]]), [[-1, 1], [1, 1]])
    np.testing.assert_array_equal(conv([[-1.0, 1.0]]), [[-1, 1]])
    np.testing.assert_array_equal(conv([[0.0, 1.0], [1.0, 0.5]]), [[0, 1], [1, 0.5]])
    np.testing.assert_array_equal(conv([[0.0, 1.0, -1.0]]), [[0, 1, -1]])
    np.testing.assert_array_equal(conv([[1.0, 1.0]]), [[1, 1]])  # all ones: converted, same
    out = conv([[0.0, np.nan]])
    assert out[0, 0] == 0 and np.isnan(out[0, 1])
    assert conv(np.zeros((0, 2))).shape == (0, 2)
    # the same sample, another batch: its loss changes
    p = [[0.6, 0.4]]
    assert M.hinge([[0.0, 1.0]], p)[0] == pytest.approx(1.1)
    assert M.hinge([[0.0, 1.0], [0.5, 0.5]], p * 2)[0] == pytest.approx(0.8)


def test_integer_and_boolean_labels():
    np.testing.assert_allclose(M.hinge(np.array([[0, 1]]), [[0.6, 0.4]]), [1.1])
    np.testing.assert_allclose(M.hinge(np.array([[False, True]]), [[0.6, 0.4]]), [1.1])


def test_empty_batch():
    for name in NAMES:
        assert getattr(M, name)(np.zeros((0, 3)), np.zeros((0, 3))).shape == (0,)


@SETTINGS
@given(data=st.data())
def test_invariants(data):
    batch, n = _shape(data)
    y_true = _vectors(data, (batch, n), "y_true")
    y_pred = _vectors(data, (batch, n), "y_pred")
    cos = M.cosine_similarity(y_true, y_pred)
    assert np.all(np.abs(cos) <= 1 + 4 * n * U64)
    np.testing.assert_allclose(M.cosine_similarity(y_true, -y_pred), -cos, atol=0)
    np.testing.assert_allclose(M.cosine_similarity(y_pred, y_true), cos, rtol=1e-14,
                               atol=1e-300)
    signs = _hinge_labels(data, (batch, n), "-1/1")
    p = _predictions(data, (batch, n))
    h, sq = M.hinge(signs, p), M.squared_hinge(signs, p)
    assert np.all(h >= 0) and np.all(sq >= h * h * (1 - 1e-14))  # Jensen
    np.testing.assert_array_equal(M.hinge((signs + 1) / 2, p), h)  # 0/1 labels converted
    one_hot = _one_hot(data, batch, n)
    assert np.all(M.categorical_hinge(one_hot, p) >= 0)


def test_evaluation_shapes():
    rng = np.random.default_rng(0)
    y, p = rng.normal(size=(2, 3, 4)), rng.normal(size=(2, 3, 4))
    for name in NAMES:
        ev = R.EVALUATORS[name](np.sign(y), p)
        assert ev.value.shape == ev.value_scale.shape == ev.kink.shape == (2, 3), name
        assert ev.grad.shape == ev.grad_scale.shape == (2, 3, 4), name
        assert ev.kink.dtype == bool, name
    ev = M._eval_cosine_similarity(y, p, axis=1)
    assert ev.value.shape == (2, 4) and ev.grad.shape == (2, 3, 4)


# ----------------------------------------------------------------------------- errors

ERRORS = [
    ("hinge", ([[1.0, 0.0]], [[1.0, 0.0, 0.0]]), {}, ValueError, "y_true: expected the shape"),
    ("hinge", (1.0, 1.0), {}, ValueError, "y_pred: expected at least rank 1"),
    ("squared_hinge", (np.zeros((2, 0)), np.zeros((2, 0))), {}, ValueError,
     "non-empty last axis"),
    ("categorical_hinge", ([["a"]], [[1.0]]), {}, TypeError, "y_true: expected a real"),
    ("categorical_hinge", ([[1.0]], [[1j]]), {}, TypeError, "y_pred: expected a real"),
    ("cosine_similarity", ([[1.0, 0.0]], [[1.0, 0.0]]), {"axis": 2}, ValueError,
     "axis: expected an axis in"),
    ("cosine_similarity", ([[1.0, 0.0]], [[1.0, 0.0]]), {"axis": 1.0}, TypeError,
     "axis: expected an int"),
    ("cosine_similarity", ([[1.0, 0.0]], [[1.0, 0.0]]), {"axis": True}, TypeError,
     "axis: expected an int"),
    ("cosine_similarity", (np.zeros((2, 0)), np.zeros((2, 0))), {}, ValueError,
     "y_pred: expected at least one class"),
    ("cosine_similarity", ([1.0, 0.0], [[1.0, 0.0]]), {}, ValueError,
     "y_true: expected the shape"),
]


@pytest.mark.parametrize("name, args, params, error, message", ERRORS)
def test_bad_arguments_name_the_argument(name, args, params, error, message):
    with pytest.raises(error, match=message):
        getattr(M, name)(*args, **params)
