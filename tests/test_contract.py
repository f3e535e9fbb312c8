"""What a user's loss declares (``lossverify.contract``), without TensorFlow: how a loss
is built from its own parameters, which parameter mismatches warn, the input domain and
the output adapter. Runs in the NumPy-only nox session too."""

from __future__ import annotations

import functools
import inspect
import json
import subprocess
import sys

import numpy as np
import pytest

from lossverify import contract as K
from lossverify.report import to_strict_json

# ------------------------------------------------------------------- building the loss


def per_sample(y_true, y_pred, gamma=2.0):
    return (y_pred - y_true) ** 2 * gamma


def factory(gamma=2.0, alpha=0.25):
    return functools.partial(per_sample, gamma=gamma)


class NeedsGamma:
    def __init__(self, gamma):
        self.gamma = gamma

    def __call__(self, y_true, y_pred):
        return per_sample(y_true, y_pred, self.gamma)


@pytest.mark.parametrize(("obj", "kind"), [
    (per_sample, "loss"), (lambda y, p: p, "loss"), (factory, "factory"),
    (NeedsGamma, "class"), (NeedsGamma(1.0), "loss"), (np.add, "loss")])
def test_kind_of_tells_losses_factories_and_classes_apart(obj, kind):
    assert K.kind_of(obj) == kind


def test_build_loss_constructs_calls_binds_or_keeps():
    y, p = np.zeros(3), np.ones(3)
    loss, how = K.build_loss(NeedsGamma, {"gamma": 3.0})
    assert how == "constructed" and loss(y, p).tolist() == [3.0] * 3
    loss, how = K.build_loss(factory, {"gamma": 5.0})
    assert how == "from factory" and loss(y, p).tolist() == [5.0] * 3
    loss, how = K.build_loss(per_sample, {"gamma": 7.0})
    assert how == "bound" and loss(y, p).tolist() == [7.0] * 3
    assert loss.__wrapped__ is per_sample  # known deviations still recognise the function
    loss, how = K.build_loss(per_sample, None)
    assert how == "as given" and loss is per_sample


@pytest.mark.parametrize(("obj", "params", "match"), [
    (NeedsGamma, {}, "cannot construct NeedsGamma"),
    (NeedsGamma, {"gama": 1}, "cannot construct NeedsGamma"),
    (factory, {"gama": 1}, r"factory takes \['alpha', 'gamma'\], got unexpected \['gama'\]"),
    (per_sample, {"gama": 1}, r"per_sample takes \['gamma'\] besides"),
])
def test_build_loss_names_the_parameter_it_cannot_use(obj, params, match):
    with pytest.raises(TypeError, match=match):
        K.build_loss(obj, params)


def test_a_factory_that_returns_no_loss_is_an_error():
    with pytest.raises(TypeError, match="expected a loss"):
        K.build_loss(lambda gamma=1.0: 3.0, {"gamma": 2.0})


REFERENCE = {"gamma": 2.0, "alpha": 0.25}  # defaults of a reference's parameters


@pytest.mark.parametrize(("obj", "loss_params", "ref_params", "expected"), [
    # the case: the reference gets gamma=0.5, the loss keeps its own 2.0
    (per_sample, {}, {"gamma": 0.5}, "goes to the reference only; the loss keeps its own "
                                     "gamma=2.0"),
    (per_sample, {"gamma": 0.5}, {}, "goes to the loss only; the reference keeps its "
                                     "default gamma=2.0"),
    (per_sample, {"gamma": 0.5}, {"gamma": 1.0}, "the reference gets 1.0 and the loss 0.5"),
    (NeedsGamma, {"gamma": 0.5}, {}, "goes to the loss only"),
])
def test_a_parameter_given_to_one_side_only_is_named(obj, loss_params, ref_params, expected):
    loss, _ = K.build_loss(obj, loss_params)
    notes = K.mismatched_params(obj, loss, loss_params, ref_params, REFERENCE)
    assert len(notes) == 1 and expected in notes[0], notes


@pytest.mark.parametrize(("obj", "loss_params", "ref_params"), [
    (per_sample, {"gamma": 0.5}, {"gamma": 0.5}),   # both sides
    (per_sample, {}, {"gamma": 2.0}),               # the loss's default is the same value
    (per_sample, {"gamma": 2.0}, {}),               # the reference's default is the same
    (lambda y, p: p, {}, {"gamma": 0.5}),           # the loss takes no gamma
])
def test_agreeing_or_unshared_parameters_do_not_warn(obj, loss_params, ref_params):
    loss, _ = K.build_loss(obj, loss_params)
    assert K.mismatched_params(obj, loss, loss_params, ref_params, REFERENCE) == []


def test_a_keras_style_config_is_read_for_the_loss_own_values():
    class WithConfig:
        def __call__(self, y, p):
            return p

        def get_config(self):
            return {"gamma": 2.0, "name": "x"}

    loss = WithConfig()
    notes = K.mismatched_params(loss, loss, {}, {"gamma": 0.5}, REFERENCE)
    assert notes and "keeps its own gamma=2.0" in notes[0]


# ------------------------------------------------------------------------ the domain


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"probabilities": (0.5, 0.1)}, "probabilities"), ({"probabilities": (-1, 0.5)},
                                                       "probabilities"),
    ({"probabilities": "x"}, "probabilities"), ({"logits": (1, np.inf)}, "logits"),
    ({"logits": (3, 3)}, "logits"), ({"hard_labels": "yes"}, "hard_labels")])
def test_a_bad_domain_is_refused_naming_the_field(kwargs, match):
    with pytest.raises((TypeError, ValueError), match=match):
        K.Domain(**kwargs)


