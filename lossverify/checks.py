"""The checks: each compares one aspect of a TensorFlow loss with the reference.

A check is a small function ``(run, expected) -> Outcome`` over one drawn batch:

* ``value``: the eager result against the reference (per sample for a function,
  reduced with Keras semantics and ``sample_weight`` for a ``keras.losses.Loss``).
* ``gradient``: ``GradientTape``'s gradient of the summed result against the analytic
  reference gradient. NaN or Inf where the reference is finite fails.
* ``graph``: the same computation inside a ``tf.function`` (built once per rank,
  ``None`` dimensions), against the reference within the same budget (see
  :func:`lossverify.numerics.at_least_ulps`); a failure names what eager gave there.
* ``xla``: ``tf.function(jit_compile=True)``, likewise: XLA's CPU ``exp``/``log`` are its
  own approximations, accurate to a few ULPs, and the budget bounds every faithful
  evaluation in any mode. Comparing each mode with the reference rather than with eager
  keeps the budget one budget: two faithful modes may lie on opposite sides of it.

:class:`Executor` runs the loss once per mode and records exceptions, so a loss that
raises, returns the wrong shape or dtype, hangs, cannot be traced, or writes into its
input tensors (compared byte for byte before and after each call) gets a failed check
with the reason instead of crashing the verifier.
"""

from __future__ import annotations

import queue
import sys
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from lossverify import numerics
from lossverify import tolerance as T

#: Seconds one call of the loss under test may take before it counts as hung.
DEFAULT_TIME_LIMIT = 20.0


@dataclass(frozen=True)
class Outcome:
    """One check on one batch. ``comparison`` is None when the check could not compare."""

    ok: bool
    comparison: numerics.Comparison | None = None
    message: str = ""
    rows: int = 0
    skipped_rows: int = 0
    #: which of the loss's outputs ``comparison`` compared: "value" or "gradient"
    part: str = "value"


@dataclass
class ModeResult:
    value: np.ndarray | None = None
    grad: np.ndarray | None = None
    error: str | None = None


#: The reference's answer with its budget (see :mod:`lossverify.tolerance`).
Expected = T.Budget


class Runner(Protocol):
    """What runs a loss in each mode: :class:`Executor` (TensorFlow) or a framework's
    executor (:mod:`lossverify.frameworks`)."""

    xla_shapes: set[tuple[int, ...]]

    def run(self, mode: str, x: Any, with_grad: bool = True) -> ModeResult:
        """The loss in ``mode`` on ``x``; ``with_grad=False``: the value is all the
        caller needs (an executor may skip the gradient; TensorFlow's eager mode does)."""
        ...


def is_keras_loss(loss: Any) -> bool:
    """Is ``loss`` a ``keras.losses.Loss``? (Without Keras imported, nothing is: this
    does not import it.)"""
    keras = sys.modules.get("keras")
    return keras is not None and isinstance(loss, keras.losses.Loss)


def expected_for(spec_name: str, params: Mapping[str, Any], x: Any, reduced: bool,
                 reduction: str = "sum_over_batch_size", dtype: str = "float32",
                 input_dtype: str | None = None) -> Expected:
    """:func:`lossverify.tolerance.budget` on a drawn batch ``x`` (a ``LossInputs``)."""
    return T.budget(spec_name, params, x.y_true, x.y_pred, dtype=dtype,
                    input_dtype=input_dtype, sample_weight=x.sample_weight, reduced=reduced,
                    reduction=reduction)


def cast_inputs(x: Any, dtype: str) -> Any:
    """``x`` (a :class:`lossverify.inputs.LossInputs`) rounded to ``dtype``: see
    :meth:`~lossverify.inputs.LossInputs.cast`."""
    return x.cast(dtype)


