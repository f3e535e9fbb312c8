"""The tolerance model (lossverify.tolerance) on its own, NumPy only: finite wherever the
reference is, never accepting NaN where the reference is finite, bounded in the saturated
regimes that used to make it grow without bound, and wide enough for the faithful
roundings another CPU makes (the AMD EPYC AVX2 counterexamples, as regression tests)."""

from __future__ import annotations

import numpy as np
import pytest

from lossverify import numerics
from lossverify import reference as R
from lossverify import tolerance as T

F32 = np.float32


def test_imports_without_tensorflow_or_hypothesis():
    import subprocess
    import sys

    code = ("import sys, lossverify.tolerance; "
            "bad = {'tensorflow', 'hypothesis', 'keras'} & set(sys.modules); "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


# The smallest AMD EPYC (AVX2) false alarm: TensorFlow's vectorised softmax rounds the
# saturated probability to 1 - 2**-24 in some lanes (1 - p = 5.96e-8 instead of 7.6e-10).
AMD_Y = np.array([[1, 0]] * 8, F32)
AMD_Z = np.array([[21, 0], [0, 21]] * 4, F32)


def test_amd_saturated_softmax_gradient_is_within_budget():
    b = T.budget("focal_loss", {"gamma": 2.0}, AMD_Y, AMD_Z)
    # measured on that CPU: eager gradient 8.08e-24 at (0, 1) (reference 1.3e-27), and
    # -8.47e-22 at (0, 0) under the rounding adversary
    assert abs(8.08e-24 - b.grad[0, 1]) <= b.grad_allowed[0, 1]
    assert abs(-8.47e-22 - b.grad[0, 0]) <= b.grad_allowed[0, 0]
    # and not a blank cheque: a relative error of 1e-3 of the row's gradient of order
    # one is far beyond it in an ordinary row
    ordinary = T.budget("focal_loss", {"gamma": 2.0}, AMD_Y[:1], np.array([[1.0, 0.0]], F32))
    assert np.all(ordinary.grad_allowed < 1e-3 * np.abs(ordinary.grad))


def test_amd_xla_vs_eager_on_a_saturated_row_is_within_budget():
    y = np.array([[1, 0, 0, 0, 0]], F32)
    z = np.array([[101, 0, 0, 0, 0]], F32)
    b = T.budget("focal_loss", {"gamma": 2.0}, y, z)
    # XLA 0.0, eager -8.47e-22: each within the budget of the reference (about 0)
    assert abs(-8.47e-22 - b.grad[0, 0]) <= b.grad_allowed[0, 0]


def test_pytorch_bce_with_logits_formula_on_soft_labels_is_within_budget():
    """(1 - y) z + log(1 + exp(-z)) (PyTorch's form) cancels terms of size |z|: 25 ULPs
    off at y = 0.03125, z = -8.903818, a correct evaluation."""
    y, z = np.array([[0.03125]], F32), np.array([[-8.903818]], F32)
    b = T.budget("binary_crossentropy", {"from_logits": True}, y, z)
    zz, yy = np.float32(z[0, 0]), np.float32(y[0, 0])
    m = max(-zz, F32(0))
    forms = [  # PyTorch's, and the same with log1p (each float32 rounding faithful)
        (F32(1) - yy) * zz + m + np.log(np.exp(-m, dtype=F32) + np.exp(-zz - m, dtype=F32),
                                        dtype=F32),
        (F32(1) - yy) * zz + np.log1p(np.exp(-zz, dtype=F32), dtype=F32),
    ]
    for form in forms:
        assert abs(float(form) - b.value[0]) <= b.value_allowed[0]


@pytest.mark.parametrize("gamma", [0.0, 0.25, 0.5, 0.75])
@pytest.mark.parametrize("z", [1.0, 20.0, 60.0, 200.0, 500.0, 745.0, 1e4])
def test_binary_focal_budget_is_finite_and_bounded_for_gamma_below_one(gamma, z):
    """It was 0.23 at z = 20, 3e8 at z = 60 and infinite for z in 500..745 (a NaN then
    passed): first-order sensitivity (1 - p_t)**(gamma - 2) grew without bound."""
    b = T.budget("binary_focal_crossentropy", {"gamma": gamma, "from_logits": True},
                 np.array([[1.0]], F32), np.array([[z]], F32))
    assert np.all(np.isfinite(b.grad_allowed)) and np.all(np.isfinite(b.value_allowed))
    # at z >= 20 the gradient's faithful error is of the order of float32's resolution
    # near 1 (sigmoid(z) rounds to 1 or 1 - 2**-24): a budget of that order (24 u: the
    # first-order 4 u (n + 1) |s - y| scale and two roundings of the sigmoid), not more
    if z >= 20:
        assert float(b.grad_allowed.max()) < 24 * 2.0**-24
    # NaN is never within budget where the reference is finite
    assert not numerics.compare(np.full_like(b.grad, np.nan), b.grad, b.grad_allowed).ok


@pytest.mark.parametrize(("reference", "params", "y", "z"), [
    ("focal_loss", {"gamma": 0.5}, [[1.0, 0.0]], [[30.0, 0.0]]),
    ("categorical_focal_crossentropy", {"gamma": 0.5, "from_logits": True},
     [[1.0, 0.0, 0.0]], [[40.0, 0.0, -3.0]]),
    ("binary_focal_crossentropy", {"gamma": 0.5}, [[1.0, 0.0]], [[0.99999988, 1e-30]]),
    ("sparse_focal_loss", {"gamma": 0.5, "class_num": 3}, [0], [[50.0, 0.0, 0.0]]),
])
def test_budget_is_finite_wherever_the_reference_is(reference, params, y, z):
    y = np.asarray(y, np.int32 if reference == "sparse_focal_loss" else F32)
    b = T.budget(reference, params, y, np.asarray(z, F32))
    finite = np.isfinite(b.grad)
    assert np.all(np.isfinite(b.grad_allowed[finite]))
    assert np.all(np.isfinite(b.value_allowed[np.isfinite(b.value)]))


def test_spread_covers_both_faithful_roundings_of_a_saturated_probability():
    """p = softmax([21, 0])[0] = 1 - 7.6e-10 lies between 1 - 2**-24 and 1: an evaluation
    with either has 1 - p of 5.96e-8 or 0, and the focal gradient follows. The perturbed
    reference reaches at least the 1 - 2**-24 neighbour."""
    y, z = AMD_Y[:1], AMD_Z[:1]
    exact, _, _, g_spread = T.spread("focal_loss", {"gamma": 2.0}, y, z, "float32")
    with R.perturbing(2.0**-24, "down"):
        moved = R.evaluate("focal_loss", y, z, gamma=2.0)
    # the true class's probability was moved by at least one unit below 1
    p_moved = np.exp(-moved.value[0] / (1.0 - 0.0))  # value = -(1-p)**2 log p; tiny
    assert p_moved <= 1.0
    assert g_spread[0, 1] >= abs(8.08e-24 - exact.grad[0, 1])


def test_allowed_formula():
    u = numerics.unit_roundoff("float32")
    got = T.allowed(np.array([2.0]), 3, "float32", np.array([1e-6]))
    assert got[0] == pytest.approx(T.K * u * 4 * 2.0 + 1e-6 + numerics.underflow("float32"))
    assert T.allowed(np.array([1.0]), 1, "float32", np.array([np.nan]))[0] == \
        pytest.approx(T.K * u * 2 + numerics.underflow("float32"))


def test_perturbing_is_restored_and_moves_only_inside():
    y, z = AMD_Y[:1], np.array([[2.0, 0.0]], F32)
    before = R.evaluate("focal_loss", y, z, gamma=2.0).grad
    with R.perturbing(1e-3, "down"):
        inside = R.evaluate("focal_loss", y, z, gamma=2.0).grad
    after = R.evaluate("focal_loss", y, z, gamma=2.0).grad
    assert np.array_equal(before, after)
    assert not np.array_equal(before, inside)


def test_reduced_budget_and_narrow_input_dtype():
    y, p = np.array([[1.0, 0.0]], F32), np.array([[0.7, 0.3]], F32)
    per = T.budget("categorical_crossentropy", {}, y, p)
    red = T.budget("categorical_crossentropy", {}, y, p, reduced=True)
    assert red.value.shape == () and red.value_allowed >= per.value_allowed[0] * 0.99
    wide = T.budget("categorical_crossentropy", {}, y, p, input_dtype="float16")
    assert np.all(wide.grad_allowed > per.grad_allowed)


def test_spread_is_memoized_on_its_inputs_and_ambient_state_read_only():
    """The memo serves a repeat (the class and function runs of one setting budget the
    same batches) and nothing else: other values, parameters, dtype or a perturbation
    in force compute afresh; what it returns cannot be written to."""
    y, z = AMD_Y[:1], np.array([[2.0, 0.0]], F32)
    first = T.spread("focal_loss", {"gamma": 2.0}, y, z, "float32")
    assert T.spread("focal_loss", {"gamma": 2.0}, y.copy(), z.copy(), "float32") is first
    fresh = T._spread("focal_loss", {"gamma": 2.0}, y, z, "float32", None)
    for a, b in zip(first[2:], fresh[2:], strict=True):
        assert np.array_equal(a, b)
    assert np.array_equal(first[0].grad, fresh[0].grad)
    others = [T.spread("focal_loss", {"gamma": 3.0}, y, z, "float32"),
              T.spread("focal_loss", {"gamma": 2.0}, y, z + F32(1e-3), "float32"),
              T.spread("focal_loss", {"gamma": 2.0}, y, z, "float64")]
    with R.perturbing(1e-3, "down"):
        others.append(T.spread("focal_loss", {"gamma": 2.0}, y, z, "float32"))
    assert all(o is not first for o in others)
    assert not np.array_equal(others[-1][1].grad, first[1].grad)  # perturbed, not served
    with pytest.raises(ValueError, match="read-only"):
        first[0].grad[0, 0] = 0.0
