"""The overlap references (Dice, Tversky) and Circle against Keras 3 and against calculus.

Values against ``keras.losses.<name>`` (TensorFlow backend) in float64 on Hypothesis-drawn
inputs, including the hard regimes (empty masks, one-pixel masks; Circle with all labels
equal, all different, duplicate and zero embeddings); analytic gradients against float64
central differences of the *sum* of the values (Circle's rows are coupled, so a row-wise
difference would be wrong) away from kinks; TensorFlow's gradient convention at Circle's
kinks against ``tf.GradientTape``; the worked examples; the invariants the maths gives;
bad parameters.
"""

from __future__ import annotations

import doctest

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import lossverify.reference.overlap as O
from lossverify.reference import computing_in

tf = pytest.importorskip("tensorflow")
KL = pytest.importorskip("keras.src.losses.losses")
keras = pytest.importorskip("keras")

SETTINGS = settings(max_examples=25, deadline=None, derandomize=True)
TF_SETTINGS = settings(max_examples=15, deadline=None, derandomize=True)  # eager TF calls
EPS = 1e-7


# ----------------------------------------------------------------------------- helpers


def _keras(name, y_true, y_pred, **params):
    """Keras's per-value output and ``d sum(values) / d y_pred`` in float64."""
    v = tf.Variable(np.asarray(y_pred, np.float64))
    with tf.GradientTape() as tape:
        out = getattr(KL, name)(y_true, v, **params)
        total = tf.reduce_sum(out)
    return out.numpy(), tape.gradient(total, v).numpy()


def _fd_sum(fn, x, h=1e-6):
    """Central differences of ``sum(fn(x))`` for every element of ``x`` (float64)."""
    x = np.asarray(x, np.float64)
    g = np.empty_like(x)
    for idx in np.ndindex(x.shape):
        xp, xm = x.copy(), x.copy()
        step = h * max(abs(x[idx]), 1.0)
        xp[idx] += step
        xm[idx] -= step
        g[idx] = (np.sum(fn(xp)) - np.sum(fn(xm))) / (xp[idx] - xm[idx])
    return g


def _floats(lo, hi):
    return st.floats(lo, hi, allow_nan=False, allow_infinity=False)


@st.composite
def masks(draw):
    """(y_true, y_pred, axis): binary masks (batch, h, w) or (batch, n), y_pred in [0, 1],
    with empty masks, one-pixel masks and exact 0/1 predictions mixed in."""
    rank = draw(st.sampled_from([2, 3]))
    shape = tuple(draw(st.lists(st.integers(1, 4), min_size=rank, max_size=rank)))
    kind = draw(st.sampled_from(["random", "empty", "one-pixel", "exact", "soft-true"]))
    y = draw(hnp.arrays(np.float64, shape, elements=_floats(0, 1))).round()
    p = draw(hnp.arrays(np.float64, shape, elements=_floats(0, 1)))
    if kind == "empty":
        y = np.zeros(shape)
        if draw(st.booleans()):
            p = np.zeros(shape)
    elif kind == "one-pixel":
        y = np.zeros(shape)
        p = np.zeros(shape) if draw(st.booleans()) else p * (p > 0.8)
        y.flat[draw(st.integers(0, y.size - 1))] = 1.0
        p.flat[draw(st.integers(0, y.size - 1))] = draw(_floats(0, 1))
    elif kind == "exact":
        p = p.round()
    elif kind == "soft-true":
        y = draw(hnp.arrays(np.float64, shape, elements=_floats(0, 1)))
    axis = draw(st.sampled_from([None, -1, tuple(range(1, rank)), (0,), ()]))
    return y, p, axis


