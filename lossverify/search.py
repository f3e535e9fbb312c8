"""The search phase's machinery: drawing batches with Hypothesis (seeded, top-ups for
batches too small), the fail-fast probe for a loss that always raises, and shrinking a
failing check to a minimal counterexample."""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Callable, Hashable, Iterator
from typing import Any

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hyp_seed
from hypothesis import strategies as st

from lossverify import checks as C
from lossverify import strategies as lst
from lossverify.session import Session
from lossverify.verdict import CheckReport

_HEALTH = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much,
           HealthCheck.large_base_example]


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


def run_hypothesis(test: Callable[[Any], None], strategy: st.SearchStrategy,
                    max_examples: int, seed: int, phases: tuple[Phase, ...]) -> None:
    # The parent is Hypothesis's own default profile, not whatever profile is loaded (a
    # pytest run loads one), so a seed draws the same batches in a script and in a test.
    wrapped = settings(settings.get_profile("default"), max_examples=max_examples,
                       deadline=None, database=None,
                       suppress_health_check=_HEALTH, phases=phases, print_blob=False,
                       derandomize=False)(given(strategy)(test))
    with _global_constants_only():
        hyp_seed(seed)(wrapped)()


def draw_batches(strategy: st.SearchStrategy, max_examples: int, seed: int, dtype: str,
                 min_rows: int = 0, prepare: Callable[[Any], Any] | None = None,
                 key: Hashable | None = None) -> list[lst.LossInputs]:
    """``max_examples`` drawn batches, each through ``prepare`` (default: rounded to
    ``dtype``); then, while they hold fewer than ``min_rows`` rows, as many more as the
    rows per batch so far say are missing, each round a Hypothesis run of its own with a
    seed derived from ``seed`` (at most :data:`TOP_UP_ROUNDS`).

    With a ``key``, the raw draws (before ``prepare``) are kept in this process for the
    next call with the same key, seed and counts: every run of a reference and parameter
    setting (class and function, any dtype) draws the same raw batches, and Hypothesis
    spends more time drawing them than TensorFlow takes to run them. A draw is a
    :class:`~lossverify.inputs.LossInputs` or a tuple whose first element is one."""
    memo = None if key is None else (key, max_examples, seed, min_rows)
    raw = _DRAWN.get(memo) if memo is not None else None
    if raw is None:
        raw = _draw_raw(strategy, max_examples, seed, min_rows)
        if memo is not None:
            _DRAWN[memo] = raw
            while len(_DRAWN) > _DRAWN_KEPT:
                _DRAWN.pop(next(iter(_DRAWN)))
    return [prepare(x) if prepare else C.cast_inputs(x, dtype) for x in raw]


#: Raw draws kept per process (a conformance worker runs a setting's jobs one after
#: another), oldest dropped first.
_DRAWN: dict[Hashable, list[Any]] = {}
_DRAWN_KEPT = 8


def _rows(drawn: Any) -> int:
    return int((drawn[0] if isinstance(drawn, tuple) else drawn).rows)


def _draw_raw(strategy: st.SearchStrategy, max_examples: int, seed: int,
              min_rows: int) -> list[Any]:
    draws: list[Any] = []

    def run(n: int, run_seed: int) -> None:
        run_hypothesis(lambda x: draws.append(x), strategy, n, run_seed,
                       (Phase.explicit, Phase.generate))

    run(max_examples, seed)
    for round_ in range(1, TOP_UP_ROUNDS + 1):
        rows = sum(_rows(x) for x in draws)
        if rows >= min_rows:
            break
        per_batch = max(rows / max(len(draws), 1), 1.0)
        run(math.ceil((min_rows - rows) / per_batch), seed * 1000 + round_)
    return draws


#: Further Hypothesis runs :func:`_draw` may make to reach ``min_rows``.
TOP_UP_ROUNDS = 8


def xla_examples(max_examples: int) -> int:
    """The xla check's own draws: 3/8 as many, each up to three times as many rows (on
    average about as many rows in all)."""
    return max(1, 3 * max_examples // 8)


PROBE_BATCHES = 3


def fails_fast(session: Session, draws: list[lst.LossInputs],
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
    by_mode = {"eager": f"{errors[0]} ({stopped})",
               "graph": f"under graph {graph.error} (eagerly too, {stopped})"}
    for name, check in reports.items():
        message = by_mode.get(C.CHECK[name].mode,
                              f"not run: the loss fails eagerly and under graph ({stopped})")
        for x in probes:
            check.record(C.Outcome(False, message=message, rows=x.rows),
                         functools.partial(repr, probes[0]), None)
        check.counterexample = repr(probes[0])
    return True




class _Found(AssertionError):
    pass


def shrink(session: Session, check: str, strategy: st.SearchStrategy, max_examples: int,
            seed: int, first_message: str) -> tuple[str, str]:
    """Search again failing on ``check`` alone; return the minimal example and message.
    ``strategy`` draws raw batches (see :meth:`Session.finish`), the same strategy (and
    so, with the same seed, the same batches) as the search phase drew."""
    last: dict[str, str] = {}
    found: list[lst.LossInputs] = []  # the last failing example, as drawn

    def failure(x: lst.LossInputs) -> str | None:
        outcome = session.outcomes(x, only=check)[check]
        if outcome is not None and not outcome.ok and \
                session.deviation_for(check, x, outcome) is None:
            return session.named_resemblance(check, x, outcome).message
        return None

    def test(drawn: tuple[lst.LossInputs, bool]) -> None:
        x = session.prepare_raw(drawn)
        message = failure(x)
        if message is not None:
            last["example"], last["message"] = repr(x), message
            found[:] = [x]
            raise _Found(message)

    try:
        run_hypothesis(test, strategy, max_examples, seed,
                        (Phase.explicit, Phase.generate, Phase.shrink))
    except _Found:
        pass
    except Exception as exc:  # Hypothesis flakiness errors and the like
        last.setdefault("message", f"{first_message} (shrinking stopped: "
                                   f"{type(exc).__name__})")
    x = found[0] if found else None
    # a batch-coupled loss's rows are not samples of their own (Circle's pairs, Dice's
    # axis=None sum over the batch): never tried one at a time
    if x is not None and x.y_pred.shape[0] > 1 and not session.spec.batch_coupled and \
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


