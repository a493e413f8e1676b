"""The jitted engine: frames, PTE tables, address spaces, and the fault path.

Private. Every function here takes a `MachineRef` (a StructRef over the
arrays of a `Machine`: passing it costs one pointer, where a tuple of 27
arrays would cost 27 reference-count updates per call) and plain integers, trusts its arguments completely (the Python layer in
engine.py validated them), and follows docs/semantics.md rule by rule. Names
follow Linux mm/ where the code does the same job: do_anonymous_page,
do_wp_page, wp_page_reuse, wp_page_copy, copy_page_range, zap_pte_range,
exit_mmap, out_of_memory.

Layout of a PTE (int32): 0 means absent; otherwise
    bits 31..2  frame + 1
    bit 1       E, anon-exclusive (PageAnonExclusive)
    bit 0       W, writable
Frame 0 is the zero page. A frame's mapcount counts PTEs, never the zero page's.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit, types
from numba.experimental import structref

from .patterns import _pattern_fill
from .scenario import EXEC, EXIT, FORK, MADVISE, MMAP, MPROTECT, MUNMAP, PIN, READ, SPAWN, UNPIN, VFORK, WRITE

PTRS_PER_TABLE = 512
TABLE_SHIFT = 9

# PTE bits
PTE_W = np.int32(1)
PTE_E = np.int32(2)

# VMA flags, one uint8 per (mm, region)
# VM_ANON_VMA: the region has an anon_vma, which the kernel creates at the first
# fault that allocates an anonymous page; fork copies no PTE of a private
# region without one (vma_needs_copy), and a wipeonfork child starts without.
# VM_ACCOUNT: the region's size is charged to the commit (overcommit accounting).
# VM_HUGEPAGE: faults may map 2 MiB transparent huge pages (mmap thp=True, MADV_HUGEPAGE).
VM_MAPPED, VM_READ, VM_WRITE, VM_DONTFORK, VM_WIPEONFORK, VM_ANON_VMA, VM_ACCOUNT, VM_HUGEPAGE = \
    1, 2, 4, 8, 16, 32, 64, 128
FAULT_AROUND_PAGES = 16     # fault_around_bytes = 64 KiB

# process states (engine.py maps them to names)
P_UNBORN, P_RUNNING, P_SUSPENDED, P_EXITED, P_KILLED, P_FORK_FAILED = 0, 1, 2, 3, 4, 5
R_NONE, R_SIGSEGV, R_OOM = 0, 1, 2

# policies and OOM victim rules
POLICY_EAGER, POLICY_COW, POLICY_ODF = 0, 1, 2
THP_SPLIT, THP_COPY = 0, 1
OOM_LARGEST, OOM_FAULTING = 0, 1

# madvise codes
ADV_DONTFORK, ADV_DOFORK, ADV_WIPEONFORK, ADV_KEEPONFORK, ADV_HUGEPAGE, ADV_NOHUGEPAGE = 0, 1, 2, 3, 4, 5

# per-process counters, ctr[pid, C_*]; the first ones are also kept as run totals
(C_MINOR_FAULTS, C_ZERO_FILLS, C_COW_COPIES, C_COW_REUSES,
 C_FORK_PAGES, C_FORK_PTES, C_FORK_TABLES, C_FORK_TABLES_SHARED, C_FAULT_TABLES, C_FORK_PMDS,
 C_THP_FAULT_ALLOC, C_THP_COPIES, C_THP_SPLITS, C_ENOMEM,
 C_RSS, C_USS, C_PTE_PAGES, C_ANON_HUGE) = range(18)
N_CTR = 18
N_TOTALS = 14     # C_MINOR_FAULTS .. C_ENOMEM are summed into Machine.totals

# scalars in Machine.g
(G_FRAME_MAX, G_FRAMES_USED, G_FRAMES_PEAK, G_FRAME_HWM, G_FREE_TOP,
 G_TAB_HWM, G_TAB_TOP, G_ROW_HWM, G_ROW_TOP, G_POLICY, G_OOM, G_ZERO_PAGE,
 G_RUNNING, G_RESUME, G_GROUP_HWM, G_GROUP_TOP, G_FORKS,
 G_OVERCOMMIT, G_COMMIT_LIMIT, G_COMMITTED, G_PINS, G_THP_COW, G_PTE_FRAMES,
 G_FOLIO_HWM, G_FOLIO_TOP) = range(25)
N_G = 25

# timeline columns: the run totals, then these
T_FRAMES_USED, T_RUNNING, T_FORKS, T_PTE_FRAMES = N_TOTALS, N_TOTALS + 1, N_TOTALS + 2, N_TOTALS + 3
N_TL = N_TOTALS + 4

# run() status
RUN_DONE, RUN_GROW = 0, 1
TOUCH_CHUNK = 4096


class Machine(NamedTuple):
    g: np.ndarray            # int64[N_G] scalars
    totals: np.ndarray       # int64[N_TOTALS] run totals of the first counters
    frame_map: np.ndarray    # int32[frame cap] mapcount
    frame_tag: np.ndarray    # int64[frame cap] last value written
    frame_free: np.ndarray   # int32[frame cap] stack of freed frames
    frame_pins: np.ndarray   # int32[frame cap] DMA-style pins (FOLL_PIN) held on the frame
    frame_folio: np.ndarray  # int32[frame cap] the huge folio the frame is a subpage of, -1 none
    folio_frames: np.ndarray  # int32[folio cap, 512] a huge folio's subpages
    folio_live: np.ndarray   # int32[folio cap] subpages not yet freed
    folio_pins: np.ndarray   # int32[folio cap] pins on any subpage
    folio_free: np.ndarray   # int32[folio cap] stack of freed folio ids
    pt: np.ndarray           # int32[table cap, 512] PTE tables
    tab_count: np.ndarray    # int32[table cap] present PTEs per table
    tab_free: np.ndarray     # int32[table cap] stack of freed tables
    tab_group: np.ndarray    # int32[table cap] odf share group of the table, -1 none
    tab_huge: np.ndarray     # uint8[table cap] 1: a PMD-mapped huge page, its 512 subpages in the entries
    group_ref: np.ndarray    # int32[table cap] tables still sharing one table of the simulated kernel
    group_free: np.ndarray   # int32[table cap] stack of freed groups
    pmd: np.ndarray          # int32[row cap, n_pmd] table of each 2 MiB range, -1 none
    row_free: np.ndarray     # int32[row cap] stack of freed directory rows
    mm_row: np.ndarray       # int32[n_mm] directory row of a live mm, -1 none
    mm_users: np.ndarray     # int32[n_mm] processes using the mm
    mm_rss: np.ndarray       # int64[n_mm] PTEs mapping a frame other than the zero page
    mm_tables: np.ndarray    # int64[n_mm] PTE tables
    vma: np.ndarray          # uint8[n_mm, n_reg] VM_* flags
    reg_pmd0: np.ndarray     # int64[n_reg] first 2 MiB range of the region
    reg_npages: np.ndarray   # int64[n_reg]
    reg_shared: np.ndarray   # uint8[n_reg] MAP_SHARED
    reg_shm0: np.ndarray     # int64[n_reg] first page-cache slot of a shared region
    reg_maps: np.ndarray     # int32[n_reg] address spaces mapping the region
    shm_frame: np.ndarray    # int32[shared pages] page cache: frame or -1
    proc_mm: np.ndarray      # int32[n_proc + 1] indexed by pid
    proc_state: np.ndarray   # int8[n_proc + 1]
    proc_reason: np.ndarray  # int8[n_proc + 1]
    proc_vparent: np.ndarray  # int32[n_proc + 1] vfork parent to wake, 0 none
    ctr: np.ndarray          # int64[n_proc + 1, N_CTR]
    proc_pss: np.ndarray     # float64[n_proc + 1]
    pin_pid: np.ndarray      # int32[pins] pid holding pin record i, 0 once released
    pin_region: np.ndarray   # int32[pins]
    pin_page: np.ndarray     # int64[pins]
    pin_frame: np.ndarray    # int32[pins]



# Kernel-side view of a Machine. The arrays are shared, not copied: the Python
# side keeps the NamedTuple (for reading results) and rebuilds the reference
# after growing an array.
_FIELD_TYPES = {
    "g": types.int64[::1], "totals": types.int64[::1],
    "frame_map": types.int32[::1], "frame_tag": types.int64[::1], "frame_free": types.int32[::1],
    "frame_pins": types.int32[::1], "frame_folio": types.int32[::1],
    "folio_frames": types.int32[:, ::1], "folio_live": types.int32[::1], "folio_pins": types.int32[::1],
    "folio_free": types.int32[::1],
    "pt": types.int32[:, ::1], "tab_count": types.int32[::1], "tab_free": types.int32[::1],
    "tab_group": types.int32[::1], "tab_huge": types.uint8[::1], "group_ref": types.int32[::1],
    "group_free": types.int32[::1],
    "pmd": types.int32[:, ::1], "row_free": types.int32[::1],
    "mm_row": types.int32[::1], "mm_users": types.int32[::1], "mm_rss": types.int64[::1],
    "mm_tables": types.int64[::1], "vma": types.uint8[:, ::1],
    "reg_pmd0": types.int64[::1], "reg_npages": types.int64[::1], "reg_shared": types.uint8[::1],
    "reg_shm0": types.int64[::1], "reg_maps": types.int32[::1], "shm_frame": types.int32[::1],
    "proc_mm": types.int32[::1], "proc_state": types.int8[::1], "proc_reason": types.int8[::1],
    "proc_vparent": types.int32[::1], "ctr": types.int64[:, ::1], "proc_pss": types.float64[::1],
    "pin_pid": types.int32[::1], "pin_region": types.int32[::1], "pin_page": types.int64[::1],
    "pin_frame": types.int32[::1],
}
assert tuple(_FIELD_TYPES) == Machine._fields


@structref.register
class MachineRefType(types.StructRef):
    pass


class MachineRef(structref.StructRefProxy):
    """Opaque handle the kernels take; read results from the Machine it was made from."""


structref.define_boxing(MachineRefType, MachineRef)
MACHINE_REF = MachineRefType(list(_FIELD_TYPES.items()))


@njit(cache=True)
def _machine_ref(g, totals, frame_map, frame_tag, frame_free, frame_pins, frame_folio, folio_frames,
                 folio_live, folio_pins, folio_free, pt, tab_count, tab_free,
                 tab_group, tab_huge, group_ref, group_free, pmd, row_free,
                 mm_row, mm_users, mm_rss, mm_tables, vma, reg_pmd0, reg_npages, reg_shared, reg_shm0,
                 reg_maps, shm_frame, proc_mm, proc_state, proc_reason, proc_vparent, ctr, proc_pss,
                 pin_pid, pin_region, pin_page, pin_frame):
    m = structref.new(MACHINE_REF)
    m.g, m.totals = g, totals
    m.frame_map, m.frame_tag, m.frame_free, m.frame_pins = frame_map, frame_tag, frame_free, frame_pins
    m.frame_folio, m.folio_frames, m.folio_live = frame_folio, folio_frames, folio_live
    m.folio_pins, m.folio_free = folio_pins, folio_free
    m.pt, m.tab_count, m.tab_free = pt, tab_count, tab_free
    m.tab_group, m.tab_huge, m.group_ref, m.group_free = tab_group, tab_huge, group_ref, group_free
    m.pmd, m.row_free = pmd, row_free
    m.mm_row, m.mm_users, m.mm_rss, m.mm_tables, m.vma = mm_row, mm_users, mm_rss, mm_tables, vma
    m.reg_pmd0, m.reg_npages, m.reg_shared, m.reg_shm0 = reg_pmd0, reg_npages, reg_shared, reg_shm0
    m.reg_maps, m.shm_frame = reg_maps, shm_frame
    m.proc_mm, m.proc_state, m.proc_reason, m.proc_vparent = proc_mm, proc_state, proc_reason, proc_vparent
    m.ctr, m.proc_pss = ctr, proc_pss
    m.pin_pid, m.pin_region, m.pin_page, m.pin_frame = pin_pid, pin_region, pin_page, pin_frame
    return m


def machine_ref(m: Machine) -> MachineRef:
    """The kernels' handle on machine m (shares its arrays)."""
    return _machine_ref(*m)


