"""The conformance matrix across frameworks (``lossverify verify --frameworks``): its rows
come from the records' counterparts, its conventions are parameters that a row needs
(without them a correct implementation fails) and that a wrong implementation cannot
hide behind, and the deviations it reports belong to the implementations that have them.

The first part needs NumPy only (it runs in the default ``tests`` session in well under a
second); the framework parts skip without torch, torchvision or JAX/optax and run in
``nox -s frameworks``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lossverify import conformance as CF
from lossverify import deviations as D
from lossverify import specs as S
from lossverify.frameworks import ROOTS
from lossverify.inputs import LossInputs
from lossverify.record import Counterpart

REPO = Path(__file__).resolve().parents[1]
MATRIX = ("torch", "jax", "keras-jax", "keras-torch")


def _args(**kw):
    base = {"only": [], "thorough": False, "max_examples": 40, "invariant_examples": 0,
            "frameworks": None}
    base.update(kw)
    return argparse.Namespace(**base)


# ------------------------------------------------------------------- the plan (NumPy)


def test_every_counterpart_is_a_row_at_settings_its_reference_accepts():
    rows = {(r.spec, r.label): r for fw in MATRIX for r in S.matrix_rows(fw)}
    for spec in S.SPECS.values():
        for c in spec.counterparts:
            row = rows[(spec.name, c.label)]
            assert row.framework == c.framework and row.settings, c.label
            for params in row.settings:
                spec.check_params(dict(params))  # a setting the reference accepts
                assert c.when(dict(params)) or dict(params) in map(dict, c.settings)
            # the target belongs to the framework it is run in
            assert ROOTS[c.package] == c.framework, c.target
    labels = [c.label for spec in S.SPECS.values() for c in spec.counterparts]
    assert len(labels) == len(set(labels)), "a counterpart label names one implementation"


def test_keras_backend_rows_are_the_records_keras_functions():
    for fw in ("keras-jax", "keras-torch"):
        rows = list(S.matrix_rows(fw))
        expected = [(spec.name, i.label) for spec in S.SPECS.values()
                    for i in spec.implementations if i.owner == "keras" and i.form == "function"]
        assert [(r.spec, r.label) for r in rows] == expected


def test_a_counterpart_declaring_a_convention_names_it():
    for spec in S.SPECS.values():
        for c in spec.counterparts:
            for params in map(dict, (*spec.default_grid, *c.settings)):
                out = c.output_for(params)
                if out.get("scale", 1.0) != 1.0:
                    assert "scale" in c.convention, c.label
                if out.get("per_element"):
                    assert "per element" in c.convention, c.label
                if c.loss_params(params).get("reduction") == "none":
                    assert "reduction='none'" in c.convention, c.label
            if c.domain:
                assert "compared on" in c.convention, c.label


def test_the_default_run_is_unchanged_and_frameworks_select_matrix_rows(monkeypatch):
    monkeypatch.setattr(CF, "_installed", lambda package: True)
    default = CF.plan(_args(), ["float32"])
    assert default and all(j.framework == "tensorflow" for j in default)
    assert CF.plan(_args(frameworks=["tensorflow"]), ["float32"]) == default
    torch_only = CF.plan(_args(frameworks=["torch"]), ["float32", "float64"])
    assert torch_only and {j.framework for j in torch_only} == {"torch"}
    assert {j.dtype for j in torch_only} == {"float32", "float64"}
    # every job names its row, and no TensorFlow implementation is among them
    for job in torch_only:
        row = CF.matrix_row(job)
        assert row.counterpart is not None and row.counterpart.framework == "torch"


def test_rows_whose_package_is_missing_are_named_and_left_out(monkeypatch):
    monkeypatch.setattr(CF, "_installed", lambda package: package != "torchvision")
    args = _args(frameworks=["torch"], only=["binary_focal_crossentropy"])
    assert CF.missing_packages(args) == [("torchvision.ops.sigmoid_focal_loss",
                                          "torchvision")]
    assert CF.plan(args, ["float32"]) == []


def test_matrix_jobs_share_no_process_with_tensorflow_or_another_backend(monkeypatch):
    monkeypatch.setattr(CF, "_installed", lambda package: True)
    kinds = {fw: CF._process_kind(fw) for fw in S.MATRIX_FRAMEWORKS}
    assert kinds["tensorflow"] == "tensorflow"
    assert kinds["torch"] == kinds["jax"] == "frameworks"
    assert len({kinds["keras-jax"], kinds["keras-torch"], "frameworks", "tensorflow"}) == 4
    jobs = CF.plan(_args(frameworks=list(MATRIX), only=["mean_squared_error"]), ["float32"])
    for unit in CF.units(jobs):
        assert len({jobs[i].framework for i in unit}) == 1


@pytest.mark.parametrize(("argv", "message"), [
    (["--frameworks", "pytorch"], "--frameworks: expected a comma-separated subset of "
                                  "tensorflow,torch,jax,keras-jax,keras-torch"),
    (["--frameworks", "torch", "--loss", "m:f", "--reference", "huber"],
     "--frameworks: applies to the conformance run"),
])
def test_bad_frameworks_are_usage_errors(argv, message):
    code = ("import sys; from lossverify.cli import main; code = main(sys.argv[1:]); "
            "assert 'tensorflow' not in sys.modules, 'TensorFlow was imported'; "
            "sys.exit(code)")
    proc = subprocess.run([sys.executable, "-c", code, "verify", *argv],
                          env=dict(os.environ, PYTHONPATH=str(REPO)), capture_output=True,
                          text=True, timeout=120)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert lines[0].startswith("lossverify verify: error: ") and message in lines[0]


# ------------------------------------------------------- the deviations' preconditions


def _x(y_true, y_pred, dtype=np.float32):
    return LossInputs(np.asarray(y_true, dtype), np.asarray(y_pred, dtype))


def test_torchvision_nan_deviation_is_scoped_to_saturated_sigmoids_and_gamma_below_one():
    dev = D.TORCHVISION_FOCAL_NAN_GRAD
    assert dev.implementations == ("torchvision.ops.sigmoid_focal_loss",)
    assert dev.applies({"gamma": 0.5}) and not dev.applies({"gamma": 0.0})
    assert not dev.applies({"gamma": 1.0})
    params = {"gamma": 0.5, "from_logits": True}
    assert dev.at(_x([[1.0, 1.0, 0.0]], [[21.0, 5.0, -21.0]]), params).tolist() == \
        [[True, False, True]]
    # float64 saturates only beyond about 37: z = 21 is not where the symptom applies
    assert dev.at(_x([[1.0, 1.0]], [[21.0, 40.0]], np.float64), params).tolist() == \
        [[False, True]]


def test_torchvision_cancellation_deviation_marks_only_inexact_one_minus_pt():
    at = D.TORCHVISION_FOCAL_CANCELLATION.at
    marked = at(_x([[0.0, 0.0, 0.0, 1.0, 1.0]], [[-7.0, -15.0, 0.5, 7.0, -7.0]]), {})
    # y = 0, z << 0 and y = 1, z >> 0 cancel; 1 - p_t near 1/2 or near 1 does not
    assert marked.tolist() == [[True, True, False, True, False]]
    # in float64 the same cancellation, at float64's scale: 1 - p_t below about 1/16
    assert at(_x([[0.0, 0.0]], [[-7.0, -2.0]], np.float64), {}).tolist() == [[True, False]]


_KERAS_BACKENDS = ("jax", "torch")


def test_keras_backend_deviations_belong_to_keras_on_jax_and_torch_only():
    """Shown on Keras's JAX and PyTorch backends (reproducers in
    tests/test_keras_backends_verify.py): they excuse neither TensorFlow nor a torch or
    JAX loss of the user's."""
    for dev in (D.KERAS_CLIP_TIE_GRADIENT, D.KERAS_SCCE_NORMALISES_FIRST,
                D.KERAS_BFCE_LOGITS_ROUNDED_SIGMOID, D.KERAS_NORMALIZE_RSQRT_GRAD):
        assert dev.frameworks == _KERAS_BACKENDS, dev.id
        assert dev.implementations and all(i.startswith("keras.losses.")
                                           for i in dev.implementations), dev.id


