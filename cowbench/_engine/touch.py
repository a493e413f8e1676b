"""The batched touch path: one read or write op over its pages (cowbench's own, no kernel file).

A read or write op is one process touching pages while nothing else runs,
and every write of an op stores the op's one tag: once the first touch of a
page has made its PTE allow the touch, touching the page again changes
nothing. So touch_pages first marks the pages an op touches (a byte per page
in m.seen, a byte per 2 MiB range in m.seen_ranges), then handles each marked
page once, in address order, a range at a time (touch_marked): the faults
that dominate forked workloads a whole range in one pass (memory.fill_range,
memory.copy_range), the rest by touch_each. Handling first touches in another
order than the op's is the same run as long as no fault can fail (which
process the OOM killer picks depends on what was faulted before) and no
fault maps more than its own page (fault-around and read-around on file and
shared mappings, huge pages): ops where either could happen touch their pages
one at a time, in the op's order, and so do ops too sparse for marks to pay
(touch_pages).

Marks are a function of the op's page set and its region's size alone, so
premark makes them ahead, on a second thread, while the op loop runs the ops
before (simulator._SecondThread): the op then finds them in a room of its own
and only touches.

Pins (gup.py) fault their pages in here too: pin_user_pages.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from .abi import (C_COW_COPIES, C_MINOR_FAULTS, C_ZERO_FILLS, F_TAG, G_FRAME_MAX, G_FRAMES_USED, G_POLICY,
                  GROUP_NONE, MARKS_PER_TOUCH, OV_DENSE, OV_NONE, OV_SMALLEST, P_KILLED, PMD_NONE, POLICY_ODF,
                  PTE_BLOCK_SHIFT, PTE_D, PTE_E, PTE_I, PTE_W, PTES_PER_BLOCK, PTRS_PER_TABLE, R_SIGSEGV, TABLE_SHIFT,
                  TOUCH_CHUNK, VM_ANON_VMA, VM_HUGEPAGE, VM_MAPPED, VM_READ, VM_WRITE)
from .draws import pattern_fill
from .exit import do_exit
from .gup import pin_page
from .machine import count_events
from .memory import (RANGE_WORDS, copy_range, fill_range, handle_mm_fault, must_copy, next_mark, shmem_region,
                     wp_page_copy_quick)
from .mmap import count_rss, pte_alloc
from .page_alloc import frames_taken
from .pgtable import directory_of, ov_alloc, ov_cap, ov_release, ov_search, table_unshare
from .pte import pte_frame, pte_inline, pte_with_tag


@njit(cache=True)
def touch_each(m, pid, mm, r, pages, write, tag):
    """Touch every page in pages, one by one, in order. False if pid died on the way."""
    i = 0
    while 0 <= i < len(pages):
        i = touch_run(m, pid, mm, r, pages, i, write, tag)
    return i >= 0


@njit(cache=True)
def touch_run(m, pid, mm, r, pages, i, write, tag):
    """touch_each from pages[i] on, until a fault grows the overlay pool:
    returns where to go on (len(pages) when done), -1 if pid died.

    Most touches find a PTE that already allows them, and most faults that
    remain are a child's first write to a page its parent still maps: both
    are handled here on arrays held in locals, and the rest go to
    handle_mm_fault. Every m.field read costs a reference count, and so does
    each array a helper call is given (inlined or not, once it branches): an
    ov_lookup a touch made the hit path 10x slower, and reloading the pool's
    arrays in the loop made each touch pay for them. So the overlay lookup is
    written out here, and a fault that grows the pool ends the run instead."""
    row, pmd_row, ovc_row, ovl_row, ovn_row = directory_of(m, mm)
    pt = m.pt
    tab_blk = m.tab_blk
    frame = m.frame
    tab_ref = m.tab_ref
    tab_ovr = m.tab_ovr
    tab_maxovr = m.tab_maxovr
    tab_ver = m.tab_ver
    g = m.g
    ctr = m.ctr
    totals = m.totals
    ov_key = m.ov_key
    ov_val = m.ov_val
    first = m.reg_pmd0[r]
    odf = g[G_POLICY] == POLICY_ODF
    odfg_row = m.odfg[row if odf else 0]
    quick_copy = write and tag > 0
    dirty = PTE_D if write and shmem_region(m, r) else 0     # a shmem write marks the PTE it went through
    for j in range(i, len(pages)):
        page = pages[j]
        k = first + (page >> TABLE_SHIFT)
        slot = page & (PTRS_PER_TABLE - 1)
        t = pmd_row[k]
        if t != PMD_NONE:
            c = ovc_row[k]                  # ov_lookup
            oi = -1
            if c == OV_DENSE:
                if ov_val[ovl_row[k] + slot] != 0:
                    oi = ovl_row[k] + slot
            elif c != OV_NONE:
                oi = ov_search(ov_key, ovl_row[k], ovn_row[k], slot)
            if oi >= 0:
                e = ov_val[oi]
                if not write:
                    continue
                if (e & PTE_W) != 0:
                    if (e & PTE_I) != 0:
                        ov_val[oi] = pte_with_tag(e, tag)
                    else:
                        frame[pte_frame(e), F_TAG] = tag
                        if dirty != 0:
                            ov_val[oi] = e | dirty
                    continue
            else:
                b = tab_blk[t, slot >> PTE_BLOCK_SHIFT]
                s = slot & (PTES_PER_BLOCK - 1)
                e = pt[b, s]
                if write:
                    if (e & PTE_W) != 0:            # present, so its block is not block 0
                        if (e & PTE_I) != 0:
                            pt[b, s] = pte_with_tag(e, tag)
                        else:
                            frame[pte_frame(e), F_TAG] = tag
                            if dirty != 0:
                                pt[b, s] = e | dirty
                        continue
                elif e != 0:
                    continue
                # do_wp_page's copy of a page another user of the table maps too (under odf
                # once the simulated kernel has copied the table, if it still shares it)
                if (quick_copy and must_copy(e, tab_ref[t] - tab_ovr[t, slot])
                        and (not odf or odfg_row[k] == GROUP_NONE or table_unshare(m, pid, row, k))
                        and g[G_FRAMES_USED] < g[G_FRAME_MAX] - 1):
                    frames_taken(g, 1)
                    moved = wp_page_copy_quick(m, row, k, t, slot, pte_inline(tag, PTE_W | PTE_E), ov_key, ov_val,
                                               ovc_row, ovl_row, ovn_row, tab_ovr, tab_maxovr, tab_ver)
                    count_events(ctr, totals, pid, C_MINOR_FAULTS, 1)
                    count_events(ctr, totals, pid, C_COW_COPIES, 1)
                    if moved and m.ov_val.shape[0] != ov_val.shape[0]:
                        return j + 1        # it grew the pool (pgtable.ov_grow: never to the same size)
                    continue
        if not handle_mm_fault(m, pid, mm, r, page, write, tag):
            return -1
        if m.ov_val.shape[0] != ov_val.shape[0]:
            return j + 1
    return len(pages)


@njit(cache=True, inline="always")
def touch_chunk(kind, seed, a, b, n, off, i0, size, pool, ztab, table, buf):
    """Pages of touches i0 .. i0+size-1 of an op's page set (see touch_pages);
    buf holds twice the most touches drawn at once (the pages, and pattern_fill's scratch)."""
    if kind < 0:
        return pool[off + i0: off + i0 + size]
    chunk = buf[:size]
    pattern_fill(kind, seed, a, b, n, off + i0, chunk, ztab, table, buf[len(buf) >> 1:])
    return chunk


@njit(cache=True)
def mark_touched(seen, seen_ranges, pages, lo, hi):
    """Mark pages and their ranges (bytes, not bits: two stores a page, no
    load, no branch); returns (lo, hi) widened to the lowest and highest page
    (in the same pass: two more of it cost 0.15 ns a touch)."""
    for p in pages:
        u = np.uint64(p)                  # an unsigned index: no wraparound check
        seen[u] = 1
        seen_ranges[u >> np.uint64(TABLE_SHIFT)] = 1
        lo = min(lo, p)
        hi = max(hi, p)
    return lo, hi


@njit(cache=True, inline="always")
def marks_in(words):
    """Pages marked in a range's words (a marked byte is 1, so a word's byte sum counts them)."""
    q = 0
    for w in range(RANGE_WORDS):
        q += np.int64((words[w] * np.uint64(0x0101010101010101)) >> np.uint64(56))
    return q


@njit(cache=True)
def touch_marked(m, pid, mm, r, write, tag, seen, seen_ranges, jlo, jhi):
    """Touch each page marked in the region's ranges jlo .. jhi once, in
    address order, clearing the marks. False if pid died on the way.

    First writes in a range without a table (do_anonymous_page) and in a
    table others share where mm has no PTE of its own yet (wp_page_copy of
    pages another user maps) are done here, a range at a time, on arrays held
    in locals; the rest go to touch_each."""
    words = seen.view(np.uint64)
    row, pmd_row, ovc_row, ovl_row, ovn_row = directory_of(m, mm)
    pt = m.pt
    tab_blk = m.tab_blk
    tab_ovr = m.tab_ovr
    tab_ref = m.tab_ref
    tab_count = m.tab_count
    tab_maxovr = m.tab_maxovr
    tab_ver = m.tab_ver
    g = m.g
    odf = g[G_POLICY] == POLICY_ODF     # table_unshare has work under odf alone
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
        elif t == PMD_NONE:
            t = pte_alloc(m, mm, row, k)
            q = fill_range(m, t, marks, e)
            tab_count[t] += q
            zero_fills += q
            frames_taken(g, q)
        elif tab_ref[t] > 1 and ovc_row[k] == OV_NONE:
            n = marks_in(marks)
            c = OV_SMALLEST
            while c < OV_DENSE and ov_cap(c) < n:
                c += 1
            off = ov_alloc(m, c)
            q = copy_range(pt, tab_blk, tab_ovr, tab_maxovr, tab_ver, tab_ref[t], t, marks, m.ov_key, m.ov_val, off,
                           c == OV_DENSE, e)
            if q == 0:
                ov_release(m, c, off)
            else:
                if odf:
                    table_unshare(m, pid, row, k)
                ovl_row[k] = off
                ovc_row[k] = c
                ovn_row[k] = q
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
            alive = touch_each(m, pid, mm, r, todo[:nt], write, tag)
            nt = 0
    if zero_fills + copies > 0:           # (room was made sure of: nothing here can fail)
        count_rss(m, mm, r, zero_fills)
        m.vma[mm, r] |= VM_ANON_VMA
        ctr = m.ctr
        totals = m.totals
        count_events(ctr, totals, pid, C_MINOR_FAULTS, zero_fills + copies)
        count_events(ctr, totals, pid, C_ZERO_FILLS, zero_fills)
        count_events(ctr, totals, pid, C_COW_COPIES, copies)
    if alive and nt > 0:
        alive = touch_each(m, pid, mm, r, todo[:nt], write, tag)
    return alive


@njit(cache=True)
def marked_pages(seen, seen_ranges, jlo, jhi):
    """Pages marked in ranges jlo .. jhi."""
    words = seen.view(np.uint64)
    n = 0
    for j in range(jlo, jhi + 1):
        if seen_ranges[j] != 0:
            n += marks_in(words[j * RANGE_WORDS: (j + 1) * RANGE_WORDS])
    return n


@njit(cache=True)
def huge_mapped(m, mm, r, seen_ranges, jlo, jhi):
    """mm maps a huge page in one of the marked ranges jlo .. jhi of region r."""
    pmd_row = m.pmd[m.mm_row[mm]]
    tab_huge = m.tab_huge
    first = m.reg_pmd0[r]
    for j in range(jlo, jhi + 1):
        if seen_ranges[j] != 0:
            t = pmd_row[first + j]
            if t != PMD_NONE and tab_huge[t] != 0:
                return True
    return False


@njit(cache=True)
def mark_pages(kind, seed, a, b, n, off, count, pool, ztab, table, seen, seen_ranges):
    """Mark the pages of a page set (see touch_pages) over n pages in seen and
    seen_ranges, TOUCH_CHUNK at a time; returns the lowest and highest page
    (n, -1 if none). Reads nothing of the machine: premark runs it ahead."""
    buf = np.empty(2 * min(TOUCH_CHUNK, count), dtype=np.int64)
    lo, hi = n, -1
    for i0 in range(0, count, TOUCH_CHUNK):
        chunk = touch_chunk(kind, seed, a, b, n, off, i0, min(TOUCH_CHUNK, count - i0), pool, ztab, table, buf)
        lo, hi = mark_touched(seen, seen_ranges, chunk, lo, hi)
    return lo, hi


@njit(cache=True, inline="always")
def marks_at(marks, at, n):
    """The seen and seen_ranges arrays of an op over n pages premarked at marks[at:] (see premark)."""
    ranges = (n + PTRS_PER_TABLE - 1) >> TABLE_SHIFT
    end = at + ranges * PTRS_PER_TABLE
    return marks[at: end], marks[end: end + ranges]


@njit(cache=True)
def unmark(seen, seen_ranges, lo, hi):
    """Clear the marks of pages lo .. hi (their whole ranges)."""
    if lo <= hi:
        jlo, jhi = lo >> TABLE_SHIFT, hi >> TABLE_SHIFT
        seen[jlo * PTRS_PER_TABLE: (jhi + 1) * PTRS_PER_TABLE] = 0
        seen_ranges[jlo: jhi + 1] = 0


@njit(cache=True)
def drop_premarks(marks, mark, n):
    """Clear an op's premarks (mark = (at, lo, hi), at >= 0) over n pages without touching anything."""
    seen, seen_ranges = marks_at(marks, mark[0], n)
    unmark(seen, seen_ranges, mark[1], mark[2])


@njit(cache=True, nogil=True)
def premark(ops, ps, psf, pool, ztab, reg_npages, marks, mark_at, tasks, bounds, claim, front):
    """Mark, ahead of the op loop, the pages of the touches t0 .. t1-1 of op
    i for tasks (i, t0, t1) claim[0] .. claim[1]-1, at marks[mark_at[i, 0]:]
    (a touch of a region of reg_npages[r] pages, laid out as marks_at says),
    and store the lowest and highest of those pages in bounds: the op's
    (lo, hi) are the least and greatest of its tasks'. The room comes zeroed,
    and the op clears it again (touch_pages). Marks depend on the page set
    alone, so they are the ones touch_pages would make; whether the op uses
    them is decided when it runs.

    Two threads share the tasks, one from the front (claim[0] up) and one
    from the back (claim[1] down), without atomics: each stops on a claim the
    other made, so no task is left undone, and a task two threads happen to
    claim at once is marked twice, with the same 1s and the same bounds."""
    while True:
        if front:
            q = claim[0]
            if q >= claim[1]:
                return
            claim[0] = q + 1
        else:
            q = claim[1] - 1
            if q < claim[0]:
                return
            claim[1] = q
        i, t0, t1 = tasks[q, 0], tasks[q, 1], tasks[q, 2]
        s = ops[i, 5]
        n = reg_npages[ops[i, 2]]
        seen, seen_ranges = marks_at(marks, mark_at[i, 0], n)
        bounds[q, 0], bounds[q, 1] = mark_pages(ps[s, 0], ps[s, 2], psf[s, 0], psf[s, 1], n, ps[s, 3] + t0, t1 - t0,
                                                pool, ztab, ps[s, 4], seen, seen_ranges)


@njit(cache=True)
def touch_pages(m, pid, r, write, tag, pset, a, b, pool, ztab, marks, mark):
    """Run one read/write op over a page set pset = (kind, count, seed, off,
    table): pool[off:off+count] when kind < 0, else touches off .. off+count-1
    of a generated pattern, TOUCH_CHUNK pages at a time. Marks the pages and
    touches each once (touch_marked), or, where the order of faults could
    matter (see above), touches them in the op's order. mark = (at, lo, hi):
    the op's pages were marked at marks[at:] by premark (at >= 0), in which
    case this clears them, used or not."""
    kind, count, seed, off, table = pset[0], pset[1], pset[2], pset[3], pset[4]
    mm = m.proc_mm[pid]
    n = m.reg_npages[r]
    if mark[0] >= 0:
        seen, seen_ranges = marks_at(marks, mark[0], n)
        lo, hi = mark[1], mark[2]
    else:
        seen, seen_ranges = m.seen, m.seen_ranges
        lo, hi = n, -1
    flags = m.vma[mm, r]
    if count == 0 or (flags & VM_MAPPED) == 0 or (flags & VM_READ) == 0 or (write and (flags & VM_WRITE) == 0):
        unmark(seen, seen_ranges, lo, hi)
        if count != 0:
            do_exit(m, pid, np.int8(P_KILLED), np.int8(R_SIGSEGV))
        return
    # Marks cost the host a page of m.seen per 4096 pages they cover: an op as sparse as a
    # touch per 64 pages of its region (10**5 writes in 1 TiB would dirty 256 MB of them)
    # touches its pages one at a time instead.
    if (m.reg_shared[r] == 0 and m.reg_file[r] == 0 and (flags & VM_HUGEPAGE) == 0 and m.seen.shape[0] >= n
            and count * MARKS_PER_TOUCH >= n):
        if mark[0] < 0:
            lo, hi = mark_pages(kind, seed, a, b, n, off, count, pool, ztab, table, seen, seen_ranges)
        jlo, jhi = lo >> TABLE_SHIFT, hi >> TABLE_SHIFT
        # A page and a table a page at most, and no huge page (left by MADV_NOHUGEPAGE) whose
        # fault copies 2 MiB or splits it by what is free then: no fault's outcome depends on order.
        room = m.g[G_FRAME_MAX] - m.g[G_FRAMES_USED]
        if ((2 * count < room or 2 * marked_pages(seen, seen_ranges, jlo, jhi) < room)
                and not huge_mapped(m, mm, r, seen_ranges, jlo, jhi)):
            touch_marked(m, pid, mm, r, write, tag, seen, seen_ranges, jlo, jhi)
            return
    unmark(seen, seen_ranges, lo, hi)       # a fault might fail: in order
    buf = np.empty(2 * min(TOUCH_CHUNK, count), dtype=np.int64)     # an op of one touch is common (concurrently)
    for i0 in range(0, count, TOUCH_CHUNK):
        chunk = touch_chunk(kind, seed, a, b, n, off, i0, min(TOUCH_CHUNK, count - i0), pool, ztab, table, buf)
        if not touch_each(m, pid, mm, r, chunk, write, tag):
            return


@njit(cache=True)
def pin_user_pages(m, pid, r, pages):
    """Pin each page for DMA: fault it in writable and exclusive, as GUP does
    (those faults are the task's minor faults too), then hold a pin on its
    frame (gup.pin_page). A page the process cannot write pins nothing (the
    kernel answers EFAULT)."""
    mm = m.proc_mm[pid]
    flags = m.vma[mm, r]
    if (flags & VM_MAPPED) == 0 or (flags & VM_WRITE) == 0:
        return
    write = (flags & VM_WRITE) != 0      # True; a run-time value, as touch_each passes: literal
    for page in pages:                   # arguments would compile the fault path a second time
        if not handle_mm_fault(m, pid, mm, r, page, write, np.int64(-1)):
            return
        pin_page(m, pid, r, page)
