"""Benchmarking the notes' MNIST training step: what is timed, and how it is reported.

What is timed is the training step, not the tooling: one optimisation step of the notes'
model on a fixed batch already in memory (``step`` benchmarks), or one pass over a small
in-memory dataset with the custom loop vs ``model.fit`` (``loop`` benchmarks, where the
per-step overhead of ``fit`` is the point). Each configuration is warmed up first (tracing
and XLA compilation happen there), then timed over several rounds; images per second
are reported as the median with the interquartile range as the spread.

The roofline: one training step costs about three forward passes (forward, and the
backward pass's two matrix products per layer), ``3 * FLOPS_PER_IMAGE_FORWARD`` ≈ 17.8
MFLOP per image. The machine's peak is *estimated* as the best float32 GFLOP/s of a large
matmul measured here (:func:`measure_matmul_gflops`), not taken from a datasheet; the
fraction of peak of a configuration is ``images/s * FLOPs/image / peak``.

The same configurations are timed by ``benchmarks/test_bench_mnist.py`` (pytest-benchmark)
and by ``lossverify bench`` with no report (a quick in-process run); :func:`format_report`
prints either.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from lossverify.mnist.models import FLOPS_PER_IMAGE_FORWARD

__all__ = [
    "FLOPS_PER_IMAGE_STEP",
    "BenchConfig",
    "format_report",
    "main",
    "make_runner",
    "measure_all",
    "measure_matmul_gflops",
    "mixed_precision_support",
]

#: Forward + backward ≈ 3 forward passes.
FLOPS_PER_IMAGE_STEP = 3 * FLOPS_PER_IMAGE_FORWARD
#: Batches in one pass of a ``loop`` benchmark.
LOOP_BATCHES = 16


@dataclass(frozen=True)
class BenchConfig:
    """One benchmark configuration."""

    kind: str = "step"          # "step": one training step; "loop": a pass, custom vs fit
    mode: str = "function"      # eager | function | xla  (step) ; custom | fit (loop)
    loss: str = "focal"         # focal | cce
    batch: int = 32
    precision: str = "float32"  # float32 | mixed_bfloat16 | mixed_float16

    @property
    def name(self) -> str:
        return f"{self.kind}-{self.mode}-{self.loss}-b{self.batch}-{self.precision}"

    @property
    def images_per_call(self) -> int:
        return self.batch * (LOOP_BATCHES if self.kind == "loop" else 1)


def mixed_precision_support() -> tuple[str | None, str]:
    """The mixed policy this machine runs natively, or ``None``, and why."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        details = tf.config.experimental.get_device_details(gpus[0])
        cc = details.get("compute_capability", (0, 0))
        if cc >= (7, 0):
            return "mixed_float16", f"GPU compute capability {cc[0]}.{cc[1]} has tensor cores"
        return None, f"GPU compute capability {cc[0]}.{cc[1]} < 7.0: no fast float16"
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        flags = ""
    if "amx_bf16" in flags or "avx512_bf16" in flags:
        return "mixed_bfloat16", "CPU has bfloat16 instructions (avx512_bf16/amx_bf16)"
    return None, "CPU only, without bfloat16 instructions: mixed precision would be emulated"


def measure_matmul_gflops(n: int = 2048, repeats: int = 10) -> float:
    """Best float32 GFLOP/s of an ``n x n`` matmul here: the peak estimate of the roofline."""
    import tensorflow as tf

    a = tf.random.stateless_uniform((n, n), seed=(1, 2))
    b = tf.random.stateless_uniform((n, n), seed=(3, 4))
    matmul = tf.function(lambda x, y: tf.reduce_sum(tf.matmul(x, y)))
    matmul(a, b).numpy()  # warm-up
    best = min(_timed(lambda: matmul(a, b).numpy()) for _ in range(repeats))
    return 2 * n**3 / best / 1e9


