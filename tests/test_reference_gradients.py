"""The reference's analytic gradients against float64 central differences.

Every reference in ``EVALUATORS``, every parameter value it accepts, on Hypothesis-drawn
inputs kept away from the clip kinks (probabilities in [1e-3, 1 - 1e-3], logits in
[-8, 8], or [-6, 6] where a softmax is clipped afterwards so it stays above 1e-7). Then
the documented conventions *at* the kinks, where finite differences say nothing useful:
``clip_by_value`` passes the gradient at its inclusive bounds and blocks it outside, and
the derivative of ``(1 - p_t) ** gamma`` at ``p_t == 1``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import lossverify.reference as R
from lossverify.catalogue import (
    RECORDS,
    crossentropy,
    ctc,
    margin,
    notes,
    overlap,
    probabilistic,
    regression,
)
from lossverify.reference import EVALUATORS, evaluate

FAMILIES = (crossentropy, notes, regression, margin, probabilistic, overlap, ctc)
#: families whose inputs the builders in this module draw by hand; the others' come from
#: their record's input kind (``_drawn_case``)
HAND_BUILT = {r.name for family in (crossentropy, notes, regression, overlap)
              for r in family.RECORDS}

SETTINGS = settings(max_examples=50, deadline=None, derandomize=True)

P_LO, P_HI = 1e-3, 1.0 - 1e-3  # probabilities: >= 1e4 times away from eps and 1 - eps
LOGIT = 8.0  # exact-logit losses (no clip): sigmoid/softmax never saturate in float64
SOFTMAX_LOGIT = 6.0  # softmax then clip: min p >= exp(-12) / 5 ~ 1.2e-6 >> 1e-7
GAMMAS = (0.0, 0.5, 1.0, 2.0, 3.5)
SMOOTHINGS = (0.0, 0.1, 0.3)
# (rank, class axis): the class axis is drawn last and then moved to `axis`.
LAYOUTS = ((2, -1), (1, -1), (2, 0), (3, 1))

H_REL = 1e-6
U64 = 2.0**-53


# ----------------------------------------------------------------------------- inputs


def _floats(lo, hi):
    return st.floats(lo, hi, allow_nan=False, allow_infinity=False)


def _array(data, shape, lo, hi, label):
    return data.draw(hnp.arrays(np.float64, shape, elements=_floats(lo, hi)), label=label)


def _shape(data, rank, min_classes=2):
    """(batch shape, number of classes) for a y_pred of ``rank`` with the class axis last."""
    batch = data.draw(st.lists(st.integers(1, 3), min_size=rank - 1, max_size=rank - 1),
                      label="batch shape")
    n_classes = data.draw(st.integers(min_classes, 5), label="classes")
    return tuple(batch), n_classes


def _sparse(data, batch, n_classes):
    flat = data.draw(st.lists(st.integers(0, n_classes - 1), min_size=int(np.prod(batch)),
                              max_size=int(np.prod(batch))), label="sparse labels")
    return np.array(flat, dtype=np.int64).reshape(batch)


def _one_hot(labels, n_classes):
    return np.eye(n_classes)[labels]


def _binary_labels(data, shape):
    """Hard 0/1 labels or soft labels in [0, 1], elementwise."""
    if data.draw(st.booleans(), label="soft binary labels"):
        return _array(data, shape, 0.0, 1.0, "y_true (soft)")
    return _array(data, shape, 0.0, 1.0, "y_true (hard)").round()


def _categorical_labels(data, batch, n_classes):
    """One-hot, soft on the simplex, or soft unnormalised (Keras does not require sum 1)."""
    kind = data.draw(st.sampled_from(["one-hot", "simplex", "unnormalised"]),
                     label="categorical label kind")
    if kind == "one-hot":
        return _one_hot(_sparse(data, batch, n_classes), n_classes)
    y = _array(data, batch + (n_classes,), 0.0, 1.0, "y_true (soft)")
    if kind == "simplex":
        y = y + 1e-3
        y = y / y.sum(-1, keepdims=True)
    return y


def _y_pred(data, shape, from_logits, logit=LOGIT):
    if from_logits:
        return _array(data, shape, -logit, logit, "logits")
    return _array(data, shape, P_LO, P_HI, "probabilities")


# ----------------------------------------------------------------------------- the check


def _assert_within(name, params, grad, fd, tol, y_true, y_pred):
    """The analytic gradient within ``tol`` of the central difference ``fd``; else the
    element furthest beyond its tolerance, with the inputs."""
    err = np.abs(grad - fd)
    bad = ~(err <= tol)
    if bad.any():
        i = np.unravel_index(np.argmax(np.where(bad, err / tol, -1)), err.shape)
        raise AssertionError(
            f"{name}({params}): analytic gradient {grad[i]!r} != central difference "
            f"{fd[i]!r} at y_pred index {i} (error {err[i]:.3g} > tolerance {tol[i]:.3g})\n"
            f"y_true={np.asarray(y_true)!r}\ny_pred={y_pred!r}")


def _assert_gradient_matches(central_difference, name, y_true, y_pred, class_axis=-1,
                             **params):
    """The analytic gradient agrees with central differences of the per-sample values.

    Tolerance. With a step ``h = 1e-6 max(|x|, 1)`` the central difference errs by
    * truncation ``h**2 |f'''| / 6``: in our domain every term is a log, power or
      softmax of numbers >= ~1e-4 (renormalised probabilities >= 1e-3 / 5), so relative
      to the size of the gradient's pieces ``|f'''| h**2 / |f'| <~ (h / p)**2 ~ 1e-4``
      at worst and ~1e-8 typically;
    * rounding ``~ u64 |f| / h``: each evaluation of ``f`` errs by a few ``u64`` times
      its ``value_scale`` (the sum of the sizes of the terms), divided by the step.
    So we allow ``2e-4 * (grad_scale + |grad|) + 1e3 * u64 * value_scale / h + 1e-10``
    (the last term for gradients that are exactly or nearly 0, as MSE's at y_pred == y_true;
    every non-trivial gradient here is >= ~1e-4 in size). A wrong
    gradient (a dropped term, a wrong sign, a missing chain factor) errs by O(1) of the
    gradient; the budget is far below that.
    """
    ev = evaluate(name, y_true, y_pred, **params)
    fd = central_difference(lambda x: evaluate(name, y_true, x, **params).value, y_pred,
                            axis=class_axis, h_rel=H_REL)
    h = H_REL * np.maximum(np.abs(y_pred), 1.0)
    value_scale = np.expand_dims(ev.value_scale, class_axis) if ev.value.ndim else ev.value_scale
    tol = 2e-4 * (ev.grad_scale + np.abs(ev.grad)) + 1e3 * U64 * value_scale / h + 1e-10
    _assert_within(name, params, ev.grad, fd, tol, y_true, y_pred)


# ----------------------------------------------------------------------------- per loss


@SETTINGS
@given(data=st.data())
def test_mean_squared_error(central_difference, data):
    rank = data.draw(st.integers(1, 3), label="rank")
    batch, n = _shape(data, rank, min_classes=1)
    y_true = _array(data, batch + (n,), -3.0, 3.0, "y_true")
    y_pred = _array(data, batch + (n,), -3.0, 3.0, "y_pred")
    _assert_gradient_matches(central_difference, "mean_squared_error", y_true, y_pred)


# The regression family (lossverify.reference.regression): errors kept >= 1e-2 from each
# kink (MAE's and MAPE's e = 0, Huber's |e| = delta, MSLE's y_pred = eps).

REGRESSION = ("mean_absolute_error", "mean_absolute_percentage_error",
              "mean_squared_logarithmic_error", "huber", "log_cosh")
HUBER_DELTAS = (0.1, 1.0, 2.5)
#: exact ties, MSLE's eps and -1, a zero target, large errors (cosh overflows float64
#: beyond 710)
_REGRESSION_SPECIAL = (0.0, 1e-7, -1.0, 1.0, 1e-9, -1e-9, 800.0, -800.0)


def _regression_inputs(data, name, delta=1.0):
    rank = data.draw(st.integers(1, 3), label="rank")
    batch, n = _shape(data, rank, min_classes=1)
    shape = batch + (n,)
    y_true = _array(data, shape, -3.0, 3.0, "y_true")
    size = _array(data, shape, 1e-2, 3.0, "|error|")
    sign = np.where(_array(data, shape, -1.0, 1.0, "sign") < 0, -1.0, 1.0)
    if name == "huber":  # away from |e| == delta
        size = np.where(np.abs(size - delta) < 1e-2, size + 2e-2, size)
    y_pred = y_true + sign * size
    if name == "mean_squared_logarithmic_error":  # away from the clamp at eps
        y_pred = np.where(np.abs(y_pred) < 1e-2, y_pred + 2e-2, y_pred)
    return y_true, y_pred


def _regression_test(name):
    @SETTINGS
    @given(data=st.data())
    def test(central_difference, data):
        _assert_gradient_matches(central_difference, name, *_regression_inputs(data, name))

    test.__name__ = f"test_{name}"
    return test


test_mean_absolute_error = _regression_test("mean_absolute_error")
test_mean_absolute_percentage_error = _regression_test("mean_absolute_percentage_error")
test_mean_squared_logarithmic_error = _regression_test("mean_squared_logarithmic_error")
test_log_cosh = _regression_test("log_cosh")


@pytest.mark.parametrize("delta", HUBER_DELTAS)
@SETTINGS
@given(data=st.data())
def test_huber(central_difference, data, delta):
    y_true, y_pred = _regression_inputs(data, "huber", delta)
    _assert_gradient_matches(central_difference, "huber", y_true, y_pred, delta=delta)


def _regression_any_case(data, name, interior):
    delta = data.draw(st.sampled_from(HUBER_DELTAS), label="delta")
    if interior:
        y_true, y_pred = _regression_inputs(data, name, delta)
    else:
        batch, n = _shape(data, data.draw(st.integers(1, 3), label="rank"), min_classes=1)
        values = st.one_of(st.sampled_from(_REGRESSION_SPECIAL), _floats(-1e3, 1e3))
        y_true = data.draw(hnp.arrays(np.float64, batch + (n,), elements=values), label="y_true")
        y_pred = data.draw(hnp.arrays(np.float64, batch + (n,), elements=values), label="y_pred")
        y_pred = np.where(data.draw(hnp.arrays(np.bool_, y_pred.shape), label="tie"), y_true,
                          y_pred)
    return y_true, y_pred, ({"delta": delta} if name == "huber" else {})


@pytest.mark.parametrize("label_smoothing", SMOOTHINGS)
@pytest.mark.parametrize("from_logits", [False, True], ids=["probs", "logits"])
@SETTINGS
@given(data=st.data())
def test_binary_crossentropy(central_difference, data, from_logits, label_smoothing):
    rank, axis = data.draw(st.sampled_from(LAYOUTS), label="layout")
    batch, n = _shape(data, rank)
    y_true = _binary_labels(data, batch + (n,))
    y_pred = _y_pred(data, batch + (n,), from_logits)
    y_true, y_pred = np.moveaxis(y_true, -1, axis), np.moveaxis(y_pred, -1, axis)
    _assert_gradient_matches(central_difference, "binary_crossentropy", y_true, y_pred, axis,
                             from_logits=from_logits, label_smoothing=label_smoothing,
                             axis=axis)


@pytest.mark.parametrize("label_smoothing", SMOOTHINGS)
@pytest.mark.parametrize("from_logits", [False, True], ids=["probs", "logits"])
@SETTINGS
@given(data=st.data())
def test_categorical_crossentropy(central_difference, data, from_logits, label_smoothing):
    rank, axis = data.draw(st.sampled_from(LAYOUTS), label="layout")
    batch, n = _shape(data, rank)
    y_true = _categorical_labels(data, batch, n)
    # Probabilities are drawn unnormalised: the loss renormalises, and so must its gradient.
    y_pred = _y_pred(data, batch + (n,), from_logits)
    y_true, y_pred = np.moveaxis(y_true, -1, axis), np.moveaxis(y_pred, -1, axis)
    _assert_gradient_matches(central_difference, "categorical_crossentropy", y_true, y_pred,
                             axis, from_logits=from_logits, label_smoothing=label_smoothing,
                             axis=axis)


@pytest.mark.parametrize("ignore_class", [None, 0, -1])
@pytest.mark.parametrize("from_logits", [False, True], ids=["probs", "logits"])
@SETTINGS
@given(data=st.data())
def test_sparse_categorical_crossentropy(central_difference, data, from_logits, ignore_class):
    rank, axis = data.draw(st.sampled_from(LAYOUTS), label="layout")
    batch, n = _shape(data, rank)
    labels = _sparse(data, batch, n)
    if ignore_class == -1:  # an out-of-range ignore label: mark some samples with it
        ignored = _array(data, batch, 0.0, 1.0, "ignored samples") > 0.5
        labels = np.where(ignored, -1, labels)
    y_pred = np.moveaxis(_y_pred(data, batch + (n,), from_logits), -1, axis)
    _assert_gradient_matches(central_difference, "sparse_categorical_crossentropy", labels,
                             y_pred, axis, from_logits=from_logits, ignore_class=ignore_class,
                             axis=axis)
    if ignore_class is not None:
        ev = evaluate("sparse_categorical_crossentropy", labels, y_pred,
                      from_logits=from_logits, ignore_class=ignore_class, axis=axis)
        ignored = np.broadcast_to(np.expand_dims(labels == ignore_class, axis), y_pred.shape)
        assert np.all(ev.grad[ignored] == 0.0), "ignored samples have a gradient"
        assert np.all(ev.value[labels == ignore_class] == 0.0), "ignored samples have a loss"


_BALANCING = ((False, 0.25), (True, 0.25), (True, 0.6))


@pytest.mark.parametrize("gamma", GAMMAS)
@pytest.mark.parametrize("from_logits", [False, True], ids=["probs", "logits"])
@SETTINGS
@given(data=st.data())
def test_binary_focal_crossentropy(central_difference, data, from_logits, gamma):
    apply_class_balancing, alpha = data.draw(st.sampled_from(_BALANCING), label="balancing")
    rank, axis = data.draw(st.sampled_from(LAYOUTS), label="layout")
    label_smoothing = data.draw(st.sampled_from(SMOOTHINGS), label="label_smoothing")
    batch, n = _shape(data, rank)
    y_true = _binary_labels(data, batch + (n,))
    y_pred = _y_pred(data, batch + (n,), from_logits)
    y_true, y_pred = np.moveaxis(y_true, -1, axis), np.moveaxis(y_pred, -1, axis)
    _assert_gradient_matches(central_difference, "binary_focal_crossentropy", y_true, y_pred,
                             axis, apply_class_balancing=apply_class_balancing, alpha=alpha,
                             gamma=gamma, from_logits=from_logits,
                             label_smoothing=label_smoothing, axis=axis)


@pytest.mark.parametrize("gamma", GAMMAS)
@pytest.mark.parametrize("from_logits", [False, True], ids=["probs", "logits"])
@SETTINGS
@given(data=st.data())
def test_categorical_focal_crossentropy(central_difference, data, from_logits, gamma):
    alpha = data.draw(st.sampled_from([0.25, 1.0, 0.0]), label="alpha")
    rank, axis = data.draw(st.sampled_from(LAYOUTS), label="layout")
    label_smoothing = data.draw(st.sampled_from(SMOOTHINGS), label="label_smoothing")
    batch, n = _shape(data, rank)
    y_true = _categorical_labels(data, batch, n)
    y_pred = _y_pred(data, batch + (n,), from_logits, logit=SOFTMAX_LOGIT)
    y_true, y_pred = np.moveaxis(y_true, -1, axis), np.moveaxis(y_pred, -1, axis)
    _assert_gradient_matches(central_difference, "categorical_focal_crossentropy", y_true,
                             y_pred, axis, alpha=alpha, gamma=gamma, from_logits=from_logits,
                             label_smoothing=label_smoothing, axis=axis)


@pytest.mark.parametrize("gamma", GAMMAS)
@SETTINGS
@given(data=st.data())
def test_focal_loss(central_difference, data, gamma):
    batch, n = _shape(data, data.draw(st.integers(1, 3), label="rank"))
    y_true = _categorical_labels(data, batch, n)
    # The notes' loss applies softmax to whatever it gets: logits, or (as in the notes'
    # model) probabilities, which is a softmax applied twice.
    y_pred = _y_pred(data, batch + (n,), data.draw(st.booleans(), label="logits"),
                     logit=SOFTMAX_LOGIT)
    _assert_gradient_matches(central_difference, "focal_loss", y_true, y_pred, gamma=gamma)


@pytest.mark.parametrize("gamma", GAMMAS)
@SETTINGS
@given(data=st.data())
def test_sparse_focal_loss(central_difference, data, gamma):
    batch, n = _shape(data, data.draw(st.integers(1, 3), label="rank"))
    labels = _sparse(data, batch, n)
    if batch and data.draw(st.booleans(), label="trailing label axis"):
        labels = labels[..., None]
    y_pred = _y_pred(data, batch + (n,), True, logit=SOFTMAX_LOGIT)
    _assert_gradient_matches(central_difference, "sparse_focal_loss", labels, y_pred,
                             gamma=gamma, class_num=n)


def _family_tests(family):
    """The source of the family's own reference test module (``test_reference_<family>.py``)."""
    path = Path(__file__).with_name(f"test_reference_{family}.py")
    return path.read_text() if path.exists() else ""


