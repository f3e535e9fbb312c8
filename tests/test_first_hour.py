"""A user's first hour with their own loss, driven as they would drive it: the loss's
own parameters, a narrower input domain, a per-element output, clear and fast errors,
and reports that say why a run failed (API and ``lossverify verify`` subprocesses)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

import lossverify  # noqa: E402
from lossverify import checks as C  # noqa: E402
from lossverify import search, verdict  # noqa: E402
from lossverify import specs as S  # noqa: E402
from lossverify import strategies as lst  # noqa: E402
from lossverify import verifier as V  # noqa: E402
from lossverify.session import Session  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAST = {"max_examples": 8, "seed": 0}

USER_MODULE = '''
import tensorflow as tf
import keras


def _focal(y_true, logits, gamma):
    p = tf.clip_by_value(tf.nn.softmax(logits), 1e-7, 1.0)
    return -tf.reduce_sum(y_true * (1.0 - p) ** gamma * tf.math.log(p), axis=-1)


class FocalNeedsGamma(keras.losses.Loss):
    """A correct class that cannot be built without its argument."""

    def __init__(self, gamma, name="focal_needs_gamma", **kwargs):
        super().__init__(name=name, **kwargs)
        self.gamma = gamma

    def call(self, y_true, y_pred):
        return _focal(y_true, y_pred, self.gamma)


def focal(y_true, y_pred, gamma=2.0):
    return _focal(y_true, y_pred, gamma)


def hard_bce(y_true, y_pred):
    """Correct for 0/1 labels only: picks one log term per element."""
    p = tf.clip_by_value(y_pred, 1e-7, 1.0 - 1e-7)
    return -tf.reduce_mean(tf.where(y_true > 0.5, tf.math.log(p), tf.math.log(1.0 - p)),
                           axis=-1)


def squared(y_true, y_pred):
    """One value per element: the mean squared error before its mean."""
    return tf.square(y_pred - y_true)


def cce_off(y_true, y_pred):
    """Wrong: 1 % too large."""
    return 1.01 * keras.losses.categorical_crossentropy(y_true, y_pred)
'''


def _cli(tmp_path, *args, timeout=600):
    (tmp_path / "userloss.py").write_text(textwrap.dedent(USER_MODULE))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-m", "lossverify", "verify", *args], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=timeout)


def _user(name: str):
    namespace: dict = {}
    exec(textwrap.dedent(USER_MODULE), namespace)
    return namespace[name]


# ------------------------------------------------------------ the loss's own settings


def test_a_class_with_constructor_arguments_passes_via_loss_params():
    report = lossverify.verify(_user("FocalNeedsGamma"), "focal_loss", gamma=1.5,
                               loss_params={"gamma": 1.5}, checks=("value", "gradient"),
                               **FAST)
    assert report.ok, str(report)
    assert report.loss_params == {"gamma": 1.5}
    assert "loss_params={'gamma': 1.5}" in report.reproduce_line()
    assert "the loss's own parameters: gamma=1.5" in str(report)


def test_the_same_class_with_the_wrong_own_gamma_fails():
    """No hole: the loss's own parameters really reach it."""
    with pytest.warns(lossverify.LossverifyWarning, match="the reference gets 1.5 and the "
                                                          "loss 2.5"):
        report = lossverify.verify(_user("FocalNeedsGamma"), "focal_loss", gamma=1.5,
                                   loss_params={"gamma": 2.5}, checks=("value",), **FAST)
    assert not report.ok


def test_a_parameter_given_to_the_reference_only_warns_and_fails():
    with pytest.warns(lossverify.LossverifyWarning, match="keeps its own gamma=2.0"):
        report = lossverify.verify(_user("focal"), "focal_loss", gamma=0.5,
                                   checks=("value",), **FAST)
    assert not report.ok  # the loss computed gamma = 2: the warning says why


def test_cli_constructs_a_class_with_loss_param(tmp_path):
    proc = _cli(tmp_path, "--loss", "userloss:FocalNeedsGamma", "--reference", "focal_loss",
                "--param", "gamma=1.5", "--loss-param", "gamma=1.5", "--max-examples",
                "8", "--min-rows", "0", "--checks", "value,gradient,graph", "--quiet")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "the loss's own parameters: gamma=1.5" in proc.stdout
    assert "Traceback" not in proc.stderr


