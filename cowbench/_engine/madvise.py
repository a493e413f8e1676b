"""madvise(): what fork does with a region, and whether faults may map huge pages (mm/madvise.c)."""
from __future__ import annotations

from numba import njit

from .abi import (ADV_DOFORK, ADV_DONTFORK, ADV_HUGEPAGE, ADV_KEEPONFORK, ADV_WIPEONFORK, VM_DONTFORK,
                  VM_HUGEPAGE, VM_WIPEONFORK)


@njit(cache=True)
def madvise(m, mm, r, advice):
    """MADV_DONTFORK / DOFORK / WIPEONFORK / KEEPONFORK / HUGEPAGE / NOHUGEPAGE on the whole region."""
    fl = m.vma[mm, r]
    if advice == ADV_DONTFORK:
        fl |= VM_DONTFORK
    elif advice == ADV_DOFORK:
        fl &= ~VM_DONTFORK
    elif advice == ADV_WIPEONFORK:
        fl |= VM_WIPEONFORK
    elif advice == ADV_KEEPONFORK:
        fl &= ~VM_WIPEONFORK
    elif advice == ADV_HUGEPAGE:
        fl |= VM_HUGEPAGE
    else:
        fl &= ~VM_HUGEPAGE
    m.vma[mm, r] = fl
