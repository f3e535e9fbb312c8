"""Meta-tests of the overlap family (Dice, Tversky, Circle).

* Wrong TensorFlow variants must be rejected by ``lossverify.verify``, each by the check
  that has to catch it (the comment above each says why and in which regime: several are
  visible only on empty or one-pixel masks, or on batches with a singleton label). The
  phase-1 task's variants always run; four more (a gradient-only bug per loss among them)
  are ``slow``: finding and shrinking a counterexample costs several seconds each.
* Correct variants must pass: independently written TensorFlow formulas and Keras's own
  function and class, over seeds 0..19 (``max_examples=5``, checks value, gradient and
  graph), and under the rounding adversary. The always-run part covers every loss; the
  full sweep is ``slow``.
* Circle is batch-coupled: the verifier never fuses, pads or splits its batches, and its
  reduced class (``Circle()``, which averages over the rows with loss > 0) is checked
  against the gradient of the weighted sum, not a row-by-row scaling.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

from family_meta import assert_seeds_pass, keras_jobs  # noqa: E402

import lossverify  # noqa: E402
from lossverify import adversary as A  # noqa: E402
from lossverify import specs as S  # noqa: E402

EPS = 1e-7
SEEDS = range(20)
CHECKS = ("value", "gradient", "graph")
NAMES = ("dice", "tversky", "circle")
ROWS = {"axis": -1}  # one value per mask row: the per-sample setting


def _sums(y_true, y_pred, axis):
    y_true = tf.cast(y_true, y_pred.dtype)
    return (tf.reduce_sum(y_true * y_pred, axis=axis), tf.reduce_sum(y_true, axis=axis),
            tf.reduce_sum(y_pred, axis=axis))


# ----------------------------------------------------------------------- wrong losses


def dice_smoothed_by_one(y_true, y_pred):
    """The common "smooth" Dice, s = 1 on both sides: off by ~1 / D."""
    inter, sy, sp = _sums(y_true, y_pred, -1)
    return 1.0 - (2.0 * inter + 1.0) / (sy + sp + 1.0)


def dice_one_in_denominator(y_true, y_pred):
    inter, sy, sp = _sums(y_true, y_pred, -1)
    return 1.0 - 2.0 * inter / (sy + sp + 1.0)


def dice_eps_on_both_sides(y_true, y_pred):
    """Right to float32 resolution except on an empty mask: 0 there instead of 1."""
    inter, sy, sp = _sums(y_true, y_pred, -1)
    return 1.0 - (2.0 * inter + EPS) / (sy + sp + EPS)


def dice_eps_in_numerator(y_true, y_pred):
    """Empty masks: (0 + eps) / 0 = inf."""
    inter, sy, sp = _sums(y_true, y_pred, -1)
    return 1.0 - (2.0 * inter + EPS) / (sy + sp)


def dice_over_the_batch_too(y_true, y_pred):
    """One Dice for the whole batch, broadcast to every row (axis=None for axis=-1)."""
    inter, sy, sp = _sums(y_true, y_pred, None)
    return tf.ones(tf.shape(y_pred)[:-1], y_pred.dtype) * (1.0 - 2.0 * inter / (sy + sp + EPS))


def dice_detached_denominator(y_true, y_pred):
    """Right values; no gradient through sum(y_pred) in the denominator."""
    inter, sy, sp = _sums(y_true, y_pred, -1)
    return 1.0 - 2.0 * inter / tf.stop_gradient(sy + sp + EPS)


def tversky_as_documented(y_true, y_pred, alpha=0.3, beta=0.7):
    """alpha on the false positives sum(p (1 - y)), as the docstring says (Keras's code
    puts it on the false negatives)."""
    y_true = tf.cast(y_true, y_pred.dtype)
    inter = tf.reduce_sum(y_true * y_pred, -1)
    fp = tf.reduce_sum(y_pred * (1 - y_true), -1)
    fn = tf.reduce_sum((1 - y_pred) * y_true, -1)
    return 1.0 - inter / (inter + alpha * fp + beta * fn + EPS)


def _circle(y_true, y_pred, gamma=80.0, margin=0.4, optim=None, delta=None,
            remove_diagonal=True, detach_weights=False):
    """Keras's Circle from its pieces; ``optim``/``delta`` override (O_p, O_n), (D_p, D_n)."""
    o_p, o_n = optim or (margin, 1 + margin)
    d_p, d_n = delta or (margin, 1 - margin)
    labels = tf.reshape(tf.cast(y_true, tf.int32), (-1, 1))
    d = tf.maximum(1.0 - tf.matmul(y_pred, y_pred, transpose_b=True), 0.0)
    same = tf.equal(labels, tf.transpose(labels))
    pos = same & ~tf.eye(tf.shape(y_pred)[0], dtype=tf.bool) if remove_diagonal else same
    neg = ~same
    w_p = tf.maximum((o_p + d) * tf.cast(pos, d.dtype), 0.0)
    w_n = tf.maximum((o_n - d) * tf.cast(neg, d.dtype), 0.0)
    if detach_weights:
        w_p, w_n = tf.stop_gradient(w_p), tf.stop_gradient(w_n)
    a = -gamma * w_p * (d_p - d)
    b = gamma * w_n * (d_n - d)
    return tf.math.softplus(tf.reduce_logsumexp(tf.where(pos, a, -np.inf), axis=1)
                            + tf.reduce_logsumexp(tf.where(neg, b, -np.inf), axis=1))


