"""Invariants (metamorphic relations): correct Keras and notes' losses satisfy each one
over several seeds; a deliberately wrong loss violates the one it must, with a minimal
counterexample and a reproduce line; bad arguments are refused naming the argument."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

from lossverify import notes_losses as N  # noqa: E402
from lossverify.invariants import INVARIANTS, assert_invariant, check_invariant  # noqa: E402

K = keras.losses


def cce_from_logits(y_true, y_pred):
    return K.categorical_crossentropy(y_true, y_pred, from_logits=True)


def scce_ignore0(y_true, y_pred):
    return K.sparse_categorical_crossentropy(y_true, y_pred, ignore_class=0)


# (id, invariant, loss factories, reference, params)
CORRECT = [
    ("nonneg-cce", "non_negative", (lambda: K.categorical_crossentropy,),
     "categorical_crossentropy", {}),
    ("nonneg-bce-logits", "non_negative", (lambda: K.BinaryCrossentropy(from_logits=True),),
     "binary_crossentropy", {"from_logits": True}),
    ("nonneg-bfce", "non_negative", (lambda: K.BinaryFocalCrossentropy(),),
     "binary_focal_crossentropy", {}),
    ("nonneg-notes-focal", "non_negative", (lambda: N.focal_loss(gamma=2.0),), "focal_loss",
     {"gamma": 2.0}),
    ("nonneg-mse", "non_negative", (lambda: K.MeanSquaredError(),), "mean_squared_error", {}),
    ("perm-cce-class", "batch_permutation", (lambda: K.CategoricalCrossentropy(),),
     "categorical_crossentropy", {}),
    ("perm-scce", "batch_permutation", (lambda: K.sparse_categorical_crossentropy,),
     "sparse_categorical_crossentropy", {}),
    ("perm-notes-focal-class", "batch_permutation", (lambda: N.FocalLoss(gamma=2.0),),
     "focal_loss", {"gamma": 2.0}),
    ("split-cce-class", "batch_split", (lambda: K.CategoricalCrossentropy(),),
     "categorical_crossentropy", {}),
    ("split-mse-sum", "batch_split", (lambda: K.MeanSquaredError(reduction="sum"),),
     "mean_squared_error", {}),
    ("split-bce", "batch_split", (lambda: K.binary_crossentropy,), "binary_crossentropy", {}),
    ("split-notes-sparse-focal", "batch_split",
     (lambda: N.sparse_focal_loss(gamma=2.0, class_num=10),), "sparse_focal_loss",
     {"gamma": 2.0, "class_num": 10}),
    ("class=fn-cce", "class_matches_function",
     (lambda: K.CategoricalCrossentropy(), lambda: K.categorical_crossentropy),
     "categorical_crossentropy", {}),
    ("class=fn-scce-ignore", "class_matches_function",
     (lambda: K.SparseCategoricalCrossentropy(ignore_class=0), lambda: scce_ignore0),
     "sparse_categorical_crossentropy", {"ignore_class": 0}),
    ("class=fn-cfce", "class_matches_function",
     (lambda: K.CategoricalFocalCrossentropy(), lambda: K.categorical_focal_crossentropy),
     "categorical_focal_crossentropy", {}),
    ("class=fn-notes-mse", "class_matches_function",
     (lambda: N.MeanSquaredError(), lambda: N.mean_squared_error), "mean_squared_error", {}),
    ("class=fn-notes-focal", "class_matches_function",
     (lambda: N.FocalLoss(gamma=2.0), lambda: N.focal_loss(gamma=2.0)), "focal_loss",
     {"gamma": 2.0}),
    ("sparse=dense-scce", "sparse_matches_dense",
     (lambda: K.sparse_categorical_crossentropy, lambda: K.categorical_crossentropy),
     "sparse_categorical_crossentropy", {}),
    ("sparse=dense-notes-focal", "sparse_matches_dense",
     (lambda: N.sparse_focal_loss(gamma=2.0, class_num=10), lambda: N.focal_loss(gamma=2.0)),
     "sparse_focal_loss", {"gamma": 2.0, "class_num": 10}),
    ("gamma0-notes-focal", "focal_gamma0_matches_cross_entropy",
     (lambda: N.focal_loss(gamma=0.0), lambda: cce_from_logits), "focal_loss", {"gamma": 0.0}),
    ("gamma0-cfce", "focal_gamma0_matches_cross_entropy",
     (lambda: K.CategoricalFocalCrossentropy(gamma=0.0), lambda: K.CategoricalCrossentropy()),
     "categorical_focal_crossentropy", {"gamma": 0.0}),
    ("gamma0-bfce-logits", "focal_gamma0_matches_cross_entropy",
     (lambda: K.BinaryFocalCrossentropy(gamma=0.0, from_logits=True),
      lambda: K.BinaryCrossentropy(from_logits=True)),
     "binary_focal_crossentropy", {"gamma": 0.0, "from_logits": True}),
    ("focal<=ce-notes", "focal_not_above_cross_entropy",
     (lambda: N.focal_loss(gamma=2.0), lambda: cce_from_logits), "focal_loss", {"gamma": 2.0}),
    ("focal<=ce-bfce", "focal_not_above_cross_entropy",
     (lambda: K.binary_focal_crossentropy, lambda: K.binary_crossentropy),
     "binary_focal_crossentropy", {}),
]


# ----------------------------------------------------------------------- margin family


def hinge_without_label_conversion(y_true, y_pred):
    """Keras's hinge formula without convert_binary_labels_to_hinge: 0 labels stay 0."""
    y_true = tf.cast(y_true, y_pred.dtype)
    return tf.reduce_mean(tf.maximum(1.0 - y_true * y_pred, 0.0), axis=-1)


