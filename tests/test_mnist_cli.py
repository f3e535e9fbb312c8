"""``lossverify train | digits | bench`` end to end on tiny data."""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys

import numpy as np

from lossverify.mnist import cli


def _run(argv):
    parser = argparse.ArgumentParser(prog="lossverify")
    cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_importing_the_cli_does_not_load_tensorflow():
    code = "import sys, lossverify.mnist.cli; print('tensorflow' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert done.stdout.strip() == "False"


def test_digits_grid(tmp_path, capsys):
    assert _run(["digits", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "digits.png").read_bytes()[:4] == b"\x89PNG"
    assert "scikit-learn handwritten digits" in capsys.readouterr().out


def test_bad_data_file_is_a_clear_error(tmp_path, capsys):
    bad = tmp_path / "mnist.npz"
    np.savez(bad, x_train=np.zeros((2, 28, 28), np.uint8))
    assert _run(["train", "--data", str(bad), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"--data {bad}" in err and "missing key(s) y_train, x_test, y_test" in err


def test_train_all_on_tiny_data(tmp_path, capsys):
    argv = ["train", "--experiment", "all", "--epochs", "1", "--batch-size", "16",
            "--limit-train", "64", "--limit-test", "32", "--quiet", "--out", str(tmp_path)]
    assert _run(argv) == 0
    out = capsys.readouterr().out
    assert out.count("Epoch 1, Loss: ") == 3  # Experiment 3, Experiment 4, softmax arm
    assert "Double softmax costs" in out
    for run in ("exp3-custom-loop-logits", "exp4-fit-logits", "exp3-custom-loop-softmax"):
        assert (tmp_path / run / "curves.png").exists()
        assert json.loads((tmp_path / run / "history.json").read_text())["epoch"] == 1
    assert (tmp_path / "digits.png").exists()
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert set(summary["runs"]) == {"exp3-custom-loop-logits", "exp4-fit-logits",
                                    "exp3-custom-loop-softmax"}
    assert summary["runs"]["exp4-fit-logits"]["config"]["loop"] == "fit"
    # Running again resumes: nothing left to train, the same numbers come back.
    assert _run(argv) == 0
    again = json.loads((tmp_path / "summary.json").read_text())
    assert again["runs"]["exp3-custom-loop-logits"]["test_accuracy"] == \
        summary["runs"]["exp3-custom-loop-logits"]["test_accuracy"]
    assert "Resuming" in capsys.readouterr().out


def test_double_softmax_needs_a_softmax_applying_loss(tmp_path, capsys):
    argv = ["train", "--experiment", "double-softmax", "--loss", "cce", "--out", str(tmp_path)]
    assert _run(argv) == 2
    assert "needs a loss that applies softmax itself" in capsys.readouterr().err


def _bench_entry(name_parts, median):
    kind, mode, loss, batch, precision = name_parts
    config = dict(kind=kind, mode=mode, loss=loss, batch=batch, precision=precision)
    n = batch * (16 if kind == "loop" else 1)
    return {"name": "x", "stats": {"median": median, "q1": median * 0.9, "q3": median * 1.1},
            "extra_info": {"config": config, "images_per_call": n}}


def test_bench_table_from_a_report(tmp_path, capsys):
    report = {
        "machine_info": {"lossverify_matmul_gflops": 100.0},
        "benchmarks": [
            _bench_entry(("step", "eager", "focal", 32, "float32"), 0.040),
            _bench_entry(("step", "function", "focal", 32, "float32"), 0.010),
            _bench_entry(("step", "function", "cce", 32, "float32"), 0.0098),
            _bench_entry(("step", "xla", "focal", 32, "float32"), 0.008),
            _bench_entry(("loop", "custom", "focal", 32, "float32"), 0.20),
            _bench_entry(("loop", "fit", "focal", 32, "float32"), 0.25),
            {"name": "test_focal_vs_cce_interleaved[32]", "stats": {"median": 1.0},
             "extra_info": {"focal_over_cce": 1.014, "batch": 32}},
        ],
    }
    path, previous = tmp_path / "new.json", tmp_path / "old.json"
    path.write_text(json.dumps(report))
    report["benchmarks"][1]["stats"]["median"] = 0.020
    previous.write_text(json.dumps(report))
    assert _run(["bench", str(path), "--compare", str(previous)]) == 0
    out = capsys.readouterr().out
    assert "step-function-focal-b32-float32" in out and "3200" in out  # 32 / 0.010
    assert "2.00x" in out  # twice as fast as the previous report
    assert re.search(r"focal-loss step time / built-in CCE step time, b32 +1\.020x", out)
    assert "tf.function speed-up over eager, b32" in out and "4.000x" in out
    assert re.search(r"focal / CCE step time, b32, interleaved +1\.014x", out)
    assert "custom loop speed-up over fit, b32" in out and "1.250x" in out
    # fastest b32: XLA, 4000 images/s * 17.79 MFLOP = 71.2 GFLOP/s of 100
    assert "step-xla-focal-b32-float32, 4000 images/s = 71.2 GFLOP/s = 71.2%" in out


def test_bench_unreadable_report(tmp_path, capsys):
    bad = tmp_path / "bench.json"
    bad.write_text("{not json")
    assert _run(["bench", str(bad)]) == 2
    assert "not a readable JSON report" in capsys.readouterr().err


def test_bench_unreadable_compare_is_reported_before_measuring(tmp_path, capsys,
                                                               monkeypatch):
    from lossverify.mnist import bench

    def measure_all(progress=None):
        raise AssertionError("measured for minutes before reading --compare")

    monkeypatch.setattr(bench, "measure_all", measure_all)
    bad = tmp_path / "previous.json"
    assert _run(["bench", "--compare", str(bad), "--out", str(tmp_path)]) == 2
    assert f"{bad}: not a readable JSON report" in capsys.readouterr().err
