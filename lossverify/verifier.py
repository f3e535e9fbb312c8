"""``verify()`` and ``assert_verified()``: run the checks over Hypothesis-drawn batches.

How a run goes:

1. *Search.* Hypothesis draws ``max_examples`` batches for the reference (seeded, so
   the same seed gives the same report); the xla check draws ``3 * max_examples // 8``
   of its own, all of one shape but the batch size, so XLA compiles once per run. The
   checks then run on every batch, many batches per TensorFlow call
   (:meth:`_Session.evaluate`); the worst error (relative to its allowance) and the
   number of failures are kept per check.
2. *Shrink.* For each check that failed, Hypothesis searches again with the same seed,
   this time failing on that check alone, and shrinks to a minimal counterexample.
3. *Classify.* A failing batch that a spec's known upstream deviation explains (say,
   Keras's NaN focal gradient at ``p_t == 1`` for ``gamma < 1``) is counted as that
   deviation, not as a failure. ``strict=True`` counts it as a failure.

A ``keras.losses.Loss`` is checked reduced (its own ``reduction``), on half the batches
with a random ``sample_weight``; any other callable is checked per sample.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import warnings
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hyp_seed
from hypothesis import strategies as st

from lossverify import checks as C
from lossverify import contract as K
from lossverify import environment, numerics
from lossverify import specs as S
from lossverify import strategies as lst

__all__ = ["CheckReport", "VerifyReport", "assert_verified", "verify"]


#: The longest counterexample a report keeps (a fused batch of hundreds of rows would
#: otherwise make a report of hundreds of kilobytes); the reproduce line redraws it whole.
MAX_EXAMPLE_CHARS = 16_000


def capped(text: str, limit: int = MAX_EXAMPLE_CHARS) -> str:
    """``text`` cut to ``limit`` characters, saying how much was left out."""
    if len(text) <= limit:
        return text
    return (text[:limit] + f"\n# ... {len(text) - limit} more characters left out; the "
            "reproduce line draws this example again")


@dataclass
class CheckReport:
    """Everything one check saw over a run."""

    name: str
    examples: int = 0
    rows: int = 0
    failures: int = 0
    skipped_rows: int = 0
    not_run: int = 0
    worst_ratio: float = 0.0
    worst_abs: float = 0.0
    worst_rel: float = 0.0
    worst_ulp: int = 0
    #: the worst error relative to the largest |reference| in its row (sample)
    worst_row_rel: float = 0.0
    worst_input: str = ""
    message: str = ""
    counterexample: str = ""
    #: the batch the first failure (``message``) was seen on; the counterexample when
    #: shrinking finds none that fails on its own (a failure inside a fused call)
    failure_input: str = ""
    deviations: dict[str, int] = field(default_factory=dict)
    #: error / allowed of every compared example, in draw order (for plots; not in JSON)
    ratios: list[float] = field(default_factory=list, repr=False)

    @property
    def ok(self) -> bool:
        return self.failures == 0

    @property
    def verdict(self) -> str:
        if self.failures:
            return "FAIL"
        return "known-deviation" if self.deviations else "ok"

    def record(self, outcome: C.Outcome, example_repr: Callable[[], str],
               deviation: str | None, examples: int = 1) -> None:
        """Count ``examples`` drawn batches (several when they were checked as one fused
        batch, whose outcome is then ``outcome``)."""
        self.examples += examples
        self.rows += outcome.rows
        self.skipped_rows += outcome.skipped_rows
        cmp = outcome.comparison
        if cmp is not None:
            self.ratios.append(cmp.worst_ratio)
        elif not outcome.ok:
            self.ratios.append(math.inf)
        if cmp is not None and (cmp.worst_ratio > self.worst_ratio or not self.worst_input):
            self.worst_ratio = cmp.worst_ratio
            self.worst_abs, self.worst_rel, self.worst_ulp = (cmp.worst_abs, cmp.worst_rel,
                                                              cmp.worst_ulp)
            self.worst_row_rel = cmp.row_rel
            self.worst_input = capped(example_repr())
        if outcome.ok:
            return
        if deviation is not None:
            self.deviations[deviation] = self.deviations.get(deviation, 0) + 1
            return
        self.failures += 1
        if not self.message:
            self.message = outcome.message
            self.worst_input = self.failure_input = capped(example_repr())
            if cmp is None:
                self.worst_ratio = math.inf


@dataclass
class VerifyReport:
    """The result of :func:`verify`. ``ok`` is True only if every check passed on every
    example, known upstream deviations aside (they are listed, and fail with
    ``strict=True``)."""

    loss: str
    reference: str
    form: str
    params: dict[str, Any]
    seed: int
    max_examples: int
    checks: dict[str, CheckReport]
    deviations: dict[str, S.KnownDeviation] = field(default_factory=dict)
    dtype: str = "float32"
    compute_dtype: str = "float32"
    #: the implementation's name in a conformance run (``keras.losses.X``), else ``loss``
    label: str = ""
    min_rows: int = 0
    #: the spec's implementation the loss was recognised as (its known deviations apply)
    implementation: str | None = None
    #: the loss's own parameters (``loss_params``), the inputs it was checked on, and
    #: how its output was brought to the reference's terms
    loss_params: dict[str, Any] = field(default_factory=dict)
    domain: K.Domain = field(default_factory=K.Domain)
    output: K.Output = field(default_factory=K.Output)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks.values())

    def reproduce_line(self) -> str:
        args = "".join(f", {k}={v!r}" for k, v in self.params.items())
        chosen = tuple(self.checks)
        if chosen != C.CHECKS:
            args = f", checks={chosen!r}" + args
        if self.dtype != "float32":
            args = f", dtype={self.dtype!r}" + args
        if self.min_rows:
            args = f", min_rows={self.min_rows}" + args
        if self.output.adapted:
            args = f", output={self.output.code()}" + args
        if self.domain.narrowed:
            args = f", domain={self.domain.code()}" + args
        if self.loss_params:
            args = f", loss_params={self.loss_params!r}" + args
        return (f"lossverify.verify(loss, {self.reference!r}, max_examples="
                f"{self.max_examples}, seed={self.seed}{args})")

    def __str__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.params.items()) or "defaults"
        dtype = self.dtype if self.dtype == self.compute_dtype else \
            f"{self.dtype} inputs, computed in {self.compute_dtype}"
        head = (f"lossverify: {self.loss} ({self.form}) vs reference {self.reference}"
                f" [{params}] {dtype} seed={self.seed}: {'OK' if self.ok else 'FAILED'}")
        lines = [head]
        if self.loss_params:
            lines.append("  the loss's own parameters: " + ", ".join(
                f"{k}={v!r}" for k, v in self.loss_params.items()))
        if self.domain.narrowed or self.output.adapted:
            lines.append(f"  inputs: {self.domain.describe()}; output: "
                         f"{self.output.describe()}")
        lines += [f"  {'check':<9} {'examples':>8} {'rows':>6} {'worst err':>10} "
                       f"{'err/allowed':>11} {'ulp':>8} {'err/row':>9}  verdict"]
        for c in self.checks.values():
            ulp = "-" if c.worst_ulp > 2**40 else str(c.worst_ulp)
            lines.append(f"  {c.name:<9} {c.examples:>8} {c.rows:>6} {c.worst_abs:>10.3g} "
                         f"{c.worst_ratio:>11.3g} {ulp:>8} {c.worst_row_rel:>9.3g}  "
                         f"{c.verdict}")
        for c in self.checks.values():
            if c.failures:
                lines.append(f"\n  {c.name} failed on {c.failures} of {c.examples} examples: "
                             f"{c.message}")
                lines.append("  minimal counterexample:")
                shown = c.counterexample or c.worst_input
                lines.extend("    " + ln for ln in shown.splitlines())
            for dev_id, count in c.deviations.items():
                dev = self.deviations[dev_id]
                lines.append(f"\n  {c.name}: known upstream deviation {dev_id} on {count} "
                             f"examples: {dev.summary}\n    reproducer: {dev.reproducer}")
        if not self.ok:
            lines.append(f"\n  reproduce with: {self.reproduce_line()}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": "lossverify.verify-report/2",
            "label": self.label or self.loss, "loss": self.loss,
            "reference": self.reference, "form": self.form,
            "params": self.params, "seed": self.seed, "max_examples": self.max_examples,
            "min_rows": self.min_rows, "implementation": self.implementation,
            "loss_params": self.loss_params, "domain": self.domain.describe(),
            "output": self.output.describe(),
            "dtype": self.dtype, "compute_dtype": self.compute_dtype, "ok": self.ok,
            "checks": {name: {
                "examples": c.examples, "rows": c.rows, "failures": c.failures,
                "skipped_rows": c.skipped_rows, "not_run": c.not_run, "worst_abs": c.worst_abs,
                "worst_rel": c.worst_rel, "worst_ulp": c.worst_ulp,
                "worst_ratio": c.worst_ratio, "worst_row_rel": c.worst_row_rel,
                "worst_input": c.worst_input,
                "message": c.message, "counterexample": c.counterexample,
                "verdict": c.verdict, "known_deviations": dict(c.deviations),
            } for name, c in self.checks.items()},
            "environment": environment.describe(),
        }


def _loss_name(loss: Any) -> str:
    """A deterministic name: a ``keras.losses.Loss`` by its class (Keras makes instance
    names unique per process, ``mean_squared_error_17``), a function by its name."""
    if C.is_keras_loss(loss):
        return type(loss).__name__
    name = getattr(loss, "__name__", None) or getattr(loss, "name", None)
    return str(name or type(loss).__name__)


def _validate_checks(checks: Iterable[str] | None) -> tuple[str, ...]:
    if checks is None:
        return C.CHECKS
    chosen = tuple(checks)
    unknown = [c for c in chosen if c not in C.CHECKS]
    if unknown or not chosen:
        raise ValueError(f"checks: expected a non-empty subset of {C.CHECKS}, got {chosen!r}")
    return chosen


_HEALTH = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much,
           HealthCheck.large_base_example]


class _Session:
    """One loss against one reference: the executor, the strategy, the check loop."""

    def __init__(self, loss: Any, spec: S.LossSpec, params: dict[str, Any],
                 chosen: tuple[str, ...], time_limit: float, strict: bool,
                 dtype: str = "float32", implementation: str | None = None,
                 domain: K.Domain | None = None, output: K.Output | None = None):
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
        self.executor = C.Executor(loss, self.reduced, time_limit, adapt)
        self.logits = spec.predicts(params) == "logits"
        inputs = lst.loss_inputs(spec.name, with_sample_weight=self.reduced,
                                 soft_labels=not self.domain.hard_labels, **params)
        if self.reduced:
            use_weight = st.booleans()
            self.strategy = st.tuples(inputs, use_weight).map(
                lambda t: t[0] if t[1] else t[0].without_weight())
        else:
            self.strategy = inputs
        # Known deviations belong to the implementations that have them: the loss is
        # recognised as one of the spec's (or named by ``implementation``); any other
        # loss's failure that resembles one is a failure that names it.
        self.implementation = implementation or S.identify(spec, loss)
        applicable = spec.deviations_for(params)
        self.deviations = [d for d in applicable if self.implementation in d.implementations]
        self.resemblances = [d for d in applicable if d not in self.deviations]

    def xla_strategy(self, seed: int) -> st.SearchStrategy:
        """The xla check's batches: all of one shape but the batch size (rank 2, a class
        count picked from the seed, the spec and the parameters; sample weights always
        for a ``Loss``), so one XLA compile serves the whole run. XLA compiles once per
        concrete shape (~0.1 s each on CPU), far more than it takes to run."""
        lowest = lst.KINDS[self.spec.inputs].min_classes
        tag = zlib.crc32(f"{self.spec.name}{sorted(self.params.items())!r}".encode())
        classes = int(np.random.default_rng([seed, tag]).integers(lowest, 13))
        params = {"class_num": classes, **self.params}
        return lst.loss_inputs(self.spec.name, with_sample_weight=self.reduced, rank=2,
                               max_batch=3 * lst.DEFAULT_MAX_BATCH,
                               soft_labels=not self.domain.hard_labels, **params)

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
        results = {"eager": self.executor.run("eager", x)}
        if "graph" in wanted:
            results["graph"] = self.executor.run("graph", x)
        out: dict[str, C.Outcome | None] = dict(self._mode_outcomes(
            results, self._expected(x), x.rows, tuple(c for c in wanted if c != "xla")))
        if "xla" in wanted:  # on the padded batch, against the graph (see _xla)
            out["xla"] = self._xla(x, xla_budget)
        return out

    def _xla(self, x: lst.LossInputs, budget: bool = True) -> C.Outcome | None:
        """XLA against the graph on the padded batch; None once the compile budget of new
        shapes is spent (the example is then not counted for this check)."""
        xp = C.pad_for_xla(x, self.params.get("axis", -1))
        if budget and not self._xla_allowed(xp):
            return None
        expected = self._expected(xp)
        graph = self.executor.run("graph", xp)
        return C.check_mode("xla", self.executor.run("xla", xp), graph, expected, xp.rows)

    def _xla_allowed(self, x: lst.LossInputs) -> bool:
        known = self.executor.xla_shapes
        return x.y_pred.shape in known or len(known) < C.XLA_SHAPE_BUDGET

    # ------------------------------------------------------------ the search phase

    def evaluate(self, draws: list[lst.LossInputs], reports: dict[str, CheckReport],
                 checks: tuple[str, ...], fuse_single_rows: bool = False) -> None:
        """Run ``checks`` on every drawn batch, many batches per TensorFlow call.

        Batches whose shapes agree except along the batch axis are concatenated along it
        (a fused group) and evaluated in one call per mode: a function's per-sample
        results are sliced back to their batches and compared batch by batch; a
        ``keras.losses.Loss`` is reduced, so its value and gradient are checked batch by
        batch and only its graph and XLA runs (which compare modes, not the reference)
        take the fused batch. Single-row batches (where ``squeeze`` bugs live, unless
        ``fuse_single_rows``) and batches whose class axis is not last are evaluated
        alone. A batch that fails in a fused call is evaluated alone again: its own
        failure is what is reported, and if it passes alone, the loss of a row depends
        on the other rows in the call.
        """
        fused: dict[tuple[Any, ...], list[lst.LossInputs]] = {}
        alone: list[lst.LossInputs] = []
        for x in draws:
            key = _fusion_key(x, self.params.get("axis", -1), fuse_single_rows)
            if key is None:
                alone.append(x)
            else:
                fused.setdefault(key, []).append(x)
        groups = list(fused.values())
        if self.reduced:
            per_draw = tuple(c for c in checks if c in ("value", "gradient"))
            if per_draw:
                for x in (x for g in groups for x in g):
                    self._record(x, self.outcomes(x, per_draw), reports)
        for group in groups:
            self._evaluate_group(group, checks, reports)
        for x in alone:
            self._record(x, self.outcomes(x, checks), reports)

    def _record(self, x: lst.LossInputs, outcomes: Mapping[str, C.Outcome | None],
                reports: dict[str, CheckReport]) -> None:
        for name, outcome in outcomes.items():
            if outcome is None:
                reports[name].not_run += 1
                continue
            dev = None if outcome.ok else self.deviation_for(name, x, outcome)
            if dev is None and not outcome.ok:
                outcome = self.named_resemblance(name, x, outcome)
            reports[name].record(outcome, functools.partial(repr, x), dev)

    def _evaluate_group(self, group: list[lst.LossInputs], checks: tuple[str, ...],
                        reports: dict[str, CheckReport]) -> None:
        modes = tuple(c for c in checks if c in ("graph", "xla"))
        wanted = modes if self.reduced else checks
        if not wanted:
            return
        fx = lst.LossInputs.concatenate(group)
        expected = self._expected(fx)
        eager = self.executor.run("eager", fx)
        results = {"eager": eager}
        if "graph" in wanted or "xla" in wanted:
            results["graph"] = self.executor.run("graph", fx)
        if "xla" in wanted:
            results["xla"] = self.executor.run("xla", fx)
        broken = [m for m, r in results.items() if not _well_shaped(r, expected)]
        if "eager" in broken:  # raised, timed out, wrong shape: the per-batch messages
            for x in group:
                self._record(x, self.outcomes(x, wanted, xla_budget=False), reports)
            return
        if self.reduced:
            outcomes = self._mode_outcomes(results, expected, fx.rows, wanted)
            for name, outcome in outcomes.items():
                if name in broken or not outcome.ok:
                    self._record_alone(group, name, outcome, fx, reports)
                else:
                    reports[name].record(outcome, functools.partial(_fused_repr, group,
                                                                    outcome), None, len(group))
            return
        start = 0
        for number, x in enumerate(group, 1):
            stop = start + x.y_pred.shape[0]
            part = {m: _slice_result(r, start, stop) for m, r in results.items()
                    if m not in broken}
            outcomes = self._mode_outcomes(part, _slice_expected(expected, start, stop),
                                           x.rows, wanted)
            for name in wanted:
                sliced = outcomes.get(name)
                dev = None if sliced is None or sliced.ok else \
                    self.deviation_for(name, x, sliced)
                if sliced is not None and (sliced.ok or dev is not None):
                    reports[name].record(sliced, functools.partial(repr, x), dev)
                else:
                    self._record_alone([x], name, sliced, x, reports,
                                       (fx, number, len(group), start))
            start = stop

    def _mode_outcomes(self, results: Mapping[str, C.ModeResult], expected: C.Expected,
                       rows: int, wanted: tuple[str, ...]) -> dict[str, C.Outcome]:
        """The ``wanted`` checks on results already computed (``eager``, and ``graph``
        and ``xla`` where run); a check whose mode is missing is left out."""
        eager = results["eager"]
        out: dict[str, C.Outcome] = {}
        if "value" in wanted:
            out["value"] = C.check_value(eager, expected, rows)
        if "gradient" in wanted:
            out["gradient"] = C.check_gradient(eager, expected, rows)
        if "graph" in wanted and "graph" in results:
            out["graph"] = C.check_mode("graph", results["graph"], eager, expected, rows)
        if "xla" in wanted and "xla" in results and "graph" in results:
            out["xla"] = C.check_mode("xla", results["xla"], results["graph"], expected, rows)
        return out

    def _record_alone(self, group: list[lst.LossInputs], name: str,
                      fused: C.Outcome | None, fx: lst.LossInputs,
                      reports: dict[str, CheckReport],
                      call: tuple[lst.LossInputs, int, int, int] | None = None) -> None:
        """A check that failed (or could not run) on a fused call: evaluate each batch of
        the group on its own and record those outcomes. If every batch passes alone, the
        fused failure stands, named for what it means.

        ``fx`` is the group's own concatenation and ``fused`` its outcome (indices into
        ``fx``); ``call``, when the group is one batch sliced out of a larger call, is
        ``(the call's inputs, the batch's number in it (1-based), batches in the call,
        the batch's first row in it)``."""
        alone = [(x, self.outcomes(x, name, xla_budget=False)) for x in group]
        if fused is None or any(not o.ok for _, out in alone if (o := out[name]) is not None):
            for x, out in alone:
                self._record(x, out, reports)
            return
        # the fused batch's own failure: a known deviation of this implementation where
        # its precondition holds (a saturated probability rounds to 1 in another lane of
        # the larger call), else a failure
        dev = self.deviation_for(name, fx, fused)
        if dev is not None:
            reports[name].record(fused, functools.partial(repr, fx), dev, len(group))
            return
        fused = self.named_resemblance(name, fx, fused)
        call_fx, number, batches, offset = call or (fx, 1, len(group), 0)
        k, worst, start = self._worst_batch(group, fused)
        if worst is None:
            where, depends = "", None
        else:
            first = offset + start
            rows = worst.y_pred.shape[0]
            index = fused.comparison.index if fused.comparison is not None else None
            where = (f"batch {number + k} of {batches}, rows {first}.."
                     f"{first + rows - 1} of the call of {call_fx.y_pred.shape[0]} rows"
                     + (f"; its row {index[0] - start} holds the worst element"
                        if index else ""))
            depends = None if self.reduced else \
                self._rows_depend(name, worst, call_fx, first)
        together = (f"fails when evaluated in one call of {call_fx.y_pred.shape[0]} rows "
                    f"({batches} drawn batches concatenated along the batch axis) and passes "
                    "batch by batch")
        if depends:
            message = f"{together}: a row's loss depends on the other rows ({depends})"
        elif depends is None:  # a reduced loss: its rows cannot be compared one by one
            message = (f"{together}: at that batch size the result lies beyond the budget, "
                       "or a row's loss depends on the other rows")
        else:
            message = (f"{together}; each row gives the same result alone as in the call, "
                       "within the budget, so the rows are independent: at that batch size "
                       "the result lies beyond the budget")
        shown = functools.partial(repr, fx) if worst is None else \
            (lambda: f"# {where}\n{worst!r}")
        reports[name].record(C.Outcome(False, fused.comparison,
                                       f"{message}: {fused.message}", fused.rows,
                                       part=fused.part), shown, None, len(group))

    @staticmethod
    def _worst_batch(group: list[lst.LossInputs], fused: C.Outcome
                     ) -> tuple[int, lst.LossInputs | None, int]:
        """The batch of ``group`` holding ``fused``'s worst element (its row index along
        axis 0 of the group's concatenation): its position in ``group``, the batch, and
        its first row in the concatenation."""
        index = fused.comparison.index if fused.comparison is not None else None
        if not index:
            return (0, group[0], 0) if len(group) == 1 else (0, None, 0)
        stops = np.cumsum([x.y_pred.shape[0] for x in group])
        k = int(np.searchsorted(stops, index[0], side="right"))
        if k >= len(group):
            return 0, None, 0
        return k, group[k], int(stops[k]) - group[k].y_pred.shape[0]

    def _rows_depend(self, name: str, x: lst.LossInputs, call_fx: lst.LossInputs,
                     start: int) -> str | None:
        """Whether ``x``'s rows give another result in the call (rows ``start`` on of
        ``call_fx``) than alone, in the failing check's mode, beyond the budget: the
        mismatch named; ``""``: the same within the budget (independent rows); ``None``:
        not decidable (the loss raised)."""
        stop = start + x.y_pred.shape[0]
        mode = name if name in ("graph", "xla") else "eager"
        together = self.executor.run(mode, call_fx)
        alone = self.executor.run(mode, x)
        if together.value is None or together.grad is None or alone.value is None \
                or alone.grad is None or together.value.shape[:1] != call_fx.y_pred.shape[:1]:
            return None
        part = _slice_result(together, start, stop)
        expected = self._expected(x)
        for what, a, b, allowed in (("value", alone.value, part.value, expected.value_allowed),
                                    ("gradient", alone.grad, part.grad, expected.grad_allowed)):
            assert b is not None
            if a.shape != b.shape:
                return None
            tol = numerics.at_least_ulps(b, allowed, expected.dtype)
            if what == "gradient":  # rows at a kink are not compared (see check_gradient)
                sel = expected.grad_rows
                a, b, tol = np.where(sel, a, 0.0), np.where(sel, b, 0.0), np.where(sel, tol, 1.0)
            cmp = numerics.compare(a, b, tol, expected.dtype)
            if not cmp.ok:
                return f"the {what} alone and in the call differ: {cmp.describe()}"
        return ""

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
        dev = _explaining(self.deviations, check, x, self.params, outcome)
        return None if dev is None else dev.id

    def named_resemblance(self, check: str, x: lst.LossInputs, outcome: C.Outcome
                          ) -> C.Outcome:
        """``outcome`` (a failure), its message naming a known deviation of *another*
        implementation that it looks like, if one does."""
        dev = _explaining(self.resemblances, check, x, self.params, outcome)
        if dev is None:
            return outcome
        owners = ", ".join(dev.implementations)
        note = (f" [resembles the known upstream deviation {dev.id} of {owners}; it is "
                f"attached to those implementations only, and this loss is not one of them]")
        return dataclasses.replace(outcome, message=outcome.message + note)


def _explaining(deviations: Iterable[S.KnownDeviation], check: str, x: Any,
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


def _fusion_key(x: lst.LossInputs, axis: int, single_rows: bool = False
                ) -> tuple[Any, ...] | None:
    """Batches with equal keys can be concatenated along axis 0; None: evaluate alone
    (one row unless ``single_rows``, or a class axis that is not last, where axis 0 is
    not the batch)."""
    ndim = x.y_pred.ndim
    if (x.y_pred.shape[0] < 2 and not single_rows) or axis % ndim != ndim - 1:
        return None
    w = x.sample_weight
    return (x.y_pred.shape[1:], x.y_pred.dtype.str, x.y_true.shape[1:], x.y_true.dtype.str,
            None if w is None else (w.shape[1:], w.dtype.str))


def _fused_repr(group: list[lst.LossInputs], outcome: C.Outcome) -> str:
    """Where a ``Loss``'s fused graph or XLA call had its worst element: the drawn batch
    holding that gradient row, or (the reduced value) a line that says so; the whole
    concatenation would make the report hundreds of kilobytes."""
    index = outcome.comparison.index if outcome.comparison is not None else None
    start = 0
    for k, x in enumerate(group, 1):
        stop = start + x.y_pred.shape[0]
        if index and start <= index[0] < stop:
            return (f"# batch {k} of {len(group)} checked in one call; its gradient row "
                    f"{index[0] - start} is the worst element\n{x!r}")
        start = stop
    return (f"# the reduced value of {len(group)} drawn batches ({start} samples) checked "
            f"in one call")


def _well_shaped(result: C.ModeResult, expected: C.Expected) -> bool:
    return (result.value is not None and result.grad is not None
            and result.value.shape == expected.value.shape
            and result.grad.shape == expected.grad.shape)


def _slice_result(result: C.ModeResult, start: int, stop: int) -> C.ModeResult:
    assert result.value is not None and result.grad is not None
    return C.ModeResult(result.value[start:stop], result.grad[start:stop], result.error)


def _slice_expected(e: C.Expected, start: int, stop: int) -> C.Expected:
    """The per-sample reference answer for rows ``start:stop`` (class axis last)."""
    grad_rows = e.grad_rows[start:stop]
    return C.Expected(e.value[start:stop],
                      np.broadcast_to(e.value_allowed, e.value.shape)[start:stop],
                      e.grad[start:stop], e.grad_allowed[start:stop], grad_rows,
                      int(np.sum(~grad_rows[..., 0])), e.dtype)


@contextlib.contextmanager
def _global_constants_only() -> Iterator[None]:
    """Recent Hypothesis (6.155, 6.170) draws 5% of its choices from a pool of constants, part of
    it mined from the source of every *local* module loaded in the process: the same
    seed then draws other batches in a pytest session (its test files and plugins are
    local modules) than in a script, and other batches again next to the user's own
    code. Inside verify's runs that part of the pool is empty, so a seed means the same
    batches in any process (``tests/test_fused_evaluation.py`` checks it). This reaches
    into Hypothesis's internals; if they move, draws merely depend on the process again.
    """
    try:
        from hypothesis.internal.conjecture import providers
        mined, cache = providers._get_local_constants, providers.CONSTANTS_CACHE
        nothing = providers.Constants()
    except (ImportError, AttributeError):
        yield
        return
    providers._get_local_constants = lambda: nothing
    cache.cache.clear()  # pools already built with the mined constants
    try:
        yield
    finally:
        providers._get_local_constants = mined
        cache.cache.clear()


def _run_hypothesis(test: Callable[[Any], None], strategy: st.SearchStrategy,
                    max_examples: int, seed: int, phases: tuple[Phase, ...]) -> None:
    # The parent is Hypothesis's own default profile, not whatever profile is loaded (a
    # pytest run loads one), so a seed draws the same batches in a script and in a test.
    wrapped = settings(settings.get_profile("default"), max_examples=max_examples,
                       deadline=None, database=None,
                       suppress_health_check=_HEALTH, phases=phases, print_blob=False,
                       derandomize=False)(given(strategy)(test))
    with _global_constants_only():
        hyp_seed(seed)(wrapped)()


def _draw(strategy: st.SearchStrategy, max_examples: int, seed: int, dtype: str,
          min_rows: int = 0, prepare: Callable[[Any], Any] | None = None
          ) -> list[lst.LossInputs]:
    """``max_examples`` drawn batches; then, while they hold fewer than ``min_rows`` rows,
    as many more as the rows per batch so far say are missing, each round a Hypothesis run
    of its own with a seed derived from ``seed`` (at most :data:`TOP_UP_ROUNDS`)."""
    draws: list[lst.LossInputs] = []

    def run(n: int, run_seed: int) -> None:
        _run_hypothesis(lambda x: draws.append(prepare(x) if prepare else
                                               C.cast_inputs(x, dtype)), strategy, n,
                        run_seed, (Phase.explicit, Phase.generate))

    run(max_examples, seed)
    for round_ in range(1, TOP_UP_ROUNDS + 1):
        rows = sum(x.rows for x in draws)
        if rows >= min_rows:
            break
        per_batch = max(rows / max(len(draws), 1), 1.0)
        run(math.ceil((min_rows - rows) / per_batch), seed * 1000 + round_)
    return draws


#: Further Hypothesis runs :func:`_draw` may make to reach ``min_rows``.
TOP_UP_ROUNDS = 8


def _xla_examples(max_examples: int) -> int:
    """The xla check's own draws: 3/8 as many, each up to three times as many rows (on
    average about as many rows in all)."""
    return max(1, 3 * max_examples // 8)


def verify(loss: Callable, reference: str, *, max_examples: int = 100, seed: int | None = None,
           checks: Iterable[str] | None = None, strict: bool = False,
           time_limit: float = C.DEFAULT_TIME_LIMIT, dtype: str = "float32",
           min_rows: int = 0, implementation: str | None = None,
           loss_params: Mapping[str, Any] | None = None,
           domain: K.Domain | Mapping[str, Any] | None = None,
           output: K.Output | Mapping[str, Any] | None = None,
           **reference_kwargs: Any) -> VerifyReport:
    """Check ``loss`` against the reference named ``reference``.

    Args:
        loss: a ``keras.losses.Loss`` instance (checked reduced, also with random
            ``sample_weight``) or any callable ``(y_true, y_pred) -> per-sample losses``;
            or what makes one: a class (constructed with ``loss_params``) or a factory
            whose parameters all have defaults (called with ``loss_params``).
        reference: a name in :data:`lossverify.specs.SPECS`.
        loss_params: the loss's own parameters, kept apart from the reference's
            (``**reference_kwargs``): a class is constructed and a factory called with
            them, a loss function gets them bound (``functools.partial``). A parameter
            both accept, given to one side only with a value the other does not have,
            warns (:class:`lossverify.contract.LossverifyWarning`).
        domain: the inputs the loss is defined on, a :class:`lossverify.Domain` (or
            a mapping of its fields): hard labels only, probabilities or logits within
            a range. Drawn inputs are narrowed to it; the report says so.
        output: a :class:`lossverify.Output` (or a mapping of its fields) for a loss that
            returns one value per element (``per_element="mean"`` or ``"sum"`` over the
            class axis) or a constant multiple of the reference (``scale``).
        max_examples: Hypothesis examples (drawn batches) per run; each batch holds
            1 to 16 samples (times up to 3 steps), all checked. The xla check draws
            3/8 as many batches of its own, of up to 48 samples.
        seed: the Hypothesis seed; ``None`` means 0, so runs are deterministic.
        min_rows: draw more batches (further Hypothesis runs, seeded from ``seed``)
            until every check has seen at least this many rows (samples); 0: exactly
            ``max_examples`` draws.
        checks: a subset of ``("value", "gradient", "graph", "xla")``; default all.
        strict: count known upstream deviations as failures.
        implementation: the label of the spec's implementation that ``loss`` is (say
            ``"keras.losses.BinaryFocalCrossentropy"``), for its known deviations. Found
            without it for the implementations themselves and for wrappers that keep
            ``__wrapped__`` (``functools.wraps``). Any other loss gets no known
            deviations: a failure that resembles one fails, naming it.
        time_limit: seconds one call of ``loss`` may take before it counts as hung.
        dtype: the dtype of the inputs: ``"float32"``, ``"float64"``, ``"float16"`` or
            ``"bfloat16"``. Drawn inputs are rounded to it. The tolerance follows the
            dtype the loss computes in: its inputs' for a function, the instance's own
            (``loss.dtype``, float32 by default) for a ``keras.losses.Loss``.
        **reference_kwargs: parameters of the reference (``from_logits=True`` also
            makes the inputs logits).
    """
    try:
        import tensorflow  # noqa: F401  (what the checks run on)
    except ModuleNotFoundError as exc:
        from lossverify import missing_extra

        raise missing_extra(exc, "lossverify.verify", "tf") from None
    if isinstance(max_examples, bool) or not isinstance(max_examples, int) or max_examples < 1:
        raise ValueError(f"max_examples: expected a positive int, got {max_examples!r}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise TypeError(f"seed: expected an int or None, got {seed!r}")
    if isinstance(min_rows, bool) or not isinstance(min_rows, int) or min_rows < 0:
        raise ValueError(f"min_rows: expected a non-negative int, got {min_rows!r}")
    if not callable(loss):
        raise TypeError(f"loss: expected a callable (y_true, y_pred) -> tensor, got {loss!r}")
    if loss_params is not None and not isinstance(loss_params, Mapping):
        raise TypeError(f"loss_params: expected a mapping of parameter names to values, "
                        f"got {loss_params!r}")
    _check_framework(loss)
    spec = S.get_spec(reference)
    chosen = _validate_checks(checks)
    if dtype not in numerics.DTYPES:
        raise ValueError(f"dtype: expected one of {numerics.DTYPES}, got {dtype!r}")
    seed = 0 if seed is None else seed
    params = dict(reference_kwargs)
    S.check_reference_params(spec, params)
    the_domain, the_output = K.Domain.of(domain), K.Output.of(output)
    check_domain(spec, params, the_domain)
    given = loss
    loss, _made = K.build_loss(loss, loss_params)
    if the_output.per_element is not None and C.is_keras_loss(loss):
        raise ValueError("output: per_element applies to a function returning one value per "
                         "element; a keras.losses.Loss returns the reduced loss")
    for note in K.mismatched_params(given, loss, dict(loss_params or {}), params,
                                    spec.parameters):
        warnings.warn(f"{_loss_name(loss)} vs reference {reference}: {note}",
                      K.LossverifyWarning, stacklevel=2)
    labels = [impl.label for impl in spec.implementations]
    if implementation is not None and implementation not in labels:
        raise ValueError(f"implementation: expected one of {labels} (the implementations "
                         f"{reference!r} lists) or None, got {implementation!r}")
    session = _Session(loss, spec, params, chosen, time_limit, strict, dtype, implementation,
                       the_domain, the_output)
    reports = {name: CheckReport(name) for name in chosen}

    def report() -> VerifyReport:
        return VerifyReport(
            loss=_loss_name(loss), reference=reference, form="class" if session.reduced
            else "function", params=params, seed=seed, max_examples=max_examples,
            checks=reports, deviations={d.id: d for d in spec.deviations}, dtype=dtype,
            compute_dtype=session.compute_dtype, min_rows=min_rows,
            implementation=session.implementation, loss_params=dict(loss_params or {}),
            domain=the_domain, output=the_output)

    # Hypothesis only draws (no test outcome feeds back into generation, so these are
    # the draws an evaluating test would see); the checks then run on fused batches,
    # far fewer TensorFlow calls than one per draw.
    main_checks = tuple(c for c in chosen if c != "xla")
    strategies = {name: session.strategy for name in main_checks}
    draws = _draw(session.strategy, max_examples, seed, dtype, min_rows, session.prepare)
    if _fails_fast(session, draws, reports):
        return report()
    if main_checks:
        session.evaluate(draws, reports, main_checks)
    if "xla" in chosen:
        strategies["xla"] = session.xla_strategy(seed)
        session.evaluate(_draw(strategies["xla"], _xla_examples(max_examples), seed, dtype,
                               min_rows, session.prepare), reports, ("xla",),
                         fuse_single_rows=True)
    for name, check in reports.items():
        if check.failures:
            examples = _xla_examples(max_examples) if name == "xla" else max_examples
            found, check.message = _shrink(session, name, strategies[name], examples, seed,
                                           check.message)
            check.counterexample = capped(found) or check.failure_input
    return report()


#: Drawn batches :func:`_fails_fast` calls the loss on before the full run.
PROBE_BATCHES = 3


def _fails_fast(session: _Session, draws: list[lst.LossInputs],
                reports: dict[str, CheckReport]) -> bool:
    """A loss that raises (or hangs) on each of the first :data:`PROBE_BATCHES` drawn
    batches eagerly, and on the smallest of them in a ``tf.function`` too, fails every
    check at once with those errors, that batch the counterexample: there is nothing to
    search for or shrink. (A loss that mutates its input eagerly, or raises only
    eagerly, gets the full run: its graph may work.)"""
    probes = sorted(draws[:PROBE_BATCHES], key=lambda x: (x.y_pred.size, repr(x)))
    if not probes:
        return False
    errors = []
    for x in probes:
        result = session.executor.run("eager", x)
        if result.value is not None or not (result.error or "").startswith(
                ("raised ", "timed out")):
            return False
        errors.append(result.error or "")
    graph = session.executor.run("graph", probes[0])
    if graph.value is not None:
        return False
    stopped = f"on each of the first {len(probes)} drawn batches, so the run stopped there"
    messages = {"value": f"{errors[0]} ({stopped})", "gradient": f"{errors[0]} ({stopped})",
                "graph": f"under graph {graph.error} (eagerly too, {stopped})",
                "xla": f"not run: the loss fails eagerly and under graph ({stopped})"}
    for name, check in reports.items():
        for x in probes:
            check.record(C.Outcome(False, message=messages[name], rows=x.rows),
                         functools.partial(repr, probes[0]), None)
        check.counterexample = repr(probes[0])
    return True


#: Modules whose losses compute on other arrays than TensorFlow's.
_OTHER_FRAMEWORKS = ("torch", "torchvision", "jax", "jaxlib", "optax", "flax")


def _check_framework(loss: Any) -> None:
    """verify() runs the loss on TensorFlow tensors under GradientTape. A loss of another
    framework, or Keras running on another backend, would fail every check for that
    reason alone: a false verdict. Refuse it, naming what works instead."""
    import keras

    instead = ("compute its values and gradients in that framework and compare them with "
               "lossverify.close_to_reference / assert_close_to_reference (NumPy only, the "
               "same budget)")
    backend = keras.backend.backend()
    if backend != "tensorflow":
        raise ValueError(f"loss: Keras runs on the {backend!r} backend (KERAS_BACKEND), and "
                         "verify() checks TensorFlow computations; run with "
                         f"KERAS_BACKEND=tensorflow, or {instead}")
    target = getattr(loss, "__wrapped__", loss)
    target = getattr(target, "func", target)  # functools.partial
    module = getattr(target, "__module__", None) or type(target).__module__ or ""
    root = module.split(".")[0]
    if root in _OTHER_FRAMEWORKS:
        raise ValueError(f"loss: {getattr(target, '__name__', target)!r} comes from "
                         f"{root} ({module}); verify() calls the loss with TensorFlow "
                         f"tensors, so {instead}")


#: How :func:`check_domain` names the domain's fields: the API's, or the CLI's options.
API_NAMES = {"probabilities": "domain: probabilities=...", "logits": "domain: logits=...",
             "use_logits": "logits=(low, high)", "from_logits": "from_logits=True"}


def check_domain(spec: S.LossSpec, params: Mapping[str, Any], domain: K.Domain,
                 names: Mapping[str, str] = API_NAMES) -> None:
    """A domain that cannot apply to this reference's inputs is an error, not ignored.
    ``names`` says how the message names the fields (see :data:`API_NAMES`)."""
    predicts = spec.predicts(params)
    logits = predicts == "logits"
    if domain.probabilities is not None and predicts != "probabilities":
        what = "logits" if logits else "real-valued predictions"
        with_logits = f" with {names['from_logits']}" if params.get("from_logits") else ""
        raise ValueError(f"{names['probabilities']} narrows probabilities, but {spec.name}"
                         f"{with_logits} takes {what} as y_pred"
                         + (f"; use {names['use_logits']}" if logits else ""))
    if domain.logits is not None and not logits:
        raise ValueError(f"{names['logits']} narrows logits, but {spec.name} takes "
                         + ("real-valued predictions" if predicts == "real" else
                            f"probabilities (give {names['from_logits']} for logits)")
                         + " as y_pred")


class _Found(AssertionError):
    pass


def _shrink(session: _Session, check: str, strategy: st.SearchStrategy, max_examples: int,
            seed: int, first_message: str) -> tuple[str, str]:
    """Search again failing on ``check`` alone; return the minimal example and message."""
    last: dict[str, str] = {}
    found: list[lst.LossInputs] = []  # the last failing example, as drawn

    def failure(x: lst.LossInputs) -> str | None:
        outcome = session.outcomes(x, only=check)[check]
        if outcome is not None and not outcome.ok and \
                session.deviation_for(check, x, outcome) is None:
            return session.named_resemblance(check, x, outcome).message
        return None

    def test(x: lst.LossInputs) -> None:
        x = session.prepare(x)
        message = failure(x)
        if message is not None:
            last["example"], last["message"] = repr(x), message
            found[:] = [x]
            raise _Found(message)

    try:
        _run_hypothesis(test, strategy, max_examples, seed,
                        (Phase.explicit, Phase.generate, Phase.shrink))
    except _Found:
        pass
    except Exception as exc:  # Hypothesis flakiness errors and the like
        last.setdefault("message", f"{first_message} (shrinking stopped: "
                                   f"{type(exc).__name__})")
    x = found[0] if found else None
    if x is not None and x.y_pred.shape[0] > 1 and \
            session.params.get("axis", -1) % x.y_pred.ndim == x.y_pred.ndim - 1:
        # one row, if one row fails alone; else say that the failure needs the batch
        for i in range(x.y_pred.shape[0]):
            row = x.take_rows(slice(i, i + 1))
            message = failure(row)
            if message is not None:
                return repr(row), message
        return (f"# no single row fails alone: this failure needs the batch of "
                f"{x.y_pred.shape[0]} rows\n{last['example']}", last["message"])
    return last.get("example", ""), last.get("message", first_message)


def assert_verified(loss: Callable, reference: str, **kwargs: Any) -> VerifyReport:
    """:func:`verify`, raising ``AssertionError`` with the full report when not ok."""
    report = verify(loss, reference, **kwargs)
    if not report.ok:
        raise AssertionError(str(report))
    return report

