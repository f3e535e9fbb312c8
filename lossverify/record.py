"""What lossverify knows about one loss, in one record (NumPy only).

A :class:`LossRecord` names the reference (its evaluator: value, analytic gradient and
error scales), how its inputs are drawn (an input kind of :mod:`lossverify.strategies`),
each parameter (default, validator, the values the thorough run sweeps), the settings the
default run checks, the TensorFlow implementations measured against it, the invariants
that relate it to other records (a sparse loss and its dense twin, a focal loss and the
cross-entropy it reduces to), and the known upstream deviations of those
implementations. Every table elsewhere (the evaluator table, input kinds, parameter
validation, thorough grids, invariant cases, pitfall detectors, the tests' tables) is
derived from the records in :mod:`lossverify.catalogue`.

Implementations are named as ``"module:attr"`` and built on demand by
:func:`build_implementation`, so nothing here imports TensorFlow.
"""

from __future__ import annotations

import importlib
import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["MATRIX_FRAMEWORKS", "Counterpart", "Implementation", "KnownDeviation",
           "LossRecord", "Param", "Relation", "build_implementation", "identify",
           "keras_pair"]


@dataclass(frozen=True)
class Param:
    """A parameter of a reference: its name, default, validator (raises a clear error
    naming the parameter; ``None``: any value), and the values the thorough run sweeps
    (empty: the default only)."""

    name: str
    default: Any = None
    check: Callable[[Any], Any] | None = None
    thorough: tuple[Any, ...] = ()

    def validate(self, value: Any) -> None:
        if self.check is not None:
            self.check(value)


