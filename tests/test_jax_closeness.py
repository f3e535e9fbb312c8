"""JAX and optax losses against lossverify's references through the NumPy-only tolerance
API, as a JAX user's own suite would use it: values and gradients (``jax.vjp`` and
``jax.value_and_grad``), eager and ``jax.jit``, float32 and float64 (x64 enabled, every
array's dtype explicit), and wrong variants that must fail. Skipped without JAX and
optax; ``nox -s frameworks`` installs them (no TensorFlow there)."""

from __future__ import annotations

import pytest

jax = pytest.importorskip("jax")
optax = pytest.importorskip("optax")
jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from lossverify import assert_close_to_reference, close_to_reference  # noqa: E402

SEEDS = [0, 1, 2, 3]
SCALES = [1.0, 5.0, 30.0, 100.0]
DTYPES = {"float32": jnp.float32, "float64": jnp.float64}
MODES = ["eager", "jit"]


def _z(seed, scale, shape, dt):
    return (jax.random.normal(jax.random.key(seed), shape, dtype=jnp.float64) * scale
            ).astype(DTYPES[dt])


def _vjp(fn, z, mode):
    f = jax.jit(fn) if mode == "jit" else fn
    value, vjp = jax.vjp(f, z)
    grad, = vjp(jnp.ones_like(value))
    assert value.dtype == z.dtype and grad.dtype == z.dtype
    return value, grad


def _grad(fn, z, mode):
    """Same via jax.value_and_grad of the sum."""
    vg = jax.value_and_grad(lambda z: fn(z).sum())
    if mode == "jit":
        vg = jax.jit(vg)
    _, grad = vg(z)
    value = (jax.jit(fn) if mode == "jit" else fn)(z)
    return value, grad



# ---------------------------------------------------------------- correct losses pass

@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("targets", ["soft", "onehot"])
def test_softmax_cross_entropy(seed, scale, dt, mode, targets):
    z = _z(seed, scale, (32, 10), dt)
    k = jax.random.key(100 + seed)
    if targets == "soft":
        y = jax.nn.softmax(jax.random.normal(k, (32, 10), dtype=jnp.float64) * 2).astype(DTYPES[dt])
    else:
        y = jax.nn.one_hot(jax.random.randint(k, (32,), 0, 10), 10, dtype=DTYPES[dt])
    value, grad = _vjp(lambda z: optax.softmax_cross_entropy(z, y), z, mode)
    assert_close_to_reference("categorical_crossentropy", y, z, value, grad,
                              dtype=dt, from_logits=True)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("seed", SEEDS[:2])
def test_softmax_cross_entropy_smoothed_labels(seed, dt, mode):
    z = _z(seed, 5.0, (32, 10), dt)
    y = jax.nn.one_hot(jax.random.randint(jax.random.key(150 + seed), (32,), 0, 10), 10,
                       dtype=DTYPES[dt])
    value, grad = _vjp(lambda z: optax.softmax_cross_entropy(z, optax.smooth_labels(y, 0.1)),
                       z, mode)
    assert_close_to_reference("categorical_crossentropy", y, z, value, grad,
                              dtype=dt, from_logits=True, label_smoothing=0.1)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("seed", SEEDS)
def test_softmax_cross_entropy_with_integer_labels(seed, scale, dt, mode):
    z = _z(seed, scale, (32, 10), dt)
    labels = jax.random.randint(jax.random.key(200 + seed), (32,), 0, 10)
    value, grad = _grad(lambda z: optax.softmax_cross_entropy_with_integer_labels(z, labels),
                        z, mode)
    assert_close_to_reference("sparse_categorical_crossentropy", labels, z, value, grad,
                              dtype=dt, from_logits=True)


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("seed", SEEDS[:2])
def test_integer_labels_class_axis_1(seed, dt):
    z = _z(seed, 5.0, (4, 6, 5), dt)
    labels = jax.random.randint(jax.random.key(250 + seed), (4, 5), 0, 6)
    value, grad = _vjp(
        lambda z: optax.softmax_cross_entropy_with_integer_labels(z, labels, axis=1), z, "eager")
    assert_close_to_reference("sparse_categorical_crossentropy", labels, z, value, grad,
                              dtype=dt, from_logits=True, axis=1)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("targets", ["hard", "soft"])
def test_sigmoid_binary_cross_entropy(seed, scale, dt, mode, targets):
    z = _z(seed, scale, (16, 7), dt)
    k = jax.random.key(300 + seed)
    y = (jax.random.bernoulli(k, 0.5, (16, 7)) if targets == "hard"
         else jax.random.uniform(k, (16, 7), dtype=jnp.float64)).astype(DTYPES[dt])
    value, grad = _vjp(lambda z: optax.sigmoid_binary_cross_entropy(z, y).mean(-1), z, mode)
    assert_close_to_reference("binary_crossentropy", y, z, value, grad,
                              dtype=dt, from_logits=True)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("seed", SEEDS)
