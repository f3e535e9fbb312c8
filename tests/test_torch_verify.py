"""verify() on PyTorch losses: the framework detected from the callable, autograd
gradients, ``torch.compile`` as the graph mode, the class axis moved for rank > 2
cross-entropy; correct losses pass and deliberately wrong ones are rejected by the check
that names what is wrong. Skipped without PyTorch; ``nox -s frameworks`` installs it (no
TensorFlow there).

The graph mode compiles with ``aot_eager`` here (dynamo's tracing and AOTAutograd's
forward and backward graphs, run without code generation): inductor works on this CPU
but its C++ compile costs about a minute per graph on 2 busy cores (set
``LOSSVERIFY_TORCH_COMPILE=inductor`` to use it; ``test_inductor`` is marked slow)."""

from __future__ import annotations

import functools
import os
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

os.environ.setdefault("LOSSVERIFY_TORCH_COMPILE", "aot_eager")

import lossverify  # noqa: E402
from lossverify import frameworks  # noqa: E402

N = 12  # drawn batches per run: a few compiles each, under ~15 s on this machine


def _verify(loss, reference, **kw):
    kw.setdefault("max_examples", N)
    return lossverify.verify(loss, reference, **kw)


def _failed(report, check):
    """The check failed and every other check it names did not (the failure is named)."""
    return not report.ok and report.checks[check].failures > 0


# ------------------------------------------------------------------ detection, declarations


def test_the_framework_is_detected_from_the_callable():
    assert frameworks.detect(F.cross_entropy).framework == "torch"
    assert frameworks.detect(functools.partial(F.mse_loss, reduction="none")).framework == \
        "torch"
    assert frameworks.detect(torch.nn.CrossEntropyLoss(reduction="none")).framework == "torch"

    def mine(y_true, y_pred):  # a user's loss: the names its code uses say torch
        return F.mse_loss(y_pred, y_true, reduction="none").mean(-1)

    found = frameworks.detect(mine)
    assert found.framework == "torch" and not found.strong and "F" in found.where