def test_cli_warns_when_the_loss_keeps_its_own_value(tmp_path):
    proc = _cli(tmp_path, "--loss", "userloss:focal", "--reference", "focal_loss", "--param",
                "gamma=0.5", "--max-examples", "4", "--min-rows", "0", "--checks", "value",
                "--quiet")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    warning = [ln for ln in proc.stderr.splitlines() if "warning" in ln]
    assert len(warning) == 1 and "keeps its own gamma=2.0" in warning[0] and \
        "--loss-param" in warning[0], proc.stderr


# ------------------------------------------------------------------- the input domain


def test_a_hard_label_loss_fails_on_soft_labels_and_passes_on_its_domain():
    loss = _user("hard_bce")
    everywhere = lossverify.verify(loss, "binary_crossentropy", checks=("value",), **FAST)
    assert not everywhere.ok  # soft labels: the loss is not defined there
    report = lossverify.verify(loss, "binary_crossentropy", domain={"hard_labels": True},
                               **FAST)
    assert report.ok, str(report)
    assert "inputs: hard labels" in str(report)
    assert "domain=lossverify.Domain(hard_labels=True)" in report.reproduce_line()
    assert report.to_dict()["domain"] == "hard labels"


def test_probabilities_inside_the_clip_are_what_the_loss_sees():
    seen = []

    def cce_without_clip(y_true, y_pred):
        seen.append(float(tf.reduce_min(y_pred)))
        p = y_pred / tf.reduce_sum(y_pred, axis=-1, keepdims=True)
        return -tf.reduce_sum(y_true * tf.math.log(p), axis=-1)

    domain = lossverify.Domain(probabilities=(1e-7, 1 - 1e-7))
    report = lossverify.verify(cce_without_clip, "categorical_crossentropy", domain=domain,
                               checks=("value", "gradient"), **FAST)
    assert seen and min(seen) >= 1e-7
    assert report.ok, str(report)


def test_cli_hard_labels_passes_and_the_markdown_says_so(tmp_path):
    proc = _cli(tmp_path, "--loss", "userloss:hard_bce", "--reference", "binary_crossentropy",
                "--hard-labels", "--max-examples", "8", "--min-rows", "0", "--checks",
                "value,gradient", "--markdown", "r.md", "--quiet")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "inputs: hard labels" in (tmp_path / "r.md").read_text()


# ------------------------------------------------------------------ the output's shape


def test_a_per_element_loss_fails_naming_the_shapes_without_an_adapter():
    report = lossverify.verify(_user("squared"), "mean_squared_error", **FAST)
    assert not report.ok
    for check in report.checks.values():
        assert "returned shape (" in check.message and "expected per-sample (" in \
            check.message and "per_element" in check.message, str(report)


def test_a_per_element_loss_passes_with_its_adapter_and_a_wrong_scale_fails():
    loss = _user("squared")
    report = lossverify.verify(loss, "mean_squared_error", output={"per_element": "mean"},
                               **FAST)
    assert report.ok, str(report)
    assert "output: per element, mean over the class axis" in str(report)

    def half(y_true, y_pred):  # optax's l2_loss
        return 0.5 * tf.square(y_pred - y_true)

    assert lossverify.verify(half, "mean_squared_error",
                             output=lossverify.Output("mean", 0.5), **FAST).ok
    wrong = lossverify.verify(half, "mean_squared_error", output=lossverify.Output("sum", 0.5),
                              checks=("value", "gradient"), **FAST)
    assert not wrong.ok  # no hole: sum is not mean


def test_an_adapted_loss_of_the_wrong_shape_fails_naming_it():
    report = lossverify.verify(lambda y, p: tf.reduce_mean(tf.square(p - y), axis=-1),
                               "mean_squared_error", output={"per_element": "mean"},
                               checks=("value",), **FAST)
    assert not report.ok
    assert "expected per-element" in report.checks["value"].message


def test_per_element_is_refused_for_a_keras_loss():
    with pytest.raises(ValueError, match="per_element"):
        lossverify.verify(keras.losses.MeanSquaredError(), "mean_squared_error",
                          output={"per_element": "mean"})


