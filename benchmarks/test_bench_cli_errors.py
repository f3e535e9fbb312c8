"""How fast ``lossverify`` rejects bad arguments, and that it does so in one line.

A user's first mistakes (a misspelt module, reference or parameter, a duplicated key,
an unknown dtype, a missing data file) should come back at once: the target is under
2 s per case, start-up of a fresh interpreter included. That target is recorded, never
asserted (a loaded machine is no bug); what is asserted, in every round and under
``--benchmark-disable`` too, is the contract of a usage error: exit code 2, and stderr
exactly one non-empty line with no traceback.

Each round runs ``python -m lossverify <args>`` in a fresh process from an empty folder,
with ``TF_CPP_MIN_LOG_LEVEL`` removed from its environment: TensorFlow's start-up
notices, if it gets imported, are part of what the user would see.
``extra_info["wall_s"]`` lists each round's wall seconds; ``extra_info["median_s"]`` is
pytest-benchmark's median when it timed the rounds.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

#: the target a case should stay under, in seconds (recorded, not asserted)
TARGET_S = 2.0

_USER_LOSS = ["verify", "--loss", "os:path", "--reference", "focal_loss"]

CASES: dict[str, list[str]] = {
    "loss-module-missing": ["verify", "--loss", "nosuchmodule_xyz:f",
                            "--reference", "categorical_crossentropy"],
    "loss-attribute-missing": ["verify", "--loss", "os:no_such_attr",
                               "--reference", "categorical_crossentropy"],
    "reference-unknown": ["verify", "--loss", "os:path", "--reference", "nosuchref"],
    "param-out-of-range": [*_USER_LOSS, "--param", "gamma=-1"],
    "param-misspelt": [*_USER_LOSS, "--param", "gama=2"],
    "param-duplicate": [*_USER_LOSS, "--param", "gamma=1", "--param", "gamma=2"],
    "loss-param-duplicate": [*_USER_LOSS, "--loss-param", "gamma=1",
                             "--loss-param", "gamma=2"],
    "dtype-unknown": ["verify", "--dtypes", "float8"],
    "train-data-missing": ["train", "--data", "/nonexistent/mnist.npz"],
}


def _check_usage_error(args: list[str], proc: subprocess.CompletedProcess) -> None:
    shown = f"lossverify {' '.join(args)}\nexit {proc.returncode}\nstderr:\n{proc.stderr}"
    assert proc.returncode == 2, shown
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].strip(), shown
    assert "Traceback" not in proc.stderr, shown


@pytest.mark.parametrize("case", list(CASES))
def test_bad_arguments_rejected(benchmark, timing, case, tmp_path):
    args = CASES[case]
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    walls: list[float] = []
    procs: list[subprocess.CompletedProcess] = []

    def run() -> subprocess.CompletedProcess:
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "lossverify", *args], cwd=tmp_path,
                              env=env, capture_output=True, text=True, timeout=300)
        walls.append(time.perf_counter() - start)
        procs.append(proc)
        return proc

    benchmark.group = "cli-errors"
    benchmark.pedantic(run, rounds=3, warmup_rounds=1)
    benchmark.extra_info.update(args=args, wall_s=walls, target_s=TARGET_S)
    median = timing("median")
    if median is not None:
        benchmark.extra_info["median_s"] = median
    for proc in procs:
        _check_usage_error(args, proc)
