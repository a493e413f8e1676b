"""Shared test setup: hypothesis profiles and the two implementations under test.

Hypothesis profiles (choose with HYPOTHESIS_PROFILE=...):
  ci        the default: a fixed, derandomized set of examples, fast enough for `make test`
  dev       like ci, but random: a new sample on every run
  thorough  2000 examples per property, random (minutes to an hour)
"""
from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

import reference

_COMMON = dict(
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
settings.register_profile("ci", max_examples=60, derandomize=True, **_COMMON)
settings.register_profile("dev", max_examples=60, **_COMMON)
settings.register_profile("thorough", max_examples=2000, **_COMMON)
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci")
settings.load_profile(PROFILE)


def examples(n: int) -> int:
    """Examples for a property: n under ci/dev, the profile's count (2000) when thorough."""
    return max(n, settings.get_profile(PROFILE).max_examples) if PROFILE == "thorough" else n


def engine_simulate():
    """cb.simulate keeping its final machine, or None while the engine is not importable."""
    try:
        import cowbench as cb
    except ImportError:
        return None
    if not hasattr(cb, "simulate"):
        return None

    def run(sc, **kw):
        return cb.simulate(sc, keep_state=True, **kw)

    return run


@pytest.fixture(params=["engine", "reference"])
def simulate(request):
    """Each story runs twice: on the jitted engine and on the reference simulator."""
    if request.param == "reference":
        return reference.simulate
    run = engine_simulate()
    if run is None:
        pytest.skip("cowbench.simulate is not importable yet")
    return run


@pytest.fixture(scope="session")
def engine():
    run = engine_simulate()
    if run is None:
        pytest.skip("cowbench.simulate is not importable yet")
    return run
