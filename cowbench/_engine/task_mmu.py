"""What /proc/PID/smaps_rollup would say of an address space, and what its pages hold (fs/proc/task_mmu.c).

Rss counts present pages but the zero page; Pss adds 1/mapcount per page;
USS (smem's name) counts the pages mapped once, smaps' Private_Clean plus
Private_Dirty; Rss splits into anonymous, file and shmem pages as status's
RssAnon, RssFile and RssShmem do. A table many address spaces
share is summed once per G_EPOCH (callers bump it before a batch of
mm_smaps), and each sharer adds only what its overlay changes.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from .abi import (C_ANON_HUGE, C_ANON_PAGES, C_FILE_PAGES, C_PRIVATE_CLEAN, C_PRIVATE_DIRTY, C_PTE_PAGES, C_RSS,
                  C_SHARED_DIRTY, C_SHMEM_PAGES, C_USS, F_FLAGS, F_HOME, F_MAP, FF_CACHE, FF_DIRTY, G_EPOCH, GROUP_NONE,
                  OV_DENSE, OV_NONE, P_RUNNING, P_SUSPENDED, PMD_NONE, PTE_BLOCK_SHIFT, PTE_D, PTE_I, PTE_W,
                  PTES_PER_BLOCK, PTRS_PER_TABLE, TABLE_SHIFT, VM_MAPPED)
from .machine import region_span
from .page_alloc import frame_mapcount, mapcount_of
from .pgtable import directory_of, pt_get, pte_peek, pte_tag_of
from .pte import home_of, pte_frame, pte_is_inline, pte_page


# pagemap's view of a page (mm_pagemap): bits 63 present, 56 exclusively mapped, 61
# file-page or shared-anon, as Documentation/admin-guide/mm/pagemap.rst numbers them,
# and what smaps would add: mapped by a huge PMD, dirty (F5), writable.
PM_PRESENT, PM_EXCLUSIVE, PM_FILE, PM_HUGE, PM_DIRTY, PM_WRITE = 1, 2, 4, 8, 16, 32


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
    and each entry's pss share kept in tab_w for the users that override it.

    Pages mapped by all tab_ref users add up as one count divided by tab_ref.
    A table where that is every page, each homed at its slot and nobody's
    override (tab_uniform), keeps that property while only its users change
    (joins at fork, leaves at exit): tables_smaps then re-sums it in O(1)."""
    if m.tab_epoch[t] == m.g[G_EPOCH]:
        return
    ref = m.tab_ref[t]
    rss = uss = at_ref = 0
    pss = 0.0
    uniform = True
    # Only overlays read the shares (overlay_weights): a table nobody overrides leaves its
    # row of tab_w unwritten, so tables of sparse address spaces cost the host no page of it.
    w = m.tab_w[t] if m.tab_maxovr[t] > 0 else m.tab_w[t, :0]
    w[:] = -1.0
    pt = m.pt
    blk = m.tab_blk[t]
    frame = m.frame
    tab_ovr = m.tab_ovr
    tab_ref = m.tab_ref
    for slot in range(PTRS_PER_TABLE if m.tab_count[t] > 0 else 0):
        if (slot & (PTES_PER_BLOCK - 1)) == 0:
            entries = pt[blk[slot >> PTE_BLOCK_SHIFT]]        # the next 32 slots' block
        e = entries[slot & (PTES_PER_BLOCK - 1)]
        if pte_page(e) == 0:
            continue
        if pte_is_inline(e):
            n = 1
            uniform = False
        else:
            f = pte_frame(e)
            home = frame[f, F_HOME]
            extra = frame[f, F_MAP]
            o = tab_ovr[t, slot]
            # frame_mapcount, for the usual frame homed at this very slot without the
            # dependent loads it makes for a home elsewhere (3x faster over a table),
            # and on locals (see the package's docstring on hot loops)
            n = extra + ref - o if home == home_of(t, slot) else mapcount_of(extra, home, tab_ref, tab_ovr)
            uniform &= (home == home_of(t, slot)) & (extra == 0) & (o == 0)
        if len(w) > 0:
            w[slot] = 1.0 / n
        rss += 1
        uss += n == 1
        if n == ref:
            at_ref += 1
        else:
            pss += 1.0 / n
    m.tab_rss[t], m.tab_uss[t], m.tab_pss[t] = rss, uss, at_ref / ref + pss
    m.tab_uniform[t] = uniform
    m.tab_seen[t] = m.tab_ver[t]
    m.tab_epoch[t] = m.g[G_EPOCH]


