"""Detectors for the ways a correct loss is wired up wrongly.

Each ``detect_*`` function looks at a model, a loss and/or data, returns a list of
:class:`Pitfall` records (empty when all is well) and emits each one as a
:class:`PitfallWarning`. :func:`check_model_and_loss` runs every detector that applies.

The pitfalls, and where the study notes meet them:

``double-softmax``
    A loss that applies softmax itself (the notes' ``FocalLoss``, ``focal_loss(...)``,
    ``SparseFocalLoss``, or a Keras cross-entropy with ``from_logits=True``) on a model
    whose output is already a softmax. The notes' experiments do exactly this: the
    probabilities go through softmax again, which leaves any two classes within a
    factor ``e`` of each other, so the loss barely moves and the gradient flattens.
``from-logits-on-probabilities`` / ``probabilities-loss-on-logits``
    ``from_logits=True`` on a softmax/sigmoid output (double squashing), or
    ``from_logits=False`` on an unbounded linear output (the logits are clipped into
    ``[eps, 1 - eps]`` and read as probabilities: a wrong loss that still trains a bit).
``sparse-labels-for-dense-loss`` / ``one-hot-labels-for-sparse-loss``
    Integer class labels given to a loss that wants one-hot rows, or the reverse.
``labels-out-of-range``
    Labels outside ``[0, num_classes)``. ``tf.one_hot`` turns them into all-zero rows,
    so the notes' ``SparseFocalLoss`` gives those samples a loss of exactly 0, silently;
    Keras's sparse cross-entropy raises on CPU and returns NaN on GPU and under XLA.
``saturated-focal``
    A focal loss with ``gamma < 1`` on saturated predictions: ``d (1 - p)**gamma / dp``
    is infinite at ``p = 1`` and TensorFlow's gradient is NaN there (for Keras's
    ``binary_focal_crossentropy`` even at ``gamma = 0``, where ``pow``'s gradient at
    ``0**0`` is ``0 * inf``).

The model inspection reads the layer that produces the output (skipping shape-only
layers such as ``Flatten`` or ``Dropout``); a model whose output activation cannot be
read is given the benefit of the doubt.
"""

from __future__ import annotations

import inspect
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from lossverify import specs as S

__all__ = [
    "Pitfall",
    "PitfallWarning",
    "check_model_and_loss",
    "detect_double_softmax",
    "detect_from_logits_mismatch",
    "detect_label_format",
    "detect_out_of_range_labels",
    "detect_saturated_focal",
]


class PitfallWarning(UserWarning):
    """A model, loss and data combination that runs but computes the wrong thing."""


@dataclass(frozen=True)
class Pitfall:
    """One detected pitfall: a stable ``code`` and a ``message`` saying what was seen
    and what to change."""

    code: str
    message: str


# --------------------------------------------------------------------------- losses

def _keras_losses() -> dict[str, tuple[str, str | None, bool]]:
    """Keras losses with a ``from_logits`` switch, by function name: (class name, label
    format, is focal), from the records."""
    out = {}
    for name, record in S.SPECS.items():
        cls = record.implementation("keras", "class")
        if cls is not None and "from_logits" in record.parameters:
            out[name] = (cls.attr, record.labels, "gamma" in record.parameters)
    return out


def _notes_losses() -> dict[str, str | None]:
    """The notes' losses (lossverify.notes_losses) by class or factory name: label
    format, from the records."""
    return {impl.attr: record.labels for record in S.SPECS.values()
            for impl in record.implementations if impl.owner == "notes" and record.labels}


_KERAS_LOSSES = _keras_losses()
_NOTES_LOSSES = _notes_losses()


@dataclass(frozen=True)
class _LossInfo:
    name: str
    applies_softmax: bool  # the loss squashes y_pred itself (notes' losses, from_logits)
    from_logits: bool | None  # None: the loss has no such switch
    labels: str | None  # "dense", "sparse", or None (either / unknown)
    gamma: float | None  # focal losses only
    class_num: int | None  # the notes' sparse focal loss only


