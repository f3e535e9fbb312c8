"""Throughput of the verifier itself: examples per second per check, and a full run.

``verify()`` on one Keras loss (one check at a time, and all four together) and the whole
default conformance run (``lossverify verify`` in a fresh process, TensorFlow's import
included). ``extra_info["examples_per_s"]`` holds the rate; read it from the JSON report.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

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


def test_full_default_run(benchmark):
    """The main job end to end, TensorFlow import included (20 examples per check)."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}

    def run():
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "lossverify", "verify", "--quiet",
                               "--max-examples", "20"], capture_output=True, text=True, env=env)
        return proc, time.perf_counter() - start

    proc, _ = benchmark.pedantic(run, rounds=1, iterations=1)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    benchmark.extra_info["summary"] = proc.stdout.strip().splitlines()[-1]
