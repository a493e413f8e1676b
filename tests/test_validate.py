"""`cowbench validate`: the simulator against this machine's kernel.

Runs every validation scenario as real processes (cowbench/real/) and in
the simulator, and requires them to agree. Skipped only where the kernel side
cannot measure at all: no readable /proc/self/pagemap (not Linux, or a
sandbox hiding it). Without root the PFNs read as 0, and copies/reuses/zero
fills are left out of the comparison (pss then comes from smaps, to 1 kB).
Scenarios with huge pages or pins are skipped, with the reason, on a host that
refuses THP or io_uring. The scenarios of validate.KNOWN_DISAGREEMENTS are
expected to mismatch (strictly: once the simulator is fixed, drop the entry).
"""
from __future__ import annotations

import os

import numpy as np
import pytest

from cowbench import real
from cowbench.real import validate
from cowbench.scenario import Scenario
from cowbench.simulator import simulate

_OK, _WHY = real.pagemap_readable()
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


@pytest.mark.parametrize("name", [
    pytest.param(n, marks=pytest.mark.xfail(strict=True, reason=validate.KNOWN_DISAGREEMENTS[n]))
    if n in validate.KNOWN_DISAGREEMENTS else n
    for n in validate.SCENARIOS])
def test_simulator_matches_kernel(table, name):
    if any(r.file is not None for r in validate.SCENARIOS[name]().regions):
        return _matches_in_a_fresh_process(name)
    g = table[table["scenario"] == name]
    assert len(g) > 0
    if g["skipped"].iloc[0]:
        pytest.skip(f"{name}: {g['skipped'].iloc[0]}")
    bad = g[~g["match"]]
    details = "\n".join(
        f"  {r['name']}.{c}: simulator {r['sim_' + c]!r}, kernel {r['kernel_' + c]!r}"
        for _, r in bad.iterrows() for c in r["mismatches"].split(","))
    assert bad.empty, f"{name}: the simulator disagrees with the kernel:\n{details}\n" + \
        (validate.SCENARIOS[name].__doc__ or "")


def _matches_in_a_fresh_process(name):
    """A file scenario, validated as `cowbench validate NAME` does, in a process of its own. Run from
    this pytest process after the rest of the suite, the kernel took one fault more in the first
    process of each file scenario (every time, in every one of three runs), and never from a fresh
    process. It is not the interpreter faulting in the measured loop (that loop is in C now, see
    worker.touch): something the suite leaves in this process changes fault-around for the file,
    not yet understood."""
    import subprocess
    import sys

    code = ("import sys; from cowbench.real import validate; df = validate.validate([sys.argv[1]]); "
            "bad = df[~df['match']]; print(bad.to_string() if len(bad) else '', df['skipped'].iloc[0]); "
            "sys.exit(3 if df['skipped'].iloc[0] else 0 if bad.empty else 1)")
    out = subprocess.run([sys.executable, "-c", code, name], capture_output=True, text=True, timeout=600)
    if out.returncode == 3:
        pytest.skip(f"{name}: {out.stdout.strip()}")
    assert out.returncode == 0, f"{name}: the simulator disagrees with the kernel:\n{out.stdout}{out.stderr[-2000:]}"


# --- the kernel side on its own: facts observed on Linux 6.x -------------
def _rows(sc):
    df = real.run_real(sc)
    return {r["name"]: r for _, r in df.iterrows()}


def test_run_real_columns():
    df = real.run_real(validate.cow_child_writes_k())
    for col in ("pid", "name", "state", "reason", "minor_faults", "rss_pages", "pss_pages", "uss_pages",
                "shared_pages"):
        assert col in df.columns
    assert list(df["name"]) == ["root", "kid"]