def test_every_reference_is_covered():
    """Each reference's gradient is checked against central differences: here
    (``test_<name>``), or in its family's own test module, which must use the
    ``central_difference`` fixture (or its own) and name the reference (unless the family
    has only that one)."""
    tested = {name[len("test_"):] for name in globals() if name.startswith("test_")}
    missing = []
    for family in FAMILIES:
        source = _family_tests(family.__name__.rsplit(".", 1)[-1])
        for record in family.RECORDS:
            named = f'"{record.name}"' in source or len(family.RECORDS) == 1
            own = "central_difference(" in source and named
            if record.name not in tested and not own:
                missing.append(record.name)
    assert not missing, missing
    assert {r.name for f in FAMILIES for r in f.RECORDS} == set(EVALUATORS)


# ----------------------------------------------------------------------------- at the kinks


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bce_clip_passes_gradient_at_its_inclusive_bounds_and_blocks_outside(dtype):
    lo, hi = R.clip_bounds(dtype)
    below, above = np.nextafter(dtype(lo), dtype(0)), np.nextafter(dtype(hi), dtype(2))
    y = np.array([[0.0, 1.0, 0.0, 1.0, 0.3, 0.3, 1.0, 0.0]])
    p = np.array([[0.0, 1.0, lo, hi, below, above, lo, hi]], dtype=dtype)
    g = evaluate("binary_crossentropy", y, p).grad[0]
    n = p.shape[-1]
    # Outside [lo, hi] (0, 1, one ULP beyond either bound): no gradient at all.
    assert g[[0, 1, 4, 5]].tolist() == [0.0] * 4
    # On the bounds: the interior formula -(y / q - (1 - y) / (1 - q)) / n, q the bound.
    q = np.array([lo, hi, lo, hi])
    yy = y[0, [2, 3, 6, 7]]
    np.testing.assert_allclose(g[[2, 3, 6, 7]], -(yy / q - (1 - yy) / (1 - q)) / n,
                               rtol=1e-12)
    assert np.all(g[[2, 3, 6, 7]] != 0)