# --- PTE encoding ------------------------------------------------------------

@njit(cache=True, inline="always")
def pte_make(frame, flags):
    return np.int32(((frame + 1) << 2) | flags)


@njit(cache=True, inline="always")
def pte_frame(e):
    return (e >> 2) - 1


@njit(cache=True, inline="always")
def region_tables(m, r):
    """PTE tables (2 MiB ranges) region r spans, from its first one reg_pmd0[r]."""
    return (m.reg_npages[r] + PTRS_PER_TABLE - 1) >> TABLE_SHIFT


# --- counters ----------------------------------------------------------------

@njit(cache=True, inline="always")
def count_event(m, pid, c):
    m.ctr[pid, c] += 1
    m.totals[c] += 1


# --- frames (kalloc) ---------------------------------------------------------

# Frames, tables, directory rows, odf groups and folios all get their ids the
# same way: from a stack of freed ids, else the next id never used (the
# high-water mark). g[top] and g[hwm] index the two counters in Machine.g.

@njit(cache=True, inline="always")
def id_alloc(free, g, top, hwm):
    if g[top] > 0:
        g[top] -= 1
        return free[g[top]]
    i = g[hwm]
    g[hwm] = i + 1
    return i


@njit(cache=True, inline="always")
def id_release(free, g, top, i):
    free[g[top]] = i
    g[top] += 1


@njit(cache=True)
def frame_alloc(m):
    """A free frame with mapcount 0 and tag 0, or -1 when physical memory is full."""
    g = m.g
    if g[G_FRAMES_USED] >= g[G_FRAME_MAX] - 1:
        return -1
    f = id_alloc(m.frame_free, g, G_FREE_TOP, G_FRAME_HWM)
    g[G_FRAMES_USED] += 1
    if g[G_FRAMES_USED] > g[G_FRAMES_PEAK]:
        g[G_FRAMES_PEAK] = g[G_FRAMES_USED]
    m.frame_map[f] = 0
    m.frame_tag[f] = 0
    return f


