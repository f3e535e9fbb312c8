"""What every framework's executor shares: one call of the loss in a worker thread with a
time limit, the error capture of :class:`lossverify.checks.Executor` (an exception is an
error string, a hang a timeout, a changed input a mutation, a non-float result a dtype
error, a result without a gradient "not differentiable"), the declared
:class:`lossverify.Output` and, for JAX, fixed batch sizes. NumPy only: the frameworks
themselves are imported by their executors, when one is built."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from lossverify.checks import ModeResult

#: Seconds added to the time limit on a compiled mode's first call with a new input
#: signature (shapes, dtypes): compiling is not hanging. ``torch.compile``'s inductor
#: backend builds C++ on first use (minutes on 2 busy cores); JAX compiles each
#: primitive per shape even eagerly.
COMPILE_ALLOWANCE = 600.0

#: JAX compiles per concrete shape: per-sample batches are padded (rows repeated) to
#: this many rows times a power of two, time steps to a multiple of PAD_STEPS, and the
#: results sliced back. A few shapes are compiled per run, not one per drawn batch;
#: computing 128 rows costs next to nothing beside a compile.
PAD_ROWS, PAD_STEPS = 128, 3


@dataclass
class RawResult:
    """One call's outcome in the framework's own terms, turned into NumPy."""

    value: np.ndarray | None = None
    grad: np.ndarray | None = None
    #: the result's dtype name, and whether it is a float dtype
    dtype: str = ""
    floating: bool = True
    #: why there is no gradient ("" where there is one)
    no_gradient: str = ""
    #: a problem with the result that fails the call, said in the framework's terms
    problem: str = ""


class FrameworkExecutor:
    """``run(mode, x) -> ModeResult`` for a loss of one framework (see
    :class:`lossverify.checks.Executor` for TensorFlow's).

    A subclass implements :meth:`_call`: in the worker thread, convert ``x``, call the
    loss in ``mode`` and return a :class:`RawResult`, naming in ``state["mutated"]`` the
    inputs whose contents the call changed.
    """

    #: modes this executor runs (others return an error saying why not)
    modes: tuple[str, ...] = ("eager", "graph")
    #: compiled modes: the first call of a new input signature gets COMPILE_ALLOWANCE
    compiled: tuple[str, ...] = ("graph",)
    #: the framework's name in messages
    name = ""
    #: JAX compiles each primitive per shape even outside jit
    compiles_eagerly = False

    def __init__(self, loss: Callable, reduced: bool, time_limit: float,
                 adapt: Callable[..., tuple[Any, Any, str | None]] | None = None,
                 pred_first: bool = False):
        self.loss = loss
        self.reduced = reduced
        self.time_limit = time_limit
        self.adapt = adapt
        #: call the loss as ``loss(y_pred, y_true)`` (torch's and optax's order)
        self.pred_first = pred_first
        #: shapes run in the ``xla`` mode (for the session's compile budget)
        self.xla_shapes: set[tuple[int, ...]] = set()
        self._seen: set[tuple[Any, ...]] = set()
        self.unavailable: dict[str, str] = {}

    def notes(self) -> list[str]:
        """What the run showed about the modes themselves (say, torch.compile's graph
        breaks), for the report."""
        return []

    # ---------------------------------------------------------------- for subclasses

    def _call(self, mode: str, x: Any, state: dict[str, Any]) -> RawResult:
        raise NotImplementedError

    def _signature(self, mode: str, x: Any) -> tuple[Any, ...]:
        """What a compiled mode compiles once for."""
        w = x.sample_weight if self.reduced else None
        return (mode, x.y_true.shape, x.y_true.dtype.str, x.y_pred.shape, x.y_pred.dtype.str,
                None if w is None else w.shape)

    def _invoke(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> Any:
        """The loss on framework tensors, in its own argument order."""
        if self.reduced and sample_weight is not None:
            return self.loss(y_true, y_pred, sample_weight=sample_weight)
        if self.pred_first:
            return self.loss(y_pred, y_true)
        return self.loss(y_true, y_pred)

    # ------------------------------------------------------------------------ the run

    def run(self, mode: str, x: Any, with_grad: bool = True) -> ModeResult:
        """The loss in ``mode`` on ``x``; the gradient is computed whatever
        ``with_grad`` says (the frameworks' runs are not the default run's bottleneck)."""
        if mode in self.unavailable:
            return ModeResult(error=f"not run: {self.unavailable[mode]}")
        if mode not in self.modes:
            return ModeResult(error=f"not run: {self.name} has no {mode!r} mode")
        if mode == "xla":
            self.xla_shapes.add(x.y_pred.shape)
        limit = self.time_limit
        key = self._signature(mode, x)
        if key not in self._seen and (mode in self.compiled or self.compiles_eagerly):
            limit += COMPILE_ALLOWANCE
        box: dict[str, Any] = {}
        state: dict[str, Any] = {}

        def target() -> None:
            try:
                box["out"] = self._call(mode, x, state)
            except Exception as exc:  # the loss under test may raise anything
                kind = type(exc).__name__
                box["error"] = f"raised {kind}: {first_line(exc).removeprefix(kind + ': ')}"

        worker = threading.Thread(target=target, daemon=True)
        worker.start()
        worker.join(limit)
        if worker.is_alive():
            return ModeResult(error=f"timed out: no result after {limit:g} s")
        self._seen.add(key)
        mutated = state.get("mutated") or []
        if mutated:
            return ModeResult(error=f"mutated its input {' and '.join(mutated)} in place "
                                    "(the tensor's contents changed during the call)")
        if "error" in box:
            return ModeResult(error=box["error"])
        out: RawResult = box["out"]
        if out.problem:
            return ModeResult(error=out.problem)
        if not out.floating:
            return ModeResult(error=f"returned dtype {out.dtype}, expected a float dtype")
        assert out.value is not None
        grad = out.grad if out.grad is not None else np.full(x.y_pred.shape, np.nan)
        result = ModeResult(np.asarray(out.value, np.float64), np.asarray(grad, np.float64))
        if self.adapt is not None:
            assert result.value is not None
            result.value, result.grad, problem = self.adapt(result.value, result.grad,
                                                            x.y_pred.shape)
            if problem:
                return ModeResult(error=problem)
        if out.no_gradient:
            result.error = f"the result is not differentiable with respect to y_pred " \
                           f"({out.no_gradient})"
        return result


def first_line(exc: BaseException) -> str:
    """The informative line of an exception's message (at most 300 characters)."""
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
    return lines[0][:300] if lines else ""


def padded_shape(shape: tuple[int, ...], steps: bool) -> tuple[int, int]:
    """``(rows, steps)`` a batch of y_pred ``shape`` is padded to: :data:`PAD_ROWS`
    times a power of two rows, at least ``shape[0]``; with ``steps`` and rank 3, time
    steps (axis 1) up to a multiple of :data:`PAD_STEPS`."""
    rows = PAD_ROWS
    while rows < shape[0]:
        rows *= 2
    t = shape[1] if steps and len(shape) == 3 else 0
    return rows, PAD_STEPS * -(-t // PAD_STEPS)


def pad(x: Any, rows: int, steps: int = 0) -> Any:
    """``x`` (a :class:`lossverify.inputs.LossInputs`) with its rows repeated up to
    ``rows`` along axis 0 and, given ``steps``, its time steps up to ``steps`` along axis 1
    (y_true and the weight along with it where their axis 1 has y_pred's time steps);
    every original entry is kept first."""
    def tile(a: np.ndarray | None, axis: int, size: int) -> np.ndarray | None:
        if a is None or a.ndim <= axis or a.shape[axis] == size:
            return a
        return np.take(a, np.arange(size) % a.shape[axis], axis=axis)

    y_true, y_pred, w = (tile(a, 0, rows) for a in (x.y_true, x.y_pred, x.sample_weight))
    if steps and y_pred is not None and y_pred.ndim == 3:
        # y_true and the weight along with y_pred where their axis 1 is its time axis
        # (CTC's y_true is a label sequence of another length: never tiled)
        t = y_pred.shape[1]
        y_true, w = (tile(a, 1, steps) if a is not None and a.ndim > 1 and a.shape[1] == t
                     else a for a in (y_true, w))
        y_pred = tile(y_pred, 1, steps)
    return x.replace(y_true=y_true, y_pred=y_pred, sample_weight=w)
