"""Records of Keras's probabilistic losses: KL divergence, Poisson and the generalized
cross-entropy (:mod:`lossverify.reference.probabilistic`)."""

from __future__ import annotations

from lossverify import deviations as D
from lossverify.catalogue import counterparts as CP
from lossverify.record import Counterpart, LossRecord, Param, Relation, keras_pair
from lossverify.reference import probabilistic as R

#: q of the generalized cross-entropy: Keras's default, a small q (cross-entropy-like,
#: where float32's 1 - p**q cancels) and one near 1 (MAE-like).
Q_THOROUGH = (0.5, 0.01, 0.9)

RECORDS = (
    LossRecord(
        name="kl_divergence",
        evaluator=R._eval_kl_divergence,
        inputs="distributions",
        labels="dense",
        implementations=keras_pair("KLDivergence", "kl_divergence"),
        # not non_negative: zero labels contribute eps log(eps / p) < 0, and rows need
        # not be normalised
        invariants=("batch_permutation", "batch_split"),
        relations=(Relation("kl_matches_cross_entropy_minus_entropy",
                            "categorical_crossentropy"),),
        deviations=(D.KL_F16_GRAD_OVERFLOW, D.XLA_F16_KL_DIVISION_GRAD),
        tolerance_notes="y_true and y_pred clipped to [eps, 1] (upper bound 1), eps in "
                        "y_pred's dtype; scale y (1 + |log y| + |log p|) also covers the "
                        "y log y - y log p form; a y_pred exactly at eps or 1 is a kink.",
    ),
    LossRecord(
        name="poisson",
        evaluator=R._eval_poisson,
        inputs="counts",
        y_pred="real",
        implementations=keras_pair("Poisson", "poisson"),
        # not non_negative: p - y log(p + eps) < 0 for y log(p) > p (counts above e)
        invariants=("batch_permutation", "batch_split"),
        deviations=(D.POISSON_F16_GRAD_OVERFLOW,),
        counterparts=(
            Counterpart(f"{CP.F}.poisson_nll_loss", "torch", f"{CP.F}:poisson_nll_loss",
                        f"log_input=False; eps=1e-7, Keras's (torch's default 1e-8); "
                        f"{CP.NONE}; {CP.MEAN}",
                        loss_params=lambda p: {"log_input": False, "eps": 1e-7,
                                               "reduction": "none"},
                        output={"per_element": "mean"}),
        ),
        tolerance_notes="log(p + eps) with eps in y_pred's dtype; 1 - y / (p + eps) "
                        "cancels near the minimum p = y - eps (budget 1 + |y / (p + eps)|).",
    ),
    LossRecord(
        name="categorical_generalized_cross_entropy",
        evaluator=R._eval_categorical_generalized_cross_entropy,
        inputs="sparse_probabilities",
        labels="sparse",
        implementations=keras_pair("CategoricalGeneralizedCrossEntropy",
                                   "categorical_generalized_cross_entropy"),
        params=(Param("q", 0.5, R.check_q, Q_THOROUGH),),
        # q is named in every setting: Keras's function has no default for it
        default_grid=({"q": 0.5}, {"q": 0.01}),
        relations=(Relation("generalized_not_above_cross_entropy",
                            "sparse_categorical_crossentropy"),),
        tolerance_notes="q in y_pred's dtype; 1 - p**q cancels for small q (about u / q); "
                        "p_y = 0 or subnormal is a kink (gradient -inf, and NaN on the other "
                        "classes in TensorFlow); TF's flush of a subnormal p_y to 0 is in the "
                        "spread.",
    ),
)
