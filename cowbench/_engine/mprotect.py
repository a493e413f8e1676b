"""mprotect(): a region's protection, and every PTE of it (mm/mprotect.c change_protection)."""
from __future__ import annotations

from numba import njit

from .abi import C_ENOMEM, F_FLAGS, FF_DIRTY, PMD_NONE, PTE_E, PTE_W, PTRS_PER_TABLE, VM_ACCOUNT, VM_READ, VM_WRITE
from .machine import count_event, region_span
from .mmap import vm_enough_memory
from .pgtable import ov_at, ov_len, pt_get, pt_set, table_unshare
from .pte import pte_frame


@njit(cache=True, inline="always")
def pte_protect(m, e, prot, shared, file):
    """e under new protection prot: drop W, or restore it where no write fault
    is needed (can_change_pte_writable): on anon-exclusive private pages, on
    every page of a shared anonymous region (shmem does no write tracking),
    and on the dirty pages of a shared file mapping (clean ones stay
    read-only, so that their first write is seen)."""
    if e == 0:
        return e
    if (prot & VM_WRITE) == 0:
        return e & ~PTE_W
    if (e & PTE_E) != 0 or (shared and not file):
        return e | PTE_W
    if shared and (m.frame[pte_frame(e), F_FLAGS] & FF_DIRTY) != 0:
        return e | PTE_W
    return e


@njit(cache=True)
def change_protection(m, pid, mm, r, prot):
    """mprotect(): new VMA prot, applied to every PTE of mm in the region
    (a table others share holds no writable or exclusive PTE: nothing to do there)."""
    fl = m.vma[mm, r] & ~(VM_READ | VM_WRITE)
    shared = m.reg_shared[r] != 0
    file = m.reg_file[r] != 0
    if (prot & VM_WRITE) != 0 and not shared and (fl & VM_ACCOUNT) == 0:
        if not vm_enough_memory(m, m.reg_npages[r]):
            count_event(m, pid, C_ENOMEM)            # mprotect fails, nothing changes
            return
        fl |= VM_ACCOUNT
    m.vma[mm, r] = fl | prot
    row = m.mm_row[mm]
    lo, hi = region_span(m, r)
    for k in range(lo, hi):
        t = m.pmd[row, k]
        if t == PMD_NONE:
            continue
        if not table_unshare(m, pid, row, k):
            count_event(m, pid, C_ENOMEM)            # no page for the table copy: mprotect stops here
            return
        if m.tab_ref[t] == 1:
            for slot in range(PTRS_PER_TABLE):
                pt_set(m, t, slot, pte_protect(m, pt_get(m, t, slot), prot, shared, file))
            if (prot & VM_WRITE) != 0:
                m.tab_wp[t] = 0
        for i in range(ov_len(m, row, k)):
            slot, j = ov_at(m, row, k, i)
            m.ov_val[j] = pte_protect(m, m.ov_val[j], prot, shared, file)