def test_run_real_cow_and_reuse():
    r = _rows(validate.reuse_after_child_exit())
    n, k = validate.N, validate.CHILD_WRITES
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
    n, k = validate.N, validate.CHILD_WRITES
    assert r["kid"]["minor_faults"] == n // 2 + 100       # zero-page reads in the parent's mm, then its own region
    assert r["root"]["minor_faults"] == n                 # n/2 first writes, n/2 zero-page upgrades, none for COW
    assert r["kid2"]["state"] == "exited"


def test_main_prints_one_line_per_scenario_and_exit_status(capsys, monkeypatch):
    names = ["cow_child_writes_k", "pss_three_sharers"]
    assert validate.main(names) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.split()[0] in names]
    assert len(lines) == 2 and all(ln.endswith("match") and "sim:" in ln and "kernel:" in ln for ln in lines)

    # A wrong simulator must be caught: exit status 1 and a MISMATCH line.
    from cowbench import simulator

    real_simulate = simulator.simulate

    def off_by_one(sc, **kw):
        res = real_simulate(sc, **kw)
        df = res.processes.copy()
        df.loc[df.index[-1], "minor_faults"] += 1

        class R:
            processes = df
        return R()

    monkeypatch.setattr(simulator, "simulate", off_by_one)
    assert validate.main(["cow_child_writes_k"]) == 1
    out = capsys.readouterr().out
    assert "MISMATCH (kid.minor_faults 301!=300)" in out


_THP_OK, _THP_WHY = real.thp_usable() if _OK else (False, _WHY)
_PINS_OK, _PINS_WHY = real.pins_usable() if _OK else (False, _WHY)


@pytest.mark.skipif(not _THP_OK, reason=f"THP: {_THP_WHY}")
def test_run_real_thp_split_and_reuse():
    r = _rows(validate.thp_fork_child_writes())
    if r["root"]["smaps_anon_huge_pages"] == 0:
        pytest.skip("the host fell back to 4 KiB pages")
    # first touch: one fault per 2 MiB, whole huge pages; fork copies 2 PMDs, no PTEs
    assert (r["kid"]["fork_pmds_copied"], r["kid"]["fork_ptes_copied"]) == (2, 0)
    # a 4 KiB write to a shared huge page: 1 fault, the PMD split, 1 page copied (Linux >= 5.8)
    assert (r["kid"]["minor_faults"], r["kid"]["thp_splits"], r["kid"]["cow_copies"]) == (1, 1, 1)
    assert r["kid"]["anon_huge_pages"] == r["kid"]["smaps_anon_huge_pages"] == 1
    assert (r["root"]["minor_faults"], r["root"]["thp_fault_alloc"], r["root"]["thp_splits"]) == (3, 2, 1)
    assert r["root"]["rss_pages"] == 1024 and r["root"]["uss_pages"] == 2
    r = _rows(validate.thp_reuse_after_child_exit())
    assert (r["root"]["minor_faults"], r["root"]["cow_reuses"], r["root"]["anon_huge_pages"]) == (4, 2, 2)


@pytest.mark.skipif(not _PINS_OK, reason=f"pins: {_PINS_WHY}")
def test_run_real_pins_copy_at_fork():
    r = _rows(validate.pin_fork())
    assert r["kid"]["fork_pages_copied"] == 4 and r["kid2"]["fork_pages_copied"] == 2
    # pinned pages stay writable in the parent: its 8 writes fault only on the 4 unpinned ones
    assert r["root"]["minor_faults"] == validate.N + 4
    assert r["kid"]["minor_faults"] == 4                    # its copies are writable: only pages 8..11 fault
    assert r["root"]["pin_errno"] == 0


def test_skipped_scenarios_are_reported_not_failed(monkeypatch, capsys):
    monkeypatch.setattr(real, "thp_usable", lambda: (False, "no huge pages here"))
    df = validate.validate(["thp_first_touch", "cow_child_writes_k"])
    got = df.groupby("scenario", sort=False)["skipped"].first().to_dict()
    assert got == {"thp_first_touch": "no huge pages here", "cow_child_writes_k": ""}
    assert df["match"].all()
    assert validate.main(["thp_first_touch"]) == 0
    out = capsys.readouterr().out
    assert "thp_first_touch" in out and "skipped: no huge pages here" in out and "0/0 scenarios match" in out


