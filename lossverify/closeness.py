"""Any framework's loss values and gradients against a reference, within the same derived
budget :func:`lossverify.verify` uses. NumPy only: a PyTorch or JAX test suite computes
its loss, hands the numbers over, and gets a per-element verdict or a readable
``AssertionError``::

    import lossverify

    value = torch.nn.functional.cross_entropy(logits, labels, reduction="none")
    grad, = torch.autograd.grad(value.sum(), logits)
    lossverify.assert_close_to_reference(
        "sparse_categorical_crossentropy", labels, logits, value, grad,
        dtype="float32", from_logits=True)

What is compared: ``value`` holds one loss per sample (``y_pred``'s shape without the
class axis), or, with ``reduction``, Keras's reduction of them (a scalar; with
``sample_weight``); ``grad`` is the gradient of ``value.sum()`` with respect to
``y_pred``. ``dtype`` is the precision the implementation computed in; ``y_pred`` must
hold the values it saw (rounded to that dtype). The budget and its derivation:
:mod:`lossverify.tolerance`. Elements of the gradient at a kink of the loss (where it
has no derivative) are not compared.

Arrays may be NumPy arrays or anything ``numpy.asarray`` takes; a PyTorch tensor is
detached and copied to the CPU (a bfloat16 one through float32).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from lossverify import numerics
from lossverify import tolerance as T

__all__ = ["Closeness", "assert_close_to_reference", "close_to_reference"]


def _numpy(x: Any, name: str) -> np.ndarray | None:
    if x is None:
        return None
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # a PyTorch tensor
        t = x.detach().cpu()
        if str(getattr(t, "dtype", "")) == "torch.bfloat16":
            t = t.float()
        x = t.numpy()
    try:
        out = np.asarray(x)
    except Exception as exc:
        raise TypeError(f"{name}: expected an array, got {type(x).__name__}: {exc}") from None
    if out.dtype.kind not in "fiubV":
        raise TypeError(f"{name}: expected numbers, got an array of dtype {out.dtype}")
    return out


@dataclass(frozen=True)
class Closeness:
    """The verdict on one result: ``ok``, and per element where it failed.

    ``value_failing`` / ``grad_failing`` are boolean arrays of the value's and the
    gradient's shapes (None without a gradient); ``budget`` the reference's answer with
    each element's allowance; ``value`` / ``grad`` the comparisons (worst element, error,
    allowed). ``str()`` is the readable report :func:`assert_close_to_reference` raises.
    """

    reference: str
    params: dict[str, Any]
    budget: T.Budget
    value: numerics.Comparison
    grad: numerics.Comparison | None
    y_true: np.ndarray
    y_pred: np.ndarray
    axis: int

    @property
    def ok(self) -> bool:
        return self.value.ok and (self.grad is None or self.grad.ok)

    @property
    def value_failing(self) -> np.ndarray:
        assert self.value.failing is not None
        return self.value.failing

    @property
    def grad_failing(self) -> np.ndarray | None:
        return None if self.grad is None else self.grad.failing

    def _row(self, index: tuple[int, ...] | None, part: str) -> str:
        """The inputs of the sample the worst element belongs to."""
        if index is None or self.budget.value.ndim == 0:
            return ""
        ax = self.axis % self.y_pred.ndim
        sample = index if part == "value" else tuple(i for k, i in enumerate(index)
                                                     if k != ax)
        at: list[int | slice] = list(sample)
        at.insert(ax, slice(None))
        y_pred = self.y_pred[tuple(at)]
        y_true = self.y_true[tuple(at)] if self.y_true.ndim == self.y_pred.ndim \
            else self.y_true[tuple(sample)]
        with np.printoptions(precision=9, threshold=40):
            return (f"\n    its sample {sample}: y_true={np.asarray(y_true).tolist()!r}, "
                    f"y_pred={np.asarray(y_pred).tolist()!r}")

    def __str__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.params.items()) or "defaults"
        head = (f"{'close to' if self.ok else 'NOT close to'} reference {self.reference} "
                f"[{params}] in {self.budget.dtype}")
        lines = [head]
        for part, cmp in (("value", self.value), ("gradient", self.grad)):
            if cmp is None:
                continue
            count = int(np.sum(cmp.failing)) if cmp.failing is not None else 0
            total = int(np.size(cmp.failing)) if cmp.failing is not None else 0
            verdict = "ok" if cmp.ok else f"{count} of {total} elements beyond the budget"
            lines.append(f"  {part}: {verdict}; worst error / allowed "
                         f"{cmp.worst_ratio:.3g}: {cmp.describe()}"
                         + ("" if cmp.ok else self._row(cmp.index, part)))
        return "\n".join(lines)


def close_to_reference(reference: str, y_true: Any, y_pred: Any, value: Any,
                       grad: Any = None, *, dtype: str = "float32",
                       input_dtype: str | None = None, sample_weight: Any = None,
                       reduction: str | None = None,
                       **params: Any) -> Closeness:
    """Compare ``value`` (and ``grad``) with reference ``reference`` on these inputs.

    Args:
        reference: a name in :data:`lossverify.reference.EVALUATORS`.
        y_true, y_pred: the inputs the implementation saw.
        value: its per-sample losses, or its reduced loss with ``reduction``.
        grad: its gradient of ``value.sum()`` with respect to ``y_pred``, or None.
        dtype: the dtype it computed in (``"float32"``, ``"float64"``, ``"float16"``,
            ``"bfloat16"``); ``input_dtype`` the dtype ``y_pred`` arrived in when
            narrower (the gradient then flows back through a cast).
        sample_weight, reduction: Keras's reduction of the per-sample losses
            (``"sum_over_batch_size"``, ``"sum"``, ``"mean"``, ...) for a reduced
            ``value``; None for per-sample values.
        **params: the reference's parameters (``from_logits=True``, ``gamma=0.5``, ...).
    """
    from lossverify.reference import EVALUATORS

    if reference not in EVALUATORS:
        raise ValueError(f"reference: expected one of {sorted(EVALUATORS)}, got "
                         f"{reference!r}")
    if dtype not in numerics.DTYPES:
        raise ValueError(f"dtype: expected one of {numerics.DTYPES}, got {dtype!r}")
    yt, yp = _numpy(y_true, "y_true"), _numpy(y_pred, "y_pred")
    v, g = _numpy(value, "value"), _numpy(grad, "grad")
    assert yt is not None and yp is not None and v is not None
    budget = T.budget(reference, params, yt, yp, dtype=dtype, input_dtype=input_dtype,
                      sample_weight=_numpy(sample_weight, "sample_weight"),
                      reduced=reduction is not None,
                      reduction=reduction or "sum_over_batch_size")
    if v.shape != budget.value.shape:
        what = "a scalar (the reduced loss)" if budget.value.ndim == 0 else \
            f"one loss per sample, shape {budget.value.shape}"
        raise ValueError(f"value: expected {what}, got shape {v.shape}"
                         + ("" if reduction is not None or v.shape != yp.shape else
                            "; a per-element result needs reducing over the class axis "
                            "first"))
    value_cmp = numerics.compare(v, budget.value, budget.value_allowed, dtype)
    grad_cmp = None
    if g is not None:
        if g.shape != budget.grad.shape:
            raise ValueError(f"grad: expected y_pred's shape {budget.grad.shape}, got "
                             f"{g.shape}")
        sel = budget.grad_rows
        grad_cmp = numerics.compare(np.where(sel, g, 0.0), np.where(sel, budget.grad, 0.0),
                                    np.where(sel, budget.grad_allowed, 1.0), dtype)
    axis = params.get("axis", -1)  # Dice's None (one value) or a tuple: rows as they are
    return Closeness(reference, dict(params), budget, value_cmp, grad_cmp,
                     np.asarray(yt), np.asarray(yp), int(axis) if isinstance(axis, int) else -1)


def assert_close_to_reference(reference: str, y_true: Any, y_pred: Any, value: Any,
                              grad: Any = None, **kwargs: Any) -> Closeness:
    """:func:`close_to_reference`, raising ``AssertionError`` with the report (the
    worst element, its sample's inputs, error / allowed) when not close."""
    __tracebackhide__ = True  # pytest shows the caller's line and the report, not this
    result = close_to_reference(reference, y_true, y_pred, value, grad, **kwargs)
    if not result.ok:
        raise AssertionError(str(result))
    return result
