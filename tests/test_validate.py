"""`cowbench validate`: the simulator against this machine's kernel.

Runs every validation scenario as real processes (cowbench/kernel.py) and in
the simulator, and requires them to agree. Skipped only where the kernel side
cannot measure at all: no readable /proc/self/pagemap (not Linux, or a
sandbox hiding it). Without root the PFNs read as 0, and copies/reuses/zero
fills are left out of the comparison (pss then comes from smaps, to 1 kB).
"""
from __future__ import annotations

import os

import pytest

from cowbench import kernel, validate
from cowbench.scenario import Scenario

_OK, _WHY = kernel.pagemap_readable()
pytestmark = pytest.mark.skipif(
    not _OK, reason=f"cowbench validate needs /proc/self/pagemap to measure real processes: {_WHY}")


@pytest.fixture(scope="module")
def table():
    return validate.validate()


def test_there_are_enough_scenarios():
    assert len(validate.SCENARIOS) >= 10
    for name, build in validate.SCENARIOS.items():
        sc = build()
        assert isinstance(sc, Scenario), name
        assert all(r.npages * sc.page_size <= 8 << 20 for r in sc.regions), f"{name}: keep regions small"


@pytest.mark.parametrize("name", list(validate.SCENARIOS))
def test_simulator_matches_kernel(table, name):
    g = table[table["scenario"] == name]
    assert len(g) > 0
    bad = g[~g["match"]]
    details = "\n".join(
        f"  {r['name']}.{c}: simulator {r['sim_' + c]!r}, kernel {r['kernel_' + c]!r}"
        for _, r in bad.iterrows() for c in r["mismatches"].split(","))
    assert bad.empty, f"{name}: the simulator disagrees with the kernel:\n{details}\n" + \
        (validate.SCENARIOS[name].__doc__ or "")


# --- the kernel side on its own: facts observed on Linux 6.x -------------
def _rows(sc):
    df = kernel.run_real(sc)
    return {r["name"]: r for _, r in df.iterrows()}


def test_run_real_columns():
    df = kernel.run_real(validate.cow_child_writes_k())
    for col in ("pid", "name", "state", "reason", "minor_faults", "rss_pages", "pss_pages", "uss_pages",
                "shared_pages"):
        assert col in df.columns
    assert list(df["name"]) == ["root", "kid"]


def test_run_real_cow_and_reuse():
    r = _rows(validate.reuse_after_child_exit())
    n, k = validate.N, validate.K
    assert r["kid"]["state"] == "exited"
    assert r["kid"]["minor_faults"] == k
    assert (r["kid"]["rss_pages"], r["kid"]["uss_pages"], r["kid"]["shared_pages"]) == (n, k, n - k)
    assert r["root"]["minor_faults"] == 2 * n             # n zero fills, then n reuses
    assert r["root"]["baseline_faults"] == 0
    if os.geteuid() == 0:
        assert (r["kid"]["cow_copies"], r["root"]["cow_reuses"], r["root"]["cow_copies"]) == (k, n, 0)


def test_run_real_zero_page_and_segv():
    r = _rows(validate.readonly_write_segv())
    n = validate.N
    assert (r["kid"]["state"], r["kid"]["reason"]) == ("killed", "SIGSEGV")
    assert (r["kid2"]["state"], r["kid2"]["reason"]) == ("killed", "SIGSEGV")
    assert r["root"]["minor_faults"] == 2 * n              # n writes + n zero-page reads
    assert r["root"]["rss_pages"] == n                     # the zero page is not in RSS


def test_run_real_vfork_copies_nothing():
    r = _rows(validate.vfork_exec())
    n, k = validate.N, validate.K
    assert r["kid"]["minor_faults"] == n // 2 + 100       # zero-page reads in the parent's mm, then its own region
    assert r["root"]["minor_faults"] == n                 # n/2 first writes, n/2 zero-page upgrades, none for COW
    assert r["kid2"]["state"] == "exited"


def test_main_prints_one_line_per_scenario_and_exit_status(capsys, monkeypatch):
    names = ["cow_child_writes_k", "pss_three_sharers"]
    assert validate.main(names) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.split()[0] in names]
    assert len(lines) == 2 and all(ln.endswith("match") and "sim:" in ln and "kernel:" in ln for ln in lines)

    # A wrong simulator must be caught: exit status 1 and a MISMATCH line.
    from cowbench import engine

    real_simulate = engine.simulate

    def off_by_one(sc, **kw):
        res = real_simulate(sc, **kw)
        df = res.processes.copy()
        df.loc[df.index[-1], "minor_faults"] += 1

        class R:
            processes = df
        return R()

    monkeypatch.setattr(engine, "simulate", off_by_one)
    assert validate.main(["cow_child_writes_k"]) == 1
    out = capsys.readouterr().out
    assert "MISMATCH (kid.minor_faults 301!=300)" in out
