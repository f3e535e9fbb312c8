"""The conformance report as tables, Markdown and JSON (what ``lossverify verify`` writes).

Works on the run reports (:class:`lossverify.verifier.VerifyReport`, the invariants'
reports, and crashed jobs) through their attributes; imports neither TensorFlow nor
Hypothesis.

JSON is strict (RFC 8259): a non-finite number, which JSON cannot hold, is written as
one of the strings ``"Infinity"``, ``"-Infinity"`` or ``"NaN"`` (Python's ``float()``
reads each back), so any JSON parser loads a report; :func:`to_strict_json` does it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

__all__ = ["SCHEMA_VERSION", "markdown_report", "markdown_table", "print_table",
           "run_row", "invariant_row", "matrix_rows", "MATRIX_HEAD", "to_strict_json",
           "totals", "totals_line"]

#: 2: non-finite numbers are strings (version 1 wrote the non-JSON ``Infinity``); runs
#: carry ``loss_params``, ``domain`` and ``output``.
SCHEMA_VERSION = 2

RUN_HEAD = ["loss", "form", "parameters", "dtype", "examples", "worst err", "err/allowed",
            "check", "verdict"]
INVARIANT_HEAD = ["losses", "invariant", "parameters", "examples", "err/allowed", "verdict"]
MATRIX_HEAD = ["reference", "implementation", "framework", "convention", "settings x dtypes",
               "worst err/allowed", "verdict", "known deviations (examples)"]


def format_params(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in params.items()) or "-"


def _ratio(value: float) -> str:
    return "inf" if value == math.inf else f"{value:.3f}"


def run_row(label: str, report: Any) -> list[str]:
    """One row of the run table for a verify report (or a crashed job)."""
    if getattr(report, "crashed", False):
        return [label, "-", format_params(report.params), report.dtype, "0", "-", "inf", "-",
                "CRASHED"]
    first = next(iter(report.checks.values()))
    examples = report.checks.get("value", first).examples
    worst = max(report.checks.values(), key=lambda c: c.worst_ratio)
    verdict = _verdict(report)
    failed = [c.name for c in report.checks.values() if c.failures]
    if failed:
        verdict += f" ({','.join(failed)})"
    params = format_params(report.params)
    domain = getattr(report, "domain", None)
    if domain is not None and domain.narrowed:
        params += f"; inputs: {domain.describe()}"
    return [label, report.form, params, report.dtype, str(examples),
            f"{worst.worst_abs:.2e}", _ratio(worst.worst_ratio), worst.name, verdict]


def _verdict(report: Any) -> str:
    """A run's verdict: CRASHED, FAIL (any check failed), known-deviation or ok."""
    if getattr(report, "crashed", False):
        return "CRASHED"
    verdicts = {c.verdict for c in report.checks.values()}
    return "FAIL" if "FAIL" in verdicts else (
        "known-deviation" if "known-deviation" in verdicts else "ok")


def _matrix_ratio(value: float) -> str:
    return "inf" if value == math.inf else f"{value:.3g}"


