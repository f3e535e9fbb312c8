"""The ``ctc`` reference (:mod:`lossverify.reference.ctc`).

The independent check is brute force: for tiny ``time`` and ``classes`` every alignment
(all ``classes ** time`` class sequences) is enumerated, collapsed (merge repeats, drop
blanks) and summed, which gives the value and, through the exact posterior of each
frame's class, the gradient ``softmax - posterior``. Then float64 central differences,
Keras (TensorFlow backend; it computes in float32 whatever the input dtype) within the
float32 tolerance model, and the places where TensorFlow departs from the documented
semantics (reproducers: they fail if upstream changes).
"""

from __future__ import annotations

import itertools
import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import lossverify.reference as R
from lossverify.reference import computing_in
from lossverify.reference.ctc import _eval_ctc, ctc
from lossverify.reference.ctc import ctc_label_sequences as label_sequences

SETTINGS = settings(max_examples=40, deadline=None, derandomize=True)
U64 = 2.0**-53


# ----------------------------------------------------------------------------- brute force


def _log_softmax(z):
    m = z.max(-1, keepdims=True)
    return (z - m) - np.log(np.exp(z - m).sum(-1, keepdims=True))


def _collapse(path):
    out, prev = [], None
    for c in path:
        if c != prev and c != 0:
            out.append(c)
        prev = c
    return out


def _brute_force(labels, z):
    """(value, gradient) of one sample by enumerating every alignment."""
    n_time, n_classes = z.shape
    lsm = _log_softmax(z)
    logs, paths = [], []
    for path in itertools.product(range(n_classes), repeat=n_time):
        if _collapse(path) == list(labels):
            logs.append(sum(lsm[t, c] for t, c in enumerate(path)))
            paths.append(path)
    if not logs:
        return np.inf, np.full(z.shape, np.nan)
    logs = np.array(logs)
    m = logs.max()
    log_p = m + np.log(np.exp(logs - m).sum())
    weights = np.exp(logs - log_p)
    posterior = np.zeros(z.shape)
    for w, path in zip(weights, paths, strict=True):
        posterior[np.arange(n_time), list(path)] += w
    return -log_p, np.exp(lsm) - posterior


def _fits(labels, n_time):
    return len(labels) + sum(a == b for a, b in zip(labels, labels[1:], strict=False)) <= n_time


# ----------------------------------------------------------------------------- inputs


@st.composite
def _tiny(draw, trailing_only=False, scale=6.0):
    """(y_true, y_pred) with classes ** time <= 256, labels possibly impossible."""
    n_classes = draw(st.integers(1, 4), label="classes")
    max_time = {1: 6, 2: 6, 3: 5, 4: 4}[n_classes]
    n_time = draw(st.integers(0, max_time), label="time")
    batch = draw(st.integers(1, 3), label="batch")
    width = draw(st.integers(0, 4), label="max_label_length")
    rows = []
    for _ in range(batch):
        row = draw(st.lists(st.integers(0, n_classes - 1), min_size=width, max_size=width))
        if trailing_only:
            nz = [c for c in row if c]
            row = nz + [0] * (width - len(nz))
        rows.append(row)
    y = np.array(rows, dtype=np.int64).reshape(batch, width)
    elements = st.floats(-scale, scale, allow_nan=False, allow_infinity=False)
    z = draw(hnp.arrays(np.float64, (batch, n_time, n_classes), elements=elements),
             label="logits")
    return y, z


@st.composite
def _possible(draw, max_time=8, max_classes=5, scale=5.0, min_width=1):
    """Labels that fit, trailing padding only (what Keras reads as documented)."""
    n_classes = draw(st.integers(2, max_classes), label="classes")
    n_time = draw(st.integers(1, max_time), label="time")
    batch = draw(st.integers(1, 3), label="batch")
    width = draw(st.integers(min_width, 5), label="max_label_length")
    rows = []
    for _ in range(batch):
        length = draw(st.integers(0, width))
        labels = draw(st.lists(st.integers(1, n_classes - 1), min_size=length,
                               max_size=length))
        while not _fits(labels, n_time):
            labels = labels[:-1]
        rows.append(labels + [0] * (width - len(labels)))
    elements = st.floats(-scale, scale, allow_nan=False, allow_infinity=False)
    z = draw(hnp.arrays(np.float64, (batch, n_time, n_classes), elements=elements),
             label="logits")
    return np.array(rows, dtype=np.int64), z


