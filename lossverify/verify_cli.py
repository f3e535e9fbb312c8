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
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, cast

from lossverify import specs as S

REPORT_SCHEMA_VERSION = 1
#: Drawn batches per run in a conformance run (the xla check draws 3/8 as many, larger):
#: with seed 0 every check of every default run then sees at least 200 rows (README,
#: "Verifier throughput").
DEFAULT_MAX_EXAMPLES = 40
#: Rows (samples) every check of every run sees at least: the issue's "200 examples per
#: check", a drawn batch being many examples. Usually 40 draws have them; a seed that
#: draws small batches gets a few more.
DEFAULT_MIN_ROWS = 200
#: Processes of a conformance run. Fixed, not the machine's core count, so the default
#: report is the same bytes on any machine of the same kind.
DEFAULT_JOBS = 2


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
    p.add_argument("--max-examples", type=int, default=DEFAULT_MAX_EXAMPLES,
                   help="Hypothesis examples (drawn batches) per run (default "
                        f"{DEFAULT_MAX_EXAMPLES}); the xla check draws 3/8 as many, of one "
                        "shape per run")
    p.add_argument("--min-rows", type=int, default=DEFAULT_MIN_ROWS, metavar="N",
                   help="draw more batches until every check has seen at least N rows "
                        f"(samples) in every run (default {DEFAULT_MIN_ROWS}; 0: exactly "
                        "--max-examples batches)")
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
    p.add_argument("--dtypes", default="float32",
                   help="comma-separated input dtypes among float32,float64,float16,bfloat16 "
                        "(default float32; the nox verify session runs float32,float64)")
    p.add_argument("--jobs", type=int, default=DEFAULT_JOBS, metavar="N",
                   help="conformance run: spread the runs over N processes (default "
                        f"{DEFAULT_JOBS}, whatever the machine). Same draws, verdicts and "
                        "counterexamples for any N, the same bytes run after run for a given "
                        "N; TensorFlow's last-digit rounding can differ between different N")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress lines on stderr")
    p.add_argument("--plot", metavar="PATH",
                   help="draw the error distribution (error / allowed) per loss and check "
                        "as a PNG")
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
    return [label, form, _format_params(params), report.dtype, str(examples),
            f"{worst.worst_abs:.2e}",
            f"{worst.worst_ratio:.3f}" if worst.worst_ratio != float("inf") else "inf",
            worst.name, verdict]


_HEAD = ["loss", "form", "parameters", "dtype", "examples", "worst err", "err/allowed",
         "check", "verdict"]


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


@dataclass(frozen=True)
class Job:
    """One unit of a conformance run, small and picklable for ``--jobs``: a verify run
    (``invariant`` empty) or one invariant, by index into the spec's cases."""

    spec: str
    params: tuple[tuple[str, Any], ...]
    label: str = ""
    dtype: str = "float32"
    invariant: int = -1


def _plan(args: argparse.Namespace, dtypes: list[str]) -> list[Job]:
    from lossverify import invariants as I

    jobs: list[Job] = []
    inv_examples = _invariant_examples(args)
    for spec, params, impls in conformance_jobs(args.only, args.thorough):
        frozen = tuple(params.items())
        jobs += [Job(spec.name, frozen, impl.label, dtype) for impl in impls for dtype in dtypes]
        if inv_examples > 0:
            jobs += [Job(spec.name, frozen, invariant=i)
                     for i in range(len(I.conformance_cases(spec.name, params)))]
    return jobs


def _invariant_examples(args: argparse.Namespace) -> int:
    if args.invariant_examples is None:
        return max(args.max_examples // 4, 1)
    return int(args.invariant_examples)


@dataclass
class Crashed:
    """A job that raised inside lossverify itself (a bug to report, not a loss finding):
    the run goes on, the job counts as failed, and the traceback's last line is kept."""

    label: str
    form: str
    params: dict[str, Any]
    dtype: str
    error: str
    ok: bool = False
    examples: int = 0
    checks: dict[str, Any] | None = None

    def __str__(self) -> str:
        return f"lossverify crashed on {self.label} {self.params}: {self.error}"

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "form": self.form, "params": self.params,
                "dtype": self.dtype, "ok": False, "crashed": self.error}


def _run_job(job: Job, args: argparse.Namespace, checks: list[str] | None) -> Any:
    """Run one job (in this process or a worker); returns ``(label, report)``."""
    try:
        return _run_job_unguarded(job, args, checks)
    except Exception as exc:  # a lossverify bug must not end the whole conformance run
        kind = "invariant" if job.invariant >= 0 else "verify"
        error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"
        crashed = Crashed(job.label or f"{job.spec} {kind} #{job.invariant}", kind,
                          dict(job.params), job.dtype, error, checks={})
        return crashed.label, crashed


