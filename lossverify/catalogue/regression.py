"""Records of Keras's regression losses."""

from __future__ import annotations

from lossverify import deviations as D
from lossverify.catalogue import counterparts as CP
from lossverify.record import (
    ROW_INVARIANTS,
    Counterpart,
    Implementation,
    LossRecord,
    Param,
    Relation,
    keras_pair,
)
from lossverify.reference import losses as L
from lossverify.reference import regression as RG

_N = "lossverify.notes_losses"

RECORDS: tuple[LossRecord, ...] = (
    LossRecord(
        name="mean_squared_error",
        evaluator=L._eval_mean_squared_error,
        inputs="regression",
        y_pred="real",
        implementations=(
            *keras_pair("MeanSquaredError", "mean_squared_error"),
            Implementation("notes.MeanSquaredError", "class", f"{_N}:MeanSquaredError",
                           "class"),
            Implementation("notes.mean_squared_error", "function", f"{_N}:mean_squared_error",
                           "function"),
        ),
        deviations=(D.REDUCE_MEAN_F16,),
        counterparts=(
            Counterpart(f"{CP.F}.mse_loss", "torch", f"{CP.F}:mse_loss",
                        f"{CP.NONE}; {CP.MEAN}", loss_params=CP.reduction_none,
                        output={"per_element": "mean"}),
            Counterpart("optax.l2_loss", "jax", "optax:l2_loss",
                        f"{CP.MEAN}; optax's 0.5 factor (scale=0.5)",
                        output={"per_element": "mean", "scale": 0.5}),
        ),
        tolerance_notes="cancellation in y_pred - y_true: budget includes |g| (|p| + |y|).",
    ),
)


# ------------------------------------------------------- MAE, MAPE, MSLE, Huber, log-cosh
# lossverify.reference.regression; input kinds in strategies.REGRESSION_REGIMES.

_SYMMETRIC = (*ROW_INVARIANTS, "swap_symmetric")

RECORDS = (
    *RECORDS,
    LossRecord(
        name="mean_absolute_error",
        evaluator=RG._eval_mean_absolute_error,
        inputs="regression_abs",
        y_pred="real",
        implementations=keras_pair("MeanAbsoluteError", "mean_absolute_error"),
        invariants=_SYMMETRIC,
        counterparts=(
            Counterpart(f"{CP.F}.l1_loss", "torch", f"{CP.F}:l1_loss",
                        f"{CP.NONE}; {CP.MEAN}", loss_params=CP.reduction_none,
                        output={"per_element": "mean"}),
        ),
        tolerance_notes="the gradient is sign(e) / n exactly; ties e == 0 are kinks "
                        "(TensorFlow: sign(0) = 0; a subnormal e is flushed to 0 on CPU).",
    ),
    LossRecord(
        name="mean_absolute_percentage_error",
        evaluator=RG._eval_mean_absolute_percentage_error,
        inputs="regression_percentage",
        y_pred="real",
        implementations=keras_pair("MeanAbsolutePercentageError",
                                   "mean_absolute_percentage_error"),
        tolerance_notes="divides by max(|y_true|, eps) with eps = 1e-7 in y_pred's dtype "
                        "(Keras's docstring omits the abs; its code has it). Values reach "
                        "1e12 for targets below eps; float16 overflows there (not compared).",
    ),
    LossRecord(
        name="mean_squared_logarithmic_error",
        evaluator=RG._eval_mean_squared_logarithmic_error,
        inputs="regression_log",
        y_pred="real",
        implementations=keras_pair("MeanSquaredLogarithmicError",
                                   "mean_squared_logarithmic_error"),
        invariants=_SYMMETRIC,
        tolerance_notes="log(max(x, eps) + 1) with eps float32's 1e-7 in every dtype: the "
                        "rounding of x + 1 is an absolute u per log; (a - b)**2 where a - b "
                        "is of that order is second order (the reference's perturbation "
                        "covers it). Float16 inputs are computed and returned in float32.",
    ),
    LossRecord(
        name="huber",
        evaluator=RG._eval_huber,
        inputs="regression_huber",
        y_pred="real",
        implementations=keras_pair("Huber", "huber"),
        params=(Param("delta", 1.0, RG.check_delta, (0.1, 1.0, 100.0)),),
        default_grid=({}, {"delta": 0.1}),
        invariants=_SYMMETRIC,
        relations=(Relation("huber_matches_half_mse", "mean_squared_error",
                            at={"delta": 4096.0}),),
        counterparts=(
            Counterpart(f"{CP.F}.huber_loss", "torch", f"{CP.F}:huber_loss",
                        f"{CP.NONE}; {CP.MEAN}",
                        loss_params=lambda p: {"reduction": "none",
                                               "delta": p.get("delta", 1.0)},
                        output={"per_element": "mean"}),
            Counterpart(f"{CP.F}.smooth_l1_loss", "torch", f"{CP.F}:smooth_l1_loss",
                        f"{CP.NONE}; {CP.MEAN}; beta=delta, and smooth L1 is Huber / delta "
                        "(scale=1/delta)",
                        loss_params=lambda p: {"reduction": "none",
                                               "beta": p.get("delta", 1.0)},
                        output=lambda p: {"per_element": "mean",
                                          "scale": 1.0 / p.get("delta", 1.0)}),
            Counterpart("optax.huber_loss", "jax", "optax:huber_loss", CP.MEAN,
                        loss_params=lambda p: {"delta": p.get("delta", 1.0)},
                        output={"per_element": "mean"}),
        ),
        tolerance_notes="delta rounded to y_pred's dtype; |e| == delta is quadratic, but "
                        "both branches give the same value and gradient there (no kink).",
    ),
    LossRecord(
        name="log_cosh",
        evaluator=RG._eval_log_cosh,
        inputs="regression_log_cosh",
        y_pred="real",
        implementations=keras_pair("LogCosh", "log_cosh"),
        invariants=_SYMMETRIC,
        deviations=(D.LOG_COSH_FLOAT32_LOG2,),
        counterparts=(
            Counterpart("optax.log_cosh", "jax", "optax:log_cosh", CP.MEAN,
                        output={"per_element": "mean"}),
        ),
        tolerance_notes="Keras's x + softplus(-2x) - log 2 cancels to x**2 / 2 for small "
                        "|x|: the value is accurate to about u absolute there; the gradient "
                        "1 - 2 sigmoid(-2x) to u absolute.",
    ),
)
