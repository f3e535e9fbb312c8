"""PyTorch: eager autograd, and ``torch.compile`` as the graph mode.

* ``eager``: the loss on ``torch`` tensors (``y_pred`` a leaf with ``requires_grad``;
  integer labels as ``int64``, torch's index dtype; bfloat16 as ``torch.bfloat16``), and
  ``torch.autograd.grad`` of the sum of its result (in float64).
* ``graph``: the same through ``torch.compile(backend=..., dynamic=True)`` (the forward
  and AOTAutograd's backward compiled). The backend is inductor where a probe compile
  works (it needs a C++ compiler), else ``aot_eager``; ``LOSSVERIFY_TORCH_COMPILE``
  (``inductor``, ``aot_eager``, ``eager`` or ``off``) chooses. Each executor compiles a
  function of its own (a fresh code object: dynamo's cache and its recompile limit are per
  code object), with the recompile limit raised and hitting it an error: dynamo's default
  is to fall back to eager silently, which would pass the graph check uncompiled.
* ``xla``: PyTorch has no XLA mode on CPU (torch_xla is another stack): not run.
"""

from __future__ import annotations

import functools
import inspect
import itertools
import os
import threading
import types
from collections.abc import Callable
from typing import Any

import numpy as np

from lossverify.frameworks.base import FrameworkExecutor, RawResult, first_line

#: the environment variable that chooses torch.compile's backend
ENV = "LOSSVERIFY_TORCH_COMPILE"
BACKENDS = ("inductor", "aot_eager", "eager", "off")
#: seconds the probe compile may take before inductor counts as unusable here
PROBE_LIMIT = 600.0
#: recompiles allowed per compiled function (dynamo's default is 8)
RECOMPILE_LIMIT = 64

_fresh_names = itertools.count()


def version() -> str:
    import torch

    return str(torch.__version__)


def compile_backend(choice: str | None = None) -> tuple[str | None, str]:
    """``(backend, note)``: the ``torch.compile`` backend the graph mode uses (None: the
    graph check is not run) and what was found on the way (a backend that failed its
    probe, and why). ``choice`` (default: ``$LOSSVERIFY_TORCH_COMPILE``, else inductor)
    is probed once per process."""
    choice = choice or os.environ.get(ENV, "").strip() or "inductor"
    if choice not in BACKENDS:
        raise ValueError(f"{ENV}: expected one of {BACKENDS}, got {choice!r}")
    return _compile_backend(choice)


@functools.cache
def _compile_backend(choice: str) -> tuple[str | None, str]:
    if choice == "off":
        return None, f"{ENV}=off"
    order = ("inductor", "aot_eager") if choice == "inductor" else (choice,)
    notes: list[str] = []
    for backend in order:
        problem = _probe(backend)
        if problem is None:
            return backend, "; ".join(notes)
        notes.append(f"torch.compile(backend={backend!r}) does not work here: {problem}")
    return None, "; ".join(notes)


def _probe(backend: str) -> str | None:
    """None if ``torch.compile(backend=backend)`` compiles and differentiates a small
    function here and agrees with eager; else why not."""
    import torch

    def f(z: Any) -> Any:
        return (torch.exp(z) * z).sum(-1)

    box: dict[str, Any] = {}

    def target() -> None:
        try:
            compiled = torch.compile(_fresh(f), backend=backend, dynamic=True)
            z = torch.linspace(-1, 1, 12, dtype=torch.float64).reshape(3, 4)
            z.requires_grad_(True)
            got = compiled(z)
            grad, = torch.autograd.grad(got.sum(), z)
            z2 = z.detach().clone().requires_grad_(True)
            want = f(z2)
            want_grad, = torch.autograd.grad(want.sum(), z2)
            box["ok"] = bool(torch.allclose(got, want) and torch.allclose(grad, want_grad))
        except Exception as exc:  # no C++ compiler, a broken install, ...
            box["error"] = f"{type(exc).__name__}: {first_line(exc)}"

    worker = threading.Thread(target=target, daemon=True)
    worker.start()
    worker.join(PROBE_LIMIT)
    if worker.is_alive():
        return f"its probe compile took over {PROBE_LIMIT:g} s"
    if "error" in box:
        return str(box["error"])
    return None if box.get("ok") else "its probe result differs from eager"


def _fresh(fn: Callable) -> Callable:
    """A copy of ``fn`` with a code object of its own (see the module docstring)."""
    code = fn.__code__.replace(co_name=f"{fn.__code__.co_name}_lossverify{next(_fresh_names)}")
    copy = types.FunctionType(code, fn.__globals__, code.co_name, fn.__defaults__,
                              fn.__closure__)
    return functools.update_wrapper(copy, fn)


def reduction_of(loss: Any) -> str | None:
    """A torch loss's ``reduction`` (an ``nn.Module``'s attribute, a bound or default
    parameter), or None."""
    own = getattr(loss, "reduction", None)
    if isinstance(own, str):
        return own
    bound = getattr(loss, "keywords", None) or {}
    if isinstance(bound.get("reduction"), str):
        return str(bound["reduction"])
    try:
        param = inspect.signature(loss).parameters.get("reduction")
    except (TypeError, ValueError):
        return None
    default = None if param is None else param.default
    return default if isinstance(default, str) else None


