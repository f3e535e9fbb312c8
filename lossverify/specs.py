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

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from lossverify.catalogue import RECORDS, get
from lossverify.record import (
    MATRIX_FRAMEWORKS,
    Counterpart,
    Implementation,
    KnownDeviation,
    LossRecord,
    Param,
    Relation,
    build_implementation,
    identify,
)

__all__ = ["KERAS_BACKENDS", "MATRIX_FRAMEWORKS", "SPECS", "Counterpart", "Implementation",
           "KnownDeviation", "LossSpec", "MatrixRow", "Param", "Relation",
           "build_implementation", "check_reference_params", "get_spec", "identify",
           "matrix_rows"]

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


#: the matrix's Keras-on-another-backend frameworks -> ``KERAS_BACKEND``
KERAS_BACKENDS = {"keras-jax": "jax", "keras-torch": "torch"}


@dataclass(frozen=True)
class MatrixRow:
    """A row of the conformance matrix: one implementation of a reference in one
    framework (``"torch"``, ``"jax"``, ``"keras-jax"``, ``"keras-torch"``), checked at
    ``settings`` (reference parameters), with its declared ``convention`` ("" for none)."""

    spec: str
    framework: str
    label: str
    convention: str
    settings: tuple[tuple[tuple[str, Any], ...], ...]
    counterpart: Counterpart | None = None
    implementation: Implementation | None = None


def _freeze(params: Mapping[str, Any]) -> tuple[tuple[str, Any], ...]:
    return tuple(params.items())


def matrix_rows(framework: str, only: Iterable[str] = ()) -> Iterator[MatrixRow]:
    """The matrix's rows for ``framework``, derived from the records: each record's
    counterparts in that framework, at the settings of its default grid they implement
    plus their own; for Keras on JAX or PyTorch, each record's Keras function at its
    default grid (the class, the same code reduced, is left to
    ``tests/test_keras_backends_verify.py``: a Keras class runs batch by batch)."""
    if framework not in MATRIX_FRAMEWORKS or framework == "tensorflow":
        raise ValueError(f"framework: expected one of {MATRIX_FRAMEWORKS[1:]}, got "
                         f"{framework!r}")
    chosen = set(only)
    for name, spec in SPECS.items():
        if chosen and name not in chosen:
            continue
        grid = [dict(g) for g in spec.default_grid]
        if framework in KERAS_BACKENDS:
            for impl in spec.implementations:
                if impl.owner == "keras" and impl.form == "function":
                    yield MatrixRow(name, framework, impl.label, "",
                                    tuple(_freeze(g) for g in grid), implementation=impl)
            continue
        for c in spec.counterparts:
            if c.framework != framework:
                continue
            settings: list[dict[str, Any]] = [g for g in grid if c.when(g)]
            settings += [dict(g) for g in c.settings if dict(g) not in settings]
            yield MatrixRow(name, framework, c.label, c.convention,
                            tuple(_freeze(g) for g in settings), counterpart=c)