def circle_margin_sign_flipped(y_true, y_pred):
    return _circle(y_true, y_pred, margin=-0.4)


def circle_deltas_swapped(y_true, y_pred):
    return _circle(y_true, y_pred, delta=(0.6, 0.4))


def circle_keeping_the_diagonal(y_true, y_pred):
    """Each row its own positive: a row with a singleton label gets softplus(-12.8 + n)
    instead of 0 (and clustered positives gain a self term)."""
    return _circle(y_true, y_pred, remove_diagonal=False)


def circle_detached_weights(y_true, y_pred):
    """The paper's detached weights alpha_p, alpha_n: right values, another gradient."""
    return _circle(y_true, y_pred, detach_weights=True)


# (loss, reference, params, the check that must fail)
WRONG = [
    pytest.param(dice_smoothed_by_one, "dice", ROWS, "value", id="dice-smooth-1"),
    pytest.param(dice_one_in_denominator, "dice", ROWS, "value", id="dice-1-in-denominator",
                 marks=pytest.mark.slow),
    # only an empty mask shows it (the empty regime): 0 instead of 1
    pytest.param(dice_eps_on_both_sides, "dice", ROWS, "value", id="dice-eps-both-sides"),
    pytest.param(dice_eps_in_numerator, "dice", ROWS, "value", id="dice-eps-numerator"),
    pytest.param(dice_over_the_batch_too, "dice", ROWS, "value", id="dice-over-batch"),
    pytest.param(dice_detached_denominator, "dice", ROWS, "gradient",
                 id="dice-detached-denominator",
                 marks=pytest.mark.slow),
    pytest.param(tversky_as_documented, "tversky", {"alpha": 0.3, "beta": 0.7, "axis": -1},
                 "value", id="tversky-alpha-beta-swapped"),
    pytest.param(circle_margin_sign_flipped, "circle", {}, "value", id="circle-margin-sign"),
    pytest.param(circle_deltas_swapped, "circle", {}, "value", id="circle-deltas-swapped",
                 marks=pytest.mark.slow),
    # a singleton label (frequent in small batches, every row in all_different)
    pytest.param(circle_keeping_the_diagonal, "circle", {}, "value", id="circle-diagonal-kept"),
    pytest.param(circle_detached_weights, "circle", {}, "gradient",
                 id="circle-detached-weights",
                 marks=pytest.mark.slow),
]


@pytest.mark.parametrize(("loss", "reference", "params", "check"), WRONG)
def test_wrong_variant_is_rejected_by_its_check(loss, reference, params, check):
    report = lossverify.verify(loss, reference, checks=(check,), max_examples=15, seed=0,
                               **params)
    text = str(report)
    assert not report.ok, text
    assert report.checks[check].failures > 0 and report.checks[check].verdict == "FAIL", text
    assert "minimal counterexample" in text and "reproduce with" in text, text


def test_smooth_dice_is_visible_on_empty_masks_only():
    """eps on both sides: 0 instead of 1 for an empty mask, elsewhere within eps / D."""
    empty = np.zeros((1, 4), np.float32)
    assert keras.losses.dice(empty, empty, axis=-1).numpy()[0] == 1.0
    assert dice_eps_on_both_sides(empty, empty).numpy()[0] == 0.0
    y = np.array([[1.0, 0.0, 1.0, 1.0]], np.float32)
    p = np.array([[0.9, 0.2, 0.4, 1.0]], np.float32)
    np.testing.assert_allclose(dice_eps_on_both_sides(y, p).numpy(),
                               keras.losses.dice(y, p, axis=-1).numpy(), rtol=1e-6)


def test_tversky_swap_is_invisible_at_equal_weights():
    """alpha = beta: swapping them changes nothing, so the default grid draws 0.3 / 0.7."""
    y = np.array([[1.0, 1.0, 0.0, 0.0]], np.float32)
    p = np.array([[1.0, 0.0, 0.5, 0.0]], np.float32)
    np.testing.assert_allclose(tversky_as_documented(y, p, 0.5, 0.5).numpy(),
                               keras.losses.tversky(y, p, axis=-1).numpy(), rtol=1e-6)
    assert {"alpha": 0.3, "beta": 0.7, "axis": -1} in S.SPECS["tversky"].default_grid


# ----------------------------------------------------------------------- correct losses


def dice_by_difference(y_true, y_pred, axis=None):
    """(D - 2 I) / D with D = sum(y + p) + eps: one sum for the denominator."""
    y_true = tf.cast(y_true, y_pred.dtype)
    den = tf.reduce_sum(y_true + y_pred, axis=axis) + EPS
    return (den - 2.0 * tf.reduce_sum(y_true * y_pred, axis=axis)) / den