@st.composite
def embeddings(draw):
    """(labels, unit-norm embeddings (batch, dim)) with Circle's hard regimes."""
    b = draw(st.integers(1, 6))
    d = draw(st.integers(1, 5))
    kind = draw(st.sampled_from(["random", "all-equal", "all-different", "duplicates",
                                 "zeros", "clustered"]))
    e = draw(hnp.arrays(np.float64, (b, d), elements=_floats(-1, 1)))
    norm = np.linalg.norm(e, axis=1, keepdims=True)
    e = np.where(norm > 1e-3, e / np.where(norm > 1e-3, norm, 1.0), np.eye(b, d))
    labels = np.array(draw(st.lists(st.integers(0, 2), min_size=b, max_size=b)))
    if kind == "all-equal":
        labels = np.zeros(b, np.int64)
    elif kind == "all-different":
        labels = np.arange(b)
    elif kind == "duplicates" and b > 1:
        e[draw(st.integers(1, b - 1))] = e[0]
    elif kind == "zeros":
        e[draw(st.integers(0, b - 1))] = 0.0
    elif kind == "clustered":
        centre = e[0]
        noise = draw(hnp.arrays(np.float64, (b, d), elements=_floats(-0.05, 0.05)))
        e = np.where((labels == labels[0])[:, None], centre + noise, e)
        e /= np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)
    return labels, e


CIRCLE_PARAMS = st.fixed_dictionaries({
    "gamma": st.sampled_from([80.0, 1.0, 16.0, 256.0, 0.0]),
    "margin": st.sampled_from([0.4, 0.25, 0.0, -0.2, 0.8]),
    "remove_diagonal": st.booleans(),
})


# ----------------------------------------------------------------------------- examples


def test_doctests():
    failures, _ = doctest.testmod(O, verbose=False)
    assert failures == 0


def test_keras_docstring_example_float32():
    y_true = np.array([[[[1.], [1.]], [[0.], [0.]]], [[[1.], [1.]], [[0.], [0.]]]], np.float32)
    y_pred = np.array([[[[0.], [1.]], [[0.], [1.]]], [[[.4], [0.]], [[0.], [.9]]]], np.float32)
    np.testing.assert_allclose(O.dice(y_true, y_pred, axis=(1, 2, 3)), [0.5, 0.75757575],
                               rtol=1e-7)
    np.testing.assert_allclose(O.dice(y_true, y_pred), 0.6164384, rtol=1e-7)


def test_dice_smoothing_is_keras_epsilon_in_the_denominator_only():
    # empty masks: 1 - 0 / eps = 1 (a numerator smoothing would give 0)
    assert O.dice(np.zeros((1, 4)), np.zeros((1, 4)), axis=1)[0] == 1.0
    # one pixel, perfectly predicted: 1 - 2 / (2 + eps)
    y = np.array([[0., 1., 0.]])
    assert O.dice(y, y, axis=1)[0] == pytest.approx(1 - 2 / (2 + EPS), abs=1e-16)
    # eps is rounded in y_pred's dtype (float32 1e-7 is 1.0000000116860974e-07)
    v32 = O.dice(y.astype(np.float32), np.array([[0., .5, 0.]], np.float32), axis=1)
    assert v32[0] == pytest.approx(1 - 1 / (1.5 + float(np.float32(EPS))), abs=1e-15)


def test_axis_none_reduces_over_the_batch_too():
    y = np.array([[1., 0.], [1., 1.]])
    p = np.array([[.5, .5], [0., 1.]])
    whole = O.dice(y, p)
    assert whole.shape == ()
    assert whole == pytest.approx(1 - 2 * 1.5 / (3 + 2 + EPS))
    np.testing.assert_allclose(O.dice(y, p, axis=1), [1 - 1 / (2 + EPS), 1 - 2 / (3 + EPS)])


def test_tversky_alpha_weighs_false_negatives_as_keras_computes():
    # one false negative (y=1, p=0), no false positive: Keras's alpha acts on it
    y, p = [[1., 1., 0., 0.]], [[1., 0., 0., 0.]]
    for alpha, beta, expected in [(1.0, 0.0, 0.5), (0.0, 1.0, 0.0)]:
        ref = O.tversky(y, p, alpha=alpha, beta=beta, axis=1)
        kv, _ = _keras("tversky", np.array(y), np.array(p), alpha=alpha, beta=beta, axis=1)
        np.testing.assert_allclose(ref, kv, rtol=0, atol=1e-15)
        assert ref[0] == pytest.approx(expected, abs=1e-6)