def test_cli_per_element(tmp_path):
    proc = _cli(tmp_path, "--loss", "userloss:squared", "--reference", "mean_squared_error",
                "--per-element", "mean", "--max-examples", "8", "--min-rows", "0",
                "--quiet")
    assert proc.returncode == 0, proc.stdout + proc.stderr


# --------------------------------------------------------------- errors: clear and fast


BAD_ARGS = {
    "module": (["--loss", "no_such_module_xyz:f", "--reference", "focal_loss"],
               "--loss: no module named 'no_such_module_xyz'"),
    "attribute": (["--loss", "os:no_such_attr", "--reference", "focal_loss"],
                  "--loss: module 'os' has no attribute 'no_such_attr'"),
    "reference": (["--loss", "os:path", "--reference", "focal"], "argument --reference"),
    "range": (["--loss", "os:path", "--reference", "focal_loss", "--param", "gamma=-1"],
              "--param: gamma: expected a number >= 0, got -1"),
    "name": (["--loss", "os:path", "--reference", "focal_loss", "--param", "gama=2"],
             "--param: focal_loss takes ['gamma'], got unexpected ['gama']"),
    "duplicate": (["--loss", "os:path", "--reference", "focal_loss", "--param", "gamma=1",
                   "--param", "gamma=2"], "--param: gamma given twice"),
    "duplicate-loss-param": (["--loss", "os:path", "--reference", "focal_loss",
                              "--loss-param", "gamma=1", "--loss-param", "gamma=2"],
                             "--loss-param: gamma given twice"),
    "soft-labels": (["--loss", "os:path", "--reference", "binary_crossentropy", "--param",
                     "soft_labels=False"], "the input domain is given with --hard-labels"),
    "domain": (["--loss", "os:path", "--reference", "focal_loss", "--probabilities", "0,1"],
               "--probabilities narrows probabilities, but focal_loss takes logits"),
    "range-order": (["--loss", "os:path", "--reference", "categorical_crossentropy",
                     "--probabilities", "0.9,0.1"], "--probabilities: expected low < high"),
    "dtypes": (["--dtypes", "float8"], "--dtypes: expected a comma-separated subset"),
    "alone": (["--reference", "focal_loss"], "--loss and --reference go together"),
    "user-only": (["--hard-labels"], "--hard-labels: applies to a loss of your own"),
    "scale": (["--loss", "os:path", "--reference", "mean_squared_error", "--scale", "0"],
              "--scale: expected a finite non-zero number"),
}


@pytest.mark.parametrize("case", list(BAD_ARGS))
def test_a_bad_argument_is_one_line_exit_2_before_tensorflow_loads(tmp_path, case):
    """(How fast: ``benchmarks/test_bench_cli_errors.py``; here, that TensorFlow is
    never imported for these mistakes, which is what makes them fast.)"""
    args, expected = BAD_ARGS[case]
    env = dict(os.environ, PYTHONPATH=REPO)
    code = ("import sys; from lossverify.cli import main; code = main(sys.argv[1:]); "
            "assert 'tensorflow' not in sys.modules, 'TensorFlow was imported'; "
            "sys.exit(code)")
    proc = subprocess.run([sys.executable, "-c", code, "verify", *args], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=120)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and expected in lines[0], proc.stderr
    assert lines[0].startswith("lossverify verify: error: ")


def test_a_class_that_needs_arguments_is_a_usage_error(tmp_path):
    proc = _cli(tmp_path, "--loss", "userloss:FocalNeedsGamma", "--reference", "focal_loss")
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert "--loss-param: cannot construct FocalNeedsGamma()" in lines[0]


def test_a_loss_that_always_raises_fails_fast():
    calls = []

    def broken(y_true, y_pred):
        calls.append(1)
        raise RuntimeError("not implemented yet")

    report = lossverify.verify(broken, "categorical_crossentropy", max_examples=40, seed=0)
    assert not report.ok
    for check in report.checks.values():
        assert check.examples == search.PROBE_BATCHES == check.failures, str(report)
        assert "so the run stopped there" in check.message
    assert "not implemented yet" in report.checks["value"].message
    assert len(calls) <= search.PROBE_BATCHES + 1  # eagerly on each probe, one graph trace


