"""Shared by the loss families' meta-test files (tests/test_meta_<family>.py): the Keras
implementations of a family's records, one pytest parameter per implementation and
default setting, and a seed sweep that reports every failing seed at once."""

from __future__ import annotations

import pytest

import lossverify
from lossverify import specs as S


def keras_jobs(names):
    """``(reference, implementation, params)`` for each record in ``names``, each of its
    implementations and default settings."""
    for name in names:
        spec = S.SPECS[name]
        for params in spec.default_grid:
            for impl in spec.implementations:
                yield pytest.param(name, impl, dict(params),
                                   id=f"{impl.label}-{params or 'defaults'}")


def assert_seeds_pass(make_loss, reference, params, seeds, checks):
    """``verify`` (5 draws) of ``make_loss(seed)`` passes for every seed in ``seeds``."""
    failures = []
    for seed in seeds:
        report = lossverify.verify(make_loss(seed), reference, max_examples=5, seed=seed,
                                   checks=checks, **params)
        if not report.ok:
            failures.append(str(report))
    assert not failures, f"{len(failures)} of {len(seeds)} seeds failed:\n\n" + \
        "\n\n".join(failures)