def cosine_normalising_y_pred_only(y_true, y_pred):
    """-sum(y * normalize(p)): y_true's norm forgotten, so |loss| reaches ||y||."""
    y_true = tf.cast(y_true, y_pred.dtype)
    return -tf.reduce_sum(y_true * tf.math.l2_normalize(y_pred, axis=-1), axis=-1)


def cosine_distance(y_true, y_pred):
    """1 + cosine similarity (a distance in [0, 2]) where the similarity was meant."""
    return 1.0 + K.cosine_similarity(y_true, y_pred)


CORRECT += [
    ("signs-hinge", "binary_labels_match_signs", (lambda: K.hinge,), "hinge", {}),
    ("signs-squared-hinge-class", "binary_labels_match_signs", (lambda: K.SquaredHinge(),),
     "squared_hinge", {}),
    ("magnitude-cosine", "magnitude_at_most_one", (lambda: K.cosine_similarity,),
     "cosine_similarity", {}),
    ("magnitude-cosine-class", "magnitude_at_most_one", (lambda: K.CosineSimilarity(),),
     "cosine_similarity", {}),
    ("odd-cosine", "odd_in_y_pred", (lambda: K.cosine_similarity,), "cosine_similarity", {}),
    ("odd-cosine-class", "odd_in_y_pred", (lambda: K.CosineSimilarity(),),
     "cosine_similarity", {}),
]

MARGIN_WRONG = [
    ("signs-hinge-no-conversion", "binary_labels_match_signs",
     (lambda: hinge_without_label_conversion,), "hinge", {}),
    ("magnitude-cosine-y-true-unnormalised", "magnitude_at_most_one",
     (lambda: cosine_normalising_y_pred_only,), "cosine_similarity", {}),
    ("odd-cosine-distance", "odd_in_y_pred", (lambda: cosine_distance,), "cosine_similarity",
     {}),
]


# The regression family's invariants (swap_symmetric, huber_matches_half_mse).


def huber_4096(y_true, y_pred):
    return K.huber(y_true, y_pred, delta=4096.0)


