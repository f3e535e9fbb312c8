"""The known upstream deviations: where an implementation departs from the reference.

Each :class:`~lossverify.record.KnownDeviation` is attached to the records of the losses
whose implementations have it (:mod:`lossverify.catalogue`), with its precondition (where
in a drawn input it can show), its symptom and a minimal reproducer. The predicates
compute, in float32 NumPy, where TensorFlow's own rounding reaches the precondition.
NumPy only.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np

from lossverify.record import KnownDeviation
from lossverify.reference._core import clip_bounds


def _in_input_dtype(x: Any, p32: np.ndarray) -> np.ndarray:
    """``p32`` rounded to ``y_pred``'s dtype when that is narrower than float32 (float16,
    bfloat16), back in float32: where such a probability is exactly 1.0."""
    dt = np.asarray(x.y_pred).dtype
    return (p32.astype(dt) if dt.itemsize < 4 else p32).astype(np.float32)


def _probabilities32(x: Any, params: Mapping[str, Any]) -> np.ndarray:
    """``y_pred`` as float32 probabilities: ``sigmoid`` of it when ``from_logits``."""
    p = np.asarray(x.y_pred, np.float32)
    if params.get("from_logits"):
        with np.errstate(over="ignore"):
            p = (np.float32(1) / (np.float32(1) + np.exp(-p))).astype(np.float32)
    return p


def _softmax32(z: np.ndarray, axis: int = -1) -> np.ndarray:
    """A float32 softmax over ``axis``, as TensorFlow computes it."""
    z = np.asarray(z, np.float32)
    e = np.exp(z - z.max(axis=axis, keepdims=True))
    return (e / e.sum(axis=axis, keepdims=True)).astype(np.float32)


def _rows(mask: np.ndarray, params: Mapping[str, Any]) -> np.ndarray:
    """Every element of a sample (along the class axis) where ``mask`` holds for one:
    for precondition that the class axis couples (a softmax, a renormalisation)."""
    axis = params.get("axis", -1)
    return np.broadcast_to(np.any(mask, axis=axis, keepdims=True), mask.shape)


def _one_minus_pt32(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Keras's ``1 - p_t`` with ``p_t = y p + (1 - y)(1 - p)``, in float32."""
    one = np.float32(1)
    return one - (y * p + (one - y) * (one - p))


def _smoothed(y: np.ndarray, params: Mapping[str, Any]) -> np.ndarray:
    """Keras's binary label smoothing ``y (1 - ls) + ls / 2``, in ``y``'s dtype."""
    ls = y.dtype.type(params.get("label_smoothing", 0.0) or 0.0)
    return y * (y.dtype.type(1) - ls) + y.dtype.type(0.5) * ls


def _framework_dtype(x: Any) -> np.dtype:
    """The dtype a PyTorch or JAX loss computes in for ``x``: float64 for float64
    inputs, else float32."""
    return np.dtype(np.float64 if np.asarray(x.y_pred).dtype == np.float64 else np.float32)


def _sigmoid_in(z: np.ndarray, dt: np.dtype) -> np.ndarray:
    """``1 / (1 + exp(-z))`` evaluated and rounded in ``dt``."""
    one = dt.type(1)
    with np.errstate(over="ignore"):
        return (one / (one + np.exp(np.negative(z.astype(dt))))).astype(dt)


def _narrow(x: Any) -> np.dtype:
    """The dtype a probability of ``x`` is rounded in: ``y_pred``'s when narrower than
    float32 (float16, bfloat16), else float32."""
    dt = np.asarray(x.y_pred).dtype
    return dt if dt.itemsize < 4 else np.dtype(np.float32)


def _near_one(p: np.ndarray, dtype: Any, ulps: int) -> np.ndarray:
    """Within ``ulps`` units in the last place below 1 of ``dtype`` (2**-11 for float16,
    2**-8 for bfloat16, 2**-24 for float32): where a faithful rounding on another CPU,
    lane or batch size may give exactly 1."""
    below_one = {2: 2.0**-11 if np.dtype(dtype) == np.float16 else 2.0**-8,
                 4: 2.0**-24, 8: 2.0**-53}[np.dtype(dtype).itemsize]
    return np.asarray(p, np.float64) >= 1.0 - ulps * below_one


def _sigmoid_saturates_at(x: Any, params: Mapping[str, Any]) -> np.ndarray:
    """Where ``p_t`` is (or a faithful float32 evaluation may make it) exactly 1, in
    float32 or the narrower input dtype (focal factor ``0**gamma``)."""
    if float(params.get("label_smoothing", 0.0)):
        return np.zeros(np.shape(x.y_pred), bool)  # smoothed labels are never 0 or 1
    y = np.asarray(x.y_true, np.float32)
    p = _in_input_dtype(x, _probabilities32(x, params))
    p_t = np.float32(1) - _one_minus_pt32(y, p)
    return (_one_minus_pt32(y, p) == 0) | (((y == 0) | (y == 1))
                                           & _near_one(p_t, _narrow(x), 4))


def _pt_rounds_to_one_at(x: Any, params: Mapping[str, Any]) -> np.ndarray:
    """Where Keras's ``1 - p_t`` cancels to (or to within rounding of) 0 in float32,
    soft or smoothed labels included: there a fused graph evaluation can land just below
    0."""
    y = _smoothed(np.asarray(x.y_true, np.float32), params)
    return _one_minus_pt32(y, _probabilities32(x, params)) <= 4 * 2.0**-24


def _gamma_not_integer(params: Mapping[str, Any]) -> bool:
    return float(params.get("gamma", 2.0)) % 1.0 != 0.0


def _softmax_saturates_at(x: Any, params: Mapping[str, Any]) -> np.ndarray:
    """Samples whose float32 (or narrower input dtype) softmax reaches, or within
    rounding of, exactly 1.0 somewhere."""
    p32 = _softmax32(x.y_pred)
    return _rows((_in_input_dtype(x, p32) == 1.0) | _near_one(p32, _narrow(x), 4), params)


def _gamma_below_one(params: Mapping[str, Any]) -> bool:
    return float(params.get("gamma", 2.0)) < 1.0


def _smoothing_off_last_axis(params: Mapping[str, Any]) -> bool:
    return bool(params.get("label_smoothing")) and params.get("axis", -1) not in (-1,)


def _axis_differs_from_last_at(x: Any, params: Mapping[str, Any]) -> np.ndarray:
    shape = np.shape(x.y_pred)
    return np.full(shape, shape[params.get("axis", -1)] != shape[-1])


_BFCE = ("keras.losses.BinaryFocalCrossentropy", "keras.losses.binary_focal_crossentropy")
_CCE = ("keras.losses.CategoricalCrossentropy", "keras.losses.categorical_crossentropy")
_CFCE = ("keras.losses.CategoricalFocalCrossentropy",
         "keras.losses.categorical_focal_crossentropy")
