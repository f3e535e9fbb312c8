"""Records of Keras's overlap losses (Dice, Tversky) and the Circle metric-learning loss
(references in :mod:`lossverify.reference.overlap`)."""

from __future__ import annotations

from typing import Any

from lossverify.record import LossRecord, Param, Relation, keras_pair
from lossverify.reference import _validate as V
from lossverify.reference import overlap as O


def _axis() -> Param:
    # None (Keras's default): every axis, the batch included, one value for the batch;
    # -1: one value per row of a (batch, n) mask; 0: one value per column, over the batch
    return Param("axis", None, O.check_axis_param, (None, -1, 0))


def _half(params: Any) -> bool:
    return params.get("alpha", 0.5) == 0.5 and params.get("beta", 0.5) == 0.5


RECORDS = (
    LossRecord(
        name="dice",
        evaluator=O._eval_dice,
        inputs="masks",
        y_pred="probabilities",
        implementations=keras_pair("Dice", "dice"),
        params=(_axis(),),
        default_grid=({}, {"axis": -1}),
        invariants=("non_negative", "swap_symmetric"),
        # axis=None (the default) sums over the batch: never split, pad or fuse it
        batch_coupled=True,
        tolerance_notes="1 - 2 sum(y p) / (sum(y) + sum(p) + eps), eps = 1e-7 in the "
                        "denominator only (empty masks give 1). Three N-term sums: the "
                        "budget's n is N, the number of elements a value sums "
                        "(overlap.reduction_terms), not y_pred's last axis.",
    ),
    LossRecord(
        name="tversky",
        evaluator=O._eval_tversky,
        inputs="masks",
        y_pred="probabilities",
        implementations=keras_pair("Tversky", "tversky"),
        params=(Param("alpha", 0.5, lambda v: O.check_tversky_weight(v, "alpha"),
                      (0.5, 0.3, 1.0)),
                Param("beta", 0.5, lambda v: O.check_tversky_weight(v, "beta"), (0.5, 0.7)),
                _axis()),
        default_grid=({}, {"alpha": 0.3, "beta": 0.7, "axis": -1}),
        invariants=("non_negative",),
        # at alpha = beta = 1/2 Tversky is Dice with 2 eps for eps: within eps / 2
        relations=(Relation("tversky_half_matches_dice", "dice", keep=("axis",),
                            when=_half),),
        batch_coupled=True,
        tolerance_notes="1 - I / (I + alpha sum((1 - p) y) + beta sum(p (1 - y)) + eps): "
                        "Keras's alpha weighs the false negatives (its docstring says false "
                        "positives); the reference follows the code. n = N as for Dice.",
    ),
    LossRecord(
        name="circle",
        evaluator=O._eval_circle,
        inputs="embeddings",
        y_pred="real",
        implementations=keras_pair("Circle", "circle"),
        params=(Param("remove_diagonal", True, lambda v: V.check_flag(v, "remove_diagonal"),
                      (True, False)),
                Param("gamma", 80.0, O.check_circle_gamma, (80.0, 16.0, 256.0)),
                Param("margin", 0.4, O.check_margin, (0.4, 0.25, -0.2))),
        default_grid=({},),
        invariants=("non_negative", "permutation_equivariant"),
        batch_coupled=True,
        tolerance_notes="softplus(logsumexp over positives + logsumexp over negatives) of "
                        "gamma-scaled pairwise cosine distances (up to 307 at gamma = 80): "
                        "exponent-sized absolute errors, so the gradient's relative budget is "
                        "~1e-3. Rows are coupled: a reduced budget uses "
                        "overlap.weighted_evaluation, and Circle() averages over the rows "
                        "with loss > 0 only (overlap.reduction_mask).",
        cost=3.5,  # unfused (coupled rows): 14 s a setting against ~4 (AMD EPYC, TF 2.21)
    ),
)
