"""What the records' PyTorch and JAX counterparts share: their conventions as parameters
(NumPy only; nothing here imports a framework, the targets are ``"module:attr"``).

The counterparts themselves are in the records (:mod:`lossverify.catalogue`'s family
modules), beside the TensorFlow implementations of the same loss.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

F = "torch.nn.functional"
#: torch's losses reduce to the batch mean by default; the reference is per sample
NONE = "reduction='none'"
#: an element-wise loss, compared as the mean over the class (last) axis
MEAN = "per element: mean over the last axis"


def reduction_none(params: Mapping[str, Any]) -> dict[str, Any]:
    return {"reduction": "none"}


def last_axis(params: Mapping[str, Any]) -> bool:
    return params.get("axis", -1) == -1


def from_logits(params: Mapping[str, Any]) -> bool:
    """Logits on the last axis: torch's and optax's cross-entropies take logits only."""
    return bool(params.get("from_logits")) and last_axis(params)


def unsmoothed_logits(params: Mapping[str, Any]) -> bool:
    return from_logits(params) and not params.get("label_smoothing")


def focal_alpha(params: Mapping[str, Any], off: Any) -> Any:
    """The focal loss's ``alpha`` where Keras balances classes, else ``off`` (torchvision's
    ``alpha=-1``, optax's ``None``): the balancing switch as their parameter."""
    return params.get("alpha", 0.25) if params.get("apply_class_balancing") else off
