"""Where a report was made: package versions, Python, CPU model and SIMD flags.

TensorFlow's last-bit rounding depends on the machine (its kernels take AVX-512 paths
where the CPU has them, AVX2 paths otherwise), so every report names its environment.
Standard library only: versions are read from the installed distributions' metadata
(:func:`importlib.metadata.version`), never by importing the package, so describing the
environment does not load TensorFlow.
"""

from __future__ import annotations

import functools
import importlib.metadata
import platform
from collections.abc import Mapping
from typing import Any

__all__ = ["SIMD_FLAGS", "describe", "summary_line"]

#: The /proc/cpuinfo flags that change which vectorised kernels (and so which roundings)
#: TensorFlow and NumPy use.
SIMD_FLAGS = frozenset({
    "sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl",
    "avx512_bf16", "avx512_fp16", "amx_bf16",
})

NOT_INSTALLED = "not installed"

#: describe() key -> distribution name, in summary_line order, with its display name.
_PACKAGES = (
    ("lossverify", "lossverify", "lossverify"),
    ("tensorflow", "tensorflow", "TensorFlow"),
    ("keras", "keras", "Keras"),
    ("numpy", "numpy", "NumPy"),
    ("hypothesis", "hypothesis", "Hypothesis"),
)


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return NOT_INSTALLED


def _cpuinfo() -> dict[str, str]:
    """The first ``model name`` and ``flags`` entries of /proc/cpuinfo ({} if unreadable)."""
    found: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                key, sep, value = line.partition(":")
                key = key.strip()
                if sep and key in ("model name", "flags") and key not in found:
                    found[key] = value.strip()
                    if len(found) == 2:
                        break
    except OSError:
        return {}
    return found


@functools.lru_cache(maxsize=1)
def _describe() -> dict[str, Any]:
    info = _cpuinfo()
    env: dict[str, Any] = {key: _version(dist) for key, dist, _ in _PACKAGES}
    if env["lossverify"] == NOT_INSTALLED:  # a source checkout on sys.path, not installed
        import lossverify

        env["lossverify"] = lossverify.__version__
    env["python"] = platform.python_version()
    env["cpu_model"] = info.get("model name") or platform.processor() or "unknown"
    env["simd"] = sorted(SIMD_FLAGS.intersection(info.get("flags", "").split()))
    env["machine"] = platform.machine()
    return env


def describe() -> dict[str, Any]:
    """The environment, computed once per process: ``lossverify``, ``tensorflow``,
    ``keras``, ``numpy``, ``hypothesis`` (versions, ``"not installed"`` if absent),
    ``python``, ``cpu_model``, ``simd`` (the sorted :data:`SIMD_FLAGS` the CPU has; empty
    if /proc/cpuinfo is unreadable) and ``machine``. A fresh copy on each call."""
    env = _describe()
    return {**env, "simd": list(env["simd"])}


def summary_line(env: Mapping[str, Any]) -> str:
    """One line, e.g. ``lossverify 0.1.0, TensorFlow 2.21.0, Keras 3.15.1, NumPy 2.4.0,
    Hypothesis 6.155.2 on AMD EPYC (x86_64; avx, avx2, fma; no avx512f)``. Always says
    whether the CPU has avx512f: TensorFlow's last-bit rounding differs between AVX-512
    and AVX2 machines."""
    versions = ", ".join(f"{shown} {env[key]}" for key, _, shown in _PACKAGES)
    simd = list(env["simd"])
    flags = ", ".join(simd) if simd else "no SIMD flags found"
    avx512 = "with avx512f" if "avx512f" in simd else "no avx512f"
    return f"{versions} on {env['cpu_model']} ({env['machine']}; {flags}; {avx512})"
