"""simulate(): compile a Scenario into op arrays, run the jitted engine on them, report.

This is the boundary between Python and the kernels (cowbench/_engine/).
Everything the kernels index with was validated by the scenario builder or is
computed here from validated values; the kernels themselves check nothing.
Set COWBENCH_BOUNDSCHECK=1 in the environment (before importing cowbench) to
run them with Numba's bounds checking instead, from a separate compilation
cache.

Where there is a second core, a second thread marks the pages of the ops
ahead of the op loop and freezes half the processes at the end
(_SecondThread): the kernels release the GIL, and the numbers are the same
(tests/test_reference.py checks it on random scenarios).
"""
from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import numpy as np
from tqdm.auto import tqdm

from ._engine import abi
from ._engine.loop import op_needs, run
from ._engine.machine import Machine, MachineRef, grow, machine_ref, new_machine, overlay_pool
from ._engine.task_mmu import freeze_some, live_tables_smaps
from ._engine.touch import premark
from ._params import ScenarioError, check_choice, safe_repr
from .costs import CostModel
from .patterns import Pattern
from .results import Result
from .scenario import Op, Phase, Scenario

__all__ = ["simulate", "POLICIES"]

POLICIES = ("eager", "cow", "odf")
OOM_RULES = ("largest", "faulting")

_PROT_BITS = {"none": 0, "r": abi.VM_READ, "rx": abi.VM_READ, "rw": abi.VM_READ | abi.VM_WRITE,
              "rwx": abi.VM_READ | abi.VM_WRITE}
_ON_FORK_BITS = {"copy": 0, "dontfork": abi.VM_DONTFORK, "wipeonfork": abi.VM_WIPEONFORK}
_ADVICE = {"dontfork": abi.ADV_DONTFORK, "dofork": abi.ADV_DOFORK, "wipeonfork": abi.ADV_WIPEONFORK,
           "keeponfork": abi.ADV_KEEPONFORK, "hugepage": abi.ADV_HUGEPAGE, "nohugepage": abi.ADV_NOHUGEPAGE}
THP_COW = ("split", "copy")
_BATCH_TOUCHES = 1 << 24                # touches per kernel call between progress updates
_PIECE_TOUCHES = _BATCH_TOUCHES          # the longest piece of one op the kernels run at once
MAX_WORK = 1 << 62                      # touches of a whole run: their running sums stay in int64
_WINDOW_TOUCHES = 1 << 20               # touches of a window of ops (see _SecondThread)
_MARK_ROOM = 1 << 25                    # bytes of premarks a window holds (two windows' at once)
_TASK_TOUCHES = 1 << 17                 # touches premarked in one go
PREMARK = len(os.sched_getaffinity(0)) > 1   # mark ahead on a second thread (a second core to run it)


class Compiled(NamedTuple):
    """A scenario compiled to arrays: what the kernels execute."""

    ops: np.ndarray       # int64[n, 6]: code, pid, region, arg, mm, pageset
    ps: np.ndarray        # int64[n_ps, 5]: pattern kind (-1: explicit pages), count, seed,
                          #   first touch (pattern) or offset in pool (explicit pages), zipf table offset
    psf: np.ndarray       # float64[n_ps, 2]: pattern parameters a, b
    pool: np.ndarray      # int64: explicit page lists, concatenated
    ztab: np.ndarray      # uint64, read-only: zipf tables, concatenated (ps[:, 4] is where a pattern's starts)
    reg_pmd0: np.ndarray
    reg_npages: np.ndarray
    reg_shared: np.ndarray
    reg_shm0: np.ndarray
    reg_thp: np.ndarray   # uint8: 1 where some fault may map a huge page (thp=True, madvise hugepage)
    reg_file: np.ndarray  # uint8: 1 for a mapping of a file
    reg_around: np.ndarray  # int64: pages a read fault maps from the page cache (16; 512 for 2 MiB folios)
    reg_folio: np.ndarray  # int64: pages of the file's page-cache folios (1 but for cached files' large folios)
    reg_ra: np.ndarray    # int64: pages a major fault reads in (the file's read-around window)
    reg_flo: np.ndarray   # int64: the region's file's page-cache slots, reg_flo .. reg_fhi - 1
    reg_fhi: np.ndarray
    n_shm: int            # page-cache slots: shared anonymous regions', then each mapped file's
    cached: np.ndarray    # int64: the slots in the page cache before the run (cached files)
    n_pmd: int
    n_mm: int
    n_proc: int
    work: np.ndarray      # int64[n]: touches per op, for progress and batching
    n_pins: int           # pages pinned by all pin ops: room for pin records
    tag_values: np.ndarray  # int64: the value each value tag stands for (tag 0: never written)
    op_ends: np.ndarray   # int64: the row of each scenario op's last piece (see _pieces)
    phases: tuple         # CompiledPhase per PHASE row (its ops[:, 3])


