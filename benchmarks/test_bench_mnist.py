"""The notes' MNIST training step: eager vs tf.function vs XLA, focal vs built-in CCE,
batch sizes, custom loop vs fit, float32 vs mixed precision.

Run (and compare with the previous saved run)::

    pytest benchmarks --benchmark-json=bench.json --benchmark-autosave --benchmark-compare
    lossverify bench bench.json

Each benchmark times one unit of :func:`lossverify.mnist.bench.make_runner` (a training
step on a fixed in-memory batch, or a pass of 16 batches for the loop comparison) after
warm-up rounds that absorb tracing and XLA compilation; ``extra_info`` records what
``lossverify bench`` needs to turn times into images per second.

Under ``--benchmark-disable`` each runs its unit once (tracing included), untimed; with
``LOSSVERIFY_BENCH_QUICK=1`` the interleaved comparison runs a few steps, not hundreds.
"""

from __future__ import annotations

from dataclasses import asdict

import pytest

from lossverify.mnist.bench import (
    BenchConfig,
    default_configs,
    make_runner,
    mixed_precision_support,
    timing_plan,
)

_POLICY, _WHY = mixed_precision_support()
_CONFIGS = default_configs(_POLICY)
if _POLICY is None:
    _CONFIGS.append(BenchConfig(batch=512, precision="mixed_float16"))


@pytest.mark.parametrize("config", _CONFIGS, ids=lambda c: c.name)
def test_mnist_training(benchmark, config):
    if config.precision != "float32" and config.precision != _POLICY:
        pytest.skip(f"mixed precision not native on this machine: {_WHY}")
    benchmark.group = "loop" if config.kind == "loop" else f"step-b{config.batch}"
    benchmark.extra_info.update(config=asdict(config), images_per_call=config.images_per_call)
    run = make_runner(config)
    benchmark.pedantic(run, **timing_plan(config))


INTERLEAVED_BATCHES = (32, 512)


@pytest.mark.parametrize("batch", INTERLEAVED_BATCHES)
def test_focal_vs_cce_interleaved(benchmark, quick, batch):
    """Focal-loss step vs built-in CCE step, alternated step by step.

    The grouped benchmarks above time each configuration in its own block of rounds, so
    a shared machine's load drifting between blocks moves their ratio by several percent.
    Here both steps run in turns (20 rounds of 10 steps each; 2 of 2 in quick mode), so
    drift hits both alike; ``extra_info["focal_over_cce"]`` is the ratio of the median
    step times, recorded when pytest-benchmark is timing (not under --benchmark-disable).
    """
    import statistics
    import time

    n_rounds, steps = (2, 2) if quick else (20, 10)
    focal = make_runner(BenchConfig(batch=batch))
    cce = make_runner(BenchConfig(loss="cce", batch=batch))
    for _ in range(2 if quick else 5):  # warm-up: traces both
        focal(), cce()
    times: dict[str, list[float]] = {"focal": [], "cce": []}

    def rounds():
        for _ in range(n_rounds):
            for name, run in (("focal", focal), ("cce", cce)):
                start = time.perf_counter()
                for _ in range(steps):
                    run()
                times[name].append((time.perf_counter() - start) / steps)

    benchmark.pedantic(rounds, rounds=1, iterations=1)
    assert all(len(t) == n_rounds for t in times.values())
    benchmark.group = "focal-vs-cce-interleaved"
    if benchmark.stats is None:  # --benchmark-disable: a smoke run, nothing recorded
        return
    ratio = statistics.median(times["focal"]) / statistics.median(times["cce"])
    benchmark.extra_info.update(focal_over_cce=ratio, batch=batch,
                                focal_ms=1e3 * statistics.median(times["focal"]),
                                cce_ms=1e3 * statistics.median(times["cce"]))
