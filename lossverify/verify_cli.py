"""``lossverify verify``: the conformance run (the main job) and user-loss verification.

Everything that can be checked without TensorFlow (option values, parameter names and
ranges, reference names, whether the loss's module exists) is checked first, so a
mistake costs well under two seconds and one line on stderr (exit code 2).
"""

from __future__ import annotations

import argparse
import ast
import importlib
import importlib.util
import os
import shlex
import sys
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

from lossverify import contract as K
from lossverify import report as R
from lossverify import specs as S
from lossverify.checks import CHECKS

#: Drawn batches per run in a conformance run (the xla check draws 3/8 as many, larger):
#: with seed 0 every check of every default run then sees at least 200 rows (README,
#: "Verifier throughput").
DEFAULT_MAX_EXAMPLES = 40
#: Rows (samples) every check of every run sees at least: usually 40 draws have them; a
#: seed that draws small batches gets a few more.
DEFAULT_MIN_ROWS = 200
#: Processes of a conformance run. Fixed, not the machine's core count, so the default
#: report is the same bytes on any machine of the same kind.
DEFAULT_JOBS = 2
DTYPES = ("float32", "float64", "float16", "bfloat16")

DESCRIPTION = """\
Verify losses against lossverify's NumPy references.

Without --loss: the conformance run. Every Keras built-in and study-notes loss, as a
class and as a function, is verified against its reference for each parameter setting
of its spec (--thorough: every combination the reference accepts), then the invariants
(class = function, sparse = dense, batch permutation, ...) are checked. A table is
printed; --json, --markdown and --plot write the report.

With --frameworks torch,jax,keras-jax,keras-torch: the conformance matrix across
frameworks instead (or beside it, with tensorflow in the list): each reference's PyTorch
and JAX/optax counterparts, called with their documented conventions (reduction='none',
optax's 0.5, ...), and Keras 3's functions on the JAX and PyTorch backends, each row
labelled with its framework and version. No TensorFlow is imported for them.

With --loss MODULE:ATTR --reference NAME: one loss of your own.
  --param KEY=VALUE       a parameter of the reference
  --loss-param KEY=VALUE  a parameter of your loss: a class is constructed with it, a
                          factory (every parameter has a default) called with it, a
                          loss function (y_true, y_pred, ...) gets it bound
A parameter both take that is given to one side only (with a different value) warns.
--hard-labels, --probabilities and --logits narrow the drawn inputs to the domain your
loss is defined on; --per-element and --scale say how its output relates to the
reference's per-sample loss.

Exit code 0: every check passed; 1: a check failed; 2: a usage error."""

EPILOG = "references: " + ", ".join(sorted(S.SPECS)) + """

examples:
  lossverify verify --json out.json --markdown out.md --plot out.png
  lossverify verify --frameworks torch,jax,keras-jax,keras-torch --markdown matrix.md
  lossverify verify --loss lossverify.notes_losses:FocalLoss --reference focal_loss \\
      --param gamma=0.5 --loss-param gamma=0.5
  lossverify verify --loss mymodule:per_element_mse --reference mean_squared_error \\
      --per-element mean"""


