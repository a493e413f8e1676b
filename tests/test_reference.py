"""The jitted engine against the pure-Python reference, on random scenarios.

`scenarios()` builds random *valid* scenarios through the public builder, so
everything it produces must run; small machines make OOM kills and eager
ENOMEM common. A failing example prints as the Python code that builds it.
"""
from __future__ import annotations

import contextlib

import numpy as np
import pandas as pd
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import cowbench as cb
import reference
from conftest import examples

PAGE = 4096
SUMMARY_KEYS = ("frames_used", "peak_frames", "pte_frames", "minor_faults", "cow_copies", "cow_reuses", "zero_fills")


# --- a random scenario, built through the public API ---------------------------

class Built:
    """A scenario plus what the strategy tracked while building it, and the
    Python code that builds it (its repr, so a failing example reads as code)."""

    def __init__(self, phys_frames: int):
        self.sc = cb.Scenario(phys_mem=phys_frames * PAGE)
        self.code = [f"sc = cb.Scenario(phys_mem={phys_frames} * 4096)"]
        self.state: dict[int, str] = {}        # pid -> active | suspended | exited
        self.vfork_parent: dict[int, int] = {}  # vfork child pid -> parent pid
        self.mm: dict[int, int] = {}            # pid -> build-time mm key
        self.mapped: dict[int, set] = {}        # mm key -> mapped region indices (the builder's view)
        self.vmas: dict[int, dict] = {}         # mm key -> region -> [prot, dontfork] (the run's view)
        self.procs: dict[int, cb.Process] = {}
        self.n_mm = 0
        self.files: list[cb.files.File] = []
        self.cached_pages = 0                   # pages of cached files (in memory from the start)

    def __repr__(self) -> str:
        return "\n" + "\n".join(self.code) + "\n"

    def _new_mm(self, regions=(), vmas=None) -> int:
        self.n_mm += 1
        self.mapped[self.n_mm] = set(regions)
        self.vmas[self.n_mm] = {r: list(v) for r, v in (vmas or {}).items() if not v[1]}
        return self.n_mm

    def _add(self, proc: cb.Process, mm: int) -> None:
        self.procs[proc.pid] = proc
        self.state[proc.pid] = "active"
        self.mm[proc.pid] = mm

    def active(self) -> list[int]:
        return [pid for pid, s in self.state.items() if s == "active"]

    def living(self) -> list[int]:
        return [pid for pid, s in self.state.items() if s != "exited"]

    def regions_of(self, pid: int) -> list[int]:
        return sorted(self.mapped[self.mm[pid]])

    def touchable(self, pid: int, write: bool) -> list[int]:
        """Regions this process can touch without a SIGSEGV (as far as the strategy knows)."""
        vmas = self.vmas[self.mm[pid]]
        return sorted(r for r, (prot, _) in vmas.items() if ("w" in prot if write else prot != "none"))

    # the operations, each recorded as code too
    def spawn(self) -> int:
        p = self.sc.spawn()
        self._add(p, self._new_mm())
        self.code.append(f"p{p.pid} = sc.spawn()")
        return p.pid

    def file(self, npages, cached, folio, readahead) -> int:
        f = self.sc.file(f"f{len(self.files)}", npages * PAGE, cached=cached, folio=folio, readahead=readahead)
        self.files.append(f)
        self.cached_pages += npages if cached else 0
        self.code.append(f"f{f.index} = sc.file({f.name!r}, {npages * PAGE}, cached={cached}, folio={folio!r}, "
                         f"readahead={readahead})")
        return f.index

    def mmap(self, pid, size, shared, prot, on_fork, thp=False, file=None, offset=0) -> None:
        kw = {"thp": True} if thp else {}
        if file is not None:
            kw = {"file": self.files[file], "offset": offset * PAGE}
        r = self.procs[pid].mmap(f"r{len(self.sc.regions)}", size, shared=shared, prot=prot, on_fork=on_fork, **kw)
        self.mapped[self.mm[pid]].add(r.index)
        self.vmas[self.mm[pid]][r.index] = [prot, on_fork == "dontfork"]
        extra = ", thp=True" if thp else f", file=f{file}, offset={offset * PAGE}" if file is not None else ""
        self.code.append(f"r{r.index} = p{pid}.mmap({r.name!r}, {size!r}, shared={shared}, prot={prot!r}, "
                         f"on_fork={on_fork!r}{extra})")

    def munmap(self, pid, r) -> None:
        self.procs[pid].munmap(self.sc.regions[r])
        self.mapped[self.mm[pid]].discard(r)
        self.vmas[self.mm[pid]].pop(r, None)
        self.code.append(f"p{pid}.munmap(r{r})")

    def mprotect(self, pid, r, prot) -> None:
        self.procs[pid].mprotect(self.sc.regions[r], prot)
        if r in self.vmas[self.mm[pid]]:
            self.vmas[self.mm[pid]][r][0] = prot
        self.code.append(f"p{pid}.mprotect(r{r}, {prot!r})")

    def madvise(self, pid, r, advice) -> None:
        self.procs[pid].madvise(self.sc.regions[r], advice)
        if r in self.vmas[self.mm[pid]] and advice in ("dontfork", "dofork"):
            self.vmas[self.mm[pid]][r][1] = advice == "dontfork"
        self.code.append(f"p{pid}.madvise(r{r}, {advice!r})")

    def touch(self, pid, write, r, pages, pages_code, value, indent="") -> None:
        proc, region = self.procs[pid], self.sc.regions[r]
        if write:
            proc.write(region, pages=pages, value=value)
            self.code.append(f"{indent}p{pid}.write(r{r}, pages={pages_code}, value={value!r})")
        else:
            proc.read(region, pages=pages)
            self.code.append(f"{indent}p{pid}.read(r{r}, pages={pages_code})")

    def pin(self, pid, unpin, r, pages, pages_code) -> None:
        proc, region = self.procs[pid], self.sc.regions[r]
        (proc.unpin if unpin else proc.pin)(region, pages=pages)
        self.code.append(f"p{pid}.{'unpin' if unpin else 'pin'}(r{r}, pages={pages_code})")

    def fork(self, pid) -> None:
        child = self.procs[pid].fork()
        vmas = self.vmas[self.mm[pid]]
        dontfork = {r for r, (_, df) in vmas.items() if df}     # the builder knows them too
        self._add(child, self._new_mm(self.mapped[self.mm[pid]] - dontfork, vmas))
        self.code.append(f"p{child.pid} = p{pid}.fork()")

    def vfork(self, pid) -> None:
        child = self.procs[pid].vfork()
        self._add(child, self.mm[pid])
        self.state[pid] = "suspended"
        self.vfork_parent[child.pid] = pid
        self.code.append(f"p{child.pid} = p{pid}.vfork()")

    def _release(self, pid) -> None:
        parent = self.vfork_parent.pop(pid, None)
        if parent is not None:
            self.state[parent] = "active"

    def exec(self, pid) -> None:
        self.procs[pid].exec()
        self.mm[pid] = self._new_mm()
        self._release(pid)
        self.code.append(f"p{pid}.exec()")

    def exit(self, pid) -> None:
        self.procs[pid].exit()
        self.state[pid] = "exited"
        self._release(pid)
        self.code.append(f"p{pid}.exit()")

    def exit_all(self) -> None:
        """Append an exit for every living process, vfork children before their parents."""
        while self.living():
            for pid in self.active():
                self.exit(pid)