_NOTES_FOCAL = ("notes.FocalLoss", "notes.focal_loss", "notes.SparseFocalLoss",
                "notes.sparse_focal_loss")

BFCE_NAN = KnownDeviation(
    id="keras-binary-focal-nan-grad",
    checks=("gradient", "graph", "xla"),
    summary="binary_focal_crossentropy with gamma < 1 (gamma = 0 included) has a NaN "
            "gradient where p_t == 1 exactly: tf.pow's gradient gamma * 0**(gamma - 1) is "
            "inf (gamma > 0) or 0 * inf (gamma = 0), and the chain multiplies it by 0.",
    reproducer="keras.losses.binary_focal_crossentropy([[1.]], p, gamma=0.5) with "
               "p = tf.Variable([[1.]]): tape.gradient(loss, p) == [[nan]]",
    applies=_gamma_below_one,
    at=_sigmoid_saturates_at,
    implementations=_BFCE,
)
BFCE_GRAPH_NAN = KnownDeviation(
    id="keras-binary-focal-graph-nan",
    checks=("graph", "xla"),
    summary="binary_focal_crossentropy forms 1 - p_t by cancellation, p_t = y p + (1 - y)"
            "(1 - p). Where that is 0 in eager float32, a tf.function (fused evaluation) "
            "can make it slightly negative (-6e-24), and (1 - p_t)**gamma is NaN for a "
            "non-integer gamma: graph NaN, eager and XLA 0. Computing a = y(1 - p) + "
            "(1 - y)p directly, or clamping at 0, avoids it.",
    reproducer="tf.function(lambda y, p: keras.losses.binary_focal_crossentropy(y, p, "
               "gamma=3.5))([[2.220446e-16]], [[2.736202e-08]]) == [nan]; eagerly [0.]",
    applies=_gamma_not_integer,
    at=_pt_rounds_to_one_at,
    implementations=_BFCE,
)
NOTES_FOCAL_NAN = KnownDeviation(
    id="notes-focal-nan-grad",
    checks=("gradient", "graph", "xla"),
    summary="the notes' focal loss clips to [eps, 1.0]; where the float32 softmax is "
            "exactly 1.0 and gamma < 1, (1 - p)**gamma has gradient 0**(gamma - 1) = inf, "
            "times log(1) = 0 gives NaN (the true limit is 0).",
    reproducer="focal_loss(gamma=0.5)([[1., 0.]], z) with z = tf.Variable([[20., 0.]]): "
               "gradient [[nan, nan]]",
    applies=_gamma_below_one,
    at=_softmax_saturates_at,
    implementations=_NOTES_FOCAL,
)
SMOOTHING_AXIS = KnownDeviation(
    id="keras-label-smoothing-axis",
    checks=("value", "gradient", "graph", "xla"),
    summary="categorical label smoothing takes the class count from the last axis "
            "(ops.shape(y_true)[-1]) whatever `axis` says; the documentation's ls / C uses "
            "the class axis.",
    reproducer="keras.losses.categorical_crossentropy(y, p, label_smoothing=0.1, axis=0) "
               "with y, p of shape (3, 2): smoothing uses C = 2 instead of 3",
    applies=_smoothing_off_last_axis,
    at=_axis_differs_from_last_at,
    implementations=_CCE,
    symptom="error",
)


def _from_logits(params: Mapping[str, Any]) -> bool:
    return bool(params.get("from_logits"))


def _labels_not_normalised_at(x: Any, params: Mapping[str, Any]) -> np.ndarray:
    """Samples whose labels do not sum to exactly 1 (in float64)."""
    y = np.asarray(x.y_true, np.float64)
    axis = params.get("axis", -1)
    return np.broadcast_to(y.sum(axis=axis, keepdims=True) != 1.0, y.shape)


SOFTMAX_XENT_GRAD = KnownDeviation(
    id="tf-softmax-xent-grad-unnormalised-labels",
    checks=("gradient", "graph", "xla"),
    summary="categorical_crossentropy(from_logits=True) calls "
            "tf.nn.softmax_cross_entropy_with_logits, whose gradient is softmax(z) - y: "
            "exact only when each row of y sums to 1. The derivative of -sum(y log "
            "softmax(z)) is softmax(z) * sum(y) - y, so multi-hot or unnormalised soft "
            "labels get a wrong gradient (the value is right). TensorFlow's documentation "
            "requires rows of labels to be distributions; Keras neither says nor checks it.",
    reproducer="keras.losses.categorical_crossentropy([[1., 1.]], z, from_logits=True) "
               "with z = tf.Variable([[0., 0.]]): gradient [[-0.5, -0.5]], exact [[0., 0.]]; "
               "float32-rounded soft labels such as [[0.33333334, 0.6666667]] (sum "
               "1 + 3e-8) show it as a float64 gradient error of 1.5e-8",
    applies=_from_logits,
    at=_labels_not_normalised_at,
    implementations=_CCE,
    symptom="error",
)


def _probabilities(params: Mapping[str, Any]) -> bool:
    return not params.get("from_logits")


def _near_half_precision_clip(p: np.ndarray) -> np.ndarray:
    """Within two units in the last place below 1 of the half-precision dtype (a
    faithful softmax may round there up to 1.0, where ``1 - 1e-7`` is 1.0 too), or below
    2**-14."""
    p = np.asarray(p)
    return _near_one(p, p.dtype, 2) | (p.astype(np.float64) <= 2.0**-14)


def _low_precision_near_clip_at(x: Any, params: Mapping[str, Any]) -> np.ndarray:
    """Samples with float16/bfloat16 probabilities at 1 (where 1 - 1e-7 rounds to 1) or
    below 2**-14 (where 1 / p overflows float16)."""
    p = np.asarray(x.y_pred)
    if p.dtype.itemsize != 2:
        return np.zeros(p.shape, bool)
    return _rows(_near_half_precision_clip(p), params)


_KERAS_CLIPPED = ("keras.losses.BinaryCrossentropy", "keras.losses.binary_crossentropy",
                  *_CCE, "keras.losses.SparseCategoricalCrossentropy",
                  "keras.losses.sparse_categorical_crossentropy", *_BFCE, *_CFCE)