class UsageError(Exception):
    """A mistake in the command line: printed as one line, exit code 2."""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("verify", help="verify losses against the NumPy references",
                              description=DESCRIPTION, epilog=EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    user = p.add_argument_group("your own loss")
    user.add_argument("--loss", metavar="MODULE:ATTR",
                      help="a keras.losses.Loss instance or class, a loss function, or a "
                           "factory returning one")
    user.add_argument("--reference", metavar="NAME", choices=sorted(S.SPECS),
                      help="the reference to verify --loss against (listed below)")
    user.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                      help="a reference parameter (a Python literal), repeatable")
    user.add_argument("--loss-param", action="append", default=[], metavar="KEY=VALUE",
                      help="a parameter of the loss itself (a Python literal), repeatable")
    user.add_argument("--hard-labels", action="store_true",
                      help="labels exactly 0/1 (binary) or one-hot (categorical)")
    user.add_argument("--probabilities", metavar="LOW,HIGH",
                      help="draw probabilities in [LOW, HIGH] only, e.g. 1e-7,0.9999999")
    user.add_argument("--logits", metavar="LOW,HIGH", help="draw logits in [LOW, HIGH] only")
    user.add_argument("--per-element", choices=K.REDUCTIONS,
                      help="the loss returns one value per element; this reduction over the "
                           "class axis gives the per-sample loss")
    user.add_argument("--scale", type=float, default=1.0,
                      help="the loss is SCALE times the reference (default 1)")
    run_ = p.add_argument_group("the run")
    run_.add_argument("--max-examples", type=int, default=DEFAULT_MAX_EXAMPLES,
                      help="Hypothesis examples (drawn batches) per run (default "
                           f"{DEFAULT_MAX_EXAMPLES}); the xla check draws 3/8 as many, of "
                           "one shape per run")
    run_.add_argument("--min-rows", type=int, default=DEFAULT_MIN_ROWS, metavar="N",
                      help="draw more batches until every check has seen at least N rows "
                           f"(samples) in every run (default {DEFAULT_MIN_ROWS}; 0: exactly "
                           "--max-examples batches)")
    run_.add_argument("--seed", type=int, default=0, help="Hypothesis seed (default 0)")
    run_.add_argument("--checks", default=None,
                      help="comma-separated subset of " + ",".join(CHECKS))
    run_.add_argument("--dtypes", default="float32",
                      help="comma-separated input dtypes among " + ",".join(DTYPES) +
                           " (default float32; the nox verify session runs all four)")
    run_.add_argument("--strict", action="store_true",
                      help="count known upstream deviations as failures")
    conf = p.add_argument_group("the conformance run")
    conf.add_argument("--only", action="append", default=[], metavar="REFERENCE",
                      choices=sorted(S.SPECS), help="only these references (repeatable)")
    conf.add_argument("--thorough", action="store_true",
                      help="sweep every parameter combination the references accept")
    conf.add_argument("--invariant-examples", type=int, default=None, metavar="N",
                      help="examples per invariant (default max-examples / 4; 0 skips them)")
    conf.add_argument("--frameworks", default=None, metavar="LIST",
                      help="the conformance matrix: a comma-separated subset of "
                           + ",".join(S.MATRIX_FRAMEWORKS) + " (default tensorflow: Keras "
                           "on TensorFlow and the notes' losses, with the invariants). torch "
                           "and jax run each reference's PyTorch (torch.nn.functional, "
                           "torchvision) and JAX (optax) counterparts, keras-jax and "
                           "keras-torch Keras 3's functions on those backends; none of them "
                           "imports TensorFlow")
    conf.add_argument("--jobs", type=int, default=DEFAULT_JOBS, metavar="N",
                      help=f"spread the runs over N processes (default {DEFAULT_JOBS}, "
                           "whatever the machine): same draws, verdicts and counterexamples "
                           "for any N")
    out = p.add_argument_group("output")
    out.add_argument("--json", metavar="PATH", help="write the report as (strict) JSON")
    out.add_argument("--markdown", metavar="PATH",
                     help="write the report as Markdown: totals, tables, every failure with "
                          "its counterexample and reproduce lines")
    out.add_argument("--plot", metavar="PATH",
                     help="draw the distribution of error / allowed per run and check (PNG)")
    out.add_argument("--quiet", action="store_true",
                     help="print only the summary table (TensorFlow's CPU-only start-up "
                          "notices are dropped in any case)")
    out.add_argument("--no-progress", action="store_true", help="no progress lines on stderr")
    p.set_defaults(func=run)


# ------------------------------------------------------------------ parsing and checks


def parse_params(items: list[str], option: str = "--param") -> dict[str, Any]:
    """``["gamma=2.0", "from_logits=True"]`` -> ``{"gamma": 2.0, "from_logits": True}``;
    a value that is not a Python literal stays a string. A repeated key is an error."""
    params: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise UsageError(f"{option}: expected KEY=VALUE, got {item!r}")
        if key in params:
            raise UsageError(f"{option}: {key} given twice ({key}={params[key]!r} and "
                             f"{item!r}); give each parameter once")
        try:
            params[key] = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            params[key] = raw
    return params


def _parse_range(text: str | None, option: str) -> tuple[float, float] | None:
    if text is None:
        return None
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise UsageError(f"{option}: expected LOW,HIGH (two numbers), got {text!r}") from None
    return lo, hi