ACTIONS = (["write"] * 8 + ["read"] * 3 + ["mmap"] * 2 + ["fork"] * 3 + ["vfork", "exec", "exit", "munmap",
           "mprotect", "madvise", "spawn", "pin", "unpin", "concurrently", "fork_then_write", "fork_then_write"])
PROTS = ["rw"] * 8 + ["r", "rwx", "rx", "none"]
ADVICE = ["dontfork", "dofork", "wipeonfork", "keeponfork", "hugepage", "nohugepage"]
PRIVATE_ONLY_ADVICE = ("wipeonfork", "hugepage")     # the builder refuses them on shared and file regions


@st.composite
def page_sets(draw, n: int, patterns: bool = True):
    """A `pages=` argument over a region of n pages, and the code that writes it."""
    kinds = ["none", "none", "none", "range", "range", "list", "int", "array", "slice"]
    kind = draw(st.sampled_from(kinds + (["pattern", "pattern"] if patterns else [])))
    if kind == "none":
        return None, "None"
    if kind == "range":
        a = draw(st.integers(0, n - 1))
        b = draw(st.integers(a, n))
        step = draw(st.sampled_from([1, 1, 2, 3, -1, -2]))
        if step > 0:
            rng = range(a, b, step)
        else:
            rng = range(b - 1, a - 1, step) if b > a else range(0)
        return rng, repr(rng)
    if kind == "slice":
        a = draw(st.integers(-n, n))
        b = draw(st.one_of(st.none(), st.integers(-n, n)))
        step = draw(st.sampled_from([None, 1, 2, -1]))
        return slice(a, b, step), f"slice({a}, {b}, {step})"
    if kind == "int":
        p = draw(st.integers(0, n - 1))
        return p, repr(p)
    if kind in ("list", "array"):
        lst = draw(st.lists(st.integers(0, n - 1), max_size=12))
        if kind == "array":
            return np.array(lst, dtype=np.int64), f"np.array({lst}, dtype=np.int64)"
        return lst, repr(lst)
    which = draw(st.sampled_from(["uniform", "zipf", "hotset", "sequential"]))
    count = draw(st.integers(0, 24))
    seed = draw(st.integers(0, 2**40))
    if which == "uniform":
        return cb.uniform(count, seed=seed), f"cb.uniform({count}, seed={seed})"
    if which == "zipf":
        s = draw(st.sampled_from([0.6, 1.0, 1.1, 2.5]))
        return cb.zipf(count, s=s, seed=seed), f"cb.zipf({count}, s={s}, seed={seed})"
    if which == "hotset":
        hot = draw(st.sampled_from([0.0, 0.1, 0.5, 1.0]))
        p_hot = draw(st.sampled_from([0.0, 0.5, 0.9, 1.0]))
        return cb.hotset(count, hot=hot, p_hot=p_hot, seed=seed), f"cb.hotset({count}, hot={hot}, p_hot={p_hot}, seed={seed})"
    cnt = draw(st.one_of(st.none(), st.just(count)))
    start = draw(st.integers(0, n - 1))
    stride = draw(st.integers(1, 3))
    return cb.sequential(cnt, start=start, stride=stride), f"cb.sequential({cnt}, start={start}, stride={stride})"


