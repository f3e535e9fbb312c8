"""Records of the study notes' own losses (:mod:`lossverify.notes_losses`): the focal
loss and its sparse form. The notes' MSE is checked against Keras's record."""

from __future__ import annotations

from lossverify import deviations as D
from lossverify.catalogue import params as P
from lossverify.record import Implementation, LossRecord, Relation
from lossverify.reference import losses as L

_N = "lossverify.notes_losses"

RECORDS = (
    LossRecord(
        name="focal_loss",
        evaluator=L._eval_focal_loss,
        inputs="categorical_logits",
        y_pred="logits",
        labels="dense",
        implementations=(
            Implementation("notes.FocalLoss", "class", f"{_N}:FocalLoss", "class"),
            Implementation("notes.focal_loss", "function", f"{_N}:focal_loss", "factory"),
        ),
        params=(P.gamma(),),
        default_grid=({"gamma": 2.0}, {"gamma": 0.5}),
        relations=(
            Relation("focal_not_above_cross_entropy", "categorical_crossentropy",
                     force={"from_logits": True}),
            Relation("focal_gamma0_matches_cross_entropy", "categorical_crossentropy",
                     force={"from_logits": True}, at={"gamma": 0.0}),
        ),
        deviations=(D.NOTES_FOCAL_NAN,),
        tolerance_notes="softmax of logits; upper clip 1.0, so p == 1 is reachable.",
    ),
    LossRecord(
        name="sparse_focal_loss",
        evaluator=L._eval_sparse_focal_loss,
        inputs="sparse_logits",
        y_pred="logits",
        labels="sparse",
        implementations=(
            Implementation("notes.SparseFocalLoss", "class", f"{_N}:SparseFocalLoss",
                           "class"),
            Implementation("notes.sparse_focal_loss", "function", f"{_N}:sparse_focal_loss",
                           "factory"),
        ),
        params=(P.gamma(), P.class_num()),
        default_grid=({"gamma": 2.0, "class_num": 10},),
        relations=(
            Relation("sparse_matches_dense", "focal_loss", keep=("gamma",)),
            Relation("focal_not_above_cross_entropy", "sparse_categorical_crossentropy",
                     force={"from_logits": True}),
            Relation("focal_gamma0_matches_cross_entropy", "sparse_categorical_crossentropy",
                     force={"from_logits": True}, at={"gamma": 0.0}),
        ),
        deviations=(D.NOTES_FOCAL_NAN,),
    ),
)