def _timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def make_runner(config: BenchConfig, seed: int = 0) -> Callable[[], None]:
    """A callable doing one timed unit of ``config`` (a step, or a pass over the data).

    Built on synthetic images (the content does not change the step's cost); runs under
    a ``MirroredStrategy`` when several devices exist (``step.choose_strategy``).
    """
    import contextlib

    import keras
    import numpy as np
    import tensorflow as tf

    from lossverify.mnist.models import build_model
    from lossverify.mnist.step import (
        accuracy_metric,
        choose_strategy,
        make_train_step,
        resolve_loss,
    )

    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    n = config.images_per_call
    x = rng.uniform(0, 1, (n, 28, 28, 1)).astype(np.float32)
    y = np.eye(10, dtype=np.float32)[rng.integers(0, 10, n)]
    choice = resolve_loss(config.loss, logits=True)
    strategy = choose_strategy()
    previous_policy = keras.mixed_precision.global_policy().name
    keras.mixed_precision.set_global_policy(config.precision)
    try:
        with strategy.scope() if strategy is not None else contextlib.nullcontext():
            model = build_model("functional", logits=True)
            optimizer = keras.optimizers.Adam()
            optimizer.build(model.trainable_variables)  # in scope: see train.train_run
            if config.precision == "mixed_float16":
                optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
            if config.kind == "loop" and config.mode == "fit":
                model.compile(optimizer=optimizer, loss=choice.fn,
                              metrics=[accuracy_metric(choice, "accuracy")])
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)
    train_loss = keras.metrics.Mean()
    train_accuracy = accuracy_metric(choice, "accuracy")

    if config.kind == "loop":
        ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(config.batch).cache()
        if config.mode == "fit":
            return lambda: model.fit(ds, epochs=1, verbose=0, shuffle=False)
        step = make_train_step(model, choice.fn, optimizer, train_loss, train_accuracy,
                               strategy=strategy)
        if strategy is not None:
            ds = strategy.experimental_distribute_dataset(ds)

        def one_pass():
            for images, labels in ds:
                loss = step(images, labels)
            loss.numpy()

        return one_pass

    step = make_train_step(model, choice.fn, optimizer, train_loss, train_accuracy,
                           mode=config.mode, strategy=strategy)
    if strategy is None:
        images, labels = tf.constant(x), tf.constant(y)
        return lambda: step(images, labels).numpy()
    batches = iter(strategy.experimental_distribute_dataset(
        tf.data.Dataset.from_tensors((x, y)).repeat()))
    return lambda: step(*next(batches)).numpy()


# --- the default set of configurations ------------------------------------------------


def default_configs(mixed_policy: str | None) -> list[BenchConfig]:
    """What the benchmark suite and ``lossverify bench`` measure."""
    configs = [BenchConfig(mode=m) for m in ("eager", "function", "xla")]
    configs += [BenchConfig(loss="cce", mode=m) for m in ("function", "xla")]
    for batch in (128, 512):
        configs += [BenchConfig(batch=batch), BenchConfig(batch=batch, loss="cce"),
                    BenchConfig(batch=batch, mode="xla")]
    configs += [BenchConfig(kind="loop", mode=m) for m in ("custom", "fit")]
    if mixed_policy:
        configs += [BenchConfig(batch=512, precision=mixed_policy),
                    BenchConfig(batch=512, mode="xla", precision=mixed_policy)]
    return configs