@njit(cache=True)
def pte_charge(m):
    """Take one page-table page from physical memory (pte_alloc_one); False if none is free."""
    g = m.g
    if g[G_FRAMES_USED] >= g[G_FRAME_MAX] - 1:
        return False
    g[G_FRAMES_USED] += 1
    g[G_PTE_FRAMES] += 1
    if g[G_FRAMES_USED] > g[G_FRAMES_PEAK]:
        g[G_FRAMES_PEAK] = g[G_FRAMES_USED]
    return True


@njit(cache=True)
def pte_uncharge(m):
    m.g[G_FRAMES_USED] -= 1
    m.g[G_PTE_FRAMES] -= 1


@njit(cache=True)
def frame_release(m, f):
    """Return frame f to the free list (the last subpage of a folio frees its id)."""
    fo = m.frame_folio[f]
    if fo >= 0:
        m.frame_folio[f] = -1
        m.folio_live[fo] -= 1
        if m.folio_live[fo] == 0:
            id_release(m.folio_free, m.g, G_FOLIO_TOP, fo)
    id_release(m.frame_free, m.g, G_FREE_TOP, f)
    m.g[G_FRAMES_USED] -= 1


@njit(cache=True)
def frame_unmap(m, f, anon):
    """Drop one PTE mapping of f; an anonymous frame nobody maps is freed."""
    if f == 0:
        return
    m.frame_map[f] -= 1
    if anon and m.frame_map[f] == 0 and m.frame_pins[f] == 0:
        frame_release(m, f)


# --- PTE tables and address spaces -------------------------------------------

@njit(cache=True)
def table_alloc(m):
    t = id_alloc(m.tab_free, m.g, G_TAB_TOP, G_TAB_HWM)
    m.pt[t, :] = 0
    m.tab_count[t] = 0
    m.tab_group[t] = -1
    m.tab_huge[t] = 0
    return t


@njit(cache=True)
def table_free(m, t):
    id_release(m.tab_free, m.g, G_TAB_TOP, t)


@njit(cache=True)
def table_release(m, t):
    """Free table t; its page-table page goes back unless odf peers still share it."""
    if group_leave(m, t):
        pte_uncharge(m)
    table_free(m, t)


# --- on-demand-fork share groups -----------------------------------------------
# Under odf the simulated kernel shares a PTE table between parent and child at
# fork and copies it on the first fault that changes a PTE in it. Here every
# process still has its own copy of the table (so page-level behaviour is cow's
# exactly); a share group records which copies the simulated kernel would still
# hold as one table, so that the copies it would make are counted when they happen.

@njit(cache=True)
def group_join(m, t, nt):
    """Table nt (the child's) shares t's table in the simulated kernel."""
    grp = m.tab_group[t]
    if grp < 0:
        grp = id_alloc(m.group_free, m.g, G_GROUP_TOP, G_GROUP_HWM)
        m.tab_group[t] = grp
        m.group_ref[grp] = 1
    m.tab_group[nt] = grp
    m.group_ref[grp] += 1


@njit(cache=True)
def group_leave(m, t):
    """Table t stops sharing; the last member frees the group. True if t held
    the group's page-table page alone (or was in no group)."""
    grp = m.tab_group[t]
    if grp < 0:
        return True
    m.tab_group[t] = -1
    m.group_ref[grp] -= 1
    if m.group_ref[grp] == 0:
        id_release(m.group_free, m.g, G_GROUP_TOP, grp)
        return True
    return False


@njit(cache=True)
def table_unshare(m, pid, t):
    """Before pid changes a PTE in t: the simulated kernel copies a still-shared
    table. False if there is no page for the copy."""
    grp = m.tab_group[t]
    if grp >= 0 and m.group_ref[grp] > 1:
        if not pte_charge(m):
            return False
        count_event(m, pid, C_FAULT_TABLES)
    group_leave(m, t)
    return True


@njit(cache=True)
def mm_create(m, mm):
    """Give mm an empty directory row and one user."""
    row = id_alloc(m.row_free, m.g, G_ROW_TOP, G_ROW_HWM)
    m.pmd[row, :] = -1
    m.mm_row[mm] = row
    m.mm_users[mm] = 1
    m.mm_rss[mm] = 0
    m.mm_tables[mm] = 0
    m.vma[mm, :] = 0


@njit(cache=True)
def table_for(m, mm, pmd_index):
    """The PTE table of mm covering pmd_index, allocated on first use
    (__pte_alloc); -1 if there is no page for it."""
    row = m.mm_row[mm]
    t = m.pmd[row, pmd_index]
    if t < 0:
        if not pte_charge(m):
            return -1
        t = table_alloc(m)
        m.pmd[row, pmd_index] = t
        m.mm_tables[mm] += 1
    return t


@njit(cache=True)
def set_pte(m, mm, t, slot, e):
    """Install e in an empty slot."""
    m.pt[t, slot] = e
    m.tab_count[t] += 1
    if pte_frame(e) != 0:
        m.mm_rss[mm] += 1


@njit(cache=True)
def zap_region(m, mm, r):
    """Remove every PTE and table of region r from mm (zap_pte_range + free_pgtables)."""
    row = m.mm_row[mm]
    anon = m.reg_shared[r] == 0
    for k in range(m.reg_pmd0[r], m.reg_pmd0[r] + region_tables(m, r)):
        t = m.pmd[row, k]
        if t < 0:
            continue
        if m.tab_count[t] > 0:
            for slot in range(PTRS_PER_TABLE):
                e = m.pt[t, slot]
                if e != 0:
                    f = pte_frame(e)
                    if f != 0:
                        m.mm_rss[mm] -= 1
                    frame_unmap(m, f, anon)
        m.mm_tables[mm] -= 1
        table_release(m, t)
        m.pmd[row, k] = -1


@njit(cache=True)
def region_put(m, r):
    """One address space fewer maps r; the last one frees a shared region's page cache."""
    m.reg_maps[r] -= 1
    if m.reg_maps[r] == 0 and m.reg_shared[r] != 0:
        base = m.reg_shm0[r]
        for k in range(base, base + m.reg_npages[r]):
            f = m.shm_frame[k]
            if f >= 0:
                if m.frame_pins[f] == 0:
                    frame_release(m, f)       # a pinned page outlives the page cache
                m.shm_frame[k] = -1
        vm_unacct(m, m.reg_npages[r])


@njit(cache=True)
def unmap_vma(m, mm, r):
    zap_region(m, mm, r)
    if (m.vma[mm, r] & VM_ACCOUNT) != 0:
        vm_unacct(m, m.reg_npages[r])
    m.vma[mm, r] = 0
    region_put(m, r)


# --- overcommit accounting (mm/util.c __vm_enough_memory) ----------------------
OVERCOMMIT_GUESS, OVERCOMMIT_ALWAYS, OVERCOMMIT_NEVER = 0, 1, 2


@njit(cache=True)
def vm_enough_memory(m, pages):
    """Charge pages to the commit if the overcommit mode allows it."""
    g = m.g
    mode = g[G_OVERCOMMIT]
    if mode == OVERCOMMIT_GUESS and pages > g[G_FRAME_MAX]:
        return False                     # more than all of RAM (and there is no swap)
    if mode == OVERCOMMIT_NEVER and g[G_COMMITTED] + pages > g[G_COMMIT_LIMIT]:
        return False
    g[G_COMMITTED] += pages
    return True


