"""Meta-tests of :mod:`lossverify.strategies`: the inputs are what the docstrings promise,
and every advertised regime actually occurs (a strategy that never draws exact 0 probabilities
would make every downstream check vacuous there)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, find, given, settings
from hypothesis import strategies as st

import lossverify.strategies as lst

NAMES = sorted(lst.LABEL_KIND)
#: input kinds with their own regimes (tested in the probabilistic family's block below)
PROBABILISTIC_KINDS = ("distributions", "counts", "sparse_probabilities")
TAKES_LOGITS_FLAG = {n for n, k in lst.LABEL_KIND.items() if k in ("binary", "categorical",
                                                                   "sparse")}
FAST = settings(max_examples=40, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
FIND = settings(max_examples=3000, deadline=None, database=None, derandomize=True,
                phases=[Phase.generate], suppress_health_check=list(HealthCheck))


def _param_grid() -> list[tuple[str, dict]]:
    grid = []
    for name in NAMES:
        kind = lst.LABEL_KIND[name]
        variants: list[dict] = [{}, {"with_sample_weight": True, "rank": 3},
                                {"rank": 2, "soft_labels": False}]
        if kind == "embeddings":  # (batch, dim) only
            variants[1] = {"with_sample_weight": True}
        if kind == "masks":  # per-sample values, and one per column
            variants += [{"with_sample_weight": True, "axis": -1},
                         {"with_sample_weight": True, "axis": 0}]
        if name in TAKES_LOGITS_FLAG:
            variants.append({"from_logits": True})
        if kind.startswith("sparse"):
            variants.append({"ignore_class": -1})
        if kind.endswith("_logits"):
            variants.append({"class_num": 5, "gamma": 2.0})
        grid += [(name, v) for v in variants]
    return grid


def _row_gaps(y_pred: np.ndarray) -> np.ndarray:
    rows = np.sort(y_pred.reshape(-1, y_pred.shape[-1]).astype(np.float64), axis=-1)
    return rows[:, -1] - rows[:, -2]


def _uses_logits(name: str, params: dict) -> bool:
    return params.get("from_logits", False) or lst.LABEL_KIND[name].endswith("_logits")


# ------------------------------------------------------------------ invariants

@pytest.mark.parametrize(("name", "params"), _param_grid(),
                         ids=[f"{n}-{'-'.join(map(str, p.items())) or 'default'}"
                              for n, p in _param_grid()])
@FAST
@given(data=st.data())
def test_loss_inputs_invariants(name: str, params: dict, data: st.DataObject):
    x = data.draw(lst.loss_inputs(name, **params))
    kind = lst.LABEL_KIND[name]
    yp, yt = x.y_pred, x.y_true
    assert yp.dtype == np.float32 and yp.ndim in (2, 3) and np.isfinite(yp).all()
    if "rank" in params and kind != "ctc":  # CTC's logits are rank 3 (see below)
        assert yp.ndim == params["rank"]
    if "class_num" in params:
        assert yp.shape[-1] == params["class_num"]
    assert 1 <= yp.shape[0] <= 16 and x.rows == int(np.prod(yp.shape[:-1]))

    # labels of the right kind
    if kind == "embeddings":  # Circle: int32 class labels per row
        assert yt.dtype == np.int32 and yt.shape == yp.shape[:1]
    elif kind == "ctc":
        _check_ctc_inputs(x, params)
    elif kind.startswith("sparse"):
        assert yt.dtype == np.int32 and yt.shape == yp.shape[:-1]
        valid = (yt >= 0) & (yt < yp.shape[-1])
        if params.get("ignore_class") is not None:
            valid |= yt == params["ignore_class"]
        assert valid.all()
    else:
        assert yt.dtype == np.float32 and yt.shape == yp.shape and np.isfinite(yt).all()
    if kind.startswith("categorical"):
        sums = yt.sum(axis=-1, dtype=np.float64)
        if x.notes["labels"] == "one_hot":
            assert set(np.unique(yt)) <= {0.0, 1.0} and (sums == 1.0).all()
        else:
            assert params.get("soft_labels", True)
            assert ((yt >= 0) & (yt <= 1)).all() and np.allclose(sums, 1.0, atol=1e-5)
    if kind == "binary":
        assert ((yt >= 0) & (yt <= 1)).all()
        if not params.get("soft_labels", True):
            assert set(np.unique(yt)) <= {0.0, 1.0}

    # predictions: probabilities or logits in their regime (real values: margin family)
    if kind == "ctc":
        pass  # logits, checked with the labels
    elif kind in MARGIN_KINDS:
        _check_margin_inputs(x, kind, params)
    elif kind in OVERLAP_KINDS:
        _check_overlap_inputs(x, kind, params)
    elif _uses_logits(name, params):
        assert x.regime in lst.LOGIT_REGIMES
        if x.regime == "wide":
            assert (np.abs(yp) <= 1e3).all()
        elif x.regime == "moderate":
            assert (np.abs(yp) <= 8).all()
        elif kind != "binary":  # a lead over the other classes (see the xfail test below)
            assert (_row_gaps(yp) >= (20 if x.regime == "gap20" else 100) - 16).all()
    elif kind in lst.REGRESSION_REGIMES:  # regression losses' hard regimes
        assert x.regime in lst.REGRESSION_REGIMES[kind]
        assert (np.abs(yp) <= 1e4).all() and (np.abs(yt) <= 1e4).all()
    elif kind not in ("regression", *PROBABILISTIC_KINDS):  # those: see below
        assert x.regime in lst.REGIMES
        assert (yp >= 0).all()
        sums = yp.reshape(-1, yp.shape[-1]).sum(axis=-1, dtype=np.float64)
        assert (sums > 0).all(), "every row needs a positive sum"
        if kind == "binary":
            assert (yp <= 1).all() and x.regime != "unnormalised"
        elif x.regime != "unnormalised":
            assert np.allclose(sums, 1.0, atol=1e-5 * yp.shape[-1]), sums

    if params.get("with_sample_weight"):
        w = x.sample_weight
        # one weight per value: Dice's axis=None (its default) gives one for the batch
        shape = lst.KINDS[kind].loss_shape(yp.shape, params.get("axis")) \
            if lst.KINDS[kind].loss_shape is not None else yp.shape[:-1]
        assert w is not None and w.dtype == np.float32 and w.shape == shape
        assert (w >= 0).all() and np.isfinite(w).all()
    else:
        assert x.sample_weight is None


# ------------------------------------------------------------------ overlap family

OVERLAP_KINDS = {"masks": lst.MASK_REGIMES, "embeddings": lst.EMBEDDING_REGIMES}


def _check_overlap_inputs(x, kind: str, params: dict) -> None:
    """Masks: 0/1 labels (soft only in their regime), y_pred in [0, 1]. Embeddings:
    unit-norm or zero rows."""
    yp, yt = x.y_pred.astype(np.float64), x.y_true.astype(np.float64)
    assert x.regime in OVERLAP_KINDS[kind]
    if kind == "masks":
        assert ((yp >= 0) & (yp <= 1)).all() and ((yt >= 0) & (yt <= 1)).all()
        if x.regime != "soft_true":
            assert set(np.unique(yt)) <= {0.0, 1.0}
        else:
            assert params.get("soft_labels", True)
        if x.regime == "perfect":
            assert (yp == yt).all(axis=tuple(range(1, yp.ndim))).any()
        return
    norms = np.sqrt((yp * yp).sum(-1))
    assert ((np.abs(norms - 1) < 1e-6) | (norms == 0)).all(), norms
    if x.regime == "all_equal":
        assert (yt == yt[0]).all()
    elif x.regime == "all_different":
        assert len(np.unique(yt)) == len(yt)
    elif x.regime == "zeros":
        assert (norms == 0).any()


def _overlap_inputs(name: str, **params):
    return lst.loss_inputs(name, **params)


def _pairs(x):
    labels = x.y_true
    return labels[:, None] == labels[None, :], 1.0 - x.y_pred.astype(np.float64) @ \
        x.y_pred.astype(np.float64).T


def _has_negative_duplicate(x) -> bool:
    same, dist = _pairs(x)
    return bool((~same & (np.abs(dist) < 1e-6)).any())


def _has_positive_and_negative(x) -> bool:
    same, _ = _pairs(x)
    np.fill_diagonal(same, False)
    return bool((same.any(-1) & (~_pairs(x)[0]).any(-1)).any())


OCCURS_OVERLAP = {
    "dice: an all-zero y_true and y_pred row": (
        _overlap_inputs("dice", axis=-1),
        lambda x: ((x.y_true == 0) & (x.y_pred == 0)).all(axis=-1).any()),
    "dice: an empty y_true row under a nonzero prediction": (
        _overlap_inputs("dice", axis=-1),
        lambda x: ((x.y_true == 0).all(axis=-1) & (x.y_pred > 0).any(axis=-1)).any()),
    "dice: a one-pixel mask predicted exactly": (
        _overlap_inputs("dice", axis=-1),
        lambda x: x.regime == "one_pixel" and ((x.y_true.sum(-1) == 1)
                                               & (x.y_pred == x.y_true).all(-1)).any()),
    "dice: a one-pixel mask missed": (
        _overlap_inputs("dice", axis=-1),
        lambda x: ((x.y_true.sum(-1) == 1) & ((x.y_true * x.y_pred).sum(-1) == 0)
                   & (x.y_pred.sum(-1) > 0)).any()),
    "dice: a whole batch with no mask at all (axis=None, 1 - 0 / eps)": (
        _overlap_inputs("dice"), lambda x: (x.y_true == 0).all() and (x.y_pred == 0).all()),
    "tversky: p within 1e-4 of a nonempty y (1 - r cancels)": (
        _overlap_inputs("tversky", axis=-1),
        lambda x: x.regime == "saturated" and x.y_true.sum() > 0
        and (np.abs(x.y_pred - x.y_true) < 1e-4).all()),
    "circle: a duplicated row with another label (a kink)": (
        _overlap_inputs("circle"), _has_negative_duplicate),
    "circle: every label equal (no negatives) in a batch of 3+": (
        _overlap_inputs("circle"),
        lambda x: len(x.y_true) >= 3 and (x.y_true == x.y_true[0]).all()),
    "circle: every label different (no positives) in a batch of 3+": (
        _overlap_inputs("circle"),
        lambda x: len(x.y_true) >= 3 and len(np.unique(x.y_true)) == len(x.y_true)),
    "circle: a zero row beside a row with a positive and a negative": (
        _overlap_inputs("circle"),
        lambda x: (x.y_pred == 0).all(-1).any() and _has_positive_and_negative(x)),
    "circle: a negative pair beyond the weight clamp (cos < -0.4)": (
        _overlap_inputs("circle"),
        lambda x: (~_pairs(x)[0] & (_pairs(x)[1] > 1.4 + 1e-3)).any()),
    "circle: a negative pair at the clamp (cos = -0.4)": (
        _overlap_inputs("circle"),
        lambda x: (~_pairs(x)[0] & (np.abs(_pairs(x)[1] - 1.4) < 1e-6)).any()),
    "circle: positives clustered (distance < 0.05) in a batch with negatives": (
        _overlap_inputs("circle"),
        lambda x: x.regime == "clustered" and _has_positive_and_negative(x)
        and (_pairs(x)[0] & ~np.eye(len(x.y_true), dtype=bool)
             & (_pairs(x)[1] < 0.05)).any()),
}


@pytest.mark.parametrize("what", sorted(OCCURS_OVERLAP))
def test_overlap_regime_occurs(what: str):
    strategy, condition = OCCURS_OVERLAP[what]
    find(strategy, condition, settings=FIND)


@pytest.mark.parametrize("name", ["dice", "circle"])
def test_every_overlap_regime_is_drawn(name: str):
    seen: set[str] = set()

    def collect(x):
        seen.add(x.regime)
        return False

    with pytest.raises(Exception, match="No examples"):
        find(lst.loss_inputs(name), collect, settings=settings(FIND, max_examples=150))
    assert seen == set(OVERLAP_KINDS[lst.LABEL_KIND[name]])


# ------------------------------------------------------------------ margin family

MARGIN_KINDS = {"hinge": lst.HINGE_REGIMES, "categorical_hinge": lst.CATEGORICAL_HINGE_REGIMES,
                "cosine": lst.COSINE_REGIMES}


def _check_margin_inputs(x, kind: str, params: dict) -> None:
    """Real predictions in their regime; hinge labels of the kind the notes name."""
    yp, yt = x.y_pred, x.y_true
    assert x.regime in MARGIN_KINDS[kind]
    if kind == "hinge":
        labels = x.notes["labels"]
        assert labels in lst.HINGE_LABELS
        values = set(np.unique(yt).tolist())
        if labels == "signs":
            assert values <= {-1.0, 1.0}
        elif labels == "binary":
            assert values <= {0.0, 1.0}
        elif labels == "mixed":
            assert values <= {-1.0, 0.0, 1.0} and -1.0 in values
        else:  # soft: at least one label that is neither 0 nor 1, so nothing converts
            assert params.get("soft_labels", True)
            assert ((yt >= 0) & (yt <= 1)).all() and not values <= {0.0, 1.0}
        if not params.get("soft_labels", True):
            assert labels in ("signs", "binary")
    if kind in ("hinge", "categorical_hinge"):
        # a categorical margin row lifts the target to max(0, max of the others) + 1
        bound = {"large": 1e3, "margin": 4.0 if kind == "categorical_hinge" else 3.0}.get(
            x.regime, 3.0)
        assert (np.abs(yp) <= bound).all()
    if kind == "categorical_hinge" and x.regime == "margin" and x.notes["labels"] == "one_hot":
        rows, hot = yp.reshape(-1, yp.shape[-1]), yt.reshape(-1, yp.shape[-1])
        others = np.where(hot == 1, 0, rows).max(axis=-1)
        assert (rows[hot == 1] == np.maximum(others, 0) + 1).all()  # on the margin
    if kind == "cosine":
        norms = np.sqrt((yp.astype(np.float64) ** 2).sum(axis=params.get("axis", -1)))
        if x.regime == "zero":
            zero_p = norms == 0
            zero_t = (yt == 0).all(axis=params.get("axis", -1))
            assert (zero_p | zero_t).any()
        elif x.regime == "tiny":
            assert (norms < 1.1e-4).any()
        elif x.regime == "floor":
            assert ((norms > 4e-8) & (norms < 2.2e-7)).any()
        elif x.regime == "large":
            assert (norms > 9e2).any() and (norms < 1.1e10).all()


def _margin_inputs(name: str, **params):
    return lst.loss_inputs(name, **params)


def _on_hinge_margin(x) -> bool:
    y = x.y_true.astype(np.float64)
    y = 2 * y - 1 if np.isin(y, (0.0, 1.0)).all() else y
    return bool((y * x.y_pred == 1).any())


OCCURS_MARGIN = {
    "hinge: y p == 1 exactly": (_margin_inputs("hinge"), _on_hinge_margin),
    "hinge: 0/1 labels exactly on the margin": (
        _margin_inputs("hinge"), lambda x: x.notes["labels"] == "binary"
        and _on_hinge_margin(x)),
    "hinge: a 0 label that stays 0 (mixed)": (
        _margin_inputs("squared_hinge"), lambda x: x.notes["labels"] == "mixed"
        and (x.y_true == 0).any()),
    "categorical hinge: a tie for the maximum": (
        _margin_inputs("categorical_hinge"),
        lambda x: x.y_pred.shape[-1] > 2 and any(
            np.sum(r == r.max()) > 1 for r in np.where(x.y_true == 1, 0, x.y_pred)
            .reshape(-1, x.y_pred.shape[-1]))),
    "categorical hinge: on the margin": (
        _margin_inputs("categorical_hinge"), lambda x: x.regime == "margin"
        and x.notes["labels"] == "one_hot"),
    "cosine: a zero y_pred row": (
        _margin_inputs("cosine_similarity"), lambda x: (x.y_pred == 0).all(axis=-1).any()),
    "cosine: a norm below the 1e-7 floor": (
        _margin_inputs("cosine_similarity"),
        lambda x: (((x.y_pred.astype(np.float64) ** 2).sum(-1) ** 0.5 < 1e-7)
                   & (x.y_pred != 0).any(-1)).any()),
    "cosine: antiparallel rows": (
        _margin_inputs("cosine_similarity"), lambda x: x.regime == "parallel"
        and (np.sum(x.y_true * x.y_pred, -1) < 0).any()),
    "cosine: class axis 0": (
        _margin_inputs("cosine_similarity", axis=0), lambda x: x.regime == "zero"
        and (x.y_pred == 0).all(axis=0).any()),
}


@pytest.mark.parametrize("what", sorted(OCCURS_MARGIN))
def test_margin_regime_occurs(what: str):
    strategy, condition = OCCURS_MARGIN[what]
    find(strategy, condition, settings=FIND)


@pytest.mark.parametrize("name", ["hinge", "categorical_hinge", "cosine_similarity"])
def test_every_margin_regime_is_drawn(name: str):
    seen: set[str] = set()

    def collect(x):
        seen.add(x.regime)
        return False

    with pytest.raises(Exception, match="No examples"):
        find(lst.loss_inputs(name), collect, settings=settings(FIND, max_examples=150))
    assert seen == set(MARGIN_KINDS[lst.LABEL_KIND[name]])


@pytest.mark.parametrize(("regime", "lead"), [("gap20", 20), ("gap100", 100)])
@settings(FAST, phases=[Phase.generate])
@given(data=st.data())
def test_gap_logits_lead_as_documented(regime: str, lead: int, data: st.DataObject):
    shape = data.draw(lst.batch_shapes(max_extra_dims=1))
    yp = data.draw(lst.logits(shape, regime))
    assert yp.dtype == np.float32 and (_row_gaps(yp) > lead).all(), _row_gaps(yp).min()


@pytest.mark.parametrize("regime", lst.REGIMES)
@pytest.mark.parametrize("normalised", [True, False])
@FAST
@given(data=st.data())
def test_probabilities_regimes(regime: str, normalised: bool, data: st.DataObject):
    shape = data.draw(lst.batch_shapes())
    p = data.draw(lst.probabilities(shape, regime, normalised=normalised))
    assert p.dtype == np.float32 and p.shape == shape and np.isfinite(p).all()
    sums = p.reshape(-1, shape[-1]).sum(axis=-1, dtype=np.float64)
    assert (p >= 0).all() and (sums > 0).all()
    if normalised and regime != "unnormalised":
        assert np.allclose(sums, 1.0, atol=1e-5 * shape[-1]) and (p <= 1).all()
    elif regime != "unnormalised":
        assert (p <= 1).all()


# ------------------------------------------------------------------ regimes occur

def _probs(name: str = "categorical_crossentropy", **params):
    return lst.loss_inputs(name, **params)


OCCURS = {
    "exact 0 and 1 probabilities": (
        _probs(), lambda x: (x.y_pred == 0).any() and (x.y_pred == 1).any()),
    "binary exact 0 and 1 in one batch": (
        _probs("binary_crossentropy"), lambda x: (x.y_pred == 0).any() and (x.y_pred == 1).any()),
    "probabilities below 1e-7": (
        _probs(), lambda x: ((x.y_pred > 0) & (x.y_pred < 1e-7)).any()),
    "binary probabilities below 1e-7": (
        _probs("binary_crossentropy"), lambda x: ((x.y_pred > 0) & (x.y_pred < 1e-7)).any()),
    "probabilities at the clip edge 1 - 1e-7": (
        _probs("binary_crossentropy"), lambda x: (x.y_pred == np.float32(1 - 1e-7)).any()),
    "batch size 1": (_probs(), lambda x: x.y_pred.shape[0] == 1),
    "batch size 1 rank 3": (_probs(), lambda x: x.y_pred.shape[0] == 1 and x.y_pred.ndim == 3),
    "rank 3": (_probs(), lambda x: x.y_pred.ndim == 3),
    "batch size > 8": (_probs(), lambda x: x.y_pred.shape[0] > 8),
    "unnormalised rows (sum < 0.5)": (
        _probs(), lambda x: (x.y_pred.sum(axis=-1, dtype=np.float64) < 0.5).any()),
    "unnormalised rows (sum > 2)": (
        _probs(), lambda x: (x.y_pred.sum(axis=-1, dtype=np.float64) > 2).any()),
    "soft labels": (_probs(), lambda x: x.notes["labels"] == "soft"),
    "logit gap beyond 20": (
        _probs(from_logits=True), lambda x: (_row_gaps(x.y_pred) > 20).any()),
    "logit gap beyond 100": (
        _probs(from_logits=True), lambda x: (_row_gaps(x.y_pred) > 100).any()),
    "every row's logit gap beyond 20": (
        _probs(from_logits=True), lambda x: (_row_gaps(x.y_pred) > 20).all()
        and x.rows > 1),
    "logits beyond +-500": (
        _probs(from_logits=True), lambda x: (np.abs(x.y_pred) > 500).any()),
    "focal logit gap beyond 100": (
        _probs("focal_loss"), lambda x: (_row_gaps(x.y_pred) > 100).any()),
    "zero sample weight": (
        _probs(with_sample_weight=True), lambda x: (x.sample_weight == 0).any()),
    "ignored sparse labels": (
        _probs("sparse_categorical_crossentropy", ignore_class=-1),
        lambda x: (x.y_true == -1).any() and (x.y_true >= 0).any()),
    "sparse label at the last class": (
        _probs("sparse_categorical_crossentropy"),
        lambda x: (x.y_true == x.y_pred.shape[-1] - 1).any()),
}


def _error(x) -> np.ndarray:
    return np.abs(x.y_pred.astype(np.float64) - x.y_true.astype(np.float64))


#: The regression losses' hard parts (lossverify.reference.regression).
OCCURS.update({
    "MAE exact ties y_pred == y_true": (
        _probs("mean_absolute_error"), lambda x: (x.y_pred == x.y_true).any()),
    "MAE near ties (1 to 3 ulps) on |y| > 100": (
        _probs("mean_absolute_error"),
        lambda x: ((_error(x) > 0) & (_error(x) <= 3 * 2.0**-23 * np.abs(x.y_true))
                   & (np.abs(x.y_true) > 100)).any()),
    "MAPE target exactly 0": (
        _probs("mean_absolute_percentage_error"), lambda x: (x.y_true == 0).any()),
    "MAPE target below eps, not 0": (
        _probs("mean_absolute_percentage_error"),
        lambda x: ((x.y_true != 0) & (np.abs(x.y_true) < np.float32(1e-7))).any()),
    "MSLE y_pred exactly eps": (
        _probs("mean_squared_logarithmic_error"),
        lambda x: (x.y_pred == np.float32(1e-7)).any()),
    "MSLE y_pred exactly -1": (
        _probs("mean_squared_logarithmic_error"), lambda x: (x.y_pred == -1).any()),
    "MSLE y_pred below -1e2": (
        _probs("mean_squared_logarithmic_error"), lambda x: (x.y_pred < -1e2).any()),
    "MSLE both in (0, 1e-4]": (
        _probs("mean_squared_logarithmic_error"),
        lambda x: ((x.y_pred > 0) & (x.y_pred <= 1e-4) & (x.y_true > 0)
                   & (x.y_true <= 1e-4)).any()),
    "Huber |y_pred - y_true| == delta exactly (delta = 0.1)": (
        _probs("huber", delta=0.1), lambda x: (_error(x) == float(np.float32(0.1))).any()),
    "Huber |y_pred - y_true| one ulp beyond delta": (
        _probs("huber"), lambda x: ((_error(x) > 1) & (_error(x) < 1 + 2.0**-20)).any()),
    "log-cosh |y_pred - y_true| beyond 89 (cosh overflows float32)": (
        _probs("log_cosh"), lambda x: (_error(x) > 89).any()),
    "log-cosh |y_pred - y_true| below 1e-3 on |y| > 100": (
        _probs("log_cosh"),
        lambda x: ((_error(x) > 0) & (_error(x) < 1e-3) & (np.abs(x.y_true) > 100)).any()),
})


@pytest.mark.parametrize("what", sorted(OCCURS))
def test_regime_occurs(what: str):
    strategy, condition = OCCURS[what]
    find(strategy, condition, settings=FIND)  # raises NoSuchExample if never drawn


def test_every_regime_is_drawn():
    seen = {"prob": set(), "logit": set()}

    def collect(x):
        seen["logit" if x.regime in lst.LOGIT_REGIMES else "prob"].add(x.regime)
        return False

    for params in ({}, {"from_logits": True}):
        with pytest.raises(Exception, match="No examples"):
            find(lst.loss_inputs("categorical_crossentropy", **params), collect,
                 settings=settings(FIND, max_examples=120))
    assert seen == {"prob": set(lst.REGIMES), "logit": set(lst.LOGIT_REGIMES)}


# ------------------------------------------------------------------ probabilistic family

PROBABILISTIC = sorted(n for n, k in lst.LABEL_KIND.items() if k in PROBABILISTIC_KINDS)
_PROBABILISTIC_REGIMES = {"distributions": lst.DISTRIBUTION_REGIMES,
                          "counts": lst.COUNT_REGIMES,
                          "sparse_probabilities": lst.SPARSE_PROBABILITY_REGIMES}


@pytest.mark.parametrize("params", [{}, {"with_sample_weight": True, "rank": 3},
                                    {"rank": 2, "class_num": 3}],
                         ids=["default", "weighted-rank3", "rank2-3-classes"])
@pytest.mark.parametrize("name", PROBABILISTIC)
@FAST
@given(data=st.data())
def test_probabilistic_inputs_invariants(name: str, params: dict, data: st.DataObject):
    x = data.draw(lst.loss_inputs(name, **params))
    kind = lst.LABEL_KIND[name]
    yp, yt = x.y_pred, x.y_true
    assert x.regime in _PROBABILISTIC_REGIMES[kind]
    assert yp.dtype == np.float32 and np.isfinite(yp).all() and (yp >= 0).all()
    if kind == "distributions":  # KL: probability rows for both, y_pred rows never all 0
        assert yt.dtype == np.float32 and yt.shape == yp.shape and (yt >= 0).all()
        assert (yp.reshape(-1, yp.shape[-1]).sum(axis=-1) > 0).all()
        if x.regime == "unnormalised":
            assert (yt <= 2).all() and (yp <= 3).all()
        elif x.regime == "at_one":  # 1 and its float32 neighbours on both sides
            assert (yt <= 1).all() and (yp <= np.nextafter(np.float32(1), np.float32(2))).all()
        else:
            assert (yt <= 1).all() and (yp <= 1).all()
        if x.regime in ("simplex", "peaked"):
            sums = yp.sum(axis=-1, dtype=np.float64)
            assert np.allclose(sums, 1.0, atol=1e-5 * yp.shape[-1]), sums
    elif kind == "counts":  # Poisson: non-negative counts (exact in float32) or rates
        assert yt.dtype == np.float32 and yt.shape == yp.shape and (yt >= 0).all()
        if x.regime != "rates":
            assert (yt == np.round(yt)).all() and (yt < 2**24).all()
    else:  # GCE: integer labels, probabilities in [0, 1]
        assert yt.dtype == np.int32 and yt.shape == yp.shape[:-1]
        assert ((yt >= 0) & (yt < yp.shape[-1])).all() and (yp <= 1).all()
        p_y = np.take_along_axis(yp, yt[..., None].astype(np.int64), axis=-1)[..., 0]
        if x.regime == "p_y_near_zero":
            assert (p_y <= 1e-7).all()
        if x.regime == "p_y_near_one":
            assert (p_y >= 0.999).all()
    if params.get("with_sample_weight"):
        assert x.sample_weight is not None and x.sample_weight.shape == yp.shape[:-1]


def _p_y(x):
    return np.take_along_axis(x.y_pred, x.y_true[..., None].astype(np.int64), axis=-1)[..., 0]


_EPS32 = np.float32(1e-7)
PROBABILISTIC_OCCURS = {
    "KL zero labels": (
        lst.loss_inputs("kl_divergence"), lambda x: (x.y_true == 0).any()),
    "KL y_pred exactly at float32 eps": (
        lst.loss_inputs("kl_divergence"), lambda x: (x.y_pred == _EPS32).any()),
    "KL y_pred one float32 ulp below eps": (
        lst.loss_inputs("kl_divergence"),
        lambda x: (x.y_pred == np.nextafter(_EPS32, np.float32(0))).any()),
    "KL y_pred exactly 0": (
        lst.loss_inputs("kl_divergence"), lambda x: (x.y_pred == 0).any()),
    "KL y_pred 1 - 2**-24 and above 1": (
        lst.loss_inputs("kl_divergence"),
        lambda x: (x.y_pred == np.nextafter(np.float32(1), np.float32(0))).any()
        and (x.y_pred > 1).any()),
    "KL y_true above 1": (lst.loss_inputs("kl_divergence"), lambda x: (x.y_true > 1).any()),
    "Poisson prediction exactly 0 with a positive count": (
        lst.loss_inputs("poisson"), lambda x: ((x.y_pred == 0) & (x.y_true > 0)).any()),
    "Poisson prediction between 0 and eps": (
        lst.loss_inputs("poisson"), lambda x: ((x.y_pred > 0) & (x.y_pred < 1e-7)).any()),
    "Poisson counts above 1e6": (lst.loss_inputs("poisson"), lambda x: (x.y_true > 1e6).any()),
    "Poisson non-integer rates": (
        lst.loss_inputs("poisson"), lambda x: (x.y_true != np.round(x.y_true)).any()),
    "GCE p_y exactly 0": (
        lst.loss_inputs("categorical_generalized_cross_entropy"), lambda x: (_p_y(x) == 0).any()),
    "GCE p_y a float32 subnormal": (
        lst.loss_inputs("categorical_generalized_cross_entropy"),
        lambda x: ((_p_y(x) > 0) & (_p_y(x) < np.finfo(np.float32).tiny)).any()),
    "GCE p_y between the smallest normal and 1e-20": (
        lst.loss_inputs("categorical_generalized_cross_entropy"),
        lambda x: ((_p_y(x) >= np.finfo(np.float32).tiny) & (_p_y(x) <= 1e-20)).any()),
    "GCE p_y exactly 1": (
        lst.loss_inputs("categorical_generalized_cross_entropy"), lambda x: (_p_y(x) == 1).any()),
}


@pytest.mark.parametrize("what", sorted(PROBABILISTIC_OCCURS))
def test_probabilistic_regime_occurs(what: str):
    strategy, condition = PROBABILISTIC_OCCURS[what]
    find(strategy, condition, settings=FIND)


@pytest.mark.parametrize("name", PROBABILISTIC)
def test_every_probabilistic_regime_is_drawn(name: str):
    seen: set[str] = set()

    def collect(x):
        seen.add(x.regime)
        return False

    with pytest.raises(Exception, match="No examples"):
        find(lst.loss_inputs(name), collect, settings=settings(FIND, max_examples=150))
    assert seen == set(_PROBABILISTIC_REGIMES[lst.LABEL_KIND[name]])


# ------------------------------------------------------------------ CTC


def _ctc_needed(row) -> int:
    labels = [int(c) for c in row if c]
    return len(labels) + sum(a == b for a, b in zip(labels, labels[1:], strict=False))


def _check_ctc_inputs(x, params: dict) -> None:
    """Label rows (int32, classes 1 .. C - 1, trailing padding, a multiple of 3 wide) that
    fit their frames, rank-3 float32 logits, losses below TensorFlow's cap."""
    from lossverify.reference.ctc import ctc

    yp, yt = x.y_pred, x.y_true
    assert x.regime in lst.CTC_REGIMES
    assert yp.ndim == 3 and yp.shape[1] == x.notes["time"]
    if params.get("rank") == 2:
        assert yp.shape[1] == (lst.CTC_LONG_TIME if x.regime == "long" else lst.CTC_TIME)
    assert yt.dtype == np.int32 and yt.ndim == 2 and yt.shape[0] == yp.shape[0]
    assert yt.shape[1] >= 3 and yt.shape[1] % 3 == 0
    assert ((yt >= 0) & (yt < yp.shape[-1])).all()
    for row in yt:
        nonzero = np.flatnonzero(row)
        assert (nonzero == np.arange(nonzero.size)).all(), f"a 0 before a label: {row}"
        assert _ctc_needed(row) <= yp.shape[1]
    if x.regime == "blank_only":
        assert (yt == 0).all()
    values = ctc(yt, yp)
    assert np.isfinite(values).all() and (values < 600).all(), values