@njit(cache=True, inline="always")
def overlay_weights(m, key, val, tab_w, t, off, n, dense, terms):
    """(rss, pss, uss) an overlay (n positions at off) changes its table t's
    by: each of its PTEs replaces the table's at its slot, whose pss share is
    tab_w[t, slot] (-1: no page). While no override is counted (tab_maxovr 0),
    every PTE of an overlay is at a slot where the table maps nothing, and
    table_weights left the row unwritten: row 0 (table 0 is none), all -1,
    stands in for it. The loop is branch-free (a dense overlay's
    empty slots come at random: a branch on them would mostly be mispredicted)
    and calls nothing; PTEs with a frame id, rare, are weighed in a second one.
    The shares replaced are added up after it, from `terms` (the caller's
    scratch, PTRS_PER_TABLE long), which it packs them into: the same additions
    in the same order, but not one a slot (a chain of float additions the loop
    waited on, adding 0.0 for each slot that replaces nothing: the overlays of
    throughput.py's 64 zipf children weigh in 9.6 ms so, 10.5 ms that way)."""
    replaced = unique = inline = framed = 0
    base = np.uint64(off)                   # unsigned indices: no wraparound checks
    w = t if m.tab_maxovr[t] > 0 else 0
    for i in range(n):
        e = val[base + np.uint64(i)]
        p = tab_w[w, i if dense else np.int64(key[base + np.uint64(i)])]
        has = (e != 0) & (p >= 0.0)
        terms[replaced] = p                 # kept only if has: the next store goes to the same place
        replaced += has
        unique += has & (p == 1.0)
        mine = (e & PTE_I) != 0
        inline += mine
        framed += (e != 0) & (not mine)
    gone = 0.0
    for i in range(replaced):
        gone += terms[i]
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


@njit(cache=True, inline="always")
def pte_state(m, e, file):
    """(cached, dirty, shared) of the page the present PTE e maps in a region
    of a file (file) or of shmem, each 0 or 1 (F5): a page-cache page is dirty
    if its folio is, or for shmem its PTE; any other page is an anonymous
    copy, dirty and unshared when inline; shared means mapped more than once."""
    if pte_is_inline(e):
        return 0, 1, 0
    f = pte_frame(e)
    cached = 1 if (m.frame[f, F_FLAGS] & FF_CACHE) != 0 else 0
    dirty = 1 if (cached == 0 or (m.frame[f, F_FLAGS] & FF_DIRTY) != 0 or (not file and (e & PTE_D) != 0)) else 0
    return cached, dirty, 1 if frame_mapcount(m, f) > 1 else 0


@njit(cache=True)
def page_kinds(m, mm, r, acc):
    """Add to acc, at C_ANON_PAGES .. C_SHARED_DIRTY, the pages mm maps in
    region r, a mapping of a file or of shmem, page by page: a page-cache page
    is file or shmem, dirty if its folio is (FF_DIRTY) or, for shmem, the PTE
    (PTE_D); any other page is an anonymous copy (a private file mapping's),
    always dirty. Private means mapped once, as smaps counts it (mapcount < 2),
    the cache's own reference aside."""
    row = m.mm_row[mm]
    lo, hi = region_span(m, r)
    file = m.reg_file[r] != 0
    cached_kind = C_FILE_PAGES if file else C_SHMEM_PAGES
    for k in range(lo, hi):
        t = m.pmd[row, k]
        if t == PMD_NONE:
            continue
        for slot in range(PTRS_PER_TABLE):
            e = pte_peek(m, row, k, t, slot)
            if pte_page(e) == 0:
                continue
            cached, dirty, shared = pte_state(m, e, file)
            acc[cached_kind if cached else C_ANON_PAGES] += 1
            acc[C_PRIVATE_CLEAN + 2 * shared + dirty] += 1      # the split's four counters in this order


