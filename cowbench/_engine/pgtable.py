"""PTE tables, overlays, and the on-demand-fork share groups (mm/pgtable-generic.c, and ours).

Under cow and odf a fork does not copy the parent's PTE tables here: the
child's directory row points at the parent's tables, which count their users
(tab_ref); eager copies every page, so its child gets tables of its own. A
write into a shared table does not copy it either: the writer records its own
PTE for that slot in a small per-(address space, 2 MiB range) overlay (sorted
(slot, PTE) pairs in size classes of 2..64, past that a dense 512-slot
array) and, if the table maps a page there, the slot counts one more
override (tab_ovr: only a page's slot can die, so an empty slot counts none,
and a table whose users write where it maps nothing is never written).
Reading a PTE looks in the overlay first, then in the table. What the
simulated kernel would have copied is counted, not done (fork.py). A table
slot every user overrides is dead: its page is unmapped then and there.

A table keeps its entries in blocks of 32 (pt, named by tab_blk); block 0 is
all zero, and a block is taken when a page is first mapped in its 32 slots and
given back with the table: a table that maps one page costs the host a block
of 128 bytes, not 2 KiB (a sparse address space has a table per page it maps).

Directory rows (pmd, ovl, ovc, ovn, odfg: one row per live address space,
one column per 2 MiB range) say which table maps each range and where its
overlay is.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from .abi import (BLOCKS_PER_TABLE, C_FAULT_TABLES, F_HOME, F_MAP, F_TAG, G_BLK_HWM, G_BLK_TOP, G_GROUP_HWM,
                  G_GROUP_TOP, G_OV_FREE, G_OV_HWM, G_POLICY, G_TAB_HWM, G_TAB_TOP, GROUP_NONE, OV_DENSE, OV_NONE,
                  OV_SMALLEST, POLICY_ODF, PTE_BLOCK_SHIFT, PTE_E, PTE_SHIFT, PTE_W, PTES_PER_BLOCK, PTRS_PER_TABLE)
from .machine import count_event
from .page_alloc import (frame_map, frame_new_id, frame_put, frame_uncharge, frame_unmap, id_alloc, id_release,
                         pte_alloc_one)
from .pte import home_of, pte_frame, pte_id, pte_is_inline, pte_make, pte_with_tag

# --- a table's entries ---------------------------------------------------------------------------

@njit(cache=True, inline="always")
def pt_get(m, t, slot):
    """The PTE at slot of table t (0: none)."""
    return m.pt[m.tab_blk[t, slot >> PTE_BLOCK_SHIFT], slot & (PTES_PER_BLOCK - 1)]


@njit(cache=True)
def block_alloc(m):
    """An all-zero block. Only a block freed before is cleared: a new one is
    memory the host has not backed yet (calloc), and writing zeros would back it."""
    reused = m.g[G_BLK_TOP] > 0
    b = id_alloc(m.blk_free, m.g, G_BLK_TOP, G_BLK_HWM)
    if reused:
        m.pt[b, :] = 0
    return b


@njit(cache=True, inline="always")
def pt_set(m, t, slot, e):
    """Make e the PTE at slot of table t (taking a block for the slot's 32 if
    it has none; a store of 0 there needs none). loop.op_needs made room."""
    i = slot >> PTE_BLOCK_SHIFT
    b = m.tab_blk[t, i]
    if b == 0:
        if e == 0:
            return
        b = block_alloc(m)
        m.tab_blk[t, i] = b
    m.pt[b, slot & (PTES_PER_BLOCK - 1)] = e


# --- tables --------------------------------------------------------------------------------------

@njit(cache=True)
def table_alloc(m):
    """An empty table with one user. Only a table freed before is cleared: a
    new one's rows are zero pages the host has not backed yet (machine.py
    allocates and grows them with calloc), and writing zeros would back them."""
    reused = m.g[G_TAB_TOP] > 0
    t = id_alloc(m.tab_free, m.g, G_TAB_TOP, G_TAB_HWM)
    if reused and m.tab_maxovr[t] > 0:      # a row nobody overrode is zero and may be unbacked
        m.tab_ovr[t, :] = 0
    m.tab_count[t] = 0
    m.tab_huge[t] = 0
    m.tab_ref[t] = 1
    m.tab_maxovr[t] = 0
    m.tab_wp[t] = 0
    m.tab_epoch[t] = -1
    m.tab_ver[t] = 0
    m.tab_seen[t] = -1
    m.tab_uniform[t] = 0
    return t


@njit(cache=True)
def table_free(m, t):
    """Give back table t and its blocks (whatever they still hold)."""
    for i in range(BLOCKS_PER_TABLE):
        b = m.tab_blk[t, i]
        if b != 0:
            id_release(m.blk_free, m.g, G_BLK_TOP, b)
            m.tab_blk[t, i] = 0
    id_release(m.tab_free, m.g, G_TAB_TOP, t)


@njit(cache=True)
def zap_table_entry(m, t, slot, e):
    """Release the page entry e of (anonymous) table t at slot maps, for the
    table's last users: a frame homed there loses its home, an inline page
    its charge, a counted mapping its count."""
    f = pte_id(e)
    if f > 0 and m.frame[f, F_HOME] == home_of(t, slot):
        m.frame[f, F_HOME] = -1
        frame_put(m, f)
    elif pte_is_inline(e):
        frame_uncharge(m)
    elif f > 0:
        frame_unmap(m, f)


@njit(cache=True)
def clear_table_entry(m, t, slot):
    """Every user of t overrides slot: the table's own entry there maps
    nothing any more, and is cleared (an empty slot counts no overrides)."""
    e = pt_get(m, t, slot)
    if e == 0:
        return
    pt_set(m, t, slot, 0)
    m.tab_ovr[t, slot] = 0
    m.tab_count[t] -= 1
    m.tab_ver[t] += 1
    zap_table_entry(m, t, slot, e)


@njit(cache=True)
def add_override(m, t, slot):
    """One more user of t overrides slot (with a PTE in its overlay); counted
    where the table maps a page."""
    m.tab_ver[t] += 1
    if pt_get(m, t, slot) == 0:
        return
    n = m.tab_ovr[t, slot] + 1
    m.tab_ovr[t, slot] = n
    if n > m.tab_maxovr[t]:
        m.tab_maxovr[t] = n
    if n == m.tab_ref[t]:
        clear_table_entry(m, t, slot)


@njit(cache=True)
def table_put(m, t):
    """One user fewer of t. Slots every remaining user overrides die; the
    last user frees the table and everything only it mapped. The search for
    dying slots leaves tab_maxovr exact, so that while no user overrides a
    slot, a user leaving costs O(1) (a fork server's children: each leaves
    the tables it did not write at once)."""
    m.tab_ref[t] -= 1
    n = m.tab_ref[t]
    if n == 0:
        if m.tab_count[t] > 0:
            for i in range(BLOCKS_PER_TABLE):
                b = m.tab_blk[t, i]
                for s in range(PTES_PER_BLOCK if b != 0 else 0):
                    e = m.pt[b, s]
                    if e != 0:
                        zap_table_entry(m, t, i * PTES_PER_BLOCK + s, e)
        table_free(m, t)
    elif m.tab_maxovr[t] >= n and m.tab_count[t] > 0:
        top = 0
        for slot in range(PTRS_PER_TABLE):
            o = m.tab_ovr[t, slot]
            if o == n:
                clear_table_entry(m, t, slot)
            else:
                top = max(top, o)
        m.tab_maxovr[t] = top


# --- overlays: an address space's own PTEs in a table it shares ---------------------------------
# An overlay is a chunk of the pool (ov_key, ov_val) of size class c: up to
# 1 << c (slot, PTE) pairs sorted by slot, or for OV_DENSE 512 PTEs indexed by
# slot (0: no entry). Freed chunks of a class are a list linked through ov_val.

@njit(cache=True, inline="always")
def ov_cap(c):
    return PTRS_PER_TABLE if c == OV_DENSE else 1 << c


@njit(cache=True)
def ov_grow(m, need):
    """Grow the overlay pool to hold `need` entries (amortised doubling). A
    fallback: simulator.py grows the pool between ops, in place, from
    loop.op_needs's bound, so that the copy made here (twice the pool,
    briefly) is not needed."""
    n = max(need, 2 * m.ov_val.shape[0], 1 << 16)
    key = np.empty(n, dtype=np.uint16)          # untouched room costs no memory
    val = np.empty(n, dtype=np.int32)
    used = m.g[G_OV_HWM]
    key[:used] = m.ov_key[:used]
    val[:used] = m.ov_val[:used]
    m.ov_key = key
    m.ov_val = val


@njit(cache=True)
def ov_alloc(m, c):
    """Offset of a free chunk of class c (dense chunks come zeroed)."""
    g = m.g
    head = G_OV_FREE + c
    off = g[head]
    if off >= 0:
        g[head] = m.ov_val[off]
    else:
        off = g[G_OV_HWM]
        if off + ov_cap(c) > m.ov_val.shape[0]:
            ov_grow(m, off + ov_cap(c))
        g[G_OV_HWM] = off + ov_cap(c)
    if c == OV_DENSE:
        m.ov_val[off: off + PTRS_PER_TABLE] = 0
    return off


@njit(cache=True)
def ov_release(m, c, off):
    m.ov_val[off] = np.int32(m.g[G_OV_FREE + c])
    m.g[G_OV_FREE + c] = off


@njit(cache=True, inline="always")
def ov_lower_bound(key, off, n, slot):
    """First position in the sorted slots key[off:off+n] not below slot."""
    lo = off
    hi = off + n
    while lo < hi:
        mid = (lo + hi) >> 1
        if key[mid] < slot:
            lo = mid + 1
        else:
            hi = mid
    return lo


@njit(cache=True, inline="always")
def ov_search(key, off, n, slot):
    """Position of slot in the sorted slots key[off:off+n], -1 if absent."""
    i = ov_lower_bound(key, off, n, slot)
    return i if i < off + n and key[i] == slot else -1


@njit(cache=True, inline="always")
def ov_insert(key, val, off, n, slot, e):
    """Insert (slot, e) into the sorted sparse chunk at off holding n entries
    (it has room); returns its position."""
    i = ov_lower_bound(key, off, n, slot)
    for j in range(off + n, i, -1):
        key[j] = key[j - 1]
        val[j] = val[j - 1]
    key[i] = slot
    val[i] = e
    return i


@njit(cache=True, inline="always")
def ov_put(key, val, off, c, n, slot, e):
    """Place (slot, e) in the chunk at off of class c holding n entries, which
    has room for it; returns its position."""
    if c == OV_DENSE:
        val[off + slot] = e
        return off + slot
    return ov_insert(key, val, off, n, slot, e)


@njit(cache=True, inline="always")
def ov_lookup(ovc_row, ovl_row, ovn_row, ov_key, ov_val, k, slot):
    """Pool index of the overlay entry for slot of range k, -1 none, on a
    directory row's arrays the caller holds (touch.touch_each holds them across touches)."""
    c = ovc_row[k]
    if c == OV_NONE:
        return -1
    off = ovl_row[k]
    if c == OV_DENSE:
        return off + slot if ov_val[off + slot] != 0 else -1
    return ov_search(ov_key, off, ovn_row[k], slot)