def _ctc_inputs(**params):
    return lst.loss_inputs("ctc", **params)


def _peak_gap(x) -> float:
    rows = np.sort(x.y_pred.reshape(-1, x.y_pred.shape[-1]).astype(np.float64), axis=-1)
    return float((rows[:, -1] - rows[:, -2]).min()) if rows.shape[-1] > 1 else 0.0


def _has_adjacent_repeat(x) -> bool:
    return any(any(a == b for a, b in zip(r[r > 0], r[r > 0][1:], strict=False))
               for r in x.y_true)


OCCURS_CTC = {
    "a label row and a blank-only row in one batch": (
        _ctc_inputs(), lambda x: (x.y_true == 0).all(1).any() and (x.y_true != 0).any()),
    "equal neighbouring labels (a blank needed between)": (
        _ctc_inputs(), _has_adjacent_repeat),
    "labels + repeats == frames (one alignment), with a repeat": (
        _ctc_inputs(), lambda x: x.regime == "single_alignment" and _has_adjacent_repeat(x)
        and any(_ctc_needed(r) == x.y_pred.shape[1] for r in x.y_true)),
    "every frame peaked by more than 20": (_ctc_inputs(), lambda x: _peak_gap(x) > 20),
    "a loss above 100": (
        _ctc_inputs(), lambda x: x.regime == "large_loss" and (_ctc_loss(x) > 100).any()),
    "one frame": (_ctc_inputs(), lambda x: x.y_pred.shape[1] == 1),
    "48 frames and a label of 8 or more": (
        _ctc_inputs(), lambda x: x.y_pred.shape[1] == 48 and ((x.y_true > 0).sum(1) >= 8).any()),
}