@njit(cache=True)
def tables_smaps(m, pmd_row, lo, hi):
    """Bring the cached smaps of the tables of ranges lo .. hi-1 of a directory
    row up to G_EPOCH: in O(1), on arrays held in locals, for a table that is
    uniform and of which nothing but its users changed since it was summed,
    then the others in full (table_weights).
    An exit sums every table its address space shares (the 2,048 of a 4 GiB
    parent), and a call of table_weights in that loop, even one rarely made,
    cost each pass 17 ns; so the loop that calls it covers only the ranges
    from the first table it must sum to the last."""
    epoch = m.g[G_EPOCH]
    tab_epoch = m.tab_epoch
    tab_uniform = m.tab_uniform
    tab_seen = m.tab_seen
    tab_ver = m.tab_ver
    tab_ref = m.tab_ref
    tab_rss = m.tab_rss
    tab_pss = m.tab_pss
    tab_uss = m.tab_uss
    klo, khi = hi, lo
    for k in range(lo, hi):
        t = pmd_row[k]
        if t == PMD_NONE or tab_epoch[t] == epoch:
            continue
        if tab_uniform[t] != 0 and tab_seen[t] == tab_ver[t]:
            tab_pss[t] = tab_rss[t] / tab_ref[t]
            tab_uss[t] = tab_rss[t] if tab_ref[t] == 1 else 0
            tab_epoch[t] = epoch
        else:
            klo = min(klo, k)
            khi = k + 1
    for k in range(klo, khi):
        if pmd_row[k] != PMD_NONE:
            table_weights(m, pmd_row[k])


@njit(cache=True)
def mm_smaps(m, mm, acc):
    """(rss, pss, uss, anon huge pages) of mm, as smaps_rollup would report
    them, with its kinds (status's RssAnon, RssFile, RssShmem) and smaps'
    Private/Shared Clean/Dirty added to acc at C_ANON_PAGES .. C_SHARED_DIRTY.
    An anonymous region's pages are all anonymous and dirty, so they split by
    the region's uss alone; other regions are looked at page by page.
    Callers bump G_EPOCH once before a batch of these."""
    row, pmd_row, ovc_row, ovl_row, ovn_row = directory_of(m, mm)
    tab_w = m.tab_w
    tab_rss = m.tab_rss
    tab_pss = m.tab_pss
    tab_uss = m.tab_uss
    tab_huge = m.tab_huge
    ov_key = m.ov_key
    ov_val = m.ov_val
    terms = np.empty(PTRS_PER_TABLE, dtype=np.float64)
    rss = 0
    uss = 0
    huge = 0
    pss = 0.0
    for r in range(m.vma.shape[1]):
        if (m.vma[mm, r] & VM_MAPPED) == 0:
            continue
        if m.reg_shared[r] != 0 or m.reg_file[r] != 0:
            page_kinds(m, mm, r, acc)
        rss0, uss0 = rss, uss
        lo, hi = region_span(m, r)
        tables_smaps(m, pmd_row, lo, hi)
        for k in range(lo, hi):
            t = pmd_row[k]
            if t == PMD_NONE:
                continue
            if tab_huge[t] != 0 and pte_frame(pt_get(m, t, 0)) != 0:
                huge += 1
            rss += tab_rss[t]
            pss += tab_pss[t]
            uss += tab_uss[t]
            c = ovc_row[k]
            if c == OV_NONE:
                continue
            dense = c == OV_DENSE
            a, p, u = overlay_weights(m, ov_key, ov_val, tab_w, t, ovl_row[k],
                                      PTRS_PER_TABLE if dense else ovn_row[k], dense, terms)
            rss += a
            pss += p
            uss += u
        if m.reg_shared[r] == 0 and m.reg_file[r] == 0:
            acc[C_ANON_PAGES] += rss - rss0
            acc[C_PRIVATE_DIRTY] += uss - uss0
            acc[C_SHARED_DIRTY] += (rss - rss0) - (uss - uss0)
    return rss, pss, uss, huge


