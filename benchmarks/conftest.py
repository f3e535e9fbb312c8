"""pytest-benchmark set-up for the MNIST training-step benchmarks.

The machine information saved with every report gains what ``lossverify bench`` needs for
its roofline: a measured float32 matmul peak, the logical devices, and whether mixed
precision is native here.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def pytest_benchmark_update_machine_info(config, machine_info):
    from lossverify.mnist.bench import machine_info as lossverify_machine_info

    machine_info.update(lossverify_machine_info())