def _parse_list(text: str | None, option: str, allowed: tuple[str, ...]) -> list[str] | None:
    if text is None:
        return None
    chosen = [d.strip() for d in text.split(",") if d.strip()]
    bad = [d for d in chosen if d not in allowed]
    if bad or not chosen:
        raise UsageError(f"{option}: expected a comma-separated subset of {','.join(allowed)}, "
                         f"got {text!r}")
    return chosen


#: The domain's fields as the command line names them (see ``verifier.check_domain``).
CLI_NAMES = {"probabilities": "--probabilities", "logits": "--logits",
             "use_logits": "--logits LOW,HIGH", "from_logits": "--param from_logits=True"}


@dataclass
class Settings:
    """The command line, checked (no TensorFlow needed)."""

    dtypes: list[str]
    checks: list[str] | None
    params: dict[str, Any] = field(default_factory=dict)
    loss_params: dict[str, Any] = field(default_factory=dict)
    domain: K.Domain = field(default_factory=K.Domain)
    output: K.Output = field(default_factory=K.Output)


def check_args(args: argparse.Namespace) -> Settings:
    """Every check that needs no TensorFlow; raises :class:`UsageError`."""
    for name, low in (("max_examples", 1), ("min_rows", 0), ("jobs", 1)):
        if getattr(args, name) < low:
            raise UsageError(f"--{name.replace('_', '-')}: expected an int >= {low}, got "
                             f"{getattr(args, name)}")
    if args.invariant_examples is not None and args.invariant_examples < 0:
        raise UsageError(f"--invariant-examples: expected an int >= 0, got "
                         f"{args.invariant_examples}")
    settings = Settings(dtypes=_parse_list(args.dtypes, "--dtypes", DTYPES) or [],
                        checks=_parse_list(args.checks, "--checks", CHECKS))
    frameworks = _parse_list(getattr(args, "frameworks", None), "--frameworks",
                             S.MATRIX_FRAMEWORKS)
    if frameworks is not None:
        if args.loss or args.reference:
            raise UsageError("--frameworks: applies to the conformance run; a loss of your "
                             "own runs in its own framework")
        _check_frameworks_installed(frameworks)
        args.frameworks = frameworks  # the conformance plan reads the parsed list
    user_only = {"--param": args.param, "--loss-param": args.loss_param,
                 "--hard-labels": args.hard_labels, "--probabilities": args.probabilities,
                 "--logits": args.logits, "--per-element": args.per_element,
                 "--scale": args.scale != 1.0}
    if not (args.loss or args.reference):
        given = [k for k, v in user_only.items() if v]
        if given:
            raise UsageError(f"{given[0]}: applies to a loss of your own (--loss MODULE:ATTR "
                             "--reference NAME), not to the conformance run")
        return settings
    if not (args.loss and args.reference):
        raise UsageError("--loss and --reference go together: the loss to verify and the "
                         "reference to verify it against")
    spec = S.get_spec(args.reference)
    settings.params = parse_params(args.param, "--param")
    settings.loss_params = parse_params(args.loss_param, "--loss-param")
    for key, option in (("soft_labels", "--hard-labels"), ("probabilities", "--probabilities"),
                        ("logits", "--logits")):
        if key in settings.params and key not in spec.parameters:
            raise UsageError(f"--param: {key} is not a parameter of {spec.name}; the "
                             f"input domain is given with {option}")
    try:
        S.check_reference_params(spec, settings.params)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"--param: {str(exc).removeprefix('reference_kwargs: ')}") from None
    try:
        settings.domain = K.Domain(args.hard_labels, _parse_range(args.probabilities,
                                                                  "--probabilities"),
                                   _parse_range(args.logits, "--logits"))
    except ValueError as exc:
        option = "--probabilities" if str(exc).startswith("probabilities") else "--logits"
        raise UsageError(f"{option}: {str(exc).partition(': ')[2]}") from None
    from lossverify.verifier import check_domain

    try:
        check_domain(spec, settings.params, settings.domain, CLI_NAMES)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    try:
        settings.output = K.Output(args.per_element, args.scale)
    except ValueError as exc:
        raise UsageError(f"--scale: {str(exc).partition(': ')[2]}") from None
    return settings


#: what each matrix framework needs installed, and the extra that installs it
_NEEDS = {"tensorflow": (("tensorflow", "tf"),), "torch": (("torch", "torch"),),
          "jax": (("jax", "jax"), ("optax", "jax")),
          "keras-jax": (("keras", "tf"), ("jax", "jax")),
          "keras-torch": (("keras", "tf"), ("torch", "torch"))}


