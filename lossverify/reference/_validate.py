"""Argument checking for the reference losses.

Every check raises ``ValueError`` (a value or shape is wrong) or ``TypeError`` (the kind
of thing is wrong) with a message that names the argument, what was expected and what
was received. NaN and Inf are *values*, not errors: they propagate through the
references as they propagate through TensorFlow.
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np

__all__ = [
    "as_labels",
    "as_real_array",
    "check_alpha",
    "check_axis",
    "check_gamma",
    "check_label_smoothing",
    "check_same_shape",
]


def as_real_array(x: Any, name: str) -> tuple[np.ndarray, np.dtype]:
    """``x`` as a float64 array, plus the floating dtype it came in (for clip bounds).

    Booleans and integers are accepted (as Keras casts them) and count as float64 for
    the clip bounds; complex numbers, strings and objects are refused.
    """
    try:
        arr = np.asarray(x)
    except Exception as exc:  # ragged nested lists and the like
        raise TypeError(f"{name}: expected a numeric array, could not convert: {exc}") from exc
    if arr.dtype == object or not (
        np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.bool_)
    ):
        raise TypeError(f"{name}: expected a real numeric array, got dtype {arr.dtype}")
    if np.issubdtype(arr.dtype, np.complexfloating):
        raise TypeError(f"{name}: expected a real numeric array, got complex dtype {arr.dtype}")
    source = arr.dtype if np.issubdtype(arr.dtype, np.floating) else np.dtype(np.float64)
    return arr.astype(np.float64), source


def check_axis(axis: Any, ndim: int, name: str = "axis") -> int:
    """A valid class axis for an array of rank ``ndim``, returned non-negative."""
    if isinstance(axis, bool) or not isinstance(axis, numbers.Integral):
        raise TypeError(f"{name}: expected an int, got {axis!r} of type {type(axis).__name__}")
    if ndim < 1:
        raise ValueError(f"y_pred: expected at least rank 1 (a class axis), got rank {ndim}")
    if not -ndim <= int(axis) < ndim:
        raise ValueError(f"{name}: expected an axis in [{-ndim}, {ndim - 1}] for rank {ndim}, "
                         f"got {axis}")
    return int(axis) % ndim


def check_same_shape(y_true: np.ndarray, y_pred: np.ndarray) -> None:
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true: expected the shape of y_pred {y_pred.shape}, "
                         f"got {y_true.shape}")


def check_class_axis_not_empty(y_pred: np.ndarray, axis: int) -> None:
    if y_pred.shape[axis] == 0:
        raise ValueError(f"y_pred: expected at least one class along axis {axis}, "
                         f"got shape {y_pred.shape}")


def _check_real_scalar(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}: expected a real number, got {value!r}")
    v = float(value)
    if not np.isfinite(v):
        raise ValueError(f"{name}: expected a finite number, got {value!r}")
    return v


def check_label_smoothing(value: Any) -> float:
    v = _check_real_scalar(value, "label_smoothing")
    if not 0.0 <= v <= 1.0:
        raise ValueError(f"label_smoothing: expected a number in [0, 1], got {value!r}")
    return v


def check_gamma(value: Any) -> float:
    v = _check_real_scalar(value, "gamma")
    if v < 0:
        raise ValueError(f"gamma: expected a number >= 0, got {value!r}")
    return v


def check_alpha(value: Any) -> float:
    v = _check_real_scalar(value, "alpha")
    if not 0.0 <= v <= 1.0:
        raise ValueError(f"alpha: expected a number in [0, 1], got {value!r}")
    return v


def as_labels(y_true: Any, n_classes: int, name: str = "y_true",
              ignore_class: int | None = None) -> np.ndarray:
    """Integer class labels in ``[0, n_classes)`` (``ignore_class`` also allowed).

    Float arrays are accepted when every value is integral (Keras hands float32 labels
    around); anything else is refused with the offending value.
    """
    arr = np.asarray(y_true)
    if arr.dtype == object or not (
        np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)
    ):
        raise TypeError(f"{name}: expected integer class labels, got dtype {arr.dtype}")
    if np.issubdtype(arr.dtype, np.floating):
        bad = ~np.isfinite(arr) | (arr != np.round(arr))
        if bad.any():
            raise ValueError(f"{name}: expected integer class labels, got non-integer value "
                             f"{arr[bad].flat[0]!r}")
    labels = arr.astype(np.int64)
    valid = (labels >= 0) & (labels < n_classes)
    if ignore_class is not None:
        valid |= labels == ignore_class
    if not valid.all():
        bad_value = labels[~valid].flat[0]
        extra = f" or ignore_class={ignore_class}" if ignore_class is not None else ""
        raise ValueError(f"{name}: expected labels in [0, {n_classes}){extra}, "
                         f"got {bad_value}")
    return labels
