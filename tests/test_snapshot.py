"""cb.snapshot: a controlled target's memory, read from /proc, against the kernel's own figures
(smaps, status), through a save/load round trip, as a scenario the simulator runs, and against a
real fork of the target (the child's VmPTE)."""
from __future__ import annotations

import os
import sys
import textwrap
import time
import warnings

import numpy as np
import pytest

import cowbench as cb
from cowbench.real import layout as L
from cowbench.real.procfs import read_keyed, thp_usable
from cowbench.real.snapshot import ApproximationWarning, Snapshot
from realtargets import TARGETS, Target, c_target, needs_pagemap, needs_root, target_argv  # noqa: F401

pytestmark = needs_pagemap
MiB = 1 << 20
THP_OK, THP_WHY = thp_usable()


def _populate(t: Target, data_file) -> dict:
    """A layout with one of everything the simulator can hold."""
    ids = {}
    ids["heap"], _ = t.mmap(64 * MiB, "an")
    t.write(ids["heap"], 0, 10_000)
    t.read(ids["heap"], 12_000, 100)                     # zero pages
    ids["thp"], _ = t.mmap(16 * MiB, "ah")
    t.write(ids["thp"], 0, 1024)                         # two huge pages (where THP is on)
    t.write(ids["thp"], 2048, 10)
    t.read(ids["thp"], 3072, 1)                          # the huge zero page
    ids["shm"], _ = t.mmap(8 * MiB, "s")
    t.write(ids["shm"], 0, 100, 3)
    ids["dontfork"], _ = t.mmap(8 * MiB, "d")
    t.write(ids["dontfork"], 0, 100)
    ids["wipe"], _ = t.mmap(8 * MiB, "w")
    t.write(ids["wipe"], 0, 100)
    ids["small"], _ = t.mmap(3 * MiB)
    t.write(ids["small"], 0, 700)
    ids["file"], _ = t.file(data_file)
    t.read(ids["file"], 0, 64)
    t.write(ids["file"], 1, 2)                           # private file pages copied: anonymous
    return ids


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    p = tmp_path_factory.mktemp("data") / "data.bin"
    p.write_bytes(os.urandom(2 * MiB))
    return p


@pytest.fixture(scope="module")
def snap(target_argv, data_file):
    with Target(target_argv) as t:
        _populate(t, data_file)
        s = cb.snapshot(t.pid)
        s.meta["test_target"] = os.path.basename(target_argv[-1])
        return s


def test_snapshot_matches_the_kernel(snap):
    chk = snap.check()
    assert chk.match.all(), "\n" + chk.to_string()
    s = snap.summary
    assert s.zero_pages >= 100
    if THP_OK:
        assert s.anon_huge_pages == 3
    assert {"anon", "file", "shmem"} <= set(snap.regions.kind)
    r = snap.regions
    assert set(r.on_fork) >= {"copy", "dontfork", "wipeonfork"}
    assert not r[r.on_fork != "copy"].copied.any()
    assert not r[r.kind == "shmem"].copied.any()


def test_snapshot_round_trip(snap, tmp_path):
    path = snap.save(tmp_path / "s.parquet")
    back = Snapshot.load(path)
    assert back.summary.equals(snap.summary)
    assert back.runs.equals(snap.runs)
    assert list(back.regions.columns) == list(snap.regions.columns)
    assert (back.regions.start.to_numpy() == snap.regions.start.to_numpy()).all()
    assert back.fork_estimate().equals(snap.fork_estimate())
    assert os.path.getsize(path) < 200_000                 # runs, not pages
    assert back.meta["pid"] == snap.meta["pid"]


def test_scenario_holds_the_resident_set_and_forks_as_the_kernel_would(snap):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sc, proc = snap.scenario()
    msgs = [str(w.message) for w in caught if issubclass(w.category, ApproximationWarning)]
    assert any("file mappings are approximated until the simulator models the page cache" in m for m in msgs)
    proc.fork("kid")
    res = cb.simulate(sc, policy="cow")
    p = res.processes
    s, est = snap.summary, snap.fork_estimate()
    assert p.rss_pages.iloc[0] == s.rss_pages
    assert p.anon_huge_pages.iloc[0] == s.anon_huge_pages
    kid = p.iloc[1]
    assert kid.rss_pages == est.child_rss_pages
    assert kid.fork_pmds_copied == est.fork_pmds_copied
    # the simulator copies every PTE the kernel does, except those of VM_PFNMAP VMAs ([vvar])
    pfn = snap.runs.merge(snap.regions[["vma", "kind", "copied"]], on="vma")
    pfn = int(pfn[(pfn.kind == "pfnmap") & pfn.copied & pfn.present].npages.sum())
    assert kid.fork_ptes_copied + pfn == est.fork_ptes_copied
    # regions sit in the real 2 MiB ranges: the simulator's extra tables are the shared ones only
    assert p.pte_pages.iloc[0] >= s.pte_tables


