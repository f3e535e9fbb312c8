"""The record of Keras's CTC loss (Connectionist Temporal Classification)."""

from __future__ import annotations

from lossverify import deviations as D
from lossverify.catalogue import counterparts as CP
from lossverify.record import ROW_INVARIANTS, Counterpart, LossRecord, keras_pair
from lossverify.reference.ctc import _eval_ctc

#: what both counterparts' adapter does (lossverify.frameworks.adapters)
_KERAS_LABELS = ("Keras's labels adapted: the nonzero entries, in order, as the label "
                 "sequence (0 is the mask wherever it stands), every frame, blank 0")

RECORDS = (
    LossRecord(
        name="ctc",
        evaluator=_eval_ctc,
        inputs="ctc",
        y_pred="logits",
        implementations=keras_pair("CTC", "ctc"),
        invariants=(*ROW_INVARIANTS, "logit_shift_invariant", "label_padding_invariant"),
        deviations=(D.CTC_LABEL_PREFIX, D.CTC_LOG_ZERO_CAP, D.CTC_EMPTY_LABEL_AXIS,
                    D.CTC_FLOAT64_IN_FLOAT32),
        counterparts=(
            Counterpart(f"{CP.F}.ctc_loss", "torch", f"{CP.F}:ctc_loss",
                        f"{_KERAS_LABELS}; log_softmax of the logits on (time, batch, "
                        f"classes), target lengths the label counts; {CP.NONE}",
                        adapter="lossverify.frameworks.adapters:torch_ctc"),
            Counterpart("optax.ctc_loss", "jax", "optax:ctc_loss",
                        f"{_KERAS_LABELS}: label_paddings beyond the label counts, no "
                        "logit paddings",
                        adapter="lossverify.frameworks.adapters:optax_ctc"),
        ),
        tolerance_notes="log_softmax per frame (a class sum) plus the forward-backward "
                        "recursions' roundings counted one by one over the T frames "
                        "(posterior-weighted); Keras computes in float32 for any input "
                        "dtype.",
        # TensorFlow's dense CTC runs a Python loop over the frames eagerly (0.05-0.2 s
        # a call against ~5 ms for a typical loss): half the draws, still >= 200 rows
        draws=0.5,
        cost=6.0,  # a setting's runs against a typical one's (AMD EPYC, TF 2.21)
    ),
)
