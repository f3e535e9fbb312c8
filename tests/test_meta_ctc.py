"""Meta-tests of the CTC record: wrong TensorFlow variants are rejected by the check that
must catch them; correct ones (Keras's function and class, and an independently written
forward algorithm) pass over 20 seeds and under the rounding adversary.

The always-run part takes well under a minute of one core; the 20-seed sweeps are
``slow``.

Keras's CTC builds its time loop with ``ctc_ops._scan``, a ``While`` over ``Defun``
functions in graph mode, which the rounding adversary cannot interpret. Its sweeps run
with ``_scan`` replaced by the same loop unrolled over the (static) time axis: the same
ops per step, so the same roundings to adversarially perturb.
"""

from __future__ import annotations

import contextlib
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

from tensorflow.python.ops import ctc_ops  # noqa: E402
from tensorflow.python.util import nest  # noqa: E402

import lossverify  # noqa: E402
from lossverify import adversary as A  # noqa: E402
from lossverify import specs as S  # noqa: E402

K = keras.losses
SWEEP_CHECKS = ("value", "gradient", "graph")
#: a finite stand-in for log 0 in the hand-written forward algorithm (-inf would make
#: autodiff's logsumexp gradient 0 * inf = NaN in unreachable states); the drawn losses
#: stay below 600, so paths through it never count
LOG_ZERO = -1e4


# ------------------------------------------------------------ a forward algorithm in TF


def _forward_ctc(y_true, y_pred, *, log_softmax=True, blank_between_repeats=True,
                 stop_normaliser=False):
    """``-log p(l | z)`` by the forward algorithm over ``blank l1 blank ... lL blank``, with
    ``l`` the nonzero labels of each row in order; autodiff for the gradient. A Python loop
    over a static time axis (plain ops: the rounding adversary can run it), else tf.scan.

    The switches make the wrong variants: ``log_softmax=False`` scores the raw logits;
    ``blank_between_repeats=False`` lets an alignment go from a label straight to an equal
    next label; ``stop_normaliser`` holds the softmax's normaliser constant for the
    gradient (the value is right, the gradient misses softmax)."""
    z = tf.convert_to_tensor(y_pred)
    dtype = z.dtype
    if log_softmax:
        lse = tf.reduce_logsumexp(z, axis=-1, keepdims=True)
        logp = z - (tf.stop_gradient(lse) if stop_normaliser else lse)
    else:
        logp = z
    y = tf.cast(y_true, tf.int32)
    nonzero = tf.not_equal(y, 0)
    order = tf.argsort(tf.cast(tf.logical_not(nonzero), tf.int32), axis=1, stable=True)
    labels = tf.gather(y, order, batch_dims=1)  # the nonzero labels first, in order
    length = tf.reduce_sum(tf.cast(nonzero, tf.int32), axis=1)
    batch, width = tf.shape(labels)[0], tf.shape(labels)[1]
    ext = tf.reshape(tf.stack([tf.zeros_like(labels), labels], axis=2), [batch, 2 * width])
    ext = tf.concat([ext, tf.zeros([batch, 1], tf.int32)], axis=1)  # (batch, states)
    states = tf.range(2 * width + 1)
    valid = states[None, :] < 2 * length[:, None] + 1
    two_back = tf.concat([tf.fill([batch, 2], -1), ext[:, :-2]], axis=1)
    skip = tf.logical_and(tf.not_equal(ext, 0), states[None, :] >= 2)
    if blank_between_repeats:
        skip = tf.logical_and(skip, tf.not_equal(ext, two_back))
    emit = tf.gather(logp, ext, axis=2, batch_dims=1)  # (batch, time, states)
    low = tf.constant(LOG_ZERO, dtype)
    emit = tf.where(valid[:, None, :], emit, low)

    def shifted(a, k):
        return tf.concat([tf.fill([batch, k], low), a[:, :-k]], axis=1)

    def step(alpha, e):
        stay, one = alpha, shifted(alpha, 1)
        two = tf.where(skip, shifted(alpha, 2), low)
        return tf.reduce_logsumexp(tf.stack([stay, one, two]), axis=0) + e

    # one step before the first frame: all the mass in state 0, so the first step reaches
    # the leading blank (state 0) and the first label (state 1) only
    alpha = tf.where(tf.equal(states, 0)[None, :], tf.zeros([batch, 1], dtype), low)
    n_time = y_pred.shape[1]
    if n_time is not None:
        for t in range(n_time):
            alpha = step(alpha, emit[:, t])
    else:
        alpha = tf.foldl(step, tf.transpose(emit, [1, 0, 2]), initializer=alpha)
    last = tf.gather(alpha, 2 * length, batch_dims=1)
    before = tf.gather(alpha, tf.maximum(2 * length - 1, 0), batch_dims=1)
    before = tf.where(length > 0, before, low)
    return -tf.reduce_logsumexp(tf.stack([last, before]), axis=0)