@njit(cache=True, inline="always")
def ov_find(m, row, k, slot):
    """Pool index of the overlay entry of (row, k) for slot, -1 none."""
    return ov_lookup(m.ovc[row], m.ovl[row], m.ovn[row], m.ov_key, m.ov_val, k, slot)


@njit(cache=True, inline="always")
def ov_len(m, row, k):
    """Positions to visit with ov_at (a dense overlay has 512, some empty)."""
    c = m.ovc[row, k]
    if c == OV_NONE:
        return 0
    return PTRS_PER_TABLE if c == OV_DENSE else m.ovn[row, k]


@njit(cache=True, inline="always")
def ov_at(m, row, k, i):
    """(slot, pool index) of position i; the entry is empty where ov_val is 0."""
    off = m.ovl[row, k]
    if m.ovc[row, k] == OV_DENSE:
        return i, off + i
    return np.int64(m.ov_key[off + i]), off + i


@njit(cache=True)
def ov_record(m, row, k, slot, e):
    """Record e as the PTE of (row, k) at slot, which has no overlay entry
    yet, moving the overlay to the next size class when it is full; returns
    e's pool index."""
    ovc = m.ovc
    ovl = m.ovl
    c = ovc[row, k]
    n = m.ovn[row, k]
    if c == OV_NONE:
        c = OV_SMALLEST
        ovl[row, k] = ov_alloc(m, c)
        ovc[row, k] = c
    elif c != OV_DENSE and n == ov_cap(c):
        old = ovl[row, k]
        new = ov_alloc(m, c + 1)
        key = m.ov_key
        val = m.ov_val
        if c + 1 == OV_DENSE:
            for i in range(n):
                val[new + key[old + i]] = val[old + i]
        else:
            key[new: new + n] = key[old: old + n]
            val[new: new + n] = val[old: old + n]
        ov_release(m, c, old)
        c += 1
        ovl[row, k] = new
        ovc[row, k] = c
    i = ov_put(m.ov_key, m.ov_val, ovl[row, k], c, n, slot, e)
    m.ovn[row, k] = n + 1
    return i


