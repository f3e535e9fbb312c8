"""Records of Keras's margin and similarity losses: hinge, squared hinge, categorical
hinge and cosine similarity (references in :mod:`lossverify.reference.margin`)."""

from __future__ import annotations

from lossverify import deviations as D
from lossverify.catalogue import counterparts as CP
from lossverify.catalogue import params as P
from lossverify.record import Counterpart, LossRecord, keras_pair
from lossverify.reference import margin as M

RECORDS = (
    LossRecord(
        name="hinge",
        evaluator=M._eval_hinge,
        inputs="hinge",
        y_pred="real",
        implementations=keras_pair("Hinge", "hinge"),
        invariants=("non_negative", "binary_labels_match_signs"),
        # the 0/1 -> -1/1 label conversion is decided on the whole y_true tensor
        batch_coupled=True,
        tolerance_notes="1 - y p: a product and a subtraction; the margin y p == 1 is a kink "
                        "(TensorFlow's maximum passes the gradient there, relu does not).",
    ),
    LossRecord(
        name="squared_hinge",
        evaluator=M._eval_squared_hinge,
        inputs="hinge",
        y_pred="real",
        implementations=keras_pair("SquaredHinge", "squared_hinge"),
        invariants=("non_negative", "binary_labels_match_signs"),
        batch_coupled=True,
        tolerance_notes="max(1 - y p, 0)**2: continuous gradient, no kink; second-order "
                        "rounding term at the margin in the budget.",
    ),
    LossRecord(
        name="categorical_hinge",
        evaluator=M._eval_categorical_hinge,
        inputs="categorical_hinge",
        y_pred="real",
        labels="dense",
        implementations=keras_pair("CategoricalHinge", "categorical_hinge"),
        tolerance_notes="neg = max((1 - y) p) over every class, the target's 0 included; "
                        "kinks at the margin and at ties for the maximum.",
    ),
    LossRecord(
        name="cosine_similarity",
        evaluator=M._eval_cosine_similarity,
        inputs="cosine",
        y_pred="real",
        implementations=keras_pair("CosineSimilarity", "cosine_similarity"),
        params=(P.axis((-1, 0)),),
        invariants=("batch_permutation", "batch_split", "magnitude_at_most_one",
                    "odd_in_y_pred"),
        deviations=(D.XLA_RSQRT_GRAD, D.KERAS_NORMALIZE_F16, D.TORCH_COSINE_CLAMPED_GRAD,
                    D.KERAS_NORMALIZE_RSQRT_GRAD),
        counterparts=(
            Counterpart(f"{CP.F}.cosine_similarity", "torch", f"{CP.F}:cosine_similarity",
                        "the similarity, not its negative (scale=-1); eps=1e-7, Keras's "
                        "floor of each norm (torch's default 1e-8)",
                        when=CP.last_axis, loss_params=lambda p: {"dim": -1, "eps": 1e-7},
                        output={"scale": -1.0}),
            Counterpart("optax.cosine_similarity", "jax", "optax:cosine_similarity",
                        "the similarity, not its negative (scale=-1); epsilon=1e-14 floors "
                        "the squared norm where Keras floors the norm at 1e-7",
                        when=CP.last_axis, loss_params=lambda p: {"epsilon": 1e-14},
                        output={"scale": -1.0}),
        ),
        tolerance_notes="x * min(rsqrt(sum x**2), 1e7): the norm floor 1e-7 is a kink of "
                        "the gradient; below it the loss is linear in y_pred.",
    ),
)
