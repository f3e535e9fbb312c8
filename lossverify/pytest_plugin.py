"""pytest plugin (entry point ``pytest11``): lossverify's Hypothesis profiles and option.

Registered profiles: ``dev`` (few examples, fast feedback), ``ci`` (the default here:
derandomised, no deadline) and ``thorough`` (long sweeps). Choose one with
``--lossverify-profile NAME``; Hypothesis's own ``--hypothesis-profile`` still wins when
given.
"""

from __future__ import annotations

import pytest

PROFILES = {
    "dev": {"max_examples": 20},
    "ci": {"max_examples": 60, "derandomize": True},
    "thorough": {"max_examples": 1000},
}


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
        help="Hypothesis profile for lossverify checks: dev, ci or thorough.",
    )


def pytest_configure(config: pytest.Config) -> None:
    if not _register_profiles():
        return
    name = config.getoption("--lossverify-profile")
    if name is not None and not config.getoption("--hypothesis-profile", default=None):
        from hypothesis import settings

        settings.load_profile(f"lossverify-{name}")
