"""The verdict of a run: :class:`CheckReport` per check and :class:`VerifyReport` per
run, with the text, JSON and reproduce line a user reads."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from lossverify import checks as C
from lossverify import contract as K
from lossverify import environment
from lossverify import specs as S
from lossverify.frameworks import Framework

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
    #: why the check did not run in the loss's framework ("" when it ran): such a check
    #: neither passes nor fails (``verdict`` "not run")
    not_run_reason: str = ""

    @property
    def ok(self) -> bool:
        return self.failures == 0

    @property
    def verdict(self) -> str:
        if self.not_run_reason:
            return "not run"
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
    #: the framework the loss was checked in, with its version and modes (None: a
    #: report made before frameworks were named, TensorFlow)
    framework: Framework | None = None
    #: what the run showed about the framework's modes (torch.compile's graph breaks)
    notes: list[str] = field(default_factory=list)
    #: a conformance-matrix row's labels (framework, version, convention); {} elsewhere
    row: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """Every check that ran passed (a check that cannot run in the loss's framework,
        ``verdict`` "not run", is not counted either way)."""
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
        fw = self.framework
        if fw is not None and fw.call.declared:
            args = f", call={fw.call.code()}" + args
        if fw is not None and fw.name != "tensorflow":
            args = f", framework={fw.requested!r}" + args
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
        if self.framework is not None:
            lines.append(f"  framework: {self.framework.describe()}")
        lines += [f"  note: {note}" for note in self.notes]
        for c in self.checks.values():
            if c.not_run_reason:
                lines.append(f"\n  {c.name} not run: {c.not_run_reason}")
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
            "framework": None if self.framework is None else self.framework.label,
            "framework_detail": None if self.framework is None
            else self.framework.describe(), "notes": list(self.notes),
            **({"matrix": dict(self.row)} if self.row else {}),
            "checks": {name: {
                "examples": c.examples, "rows": c.rows, "failures": c.failures,
                "skipped_rows": c.skipped_rows, "not_run": c.not_run, "worst_abs": c.worst_abs,
                "worst_rel": c.worst_rel, "worst_ulp": c.worst_ulp,
                "worst_ratio": c.worst_ratio, "worst_row_rel": c.worst_row_rel,
                "worst_input": c.worst_input,
                "message": c.message, "counterexample": c.counterexample,
                "verdict": c.verdict, "known_deviations": dict(c.deviations),
                "not_run_reason": c.not_run_reason,
            } for name, c in self.checks.items()},
            "environment": environment.describe(),
        }


def loss_name(loss: Any) -> str:
    """A deterministic name: a ``keras.losses.Loss`` by its class (Keras makes instance
    names unique per process, ``mean_squared_error_17``), a function by its name."""
    if C.is_keras_loss(loss):
        return type(loss).__name__
    name = getattr(loss, "__name__", None) or getattr(loss, "name", None)
    return str(name or type(loss).__name__)