@njit(cache=True)
def ov_clone(m, src, dst, k):
    """Give (dst, k) a copy of the overlay of (src, k)."""
    c = m.ovc[src, k]
    off = ov_alloc(m, c)
    old = m.ovl[src, k]
    n = ov_cap(c)
    key = m.ov_key
    val = m.ov_val
    key[off: off + n] = key[old: old + n]
    val[off: off + n] = val[old: old + n]
    m.ovl[dst, k] = off
    m.ovc[dst, k] = c
    m.ovn[dst, k] = m.ovn[src, k]


@njit(cache=True)
def ov_drop(m, row, k):
    c = m.ovc[row, k]
    if c != OV_NONE:
        ov_release(m, c, m.ovl[row, k])
        m.ovc[row, k] = OV_NONE
        m.ovn[row, k] = 0


# --- one address space's PTEs ------------------------------------------------------------------

@njit(cache=True, inline="always")
def directory_of(m, mm):
    """mm's directory row and its tables, overlay offsets, classes and counts,
    for loops that hold them in locals (each m.field read costs a reference count)."""
    row = m.mm_row[mm]
    return row, m.pmd[row], m.ovc[row], m.ovl[row], m.ovn[row]


@njit(cache=True, inline="always")
def pte_peek(m, row, k, t, slot):
    """The PTE the address space with directory row `row` sees at slot of table t."""
    i = ov_find(m, row, k, slot)
    return m.ov_val[i] if i >= 0 else pt_get(m, t, slot)