class CompiledPhase(NamedTuple):
    """A concurrently() block: its ops' rows, which its pieces' rows copy."""

    phase: Phase
    ops: np.ndarray       # int64[k, 6]: one row per op of the block, as Compiled.ops (column 5: its ps row)


def compile_scenario(sc: Scenario) -> Compiled:
    """Lay the regions out in virtual memory and encode every op as integers."""
    nreg = len(sc.regions)
    reg_npages = np.array([r.npages for r in sc.regions], dtype=np.int64)
    reg_shared = np.array([r.shared for r in sc.regions], dtype=np.uint8)
    ntab = (reg_npages + abi.PTRS_PER_TABLE - 1) >> abi.TABLE_SHIFT
    reg_pmd0 = np.zeros(nreg, dtype=np.int64)
    reg_pmd0[1:] = np.cumsum(ntab)[:-1]           # every region starts on a 2 MiB boundary
    reg_file = np.array([r.file is not None for r in sc.regions], dtype=np.uint8)
    shm_pages = np.where((reg_shared != 0) & (reg_file == 0), reg_npages, 0)
    reg_shm0 = np.zeros(nreg, dtype=np.int64)
    reg_shm0[1:] = np.cumsum(shm_pages)[:-1]
    reg_around = np.full(nreg, abi.FAULT_AROUND_PAGES, dtype=np.int64)
    reg_folio = np.ones(nreg, dtype=np.int64)
    reg_ra = np.zeros(nreg, dtype=np.int64)
    reg_flo = np.zeros(nreg, dtype=np.int64)
    reg_fhi = np.zeros(nreg, dtype=np.int64)
    n_shm = int(shm_pages.sum())
    cached = []
    for f in sc.files:                            # each mapped file's slots follow the shmem objects'
        mapped = f.mappings()
        if not mapped:
            continue
        npages = f.cache_pages()
        if f.cached:
            cached.append(np.arange(n_shm, n_shm + npages, dtype=np.int64))
        for r in mapped:
            i = r.index
            reg_shm0[i] = n_shm + r.offset
            reg_flo[i], reg_fhi[i] = n_shm, n_shm + npages
            reg_ra[i] = f.readahead // sc.page_size
            if f.cached:                          # read-around of an uncached file makes 4 KiB folios
                reg_folio[i] = f.folio // sc.page_size
            if f.cached and f.folio >= abi.PMD_FOLIO_PAGES * sc.page_size and r.offset % abi.PMD_FOLIO_PAGES == 0:
                reg_around[i] = abi.PMD_FOLIO_PAGES
        n_shm += npages
    cached = np.concatenate(cached) if cached else np.zeros(0, dtype=np.int64)
    if len(cached) >= min(sc.frames - 1, abi.MAX_PTE_VALUE - 1):
        raise ScenarioError(f"simulate: the cached files' {len(cached)} pages do not fit in phys_mem "
                            f"({sc.frames} pages, at most {abi.MAX_PTE_VALUE - 2} in use); make the files smaller, "
                            "cached=False, or phys_mem larger")
    reg_thp = np.array([r.thp for r in sc.regions], dtype=np.uint8)
    for op in sc.ops:
        if op.code == abi.MADVISE and op.arg == "hugepage":
            reg_thp[op.region] = 1

    rows = _pieces(sc.ops)
    n = len(rows)
    ops = np.zeros((n, 6), dtype=np.int64)
    work = np.zeros(n, dtype=np.int64)
    ps_rows, psf_rows, pool_parts, pool_len = [], [], [], 0
    tables: dict[tuple, int] = {}                 # (s, npages) -> offset of its zipf table
    table_parts, table_len = [], 0
    tag_values = [0]
    phases = []

    def encode(op: Op, same_write: bool) -> tuple[tuple, int]:
        """op's row (column 5: its page set's row of ps) and its touches."""
        nonlocal pool_len, table_len
        arg = op.arg
        if op.code == abi.WRITE:
            if same_write:
                arg = len(tag_values) - 1  # another piece of the same write: the same tag
            else:
                arg = len(tag_values)      # kernels store small tags; inline PTEs have 28 bits for one
                tag_values.append(op.arg)
            if arg > abi.MAX_PTE_VALUE:
                raise ScenarioError(f"simulate: at most {abi.MAX_PTE_VALUE} write ops are supported; got {arg}")
        elif op.code == abi.MMAP:
            reg = sc.regions[op.region]
            arg = abi.VM_MAPPED | _PROT_BITS[reg.prot] | _ON_FORK_BITS[reg.on_fork] | (abi.VM_HUGEPAGE if reg.thp else 0)
        elif op.code == abi.MPROTECT:
            arg = _PROT_BITS[op.arg]
        elif op.code == abi.MADVISE:
            arg = _ADVICE[op.arg]
        elif arg is None:
            arg = 0
        if op.code not in (abi.READ, abi.WRITE, abi.PIN, abi.UNPIN):
            return (op.code, op.pid, op.region, arg, op.mm, -1), 0
        row = (op.code, op.pid, op.region, arg, op.mm, len(ps_rows))
        pages = op.pages
        if not isinstance(pages, Pattern):
            ps_rows.append((-1, pages.size, 0, pool_len, -1))
            psf_rows.append((0.0, 0.0))
            pool_parts.append(pages)
            pool_len += pages.size
            return row, pages.size
        toff = -1
        if pages.kind == abi.PAT_ZIPF:
            key = (pages.a, int(reg_npages[op.region]))
            if key not in tables:
                tab = pages.table(key[1])
                tables[key] = table_len
                table_parts.append(tab)
                table_len += len(tab)
            toff = tables[key]
        ps_rows.append((pages.kind, pages.count, pages.seed, pages.first, toff))
        psf_rows.append(pages.engine_params(int(reg_npages[op.region])))
        return row, pages.count

    for i, (orig, op) in enumerate(rows):
        if op.code == abi.PHASE:
            members = [encode(member, False) for member in op.pages.ops]
            ops[i] = (abi.PHASE, -1, -1, len(phases), -1, -1)
            work[i] = sum(w for _, w in members)
            phases.append(CompiledPhase(op.pages, np.array([r for r, _ in members], dtype=np.int64).reshape(-1, 6)))
        else:
            ops[i], work[i] = encode(op, op.code == abi.WRITE and i > 0 and rows[i - 1][0] == orig)
    ps = np.array(ps_rows, dtype=np.int64).reshape(-1, 5)
    psf = np.array(psf_rows, dtype=np.float64).reshape(-1, 2)
    pool = np.concatenate(pool_parts) if pool_parts else np.zeros(0, dtype=np.int64)
    ztab = np.concatenate(table_parts) if table_parts else np.zeros(0, dtype=np.uint64)
    ztab.flags.writeable = False            # like Pattern.table's: one Numba specialisation of the kernels
    n_pins = int(sum(work[i] for i, (_, op) in enumerate(rows) if op.code == abi.PIN))
    op_ends = np.flatnonzero(np.diff([orig for orig, _ in rows] + [len(sc.ops)]))
    if sum(int(w) for w in work) > MAX_WORK:
        raise ScenarioError(f"simulate: the scenario makes more than 2**62 touches in all "
                            f"({sum(int(w) for w in work)}); split it into several runs")
    return Compiled(ops, ps, psf, pool, ztab, reg_pmd0, reg_npages, reg_shared, reg_shm0, reg_thp,
                   reg_file, reg_around, reg_folio, reg_ra, reg_flo, reg_fhi, n_shm, cached,
                   int(ntab.sum()), sc.n_mm, len(sc.processes), work, n_pins,
                   np.array(tag_values, dtype=np.int64), op_ends, tuple(phases))


