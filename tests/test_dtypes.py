"""Checks in float64, float16 and bfloat16: correct losses pass with the tolerance each
dtype warrants (budgets in the dtype the loss computes in), and the checks keep their
teeth: a loss that quietly computes in float32 is caught when checked in float64."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

import lossverify  # noqa: E402
from lossverify import checks as C  # noqa: E402
from lossverify import numerics  # noqa: E402
from lossverify import strategies as lst  # noqa: E402

K = keras.losses


@pytest.mark.parametrize("dtype", ["float64", "float16", "bfloat16"])
@pytest.mark.parametrize(("loss", "reference", "params"), [
    (lambda: K.categorical_crossentropy, "categorical_crossentropy", {}),
    (lambda: K.CategoricalCrossentropy(from_logits=True), "categorical_crossentropy",
     {"from_logits": True}),
    (lambda: K.binary_crossentropy, "binary_crossentropy", {"from_logits": True}),
    (lambda: K.MeanSquaredError(), "mean_squared_error", {}),
], ids=["cce", "cce-class-logits", "bce-logits", "mse-class"])
def test_correct_losses_pass_in_every_dtype(loss, reference, params, dtype):
    fn = loss()
    if fn is K.binary_crossentropy:
        def fn(y, p):
            return K.binary_crossentropy(y, p, from_logits=True)
    report = lossverify.verify(fn, reference, max_examples=20, seed=0, dtype=dtype,
                               checks=("value", "gradient", "graph"), **params)
    assert report.ok, str(report)
    assert report.dtype == dtype
    assert report.to_dict()["dtype"] == dtype


def test_class_computes_in_its_own_dtype():
    report = lossverify.verify(K.CategoricalCrossentropy(), "categorical_crossentropy",
                               max_examples=5, seed=0, dtype="float16", checks=("value",))
    assert report.compute_dtype == "float32"
    assert "float16 inputs, computed in float32" in str(report)


def cce_in_float32(y_true, y_pred):
    """Casts to float32 and back: right in float32, 7 digits short in float64."""
    out = K.categorical_crossentropy(tf.cast(y_true, tf.float32), tf.cast(y_pred, tf.float32))
    return tf.cast(out, y_pred.dtype)


def test_float32_intermediate_is_caught_in_float64_only():
    kw = dict(max_examples=60, seed=0, checks=("value",))
    assert lossverify.verify(cce_in_float32, "categorical_crossentropy", **kw).ok
    report = lossverify.verify(cce_in_float32, "categorical_crossentropy", dtype="float64",
                               **kw)
    assert not report.ok and "minimal counterexample" in str(report)
    assert "dtype='float64'" in report.reproduce_line()


def test_unknown_dtype_is_refused_naming_it():
    with pytest.raises(ValueError, match="dtype: expected one of"):
        lossverify.verify(K.categorical_crossentropy, "categorical_crossentropy",
                          dtype="int8")


def test_cast_inputs_rounds_and_stays_finite():
    x = lst.LossInputs(np.array([[0.0, 1.0]], np.float32),
                       np.array([[1e5, -1e5]], np.float32))
    for dtype in ("float16", "bfloat16"):
        xc = C.cast_inputs(x, dtype)
        assert xc.y_pred.dtype == numerics.np_dtype(dtype)
        assert np.isfinite(xc.y_pred.astype(np.float64)).all()


def test_ulp_distance_counts_in_the_dtype():
    one = np.array([1.0])
    assert numerics.ulp_distance(one, one + 2.0**-10, "float16") == 1
    assert numerics.ulp_distance(one, one + 2.0**-7, "bfloat16") == 1
    assert numerics.ulp_distance(one, one + 2.0**-52, "float64") == 1