LOW_PRECISION_CLIP = KnownDeviation(
    id="keras-epsilon-below-half-precision",
    checks=("value", "gradient", "graph", "xla"),
    summary="Keras clips probabilities to [1e-7, 1 - 1e-7] in y_pred's dtype; in float16 "
            "and bfloat16, 1 - 1e-7 rounds to 1.0, so log(1 - p) is -inf at p = 1 (inf or "
            "NaN gradients), and gradients through 1 / p overflow float16 for p < 2**-14. The "
            "clip does not protect half-precision inputs; Keras's mixed-precision policy "
            "computes losses in float32 (the Loss classes do), which is the supported path.",
    reproducer="keras.losses.binary_crossentropy(y, p) with y = [[0.]], "
               "p = tf.Variable([[1.]], dtype=tf.float16): loss inf, gradient inf",
    applies=_probabilities,
    at=_low_precision_near_clip_at,
    implementations=_KERAS_CLIPPED,
    symptom="error",
)


def _always(params: Mapping[str, Any]) -> bool:
    return True


def _low_precision_near_clip_after_softmax_at(x: Any, params: Mapping[str, Any]
                                              ) -> np.ndarray:
    """As :func:`_low_precision_near_clip_at`, on ``softmax(y_pred)`` when
    ``from_logits`` (Keras's categorical focal loss applies softmax, then the same
    clip)."""
    if not params.get("from_logits"):
        return _low_precision_near_clip_at(x, params)
    z = np.asarray(x.y_pred)
    if z.dtype.itemsize != 2:
        return np.zeros(z.shape, bool)
    return _rows(_near_half_precision_clip(_softmax32(z).astype(z.dtype)), params)


LOW_PRECISION_CLIP_SOFTMAX = dataclasses.replace(
    LOW_PRECISION_CLIP, applies=_always, at=_low_precision_near_clip_after_softmax_at)


def _half_softmax_saturates_at(x: Any, params: Mapping[str, Any]) -> np.ndarray:
    """Samples whose ``softmax(y_pred)`` reaches exactly 1.0 when, as XLA evaluates it,
    the sum of exponentials is rounded to the half-precision input dtype before the
    division."""
    z = np.asarray(x.y_pred)
    if z.dtype.itemsize != 2 or not params.get("from_logits"):
        return np.zeros(z.shape, bool)
    z32 = z.astype(np.float32)
    e = np.exp(z32 - z32.max(axis=-1, keepdims=True))
    total = _in_input_dtype(x, e.sum(axis=-1, keepdims=True))
    return _rows(_in_input_dtype(x, _in_input_dtype(x, e) / total) == 1.0, params)


XLA_HALF_SOFTMAX = KnownDeviation(
    id="xla-half-precision-softmax-saturates",
    checks=("xla",),
    summary="XLA evaluates softmax in bfloat16 with the sum of exponentials rounded to "
            "bfloat16, so softmax([8, 0, ..., 0]) over 9 classes is exactly 1.0 under XLA "
            "(the correctly rounded 0.99732 is 0.99609). With gamma < 1, Keras's focal "
            "factor (1 - p)**gamma then has an infinite derivative at the clip, which "
            "1 - 1e-7 cannot keep below 1 in half precision: XLA gives a NaN gradient "
            "where eager and graph are finite (on CPUs where TensorFlow's own bfloat16 "
            "softmax kernel rounds to 0.99609; some round to 1.0 too).",
    reproducer="tf.function(tf.nn.softmax, jit_compile=True)(tf.constant([[8.] + [0.] * 8], "
               "tf.bfloat16))[0, 0] is 1.0",
    applies=_gamma_below_one,
    at=_half_softmax_saturates_at,
    implementations=_CFCE,
)


def _f16_small_row_sum_at(x: Any, params: Mapping[str, Any]) -> np.ndarray:
    """Samples of float16 probabilities with a sum below 2**-7, whose square is a
    float16 subnormal (below 2**-14)."""
    p = np.asarray(x.y_pred)
    if p.dtype != np.float16:
        return np.zeros(p.shape, bool)
    axis = params.get("axis", -1)
    sums = p.astype(np.float32).sum(axis=axis, keepdims=True)
    return np.broadcast_to(sums < 2.0**-7, p.shape)


XLA_F16_DIVISION_GRAD = KnownDeviation(
    id="xla-float16-division-gradient-underflow",
    checks=("xla",),
    summary="Keras renormalises probabilities, p / s with s = sum(p); TensorFlow's gradient "
            "of a division is (a / s) / s. Under XLA in float16 it comes out as a / (s * s): "
            "s * s is a float16 subnormal for s < 2**-7, and the gradient loses digits (3% "
            "at s = 9e-4). Eager and graph keep it within the reference budget.",
    reproducer="tf.function(lambda a, s: (a / s) / s, jit_compile=True)(tf.constant(1e-4, "
               "tf.float16), tf.constant(9.0015e-4, tf.float16)) gives 119.9; without "
               "jit_compile 123.4 (exact 123.40)",
    applies=_probabilities,
    at=_f16_small_row_sum_at,
    implementations=(*_CCE, *_CFCE),
    symptom="error",
)


def _f16_row_sum_overflows_at(x: Any, params: Mapping[str, Any]) -> np.ndarray:
    """Samples of float16 inputs whose sum of squared differences exceeds float16's
    max."""
    p = np.asarray(x.y_pred)
    if p.dtype != np.float16:
        return np.zeros(p.shape, bool)
    d = p.astype(np.float64) - np.asarray(x.y_true, np.float64)
    return np.broadcast_to((d * d).sum(axis=-1, keepdims=True) > float(np.finfo(np.float16).max),
                           p.shape)


REDUCE_MEAN_F16 = KnownDeviation(
    id="tf-reduce-mean-float16-accumulates-in-float16",
    checks=("value", "gradient", "graph", "xla"),
    summary="tf.reduce_mean on float16 accumulates in float16 on CPU: the notes' MSE "
            "(tf.reduce_mean(tf.square(y_pred - y_true), -1)) overflows to inf once a row's "
            "sum of squares passes 65504, though the mean is representable. Keras's "
            "mean_squared_error (keras.ops.mean computes float16 in float32) and XLA "
            "(which accumulates in float32) give the finite mean.",
    reproducer="tf.reduce_mean(tf.square(tf.constant([[105.] * 6], tf.float16)), -1) == "
               "[inf]; keras.ops.mean of the same == [11025.]",
    applies=_always,
    at=_f16_row_sum_overflows_at,
    implementations=("notes.MeanSquaredError", "notes.mean_squared_error"),
    symptom="error",
)



# ------------------------------------------------------------- margin family (cosine)

_COSINE = ("keras.losses.CosineSimilarity", "keras.losses.cosine_similarity")


def _row_norms(x: Any, params: Mapping[str, Any], of: str = "y_pred") -> np.ndarray:
    """``||y_pred||`` (or ``||y_true||``) along the class axis, in float64, broadcast
    over the row."""
    p = np.asarray(getattr(x, of), np.float64)
    axis = params.get("axis", -1)
    return np.broadcast_to(np.sqrt(np.sum(p * p, axis=axis, keepdims=True)), p.shape)


