"""The probabilistic family's references: KL divergence, Poisson, generalized CE.

Values against Keras 3 (TensorFlow backend, float64) on Hypothesis-drawn inputs, the
hard regimes included (zero labels and ``y_pred`` at or below ``eps`` for KL, predictions
at 0 and large counts for Poisson, ``p_y`` near 0 and small ``q`` for GCE); the analytic
gradients against float64 central differences away from the kinks, and TensorFlow's
convention *at* them against ``tf.GradientTape``; the identities the maths gives; the
float32 semantics (``eps`` and ``q`` taken in ``y_pred``'s dtype); argument errors.
"""

from __future__ import annotations

import doctest

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import lossverify.reference as R
from lossverify.reference import probabilistic as P

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

SETTINGS = settings(max_examples=40, deadline=None, derandomize=True)
EPS = 1e-7
EPS32 = float(np.float32(1e-7))
U64 = 2.0**-53
QS = (0.5, 0.1, 0.7, 0.9, 0.99, 0.01, 1e-3)
PROBABILISTIC = ("kl_divergence", "poisson", "categorical_generalized_cross_entropy")


def _floats(lo, hi):
    return st.floats(lo, hi, allow_nan=False, allow_infinity=False)


def _array(data, shape, lo, hi, label):
    return data.draw(hnp.arrays(np.float64, shape, elements=_floats(lo, hi)), label=label)


def _shape(data, max_classes=6):
    batch = data.draw(st.integers(1, 4), label="batch")
    return batch, data.draw(st.integers(1, max_classes), label="classes")


def _keras(name, y_true, y_pred, **params):
    fn = getattr(keras.losses, name)
    y_pred = tf.constant(np.asarray(y_pred))
    return np.asarray(fn(tf.constant(np.asarray(y_true)), y_pred, **params))


def _tape(name, y_true, y_pred, **params):
    fn = getattr(keras.losses, name)
    x = tf.constant(np.asarray(y_pred))
    with tf.GradientTape() as tape:
        tape.watch(x)
        value = fn(tf.constant(np.asarray(y_true)), x, **params)
        total = tf.reduce_sum(value)
    return np.asarray(value), np.asarray(tape.gradient(total, x))


def _agree(ref, ev_scale, keras_value, what, factor=64):
    """Within ``factor`` float64 roundings of the reference's own error scale."""
    ref, keras_value = np.asarray(ref), np.asarray(keras_value)
    tol = factor * U64 * np.asarray(ev_scale) + 1e-300
    bad = ~(np.abs(ref - keras_value) <= tol)
    assert not bad.any(), f"{what}: reference {ref[bad]} != keras {keras_value[bad]}"


# ----------------------------------------------------------------------------- inputs


def _kl_inputs(data, batch, n):
    """Labels on the simplex, one-hot, with zeros, or unnormalised; predictions likewise,
    with elements at, just off and below ``eps``, and at or above 1."""
    kind = data.draw(st.sampled_from(["simplex", "one-hot", "zeros", "unnormalised"]),
                     label="kind")
    y = _array(data, (batch, n), 0.0, 1.0, "y_true")
    p = _array(data, (batch, n), 0.0, 1.0, "y_pred") + 1e-3
    if kind == "one-hot":
        y = np.eye(n)[np.argmax(y, -1)]
    elif kind == "zeros":
        y = np.where(y < 0.4, 0.0, y)
    if kind == "unnormalised":
        y, p = 2.0 * y, 3.0 * p
    else:
        y = y / np.maximum(y.sum(-1, keepdims=True), 1e-12)
        p = p / p.sum(-1, keepdims=True)
    specials = [0.0, EPS, EPS * (1 - 1e-9), EPS * (1 + 1e-9), 5e-8, 1e-30, 1.0, 1.5]
    mask = _array(data, (batch, n), 0.0, 1.0, "special mask") < 0.25
    pick = data.draw(hnp.arrays(np.int64, (batch, n), elements=st.integers(0, 7)), label="pick")
    p = np.where(mask, np.asarray(specials)[pick], p)
    return y, p


