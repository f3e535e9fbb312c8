"""Meta-tests: correct implementations pass ``lossverify.verify`` with no false alarm.

* Every implementation in :data:`lossverify.specs.SPECS` (Keras's built-in class and
  function, the notes' losses) for every setting of its spec's ``default_grid``, over
  seeds 0..19. The full sweep (40 runs x 20 seeds, about 4 CPU-minutes) is marked
  ``slow``; an always-run version covers three representative specs over the same 20
  seeds with fewer examples.
* Hand-written correct variants (CCE as ``-sum(y * log_softmax(z))``, a stable BCE from
  logits, sparse CE through ``tf.nn``, the focal loss via ``tf.math.log_softmax``) must
  pass all four checks, XLA included.

Known upstream deviations (verdict ``known-deviation``) count as ok: ``report.ok`` already
says so.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import pytest  # noqa: E402

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

import lossverify  # noqa: E402
from lossverify import specs as S  # noqa: E402

SEEDS = range(20)
SWEEP_CHECKS = ("value", "gradient", "graph")
#: Always-run subset: one probabilistic, one binary and one notes' loss.
REPRESENTATIVE = ("categorical_crossentropy", "binary_crossentropy", "focal_loss")


def _params_id(params):
    return ",".join(f"{k}={v}" for k, v in params.items()) or "defaults"


def _jobs(names=None):
    for name, spec in S.SPECS.items():
        if names is not None and name not in names:
            continue
        for params in spec.default_grid:
            for impl in spec.implementations:
                yield pytest.param(name, impl, dict(params),
                                   id=f"{name}-{impl.label}-{_params_id(params)}")


def _representative_jobs():
    """Per representative spec: the class on its first grid setting and the function on
    its second (6 jobs), so the always-run test stays within CI time."""
    for name in REPRESENTATIVE:
        spec = S.SPECS[name]
        classes = [i for i in spec.implementations if i.form == "class"]
        functions = [i for i in spec.implementations if i.form == "function"]
        grid = spec.default_grid
        for impl, params in ((classes[0], grid[0]), (functions[0], grid[1 % len(grid)])):
            yield pytest.param(name, impl, dict(params),
                               id=f"{name}-{impl.label}-{_params_id(params)}")


def _verify_seeds(name, impl, params, seeds, max_examples, checks):
    failures = []
    for seed in seeds:
        loss = S.build_implementation(impl, params)
        report = lossverify.verify(loss, name, max_examples=max_examples, seed=seed,
                                   checks=checks, **params)
        if not report.ok:
            failures.append(str(report))
    assert not failures, f"{len(failures)} of {len(seeds)} seeds failed:\n\n" + \
        "\n\n".join(failures)


@pytest.mark.parametrize(("name", "impl", "params"), list(_representative_jobs()))
def test_builtin_representative_20_seeds(name, impl, params):
    _verify_seeds(name, impl, params, list(SEEDS), 5, SWEEP_CHECKS)


@pytest.mark.slow
@pytest.mark.parametrize(("name", "impl", "params"), list(_jobs()))
def test_builtin_full_sweep_20_seeds(name, impl, params):
    _verify_seeds(name, impl, params, list(SEEDS), 8, SWEEP_CHECKS)


def test_every_spec_has_a_job():
    names = {p.values[0] for p in _jobs()}
    assert names == set(S.SPECS)


# ------------------------------------------------------- hand-written correct variants


def cce_log_softmax(y_true, y_pred):
    """Categorical CE from logits: -sum(y * log_softmax(z))."""
    y_true = tf.cast(y_true, y_pred.dtype)
    return -tf.reduce_sum(y_true * tf.nn.log_softmax(y_pred, axis=-1), axis=-1)


def bce_logits_by_hand(y_true, y_pred):
    """Stable BCE from logits: -y log sigmoid(z) - (1 - y) log sigmoid(-z), mean over the
    last axis. (The textbook max(z, 0) - z y + log1p(exp(-|z|)) is *not* correct here: its
    gradient at z == 0 is 1 - y, not 0.5 - y, and the gradient check rejects it; see
    tests/test_meta_wrong_losses.py.)"""
    y_true = tf.cast(y_true, y_pred.dtype)
    per = -y_true * tf.math.log_sigmoid(y_pred) - (1.0 - y_true) * tf.math.log_sigmoid(-y_pred)
    return tf.reduce_mean(per, axis=-1)


def scce_tf_nn(y_true, y_pred):
    """Sparse CE from logits through tf.nn."""
    labels = tf.cast(tf.reshape(y_true, tf.shape(y_pred)[:-1]), tf.int32)
    return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=y_pred)


def _focal_log_softmax(gamma):
    """The notes' focal loss via log_softmax: log p = max(log_softmax(z), log eps) is
    log(clip(softmax(z), eps, 1)) (the notes' clip, upper bound 1.0), 1 - p =
    -expm1(log p), and (1 - p)**gamma with the derivative's limit at 1 - p = 0 (where
    tf.pow's gradient is 0 * inf = NaN for gamma < 1; the double tf.where keeps the NaN
    out of the unused branch)."""
    def focal(y_true, y_pred):
        y_true = tf.cast(y_true, y_pred.dtype)
        log_eps = tf.math.log(tf.constant(keras.config.epsilon(), y_pred.dtype))
        log_p = tf.maximum(tf.nn.log_softmax(y_pred, axis=-1), log_eps)
        a = -tf.math.expm1(log_p)
        positive = a > 0
        factor = tf.where(positive, tf.pow(tf.where(positive, a, tf.ones_like(a)), gamma),
                          tf.zeros_like(a) if gamma > 0 else tf.ones_like(a))
        return tf.reduce_sum(-y_true * factor * log_p, axis=-1)

    focal.__name__ = f"focal_log_softmax_gamma{gamma:g}"
    return focal


HAND_WRITTEN = [
    pytest.param(lambda: cce_log_softmax, "categorical_crossentropy", {"from_logits": True},
                 id="cce-log-softmax"),
    pytest.param(lambda: bce_logits_by_hand, "binary_crossentropy", {"from_logits": True},
                 id="bce-logits-by-hand"),
    pytest.param(lambda: scce_tf_nn, "sparse_categorical_crossentropy", {"from_logits": True},
                 id="scce-tf-nn"),
    pytest.param(lambda: _focal_log_softmax(2.0), "focal_loss", {"gamma": 2.0},
                 id="focal-log-softmax-gamma2"),
    pytest.param(lambda: _focal_log_softmax(0.5), "focal_loss", {"gamma": 0.5},
                 id="focal-log-softmax-gamma0.5"),
]


@pytest.mark.parametrize(("factory", "reference", "params"), HAND_WRITTEN)
def test_hand_written_correct_variant_passes_all_checks(factory, reference, params):
    failures = []
    for seed in range(3):
        report = lossverify.verify(factory(), reference, max_examples=15, seed=seed, **params)
        assert set(report.checks) == {"value", "gradient", "graph", "xla"}
        if not report.ok:
            failures.append(str(report))
    assert not failures, "\n\n".join(failures)


@pytest.mark.slow
@pytest.mark.parametrize(("factory", "reference", "params"), HAND_WRITTEN)
def test_hand_written_correct_variant_20_seeds(factory, reference, params):
    failures = []
    for seed in SEEDS:
        report = lossverify.verify(factory(), reference, max_examples=30, seed=seed, **params)
        if not report.ok:
            failures.append(str(report))
    assert not failures, "\n\n".join(failures)
