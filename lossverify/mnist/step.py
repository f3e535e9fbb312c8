"""The training step the experiments run and the benchmarks time, and the loss choices.

One step is the notes' Experiment 3 step::

    with tf.GradientTape() as tape:
        predictions = model(images, training=True)
        loss = loss_object(labels, predictions)
    gradients = tape.gradient(loss, model.trainable_variables)
    optimizer.apply_gradients(zip(gradients, model.trainable_variables, strict=True))
    train_loss(loss); train_accuracy(labels, predictions)

compiled three ways (``"eager"``, ``"function"`` = ``tf.function``, ``"xla"`` =
``tf.function(jit_compile=True)``) and run on one device, or under a
``tf.distribute.MirroredStrategy`` when several devices exist. Under a strategy each
replica averages the loss over its share of the batch and divides by the number of
replicas, so the summed gradients are those of the global batch mean; the metrics are
updated once, in cross-replica context, from the gathered predictions.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from lossverify import notes_losses
from lossverify.mnist.data import one_hot

__all__ = [
    "BUILTIN_LOSSES",
    "LossChoice",
    "STEP_MODES",
    "choose_strategy",
    "epoch_dataset",
    "labels_for",
    "make_eval_step",
    "make_train_step",
    "resolve_loss",
]

STEP_MODES = ("eager", "function", "xla")


@dataclass(frozen=True)
class LossChoice:
    """A loss ready for training, and what it expects."""

    name: str
    fn: Callable[..., Any]
    #: integer labels (True) or one-hot rows (False)
    sparse: bool
    #: the loss applies a softmax to ``y_pred`` itself (so the model should output logits)
    applies_softmax: bool


def _focal(gamma, logits):
    return notes_losses.FocalLoss(gamma=gamma), False, True


def _focal_function(gamma, logits):
    return notes_losses.focal_loss(gamma=gamma), False, True


def _sparse_focal(gamma, logits):
    return notes_losses.SparseFocalLoss(gamma=gamma), True, True


def _cce(gamma, logits):
    return keras.losses.CategoricalCrossentropy(from_logits=logits), False, False


def _scce(gamma, logits):
    return keras.losses.SparseCategoricalCrossentropy(from_logits=logits), True, False


#: Loss names the CLI accepts, besides ``module:attr``.
BUILTIN_LOSSES: dict[str, Callable[[float, bool], tuple[Any, bool, bool]]] = {
    "focal": _focal,
    "focal-function": _focal_function,
    "sparse-focal": _sparse_focal,
    "categorical_crossentropy": _cce,
    "sparse_categorical_crossentropy": _scce,
}
_ALIASES = {"cce": "categorical_crossentropy", "scce": "sparse_categorical_crossentropy"}


def resolve_loss(name: str, *, logits: bool, gamma: float = 2.0,
                 sparse_labels: bool = False) -> LossChoice:
    """The loss called ``name``.

    ``name`` is one of :data:`BUILTIN_LOSSES` (or ``cce``/``scce``), or ``module:attr``
    naming a ``keras.losses.Loss`` subclass (instantiated without arguments), a loss
    instance, or a ``(y_true, y_pred)`` function. Built-in cross-entropies get
    ``from_logits=logits``. A ``module:attr`` loss gets one-hot labels unless
    ``sparse_labels``, and is assumed to take the model's output as it is.
    """
    key = _ALIASES.get(name, name)
    if key in BUILTIN_LOSSES:
        fn, sparse, applies_softmax = BUILTIN_LOSSES[key](gamma, logits)
        return LossChoice(key, fn, sparse, applies_softmax)
    if ":" not in name:
        choices = ", ".join([*BUILTIN_LOSSES, *_ALIASES])
        raise ValueError(f"loss: expected one of {choices} or 'module:attr', got {name!r}")
    module_name, _, attr = name.partition(":")
    try:
        obj = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ValueError(
            f"loss: cannot import {attr!r} from module {module_name!r}: {exc}"
        ) from exc
    if isinstance(obj, type):
        obj = obj()
    if not callable(obj):
        raise ValueError(f"loss: {name!r} is not callable (expected a loss or loss function)")
    return LossChoice(name, obj, bool(sparse_labels), False)


def labels_for(choice: LossChoice, labels: np.ndarray) -> np.ndarray:
    """Integer labels as the loss wants them: ``int64`` as they are, or one-hot rows."""
    return labels.astype(np.int64) if choice.sparse else one_hot(labels)


def accuracy_metric(choice: LossChoice, name: str) -> keras.metrics.Metric:
    """``SparseCategoricalAccuracy`` or ``CategoricalAccuracy`` to match the labels."""
    if choice.sparse:
        return keras.metrics.SparseCategoricalAccuracy(name=name)
    return keras.metrics.CategoricalAccuracy(name=name)


def _scalar_loss(value):
    """Reduce a per-sample loss (plain functions) to the batch mean; scalars pass through."""
    value = tf.convert_to_tensor(value)
    return tf.reduce_mean(value) if value.shape.rank else value


def choose_strategy() -> tf.distribute.Strategy | None:
    """A ``MirroredStrategy`` over the GPUs, or over the logical CPUs, if several exist."""
    gpus = tf.config.list_logical_devices("GPU")
    if len(gpus) > 1:
        return tf.distribute.MirroredStrategy([d.name for d in gpus])
    cpus = tf.config.list_logical_devices("CPU")
    if not gpus and len(cpus) > 1:
        return tf.distribute.MirroredStrategy([d.name for d in cpus])
    return None


def _compile(fn, mode):
    if mode not in STEP_MODES:
        raise ValueError(f"mode: expected one of {', '.join(STEP_MODES)}, got {mode!r}")
    if mode == "eager":
        return fn
    return tf.function(fn, jit_compile=(mode == "xla"), reduce_retracing=True)


def make_train_step(model, loss_fn, optimizer, train_loss, train_accuracy, *,
                    mode: str = "function", strategy: tf.distribute.Strategy | None = None):
    """``step(images, labels)``: one optimisation step that updates the two metrics.

    Under ``strategy`` the arguments are distributed values (from
    ``strategy.experimental_distribute_dataset``) and the model and optimizer must have
    been created in ``strategy.scope()``.
    """
    replicas = strategy.num_replicas_in_sync if strategy is not None else 1
    scales_loss = isinstance(optimizer, keras.optimizers.LossScaleOptimizer)

    def replica_step(images, labels):
        with tf.GradientTape() as tape:
            predictions = model(images, training=True)
            loss = _scalar_loss(loss_fn(labels, predictions))
            objective = loss / replicas if replicas > 1 else loss
            if scales_loss:
                objective = optimizer.scale_loss(objective)
        gradients = tape.gradient(objective, model.trainable_variables)
        optimizer.apply_gradients(zip(gradients, model.trainable_variables, strict=True))
        return loss, predictions

    if strategy is None:
        def step(images, labels):
            loss, predictions = replica_step(images, labels)
            train_loss(loss)
            train_accuracy(labels, predictions)
            return loss

        return _compile(step, mode)

    # Only XLA compiles the replica function on its own; a nested plain tf.function
    # breaks Keras's optimizer (its merge_call) under MirroredStrategy.
    inner = _compile(replica_step, mode) if mode == "xla" else replica_step

    def distributed_step(images, labels):
        loss, predictions = strategy.run(inner, args=(images, labels))
        loss = strategy.reduce(tf.distribute.ReduceOp.MEAN, loss, axis=None)
        train_loss(loss)
        train_accuracy(strategy.gather(labels, axis=0), strategy.gather(predictions, axis=0))
        return loss

    return distributed_step if mode == "eager" else tf.function(distributed_step)


def make_eval_step(model, loss_fn, test_loss, test_accuracy, *, mode: str = "function"):
    """``step(images, labels)``: the notes' ``test_step`` (no gradient, metrics updated)."""

    def step(images, labels):
        predictions = model(images, training=False)
        test_loss(_scalar_loss(loss_fn(labels, predictions)))
        test_accuracy(labels, predictions)

    return _compile(step, mode)


def epoch_dataset(x, y, batch_size: int, *, seed: int | None = None, epoch: int = 0,
                  drop_remainder: bool = False) -> tf.data.Dataset:
    """Batches of ``(x, y)``, shuffled with a seed derived from ``(seed, epoch)``.

    Each epoch's order depends only on the seed and the epoch number, so a run resumed at
    epoch ``k`` sees the same batches as an uninterrupted one. ``seed=None``: no shuffle.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size: expected a positive integer, got {batch_size}")
    ds = tf.data.Dataset.from_tensor_slices((x, y))
    if seed is not None:
        ds = ds.shuffle(min(len(x), 10_000), seed=seed * 100_003 + epoch,
                        reshuffle_each_iteration=False)
    return ds.batch(batch_size, drop_remainder=drop_remainder).prefetch(tf.data.AUTOTUNE)
