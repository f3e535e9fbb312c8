"""Pure NumPy reference implementations of the losses lossverify checks.

Importing this package loads NumPy and nothing else: PyTorch, JAX or any other suite can
use these as ground truth. Every loss returns per-sample float64 losses (no reduction)
with Keras 3's documented semantics; :func:`reduce` applies a Keras reduction with
sample weights; :func:`value_and_grad` and :func:`evaluate` add the analytic gradient
with respect to ``y_pred`` (and, for :func:`evaluate`, the error scales used to size
tolerances).

>>> import lossverify.reference as R
>>> R.categorical_crossentropy([[0., 1.]], [[0.25, 0.75]]).round(6)
array([0.287682])
>>> value, grad = R.value_and_grad("mean_squared_error", [[0., 1.]], [[1., 1.]])
>>> grad
array([[1., 0.]])
"""

from typing import Any

# The families' public functions (each module's ``__all__``): a reference added to a
# family module is exported here without another edit.
from lossverify.reference import ctc as _ctc
from lossverify.reference import margin as _margin
from lossverify.reference import overlap as _overlap
from lossverify.reference import probabilistic as _probabilistic
from lossverify.reference import regression as _regression
from lossverify.reference._core import (
    EPSILON,
    Evaluation,
    clip_bounds,
    computing_in,
    perturbing,
)
from lossverify.reference.losses import (
    binary_crossentropy,
    binary_focal_crossentropy,
    categorical_crossentropy,
    categorical_focal_crossentropy,
    evaluate,
    focal_loss,
    mean_squared_error,
    sparse_categorical_crossentropy,
    sparse_focal_loss,
    value_and_grad,
)
from lossverify.reference.reduction import REDUCTIONS, reduce, sample_weights

_FAMILIES = (_regression, _margin, _probabilistic, _overlap, _ctc)
for _family in _FAMILIES:
    globals().update({_name: getattr(_family, _name) for _name in _family.__all__})


def __getattr__(name: str) -> Any:
    """``EVALUATORS`` (reference name -> evaluation function) and ``NAMES`` (the
    reference names), derived from :mod:`lossverify.catalogue`'s records on first use
    (the catalogue imports this package's functions, so it cannot be imported above)."""
    from lossverify.reference.losses import evaluators_by_name

    if name == "EVALUATORS":
        return evaluators_by_name()
    if name == "NAMES":
        return tuple(evaluators_by_name())
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "EPSILON",
    "EVALUATORS",
    "NAMES",
    "REDUCTIONS",
    "Evaluation",
    "binary_crossentropy",
    "binary_focal_crossentropy",
    "categorical_crossentropy",
    "categorical_focal_crossentropy",
    "clip_bounds",
    "computing_in",
    "evaluate",
    "focal_loss",
    "mean_squared_error",
    "perturbing",
    "reduce",
    "sample_weights",
    "sparse_categorical_crossentropy",
    "sparse_focal_loss",
    "value_and_grad",
    *(name for family in _FAMILIES for name in family.__all__),
]