def dice_rows(y_true, y_pred):
    return dice_by_difference(y_true, y_pred, axis=-1)


def tversky_from_totals(y_true, y_pred, alpha=0.3, beta=0.7):
    """Keras's error sums written as totals minus the intersection."""
    y_true = tf.cast(y_true, y_pred.dtype)
    inter = tf.reduce_sum(y_true * y_pred, -1)
    fn = tf.reduce_sum(y_true, -1) - inter
    fp = tf.reduce_sum(y_pred, -1) - inter
    return 1.0 - inter / (inter + alpha * fn + beta * fp + EPS)


def circle_in_similarities(y_true, y_pred, gamma=80.0, margin=0.4):
    """The paper's form: s = min(<e_i, e_j>, 1), alpha_p = relu(1 + m - s),
    alpha_n = relu(s + m), logits -gamma alpha_p (s - (1 - m)) and gamma alpha_n (s - m)."""
    labels = tf.reshape(tf.cast(y_true, tf.int32), (-1, 1))
    s = tf.minimum(tf.matmul(y_pred, y_pred, transpose_b=True), 1.0)
    same = tf.equal(labels, tf.transpose(labels))
    pos = same & ~tf.eye(tf.shape(y_pred)[0], dtype=tf.bool)
    neg = ~same
    logit_p = -gamma * tf.nn.relu(1.0 + margin - s) * (s - (1.0 - margin))
    logit_n = gamma * tf.nn.relu(s + margin) * (s - margin)
    lse_p = tf.reduce_logsumexp(tf.where(pos, logit_p, -np.inf), axis=1)
    lse_n = tf.reduce_logsumexp(tf.where(neg, logit_n, -np.inf), axis=1)
    return tf.math.softplus(lse_p + lse_n)


# (loss, reference, params): one independent formula per loss, two for Dice
FORMULAS = [
    (dice_by_difference, "dice", {}),
    (tversky_from_totals, "tversky", {"alpha": 0.3, "beta": 0.7, "axis": -1}),
    (circle_in_similarities, "circle", {}),
    (dice_rows, "dice", ROWS),
]




def test_correct_formulas_pass_20_seeds():
    """Seed s checks formula s mod 4: every formula, 20 seeds in all (always run)."""
    failures = []
    for seed in SEEDS:
        loss, reference, params = FORMULAS[seed % len(FORMULAS)]
        report = lossverify.verify(loss, reference, max_examples=5, seed=seed, checks=CHECKS,
                                   **params)
        if not report.ok:
            failures.append(str(report))
    assert not failures, "\n\n".join(failures)


@pytest.mark.parametrize("name", NAMES)
def test_keras_class_passes_under_the_rounding_adversary(name):
    loss = S.build_implementation(S.SPECS[name].implementation("keras", "class"), {})
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


# ----------------------------------------------------------------------- batch coupling


def test_circle_class_reduces_over_the_rows_with_loss_above_zero():
    """Keras's Circle() averages over the rows with a positive and a negative (it masks
    loss > 0), not over the batch as its docstring says; the reference's reduction and
    gradient follow it (tolerance.budget with reduced=True)."""
    from lossverify import tolerance as T

    e = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]], np.float32)
    labels = np.array([0, 1, 0, 2], np.int32)  # rows 1 and 3: no positive, loss 0
    per_row = keras.losses.circle(labels, e).numpy()
    assert per_row[1] == per_row[3] == 0.0
    v = tf.Variable(e)
    with tf.GradientTape() as tape:
        reduced = keras.losses.Circle()(labels, v)
    np.testing.assert_allclose(reduced.numpy(), per_row.sum() / 2, rtol=1e-6)
    budget = T.budget("circle", {}, labels, e, reduced=True)
    assert abs(float(reduced.numpy()) - float(budget.value)) <= float(budget.value_allowed)
    grad = tape.gradient(reduced, v).numpy()
    assert (np.abs(grad - budget.grad) <= budget.grad_allowed).all()


def test_batch_coupled_losses_are_never_fused():
    for name in NAMES:
        assert S.SPECS[name].batch_coupled, name


def test_circle_bfloat16_kink_reach_is_bfloat16s():
    """The 4-dtype main job's counterexample: identical bfloat16 rows with other labels sit
    on Circle's kink (distance 1 - e.e = 0, here -2e-4 in float32 arithmetic); the budget
    must flag them though the references receive bfloat16 inputs as float32."""
    from lossverify import tolerance
    from lossverify.numerics import np_dtype

    e = np.full((5, 5), 0.447265625).astype(np_dtype("bfloat16"))
    labels = np.array([0, 1, 1, 1, 1], np.int32)
    b = tolerance.budget("circle", {}, labels, e, dtype="bfloat16")
    assert b.kink_rows == 5 and not b.grad_rows.any()
    b32 = tolerance.budget("circle", {}, labels, e.astype(np.float32), dtype="float32")
    assert b32.kink_rows == 0  # float32 inputs: -2e-4 is far beyond float32's reach
