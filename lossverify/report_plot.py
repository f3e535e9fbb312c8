"""``lossverify verify --plot``: the distribution of error / allowed per run and check.

One panel per check; one row per run (implementation, parameters, dtype); each dot is
one drawn batch's worst ``error / allowed`` on a log axis, with the pass line at 1.
Exact agreement (0) is drawn at the left edge, failures that could not be compared
(NaN, a raise) at the right edge. Drawn with ``matplotlib.figure.Figure`` (no GUI
backend) and written atomically.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from lossverify._io import atomic_path

__all__ = ["save_error_distributions"]

FLOOR, CEILING = 1e-6, 1e3


def _label(report: Any) -> str:
    params = ", ".join(f"{k}={v}" for k, v in report.params.items())
    dtype = "" if report.dtype == "float32" else f" {report.dtype}"
    return f"{report.label or report.loss} ({report.form}){' ' + params if params else ''}{dtype}"


def save_error_distributions(reports: Sequence[Any], path: str | os.PathLike[str]) -> None:
    """Save the figure for ``reports`` (:class:`~lossverify.verifier.VerifyReport`)."""
    from matplotlib.figure import Figure

    if not reports:
        raise ValueError("reports: nothing to plot (no verify runs)")
    checks = list(dict.fromkeys(c for r in reports for c in r.checks))
    rows = len(reports)
    fig = Figure(figsize=(4.2 * len(checks) + 4.5, 0.28 * rows + 1.6))
    axes = fig.subplots(1, len(checks), sharey=True, squeeze=False)[0]
    rng = np.random.default_rng(0)  # vertical jitter only, fixed: the PNG is reproducible
    for ax, check in zip(axes, checks, strict=True):
        for i, report in enumerate(reports):
            rep = report.checks.get(check)
            if rep is None or not rep.ratios:
                continue
            r = np.asarray(rep.ratios, dtype=np.float64)
            r = np.where(np.isfinite(r), np.clip(r, FLOOR, CEILING), CEILING)
            color = "tab:red" if rep.failures else (
                "tab:orange" if rep.deviations else "tab:blue")
            ax.scatter(r, i + rng.uniform(-0.25, 0.25, r.size), s=5, alpha=0.5, color=color,
                       linewidths=0)
        ax.axvline(1.0, color="black", linewidth=0.8)
        ax.set_xscale("log")
        ax.set_xlim(FLOOR / 2, CEILING * 2)
        ax.set_title(check)
        ax.set_xlabel("error / allowed (worst element of each batch)")
        ax.grid(True, axis="x", alpha=0.3)
    axes[0].set_yticks(range(rows))
    axes[0].set_yticklabels([_label(r) for r in reports], fontsize=7)
    axes[0].set_ylim(rows - 0.5, -0.5)
    seeds = sorted({r.seed for r in reports})
    fig.suptitle(f"lossverify: error / allowed per drawn batch (seed {', '.join(map(str, seeds))};"
                 f" blue ok, orange known deviation, red failure; 0 drawn at {FLOOR:g}, "
                 f"non-finite at {CEILING:g})", fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110)