def test_clip_tie_deviation_marks_only_exact_ties_of_probabilities():
    dev = D.KERAS_CLIP_TIE_GRADIENT
    assert dev.checks == ("gradient", "graph")  # the value is the same on every backend
    assert dev.applies({}) and not dev.applies({"from_logits": True})
    eps = float(np.float32(1e-7))
    marked = dev.at(_x([[0.0] * 5], [[eps, 1 - 1e-7, 2e-7, 0.0, 0.5]]), {})
    assert marked.tolist() == [[True, True, False, False, False]]


def test_sparse_normalise_first_deviation_marks_rows_where_a_clip_acts():
    dev = D.KERAS_SCCE_NORMALISES_FIRST
    assert dev.applies({}) and not dev.applies({"from_logits": True})
    at = dev.at
    # unnormalised beyond 1 - 1e-7; a zero; a 1; rows inside [eps, 1 - eps] either way,
    # normalised or not (there both orders are the same function)
    assert at(_x([0], [[1.5, 3.0]]), {}).tolist() == [[True, True]]
    rows = at(_x([0, 1, 2, 0], [[0.03, 0.97, 0.0], [0.2, 0.3, 0.5], [0.4, 0.6, 1.0],
                                [0.4, 0.6, 0.9]]), {})
    assert rows.any(axis=-1).tolist() == [True, False, True, False]


