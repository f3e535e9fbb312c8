"""Records of Keras's cross-entropies and focal cross-entropies."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lossverify import deviations as D
from lossverify.catalogue import counterparts as CP
from lossverify.catalogue import params as P
from lossverify.record import Counterpart, LossRecord, Relation, keras_pair
from lossverify.reference import losses as L

_AXIS_SMOOTHING = ("from_logits", "label_smoothing", "axis")


#: the focal counterparts' settings beyond the default grid's: gamma < 1 (where a
#: saturated sigmoid meets pow's gradient at 0) and class balancing without smoothing
_FOCAL_SETTINGS = ({"from_logits": True, "gamma": 0.5},
                   {"from_logits": True, "apply_class_balancing": True, "alpha": 0.25})


def _no_balancing(params: Mapping[str, Any]) -> bool:
    return not params.get("apply_class_balancing")


RECORDS = (
    LossRecord(
        name="binary_crossentropy",
        evaluator=L._eval_binary_crossentropy,
        inputs="binary",
        implementations=keras_pair("BinaryCrossentropy", "binary_crossentropy"),
        params=(P.from_logits(), P.label_smoothing(), P.axis()),
        default_grid=({}, {"from_logits": True}, {"label_smoothing": 0.2}),
        deviations=(D.LOW_PRECISION_CLIP, D.KERAS_CLIP_TIE_GRADIENT),
        counterparts=(
            Counterpart(
                f"{CP.F}.binary_cross_entropy", "torch", f"{CP.F}:binary_cross_entropy",
                f"{CP.NONE}; {CP.MEAN}; torch clamps each log at -100 where Keras clips p "
                "to [1e-7, 1 - 1e-7] (y=1, p=0: 100, Keras 16.118): compared on p in "
                "[1e-7, 0.9999999], where neither applies",
                when=lambda p: not p.get("from_logits") and not p.get("label_smoothing")
                and CP.last_axis(p),
                loss_params=CP.reduction_none, output={"per_element": "mean"},
                domain={"probabilities": (1e-7, 0.9999999)}),
            Counterpart(
                f"{CP.F}.binary_cross_entropy_with_logits", "torch",
                f"{CP.F}:binary_cross_entropy_with_logits", f"{CP.NONE}; {CP.MEAN}",
                when=CP.unsmoothed_logits, loss_params=CP.reduction_none,
                output={"per_element": "mean"}),
            Counterpart(
                "optax.sigmoid_binary_cross_entropy", "jax",
                "optax:sigmoid_binary_cross_entropy", CP.MEAN, when=CP.unsmoothed_logits,
                output={"per_element": "mean"}),
        ),
        tolerance_notes="float32 clip bound 1 - 1e-7 = 0.99999988; log near 1 adds u.",
    ),
    LossRecord(
        name="categorical_crossentropy",
        evaluator=L._eval_categorical_crossentropy,
        inputs="categorical",
        labels="dense",
        implementations=keras_pair("CategoricalCrossentropy", "categorical_crossentropy"),
        params=(P.from_logits(), P.label_smoothing(), P.axis((-1, 0))),
        default_grid=({}, {"from_logits": True}, {"label_smoothing": 0.1}),
        deviations=(D.SMOOTHING_AXIS, D.SOFTMAX_XENT_GRAD, D.LOW_PRECISION_CLIP,
                    D.XLA_F16_DIVISION_GRAD),
        counterparts=(
            Counterpart(
                f"{CP.F}.cross_entropy", "torch", f"{CP.F}:cross_entropy",
                f"class probabilities as target; {CP.NONE}; label_smoothing as torch's own; "
                "class axis 1 for rank > 2 (channels_first)",
                when=CP.from_logits, settings=({"from_logits": True, "label_smoothing": 0.1},),
                loss_params=lambda p: {"reduction": "none",
                                       "label_smoothing": p.get("label_smoothing", 0.0)},
                layout="channels_first"),
            Counterpart("optax.softmax_cross_entropy", "jax", "optax:softmax_cross_entropy",
                        when=CP.unsmoothed_logits),
        ),
        tolerance_notes="renormalisation p / sum(p) and large-logit logsumexp in the budget.",
    ),
    LossRecord(
        name="sparse_categorical_crossentropy",
        evaluator=L._eval_sparse_categorical_crossentropy,
        inputs="sparse",
        labels="sparse",
        implementations=keras_pair("SparseCategoricalCrossentropy",
                                   "sparse_categorical_crossentropy"),
        params=(P.from_logits(), P.ignore_class(), P.axis()),
        default_grid=({}, {"from_logits": True}, {"ignore_class": 0}),
        relations=(Relation("sparse_matches_dense", "categorical_crossentropy",
                            keep=("from_logits",),
                            when=lambda p: p.get("ignore_class") is None),),
        deviations=(D.LOW_PRECISION_CLIP, D.KERAS_SCCE_NORMALISES_FIRST),
        counterparts=(
            Counterpart(
                f"{CP.F}.cross_entropy (class indices)", "torch", f"{CP.F}:cross_entropy",
                f"class indices as target; {CP.NONE}; ignore_class as ignore_index (-100: "
                "none); class axis 1 for rank > 2 (channels_first)",
                when=CP.from_logits, settings=({"from_logits": True, "ignore_class": 0},),
                loss_params=lambda p: {"reduction": "none", "ignore_index": -100
                                       if p.get("ignore_class") is None
                                       else p["ignore_class"]},
                layout="channels_first"),
            Counterpart("optax.softmax_cross_entropy_with_integer_labels", "jax",
                        "optax:softmax_cross_entropy_with_integer_labels",
                        when=lambda p: CP.from_logits(p) and p.get("ignore_class") is None),
        ),
    ),
    LossRecord(
        name="binary_focal_crossentropy",
        evaluator=L._eval_binary_focal_crossentropy,
        inputs="binary",
        implementations=keras_pair("BinaryFocalCrossentropy", "binary_focal_crossentropy"),
        params=(P.apply_class_balancing(), P.alpha(), P.gamma(), P.from_logits(),
                P.label_smoothing((0.0, 0.1)), P.axis()),
        default_grid=({}, {"from_logits": True, "gamma": 1.0},
                      {"apply_class_balancing": True, "alpha": 0.4, "label_smoothing": 0.1}),
        relations=(
            Relation("focal_not_above_cross_entropy", "binary_crossentropy",
                     keep=_AXIS_SMOOTHING),
            Relation("focal_gamma0_matches_cross_entropy", "binary_crossentropy",
                     keep=_AXIS_SMOOTHING, when=_no_balancing, at={"gamma": 0.0}),
        ),
        deviations=(D.BFCE_NAN, D.BFCE_GRAPH_NAN, D.LOW_PRECISION_CLIP,
                    D.TORCHVISION_FOCAL_NAN_GRAD, D.TORCHVISION_FOCAL_CANCELLATION,
                    D.KERAS_CLIP_TIE_GRADIENT, D.KERAS_BFCE_LOGITS_ROUNDED_SIGMOID),
        counterparts=(
            Counterpart(
                "torchvision.ops.sigmoid_focal_loss", "torch",
                "torchvision.ops:sigmoid_focal_loss",
                f"{CP.NONE}; {CP.MEAN}; alpha=-1 where Keras does not balance classes",
                when=CP.unsmoothed_logits, settings=_FOCAL_SETTINGS,
                loss_params=lambda p: {"reduction": "none", "gamma": p.get("gamma", 2.0),
                                       "alpha": CP.focal_alpha(p, -1)},
                output={"per_element": "mean"}),
            Counterpart(
                "optax.sigmoid_focal_loss", "jax", "optax:sigmoid_focal_loss",
                f"{CP.MEAN}; alpha=None where Keras does not balance classes",
                when=CP.unsmoothed_logits, settings=_FOCAL_SETTINGS,
                loss_params=lambda p: {"gamma": p.get("gamma", 2.0),
                                       "alpha": CP.focal_alpha(p, None)},
                output={"per_element": "mean"}),
        ),
        tolerance_notes="(1 - p_t)**gamma near p_t = 1 amplifies rounding of p_t by "
                        "gamma / (1 - p_t); in the budget through |dL/dp| |p|.",
    ),
    LossRecord(
        name="categorical_focal_crossentropy",
        evaluator=L._eval_categorical_focal_crossentropy,
        inputs="categorical",
        labels="dense",
        implementations=keras_pair("CategoricalFocalCrossentropy",
                                   "categorical_focal_crossentropy"),
        params=(P.alpha(), P.gamma(), P.from_logits(), P.label_smoothing((0.0, 0.1)),
                P.axis()),
        default_grid=({}, {"from_logits": True, "gamma": 0.5}, {"label_smoothing": 0.1}),
        relations=(
            Relation("focal_not_above_cross_entropy", "categorical_crossentropy",
                     keep=_AXIS_SMOOTHING, factor="alpha"),
            Relation("focal_gamma0_matches_cross_entropy", "categorical_crossentropy",
                     keep=_AXIS_SMOOTHING, factor="alpha", at={"gamma": 0.0}),
        ),
        deviations=(D.LOW_PRECISION_CLIP_SOFTMAX, D.XLA_HALF_SOFTMAX,
                    D.XLA_F16_DIVISION_GRAD),
    ),
)
