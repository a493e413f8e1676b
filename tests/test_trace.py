"""cb.trace: a controlled target forks and writes pages the test chose; the tracer's page counts
are checked exactly, the trace round-trips through Parquet, its replay copies what the trace
says was copied, and the what-if knobs and the CLI work."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings

import numpy as np
import pandas as pd
import pytest

import cowbench as cb
from cowbench.cli import main as cli_main
from cowbench.real.replay import ApproximationWarning
from cowbench.real.trace import Trace, Tracer
from realtargets import ROOT, Target, needs_pagemap, target_argv  # noqa: F401

pytestmark = needs_pagemap
MiB = 1 << 20
STEP = 0.25                     # seconds between the target's actions (5 samples at 0.05 s)
N, PARENT_COW, CHILD_COW, FRESH = 10_000, 777, 300, 50


@pytest.fixture(scope="module")
def traced(target_argv):
    """The target maps 64 MiB and writes N pages; traced every 0.05 s, it forks; the parent writes
    PARENT_COW shared pages, the child CHILD_COW others, the parent FRESH new ones; the child exits."""
    with Target(target_argv) as t:
        heap, addr = t.mmap(64 * MiB, "an")
        t.write(heap, 0, N)
        t.arm(heap, 100, CHILD_COW, 2)                  # pages 100, 102, ..., 698
        tracer = Tracer(t.pid, 0.05).start()
        time.sleep(STEP)
        kid = t.fork()
        time.sleep(STEP)
        t.write(heap, 5000, PARENT_COW)
        time.sleep(STEP)
        os.kill(kid, signal.SIGUSR1)
        time.sleep(STEP)
        t.write(heap, 12_000, FRESH)
        time.sleep(STEP)
        os.kill(kid, signal.SIGTERM)
        time.sleep(STEP)
        tr = tracer.stop()
        return tr, t.pid, kid, addr >> 12


def _in_heap(ev, base, npages=16384):
    return ev[(ev.page >= base) & (ev.page < base + npages)]


def test_tracer_counts_every_page_exactly(traced):
    tr, parent, kid, base = traced
    ev = _in_heap(tr.events, base)
    par, chi = ev[ev.pid == parent], ev[ev.pid == kid]
    first = par[par["sample"] == par["sample"].min()]
    assert first[(first.event == "mapped") & (first.kind == "anon")].npages.sum() == N
    later = par[par["sample"] > par["sample"].min()]
    assert later[(later.event == "mapped") & (later.kind == "anon") & later.exclusive].npages.sum() == FRESH
    assert later[(later.event == "shared")].npages.sum() == N       # the fork
    if ROOT:                                                      # PFNs say who copied
        assert par[(par.event == "exclusive") & par.copied.fillna(False)].npages.sum() == PARENT_COW
        assert chi[(chi.event == "exclusive") & chi.copied.fillna(False)].npages.sum() == CHILD_COW
        assert par[(par.event == "exclusive") & ~par.copied.fillna(True)].npages.sum() == N - PARENT_COW  # kid exit
    else:
        assert par[par.event == "exclusive"].npages.sum() >= PARENT_COW + CHILD_COW
    life = tr.lifecycle
    assert set(life[life.pid == kid].event) == {"birth", "exit"}
    assert tr.processes.set_index("pid").loc[kid, "ppid"] == parent
    assert "a page written twice" in tr.meta["misses"]


def test_trace_round_trip(traced, tmp_path):
    tr = traced[0]
    path = tr.save(tmp_path / "t.parquet")
    back = Trace.load(path)
    assert len(back.events) == len(tr.events)
    assert (back.events.npages.to_numpy() == tr.events.npages.to_numpy()).all()
    assert list(back.events.event.astype(str)) == list(tr.events.event.astype(str))
    assert back.events.copied.isna().sum() == tr.events.copied.isna().sum()
    assert back.samples.shape == tr.samples.shape and back.lifecycle.shape == tr.lifecycle.shape
    pd.testing.assert_frame_equal(back.processes, tr.processes, check_dtype=False, rtol=1e-12)
    with pytest.raises(cb.ScenarioError, match="not a cowbench trace"):
        snap = cb.snapshot(os.getpid())
        Trace.load(snap.save(tmp_path / "s.parquet"))


def test_replay_copies_what_the_trace_says_was_copied(traced):
    tr, parent, kid, base = traced
    if not ROOT:
        pytest.skip("who copied a page needs PFNs (root)")
    rp = tr.replay()
    p = rp.processes.set_index("role")
    ev = tr.events
    born = int(tr.processes.set_index("pid").loc[kid, "first_sample"])
    copied = ev[((ev.event == "exclusive") & ev.copied.fillna(False)) | (ev.event == "moved")]
    child = copied[copied.pid == kid].npages.sum()
    root = copied[(copied.pid == parent) & (copied["sample"] >= born - 1)].npages.sum()
    # A page both processes write between two samples is copied once, by whichever wrote first,
    # and the trace cannot tell the replay that order. The test's own writes are disjoint; the
    # interpreters' pages are not: count the copies outside the heap in the samples where both
    # processes copied some there.
    out = copied[(copied.page < base) | (copied.page >= base + 16384)]
    per = out.groupby(["sample", "pid"]).npages.sum().unstack(fill_value=0).reindex(columns=[parent, kid], fill_value=0)
    unsure = int(per[(per[parent] > 0) & (per[kid] > 0)].to_numpy().sum())
    assert p.loc["child", "cow_copies"] + p.loc["root", "cow_copies"] == child + root
    assert abs(p.loc["child", "cow_copies"] - child) <= unsure
    assert p.loc["child", "state"] == "exited"
    tl = rp.timeline
    assert tl.cow_mib.iloc[-1] * 256 == pytest.approx(p.loc["child", "cow_copies"] + p.loc["root", "cow_copies"])
    assert tl.time_s.is_monotonic_increasing


def test_replay_knobs(traced):
    tr = traced[0]
    base = tr.replay().processes
    more = tr.replay(children=3).processes
    assert (more.role == "child").sum() == 3
    slow = tr.replay(stretch=3.0)
    assert slow.timeline.time_s.max() > tr.replay().timeline.time_s.max()
    for knobs in ({"policy": "odf"}, {"policy": "eager"}, {"thp": True, "thp_cow": "copy"}, {"write_scale": 2.0},
                  {"probes": "drop"}):
        r = tr.replay(**knobs)
        assert len(r.processes) == len(base)
    assert tr.replay(policy="eager").processes.set_index("role").loc["child", "fork_pages_copied"] > 0
    with pytest.raises(cb.ScenarioError, match="write_scale"):
        tr.scenario(write_scale=0)
    with pytest.raises(cb.ScenarioError, match="probes"):
        tr.scenario(probes="keep")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sc = tr.scenario()
    assert any(issubclass(w.category, ApproximationWarning) for w in caught)
    assert len(sc.op_time_s) == len(sc.ops)


PROBE_TARGET = textwrap.dedent("""
    import ctypes, mmap, os, sys, time
    sys.path.insert(0, {repo!r})
    from cowbench.real.probe import probe_fork, end_probe
    m = mmap.mmap(-1, 16 << 20, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    m.madvise(mmap.MADV_NOHUGEPAGE)
    for i in range(0, 4000 * 4096, 4096): m[i] = 1
    print(ctypes.addressof(ctypes.c_char.from_buffer(m)), flush=True)
    sys.stdin.readline()
    probe = probe_fork()
    time.sleep(0.3)
    for i in range(0, 1234 * 4096, 4096): m[i] = 2       # every page written turns exclusive
    time.sleep(0.3)
    end_probe(probe)
    time.sleep(0.3)
""")


def test_probe_fork_makes_a_non_forking_process_traceable():
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    p = subprocess.Popen([sys.executable, "-c", PROBE_TARGET.format(repo=repo)], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True)
    try:
        base = int(p.stdout.readline()) >> 12
        p.stdout.close()
        tracer = Tracer(p.pid, 0.05).start()
        time.sleep(0.15)
        p.stdin.write("\n")
        p.stdin.flush()
        p.wait(timeout=30)
        tr = tracer.stop()
    finally:
        if p.poll() is None:
            p.kill()
    procs = tr.processes
    assert procs.probe.sum() == 1
    probe = int(procs[procs.probe].pid.iloc[0])
    assert not (tr.events.pid == probe).any()                       # a probe is not sampled
    ev = _in_heap(tr.events, base, 4096)
    ex = ev[(ev.pid == p.pid) & (ev.event == "exclusive")]
    if ROOT:
        assert ex[ex.copied.fillna(False)].npages.sum() == 1234
    else:
        assert ex.npages.sum() >= 1234
    rp = tr.replay()                                                # the probe replays as a holding child
    roles = rp.processes.set_index("role")
    assert roles.loc["probe", "uss_pages"] >= (1234 if ROOT else 0)


LATE_PROBE_TARGET = textwrap.dedent("""
    import ctypes, mmap, os, signal, sys, time
    sys.path.insert(0, {repo!r})
    from cowbench.real.probe import PROBE_NAME, PR_SET_NAME, end_probe, libc
    m = mmap.mmap(-1, 16 << 20, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    m.madvise(mmap.MADV_NOHUGEPAGE)
    for i in range(0, 4000 * 4096, 4096): m[i] = 1
    print(os.getpid(), flush=True)
    sys.stdin.readline()
    pid = os.fork()
    if pid == 0:                  # probe_fork's child, slow to name itself: sampled as a child first
        time.sleep(0.3)
        libc.prctl(PR_SET_NAME, ctypes.cast(ctypes.c_char_p(PROBE_NAME), ctypes.c_void_p).value, 0, 0, 0)
        os.kill(os.getpid(), signal.SIGSTOP)
        os._exit(0)
    time.sleep(0.6)
    for i in range(0, 1234 * 4096, 4096): m[i] = 2
    time.sleep(0.3)
    end_probe(pid)
    time.sleep(0.2)
""")


def test_a_probe_named_after_it_was_sampled_is_forgotten():
    # probe_fork's child names itself right after fork; a sample can fall in between (seen once in
    # the test above). What was sampled of it then goes, as if it had been a probe from the start.
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    p = subprocess.Popen([sys.executable, "-c", LATE_PROBE_TARGET.format(repo=repo)], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True)
    try:
        p.stdout.readline()
        p.stdout.close()
        tracer = Tracer(p.pid, 0.05).start()
        time.sleep(0.15)
        p.stdin.write("\n")
        p.stdin.flush()
        p.wait(timeout=30)
        tr = tracer.stop()
    finally:
        if p.poll() is None:
            p.kill()
    procs = tr.processes
    assert procs.probe.sum() == 1
    probe = int(procs[procs.probe].pid.iloc[0])
    assert not (tr.events.pid == probe).any()
    assert not (tr.samples.pid == probe).any()
    assert not (tr.vmas.pid == probe).any()
    assert (tr.lifecycle[tr.lifecycle.pid == probe].event == "birth").any()     # its birth stays
    assert (tr.events.pid == p.pid).any()


def test_trace_cli_on_a_command(tmp_path, capsys):
    out = tmp_path / "t.parquet"
    prog = "import os,time; b=bytearray(8<<20); time.sleep(0.3); pid=os.fork(); time.sleep(0.3); os._exit(0)"
    rc = cli_main(["trace", "--interval", "0.05", "--out", str(out), "--no-progress", "--", sys.executable, "-c",
                   prog])
    text = capsys.readouterr().out
    assert rc == 0 and out.exists()
    assert "sampling misses" in text and "processes:" in text
    tr = Trace.load(out)
    assert len(tr.processes) >= 2
    assert cli_main(["predict", str(out), "--policies", "cow,odf"]) == 0
    assert "fork (one fork of the process" in capsys.readouterr().out


def test_trace_errors():
    with pytest.raises(cb.ScenarioError, match="interval"):
        Tracer(os.getpid(), 0)
    with pytest.raises(cb.ScenarioError, match="no process"):
        cb.trace(2**22 + 4321, seconds=1)
    with pytest.raises(cb.ScenarioError, match="seconds"):
        Tracer(os.getpid(), 0.1).run(-1)
    assert np.isfinite(0.1)