def msle_clamps_prediction_only(y_true, y_pred):
    """MSLE that clamps y_pred at eps but not y_true: NaN for a target below -1."""
    y_true = tf.cast(y_true, y_pred.dtype)
    a = tf.math.log1p(tf.maximum(y_pred, 1e-7))
    return tf.reduce_mean(tf.square(a - tf.math.log1p(y_true)), axis=-1)


def huber_4096_without_half(y_true, y_pred):
    """Huber whose quadratic branch forgot the 1/2."""
    e = y_pred - tf.cast(y_true, y_pred.dtype)
    return tf.reduce_mean(tf.where(tf.abs(e) <= 4096.0, tf.square(e),
                                   4096.0 * tf.abs(e) - 0.5 * 4096.0**2), axis=-1)


CORRECT += [
    ("swap-mae", "swap_symmetric", (lambda: K.mean_absolute_error,), "mean_absolute_error", {}),
    ("swap-msle", "swap_symmetric", (lambda: K.mean_squared_logarithmic_error,),
     "mean_squared_logarithmic_error", {}),
    ("swap-huber-class", "swap_symmetric", (lambda: K.Huber(delta=0.1),), "huber",
     {"delta": 0.1}),
    ("swap-log-cosh", "swap_symmetric", (lambda: K.log_cosh,), "log_cosh", {}),
    ("huber=mse/2", "huber_matches_half_mse", (lambda: huber_4096, lambda: K.mean_squared_error),
     "huber", {"delta": 4096.0}),
]


# probabilistic family: KL = CE - entropy, generalized CE <= sparse CE (correct and wrong)


def _gce(q):
    return lambda y_true, y_pred: K.categorical_generalized_cross_entropy(y_true, y_pred, q=q)


def kl_sign_flipped(y_true, y_pred):
    """sum(y log(p / y)): minus the divergence."""
    y = tf.clip_by_value(tf.cast(y_true, y_pred.dtype), 1e-7, 1.0)
    p = tf.clip_by_value(y_pred, 1e-7, 1.0)
    return tf.reduce_sum(y * tf.math.log(p / y), axis=-1)


def gce_over_q_squared(y_true, y_pred):
    """(1 - p**q) / q**2 (q = 0.5): divided by q twice."""
    return K.categorical_generalized_cross_entropy(y_true, y_pred, q=0.5) / 0.5


CORRECT += [
    ("kl=ce-entropy", "kl_matches_cross_entropy_minus_entropy",
     (lambda: K.kl_divergence, lambda: K.categorical_crossentropy), "kl_divergence", {}),
    ("gce<=ce", "generalized_not_above_cross_entropy",
     (lambda: _gce(0.01), lambda: K.sparse_categorical_crossentropy),
     "categorical_generalized_cross_entropy", {"q": 0.01}),
]
_PROBABILISTIC_WRONG = [
    ("kl!=ce-entropy-sign-flipped", "kl_matches_cross_entropy_minus_entropy",
     (lambda: kl_sign_flipped, lambda: K.categorical_crossentropy), "kl_divergence", {}),
    ("gce>ce-over-q-squared", "generalized_not_above_cross_entropy",
     (lambda: gce_over_q_squared, lambda: K.sparse_categorical_crossentropy),
     "categorical_generalized_cross_entropy", {"q": 0.5}),
]


# The overlap family's invariants (tversky_half_matches_dice, permutation_equivariant;
# swap_symmetric and class_matches_function for Dice and Circle).


def dice_rows(y_true, y_pred):
    return K.dice(y_true, y_pred, axis=-1)


def tversky_rows(y_true, y_pred):
    return K.tversky(y_true, y_pred, axis=-1)


def tversky_smoothed_by_one(y_true, y_pred):
    """Tversky(0.5, 0.5) with the common smoothing 1 on both sides instead of Keras's eps:
    far from Dice on small masks."""
    y_true = tf.cast(y_true, y_pred.dtype)
    inter = tf.reduce_sum(y_true * y_pred)
    den = inter + 0.5 * tf.reduce_sum((1 - y_pred) * y_true) + \
        0.5 * tf.reduce_sum(y_pred * (1 - y_true))
    return 1.0 - (inter + 1.0) / (den + 1.0)


