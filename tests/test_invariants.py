"""Invariants of the engine on random scenarios.

- the engine's own recount (`check_invariants`) agrees with what it kept;
- the process table is self-consistent (rss = uss + shared, uss <= pss <= rss, ...);
- memory comes back: once every process has exited, no frame is in use;
- isolation: each running process reads its own writes. Checked against a
  third, deliberately tiny model that knows nothing of frames or faults: a
  private page reads the tag of the last write to it in this address space or
  in the one it was forked from (fork copies, wipeonfork and dontfork drop,
  exec and munmap forget, vfork shares, pins change nothing). Run with
  overcommit=1, as the model cannot know which mmap would be refused.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import cowbench as cb
import reference
from conftest import examples
from cowbench._engine import abi
from cowbench._engine.abi import EXEC, EXIT, FORK, MADVISE, MMAP, MPROTECT, MUNMAP, READ, SPAWN, VFORK, WRITE
from cowbench.patterns import Pattern
from test_reference import run_kwargs, scenarios

STATES = {"running", "suspended", "exited", "killed", "fork_failed"}


def running_pids(res) -> list[int]:
    df = res.processes
    return [int(p) for p in df.loc[df["state"].isin(["running", "suspended"]), "pid"]]


def assert_process_table_consistent(res, sc) -> None:
    df = res.processes
    assert list(df["pid"]) == list(range(1, len(sc.processes) + 1))
    assert set(df["state"]) <= STATES
    killed = df["state"] == "killed"
    assert set(df.loc[killed, "reason"]) <= {"SIGSEGV", "OOM"}
    assert set(df.loc[~killed, "reason"]) <= {""}
    assert (df["rss_pages"] == df["uss_pages"] + df["shared_pages"]).all()
    assert (df["pss_pages"] <= df["rss_pages"] + 1e-9).all()
    assert (df["pss_pages"] >= df["uss_pages"] - 1e-9).all()
    # every fill, copy and reuse is one fault, minor or (a file page read for a copy) major
    assert (df["minor_faults"] + df["major_faults"] >= df["zero_fills"] + df["cow_copies"] + df["cow_reuses"]
            + df["thp_fault_alloc"] + df["thp_copies"]).all()
    # a huge PMD copied at fork is one entry, not 512 PTEs, but eager copies its 512 pages
    assert (df["fork_ptes_copied"] + 512 * df["fork_pmds_copied"] >= df["fork_pages_copied"]).all()
    assert ((df["fork_tables_copied"] > 0) == (df["fork_ptes_copied"] > 0)).all()
    assert (df["anon_huge_pages"] * 512 <= df["rss_pages"]).all()
    assert (df["anon_huge_pages"] <= df["pte_pages"]).all()     # each huge PMD has its deposited table
    failed = df[df["state"] == "fork_failed"]
    for col in ("minor_faults", "rss_pages", "pte_pages", "fork_ptes_copied", "fork_pages_copied",
                "fork_pmds_copied", "anon_huge_pages"):
        assert (failed[col] == 0).all(), col
    s = res.summary
    assert 0 <= int(s["frames_used"]) <= int(s["peak_frames"]) <= sc.frames - 1
    for key in ("minor_faults", "cow_copies", "cow_reuses", "zero_fills"):
        assert int(s[key]) == int(df[key].sum()), key


# --- the isolation model ----------------------------------------------------------

class _View:
    """An address space as the isolation model sees it: VMAs and private tags."""

    def __init__(self, vmas=None, tags=None):
        self.vmas = vmas or {}     # region -> [prot, dontfork, wipeonfork]
        self.tags = tags or {}     # (region, page) -> tag, private regions only


def private_tags(sc) -> dict:
    """pid -> view at the end, for every process the model believes alive.

    The model kills only on SIGSEGV (it knows prots and mappings); an OOM kill
    or an eager ENOMEM takes every process whose view it would change with it,
    so comparing only the processes the engine reports running is exact."""
    views: dict[int, _View] = {}
    alive: set[int] = set()
    for op in sc.flat_ops():
        if op.code == SPAWN:
            views[op.pid] = _View()
            alive.add(op.pid)
            continue
        if op.pid not in alive:
            continue
        v = views[op.pid]
        if op.code == FORK:
            vmas = {r: list(f) for r, f in v.vmas.items() if not f[1]}
            tags = {k: t for k, t in v.tags.items() if k[0] in vmas and not vmas[k[0]][2]}
            views[op.arg] = _View(vmas, tags)
            alive.add(op.arg)
        elif op.code == VFORK:
            views[op.arg] = v
            alive.add(op.arg)
        elif op.code == EXEC:
            views[op.pid] = _View()
        elif op.code == EXIT:
            alive.discard(op.pid)
        elif op.code == MMAP:
            region = sc.regions[op.region]
            v.vmas[op.region] = [region.prot, region.on_fork == "dontfork", region.on_fork == "wipeonfork"]
        elif op.code == MUNMAP:
            v.vmas.pop(op.region, None)
            v.tags = {k: t for k, t in v.tags.items() if k[0] != op.region}
        elif op.code == MPROTECT:
            if op.region in v.vmas:
                v.vmas[op.region][0] = op.arg
        elif op.code == MADVISE:
            if op.region in v.vmas:
                flag = {"dontfork": (1, True), "dofork": (1, False), "wipeonfork": (2, True),
                        "keeponfork": (2, False)}.get(op.arg)   # hugepage/nohugepage: no change to contents
                if flag is not None:
                    v.vmas[op.region][flag[0]] = flag[1]
        elif op.code in (READ, WRITE):
            npages = sc.regions[op.region].npages
            pages = op.pages.pages(npages) if isinstance(op.pages, Pattern) else op.pages
            if len(pages) == 0:           # touches nothing: cannot fault
                continue
            f = v.vmas.get(op.region)
            if f is None or f[0] == "none" or (op.code == WRITE and "w" not in f[0]):
                alive.discard(op.pid)     # SIGSEGV: the op has no effect at all
                continue
            if op.code == WRITE and not sc.regions[op.region].shared:
                for p in pages:
                    v.tags[(op.region, int(p))] = op.arg
    return {pid: views[pid] for pid in alive}


def expected_private_memory(view: _View, region) -> np.ndarray:
    out = np.zeros(region.npages, dtype=np.int64)
    if region.index in view.vmas:
        for (r, p), t in view.tags.items():
            if r == region.index:
                out[p] = t
    return out


# --- the properties ----------------------------------------------------------------

@settings(max_examples=examples(300))
@given(b=scenarios(), kw=run_kwargs)
def test_engine_state_is_consistent(engine, b, kw):
    res = engine(b.sc, **kw)
    res.check_invariants()
    assert_process_table_consistent(res, b.sc)
    assert len(res.timeline) == len(b.sc.ops)


@settings(max_examples=examples(300))
@given(b=scenarios(), kw=run_kwargs)
def test_all_memory_returns_when_every_process_exits(engine, b, kw):
    b.exit_all()
    res = engine(b.sc, **kw)
    res.check_invariants()
    ref = reference.simulate(b.sc, **kw)
    cached = sum(len(cache) for cache in ref._m.file_cache.values())     # files stay in the page cache
    assert int(res.summary["frames_used"]) == int(ref.summary["frames_used"]) == cached
    assert set(res.processes["state"]) <= {"exited", "killed", "fork_failed"}


@settings(max_examples=examples(300))
@given(b=scenarios(), kw=run_kwargs)
def test_each_running_process_reads_its_own_writes(engine, b, kw):
    kw = dict(kw, overcommit=1)      # the model does not know which mmaps overcommit refuses
    res = engine(b.sc, **kw)
    ref = reference.simulate(b.sc, **kw)
    views = private_tags(b.sc)
    for pid in running_pids(res):
        assert pid in views, f"pid {pid} runs in the engine but took a SIGSEGV in the isolation model"
        for region in b.sc.regions:
            got = res.memory(pid, region)
            np.testing.assert_array_equal(got, ref.memory(pid, region), err_msg=f"pid {pid} {region.name}: engine vs reference")
            if not region.shared and region.file is None:   # a private file page reads the file until copied
                np.testing.assert_array_equal(got, expected_private_memory(views[pid], region),
                                              err_msg=f"pid {pid} {region.name}: engine vs isolation model")


@settings(max_examples=examples(80))
@given(b=scenarios(), kw=run_kwargs)
def test_reference_reads_its_own_writes(b, kw):
    """The same isolation check on the reference alone (runs without the engine)."""
    kw = dict(kw, overcommit=1)
    ref = reference.simulate(b.sc, **kw)
    views = private_tags(b.sc)
    for pid in running_pids(ref):
        assert pid in views
        for region in b.sc.regions:
            if not region.shared:
                np.testing.assert_array_equal(ref.memory(pid, region), expected_private_memory(views[pid], region),
                                              err_msg=f"pid {pid} {region.name}")


def test_state_nbytes_names_every_array_and_needs_the_kept_state():
    sc = cb.Scenario(phys_mem="64MiB")
    p = sc.spawn("p")
    heap = p.mmap("heap", "4MiB")
    p.write(heap)
    p.fork("kid").write(heap, pages=range(0, 1024, 3))
    nbytes = cb.simulate(sc, keep_state=True).state_nbytes()
    assert nbytes["ov_val"] > 0 and nbytes["pt"] >= 2 * 512 * 4
    assert (nbytes.to_numpy()[:-1] >= nbytes.to_numpy()[1:]).all()
    with pytest.raises(cb.ScenarioError, match="keep_state=True"):
        cb.simulate(sc).state_nbytes()


def test_a_sparse_address_space_costs_a_block_per_32_slots_it_maps_and_no_override_rows():
    """Pages written at random over 1 TiB, by a parent and then by two children:
    nearly a table per page, each holding one 128-byte block per 32 slots it maps
    (not 512 entries), and the children's writes where the parent's table maps
    nothing count no override: only the slots of pages both wrote have a row of
    tab_ovr or tab_w written."""
    n, pages_in_region = 10**4, 2**28
    sc = cb.Scenario(phys_mem="8TiB")
    p = sc.spawn("p")
    r = p.mmap("r", "1TiB")
    p.write(r, pages=cb.uniform(n, seed=1))
    for seed in (2, 3):
        p.fork().write(r, pages=cb.uniform(n, seed=seed))
    res = cb.simulate(sc, keep_state=True)
    res.check_invariants()
    parent = np.unique(cb.uniform(n, seed=1).pages(pages_in_region))
    blocks = len(np.unique(parent >> 5))
    copied = []                       # pages of the parent's a child writes too: those are copies
    for seed in (2, 3):               # a child's own tables: the ranges where the parent has none
        kid = np.unique(cb.uniform(n, seed=seed).pages(pages_in_region))
        own = kid[~np.isin(kid >> 9, parent >> 9)]
        blocks += len(np.unique(own >> 5))
        copied.append(kid[np.isin(kid, parent)])
    assert res.state_nbytes()["pt"] == (1 + blocks) * 32 * 4           # and block 0, empty
    assert blocks < 1.01 * 3 * n
    m = res._machine("test")
    tables = int(m.g[abi.G_TAB_HWM])
    overridden = len(np.unique(np.concatenate(copied)))
    assert res.processes["cow_copies"].sum() == sum(map(len, copied))
    assert np.count_nonzero(m.tab_ovr[:tables]) == overridden
    assert np.count_nonzero(m.tab_w[1:tables].any(axis=1)) <= overridden


def test_overlay_pool_grows_in_place_between_ops_and_stays_consistent():
    """Ten children's dense private PTEs outgrow the overlay pool reserved up
    front (two slots a touch); simulator.py grows it between ops (in place), and
    the run still matches the reference page for page."""
    sc = cb.Scenario(phys_mem="1GiB")
    p = sc.spawn("p")
    heap = p.mmap("heap", "64MiB")
    p.write(heap)
    for i in range(10):
        p.fork(f"kid{i}").write(heap, pages=cb.uniform(5000, seed=i))
    res = cb.simulate(sc, keep_state=True)
    res.check_invariants()
    reserved = 2 * (16384 + 10 * 5000) + 2**12
    assert res.state_nbytes()["ov_val"] > reserved * 4          # used past the reservation: it grew
    ref = reference.simulate(sc)
    assert res.processes["cow_copies"].tolist() == ref.processes["cow_copies"].tolist()
    assert res.processes["pss_pages"].round(6).tolist() == ref.processes["pss_pages"].round(6).tolist()


@settings(max_examples=examples(100))
@given(b=scenarios(), kw=run_kwargs)
def test_an_op_cut_into_pieces_runs_as_it_did_whole(engine, b, kw):
    """simulate cuts long reads and writes into pieces (simulator._pieces), and a
    concurrently() block into chunks of pieces, so that progress and Ctrl-C are seen;
    with pieces of 3 touches every result is the same."""
    from unittest import mock

    from test_reference import assert_same

    from cowbench import simulator

    whole = engine(b.sc, **kw)
    with mock.patch.object(simulator, "_PIECE_TOUCHES", 3), mock.patch.object(simulator, "_BATCH_TOUCHES", 5):
        cut = engine(b.sc, **kw)
    assert_same(whole, cut, b.sc)
    pd.testing.assert_frame_equal(whole.timeline, cut.timeline)
    pd.testing.assert_frame_equal(whole.phase_timeline, cut.phase_timeline)   # a block's chunks: 5 touches
    pd.testing.assert_series_equal(whole.summary, cut.summary)
    cut.check_invariants()
    for p in b.sc.processes:
        for r in b.sc.regions:
            np.testing.assert_array_equal(whole.memory(p.pid, r), cut.memory(p.pid, r))


def test_a_long_write_is_cut_into_pieces_with_the_same_results(engine):
    """The deterministic companion of the property above: this scenario is cut."""
    from unittest import mock

    from cowbench import simulator

    sc = cb.Scenario(phys_mem="256MiB")
    p = sc.spawn("p")
    heap = p.mmap("heap", "8MiB", thp=True)
    p.write(heap, pages=cb.zipf(5000, s=1.1, seed=3))
    kid = p.fork("kid")
    kid.write(heap, pages=cb.uniform(3000, seed=4))
    p.read(heap, pages=cb.sequential(4000, start=7, stride=13))
    whole = engine(sc, policy="odf")
    with mock.patch.object(simulator, "_PIECE_TOUCHES", 100):
        assert len(simulator.compile_scenario(sc).ops) == 3 + 50 + 30 + 40
        cut = engine(sc, policy="odf")
    pd.testing.assert_frame_equal(whole.processes, cut.processes)
    pd.testing.assert_frame_equal(whole.timeline, cut.timeline)
    cut.check_invariants()


def _piece_key(op):
    """An Op as plain values: its page set as the pattern's parameters or the page list."""
    pages = op.pages
    pages = (pages.kind, pages.count, pages.seed, pages.a, pages.b, pages.first) if isinstance(pages, Pattern) \
        else tuple(pages.tolist())
    return op.code, op.pid, op.region, op.arg, op.mm, pages


