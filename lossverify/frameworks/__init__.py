"""Which framework a loss runs on, and the executor that runs it there.

:func:`verify` checks a loss in its own framework: TensorFlow (``tf.function``, XLA; the
executor of :mod:`lossverify.checks`), PyTorch (autograd, ``torch.compile``;
:mod:`.torch_backend`), JAX (``jax.value_and_grad``, ``jax.jit``; :mod:`.jax_backend`),
and Keras 3 on whichever of those backends it runs (``keras.backend.backend()``).

The framework is found from the callable (:func:`detect`): the module of the function,
of the class and its bases (an instance), of the function a ``functools.partial`` or a
``functools.wraps`` wrapper holds; failing that, from the modules and functions the
function's code names (``F.cross_entropy`` in a user's torch loss). ``framework=`` names
it instead. How the loss is called (:class:`Call`): in the argument order its framework
uses (``loss(input, target)`` for torch and optax, ``loss(y_true, y_pred)`` for Keras and
TensorFlow; a torch or JAX loss's parameter names decide where they are known), with the
class axis last or, ``layout="channels_first"``, on axis 1 (PyTorch's cross-entropy for
rank > 2): the reference's class-last inputs are moved for the call and the gradient (and
a per-element result) moved back.

NumPy only: nothing here imports a framework until an executor is built, and resolving a
torch or JAX loss imports neither TensorFlow nor Keras.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.metadata
import importlib.util
import inspect
import sys
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lossverify.checks import ModeResult
from lossverify.contract import _Declaration

__all__ = ["FRAMEWORKS", "Call", "Framework", "detect", "resolve"]

#: what ``verify(framework=...)`` accepts
FRAMEWORKS = ("tensorflow", "torch", "jax", "keras")

#: a module's top-level package -> its framework ("keras": the backend decides)
ROOTS = {"torch": "torch", "torchvision": "torch", "torchaudio": "torch",
         "jax": "jax", "jaxlib": "jax", "optax": "jax", "flax": "jax", "equinox": "jax",
         "tensorflow": "tensorflow", "tf_keras": "tensorflow", "keras": "keras"}

#: the distribution whose version a report names, per framework
_DISTRIBUTIONS = {"tensorflow": "tensorflow", "torch": "torch", "jax": "jax",
                  "keras": "keras"}

#: a framework's top-level module -> lossverify's extra that installs it
EXTRA = {"tensorflow": "tf", "keras": "tf", "torch": "torch", "torchvision": "torch",
         "jax": "jax", "jaxlib": "jax", "optax": "jax"}

ORDERS = ("y_true, y_pred", "y_pred, y_true")
LAYOUTS = ("channels_last", "channels_first")
#: parameter names that say which argument is which
_PRED_NAMES = frozenset({"input", "inputs", "logits", "predictions", "prediction", "preds",
                         "pred", "y_pred", "output", "outputs", "scores", "x", "y_hat",
                         "yhat", "z"})
_TRUE_NAMES = frozenset({"target", "targets", "labels", "label", "y_true", "y", "truth",
                         "ground_truth"})


@dataclass(frozen=True)
class Call(_Declaration):
    """How the loss under test is called.

    Args:
        order: ``"y_true, y_pred"`` or ``"y_pred, y_true"``; None (the default): a torch
            or JAX loss by its parameter names (``input, target``, ``logits, labels``,
            ``y_true, y_pred``, ...), else as its framework orders them (torch and optax:
            prediction first; Keras and TensorFlow: ``y_true`` first).
        layout: ``"channels_last"`` (the class axis last, as the references have it) or
            ``"channels_first"``: the class axis on axis 1 (PyTorch's ``cross_entropy``
            on ``(N, C, d1, ...)``). Inputs of rank > 2 are moved for the call; the
            gradient, and a per-element result, are moved back.
    """

    _keyword = "call"
    order: str | None = None
    layout: str = "channels_last"

    def __post_init__(self) -> None:
        order = self.order
        if isinstance(order, tuple | list):
            order = ", ".join(str(o) for o in order)
        if order is not None:
            order = ", ".join(part.strip() for part in str(order).split(","))
            if order not in ORDERS:
                raise ValueError(f"order: expected None, {ORDERS[0]!r} or {ORDERS[1]!r}, got "
                                 f"{self.order!r}")
        object.__setattr__(self, "order", order)
        if self.layout not in LAYOUTS:
            raise ValueError(f"layout: expected one of {LAYOUTS}, got {self.layout!r}")

    @property
    def declared(self) -> bool:
        return self != Call()


# -------------------------------------------------------------------------- detection


@dataclass(frozen=True)
class Detection:
    """What :func:`detect` found: the framework (``"keras"`` before its backend is
    known), whether the module said so (``strong``) or only the names its code uses,
    and where."""

    framework: str
    strong: bool
    where: str


def _unwrapped(loss: Any) -> list[Any]:
    """``loss`` and what it wraps: a partial's function, ``__wrapped__``."""
    chain: list[Any] = []
    obj = loss
    while obj is not None and len(chain) < 8:
        chain.append(obj)
        nxt = obj.func if isinstance(obj, functools.partial) else None
        obj = nxt if nxt is not None else getattr(obj, "__wrapped__", None)
    return chain