def test_the_argument_order_follows_the_parameter_names():
    assert frameworks.resolve(F.cross_entropy).pred_first  # (input, target)
    module = frameworks.resolve(torch.nn.MSELoss(reduction="none"))
    assert module.pred_first and module.order_found == "its parameters (input, target)"

    def mine(y_true, y_pred):
        return F.mse_loss(y_pred, y_true, reduction="none").mean(-1)

    fw = frameworks.resolve(mine)
    assert not fw.pred_first and "y_true, y_pred" in fw.order_found
    fw = frameworks.resolve(mine, call=lossverify.Call(order="y_pred, y_true"))
    assert fw.pred_first and fw.order_found == "declared"


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"framework": "pytorch"}, "framework: expected None or one of"),
    ({"framework": "jax"}, "framework: 'jax' was named, but the loss comes from torch"),
    ({"call": {"layout": "NCHW"}}, "layout: expected one of"),
    ({"call": {"order": "a, b"}}, "order: expected None"),
    ({"call": {"side": 1}}, "call: unknown fields"),
    ({"checks": ("xla",)}, "checks: none of .*PyTorch has no XLA mode"),
])
def test_bad_framework_arguments_are_refused_naming_the_argument(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        lossverify.verify(F.cross_entropy, "sparse_categorical_crossentropy", from_logits=True,
                          loss_params={"reduction": "none"}, **kwargs)


# ---------------------------------------------------------------------- correct losses pass


def test_cross_entropy_with_class_indices_channels_first():
    report = _verify(F.cross_entropy, "sparse_categorical_crossentropy", from_logits=True,
                     loss_params={"reduction": "none"}, call={"layout": "channels_first"})
    assert report.ok, str(report)
    assert report.checks["graph"].examples == N and report.checks["graph"].verdict == "ok"
    assert report.checks["xla"].verdict == "not run"
    assert "PyTorch has no XLA mode" in report.checks["xla"].not_run_reason
    text = str(report)
    assert f"framework: torch {torch.__version__}" in text
    assert "torch.compile(backend='aot_eager', dynamic=True)" in text
    assert "called as loss(y_pred, y_true) (its parameters (input, target))" in text
    assert "xla not run: PyTorch has no XLA mode" in text
    data = report.to_dict()
    assert data["framework"] == f"torch {torch.__version__}"
    assert data["checks"]["xla"]["verdict"] == "not run"
    line = report.reproduce_line()
    assert "framework='torch'" in line and "call=lossverify.Call(layout='channels_first')" in line


def test_cross_entropy_without_the_layout_fails_on_rank_3_naming_the_shapes():
    """Classes last, PyTorch reads axis 1 as the classes: a failure, not a crash."""
    report = _verify(F.cross_entropy, "sparse_categorical_crossentropy", from_logits=True,
                     loss_params={"reduction": "none"}, checks=("value",))
    assert _failed(report, "value"), str(report)
    assert "Expected target size" in report.checks["value"].message


def test_binary_cross_entropy_with_logits_per_element():
    report = _verify(F.binary_cross_entropy_with_logits, "binary_crossentropy",
                     from_logits=True, loss_params={"reduction": "none"},
                     output={"per_element": "mean"})
    assert report.ok, str(report)


def test_mse_loss_per_element_float64():
    report = _verify(F.mse_loss, "mean_squared_error", loss_params={"reduction": "none"},
                     output=lossverify.Output(per_element="mean"), dtype="float64")
    assert report.ok, str(report)
    assert report.compute_dtype == "float64" and report.checks["graph"].rows > 0


def test_cross_entropy_module_with_probability_targets():
    report = _verify(torch.nn.CrossEntropyLoss, "categorical_crossentropy", from_logits=True,
                     loss_params={"reduction": "none"}, call={"layout": "channels_first"},
                     checks=("value", "gradient"))
    assert report.ok, str(report)


# ------------------------------------------------------------------ wrong losses are rejected


def test_a_sum_where_a_mean_belongs_fails_the_value_check():
    def mse_summed(y_true, y_pred):
        return F.mse_loss(y_pred, y_true, reduction="none").sum(-1)

    report = _verify(mse_summed, "mean_squared_error", checks=("value", "gradient"))
    assert _failed(report, "value"), str(report)


class _HalfGradientSoftplus(torch.autograd.Function):
    """softplus with a backward that is off by a factor of 0.9 where it matters."""

    @staticmethod
    def forward(ctx, z):
        ctx.save_for_backward(z)
        return F.softplus(z)

    @staticmethod
    def backward(ctx, grad):
        z, = ctx.saved_tensors
        return grad * torch.sigmoid(z) * 0.9


def test_a_wrong_backward_fails_the_gradient_check_only():
    def bce_logits(y_true, y_pred):
        # softplus(z) - y z: binary cross-entropy on logits, per element, averaged
        return (_HalfGradientSoftplus.apply(y_pred) - y_true * y_pred).mean(-1)

    report = _verify(bce_logits, "binary_crossentropy", from_logits=True,
                     checks=("value", "gradient"))
    assert report.checks["value"].ok, str(report)
    assert _failed(report, "gradient"), str(report)
    assert report.checks["gradient"].message.startswith("gradient ")


def test_a_result_that_changes_under_torch_compile_fails_the_graph_check_only():
    def mode_dependent(y_true, y_pred):
        value = F.mse_loss(y_pred, y_true, reduction="none").mean(-1)
        if torch.compiler.is_compiling():
            value = value * 1.001
        return value

    report = _verify(mode_dependent, "mean_squared_error")
    assert report.checks["value"].ok and report.checks["gradient"].ok, str(report)
    assert _failed(report, "graph"), str(report)
    assert "graph value differs from the reference" in report.checks["graph"].message


def test_float32_returned_for_float64_inputs_fails_the_value_check():
    def narrow(y_true, y_pred):
        return F.mse_loss(y_pred.float(), y_true.float(), reduction="none").mean(-1)

    report = _verify(narrow, "mean_squared_error", dtype="float64", checks=("value",))
    assert _failed(report, "value"), str(report)


def test_a_detached_result_is_not_differentiable():
    def detached(y_true, y_pred):
        return F.mse_loss(y_pred, y_true, reduction="none").mean(-1).detach()

    report = _verify(detached, "mean_squared_error", checks=("value", "gradient"))
    assert report.checks["value"].ok, str(report)
    assert _failed(report, "gradient")
    assert "not differentiable with respect to y_pred (autograd" in \
        report.checks["gradient"].message


def test_a_reduced_result_is_named_with_the_parameter_to_give():
    report = _verify(F.mse_loss, "mean_squared_error", checks=("value",))
    assert _failed(report, "value")
    assert "reduction='mean' reduces over the batch" in report.checks["value"].message
    assert "loss_params={'reduction': 'none'}" in report.checks["value"].message


def test_a_loss_that_writes_into_its_labels_is_caught():
    def in_place(y_true, y_pred):
        y_true.mul_(1.0).add_(0.0)
        y_true[..., 0] = 0.5
        return F.mse_loss(y_pred, y_true, reduction="none").mean(-1)

    report = _verify(in_place, "mean_squared_error", checks=("value",))
    assert _failed(report, "value")
    assert "mutated its input y_true in place" in report.checks["value"].message


# ------------------------------------------------------------------------- without TF/Keras


def test_a_torch_run_imports_neither_tensorflow_nor_keras():
    code = ("import sys, torch, lossverify; import torch.nn.functional as F; "
            "r = lossverify.verify(F.mse_loss, 'mean_squared_error', max_examples=3, "
            "checks=('value', 'gradient'), loss_params={'reduction': 'none'}, "
            "output={'per_element': 'mean'}); "
            "bad = {'tensorflow', 'keras'} & set(sys.modules); "
            "assert r.ok and not bad, (bad, str(r)); print(r.to_dict()['framework'])")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == f"torch {torch.__version__}"


@pytest.mark.slow
def test_inductor(monkeypatch):
    """torch.compile's default backend, where a C++ compiler is present (a minute or more
    of C++ compile per graph on this machine)."""
    backend, note = frameworks.torch_backend.compile_backend("inductor")
    if backend != "inductor":
        pytest.skip(f"inductor does not work here: {note}")
    monkeypatch.setenv("LOSSVERIFY_TORCH_COMPILE", "inductor")
    report = _verify(F.mse_loss, "mean_squared_error", loss_params={"reduction": "none"},
                     output={"per_element": "mean"}, max_examples=4)
    assert report.ok, str(report)
    assert "torch.compile(backend='inductor', dynamic=True)" in str(report)
