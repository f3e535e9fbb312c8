"""The reference's values: the study notes' printed numbers, identities between losses,
Keras's reduction semantics and the float32 clip bound.

Identities are property tests in float64 over inputs away from the clip bounds, where
both sides are the same mathematics computed in different orders: they agree to a few
float64 rounding errors of the terms (``value_scale``), far tighter than any bug.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import lossverify.reference as R
import lossverify.strategies
from lossverify.catalogue import RECORDS, crossentropy, notes, overlap, regression

SETTINGS = settings(max_examples=50, deadline=None, derandomize=True)
#: families whose inputs ``_case`` builds by hand; the others' come from their record's
#: input kind
HAND_BUILT = {r.name for family in (crossentropy, notes, regression, overlap)
              for r in family.RECORDS}
P_LO, P_HI = 1e-3, 1.0 - 1e-3  # probabilities far (>= 1e4 x) from the clip bounds
LOGIT = 6.0  # softmax stays >= exp(-12) / 5 >> 1e-7: no clip after a softmax

# The study notes' example batch.
NOTES_Y_TRUE = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
NOTES_Y_PRED = np.array([[0.9, 0.05, 0.05], [0.05, 0.89, 0.06], [0.05, 0.01, 0.94]])


def _close(actual, expected, scale, what):
    """Equal to 64 float64 roundings of the terms (both sides are ~10-term sums)."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    tol = 64 * 2.0**-53 * (np.asarray(scale) + np.abs(expected)) + 1e-300
    bad = ~(np.abs(actual - expected) <= tol)
    assert not bad.any(), (f"{what}: {actual[bad]} != {expected[bad]} "
                           f"(tolerance {np.broadcast_to(tol, bad.shape)[bad]})")


# ----------------------------------------------------------------------------- inputs


def _shape(data, min_classes=2):
    batch = data.draw(st.integers(1, 4), label="batch")
    return batch, data.draw(st.integers(min_classes, 5), label="classes")


def _array(data, shape, lo, hi, label):
    elements = st.floats(lo, hi, allow_nan=False, allow_infinity=False)
    return data.draw(hnp.arrays(np.float64, shape, elements=elements), label=label)


def _labels(data, batch, n):
    return np.array(data.draw(st.lists(st.integers(0, n - 1), min_size=batch, max_size=batch),
                              label="sparse labels"), dtype=np.int64)


def _soft(data, batch, n):
    y = _array(data, (batch, n), 0.0, 1.0, "soft labels") + 1e-3
    return y / y.sum(-1, keepdims=True)


def _probs(data, shape):
    return _array(data, shape, P_LO, P_HI, "probabilities")


def _logits(data, shape):
    return _array(data, shape, -LOGIT, LOGIT, "logits")


# ----------------------------------------------------------------------------- the notes


def test_notes_categorical_crossentropy_example():
    values = R.categorical_crossentropy(NOTES_Y_TRUE, NOTES_Y_PRED)
    np.testing.assert_array_equal(values.round(5), [0.10536, 0.11653, 0.06188])
    assert abs(float(R.reduce(values)) - 0.0945899) < 1e-7
    assert abs(float(R.reduce(values, reduction="mean")) - 0.0945899) < 1e-7


def test_notes_mean_squared_error_example():
    assert float(R.mean_squared_error([0.0, 0.0, 1.0, 1.0], [1.0, 1.0, 1.0, 0.0])) == 0.75


def test_notes_hand_computed_focal_value_is_focal_without_softmax():
    a, b = NOTES_Y_TRUE, NOTES_Y_PRED
    notes = 0.000895471928886797  # np.average(np.sum(-np.power(1-b,2)*a*np.log(b),axis=1))
    assert np.average(np.sum(-np.power(1 - b, 2) * a * np.log(b), axis=1)) == pytest.approx(
        notes, rel=1e-14)
    # The same formula on probabilities: Keras's categorical focal CE with alpha = 1.
    keras_style = R.categorical_focal_crossentropy(a, b, alpha=1.0, gamma=2.0)
    assert float(np.mean(keras_style)) == pytest.approx(notes, rel=1e-12)
    # The notes' focal_loss applies softmax to b first: a different (much larger) number.
    notes_loss = float(np.mean(R.focal_loss(a, b)))
    assert notes_loss == pytest.approx(0.12786333090740046, rel=1e-12)
    assert abs(notes_loss - notes) > 0.1


