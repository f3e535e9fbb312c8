"""The conformance run's machinery: the plan of jobs (one verify run or one invariant
each), their split over processes (``--jobs``), the workers, and the progress display.

A job is small and picklable; workers are spawned processes (TensorFlow is not fork-safe)
that take units of work from a shared queue and send each result back as it is done. The parent
never imports TensorFlow.

The conformance matrix (``--frameworks``) adds rows in other frameworks, derived from the
records (:func:`lossverify.specs.matrix_rows`): PyTorch and JAX counterparts, run in
processes that import neither TensorFlow nor Keras, and Keras 3's functions on the JAX
and PyTorch backends, each backend in worker processes of its own started with
``KERAS_BACKEND`` set (Keras fixes its backend at import, once per process).
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, cast

from lossverify import specs as S


def conformance_jobs(only: list[str], thorough: bool
                     ) -> Iterator[tuple[S.LossSpec, dict[str, Any], list[S.Implementation]]]:
    """Per reference and parameter setting, the implementations to verify."""
    for name, spec in S.SPECS.items():
        if only and name not in only:
            continue
        grid = spec.thorough_grid() if thorough and spec.thorough_axes else spec.default_grid
        for params in grid:
            yield spec, dict(params), list(spec.implementations)




@dataclass(frozen=True)
class Job:
    """One unit of a conformance run, small and picklable for ``--jobs``: a verify run
    (``invariant`` empty) or one invariant, by index into the spec's cases."""

    spec: str
    params: tuple[tuple[str, Any], ...]
    label: str = ""
    dtype: str = "float32"
    invariant: int = -1
    #: a matrix framework (``lossverify.specs.MATRIX_FRAMEWORKS``); "tensorflow": the
    #: records' implementations and the invariants, as before
    framework: str = "tensorflow"


def _frameworks(args: argparse.Namespace) -> list[str]:
    return list(getattr(args, "frameworks", None) or ["tensorflow"])