def _setting(loss: Any, name: str) -> Any:
    """A setting of one of the notes' losses: an attribute, or a closure variable."""
    value = getattr(loss, name, None)
    if value is None and inspect.isfunction(loss):
        value = inspect.getclosurevars(loss).nonlocals.get(name)
    return value


def _describe_loss(loss: Any) -> _LossInfo:
    """What matters about ``loss`` for the detectors: Keras loss objects, Keras loss
    functions or their names, and the notes' losses (marked ``applies_softmax``)."""
    import keras

    if isinstance(loss, str):
        loss = keras.losses.get(loss)
    if getattr(loss, "applies_softmax", False):
        owner = type(loss) if isinstance(loss, keras.losses.Loss) else loss
        factory = getattr(owner, "__qualname__", "").split(".")[0]
        gamma, class_num = _setting(loss, "gamma"), _setting(loss, "class_num")
        return _LossInfo(factory, True, None, _NOTES_LOSSES.get(factory),
                         None if gamma is None else float(gamma),
                         None if class_num is None else int(class_num))
    if isinstance(loss, keras.losses.Loss):
        name = next((n for n, (cls, *_) in _KERAS_LOSSES.items()
                     if isinstance(loss, getattr(keras.losses, cls))), type(loss).__name__)
        config = loss.get_config()
    else:  # a function: Keras's own, at its default settings, or unknown
        name = getattr(loss, "__name__", type(loss).__name__)
        config = {}
        if getattr(keras.losses, name, None) is not loss:
            name = f"{name} (not a Keras loss)"
    if name not in _KERAS_LOSSES:
        return _LossInfo(name, False, None, None, None, None)
    _, labels, focal = _KERAS_LOSSES[name]
    from_logits = bool(config.get("from_logits", False))
    gamma = float(config.get("gamma", 2.0)) if focal else None
    return _LossInfo(name, from_logits, from_logits, labels, gamma, None)


# --------------------------------------------------------------------------- models

#: Layers that change shape or regularise but leave the activation of their input.
_SHAPE_ONLY = {"Flatten", "Reshape", "Dropout", "Identity", "Permute", "SpatialDropout1D",
               "SpatialDropout2D", "GaussianDropout", "AlphaDropout", "ActivityRegularization"}
_PROBABILITIES = {"softmax", "sigmoid"}
_LOGITS = {"linear", "log_softmax"}


def _activation_of(op: Any) -> str | None:
    """The output activation of one layer or operation, by name; None if not known."""
    kind = type(op).__name__
    if kind in ("Softmax", "Sigmoid", "LogSoftmax"):
        return {"Softmax": "softmax", "Sigmoid": "sigmoid", "LogSoftmax": "log_softmax"}[kind]
    activation = getattr(op, "activation", None)
    return getattr(activation, "__name__", None)


def _output_activation(model: Any) -> str | None:
    """The activation of the model's output: ``"softmax"``, ``"linear"``, ...; None if
    it cannot be read. Looks at the operation producing a functional model's output
    (which may be a ``keras.ops`` call, not a layer), else at the last layer."""
    try:
        outputs = model.outputs
    except (AttributeError, ValueError):  # subclassed models have no symbolic outputs
        outputs = None
    if outputs and len(outputs) == 1 and hasattr(outputs[0], "_keras_history"):
        op = outputs[0]._keras_history.operation
        if type(op).__name__ not in _SHAPE_ONLY:
            return _activation_of(op)
    for layer in reversed(getattr(model, "layers", [])):
        if type(layer).__name__ not in _SHAPE_ONLY:
            return _activation_of(layer)
    return None


# --------------------------------------------------------------------------- detectors


def _emit(found: list[Pitfall]) -> list[Pitfall]:
    for pitfall in found:
        warnings.warn(pitfall.message, PitfallWarning, stacklevel=3)
    return found


def _double_softmax(model: Any, info: _LossInfo) -> list[Pitfall]:
    if not info.applies_softmax or _output_activation(model) != "softmax":
        return []
    how = "from_logits=True" if info.from_logits else "applies softmax to y_pred itself"
    return [Pitfall("double-softmax", (
        f"{info.name} {how}, but the model's output layer already applies softmax: the loss "
        f"sees softmax(softmax(z)), whose values are squashed towards uniform, so the loss "
        f"and its gradient are wrong. Remove the model's final softmax (Dense(..., "
        f"activation=None)) and apply softmax only at inference."))]