# ----------------------------------------------------------------------------- identities


@pytest.mark.parametrize("from_logits", [False, True], ids=["probs", "logits"])
@SETTINGS
@given(data=st.data())
def test_focal_with_gamma_0_alpha_1_is_categorical_crossentropy(data, from_logits):
    batch, n = _shape(data)
    y = _soft(data, batch, n) if data.draw(st.booleans(), label="soft") else \
        np.eye(n)[_labels(data, batch, n)]
    p = _logits(data, (batch, n)) if from_logits else _probs(data, (batch, n))
    ls = data.draw(st.sampled_from([0.0, 0.1, 0.3]), label="label_smoothing")
    axis = data.draw(st.sampled_from([-1, 0]), label="axis")
    y, p = np.moveaxis(y, -1, axis), np.moveaxis(p, -1, axis)
    kw = {"from_logits": from_logits, "label_smoothing": ls, "axis": axis}
    focal = R.evaluate("categorical_focal_crossentropy", y, p, alpha=1.0, gamma=0.0, **kw)
    cce = R.evaluate("categorical_crossentropy", y, p, **kw)
    _close(focal.value, cce.value, cce.value_scale, "value")
    _close(focal.grad, cce.grad, cce.grad_scale, "gradient")


@pytest.mark.parametrize("from_logits", [False, True], ids=["probs", "logits"])
@SETTINGS
@given(data=st.data())
def test_sparse_is_categorical_on_one_hot(data, from_logits):
    # On probabilities sparse CE clips, logs and renormalises; categorical renormalises
    # then clips: the same number wherever the clip is inactive.
    batch, n = _shape(data)
    labels = _labels(data, batch, n)
    p = _logits(data, (batch, n)) if from_logits else _probs(data, (batch, n))
    sparse = R.evaluate("sparse_categorical_crossentropy", labels, p, from_logits=from_logits)
    cce = R.evaluate("categorical_crossentropy", np.eye(n)[labels], p, from_logits=from_logits)
    _close(sparse.value, cce.value, cce.value_scale, "value")
    _close(sparse.grad, cce.grad, cce.grad_scale, "gradient")


@pytest.mark.parametrize("from_logits", [False, True], ids=["probs", "logits"])
@SETTINGS
@given(data=st.data())
def test_binary_focal_with_gamma_0_unbalanced_is_binary_crossentropy(data, from_logits):
    batch, n = _shape(data, min_classes=1)
    y = _array(data, (batch, n), 0.0, 1.0, "labels")
    if data.draw(st.booleans(), label="hard labels"):
        y = y.round()
    p = _logits(data, (batch, n)) if from_logits else _probs(data, (batch, n))
    ls = data.draw(st.sampled_from([0.0, 0.1, 0.3]), label="label_smoothing")
    kw = {"from_logits": from_logits, "label_smoothing": ls}
    focal = R.evaluate("binary_focal_crossentropy", y, p, gamma=0.0,
                       apply_class_balancing=False, alpha=0.25, **kw)
    bce = R.evaluate("binary_crossentropy", y, p, **kw)
    _close(focal.value, bce.value, bce.value_scale, "value")
    _close(focal.grad, bce.grad, bce.grad_scale, "gradient")


@SETTINGS
@given(data=st.data())
def test_sparse_focal_loss_is_focal_loss_on_one_hot(data):
    batch, n = _shape(data)
    labels = _labels(data, batch, n)
    z = _logits(data, (batch, n))
    gamma = data.draw(st.sampled_from([0.0, 0.5, 1.0, 2.0, 3.5]), label="gamma")
    sparse = R.evaluate("sparse_focal_loss", labels, z, gamma=gamma, class_num=n)
    dense = R.evaluate("focal_loss", np.eye(n)[labels], z, gamma=gamma)
    np.testing.assert_array_equal(sparse.value, dense.value)
    np.testing.assert_array_equal(sparse.grad, dense.grad)


