"""Two adversaries that test the verdict itself, from both sides.

:class:`RoundingAdversary` (no false alarm)
    Runs a TensorFlow loss, value and gradient, with every rounding intermediate result
    rounded to a seeded random *neighbour* of its exact value: down, up, or to nearest,
    per element. That is what another CPU, another SIMD lane, another batch size or
    another kernel may legitimately do (TensorFlow's vectorised softmax rounds a
    saturated probability to ``1 - 2**-24`` in one lane and to ``1.0`` in the next).
    A correct loss run this way must still pass :func:`lossverify.verify`.

    How: the loss's value and gradient are traced once into one TensorFlow graph
    (``tf.function`` with a ``GradientTape`` inside, so the backward ops are in the graph
    too), and the graph is then interpreted op by op, eagerly. An op whose result is in
    general not representable (arithmetic, ``exp``, ``log``, ``softmax``, sums, the
    gradient kernels: :data:`ROUNDING_OPS`) is evaluated in float64 from its
    (already adversarial) inputs, and its result is rounded to the loss's dtype with a
    random direction; exact ops (``max``, ``clip``, ``select``, reshapes, ``neg``) run
    as they are. In float64 itself there is nothing wider to run in: the result is
    moved one unit in the last place, or not, at random.

:class:`Perturbed` (no hole)
    A correct loss with one element of its value or of its gradient changed by a
    relative ``delta`` (or replaced by NaN): :func:`lossverify.verify` must reject it
    wherever ``delta`` exceeds the budget (``tests/test_adversaries.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["ROUNDING_OPS", "Perturbed", "RoundingAdversary", "rounded"]

#: Ops whose exact result is generally not representable, so a faithful implementation
#: may round it either way. Everything else (max, min, clip, select, neg, abs, reshape,
#: tile, gather, one_hot, comparisons, casts that widen) is exact and runs unchanged.
ROUNDING_OPS = frozenset({
    "Add", "AddV2", "AddN", "Sub", "Mul", "MulNoNan", "RealDiv", "Div", "DivNoNan",
    "Reciprocal", "Inv", "Sqrt", "Rsqrt", "Square", "SquaredDifference", "Exp", "Expm1",
    "Log", "Log1p", "Pow", "Sigmoid", "Tanh", "Softplus", "Softmax", "LogSoftmax", "Sum",
    "Mean", "Prod", "MatMul", "BatchMatMulV2", "Xlogy", "Xdivy", "Xlog1py", "SigmoidGrad",
    "TanhGrad", "ReciprocalGrad", "InvGrad", "SqrtGrad", "RsqrtGrad", "SoftplusGrad",
    "SoftmaxCrossEntropyWithLogits", "SparseSoftmaxCrossEntropyWithLogits", "BiasAdd",
    "Cumsum", "Erf", "Erfc", "Lgamma", "Digamma", "Cos", "Sin", "Atan2", "Cast",
})

#: Ops with function-valued attributes or side effects the interpreter does not run.
_UNSUPPORTED = frozenset({"PartitionedCall", "StatefulPartitionedCall", "While",
                          "StatelessWhile", "If", "StatelessIf", "Case"})


def _round_faithfully(exact: np.ndarray, dtype: np.dtype, rng: np.random.Generator
                      ) -> np.ndarray:
    """``exact`` (float64 or extended precision standing for the exact value) rounded to
    ``dtype``, each element to a random one of {nearest, the neighbour below, the
    neighbour above} of the exact value. Exactly representable values stay as they are;
    zeros, infinities and NaNs too. A float64 ``exact`` for a float64 ``dtype`` (nothing
    wider was computed) moves by one unit in the last place, or not."""
    wide = np.longdouble if np.asarray(exact).dtype == np.longdouble else np.float64
    exact = np.asarray(exact, wide)
    choice = rng.integers(0, 3, size=exact.shape)  # 0 nearest, 1 down, 2 up
    if dtype == np.float64 and wide == np.float64:
        with np.errstate(all="ignore"):
            out = np.where(choice == 1, np.nextafter(exact, -np.inf),
                           np.where(choice == 2, np.nextafter(exact, np.inf), exact))
        keep = (exact == 0) | ~np.isfinite(exact)
        return np.where(keep, exact, out)
    with np.errstate(all="ignore"):
        nearest = exact.astype(dtype)
        back = nearest.astype(wide)
        up_step = _next(nearest, dtype, +1)
        down_step = _next(nearest, dtype, -1)
        below = np.where(back > exact, down_step, nearest)  # the neighbour <= exact
        above = np.where(back < exact, up_step, nearest)  # the neighbour >= exact
        out = np.where(choice == 1, below, np.where(choice == 2, above, nearest))
        # beyond the finite range the only faithful result is the overflow itself
        keep = (exact == 0) | ~np.isfinite(exact) | ~np.isfinite(back)
        keep |= ~np.isfinite(out.astype(np.float64))
    return np.where(keep, nearest, out).astype(dtype)


def _sum_like(fn: Callable[..., Any]) -> Callable[..., Any]:
    def reduce(x: np.ndarray, axes: np.ndarray, keep_dims: bool = False) -> Any:
        return fn(x, axis=tuple(int(a) % max(x.ndim, 1) for a in np.ravel(axes)),
                  keepdims=keep_dims)
    return reduce


def _softmax_ld(x: np.ndarray) -> Any:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _log_softmax_ld(x: np.ndarray) -> Any:
    shifted = x - x.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


#: Elementwise ops (and sums) evaluated again in extended precision (``np.longdouble``,
#: 64 mantissa bits on x86) when the loss computes in float64: their float64 result is
#: then rounded faithfully from that wider value, as in the narrower dtypes. Other ops'
#: float64 results move by one unit in the last place or not (a little more than
#: faithful rounding allows).
_WIDE_OPS: dict[str, Callable[..., Any]] = {
    "Add": np.add, "AddV2": np.add, "Sub": np.subtract, "Mul": np.multiply,
    "RealDiv": np.divide, "Div": np.divide,
    "DivNoNan": lambda a, b: np.where(b == 0, 0, a / np.where(b == 0, 1, b)),
    "Exp": np.exp, "Log": np.log, "Log1p": np.log1p, "Expm1": np.expm1, "Pow": np.power,
    "Sqrt": np.sqrt, "Rsqrt": lambda x: 1 / np.sqrt(x), "Reciprocal": lambda x: 1 / x,
    "Square": np.square, "SquaredDifference": lambda a, b: np.square(a - b),
    "Sigmoid": lambda x: 1 / (1 + np.exp(-x)), "Tanh": np.tanh,
    "Softplus": lambda x: np.logaddexp(0, x),
    "Xlogy": lambda x, y: np.where(x == 0, 0, x * np.log(np.where(x == 0, 1, y))),
    "SigmoidGrad": lambda y, dy: dy * y * (1 - y), "TanhGrad": lambda y, dy: dy * (1 - y * y),
    "ReciprocalGrad": lambda y, dy: -dy * y * y, "SqrtGrad": lambda y, dy: dy * 0.5 / y,
    "Softmax": _softmax_ld, "LogSoftmax": _log_softmax_ld, "Sum": _sum_like(np.sum),
    "Mean": _sum_like(np.mean),
}


def _wide_in_float64(op: str, inputs: list[Any], attrs: tuple[Any, ...]) -> Any:
    """The op's result in extended precision for a float64 loss, or None."""
    fn = _WIDE_OPS.get(op)
    if fn is None or np.finfo(np.longdouble).nmant <= 52:
        return None
    arrays = [np.asarray(t.numpy()) for t in inputs]
    wide = [a.astype(np.longdouble) if a.dtype == np.float64 else a for a in arrays]
    with np.errstate(all="ignore"):
        if op in ("Sum", "Mean"):
            keep = bool(dict(zip(attrs[::2], attrs[1::2], strict=False)).get("keep_dims"))
            return fn(wide[0], arrays[1], keep)
        return np.asarray(fn(*wide))