def test_fork_estimate_is_the_real_childs_page_tables(c_target, data_file):
    """A real fork of the (static C) target: the child's VmPTE and Anonymous, right after the fork,
    are what the snapshot predicted on the real layout."""
    with Target([c_target]) as t:
        _populate(t, data_file)
        snap = cb.snapshot(t.pid)
        est = snap.fork_estimate()
        kid = t.fork()
        time.sleep(0.1)
        st = read_keyed(f"/proc/{kid}/status")
        ro = read_keyed(f"/proc/{kid}/smaps_rollup")
    assert st["VmPTE"] // 4 == est.child_pte_pages
    kinds = snap.runs.merge(snap.regions[["vma", "copied"]], on="vma")
    anon = kinds[kinds.copied & kinds.present & ~kinds.file & ~kinds.zero]
    assert ro["Anonymous"] // 4 == int(anon.npages.sum())


def test_layout_rules():
    assert L.kind_of("", "rw-p", "00:00", "rd wr mr mw me ac", set()) == "anon"
    assert L.kind_of("/dev/zero (deleted)", "rw-s", "00:01", "rd wr sh", {"00:01"}) == "shmem"
    assert L.kind_of("[vvar]", "r--p", "00:00", "rd mr pf io de dd", set()) == "pfnmap"
    assert L.kind_of("/usr/lib/libc.so.6", "r-xp", "fe:00", "rd ex mr mw me", set()) == "file"
    assert L.on_fork_of("rd wr mr mw me dc ac") == "dontfork"
    assert L.on_fork_of("rd wr mr mw me ac wf") == "wipeonfork"
    assert L.on_fork_of("rd wr mr mw me ac dd") == "copy"      # dd is MADV_DONTDUMP, not DONTFORK
    assert L.count_in(np.array([0, 5, 3]), np.array([2, 9, 6])) == 10
    tc, idx = L.table_counts(np.array([0, 1 << 20]), np.array([513, (1 << 20) + 1]))
    assert (tc.pte, tc.pmd, tc.pud) == (3, 2, 1)


def test_snapshot_without_kpageflags(target_argv):
    with Target(target_argv) as t:
        heap, _ = t.mmap(8 * MiB, "an")
        t.write(heap, 0, 500)
        s = cb.snapshot(t.pid, kpage=False)
    assert s.check().match.all()
    assert not s.meta["kpage"]
    assert "kpageflags" in s.detail()


def test_snapshot_errors(tmp_path):
    with pytest.raises(cb.ScenarioError, match="positive process id"):
        cb.snapshot(0)
    with pytest.raises(cb.ScenarioError, match="no process"):
        cb.snapshot(2**22 + 12345)
    bad = tmp_path / "x.parquet"
    bad.write_text("not parquet")
    with pytest.raises(cb.ScenarioError, match="not a Parquet file"):
        Snapshot.load(bad)
    s = cb.snapshot(os.getpid())
    with pytest.raises(cb.ScenarioError, match="thp"):
        s.scenario(thp="yes")


@needs_root
def test_pfns_and_sharers_as_root(target_argv):
    """As root the mapcount of shared pages comes from kpagecount: after a fork, 2."""
    with Target(target_argv) as t:
        heap, _ = t.mmap(8 * MiB, "an")
        t.write(heap, 0, 500)
        t.fork()
        time.sleep(0.1)
        s = cb.snapshot(t.pid)
    r = s.runs
    assert s.meta["pfns"] and s.meta["kpage"]
    shared = r[r.present & ~r.exclusive & ~r.zero & ~r.file]
    assert shared.npages.sum() >= 500 and (shared.mapcount >= 2).all()
    assert sys.platform.startswith("linux")


NOT_ROOT = textwrap.dedent("""
    import os, sys, json
    sys.path.insert(0, {repo!r}); sys.path.insert(0, {tests!r})
    import ctypes
    # a user namespace of its own: no CAP_SYS_ADMIN over the host, so pagemap hides the PFNs
    assert ctypes.CDLL(None, use_errno=True).unshare(0x10000000) == 0, ctypes.get_errno()
    import cowbench as cb
    from realtargets import Target
    with Target({argv!r}) as t:
        heap, _ = t.mmap(8 << 20, "an")
        t.write(heap, 0, 700)
        t.read(heap, 1000, 50)
        s = cb.snapshot(t.pid)
        tr = cb.trace(t.pid, seconds=0.3, interval=0.1)
    print(json.dumps({{"match": bool(s.check().match.all()), "pfns": s.meta["pfns"], "detail": s.detail(),
                      "zero": int(s.summary.zero_pages), "trace_pfns": tr.meta["pfns"]}}))
""")


@needs_root
def test_snapshot_and_trace_without_root(target_argv):
    """Without CAP_SYS_ADMIN (a user namespace), a process reads its own child: no PFNs, less detail,
    said so, counts still exact."""
    import json
    import subprocess

    here = os.path.dirname(os.path.abspath(__file__))
    code = NOT_ROOT.format(repo=os.path.dirname(here), tests=here, argv=target_argv)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "HOME": "/tmp", "NUMBA_CACHE_DIR": "/tmp/cowbench-nobody-numba"})
    if r.returncode != 0 and ("unshare" in r.stderr or "AssertionError: 1" in r.stderr):
        pytest.skip(f"no unprivileged user namespaces here: {r.stderr.strip().splitlines()[-1]}")
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert got["match"] and not got["pfns"] and not got["trace_pfns"]
    assert "not root" in got["detail"] and got["zero"] == 50
