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


def _small_windows() -> None:
    """The engine marks a window of ops' pages ahead on a second thread
    (simulator._SecondThread), in windows of a million touches: this suite's
    scenarios are far smaller, so here windows and tasks are a few touches:
    the ops of patterns that mark are marked ahead, an op across tasks."""
    from cowbench import simulator

    simulator.PREMARK = True
    simulator._WINDOW_TOUCHES = 64
    simulator._TASK_TOUCHES = 16


_small_windows()


def engine_simulate(sc, **kw):
    """cb.simulate keeping its final machine (for check_invariants and memory)."""
    import cowbench as cb

    return cb.simulate(sc, keep_state=True, **kw)


@pytest.fixture(params=["engine", "reference"])
def simulate(request):
    """Each story runs twice: on the jitted engine and on the reference simulator."""
    return reference.simulate if request.param == "reference" else engine_simulate


@pytest.fixture(scope="session")
def engine():
    return engine_simulate


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config, items):
    """The tests that compile the engine again run last, their compiles started now
    in the background (tests/test_boundscheck.py), on the machine's second core."""
    late = [i for i in items if getattr(getattr(i, "module", None), "__name__", "") == "test_boundscheck"]
    if late and len(late) < len(items):
        items[:] = [i for i in items if i not in late] + late
        late[0].module.start_background([i.originalname for i in late])