@settings(max_examples=examples(200))
@given(sizes=st.lists(st.integers(0, 300), min_size=1, max_size=5), grain=st.integers(1, 70),
       seed=st.integers(0, 2**32), chunk=st.integers(1, 40), arrays=st.lists(st.booleans(), min_size=5, max_size=5))
def test_a_concurrent_block_runs_its_pieces_in_the_reference_order(sizes, grain, seed, chunk, arrays):
    """Phase.order merges the ops' pieces a key range at a time; whatever the chunk,
    the pieces come out as reference.interleave's one sort of all of them orders them."""
    sc = cb.Scenario(phys_mem="16MiB")
    p = sc.spawn("p")
    r = p.mmap("r", "1MiB")
    kid = p.fork("kid")
    with sc.concurrently(grain=grain, seed=seed):
        for i, n in enumerate(sizes):
            who = p if i % 2 else kid
            pages = np.arange(n) * 7 % r.npages if arrays[i] else cb.uniform(n, seed=i)
            (who.write if i % 3 else who.read)(r, pages=pages)
    phase = sc.ops[-1].pages
    assert [_piece_key(op) for op in phase.pieces(chunk=chunk)] == \
        [_piece_key(op) for op in reference.interleave(phase)]


@pytest.mark.parametrize("policy", ["cow", "odf", "eager"])
def test_a_concurrent_block_simulates_as_its_pieces_recorded_one_by_one(engine, policy, tmp_path):
    """A concurrently() block is one op that simulate feeds to the kernels a chunk of
    pieces at a time; the same pieces recorded as separate ops give the same counts,
    memory and totals, and phase_timeline holds the separate ops' timeline rows."""
    import copy
    from unittest import mock

    from cowbench import simulator

    sc = cb.Scenario(phys_mem="64MiB")
    p = sc.spawn("redis")
    heap = p.mmap("heap", "4MiB", thp=True)
    p.write(heap)
    kid = p.fork("bgsave")
    with sc.concurrently(grain=7, seed=3, samples=9):
        p.write(heap, pages=cb.zipf(600, s=1.1, seed=1))
        kid.read(heap)
        kid.write(heap, pages=np.arange(0, 1024, 5))
        p.read(heap, pages=cb.uniform(0))
    kid.exit()
    flat = copy.copy(sc)
    flat.ops = list(sc.flat_ops())
    with mock.patch.object(simulator, "_BATCH_TOUCHES", 50):       # chunks of 7 pieces, pieces of 50 touches
        block = engine(sc, policy=policy)
    pieces = engine(flat, policy=policy)
    pd.testing.assert_frame_equal(block.processes, pieces.processes)
    pd.testing.assert_series_equal(block.summary, pieces.summary)
    for proc in sc.processes:
        np.testing.assert_array_equal(block.memory(proc.pid, heap), pieces.memory(proc.pid, heap))
    block.check_invariants()
    tl, ptl = block.timeline, block.phase_timeline
    assert list(tl.op) == ["spawn", "mmap", "write", "fork", "concurrently", "exit"]
    n = len(flat.ops) - len(sc.ops) + 1                            # the block's pieces
    assert (ptl.pieces == n).all() and len(ptl) == 9 and ptl.piece.iloc[-1] == n - 1
    mine = ptl.drop(columns=["step", "piece", "pieces"]).reset_index(drop=True)
    theirs = pieces.timeline.iloc[4 + ptl.piece].drop(columns=["step", "pid", "op"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(mine, theirs)
    pd.testing.assert_frame_equal(tl.iloc[[4]].drop(columns=["step", "pid", "op"]).reset_index(drop=True),
                                  theirs.iloc[[-1]].reset_index(drop=True))
    block.save(tmp_path)
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "run_phase_timeline.parquet"), ptl)
    pieces.save(tmp_path / "flat")
    assert not (tmp_path / "flat" / "run_phase_timeline.parquet").exists()