def circle_removing_the_antidiagonal(y_true, y_pred, gamma=80.0, margin=0.4):
    """Circle whose positive mask drops pairs (i, n - 1 - i) instead of (i, i): what it
    drops depends on the rows' order, so a permuted batch gives other values."""
    labels = tf.reshape(tf.cast(y_true, tf.int32), (-1, 1))
    d = tf.maximum(1.0 - tf.matmul(y_pred, y_pred, transpose_b=True), 0.0)
    same = tf.equal(labels, tf.transpose(labels))
    n = tf.shape(y_pred)[0]
    pos = same & ~tf.reverse(tf.eye(n, dtype=tf.bool), axis=[1])
    neg = ~same
    a = -gamma * tf.maximum((margin + d) * tf.cast(pos, d.dtype), 0.0) * (margin - d)
    b = gamma * tf.maximum((1 + margin - d) * tf.cast(neg, d.dtype), 0.0) * (1 - margin - d)
    return tf.math.softplus(tf.reduce_logsumexp(tf.where(pos, a, -np.inf), axis=1)
                            + tf.reduce_logsumexp(tf.where(neg, b, -np.inf), axis=1))


CORRECT += [
    ("nonneg-dice", "non_negative", (lambda: K.dice,), "dice", {}),
    ("nonneg-circle", "non_negative", (lambda: K.circle,), "circle", {}),
    ("swap-dice", "swap_symmetric", (lambda: K.dice,), "dice", {}),
    ("swap-dice-rows-class", "swap_symmetric", (lambda: K.Dice(axis=-1),), "dice",
     {"axis": -1}),
    ("class=fn-dice", "class_matches_function", (lambda: K.Dice(), lambda: K.dice), "dice", {}),
    ("class=fn-circle", "class_matches_function", (lambda: K.Circle(), lambda: K.circle),
     "circle", {}),
    ("tversky=dice", "tversky_half_matches_dice", (lambda: K.tversky, lambda: K.dice),
     "tversky", {}),
    ("tversky=dice-rows", "tversky_half_matches_dice", (lambda: tversky_rows, lambda: dice_rows),
     "tversky", {"axis": -1}),
    ("perm-circle", "permutation_equivariant", (lambda: K.circle,), "circle", {}),
    ("perm-circle-class", "permutation_equivariant", (lambda: K.Circle(),), "circle", {}),
]

OVERLAP_WRONG = [
    ("tversky!=dice-smoothed-by-one", "tversky_half_matches_dice",
     (lambda: tversky_smoothed_by_one, lambda: K.dice), "tversky", {}),
    ("perm-circle-antidiagonal", "permutation_equivariant",
     (lambda: circle_removing_the_antidiagonal,), "circle", {}),
]


# CTC: a frame's logits shifted by a constant, more trailing zero labels (correct and wrong)


def ctc_of_log_sigmoid(y_true, y_pred):
    """Keras's CTC of log(sigmoid(z)): per-class sigmoid scores where logits were meant."""
    return K.ctc(y_true, tf.math.log_sigmoid(y_pred))


def ctc_padding_counted_as_labels(y_true, y_pred):
    """tf.nn.ctc_loss with label_length = the row width: the zero padding scored as labels."""
    y = tf.cast(y_true, tf.int32)
    n = tf.shape(y)[0]
    return tf.nn.ctc_loss(y, y_pred, tf.fill([n], tf.shape(y)[1]),
                          tf.fill([n], tf.shape(y_pred)[1]), logits_time_major=False,
                          blank_index=0)


