"""Throughput of the verifier itself: examples per second per check, and a full run.

``verify()`` on one Keras loss (one check at a time, and all four together) and the whole
default conformance run (``lossverify verify`` in a fresh process, TensorFlow's import
included). ``extra_info["examples_per_s"]`` holds the rate; read it from the JSON report.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import keras
import pytest

import lossverify

EXAMPLES = 50


@pytest.mark.parametrize("checks", [("value",), ("gradient",), ("graph",), ("xla",),
                                    ("value", "gradient", "graph", "xla")],
                         ids=lambda c: "+".join(c))
def test_verify_throughput(benchmark, checks):
    loss = keras.losses.CategoricalCrossentropy()

    def run():
        return lossverify.verify(loss, "categorical_crossentropy", max_examples=EXAMPLES,
                                 seed=0, checks=checks)

    report = benchmark.pedantic(run, rounds=3, warmup_rounds=1)
    assert report.ok, str(report)
    examples = sum(c.examples for c in report.checks.values())
    benchmark.extra_info["examples_per_s"] = examples / benchmark.stats["median"]


FULL_RUNS = {
    # the CLI's default: 40 draws per run (the xla check 20 of its own), invariants
    # included, 2 processes. The target: under 30 s with >= 200 rows per check.
    "default": [],
    "default-jobs1": ["--jobs", "1"],
    # the old default size, 100 draws per run, for scale
    "100draws": ["--max-examples", "100"],
}


@pytest.mark.parametrize("variant", list(FULL_RUNS))
def test_full_default_run(benchmark, variant, tmp_path):
    """The main job end to end in a fresh process, TensorFlow's import included. Records
    the wall time, check-examples per second, and the fewest rows any check saw."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    out = tmp_path / "report.json"

    def run():
        return subprocess.run([sys.executable, "-m", "lossverify", "verify", "--quiet",
                               "--no-progress", "--json", str(out), *FULL_RUNS[variant]],
                              capture_output=True, text=True, env=env)

    proc = benchmark.pedantic(run, rounds=1, iterations=1)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(out.read_text())
    rows = {name: min(r["checks"][name]["rows"] for r in report["runs"])
            for name in ("value", "gradient", "graph", "xla")}
    draws = min(r["checks"]["value"]["examples"] for r in report["runs"])
    benchmark.extra_info.update(summary=proc.stdout.strip().splitlines()[-1],
                                runs=len(report["runs"]), draws_per_run=draws,
                                min_rows_per_check=rows, wall_s=benchmark.stats["max"])