def test_bce_clip_blocks_gradient_of_exact_zero_and_one_for_any_label():
    y = np.array([[0.0, 1.0, 0.25, 0.0, 1.0, 0.75]])
    p = np.array([[0.0, 0.0, 0.0, 1.0, 1.0, 1.0]])
    ev = evaluate("binary_crossentropy", y, p)
    assert np.all(ev.grad == 0.0)
    assert np.all(np.isfinite(ev.value))


def test_sparse_ce_clip_blocks_gradient_of_a_zero_probability():
    g = evaluate("sparse_categorical_crossentropy", [0], [[0.5, 0.0, 0.5]]).grad[0]
    assert g[1] == 0.0 and np.all(np.isfinite(g))
    # (softmax(log clip(p)) - onehot) / p, with clip(0) = 1e-7 barely moving the softmax
    np.testing.assert_allclose(g[[0, 2]], [-1.0, 1.0], rtol=1e-6)


@pytest.mark.parametrize("from_logits", [False, True])
def test_binary_focal_gamma_zero_has_no_focal_factor_gradient(from_logits):
    # p_t == 1 exactly: the focal factor (1 - p_t)**0 is the constant 1, whose derivative
    # is 0 even where 0 * inf would otherwise appear. The result is BCE's gradient.
    y = np.array([[1.0, 0.0, 1.0, 0.0]])
    p = np.array([[1.0, 0.0, 0.7, 0.2]]) if not from_logits else np.array([[3.0, -3.0, 0.5, -1.0]])
    focal = evaluate("binary_focal_crossentropy", y, p, gamma=0.0, from_logits=from_logits)
    bce = evaluate("binary_crossentropy", y, p, from_logits=from_logits)
    assert np.all(np.isfinite(focal.grad))
    np.testing.assert_array_equal(focal.grad, bce.grad)