def test_rounded_sigmoid_deviation_marks_clipped_and_cancelled_terms():
    dev = D.KERAS_BFCE_LOGITS_ROUNDED_SIGMOID
    assert dev.applies({"from_logits": True}) and not dev.applies({})
    params = {"from_logits": True}
    marked = dev.at(_x([[0.0, 0.0, 0.0, 1.0, 1.0, 1.0]], [[21.0, 10.0, 0.5, -21.0, -10.0,
                                                             3.0]]), params)
    # y = 0: clipped (21) and cancelled (10), not near 0; y = 1: clipped below eps only
    assert marked.tolist() == [[True, True, False, True, False, False]]
    # smoothed labels weigh both terms
    smooth = dev.at(_x([[1.0]], [[10.0]]), {**params, "label_smoothing": 0.1})
    assert smooth.tolist() == [[True]]


def test_normalize_rsqrt_deviation_is_the_xla_ones_precondition_on_other_checks():
    dev = D.KERAS_NORMALIZE_RSQRT_GRAD
    assert dev.checks == ("gradient", "graph") and dev.at is D.XLA_RSQRT_GRAD.at
    marked = dev.at(_x([[1.0, 2.0]] * 3, [[0.0, 0.0], [1e-14, 0.0], [1e-12, 0.0]]), {})
    assert marked.any(axis=-1).tolist() == [True, True, False]


# ------------------------------------------------------- README (NumPy: the static cells)


def _readme_matrix() -> list[list[str]]:
    text = (REPO / "README.md").read_text()
    start = text.index("<!-- matrix:begin -->")
    end = text.index("<!-- matrix:end -->")
    lines = [ln for ln in text[start:end].splitlines() if ln.startswith("| `")]
    return [[cell.strip() for cell in ln.strip("|").split("|")] for ln in lines]


def test_readme_matrix_rows_are_the_records_rows():
    """The README's matrix is pasted from a run (``--markdown``): its rows are those the
    records derive, with the records' conventions (the versions and verdicts come from
    the run that made it)."""
    rows = _readme_matrix()
    expected = [(f"`{r.spec}`", f"`{r.label}`", r.convention or "-")
                for fw in MATRIX for r in S.matrix_rows(fw)]
    assert sorted((r[0], r[1], r[3]) for r in rows) == sorted(expected), \
        "README's matrix is stale: paste the matrix table of `lossverify verify --frameworks " \
        "torch,jax,keras-jax,keras-torch --markdown PATH`"
    for row in rows:
        assert re.match(r"(torch|jax|keras|torchvision|optax) \d", row[2]), row


# ---------------------------------------------------- PyTorch rows (skipped without it)


