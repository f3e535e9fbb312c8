"""The input type every check works on: one drawn batch of loss inputs, with the
operations the checks need (without the weight, some rows, another dtype, several
batches as one). NumPy only: no TensorFlow, no Hypothesis."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["LossInputs"]


@dataclass(frozen=True)
class LossInputs:
    """One drawn batch: float32 ``y_pred``, ``y_true`` (float32, or int32 labels),
    optional per-sample ``sample_weight``, and a description of how it was drawn."""

    y_true: np.ndarray
    y_pred: np.ndarray
    sample_weight: np.ndarray | None = None
    regime: str = ""
    notes: dict[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:  # what a failing example prints
        with np.printoptions(precision=9, threshold=200, floatmode="maxprec"):
            lines = [f"LossInputs(regime={self.regime!r},",
                     f"  y_true=np.array({self.y_true.tolist()!r}, dtype=np.{self.y_true.dtype}),",
                     f"  y_pred=np.array({self.y_pred.tolist()!r}, dtype=np.{self.y_pred.dtype}),"]
            if self.sample_weight is not None:
                lines.append(f"  sample_weight=np.array({self.sample_weight.tolist()!r}, "
                             f"dtype=np.{self.sample_weight.dtype}),")
            return "\n".join(lines) + ")"

    @property
    def rows(self) -> int:
        """Number of independent samples (per-sample losses) in the batch."""
        return int(np.prod(self.y_pred.shape[:-1], dtype=np.int64))

    def replace(self, **changes: Any) -> LossInputs:
        """A copy with some fields changed (``y_true=...``, ``sample_weight=None``)."""
        return dataclasses.replace(self, **changes)

    def without_weight(self) -> LossInputs:
        return self.replace(sample_weight=None)

    def take_rows(self, index: slice | np.ndarray) -> LossInputs:
        """The samples ``index`` selects along axis 0 (labels and weights with them)."""
        w = None if self.sample_weight is None else self.sample_weight[index]
        return self.replace(y_true=self.y_true[index], y_pred=self.y_pred[index],
                            sample_weight=w)

    def cast(self, dtype: str) -> LossInputs:
        """``y_pred`` (and float labels) rounded to ``dtype``, clipped to its finite range
        (a float32 logit of 1e5 becomes float16's 65504, not inf). Integer labels and
        sample weights are left as they are."""
        from lossverify import numerics

        target = numerics.np_dtype(dtype)
        if self.y_pred.dtype == target:
            return self
        big = numerics.max_finite(dtype)

        def cast(a: np.ndarray) -> np.ndarray:
            wide = np.asarray(a, np.float64)
            return np.where(np.isfinite(wide), np.clip(wide, -big, big), wide).astype(target)

        y_true = cast(self.y_true) if self.y_true.dtype.kind in "fV" else self.y_true
        return self.replace(y_true=y_true, y_pred=cast(self.y_pred))

    @classmethod
    def concatenate(cls, group: Sequence[LossInputs]) -> LossInputs:
        """The batches one after another along axis 0 (regime ``"fused"``); one batch is
        itself."""
        if len(group) == 1:
            return group[0]
        w = None if group[0].sample_weight is None else \
            np.concatenate([x.sample_weight for x in group])
        return cls(np.concatenate([x.y_true for x in group]),
                   np.concatenate([x.y_pred for x in group]), w, "fused",
                   {"batches": len(group)})