@st.composite
def scenarios(draw, max_steps: int = 36) -> Built:
    """A random valid scenario: only legal calls, tracked as the builder does."""
    tight = draw(st.booleans())
    if tight:
        frames = draw(st.integers(3, 40))
    elif draw(st.integers(0, 3)) == 0:   # room for a few huge pages (512 frames each), not many
        frames = draw(st.integers(515, 1800))
    else:
        frames = 1 << 14
    b = Built(frames)
    b.spawn()
    if draw(st.booleans()):   # a prelude: a written private heap, so forks have something to share
        npages = draw(st.sampled_from([4, 8, 600, 1024]))
        b.mmap(1, npages * PAGE, False, "rw", "copy", thp=npages >= 512 and draw(st.booleans()))
        b.touch(1, True, 0, None, "None", None)
    for _ in range(draw(st.integers(1, max_steps))):
        actors = b.active()
        if not actors:
            break
        # the newest process acts half the time: children do things soon after their fork
        pid = actors[-1] if draw(st.booleans()) else draw(st.sampled_from(actors))
        action = draw(st.sampled_from(ACTIONS))
        mine = b.regions_of(pid)
        if action in ("pin", "unpin") and not hasattr(cb.Process, "pin"):
            action = "write"
        if action == "concurrently" and not hasattr(cb.Scenario, "concurrently"):
            action = "write"
        if action in ("read", "write", "munmap", "mprotect", "madvise", "pin", "unpin") and not mine:
            action = "mmap"
        if action in ("read", "write") and not b.touchable(pid, action == "write") and draw(st.integers(0, 3)):
            action = "mmap"
        if action == "mmap":
            npages = draw(st.sampled_from([1, 2, 3, 4, 5, 8, 8, 16, 512, 513, 1024, 1030]))
            size = npages * PAGE - draw(st.sampled_from([0, 0, 1, PAGE - 1]))
            if draw(st.booleans()):
                size = f"{size}"
            shared = draw(st.sampled_from([False, False, True]))
            prot = draw(st.sampled_from(PROTS))
            on_fork = draw(st.sampled_from(["copy"] * 5 + ["dontfork"] + ([] if shared else ["wipeonfork"])))
            # transparent huge pages: private regions only; mostly where a whole 2 MiB range fits
            thp = not shared and draw(st.integers(0, 3 if npages >= 512 else 7)) < 2
            if draw(st.integers(0, 2)) == 0:     # a file mapping (rules F1-F5): a new file, or one made before
                if not b.files or draw(st.booleans()):
                    fpages = draw(st.sampled_from([4, 16, 40, 600, 1100]))
                    cached = b.cached_pages + fpages < (frames - 2) // 2 and draw(st.booleans())
                    b.file(fpages, cached, draw(st.sampled_from(["4KiB", "64KiB", "2MiB"])),
                           draw(st.sampled_from([0, 4 * PAGE, 16 * PAGE, 64 * PAGE])) if not cached else 0)
                f = draw(st.integers(0, len(b.files) - 1))
                fpages = b.files[f].size // PAGE
                npages = min(npages, fpages)
                offset = draw(st.sampled_from([0, 0, 512, draw(st.integers(0, fpages - npages))]))
                offset = offset if offset + npages <= fpages else 0
                on_fork = "copy" if on_fork == "wipeonfork" else on_fork
                b.mmap(pid, npages * PAGE - draw(st.sampled_from([0, 1])), shared, prot, on_fork, file=f, offset=offset)
            else:
                b.mmap(pid, size, shared, prot, on_fork, thp)
        elif action in ("read", "write"):
            ok = b.touchable(pid, action == "write")
            if not ok or draw(st.integers(0, 19)) == 0:   # sometimes a SIGSEGV on purpose
                r = draw(st.integers(0, len(b.sc.regions) - 1))
            else:
                r = draw(st.sampled_from(ok))
            pages, code = draw(page_sets(b.sc.regions[r].npages))
            value = draw(st.one_of(st.none(), st.integers(1, 10**6)))
            b.touch(pid, action == "write", r, pages, code, value)
        elif action == "concurrently":
            # reads and writes of several processes, cut into pieces and interleaved
            grain = draw(st.sampled_from([1, 2, 3, 64]))
            seed = draw(st.integers(0, 1000))
            touches = []
            for _ in range(draw(st.integers(1, 3))):
                q = draw(st.sampled_from(actors))
                write = draw(st.booleans())
                ok = b.touchable(q, write)
                if not ok:
                    continue
                r = draw(st.sampled_from(ok))
                pages, code = draw(page_sets(b.sc.regions[r].npages))
                value = draw(st.one_of(st.none(), st.integers(1, 10**6)))
                touches.append((q, write, r, pages, code, value))
            if touches:
                b.code.append(f"with sc.concurrently(grain={grain}, seed={seed}):")
                with b.sc.concurrently(grain=grain, seed=seed):
                    for t in touches:
                        b.touch(*t, indent="    ")
        elif action in ("pin", "unpin"):
            r = draw(st.sampled_from(mine))
            pages, code = draw(page_sets(b.sc.regions[r].npages, patterns=False))
            b.pin(pid, action == "unpin", r, pages, code)
        elif action == "munmap":
            b.munmap(pid, draw(st.sampled_from(mine)))
        elif action == "mprotect":
            b.mprotect(pid, draw(st.sampled_from(mine)), draw(st.sampled_from(PROTS)))
        elif action == "madvise":
            r = draw(st.sampled_from(mine))
            region = b.sc.regions[r]
            advice = draw(st.sampled_from([a for a in ADVICE if a not in PRIVATE_ONLY_ADVICE]
                                          if region.shared or region.file is not None else ADVICE))
            b.madvise(pid, r, advice)
        elif action == "fork":
            b.fork(pid)
        elif action == "fork_then_write":        # the COW story: fork, then one side writes
            b.fork(pid)
            writer = draw(st.sampled_from([pid, max(b.procs)]))
            ok = b.touchable(writer, True)
            if ok:
                r = draw(st.sampled_from(ok))
                pages, code = draw(page_sets(b.sc.regions[r].npages))
                b.touch(writer, True, r, pages, code, None)
        elif action == "vfork":
            b.vfork(pid)
        elif action == "exec":
            b.exec(pid)
        elif action == "exit":
            b.exit(pid)
        elif action == "spawn":
            b.spawn()
    return b


