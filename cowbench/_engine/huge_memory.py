"""Transparent huge pages (mm/huge_memory.c).

A PMD-mapped huge page is a table flagged tab_huge whose 512 entries map its
subpages: fork copies it as one PMD, and a split turns it into an ordinary
PTE table without moving a frame. Huge tables are never shared, so their
entries are the owner's PTEs and every mapping of a subpage is in F_MAP.
"""
from __future__ import annotations

from numba import njit

from .abi import (C_COW_REUSES, C_FORK_PAGES, C_FORK_PMDS, C_MINOR_FAULTS, C_THP_COPIES, C_THP_FAULT_ALLOC,
                  C_THP_SPLITS, F_FOLIO, F_MAP, F_TAG, FAULT_FALLBACK, FAULT_OK, FAULT_OOM, G_FOLIO_HWM,
                  G_FOLIO_TOP, G_THP_COW, G_ZERO_PAGE, PTE_E, PTE_W, PTRS_PER_TABLE, TABLE_SHIFT, THP_COPY,
                  VM_ANON_VMA, VM_HUGEPAGE)
from .machine import count_event, count_events
from .mmap import count_rss
from .page_alloc import (frame_alloc, frame_mapcount, frame_unmap, frames_free, folio_pinned, id_alloc,
                         pte_alloc_one)
from .pgtable import pt_get, pt_set, table_alloc, table_free
from .pte import pte_frame, pte_make


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
    return frames_free(m) >= PTRS_PER_TABLE + tables


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
            m.frame[f, F_TAG] = m.frame[pte_frame(pt_get(m, src, slot)), F_TAG]
        pt_set(m, t, slot, pte_make(f, flags))
    m.tab_ver[t] += 1


@njit(cache=True)
def do_huge_pmd_anonymous_page(m, pid, mm, r, k, write):
    """First touch of an empty 2 MiB range: a read maps the huge zero page,
    a write a new huge page; FAULT_FALLBACK when 512 frames are not free."""
    zero = not write and m.g[G_ZERO_PAGE] != 0
    if not zero and not huge_frames_free(m, 1):
        return FAULT_FALLBACK                      # thp_fault_fallback: 4 KiB pages instead
    if not pte_alloc_one(m):                       # pgtable_trans_huge_deposit
        return FAULT_OOM
    t = table_alloc(m)
    m.tab_huge[t] = 1
    m.mm_tables[mm] += 1
    m.pmd[m.mm_row[mm], k] = t
    m.vma[mm, r] |= VM_ANON_VMA                   # even for the huge zero page
    if zero:
        for slot in range(PTRS_PER_TABLE):
            pt_set(m, t, slot, pte_make(0, 0))
    else:
        map_new_huge_page(m, t, -1, PTE_W | PTE_E)
        count_rss(m, mm, r, PTRS_PER_TABLE)
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
    if (pt_get(m, t, 0) & PTE_E) != 0:
        return True
    if folio_pinned(m, pte_frame(pt_get(m, t, 0))):
        return False
    for slot in range(PTRS_PER_TABLE):
        if frame_mapcount(m, pte_frame(pt_get(m, t, slot))) != 1:
            return False
    return True


@njit(cache=True)
def huge_pinned(m, t):
    f = pte_frame(pt_get(m, t, 0))
    return f != 0 and folio_pinned(m, f)


@njit(cache=True)
def do_huge_pmd_wp_page(m, pid, mm, r, t):
    """Write to a write-protected huge page. The huge zero page is replaced by
    a new huge page (do_huge_zero_wp_pmd, Linux >= 6.12). A huge page is reused
    whole if exclusive; else under thp_cow="copy" all 2 MiB are copied, and
    under "split" (Linux >= 5.8) the PMD is split and FAULT_FALLBACK returned
    for the 4 KiB fault to go on. With no room for 512 frames: split."""
    zero = pte_frame(pt_get(m, t, 0)) == 0
    if not zero and huge_exclusive(m, t):
        for slot in range(PTRS_PER_TABLE):
            pt_set(m, t, slot, pt_get(m, t, slot) | PTE_W | PTE_E)
        count_event(m, pid, C_MINOR_FAULTS)
        count_event(m, pid, C_COW_REUSES)
        return FAULT_OK
    if zero and huge_frames_free(m, 0):
        map_new_huge_page(m, t, -1, PTE_W | PTE_E)
        count_rss(m, mm, r, PTRS_PER_TABLE)
        count_event(m, pid, C_MINOR_FAULTS)
        count_event(m, pid, C_THP_FAULT_ALLOC)
        return FAULT_OK
    if not zero and m.g[G_THP_COW] == THP_COPY and huge_frames_free(m, 0):
        old = table_alloc(m)                       # scratch copy of the old subpages
        for slot in range(PTRS_PER_TABLE):
            pt_set(m, old, slot, pt_get(m, t, slot))
        map_new_huge_page(m, t, old, PTE_W | PTE_E)
        for slot in range(PTRS_PER_TABLE):
            frame_unmap(m, pte_frame(pt_get(m, old, slot)))
        table_free(m, old)
        count_event(m, pid, C_MINOR_FAULTS)
        count_event(m, pid, C_THP_COPIES)
        return FAULT_OK
    split_huge_pmd(m, pid, t)
    return FAULT_FALLBACK


@njit(cache=True)
def copy_huge_pmd(m, child, crow, k, t, eager, writable):
    """fork of a PMD-mapped huge page: one PMD entry and its deposited table;
    eager copies the 2 MiB, otherwise both sides map the folio read-only."""
    nt = table_alloc(m)
    m.pmd[crow, k] = nt
    pte_alloc_one(m)                             # fork.fork_frames_needed checked
    m.tab_huge[nt] = 1
    if eager and pte_frame(pt_get(m, t, 0)) != 0:
        map_new_huge_page(m, nt, t, (PTE_W | PTE_E) if writable else PTE_E)
        count_events(m.ctr, m.totals, child, C_FORK_PAGES, PTRS_PER_TABLE)
    else:
        for slot in range(PTRS_PER_TABLE):
            e = pt_get(m, t, slot)
            f = pte_frame(e)
            if f != 0:
                e &= ~(PTE_W | PTE_E)
                pt_set(m, t, slot, e)
                m.frame[f, F_MAP] += 1                # a huge page's frames are homed nowhere
            pt_set(m, nt, slot, e)
    m.tab_count[nt] = PTRS_PER_TABLE
    count_event(m, child, C_FORK_PMDS)
