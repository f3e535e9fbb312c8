"""The search phase evaluates many drawn batches per TensorFlow call (fused batches).

These tests pin what fusing must not lose: single-row batches are still checked on
their own (``squeeze`` bugs), a loss whose rows depend on each other is named as such,
a failure in a fused call is attributed to the batch that fails alone, counts stay per
drawn batch, and the xla check compiles once per run.
"""

from __future__ import annotations

import os
import re

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import pytest  # noqa: E402

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

import lossverify  # noqa: E402
from lossverify import checks as C  # noqa: E402
from lossverify import conformance, verify_cli  # noqa: E402
from lossverify import specs as S  # noqa: E402
from lossverify.search import draw_batches  # noqa: E402
from lossverify.session import Session  # noqa: E402


def cce_squeezed(y_true, y_pred):
    """Right for every batch but batch 1, where ``squeeze`` also drops the batch axis."""
    y, p = tf.squeeze(y_true), tf.squeeze(y_pred)
    return keras.losses.categorical_crossentropy(y, p, axis=-1)


def cce_off_for_large_calls(y_true, y_pred):
    """Exact up to 16 rows per call, 1% off beyond: rows coupled through the batch size."""
    value = keras.losses.categorical_crossentropy(y_true, y_pred)
    return value * tf.where(tf.shape(y_pred)[0] > 16, 1.01, 1.0)


class GraphOnlyScaledCCE(keras.losses.Loss):
    """A class whose traced version differs from its eager one by 1e-3."""

    def call(self, y_true, y_pred):
        value = keras.losses.categorical_crossentropy(y_true, y_pred)
        return value if tf.executing_eagerly() else value * 1.001


def test_single_row_batches_are_still_checked_alone(monkeypatch):
    from lossverify import specs as S

    batch_one_calls = []
    run = C.Executor.run

    def recording(self, mode, x, *grad):
        if mode == "eager" and x.y_pred.shape[0] == 1:
            batch_one_calls.append(x.y_pred.shape)
        return run(self, mode, x, *grad)

    monkeypatch.setattr(C.Executor, "run", recording)
    report = lossverify.verify(cce_squeezed, "categorical_crossentropy", checks=("value",),
                               max_examples=40, seed=0)
    value = report.checks["value"]
    assert value.failures > 0, str(report)
    assert "returned shape ()" in value.message, str(report)
    assert "y_pred=np.array([[" in value.counterexample, str(report)
    # every single-row draw of the search ran as a batch of one (fused, it would not)
    session = Session(cce_squeezed, S.get_spec("categorical_crossentropy"), {},
                      ("value",), C.DEFAULT_TIME_LIMIT, False)
    singles = sum(x.y_pred.shape[0] == 1
                  for x in draw_batches(session.raw_strategy, 40, 0, "float32",
                                        prepare=session.prepare_raw))
    assert singles > 0 and len(batch_one_calls) >= singles, (singles, batch_one_calls)


def test_rows_that_depend_on_the_call_are_named():
    report = lossverify.verify(cce_off_for_large_calls, "categorical_crossentropy",
                               checks=("value",), max_examples=40, seed=0)
    value = report.checks["value"]
    assert value.failures > 0, str(report)
    assert "fails when evaluated in one call of" in value.message, str(report)
    assert "passes batch by batch: a row's loss depends on the other rows (the value alone " \
        "and in the call differ" in str(report), str(report)
    # the counterexample is the one drawn batch, with where it sat in the call
    shown = value.counterexample or value.worst_input
    assert shown.startswith("# batch "), str(report)
    assert "regime='fused'" not in shown, str(report)
    # the batch shown is the one the message is about
    calls = re.search(r"in one call of (\d+) rows", value.message).group(1)
    assert f"of the call of {calls} rows" in shown, str(report)