@dataclass(frozen=True)
class Relation:
    """An invariant that relates this record's loss to another record's.

    ``invariant`` is a name in :data:`lossverify.invariants.INVARIANTS` that takes two
    losses; ``other`` the record of the second loss, called with this loss's parameters
    named in ``keep`` plus ``force``. ``factor`` names a parameter of this loss that
    scales the other's value (a focal loss's ``alpha``); ``when`` limits the relation to
    parameter settings it holds for; ``at`` overrides parameters of this loss for the
    relation (a focal loss at ``gamma = 0``)."""

    invariant: str
    other: str
    keep: tuple[str, ...] = ()
    force: Mapping[str, Any] = field(default_factory=dict)
    factor: str | None = None
    when: Callable[[Mapping[str, Any]], bool] | None = None
    at: Mapping[str, Any] = field(default_factory=dict)

    def holds_for(self, params: Mapping[str, Any]) -> bool:
        return self.when is None or bool(self.when(params))

    def other_params(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """The other loss's parameters for this loss's ``params``."""
        return {**{k: v for k, v in params.items() if k in self.keep}, **self.force}


@dataclass(frozen=True)
class KnownDeviation:
    """A documented place where one implementation departs from the reference semantics.

    A deviation belongs to the implementations that have it (``implementations``: labels
    of :class:`Implementation` entries, ``keras.losses.BinaryFocalCrossentropy``) and to
    a symptom in a place: ``applies(params)`` says whether the parameter setting can
    show it, ``at(x, params)`` marks the elements of ``y_pred`` (a boolean array of its
    shape) where its precondition holds for a drawn input (a
    :class:`~lossverify.inputs.LossInputs`), and ``symptom`` says what goes wrong
    there: ``"nonfinite"`` (NaN or Inf where the reference is finite) or ``"error"`` (any
    error beyond the budget). ``frameworks``: the executor families (``"tensorflow"``,
    ``"torch"``, ``"jax"``) it was shown in; Keras 3's losses run on each, and a
    deviation shown on TensorFlow does not excuse Keras on JAX until shown there. A
    failing comparison of one of ``checks`` is reported as this deviation only if
    *every* failing element lies where the precondition holds and shows the symptom
    (:meth:`explains`); anything else in the same batch is judged
    as usual. Any other loss's failure that looks like it is a FAIL that names it.
    """

    id: str
    checks: tuple[str, ...]
    summary: str
    reproducer: str
    applies: Callable[[Mapping[str, Any]], bool]
    at: Callable[[Any, Mapping[str, Any]], np.ndarray]
    implementations: tuple[str, ...] = ()
    symptom: str = "nonfinite"
    frameworks: tuple[str, ...] = ("tensorflow",)

    def matches(self, x: Any, params: Mapping[str, Any]) -> bool:
        """Does the precondition hold anywhere in ``x``?"""
        return bool(np.any(self.at(x, params)))

    def where(self, x: Any, params: Mapping[str, Any], part: str,
              shape: tuple[int, ...]) -> np.ndarray:
        """The precondition over the compared array of ``shape``: ``y_pred``'s elements
        for a gradient, samples (any element of the sample) for per-sample values, the
        whole batch for a reduced value. A shape that fits neither: the whole batch."""
        elements = np.asarray(self.at(x, params), bool)
        if part == "gradient" and elements.shape == tuple(shape):
            return elements
        axis = params.get("axis", -1)
        per_sample = elements.any(axis=axis) if elements.ndim else elements
        if part == "value" and per_sample.shape == tuple(shape):
            return per_sample
        if part == "value" and elements.shape[:len(shape)] == tuple(shape) and shape:
            # losses over several axes of y_pred (CTC: (batch,) of (batch, time, classes))
            return np.asarray(elements.reshape(*shape, -1).any(axis=-1))
        return np.full(shape, bool(elements.any()))

    def explains(self, x: Any, params: Mapping[str, Any], part: str,
                 failing: np.ndarray, nonfinite: np.ndarray) -> bool:
        """Is every failing element one where the precondition holds and shows the
        symptom?"""
        failing = np.asarray(failing, bool)
        if not failing.any():
            return False
        allowed = self.where(x, params, part, failing.shape)
        if self.symptom == "nonfinite":
            allowed = allowed & np.asarray(nonfinite, bool)
        return bool(np.all(allowed[failing]))


@dataclass(frozen=True)
class Implementation:
    """A TensorFlow implementation to verify: ``target`` is ``"module:attr"``.

    ``kind`` is ``"class"`` (call ``attr(**params)`` for a ``keras.losses.Loss``),
    ``"function"`` (``attr`` is the loss; params are passed at call time) or
    ``"factory"`` (``attr(**params)`` returns the loss function). ``drop`` lists
    reference parameters it does not take; ``extra`` adds fixed keyword arguments.
    """

    label: str
    form: str
    target: str
    kind: str
    drop: tuple[str, ...] = ()
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def owner(self) -> str:
        """``"keras"`` or ``"notes"``: the label's first part."""
        return self.label.split(".", 1)[0]

    @property
    def attr(self) -> str:
        return self.target.partition(":")[2]


#: The conformance matrix's frameworks (``lossverify verify --frameworks``): Keras on
#: TensorFlow (the records' implementations, the default run), the PyTorch and JAX
#: counterparts, and Keras 3's own losses on the JAX and PyTorch backends.
MATRIX_FRAMEWORKS = ("tensorflow", "torch", "jax", "keras-jax", "keras-torch")


def _always(params: Mapping[str, Any]) -> bool:
    return True


def _no_params(params: Mapping[str, Any]) -> dict[str, Any]:
    return {}


@dataclass(frozen=True)
class Counterpart:
    """Another framework's implementation of the reference, a row of the conformance
    matrix: ``target`` (``"module:attr"``) is the framework's own loss, called as
    :func:`lossverify.verify` calls a loss of that ``framework`` (``"torch"`` or
    ``"jax"``).

    Its documented conventions are declared, never failed: ``loss_params(params)`` gives
    the loss's own parameters for a reference setting (``reduction="none"``, torchvision's
    ``alpha=-1`` for no balancing, ``eps=1e-7``), ``output`` how its result relates to
    the reference's per-sample loss (per element, a constant factor: optax's 0.5 in
    ``l2_loss``; a mapping of :class:`lossverify.Output`'s fields, or a function of the
    setting), ``layout`` where its class axis is, ``domain`` the inputs on which its
    convention and the reference's coincide (a mapping of :class:`lossverify.Domain`'s
    fields; the README's matrix names what is left out). ``adapter`` (``"module:attr"``,
    in :mod:`lossverify.frameworks.adapters`) wraps the loss where the conventions differ
    in more than parameters (CTC's label masks and lengths). ``convention`` says all of
    that in words, for the matrix's convention column. ``when`` selects the reference
    settings it implements; ``settings`` adds settings the matrix checks it at beyond
    the record's default grid. Known deviations name it by ``label``.
    """

    label: str
    framework: str
    target: str
    convention: str = ""
    when: Callable[[Mapping[str, Any]], bool] = _always
    settings: tuple[Mapping[str, Any], ...] = ()
    loss_params: Callable[[Mapping[str, Any]], Mapping[str, Any]] = _no_params
    output: Mapping[str, Any] | Callable[[Mapping[str, Any]], Mapping[str, Any]] = \
        field(default_factory=dict)
    layout: str = "channels_last"
    domain: Mapping[str, Any] = field(default_factory=dict)
    adapter: str = ""

    def __post_init__(self) -> None:
        if self.framework not in ("torch", "jax"):
            raise ValueError(f"framework: expected 'torch' or 'jax', got {self.framework!r}")

    def output_for(self, params: Mapping[str, Any]) -> dict[str, Any]:
        out = self.output(params) if callable(self.output) else self.output
        return dict(out)

    @property
    def package(self) -> str:
        """The distribution whose version labels the row (``torchvision``, ``optax``)."""
        return self.target.split(".")[0].split(":")[0]


def keras_pair(cls: str, fn: str, drop: tuple[str, ...] = ()) -> tuple[Implementation, ...]:
    """Keras's class ``keras.losses.<cls>`` and function ``keras.losses.<fn>``."""
    return (Implementation(f"keras.losses.{cls}", "class", f"keras.losses:{cls}", "class",
                           drop),
            Implementation(f"keras.losses.{fn}", "function", f"keras.losses:{fn}",
                           "function", drop))


#: Single-loss invariants that hold for any loss whose samples are independent.
ROW_INVARIANTS = ("non_negative", "batch_permutation", "batch_split")


@dataclass(frozen=True)
class LossRecord:
    """Everything lossverify knows about one reference loss; see the module docstring.

    ``inputs`` is an input kind of :mod:`lossverify.strategies`; ``y_pred`` what the
    predictions are without ``from_logits`` (``"probabilities"``, ``"logits"`` for a
    loss that applies its own softmax, ``"real"`` for any real value); ``labels`` says which
    label format a Keras user must pass (``"dense"``, ``"sparse"`` or ``None``: not
    categorical), for the pitfall detectors. ``invariants`` lists the single-loss
    invariants the mathematics gives for it. ``batch_coupled``: a sample's loss depends
    on the other samples of the batch (pairwise losses): batches are then never fused,
    padded or split. ``cost``: how long a run takes against a typical one (only the order
    in which a conformance run hands out its work depends on it). ``draws``: the share
    of ``--max-examples`` (and of an invariant's examples) a conformance run draws for
    it: less than 1 for a loss whose every eager call is costly, its runs still topped
    up to ``--min-rows`` rows (``verify()`` itself draws what it is asked for).
    ``counterparts``: the PyTorch and JAX implementations of the same loss, the
    conformance matrix's rows (:class:`Counterpart`).
    """

    name: str
    evaluator: Callable[..., Any]
    inputs: str
    implementations: tuple[Implementation, ...]
    params: tuple[Param, ...] = ()
    counterparts: tuple[Counterpart, ...] = ()
    default_grid: tuple[Mapping[str, Any], ...] = ({},)
    relations: tuple[Relation, ...] = ()
    deviations: tuple[KnownDeviation, ...] = ()
    invariants: tuple[str, ...] = ROW_INVARIANTS
    labels: str | None = None
    y_pred: str = "probabilities"
    batch_coupled: bool = False
    tolerance_notes: str = ""
    cost: float = 1.0
    draws: float = 1.0

    @property
    def parameters(self) -> dict[str, Any]:
        """The reference's parameters (besides ``y_true``, ``y_pred``) and defaults."""
        return {p.name: p.default for p in self.params}

    @property
    def thorough_axes(self) -> dict[str, tuple[Any, ...]]:
        return {p.name: p.thorough for p in self.params if p.thorough}

    def thorough_grid(self) -> list[dict[str, Any]]:
        """Every combination of the parameters' thorough values."""
        axes = self.thorough_axes
        keys = list(axes)
        return [dict(zip(keys, combo, strict=True))
                for combo in itertools.product(*(axes[k] for k in keys))]

    def deviations_for(self, params: Mapping[str, Any]) -> list[KnownDeviation]:
        return [d for d in self.deviations if d.applies(params)]

    def check_params(self, params: Mapping[str, Any]) -> None:
        """Reject parameters the reference does not take, naming them, and values out
        of range, with the parameters' own validators."""
        accepted = {p.name: p for p in self.params}
        unknown = sorted(set(params) - set(accepted))
        if unknown:
            raise TypeError(f"reference_kwargs: {self.name} takes {sorted(accepted)}, "
                            f"got unexpected {unknown}")
        for name, value in params.items():
            accepted[name].validate(value)

    def implementation(self, owner: str, form: str) -> Implementation | None:
        """The implementation of ``owner`` ("keras", "notes") in ``form``, if any."""
        return next((i for i in self.implementations
                     if i.owner == owner and i.form == form), None)

    def predicts(self, params: Mapping[str, Any]) -> str:
        """What ``y_pred`` holds with ``params``: ``"probabilities"``, ``"logits"`` or
        ``"real"``."""
        return "logits" if params.get("from_logits") else self.y_pred


def identify(record: LossRecord, loss: Any) -> str | None:
    """The label of the implementation in ``record`` that ``loss`` is, or wraps (through
    ``__wrapped__``, as ``functools.wraps`` and :func:`build_implementation` leave it),
    or ``None`` for any other loss (a user's own, even if it copies one line for line).
    A class is recognised by its exact type, a function by identity, a factory's product
    by the module and qualified name of the closure it returns."""
    seen = 0
    while loss is not None and seen < 8:
        for impl in record.implementations:
            if _is(impl, loss):
                return impl.label
        loss = getattr(loss, "__wrapped__", None) or getattr(loss, "func", None)
        seen += 1
    return None


def load(target: str) -> Any:
    """The object a ``"module:attr"`` target names (an implementation's, a
    counterpart's, an adapter's), its module imported."""
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def _is(impl: Implementation, loss: Any) -> bool:
    module, _, attr = impl.target.partition(":")
    try:
        obj = load(impl.target)
    except (ImportError, AttributeError):
        return False
    if impl.kind == "class":
        return type(loss) is obj
    if impl.kind == "factory":
        return (getattr(loss, "__module__", None) == module
                and str(getattr(loss, "__qualname__", "")).startswith(f"{attr}.<locals>."))
    return loss is obj


def build_implementation(impl: Implementation, params: Mapping[str, Any]) -> Callable:
    """Import and instantiate ``impl`` for reference parameters ``params``."""
    obj = load(impl.target)
    kwargs = {k: v for k, v in params.items() if k not in impl.drop}
    kwargs.update(impl.extra)
    if impl.kind in ("class", "factory"):
        return obj(**kwargs)
    if not kwargs:
        return obj

    def bound(y_true, y_pred):
        return obj(y_true, y_pred, **kwargs)

    bound.__name__ = impl.target.partition(":")[2]
    bound.__wrapped__ = obj  # type: ignore[attr-defined]
    bound.keywords = dict(kwargs)  # type: ignore[attr-defined]  # as functools.partial's
    return bound
