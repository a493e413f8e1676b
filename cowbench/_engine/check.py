"""check_machine: recount a machine from its page tables, against what the kernels kept incrementally.

Python and NumPy, slow and plain on purpose: it shares no code with the
kernels but the state's layout (machine.py, pte.py), so a kernel that keeps a
count wrong cannot hide it here. Result.check_invariants() runs it on a
run's final machine; the tests run it after every scenario they generate.
"""
from __future__ import annotations

import numpy as np

from .abi import (F_FLAGS, F_HOME, F_MAP, F_PINS, FF_CACHE, G_BLK_HWM, G_BLK_TOP, G_FRAME_HWM, G_FREE_TOP,
                  G_GROUP_HWM, G_GROUP_TOP, G_PINS, G_POLICY, G_FRAMES_USED, G_PTE_FRAMES, G_TAB_TOP, GROUP_NONE,
                  OV_DENSE, OV_NONE, PMD_NONE, POLICY_ODF, PTE_FLAGS, PTE_I, PTE_SHIFT, PTE_W, PTE_E, PTRS_PER_TABLE,
                  TABLE_SHIFT, VM_MAPPED)
from .machine import Machine

__all__ = ["check_machine"]


def _table_ptes(m: Machine, t: int) -> np.ndarray:
    """The 512 PTEs of table t, from its blocks (a copy)."""
    return m.pt[m.tab_blk[t]].reshape(-1)


def _effective_ptes(m: Machine, row: int, k: int, t: int) -> tuple[np.ndarray, np.ndarray]:
    """The 512 PTEs an address space sees in range k (its overlay over table t),
    and a mask of the slots its overlay overrides."""
    e = _table_ptes(m, t)
    mine = np.zeros(PTRS_PER_TABLE, dtype=bool)
    c, off, n = int(m.ovc[row, k]), int(m.ovl[row, k]), int(m.ovn[row, k])
    if c == OV_DENSE:
        vals = m.ov_val[off: off + PTRS_PER_TABLE]
        mine = vals != 0
        assert mine.sum() == n, f"check_invariants: dense overlay ({row}, {k}) holds {mine.sum()} != {n} entries"
        e[mine] = vals[mine]
    elif c != OV_NONE:
        slots = m.ov_key[off: off + n].astype(np.int64)
        assert (np.diff(slots) > 0).all(), f"check_invariants: overlay ({row}, {k}) slots are not sorted and unique"
        assert (m.ov_val[off: off + n] != 0).all(), f"check_invariants: overlay ({row}, {k}) has an empty entry"
        mine[slots] = True
        e[slots] = m.ov_val[off: off + n]
    return e, mine


def _check_blocks(m: Machine, tables: list) -> None:
    """Block 0 holds nothing; a table's blocks are its own, and neither free nor beyond the high-water mark."""
    assert not m.pt[0].any(), "check_invariants: block 0, every table's empty block, was written"
    used = m.tab_blk[tables].reshape(-1)
    used = used[used != 0]
    free = m.blk_free[: m.g[G_BLK_TOP]]
    assert len(np.unique(used)) == len(used), "check_invariants: two tables (or slots) share a block"
    assert used.max(initial=0) < m.g[G_BLK_HWM], "check_invariants: a table's block was never handed out"
    assert not np.isin(used, free).any(), "check_invariants: a table's block is on the free list"
    assert len(np.unique(free)) == len(free) and not (free == 0).any(), "check_invariants: bad block free list"
    assert not m.tab_blk[m.tab_free[: m.g[G_TAB_TOP]]].any(), "check_invariants: a freed table kept its blocks"