def test_a_concurrent_block_of_millions_of_touches_is_one_op():
    """Recording 2 * 10**6 touches at grain 1 makes one op, not 2 * 10**6 of them,
    and only the sampled rows of its timeline are kept."""
    sc = cb.Scenario(phys_mem="256MiB")
    p = sc.spawn("p")
    heap = p.mmap("heap", "64MiB")
    p.write(heap)
    kid = p.fork("kid")
    with sc.concurrently(grain=1, seed=2, samples=5):
        p.write(heap, pages=cb.uniform(10**6, seed=1))
        kid.read(heap, pages=cb.sequential(10**6))
    assert len(sc.ops) == 5 and sc.ops[-1].pages.npieces().tolist() == [10**6, 10**6]
    res = cb.simulate(sc)
    assert res.phase_timeline.piece.tolist() == [0, 500_000, 1_000_000, 1_499_999, 1_999_999]   # rounded evenly
    assert res.phase_timeline.cow_copies.is_monotonic_increasing
    assert int(res.phase_timeline.cow_copies.iloc[-1]) == int(res.summary.cow_copies) > 0


_LONG_RUN = """
import cowbench as cb
sc = cb.Scenario(phys_mem="1GiB"); p = sc.spawn("p"); heap = p.mmap("heap", "256MiB")
p.write(heap, pages=cb.uniform(10))
cb.simulate(sc)                                  # compiled (or loaded from the cache) before the clock starts
p.write(heap, pages=cb.uniform(10**13))          # one op: hours of work
print("ready", flush=True)
try:
    cb.simulate(sc)
except KeyboardInterrupt:
    res = cb.simulate(sc.__class__("1GiB"))      # the engine still works after the interrupt
    print("interrupted", flush=True)
"""


