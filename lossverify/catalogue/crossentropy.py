"""Records of Keras's cross-entropies and focal cross-entropies."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lossverify import deviations as D
from lossverify.catalogue import params as P
from lossverify.record import LossRecord, Relation, keras_pair
from lossverify.reference import losses as L

_AXIS_SMOOTHING = ("from_logits", "label_smoothing", "axis")


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
        deviations=(D.LOW_PRECISION_CLIP,),
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
        deviations=(D.LOW_PRECISION_CLIP,),
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
        deviations=(D.BFCE_NAN, D.BFCE_GRAPH_NAN, D.LOW_PRECISION_CLIP),
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