def _row(spec: str, label: str, **changes) -> S.MatrixRow:
    row = next(r for fw in ("torch", "jax") for r in S.matrix_rows(fw, [spec])
               if r.label == label)
    if changes:
        import dataclasses

        c = dataclasses.replace(row.counterpart, **changes)
        row = dataclasses.replace(row, counterpart=c, label=c.label)
    return row


def _verify(row, params, **kw):
    kw.setdefault("max_examples", 10)
    kw.setdefault("checks", ("value", "gradient"))
    return CF.verify_row(row, params, **kw)


def _wrong_bce_clamp(input, target, reduction="none"):  # noqa: A002  (torch's names)
    import torch

    log_p = torch.clamp(torch.log(input), min=-10.0)  # torch clamps at -100
    log_q = torch.clamp(torch.log1p(-input), min=-10.0)
    return -(target * log_p + (1 - target) * log_q)


@pytest.fixture
def torch_f():
    torch = pytest.importorskip("torch")
    os.environ.setdefault("LOSSVERIFY_TORCH_COMPILE", "aot_eager")
    return torch.nn.functional


def test_torch_bce_passes_with_its_convention_and_a_wrong_clamp_fails(torch_f, monkeypatch):
    row = _row("binary_crossentropy", "torch.nn.functional.binary_cross_entropy")
    report = _verify(row, {})
    assert report.ok, str(report)
    assert report.row["version"].startswith("torch ") and "clamps each log at -100" in \
        report.row["convention"]
    # the convention is needed: torch's clamp at -100 is not Keras's clip (y=1, p=0: 100)
    import torch

    assert float(torch_f.binary_cross_entropy(torch.zeros(1), torch.ones(1))) == 100.0
    unconstrained = _verify(_row("binary_crossentropy",
                                 "torch.nn.functional.binary_cross_entropy", domain={}), {})
    assert not unconstrained.ok and unconstrained.checks["value"].failures
    # a wrong clamp fails the row, convention and all
    monkeypatch.setattr(sys.modules[__name__], "_wrong_bce_clamp", _wrong_bce_clamp)
    wrong = _row("binary_crossentropy", "torch.nn.functional.binary_cross_entropy",
                 target=f"{__name__}:_wrong_bce_clamp")
    report = _verify(wrong, {})
    assert not report.ok and report.checks["value"].failures, str(report)


def test_smooth_l1_needs_its_scale(torch_f):
    row = _row("huber", "torch.nn.functional.smooth_l1_loss")
    assert _verify(row, {"delta": 0.1}).ok
    unscaled = _row("huber", "torch.nn.functional.smooth_l1_loss",
                    output={"per_element": "mean"})
    report = _verify(unscaled, {"delta": 0.1})
    assert not report.ok and report.checks["value"].failures


def test_torch_cross_entropy_needs_reduction_none(torch_f):
    row = _row("sparse_categorical_crossentropy",
               "torch.nn.functional.cross_entropy (class indices)")
    assert _verify(row, {"from_logits": True}).ok
    mean = _row("sparse_categorical_crossentropy",
                "torch.nn.functional.cross_entropy (class indices)",
                loss_params=lambda p: {"ignore_index": -100})
    report = _verify(mean, {"from_logits": True})
    assert not report.ok and "reduction" in report.checks["value"].message


def test_torch_cosine_gradient_below_eps_reproduces(torch_f):
    import torch

    x = torch.tensor([[3e-8, 4e-8]], requires_grad=True)
    value = torch_f.cosine_similarity(x, torch.tensor([[1.0, 0.0]]), eps=1e-7)
    value.sum().backward()
    assert value.item() == pytest.approx(0.3, rel=1e-6)  # 3e-8 / 1e-7: the documented floor
    assert x.grad.numpy() == pytest.approx(np.array([[8.2e6, -2.4e6]]), rel=1e-6)  # not [1e7, 0]
    at = D.TORCH_COSINE_CLAMPED_GRAD.at
    assert at(_x([[1.0, 0.0], [1.0, 0.0]], [[3e-8, 4e-8], [3e-7, 4e-7]]), {}).tolist() == \
        [[True, True], [False, False]]


# ------------------------------------------------ torchvision (skipped without it)


