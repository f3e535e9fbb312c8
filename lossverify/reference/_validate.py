"""Argument checking for the reference losses.

Every check raises ``ValueError`` (a value or shape is wrong) or ``TypeError`` (the kind
of thing is wrong) with a message ``"<argument>: expected <what>, got <received>"``.

NaN and Inf are *values*, not errors: they flow through the references as they flow
through TensorFlow, and the references never let a NumPy ``RuntimeWarning`` escape
(:func:`quiet` wraps each evaluation). What TensorFlow 2.21 / Keras 3.15 give, float32,
and what the references give on the same input:

* ``binary_crossentropy(y_true=[[nan, 1]], y_pred=[[.5, .5]])`` is NaN; a NaN
  probability gives NaN; an *infinite probability* is clipped to ``1 - eps`` and gives a
  finite loss (``[[0, 1]]`` vs ``[[inf, .5]]``: 8.317766).
* On logits, ``z = +inf`` with ``y = 0`` and ``z = -inf`` with ``y = 0`` are both NaN
  (``inf - 0 * inf`` and ``0 - (-inf) * 0`` in ``max(z, 0) - z y + log1p(exp(-|z|))``).
* ``categorical_crossentropy(from_logits=True)`` with any infinite logit in a row is NaN,
  whether the ``inf`` sits on the target class, another class, or is ``-inf`` on a
  non-target class (``z - logsumexp(z)`` meets ``inf - inf`` or ``0 * -inf``); sparse
  categorical cross-entropy with a ``+inf`` logit is NaN too. An infinite or NaN
  probability gives NaN (the renormalisation ``p / sum(p)`` divides by ``inf``).
* A probability row summing to 0 is NaN for categorical cross-entropy (``0 / 0`` in the
  renormalisation), a finite input giving NaN in TensorFlow and here alike.
* In float16 the upper clip bound ``1 - eps`` rounds to 1, so binary cross-entropy of a
  probability of 1 is ``inf`` (``y = 0``) or NaN (``y = 1``), in TensorFlow and here.

Sparse labels are class *indices*: NaN, Inf or a fraction is not a label and is refused
(TensorFlow's integer cast would make it an arbitrary index).

Empty batches are not errors. The losses return an empty per-sample array (Keras:
``categorical_crossentropy(np.zeros((0, 3)), np.zeros((0, 3)))`` has shape ``(0,)``),
and :func:`~lossverify.reference.reduce` returns values of shape ``()`` or ``(0,)``
unreduced, as Keras's ``reduce_values`` does (``CategoricalCrossentropy()`` of that
empty batch is an empty ``(0,)`` tensor, not 0 and not NaN). An empty *class* axis is an
error: no distribution lives on it.
"""

from __future__ import annotations

import functools
import numbers
from collections.abc import Callable, Collection
from typing import Any, TypeVar, cast

import numpy as np

from lossverify.reference import _core

__all__ = [
    "as_array",
    "as_labels",
    "as_mask",
    "as_real_array",
    "check_alpha",
    "check_axis",
    "check_choice",
    "check_class_axis_not_empty",
    "check_class_num",
    "check_flag",
    "check_gamma",
    "check_ignore_class",
    "check_int",
    "check_label_smoothing",
    "check_same_shape",
    "quiet",
]

_F = TypeVar("_F", bound=Callable[..., Any])

#: dtype kinds accepted as real numbers: bool, signed and unsigned integers, floats.
_REAL_KINDS = "biuf"