def _run_job_unguarded(job: Job, args: argparse.Namespace, checks: list[str] | None) -> Any:
    import lossverify
    from lossverify import invariants as I

    params = dict(job.params)
    if job.invariant >= 0:
        label, invariant, impls, ref, inv_params = I.conformance_cases(job.spec,
                                                                       params)[job.invariant]
        losses = tuple(S.build_implementation(impl, p) for impl, p in impls)
        report = I.check_invariant(invariant, *losses, reference=ref,
                                   max_examples=_invariant_examples(args), seed=args.seed,
                                   **inv_params)
        return label, report
    impl = _implementation(job)
    loss = S.build_implementation(impl, params)
    report = lossverify.verify(loss, job.spec, max_examples=args.max_examples, seed=args.seed,
                               checks=checks, strict=args.strict, dtype=job.dtype,
                               min_rows=args.min_rows, **params)
    report.label = impl.label
    return impl.label, report


def _quiet_tensorflow() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")  # retracing and autograph notices are not findings


#: Relative cost of a job, for splitting a run over ``--jobs`` processes: a Loss class is
#: checked batch by batch (value, gradient), a function on fused batches, an invariant
#: on a few batches. Measured on the default run; only the balance depends on them.
_COST = {"class": 5.0, "function": 3.0, "invariant": 1.0}


def _implementation(job: Job) -> S.Implementation:
    """The implementation a verify job checks."""
    return next(i for i in S.get_spec(job.spec).implementations if i.label == job.label)


def _job_cost(job: Job) -> float:
    if job.invariant >= 0:
        return _COST["invariant"]
    return _COST["class" if _implementation(job).kind == "class" else "function"]


def _shares(jobs: list[Job], n: int) -> list[list[int]]:
    """Split ``jobs`` (by index) over ``n`` processes: each job, costliest first (ties in
    plan order), to the share with the least estimated cost so far (ties: the lowest
    index); each share keeps plan order. Fixed by the plan alone, never by timing, so a given
    ``n`` gives the same bytes run after run."""
    costs = [_job_cost(job) for job in jobs]
    loads = [0.0] * n
    owner: dict[int, int] = {}
    for i in sorted(range(len(jobs)), key=lambda i: (-costs[i], i)):
        k = min(range(n), key=lambda k: (loads[k], k))
        owner[i] = k
        loads[k] += costs[i]
    return [[i for i in range(len(jobs)) if owner[i] == k] for k in range(n)]


def _results(jobs: list[Job], args: argparse.Namespace, checks: list[str] | None,
             on_result: Callable[[Job, Any], None] = lambda job, result: None
             ) -> Iterator[tuple[Job, Any]]:
    """Job results in plan order, computed here or across ``--jobs`` processes.
    ``on_result`` sees each result as soon as it exists (the progress display), in the
    order the processes finish them."""
    if args.jobs <= 1 or len(jobs) <= 1:
        _quiet_tensorflow()
        for job in jobs:
            result = _run_job(job, args, checks)
            on_result(job, result)
            yield job, result
        return
    import multiprocessing
    from multiprocessing.connection import Connection, wait

    ctx = multiprocessing.get_context("spawn")  # TensorFlow is not fork-safe
    # Each share in a fresh process of its own, all started at once; this process never
    # imports TensorFlow. Each result comes back through its share's pipe when done.
    shares = _shares(jobs, min(args.jobs, len(jobs)))
    running: dict[Any, tuple[list[int], Any]] = {}
    for share in shares:
        receive, send = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=_run_share,
                           args=(send, [(i, jobs[i]) for i in share], args, checks),
                           daemon=True)
        proc.start()
        send.close()
        running[receive] = (share, proc)
    done: dict[int, Any] = {}
    while running:
        for ready in wait(list(running)):
            share, proc = running[ready]
            try:
                message = cast(Connection, ready).recv()
            except EOFError:
                proc.join()
                raise SystemExit(f"--jobs: a worker process died (exit code "
                                 f"{proc.exitcode}) running {len(share)} jobs") from None
            if message is None:  # the share is complete
                del running[ready]
                proc.join()
                continue
            i, result = message
            done[i] = result
            on_result(jobs[i], result)
    for i, job in enumerate(jobs):
        yield job, done[i]


def _run_share(send: Any, share: list[tuple[int, Job]], args: argparse.Namespace,
               checks: list[str] | None) -> None:
    """One worker process: its jobs in plan order, each result sent as it is done, then
    None. It then exits at once: TensorFlow's interpreter teardown takes about 2 s,
    which the parent would otherwise wait for."""
    _quiet_tensorflow()
    for i, job in share:
        send.send((i, _run_job(job, args, checks)))
    send.send(None)
    send.close()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