class Executor:
    """Runs a loss eagerly, as a ``tf.function`` and under XLA, returning values and
    ``d sum(result) / d y_pred``. Each ``tf.function`` is built once with
    ``reduce_retracing=True`` so new shapes reuse a ``None``-dimension trace."""

    def __init__(self, loss: Callable, reduced: bool, time_limit: float = DEFAULT_TIME_LIMIT,
                 adapt: Callable[..., tuple[Any, Any, str | None]] | None = None):
        import tensorflow as tf

        self._tf = tf
        self.loss = loss
        self.reduced = reduced
        self.time_limit = time_limit
        #: ``(value, grad, y_pred_shape) -> (value, grad, problem)``: the loss's results in
        #: the reference's terms (a declared :class:`lossverify.contract.Output`)
        self.adapt = adapt
        # One tf.function per (mode, rank, label dtype, weighted), traced once with None
        # dimensions: reduce_retracing alone relaxes differing ranks to an unknown rank,
        # which Keras's shape logic (shape[-1], squeeze) cannot handle.
        self._compiled: dict[tuple[Any, ...], Callable] = {}
        self.xla_shapes: set[tuple[int, ...]] = set()

    def _function(self, mode: str, x: Any) -> Callable:
        tf = self._tf
        weighted = x.sample_weight is not None and self.reduced
        key = (mode, x.y_pred.ndim, x.y_true.ndim, x.y_true.dtype.str, weighted)
        if key not in self._compiled:
            sig = [tf.TensorSpec([None] * x.y_true.ndim, tf.as_dtype(x.y_true.dtype)),
                   tf.TensorSpec([None] * x.y_pred.ndim, tf.as_dtype(x.y_pred.dtype))]
            if weighted:
                sig.append(tf.TensorSpec([None] * x.sample_weight.ndim, tf.float32))
            self._compiled[key] = tf.function(self._value_and_grad, input_signature=sig,
                                              jit_compile=mode == "xla")
        return self._compiled[key]

    def _value(self, y_true, y_pred, sample_weight=None):
        """The loss's result as a tensor (a reduced loss gets its sample weight)."""
        if self.reduced and sample_weight is not None:
            value = self.loss(y_true, y_pred, sample_weight=sample_weight)
        else:
            value = self.loss(y_true, y_pred)
        return self._tf.convert_to_tensor(value)

    def _value_and_grad(self, y_true, y_pred, sample_weight=None):
        tf = self._tf
        with tf.GradientTape() as tape:
            tape.watch(y_pred)
            value = self._value(y_true, y_pred, sample_weight)
            total = tf.reduce_sum(tf.cast(value, tf.float64)) if value.dtype.is_floating \
                else value
        grad = tape.gradient(total, y_pred)
        if grad is None:
            grad = tf.fill(tf.shape(y_pred), tf.constant(np.nan, y_pred.dtype))
            return value, grad, tf.constant(False)
        return value, grad, tf.constant(True)

    def _value_only(self, y_true, y_pred, sample_weight=None):
        """Eagerly, without a tape: the per-batch value of a reduced loss (its gradient
        is checked on fused batches) costs a third of a call with one."""
        return self._value(y_true, y_pred, sample_weight), None, None

    def run(self, mode: str, x: Any, with_grad: bool = True) -> ModeResult:
        fn = (self._value_and_grad if with_grad else self._value_only) if mode == "eager" \
            else self._function(mode, x)
        if mode == "xla":
            self.xla_shapes.add(x.y_pred.shape)
        tf = self._tf
        args = [tf.constant(x.y_true), tf.constant(x.y_pred)]
        if x.sample_weight is not None and self.reduced:
            args.append(tf.constant(x.sample_weight))
        names = ("y_true", "y_pred", "sample_weight")
        before = [np.asarray(a).tobytes() for a in args]
        box: dict[str, Any] = {}

        def target() -> None:
            try:
                box["out"] = fn(*args)
            except Exception as exc:  # the loss under test may raise anything
                kind = type(exc).__name__
                box["error"] = f"raised {kind}: {_first_line(exc).removeprefix(kind + ': ')}"

        if not _within(target, self.time_limit):
            return ModeResult(error=f"timed out: no result after {self.time_limit:g} s")
        mutated = [n for n, a, b in zip(names, args, before, strict=False)
                   if np.asarray(a).tobytes() != b]
        if mutated:
            return ModeResult(error=f"mutated its input {' and '.join(mutated)} in place "
                                    "(the tensor's contents changed during the call)")
        if "error" in box:
            return ModeResult(error=box["error"])
        value, gradient, connected = box["out"]
        if not value.dtype.is_floating:
            return ModeResult(error=f"returned dtype {value.dtype.name}, expected a float dtype")
        result = ModeResult(np.asarray(value.numpy(), np.float64),
                            None if gradient is None else np.asarray(gradient.numpy(),
                                                                     np.float64))
        if self.adapt is not None:
            assert result.value is not None
            result.value, result.grad, problem = self.adapt(result.value, result.grad,
                                                            x.y_pred.shape)
            if problem:
                return ModeResult(error=problem)
        if connected is not None and not bool(connected.numpy()):
            result.error = "the result is not differentiable with respect to y_pred " \
                           "(GradientTape returned None)"
        return result


