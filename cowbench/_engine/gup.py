"""Pins: pin_user_pages with FOLL_WRITE | FOLL_LONGTERM, and unpinning (mm/gup.c).

A pin is a record (pid, region, page, frame) and a count on the frame (and
its huge folio): a pinned page is copied for a child at fork instead of
shared (fork.py) and never reused by another's write. This file holds the
records; faulting the pages in first, as GUP does, is touch.pin_user_pages,
which sits above the fault path. (A process's exit drops its pins, and the
fault path's OOM killer exits processes: so the records live below it.)
"""
from __future__ import annotations

from numba import njit

from .abi import F_FOLIO, F_PINS, G_PINS, PTRS_PER_TABLE, TABLE_SHIFT
from .page_alloc import frame_put
from .pgtable import ov_find, pt_get, pte_assign_frame
from .pte import pte_frame, pte_is_inline


@njit(cache=True)
def pin_page(m, pid, r, page):
    """Hold a pin on the frame that the present, writable page of region r
    maps in pid's address space, giving an inline page a frame id."""
    mm = m.proc_mm[pid]
    row = m.mm_row[mm]
    k = m.reg_pmd0[r] + (page >> TABLE_SHIFT)
    slot = page & (PTRS_PER_TABLE - 1)
    t = m.pmd[row, k]
    oi = ov_find(m, row, k, slot)
    e = m.ov_val[oi] if oi >= 0 else pt_get(m, t, slot)
    if pte_is_inline(e):
        e = pte_assign_frame(m, t, slot, oi, e)
    if oi < 0:
        m.tab_wp[t] = 0                 # a pinned page must leave the table before it is shared
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
    frame_put(m, f)


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