def _counts(data, shape, lo, hi, label):
    return data.draw(hnp.arrays(np.int64, shape, elements=st.integers(lo, hi)),
                     label=label).astype(np.float64)


def _poisson_inputs(data, batch, n):
    kind = data.draw(st.sampled_from(["counts", "near-zero", "large"]), label="kind")
    if kind == "large":
        y = _counts(data, (batch, n), 0, 10**7, "y_true")
        p = y * _array(data, (batch, n), 0.5, 2.0, "ratio") + _array(data, (batch, n), 0, 10,
                                                                       "offset")
        return y, p
    y = _counts(data, (batch, n), 0, 30, "y_true")
    if kind == "counts":
        return y, _array(data, (batch, n), 0.0, 40.0, "y_pred")
    specials = np.array([0.0, 1e-300, 1e-12, EPS / 2, EPS, 2 * EPS, 1e-5])
    pick = data.draw(hnp.arrays(np.int64, (batch, n), elements=st.integers(0, 6)), label="pick")
    return y, specials[pick]


def _gce_inputs(data, batch, n, near_zero):
    labels = data.draw(hnp.arrays(np.int64, (batch,), elements=st.integers(0, n - 1)),
                       label="labels")
    p = _array(data, (batch, n), 0.0, 1.0, "y_pred") + 1e-3
    p = p / p.sum(-1, keepdims=True)
    if near_zero:
        p_y = data.draw(hnp.arrays(np.float64, (batch,), elements=st.sampled_from(
            [1e-300, 1e-100, 1e-38, 1e-20, 1e-10, EPS, 1e-4])), label="p_y")
        p[np.arange(batch), labels] = p_y
    return labels, p


# ----------------------------------------------------------------------------- values


def test_doctests():
    result = doctest.testmod(P, verbose=False)
    assert result.attempted >= 3 and result.failed == 0


@pytest.mark.parametrize(("name", "y_true", "y_pred", "params"), [
    ("kl_divergence", [[0., 1.], [.5, .5]], [[.5, .5], [.25, .75]], {}),
    ("poisson", [[1., 2.], [0., 3.]], [[.5, 2.], [1., 0.]], {}),
    ("categorical_generalized_cross_entropy", [0, 1, 0, 1],
     [[.7, .3], [.2, .8], [.6, .4], [.4, .6]], {"q": 0.5}),
])
def test_worked_examples_match_keras(name, y_true, y_pred, params):
    ref = getattr(P, name)(y_true, y_pred, **params)
    got = _keras(name, np.asarray(y_true), np.asarray(y_pred, np.float64), **params)
    np.testing.assert_allclose(ref, got, rtol=1e-14, atol=1e-15)


@SETTINGS
@given(data=st.data())
def test_kl_divergence_matches_keras(data):
    batch, n = _shape(data)
    y, p = _kl_inputs(data, batch, n)
    ev = P._eval_kl_divergence(y, p)
    _agree(ev.value, ev.value_scale, _keras("kl_divergence", y, p), "kl_divergence")


@SETTINGS
@given(data=st.data())
def test_poisson_matches_keras(data):
    batch, n = _shape(data)
    y, p = _poisson_inputs(data, batch, n)
    ev = P._eval_poisson(y, p)
    _agree(ev.value, ev.value_scale, _keras("poisson", y, p), "poisson")


@SETTINGS
@given(data=st.data(), q=st.sampled_from(QS) | _floats(1e-4, 1 - 1e-4),
       near_zero=st.booleans())
def test_generalized_cross_entropy_matches_keras(data, q, near_zero):
    batch, n = _shape(data)
    labels, p = _gce_inputs(data, batch, n, near_zero)
    ev = P._eval_categorical_generalized_cross_entropy(labels, p, q)
    got = _keras("categorical_generalized_cross_entropy", labels, p, q=q)
    _agree(ev.value, ev.value_scale, got, "gce")


def test_kl_zero_label_contributes_eps_log_eps_over_p():
    # Keras clips y_true too: a zero label adds eps log(eps / p) (negative), not 0
    expected = np.log(2.0) + EPS * np.log(EPS / 0.5)
    assert P.kl_divergence([[0., 1.]], [[.5, .5]])[0] == pytest.approx(expected, rel=1e-15)
    assert P.kl_divergence([[0., 0.]], [[.5, .5]])[0] < 0


