"""The jitted engine: frames, PTE tables, address spaces, and the fault path.

Private. Every function here takes a `MachineRef` (a StructRef over the
arrays of a `Machine`: passing it costs one pointer, where a tuple of arrays
would cost one reference-count update per array and call) and plain integers
(a few small helpers of the hot path take the arrays themselves),
trusts its arguments completely (the Python layer in engine.py validated
them), and follows docs/semantics.md rule by rule. Names follow Linux mm/
where the code does the same job: do_anonymous_page, do_wp_page,
wp_page_reuse, wp_page_copy, copy_page_range, zap_pte_range, exit_mmap,
out_of_memory.

How state stays proportional to what is written
-----------------------------------------------
Under cow and odf a fork does not copy the parent's PTE tables here: the
child's directory points at the parent's tables, which count their users
(tab_ref); eager copies every page, so its child gets tables of its own. A
write into a shared table does not copy it either: the writer records its
own PTE for that slot in a small per-(mm, table) overlay (a few bytes a
slot: up to 64 slots in a sorted list, past that a dense 512-slot array).
Reading a PTE looks in the overlay first, then in the table. What the
simulated kernel would have copied is counted, not done.

A page mapped by only one PTE and written only by its owner needs no frame
id: its PTE is "inline" and holds the page's value tag itself. A frame id is
given when a page becomes shared (a fork shares its table), pinned, cached or
part of a huge page. The mapcount of a frame with an id is then

    frame[f, F_MAP]                       PTEs in overlays and unshared tables
  + tab_ref[t] - tab_ovr[t, s]            if f is "homed" at slot s of table t:
                                          the table's users that did not
                                          override that slot map it there

so that sharing a table with one more process is O(1) per table. A table
slot every user overrides is dead: its page is unmapped then and there.

Layout of a PTE (int32): 0 means absent; otherwise
    bit 0       W, writable
    bit 1       E, anon-exclusive (PageAnonExclusive)
    bit 2       I, inline: an exclusive anonymous page without a frame id
    bits 30..3  frame + 1, or for an inline page its value tag
Frame 0 is the zero page. A frame's mapcount counts PTEs, never the zero page's.
Value tags are small ids (engine.py maps them to the values written).
"""
from __future__ import annotations

import os
from typing import NamedTuple

import numpy as np
from numba import njit, types
from numba.cpython.unsafe.numbers import trailing_zeros
from numba.experimental import structref

from .patterns import _pattern_fill
from .scenario import EXEC, EXIT, FORK, MADVISE, MMAP, MPROTECT, MUNMAP, PIN, READ, SPAWN, UNPIN, VFORK, WRITE

PTRS_PER_TABLE = 512
TABLE_SHIFT = 9

# PTE bits
PTE_W = np.int32(1)
PTE_E = np.int32(2)
PTE_I = np.int32(4)
PTE_FLAGS = np.int32(7)
PTE_SHIFT = 3
MAX_PTE_VALUE = (1 << 28) - 1    # frame + 1 and value tags must fit in bits 30..3

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

# columns of a frame record, Machine.frame[f, F_*]: what one fault reads of a
# frame is in one cache line
F_MAP = 0      # PTEs mapping the frame, but for its home slot (see above)
F_PINS = 1     # DMA-style pins (FOLL_PIN) held on the frame
F_FOLIO = 2    # the huge folio the frame is a subpage of, -1 none
F_HOME = 3     # table * 512 + slot the frame is homed at, -1 none
F_TAG = 4      # value tag last written
F_WIDTH = 8
MAX_TABLES = 1 << 22    # F_HOME must fit in an int32

# overlay size classes: 0..5 hold up to 2, 4, ..., 64 (slot, PTE) pairs, sorted by slot; OV_DENSE all 512 PTEs
OV_DENSE = 6
OV_CLASSES = 7

# scalars in Machine.g
(G_FRAME_MAX, G_FRAMES_USED, G_FRAMES_PEAK, G_FRAME_HWM, G_FREE_TOP,
 G_TAB_HWM, G_TAB_TOP, G_ROW_HWM, G_ROW_TOP, G_POLICY, G_OOM, G_ZERO_PAGE,
 G_RUNNING, G_RESUME, G_GROUP_HWM, G_GROUP_TOP, G_FORKS,
 G_OVERCOMMIT, G_COMMIT_LIMIT, G_COMMITTED, G_PINS, G_THP_COW, G_PTE_FRAMES,
 G_FOLIO_HWM, G_FOLIO_TOP, G_EPOCH, G_OV_HWM, G_OV_FREE) = range(28)
N_G = G_OV_FREE + OV_CLASSES      # G_OV_FREE + c: first free overlay chunk of class c, -1 none

# timeline columns: the run totals, then these
T_FRAMES_USED, T_RUNNING, T_FORKS, T_PTE_FRAMES = N_TOTALS, N_TOTALS + 1, N_TOTALS + 2, N_TOTALS + 3
N_TL = N_TOTALS + 4

# run() status
RUN_DONE, RUN_GROW = 0, 1
TOUCH_CHUNK = 4096


class Machine(NamedTuple):
    g: np.ndarray            # int64[N_G] scalars
    totals: np.ndarray       # int64[N_TOTALS] run totals of the first counters
    frame: np.ndarray        # int32[frame cap, F_WIDTH] one 32-byte record per frame id, columns F_*
    frame_free: np.ndarray   # int32[frame cap] stack of freed frame ids
    folio_frames: np.ndarray  # int32[folio cap, 512] a huge folio's subpages
    folio_live: np.ndarray   # int32[folio cap] subpages not yet freed
    folio_pins: np.ndarray   # int32[folio cap] pins on any subpage
    folio_free: np.ndarray   # int32[folio cap] stack of freed folio ids
    pt: np.ndarray           # int32[table cap, 512] PTE tables
    tab_count: np.ndarray    # int32[table cap] present PTEs per table
    tab_free: np.ndarray     # int32[table cap] stack of freed tables
    tab_huge: np.ndarray     # uint8[table cap] 1: a PMD-mapped huge page, its 512 subpages in the entries
    tab_ref: np.ndarray      # int32[table cap] directory entries pointing at the table
    tab_ovr: np.ndarray      # int32[table cap, 512] users of the table that override the slot
    tab_maxovr: np.ndarray   # int32[table cap] an upper bound on the table's tab_ovr
    tab_epoch: np.ndarray    # int64[table cap] G_EPOCH when tab_rss/uss/pss were computed
    tab_rss: np.ndarray      # int32[table cap] smaps of the table's own entries, cached
    tab_uss: np.ndarray      # int32[table cap]
    tab_pss: np.ndarray      # float64[table cap]
    tab_w: np.ndarray        # float64[table cap, 512] each entry's pss share, -1 where no page, cached too
    group_ref: np.ndarray    # int32[group cap] address spaces sharing one table of the simulated odf kernel
    group_free: np.ndarray   # int32[group cap] stack of freed groups
    pmd: np.ndarray          # int32[row cap, n_pmd] table of each 2 MiB range, -1 none
    ovl: np.ndarray          # int32[row cap, n_pmd] offset of the range's overlay in ov_key/ov_val
    ovc: np.ndarray          # int8[row cap, n_pmd] its size class, -1 no overlay
    ovn: np.ndarray          # int16[row cap, n_pmd] its entries
    odfg: np.ndarray         # int32[row cap, n_pmd] (odf only) simulated-kernel share group, -1 none
    row_free: np.ndarray     # int32[row cap] stack of freed directory rows
    ov_key: np.ndarray       # uint16[pool] overlay slots (sparse classes)
    ov_val: np.ndarray       # int32[pool] overlay PTEs; 0 is an empty dense slot (or a free-list link)
    mm_row: np.ndarray       # int32[n_mm] directory row of a live mm, -1 none
    mm_users: np.ndarray     # int32[n_mm] processes using the mm
    mm_tables: np.ndarray    # int64[n_mm] PTE tables
    mm_ptes: np.ndarray      # int64[n_mm, n_reg] present PTEs of the mm in the region
    mm_rss: np.ndarray       # int64[n_mm, n_reg] of them, those mapping a page other than the zero page
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
    seen: np.ndarray         # uint8[pages of the largest region, in whole 2 MiB ranges] 1: the op running
                             # touches the page; all zero between ops (see touch_pages)
    seen_ranges: np.ndarray  # uint8[2 MiB ranges of the largest region] 1: the op touches a page in the range