def test_needs():
    assert validate.needs(validate.cow_child_writes_k()) == []
    assert validate.needs(validate.thp_chain_root_mid_leaf()) == ["thp"]       # via madvise(hugepage)
    assert validate.needs(validate.pin_thp_fork()) == ["thp", "pins"]


# --- pagemap: who keeps a frame after fork (the seed's copy-on-write string) --------------------

N_STRING = 8          # pages of the "string"; the child writes the first half, then the parent all


def _real_frame_story() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The story on this kernel, PFNs read from /proc/PID/pagemap: the
    parent's frames at the fork, and the parent's and child's at the end."""
    import ctypes
    import mmap

    from cowbench.real.procfs import page_values

    buf = mmap.mmap(-1, N_STRING * 4096, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    addr = ctypes.addressof(ctypes.c_char.from_buffer(buf))
    for i in range(N_STRING):
        buf[i * 4096] = 1
    at_fork = page_values(os.getpid(), [(addr, N_STRING)])[1]
    go, done = os.pipe(), os.pipe()
    pid = os.fork()
    if pid == 0:                                    # the child: write, report, wait for the parent
        try:
            for i in range(N_STRING // 2):
                buf[i * 4096] = 2
            os.write(done[1], b"w")
            os.read(go[0], 1)
            os.write(done[1], page_values(os.getpid(), [(addr, N_STRING)])[1].tobytes())
        finally:
            os._exit(0)
    os.read(done[0], 1)
    for i in range(N_STRING):
        buf[i * 4096] = 3
    parent = page_values(os.getpid(), [(addr, N_STRING)])[1]
    os.write(go[1], b"g")
    child = np.frombuffer(os.read(done[0], 8 * N_STRING), dtype=np.int64)
    os.waitpid(pid, 0)
    return at_fork, parent, child


def _sim_frame_story(writes: bool) -> tuple[np.ndarray, np.ndarray]:
    sc = Scenario()
    p = sc.spawn("p")
    s = p.mmap("string", N_STRING * 4096)
    p.write(s, value=1)
    kid = p.fork("kid")
    if writes:
        kid.write(s, pages=range(N_STRING // 2), value=2)
        p.write(s, value=3)
    res = simulate(sc, keep_state=True)
    return tuple(res.pagemap(q).sort_values("page")["frame"].to_numpy(dtype=float, na_value=np.nan)
                 for q in (p, kid))


@pytest.mark.skipif(os.geteuid() != 0, reason="PFNs in /proc/PID/pagemap are shown to CAP_SYS_ADMIN only")
def test_pagemap_frame_ownership_matches_real_pfns():
    """After fork, the first writer of a page moves to a new frame and the
    other, now its sole owner, writes the original in place: the parent keeps
    its frames where the child wrote first, and where the parent wrote first
    the child keeps them. The simulator's pagemap says which process holds the
    frame the page had at the fork; the kernel's PFNs say the same."""
    at_fork, parent, child = _real_frame_story()
    sim_at_fork, _ = _sim_frame_story(writes=False)
    sim_parent, sim_child = _sim_frame_story(writes=True)
    kernel = {"parent kept": parent == at_fork, "child kept": child == at_fork}
    sim = {"parent kept": sim_parent == sim_at_fork, "child kept": sim_child == sim_at_fork}
    half = N_STRING // 2
    assert kernel["parent kept"].tolist() == [True] * half + [False] * half      # the rule, as stated
    assert kernel["child kept"].tolist() == [False] * half + [True] * half
    assert {k: v.tolist() for k, v in sim.items()} == {k: v.tolist() for k, v in kernel.items()}