def _from_logits_mismatch(model: Any, info: _LossInfo) -> list[Pitfall]:
    if info.from_logits is None:
        return []
    activation = _output_activation(model)
    if info.from_logits and activation in _PROBABILITIES:
        return [Pitfall("from-logits-on-probabilities", (
            f"{info.name} has from_logits=True, but the model ends in {activation}: the "
            f"loss applies {activation} a second time. Use from_logits=False, or drop the "
            f"model's final {activation}."))]
    if not info.from_logits and activation in _LOGITS:
        return [Pitfall("probabilities-loss-on-logits", (
            f"{info.name} has from_logits=False, but the model's output is {activation} "
            f"(unbounded scores, not probabilities): the loss reads them as probabilities, "
            f"clipped into [eps, 1 - eps]. Use from_logits=True, or end the model in "
            f"softmax/sigmoid."))]
    return []


def detect_double_softmax(model: Any, loss: Any) -> list[Pitfall]:
    """A softmax-applying loss on a model whose output is already a softmax."""
    return _emit(_double_softmax(model, _describe_loss(loss)))


def detect_from_logits_mismatch(model: Any, loss: Any) -> list[Pitfall]:
    """A Keras cross-entropy or focal loss whose ``from_logits`` contradicts the model:
    ``False`` on a linear (logits) output, ``True`` on a softmax or sigmoid output."""
    return _emit(_from_logits_mismatch(model, _describe_loss(loss)))


def _integral(y: np.ndarray) -> bool:
    if y.dtype.kind in "iu":
        return True
    return y.dtype.kind == "f" and bool(np.all(np.isfinite(y) & (y == np.round(y))))


def _looks_sparse(y: np.ndarray) -> bool:
    return (y.ndim == 1 or (y.ndim == 2 and y.shape[1] == 1)) and _integral(y)


def _looks_one_hot(y: np.ndarray) -> bool:
    return (y.ndim == 2 and y.shape[1] >= 2 and bool(np.all((y == 0) | (y == 1)))
            and bool(np.all(y.sum(axis=1) == 1)))


def _label_format(y_true: Any, info: _LossInfo) -> list[Pitfall]:
    y = np.asarray(y_true)
    if info.labels == "dense" and y.size and _looks_sparse(y):
        return [Pitfall("sparse-labels-for-dense-loss", (
            f"{info.name} expects one-hot (or soft) label rows, but y_true has shape "
            f"{y.shape} with integer values such as {y.flat[0].item()!r}: each label is broadcast "
            f"against the class axis as if it were a probability. One-hot encode the labels "
            f"(keras.ops.one_hot) or use the sparse loss."))]
    if info.labels == "sparse" and y.size and _looks_one_hot(y):
        return [Pitfall("one-hot-labels-for-sparse-loss", (
            f"{info.name} expects integer class labels of shape (N,) or (N, 1), but y_true "
            f"has shape {y.shape} with one-hot rows: the 0/1 entries are read as class "
            f"indices. Pass y_true.argmax(-1) or use the dense loss."))]
    return []


def detect_label_format(y_true: Any, loss: Any) -> list[Pitfall]:
    """Integer labels for a dense loss, or one-hot rows for a sparse loss."""
    return _emit(_label_format(y_true, _describe_loss(loss)))


def _out_of_range(y_true: Any, num_classes: int) -> list[Pitfall]:
    y = np.asarray(y_true)
    if not y.size or y.dtype.kind not in "iuf":
        return []
    with np.errstate(invalid="ignore"):
        bad = ~((y >= 0) & (y < num_classes))
    if not bad.any():
        return []
    examples = ", ".join(repr(v.item()) for v in np.unique(y[bad])[:5])
    return [Pitfall("labels-out-of-range", (
        f"y_true: {int(bad.sum())} of {y.size} labels lie outside [0, {num_classes}) "
        f"(for example {examples}). tf.one_hot turns them into all-zero rows, so "
        f"SparseFocalLoss gives those samples a loss of exactly 0 without an error "
        f"(Keras's sparse cross-entropy raises on CPU, returns NaN on GPU and under XLA). "
        f"Fix the labels, or the number of classes."))]


