"""The catalogue: one :class:`~lossverify.record.LossRecord` per reference loss.

Records live in one module per family (cross-entropies, the notes' losses, regression,
...); this package collects them into :data:`RECORDS`, in a fixed order. Adding a loss
means writing its reference function (in :mod:`lossverify.reference`) and its record in
the family's module. NumPy only.
"""

from __future__ import annotations

from lossverify.catalogue import (
    crossentropy,
    ctc,
    margin,
    notes,
    overlap,
    probabilistic,
    regression,
)
from lossverify.record import LossRecord

__all__ = ["RECORDS", "get"]

#: reference name -> its record
RECORDS: dict[str, LossRecord] = {
    r.name: r
    for family in (regression, crossentropy, notes, ctc, margin, probabilistic, overlap)
    for r in family.RECORDS
}


def get(name: str) -> LossRecord:
    """The record of reference ``name``, with a clear error for unknown names."""
    try:
        return RECORDS[name]
    except (KeyError, TypeError):
        raise ValueError(f"reference: expected one of {sorted(RECORDS)}, got {name!r}") from None