class _Worker:
    """A daemon thread that runs the loss's calls one after another, so a call that hangs
    can be abandoned after its time limit. One per calling thread, kept between calls:
    starting a thread per call cost more than a small batch's eager call."""

    def __init__(self) -> None:
        self._tasks: queue.SimpleQueue[tuple[Callable[[], None], threading.Event]] = \
            queue.SimpleQueue()
        threading.Thread(target=self._serve, daemon=True, name="lossverify-call").start()

    def _serve(self) -> None:
        while True:
            task, done = self._tasks.get()
            try:
                task()
            except BaseException:  # the task records its own errors; the worker goes on
                pass
            finally:
                done.set()

    def run(self, task: Callable[[], None], limit: float) -> bool:
        done = threading.Event()
        self._tasks.put((task, done))
        return done.wait(limit)


_WORKERS = threading.local()


def _within(task: Callable[[], None], limit: float) -> bool:
    """Run ``task`` in this thread's worker; False if it has not returned after
    ``limit`` seconds (that worker is left to it, and the next call gets a new one)."""
    worker = getattr(_WORKERS, "worker", None)
    if worker is None:
        worker = _WORKERS.worker = _Worker()
    if worker.run(task, limit):
        return True
    _WORKERS.worker = None
    return False


#: XLA compiles once per concrete shape (~0.1 s each on CPU). A batch checked under XLA on
#: its own (a counterexample being shrunk, a batch re-run after a fused call failed) is
#: padded to a multiple of these many rows (and rank-3 inputs of steps) by repeating rows,
#: and a run compiles at most XLA_SHAPE_BUDGET shapes that way.
XLA_ROWS, XLA_STEPS, XLA_SHAPE_BUDGET = 16, 3, 4


