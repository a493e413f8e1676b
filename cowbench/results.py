"""What a run produced, as tidy pandas tables, plus the checks tests lean on.

Column names follow the kernel's vocabulary: smaps (Rss, Pss, USS as smem
names it), vmstat (pgfault as minor_faults, pgreuse as cow_reuses), VmPTE as
pte_pages. Counts are in pages; values are as they stand at the end of the run,
or at a process's exit or death.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from . import _kernels as K
from ._params import ScenarioError
from .costs import CostModel
from .scenario import OP_NAMES, Process, Region

__all__ = ["Result", "atomic_write"]

# A vfork parent still waiting for its child is alive (in D state): "running".
STATE_NAMES = {K.P_UNBORN: "fork_failed", K.P_RUNNING: "running", K.P_SUSPENDED: "running",
               K.P_EXITED: "exited", K.P_KILLED: "killed", K.P_FORK_FAILED: "fork_failed"}
REASON_NAMES = {K.R_NONE: "", K.R_SIGSEGV: "SIGSEGV", K.R_OOM: "OOM"}

# Event counters, in the order of the kernels' C_* indices 0 .. N_TOTALS-1.
EVENT_COLUMNS = ("minor_faults", "zero_fills", "cow_copies", "cow_reuses", "fork_pages_copied",
                 "fork_ptes_copied", "fork_tables_copied", "fork_tables_shared", "fault_tables_copied",
                 "fork_pmds_copied", "thp_fault_alloc", "thp_copies", "thp_splits", "enomem")
assert len(EVENT_COLUMNS) == K.N_TOTALS
MEMORY_COLUMNS = ("rss_pages", "pss_pages", "uss_pages", "shared_pages", "pte_pages", "anon_huge_pages")
TIMELINE_COLUMNS = EVENT_COLUMNS + ("frames_used", "processes_running", "forks", "pte_frames")


def fork_ns(costs: CostModel, forks, c) -> np.ndarray:
    """Estimated time of `forks` forks that copied or shared what the counters c say.
    Sharing a PTE table (odf) takes a reference and write-protects one PMD entry:
    priced as copying one entry."""
    return (costs.fork_base_ns * forks
            + costs.fork_pte_ns * (c["fork_ptes_copied"] + c["fork_pmds_copied"] + c["fork_tables_shared"])
            + costs.fork_table_ns * c["fork_tables_copied"]
            + costs.fork_page_ns * c["fork_pages_copied"])


def faults_ns(costs: CostModel, c) -> np.ndarray:
    """Estimated time of the faults counted in c. A fault that maps an existing page (zero page, huge zero
    page, page cache) is every fault that neither allocated nor copied nor
    reused; an odf table copied at a fault is priced as a full table copied at
    fork, a huge page as 512 small ones (upper bounds)."""
    maps = (c["minor_faults"] - c["zero_fills"] - c["cow_copies"] - c["cow_reuses"]
            - c["thp_fault_alloc"] - c["thp_copies"])
    return (costs.faults_ns(c["zero_fills"], c["cow_copies"], c["cow_reuses"], maps)
            + c["fault_tables_copied"] * (costs.fork_table_ns + K.PTRS_PER_TABLE * costs.fork_pte_ns)
            + K.PTRS_PER_TABLE * (costs.zero_fill_ns * c["thp_fault_alloc"] + costs.cow_copy_ns * c["thp_copies"]))


def atomic_write(path, write) -> Path:
    """Call write(tmp_path), then rename over `path`: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)       # mkstemp's 0600 is for the temporary name only
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


