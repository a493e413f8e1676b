"""The fault path (mm/memory.c): do_anonymous_page, do_wp_page, do_shared_fault, handle_mm_fault.

Each handler returns FAULT_OK, or FAULT_OOM when it needed a frame and found
none; it then changed nothing, so handle_mm_fault can run the OOM killer and
take the fault again from the start, as the kernel does after
pagefault_out_of_memory().

Next to two of the rules sit their batched forms, which touch.py runs on a
whole 2 MiB range, or page by page on arrays held in locals: fill_range
(do_anonymous_page's write of fresh pages) and wp_page_copy_quick and
copy_range (wp_page_copy of a page another user of the table maps). They
must do exactly what the rule does; tests/test_reference.py's
test_engine_matches_reference_however_an_op_visits_its_pages checks that
every way an op visits its pages gives the reference's run.
"""
from __future__ import annotations

import numpy as np
from numba import njit
from numba.cpython.unsafe.numbers import trailing_zeros

from .abi import (C_COW_COPIES, C_COW_REUSES, C_MAJOR_FAULTS, C_MINOR_FAULTS, C_ZERO_FILLS, F_FLAGS, F_FOLIO,
                  F_PINS, F_TAG, FF_DIRTY, FAULT_AROUND_PAGES, FAULT_FALLBACK, FAULT_OK, FAULT_OOM, G_ZERO_PAGE,
                  OV_DENSE, OV_NONE, PMD_FOLIO_PAGES, PMD_NONE, PTE_BLOCK_SHIFT, PTE_D, PTE_E, PTE_I, PTE_SHIFT, PTE_W,
                  PTES_PER_BLOCK, PTRS_PER_TABLE, TABLE_SHIFT, VM_ANON_VMA, VM_WRITE)
from .huge_memory import do_huge_pmd_anonymous_page, do_huge_pmd_wp_page, thp_eligible
from .machine import count_event
from .mmap import count_rss, pte_alloc
from .oom_kill import oom_kill
from .page_alloc import cache_page_alloc, frame_charge, frame_mapcount, page_cached
from .pgtable import (block_alloc, ov_cap, ov_find, ov_put, ov_record, pt_get, pt_set, pte_peek, pte_write, store_tag,
                      table_unshare)
from .pte import NO_ENTRY, pte_frame, pte_id, pte_inline, pte_is_inline, pte_make


# --- the page cache (mm/filemap.c) and faults on file and shared pages -------------------------

@njit(cache=True, inline="always")
def count_fault(m, pid, major):
    """The fault was major (it read its page from the file) or minor: ru_majflt, ru_minflt."""
    count_event(m, pid, C_MAJOR_FAULTS if major else C_MINOR_FAULTS)


