"""Address spaces: mapping and unmapping regions, tearing an mm down, overcommit (mm/mmap.c, mm/util.c).

An address space (the kernel's mm) is a directory row (pgtable.py) plus its
VMA flags, one byte per (mm, region): regions are laid out by simulator.py,
each on its own 2 MiB ranges, and a mapping is a flag, not an address range
to search.
"""
from __future__ import annotations

from numba import njit

from .abi import (C_ENOMEM, C_EXIT_FREED, C_EXIT_PTES, F_FLAGS, F_PINS, G_COMMIT_LIMIT, G_COMMITTED, G_FRAME_MAX,
                  G_FRAMES_USED, G_OVERCOMMIT, G_POLICY, G_PTE_FRAMES, G_ROW_HWM, G_ROW_TOP, OVERCOMMIT_GUESS,
                  OVERCOMMIT_NEVER, OV_NONE, PMD_NONE, POLICY_ODF, PTRS_PER_TABLE, VM_ACCOUNT, VM_MAPPED, VM_WRITE)
from .machine import count_event, count_events, region_span
from .page_alloc import frame_release, id_alloc, id_release, pte_alloc_one, pte_drop, pte_free
from .pgtable import odf_leave, ov_at, ov_drop, ov_len, pt_get, pt_set, table_alloc, table_free, table_put
from .pte import pte_page
from .task_mmu import odf_shared_rss


@njit(cache=True)
def mm_init(m, mm):
    """Give mm an empty directory row and one user. A free row is empty already
    (exit_mmap zaps every range it used, and check_machine checks that it did):
    clearing it here would make the host back every page of it, 1 GiB a row
    for a 128 TiB mapping."""
    row = id_alloc(m.row_free, m.g, G_ROW_TOP, G_ROW_HWM)
    m.mm_row[mm] = row
    m.mm_users[mm] = 1
    m.mm_tables[mm] = 0
    m.mm_rss[mm, :] = 0
    m.vma[mm, :] = 0


@njit(cache=True, inline="always")
def count_rss(m, mm, r, pages):
    """mm maps `pages` more pages (other than the zero page) in region r."""
    m.mm_rss[mm, r] += pages


@njit(cache=True)
def mm_rss_total(m, mm):
    return m.mm_rss[mm].sum()


@njit(cache=True)
def pte_alloc(m, mm, row, k):
    """The PTE table of mm covering range k, allocated on first use
    (__pte_alloc); -1 if there is no page for it."""
    t = m.pmd[row, k]
    if t == PMD_NONE:
        if not pte_alloc_one(m):
            return -1
        t = table_alloc(m)
        m.pmd[row, k] = t
        m.mm_tables[mm] += 1
    return t


@njit(cache=True)
def set_pte(m, mm, r, t, slot, e):
    """Install e in an empty slot of an unshared table."""
    pt_set(m, t, slot, e)
    m.tab_count[t] += 1
    m.tab_ver[t] += 1
    count_rss(m, mm, r, pte_page(e))


# --- unmapping ---------------------------------------------------------------------------------

@njit(cache=True)
def zap_table(m, mm, row, k, anon):
    """Remove mm's PTEs in range k and its use of the table (zap_pte_range + free_pgtables)."""
    t = m.pmd[row, k]
    if m.ovc[row, k] != OV_NONE:
        m.tab_ver[t] += 1                      # its overrides go
    for i in range(ov_len(m, row, k)):
        slot, j = ov_at(m, row, k, i)
        e = m.ov_val[j]
        if e != 0:
            if pt_get(m, t, slot) != 0:
                m.tab_ovr[t, slot] -= 1
            pte_drop(m, e, anon)
    ov_drop(m, row, k)
    if not anon:
        for slot in range(PTRS_PER_TABLE):     # a shared region's table: its frames are counted
            e = pt_get(m, t, slot)
            if e != 0:
                pte_drop(m, e, anon)           # anon is False here
        m.tab_ref[t] = 0
        table_free(m, t)
    else:
        table_put(m, t)
    m.pmd[row, k] = PMD_NONE
    m.mm_tables[mm] -= 1
    if odf_leave(m, row, k):
        pte_free(m)