def test_graph_failure_of_a_class_is_attributed_to_single_batches():
    report = lossverify.verify(GraphOnlyScaledCCE(), "categorical_crossentropy",
                               checks=("value", "graph"), max_examples=20, seed=0)
    assert report.checks["value"].ok, str(report)
    graph = report.checks["graph"]
    assert graph.failures > 0, str(report)
    assert graph.message.startswith("graph value differs from the reference"), str(report)
    assert "the other mode gives" in graph.message, str(report)
    assert "regime='fused'" not in graph.counterexample, str(report)
    # every drawn batch counted once, although most ran as fused batches
    assert graph.examples == 20, str(report)


class CCEGradientOffForConfidentRows(keras.losses.Loss):
    """The exact value; a gradient 1% too large in rows whose top probability is above
    one half (``v - stop_gradient(v)`` is exactly 0, its gradient is ``v``'s)."""

    def call(self, y_true, y_pred):
        v = keras.losses.categorical_crossentropy(y_true, y_pred)
        confident = tf.cast(tf.reduce_max(y_pred, axis=-1) > 0.5, v.dtype)
        return v + 0.01 * confident * (v - tf.stop_gradient(v))


def _recording_calls(monkeypatch) -> list[tuple[str, int, bool]]:
    calls: list[tuple[str, int, bool]] = []
    run = C.Executor.run

    def recording(self, mode, x, grad=True):
        calls.append((mode, x.y_pred.shape[0], grad))
        return run(self, mode, x, grad)

    monkeypatch.setattr(C.Executor, "run", recording)
    return calls


def test_a_class_value_runs_per_batch_without_a_tape_and_its_gradient_fused(monkeypatch):
    """A Loss returns one number per call, so its value is checked batch by batch; those
    eager calls skip the gradient tape, and the gradient (a row per sample) is checked
    on the fused calls the graph check makes anyway."""
    calls = _recording_calls(monkeypatch)
    report = lossverify.verify(keras.losses.CategoricalCrossentropy(),
                               "categorical_crossentropy", checks=("value", "gradient"),
                               max_examples=40, seed=0)
    assert report.ok, str(report)
    assert report.checks["value"].examples == report.checks["gradient"].examples == 40
    assert report.checks["value"].rows == report.checks["gradient"].rows >= 200
    taped = [c for c in calls if c[0] == "eager" and c[2]]
    untaped = [c for c in calls if c[0] == "eager" and not c[2]]
    assert len(untaped) >= 30, calls  # the value of every drawn batch of 2+ rows
    # one taped call per fused group and per single-row batch, not one per drawn batch
    assert len(taped) < 30, calls


def test_a_class_gradient_wrong_in_some_rows_fails_on_its_own_batch(monkeypatch):
    report = lossverify.verify(CCEGradientOffForConfidentRows(), "categorical_crossentropy",
                               checks=("value", "gradient"), max_examples=40, seed=0)
    assert report.checks["value"].ok, str(report)
    gradient = report.checks["gradient"]
    assert gradient.failures > 0, str(report)
    assert gradient.message.startswith("gradient "), str(report)
    assert gradient.examples == 40, str(report)
    # the fused call's failure is re-run batch by batch: the counterexample is one drawn
    # batch (shrunk), not the fused call
    shown = gradient.counterexample
    assert "regime='fused'" not in shown and "in one call" not in gradient.message, shown
    assert "y_pred=np.array(" in shown, shown


def test_counts_stay_per_drawn_batch_and_xla_compiles_once(monkeypatch):
    shapes: list[tuple[int, ...]] = []
    run = C.Executor.run

    def counting(self, mode, x, *grad):
        if mode == "xla":
            shapes.append(x.y_pred.shape)
        return run(self, mode, x, *grad)

    monkeypatch.setattr(C.Executor, "run", counting)
    report = lossverify.verify(keras.losses.categorical_crossentropy,
                               "categorical_crossentropy", max_examples=40, seed=0)
    assert report.ok, str(report)
    for name in ("value", "gradient", "graph"):
        assert report.checks[name].examples == 40, str(report)
    assert report.checks["value"].rows == report.checks["graph"].rows >= 200, str(report)
    assert report.checks["xla"].examples == 15, str(report)  # 3 * 40 // 8
    assert report.checks["xla"].rows >= 200, str(report)
    assert len(shapes) == 1 and len(shapes[0]) == 2, shapes  # one call, one compile


