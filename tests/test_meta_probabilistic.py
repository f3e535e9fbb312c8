"""Meta-tests of the probabilistic family (kl_divergence, poisson,
categorical_generalized_cross_entropy): ``lossverify.verify`` catches wrong variants on
the check that must see them, passes Keras's losses and independently written correct
formulas (also under the rounding adversary), and the family's invariants pass correct
losses and catch wrong ones. Keras's documented-but-broken ``[batch, 1]`` label shape of
the generalized cross-entropy is reproduced.

Always-run part: a few seeds each; the 20-seed sweeps are ``slow``.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

from family_meta import keras_jobs  # noqa: E402

import lossverify  # noqa: E402
import lossverify.reference as R  # noqa: E402
import lossverify.strategies  # noqa: E402
from lossverify import adversary as A  # noqa: E402
from lossverify import specs as S  # noqa: E402
from lossverify.invariants import check_invariant  # noqa: E402

K = keras.losses
EPS = 1e-7
FAMILY = ("kl_divergence", "poisson", "categorical_generalized_cross_entropy")
SEEDS = range(20)
CHECKS = ("value", "gradient", "graph")


# ----------------------------------------------------------------------- wrong variants


def kl_without_clip(y_true, y_pred):
    y_true = tf.cast(y_true, y_pred.dtype)
    return tf.reduce_sum(y_true * tf.math.log(y_true / y_pred), axis=-1)


def kl_sign_flipped(y_true, y_pred):
    y_true = tf.clip_by_value(tf.cast(y_true, y_pred.dtype), EPS, 1.0)
    y_pred = tf.clip_by_value(y_pred, EPS, 1.0)
    return tf.reduce_sum(y_true * tf.math.log(y_pred / y_true), axis=-1)


def kl_upper_bound_one_minus_eps(y_true, y_pred):
    y_true = tf.clip_by_value(tf.cast(y_true, y_pred.dtype), EPS, 1.0)
    y_pred = tf.clip_by_value(y_pred, EPS, 1.0 - EPS)
    return tf.reduce_sum(y_true * tf.math.log(y_true / y_pred), axis=-1)


def poisson_without_eps(y_true, y_pred):
    y_true = tf.cast(y_true, y_pred.dtype)
    return tf.reduce_mean(y_pred - y_true * tf.math.log(y_pred), axis=-1)


def poisson_detached_log(y_true, y_pred):
    y_true = tf.cast(y_true, y_pred.dtype)
    return tf.reduce_mean(y_pred - y_true * tf.stop_gradient(tf.math.log(y_pred + EPS)),
                          axis=-1)


def _p_of(y_true, y_pred, shift=0):
    labels = tf.cast(y_true, tf.int32)
    c = tf.shape(y_pred)[-1]
    return tf.gather(y_pred, tf.math.floormod(labels + shift, c), axis=-1,
                     batch_dims=len(y_pred.shape) - 1)


def _gce_without_division(q):
    def gce(y_true, y_pred):
        return 1.0 - tf.pow(_p_of(y_true, y_pred), q)

    return gce


def _gce_wrong_class(q):
    def gce(y_true, y_pred):
        return (1.0 - tf.pow(_p_of(y_true, y_pred, shift=1), q)) / q

    return gce


WRONG = [
    # value: zero labels give 0 * log(0 / p) = NaN without Keras's clip of y_true
    pytest.param(lambda: kl_without_clip, "kl_divergence", {}, "value", id="kl-no-clip"),
    # value: log(p / y) is minus the divergence
    pytest.param(lambda: kl_sign_flipped, "kl_divergence", {}, "value", id="kl-sign-flipped"),
    # gradient: Keras's upper bound is 1, so a y_pred of 1 - 2**-24 passes the gradient
    # (-y / p); clipping at 1 - eps blocks it (the values differ by ~eps only)
    pytest.param(lambda: kl_upper_bound_one_minus_eps, "kl_divergence", {}, "gradient",
                 id="kl-upper-bound-1-minus-eps"),
    # value: log(0) = -inf at a prediction of exactly 0 ("near_zero" regime)
    pytest.param(lambda: poisson_without_eps, "poisson", {}, "value", id="poisson-no-eps"),
    # gradient: values right, the -y / (p + eps) part of the gradient is missing
    pytest.param(lambda: poisson_detached_log, "poisson", {}, "gradient",
                 id="poisson-detached-log"),
    # value: (1 - p**q) without / q is q times the loss
    pytest.param(lambda: _gce_without_division(0.5), "categorical_generalized_cross_entropy",
                 {"q": 0.5}, "value", id="gce-no-division-by-q"),
    # value: p of the next class instead of the labelled one
    pytest.param(lambda: _gce_wrong_class(0.5), "categorical_generalized_cross_entropy",
                 {"q": 0.5}, "value", id="gce-wrong-class"),
]


#: draws per wrong variant: 25, more where few values show it (one float32 value lies in
#: (1 - eps, 1), and a tie with 1 itself is a kink)
EXAMPLES = {"kl-upper-bound-1-minus-eps": 80}


@pytest.mark.parametrize(("factory", "reference", "params", "check"), WRONG)
def test_wrong_variant_is_caught_by_its_check(factory, reference, params, check, request):
    examples = EXAMPLES.get(request.node.callspec.id, 25)
    report = lossverify.verify(factory(), reference, checks=(check,), max_examples=examples,
                               seed=0, **params)
    text = str(report)
    assert not report.ok, text
    assert report.checks[check].failures > 0, text
    assert report.checks[check].verdict == "FAIL", text
    assert "minimal counterexample" in text, text


# ----------------------------------------------------------------------- correct variants


def kl_entropy_form(y_true, y_pred):
    """Cross-entropy minus entropy, y log y - y log p (PyTorch's kl_div), with Keras's
    clips."""
    y = tf.clip_by_value(tf.cast(y_true, y_pred.dtype), EPS, 1.0)
    p = tf.clip_by_value(y_pred, EPS, 1.0)
    return tf.reduce_sum(y * tf.math.log(y) - y * tf.math.log(p), axis=-1)


def poisson_xlogy(y_true, y_pred):
    y = tf.cast(y_true, y_pred.dtype)
    return tf.reduce_mean(y_pred - tf.math.xlogy(y, y_pred + EPS), axis=-1)


def _gce_expm1(q):
    """-expm1(q log p) / q on the gathered probability: no cancellation for small q."""
    def gce(y_true, y_pred):
        return -tf.math.expm1(q * tf.math.log(_p_of(y_true, y_pred))) / q

    return gce


BY_HAND = [
    pytest.param(lambda: kl_entropy_form, "kl_divergence", {}, id="kl-entropy-form"),
    pytest.param(lambda: poisson_xlogy, "poisson", {}, id="poisson-xlogy"),
    pytest.param(lambda: _gce_expm1(0.5), "categorical_generalized_cross_entropy", {"q": 0.5},
                 id="gce-expm1-q0.5"),
    pytest.param(lambda: _gce_expm1(0.01), "categorical_generalized_cross_entropy",
                 {"q": 0.01}, id="gce-expm1-q0.01"),
]




def _verify_seeds(loss, name, params, seeds, max_examples=5):
    failures = []
    for seed in seeds:
        report = lossverify.verify(loss, name, max_examples=max_examples, seed=seed,
                                   checks=CHECKS, **params)
        if not report.ok:
            failures.append(str(report))
    assert not failures, f"{len(failures)} of {len(seeds)} seeds failed:\n\n" + \
        "\n\n".join(failures)


@pytest.mark.parametrize(("name", "impl", "params"), list(keras_jobs(FAMILY)))
def test_keras_passes_on_the_default_grid(name, impl, params):
    _verify_seeds(S.build_implementation(impl, params), name, params, [0])


@pytest.mark.parametrize(("factory", "name", "params"), BY_HAND[:3])
def test_correct_formula_passes(factory, name, params):
    _verify_seeds(factory(), name, params, [0])


@pytest.mark.parametrize("name", FAMILY)
def test_keras_function_passes_under_the_rounding_adversary(name):
    params = dict(S.SPECS[name].default_grid[0])
    loss = S.build_implementation(S.SPECS[name].implementation("keras", "function"), params)
    result = A.rounding_sweep(loss, name, params, seeds=range(2), draws=4)
    assert not result["failures"], "\n\n".join(result["failures"][:3])
    assert max(result["worst"].values()) < 1.0


@pytest.mark.slow
@pytest.mark.parametrize(("name", "impl", "params"), list(keras_jobs(FAMILY)))
def test_keras_passes_on_the_default_grid_20_seeds(name, impl, params):
    _verify_seeds(S.build_implementation(impl, params), name, params, list(SEEDS))


@pytest.mark.slow
@pytest.mark.parametrize(("factory", "name", "params"), BY_HAND)
def test_correct_formula_passes_20_seeds(factory, name, params):
    _verify_seeds(factory(), name, params, list(SEEDS))


@pytest.mark.slow
@pytest.mark.parametrize(("factory", "name", "params"), BY_HAND)
def test_correct_formula_passes_under_the_rounding_adversary_20_seeds(factory, name, params):
    result = A.rounding_sweep(factory(), name, params, seeds=SEEDS, draws=5)
    assert not result["failures"], "\n\n".join(result["failures"][:3])


@pytest.mark.slow
@pytest.mark.parametrize(("name", "impl", "params"), list(keras_jobs(FAMILY)))
def test_keras_passes_under_the_rounding_adversary_20_seeds(name, impl, params):
    loss = S.build_implementation(impl, params)
    result = A.rounding_sweep(loss, name, params, seeds=SEEDS, draws=5)
    assert not result["failures"], "\n\n".join(result["failures"][:3])


# ----------------------------------------------------------------------- invariants


def _gce(q):
    def gce(y_true, y_pred):
        return K.categorical_generalized_cross_entropy(y_true, y_pred, q=q)

    return gce


def _gce_divided_twice(q):
    def gce(y_true, y_pred):
        return K.categorical_generalized_cross_entropy(y_true, y_pred, q=q) / q

    return gce


INVARIANT_CASES = [
    # (id, invariant, losses, reference, params, holds)
    ("kl-ce-keras", "kl_matches_cross_entropy_minus_entropy",
     (lambda: K.kl_divergence, lambda: K.categorical_crossentropy), "kl_divergence", {},
     True),
    ("kl-ce-sign-flipped", "kl_matches_cross_entropy_minus_entropy",
     (lambda: kl_sign_flipped, lambda: K.categorical_crossentropy), "kl_divergence", {},
     False),
    ("gce-ce-keras-q0.01", "generalized_not_above_cross_entropy",
     (lambda: _gce(0.01), lambda: K.sparse_categorical_crossentropy),
     "categorical_generalized_cross_entropy", {"q": 0.01}, True),
    # (1 - p**q) / q**2 exceeds -log p for every p in (e**(-1 / q**2), 1): here p > 0.02
    ("gce-ce-divided-twice", "generalized_not_above_cross_entropy",
     (lambda: _gce_divided_twice(0.5), lambda: K.sparse_categorical_crossentropy),
     "categorical_generalized_cross_entropy", {"q": 0.5}, False),
]


@pytest.mark.parametrize(("invariant", "losses", "reference", "params", "holds"),
                         [pytest.param(*c[1:], id=c[0]) for c in INVARIANT_CASES])
def test_family_invariants(invariant, losses, reference, params, holds):
    report = check_invariant(invariant, *(f() for f in losses), reference=reference,
                             max_examples=10, seed=0, **params)
    assert report.ok == holds, str(report)
    if not holds:
        assert "minimal counterexample" in str(report)
        assert "reproduce with" in str(report)


def test_records_list_the_family_relations():
    assert [r.invariant for r in S.SPECS["kl_divergence"].relations] == [
        "kl_matches_cross_entropy_minus_entropy"]
    assert [r.invariant for r in
            S.SPECS["categorical_generalized_cross_entropy"].relations] == [
        "generalized_not_above_cross_entropy"]
    # zero labels make KL slightly negative; Poisson is negative for counts above e
    assert "non_negative" not in S.SPECS["kl_divergence"].invariants
    assert "non_negative" not in S.SPECS["poisson"].invariants


# ----------------------------------------------------------------------- upstream


def test_gce_with_documented_batch_by_one_labels_broadcasts_to_a_matrix():
    """Keras documents y_true of shape [batch] or [batch, 1] and a [batch] result; with
    [batch, 1] labels, one_hot gives [batch, 1, C], which broadcasts against y_pred's
    [batch, C] into [batch, batch, C]: the result is a [batch, batch] matrix, and the
    Loss class silently averages its batch**2 entries. The reference follows the
    documentation (squeezes the trailing 1). The strategies draw [batch] labels only, so
    no conformance check meets it; it is not a KnownDeviation (its symptom is the shape
    of the whole batch's result, which a per-element precondition cannot express)."""
    y_pred = np.array([[0.7, 0.3], [0.2, 0.8]])
    documented = R.categorical_generalized_cross_entropy([[0], [1]], y_pred, q=0.5)
    np.testing.assert_allclose(documented, [0.3266799469, 0.2111456180], rtol=1e-9)
    got = np.asarray(K.categorical_generalized_cross_entropy(np.array([[0], [1]]), y_pred,
                                                             q=0.5))
    assert got.shape == (2, 2)  # the symptom; documented: (2,)
    np.testing.assert_allclose(np.diag(got), documented, rtol=1e-9)
    reduced = float(K.CategoricalGeneralizedCrossEntropy(q=0.5)(np.array([[0], [1]]), y_pred))
    assert reduced == pytest.approx(got.mean(), rel=1e-6)
    assert reduced != pytest.approx(documented.mean(), rel=1e-3)


def _f16_gradient(fn, y_true, y_pred):
    x = tf.Variable(np.array(y_pred, np.float16))
    with tf.GradientTape() as tape:
        value = fn(tf.constant(np.array(y_true, np.float16)), x)
    return np.asarray(tape.gradient(value, x), np.float64)


def test_kl_float16_gradient_overflow_reproducer():
    from lossverify import deviations as D

    g = _f16_gradient(K.kl_divergence, [[0.0, 1.0]], [[0.5, 0.5]])
    assert g[0, 0] == -np.inf and g[0, 1] == -2.0  # exact: -2.4e-07 and -2
    ref = R.evaluate("kl_divergence", np.float16([[0.0, 1.0]]), np.float16([[0.5, 0.5]]))
    assert np.isfinite(ref.grad).all() and ref.grad[0, 0] == pytest.approx(-2.384e-7, rel=1e-3)
    x = lossverify.strategies.LossInputs(np.float16([[0.0, 1.0]]), np.float16([[0.5, 0.5]]))
    assert D.KL_F16_GRAD_OVERFLOW.at(x, {}).tolist() == [[True, False]]
    # y / p / p overflows too: exact -1 / 0.00389 = -257
    g = _f16_gradient(K.kl_divergence, [[1.0, 0.0]], [[0.00389, 0.99611]])
    assert g[0, 0] == -np.inf
    x = lossverify.strategies.LossInputs(np.float16([[1.0, 0.0, 1.0]]),
                                         np.float16([[0.00389, 0.99611, 0.01]]))
    assert D.KL_F16_GRAD_OVERFLOW.at(x, {}).tolist() == [[True, True, False]]
    # float32 inputs never match; the class (float32) has no such deviation
    x32 = lossverify.strategies.LossInputs(np.float32([[0.0, 1.0]]), np.float32([[0.5, 0.5]]))
    assert not D.KL_F16_GRAD_OVERFLOW.at(x32, {}).any()
    assert D.KL_F16_GRAD_OVERFLOW.implementations == ("keras.losses.kl_divergence",)


def test_poisson_float16_gradient_overflow_reproducer():
    from lossverify import deviations as D

    g = _f16_gradient(K.poisson, [[0.0, 1e-3, 1.0]], [[0.0, 0.0, 0.5]])
    assert np.isnan(g[0, 0]) and g[0, 1] == -np.inf and np.isfinite(g[0, 2])
    ref = R.evaluate("poisson", np.float16([[0.0, 1e-3, 1.0]]), np.float16([[0.0, 0.0, 0.5]]))
    assert ref.grad[0, 0] == pytest.approx(1 / 3) and np.isfinite(ref.grad[0, 1])
    x = lossverify.strategies.LossInputs(np.float16([[0.0, 1e-3, 1.0]]),
                                         np.float16([[0.0, 0.0, 0.5]]))
    assert D.POISSON_F16_GRAD_OVERFLOW.at(x, {}).tolist() == [[True, True, False]]


@pytest.mark.parametrize(("name", "fn"), [("kl_divergence", K.kl_divergence),
                                          ("poisson", K.poisson)])
def test_float16_functions_report_the_known_deviation_only(name, fn):
    report = lossverify.verify(fn, name, dtype="float16", max_examples=15, seed=0,
                               checks=("value", "gradient"))
    assert report.ok, str(report)
