"""verify() on JAX (optax) losses: ``jax.value_and_grad`` eagerly, ``jax.jit`` as the
graph mode (the xla check is not run: jit is XLA), float64 under ``jax.enable_x64``,
per-sample batches padded to fixed sizes so a run compiles a few shapes. Correct losses
pass and deliberately wrong ones are rejected by the check that names what is wrong.
Skipped without JAX; ``nox -s frameworks`` installs it (no TensorFlow there)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

jax = pytest.importorskip("jax")
optax = pytest.importorskip("optax")
jnp = jax.numpy

import lossverify  # noqa: E402
from lossverify import frameworks  # noqa: E402
from lossverify.frameworks import base  # noqa: E402
from lossverify.inputs import LossInputs  # noqa: E402

#: drawn batches per run: JAX compiles each primitive per shape even eagerly (a few
#: seconds per new shape on this 2-core machine), so runs are kept short
N = 10


def _verify(loss, reference, **kw):
    kw.setdefault("max_examples", N)
    return lossverify.verify(loss, reference, **kw)


def _failed(report, check):
    return not report.ok and report.checks[check].failures > 0


def test_the_framework_is_detected_from_the_callable():
    assert frameworks.detect(optax.softmax_cross_entropy).framework == "jax"
    assert frameworks.detect(jax.jit(optax.l2_loss)).framework == "jax"

    def mine(y_true, y_pred):
        return jnp.mean((y_pred - y_true) ** 2, axis=-1)

    found = frameworks.detect(mine)
    assert found.framework == "jax" and "jnp" in found.where
    fw = frameworks.resolve(mine)
    assert not fw.pred_first and fw.label == f"jax {jax.__version__}"
    assert frameworks.resolve(optax.l2_loss).pred_first  # (predictions, targets)


def test_padding_keeps_every_row_and_the_results_slice_back():
    x = LossInputs(np.arange(5, dtype=np.int32), np.arange(10, dtype=np.float32).reshape(5, 2))
    rows, steps = base.padded_shape(x.y_pred.shape, True)
    assert (rows, steps) == (base.PAD_ROWS, 0)
    padded = base.pad(x, rows, steps)
    assert padded.y_pred.shape == (rows, 2) and (padded.y_pred[:5] == x.y_pred).all()
    x3 = LossInputs(np.zeros((2, 2), np.int32), np.zeros((2, 2, 4), np.float32))
    assert base.padded_shape(x3.y_pred.shape, True) == (base.PAD_ROWS, 3)
    assert base.pad(x3, *base.padded_shape(x3.y_pred.shape, True)).y_true.shape == \
        (base.PAD_ROWS, 3)


def test_a_per_sample_result_of_rank_3_inputs_slices_back_to_its_rows():
    """A loss over the frames (CTC's shape: one value per sample) on a padded batch: the
    drawn rows' values (it returned the padded batch's, "returned shape (128,)"), and
    neither its frames nor its label sequences are padded (repeated frames would change
    each value; CTC's labels tiled to the frames' length read [1, 0, 1, 0, 1] for [1, 0],
    keras.losses.ctc on JAX 13.17 for 26.20)."""
    def over_frames(y_true, y_pred):
        return jnp.sum(y_pred ** 2, axis=(1, 2)) + jnp.sum(y_true != 0, axis=1)

    fw = frameworks.resolve(over_frames, "jax")
    runner = fw.executor(over_frames, False, 60.0, None, per_step=False)
    x = LossInputs(np.array([[1, 0], [2, 0], [0, 0]], np.int32),
                   np.arange(30, dtype=np.float32).reshape(3, 5, 2) / 10)
    result = runner.run("eager", x)
    assert result.error is None, result.error
    assert result.value.shape == (3,), result.value.shape
    np.testing.assert_allclose(result.value,
                               (x.y_pred.astype(np.float64) ** 2).sum((1, 2)) + [1, 1, 0],
                               rtol=1e-6)
    np.testing.assert_allclose(result.grad, 2 * x.y_pred, rtol=1e-6)


# ---------------------------------------------------------------------- correct losses pass


def test_softmax_cross_entropy():
    report = _verify(optax.softmax_cross_entropy, "categorical_crossentropy", from_logits=True)
    assert report.ok, str(report)
    assert report.checks["graph"].examples == N
    assert report.checks["xla"].verdict == "not run"
    assert "jax.jit is XLA" in report.checks["xla"].not_run_reason
    text = str(report)
    assert f"framework: jax {jax.__version__}" in text
    assert "graph: jax.jit(jax.value_and_grad)" in text
    assert "called as loss(y_pred, y_true) (its parameters (logits, labels))" in text
    assert "framework='jax'" in report.reproduce_line()
    assert report.to_dict()["framework"] == f"jax {jax.__version__}"


def test_softmax_cross_entropy_with_integer_labels():
    report = _verify(optax.softmax_cross_entropy_with_integer_labels,
                     "sparse_categorical_crossentropy", from_logits=True)
    assert report.ok, str(report)


def test_sigmoid_binary_cross_entropy_per_element():
    report = _verify(optax.sigmoid_binary_cross_entropy, "binary_crossentropy",
                     from_logits=True, output={"per_element": "mean"})
    assert report.ok, str(report)


def test_l2_loss_is_half_the_squared_error_in_float64():
    before = jax.config.jax_enable_x64  # (test_jax_closeness.py sets it for the process)
    report = _verify(optax.l2_loss, "mean_squared_error", dtype="float64",
                     output=lossverify.Output(per_element="mean", scale=0.5))
    assert report.ok, str(report)
    assert report.compute_dtype == "float64"
    assert jax.config.jax_enable_x64 == before  # x64 was enabled for the calls only


# ------------------------------------------------------------------ wrong losses are rejected


def test_a_sum_where_a_mean_belongs_fails_the_value_check():
    def summed(y_true, y_pred):
        return jnp.sum(optax.squared_error(y_pred, y_true), axis=-1)

    report = _verify(summed, "mean_squared_error", checks=("value", "gradient"))
    assert _failed(report, "value"), str(report)


@jax.custom_vjp
def _softplus(z):
    return jax.nn.softplus(z)


def _softplus_fwd(z):
    return jax.nn.softplus(z), z


def _softplus_bwd(z, g):
    return (g * jax.nn.sigmoid(z) * 0.9,)  # 10% off


_softplus.defvjp(_softplus_fwd, _softplus_bwd)


def test_a_wrong_custom_vjp_fails_the_gradient_check_only():
    def bce_logits(y_true, y_pred):
        return jnp.mean(_softplus(y_pred) - y_true * y_pred, axis=-1)

    report = _verify(bce_logits, "binary_crossentropy", from_logits=True,
                     checks=("value", "gradient"))
    assert report.checks["value"].ok, str(report)
    assert _failed(report, "gradient"), str(report)


def test_a_result_that_changes_under_jit_fails_the_graph_check_only():
    def mode_dependent(y_true, y_pred):
        value = jnp.mean((y_pred - y_true) ** 2, axis=-1)
        if isinstance(jnp.zeros(()) + 0, jax.core.Tracer):  # staged: inside jax.jit
            value = value * 1.001
        return value

    report = _verify(mode_dependent, "mean_squared_error")
    assert report.checks["value"].ok and report.checks["gradient"].ok, str(report)
    assert _failed(report, "graph"), str(report)
    assert "graph value differs from the reference" in report.checks["graph"].message


def test_float32_returned_for_float64_inputs_fails_the_value_check():
    def narrow(y_true, y_pred):
        return optax.l2_loss(y_pred.astype(jnp.float32), y_true.astype(jnp.float32)).mean(-1)

    report = _verify(narrow, "mean_squared_error", dtype="float64", checks=("value",),
                     output={"scale": 0.5})
    assert _failed(report, "value"), str(report)


def test_a_loss_jax_cannot_trace_is_not_differentiable():
    def through_numpy(y_true, y_pred):
        return jnp.asarray(np.mean((np.asarray(y_pred) - np.asarray(y_true)) ** 2, axis=-1))

    report = _verify(through_numpy, "mean_squared_error", checks=("value", "gradient"),
                     framework="jax")
    assert report.checks["value"].ok, str(report)
    assert _failed(report, "gradient")
    assert "not differentiable with respect to y_pred (jax.value_and_grad cannot trace it" in \
        report.checks["gradient"].message


def test_an_integer_result_is_named_by_its_dtype():
    def counts(y_true, y_pred):
        return jnp.sum(y_pred > 0, axis=-1)

    report = _verify(counts, "mean_squared_error", checks=("value",))
    assert _failed(report, "value")
    assert "returned dtype int32, expected a float dtype" in report.checks["value"].message


def test_a_jax_run_imports_neither_tensorflow_nor_keras():
    code = ("import sys, optax, lossverify; "
            "r = lossverify.verify(optax.l2_loss, 'mean_squared_error', max_examples=3, "
            "checks=('value', 'gradient'), output={'per_element': 'mean', 'scale': 0.5}); "
            "bad = {'tensorflow', 'keras', 'torch'} & set(sys.modules); "
            "assert r.ok and not bad, (bad, str(r)); print(r.to_dict()['framework'])")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == f"jax {jax.__version__}"
