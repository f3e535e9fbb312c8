"""Shared test helpers. Keep this small and generic: fixtures only, no test logic."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest


def _central_difference(f: Callable[[np.ndarray], np.ndarray], x: np.ndarray, axis: int = -1,
                        h_rel: float = 1e-6) -> np.ndarray:
    """Float64 central differences of a per-sample function along its class axis.

    ``f`` maps ``x`` to one value per sample (``x``'s shape without ``axis``), and each
    sample's value depends only on that sample's slice. Perturbing class ``j`` of every
    sample at once therefore gives ``d f[i] / d x[i, j]`` for all ``i`` in two calls.
    The step is ``h_rel * max(|x|, 1)``; the step actually taken is recomputed from the
    rounded ``x + h`` and ``x - h`` so the division uses the exact difference.
    """
    x = np.asarray(x, dtype=np.float64)
    ax = axis % x.ndim
    h = h_rel * np.maximum(np.abs(x), 1.0)
    grad = np.empty_like(x)
    for j in range(x.shape[ax]):
        idx = (slice(None),) * ax + (j,)
        xp, xm = x.copy(), x.copy()
        xp[idx] += h[idx]
        xm[idx] -= h[idx]
        grad[idx] = (np.asarray(f(xp)) - np.asarray(f(xm))) / (xp[idx] - xm[idx])
    return grad


@pytest.fixture(scope="session")
def central_difference() -> Callable[..., np.ndarray]:
    """``central_difference(f, x, axis=-1, h_rel=1e-6)``: see :func:`_central_difference`.

    Session-scoped so Hypothesis ``@given`` tests can use it.
    """
    return _central_difference


def pytest_make_parametrize_id(config, val, argname):
    """Stable test ids for objects (loss instances, functions): the default repr holds a
    memory address, which differs between pytest-xdist workers and breaks collection."""
    if val is None or isinstance(val, str | int | float | bool | tuple | list):
        return None
    name = getattr(val, "__name__", None) or getattr(val, "name", None)
    return str(name) if isinstance(name, str) else type(val).__name__