def test_domain_from_a_mapping_and_unknown_fields():
    assert K.Domain.of({"hard_labels": True}) == K.Domain(hard_labels=True)
    with pytest.raises(TypeError, match="hard_label"):
        K.Domain.of({"hard_label": True})


@pytest.mark.parametrize("dtype", ["float32", "float16", "float64"])
def test_normalised_rows_stay_normalised_and_inside_the_probability_range(dtype):
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(5) * 0.1, size=64).astype(dtype)
    p[0] = [1, 0, 0, 0, 0]
    lo, hi = 1e-3, 1 - 1e-3
    out = K.Domain(probabilities=(lo, hi)).narrow(p, logits=False)
    assert out.dtype == p.dtype
    assert float(out.min()) >= lo and float(out.max()) <= hi
    # the mixing keeps each row's sum; rounding to the dtype moves it by ~n ULPs
    drift = np.abs(out.astype(np.float64).sum(-1) - p.astype(np.float64).sum(-1))
    assert drift.max() <= 5 * float(np.finfo(dtype).eps) + 1e-12


def test_single_probabilities_and_logits_are_clipped_inwards_in_their_dtype():
    p = np.array([[0.0], [1.0], [0.5]], np.float16)
    out = K.Domain(probabilities=(1e-7, 1 - 1e-7)).narrow(p, logits=False)
    assert float(out.max()) <= 1 - 1e-7 and float(out.min()) >= 1e-7  # 1 - 1e-7 is 1.0 in f16
    z = np.array([[-100.0, 3.0, 100.0]], np.float32)
    out = K.Domain(logits=(-20, 20)).narrow(z, logits=True)
    assert out.tolist() == [[-20.0, 3.0, 20.0]]
    assert K.Domain(probabilities=(0.1, 0.9)).narrow(z, logits=True) is z  # not logits' range


def test_domain_describes_itself_and_its_code_rebuilds_it():
    d = K.Domain(hard_labels=True, probabilities=(1e-7, 0.9999999))
    assert d.describe() == "hard labels, probabilities in [1e-07, 0.9999999]"
    import lossverify

    assert eval(d.code(), {"lossverify": lossverify}) == d
    assert K.Domain().describe() == "all inputs" and not K.Domain().narrowed


# ------------------------------------------------------------------------ the output


def test_per_element_output_is_reduced_and_scaled_with_its_gradient():
    y_pred_shape = (4, 3)
    value = np.arange(12.0).reshape(y_pred_shape)
    grad = np.ones(y_pred_shape)
    out, g, problem = K.Output("mean", 0.5).adapt(value, grad, y_pred_shape)
    assert problem is None
    np.testing.assert_allclose(out, value.mean(-1) / 0.5)
    np.testing.assert_allclose(g, grad / (3 * 0.5))  # d mean(v)/0.5 = d sum(v) / (n * 0.5)
    out, g, problem = K.Output("sum").adapt(value, grad, y_pred_shape)
    np.testing.assert_allclose(out, value.sum(-1))
    np.testing.assert_allclose(g, grad)
    out, g, _ = K.Output("sum").adapt(value, grad, y_pred_shape, axis=0)
    assert out.shape == (3,)


def test_per_element_output_of_the_wrong_shape_names_both_shapes():
    _, _, problem = K.Output("mean").adapt(np.zeros(4), np.zeros((4, 3)), (4, 3))
    assert problem == ("returned shape (4,); expected per-element (4, 3) (one value per "
                       "element of y_pred, as declared by per_element='mean')")


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"per_element": "max"}, "per_element"), ({"scale": 0}, "scale"),
    ({"scale": float("nan")}, "scale"), ({"scale": "big"}, "scale"), ({"scale": True}, "scale")])
def test_a_bad_output_is_refused_naming_the_field(kwargs, match):
    with pytest.raises(ValueError, match=match):
        K.Output(**kwargs)


# ---------------------------------------------------------------- JSON, missing extras


def test_report_json_is_strict_with_non_finite_numbers_as_strings():
    text = to_strict_json({"a": float("inf"), "b": [float("-inf"), float("nan")],
                           "c": np.float32(1.5), "d": K.Domain()})

    def refuse(token):
        raise ValueError(f"not JSON: {token}")

    data = json.loads(text, parse_constant=refuse)
    assert data["a"] == "Infinity" and data["b"] == ["-Infinity", "NaN"]
    assert data["c"] == 1.5 and float(data["a"]) == float("inf")
    assert data["d"].startswith("Domain(")


@pytest.mark.parametrize(("code", "extra"), [
    ("import lossverify; lossverify.verify", "'tf'"),
    ("import lossverify.strategies", "'strategies'"),
])
def test_a_missing_extra_is_named(code, extra):
    """In an install without Hypothesis, the error names the extra that brings it."""
    blocker = ("import sys; sys.modules['hypothesis'] = None; "
               "sys.modules['tensorflow'] = None; ")
    proc = subprocess.run([sys.executable, "-c", blocker + code], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("ModuleNotFoundError") and f"install lossverify's {extra} extra" \
        in last, proc.stderr


def test_contract_imports_numpy_only():
    proc = subprocess.run([sys.executable, "-c", "import sys, lossverify, lossverify.contract, "
                           "lossverify.report; bad = {'tensorflow', 'hypothesis', 'keras'} & "
                           "set(sys.modules); assert not bad, bad"], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_signature_of_verify_keeps_loss_and_reference_parameters_apart():
    from lossverify import verifier

    params = inspect.signature(verifier.verify).parameters
    assert {"loss_params", "domain", "output"} <= set(params)
    assert params["loss_params"].kind is inspect.Parameter.KEYWORD_ONLY
