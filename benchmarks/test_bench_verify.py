"""Throughput of the verifier itself: examples per second per check, and a full run.

``verify()`` on one Keras loss (one check at a time, and all four together) and the whole
default conformance run (``lossverify verify`` in a fresh process, TensorFlow's import
included). ``extra_info["examples_per_s"]`` holds the rate; read it from the JSON report.

Under ``--benchmark-disable`` each runs once and checks its result without recording
times; with ``LOSSVERIFY_BENCH_QUICK=1`` (see ``conftest.py``) verify() draws fewer
examples and the full run is one reference's, the other full-run variants skipped.
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
#: quick mode: fewer draws per verify() call
QUICK_EXAMPLES = 10


@pytest.mark.parametrize("checks", [("value",), ("gradient",), ("graph",), ("xla",),
                                    ("value", "gradient", "graph", "xla")],
                         ids=lambda c: "+".join(c))
def test_verify_throughput(benchmark, timing, quick, checks):
    loss = keras.losses.CategoricalCrossentropy()
    max_examples = QUICK_EXAMPLES if quick else EXAMPLES

    def run():
        return lossverify.verify(loss, "categorical_crossentropy",
                                 max_examples=max_examples, seed=0, checks=checks)

    report = benchmark.pedantic(run, rounds=3, warmup_rounds=1)
    assert report.ok, str(report)
    examples = sum(c.examples for c in report.checks.values())
    benchmark.extra_info["examples"] = examples
    median = timing("median")
    if median is not None:
        benchmark.extra_info["examples_per_s"] = examples / median


FULL_RUNS = {
    # the CLI's default: 40 draws per run (the xla check 20 of its own), invariants
    # included, 2 processes. The target: under 30 s with >= 200 rows per check.
    "default": [],
    "default-jobs1": ["--jobs", "1"],
    # the old default size, 100 draws per run, for scale
    "100draws": ["--max-examples", "100"],
}
#: quick mode: only the default variant, on one reference (seconds, not minutes)
QUICK_ONLY = ["--only", "mean_squared_error"]


@pytest.mark.parametrize("variant", list(FULL_RUNS))
def test_full_default_run(benchmark, timing, quick, variant, tmp_path):
    """The main job end to end in a fresh process, TensorFlow's import included. Records
    the wall time, check-examples per second, and the fewest rows any check saw."""
    if quick and variant != "default":
        pytest.skip(f"quick mode: the {variant} variant runs for minutes")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    out = tmp_path / "report.json"
    args = [*FULL_RUNS[variant], *(QUICK_ONLY if quick else [])]

    def run():
        return subprocess.run([sys.executable, "-m", "lossverify", "verify", "--quiet",
                               "--no-progress", "--json", str(out), *args],
                              capture_output=True, text=True, env=env)

    proc = benchmark.pedantic(run, rounds=1, iterations=1)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(out.read_text())
    rows = {name: min(r["checks"][name]["rows"] for r in report["runs"])
            for name in ("value", "gradient", "graph", "xla")}
    draws = min(r["checks"]["value"]["examples"] for r in report["runs"])
    benchmark.extra_info.update(summary=proc.stdout.strip().splitlines()[-1],
                                runs=len(report["runs"]), draws_per_run=draws,
                                min_rows_per_check=rows, args=args)
    wall = timing("max")
    if wall is not None:
        benchmark.extra_info["wall_s"] = wall
