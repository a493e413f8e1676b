"""simulate(): compile a Scenario into op arrays, run the jitted engine, report.

This is the boundary the Standards ask for. Everything the kernels index with
was validated by the scenario builder or is computed here from validated
values; the kernels themselves check nothing. Set COWBENCH_BOUNDSCHECK=1 in
the environment (before importing cowbench) to run them with Numba's bounds
checking instead, from a separate compilation cache.
"""
from __future__ import annotations

import time
from typing import NamedTuple

import numpy as np
from tqdm.auto import tqdm

from . import _kernels as K
from ._params import ScenarioError, check_choice
from .costs import CostModel
from .patterns import PAT_ZIPF, Pattern
from .results import Result
from .scenario import MADVISE, MMAP, MPROTECT, PIN, READ, UNPIN, WRITE, Scenario

__all__ = ["simulate", "POLICIES"]

POLICIES = ("eager", "cow", "odf")
OOM_RULES = ("largest", "faulting")

_PROT_BITS = {"none": 0, "r": K.VM_READ, "rx": K.VM_READ, "rw": K.VM_READ | K.VM_WRITE,
              "rwx": K.VM_READ | K.VM_WRITE}
_ON_FORK_BITS = {"copy": 0, "dontfork": K.VM_DONTFORK, "wipeonfork": K.VM_WIPEONFORK}
_ADVICE = {"dontfork": K.ADV_DONTFORK, "dofork": K.ADV_DOFORK, "wipeonfork": K.ADV_WIPEONFORK,
           "keeponfork": K.ADV_KEEPONFORK, "hugepage": K.ADV_HUGEPAGE, "nohugepage": K.ADV_NOHUGEPAGE}
THP_COW = ("split", "copy")
_MAX_FRAMES_IN_USE = K.MAX_PTE_VALUE - 1    # frame + 1 must fit in the 28 bits a PTE has for it
_BATCH_TOUCHES = 1 << 24                # touches per kernel call between progress updates


class Program(NamedTuple):
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
    n_pmd: int
    n_mm: int
    n_proc: int
    work: np.ndarray      # int64[n]: touches per op, for progress and batching
    n_pins: int           # pages pinned by all pin ops: room for pin records
    tag_values: np.ndarray  # int64: the value each value tag stands for (tag 0: never written)


