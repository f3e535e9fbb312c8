"""The notes' two models: architecture, outputs, and the softmax/logits switch."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from lossverify.mnist.models import FLOPS_PER_IMAGE_FORWARD, MyKerasModel, MyModel, build_model
from lossverify.mnist.train import _model_ends_in_softmax

# conv 3*3*1*32 + 32, dense 21632*128 + 128, dense 128*10 + 10
_PARAMS = 320 + 2_769_024 + 1_290


@pytest.mark.parametrize("kind", ["subclassed", "functional"])
def test_architecture_and_softmax_output(kind):
    keras.utils.set_random_seed(0)
    model = build_model(kind)
    assert model.count_params() == _PARAMS
    assert [w.shape for w in model.get_weights()] == [
        (3, 3, 1, 32), (32,), (21632, 128), (128,), (128, 10), (10,)]
    x = np.random.default_rng(0).uniform(0, 1, (3, 28, 28, 1)).astype(np.float32)
    probs = np.asarray(model(x))
    assert probs.shape == (3, 10)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    assert _model_ends_in_softmax(model)


@pytest.mark.parametrize("kind", ["subclassed", "functional"])
def test_logits_output_is_the_softmax_models_pre_activation(kind):
    keras.utils.set_random_seed(0)
    with_softmax = build_model(kind, logits=False)
    logits_model = build_model(kind, logits=True)
    assert not _model_ends_in_softmax(logits_model)
    logits_model.set_weights(with_softmax.get_weights())
    x = np.random.default_rng(1).uniform(0, 1, (4, 28, 28, 1)).astype(np.float32)
    logits = np.asarray(logits_model(x), dtype=np.float64)
    assert not np.allclose(logits.sum(axis=1), 1.0)
    expected = np.exp(logits - logits.max(1, keepdims=True))
    expected /= expected.sum(1, keepdims=True)
    np.testing.assert_allclose(np.asarray(with_softmax(x)), expected, rtol=1e-5, atol=1e-7)


def test_subclassed_and_functional_compute_the_same_function():
    keras.utils.set_random_seed(0)
    sub, fun = MyModel(logits=True), MyKerasModel(logits=True)
    sub(np.zeros((1, 28, 28, 1), np.float32))
    sub.set_weights(fun.get_weights())
    x = np.random.default_rng(2).uniform(0, 1, (2, 28, 28, 1)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(sub(x)), np.asarray(fun(x)), rtol=1e-6)


def test_unknown_kind_is_named():
    with pytest.raises(ValueError, match="kind: expected one of subclassed, functional"):
        build_model("resnet")


def test_flops_per_image_matches_the_layer_shapes():
    conv = 26 * 26 * 32 * (3 * 3 * 1) * 2
    assert FLOPS_PER_IMAGE_FORWARD == conv + 21632 * 128 * 2 + 128 * 10 * 2 == 5_929_728


def test_softmax_detection_on_other_shapes_of_model():
    inputs = keras.Input((4,))
    separate = keras.Model(inputs, keras.layers.Softmax()(keras.layers.Dense(3)(inputs)))
    activation = keras.Model(inputs, keras.layers.Activation("softmax")(inputs))
    relu = keras.Model(inputs, keras.layers.Dense(3, activation="relu")(inputs))
    assert _model_ends_in_softmax(separate)
    assert _model_ends_in_softmax(activation)
    assert not _model_ends_in_softmax(relu)
