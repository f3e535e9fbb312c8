"""The records (lossverify/catalogue) are the one place a loss is described: every table
is derived from them, and they agree with the reference functions they name. NumPy only
(runs in the notf session)."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

import lossverify.reference as R
from lossverify import catalogue
from lossverify import specs as S
from lossverify.record import ROW_INVARIANTS

RECORDS = list(S.SPECS.values())


@pytest.mark.parametrize("record", RECORDS, ids=lambda r: r.name)
def test_record_parameters_are_the_evaluators(record):
    signature = inspect.signature(record.evaluator)
    wanted = {k: p.default for k, p in signature.parameters.items()
              if k not in ("y_true", "y_pred")}
    assert record.parameters == wanted


@pytest.mark.parametrize("record", RECORDS, ids=lambda r: r.name)
def test_record_is_complete(record):
    assert R.EVALUATORS[record.name] is record.evaluator
    assert record.y_pred in ("probabilities", "logits", "real")
    assert record.labels in (None, "dense", "sparse")
    assert record.implementations, "a record names what is checked against it"
    for params in (*record.default_grid, *record.thorough_grid()):
        record.check_params(params)  # every setting the runs use is valid
    for relation in record.relations:
        assert relation.other in S.SPECS, relation
        assert relation.other != record.name
    labels = {i.label for i in record.implementations} | \
        {c.label for c in record.counterparts}
    for deviation in record.deviations:
        assert set(deviation.implementations) & labels, (deviation.id, labels)
        assert set(deviation.frameworks) <= {"tensorflow", "torch", "jax"}, deviation.id
    for counterpart in record.counterparts:
        for params in (*record.default_grid, *counterpart.settings):
            record.check_params(params)


@pytest.mark.parametrize("record", RECORDS, ids=lambda r: r.name)
def test_validators_name_the_parameter(record):
    for param in record.params:
        if param.check is None:
            continue
        with pytest.raises((TypeError, ValueError), match=param.name):
            param.check(object())


def test_a_public_function_per_reference():
    for name in S.SPECS:
        assert callable(getattr(R, name)), name
        assert name in R.__all__, name


def test_row_invariants_are_known():
    from lossverify.record import LossRecord

    assert LossRecord.__dataclass_fields__["invariants"].default == ROW_INVARIANTS


# ------------------------------------------- adding a loss is one record and a function


def _eval_mean_quartic_error(y_true, y_pred):
    """A made-up loss, mean((y_pred - y_true)**4): its reference and nothing else."""
    import numpy as np

    from lossverify.reference import Evaluation

    d = np.asarray(y_pred, np.float64) - np.asarray(y_true, np.float64)
    n = d.shape[-1]
    grad = 4 * d**3 / n
    return Evaluation(np.mean(d**4, -1), grad, 2 * np.mean(d**4, -1), np.abs(grad),
                      np.zeros(d.shape[:-1], bool))


def test_adding_a_loss_is_one_record_and_its_reference(monkeypatch):
    """A new record (with its reference function) is all the tables need: the evaluator
    table, evaluate(), parameter validation, the input strategy, the conformance plan
    and its invariant cases all find it without another edit."""
    from lossverify import catalogue, conformance
    from lossverify.record import LossRecord, keras_pair

    record = LossRecord(name="mean_quartic_error", evaluator=_eval_mean_quartic_error,
                        inputs="regression", y_pred="real",
                        implementations=keras_pair("MeanQuarticError", "mean_quartic_error"))
    monkeypatch.setitem(catalogue.RECORDS, record.name, record)
    assert R.EVALUATORS["mean_quartic_error"] is _eval_mean_quartic_error
    assert "mean_quartic_error" in R.NAMES
    value, grad = R.value_and_grad("mean_quartic_error", [[0.0, 1.0]], [[1.0, 1.0]])
    assert value.tolist() == [0.5] and grad.tolist() == [[2.0, 0.0]]
    assert S.get_spec("mean_quartic_error") is record
    with pytest.raises(TypeError, match="delta"):
        S.check_reference_params(record, {"delta": 1.0})
    jobs = list(conformance.conformance_jobs(["mean_quartic_error"], thorough=False))
    assert [(spec.name, params, [i.label for i in impls]) for spec, params, impls in jobs] \
        == [("mean_quartic_error", {}, ["keras.losses.MeanQuarticError",
                                        "keras.losses.mean_quartic_error"])]
    from lossverify import invariants as I

    cases = I.conformance_cases("mean_quartic_error", {})
    assert [c[1] for c in cases] == ["class_matches_function", "non_negative",
                                     "batch_permutation", "batch_split"]
    hypothesis = pytest.importorskip("hypothesis")
    from lossverify import strategies as lst

    @hypothesis.given(lst.loss_inputs("mean_quartic_error"))
    @hypothesis.settings(max_examples=5, database=None, deadline=None,
                         suppress_health_check=list(hypothesis.HealthCheck))
    def drawn(x):
        assert x.regime == "regression" and x.y_true.shape == x.y_pred.shape

    drawn()


def test_readme_table_and_deviations_come_from_the_records():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert catalogue.markdown_table() in readme, \
        "README's 'Losses covered' table is stale: paste lossverify.catalogue.markdown_table()"
    ids = {d.id for r in RECORDS for d in r.deviations}
    missing = sorted(i for i in ids if f"| {i} |" not in readme)
    assert not missing, f"known deviations without a README row: {missing}"
