"""The public ``verify`` API: argument errors, determinism, ``assert_verified``, the
report text and the ``lossverify verify`` command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import pytest  # noqa: E402

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

import lossverify  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cce_clip_1e5(y_true, y_pred):
    """Wrong: clips at 1e-5 instead of Keras's 1e-7."""
    y_true = tf.cast(y_true, tf.float32)
    p = y_pred / tf.reduce_sum(y_pred, axis=-1, keepdims=True)
    p = tf.clip_by_value(p, 1e-5, 1.0 - 1e-5)
    return -tf.reduce_sum(y_true * tf.math.log(p), axis=-1)


# ------------------------------------------------------------------- argument errors


def test_unknown_reference_is_a_value_error_naming_reference():
    with pytest.raises(ValueError, match="reference"):
        lossverify.verify(keras.losses.categorical_crossentropy, "no_such_loss")


@pytest.mark.parametrize("checks", [("value", "nope"), (), ("XLA",), "values"])
def test_bad_checks_is_a_value_error_naming_checks(checks):
    with pytest.raises(ValueError, match="checks"):
        lossverify.verify(keras.losses.categorical_crossentropy, "categorical_crossentropy",
                          checks=checks)


@pytest.mark.parametrize("max_examples", [0, -1])
def test_non_positive_max_examples_is_a_value_error(max_examples):
    with pytest.raises(ValueError, match="max_examples"):
        lossverify.verify(keras.losses.categorical_crossentropy, "categorical_crossentropy",
                          max_examples=max_examples)


def test_unknown_reference_kwarg_is_a_type_error_naming_it():
    with pytest.raises(TypeError, match="gamma_typo"):
        lossverify.verify(keras.losses.categorical_crossentropy, "categorical_crossentropy",
                          gamma_typo=2.0)


BAD_PARAMS = [
    ("focal_loss", {"gamma": -1.0}, ValueError, "gamma"),
    ("focal_loss", {"gamma": "2"}, TypeError, "gamma"),
    ("categorical_crossentropy", {"label_smoothing": 1.5}, ValueError, "label_smoothing"),
    ("binary_focal_crossentropy", {"alpha": 1.5, "apply_class_balancing": True}, ValueError,
     "alpha"),
    ("binary_focal_crossentropy", {"apply_class_balancing": "yes"}, TypeError,
     "apply_class_balancing"),
    ("categorical_crossentropy", {"from_logits": "yes"}, TypeError, "from_logits"),
    ("categorical_crossentropy", {"axis": 1.0}, TypeError, "axis"),
    ("categorical_crossentropy", {"axis": 5}, ValueError, "axis"),
    ("sparse_categorical_crossentropy", {"ignore_class": "x"}, TypeError, "ignore_class"),
    ("sparse_focal_loss", {"class_num": 0}, ValueError, "class_num"),
    ("sparse_focal_loss", {"class_num": 2.5}, TypeError, "class_num"),
]


@pytest.mark.parametrize(("reference", "params", "error", "name"), BAD_PARAMS,
                         ids=[f"{r}-{n}" for r, _, _, n in BAD_PARAMS])
def test_bad_reference_parameter_is_refused_naming_it(reference, params, error, name):
    with pytest.raises(error, match=rf"^{name}: expected"):
        lossverify.verify(keras.losses.categorical_crossentropy, reference, max_examples=1,
                          **params)


# ------------------------------------------------------------------------ determinism


def _dump(report):
    return json.dumps(report.to_dict(), sort_keys=True)


def test_same_seed_gives_identical_report():
    kw = dict(max_examples=10, checks=("value", "gradient"))
    a = lossverify.verify(keras.losses.CategoricalCrossentropy(), "categorical_crossentropy",
                          seed=3, **kw)
    b = lossverify.verify(keras.losses.CategoricalCrossentropy(), "categorical_crossentropy",
                          seed=3, **kw)
    assert _dump(a) == _dump(b)


def test_same_seed_gives_identical_failing_report():
    kw = dict(max_examples=10, checks=("value",), seed=1)
    a = lossverify.verify(cce_clip_1e5, "categorical_crossentropy", **kw)
    b = lossverify.verify(cce_clip_1e5, "categorical_crossentropy", **kw)
    assert not a.ok
    assert _dump(a) == _dump(b)
    assert str(a) == str(b)


def test_different_seeds_draw_different_inputs():
    kw = dict(max_examples=10, checks=("value",))
    reports = [lossverify.verify(keras.losses.mean_squared_error, "mean_squared_error",
                                 seed=s, **kw).to_dict() for s in (0, 1)]
    drawn = [(r["checks"]["value"]["worst_input"], r["checks"]["value"]["rows"])
             for r in reports]
    assert drawn[0] != drawn[1]
    assert reports[0]["seed"] == 0 and reports[1]["seed"] == 1


