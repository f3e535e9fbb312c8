"""One loss against one reference: the executor, the strategy, the budget and the
known deviations that apply (:class:`Session`); the fused search phase comes from
:class:`lossverify.fusion.FusedEvaluation`."""

from __future__ import annotations

import dataclasses
import functools
import zlib
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
from hypothesis import strategies as st

from lossverify import checks as C
from lossverify import contract as K
from lossverify import numerics
from lossverify import specs as S
from lossverify import strategies as lst
from lossverify.frameworks import Framework, identify
from lossverify.fusion import FusedEvaluation


class Session(FusedEvaluation):
    """One loss against one reference: the executor, the strategy, the check loop."""

    def __init__(self, loss: Any, spec: S.LossSpec, params: dict[str, Any],
                 chosen: tuple[str, ...], time_limit: float, strict: bool,
                 dtype: str = "float32", implementation: str | None = None,
                 domain: K.Domain | None = None, output: K.Output | None = None,
                 framework: Framework | None = None):
        self.spec = spec
        self.domain = domain or K.Domain()
        self.output = output or K.Output()
        self.dtype = dtype
        self.params = params
        self.chosen = chosen
        self.strict = strict
        self.reduced = C.is_keras_loss(loss)
        self.reduction = getattr(loss, "reduction", "sum_over_batch_size") or "none"
        # A keras.losses.Loss converts its inputs to its own dtype (float32 unless a
        # dtype policy says otherwise); a function computes in its inputs' dtype.
        self.compute_dtype = str(getattr(loss, "dtype", dtype)) if self.reduced else dtype
        if self.compute_dtype not in numerics.DTYPES:
            self.compute_dtype = dtype
        axis = params.get("axis", -1)
        adapt = None if not self.output.adapted else functools.partial(
            self.output.adapt, axis=axis, reduced=self.reduced)
        #: the framework the loss runs in (None: TensorFlow, as :class:`C.Executor` runs it)
        self.framework = framework
        self.executor: C.Runner = C.Executor(loss, self.reduced, time_limit, adapt) \
            if framework is None else \
            framework.executor(loss, self.reduced, time_limit, adapt, spec.batch_coupled,
                               per_step=lst.KINDS[spec.inputs].loss_shape is None)
        self.logits = spec.predicts(params) == "logits"
        # Every run of this reference and parameter setting draws the same raw batches
        # (with a sample weight, and whether a Loss uses it): a function drops the weight,
        # a Loss keeps it on half the batches, and every dtype rounds them its own way.
        # So a conformance run draws them once for all of a setting's runs (see
        # search.draw_batches's ``key``).
        self.raw_strategy = raw_strategy(spec.name, params, self.domain.hard_labels)
        # Known deviations belong to the implementations that have them: the loss is
        # recognised as one of the spec's (or named by ``implementation``); any other
        # loss's failure that resembles one is a failure that names it.
        self.implementation = implementation or identify(spec, loss, framework)
        applicable = spec.deviations_for(params)
        # ... and to the frameworks they were shown in: a Keras deviation shown on
        # TensorFlow does not excuse Keras on JAX or PyTorch until shown there too
        family = framework.name if framework is not None else "tensorflow"
        self.deviations = [d for d in applicable if self.implementation in d.implementations
                           and family in d.frameworks]
        self.resemblances = [d for d in applicable if d not in self.deviations]

    def xla_strategy(self, seed: int) -> st.SearchStrategy:
        """The xla check's raw batches (see :meth:`finish`): all of one shape but the
        batch size (rank 2, a class count picked from the seed, the spec and the
        parameters, and the input kind's other axes, CTC's frames; sample weights always
        for a ``Loss``), so one XLA compile serves the whole run. XLA compiles once per
        concrete shape (0.2 to 5 s each on CPU), far more than it takes to run. A
        batch-coupled loss's batches cannot be padded to a common size (repeated rows
        would change the others' losses): its batch size is picked from the seed too."""
        kind = lst.KINDS[self.spec.inputs]
        tag = zlib.crc32(f"{self.spec.name}{sorted(self.params.items())!r}".encode())
        rng = np.random.default_rng([seed, tag])
        classes = int(rng.integers(kind.min_classes, 13))
        params = {"class_num": classes, **self.params}
        if self.spec.batch_coupled:
            params["batch"] = int(rng.integers(2, 2 * lst.DEFAULT_MAX_BATCH + 1))
        if kind.one_shape is not None:  # CTC's frames
            params.update(kind.one_shape(rng))
        return st.tuples(lst.loss_inputs(self.spec.name, with_sample_weight=True, rank=2,
                                         max_batch=3 * lst.DEFAULT_MAX_BATCH,
                                         soft_labels=not self.domain.hard_labels, **params),
                         st.just(True))

    def finish(self, drawn: tuple[lst.LossInputs, bool]) -> lst.LossInputs:
        """A raw draw (a batch with a sample weight, and whether to use it) as this
        loss takes it: a Loss keeps the weight where the draw says, a function never."""
        x, use_weight = drawn
        return x if self.reduced and use_weight else x.without_weight()

    def draws_key(self, which: str) -> tuple[Any, ...]:
        """What the raw draws of ``which`` ("main", "xla") depend on besides the seed and
        the counts: runs with the same key draw the same raw batches."""
        return draws_key(which, self.spec.name, self.params, self.domain.hard_labels)

    def prepare_raw(self, drawn: tuple[lst.LossInputs, bool]) -> lst.LossInputs:
        """A raw draw finished and prepared: what the checks run on."""
        return self.prepare(self.finish(drawn))

    def prepare(self, x: lst.LossInputs) -> lst.LossInputs:
        """A drawn batch as the loss sees it: rounded to the input dtype, then moved
        into the declared domain (in that dtype)."""
        x = C.cast_inputs(x, self.dtype)
        if self.domain.probabilities is None and self.domain.logits is None:
            return x
        narrowed = self.domain.narrow(x.y_pred, self.logits, self.params.get("axis", -1))
        if narrowed is x.y_pred:
            return x
        return x.replace(y_pred=narrowed)

    def outcomes(self, x: lst.LossInputs, only: str | tuple[str, ...] | None = None,
                 xla_budget: bool = True) -> dict[str, C.Outcome | None]:
        """The chosen checks (or ``only``) on one batch, evaluated on its own."""
        wanted = (only,) if isinstance(only, str) else (only or self.chosen)
        x = self.prepare(x)
        here = tuple(c for c in wanted if not C.CHECK[c].own_batches)
        grad = any(C.CHECK[c].needs_grad for c in here)
        results = {m: self.executor.run(m, x, grad) for m in C.modes_for(here)}
        out: dict[str, C.Outcome | None] = dict(C.compare_all(here, results,
                                                              self._expected(x), x.rows))
        for name in wanted:
            if C.CHECK[name].own_batches:  # on the padded batch (see _padded)
                out[name] = self._padded(C.CHECK[name], x, xla_budget)
        return out

    def _padded(self, check: C.Check, x: lst.LossInputs, budget: bool = True
                ) -> C.Outcome | None:
        """A check of its own batches (XLA against the reference, with the graph as the
        baseline) on ``x`` padded to the fixed compile shapes; None once the compile
        budget of new shapes is spent (the example is then not counted for this check).
        A batch-coupled loss is not padded: repeated rows would change its values."""
        xp = x if self.spec.batch_coupled else C.pad_for_xla(x, self.params.get("axis", -1))
        if budget and not self._xla_allowed(xp):
            return None
        results = {m: self.executor.run(m, xp) for m in check.modes}
        return check.compare(results, self._expected(xp), xp.rows)

    def _xla_allowed(self, x: lst.LossInputs) -> bool:
        known = self.executor.xla_shapes
        return x.y_pred.shape in known or len(known) < C.XLA_SHAPE_BUDGET


    def _expected(self, x: lst.LossInputs) -> C.Expected:
        """The reference on the inputs as the loss computes them (a Loss instance sees
        its inputs converted to its compute dtype)."""
        return C.expected_for(self.spec.name, self.params,
                              C.cast_inputs(x, self.compute_dtype), self.reduced,
                              self.reduction, self.compute_dtype, input_dtype=self.dtype)

    def deviation_for(self, check: str, x: lst.LossInputs, outcome: C.Outcome
                      ) -> str | None:
        """The known deviation of this implementation that explains every failing
        element of ``outcome`` (see :meth:`KnownDeviation.explains`), if any."""
        if self.strict:
            return None
        dev = explaining(self.deviations, check, x, self.params, outcome)
        return None if dev is None else dev.id

    def named_resemblance(self, check: str, x: lst.LossInputs, outcome: C.Outcome
                          ) -> C.Outcome:
        """``outcome`` (a failure), its message naming a known deviation of *another*
        implementation that it looks like, if one does."""
        dev = explaining(self.resemblances, check, x, self.params, outcome)
        if dev is None:
            return outcome
        owners = ", ".join(dev.implementations)
        note = (f" [resembles the known upstream deviation {dev.id} of {owners}; it is "
                f"attached to those implementations only, and this loss is not one of them]")
        return dataclasses.replace(outcome, message=outcome.message + note)


