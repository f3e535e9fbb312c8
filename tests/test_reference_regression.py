"""The regression references (MAE, MAPE, MSLE, Huber, log-cosh) against Keras and calculus.

Values and gradients against Keras / ``tf.GradientTape`` in float64 on Hypothesis-drawn
inputs that include the hard regimes (exact ties ``y_pred == y_true``, targets below
``eps``, ``y_pred`` at, below and near MSLE's ``eps`` and near -1, ``|e| == delta``,
errors far beyond where ``cosh`` overflows), then the analytic gradients against float64
central differences away from the kinks, TensorFlow's conventions at the kinks, a few
identities, and argument checking.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from lossverify.reference import computing_in
from lossverify.reference import regression as RR

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

SETTINGS = settings(max_examples=30, deadline=None, derandomize=True)
U64 = 2.0**-53
EPS32 = float(np.float32(1e-7))
DELTAS = (1.0, 0.1, 2.5, 100.0, 1e-3)
NAMES = ("mean_absolute_error", "mean_absolute_percentage_error",
         "mean_squared_logarithmic_error", "huber", "log_cosh")
#: name -> the evaluator (value, gradient, error scales)
EVALS = {name: getattr(RR, f"_eval_{name}") for name in NAMES}

#: Keras's log_cosh takes ``log(2)`` as ``ops.log(2.0)``, a float32 result, then casts it:
#: in float64 every element is off by ``log(2) - float32(log(2))`` (-1.9e-9; a known
#: deviation, see test_keras_log_cosh_float64_uses_a_float32_log2).
LOG_COSH_F64_OFFSET = math.log(2.0) - float(np.float32(math.log(2.0)))


def _keras(name, y_true, y_pred, dtype=np.float64, **params):
    """Keras's per-sample values and ``d sum / d y_pred`` (GradientTape), as NumPy."""
    yt = tf.constant(np.asarray(y_true, dtype))
    yp = tf.constant(np.asarray(y_pred, dtype))
    with tf.GradientTape() as tape:
        tape.watch(yp)
        value = getattr(keras.losses, name)(yt, yp, **params)
        total = tf.reduce_sum(value)
    return value.numpy(), tape.gradient(total, yp).numpy()


def _keras_value_f64(name, ref_value):
    """What Keras computes in float64 for a reference value (its known deviation)."""
    if name == "log_cosh":
        return ref_value + LOG_COSH_F64_OFFSET
    return ref_value


def _close(actual, expected, allowed, what):
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    with np.errstate(invalid="ignore"):
        bad = ~(np.abs(actual - expected) <= allowed)
    assert not bad.any(), (f"{what}: {actual[bad]} != {expected[bad]} "
                           f"(allowed {np.broadcast_to(allowed, bad.shape)[bad]})")


# ----------------------------------------------------------------------------- inputs

_SPECIAL = (0.0, EPS32, -EPS32, 1e-7, 1e-8, -1.0, 1.0, float(np.nextafter(EPS32, 1.0)),
            float(np.nextafter(EPS32, 0.0)), -1.0 + 1e-9, 1e3, -1e3)


def _elements():
    """Regression values: wide, small (log-uniform-ish), and the special points."""
    return st.one_of(
        st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False),
        st.floats(-1e-3, 1e-3, allow_nan=False, allow_infinity=False),
        st.sampled_from(_SPECIAL),
    )


@st.composite
def regression_inputs(draw, delta=None):
    """``(y_true, y_pred)`` float64 of shape (batch, n), with exact ties, errors of exactly
    ``+-delta`` (Huber), and errors beyond cosh's overflow mixed in."""
    batch = draw(st.integers(1, 4), label="batch")
    n = draw(st.integers(1, 5), label="n")
    y_true = draw(hnp.arrays(np.float64, (batch, n), elements=_elements()), label="y_true")
    y_pred = draw(hnp.arrays(np.float64, (batch, n), elements=_elements()), label="y_pred")
    kind = draw(hnp.arrays(np.int8, (batch, n), elements=st.integers(0, 4)), label="kind")
    y_pred = np.where(kind == 1, y_true, y_pred)  # exact ties
    if delta is not None:  # |e| == delta exactly (when y_true + delta is exact)
        y_pred = np.where(kind == 2, y_true + delta, y_pred)
        y_pred = np.where(kind == 3, y_true - delta, y_pred)
    return y_true, y_pred


# ----------------------------------------------------------------------------- values