@pytest.mark.parametrize("gamma", [0.25, 0.5, 0.9])
def test_binary_focal_gamma_below_one_is_infinite_at_p_t_one(gamma):
    # d/dp (1 - p)**gamma = -gamma (1 - p)**(gamma - 1) -> -inf as p -> 1 (y = 1), and the
    # cross-entropy it multiplies is -log(1 - eps) > 0 there (clipped, not zero).
    g = evaluate("binary_focal_crossentropy", [[1.0, 0.0]], [[1.0, 0.0]], gamma=gamma).grad[0]
    assert g[0] == -np.inf and g[1] == np.inf


@pytest.mark.parametrize("gamma", [1.0, 2.0, 3.5])
def test_binary_focal_gamma_at_least_one_is_finite_at_p_t_one(gamma):
    ev = evaluate("binary_focal_crossentropy", [[1.0, 0.0]], [[1.0, 0.0]], gamma=gamma)
    lo, hi = R.clip_bounds(np.float64)
    # Clipped: -log(1 - eps) for p = 1, y = 1 and -log1p(-eps) for p = 0, y = 0 (equal to
    # ~1e-9 relative, the rounding of 1 - eps).
    bce = -np.log(hi)
    # The clip blocks BCE's own gradient; only the focal factor's derivative is left:
    # gamma == 1 -> -bce (y = 1) and +bce (y = 0), divided by n = 2; gamma > 1 -> 0.
    expected = [-bce / 2, bce / 2] if gamma == 1.0 else [0.0, 0.0]
    np.testing.assert_allclose(ev.grad[0], expected, rtol=1e-8, atol=0)


