"""The engine's numbers: op codes, pattern kinds, bit layouts, counter and state indices.

Everything the jitted kernels and their Python callers must agree on is a
constant here, and nothing else is: the builder (scenario.py, patterns.py),
the compiler (simulator.py), the results (results.py) and the reference
simulator in tests/ import these names, so the engine compiles only its own
package's code. Counters are matched to result columns by name, through
cowbench/columns.py.
"""
from __future__ import annotations

import numpy as np

# --- operations ---------------------------------------------------------------------------------
# A scenario compiles to rows of int64: code, pid, region, arg, mm, page set (see simulator.Compiled).
SPAWN, FORK, VFORK, EXEC, EXIT, MMAP, MUNMAP, MPROTECT, MADVISE, READ, WRITE, PIN, UNPIN = range(13)
PHASE = 13      # a Scenario.concurrently() block: never reaches the kernels, simulate feeds them its pieces
OP_NAMES = ("spawn", "fork", "vfork", "exec", "exit", "mmap", "munmap", "mprotect", "madvise", "read", "write",
            "pin", "unpin", "concurrently")

# --- page-set patterns, generated inside the engine (draws.py) ---------------------------------
PAT_SEQUENTIAL, PAT_UNIFORM, PAT_ZIPF, PAT_HOTSET = 0, 1, 2, 3
PATTERN_NAMES = {PAT_SEQUENTIAL: "sequential", PAT_UNIFORM: "uniform", PAT_ZIPF: "zipf", PAT_HOTSET: "hotset"}

# --- page tables: x86-64, 512 PTEs a table, a table maps 2 MiB ----------------------------------
PTRS_PER_TABLE = 512
TABLE_SHIFT = 9
MAX_TABLES = 1 << 22          # table * 512 + slot (a frame's home, F_HOME) must fit in an int32
# A table's entries are kept in blocks of 32 (pgtable.py): a table costs a block
# for each 32 slots it has ever mapped a page in, not 2 KiB whatever it maps.
PTE_BLOCK_SHIFT = 5
PTES_PER_BLOCK = 1 << PTE_BLOCK_SHIFT
BLOCKS_PER_TABLE = PTRS_PER_TABLE >> PTE_BLOCK_SHIFT

# A PTE is an int32; 0 means absent. Otherwise (helpers in pte.py):
#   bit 0       W, writable
#   bit 1       E, anon-exclusive (PageAnonExclusive); in a shmem region, D instead:
#               the page was written through this PTE (a page-cache page is never
#               anon-exclusive, and only shmem keeps its dirtiness in the PTE: see FF_DIRTY)
#   bit 2       I, inline: an exclusive anonymous page without a frame id
#   bits 30..3  frame + 1, or for an inline page its value tag
PTE_W = np.int32(1)
PTE_E = np.int32(2)
PTE_I = np.int32(4)
PTE_D = PTE_E
PTE_FLAGS = np.int32(7)
PTE_SHIFT = 3
MAX_PTE_VALUE = (1 << 28) - 1    # frame + 1 and value tags must fit in bits 30..3

# --- VMA flags, one uint8 per (mm, region) ------------------------------------------------------
# VM_ANON_VMA: the region has an anon_vma, which the kernel creates at the first
# fault that allocates an anonymous page; fork copies no PTE of a private
# region without one (vma_needs_copy), and a wipeonfork child starts without.
# VM_ACCOUNT: the region's size is charged to the commit (overcommit accounting).
# VM_HUGEPAGE: faults may map 2 MiB transparent huge pages (mmap thp=True, MADV_HUGEPAGE).
VM_MAPPED, VM_READ, VM_WRITE, VM_DONTFORK, VM_WIPEONFORK, VM_ANON_VMA, VM_ACCOUNT, VM_HUGEPAGE = \
    1, 2, 4, 8, 16, 32, 64, 128
FAULT_AROUND_PAGES = 16     # fault_around_bytes = 64 KiB
PMD_FOLIO_PAGES = 512       # a 2 MiB page-cache folio: one read fault maps it whole (filemap_map_pmd)

# madvise advice as the kernels see it
ADV_DONTFORK, ADV_DOFORK, ADV_WIPEONFORK, ADV_KEEPONFORK, ADV_HUGEPAGE, ADV_NOHUGEPAGE = 0, 1, 2, 3, 4, 5

# --- processes ----------------------------------------------------------------------------------
P_UNBORN, P_RUNNING, P_SUSPENDED, P_EXITED, P_KILLED, P_FORK_FAILED = 0, 1, 2, 3, 4, 5
R_NONE, R_SIGSEGV, R_OOM = 0, 1, 2

# --- run-wide knobs -----------------------------------------------------------------------------
POLICY_EAGER, POLICY_COW, POLICY_ODF = 0, 1, 2
THP_SPLIT, THP_COPY = 0, 1
OOM_LARGEST, OOM_FAULTING = 0, 1
OVERCOMMIT_GUESS, OVERCOMMIT_ALWAYS, OVERCOMMIT_NEVER = 0, 1, 2

