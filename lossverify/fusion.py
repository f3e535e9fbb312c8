"""Fused evaluation: many drawn batches per TensorFlow call, and what a failure in one
means.

Batches whose shapes agree except along the batch axis are concatenated and evaluated
in one call per mode; a function's per-sample results are sliced back and judged batch
by batch. A batch that fails in a fused call is evaluated alone again: its own failure
is reported, and if it passes alone, the call's failure is diagnosed (do the rows depend
on each other, or does the result at that batch size lie beyond the budget?). A
batch-coupled loss (a pairwise loss) is never fused."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import numpy as np

from lossverify import checks as C
from lossverify import numerics
from lossverify import specs as S
from lossverify import strategies as lst
from lossverify.verdict import CheckReport


class FusedEvaluation:
    """The search phase of a :class:`lossverify.session.Session`: its batches evaluated
    in fused calls (a mixin; the session provides the executor, the budget and the
    deviations)."""

    spec: S.LossSpec
    params: dict[str, Any]
    reduced: bool
    executor: C.Runner

    def outcomes(self, x: lst.LossInputs, only: str | tuple[str, ...] | None = None,
                 xla_budget: bool = True) -> dict[str, C.Outcome | None]:
        raise NotImplementedError

    def _expected(self, x: lst.LossInputs) -> C.Expected:
        raise NotImplementedError

    def deviation_for(self, check: str, x: lst.LossInputs, outcome: C.Outcome
                      ) -> str | None:
        raise NotImplementedError

    def named_resemblance(self, check: str, x: lst.LossInputs, outcome: C.Outcome
                          ) -> C.Outcome:
        raise NotImplementedError

    def evaluate(self, draws: list[lst.LossInputs], reports: dict[str, CheckReport],
                 checks: tuple[str, ...], fuse_single_rows: bool = False) -> None:
        """Run ``checks`` on every drawn batch, many batches per TensorFlow call.

        Batches whose shapes agree except along the batch axis are concatenated along it
        (a fused group) and evaluated in one call per mode: a function's per-sample
        results are sliced back to their batches and compared batch by batch; a
        ``keras.losses.Loss`` is reduced, so its value (one number per call) is checked
        batch by batch, in eager calls without a gradient tape, and its gradient (a row
        per sample), graph and XLA runs take the fused batch (see :class:`C.Check`'s
        ``per_batch``). Single-row batches (where ``squeeze`` bugs live, unless
        ``fuse_single_rows``) and batches whose class axis is not last are evaluated
        alone. A batch that fails in a fused call is evaluated alone again: its own
        failure is what is reported, and if it passes alone, the loss of a row depends
        on the other rows in the call.
        """
        fused: dict[tuple[Any, ...], list[lst.LossInputs]] = {}
        alone: list[lst.LossInputs] = []
        for x in draws:
            key = None if self.spec.batch_coupled else \
                _fusion_key(x, self.params.get("axis", -1), fuse_single_rows)
            if key is None:
                alone.append(x)
            else:
                fused.setdefault(key, []).append(x)
        groups = list(fused.values())
        if self.reduced:
            per_draw = tuple(c for c in checks if C.CHECK[c].per_batch)
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
        wanted = tuple(c for c in checks if not (self.reduced and C.CHECK[c].per_batch))
        if not wanted:
            return
        fx = lst.LossInputs.concatenate(group)
        expected = self._expected(fx)
        results = {m: self.executor.run(m, fx) for m in C.modes_for(wanted)}
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
        return C.compare_all(wanted, results, expected, rows)

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
        mode = C.CHECK[name].mode
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