class Progress:
    """One line per finished job on stderr: rewritten in place on a terminal, appended
    otherwise (CI logs)."""

    def __init__(self, total: int, enabled: bool):
        self.total, self.enabled, self.done = total, enabled, 0
        self.tty = sys.stderr.isatty()
        self.started = time.perf_counter()

    def update(self, what: str, ok: bool) -> None:
        self.done += 1
        if not self.enabled:
            return
        elapsed = time.perf_counter() - self.started
        eta = elapsed / self.done * (self.total - self.done)
        line = (f"[{self.done}/{self.total} {elapsed:5.0f}s, ~{eta:.0f}s left] "
                f"{'ok  ' if ok else 'FAIL'} {what}")
        if self.tty:
            print("\r\033[K" + line[:150], end="" if self.done < self.total else "\n",
                  file=sys.stderr, flush=True)
        else:
            print(line, file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    import lossverify
    from lossverify import environment
    from lossverify._io import write_json, write_text
    checks = args.checks.split(",") if args.checks else None
    dtypes = _parse_dtypes(args.dtypes)
    if args.jobs < 1:
        raise SystemExit(f"--jobs: expected a positive int, got {args.jobs}")
    if args.min_rows < 0:
        raise SystemExit(f"--min-rows: expected a non-negative int, got {args.min_rows}")
    started = time.perf_counter()
    reports: list[Any] = []
    rows: list[list[str]] = []
    inv_reports: list[Any] = []
    inv_rows: list[list[str]] = []
    env = environment.describe()  # here, in the parent: --jobs workers do not need it
    if args.loss or args.reference:
        if not (args.loss and args.reference):
            raise SystemExit("verify: --loss and --reference go together")
        _quiet_tensorflow()
        loss = load_target(args.loss)
        params = parse_params(args.param)
        print(environment.summary_line(env))
        for dtype in dtypes:
            report = lossverify.verify(loss, args.reference, max_examples=args.max_examples,
                                       seed=args.seed, checks=checks, strict=args.strict,
                                       dtype=dtype, min_rows=args.min_rows, **params)
            report.label = args.loss
            print(report)
            reports.append(report)
            rows.append(_row(args.loss, report.form, params, report))
    else:
        jobs = _plan(args, dtypes)
        progress = Progress(len(jobs), not args.no_progress)
        print(environment.summary_line(env), flush=True)

        def show(job: Job, result: tuple[str, Any]) -> None:
            label, report = result
            if isinstance(report, Crashed):
                progress.update(f"{label}: CRASHED {report.error}", False)
            elif job.invariant >= 0:
                progress.update(f"{label}: {report.invariant}", report.ok)
            else:
                progress.update(f"{label} ({report.form}) {_format_params(report.params)} "
                                f"{report.dtype}", report.ok)

        for job, (label, report) in _results(jobs, args, checks, show):
            if isinstance(report, Crashed):
                (inv_reports if job.invariant >= 0 else reports).append(report)
                shown = _format_params(report.params)
                if job.invariant >= 0:  # the columns of _INV_HEAD, then of _HEAD
                    inv_rows.append([label, "-", shown, "0", "inf", "CRASHED"])
                else:
                    rows.append([label, "-", shown, report.dtype, "0", "-", "inf", "-",
                                 "CRASHED"])
                print(report, file=sys.stderr)
                continue
            if job.invariant >= 0:
                inv_reports.append(report)
                inv_rows.append(_invariant_row(label, report))
            else:
                reports.append(report)
                rows.append(_row(label, report.form, report.params, report))
            if not args.quiet and not report.ok:
                print(report, file=sys.stderr)
        print_table(rows)
        if inv_rows:
            print()
            print_table(inv_rows, _INV_HEAD)
    elapsed = time.perf_counter() - started
    failed = sum(not r.ok for r in reports)
    inv_failed = sum(not r.ok for r in inv_reports)
    examples = sum(c.examples for r in reports for c in (r.checks or {}).values())
    examples += sum(r.examples for r in inv_reports)
    invariants = f", {len(inv_reports)} invariants, {inv_failed} violated" if inv_reports else ""
    print(f"\n{len(reports)} runs, {failed} failed{invariants}; {examples} check-examples in "
          f"{elapsed:.1f} s ({examples / max(elapsed, 1e-9):.0f} per second); seed {args.seed}")
    if args.json:
        write_json(args.json, {"schema_version": REPORT_SCHEMA_VERSION,
                               "environment": env,
                               "seed": args.seed, "max_examples": args.max_examples,
                               "min_rows": args.min_rows,
                               "dtypes": dtypes,
                               "runs": [r.to_dict() for r in reports],
                               "invariants": [r.to_dict() for r in inv_reports]})
    if args.markdown:
        inv_part = ""
        if inv_rows:
            inv_part = (f"\n## Invariants ({inv_reports[0].max_examples} examples each)\n\n"
                        + markdown_table(inv_rows, _INV_HEAD))
        write_text(args.markdown, environment.summary_line(env) + "\n\n"
                                  f"# lossverify conformance (seed {args.seed}, "
                                  f"{args.max_examples} examples per check)\n\n"
                                  + markdown_table(rows) + inv_part)
    if args.plot:
        from lossverify.report_plot import save_error_distributions

        save_error_distributions([r for r in reports if not isinstance(r, Crashed)], args.plot)
        print(f"error distributions: {args.plot}")
    return 1 if failed or inv_failed else 0


def _parse_dtypes(text: str) -> list[str]:
    from lossverify.numerics import DTYPES

    chosen = [d.strip() for d in text.split(",") if d.strip()]
    bad = [d for d in chosen if d not in DTYPES]
    if bad or not chosen:
        raise SystemExit(f"--dtypes: expected a comma-separated subset of {','.join(DTYPES)}, "
                         f"got {text!r}")
    return chosen