@pytest.mark.parametrize("gamma", GAMMAS)
def test_focal_loss_at_softmax_one_uses_the_limit_zero(gamma):
    # softmax([50, -50]) is exactly [1, 3.7e-44] in float64: q = clip(p, eps, 1.0) == 1 for
    # class 0, where gamma (1 - q)**(gamma - 1) log q -> 0 for every gamma > 0 (the log
    # vanishes like 1 - q). Soft labels so that class 0's term reaches the gradient.
    y_true = np.array([[0.5, 0.5], [1.0, 0.0]])
    y_pred = np.array([[50.0, -50.0], [50.0, -50.0]])
    for name, yt, params in [("focal_loss", y_true, {}),
                             ("sparse_focal_loss", [0, 0], {"class_num": 2})]:
        ev = evaluate(name, yt, y_pred, gamma=gamma, **params)
        assert np.all(np.isfinite(ev.grad)), (name, ev.grad)
        assert np.all(np.isfinite(ev.value)), (name, ev.value)


# ----------------------------------------------------------------------------- Evaluation


def _drawn_case(data, name):
    """(y_true, y_pred, params) for a reference whose family has its own test module
    (margin, probabilistic, ...): a setting from its record's grids and inputs drawn by
    :func:`lossverify.strategies.loss_inputs` from its input kind, hard regimes included."""
    from lossverify import strategies as lst

    record = RECORDS[name]
    params = dict(data.draw(st.sampled_from([*record.default_grid, *record.thorough_grid()]),
                            label="setting"))
    x = data.draw(lst.loss_inputs(name, **params), label="inputs")
    return x.y_true, x.y_pred, params