def timing_plan(config: BenchConfig) -> dict[str, int]:
    """Rounds, iterations per round and warm-up rounds: about 0.1-0.3 s per round."""
    if config.kind == "loop":
        return {"rounds": 8, "iterations": 1, "warmup_rounds": 2}
    scale = 4 if config.mode == "eager" else 1
    iterations = max(1, 256 // (config.batch * scale))
    return {"rounds": 12, "iterations": iterations, "warmup_rounds": 2}


def measure(config: BenchConfig) -> dict:
    """Time ``config`` in-process; a record shaped like a pytest-benchmark entry."""
    run = make_runner(config)
    plan = timing_plan(config)
    for _ in range(plan["warmup_rounds"]):
        run()
    times = []
    for _ in range(plan["rounds"]):
        t0 = time.perf_counter()
        for _ in range(plan["iterations"]):
            run()
        times.append((time.perf_counter() - t0) / plan["iterations"])
    q1, median, q3 = statistics.quantiles(times, n=4)
    return {
        "name": config.name,
        "stats": {"median": median, "q1": q1, "q3": q3, "min": min(times),
                  "max": max(times), "rounds": len(times)},
        "extra_info": {"config": asdict(config), "images_per_call": config.images_per_call},
    }


# --- reporting --------------------------------------------------------------------------


@dataclass
class Row:
    config: BenchConfig
    images_per_s: float
    low: float
    high: float


def _rows(report: dict) -> dict[str, Row]:
    rows = {}
    for bench in report.get("benchmarks", []):
        info = bench.get("extra_info", {})
        if "config" not in info:
            continue  # not one of ours
        config = BenchConfig(**info["config"])
        stats, n = bench["stats"], info["images_per_call"]
        rows[config.name] = Row(config, n / stats["median"], n / stats["q3"], n / stats["q1"])
    return rows


def _ratio(rows, a: BenchConfig, b: BenchConfig) -> float | None:
    if a.name in rows and b.name in rows:
        return rows[a.name].images_per_s / rows[b.name].images_per_s
    return None


def format_report(report: dict, previous: dict | None = None) -> str:
    """The benchmark table, the issue's ratios and the roofline, as text."""
    rows = _rows(report)
    if not rows:
        return "No lossverify MNIST benchmarks in this report."
    old = _rows(previous) if previous else {}
    info = report.get("machine_info", {})
    peak = info.get("lossverify_matmul_gflops")
    lines = [f"{'configuration':<36}{'images/s':>10}  {'IQR':>17}"
             + (f"{'vs previous':>13}" if old else "") + (f"{'% peak':>8}" if peak else "")]
    for name, row in rows.items():
        line = f"{name:<36}{row.images_per_s:>10.0f}  {row.low:>7.0f} - {row.high:>7.0f}"
        if old:
            line += (f"{row.images_per_s / old[name].images_per_s:>12.2f}x"
                     if name in old else f"{'new':>13}")
        if peak:
            line += f"{100 * row.images_per_s * FLOPS_PER_IMAGE_STEP / 1e9 / peak:>7.1f}%"
        lines.append(line)

    lines.append("")
    comparisons = []
    for batch in (32, 128, 512):
        comparisons.append((f"focal-loss step time / built-in CCE step time, b{batch}",
                            _ratio(rows, BenchConfig(loss="cce", batch=batch),
                                   BenchConfig(batch=batch))))
    comparisons += [
        ("tf.function speed-up over eager, b32",
         _ratio(rows, BenchConfig(), BenchConfig(mode="eager"))),
        ("XLA speed-up over tf.function, b32",
         _ratio(rows, BenchConfig(mode="xla"), BenchConfig())),
        ("XLA speed-up over tf.function, b512",
         _ratio(rows, BenchConfig(mode="xla", batch=512), BenchConfig(batch=512))),
        ("custom loop speed-up over fit, b32",
         _ratio(rows, BenchConfig(kind="loop", mode="custom"),
                BenchConfig(kind="loop", mode="fit"))),
    ]
    for policy in ("mixed_bfloat16", "mixed_float16"):
        comparisons.append((f"{policy} speed-up over float32, b512",
                            _ratio(rows, BenchConfig(batch=512, precision=policy),
                                   BenchConfig(batch=512))))
    for bench in report.get("benchmarks", []):
        info_b = bench.get("extra_info", {})
        if "focal_over_cce" in info_b:
            comparisons.append((f"focal / CCE step time, b{info_b['batch']}, interleaved",
                                float(info_b["focal_over_cce"])))
    for label, value in comparisons:
        if value is not None:
            lines.append(f"{label:<56}{value:>7.3f}x")
    if info.get("lossverify_mixed_precision"):
        lines.append(f"mixed precision: {info['lossverify_mixed_precision']}")

    lines.append("")
    mflop = FLOPS_PER_IMAGE_STEP / 1e6
    lines.append(f"Roofline: {mflop:.2f} MFLOP per image per training step "
                 f"(3 x forward {FLOPS_PER_IMAGE_FORWARD / 1e6:.2f} MFLOP: conv 0.39, "
                 "dense 5.54, dense 0.003).")
    b32 = [r for r in rows.values() if r.config.batch == 32 and r.config.kind == "step"]
    if peak and b32:
        best = max(b32, key=lambda r: r.images_per_s)
        achieved = best.images_per_s * FLOPS_PER_IMAGE_STEP / 1e9
        lines.append(f"Peak estimate: {peak:.1f} GFLOP/s, the best float32 2048x2048 matmul "
                     "measured on this machine (an estimate, not a datasheet figure).")
        lines.append(f"Fastest at batch 32: {best.config.name}, {best.images_per_s:.0f} "
                     f"images/s = {achieved:.1f} GFLOP/s = {100 * achieved / peak:.1f}% of "
                     "the peak estimate.")
        lines.append(f"Roofline bound at this peak: {peak * 1e9 / FLOPS_PER_IMAGE_STEP:.0f} "
                     "images/s.")
    return "\n".join(lines)


def machine_info() -> dict:
    """What the report needs about this machine (peak estimate, devices, mixed precision)."""
    import tensorflow as tf

    policy, why = mixed_precision_support()
    return {
        "lossverify_matmul_gflops": measure_matmul_gflops(),
        "lossverify_devices": [d.name for d in tf.config.list_logical_devices()],
        "lossverify_mixed_precision": f"{policy or 'not measured'} ({why})",
        "lossverify_tensorflow": tf.__version__,
    }


def _progress_to_stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def measure_all(progress: Callable[[str], None] | None = None) -> dict:
    """Measure the machine and every default configuration in-process; the report.

    ``progress`` gets one line, ``[i/n elapsed] what``, before each of the ``n``
    configurations, preceded by step 0, the matmul peak estimate, so a run of several
    minutes shows where it is.
    """
    start = time.perf_counter()
    configs = default_configs(mixed_precision_support()[0])  # imports TensorFlow

    def say(step: int, what: str) -> None:
        if progress is not None:
            progress(f"[{step}/{len(configs)} {time.perf_counter() - start:.0f}s] {what}")

    say(0, "float32 matmul peak (the roofline's estimate)")
    info = machine_info()
    benchmarks = []
    for i, config in enumerate(configs, start=1):
        say(i, config.name)
        benchmarks.append(measure(config))
    return {"machine_info": info, "benchmarks": benchmarks}


def main(report_path: Path | None, *, compare: Path | None = None,
         out: Path = Path("./lossverify-out")) -> int:
    """``lossverify bench``: print a report (measuring one in-process if none is given)."""
    from lossverify._io import write_json

    def read(path: Path) -> dict | None:
        try:
            return json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            print(f"lossverify bench: error: {path}: not a readable JSON report ({exc})",
                  file=sys.stderr)
            return None

    previous = read(compare) if compare is not None else None  # before minutes of work
    if compare is not None and previous is None:
        return 2
    if report_path is not None:
        report = read(report_path)
        if report is None:
            return 2
    else:
        print("Measuring in-process, a few minutes (a pytest-benchmark JSON report can be "
              "given instead); progress on stderr...", flush=True)
        report = measure_all(progress=_progress_to_stderr)
        write_json(out / "bench.json", report)
        print(f"Saved {out / 'bench.json'}\n")
    print(format_report(report, previous))
    return 0
