"""Meta-tests of the regression family (MAE, MAPE, MSLE, Huber, log-cosh).

* Wrong TensorFlow variants must be rejected by ``lossverify.verify``, each by the check
  that has to catch it (the comment above each says why). Several are caught only in one
  regime of the family's input kinds (targets below ``eps``, errors beyond cosh's overflow,
  ``y_pred`` below MSLE's clamp): the regimes are what makes them visible.
* Correct variants must pass: independently written TensorFlow formulas and Keras's own
  function and class, over seeds 0..19 (``max_examples=5``, checks value, gradient and
  graph), and under the rounding adversary. The always-run part covers every loss; the
  full sweep is ``slow``.
* The known deviation (Keras's float64 ``log_cosh`` uses a float32 ``log(2)``): its
  reproducer shows the symptom, and ``verify`` reports it as that deviation, in float64
  only.
"""

from __future__ import annotations

import math
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

from family_meta import assert_seeds_pass, keras_jobs  # noqa: E402

import lossverify  # noqa: E402
from lossverify import adversary as A  # noqa: E402
from lossverify import deviations as D  # noqa: E402
from lossverify import specs as S  # noqa: E402
from lossverify.inputs import LossInputs  # noqa: E402

EPS = 1e-7
LOG2 = math.log(2.0)
SEEDS = range(20)
CHECKS = ("value", "gradient", "graph")
NAMES = ("mean_absolute_error", "mean_absolute_percentage_error",
         "mean_squared_logarithmic_error", "huber", "log_cosh")


def _error(y_true, y_pred):
    return y_pred - tf.cast(y_true, y_pred.dtype)


def _mean(t):
    return tf.reduce_mean(t, axis=-1)


# ----------------------------------------------------------------------- wrong losses


def mae_mean_over_batch(y_true, y_pred):
    return tf.reduce_mean(tf.abs(_error(y_true, y_pred)), axis=0)


def mae_divided_by_n_twice(y_true, y_pred):
    n = tf.cast(tf.shape(y_pred)[-1], y_pred.dtype)
    return tf.reduce_sum(tf.abs(_error(y_true, y_pred)), axis=-1) / n / n


def mape_without_epsilon(y_true, y_pred):
    y_true = tf.cast(y_true, y_pred.dtype)
    return 100.0 * _mean(tf.abs((y_true - y_pred) / tf.abs(y_true)))


def mape_divides_by_prediction(y_true, y_pred):
    y_true = tf.cast(y_true, y_pred.dtype)
    return 100.0 * _mean(tf.abs((y_true - y_pred) / tf.maximum(tf.abs(y_pred), EPS)))


def mape_as_documented(y_true, y_pred):
    """Keras's docstring: ``maximum(y_true, epsilon)``, no abs."""
    y_true = tf.cast(y_true, y_pred.dtype)
    return 100.0 * _mean(tf.abs((y_true - y_pred) / tf.maximum(y_true, EPS)))


def msle_log_without_one(y_true, y_pred):
    y_true = tf.cast(y_true, y_pred.dtype)
    a, b = tf.math.log(tf.maximum(y_pred, EPS)), tf.math.log(tf.maximum(y_true, EPS))
    return _mean(tf.square(a - b))


def msle_unclamped(y_true, y_pred):
    y_true = tf.cast(y_true, y_pred.dtype)
    return _mean(tf.square(tf.math.log1p(y_pred) - tf.math.log1p(y_true)))


def msle_straight_through_clamp(y_true, y_pred):
    """The clamp's value with the identity's gradient: a gradient below eps."""
    y_true = tf.cast(y_true, y_pred.dtype)
    clamped = y_pred + tf.stop_gradient(tf.maximum(y_pred, EPS) - y_pred)
    return _mean(tf.square(tf.math.log1p(clamped) - tf.math.log1p(tf.maximum(y_true, EPS))))


def huber_half_delta_linear(y_true, y_pred, delta=1.0):
    e = _error(y_true, y_pred)
    a = tf.abs(e)
    return _mean(tf.where(a <= delta, 0.5 * e * e, 0.5 * delta * a))


def huber_delta_not_squared(y_true, y_pred, delta=2.5):
    e = _error(y_true, y_pred)
    a = tf.abs(e)
    return _mean(tf.where(a <= delta, 0.5 * e * e, delta * a - 0.5 * delta))


def huber_detached_linear(y_true, y_pred, delta=1.0):
    e = _error(y_true, y_pred)
    a = tf.abs(e)
    return _mean(tf.where(a <= delta, 0.5 * e * e, tf.stop_gradient(delta * a - 0.5 * delta**2)))


def log_cosh_naive(y_true, y_pred):
    return _mean(tf.math.log(tf.math.cosh(_error(y_true, y_pred))))


def log_cosh_detached_softplus(y_true, y_pred):
    x = _error(y_true, y_pred)
    return _mean(x + tf.stop_gradient(tf.math.softplus(-2.0 * x)) - LOG2)