def pad_for_xla(x: Any, axis: int = -1) -> Any:
    """``x`` with its batch (and time) axes tiled up to the fixed XLA bucket sizes.

    Rows are independent samples, so the padded batch is a valid input; the xla check
    compares XLA with the graph result on the *same* padded batch. With the class axis
    elsewhere than last (``axis=0``), axis 0 is not a batch axis: ``x`` is left as it is
    (the XLA shape budget still bounds the compiles).
    """
    if axis % x.y_pred.ndim != x.y_pred.ndim - 1:
        return x
    def tile(a: np.ndarray | None, axis: int, size: int) -> np.ndarray | None:
        """Repeat entries along ``axis`` up to the next multiple of ``size`` (never
        dropping any)."""
        if a is None or a.ndim <= axis:
            return a
        n = a.shape[axis]
        return np.take(a, np.arange(size * -(-n // size)) % n, axis=axis)

    y_true, y_pred, w = x.y_true, x.y_pred, x.sample_weight
    y_true, y_pred, w = tile(y_true, 0, XLA_ROWS), tile(y_pred, 0, XLA_ROWS), tile(w, 0, XLA_ROWS)
    assert y_true is not None and y_pred is not None
    if y_pred.ndim == 3:
        y_pred = tile(y_pred, 1, XLA_STEPS)
        y_true = tile(y_true, 1, XLA_STEPS) if y_true.ndim >= 2 else y_true
        w = tile(w, 1, XLA_STEPS) if w is not None and w.ndim >= 2 else w
    return type(x)(y_true, y_pred, w, x.regime, x.notes)


def _first_line(exc: BaseException) -> str:
    """The informative line of an exception: TensorFlow's traced-function errors start
    with "in user code:" and a traceback, and end with the real message."""
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
    if not lines:
        return ""
    if lines[0].startswith("Graph execution error"):
        # "Graph execution error:", "Detected at node ...", the user's frames, then the
        # op's own message, then "[[{{node ...}}]]": keep the op's message
        useful = [ln for ln in lines[1:] if not ln.startswith(("[[", "File ", "Detected at"))]
        return (useful[-1] if useful else lines[0])[:300]
    return (lines[-1] if lines[0].startswith("in user code") else lines[0])[:300]


# ---------------------------------------------------------------------------- checks


def _shape_problem(result: ModeResult, expected: Expected) -> str | None:
    assert result.value is not None
    got, want = result.value.shape, expected.value.shape
    if got == want:
        return None
    if expected.value.ndim == 0:
        return f"returned shape {got}; expected a scalar (the reduced loss)"
    hint = ""
    if len(got) == len(want) + 1 and got[:len(want)] == want:
        hint = (" (a loss that returns one value per element: declare how it reduces, "
                "output=lossverify.Output(per_element='mean' or 'sum'), CLI --per-element)")
    return f"returned shape {got}; expected per-sample {want}{hint}"


def check_value(eager: ModeResult, expected: Expected, rows: int) -> Outcome:
    if eager.value is None:
        return Outcome(False, message=eager.error or "", rows=rows)
    problem = _shape_problem(eager, expected)
    if problem:
        return Outcome(False, message=problem, rows=rows)
    cmp = numerics.compare(eager.value, expected.value, expected.value_allowed, expected.dtype)
    return Outcome(cmp.ok, cmp, "" if cmp.ok else cmp.describe(), rows=rows)


def check_gradient(eager: ModeResult, expected: Expected, rows: int) -> Outcome:
    if eager.value is None or eager.error:
        return Outcome(False, message=eager.error or "", rows=rows)
    problem = _shape_problem(eager, expected)
    if problem:  # the gradient of a sum over other values than the reference's
        return Outcome(False, message=problem, rows=rows)
    assert eager.grad is not None
    if eager.grad.shape != expected.grad.shape:
        return Outcome(False, message=f"gradient shape {eager.grad.shape}, expected "
                       f"{expected.grad.shape}", rows=rows)
    sel = expected.grad_rows
    actual = np.where(sel, eager.grad, 0.0)
    want = np.where(sel, expected.grad, 0.0)
    cmp = numerics.compare(actual, want, np.where(sel, expected.grad_allowed, 1.0),
                           expected.dtype)
    return Outcome(cmp.ok, cmp, "" if cmp.ok else "gradient " + cmp.describe(), rows=rows,
                   skipped_rows=expected.kink_rows, part="gradient")


def check_mode(mode: str, other: ModeResult, eager: ModeResult, expected: Expected,
               rows: int) -> Outcome:
    """``graph`` or ``xla``: that mode's value and gradient against the reference, within
    the same budget as eager (every faithful evaluation lies within it, in any mode).
    ``eager`` is the baseline the message names (eager for graph; graph, on the same
    padded batch, for xla): a mode whose result differs from it and from the reference
    is a computation that differs between modes."""
    if other.value is None:
        if eager.value is None:
            return Outcome(False, message=f"{other.error} (eagerly too)", rows=rows)
        return Outcome(False, message=f"fails under {mode}: {other.error}", rows=rows)
    if eager.value is None:
        return Outcome(False, message=f"eagerly {eager.error}, under {mode} not", rows=rows)
    problem = _shape_problem(other, expected)
    if problem:
        return Outcome(False, message=f"under {mode}, {problem}", rows=rows)
    assert other.grad is not None
    v_tol = numerics.at_least_ulps(expected.value, expected.value_allowed, expected.dtype)
    g_tol = numerics.at_least_ulps(expected.grad, expected.grad_allowed, expected.dtype)
    cmp = numerics.compare(other.value, expected.value, v_tol, expected.dtype)
    if not cmp.ok:
        return Outcome(False, cmp, f"{mode} value differs from the reference: "
                       f"{cmp.describe()}{_baseline(eager.value, cmp)}", rows=rows)
    sel = expected.grad_rows
    if other.grad.shape != expected.grad.shape:
        return Outcome(False, message=f"{mode} gradient shape {other.grad.shape}, expected "
                       f"{expected.grad.shape}", rows=rows)
    gcmp = numerics.compare(np.where(sel, other.grad, 0.0), np.where(sel, expected.grad, 0.0),
                            np.where(sel, g_tol, 1.0), expected.dtype)
    if not gcmp.ok:
        return Outcome(False, gcmp, f"{mode} gradient differs from the reference: "
                       f"{gcmp.describe()}{_baseline(eager.grad, gcmp)}", rows=rows,
                       part="gradient")
    if cmp.worst_ratio >= gcmp.worst_ratio:
        return Outcome(True, cmp, rows=rows)
    return Outcome(True, gcmp, rows=rows, part="gradient")


def _baseline(baseline: np.ndarray | None, cmp: numerics.Comparison) -> str:
    if baseline is None or cmp.index is None or np.shape(baseline) == ():
        return "" if baseline is None else f" (the other mode gives {float(baseline)!r})"
    try:
        return f" (the other mode gives {float(np.asarray(baseline)[cmp.index])!r} there)"
    except IndexError:
        return ""


# ------------------------------------------------------------------ the checks as objects


@dataclass(frozen=True)
class Check:
    """One aspect of a loss compared with the reference.

    ``modes`` are the executor modes whose results it needs, in the order they run; the
    last is the mode it judges (:attr:`mode`). ``compare(results, expected, rows)`` turns
    those results and the reference's budget into an :class:`Outcome`. A check of more
    than one mode compares a compiled mode with the reference (:attr:`compares_modes`).
    ``needs_grad``: whether it reads the gradient (a check that does not lets the
    executor skip it). ``per_batch``: for a reduced ``keras.losses.Loss``, which returns
    one number per call, the check judges each drawn batch in a call of its own (the
    value: a fused call's mean would dilute one batch's error); the others judge fused
    batches, since the gradient has a row per sample (each row ``weight / batch size``
    times the per-sample gradient, compared element by element). ``own_batches``: the
    check draws batches of its own (all of one shape, so one XLA compile serves the
    run), padded when run alone.
    """

    name: str
    modes: tuple[str, ...]
    compare: Callable[[Mapping[str, ModeResult], Expected, int], Outcome]
    own_batches: bool = False
    summary: str = ""
    needs_grad: bool = True
    per_batch: bool = False

    @property
    def mode(self) -> str:
        return self.modes[-1]

    @property
    def compares_modes(self) -> bool:
        return len(self.modes) > 1

    def ready(self, results: Mapping[str, ModeResult]) -> bool:
        """Have all the modes it needs run?"""
        return all(m in results for m in self.modes)


VALUE = Check("value", ("eager",), lambda r, e, rows: check_value(r["eager"], e, rows),
              summary="the eager result against the reference", needs_grad=False,
              per_batch=True)
GRADIENT = Check("gradient", ("eager",),
                 lambda r, e, rows: check_gradient(r["eager"], e, rows),
                 summary="GradientTape's gradient against the analytic gradient")
GRAPH = Check("graph", ("eager", "graph"),
              lambda r, e, rows: check_mode("graph", r["graph"], r["eager"], e, rows),
              summary="a tf.function's value and gradient against the reference")
XLA = Check("xla", ("graph", "xla"),
            lambda r, e, rows: check_mode("xla", r["xla"], r["graph"], e, rows),
            own_batches=True,
            summary="tf.function(jit_compile=True) against the reference")

#: The checks, by name, in the order they are reported.
CHECK: dict[str, Check] = {c.name: c for c in (VALUE, GRADIENT, GRAPH, XLA)}
CHECKS = tuple(CHECK)
#: The executor's modes, in the order a batch runs them.
MODES = ("eager", "graph", "xla")


def modes_for(names: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """The modes the checks ``names`` need, in :data:`MODES` order (eager always: it is
    every other mode's baseline)."""
    needed = {"eager"} | {m for n in names for m in CHECK[n].modes}
    return tuple(m for m in MODES if m in needed)


def compare_all(names: tuple[str, ...] | list[str], results: Mapping[str, ModeResult],
                expected: Expected, rows: int) -> dict[str, Outcome]:
    """The checks ``names`` on results already computed; a check whose modes have not
    all run is left out."""
    return {n: CHECK[n].compare(results, expected, rows) for n in names
            if CHECK[n].ready(results)}