# The overlap family (lossverify.reference.overlap): Dice and Tversky at axis=None sum
# over the batch too, and Circle couples the rows (pairwise distances), so the central
# differences here are of the *sum* of the values, one element of y_pred at a time.
OVERLAP_AXES = (None, -1, 0)
TVERSKY_WEIGHTS = ((0.5, 0.5), (0.3, 0.7), (1.0, 0.0), (2.0, 0.1))
CIRCLE_SETTINGS = ((80.0, 0.4, True), (80.0, 0.4, False), (16.0, 0.25, True),
                   (32.0, -0.2, True), (0.0, 0.4, True))


def _assert_sum_gradient_matches(name, y_true, y_pred, **params):
    """As :func:`_assert_gradient_matches`, for ``sum(values)`` (the Evaluation's grad)."""
    ev = evaluate(name, y_true, y_pred, **params)
    fd = np.empty_like(y_pred)
    for idx in np.ndindex(y_pred.shape):
        h = H_REL * max(abs(y_pred[idx]), 1.0)
        up, down = y_pred.copy(), y_pred.copy()
        up[idx] += h
        down[idx] -= h
        fd[idx] = (np.sum(evaluate(name, y_true, up, **params).value)
                   - np.sum(evaluate(name, y_true, down, **params).value)) / (up[idx] - down[idx])
    h = H_REL * np.maximum(np.abs(y_pred), 1.0)
    tol = (2e-4 * (ev.grad_scale + np.abs(ev.grad)) + 1e3 * U64 * np.sum(ev.value_scale) / h
           + 1e-10)
    _assert_within(name, params, ev.grad, fd, tol, y_true, y_pred)


def _mask_case(data):
    batch, n = _shape(data, 2, min_classes=1)
    y_true = _binary_labels(data, batch + (n,))
    y_pred = _array(data, batch + (n,), P_LO, P_HI, "probabilities")
    return y_true, y_pred, data.draw(st.sampled_from(OVERLAP_AXES), label="axis")


@SETTINGS
@given(data=st.data())
def test_dice(data):
    y_true, y_pred, axis = _mask_case(data)
    _assert_sum_gradient_matches("dice", y_true, y_pred, axis=axis)


@SETTINGS
@given(data=st.data())
def test_tversky(data):
    y_true, y_pred, axis = _mask_case(data)
    alpha, beta = data.draw(st.sampled_from(TVERSKY_WEIGHTS), label="alpha, beta")
    _assert_sum_gradient_matches("tversky", y_true, y_pred, alpha=alpha, beta=beta, axis=axis)


def _embeddings(data, interior):
    batch = data.draw(st.integers(1, 5), label="batch")
    dim = data.draw(st.integers(2, 4), label="dim")
    e = _array(data, (batch, dim), -1.0, 1.0, "embeddings")
    norms = np.linalg.norm(e, axis=1, keepdims=True)
    e = np.where(norms > 0.1, e / np.where(norms > 0.1, norms, 1.0), np.eye(batch, dim))
    labels = _sparse(data, (batch,), 3)
    if not interior and batch > 1 and data.draw(st.booleans(), label="duplicate row"):
        e[1] = e[0]
    return labels, e