@njit(cache=True)
def pte_write(m, row, k, t, slot, oi, e):
    """Make e (present) the PTE of (row, k) at slot of its table t; oi is its
    overlay entry there, -1 none. Mapcounts move from the old PTE to e. In a
    table others share, e becomes an override. Returns e's overlay index, -1
    when e is in the table itself."""
    fn = pte_id(e)
    if oi >= 0:
        fo = pte_id(m.ov_val[oi])
        m.ov_val[oi] = e
        if fo != fn:
            if fn > 0:
                frame_map(m, fn)
            if fo > 0:
                frame_unmap(m, fo)
        return oi
    if m.tab_ref[t] == 1:
        old = pt_get(m, t, slot)
        pt_set(m, t, slot, e)
        m.tab_wp[t] = 0
        m.tab_ver[t] += 1
        if old == 0:
            m.tab_count[t] += 1
        fo = pte_id(old)
        if fo != fn:
            if fn > 0:
                frame_map(m, fn)
            if fo > 0:
                zap_table_entry(m, t, slot, old)
        return -1
    if fn > 0:
        frame_map(m, fn)                    # before the table's own entry can die
    oi = ov_record(m, row, k, slot, e)
    add_override(m, t, slot)
    return oi


@njit(cache=True)
def store_tag(m, row, k, slot, tag):
    """The page (row, k, slot) maps now holds value tag `tag`."""
    t = m.pmd[row, k]
    i = ov_find(m, row, k, slot)
    e = m.ov_val[i] if i >= 0 else pt_get(m, t, slot)
    if pte_is_inline(e):
        if i >= 0:
            m.ov_val[i] = pte_with_tag(e, tag)
        else:
            pt_set(m, t, slot, pte_with_tag(e, tag))
    else:
        m.frame[pte_frame(e), F_TAG] = tag