POLICIES = [p for p in ("cow", "eager", "odf") if p in getattr(cb, "POLICIES", ("cow", "eager"))]
run_kwargs = st.fixed_dictionaries({
    "policy": st.sampled_from(POLICIES),
    "oom": st.sampled_from(["largest", "faulting"]),
    "zero_page": st.sampled_from([True, True, False]),
    # mostly 1 (never refuse), so that small machines meet the OOM killer rather than ENOMEM
    "overcommit": st.sampled_from([1, 1, 0, 2]),
    "overcommit_ratio": st.sampled_from([50, 100, 300]),
    "thp_cow": st.sampled_from(["split", "copy"]),
})


# --- comparison ----------------------------------------------------------------

def normalized(df: pd.DataFrame) -> pd.DataFrame:
    df = df[list(reference.COLUMNS)].reset_index(drop=True).copy()
    for col in ("name", "state", "reason"):
        df[col] = df[col].astype(str).astype(object)
    # A vfork parent whose child still runs at the end is "running" (alive).
    df["state"] = df["state"].replace("suspended", "running")
    return df


def assert_same(ref, res, sc) -> None:
    """Engine result `res` equals reference result `ref`: processes, summary, memory."""
    pd.testing.assert_frame_equal(normalized(res.processes), normalized(ref.processes),
                                  check_exact=False, rtol=1e-9, atol=0)
    for key in SUMMARY_KEYS:
        assert int(res.summary[key]) == int(ref.summary[key]), f"summary[{key!r}]"
    for pid, state in zip(ref.processes["pid"], ref.processes["state"]):
        if state != "running":
            continue
        for region in sc.regions:
            np.testing.assert_array_equal(res.memory(int(pid), region), ref.memory(int(pid), region),
                                          err_msg=f"memory of pid {pid}, region {region.name}")