def _ctc_loss(x):
    from lossverify.reference.ctc import ctc

    return ctc(x.y_true, x.y_pred)


@pytest.mark.parametrize("what", sorted(OCCURS_CTC))
def test_ctc_regime_occurs(what: str):
    strategy, condition = OCCURS_CTC[what]
    find(strategy, condition, settings=FIND)


def test_every_ctc_regime_is_drawn():
    seen: set[str] = set()

    def collect(x):
        seen.add(x.regime)
        return False

    with pytest.raises(Exception, match="No examples"):
        find(_ctc_inputs(), collect, settings=settings(FIND, max_examples=150))
    assert seen == set(lst.CTC_REGIMES)


# ------------------------------------------------------------------ bad arguments

@pytest.mark.parametrize(("make", "argument"), [
    (lambda: lst.probabilities((2, 3), regime="nope"), "regime"),
    (lambda: lst.logits((2, 3), regime="nope"), "regime"),
    (lambda: lst.categorical_labels((2, 3), kind="nope"), "kind"),
    (lambda: find(lst.loss_inputs("nope"), lambda x: True), "reference"),
])
def test_bad_arguments_name_the_argument(make, argument: str):
    with pytest.raises(ValueError, match=f"^{argument}: .*'nope'"):
        make()


# ------------------------------------------------------------------ without TensorFlow