CORRECT += [
    ("shift-ctc", "logit_shift_invariant", (lambda: K.ctc,), "ctc", {}),
    ("pad-ctc-class", "label_padding_invariant", (lambda: K.CTC(),), "ctc", {}),
    ("class=fn-ctc", "class_matches_function", (lambda: K.CTC(), lambda: K.ctc), "ctc", {}),
]
_CTC_WRONG = [
    ("shift-ctc-log-sigmoid", "logit_shift_invariant", (lambda: ctc_of_log_sigmoid,), "ctc",
     {}),
    ("pad-ctc-padding-as-labels", "label_padding_invariant",
     (lambda: ctc_padding_counted_as_labels,), "ctc", {}),
]


def test_every_invariant_has_a_correct_case():
    assert {case[1] for case in CORRECT} == set(INVARIANTS)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize(("invariant", "factories", "reference", "params"),
                         [c[1:] for c in CORRECT], ids=[c[0] for c in CORRECT])
def test_correct_losses_satisfy_the_invariant(invariant, factories, reference, params, seed):
    report = check_invariant(invariant, *(f() for f in factories), reference=reference,
                             max_examples=25, seed=seed, **params)
    assert report.ok, str(report)
    assert report.examples == 25 and report.worst_ratio <= 1.0


# ----------------------------------------------------------------------- wrong losses


def cce_missing_minus(y_true, y_pred):
    """sum(y log p): the sign forgotten."""
    return tf.reduce_sum(y_true * tf.math.log(tf.clip_by_value(y_pred, 1e-7, 1.0)), axis=-1)


def cce_first_row_labels(y_true, y_pred):
    """An indexing slip: every row is scored against the first row's labels."""
    return K.categorical_crossentropy(tf.broadcast_to(y_true[:1], tf.shape(y_pred)), y_pred)


def focal_softmax_over_batch(y_true, y_pred):
    """The notes' focal loss with softmax over axis 0 (the batch) instead of the classes."""
    p = tf.clip_by_value(tf.nn.softmax(y_pred, axis=0), 1e-7, 1.0)
    return -tf.reduce_sum(y_true * (1 - p) ** 2 * tf.math.log(p), axis=-1)


class CCEOverFixedBatch(keras.losses.Loss):
    """Meant ``sum / 32`` (the notes' batch size) whatever the batch: scales each sample by
    ``n / 32`` and lets the default reduction divide by ``n``. Right at n = 32 only."""

    def __init__(self):
        super().__init__(name="cce_over_32")

    def call(self, y_true, y_pred):
        n = tf.cast(tf.shape(y_true)[0], tf.float32)
        return K.categorical_crossentropy(y_true, y_pred) * n / 32.0


class CCEOtherEpsilon(keras.losses.Loss):
    """A class that clips at 1e-4 while its function twin (Keras's) clips at 1e-7."""

    def call(self, y_true, y_pred):
        p = tf.clip_by_value(y_pred / tf.reduce_sum(y_pred, -1, keepdims=True), 1e-4, 1 - 1e-4)
        return -tf.reduce_sum(y_true * tf.math.log(p), axis=-1)


def scce_off_by_one(y_true, y_pred):
    labels = tf.cast(tf.reshape(y_true, tf.shape(y_pred)[:-1]), tf.int32)
    dense = tf.one_hot((labels + 1) % tf.shape(y_pred)[-1], tf.shape(y_pred)[-1])
    return K.categorical_crossentropy(dense, y_pred)


def focal_double_softmax_gamma0(y_true, y_pred):
    """The notes' focal (gamma = 0) fed a softmax output: softmax applied twice."""
    return N.focal_loss(gamma=0.0)(y_true, tf.nn.softmax(y_pred))


def focal_gamma_times(y_true, y_pred):
    """``(1 - p) * gamma`` where ``(1 - p) ** gamma`` was meant (gamma = 2)."""
    p = tf.clip_by_value(tf.nn.softmax(y_pred), 1e-7, 1.0)
    return -tf.reduce_sum(y_true * (1 - p) * 2.0 * tf.math.log(p), axis=-1)


