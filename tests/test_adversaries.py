"""The verdict, tested from both sides (lossverify.adversary).

* No false alarm: correct losses evaluated by the rounding adversary (every rounding
  intermediate of the real TensorFlow computation, backward ops included, rounded to a
  seeded random neighbour of its exact value) stay within the budget. The always-run
  tests cover representative losses over a few seeds; the ``slow`` sweep (``nox -s
  thorough``) covers every implementation of every spec, 20 seeds, every dtype.
* No hole: a correct loss with one element of its value or gradient changed by more than
  its budget, or replaced by NaN, fails verify(), saturated regions included.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

import lossverify  # noqa: E402
from lossverify import adversary as A  # noqa: E402
from lossverify import notes_losses as N  # noqa: E402
from lossverify import numerics  # noqa: E402
from lossverify import specs as S  # noqa: E402
from lossverify import tolerance as T  # noqa: E402

F32 = np.float32


# ------------------------------------------------------------ the rounding itself


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_round_faithfully_gives_a_neighbour_of_the_exact_value(dtype):
    ftype = numerics.np_dtype(dtype)
    rng = np.random.default_rng(0)
    exact = rng.standard_normal(4000) * np.exp(rng.uniform(-8, 8, 4000))
    out = A._round_faithfully(exact, ftype, np.random.default_rng(1)).astype(np.float64)
    nearest = exact.astype(ftype).astype(np.float64)
    below = np.where(nearest > exact, A._next(exact.astype(ftype), ftype, -1).astype(np.float64),
                     nearest)
    above = np.where(nearest < exact, A._next(exact.astype(ftype), ftype, +1).astype(np.float64),
                     nearest)
    assert np.all((out == below) | (out == above))
    assert np.any(out != nearest)  # it does round the other way sometimes
    representable = nearest.copy()
    again = A._round_faithfully(representable, ftype, np.random.default_rng(2))
    assert np.array_equal(again.astype(np.float64), representable)


def test_adversary_reproduces_the_amd_lane_rounding():
    """On an AVX2 AMD EPYC, TensorFlow's notes' focal gradient at (0, 1) of this batch is
    8.08e-24 (reference 1.3e-27): a faithful rounding of the saturated softmax. Some seed
    of the adversary rounds the same way, and the budget accepts it."""
    y = np.array([[1, 0]] * 8, F32)
    z = np.array([[21, 0], [0, 21]] * 4, F32)
    budget = T.budget("focal_loss", {"gamma": 2.0}, y, z)
    seen = []
    for seed in range(6):
        value, grad = A.RoundingAdversary(N.focal_loss(2.0), seed).value_and_grad(y, z)
        assert numerics.compare(value, budget.value, budget.value_allowed).ok
        assert numerics.compare(grad, budget.grad, budget.grad_allowed).ok
        seen.append(abs(float(grad[0, 1])))
    assert max(seen) > 1e-24  # the other neighbour of 1 was taken


def test_adversary_matches_tensorflow_to_a_few_ulps():
    y = np.array([[1.0, 0.0, 0.0], [0.0, 0.3, 0.7]], F32)
    z = np.array([[2.0, -1.0, 0.5], [0.1, 3.0, -2.0]], F32)
    loss = keras.losses.CategoricalCrossentropy(from_logits=True)
    value, grad = A.RoundingAdversary(loss, 3).value_and_grad(y, z)
    zt = tf.Variable(z)
    with tf.GradientTape() as tape:
        ref = loss(y, zt)
    np.testing.assert_allclose(value, ref.numpy(), rtol=1e-6)
    np.testing.assert_allclose(grad, tape.gradient(ref, zt).numpy(), rtol=1e-5, atol=1e-7)


def test_adversary_refuses_a_loss_it_cannot_interpret():
    @tf.function
    def inner(y, p):
        return tf.reduce_sum(tf.square(p - y), -1)

    def loss(y, p):
        return inner(y, p)

    with pytest.raises(NotImplementedError, match="loss: the rounding adversary"):
        A.RoundingAdversary(loss).value_and_grad(np.zeros((1, 2), F32), np.ones((1, 2), F32))


# ------------------------------------------------------------ no false alarm


def _by_hand_losses():
    eps = keras.config.epsilon()

    def focal_exp_log_softmax(y, z):  # the notes' focal with p = exp(log_softmax(z))
        p = tf.clip_by_value(tf.exp(tf.nn.log_softmax(z)), eps, 1.0)
        return -tf.reduce_sum(y * tf.square(1.0 - p) * tf.math.log(p), -1)

    def focal_reciprocal_multiply(y, z):  # softmax as e * (1 / sum e)
        e = tf.exp(z - tf.reduce_max(z, -1, keepdims=True))
        p = tf.clip_by_value(e * tf.math.reciprocal(tf.reduce_sum(e, -1, keepdims=True)),
                             eps, 1.0)
        return -tf.reduce_sum(y * tf.square(1.0 - p) * tf.math.log(p), -1)

    def cce_logsumexp(y, z):
        return tf.reduce_sum(y * (tf.reduce_logsumexp(z, -1, keepdims=True) - z), -1)

    def bce_torch_formula(y, z):
        """PyTorch's binary_cross_entropy_with_logits: its forward formula, and its
        backward, which PyTorch writes analytically as sigmoid(z) - y (autodiff of the
        forward formula would cancel terms of size 1 for z < 0)."""
        @tf.custom_gradient
        def per_sample(z_):
            m = tf.maximum(-z_, 0.0)
            per = (1 - y) * z_ + m + tf.math.log(tf.exp(-m) + tf.exp(-z_ - m))
            n = tf.cast(tf.shape(z_)[-1], z_.dtype)
            grad = (tf.sigmoid(z_) - y) / n
            return tf.reduce_mean(per, -1), lambda up: grad * up[..., None]
        return per_sample(z)

    return [
        (focal_exp_log_softmax, "focal_loss", {"gamma": 2.0}),
        (focal_reciprocal_multiply, "focal_loss", {"gamma": 2.0}),
        (cce_logsumexp, "categorical_crossentropy", {"from_logits": True}),
        (bce_torch_formula, "binary_crossentropy", {"from_logits": True}),
    ]


REPRESENTATIVE = [
    ("focal_loss", "notes.focal_loss", {"gamma": 2.0}),
    ("focal_loss", "notes.FocalLoss", {"gamma": 0.5}),
    ("binary_focal_crossentropy", "keras.losses.binary_focal_crossentropy",
     {"from_logits": True, "gamma": 1.0}),
    ("categorical_focal_crossentropy", "keras.losses.CategoricalFocalCrossentropy",
     {"from_logits": True, "gamma": 0.5}),
    ("sparse_categorical_crossentropy", "keras.losses.sparse_categorical_crossentropy",
     {"from_logits": True}),
]


def _impl(reference, label):
    return next(i for i in S.SPECS[reference].implementations if i.label == label)


@pytest.mark.parametrize(("reference", "label", "params"), REPRESENTATIVE,
                         ids=[f"{r[1]}-{r[2]}" for r in REPRESENTATIVE])
def test_correct_builtin_losses_pass_under_the_rounding_adversary(reference, label, params):
    loss = S.build_implementation(_impl(reference, label), params)
    result = A.rounding_sweep(loss, reference, params, seeds=range(3), draws=8)
    assert not result["failures"], "\n\n".join(result["failures"][:3])
    assert max(result["worst"].values()) < 1.0


@pytest.mark.parametrize("case", range(4), ids=["exp-log-softmax", "reciprocal-multiply",
                                                "logsumexp", "torch-bce-logits"])
def test_correct_formulas_pass_under_the_rounding_adversary(case):
    loss, reference, params = _by_hand_losses()[case]
    result = A.rounding_sweep(loss, reference, params, seeds=range(3), draws=8)
    assert not result["failures"], "\n\n".join(result["failures"][:3])


def test_rounded_loss_passes_verify_in_half_precision():
    report = lossverify.verify(A.rounded(keras.losses.categorical_crossentropy, 1),
                               "categorical_crossentropy", dtype="float16", max_examples=10,
                               seed=0, checks=("value", "gradient"))
    assert report.ok, str(report)


def _sweep_jobs():
    for name, spec in S.SPECS.items():
        for params in spec.default_grid:
            for impl in spec.implementations:
                yield pytest.param(name, impl, dict(params), id=f"{impl.label}-{params}")


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["float32", "float64", "float16", "bfloat16"])
@pytest.mark.parametrize(("reference", "impl", "params"), list(_sweep_jobs()))
def test_every_builtin_passes_under_the_rounding_adversary_20_seeds(reference, impl, params,
                                                                   dtype):
    loss = S.build_implementation(impl, params)
    result = A.rounding_sweep(loss, reference, params, dtype=dtype, seeds=range(20), draws=5)
    assert not result["failures"], "\n\n".join(result["failures"][:3])


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["float32", "float64", "float16", "bfloat16"])
@pytest.mark.parametrize("case", [0, 1, 2, 3])
def test_correct_formulas_pass_under_the_rounding_adversary_20_seeds(case, dtype):
    loss, reference, params = _by_hand_losses()[case]
    result = A.rounding_sweep(loss, reference, params, dtype=dtype, seeds=range(20), draws=5)
    assert not result["failures"], "\n\n".join(result["failures"][:3])


# ------------------------------------------------------------ no hole


def _relatively_widest(reference, params, part):
    """A ``where`` for :class:`Perturbed`: per batch, the element (gradient element or
    sample value) whose budget is largest relative to its size, the hardest place to
    detect a change."""
    def where(y, p, result):
        b = T.budget(reference, params, y, p)
        ref = b.grad if part == "gradient" else b.value
        allowed = b.grad_allowed if part == "gradient" else b.value_allowed
        with np.errstate(divide="ignore", invalid="ignore"):
            rel = np.where(np.abs(ref) > 0, allowed / np.abs(ref), 0.0)
        mask = np.zeros(np.shape(result), bool)
        mask[np.unravel_index(int(np.argmax(rel)), mask.shape)] = True
        return mask
    return where


#: Correct losses without a known NaN (a NaN of their own would fail them anyway),
#: saturated regimes included (the strategies draw logit gaps of 20 and 100).
PERTURBED = [
    ("focal_loss", {"gamma": 2.0}, lambda: N.focal_loss(2.0)),
    ("binary_focal_crossentropy", {"gamma": 2.0, "from_logits": True},
     lambda: (lambda y, z: keras.losses.binary_focal_crossentropy(y, z, gamma=2.0,
                                                                  from_logits=True))),
    ("categorical_focal_crossentropy", {"from_logits": True},
     lambda: (lambda y, z: keras.losses.categorical_focal_crossentropy(y, z,
                                                                       from_logits=True))),
    ("categorical_crossentropy", {}, lambda: keras.losses.categorical_crossentropy),
    ("binary_crossentropy", {"from_logits": True},
     lambda: (lambda y, z: keras.losses.binary_crossentropy(y, z, from_logits=True))),
    ("mean_squared_error", {}, lambda: keras.losses.mean_squared_error),
]


@pytest.mark.parametrize("part", ["value", "gradient"])
@pytest.mark.parametrize(("reference", "params", "factory"), PERTURBED,
                         ids=[f"{c[0]}-{c[1]}" for c in PERTURBED])
def test_a_change_beyond_the_budget_is_rejected(reference, params, factory, part):
    """A relative change of one element of 3 times its budget, at the element where the
    budget is relatively widest: verify() fails. 3 = the rounding adversary's worst
    error / allowed (< 0.5, README) plus the change: a margin for the loss's own error."""
    where = _relatively_widest(reference, params, part)
    nan = A.Perturbed(factory(), part, where, None)
    report = lossverify.verify(nan, reference, max_examples=10, seed=0,
                               checks=("value", "gradient"), **params)
    assert not report.ok and report.checks[part].failures > 0, str(report)
    beyond = A.Perturbed(factory(), part, where, 0.0, beyond_budget=(reference, params, 3.0))
    report = lossverify.verify(beyond, reference, max_examples=10, seed=0,
                               checks=("value", "gradient"), **params)
    assert not report.ok and report.checks[part].failures > 0, str(report)
    # and the same loss, unperturbed but wrapped the same way, passes: the change is what
    # is detected, not the wrapper
    same = A.Perturbed(factory(), part, where, 0.0)
    report = lossverify.verify(same, reference, max_examples=10, seed=0,
                               checks=("value", "gradient"), **params)
    assert report.ok, str(report)


def test_wrong_gradient_in_the_saturated_tail_is_rejected():
    """The hole the issue names: a correct binary focal loss (no NaN: 1 - p_t from
    logits directly) whose gradient is off by 0.1 wherever y = 1 and z > 19 was reported
    ok, 5e29 times over budget."""
    def good(y, z, gamma=0.5):
        a = y * tf.sigmoid(-z) + (1 - y) * tf.sigmoid(z)
        bce = tf.nn.sigmoid_cross_entropy_with_logits(labels=y, logits=z)
        return tf.reduce_mean(tf.pow(a, gamma) * bce, axis=-1)

    def wrong(y, z):
        @tf.custom_gradient
        def f(z_):
            with tf.GradientTape() as tape:
                tape.watch(z_)
                v = good(y, z_)
            g = tape.gradient(v, z_) + tf.where((y == 1) & (z_ > 19), 0.1, 0.0)
            return v, lambda up: g * up[..., None]
        return f(z)

    report = lossverify.verify(wrong, "binary_focal_crossentropy", gamma=0.5,
                               from_logits=True, max_examples=60, seed=0,
                               checks=("gradient",))
    assert not report.ok, str(report)
    assert "0.1000000" in report.checks["gradient"].message, str(report)