def detect_out_of_range_labels(y_true: Any, num_classes: int) -> list[Pitfall]:
    """Sparse labels outside ``[0, num_classes)`` (silently zero rows in ``tf.one_hot``)."""
    return _emit(_out_of_range(y_true, int(num_classes)))


def _saturated_focal(y_pred: Any, gamma: float, from_logits: bool,
                     activation: str | None) -> list[Pitfall]:
    if gamma >= 1:
        return []
    import tensorflow as tf

    y = tf.cast(tf.convert_to_tensor(y_pred), tf.float32)
    if from_logits:
        squash = activation or ("softmax" if y.shape.rank and y.shape[-1] > 1 else "sigmoid")
        p = (tf.nn.softmax(y, axis=-1) if squash == "softmax" else tf.sigmoid(y)).numpy()
        saturated = p == 1 if squash == "softmax" else (p == 1) | (p == 0)
        seen = f"{squash}(y_pred) rounds to exactly 1 in float32"
    else:
        p = y.numpy()
        saturated = (p == 0) | (p == 1)
        seen = "y_pred is exactly 0 or 1 in float32"
    if not saturated.any():
        return []
    return [Pitfall("saturated-focal", (
        f"focal loss with gamma={gamma:g} < 1 and saturated predictions: {seen} for "
        f"{int(saturated.sum())} of {saturated.size} entries. The derivative of the focal "
        f"factor (1 - p)**gamma, gamma (1 - p)**(gamma - 1), is infinite at p = 1 for "
        f"0 < gamma < 1, and TensorFlow's pow gradient there is 0 * inf = NaN even at "
        f"gamma = 0: the gradient is NaN. Use gamma >= 1, or keep the predictions away "
        f"from 0 and 1 (clip them to [eps, 1 - eps] before the focal factor)."))]


def detect_saturated_focal(y_pred: Any, gamma: float, from_logits: bool = False,
                           activation: str | None = None) -> list[Pitfall]:
    """Focal ``gamma < 1`` with saturated predictions (NaN gradients).

    Probabilities are saturated when exactly 0 or 1 in float32. Logits are squashed in
    float32 by ``activation`` (``"softmax"`` or ``"sigmoid"``; by default softmax over a
    last axis of more than one class, else sigmoid) and saturated where softmax rounds to
    exactly 1, or sigmoid to exactly 0 or 1.
    """
    return _emit(_saturated_focal(y_pred, float(gamma), bool(from_logits), activation))


def check_model_and_loss(model: Any, loss: Any, y_true: Any = None, y_pred: Any = None,
                         num_classes: int | None = None) -> list[Pitfall]:
    """Run every detector that applies; each pitfall is reported (and warned) once.

    ``num_classes`` defaults to the loss's ``class_num`` (the notes' sparse focal loss),
    else to the size of the model's last output axis. Labels are range-checked for sparse
    losses; predictions are checked for saturation for focal losses.
    """
    info = _describe_loss(loss)
    found = _double_softmax(model, info)
    if not found:  # from_logits=True on a softmax model is the same mistake; say it once
        found = _from_logits_mismatch(model, info)
    if y_true is not None:
        wrong_format = _label_format(y_true, info)
        found += wrong_format
        classes = num_classes or info.class_num or _output_classes(model)
        if info.labels == "sparse" and not wrong_format and classes:
            found += _out_of_range(y_true, int(classes))
    if y_pred is not None and info.gamma is not None:
        binary = info.name in S.SPECS and S.SPECS[info.name].inputs == "binary"
        activation = "sigmoid" if binary else "softmax"
        found += _saturated_focal(y_pred, info.gamma, info.applies_softmax, activation)
    return _emit(found)


def _output_classes(model: Any) -> int | None:
    """The size of the model's last output axis, if the model knows it."""
    try:
        return model.output_shape[-1]
    except (AttributeError, ValueError, TypeError, IndexError):
        return None
