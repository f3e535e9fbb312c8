"""The notes' two MNIST models: the subclassed ``MyModel`` and the functional ``MyKerasModel``.

Both are ``Conv2D(32, 3, relu) -> Flatten -> Dense(128, relu) -> Dense(10, softmax)`` on
``(28, 28, 1)`` images, exactly as in the notes. ``logits=True`` drops the final softmax so
that a loss which applies its own softmax (the notes' focal losses) applies it once; the
notes' softmax output with those losses is a double softmax, which still trains but
flattens the gradient (see ``lossverify train --experiment double-softmax``).

The last layer always computes in ``float32`` (``dtype="float32"``): a no-op under the
default policy, and the recommended numerically safe output under mixed precision.
"""

from __future__ import annotations

import keras

__all__ = ["FLOPS_PER_IMAGE_FORWARD", "MyKerasModel", "MyModel", "build_model"]

#: Multiply-adds x 2 of one forward pass (conv 26*26*32*3*3*2, dense 21632*128*2, 128*10*2).
FLOPS_PER_IMAGE_FORWARD = 26 * 26 * 32 * 3 * 3 * 2 + 21632 * 128 * 2 + 128 * 10 * 2


def _output_activation(logits: bool) -> str | None:
    return None if logits else "softmax"


class MyModel(keras.Model):
    """The notes' subclassed model (Experiment 3).

    ``logits=False`` (the notes) ends in a softmax; ``logits=True`` returns raw scores.
    """

    def __init__(self, logits: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.logits = bool(logits)
        self.conv1 = keras.layers.Conv2D(32, 3, activation="relu")
        self.flatten = keras.layers.Flatten()
        self.d1 = keras.layers.Dense(128, activation="relu")
        self.d2 = keras.layers.Dense(10, activation=_output_activation(logits), dtype="float32")

    def call(self, x):
        x = self.conv1(x)
        x = self.flatten(x)
        x = self.d1(x)
        return self.d2(x)

    def get_config(self):
        return {**super().get_config(), "logits": self.logits}


def MyKerasModel(logits: bool = False) -> keras.Model:  # noqa: N802 (the notes' name)
    """The notes' functional model (Experiment 4); ``logits`` as for :class:`MyModel`."""
    inputs = keras.Input(shape=(28, 28, 1), name="image")
    x = keras.layers.Conv2D(32, 3, activation="relu")(inputs)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(128, activation="relu")(x)
    outputs = keras.layers.Dense(
        10, activation=_output_activation(logits), dtype="float32", name="scores"
    )(x)
    return keras.Model(inputs, outputs, name="MyKerasModel")


#: Model kinds accepted by :func:`build_model` and the CLI.
MODEL_KINDS = ("subclassed", "functional")


def build_model(kind: str = "subclassed", *, logits: bool = False) -> keras.Model:
    """A built model of ``kind`` (``"subclassed"``: ``MyModel``, ``"functional"``)."""
    if kind == "subclassed":
        model = MyModel(logits=logits)
        model(keras.ops.zeros((1, 28, 28, 1)))  # create the weights, as the first batch would
        return model
    if kind == "functional":
        return MyKerasModel(logits=logits)
    raise ValueError(f"kind: expected one of {', '.join(MODEL_KINDS)}, got {kind!r}")