def _check_frameworks_installed(frameworks: list[str]) -> None:
    """Each chosen framework's packages are installed (found, not imported)."""
    for framework in frameworks:
        for module, extra in _NEEDS[framework]:
            if importlib.util.find_spec(module) is None:
                raise UsageError(f"--frameworks: {framework} needs {module}, which is not "
                                 f"installed (pip install 'lossverify[{extra}]')")


def find_module(target: str) -> tuple[str, str]:
    """``MODULE:ATTR`` split, the module known to exist (found, not imported yet)."""
    module, sep, attr = target.partition(":")
    if not sep or not module or not attr:
        raise UsageError(f"--loss: expected MODULE:ATTR, got {target!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        found = importlib.util.find_spec(module)
    except (ImportError, ValueError) as exc:  # a parent package that is missing
        raise UsageError(f"--loss: cannot find module {module!r}: {exc}") from None
    if found is None:
        raise UsageError(f"--loss: no module named {module!r} (looked in the current "
                         "directory and on sys.path)")
    return module, attr


def load_target(target: str) -> Any:
    """Import ``MODULE:ATTR`` (the module was found by :func:`find_module`)."""
    module, attr = find_module(target)
    try:
        obj: Any = importlib.import_module(module)
    except Exception as exc:  # the user's module may raise anything on import
        raise UsageError(f"--loss: importing {module!r} raised {type(exc).__name__}: "
                         f"{str(exc).splitlines()[0] if str(exc) else ''}") from None
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise UsageError(f"--loss: module {module!r} has no attribute {attr!r}") from None
    if not callable(obj):
        raise UsageError(f"--loss: {target} is {type(obj).__name__}, expected a loss "
                         "(a callable, a class or a factory)")
    return obj


def cli_line(args: argparse.Namespace, dtype: str) -> str:
    """The command line that repeats a user-loss run (one dtype)."""
    words = ["lossverify", "verify", "--loss", args.loss, "--reference", args.reference]
    words += [w for item in args.param for w in ("--param", item)]
    words += [w for item in args.loss_param for w in ("--loss-param", item)]
    if args.hard_labels:
        words.append("--hard-labels")
    for option in ("probabilities", "logits", "per_element"):
        if getattr(args, option) is not None:
            words += [f"--{option.replace('_', '-')}", str(getattr(args, option))]
    if args.scale != 1.0:
        words += ["--scale", repr(args.scale)]
    words += ["--dtypes", dtype, "--seed", str(args.seed), "--max-examples",
              str(args.max_examples), "--min-rows", str(args.min_rows)]
    if args.checks:
        words += ["--checks", args.checks]
    if args.strict:
        words.append("--strict")
    return " ".join(shlex.quote(w) for w in words)


# ------------------------------------------------------------------------------ runs


def _warn(message: str) -> None:
    print(f"lossverify verify: warning: {message}", file=sys.stderr)


def _user_runs(args: argparse.Namespace, settings: Settings, header: str
               ) -> tuple[list[tuple[str, Any]], dict[int, str]]:
    """The user's loss in each dtype; prints each report."""
    import lossverify
    from lossverify._tf import import_tensorflow, start_up_notices_dropped

    with start_up_notices_dropped():  # the user's module may import TensorFlow itself
        obj = load_target(args.loss)
    import_tensorflow(quiet=True)
    try:
        loss, _ = K.build_loss(obj, settings.loss_params)
    except TypeError as exc:
        raise UsageError(f"--loss-param: {str(exc).removeprefix('loss_params: ')}") from None
    from lossverify.checks import is_keras_loss

    if settings.output.per_element and is_keras_loss(loss):
        raise UsageError("--per-element: applies to a function returning one value per "
                         "element; a keras.losses.Loss returns the reduced loss")
    print(header, flush=True)
    runs: list[tuple[str, Any]] = []
    lines: dict[int, str] = {}
    shown: set[str] = set()
    for dtype in settings.dtypes:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", K.LossverifyWarning)
            report = lossverify.verify(obj, args.reference, max_examples=args.max_examples,
                                       seed=args.seed, checks=settings.checks,
                                       strict=args.strict, dtype=dtype,
                                       min_rows=args.min_rows,
                                       loss_params=settings.loss_params or None,
                                       domain=settings.domain, output=settings.output,
                                       **settings.params)
        for w in caught:
            text = str(w.message)
            if issubclass(w.category, K.LossverifyWarning) and text not in shown:
                shown.add(text)
                _warn(text)  # names the API keyword and the CLI option alike
        report.label = args.loss
        lines[len(runs)] = cli_line(args, dtype)
        runs.append((args.loss, report))
        print(report)
        if not report.ok:
            print(f"  or: {lines[len(runs) - 1]}")
    return runs, lines


def _conformance_runs(args: argparse.Namespace, settings: Settings, header: str
                      ) -> tuple[list[tuple[str, Any]], list[tuple[str, Any]]]:
    from lossverify import conformance as CF

    print(header, flush=True)
    for label, package in CF.missing_packages(args):
        _warn(f"{label} is not checked: {package} is not installed")
    jobs = CF.plan(args, settings.dtypes)
    progress = CF.Progress(len(jobs), not args.no_progress)

    def show(job: CF.Job, result: tuple[str, Any]) -> None:
        label, report = result
        if isinstance(report, CF.Crashed):
            progress.update(f"{label}: CRASHED {report.error}", False)
        elif job.invariant >= 0:
            progress.update(f"{label}: {report.invariant}", report.ok)
        else:
            progress.update(f"{label} ({report.form}) {R.format_params(report.params)} "
                            f"{report.dtype}", report.ok)

    runs: list[tuple[str, Any]] = []
    invariants: list[tuple[str, Any]] = []
    for job, (label, report) in CF.results(jobs, args, settings.checks, show):
        (invariants if job.invariant >= 0 else runs).append((label, report))
        if isinstance(report, CF.Crashed):
            print(report, file=sys.stderr)
        elif not args.quiet and not report.ok:
            print(report, file=sys.stderr)
    tf_runs = [(label, r) for label, r in runs if not getattr(r, "row", None)]
    matrix = [r for _, r in runs if getattr(r, "row", None)]
    if tf_runs:
        R.print_table([R.run_row(label, r) for label, r in tf_runs])
    if matrix:
        print()
        R.print_table(R.matrix_rows(matrix), R.MATRIX_HEAD)
    if invariants:
        print()
        R.print_table([R.invariant_row(label, r) for label, r in invariants],
                      R.INVARIANT_HEAD)
    return runs, invariants


def run(args: argparse.Namespace) -> int:
    from lossverify import environment
    from lossverify._io import write_json, write_text

    settings = check_args(args)
    started = time.perf_counter()
    env = environment.describe()  # here, in the parent: --jobs workers do not need it
    header = environment.summary_line(env)
    invariants: list[tuple[str, Any]] = []
    cli_lines: dict[int, str] = {}
    if args.loss:
        runs, cli_lines = _user_runs(args, settings, header)
        title = f"lossverify: {args.loss} vs reference {args.reference} (seed {args.seed})"
    else:
        runs, invariants = _conformance_runs(args, settings, header)
        title = (f"lossverify conformance (seed {args.seed}, {args.max_examples} examples "
                 "per check)")
    reports = [r for _, r in runs]
    inv_reports = [r for _, r in invariants]
    counts = R.totals(reports, inv_reports)
    print("\n" + R.totals_line(counts, args.seed, time.perf_counter() - started))
    if args.json:
        write_json(args.json, {"schema_version": R.SCHEMA_VERSION, "environment": env,
                               "seed": args.seed, "max_examples": args.max_examples,
                               "min_rows": args.min_rows, "dtypes": settings.dtypes,
                               "totals": counts,
                               "runs": [r.to_dict() for r in reports],
                               "invariants": [r.to_dict() for r in inv_reports]})
    if args.markdown:
        inv_examples = getattr(inv_reports[0], "max_examples", None) if inv_reports else None
        write_text(args.markdown, R.markdown_report(
            environment_line=environment.summary_line(env), title=title,
            totals=R.totals_line(counts, args.seed),
            runs=runs, invariants=invariants, cli_lines=cli_lines,
            invariant_examples=inv_examples))
    if args.plot:
        from lossverify.report_plot import save_error_distributions

        written = save_error_distributions(
            [r for r in reports if not getattr(r, "crashed", False)], args.plot)
        print("error distributions: " + ", ".join(str(p) for p in written))
    failed = any(not r.ok for r in reports) or any(not r.ok for r in inv_reports)
    return 1 if failed else 0