def _rsqrt_cubed_leaves_range_at(x: Any, params: Mapping[str, Any]) -> np.ndarray:
    """Rows whose ``rsqrt(sum(p**2))**3`` overflows or underflows in float32 (a Loss
    class computes in float32) or in ``y_pred``'s own dtype (the function), with a
    factor 2 of margin: norms below ``max**(-1/3)`` (a zero row included) or above
    ``tiny**(-1/3)``."""
    norm = _row_norms(x, params)
    out = np.zeros(norm.shape, bool)
    dt = np.asarray(x.y_pred).dtype
    for d in {np.dtype(np.float32), dt if dt.kind == "f" else np.dtype(np.float32)}:
        info = np.finfo(d)
        out |= norm < 2.0 * float(info.max) ** (-1 / 3)
        out |= norm > 0.5 * float(info.tiny) ** (-1 / 3)
    return out


XLA_RSQRT_GRAD = KnownDeviation(
    id="xla-rsqrt-gradient-cubed",
    checks=("xla",),
    summary="XLA lowers TensorFlow's RsqrtGrad(y, dy) as y**3 * dy / -2. Keras normalises "
            "with x * min(rsqrt(sum(x**2)), 1e7); below the norm floor 1e-7 the gradient "
            "reaching rsqrt is dy = 0, and where y**3 overflows (a zero row always; float32 "
            "norms below ~1.4e-13) the product is 0 * inf = NaN. Where y**3 underflows "
            "(float32 norms above ~4.4e12) the radial part of the gradient is lost. Eager "
            "and graph compute (dy y)(y y) / -2 and give the reference's -1e7 t_hat and the "
            "right gradient.",
    reproducer="tf.function(g, jit_compile=True) with g(t, p) the tape gradient of "
               "keras.losses.cosine_similarity(t, p): t = [[3., 4.]], p = [[0., 0.]] gives "
               "[[nan, nan]] (eager [[-6e6, -8e6]]); p = [[3e13, -1e13]] with t = [[1., 2.]] "
               "gives [[-1.41e-14, -2.83e-14]], exact [[-9.9e-15, -2.97e-14]]",
    applies=_always,
    at=_rsqrt_cubed_leaves_range_at,
    implementations=_COSINE,
    symptom="error",
)


def _float16_sum_of_squares_out_of_range_at(x: Any, params: Mapping[str, Any]
                                            ) -> np.ndarray:
    """float16 rows (of y_pred, or of y_true, which the function normalises in float16
    too) whose sum of squares overflows float16 (above 65504), or falls below its
    smallest normal 2**-14 (subnormal or 0), where 1 / sum overflows too; a factor 2 of
    margin for the rounding of the float16 sum."""
    p = np.asarray(x.y_pred)
    if p.dtype != np.float16:
        return np.zeros(p.shape, bool)
    out = np.zeros(p.shape, bool)
    for of in ("y_pred", "y_true"):
        s = _row_norms(x, params, of) ** 2
        out |= (s > 0.5 * float(np.finfo(np.float16).max)) | (s < 2.0 * 2.0**-14)
    return out


KERAS_NORMALIZE_F16 = KnownDeviation(
    id="keras-normalize-float16-range",
    checks=("value", "gradient", "graph", "xla"),
    summary="keras.ops.normalize squares and sums in the input dtype: in float16 the sum of "
            "squares (of y_pred or y_true) overflows for norms above 256 (the loss is 0 "
            "instead of the cosine), is "
            "subnormal or 0 for norms below 2**-7 (a wrong value, NaN at 0 * inf: the floor "
            "1 / 1e-7 is inf in float16), and the gradient through rsqrt overflows for "
            "norms below ~4e-3. The Loss class computes in float32 and is unaffected.",
    reproducer="keras.losses.cosine_similarity(tf.constant([[1., 2.]], tf.float16), "
               "tf.constant([[300., -100.]], tf.float16)) == [0.] (exact -0.1414); with "
               "y_pred [[3e-6, -1e-6]] it is [nan]",
    applies=_always,
    at=_float16_sum_of_squares_out_of_range_at,
    implementations=("keras.losses.cosine_similarity",),
    symptom="error",
)


# ------------------------------------------------------------------ regression losses


def _float64_log_cosh_offset_at(x: Any, params: Mapping[str, Any]) -> np.ndarray:
    """float64 elements whose error |y_pred - y_true| < 2**20: there the float64 budget
    (about 4 u (n + 1) (4 |x| + 1.4)) is below the 1.9e-9 offset."""
    p = np.asarray(x.y_pred)
    if p.dtype != np.float64:
        return np.zeros(p.shape, bool)
    return np.abs(p - np.asarray(x.y_true, np.float64)) < 2.0**20


LOG_COSH_FLOAT32_LOG2 = KnownDeviation(
    id="keras-log-cosh-float32-log2",
    checks=("value", "graph", "xla"),
    summary="keras.losses.log_cosh computes x + softplus(-2x) - log2 with log2 = "
            "convert_to_tensor(ops.log(2.0), dtype): ops.log(2.0) is evaluated in float32 "
            "and then cast, so in float64 every element is off by log(2) - float32(log(2)) "
            "= -1.9e-9 (the loss of a perfect prediction is negative). float32 and float16 "
            "are unaffected; the gradient is exact.",
    reproducer="keras.losses.log_cosh(np.zeros((1, 1)), np.zeros((1, 1))) == "
               "[-1.90465432e-09] (float64; exact 0)",
    applies=_always,
    at=_float64_log_cosh_offset_at,
    implementations=("keras.losses.LogCosh", "keras.losses.log_cosh"),
    symptom="error",
)


# ------------------------------------------------------------ probabilistic family

#: float16's reciprocal overflows (to inf) for arguments below 1 / 65520; with a margin
#: for the rounding of the argument itself.
_F16_RECIPROCAL_OVERFLOWS_BELOW = 1.6e-5


def _float16_only(x: Any) -> np.ndarray | None:
    """``y_pred`` when it is float16 (the function form computes in it), else None."""
    p = np.asarray(x.y_pred)
    return p if p.dtype == np.float16 else None


def _kl_ratio_overflows_f16_at(x: Any, params: Mapping[str, Any]) -> np.ndarray:
    """Elements of float16 inputs where an intermediate of TensorFlow's gradient of
    ``log(y / p)`` overflows: ``1 / r`` for ``r = clip(y) / clip(p)`` below 1 / 65504
    (the log), or ``y / p / p`` above 65504 (the division), Keras's eps in float16."""
    p = _float16_only(x)
    if p is None:
        return np.zeros(np.shape(x.y_pred), bool)
    eps, one = np.float16(1e-7), np.float16(1)
    y = np.clip(np.asarray(x.y_true).astype(np.float16), eps, one).astype(np.float64)
    pc = np.clip(p, eps, one).astype(np.float64)
    r = y / pc
    big = float(np.finfo(np.float16).max) * (1 - 2.0**-9)  # rounding of y / p on the way
    return np.asarray((r < _F16_RECIPROCAL_OVERFLOWS_BELOW) | (r / pc > big))