# (loss, reference, params, the check that must fail)
WRONG = [
    # per-sample losses of the wrong shape (or, for a square batch, the wrong values)
    pytest.param(mae_mean_over_batch, "mean_absolute_error", {}, "value", id="mae-axis-0"),
    pytest.param(mae_divided_by_n_twice, "mean_absolute_error", {}, "value", id="mae-n-squared"),
    # 0 / 0 and x / 0 where the target is 0 (the tiny_target regime; zeros are drawn first)
    pytest.param(mape_without_epsilon, "mean_absolute_percentage_error", {}, "value",
                 id="mape-no-eps"),
    pytest.param(mape_divides_by_prediction, "mean_absolute_percentage_error", {}, "value",
                 id="mape-by-prediction"),
    # a negative target divides by eps instead of |y_true|: values 1e7 times too large
    pytest.param(mape_as_documented, "mean_absolute_percentage_error", {}, "value",
                 id="mape-no-abs"),
    pytest.param(msle_log_without_one, "mean_squared_logarithmic_error", {}, "value",
                 id="msle-log-x"),
    # NaN below -1, -inf at -1 (negative and near_minus_one regimes)
    pytest.param(msle_unclamped, "mean_squared_logarithmic_error", {}, "value",
                 id="msle-unclamped"),
    # right values, a gradient where Keras's maximum blocks it (y_pred < eps)
    pytest.param(msle_straight_through_clamp, "mean_squared_logarithmic_error", {},
                 "gradient", id="msle-straight-through"),
    pytest.param(huber_half_delta_linear, "huber", {}, "value", id="huber-half-delta"),
    pytest.param(huber_delta_not_squared, "huber", {"delta": 2.5}, "value",
                 id="huber-delta-not-squared"),
    # right values, no gradient in the linear branch
    pytest.param(huber_detached_linear, "huber", {}, "gradient", id="huber-detached-linear"),
    # cosh overflows float32 beyond |x| = 89.4 (the large_error regime)
    pytest.param(log_cosh_naive, "log_cosh", {}, "value", id="log-cosh-naive"),
    # right values, gradient 1 / n instead of tanh(x) / n
    pytest.param(log_cosh_detached_softplus, "log_cosh", {}, "gradient",
                 id="log-cosh-detached-softplus"),
]


@pytest.mark.parametrize(("loss", "reference", "params", "check"), WRONG)
def test_wrong_variant_is_rejected_by_its_check(loss, reference, params, check):
    report = lossverify.verify(loss, reference, checks=(check,), max_examples=15, seed=0,
                               **params)
    text = str(report)
    assert not report.ok, text
    assert report.checks[check].failures > 0 and report.checks[check].verdict == "FAIL", text
    assert "minimal counterexample" in text and "reproduce with" in text, text


def test_naive_log_cosh_is_caught_only_beyond_the_overflow():
    """Where |x| < 89 the naive formula is accurate: only the large_error regime shows it."""
    y = np.zeros((1, 2), np.float32)
    small = np.array([[3.0, -20.0]], np.float32)
    large = np.array([[95.0, -1000.0]], np.float32)
    assert np.isfinite(log_cosh_naive(y, small).numpy()).all()
    assert np.isinf(log_cosh_naive(y, large).numpy()).all()
    assert np.isfinite(keras.losses.log_cosh(y, large).numpy()).all()


def test_huber_branch_at_delta_is_unobservable():
    """``<`` for ``<=``: both branches agree at |e| == delta in value and gradient."""
    e = tf.constant([[1.0, -1.0, 0.25, 3.0]])
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(e)
        keras_value = keras.losses.huber(tf.zeros_like(e), e)
        lt_value = huber_strict(tf.zeros_like(e), e)
    np.testing.assert_array_equal(keras_value.numpy(), lt_value.numpy())
    np.testing.assert_array_equal(tape.gradient(keras_value, e).numpy(),
                                  tape.gradient(lt_value, e).numpy())


# ----------------------------------------------------------------------- correct losses


def mae_sum_over_n(y_true, y_pred):
    n = tf.cast(tf.shape(y_pred)[-1], y_pred.dtype)
    return tf.reduce_sum(tf.abs(_error(y_true, y_pred)), axis=-1) / n


def mape_abs_then_divide(y_true, y_pred):
    y_true = tf.cast(y_true, y_pred.dtype)
    return _mean(tf.abs(y_pred - y_true) / tf.maximum(tf.abs(y_true), EPS)) * 100.0


def msle_log1p(y_true, y_pred):
    y_true = tf.cast(y_true, y_pred.dtype)
    eps = tf.constant(EPS, tf.float32)  # float32's 1e-7, as Keras
    a = tf.math.log1p(tf.maximum(y_pred, tf.cast(eps, y_pred.dtype)))
    b = tf.math.log1p(tf.maximum(y_true, tf.cast(eps, y_pred.dtype)))
    return _mean(tf.math.squared_difference(a, b))


def huber_strict(y_true, y_pred, delta=1.0):
    e = _error(y_true, y_pred)
    a = tf.abs(e)
    return _mean(tf.where(a < delta, 0.5 * tf.square(e), delta * a - 0.5 * delta**2))


