"""The OOM killer: a fault found no free frame (mm/oom_kill.c out_of_memory).

oom="largest" picks the process with the largest RSS plus page tables
(oom_badness), as Linux does; oom="faulting" kills the process that faulted,
as xv6 does. Every process sharing the victim's address space dies with it.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from .abi import G_OOM, OOM_LARGEST, P_KILLED, P_RUNNING, P_SUSPENDED, R_OOM
from .exit import do_exit
from .mmap import mm_rss_total


@njit(cache=True)
def oom_kill(m, pid):
    """Kill a victim for pid's failed fault; True if pid survives."""
    victim = pid
    if m.g[G_OOM] == OOM_LARGEST:
        best = -1
        for q in range(1, m.proc_state.shape[0]):
            s = m.proc_state[q]
            if s == P_RUNNING or s == P_SUSPENDED:
                rss = mm_rss_total(m, m.proc_mm[q]) + m.mm_tables[m.proc_mm[q]]   # oom_badness
                if rss > best:
                    best = rss
                    victim = q
    mm = m.proc_mm[victim]
    for q in range(1, m.proc_state.shape[0]):
        s = m.proc_state[q]
        if (s == P_RUNNING or s == P_SUSPENDED) and m.proc_mm[q] == mm:
            do_exit(m, q, np.int8(P_KILLED), np.int8(R_OOM))
    return m.proc_state[pid] == P_RUNNING