WRONG = [
    ("nonneg-missing-minus", "non_negative", (lambda: cce_missing_minus,),
     "categorical_crossentropy", {}),
    ("perm-first-row-labels", "batch_permutation", (lambda: cce_first_row_labels,),
     "categorical_crossentropy", {}),
    ("split-softmax-over-batch", "batch_split", (lambda: focal_softmax_over_batch,),
     "focal_loss", {"gamma": 2.0}),
    ("split-fixed-batch-size", "batch_split", (CCEOverFixedBatch,),
     "categorical_crossentropy", {}),
    ("class!=fn-epsilon", "class_matches_function",
     (CCEOtherEpsilon, lambda: K.categorical_crossentropy), "categorical_crossentropy", {}),
    ("class!=fn-notes-mse-as-written", "class_matches_function",
     (N.AS_WRITTEN["MeanSquaredError"], lambda: N.mean_squared_error),
     "mean_squared_error", {}),
    ("sparse!=dense-off-by-one", "sparse_matches_dense",
     (lambda: scce_off_by_one, lambda: K.categorical_crossentropy),
     "sparse_categorical_crossentropy", {}),
    ("gamma0-double-softmax", "focal_gamma0_matches_cross_entropy",
     (lambda: focal_double_softmax_gamma0, lambda: cce_from_logits), "focal_loss",
     {"gamma": 0.0}),
    ("focal>ce-gamma-times", "focal_not_above_cross_entropy",
     (lambda: focal_gamma_times, lambda: cce_from_logits), "focal_loss", {"gamma": 2.0}),
]

WRONG += MARGIN_WRONG


# The regression family's wrong cases (functions above, with its correct cases).
WRONG += [
    ("swap-msle-clamps-prediction-only", "swap_symmetric", (lambda: msle_clamps_prediction_only,),
     "mean_squared_logarithmic_error", {}),
    ("huber!=mse/2-without-half", "huber_matches_half_mse",
     (lambda: huber_4096_without_half, lambda: K.mean_squared_error), "huber", {"delta": 4096.0}),
]

WRONG += _PROBABILISTIC_WRONG  # the probabilistic family's (above)
WRONG += _CTC_WRONG  # CTC's (above)

WRONG += OVERLAP_WRONG


def test_every_invariant_has_a_wrong_case():
    assert {case[1] for case in WRONG} == set(INVARIANTS)


@pytest.mark.parametrize(("invariant", "factories", "reference", "params"),
                         [c[1:] for c in WRONG], ids=[c[0] for c in WRONG])
def test_wrong_loss_violates_the_invariant(invariant, factories, reference, params):
    report = check_invariant(invariant, *(f() for f in factories), reference=reference,
                             max_examples=100, seed=0, **params)
    text = str(report)
    assert not report.ok, text
    assert report.message.startswith(invariant.split("_")[0]) or invariant in text, text
    assert "minimal counterexample" in text and report.counterexample, text
    assert f"check_invariant({invariant!r}" in text and "seed=0" in text, text
    with pytest.raises(AssertionError, match="minimal counterexample"):
        assert_invariant(invariant, *(f() for f in factories), reference=reference,
                         max_examples=100, seed=0, **params)


def test_violation_report_is_deterministic():
    a, b = (check_invariant("batch_permutation", cce_first_row_labels,
                            reference="categorical_crossentropy", max_examples=30, seed=4)
            for _ in range(2))
    assert a.to_dict() == b.to_dict()