@njit(cache=True, inline="always")
def pte_homed_frame(m, t, slot, e):
    """The inline page e at slot of table t gets a frame id homed there;
    returns the PTE for it, with e's W and E bits (the caller stores it)."""
    f = frame_new_id(m, e >> PTE_SHIFT)
    m.frame[f, F_HOME] = home_of(t, slot)
    return pte_make(f, e & (PTE_W | PTE_E))


@njit(cache=True)
def pte_assign_frame(m, t, slot, oi, e):
    """The inline page e, at overlay entry oi (-1: at slot of table t, where it
    is homed), gets a frame id; returns its PTE now, with e's W and E bits."""
    if oi < 0:
        e = pte_homed_frame(m, t, slot, e)
        pt_set(m, t, slot, e)
        m.tab_ver[t] += 1
        return e
    f = frame_new_id(m, e >> PTE_SHIFT)
    e = pte_make(f, e & (PTE_W | PTE_E))
    m.frame[f, F_MAP] = 1
    m.ov_val[oi] = e
    return e


@njit(cache=True)
def pte_tag_of(m, e):
    """Value tag of the page e maps (0: never written)."""
    if e == 0:
        return 0
    if pte_is_inline(e):
        return e >> PTE_SHIFT
    return m.frame[pte_frame(e), F_TAG]


# --- on-demand-fork share groups ------------------------------------------------------------------
# Under odf the simulated kernel shares a PTE table between parent and child at
# fork and copies it on the first fault that changes a PTE in it. A share
# group records which address spaces the simulated kernel would still have
# sharing one table for a 2 MiB range, so the copies it would make are counted
# when they happen. (Inside the simulator, cow shares its tables the same way.)

@njit(cache=True)
def odf_share(m, prow, crow, k):
    """The child (crow) shares the parent's (prow) table for range k in the simulated kernel."""
    grp = m.odfg[prow, k]
    if grp == GROUP_NONE:
        grp = id_alloc(m.group_free, m.g, G_GROUP_TOP, G_GROUP_HWM)
        m.odfg[prow, k] = grp
        m.group_ref[grp] = 1
    m.odfg[crow, k] = grp
    m.group_ref[grp] += 1


@njit(cache=True)
def odf_leave(m, row, k):
    """(row, k) stops sharing; True if it held its simulated table alone (or
    was in no group), so that table's page is freed."""
    if m.g[G_POLICY] != POLICY_ODF:
        return True
    grp = m.odfg[row, k]
    if grp == GROUP_NONE:
        return True
    m.odfg[row, k] = GROUP_NONE
    m.group_ref[grp] -= 1
    if m.group_ref[grp] == 0:
        id_release(m.group_free, m.g, G_GROUP_TOP, grp)
        return True
    return False


@njit(cache=True)
def table_unshare(m, pid, row, k):
    """Before pid changes a PTE in range k: the simulated odf kernel copies a
    still-shared table. False if there is no page for the copy."""
    if m.g[G_POLICY] != POLICY_ODF:
        return True
    grp = m.odfg[row, k]
    if grp != GROUP_NONE and m.group_ref[grp] > 1:
        if not pte_alloc_one(m):
            return False
        count_event(m, pid, C_FAULT_TABLES)
    odf_leave(m, row, k)
    return True