def _modules_of(obj: Any) -> list[str]:
    if isinstance(obj, functools.partial):
        return []
    if inspect.isroutine(obj) or isinstance(obj, type):
        owner = getattr(obj, "__self__", None)  # a bound method: its function's module
        mods = [getattr(obj, "__module__", None) or ""]
        if owner is not None and not isinstance(owner, types.ModuleType):
            mods += [c.__module__ for c in type(owner).__mro__]
        return mods
    return [c.__module__ for c in type(obj).__mro__]


def _root(module: str) -> str | None:
    return ROOTS.get(module.split(".")[0]) if module else None


def _code_names(code: types.CodeType) -> set[str]:
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _code_names(const)
    return names


def _function_of(obj: Any) -> types.FunctionType | None:
    obj = getattr(obj, "__func__", obj)
    if isinstance(obj, types.FunctionType):
        return obj
    call = type(obj).__dict__.get("__call__")  # a user's callable class
    if isinstance(call, types.FunctionType):
        return call
    forward = getattr(type(obj), "forward", None)  # an nn.Module of the user's
    return forward if isinstance(forward, types.FunctionType) else None


def _used(fn: types.FunctionType) -> dict[str, set[str]]:
    """framework -> the global or closed-over names ``fn``'s code uses that belong to it."""
    found: dict[str, set[str]] = {}
    values = {n: fn.__globals__[n] for n in _code_names(fn.__code__) if n in fn.__globals__}
    for name, cell in zip(fn.__code__.co_freevars, fn.__closure__ or (), strict=False):
        try:
            values[name] = cell.cell_contents
        except ValueError:  # an empty cell
            continue
    for name, value in values.items():
        if isinstance(value, types.ModuleType):
            modules = [value.__name__]
        elif isinstance(value, type):  # a class of the user's may derive from the
            modules = [c.__module__ for c in value.__mro__]  # framework's (autograd.Function)
        else:
            modules = [getattr(value, "__module__", None) or ""]
        for module in modules:
            root = _root(module) if isinstance(module, str) else None
            if root is not None:
                found.setdefault(root, set()).add(name)
                break
    return found


def detect(loss: Any) -> Detection | None:
    """The framework ``loss`` belongs to, or None where nothing says."""
    chain = _unwrapped(loss)
    for obj in chain:
        for module in _modules_of(obj):
            root = _root(module)
            if root is not None:
                return Detection(root, True, module)
    uses: dict[str, set[str]] = {}
    for obj in chain:
        fn = _function_of(obj)
        if fn is not None:
            for root, names in _used(fn).items():
                uses.setdefault(root, set()).update(names)
    if not uses:
        return None
    if "keras" in uses and len(uses) > 1:
        backend = _keras_backend()
        family = _family("keras", backend)
        if family in uses:  # Keras on that very framework: one framework
            uses.setdefault(family, set()).update(uses.pop("keras"))
    if len(uses) > 1:
        named = "; ".join(f"{k} ({', '.join(sorted(v))})" for k, v in sorted(uses.items()))
        raise ValueError(f"loss: its code uses more than one framework: {named}; name the "
                         f"one it runs on: framework= one of {FRAMEWORKS}")
    (root, names), = uses.items()
    return Detection(root, False, f"its code uses {', '.join(sorted(names))}")


def _keras_backend() -> str:
    import keras  # already imported where a Keras loss exists

    return str(keras.backend.backend())


def _family(framework: str, backend: str | None) -> str:
    """The executor family of a framework (Keras: its backend's)."""
    if framework != "keras":
        return framework
    return {"tensorflow": "tensorflow", "torch": "torch", "jax": "jax"}.get(backend or "",
                                                                            "unsupported")


def _version(framework: str) -> str:
    """The imported module's own version where it has one (it names the build:
    ``2.14.1+cu130``, which the distribution's metadata may not), else the metadata's."""
    own = getattr(sys.modules.get(framework), "__version__", None)
    if isinstance(own, str):
        return str(own)
    try:
        return importlib.metadata.version(_DISTRIBUTIONS[framework])
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _installed(module: str) -> bool:
    return module in sys.modules or importlib.util.find_spec(module) is not None


# ------------------------------------------------------------------------- resolution


