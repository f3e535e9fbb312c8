"""The pytest plugin, exercised in throwaway projects run by ``pytester``.

Runs that need TensorFlow go through ``runpytest_subprocess`` so TF state does not leak
into this session; the cheap runs stub ``lossverify.assert_verified`` and never import
TensorFlow.
"""

from __future__ import annotations

import sys

import pytest

pytest_plugins = ["pytester"]

FLAGS = ("-p", "no:cacheprovider")

KERAS_TESTS = '''
import keras
import pytest
from keras import ops


def clipped_ce(y_true, y_pred):  # wrong: clips at 1e-3 instead of Keras's 1e-7
    y_pred = ops.clip(y_pred, 1e-3, 1.0 - 1e-3)
    return -ops.sum(y_true * ops.log(y_pred), axis=-1)


def test_correct(lossverify_check):
    report = lossverify_check(keras.losses.categorical_crossentropy,
                              "categorical_crossentropy", checks=("value",))
    assert report.ok and report.max_examples == 20 and report.seed == 0


def test_wrong(lossverify_check):
    lossverify_check(clipped_ce, "categorical_crossentropy", checks=("value",))
'''


def test_check_fixture_passes_correct_loss_and_reports_wrong_one(pytester: pytest.Pytester):
    pytester.makepyfile(test_mine=KERAS_TESTS)
    result = pytester.runpytest_subprocess(*FLAGS, "--lossverify-profile=dev")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines([
        "*vs reference categorical_crossentropy*FAILED*",
        "*minimal counterexample:*",
        "*LossInputs(*",
        "*reproduce with: lossverify.verify(loss, 'categorical_crossentropy', "
        "max_examples=20, seed=0*",
    ])
    # pytrace=False: the report alone, no traceback into the plugin or the verifier
    result.stdout.no_fnmatch_line("*During handling of the above exception*")
    result.stdout.no_fnmatch_line("*verifier.py*")
    result.stdout.no_fnmatch_line("*pytest_plugin.py*")


def test_marker_supplies_reference_and_params(pytester: pytest.Pytester):
    pytester.makepyfile(test_marked='''
import keras
import pytest


@pytest.mark.lossverify(reference="categorical_crossentropy", from_logits=True,
                        checks=("value",), max_examples=5)
def test_logits(lossverify_check):
    def loss(y_true, y_pred):
        return keras.losses.categorical_crossentropy(y_true, y_pred, from_logits=True)

    report = lossverify_check(loss)
    assert report.ok and report.params == {"from_logits": True}
    assert report.max_examples == 5 and report.seed == 7


@pytest.mark.lossverify("categorical_crossentropy", from_logits=True, checks=("value",),
                        max_examples=5)
def test_wrong_from_logits(lossverify_check):
    lossverify_check(keras.losses.categorical_crossentropy)  # treats logits as probabilities
''')
    result = pytester.runpytest_subprocess(*FLAGS, "--lossverify-profile=dev",
                                           "--lossverify-seed=7")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines([
        "*test_wrong_from_logits*",
        "*[[]from_logits=True[]]*seed=7: FAILED*",
        "*minimal counterexample:*",
        "*reproduce with: *from_logits=True*",
    ])


STUB_CONFTEST = '''
import lossverify
import pytest

CALLS = []


@pytest.fixture(autouse=True)
def stub_verify(monkeypatch):
    def fake(loss, reference, **kwargs):
        CALLS.append((reference, kwargs))
        return (reference, kwargs)
    monkeypatch.setattr(lossverify, "assert_verified", fake, raising=False)
    return CALLS
'''