EXAMPLES = [
    ("mean_absolute_error", [1.0, 0.3, 1.0], [1.9, 0.3, 1.8], {}),
    ("mean_absolute_error", [[0., 1.], [2., 2.]], [[1., 1.], [0., 5.]], {}),
    ("mean_absolute_percentage_error", [100., 200., 300.], [90., 210., 310.], {}),
    ("mean_absolute_percentage_error", [[0., -2.]], [[1e-7, -1.]], {}),
    ("mean_squared_logarithmic_error", [[1., 2.], [0., -1.]], [[3., 2.], [-5., 1.]], {}),
    ("huber", [[0., 1.], [0., 0.]], [[0.6, 0.4], [0.4, 0.6]], {}),
    ("huber", [[0., 0., 0.]], [[0.5, 2., -3.]], {"delta": 2.0}),
    ("log_cosh", [[0., 1.], [0., 0.]], [[1., 1.], [0., 0.]], {}),
    ("log_cosh", [[0.]], [[1000.]], {}),
]


@pytest.mark.parametrize("name, y_true, y_pred, params", EXAMPLES)
def test_worked_examples_match_keras(name, y_true, y_pred, params):
    ours = getattr(RR, name)(y_true, y_pred, **params)
    theirs, _ = _keras(name, y_true, y_pred, **params)
    np.testing.assert_allclose(_keras_value_f64(name, ours), theirs, rtol=1e-12, atol=1e-15)


def test_keras_docstring_means():
    """Keras's documented reduced values are the means of the per-sample references."""
    assert round(float(RR.huber([[0, 1], [0, 0]], [[0.6, 0.4], [0.4, 0.6]]).mean()), 6) == 0.155
    assert round(float(RR.log_cosh([[0., 1.], [0., 0.]], [[1., 1.], [0., 0.]]).mean()), 3) == 0.108


@pytest.mark.parametrize("name", NAMES)
@SETTINGS
@given(data=st.data())
def test_values_and_gradients_match_keras_float64(name, data):
    """Everywhere, kinks included: the gradient there is TensorFlow's convention."""
    delta = data.draw(st.sampled_from(DELTAS), label="delta") if name == "huber" else None
    y_true, y_pred = data.draw(regression_inputs(delta), label="inputs")
    params = {} if delta is None else {"delta": delta}
    ev = EVALS[name](y_true, y_pred, **params)
    value, grad = _keras(name, y_true, y_pred, **params)
    n = y_pred.shape[-1]
    _close(value, _keras_value_f64(name, ev.value),
           16 * (n + 1) * U64 * (ev.value_scale + np.abs(ev.value)) + 1e-300, f"{name} value")
    # TensorFlow's CPU kernels flush a subnormal y_pred - y_true to 0 (sign 0, gradient 0)
    # and XLA does not: such elements are kinks (flagged), not compared here
    flushed = (y_pred != y_true) & (np.abs(y_pred - y_true) < np.finfo(np.float64).tiny)
    _close(grad[~flushed], ev.grad[~flushed],
           (16 * (n + 1) * U64 * (ev.grad_scale + np.abs(ev.grad)) + 1e-300)[~flushed],
           f"{name} gradient")


# ----------------------------------------------------------------------------- gradients


def _away_from_kinks(name, y_true, y_pred, delta):
    """Per element: farther than 100 finite-difference steps from every kink."""
    h = 100 * 1e-6 * np.maximum(np.abs(y_pred), 1.0)
    e = y_pred - y_true
    if name in ("mean_absolute_error", "mean_absolute_percentage_error"):
        return np.abs(e) > h
    if name == "mean_squared_logarithmic_error":
        return (np.abs(y_pred - EPS32) > h) & (y_pred > -1.0 + h)
    if name == "huber":
        return np.abs(np.abs(e) - delta) > h
    return np.ones(e.shape, bool)