@pytest.mark.parametrize(("args", "kwargs", "error", "match"), [
    (("no_such", K.categorical_crossentropy), {"reference": "categorical_crossentropy"},
     ValueError, "invariant: expected one of"),
    (("non_negative", K.categorical_crossentropy, K.categorical_crossentropy),
     {"reference": "categorical_crossentropy"}, TypeError, "losses: non_negative takes 1"),
    (("non_negative", "cce"), {"reference": "categorical_crossentropy"}, TypeError,
     "losses: expected callables"),
    (("non_negative", K.categorical_crossentropy), {"reference": "nope"}, ValueError,
     "reference: expected one of"),
    (("sparse_matches_dense", K.categorical_crossentropy, K.categorical_crossentropy),
     {"reference": "categorical_crossentropy"}, ValueError, "reference: sparse_matches_dense"),
    (("focal_gamma0_matches_cross_entropy", cce_from_logits, cce_from_logits),
     {"reference": "focal_loss", "gamma": 2.0}, ValueError, "gamma: "),
    (("class_matches_function", K.categorical_crossentropy, K.CategoricalCrossentropy()),
     {"reference": "categorical_crossentropy"}, TypeError, "losses: class_matches_function"),
    (("batch_split", K.categorical_crossentropy),
     {"reference": "categorical_crossentropy", "axis": 0}, ValueError, "axis: "),
    (("non_negative", K.categorical_crossentropy),
     {"reference": "categorical_crossentropy", "max_examples": 0}, ValueError,
     "max_examples"),
    (("non_negative", K.categorical_crossentropy),
     {"reference": "categorical_crossentropy", "gamma": 2.0}, TypeError, "reference_kwargs"),
])
def test_bad_arguments_are_refused_naming_them(args, kwargs, error, match):
    with pytest.raises(error, match=match):
        check_invariant(*args, **kwargs)


# ------------------------------------------------ on batches drawn for the verify runs


def _setting_draws(reference, params):
    from lossverify.search import draw_batches
    from lossverify.session import raw_strategy

    return draw_batches(raw_strategy(reference, params), 40, 0, "float32", 200,
                        prepare=lambda d: d)


@pytest.mark.parametrize(("invariant", "factories", "reference", "params"),
                         [c[1:] for c in WRONG if c[1] != "sparse_matches_dense"],
                         ids=[c[0] for c in WRONG if c[1] != "sparse_matches_dense"])
def test_wrong_loss_violates_the_invariant_on_the_settings_draws(invariant, factories,
                                                                 reference, params):
    """The conformance run's path: the relation runs on the batches the setting's verify
    runs drew, and a violation among them is shrunk by Hypothesis's own search."""
    drawn = _setting_draws(reference, params)
    report = check_invariant(invariant, *(f() for f in factories), reference=reference,
                             max_examples=len(drawn), seed=0, drawn=drawn, **params)
    text = str(report)
    assert not report.ok, text
    assert "minimal counterexample" in text and report.counterexample, text
    assert report.examples <= len(drawn), text


def test_on_the_settings_draws_hypothesis_draws_nothing_for_a_correct_loss(monkeypatch):
    from lossverify import invariants

    drawn = _setting_draws("categorical_crossentropy", {})

    def no_search(*args, **kwargs):
        raise AssertionError("Hypothesis drew batches of its own")

    monkeypatch.setattr(invariants, "run_hypothesis", no_search)
    report = check_invariant("batch_split", K.CategoricalCrossentropy(),
                             reference="categorical_crossentropy", max_examples=10, seed=0,
                             drawn=drawn)
    assert report.ok and report.examples == 10, str(report)


def test_a_violation_on_the_settings_draws_stands_where_the_search_misses_it(monkeypatch):
    """Hypothesis's own draws differ from the setting's: where its search finds nothing
    to shrink, the drawn batch that violated the relation is the counterexample."""
    from lossverify import invariants

    drawn = _setting_draws("categorical_crossentropy", {})
    monkeypatch.setattr(invariants, "run_hypothesis", lambda *args, **kwargs: None)
    report = check_invariant("non_negative", cce_missing_minus,
                             reference="categorical_crossentropy", max_examples=10, seed=0,
                             drawn=drawn)
    assert not report.ok and report.counterexample, str(report)
    # the first drawn batch with a positive loss violates it: the run stops there
    shown = [repr(x.without_weight()) for x, _ in drawn[:report.examples]]
    assert report.counterexample == shown[-1], str(report)
    assert 1 <= report.examples <= 10, str(report)