@pytest.fixture
def focal():
    pytest.importorskip("torch")
    try:
        from torchvision.ops import sigmoid_focal_loss
    except (ImportError, RuntimeError) as exc:  # PyPI's torchvision beside another torch
        pytest.skip(f"torchvision.ops does not import here: {exc}")
    os.environ.setdefault("LOSSVERIFY_TORCH_COMPILE", "aot_eager")
    return sigmoid_focal_loss


def test_torchvision_focal_nan_gradient_reproduces(focal):
    import torch

    z = torch.tensor([[21.0]], requires_grad=True)
    focal(z, torch.tensor([[1.0]]), gamma=0.5, reduction="none").sum().backward()
    assert torch.isnan(z.grad).all()  # exact: -7.8e-15
    z64 = torch.tensor([[21.0]], dtype=torch.float64, requires_grad=True)
    focal(z64, torch.tensor([[1.0]], dtype=torch.float64), gamma=0.5,
          reduction="none").sum().backward()
    assert z64.grad.item() == pytest.approx(-7.83e-15, rel=1e-2)


def test_torchvision_focal_cancellation_reproduces(focal):
    import torch

    z = torch.tensor([-7.0, -15.0], requires_grad=True)
    focal(z, torch.zeros(2), alpha=-1, gamma=0.5, reduction="none").sum().backward()
    zz = np.array([-7.0, -15.0])
    p = 1 / (1 + np.exp(-zz))
    exact = p * p**0.5 + np.log1p(np.exp(zz)) * 0.5 * p**-0.5 * p * (1 - p)
    rel = np.abs(z.grad.numpy() / exact - 1)
    assert rel[0] > 5e-5 and rel[1] > 0.2, rel  # float32 keeps about 6e-8 relative


def test_torchvision_focal_row_reports_its_deviations_and_a_copy_fails(focal):
    row = _row("binary_focal_crossentropy", "torchvision.ops.sigmoid_focal_loss")
    params = {"from_logits": True, "gamma": 0.5}
    report = _verify(row, params, max_examples=20)
    assert report.ok, str(report)
    seen = {d for c in report.checks.values() for d in c.deviations}
    assert "torchvision-focal-nan-grad" in seen, str(report)
    # the same function not named as torchvision's gets no deviation: it fails, naming it
    import lossverify

    def copy(inputs, targets, gamma=0.5, alpha=-1, reduction="none"):
        return focal(inputs, targets, gamma=gamma, alpha=alpha, reduction=reduction)

    mine = lossverify.verify(copy, "binary_focal_crossentropy", framework="torch",
                             output={"per_element": "mean"}, max_examples=20,
                             checks=("value", "gradient"), **params)
    assert not mine.ok and "resembles the known upstream deviation" in \
        mine.checks["gradient"].message
    strict = _verify(row, params, max_examples=20, strict=True)
    assert not strict.ok


# ------------------------------------------------------- JAX rows (skipped without it)


def test_optax_l2_needs_its_half_and_a_wrong_one_fails():
    pytest.importorskip("jax")
    pytest.importorskip("optax")
    row = _row("mean_squared_error", "optax.l2_loss")
    report = _verify(row, {})
    assert report.ok, str(report)
    assert report.row["version"].startswith("optax ") and "jax " in report.row["version"]
    without = _row("mean_squared_error", "optax.l2_loss", output={"per_element": "mean"})
    report = _verify(without, {})
    assert not report.ok and report.checks["value"].failures


#: tf-ctc-reads-label-prefix's input: the label [2] behind a mask 0
_CTC_Z = np.array([[[.5, -.2, .1], [0., .3, -.4], [.2, .2, .2], [-.1, .4, 0.]]], np.float32)


def _ctc_ref(y_true, z):
    from lossverify import reference

    return reference.evaluate("ctc", y_true, z.astype(np.float64))


def _whole_width_torch_ctc(ctc_loss):
    """Wrong: the label row's whole width as its length (its mask zeros read as blanks)."""
    import torch

    def loss(y_true, y_pred):
        labels = torch.as_tensor(y_true).long()
        lengths = torch.full((labels.shape[0],), labels.shape[1], dtype=torch.long)
        log_probs = torch.nn.functional.log_softmax(y_pred, dim=-1).transpose(0, 1)
        frames = torch.full((labels.shape[0],), y_pred.shape[1], dtype=torch.long)
        return ctc_loss(log_probs, labels, frames, lengths, blank=0, reduction="none")

    return loss


