"""The registry's public face: the records of :mod:`lossverify.catalogue` by name.

Each reference loss has one :class:`~lossverify.record.LossRecord` (called a spec here,
as the rest of lossverify long has): how to draw its inputs, which parameter settings
the default run sweeps (and which the thorough run adds), which TensorFlow
implementations are measured against it, which invariants relate it to other losses and
which known upstream deviations apply. Adding a loss means writing its reference
function and its record; every table is derived from the records.

NumPy only; implementations are named as ``"module:attr"`` and built on demand by
:func:`build_implementation`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lossverify.catalogue import RECORDS, get
from lossverify.record import (
    Implementation,
    KnownDeviation,
    LossRecord,
    Param,
    Relation,
    build_implementation,
    identify,
)

__all__ = ["SPECS", "Implementation", "KnownDeviation", "LossSpec", "Param", "Relation",
           "build_implementation", "check_reference_params", "get_spec", "identify"]

#: A spec is a record.
LossSpec = LossRecord

#: reference name -> its record, in the catalogue's order
SPECS: dict[str, LossRecord] = RECORDS


def get_spec(name: str) -> LossRecord:
    """The spec for reference ``name``, with a clear error for unknown names."""
    return get(name)


def check_reference_params(spec: LossRecord, params: Mapping[str, Any]) -> None:
    """Reject parameters the reference does not take, naming them, and values out of
    range, with the parameters' own validators (NumPy only: the CLI checks ``--param``
    before TensorFlow loads)."""
    spec.check_params(params)
