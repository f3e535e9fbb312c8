"""JAX: ``jax.value_and_grad`` eagerly, and ``jax.jit`` of it as the graph mode.

* ``eager``: ``jax.value_and_grad`` of the sum of the loss's result, op by op (no jit);
  the value is returned beside the sum, so one call gives both.
* ``graph``: ``jax.jit`` of the same function: one XLA computation, fused.
* ``xla``: not run: ``jax.jit`` *is* XLA, so the graph check already is the XLA-compiled
  run (an xla check would run the same executable again).

float64 inputs run under ``jax.enable_x64(True)`` (a context, in the call's thread only:
enabling x64 for the whole process would change every other JAX computation's default
dtypes). JAX compiles per concrete shape, even op by op: a per-sample loss's batch is
padded to :func:`lossverify.frameworks.base.padded_rows` rows (its rows repeated) and the
results sliced back, so a run compiles a few shapes instead of one per drawn batch (13 min
against 72 s was measured); a reduced ``keras.losses.Loss`` and a batch-coupled loss are
run as drawn (repeated rows would change their values). JAX arrays are immutable: there
is no input to mutate.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from lossverify.frameworks.base import (
    FrameworkExecutor,
    RawResult,
    first_line,
    pad,
    padded_shape,
)

XLA_NOT_RUN = ("jax.jit is XLA: the graph check is the XLA-compiled run (jax.jit of "
               "value_and_grad), so an xla check would run the same executable again")

#: JAX's errors for a function it cannot trace (it leaves JAX for NumPy or Python)
_UNTRACEABLE = ("TracerArrayConversionError", "ConcretizationTypeError",
                "TracerBoolConversionError", "TracerIntegerConversionError")


def version() -> str:
    import jax

    return str(jax.__version__)


class JaxExecutor(FrameworkExecutor):
    name = "jax"
    modes = ("eager", "graph")
    compiled = ("graph",)
    compiles_eagerly = True

    def __init__(self, loss: Callable, reduced: bool, time_limit: float,
                 adapt: Callable[..., tuple[Any, Any, str | None]] | None = None,
                 pred_first: bool = False, pad: bool = True, pad_steps: bool = True):
        super().__init__(loss, reduced, time_limit, adapt, pred_first)
        import jax

        self._jax = jax
        #: pad batches to fixed sizes (rows independent, a per-sample result), and time
        #: steps too (axis 1 is time, not the class axis)
        self.pad = pad and not reduced
        self.pad_steps = pad_steps
        self.unavailable["xla"] = XLA_NOT_RUN
        self._value_and_grad = jax.value_and_grad(self._total, has_aux=True)
        self._jitted = jax.jit(self._value_and_grad)

    def _total(self, y_pred: Any, y_true: Any, sample_weight: Any) -> tuple[Any, Any]:
        jnp = self._jax.numpy
        value = jnp.asarray(self._invoke(y_true, y_pred, sample_weight))
        if not jnp.issubdtype(value.dtype, jnp.floating):
            return jnp.zeros((), jnp.float32), value
        return jnp.sum(value), value

    def _padded(self, x: Any) -> Any:
        return pad(x, *padded_shape(x.y_pred.shape, self.pad_steps)) if self.pad else x

    def _signature(self, mode: str, x: Any) -> tuple[Any, ...]:
        return super()._signature(mode, self._padded(x))

    def _call(self, mode: str, x: Any, state: dict[str, Any]) -> RawResult:
        jax = self._jax
        n, t = x.y_pred.shape[0], x.y_pred.shape[1] if x.y_pred.ndim == 3 else 0
        xp = self._padded(x)
        x64 = any(a is not None and a.dtype == np.float64
                  for a in (xp.y_true, xp.y_pred, xp.sample_weight))
        with jax.enable_x64(x64):
            y_true, y_pred = jax.numpy.asarray(xp.y_true), jax.numpy.asarray(xp.y_pred)
            w = None
            if self.reduced and xp.sample_weight is not None:
                w = jax.numpy.asarray(xp.sample_weight)
            fn = self._value_and_grad if mode == "eager" else self._jitted
            try:
                (_, value), grad = fn(y_pred, y_true, w)
            except Exception as exc:
                if mode != "eager" or type(exc).__name__ not in _UNTRACEABLE:
                    raise
                # not traceable by JAX: the value as it computes it, and no gradient
                value = jax.numpy.asarray(self._invoke(y_true, y_pred, w))
                grad = None
                why = f"jax.value_and_grad cannot trace it: {type(exc).__name__}: " \
                      f"{first_line(exc)}"
            else:
                why = ""
            value = np.asarray(value)
            if value.dtype.kind not in "fV":
                return RawResult(dtype=value.dtype.name, floating=False)
            numbers = np.asarray(value, np.float64)
            grads = None if grad is None else np.asarray(np.asarray(grad), np.float64)
        if xp is not x:  # the drawn entries' results: the drawn rows, and the drawn
            # time steps where the result has that axis (a result of another shape is left
            # as it is, for the shape check to name)
            index = (slice(0, n), slice(0, t)) if t else (slice(0, n),)
            grads = None if grads is None else grads[index]
            if numbers.shape[:1] == xp.y_pred.shape[:1]:
                numbers = numbers[:n]
                if t and numbers.shape[1:2] == xp.y_pred.shape[1:2]:
                    numbers = numbers[:, :t]
        return RawResult(numbers, grads, str(value.dtype), no_gradient=why)
