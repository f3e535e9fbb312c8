"""The public NumPy-only tolerance API (``lossverify.close_to_reference``,
``assert_close_to_reference``), as a PyTorch or JAX suite would use it: independent
float32 implementations written here in NumPy pass, the same numbers nudged beyond the
budget fail with a readable report. No TensorFlow (runs in the notf session)."""

from __future__ import annotations

import numpy as np
import pytest

import lossverify

F32 = np.float32


def log_softmax32(z):
    m = z.max(-1, keepdims=True)
    return (z - m - np.log(np.exp(z - m).sum(-1, keepdims=True, dtype=F32))).astype(F32)


def sparse_ce32(labels, z):
    """Float32 cross-entropy from logits with its analytic gradient, the way a
    framework computes it (log-softmax; softmax minus one-hot)."""
    ls = log_softmax32(z)
    value = -np.take_along_axis(ls, labels[:, None], -1)[:, 0]
    grad = np.exp(ls).astype(F32)
    grad[np.arange(len(labels)), labels] -= F32(1)
    return value, grad


def mse32(y, p):
    d = (p - y).astype(F32)
    return (d * d).mean(-1, dtype=F32), (F32(2) * d / F32(p.shape[-1])).astype(F32)


def bce_logits32(y, z):
    """PyTorch's stable form: max(z, 0) - z y + log1p(exp(-|z|)), mean over the last axis."""
    v = (np.maximum(z, 0) - z * y + np.log1p(np.exp(-np.abs(z)))).astype(F32)
    g = ((F32(1) / (F32(1) + np.exp(-z))) - y).astype(F32) / F32(z.shape[-1])
    return v.mean(-1, dtype=F32), g.astype(F32)


def _inputs(seed, n=16, c=5):
    rng = np.random.default_rng(seed)
    z = (rng.normal(size=(n, c)) * rng.choice([1, 5, 30], size=(n, 1))).astype(F32)
    labels = rng.integers(0, c, n).astype(np.int32)
    return rng, z, labels


@pytest.mark.parametrize("seed", range(10))
def test_independent_float32_implementations_are_close(seed):
    rng, z, labels = _inputs(seed)
    value, grad = sparse_ce32(labels, z)
    lossverify.assert_close_to_reference("sparse_categorical_crossentropy", labels, z,
                                         value, grad, from_logits=True)
    y = rng.normal(size=z.shape).astype(F32)
    lossverify.assert_close_to_reference("mean_squared_error", y, z, *mse32(y, z))
    hard = rng.integers(0, 2, size=z.shape).astype(F32)
    lossverify.assert_close_to_reference("binary_crossentropy", hard, z,
                                         *bce_logits32(hard, z), from_logits=True)


@pytest.mark.parametrize("seed", range(5))
def test_a_nudge_of_a_few_budgets_fails_on_that_element_only(seed):
    rng, z, labels = _inputs(seed)
    value, grad = sparse_ce32(labels, z)
    ok = lossverify.close_to_reference("sparse_categorical_crossentropy", labels, z, value,
                                       grad, from_logits=True)
    i = int(rng.integers(0, len(value)))
    wrong = value.astype(np.float64)
    wrong[i] += 3 * ok.budget.value_allowed[i]
    result = lossverify.close_to_reference("sparse_categorical_crossentropy", labels, z,
                                           wrong, grad, from_logits=True)
    assert not result.ok and result.grad is not None and result.grad.ok
    assert result.value_failing.tolist() == [k == i for k in range(len(value))]


def test_the_assertion_names_the_worst_element_its_inputs_and_the_ratio():
    _, z, labels = _inputs(0, n=4, c=3)
    value, grad = sparse_ce32(labels, z)
    grad = grad.astype(np.float64)
    grad[2, 1] *= 1.01
    with pytest.raises(AssertionError) as info:
        lossverify.assert_close_to_reference("sparse_categorical_crossentropy", labels, z,
                                             value, grad, from_logits=True)
    text = str(info.value)
    assert text.startswith("NOT close to reference sparse_categorical_crossentropy "
                           "[from_logits=True] in float32")
    assert "gradient: 1 of 12 elements beyond the budget" in text
    assert "at index (2, 1)" in text and "its sample (2,): y_true=" in text
    assert "value: ok" in text


def test_nan_where_the_reference_is_finite_fails():
    _, z, labels = _inputs(1, n=3)
    value, grad = sparse_ce32(labels, z)
    grad[0, 0] = np.nan
    result = lossverify.close_to_reference("sparse_categorical_crossentropy", labels, z,
                                           value, grad, from_logits=True)
    assert not result.ok and result.grad_failing is not None and result.grad_failing[0, 0]


def test_a_reduced_value_with_sample_weight():
    rng, z, labels = _inputs(2)
    value, grad = sparse_ce32(labels, z)
    w = rng.uniform(0, 2, size=len(value)).astype(F32)
    mean = np.float32(np.sum(value * w, dtype=F32) / F32(len(value)))
    lossverify.assert_close_to_reference(
        "sparse_categorical_crossentropy", labels, z, mean, grad * (w / len(value))[:, None],
        from_logits=True, sample_weight=w, reduction="sum_over_batch_size")
    assert not lossverify.close_to_reference(
        "sparse_categorical_crossentropy", labels, z, mean * 1.001, from_logits=True,
        sample_weight=w, reduction="sum_over_batch_size").ok


@pytest.mark.parametrize(("kwargs", "error", "match"), [
    ({"value": np.zeros((16, 5))}, ValueError, "one loss per sample, shape \\(16,\\), got "
                                               "shape \\(16, 5\\); a per-element result"),
    ({"grad": np.zeros(16)}, ValueError, "grad: expected y_pred's shape"),
    ({"reference": "nope"}, ValueError, "reference: expected one of"),
    ({"dtype": "float8"}, ValueError, "dtype: expected one of"),
    ({"value": np.array(["a"] * 16)}, TypeError, "value: expected numbers"),
])
def test_bad_arguments_are_named(kwargs, error, match):
    _, z, labels = _inputs(3)
    value, grad = sparse_ce32(labels, z)
    args = {"reference": "sparse_categorical_crossentropy", "value": value, "grad": grad,
            **kwargs}
    with pytest.raises(error, match=match):
        lossverify.close_to_reference(args.pop("reference"), labels, z, args.pop("value"),
                                      args.pop("grad"), from_logits=True, **args)


def test_tensors_with_detach_and_cpu_are_read_like_torch_tensors():
    class FakeTensor:  # what the API asks of a PyTorch tensor
        def __init__(self, a):
            self.a, self.dtype = a, "torch.float32"

        def detach(self):
            return self

        def cpu(self):
            return self

        def numpy(self):
            return self.a

    _, z, labels = _inputs(4)
    value, grad = sparse_ce32(labels, z)
    assert lossverify.close_to_reference("sparse_categorical_crossentropy",
                                         FakeTensor(labels), FakeTensor(z), FakeTensor(value),
                                         FakeTensor(grad), from_logits=True).ok


def test_float16_budget_follows_the_dtype():
    rng, z, labels = _inputs(5)
    z16 = z.astype(np.float16)
    ls = log_softmax32(z16.astype(F32)).astype(np.float16)  # computed, then rounded to f16
    value = -np.take_along_axis(ls, labels[:, None], -1)[:, 0]
    assert lossverify.close_to_reference("sparse_categorical_crossentropy", labels, z16,
                                         value, dtype="float16", from_logits=True).ok
    assert not lossverify.close_to_reference("sparse_categorical_crossentropy", labels,
                                             z16, value, dtype="float64",
                                             from_logits=True).ok