@njit(cache=True)
def vm_unacct(m, pages):
    m.g[G_COMMITTED] -= pages


@njit(cache=True)
def do_mmap(m, pid, mm, r, flags):
    """mmap(): private writable and shared regions are charged to the commit."""
    shared = m.reg_shared[r] != 0
    if shared or (flags & VM_WRITE) != 0:
        if not vm_enough_memory(m, m.reg_npages[r]):
            count_event(m, pid, C_ENOMEM)
            return
        if not shared:
            flags |= VM_ACCOUNT          # shmem charges the object instead, once
    m.vma[mm, r] = flags
    m.reg_maps[r] += 1


@njit(cache=True)
def mm_put(m, mm):
    """Drop one user of mm; the last one tears it down (exit_mmap)."""
    m.mm_users[mm] -= 1
    if m.mm_users[mm] > 0:
        return
    for r in range(m.vma.shape[1]):
        if (m.vma[mm, r] & VM_MAPPED) != 0:
            unmap_vma(m, mm, r)
    id_release(m.row_free, m.g, G_ROW_TOP, m.mm_row[mm])
    m.mm_row[mm] = -1


# --- smaps ------------------------------------------------------------------

@njit(cache=True)
def mm_smaps(m, mm):
    """(rss, pss, uss, anon huge pages) of mm, as smaps_rollup would report them."""
    row = m.mm_row[mm]
    rss = 0
    uss = 0
    huge = 0
    pss = 0.0
    for r in range(m.vma.shape[1]):
        if (m.vma[mm, r] & VM_MAPPED) == 0:
            continue
        for k in range(m.reg_pmd0[r], m.reg_pmd0[r] + region_tables(m, r)):
            t = m.pmd[row, k]
            if t < 0 or m.tab_count[t] == 0:
                continue
            if m.tab_huge[t] != 0 and pte_frame(m.pt[t, 0]) != 0:
                huge += 1
            for slot in range(PTRS_PER_TABLE):
                e = m.pt[t, slot]
                if e == 0:
                    continue
                f = pte_frame(e)
                if f == 0:
                    continue
                n = m.frame_map[f]
                rss += 1
                pss += 1.0 / n
                if n == 1:
                    uss += 1
    return rss, pss, uss, huge


@njit(cache=True)
def snapshot(m, pid):
    """Freeze the memory columns of pid from its address space as it is now."""
    mm = m.proc_mm[pid]
    rss, pss, uss, huge = mm_smaps(m, mm)
    m.ctr[pid, C_ANON_HUGE] = huge
    m.ctr[pid, C_RSS] = rss
    m.ctr[pid, C_USS] = uss
    m.ctr[pid, C_PTE_PAGES] = m.mm_tables[mm]
    m.proc_pss[pid] = pss


# --- process life ------------------------------------------------------------

@njit(cache=True)
def proc_end(m, pid, state, reason):
    """exit, SIGSEGV or OOM: freeze pid's values, wake a vfork parent, release the mm."""
    snapshot(m, pid)
    m.proc_state[pid] = state
    m.proc_reason[pid] = reason
    m.g[G_RUNNING] -= 1
    wake_vfork_parent(m, pid)
    mm_put(m, m.proc_mm[pid])
    unpin_all(m, pid)


@njit(cache=True)
def wake_vfork_parent(m, pid):
    parent = m.proc_vparent[pid]
    if parent != 0:
        if m.proc_state[parent] == P_SUSPENDED:
            m.proc_state[parent] = P_RUNNING
        m.proc_vparent[pid] = 0


@njit(cache=True)
def oom_kill(m, pid):
    """out_of_memory(): kill a victim (and every process sharing its mm). True if pid survives."""
    victim = pid
    if m.g[G_OOM] == OOM_LARGEST:
        best = -1
        for q in range(1, m.proc_state.shape[0]):
            s = m.proc_state[q]
            if s == P_RUNNING or s == P_SUSPENDED:
                rss = m.mm_rss[m.proc_mm[q]] + m.mm_tables[m.proc_mm[q]]   # oom_badness
                if rss > best:
                    best = rss
                    victim = q
    mm = m.proc_mm[victim]
    for q in range(1, m.proc_state.shape[0]):
        s = m.proc_state[q]
        if (s == P_RUNNING or s == P_SUSPENDED) and m.proc_mm[q] == mm:
            proc_end(m, q, P_KILLED, R_OOM)
    return m.proc_state[pid] == P_RUNNING


# --- the fault path -----------------------------------------------------------
# Each handler returns FAULT_OK, or FAULT_OOM when it needed a frame and found
# none; it then changed nothing, so handle_mm_fault can run the OOM killer and
# take the fault again from the start, as the kernel does after
# pagefault_out_of_memory().
FAULT_OK, FAULT_OOM = 0, 1


@njit(cache=True)
def map_cached_page(m, mm, r, t, slot, f):
    m.frame_map[f] += 1
    writable = (m.vma[mm, r] & VM_WRITE) != 0
    set_pte(m, mm, t, slot, pte_make(f, PTE_W if writable else 0))


@njit(cache=True)
def do_fault_around(m, mm, r, t, page):
    """A read fault on a shared page first maps every page of its aligned 64 KiB
    block that the page cache already holds (filemap_map_pages)."""
    lo = page - page % FAULT_AROUND_PAGES
    hi = min(lo + FAULT_AROUND_PAGES, m.reg_npages[r])
    base = m.reg_shm0[r]
    for p in range(lo, hi):
        slot = p & (PTRS_PER_TABLE - 1)
        f = m.shm_frame[base + p]
        if f >= 0 and m.pt[t, slot] == 0:
            map_cached_page(m, mm, r, t, slot, f)


@njit(cache=True)
def do_shared_fault(m, pid, mm, r, t, slot, page, write, tag):
    """First touch of a MAP_SHARED page in mm: a read first maps its cached
    neighbours (and itself, if cached); then find or create it in the page cache."""
    if not write:
        do_fault_around(m, mm, r, t, page)
        if m.pt[t, slot] != 0:
            count_event(m, pid, C_MINOR_FAULTS)
            return FAULT_OK
    k = m.reg_shm0[r] + page
    f = m.shm_frame[k]
    if f < 0:
        f = frame_alloc(m)
        if f < 0:
            return FAULT_OOM                       # the neighbours stay mapped, as in the kernel
        count_event(m, pid, C_ZERO_FILLS)
        m.shm_frame[k] = f
    map_cached_page(m, mm, r, t, slot, f)
    count_event(m, pid, C_MINOR_FAULTS)
    return FAULT_OK


@njit(cache=True)
def do_anonymous_page(m, pid, mm, r, t, slot, write, tag):
    """First touch of a private page: a read maps the zero page, a write a new frame."""
    if not write and m.g[G_ZERO_PAGE] != 0:
        set_pte(m, mm, t, slot, pte_make(0, 0))
        count_event(m, pid, C_MINOR_FAULTS)
        return FAULT_OK
    f = frame_alloc(m)
    if f < 0:
        return FAULT_OOM
    m.frame_map[f] = 1
    m.vma[mm, r] |= VM_ANON_VMA
    set_pte(m, mm, t, slot, pte_make(f, PTE_W | PTE_E))
    count_event(m, pid, C_MINOR_FAULTS)
    count_event(m, pid, C_ZERO_FILLS)
    return FAULT_OK


