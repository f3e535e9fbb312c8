"""pytest plugin (entry point ``pytest11``): lossverify's Hypothesis profiles, options,
fixtures and marker.

Registered profiles: ``dev`` (few examples, fast feedback), ``ci`` (the default here:
derandomised, no deadline) and ``thorough`` (long sweeps). Choose one with
``--lossverify-profile NAME``; Hypothesis's own ``--hypothesis-profile`` still wins when
given. ``--lossverify-seed N`` (default 0) seeds every ``lossverify_check`` call.

Fixtures:

* ``lossverify_check``: a callable ``check(loss, reference=None, **kwargs)`` that runs
  :func:`lossverify.assert_verified` with ``max_examples`` and ``seed`` taken from the
  active profile (dev 20, ci 60, thorough 500) and option, and on failure calls
  ``pytest.fail(report, pytrace=False)``: the failure shows the minimal counterexample
  and the ``reproduce with`` line, not a traceback. Without ``reference`` the
  ``lossverify`` marker supplies it (and its parameters)::

      @pytest.mark.lossverify(reference="categorical_crossentropy", from_logits=True)
      def test_ce(lossverify_check):
          lossverify_check(my_loss, checks=("value",))

  Keyword arguments given to ``check`` override the marker's.
* ``lossverify_reference``: the :mod:`lossverify.reference` module (NumPy only).
* ``lossverify_strategies``: the :mod:`lossverify.strategies` module.

Loading the plugin imports neither TensorFlow nor Hypothesis; a suite without
Hypothesis still runs (the fixtures then fail when used).
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any

import pytest

PROFILES: dict[str, dict[str, Any]] = {
    "dev": {"max_examples": 20},
    "ci": {"max_examples": 60, "derandomize": True},
    "thorough": {"max_examples": 1000},
}
#: ``max_examples`` per ``lossverify_check`` call under each profile.
CHECK_EXAMPLES = {"dev": 20, "ci": 60, "thorough": 500}
#: The profile the fixture uses when none is chosen.
DEFAULT_PROFILE = "ci"
MARKER = "lossverify"


def _register_profiles() -> bool:
    try:
        from hypothesis import HealthCheck, settings
    except ImportError:  # the plugin must not break suites without Hypothesis
        return False
    for name, options in PROFILES.items():
        settings.register_profile(
            f"lossverify-{name}",
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
            print_blob=True,
            **options,
        )
    return True


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("lossverify")
    group.addoption(
        "--lossverify-profile",
        choices=sorted(PROFILES),
        default=None,
        help="Hypothesis profile for lossverify checks: dev, ci or thorough "
             f"(lossverify_check examples: {CHECK_EXAMPLES}; default {DEFAULT_PROFILE}).",
    )
    group.addoption(
        "--lossverify-seed",
        type=int,
        default=0,
        help="Seed for every lossverify_check call (default 0).",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{MARKER}(reference=None, **params): the reference loss name and its parameters "
        "for the lossverify_check fixture (used when check(loss) gets no reference).",
    )
    if not _register_profiles():
        return
    name = config.getoption("--lossverify-profile")
    if name is not None and not config.getoption("--hypothesis-profile", default=None):
        from hypothesis import settings

        settings.load_profile(f"lossverify-{name}")


def active_profile(config: pytest.Config) -> str:
    """The lossverify profile in force: ``--lossverify-profile``, else a
    ``--hypothesis-profile lossverify-NAME``, else :data:`DEFAULT_PROFILE`."""
    name = config.getoption("--lossverify-profile", default=None)
    if name is not None:
        return name
    hyp = config.getoption("--hypothesis-profile", default=None)
    if isinstance(hyp, str) and hyp.startswith("lossverify-") and hyp[11:] in PROFILES:
        return hyp[11:]
    return DEFAULT_PROFILE


def _marker_arguments(node: pytest.Item) -> tuple[str | None, dict[str, Any]]:
    marker = node.get_closest_marker(MARKER)
    if marker is None:
        return None, {}
    params = dict(marker.kwargs)
    reference = params.pop("reference", None)
    if marker.args:
        if reference is not None or len(marker.args) > 1:
            raise pytest.UsageError(
                f"@pytest.mark.{MARKER}: give the reference once, positionally or as "
                f"reference=..., got args={marker.args!r}, reference={reference!r}")
        reference = marker.args[0]
    return reference, params


@pytest.fixture
def lossverify_check(request: pytest.FixtureRequest) -> Callable[..., Any]:
    """``check(loss, reference=None, **kwargs)``: :func:`lossverify.assert_verified`
    with the profile's ``max_examples`` and the ``--lossverify-seed``; returns the
    :class:`~lossverify.VerifyReport` when it passes, ``pytest.fail``s with the report
    (minimal counterexample, reproduce line) when it does not."""
    config = request.config
    defaults = {"max_examples": CHECK_EXAMPLES[active_profile(config)],
                "seed": config.getoption("--lossverify-seed", default=0)}

    def check(loss: Callable, reference: str | None = None, **kwargs: Any) -> Any:
        marked_reference, marked_params = _marker_arguments(request.node)
        if reference is None:
            reference = marked_reference
        if reference is None:
            raise pytest.UsageError(
                "lossverify_check(loss): no reference given and no "
                f"@pytest.mark.{MARKER}(reference=...) on the test")
        options = {**defaults, **(marked_params if reference == marked_reference else {}),
                   **kwargs}
        import lossverify

        __tracebackhide__ = True
        try:
            return lossverify.assert_verified(loss, reference, **options)
        except AssertionError as failure:
            report = str(failure)
        # outside the except block, so the output is the report alone (no chained trace)
        pytest.fail(report, pytrace=False)

    return check


@pytest.fixture
def lossverify_reference() -> ModuleType:
    """The NumPy reference losses, :mod:`lossverify.reference`."""
    import lossverify.reference

    return lossverify.reference


@pytest.fixture
def lossverify_strategies() -> ModuleType:
    """The public Hypothesis strategies, :mod:`lossverify.strategies`."""
    import lossverify.strategies

    return lossverify.strategies