def test_circle_worked_example_and_no_normalisation():
    e = np.array([[1., 0.], [0., 1.], [-1., 0.], [0., -1.]])
    labels = np.array([0, 1, 0, 1])
    expected = 80 * 3.84 - 12.8 + np.log(2.0)
    np.testing.assert_allclose(O.circle(labels, e), expected, rtol=1e-14)
    # Keras does not normalise: scaling the embeddings changes the loss
    kv, _ = _keras("circle", labels, 3 * e)
    np.testing.assert_allclose(O.circle(labels, 3 * e), kv, rtol=1e-14)
    assert not np.allclose(kv, expected)


# ----------------------------------------------------------------------------- values


@TF_SETTINGS
@given(masks(), st.sampled_from([(0.5, 0.5), (0.3, 0.7), (0.7, 0.3), (1.0, 0.0), (0.0, 2.0)]))
def test_dice_and_tversky_match_keras_float64(case, weights):
    y, p, axis = case
    alpha, beta = weights
    for name, params in [("dice", {}), ("tversky", {"alpha": alpha, "beta": beta})]:
        ev = O.EVALUATIONS[name](y, p, axis=axis, **params)
        kv, kg = _keras(name, y, p, axis=axis, **params)
        assert ev.value.shape == kv.shape
        np.testing.assert_allclose(ev.value, kv, rtol=1e-13, atol=1e-15)
        np.testing.assert_allclose(ev.grad, kg, rtol=1e-12, atol=1e-12 * np.abs(kg).max())
        assert np.all(np.isfinite(ev.value_scale)) and np.all(ev.value_scale >= 1.0)
        assert np.all(np.isfinite(ev.grad_scale)) and np.all(ev.grad_scale >= np.abs(ev.grad))
        assert not ev.kink.any()


@TF_SETTINGS
@given(embeddings(), CIRCLE_PARAMS)
def test_circle_matches_keras_float64(case, params):
    labels, e = case
    ev = O._eval_circle(labels, e, **params)
    kv, kg = _keras("circle", labels, e, **params)
    assert ev.value.shape == kv.shape == (e.shape[0],)
    np.testing.assert_allclose(ev.value, kv, rtol=1e-12, atol=1e-12)
    scale = max(np.abs(kg).max(), 1.0)
    rows = ~ev.kink  # at a kink the two float64 matmuls may sit on either side
    np.testing.assert_allclose(ev.grad[rows], kg[rows], rtol=1e-10, atol=1e-10 * scale)
    assert np.all(np.isfinite(ev.value_scale)) and np.all(np.isfinite(ev.grad_scale))
    assert np.all(ev.grad_scale >= np.abs(ev.grad))


@SETTINGS
@given(embeddings(), st.sampled_from([(1,), (2,)]))
def test_circle_label_shapes_and_float_labels(case, extra):
    labels, e = case
    base = O.circle(labels, e)
    np.testing.assert_array_equal(O.circle(labels[:, None], e), base)
    np.testing.assert_array_equal(O.circle(labels.astype(np.float32) + extra[0] - extra[0], e),
                                  base)


def test_circle_hard_regimes_against_keras():
    rng = np.random.default_rng(7)
    e = rng.normal(size=(5, 4))
    e /= np.linalg.norm(e, axis=1, keepdims=True)
    for labels in (np.zeros(5, int), np.arange(5)):  # no negatives / no positives
        ev = O._eval_circle(labels, e)
        kv, kg = _keras("circle", labels, e)
        np.testing.assert_array_equal(ev.value, 0.0)
        np.testing.assert_array_equal(kv, 0.0)
        np.testing.assert_array_equal(ev.grad, 0.0)
        np.testing.assert_array_equal(kg, 0.0)
    z = np.zeros((4, 3))  # every distance is exactly 1
    ev = O._eval_circle([0, 0, 1, 1], z)
    kv, kg = _keras("circle", np.array([0, 0, 1, 1]), z)
    np.testing.assert_allclose(ev.value, kv, rtol=1e-15)
    np.testing.assert_allclose(ev.value, np.logaddexp(0, 80 * 0.84 - 12.8 + np.log(2)))
    np.testing.assert_array_equal(ev.grad, 0.0)
    np.testing.assert_array_equal(kg, 0.0)