@SETTINGS
@given(data=st.data())
def test_categorical_from_logits_is_categorical_on_softmax(data):
    batch, n = _shape(data)
    y = _soft(data, batch, n)
    z = _logits(data, (batch, n))
    e = np.exp(z - z.max(-1, keepdims=True))
    p = e / e.sum(-1, keepdims=True)
    logits = R.evaluate("categorical_crossentropy", y, z, from_logits=True)
    probs = R.evaluate("categorical_crossentropy", y, p)
    _close(probs.value, logits.value, logits.value_scale, "value")


@pytest.mark.parametrize("name", ["categorical_crossentropy", "categorical_focal_crossentropy",
                                  "binary_crossentropy", "binary_focal_crossentropy"])
@SETTINGS
@given(data=st.data())
def test_label_smoothing_is_the_documented_formula(data, name):
    # y' = y (1 - ls) + ls / C, with C the size of the class axis (2 for binary losses,
    # which smooth towards 1/2), whatever axis the classes are on.
    batch, n = _shape(data)
    y = np.eye(n)[_labels(data, batch, n)]
    p = _probs(data, (batch, n))
    ls = data.draw(st.sampled_from([0.1, 0.3, 1.0]), label="label_smoothing")
    axis = data.draw(st.sampled_from([-1, 0]), label="axis")
    classes = 2 if name.startswith("binary") else n
    smoothed = y * (1 - ls) + ls / classes
    y, p, smoothed = (np.moveaxis(a, -1, axis) for a in (y, p, smoothed))
    with_ls = R.evaluate(name, y, p, label_smoothing=ls, axis=axis)
    by_hand = R.evaluate(name, smoothed, p, label_smoothing=0.0, axis=axis)
    _close(with_ls.value, by_hand.value, by_hand.value_scale, "value")
    _close(with_ls.grad, by_hand.grad, by_hand.grad_scale, "gradient")


def _case(data, name, batch, n):
    if name in ("dice", "tversky"):  # per row (axis=None sums over the batch too)
        return _array(data, (batch, n), 0.0, 1.0, "labels").round(), {"axis": -1}
    if name == "circle":
        return _labels(data, batch, 3), {}
    if name in ("sparse_categorical_crossentropy", "sparse_focal_loss"):
        params = {"class_num": n} if name == "sparse_focal_loss" else {}
        return _labels(data, batch, n), params
    if name.startswith("binary") or name == "mean_squared_error":
        return _array(data, (batch, n), 0.0, 1.0, "labels"), {}
    return _soft(data, batch, n), {}