def _poisson_shift_overflows_f16_at(x: Any, params: Mapping[str, Any]) -> np.ndarray:
    """Elements of float16 inputs whose ``y_pred + eps`` (in float16) is below 1 / 65504:
    the log's gradient 1 / (p + eps) overflows there."""
    p = _float16_only(x)
    if p is None:
        return np.zeros(np.shape(x.y_pred), bool)
    with np.errstate(invalid="ignore"):
        s = (p + np.float16(1e-7)).astype(np.float16)
        return np.asarray(np.abs(s.astype(np.float64)) < _F16_RECIPROCAL_OVERFLOWS_BELOW)


KL_F16_GRAD_OVERFLOW = KnownDeviation(
    id="keras-kl-divergence-float16-gradient-overflow",
    checks=("gradient", "graph", "xla"),
    summary="kl_divergence computes y * log(y / p); TensorFlow's gradient goes through "
            "1 / r for the log (r = y / p) and -y / p / p for the division. In float16 either "
            "overflows long before the gradient -y / p does: a zero label (clipped to eps = "
            "1.19e-7) against p > 0.008 makes r < 1 / 65504, and y / p**2 > 65504 for, say, "
            "y = 1, p < 0.0039. The gradient comes out -inf where it is finite (-2.4e-7, "
            "-257), eagerly, in graph and under XLA. The KLDivergence class computes in "
            "float32 and is not affected.",
    reproducer="keras.losses.kl_divergence([[0., 1.]], p) with p = tf.Variable([[.5, .5]], "
               "dtype=tf.float16): gradient [[-inf, -2.]], exact [[-2.4e-07, -2.]]; "
               "kl_divergence([[1., 0.]], p) with p = [[0.00389, 0.99611]] (float16): "
               "gradient [[-inf, ...]], exact -257",
    applies=_always,
    at=_kl_ratio_overflows_f16_at,
    implementations=("keras.losses.kl_divergence",),
)
def _kl_f16_square_subnormal_at(x: Any, params: Mapping[str, Any]) -> np.ndarray:
    """Elements of float16 inputs whose clipped ``y_pred`` is below 2**-7: its square is
    a float16 subnormal (below 2**-14)."""
    p = _float16_only(x)
    if p is None:
        return np.zeros(np.shape(x.y_pred), bool)
    pc = np.clip(p, np.float16(1e-7), np.float16(1)).astype(np.float64)
    return np.asarray(pc < 2.0**-7)


XLA_F16_KL_DIVISION_GRAD = KnownDeviation(
    id="xla-float16-kl-division-gradient-underflow",
    checks=("xla",),
    summary="kl_divergence computes y * log(y / p); TensorFlow's gradient of the division "
            "is -(y / p) / p, which under XLA in float16 comes out as -y / (p * p) (as in "
            "xla-float16-division-gradient-underflow): p * p is a float16 subnormal for "
            "p < 2**-7, and the gradient loses digits (15% at p = 3.2e-4). Eager and graph "
            "are within the budget. Found by the 4-dtype main job.",
    reproducer="the XLA tape gradient of keras.losses.kl_divergence([[0.000488]], p) at "
               "p = [[0.000319]] (float16) is -1.306; without jit_compile -1.528 (exact "
               "-1.5299)",
    applies=_always,
    at=_kl_f16_square_subnormal_at,
    implementations=("keras.losses.kl_divergence",),
    symptom="error",
)
POISSON_F16_GRAD_OVERFLOW = KnownDeviation(
    id="keras-poisson-float16-gradient-overflow",
    checks=("gradient", "graph", "xla"),
    summary="poisson computes y_pred - y_true * log(y_pred + eps); the log's gradient is "
            "1 / (p + eps), which overflows float16 for p + eps < 1 / 65504 (eps is 1.19e-7 "
            "there, so for every p below 1.5e-5): the gradient 1 - y / (p + eps) comes out "
            "NaN for y = 0 (0 * inf) and -inf for y > 0, where the exact gradient is finite "
            "(and representable for y below about p + eps times 65504), eagerly, in graph "
            "and under XLA. The Poisson class computes in "
            "float32 and is not affected.",
    reproducer="keras.losses.poisson([[0., 1e-3]], p) with p = tf.Variable([[0., 0.]], "
               "dtype=tf.float16): gradient [[nan, -inf]], exact [[0.5, -4.2e3]]",
    applies=_always,
    at=_poisson_shift_overflows_f16_at,
    implementations=("keras.losses.poisson",),
)


# --------------------------------------------------------------------------- CTC

_CTC = ("keras.losses.CTC", "keras.losses.ctc")

#: TensorFlow's dense CTC takes log(1e-307), computed in float64 and cast to float32, as
#: "log 0" for the final states of its forward-backward
_TF_CTC_LOG_ZERO = float(np.float32(np.log(1e-307)))
#: losses above this are pulled towards -_TF_CTC_LOG_ZERO = 706.89 (the spurious paths'
#: weight exp(loss + _TF_CTC_LOG_ZERO) times up to 2 (L + 1) end states reaches float32's
#: budget about 20 below the cap; 30 of margin)
_TF_CTC_CAPPED_ABOVE = -_TF_CTC_LOG_ZERO - 30.0


def _ctc_samples(x: Any, per_sample: np.ndarray) -> np.ndarray:
    """``per_sample`` (batch,) spread over every element of y_pred (batch, time, classes)."""
    shape = np.shape(x.y_pred)
    return np.broadcast_to(np.asarray(per_sample, bool).reshape((-1,) + (1,) * (len(shape) - 1)),
                           shape)


def _ctc_zero_before_a_label_at(x: Any, params: Mapping[str, Any]) -> np.ndarray:
    """Samples whose label row has a 0 before its last nonzero entry."""
    labels = np.asarray(x.y_true)
    if labels.ndim != 2 or labels.shape[1] == 0:
        return np.zeros(np.shape(x.y_pred), bool)
    nonzero = labels != 0
    last = labels.shape[1] - 1 - np.argmax(nonzero[:, ::-1], axis=1)
    before = np.arange(labels.shape[1])[None, :] < last[:, None]
    return _ctc_samples(x, (before & ~nonzero).any(axis=1) & nonzero.any(axis=1))