def test_kl_upper_bound_is_one_not_one_minus_eps():
    # y and p above 1 are clipped to 1 (not 1 - eps): KL([2], [3]) = 1 log(1 / 1) = 0
    assert P.kl_divergence([[2.0]], [[3.0]])[0] == 0.0
    assert _keras("kl_divergence", np.array([[2.0]]), np.array([[3.0]]))[0] == 0.0


def test_float32_semantics_eps_and_q_in_y_pred_dtype():
    """float32 inputs: eps = float32(1e-7) for both clips and Poisson's shift, q rounded
    to float32; the float64 reference of those semantics is within a few float32 ulps of
    Keras's float32 result, and differs from the float64-constant formulas."""
    y32 = np.array([[0.0, 1.0]], np.float32)
    p32 = np.array([[0.5, 0.5]], np.float32)
    kl = P.kl_divergence(y32, p32)[0]
    assert kl == pytest.approx(np.log(2.0) + EPS32 * np.log(EPS32 / 0.5), rel=1e-15)
    assert kl == pytest.approx(float(_keras("kl_divergence", y32, p32)[0]), rel=2**-22)
    assert P.poisson(np.float32([[3.0]]), np.float32([[0.0]]))[0] == pytest.approx(
        -3 * np.log(EPS32), rel=1e-15)
    q = 0.3
    q32 = float(np.float32(q))
    gce = P.categorical_generalized_cross_entropy([0], np.float32([[0.25, 0.75]]), q)[0]
    assert gce == pytest.approx((1 - 0.25**q32) / q32, rel=1e-15)
    assert gce != pytest.approx((1 - 0.25**q) / q, rel=1e-9)
    got = _keras("categorical_generalized_cross_entropy", np.array([0]),
                 np.float32([[0.25, 0.75]]), q=q)[0]
    assert gce == pytest.approx(float(got), rel=2**-21)


def test_gce_subnormal_p_is_flushed_only_in_the_low_precision_evaluation():
    p32 = np.array([[1e-40, 1.0]], np.float32)  # a float32 subnormal
    exact = P._eval_categorical_generalized_cross_entropy([0], p32, q=0.01)
    with R.computing_in(np.float32):
        low = P._eval_categorical_generalized_cross_entropy([0], p32, q=0.01)
    q32 = float(np.float32(0.01))
    assert exact.value[0] == pytest.approx((1 - float(p32[0, 0]) ** q32) / q32, rel=1e-12)
    assert float(low.value[0]) == pytest.approx(1 / q32, rel=1e-6)  # TF's CPU: p -> 0
    assert exact.kink[0] and low.kink[0]  # the gradient (-inf in TF) is not compared


# ----------------------------------------------------------------------------- gradients

H_REL = 1e-6


def _fd_close(ev, fd, what, rtol=2e-6):
    tol = rtol * (np.abs(ev.grad) + ev.grad_scale) + 1e-9 * np.abs(ev.grad).max()
    bad = ~(np.abs(ev.grad - fd) <= tol)
    assert not bad.any(), f"{what}: analytic {ev.grad[bad]} != finite differences {fd[bad]}"


@SETTINGS
@given(data=st.data())
def test_kl_gradient_central_differences(data, central_difference):
    batch, n = _shape(data)
    y, _ = _kl_inputs(data, batch, n)
    # away from the kinks: inside (1e-3 from eps and 1) or above 1 (the helper's step
    # of 1e-6 would cross eps from below it: that side is checked against the tape)
    above = data.draw(hnp.arrays(np.bool_, (batch, n)), label="above 1")
    inner = _array(data, (batch, n), 1e-3, 0.999, "inner")
    p = np.where(above, 1.0 + inner, inner)
    ev = P._eval_kl_divergence(y, p)
    assert not ev.kink.any()
    fd = central_difference(lambda x: P.kl_divergence(y, x), p, h_rel=H_REL)
    _fd_close(ev, fd, "kl_divergence")