def ctc_forward(y_true, y_pred):
    """A correct CTC: the forward algorithm in log space, written from the definition."""
    return _forward_ctc(y_true, y_pred)


# ----------------------------------------------------------------------- wrong losses


def ctc_without_blank_between_repeats(y_true, y_pred):
    return _forward_ctc(y_true, y_pred, blank_between_repeats=False)


def ctc_missing_log_softmax(y_true, y_pred):
    return _forward_ctc(y_true, y_pred, log_softmax=False)


def ctc_blank_last(y_true, y_pred):
    """tf.nn.ctc_loss with the blank at the last class (its old convention) instead of 0."""
    y = tf.cast(y_true, tf.int32)
    n = tf.shape(y)[0]
    return tf.nn.ctc_loss(y, y_pred, tf.reduce_sum(tf.cast(y != 0, tf.int32), axis=1),
                          tf.fill([n], tf.shape(y_pred)[1]), logits_time_major=False,
                          blank_index=-1)


def ctc_on_probabilities(y_true, y_pred):
    """Keras's CTC fed softmax(z): the probabilities taken for logits."""
    return K.ctc(y_true, tf.nn.softmax(y_pred))


def ctc_detached_normaliser(y_true, y_pred):
    return _forward_ctc(y_true, y_pred, stop_normaliser=True)


# (loss, the check that must fail): why it must, above each entry
WRONG = [
    # value: equal neighbouring labels get alignments without a blank between (repeats)
    pytest.param(ctc_without_blank_between_repeats, "value", id="no-blank-between-repeats"),
    # value: the last class plays the blank, class 0 a label
    pytest.param(ctc_blank_last, "value", id="blank-index-last"),
    # value: the raw logits scored as log-probabilities
    pytest.param(ctc_missing_log_softmax, "value", id="missing-log-softmax"),
    # value: log_softmax of probabilities is nearly uniform
    pytest.param(ctc_on_probabilities, "value", id="probabilities-for-logits"),
    # gradient: the right value, the gradient -posterior without the softmax
    pytest.param(ctc_detached_normaliser, "gradient", id="detached-normaliser"),
]


def _caught(loss, check, max_examples=12):
    report = lossverify.verify(loss, "ctc", checks=(check,), max_examples=max_examples,
                               seed=0)
    text = str(report)
    assert not report.ok, text
    assert report.checks[check].failures > 0 and report.checks[check].verdict == "FAIL", text
    assert "minimal counterexample" in text and "reproduce with" in text, text


@pytest.mark.parametrize(("loss", "check"), WRONG)
def test_wrong_variant_is_caught_by_its_check(loss, check):
    _caught(loss, check)


def test_detached_normaliser_has_right_values():
    """Only the gradient check can see the detached normaliser."""
    report = lossverify.verify(ctc_detached_normaliser, "ctc", checks=("value",),
                               max_examples=8, seed=0)
    assert report.ok, str(report)


# ----------------------------------------------------------------------- correct losses


def _verify_seeds(loss, params, seeds, max_examples=5):
    for seed in seeds:
        report = lossverify.verify(loss, "ctc", checks=SWEEP_CHECKS, max_examples=max_examples,
                                   seed=seed, **params)
        assert report.ok, str(report)


def test_correct_formula_passes():
    _verify_seeds(ctc_forward, {}, range(1))


def test_keras_function_passes():
    _verify_seeds(K.ctc, {}, range(1))