# --- the properties ------------------------------------------------------------

@settings(max_examples=examples(800))
@given(b=scenarios(), kw=run_kwargs)
def test_engine_matches_reference(engine, b, kw):
    ref = reference.simulate(b.sc, **kw)
    res = engine(b.sc, **kw)
    assert_same(ref, res, b.sc)
    res.check_invariants()          # and the engine's shared tables and overlays add up
    assert len(res.timeline) == len(b.sc.ops)


@contextlib.contextmanager
def second_thread(ahead: bool):
    """simulate() with pages marked ahead and half the processes frozen on a second
    thread (ahead; conftest.py makes windows a few touches), or all on one thread,
    as on a single core. Yields a list that gets, as each run ends, whether any of
    its marks made ahead were left set (the next op given their room would see them)."""
    from cowbench import simulator

    left = []
    leave = simulator._SecondThread.__exit__

    def checked_exit(self, *exc):
        left.append(bool(self.marks.any()))
        return leave(self, *exc)
    simulator._SecondThread.__exit__ = checked_exit
    simulator.PREMARK = ahead
    try:
        yield left
    finally:
        simulator.PREMARK = True
        simulator._SecondThread.__exit__ = leave


@settings(max_examples=examples(200))
@given(b=scenarios(), kw=run_kwargs)
def test_marking_ahead_on_a_second_thread_changes_nothing(engine, b, kw):
    """The same run, number for number and page for page, whether a second thread
    marks pages ahead and freezes half the processes or one thread does it all;
    and the marks made ahead are all cleared by the ops that had them."""
    with second_thread(False):
        alone = engine(b.sc, **kw)
    with second_thread(True) as left:
        ahead = engine(b.sc, **kw)
    assert left == [False]
    pd.testing.assert_frame_equal(ahead.processes, alone.processes, check_exact=True)
    np.testing.assert_array_equal(ahead.timeline.to_numpy(), alone.timeline.to_numpy())
    for pid, state in zip(ahead.processes["pid"], ahead.processes["state"]):
        if state == "running":
            for region in b.sc.regions:
                np.testing.assert_array_equal(ahead.memory(int(pid), region), alone.memory(int(pid), region))


