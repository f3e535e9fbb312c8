"""What a user's loss declares about itself: its own parameters, the inputs it is defined
on, and the shape of what it returns. NumPy only (no TensorFlow, no Hypothesis).

A loss under test and the reference it is checked against are configured separately:

* ``loss_params`` go to the loss: a class is constructed with them, a factory (a
  callable whose every parameter has a default, such as the notes' ``focal_loss(gamma,
  alpha)``) is called with them, and a loss function ``f(y_true, y_pred, **kw)`` gets them
  bound (:func:`build_loss`).
* The reference's parameters go to the reference only. A parameter that both accept but
  that is given to one side only (or with different values) is worth a warning
  (:func:`mismatched_params`): ``gamma=0.5`` for the reference against a loss that keeps
  its own default ``gamma=2.0`` is a false FAIL otherwise.

:class:`Domain` narrows the drawn inputs to where a loss is defined (hard labels,
probabilities inside a clip, a range of logits). :class:`Output` says how a loss that
returns one value per element (rather than per sample) reduces to the reference, and by
what constant it is scaled (optax's ``l2_loss`` is half the squared error).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["Domain", "LossverifyWarning", "Output", "build_loss", "mismatched_params"]


class LossverifyWarning(UserWarning):
    """A configuration that is probably not what the user meant (the run goes on)."""


def _pair(value: Any, name: str, low: float, high: float) -> tuple[float, float] | None:
    if value is None:
        return None
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected a pair (low, high) of numbers, got {value!r}"
                         ) from None
    if not (low <= lo < hi <= high) or math.isnan(lo) or math.isnan(hi):
        raise ValueError(f"{name}: expected low < high within [{low:g}, {high:g}], "
                         f"got {value!r}")
    return lo, hi


class _Declaration:
    """What :class:`Domain` and :class:`Output` share: built from themselves, a mapping
    of their fields or None (the default), and written back as Python."""

    #: the keyword that takes it in :func:`lossverify.verify` (for error messages)
    _keyword = ""

    @classmethod
    def of(cls, value: Any) -> Any:
        """``value`` as this class: None gives the default, a mapping its fields."""
        if value is None:
            return cls()
        if isinstance(value, cls):
            return value
        fields = sorted(cls.__dataclass_fields__)  # type: ignore[attr-defined]
        if isinstance(value, Mapping):
            unknown = sorted(set(value) - set(fields))
            if unknown:
                raise TypeError(f"{cls._keyword}: unknown fields {unknown}; expected some "
                                f"of {fields}")
            return cls(**value)
        raise TypeError(f"{cls._keyword}: expected a lossverify.{cls.__name__}, a mapping "
                        f"or None, got {value!r}")

    def code(self) -> str:
        """The Python that builds this value (for a reproduce line)."""
        default = type(self)()
        args = [f"{k}={getattr(self, k)!r}"
                for k in self.__dataclass_fields__  # type: ignore[attr-defined]
                if getattr(self, k) != getattr(default, k)]
        return f"lossverify.{type(self).__name__}({', '.join(args)})"


@dataclass(frozen=True)
class Domain(_Declaration):
    """The inputs a loss is defined on; the drawn inputs are narrowed to it.

    Args:
        hard_labels: binary labels are exactly 0 or 1 and categorical labels one-hot
            (no soft labels). Sparse labels are always hard.
        probabilities: ``(low, high)``: every probability in ``y_pred`` lies in this
            range, say ``(1e-7, 1 - 1e-7)`` for a loss without Keras's clip.
            Normalised rows are mixed with the uniform distribution (they keep summing
            to 1); others are clipped. Ignored for logits.
        logits: ``(low, high)``: every logit in ``y_pred`` lies in this range. Ignored
            for probabilities.

    The bounds hold in the dtype the inputs are checked in (rounded inwards).
    """

    _keyword = "domain"
    hard_labels: bool = False
    probabilities: tuple[float, float] | None = None
    logits: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.hard_labels, bool | np.bool_):
            raise TypeError(f"hard_labels: expected True or False, got {self.hard_labels!r}")
        object.__setattr__(self, "probabilities",
                           _pair(self.probabilities, "probabilities", 0.0, 1.0))
        object.__setattr__(self, "logits", _pair(self.logits, "logits", -math.inf, math.inf))
        if self.logits is not None and not all(map(math.isfinite, self.logits)):
            raise ValueError(f"logits: expected finite bounds, got {self.logits!r}")

    @property
    def narrowed(self) -> bool:
        return self != Domain()

    def describe(self) -> str:
        """``"hard labels, probabilities in [1e-07, 0.9999999]"``; ``"all inputs"``."""
        parts = ["hard labels"] if self.hard_labels else []
        if self.probabilities:
            parts.append("probabilities in [{:g}, {:.9g}]".format(*self.probabilities))
        if self.logits:
            parts.append("logits in [{:g}, {:g}]".format(*self.logits))
        return ", ".join(parts) or "all inputs"

    def narrow(self, y_pred: np.ndarray, logits: bool, axis: int = -1) -> np.ndarray:
        """``y_pred`` moved into the domain, in its own dtype (bounds rounded inwards)."""
        bounds = self.logits if logits else self.probabilities
        if bounds is None:
            return y_pred
        dtype = y_pred.dtype
        wide = np.asarray(y_pred, np.float64)
        lo, hi = bounds
        if not logits and wide.ndim >= 1 and wide.shape[axis] > 1:
            n = wide.shape[axis]
            sums = wide.sum(axis=axis, keepdims=True)
            # normalised rows: (1 - n m) p + m keeps the sum and lifts the minimum to m
            m = min(lo * (1 + 1e-3), 1.0 / n)
            mixed = (1 - n * m) * wide + m
            wide = np.where(np.abs(sums - 1) < 1e-3, mixed, wide)
        lo_d, hi_d = _inward(lo, hi, dtype)
        out = np.clip(wide, lo_d, hi_d).astype(dtype)
        return np.clip(out, dtype.type(lo_d), dtype.type(hi_d))


def _inward(lo: float, hi: float, dtype: np.dtype) -> tuple[float, float]:
    """``[lo, hi]`` with both ends rounded into the range in ``dtype``."""
    from lossverify.numerics import tiny, unit_roundoff

    name = str(dtype)
    u, t = unit_roundoff(name), dtype.type
    a, b = float(t(lo)), float(t(hi))
    if a < lo:
        a = float(t(lo + 2 * u * abs(lo) + tiny(name)))
    if b > hi:
        b = float(t(hi - 2 * u * abs(hi) - tiny(name)))
    return a, b


#: How :class:`Output` reduces per-element results over the class axis.
REDUCTIONS = ("mean", "sum")


@dataclass(frozen=True)
class Output(_Declaration):
    """What a loss returns, relative to the reference's per-sample values.

    Args:
        per_element: ``None`` (the loss returns one value per sample, as the reference
            does), or ``"mean"`` / ``"sum"``: it returns one value per element of
            ``y_pred``, and that reduction over the class axis gives the per-sample loss.
        scale: the loss is ``scale`` times the reference (after the reduction): optax's
            ``l2_loss`` is ``0.5 * (p - y)**2`` per element, the mean squared error with
            ``per_element="mean", scale=0.5``.

    The values (and the gradient of their sum) are brought back to the reference's terms
    in float64 before they are compared.
    """

    _keyword = "output"
    per_element: str | None = None
    scale: float = 1.0

    def __post_init__(self) -> None:
        if self.per_element is not None and self.per_element not in REDUCTIONS:
            raise ValueError(f"per_element: expected None, 'mean' or 'sum', got "
                             f"{self.per_element!r}")
        try:
            scale = float(self.scale)
        except (TypeError, ValueError):
            scale = math.nan
        if isinstance(self.scale, bool) or not math.isfinite(scale) or scale == 0:
            raise ValueError(f"scale: expected a finite non-zero number, got {self.scale!r}")
        object.__setattr__(self, "scale", scale)

    @property
    def adapted(self) -> bool:
        return self != Output()

    def describe(self) -> str:
        parts = [] if self.per_element is None else [f"per element, {self.per_element} over "
                                                     "the class axis"]
        if self.scale != 1.0:
            parts.append(f"scaled by {self.scale:g}")
        return ", ".join(parts) or "per sample"

    def adapt(self, value: np.ndarray, grad: np.ndarray | None, y_pred_shape: tuple[int, ...],
              axis: int = -1, reduced: bool = False
              ) -> tuple[np.ndarray, np.ndarray | None, str | None]:
        """``(value, grad)`` in the reference's terms, or an error naming the shapes.

        ``grad`` is the gradient of ``sum(value)``; the reduction and the scale are
        linear, so it is divided by the same constant as the value's sum.
        """
        if self.per_element is None or reduced:
            return value / self.scale, None if grad is None else grad / self.scale, None
        if value.shape != tuple(y_pred_shape):
            return value, grad, (f"returned shape {value.shape}; expected per-element "
                                 f"{tuple(y_pred_shape)} (one value per element of y_pred, "
                                 f"as declared by per_element={self.per_element!r})")
        ax = axis % len(y_pred_shape)
        if self.per_element == "mean":
            n = y_pred_shape[ax]
            out = value.mean(axis=ax) / self.scale
            return out, None if grad is None else grad / (n * self.scale), None
        return (value.sum(axis=ax) / self.scale,
                None if grad is None else grad / self.scale, None)


def _signature(obj: Any) -> inspect.Signature | None:
    try:
        return inspect.signature(obj)
    except (TypeError, ValueError):
        return None


def _accepted(obj: Any) -> set[str]:
    """Parameter names ``obj`` (a class's constructor, a function) takes by name."""
    sig = _signature(obj)
    if sig is None:
        return set()
    return {name for name, p in sig.parameters.items()
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def kind_of(obj: Any) -> str:
    """``"class"``, ``"loss"`` (called as ``obj(y_true, y_pred)``) or ``"factory"``
    (every parameter has a default: called with the loss parameters, it returns the
    loss)."""
    if isinstance(obj, type):
        return "class"
    if not callable(obj):
        return "loss"
    sig = _signature(obj)
    if sig is None:
        return "loss"
    params = [p for p in sig.parameters.values()
              if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    required = [p for p in params if p.default is p.empty]
    has_var = any(p.kind == p.VAR_POSITIONAL for p in sig.parameters.values())
    if len(required) >= 2 or has_var or (len(params) >= 2 and params[0].name in
                                         ("y_true", "y", "labels", "target", "targets")):
        return "loss"
    if not required and any(p.default is not p.empty for p in params) or not params:
        return "factory"
    return "loss"


def build_loss(obj: Any, loss_params: Mapping[str, Any] | None = None) -> tuple[Any, str]:
    """The loss to call as ``loss(y_true, y_pred)``, and how it was made from ``obj``:
    ``"as given"``, ``"constructed"`` (a class), ``"from factory"`` or ``"bound"``
    (``functools.partial`` of a loss function with ``loss_params``)."""
    import functools

    params = dict(loss_params or {})
    kind = kind_of(obj)
    name = getattr(obj, "__name__", type(obj).__name__)
    if kind == "class":
        try:
            return obj(**params), "constructed"
        except TypeError as exc:
            raise TypeError(f"loss_params: cannot construct {name}({_kw(params)}): {exc}"
                            ) from None
    if kind == "factory":
        accepted = _accepted(obj)
        unknown = sorted(set(params) - accepted) if not _takes_kwargs(obj) else []
        if unknown:
            raise TypeError(f"loss_params: {name} takes {sorted(accepted)}, got unexpected "
                            f"{unknown}")
        if params or _all_defaults(obj):
            made = obj(**params)
            if not callable(made):
                raise TypeError(f"loss_params: {name}({_kw(params)}) returned {made!r}, "
                                "expected a loss (a callable)")
            return made, "from factory"
    if not params:
        return obj, "as given"
    if not callable(obj):
        raise TypeError(f"loss: expected a callable (y_true, y_pred) -> tensor, got {obj!r}")
    accepted = _accepted(obj)
    unknown = sorted(set(params) - accepted) if not _takes_kwargs(obj) else []
    if unknown:
        raise TypeError(f"loss_params: {name} takes {sorted(accepted - {'y_true', 'y_pred'})}"
                        f" besides (y_true, y_pred), got unexpected {unknown}")
    return functools.wraps(obj)(functools.partial(obj, **params)), "bound"


def _takes_kwargs(obj: Any) -> bool:
    sig = _signature(obj)
    return sig is not None and any(p.kind == p.VAR_KEYWORD for p in sig.parameters.values())


def _all_defaults(obj: Any) -> bool:
    sig = _signature(obj)
    return sig is not None and all(p.default is not p.empty or p.kind in
                                   (p.VAR_KEYWORD, p.VAR_POSITIONAL)
                                   for p in sig.parameters.values())


def _kw(params: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in params.items())


def own_params(obj: Any, loss: Any) -> dict[str, Any]:
    """The parameters the loss will run with, where they can be read: a Keras loss's
    ``get_config()``, else the defaults (and bound values) of the function or factory
    ``obj``."""
    config = getattr(loss, "get_config", None)
    if callable(config):
        try:
            found = dict(config())
            found.update(found.pop("fn_kwargs", None) or {})
            return found
        except Exception:  # a user's get_config may do anything
            return {}
    values: dict[str, Any] = {}
    target = obj if not isinstance(obj, type) else None
    sig = _signature(target) if target is not None else None
    if sig is not None:
        values = {k: p.default for k, p in sig.parameters.items() if p.default is not p.empty}
    values.update(getattr(loss, "keywords", None) or {})  # functools.partial
    return values


def mismatched_params(obj: Any, loss: Any, loss_params: Mapping[str, Any],
                      reference_params: Mapping[str, Any],
                      reference_defaults: Mapping[str, Any]) -> list[str]:
    """One sentence per parameter that the loss and the reference both take, given to
    one side only with a value the other side does not have, or to both with different
    values. ``reference_defaults`` maps every parameter the reference takes to its
    default (``inspect.Parameter.empty`` if it has none)."""
    own = own_params(obj, loss)
    accepted = _accepted(obj) | set(own)
    notes = []
    for key in sorted((set(reference_params) | set(loss_params)) & set(reference_defaults)
                      & accepted):
        if key in reference_params and key in loss_params:
            if not _same(reference_params[key], loss_params[key]):
                notes.append(f"{key}: the reference gets {reference_params[key]!r} and the "
                             f"loss {loss_params[key]!r}")
        elif key in reference_params:
            if key in own and not _same(own[key], reference_params[key]):
                notes.append(f"{key}={reference_params[key]!r} goes to the reference only; "
                             f"the loss keeps its own {key}={own[key]!r} (give it to the "
                             "loss too: loss_params, --loss-param)")
        elif not _same(reference_defaults[key], loss_params[key]):
            notes.append(f"{key}={loss_params[key]!r} goes to the loss only; the reference "
                         f"keeps its default {key}={reference_defaults[key]!r} (give it to "
                         "the reference too: the reference parameters, --param)")
    return notes


def _same(a: Any, b: Any) -> bool:
    try:
        return bool(a == b) or (isinstance(a, float) and isinstance(b, float)
                                and math.isclose(a, b, rel_tol=1e-6))
    except Exception:
        return False