def compile_scenario(sc: Scenario) -> Program:
    """Lay the regions out in virtual memory and encode every op as integers."""
    nreg = len(sc.regions)
    reg_npages = np.array([r.npages for r in sc.regions], dtype=np.int64)
    reg_shared = np.array([r.shared for r in sc.regions], dtype=np.uint8)
    ntab = (reg_npages + K.PTRS_PER_TABLE - 1) >> K.TABLE_SHIFT
    reg_pmd0 = np.zeros(nreg, dtype=np.int64)
    reg_pmd0[1:] = np.cumsum(ntab)[:-1]           # every region starts on a 2 MiB boundary
    shm_pages = np.where(reg_shared != 0, reg_npages, 0)
    reg_shm0 = np.zeros(nreg, dtype=np.int64)
    reg_shm0[1:] = np.cumsum(shm_pages)[:-1]

    n = len(sc.ops)
    ops = np.zeros((n, 6), dtype=np.int64)
    work = np.zeros(n, dtype=np.int64)
    ps_rows, psf_rows, pool_parts, pool_len = [], [], [], 0
    tables: dict[tuple, int] = {}                 # (s, npages) -> offset of its zipf table
    table_parts, table_len = [], 0
    tag_values = [0]
    for i, op in enumerate(sc.ops):
        arg = op.arg
        if op.code == WRITE:
            arg = len(tag_values)          # kernels store small tags; inline PTEs have 28 bits for one
            tag_values.append(op.arg)
            if arg > K.MAX_PTE_VALUE:
                raise ScenarioError(f"simulate: at most {K.MAX_PTE_VALUE} write ops are supported; got {arg}")
        elif op.code == MMAP:
            reg = sc.regions[op.region]
            arg = K.VM_MAPPED | _PROT_BITS[reg.prot] | _ON_FORK_BITS[reg.on_fork] | (K.VM_HUGEPAGE if reg.thp else 0)
        elif op.code == MPROTECT:
            arg = _PROT_BITS[op.arg]
        elif op.code == MADVISE:
            arg = _ADVICE[op.arg]
        elif arg is None:
            arg = 0
        ops[i, :5] = (op.code, op.pid, op.region, arg, op.mm)
        ops[i, 5] = -1
        if op.code in (READ, WRITE, PIN, UNPIN):
            ops[i, 5] = len(ps_rows)
            pages = op.pages
            if isinstance(pages, Pattern):
                toff = -1
                if pages.kind == PAT_ZIPF:
                    key = (pages.a, int(reg_npages[op.region]))
                    if key not in tables:
                        tab = pages.table(key[1])
                        tables[key] = table_len
                        table_parts.append(tab)
                        table_len += len(tab)
                    toff = tables[key]
                ps_rows.append((pages.kind, pages.count, pages.seed, pages.first, toff))
                psf_rows.append((pages.a, pages.b))
                work[i] = pages.count
            else:
                ps_rows.append((-1, pages.size, 0, pool_len, -1))
                psf_rows.append((0.0, 0.0))
                pool_parts.append(pages)
                pool_len += pages.size
                work[i] = pages.size
    ps = np.array(ps_rows, dtype=np.int64).reshape(-1, 5)
    psf = np.array(psf_rows, dtype=np.float64).reshape(-1, 2)
    pool = np.concatenate(pool_parts) if pool_parts else np.zeros(0, dtype=np.int64)
    ztab = np.concatenate(table_parts) if table_parts else np.zeros(0, dtype=np.uint64)
    ztab.flags.writeable = False            # like Pattern.table's: one Numba specialisation of the kernels
    n_pins = int(sum(work[i] for i, op in enumerate(sc.ops) if op.code == PIN))
    return Program(ops, ps, psf, pool, ztab, reg_pmd0, reg_npages, reg_shared, reg_shm0,
                   int(ntab.sum()), sc.n_mm, len(sc.processes), work, n_pins,
                   np.array(tag_values, dtype=np.int64))