@njit(cache=True)
def folio_pinned(m, f):
    """folio_maybe_dma_pinned: a pin on the page, or on any page of its huge folio."""
    fo = m.frame_folio[f]
    return m.frame_pins[f] > 0 or (fo >= 0 and m.folio_pins[fo] > 0)


@njit(cache=True)
def can_reuse_anon_page(m, t, f):
    """wp_can_reuse_anon_folio for a page that is not AnonExclusive. A small
    page: nobody else maps or pins it. A subpage of a huge folio: the folio is
    mapped by this address space only (all its mappings are in table t, the
    folio's 2 MiB range), more than once, and nothing pins it."""
    fo = m.frame_folio[f]
    if fo < 0:
        return m.frame_map[f] == 1 and m.frame_pins[f] == 0
    if m.folio_pins[fo] > 0:
        return False
    total = 0
    for s in range(PTRS_PER_TABLE):
        g = m.folio_frames[fo, s]
        if m.frame_folio[g] == fo:
            total += m.frame_map[g]
    mine = 0
    for s in range(PTRS_PER_TABLE):
        e = m.pt[t, s]
        if e != 0 and m.frame_folio[pte_frame(e)] == fo:
            mine += 1
    return total > 1 and mine == total


@njit(cache=True)
def do_wp_page(m, pid, mm, r, t, slot, tag):
    """Write to a present, write-protected private page: reuse it or copy it."""
    e = m.pt[t, slot]
    f = pte_frame(e)
    if f != 0 and ((e & PTE_E) != 0 or can_reuse_anon_page(m, t, f)):
        m.pt[t, slot] = e | PTE_W | PTE_E            # wp_page_reuse
        count_event(m, pid, C_MINOR_FAULTS)
        count_event(m, pid, C_COW_REUSES)
        return FAULT_OK
    nf = frame_alloc(m)                            # wp_page_copy
    if nf < 0:
        return FAULT_OOM
    m.vma[mm, r] |= VM_ANON_VMA
    m.frame_tag[nf] = m.frame_tag[f]
    m.frame_map[nf] = 1
    m.pt[t, slot] = pte_make(nf, PTE_W | PTE_E)
    count_event(m, pid, C_MINOR_FAULTS)
    if f == 0:
        m.mm_rss[mm] += 1                          # the zero page was not in RSS
        count_event(m, pid, C_ZERO_FILLS)
    else:
        frame_unmap(m, f, True)
        count_event(m, pid, C_COW_COPIES)
    return FAULT_OK


# --- transparent huge pages (mm/huge_memory.c) ------------------------------------
# A PMD-mapped huge page is a table flagged tab_huge whose 512 entries map its
# subpages: fork copies it as one PMD, and a split turns it into an ordinary
# PTE table without moving a frame.
FAULT_FALLBACK = 2


@njit(cache=True)
def thp_eligible(m, mm, r, page):
    """A huge page can back page: THP enabled on a private region, and the
    whole aligned 2 MiB around the page lies inside the region."""
    return ((m.vma[mm, r] & VM_HUGEPAGE) != 0 and m.reg_shared[r] == 0
            and ((page >> TABLE_SHIFT) + 1) * PTRS_PER_TABLE <= m.reg_npages[r])


@njit(cache=True)
def huge_frames_free(m, tables):
    """Room for a huge folio and `tables` new page tables (1 at a first touch,
    for the deposited table; 0 when the PMD already has one)."""
    return m.g[G_FRAME_MAX] - 1 - m.g[G_FRAMES_USED] >= PTRS_PER_TABLE + tables


@njit(cache=True)
def map_new_huge_page(m, mm, t, src, flags):
    """Fill huge table t with a new folio of 512 exclusive frames mapped with
    flags, copying the tags of table src's subpages (src < 0: zero-filled)."""
    fo = id_alloc(m.folio_free, m.g, G_FOLIO_TOP, G_FOLIO_HWM)
    m.folio_live[fo] = PTRS_PER_TABLE
    m.folio_pins[fo] = 0
    for slot in range(PTRS_PER_TABLE):
        f = frame_alloc(m)
        m.frame_map[f] = 1
        m.frame_folio[f] = fo
        m.folio_frames[fo, slot] = f
        if src >= 0:
            old = pte_frame(m.pt[src, slot])
            m.frame_tag[f] = m.frame_tag[old]
        m.pt[t, slot] = pte_make(f, flags)


@njit(cache=True)
def do_huge_pmd_anonymous_page(m, pid, mm, r, k, write, tag):
    """First touch of an empty 2 MiB range: a read maps the huge zero page,
    a write a new huge page; FAULT_FALLBACK when 512 frames are not free."""
    zero = not write and m.g[G_ZERO_PAGE] != 0
    if not zero and not huge_frames_free(m, 1):
        return FAULT_FALLBACK                      # thp_fault_fallback: 4 KiB pages instead
    if not pte_charge(m):                          # pgtable_trans_huge_deposit
        return FAULT_OOM
    t = table_alloc(m)
    m.tab_huge[t] = 1
    m.mm_tables[mm] += 1
    m.pmd[m.mm_row[mm], k] = t
    m.vma[mm, r] |= VM_ANON_VMA                   # even for the huge zero page
    if zero:
        m.pt[t, :] = pte_make(0, 0)
    else:
        map_new_huge_page(m, mm, t, -1, PTE_W | PTE_E)
        m.mm_rss[mm] += PTRS_PER_TABLE
        count_event(m, pid, C_THP_FAULT_ALLOC)
    m.tab_count[t] = PTRS_PER_TABLE
    count_event(m, pid, C_MINOR_FAULTS)
    return FAULT_OK


@njit(cache=True)
def split_huge_pmd(m, pid, mm, t):
    """__split_huge_pmd: the huge mapping becomes a PTE table of its subpages
    (the table deposited at fault time, so no new page)."""
    m.tab_huge[t] = 0
    count_event(m, pid, C_THP_SPLITS)


@njit(cache=True)
def huge_exclusive(m, t):
    """The huge page is mapped by this PMD only, and nothing pins it."""
    if (m.pt[t, 0] & PTE_E) != 0:
        return True
    if folio_pinned(m, pte_frame(m.pt[t, 0])):
        return False
    for slot in range(PTRS_PER_TABLE):
        if m.frame_map[pte_frame(m.pt[t, slot])] != 1:
            return False
    return True


@njit(cache=True)
def huge_pinned(m, t):
    f = pte_frame(m.pt[t, 0])
    return f != 0 and folio_pinned(m, f)