def test_graph_errors_keep_tensorflows_informative_line():
    class GraphError(Exception):
        pass

    exc = GraphError("Graph execution error:\n\nDetected at node mul defined at (most recent "
                     "call last):\n  File \"x.py\", line 3, in f\n\nIncompatible shapes: "
                     "[8,3] vs. [8]\n\t [[{{node mul}}]] [Op:__inference_f_12]")
    assert C._first_line(exc) == "Incompatible shapes: [8,3] vs. [8]"


def test_help_is_plain_text_and_lists_the_references():
    proc = subprocess.run([sys.executable, "-m", "lossverify", "verify", "--help"],
                          capture_output=True, text=True, timeout=60,
                          env=dict(os.environ, PYTHONPATH=REPO))
    assert proc.returncode == 0
    assert "``" not in proc.stdout and ":data:" not in proc.stdout
    for name in S.SPECS:
        assert name in proc.stdout
    assert "--loss-param" in proc.stdout and "runs all four" in proc.stdout


# ---------------------------------------------------------------------------- reports


def test_a_failing_run_writes_strict_json_and_markdown_with_its_counterexample(tmp_path):
    proc = _cli(tmp_path, "--loss", "userloss:cce_off", "--reference",
                "categorical_crossentropy", "--max-examples", "6", "--min-rows", "0",
                "--checks", "value,graph", "--json", "r.json", "--markdown", "r.md",
                "--quiet")
    assert proc.returncode == 1, proc.stdout + proc.stderr

    def refuse(token):
        raise ValueError(f"not strict JSON: {token}")

    data = json.loads((tmp_path / "r.json").read_text(), parse_constant=refuse)
    assert data["totals"]["failed"] == 1 and data["schema_version"] == 2
    md = (tmp_path / "r.md").read_text()
    assert "**1 runs, 1 failed" in md
    assert "## Failures (1 runs, 0 invariants)" in md
    assert "**value** failed on" in md and "LossInputs(" in md
    assert "lossverify.verify(loss, 'categorical_crossentropy'" in md
    assert "lossverify verify --loss userloss:cce_off --reference categorical_crossentropy" \
        in md
    # the reproduce command in the report repeats the run
    line = next(ln for ln in md.splitlines() if ln.startswith("lossverify verify --loss"))
    again = _cli(tmp_path, *line.split()[2:], "--quiet")
    assert again.returncode == 1 and "FAILED" in again.stdout


def test_counterexamples_are_capped():
    text = verdict.capped("x" * (verdict.MAX_EXAMPLE_CHARS + 500))
    assert len(text) < verdict.MAX_EXAMPLE_CHARS + 200
    assert "500 more characters left out" in text


# -------------------------------------------------- the fused-batch diagnosis, both ways


def _fused_failure(loss):
    """A session for ``loss``, two drawn batches checked in one call, and the second
    batch's (made-up) failure in that call: what
    :meth:`lossverify.fusion.FusedEvaluation._evaluate_group` hands to ``_record_alone``
    when a batch fails fused."""
    spec = S.get_spec("categorical_crossentropy")
    session = Session(loss, spec, {}, ("value",), C.DEFAULT_TIME_LIMIT, False)
    rng = np.random.default_rng(1)

    def batch(n):
        p = rng.dirichlet(np.ones(4), size=n).astype(np.float32)
        y = np.eye(4, dtype=np.float32)[rng.integers(0, 4, n)]
        return lst.LossInputs(y, p)

    first, second = batch(6), batch(8)
    call = lst.LossInputs.concatenate([first, second])
    expected = session._expected(second)
    got = expected.value.copy()
    got[4] *= 1.5
    from lossverify import numerics

    cmp = numerics.compare(got, expected.value, expected.value_allowed, expected.dtype)
    reports = {"value": V.CheckReport("value")}
    session._record_alone([second], "value", C.Outcome(False, cmp, cmp.describe(), 8),
                          second, reports, (call, 2, 2, 6))
    return reports["value"]