def test_seed_none_means_zero():
    kw = dict(max_examples=5, checks=("value",))
    a = lossverify.verify(keras.losses.mean_squared_error, "mean_squared_error", **kw)
    b = lossverify.verify(keras.losses.mean_squared_error, "mean_squared_error", seed=0, **kw)
    assert _dump(a) == _dump(b)


# ---------------------------------------------------------- assert_verified and report


def test_assert_verified_raises_with_counterexample_and_reproducer():
    with pytest.raises(AssertionError) as info:
        lossverify.assert_verified(cce_clip_1e5, "categorical_crossentropy", max_examples=20,
                                   seed=0, checks=("value",))
    text = str(info.value)
    assert "minimal counterexample" in text
    assert "reproduce with: lossverify.verify(loss, 'categorical_crossentropy'" in text
    assert "seed=0" in text


def test_assert_verified_returns_the_report_when_correct():
    report = lossverify.assert_verified(keras.losses.CategoricalCrossentropy(),
                                        "categorical_crossentropy", max_examples=5, seed=0,
                                        checks=("value", "gradient"))
    assert isinstance(report, lossverify.VerifyReport)
    assert report.ok
    assert report.form == "class"


def test_report_text_has_the_per_check_table():
    report = lossverify.verify(keras.losses.categorical_crossentropy,
                               "categorical_crossentropy", max_examples=5, seed=0,
                               checks=("value", "gradient", "graph"))
    text = str(report)
    assert report.ok, text
    header = text.splitlines()[1]
    for column in ("check", "examples", "rows", "worst err", "err/allowed", "ulp", "verdict"):
        assert column in header
    for name in ("value", "gradient", "graph"):
        row = next(ln for ln in text.splitlines() if ln.strip().startswith(name))
        assert row.rstrip().endswith("ok")
        assert report.checks[name].examples == 5
        assert report.checks[name].verdict == "ok"
    assert "reproduce with" not in text
    assert report.form == "function"


def test_to_dict_is_json_and_complete():
    report = lossverify.verify(cce_clip_1e5, "categorical_crossentropy", max_examples=10,
                               seed=0, checks=("value",))
    d = json.loads(_dump(report))
    assert d["ok"] is False and d["reference"] == "categorical_crossentropy"
    assert d["checks"]["value"]["verdict"] == "FAIL"
    assert d["checks"]["value"]["failures"] == report.checks["value"].failures > 0
    assert d["checks"]["value"]["counterexample"]


# ------------------------------------------------------------------------------ CLI

WRONG_MODULE = """
import tensorflow as tf


def loss(y_true, y_pred):
    y_true = tf.cast(y_true, tf.float32)
    p = y_pred / tf.reduce_sum(y_pred, axis=-1, keepdims=True)
    p = tf.clip_by_value(p, 1e-5, 1.0 - 1e-5)
    return -tf.reduce_sum(y_true * tf.math.log(p), axis=-1)
"""

CORRECT_MODULE = """
import keras

loss = keras.losses.categorical_crossentropy
"""


def _cli(tmp_path, module_name, source, *extra):
    (tmp_path / f"{module_name}.py").write_text(textwrap.dedent(source))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run(
        [sys.executable, "-m", "lossverify", "verify", "--loss", f"{module_name}:loss",
         "--reference", "categorical_crossentropy", "--max-examples", "5", *extra],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)


def test_cli_wrong_loss_exits_1_with_counterexample(tmp_path):
    proc = _cli(tmp_path, "wrong_cce_mod", WRONG_MODULE, "--checks", "value")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "minimal counterexample" in proc.stdout, proc.stdout + proc.stderr