def _next(x: np.ndarray, dtype: np.dtype, direction: int) -> np.ndarray:
    """The next representable ``dtype`` value after ``x`` towards ``direction`` (+1/-1),
    by stepping the bit pattern (bfloat16 has no ``np.nextafter``)."""
    bits = {2: np.int16, 4: np.int32, 8: np.int64}[dtype.itemsize]
    raw = np.array(x, dtype=dtype, copy=True).view(bits).astype(np.int64)
    positive = x.astype(np.float64) > 0
    zero = x.astype(np.float64) == 0
    step = np.where(positive, direction, -direction)
    stepped = (raw + step).astype(bits).view(dtype)
    smallest = np.array(1, bits).view(dtype)
    signed_smallest = (smallest.astype(np.float64) * direction).astype(dtype)
    return np.where(zero, signed_smallest, stepped).astype(dtype)


class RoundingAdversary:
    """Runs ``loss`` with faithful but adversarial rounding; see the module docstring.

    ``loss(y_true, y_pred)`` (or ``loss(y_true, y_pred, sample_weight=w)`` for a
    ``keras.losses.Loss``) is traced once per input signature. :meth:`value_and_grad`
    returns NumPy arrays ``(value, d sum(value) / d y_pred)``. The same ``seed`` and inputs
    give the same roundings.
    """

    def __init__(self, loss: Callable, seed: int = 0):
        import tensorflow as tf

        self._tf = tf
        self.loss = loss
        self.seed = int(seed)
        # the dtype the loss computes in: a keras.losses.Loss its own (float32 unless a
        # policy says otherwise, whatever its inputs), a function its inputs'
        self.compute_dtype = getattr(loss, "dtype", None) if hasattr(loss, "reduction") \
            else None
        self._graphs: dict[tuple[Any, ...], Any] = {}
        self._plans: dict[tuple[Any, ...], Any] = {}
        self.calls = 0

    def _graph(self, args: list[np.ndarray], weighted: bool) -> Any:
        tf = self._tf
        key = tuple((a.shape, a.dtype.str) for a in args)
        if key not in self._graphs:
            def value_and_grad(y_true, y_pred, *weight):
                with tf.GradientTape() as tape:
                    tape.watch(y_pred)
                    if weighted:
                        value = self.loss(y_true, y_pred, sample_weight=weight[0])
                    else:
                        value = self.loss(y_true, y_pred)
                    value = tf.convert_to_tensor(value)
                    total = tf.reduce_sum(tf.cast(value, tf.float64))
                grad = tape.gradient(total, y_pred)
                if grad is None:
                    grad = tf.fill(tf.shape(y_pred), tf.constant(np.nan, y_pred.dtype))
                return value, grad

            specs = [tf.TensorSpec(a.shape, tf.as_dtype(a.dtype)) for a in args]
            fn = tf.function(value_and_grad, autograph=False)
            self._graphs[key] = fn.get_concrete_function(*specs)
        return self._graphs[key]

    def value_and_grad(self, y_true: np.ndarray, y_pred: np.ndarray,
                       sample_weight: np.ndarray | None = None
                       ) -> tuple[np.ndarray, np.ndarray]:
        y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
        args = [y_true, y_pred] + ([np.asarray(sample_weight, np.float32)]
                                   if sample_weight is not None else [])
        concrete = self._graph(args, sample_weight is not None)
        self.calls += 1
        rng = np.random.default_rng([self.seed, self.calls])
        dtype = np.dtype(y_pred.dtype)
        if self.compute_dtype is not None:
            from lossverify import numerics

            dtype = numerics.np_dtype(str(self.compute_dtype))
        key = (id(concrete), dtype.str)
        if key not in self._plans:
            self._plans[key] = _plan(self._tf, concrete, dtype)
        out = _interpret(self._tf, self._plans[key], args, dtype, rng)
        return out[0], out[1]