@pytest.mark.parametrize("framework", ["torch", "jax"])
def test_ctc_adapters_read_keras_masks_wherever_they_stand(framework):
    """Keras's labels are the nonzero entries in order (0 is the mask): [[0, 2]] is the
    label [2], 2.30432 (TensorFlow reads the prefix: tf-ctc-reads-label-prefix)."""
    from lossverify.frameworks import adapters

    y_true = np.array([[0, 2], [2, 0]], np.int32)
    z = np.concatenate([_CTC_Z, _CTC_Z])
    if framework == "torch":
        torch = pytest.importorskip("torch")
        got = adapters.torch_ctc(torch.nn.functional.ctc_loss)(
            torch.as_tensor(y_true), torch.as_tensor(z)).numpy()
    else:
        pytest.importorskip("jax")
        optax = pytest.importorskip("optax")
        got = np.asarray(adapters.optax_ctc(optax.ctc_loss)(y_true, z))
    expected = _ctc_ref(np.array([[2], [2]], np.int32), z).value
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    assert abs(expected[0] - 2.30432) < 1e-5


def test_ctc_counterpart_rows_pass_and_a_wrong_label_length_fails(torch_f, monkeypatch):
    row = _row("ctc", "torch.nn.functional.ctc_loss")
    report = _verify(row, {}, max_examples=6)
    assert report.ok, str(report)
    assert report.row["version"].startswith("torch ") and "0 is the mask" in \
        report.row["convention"]
    monkeypatch.setattr(sys.modules[__name__], "_whole_width_torch_ctc",
                        _whole_width_torch_ctc)
    wrong = _row("ctc", "torch.nn.functional.ctc_loss",
                 adapter=f"{__name__}:_whole_width_torch_ctc")
    report = _verify(wrong, {}, max_examples=6)
    assert not report.ok and report.checks["value"].failures, str(report)


def test_optax_ctc_row_passes():
    pytest.importorskip("jax")
    pytest.importorskip("optax")
    report = _verify(_row("ctc", "optax.ctc_loss"), {}, max_examples=6)
    assert report.ok, str(report)
    assert report.row["version"].startswith("optax ")


# --------------------------------------- the CLI's matrix, no TensorFlow in any process


@pytest.mark.parametrize("framework", ["torch", "keras-jax"])
def test_the_cli_runs_a_matrix_row_without_tensorflow(framework, tmp_path):
    import importlib.util

    pytest.importorskip("torch" if framework == "torch" else "jax")
    if framework.startswith("keras") and importlib.util.find_spec("keras") is None:
        pytest.skip("keras is not installed")  # not imported here: its backend is the run's

    if importlib.util.find_spec("tensorflow") is not None:
        pytest.skip("TensorFlow is installed here: the frameworks session checks this")
    out = tmp_path / "m.json"
    env = dict(os.environ, PYTHONPATH=str(REPO), LOSSVERIFY_TORCH_COMPILE="aot_eager")
    env.pop("KERAS_BACKEND", None)  # the run sets it for its workers
    proc = subprocess.run(
        [sys.executable, "-m", "lossverify", "verify", "--frameworks", framework, "--only",
         "mean_absolute_error", "--max-examples", "4", "--min-rows", "0", "--json",
         str(out), "--no-progress"], env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    runs = json.loads(out.read_text())["runs"]
    assert runs and all(r["matrix"]["framework"] == framework for r in runs)
    label = "torch " if framework == "torch" else "(jax backend)"
    assert all(label in r["matrix"]["version"] for r in runs), runs
    assert "Traceback" not in proc.stderr
    assert "`mean_absolute_error`" in proc.stdout  # the matrix table


def test_counterpart_rejects_an_unknown_framework():
    with pytest.raises(ValueError, match="framework: expected 'torch' or 'jax'"):
        Counterpart("x", "mxnet", "m:f")