def test_cli_correct_loss_exits_0_and_writes_json(tmp_path):
    proc = _cli(tmp_path, "correct_cce_mod", CORRECT_MODULE, "--checks",
                "value,gradient,graph", "--json", "out.json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = json.loads((tmp_path / "out.json").read_text())
    assert "schema_version" in data
    assert data["runs"] and data["runs"][0]["ok"] is True


def test_cli_reports_are_byte_identical_across_processes(tmp_path):
    """Determinism across runs: two fresh processes, same seed, same bytes, for a failing
    run too (its counterexample and reproduce line included)."""
    outputs = []
    for run in ("a", "b"):
        proc = _cli(tmp_path, "wrong_cce_mod", WRONG_MODULE, "--checks", "value,graph",
                    "--seed", "7", "--json", f"{run}.json", "--markdown", f"{run}.md")
        assert proc.returncode == 1, proc.stdout + proc.stderr
        outputs.append(proc.stdout.split("\n1 runs,")[0])
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes()
    assert (tmp_path / "a.md").read_bytes() == (tmp_path / "b.md").read_bytes()
    assert outputs[0] == outputs[1]
    assert "reproduce with: lossverify.verify(loss, 'categorical_crossentropy', " \
           "max_examples=5, seed=7, min_rows=200, checks=('value', 'graph'))" in outputs[0]


def test_cli_conformance_run_includes_the_invariants(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "lossverify", "verify", "--only", "sparse_focal_loss",
         "--max-examples", "3", "--invariant-examples", "3", "--checks", "value",
         "--json", "c.json", "--markdown", "c.md", "--quiet"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = json.loads((tmp_path / "c.json").read_text())
    names = {r["invariant"] for r in data["invariants"]}
    assert {"class_matches_function", "sparse_matches_dense", "batch_split",
            "focal_not_above_cross_entropy", "focal_gamma0_matches_cross_entropy"} <= names
    assert all(r["ok"] and r["examples"] == 3 for r in data["invariants"])
    assert "## Invariants" in (tmp_path / "c.md").read_text()
    assert "notes.SparseFocalLoss = notes.sparse_focal_loss" in proc.stdout


def _verdicts(report):
    """What must not depend on the process: draws, verdicts, counterexamples. (The last
    digits of TensorFlow's results may: its vectorised reductions depend on buffer
    alignment, so a worst_ratio can move by rounding between processes.)"""
    runs = [(r["label"], r["dtype"], sorted(r["params"].items()),
             {n: (c["examples"], c["rows"], c["failures"], c["verdict"], c["counterexample"])
              for n, c in r["checks"].items()}) for r in report["runs"]]
    invariants = [(r["invariant"], r["losses"], r["examples"], r["ok"], r["counterexample"])
                  for r in report["invariants"]]
    return runs, invariants


def test_cli_jobs_give_the_same_report_and_plot_is_written(tmp_path):
    """--jobs 2 spreads runs over processes: same draws, verdicts and counterexamples."""
    env = {**os.environ, "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")}
    base = [sys.executable, "-m", "lossverify", "verify", "--only", "mean_squared_error",
            "--max-examples", "3", "--invariant-examples", "2", "--dtypes", "float32,float64",
            "--checks", "value,gradient", "--quiet"]
    for jobs in ("1", "2", "2b"):
        proc = subprocess.run([*base, "--jobs", jobs[0], "--json", f"j{jobs}.json",
                               *(["--plot", "errors.png"] if jobs == "1" else [])],
                              cwd=tmp_path, capture_output=True, text=True, timeout=600,
                              env=env)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        # one progress line per job, as each finishes (with --jobs too: sent per result)
        lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("[")]
        total = int(lines[0].split("/")[1].split()[0])
        assert len(lines) == total and lines[-1].startswith(f"[{total}/{total} "), lines
    data = json.loads((tmp_path / "j1.json").read_text())
    assert _verdicts(data) == _verdicts(json.loads((tmp_path / "j2.json").read_text()))
    # a given N is byte-identical run after run (fixed assignment of runs to processes)
    assert (tmp_path / "j2.json").read_bytes() == (tmp_path / "j2b.json").read_bytes()
    assert data["dtypes"] == ["float32", "float64"]
    assert {r["dtype"] for r in data["runs"]} == {"float32", "float64"}
    assert (tmp_path / "errors.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_run_survives_a_crash_inside_lossverify(monkeypatch, capsys):
    """A bug in lossverify itself (here: verify raising) is reported as CRASHED for that
    run; the conformance run goes on and exits 1."""
    from lossverify import cli

    calls = {"n": 0}
    real = lossverify.verify

    def flaky_verify(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("simulated internal error")
        return real(*args, **kwargs)

    monkeypatch.setattr(lossverify, "verify", flaky_verify)
    code = cli.main(["verify", "--only", "mean_squared_error", "--max-examples", "2",
                     "--invariant-examples", "0", "--checks", "value", "--quiet",
                     "--no-progress", "--jobs", "1"])  # in-process: the patch applies
    out, err = capsys.readouterr()
    assert code == 1
    assert "CRASHED" in out and "simulated internal error" in err
    crashed = [ln for ln in out.splitlines() if "CRASHED" in ln]
    assert len(crashed) == 1 and crashed[0].rstrip().endswith("CRASHED")  # verdict column
    assert calls["n"] == 4  # the other three implementations still ran


def test_class_axis_0_with_sample_weights_and_xla():
    """Regression: with axis=0 the sample weights follow the losses' shape and XLA padding
    leaves axis 0 alone (the thorough sweep once crashed on both)."""
    report = lossverify.verify(keras.losses.CategoricalCrossentropy(axis=0),
                               "categorical_crossentropy", axis=0, max_examples=15, seed=0)
    assert report.ok, str(report)
    assert report.checks["xla"].examples > 0