@njit(cache=True)
def filemap_read(m, r, page):
    """filemap_fault for a file page not in the page cache: read it in, then the
    rest of its read-around window (reg_ra pages from reg_ra / 2 before it,
    inside the file: do_sync_mmap_readahead) while frames are free, as
    readahead gives up quietly under memory pressure. Returns its frame, or -1
    (nothing read) when none is free for the page itself."""
    k = m.reg_shm0[r] + page
    f = cache_page_alloc(m)
    if f < 0:
        return -1
    m.shm_frame[k] = f
    lo = max(m.reg_flo[r], k - m.reg_ra[r] // 2)
    for q in range(lo, min(lo + m.reg_ra[r], m.reg_fhi[r])):
        if m.shm_frame[q] < 0:
            g = cache_page_alloc(m)
            if g < 0:
                break
            m.shm_frame[q] = g
    return f


@njit(cache=True)
def find_cache_page(m, pid, r, page):
    """The page-cache frame of page of region r: found, read from the file (a
    major fault, for the caller to count), or for a shared anonymous region
    zero-filled. Returns (frame, major); frame -1 when no frame is free."""
    f = m.shm_frame[m.reg_shm0[r] + page]
    if f >= 0:
        return f, False
    if m.reg_file[r] != 0:
        return filemap_read(m, r, page), True
    f = cache_page_alloc(m)
    if f >= 0:
        m.shm_frame[m.reg_shm0[r] + page] = f
        count_event(m, pid, C_ZERO_FILLS)
    return f, False


@njit(cache=True)
def folio_mark_dirty(m, r, page):
    """A write through a MAP_SHARED mapping dirties the page-cache folio of
    page of region r: the page, or for a file cached in large folios
    (reg_folio pages) every cached page of its aligned block, as smaps shows
    the whole folio Dirty in every process mapping part of it."""
    k = m.reg_shm0[r] + page
    n = m.reg_folio[r]
    lo = k - (k - m.reg_flo[r]) % n
    for q in range(lo, min(lo + n, m.reg_fhi[r]) if n > 1 else k + 1):
        f = m.shm_frame[q]
        if f >= 0:
            m.frame[f, F_FLAGS] |= FF_DIRTY


@njit(cache=True, inline="always")
def shmem_region(m, r):
    """r is a shared anonymous region: its pages are a shmem object's."""
    return m.reg_shared[r] != 0 and m.reg_file[r] == 0


@njit(cache=True)
def shmem_pte_mkdirty(m, t, slot, oi, e):
    """A write through the writable shmem PTE e, which took no fault: the
    hardware sets the PTE's dirty bit, not the page's (the page turns dirty
    when the PTE is unmapped: page_alloc.pte_drop)."""
    if oi >= 0:
        m.ov_val[oi] = e | PTE_D
    else:
        pt_set(m, t, slot, e | PTE_D)


@njit(cache=True, inline="always")
def read_fault_writable(m, mm, r):
    """A read fault maps page-cache pages writable in a writable shmem region
    only: file pages are mapped read-only (a private mapping copies on write,
    a shared one tracks the write: wp_page_shared)."""
    return m.reg_file[r] == 0 and (m.vma[mm, r] & VM_WRITE) != 0


@njit(cache=True)
def map_cache_page(m, mm, r, row, k, t, slot, oi, f, w):
    """Map page-cache frame f at slot, writable if w (the caller checked mm maps nothing there)."""
    pte_write(m, row, k, t, slot, oi, pte_make(f, PTE_W if w else 0))
    count_rss(m, mm, r, 1)


@njit(cache=True)
def do_fault_around(m, mm, r, row, k, t, page):
    """A read fault first maps each page of its aligned block that the page
    cache holds and mm does not map yet (filemap_map_pages): fault_around_bytes
    (64 KiB), or a whole 2 MiB folio (reg_around)."""
    n = PMD_FOLIO_PAGES if folio_pmd_mappable(m, r, page) else FAULT_AROUND_PAGES
    lo = page - page % n
    map_cache_block(m, mm, r, row, k, t, lo, min(lo + n, m.reg_npages[r]), read_fault_writable(m, mm, r))


@njit(cache=True)
def folio_pmd_mappable(m, r, page):
    """page lies in a 2 MiB page-cache folio that region r maps aligned and
    whole (a PMD maps whole 2 MiB of the VMA only), so a fault maps the folio
    with one PMD (filemap_map_pmd, do_set_pmd)."""
    end = page - page % PMD_FOLIO_PAGES + PMD_FOLIO_PAGES
    return m.reg_around[r] == PMD_FOLIO_PAGES and end <= m.reg_npages[r]


@njit(cache=True)
def map_cache_block(m, mm, r, row, k, t, lo, hi, w):
    """Map, writable if w, each page lo .. hi - 1 of region r (inside one
    table, t) that the page cache holds and mm does not map yet."""
    base = m.reg_shm0[r]
    for p in range(lo, hi):
        f = m.shm_frame[base + p]
        if f < 0:
            continue
        slot = p & (PTRS_PER_TABLE - 1)
        oi = ov_find(m, row, k, slot)
        if (m.ov_val[oi] if oi >= 0 else pt_get(m, t, slot)) == 0:
            map_cache_page(m, mm, r, row, k, t, slot, oi, f, w)


@njit(cache=True)
def do_read_fault(m, pid, mm, r, row, k, t, slot, page):
    """First read of a page of a file (private or shared) or of a shared
    anonymous region in mm: fault-around first, then the page itself from the
    page cache. A page read in from the file (a major fault) is mapped by the
    retried fault, which faults around again (filemap_fault drops the mmap
    lock for the read and returns VM_FAULT_RETRY); on Linux it maps the
    neighbours whose reads have completed by then, here all of the block's."""
    do_fault_around(m, mm, r, row, k, t, page)
    if pte_peek(m, row, k, t, slot) != 0:
        count_fault(m, pid, False)
        return FAULT_OK
    f, major = find_cache_page(m, pid, r, page)
    if f < 0:
        return FAULT_OOM                           # the neighbours stay mapped, as in the kernel
    if major:
        do_fault_around(m, mm, r, row, k, t, page)   # the fault retried after the read (VM_FAULT_RETRY)
    else:
        map_cache_page(m, mm, r, row, k, t, slot, NO_ENTRY, f, read_fault_writable(m, mm, r))
    count_fault(m, pid, major)
    return FAULT_OK


@njit(cache=True)
def do_shared_fault(m, pid, mm, r, row, k, t, slot, page):
    """First write of a MAP_SHARED page in mm: the page-cache page, mapped
    writable (a file page turns dirty; a 2 MiB folio is mapped whole). No copy."""
    f, major = find_cache_page(m, pid, r, page)
    if f < 0:
        return FAULT_OOM
    folio_mark_dirty(m, r, page)
    if folio_pmd_mappable(m, r, page):               # finish_fault maps the whole folio, writable
        lo = page - page % PMD_FOLIO_PAGES
        map_cache_block(m, mm, r, row, k, t, lo, lo + PMD_FOLIO_PAGES, True)
    else:
        map_cache_page(m, mm, r, row, k, t, slot, NO_ENTRY, f, True)
    count_fault(m, pid, major)
    return FAULT_OK


@njit(cache=True)
def wp_page_shared(m, pid, r, t, slot, page):
    """Write to a MAP_SHARED file page mapped read-only since its read: the
    page turns dirty and writable in place (page_mkwrite), nothing is copied."""
    e = pt_get(m, t, slot)
    folio_mark_dirty(m, r, page)
    pt_set(m, t, slot, e | PTE_W)
    m.tab_ver[t] += 1
    count_event(m, pid, C_MINOR_FAULTS)
    return FAULT_OK


@njit(cache=True)
def do_cow_fault(m, pid, mm, r, row, k, t, slot, page, tag):
    """First write of a page of a private file mapping: the page-cache page
    (read in if need be) is copied into a new anonymous page. If no frame is
    free for the copy, a page just read stays in the cache."""
    f, major = find_cache_page(m, pid, r, page)
    if f < 0 or not frame_charge(m):
        return FAULT_OOM
    m.vma[mm, r] |= VM_ANON_VMA
    pte_write(m, row, k, t, slot, NO_ENTRY, pte_inline(tag if tag > 0 else m.frame[f, F_TAG], PTE_W | PTE_E))
    count_rss(m, mm, r, 1)
    count_fault(m, pid, major)
    count_event(m, pid, C_COW_COPIES)
    return FAULT_OK


# --- first touch of private anonymous memory ---------------------------------------------------

@njit(cache=True)
def do_anonymous_page(m, pid, mm, r, row, k, t, slot, write, tag):
    """First touch of a private page: a read maps the zero page, a write a new
    page holding tag (when > 0)."""
    if not write and m.g[G_ZERO_PAGE] != 0:
        pte_write(m, row, k, t, slot, NO_ENTRY, pte_make(0, 0))
        count_event(m, pid, C_MINOR_FAULTS)
        return FAULT_OK
    if not frame_charge(m):
        return FAULT_OOM
    m.vma[mm, r] |= VM_ANON_VMA
    pte_write(m, row, k, t, slot, NO_ENTRY, pte_inline(max(tag, 0), PTE_W | PTE_E))
    count_rss(m, mm, r, 1)
    count_event(m, pid, C_MINOR_FAULTS)
    count_event(m, pid, C_ZERO_FILLS)
    return FAULT_OK


RANGE_WORDS = PTRS_PER_TABLE // 8     # a range's touch marks read as uint64 words, 8 pages a word


@njit(cache=True, inline="always")
def next_mark(x):
    """Slot offset (0..7) of the lowest marked byte of the non-zero word x."""
    return np.int64(trailing_zeros(x)) >> 3


@njit(cache=True)
def fill_range(m, t, words, e):
    """do_anonymous_page's write for every slot of the new table t marked in
    words (a range's marks): install the fresh inline page e, clearing the
    marks; returns how many. The caller charges the pages and counts the
    faults, as do_anonymous_page does one at a time."""
    pt = m.pt
    blk = m.tab_blk[t]
    q = 0
    for w in range(RANGE_WORDS):
        x = words[w]
        if x == 0:
            continue
        words[w] = 0
        i = (8 * w) >> PTE_BLOCK_SHIFT
        if blk[i] == 0:
            blk[i] = block_alloc(m)
        b = blk[i]
        while x != 0:
            pt[b, (8 * w + next_mark(x)) & (PTES_PER_BLOCK - 1)] = e
            q += 1
            x &= x - np.uint64(1)
    return q


# --- write-protect faults ----------------------------------------------------------------------

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
    e = m.ov_val[oi] if oi >= 0 else pt_get(m, t, slot)
    f = -1 if pte_is_inline(e) else pte_frame(e)
    # The entry of a table others use too maps a frame homed right there: while
    # another user maps it, it is shared, and the frame need not be looked at.
    shared = oi < 0 and f > 0 and m.tab_ref[t] - m.tab_ovr[t, slot] > 1
    # A page-cache page is never anonymous: a write through a private mapping always copies it.
    if not shared and (f < 0 or (e & PTE_E) != 0
                       or (f != 0 and not page_cached(m, f) and can_reuse_anon_page(m, row, k, t, f))):
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
        count_rss(m, mm, r, 1)                     # the zero page was not in RSS
        count_event(m, pid, C_ZERO_FILLS)
    else:
        count_event(m, pid, C_COW_COPIES)
    return FAULT_OK


@njit(cache=True, inline="always")
def must_copy(e, users):
    """The entry e of a table, which `users` of the table's users see (they do
    not override it), maps a write-protected page another of them maps too:
    do_wp_page's copy (wp_page_copy), which wp_page_copy_quick and copy_range
    do without it."""
    return e > (1 << PTE_SHIFT) and (e & (PTE_I | PTE_W)) == 0 and users > 1


@njit(cache=True, inline="always")
def copy_override(tab_ovr, tab_maxovr, tab_ver, t, slot):
    """A copy's mark in the shared table t: one more user overrides slot. (must_copy
    said another user still maps the entry, so it does not die: add_override's
    clear_table_entry has nothing to do.)"""
    o = tab_ovr[t, slot] + 1
    tab_ovr[t, slot] = o
    tab_ver[t] += 1
    if o > tab_maxovr[t]:
        tab_maxovr[t] = o


@njit(cache=True, inline="always")
def wp_page_copy_quick(m, row, k, t, slot, e, ov_key, ov_val, ovc_row, ovl_row, ovn_row, tab_ovr, tab_maxovr,
                       tab_ver):
    """do_wp_page's copy, where must_copy holds and a page was charged: e, the
    copy (an inline page), becomes (row, k)'s PTE at slot in its overlay, on
    the arrays the caller holds. True when the overlay pool may have moved
    (the caller reloads it); the caller counts the fault and the copy."""
    c = ovc_row[k]
    n = ovn_row[k]
    moved = False
    if c != OV_NONE and (c == OV_DENSE or n < ov_cap(c)):
        ov_put(ov_key, ov_val, ovl_row[k], c, n, slot, e)
        ovn_row[k] = n + 1
    else:
        ov_record(m, row, k, slot, e)
        moved = True
    copy_override(tab_ovr, tab_maxovr, tab_ver, t, slot)
    return moved


@njit(cache=True)
def copy_range(pt, tab_blk, tab_ovr, tab_maxovr, tab_ver, ref, t, words, key, val, off, dense, e):
    """wp_page_copy for every slot marked in words whose entry in table t (ref
    users) must be copied: e goes to the new overlay chunk at off (dense, or
    sorted slots), the slot gains an override and its mark is cleared; the
    other marks stay. Returns the copies; the caller charges the pages and
    counts the faults, as do_wp_page does one at a time.
    copy_override's version and maximum are kept in locals and stored once,
    and a word's marks once: a store to the same place at each copy was a
    chain the loop waited on."""
    q = 0
    top = 0
    for w in range(RANGE_WORDS):
        x = words[w]
        if x == 0:
            continue
        b = tab_blk[t, (8 * w) >> PTE_BLOCK_SHIFT]
        if b == 0:                              # the table maps nothing in the word's slots
            continue
        copied = np.uint64(0)
        while x != 0:
            low = x & (~x + np.uint64(1))
            slot = 8 * w + next_mark(x)
            x ^= low
            o = tab_ovr[t, slot]
            if not must_copy(pt[b, slot & (PTES_PER_BLOCK - 1)], ref - o):
                continue
            copied |= low
            if dense:
                val[off + slot] = e
            else:
                key[off + q] = slot
                val[off + q] = e
            q += 1
            tab_ovr[t, slot] = o + 1
            top = max(top, o + 1)
        words[w] ^= copied
    tab_ver[t] += q
    if top > tab_maxovr[t]:
        tab_maxovr[t] = top
    return q


# --- one fault ---------------------------------------------------------------------------------

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
    if t != PMD_NONE:
        oi = ov_find(m, row, k, slot)
        e = m.ov_val[oi] if oi >= 0 else pt_get(m, t, slot)
    if not write:
        if e != 0:
            return FAULT_OK
    elif (e & PTE_W) != 0:
        if tag > 0:
            store_tag(m, row, k, slot, tag)
        if (e & PTE_D) == 0 and shmem_region(m, r):
            shmem_pte_mkdirty(m, t, slot, oi, e)
        return FAULT_OK
    if t == PMD_NONE:
        if thp_eligible(m, mm, r, page):
            st = do_huge_pmd_anonymous_page(m, pid, mm, r, k, write)
            if st != FAULT_FALLBACK:
                if st == FAULT_OK and write and tag > 0:
                    store_tag(m, row, k, slot, tag)
                return st
        t = pte_alloc(m, mm, row, k)
        if t < 0:
            return FAULT_OOM
    elif not table_unshare(m, pid, row, k):
        return FAULT_OOM
    if e == 0 and m.reg_shared[r] == 0 and m.reg_file[r] == 0:
        return do_anonymous_page(m, pid, mm, r, row, k, t, slot, write, tag)
    if e == 0 and not write:
        st = do_read_fault(m, pid, mm, r, row, k, t, slot, page)
    elif e == 0 and m.reg_shared[r] != 0:
        st = do_shared_fault(m, pid, mm, r, row, k, t, slot, page)
    elif e == 0:
        return do_cow_fault(m, pid, mm, r, row, k, t, slot, page, tag)
    elif m.reg_shared[r] != 0:                      # only a file's shared PTEs are write-protected
        st = wp_page_shared(m, pid, r, t, slot, page)
    else:
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