@njit(cache=True)
def odf_shared_rss(m, mm):
    """Pages mm maps in ranges whose table the simulated odf kernel still
    shares with another address space (what exit_mmap drops without walking)."""
    m.g[G_EPOCH] += 1
    row, pmd_row, ovc_row, ovl_row, ovn_row = directory_of(m, mm)
    odfg_row = m.odfg[row]
    terms = np.empty(PTRS_PER_TABLE, dtype=np.float64)
    rss = 0
    for r in range(m.vma.shape[1]):
        if (m.vma[mm, r] & VM_MAPPED) == 0:
            continue
        lo, hi = region_span(m, r)
        tables_smaps(m, pmd_row, lo, hi)
        for k in range(lo, hi):
            t = pmd_row[k]
            grp = odfg_row[k]
            if t == PMD_NONE or grp == GROUP_NONE or m.group_ref[grp] < 2:
                continue
            rss += m.tab_rss[t]
            c = ovc_row[k]
            if c != OV_NONE:
                dense = c == OV_DENSE
                a, p, u = overlay_weights(m, m.ov_key, m.ov_val, m.tab_w, t, ovl_row[k],
                                          PTRS_PER_TABLE if dense else ovn_row[k], dense, terms)
                rss += a
    return rss


@njit(cache=True)
def freeze_memory(m, pid):
    """Freeze the memory columns of pid (rss, uss, pss, VmPTE, AnonHugePages,
    the kinds and Clean/Dirty split) from its address space as it is now."""
    mm = m.proc_mm[pid]
    acc = m.ctr[pid]
    acc[C_ANON_PAGES: C_SHARED_DIRTY + 1] = 0
    rss, pss, uss, huge = mm_smaps(m, mm, acc)
    m.ctr[pid, C_ANON_HUGE] = huge
    m.ctr[pid, C_RSS] = rss
    m.ctr[pid, C_USS] = uss
    m.ctr[pid, C_PTE_PAGES] = m.mm_tables[mm]
    m.proc_pss[pid] = pss


@njit(cache=True)
def live_tables_smaps(m):
    """Bump G_EPOCH and bring the cached smaps of every table a running or
    suspended process maps up to it: what freeze_memory then does of those
    processes only reads the machine, but for their own rows."""
    m.g[G_EPOCH] += 1
    for pid in range(1, m.proc_state.shape[0]):
        s = m.proc_state[pid]
        if s == P_RUNNING or s == P_SUSPENDED:
            mm = m.proc_mm[pid]
            pmd_row = m.pmd[m.mm_row[mm]]
            for r in range(m.vma.shape[1]):
                if (m.vma[mm, r] & VM_MAPPED) != 0:
                    lo, hi = region_span(m, r)
                    tables_smaps(m, pmd_row, lo, hi)


@njit(cache=True, nogil=True)
def freeze_some(m, pids):
    """freeze_memory of each pid in pids, after live_tables_smaps: the memory
    columns of processes still running or suspended, as they stand at the
    end. Two threads may freeze two sets of processes at once."""
    for pid in pids:
        freeze_memory(m, pid)


@njit(cache=True)
def mm_tags(m, mm, r, out):
    """Value tag of every page of region r in mm (0: never written, or absent)."""
    row = m.mm_row[mm]
    for p in range(m.reg_npages[r]):
        k = m.reg_pmd0[r] + (p >> TABLE_SHIFT)
        t = m.pmd[row, k]
        if t != PMD_NONE:
            out[p] = pte_tag_of(m, pte_peek(m, row, k, t, p & (PTRS_PER_TABLE - 1)))


@njit(cache=True)
def mm_pagemap(m, mm, r, frames, flags):
    """What /proc/PID/pagemap would say of each page of region r in mm:
    frames[p] the frame it maps (0: the zero page; -1: an inline page, which
    has no frame id), flags[p] its PM_* bits (0: not present)."""
    row = m.mm_row[mm]
    file = m.reg_file[r] != 0
    for p in range(m.reg_npages[r]):
        k = m.reg_pmd0[r] + (p >> TABLE_SHIFT)
        t = m.pmd[row, k]
        if t == PMD_NONE:
            continue
        e = pte_peek(m, row, k, t, p & (PTRS_PER_TABLE - 1))
        if e == 0:
            continue
        fl = PM_PRESENT | (PM_HUGE if m.tab_huge[t] != 0 else 0) | (PM_WRITE if (e & PTE_W) != 0 else 0)
        frames[p] = -1 if pte_is_inline(e) else pte_frame(e)
        if frames[p] != 0:                              # the zero page: neither exclusive nor a file's
            cached, dirty, shared = pte_state(m, e, file)
            fl |= (PM_FILE if cached else 0) | (PM_DIRTY if dirty else 0) | (0 if shared else PM_EXCLUSIVE)
        flags[p] = fl