# ----------------------------------------------------------------------------- values


def test_worked_example():
    # two uniform frames over {blank, 1}, label [1]: alignments 11, 01, 10
    ev = _eval_ctc([[1, 0]], [[[0.0, 0.0], [0.0, 0.0]]])
    assert ev.value[0] == pytest.approx(-np.log(0.75), rel=1e-15)
    # frame 0: P(class 1 | label) = (p(11) + p(10)) / p = 2/3, so grad = 1/2 - 2/3
    np.testing.assert_allclose(ev.grad, [[[1 / 6, -1 / 6], [1 / 6, -1 / 6]]], rtol=1e-14)


@SETTINGS
@given(_tiny())
def test_value_and_gradient_against_brute_force(case):
    y, z = case
    ev = _eval_ctc(y, z)
    for b, labels in enumerate(label_sequences(y)):
        value, grad = _brute_force(labels, z[b])
        if np.isinf(value):
            assert np.isposinf(ev.value[b]) and np.isnan(ev.grad[b]).all()
            assert not _fits(labels, z.shape[1])
            continue
        assert _fits(labels, z.shape[1])
        tol = 64 * U64 * (ev.value_scale[b] + abs(value))
        assert abs(ev.value[b] - value) <= tol, (labels, ev.value[b], value)
        np.testing.assert_allclose(ev.grad[b], grad, rtol=0, atol=1e-12)


@SETTINGS
@given(_tiny(scale=1.0), st.sampled_from([20.0, 35.0, 60.0]))
def test_peaked_logits_against_brute_force(case, gap):
    """Logits with a gap > 20 (a float32 softmax saturates) on a random class per frame."""
    y, z = case
    if z.size == 0:
        return
    rng = np.random.default_rng(int(gap) + z.size)
    idx = rng.integers(0, z.shape[2], size=z.shape[:2])
    z = z.copy()
    np.put_along_axis(z, idx[..., None], np.take_along_axis(z, idx[..., None], 2) + gap, 2)
    ev = _eval_ctc(y, z)
    for b, labels in enumerate(label_sequences(y)):
        value, grad = _brute_force(labels, z[b])
        if np.isinf(value):
            assert np.isposinf(ev.value[b])
            continue
        assert abs(ev.value[b] - value) <= 64 * U64 * (ev.value_scale[b] + abs(value))
        np.testing.assert_allclose(ev.grad[b], grad, rtol=0, atol=1e-12)


def test_blank_only_labels():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(3, 7, 4)) * 3
    y = np.zeros((3, 2), np.int64)
    ev = _eval_ctc(y, z)
    lsm = _log_softmax(z)
    np.testing.assert_allclose(ev.value, -lsm[:, :, 0].sum(1), rtol=1e-14)
    expected = np.exp(lsm)
    expected[:, :, 0] -= 1.0
    np.testing.assert_allclose(ev.grad, expected, atol=1e-15)


def test_label_length_equal_to_time_has_one_alignment():
    rng = np.random.default_rng(1)
    z = rng.normal(size=(2, 4, 5))
    y = np.array([[1, 2, 3, 4, 0], [4, 4, 0, 0, 0]])  # [4, 4] needs 3 frames: 4 0 4 + 1
    ev = _eval_ctc(y[:1], z[:1])
    lsm = _log_softmax(z[0])
    assert ev.value[0] == pytest.approx(-lsm[np.arange(4), [1, 2, 3, 4]].sum(), rel=1e-14)
    onehot = np.eye(5)[[1, 2, 3, 4]]
    np.testing.assert_allclose(ev.grad[0], np.exp(lsm) - onehot, atol=1e-15)
    # a repeated label needs a blank between: [4, 4] fits 3 frames exactly as 4 0 4
    ev3 = _eval_ctc(y[1:, :2], z[1:, :3])
    lsm3 = _log_softmax(z[1, :3])
    assert ev3.value[0] == pytest.approx(-lsm3[np.arange(3), [4, 0, 4]].sum(), rel=1e-14)
    assert np.isposinf(_eval_ctc(y[1:, :2], z[1:, :2]).value[0])  # 2 frames: impossible


