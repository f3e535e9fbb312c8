"""Records of Keras's regression losses."""

from __future__ import annotations

from lossverify import deviations as D
from lossverify.record import Implementation, LossRecord, keras_pair
from lossverify.reference import losses as L

_N = "lossverify.notes_losses"

RECORDS = (
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
        tolerance_notes="cancellation in y_pred - y_true: budget includes |g| (|p| + |y|).",
    ),
)