def test_fused_diagnosis_of_independent_rows_does_not_blame_the_batch():
    check = _fused_failure(keras.losses.categorical_crossentropy)
    assert check.failures == 1
    assert "so the rows are independent" in check.message
    assert "depends on the other rows" not in check.message
    assert check.worst_input.startswith("# batch 2 of 2, rows 6..13 of the call of 14 rows; "
                                        "its row 4 holds the worst element")


def test_fused_diagnosis_names_a_loss_whose_rows_depend_on_the_batch():
    def batch_dependent(y_true, y_pred):  # exact up to 10 rows per call, 1 % off beyond
        value = keras.losses.categorical_crossentropy(y_true, y_pred)
        return value * tf.where(tf.shape(y_pred)[0] > 10, 1.01, 1.0)

    check = _fused_failure(batch_dependent)
    assert "a row's loss depends on the other rows (the value alone and in the call " \
        "differ" in check.message


def test_a_failing_conformance_run_reports_its_failures_in_markdown_and_strict_json(tmp_path):
    """``--strict`` makes the notes' known NaN focal gradient a failure: the conformance
    report then carries the messages, counterexamples and reproduce lines."""
    proc = subprocess.run(
        [sys.executable, "-m", "lossverify", "verify", "--only", "focal_loss", "--strict",
         "--max-examples", "8", "--min-rows", "0", "--invariant-examples", "0", "--jobs",
         "1", "--checks", "gradient", "--quiet", "--no-progress", "--json", "c.json",
         "--markdown", "conformance.md"], cwd=tmp_path, capture_output=True, text=True,
        timeout=600, env=dict(os.environ, PYTHONPATH=REPO))
    assert proc.returncode == 1, proc.stdout + proc.stderr

    def refuse(token):
        raise ValueError(f"not strict JSON: {token}")

    data = json.loads((tmp_path / "c.json").read_text(), parse_constant=refuse)
    failed = [r for r in data["runs"] if not r["ok"]]
    assert failed and all(r["checks"]["gradient"]["worst_ratio"] == "Infinity" for r in failed)
    md = (tmp_path / "conformance.md").read_text()
    assert f"**{data['totals']['runs']} runs, {len(failed)} failed" in md
    assert "### notes.FocalLoss (class), gamma=0.5, float32" in md
    assert "**gradient** failed on" in md and "gradient got nan" in md
    assert "Minimal counterexample:" in md and "LossInputs(" in md
    assert "lossverify.verify(loss, 'focal_loss'" in md


def test_keras_on_another_backend_runs_on_that_backend_not_tensorflow(monkeypatch):
    """Under KERAS_BACKEND=jax a Keras loss is a JAX computation: verify() runs it through
    its JAX executor (tests/test_keras_backends_verify.py), never through TensorFlow's
    GradientTape, where every check would fail as "not differentiable", a false verdict.
    Here, without JAX installed, the run stops at once naming what to install."""
    from lossverify import frameworks

    monkeypatch.setattr(keras.backend, "backend", lambda: "jax")
    found = frameworks.resolve(keras.losses.CategoricalCrossentropy()) \
        if frameworks._installed("jax") else None
    if found is not None:
        assert found.name == "jax" and found.label.endswith("(jax backend)")
        return
    with pytest.raises(ModuleNotFoundError, match="needs 'jax'.*'jax' extra"):
        lossverify.verify(keras.losses.CategoricalCrossentropy(), "categorical_crossentropy")


def test_a_loss_of_another_framework_runs_there_not_in_tensorflow():
    def fake_torch_loss(y_true, y_pred):
        return y_pred

    fake_torch_loss.__module__ = "torch.nn.functional"
    from lossverify import frameworks

    if frameworks._installed("torch"):
        pytest.skip("PyTorch is installed: tests/test_torch_verify.py runs its losses")
    with pytest.raises(ModuleNotFoundError, match="needs 'torch'.*'torch' extra"):
        lossverify.verify(fake_torch_loss, "mean_squared_error")
    with pytest.raises(ValueError, match="framework: 'tensorflow' was named, but the loss "
                                         "comes from torch"):
        lossverify.verify(fake_torch_loss, "mean_squared_error", framework="tensorflow")