def check_machine(m: Machine) -> None:
    """Recount everything from the address spaces' views: mapcount = PTEs mapping
    the frame (a homed frame's table slot counts once per user that does not
    override it); table users and overrides; RSS and PTEs per region; physical
    memory = inline pages + frames with an id + page-table pages; a writable
    private PTE maps an exclusive page."""
    hwm = int(m.g[G_FRAME_HWM])
    mapped = np.zeros(hwm, dtype=np.int64)
    refs: dict[int, int] = {}
    overrides: dict[int, np.ndarray] = {}
    writable_private = []
    inline_pages = 0
    sim_tables = 0
    for mm in np.flatnonzero(m.mm_row >= 0):
        row = int(m.mm_row[mm])
        tables = 0
        for r in range(m.vma.shape[1]):
            first, npages = int(m.reg_pmd0[r]), int(m.reg_npages[r])
            if not m.vma[mm, r] & VM_MAPPED:
                assert m.mm_rss[mm, r] == 0, f"check_invariants: mm {mm} has pages in unmapped region {r}"
                span = slice(first, first + ((npages + PTRS_PER_TABLE - 1) >> TABLE_SHIFT))
                assert not m.pmd[row, span].any() and not m.ovc[row, span].any(), \
                    f"check_invariants: mm {mm} has tables or overlays in unmapped region {r}"
                continue
            rss = 0
            for k in range(first, first + ((npages + PTRS_PER_TABLE - 1) >> TABLE_SHIFT)):
                t = int(m.pmd[row, k])
                if t == PMD_NONE:
                    assert m.ovc[row, k] == OV_NONE, f"check_invariants: mm {mm} has an overlay without a table at {k}"
                    continue
                tables += 1
                refs[t] = refs.get(t, 0) + 1
                e, mine = _effective_ptes(m, row, k, t)
                overrides.setdefault(t, np.zeros(PTRS_PER_TABLE, dtype=np.int64))[mine] += 1
                if m.tab_huge[t]:
                    assert m.tab_count[t] == PTRS_PER_TABLE, f"check_invariants: huge page {t} is not whole"
                    assert len(set(_table_ptes(m, t) & PTE_FLAGS)) == 1, \
                        f"check_invariants: huge page {t} has mixed PTE bits"
                assert not e[npages - (k - first) * PTRS_PER_TABLE:].any(), \
                    f"check_invariants: PTE past the end of region {r}"
                present = e[e != 0]
                inline = (present & PTE_I) != 0
                assert ((present[inline] & PTE_E) != 0).all(), "check_invariants: an inline page is not exclusive"
                frames = (present[~inline] >> PTE_SHIFT) - 1
                real = frames[frames != 0]
                np.add.at(mapped, real, 1)
                rss += len(real) + int(inline.sum())
                inline_pages += int(((e & PTE_I) != 0)[mine].sum())
                if not m.reg_shared[r]:
                    w = (present & PTE_W) != 0
                    writable_private.append(frames[w[~inline]])
            assert rss == m.mm_rss[mm, r], f"check_invariants: mm {mm} region {r} rss {m.mm_rss[mm, r]} != {rss}"
        assert tables == m.mm_tables[mm], f"check_invariants: mm {mm} tables {m.mm_tables[mm]} != {tables}"
        sim_tables += tables
    for t, n in refs.items():
        assert m.tab_ref[t] == n, f"check_invariants: table {t} has {n} users, tab_ref says {m.tab_ref[t]}"
        base = _table_ptes(m, t)
        counted = np.where(base != 0, overrides[t], 0)          # an empty slot counts no overrides
        assert (m.tab_ovr[t] == counted).all(), f"check_invariants: table {t} override counts are off"
        assert m.tab_maxovr[t] >= counted.max(), f"check_invariants: table {t} tab_maxovr is too low"
        assert (base != 0).sum() == m.tab_count[t], f"check_invariants: table {t} count {m.tab_count[t]} is off"
        assert not (base[overrides[t] == n] != 0).any(), f"check_invariants: table {t} keeps a slot every user overrides"
        inline_pages += int(((base & PTE_I) != 0).sum())
        if n > 1 or m.tab_wp[t]:
            assert not (base & PTE_FLAGS).any(), f"check_invariants: shared table {t} holds a W, E or inline PTE"
        if m.tab_uniform[t] and m.tab_seen[t] == m.tab_ver[t]:         # what tables_smaps relies on
            pages = np.flatnonzero((base & PTE_I) != 0)
            assert len(pages) == 0, f"check_invariants: table {t} is cached uniform but maps an inline page"
            slots = np.flatnonzero(base > (1 << PTE_SHIFT))
            frames = (base[slots] >> PTE_SHIFT) - 1
            assert (m.frame[frames, F_HOME] == t * PTRS_PER_TABLE + slots).all() \
                and not m.frame[frames, F_MAP].any() and not m.tab_ovr[t, slots].any(), \
                f"check_invariants: table {t} is cached uniform, but a change since was not recorded (tab_ver)"
            assert m.tab_rss[t] == len(slots), f"check_invariants: table {t}'s cached rss is stale"
        if m.tab_wp[t]:
            slots = np.flatnonzero(base > (1 << PTE_SHIFT))         # entries mapping a frame but the zero page
            frames = (base[slots] >> PTE_SHIFT) - 1
            assert (m.frame[frames, F_HOME] == t * PTRS_PER_TABLE + slots).all(), \
                f"check_invariants: table {t} is marked ready to share but maps a frame homed elsewhere"
            assert not m.frame[frames, F_PINS].any(), f"check_invariants: table {t} is marked ready to share " \
                                                      "but maps a pinned page"
    _check_blocks(m, list(refs))
    free = m.frame_free[: m.g[G_FREE_TOP]]
    allocated = np.ones(hwm, dtype=bool)
    allocated[0] = False
    allocated[free] = False
    assert len(np.unique(free)) == len(free), "check_invariants: a frame is on the free list twice"
    groups = m.group_ref[: int(m.g[G_GROUP_HWM])]
    free_groups = m.group_free[: m.g[G_GROUP_TOP]]
    in_use = np.ones(len(groups), dtype=bool)
    in_use[free_groups] = False
    in_use[GROUP_NONE] = False
    if m.g[G_POLICY] == POLICY_ODF:
        live_rows = m.mm_row[m.mm_row >= 0]
        member = m.odfg[live_rows][m.pmd[live_rows] != PMD_NONE]
        members = np.bincount(member[member != GROUP_NONE], minlength=len(groups))
        assert (members[in_use] == groups[in_use]).all(), "check_invariants: an odf group's refcount != its members"
        assert not members[~in_use].any(), "check_invariants: an address space belongs to a freed odf group"
    free_rows = np.ones(m.pmd.shape[0], dtype=bool)
    free_rows[m.mm_row[m.mm_row >= 0]] = False
    assert not (m.pmd[free_rows].any() or m.ovc[free_rows].any() or m.ovn[free_rows].any()
                or (m.g[G_POLICY] == POLICY_ODF and m.odfg[free_rows].any())), \
        "check_invariants: a free directory row is not empty (mm_init takes it as it is)"
    real_tables = sim_tables - int(np.maximum(groups[in_use] - 1, 0).sum())
    assert m.g[G_PTE_FRAMES] == real_tables, \
        f"check_invariants: pte_frames {m.g[G_PTE_FRAMES]} != page tables {real_tables}"
    assert allocated.sum() + inline_pages == m.g[G_FRAMES_USED] - m.g[G_PTE_FRAMES], \
        f"check_invariants: frames_used {m.g[G_FRAMES_USED]} != {allocated.sum()} frames + {inline_pages} inline + tables"
    home = m.frame[:hwm, F_HOME]
    counted = m.frame[:hwm, F_MAP].astype(np.int64)
    for f in np.flatnonzero(allocated & (home >= 0)):
        t, s = divmod(int(home[f]), PTRS_PER_TABLE)
        e = _table_ptes(m, t)[s]
        assert (e >> PTE_SHIFT) - 1 == f and not e & PTE_I, \
            f"check_invariants: frame {f} is homed at ({t}, {s}), which does not map it"
        counted[f] += m.tab_ref[t] - m.tab_ovr[t, s]
    bad = np.flatnonzero(allocated & (mapped != counted))
    assert len(bad) == 0, f"check_invariants: frame {bad[:5]} mapcount {counted[bad[:5]]} != PTEs {mapped[bad[:5]]}"
    assert not mapped[~allocated][1:].any(), "check_invariants: a free frame is still mapped"
    cached = np.zeros(hwm, dtype=bool)
    cached[m.shm_frame[m.shm_frame >= 0]] = True
    flagged = (m.frame[:hwm, F_FLAGS] & FF_CACHE) != 0
    assert (flagged[allocated] == cached[allocated]).all(), \
        "check_invariants: a frame's FF_CACHE bit disagrees with the page cache"
    records = m.pin_pid[: m.g[G_PINS]] != 0
    pins = np.bincount(m.pin_frame[: m.g[G_PINS]][records], minlength=hwm)[:hwm]
    assert (pins == m.frame[:hwm, F_PINS]).all(), "check_invariants: frame pins != live pin records"
    assert not pins[~allocated].any(), "check_invariants: a free frame is pinned"
    orphans = np.flatnonzero(allocated & (mapped == 0) & ~cached & (pins == 0))
    assert len(orphans) == 0, f"check_invariants: frames {orphans[:5]} are allocated but not mapped, cached or pinned"
    if writable_private:
        w = np.concatenate(writable_private)
        assert (w != 0).all(), "check_invariants: the zero page is mapped writable"
        assert (mapped[w] == 1).all(), "check_invariants: a writable private PTE maps a shared frame"