def simulate(sc: Scenario, policy: str = "cow", *, costs: CostModel | None = None, oom: str = "largest",
             thp_cow: str = "split", overcommit: int = 0, overcommit_ratio: int = 50, zero_page: bool = True,
             keep_state: bool = False, progress: bool | None = None) -> Result:
    """Run scenario `sc` under a fork policy and return its Result.

    policy: "eager" (traditional fork: copy every present private page),
        "cow" (Linux: copy PTEs, share frames copy-on-write) or "odf"
        (On-demand-fork: share PTE tables too, copy a table on the first
        fault that changes it).
    costs: the CostModel that turns counts into fork_ns and est_time_ns
        (default: CostModel.default(); `cowbench calibrate` measures yours).
    oom: which process the OOM killer picks when a fault finds no frame:
        "largest" (Linux: largest RSS) or "faulting" (xv6: the one faulting).
    thp_cow: a write to a shared transparent huge page: "split" (Linux >= 5.8)
        splits the PMD and copies the 4 KiB page written; "copy" (older
        kernels) copies all 2 MiB in one fault.
    overcommit: vm.overcommit_memory. 0: refuse only a request larger than
        RAM (the kernel's heuristic); 1: never refuse; 2: charge private
        writable and shared mappings at mmap, and again at fork, against
        overcommit_ratio % of RAM (no swap), failing mmap, mprotect or fork with
        ENOMEM past it (the `enomem` column counts the failures a process saw).
    overcommit_ratio: vm.overcommit_ratio, percent of RAM, for mode 2.
    zero_page: map the shared zero page on a read of never-written private
        memory (Linux); False allocates a zeroed frame instead.
    keep_state: keep the final machine so `res.memory()` and
        `res.check_invariants()` work; costs the memory of the simulated state.
    progress: show a progress bar; None shows one for runs of 10**8 touches or more.
    """
    if not isinstance(sc, Scenario):
        raise ScenarioError(f"The 'sc' parameter of simulate must be a Scenario; got {safe_repr(sc)}")
    check_choice("simulate", "policy", policy, POLICIES)
    check_choice("simulate", "oom", oom, OOM_RULES)
    check_choice("simulate", "zero_page", zero_page, (True, False))
    check_choice("simulate", "overcommit", overcommit, (0, 1, 2))
    check_choice("simulate", "thp_cow", thp_cow, THP_COW)
    check_choice("simulate", "keep_state", keep_state, (False, True))
    check_choice("simulate", "progress", progress, (None, False, True))
    if isinstance(overcommit_ratio, bool) or not isinstance(overcommit_ratio, (int, np.integer)) \
            or not 0 <= overcommit_ratio <= 100_000:
        raise ScenarioError(f"The 'overcommit_ratio' parameter of simulate must be an integer in [0, 100000]; "
                            f"got {safe_repr(overcommit_ratio)}")
    if costs is None:
        costs = CostModel.default()
    elif not isinstance(costs, CostModel):
        raise ScenarioError(f"The 'costs' parameter of simulate must be a CostModel or None; got {safe_repr(costs)}")
    if costs.page_size != sc.page_size:
        raise ScenarioError(f"simulate: the cost model prices {costs.page_size}-byte pages and the scenario has "
                            f"{sc.page_size}-byte pages; calibrate for that page size, or use "
                            f"dataclasses.replace(costs, page_size={sc.page_size}) on purpose")
    prog = compile_scenario(sc)
    m = new_machine(prog, sc.frames, POLICIES.index(policy), OOM_RULES.index(oom), zero_page,
                    overcommit, int(overcommit_ratio), THP_COW.index(thp_cow))
    tl = np.zeros((len(prog.ops), abi.N_TL), dtype=np.int64)
    total_work = int(prog.work.sum())
    show = total_work >= 10**8 if progress is None else bool(progress)
    phase_tl: list[np.ndarray] = []
    t0 = time.perf_counter()
    with tqdm(total=total_work, unit="touch", unit_scale=True, disable=not show, desc=f"simulate[{policy}]") as bar, \
            _SecondThread(prog, len(m.seen)) as helper:
        ref = machine_ref(m)
        for ops, ps, psf, rows_tl, start, stop, touches in _segments(prog, tl, phase_tl):
            for i, stop_w, marks, mark_at in helper.windows(ops, ps, psf, start, stop):
                while run(ref, ops, ps, psf, prog.pool, prog.ztab, rows_tl, i, stop_w, marks, mark_at) \
                        == abi.RUN_GROW:
                    i = int(m.g[abi.G_RESUME])
                    needs = op_needs(ref, ops[i], ps)
                    arrays = _with_pool(m, ref)._asdict()
                    m = ref = None                 # grow frees each old array once it is copied
                    m = grow(arrays, needs)
                    ref = machine_ref(m)
            bar.update(touches)
        helper.freeze_live(ref, m.proc_state)
    m = _with_pool(m, ref)
    wall = time.perf_counter() - t0
    ends = prog.op_ends                    # one row per scenario op, as it ends
    prog = prog._replace(ops=prog.ops[ends], work=np.add.reduceat(prog.work, np.r_[0, ends[:-1] + 1])
                         if len(ends) else prog.work)
    options = dict(policy=policy, costs=costs, oom=oom, thp_cow=thp_cow, overcommit=overcommit,
                   overcommit_ratio=overcommit_ratio, zero_page=zero_page)
    out = _copy_outputs(m)
    out["phase_tl"] = phase_tl
    return Result(sc, prog, m if keep_state else None, out, tl[ends], policy, costs, wall, options)