def matrix_rows(reports: Sequence[Any]) -> list[list[str]]:
    """The conformance matrix: one row per reference, implementation and framework (its
    settings and dtypes together), in run order. The verdict is the worst of its runs
    (FAIL naming the failed checks with their settings); known deviations are counted
    in examples; the worst error / allowed includes the elements they explain."""
    groups: dict[tuple[str, str, str], list[Any]] = {}
    for r in reports:
        key = (r.reference, r.label or r.loss, r.row.get("framework", ""))
        groups.setdefault(key, []).append(r)
    rows = []
    order = ("CRASHED", "FAIL", "known-deviation", "ok")
    for (reference, label, _), runs in groups.items():
        verdicts = [_verdict(r) for r in runs]
        verdict = min(verdicts, key=order.index)
        failed = sorted({f"{c.name} at {format_params(r.params)} {r.dtype}"
                         for r in runs if not getattr(r, "crashed", False)
                         for c in r.checks.values() if c.failures})
        crashed = [r.error for r in runs if getattr(r, "crashed", False)]
        if failed:
            verdict += " (" + "; ".join(failed) + ")"
        if crashed:
            verdict += f" ({crashed[0]})"
        deviations: dict[str, int] = {}
        for r in runs:
            for c in (getattr(r, "checks", None) or {}).values():
                for dev_id, count in c.deviations.items():
                    deviations[dev_id] = deviations.get(dev_id, 0) + count
        ratios = [c.worst_ratio for r in runs if not getattr(r, "crashed", False)
                  for c in r.checks.values() if not c.not_run_reason]
        first = runs[0]
        dtypes = sorted({r.dtype for r in runs})
        settings = len({format_params(r.params) for r in runs})
        rows.append([f"`{reference}`", f"`{label}`", first.row.get("version") or
                     first.row.get("framework", ""), first.row.get("convention") or "-",
                     f"{settings} x {','.join(dtypes)}",
                     _matrix_ratio(max(ratios)) if ratios else "-", verdict,
                     ", ".join(f"`{k}` ({v})" for k, v in sorted(deviations.items()))
                     or "-"])
    return rows


def invariant_row(label: str, report: Any) -> list[str]:
    if getattr(report, "crashed", False):
        return [label, "-", format_params(report.params), "0", "inf", "CRASHED"]
    return [label, report.invariant, format_params(report.params), str(report.examples),
            _ratio(report.worst_ratio), "ok" if report.ok else "FAIL"]


def markdown_table(rows: Sequence[Sequence[str]], head: Sequence[str] = RUN_HEAD) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def print_table(rows: Sequence[Sequence[str]], head: Sequence[str] = RUN_HEAD) -> None:
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    print(fmt.format(*head))
    print(fmt.format(*("-" * w for w in widths)))
    for r in rows:
        print(fmt.format(*r))


def totals(runs: Sequence[Any], invariants: Sequence[Any]) -> dict[str, int]:
    """The counts a report states first (deterministic: no timings)."""
    return {
        "runs": len(runs), "failed": sum(not r.ok for r in runs),
        "with_known_deviations": sum(1 for r in runs if r.ok and any(
            c.deviations for c in (getattr(r, "checks", None) or {}).values())),
        "invariants": len(invariants), "violated": sum(not r.ok for r in invariants),
        "check_examples": sum(c.examples for r in runs
                              for c in (getattr(r, "checks", None) or {}).values())
        + sum(getattr(r, "examples", 0) for r in invariants),
    }


def totals_line(counts: dict[str, int], seed: int, elapsed: float | None = None) -> str:
    """``"160 runs, 0 failed, 99 invariants, 0 violated; 20800 check-examples; seed 0"``
    (with ``elapsed``, the time and rate instead of the plain count)."""
    parts = [f"{counts['runs']} runs, {counts['failed']} failed"]
    if counts["with_known_deviations"]:
        parts.append(f"{counts['with_known_deviations']} with known upstream deviations")
    if counts["invariants"]:
        parts.append(f"{counts['invariants']} invariants, {counts['violated']} violated")
    examples = counts["check_examples"]
    rate = "" if elapsed is None else \
        f" in {elapsed:.1f} s ({examples / max(elapsed, 1e-9):.0f} per second)"
    return ", ".join(parts) + f"; {examples} check-examples{rate}; seed {seed}"


def _fence(text: str) -> str:
    return "```\n" + text.rstrip("\n") + "\n```\n"


def _failure_sections(label: str, report: Any, cli_line: str | None) -> list[str]:
    """What a failed run has to say: per failing check its message, counterexample and
    the lines that reproduce it."""
    if getattr(report, "crashed", False):
        return [f"### {label}: lossverify crashed\n", f"{report.error}\n"]
    params = format_params(report.params)
    out = [f"### {label} ({report.form}), {params}, {report.dtype}\n"]
    domain, output = getattr(report, "domain", None), getattr(report, "output", None)
    if domain is not None and output is not None and (domain.narrowed or output.adapted):
        out.append(f"Inputs: {domain.describe()}; output: {output.describe()}.\n")
    for check in report.checks.values():
        if not check.failures:
            continue
        out.append(f"**{check.name}** failed on {check.failures} of {check.examples} "
                   f"examples: {check.message}\n")
        out.append("Minimal counterexample:\n")
        out.append(_fence(check.counterexample or check.worst_input or "(none kept)"))
    out.append("Reproduce:\n")
    lines = [report.reproduce_line()] + ([cli_line] if cli_line else [])
    out.append(_fence("\n".join(lines)))
    return out


