"""fork(): the child's copy of its parent's address space (kernel/fork.c dup_mmap, mm/memory.c copy_page_range).

What the simulated kernel does, per policy, and what is counted:
- eager copies every present private page into a frame of the child's own
  (fork_pages_copied), in tables of the child's own (xv6 uvmcopy);
- cow copies the PTEs, write-protected on both sides, and shares the pages
  (fork_ptes_copied, fork_tables_copied);
- odf shares the PTE tables themselves (fork_tables_shared; pgtable.py's
  share groups count the copies later faults make).
Inside the simulator cow and odf share the parent's tables by reference
(pgtable.py), so a fork is O(tables): what cow's kernel copies is counted, not
done. Pinned pages are copied for the child at once under every policy
(copy_present_page: page_needs_cow_for_dma).
"""
from __future__ import annotations

from numba import njit

from .abi import (BLOCKS_PER_TABLE, C_ENOMEM, C_FORK_PAGES, C_FORK_PTES, C_FORK_TABLES, C_FORK_TABLES_SHARED,
                  F_HOME, F_MAP, F_TAG, G_FORKS, G_FRAME_HWM, G_FREE_TOP, G_PINS, G_POLICY, G_PTE_FRAMES, G_RUNNING,
                  OV_NONE, P_FORK_FAILED, P_RUNNING, PMD_NONE, POLICY_EAGER, POLICY_ODF, PTE_E, PTE_SHIFT, PTE_W,
                  PTES_PER_BLOCK, PTRS_PER_TABLE, VM_ACCOUNT, VM_ANON_VMA, VM_DONTFORK, VM_MAPPED, VM_WIPEONFORK,
                  VM_WRITE)
from .huge_memory import copy_huge_pmd, huge_pinned, split_huge_pmd
from .machine import count_event, count_events, region_span
from .mmap import mm_init, vm_enough_memory, vm_unacct
from .page_alloc import (folio_pinned, frame_charge, frame_init, frame_map, frames_free, frames_taken, id_alloc,
                         page_cached, pte_alloc_one)
from .pgtable import odf_share, ov_at, ov_clone, ov_len, ov_record, pt_get, pt_set, pte_assign_frame, pte_peek, \
    pte_tag_of, table_alloc
from .pte import home_of, pte_frame, pte_id, pte_inline, pte_is_inline, pte_make, pte_page


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
def table_cache_pages(m, row, k, t):
    """Page-cache pages of range k that mm (directory row) maps."""
    n = 0
    for slot in range(PTRS_PER_TABLE):
        f = pte_id(pte_peek(m, row, k, t, slot))
        if f > 0 and page_cached(m, f):
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
        lo, hi = region_span(m, r)
        for k in range(lo, hi):
            t = m.pmd[row, k]
            if t == PMD_NONE:
                continue
            pinned = 0
            if m.g[G_PINS] > 0:
                pinned = table_pinned_pages(m, row, k, t)
            if not eager:
                need += pinned
            elif m.reg_file[r] != 0:
                need -= table_cache_pages(m, row, k, t)      # a file page is mapped, not copied
            if not odf or eager or m.tab_huge[t] != 0 or pinned > 0:
                need += 1
    return need


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
        f = pte_id(e)
        if f > 0 and page_cached(m, f):          # a file page: mapped, as the parent maps it
            frame_map(m, f)
        elif pte_page(e) != 0:
            frame_charge(m)                      # fork_frames_needed checked
            e = pte_inline(pte_tag_of(m, e), (PTE_W | PTE_E) if writable else PTE_E)
            count_event(m, child, C_FORK_PAGES)
        pt_set(m, nt, slot, e)
    m.tab_count[nt] = ptes
    return ptes