def _pieces(ops: list[Op]) -> list[tuple[int, Op]]:
    """(scenario op index, op) rows: a read or write of a pattern longer than
    _BATCH_TOUCHES becomes consecutive pieces of it (Pattern.piece), so that the
    kernels return to Python often enough for the progress bar and for Ctrl-C.
    The pieces touch what the whole did, in the same order, and a page an op
    touches twice faults once either way (after its first touch its PTE allows
    the rest), so the counts are the same: tests/test_invariants.py checks it.
    Pins are not split (each pin op pins each of its pages once)."""
    rows = []
    for i, op in enumerate(ops):
        pages = op.pages
        if op.code in (abi.READ, abi.WRITE) and isinstance(pages, Pattern) and pages.count > _PIECE_TOUCHES:
            for lo in range(0, pages.count, _PIECE_TOUCHES):
                rows.append((i, op._replace(pages=pages.piece(lo, min(lo + _PIECE_TOUCHES, pages.count)))))
        else:
            rows.append((i, op))
    return rows


def _batches(work: np.ndarray, alone: np.ndarray) -> list[tuple[int, int]]:
    """Split ops into runs of about _BATCH_TOUCHES touches (one op never splits);
    the rows where `alone` is set run by themselves."""
    n = len(work)
    if n == 0:
        return []
    cum = np.cumsum(work)
    cuts = np.searchsorted(cum, np.arange(_BATCH_TOUCHES, cum[-1] + _BATCH_TOUCHES, _BATCH_TOUCHES), side="left")
    single = np.flatnonzero(alone)
    edges = sorted(set([0, n] + [min(int(c) + 1, n) for c in cuts] + single.tolist() + (single + 1).tolist()))
    return list(zip(edges[:-1], edges[1:]))