def _deviation_sections(runs: Sequence[Any]) -> list[str]:
    seen: dict[str, tuple[Any, int]] = {}
    for r in runs:
        for check in (getattr(r, "checks", None) or {}).values():
            for dev_id, count in check.deviations.items():
                dev, total = seen.get(dev_id, (r.deviations[dev_id], 0))
                seen[dev_id] = (dev, total + count)
    out = []
    for dev_id, (dev, count) in sorted(seen.items()):
        out.append(f"- **{dev_id}** ({count} examples): {dev.summary} Reproducer: "
                   f"`{dev.reproducer}`\n")
    return out


def markdown_report(*, environment_line: str, title: str, totals: str,
                    runs: Sequence[tuple[str, Any]], invariants: Sequence[tuple[str, Any]],
                    cli_lines: dict[int, str] | None = None,
                    invariant_examples: int | None = None) -> str:
    """The whole Markdown report: the totals, the tables, then every failure with its
    message, counterexample and reproduce lines, and the known deviations met.
    ``cli_lines`` maps a run's index to the command line that repeats it."""
    tf_runs = [(label, r) for label, r in runs if not getattr(r, "row", None)]
    matrix = [r for _, r in runs if getattr(r, "row", None)]
    parts = [environment_line + "\n", f"# {title}\n", f"**{totals}**\n"]
    if tf_runs or not matrix:
        parts.append(markdown_table([run_row(label, r) for label, r in tf_runs]))
    if matrix:
        parts += ["## Conformance matrix\n", markdown_table(matrix_rows(matrix), MATRIX_HEAD)]
    if invariants:
        count = f" ({invariant_examples} examples each)" if invariant_examples else ""
        parts += [f"## Invariants{count}\n",
                  markdown_table([invariant_row(label, r) for label, r in invariants],
                                 INVARIANT_HEAD)]
    failed = [(i, label, r) for i, (label, r) in enumerate(runs) if not r.ok]
    bad_inv = [(label, r) for label, r in invariants if not r.ok]
    if failed or bad_inv:
        parts.append(f"## Failures ({len(failed)} runs, {len(bad_inv)} invariants)\n")
        for i, label, r in failed:
            parts += _failure_sections(label, r, (cli_lines or {}).get(i))
        for label, r in bad_inv:
            if getattr(r, "crashed", False):
                parts += [f"### {label}: lossverify crashed\n", f"{r.error}\n"]
                continue
            parts += [f"### invariant {r.invariant}: {label}\n", f"{r.message}\n",
                      "Minimal counterexample:\n", _fence(r.counterexample or "(none kept)"),
                      "Reproduce:\n", _fence(r.reproduce_line())]
    deviations = _deviation_sections([r for _, r in runs])
    if deviations:
        parts += ["## Known upstream deviations met (not failures; `--strict` counts "
                  "them)\n", *deviations]
    return "\n".join(parts)


def _strict(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return "NaN" if math.isnan(obj) else ("Infinity" if obj > 0 else "-Infinity")
    if isinstance(obj, dict):
        return {str(k): _strict(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_strict(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item):  # NumPy scalars
        return _strict(obj.item())
    if obj is None or isinstance(obj, str | int | float | bool):
        return obj
    return repr(obj)


def to_strict_json(obj: Any) -> str:
    """``obj`` as strict JSON: non-finite floats as strings (see the module docstring),
    NumPy scalars as numbers, anything else JSON cannot hold as its ``repr``."""
    return json.dumps(_strict(obj), indent=2, sort_keys=True, allow_nan=False) + "\n"
