"""verify() on Keras 3 losses running on the JAX or the PyTorch backend
(``KERAS_BACKEND=jax`` / ``torch``): the loss runs through that backend's executor
(``jax.value_and_grad`` / ``jax.jit``, autograd / ``torch.compile``) on that backend's
tensors, a ``keras.losses.Loss`` reduced with its ``sample_weight`` as on TensorFlow, and
the report names the backend. The false verdict this replaces: every check but the value
failing as "not differentiable" under TensorFlow's GradientTape.

Skipped on the TensorFlow backend (the rest of the suite covers it) and where Keras or the
backend's framework is missing; ``nox -s frameworks`` runs this file once per backend."""

from __future__ import annotations

import os

import pytest

keras = pytest.importorskip("keras")
BACKEND = keras.backend.backend()
if BACKEND not in ("jax", "torch"):
    pytest.skip(f"Keras runs on {BACKEND!r}: this file checks the JAX and PyTorch backends "
                "(KERAS_BACKEND=jax or torch)", allow_module_level=True)
pytest.importorskip(BACKEND)
os.environ.setdefault("LOSSVERIFY_TORCH_COMPILE", "aot_eager")  # see test_torch_verify.py

import numpy as np  # noqa: E402
from keras import ops  # noqa: E402

import lossverify  # noqa: E402
from lossverify import deviations as D  # noqa: E402
from lossverify import frameworks  # noqa: E402
from lossverify.inputs import LossInputs  # noqa: E402

#: drawn batches per run (a reduced Loss cannot be padded: every batch size compiles)
N = 6
LABEL = f"keras {keras.__version__} ({BACKEND} backend)"


def _verify(loss, reference, **kw):
    kw.setdefault("max_examples", N)
    return lossverify.verify(loss, reference, **kw)


def _failed(report, check):
    return not report.ok and report.checks[check].failures > 0


def test_a_keras_loss_resolves_to_its_backend():
    fw = frameworks.resolve(keras.losses.CategoricalFocalCrossentropy())
    assert fw.name == BACKEND and fw.keras and fw.label == LABEL
    assert not fw.pred_first  # Keras's (y_true, y_pred)
    assert frameworks.resolve(keras.losses.categorical_crossentropy).name == BACKEND
    with pytest.raises(ValueError, match="framework: 'tensorflow' was named"):
        frameworks.resolve(keras.losses.categorical_crossentropy, "tensorflow")


# ---------------------------------------------------------------------- correct losses pass


def test_categorical_focal_loss_class_with_sample_weights():
    """The issue's example: on JAX it FAILED gradient, graph and xla as "not
    differentiable", with no word of the backend."""
    report = _verify(keras.losses.CategoricalFocalCrossentropy(),
                     "categorical_focal_crossentropy")
    assert report.ok, str(report)
    assert report.form == "class"
    for name in ("value", "gradient", "graph"):
        assert report.checks[name].verdict == "ok" and report.checks[name].examples > 0
    assert report.checks["xla"].verdict == "not run"
    assert f"framework: {LABEL}" in str(report)
    assert report.to_dict()["framework"] == LABEL
    assert "framework='keras'" in report.reproduce_line()


def test_categorical_crossentropy_function():
    report = _verify(keras.losses.categorical_crossentropy, "categorical_crossentropy",
                     max_examples=2 * N)
    assert report.ok, str(report)
    assert report.form == "function"


# ------------------------------------------------------------------ wrong losses are rejected


class SummedSquares(keras.losses.Loss):
    """A sum over the last axis where the mean squared error takes the mean."""

    def call(self, y_true, y_pred):
        return ops.sum(ops.square(y_pred - y_true), axis=-1)


def test_a_sum_where_a_mean_belongs_fails_the_value_check():
    report = _verify(SummedSquares(), "mean_squared_error", checks=("value", "gradient"))
    assert _failed(report, "value"), str(report)


@ops.custom_gradient
def _softplus(z):
    def grad(*args, upstream=None):
        upstream = args[0] if upstream is None else upstream
        return upstream * ops.sigmoid(z) * 0.9  # 10% off

    return ops.softplus(z), grad


def _bce_logits(y_true, y_pred):
    return ops.mean(_softplus(y_pred) - y_true * y_pred, axis=-1)


def test_a_wrong_custom_gradient_fails_the_gradient_check_only():
    report = _verify(_bce_logits, "binary_crossentropy", from_logits=True,
                     checks=("value", "gradient"), framework="keras")
    assert report.checks["value"].ok, str(report)
    assert _failed(report, "gradient"), str(report)