@njit(cache=True)
def do_huge_pmd_wp_page(m, pid, mm, r, t, tag):
    """Write to a write-protected huge page. The huge zero page is replaced by
    a new huge page (do_huge_zero_wp_pmd, Linux >= 6.12). A huge page is reused
    whole if exclusive; else under thp_cow="copy" all 2 MiB are copied, and
    under "split" (Linux >= 5.8) the PMD is split and FAULT_FALLBACK returned
    for the 4 KiB fault to go on. With no room for 512 frames: split."""
    zero = pte_frame(m.pt[t, 0]) == 0
    if not zero and huge_exclusive(m, t):
        for slot in range(PTRS_PER_TABLE):
            m.pt[t, slot] |= PTE_W | PTE_E
        count_event(m, pid, C_MINOR_FAULTS)
        count_event(m, pid, C_COW_REUSES)
        return FAULT_OK
    if zero and huge_frames_free(m, 0):
        map_new_huge_page(m, mm, t, -1, PTE_W | PTE_E)
        m.mm_rss[mm] += PTRS_PER_TABLE
        count_event(m, pid, C_MINOR_FAULTS)
        count_event(m, pid, C_THP_FAULT_ALLOC)
        return FAULT_OK
    if not zero and m.g[G_THP_COW] == THP_COPY and huge_frames_free(m, 0):
        old = table_alloc(m)                       # scratch copy of the old subpages
        m.pt[old, :] = m.pt[t, :]
        map_new_huge_page(m, mm, t, old, PTE_W | PTE_E)
        for slot in range(PTRS_PER_TABLE):
            frame_unmap(m, pte_frame(m.pt[old, slot]), True)
        table_free(m, old)
        count_event(m, pid, C_MINOR_FAULTS)
        count_event(m, pid, C_THP_COPIES)
        return FAULT_OK
    split_huge_pmd(m, pid, mm, t)
    return FAULT_FALLBACK


@njit(cache=True)
def fault_once(m, pid, mm, r, page, write, tag):
    """One touch of page of region r by pid: FAULT_OK or FAULT_OOM. A write
    stores tag (> 0) in the page; tag -1 is a pin's write-intent fault."""
    k = m.reg_pmd0[r] + (page >> TABLE_SHIFT)
    slot = page & (PTRS_PER_TABLE - 1)
    t = m.pmd[m.mm_row[mm], k]
    e = m.pt[t, slot] if t >= 0 else np.int32(0)
    if not write:
        if e != 0:
            return FAULT_OK
    elif (e & PTE_W) != 0:
        if tag > 0:
            m.frame_tag[pte_frame(e)] = tag
        return FAULT_OK
    if t < 0:
        if thp_eligible(m, mm, r, page):
            st = do_huge_pmd_anonymous_page(m, pid, mm, r, k, write, tag)
            if st != FAULT_FALLBACK:
                if st == FAULT_OK and write and tag > 0:
                    m.frame_tag[pte_frame(m.pt[m.pmd[m.mm_row[mm], k], slot])] = tag
                return st
        t = table_for(m, mm, k)
        if t < 0:
            return FAULT_OOM
    elif not table_unshare(m, pid, t):
        return FAULT_OOM
    if e == 0:
        if m.reg_shared[r] != 0:
            st = do_shared_fault(m, pid, mm, r, t, slot, page, write, tag)
        else:
            st = do_anonymous_page(m, pid, mm, r, t, slot, write, tag)
    else:                                           # shared PTEs are never write-protected
        st = FAULT_FALLBACK
        if m.tab_huge[t] != 0:
            st = do_huge_pmd_wp_page(m, pid, mm, r, t, tag)
        if st == FAULT_FALLBACK:
            st = do_wp_page(m, pid, mm, r, t, slot, tag)
    if st == FAULT_OK and write and tag > 0:
        m.frame_tag[pte_frame(m.pt[t, slot])] = tag
    return st


@njit(cache=True)
def handle_mm_fault(m, pid, mm, r, page, write, tag):
    """One touch, with the OOM killer behind it. False if pid died on the way."""
    while fault_once(m, pid, mm, r, page, write, tag) == FAULT_OOM:
        if not oom_kill(m, pid):
            return False
    return True


@njit(cache=True)
def touch_run(m, pid, mm, r, pages, write, tag):
    """Touch every page in pages. False if pid died on the way.

    Most touches find a PTE that already allows them; that check is done here,
    without a call, and only real faults go to handle_mm_fault."""
    pmd_row = m.pmd[m.mm_row[mm]]
    pt = m.pt
    frame_tag = m.frame_tag
    first = m.reg_pmd0[r]
    for page in pages:
        t = pmd_row[first + (page >> TABLE_SHIFT)]
        if t >= 0:
            e = pt[t, page & (PTRS_PER_TABLE - 1)]
            if write:
                if (e & PTE_W) != 0:
                    frame_tag[pte_frame(e)] = tag
                    continue
            elif e != 0:
                continue
        if not handle_mm_fault(m, pid, mm, r, page, write, tag):
            return False
    return True


@njit(cache=True)
def touch_pages(m, pid, r, write, tag, kind, count, seed, a, b, pool, off):
    """Run one read/write op over a page set: pool[off:off+count] when kind < 0,
    else touches off .. off+count-1 of a generated pattern."""
    mm = m.proc_mm[pid]
    if count == 0:
        return
    flags = m.vma[mm, r]
    if (flags & VM_MAPPED) == 0 or (flags & VM_READ) == 0 or (write and (flags & VM_WRITE) == 0):
        proc_end(m, pid, P_KILLED, R_SIGSEGV)
        return
    if kind < 0:
        touch_run(m, pid, mm, r, pool[off: off + count], write, tag)
        return
    n = m.reg_npages[r]
    buf = np.empty(min(count, TOUCH_CHUNK), dtype=np.int64)
    for i0 in range(0, count, TOUCH_CHUNK):
        chunk = buf[: min(TOUCH_CHUNK, count - i0)]
        _pattern_fill(kind, seed, a, b, n, off + i0, chunk)
        if not touch_run(m, pid, mm, r, chunk, write, tag):
            return


# --- pins (pin_user_pages with FOLL_WRITE | FOLL_LONGTERM) ---------------------------

@njit(cache=True)
def pte_of(m, mm, r, page):
    t = m.pmd[m.mm_row[mm], m.reg_pmd0[r] + (page >> TABLE_SHIFT)]
    return m.pt[t, page & (PTRS_PER_TABLE - 1)] if t >= 0 else np.int32(0)


@njit(cache=True)
def pin_pages(m, pid, r, pages):
    """Pin each page for DMA: fault it in writable and exclusive, as GUP does
    (those faults are the task's minor faults too), then hold a pin on its frame. A page the
    process cannot write pins nothing (the kernel answers EFAULT)."""
    mm = m.proc_mm[pid]
    flags = m.vma[mm, r]
    if (flags & VM_MAPPED) == 0 or (flags & VM_WRITE) == 0:
        return
    for page in pages:
        if not handle_mm_fault(m, pid, mm, r, page, True, -1):
            return
        f = pte_frame(pte_of(m, mm, r, page))
        m.frame_pins[f] += 1
        if m.frame_folio[f] >= 0:
            m.folio_pins[m.frame_folio[f]] += 1
        i = m.g[G_PINS]
        m.pin_pid[i], m.pin_region[i], m.pin_page[i], m.pin_frame[i] = pid, r, page, f
        m.g[G_PINS] = i + 1


@njit(cache=True)
def pin_release(m, i):
    """Drop pin record i; a frame neither mapped, cached nor pinned is freed."""
    f = m.pin_frame[i]
    m.pin_pid[i] = 0
    m.frame_pins[f] -= 1
    if m.frame_folio[f] >= 0:
        m.folio_pins[m.frame_folio[f]] -= 1
    if m.frame_pins[f] > 0 or m.frame_map[f] > 0:
        return
    r = m.pin_region[i]
    if m.reg_shared[r] != 0 and m.shm_frame[m.reg_shm0[r] + m.pin_page[i]] == f:
        return
    frame_release(m, f)