@settings(max_examples=examples(60))
@given(b=scenarios(), kw=run_kwargs)
def test_reference_keeps_its_own_invariants(b, kw):
    """The reference checks itself too: mapcounts, no leaked frame, all freed at the end."""
    ref = reference.simulate(b.sc, **kw)
    ref.check_invariants()
    assert (ref.processes["rss_pages"] == ref.processes["uss_pages"] + ref.processes["shared_pages"]).all()
    assert (ref.processes["pss_pages"] <= ref.processes["rss_pages"] + 1e-9).all()
    assert ref.summary["frames_used"] <= ref.summary["peak_frames"] <= b.sc.frames - 1
    b.exit_all()
    ref = reference.simulate(b.sc, **kw)
    ref.check_invariants()
    assert ref.summary["frames_used"] == sum(len(cache) for cache in ref._m.file_cache.values())   # files stay cached
    assert set(ref.processes["state"]) <= {"exited", "killed", "fork_failed"}


@pytest.mark.parametrize("kw", [dict(policy="cow"), dict(policy="eager"), dict(policy="cow", oom="faulting"),
                                dict(policy="cow", zero_page=False)])
def test_result_columns_and_dtypes(simulate, kw):
    sc = cb.Scenario(phys_mem=64 * PAGE)
    root = sc.spawn("root")
    heap = root.mmap("heap", 4 * PAGE)
    root.write(heap)
    kid = root.fork("kid")
    kid.write(heap, pages=[0])
    res = simulate(sc, **kw)
    df = res.processes
    assert list(df.columns[: len(reference.COLUMNS)]) == list(reference.COLUMNS) or \
        set(reference.COLUMNS) <= set(df.columns)
    for col in reference.INT_COLUMNS:
        assert df[col].dtype == np.int64, col
    assert df["pss_pages"].dtype == np.float64
    assert list(df["pid"]) == [1, 2]


@settings(max_examples=examples(60))
@given(b=scenarios(), kw=run_kwargs)
def test_reference_odf_is_cow_without_fork_copies(b, kw):
    """The reference's "odf" is "cow" at page level; it copies no PTE or table at
    fork, and its exits walk no PTE of a table still shared. (Only with room to
    spare: tables take frames, and odf needs fewer of them, so under memory
    pressure OOM kills and ENOMEM differ.)"""
    assume(b.sc.frames > 4096)
    kw = dict(kw, policy="cow", overcommit=1)
    cow = reference.simulate(b.sc, **kw).processes
    odf = reference.simulate(b.sc, **dict(kw, policy="odf")).processes
    assert (odf["fork_ptes_copied"] <= cow["fork_ptes_copied"]).all()
    assert ((odf["fork_pages_copied"] == 0) | (odf["fork_tables_copied"] > 0)).all()   # only pinned tables
    assert (odf["exit_ptes_zapped"] <= cow["exit_ptes_zapped"]).all()
    same = [c for c in reference.COLUMNS if c not in ("fork_ptes_copied", "fork_tables_copied", "fault_tables_copied",
                                                       "exit_ptes_zapped")]
    pd.testing.assert_frame_equal(odf[same], cow[same])


# --- many address spaces sharing one set of tables -------------------------------