@pytest.mark.parametrize("name", NAMES)
@SETTINGS
@given(data=st.data())
def test_gradients_match_central_differences(name, data, central_difference):
    delta = data.draw(st.sampled_from(DELTAS), label="delta") if name == "huber" else 1.0
    params = {"delta": delta} if name == "huber" else {}
    y_true, y_pred = data.draw(regression_inputs(), label="inputs")
    # move kinky elements away: shift y_pred by a clearly resolvable amount
    ok = _away_from_kinks(name, y_true, y_pred, delta)
    y_pred = np.where(ok, y_pred, y_pred + 0.37 * np.maximum(1.0, np.abs(y_pred)))
    ok = _away_from_kinks(name, y_true, y_pred, delta)
    ev = EVALS[name](y_true, y_pred, **params)
    numeric = central_difference(lambda x: getattr(RR, name)(y_true, x, **params), y_pred)
    # rounding of the values at the shifted points over the step, plus truncation
    h = 1e-6 * np.maximum(np.abs(y_pred), 1.0)
    scale = ev.value_scale + np.abs(ev.value)
    for shifted in (y_pred + h, y_pred - h):
        moved = EVALS[name](y_true, shifted, **params)
        scale = np.maximum(scale, moved.value_scale + np.abs(moved.value))
    rounding = 64 * U64 * np.expand_dims(scale, -1) / h
    # x + h and x - h round by u |x| each: the steps differ, and the curvature (at most
    # ~16 for these losses at n = 1) no longer cancels
    asymmetry = 16 * 64 * U64 * np.maximum(np.abs(y_pred), 1.0)
    allowed = 1e-5 * (np.abs(ev.grad) + ev.grad_scale) + rounding + asymmetry
    _close(numeric[ok], ev.grad[ok], allowed[ok], f"{name} gradient vs central differences")


def test_gradient_conventions_at_the_kinks():
    """TensorFlow's: abs' sign(0) = 0, maximum passes ties, Huber's branches agree."""
    # MAE and MAPE at e == 0: 0
    for name in ("mean_absolute_error", "mean_absolute_percentage_error"):
        ev = EVALS[name]([[2.0, 0.0, 3.0]], [[2.0, 0.0, 5.0]])
        _, grad = _keras(name, [[2.0, 0.0, 3.0]], [[2.0, 0.0, 5.0]])
        assert ev.grad[0, 0] == ev.grad[0, 1] == 0.0 and ev.kink.tolist() == [True]
        np.testing.assert_allclose(ev.grad, grad, rtol=1e-15)
    # MSLE: y_pred == eps passes (float32's 1e-7 in every dtype), below eps blocks
    y_pred = [[EPS32, 1e-7, -0.5, -1.0, -7.0, 2.0]]
    y_true = [[1.0] * 6]
    ev = EVALS["mean_squared_logarithmic_error"](y_true, y_pred)
    _, grad = _keras("mean_squared_logarithmic_error", y_true, y_pred)
    assert ev.grad[0, 0] != 0.0 and (ev.grad[0, 1:5] == 0.0).all() and ev.kink.tolist() == [True]
    np.testing.assert_allclose(ev.grad, grad, rtol=1e-14)
    # Huber at |e| == delta: the quadratic branch's e equals the linear one's delta sign(e)
    for delta in (1.0, 0.25, 2.5):
        y_pred = [[delta, -delta, 0.0, 3 * delta]]
        ev = EVALS["huber"]([[0.0] * 4], y_pred, delta=delta)
        _, grad = _keras("huber", [[0.0] * 4], y_pred, delta=delta)
        np.testing.assert_array_equal(ev.grad, grad)
        np.testing.assert_array_equal(ev.grad * 4, [[delta, -delta, 0.0, delta]])
        assert not ev.kink.any()


def test_log_cosh_is_finite_and_exact_where_cosh_overflows():
    x = np.array([[80.0, 89.5, 710.5, 1e3, -2e3, 1e300]])
    ev = EVALS["log_cosh"](np.zeros_like(x), x)
    expected = np.abs(x) - math.log(2.0)  # exp(-2|x|) is below float64's resolution here
    np.testing.assert_allclose(ev.value, expected.mean(-1), rtol=1e-15)
    np.testing.assert_array_equal(ev.grad * x.shape[-1], np.sign(x))
    value, grad = _keras("log_cosh", np.zeros((1, 5)), x[:, :5], dtype=np.float32)
    assert np.isfinite(value).all() and np.isfinite(grad).all()


def test_log_cosh_small_errors_have_full_relative_accuracy():
    x = np.array([1e-8, 1e-4, 0.5, 0.999, 1.0, 1.001, -3.0])
    ev = EVALS["log_cosh"](np.zeros((7, 1)), x[:, None])
    # log(cosh(x)) to 50 digits (mpmath), rounded to float64
    expected = [5e-17, 4.9999999916666675e-09, 0.12011450695827752, 0.4330194464208848,
                0.4337808304830272, 0.43454263451956293, 2.309328504577785]
    np.testing.assert_allclose(ev.value, expected, rtol=4e-16)


# ----------------------------------------------------------------------------- identities