def _segments(prog: Compiled, tl: np.ndarray, phase_tl: list):
    """Yield (ops, ps, psf, timeline, start, stop, touches): the rows to run next, in order. Batches
    of prog's rows, and each concurrently() block's pieces made a chunk at a time as the run gets to
    them, with a timeline of their own. A block's timeline row is that of its last piece, and
    phase_tl gets its sampled rows (Phase.sampled)."""
    for start, stop in _batches(prog.work, prog.ops[:, 0] == abi.PHASE):
        if prog.ops[start, 0] != abi.PHASE:
            yield prog.ops, prog.ps, prog.psf, tl, start, stop, int(prog.work[start:stop].sum())
            continue
        cp = prog.phases[prog.ops[start, 3]]
        sampled = cp.phase.sampled()
        kept = np.zeros((len(sampled), tl.shape[1]), dtype=np.int64)
        done = 0
        for ops, ps, psf, ends, touches in _phase_rows(prog, cp):
            rows_tl = np.zeros((len(ops), tl.shape[1]), dtype=np.int64)
            yield ops, ps, psf, rows_tl, 0, len(ops), touches
            here = (sampled >= done) & (sampled < done + len(ends))
            kept[here] = rows_tl[ends[sampled[here] - done]]
            done += len(ends)
        tl[start] = rows_tl[-1]                  # a block has at least one piece, so one chunk
        phase_tl.append(kept)