# --- counters -----------------------------------------------------------------------------------
# Per process, Machine.ctr[pid, C_*]; the events C_MINOR_FAULTS .. C_EXIT_FREED are
# also summed into the run totals, Machine.totals. cowbench/columns.py names
# each result column's counter; results.py checks the two agree at import.
(C_MINOR_FAULTS, C_ZERO_FILLS, C_COW_COPIES, C_COW_REUSES,
 C_FORK_PAGES, C_FORK_PTES, C_FORK_TABLES, C_FORK_TABLES_SHARED, C_FAULT_TABLES, C_FORK_PMDS,
 C_THP_FAULT_ALLOC, C_THP_COPIES, C_THP_SPLITS, C_ENOMEM, C_EXIT_PTES, C_EXIT_FREED, C_MAJOR_FAULTS,
 C_RSS, C_USS, C_PTE_PAGES, C_ANON_HUGE,
 C_ANON_PAGES, C_FILE_PAGES, C_SHMEM_PAGES,
 C_PRIVATE_CLEAN, C_PRIVATE_DIRTY, C_SHARED_CLEAN, C_SHARED_DIRTY) = range(28)
N_CTR = 28
N_TOTALS = 17     # C_MINOR_FAULTS .. C_MAJOR_FAULTS

# Timeline rows (Machine totals after each op): the run totals, then these.
T_FRAMES_USED, T_RUNNING, T_FORKS, T_PTE_FRAMES = N_TOTALS, N_TOTALS + 1, N_TOTALS + 2, N_TOTALS + 3
N_TL = N_TOTALS + 4

# --- a frame record, Machine.frame[f, F_*]: what one fault reads of a frame is in one cache line ---
F_MAP = 0      # PTEs mapping the frame, but for its home slot (see page_alloc.frame_mapcount)
F_PINS = 1     # DMA-style pins (FOLL_PIN) held on the frame
F_FOLIO = 2    # the huge folio the frame is a subpage of, -1 none
F_HOME = 3     # table * 512 + slot the frame is homed at, -1 none
F_TAG = 4      # value tag last written
F_FLAGS = 5    # FF_* bits
F_WIDTH = 8

# F_FLAGS bits. FF_CACHE: a page-cache page (of a file, or of a shared anonymous
# region's shmem object): the cache holds it, so no unmapping frees it, and a
# write through a private mapping copies it (it is never anonymous, never reused).
# FF_DIRTY: the page-cache folio is dirty (smaps' Dirty, for every mapper):
# written by a write fault through a MAP_SHARED mapping (for a file cached in
# large folios, the whole folio), or a shmem page unmapped from a PTE with D.
# A shmem page written without a fault (a read fault mapped it writable) is
# dirty for its writer only, by PTE_D. Anonymous pages are always dirty.
FF_CACHE, FF_DIRTY = 1, 2

# --- directory entries (pgtable.py): 0 is none ------------------------------------------------
# A directory row is one entry per 2 MiB range of every region, so a 128 TiB mapping
# has 64 Mi of them a row. Their "none" is 0 (table 0 and share group 0 are never
# handed out, overlay class 0 is no overlay): rows come from np.zeros, and the
# host gives memory only to the pages of a row that something was written to.
PMD_NONE = 0          # pmd: no PTE table
GROUP_NONE = 0        # odfg: in no on-demand-fork share group
OV_NONE = 0           # ovc: no overlay

# --- overlays (pgtable.py): size classes 1..6 hold up to 2, 4, ..., 64 sorted (slot, PTE) pairs ---
OV_SMALLEST = 1
OV_DENSE = 7          # all 512 PTEs, indexed by slot
OV_CLASSES = 8        # (G_OV_FREE + 0 unused)

# --- scalars, Machine.g[G_*] --------------------------------------------------------------------
(G_FRAME_MAX, G_FRAMES_USED, G_FRAMES_PEAK, G_FRAME_HWM, G_FREE_TOP,
 G_TAB_HWM, G_TAB_TOP, G_ROW_HWM, G_ROW_TOP, G_POLICY, G_OOM, G_ZERO_PAGE,
 G_RUNNING, G_RESUME, G_GROUP_HWM, G_GROUP_TOP, G_FORKS,
 G_OVERCOMMIT, G_COMMIT_LIMIT, G_COMMITTED, G_PINS, G_THP_COW, G_PTE_FRAMES,
 G_FOLIO_HWM, G_FOLIO_TOP, G_EPOCH, G_OV_HWM, G_BLK_HWM, G_BLK_TOP, G_OV_FREE) = range(30)
N_G = G_OV_FREE + OV_CLASSES      # G_OV_FREE + c: first free overlay chunk of class c, -1 none

# --- return codes -------------------------------------------------------------------------------
RUN_DONE, RUN_GROW = 0, 1                  # loop.run: finished, or stopped for more array room
FAULT_OK, FAULT_OOM, FAULT_FALLBACK = 0, 1, 2
# A fault handler returns FAULT_OK, or FAULT_OOM when it needed a frame and
# found none (it then changed nothing, so the fault can be taken again from the
# start after the OOM killer ran, as after pagefault_out_of_memory()); a huge
# page handler returns FAULT_FALLBACK when the 4 KiB path must go on.

TOUCH_CHUNK = 4096          # pages of an op drawn (or read from its page list) at a time
MARKS_PER_TOUCH = 64        # an op is marked (touch.py) if it touches a page per this many of its region