def _circle_far_from_kinks(labels, e, margin):
    """Every distance >= 1e-4 from the points where TF's gradient jumps (central
    differences would straddle them)."""
    raw = 1.0 - e @ e.T
    d, neg = np.maximum(raw, 0.0), labels[:, None] != labels[None, :]
    return not (np.any(neg & (np.abs(raw) < 1e-4)) or np.any(neg & (np.abs(1 + margin - d) < 1e-4))
                or (margin < 0 and np.any(~neg & (np.abs(margin + d) < 1e-4))))


@SETTINGS
@given(data=st.data())
def test_circle(data):
    labels, e = _embeddings(data, True)
    gamma, margin, remove = data.draw(st.sampled_from(CIRCLE_SETTINGS), label="setting")
    assume(_circle_far_from_kinks(labels, e, margin))
    _assert_sum_gradient_matches("circle", labels, e, gamma=gamma, margin=margin,
                                 remove_diagonal=remove)


def _overlap_any_case(data, name, interior):
    if name == "circle":
        labels, e = _embeddings(data, interior)
        gamma, margin, remove = data.draw(st.sampled_from(CIRCLE_SETTINGS), label="setting")
        assume(not interior or _circle_far_from_kinks(labels, e, margin))
        return labels, e, {"gamma": gamma, "margin": margin, "remove_diagonal": remove}
    y_true, y_pred, axis = _mask_case(data)
    if not interior:
        y_pred = data.draw(hnp.arrays(np.float64, y_pred.shape, elements=st.one_of(
            st.sampled_from([0.0, 1.0, 1e-9]), _floats(0.0, 1.0))), label="y_pred with 0, 1")
        y_true = np.where(data.draw(hnp.arrays(np.bool_, y_true.shape), label="emptied"), 0.0,
                          y_true)
    if name == "dice":
        return y_true, y_pred, {"axis": axis}
    alpha, beta = data.draw(st.sampled_from(TVERSKY_WEIGHTS), label="alpha, beta")
    return y_true, y_pred, {"alpha": alpha, "beta": beta, "axis": axis}


def _any_case(data, name, interior):
    """One (y_true, y_pred, params) for reference ``name``, with every parameter drawn.

    ``interior``: inputs as in the gradient tests above (away from the clip bounds);
    otherwise probabilities include exact 0 and 1 and logits reach +-60 (saturation).
    References outside the hand-built families are drawn from their input kind (which
    mixes interior and hard regimes), and ``interior`` is then ignored.
    """
    if name not in HAND_BUILT:
        return _drawn_case(data, name)
    if name in REGRESSION:
        return _regression_any_case(data, name, interior)
    if name in ("dice", "tversky", "circle"):
        return _overlap_any_case(data, name, interior)
    from_logits = data.draw(st.booleans(), label="from_logits")
    rank, axis = data.draw(st.sampled_from(LAYOUTS), label="layout")
    batch, n = _shape(data, rank)
    if interior:
        y_pred = _y_pred(data, batch + (n,), from_logits, logit=SOFTMAX_LOGIT)
    elif from_logits or name in ("focal_loss", "sparse_focal_loss", "mean_squared_error"):
        y_pred = _array(data, batch + (n,), -60.0, 60.0, "wide logits")
    else:
        y_pred = data.draw(hnp.arrays(np.float64, batch + (n,), elements=st.one_of(
            st.sampled_from([0.0, 1.0, 1e-7, 1 - 1e-7, 1e-9]), _floats(0.0, 1.0))),
            label="probabilities with 0 and 1")
    ls = data.draw(st.sampled_from(SMOOTHINGS), label="label_smoothing")
    gamma = data.draw(st.sampled_from(GAMMAS), label="gamma")
    if name in ("mean_squared_error", "focal_loss", "sparse_focal_loss"):
        axis = -1
    if name == "mean_squared_error":
        return _array(data, batch + (n,), -3.0, 3.0, "y_true"), y_pred, {}
    if name == "sparse_focal_loss":
        return _sparse(data, batch, n), y_pred, {"gamma": gamma, "class_num": n}
    if name == "sparse_categorical_crossentropy":
        params = {"from_logits": from_logits, "axis": axis,
                  "ignore_class": data.draw(st.sampled_from([None, 0]), label="ignore_class")}
        return _sparse(data, batch, n), np.moveaxis(y_pred, -1, axis), params
    binary = name.startswith("binary")
    y_true = _binary_labels(data, batch + (n,)) if binary else _categorical_labels(data, batch, n)
    y_true, y_pred = np.moveaxis(y_true, -1, axis), np.moveaxis(y_pred, -1, axis)
    if name == "focal_loss":
        return y_true, y_pred, {"gamma": gamma}
    params = {"from_logits": from_logits, "label_smoothing": ls, "axis": axis}
    if name == "binary_focal_crossentropy":
        balance, alpha = data.draw(st.sampled_from(_BALANCING), label="balancing")
        params.update(gamma=gamma, apply_class_balancing=balance, alpha=alpha)
    elif name == "categorical_focal_crossentropy":
        params.update(gamma=gamma, alpha=data.draw(st.sampled_from([0.0, 0.25, 1.0])))
    return y_true, y_pred, params