def _phase_rows(prog: Compiled, cp: CompiledPhase):
    """Yield (ops, ps, psf, ends, touches) for the pieces of a concurrently() block, a chunk of
    pieces at a time in run order: each piece a copy of its op's row and page set, starting
    `grain` touches further per piece, and cut in _PIECE_TOUCHES rows like _pieces does
    (ends: each piece's last row)."""
    ph = cp.phase
    n = ph.touches()
    for op, piece in ph.order(chunk=max(1, min(1 << 16, _BATCH_TOUCHES // ph.grain))):
        count = np.clip(n[op] - piece * ph.grain, 0, ph.grain)
        of, sub = _cut(count, _PIECE_TOUCHES, least=1)
        ends = np.searchsorted(of, np.arange(len(op)), side="right") - 1
        ops = cp.ops[op[of]]
        ps = prog.ps[ops[:, 5]]
        psf = prog.psf[ops[:, 5]]
        ps[:, 1] = np.minimum(count[of] - sub, _PIECE_TOUCHES)
        ps[:, 3] += piece[of] * ph.grain + sub
        ops[:, 5] = np.arange(len(ops))
        yield ops, ps, psf, ends, int(count.sum())


class _SecondThread:
    """Work done on a second thread, the results the same (PREMARK: there is a core to run it).

    Premarks. The pages of the next window of ops are marked (touch.premark) while the op
    loop runs a window: drawing a pattern and marking its pages, up to two thirds of a
    write-heavy run, then take little of the op loop's time. Marks are a function of an op's
    page set and its region's size alone, so the run is the one without them, op for op (each
    op still decides whether it uses marks). Only ops that will mark are marked ahead: touches
    of private anonymous regions without huge pages, dense enough for marks (touch_pages), of
    a pattern (pages given as an array take 0.6 ns a touch to mark where they are; marked
    ahead, throughput.py's zipf run on them was no faster).
    A window is about _WINDOW_TOUCHES touches and at most _MARK_ROOM bytes of marks, marked in
    tasks of _TASK_TOUCHES touches: the op loop's thread, done with its window, takes the tasks
    the other has not begun. The first window of a segment marks its own pages, as every
    window does when PREMARK is off.

    The end. Half the processes still alive have their memory columns frozen there
    (task_mmu.freeze_some), once the tables they map are summed: smaps of 64 children with
    dense overlays take a third of throughput.py's uniform run."""

    def __init__(self, prog: Compiled, seen_pages: int):
        self.prog = prog
        self.seen_pages = seen_pages        # m.seen's length: a region larger marks nothing
        self.marks = np.zeros(0, dtype=np.uint8)
        self.executor = None
        self.main_mark_at = np.full((len(prog.ops), 3), -1, dtype=np.int64)    # prog.ops's
        self.mark_at = self.main_mark_at

    def __enter__(self) -> "_SecondThread":
        return self

    def __exit__(self, *exc) -> None:
        if self.executor is not None:       # after an error too: waits for the task under way
            self.executor.shutdown(wait=True, cancel_futures=True)

    def windows(self, ops, ps, psf, start: int, stop: int):
        """Yield (start, stop, marks, mark_at) for consecutive windows of ops[start:stop],
        each with its premarks done (loop.run's last arguments)."""
        self.mark_at = (self.main_mark_at if ops is self.prog.ops       # or a concurrently() block's rows'
                        else np.full((len(ops), 3), -1, dtype=np.int64))
        if not PREMARK or stop - start < 2:
            yield start, stop, self.marks, self.mark_at
            return
        edges, at, tasks, first_task = self._plan(ops, ps, start, stop)
        under_way = None
        for w in range(len(edges) - 1):
            if under_way is not None:
                self._finish(ops, ps, psf, *under_way)
            under_way = None
            if w + 2 < len(edges):                   # window w + 1 is marked while window w runs
                lo, hi = edges[w + 1], edges[w + 2]
                self.mark_at[lo:hi, 0] = at[lo - start: hi - start]
                under_way = self._start(ops, ps, psf, tasks[first_task[w + 1]: first_task[w + 2]])
            yield edges[w], edges[w + 1], self.marks, self.mark_at

    def _plan(self, ops, ps, start: int, stop: int):
        """Windows over ops[start:stop] (their edges), where each op's marks go (at; -1: not
        marked ahead), and the tasks (op, first touch, end) that mark them, window by window
        from first_task[w]."""
        p = self.prog
        rows = ops[start:stop]
        touch = np.flatnonzero((rows[:, 0] == abi.READ) | (rows[:, 0] == abi.WRITE))
        r = rows[touch, 2]
        c = ps[rows[touch, 5], 1]
        drawn = ps[rows[touch, 5], 0] >= 0         # pages given as an array: measured, no gain
        n = p.reg_npages[r]
        ranges = -(-n // abi.PTRS_PER_TABLE)
        room = (ranges + -(-ranges // abi.PTRS_PER_TABLE)) * abi.PTRS_PER_TABLE    # marks_at's layout, aligned
        marked = (drawn & (c > 0) & (c * abi.MARKS_PER_TOUCH >= n) & (n <= self.seen_pages) & (room <= _MARK_ROOM)
                  & (p.reg_shared[r] == 0) & (p.reg_file[r] == 0) & (p.reg_thp[r] == 0))
        count = np.zeros(len(rows), dtype=np.int64)
        need = np.zeros(len(rows), dtype=np.int64)
        count[touch] = c
        need[touch] = np.where(marked, room, 0)
        cum = np.cumsum(count / _WINDOW_TOUCHES + need / _MARK_ROOM)
        # the first window marks its own pages: a small one, so that the other thread soon has work
        cuts = np.searchsorted(cum, np.r_[1 / 16, np.arange(1, int(cum[-1]) + 1)], side="left") + 1
        edges = np.unique(np.r_[0, cuts[cuts < len(rows)], len(rows)])
        win = np.repeat(np.arange(len(edges) - 1), np.diff(edges))
        end = np.cumsum(need)
        end -= (end - need)[edges[:-1]][win]                 # from the window's start
        fits = (need > 0) & (end <= _MARK_ROOM) & (win > 0)
        at = np.where(fits, (win % 2) * _MARK_ROOM + end - need, -1)
        op = np.flatnonzero(fits)
        of, t0 = _cut(count[op], _TASK_TOUCHES)
        of = op[of]
        tasks = np.stack([of + start, t0, np.minimum(t0 + _TASK_TOUCHES, count[of])], axis=1)
        first_task = np.searchsorted(win[of], np.arange(len(edges)))
        if fits.any() and len(self.marks) == 0:
            self.marks = np.zeros(2 * _MARK_ROOM, dtype=np.uint8)      # calloc: pages cost once written
        return (edges + start).tolist(), at, tasks, first_task.tolist()

    def _start(self, ops, ps, psf, tasks):
        """Start the tasks marking a window's ops on the other thread; returns what _finish
        needs, None if there are none."""
        if len(tasks) == 0:
            return None
        bounds = np.empty((len(tasks), 2), dtype=np.int64)
        claim = np.array([0, len(tasks)], dtype=np.int64)
        future = self.thread().submit(premark, *self._args(ops, ps, psf), tasks, bounds, claim, True)
        return future, tasks, bounds, claim

    def _finish(self, ops, ps, psf, future, tasks, bounds, claim) -> None:
        """Wait for a window's marks, taking a share of the tasks the other thread has not
        begun (from the back: it goes from the front), and give each op the lowest and highest
        page of its tasks' (an op's tasks are consecutive)."""
        premark(*self._args(ops, ps, psf), tasks, bounds, claim, False)
        future.result()
        i = tasks[:, 0]
        first = np.flatnonzero(np.r_[True, i[1:] != i[:-1]])
        self.mark_at[i[first], 1] = np.minimum.reduceat(bounds[:, 0], first)
        self.mark_at[i[first], 2] = np.maximum.reduceat(bounds[:, 1], first)

    def _args(self, ops, ps, psf) -> tuple:
        p = self.prog
        return ops, ps, psf, p.pool, p.ztab, p.reg_npages, self.marks, self.mark_at

    def freeze_live(self, ref: MachineRef, proc_state: np.ndarray) -> None:
        """The memory columns of every process still running or suspended, as they stand at
        the end (task_mmu.freeze_some), half of them on the other thread."""
        live = np.flatnonzero((proc_state == abi.P_RUNNING) | (proc_state == abi.P_SUSPENDED))
        live = live[live > 0]
        live_tables_smaps(ref)
        if not PREMARK or len(live) < 2:
            freeze_some(ref, live)
            return
        other = self.thread().submit(freeze_some, ref, live[1::2])
        freeze_some(ref, live[::2])
        other.result()

    def thread(self) -> ThreadPoolExecutor:
        """The second thread, started on first use."""
        if self.executor is None:
            self.executor = ThreadPoolExecutor(1, thread_name_prefix="cowbench")
        return self.executor


def _cut(count: np.ndarray, size: int, least: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Cut each row's count touches into pieces of at most `size` (at least `least` pieces a
    row): the row of each piece, in order, and its first touch."""
    pieces = np.maximum(-(-count // size), least)
    of = np.repeat(np.arange(len(count)), pieces)
    return of, (np.arange(len(of)) - np.repeat(np.cumsum(pieces) - pieces, pieces)) * size


def _with_pool(m: Machine, ref: MachineRef) -> Machine:
    """m with the overlay pool the kernels behind ref may have grown."""
    ov_key, ov_val = overlay_pool(ref)
    return m._replace(ov_key=ov_key, ov_val=ov_val)


def _copy_outputs(m: Machine) -> dict:
    """The per-process and run-level numbers a Result needs, detached from the machine."""
    return dict(proc_state=m.proc_state.copy(), proc_reason=m.proc_reason.copy(), ctr=m.ctr.copy(),
                proc_pss=m.proc_pss.copy(), totals=m.totals.copy(),
                frames_used=int(m.g[abi.G_FRAMES_USED]), pte_frames=int(m.g[abi.G_PTE_FRAMES]),
                peak_frames=int(m.g[abi.G_FRAMES_PEAK]))