def _compiled() -> bool:
    if BACKEND == "torch":
        import torch

        return bool(torch.compiler.is_compiling())
    import jax

    return isinstance(ops.zeros(()) + 0, jax.core.Tracer)  # staged: inside jax.jit


def test_a_result_that_changes_when_compiled_fails_the_graph_check_only():
    def mode_dependent(y_true, y_pred):
        value = ops.mean(ops.square(y_pred - y_true), axis=-1)
        return value * 1.001 if _compiled() else value

    report = _verify(mode_dependent, "mean_squared_error", framework="keras")
    assert report.checks["value"].ok and report.checks["gradient"].ok, str(report)
    assert _failed(report, "graph"), str(report)


# ------------------------------------------- the backends' known deviations, reproduced


def _value_and_grad(fn, y_true, y_pred):
    """``fn(y_true, y_pred)`` and the gradient of its sum, on this backend (float32)."""
    y_pred = np.asarray(y_pred, np.float32)
    if BACKEND == "jax":
        import jax

        value, grad = jax.value_and_grad(lambda p: (lambda v: (v.sum(), v))(
            fn(y_true, p)), has_aux=True)(y_pred)
        return np.asarray(value[1]), np.asarray(grad)
    import torch

    p = torch.tensor(y_pred, requires_grad=True)
    value = fn(torch.as_tensor(y_true), p)
    value.sum().backward()
    return value.detach().numpy(), p.grad.numpy()


def _marks(dev, y_true, y_pred, **params):
    x = LossInputs(np.asarray(y_true), np.asarray(y_pred, np.float32))
    return dev.applies(params) and dev.at(x, params).any()


def test_clip_tie_gradient_reproduces():
    y, p = [[0.0]], [[1e-7]]
    value, grad = _value_and_grad(keras.losses.binary_crossentropy, y, p)
    # TensorFlow and the reference pass the clip's gradient at the tie: 1 / (1 - p)
    assert grad[0, 0] == {"jax": 0.5000000596046448, "torch": 0.0}[BACKEND], grad
    assert abs(value[0] - 1e-7) < 2e-8  # the value agrees
    assert _marks(D.KERAS_CLIP_TIE_GRADIENT, y, p)


def test_sparse_categorical_normalises_before_clip_reproduces():
    value, _ = _value_and_grad(keras.losses.sparse_categorical_crossentropy,
                               np.array([0]), [[1.5, 3.0]])
    assert abs(value[0] - np.log(3.0)) < 1e-6, value  # TensorFlow: log 2
    _, grad = _value_and_grad(keras.losses.sparse_categorical_crossentropy,
                              np.array([0]), [[0.0303, 0.9697, 0.0]])
    assert abs(grad[0, 2] - 1.0) < 1e-6, grad  # TensorFlow: 0 (clipped away)
    assert _marks(D.KERAS_SCCE_NORMALISES_FIRST, np.array([0]), [[1.5, 3.0]])
    assert _marks(D.KERAS_SCCE_NORMALISES_FIRST, np.array([0]), [[0.0303, 0.9697, 0.0]])


def test_binary_focal_from_logits_rounded_sigmoid_reproduces():
    def focal(y, z):
        return keras.losses.binary_focal_crossentropy(y, z, from_logits=True, gamma=1.0)

    value, grad = _value_and_grad(focal, [[0.0]], [[21.0]])
    assert abs(value[0] - 15.942385) < 1e-5 and grad[0, 0] == 0.0, (value, grad)  # TF: 21, 1
    assert _marks(D.KERAS_BFCE_LOGITS_ROUNDED_SIGMOID, [[0.0]], [[21.0]], from_logits=True)


def test_normalize_rsqrt_gradient_reproduces():
    for p in ([[0.0, 0.0]], [[1e-14, 0.0]]):
        _, grad = _value_and_grad(keras.losses.cosine_similarity, [[1.0, 2.0]], p)
        assert np.isnan(grad).all(), (p, grad)  # exact: -[1, 2] / sqrt(5) * 1e7
        assert _marks(D.KERAS_NORMALIZE_RSQRT_GRAD, [[1.0, 2.0]], p)
    _, grad = _value_and_grad(keras.losses.cosine_similarity, [[1.0, 2.0]], [[1e-12, 0.0]])
    np.testing.assert_allclose(grad, [[-4.472136e6, -8.944272e6]], rtol=1e-6)