def rounded(loss: Callable, seed: int = 0) -> Callable:
    """``loss`` evaluated by a :class:`RoundingAdversary`: a callable that
    :func:`lossverify.verify` takes like the loss itself (a ``keras.losses.Loss`` stays a
    ``Loss``, reduced, with ``sample_weight``). Each call rounds afresh (seeded by
    ``seed`` and the call count). Eager and ``tf.function`` only: the adversary runs in
    NumPy (``tf.numpy_function``), which XLA cannot compile, so check it with
    ``checks=("value", "gradient", "graph")``.
    """
    import keras
    import tensorflow as tf

    adversary = RoundingAdversary(loss, seed)

    def call(y_true: Any, y_pred: Any, sample_weight: Any = None) -> Any:
        y_pred = tf.convert_to_tensor(y_pred)
        y_true = tf.convert_to_tensor(y_true)
        extra = [] if sample_weight is None else [tf.convert_to_tensor(sample_weight,
                                                                       tf.float32)]

        def run(*arrays: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            weight = arrays[2] if len(arrays) > 2 else None
            value, grad = adversary.value_and_grad(arrays[0], arrays[1], weight)
            return value.astype(arrays[1].dtype), grad.astype(arrays[1].dtype)

        @tf.custom_gradient
        def evaluate(y_pred_: Any) -> Any:
            value, grad = tf.numpy_function(run, [y_true, y_pred_, *extra],
                                            (y_pred_.dtype, y_pred_.dtype), stateful=True)
            grad = tf.ensure_shape(grad, y_pred_.shape)

            # the adversary's gradient is that of sum(value); Executor sums too (a
            # reduced value is a scalar, per-sample values are independent rows)
            return value, _rowwise_backward(grad)

        return evaluate(y_pred)

    if isinstance(loss, keras.losses.Loss):
        inner = loss

        class _Rounded(keras.losses.Loss):
            def __init__(self) -> None:
                super().__init__(name=f"rounded_{inner.name}", reduction=inner.reduction,
                                 dtype=inner.dtype)

            def __call__(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> Any:
                return call(y_true, y_pred, sample_weight)

            def call(self, y_true: Any, y_pred: Any) -> Any:  # pragma: no cover
                raise NotImplementedError

        wrapped = _Rounded()
        type(wrapped).__name__ = type(inner).__name__
        return wrapped

    def function(y_true: Any, y_pred: Any) -> Any:
        return call(y_true, y_pred)

    function.__name__ = getattr(loss, "__name__", "loss")
    return function


def _rowwise_backward(grad: Any) -> Callable[[Any], Any]:
    """The backward function of a custom gradient whose ``grad`` is that of the sum of
    per-sample values (or of one reduced value): row ``i`` scales with ``upstream[i]``."""
    import tensorflow as tf

    def backward(upstream: Any) -> Any:
        up = tf.reshape(tf.cast(upstream, grad.dtype), tf.concat(
            [tf.shape(upstream), tf.ones([tf.rank(grad) - tf.rank(upstream)], tf.int32)], 0))
        return grad * up

    return backward


def _attr_value(tf: Any, value: Any) -> Any:
    """A NodeDef AttrValue as the eager executor takes it."""
    kind = value.WhichOneof("value")
    if kind == "list":
        lst = value.list
        for field in ("type", "i", "f", "b", "s", "shape"):
            items = list(getattr(lst, field))
            if items:
                if field == "shape":
                    return [tf.TensorShape(s) for s in items]
                return items
        return []
    if kind == "shape":
        return tf.TensorShape(value.shape)
    if kind == "tensor":
        return tf.make_ndarray(value.tensor)
    return getattr(value, kind)


@dataclass(frozen=True)
class _Step:
    """One node of the graph, prepared once: what to run and whether it rounds."""

    name: str
    op: str
    inputs: tuple[tuple[str, int], ...]
    attrs: tuple[Any, ...]
    num_outputs: int
    rounding: bool
    cast: bool  # a narrowing cast to the loss's dtype: its exact value is its input
    widen: int  # the dtype enum whose inputs are widened to float64 (0: none)
    const: Any = None


def _plan(tf: Any, concrete: Any, dtype: np.dtype) -> tuple[list[_Step], list[str],
                                                           list[tuple[str, int]]]:
    """``concrete``'s graph as steps in topological order, its placeholders and outputs."""
    from tensorflow.python.framework import op_def_registry

    graph_def = concrete.graph.as_graph_def()
    if graph_def.library.function:
        names = [f.signature.name for f in graph_def.library.function]
        raise NotImplementedError(f"loss: the rounding adversary interprets plain ops; "
                                  f"this loss calls the functions {names}")
    want = tf.as_dtype(dtype).as_datatype_enum
    wide = tf.float64.as_datatype_enum
    placeholders = [t.name.split(":")[0] for t in concrete.inputs]
    steps: list[_Step] = []
    for node in _topological(graph_def.node):
        if node.name in placeholders:
            continue
        if node.op in _UNSUPPORTED:
            raise NotImplementedError(f"loss: the rounding adversary cannot run op {node.op}")
        if node.op == "Const":
            steps.append(_Step(node.name, "Const", (), (), 1, False, False, 0,
                               tf.constant(tf.make_ndarray(node.attr["value"].tensor))))
            continue
        refs = tuple((i.split(":")[0], int(i.split(":")[1]) if ":" in i else 0)
                     for i in node.input if not i.startswith("^"))
        attrs = {k: v for k, v in node.attr.items() if not k.startswith("_")}
        rounding = node.op in ROUNDING_OPS and any(
            v.WhichOneof("value") == "type" and v.type == want for v in attrs.values())
        cast = False
        if node.op == "Cast":  # only a narrowing cast to the loss's dtype rounds
            rounding = cast = (attrs["DstT"].type == want
                               and tf.as_dtype(attrs["SrcT"].type).size > dtype.itemsize)
        flat: list[Any] = []
        for key, value in attrs.items():
            v = _attr_value(tf, value)
            if rounding and not cast and value.WhichOneof("value") == "type" and v == want:
                v = wide
            flat.extend([key, v])
        op_def = op_def_registry.get(node.op)
        steps.append(_Step(node.name, node.op, refs, tuple(flat),
                           0 if node.op == "NoOp" else _num_outputs(op_def, attrs),
                           rounding, cast, want if rounding and not cast else 0))
    outputs = [(t.name.split(":")[0], int(t.name.split(":")[1])) for t in concrete.outputs]
    return steps, placeholders, outputs


def _interpret(tf: Any, plan: Any, args: list[np.ndarray], dtype: np.dtype,
               rng: np.random.Generator) -> list[np.ndarray]:
    """Evaluate a :func:`_plan` op by op with faithful random rounding."""
    from tensorflow.python.eager import context, execute

    steps, placeholders, outputs = plan
    values: dict[str, list[Any]] = {}
    for name, arg in zip(placeholders, args, strict=False):
        values[name] = [tf.constant(arg)]
    ctx = context.context()
    for step in steps:
        if step.const is not None:
            values[step.name] = [step.const]
            continue
        if step.op == "NoOp":
            values[step.name] = []
            continue
        inputs = [values[n][i] for n, i in step.inputs]
        if step.cast:
            results = [tf.cast(inputs[0], tf.float64)]
        else:
            if step.widen:
                inputs = [tf.cast(t, tf.float64) if t.dtype.as_datatype_enum == step.widen
                          else t for t in inputs]
            results = execute.execute(step.op, step.num_outputs, inputs, step.attrs, ctx,
                                      name=None)
        if step.rounding:
            wide = _wide_in_float64(step.op, inputs, step.attrs) \
                if dtype == np.float64 and len(results) == 1 else None
            results = [tf.constant(_round_faithfully(r.numpy() if wide is None else wide,
                                                     dtype, rng))
                       if r.dtype == tf.float64 else r for r in results]
        values[step.name] = list(results)
    return [np.asarray(values[n][i].numpy()) for n, i in outputs]


def _num_outputs(op_def: Any, attrs: Any) -> int:
    count = 0
    for arg in op_def.output_arg:
        if arg.number_attr:
            count += attrs[arg.number_attr].i
        elif arg.type_list_attr:
            count += len(attrs[arg.type_list_attr].list.type)
        else:
            count += 1
    return count


def _topological(nodes: Any) -> list[Any]:
    by_name = {n.name: n for n in nodes}
    order: list[Any] = []
    state: dict[str, int] = {}
    for root in by_name:
        stack = [(root, False)]
        while stack:
            name, done = stack.pop()
            if done:
                state[name] = 2
                order.append(by_name[name])
                continue
            if state.get(name):
                continue
            state[name] = 1
            stack.append((name, True))
            for i in by_name[name].input:
                dep = i.lstrip("^").split(":")[0]
                if not state.get(dep):
                    stack.append((dep, False))
    return order


class Perturbed:
    """A loss whose value or gradient is wrong at one place, for the other side.

    ``target`` is ``"value"`` or ``"gradient"``; ``where(y_true, y_pred, result)`` (NumPy
    arrays, ``result`` the correct value or gradient) returns a boolean mask of the elements
    to change (the first True one, or every one with ``every=True``). Each is multiplied
    by ``1 + delta``, becomes NaN with ``delta=None``, or, with ``beyond_budget=(reference,
    params, factor)``, moves away from the reference by ``factor`` times its budget
    (:func:`lossverify.tolerance.budget`). For per-sample functions (not reduced
    ``keras.losses.Loss`` instances). It wraps nothing :func:`lossverify.verify` would
    recognise, so no known deviation excuses it.
    """

    def __init__(self, loss: Callable, target: str, where: Callable[..., np.ndarray],
                 delta: float | None, every: bool = False,
                 beyond_budget: tuple[str, dict[str, Any], float] | None = None):
        if target not in ("value", "gradient"):
            raise ValueError(f"target: expected 'value' or 'gradient', got {target!r}")
        self.loss, self.target, self.where, self.delta, self.every = (loss, target, where,
                                                                       delta, every)
        self.beyond_budget = beyond_budget
        self.__name__ = f"perturbed_{getattr(loss, '__name__', 'loss')}"

    def _mask(self, y_true: np.ndarray, y_pred: np.ndarray, result: np.ndarray) -> np.ndarray:
        mask = np.asarray(self.where(y_true, y_pred, result), bool)
        mask = np.broadcast_to(mask, np.shape(result)).copy()
        if not self.every and mask.any():
            first = np.unravel_index(int(np.argmax(mask)), mask.shape)
            mask[:] = False
            mask[first] = True
        return mask

    def changed(self, y_true: np.ndarray, y_pred: np.ndarray, result: np.ndarray
                ) -> np.ndarray:
        """``result`` (NumPy) with the chosen elements changed."""
        out = np.array(result, dtype=np.float64, copy=True)
        mask = self._mask(y_true, y_pred, result)
        if self.beyond_budget is not None:
            from lossverify import tolerance as T

            reference, params, factor = self.beyond_budget
            b = T.budget(reference, params, y_true, y_pred, dtype=str(np.asarray(y_pred).dtype))
            ref = b.grad if self.target == "gradient" else b.value
            allowed = b.grad_allowed if self.target == "gradient" else b.value_allowed
            step = factor * np.broadcast_to(allowed, out.shape)
            out = np.where(mask, np.where(out >= ref, ref + step, ref - step), out)
        elif self.delta is None:
            out[mask] = np.nan
        else:
            out[mask] *= 1.0 + self.delta
        return out.astype(np.asarray(result).dtype)

    def _apply(self, y_true: Any, y_pred: Any, result: Any) -> Any:
        import tensorflow as tf

        out = tf.numpy_function(self.changed, [y_true, y_pred, result], result.dtype,
                                stateful=False)
        return tf.ensure_shape(out, result.shape)

    def __call__(self, y_true: Any, y_pred: Any) -> Any:
        import tensorflow as tf

        y_true = tf.convert_to_tensor(y_true)

        @tf.custom_gradient
        def run(y_pred_: Any) -> Any:
            with tf.GradientTape() as tape:
                tape.watch(y_pred_)
                value = tf.convert_to_tensor(self.loss(y_true, y_pred_))
            grad = tape.gradient(value, y_pred_)
            if self.target == "value":
                value = self._apply(y_true, y_pred_, value)
            else:
                grad = self._apply(y_true, y_pred_, grad)

            return value, _rowwise_backward(grad)

        return run(tf.convert_to_tensor(y_pred))


# ------------------------------------------------------------------ measurements


def _draws(reference: str, params: dict[str, Any], dtype: str, n: int, seed: int,
           with_sample_weight: bool) -> list[Any]:
    """``n`` seeded batches from the reference's strategy, rounded to ``dtype``."""
    from lossverify import checks as C
    from lossverify import strategies as lst
    from lossverify.search import draw_batches

    strategy = lst.loss_inputs(reference, with_sample_weight=with_sample_weight, **params)
    return [C.cast_inputs(x, dtype) for x in draw_batches(strategy, n, seed, dtype)]


def rounding_sweep(loss: Callable, reference: str, params: dict[str, Any], *,
                   dtype: str = "float32", seeds: Any = range(20), draws: int = 20,
                   draw_seed: int = 0) -> dict[str, Any]:
    """Run ``loss`` under :class:`RoundingAdversary` with each of ``seeds`` on ``draws``
    seeded batches and compare with :func:`lossverify.tolerance.budget`: returns the
    worst ``error / allowed`` of the value and of the gradient, and the failures (the
    batch, the seed, the part) where one exceeded 1. Where the implementation has a
    known deviation whose precondition holds (a NaN it is known for), elements it
    explains are not counted (the same rule as :func:`lossverify.verify`).
    """
    import keras

    from lossverify import checks as C
    from lossverify import specs as S
    from lossverify import tolerance as T
    from lossverify.session import explaining

    reduced = isinstance(loss, keras.losses.Loss)
    spec = S.get_spec(reference)
    label = S.identify(spec, loss)
    deviations = [d for d in spec.deviations_for(params) if label in d.implementations]
    compute = str(getattr(loss, "dtype", dtype)) if reduced else dtype
    reduction = getattr(loss, "reduction", "sum_over_batch_size") if reduced else "none"
    worst = {"value": 0.0, "gradient": 0.0}
    failures: list[str] = []
    batches = _draws(reference, params, dtype, draws, draw_seed, reduced)
    adversary = RoundingAdversary(loss)  # one tracing per shape serves every seed
    for seed in seeds:
        adversary.seed, adversary.calls = int(seed), 0
        for x in batches:
            weight = x.sample_weight if reduced else None
            value, grad = adversary.value_and_grad(x.y_true, x.y_pred, weight)
            seen = C.cast_inputs(x, compute)
            budget = T.budget(reference, params, seen.y_true, seen.y_pred, dtype=compute,
                              input_dtype=dtype, sample_weight=weight, reduced=reduced,
                              reduction=reduction)
            result = C.ModeResult(np.asarray(value, np.float64), np.asarray(grad, np.float64))
            for part, outcome in (("value", C.check_value(result, budget, x.rows)),
                                  ("gradient", C.check_gradient(result, budget, x.rows))):
                if outcome.ok and outcome.comparison is not None:
                    worst[part] = max(worst[part], outcome.comparison.worst_ratio)
                elif not outcome.ok and explaining(deviations, part, x, params,
                                                    outcome) is None:
                    failures.append(f"seed {seed}, {part}: {outcome.message}\n{x!r}")
    return {"worst": worst, "failures": failures, "runs": len(list(seeds)) * len(batches)}


def smallest_detected(reference: str, params: dict[str, Any], *, dtype: str = "float32",
                      draws: int = 40, seed: int = 0) -> dict[str, dict[str, float]]:
    """Per regime the strategies draw: the smallest relative change ``delta`` of one
    element that the budget detects, ``allowed / |reference|``, for each sample's value
    and for each sample's largest gradient element (median and largest over the drawn
    samples: ``max`` is the ``delta`` detected in *every* sample of that regime), and
    ``gradient row max``: the largest budget of any gradient element of a sample relative
    to that sample's largest |gradient| (where a gradient of 1e-27 sits below float32's
    resolution, a relative ``delta`` of it means little; relative to the row it does)."""
    from lossverify import tolerance as T

    by_regime: dict[str, dict[str, list[float]]] = {}
    for x in _draws(reference, params, dtype, draws, seed, False):
        b = T.budget(reference, params, x.y_true, x.y_pred, dtype=dtype)
        axis = params.get("axis", -1)
        if not isinstance(axis, int):  # Dice's None or a tuple: rows of y_pred as they are
            axis = -1
        grad = np.moveaxis(np.where(b.grad_rows, np.abs(b.grad), 0.0), axis, -1)
        allowed = np.moveaxis(b.grad_allowed, axis, -1)
        top = np.argmax(grad, axis=-1)[..., None]
        g = np.take_along_axis(grad, top, -1)[..., 0]
        ga = np.take_along_axis(allowed, top, -1)[..., 0]
        row_allowed = np.where(np.moveaxis(b.grad_rows, axis, -1), allowed, 0.0).max(-1)
        with np.errstate(divide="ignore", invalid="ignore"):
            rel_v = np.asarray(b.value_allowed / np.abs(b.value)).ravel()
            rel_g = (ga / g).ravel()
            rel_row = (row_allowed / g).ravel()
        entry = by_regime.setdefault(x.regime, {"value": [], "gradient": [], "row": []})
        entry["value"].extend(float(v) for v in rel_v if np.isfinite(v))
        entry["gradient"].extend(float(v) for v in rel_g if np.isfinite(v))
        entry["row"].extend(float(v) for v in rel_row if np.isfinite(v))
    out: dict[str, dict[str, float]] = {}
    for regime, parts in sorted(by_regime.items()):
        stats = {f"{part} {stat}": float(fn(parts[part])) if parts[part] else float("nan")
                 for part in ("value", "gradient")
                 for stat, fn in (("median", np.median), ("max", np.max))}
        stats["gradient row max"] = float(np.max(parts["row"])) if parts["row"] \
            else float("nan")
        out[regime] = stats
    return out


def main(argv: list[str] | None = None) -> int:
    """``python -m lossverify.adversary``: both adversaries over every implementation of
    every spec's default grid; prints (and with ``--json`` writes) the worst error /
    allowed under the rounding adversary per implementation and dtype, and the smallest
    relative change the budget detects per reference and regime. Exit 1 if any correct
    loss failed under the rounding adversary."""
    import argparse
    import json
    import os
    import time

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from lossverify import specs as S

    parser = argparse.ArgumentParser(prog="python -m lossverify.adversary",
                                     description=main.__doc__)
    parser.add_argument("--seeds", type=int, default=20, help="rounding seeds (default 20)")
    parser.add_argument("--draws", type=int, default=5, help="batches per run (default 5)")
    parser.add_argument("--dtypes", default="float32,float64,float16,bfloat16")
    parser.add_argument("--only", action="append", default=[], metavar="REFERENCE")
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args(argv)
    dtypes = args.dtypes.split(",")
    rows: list[dict[str, Any]] = []
    failed = 0
    start = time.monotonic()
    for name, spec in S.SPECS.items():
        if args.only and name not in args.only:
            continue
        for params in spec.default_grid:
            for impl in spec.implementations:
                loss = S.build_implementation(impl, params)
                for dtype in dtypes:
                    r = rounding_sweep(loss, name, dict(params), dtype=dtype,
                                       seeds=range(args.seeds), draws=args.draws)
                    failed += bool(r["failures"])
                    rows.append({"reference": name, "implementation": impl.label,
                                 "params": dict(params), "dtype": dtype,
                                 "worst_value": r["worst"]["value"],
                                 "worst_gradient": r["worst"]["gradient"],
                                 "failures": r["failures"][:3]})
                    print(f"{impl.label:<45} {str(dict(params)):<55} {dtype:<9} value "
                          f"{r['worst']['value']:.3f} gradient {r['worst']['gradient']:.3f}"
                          f"{'  FAIL ' + str(len(r['failures'])) if r['failures'] else ''}",
                          flush=True)
    detected = {f"{name} {params}": smallest_detected(name, dict(params))
                for name, spec in S.SPECS.items() if not args.only or name in args.only
                for params in spec.default_grid}
    for key, regimes in detected.items():
        for regime, stats in regimes.items():
            print(f"smallest detected delta: {key:<70} {regime:<12} " + ", ".join(
                f"{k} {v:.3g}" for k, v in stats.items()))
    worst = {part: max((r[f"worst_{part}"] for r in rows), default=0.0)
             for part in ("value", "gradient")}
    print(f"{len(rows)} runs, {failed} with failures; worst error/allowed: value "
          f"{worst['value']:.3f}, gradient {worst['gradient']:.3f}; "
          f"{time.monotonic() - start:.0f} s")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"runs": rows, "smallest_detected": detected, "worst": worst,
                       "seeds": args.seeds, "draws": args.draws}, fh, indent=1)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