def _ctc_beyond_log_zero_at(x: Any, params: Mapping[str, Any]) -> np.ndarray:
    """Samples whose loss (the reference's, in float64) is infinite (no alignment fits)
    or above _TF_CTC_CAPPED_ABOVE."""
    from lossverify.reference.ctc import _eval_ctc

    try:
        value = _eval_ctc(x.y_true, np.asarray(x.y_pred, np.float64)).value
    except (TypeError, ValueError):
        return np.zeros(np.shape(x.y_pred), bool)
    return _ctc_samples(x, ~(value <= _TF_CTC_CAPPED_ABOVE))


def _ctc_empty_label_axis_at(x: Any, params: Mapping[str, Any]) -> np.ndarray:
    """Every element when y_true has no label columns, shape (batch, 0)."""
    labels = np.asarray(x.y_true)
    empty = labels.ndim == 2 and labels.shape[1] == 0
    return np.full(np.shape(x.y_pred), empty)


def _float64_input_at(x: Any, params: Mapping[str, Any]) -> np.ndarray:
    return np.full(np.shape(x.y_pred), np.asarray(x.y_pred).dtype == np.float64)


CTC_LABEL_PREFIX = KnownDeviation(
    id="tf-ctc-reads-label-prefix",
    checks=("value", "gradient", "graph", "xla"),
    summary="keras.losses.ctc passes label_length = the number of nonzero labels (0 is the "
            "mask, as documented) but tf.nn.ctc_loss reads that many labels from the front "
            "of each row: a 0 before the last label is scored as a label whose class is the "
            "blank, and the last labels are dropped. Its gradient then is not even the "
            "derivative of its own value (the 0 label's occupancy reaches no class: the "
            "frames' gradients no longer sum to 0). Trailing padding is unaffected.",
    reproducer="z = [[[.5, -.2, .1], [0., .3, -.4], [.2, .2, .2], [-.1, .4, 0.]]] (float32): "
               "keras.losses.ctc([[0, 2]], z) == [1.997437] (the label [2]: 2.30432); "
               "d/dz[0, 0, 0] is -0.1385 from the tape, -0.5385 by differences of the value",
    applies=_always,
    at=_ctc_zero_before_a_label_at,
    implementations=_CTC,
    symptom="error",
)
CTC_LOG_ZERO_CAP = KnownDeviation(
    id="tf-ctc-log-zero-cap",
    checks=("value", "gradient", "graph", "xla"),
    summary="tf.nn.ctc_loss (dense labels) takes log(1e-307) = -706.89 as log 0 for the "
            "non-final states, so a label that no alignment fits (longer than the frames "
            "allow with a blank between equal labels) costs about 707 plus the best "
            "non-final path, not inf, with a finite gradient; and every loss above ~690 is "
            "pulled towards 706.89 (value and gradient wrong).",
    reproducer="keras.losses.ctc([[1, 1, 1]], np.zeros((1, 4, 3), np.float32)) == [709.07] "
               "(no alignment: inf); 10 frames of logits [800, 0, 0] with the label [1]: "
               "[706.8936], exact 800 - log(10) = 797.70, gradient ~1e-6 instead of "
               "softmax - posterior",
    applies=_always,
    at=_ctc_beyond_log_zero_at,
    implementations=_CTC,
    symptom="error",
)
CTC_EMPTY_LABEL_AXIS = KnownDeviation(
    id="tf-ctc-empty-label-axis",
    checks=("value", "graph", "xla"),
    summary="With y_true of shape (batch, 0) tf.nn.ctc_loss's transition matrix gets the "
            "start -> blank transition twice (its 'start to first label' and 'label 0 to "
            "blank 0' entries coincide and scatter_nd adds them): p doubles and the loss is "
            "log 2 too small (negative with one class). The gradient is right; one column "
            "of zeros gives the right value.",
    reproducer="keras.losses.ctc(np.zeros((1, 0), np.int32), np.zeros((1, 3, 2), "
               "np.float32)) == [1.386294] (3 log 2 = 2.079442, as with np.zeros((1, 1)))",
    applies=_always,
    at=_ctc_empty_label_axis_at,
    implementations=_CTC,
    symptom="error",
)
CTC_FLOAT64_IN_FLOAT32 = KnownDeviation(
    id="keras-ctc-float64-computed-in-float32",
    checks=("value", "gradient", "graph", "xla"),
    summary="keras.losses.ctc casts float64 logits to float32 (tf.nn.ctc_loss refuses "
            "float64), computes in float32 and casts the loss back: a float64 call has "
            "float32 accuracy (errors ~1e-7 relative, against a float64 budget of ~1e-15). "
            "The CTC class computes in its float32 dtype anyway.",
    reproducer="z = np.random.default_rng(0).normal(size=(1, 5, 3)) (float64): "
               "keras.losses.ctc([[1]], z) == [3.30373764] (float64, exact 3.30373768), "
               "the float32 result [3.3037376] cast back",
    applies=_always,
    at=_float64_input_at,
    implementations=("keras.losses.ctc",),
    symptom="error",
)


# ------------------------------------------------------- the matrix's other frameworks


def _gamma_strictly_between_zero_and_one(params: Mapping[str, Any]) -> bool:
    return 0.0 < float(params.get("gamma", 2.0)) < 1.0


def _sigmoid_saturates_in_its_dtype_at(x: Any, params: Mapping[str, Any]) -> np.ndarray:
    """Where ``p_t`` is (or within 4 units in the last place is) exactly 1 in the dtype
    the loss computes in: float64 for float64 inputs (``sigmoid(z)`` reaches 1 for ``z``
    beyond about 37 there), else as :func:`_sigmoid_saturates_at` (float32, about 17)."""
    if np.asarray(x.y_pred).dtype != np.float64:
        return _sigmoid_saturates_at(x, params)
    y = np.asarray(x.y_true, np.float64)
    z = np.asarray(x.y_pred, np.float64)
    with np.errstate(over="ignore"):
        p = 1.0 / (1.0 + np.exp(-z))
    p_t = y * p + (1.0 - y) * (1.0 - p)
    return ((y == 0) | (y == 1)) & _near_one(p_t, np.float64, 4)


TORCHVISION_FOCAL_NAN_GRAD = KnownDeviation(
    id="torchvision-focal-nan-grad",
    checks=("gradient", "graph"),
    summary="torchvision.ops.sigmoid_focal_loss forms p_t = p y + (1 - p)(1 - y) from "
            "p = sigmoid(z) and weights by (1 - p_t)**gamma. Where the sigmoid rounds to "
            "exactly 1 (y = 1, z beyond about 17 in float32) and 0 < gamma < 1, the power's "
            "gradient gamma * 0**(gamma - 1) is inf, and the chain multiplies it by "
            "dp/dz = 0: a NaN gradient where the exact one is tiny (the value is right). "
            "optax.sigmoid_focal_loss, which forms log(1 - p_t) with logsumexp, does not "
            "show it.",
    reproducer="z = torch.tensor([[21.]], requires_grad=True); torchvision.ops."
               "sigmoid_focal_loss(z, torch.tensor([[1.]]), gamma=0.5, reduction='none')"
               ".sum().backward(); z.grad == [[nan]] (exact -7.8e-15)",
    applies=_gamma_strictly_between_zero_and_one,
    at=_sigmoid_saturates_in_its_dtype_at,
    implementations=("torchvision.ops.sigmoid_focal_loss",),
    frameworks=("torch",),
)


