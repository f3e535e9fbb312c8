"""pytest-benchmark set-up for lossverify's benchmarks.

The machine information saved with every report gains what ``lossverify bench`` needs for
its roofline: a measured float32 matmul peak, the logical devices, and whether mixed
precision is native here.

Every benchmark also runs once, untimed, under ``--benchmark-disable`` (then
``benchmark.stats`` is None and ``pedantic`` calls its target once, without warm-up): the
correctness assertions still run, the timings are simply not recorded. The
:func:`timing` fixture reads a statistic only when there is one.

``LOSSVERIFY_BENCH_QUICK=1`` shrinks the work for that smoke run (the nox ``benchcheck``
session sets it): the multi-minute full conformance runs are replaced by one run of a
single reference, and the loops that repeat a step many times repeat it a few times. A
quick run's numbers are not comparable with a full run's; it checks that the
benchmarks still work.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

#: the environment variable that selects the reduced smoke-run sizes
QUICK_ENV = "LOSSVERIFY_BENCH_QUICK"


def pytest_benchmark_update_machine_info(config, machine_info):
    from lossverify.mnist.bench import machine_info as lossverify_machine_info

    machine_info.update(lossverify_machine_info())


def pytest_report_header(config):
    if os.environ.get(QUICK_ENV) == "1":
        return f"lossverify benchmarks: quick sizes ({QUICK_ENV}=1)"
    return None


@pytest.fixture(scope="session")
def quick() -> bool:
    """True when ``LOSSVERIFY_BENCH_QUICK=1``: benchmarks use their smoke-run sizes."""
    return os.environ.get(QUICK_ENV) == "1"


@pytest.fixture
def timing(benchmark) -> Callable[[str], float | None]:
    """``timing("median")``: that statistic of the benchmark's rounds in seconds, or None
    when nothing was timed (``--benchmark-disable``, or xdist, which disables timing)."""

    def stat(name: str) -> float | None:
        stats = benchmark.stats
        return None if stats is None else float(stats[name])

    return stat
