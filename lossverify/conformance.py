"""The conformance run's machinery: the plan of jobs (one verify run or one invariant
each), their split over processes (``--jobs``), the workers, and the progress display.

A job is small and picklable; workers are spawned processes (TensorFlow is not fork-safe)
that run their share in plan order and send each result back as it is done. The parent
never imports TensorFlow.
"""

from __future__ import annotations

import argparse
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


def plan(args: argparse.Namespace, dtypes: list[str]) -> list[Job]:
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
    crashed: bool = True
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
    from lossverify._tf import import_tensorflow

    import_tensorflow(quiet=True)


#: Relative cost of a job, for splitting a run over ``--jobs`` processes: a Loss class is
#: checked batch by batch (value, gradient), a function on fused batches, an invariant
#: on a few batches. Measured on the default run; only the balance depends on them.
_COST = {"class": 5.0, "function": 3.0, "invariant": 1.0}


def _implementation(job: Job) -> S.Implementation:
    """The implementation a verify job checks."""
    return next(i for i in S.get_spec(job.spec).implementations if i.label == job.label)


def job_cost(job: Job) -> float:
    if job.invariant >= 0:
        return _COST["invariant"]
    return _COST["class" if _implementation(job).kind == "class" else "function"]


def shares(jobs: list[Job], n: int) -> list[list[int]]:
    """Split ``jobs`` (by index) over ``n`` processes. The verify jobs of one reference
    and parameter setting (class and function, every dtype) go to the same process, so
    they share one set of drawn batches (``search.draw_batches``); each such group, and
    each invariant, costliest first (ties in plan order), goes to the share with the
    least estimated cost so far (ties: the lowest index); each share keeps plan order.
    Fixed by the plan alone, never by timing, so a given ``n`` gives the same bytes run
    after run."""
    groups: dict[tuple[Any, ...], list[int]] = {}
    for i, job in enumerate(jobs):
        key = (job.spec, job.params, "runs") if job.invariant < 0 else ("invariant", i)
        groups.setdefault(key, []).append(i)
    members = list(groups.values())
    costs = [sum(job_cost(jobs[i]) for i in m) for m in members]
    loads = [0.0] * n
    owner: dict[int, int] = {}
    for g in sorted(range(len(members)), key=lambda g: (-costs[g], members[g][0])):
        k = min(range(n), key=lambda k: (loads[k], k))
        for i in members[g]:
            owner[i] = k
        loads[k] += costs[g]
    return [[i for i in range(len(jobs)) if owner[i] == k] for k in range(n)]


def results(jobs: list[Job], args: argparse.Namespace, checks: list[str] | None,
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
    running: dict[Any, tuple[list[int], Any]] = {}
    for share in shares(jobs, min(args.jobs, len(jobs))):
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