def test_circle_with_reference_embeddings():
    rng = np.random.default_rng(3)
    q = rng.normal(size=(3, 4))
    r = rng.normal(size=(5, 4))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    r /= np.linalg.norm(r, axis=1, keepdims=True)
    labels, ref_labels = np.array([0, 1, 2]), np.array([0, 0, 1, 2, 2])
    for remove in (True, False):
        ev = O._circle(labels, q, ref_labels, r, remove, 80.0, 0.4, None)
        kv, kg = _keras("circle", labels, q, ref_labels=ref_labels, ref_embeddings=r,
                        remove_diagonal=remove)
        np.testing.assert_allclose(ev.value, kv, rtol=1e-13)
        np.testing.assert_allclose(ev.grad, kg, rtol=1e-11, atol=1e-11 * np.abs(kg).max())
        # the reference rows are constants: each value depends on its own row only
        fd = _fd_sum(lambda x, rm=remove: O.circle(labels, x, ref_labels, r, rm), q)
        np.testing.assert_allclose(ev.grad, fd, rtol=1e-5, atol=1e-6 * np.abs(fd).max())


# ----------------------------------------------------------------------------- gradients


@SETTINGS
@given(masks(), st.sampled_from([(0.5, 0.5), (0.3, 0.7), (2.0, 0.1)]))
def test_dice_and_tversky_gradients_central_differences(case, weights):
    y, p, axis = case
    p = 1e-3 + p * (1 - 2e-3)  # differences stay inside [0, 1]
    alpha, beta = weights
    for name, params in [("dice", {}), ("tversky", {"alpha": alpha, "beta": beta})]:
        ev = O.EVALUATIONS[name](y, p, axis=axis, **params)
        fn = O.EVALUATIONS[name]
        fd = _fd_sum(lambda x, fn=fn, params=params: fn(y, x, axis=axis, **params).value, p)
        tol = 1e-6 * max(np.abs(fd).max(), 1.0)
        np.testing.assert_allclose(ev.grad, fd, rtol=1e-5, atol=tol)


def _far_from_kinks(labels, e, margin):
    """No negative pair within 1e-4 of distance 0 or 1 + margin, no positive pair within
    1e-4 of -margin (central differences straddle no kink)."""
    raw = 1.0 - e @ e.T
    neg = labels[:, None] != labels[None, :]
    d = np.maximum(raw, 0)
    return not (np.any(neg & (np.abs(raw) < 1e-4)) or np.any(neg & (np.abs(1 + margin - d) < 1e-4))
                or np.any(~neg & (np.abs(margin + d) < 1e-4) & (margin < 0)))


@SETTINGS
@given(embeddings(), CIRCLE_PARAMS)
def test_circle_gradient_central_differences(case, params):
    labels, e = case
    if params["gamma"] > 80:
        params = dict(params, gamma=80.0)  # keep the differences well conditioned
    if not _far_from_kinks(labels, e, params["margin"]):
        return
    ev = O._eval_circle(labels, e, **params)
    fd = _fd_sum(lambda x: O.circle(labels, x, **params), e, h=1e-7)
    tol = 1e-5 * max(np.abs(fd).max(), 1.0)
    np.testing.assert_allclose(ev.grad, fd, rtol=1e-4, atol=tol)


@TF_SETTINGS
@given(embeddings(), CIRCLE_PARAMS, st.integers(0, 2**16))
def test_circle_weighted_gradient(case, params, seed):
    labels, e = case
    w = np.random.default_rng(seed).uniform(0, 2, size=e.shape[0])
    ev = O.circle_weighted(labels, e, w, **params)
    v = tf.Variable(e)
    with tf.GradientTape() as tape:
        total = tf.reduce_sum(w * KL.circle(labels, v, **params))
    kg = tape.gradient(total, v).numpy()
    rows = ~ev.kink
    scale = max(np.abs(kg).max(), 1.0)
    np.testing.assert_allclose(ev.grad[rows], kg[rows], rtol=1e-10, atol=1e-10 * scale)
    np.testing.assert_allclose(ev.value, O.circle(labels, e, **params))