def _new_machine(prog: Program, frame_max: int, policy: int, oom: int, zero_page: bool,
                 overcommit: int = 0, overcommit_ratio: int = 50, thp_cow: int = K.THP_SPLIT) -> K.Machine:
    g = np.zeros(K.N_G, dtype=np.int64)
    g[K.G_FRAME_MAX] = frame_max
    g[K.G_FRAME_HWM] = 1                          # frame 0 is the zero page
    g[K.G_POLICY], g[K.G_OOM], g[K.G_ZERO_PAGE] = policy, oom, int(zero_page)
    g[K.G_OVERCOMMIT] = overcommit
    g[K.G_THP_COW] = thp_cow
    g[K.G_COMMIT_LIMIT] = frame_max * overcommit_ratio // 100     # no swap is modelled
    g[K.G_OV_FREE: K.G_OV_FREE + K.OV_CLASSES] = -1
    nt, nrow, nreg, nproc, nmm = 64, 4, len(prog.reg_npages), prog.n_proc + 1, max(prog.n_mm, 1)
    npmd = max(prog.n_pmd, 1)
    odf = policy == K.POLICY_ODF
    return K.Machine(
        g=g, totals=np.zeros(K.N_TOTALS, dtype=np.int64),
        **_frame_arrays(int(prog.work.sum()), frame_max), folio_frames=np.zeros((nt, K.PTRS_PER_TABLE), dtype=np.int32),
        folio_live=np.zeros(nt, dtype=np.int32), folio_pins=np.zeros(nt, dtype=np.int32),
        folio_free=np.zeros(nt, dtype=np.int32),
        **_table_arrays(nt),
        group_ref=np.zeros(nt, dtype=np.int32), group_free=np.zeros(nt, dtype=np.int32),
        **_row_arrays(nrow, npmd, odf),
        **_overlay_pool(int(prog.work.sum())),
        mm_row=np.full(nmm, -1, dtype=np.int32), mm_users=np.zeros(nmm, dtype=np.int32),
        mm_tables=np.zeros(nmm, dtype=np.int64),
        mm_ptes=np.zeros((nmm, max(nreg, 1)), dtype=np.int64), mm_rss=np.zeros((nmm, max(nreg, 1)), dtype=np.int64),
        vma=np.zeros((nmm, max(nreg, 1)), dtype=np.uint8),
        reg_pmd0=prog.reg_pmd0, reg_npages=prog.reg_npages, reg_shared=prog.reg_shared, reg_shm0=prog.reg_shm0,
        reg_maps=np.zeros(nreg, dtype=np.int32),
        shm_frame=np.full(int((prog.reg_npages * prog.reg_shared).sum()), -1, dtype=np.int32),
        proc_mm=np.full(nproc, -1, dtype=np.int32), proc_state=np.zeros(nproc, dtype=np.int8),
        proc_reason=np.zeros(nproc, dtype=np.int8), proc_vparent=np.zeros(nproc, dtype=np.int32),
        ctr=np.zeros((nproc, K.N_CTR), dtype=np.int64), proc_pss=np.zeros(nproc, dtype=np.float64),
        pin_pid=np.zeros(prog.n_pins, dtype=np.int32), pin_region=np.zeros(prog.n_pins, dtype=np.int32),
        pin_page=np.zeros(prog.n_pins, dtype=np.int64), pin_frame=np.zeros(prog.n_pins, dtype=np.int32),
        **_touch_marks(int(-(-prog.reg_npages.max(initial=0) // K.PTRS_PER_TABLE))),
    )


def _reserved(rows: int, fallback: int, *specs) -> list[np.ndarray]:
    """Arrays of `rows` rows, (row shape, dtype) each, reserved up front:
    np.empty leaves their pages untouched, so the reservation costs address
    space until the kernels use a row, and the arrays seldom have to grow
    (copy) during the run. Under strict overcommit, `fallback` rows."""
    try:
        return [np.empty((rows,) + shape, dtype=dtype) for shape, dtype in specs]
    except MemoryError:
        return [np.empty((fallback,) + shape, dtype=dtype) for shape, dtype in specs]


def _touch_marks(ranges: int) -> dict:
    """Marks of the pages an op touches, a byte a page of the largest region
    (`ranges` 2 MiB ranges) and a byte a range; zeroed lazily by the OS. If
    even the address space is refused, none: every op then touches its pages
    one by one, in order (slower, same results)."""
    try:
        return dict(seen=np.zeros(ranges * K.PTRS_PER_TABLE, dtype=np.uint8),
                    seen_ranges=np.zeros(ranges, dtype=np.uint8))
    except MemoryError:
        return dict(seen=np.zeros(0, dtype=np.uint8), seen_ranges=np.zeros(0, dtype=np.uint8))


def _overlay_pool(touches: int) -> dict:
    """The overlay pool, for what `touches` touches can add (about two slots each)."""
    ov_key, ov_val = _reserved(min(2 * touches, 1 << 30) + (1 << 12), 1 << 12, ((), np.uint16), ((), np.int32))
    return dict(ov_key=ov_key, ov_val=ov_val)


def _frame_arrays(touches: int, frame_max: int) -> dict:
    """Frame records and the free-id stack, for what `touches` touches can take
    (a frame id is handed out when a page is shared, pinned or cached); the
    kernels initialise a record when they hand its id out, but for the zero page's."""
    frame, frame_free = _reserved(min(frame_max, 2 * touches + (1 << 12), 1 << 26), min(frame_max, 1 << 12),
                                  ((K.F_WIDTH,), np.int32), ((), np.int32))
    frame[0] = 0
    frame[0, K.F_FOLIO] = frame[0, K.F_HOME] = -1
    return dict(frame=frame, frame_free=frame_free)


def _table_arrays(n: int) -> dict:
    return dict(pt=np.zeros((n, K.PTRS_PER_TABLE), dtype=np.int32), tab_count=np.zeros(n, dtype=np.int32),
                tab_free=np.zeros(n, dtype=np.int32), tab_huge=np.zeros(n, dtype=np.uint8),
                tab_ref=np.zeros(n, dtype=np.int32), tab_ovr=np.zeros((n, K.PTRS_PER_TABLE), dtype=np.int32),
                tab_maxovr=np.zeros(n, dtype=np.int32), tab_epoch=np.full(n, -1, dtype=np.int64),
                tab_rss=np.zeros(n, dtype=np.int32), tab_uss=np.zeros(n, dtype=np.int32),
                tab_pss=np.zeros(n, dtype=np.float64), tab_w=np.zeros((n, K.PTRS_PER_TABLE), dtype=np.float64))


def _row_arrays(n: int, npmd: int, odf: bool) -> dict:
    """Directory rows; the odf share-group column exists only under odf."""
    return dict(pmd=np.full((n, npmd), -1, dtype=np.int32), ovl=np.zeros((n, npmd), dtype=np.int32),
                ovc=np.full((n, npmd), -1, dtype=np.int8), ovn=np.zeros((n, npmd), dtype=np.int16),
                odfg=np.full((n, npmd) if odf else (1, 1), -1, dtype=np.int32), row_free=np.zeros(n, dtype=np.int32))


def _grown(a: np.ndarray, n: int) -> np.ndarray:
    """a with room for n rows. The new rows are left uninitialised (the kernels
    initialise an id when they hand it out), so the operating system gives
    them memory only once they are used."""
    out = np.empty((n,) + a.shape[1:], dtype=a.dtype)
    out[: a.shape[0]] = a
    return out


def _grow(m: K.Machine, prog: Program, i: int) -> K.Machine:
    """Make room for op i: double whatever it could overflow (the overlay pool
    grows by a quarter, in place: it is the one array that gets large)."""
    frames, tables, rows, slots = K.op_needs(K.machine_ref(m), prog.ops[i], prog.ps)
    g = m.g
    nf = m.frame.shape[0]
    if frames > nf - g[K.G_FRAME_HWM] + g[K.G_FREE_TOP] and nf < g[K.G_FRAME_MAX]:
        want = min(int(g[K.G_FRAME_MAX]), max(2 * nf, int(g[K.G_FRAME_HWM] + frames)), _MAX_FRAMES_IN_USE + 1)
        if want <= nf:
            raise ScenarioError(f"simulate: more than {_MAX_FRAMES_IN_USE} frames in use at once is not supported")
        m = m._replace(frame=_grown(m.frame, want), frame_free=_grown(m.frame_free, want))
    nt = m.pt.shape[0]
    if tables > nt - g[K.G_TAB_HWM] + g[K.G_TAB_TOP]:
        want = max(2 * nt, int(g[K.G_TAB_HWM] + tables))
        if want > K.MAX_TABLES:
            raise ScenarioError(f"simulate: more than {K.MAX_TABLES} PTE tables at once is not supported")
        m = m._replace(**{name: _grown(getattr(m, name), want) for name in _table_arrays(0)})
    nfo = m.folio_live.shape[0]
    if tables > nfo - g[K.G_FOLIO_HWM] + g[K.G_FOLIO_TOP]:
        want = max(2 * nfo, int(g[K.G_FOLIO_HWM] + tables))
        m = m._replace(folio_frames=_grown(m.folio_frames, want), folio_live=_grown(m.folio_live, want),
                       folio_pins=_grown(m.folio_pins, want), folio_free=_grown(m.folio_free, want))
    ng = m.group_ref.shape[0]
    if tables > ng - g[K.G_GROUP_HWM] + g[K.G_GROUP_TOP]:
        want = max(2 * ng, int(g[K.G_GROUP_HWM] + tables))
        m = m._replace(group_ref=_grown(m.group_ref, want), group_free=_grown(m.group_free, want))
    cap = m.ov_val.shape[0]
    if slots > cap - g[K.G_OV_HWM]:
        want = max(cap + cap // 4, int(g[K.G_OV_HWM] + slots))
        m = m._replace(ov_key=_grown_in_place(m.ov_key, want), ov_val=_grown_in_place(m.ov_val, want))
    nr = m.pmd.shape[0]
    if rows > nr - g[K.G_ROW_HWM] + g[K.G_ROW_TOP]:
        want = max(2 * nr, int(g[K.G_ROW_HWM] + rows))
        odf = g[K.G_POLICY] == K.POLICY_ODF
        m = m._replace(**{name: _grown(getattr(m, name), want) for name in _row_arrays(0, 1, odf)
                          if odf or name != "odfg"})
    return m


def _grown_in_place(a: np.ndarray, n: int) -> np.ndarray:
    """a with room for n entries: realloc, which moves a large block's pages
    (mremap) instead of copying them, so growing never holds the pool twice.
    An array the kernels allocated does not own its memory: that one is copied."""
    if not a.flags.owndata:
        return _grown(a, n)
    a.resize(n, refcheck=False)      # the kernels' reference is rebuilt after _grow
    return a


def _with_pool(m: K.Machine, ref: K.MachineRef) -> K.Machine:
    """m with the overlay pool the kernels behind ref may have grown."""
    ov_key, ov_val = K.overlay_pool(ref)
    return m._replace(ov_key=ov_key, ov_val=ov_val)


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
        raise ScenarioError(f"The 'sc' parameter of simulate must be a Scenario; got {sc!r}")
    check_choice("simulate", "policy", policy, POLICIES)
    check_choice("simulate", "oom", oom, OOM_RULES)
    check_choice("simulate", "zero_page", zero_page, (True, False))
    check_choice("simulate", "overcommit", overcommit, (0, 1, 2))
    check_choice("simulate", "thp_cow", thp_cow, THP_COW)
    if isinstance(overcommit_ratio, bool) or not isinstance(overcommit_ratio, (int, np.integer)) \
            or not 0 <= overcommit_ratio <= 100_000:
        raise ScenarioError(f"The 'overcommit_ratio' parameter of simulate must be an integer in [0, 100000]; "
                            f"got {overcommit_ratio!r}")
    if costs is None:
        costs = CostModel.default()
    elif not isinstance(costs, CostModel):
        raise ScenarioError(f"The 'costs' parameter of simulate must be a CostModel or None; got {costs!r}")
    prog = compile_scenario(sc)
    m = _new_machine(prog, sc.frames, POLICIES.index(policy), OOM_RULES.index(oom), zero_page,
                     overcommit, int(overcommit_ratio), THP_COW.index(thp_cow))
    tl = np.zeros((len(prog.ops), K.N_TL), dtype=np.int64)
    total_work = int(prog.work.sum())
    show = total_work >= 10**8 if progress is None else bool(progress)
    bounds = _batches(prog.work)
    t0 = time.perf_counter()
    with tqdm(total=total_work, unit="touch", unit_scale=True, disable=not show, desc=f"simulate[{policy}]") as bar:
        ref = K.machine_ref(m)
        for start, stop in bounds:
            i = start
            while K.run(ref, prog.ops, prog.ps, prog.psf, prog.pool, prog.ztab, tl, i,
                        stop) == K.RUN_GROW:
                i = int(m.g[K.G_RESUME])
                m = _grow(_with_pool(m, ref), prog, i)
                ref = K.machine_ref(m)
            bar.update(int(prog.work[start:stop].sum()))
    K.snapshot_live(ref)
    m = _with_pool(m, ref)
    wall = time.perf_counter() - t0
    return Result(sc, prog, m if keep_state else None, _copy_outputs(m), tl, policy, costs, wall)


def _batches(work: np.ndarray) -> list[tuple[int, int]]:
    """Split ops into runs of about _BATCH_TOUCHES touches (one op never splits)."""
    n = len(work)
    if n == 0:
        return []
    cum = np.cumsum(work)
    cuts = np.searchsorted(cum, np.arange(_BATCH_TOUCHES, cum[-1] + _BATCH_TOUCHES, _BATCH_TOUCHES), side="left")
    edges = sorted(set([0, n] + [min(int(c) + 1, n) for c in cuts]))
    return list(zip(edges[:-1], edges[1:]))


def _copy_outputs(m: K.Machine) -> dict:
    """The per-process and run-level numbers a Result needs, detached from the machine."""
    return dict(proc_state=m.proc_state.copy(), proc_reason=m.proc_reason.copy(), ctr=m.ctr.copy(),
                proc_pss=m.proc_pss.copy(), totals=m.totals.copy(),
                frames_used=int(m.g[K.G_FRAMES_USED]), pte_frames=int(m.g[K.G_PTE_FRAMES]),
                peak_frames=int(m.g[K.G_FRAMES_PEAK]))