def _any_setting(params: Mapping[str, Any]) -> bool:
    return True


def _torchvision_one_minus_pt_inexact_at(x: Any, params: Mapping[str, Any]) -> np.ndarray:
    """Where torchvision's ``1 - p_t``, formed as it forms it in the input's dtype
    (``p = sigmoid(z)``, ``p_t = p y + (1 - p)(1 - y)``, then ``1 - p_t``), is more than
    4 units in the last place of that dtype off the exact ``y sigmoid(-z) + (1 - y)
    sigmoid(z)`` (computed without cancellation, in a wider type)."""
    dt = _framework_dtype(x)
    wide = np.longdouble if dt == np.float64 else np.float64
    z: np.ndarray = np.asarray(x.y_pred).astype(dt)
    y: np.ndarray = np.asarray(x.y_true).astype(dt)
    one = dt.type(1)
    p = _sigmoid_in(z, dt)
    with np.errstate(over="ignore"):
        zw, yw = z.astype(wide), y.astype(wide)
        exact = yw / (1 + np.exp(zw)) + (1 - yw) / (1 + np.exp(np.negative(zw)))
    formed = (one - (p * y + (one - p) * (one - y))).astype(wide)
    with np.errstate(divide="ignore", invalid="ignore"):
        off = np.abs(formed - exact) > 4 * np.finfo(dt).eps * np.abs(exact)
    return np.asarray(off, bool)


TORCHVISION_FOCAL_CANCELLATION = KnownDeviation(
    id="torchvision-focal-one-minus-pt-cancellation",
    checks=("value", "gradient", "graph"),
    summary="torchvision.ops.sigmoid_focal_loss forms 1 - p_t by cancellation from a "
            "rounded p = sigmoid(z): where 1 - p_t is small (y = 0 with z well below 0, "
            "y = 1 well above) it keeps only the bits of 1 - p that survived rounding, so "
            "the focal factor (1 - p_t)**gamma and its gradient are off by up to "
            "2**-24 / (1 - p_t) relative in float32: 8e-5 at y = 0, z = -7, 34% at "
            "z = -15 (gamma = 0.5), and 0 (the loss and gradient vanish) below z = -17. Forming "
            "1 - p_t = y sigmoid(-z) + (1 - y) sigmoid(z) directly, or in log space as "
            "optax.sigmoid_focal_loss does, avoids it.",
    reproducer="z = torch.tensor([-7., -15.], requires_grad=True); torchvision.ops."
               "sigmoid_focal_loss(z, torch.zeros(2), alpha=-1, gamma=0.5, "
               "reduction='none').sum().backward(); z.grad == [4.12385e-05, 1.670e-10], "
               "exact [4.124198e-05, 2.538e-10]",
    applies=_any_setting,
    at=_torchvision_one_minus_pt_inexact_at,
    implementations=("torchvision.ops.sigmoid_focal_loss",),
    symptom="error",
    frameworks=("torch",),
)


def _norm_below_floor_at(x: Any, params: Mapping[str, Any]) -> np.ndarray:
    """Every element of a sample whose ``y_pred`` norm over the last axis is below the
    floor 1e-7 or within 4 units in the last place of it (float32, or the input's
    dtype if wider): where the norm is clamped."""
    dt = _framework_dtype(x)
    p = np.asarray(x.y_pred, np.float64)
    norm = np.sqrt(np.sum(p * p, axis=-1, keepdims=True))
    floor = 1e-7 * (1 + 4 * np.finfo(dt).eps)
    return np.broadcast_to(norm <= floor, p.shape)


TORCH_COSINE_CLAMPED_GRAD = KnownDeviation(
    id="torch-cosine-similarity-clamped-norm-gradient",
    checks=("gradient", "graph"),
    summary="torch.nn.functional.cosine_similarity clamps each norm at eps in place "
            "without autograd (at::NoGradGuard): below eps its value is x1 . x2 / (eps "
            "||x2||), as documented, but its gradient is that of x1 / ||x1|| with the "
            "clamped denominator, not the derivative of its value: off by up to the whole "
            "gradient where ||y_pred|| < eps.",
    reproducer="x = torch.tensor([[3e-8, 4e-8]], requires_grad=True); F.cosine_similarity("
               "x, torch.tensor([[1., 0.]]), eps=1e-7).sum().backward(); x.grad == "
               "[[8.2e6, -2.4e6]], the derivative of the value 0.3 (= 3e-8 / 1e-7) is "
               "[[1e7, 0]]",
    applies=_any_setting,
    at=_norm_below_floor_at,
    implementations=("torch.nn.functional.cosine_similarity",),
    symptom="error",
    frameworks=("torch",),
)


# --------------------------------------------- Keras 3 on the JAX and PyTorch backends

_KERAS_BCE = ("keras.losses.BinaryCrossentropy", "keras.losses.binary_crossentropy")
_KERAS_SCCE = ("keras.losses.SparseCategoricalCrossentropy",
               "keras.losses.sparse_categorical_crossentropy")


def _on_a_clip_bound_at(x: Any, params: Mapping[str, Any]) -> np.ndarray:
    """Elements of y_pred exactly on a clip bound (``eps`` or ``1 - eps`` in its dtype,
    the one the JAX and PyTorch backends clip in)."""
    lo, hi = clip_bounds(np.asarray(x.y_pred).dtype)
    p = np.asarray(x.y_pred, np.float64)
    return (p == lo) | (p == hi)


KERAS_CLIP_TIE_GRADIENT = KnownDeviation(
    id="keras-clip-tie-subgradient",
    checks=("gradient", "graph"),
    summary="Keras clips probabilities to [eps, 1 - eps]; at a probability exactly on a "
            "bound the clip has no derivative (0 on one side, 1 on the other) and each "
            "backend picks its own: TensorFlow's clip_by_value passes the gradient (the "
            "reference's choice), jnp.clip (max then min) halves it, torch.clip zeroes it. "
            "Any of them is a subgradient; only the exact ties differ, and the value is "
            "the same.",
    reproducer="KERAS_BACKEND=jax: jax.grad(lambda p: keras.losses.binary_crossentropy("
               "y, p).sum())(p) with y = [[0.]], p = [[1e-7]] (float32) gives [[0.5]], "
               "TensorFlow [[1.0]]; KERAS_BACKEND=torch gives [[0.]]",
    applies=_probabilities,
    at=_on_a_clip_bound_at,
    implementations=(*_KERAS_BCE, *_BFCE),
    symptom="error",
    frameworks=("jax", "torch"),
)