def test_circle_weighted_matches_keras_reduction_with_its_mask():
    rng = np.random.default_rng(5)
    e = rng.normal(size=(6, 3))
    e /= np.linalg.norm(e, axis=1, keepdims=True)
    labels = np.array([0, 0, 1, 1, 2, 0])  # sample 4 has no positive: loss 0, masked out
    value = O.circle(labels, e)
    mask = value > 0
    w = mask / mask.sum()
    ev = O.circle_weighted(labels, e, w)
    v = tf.Variable(e)
    with tf.GradientTape() as tape:
        reduced = keras.losses.Circle(dtype="float64")(labels, v)
    np.testing.assert_allclose(reduced.numpy(), np.sum(w * value), rtol=1e-14)
    np.testing.assert_allclose(ev.grad, tape.gradient(reduced, v).numpy(), rtol=1e-10,
                               atol=1e-12)


# ----------------------------------------------------------------------------- kinks


def _tf_circle_grad(labels, e, **params):
    return _keras("circle", np.asarray(labels), np.asarray(e, np.float64), **params)[1]


def test_circle_kink_duplicate_negatives_pass_the_gradient():
    # 1 - <e, e> == 0 exactly: TF's maximum(x, 0) passes at x >= 0
    e = np.array([[1., 0.], [1., 0.], [0., 1.], [0., 1.]])
    labels = [0, 1, 0, 1]  # rows 0 and 1 are negatives at distance 0, positives at 1
    ev = O._eval_circle(labels, e)
    assert ev.kink.all()
    np.testing.assert_allclose(ev.grad, _tf_circle_grad(labels, e), rtol=1e-13, atol=1e-12)


def test_circle_kink_negative_weight_clamp():
    # distance exactly 1 + margin (1 - (-0.6) = 1.6 = 1 + 0.6): max(x, 0) passes at x = 0
    e = np.array([[1., 0.], [-0.6, 0.8], [1., 0.], [-0.6, 0.8]])
    labels, params = [0, 1, 0, 1], {"margin": 0.6}
    ev = O._eval_circle(labels, e, **params)
    assert ev.kink.all()
    np.testing.assert_allclose(ev.grad, _tf_circle_grad(labels, e, **params), rtol=1e-13,
                               atol=1e-12)


def test_circle_kink_positive_weight_clamp_negative_margin():
    # a positive pair at distance 1 - 0.4 = 0.6 = -margin (Keras does not normalise)
    e = np.array([[1., 0.], [0.4, 0.], [0., 1.], [0., -1.]])
    labels, params = [0, 0, 1, 2], {"margin": -0.6}
    ev = O._eval_circle(labels, e, **params)
    assert ev.kink[0] and ev.kink[1]
    np.testing.assert_allclose(ev.grad, _tf_circle_grad(labels, e, **params), rtol=1e-13,
                               atol=1e-12)


def test_circle_no_kink_for_duplicate_positives():
    # positives at distance ~0 have d a / d dist = 2 gamma dist ~ 0: the gradient is
    # continuous, so those rows stay compared
    e = np.array([[0.6, 0.8], [0.6, 0.8], [-0.8, 0.6]])
    ev = O._eval_circle([0, 0, 1], e)
    assert not ev.kink.any()


def test_kink_flags_stay_tight():
    rng = np.random.default_rng(11)
    e = rng.normal(size=(32, 8))
    e /= np.linalg.norm(e, axis=1, keepdims=True)
    labels = rng.integers(0, 4, 32)
    assert not O._eval_circle(labels, e).kink.any()


# ----------------------------------------------------------------------------- invariants


@SETTINGS
@given(masks())
def test_tversky_half_half_is_dice_with_twice_eps(case):
    y, p, axis = case
    t = O.tversky(y, p, 0.5, 0.5, axis=axis)
    axes = O.check_reduce_axes(axis, y.ndim)
    inter = np.sum(y * p, axis=axes)
    den = np.sum(y, axis=axes) + np.sum(p, axis=axes)
    np.testing.assert_allclose(t, 1 - 2 * inter / (den + 2 * EPS), rtol=1e-13, atol=1e-15)
    d = O.dice(y, p, axis=axis)
    # not exact: |tversky - dice| = 2 I eps / ((D + eps)(D + 2 eps)) <= eps / D
    bound = 2 * inter * EPS / ((den + EPS) * (den + 2 * EPS)) + 1e-15
    assert np.all(np.abs(t - d) <= bound * (1 + 1e-6))