@dataclass(frozen=True)
class Framework:
    """The framework a loss is checked in, and how."""

    #: the executor family: "tensorflow", "torch" or "jax"
    name: str
    #: a Keras loss (run on the backend ``name``)
    keras: bool
    #: "torch 2.13.0+cpu", "keras 3.15.1 (jax backend)"
    label: str
    #: how it was chosen: "named", or where it was detected
    found: str
    #: what ``verify(framework=...)`` names it
    requested: str
    call: Call = field(default_factory=Call)
    #: the loss is called as ``loss(y_pred, y_true)``; ``order_found`` says why
    pred_first: bool = False
    order_found: str = ""
    #: what runs each mode ("graph": "torch.compile(backend='inductor', dynamic=True)")
    modes: dict[str, str] = field(default_factory=dict)
    #: checks that do not run in this framework, with the reason
    not_run: dict[str, str] = field(default_factory=dict)
    #: the torch.compile backend (torch only; None: not compiled)
    compile_backend: str | None = None

    def describe(self) -> str:
        """One line for a report."""
        parts = [f"{self.label} ({self.found})"]
        order = "loss(y_pred, y_true)" if self.pred_first else "loss(y_true, y_pred)"
        parts.append(f"called as {order}" + (f" ({self.order_found})"
                                              if self.order_found else ""))
        if self.call.layout == "channels_first":
            parts.append("class axis moved to axis 1 (channels_first)")
        parts += [f"{mode}: {how}" for mode, how in self.modes.items()]
        return "; ".join(parts)

    def executor(self, loss: Callable, reduced: bool, time_limit: float,
                 adapt: Callable[..., tuple[Any, Any, str | None]] | None,
                 batch_coupled: bool = False, per_step: bool = True) -> Any:
        """The executor that runs ``loss`` in this framework (``run(mode, x)``).
        ``per_step``: the loss's result on rank-3 inputs keeps their time axis (a
        per-frame loss; CTC's does not: its frames cannot be padded)."""
        inner_adapt = None if self.call.layout == "channels_first" else adapt
        runner: Any
        if self.name == "torch":
            from lossverify.frameworks.torch_backend import TorchExecutor

            runner = TorchExecutor(loss, reduced, time_limit, inner_adapt, self.pred_first,
                                   self.compile_backend, self.not_run.get("graph", ""))
        elif self.name == "jax":
            from lossverify.frameworks.jax_backend import JaxExecutor

            runner = JaxExecutor(loss, reduced, time_limit, inner_adapt, self.pred_first,
                                 pad=not batch_coupled,
                                 pad_steps=self.call.layout == "channels_last" and per_step)
        else:
            from lossverify import checks as C

            if self.pred_first and not reduced:
                loss = _swapped(loss)
            runner = C.Executor(loss, reduced, time_limit, inner_adapt)
        if self.call.layout == "channels_first":
            return ChannelsFirst(runner, adapt)
        return runner


def _swapped(loss: Callable) -> Callable:
    """``loss`` called as ``loss(y_pred, y_true)`` from ``(y_true, y_pred)``."""
    @functools.wraps(loss)
    def called(y_true: Any, y_pred: Any) -> Any:
        return loss(y_pred, y_true)

    return called


def _order(loss: Any, family: str, keras: bool, call: Call) -> tuple[bool, str]:
    """``(pred_first, why)``."""
    if call.order is not None:
        return call.order == "y_pred, y_true", "declared"
    if keras or family == "tensorflow":
        return False, ""
    forward = getattr(loss, "forward", None)  # an nn.Module: __call__ takes *args
    try:
        params = [p.name for p in inspect.signature(forward if callable(forward) else loss)
                  .parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)][:2]
    except (TypeError, ValueError):
        params = []
    if params and params[0] in _PRED_NAMES or len(params) > 1 and params[1] in _TRUE_NAMES:
        return True, f"its parameters ({', '.join(params)})"
    if params and params[0] in _TRUE_NAMES or len(params) > 1 and params[1] in _PRED_NAMES:
        return False, f"its parameters ({', '.join(params)})"
    return True, f"{family}'s convention, prediction first: declare call=lossverify." \
                 "Call(order=...) if not"


