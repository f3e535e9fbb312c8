"""The conformance plot (``lossverify verify --plot``): files, size, legibility, colours.

Reports are stand-ins with the attributes the plot reads, so no verify run is needed.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.image import imread  # noqa: E402
from matplotlib.text import Text  # noqa: E402

from lossverify import report_plot as rp  # noqa: E402

CHECKS = ("value", "gradient", "graph", "xla")


@dataclass
class FakeCheck:
    name: str
    ratios: list[float]
    failures: int = 0
    deviations: dict[str, int] = field(default_factory=dict)


@dataclass
class FakeReport:
    loss: str
    label: str
    form: str
    params: dict[str, Any]
    dtype: str
    checks: dict[str, FakeCheck]
    seed: int = 0

    @property
    def compute_dtype(self) -> str:
        return self.dtype

    @property
    def ok(self) -> bool:
        return all(c.failures == 0 for c in self.checks.values())


def _reports(dtypes: tuple[str, ...], runs: int, draws: int = 20) -> list[FakeReport]:
    """``runs`` runs per dtype; every fifth run fails its value check (one ratio above 1,
    one non-comparable), every seventh has a known deviation in its gradient check."""
    rng = np.random.default_rng(0)
    reports = []
    for dtype, i in itertools.product(dtypes, range(runs)):
        checks = {}
        for name in CHECKS:
            ratios = list(10 ** rng.uniform(-6, 0, draws))
            ratios[0] = 0.0
            check = FakeCheck(name, ratios)
            if name == "value" and i % 5 == 0:
                check.ratios[1:3] = [4.0, math.inf]
                check.failures = 2
            if name == "gradient" and i % 7 == 0:
                check.ratios[1] = 2.0
                check.deviations = {"keras-clip": 1}
            checks[name] = check
        params = {"gamma": 2.0, "from_logits": True, "label_smoothing": 0.1} if i % 3 else {}
        reports.append(FakeReport(loss=f"loss{i}", label=f"keras.losses.Loss{i % 4}",
                                  form="class" if i % 2 else "function", params=params,
                                  dtype=dtype, checks=checks))
    return reports


# --- colours and positions: per point, from its own ratio only ----------------------------

def test_colours_follow_each_points_own_ratio():
    ratios = [0.0, 1e-9, 0.5, 1.0, 1.0000001, 3.0, 1e6, math.inf, math.nan]
    expected = [rp.PASS_COLOUR] * 4 + [rp.FAIL_COLOUR] * 5
    assert rp._colours(ratios) == expected
    for ratio, colour in zip(ratios, expected, strict=True):
        assert rp._colours([ratio]) == [colour]
    # the neighbours do not matter: a passing point among failures stays a pass
    assert rp._colours([5.0, 0.25, 5.0])[1] == rp.PASS_COLOUR
    assert rp._colours([0.1, 7.0, 0.1])[1] == rp.FAIL_COLOUR


def test_positions_put_zero_at_the_floor_and_non_comparable_at_the_ceiling():
    x = rp._positions([0.0, 1e-9, 0.5, 3.0, 1e9, math.inf, math.nan])
    np.testing.assert_array_equal(x, [rp.FLOOR, rp.FLOOR, 0.5, 3.0, rp.CEILING, rp.CEILING,
                                      rp.CEILING])


# --- files ---------------------------------------------------------------------------------

def test_one_figure_per_dtype_and_an_overview(tmp_path):
    path = tmp_path / "conformance.png"
    written = rp.save_error_distributions(_reports(("float32", "float16"), runs=40), path)
    assert written == [path, tmp_path / "conformance-float32.png",
                       tmp_path / "conformance-float16.png"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in written)
    for p in written:
        height, width = imread(p).shape[:2]
        assert 300 <= width < 4000 and 200 <= height < 4000, (p.name, width, height)


def test_a_single_dtype_writes_only_path(tmp_path):
    path = tmp_path / "plot.png"
    assert rp.save_error_distributions(_reports(("bfloat16",), runs=3), path) == [path]
    assert [p.name for p in tmp_path.iterdir()] == ["plot.png"]


def test_a_path_without_suffix_is_written_as_png(tmp_path):
    path = tmp_path / "plot"
    assert rp.save_error_distributions(_reports(("float32",), runs=2), path) == [path]
    assert path.read_bytes().startswith(b"\x89PNG")


def test_no_reports_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="nothing to plot"):
        rp.save_error_distributions([], tmp_path / "x.png")


# --- legibility ----------------------------------------------------------------------------

def _drawn(fig):
    FigureCanvasAgg(fig).draw()
    return fig.canvas.get_renderer()


def _texts(fig):
    return [t for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip()]


@pytest.fixture(scope="module")
def detail():
    reports = _reports(("float32",), runs=40)
    fig = rp._detail(reports, "float32")
    return fig, _drawn(fig)


@pytest.fixture(scope="module")
def overview():
    reports = _reports(("float32", "float64", "float16", "bfloat16"), runs=5)
    groups: dict[str, list[FakeReport]] = {}
    for r in reports:
        groups.setdefault(r.dtype, []).append(r)
    fig = rp._overview(groups)
    return fig, _drawn(fig)


@pytest.mark.parametrize("which", ["detail", "overview"])
def test_all_text_is_at_least_9_points(which, request):
    fig, _ = request.getfixturevalue(which)
    sizes = {t.get_text(): t.get_fontsize() for t in _texts(fig)}
    assert sizes and min(sizes.values()) >= 9, {k: v for k, v in sizes.items() if v < 9}


@pytest.mark.parametrize("which", ["detail", "overview"])
def test_titles_legend_and_labels_do_not_overlap(which, request):
    fig, renderer = request.getfixturevalue(which)
    legend = fig.legends[0].get_window_extent(renderer)
    titles = [ax.title.get_window_extent(renderer) for ax in fig.axes]
    boxes = [legend, *titles]
    for a, b in itertools.combinations(boxes, 2):
        assert not a.overlaps(b), (a, b)
    for ax in fig.axes:  # the titles sit above their panels, inside the figure
        box = ax.title.get_window_extent(renderer)
        assert box.y0 >= ax.get_window_extent(renderer).y1 - 1
    figure_box = fig.bbox
    for t in _texts(fig):
        box = t.get_window_extent(renderer)
        assert figure_box.x0 - 1 <= box.x0 and box.x1 <= figure_box.x1 + 1, t.get_text()
    labels = [t.get_window_extent(renderer) for t in fig.axes[0].get_yticklabels()]
    for a, b in itertools.pairwise(labels):
        assert not a.overlaps(b)


def test_every_row_names_its_dtype_and_failed_runs_are_marked(detail):
    fig, _ = detail
    labels = fig.axes[0].get_yticklabels()
    assert len(labels) == 40
    assert all(" float32" in t.get_text() for t in labels)
    for i, t in enumerate(labels):
        assert t.get_text().endswith("FAILED") == (i % 5 == 0), t.get_text()
        if i % 5 and i % 7 == 0:
            assert t.get_text().endswith("known deviation")


def test_point_colours_in_the_figure_are_per_point(detail):
    """In a failed run's value panel, the passing draws are in the pass colour."""
    from matplotlib.colors import to_rgba

    fig, _ = detail
    value = fig.axes[0]
    colours = {tuple(c) for coll in value.collections for c in coll.get_facecolors()}
    rgb = {c[:3] for c in colours}
    assert to_rgba(rp.PASS_COLOUR)[:3] in rgb and to_rgba(rp.FAIL_COLOUR)[:3] in rgb
    # a check with no ratio above 1 has no point in the fail colour
    graph = fig.axes[CHECKS.index("graph")]
    rgb = {tuple(c[:3]) for coll in graph.collections for c in coll.get_facecolors()}
    assert rgb == {to_rgba(rp.PASS_COLOUR)[:3]}