@pytest.mark.parametrize("name", sorted(EVALUATORS))
@settings(SETTINGS, max_examples=30)
@given(data=st.data())
def test_scales_are_positive_and_finite_and_kink_is_a_per_sample_bool(data, name):
    interior = data.draw(st.booleans(), label="interior (else with 0, 1, saturation)")
    y_true, y_pred, params = _any_case(data, name, interior)
    ev = evaluate(name, y_true, y_pred, **params)
    # per value, or per row of the class axis where a value spans several (CTC's frames)
    rows = np.shape(y_pred)[:-1] if params.get("axis", -1) == -1 else None
    assert ev.kink.dtype == np.bool_ and ev.kink.shape in (ev.value.shape, rows)
    assert ev.value_scale.shape == ev.value.shape
    assert ev.grad.shape == ev.grad_scale.shape == np.shape(y_pred)
    # Regression: focal_loss once called near_bounds(p, lo, np.inf, n), and
    # |p - inf| <= margin * inf is True, so every sample was flagged.
    assert not (interior and name in HAND_BUILT and ev.kink.any()), \
        "kink flagged away from the clip bounds"
    finite = np.isfinite(ev.value)
    vs, v = ev.value_scale[finite], ev.value[finite]
    # Positive, except that an exactly-zero MSE (y_pred == y_true == 0) is computed
    # exactly in any precision, so a zero error budget is right there.
    singular = (name == "binary_focal_crossentropy" and 0 < params["gamma"] < 1
                and not interior)
    assert np.all((np.isfinite(vs) | singular) & ((vs > 0) | (v == 0))), ev.value_scale
    # value_scale sums the absolute sizes of every term the loss adds or takes the log
    # of, so it is at least |value|.
    assert np.all((vs >= np.abs(v)) | singular), (ev.value, ev.value_scale)
    gfinite = np.isfinite(ev.grad)
    gs, g = ev.grad_scale[gfinite], ev.grad[gfinite]
    assert np.all(np.isfinite(gs) & (gs >= 0)), f"grad_scale {ev.grad_scale}"
    # A zero scale is right only for a gradient blocked to exactly 0 (clip, ignore_class);
    # a non-zero gradient needs a scale at least its size (sum of |pieces| >= |sum|).
    assert np.all(gs >= np.abs(g) * (1 - 1e-12)), (ev.grad, ev.grad_scale)
    assert np.all((gs > 0) | (g == 0))


def test_sparse_value_scale_bounds_the_value():
    ev = evaluate("sparse_categorical_crossentropy", [0], [[0.0, 0.0, 0.0]], from_logits=True)
    assert np.all(ev.value_scale >= np.abs(ev.value)), (ev.value, ev.value_scale)


def test_kink_flag_marks_a_renormalised_probability_at_a_clip_bound():
    lo, _ = R.clip_bounds(np.float32)
    y_pred = np.array([[lo, 0.5, 0.5 - lo], [0.2, 0.3, 0.5]], dtype=np.float32)
    for name in ("categorical_crossentropy", "categorical_focal_crossentropy"):
        assert evaluate(name, np.eye(3)[:2], y_pred).kink.tolist() == [True, False]


def test_binary_focal_from_saturated_logits_has_the_limit_gradient_zero():
    ev = evaluate("binary_focal_crossentropy", [[1.0]], [[40.0]], gamma=0.5, from_logits=True)
    assert np.isfinite(ev.grad).all() and abs(ev.grad[0, 0]) < 1e-20


@pytest.mark.parametrize("y, p", [(0.0, 0.0), (1.0, 1.0)])
def test_binary_focal_value_scale_is_finite_at_p_t_one(y, p):
    ev = evaluate("binary_focal_crossentropy", [[y]], [[p]], gamma=0.5)
    assert np.isfinite(ev.value).all() and np.isfinite(ev.value_scale).all(), ev.value_scale


def test_binary_focal_focal_factor_of_a_tiny_probability_is_exact():
    p, gamma = 1e-30, 0.5
    ev = evaluate("binary_focal_crossentropy", [[0.0]], [[p]], gamma=gamma)
    bce = -np.log1p(-R.clip_bounds(np.float64)[0])  # clipped: the BCE gradient is blocked
    assert ev.value[0] == pytest.approx(p**gamma * bce, rel=1e-12)
    assert ev.grad[0, 0] == pytest.approx(gamma * p ** (gamma - 1) * bce, rel=1e-12)