@njit(cache=True)
def unpin_pages(m, pid, r, pages, every):
    """unpin_user_pages: drop pid's pins on these pages of r (all of them if every)."""
    for i in range(m.g[G_PINS]):
        if m.pin_pid[i] != pid or m.pin_region[i] != r:
            continue
        if every:
            pin_release(m, i)
            continue
        for page in pages:
            if m.pin_page[i] == page:
                pin_release(m, i)
                break


@njit(cache=True)
def unpin_all(m, pid):
    """A process's pins go with it (io_uring tears its buffers down at exit)."""
    for i in range(m.g[G_PINS]):
        if m.pin_pid[i] == pid:
            pin_release(m, i)


# --- fork ----------------------------------------------------------------------

@njit(cache=True)
def fork_frames_needed(m, mm, eager, odf):
    """Frames a fork of mm must allocate: every present private page it copies
    under eager, only the pinned ones otherwise (page_needs_cow_for_dma), and a
    page-table page per table it copies (odf shares tables without pins)."""
    need = 0
    row = m.mm_row[mm]
    for r in range(m.vma.shape[1]):
        fl = m.vma[mm, r]
        if (fl & VM_ANON_VMA) == 0 or (fl & (VM_DONTFORK | VM_WIPEONFORK)) != 0 or m.reg_shared[r] != 0:
            continue
        for k in range(m.reg_pmd0[r], m.reg_pmd0[r] + region_tables(m, r)):
            t = m.pmd[row, k]
            if t < 0:
                continue
            pinned = 0
            for slot in range(PTRS_PER_TABLE):
                e = m.pt[t, slot]
                if e == 0 or pte_frame(e) == 0:
                    continue
                if folio_pinned(m, pte_frame(e)):
                    pinned += 1
                if eager or folio_pinned(m, pte_frame(e)):
                    need += 1
            if not odf or m.tab_huge[t] != 0 or pinned > 0:
                need += 1
    return need


@njit(cache=True)
def copy_pte_table(m, child, cmm, t, nt, eager, writable):
    """copy_pte_range for one table: COW-share or eagerly copy every present PTE;
    a pinned page is copied for the child at once and stays writable in the
    parent (copy_present_page). Returns (PTEs copied, pinned pages copied)."""
    ptes = 0
    pinned = 0
    for slot in range(PTRS_PER_TABLE):
        e = m.pt[t, slot]
        if e == 0:
            continue
        ptes += 1
        f = pte_frame(e)
        if f == 0:
            m.pt[nt, slot] = e
        elif eager or folio_pinned(m, f):
            if folio_pinned(m, f):
                pinned += 1
            nf = frame_alloc(m)          # cannot fail: fork_frames_needed checked
            m.frame_tag[nf] = m.frame_tag[f]
            m.frame_map[nf] = 1
            m.pt[nt, slot] = pte_make(nf, (PTE_W | PTE_E) if writable else PTE_E)
            count_event(m, child, C_FORK_PAGES)
        else:
            e = e & ~(PTE_W | PTE_E)
            m.pt[t, slot] = e
            m.pt[nt, slot] = e
            m.frame_map[f] += 1
        if f != 0:
            m.mm_rss[cmm] += 1
    m.tab_count[nt] = ptes
    return ptes, pinned


@njit(cache=True)
def charge_fork(m, pmm):
    """dup_mmap charges every accounted region the child gets; all or nothing."""
    charged = 0
    for r in range(m.vma.shape[1]):
        fl = m.vma[pmm, r]
        if (fl & VM_ACCOUNT) != 0 and (fl & VM_DONTFORK) == 0:
            if not vm_enough_memory(m, m.reg_npages[r]):
                vm_unacct(m, charged)
                return False
            charged += m.reg_npages[r]
    return True


@njit(cache=True)
def dup_mmap(m, parent, child, cmm):
    """fork(): give child a copy of parent's address space under the run's policy."""
    pmm = m.proc_mm[parent]
    m.g[G_FORKS] += 1
    eager = m.g[G_POLICY] == POLICY_EAGER
    odf = m.g[G_POLICY] == POLICY_ODF
    if (fork_frames_needed(m, pmm, eager, odf) > m.g[G_FRAME_MAX] - 1 - m.g[G_FRAMES_USED]
            or not charge_fork(m, pmm)):
        m.proc_state[child] = P_FORK_FAILED          # ENOMEM: the parent goes on
        count_event(m, parent, C_ENOMEM)
        return
    mm_create(m, cmm)
    m.proc_mm[child] = cmm
    m.proc_state[child] = P_RUNNING
    m.g[G_RUNNING] += 1
    prow = m.mm_row[pmm]
    crow = m.mm_row[cmm]
    for r in range(m.vma.shape[1]):
        fl = m.vma[pmm, r]
        if (fl & VM_MAPPED) == 0 or (fl & VM_DONTFORK) != 0:
            continue
        m.reg_maps[r] += 1
        if (fl & VM_WIPEONFORK) != 0:
            m.vma[cmm, r] = fl & ~VM_ANON_VMA
            continue
        m.vma[cmm, r] = fl
        if m.reg_shared[r] != 0 or (fl & VM_ANON_VMA) == 0:
            continue                                 # vma_needs_copy() is false
        for k in range(m.reg_pmd0[r], m.reg_pmd0[r] + region_tables(m, r)):
            t = m.pmd[prow, k]
            if t < 0:
                continue
            if m.tab_huge[t] != 0 and huge_pinned(m, t):
                split_huge_pmd(m, parent, pmm, t)    # copy_huge_pmd leaves pinned THPs to the PTE path
            nt = table_alloc(m)
            m.pmd[crow, k] = nt
            m.mm_tables[cmm] += 1
            if m.tab_huge[t] != 0:                   # copy_huge_pmd: one PMD entry
                pte_charge(m)                        # its deposited table; fork_frames_needed checked
                m.tab_huge[nt] = 1
                if eager and pte_frame(m.pt[t, 0]) != 0:
                    map_new_huge_page(m, cmm, nt, t, (PTE_W | PTE_E) if (fl & VM_WRITE) != 0 else PTE_E)
                    m.tab_count[nt] = PTRS_PER_TABLE
                    m.mm_rss[cmm] += PTRS_PER_TABLE
                    m.ctr[child, C_FORK_PAGES] += PTRS_PER_TABLE
                    m.totals[C_FORK_PAGES] += PTRS_PER_TABLE
                else:
                    copy_pte_table(m, child, cmm, t, nt, eager, (fl & VM_WRITE) != 0)
                count_event(m, child, C_FORK_PMDS)
                continue
            ptes, pinned = copy_pte_table(m, child, cmm, t, nt, eager, (fl & VM_WRITE) != 0)
            if odf and pinned == 0:
                group_join(m, t, nt)         # shared, not copied
                count_event(m, child, C_FORK_TABLES_SHARED)
            else:
                pte_charge(m)
                count_event(m, child, C_FORK_TABLES)
                m.ctr[child, C_FORK_PTES] += ptes
                m.totals[C_FORK_PTES] += ptes


# --- mprotect / madvise ------------------------------------------------------------