def resolve(loss: Any, framework: str | None = None, call: Call | None = None) -> Framework:
    """The :class:`Framework` to check ``loss`` in: ``framework`` if named (validated
    against what the loss says of itself), else detected; without any sign, TensorFlow
    where it is installed (what ``verify()`` always ran)."""
    call = call or Call()
    if framework is not None and framework not in FRAMEWORKS:
        raise ValueError(f"framework: expected None or one of {FRAMEWORKS}, got "
                         f"{framework!r}")
    found = detect(loss)
    backend = None
    if framework is None:
        if found is None:
            if not _installed("tensorflow"):
                raise ValueError(
                    "loss: cannot tell which framework it runs on (its module and the names "
                    "its code uses say nothing), and TensorFlow, the default, is not "
                    f"installed: name it, framework= one of {FRAMEWORKS}")
            framework, how = "tensorflow", "the default: nothing in the loss names a framework"
        else:
            framework, how = found.framework, f"detected: {found.where}"
    else:
        how = f"named: framework={framework!r}"
        if found is not None and found.strong and found.framework != framework:
            if not (found.framework == "keras" and
                    _family("keras", _keras_backend()) == framework):
                raise ValueError(f"framework: {framework!r} was named, but the loss comes from "
                                 f"{found.framework} ({found.where})")
    keras = framework == "keras"
    if keras:
        backend = _keras_backend()
    family = _family(framework, backend)
    if family == "unsupported":
        raise ValueError(f"loss: Keras runs on the {backend!r} backend, which verify() does "
                         "not run (it runs tensorflow, torch and jax)")
    if keras:
        label = f"keras {_version('keras')} ({backend} backend)"
    else:
        label = f"{family} {_version(family)}"
    pred_first, why = _order(loss, family, keras, call)
    modes: dict[str, str] = {}
    not_run: dict[str, str] = {}
    backend_used = None
    if family == "tensorflow":
        modes = {"eager": "GradientTape", "graph": "tf.function",
                 "xla": "tf.function(jit_compile=True)"}
    elif family == "torch":
        from lossverify.frameworks import torch_backend as TB

        backend_used, note = TB.compile_backend()
        modes["eager"] = "autograd"
        if backend_used is None:
            not_run["graph"] = f"torch.compile cannot run here: {note}"
        else:
            modes["graph"] = f"torch.compile(backend={backend_used!r}, dynamic=True)" + \
                             (f" [{note}]" if note else "")
        not_run["xla"] = TB.XLA_NOT_RUN
    else:
        from lossverify.frameworks import jax_backend as JB

        modes = {"eager": "jax.value_and_grad", "graph": "jax.jit(jax.value_and_grad)"}
        not_run["xla"] = JB.XLA_NOT_RUN
    return Framework(family, keras, label, how, framework, call, pred_first, why, modes,
                     not_run, backend_used)


def identify(spec: Any, loss: Any, framework: Framework | None) -> str | None:
    """:func:`lossverify.specs.identify` among the implementations ``loss`` can be in
    ``framework``: all of them on TensorFlow; Keras's own for Keras on another backend;
    none for a torch or JAX loss. (Recognising one imports its module: a torch run must
    not import Keras, or TensorFlow through the notes' losses.)"""
    from lossverify import specs as S

    if framework is None or framework.name == "tensorflow":
        return S.identify(spec, loss)
    if not framework.keras:
        return None
    own = type(spec.implementations)(
        i for i in spec.implementations if i.target.split(".")[0].split(":")[0] == "keras")
    return S.identify(dataclasses.replace(spec, implementations=own), loss)


# ---------------------------------------------------------------------------- layout


class ChannelsFirst:
    """An executor whose loss takes the class axis on axis 1: inputs of rank > 2 are
    moved there for the call (dense labels with them; sparse labels have no class axis),
    and the gradient (and a per-element result) moved back to the class-last layout of
    the reference, before the declared :class:`lossverify.Output` applies."""

    def __init__(self, inner: Any, adapt: Callable[..., tuple[Any, Any, str | None]] | None):
        self.inner = inner
        self.adapt = adapt

    def notes(self) -> list[str]:
        found: list[str] = getattr(self.inner, "notes", list)()
        return found

    @property
    def xla_shapes(self) -> set[tuple[int, ...]]:
        shapes: set[tuple[int, ...]] = self.inner.xla_shapes
        return shapes

    def run(self, mode: str, x: Any, with_grad: bool = True) -> ModeResult:
        rank = x.y_pred.ndim
        moved = x
        if rank > 2:
            y_true = np.moveaxis(x.y_true, -1, 1) if x.y_true.ndim == rank else x.y_true
            moved = x.replace(y_true=np.ascontiguousarray(y_true),
                              y_pred=np.ascontiguousarray(np.moveaxis(x.y_pred, -1, 1)))
        result: ModeResult = self.inner.run(mode, moved, with_grad)
        if result.value is None:
            return result
        value, grad = result.value, result.grad
        if rank > 2:
            if grad is not None and grad.shape == moved.y_pred.shape:
                grad = np.moveaxis(grad, 1, -1)
            if value.shape == moved.y_pred.shape:  # per element
                value = np.moveaxis(value, 1, -1)
        if self.adapt is not None:
            value, grad, problem = self.adapt(value, grad, x.y_pred.shape)
            if problem:
                return ModeResult(error=problem)
        return ModeResult(value, grad, result.error)