class TorchExecutor(FrameworkExecutor):
    name = "torch"
    modes = ("eager", "graph")
    compiled = ("graph",)

    def __init__(self, loss: Callable, reduced: bool, time_limit: float,
                 adapt: Callable[..., tuple[Any, Any, str | None]] | None = None,
                 pred_first: bool = False, backend: str | None = None,
                 unavailable: str = ""):
        super().__init__(loss, reduced, time_limit, adapt, pred_first)
        import torch

        self._torch = torch
        self.backend = backend
        self.reduction = None if reduced else reduction_of(loss)
        if backend is None:
            self.unavailable["graph"] = unavailable or "torch.compile is not used"
        self.unavailable["xla"] = XLA_NOT_RUN
        self._compiled: Callable | None = None
        #: dynamo's graph breaks (reason -> count) and graphs compiled in graph calls
        self.graph_breaks: dict[str, int] = {}
        self.graphs = 0
        self.graph_calls = 0

    def notes(self) -> list[str]:
        out = []
        if self.graph_calls and not self.graphs:
            out.append("graph: torch.compile captured no graph of this loss (dynamo fell "
                       "back to running it eagerly), so the graph check compared eager "
                       "results")
        if self.graph_breaks:
            first = next(iter(self.graph_breaks))
            out.append(f"graph: torch.compile broke the graph {sum(self.graph_breaks.values())}"
                       f" times (those parts ran eagerly); first: {first}")
        return out

    # ------------------------------------------------------------------- conversion

    def _tensor(self, a: np.ndarray, requires_grad: bool = False) -> Any:
        torch = self._torch
        if a.dtype.kind == "V":  # bfloat16 (ml_dtypes): exact through float32
            t = torch.tensor(np.asarray(a, np.float32)).to(torch.bfloat16)
        elif a.dtype.kind in "iub":
            t = torch.tensor(np.asarray(a, np.int64))  # torch's index dtype
        else:
            t = torch.tensor(a)
        return t.requires_grad_(True) if requires_grad else t

    def _bytes(self, t: Any) -> bytes:
        flat = t.detach().reshape(-1).contiguous()
        return bytes(flat.view(self._torch.uint8).numpy().tobytes())

    def _numpy(self, t: Any) -> np.ndarray:
        return np.asarray(t.detach().to(self._torch.float64).cpu().numpy())

    # ------------------------------------------------------------------------ calls

    def _function(self) -> Callable:
        if self._compiled is None:
            invoke = self._invoke

            def forward(y_true: Any, y_pred: Any, sample_weight: Any = None) -> Any:
                return invoke(y_true, y_pred, sample_weight)

            self._compiled = self._torch.compile(_fresh(forward), backend=self.backend,
                                                 dynamic=True)
        return self._compiled

    def _call(self, mode: str, x: Any, state: dict[str, Any]) -> RawResult:
        torch = self._torch
        y_true = self._tensor(x.y_true)
        y_pred = self._tensor(x.y_pred, requires_grad=True)
        w = None
        if self.reduced and x.sample_weight is not None:
            w = self._tensor(x.sample_weight)
        present = [(n, t) for n, t in (("y_true", y_true), ("y_pred", y_pred),
                                       ("sample_weight", w)) if t is not None]
        before = [self._bytes(t) for _, t in present]
        try:
            if mode == "eager":
                value = self._invoke(y_true, y_pred, w)
            else:
                from torch._dynamo.utils import counters

                breaks = dict(counters["graph_break"])
                graphs = counters["stats"]["unique_graphs"]
                try:
                    with torch._dynamo.config.patch(recompile_limit=RECOMPILE_LIMIT,
                                                    fail_on_recompile_limit_hit=True):
                        value = self._function()(y_true, y_pred, w)
                finally:
                    self.graph_calls += 1
                    self.graphs += counters["stats"]["unique_graphs"] - graphs
                    for reason, count in counters["graph_break"].items():
                        if count > breaks.get(reason, 0):
                            line = first_line(Exception(reason))
                            self.graph_breaks[line] = self.graph_breaks.get(line, 0) + \
                                count - breaks.get(reason, 0)
        finally:
            state["mutated"] = [n for (n, t), b in zip(present, before, strict=True)
                                if self._bytes(t) != b]
        if not isinstance(value, torch.Tensor):
            try:
                array = np.asarray(value)
            except Exception:
                return RawResult(problem=f"returned {type(value).__name__}, expected a tensor")
            if array.dtype.kind not in "fV":
                return RawResult(dtype=array.dtype.name, floating=False)
            return RawResult(np.asarray(array, np.float64), None, array.dtype.name,
                        no_gradient=f"it returned {type(value).__name__}, not a torch tensor: "
                                    "autograd cannot see it")
        if not value.dtype.is_floating_point:
            return RawResult(dtype=str(value.dtype).removeprefix("torch."), floating=False)
        if value.ndim == 0 and x.y_pred.ndim >= 1 and self.reduction in ("mean", "sum"):
            return RawResult(problem=f"returned a scalar: reduction={self.reduction!r} reduces "
                                     "over the batch, and the checks compare per-sample values "
                                     "(give loss_params={'reduction': 'none'})")
        numbers = self._numpy(value)
        if not value.requires_grad:
            return RawResult(numbers, None, str(value.dtype),
                        no_gradient="autograd: the result does not require grad (it was "
                                    "detached, or computed outside autograd)")
        grad, = torch.autograd.grad(value.to(torch.float64).sum(), y_pred, allow_unused=True)
        if grad is None:
            return RawResult(numbers, None, str(value.dtype),
                        no_gradient="autograd: the result does not depend on y_pred")
        return RawResult(numbers, self._numpy(grad), str(value.dtype))


XLA_NOT_RUN = ("PyTorch has no XLA mode on CPU (torch_xla is a separate stack); the "
               "compiled mode is the graph check (torch.compile)")