@njit(cache=True)
def zap_region(m, mm, r):
    """Remove every PTE and table of region r from mm. A range whose table
    others keep using, where mm has no PTE of its own and no slot dies as it
    leaves (table_put's O(1) case), costs a few loads here, on arrays held in
    locals: a fork server's child leaves thousands of its parent's tables.
    (Under odf zap_table's share-group bookkeeping is needed too.)"""
    row = m.mm_row[mm]
    anon = m.reg_shared[r] == 0
    quick = anon and m.g[G_POLICY] != POLICY_ODF
    pmd_row = m.pmd[row]
    ovc_row = m.ovc[row]
    tab_ref = m.tab_ref
    tab_maxovr = m.tab_maxovr
    tab_count = m.tab_count
    left = 0
    lo, hi = region_span(m, r)
    for k in range(lo, hi):
        t = pmd_row[k]
        if t == PMD_NONE:
            continue
        n = tab_ref[t] - 1
        if quick and ovc_row[k] == OV_NONE and n > 0 and (tab_maxovr[t] < n or tab_count[t] == 0):
            tab_ref[t] = n
            pmd_row[k] = PMD_NONE
            left += 1
        else:
            zap_table(m, mm, row, k, anon)
    m.mm_tables[mm] -= left
    pte_free(m, left)                  # the simulated kernel's copy of each table it left
    m.mm_rss[mm, r] = 0


@njit(cache=True)
def region_put(m, r):
    """One address space fewer maps r; the last one frees a shared anonymous
    region's page cache (its shmem object). A file's page cache stays: pages
    of a file outlive every mapping of it."""
    m.reg_maps[r] -= 1
    if m.reg_maps[r] == 0 and m.reg_shared[r] != 0 and m.reg_file[r] == 0:
        base = m.reg_shm0[r]
        for k in range(base, base + m.reg_npages[r]):
            f = m.shm_frame[k]
            if f >= 0:
                m.frame[f, F_FLAGS] = 0
                if m.frame[f, F_PINS] == 0:
                    frame_release(m, f)       # a pinned page outlives the page cache
                m.shm_frame[k] = -1
        vm_unacct(m, m.reg_npages[r])


@njit(cache=True)
def unmap_region(m, mm, r):
    """munmap(): r's PTEs and tables go, its commit charge and its mapping."""
    zap_region(m, mm, r)
    if (m.vma[mm, r] & VM_ACCOUNT) != 0:
        vm_unacct(m, m.reg_npages[r])
    m.vma[mm, r] = 0
    region_put(m, r)


@njit(cache=True)
def mmput(m, pid, mm):
    """pid drops its use of mm; the last user tears it down (exit_mmap). What
    that costs is counted to pid (its exit, death or exec): the PTEs mapping a
    page that zap_pte_range walks (all of them, but under odf those of tables
    still shared with another address space, which are dropped whole) and the
    pages freed."""
    m.mm_users[mm] -= 1
    if m.mm_users[mm] > 0:
        return
    g = m.g
    walked = mm_rss_total(m, mm)
    if g[G_POLICY] == POLICY_ODF:
        walked -= odf_shared_rss(m, mm)
    used, tables = g[G_FRAMES_USED], g[G_PTE_FRAMES]
    for r in range(m.vma.shape[1]):
        if (m.vma[mm, r] & VM_MAPPED) != 0:
            unmap_region(m, mm, r)
    id_release(m.row_free, g, G_ROW_TOP, m.mm_row[mm])
    m.mm_row[mm] = -1
    count_events(m.ctr, m.totals, pid, C_EXIT_PTES, walked)
    count_events(m.ctr, m.totals, pid, C_EXIT_FREED, (used - g[G_FRAMES_USED]) - (tables - g[G_PTE_FRAMES]))


# --- overcommit accounting (mm/util.c __vm_enough_memory) ----------------------------------------

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
    """mmap(): private writable and shared anonymous regions are charged to
    the commit (a MAP_SHARED file mapping is backed by its file: no charge)."""
    shared = m.reg_shared[r] != 0
    if (shared and m.reg_file[r] == 0) or (not shared and (flags & VM_WRITE) != 0):
        if not vm_enough_memory(m, m.reg_npages[r]):
            count_event(m, pid, C_ENOMEM)
            return
        if not shared:
            flags |= VM_ACCOUNT          # shmem charges the object instead, once
    m.vma[mm, r] = flags
    m.reg_maps[r] += 1