@st.composite
def family_trees(draw) -> Built:
    """A parent with a 3 MiB heap and a dozen forks, grandchildren included,
    each writing hundreds of random pages (overlays of every size class, up
    to dense), exiting in any order, the parent writing in between: the
    shape the shared tables and overlays exist for, at a size the reference
    still runs quickly."""
    b = Built(draw(st.sampled_from([3000, 20000])))
    root = b.spawn()
    npages = 768
    b.mmap(root, npages * PAGE, False, "rw", "copy")
    b.touch(root, True, 0, None, "None", None)
    for _ in range(draw(st.integers(4, 14))):
        pid = draw(st.sampled_from(b.active()))
        action = draw(st.sampled_from(["fork", "fork", "write", "write", "exit", "read", "mprotect", "pin"]))
        if action == "fork":
            b.fork(pid)
        elif action in ("write", "read"):
            count = draw(st.integers(1, 700))
            seed = draw(st.integers(0, 2**32))
            which = draw(st.sampled_from(["uniform", "zipf"]))
            pat = cb.uniform(count, seed=seed) if which == "uniform" else cb.zipf(count, s=1.1, seed=seed)
            code = f"cb.{which}({count}, seed={seed})" if which == "uniform" else f"cb.zipf({count}, s=1.1, seed={seed})"
            if action == "write" and 0 in b.touchable(pid, True):
                b.touch(pid, True, 0, pat, code, None)
            elif 0 in b.touchable(pid, False):
                b.touch(pid, False, 0, pat, code, None)
        elif action == "mprotect" and 0 in b.regions_of(pid):
            b.mprotect(pid, 0, draw(st.sampled_from(["r", "rw"])))
        elif action == "pin" and 0 in b.touchable(pid, True):
            lst = draw(st.lists(st.integers(0, npages - 1), min_size=1, max_size=6))
            b.pin(pid, draw(st.booleans()), 0, lst, repr(lst))
        elif action == "exit" and len(b.active()) > 1:
            b.exit(pid)
    return b


@settings(max_examples=examples(40))
@given(b=family_trees(), policy=st.sampled_from(["cow", "odf", "eager"]))
def test_engine_matches_reference_on_family_trees(engine, b, policy):
    ref = reference.simulate(b.sc, policy=policy)
    res = engine(b.sc, policy=policy)
    assert_same(ref, res, b.sc)
    res.check_invariants()


# --- each page of an op once, or every touch in order ------------------------------

