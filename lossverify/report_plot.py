"""``lossverify verify --plot PATH``: the distribution of error / allowed per run and check.

Files written (:func:`save_error_distributions` returns their paths, ``PATH`` first):

* reports of one dtype: ``PATH`` is the detail figure of that dtype;
* reports of several dtypes: one detail figure per dtype beside ``PATH``, named
  ``<stem>-<dtype><suffix>`` (``conformance.png`` gives ``conformance-float32.png``,
  ``conformance-float16.png``, ...), and ``PATH`` itself is the overview: one row per
  dtype, the points of all its runs pooled, the row labelled with its count of runs and
  of failed runs.

A detail figure has one panel per check and one row per run, labelled with the
implementation, form, parameters and dtype (every row names its dtype; a failed run's
label is red and ends in ``FAILED``, a run that met a known upstream deviation ends in
``known deviation``). Each dot is one drawn batch's worst ``error / allowed`` on a log
axis with the pass line at 1, coloured by its own verdict alone: the pass colour at or
below 1, the fail colour above it. Exact agreement (0) is drawn at the left edge;
batches that could not be compared (a NaN, a raise) are crosses at the right edge in
the fail colour. A known deviation's points above 1 are in the fail colour too: the
ratios do not record which batches a deviation explained, only the row label does.

Text is at least 9 pt at the saved resolution, the layout is matplotlib's constrained
layout (titles and labels do not overlap), and the figure grows with the number of rows
and the longest label, so a 40-run dtype stays a couple of thousand pixels on a side.
Drawn with ``matplotlib.figure.Figure`` (no GUI backend) and written atomically.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lossverify._io import atomic_path

__all__ = ["dtype_path", "save_error_distributions"]

#: where exact agreement (0) and non-comparable batches are drawn
FLOOR, CEILING = 1e-6, 1e3
PASS_COLOUR, FAIL_COLOUR = "tab:blue", "tab:red"
#: the saved resolution, and the font sizes in points (9 pt is 12.5 px at 100 dpi)
DPI = 100
FONT, SMALL_FONT, TITLE_FONT = 10.0, 9.0, 12.0
#: inches: one detail row, one overview row, one check panel's plotting width
ROW_HEIGHT, OVERVIEW_ROW_HEIGHT, PANEL_WIDTH = 0.24, 0.7, 3.3
#: inches above and below the rows: title, legend, panel titles, x labels
HEADER, FOOTER = 1.3, 0.9
#: inches: the panels' least height (a single run's row would otherwise be a thin strip)
MIN_PLOT_HEIGHT = 1.2
_JITTER = 0.25


def _colours(ratios: Iterable[float]) -> list[str]:
    """Each point's colour from its own ratio: pass at or below 1, fail above 1 or when
    not comparable (NaN or infinite)."""
    return [PASS_COLOUR if r <= 1.0 else FAIL_COLOUR for r in map(float, ratios)]


def _positions(ratios: Iterable[float]) -> np.ndarray:
    """Where the points go on the log axis: exact zeros and tiny ratios at ``FLOOR``,
    huge and non-comparable ones at ``CEILING``."""
    r = np.asarray(list(ratios), dtype=np.float64)
    return np.where(np.isfinite(r), np.clip(r, FLOOR, CEILING), CEILING)


def _dtype_name(report: Any) -> str:
    dtype = str(report.dtype)
    compute = getattr(report, "compute_dtype", dtype)
    return dtype if compute == dtype else f"{dtype} (computed in {compute})"


def _deviated(report: Any) -> bool:
    return any(getattr(c, "deviations", None) for c in report.checks.values())


def _label(report: Any) -> str:
    params = ", ".join(f"{k}={v}" for k, v in report.params.items())
    text = f"{report.label or report.loss} ({report.form})"
    text += f" {params}" if params else ""
    text += f"  {_dtype_name(report)}"
    if not report.ok:
        return text + "  FAILED"
    return text + ("  known deviation" if _deviated(report) else "")


def _text_width(texts: Sequence[str], size: float) -> float:
    """The widest of ``texts`` at ``size`` points, in inches."""
    from matplotlib.font_manager import FontProperties
    from matplotlib.textpath import TextToPath

    measure, font = TextToPath(), FontProperties(size=size)
    widest = max((measure.get_text_width_height_descent(t, font, ismath=False)[0]
                  for t in texts), default=0.0)
    return widest / 72.0


def _checks(reports: Sequence[Any]) -> list[str]:
    return list(dict.fromkeys(c for r in reports for c in r.checks))


def _legend(fig: Any, title: str) -> None:
    """The legend under the figure's title, which is the legend's own title: constrained
    layout makes room for an outside legend, but may overprint it with a suptitle."""
    from matplotlib.lines import Line2D

    def dot(colour: str, marker: str = "o") -> Line2D:
        return Line2D([], [], linestyle="none", marker=marker, color=colour, markersize=6)

    fig.legend([dot(PASS_COLOUR), dot(FAIL_COLOUR), dot(FAIL_COLOUR, "x")],
               ["error / allowed <= 1: pass", "error / allowed > 1: fail",
                f"not comparable (NaN, raised), drawn at {CEILING:g}"],
               loc="outside upper center", ncols=3, fontsize=SMALL_FONT, frameon=False,
               title=title, title_fontsize=TITLE_FONT)


def _draw_points(ax: Any, ratios: Sequence[float], rows: Sequence[float],
                 rng: np.random.Generator, size: float) -> None:
    """A panel's points, ``ratios[k]`` in row ``rows[k]``, in three scatter calls (one
    per kind of point, not one per run: a call costs as much as thousands of points)."""
    r = np.asarray(ratios, dtype=np.float64)
    x, colours = _positions(r), np.array(_colours(r), dtype=object)
    y = np.asarray(rows, dtype=np.float64) + rng.uniform(-_JITTER, _JITTER, r.size)
    comparable, failing = np.isfinite(r), colours == FAIL_COLOUR
    for chosen, scale, alpha in ((~failing, 1.0, 0.55), (comparable & failing, 2.5, 0.9)):
        if chosen.any():  # failing points larger and drawn last, so none hides under a pass
            ax.scatter(x[chosen], y[chosen], s=size * scale, alpha=alpha,
                       c=list(colours[chosen]), linewidths=0)
    if (~comparable).any():
        ax.scatter(x[~comparable], y[~comparable], s=size * 3, marker="x",
                   c=FAIL_COLOUR, linewidths=1.0)


def _style_axis(ax: Any, title: str) -> None:
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_xscale("log")
    ax.set_xlim(FLOOR / 2, CEILING * 2)
    ax.set_xticks([1e-6, 1e-4, 1e-2, 1.0, 1e2])
    ax.tick_params(axis="both", labelsize=SMALL_FONT)
    ax.set_title(title, fontsize=FONT)
    ax.grid(True, axis="x", alpha=0.3)


def _figure(reports: Sequence[Any], rows: list[tuple[str, list[Any]]], title: str,
            row_height: float, point_size: float) -> Any:
    """One panel per check, one row per ``(label, reports)`` pair; a row's points are
    those of all its reports."""
    from matplotlib.figure import Figure

    checks = _checks(reports)
    label_width = _text_width([label for label, _ in rows], SMALL_FONT)
    width = label_width + 0.6 + PANEL_WIDTH * len(checks)
    height = HEADER + FOOTER + max(row_height * len(rows), MIN_PLOT_HEIGHT)
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    axes = fig.subplots(1, len(checks), sharey=True, squeeze=False)[0]
    rng = np.random.default_rng(0)  # vertical jitter only, fixed: the PNG is reproducible
    for ax, check in zip(axes, checks, strict=True):
        failed, ratios, where = 0, [], []
        for i, (_, members) in enumerate(rows):
            for report in members:
                rep = report.checks.get(check)
                if rep is None:
                    continue
                failed += bool(rep.failures)
                ratios.extend(rep.ratios)
                where.extend([i] * len(rep.ratios))
        _draw_points(ax, ratios, where, rng, point_size)
        runs = sum(check in r.checks for r in reports)
        _style_axis(ax, f"{check}: {failed} of {_runs(runs)} failed" if failed else check)
    axes[0].set_yticks(range(len(rows)))
    axes[0].set_yticklabels([label for label, _ in rows], fontsize=SMALL_FONT)
    for tick, (_, members) in zip(axes[0].get_yticklabels(), rows, strict=True):
        if not all(r.ok for r in members) and len(members) == 1:
            tick.set_color(FAIL_COLOUR)
    axes[0].set_ylim(len(rows) - 0.5, -0.5)
    _legend(fig, title)
    fig.supxlabel(f"worst error / allowed of each drawn batch (log axis, pass line at 1; "
                  f"exact agreement drawn at {FLOOR:g})", fontsize=FONT)
    return fig


def _runs(n: int) -> str:
    return f"{n} run" if n == 1 else f"{n} runs"


def _seeds(reports: Sequence[Any]) -> str:
    return ", ".join(map(str, sorted({r.seed for r in reports})))


def _detail(reports: Sequence[Any], dtype: str) -> Any:
    return _figure(reports, [(_label(r), [r]) for r in reports],
                   f"lossverify: error / allowed per drawn batch, {dtype} inputs "
                   f"({_runs(len(reports))}, seed {_seeds(reports)})", ROW_HEIGHT, 9.0)


def _overview(by_dtype: dict[str, list[Any]]) -> Any:
    reports = [r for group in by_dtype.values() for r in group]
    rows = []
    for dtype, group in by_dtype.items():
        failed = sum(not r.ok for r in group)
        rows.append((f"{dtype}: {_runs(len(group))}, {failed} failed", group))
    return _figure(reports, rows, "lossverify: error / allowed per drawn batch, all runs of "
                   f"each dtype (seed {_seeds(reports)}; one figure per dtype beside this one)",
                   OVERVIEW_ROW_HEIGHT, 6.0)


def _save(fig: Any, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=DPI, format=path.suffix.lstrip(".").lower() or "png")
    return path


def dtype_path(path: str | os.PathLike[str], dtype: str) -> Path:
    """Where the detail figure of ``dtype`` goes when ``path`` is an overview."""
    p = Path(path)
    return p.with_name(f"{p.stem}-{dtype}{p.suffix}")


def save_error_distributions(reports: Sequence[Any], path: str | os.PathLike[str]
                             ) -> list[Path]:
    """Save the figures for ``reports`` (:class:`~lossverify.verifier.VerifyReport`):
    ``path`` alone for one dtype, else an overview at ``path`` and one figure per dtype
    (see the module docstring). Returns the paths written, ``path`` first."""
    if not reports:
        raise ValueError("reports: nothing to plot (no verify runs)")
    by_dtype: dict[str, list[Any]] = {}
    for report in reports:
        by_dtype.setdefault(str(report.dtype), []).append(report)
    target = Path(path)
    if len(by_dtype) == 1:
        ((dtype, group),) = by_dtype.items()
        return [_save(_detail(group, dtype), target)]
    written = [_save(_overview(by_dtype), target)]
    for dtype, group in by_dtype.items():
        written.append(_save(_detail(group, dtype), dtype_path(target, dtype)))
    return written