def _installed(package: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(package) is not None


def _rows(frameworks: list[str], only: list[str]) -> Iterator[S.MatrixRow]:
    for framework in frameworks:
        if framework != "tensorflow":
            yield from S.matrix_rows(framework, only)


def missing_packages(args: argparse.Namespace) -> list[tuple[str, str]]:
    """``(row label, package)`` for matrix rows left out because the package that holds
    the implementation (torchvision, optax) is not installed."""
    return [(row.label, row.counterpart.package) for row in _rows(_frameworks(args), args.only)
            if row.counterpart is not None and not _installed(row.counterpart.package)]


def matrix_jobs(frameworks: list[str], only: list[str], dtypes: list[str]) -> list[Job]:
    """The matrix's jobs outside TensorFlow: a row's settings times ``dtypes`` (rows whose
    package is not installed left out: :func:`missing_packages` names them)."""
    return [Job(row.spec, params, row.label, dtype, framework=row.framework)
            for row in _rows(frameworks, only)
            if row.counterpart is None or _installed(row.counterpart.package)
            for params in row.settings for dtype in dtypes]


def plan(args: argparse.Namespace, dtypes: list[str]) -> list[Job]:
    frameworks = _frameworks(args)
    jobs: list[Job] = []
    if "tensorflow" in frameworks:
        jobs += _tensorflow_jobs(args, dtypes)
    return jobs + matrix_jobs(frameworks, args.only, dtypes)


def _tensorflow_jobs(args: argparse.Namespace, dtypes: list[str]) -> list[Job]:
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


def _invariant_examples(args: argparse.Namespace, spec: str | None = None) -> int:
    """An invariant's examples (a quarter of a run's draws unless given), scaled by the
    record's ``draws`` (see :func:`_examples`)."""
    if args.invariant_examples is None:
        n = max(args.max_examples // 4, 1)
    else:
        n = int(args.invariant_examples)
    return n if spec is None or n <= 0 else _scaled(n, spec)


def _examples(args: argparse.Namespace, spec: str) -> int:
    """A verify run's draws for ``spec``: ``--max-examples`` scaled by the record's
    ``draws`` (CTC's eager calls cost 10 to 40 times a typical loss's), at least one."""
    return _scaled(args.max_examples, spec)


def _scaled(n: int, spec: str) -> int:
    return max(1, round(n * S.get_spec(spec).draws))


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
    crashed: bool = True
    examples: int = 0
    checks: dict[str, Any] | None = None
    #: a matrix job's reference and row labels ({} for the TensorFlow run's jobs)
    reference: str = ""
    row: dict[str, str] | None = None

    def __str__(self) -> str:
        return f"lossverify crashed on {self.label} {self.params}: {self.error}"

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "form": self.form, "params": self.params,
                "dtype": self.dtype, "ok": False, "crashed": self.error,
                **({"reference": self.reference, "matrix": self.row} if self.row else {})}


def _run_job(job: Job, args: argparse.Namespace, checks: list[str] | None) -> Any:
    """Run one job (in this process or a worker); returns ``(label, report)``."""
    try:
        return _run_job_unguarded(job, args, checks)
    except Exception as exc:  # a lossverify bug must not end the whole conformance run
        kind = "invariant" if job.invariant >= 0 else "verify"
        error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"
        crashed = Crashed(job.label or f"{job.spec} {kind} #{job.invariant}", kind,
                          dict(job.params), job.dtype, error, checks={}, reference=job.spec,
                          row=None if job.framework == "tensorflow"
                          else {"framework": job.framework})
        return crashed.label, crashed


def _run_job_unguarded(job: Job, args: argparse.Namespace, checks: list[str] | None) -> Any:
    import lossverify
    from lossverify import invariants as I

    params = dict(job.params)
    if job.framework != "tensorflow":
        return _run_matrix_job(job, args, checks)
    if job.invariant >= 0:
        label, invariant, impls, ref, inv_params = I.conformance_cases(job.spec,
                                                                       params)[job.invariant]
        losses = tuple(S.build_implementation(impl, p) for impl, p in impls)
        drawn, drawn_from = _setting_draws(job, args, ref, invariant, inv_params)
        report = I.check_invariant(invariant, *losses, reference=ref,
                                   max_examples=_invariant_examples(args, job.spec),
                                   seed=args.seed,
                                   drawn=drawn, **inv_params)
        report.drawn_from = drawn_from
        return label, report
    impl = _implementation(job)
    loss = S.build_implementation(impl, params)
    report = lossverify.verify(loss, job.spec, max_examples=_examples(args, job.spec),
                               seed=args.seed,
                               checks=checks, strict=args.strict, dtype=job.dtype,
                               min_rows=args.min_rows, **params)
    report.label = impl.label
    return impl.label, report


def matrix_row(job: Job) -> S.MatrixRow:
    """The matrix row a framework job checks."""
    return next(r for r in S.matrix_rows(job.framework, [job.spec]) if r.label == job.label)


def _package_version(package: str) -> str:
    """The imported module's own version (it names the build), else the metadata's."""
    import importlib.metadata

    own = getattr(sys.modules.get(package), "__version__", None)
    if isinstance(own, str):
        return str(own)
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _run_matrix_job(job: Job, args: argparse.Namespace, checks: list[str] | None) -> Any:
    """A matrix row at one setting and dtype (:func:`verify_row`)."""
    row = matrix_row(job)
    report = verify_row(row, dict(job.params), dtype=job.dtype,
                        max_examples=args.max_examples, seed=args.seed, checks=checks,
                        strict=args.strict, min_rows=args.min_rows)
    return row.label, report


def _has_signature(fn: Any) -> bool:
    import inspect

    try:
        inspect.signature(fn)
    except (TypeError, ValueError):
        return False
    return True


def verify_row(row: S.MatrixRow, params: dict[str, Any], **options: Any) -> Any:
    """:func:`lossverify.verify` for a matrix row at reference parameters ``params``:
    a counterpart called with its declared conventions (loss parameters, output, layout,
    domain) and named as the implementation its known deviations belong to; a Keras
    function on this process's backend (``KERAS_BACKEND`` must name the row's).
    ``options`` go to ``verify`` (dtype, max_examples, seed, ...). The report carries
    the row's labels (``report.row``: framework, version, convention)."""
    import warnings

    import lossverify
    from lossverify.contract import LossverifyWarning
    from lossverify.record import load

    counterpart = row.counterpart
    if counterpart is not None:
        loss = load(counterpart.target)
        if counterpart.adapter:
            loss = load(counterpart.adapter)(loss)
        loss_params = dict(counterpart.loss_params(params))
        if loss_params and not _has_signature(loss):
            # a builtin (torch's cosine_similarity): its parameters cannot be checked by
            # name, so they are bound here, as a user would (functools.partial)
            loss, loss_params = functools.partial(loss, **loss_params), {}
        with warnings.catch_warnings():
            # the loss's parameters are the record's declared mapping of the reference's
            # (torchvision's alpha=-1 for no balancing), not a user's one-sided setting
            warnings.simplefilter("ignore", LossverifyWarning)
            report = lossverify.verify(
                loss, row.spec, framework=counterpart.framework,
                call={"layout": counterpart.layout},
                loss_params=loss_params or None,
                output=counterpart.output_for(params),
                domain=dict(counterpart.domain) or None,
                implementation=counterpart.label, **options, **params)
        version = report.framework.label if report.framework is not None else ""
        if counterpart.package not in ("torch", "jax"):
            version = f"{counterpart.package} {_package_version(counterpart.package)}, " \
                      f"{version}"
    else:
        if row.implementation is None:
            raise ValueError(f"row: {row.label} has neither a counterpart nor an "
                             "implementation")
        backend = S.KERAS_BACKENDS[row.framework]
        if os.environ.get("KERAS_BACKEND") != backend:
            raise RuntimeError(f"a {row.framework} row in a process whose KERAS_BACKEND is "
                               f"{os.environ.get('KERAS_BACKEND')!r}")
        loss = S.build_implementation(row.implementation, params)
        report = lossverify.verify(loss, row.spec, framework="keras", **options, **params)
        version = report.framework.label if report.framework is not None else ""
    report.label = row.label
    report.row = {"framework": row.framework, "version": version,
                  "convention": row.convention}
    return report


def _setting_draws(job: Job, args: argparse.Namespace, reference: str, invariant: str,
                   params: dict[str, Any]) -> tuple[list[Any] | None, str]:
    """The raw batches the setting's verify runs draw (kept in this process: the
    invariant shares their unit), for an invariant on the same reference and parameters,
    with the expression that draws them (for the reproduce line); ``(None, "")`` for one
    on other parameters (a relation's) or hard labels (sparse vs dense), which draws its
    own."""
    from lossverify import search
    from lossverify.session import draws_key, raw_strategy

    if reference != job.spec or params != dict(job.params) or \
            invariant == "sparse_matches_dense":
        return None, ""
    counts = (_examples(args, reference), args.seed, "float32", args.min_rows)
    drawn = search.draw_batches(raw_strategy(reference, params), *counts,
                                prepare=lambda d: d, key=draws_key("main", reference, params))
    shown = ", ".join(repr(c) for c in counts)
    return drawn, (f"lossverify.search.draw_batches(lossverify.session.raw_strategy("
                   f"{reference!r}, {params!r}), {shown}, prepare=lambda d: d)")


def _quiet_tensorflow() -> None:
    from lossverify._tf import import_tensorflow

    import_tensorflow(quiet=True)


#: Relative cost of a job, to hand the costliest work out first: a Loss class's value is
#: checked batch by batch and it draws the setting's batches, a function reuses them on
#: fused batches, an invariant runs a few of them. Measured on the default run at be93d77
#: (a 2-core AMD EPYC, TensorFlow 2.21: about 3, 0.9 and 0.2 s; the ordering is what
#: matters); a record's ``cost`` scales its runs (CTC's kernel, Circle's pairwise rows).
_COST = {"class": 16.0, "function": 5.0, "invariant": 1.0}


def _implementation(job: Job) -> S.Implementation:
    """The implementation a verify job checks."""
    return next(i for i in S.get_spec(job.spec).implementations if i.label == job.label)


def job_cost(job: Job) -> float:
    if job.framework != "tensorflow":
        return _COST["function"] * S.get_spec(job.spec).cost
    if job.invariant >= 0:
        return _COST["invariant"]
    kind = "class" if _implementation(job).kind == "class" else "function"
    return _COST[kind] * S.get_spec(job.spec).cost


def units(jobs: list[Job]) -> list[list[int]]:
    """The units of work ``--jobs`` processes take from a shared queue, in the order they
    are handed out: the jobs of one reference and parameter setting (class and function
    runs, every dtype, then its invariants) form one unit, so they run in one process
    and share one set of drawn batches (``search.draw_batches``).
    Costliest first (ties in plan order), so the last units to finish are small. Each
    job's result depends on the job alone (seeded draws), not on the process that runs
    it, so the report is the same bytes however the units fall."""
    groups: dict[tuple[Any, ...], list[int]] = {}
    for i, job in enumerate(jobs):
        key = (job.spec, job.params, job.framework, job.label) if job.framework != \
            "tensorflow" else (job.spec, job.params)
        groups.setdefault(key, []).append(i)
    members = list(groups.values())
    costs = [sum(job_cost(jobs[i]) for i in m) for m in members]
    return [members[g] for g in sorted(range(len(members)),
                                       key=lambda g: (-costs[g], members[g][0]))]


#: the process a framework's jobs run in: TensorFlow's (imported up front), one that
#: imports no framework until a job does (torch and JAX rows), or one per Keras backend
def _process_kind(framework: str) -> str:
    if framework == "tensorflow":
        return "tensorflow"
    return framework if framework in S.KERAS_BACKENDS else "frameworks"


def results(jobs: list[Job], args: argparse.Namespace, checks: list[str] | None,
             on_result: Callable[[Job, Any], None] = lambda job, result: None
             ) -> Iterator[tuple[Job, Any]]:
    """Job results in plan order, computed here or across ``--jobs`` processes.
    ``on_result`` sees each result as soon as it exists (the progress display), in the
    order the processes finish them. Jobs of different process kinds
    (:func:`_process_kind`) never share a process; Keras-on-a-backend jobs always run in
    processes of their own, started with ``KERAS_BACKEND`` set."""
    kinds: dict[str, list[int]] = {}
    for i, job in enumerate(jobs):
        kinds.setdefault(_process_kind(job.framework), []).append(i)
    done: dict[int, Any] = {}
    for kind, members in kinds.items():
        subset = [jobs[i] for i in members]
        env = {"KERAS_BACKEND": S.KERAS_BACKENDS[kind]} if kind in S.KERAS_BACKENDS else {}
        for k, result in _results_of(subset, args, checks, on_result, env,
                                     kind == "tensorflow"):
            done[members[k]] = result
    for i, job in enumerate(jobs):
        yield job, done[i]


def _results_of(jobs: list[Job], args: argparse.Namespace, checks: list[str] | None,
                on_result: Callable[[Job, Any], None], env: dict[str, str],
                tensorflow: bool) -> Iterator[tuple[int, Any]]:
    """``(index, result)`` for ``jobs`` of one process kind, in the order they finish."""
    if not env and (args.jobs <= 1 or len(jobs) <= 1):
        if tensorflow:
            _quiet_tensorflow()
        for i, job in enumerate(jobs):
            result = _run_job(job, args, checks)
            on_result(job, result)
            yield i, result
        return
    import multiprocessing
    from multiprocessing.connection import Connection, wait

    ctx = multiprocessing.get_context("spawn")  # TensorFlow is not fork-safe
    # Fresh processes, all started at once, take units from one queue as they finish the
    # last (a fixed split by estimated cost cannot know how long each unit really takes);
    # this process never imports TensorFlow. Each result comes back through its
    # process's pipe when done.
    work = units(jobs)
    n = min(args.jobs, len(work))
    queue = ctx.SimpleQueue()
    for unit in work:
        queue.put([(i, jobs[i]) for i in unit])
    for _ in range(n):
        queue.put(None)
    running: dict[Any, Any] = {}
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)  # a spawned process starts with this process's environment
    try:
        for _ in range(n):
            receive, send = ctx.Pipe(duplex=False)
            proc = ctx.Process(target=_run_units, args=(send, queue, args, checks,
                                                        tensorflow), daemon=True)
            proc.start()
            send.close()
            running[receive] = proc
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    finished = 0
    while running:
        for ready in wait(list(running)):
            proc = running[ready]
            try:
                message = cast(Connection, ready).recv()
            except EOFError:
                proc.join()
                raise SystemExit(f"--jobs: a worker process died (exit code "
                                 f"{proc.exitcode}); {len(jobs) - finished} jobs "
                                 "unfinished") from None
            if message is None:  # the queue is empty: this process is done
                del running[ready]
                proc.join()
                continue
            i, result = message
            finished += 1
            on_result(jobs[i], result)
            yield i, result


def _run_units(send: Any, queue: Any, args: argparse.Namespace,
               checks: list[str] | None, tensorflow: bool = True) -> None:
    """One worker process: units from ``queue`` until its None, each job's result sent as
    it is done, then None. It then exits at once: TensorFlow's interpreter teardown
    takes about 2 s, which the parent would otherwise wait for. ``tensorflow``: import
    it first (a matrix worker for other frameworks never does)."""
    if tensorflow:
        _quiet_tensorflow()
    while (unit := queue.get()) is not None:
        for i, job in unit:
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