def _clipped_in_either_order_at(x: Any, params: Mapping[str, Any]) -> np.ndarray:
    """Rows where clipping acts (or, within four times a sum's rounding, may act) on
    y_pred or on y_pred / sum(y_pred): elsewhere clip-then-renormalise and
    renormalise-then-clip are the same function."""
    lo, hi = clip_bounds(np.asarray(x.y_pred).dtype)
    axis = params.get("axis", -1)
    p = np.asarray(x.y_pred, np.float64)
    margin = 4.0 * (p.shape[axis] + 2) * 2.0**-24 if p.ndim else 0.0
    with np.errstate(divide="ignore", invalid="ignore"):
        q = p / p.sum(axis=axis, keepdims=True)
    out = np.zeros(p.shape, bool)
    for a in (p, q):
        out |= ~((a >= lo * (1 + margin)) & (a <= hi * (1 - margin)))
    return _rows(out, params)


KERAS_SCCE_NORMALISES_FIRST = KnownDeviation(
    id="keras-sparse-categorical-normalises-before-clip",
    checks=("value", "gradient", "graph"),
    summary="keras.losses.sparse_categorical_crossentropy on probabilities divides y_pred "
            "by its sum and then clips on the JAX and PyTorch backends (as every backend's "
            "categorical_crossentropy does); on TensorFlow (the reference) it clips first "
            "and renormalises after (softmax of log(clip(p))). Where the clip acts in "
            "either order (an element below 1e-7 or above 1 - 1e-7, before or after the "
            "division) the backends give different values and gradients: an element "
            "clipped away on TensorFlow still carries 1 / sum(p) of gradient through the "
            "sum on JAX and PyTorch.",
    reproducer="KERAS_BACKEND=jax (or torch): keras.losses.sparse_categorical_crossentropy("
               "[0], [[1.5, 3.]]) == [1.0986] (-log(1.5 / 4.5)), TensorFlow [0.6931] "
               "(both clipped to 1 - 1e-7); with y_pred [[0.0303, 0.9697, 0.]] the "
               "gradient at the 0 is 1.0, TensorFlow 0",
    applies=_probabilities,
    at=_clipped_in_either_order_at,
    implementations=_KERAS_SCCE,
    symptom="error",
    frameworks=("jax", "torch"),
)


def _rounded_sigmoid_bce_inexact_at(x: Any, params: Mapping[str, Any]) -> np.ndarray:
    """Elements where the cross-entropy terms formed from the rounded, clipped sigmoid
    (``log(clip(p))`` where the label has weight, ``log(1 - clip(p))`` where its
    complement has), as the JAX and PyTorch backends form them in y_pred's dtype, are
    more than 4 units in the last place (of the term, or of 1) off the exact
    ``-softplus(-z)`` and ``-softplus(z)``."""
    dt = _framework_dtype(x)
    z = np.asarray(x.y_pred).astype(dt)
    y = _smoothed(np.asarray(x.y_true, np.float64), params)
    lo, hi = clip_bounds(dt)
    one = dt.type(1)
    p = np.clip(_sigmoid_in(z, dt), lo, hi).astype(dt)
    with np.errstate(divide="ignore"):
        formed_pos = np.log(p.astype(np.float64))
        formed_neg = np.log((one - p).astype(dt).astype(np.float64))
        z64 = z.astype(np.float64)
        exact_pos, exact_neg = -np.logaddexp(0.0, -z64), -np.logaddexp(0.0, z64)
    ulp = 4.0 * float(np.finfo(dt).eps)
    off_pos = np.abs(formed_pos - exact_pos) > ulp * (np.abs(exact_pos) + 1.0)
    off_neg = np.abs(formed_neg - exact_neg) > ulp * (np.abs(exact_neg) + 1.0)
    return np.asarray(((y > 0) & off_pos) | ((y < 1) & off_neg), bool)


KERAS_BFCE_LOGITS_ROUNDED_SIGMOID = KnownDeviation(
    id="keras-binary-focal-from-logits-rounded-sigmoid",
    checks=("value", "gradient", "graph"),
    summary="keras.losses.binary_focal_crossentropy(from_logits=True) takes p = sigmoid(z) "
            "and then the probability cross-entropy, clipped to [1e-7, 1 - 1e-7]. On "
            "TensorFlow (the reference) the backend recovers the logits from the sigmoid "
            "op and computes the exact softplus form; on JAX and PyTorch it does not: "
            "the loss is capped near -log(1e-7) = 16.1 per element where |z| exceeds "
            "about 16 (with a zero gradient there), and where 1 - p is small (y = 0, z "
            "beyond a few) log(1 - p) keeps only the bits of 1 - p that survived rounding.",
    reproducer="KERAS_BACKEND=jax (or torch): keras.losses.binary_focal_crossentropy("
               "[[0.]], [[21.]], from_logits=True, gamma=1.0) == [15.9424] with gradient "
               "[[0.]], TensorFlow [21.0] and [[1.0]]",
    applies=_from_logits,
    at=_rounded_sigmoid_bce_inexact_at,
    implementations=_BFCE,
    symptom="error",
    frameworks=("jax", "torch"),
)

KERAS_NORMALIZE_RSQRT_GRAD = dataclasses.replace(
    XLA_RSQRT_GRAD,
    id="keras-normalize-rsqrt-gradient-jax-torch",
    checks=("gradient", "graph"),
    summary="keras.ops.normalize computes x * min(rsqrt(sum(x**2)), 1e7). On the JAX and "
            "PyTorch backends rsqrt's derivative is formed as rsqrt(s) / s (JAX) or "
            "rsqrt(s)**3 (PyTorch): below the norm floor the gradient reaching it is 0, "
            "and where that derivative overflows (a zero row always; float32 norms below "
            "~1.4e-13) the product is 0 * inf = NaN, where it underflows (norms above "
            "~4.4e12) the radial part is lost. TensorFlow's eager and graph gradients are "
            "right (its XLA has the same flaw: xla-rsqrt-gradient-cubed).",
    reproducer="KERAS_BACKEND=jax (or torch): the gradient of keras.losses."
               "cosine_similarity([[1., 2.]], p) at p = [[0., 0.]] or [[1e-14, 0.]] is "
               "[[nan, nan]]; exact [[-4.47e6, -8.94e6]] (x / 1e-7 below the floor)",
    frameworks=("jax", "torch"),
)