@SETTINGS
@given(data=st.data())
def test_poisson_gradient_central_differences(data, central_difference):
    batch, n = _shape(data)
    y = _counts(data, (batch, n), 0, 50, "y_true")
    p = _array(data, (batch, n), 1e-3, 60.0, "y_pred")
    ev = P._eval_poisson(y, p)
    fd = central_difference(lambda x: P.poisson(y, x), p, h_rel=H_REL)
    _fd_close(ev, fd, "poisson", rtol=1e-5)


@SETTINGS
@given(data=st.data(), q=st.sampled_from(QS))
def test_gce_gradient_central_differences(data, q, central_difference):
    batch, n = _shape(data)
    labels, p = _gce_inputs(data, batch, n, near_zero=False)
    p = np.maximum(p, 1e-3)
    ev = P._eval_categorical_generalized_cross_entropy(labels, p, q)
    fd = central_difference(lambda x: P.categorical_generalized_cross_entropy(labels, x, q),
                            p, h_rel=H_REL)
    _fd_close(ev, fd, f"gce q={q}", rtol=1e-5)
    others = np.ones(p.shape, bool)
    others[np.arange(batch), labels] = False
    assert (ev.grad[others] == 0).all()


@settings(SETTINGS, max_examples=20)
@given(data=st.data())
def test_gradients_match_tape_on_hard_regimes(data):
    """Autodiff in float64 on the hard regimes (the kinks' own conventions included), to
    a few float64 roundings of the gradient's pieces (``grad_scale``: Poisson's
    ``1 - y / (p + eps)`` cancels near its minimum)."""

    def close(ev, g, rows=None):
        tol = 64 * U64 * ev.grad_scale
        ok = (ev.grad == g) | (np.abs(ev.grad - g) <= tol)
        if rows is not None:
            ok |= ~rows
        assert ok.all(), (ev.grad[~ok], g[~ok])

    batch, n = _shape(data)
    y, p = _kl_inputs(data, batch, n)
    ev = P._eval_kl_divergence(y, p)
    close(ev, _tape("kl_divergence", y, p)[1])
    y, p = _poisson_inputs(data, batch, n)
    ev = P._eval_poisson(y, p)
    close(ev, _tape("poisson", y, p)[1])
    labels, p = _gce_inputs(data, batch, n, near_zero=True)
    ev = P._eval_categorical_generalized_cross_entropy(labels, p, 0.3)
    _, g = _tape("categorical_generalized_cross_entropy", labels, p, q=0.3)
    close(ev, g, rows=~ev.kink[:, None])


def test_kl_clip_gradient_convention_at_the_bounds():
    """clip_by_value passes at its inclusive bounds (eps and 1) and blocks outside."""
    y = np.array([[0.3, 0.3, 0.2, 0.1, 0.05, 0.05]])
    p = np.array([[EPS, 1.0, np.nextafter(EPS, 0), np.nextafter(1.0, 2), 0.0, 2.0]])
    ev = P._eval_kl_divergence(y, p)
    expected = np.array([[-0.3 / EPS, -0.3, 0.0, 0.0, 0.0, 0.0]])
    np.testing.assert_allclose(ev.grad, expected, rtol=1e-15)
    _, g = _tape("kl_divergence", y, p)
    np.testing.assert_allclose(g, expected, rtol=1e-15)
    assert ev.kink.all()  # a tie with a bound: the gradient check skips the row
    assert not P._eval_kl_divergence(y, np.full_like(p, 0.5)).kink.any()


def test_kl_kink_is_a_tie_with_a_bound_only():
    for p in (np.nextafter(EPS, 0), np.nextafter(EPS, 1), np.nextafter(1.0, 0),
              np.nextafter(1.0, 2), 0.5, 0.0, 3.0):
        assert not P._eval_kl_divergence([[1.0]], [[p]]).kink[0], p
    for p in (EPS, 1.0):
        assert P._eval_kl_divergence([[1.0]], [[p]]).kink[0], p
    # in float32, the tie is with float32(1e-7), and its neighbours are not ties
    eps32 = np.float32(1e-7)
    assert P._eval_kl_divergence([[1.0]], np.array([[eps32]])).kink[0]
    for p in (np.nextafter(eps32, np.float32(0)), np.nextafter(eps32, np.float32(1)),
              np.nextafter(np.float32(1), np.float32(0))):
        assert not P._eval_kl_divergence([[1.0]], np.array([[p]])).kink[0], p


