"""PyTorch's losses against lossverify's references through the NumPy-only tolerance API,
as a PyTorch user's own suite would use it: values and autograd gradients, float32 and
float64, several seeds and logit scales (saturated rows at 30 and 100), and wrong variants
that must fail. Skipped without PyTorch; ``nox -s frameworks`` installs it (no
TensorFlow there)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

from lossverify import assert_close_to_reference, close_to_reference  # noqa: E402

SEEDS = [0, 1, 2, 3]
SCALES = [1.0, 5.0, 30.0, 100.0]
DTYPES = {"float32": torch.float32, "float64": torch.float64}


def _logits(seed, scale, shape, dtype):
    g = torch.Generator().manual_seed(seed)
    z = (torch.randn(shape, generator=g, dtype=torch.float64) * scale).to(dtype)
    return z.requires_grad_(True)


def _value_grad(fn, z):
    value = fn(z)
    grad, = torch.autograd.grad(value.sum(), z)
    return value, grad



# ---------------------------------------------------------------- correct losses pass

@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("seed", SEEDS)
def test_cross_entropy_class_indices(seed, scale, dt):
    z = _logits(seed, scale, (32, 10), DTYPES[dt])
    labels = torch.randint(0, 10, (32,), generator=torch.Generator().manual_seed(100 + seed))
    value, grad = _value_grad(lambda z: F.cross_entropy(z, labels, reduction="none"), z)
    r = assert_close_to_reference("sparse_categorical_crossentropy", labels, z, value, grad,
                                  dtype=dt, from_logits=True)
    assert r.ok and r.value_failing.shape == (32,) and r.grad_failing.shape == (32, 10)


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("seed", SEEDS)
def test_cross_entropy_class_indices_channels_axis(seed, scale, dt):
    # torch's (N, C, L) layout: class axis 1 -> reference axis=1
    z = _logits(seed, scale, (4, 6, 5), DTYPES[dt])
    labels = torch.randint(0, 6, (4, 5), generator=torch.Generator().manual_seed(200 + seed))
    value, grad = _value_grad(lambda z: F.cross_entropy(z, labels, reduction="none"), z)
    assert_close_to_reference("sparse_categorical_crossentropy", labels, z, value, grad,
                              dtype=dt, from_logits=True, axis=1)


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("targets", ["soft", "onehot"])
def test_cross_entropy_probability_targets(seed, scale, dt, targets):
    z = _logits(seed, scale, (32, 10), DTYPES[dt])
    g = torch.Generator().manual_seed(300 + seed)
    if targets == "soft":
        y = torch.softmax(torch.randn(32, 10, generator=g, dtype=torch.float64) * 2, -1)
    else:
        y = F.one_hot(torch.randint(0, 10, (32,), generator=g), 10).to(torch.float64)
    y = y.to(DTYPES[dt])
    value, grad = _value_grad(lambda z: F.cross_entropy(z, y, reduction="none"), z)
    assert_close_to_reference("categorical_crossentropy", y, z, value, grad,
                              dtype=dt, from_logits=True)


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("scale", [1.0, 30.0])
@pytest.mark.parametrize("seed", SEEDS[:2])
def test_cross_entropy_label_smoothing(seed, scale, dt):
    # torch's label_smoothing=eps with index targets == Keras's on one-hot targets
    z = _logits(seed, scale, (32, 10), DTYPES[dt])
    labels = torch.randint(0, 10, (32,), generator=torch.Generator().manual_seed(400 + seed))
    value, grad = _value_grad(
        lambda z: F.cross_entropy(z, labels, reduction="none", label_smoothing=0.1), z)
    y = F.one_hot(labels, 10).to(DTYPES[dt])
    assert_close_to_reference("categorical_crossentropy", y, z, value, grad,
                              dtype=dt, from_logits=True, label_smoothing=0.1)


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("seed", SEEDS[:2])
def test_cross_entropy_mean_reduction(seed, dt):
    z = _logits(seed, 5.0, (32, 10), DTYPES[dt])
    labels = torch.randint(0, 10, (32,), generator=torch.Generator().manual_seed(500 + seed))
    value, grad = _value_grad(lambda z: F.cross_entropy(z, labels), z)  # scalar mean
    assert value.ndim == 0
    assert_close_to_reference("sparse_categorical_crossentropy", labels, z, value, grad,
                              dtype=dt, from_logits=True, reduction="sum_over_batch_size")


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("targets", ["hard", "soft"])
def test_bce_with_logits(seed, scale, dt, targets):
    z = _logits(seed, scale, (16, 7), DTYPES[dt])
    g = torch.Generator().manual_seed(600 + seed)
    y = torch.randint(0, 2, (16, 7), generator=g).to(torch.float64) if targets == "hard" \
        else torch.rand(16, 7, generator=g, dtype=torch.float64)
    y = y.to(DTYPES[dt])
    value, grad = _value_grad(
        lambda z: F.binary_cross_entropy_with_logits(z, y, reduction="none").mean(-1), z)
    assert_close_to_reference("binary_crossentropy", y, z, value, grad,
                              dtype=dt, from_logits=True)


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("seed", SEEDS)
def test_mse_loss(seed, scale, dt):
    p = _logits(seed, scale, (16, 7), DTYPES[dt])
    y = (torch.randn(16, 7, generator=torch.Generator().manual_seed(700 + seed),
                     dtype=torch.float64) * scale).to(DTYPES[dt])
    value, grad = _value_grad(lambda p: F.mse_loss(p, y, reduction="none").mean(-1), p)
    assert_close_to_reference("mean_squared_error", y, p, value, grad, dtype=dt)


# ---------------------------------------------------------------- wrong losses fail

def _ce_setup(scale=5.0, dt=torch.float32, seed=0):
    z = _logits(seed, scale, (32, 10), dt)
    labels = torch.randint(0, 10, (32,), generator=torch.Generator().manual_seed(seed))
    return z, labels


@pytest.mark.parametrize("scale", [1.0, 5.0, 30.0])
def test_wrong_scaled_cross_entropy_fails(scale):
    z, labels = _ce_setup(scale)
    value, grad = _value_grad(lambda z: 1.001 * F.cross_entropy(z, labels, reduction="none"), z)
    r = close_to_reference("sparse_categorical_crossentropy", labels, z, value, grad,
                           dtype="float32", from_logits=True)
    assert not r.ok and r.value_failing.any() and r.grad_failing.any()
    with pytest.raises(AssertionError, match="NOT close to reference"):
        assert_close_to_reference("sparse_categorical_crossentropy", labels, z, value, grad,
                                  dtype="float32", from_logits=True)


def test_wrong_gradient_only_fails():
    z, labels = _ce_setup()
    value, grad = _value_grad(lambda z: F.cross_entropy(z, labels, reduction="none"), z)
    r = close_to_reference("sparse_categorical_crossentropy", labels, z, value, grad * 1.001,
                           dtype="float32", from_logits=True)
    assert r.value.ok and not r.ok and r.grad_failing.any()
    with pytest.raises(AssertionError, match="gradient"):
        assert_close_to_reference("sparse_categorical_crossentropy", labels, z, value,
                                  grad * 1.001, dtype="float32", from_logits=True)


def test_naive_log_softmax_overflows_and_fails():
    z, labels = _ce_setup(scale=100.0)

    def naive(z):
        e = torch.exp(z)
        return -torch.log(e / e.sum(-1, keepdim=True)).gather(1, labels[:, None])[:, 0]

    value, grad = _value_grad(naive, z)
    assert not torch.isfinite(value).all()  # it really overflows
    with pytest.raises(AssertionError, match="NOT close"):
        assert_close_to_reference("sparse_categorical_crossentropy", labels, z, value, grad,
                                  dtype="float32", from_logits=True)


def test_bce_on_sigmoid_probabilities_fails_for_large_logits():
    # binary_cross_entropy(sigmoid(z)) clamps log at -100 and saturates: wrong at |z|=30
    z = _logits(0, 30.0, (16, 7), torch.float32)
    y = torch.randint(0, 2, (16, 7), generator=torch.Generator().manual_seed(1)).float()
    value, grad = _value_grad(
        lambda z: F.binary_cross_entropy(torch.sigmoid(z), y, reduction="none").mean(-1), z)
    with pytest.raises(AssertionError, match="NOT close"):
        assert_close_to_reference("binary_crossentropy", y, z, value, grad,
                                  dtype="float32", from_logits=True)


def test_mse_wrong_factor_fails():
    p = _logits(0, 1.0, (16, 7), torch.float32)
    y = torch.randn(16, 7, generator=torch.Generator().manual_seed(9))
    value, grad = _value_grad(lambda p: F.mse_loss(p, y, reduction="none").sum(-1), p)  # sum
    with pytest.raises(AssertionError):
        assert_close_to_reference("mean_squared_error", y, p, value, grad, dtype="float32")


def test_float64_claim_catches_float32_computation():
    # computed in float32 but claimed float64: the tighter budget should notice
    z, labels = _ce_setup(scale=5.0, dt=torch.float32)
    value, grad = _value_grad(lambda z: F.cross_entropy(z, labels, reduction="none"), z)
    r = close_to_reference("sparse_categorical_crossentropy", labels, z.double(),
                           value.double(), grad.double(), dtype="float64", from_logits=True)
    assert not r.ok


def test_shape_error_is_readable():
    z, labels = _ce_setup()
    value, grad = _value_grad(lambda z: F.cross_entropy(z, labels, reduction="none"), z)
    with pytest.raises(ValueError, match="shape"):
        close_to_reference("sparse_categorical_crossentropy", labels, z, value[:, None], grad,
                           from_logits=True)
