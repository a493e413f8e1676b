"""A PTE's bits behind named helpers (arch/x86/include/asm/pgtable.h).

Layout (abi.py): 0 is absent; bit 0 W (writable), bit 1 E (anon-exclusive),
bit 2 I (inline), bits 30..3 frame + 1, or for an inline page its value tag.
An inline page is an exclusive anonymous page without a frame id: a page only
one PTE maps needs none, so a private copy costs the PTE alone. Frame 0 is the
zero page.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from .abi import PTE_FLAGS, PTE_I, PTE_SHIFT, PTRS_PER_TABLE

# "No overlay entry" as a typed value: passed as a literal -1, it would make
# Numba compile the callee a second time (a literal argument is a type of its own).
NO_ENTRY = np.int64(-1)


@njit(cache=True, inline="always")
def pte_make(frame, flags):
    """A PTE mapping frame (0: the zero page) with flags W and E."""
    return np.int32(((frame + 1) << PTE_SHIFT) | flags)


@njit(cache=True, inline="always")
def pte_inline(tag, flags):
    """An exclusive anonymous page without a frame id, holding value tag `tag`."""
    return np.int32((tag << PTE_SHIFT) | PTE_I | flags)


@njit(cache=True, inline="always")
def pte_is_inline(e):
    return (e & PTE_I) != 0


@njit(cache=True, inline="always")
def pte_frame(e):
    """The frame of a present PTE that is not inline (0: the zero page)."""
    return (e >> PTE_SHIFT) - 1


@njit(cache=True, inline="always")
def pte_id(e):
    """The frame id e maps, or -1 for none, an inline page or the zero page."""
    if e == 0 or (e & PTE_I) != 0:
        return -1
    f = (e >> PTE_SHIFT) - 1
    return f if f > 0 else -1


@njit(cache=True, inline="always")
def pte_page(e):
    """1 if e maps a page other than the zero page (it counts in RSS)."""
    return 1 if e != 0 and ((e & PTE_I) != 0 or (e >> PTE_SHIFT) > 1) else 0


@njit(cache=True, inline="always")
def pte_with_tag(e, tag):
    """e after a write of value tag `tag` through it (an inline page keeps the tag in the PTE)."""
    return np.int32((tag << PTE_SHIFT) | (e & PTE_FLAGS))


@njit(cache=True, inline="always")
def home_of(t, slot):
    """A frame's home, F_HOME: the table slot whose users map it without an F_MAP count."""
    return np.int32(t * PTRS_PER_TABLE + slot)