def test_poisson_gradient_at_zero_prediction():
    y, p = np.array([[0.0, 1.0, 4.0]]), np.zeros((1, 3))
    ev = P._eval_poisson(y, p)
    expected = (1 - y / EPS) / 3
    np.testing.assert_allclose(ev.grad, expected, rtol=1e-15)
    _, g = _tape("poisson", y, p)
    np.testing.assert_allclose(g, expected, rtol=1e-15)
    assert not ev.kink.any()


def test_gce_gradient_at_zero_probability():
    """p_y == 0: d/dp = -p**(q - 1) = -inf on the true class. TensorFlow's autodiff
    gives NaN on the other classes (-inf * 0 through the one-hot product); the reference
    gives 0 there and flags the sample as a kink, so it is not compared."""
    p = np.array([[0.0, 1.0, 0.0], [0.2, 0.3, 0.5]])
    ev = P._eval_categorical_generalized_cross_entropy([0, 1], p, q=0.5)
    assert ev.grad[0, 0] == -np.inf and (ev.grad[0, 1:] == 0).all()
    assert ev.value[0] == 2.0 and ev.kink.tolist() == [True, False]
    assert np.isfinite(ev.value_scale).all() and np.isfinite(ev.grad_scale).all()
    _, g = _tape("categorical_generalized_cross_entropy", np.array([0, 1]), p, q=0.5)
    assert g[0, 0] == -np.inf and np.isnan(g[0, 1:]).all()
    np.testing.assert_allclose(ev.grad[1], g[1], rtol=1e-15)


# ----------------------------------------------------------------------------- identities


@SETTINGS
@given(data=st.data())
def test_kl_is_cross_entropy_minus_entropy_in_the_interior(data):
    batch, n = _shape(data)
    n = max(n, 2)
    y = _array(data, (batch, n), 1e-3, 1.0, "y")
    p = _array(data, (batch, n), 1e-3, 1.0, "p")
    y, p = y / y.sum(-1, keepdims=True), p / p.sum(-1, keepdims=True)
    ev = P._eval_kl_divergence(y, p)
    ce = R.categorical_crossentropy(y, p)  # renormalises p: exact here up to rounding
    entropy = -(y * np.log(y)).sum(-1)
    _agree(ev.value, ev.value_scale + np.abs(ce) + entropy, ce - entropy, "KL = CE - H")
    assert (ev.value >= -64 * U64 * ev.value_scale).all()  # Gibbs
    self_kl = P._eval_kl_divergence(y, y)
    assert (np.abs(self_kl.value) <= 64 * U64 * self_kl.value_scale).all()


@SETTINGS
@given(data=st.data())
def test_poisson_is_smallest_at_y_minus_eps(data):
    batch, n = _shape(data)
    y = _counts(data, (batch, n), 1, 1000, "y_true")
    best = y - EPS
    ev = P._eval_poisson(y, best)
    assert np.abs(ev.grad).max() <= 1e-12
    for factor in (0.9, 1.1):
        assert (P.poisson(y, best * factor) > ev.value).all()
    # y = 0: the loss is mean(p), gradient 1 / n
    zero = P._eval_poisson(np.zeros_like(y), best)
    np.testing.assert_allclose(zero.value, best.mean(-1), rtol=1e-15)
    np.testing.assert_allclose(zero.grad, np.full_like(y, 1 / n), rtol=1e-15)


