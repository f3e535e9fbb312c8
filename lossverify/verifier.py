"""``verify()`` and ``assert_verified()``: run the checks over Hypothesis-drawn batches.

How a run goes:

1. *Search.* Hypothesis draws ``max_examples`` batches for the reference (seeded, so
   the same seed gives the same report); the xla check draws ``3 * max_examples // 8``
   of its own, all of one shape but the batch size, so XLA compiles once per run. The
   checks then run on every batch, many batches per TensorFlow call
   (:meth:`lossverify.fusion.FusedEvaluation.evaluate`); the worst error (relative to
   its allowance) and the number of failures are kept per check.
2. *Shrink.* For each check that failed, Hypothesis searches again with the same seed,
   this time failing on that check alone, and shrinks to a minimal counterexample.
3. *Classify.* A failing batch that a spec's known upstream deviation explains (say,
   Keras's NaN focal gradient at ``p_t == 1`` for ``gamma < 1``) is counted as that
   deviation, not as a failure. ``strict=True`` counts it as a failure.

A ``keras.losses.Loss`` is checked reduced (its own ``reduction``), on half the batches
with a random ``sample_weight``; any other callable is checked per sample.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from lossverify import checks as C
from lossverify import contract as K
from lossverify import frameworks as FW
from lossverify import numerics
from lossverify import specs as S
from lossverify.search import (
    draw_batches,
    fails_fast,
    shrink,
    xla_examples,
)
from lossverify.session import Session
from lossverify.verdict import CheckReport, VerifyReport, capped, loss_name

__all__ = ["CheckReport", "VerifyReport", "assert_verified", "verify"]


def _validate_checks(checks: Iterable[str] | None) -> tuple[str, ...]:
    if checks is None:
        return C.CHECKS
    chosen = tuple(checks)
    unknown = [c for c in chosen if c not in C.CHECKS]
    if unknown or not chosen:
        raise ValueError(f"checks: expected a non-empty subset of {C.CHECKS}, got {chosen!r}")
    return chosen


def verify(loss: Callable, reference: str, *, max_examples: int = 100, seed: int | None = None,
           checks: Iterable[str] | None = None, strict: bool = False,
           time_limit: float = C.DEFAULT_TIME_LIMIT, dtype: str = "float32",
           min_rows: int = 0, implementation: str | None = None,
           loss_params: Mapping[str, Any] | None = None,
           domain: K.Domain | Mapping[str, Any] | None = None,
           output: K.Output | Mapping[str, Any] | None = None,
           framework: str | None = None, call: FW.Call | Mapping[str, Any] | None = None,
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
        framework: the framework ``loss`` runs in: ``"tensorflow"``, ``"torch"``,
            ``"jax"`` or ``"keras"`` (Keras 3 on its backend, ``keras.backend.backend()``).
            None: detected from the callable (its module, its class's, or the framework
            names its code uses), TensorFlow if nothing says. Checks a framework cannot
            run (``xla`` for torch and JAX) are reported "not run" with the reason.
        call: a :class:`lossverify.Call` (or a mapping of its fields): the loss's
            argument order (torch and optax take the prediction first) and
            ``layout="channels_first"`` for a loss whose class axis is axis 1.
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
    spec = S.get_spec(reference)
    chosen = _validate_checks(checks)
    if dtype not in numerics.DTYPES:
        raise ValueError(f"dtype: expected one of {numerics.DTYPES}, got {dtype!r}")
    seed = 0 if seed is None else seed
    params = dict(reference_kwargs)
    S.check_reference_params(spec, params)
    the_domain, the_output = K.Domain.of(domain), K.Output.of(output)
    check_domain(spec, params, the_domain)
    the_call = FW.Call.of(call)
    if the_call.layout == "channels_first" and params.get("axis", -1) not in (-1, None):
        raise ValueError("call: layout='channels_first' moves the class axis for the call; "
                         "the reference keeps it last (leave its axis at -1)")
    given = loss
    loss, _made = K.build_loss(loss, loss_params)
    the_framework = _framework(loss, framework, the_call)
    if the_output.per_element is not None and C.is_keras_loss(loss):
        raise ValueError("output: per_element applies to a function returning one value per "
                         "element; a keras.losses.Loss returns the reduced loss")
    for note in K.mismatched_params(given, loss, dict(loss_params or {}), params,
                                    spec.parameters):
        warnings.warn(f"{loss_name(loss)} vs reference {reference}: {note}",
                      K.LossverifyWarning, stacklevel=2)
    labels = [impl.label for impl in spec.implementations] + \
        [c.label for c in spec.counterparts]
    if implementation is not None and implementation not in labels:
        raise ValueError(f"implementation: expected one of {labels} (the implementations "
                         f"{reference!r} lists) or None, got {implementation!r}")
    runnable = tuple(c for c in chosen if c not in the_framework.not_run)
    if not runnable:
        raise ValueError(f"checks: none of {chosen!r} runs for a {the_framework.label} loss ("
                         + "; ".join(f"{c}: {the_framework.not_run[c]}" for c in chosen) + ")")
    session = Session(loss, spec, params, runnable, time_limit, strict, dtype, implementation,
                      the_domain, the_output, the_framework)
    reports = {name: CheckReport(name, not_run_reason=the_framework.not_run.get(name, ""))
               for name in chosen}
    active = {name: reports[name] for name in runnable}

    def report() -> VerifyReport:
        return VerifyReport(
            loss=loss_name(loss), reference=reference, form="class" if session.reduced
            else "function", params=params, seed=seed, max_examples=max_examples,
            checks=reports, deviations={d.id: d for d in spec.deviations}, dtype=dtype,
            compute_dtype=session.compute_dtype, min_rows=min_rows,
            implementation=session.implementation, loss_params=dict(loss_params or {}),
            domain=the_domain, output=the_output, framework=the_framework,
            notes=list(getattr(session.executor, "notes", list)()))

    # Hypothesis only draws (no test outcome feeds back into generation, so these are
    # the draws an evaluating test would see); the checks then run on fused batches,
    # far fewer TensorFlow calls than one per draw.
    main_checks = tuple(c for c in runnable if not C.CHECK[c].own_batches)
    strategies = {name: session.raw_strategy for name in main_checks}
    draws = draw_batches(session.raw_strategy, max_examples, seed, dtype, min_rows,
                         session.prepare_raw, key=session.draws_key("main"))
    if fails_fast(session, draws, active):
        return report()
    if main_checks:
        session.evaluate(draws, active, main_checks)
    for name in runnable:
        if C.CHECK[name].own_batches:
            raw = session.xla_strategy(seed)
            strategies[name] = raw
            session.evaluate(draw_batches(raw, xla_examples(max_examples), seed, dtype,
                                          min_rows, session.prepare_raw,
                                          key=session.draws_key(name)),
                             active, (name,), fuse_single_rows=True)
    for name, check in active.items():
        if check.failures:
            examples = xla_examples(max_examples) if C.CHECK[name].own_batches \
                else max_examples
            found, check.message = shrink(session, name, strategies[name], examples, seed,
                                           check.message)
            check.counterexample = capped(found) or check.failure_input
    return report()


def _framework(loss: Any, framework: str | None, call: FW.Call) -> FW.Framework:
    """The framework ``loss`` is checked in, its modules imported
    (TensorFlow for a TensorFlow or Keras-on-TensorFlow loss), with the extra to install
    named where one is missing."""
    from lossverify import missing_extra

    try:
        found = FW.resolve(loss, framework, call)
    except ModuleNotFoundError as exc:  # keras, torch or jax themselves
        root = (exc.name or "").split(".")[0]
        raise missing_extra(exc, "lossverify.verify", FW.EXTRA.get(root, "tf")) from None
    needed = {"tensorflow": "tensorflow", "torch": "torch", "jax": "jax"}[found.name]
    try:
        __import__(needed)
    except ModuleNotFoundError as exc:
        raise missing_extra(exc, f"lossverify.verify on a {found.label} loss",
                            FW.EXTRA[needed]) from None
    return found


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


def assert_verified(loss: Callable, reference: str, **kwargs: Any) -> VerifyReport:
    """:func:`verify`, raising ``AssertionError`` with the full report when not ok."""
    report = verify(loss, reference, **kwargs)
    if not report.ok:
        raise AssertionError(str(report))
    return report


