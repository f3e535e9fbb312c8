"""``lossverify verify``: the conformance run (the main job) and user-loss verification.

With no ``--loss``, every implementation in :data:`lossverify.specs.SPECS` (Keras's
built-in classes and functions, the notes' versions) is verified against its reference
for every setting in the spec's default grid (``--thorough``: every combination the
reference accepts) and a table is printed. ``--loss module:attr --reference NAME
--param key=value`` verifies one user loss. Exit code 1 on any failure.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import os
import sys
import time
from collections.abc import Iterator
from typing import Any

from lossverify import specs as S

REPORT_SCHEMA_VERSION = 1


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("verify", help="verify losses against the NumPy references",
                              description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--loss", metavar="MODULE:ATTR",
                   help="a user loss: a keras.losses.Loss instance or class, or a function")
    p.add_argument("--reference", metavar="NAME", choices=sorted(S.SPECS),
                   help="the reference to verify --loss against")
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                   help="a reference parameter (Python literal), repeatable")
    p.add_argument("--only", action="append", default=[], metavar="REFERENCE",
                   help="conformance run: only these references")
    p.add_argument("--max-examples", type=int, default=100,
                   help="Hypothesis examples (drawn batches) per run (default 100)")
    p.add_argument("--seed", type=int, default=0, help="Hypothesis seed (default 0)")
    p.add_argument("--checks", default=None,
                   help="comma-separated subset of value,gradient,graph,xla")
    p.add_argument("--thorough", action="store_true",
                   help="sweep every parameter combination the references accept")
    p.add_argument("--strict", action="store_true",
                   help="count known upstream deviations as failures")
    p.add_argument("--invariant-examples", type=int, default=None, metavar="N",
                   help="conformance run: examples per invariant (metamorphic relation: "
                        "class = function, sparse = dense, batch permutation/split, focal "
                        "vs cross-entropy, non-negativity); default max-examples / 4, "
                        "0 skips them")
    p.add_argument("--json", metavar="PATH", help="write the report as JSON")
    p.add_argument("--markdown", metavar="PATH", help="write the summary table as Markdown")
    p.add_argument("--quiet", action="store_true", help="print only the summary table")
    p.set_defaults(func=run)


def parse_params(items: list[str]) -> dict[str, Any]:
    """``["gamma=2.0", "from_logits=True"]`` -> ``{"gamma": 2.0, "from_logits": True}``."""
    params: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.isidentifier():
            raise SystemExit(f"--param: expected KEY=VALUE, got {item!r}")
        try:
            params[key] = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            params[key] = raw
    return params


def load_target(target: str) -> Any:
    """Import ``module:attr``; a ``keras.losses.Loss`` subclass is instantiated."""
    module, sep, attr = target.partition(":")
    if not sep or not module or not attr:
        raise SystemExit(f"--loss: expected MODULE:ATTR, got {target!r}")
    sys.path.insert(0, os.getcwd())
    try:
        obj = importlib.import_module(module)
    except ImportError as exc:
        raise SystemExit(f"--loss: cannot import module {module!r}: {exc}") from None
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise SystemExit(f"--loss: module {module!r} has no attribute {attr!r}") from None
    import keras

    if isinstance(obj, type) and issubclass(obj, keras.losses.Loss):
        obj = obj()
    return obj


def conformance_jobs(only: list[str], thorough: bool
                     ) -> Iterator[tuple[S.LossSpec, dict[str, Any], list[S.Implementation]]]:
    """Per reference and parameter setting, the implementations to verify."""
    for name, spec in S.SPECS.items():
        if only and name not in only:
            continue
        grid = spec.thorough_grid() if thorough and spec.thorough_axes else spec.default_grid
        for params in grid:
            yield spec, dict(params), list(spec.implementations)


def _format_params(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in params.items()) or "-"


def _row(label: str, form: str, params: dict[str, Any], report: Any) -> list[str]:
    first = next(iter(report.checks.values()))
    examples = report.checks.get("value", first).examples
    worst = max(report.checks.values(), key=lambda c: c.worst_ratio)
    verdicts = {c.verdict for c in report.checks.values()}
    verdict = "FAIL" if "FAIL" in verdicts else (
        "known-deviation" if "known-deviation" in verdicts else "ok")
    failed = [c.name for c in report.checks.values() if c.failures]
    if failed:
        verdict += f" ({','.join(failed)})"
    return [label, form, _format_params(params), str(examples), f"{worst.worst_abs:.2e}",
            f"{worst.worst_ratio:.3f}" if worst.worst_ratio != float("inf") else "inf",
            worst.name, verdict]


_HEAD = ["loss", "form", "parameters", "examples", "worst err", "err/allowed", "check",
         "verdict"]


_INV_HEAD = ["losses", "invariant", "parameters", "examples", "err/allowed", "verdict"]


def _invariant_row(label: str, report: Any) -> list[str]:
    ratio = report.worst_ratio
    return [label, report.invariant, _format_params(report.params), str(report.examples),
            "inf" if ratio == float("inf") else f"{ratio:.3f}",
            "ok" if report.ok else "FAIL"]


def markdown_table(rows: list[list[str]], head: list[str] | None = None) -> str:
    head = head or _HEAD
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def print_table(rows: list[list[str]], head: list[str] | None = None) -> None:
    head = head or _HEAD
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    print(fmt.format(*head))
    print(fmt.format(*("-" * w for w in widths)))
    for r in rows:
        print(fmt.format(*r))


def run(args: argparse.Namespace) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    import lossverify
    from lossverify._io import write_json, write_text

    tf.get_logger().setLevel("ERROR")  # retracing and autograph notices are not findings
    checks = args.checks.split(",") if args.checks else None
    started = time.perf_counter()
    reports: list[Any] = []
    rows: list[list[str]] = []
    inv_reports: list[Any] = []
    inv_rows: list[list[str]] = []
    if args.loss or args.reference:
        if not (args.loss and args.reference):
            raise SystemExit("verify: --loss and --reference go together")
        loss = load_target(args.loss)
        params = parse_params(args.param)
        report = lossverify.verify(loss, args.reference, max_examples=args.max_examples,
                                   seed=args.seed, checks=checks, strict=args.strict,
                                   **params)
        print(report)
        reports.append(report)
        rows.append(_row(args.loss, report.form, params, report))
    else:
        from lossverify import invariants as I

        inv_examples = (max(args.max_examples // 4, 1) if args.invariant_examples is None
                        else args.invariant_examples)
        for spec, params, impls in conformance_jobs(args.only, args.thorough):
            for impl in impls:
                loss = S.build_implementation(impl, params)
                report = lossverify.verify(loss, spec.name, max_examples=args.max_examples,
                                           seed=args.seed, checks=checks,
                                           strict=args.strict, **params)
                reports.append(report)
                rows.append(_row(impl.label, impl.form, params, report))
                if not args.quiet and not report.ok:
                    print(report, file=sys.stderr)
            if inv_examples <= 0:
                continue
            for label, invariant, losses, ref, inv_params in I.conformance_cases(spec.name,
                                                                                 params):
                inv = I.check_invariant(invariant, *losses, reference=ref,
                                        max_examples=inv_examples, seed=args.seed,
                                        **inv_params)
                inv_reports.append(inv)
                inv_rows.append(_invariant_row(label, inv))
                if not args.quiet and not inv.ok:
                    print(inv, file=sys.stderr)
        print_table(rows)
        if inv_rows:
            print()
            print_table(inv_rows, _INV_HEAD)
    elapsed = time.perf_counter() - started
    failed = sum(not r.ok for r in reports)
    inv_failed = sum(not r.ok for r in inv_reports)
    examples = sum(c.examples for r in reports for c in r.checks.values())
    examples += sum(r.examples for r in inv_reports)
    invariants = f", {len(inv_reports)} invariants, {inv_failed} violated" if inv_reports else ""
    print(f"\n{len(reports)} runs, {failed} failed{invariants}; {examples} check-examples in "
          f"{elapsed:.1f} s ({examples / max(elapsed, 1e-9):.0f} per second); seed {args.seed}")
    if args.json:
        write_json(args.json, {"schema_version": REPORT_SCHEMA_VERSION,
                               "seed": args.seed, "max_examples": args.max_examples,
                               "runs": [r.to_dict() for r in reports],
                               "invariants": [r.to_dict() for r in inv_reports]})
    if args.markdown:
        write_text(args.markdown, f"# lossverify conformance (seed {args.seed}, "
                                  f"{args.max_examples} examples per check)\n\n"
                                  + markdown_table(rows)
                                  + (f"\n## Invariants ({inv_rows and inv_reports[0].max_examples}"
                                     f" examples each)\n\n" + markdown_table(inv_rows, _INV_HEAD)
                                     if inv_rows else ""))
    return 1 if failed or inv_failed else 0
