"""The records (lossverify/catalogue) are the one place a loss is described: every table
is derived from them, and they agree with the reference functions they name. NumPy only
(runs in the notf session)."""

from __future__ import annotations

import inspect

import pytest

import lossverify.reference as R
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
    for deviation in record.deviations:
        labels = {i.label for i in record.implementations}
        assert set(deviation.implementations) & labels, (deviation.id, labels)


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