@pytest.mark.slow
def test_ctrl_c_stops_one_long_op():
    """One op of 10**13 touches returns to Python between pieces: SIGINT stops it
    within seconds, as KeyboardInterrupt, and the next run works."""
    import signal
    import subprocess
    import sys
    import time

    proc = subprocess.Popen([sys.executable, "-c", _LONG_RUN], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
        time.sleep(2)
        sent = time.perf_counter()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
        assert time.perf_counter() - sent < 30
    finally:
        proc.kill()
    assert proc.returncode == 0 and out.strip() == "interrupted", err


_SPARSE_RUN = """
import json, resource, sys
import cowbench as cb

def run(size):
    sc = cb.Scenario(phys_mem="8TiB")
    p = sc.spawn("p")
    r = p.mmap("r", size)
    p.write(r, pages=[0, 1, 4000, 4095])
    kid = p.fork()
    kid.write(r, pages=[1, 2, 3000])
    kid.exit()
    p.fork().read(r, pages=[3, 4095])            # the new child takes the directory row the first one left
    res = cb.simulate(sc, progress=False, overcommit=1)
    return res.processes[["minor_faults", "rss_pages", "state"]].to_dict("list")

small = run("16MiB")
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
huge = run("127TiB")
print(json.dumps(dict(small=small, huge=huge, grew=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before)))
"""


def test_a_huge_mapping_costs_the_simulator_what_is_written_in_it():
    """127 TiB mapped (64 Mi directory entries a row), a few pages written, a child
    forked, exited, and another forked into its row: the same run as in 16 MiB, and
    the simulator's peak RSS grows by far less than the directory's 2.75 GiB
    (rows are calloc'd and none is written in full, see mmap.mm_init)."""
    import json
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", _SPARSE_RUN], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    d = json.loads(out.stdout)
    assert d["huge"] == d["small"]
    assert d["small"]["minor_faults"] == [4, 3, 1]
    assert d["grew"] < 50 * 2**20, f"a 127 TiB mapping grew the simulator's peak RSS by {d['grew'] / 2**20:.0f} MiB"


def test_growing_an_array_copies_it_exactly_and_leaves_its_unwritten_pages_unbacked():
    """machine._grown: the grown array holds the used rows as they were and zeros
    after them, and the host backs only the pages that hold something (4 KiB rows
    of a sparse field, a few of 16384 written: a few pages, not 64 MiB)."""
    from cowbench._engine.machine import _grown, _zeros

    def rss():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * 4096

    _grown(np.ones((2, 512)), 4, 2, True)        # compile copy_written first: compiling costs memory too
    rows = 16384
    a = _zeros((rows, 512), np.float64, True)
    written = [0, 1, 777, 9000, rows - 1]
    for i, r in enumerate(written):
        a[r, i * 100 % 512] = -1.5 - i
    before = rss()
    b = _grown(a, 2 * rows, rows, True)
    grew = rss() - before
    assert b.shape == (2 * rows, 512) and b.ctypes.data % 4096 == 0
    assert np.array_equal(b[:rows], a) and not b[rows:].any()
    assert grew < 64 * 4096, f"growing a 64 MiB array with 5 rows written made the host back {grew} bytes"