def test_zero_frames():
    ev = _eval_ctc(np.array([[0, 0], [3, 0]]), np.zeros((2, 0, 4)))
    assert ev.value[0] == 0.0 and np.isposinf(ev.value[1])
    assert ev.grad.shape == (2, 0, 4)


def test_trailing_padding_and_interior_zeros_are_masks():
    rng = np.random.default_rng(2)
    z = rng.normal(size=(1, 6, 4))
    base = ctc([[2, 3]], z)
    for y in ([[2, 3, 0, 0]], [[0, 2, 3]], [[2, 0, 3]], [[0, 2, 0, 0, 3, 0]]):
        assert ctc(y, z) == base


@SETTINGS
@given(_possible())
def test_invariants(case):
    y, z = case
    ev = _eval_ctc(y, z)
    assert (ev.value >= 0).all()
    # softmax and the posterior both sum to 1 over the classes of every frame
    np.testing.assert_allclose(ev.grad.sum(-1), 0.0, atol=1e-13)
    # shifting a frame's logits by a constant changes nothing
    shift = np.linspace(-3, 3, z.shape[1])[None, :, None]
    moved = _eval_ctc(y, z + shift)
    np.testing.assert_allclose(moved.value, ev.value, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(moved.grad, ev.grad, atol=1e-12)
    # renaming the non-blank classes in labels and logits alike changes nothing
    perm = np.concatenate([[0], np.arange(z.shape[2] - 1, 0, -1)])
    renamed = _eval_ctc(perm[y], z[..., np.argsort(perm)])
    np.testing.assert_allclose(renamed.value, ev.value, rtol=1e-12, atol=1e-12)


# ----------------------------------------------------------------------------- gradient


def _central_difference(y, z, h=1e-6):
    grad = np.empty_like(z)
    for t in range(z.shape[1]):
        for k in range(z.shape[2]):
            zp, zm = z.copy(), z.copy()
            zp[:, t, k] += h
            zm[:, t, k] -= h
            grad[:, t, k] = (ctc(y, zp) - ctc(y, zm)) / (zp[:, t, k] - zm[:, t, k])
    return grad


@settings(max_examples=25, deadline=None, derandomize=True)
@given(_possible(max_time=6, max_classes=4, scale=4.0))
def test_gradient_against_central_differences(case):
    y, z = case
    ev = _eval_ctc(y, z)
    fd = _central_difference(y, z)
    np.testing.assert_allclose(ev.grad, fd, rtol=0, atol=2e-7)


# ----------------------------------------------------------------------------- scales


@SETTINGS
@given(_possible())
def test_float32_evaluation_within_its_first_order_scale(case):
    """The reference's own formulas in float32 (one correct float32 implementation,
    unnormalised log space) stay inside ``4 u (n + 1) scale``, with room to spare."""
    y, z = case
    ev = _eval_ctc(y, z)
    with computing_in(np.float32):
        low = _eval_ctc(y, z)
    assert low.value.dtype == np.float32 and low.grad.dtype == np.float32
    u = 2.0**-24
    n1 = z.shape[2] + 1
    assert (np.abs(low.value - ev.value) <= 4 * u * n1 * ev.value_scale).all()
    assert (np.abs(low.grad - ev.grad) <= 4 * u * n1 * ev.grad_scale + 1e-30).all()
    assert np.isfinite(ev.value_scale).all() and np.isfinite(ev.grad_scale).all()


def test_scales_are_finite_where_the_value_is_infinite():
    ev = _eval_ctc([[1, 1, 1]], np.zeros((1, 3, 2)))
    assert np.isposinf(ev.value[0]) and np.isnan(ev.grad).all()
    assert np.isfinite(ev.value_scale).all() and np.isfinite(ev.grad_scale).all()


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize("y_true, y_pred, exc, words", [
    ([1, 2], np.zeros((1, 3, 3)), ValueError, "y_true: expected integer labels of rank 2"),
    ([[[1]]], np.zeros((1, 3, 3)), ValueError, "y_true: expected integer labels of rank 2"),
    ([[1]], np.zeros((1, 3)), ValueError, "y_pred: expected logits of rank 3"),
    ([[1]], np.zeros((1, 3, 3, 1)), ValueError, "y_pred: expected logits of rank 3"),
    ([[1]], np.zeros((1, 3, 0)), ValueError, "y_pred: expected at least one class"),
    ([[1], [2]], np.zeros((1, 3, 3)), ValueError, "y_true: expected batch size 1"),
    ([[3]], np.zeros((1, 3, 3)), ValueError, "y_true: expected labels in [0, 3)"),
    ([[-1]], np.zeros((1, 3, 3)), ValueError, "y_true: expected labels in [0, 3)"),
    ([[1.5]], np.zeros((1, 3, 3)), ValueError, "y_true: expected integer class labels"),
    ([["a"]], np.zeros((1, 3, 3)), TypeError, "y_true: expected integer class labels"),
    ([[1]], np.zeros((1, 3, 3), complex), TypeError, "y_pred: expected a real numeric array"),
])
def test_bad_inputs_name_the_argument(y_true, y_pred, exc, words):
    with pytest.raises(exc, match=words.replace("[", r"\[").replace(")", r"\)")):
        ctc(y_true, y_pred)


# ----------------------------------------------------------------------------- TensorFlow

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


@pytest.fixture(scope="module")
def tf_keras():
    tf = pytest.importorskip("tensorflow")
    keras = pytest.importorskip("keras")
    return tf, keras


def _keras_value_and_grad(tf, keras, y, z):
    zv = tf.constant(np.asarray(z, np.float32))
    with tf.GradientTape() as tape:
        tape.watch(zv)
        v = keras.losses.ctc(tf.constant(y, tf.int32), zv)
    return v.numpy().astype(np.float64), tape.gradient(v, zv).numpy().astype(np.float64)


def _float32_allowed(y, z32):
    """The tolerance model's float32 budget (``lossverify.tolerance.allowed``) with its
    spread from the float32 evaluation of the reference."""
    from lossverify import tolerance

    ev = _eval_ctc(y, z32)
    with computing_in(np.float32):
        low = _eval_ctc(y, z32)
    n = z32.shape[2]
    return (ev, tolerance.allowed(ev.value_scale, n, "float32", 2 * (low.value - ev.value)),
            tolerance.allowed(ev.grad_scale, n, "float32", 2 * (low.grad - ev.grad)))


def test_worked_example_against_keras(tf_keras):
    tf, keras = tf_keras
    v, g = _keras_value_and_grad(tf, keras, np.array([[1, 0]]), np.zeros((1, 2, 2)))
    assert v[0] == pytest.approx(0.2876821, abs=1e-7)
    np.testing.assert_allclose(g, [[[1 / 6, -1 / 6], [1 / 6, -1 / 6]]], atol=1e-7)


@settings(max_examples=10, deadline=None, derandomize=True)
@given(_possible(max_time=6, max_classes=4))
def test_against_keras_within_the_float32_budget(tf_keras, case):
    tf, keras = tf_keras
    y, z = case
    z32 = z.astype(np.float32)
    ev, v_allowed, g_allowed = _float32_allowed(y, z32)
    v, g = _keras_value_and_grad(tf, keras, y, z32)
    assert (np.abs(v - ev.value) <= v_allowed).all(), (v, ev.value, v_allowed)
    assert (np.abs(g - ev.grad) <= g_allowed).all()
    # Keras computes float64 inputs in float32 and casts the result back
    v64 = keras.losses.ctc(y, z32.astype(np.float64)).numpy()
    assert v64.dtype == np.float64 and (v64 == v).all()


def test_tf_dense_ctc_refuses_float64(tf_keras):
    tf, _ = tf_keras
    with pytest.raises(tf.errors.InvalidArgumentError):
        tf.nn.ctc_loss(np.array([[1]], np.int32), np.zeros((1, 2, 2)), [1], [2],
                       logits_time_major=False, blank_index=0)


def test_tf_sparse_kernel_in_float64(tf_keras):
    """TensorFlow's older C++ kernel (sparse labels, blank last) takes float64 and has its
    own gradient; it agrees to float32-level accuracy (its log-sum-exp is not float64
    accurate: errors ~1e-8), value and gradient."""
    tf, _ = tf_keras
    rng = np.random.default_rng(3)
    y = np.array([[1, 2, 0], [3, 3, 0], [0, 2, 1]])
    z = rng.normal(size=(3, 6, 4)) * 2
    idx = [[b, i] for b, row in enumerate(label_sequences(y)) for i in range(len(row))]
    vals = [c - 1 for row in label_sequences(y) for c in row]
    labels = tf.SparseTensor(np.array(idx, np.int64), np.array(vals, np.int32), [3, 3])
    zv = tf.constant(np.concatenate([z[..., 1:], z[..., :1]], -1))  # blank last
    with tf.GradientTape() as tape:
        tape.watch(zv)
        v = tf.compat.v1.nn.ctc_loss(labels, zv, np.full(3, 6, np.int32), time_major=False)
    g = tape.gradient(v, zv).numpy()
    g = np.concatenate([g[..., -1:], g[..., :-1]], -1)
    ev = _eval_ctc(y, z)
    assert v.dtype == tf.float64
    u = 2.0**-24
    assert (np.abs(v.numpy() - ev.value) <= 4 * u * 5 * ev.value_scale).all()
    assert (np.abs(g - ev.grad) <= 4 * u * 5 * ev.grad_scale).all()


# Where TensorFlow departs from the documented semantics (candidate known deviations).


def test_reproducer_interior_zero_read_as_a_label(tf_keras):
    """Keras counts the nonzero labels but TensorFlow reads that many from the front: a 0
    before the last label becomes a label whose class is the blank, and the last label
    is dropped. [[0, 2]] is the label [2] (documented) but TensorFlow scores [blank]."""
    tf, keras = tf_keras
    rng = np.random.default_rng(0)
    z = rng.normal(size=(1, 4, 3)).astype(np.float32)
    v, g = _keras_value_and_grad(tf, keras, np.array([[0, 2]]), z)
    ref = _eval_ctc([[0, 2]], z)
    assert abs(v[0] - ref.value[0]) > 0.1, "upstream fixed?"
    # and TensorFlow's gradient is then not the derivative of its own value
    h = 1e-2
    zp, zm = z.copy(), z.copy()
    zp[0, 0, 0] += h
    zm[0, 0, 0] -= h
    fd = (keras.losses.ctc(np.array([[0, 2]]), zp.astype(np.float64)).numpy()
          - keras.losses.ctc(np.array([[0, 2]]), zm.astype(np.float64)).numpy()) / (2 * h)
    assert abs(fd[0] - g[0, 0, 0]) > 0.05, "upstream fixed?"


def test_reproducer_impossible_label_and_cap_near_707(tf_keras):
    """TensorFlow's dense CTC uses log(1e-307) = -706.89 as log 0 for its final states: an
    impossible label costs ~707 instead of inf, and every loss above ~700 is capped."""
    tf, keras = tf_keras
    z = np.zeros((1, 4, 3), np.float32)
    impossible = keras.losses.ctc(np.array([[1, 1, 1]]), z).numpy()[0]
    assert np.isfinite(impossible) and 700 < impossible < 720, "upstream fixed?"
    assert np.isposinf(ctc([[1, 1, 1]], z)[0])
    peaked = np.zeros((1, 10, 3), np.float32)
    peaked[:, :, 0] = 800.0  # the label [1] must take one frame from the blank: 800 - log 10
    capped = keras.losses.ctc(np.array([[1]]), peaked).numpy()[0]
    assert ctc([[1]], peaked)[0] == pytest.approx(800 - np.log(10), rel=1e-12)
    assert capped == pytest.approx(706.8936, abs=1e-3), "upstream fixed?"


def test_reproducer_empty_label_axis_double_counts(tf_keras):
    """y_true of shape (batch, 0): TensorFlow's transition matrix counts the start ->
    blank transition twice (start-to-label and label-to-blank scatter to the same
    entry), so p doubles: the loss is log 2 too small (negative with one class)."""
    tf, keras = tf_keras
    z = np.zeros((1, 3, 2), np.float32)
    got = keras.losses.ctc(np.zeros((1, 0), np.int32), z).numpy()[0]
    assert ctc(np.zeros((1, 0), np.int64), z)[0] == pytest.approx(3 * np.log(2))
    assert got == pytest.approx(2 * np.log(2), abs=1e-6), "upstream fixed?"
    assert keras.losses.ctc(np.zeros((1, 1), np.int32), z).numpy()[0] == pytest.approx(
        3 * np.log(2), abs=1e-6)


def test_a_bfloat16_yardstick_evaluates():
    """The tolerance model evaluates references in the implementation's compute dtype;
    NumPy's einsum has no bfloat16 loops (the 4-dtype main job crashed on it)."""
    import ml_dtypes

    z = np.random.default_rng(0).normal(size=(2, 4, 3)).astype(np.float32)
    exact = _eval_ctc([[1], [2]], z)
    with R.computing_in(ml_dtypes.bfloat16):
        low = _eval_ctc([[1], [2]], z)
    assert low.value.dtype == low.grad.dtype == ml_dtypes.bfloat16
    np.testing.assert_allclose(np.float64(low.value), exact.value, rtol=2e-2)


def _with_grad_element(y_true, y_pred, index, got):
    """Closeness of the reference's own value and gradient (rounded to float32) with one
    gradient element replaced by ``got``."""
    from lossverify import close_to_reference
    ev = R.evaluate("ctc", y_true, y_pred)
    grad = ev.grad.astype(np.float32)
    grad[index] = got
    return close_to_reference("ctc", y_true, y_pred, ev.value.astype(np.float32), grad)


@pytest.mark.parametrize(("regime", "index", "seen", "wrong"), [
    # keras.losses.ctc on JAX (reverse mode through its forward scan), peaked logits: the
    # class outside the label with p ~ 1 gets the frame's total-occupancy error
    ("peaked", (0, 6, 1), 0.9999950528144836, 0.99),
    # keras.losses.ctc on PyTorch (F.ctc_loss, then log_softmax's backward), blank favoured
    ("large_loss", (0, 2, 2), 4.53959837614093e-05, 4.59e-05),
])
def test_gradient_budget_covers_log_softmax_backward_and_no_more(regime, index, seen, wrong):
    """A gradient taken in reverse mode through log_softmax (``g_k - p_k sum_j g_j``)
    carries every occupancy's error into each class, weighted by p_k: JAX's and
    PyTorch's CTC gradients (the values they gave, element ``index``; 1.25 and 1.6 times
    the budget before it had that term) pass. The term is the occupancies' own error
    scale, which grows with |alpha| (a loss of 154 here: 4.6e-3 allowed at p ~ 1, as for
    the label's classes at that frame): the element 1% off still fails."""
    if regime == "peaked":
        y_true = np.array([[6, 10, 6, 2, 0, 0, 0, 0, 0]], np.int32)
        y_pred = np.zeros((1, 8, 12), np.float32)
        y_pred[..., 1] = 20.0
    else:
        y_true = np.array([[1, 1, 1, 1, 0, 0, 0, 0, 0]], np.int32)
        y_pred = np.zeros((1, 8, 3), np.float32)
        y_pred[..., 0] = 10.0
    assert _with_grad_element(y_true, y_pred, index, seen).ok
    assert not _with_grad_element(y_true, y_pred, index, wrong).ok
