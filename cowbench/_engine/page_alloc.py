"""Physical memory: pages charged and freed, frame ids and their records (mm/page_alloc.c, kalloc.c).

Physical memory (G_FRAMES_USED) counts every page: inline pages, pages with
a frame id, and page-table pages. Frame ids are bookkeeping and cost nothing:
a page gets one when it becomes shared (a fork shares its table), pinned,
cached or part of a huge page (pte.py says why the others need none).

A frame's mapcount is not one number: a frame "homed" at slot s of table t
is mapped there by every user of t that does not override the slot, so

    frame[f, F_MAP]                       PTEs in overlays and unshared tables
  + tab_ref[t] - tab_ovr[t, s]            if f is homed at (t, s)

and sharing a table with one more process is O(1) per table, not per frame.
"""
from __future__ import annotations

from numba import njit

from .abi import (F_FLAGS, F_FOLIO, F_HOME, F_MAP, F_PINS, F_TAG, FF_CACHE, FF_DIRTY, G_FOLIO_TOP, G_FRAME_HWM,
                  G_FRAME_MAX, G_FRAMES_PEAK, G_FRAMES_USED, G_FREE_TOP, G_PTE_FRAMES, PTE_D, PTRS_PER_TABLE,
                  TABLE_SHIFT)
from .pte import pte_frame, pte_is_inline

# --- ids -----------------------------------------------------------------------------------------
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


# --- pages of physical memory --------------------------------------------------------------------

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
def frames_free(m):
    """Pages of physical memory nothing holds (the zero page is never free)."""
    return m.g[G_FRAME_MAX] - 1 - m.g[G_FRAMES_USED]


@njit(cache=True)
def pte_alloc_one(m):
    """Take one page-table page from physical memory; False if none is free."""
    if not frame_charge(m):
        return False
    m.g[G_PTE_FRAMES] += 1
    return True


@njit(cache=True)
def pte_free(m, n=1):
    """Give n page-table pages back."""
    m.g[G_FRAMES_USED] -= n
    m.g[G_PTE_FRAMES] -= n


# --- frame ids -----------------------------------------------------------------------------------

@njit(cache=True)
def frame_new_id(m, tag):
    """A frame id for a page already charged (one that was inline): unmapped, unhomed, holding tag."""
    f = id_alloc(m.frame_free, m.g, G_FREE_TOP, G_FRAME_HWM)
    frame_init(m.frame, f, tag, -1)
    return f


@njit(cache=True, inline="always")
def frame_init(frame, f, tag, home):
    """Frame f's record for a new id: unmapped, homed at `home` (-1: none), holding tag.
    (Kept apart from id_alloc: one inlined helper holding both branches and array
    stores left reference counting in a loop's body, 15x slower per page.)"""
    frame[f, F_MAP] = 0
    frame[f, F_PINS] = 0
    frame[f, F_FOLIO] = -1
    frame[f, F_HOME] = home
    frame[f, F_TAG] = tag
    frame[f, F_FLAGS] = 0


@njit(cache=True)
def frame_alloc(m):
    """A new page with a frame id, mapcount 0 and tag 0, or -1 when physical memory is full."""
    if not frame_charge(m):
        return -1
    return frame_new_id(m, 0)


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
def cache_page_alloc(m):
    """A new page-cache page (FF_CACHE), or -1 when physical memory is full."""
    f = frame_alloc(m)
    if f >= 0:
        m.frame[f, F_FLAGS] = FF_CACHE
    return f


@njit(cache=True, inline="always")
def page_cached(m, f):
    """Frame f (> 0) is a page-cache page."""
    return (m.frame[f, F_FLAGS] & FF_CACHE) != 0


@njit(cache=True)
def frame_mapcount(m, f):
    """PTEs mapping frame f (page_mapcount)."""
    return mapcount_of(m.frame[f, F_MAP], m.frame[f, F_HOME], m.tab_ref, m.tab_ovr)


@njit(cache=True, inline="always")
def mapcount_of(extra, home, tab_ref, tab_ovr):
    """frame_mapcount of a frame with F_MAP extra and F_HOME home, on the
    arrays themselves (branch-free: an inlined helper that branches keeps
    reference counts of the arrays it is given in its caller's loop)."""
    h = max(home, 0)
    t = h >> TABLE_SHIFT
    return extra + (home >= 0) * (tab_ref[t] - tab_ovr[t, h & (PTRS_PER_TABLE - 1)])


@njit(cache=True)
def folio_pinned(m, f):
    """folio_maybe_dma_pinned: a pin on the page, or on any page of its huge folio."""
    fo = m.frame[f, F_FOLIO]
    return m.frame[f, F_PINS] > 0 or (fo >= 0 and m.folio_pins[fo] > 0)


@njit(cache=True)
def frame_put(m, f):
    """Free frame f if nothing maps, pins or caches it any more."""
    if m.frame[f, F_PINS] == 0 and (m.frame[f, F_FLAGS] & FF_CACHE) == 0 and frame_mapcount(m, f) == 0:
        frame_release(m, f)


@njit(cache=True, inline="always")
def frame_mapcount_changed(m, f):
    """f gained or lost a mapping outside its home: the table it is homed in
    must sum its smaps afresh (task_mmu.py caches them)."""
    h = m.frame[f, F_HOME]
    if h >= 0:
        m.tab_ver[h >> TABLE_SHIFT] += 1


@njit(cache=True)
def frame_map(m, f):
    """One more counted PTE maps frame id f."""
    m.frame[f, F_MAP] += 1
    frame_mapcount_changed(m, f)


@njit(cache=True)
def frame_unmap(m, f):
    """Drop one counted PTE mapping of anonymous frame id f; free it if nobody maps it."""
    m.frame[f, F_MAP] -= 1
    frame_mapcount_changed(m, f)
    frame_put(m, f)


@njit(cache=True)
def pte_drop(m, e, anon):
    """A PTE counted in F_MAP (an overlay's, an unshared table's) goes away;
    a page-cache page (anon False) stays in its cache, dirty if the PTE was
    (zap_present_folio_ptes: a shmem PTE's D bit moves to the folio)."""
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
            if (e & PTE_D) != 0:
                m.frame[f, F_FLAGS] |= FF_DIRTY
            m.frame[f, F_MAP] -= 1            # a page-cache frame: the cache keeps it
            frame_mapcount_changed(m, f)