@SETTINGS
@given(data=st.data(), q=st.sampled_from(QS))
def test_gce_bounds_and_limit(data, q):
    batch, n = _shape(data)
    labels, p = _gce_inputs(data, batch, n, near_zero=data.draw(st.booleans()))
    p_y = p[np.arange(batch), labels]
    v = P.categorical_generalized_cross_entropy(labels, p, q)
    assert ((v >= 0) & (v <= 1 / q * (1 + 1e-15))).all()
    assert (v <= -np.log(p_y) * (1 + 1e-12)).all()  # (1 - e^{-qx}) / q <= x
    # depends on p_y alone: the other classes may be anything
    noise = _array(data, p.shape, 0.0, 5.0, "other classes")
    noise[np.arange(batch), labels] = p_y
    np.testing.assert_array_equal(P.categorical_generalized_cross_entropy(labels, noise, q), v)
    # decreasing in q (for p_y <= 1)
    assert (P.categorical_generalized_cross_entropy(labels, p, min(q * 1.5, 0.999)) <= v
            * (1 + 1e-12)).all()


@SETTINGS
@given(data=st.data())
def test_gce_tends_to_cross_entropy_as_q_goes_to_zero(data):
    batch, n = _shape(data)
    n = max(n, 2)
    labels, p = _gce_inputs(data, batch, n, near_zero=False)
    q = 1e-7
    ce = R.sparse_categorical_crossentropy(labels, p)  # interior: -log p_y exactly
    v = P.categorical_generalized_cross_entropy(labels, p, q)
    # (1 - e^{-q x}) / q = x - q x^2 / 2 + ...; plus 1 - p**q's cancellation, u / q
    np.testing.assert_allclose(v, ce, rtol=0, atol=q * ce.max() ** 2 + 1e-8)


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize("q", [0, 0.0, 1, 1.0, -0.5, 1.5, float("nan"), float("inf")])
def test_q_out_of_range_is_refused(q):
    with pytest.raises(ValueError, match=r"^q: "):
        P.categorical_generalized_cross_entropy([0], [[1.0, 0.0]], q)
    # Keras's class refuses the same values
    with pytest.raises(ValueError, match="q must be in the interval"):
        keras.losses.CategoricalGeneralizedCrossEntropy(q=q)


@pytest.mark.parametrize("q", [True, "0.5", None, [0.5]])
def test_q_of_the_wrong_type_is_refused(q):
    with pytest.raises(TypeError, match=r"^q: "):
        P.categorical_generalized_cross_entropy([0], [[1.0, 0.0]], q)


def test_q_validator_accepts_numpy_scalars():
    assert P.check_q(np.float32(0.25)) == 0.25
    assert P.check_q(np.float64(0.999)) == 0.999


@pytest.mark.parametrize(("labels", "match"), [
    ([2], r"y_true: expected labels in \[0, 2\)"),
    ([-1], r"y_true: expected labels in \[0, 2\)"),
    ([0.5], "y_true: expected integer class labels"),
    ([[0, 1]], "y_true: expected label shape"),
    (["a"], "y_true: expected integer class labels"),
])
def test_gce_bad_labels_are_refused(labels, match):
    with pytest.raises((ValueError, TypeError), match=match):
        P.categorical_generalized_cross_entropy(labels, [[0.5, 0.5]], 0.5)


def test_gce_accepts_the_documented_label_shapes():
    p = [[.7, .3], [.2, .8]]
    a = P.categorical_generalized_cross_entropy([0, 1], p, 0.5)
    b = P.categorical_generalized_cross_entropy([[0], [1]], p, 0.5)
    c = P.categorical_generalized_cross_entropy(np.array([0.0, 1.0], np.float32), p, 0.5)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, c)
    assert a.shape == (2,)


@pytest.mark.parametrize("name", ["kl_divergence", "poisson"])
@pytest.mark.parametrize(("y_true", "y_pred", "err", "match"), [
    ([[0.5, 0.5]], [[0.5, 0.5, 0.0]], ValueError, "y_true: expected the shape of y_pred"),
    (0.5, 0.5, ValueError, "y_pred: expected at least rank 1"),
    (np.zeros((2, 0)), np.zeros((2, 0)), ValueError, "y_pred: expected at least rank 1"),
    ([["a"]], [[0.5]], TypeError, "y_true: expected a real numeric array"),
    ([[0.5]], [[1j]], TypeError, "y_pred: expected a real numeric array"),
])
def test_bad_arrays_are_refused(name, y_true, y_pred, err, match):
    with pytest.raises(err, match=match):
        getattr(P, name)(y_true, y_pred)