def quiet(fn: _F) -> _F:
    """Run ``fn`` with NumPy's floating-point warnings off: NaN and Inf are values here."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with np.errstate(all="ignore"):
            return fn(*args, **kwargs)

    return cast(_F, wrapper)


def as_array(x: Any, name: str, expected: str) -> np.ndarray:
    """``np.asarray(x)``, with a message naming ``name`` if NumPy cannot convert it."""
    try:
        return np.asarray(x)
    except (ValueError, TypeError) as exc:  # ragged nested lists and the like
        raise TypeError(f"{name}: expected {expected}, got an object NumPy cannot convert "
                        f"to an array ({exc})") from None


def as_real_array(x: Any, name: str) -> tuple[np.ndarray, np.dtype]:
    """``x`` as a float64 array, plus the floating dtype it came in (for clip bounds).

    Booleans and integers are accepted (as Keras casts them) and count as float64 for
    the clip bounds; complex numbers, strings, objects and ragged lists are refused.
    """
    arr = as_array(x, name, "a real numeric array")
    if arr.dtype.kind not in _REAL_KINDS:
        raise TypeError(f"{name}: expected a real numeric array (bool, int or float), "
                        f"got dtype {arr.dtype}")
    source = arr.dtype if arr.dtype.kind == "f" else np.dtype(np.float64)
    return arr.astype(_core.compute_dtype()), source


def as_mask(x: Any, name: str = "mask") -> np.ndarray:
    """A boolean mask from booleans or numbers (nonzero is True)."""
    arr = as_array(x, name, "a boolean mask")
    if arr.dtype.kind not in _REAL_KINDS:
        raise TypeError(f"{name}: expected a boolean (or 0/1) array, got dtype {arr.dtype}")
    return arr.astype(bool)


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


def check_flag(value: Any, name: str) -> bool:
    """A bool-like flag: ``True``/``False``, ``np.bool_``, or the integers 0 and 1."""
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, numbers.Integral) and int(value) in (0, 1):
        return bool(value)
    raise TypeError(f"{name}: expected a bool (or 0/1), got {value!r}")


def check_choice(value: Any, choices: Collection[Any], name: str) -> Any:
    """``value`` if it is one of ``choices`` (strings, or ``None`` where listed)."""
    if not isinstance(value, str) and not (value is None and None in choices):
        raise TypeError(f"{name}: expected one of {tuple(choices)}, got {value!r} of type "
                        f"{type(value).__name__}")
    if value not in choices:
        raise ValueError(f"{name}: expected one of {tuple(choices)}, got {value!r}")
    return value


def check_int(value: Any, name: str, expected: str = "an int") -> int:
    if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name}: expected {expected}, got {value!r}")
    return int(value)


def check_ignore_class(value: Any) -> int | None:
    """``None`` or an int label to ignore (any int: Keras allows e.g. -1 or 255)."""
    return None if value is None else check_int(value, "ignore_class", "an int or None")


def check_class_num(value: Any, y_pred: np.ndarray) -> int:
    """``class_num`` for one-hot encoding: must equal the size of y_pred's last axis."""
    n = check_int(value, "class_num")
    if y_pred.ndim < 1:
        raise ValueError(f"y_pred: expected at least rank 1 (a class axis), "
                         f"got rank {y_pred.ndim}")
    check_class_axis_not_empty(y_pred, y_pred.ndim - 1)
    if n != y_pred.shape[-1]:
        raise ValueError(f"class_num: expected the size of y_pred's last axis "
                         f"({y_pred.shape[-1]}), got {n}")
    return n


def _check_real_scalar(value: Any, name: str) -> float:
    if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}: expected a real number, got {value!r}")
    v = float(value)
    if not np.isfinite(v):
        raise ValueError(f"{name}: expected a finite number, got {value!r}")
    return v


def _check_unit_interval(value: Any, name: str) -> float:
    v = _check_real_scalar(value, name)
    if not 0.0 <= v <= 1.0:
        raise ValueError(f"{name}: expected a number in [0, 1], got {value!r}")
    return v


def check_label_smoothing(value: Any) -> float:
    return _check_unit_interval(value, "label_smoothing")


def check_gamma(value: Any) -> float:
    v = _check_real_scalar(value, "gamma")
    if v < 0:
        raise ValueError(f"gamma: expected a number >= 0, got {value!r}")
    return v


def check_alpha(value: Any) -> float:
    return _check_unit_interval(value, "alpha")


def as_labels(y_true: Any, n_classes: int, name: str = "y_true",
              ignore_class: int | None = None) -> np.ndarray:
    """Integer class labels in ``[0, n_classes)`` (``ignore_class`` also allowed).

    Float arrays are accepted when every value is integral (Keras hands float32 labels
    around); anything else is refused with the offending value. Ranges are checked in
    the input's own dtype, before any cast that could wrap or overflow.
    """
    arr = as_array(y_true, name, "integer class labels")
    if arr.dtype.kind not in "iuf":
        raise TypeError(f"{name}: expected integer class labels, got dtype {arr.dtype}")
    if arr.dtype.kind == "f":
        with np.errstate(invalid="ignore"):
            bad = ~np.isfinite(arr) | (arr != np.round(arr))
        if bad.any():
            raise ValueError(f"{name}: expected integer class labels, got non-integer value "
                             f"{arr[bad].flat[0].item()!r}")
    valid = (arr >= 0) & (arr < n_classes)
    if ignore_class is not None:
        valid |= arr == ignore_class
    if not valid.all():
        extra = f" or ignore_class={ignore_class}" if ignore_class is not None else ""
        raise ValueError(f"{name}: expected labels in [0, {n_classes}){extra}, "
                         f"got {arr[~valid].flat[0].item()!r}")
    return arr.astype(np.int64)