# Kernel-side view of a Machine. The arrays are shared, not copied: the Python
# side keeps the NamedTuple (for reading results) and rebuilds the reference
# after growing an array. The overlay pool is the one thing kernels grow
# themselves (a write op can add any number of entries); overlay_pool() hands
# the current arrays back.
_FIELD_TYPES = {
    "g": types.int64[::1], "totals": types.int64[::1],
    "frame": types.int32[:, ::1], "frame_free": types.int32[::1],
    "folio_frames": types.int32[:, ::1], "folio_live": types.int32[::1], "folio_pins": types.int32[::1],
    "folio_free": types.int32[::1],
    "pt": types.int32[:, ::1], "tab_count": types.int32[::1], "tab_free": types.int32[::1],
    "tab_huge": types.uint8[::1], "tab_ref": types.int32[::1], "tab_ovr": types.int32[:, ::1],
    "tab_maxovr": types.int32[::1], "tab_epoch": types.int64[::1], "tab_rss": types.int32[::1],
    "tab_uss": types.int32[::1], "tab_pss": types.float64[::1], "tab_w": types.float64[:, ::1],
    "group_ref": types.int32[::1], "group_free": types.int32[::1],
    "pmd": types.int32[:, ::1], "ovl": types.int32[:, ::1], "ovc": types.int8[:, ::1],
    "ovn": types.int16[:, ::1], "odfg": types.int32[:, ::1], "row_free": types.int32[::1],
    "ov_key": types.uint16[::1], "ov_val": types.int32[::1],
    "mm_row": types.int32[::1], "mm_users": types.int32[::1], "mm_tables": types.int64[::1],
    "mm_ptes": types.int64[:, ::1], "mm_rss": types.int64[:, ::1], "vma": types.uint8[:, ::1],
    "reg_pmd0": types.int64[::1], "reg_npages": types.int64[::1], "reg_shared": types.uint8[::1],
    "reg_shm0": types.int64[::1], "reg_maps": types.int32[::1], "shm_frame": types.int32[::1],
    "proc_mm": types.int32[::1], "proc_state": types.int8[::1], "proc_reason": types.int8[::1],
    "proc_vparent": types.int32[::1], "ctr": types.int64[:, ::1], "proc_pss": types.float64[::1],
    "pin_pid": types.int32[::1], "pin_region": types.int32[::1], "pin_page": types.int64[::1],
    "pin_frame": types.int32[::1], "seen": types.uint8[::1],
    "seen_ranges": types.uint8[::1],
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
def _machine_ref(g, totals, frame, frame_free,
                 folio_frames, folio_live, folio_pins, folio_free, pt, tab_count, tab_free,
                 tab_huge, tab_ref, tab_ovr, tab_maxovr, tab_epoch, tab_rss, tab_uss, tab_pss,
                 tab_w, group_ref, group_free, pmd, ovl, ovc, ovn, odfg, row_free, ov_key, ov_val, mm_row,
                 mm_users, mm_tables, mm_ptes, mm_rss, vma, reg_pmd0, reg_npages, reg_shared,
                 reg_shm0, reg_maps, shm_frame, proc_mm, proc_state, proc_reason, proc_vparent, ctr,
                 proc_pss, pin_pid, pin_region, pin_page, pin_frame, seen, seen_ranges):
    m = structref.new(MACHINE_REF)
    m.g, m.totals, m.frame, m.frame_free = g, totals, frame, frame_free
    m.folio_frames, m.folio_live, m.folio_pins, m.folio_free = folio_frames, folio_live, folio_pins, folio_free
    m.pt, m.tab_count, m.tab_free, m.tab_huge = pt, tab_count, tab_free, tab_huge
    m.tab_ref, m.tab_ovr, m.tab_maxovr, m.tab_epoch = tab_ref, tab_ovr, tab_maxovr, tab_epoch
    m.tab_rss, m.tab_uss, m.tab_pss, m.tab_w = tab_rss, tab_uss, tab_pss, tab_w
    m.group_ref = group_ref
    m.group_free, m.pmd, m.ovl, m.ovc = group_free, pmd, ovl, ovc
    m.ovn, m.odfg, m.row_free, m.ov_key = ovn, odfg, row_free, ov_key
    m.ov_val, m.mm_row, m.mm_users, m.mm_tables = ov_val, mm_row, mm_users, mm_tables
    m.mm_ptes, m.mm_rss, m.vma, m.reg_pmd0 = mm_ptes, mm_rss, vma, reg_pmd0
    m.reg_npages, m.reg_shared, m.reg_shm0, m.reg_maps = reg_npages, reg_shared, reg_shm0, reg_maps
    m.shm_frame, m.proc_mm, m.proc_state, m.proc_reason = shm_frame, proc_mm, proc_state, proc_reason
    m.proc_vparent, m.ctr, m.proc_pss, m.pin_pid = proc_vparent, ctr, proc_pss, pin_pid
    m.pin_region, m.pin_page, m.pin_frame = pin_region, pin_page, pin_frame
    m.seen, m.seen_ranges = seen, seen_ranges
    return m


def machine_ref(m: Machine) -> MachineRef:
    """The kernels' handle on machine m (shares its arrays)."""
    return _machine_ref(*m)


@njit(cache=True)
def overlay_pool(m):
    """The overlay arrays as they are now (kernels may have grown them)."""
    return m.ov_key, m.ov_val


# --- PTE encoding ------------------------------------------------------------

@njit(cache=True, inline="always")
def pte_make(frame, flags):
    return np.int32(((frame + 1) << PTE_SHIFT) | flags)


@njit(cache=True, inline="always")
def pte_inline(tag, flags):
    """An exclusive anonymous page without a frame id, holding value tag `tag`."""
    return np.int32((tag << PTE_SHIFT) | PTE_I | flags)


@njit(cache=True, inline="always")
def pte_is_inline(e):
    return (e & PTE_I) != 0


@njit(cache=True, inline="always")
def pte_frame(e):
    """The frame of a present PTE that is not inline (0: the zero page)."""
    return (e >> PTE_SHIFT) - 1


@njit(cache=True, inline="always")
def pte_id(e):
    """The frame id e maps, or -1 for none, an inline page or the zero page."""
    if e == 0 or (e & PTE_I) != 0:
        return -1
    f = (e >> PTE_SHIFT) - 1
    return f if f > 0 else -1


@njit(cache=True, inline="always")
def pte_page(e):
    """1 if e maps a page other than the zero page (it counts in RSS)."""
    return 1 if e != 0 and ((e & PTE_I) != 0 or (e >> PTE_SHIFT) > 1) else 0


@njit(cache=True, inline="always")
def pte_with_tag(e, tag):
    """e after a write of value tag `tag` through it (an inline page keeps the tag in the PTE)."""
    return np.int32((tag << PTE_SHIFT) | (e & PTE_FLAGS))


@njit(cache=True, inline="always")
def home_of(t, slot):
    return np.int32(t * PTRS_PER_TABLE + slot)


@njit(cache=True, inline="always")
def region_tables(m, r):
    """PTE tables (2 MiB ranges) region r spans, from its first one reg_pmd0[r]."""
    return (m.reg_npages[r] + PTRS_PER_TABLE - 1) >> TABLE_SHIFT


# --- counters ----------------------------------------------------------------

@njit(cache=True, inline="always")
def count_events(ctr, totals, pid, c, n):
    """n events of counter c for pid, and in the run totals (on the arrays
    themselves, for loops that hold them in locals)."""
    ctr[pid, c] += n
    totals[c] += n


@njit(cache=True, inline="always")
def count_event(m, pid, c):
    count_events(m.ctr, m.totals, pid, c, 1)


@njit(cache=True, inline="always")
def count_ptes(m, mm, r, ptes, pages):
    """mm maps `ptes` more PTEs in region r, `pages` of them to pages other than the zero page."""
    m.mm_ptes[mm, r] += ptes
    m.mm_rss[mm, r] += pages


@njit(cache=True)
def mm_rss_total(m, mm):
    return m.mm_rss[mm].sum()


# --- ids (kalloc) ---------------------------------------------------------------

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


# --- frames ---------------------------------------------------------------------
# Physical memory (G_FRAMES_USED) counts every page: inline pages, pages with
# a frame id, and page-table pages. Frame ids are bookkeeping and cost nothing.

@njit(cache=True)
def frame_charge(m):
    """Take one page of physical memory; False when it is full."""
    g = m.g
    if g[G_FRAMES_USED] >= g[G_FRAME_MAX] - 1:
        return False
    frames_taken(g, 1)
    return True


@njit(cache=True, inline="always")
def frames_taken(g, n):
    """n pages of physical memory taken, where room was made sure of first."""
    g[G_FRAMES_USED] += n
    if g[G_FRAMES_USED] > g[G_FRAMES_PEAK]:
        g[G_FRAMES_PEAK] = g[G_FRAMES_USED]


@njit(cache=True, inline="always")
def frame_uncharge(m):
    m.g[G_FRAMES_USED] -= 1


@njit(cache=True)
def frame_id(m, tag):
    """A frame id for a page already charged (one that was inline): unmapped, unhomed, holding tag."""
    f = id_alloc(m.frame_free, m.g, G_FREE_TOP, G_FRAME_HWM)
    rec = m.frame[f]
    rec[F_MAP] = 0
    rec[F_PINS] = 0
    rec[F_FOLIO] = -1
    rec[F_HOME] = -1
    rec[F_TAG] = tag
    return f


@njit(cache=True)
def frame_alloc(m):
    """A new page with a frame id, mapcount 0 and tag 0, or -1 when physical memory is full."""
    if not frame_charge(m):
        return -1
    return frame_id(m, 0)


@njit(cache=True)
def pte_charge(m):
    """Take one page-table page from physical memory (pte_alloc_one); False if none is free."""
    if not frame_charge(m):
        return False
    m.g[G_PTE_FRAMES] += 1
    return True


@njit(cache=True)
def pte_uncharge(m):
    m.g[G_FRAMES_USED] -= 1
    m.g[G_PTE_FRAMES] -= 1


@njit(cache=True)
def frame_release(m, f):
    """Free frame f (the last subpage of a folio frees its folio id)."""
    fo = m.frame[f, F_FOLIO]
    if fo >= 0:
        m.frame[f, F_FOLIO] = -1
        m.folio_live[fo] -= 1
        if m.folio_live[fo] == 0:
            id_release(m.folio_free, m.g, G_FOLIO_TOP, fo)
    id_release(m.frame_free, m.g, G_FREE_TOP, f)
    frame_uncharge(m)


@njit(cache=True)
def frame_mapcount(m, f):
    """PTEs mapping frame f (page_mapcount)."""
    n = m.frame[f, F_MAP]
    h = m.frame[f, F_HOME]
    if h >= 0:
        t = h >> TABLE_SHIFT
        n += m.tab_ref[t] - m.tab_ovr[t, h & (PTRS_PER_TABLE - 1)]
    return n


@njit(cache=True)
def frame_put(m, f):
    """Free anonymous frame f if nothing maps or pins it any more."""
    if m.frame[f, F_PINS] == 0 and frame_mapcount(m, f) == 0:
        frame_release(m, f)


@njit(cache=True)
def frame_unmap(m, f):
    """Drop one counted PTE mapping of anonymous frame id f; free it if nobody maps it."""
    m.frame[f, F_MAP] -= 1
    frame_put(m, f)


@njit(cache=True)
def pte_drop(m, e, anon):
    """A PTE counted in F_MAP (an overlay's, an unshared table's) goes away;
    a page-cache page (anon False) stays in its cache."""
    if e == 0:
        return
    if pte_is_inline(e):
        frame_uncharge(m)
        return
    f = pte_frame(e)
    if f != 0:
        if anon:
            frame_unmap(m, f)
        else:
            m.frame[f, F_MAP] -= 1


@njit(cache=True)
def base_drop(m, t, slot, e):
    """Entry e of (anonymous) table t at slot goes away for the table's last users."""
    f = pte_id(e)
    if f > 0 and m.frame[f, F_HOME] == home_of(t, slot):
        m.frame[f, F_HOME] = -1
        frame_put(m, f)
    elif pte_is_inline(e):
        frame_uncharge(m)
    elif f > 0:
        frame_unmap(m, f)


# --- PTE tables ------------------------------------------------------------------

@njit(cache=True)
def table_alloc(m):
    """An empty table with one user."""
    t = id_alloc(m.tab_free, m.g, G_TAB_TOP, G_TAB_HWM)
    m.pt[t, :] = 0
    m.tab_ovr[t, :] = 0
    m.tab_count[t] = 0
    m.tab_huge[t] = 0
    m.tab_ref[t] = 1
    m.tab_maxovr[t] = 0
    m.tab_epoch[t] = -1
    return t


@njit(cache=True)
def table_free(m, t):
    id_release(m.tab_free, m.g, G_TAB_TOP, t)


@njit(cache=True)
def base_kill(m, t, slot):
    """Every user of t overrides slot: the table's own entry there maps nothing any more."""
    e = m.pt[t, slot]
    if e == 0:
        return
    m.pt[t, slot] = 0
    m.tab_count[t] -= 1
    base_drop(m, t, slot, e)


@njit(cache=True)
def ovr_add(m, t, slot):
    """One more user of t overrides slot."""
    n = m.tab_ovr[t, slot] + 1
    m.tab_ovr[t, slot] = n
    if n > m.tab_maxovr[t]:
        m.tab_maxovr[t] = n
    if n == m.tab_ref[t]:
        base_kill(m, t, slot)


@njit(cache=True)
def table_put(m, t):
    """One user fewer of t. Slots every remaining user overrides die; the
    last user frees the table and everything only it mapped."""
    m.tab_ref[t] -= 1
    n = m.tab_ref[t]
    if n == 0:
        if m.tab_count[t] > 0:
            for slot in range(PTRS_PER_TABLE):
                e = m.pt[t, slot]
                if e != 0:
                    base_drop(m, t, slot, e)
        table_free(m, t)
    elif m.tab_maxovr[t] >= n and m.tab_count[t] > 0:
        for slot in range(PTRS_PER_TABLE):
            if m.tab_ovr[t, slot] == n:
                base_kill(m, t, slot)


# --- overlays: an address space's own PTEs in a table it shares ------------------

@njit(cache=True, inline="always")
def ov_cap(c):
    return PTRS_PER_TABLE if c == OV_DENSE else 2 << c


@njit(cache=True)
def ov_grow(m, need):
    """Grow the overlay pool to hold `need` entries (amortised doubling). A
    fallback: engine.py grows the pool between ops, in place, from op_needs's
    bound, so that the copy made here (twice the pool, briefly) is not needed."""
    n = max(need, 2 * m.ov_val.shape[0], 1 << 16)
    key = np.empty(n, dtype=np.uint16)          # untouched room costs no memory
    val = np.empty(n, dtype=np.int32)
    used = m.g[G_OV_HWM]
    key[:used] = m.ov_key[:used]
    val[:used] = m.ov_val[:used]
    m.ov_key = key
    m.ov_val = val


@njit(cache=True)
def ov_alloc(m, c):
    """Offset of a free chunk of class c (dense chunks come zeroed)."""
    g = m.g
    head = G_OV_FREE + c
    off = g[head]
    if off >= 0:
        g[head] = m.ov_val[off]
    else:
        off = g[G_OV_HWM]
        if off + ov_cap(c) > m.ov_val.shape[0]:
            ov_grow(m, off + ov_cap(c))
        g[G_OV_HWM] = off + ov_cap(c)
    if c == OV_DENSE:
        m.ov_val[off: off + PTRS_PER_TABLE] = 0
    return off


@njit(cache=True)
def ov_release(m, c, off):
    m.ov_val[off] = np.int32(m.g[G_OV_FREE + c])
    m.g[G_OV_FREE + c] = off


@njit(cache=True, inline="always")
def ov_lower_bound(key, off, n, slot):
    """First position in the sorted slots key[off:off+n] not below slot."""
    lo = off
    hi = off + n
    while lo < hi:
        mid = (lo + hi) >> 1
        if key[mid] < slot:
            lo = mid + 1
        else:
            hi = mid
    return lo


@njit(cache=True, inline="always")
def ov_search(key, off, n, slot):
    """Position of slot in the sorted slots key[off:off+n], -1 if absent."""
    i = ov_lower_bound(key, off, n, slot)
    return i if i < off + n and key[i] == slot else -1


@njit(cache=True, inline="always")
def ov_insert(key, val, off, n, slot, e):
    """Insert (slot, e) into the sorted sparse chunk at off holding n entries
    (it has room); returns its position."""
    i = ov_lower_bound(key, off, n, slot)
    for j in range(off + n, i, -1):
        key[j] = key[j - 1]
        val[j] = val[j - 1]
    key[i] = slot
    val[i] = e
    return i


@njit(cache=True, inline="always")
def ov_put(key, val, off, c, n, slot, e):
    """Place (slot, e) in the chunk at off of class c holding n entries, which
    has room for it; returns its position."""
    if c == OV_DENSE:
        val[off + slot] = e
        return off + slot
    return ov_insert(key, val, off, n, slot, e)


@njit(cache=True, inline="always")
def ov_lookup(ovc_row, ovl_row, ovn_row, ov_key, ov_val, k, slot):
    """Pool index of the overlay entry for slot of range k, -1 none, on a
    directory row's arrays the caller holds (touch_run holds them across touches)."""
    c = ovc_row[k]
    if c < 0:
        return -1
    off = ovl_row[k]
    if c == OV_DENSE:
        return off + slot if ov_val[off + slot] != 0 else -1
    return ov_search(ov_key, off, ovn_row[k], slot)


@njit(cache=True, inline="always")
def ov_find(m, row, k, slot):
    """Pool index of the overlay entry of (row, k) for slot, -1 none."""
    return ov_lookup(m.ovc[row], m.ovl[row], m.ovn[row], m.ov_key, m.ov_val, k, slot)


@njit(cache=True, inline="always")
def ov_len(m, row, k):
    """Positions to visit with ov_at (a dense overlay has 512, some empty)."""
    c = m.ovc[row, k]
    if c < 0:
        return 0
    return PTRS_PER_TABLE if c == OV_DENSE else m.ovn[row, k]


@njit(cache=True, inline="always")
def ov_at(m, row, k, i):
    """(slot, pool index) of position i; the entry is empty where ov_val is 0."""
    off = m.ovl[row, k]
    if m.ovc[row, k] == OV_DENSE:
        return i, off + i
    return np.int64(m.ov_key[off + i]), off + i


@njit(cache=True)
def ov_add(m, row, k, slot, e):
    """Record e as the PTE of (row, k) at slot, which has no entry yet; returns its pool index."""
    ovc = m.ovc
    ovl = m.ovl
    c = ovc[row, k]
    n = m.ovn[row, k]
    if c < 0:
        ovl[row, k] = ov_alloc(m, 0)
        ovc[row, k] = 0
        c = 0
    elif c != OV_DENSE and n == ov_cap(c):
        old = ovl[row, k]
        new = ov_alloc(m, c + 1)
        key = m.ov_key
        val = m.ov_val
        if c + 1 == OV_DENSE:
            for i in range(n):
                val[new + key[old + i]] = val[old + i]
        else:
            key[new: new + n] = key[old: old + n]
            val[new: new + n] = val[old: old + n]
        ov_release(m, c, old)
        c += 1
        ovl[row, k] = new
        ovc[row, k] = c
    i = ov_put(m.ov_key, m.ov_val, ovl[row, k], c, n, slot, e)
    m.ovn[row, k] = n + 1
    return i


@njit(cache=True)
def ov_clone(m, src, dst, k):
    """Give (dst, k) a copy of the overlay of (src, k)."""
    c = m.ovc[src, k]
    off = ov_alloc(m, c)
    old = m.ovl[src, k]
    n = ov_cap(c)
    key = m.ov_key
    val = m.ov_val
    key[off: off + n] = key[old: old + n]
    val[off: off + n] = val[old: old + n]
    m.ovl[dst, k] = off
    m.ovc[dst, k] = c
    m.ovn[dst, k] = m.ovn[src, k]


@njit(cache=True)
def ov_drop(m, row, k):
    c = m.ovc[row, k]
    if c >= 0:
        ov_release(m, c, m.ovl[row, k])
        m.ovc[row, k] = -1
        m.ovn[row, k] = 0


# --- reading and writing one address space's PTEs ------------------------------------

@njit(cache=True, inline="always")
def pte_peek(m, row, k, t, slot):
    """The PTE the address space with directory row `row` sees at slot of table t."""
    i = ov_find(m, row, k, slot)
    return m.ov_val[i] if i >= 0 else m.pt[t, slot]


@njit(cache=True)
def pte_write(m, row, k, t, slot, oi, e):
    """Make e (present) the PTE of (row, k) at slot of its table t; oi is its
    overlay entry there, -1 none. Mapcounts move from the old PTE to e. In a
    table others share, e becomes an override. Returns e's overlay index, -1
    when e is in the table itself."""
    fn = pte_id(e)
    if oi >= 0:
        fo = pte_id(m.ov_val[oi])
        m.ov_val[oi] = e
        if fo != fn:
            if fn > 0:
                m.frame[fn, F_MAP] += 1
            if fo > 0:
                frame_unmap(m, fo)
        return oi
    if m.tab_ref[t] == 1:
        old = m.pt[t, slot]
        m.pt[t, slot] = e
        if old == 0:
            m.tab_count[t] += 1
        fo = pte_id(old)
        if fo != fn:
            if fn > 0:
                m.frame[fn, F_MAP] += 1
            if fo > 0:
                base_drop(m, t, slot, old)
        return -1
    if fn > 0:
        m.frame[fn, F_MAP] += 1             # before the table's own entry can die
    oi = ov_add(m, row, k, slot, e)
    ovr_add(m, t, slot)
    return oi


@njit(cache=True)
def store_tag(m, row, k, slot, tag):
    """The page (row, k, slot) maps now holds value tag `tag`."""
    t = m.pmd[row, k]
    i = ov_find(m, row, k, slot)
    e = m.ov_val[i] if i >= 0 else m.pt[t, slot]
    if pte_is_inline(e):
        if i >= 0:
            m.ov_val[i] = pte_with_tag(e, tag)
        else:
            m.pt[t, slot] = pte_with_tag(e, tag)
    else:
        m.frame[pte_frame(e), F_TAG] = tag


@njit(cache=True)
def pte_give_id(m, t, slot, oi, e):
    """The inline page e, at overlay entry oi (-1: at slot of table t, where it
    is homed), gets a frame id; returns its PTE now, with e's W and E bits."""
    f = frame_id(m, e >> PTE_SHIFT)
    e = pte_make(f, e & (PTE_W | PTE_E))
    if oi >= 0:
        m.frame[f, F_MAP] = 1
        m.ov_val[oi] = e
    else:
        m.frame[f, F_HOME] = home_of(t, slot)
        m.pt[t, slot] = e
    return e


@njit(cache=True)
def pte_tag_of(m, e):
    """Value tag of the page e maps (0: never written)."""
    if e == 0:
        return 0
    if pte_is_inline(e):
        return e >> PTE_SHIFT
    return m.frame[pte_frame(e), F_TAG]


# --- on-demand-fork share groups -----------------------------------------------
# Under odf the simulated kernel shares a PTE table between parent and child at
# fork and copies it on the first fault that changes a PTE in it. A share
# group records which address spaces the simulated kernel would still have
# sharing one table for a 2 MiB range, so the copies it would make are counted
# when they happen. (Inside the simulator, cow shares its tables the same way.)

@njit(cache=True)
def odf_share(m, prow, crow, k):
    """The child (crow) shares the parent's (prow) table for range k in the simulated kernel."""
    grp = m.odfg[prow, k]
    if grp < 0:
        grp = id_alloc(m.group_free, m.g, G_GROUP_TOP, G_GROUP_HWM)
        m.odfg[prow, k] = grp
        m.group_ref[grp] = 1
    m.odfg[crow, k] = grp
    m.group_ref[grp] += 1


@njit(cache=True)
def odf_leave(m, row, k):
    """(row, k) stops sharing; True if it held its simulated table alone (or
    was in no group), so that table's page is freed."""
    if m.g[G_POLICY] != POLICY_ODF:
        return True
    grp = m.odfg[row, k]
    if grp < 0:
        return True
    m.odfg[row, k] = -1
    m.group_ref[grp] -= 1
    if m.group_ref[grp] == 0:
        id_release(m.group_free, m.g, G_GROUP_TOP, grp)
        return True
    return False


@njit(cache=True)
def table_unshare(m, pid, row, k):
    """Before pid changes a PTE in range k: the simulated odf kernel copies a
    still-shared table. False if there is no page for the copy."""
    if m.g[G_POLICY] != POLICY_ODF:
        return True
    grp = m.odfg[row, k]
    if grp >= 0 and m.group_ref[grp] > 1:
        if not pte_charge(m):
            return False
        count_event(m, pid, C_FAULT_TABLES)
    odf_leave(m, row, k)
    return True


# --- address spaces ---------------------------------------------------------------

@njit(cache=True)
def mm_create(m, mm):
    """Give mm an empty directory row and one user."""
    row = id_alloc(m.row_free, m.g, G_ROW_TOP, G_ROW_HWM)
    m.pmd[row, :] = -1
    m.ovc[row, :] = -1
    m.ovn[row, :] = 0
    if m.g[G_POLICY] == POLICY_ODF:
        m.odfg[row, :] = -1
    m.mm_row[mm] = row
    m.mm_users[mm] = 1
    m.mm_tables[mm] = 0
    m.mm_ptes[mm, :] = 0
    m.mm_rss[mm, :] = 0
    m.vma[mm, :] = 0


@njit(cache=True)
def table_for(m, mm, row, k):
    """The PTE table of mm covering range k, allocated on first use
    (__pte_alloc); -1 if there is no page for it."""
    t = m.pmd[row, k]
    if t < 0:
        if not pte_charge(m):
            return -1
        t = table_alloc(m)
        m.pmd[row, k] = t
        m.mm_tables[mm] += 1
    return t


@njit(cache=True)
def set_pte(m, mm, r, t, slot, e):
    """Install e in an empty slot of an unshared table."""
    m.pt[t, slot] = e
    m.tab_count[t] += 1
    count_ptes(m, mm, r, 1, pte_page(e))


@njit(cache=True)
def zap_table(m, mm, row, k, anon):
    """Remove mm's PTEs in range k and its use of the table (zap_pte_range + free_pgtables)."""
    t = m.pmd[row, k]
    for i in range(ov_len(m, row, k)):
        slot, j = ov_at(m, row, k, i)
        e = m.ov_val[j]
        if e != 0:
            m.tab_ovr[t, slot] -= 1
            pte_drop(m, e, anon)
    ov_drop(m, row, k)
    if not anon:
        for slot in range(PTRS_PER_TABLE):     # a shared region's table: its frames are counted
            e = m.pt[t, slot]
            if e != 0:
                pte_drop(m, e, anon)           # anon is False here
        m.tab_ref[t] = 0
        table_free(m, t)
    else:
        table_put(m, t)
    m.pmd[row, k] = -1
    m.mm_tables[mm] -= 1
    if odf_leave(m, row, k):
        pte_uncharge(m)


@njit(cache=True)
def zap_region(m, mm, r):
    """Remove every PTE and table of region r from mm."""
    row = m.mm_row[mm]
    anon = m.reg_shared[r] == 0
    for k in range(m.reg_pmd0[r], m.reg_pmd0[r] + region_tables(m, r)):
        if m.pmd[row, k] >= 0:
            zap_table(m, mm, row, k, anon)
    m.mm_ptes[mm, r] = 0
    m.mm_rss[mm, r] = 0


@njit(cache=True)
def region_put(m, r):
    """One address space fewer maps r; the last one frees a shared region's page cache."""
    m.reg_maps[r] -= 1
    if m.reg_maps[r] == 0 and m.reg_shared[r] != 0:
        base = m.reg_shm0[r]
        for k in range(base, base + m.reg_npages[r]):
            f = m.shm_frame[k]
            if f >= 0:
                if m.frame[f, F_PINS] == 0:
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
def pte_weight(m, e):
    """(rss, pss, uss) one PTE contributes to its address space."""
    if e == 0:
        return 0, 0.0, 0
    if pte_is_inline(e):
        return 1, 1.0, 1
    f = pte_frame(e)
    if f == 0:
        return 0, 0.0, 0
    n = frame_mapcount(m, f)
    return 1, 1.0 / n, 1 if n == 1 else 0


@njit(cache=True)
def table_weights(m, t):
    """smaps of table t's own entries, summed once per G_EPOCH (a table a
    thousand address spaces share is added up once, not a thousand times),
    and each entry's pss share kept in tab_w for the users that override it."""
    if m.tab_epoch[t] == m.g[G_EPOCH]:
        return
    rss = 0
    uss = 0
    pss = 0.0
    w = m.tab_w[t]
    w[:] = -1.0
    if m.tab_count[t] > 0:
        for slot in range(PTRS_PER_TABLE):
            a, p, u = pte_weight(m, m.pt[t, slot])
            if a != 0:
                w[slot] = p
            rss += a
            pss += p
            uss += u
    m.tab_rss[t], m.tab_uss[t], m.tab_pss[t] = rss, uss, pss
    m.tab_epoch[t] = m.g[G_EPOCH]


@njit(cache=True, inline="always")
def directory_of(m, mm):
    """mm's directory row and its tables, overlay offsets, classes and counts,
    for loops that hold them in locals (each m.field read costs a reference count)."""
    row = m.mm_row[mm]
    return row, m.pmd[row], m.ovc[row], m.ovl[row], m.ovn[row]


@njit(cache=True, inline="always")
def overlay_weights(m, key, val, tab_w, t, off, n, dense):
    """(rss, pss, uss) an overlay (n positions at off) changes its table t's
    by: each of its PTEs replaces the table's at its slot, whose pss share is
    tab_w[t, slot] (-1: no page). The loop is branch-free (a dense overlay's
    empty slots come at random: a branch on them would mostly be mispredicted)
    and calls nothing; PTEs with a frame id, rare, are weighed in a second one."""
    replaced = unique = inline = framed = 0
    gone = 0.0
    base = np.uint64(off)                   # unsigned indices: no wraparound checks
    for i in range(n):
        e = val[base + np.uint64(i)]
        p = tab_w[t, i if dense else np.int64(key[base + np.uint64(i)])]
        has = (e != 0) & (p >= 0.0)
        replaced += has
        unique += has & (p == 1.0)
        gone += p * has
        mine = (e & PTE_I) != 0
        inline += mine
        framed += (e != 0) & (not mine)
    rss = uss = 0
    own = 0.0
    for i in range(n if framed > 0 else 0):
        e = val[off + i]
        if e != 0 and (e & PTE_I) == 0:
            b, q, v = pte_weight(m, e)
            rss += b
            own += q
            uss += v
    return rss + inline - replaced, (inline - gone) + own, uss + inline - unique


@njit(cache=True)
def mm_smaps(m, mm):
    """(rss, pss, uss, anon huge pages) of mm, as smaps_rollup would report
    them. Callers bump G_EPOCH once before a batch of these."""
    row, pmd_row, ovc_row, ovl_row, ovn_row = directory_of(m, mm)
    tab_w = m.tab_w
    tab_epoch = m.tab_epoch
    tab_rss = m.tab_rss
    tab_pss = m.tab_pss
    tab_uss = m.tab_uss
    tab_huge = m.tab_huge
    epoch = m.g[G_EPOCH]
    ov_key = m.ov_key
    ov_val = m.ov_val
    rss = 0
    uss = 0
    huge = 0
    pss = 0.0
    for r in range(m.vma.shape[1]):
        if (m.vma[mm, r] & VM_MAPPED) == 0:
            continue
        for k in range(m.reg_pmd0[r], m.reg_pmd0[r] + region_tables(m, r)):
            t = pmd_row[k]
            if t < 0:
                continue
            if tab_huge[t] != 0 and pte_frame(m.pt[t, 0]) != 0:
                huge += 1
            if tab_epoch[t] != epoch:
                table_weights(m, t)
            rss += tab_rss[t]
            pss += tab_pss[t]
            uss += tab_uss[t]
            c = ovc_row[k]
            if c < 0:
                continue
            dense = c == OV_DENSE
            a, p, u = overlay_weights(m, ov_key, ov_val, tab_w, t, ovl_row[k],
                                      PTRS_PER_TABLE if dense else ovn_row[k], dense)
            rss += a
            pss += p
            uss += u
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


@njit(cache=True)
def mm_tags(m, mm, r, out):
    """Value tag of every page of region r in mm (0: never written, or absent)."""
    row = m.mm_row[mm]
    for p in range(m.reg_npages[r]):
        k = m.reg_pmd0[r] + (p >> TABLE_SHIFT)
        t = m.pmd[row, k]
        if t >= 0:
            out[p] = pte_tag_of(m, pte_peek(m, row, k, t, p & (PTRS_PER_TABLE - 1)))


# --- process life ------------------------------------------------------------

@njit(cache=True)
def proc_end(m, pid, state, reason):
    """exit, SIGSEGV or OOM: freeze pid's values, wake a vfork parent, release
    the mm. (Callers pass np.int8 values, not literals: a literal argument
    makes Numba compile a function once per value.)"""
    m.g[G_EPOCH] += 1
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
                rss = mm_rss_total(m, m.proc_mm[q]) + m.mm_tables[m.proc_mm[q]]   # oom_badness
                if rss > best:
                    best = rss
                    victim = q
    mm = m.proc_mm[victim]
    for q in range(1, m.proc_state.shape[0]):
        s = m.proc_state[q]
        if (s == P_RUNNING or s == P_SUSPENDED) and m.proc_mm[q] == mm:
            proc_end(m, q, np.int8(P_KILLED), np.int8(R_OOM))
    return m.proc_state[pid] == P_RUNNING


# --- the fault path -----------------------------------------------------------
# Each handler returns FAULT_OK, or FAULT_OOM when it needed a frame and found
# none; it then changed nothing, so handle_mm_fault can run the OOM killer and
# take the fault again from the start, as the kernel does after
# pagefault_out_of_memory().
FAULT_OK, FAULT_OOM = 0, 1


@njit(cache=True)
def map_cached_page(m, mm, r, t, slot, f):
    m.frame[f, F_MAP] += 1
    writable = (m.vma[mm, r] & VM_WRITE) != 0
    set_pte(m, mm, r, t, slot, pte_make(f, PTE_W if writable else 0))


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
def do_shared_fault(m, pid, mm, r, t, slot, page, write):
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


NO_ENTRY = np.int64(-1)      # "no overlay entry" as a typed value, not a literal (see proc_end)


@njit(cache=True)
def do_anonymous_page(m, pid, mm, r, row, k, t, slot, write, tag):
    """First touch of a private page: a read maps the zero page, a write a new
    page holding tag (when > 0)."""
    if not write and m.g[G_ZERO_PAGE] != 0:
        pte_write(m, row, k, t, slot, NO_ENTRY, pte_make(0, 0))
        count_ptes(m, mm, r, 1, 0)
        count_event(m, pid, C_MINOR_FAULTS)
        return FAULT_OK
    if not frame_charge(m):
        return FAULT_OOM
    m.vma[mm, r] |= VM_ANON_VMA
    pte_write(m, row, k, t, slot, NO_ENTRY, pte_inline(max(tag, 0), PTE_W | PTE_E))
    count_ptes(m, mm, r, 1, 1)
    count_event(m, pid, C_MINOR_FAULTS)
    count_event(m, pid, C_ZERO_FILLS)
    return FAULT_OK


@njit(cache=True)
def folio_pinned(m, f):
    """folio_maybe_dma_pinned: a pin on the page, or on any page of its huge folio."""
    fo = m.frame[f, F_FOLIO]
    return m.frame[f, F_PINS] > 0 or (fo >= 0 and m.folio_pins[fo] > 0)


@njit(cache=True)
def can_reuse_anon_page(m, row, k, t, f):
    """wp_can_reuse_anon_folio for a page that is not AnonExclusive. A small
    page: nobody else maps or pins it. A subpage of a huge folio: the folio is
    mapped by this address space only (all its mappings are in its 2 MiB
    range k, in table t), more than once, and nothing pins it."""
    fo = m.frame[f, F_FOLIO]
    if fo < 0:
        return m.frame[f, F_PINS] == 0 and frame_mapcount(m, f) == 1
    if m.folio_pins[fo] > 0:
        return False
    total = 0
    for s in range(PTRS_PER_TABLE):
        g = m.folio_frames[fo, s]
        if m.frame[g, F_FOLIO] == fo:
            total += frame_mapcount(m, g)
    mine = 0
    for s in range(PTRS_PER_TABLE):
        g = pte_id(pte_peek(m, row, k, t, s))
        if g > 0 and m.frame[g, F_FOLIO] == fo:
            mine += 1
    return total > 1 and mine == total


@njit(cache=True)
def do_wp_page(m, pid, mm, r, row, k, t, slot, oi, tag):
    """Write to a present, write-protected private page: reuse it or copy it;
    the page then holds tag (when > 0)."""
    e = m.ov_val[oi] if oi >= 0 else m.pt[t, slot]
    f = -1 if pte_is_inline(e) else pte_frame(e)
    # The entry of a table others use too maps a frame homed right there: while
    # another user maps it, it is shared, and the frame need not be looked at.
    shared = oi < 0 and f > 0 and m.tab_ref[t] - m.tab_ovr[t, slot] > 1
    if not shared and (f < 0 or (e & PTE_E) != 0 or (f != 0 and can_reuse_anon_page(m, row, k, t, f))):
        oi = pte_write(m, row, k, t, slot, oi, e | PTE_W | PTE_E)      # wp_page_reuse
        if tag > 0:
            store_tag(m, row, k, slot, tag)
        count_event(m, pid, C_MINOR_FAULTS)
        count_event(m, pid, C_COW_REUSES)
        return FAULT_OK
    if not frame_charge(m):                                   # wp_page_copy
        return FAULT_OOM
    m.vma[mm, r] |= VM_ANON_VMA
    data = tag if tag > 0 else (m.frame[f, F_TAG] if f != 0 else 0)
    pte_write(m, row, k, t, slot, oi, pte_inline(data, PTE_W | PTE_E))
    count_event(m, pid, C_MINOR_FAULTS)
    if f == 0:
        count_ptes(m, mm, r, 0, 1)                 # the zero page was not in RSS
        count_event(m, pid, C_ZERO_FILLS)
    else:
        count_event(m, pid, C_COW_COPIES)
    return FAULT_OK


# --- transparent huge pages (mm/huge_memory.c) ------------------------------------
# A PMD-mapped huge page is a table flagged tab_huge whose 512 entries map its
# subpages: fork copies it as one PMD, and a split turns it into an ordinary
# PTE table without moving a frame. Huge tables are never shared, so their
# entries are the owner's PTEs and every mapping of a subpage is in F_MAP.
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
def map_new_huge_page(m, t, src, flags):
    """Fill huge table t with a new folio of 512 exclusive frames mapped with
    flags, copying the tags of table src's subpages (src < 0: zero-filled)."""
    fo = id_alloc(m.folio_free, m.g, G_FOLIO_TOP, G_FOLIO_HWM)
    m.folio_live[fo] = PTRS_PER_TABLE
    m.folio_pins[fo] = 0
    for slot in range(PTRS_PER_TABLE):
        f = frame_alloc(m)
        m.frame[f, F_MAP] = 1
        m.frame[f, F_FOLIO] = fo
        m.folio_frames[fo, slot] = f
        if src >= 0:
            m.frame[f, F_TAG] = m.frame[pte_frame(m.pt[src, slot]), F_TAG]
        m.pt[t, slot] = pte_make(f, flags)


@njit(cache=True)
def do_huge_pmd_anonymous_page(m, pid, mm, r, k, write):
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
        count_ptes(m, mm, r, PTRS_PER_TABLE, 0)
    else:
        map_new_huge_page(m, t, -1, PTE_W | PTE_E)
        count_ptes(m, mm, r, PTRS_PER_TABLE, PTRS_PER_TABLE)
        count_event(m, pid, C_THP_FAULT_ALLOC)
    m.tab_count[t] = PTRS_PER_TABLE
    count_event(m, pid, C_MINOR_FAULTS)
    return FAULT_OK


@njit(cache=True)
def split_huge_pmd(m, pid, t):
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
        if frame_mapcount(m, pte_frame(m.pt[t, slot])) != 1:
            return False
    return True


@njit(cache=True)
def huge_pinned(m, t):
    f = pte_frame(m.pt[t, 0])
    return f != 0 and folio_pinned(m, f)


@njit(cache=True)
def do_huge_pmd_wp_page(m, pid, mm, r, t):
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
        map_new_huge_page(m, t, -1, PTE_W | PTE_E)
        count_ptes(m, mm, r, 0, PTRS_PER_TABLE)
        count_event(m, pid, C_MINOR_FAULTS)
        count_event(m, pid, C_THP_FAULT_ALLOC)
        return FAULT_OK
    if not zero and m.g[G_THP_COW] == THP_COPY and huge_frames_free(m, 0):
        old = table_alloc(m)                       # scratch copy of the old subpages
        m.pt[old, :] = m.pt[t, :]
        map_new_huge_page(m, t, old, PTE_W | PTE_E)
        for slot in range(PTRS_PER_TABLE):
            frame_unmap(m, pte_frame(m.pt[old, slot]))
        table_free(m, old)
        count_event(m, pid, C_MINOR_FAULTS)
        count_event(m, pid, C_THP_COPIES)
        return FAULT_OK
    split_huge_pmd(m, pid, t)
    return FAULT_FALLBACK


@njit(cache=True)
def fault_once(m, pid, mm, r, page, write, tag):
    """One touch of page of region r by pid: FAULT_OK or FAULT_OOM. A write
    stores tag (> 0) in the page; tag -1 is a pin's write-intent fault."""
    row = m.mm_row[mm]
    k = m.reg_pmd0[r] + (page >> TABLE_SHIFT)
    slot = page & (PTRS_PER_TABLE - 1)
    t = m.pmd[row, k]
    oi = -1
    e = np.int32(0)
    if t >= 0:
        oi = ov_find(m, row, k, slot)
        e = m.ov_val[oi] if oi >= 0 else m.pt[t, slot]
    if not write:
        if e != 0:
            return FAULT_OK
    elif (e & PTE_W) != 0:
        if tag > 0:
            store_tag(m, row, k, slot, tag)
        return FAULT_OK
    if t < 0:
        if thp_eligible(m, mm, r, page):
            st = do_huge_pmd_anonymous_page(m, pid, mm, r, k, write)
            if st != FAULT_FALLBACK:
                if st == FAULT_OK and write and tag > 0:
                    store_tag(m, row, k, slot, tag)
                return st
        t = table_for(m, mm, row, k)
        if t < 0:
            return FAULT_OOM
    elif not table_unshare(m, pid, row, k):
        return FAULT_OOM
    if e == 0 and m.reg_shared[r] == 0:
        return do_anonymous_page(m, pid, mm, r, row, k, t, slot, write, tag)
    if e == 0:
        st = do_shared_fault(m, pid, mm, r, t, slot, page, write)
    else:                                           # shared PTEs are never write-protected
        if m.tab_huge[t] == 0 or do_huge_pmd_wp_page(m, pid, mm, r, t) == FAULT_FALLBACK:
            return do_wp_page(m, pid, mm, r, row, k, t, slot, oi, tag)
        st = FAULT_OK
    if st == FAULT_OK and write and tag > 0:
        store_tag(m, row, k, slot, tag)
    return st


@njit(cache=True)
def handle_mm_fault(m, pid, mm, r, page, write, tag):
    """One touch, with the OOM killer behind it. False if pid died on the way."""
    while fault_once(m, pid, mm, r, page, write, tag) == FAULT_OOM:
        if not oom_kill(m, pid):
            return False
    return True


@njit(cache=True, inline="always")
def must_copy(pt, tab_ovr, ref, t, slot):
    """The entry at slot of table t, which ref users share, maps a write-protected
    page another of them maps too: do_wp_page copies it, and
    touch_run and touch_marked do that copy themselves."""
    e = pt[t, slot]
    return e > (1 << PTE_SHIFT) and (e & (PTE_I | PTE_W)) == 0 and ref - tab_ovr[t, slot] > 1


@njit(cache=True)
def touch_run(m, pid, mm, r, pages, write, tag):
    """Touch every page in pages. False if pid died on the way.

    Most touches find a PTE that already allows them, and most faults that
    remain are a child's first write to a page its parent still maps: both
    are handled here on arrays held in locals (every m.field read costs a
    reference count), and the rest go to handle_mm_fault."""
    row, pmd_row, ovc_row, ovl_row, ovn_row = directory_of(m, mm)
    pt = m.pt
    frame = m.frame
    tab_ref = m.tab_ref
    tab_ovr = m.tab_ovr
    tab_maxovr = m.tab_maxovr
    g = m.g
    ctr = m.ctr
    totals = m.totals
    ov_key = m.ov_key
    ov_val = m.ov_val
    first = m.reg_pmd0[r]
    odf = g[G_POLICY] == POLICY_ODF
    odfg_row = m.odfg[row if odf else 0]
    quick_copy = write and tag > 0
    for page in pages:
        k = first + (page >> TABLE_SHIFT)
        slot = page & (PTRS_PER_TABLE - 1)
        t = pmd_row[k]
        if t >= 0:
            oi = ov_lookup(ovc_row, ovl_row, ovn_row, ov_key, ov_val, k, slot)
            if oi >= 0:
                e = ov_val[oi]
                if not write:
                    continue
                if (e & PTE_W) != 0:
                    if (e & PTE_I) != 0:
                        ov_val[oi] = pte_with_tag(e, tag)
                    else:
                        frame[pte_frame(e), F_TAG] = tag
                    continue
            else:
                e = pt[t, slot]
                if write:
                    if (e & PTE_W) != 0:
                        if (e & PTE_I) != 0:
                            pt[t, slot] = pte_with_tag(e, tag)
                        else:
                            frame[pte_frame(e), F_TAG] = tag
                        continue
                elif e != 0:
                    continue
                # do_wp_page's copy of a page another user of the table maps too (under odf
                # once the simulated kernel has copied the table, if it still shares it)
                if (quick_copy and must_copy(pt, tab_ovr, tab_ref[t], t, slot)
                        and (not odf or odfg_row[k] < 0 or table_unshare(m, pid, row, k))
                        and g[G_FRAMES_USED] < g[G_FRAME_MAX] - 1):
                    frames_taken(g, 1)
                    c = ovc_row[k]
                    n = ovn_row[k]
                    if c >= 0 and (c == OV_DENSE or n < ov_cap(c)):
                        ov_put(ov_key, ov_val, ovl_row[k], c, n, slot, pte_inline(tag, PTE_W | PTE_E))
                        ovn_row[k] = n + 1
                    else:
                        ov_add(m, row, k, slot, pte_inline(tag, PTE_W | PTE_E))
                        ov_key = m.ov_key
                        ov_val = m.ov_val
                    o = tab_ovr[t, slot] + 1
                    tab_ovr[t, slot] = o
                    if o > tab_maxovr[t]:
                        tab_maxovr[t] = o
                    count_events(ctr, totals, pid, C_MINOR_FAULTS, 1)
                    count_events(ctr, totals, pid, C_COW_COPIES, 1)
                    continue
        if not handle_mm_fault(m, pid, mm, r, page, write, tag):
            return False
        ov_key = m.ov_key                  # the fault may have grown the pool
        ov_val = m.ov_val
    return True


# --- one op's touches: each page once ----------------------------------------------
# A read or write op is one process touching pages while nothing else runs,
# and every write of an op stores the op's one tag: once the first touch of a
# page has made its PTE allow the touch, touching the page again changes
# nothing. So touch_pages first marks the pages an op touches (a byte per page
# in m.seen, a byte per 2 MiB range in m.seen_ranges), then handles each marked
# page once, in address order, a range at a time (touch_marked): the faults
# that dominate forked workloads a whole range in one pass, the rest by
# touch_run. Handling first touches in another order than the op's is the
# same run as long as no fault can fail (which process the OOM killer picks
# depends on what was faulted before) and no fault maps more than its own page
# (fault-around on shared mappings, huge pages): ops where either could
# happen touch their pages one at a time, in the op's order.

@njit(cache=True, inline="always")
def touch_chunk(kind, seed, a, b, n, off, i0, size, pool, ztab, table, buf):
    """Pages of touches i0 .. i0+size-1 of an op's page set (see touch_pages);
    buf holds 2 * TOUCH_CHUNK (the pages, and _pattern_fill's scratch)."""
    if kind < 0:
        return pool[off + i0: off + i0 + size]
    chunk = buf[:size]
    _pattern_fill(kind, seed, a, b, n, off + i0, chunk, ztab, table, buf[TOUCH_CHUNK:])
    return chunk


@njit(cache=True)
def mark_touched(seen, seen_ranges, pages):
    """Mark pages and their ranges (bytes, not bits: two stores a page, no
    load, no branch)."""
    for p in pages:
        u = np.uint64(p)                  # an unsigned index: no wraparound check
        seen[u] = 1
        seen_ranges[u >> np.uint64(TABLE_SHIFT)] = 1


RANGE_WORDS = PTRS_PER_TABLE // 8     # a range's marks read as uint64 words, 8 pages a word


@njit(cache=True, inline="always")
def next_mark(x):
    """Slot offset (0..7) of the lowest marked byte of the non-zero word x."""
    return np.int64(trailing_zeros(x)) >> 3


@njit(cache=True)
def fill_range(pt, t, words, e):
    """Install e at every slot of table t marked in words (a range's marks),
    clearing the marks; returns how many."""
    q = 0
    for w in range(RANGE_WORDS):
        x = words[w]
        words[w] = 0
        while x != 0:
            pt[t, 8 * w + next_mark(x)] = e
            q += 1
            x &= x - np.uint64(1)
    return q


@njit(cache=True, inline="always")
def marks_in(words):
    """Pages marked in a range's words (a marked byte is 1, so a word's byte sum counts them)."""
    q = 0
    for w in range(RANGE_WORDS):
        q += np.int64((words[w] * np.uint64(0x0101010101010101)) >> np.uint64(56))
    return q


@njit(cache=True)
def copy_range(pt, tab_ovr, ref, t, words, key, val, off, dense, e):
    """wp_page_copy for every slot marked in words whose entry in table t (ref
    users) must be copied: e goes to the new overlay chunk at off (dense, or
    sorted slots), the slot gains an override and its mark is cleared; the
    other marks stay. Returns (copies, the highest override count)."""
    q = 0
    top = 0
    for w in range(RANGE_WORDS):
        x = words[w]
        while x != 0:
            low = x & (~x + np.uint64(1))
            slot = 8 * w + next_mark(x)
            x ^= low
            if not must_copy(pt, tab_ovr, ref, t, slot):
                continue
            words[w] ^= low
            if dense:
                val[off + slot] = e
            else:
                key[off + q] = slot
                val[off + q] = e
            q += 1
            o = tab_ovr[t, slot] + 1
            tab_ovr[t, slot] = o
            top = max(top, o)
    return q, top


@njit(cache=True)
def touch_marked(m, pid, mm, r, write, tag, jlo, jhi):
    """Touch each page marked in the region's ranges jlo .. jhi once, in
    address order, clearing the marks. False if pid died on the way.

    First writes in a range without a table (do_anonymous_page) and in a
    table others share where mm has no PTE of its own yet (wp_page_copy of
    pages another user maps) are done here, a range at a time, on arrays held
    in locals; the rest go to touch_run."""
    seen_ranges = m.seen_ranges
    words = m.seen.view(np.uint64)
    row, pmd_row, ovc_row, ovl_row, ovn_row = directory_of(m, mm)
    pt = m.pt
    tab_ovr = m.tab_ovr
    tab_ref = m.tab_ref
    tab_count = m.tab_count
    tab_maxovr = m.tab_maxovr
    g = m.g
    first = m.reg_pmd0[r]
    batch = write and tag > 0
    e = pte_inline(max(tag, 0), PTE_W | PTE_E)
    zero_fills = copies = 0
    todo = np.empty(TOUCH_CHUNK, dtype=np.int64)
    nt = 0
    alive = True
    for j in range(jlo, jhi + 1):
        if seen_ranges[j] == 0:
            continue
        seen_ranges[j] = 0
        marks = words[j * RANGE_WORDS: (j + 1) * RANGE_WORDS]
        k = first + j
        t = pmd_row[k]
        if not (alive and batch):
            pass
        elif t < 0:
            t = table_for(m, mm, row, k)
            q = fill_range(pt, t, marks, e)
            tab_count[t] += q
            zero_fills += q
            frames_taken(g, q)
        elif tab_ref[t] > 1 and ovc_row[k] < 0:
            n = marks_in(marks)
            c = 0
            while c < OV_DENSE and ov_cap(c) < n:
                c += 1
            off = ov_alloc(m, c)
            q, top = copy_range(pt, tab_ovr, tab_ref[t], t, marks, m.ov_key, m.ov_val, off, c == OV_DENSE, e)
            if q == 0:
                ov_release(m, c, off)
            else:
                table_unshare(m, pid, row, k)
                ovl_row[k] = off
                ovc_row[k] = c
                ovn_row[k] = q
                tab_maxovr[t] = max(tab_maxovr[t], top)
                copies += q
                frames_taken(g, q)
        for w in range(RANGE_WORDS):
            x = marks[w]
            if x == 0:
                continue
            marks[w] = 0
            while alive and x != 0:
                todo[nt] = (j * RANGE_WORDS + w) * 8 + next_mark(x)
                nt += 1
                x &= x - np.uint64(1)
        if alive and nt > TOUCH_CHUNK - PTRS_PER_TABLE:
            alive = touch_run(m, pid, mm, r, todo[:nt], write, tag)
            nt = 0
    if zero_fills + copies > 0:           # (room was made sure of: nothing here can fail)
        count_ptes(m, mm, r, zero_fills, zero_fills)
        m.vma[mm, r] |= VM_ANON_VMA
        ctr = m.ctr
        totals = m.totals
        count_events(ctr, totals, pid, C_MINOR_FAULTS, zero_fills + copies)
        count_events(ctr, totals, pid, C_ZERO_FILLS, zero_fills)
        count_events(ctr, totals, pid, C_COW_COPIES, copies)
    if alive and nt > 0:
        alive = touch_run(m, pid, mm, r, todo[:nt], write, tag)
    return alive


@njit(cache=True)
def marked_pages(m, jlo, jhi):
    """Pages marked in ranges jlo .. jhi."""
    words = m.seen.view(np.uint64)
    seen_ranges = m.seen_ranges
    n = 0
    for j in range(jlo, jhi + 1):
        if seen_ranges[j] != 0:
            n += marks_in(words[j * RANGE_WORDS: (j + 1) * RANGE_WORDS])
    return n


@njit(cache=True)
def huge_mapped(m, mm, r, jlo, jhi):
    """mm maps a huge page in one of the marked ranges jlo .. jhi of region r."""
    pmd_row = m.pmd[m.mm_row[mm]]
    seen_ranges = m.seen_ranges
    tab_huge = m.tab_huge
    first = m.reg_pmd0[r]
    for j in range(jlo, jhi + 1):
        if seen_ranges[j] != 0:
            t = pmd_row[first + j]
            if t >= 0 and tab_huge[t] != 0:
                return True
    return False


@njit(cache=True)
def touch_pages(m, pid, r, write, tag, pset, a, b, pool, ztab):
    """Run one read/write op over a page set pset = (kind, count, seed, off,
    table): pool[off:off+count] when kind < 0, else touches off .. off+count-1
    of a generated pattern, TOUCH_CHUNK pages at a time. Marks the pages and
    touches each once (touch_marked), or, where the order of faults could
    matter (see above), touches them in the op's order."""
    kind, count, seed, off, table = pset[0], pset[1], pset[2], pset[3], pset[4]
    mm = m.proc_mm[pid]
    if count == 0:
        return
    flags = m.vma[mm, r]
    if (flags & VM_MAPPED) == 0 or (flags & VM_READ) == 0 or (write and (flags & VM_WRITE) == 0):
        proc_end(m, pid, np.int8(P_KILLED), np.int8(R_SIGSEGV))
        return
    n = m.reg_npages[r]
    buf = np.empty(2 * TOUCH_CHUNK, dtype=np.int64)
    if m.reg_shared[r] == 0 and (flags & VM_HUGEPAGE) == 0 and m.seen.shape[0] >= n:
        seen = m.seen
        seen_ranges = m.seen_ranges
        lo, hi = n, -1
        for i0 in range(0, count, TOUCH_CHUNK):
            chunk = touch_chunk(kind, seed, a, b, n, off, i0, min(TOUCH_CHUNK, count - i0), pool, ztab, table, buf)
            mark_touched(seen, seen_ranges, chunk)
            lo = min(lo, chunk.min())
            hi = max(hi, chunk.max())
        jlo, jhi = lo >> TABLE_SHIFT, hi >> TABLE_SHIFT
        # A page and a table a page at most, and no huge page (left by MADV_NOHUGEPAGE) whose
        # fault copies 2 MiB or splits it by what is free then: no fault's outcome depends on order.
        room = m.g[G_FRAME_MAX] - m.g[G_FRAMES_USED]
        if (2 * count < room or 2 * marked_pages(m, jlo, jhi) < room) and not huge_mapped(m, mm, r, jlo, jhi):
            touch_marked(m, pid, mm, r, write, tag, jlo, jhi)
            return
        seen[jlo * PTRS_PER_TABLE: (jhi + 1) * PTRS_PER_TABLE] = 0      # a fault might fail: in order
        seen_ranges[jlo: jhi + 1] = 0
    for i0 in range(0, count, TOUCH_CHUNK):
        chunk = touch_chunk(kind, seed, a, b, n, off, i0, min(TOUCH_CHUNK, count - i0), pool, ztab, table, buf)
        if not touch_run(m, pid, mm, r, chunk, write, tag):
            return


# --- pins (pin_user_pages with FOLL_WRITE | FOLL_LONGTERM) ---------------------------

@njit(cache=True)
def pin_pages(m, pid, r, pages):
    """Pin each page for DMA: fault it in writable and exclusive, as GUP does
    (those faults are the task's minor faults too), then hold a pin on its frame,
    giving an inline page a frame id. A page the process cannot write pins
    nothing (the kernel answers EFAULT)."""
    mm = m.proc_mm[pid]
    flags = m.vma[mm, r]
    if (flags & VM_MAPPED) == 0 or (flags & VM_WRITE) == 0:
        return
    write = (flags & VM_WRITE) != 0      # True; a run-time value, as touch_run passes: literal
    for page in pages:                   # arguments would compile the fault path a second time
        if not handle_mm_fault(m, pid, mm, r, page, write, np.int64(-1)):
            return
        row = m.mm_row[mm]
        k = m.reg_pmd0[r] + (page >> TABLE_SHIFT)
        slot = page & (PTRS_PER_TABLE - 1)
        t = m.pmd[row, k]
        oi = ov_find(m, row, k, slot)
        e = m.ov_val[oi] if oi >= 0 else m.pt[t, slot]
        if pte_is_inline(e):
            e = pte_give_id(m, t, slot, oi, e)
        f = pte_frame(e)
        m.frame[f, F_PINS] += 1
        if m.frame[f, F_FOLIO] >= 0:
            m.folio_pins[m.frame[f, F_FOLIO]] += 1
        i = m.g[G_PINS]
        m.pin_pid[i], m.pin_region[i], m.pin_page[i], m.pin_frame[i] = pid, r, page, f
        m.g[G_PINS] = i + 1


@njit(cache=True)
def pin_release(m, i):
    """Drop pin record i; a frame neither mapped, cached nor pinned is freed."""
    f = m.pin_frame[i]
    m.pin_pid[i] = 0
    m.frame[f, F_PINS] -= 1
    if m.frame[f, F_FOLIO] >= 0:
        m.folio_pins[m.frame[f, F_FOLIO]] -= 1
    if m.frame[f, F_PINS] > 0 or frame_mapcount(m, f) > 0:
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
def table_pinned_pages(m, row, k, t):
    """Pages of range k that mm (directory row) maps and something pins."""
    n = 0
    for slot in range(PTRS_PER_TABLE):
        f = pte_id(pte_peek(m, row, k, t, slot))
        if f > 0 and folio_pinned(m, f):
            n += 1
    return n


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
        if eager:
            need += m.mm_rss[mm, r]
        for k in range(m.reg_pmd0[r], m.reg_pmd0[r] + region_tables(m, r)):
            t = m.pmd[row, k]
            if t < 0:
                continue
            pinned = 0
            if m.g[G_PINS] > 0:
                pinned = table_pinned_pages(m, row, k, t)
            if not eager:
                need += pinned
            if not odf or eager or m.tab_huge[t] != 0 or pinned > 0:
                need += 1
    return need


@njit(cache=True)
def copy_huge_pmd(m, child, crow, k, t, eager, writable):
    """fork of a PMD-mapped huge page: one PMD entry and its deposited table;
    eager copies the 2 MiB, otherwise both sides map the folio read-only."""
    nt = table_alloc(m)
    m.pmd[crow, k] = nt
    pte_charge(m)                                # fork_frames_needed checked
    m.tab_huge[nt] = 1
    if eager and pte_frame(m.pt[t, 0]) != 0:
        map_new_huge_page(m, nt, t, (PTE_W | PTE_E) if writable else PTE_E)
        count_events(m.ctr, m.totals, child, C_FORK_PAGES, PTRS_PER_TABLE)
    else:
        for slot in range(PTRS_PER_TABLE):
            e = m.pt[t, slot]
            f = pte_frame(e)
            if f != 0:
                e &= ~(PTE_W | PTE_E)
                m.pt[t, slot] = e
                m.frame[f, F_MAP] += 1
            m.pt[nt, slot] = e
    m.tab_count[nt] = PTRS_PER_TABLE
    count_event(m, child, C_FORK_PMDS)


@njit(cache=True)
def copy_pte_table(m, child, prow, crow, k, t, writable):
    """Eager copy_pte_range for one table: the child gets a table of its own
    and a copy of every present page. Returns the PTEs copied."""
    nt = table_alloc(m)
    m.pmd[crow, k] = nt
    ptes = 0
    for slot in range(PTRS_PER_TABLE):
        e = pte_peek(m, prow, k, t, slot)
        if e == 0:
            continue
        ptes += 1
        if pte_page(e) != 0:
            frame_charge(m)                      # fork_frames_needed checked
            e = pte_inline(pte_tag_of(m, e), (PTE_W | PTE_E) if writable else PTE_E)
            count_event(m, child, C_FORK_PAGES)
        m.pt[nt, slot] = e
    m.tab_count[nt] = ptes
    return ptes


@njit(cache=True)
def share_base(m, prow, k, t):
    """The parent's unshared table t is about to get a second user: write-protect
    its entries, give inline pages a frame id homed here, and move to the
    parent's overlay what must stay its own (a pinned page, which stays
    writable, and a page homed in another table)."""
    for slot in range(PTRS_PER_TABLE):
        e = m.pt[t, slot]
        if e == 0:
            continue
        here = home_of(t, slot)
        if pte_is_inline(e):
            m.pt[t, slot] = pte_give_id(m, t, slot, NO_ENTRY, e) & ~(PTE_W | PTE_E)
            continue
        f = pte_frame(e)
        if f == 0:
            continue
        h = m.frame[f, F_HOME]
        if folio_pinned(m, f) or (h >= 0 and h != here):
            m.pt[t, slot] = 0
            m.tab_count[t] -= 1
            if h == here:
                m.frame[f, F_HOME] = -1
                m.frame[f, F_MAP] += 1
            ov_add(m, prow, k, slot, e)
            m.tab_ovr[t, slot] = 1
            m.tab_maxovr[t] = max(m.tab_maxovr[t], 1)
            continue
        if h < 0:                                # counted in F_MAP until now (a split huge page)
            m.frame[f, F_MAP] -= 1
            m.frame[f, F_HOME] = here
        m.pt[t, slot] = e & ~(PTE_W | PTE_E)


@njit(cache=True)
def share_pte_table(m, child, prow, crow, k, writable):
    """copy_pte_range under cow and odf, by reference: the child uses the
    parent's table and a copy of the parent's overlay, both write-protected;
    a pinned page is copied for the child at once and stays writable in the
    parent (copy_present_page). Returns (PTEs the kernel copies, pinned pages)."""
    t = m.pmd[prow, k]
    if m.tab_ref[t] == 1 and m.tab_count[t] > 0:
        share_base(m, prow, k, t)
    ptes = m.tab_count[t]
    pinned = 0
    n = ov_len(m, prow, k)
    for i in range(n):
        slot, j = ov_at(m, prow, k, i)
        e = m.ov_val[j]
        if e == 0:
            continue
        if m.pt[t, slot] == 0:
            ptes += 1
        if pte_is_inline(e):
            e = pte_give_id(m, t, slot, j, e)
        f = pte_frame(e)
        if f != 0 and folio_pinned(m, f):
            pinned += 1
        else:
            m.ov_val[j] = e & ~(PTE_W | PTE_E)
    if n > 0:
        ov_clone(m, prow, crow, k)
        for i in range(n):
            slot, j = ov_at(m, crow, k, i)
            e = m.ov_val[j]
            if e == 0:
                continue
            f = pte_frame(e)
            if f != 0 and folio_pinned(m, f):
                frame_charge(m)                  # fork_frames_needed checked
                m.ov_val[j] = pte_inline(m.frame[f, F_TAG], (PTE_W | PTE_E) if writable else PTE_E)
                count_event(m, child, C_FORK_PAGES)
            elif f != 0:
                m.frame[f, F_MAP] += 1
            m.tab_ovr[t, slot] += 1
            m.tab_maxovr[t] = max(m.tab_maxovr[t], m.tab_ovr[t, slot])
    m.tab_ref[t] += 1
    m.pmd[crow, k] = t
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
    pmd_p = m.pmd[prow]
    pmd_c = m.pmd[crow]
    ovc_p = m.ovc[prow]
    tab_ref = m.tab_ref
    tab_huge = m.tab_huge
    tab_count = m.tab_count
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
        writable = (fl & VM_WRITE) != 0
        m.mm_ptes[cmm, r] = m.mm_ptes[pmm, r]
        m.mm_rss[cmm, r] = m.mm_rss[pmm, r]
        shared = 0          # tables the child just joins: already shared, no PTE of the parent's own
        shared_ptes = 0
        for k in range(m.reg_pmd0[r], m.reg_pmd0[r] + region_tables(m, r)):
            t = pmd_p[k]
            if t < 0:
                continue
            m.mm_tables[cmm] += 1
            if not eager and tab_ref[t] > 1 and ovc_p[k] < 0 and tab_huge[t] == 0:
                tab_ref[t] += 1
                pmd_c[k] = t
                shared += 1
                shared_ptes += tab_count[t]
                if odf:
                    odf_share(m, prow, crow, k)
                continue
            if m.tab_huge[t] != 0 and huge_pinned(m, t):
                split_huge_pmd(m, parent, t)         # copy_huge_pmd leaves pinned THPs to the PTE path
            if m.tab_huge[t] != 0:
                copy_huge_pmd(m, child, crow, k, t, eager, writable)
                continue
            if eager:
                ptes = copy_pte_table(m, child, prow, crow, k, t, writable)
                pinned = 1
            else:
                ptes, pinned = share_pte_table(m, child, prow, crow, k, writable)
            if odf and pinned == 0:
                odf_share(m, prow, crow, k)         # shared, not copied
                count_event(m, child, C_FORK_TABLES_SHARED)
            else:
                pte_charge(m)
                count_event(m, child, C_FORK_TABLES)
                count_events(m.ctr, m.totals, child, C_FORK_PTES, ptes)
        if odf:
            count_events(m.ctr, m.totals, child, C_FORK_TABLES_SHARED, shared)
        else:                                        # cow: each a table copy of the simulated kernel
            frames_taken(m.g, shared)                # their pages: fork_frames_needed checked
            m.g[G_PTE_FRAMES] += shared
            count_events(m.ctr, m.totals, child, C_FORK_TABLES, shared)
            count_events(m.ctr, m.totals, child, C_FORK_PTES, shared_ptes)


# --- mprotect / madvise ------------------------------------------------------------

@njit(cache=True, inline="always")
def pte_protect(e, prot, shared):
    """e under new protection prot: drop W, or restore it where no write fault
    is needed: on anon-exclusive private pages (can_change_pte_writable) and
    on every page of a shared region (shmem does no write tracking)."""
    if e == 0:
        return e
    if (prot & VM_WRITE) == 0:
        return e & ~PTE_W
    if shared or (e & PTE_E) != 0:
        return e | PTE_W
    return e


@njit(cache=True)
def change_protection(m, pid, mm, r, prot):
    """mprotect(): new VMA prot, applied to every PTE of mm in the region
    (a table others share holds no writable or exclusive PTE: nothing to do there)."""
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
        if not table_unshare(m, pid, row, k):
            count_event(m, pid, C_ENOMEM)            # no page for the table copy: mprotect stops here
            return
        if m.tab_ref[t] == 1:
            for slot in range(PTRS_PER_TABLE):
                m.pt[t, slot] = pte_protect(m.pt[t, slot], prot, shared)
        for i in range(ov_len(m, row, k)):
            slot, j = ov_at(m, row, k, i)
            m.ov_val[j] = pte_protect(m.ov_val[j], prot, shared)


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
def mm_overlay_slots(m, mm):
    """Overlay pool slots mm's overlays hold (what a fork of mm clones)."""
    n = 0
    row = m.mm_row[mm]
    for c in m.ovc[row]:
        if c >= 0:
            n += ov_cap(c)
    return n


@njit(cache=True)
def op_needs(m, op, ps):
    """Upper bounds on (frame ids, tables, rows, overlay slots) op may take,
    for growing arrays first. (An odf fork takes at most one share group per
    table too.) A touch adds at most one overlay entry, and the chunks one
    range's entries ever take add up to under 640 slots (at most 10 per entry)."""
    code = op[0]
    if code == READ or code == WRITE or code == PIN:
        r = op[2]
        count = ps[op[5], 1]
        n = min(count * PTRS_PER_TABLE, m.reg_npages[r])   # a huge page fault takes 512
        slots = min(10 * count + 1024, 640 * region_tables(m, r))
        return n, min(n, region_tables(m, r)) + 1, 0, slots
    if code == FORK:
        pmm = m.proc_mm[op[1]]
        if m.mm_row[pmm] < 0:
            return 0, 0, 1, 0
        # inline pages get frame ids when shared; the child clones the parent's overlays
        return mm_rss_total(m, pmm), m.mm_tables[pmm], 1, mm_overlay_slots(m, pmm)
    if code == SPAWN or code == EXEC:
        return 0, 0, 1, 0
    return 0, 0, 0, 0


@njit(cache=True)
def has_room(m, frames, tables, rows, slots):
    g = m.g
    frame_room = m.frame.shape[0] - g[G_FRAME_HWM] + g[G_FREE_TOP]
    if frames > frame_room and m.frame.shape[0] < g[G_FRAME_MAX]:
        return False
    if tables > m.pt.shape[0] - g[G_TAB_HWM] + g[G_TAB_TOP]:
        return False
    if tables > m.folio_live.shape[0] - g[G_FOLIO_HWM] + g[G_FOLIO_TOP]:
        return False
    if tables > m.group_ref.shape[0] - g[G_GROUP_HWM] + g[G_GROUP_TOP]:
        return False
    if slots > m.ov_val.shape[0] - g[G_OV_HWM]:
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
def step(m, op, ps, psf, pool, ztab):
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
        touch_pages(m, pid, r, code == WRITE, arg, ps[s], psf[s, 0], psf[s, 1], pool, ztab)
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
        proc_end(m, pid, np.int8(P_EXITED), np.int8(R_NONE))
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
def run(m, ops, ps, psf, pool, ztab, tl, start, stop):
    """Execute ops[start:stop]. Returns RUN_GROW, with g[G_RESUME] = the op to
    resume at, when an op might need more array room than there is."""
    for i in range(start, stop):
        fr, tb, rw, sl = op_needs(m, ops[i], ps)
        if not has_room(m, fr, tb, rw, sl):
            m.g[G_RESUME] = i
            return RUN_GROW
        step(m, ops[i], ps, psf, pool, ztab)
        sample(m, tl, i)
    m.g[G_RESUME] = stop
    return RUN_DONE


@njit(cache=True)
def snapshot_live(m):
    """Values of every process still running or suspended, as they stand at the end."""
    m.g[G_EPOCH] += 1
    for pid in range(1, m.proc_state.shape[0]):
        s = m.proc_state[pid]
        if s == P_RUNNING or s == P_SUSPENDED:
            snapshot(m, pid)


# --- the compilation cache ---------------------------------------------------------
# Numba keys a cached kernel by the file it is defined in, but the kernels here
# compile in code and constants of patterns.py and scenario.py too: after
# either changes, the cached kernels would still run the old code (a stale
# _pattern_fill reading a table of a new layout draws wrong pages, silently).
# So cache entries older than those files are dropped at import; the next call
# compiles afresh.
_COMPILED_IN = ("patterns.py", "scenario.py")


def drop_stale_cache(cache_dir: str, since: float) -> int:
    """Delete this module's cache entries (index and data files) in cache_dir
    whose index is older than `since` (a file time); returns how many files."""
    module = __name__.rsplit(".", 1)[-1] + "."
    names = [n for n in os.listdir(cache_dir) if n.startswith(module)]
    stale = {n[: -len(".nbi")] for n in names
             if n.endswith(".nbi") and os.path.getmtime(os.path.join(cache_dir, n)) < since}
    dropped = 0
    for name in names:           # an index is stem.nbi, its data files stem.N.nbc
        stem = name[: -len(".nbi")] if name.endswith(".nbi") else name.rsplit(".", 2)[0]
        if stem in stale:
            os.remove(os.path.join(cache_dir, name))
            dropped += 1
    return dropped


try:
    drop_stale_cache(run._cache._cache_path,
                     max(os.path.getmtime(os.path.join(os.path.dirname(__file__), f)) for f in _COMPILED_IN))
except (AttributeError, OSError):       # no cache (or not ours to tidy): nothing stale can load
    pass