def raw_strategy(reference: str, params: Mapping[str, Any], hard_labels: bool = False
                 ) -> st.SearchStrategy:
    """The search phase's raw draws for ``reference`` with ``params``: a batch with a
    sample weight, and whether a ``Loss`` uses it (see :meth:`Session.finish`)."""
    return st.tuples(lst.loss_inputs(reference, with_sample_weight=True,
                                     soft_labels=not hard_labels, **params),
                     st.booleans())


def draws_key(which: str, reference: str, params: Mapping[str, Any],
              hard_labels: bool = False) -> tuple[Any, ...]:
    """The key :func:`lossverify.search.draw_batches` keeps raw draws under: every run of
    one reference and setting (class, function, any dtype, and the conformance run's
    invariants) draws the same raw batches."""
    return (which, reference, tuple(sorted(params.items(), key=str)), hard_labels)


def explaining(deviations: Iterable[S.KnownDeviation], check: str, x: Any,
                params: Mapping[str, Any], outcome: C.Outcome) -> S.KnownDeviation | None:
    """The first of ``deviations`` that explains every failing element of ``outcome``
    of ``check`` on ``x`` (see :meth:`KnownDeviation.explains`)."""
    cmp = outcome.comparison
    if cmp is None or cmp.failing is None or cmp.nonfinite is None:
        return None  # raised, wrong shape, not differentiable: no deviation's symptom
    for dev in deviations:
        if check in dev.checks and dev.explains(x, params, outcome.part, cmp.failing,
                                                cmp.nonfinite):
            return dev
    return None