def huber_clipped_form(y_true, y_pred, delta=1.0):
    """``q = min(|e|, delta)``: ``q**2 / 2 + delta (|e| - q)``, the classic TF form."""
    a = tf.abs(_error(y_true, y_pred))
    q = tf.minimum(a, delta)
    return _mean(0.5 * q * q + delta * (a - q))


def log_cosh_abs_form(y_true, y_pred):
    a = tf.abs(_error(y_true, y_pred))
    return _mean(a + tf.math.log1p(tf.exp(-2.0 * a)) - LOG2)


# (loss, reference, params): one independent formula per loss (two for Huber)
FORMULAS = [
    (mae_sum_over_n, "mean_absolute_error", {}),
    (mape_abs_then_divide, "mean_absolute_percentage_error", {}),
    (msle_log1p, "mean_squared_logarithmic_error", {}),
    (huber_clipped_form, "huber", {}),
    (log_cosh_abs_form, "log_cosh", {}),
    (huber_strict, "huber", {}),
]




def test_correct_formulas_pass_20_seeds():
    """Seed s checks formula s mod 6: every formula, 20 seeds in all (always run)."""
    failures = []
    for seed in SEEDS:
        loss, reference, params = FORMULAS[seed % len(FORMULAS)]
        report = lossverify.verify(loss, reference, max_examples=5, seed=seed, checks=CHECKS,
                                   **params)
        if not report.ok:
            failures.append(str(report))
    assert not failures, "\n\n".join(failures)


@pytest.mark.parametrize("name", NAMES)
def test_keras_function_passes_under_the_rounding_adversary(name):
    loss = getattr(keras.losses, name)
    report = lossverify.verify(A.rounded(loss, 1), name, max_examples=5, seed=1, checks=CHECKS)
    assert report.ok, str(report)


@pytest.mark.slow
@pytest.mark.parametrize(("loss", "reference", "params"), FORMULAS,
                         ids=[f[0].__name__ for f in FORMULAS])
def test_correct_formula_passes_every_seed(loss, reference, params):
    assert_seeds_pass(lambda seed: loss, reference, params, SEEDS, CHECKS)


@pytest.mark.slow
@pytest.mark.parametrize(("loss", "reference", "params"), FORMULAS,
                         ids=[f[0].__name__ for f in FORMULAS])
def test_correct_formula_passes_under_the_rounding_adversary_20_seeds(loss, reference, params):
    assert_seeds_pass(lambda seed: A.rounded(loss, seed), reference, params, SEEDS, CHECKS)




@pytest.mark.slow
@pytest.mark.parametrize(("name", "impl", "params"), list(keras_jobs(NAMES)))
def test_keras_passes_every_seed(name, impl, params):
    assert_seeds_pass(lambda seed: S.build_implementation(impl, params), name, params, SEEDS,
                      CHECKS)


@pytest.mark.slow
@pytest.mark.parametrize(("name", "impl", "params"), list(keras_jobs(NAMES)))
def test_keras_passes_under_the_rounding_adversary_20_seeds(name, impl, params):
    assert_seeds_pass(lambda seed: A.rounded(S.build_implementation(impl, params), seed),
                      name, params, SEEDS, CHECKS)


# ----------------------------------------------------------------------- known deviation


def test_log_cosh_float64_deviation_reproducer_shows_the_symptom():
    """The reproducer: a perfect prediction has a negative float64 loss, -1.9e-9."""
    value = keras.losses.log_cosh(np.zeros((1, 1)), np.zeros((1, 1))).numpy()
    assert value.dtype == np.float64
    assert value[0] == pytest.approx(LOG2 - float(np.float32(LOG2)), rel=1e-6) and value[0] < 0
    # float32 is exact
    assert keras.losses.log_cosh(np.zeros((1, 1), np.float32),
                                 np.zeros((1, 1), np.float32)).numpy()[0] == 0.0


def test_log_cosh_float64_deviation_is_reported_as_known_in_float64_only():
    dev = D.LOG_COSH_FLOAT32_LOG2
    assert dev in S.SPECS["log_cosh"].deviations
    report = lossverify.verify(keras.losses.log_cosh, "log_cosh", dtype="float64",
                               max_examples=5, seed=0, checks=("value", "gradient"))
    assert report.ok and report.checks["value"].verdict == "known-deviation", str(report)
    assert report.checks["gradient"].verdict == "ok", str(report)
    report = lossverify.verify(keras.losses.log_cosh, "log_cosh", max_examples=5, seed=0,
                               checks=("value",))
    assert report.checks["value"].verdict == "ok", str(report)
    # the precondition marks float64 elements with |e| < 2**20 only
    x = LossInputs(np.zeros((2, 2)), np.array([[0.0, 2.0**21], [1.0, -3.0]]))
    np.testing.assert_array_equal(dev.at(x, {}), [[True, False], [True, True]])
    x32 = LossInputs(np.zeros((1, 2), np.float32), np.zeros((1, 2), np.float32))
    assert not dev.at(x32, {}).any()