def test_ctc_xla_draws_share_one_shape_per_run_and_seeds_reach_both_frame_counts():
    """CTC's frames are an axis beyond batch and classes: the xla check's draws fix them
    per run too (8 or the long regime's 48, picked from the seed), so that one compile
    serves the run, and both lengths are reached across seeds."""
    from lossverify import strategies as lst
    frames = set()
    for seed in range(6):
        session = Session(keras.losses.ctc, S.get_spec("ctc"), {}, ("xla",), 60.0, False)
        draws = draw_batches(session.xla_strategy(seed), 5, seed, "float32", 0,
                             session.prepare_raw, key=None)
        shapes = {x.y_pred.shape[1:] for x in draws}
        assert len(shapes) == 1, (seed, shapes)
        frames.add(next(iter(shapes))[0])
    assert frames == {lst.CTC_TIME, lst.CTC_LONG_TIME}, frames


@pytest.mark.parametrize("loss", [keras.losses.binary_crossentropy,
                                  keras.losses.BinaryCrossentropy()], ids=["function", "class"])
def test_fused_and_alone_evaluation_agree(loss):
    """The same draws, checked fused and each on its own: the same counts and verdicts,
    and worst errors that differ only by TensorFlow's last-digit rounding."""
    from lossverify import specs as S
    from lossverify import verifier as V

    spec = S.get_spec("binary_crossentropy")
    checks = ("value", "gradient", "graph")
    session = Session(loss, spec, {}, checks, C.DEFAULT_TIME_LIMIT, False)
    draws = draw_batches(session.raw_strategy, 30, 3, "float32", prepare=session.prepare_raw)
    fused = {name: V.CheckReport(name) for name in checks}
    alone = {name: V.CheckReport(name) for name in checks}
    session.evaluate(draws, fused, checks)
    for x in draws:
        session._record(x, session.outcomes(x, checks), alone)
    for name in checks:
        f, a = fused[name], alone[name]
        assert (f.examples, f.rows, f.failures) == (a.examples, a.rows, a.failures), name
        assert f.examples == 30 and f.failures == 0, name
        assert f.worst_ratio == pytest.approx(a.worst_ratio, abs=0.05), name


def test_units_cover_every_job_once_costliest_first():
    import argparse

    parser = argparse.ArgumentParser()
    verify_cli.register(parser.add_subparsers())
    jobs = conformance.plan(parser.parse_args(["verify"]), ["float32"])
    units = conformance.units(jobs)
    assert sorted(i for u in units for i in u) == list(range(len(jobs)))
    assert all(u == sorted(u) for u in units)  # plan order within a unit
    # a setting's class and function runs, then its invariants, share a unit (and so
    # their drawn batches)
    for u in units:
        assert len({(jobs[i].spec, jobs[i].params) for i in u}) == 1
        kinds = [jobs[i].invariant >= 0 for i in u]
        assert kinds == sorted(kinds) and not kinds[0], kinds
    costs = [sum(conformance.job_cost(jobs[i]) for i in u) for u in units]
    assert costs == sorted(costs, reverse=True)
    assert jobs[units[0][0]].spec == "ctc"  # the record's cost puts it first


_DRAW_HASH = """
import hashlib
from lossverify import strategies as lst
from lossverify.search import draw_batches
h = hashlib.sha256()
for x in draw_batches(lst.loss_inputs("categorical_crossentropy", with_sample_weight=True),
                 100, 0, "float32"):
    for a in (x.y_true, x.y_pred, x.sample_weight):
        h.update(b"-" if a is None else a.tobytes())
print(h.hexdigest())
"""