@njit(cache=True)
def prepare_shared_table(m, prow, k, t):
    """The parent's unshared table t is about to get a second user: write-protect
    its entries, give inline pages a frame id homed here, and move to the
    parent's overlay what must stay its own (a pinned page, which stays
    writable, and a page homed in another table). A fork of a freshly written
    parent does this for every page it has, so the loop runs on arrays held in
    locals, a block of 32 entries at a time."""
    m.tab_ver[t] += 1
    pt = m.pt
    blk = m.tab_blk[t]
    frame = m.frame
    frame_free = m.frame_free
    g = m.g
    for i in range(BLOCKS_PER_TABLE):
        b = blk[i]
        if b == 0:
            continue                             # block 0: the table maps nothing in these 32 slots
        for s in range(PTES_PER_BLOCK):
            e = pt[b, s]
            if e == 0:
                continue
            slot = i * PTES_PER_BLOCK + s
            here = home_of(t, slot)
            if pte_is_inline(e):
                f = id_alloc(frame_free, g, G_FREE_TOP, G_FRAME_HWM)
                frame_init(frame, f, e >> PTE_SHIFT, here)
                pt[b, s] = pte_make(f, 0)
                continue
            f = pte_frame(e)
            if f == 0:
                continue
            h = frame[f, F_HOME]
            if folio_pinned(m, f) or (h >= 0 and h != here):
                pt[b, s] = 0
                m.tab_count[t] -= 1
                if h == here:
                    frame[f, F_HOME] = -1
                    frame[f, F_MAP] += 1
                ov_record(m, prow, k, slot, e)       # an override of an empty slot: counted nowhere
                continue
            if h < 0:                                # counted in F_MAP until now (a split huge page)
                frame[f, F_MAP] -= 1
                frame[f, F_HOME] = here
            pt[b, s] = e & ~(PTE_W | PTE_E)


@njit(cache=True)
def share_pte_table(m, child, prow, crow, k, writable):
    """copy_pte_range under cow and odf, by reference: the child uses the
    parent's table and a copy of the parent's overlay, both write-protected;
    a pinned page is copied for the child at once and stays writable in the
    parent (copy_present_page). Returns (PTEs the kernel copies, pinned pages)."""
    t = m.pmd[prow, k]
    if m.tab_ref[t] == 1 and m.tab_count[t] > 0 and m.tab_wp[t] == 0:
        prepare_shared_table(m, prow, k, t)
    m.tab_wp[t] = 1           # prepared, or shared already: its entries change no more (overlays do)
    ptes = m.tab_count[t]
    pinned = 0
    n = ov_len(m, prow, k)
    for i in range(n):
        slot, j = ov_at(m, prow, k, i)
        e = m.ov_val[j]
        if e == 0:
            continue
        if pt_get(m, t, slot) == 0:
            ptes += 1
        if pte_is_inline(e):
            e = pte_assign_frame(m, t, slot, j, e)
        f = pte_frame(e)
        if f != 0 and folio_pinned(m, f):
            pinned += 1
        else:
            m.ov_val[j] = e & ~(PTE_W | PTE_E)
    if n > 0:
        m.tab_ver[t] += 1                        # the child's overrides
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
                frame_map(m, f)
            if pt_get(m, t, slot) != 0:
                m.tab_ovr[t, slot] += 1
                m.tab_maxovr[t] = max(m.tab_maxovr[t], m.tab_ovr[t, slot])
    m.tab_ref[t] += 1
    m.pmd[crow, k] = t
    return ptes, pinned


@njit(cache=True)
def vm_account_fork(m, pmm):
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
    if fork_frames_needed(m, pmm, eager, odf) > frames_free(m) or not vm_account_fork(m, pmm):
        m.proc_state[child] = P_FORK_FAILED          # ENOMEM: the parent goes on
        count_event(m, parent, C_ENOMEM)
        return
    mm_init(m, cmm)
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
    tab_wp = m.tab_wp
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
        m.mm_rss[cmm, r] = m.mm_rss[pmm, r]
        shared = 0          # tables the child just joins: already shared, no PTE of the parent's own
        shared_ptes = 0
        lo, hi = region_span(m, r)
        for k in range(lo, hi):
            t = pmd_p[k]
            if t == PMD_NONE:
                continue
            m.mm_tables[cmm] += 1
            # A table already shared, or shared before and unchanged since (a fork server's
            # parent after its last child exited), without PTEs of the parent's own: join it.
            if not eager and (tab_ref[t] > 1 or tab_wp[t] != 0) and ovc_p[k] == OV_NONE and tab_huge[t] == 0:
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
                pte_alloc_one(m)
                count_event(m, child, C_FORK_TABLES)
                count_events(m.ctr, m.totals, child, C_FORK_PTES, ptes)
        if odf:
            count_events(m.ctr, m.totals, child, C_FORK_TABLES_SHARED, shared)
        else:                                        # cow: each a table copy of the simulated kernel
            frames_taken(m.g, shared)                # their pages: fork_frames_needed checked
            m.g[G_PTE_FRAMES] += shared
            count_events(m.ctr, m.totals, child, C_FORK_TABLES, shared)
            count_events(m.ctr, m.totals, child, C_FORK_PTES, shared_ptes)
