"""The study notes' TensorFlow losses, faithful to the notes, with their bugs fixed.

The notes write each loss twice, as a ``keras.losses.Loss`` subclass and as a plain
function. This module keeps their mathematics exactly (softmax of whatever ``y_pred`` is,
a clip to ``[epsilon, 1.0]``, ``-sum(y * (1 - p)**gamma * log p)``) and fixes only what is
broken. Every fix is listed in the docstring of the object it touches, and the unfixed
versions are kept in :data:`AS_WRITTEN` so that tests (and users) can see the checks
reject them.

Numerical references for all of these live in :mod:`lossverify.reference`
(``mean_squared_error``, ``focal_loss``, ``sparse_focal_loss``).

Things the notes do that are *not* bugs in the code but are worth knowing:

* The focal losses apply a softmax to ``y_pred`` themselves. The notes' MNIST model ends
  in ``Dense(10, activation="softmax")``, so their experiments apply softmax twice. Give
  these losses logits (see ``lossverify.mnist`` with ``logits=True``).
* ``alpha`` is accepted and never used (the notes' code never multiplies by it). We keep
  the argument for signature compatibility and document that it has no effect.
* The clip's upper bound is ``1.0``, not ``1 - epsilon``: at ``p == 1`` the factor
  ``(1 - p)**gamma`` is exactly 0 and, for ``gamma < 1``, its gradient is NaN.
"""

from __future__ import annotations

import keras
import tensorflow as tf

__all__ = [
    "AS_WRITTEN",
    "FocalLoss",
    "MeanSquaredError",
    "SparseFocalLoss",
    "focal_loss",
    "mean_squared_error",
    "sparse_focal_loss",
]


def _focal_terms(y_true, logits, gamma):
    """Per-sample ``-sum(y * (1 - p)**gamma * log p)`` with ``p = clip(softmax(logits))``."""
    p = tf.nn.softmax(logits, axis=-1)
    p = tf.clip_by_value(p, keras.config.epsilon(), 1.0)
    y_true = tf.cast(y_true, p.dtype)
    return tf.reduce_sum(-y_true * tf.pow(1.0 - p, gamma) * tf.math.log(p), axis=-1)


def _sparse_to_one_hot(y_true, class_num, dtype):
    """Integer labels (shape ``(N,)`` or ``(N, 1)``) to one-hot rows.

    Keras's ``Loss.__call__`` casts ``y_true`` to the loss dtype (float32) before
    ``call`` sees it, and ``tf.one_hot`` refuses float indices, so the labels are cast
    back to int32 first. Out-of-range labels become all-zero rows (``tf.one_hot``
    semantics): the sample then silently contributes 0. ``lossverify.pitfalls`` warns.
    """
    labels = tf.cast(y_true, tf.int32)
    if labels.shape.rank is not None and labels.shape.rank >= 1 and labels.shape[-1] == 1:
        labels = tf.squeeze(labels, axis=-1)
    return tf.one_hot(labels, depth=class_num, dtype=dtype)


class MeanSquaredError(keras.losses.Loss):
    """The notes' MSE class: ``mean((y_pred - y_true)**2)`` over the last axis.

    Fix: the notes' ``call`` returns ``tf.reduce_mean(...)`` over *all* axes, a scalar.
    Keras then multiplies that one number by ``sample_weight`` and divides by the number
    of weights, so per-sample weights are meaningless (and the value only matches by
    accident when all weights are 1). ``call`` must return one loss per sample.

    >>> float(MeanSquaredError()([0., 0., 1., 1.], [1., 1., 1., 0.]))
    0.75
    """

    def call(self, y_true, y_pred):
        return tf.reduce_mean(tf.square(y_pred - y_true), axis=-1)


def mean_squared_error(y_true, y_pred):
    """The notes' MSE function, per sample (the notes reduce over everything; fixed)."""
    y_pred = tf.convert_to_tensor(y_pred)
    y_true = tf.cast(y_true, y_pred.dtype)
    return tf.reduce_mean(tf.square(y_pred - y_true), axis=-1)


def focal_loss(gamma=2.0, alpha=0.25):
    """The notes' dense focal-loss factory: returns ``focal_loss_fixed(y_true, y_pred)``.

    ``focal_loss_fixed`` applies ``softmax`` to ``y_pred``, clips to ``[eps, 1.0]`` and
    returns per-sample ``-sum(y * (1 - p)**gamma * log p)``.

    Fixes: the notes sum over ``axis=1`` while the softmax runs over ``axis=-1``; they
    agree only for rank-2 inputs, so both are ``-1`` here. ``alpha`` is accepted and
    unused, exactly as in the notes (it is *not* a class-balancing weight).
    """
    del alpha  # accepted for signature compatibility; the notes never use it

    def focal_loss_fixed(y_true, y_pred):
        return _focal_terms(y_true, y_pred, gamma)

    focal_loss_fixed.applies_softmax = True  # read by lossverify.pitfalls
    return focal_loss_fixed