def test_draws_do_not_depend_on_the_process():
    """The search draws the same 100 batches in a bare interpreter (no TensorFlow, no
    pytest) and here (TensorFlow loaded, lossverify's pytest plugin and profile active).
    Drawing is separate from evaluating, so nothing a check does feeds back into
    Hypothesis's generation."""
    import subprocess
    import sys

    env = {**os.environ, "PYTHONHASHSEED": "123"}
    bare = subprocess.run([sys.executable, "-c", _DRAW_HASH], capture_output=True, text=True,
                          timeout=300, env=env, check=True).stdout.strip()
    here: dict[str, object] = {}
    exec(compile(_DRAW_HASH.replace("print(h.hexdigest())", "result = h.hexdigest()"),
                 "<draw-hash>", "exec"), here)
    assert here["result"] == bare


def test_min_rows_draws_more_batches_until_every_check_has_them():
    loss = keras.losses.binary_crossentropy
    few = lossverify.verify(loss, "binary_crossentropy", checks=("value", "xla"),
                            max_examples=3, seed=0)
    assert few.checks["value"].rows < 120, str(few)  # three batches of up to 16 rows
    report = lossverify.verify(loss, "binary_crossentropy", checks=("value", "xla"),
                               max_examples=3, seed=0, min_rows=120)
    assert report.ok, str(report)
    for name in ("value", "xla"):
        assert report.checks[name].rows >= 120, str(report)
        assert report.checks[name].examples > few.checks[name].examples, str(report)
    assert "min_rows=120" in report.reproduce_line()
    assert report.to_dict()["min_rows"] == 120


@pytest.mark.parametrize("bad", [-1, 1.5, True])
def test_min_rows_must_be_a_non_negative_int(bad):
    with pytest.raises(ValueError, match="min_rows: expected a non-negative int"):
        lossverify.verify(keras.losses.binary_crossentropy, "binary_crossentropy",
                          min_rows=bad)


def test_worst_input_of_a_fused_call_names_one_drawn_batch():
    """A Loss's graph check runs on fused batches; its worst input is the drawn batch
    that held the worst gradient element (or a line about the reduced value), never the
    whole concatenation."""
    report = lossverify.verify(keras.losses.CategoricalCrossentropy(),
                               "categorical_crossentropy", checks=("graph",),
                               max_examples=40, seed=0)
    shown = report.checks["graph"].worst_input
    assert shown.startswith("# "), shown[:200]
    assert "regime='fused'" not in shown
    assert len(shown) < 20_000, len(shown)


def cce_coupled_rows(y_true, y_pred):
    """Wrong only in batches of two or more rows: each row's loss moves by a tenth of its
    distance from the batch mean (0 for a single row)."""
    ce = keras.losses.categorical_crossentropy(y_true, y_pred)
    return ce + 0.1 * (ce - tf.reduce_mean(ce))


def test_counterexample_is_one_row_or_says_it_needs_the_batch():
    wrong_row = lossverify.verify(keras_wrong_everywhere, "categorical_crossentropy",
                                  checks=("value",), max_examples=20, seed=0)
    shown = wrong_row.checks["value"].counterexample
    assert shown.count("], [") == 0 and "y_pred=np.array([[" in shown, shown  # one row
    coupled = lossverify.verify(cce_coupled_rows, "categorical_crossentropy",
                                checks=("value",), max_examples=20, seed=0)
    value = coupled.checks["value"]
    assert value.failures > 0, str(coupled)
    assert "no single row fails alone: this failure needs the batch of" in \
        value.counterexample, str(coupled)


def keras_wrong_everywhere(y_true, y_pred):
    return 1.001 * keras.losses.categorical_crossentropy(y_true, y_pred)