@SETTINGS
@given(regression_inputs())
def test_identities(inputs):
    y_true, y_pred = inputs
    e = y_pred - y_true
    big = float(np.abs(e).max()) + 1.0
    # Huber with delta beyond every |e| is half the MSE; log cosh lies between
    # |e| - log 2 and e^2/2 (elementwise, so for the means too); MAE is Huber / delta
    # as delta -> 0 up to delta / 2
    np.testing.assert_allclose(RR.huber(y_true, y_pred, delta=big), 0.5 * (e * e).mean(-1),
                               rtol=1e-14)
    lc = RR.log_cosh(y_true, y_pred)
    assert (lc >= -1e-300).all()
    assert (lc <= 0.5 * (e * e).mean(-1) * (1 + 1e-14) + 1e-300).all()
    assert (lc >= (np.abs(e) - math.log(2.0)).mean(-1) - 1e-12 * big).all()
    d = 1e-6
    np.testing.assert_allclose(RR.huber(y_true, y_pred, delta=d) / d,
                               RR.mean_absolute_error(y_true, y_pred), atol=d)
    # every loss is >= 0 and 0 at y_pred == y_true
    for name in NAMES:
        assert (getattr(RR, name)(y_true, y_pred) >= 0).all()
        assert (getattr(RR, name)(y_true, y_true) == 0).all()


def test_y_true_is_rounded_to_y_pred_dtype_as_keras_does():
    y_true = np.array([[0.1, 1e-8, 3.3]])
    y_pred = np.array([[0.2, 0.0, 3.0]], np.float32)
    for name in NAMES:
        a = EVALS[name](y_true, y_pred)
        b = EVALS[name](y_true.astype(np.float32), y_pred)
        np.testing.assert_array_equal(a.value, b.value)
        np.testing.assert_array_equal(a.grad, b.grad)


@pytest.mark.parametrize("name", NAMES)
def test_computing_in_float32_stays_in_float32(name):
    y_true = np.array([[0.5, -3.0], [1e-8, 700.0]], np.float32)
    y_pred = np.array([[0.25, 200.0], [EPS32, -700.0]], np.float32)
    with computing_in(np.float32):
        ev = EVALS[name](y_true, y_pred)
    for field in ("value", "grad", "value_scale", "grad_scale"):
        assert getattr(ev, field).dtype == np.float32, field
    exact = EVALS[name](y_true, y_pred)
    np.testing.assert_allclose(ev.value, exact.value, rtol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_nan_and_inf_flow_through_quietly(name):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ev = EVALS[name]([[np.nan, 1.0], [np.inf, 1.0]], [[0.0, 1.0], [np.inf, 1.0]])
    assert ev.value.shape == (2,)
    assert np.isnan(ev.value[0])


def test_keras_log_cosh_float64_uses_a_float32_log2():
    """A known deviation: in float64 Keras's log_cosh(0) is -1.9e-9 (float32's log 2)."""
    value, _ = _keras("log_cosh", [[0.0]], [[0.0]])
    assert value[0] == pytest.approx(LOG_COSH_F64_OFFSET, rel=1e-6) and value[0] < 0
    assert RR.log_cosh([[0.0]], [[0.0]])[0] == 0.0


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize("delta, error", [(0.0, ValueError), (-1.0, ValueError),
                                          (float("nan"), ValueError), (float("inf"), ValueError),
                                          ("1", TypeError), (True, TypeError), (None, TypeError)])
def test_bad_delta_names_the_argument(delta, error):
    with pytest.raises(error, match="delta"):
        RR.huber([[0.0]], [[1.0]], delta=delta)


@pytest.mark.parametrize("name", NAMES)
def test_bad_inputs_name_the_argument(name):
    fn = getattr(RR, name)
    with pytest.raises(ValueError, match="y_true"):
        fn([[0.0, 1.0]], [[0.0, 1.0, 2.0]])
    with pytest.raises(ValueError, match="y_pred"):
        fn(np.zeros((2, 0)), np.zeros((2, 0)))
    with pytest.raises(ValueError, match="y_pred"):
        fn(1.0, 2.0)
    with pytest.raises(TypeError, match="y_pred"):
        fn([[0.0]], [["a"]])
    with pytest.raises(TypeError, match="y_true"):
        fn([[1j]], [[0.0]])


def test_check_delta_accepts_numbers():
    assert RR.check_delta(1) == 1.0
    assert RR.check_delta(np.float32(0.1)) == float(np.float32(0.1))
