"""The catalogue: one :class:`~lossverify.record.LossRecord` per reference loss.

Records live in one module per family (cross-entropies, the notes' losses, regression,
...); this package collects them into :data:`RECORDS`, in a fixed order. Adding a loss
means writing its reference function (in :mod:`lossverify.reference`) and its record in
the family's module. NumPy only.
"""

from __future__ import annotations

from typing import Any

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


def _setting(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in params.items()) or "defaults"


def markdown_table() -> str:
    """The README's "Losses covered" table, one row per record (a test keeps the README's
    copy equal to this)."""
    lines = ["| reference | implementations checked | `y_pred` | parameters | default run "
             "| known deviations |", "|---|---|---|---|---|---|"]
    for r in RECORDS.values():
        cells = [f"`{r.name}`", ", ".join(f"`{i.label}`" for i in r.implementations),
                 r.y_pred, ", ".join(f"`{p.name}`" for p in r.params) or "-",
                 "; ".join(_setting(dict(g)) for g in r.default_grid),
                 ", ".join(f"`{d.id}`" for d in r.deviations) or "-"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