@pytest.mark.parametrize("name", sorted(R.EVALUATORS))
@settings(SETTINGS, max_examples=20)
@given(data=st.data())
def test_permuting_the_batch_permutes_the_losses(data, name):
    if name in HAND_BUILT:
        batch, n = _shape(data)
        y, params = _case(data, name, batch, n)
        p = _probs(data, (batch, n))
    else:  # drawn from the record's input kind, with a setting from its grids
        record = RECORDS[name]  # (axis 0 would reduce over the batch: not a batch axis)
        grid = [g for g in (*record.default_grid, *record.thorough_grid())
                if g.get("axis", -1) == -1]
        params = dict(data.draw(st.sampled_from(grid), label="setting"))
        x = data.draw(lossverify.strategies.loss_inputs(name, **params), label="inputs")
        y, p, batch = np.asarray(x.y_true), np.asarray(x.y_pred), len(x.y_pred)
    perm = data.draw(st.permutations(range(batch)), label="permutation")
    ev = R.evaluate(name, y, p, **params)
    ev_perm = R.evaluate(name, y[perm], p[perm], **params)
    if name == "circle":  # pairwise over the batch: equivariant, up to summation order
        np.testing.assert_allclose(ev_perm.value, ev.value[perm], rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(ev_perm.grad, ev.grad[perm], rtol=1e-10,
                                   atol=1e-10 * max(np.abs(ev.grad).max(initial=0), 1.0))
        return
    np.testing.assert_array_equal(ev_perm.value, ev.value[perm])
    np.testing.assert_array_equal(ev_perm.grad, ev.grad[perm])


# ----------------------------------------------------------------------------- reduction


@SETTINGS
@given(data=st.data())
def test_reductions(data):
    n = data.draw(st.integers(1, 6), label="batch")
    v = _array(data, (n,), 0.0, 10.0, "losses")
    w = _array(data, (n,), 0.0, 2.0, "sample weights")
    total = float(np.sum(v * w))
    # sum_over_batch_size (Keras's default) divides by the number of elements, not sum(w).
    assert float(R.reduce(v, w)) == pytest.approx(total / n, rel=1e-12, abs=1e-300)
    assert float(R.reduce(v, w, "mean")) == pytest.approx(total / n, rel=1e-12, abs=1e-300)
    assert float(R.reduce(v, w, "sum")) == pytest.approx(total, rel=1e-12, abs=1e-300)
    expected = total / w.sum() if w.sum() else 0.0  # "no NaN" division
    assert float(R.reduce(v, w, "mean_with_sample_weight")) == pytest.approx(
        expected, rel=1e-12, abs=1e-300)
    np.testing.assert_allclose(R.reduce(v, w, "none"), v * w, rtol=1e-15)
    np.testing.assert_allclose(R.reduce(v, w, None), v * w, rtol=1e-15)
    # Without weights: plain mean and sum.
    assert float(R.reduce(v)) == pytest.approx(v.mean(), rel=1e-12, abs=1e-300)
    assert float(R.reduce(v, reduction="mean_with_sample_weight")) == pytest.approx(
        v.mean(), rel=1e-12, abs=1e-300)


def test_sum_over_batch_size_is_not_the_weighted_mean():
    assert float(R.reduce([1.0, 2.0, 3.0], [1.0, 0.0, 1.0])) == pytest.approx(4.0 / 3.0)
    assert float(R.reduce([1.0, 2.0, 3.0], [1.0, 0.0, 1.0],
                          "mean_with_sample_weight")) == pytest.approx(2.0)


@SETTINGS
@given(data=st.data())
def test_ignore_class_mask_averages_over_the_valid_samples(data):
    n, c = _shape(data)
    labels = _labels(data, n, c)
    z = _logits(data, (n, c))
    ignore = int(data.draw(st.sampled_from([0, -1]), label="ignore_class"))
    if ignore == -1:
        drop = _array(data, (n,), 0.0, 1.0, "dropped") > 0.5
        labels = np.where(drop, -1, labels)
    values = R.sparse_categorical_crossentropy(labels, z, from_logits=True,
                                               ignore_class=ignore)
    valid = labels != ignore
    assert np.all(values[~valid] == 0.0)
    kept = values[valid].mean() if valid.any() else 0.0
    mask = valid
    assert float(R.reduce(values, mask=mask)) == pytest.approx(kept, rel=1e-12, abs=1e-300)
    assert float(R.reduce(values, reduction="sum", mask=mask)) == pytest.approx(
        values[valid].sum(), rel=1e-12, abs=1e-300)
    np.testing.assert_array_equal(R.reduce(values, reduction="none", mask=mask),
                                  np.where(valid, values, 0.0))


# ----------------------------------------------------------------------------- clip bound


def test_float32_clip_bound_of_binary_crossentropy():
    # Keras clips to [eps, 1 - eps] in y_pred's dtype: float32 1 - 1e-7 is 0.99999988,
    # so -log(1 - 0.99999988) = 15.942385; float64 keeps 1 - 1e-7 and gives -log(1e-7).
    f32 = float(R.binary_crossentropy([[0.0]], np.array([[1.0]], dtype=np.float32))[0])
    f64 = float(R.binary_crossentropy([[0.0]], np.array([[1.0]], dtype=np.float64))[0])
    assert abs(f32 - 15.942385) < 1e-5
    assert f64 == pytest.approx(-np.log(1e-7), rel=1e-6)
    assert abs(f64 - 16.118) < 1e-3
