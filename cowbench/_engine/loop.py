"""The op loop: a compiled scenario, one op (a system call or a touch) at a time (cowbench's own).

run() executes ops until one might need more array room than the machine
has (machine.shortfall); it then returns RUN_GROW and simulator.py grows the
arrays and calls it again from that op. After every op the run totals are
recorded as one timeline row.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from .abi import (EXEC, EXIT, FORK, G_FORKS, G_PTE_FRAMES, G_RESUME, G_FRAMES_USED, G_RUNNING, MADVISE, MMAP,
                  MPROTECT, MUNMAP, N_TOTALS, OV_NONE, P_EXITED, P_RUNNING, P_SUSPENDED, PIN, PTRS_PER_TABLE, R_NONE,
                  READ, RUN_DONE, RUN_GROW, SPAWN, T_FORKS, T_FRAMES_USED, T_PTE_FRAMES, T_RUNNING, UNPIN, VFORK,
                  VM_MAPPED, WRITE)
from .exit import do_exit, wake_vfork_parent
from .fork import dup_mmap
from .gup import unpin_pages
from .machine import has_room, region_span
from .madvise import madvise
from .mmap import do_mmap, mm_init, mm_rss_total, mmput, unmap_region
from .mprotect import change_protection
from .pgtable import ov_cap
from .touch import drop_premarks, pin_user_pages, touch_pages


@njit(cache=True)
def mm_overlay_slots(m, mm):
    """Overlay pool slots mm's overlays hold (what a fork of mm clones)."""
    n = 0
    row = m.mm_row[mm]
    for c in m.ovc[row]:
        if c != OV_NONE:
            n += ov_cap(c)
    return n


@njit(cache=True)
def op_needs(m, op, ps):
    """Upper bounds on (frame ids, tables, rows, overlay slots) op may take,
    for growing arrays first (machine.GROUPS says which group holds which).
    An odf fork takes at most one share group per table too. A touch adds at
    most one overlay entry, and the chunks one range's entries ever take add
    up to under 640 slots (at most 10 per entry)."""
    code = op[0]
    if code == READ or code == WRITE or code == PIN:
        r = op[2]
        count = ps[op[5], 1]
        lo, hi = region_span(m, r)
        per = PTRS_PER_TABLE if m.reg_thp[r] else 1 + m.reg_ra[r]    # a huge page fault takes 512,
        n = min(count * per, m.reg_npages[r] + m.reg_fhi[r] - m.reg_flo[r])   # a major one its read-around
        slots = min(10 * count + 1024, 640 * (hi - lo))
        return n, min(n, hi - lo) + 1, 0, slots
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
def record_timeline(m, tl, i):
    """Row i of the timeline: the run totals after op i."""
    tl[i, :N_TOTALS] = m.totals
    tl[i, T_FRAMES_USED] = m.g[G_FRAMES_USED]
    tl[i, T_RUNNING] = m.g[G_RUNNING]
    tl[i, T_FORKS] = m.g[G_FORKS]
    tl[i, T_PTE_FRAMES] = m.g[G_PTE_FRAMES]


@njit(cache=True)
def step(m, op, ps, psf, pool, ztab, marks, mark):
    """Execute one op. The process acting must be running, else the op is
    skipped. mark: where the op's pages were premarked, if they were (touch.premark)."""
    code, pid, r, arg, mm = op[0], op[1], op[2], op[3], op[4]
    if code == SPAWN:
        mm_init(m, mm)
        m.proc_mm[pid] = mm
        m.proc_state[pid] = P_RUNNING
        m.g[G_RUNNING] += 1
        return
    if m.proc_state[pid] != P_RUNNING:
        if mark[0] >= 0:
            drop_premarks(marks, mark, m.reg_npages[r])
        return
    if code == READ or code == WRITE:
        s = op[5]
        touch_pages(m, pid, r, code == WRITE, arg, ps[s], psf[s, 0], psf[s, 1], pool, ztab, marks, mark)
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
        mm_init(m, mm)
        m.proc_mm[pid] = mm
        wake_vfork_parent(m, pid)
        mmput(m, pid, old)
    elif code == EXIT:
        do_exit(m, pid, np.int8(P_EXITED), np.int8(R_NONE))
    elif code == MMAP:
        do_mmap(m, pid, m.proc_mm[pid], r, arg)
    elif code == PIN or code == UNPIN:
        s = op[5]
        pages = pool[ps[s, 3]: ps[s, 3] + ps[s, 1]]
        if code == PIN:
            pin_user_pages(m, pid, r, pages)
        else:
            unpin_pages(m, pid, r, pages, arg != 0)
    elif (m.vma[m.proc_mm[pid], r] & VM_MAPPED) == 0:
        return                     # munmap, mprotect, madvise of a region a refused mmap never mapped
    elif code == MUNMAP:
        unmap_region(m, m.proc_mm[pid], r)
    elif code == MPROTECT:
        change_protection(m, pid, m.proc_mm[pid], r, arg)
    elif code == MADVISE:
        madvise(m, m.proc_mm[pid], r, arg)


@njit(cache=True, nogil=True)
def run(m, ops, ps, psf, pool, ztab, tl, start, stop, marks, mark_at):
    """Execute ops[start:stop]. Returns RUN_GROW, with g[G_RESUME] = the op to
    resume at, when an op might need more array room than there is. Op i's
    pages may have been marked ahead at marks[mark_at[i, 0]:] (touch.premark);
    the GIL is released, so that another thread can mark the next ops' meanwhile."""
    for i in range(start, stop):
        if not has_room(m, op_needs(m, ops[i], ps)):
            m.g[G_RESUME] = i
            return RUN_GROW
        step(m, ops[i], ps, psf, pool, ztab, marks, mark_at[i])
        record_timeline(m, tl, i)
    m.g[G_RESUME] = stop
    return RUN_DONE