@st.composite
def touch_orders(draw) -> Built:
    """Ops whose marked pages are handled a 2 MiB range at a time (whole
    ranges of first writes and of copies in one pass, the rest page by page,
    in address order) and ops that could run out of memory (every touch in
    the op's order): a few pages far apart in a large region, runs of up to
    1500 pages, hundreds of repeats, and machines from roomy to a few frames
    more than the pages written."""
    npages = draw(st.sampled_from([600, 4096, 9000]))
    slack = draw(st.sampled_from([8, 200, 1 << 16]))
    b = Built(npages + slack)
    root = b.spawn()
    b.mmap(root, npages * PAGE, False, "rw", "copy")
    if draw(st.booleans()):
        b.touch(root, True, 0, None, "None", None)
    for _ in range(draw(st.integers(2, 8))):
        pid = draw(st.sampled_from(b.active()))
        action = draw(st.sampled_from(["fork", "write", "write", "write", "read", "exit"]))
        if action == "fork":
            b.fork(pid)
        elif action == "exit" and len(b.active()) > 1:
            b.exit(pid)
        elif action in ("write", "read"):
            shape = draw(st.sampled_from(["spread", "dense", "pattern"]))
            if shape == "spread":      # a handful of pages, most in ranges of their own, each twice
                lst = draw(st.lists(st.integers(0, npages // 64 - 1), min_size=1, max_size=6))
                pages = [64 * w + draw(st.integers(0, 63)) for w in lst]
                pages, code = pages + pages[::-1], repr(pages + pages[::-1])
            elif shape == "dense":
                a = draw(st.integers(0, npages - 1))
                pages = range(a, min(npages, a + draw(st.integers(1, 1500))))
                code = repr(pages)
            else:
                count, seed = draw(st.integers(1, 3000)), draw(st.integers(0, 2**32))
                pages, code = cb.zipf(count, s=1.1, seed=seed), f"cb.zipf({count}, s=1.1, seed={seed})"
            b.touch(pid, action == "write", 0, pages, code, draw(st.one_of(st.none(), st.integers(1, 10**6))))
    return b


@settings(max_examples=examples(60))
@given(b=touch_orders(), policy=st.sampled_from(["cow", "odf", "eager"]), oom=st.sampled_from(["largest", "faulting"]))
def test_engine_matches_reference_however_an_op_visits_its_pages(engine, b, policy, oom):
    ref = reference.simulate(b.sc, policy=policy, oom=oom)
    res = engine(b.sc, policy=policy, oom=oom)
    assert_same(ref, res, b.sc)
    res.check_invariants()


@pytest.mark.parametrize("thp_cow", ["copy", "split"])
@pytest.mark.parametrize("slack", [0, 6, 12, 40, 600])
def test_an_op_touching_a_huge_page_keeps_its_order(engine, thp_cow, slack):
    """A huge page left by MADV_NOHUGEPAGE is copied whole (thp_cow="copy")
    only if 512 frames are free at its fault: whether the op's other first
    writes came before it decides, so such an op touches pages in its own order."""
    sc = cb.Scenario(phys_mem=(1 + 512 + 2 + 512 + slack) * PAGE)
    p = sc.spawn("p")
    heap = p.mmap("heap", "4MiB", thp=True)
    p.write(heap, pages=range(512, 1024))              # one huge page, in the second 2 MiB
    p.madvise(heap, "nohugepage")
    kid = p.fork("kid")
    kid.write(heap, pages=[600] + list(range(10)))     # the huge page first, then ten in a range without a table
    ref = reference.simulate(sc, thp_cow=thp_cow)
    res = engine(sc, thp_cow=thp_cow)
    assert_same(ref, res, sc)
    res.check_invariants()


@pytest.mark.parametrize("policy", ["cow", "odf", "eager"])
def test_without_marks_every_op_touches_in_order_with_the_same_results(engine, monkeypatch, policy):
    """If the marks' address space is refused, ops touch their pages one by
    one, in order: slower, and the same run, page for page."""
    sc = cb.Scenario(phys_mem="64MiB")
    p = sc.spawn("p")
    heap = p.mmap("heap", "6MiB")
    p.write(heap, pages=cb.zipf(3000, s=1.1, seed=1))
    for i in range(3):
        kid = p.fork(f"kid{i}")
        kid.write(heap, pages=cb.uniform(800, seed=i))
        kid.read(heap, pages=cb.zipf(500, s=0.9, seed=i))
    p.write(heap, pages=range(0, 1536, 5))
    marked = engine(sc, policy=policy)
    from cowbench._engine import machine
    dims = machine._dims
    monkeypatch.setattr(machine, "_dims", lambda prog, frame_max: {**dims(prog, frame_max), "marks": 0,
                                                                   "marked_ranges": 0})
    in_order = engine(sc, policy=policy)
    assert in_order.state_nbytes()["seen"] == 0 < marked.state_nbytes()["seen"]
    assert_same(marked, in_order, sc)
    assert_same(reference.simulate(sc, policy=policy), in_order, sc)
    in_order.check_invariants()


@pytest.mark.parametrize("policy", ["cow", "odf", "eager"])
def test_a_fork_server_matches_the_reference_as_its_children_come_and_go(engine, policy):
    """A server forks children that write a few pages and exit or exec, some
    alive at once; between them it writes itself, while it shares its tables
    and when it is their only user again (they stop being ready to share), and
    pins a page. Tables rejoined at fork without a copy, smaps
    re-summed only where something changed, and exits that leave shared
    tables at once must give the reference's run, page for page."""
    sc = cb.Scenario(phys_mem="256MiB")
    server = sc.spawn("server")
    heap = server.mmap("heap", "48MiB")           # 24 tables: most untouched by any one child
    server.write(heap)
    alive = []
    for i in range(12):
        kid = server.fork(f"kid{i}")
        kid.write(heap, pages=cb.uniform(3, seed=i))
        if i % 3 == 0:
            alive.append(kid)
        elif i % 3 == 1:
            kid.exit()
        else:
            kid.exec()
            kid.write(kid.mmap(f"own{i}", "16KiB"))
        if i == 5:
            server.write(heap, pages=range(0, 12288, 997))
        if i == 8:
            server.pin(heap, pages=[3])
        if i == 9:                                # all gone: the server alone writes its own tables
            while alive:
                alive.pop().exit()
            server.write(heap, pages=range(5, 12288, 1499))
    res = engine(sc, policy=policy)
    res.check_invariants()
    assert_same(reference.simulate(sc, policy=policy), res, sc)
