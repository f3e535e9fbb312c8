"""The input type (``lossverify.inputs.LossInputs``) and its operations, NumPy only."""

from __future__ import annotations

import subprocess
import sys

import numpy as np

from lossverify.inputs import LossInputs


def _batch(n=4, c=3, weighted=True):
    y = np.eye(c, dtype=np.float32)[np.arange(n) % c]
    p = np.full((n, c), 1.0 / c, np.float32) + np.arange(n, dtype=np.float32)[:, None]
    w = np.arange(1, n + 1, dtype=np.float32) if weighted else None
    return LossInputs(y, p, w, "uniform", {"labels": "one_hot"})


def test_take_rows_keeps_labels_and_weights_aligned():
    x = _batch()
    part = x.take_rows(np.array([3, 1]))
    assert part.y_pred[:, 0].tolist() == [x.y_pred[3, 0], x.y_pred[1, 0]]
    assert part.y_true.tolist() == x.y_true[[3, 1]].tolist()
    assert part.sample_weight.tolist() == [4.0, 2.0]
    assert part.regime == "uniform" and part.rows == 2
    assert x.take_rows(slice(1, 2)).rows == 1


def test_without_weight_and_replace_copy_without_touching_the_original():
    x = _batch()
    assert x.without_weight().sample_weight is None and x.sample_weight is not None
    assert x.replace(regime="other").regime == "other" and x.regime == "uniform"


def test_concatenate_is_the_batches_one_after_another():
    a, b = _batch(2), _batch(3)
    both = LossInputs.concatenate([a, b])
    assert both.rows == 5 and both.regime == "fused" and both.notes == {"batches": 2}
    assert both.sample_weight.tolist() == [1, 2, 1, 2, 3]
    assert LossInputs.concatenate([a]) is a


def test_cast_rounds_to_the_dtype_and_stays_finite():
    x = LossInputs(np.array([[0.0, 1.0]], np.float32), np.array([[1e5, -1e5]], np.float32))
    half = x.cast("float16")
    assert half.y_pred.dtype == np.float16 and np.isfinite(half.y_pred).all()
    assert half.y_pred.tolist() == [[65504.0, -65504.0]]
    assert x.cast("float32") is x
    labels = LossInputs(np.array([1], np.int32), np.zeros((1, 2), np.float32))
    assert labels.cast("float64").y_true.dtype == np.int32  # integer labels stay


def test_inputs_import_numpy_only():
    code = ("import sys, lossverify.inputs; bad = {'tensorflow', 'hypothesis'} & "
            "set(sys.modules); assert not bad, bad")
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0