NO_TF_SCRIPT = textwrap.dedent('''
    import sys
    for blocked in ("tensorflow", "keras", "torch", "jax"):
        sys.modules[blocked] = None  # any import of these now raises ImportError

    import numpy as np
    from hypothesis import Phase, find, given, settings

    import lossverify.reference as R
    from lossverify import strategies as lst

    quick = settings(max_examples=300, database=None, deadline=None, phases=[Phase.generate])
    for name, kind in sorted(lst.LABEL_KIND.items()):
        params = {"class_num": 4} if kind == "sparse_logits" else {}
        x = find(lst.loss_inputs(name, **params), lambda x: x.rows > 1, settings=quick)
        value, grad = R.value_and_grad(name, x.y_true, x.y_pred, **params)
        shape = lst.KINDS[kind].loss_shape(x.y_pred.shape, None) \
            if lst.KINDS[kind].loss_shape is not None else x.y_pred.shape[:-1]
        assert value.shape == shape and np.isfinite(value).all(), name
        assert grad.shape == x.y_pred.shape, name
        if kind in ("binary", "categorical", "sparse"):
            z = find(lst.loss_inputs(name, from_logits=True), lambda x: True, settings=quick)
            value = R.evaluate(name, z.y_true, z.y_pred, from_logits=True).value
            assert np.isfinite(value).all(), name

    @settings(max_examples=10, database=None, deadline=None)
    @given(lst.loss_inputs("categorical_crossentropy", from_logits=True))
    def test_mine(x):  # what a PyTorch or JAX suite would write
        expected = R.categorical_crossentropy(x.y_true, x.y_pred, from_logits=True)
        assert expected.shape == x.y_pred.shape[:-1] and (expected >= 0).all()

    test_mine()
    assert all(sys.modules[m] is None for m in ("tensorflow", "keras", "torch", "jax"))
    print("ok without tensorflow")
''')


def test_strategies_and_reference_work_without_tensorflow():
    proc = subprocess.run([sys.executable, "-c", NO_TF_SCRIPT], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "ok without tensorflow" in proc.stdout