class Result:
    """The outcome of simulate(): `processes`, `summary` and `timeline`."""

    def __init__(self, scenario, program, machine, out: dict, timeline: np.ndarray, policy: str,
                 costs: CostModel, wall_s: float):
        self.scenario = scenario
        self.policy = policy
        self.costs = costs
        self.wall_seconds = wall_s          # not part of summary: it is the one non-reproducible number
        self._prog = program
        self._m = machine
        self._out = out
        self._tl = timeline

    # -- tables ----------------------------------------------------------------
    @property
    def processes(self) -> pd.DataFrame:
        """One row per process, in pid order."""
        sc, o = self.scenario, self._out
        pids = np.arange(1, len(sc.processes) + 1)
        df = pd.DataFrame({
            "pid": pids.astype(np.int64),
            "name": [p.name for p in sc.processes],
            "parent": np.array([p.parent.pid if p.parent else 0 for p in sc.processes], dtype=np.int64),
            "state": [STATE_NAMES[s] for s in o["proc_state"][1:]],
            "reason": [REASON_NAMES[r] for r in o["proc_reason"][1:]],
        })
        ctr = o["ctr"][1:]
        for c, name in enumerate(EVENT_COLUMNS):
            df[name] = ctr[:, c]
        df["rss_pages"] = ctr[:, K.C_RSS]
        df["pss_pages"] = o["proc_pss"][1:]
        df["uss_pages"] = ctr[:, K.C_USS]
        df["shared_pages"] = ctr[:, K.C_RSS] - ctr[:, K.C_USS]
        df["pte_pages"] = ctr[:, K.C_PTE_PAGES]
        df["anon_huge_pages"] = ctr[:, K.C_ANON_HUGE]
        forked = (df.parent != 0).to_numpy()
        df["fork_ns"] = np.where(forked, fork_ns(self.costs, 1, df), np.nan)
        df["est_time_ns"] = faults_ns(self.costs, df).astype(np.float64)
        front = ["pid", "name", "parent", "state", "reason", "minor_faults", "zero_fills", "cow_copies", "cow_reuses"]
        return df[front + list(MEMORY_COLUMNS) + [c for c in df.columns if c not in front and c not in MEMORY_COLUMNS]]

    @property
    def summary(self) -> pd.Series:
        """Totals of the run."""
        o, sc = self._out, self.scenario
        states = pd.Series([STATE_NAMES[s] for s in o["proc_state"][1:]], dtype=object)
        events = dict(zip(EVENT_COLUMNS, (int(v) for v in o["totals"])))
        forks = int(self._tl[-1, K.T_FORKS]) if len(self._tl) else 0
        return pd.Series({
            "policy": self.policy,
            "page_size": sc.page_size,
            "phys_frames": sc.frames,
            "processes": len(sc.processes),
            "running": int((states == "running").sum()),
            "exited": int((states == "exited").sum()),
            "killed": int((states == "killed").sum()),
            "fork_failed": int((states == "fork_failed").sum()),
            "frames_used": o["frames_used"],
            "pte_frames": o["pte_frames"],
            "peak_frames": o["peak_frames"],
            "forks": forks,
            **events,
            "fork_ns": float(fork_ns(self.costs, forks, events)),
            "est_time_ns": float(faults_ns(self.costs, events)),
        }, name=self.policy)

    @property
    def timeline(self) -> pd.DataFrame:
        """Run totals sampled after every op: one row per op, in order, with the
        estimated time (forks and faults) spent up to the end of that op."""
        ops = self._prog.ops
        df = pd.DataFrame(self._tl, columns=list(TIMELINE_COLUMNS))
        df["est_time_ns"] = fork_ns(self.costs, df.forks, df) + faults_ns(self.costs, df)
        df.insert(0, "op", [OP_NAMES[c] for c in ops[:, 0]])
        df.insert(0, "pid", ops[:, 1])
        df.insert(0, "step", np.arange(len(ops), dtype=np.int64))
        return df

    def save(self, directory, stem: str = "run") -> list[Path]:
        """Write processes and timeline as Parquet and summary as CSV, atomically."""
        d = Path(directory)
        paths = [
            atomic_write(d / f"{stem}_processes.parquet", lambda p: self.processes.to_parquet(p, index=False)),
            atomic_write(d / f"{stem}_timeline.parquet", lambda p: self.timeline.to_parquet(p, index=False)),
            atomic_write(d / f"{stem}_summary.csv", lambda p: self.summary.to_frame().T.to_csv(p, index=False)),
        ]
        return paths

    def __repr__(self) -> str:
        s = self.summary
        return (f"<Result policy={self.policy} processes={s.processes} faults={s.minor_faults} "
                f"copies={s.cow_copies} reuses={s.cow_reuses} frames_used={s.frames_used}>")

    # -- the final machine (keep_state=True) ----------------------------------------
    def _machine(self, op: str):
        if self._m is None:
            raise ScenarioError(f"{op}: run simulate(..., keep_state=True) to keep the final machine")
        return self._m

    def _pid(self, op: str, proc) -> int:
        if isinstance(proc, Process):
            return proc.pid
        if isinstance(proc, str):
            return self.scenario.process(proc).pid
        if isinstance(proc, (int, np.integer)) and 1 <= proc <= len(self.scenario.processes):
            return int(proc)
        raise ScenarioError(f"{op}: unknown process {proc!r}")

    def memory(self, proc, region) -> np.ndarray:
        """Value tag each page of `region` reads in `proc`'s address space at the
        end of the run (0: never written, or not mapped)."""
        m = self._machine("memory")
        pid = self._pid("memory", proc)
        r = region.index if isinstance(region, Region) else int(region)
        if not 0 <= r < len(self.scenario.regions):
            raise ScenarioError(f"memory: unknown region {region!r}")
        out = np.zeros(int(m.reg_npages[r]), dtype=np.int64)
        mm = m.proc_mm[pid]
        if mm < 0 or m.mm_row[mm] < 0 or not (m.vma[mm, r] & K.VM_MAPPED):
            return out
        K.mm_tags(K.machine_ref(m), mm, r, out)
        return self._prog.tag_values[out]

    def state_nbytes(self) -> pd.Series:
        """Bytes the simulated machine's arrays hold at the end of the run, by
        array (capacity included), largest first: where the simulator's own
        memory went. The overlay pool (ov_key, ov_val) holds the processes'
        private PTEs in tables they share. It and the frame records count up
        to their high-water marks: the rest is address space reserved up front
        and never touched."""
        m = self._machine("state_nbytes")
        nbytes = pd.Series({name: getattr(m, name).nbytes for name in m._fields}, name="bytes")
        for names, hwm in ((("ov_key", "ov_val"), K.G_OV_HWM), (("frame", "frame_free"), K.G_FRAME_HWM)):
            for name in names:
                a = getattr(m, name)
                nbytes[name] = int(m.g[hwm]) * (a.nbytes // max(a.shape[0], 1))
        return nbytes.sort_values(ascending=False)

    def check_invariants(self) -> None:
        """Recount the machine from its page tables and compare with what the
        engine kept incrementally. Raises AssertionError naming the first broken rule."""
        check_machine(self._machine("check_invariants"))


def _effective_ptes(m: K.Machine, row: int, k: int, t: int) -> tuple[np.ndarray, np.ndarray]:
    """The 512 PTEs an address space sees in range k (its overlay over table t),
    and a mask of the slots its overlay overrides."""
    e = m.pt[t].copy()
    mine = np.zeros(K.PTRS_PER_TABLE, dtype=bool)
    c, off, n = int(m.ovc[row, k]), int(m.ovl[row, k]), int(m.ovn[row, k])
    if c == K.OV_DENSE:
        vals = m.ov_val[off: off + K.PTRS_PER_TABLE]
        mine = vals != 0
        assert mine.sum() == n, f"check_invariants: dense overlay ({row}, {k}) holds {mine.sum()} != {n} entries"
        e[mine] = vals[mine]
    elif c >= 0:
        slots = m.ov_key[off: off + n].astype(np.int64)
        assert (np.diff(slots) > 0).all(), f"check_invariants: overlay ({row}, {k}) slots are not sorted and unique"
        assert (m.ov_val[off: off + n] != 0).all(), f"check_invariants: overlay ({row}, {k}) has an empty entry"
        mine[slots] = True
        e[slots] = m.ov_val[off: off + n]
    return e, mine


def check_machine(m: K.Machine) -> None:
    """Recount everything from the address spaces' views: mapcount = PTEs mapping
    the frame (a homed frame's table slot counts once per user that does not
    override it); table users and overrides; RSS and PTEs per region; physical
    memory = inline pages + frames with an id + page-table pages; a writable
    private PTE maps an exclusive page."""
    hwm = int(m.g[K.G_FRAME_HWM])
    mapped = np.zeros(hwm, dtype=np.int64)
    refs: dict[int, int] = {}
    overrides: dict[int, np.ndarray] = {}
    writable_private = []
    inline_pages = 0
    sim_tables = 0
    for mm in np.flatnonzero(m.mm_row >= 0):
        row = int(m.mm_row[mm])
        tables = 0
        for r in range(m.vma.shape[1]):
            if not m.vma[mm, r] & K.VM_MAPPED:
                assert m.mm_ptes[mm, r] == 0, f"check_invariants: mm {mm} has PTEs in unmapped region {r}"
                continue
            first, npages = int(m.reg_pmd0[r]), int(m.reg_npages[r])
            rss = ptes = 0
            for k in range(first, first + ((npages + K.PTRS_PER_TABLE - 1) >> K.TABLE_SHIFT)):
                t = int(m.pmd[row, k])
                if t < 0:
                    assert m.ovc[row, k] < 0, f"check_invariants: mm {mm} has an overlay without a table at {k}"
                    continue
                tables += 1
                refs[t] = refs.get(t, 0) + 1
                e, mine = _effective_ptes(m, row, k, t)
                overrides.setdefault(t, np.zeros(K.PTRS_PER_TABLE, dtype=np.int64))[mine] += 1
                if m.tab_huge[t]:
                    assert m.tab_count[t] == K.PTRS_PER_TABLE, f"check_invariants: huge page {t} is not whole"
                    assert len(set(m.pt[t] & K.PTE_FLAGS)) == 1, f"check_invariants: huge page {t} has mixed PTE bits"
                assert not e[npages - (k - first) * K.PTRS_PER_TABLE:].any(), \
                    f"check_invariants: PTE past the end of region {r}"
                present = e[e != 0]
                inline = (present & K.PTE_I) != 0
                assert ((present[inline] & K.PTE_E) != 0).all(), "check_invariants: an inline page is not exclusive"
                frames = (present[~inline] >> K.PTE_SHIFT) - 1
                real = frames[frames != 0]
                np.add.at(mapped, real, 1)
                ptes += len(present)
                rss += len(real) + int(inline.sum())
                inline_pages += int(((e & K.PTE_I) != 0)[mine].sum())
                if not m.reg_shared[r]:
                    w = (present & K.PTE_W) != 0
                    writable_private.append(frames[w[~inline]])
            assert ptes == m.mm_ptes[mm, r], f"check_invariants: mm {mm} region {r} PTEs {m.mm_ptes[mm, r]} != {ptes}"
            assert rss == m.mm_rss[mm, r], f"check_invariants: mm {mm} region {r} rss {m.mm_rss[mm, r]} != {rss}"
        assert tables == m.mm_tables[mm], f"check_invariants: mm {mm} tables {m.mm_tables[mm]} != {tables}"
        sim_tables += tables
    for t, n in refs.items():
        assert m.tab_ref[t] == n, f"check_invariants: table {t} has {n} users, tab_ref says {m.tab_ref[t]}"
        assert (m.tab_ovr[t] == overrides[t]).all(), f"check_invariants: table {t} override counts are off"
        assert m.tab_maxovr[t] >= overrides[t].max(), f"check_invariants: table {t} tab_maxovr is too low"
        base = m.pt[t]
        assert (base != 0).sum() == m.tab_count[t], f"check_invariants: table {t} count {m.tab_count[t]} is off"
        assert not (base[overrides[t] == n] != 0).any(), f"check_invariants: table {t} keeps a slot every user overrides"
        inline_pages += int(((base & K.PTE_I) != 0).sum())
        if n > 1:
            assert not (base & K.PTE_FLAGS).any(), f"check_invariants: shared table {t} holds a W, E or inline PTE"
    free = m.frame_free[: m.g[K.G_FREE_TOP]]
    allocated = np.ones(hwm, dtype=bool)
    allocated[0] = False
    allocated[free] = False
    assert len(np.unique(free)) == len(free), "check_invariants: a frame is on the free list twice"
    groups = m.group_ref[: int(m.g[K.G_GROUP_HWM])]
    free_groups = m.group_free[: m.g[K.G_GROUP_TOP]]
    in_use = np.ones(len(groups), dtype=bool)
    in_use[free_groups] = False
    if m.g[K.G_POLICY] == K.POLICY_ODF:
        live_rows = m.mm_row[m.mm_row >= 0]
        member = m.odfg[live_rows][m.pmd[live_rows] >= 0]
        members = np.bincount(member[member >= 0], minlength=len(groups))
        assert (members[in_use] == groups[in_use]).all(), "check_invariants: an odf group's refcount != its members"
        assert not members[~in_use].any(), "check_invariants: an address space belongs to a freed odf group"
    real_tables = sim_tables - int(np.maximum(groups[in_use] - 1, 0).sum())
    assert m.g[K.G_PTE_FRAMES] == real_tables, \
        f"check_invariants: pte_frames {m.g[K.G_PTE_FRAMES]} != page tables {real_tables}"
    assert allocated.sum() + inline_pages == m.g[K.G_FRAMES_USED] - m.g[K.G_PTE_FRAMES], \
        f"check_invariants: frames_used {m.g[K.G_FRAMES_USED]} != {allocated.sum()} frames + {inline_pages} inline + tables"
    home = m.frame[:hwm, K.F_HOME]
    counted = m.frame[:hwm, K.F_MAP].astype(np.int64)
    for f in np.flatnonzero(allocated & (home >= 0)):
        t, s = divmod(int(home[f]), K.PTRS_PER_TABLE)
        assert (m.pt[t, s] >> K.PTE_SHIFT) - 1 == f and not m.pt[t, s] & K.PTE_I, \
            f"check_invariants: frame {f} is homed at ({t}, {s}), which does not map it"
        counted[f] += m.tab_ref[t] - m.tab_ovr[t, s]
    bad = np.flatnonzero(allocated & (mapped != counted))
    assert len(bad) == 0, f"check_invariants: frame {bad[:5]} mapcount {counted[bad[:5]]} != PTEs {mapped[bad[:5]]}"
    assert not mapped[~allocated][1:].any(), "check_invariants: a free frame is still mapped"
    cached = np.zeros(hwm, dtype=bool)
    cached[m.shm_frame[m.shm_frame >= 0]] = True
    records = m.pin_pid[: m.g[K.G_PINS]] != 0
    pins = np.bincount(m.pin_frame[: m.g[K.G_PINS]][records], minlength=hwm)[:hwm]
    assert (pins == m.frame[:hwm, K.F_PINS]).all(), "check_invariants: frame pins != live pin records"
    assert not pins[~allocated].any(), "check_invariants: a free frame is pinned"
    orphans = np.flatnonzero(allocated & (mapped == 0) & ~cached & (pins == 0))
    assert len(orphans) == 0, f"check_invariants: frames {orphans[:5]} are allocated but not mapped, cached or pinned"
    if writable_private:
        w = np.concatenate(writable_private)
        assert (w != 0).all(), "check_invariants: the zero page is mapped writable"
        assert (mapped[w] == 1).all(), "check_invariants: a writable private PTE maps a shared frame"
