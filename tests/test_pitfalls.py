"""Each pitfall detector fires on the mistake and stays silent on correct use."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

from lossverify import notes_losses as N  # noqa: E402
from lossverify.pitfalls import (  # noqa: E402
    PitfallWarning,
    check_model_and_loss,
    detect_double_softmax,
    detect_from_logits_mismatch,
    detect_label_format,
    detect_out_of_range_labels,
    detect_saturated_focal,
)


def tiny_model(*tail):
    """Input(28, 28, 1) -> Flatten -> ``tail`` (layers)."""
    return keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten(), *tail])


@pytest.fixture(scope="module")
def softmax_model():
    return tiny_model(keras.layers.Dense(10, activation="softmax"))


@pytest.fixture(scope="module")
def logits_model():
    return tiny_model(keras.layers.Dense(10))


@pytest.fixture(scope="module")
def sigmoid_model():
    return tiny_model(keras.layers.Dense(1, activation="sigmoid"))


def fires(detector, *args, code, **kwargs):
    """Run ``detector``; it must warn and return exactly one pitfall with ``code``."""
    with pytest.warns(PitfallWarning) as caught:
        found = detector(*args, **kwargs)
    assert [p.code for p in found] == [code]
    assert [str(w.message) for w in caught if w.category is PitfallWarning] == [
        found[0].message]
    return found[0]


def silent(detector, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("error", PitfallWarning)
        assert detector(*args, **kwargs) == []


# --------------------------------------------------------------------------- double softmax

SOFTMAX_LOSSES = {
    "FocalLoss": lambda: N.FocalLoss(),
    "focal_loss": lambda: N.focal_loss(gamma=2.0),
    "SparseFocalLoss": lambda: N.SparseFocalLoss(),
    "sparse_focal_loss": lambda: N.sparse_focal_loss(),
    "CCE(from_logits)": lambda: keras.losses.CategoricalCrossentropy(from_logits=True),
    "SCCE(from_logits)": lambda: keras.losses.SparseCategoricalCrossentropy(from_logits=True),
}




def _stable_id(val):
    """Test ids without memory addresses (they differ between xdist workers)."""
    name = getattr(val, "__name__", None) or getattr(val, "name", None)
    if isinstance(name, str):
        return name
    if isinstance(val, list | np.ndarray):
        return "x".join(str(d) for d in np.shape(val)) + "-" + str(np.asarray(val).dtype)
    return type(val).__name__

@pytest.mark.parametrize("loss", sorted(SOFTMAX_LOSSES))
def test_double_softmax_fires_on_a_softmax_model(softmax_model, loss):
    pitfall = fires(detect_double_softmax, softmax_model, SOFTMAX_LOSSES[loss](),
                    code="double-softmax")
    assert "already applies softmax" in pitfall.message
    assert "activation=None" in pitfall.message


@pytest.mark.parametrize("tail", [
    [keras.layers.Dense(10), keras.layers.Softmax()],
    [keras.layers.Dense(10), keras.layers.Activation("softmax")],
    [keras.layers.Dense(10, activation="softmax"), keras.layers.Dropout(0.1)],
], ids=["Softmax", "Activation", "then-Dropout"])
def test_double_softmax_sees_softmax_layers(tail):
    fires(detect_double_softmax, tiny_model(*tail), N.FocalLoss(), code="double-softmax")


def test_double_softmax_sees_a_functional_keras_ops_softmax():
    inputs = keras.Input((28, 28, 1))
    outputs = keras.ops.softmax(keras.layers.Dense(10)(keras.layers.Flatten()(inputs)))
    fires(detect_double_softmax, keras.Model(inputs, outputs), N.focal_loss(),
          code="double-softmax")


def test_double_softmax_in_the_notes_models():
    from lossverify.mnist.models import build_model

    for kind in ("subclassed", "functional"):
        fires(detect_double_softmax, build_model(kind), N.FocalLoss(), code="double-softmax")
        silent(detect_double_softmax, build_model(kind, logits=True), N.FocalLoss())


@pytest.mark.parametrize("loss", sorted(SOFTMAX_LOSSES))
def test_double_softmax_silent_on_logits(logits_model, loss):
    silent(detect_double_softmax, logits_model, SOFTMAX_LOSSES[loss]())


@pytest.mark.parametrize("loss", [keras.losses.CategoricalCrossentropy(),
                                  "categorical_crossentropy",
                                  keras.losses.categorical_crossentropy,
                                  keras.losses.MeanSquaredError()])
def test_double_softmax_silent_on_probability_losses(softmax_model, loss):
    silent(detect_double_softmax, softmax_model, loss)


# --------------------------------------------------------------------------- from_logits

PROBABILITY_LOSSES = [
    keras.losses.CategoricalCrossentropy(),
    keras.losses.SparseCategoricalCrossentropy(),
    keras.losses.CategoricalFocalCrossentropy(),
    "categorical_crossentropy",
    keras.losses.sparse_categorical_crossentropy,
]


@pytest.mark.parametrize("loss", PROBABILITY_LOSSES, ids=_stable_id)
def test_probability_loss_on_logits_fires(logits_model, loss):
    pitfall = fires(detect_from_logits_mismatch, logits_model, loss,
                    code="probabilities-loss-on-logits")
    assert "from_logits=True" in pitfall.message


@pytest.mark.parametrize("model, loss", [
    ("softmax_model", keras.losses.CategoricalCrossentropy(from_logits=True)),
    ("softmax_model", keras.losses.CategoricalFocalCrossentropy(from_logits=True)),
    ("sigmoid_model", keras.losses.BinaryCrossentropy(from_logits=True)),
    ("sigmoid_model", keras.losses.BinaryFocalCrossentropy(from_logits=True)),
], ids=lambda x: x if isinstance(x, str) else type(x).__name__)
def test_logits_loss_on_probabilities_fires(request, model, loss):
    pitfall = fires(detect_from_logits_mismatch, request.getfixturevalue(model), loss,
                    code="from-logits-on-probabilities")
    assert "from_logits=False" in pitfall.message


@pytest.mark.parametrize("model, loss", [
    ("softmax_model", keras.losses.CategoricalCrossentropy()),
    ("logits_model", keras.losses.CategoricalCrossentropy(from_logits=True)),
    ("logits_model", keras.losses.SparseCategoricalCrossentropy(from_logits=True)),
    ("sigmoid_model", keras.losses.BinaryCrossentropy()),
    ("logits_model", N.FocalLoss()),          # no from_logits switch: applies softmax itself
    ("logits_model", keras.losses.MeanSquaredError()),
], ids=lambda x: x if isinstance(x, str) else type(x).__name__)
def test_from_logits_mismatch_silent_on_correct_use(request, model, loss):
    silent(detect_from_logits_mismatch, request.getfixturevalue(model), loss)


def test_unreadable_output_activation_gets_the_benefit_of_the_doubt():
    model = tiny_model(keras.layers.Dense(10, activation="relu"))
    silent(detect_from_logits_mismatch, model, keras.losses.CategoricalCrossentropy())
    silent(detect_double_softmax, model, N.FocalLoss())


# --------------------------------------------------------------------------- label format

SPARSE_LABELS = {"int (N,)": np.array([3, 1, 4]), "int (N, 1)": np.array([[3], [1], [4]]),
                 "float (N,)": np.array([3.0, 1.0, 4.0], np.float32)}
ONE_HOT = np.eye(10, dtype=np.float32)[[3, 1, 4]]


@pytest.mark.parametrize("labels", sorted(SPARSE_LABELS))
@pytest.mark.parametrize("loss", [keras.losses.CategoricalCrossentropy(), N.FocalLoss(),
                                  keras.losses.CategoricalFocalCrossentropy(),
                                  N.focal_loss()], ids=_stable_id)
def test_sparse_labels_for_dense_loss_fire(labels, loss):
    pitfall = fires(detect_label_format, SPARSE_LABELS[labels], loss,
                    code="sparse-labels-for-dense-loss")
    assert "one_hot" in pitfall.message


@pytest.mark.parametrize("loss", [keras.losses.SparseCategoricalCrossentropy(),
                                  N.SparseFocalLoss(), N.sparse_focal_loss()], ids=_stable_id)
def test_one_hot_labels_for_sparse_loss_fire(loss):
    pitfall = fires(detect_label_format, ONE_HOT, loss, code="one-hot-labels-for-sparse-loss")
    assert "argmax" in pitfall.message


@pytest.mark.parametrize("labels, loss", [
    (ONE_HOT, keras.losses.CategoricalCrossentropy()),
    (ONE_HOT * 0.9 + 0.01, N.FocalLoss()),  # soft labels
    (SPARSE_LABELS["int (N,)"], keras.losses.SparseCategoricalCrossentropy()),
    (SPARSE_LABELS["int (N, 1)"], N.SparseFocalLoss()),
    (np.array([[1.0], [0.0]]), keras.losses.BinaryCrossentropy()),
    (np.zeros((0,), np.int64), keras.losses.CategoricalCrossentropy()),
], ids=_stable_id)
def test_label_format_silent_on_correct_use(labels, loss):
    silent(detect_label_format, labels, loss)


# --------------------------------------------------------------------------- label range


@pytest.mark.parametrize("labels", [[0, 10, 3], [-1, 2], np.array([[11.0], [2.0]])], ids=_stable_id)
def test_out_of_range_labels_fire(labels):
    pitfall = fires(detect_out_of_range_labels, labels, 10, code="labels-out-of-range")
    assert "[0, 10)" in pitfall.message and "all-zero rows" in pitfall.message


def test_out_of_range_labels_really_give_zero_loss_in_the_notes():
    loss = N.sparse_focal_loss(class_num=10)(np.array([10, 3]), tf.zeros((2, 10)))
    assert loss.numpy()[0] == 0.0 and loss.numpy()[1] > 0.0


@pytest.mark.parametrize("labels", [[0, 9, 3], np.array([[9], [0]]), np.zeros((0,))],
                         ids=_stable_id)
def test_in_range_labels_silent(labels):
    silent(detect_out_of_range_labels, labels, 10)


# --------------------------------------------------------------------------- saturated focal


def test_tensorflow_gives_nan_gradients_on_saturated_focal_predictions():
    y_pred = tf.Variable([[1.0]])
    for gamma in (0.5, 0.0):
        with tf.GradientTape() as tape:
            value = keras.losses.binary_focal_crossentropy(tf.constant([[1.0]]), y_pred,
                                                           gamma=gamma)
        assert np.isfinite(value.numpy()).all()
        assert np.isnan(tape.gradient(value, y_pred).numpy()).all(), gamma


@pytest.mark.parametrize("gamma", [0.0, 0.5, 0.99])
@pytest.mark.parametrize("y_pred, from_logits", [
    ([[1.0]], False),
    ([[0.3, 0.7], [0.0, 1.0]], False),
    ([[30.0]], True),                          # sigmoid(30) == 1.0 in float32
    ([[0.0, 200.0, 0.0]], True),                # softmax == [0, 1, 0] in float32
], ids=["p=1", "p=0,1", "sigmoid", "softmax"])
def test_saturated_focal_fires(gamma, y_pred, from_logits):
    pitfall = fires(detect_saturated_focal, y_pred, gamma, from_logits=from_logits,
                    code="saturated-focal")
    assert f"gamma={gamma:g}" in pitfall.message and "NaN" in pitfall.message


@pytest.mark.parametrize("y_pred, gamma, from_logits", [
    ([[1.0]], 1.0, False),                     # gamma >= 1: derivative finite at p = 1
    ([[1.0]], 2.0, False),
    ([[0.3, 0.7]], 0.5, False),                 # not saturated
    ([[0.0, 10.0, 0.0]], 0.5, True),            # softmax 0.99991 < 1
    ([[5.0]], 0.5, True),
])
def test_saturated_focal_silent(y_pred, gamma, from_logits):
    silent(detect_saturated_focal, y_pred, gamma, from_logits=from_logits)


# --------------------------------------------------------------------------- everything


def test_check_model_and_loss_on_the_notes_experiment(softmax_model):
    loss = N.SparseFocalLoss(gamma=0.5, class_num=10)
    with pytest.warns(PitfallWarning):
        found = check_model_and_loss(softmax_model, loss, y_true=np.array([3, 12]),
                                     y_pred=np.array([[0.0] * 9 + [500.0]]))
    assert [p.code for p in found] == ["double-softmax", "labels-out-of-range",
                                       "saturated-focal"]


def test_check_model_and_loss_reports_from_logits_on_softmax_once(softmax_model):
    loss = keras.losses.CategoricalCrossentropy(from_logits=True)
    with pytest.warns(PitfallWarning) as caught:
        found = check_model_and_loss(softmax_model, loss)
    assert [p.code for p in found] == ["double-softmax"]
    assert len([w for w in caught if w.category is PitfallWarning]) == 1


def test_check_model_and_loss_uses_the_model_class_count(logits_model):
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    with pytest.warns(PitfallWarning):
        found = check_model_and_loss(logits_model, loss, y_true=np.array([10]))
    assert [p.code for p in found] == ["labels-out-of-range"]


def test_check_model_and_loss_label_format_first(logits_model):
    with pytest.warns(PitfallWarning):
        found = check_model_and_loss(logits_model, N.SparseFocalLoss(), y_true=ONE_HOT)
    assert [p.code for p in found] == ["one-hot-labels-for-sparse-loss"]


def test_check_model_and_loss_silent_on_correct_use(logits_model, softmax_model):
    labels = np.array([3, 1, 4])
    silent(check_model_and_loss, logits_model, N.SparseFocalLoss(), y_true=labels,
           y_pred=np.zeros((3, 10)))
    silent(check_model_and_loss, logits_model, N.focal_loss(gamma=0.5), y_true=ONE_HOT,
           y_pred=np.zeros((3, 10)))
    silent(check_model_and_loss, softmax_model, keras.losses.CategoricalCrossentropy(),
           y_true=ONE_HOT, y_pred=np.full((3, 10), 0.1))
    silent(check_model_and_loss, logits_model,
           keras.losses.SparseCategoricalCrossentropy(from_logits=True), y_true=labels)