class FocalLoss(keras.losses.Loss):
    """Experiment 3's ``FocalLoss`` class: the dense focal loss of :func:`focal_loss`.

    Fixes: ``super().__init__`` runs first (the notes set attributes before it, which
    Keras 3 tolerates but a ``name``/``reduction`` argument could not be passed);
    ``alpha`` is stored, shown in ``get_config`` and unused, as in the notes.
    The notes' *function* twin of this class refers to ``self.gamma`` inside a closure,
    a ``NameError`` on the first call; :func:`focal_loss` is the corrected function.
    """

    applies_softmax = True  # read by lossverify.pitfalls

    def __init__(self, gamma=2.0, alpha=0.25, name="focal_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        self.gamma = float(gamma)
        self.alpha = float(alpha)

    def call(self, y_true, y_pred):
        return _focal_terms(y_true, y_pred, self.gamma)

    def get_config(self):
        return {**super().get_config(), "gamma": self.gamma, "alpha": self.alpha}


class SparseFocalLoss(keras.losses.Loss):
    """The notes' ``SparseFocalLoss``: one-hot of integer labels, then the focal loss.

    Fixes: labels are cast to int32 before ``tf.one_hot`` (Keras 3 hands ``call`` a
    float32 ``y_true`` and ``tf.one_hot`` rejects floats), a trailing label axis of 1
    is squeezed, and the sum runs over the class axis ``-1``. Unchanged and documented:
    ``alpha`` is unused, and a label outside ``[0, class_num)`` gives an all-zero one-hot
    row, hence a loss of exactly 0 for that sample with no error.
    """

    applies_softmax = True  # read by lossverify.pitfalls

    def __init__(self, gamma=2.0, alpha=0.25, class_num=10, name="sparse_focal_loss",
                 **kwargs):
        super().__init__(name=name, **kwargs)
        self.gamma = float(gamma)
        self.alpha = float(alpha)
        self.class_num = int(class_num)

    def call(self, y_true, y_pred):
        y_pred = tf.convert_to_tensor(y_pred)
        one_hot = _sparse_to_one_hot(y_true, self.class_num, y_pred.dtype)
        return _focal_terms(one_hot, y_pred, self.gamma)

    def get_config(self):
        return {**super().get_config(), "gamma": self.gamma, "alpha": self.alpha,
                "class_num": self.class_num}


def sparse_focal_loss(gamma=2.0, alpha=0.25, class_num=10):
    """Function twin of :class:`SparseFocalLoss` (per-sample values)."""
    del alpha

    def sparse_focal_loss_fixed(y_true, y_pred):
        y_pred = tf.convert_to_tensor(y_pred)
        one_hot = _sparse_to_one_hot(y_true, class_num, y_pred.dtype)
        return _focal_terms(one_hot, y_pred, gamma)

    sparse_focal_loss_fixed.applies_softmax = True  # read by lossverify.pitfalls
    return sparse_focal_loss_fixed


# --- The notes' code as written, kept to show that lossverify rejects it. -------------


class _AsWrittenMeanSquaredError(keras.losses.Loss):
    """The notes' MSE class verbatim in behaviour: ``call`` returns a scalar."""

    def call(self, y_true, y_pred):
        return tf.reduce_mean(tf.square(y_pred - y_true))


def _as_written_focal_function(gamma=2.0, alpha=0.25):
    """The notes' function twin of ``FocalLoss``: ``self`` in a closure (NameError)."""

    def focal_loss_fixed(y_true, y_pred):
        p = tf.clip_by_value(tf.nn.softmax(y_pred, axis=-1), keras.config.epsilon(), 1.0)
        y_true = tf.cast(y_true, tf.float32)
        return tf.reduce_sum(
            -y_true * tf.pow(1 - p, self.gamma) * tf.math.log(p), axis=1  # noqa: F821
        )

    return focal_loss_fixed


#: The notes' unfixed code, by name, for demonstrations and meta-tests.
AS_WRITTEN = {
    "MeanSquaredError": _AsWrittenMeanSquaredError,
    "FocalLoss.function": _as_written_focal_function,
}