def test_tversky_is_not_exactly_dice():
    y = np.array([[1., 0., 1.]])
    p = np.array([[.9, .2, .7]])
    assert O.tversky(y, p, axis=1)[0] != O.dice(y, p, axis=1)[0]
    # a perfect one-pixel prediction: the largest gap, eps / 2, and a factor 2
    one = np.array([[1.]])
    d, t = O.dice(one, one, axis=1)[0], O.tversky(one, one, axis=1)[0]
    assert d == pytest.approx(EPS / (2 + EPS), rel=1e-8)
    assert t == pytest.approx(EPS / (1 + EPS), rel=1e-8)
    assert t - d == pytest.approx(EPS / 2, rel=1e-6)


@SETTINGS
@given(embeddings(), st.integers(0, 2**16))
def test_circle_is_batch_permutation_equivariant(case, seed):
    labels, e = case
    perm = np.random.default_rng(seed).permutation(len(labels))
    np.testing.assert_allclose(O.circle(labels[perm], e[perm]), O.circle(labels, e)[perm],
                               rtol=1e-12, atol=1e-12)


def test_circle_is_batch_coupled():
    # splitting the batch changes every value: a verifier must not split or fuse it
    e = np.array([[1., 0.], [0., 1.], [-1., 0.], [0., -1.]])
    labels = np.array([0, 1, 0, 1])
    whole = O.circle(labels, e)
    halves = np.concatenate([O.circle(labels[:2], e[:2]), O.circle(labels[2:], e[2:])])
    assert not np.allclose(whole, halves)
    assert "circle" in O.BATCH_COUPLED
    assert O.batch_coupled("circle", 2, {})
    assert O.batch_coupled("dice", 3, {"axis": None})
    assert O.batch_coupled("tversky", 3, {"axis": (0, 2)})
    assert not O.batch_coupled("dice", 3, {"axis": (1, 2)})
    assert not O.batch_coupled("tversky", 2, {"axis": -1})


def test_reduction_terms_and_kink_to_grad():
    assert O.reduction_terms("dice", (2, 3, 4), {"axis": None}) == 24
    assert O.reduction_terms("tversky", (2, 3, 4), {"axis": (1, 2)}) == 12
    assert O.reduction_terms("dice", (2, 3, 4), {"axis": ()}) == 1
    assert O.reduction_terms("circle", (6, 3), {}) == 6
    assert O.reduction_terms("circle", (6, 9), {}) == 9
    k = O.kink_to_grad("dice", np.array([True, False]), (2, 3, 4), {"axis": (1, 2)})
    assert k.shape == (2, 3, 4) and k[0].all() and not k[1].any()
    k = O.kink_to_grad("dice", np.array(False), (2, 3), {"axis": None})
    assert k.shape == (2, 3) and not k.any()
    k = O.kink_to_grad("circle", np.array([False, True]), (2, 5), {})
    assert k[1].all() and not k[0].any()


def test_computing_in_float32_computes_in_float32():
    y = (np.random.default_rng(0).random((2, 64)) < 0.5).astype(np.float32)
    p = np.random.default_rng(1).random((2, 64)).astype(np.float32)
    e = np.random.default_rng(2).normal(size=(6, 5)).astype(np.float32)
    cases = [(O._eval_dice, (y, p), {"axis": 1}), (O._eval_tversky, (y, p), {"axis": 1}),
             (O._eval_circle, ([0, 0, 1, 1, 2, 2], e), {})]
    for fn, args, kw in cases:
        exact = fn(*args, **kw)
        with computing_in(np.float32):
            low = fn(*args, **kw)
        assert low.value.dtype == exact.value.dtype == np.float64
        rel = np.abs(low.value - exact.value) / np.abs(exact.value)
        assert 0 < rel.max() < 1e-5  # rounded in float32, not float64
        glow = np.abs(low.grad - exact.grad).max() / np.abs(exact.grad).max()
        assert 0 < glow < 1e-4


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize("fn, kwargs, exc, name", [
    (O.dice, {"axis": 2}, ValueError, "axis"),
    (O.dice, {"axis": (1, 1)}, ValueError, "axis"),
    (O.dice, {"axis": (1, -1)}, ValueError, "axis"),
    (O.dice, {"axis": 1.0}, TypeError, "axis"),
    (O.dice, {"axis": True}, TypeError, "axis"),
    (O.dice, {"axis": "1"}, TypeError, "axis"),
    (O.tversky, {"alpha": -0.1}, ValueError, "alpha"),
    (O.tversky, {"beta": float("nan")}, ValueError, "beta"),
    (O.tversky, {"alpha": "0.5"}, TypeError, "alpha"),
    (O.tversky, {"beta": True}, TypeError, "beta"),
])
def test_overlap_bad_parameters(fn, kwargs, exc, name):
    with pytest.raises(exc, match=f"^{name}:"):
        fn(np.ones((2, 3)), np.ones((2, 3)), **kwargs)