def test_l2_loss_as_mse(seed, scale, dt, mode):
    p = _z(seed, scale, (16, 7), dt)
    y = _z(400 + seed, scale, (16, 7), dt)
    value, grad = _grad(lambda p: optax.l2_loss(p, y).mean(-1) / 0.5, p, mode)
    assert_close_to_reference("mean_squared_error", y, p, value, grad, dtype=dt)


@pytest.mark.parametrize("dt", DTYPES)
def test_mean_reduction(dt):
    z = _z(7, 5.0, (32, 10), dt)
    labels = jax.random.randint(jax.random.key(7), (32,), 0, 10)
    value, grad = jax.value_and_grad(
        lambda z: optax.softmax_cross_entropy_with_integer_labels(z, labels).mean())(z)
    assert_close_to_reference("sparse_categorical_crossentropy", labels, z, value, grad,
                              dtype=dt, from_logits=True, reduction="sum_over_batch_size")


# ---------------------------------------------------------------- wrong losses fail

@pytest.mark.parametrize("scale", [1.0, 5.0, 30.0])
def test_wrong_scaled_cross_entropy_fails(scale):
    z = _z(0, scale, (32, 10), "float32")
    labels = jax.random.randint(jax.random.key(0), (32,), 0, 10)
    value, grad = _vjp(
        lambda z: 1.001 * optax.softmax_cross_entropy_with_integer_labels(z, labels), z, "eager")
    r = close_to_reference("sparse_categorical_crossentropy", labels, z, value, grad,
                           from_logits=True)
    assert not r.ok and r.value_failing.any() and r.grad_failing.any()
    with pytest.raises(AssertionError, match="NOT close to reference"):
        assert_close_to_reference("sparse_categorical_crossentropy", labels, z, value, grad,
                                  from_logits=True)


def test_naive_log_softmax_overflows_and_fails():
    z = _z(0, 100.0, (32, 10), "float32")
    y = jax.nn.one_hot(jax.random.randint(jax.random.key(0), (32,), 0, 10), 10,
                       dtype=jnp.float32)

    def naive(z):
        e = jnp.exp(z)
        return -(y * jnp.log(e / e.sum(-1, keepdims=True))).sum(-1)

    value, grad = _vjp(naive, z, "eager")
    assert not jnp.isfinite(value).all()
    with pytest.raises(AssertionError, match="NOT close"):
        assert_close_to_reference("categorical_crossentropy", y, z, value, grad,
                                  from_logits=True)


def test_naive_sigmoid_log_fails_for_large_logits():
    # -(y log sigmoid(z) + (1-y) log(1 - sigmoid(z))): log(0) at |z| = 30 in float32
    z = _z(0, 30.0, (16, 7), "float32")
    y = jax.random.bernoulli(jax.random.key(1), 0.5, (16, 7)).astype(jnp.float32)

    def naive(z):
        p = jax.nn.sigmoid(z)
        return -(y * jnp.log(p) + (1 - y) * jnp.log(1 - p)).mean(-1)

    value, grad = _vjp(naive, z, "eager")
    with pytest.raises(AssertionError, match="NOT close"):
        assert_close_to_reference("binary_crossentropy", y, z, value, grad, from_logits=True)


def test_l2_loss_without_rescaling_is_not_mse():
    # a realistic mistake: l2_loss is 0.5 * (p - y)**2, not the squared error
    p = _z(0, 1.0, (16, 7), "float32")
    y = _z(1, 1.0, (16, 7), "float32")
    value, grad = _vjp(lambda p: optax.l2_loss(p, y).mean(-1), p, "eager")
    with pytest.raises(AssertionError, match="NOT close"):
        assert_close_to_reference("mean_squared_error", y, p, value, grad)


def test_wrong_gradient_only_fails():
    z = _z(0, 5.0, (32, 10), "float32")
    y = jax.nn.one_hot(jnp.arange(32) % 10, 10, dtype=jnp.float32)
    value, grad = _vjp(lambda z: optax.softmax_cross_entropy(z, y), z, "eager")
    grad = grad.at[3, 4].multiply(1.0001)  # one element off by 1e-4
    r = close_to_reference("categorical_crossentropy", y, z, value, grad, from_logits=True)
    assert r.value.ok and not r.ok
    assert np.argwhere(r.grad_failing).tolist() == [[3, 4]]