@njit(cache=True)
def change_protection(m, pid, mm, r, prot):
    """mprotect(): new VMA prot; drop W from PTEs, or restore it where no write
    fault is needed: on anon-exclusive private pages (can_change_pte_writable)
    and on every page of a shared region (shmem does no write tracking)."""
    fl = m.vma[mm, r] & ~(VM_READ | VM_WRITE)
    shared = m.reg_shared[r] != 0
    if (prot & VM_WRITE) != 0 and not shared and (fl & VM_ACCOUNT) == 0:
        if not vm_enough_memory(m, m.reg_npages[r]):
            count_event(m, pid, C_ENOMEM)            # mprotect fails, nothing changes
            return
        fl |= VM_ACCOUNT
    m.vma[mm, r] = fl | prot
    row = m.mm_row[mm]
    for k in range(m.reg_pmd0[r], m.reg_pmd0[r] + region_tables(m, r)):
        t = m.pmd[row, k]
        if t < 0:
            continue
        if not table_unshare(m, pid, t):
            count_event(m, pid, C_ENOMEM)            # no page for the table copy: mprotect stops here
            return
        for slot in range(PTRS_PER_TABLE):
            e = m.pt[t, slot]
            if e == 0:
                continue
            if (prot & VM_WRITE) == 0:
                m.pt[t, slot] = e & ~PTE_W
            elif shared or (e & PTE_E) != 0:
                m.pt[t, slot] = e | PTE_W


@njit(cache=True)
def madvise(m, mm, r, advice):
    fl = m.vma[mm, r]
    if advice == ADV_DONTFORK:
        fl |= VM_DONTFORK
    elif advice == ADV_DOFORK:
        fl &= ~VM_DONTFORK
    elif advice == ADV_WIPEONFORK:
        fl |= VM_WIPEONFORK
    elif advice == ADV_KEEPONFORK:
        fl &= ~VM_WIPEONFORK
    elif advice == ADV_HUGEPAGE:
        fl |= VM_HUGEPAGE
    else:
        fl &= ~VM_HUGEPAGE
    m.vma[mm, r] = fl


# --- the op loop -----------------------------------------------------------------

@njit(cache=True)
def op_needs(m, op, ps):
    """Upper bounds on (frames, tables, rows) op may allocate, for growing arrays first."""
    code = op[0]
    if code == READ or code == WRITE or code == PIN:
        r = op[2]
        n = min(ps[op[5], 1] * PTRS_PER_TABLE, m.reg_npages[r])   # a huge page fault takes 512
        return n, min(n, region_tables(m, r)) + 1, 0
    if code == FORK:
        pmm = m.proc_mm[op[1]]
        if m.mm_row[pmm] < 0:
            return 0, 0, 1
        frames = m.mm_rss[pmm] if m.g[G_POLICY] == POLICY_EAGER or m.g[G_PINS] > 0 else 0
        return frames, m.mm_tables[pmm], 1
    if code == SPAWN or code == EXEC:
        return 0, 0, 1
    return 0, 0, 0


@njit(cache=True)
def has_room(m, frames, tables, rows):
    g = m.g
    frame_room = m.frame_map.shape[0] - g[G_FRAME_HWM] + g[G_FREE_TOP]
    if frames > frame_room and m.frame_map.shape[0] < g[G_FRAME_MAX]:
        return False
    if tables > m.pt.shape[0] - g[G_TAB_HWM] + g[G_TAB_TOP]:
        return False
    if tables > m.folio_live.shape[0] - g[G_FOLIO_HWM] + g[G_FOLIO_TOP]:
        return False
    return rows <= m.pmd.shape[0] - g[G_ROW_HWM] + g[G_ROW_TOP]


@njit(cache=True)
def sample(m, tl, i):
    tl[i, :N_TOTALS] = m.totals
    tl[i, T_FRAMES_USED] = m.g[G_FRAMES_USED]
    tl[i, T_RUNNING] = m.g[G_RUNNING]
    tl[i, T_FORKS] = m.g[G_FORKS]
    tl[i, T_PTE_FRAMES] = m.g[G_PTE_FRAMES]


@njit(cache=True)
def step(m, op, ps, psf, pool):
    """Execute one op. The process acting must be running, else the op is skipped."""
    code, pid, r, arg, mm = op[0], op[1], op[2], op[3], op[4]
    if code == SPAWN:
        mm_create(m, mm)
        m.proc_mm[pid] = mm
        m.proc_state[pid] = P_RUNNING
        m.g[G_RUNNING] += 1
        return
    if m.proc_state[pid] != P_RUNNING:
        return
    if code == READ or code == WRITE:
        s = op[5]
        touch_pages(m, pid, r, code == WRITE, arg, ps[s, 0], ps[s, 1], ps[s, 2],
                    psf[s, 0], psf[s, 1], pool, ps[s, 3])
    elif code == FORK:
        dup_mmap(m, pid, arg, mm)
    elif code == VFORK:
        pmm = m.proc_mm[pid]
        m.proc_mm[arg] = pmm
        m.mm_users[pmm] += 1
        m.proc_state[arg] = P_RUNNING
        m.proc_vparent[arg] = pid
        m.g[G_FORKS] += 1
        m.proc_state[pid] = P_SUSPENDED
        m.g[G_RUNNING] += 1
    elif code == EXEC:
        old = m.proc_mm[pid]
        mm_create(m, mm)
        m.proc_mm[pid] = mm
        wake_vfork_parent(m, pid)
        mm_put(m, old)
    elif code == EXIT:
        proc_end(m, pid, P_EXITED, R_NONE)
    elif code == MMAP:
        do_mmap(m, pid, m.proc_mm[pid], r, arg)
    elif code == PIN or code == UNPIN:
        s = op[5]
        pages = pool[ps[s, 3]: ps[s, 3] + ps[s, 1]]
        if code == PIN:
            pin_pages(m, pid, r, pages)
        else:
            unpin_pages(m, pid, r, pages, arg != 0)
    elif (m.vma[m.proc_mm[pid], r] & VM_MAPPED) == 0:
        return                     # munmap, mprotect, madvise of a region a refused mmap never mapped
    elif code == MUNMAP:
        unmap_vma(m, m.proc_mm[pid], r)
    elif code == MPROTECT:
        change_protection(m, pid, m.proc_mm[pid], r, arg)
    elif code == MADVISE:
        madvise(m, m.proc_mm[pid], r, arg)


@njit(cache=True)
def run(m, ops, ps, psf, pool, tl, start, stop):
    """Execute ops[start:stop]. Returns RUN_GROW, with g[G_RESUME] = the op to
    resume at, when an op might need more array room than there is."""
    for i in range(start, stop):
        fr, tb, rw = op_needs(m, ops[i], ps)
        if not has_room(m, fr, tb, rw):
            m.g[G_RESUME] = i
            return RUN_GROW
        step(m, ops[i], ps, psf, pool)
        sample(m, tl, i)
    m.g[G_RESUME] = stop
    return RUN_DONE


@njit(cache=True)
def snapshot_live(m):
    """Values of every process still running or suspended, as they stand at the end."""
    for pid in range(1, m.proc_state.shape[0]):
        s = m.proc_state[pid]
        if s == P_RUNNING or s == P_SUSPENDED:
            snapshot(m, pid)