def test_overlap_bad_inputs():
    with pytest.raises(ValueError, match="^y_true:"):
        O.dice(np.ones((2, 3)), np.ones((3, 2)))
    with pytest.raises(TypeError, match="^y_pred:"):
        O.tversky(np.ones(2), np.array(["a", "b"]))


@pytest.mark.parametrize("kwargs, exc, name", [
    ({"gamma": -1.0}, ValueError, "gamma"),
    ({"gamma": float("inf")}, ValueError, "gamma"),
    ({"margin": float("nan")}, ValueError, "margin"),
    ({"margin": "0.4"}, TypeError, "margin"),
    ({"remove_diagonal": "yes"}, TypeError, "remove_diagonal"),
    ({"ref_labels": [0, 1]}, ValueError, "ref_labels"),
    ({"ref_embeddings": np.ones((3, 2))}, ValueError, "ref_embeddings"),
    ({"ref_embeddings": np.ones((5, 3))}, ValueError, "ref_labels"),
])
def test_circle_bad_parameters(kwargs, exc, name):
    with pytest.raises(exc, match=f"^{name}:"):
        O.circle([0, 1, 0], np.eye(3), **kwargs)


@pytest.mark.parametrize("y_true, y_pred, exc, name", [
    ([0.5, 1, 0], np.eye(3), ValueError, "y_true"),
    ([np.nan, 1, 0], np.eye(3), ValueError, "y_true"),
    ([0, 1], np.eye(3), ValueError, "y_true"),
    ([[0, 1, 0]], np.eye(3), ValueError, "y_true"),
    ([2**40, 1, 0], np.eye(3), ValueError, "y_true"),
    (["a", "b", "c"], np.eye(3), TypeError, "y_true"),
    ([0, 1, 0], np.ones((3, 2, 2)), ValueError, "y_pred"),
    ([0, 1, 0], np.ones(3), ValueError, "y_pred"),
])
def test_circle_bad_inputs(y_true, y_pred, exc, name):
    with pytest.raises(exc, match=f"^{name}:"):
        O.circle(y_true, y_pred)


def test_circle_weighted_bad_weight():
    with pytest.raises(ValueError, match="^sample_weight:"):
        O.circle_weighted([0, 1, 0], np.eye(3), np.ones(2))


def test_float16_evaluation_overflows_where_tensorflow_does():
    # an empty mask in float16: TF's -1 / (sum + eps) is -inf and y * -inf is NaN; the
    # reference evaluated in float16 (the tolerance model's own-dtype evaluation) agrees,
    # so the budget leaves those elements uncompared instead of calling them wrong
    y = np.zeros((4, 4), np.float16)
    p = np.zeros((4, 4), np.float16)
    p[1], p[3], y[2, 0] = 1e-6, 1e-4, 1
    for name, params in [("dice", {}), ("tversky", {"alpha": 0.3, "beta": 0.7})]:
        v = tf.Variable(p)
        with tf.GradientTape() as tape:
            total = tf.reduce_sum(getattr(KL, name)(y, v, axis=1, **params))
        kg = tape.gradient(total, v).numpy()
        with computing_in(np.float16):
            low = O.EVALUATIONS[name](y, p, axis=1, **params)
        # NaN wherever TF's eager gradient is (XLA's order d * d underflows in more rows)
        assert np.all(np.isnan(low.grad)[np.isnan(kg)])
        assert np.isnan(kg[:2]).all() and not np.isnan(kg[2:]).any()
        assert not np.isnan(low.grad[2:]).any()
        exact = O.EVALUATIONS[name](y, p, axis=1, **params)
        assert np.isfinite(exact.grad).all()