STUB_TESTS = '''
import sys

import hypothesis
import pytest


def test_examples_and_seed(lossverify_check, request):
    reference, kwargs = lossverify_check(abs, "mean_squared_error", checks=("value",))
    expected = int(request.config.getoption("--expect"))
    assert reference == "mean_squared_error"
    assert kwargs == {"max_examples": expected, "seed": int(request.config.getoption(
        "--lossverify-seed")), "checks": ("value",)}


def test_hypothesis_profile(request):
    assert hypothesis.settings.default.max_examples == int(
        request.config.getoption("--expect-profile"))


@pytest.mark.lossverify(reference="binary_crossentropy", from_logits=True, max_examples=3)
def test_marker_merging(lossverify_check):
    reference, kwargs = lossverify_check(abs)
    assert reference == "binary_crossentropy"
    assert kwargs["from_logits"] is True and kwargs["max_examples"] == 3
    # call kwargs override the marker's
    assert lossverify_check(abs, seed=11, max_examples=2)[1]["max_examples"] == 2
    # another reference does not inherit the marker's parameters
    reference, kwargs = lossverify_check(abs, "mean_squared_error")
    assert reference == "mean_squared_error" and "from_logits" not in kwargs


def test_no_reference_is_a_usage_error(lossverify_check):
    with pytest.raises(pytest.UsageError, match="no reference"):
        lossverify_check(abs)


def test_module_fixtures(lossverify_reference, lossverify_strategies):
    assert lossverify_reference.__name__ == "lossverify.reference"
    assert lossverify_strategies.__name__ == "lossverify.strategies"
    assert "categorical_crossentropy" in lossverify_reference.NAMES


def test_no_tensorflow_loaded():
    assert "tensorflow" not in sys.modules
'''

STUB_OPTIONS = '''
def pytest_addoption(parser):
    parser.addoption("--expect")
    parser.addoption("--expect-profile")
'''


@pytest.mark.parametrize(("args", "examples", "profile_examples"), [
    (("--lossverify-profile=dev",), 20, 20),
    (("--lossverify-profile=ci", "--lossverify-seed=3"), 60, 60),
    (("--lossverify-profile=thorough",), 500, 1000),
    ((), 60, 100),  # no profile chosen: check() uses ci, Hypothesis keeps its default
])
def test_profile_sets_examples_and_seed(pytester: pytest.Pytester, args: tuple[str, ...],
                                        examples: int, profile_examples: int):
    pytester.makeconftest(STUB_CONFTEST + STUB_OPTIONS)
    pytester.makepyfile(test_stub=STUB_TESTS)
    result = pytester.runpytest_subprocess(*FLAGS, *args, f"--expect={examples}",
                                           f"--expect-profile={profile_examples}")
    result.assert_outcomes(passed=6)


def test_plugin_is_registered_and_light(pytester: pytest.Pytester):
    """The entry point loads the plugin; loading it imports neither TF nor Hypothesis."""
    pytester.makepyfile(test_light='''
import sys

def test_light(pytestconfig):
    assert pytestconfig.pluginmanager.has_plugin("lossverify")
    assert "tensorflow" not in sys.modules and "keras" not in sys.modules
    assert "lossverify.verifier" not in sys.modules
''')
    result = pytester.runpytest_subprocess(*FLAGS, "-p", "no:hypothesispytest", "--markers")
    result.stdout.fnmatch_lines(["@pytest.mark.lossverify(reference=None, **params)*"])
    result = pytester.runpytest_subprocess(*FLAGS, "-p", "no:hypothesispytest")
    result.assert_outcomes(passed=1)


def test_plugin_survives_missing_hypothesis(pytester: pytest.Pytester):
    """With ``hypothesis`` unimportable the run still works; options and marker exist."""
    pytester.makeconftest('''
import sys
sys.modules["hypothesis"] = None  # any "import hypothesis" now raises ImportError
''')
    pytester.makepyfile(test_plain='''
import pytest

@pytest.mark.lossverify(reference="mean_squared_error")
def test_plain():
    assert True
''')
    # conftest runs after plugin registration; configure runs after conftest, so the
    # profile registration path sees the missing module
    result = pytester.runpytest_subprocess(*FLAGS, "-p", "no:hypothesispytest",
                                           "--lossverify-profile=dev", "--strict-markers")
    result.assert_outcomes(passed=1)
    assert sys.modules.get("hypothesis") is not None  # this session is untouched