@pytest.mark.slow
def test_correct_formula_passes_20_seeds():
    _verify_seeds(ctc_forward, {}, range(20))


def _keras_jobs():
    spec = S.SPECS["ctc"]
    for params in spec.default_grid:
        for impl in spec.implementations:
            yield pytest.param(impl, dict(params), id=f"{impl.label}-{params}")


@pytest.mark.slow
@pytest.mark.parametrize(("impl", "params"), list(_keras_jobs()))
def test_keras_passes_20_seeds(impl, params):
    _verify_seeds(S.build_implementation(impl, params), params, range(20))


# ----------------------------------------------------------------------- rounding adversary


def _unrolled_scan(fn, elems, initial, reverse=False, inclusive=False, final_only=False):
    """``ctc_ops._scan`` with its loop unrolled over the static first axis of ``elems``:
    the same step ops, no While (same outputs; see ctc_ops._scan's docstring)."""
    flat_elems = [tf.convert_to_tensor(x) for x in nest.flatten(elems)]
    flat_init = [tf.convert_to_tensor(x) for x in nest.flatten(initial)]
    n = flat_elems[0].shape[0]
    assert n is not None, "the unrolled scan needs a static time axis"
    acc, results = flat_init, {}
    for i in (range(n - 1, -1, -1) if reverse else range(n)):
        slices = nest.pack_sequence_as(elems, [e[i] for e in flat_elems])
        acc = nest.flatten(fn(nest.pack_sequence_as(initial, acc), slices))
        results[i] = acc
    if final_only:
        return nest.pack_sequence_as(initial, acc)
    rows = [results[i] for i in range(n)]
    if inclusive:
        rows = rows + [flat_init] if reverse else [flat_init] + rows
    return nest.pack_sequence_as(initial, [tf.stack([r[j] for r in rows])
                                           for j in range(len(flat_init))])


@contextlib.contextmanager
def _keras_ctc_unrolled():
    original = ctc_ops._scan
    ctc_ops._scan = _unrolled_scan
    try:
        yield
    finally:
        ctc_ops._scan = original


def test_unrolled_scan_matches_keras():
    rng = np.random.default_rng(0)
    y = np.array([[1, 2, 2, 0], [3, 0, 0, 0], [0, 0, 0, 0]], np.int32)
    z = rng.normal(size=(3, 6, 4)).astype(np.float32)

    def value_and_grad(y, z):
        with tf.GradientTape() as tape:
            tape.watch(z)
            v = K.ctc(y, z)
        return v, tape.gradient(v, z)

    spec = [tf.TensorSpec(y.shape, tf.int32), tf.TensorSpec(z.shape, tf.float32)]
    plain = tf.function(value_and_grad).get_concrete_function(*spec)(tf.constant(y),
                                                                    tf.constant(z))
    with _keras_ctc_unrolled():
        unrolled = tf.function(value_and_grad).get_concrete_function(*spec)(tf.constant(y),
                                                                           tf.constant(z))
    for a, b in zip(plain, unrolled, strict=True):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6, atol=1e-7)


def test_keras_ctc_is_beyond_the_rounding_adversary_as_it_is():
    """Recorded, so that lifting it is noticed: ctc_ops._scan's While and Defun bodies."""
    with pytest.raises(NotImplementedError, match="rounding adversary"):
        A.rounding_sweep(K.ctc, "ctc", {}, seeds=range(1), draws=1)


def _sweep(loss, seeds, draws):
    with _keras_ctc_unrolled():
        result = A.rounding_sweep(loss, "ctc", {}, seeds=seeds, draws=draws)
    assert not result["failures"], "\n\n".join(result["failures"][:3])
    assert max(result["worst"].values()) < 1.0, result["worst"]


@pytest.mark.parametrize("loss", [K.ctc, ctc_forward], ids=["keras", "forward"])
def test_passes_under_the_rounding_adversary(loss):
    _sweep(loss, range(2), 2)


@pytest.mark.slow
@pytest.mark.parametrize("loss", [K.ctc, K.CTC(), ctc_forward],
                         ids=["keras-function", "keras-class", "forward"])
def test_passes_under_the_rounding_adversary_20_seeds(loss):
    _sweep(loss, range(20), 5)