def test_gce_bad_y_pred_is_refused():
    with pytest.raises(ValueError, match="y_pred: expected at least rank 1"):
        P.categorical_generalized_cross_entropy(0, 0.5, 0.5)
    with pytest.raises(TypeError, match="y_pred: expected a real numeric array"):
        P.categorical_generalized_cross_entropy([0], [["x", "y"]], 0.5)


# ----------------------------------------------------------------------------- structure


@pytest.mark.parametrize("name", PROBABILISTIC)
def test_evaluation_shapes_and_finite_scales(name):
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(4), size=(2, 3))
    if name == "categorical_generalized_cross_entropy":
        y = rng.integers(0, 4, (2, 3))
    else:
        y = rng.dirichlet(np.ones(4), size=(2, 3))
    ev = R.EVALUATORS[name](y, p)
    assert ev.value.shape == ev.value_scale.shape == ev.kink.shape == (2, 3)
    assert ev.grad.shape == ev.grad_scale.shape == p.shape
    assert ev.kink.dtype == bool
    for field in (ev.value, ev.grad, ev.value_scale, ev.grad_scale):
        assert np.isfinite(field).all()
    assert (ev.value_scale >= np.abs(ev.value)).all()
    assert (ev.grad_scale >= np.abs(ev.grad)).all()


@pytest.mark.parametrize("name", PROBABILISTIC)
def test_computing_in_float32_uses_float32(name):
    y = [0, 1] if name.startswith("categorical") else [[0.2, 0.8], [0.6, 0.4]]
    p = np.array([[0.3, 0.7], [0.9, 0.1]])
    with R.computing_in(np.float32):
        ev = R.EVALUATORS[name](y, p)
    assert ev.value.dtype == np.float32 and ev.grad.dtype == np.float32


def test_empty_batches_give_empty_results():
    for name in PROBABILISTIC:
        y = np.zeros((0,)) if name.startswith("categorical") else np.zeros((0, 3))
        ev = R.evaluate(name, y, np.zeros((0, 3)))
        assert ev.value.shape == (0,) and ev.grad.shape == (0, 3), name


def test_huge_and_out_of_domain_inputs_behave_as_tensorflow():
    huge = np.array([[1e300, -1e300, 0.0]])
    kl = R.evaluate("kl_divergence", [[0.2, 0.3, 0.5]], huge)  # clipped to [eps, 1]
    assert np.isfinite(kl.value).all() and (kl.grad == 0).all()
    got = _keras("kl_divergence", np.array([[0.2, 0.3, 0.5]]), huge)
    np.testing.assert_allclose(kl.value, got, rtol=1e-14)
    # Poisson and GCE do not clip: a negative prediction is NaN (log, pow), as in Keras
    for name, y in (("poisson", [[1.0, 1.0, 1.0]]),
                    ("categorical_generalized_cross_entropy", [1])):
        value = R.evaluate(name, y, huge).value
        assert np.isnan(value).all() and np.isnan(_keras(name, np.array(y), huge,
                                                         **({"q": 0.5} if name[0] == "c"
                                                            else {}))).all(), name
    big = R.evaluate("poisson", [[1.0, 2.0]], [[1e300, 1e10]])
    assert np.isfinite(big.value).all() and np.isfinite(big.grad).all()


def test_gce_kink_where_the_gradient_overflows_the_dtype():
    """float16: p**(q - 1) overflows for p below about 1.5e-5 (small q); TensorFlow's
    gradient is -inf there and NaN on the other classes, so the sample is a kink."""
    p16 = np.array([[1.19e-7, 0.5], [1e-3, 0.5]], np.float16)
    ev = P._eval_categorical_generalized_cross_entropy([0, 0], p16, q=0.01)
    assert ev.kink.tolist() == [True, False]
    _, g = _tape("categorical_generalized_cross_entropy", np.array([0, 0]), p16, q=0.01)
    assert g[0, 0] == -np.inf and np.isnan(g[0, 1]) and np.isfinite(g[1]).all()
    # the same p in float32 is a normal number with a finite gradient: no kink
    assert not P._eval_categorical_generalized_cross_entropy(
        [0, 0], p16.astype(np.float32), q=0.01).kink.any()
